//! The memtable: an ordered, concurrent in-memory map holding the recently
//! written versions of each key.
//!
//! Only the commit thread inserts (so "read the old entry, then replace it"
//! is race-free); any thread may read. Each memtable belongs to exactly one
//! log segment (`log_number`): once the memtable is flushed to a table
//! file, that segment is no longer needed.
//!
//! # Versions and snapshots
//!
//! Every entry carries the write sequence number of the batch that wrote it
//! (see `Shared::seq`). A key maps to a chain of its versions, newest first;
//! an insert prepends to the chain by swapping the chain's head in place
//! (see `Chain`).
//! A key's skiplist node is created once and never replaced: the
//! skiplist's replacing insert unlinks the old node before it links the new
//! one, and a reader in between would find the key absent and read an older
//! version from the tables (the bug `an_overwritten_key_never_looks_absent`
//! hunts). A reader with a snapshot sequence number
//! `S` sees, for each key, the newest version with `seq <= S`, and does not
//! see the key at all if every version is newer. Versions of one batch share
//! its sequence number, which is published only after the whole batch is in
//! the memtable, so a snapshot never sees half a batch. Readers that want
//! the newest state (the commit thread itself) use [`SEQ_LATEST`].
//!
//! Old versions stay until the memtable is flushed; each is charged to
//! [`Memtable::size`], so the memtable is still bounded by its size limit.
//! A flush writes only the newest version of each key.
//!
//! # The point-lookup index
//!
//! Besides the skiplist (key order, for scans and flush), every key's chain
//! is in a concurrent hash map ([`papaya`]), which point reads and the
//! commit thread's inserts use instead of a skiplist search: a search of a
//! memtable of 100,000 keys compared about 35 keys (`memcmp` and
//! `try_pin_loop` took half of the CPU of pipelined GETs). Both maps hold
//! the same `Arc<Chain>` and only ever gain keys; a new key is put in the
//! skiplist, then in the index, before its batch's sequence number is
//! published, so a reader whose snapshot includes the key finds it in both.

use crate::types::Value;
use bytes::Bytes;
use crossbeam_skiplist::SkipMap;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Bytes charged per key on top of key and value: the skiplist node, the
/// index entry (a copy of the key's handle and a slot) and the chain.
pub const ENTRY_OVERHEAD: usize = 128;
/// Bytes charged per additional version of a key.
pub const VERSION_OVERHEAD: usize = 32;
/// A snapshot sequence number that sees every version.
pub const SEQ_LATEST: u64 = u64::MAX;

/// [`Version::cr`]: no read has looked yet.
const CR_UNKNOWN: u8 = 0;
/// [`Version::cr`]: the inline value holds no `\r`.
const CR_ABSENT: u8 = 1;
/// [`Version::cr`]: the inline value holds a `\r`.
const CR_PRESENT: u8 = 2;

/// One version of a key, owning the older ones.
#[derive(Debug)]
struct Version {
    seq: u64,
    value: Value,
    /// Whether an inline value holds a `\r` byte, which the text protocol
    /// cannot frame: worked out by the first point read that finds this
    /// version, so a hot key's value is looked at once per write rather
    /// than once per read (the check is a pass over the value's bytes:
    /// 4.5% of the server's CPU under the 80% mix, whose reads of
    /// recently written keys are served from here, not from the value
    /// cache). Readers race only to store the same answer.
    cr: AtomicU8,
    /// The next older version (null for the oldest), owned by this one.
    older: *mut Version,
}

impl Version {
    fn new(seq: u64, value: Value, older: *mut Version) -> Version {
        Version {
            seq,
            value,
            cr: AtomicU8::new(CR_UNKNOWN),
            older,
        }
    }

    /// Whether the value holds a `\r`, for an inline value (`None` for a
    /// tombstone or a blob pointer).
    fn has_cr(&self) -> Option<bool> {
        let Value::Inline(b) = &self.value else {
            return None;
        };
        match self.cr.load(Ordering::Relaxed) {
            CR_ABSENT => Some(false),
            CR_PRESENT => Some(true),
            _ => {
                let has = crate::cache::holds_cr(b);
                let flag = if has { CR_PRESENT } else { CR_ABSENT };
                self.cr.store(flag, Ordering::Relaxed);
                Some(has)
            }
        }
    }
}

/// A key's versions, newest first: the skiplist node's value.
///
/// Only the commit thread pushes; any thread reads. A version is never
/// freed while its chain lives (a push only prepends; the chain frees
/// everything when dropped, which happens with its memtable, which readers
/// keep alive while they read), so a reader may follow the pointers for as
/// long as it borrows the chain. The head is published with `Release` and
/// loaded with `Acquire`, so a reader that sees a version sees it whole.
/// (arc-swap did the same at 3% of the CPU under pipelined writes: every
/// store settled the debts of every thread's readers.)
struct Chain {
    head: AtomicPtr<Version>,
}

