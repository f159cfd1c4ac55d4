//! The write-ahead log: every write is appended here before it is applied to
//! the memtable, so that it survives a crash.
//!
//! A log *segment* is one file holding the writes of one memtable. Each
//! segment has a number (`log_number`), which is also written into every
//! record so that stale bytes (the old contents of a recycled file,
//! preallocated zeros) are never mistaken for records of the current log.
//!
//! # Record layout (byte for byte)
//!
//! A segment is a plain concatenation of records, starting at offset 0, with
//! no file header and no padding. One record:
//!
//! ```text
//! offset  size  field
//! 0       4     crc32c       u32 little-endian: CRC32C (Castagnoli) of bytes
//!                            4 .. 12 + payload_len, i.e. of the length field,
//!                            log_number and the payload
//! 4       4     length field u32 little-endian: bit 31 (CONTROL_FLAG) set for
//!                            a control record; bits 0..31 are payload_len,
//!                            which must be >= 1 and <= limits::BLOCK_LEN_MAX
//! 8       4     log_number   u32 little-endian: low 32 bits of the segment's
//!                            log number
//! 12      n     payload      (n = payload_len)
//! ```
//!
//! The payload of a data record (bit 31 clear):
//!
//! ```text
//! varint   key_len   LEB128 (see crate::coding), <= limits::KEY_LEN_MAX
//! key_len  key       the key bytes
//! ...      value     Value::encode_into: one kind byte, then
//!                      kind 0 (Inline):    varint length, value bytes
//!                      kind 1 (Tombstone): nothing
//!                      kind 2 (Blob):      varint u64 file, varint u64 offset,
//!                                          varint u32 len, u32 LE checksum
//! ```
//!
//! The value must end exactly at the end of the payload. A put is written as
//! `Inline`, a delete as `Tombstone`, and a blob garbage-collection pointer
//! update as `Blob`.
//!
//! A **record group** (the writes of one transaction, see
//! [`crate::db::Txn`]) is one data record whose payload starts with
//! [`GROUP_MARKER`] (a key length of 0, which no single record has):
//!
//! ```text
//! 1        marker    0x00
//! varint   count     number of entries, 2 ..= TXN_OPS_MAX
//! ...      entries   count times: varint key_len (1 ..= KEY_LEN_MAX), key,
//!                    value (as above)
//! ```
//!
//! One checksum covers the whole group, so after a crash either all of its
//! writes are replayed or none; they are replayed in order, at the group's
//! offset.
//!
//! The payload of a control record (bit 31 set), never returned as data:
//!
//! ```text
//! offset  size  field
//! 0       1     kind         1 = sync point, 2 = end marker, 3 = end-marker copy
//! 1       8     covered      u64 LE: bytes 0 .. covered of the segment were
//!                            durable (an fdatasync covering them had returned)
//!                            before this record was written; a record boundary
//! 9       4     content_crc  (kinds 2 and 3 only) u32 LE: CRC32C of bytes
//!                            0 .. covered of the segment, i.e. of every record
//!                            before the end marker, control records included
//! ```
//!
//! payload_len is exactly 9 for a sync point and 13 for an end marker or copy.
//!
//! - A **sync point** is written at the front of the first append after an
//!   fdatasync of the log returned (whoever called it: the commit thread, or
//!   the sync thread through [`WalWriter::file`]); `covered` is the length
//!   the log had when that fdatasync was called. So a sync point never
//!   claims bytes that were not synced, and every completed sync is recorded
//!   by the next append. In `sync` mode that is every batch but the last.
//! - The **end marker** ends a segment that is complete: written by
//!   [`WalWriter::seal`] on a clean close and when a segment is frozen (after
//!   an fdatasync of everything before it, then itself fdatasynced), and by
//!   recovery after it replayed a segment that a crash left open. `covered`
//!   is the marker's own offset. Its copy (kind 3, same fields) follows it
//!   at once, in the same write. Anything after the copy is not part of the
//!   log. If records are appended after a seal (a new segment could not be
//!   created), they overwrite both markers (zero-padded).
//!
//! # Reading and recovery
//!
//! A record is *bad* if its length is 0 or above `BLOCK_LEN_MAX`, its log
//! number differs from the segment's, it is cut short by the end of the file,
//! its checksum fails, or its checksummed payload does not decode. Reading
//! stops at a valid end marker: its `covered` must equal its offset and its
//! `content_crc` the CRC of the records read, else the log is corrupt. (A
//! missing or damaged copy is only a warning: it is the last thing written,
//! so a crash during close can tear it, and it holds nothing the marker does
//! not.) At the first bad record the reader scans the rest of the file for
//! valid records of this log (by header, byte by byte, then record by
//! record):
//!
//! - an end marker or copy follows, or a sync point whose `covered` is past
//!   the bad record: the bad record lies in data that was synced, or in a
//!   segment that was closed cleanly, so it is damage, not a crash.
//!   [`ReadMode::Strict`] reports [`Error::Corruption`](crate::Error::Corruption)
//!   with the file and the bad record's offset;
//! - otherwise it is the unsynced tail of a crash (a torn record, or a hole
//!   left by out-of-order writeback with records after it): everything from
//!   the bad record on is dropped, with a warning counting the records and
//!   bytes (see [`WalReader::tail`]). Zeros (preallocation) or records of
//!   another log (a recycled file) with nothing of this log after them are
//!   simply the end of the log.
//!
//! [`ReadMode::Salvage`] (repair) skips to the next valid record instead.
//!
//! Records carry the log number, so the stale bytes of a recycled file or
//! the zeros of a preallocated one never read as records of this log.
//!
//! # Writing
//!
//! The committer gathers a batch's records in a [`Batch`] (`batch.rs`),
//! which holds values of [`SHARE_VALUE_MIN`] bytes or more by reference, and
//! [`WalWriter::append_batch`] writes it with one vectored write: the bytes
//! on disk are exactly those laid out above.
//!
//! The reader never allocates on the strength of a length field alone: a
//! length is used only after it has been checked against `BLOCK_LEN_MAX` and
//! against the bytes actually left in the file.

