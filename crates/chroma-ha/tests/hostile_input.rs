//! Requests meant to hurt, against a real gateway in front of two real
//! Chroma servers under the fault tests' workload.
//!
//! Chroma 1.5.9 panics on `GET /api/v2/collections/{crn}` and drops the
//! connection while the server itself stays up. Counted as the servers'
//! failures, a burst of six such requests used to take both servers out of
//! rotation: any client could keep the cluster down.

mod fault_kit;
mod support;

use std::time::{Duration, Instant};

use fault_kit::checks::PROGRESS;
use fault_kit::workload::{Outcome, Workload, WorkloadSpec};
use fault_kit::{serial, status_now, Cluster};
use support::http_request;

#[test]
fn a_burst_of_requests_that_crash_chromas_handler_takes_no_server_out_of_rotation_and_fails_no_write(
) {
    let _serial = serial();
    let c = Cluster::start(&[]);
    let gw = c.gw();
    let w = Workload::start(&gw, WorkloadSpec::new("hostile"));
    w.wait_for_more_acks(30, PROGRESS);
    let crn = format!("{gw}/api/v2/collections/default_tenant:default_database:no-such");
    let burst_start = Instant::now();
    let mut answers = Vec::new();
    let mut fewest_healthy = u64::MAX;
    for round in 0..5 {
        let burst: Vec<_> = (0..6)
            .map(|_| {
                let crn = crn.clone();
                std::thread::spawn(move || {
                    http_request("GET", &crn, None, Duration::from_secs(20))
                        .map(|r| (r.status, r.text()))
                })
            })
            .collect();
        for handle in burst {
            answers.push(handle.join().expect("burst thread"));
        }
        let healthy = status_now(&gw)["healthy_instances"].as_u64().unwrap_or(0);
        fewest_healthy = fewest_healthy.min(healthy);
        eprintln!("hostile: burst {round}: {healthy} servers healthy after it");
    }
    let burst_end = Instant::now();
    w.wait_for_more_acks(30, PROGRESS);
    let result = w.stop();
    let s = status_now(&gw);
    eprintln!(
        "hostile: {} requests that crash Chroma's handler; answers {:?}; fewest healthy {fewest_healthy}",
        answers.len(),
        answers
            .iter()
            .map(|a| a.as_ref().map(|(status, _)| *status).map_err(|e| e.kind()))
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert_eq!(fewest_healthy, 2, "a server left rotation during the burst");
    assert_eq!(s["healthy_instances"], 2, "a server is out after the burst");
    for answer in &answers {
        let (status, body) = answer.as_ref().expect("the gateway answers each request");
        assert_eq!(*status, 502, "{body}");
        let error: serde_json::Value = serde_json::from_str(body).expect("Chroma-style JSON");
        assert_eq!(error["error"], "RequestFailedOnEveryServer", "{body}");
        assert!(error["message"].is_string(), "{body}");
    }
    let hurt: Vec<String> = result
        .writes_started_in(burst_start, burst_end)
        .iter()
        .filter(|op| op.outcome != Outcome::Acked && op.status.is_none_or(|s| s >= 500))
        .map(|op| {
            format!(
                "{} {} status={:?} err={:?}",
                op.kind, op.collection, op.status, op.error
            )
        })
        .collect();
    assert!(
        hurt.is_empty(),
        "writes failed during the burst:\n{}",
        hurt.join("\n")
    );
    eprintln!(
        "hostile: {} writes sent during the bursts, none failed by the gateway or a server",
        result.writes_started_in(burst_start, burst_end).len()
    );
}