// SAFETY: a `Chain` hands out `&Version` to any thread and is dropped by
// any thread; `Version`'s fields are `Send + Sync` but for the owning raw
// pointer, which is only dereferenced as described on `Chain`.
unsafe impl Send for Chain {}
unsafe impl Sync for Chain {}

impl Chain {
    fn new(seq: u64, value: Value) -> Chain {
        let v = Box::new(Version::new(seq, value, std::ptr::null_mut()));
        Chain {
            head: AtomicPtr::new(Box::into_raw(v)),
        }
    }

    /// The newest version.
    fn newest(&self) -> &Version {
        // SAFETY: the head is never null and lives as long as `self` (see
        // `Chain`).
        unsafe { &*self.head.load(Ordering::Acquire) }
    }

    /// The newest version visible at `snap`.
    fn visible(&self, snap: u64) -> Option<&Version> {
        let mut v = self.newest();
        loop {
            if v.seq <= snap {
                return Some(v);
            }
            // SAFETY: older versions are owned by the newer ones and live
            // as long as the chain.
            v = unsafe { v.older.as_ref() }?;
        }
    }

    /// Prepends a version. Callers are serialized (the commit thread).
    fn push(&self, seq: u64, value: Value) {
        let older = self.head.load(Ordering::Acquire);
        let v = Box::new(Version::new(seq, value, older));
        self.head.store(Box::into_raw(v), Ordering::Release);
    }
}

impl Drop for Chain {
    /// Frees the versions one by one (a recursive drop of a key
    /// overwritten a million times in one memtable overflows the stack).
    fn drop(&mut self) {
        let mut p = *self.head.get_mut();
        while !p.is_null() {
            // SAFETY: every version was made by `Box::into_raw` and is
            // owned by exactly one pointer, the one followed here; no
            // reader can hold the chain while it drops.
            let v = unsafe { Box::from_raw(p) };
            p = v.older;
        }
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("newest_seq", &self.newest().seq)
            .finish()
    }
}

/// An ordered in-memory table of recent versions.
#[derive(Debug)]
pub struct Memtable {
    /// Each key's chain of versions, in key order; the head is swapped,
    /// the node kept.
    map: SkipMap<Bytes, Arc<Chain>>,
    /// The same chains by key, for point lookups (see the module docs).
    index: papaya::HashMap<Bytes, Arc<Chain>, crate::cache::FastHasher>,
    size: AtomicU64,
    log_number: u64,
    /// Bytes of blob records that entries replaced in this memtable pointed
    /// to: garbage that no flush-time lookup will see.
    blob_garbage: Mutex<HashMap<u64, u64>>,
}

impl Memtable {
    /// An empty memtable whose writes are logged in segment `log_number`.
    pub fn new(log_number: u64) -> Memtable {
        Memtable {
            map: SkipMap::new(),
            index: papaya::HashMap::with_hasher(crate::cache::FastHasher::default()),
            size: AtomicU64::new(0),
            log_number,
            blob_garbage: Mutex::new(HashMap::new()),
        }
    }

    /// The log segment holding this memtable's writes.
    pub fn log_number(&self) -> u64 {
        self.log_number
    }

    /// Bytes of keys, values and per-entry overhead.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds a version of `key` written by the batch with sequence number
    /// `seq`; must only be called by one thread at a time, with
    /// non-decreasing `seq`.
    pub fn insert(&self, key: Bytes, value: Value, seq: u64) {
        let index = self.index.pin();
        let add = match index.get(&key[..]) {
            Some(chain) => {
                let old = chain.newest();
                if let Value::Blob(r) = &old.value {
                    *self.blob_garbage.lock().entry(r.file).or_insert(0) += u64::from(r.len);
                }
                debug_assert!(old.seq <= seq, "memtable versions out of order");
                let add = value.encoded_len() + VERSION_OVERHEAD;
                chain.push(seq, value);
                add
            }
            None => {
                let add = key.len() + value.encoded_len() + ENTRY_OVERHEAD;
                // Only the commit thread inserts: the key is still absent
                // from both maps.
                let chain = Arc::new(Chain::new(seq, value));
                self.map.insert(key.clone(), chain.clone());
                index.insert(key, chain);
                add
            }
        };
        self.size.fetch_add(add as u64, Ordering::Relaxed);
    }

    /// The newest entry for `key` (a tombstone included) visible at `snap`.
    pub fn get(&self, key: &[u8], snap: u64) -> Option<Value> {
        let index = self.index.pin();
        let chain = index.get(key)?;
        chain.visible(snap).map(|v| v.value.for_reader())
    }

