//! The value cache: hot keys' values, decoded, sized in bytes.
//!
//! Checked after the memtables and before any table or blob read, so the hot
//! keys of an 80/20 workload are served without reading or decoding a block.
//!
//! Consistency: every applied write invalidates its key with a new write
//! sequence number. A reader notes the sequence number before it looks at
//! the memtables and may insert what it read from disk only if no
//! invalidation in that shard happened since; so a value read just before a
//! concurrent write can never be cached after that write.

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Number of independently locked shards.
pub const CACHE_SHARDS: usize = 32;
/// Bytes charged per entry on top of key and value.
const ENTRY_OVERHEAD: usize = 64;

struct Shard {
    lru: LruCache<Bytes, Bytes>,
    bytes: usize,
    invalidated_at: u64,
}

/// A sharded LRU cache of values.
pub struct ValueCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for ValueCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueCache")
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl ValueCache {
    /// A cache holding at most about `capacity` bytes (0 disables it).
    pub fn new(capacity: usize) -> ValueCache {
        ValueCache {
            shards: (0..CACHE_SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: LruCache::unbounded(),
                        bytes: 0,
                        invalidated_at: 0,
                    })
                })
                .collect(),
            shard_capacity: capacity / CACHE_SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        // Only spreads keys over shards (each shard's map hashes on its
        // own): a fast, fixed hash is enough.
        let h = xxhash_rust::xxh3::xxh3_64(key);
        &self.shards[(h as usize) % CACHE_SHARDS]
    }

    /// The cached value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        if self.shard_capacity == 0 {
            return None;
        }
        let v = self.shard(key).lock().lru.get(key).cloned();
        if v.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        v
    }

    /// Caches `value` read from disk by a reader that started at write
    /// sequence `read_seq`, unless the shard was invalidated since.
    pub fn insert(&self, key: &[u8], value: &Bytes, read_seq: u64) {
        let charge = key.len() + value.len() + ENTRY_OVERHEAD;
        if charge > self.shard_capacity / 4 {
            return;
        }
        let mut s = self.shard(key).lock();
        if s.invalidated_at > read_seq {
            return;
        }
        // Copy so a small value does not pin the whole block it came from.
        let k = Bytes::copy_from_slice(key);
        if let Some(old) = s.lru.put(k, Bytes::copy_from_slice(value)) {
            s.bytes -= key.len() + old.len() + ENTRY_OVERHEAD;
        }
        s.bytes += charge;
        while s.bytes > self.shard_capacity {
            match s.lru.pop_lru() {
                Some((k, v)) => s.bytes -= k.len() + v.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }

    /// Drops `key` because a write with sequence `seq` changed it.
    pub fn invalidate(&self, key: &[u8], seq: u64) {
        if self.shard_capacity == 0 {
            return;
        }
        let mut s = self.shard(key).lock();
        s.invalidated_at = s.invalidated_at.max(seq);
        if let Some(old) = s.lru.pop(key) {
            s.bytes -= key.len() + old.len() + ENTRY_OVERHEAD;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().bytes as u64).sum()
    }

    /// (hits, misses) since creation.
    pub fn hits_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_evict() {
        let c = ValueCache::new(CACHE_SHARDS * 1000);
        c.insert(b"a", &Bytes::from_static(b"1"), 0);
        assert_eq!(c.get(b"a"), Some(Bytes::from_static(b"1")));
        for i in 0..10_000u32 {
            c.insert(&i.to_be_bytes(), &Bytes::from(vec![0u8; 100]), 0);
        }
        assert!(c.bytes() <= (CACHE_SHARDS * 1000) as u64);
    }

    #[test]
    fn stale_insert_after_invalidation_is_refused() {
        let c = ValueCache::new(1 << 20);
        // Reader started at seq 5; a write at seq 6 invalidated the key.
        c.invalidate(b"k", 6);
        c.insert(b"k", &Bytes::from_static(b"old"), 5);
        assert_eq!(c.get(b"k"), None);
        c.insert(b"k", &Bytes::from_static(b"new"), 6);
        assert_eq!(c.get(b"k"), Some(Bytes::from_static(b"new")));
    }

    #[test]
    fn zero_capacity_disables() {
        let c = ValueCache::new(0);
        c.insert(b"k", &Bytes::from_static(b"v"), 0);
        assert_eq!(c.get(b"k"), None);
    }
}
