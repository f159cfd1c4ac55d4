//! Sorted table files ("SSTs"): immutable files holding sorted, unique keys
//! with their [`Value`](crate::types::Value)s.
//!
//! A table is written once by a [`TableBuilder`] (keys in strictly
//! increasing order), then opened read-only as a [`Table`], which keeps its
//! index, Bloom filter and properties in memory and reads one data block per
//! point lookup. [`salvage`] recovers what it can from a damaged file.
//!
//! # File layout
//!
//! This comment is the single source of truth for the format (format
//! version 2; version 1 is still read, see the properties block). All
//! fixed-width integers are little-endian; "varint" is the
//! LEB128 coding of [`crate::coding`] (u64 unless said otherwise).
//!
//! ```text
//! +-------------------+
//! | data block 0      |  block frames, in key order
//! | ...               |
//! | data block N-1    |
//! | filter block      |  Bloom filter over every key
//! | index block       |  last key of each data block -> handle
//! | properties block  |  counts, smallest / largest key
//! | footer            |  fixed 68 bytes
//! +-------------------+
//! ```
//!
//! The blocks follow each other with no gaps, in that order, and the footer
//! ends the file. A table may hold no entries (then it has no data blocks,
//! an empty index and empty smallest/largest keys).
//!
//! ## Block frame
//!
//! Every block (data, filter, index, properties) is stored in a frame:
//!
//! | field    | width       | meaning                                              |
//! |----------|-------------|------------------------------------------------------|
//! | magic    | 4 bytes     | `E5 B1 0C 4B`, lets [`salvage`] find blocks by scanning |
//! | kind     | u8          | 0 data, 1 filter, 2 index, 3 properties              |
//! | len      | u32         | length of `contents` in bytes, `<=` [`BLOCK_LEN_MAX`](crate::limits::BLOCK_LEN_MAX) |
//! | contents | `len` bytes | depends on `kind`, below                             |
//! | checksum | u64         | xxh3-64 of magic, kind, len and contents             |
//!
//! A frame therefore takes `len + 17` bytes. A *block handle* names a frame
//! by the file offset of its first (magic) byte and its `len`. Readers check
//! the handle against the file size and `BLOCK_LEN_MAX` before allocating,
//! then check magic, kind, `len` (must equal the handle's) and the checksum
//! on every read.
//!
//! ## Data block contents
//!
//! Entries in strictly increasing key order, prefix-compressed against the
//! previous entry, followed by the restart array:
//!
//! ```text
//! entry*  restart_offset(u32)*  restart_count(u32)
//! entry = shared(varint u32) unshared(varint u32) key_suffix(unshared bytes) value
//! ```
//!
//! - `shared` is how many leading bytes the key shares with the previous
//!   entry's key; it is 0 for the first entry and at every restart point
//!   (every 16th entry), whose offsets (from the start of the contents) are
//!   listed in `restart_offset`, ascending, the first being 0.
//! - The key is `previous_key[..shared] ++ key_suffix`; it is 1 to
//!   [`KEY_LEN_MAX`](crate::limits::KEY_LEN_MAX) bytes.
//! - `value` is [`Value::encode_into`](crate::types::Value::encode_into):
//!   a kind byte (0 inline, 1 tombstone, 2 blob) then, for inline values, a
//!   varint length and the bytes, for blobs the `BlobRef` encoding.
//! - A data block holds at least one entry. The writer closes a block before
//!   an entry that would make it exceed
//!   [`BLOCK_SIZE_TARGET`](crate::limits::BLOCK_SIZE_TARGET); an entry larger
//!   than that gets a block of its own.
//!
//! ## Filter block contents
//!
//! ```text
//! bits(m/8 bytes, m >= 64, m a multiple of 8)  probes(u8, 1..=30)
//! ```
//!
//! A Bloom filter with about [`BLOOM_BITS_PER_KEY`](crate::limits::BLOOM_BITS_PER_KEY)
//! bits per key. For a key, `h = xxh3_64(key)` (seed 0), `delta =
//! h.rotate_left(31) | 1`; probe `i` (0-based, `i < probes`) tests bit
//! `(h + i * delta) mod m` (u64 wrapping arithmetic), bit `b` being bit
//! `b % 8` (least significant first) of byte `b / 8`. A key may be present
//! only if all probed bits are set.
//!
//! ## Index block contents
//!
//! One entry per data block, in file order:
//!
//! ```text
//! key_len(varint) last_key(key_len bytes) offset(varint) len(varint)
//! ```
//!
//! `last_key` is the largest key of the block; they strictly increase.
//! `(offset, len)` is the block's handle; the frames lie between offset 0 and
//! the filter block, ascending and not overlapping.
//!
//! ## Properties block contents
//!
//! Fields in this order, nothing after them:
//!
//! | field          | width      | meaning                                      |
//! |----------------|------------|----------------------------------------------|
//! | number         | varint     | table number given when the file was written |
//! | entries        | varint     | number of entries                            |
//! | tombstones     | varint     | entries whose value is a tombstone           |
//! | blob_refs      | varint     | entries whose value is a blob reference      |
//! | blob_ref_bytes | varint     | sum of `BlobRef::len` of those               |
//! | data_blocks    | varint     | number of data blocks (= index entries)      |
//! | smallest       | varint len + bytes | first key (empty iff no entries)     |
//! | largest        | varint len + bytes | last key (= last index key)          |
//! | min_seq        | varint     | lowest write sequence number among the entries (version 2) |
//! | max_seq        | varint     | highest one, `>= min_seq` (version 2)        |
//!
//! Sequence numbers order writes across the whole database (see
//! [`SeqRange`]). Version 1 tables have neither field and read as
//! `0..=0`: every table written since holds newer writes. The range lets
//! `repair` order tables without a manifest (the manifest is otherwise the
//! only record of levels, and a compaction output gets a higher file
//! number than a level-0 table flushed while it ran).
//!
//! ## Footer (68 bytes, at `file_size - 68`)
//!
//! | offset | field           | width |
//! |--------|-----------------|-------|
//! | 0      | filter offset   | u64   |
//! | 8      | filter len      | u64   |
//! | 16     | index offset    | u64   |
//! | 24     | index len       | u64   |
//! | 32     | properties offset | u64 |
//! | 40     | properties len  | u64   |
//! | 48     | format version  | u32 (2; 1 is still read) |
//! | 52     | checksum        | u64, xxh3-64 of bytes 0..52 |
//! | 60     | magic           | 8 bytes `EscblSST` |
//!
//! The filter, index and properties blocks must lie in that order between
//! the data blocks and the footer.
//!
//! ## Checks on open and read
//!
//! [`Table::open`] checks the footer, reads and checks the properties,
//! filter and index blocks, and cross-checks them (index keys strictly
//! increasing, handles in range and not overlapping, `data_blocks` equal to
//! the index length, `largest` equal to the last index key). Data blocks are
//! checked on every read (frame, checksum, restart array, entry bounds, key
//! order within the block); [`Table::verify`] also checks order across
//! blocks, index keys, the filter and the property counts. Any failure is
//! [`Error::Corruption`](crate::error::Error::Corruption) naming the file
//! and the offset of the bad frame or entry.
//!
//! ## Salvage
//!
//! [`salvage`] ignores the index and scans frames from offset 0 (stopping at
//! the footer if the footer is intact); it keeps the entries of every data
//! frame whose checksum and contents are good and resynchronises after a bad
//! frame by skipping it by its length (if the frame after it is good) or by
//! searching for the next block magic.

