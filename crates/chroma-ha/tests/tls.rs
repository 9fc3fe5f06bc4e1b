//! TLS end to end with real Chroma servers and certificates made at test
//! time: clients ↔ gateway over the gateway's TLS listener (and its
//! certificate reloads), gateway ↔ servers over https through a
//! TLS-terminating proxy in front of each Chroma (with client
//! certificates), and a wrong CA refused with an error that says so.

mod support;
mod tls_kit;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{chroma_ha_bin, http_get, ChromaServer, GatewayProcess};
use tls_kit::{Pki, TlsProxy};

const COLLECTIONS: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

/// One runtime for every test of this file, entered by each test, so that
/// clients are used and dropped inside it.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

fn gateway_args(primary: &str, replicas: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["serve", "--listen", "{listen}", "--primary", primary]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for r in replicas {
        args.push("--replica".into());
        args.push((*r).into());
    }
    args.extend(["--data-dir".to_string(), "{dir}/data".to_string()]);
    args
}

fn env(pairs: &[(&str, &Path)]) -> Vec<(String, String)> {
    let mut env = vec![("RUST_LOG".to_string(), "info".to_string())];
    env.extend(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string())),
    );
    env
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> Value {
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e:?}"));
    let status = answer.status();
    let text = answer.text().await.expect("answer body");
    assert!(status.is_success(), "POST {url} answered {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {url}: not JSON ({e}): {text}"))
}

/// Creates `name` through the gateway at `base` and adds `n` records;
/// returns the ids `get` reads back through the gateway.
async fn write_and_read(client: &reqwest::Client, base: &str, name: &str, n: usize) -> Vec<String> {
    let created = post(
        client,
        &format!("{base}{COLLECTIONS}"),
        json!({ "name": name }),
    )
    .await;
    let id = created["id"].as_str().expect("collection id").to_string();
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let embeddings: Vec<Vec<f64>> = (0..n).map(|i| vec![i as f64, 1.0, 2.0]).collect();
    post(
        client,
        &format!("{base}{COLLECTIONS}/{id}/add"),
        json!({ "ids": ids, "embeddings": embeddings }),
    )
    .await;
    let got = post(client, &format!("{base}{COLLECTIONS}/{id}/get"), json!({})).await;
    let mut read: Vec<String> = got["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect();
    read.sort();
    read
}

/// The number of records of collection `name` on the Chroma at `url`
/// (plain HTTP, straight to the server), if it exists.
fn count_on_server(url: &str, name: &str) -> Option<u64> {
    let listed = http_get(&format!("{url}{COLLECTIONS}"), Duration::from_secs(5)).ok()?;
    let id = listed
        .json()
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)?["id"]
        .as_str()?
        .to_string();
    let count = http_get(
        &format!("{url}{COLLECTIONS}/{id}/count"),
        Duration::from_secs(5),
    )
    .ok()?;
    count.json().as_u64()
}

fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A gateway in front of one Chroma that serves TLS only, with the
/// certificate `gateway.crt` of `pki`; awaited over https.
fn tls_gateway(pki: &Arc<Pki>, chroma: &ChromaServer) -> GatewayProcess {
    let issued = pki.issue("gateway", "gateway-one", 1);
    tls_gateway_with(pki, &issued, &gateway_args(&chroma.url(), &[]), &[])
}

/// Starts `args` with `issued` as the listener's certificate (plus `extra`
/// settings) and waits until `GET /health` answers over https.
fn tls_gateway_with(
    pki: &Arc<Pki>,
    issued: &tls_kit::Issued,
    args: &[String],
    extra: &[(String, String)],
) -> GatewayProcess {
    let mut env = env(&[
        ("CHROMA_HA_TLS_CERT_FILE", &issued.cert_file),
        ("CHROMA_HA_TLS_KEY_FILE", &issued.key_file),
    ]);
    env.extend(extra.iter().cloned());
    let ready_pki = pki.clone();
    GatewayProcess::start_clean_ready(
        &chroma_ha_bin(),
        args,
        &env,
        Arc::new(move |port| {
            let client = ready_pki.https_client();
            rt().block_on(async move {
                match client
                    .get(format!("https://127.0.0.1:{port}/health"))
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success(),
                    Err(_) => false,
                }
            })
        }),
    )
}

/// `GET /status` of the TLS gateway on `port`, if it answers JSON.
fn tls_status(client: &reqwest::Client, port: u16) -> Option<Value> {
    rt().block_on(async {
        let answer = client
            .get(format!("https://127.0.0.1:{port}/status"))
            .send()
            .await
            .ok()?;
        serde_json::from_slice(&answer.bytes().await.ok()?).ok()
    })
}

