//! The value cache: hot keys' values, decoded, sized in bytes.
//!
//! Checked after the memtables and before any table or blob read, so the hot
//! keys of an 80/20 workload are served without reading or decoding a block.
//!
//! Consistency: every published write (but a blob collection's move, which
//! changes where a value lives, not its bytes) passes its key to
//! [`ValueCache::write_through`] with its write sequence number, after the
//! sequence number is published and in sequence order: a cached key takes
//! the new value (the newest there is), any other key is dropped, and the
//! shard remembers the sequence number. A reader notes the sequence number
//! before it looks at the memtables and may insert what it read from disk
//! only if no write in that shard was published since; so a value read just
//! before a concurrent write can never be cached after that write. A value
//! enters the cache only once published, so in `sync` mode it is already
//! durable. A point read may thus return a value published after its
//! snapshot was taken (as it could before, from a value another reader
//! cached): the read and the write overlapped, and a point read reads one
//! key, so no other answer could contradict it.
//!
//! Each entry also remembers whether its value holds a `\r` byte
//! ([`Found::has_cr`]), worked out on the first read that finds the entry
//! without it: the text protocol cannot frame such a value, and that check
//! was the only pass over a value's bytes in user space on its way to the
//! socket (13% of the server's CPU in reads only, a first touch of a value
//! in main memory). A hot value is now checked once per write, not once per
//! read. An entry's value and its flag are replaced together, under the
//! shard's lock.
//!
//! Keys of up to [`INLINE_KEY_MAX`] bytes are kept inside the entry
//! (`CacheKey`): a hit compares the key where the entry already is,
//! rather than following one more pointer to the key's own allocation
//! (that comparison, a cache miss, was most of a hit's cost). Hits and
//! misses are counted per shard, under the lock a lookup holds anyway, so
//! the cores do not pass one counter's cache line back and forth. For the
//! same reason a hit on a value of up to [`READ_COPY_MAX`] bytes hands out
//! a copy rather than a share of the entry's `Bytes`
//! ([`Value::for_reader`](crate::types::Value::for_reader)), with its `\r`
//! flag worked out under the lock.

use crate::types::{bytes_for_reader, READ_COPY_MAX};
use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// The hasher of the caches' maps (this one and the block cache): foldhash,
/// randomly seeded per process and much cheaper than the default SipHash
/// on short keys (under `get` SipHash was the largest user-space cost of a
/// cached read). It is no cryptographic defence against chosen collisions;
/// each shard is bounded in bytes.
pub(crate) type FastHasher = foldhash::fast::RandomState;

/// Number of independently locked shards.
pub const CACHE_SHARDS: usize = 32;
/// Bytes charged per entry on top of key and value.
const ENTRY_OVERHEAD: usize = 64;

/// Keys up to this long are held inside the cache entry.
pub const INLINE_KEY_MAX: usize = 30;

/// A key as the cache holds it: in place if it is short, else in an
/// allocation of its own. Hashes and compares as the key's bytes (as a
/// `[u8]` does), so lookups take a plain `&[u8]`.
#[derive(Clone)]
enum CacheKey {
    /// `bytes[..len]`.
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_MAX],
    },
    Heap(Box<[u8]>),
}

impl CacheKey {
    fn new(key: &[u8]) -> CacheKey {
        if key.len() <= INLINE_KEY_MAX {
            let mut bytes = [0u8; INLINE_KEY_MAX];
            bytes[..key.len()].copy_from_slice(key);
            CacheKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            CacheKey::Heap(key.into())
        }
    }
}

impl std::ops::Deref for CacheKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            CacheKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            CacheKey::Heap(b) => b,
        }
    }
}

impl Borrow<[u8]> for CacheKey {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &CacheKey) -> bool {
        **self == **other
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes, which `Borrow` requires.
        (**self).hash(state);
    }
}

