//! Named limits. Every size the engine accepts or writes is bounded by one of
//! these; on-disk lengths are varint u32/u64 or fixed-width, never assumed
//! small.

/// Largest key accepted, in bytes (100 KiB, the challenge's limit).
pub const KEY_LEN_MAX: usize = 100 * 1024;

/// Default largest value accepted, in bytes. Configurable per database up to
/// [`VALUE_LEN_MAX_LIMIT`].
pub const VALUE_LEN_MAX_DEFAULT: usize = 16 * 1024 * 1024;

/// Hard ceiling for the configurable value limit (a WAL record must fit a
/// u32 length with room for its key and header).
pub const VALUE_LEN_MAX_LIMIT: usize = 512 * 1024 * 1024;

/// Target size of a table data block. An entry larger than this gets a block
/// of its own.
pub const BLOCK_SIZE_TARGET: usize = 4 * 1024;

/// Largest block (or record) a reader will allocate for, whatever a length
/// field on disk claims. Larger claims are reported as corruption.
pub const BLOCK_LEN_MAX: usize = VALUE_LEN_MAX_LIMIT + KEY_LEN_MAX + 1024;

/// Bloom filter bits per key (about 1% false positives).
pub const BLOOM_BITS_PER_KEY: usize = 10;
