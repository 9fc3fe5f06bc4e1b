//! chroma-ha: a high-availability gateway for ChromaDB.
pub mod backend;
pub mod check;
pub mod chroma;
pub mod config;
