//! Percent-decoding and -encoding of one URL path segment.
//!
//! Chroma's router (axum) matches static segments on the raw path and
//! percent-decodes parameter segments (verified: `/tenants/%64efault_tenant/…`
//! finds `default_tenant`). The dialect does the same.

/// Decode `%XX` escapes of one path segment.
///
/// Guarantees: `decode(&encode(s)) == s` for every string `s`; a segment
/// with a malformed escape or whose bytes are not UTF-8 is returned as it
/// is (Chroma would refuse such a request itself).
pub fn decode(raw: &str) -> String {
    if !raw.contains('%') {
        return raw.to_owned();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|b| hex(*b));
            let lo = bytes.get(i + 2).and_then(|b| hex(*b));
            match (hi, lo) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => return raw.to_owned(),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| raw.to_owned())
}

/// Encode a value as one path segment: every byte outside the RFC 3986
/// unreserved set (`A-Z a-z 0-9 - . _ ~`) and `:` becomes `%XX`, so the
/// result never contains `/`, `?`, `#` or `%` unescaped.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_escapes_and_keeps_malformed_ones() {
        assert_eq!(decode("%64efault"), "default");
        assert_eq!(decode("a%3Ab"), "a:b");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%FF"), "%FF");
        assert_eq!(decode("caf%C3%A9"), "café");
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(s in any::<String>()) {
            let e = encode(&s);
            prop_assert!(!e.contains('/') && !e.contains('?') && !e.contains('#'));
            prop_assert_eq!(decode(&e), s);
        }
    }
}