mod batch;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use batch::{Batch, SHARE_VALUE_MIN};
pub use reader::{ReadMode, Tail, WalReader, WalRecord};
pub use writer::{seal_recovered, WalWriter};

use crate::coding::put_varint64;
use crate::types::Value;
use bytes::Bytes;

/// Size of the fixed record header: crc32c, payload_len, log_number.
pub const HEADER_LEN: usize = 12;

/// Bit of the length field that marks a control record.
pub const CONTROL_FLAG: u32 = 1 << 31;
/// Control record kind: a sync point.
pub const KIND_SYNC_POINT: u8 = 1;
/// Control record kind: the end marker.
pub const KIND_END: u8 = 2;
/// Control record kind: the copy of the end marker.
pub const KIND_END_COPY: u8 = 3;
/// Payload length of a sync point.
pub const SYNC_POINT_PAYLOAD_LEN: usize = 9;
/// Payload length of an end marker or its copy.
pub const END_PAYLOAD_LEN: usize = 13;
/// Bytes of an end marker and its copy.
pub const END_MARKERS_LEN: usize = 2 * (HEADER_LEN + END_PAYLOAD_LEN);

/// Appends a control record with `payload` for segment `log_number`.
fn encode_control(out: &mut Vec<u8>, log_number: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(payload.len() as u32 | CONTROL_FLAG).to_le_bytes());
    out.extend_from_slice(&(log_number as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a sync point: bytes `0..covered` were durable before it.
pub fn encode_sync_point(out: &mut Vec<u8>, log_number: u64, covered: u64) {
    let mut p = [0u8; SYNC_POINT_PAYLOAD_LEN];
    p[0] = KIND_SYNC_POINT;
    p[1..9].copy_from_slice(&covered.to_le_bytes());
    encode_control(out, log_number, &p);
}

/// Appends the end marker and its copy for a segment whose records are
/// bytes `0..covered`, whose CRC32C is `content_crc`.
pub fn encode_end_markers(out: &mut Vec<u8>, log_number: u64, covered: u64, content_crc: u32) {
    for kind in [KIND_END, KIND_END_COPY] {
        let mut p = [0u8; END_PAYLOAD_LEN];
        p[0] = kind;
        p[1..9].copy_from_slice(&covered.to_le_bytes());
        p[9..13].copy_from_slice(&content_crc.to_le_bytes());
        encode_control(out, log_number, &p);
    }
}

/// First payload byte of a record group.
pub const GROUP_MARKER: u8 = 0;

/// Appends one record holding every entry of `entries` (a record group;
/// a single entry is written as a plain record). Returns false, leaving
/// `out` as it was, if the group does not fit `BLOCK_LEN_MAX`.
pub fn encode_group(out: &mut Vec<u8>, log_number: u64, entries: &[(Bytes, Value)]) -> bool {
    if let [(key, value)] = entries {
        encode_record(out, log_number, key, value);
        return true;
    }
    let payload: usize = entries
        .iter()
        .map(|(k, v)| 10 + k.len() + v.encoded_len())
        .sum::<usize>()
        + 11;
    if entries.is_empty() || payload > crate::limits::BLOCK_LEN_MAX {
        return false;
    }
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    out.push(GROUP_MARKER);
    put_varint64(out, entries.len() as u64);
    for (key, value) in entries {
        put_varint64(out, key.len() as u64);
        out.extend_from_slice(key);
        value.encode_into(out);
    }
    finish_header(out, start, log_number);
    true
}

/// Fills in the length, log number and checksum of the record that starts
/// at `start` and ends at the end of `out`.
fn finish_header(out: &mut [u8], start: usize, log_number: u64) {
    finish_header_over(out, start, log_number, &[]);
}

/// As [`finish_header`], for a record whose last bytes, `tail`, follow
/// `out` in the file without being in it (see [`Batch`]).
fn finish_header_over(out: &mut [u8], start: usize, log_number: u64, tail: &[u8]) {
    let payload_len = out.len() + tail.len() - start - HEADER_LEN;
    debug_assert!(payload_len <= crate::limits::BLOCK_LEN_MAX);
    // An oversized payload cannot happen within the limits; if it did, the
    // saturated length makes the record read back as bad, never as data.
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX) & !CONTROL_FLAG;
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&(log_number as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start + 4..]), tail);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one encoded record for `key`/`value` to `out`, for log segment
/// `log_number`.
///
/// The caller has already checked the key and value against the engine's
/// limits, so the payload fits `BLOCK_LEN_MAX`.
pub fn encode_record(out: &mut Vec<u8>, log_number: u64, key: &[u8], value: &Value) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    put_varint64(out, key.len() as u64);
    out.extend_from_slice(key);
    value.encode_into(out);
    finish_header(out, start, log_number);
}
