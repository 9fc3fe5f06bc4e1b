use super::*;

fn server(name: &str, healthy: bool, lag: u64) -> ServerReading {
    ServerReading {
        name: name.into(),
        healthy,
        state: if healthy { "healthy" } else { "unhealthy" },
        applier: "running",
        lag_entries: lag,
        lag_seconds: lag as f64 / 10.0,
        last_error: (!healthy).then(|| "connection refused".to_string()),
    }
}

fn reading(at: f64, writes: u64) -> Reading {
    Reading {
        at,
        writes_total: writes,
        reads_total: 2 * writes,
        replayed_total: writes / 2,
        log_used_bytes: 1000 + writes,
        log_max_bytes: 1 << 20,
        executor: Some("primary".into()),
        ready: true,
        servers: vec![server("primary", true, 0), server("replica", true, 0)],
        new_letters: Vec::new(),
        cluster: None,
    }
}

fn letter(id: u64) -> DeadLetter {
    DeadLetter {
        id,
        server: "replica".into(),
        lsn: 40 + id,
        method: "POST".into(),
        path: "/api/v2/tenants/t/databases/d/collections/c/add".into(),
        status: 400,
        error: "x".repeat(1000),
        at: 5.0,
        attempts: 1,
        record_bytes: 10,
    }
}

#[test]
fn rates_are_the_counters_growth_per_second_between_samples() {
    let history = History::new();
    history.record(reading(100.0, 10));
    history.record(reading(102.0, 30));
    let view = history.view();
    assert_eq!(view.at, vec![100.0, 102.0]);
    assert_eq!(view.writes_per_second, vec![0.0, 10.0]);
    assert_eq!(view.reads_per_second, vec![0.0, 20.0]);
    assert_eq!(view.replayed_per_second, vec![0.0, 5.0]);
    assert_eq!(view.log_used_bytes, vec![1010.0, 1030.0]);
    assert_eq!(view.log_max_bytes, 1 << 20);
}

#[test]
fn a_counter_that_starts_again_from_zero_gives_a_rate_of_zero_not_a_huge_one() {
    let history = History::new();
    history.record(reading(100.0, 500));
    history.record(reading(101.0, 3));
    assert_eq!(history.view().writes_per_second, vec![0.0, 0.0]);
}

#[test]
fn only_the_last_fifteen_minutes_of_samples_are_kept() {
    let history = History::new();
    for i in 0..(MAX_SAMPLES + 25) {
        history.record(reading(i as f64, i as u64));
    }
    let view = history.view();
    assert_eq!(view.at.len(), MAX_SAMPLES);
    assert_eq!(view.at[0], 25.0, "the oldest samples went first");
    assert_eq!(view.lag_entries[1].values.len(), MAX_SAMPLES);
    assert_eq!(MAX_SAMPLES, 900);
}

#[test]
fn lags_and_health_are_charted_per_server_in_configuration_order() {
    let history = History::new();
    history.record(reading(1.0, 0));
    let mut down = reading(2.0, 0);
    down.servers[1] = server("replica", false, 7);
    history.record(down);
    let view = history.view();
    let names: Vec<_> = view.lag_entries.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["primary", "replica"]);
    assert_eq!(view.lag_entries[1].values, vec![0.0, 7.0]);
    assert_eq!(view.lag_seconds[1].values, vec![0.0, 0.7]);
    assert_eq!(view.healthy[1].values, vec![1.0, 0.0]);
    assert_eq!(view.healthy[0].values, vec![1.0, 1.0]);
}

#[test]
fn a_server_going_down_and_up_and_an_executor_change_are_listed_newest_first() {
    let history = History::new();
    history.record(reading(1.0, 0));
    let mut down = reading(2.0, 0);
    down.servers[0] = server("primary", false, 3);
    down.executor = Some("replica".into());
    history.record(down.clone());
    history.record(down.clone());
    let mut up = down;
    up.at = 3.0;
    up.servers[0] = server("primary", true, 0);
    history.record(up);
    let events = history.view().events;
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    // Newest first: what one sample saw is listed in reverse, so the
    // executor change sits above the server going down that caused it.
    assert_eq!(kinds, ["server_up", "executor", "server_down", "gateway"]);
    assert_eq!(events[2].at, 2.0);
    assert_eq!(
        events[2].message,
        "primary is unhealthy (was healthy): connection refused"
    );
    assert_eq!(events[1].message, "the executor is replica (was primary)");
    assert_eq!(events[0].message, "primary is healthy (was unhealthy)");
}

#[test]
fn each_new_dead_letter_is_one_event_and_is_remembered_as_seen() {
    let history = History::new();
    history.record(reading(1.0, 0));
    assert_eq!(history.newest_letter(), None);
    let mut with_letters = reading(2.0, 0);
    with_letters.new_letters = vec![letter(3), letter(4)];
    history.record(with_letters);
    history.record(reading(3.0, 0));
    assert_eq!(history.newest_letter(), Some(4));
    let events = history.view().events;
    let letters: Vec<_> = events.iter().filter(|e| e.kind == "dead_letter").collect();
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().any(|e| e.message
        == "dead letter #4 on replica: LSN 44 POST /api/v2/tenants/t/databases/d/collections/c/add got 400"));
}

#[test]
fn events_are_bounded() {
    let history = History::new();
    for i in 0..(MAX_EVENTS * 2) {
        let mut r = reading(i as f64, 0);
        r.ready = i % 2 == 0;
        history.record(r);
    }
    let events = history.view().events;
    assert_eq!(events.len(), MAX_EVENTS);
    assert_eq!(events[0].at, (MAX_EVENTS * 2 - 1) as f64);
}

#[test]
fn a_listed_dead_letter_has_its_error_cut_short_and_no_record() {
    let view = LetterView::from(&letter(9));
    assert_eq!(view.error.chars().count(), LETTER_ERROR_CHARS + 1);
    assert!(view.error.ends_with('…'));
    assert_eq!(
        view.request,
        "POST /api/v2/tenants/t/databases/d/collections/c/add"
    );
    let json = serde_json::to_value(&view).unwrap();
    assert!(json.get("record").is_none());
}
