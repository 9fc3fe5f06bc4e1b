//! Whether the log can hold what arrives while a source server is paused
//! for a copy: refused at once if its free room would run out before the
//! copy is expected to end.

/// Margin: the log must last this many times the expected copy time.
const MARGIN: f64 = 2.0;
/// Seconds added to every estimate (listing, check, linking).
const OVERHEAD_SECS: f64 = 10.0;

/// `Ok(expected copy seconds)` when `free_bytes` of log room, filling at
/// `fill_bytes_per_sec`, lasts [`MARGIN`] times the time to copy `records`
/// at `records_per_sec`; otherwise the refusal's message.
pub fn log_room_verdict(
    free_bytes: u64,
    fill_bytes_per_sec: f64,
    records: u64,
    records_per_sec: f64,
) -> Result<f64, String> {
    let expected = records as f64 / records_per_sec.max(1.0) + OVERHEAD_SECS;
    if fill_bytes_per_sec <= 0.0 {
        return Ok(expected);
    }
    let lasts = free_bytes as f64 / fill_bytes_per_sec;
    if lasts >= expected * MARGIN {
        return Ok(expected);
    }
    Err(format!(
        "the log cannot hold what arrives during the copy: it has {:.1} MiB free and fills at \
         {:.2} MiB/s, so it is full in {lasts:.0} s, but copying {records} records is expected to \
         take {expected:.0} s (at {records_per_sec:.0} records/s; it must last {MARGIN}× that). \
         Raise wal.max_bytes, free room (a lagging server holds the log), or rebuild when fewer \
         writes arrive",
        free_bytes as f64 / 1048576.0,
        fill_bytes_per_sec / 1048576.0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_log_always_has_room() {
        assert!(log_room_verdict(0, 0.0, 1_000_000, 100.0).is_ok());
    }

    #[test]
    fn a_log_that_fills_before_the_copy_ends_is_refused_with_the_figures() {
        // 10 MiB free at 1 MiB/s: 10 s; 100k records at 1000/s: 110 s.
        let err = log_room_verdict(10 << 20, 1048576.0, 100_000, 1000.0).unwrap_err();
        assert!(
            err.contains("10.0 MiB free") && err.contains("110 s"),
            "{err}"
        );
        // 1 GiB free at 1 MiB/s lasts 1024 s >= 2 × 110 s.
        assert!(log_room_verdict(1 << 30, 1048576.0, 100_000, 1000.0).is_ok());
    }
}
