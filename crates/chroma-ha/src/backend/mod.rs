//! The Chroma servers behind the gateway: one HTTP client per server, the
//! classification of every attempt (Chroma's answer vs. a transient failure),
//! and per-server health from active heartbeat probes and passive marks.
//!
//! - [`client`]: [`BackendClient`], [`UpstreamResponse`], [`TransportError`].
//! - [`mod@classify`]: [`AttemptClass`]: answer or transient failure.
//! - [`gate`]: [`SendGate`]: whether this gateway may send to Chroma now
//!   (it holds the leader lease of a shared log).
//! - [`health`]: the rise/fall/drain state machine ([`Health`]).
//! - [`probe`]: the heartbeat probe and its loop.
//! - [`set`]: [`Backends`], all servers in priority order, and their probes.

pub mod classify;
pub mod client;
pub mod gate;
pub mod health;
pub mod probe;
pub mod set;

pub use classify::{classify, classify_response, AttemptClass};
pub use client::{
    strip_hop_by_hop, BackendClient, ClientBuildError, ClientSettings, TransportError,
    UpstreamResponse,
};
pub use gate::{GateControl, SendGate};
pub use health::{Health, HealthSnapshot, HealthState, Thresholds};
pub use probe::{heartbeat, run_probe_loop, ProbeError, HEARTBEAT_PATH};
pub use set::{Backend, Backends, ProbeTasks};
