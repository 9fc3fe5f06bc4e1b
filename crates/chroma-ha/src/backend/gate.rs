//! The send gate: whether this gateway may send to Chroma now.
//!
//! A gateway on the file log always may ([`SendGate::open`]). Gateways
//! sharing a log in PostgreSQL may only while they hold the leader lease:
//! the lease loop opens the gate until the instant its last claim is valid
//! ([`GateControl::open_until`]), and every request to a server passes the
//! gate just before it is sent. So a leader that cannot renew (PostgreSQL
//! unreachable, the process stopped and resumed) stops sending by its own
//! monotonic clock at that instant, whether or not any of its tasks has
//! noticed yet, and before a successor can take the lease.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Passed by every request to a server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SendGate {
    /// `None`: always open. Otherwise open while the instant is ahead.
    until: Option<watch::Receiver<Option<Instant>>>,
    /// The longest a request waits at the closed gate.
    hold: Duration,
    held: Arc<AtomicU64>,
}

/// Opens and closes a leased [`SendGate`].
#[derive(Debug)]
pub struct GateControl {
    until: watch::Sender<Option<Instant>>,
    held: Arc<AtomicU64>,
}

impl SendGate {
    /// A gate that is always open.
    pub fn open() -> SendGate {
        SendGate {
            until: None,
            hold: Duration::ZERO,
            held: Arc::default(),
        }
    }

    /// A gate closed until its control opens it, at which a request waits
    /// at most `hold`.
    pub fn leased(hold: Duration) -> (SendGate, GateControl) {
        let (tx, rx) = watch::channel(None);
        let held = Arc::new(AtomicU64::new(0));
        let gate = SendGate {
            until: Some(rx),
            hold,
            held: held.clone(),
        };
        (gate, GateControl { until: tx, held })
    }

    /// Whether a request may be sent now.
    pub fn is_open(&self) -> bool {
        match &self.until {
            None => true,
            Some(rx) => rx.borrow().is_some_and(|until| until > Instant::now()),
        }
    }

    /// Waits until the gate is open, at most `within` or the gate's hold,
    /// whichever is shorter. `false`: it stayed closed, and the request
    /// must not be sent.
    pub async fn pass(&self, within: Duration) -> bool {
        let Some(rx) = &self.until else {
            return true;
        };
        let mut rx = rx.clone();
        let deadline = Instant::now() + within.min(self.hold);
        let mut counted = false;
        loop {
            if rx
                .borrow_and_update()
                .is_some_and(|until| until > Instant::now())
            {
                return true;
            }
            if !counted {
                counted = true;
                self.held.fetch_add(1, Ordering::Relaxed);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }
}

impl GateControl {
    /// Opens the gate until `until` (it closes by itself then).
    pub fn open_until(&self, until: Instant) {
        self.until.send_replace(Some(until));
    }

    /// Closes the gate now.
    pub fn close(&self) {
        self.until.send_replace(None);
    }

    /// Requests that found the gate closed (and waited, or were not sent)
    /// since the start.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_leased_gate_opens_until_the_given_instant_and_then_closes_by_itself() {
        let (gate, control) = SendGate::leased(Duration::from_secs(60));
        assert!(!gate.is_open());
        assert!(!gate.pass(Duration::from_millis(10)).await);
        control.open_until(Instant::now() + Duration::from_secs(1));
        assert!(gate.pass(Duration::ZERO).await);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(
            !gate.is_open(),
            "closed at the lease's end with no one telling it"
        );
        assert!(!gate.pass(Duration::from_millis(10)).await);
        assert_eq!(control.held(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_at_a_closed_gate_goes_as_soon_as_the_lease_is_renewed() {
        let (gate, control) = SendGate::leased(Duration::from_secs(60));
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.pass(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        control.open_until(Instant::now() + Duration::from_secs(3));
        assert!(waiting.await.unwrap());
        control.close();
        assert!(!gate.is_open());
        assert!(SendGate::open().pass(Duration::ZERO).await);
    }
}