/// A cached value and what is known of its bytes.
struct Entry {
    value: Bytes,
    /// Whether `value` holds a `\r`; `None` until a read works it out.
    has_cr: Option<bool>,
}

impl Entry {
    fn new(value: Bytes, has_cr: Option<bool>) -> Entry {
        Entry { value, has_cr }
    }
}

/// A value read, with whether it holds a `\r` (0x0D) byte when that is
/// known without looking at it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The value.
    pub value: Bytes,
    /// `Some(true)` if the value holds a `\r`, `Some(false)` if not, `None`
    /// if the engine did not look (a value just read from a table or blob
    /// file).
    pub has_cr: Option<bool>,
}

impl Found {
    /// A value nothing is known of.
    pub fn unchecked(value: Bytes) -> Found {
        Found {
            value,
            has_cr: None,
        }
    }

    /// Whether the value holds a `\r`, looking at it if that is not known.
    pub fn has_cr(&self) -> bool {
        self.has_cr.unwrap_or_else(|| holds_cr(&self.value))
    }
}

/// Whether `value` holds a `\r` byte.
pub fn holds_cr(value: &[u8]) -> bool {
    memchr::memchr(b'\r', value).is_some()
}

struct Shard {
    lru: LruCache<CacheKey, Entry, FastHasher>,
    bytes: usize,
    invalidated_at: u64,
    hits: u64,
    misses: u64,
}

/// Bytes charged for an entry.
fn charge(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl Shard {
    /// Drops least recently used entries until at most `capacity` bytes
    /// are held.
    fn evict_to(&mut self, capacity: usize) {
        while self.bytes > capacity {
            match self.lru.pop_lru() {
                Some((k, e)) => self.bytes -= charge(&k, &e.value),
                None => break,
            }
        }
    }

    /// Drops `key`'s entry, if any.
    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.lru.pop(key) {
            self.bytes -= charge(key, &old.value);
        }
    }
}

/// How [`ValueCache::insert`] keeps a value read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Copied: it is a slice of a larger buffer (a table block).
    Copy,
    /// As it is: it holds little more than itself (a blob read).
    AsIs,
}

