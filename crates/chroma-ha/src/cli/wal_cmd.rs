//! `chroma-ha wal inspect|verify DIR`.

use std::path::Path;
use std::process::ExitCode;

/// Prints segments, LSN ranges, cursors and sizes.
pub fn inspect(dir: &Path, json: bool) -> ExitCode {
    let report = match wal::inspect(dir) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("chroma-ha wal inspect {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    if json {
        let segments: Vec<_> = report
            .segments
            .iter()
            .map(|s| {
                serde_json::json!({
                    "file": s.path.file_name().map(|n| n.to_string_lossy().into_owned()),
                    "first_lsn": s.first_lsn,
                    "last_lsn": s.last_lsn,
                    "bytes": s.bytes,
                })
            })
            .collect();
        let value = serde_json::json!({
            "dir": dir.display().to_string(),
            "segments": segments,
            "cursors": report.cursors,
            "total_bytes": report.total_bytes,
        });
        println!("{value:#}");
        return ExitCode::SUCCESS;
    }
    println!("log {}", dir.display());
    println!(
        "{:<28} {:>14} {:>14} {:>14}",
        "segment", "first LSN", "last LSN", "bytes"
    );
    for s in &report.segments {
        let name = s
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let last = s
            .last_lsn
            .map_or_else(|| "-".to_string(), |l| l.to_string());
        println!("{name:<28} {:>14} {last:>14} {:>14}", s.first_lsn, s.bytes);
    }
    println!(
        "{} segment(s), {} bytes",
        report.segments.len(),
        report.total_bytes
    );
    if report.cursors.is_empty() {
        println!("no cursors");
    }
    for (name, lsn) in &report.cursors {
        println!("cursor {name:<20} {lsn}");
    }
    ExitCode::SUCCESS
}

/// Checks every CRC; exit 1 naming file and offset on corruption.
pub fn verify(dir: &Path) -> ExitCode {
    match wal::verify(dir) {
        Ok(report) => {
            let range = report.lsn_range.map_or_else(
                || "no records".to_string(),
                |(a, b)| format!("LSN {a}..={b}"),
            );
            println!(
                "ok: {} segment(s), {} record(s), {range}",
                report.segments, report.records
            );
            if let Some((file, offset, reason)) = report.torn_tail {
                println!(
                    "note: torn tail in {} at offset {offset} ({reason}); the next open cuts it away",
                    file.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ wal::WalError::Corruption { .. }) => {
            eprintln!("CORRUPT: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("chroma-ha wal verify {}: {e}", dir.display());
            ExitCode::from(2)
        }
    }
}
