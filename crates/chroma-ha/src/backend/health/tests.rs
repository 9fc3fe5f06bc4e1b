//! Tests of the health state machine and the probe loop (paused time).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::*;
use crate::backend::probe::run_probe_loop;

fn health(rise: u32, fall: u32) -> Health {
    Health::new("s", Thresholds::new(rise, fall))
}

#[test]
fn starts_unknown_and_one_probe_settles_it() {
    let h = health(2, 3);
    assert_eq!(h.state(), HealthState::Unknown);
    assert!(!h.is_healthy());
    assert_eq!(h.last_health_check(), None);
    h.record_probe_success();
    assert_eq!(h.state(), HealthState::Healthy);
    assert!(h.last_health_check().unwrap() > 1.7e9);

    let h = health(2, 3);
    h.record_probe_failure("refused");
    assert_eq!(h.state(), HealthState::Unhealthy);
    assert_eq!(h.snapshot().last_error.as_deref(), Some("probe: refused"));
}

#[test]
fn falls_after_threshold_failures_and_rises_after_threshold_successes() {
    let h = health(2, 3);
    h.record_probe_success();
    h.record_probe_failure("x");
    h.record_probe_failure("x");
    assert_eq!(h.state(), HealthState::Healthy);
    assert_eq!(h.consecutive_failures(), 2);
    // A success in between resets the count.
    h.record_probe_success();
    assert_eq!(h.consecutive_failures(), 0);
    h.record_probe_failure("x");
    h.record_probe_failure("x");
    assert_eq!(h.state(), HealthState::Healthy);
    h.record_probe_failure("x");
    assert_eq!(h.state(), HealthState::Unhealthy);

    h.record_probe_success();
    assert_eq!(h.state(), HealthState::Unhealthy);
    // A failure in between resets the rise count.
    h.record_probe_failure("x");
    h.record_probe_success();
    assert_eq!(h.state(), HealthState::Unhealthy);
    h.record_probe_success();
    assert_eq!(h.state(), HealthState::Healthy);
}

#[test]
fn thresholds_of_zero_mean_one() {
    let h = health(0, 0);
    assert_eq!(h.thresholds(), Thresholds { rise: 1, fall: 1 });
    h.record_probe_success();
    h.record_probe_failure("x");
    assert_eq!(h.state(), HealthState::Unhealthy);
    h.record_probe_success();
    assert_eq!(h.state(), HealthState::Healthy);
}

#[test]
fn passive_marks() {
    let h = health(2, 3);
    h.record_probe_success();
    h.mark_failure("timeout");
    h.mark_failure("timeout");
    assert!(h.is_healthy());
    // An answered request resets the failure count.
    h.mark_success();
    h.mark_failure("timeout");
    h.mark_failure("timeout");
    assert!(h.is_healthy());
    // Passive failures count toward fall like probe failures.
    h.record_probe_failure("x");
    assert_eq!(h.state(), HealthState::Unhealthy);
    // Live successes do not count toward rise.
    h.mark_success();
    h.mark_success();
    assert_eq!(h.state(), HealthState::Unhealthy);
    h.record_probe_success();
    h.record_probe_success();
    assert!(h.is_healthy());
    // mark_down takes it out at once.
    h.mark_down("connection refused");
    assert_eq!(h.state(), HealthState::Unhealthy);

    let s = h.snapshot();
    assert_eq!(s.total_requests, 8);
    assert_eq!(s.successes, 3);
    assert!((s.success_rate - 3.0 / 8.0).abs() < 1e-9);
    assert_eq!(s.last_error.as_deref(), Some("connection refused"));
}

#[test]
fn success_rate_is_one_before_any_request() {
    assert_eq!(health(1, 1).success_rate(), 1.0);
}

#[test]
fn observe_applies_the_passive_policy() {
    let h = health(1, 3);
    h.record_probe_success();
    let answer = |status: u16, body: &'static [u8]| {
        Ok(UpstreamResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body),
        })
    };
    assert_eq!(
        h.observe(&answer(500, br#"{"error":"InternalError","message":"m"}"#)),
        AttemptClass::Answer
    );
    assert_eq!(h.observe(&answer(502, b"")), AttemptClass::Transient);
    let timeout = Err(TransportError::Timeout {
        server: "s".into(),
        method: Method::GET,
        path: "/".into(),
        timeout: Duration::from_secs(1),
    });
    assert_eq!(h.observe(&timeout), AttemptClass::Transient);
    assert!(h.is_healthy(), "two transient failures < fall of 3");
    let refused = Err(TransportError::Connect {
        server: "s".into(),
        url: "http://x".into(),
        detail: "refused".into(),
    });
    h.record_probe_success();
    assert_eq!(h.observe(&refused), AttemptClass::Transient);
    assert_eq!(
        h.state(),
        HealthState::Unhealthy,
        "connect failure marks down at once"
    );
    assert_eq!(h.snapshot().total_requests, 4);
    assert_eq!(h.snapshot().successes, 1);
}

#[test]
fn drain_overrides_probes_and_restores_probed_state() {
    let h = health(2, 3);
    h.record_probe_success();
    h.set_draining(true);
    assert_eq!(h.state(), HealthState::Draining);
    assert!(!h.is_healthy());
    assert!(h.is_draining());
    h.record_probe_success();
    assert_eq!(h.state(), HealthState::Draining);
    h.set_draining(false);
    assert_eq!(h.state(), HealthState::Healthy);

    // Probes keep running while drained: the server comes back in the state
    // they found.
    h.set_draining(true);
    for _ in 0..3 {
        h.record_probe_failure("x");
    }
    assert_eq!(h.state(), HealthState::Draining);
    h.set_draining(false);
    assert_eq!(h.state(), HealthState::Unhealthy);
}

#[tokio::test]
async fn subscribers_see_changes_only() {
    let h = health(1, 1);
    let mut rx = h.subscribe();
    assert_eq!(*rx.borrow_and_update(), HealthState::Unknown);
    h.record_probe_success();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), HealthState::Healthy);
    h.record_probe_success();
    h.mark_success();
    assert!(!rx.has_changed().unwrap(), "no change, no wake-up");
    h.set_draining(true);
    assert_eq!(*rx.borrow_and_update(), HealthState::Draining);
}

