//! Blob files: append-only files holding large values (key-value
//! separation).
//!
//! When a memtable is flushed (and when garbage collection rewrites a blob
//! file's live values), each large value is appended to a blob file by a
//! [`BlobWriter`]; the tree stores the returned [`BlobRef`] instead of the
//! value. A [`BlobReader`] fetches one value with a single positioned read
//! and verifies it; [`BlobReader::iter`] scans a whole file; [`salvage`]
//! recovers the intact records of a damaged file for the repair tool.
//!
//! # File layout (format version 1)
//!
//! This comment is the single source of truth for the byte layout. All
//! integers are little-endian unless marked varint (LEB128, see
//! [`crate::coding`]). "CRC" is CRC32C (Castagnoli).
//!
//! ```text
//! +--------+----------+----------+-----+----------+--------+
//! | header | record 0 | record 1 | ... | record n | footer |
//! +--------+----------+----------+-----+----------+--------+
//!   24 B     variable                               28 B
//! ```
//!
//! ## Header ([`HEADER_LEN`] = 24 bytes, at offset 0)
//!
//! | offset | width | field                                            |
//! |-------:|------:|--------------------------------------------------|
//! | 0      | 8     | magic, the ASCII bytes `ESCBLOB1` ([`HEADER_MAGIC`]) |
//! | 8      | 4     | format version, u32 ([`FORMAT_VERSION`] = 1)     |
//! | 12     | 8     | file number, u64 (must equal the number in the file's name) |
//! | 20     | 4     | CRC of bytes 0..20, u32                          |
//!
//! ## Record (the first at offset 24; records are contiguous)
//!
//! | width      | field                                                |
//! |-----------:|------------------------------------------------------|
//! | 4          | `crc`, u32: CRC of the 8-byte LE file number followed by every byte of the record after this field (varints, `head_crc`, key, value) |
//! | 1..=5      | `key_len`, varint u32, at most [`KEY_LEN_MAX`](crate::limits::KEY_LEN_MAX) |
//! | 1..=5      | `value_len`, varint u32, at most [`VALUE_LEN_MAX_LIMIT`](crate::limits::VALUE_LEN_MAX_LIMIT) |
//! | 4          | `head_crc`, u32: CRC of the 8-byte LE file number followed by the two varints' bytes |
//! | `key_len`  | key bytes                                            |
//! | `value_len`| value bytes                                          |
//!
//! A record is therefore between [`RECORD_LEN_MIN`] (10) bytes and
//! [`BLOCK_LEN_MAX`](crate::limits::BLOCK_LEN_MAX) bytes long (its fixed part
//! is at most [`RECORD_HEADER_MAX`] = 18 bytes), and its length always fits a
//! u32. Writers emit minimal varints; readers accept any encoding the CRCs
//! cover. Seeding both CRCs with the file number makes a record copied from
//! another blob file fail verification.
//!
//! `head_crc` lets a reader trust the two lengths before reading the rest of
//! the record: [`salvage`] resynchronises after damage by testing every byte
//! offset, and without it each candidate would cost a CRC over whatever
//! length the garbage claims (quadratic in the damaged span). A record is
//! intact only if both CRCs verify.
//!
//! The [`BlobRef`] for a record is `{ file: file number, offset: offset of
//! the record's crc field, len: whole record length (crc through value),
//! checksum: the stored crc }`. A reader checks all four against the file
//! and additionally that the stored key equals the key being looked up.
//!
//! ## Footer ([`FOOTER_LEN`] = 28 bytes, the last bytes of the file)
//!
//! | offset | width | field                                                  |
//! |-------:|------:|--------------------------------------------------------|
//! | 0      | 8     | `records`, u64: number of records in the file          |
//! | 8      | 8     | `record_bytes`, u64: total length of all records        |
//! | 16     | 8     | magic, the ASCII bytes `ESCBLOBF` ([`FOOTER_MAGIC`])   |
//! | 24     | 4     | CRC of the 8-byte LE file number followed by footer bytes 0..24 |
//!
//! ## Invariants
//!
//! - `file_size == HEADER_LEN + record_bytes + FOOTER_LEN`: records occupy
//!   exactly `[HEADER_LEN, file_size - FOOTER_LEN)`, with no gaps;
//! - `records == 0` if and only if `record_bytes == 0`, and
//!   `records * RECORD_LEN_MIN <= record_bytes`;
//! - a file is complete (openable with [`BlobReader::open`]) only once its
//!   footer is written and the file fdatasynced; a file without a valid
//!   footer is either being written or was cut short by a crash, and only
//!   [`salvage`] reads it;
//! - files are never modified after the footer is written; they are only
//!   deleted (by garbage collection) as a whole.
//!
//! Every length read from disk is checked against the file size and
//! [`BLOCK_LEN_MAX`](crate::limits::BLOCK_LEN_MAX) before any buffer is
//! allocated for it.

mod reader;
mod record;
mod salvage;
mod window;
mod writer;

#[cfg(test)]
mod tests;

pub use reader::{BlobIter, BlobReader};
pub use record::{
    FOOTER_LEN, FOOTER_MAGIC, FORMAT_VERSION, HEADER_LEN, HEADER_MAGIC, RECORD_HEADER_MAX,
    RECORD_LEN_MIN,
};
pub use salvage::salvage;
pub use writer::BlobWriter;

use crate::types::BlobRef;

/// One record as scans return it: its pointer, key and value.
pub type BlobRecord = (BlobRef, bytes::Bytes, bytes::Bytes);

/// Summary of a finished blob file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobFileMeta {
    /// The file's number (names the file `NNNNNN.blob`).
    pub number: u64,
    /// Size of the whole file in bytes, header and footer included.
    pub file_size: u64,
    /// Number of records (values) in the file.
    pub records: u64,
    /// Sum of the records' lengths ([`BlobRef::len`]).
    pub record_bytes: u64,
}
