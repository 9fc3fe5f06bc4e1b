//! Every harness over its committed corpus plus seeded mutations, and the
//! inputs that once broke a decoder, as regression tests.

use super::*;

/// Mutated inputs per harness on top of its corpus.
const MUTATIONS: usize = 3000;

#[test]
fn log_record_harness_passes_on_its_corpus_and_mutations() {
    let ran = fuzz_corpus::exercise("log_record", MUTATIONS, check_log_record);
    assert!(ran.corpus >= 5, "corpus has only {} inputs", ran.corpus);
}

#[test]
fn json_scan_harness_passes_on_its_corpus_and_mutations() {
    let ran = fuzz_corpus::exercise("json_scan", MUTATIONS, check_json_scan);
    assert!(ran.corpus >= 5, "corpus has only {} inputs", ran.corpus);
}

#[test]
fn route_harness_passes_on_its_corpus_and_mutations() {
    let ran = fuzz_corpus::exercise("route", MUTATIONS, check_route);
    assert!(ran.corpus >= 35, "corpus has only {} inputs", ran.corpus);
}

#[test]
fn config_harness_passes_on_its_corpus_and_mutations() {
    let ran = fuzz_corpus::exercise("config", MUTATIONS, check_config);
    assert!(ran.corpus >= 2, "corpus has only {} inputs", ran.corpus);
}

#[test]
fn a_function_named_attach_renders_to_a_path_that_still_names_it() {
    let path = "/api/v2/tenants/t/databases/d/collections/c/functions/att%61ch";
    let route = crate::chroma::classify(&http::Method::GET, path);
    let crate::chroma::Route::Known(known) = &route else {
        panic!("{path} is not a known route: {route:?}");
    };
    assert_eq!(known.function.as_deref(), Some("attach"));
    assert!(
        known.render().ends_with("/functions/%61ttach"),
        "{}",
        known.render()
    );
    assert_eq!(
        crate::chroma::classify(&http::Method::GET, &known.render()),
        route
    );
    check_route(&fuzz_corpus_input(
        "route",
        "regression-function-named-attach",
    ));
}

#[test]
fn a_collection_id_spelled_by_id_renders_to_a_path_that_still_names_it() {
    let path = "/api/v2/tenants/t/databases/d/collections/by%2Did/add";
    let route = crate::chroma::classify(&http::Method::POST, path);
    let crate::chroma::Route::Known(known) = &route else {
        panic!("{path} is not a known route: {route:?}");
    };
    assert_eq!(known.collection_id(), Some("by-id"));
    assert_eq!(
        crate::chroma::classify(&http::Method::POST, &known.render()),
        route
    );
    check_route(&fuzz_corpus_input(
        "route",
        "regression-collection-id-by-id",
    ));
}

#[test]
fn a_renew_interval_past_half_the_longest_duration_is_an_error_not_an_overflow() {
    let text =
        "primary = \"http://127.0.0.1:8001\"\n[log]\nrenew_interval = \"10000000000000000000\"\n";
    let err = crate::config::Config::from_toml_str(text, std::path::Path::new("t.toml"))
        .expect_err("a renew interval longer than the lease is refused");
    assert!(err.to_string().contains("log.renew_interval"), "{err}");
    check_config(&fuzz_corpus_input(
        "config",
        "regression-renew-interval-overflow.toml",
    ));
}

fn fuzz_corpus_input(target: &str, name: &str) -> Vec<u8> {
    let path = fuzz_corpus::corpus_dir(target).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn valid_json_with_a_lone_surrogate_escape_is_scanned_without_an_oracle() {
    let doc = br#"{"ids":["a"],"metadatas":[{"s":"\ude00"}]}"#;
    assert!(crate::chroma::json_scan::is_valid(doc));
    assert!(serde_json::from_slice::<serde_json::Value>(doc).is_err());
    check_json_scan(doc);
    check_json_scan(&fuzz_corpus_input(
        "json_scan",
        "regression-lone-surrogate-escape.json",
    ));
}

#[test]
fn a_duration_the_clock_cannot_reach_is_refused_when_the_config_is_read() {
    let name = "regression-hold-requests-for-past-the-clock.toml";
    let text = String::from_utf8(fuzz_corpus_input("config", name)).expect("UTF-8 TOML");
    let err = crate::config::Config::from_toml_str(&text, std::path::Path::new(name))
        .expect_err("1e19 seconds is refused");
    assert!(err.to_string().contains("too long"), "{err}");
    check_config(text.as_bytes());
}

#[test]
fn a_log_filter_with_a_non_ascii_character_is_a_config_error_not_a_panic() {
    let text = "primary = \"http://127.0.0.1:8001\"\nlog_level = \"x, \u{e9}=info\"\n";
    let err = crate::config::Config::from_toml_str(text, std::path::Path::new("t.toml"))
        .expect_err("a non-ASCII filter is refused");
    assert!(err.to_string().contains("log_level"), "{err}");
    check_config(text.as_bytes());
    check_config(&fuzz_corpus_input(
        "config",
        "regression-non-ascii-log-filter",
    ));
}
