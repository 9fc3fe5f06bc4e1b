//! TLS test kit: certificates made at test time (rcgen), a TLS-terminating
//! TCP proxy in front of a real Chroma server (Chroma cannot serve TLS
//! itself), and an https client that trusts a given CA. Independent of the
//! gateway's own TLS code, so it can catch its mistakes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::{TcpListener, TcpStream};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority made for one test, writing its files in a temp dir.
pub struct Pki {
    dir: tempfile::TempDir,
    name: String,
    ca: Certificate,
    ca_key: KeyPair,
}

/// A certificate issued by a [`Pki`]: its files and its DER.
#[derive(Clone)]
pub struct Issued {
    /// The certificate's PEM file.
    pub cert_file: PathBuf,
    /// Its private key's PEM file.
    pub key_file: PathBuf,
    /// The certificate itself.
    pub der: CertificateDer<'static>,
}

impl Pki {
    /// A new CA named `name` (its PEM in `ca_file()`).
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("chroma-ha-test-pki-")
            .tempdir()
            .expect("temp dir for certificates");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).expect("self-signed CA");
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).expect("write CA");
        Pki {
            dir,
            name: name.to_string(),
            ca,
            ca_key,
        }
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The directory the files are written in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a certificate for `localhost` and `127.0.0.1` (server and
    /// client use) with common name `cn` and `serial`, and writes it to
    /// `{stem}.crt` / `{stem}.key`, replacing what was there.
    pub fn issue(&self, stem: &str, cn: &str, serial: u64) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign leaf");
        let issued = Issued {
            cert_file: self.dir.path().join(format!("{stem}.crt")),
            key_file: self.dir.path().join(format!("{stem}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&issued.cert_file, cert.pem()).expect("write cert");
        std::fs::write(&issued.key_file, key.serialize_pem()).expect("write key");
        issued
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("add CA");
        roots
    }

    /// A rustls client configuration trusting only this CA, presenting
    /// `client` when given.
    pub fn client_config(&self, client: Option<&Issued>) -> rustls::ClientConfig {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(self.roots());
        match client {
            Some(c) => builder
                .with_client_auth_cert(vec![c.der.clone()], read_key(&c.key_file))
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        }
    }

    /// An https client (reqwest on rustls) trusting only this CA.
    pub fn https_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(None))
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .expect("https client")
    }

    /// The certificate a new TLS connection to `127.0.0.1:port` is served.
    pub async fn peer_certificate(&self, port: u16) -> Result<CertificateDer<'static>, String> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.client_config(None)));
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, conn) = tls.get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
            .ok_or_else(|| "no peer certificate".to_string())
    }
}

fn read_key(path: &Path) -> PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_file(path).expect("read key")
}

/// A TLS-terminating TCP proxy: TLS on its own loopback port, plain TCP to
/// `127.0.0.1:upstream`. Runs on a thread of its own until dropped.
pub struct TlsProxy {
    port: u16,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsProxy {
    /// Serves `server` (issued by `pki`) in front of `upstream`; with
    /// `require_client_cert`, only clients with a certificate from `pki`
    /// get through.
    pub fn start(pki: &Pki, server: &Issued, upstream: u16, require_client_cert: bool) -> TlsProxy {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if require_client_cert {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(pki.roots()), provider())
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(vec![server.der.clone()], read_key(&server.key_file))
            .expect("proxy certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the TLS proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("proxy address").port();
        let (handshakes, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let counts = (handshakes.clone(), refused.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                let serve = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        let (acceptor, counts) = (acceptor.clone(), counts.clone());
                        tokio::spawn(async move {
                            let mut tls = match acceptor.accept(client).await {
                                Ok(tls) => tls,
                                Err(_) => {
                                    counts.1.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                            };
                            counts.0.fetch_add(1, Ordering::SeqCst);
                            let upstream: SocketAddr = ([127, 0, 0, 1], upstream).into();
                            if let Ok(mut up) = TcpStream::connect(upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        TlsProxy {
            port,
            handshakes,
            refused,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (untrusted or missing client certificate...).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
