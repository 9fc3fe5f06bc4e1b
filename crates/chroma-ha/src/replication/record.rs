//! What the gateway writes into the log: entries (client writes) and
//! decisions about them. Format of a log record's payload:
//!
//! ```text
//! b'E' | version u8 (1) | header_len u32 LE | header JSON | body bytes
//! b'D' | version u8 (1) | entry LSN u64 LE | decision u8 (1 rejected, 2 cancelled)
//! ```
//!
//! The entry header holds method, logical path and query, content type and
//! receive time; never the client's credentials. A committed entry has no
//! decision record: an entry is committed unless a later `D` record says
//! otherwise (see `ledger`).

use bytes::{BufMut, Bytes, BytesMut};
use http::Method;
use serde::{Deserialize, Serialize};

const ENTRY_TAG: u8 = b'E';
const DECISION_TAG: u8 = b'D';
const VERSION: u8 = 1;

/// A client write, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// HTTP method.
    pub method: Method,
    /// Path and query as the client sent them (logical collection ids).
    pub path: String,
    /// The request's content type, if any.
    pub content_type: Option<String>,
    /// Milliseconds since the Unix epoch when the gateway received it.
    pub received_at_ms: u64,
    /// The request body, untouched.
    pub body: Bytes,
}

/// The outcome of an entry other than "committed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Refusal {
    /// The executor answered with an error: apply nowhere.
    Rejected,
    /// It reached no server and the client was told it failed.
    Cancelled,
}

/// A decoded log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    /// A client write.
    Entry(Entry),
    /// The entry at `lsn` is not to be applied.
    Decision {
        /// The entry it decides.
        lsn: u64,
        /// How.
        refusal: Refusal,
    },
}

#[derive(Serialize, Deserialize)]
struct Header {
    m: String,
    p: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    ct: Option<String>,
    t: u64,
}

/// A record that is not one the gateway wrote.
#[derive(Debug, thiserror::Error)]
#[error("log record is not a gateway record: {0}")]
pub struct RecordError(String);

impl Entry {
    /// The payload of this entry's log record.
    pub fn encode(&self) -> Bytes {
        let header = Header {
            m: self.method.as_str().to_string(),
            p: self.path.clone(),
            ct: self.content_type.clone(),
            t: self.received_at_ms,
        };
        // Serializing a struct of strings and integers cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut out = BytesMut::with_capacity(6 + header.len() + self.body.len());
        out.put_u8(ENTRY_TAG);
        out.put_u8(VERSION);
        out.put_u32_le(header.len() as u32);
        out.put_slice(&header);
        out.put_slice(&self.body);
        out.freeze()
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// The payload of a decision record.
pub fn encode_decision(lsn: u64, refusal: Refusal) -> Bytes {
    let mut out = BytesMut::with_capacity(11);
    out.put_u8(DECISION_TAG);
    out.put_u8(VERSION);
    out.put_u64_le(lsn);
    out.put_u8(match refusal {
        Refusal::Rejected => 1,
        Refusal::Cancelled => 2,
    });
    out.freeze()
}

/// Decodes a log record's payload.
pub fn decode(payload: &Bytes) -> Result<LogRecord, RecordError> {
    let err = |m: &str| RecordError(m.to_string());
    match payload.first() {
        Some(&ENTRY_TAG) => {
            if payload.len() < 6 || payload[1] != VERSION {
                return Err(err("entry header is cut short or of an unknown version"));
            }
            let len = u32::from_le_bytes([payload[2], payload[3], payload[4], payload[5]]) as usize;
            let end = 6usize
                .checked_add(len)
                .filter(|end| *end <= payload.len())
                .ok_or_else(|| err("entry header length exceeds the record"))?;
            let header: Header = serde_json::from_slice(&payload[6..end])
                .map_err(|e| RecordError(format!("entry header: {e}")))?;
            let method = Method::from_bytes(header.m.as_bytes())
                .map_err(|e| RecordError(format!("entry method: {e}")))?;
            Ok(LogRecord::Entry(Entry {
                method,
                path: header.p,
                content_type: header.ct,
                received_at_ms: header.t,
                body: payload.slice(end..),
            }))
        }
        Some(&DECISION_TAG) => {
            if payload.len() != 11 || payload[1] != VERSION {
                return Err(err("decision record has the wrong size or version"));
            }
            let mut lsn = [0u8; 8];
            lsn.copy_from_slice(&payload[2..10]);
            let refusal = match payload[10] {
                1 => Refusal::Rejected,
                2 => Refusal::Cancelled,
                other => return Err(RecordError(format!("unknown decision {other}"))),
            };
            Ok(LogRecord::Decision {
                lsn: u64::from_le_bytes(lsn),
                refusal,
            })
        }
        _ => Err(err("unknown record tag")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decision_round_trip() {
        for refusal in [Refusal::Rejected, Refusal::Cancelled] {
            let bytes = encode_decision(42, refusal);
            assert_eq!(
                decode(&bytes).unwrap(),
                LogRecord::Decision { lsn: 42, refusal }
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"E",
            b"E\x01\xff\xff\xff\xff",
            b"D\x01",
            b"X",
            b"E\x02\0\0\0\0",
        ] {
            assert!(decode(&Bytes::copy_from_slice(bytes)).is_err());
        }
    }

    proptest! {
        #[test]
        fn entries_round_trip(
            path in "/api/v2/[a-z/?=&0-9]{0,40}",
            ct in proptest::option::of("[a-z/]{1,20}"),
            t in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..200),
            post in any::<bool>(),
        ) {
            let entry = Entry {
                method: if post { Method::POST } else { Method::DELETE },
                path,
                content_type: ct,
                received_at_ms: t,
                body: Bytes::from(body),
            };
            prop_assert_eq!(decode(&entry.encode()).unwrap(), LogRecord::Entry(entry));
        }
    }
}
