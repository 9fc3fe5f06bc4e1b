//! The harness of the JSON span scanner.

use serde_json::Value;

use crate::chroma::json_scan::{array_elements, is_valid, object_members, root, string_at, Span};

/// Deepest nesting the harness walks (serde_json refuses past 128).
const MAX_DEPTH: usize = 64;

/// Scans `data` as JSON. On text serde_json accepts, the scanner must agree
/// with it everywhere it claims something: the root span parses to the
/// whole document's value; an object's members are its keys in order with
/// spans that parse to their values (the last of duplicate keys wins, as in
/// serde_json); an array's elements likewise; `string_at` decodes strings
/// exactly. On any other text (and on valid JSON with a lone surrogate
/// escape, which serde_json accepts but cannot decode) it must only not
/// panic.
pub fn check_json_scan(data: &[u8]) {
    let valid = is_valid(data);
    let Some(span) = root(data) else {
        assert!(!valid, "no root span for valid JSON");
        return;
    };
    if !valid {
        // The scanner is only used on text serde_json accepted: here it
        // must just not panic, whatever it finds.
        let _ = object_members(data, &span);
        let _ = array_elements(data, &span);
        let _ = string_at(data, &span);
        return;
    }
    match serde_json::from_slice::<Value>(data) {
        Ok(whole) => check_value(data, &span, &whole, 0),
        // Valid JSON that holds a lone surrogate escape (`"\ude00"`): the
        // grammar allows it, a Rust string cannot hold it, so there is no
        // oracle; the scanner must still not panic on any part of it.
        Err(_) => walk_without_oracle(data, &span, 0),
    }
}

fn walk_without_oracle(data: &[u8], span: &Span, depth: usize) {
    let _ = string_at(data, span);
    if depth >= MAX_DEPTH {
        return;
    }
    if let Some(members) = object_members(data, span) {
        for (_, member) in &members {
            walk_without_oracle(data, member, depth + 1);
        }
    }
    if let Some(elements) = array_elements(data, span) {
        for element in &elements {
            walk_without_oracle(data, element, depth + 1);
        }
    }
}

fn parse_span(data: &[u8], span: &Span) -> Value {
    let bytes = data.get(span.clone()).expect("a span inside the document");
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "span {span:?} ({:?}) is not one JSON value: {e}",
            String::from_utf8_lossy(bytes)
        )
    })
}

fn check_value(data: &[u8], span: &Span, want: &Value, depth: usize) {
    assert_eq!(
        &parse_span(data, span),
        want,
        "span {span:?} holds another value"
    );
    if depth >= MAX_DEPTH {
        return;
    }
    match want {
        Value::Object(map) => {
            let members = object_members(data, span).expect("an object's members");
            let mut last = std::collections::BTreeMap::new();
            for (key, member) in &members {
                last.insert(key.clone(), member.clone());
            }
            assert_eq!(last.len(), map.len(), "other keys than serde_json found");
            for (key, member) in &last {
                let value = map.get(key).expect("a key serde_json found too");
                check_value(data, member, value, depth + 1);
            }
            assert_eq!(
                array_elements(data, span),
                None,
                "an object read as an array"
            );
        }
        Value::Array(items) => {
            let elements = array_elements(data, span).expect("an array's elements");
            assert_eq!(elements.len(), items.len(), "other element count");
            for (element, item) in elements.iter().zip(items) {
                check_value(data, element, item, depth + 1);
            }
            assert_eq!(
                object_members(data, span),
                None,
                "an array read as an object"
            );
        }
        Value::String(s) => {
            assert_eq!(string_at(data, span).as_deref(), Some(s.as_str()));
        }
        _ => {
            assert_eq!(string_at(data, span), None, "a non-string read as a string");
            assert_eq!(object_members(data, span), None);
            assert_eq!(array_elements(data, span), None);
        }
    }
}
