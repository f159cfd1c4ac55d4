//! The read path: point reads and ordered scans.
//!
//! A point read looks in the active memtable, the frozen memtables (newest
//! first), the value cache, then the tables: level 0 newest first, then one
//! table per deeper level, each through its Bloom filter and index. A
//! separated value costs one positioned read of its blob record, unless
//! the cache holds it; that is true of the blob pointers a collection's
//! moves put in a memtable too.

use super::Shared;
use crate::cache::{Found, Held};
use crate::error::Result;
use crate::iter::{LevelSource, MemSource, MergeIter, Source, TableSource};
use crate::types::Value;
use crate::version::SuperVersion;
use bytes::Bytes;
use std::sync::Arc;

/// Reads the current value of `key`, with whether it holds a `\r` when the
/// value cache knew.
pub(super) fn get(shared: &Shared, key: &[u8]) -> Result<Option<Found>> {
    // The memtables are searched under the super-version's read lock, so
    // that the common case (a hot key found there) takes no reference to
    // the super-version: while the lock is held no other super-version can
    // be installed, so the one read is current when the sequence number is
    // read, as with `Shared::snapshot`. A memtable search touches memory
    // only, so the lock is held briefly. The sequence number is read before
    // anything is looked at; see crate::cache.
    let (sv, seq, moved) = {
        let current = shared.sv.read();
        let seq = shared.seq.load(std::sync::atomic::Ordering::SeqCst);
        match current.get_mem(key, seq) {
            Some((Value::Inline(value), has_cr)) => return Ok(Some(Found { value, has_cr })),
            Some((Value::Tombstone, _)) => return Ok(None),
            // Only a blob collection's move puts a blob pointer in a
            // memtable; the cache may hold the value it moved (a move
            // leaves it there, see `commit::publish`).
            Some((Value::Blob(r), _)) => (current.clone(), seq, Some(r)),
            None => (current.clone(), seq, None),
        }
    };
    if let Some(v) = shared.cache.get(key) {
        return Ok(Some(v));
    }
    // An inline value is a slice of a table block: the cache copies it. A
    // blob value holds little more than itself (`blob::reader::PIN_SHARE_MAX`):
    // the cache keeps it as it is, which saves a copy of a long value.
    let stored = match moved {
        Some(r) => Some(Value::Blob(r)),
        None => sv.version.get(key)?,
    };
    let (value, own) = match stored {
        None | Some(Value::Tombstone) => return Ok(None),
        Some(Value::Inline(b)) => (b, Held::Copy),
        Some(Value::Blob(r)) => (sv.version.read_blob(&r, key)?, Held::AsIs),
    };
    shared.cache.insert(key, &value, seq, own);
    Ok(Some(Found::unchecked(value)))
}

fn sources(sv: &SuperVersion, snap: u64) -> Vec<Box<dyn Source>> {
    let mut s: Vec<Box<dyn Source>> = Vec::new();
    s.push(Box::new(MemSource::new(sv.mem.clone(), snap)));
    for m in &sv.imms {
        s.push(Box::new(MemSource::new(m.clone(), snap)));
    }
    for t in &sv.version.levels[0] {
        s.push(Box::new(TableSource::new(&t.table)));
    }
    for level in &sv.version.levels[1..] {
        if !level.is_empty() {
            s.push(Box::new(LevelSource::new(level.clone())));
        }
    }
    s
}

/// Iterator over `(key, value)` pairs of a prefix scan, in ascending key
/// order.
///
/// What a scan sees: a consistent snapshot of the database as of the moment
/// it was created ([`Shared::snapshot`]). Writes acknowledged before that
/// moment are all seen; writes applied later are not, whether or not they
/// touch keys not yet reached. Concurrent flushes, compactions and blob
/// collection do not change what it returns: it pins the memtables and
/// files of its snapshot until it is dropped.
pub struct ScanIter {
    sv: Arc<SuperVersion>,
    merge: MergeIter,
    prefix: Bytes,
    done: bool,
    values: bool,
}

impl ScanIter {
    pub(super) fn new(shared: Arc<Shared>, prefix: &[u8]) -> Result<ScanIter> {
        Self::with_values(&shared, prefix, true)
    }

    fn with_values(shared: &Shared, prefix: &[u8], values: bool) -> Result<ScanIter> {
        let (sv, snap) = shared.snapshot();
        let merge = MergeIter::new(sources(&sv, snap), prefix)?;
        Ok(ScanIter {
            sv,
            merge,
            prefix: Bytes::copy_from_slice(prefix),
            done: false,
            values,
        })
    }
}

impl Iterator for ScanIter {
    type Item = Result<(Bytes, Bytes)>;
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let (key, value) = match self.merge.next() {
                None => break,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(kv)) => kv,
            };
            if !key.starts_with(&self.prefix) {
                break;
            }
            let value = match value {
                Value::Tombstone => continue,
                Value::Inline(b) => b,
                Value::Blob(_) if !self.values => Bytes::new(),
                Value::Blob(r) => match self.sv.version.read_blob(&r, &key) {
                    Ok(b) => b,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
            };
            return Some(Ok((key, value)));
        }
        self.done = true;
        None
    }
}

/// Iterator over live keys in ascending order (values are not read).
pub struct KeysIter {
    inner: ScanIter,
}

impl KeysIter {
    pub(super) fn new(shared: Arc<Shared>) -> Result<KeysIter> {
        Ok(KeysIter {
            inner: ScanIter::with_values(&shared, b"", false)?,
        })
    }
}

impl Iterator for KeysIter {
    type Item = Result<Bytes>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|r| r.map(|(k, _)| k))
    }
}