/// A sharded LRU cache of values.
pub struct ValueCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
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
                        lru: LruCache::unbounded_with_hasher(FastHasher::default()),
                        bytes: 0,
                        invalidated_at: 0,
                        hits: 0,
                        misses: 0,
                    })
                })
                .collect(),
            shard_capacity: capacity / CACHE_SHARDS,
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        // Only spreads keys over shards (each shard's map hashes on its
        // own): a fast, fixed hash is enough.
        let h = xxhash_rust::xxh3::xxh3_64(key);
        &self.shards[(h as usize) % CACHE_SHARDS]
    }

    /// The cached value of `key`, with whether it holds a `\r` (worked out
    /// now if no read did since the entry was set).
    pub fn get(&self, key: &[u8]) -> Option<Found> {
        if self.shard_capacity == 0 {
            return None;
        }
        let shard = self.shard(key);
        let found = {
            let mut s = shard.lock();
            let found = s.lru.get_mut(key).map(|e| {
                if e.value.len() <= READ_COPY_MAX && e.has_cr.is_none() {
                    // A short value is copied, so the address check below
                    // cannot work: it is looked at here, under the lock.
                    e.has_cr = Some(holds_cr(&e.value));
                }
                Found {
                    value: bytes_for_reader(&e.value),
                    has_cr: e.has_cr,
                }
            });
            match found {
                Some(_) => s.hits += 1,
                None => s.misses += 1,
            }
            found
        };
        let mut found = found?;
        if found.has_cr.is_none() {
            // Looked at outside the lock (a value may be up to a quarter of
            // a shard), then noted if the entry still holds this value: the
            // clone keeps its allocation, so the same address and length
            // are the same bytes.
            let has_cr = holds_cr(&found.value);
            found.has_cr = Some(has_cr);
            let mut s = shard.lock();
            if let Some(e) = s.lru.peek_mut(key) {
                if e.value.as_ptr() == found.value.as_ptr() && e.value.len() == found.value.len() {
                    e.has_cr = Some(has_cr);
                }
            }
        }
        Some(found)
    }

    /// Caches `value` read from disk by a reader that started at write
    /// sequence `read_seq`, unless the shard was invalidated since. `held`
    /// says whether `value` may be kept as it is or must be copied (a
    /// slice of a larger buffer: the copy keeps that buffer from staying
    /// alive with the entry).
    pub fn insert(&self, key: &[u8], value: &Bytes, read_seq: u64, held: Held) {
        let add = charge(key, value);
        if add > self.shard_capacity / 4 {
            return;
        }
        let mut s = self.shard(key).lock();
        if s.invalidated_at > read_seq {
            return;
        }
        let k = CacheKey::new(key);
        let v = match held {
            Held::Copy => Bytes::copy_from_slice(value),
            Held::AsIs => value.clone(),
        };
        if let Some(old) = s.lru.put(k, Entry::new(v, None)) {
            s.bytes -= charge(key, &old.value);
        }
        s.bytes += add;
        s.evict_to(self.shard_capacity);
    }

    /// Records that a write with sequence `seq` set `key` to `value` (or
    /// deleted it, `None`). A cached key keeps its place with the new
    /// value, which is the newest (callers publish in sequence order), so a
    /// hot key that is written and read stays a hit after its memtable is
    /// flushed; a key not cached is only invalidated, so writes alone do
    /// not fill the cache. Either way, reads that started before `seq` can
    /// no longer insert an older value. The value is kept as given (it is
    /// the memtable's), so it must not be a slice of a larger buffer.
    pub fn write_through(&self, key: &[u8], value: Option<&Bytes>, seq: u64) {
        if self.shard_capacity == 0 {
            return;
        }
        let mut s = self.shard(key).lock();
        s.invalidated_at = s.invalidated_at.max(seq);
        match value {
            Some(v) if charge(key, v) <= self.shard_capacity / 4 => {
                let Some(slot) = s.lru.get_mut(key) else {
                    return;
                };
                // Shared with the memtable, not copied: a written value
                // owns its allocation (see `WriteOp::Put`). A copy here
                // cost a `malloc` and a `memcpy` of every write of a hot
                // key, and doubled the heap the written values take.
                let old = std::mem::replace(slot, Entry::new(v.clone(), None));
                s.bytes = s.bytes - old.value.len() + v.len();
                s.evict_to(self.shard_capacity);
            }
            _ => s.remove(key),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().bytes as u64).sum()
    }

    /// (hits, misses) since creation.
    pub fn hits_misses(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(h, m), s| {
            let s = s.lock();
            (h + s.hits, m + s.misses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn insert_get_evict() {
        let c = ValueCache::new(CACHE_SHARDS * 1000);
        c.insert(b"a", &Bytes::from_static(b"1"), 0, Held::Copy);
        assert_eq!(c.get(b"a").map(|f| f.value), Some(Bytes::from_static(b"1")));
        for i in 0..10_000u32 {
            c.insert(
                &i.to_be_bytes(),
                &Bytes::from(vec![0u8; 100]),
                0,
                Held::Copy,
            );
        }
        assert!(c.bytes() <= (CACHE_SHARDS * 1000) as u64);
    }

    #[test]
    fn keys_held_inline_or_not_are_found_by_their_bytes_alone() {
        let c = ValueCache::new(1 << 22);
        let long = vec![b'k'; 200];
        let mut keys: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"ab".to_vec(),
            vec![b'k'; INLINE_KEY_MAX - 1],
            vec![b'k'; INLINE_KEY_MAX],
            vec![b'k'; INLINE_KEY_MAX + 1],
            long.clone(),
        ];
        // Keys that differ only in a trailing zero, or in length around
        // the inline limit, are different keys.
        keys.push([&long[..], b"\0"].concat());
        for (i, k) in keys.iter().enumerate() {
            c.insert(k, &Bytes::from(format!("v{i}")), 0, Held::Copy);
        }
        for (i, k) in keys.iter().enumerate() {
            let got = c.get(k).map(|f| f.value);
            assert_eq!(got, Some(Bytes::from(format!("v{i}"))), "key {i}");
        }
        assert_eq!(c.get(b"a\0\0"), None);
        assert_eq!(c.get(&[b'k'; INLINE_KEY_MAX + 2]), None);
        assert_eq!(c.hits_misses(), (keys.len() as u64, 2));
        // A write through a long key replaces its value; a delete drops it.
        c.write_through(&long, Some(&Bytes::from_static(b"new")), 1);
        assert_eq!(
            c.get(&long).map(|f| f.value),
            Some(Bytes::from_static(b"new"))
        );
        c.write_through(&keys[5], None, 2);
        assert_eq!(c.get(&keys[5]), None);
        assert!(c.get(&keys[4]).is_some());
    }

    #[test]
    fn stale_insert_after_invalidation_is_refused() {
        let c = ValueCache::new(1 << 20);
        // Reader started at seq 5; a write at seq 6 invalidated the key.
        c.write_through(b"k", None, 6);
        c.insert(b"k", &Bytes::from_static(b"old"), 5, Held::Copy);
        assert_eq!(c.get(b"k").map(|f| f.value), None);
        c.insert(b"k", &Bytes::from_static(b"new"), 6, Held::Copy);
        assert_eq!(
            c.get(b"k").map(|f| f.value),
            Some(Bytes::from_static(b"new"))
        );
    }

    #[test]
    fn a_write_updates_a_cached_key_and_leaves_others_uncached() {
        let c = ValueCache::new(1 << 20);
        c.insert(b"hot", &Bytes::from_static(b"v1"), 0, Held::Copy);
        c.write_through(b"hot", Some(&Bytes::from_static(b"v2")), 1);
        assert_eq!(
            c.get(b"hot").map(|f| f.value),
            Some(Bytes::from_static(b"v2"))
        );
        // Writes alone do not fill the cache.
        c.write_through(b"cold", Some(&Bytes::from_static(b"x")), 2);
        assert_eq!(c.get(b"cold").map(|f| f.value), None);
        // A delete drops the key.
        c.write_through(b"hot", None, 3);
        assert_eq!(c.get(b"hot").map(|f| f.value), None);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn stale_insert_after_write_through_is_refused() {
        let c = ValueCache::new(1 << 20);
        c.insert(b"k", &Bytes::from_static(b"v1"), 0, Held::Copy);
        c.write_through(b"k", Some(&Bytes::from_static(b"v2")), 7);
        // A reader that started at seq 6 read the old value from disk.
        c.insert(b"k", &Bytes::from_static(b"v1"), 6, Held::Copy);
        assert_eq!(
            c.get(b"k").map(|f| f.value),
            Some(Bytes::from_static(b"v2"))
        );
    }

    #[test]
    fn write_through_keeps_the_byte_bound() {
        let cap = CACHE_SHARDS * 4000;
        let c = ValueCache::new(cap);
        for i in 0..2000u32 {
            c.insert(&i.to_be_bytes(), &Bytes::from(vec![0u8; 10]), 0, Held::Copy);
        }
        for i in 0..2000u32 {
            c.write_through(
                &i.to_be_bytes(),
                Some(&Bytes::from(vec![1u8; 900])),
                1 + i as u64,
            );
        }
        assert!(c.bytes() <= cap as u64, "{} > {cap}", c.bytes());
        let held: u64 = (0..2000u32)
            .filter_map(|i| c.get(&i.to_be_bytes()).map(|f| f.value))
            .map(|v| {
                assert_eq!(&v[..], &[1u8; 900][..]);
                (4 + v.len() + ENTRY_OVERHEAD) as u64
            })
            .sum();
        assert_eq!(held, c.bytes());
    }

    #[test]
    fn a_write_through_shares_the_written_value() {
        let c = ValueCache::new(1 << 20);
        c.insert(b"hot", &Bytes::from_static(b"v1"), 0, Held::Copy);
        let v = Bytes::from(vec![7u8; 5000]);
        c.write_through(b"hot", Some(&v), 1);
        let got = c.get(b"hot").unwrap().value;
        assert_eq!(got, v);
        // The memtable's value, not a copy of it.
        assert_eq!(got.as_ptr(), v.as_ptr());
    }

    #[test]
    fn a_value_read_from_a_blob_is_kept_as_it_is_and_a_block_slice_is_copied() {
        let c = ValueCache::new(1 << 20);
        let blob = Bytes::from(vec![3u8; 5000]);
        c.insert(b"blob", &blob, 0, Held::AsIs);
        assert_eq!(c.get(b"blob").unwrap().value.as_ptr(), blob.as_ptr());
        let block = Bytes::from(vec![4u8; 5000]);
        let inline = block.slice(100..200);
        c.insert(b"inline", &inline, 0, Held::Copy);
        let got = c.get(b"inline").unwrap().value;
        assert_eq!(got, inline);
        assert!(!block.as_ptr_range().contains(&got.as_ptr()));
    }

    #[test]
    fn a_cached_value_remembers_whether_it_holds_cr_until_it_is_replaced() {
        let c = ValueCache::new(1 << 20);
        c.insert(b"k", &Bytes::from_static(b"plain"), 0, Held::Copy);
        assert_eq!(c.get(b"k").unwrap().has_cr, Some(false));
        assert_eq!(c.get(b"k").unwrap().has_cr, Some(false));
        c.write_through(b"k", Some(&Bytes::from_static(b"two\rlines")), 1);
        let f = c.get(b"k").unwrap();
        assert_eq!((&f.value[..], f.has_cr), (&b"two\rlines"[..], Some(true)));
        c.write_through(b"k", Some(&Bytes::from_static(b"one line")), 2);
        assert_eq!(c.get(b"k").unwrap().has_cr, Some(false));
        assert!(Found::unchecked(Bytes::from_static(b"a\r")).has_cr());
        assert!(!Found::unchecked(Bytes::from_static(b"a\n")).has_cr());
    }

    /// Writers swap a hot key between values with and without a `\r`
    /// while readers work the flag out: a reader that looked at an older
    /// value must never leave its answer on a newer one.
    #[test]
    fn a_cr_flag_never_outlives_its_value_under_concurrent_writes() {
        let c = std::sync::Arc::new(ValueCache::new(1 << 20));
        c.insert(b"hot", &Bytes::from_static(b"start"), 0, Held::Copy);
        let seq = std::sync::Arc::new(AtomicU64::new(1));
        std::thread::scope(|scope| {
            for w in 0..2u8 {
                let (c, seq) = (c.clone(), seq.clone());
                scope.spawn(move || {
                    for i in 0..100_000u32 {
                        let mut v = vec![b'x'; 64 + (i % 7) as usize];
                        if (i + w as u32).is_multiple_of(2) {
                            v[10] = b'\r';
                        }
                        let s = seq.fetch_add(1, Ordering::SeqCst);
                        c.write_through(b"hot", Some(&Bytes::from(v)), s);
                    }
                });
            }
            for _ in 0..2 {
                let c = c.clone();
                scope.spawn(move || {
                    for _ in 0..200_000 {
                        let f = c.get(b"hot").expect("the hot key stays cached");
                        assert_eq!(f.has_cr, Some(holds_cr(&f.value)), "{:?}", f.value);
                    }
                });
            }
        });
    }

    #[test]
    fn zero_capacity_disables() {
        let c = ValueCache::new(0);
        c.insert(b"k", &Bytes::from_static(b"v"), 0, Held::Copy);
        assert_eq!(c.get(b"k").map(|f| f.value), None);
    }
}