    /// As [`Memtable::get`], with whether an inline value holds a `\r`
    /// (`None` for other entries); for point reads that a reply encodes.
    pub fn get_checked(&self, key: &[u8], snap: u64) -> Option<(Value, Option<bool>)> {
        let index = self.index.pin();
        let chain = index.get(key)?;
        chain
            .visible(snap)
            .map(|v| (v.value.for_reader(), v.has_cr()))
    }

    /// Entries visible at `snap` with keys from `start` on, in order: up to
    /// `max` keys are examined. Returns the entries and the last key
    /// examined (where the next call continues), or `None` as that key when
    /// the end was reached. Used by iterators, which cannot borrow the map
    /// across calls.
    pub fn entries_from(
        &self,
        start: Bound<&[u8]>,
        max: usize,
        snap: u64,
    ) -> (Vec<(Bytes, Value)>, Option<Bytes>) {
        let mut out = Vec::with_capacity(max.min(256));
        let mut cur = self.map.lower_bound(start);
        let mut examined = 0;
        let mut last: Option<Bytes> = None;
        while let Some(e) = cur {
            if examined >= max {
                return (out, last);
            }
            examined += 1;
            if let Some(v) = e.value().visible(snap) {
                out.push((e.key().clone(), v.value.clone()));
            }
            last = Some(e.key().clone());
            cur = e.next();
        }
        (out, None)
    }

