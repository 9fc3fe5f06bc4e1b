//! The harness of the log record decoder.

use bytes::Bytes;

use crate::replication::record::{decode, encode_decision, LogRecord};

/// Decodes `data` as a log record payload. A decision decodes only from
/// exactly its encoding; an entry re-encodes to a payload that decodes to
/// the same entry, and whose encoding is a fixed point (its header JSON is
/// canonical, its body the same bytes).
pub fn check_log_record(data: &[u8]) {
    let payload = Bytes::copy_from_slice(data);
    let Ok(record) = decode(&payload) else {
        return;
    };
    match &record {
        LogRecord::Decision { lsn, refusal } => {
            assert_eq!(
                encode_decision(*lsn, *refusal).as_ref(),
                data,
                "a decision decoded from other bytes than its encoding"
            );
        }
        LogRecord::Entry(entry) => {
            assert!(
                data.ends_with(&entry.body),
                "the body is not the payload's tail"
            );
            let encoded = entry.encode();
            let again = decode(&encoded).expect("an encoded entry decodes");
            assert_eq!(again, record, "an entry does not survive encode/decode");
            let LogRecord::Entry(again) = again else {
                unreachable!("compared equal to an entry above");
            };
            assert_eq!(again.encode(), encoded, "entry encoding is not canonical");
            assert!(entry.path.starts_with(entry.path_only()));
        }
    }
}
