//! chroma-ha: a high-availability gateway for ChromaDB.
pub mod backend;
pub mod check;
pub mod chroma;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod http;
pub mod replication;
pub mod telemetry;
