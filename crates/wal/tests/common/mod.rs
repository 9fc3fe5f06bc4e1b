#![allow(dead_code)]
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wal::fs::FileSystem;
use wal::{Record, SyncPolicy, Wal, WalOptions};

pub fn options(fs: Arc<dyn FileSystem>, segment_bytes: u64) -> WalOptions {
    WalOptions {
        sync: SyncPolicy::Always,
        segment_bytes,
        fs,
        ..WalOptions::default()
    }
}

pub fn real_options(segment_bytes: u64) -> WalOptions {
    WalOptions {
        sync: SyncPolicy::Always,
        segment_bytes,
        ..WalOptions::default()
    }
}

/// Reads records `from..=to` through a reader, failing after 10 s.
pub async fn read_range(wal: &Wal, from: u64, to: u64) -> wal::Result<Vec<Record>> {
    let mut reader = wal.read_from(from);
    let mut out = Vec::new();
    for _ in from..=to {
        let record = tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .expect("reader stalled")?;
        out.push(record);
    }
    Ok(out)
}

pub fn payload(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat((i % 97) as usize)).into_bytes()
}

pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}
