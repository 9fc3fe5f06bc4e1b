//! A minimal scanner over JSON text that finds byte spans of object members
//! and array elements, so that a value can be replaced while every other
//! byte of the document stays exactly as it was (key order, number
//! spelling, whitespace). Only used on text that serde_json has already
//! accepted as valid JSON; on anything else it returns `None`, never panics.

use std::ops::Range;

/// Byte range of one JSON value inside the document.
pub type Span = Range<usize>;

/// Whether `body` is one syntactically valid JSON document. JSON text is
/// UTF-8: serde_json skips over the bytes of a string it is told to ignore
/// without checking them, so the encoding is checked first.
pub fn is_valid(body: &[u8]) -> bool {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
        Err(_) => false,
    }
}

/// Span of the whole document's value (leading/trailing whitespace cut).
pub fn root(body: &[u8]) -> Option<Span> {
    let start = skip_ws(body, 0);
    let end = skip_value(body, start)?;
    Some(start..end)
}

/// Members `(decoded key, value span)` of the object at `span`; `None` if
/// the value there is not an object.
pub fn object_members(body: &[u8], span: &Span) -> Option<Vec<(String, Span)>> {
    let mut i = span.start;
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(body, i + 1);
    let mut out = Vec::new();
    if body.get(i) == Some(&b'}') {
        return Some(out);
    }
    loop {
        let key_end = skip_string(body, i)?;
        let key = decode_string(body.get(i..key_end)?)?;
        i = skip_ws(body, key_end);
        if body.get(i) != Some(&b':') {
            return None;
        }
        let vstart = skip_ws(body, i + 1);
        let vend = skip_value(body, vstart)?;
        out.push((key, vstart..vend));
        i = skip_ws(body, vend);
        match body.get(i) {
            Some(b',') => i = skip_ws(body, i + 1),
            Some(b'}') => return Some(out),
            _ => return None,
        }
    }
}

/// Element spans of the array at `span`; `None` if it is not an array.
pub fn array_elements(body: &[u8], span: &Span) -> Option<Vec<Span>> {
    let mut i = span.start;
    if body.get(i) != Some(&b'[') {
        return None;
    }
    i = skip_ws(body, i + 1);
    let mut out = Vec::new();
    if body.get(i) == Some(&b']') {
        return Some(out);
    }
    loop {
        let end = skip_value(body, i)?;
        out.push(i..end);
        i = skip_ws(body, end);
        match body.get(i) {
            Some(b',') => i = skip_ws(body, i + 1),
            Some(b']') => return Some(out),
            _ => return None,
        }
    }
}

/// The decoded string at `span`, if the value there is a JSON string.
pub fn string_at(body: &[u8], span: &Span) -> Option<String> {
    decode_string(body.get(span.clone())?)
}

fn decode_string(raw: &[u8]) -> Option<String> {
    if raw.first() != Some(&b'"') {
        return None;
    }
    serde_json::from_slice::<String>(raw).ok()
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Index just after the string starting at `i` (which must be `"`).
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// Index just after the value starting at `i`. Containers are skipped by
/// bracket counting (no recursion), strings with their escapes.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            // Number or literal: runs until a delimiter.
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_elements() {
        let doc = br#" { "a" : [1, {"x":"}"}] , "i\u0064":"v\"q", "n":-1.5e3 } "#;
        assert!(is_valid(doc));
        let r = root(doc).unwrap();
        let m = object_members(doc, &r).unwrap();
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "id", "n"]);
        assert_eq!(string_at(doc, &m[1].1).as_deref(), Some("v\"q"));
        assert_eq!(&doc[m[2].1.clone()], b"-1.5e3");
        let e = array_elements(doc, &m[0].1).unwrap();
        assert_eq!(&doc[e[1].clone()], br#"{"x":"}"}"#);
        assert_eq!(object_members(doc, &m[0].1), None);
        assert_eq!(array_elements(b"[]", &(0..2)), Some(vec![]));
        assert_eq!(object_members(b"{}", &(0..2)), Some(vec![]));
    }

    #[test]
    fn a_document_with_invalid_utf8_in_a_string_is_not_valid_json() {
        assert!(is_valid(b"{\"a\": \"ok\"}"));
        assert!(!is_valid(b"{\"a\": \"dist\xffes\"}"));
        assert!(!is_valid(b"[\"\xc3\"]"));
    }

    #[test]
    fn garbage_gives_none_not_panic() {
        for doc in [
            &b""[..],
            b"{",
            b"[1,",
            b"{\"a\"",
            b"{\"a\":}",
            b"\"abc",
            b"]",
        ] {
            if let Some(r) = root(doc) {
                let _ = object_members(doc, &r);
                let _ = array_elements(doc, &r);
            }
        }
    }
}