#[tokio::test]
async fn group_counter_counts_changes() {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let h = Health::with_group("s", Thresholds::new(1, 1), tx);
    h.record_probe_success();
    h.record_probe_success();
    h.record_probe_failure("x");
    assert_eq!(*rx.borrow(), 2);
}

/// A probe whose result the test flips, counting its calls.
#[derive(Clone, Default)]
struct FakeProbe {
    ok: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

impl FakeProbe {
    fn spawn(&self, health: Arc<Health>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let probe = self.clone();
        tokio::spawn(async move {
            run_probe_loop(&health, interval, || {
                let probe = probe.clone();
                async move {
                    probe.calls.fetch_add(1, Ordering::SeqCst);
                    if probe.ok.load(Ordering::SeqCst) {
                        Ok(())
                    } else {
                        Err("down")
                    }
                }
            })
            .await
        })
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn probe_loop_probes_at_once_then_every_interval() {
    let h = Arc::new(health(2, 3));
    let probe = FakeProbe::default();
    probe.ok.store(true, Ordering::SeqCst);
    let task = probe.spawn(h.clone(), Duration::from_secs(1));

    sleep_ms(10).await; // t = 0.01: the first probe ran immediately
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.state(), HealthState::Healthy);
    sleep_ms(3000).await; // t = 3.01: probes at 1, 2, 3
    assert_eq!(probe.calls.load(Ordering::SeqCst), 4);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn probe_loop_fall_and_rise_in_time() {
    let h = Arc::new(health(2, 3));
    let probe = FakeProbe::default();
    probe.ok.store(true, Ordering::SeqCst);
    let task = probe.spawn(h.clone(), Duration::from_secs(1));
    let mut rx = h.subscribe();

    sleep_ms(500).await; // t = 0.5: healthy after the first probe
    assert_eq!(h.state(), HealthState::Healthy);
    rx.borrow_and_update();

    probe.ok.store(false, Ordering::SeqCst);
    sleep_ms(2000).await; // t = 2.5: failures at 1 and 2
    assert_eq!(h.state(), HealthState::Healthy);
    assert_eq!(h.consecutive_failures(), 2);
    sleep_ms(1000).await; // t = 3.5: third failure at 3
    assert_eq!(h.state(), HealthState::Unhealthy);
    assert!(rx.has_changed().unwrap());

    probe.ok.store(true, Ordering::SeqCst);
    sleep_ms(1000).await; // t = 4.5: one success at 4
    assert_eq!(h.state(), HealthState::Unhealthy);
    // wait_healthy resolves at the second success (t = 5).
    let start = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), h.wait_healthy())
        .await
        .unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited <= Duration::from_millis(600),
        "{waited:?}"
    );
    assert!(h.is_healthy());

    // Drain wins over passing probes; undrain restores at once.
    h.set_draining(true);
    sleep_ms(3000).await;
    assert_eq!(h.state(), HealthState::Draining);
    h.set_draining(false);
    assert!(h.is_healthy());
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn slow_probes_do_not_overlap() {
    let h = Arc::new(health(1, 1));
    let in_flight = Arc::new(AtomicU32::new(0));
    let max_seen = Arc::new(AtomicU32::new(0));
    let (f, m) = (in_flight.clone(), max_seen.clone());
    let hc = h.clone();
    let task = tokio::spawn(async move {
        run_probe_loop(&hc, Duration::from_millis(100), || {
            let (f, m) = (f.clone(), m.clone());
            async move {
                let n = f.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(350)).await;
                f.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), &str>(())
            }
        })
        .await
    });
    sleep_ms(2000).await;
    assert_eq!(max_seen.load(Ordering::SeqCst), 1);
    assert!(h.is_healthy());
    task.abort();
}

#[test]
fn the_last_routable_server_whose_probe_passes_stays_in_rotation_whatever_requests_say_except_a_refused_connection(
) {
    let h = health(2, 2);
    h.record_probe_success();
    let broken = Err(TransportError::Broken {
        server: "s".into(),
        method: Method::GET,
        path: "/api/v2/collections/t:d:c".into(),
        detail: "connection closed before message completed".into(),
    });
    for _ in 0..10 {
        h.observe_as(&broken, true);
    }
    assert!(h.is_healthy(), "ten broken requests, but its probe passes");
    assert_eq!(h.consecutive_failures(), 10, "still counted");
    h.observe_as(&broken, false);
    assert!(!h.is_healthy(), "not the last one: the failures count");

    let h = health(2, 2);
    h.record_probe_success();
    h.record_probe_failure("timeout");
    h.observe_as(&broken, true);
    assert!(!h.is_healthy(), "its last probe failed too");

    let h = health(2, 2);
    h.record_probe_success();
    let refused = Err(TransportError::Connect {
        server: "s".into(),
        url: "http://x".into(),
        detail: "refused".into(),
    });
    h.observe_as(&refused, true);
    assert!(
        !h.is_healthy(),
        "no request makes a server refuse connections"
    );
}
