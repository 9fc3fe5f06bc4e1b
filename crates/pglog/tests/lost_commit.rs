//! Appends whose COMMIT answer is lost, against a real PostgreSQL behind a
//! TCP proxy of the test's own that cuts the connection at the COMMIT and
//! can keep PostgreSQL out of reach for a while. The log must find out
//! whether the commit landed: acknowledge it if it did, report it not
//! written if it did not (and give its LSN to the next append), and when
//! it cannot ask, say the outcome is unknown, refuse appends until it
//! knows, and report a batch that landed after all as an orphan.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pglog::testing::TestPostgres;
use pglog::{PgLog, PgLogOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use wal::{Log, LogRead, WalError};

/// What the proxy does at the next COMMIT.
#[derive(Clone, Copy, Debug, PartialEq)]
enum AtCommit {
    /// Pass everything.
    Pass,
    /// Let the COMMIT run, then cut the connection before its answer.
    LandThenCut,
    /// Cut the connection before the COMMIT is executed.
    CutBefore,
}

struct Proxy {
    url: String,
    mode: Arc<Mutex<AtCommit>>,
    /// While true: every connection is cut and new ones are closed at once.
    blocked: watch::Sender<bool>,
    /// Told when a `LandThenCut` COMMIT has gone to PostgreSQL (its cut
    /// follows 300 ms later).
    landed: Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(AtCommit::Pass));
        let (blocked, _) = watch::channel(false);
        let landed = Arc::new(tokio::sync::Notify::new());
        let (m, b, l) = (mode.clone(), blocked.clone(), landed.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *b.borrow() {
                    continue; // dropped: closed at once
                }
                tokio::spawn(pipe(client, upstream, m.clone(), b.subscribe(), l.clone()));
            }
        });
        Proxy {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            mode,
            blocked,
            landed,
        }
    }

    /// Waits until an armed `LandThenCut` COMMIT has gone to PostgreSQL,
    /// however slow the machine (a fixed sleep may block it too early).
    async fn wait_landed(&self) {
        tokio::time::timeout(Duration::from_secs(30), self.landed.notified())
            .await
            .expect("the COMMIT reached the proxy within 30 s");
    }

    fn arm(&self, mode: AtCommit) {
        *self.mode.lock().unwrap() = mode;
    }

    fn block(&self, blocked: bool) {
        self.blocked.send_replace(blocked);
    }
}

/// Forwards one connection; watches the client's bytes for the COMMIT.
async fn pipe(
    mut client: TcpStream,
    upstream: u16,
    mode: Arc<Mutex<AtCommit>>,
    mut blocked: watch::Receiver<bool>,
    landed: Arc<tokio::sync::Notify>,
) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let (mut up, mut down) = ([0u8; 65536], [0u8; 65536]);
    // After the COMMIT statement was parsed, the next client message runs it.
    let mut commit_parsed = false;
    loop {
        tokio::select! {
            _ = blocked.changed() => if *blocked.borrow() { return },
            n = cr.read(&mut up) => {
                let Ok(n @ 1..) = n else { return };
                let chunk = &up[..n];
                let armed = *mode.lock().unwrap();
                if commit_parsed && armed != AtCommit::Pass {
                    *mode.lock().unwrap() = AtCommit::Pass;
                    if armed == AtCommit::LandThenCut {
                        let _ = sw.write_all(chunk).await;
                        landed.notify_one();
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    return; // both sockets closed: the answer is lost
                }
                commit_parsed = armed != AtCommit::Pass
                    && chunk.windows(6).any(|w| w == b"COMMIT");
                if sw.write_all(chunk).await.is_err() { return }
            }
            n = sr.read(&mut down) => {
                let Ok(n @ 1..) = n else { return };
                if cw.write_all(&down[..n]).await.is_err() { return }
            }
        }
    }
}

fn options() -> PgLogOptions {
    PgLogOptions {
        op_timeout: Duration::from_secs(2),
        resolve_for: Duration::from_secs(1),
        ..PgLogOptions::default()
    }
}

