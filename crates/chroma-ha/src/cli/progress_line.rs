//! A progress line on standard error while a copy runs: collections and
//! records done of their totals, bytes and rate. On a terminal it redraws
//! one line every half second; otherwise it prints a line every 5 seconds.

use crate::copy::CopyProgress;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running progress line; [`ProgressLine::stop`] ends it.
pub struct ProgressLine {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// One rendering of the figures of `progress`, `secs` after the start.
pub fn render(label: &str, progress: &CopyProgress, secs: f64) -> String {
    let (cd, ct, rd, rt, bytes) = progress.figures();
    let percent = if rt == 0 {
        100.0
    } else {
        rd as f64 * 100.0 / rt as f64
    };
    let width = 30usize;
    let filled = ((percent / 100.0) * width as f64).round() as usize;
    format!(
        "{label} [{}{}] {percent:5.1}%  collections {cd}/{ct}  records {rd}/{rt}  {:.1} MiB  {:.0} records/s",
        "#".repeat(filled.min(width)),
        "-".repeat(width - filled.min(width)),
        bytes as f64 / 1048576.0,
        rd as f64 / secs.max(1e-3),
    )
}

impl ProgressLine {
    /// Starts printing the figures of `progress`.
    pub fn start(label: &'static str, progress: Arc<CopyProgress>) -> ProgressLine {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let terminal = std::io::stderr().is_terminal();
            let every = if terminal {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(5)
            };
            let started = Instant::now();
            loop {
                let done = tokio::select! {
                    _ = &mut stopped => true,
                    _ = tokio::time::sleep(every) => false,
                };
                let line = render(label, &progress, started.elapsed().as_secs_f64());
                let mut err = std::io::stderr().lock();
                let _ = if terminal {
                    write!(err, "\r{line}")
                } else {
                    writeln!(err, "{line}")
                };
                if done {
                    if terminal {
                        let _ = writeln!(err);
                    }
                    return;
                }
            }
        });
        ProgressLine { stop, task }
    }

    /// Prints the last figures and stops.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
