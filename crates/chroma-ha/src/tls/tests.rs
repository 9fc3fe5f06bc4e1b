//! TLS file loading with certificates made here (rcgen): what is accepted,
//! and that every refusal names the file.

use std::path::Path;

use super::*;

struct Made {
    dir: tempfile::TempDir,
}

impl Made {
    fn new() -> Made {
        Made {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// A self-signed certificate for `localhost` and its key, as PEM.
    fn self_signed(&self, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("generate certificate");
        (
            self.write(&format!("{name}.crt"), &made.cert.pem()),
            self.write(&format!("{name}.key"), &made.key_pair.serialize_pem()),
        )
    }
}

fn config(f: impl FnOnce(&mut TlsConfig)) -> TlsConfig {
    let mut c = TlsConfig::default();
    f(&mut c);
    c
}

#[test]
fn a_matching_pair_and_a_ca_file_are_accepted() {
    let m = Made::new();
    let (cert, key) = m.self_signed("a");
    let tls = config(|c| {
        c.cert_file = Some(cert.clone());
        c.key_file = Some(key.clone());
        c.ca_file = Some(cert.clone());
        c.client_cert_file = Some(cert.clone());
        c.client_key_file = Some(key.clone());
    });
    validate(&tls).expect("valid files");
    ClientTls::from_config(&tls).expect("client TLS");
    load_server_key(&cert, &key).expect("server key");
}

#[test]
fn refusals_name_the_file_and_the_setting() {
    let m = Made::new();
    let (cert_a, _) = m.self_signed("a");
    let (_, key_b) = m.self_signed("b");
    let garbage = m.write("garbage.pem", "not PEM at all\n");
    let missing = m.dir.path().join("missing.pem");

    let err = load_server_key(&cert_a, &key_b).expect_err("mismatched key");
    assert_eq!(err.which, TlsFile::Key);
    assert!(err.to_string().contains("b.key"), "{err}");
    assert!(err.to_string().contains("a.crt"), "{err}");

    let err = validate(&config(|c| c.ca_file = Some(garbage.clone()))).expect_err("bad CA");
    assert_eq!(err.which, TlsFile::Ca);
    assert!(err.to_string().contains("garbage.pem"), "{err}");
    assert!(err.reason.contains("no PEM certificate"), "{err}");

    let err = load_server_key(&missing, &key_b).expect_err("missing cert");
    assert_eq!(err.which, TlsFile::Cert);
    assert!(
        err.to_string().contains("missing.pem: cannot be read"),
        "{err}"
    );

    let err = load_server_key(&cert_a, &garbage).expect_err("no key");
    assert_eq!(err.which, TlsFile::Key);
    assert!(err.reason.contains("private key"), "{err}");
}

#[test]
fn config_errors_name_the_setting_and_the_file() {
    let m = Made::new();
    let (cert, _) = m.self_signed("a");
    let toml = format!(
        "primary = \"https://127.0.0.1:8443\"\n[tls]\ncert_file = {:?}\n",
        cert.display().to_string()
    );
    let err = crate::config::Config::from_toml_str(&toml, Path::new("gw.toml"))
        .expect_err("cert without key");
    let text = err.to_string();
    assert!(text.contains("tls.cert_file in gw.toml"), "{text}");
    assert!(text.contains("tls.key_file"), "{text}");

    let toml = format!(
        "primary = \"https://127.0.0.1:8443\"\n[tls]\nca_file = {:?}\n",
        m.dir.path().join("nope.pem").display().to_string()
    );
    let text = crate::config::Config::from_toml_str(&toml, Path::new("gw.toml"))
        .expect_err("missing CA")
        .to_string();
    assert!(text.contains("tls.ca_file in gw.toml"), "{text}");
    assert!(text.contains("nope.pem"), "{text}");

    let toml = format!(
        "primary = \"https://127.0.0.1:8443\"\n[tls]\nca_file = {:?}\n",
        cert.display().to_string()
    );
    let config = crate::config::Config::from_toml_str(&toml, Path::new("gw.toml"))
        .expect("https primary with a CA file");
    assert_eq!(config.primary.url, "https://127.0.0.1:8443");
    assert_eq!(config.tls.ca_file.as_deref(), Some(cert.as_path()));
    assert_eq!(config.cluster.advertise_url, "http://127.0.0.1:8000");

    let (_, other_key) = m.self_signed("b");
    let toml = format!(
        "primary = \"https://127.0.0.1:8443\"\n[tls]\nclient_cert_file = {:?}\nclient_key_file = {:?}\n",
        cert.display().to_string(),
        other_key.display().to_string()
    );
    let text = crate::config::Config::from_toml_str(&toml, Path::new("gw.toml"))
        .expect_err("a client key of another certificate")
        .to_string();
    assert!(text.contains("tls.client_key_file in gw.toml"), "{text}");
    assert!(text.contains("b.key") && text.contains("a.crt"), "{text}");

    // A TLS listener makes the default advertised address https.
    let (cert, key) = m.self_signed("c");
    let toml = format!(
        "primary = \"http://127.0.0.1:8001\"\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let config = crate::config::Config::from_toml_str(&toml, Path::new("gw.toml"))
        .expect("a listener certificate and its key");
    assert_eq!(config.cluster.advertise_url, "https://127.0.0.1:8000");
}

#[tokio::test]
async fn an_untrusted_server_is_explained_as_a_certificate_problem() {
    let m = Made::new();
    let (cert, key) = m.self_signed("server");
    let server = load_server_key(&cert, &key).expect("server key");
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            server.cert.clone(),
            parse_key(TlsFile::Key, &key, &std::fs::read(&key).unwrap()).unwrap(),
        )
        .expect("server config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = listener::TlsListener::new(tcp, std::sync::Arc::new(config)).unwrap();
    let _held = listener;
    // Trusts nothing the server has: a CA file with an unrelated certificate.
    let (other, _) = m.self_signed("other");
    let tls = ClientTls::from_files(Some(&other), None, None).expect("client TLS");
    let client = tls.apply(reqwest::Client::builder()).build().unwrap();
    let err = client
        .get(format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .expect_err("untrusted server accepted");
    let mut chain = String::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = next {
        chain.push_str(&format!(" -> {e:?}"));
        next = e.source();
    }
    let explained = explain_failure(&err).unwrap_or_else(|| panic!("not explained:{chain}"));
    assert!(
        explained.contains("TLS certificate verification failed"),
        "{explained}"
    );
}