async fn payloads(url: &str) -> Vec<(u64, Bytes)> {
    let log = PgLog::connect(url, PgLogOptions::default()).await.unwrap();
    let mut reader = log.read_from(1);
    let mut out = Vec::new();
    while let Some(r) = reader.try_next().await.unwrap() {
        out.push((r.lsn, r.payload));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_looked_up_and_acknowledged() {
    let pg = TestPostgres::start();
    let proxy = Proxy::start(pg.port()).await;
    let log = PgLog::connect(&proxy.url, options()).await.unwrap();
    proxy.arm(AtCommit::LandThenCut);
    assert_eq!(log.append(Bytes::from_static(b"one")).await.unwrap(), 1);
    assert_eq!(log.append(Bytes::from_static(b"two")).await.unwrap(), 2);
    assert_eq!(
        payloads(&pg.url("postgres")).await,
        vec![
            (1, Bytes::from_static(b"one")),
            (2, Bytes::from_static(b"two"))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_cut_before_it_ran_is_reported_not_written_and_its_lsn_goes_to_the_next_append() {
    let pg = TestPostgres::start();
    let proxy = Proxy::start(pg.port()).await;
    let log = PgLog::connect(&proxy.url, options()).await.unwrap();
    proxy.arm(AtCommit::CutBefore);
    match log.append(Bytes::from_static(b"lost")).await {
        Err(WalError::Unavailable { reason, .. }) => {
            assert!(reason.contains("did not land"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(log.append(Bytes::from_static(b"next")).await.unwrap(), 1);
    assert_eq!(
        payloads(&pg.url("postgres")).await,
        vec![(1, Bytes::from_static(b"next"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_while_postgres_stays_away_is_unknown_then_settled_before_any_other_append() {
    let pg = TestPostgres::start();
    let proxy = Proxy::start(pg.port()).await;
    let log = PgLog::connect(&proxy.url, options()).await.unwrap();
    let mut orphans = log.take_orphans().expect("the orphans receiver");
    assert!(log.take_orphans().is_none(), "taken once");
    proxy.arm(AtCommit::LandThenCut);
    let appending = {
        let log = log.clone();
        tokio::spawn(async move { log.append(Bytes::from_static(b"landed")).await })
    };
    // Keep PostgreSQL out of reach once the COMMIT has been cut.
    proxy.wait_landed().await;
    proxy.block(true);
    match appending.await.unwrap() {
        Err(WalError::OutcomeUnknown { .. }) => {}
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    // Until the outcome is known, appends are refused at once.
    let t = Instant::now();
    match log.append(Bytes::from_static(b"refused")).await {
        Err(WalError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable while settling, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    proxy.block(false);
    let settled = tokio::time::timeout(Duration::from_secs(10), orphans.recv())
        .await
        .expect("the orphan is reported once PostgreSQL is back");
    assert_eq!(settled, Some(vec![1]));
    assert_eq!(log.append(Bytes::from_static(b"after")).await.unwrap(), 2);
    assert_eq!(
        payloads(&pg.url("postgres")).await,
        vec![
            (1, Bytes::from_static(b"landed")),
            (2, Bytes::from_static(b"after"))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_arrive_while_a_lost_commit_is_looked_up_are_refused_at_once_and_its_own_appender_waits_for_the_answer(
) {
    let pg = TestPostgres::start();
    let proxy = Proxy::start(pg.port()).await;
    let options = PgLogOptions {
        resolve_for: Duration::from_secs(30),
        ..options()
    };
    let log = PgLog::connect(&proxy.url, options).await.unwrap();
    let mut orphans = log.take_orphans().expect("the orphans receiver");
    proxy.arm(AtCommit::LandThenCut);
    let appending = {
        let log = log.clone();
        tokio::spawn(async move { log.append(Bytes::from_static(b"landed")).await })
    };
    proxy.wait_landed().await;
    proxy.block(true);
    // While the first batch's outcome is looked up (for up to 30 s), every
    // other append is refused at once instead of queueing behind it.
    for _ in 0..5 {
        let t = Instant::now();
        match log.append(Bytes::from_static(b"refused")).await {
            Err(WalError::Unavailable { .. }) => {}
            other => panic!("expected Unavailable while settling, got {other:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!appending.is_finished(), "its own appender still waits");
    proxy.block(false);
    let answer = tokio::time::timeout(Duration::from_secs(10), appending)
        .await
        .expect("answered once PostgreSQL is back")
        .unwrap();
    assert_eq!(answer.unwrap(), 1, "acknowledged: it landed");
    assert!(orphans.try_recv().is_err(), "no orphan: its appender knows");
    assert_eq!(log.append(Bytes::from_static(b"after")).await.unwrap(), 2);
    assert_eq!(
        payloads(&pg.url("postgres")).await,
        vec![
            (1, Bytes::from_static(b"landed")),
            (2, Bytes::from_static(b"after"))
        ]
    );
}
