//! Tests of the content check ([`super`]).

use super::compare::{float_equal, json_equal};
use super::reader::decode_records;
use super::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[test]
fn json_equal_rules() {
    assert!(json_equal(
        &json!({"a": 1, "b": "x"}),
        &json!({"b": "x", "a": 1}),
        1e-6
    ));
    assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1.0}), 1e-6));
    assert!(json_equal(
        &json!({"a": 0.1}),
        &json!({"a": 0.1000000001}),
        1e-6
    ));
    assert!(!json_equal(&json!({"a": 0.1}), &json!({"a": 0.1001}), 1e-6));
    assert!(!json_equal(
        &json!({"a": 1}),
        &json!({"a": 1, "b": 2}),
        1e-6
    ));
    assert!(json_equal(&Value::Null, &Value::Null, 1e-6));
}

#[test]
fn float_tolerance_is_relative_above_one() {
    assert!(float_equal(1000.0, 1000.0005, 1e-6));
    assert!(!float_equal(1000.0, 1000.01, 1e-6));
    assert!(float_equal(1e-7, 1.5e-7, 1e-6));
}

#[test]
fn decode_rejects_ragged_columns() {
    let mut out = BTreeMap::new();
    let page = json!({"ids": ["a", "b"], "documents": ["x"]});
    assert!(decode_records("u", &page, &mut out).is_err());
    let page = json!({"ids": ["a"], "documents": [null], "metadatas": [{"k": 1}],
                      "embeddings": [[0.5, 1.0]], "uris": null});
    assert_eq!(decode_records("u", &page, &mut out).ok(), Some(1));
    assert_eq!(out["a"].embedding.as_deref(), Some(&[0.5, 1.0][..]));
}

#[test]
fn segments_are_encoded() {
    assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    assert_eq!(encode_segment("default_tenant"), "default_tenant");
}

#[test]
fn auth_header_parse() {
    let h = AuthHeader::parse("x-chroma-token: abc").ok();
    assert_eq!(h, Some(AuthHeader::new("x-chroma-token", "abc")));
    assert!(AuthHeader::parse("nocolon").is_err());
}