/// `GET {base}/metrics` as text.
fn metrics_page(client: &reqwest::Client, base: &str) -> String {
    rt().block_on(async {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    })
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn clients_write_and_read_through_the_tls_listener_and_plain_http_is_refused() {
    let _rt = rt().enter();
    let pki = Arc::new(Pki::new("listener"));
    let chroma = ChromaServer::start();
    let gw = tls_gateway(&pki, &chroma);
    let base = format!("https://127.0.0.1:{}", gw.port());
    let client = pki.https_client();
    let read = rt().block_on(write_and_read(&client, &base, "tls_listener", 5));
    assert_eq!(read, vec!["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(count_on_server(&chroma.url(), "tls_listener"), Some(5));

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = http_get(&format!("{}/health", gw.url()), Duration::from_secs(5));
    assert!(
        plain.is_err(),
        "plain HTTP answered: {:?}",
        plain.map(|r| r.status)
    );

    // A client that does not trust the gateway's CA is refused.
    let stranger = Pki::new("stranger").https_client();
    let refused = rt().block_on(stranger.get(format!("{base}/health")).send());
    let err = refused.expect_err("an untrusted certificate was accepted");
    let text = format!("{err:?}");
    assert!(text.contains("UnknownIssuer"), "{text}");

    // The CLI reaches the TLS gateway with --ca-file, and says why without.
    let status = std::process::Command::new(chroma_ha_bin())
        .args(["status", "--url", &base, "--ca-file"])
        .arg(pki.ca_file())
        .env_remove("CHROMA_HA_TLS_CA_FILE")
        .output()
        .expect("run chroma-ha status");
    let out = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        status.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(out.contains("READY"), "{out}");
    let status = std::process::Command::new(chroma_ha_bin())
        .args(["status", "--url", &base])
        .env_remove("CHROMA_HA_TLS_CA_FILE")
        .output()
        .expect("run chroma-ha status");
    let err = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(2), "{err}");
    assert!(err.contains("TLS certificate verification failed"), "{err}");

    // SIGTERM stops the TLS listener like the plain one.
    let mut gw = gw;
    assert!(
        gw.terminate(Duration::from_secs(15)),
        "no clean stop on SIGTERM"
    );
}

#[test]
fn the_listener_certificate_reloads_on_sighup_and_when_its_files_change() {
    let _rt = rt().enter();
    let pki = Arc::new(Pki::new("reload"));
    let chroma = ChromaServer::start();
    let mut gw = tls_gateway(&pki, &chroma);
    let port = gw.port();
    let first = rt()
        .block_on(pki.peer_certificate(port))
        .expect("first certificate");

    // SIGHUP after the files were replaced (another CN and serial).
    let second = pki.issue("gateway", "gateway-two", 2);
    assert_ne!(first, second.der);
    support::signal(gw.pid().expect("gateway pid"), "HUP");
    wait_for("the SIGHUP reload", Duration::from_secs(10), || {
        (rt().block_on(pki.peer_certificate(port)).ok()? == second.der).then_some(())
    });
    // (The file poll may have been first; the signal reloads all the same.)
    wait_for(
        "the SIGHUP reload in the log",
        Duration::from_secs(10),
        || {
            gw.log()
                .lines()
                .any(|l| l.contains("reloaded the TLS certificate") && l.contains("SIGHUP"))
                .then_some(())
        },
    );

    // A broken key: the reload fails, names the file, keeps the certificate.
    std::fs::write(&second.key_file, "not a key\n").expect("break the key");
    support::signal(gw.pid().expect("gateway pid"), "HUP");
    let key_name = second.key_file.display().to_string();
    wait_for(
        "the failed reload in the log",
        Duration::from_secs(10),
        || {
            let log = gw.log();
            (log.contains("reloading the TLS certificate failed") && log.contains(&key_name))
                .then_some(())
        },
    );
    assert_eq!(
        rt().block_on(pki.peer_certificate(port))
            .expect("still served"),
        second.der
    );
    assert!(gw.is_running());

    // New files and no signal: the poll of the files finds them.
    let third = pki.issue("gateway", "gateway-three", 3);
    wait_for(
        "the reload on a file change",
        Duration::from_secs(20),
        || (rt().block_on(pki.peer_certificate(port)).ok()? == third.der).then_some(()),
    );

    let client = pki.https_client();
    let metrics = metrics_page(&client, &format!("https://127.0.0.1:{port}"));
    assert!(
        metric(&metrics, "chroma_ha_tls_cert_reloads_total{result=\"ok\"}") >= 2.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "chroma_ha_tls_cert_reloads_total{result=\"error\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "chroma_ha_tls_cert_loaded_timestamp_seconds") > 1.0e9);
}

#[test]
fn the_gateway_writes_to_https_servers_with_a_client_certificate() {
    let _rt = rt().enter();
    let pki = Pki::new("servers");
    let servers = ChromaServer::start_many(2);
    let proxy_cert = pki.issue("proxy", "chroma-proxy", 10);
    let client_cert = pki.issue("client", "chroma-ha-client", 11);
    let proxies: Vec<TlsProxy> = servers
        .iter()
        .map(|s| TlsProxy::start(&pki, &proxy_cert, s.port(), true))
        .collect();

    // The proxies really require a client certificate.
    let without = rt().block_on(
        pki.https_client()
            .get(format!("{}/api/v2/heartbeat", proxies[0].url()))
            .send(),
    );
    assert!(
        without.is_err(),
        "a client without a certificate got through"
    );

    let replica = proxies[1].url();
    let gw = GatewayProcess::start_clean(
        &chroma_ha_bin(),
        &gateway_args(&proxies[0].url(), &[&replica]),
        &env(&[
            ("CHROMA_HA_TLS_CA_FILE", &pki.ca_file()),
            ("CHROMA_HA_TLS_CLIENT_CERT_FILE", &client_cert.cert_file),
            ("CHROMA_HA_TLS_CLIENT_KEY_FILE", &client_cert.key_file),
        ]),
    );
    wait_for(
        "both servers healthy over https",
        Duration::from_secs(30),
        || {
            let status = http_get(&format!("{}/status", gw.url()), Duration::from_secs(5)).ok()?;
            (status.json()["healthy_instances"] == 2).then_some(())
        },
    );
    let plain = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let read = rt().block_on(write_and_read(&plain, &gw.url(), "tls_servers", 4));
    assert_eq!(read, vec!["r0", "r1", "r2", "r3"]);
    for server in &servers {
        wait_for(
            &format!("the records on {}", server.url()),
            Duration::from_secs(30),
            || (count_on_server(&server.url(), "tls_servers")? == 4).then_some(()),
        );
    }
    for proxy in &proxies {
        assert!(
            proxy.handshakes() > 0,
            "no TLS connection reached {}",
            proxy.url()
        );
    }
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_naming_the_server() {
    let _rt = rt().enter();
    let pki = Pki::new("real");
    let other = Pki::new("other");
    let chroma = ChromaServer::start();
    let proxy_cert = pki.issue("proxy", "chroma-proxy", 20);
    let proxy = TlsProxy::start(&pki, &proxy_cert, chroma.port(), false);
    let gw = GatewayProcess::start_clean(
        &chroma_ha_bin(),
        &gateway_args(&proxy.url(), &[]),
        &env(&[("CHROMA_HA_TLS_CA_FILE", &other.ca_file())]),
    );
    let instance = wait_for("the TLS error in /status", Duration::from_secs(30), || {
        let status = http_get(&format!("{}/status", gw.url()), Duration::from_secs(5)).ok()?;
        let instance = status.json()["instances"][0].clone();
        instance["last_error"]
            .as_str()?
            .contains("certificate")
            .then_some(instance)
    });
    assert_eq!(instance["healthy"], false, "{instance}");
    let error = instance["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("server 'primary'"), "{error}");
    assert!(
        error.contains("TLS certificate verification failed") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert_eq!(
        proxy.handshakes(),
        0,
        "a handshake succeeded with the wrong CA"
    );
    assert!(proxy.refused() > 0);
}

#[test]
fn a_follower_forwards_to_a_leader_that_serves_tls_trusting_the_ca() {
    let _rt = rt().enter();
    let pki = Arc::new(Pki::new("cluster"));
    let pg = pglog::testing::TestPostgres::start();
    let chroma = ChromaServer::start();
    let issued = pki.issue("gateway", "gateway", 30);
    let ca = pki.ca_file().display().to_string();
    let extra = vec![
        ("CHROMA_HA_LOG_URL".to_string(), pg.url("postgres")),
        ("CHROMA_HA_LEASE_TIME".to_string(), "2".to_string()),
        (
            "CHROMA_HA_LEASE_RENEW_INTERVAL".to_string(),
            "0.5".to_string(),
        ),
        ("CHROMA_HA_TLS_CA_FILE".to_string(), ca),
    ];
    let args = gateway_args(&chroma.url(), &[]);
    let client = pki.https_client();
    let leader = tls_gateway_with(&pki, &issued, &args, &extra);
    wait_for("the first gateway to lead", Duration::from_secs(30), || {
        let status = tls_status(&client, leader.port())?;
        (status["cluster"]["role"] == "leader" && status["ready"] == true).then_some(())
    });
    let follower = tls_gateway_with(&pki, &issued, &args, &extra);
    let status = wait_for(
        "the second gateway to follow",
        Duration::from_secs(30),
        || {
            let status = tls_status(&client, follower.port())?;
            (status["cluster"]["role"] == "follower").then_some(status)
        },
    );
    let base = format!("https://127.0.0.1:{}", follower.port());
    let read = rt().block_on(write_and_read(&client, &base, "tls_forwarded", 3));
    assert_eq!(read, vec!["r0", "r1", "r2"], "{status}");
    assert_eq!(count_on_server(&chroma.url(), "tls_forwarded"), Some(3));
    let metrics = metrics_page(&client, &base);
    // create, add, get: three requests answered by the leader over https.
    assert!(
        metric(
            &metrics,
            "chroma_ha_forwarded_requests_total{outcome=\"answered\"}"
        ) >= 3.0,
        "the follower did not forward: {metrics}"
    );
}