mod block;
mod block_cache;
mod bloom;
mod builder;
mod footer;
mod iter;
mod props;
mod reader;
mod salvage;
#[cfg(test)]
mod tests;

pub use block_cache::{BlockCache, BLOCK_CACHE_SHARDS};
pub use builder::TableBuilder;
pub use iter::TableIter;
pub use reader::Table;
pub use salvage::{salvage, salvage_with_gaps, Salvaged};

use bytes::Bytes;

/// The write sequence numbers of a table's entries: every entry was
/// written by a batch with `min <= seq <= max`. May be wider than the
/// entries' real range (a compaction output takes the hull of its inputs),
/// never narrower.
///
/// Sequence numbers rise across restarts: `Db::open` continues from the
/// highest `max` of the live tables. So if two tables' ranges do not
/// overlap, every entry of the one with the higher range is newer than
/// every entry of the other; if they overlap, which holds the newer version
/// of a key they share is unknown from the files alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqRange {
    /// Lowest sequence number.
    pub min: u64,
    /// Highest sequence number.
    pub max: u64,
}

impl SeqRange {
    /// The range holding just `seq`.
    pub fn at(seq: u64) -> SeqRange {
        SeqRange { min: seq, max: seq }
    }

    /// The smallest range holding both.
    pub fn hull(self, other: SeqRange) -> SeqRange {
        SeqRange {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }
}

/// What a finished table holds; recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableMeta {
    /// Table number (names the file).
    pub number: u64,
    /// File size in bytes.
    pub file_size: u64,
    /// Number of entries (tombstones included).
    pub entries: u64,
    /// Smallest key (empty if the table has no entries).
    pub smallest: Bytes,
    /// Largest key (empty if the table has no entries).
    pub largest: Bytes,
    /// Number of tombstones.
    pub tombstones: u64,
    /// Number of values stored in blob files.
    pub blob_refs: u64,
    /// Sum of [`BlobRef::len`](crate::types::BlobRef::len) over blob values.
    pub blob_ref_bytes: u64,
}
