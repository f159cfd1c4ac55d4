//! The block cache: checked, parsed data blocks of tables, shared by every
//! table of a database and bounded in bytes.
//!
//! Point lookups go through it ([`super::Table::get`]): reads that miss the
//! value cache, the flush's lookup of each key's previous version, and the
//! blob collector's liveness check of every record would otherwise each
//! cost a positioned read, a checksum and a parse. Sequential scans
//! (compaction, iterators, `check`) read around it, so that one pass over a
//! large table does not evict the blocks point lookups need.
//!
//! Keys are `(table file number, block index)`. Table files are immutable
//! and their numbers never reused, so an entry can never be stale; the
//! blocks of a deleted table age out of the LRU order.

use super::block::Block;
use crate::cache::FastHasher;
use lru::LruCache;
use parking_lot::Mutex;

/// Number of independently locked shards.
pub const BLOCK_CACHE_SHARDS: usize = 16;
/// Bytes charged per cached block on top of its contents.
const BLOCK_OVERHEAD: usize = 96;

struct Shard {
    lru: LruCache<(u64, u32), Block, FastHasher>,
    bytes: usize,
}

/// A sharded LRU cache of data blocks.
pub struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl BlockCache {
    /// A cache of at most about `capacity` bytes (0 disables it).
    pub fn new(capacity: usize) -> BlockCache {
        BlockCache {
            shards: (0..BLOCK_CACHE_SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: LruCache::unbounded_with_hasher(FastHasher::default()),
                        bytes: 0,
                    })
                })
                .collect(),
            shard_capacity: capacity / BLOCK_CACHE_SHARDS,
        }
    }

    fn shard(&self, table: u64, block: u32) -> &Mutex<Shard> {
        // Consecutive blocks of one table spread over the shards.
        let h = table.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(block);
        &self.shards[(h as usize) % BLOCK_CACHE_SHARDS]
    }

    /// The cached block `block` of table `table`.
    pub(crate) fn get(&self, table: u64, block: u32) -> Option<Block> {
        if self.shard_capacity == 0 {
            return None;
        }
        self.shard(table, block)
            .lock()
            .lru
            .get(&(table, block))
            .cloned()
    }

    /// Caches a block just read, evicting the least recently used ones
    /// past the capacity. A block larger than a shard is not cached.
    pub(crate) fn insert(&self, table: u64, block: u32, b: &Block) {
        let cost = b.charge() + BLOCK_OVERHEAD;
        if cost > self.shard_capacity {
            return;
        }
        let mut s = self.shard(table, block).lock();
        if let Some(old) = s.lru.put((table, block), b.clone()) {
            s.bytes -= old.charge() + BLOCK_OVERHEAD;
        }
        s.bytes += cost;
        while s.bytes > self.shard_capacity {
            match s.lru.pop_lru() {
                Some((_, old)) => s.bytes -= old.charge() + BLOCK_OVERHEAD,
                None => break,
            }
        }
    }

    /// Bytes charged for the cached blocks.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::path::Path;

    fn block(n: usize) -> Block {
        // An empty block: no entries, one restart point at 0.
        let mut data = vec![0u8; n];
        data.extend_from_slice(&0u32.to_le_bytes());
        data.extend_from_slice(&1u32.to_le_bytes());
        Block::parse(Bytes::from(data), Path::new("t"), 0).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn bounded_in_bytes_and_evicts_least_recently_used() {
        let c = BlockCache::new(BLOCK_CACHE_SHARDS * 4096);
        for i in 0..10_000u32 {
            c.insert(1, i, &block(1000));
            assert!(c.bytes() <= BLOCK_CACHE_SHARDS * 4096);
        }
        // The newest blocks are there, the oldest evicted.
        assert!(c.get(1, 9_999).is_some());
        assert!(c.get(1, 0).is_none());
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = BlockCache::new(0);
        c.insert(1, 1, &block(10));
        assert!(c.get(1, 1).is_none());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn a_block_larger_than_a_shard_is_not_cached() {
        let c = BlockCache::new(BLOCK_CACHE_SHARDS * 1024);
        c.insert(1, 1, &block(4096));
        assert!(c.get(1, 1).is_none());
        assert_eq!(c.bytes(), 0);
    }
}
