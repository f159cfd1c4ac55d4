//! The database: the public API of the engine.
//!
//! TEMPORARY BODY: an in-memory map standing in for the engine while the
//! log, tables and compaction are written. The API is the final one.

use crate::error::{Error, Result};
use crate::options::Options;
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A change submitted to the write path.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove `key`; the outcome says whether it existed.
    Delete {
        /// The key.
        key: Bytes,
    },
}

/// Counters and sizes for `status` and monitoring. Every figure is exact at
/// the moment it was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Memtable flushes completed since open.
    pub flushes: u64,
    /// Bytes (keys and values) in the active memtable.
    pub memtable_size: u64,
    /// Bytes in frozen memtables waiting for flush.
    pub immutable_memtable_size: u64,
    /// Live table files.
    pub sst_count: u64,
    /// Bytes in the live write-ahead log segments.
    pub wal_size: u64,
    /// Compactions completed since open.
    pub compactions: u64,
    /// Bytes of live table files.
    pub sst_bytes: u64,
    /// Live blob files.
    pub blob_files: u64,
    /// Bytes of live blob files.
    pub blob_bytes: u64,
    /// Bytes in blob files known to be dead (awaiting garbage collection).
    pub blob_garbage_bytes: u64,
    /// Blob files rewritten by garbage collection since open.
    pub blob_gcs: u64,
    /// Bytes of every file the engine keeps in its directory.
    pub disk_bytes: u64,
    /// Bytes written to disk since open (log, tables, blobs, manifest).
    pub bytes_written: u64,
    /// Bytes of keys and values submitted by users since open.
    pub user_bytes_written: u64,
    /// Value-cache hits since open.
    pub cache_hits: u64,
    /// Value-cache misses since open.
    pub cache_misses: u64,
    /// Bytes held by the value cache.
    pub cache_bytes: u64,
    /// Number of fsync/fdatasync calls on the log since open.
    pub wal_syncs: u64,
    /// Times writers were delayed or stopped by backpressure since open.
    pub write_stalls: u64,
}

/// Iterator over `(key, value)` pairs of a prefix scan, in ascending key
/// order.
pub struct ScanIter {
    inner: std::vec::IntoIter<(Bytes, Bytes)>,
}

impl Iterator for ScanIter {
    type Item = Result<(Bytes, Bytes)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(Ok)
    }
}

/// Iterator over live keys in ascending order.
pub struct KeysIter {
    inner: ScanIter,
}

impl Iterator for KeysIter {
    type Item = Result<Bytes>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|r| r.map(|(k, _)| k))
    }
}

/// Callback run when a submitted write is durable (per the durability
/// mode) and visible, or has failed. The `bool` is `true` for a put, and
/// for a delete whether the key existed.
pub type WriteCallback = Box<dyn FnOnce(Result<bool>) + Send + 'static>;

/// An open database. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    opts: Options,
    map: RwLock<BTreeMap<Bytes, Bytes>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.inner.opts.dir)
            .finish()
    }
}

impl Db {
    /// Opens (creating if needed) the database in `opts.dir`, recovering
    /// from the log after a crash.
    pub fn open(opts: Options) -> Result<Db> {
        Ok(Db {
            inner: Arc::new(Inner {
                opts,
                map: RwLock::new(BTreeMap::new()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The options the database was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Validates a key and value against the limits.
    pub fn validate(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("empty key".into()));
        }
        if key.len() > crate::limits::KEY_LEN_MAX {
            return Err(Error::InvalidArgument(format!(
                "key too long: {} bytes (max {})",
                key.len(),
                crate::limits::KEY_LEN_MAX
            )));
        }
        if let Some(v) = value {
            if v.len() > self.inner.opts.value_len_max {
                return Err(Error::InvalidArgument(format!(
                    "value too long: {} bytes (max {})",
                    v.len(),
                    self.inner.opts.value_len_max
                )));
            }
        }
        Ok(())
    }

    /// Submits a write; `done` runs (on an engine thread) once it is
    /// acknowledged or has failed. Writes submitted by one thread are
    /// applied in submission order.
    pub fn submit(&self, op: WriteOp, done: WriteCallback) {
        done(self.apply(op));
    }

    fn apply(&self, op: WriteOp) -> Result<bool> {
        self.check_open()?;
        match op {
            WriteOp::Put { key, value } => {
                self.validate(&key, Some(&value))?;
                self.inner.map.write().insert(key, value);
                Ok(true)
            }
            WriteOp::Delete { key } => {
                self.validate(&key, None)?;
                Ok(self.inner.map.write().remove(&key).is_some())
            }
        }
    }

    /// Sets `key` to `value`, blocking until acknowledged.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.apply(WriteOp::Put {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        })
        .map(|_| ())
    }

    /// Deletes `key`, blocking until acknowledged; returns whether it existed.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.apply(WriteOp::Delete {
            key: Bytes::copy_from_slice(key),
        })
    }

    /// Reads the current value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.check_open()?;
        Ok(self.inner.map.read().get(key).cloned())
    }

    /// Streams every live `(key, value)` whose key starts with `prefix`, in
    /// ascending key order. An empty prefix lists everything.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<ScanIter> {
        self.check_open()?;
        let m = self.inner.map.read();
        let v: Vec<_> = m
            .range(Bytes::copy_from_slice(prefix)..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(ScanIter {
            inner: v.into_iter(),
        })
    }

    /// Streams every live key in ascending order.
    pub fn keys(&self) -> Result<KeysIter> {
        Ok(KeysIter {
            inner: self.scan_prefix(b"")?,
        })
    }

    /// Writes the active memtable to a table file and waits for it.
    pub fn flush(&self) -> Result<()> {
        self.check_open()
    }

    /// Makes every acknowledged write durable on stable storage now.
    pub fn sync(&self) -> Result<()> {
        self.check_open()
    }

    /// Current statistics.
    pub fn stats(&self) -> Stats {
        Stats::default()
    }

    /// Number of live keys (exact).
    pub fn key_count(&self) -> u64 {
        self.inner.map.read().len() as u64
    }

    /// Syncs the log, stops background work and releases the directory.
    /// Later calls on any clone return [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        Ok(())
    }
}