    /// The newest version of every key with its sequence number, in key
    /// order (for flush).
    pub fn iter(&self) -> impl Iterator<Item = (Bytes, Value, u64)> + '_ {
        self.map.iter().map(|e| {
            let v = e.value().newest();
            (e.key().clone(), v.value.clone(), v.seq)
        })
    }

    /// Blob garbage recorded by replacements inside this memtable.
    pub fn blob_garbage(&self) -> HashMap<u64, u64> {
        self.blob_garbage.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BlobRef;
    use std::sync::Arc;

    #[test]
    fn insert_replace_and_size() {
        let m = Memtable::new(1);
        m.insert(
            Bytes::from_static(b"b"),
            Value::Inline(Bytes::from_static(b"1")),
            1,
        );
        let s1 = m.size();
        let v2 = Value::Inline(Bytes::from_static(b"22"));
        let add = (v2.encoded_len() + VERSION_OVERHEAD) as u64;
        m.insert(Bytes::from_static(b"b"), v2, 2);
        // The older version is kept (a snapshot may need it).
        assert_eq!(m.size(), s1 + add);
        m.insert(Bytes::from_static(b"a"), Value::Tombstone, 3);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(b"a", SEQ_LATEST), Some(Value::Tombstone));
        let (all, more) = m.entries_from(Bound::Unbounded, 10, SEQ_LATEST);
        assert_eq!(all[0].0, Bytes::from_static(b"a"));
        assert!(more.is_none());
        let (after, _) = m.entries_from(Bound::Excluded(b"a"), 10, SEQ_LATEST);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].1, Value::Inline(Bytes::from_static(b"22")));
        let newest: Vec<_> = m.iter().collect();
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[1].1, Value::Inline(Bytes::from_static(b"22")));
        assert_eq!((newest[0].2, newest[1].2), (3, 2));
    }

    #[test]
    fn point_reads_work_out_the_cr_flag_once_per_version() {
        let m = Memtable::new(1);
        let v = |s: &'static [u8]| Value::Inline(Bytes::from_static(s));
        m.insert(Bytes::from_static(b"k"), v(b"no cr here"), 1);
        let flag = |m: &Memtable| {
            let index = m.index.pin();
            index
                .get(&b"k"[..])
                .unwrap()
                .newest()
                .cr
                .load(Ordering::Relaxed)
        };
        assert_eq!(flag(&m), CR_UNKNOWN);
        assert_eq!(
            m.get_checked(b"k", SEQ_LATEST),
            Some((v(b"no cr here"), Some(false)))
        );
        assert_eq!(flag(&m), CR_ABSENT);
        assert_eq!(m.get_checked(b"k", SEQ_LATEST).unwrap().1, Some(false));
        // A newer version starts unknown; the older one keeps its answer.
        m.insert(Bytes::from_static(b"k"), v(b"a\rb"), 2);
        assert_eq!(flag(&m), CR_UNKNOWN);
        assert_eq!(
            m.get_checked(b"k", SEQ_LATEST),
            Some((v(b"a\rb"), Some(true)))
        );
        assert_eq!(flag(&m), CR_PRESENT);
        assert_eq!(m.get_checked(b"k", 1).unwrap().1, Some(false));
        m.insert(Bytes::from_static(b"k"), Value::Tombstone, 3);
        assert_eq!(
            m.get_checked(b"k", SEQ_LATEST),
            Some((Value::Tombstone, None))
        );
        assert_eq!(m.get_checked(b"absent", SEQ_LATEST), None);
    }

    #[test]
    fn replaced_blob_pointer_counts_as_garbage() {
        let m = Memtable::new(1);
        let r = BlobRef {
            file: 9,
            offset: 0,
            len: 500,
            checksum: 1,
        };
        m.insert(Bytes::from_static(b"k"), Value::Blob(r), 1);
        m.insert(Bytes::from_static(b"k"), Value::Tombstone, 2);
        assert_eq!(m.blob_garbage().get(&9), Some(&500));
    }

    #[test]
    fn snapshot_sees_the_versions_of_its_time() {
        let m = Memtable::new(1);
        let v = |s: &'static [u8]| Value::Inline(Bytes::from_static(s));
        m.insert(Bytes::from_static(b"k"), v(b"1"), 5);
        m.insert(Bytes::from_static(b"k"), v(b"2"), 7);
        m.insert(Bytes::from_static(b"n"), v(b"new"), 9);
        assert_eq!(m.get(b"k", 4), None);
        assert_eq!(m.get(b"k", 5), Some(v(b"1")));
        assert_eq!(m.get(b"k", 6), Some(v(b"1")));
        assert_eq!(m.get(b"k", 7), Some(v(b"2")));
        assert_eq!(m.get(b"n", 8), None);
        let (at8, _) = m.entries_from(Bound::Unbounded, 10, 8);
        assert_eq!(at8, vec![(Bytes::from_static(b"k"), v(b"2"))]);
    }

    #[test]
    fn entries_from_continues_after_the_last_examined_key() {
        let m = Memtable::new(1);
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            m.insert(Bytes::from_static(*k), Value::Tombstone, 10 + i as u64);
        }
        // At snapshot 11 only a and b are visible; chunks of 2 keys.
        let (first, more) = m.entries_from(Bound::Unbounded, 2, 11);
        assert_eq!(first.len(), 2);
        assert_eq!(more, Some(Bytes::from_static(b"b")));
        let (second, more) = m.entries_from(Bound::Excluded(b"b"), 2, 11);
        assert!(second.is_empty());
        assert_eq!(more, None);
    }

    /// Regression: the memtable replaced a key's skiplist node on every
    /// overwrite, and crossbeam's replace unlinks the old node before it
    /// links the new one, so a reader racing an overwrite found the key
    /// absent and fell through to the tables: an older value, a key missing
    /// from a scan, or a pointer into a blob file already collected.
    #[test]
    fn an_overwritten_key_never_looks_absent() {
        use std::sync::atomic::AtomicBool;
        let m = Arc::new(Memtable::new(1));
        let keys: Vec<Bytes> = (0..8).map(|i| Bytes::from(format!("k{i}"))).collect();
        for k in &keys {
            m.insert(k.clone(), Value::Inline(Bytes::from_static(b"0")), 1);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (m, stop, keys) = (m.clone(), stop.clone(), keys.clone());
                std::thread::spawn(move || -> std::result::Result<u64, String> {
                    let mut checks = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if r == 0 {
                            for k in &keys {
                                if m.get(k, SEQ_LATEST).is_none() {
                                    return Err(format!("get missed {k:?}"));
                                }
                            }
                        } else {
                            let (all, _) = m.entries_from(Bound::Unbounded, 100, SEQ_LATEST);
                            if all.len() != keys.len() {
                                return Err(format!(
                                    "a scan saw {} of {} keys",
                                    all.len(),
                                    keys.len()
                                ));
                            }
                        }
                        checks += 1;
                    }
                    Ok(checks)
                })
            })
            .collect();
        let start = std::time::Instant::now();
        let mut seq = 2;
        // Bounded in time and in versions kept (every one stays until a
        // flush).
        while seq < 100_000 && start.elapsed() < std::time::Duration::from_secs(2) {
            for k in &keys {
                m.insert(k.clone(), Value::Inline(Bytes::from_static(b"1")), seq);
            }
            seq += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            let checks = r.join().unwrap_or_else(|_| Err("reader panicked".into()));
            match checks {
                Ok(n) => assert!(n > 0, "a reader never ran"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Regression: a key overwritten very often in one memtable made a
    /// version chain whose recursive drop overflowed the stack.
    #[test]
    fn a_long_version_chain_drops_without_recursion() {
        let m = Memtable::new(1);
        for seq in 1..=1_000_000 {
            m.insert(Bytes::from_static(b"hot"), Value::Tombstone, seq);
        }
        assert_eq!(m.get(b"hot", 1), Some(Value::Tombstone));
        drop(m);
    }
}
