//! The memtable: an ordered, concurrent in-memory map holding the newest
//! version of each recently written key.
//!
//! Only the commit thread inserts (so "read the old entry, then replace it"
//! is race-free); any thread may read. Each memtable belongs to exactly one
//! log segment (`log_number`): once the memtable is flushed to a table
//! file, that segment is no longer needed.

use crate::types::Value;
use bytes::Bytes;
use crossbeam_skiplist::SkipMap;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes charged per entry on top of key and value, for the skiplist node.
pub const ENTRY_OVERHEAD: usize = 48;

/// An ordered in-memory table of newest values.
#[derive(Debug)]
pub struct Memtable {
    map: SkipMap<Bytes, Value>,
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

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Inserts or replaces; must only be called by one thread at a time.
    pub fn insert(&self, key: Bytes, value: Value) {
        let add = (key.len() + value.encoded_len() + ENTRY_OVERHEAD) as u64;
        if let Some(old) = self.map.get(&key) {
            let old_value = old.value();
            let sub = (key.len() + old_value.encoded_len() + ENTRY_OVERHEAD) as u64;
            if let Value::Blob(r) = old_value {
                *self.blob_garbage.lock().entry(r.file).or_insert(0) += u64::from(r.len);
            }
            self.size.fetch_sub(sub.min(self.size()), Ordering::Relaxed);
        }
        self.map.insert(key, value);
        self.size.fetch_add(add, Ordering::Relaxed);
    }

    /// The newest entry for `key` (a tombstone included).
    pub fn get(&self, key: &[u8]) -> Option<Value> {
        self.map.get(key).map(|e| e.value().clone())
    }

    /// Up to `max` entries with keys after `after` (or from the start), in
    /// order. Used by iterators, which cannot borrow the map across calls.
    pub fn entries_from(&self, start: Bound<&[u8]>, max: usize) -> Vec<(Bytes, Value)> {
        let mut out = Vec::with_capacity(max.min(256));
        let mut cur = self.map.lower_bound(start);
        while let Some(e) = cur {
            if out.len() >= max {
                break;
            }
            out.push((e.key().clone(), e.value().clone()));
            cur = e.next();
        }
        out
    }

    /// Every entry in key order (for flush).
    pub fn iter(&self) -> impl Iterator<Item = (Bytes, Value)> + '_ {
        self.map
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
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

    #[test]
    fn insert_replace_and_size() {
        let m = Memtable::new(1);
        m.insert(
            Bytes::from_static(b"b"),
            Value::Inline(Bytes::from_static(b"1")),
        );
        let s1 = m.size();
        m.insert(
            Bytes::from_static(b"b"),
            Value::Inline(Bytes::from_static(b"22")),
        );
        assert_eq!(m.size(), s1 + 1);
        m.insert(Bytes::from_static(b"a"), Value::Tombstone);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(b"a"), Some(Value::Tombstone));
        let all = m.entries_from(Bound::Unbounded, 10);
        assert_eq!(all[0].0, Bytes::from_static(b"a"));
        let after = m.entries_from(Bound::Excluded(b"a"), 10);
        assert_eq!(after.len(), 1);
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
        m.insert(Bytes::from_static(b"k"), Value::Blob(r));
        m.insert(Bytes::from_static(b"k"), Value::Tombstone);
        assert_eq!(m.blob_garbage().get(&9), Some(&500));
    }
}
