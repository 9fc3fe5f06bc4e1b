//! Helper process of the crash test: appends records with `Always` from
//! several tasks until it is killed, printing `LSN PAYLOAD` for every
//! acknowledged append. Usage: wal-crash-child DIR ROUND TASKS

use std::io::Write;
use wal::{SyncPolicy, Wal, WalOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: wal-crash-child DIR ROUND TASKS");
        std::process::exit(2);
    }
    let round: u64 = args[2].parse().unwrap_or(0);
    let tasks: u64 = args[3].parse().unwrap_or(4);
    let options = WalOptions {
        sync: SyncPolicy::Always,
        segment_bytes: 64 * 1024,
        ..WalOptions::default()
    };
    let (wal, _) = match Wal::open(&args[1], options) {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(1);
        }
    };
    let mut handles = Vec::new();
    for task in 0..tasks {
        let wal = wal.clone();
        handles.push(tokio::spawn(async move {
            for i in 0u64.. {
                let pad = "p".repeat(((i * 37 + task * 11) % 300) as usize);
                let payload = format!("r{round}-t{task}-{i}-{pad}");
                match wal.append(payload.clone()).await {
                    Ok(lsn) => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{lsn} {payload}");
                    }
                    Err(e) => {
                        eprintln!("append failed: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
}
