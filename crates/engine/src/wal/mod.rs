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
//!                            4 .. 12 + payload_len, i.e. of payload_len,
//!                            log_number and the payload
//! 4       4     payload_len  u32 little-endian: length of the payload in bytes;
//!                            must be >= 1 and <= limits::BLOCK_LEN_MAX
//! 8       4     log_number   u32 little-endian: low 32 bits of the segment's
//!                            log number
//! 12      n     payload      (n = payload_len)
//! ```
//!
//! The payload:
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
//! # Reading and recovery
//!
//! A record is *bad* if its length is 0 or above `BLOCK_LEN_MAX`, its log
//! number differs from the segment's, it is cut short by the end of the file,
//! its checksum fails, or its checksummed payload does not decode. At the
//! first bad record the reader scans forward byte by byte for a header whose
//! log number matches and whose checksum verifies:
//!
//! - none found: the bad record is the end of the log (a torn tail after a
//!   crash, preallocated zeros, or old records of a recycled file). The
//!   records before it are the log; nothing is an error.
//! - one found: the log is damaged in the middle. [`ReadMode::Strict`]
//!   reports [`Error::Corruption`](crate::Error::Corruption) with the offset
//!   of the bad record; [`ReadMode::Salvage`] skips to the valid record and
//!   counts the skipped bytes.
//!
//! The reader never allocates on the strength of a length field alone: a
//! length is used only after it has been checked against `BLOCK_LEN_MAX` and
//! against the bytes actually left in the file.

mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use reader::{ReadMode, WalReader, WalRecord};
pub use writer::WalWriter;

use crate::coding::put_varint64;
use crate::types::Value;

/// Size of the fixed record header: crc32c, payload_len, log_number.
pub const HEADER_LEN: usize = 12;

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
    let payload_len = out.len() - start - HEADER_LEN;
    debug_assert!(payload_len <= crate::limits::BLOCK_LEN_MAX);
    // An oversized payload cannot happen within the limits; if it did, the
    // saturated length makes the record read back as bad, never as data.
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&(log_number as u32).to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}
