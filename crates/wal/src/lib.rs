//! # wal — the durable log under chroma-ha
//!
//! A segmented, append-only write-ahead log with group commit, named durable
//! cursors, and crash recovery. It knows nothing of HTTP or Chroma: records
//! are opaque bytes with a log sequence number (LSN).
//!
//! ## Guarantees
//!
//! - `append` resolves with an LSN only once the record is durable under the
//!   policy (`Always`: fdatasync'd; `Batch`: fdatasync'd within the interval;
//!   `Never`: written, tests only). LSNs are dense and increase from 1.
//! - A failed append (I/O error, ENOSPC) leaves nothing of the record in the
//!   log: the segment is cut back to its last durable length, and its LSN is
//!   given to the next record. If that cut cannot be made durable the log
//!   refuses appends (`Poisoned`) until it is reopened.
//! - Readers see only durable records, in LSN order, and can tail the log.
//! - Opening scans only the last segment; a torn or corrupt tail there is cut
//!   back to the last valid record, fsynced, and reported ([`TailRepair`]:
//!   the LSNs and bytes discarded) — but only when nothing shows that the
//!   records cut were durable (see *Recovery* below). Bad bytes anywhere
//!   else are a [`WalError::Corruption`] naming file and offset, found when
//!   read or by [`verify`]; never dropped silently.
//! - Past `max_bytes`, appends fail at once with [`WalError::LogFull`];
//!   [`Wal::append_uncapped`] is exempt, for small, rare records that must
//!   get in when the log is full (it exceeds the cap by what it writes).
//!
//! ## Power loss, by policy
//!
//! Power may go off at any instant, in the middle of a group commit
//! included (`tests/power_loss.rs` cuts it after a random number of
//! filesystem changes while appends are in flight).
//!
//! - `Always` and `Batch`: every acknowledged record survives with its exact
//!   payload, and so does every committed cursor. Records of the batch in
//!   flight, written but not acknowledged, may survive too (whole, in LSN
//!   order) or be cut as a torn tail at the next open.
//! - `Never`: a record is fsynced only when its segment is sealed (rollover
//!   syncs it), so acknowledged records of the active segment may be lost:
//!   any suffix of them, down to the last sealed segment. What survives is
//!   still a prefix of what was written, each record with its exact
//!   payload, and the log reopens and accepts appends — unless a cursor was
//!   committed to a record that was lost: then opening refuses with
//!   `Corruption` (see *Recovery*), since the consumer would skip the new
//!   records that get those LSNs. Tests only.
//!
//! ## On disk
//!
//! ```text
//! DIR/LOCK                             flock'd by the process that has the log open
//! DIR/00000000000000000001.wal         segments, named by first LSN (20 digits)
//! DIR/00000000000000052361.wal         the last one is being appended to
//! DIR/next-segment.tmp                 the next segment, preallocated ahead of need
//! DIR/cursors/NAME.cursor              one file per cursor
//! ```
//!
//! A segment is a 16-byte header — magic `CHAWALSG`, format version (u32 LE,
//! now 1), 4 reserved zero bytes — followed by records:
//!
//! ```text
//! len u32 LE | crc32c u32 LE | lsn u64 LE | payload (len bytes)
//! ```
//!
//! The CRC32C (Castagnoli) covers `len`, `lsn` and the payload, in that order.
//! Within a segment LSNs follow each other; a segment's first record carries
//! the LSN in its name, and the next segment starts where it ends. An empty
//! last segment means the next record gets the LSN in its name.
//!
//! Segments are created preallocated: header, then zeros up to the segment
//! size, synced, before they are used. Records are written over the zeros,
//! so fdatasync never has a file-size change to commit. Zeros after the last
//! record of the last segment are therefore the normal end of the log, not
//! damage. When a segment is sealed (the next one starts) it is cut to end
//! exactly after its last record, so sealed segments hold no zero tail.
//!
//! A cursor file is 20 bytes: magic `CHAWALCR`, LSN (u64 LE), CRC32C of the
//! first 16 bytes. It is replaced atomically: written to `NAME.cursor.tmp`,
//! fsynced, renamed over, directory fsynced. A cursor at LSN *n* means
//! "records up to *n* are consumed"; a sealed segment is deleted once every
//! cursor is at or past its last LSN and that LSN is below the retain floor.
//!
//! ## Recovery
//!
//! After a crash the last segment may end in a torn record, or in a record
//! that fails its CRC followed by intact ones: write-back of an unsynced
//! batch need not be in order. Such records were never acknowledged, and
//! cutting them is right. A record that fails its checks *after* it was
//! acknowledged is different: cutting it, and the intact ones after it,
//! would lose acknowledged data silently. Opening tells the two apart with
//! the evidence the log holds:
//!
//! - Readers only ever see durable records, and a cursor can only be moved
//!   to a record readers can see. So a cursor at or past LSN *n* proves
//!   record *n* was durable.
//! - Opening finds *n*, the first LSN the last segment does not hold intact
//!   (the damaged record's, or the one after the last record). If any
//!   cursor is at or past *n*, opening fails with [`WalError::Corruption`]
//!   naming the segment and the offset where record *n* should start, and
//!   changes nothing. This holds whether the bytes there are damaged, cut
//!   short or zero (zeros are otherwise preallocated space): a cursor past
//!   the end of the log would make its consumer skip the new records that
//!   get those LSNs, so it must never survive an open.
//! - Otherwise the tail is cut at *n* and reported: [`TailRepair`] names
//!   the LSNs discarded (from *n* to the highest intact record found after
//!   the damage) and the byte range that held them.
//!
//! Without a cursor past it, damage to acknowledged records in the last
//! segment is indistinguishable from a torn unacknowledged batch and is cut.
//!
//! ## Layout of the crate
//!
//! - [`interface`]: the [`Log`] and [`LogRead`] traits, what a consumer
//!   needs of any log (this one, or one kept in PostgreSQL: `pglog`).
//! - [`log`]: the [`Wal`] handle — open and recovery, append, cursors, deletion.
//! - `writer`: the single writer thread: group commit, rollover, rollback.
//! - [`reader`]: [`LogReader`], in-order reads and tailing.
//! - `segment`, `frame`, `cursor`: the on-disk formats above.
//! - [`fs`]: the filesystem trait; [`testing`] has a crash-simulating
//!   in-memory filesystem and a fault-injecting one for tests.
//! - [`mod@inspect`]: read-only `inspect` and `verify` for operators.
//! - `fuzzing` (tests and the `fuzzing` feature): the fuzz harness of the
//!   segment and frame decoders, run by `fuzz/` and by `cargo test`.

pub mod error;
pub mod fs;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod inspect;
pub mod interface;
pub mod log;
pub mod options;
pub mod reader;
pub mod testing;

mod cursor;
mod frame;
mod recovery;
mod segment;
mod shared;
mod writer;

pub use error::{Result, WalError};
pub use inspect::{inspect, verify, InspectReport, SegmentReport, VerifyReport};
pub use interface::{Log, LogRead};
pub use log::{Cursor, Recovery, TailRepair, Wal, WalStats};
pub use options::{SyncPolicy, WalOptions};
pub use reader::LogReader;
pub use shared::Record;
