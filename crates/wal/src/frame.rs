//! Record framing: `len u32 | crc u32 | lsn u64 | payload`, little endian.
//! The CRC32C (Castagnoli) covers `len`, `lsn` and the payload.

/// Bytes of the frame header in front of every payload.
pub const FRAME_HEADER: usize = 16;

/// Size on disk of a record with `payload_len` bytes of payload.
pub fn framed_len(payload_len: usize) -> u64 {
    (FRAME_HEADER + payload_len) as u64
}

fn checksum(len: u32, lsn: u64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &lsn.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Appends one framed record to `out`. The caller guarantees that
/// `payload.len()` fits in a u32 (the log's record limit is far below).
pub fn encode(lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, lsn, payload).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The outcome of decoding at one position of a byte buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid record, and the bytes it took.
    Record {
        /// Its LSN.
        lsn: u64,
        /// Its payload.
        payload: &'a [u8],
        /// Header plus payload.
        consumed: usize,
    },
    /// The buffer ends inside the frame; `needed` bytes would complete it.
    Incomplete {
        /// Total frame length needed from the current position.
        needed: usize,
    },
    /// The bytes are not a valid frame.
    Invalid(&'static str),
}

/// Decodes the frame at the start of `buf`. `max_payload` bounds the length
/// field so that a corrupt length never makes the caller allocate wildly.
pub fn decode(buf: &[u8], max_payload: usize) -> Decoded<'_> {
    if buf.len() < FRAME_HEADER {
        return Decoded::Incomplete {
            needed: FRAME_HEADER,
        };
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let mut lsn_bytes = [0u8; 8];
    lsn_bytes.copy_from_slice(&buf[8..16]);
    let lsn = u64::from_le_bytes(lsn_bytes);
    if len as usize > max_payload {
        return Decoded::Invalid("length field exceeds the record limit");
    }
    let total = FRAME_HEADER + len as usize;
    if buf.len() < total {
        return Decoded::Incomplete { needed: total };
    }
    let payload = &buf[FRAME_HEADER..total];
    if checksum(len, lsn, payload) != crc {
        return Decoded::Invalid("CRC32C mismatch");
    }
    Decoded::Record {
        lsn,
        payload,
        consumed: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answer() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn encoded_record_decodes_to_itself() {
        let mut buf = Vec::new();
        encode(7, b"hello", &mut buf);
        assert_eq!(buf.len() as u64, framed_len(5));
        assert_eq!(
            decode(&buf, 1024),
            Decoded::Record {
                lsn: 7,
                payload: b"hello",
                consumed: 21
            }
        );
    }

    #[test]
    fn empty_payload_is_a_valid_record() {
        let mut buf = Vec::new();
        encode(1, b"", &mut buf);
        assert!(matches!(decode(&buf, 0), Decoded::Record { lsn: 1, .. }));
    }

    #[test]
    fn every_truncation_of_a_record_is_incomplete() {
        let mut buf = Vec::new();
        encode(3, b"some payload", &mut buf);
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut], 1024), Decoded::Incomplete { .. }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(9, b"abcdefgh", &mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                match decode(&bad, 1024) {
                    Decoded::Record { lsn, payload, .. } => {
                        panic!("flip {byte}.{bit} decoded as lsn {lsn} {payload:?}")
                    }
                    Decoded::Invalid(_) | Decoded::Incomplete { .. } => {}
                }
            }
        }
    }

    #[test]
    fn zero_bytes_are_not_a_record() {
        assert!(matches!(decode(&[0u8; 64], 1024), Decoded::Invalid(_)));
    }

    #[test]
    fn oversized_length_is_invalid_not_incomplete() {
        let mut buf = Vec::new();
        encode(1, &[1u8; 100], &mut buf);
        assert_eq!(
            decode(&buf, 10),
            Decoded::Invalid("length field exceeds the record limit")
        );
    }
}
