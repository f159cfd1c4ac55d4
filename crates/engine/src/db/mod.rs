//! The database: the public API of the engine, and the state its threads
//! share.
//!
//! Threads:
//! - the **commit thread** ([`commit`]) owns the log: it gathers every
//!   write waiting in its queue into one batch, appends the batch with one
//!   `write`, fdatasyncs it in `sync` mode, applies it to the memtable and
//!   acknowledges it. The next batch forms while that happens;
//! - the **flush thread** ([`flush`]) writes frozen memtables to table and
//!   blob files;
//! - the **compaction thread** ([`crate::compaction`]) merges tables and
//!   rewrites blob files with too much garbage ([`gc`]);
//! - in `os` durability mode, the **sync thread** fdatasyncs the log every
//!   `wal_sync_interval` (on its own wake-up, not on notices of background
//!   work, so that a test controls when the log becomes durable).

pub(crate) mod background;
pub(crate) mod commit;
pub(crate) mod flush;
pub(crate) mod gc;
pub(crate) mod idle;
pub use background::BACKGROUND_NICE;
pub use idle::{IDLE_FLUSH_AFTER, READS_DEFER_IDLE_MAX};
pub mod metrics;
mod open;
mod read;
#[cfg(test)]
mod structure_tests;
mod sync_stage;
mod txn;

pub use read::{KeysIter, ScanIter};
pub use txn::{Txn, TxnAction, TxnCallback, TxnCond, TxnOp, TxnResult, TXN_OPS_MAX};

use crate::blob::BlobReader;
pub use crate::cache::Found;
use crate::cache::ValueCache;
use crate::error::{Error, Result};
use crate::fs::{DirLock, File, FsRef};
use crate::manifest::{ManifestWriter, VersionEdit};
use crate::memtable::Memtable;
use crate::options::Options;
use crate::table::Table;
use crate::version::{SuperVersion, Version};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A change submitted to the write path.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value. Kept as given, not copied, by the memtable until it
        /// is flushed and by the value cache until the key is evicted or
        /// written again: pass a `Bytes` that owns its allocation (such as
        /// `Bytes::copy_from_slice`), not a slice of a larger buffer, which
        /// would stay alive with it.
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
    /// Bytes (keys, values, per-entry overhead) in the active memtable.
    pub memtable_size: u64,
    /// Bytes in frozen memtables waiting for flush.
    pub immutable_memtable_size: u64,
    /// Live table files.
    pub sst_count: u64,
    /// Bytes of records in the live write-ahead log segments.
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
    /// Bytes of the files the engine keeps (tables, blobs, log files with
    /// their preallocated space).
    pub disk_bytes: u64,
    /// Bytes written to disk since open (log, tables, blobs).
    pub bytes_written: u64,
    /// Bytes of keys and values submitted by users since open.
    pub user_bytes_written: u64,
    /// Value-cache hits since open.
    pub cache_hits: u64,
    /// Value-cache misses since open.
    pub cache_misses: u64,
    /// Bytes held by the value cache.
    pub cache_bytes: u64,
    /// fdatasync calls on the log since open.
    pub wal_syncs: u64,
    /// Write batches delayed or stopped by backpressure since open.
    pub write_stalls: u64,
    /// Number of tables per level.
    pub level_files: Vec<u64>,
    /// Log records the last open dropped as the unsynced tail of a crash
    /// (a torn record, and any records after a hole).
    pub wal_dropped_records: u64,
    /// Bytes of log records the last open dropped (see
    /// `wal_dropped_records`).
    pub wal_dropped_bytes: u64,
    /// Bytes of live table files per level.
    pub level_bytes: Vec<u64>,
    /// Entries in the live table files (tombstones and versions that a
    /// compaction has not merged yet included).
    pub table_entries: u64,
    /// Entries in the active and frozen memtables.
    pub memtable_entries: u64,
    /// Bytes of table and blob files written by flushes since open.
    pub flush_bytes_written: u64,
    /// Bytes of table files read (merged) by compactions since open.
    pub compaction_bytes_read: u64,
    /// Bytes of table files written by compactions since open.
    pub compaction_bytes_written: u64,
    /// Bytes of blob files read by blob garbage collection since open.
    pub blob_gc_bytes_read: u64,
    /// Bytes of blob files written by blob garbage collection since open.
    pub blob_gc_bytes_written: u64,
}

/// Callback run when a submitted write is durable (per the durability
/// mode) and visible, or has failed. The `bool` is `true` for a put, and
/// for a delete whether the key existed.
pub type WriteCallback = Box<dyn FnOnce(Result<bool>) + Send + 'static>;

/// Counters updated by the engine's threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub flushes: AtomicU64,
    /// Flush attempts finished, failed ones included.
    pub flush_attempts: AtomicU64,
    pub compactions: AtomicU64,
    pub blob_gcs: AtomicU64,
    pub bytes_written: AtomicU64,
    pub user_bytes_written: AtomicU64,
    pub wal_syncs: AtomicU64,
    /// `sync` mode: log fdatasyncs run by the committing writer itself, a
    /// batch alone (`sync_stage`); also counted in `wal_syncs`.
    pub wal_syncs_by_committer: AtomicU64,
    pub write_stalls: AtomicU64,
    pub wal_bytes: AtomicU64,
    /// What recovery dropped at open: records and bytes.
    pub wal_dropped_records: AtomicU64,
    pub wal_dropped_bytes: AtomicU64,
    /// Bytes written by flushes, read and written by compactions and by
    /// blob collection.
    pub flush_bytes_written: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    pub blob_gc_bytes_read: AtomicU64,
    pub blob_gc_bytes_written: AtomicU64,
}

/// State guarded by the version lock: what changes when files come and go.
pub(crate) struct VersionSet {
    pub current: Arc<Version>,
    pub mem: Arc<Memtable>,
    /// Frozen memtables, oldest first.
    pub imms: Vec<Arc<Memtable>>,
    pub manifest: ManifestWriter,
    pub manifest_number: u64,
    pub next_file_number: u64,
    pub log_number: u64,
    /// Byte sizes of log segments still needed, by number.
    pub live_logs: Vec<(u64, u64)>,
    /// Flushed log segments kept for reuse by the commit thread, with
    /// their sizes.
    pub recyclable_logs: Vec<(PathBuf, u64)>,
}

impl Counters {
    /// Counts `bytes` written by a flush.
    pub fn add_flush_written(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.flush_bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl VersionSet {
    pub fn new_file_number(&mut self) -> u64 {
        let n = self.next_file_number;
        self.next_file_number += 1;
        n
    }
}

/// Everything the engine's threads share.
pub(crate) struct Shared {
    pub opts: Options,
    pub fs: FsRef,
    pub dir: PathBuf,
    /// The directory lock, released by close.
    pub lock: Mutex<Option<Box<dyn DirLock>>>,
    pub sv: RwLock<Arc<SuperVersion>>,
    pub vs: Mutex<VersionSet>,
    /// Signalled when a memtable is frozen, a flush or compaction ends, or
    /// on shutdown.
    pub bg_cv: Condvar,
    /// The `os` sync thread's own wake-up, signalled only at shutdown: it
    /// syncs on its interval, not on every notice of background work (which
    /// would make the log durable at moments a test cannot control, and
    /// hid a missing sync in blob collection; see `gc::run`).
    pub sync_cv: Condvar,
    /// The mutex `sync_cv` waits with.
    pub sync_wait: Mutex<()>,
    pub cache: ValueCache,
    /// Data blocks of the tables, for point lookups.
    pub block_cache: Arc<crate::table::BlockCache>,
    /// Write sequence number: bumped after each applied batch.
    pub seq: AtomicU64,
    pub counters: Counters,
    /// Histograms of the write path (fdatasync latency, batch sizes).
    pub metrics: metrics::WriteMetrics,
    /// Set after a fatal write-path error (a failed fsync): writes refused.
    pub fatal: Mutex<Option<String>>,
    pub shutdown: AtomicBool,
    /// Set when close begins, before the commit pipeline stops: background
    /// work that fails from then on exits quietly instead of retrying.
    pub closing: AtomicBool,
    /// The log file being written, for the sync thread.
    pub wal_file: Mutex<Option<Arc<dyn File>>>,
    /// The last flush failure, while flushes keep failing (a full disk).
    pub flush_error: Mutex<Option<Error>>,
    /// When the last client write was applied (blob collection's moves do
    /// not count), for what an idle database does (`idle`).
    pub last_write: Mutex<std::time::Instant>,
    /// When client reads last came (`idle`).
    pub reads: idle::Reads,
    /// Held while a compaction runs.
    pub compaction_lock: Mutex<()>,
    /// Held while a blob collection runs.
    pub gc_lock: Mutex<()>,
    /// Per level, the largest key of the last file compacted out of it.
    pub compaction_cursors: Mutex<Vec<Bytes>>,
}

impl Shared {
    pub fn super_version(&self) -> Arc<SuperVersion> {
        self.sv.read().clone()
    }

    /// A consistent snapshot: a super-version and the write sequence number
    /// that were current at one instant.
    ///
    /// Why this is enough for a reader (see also [`crate::memtable`]): every
    /// blob file a visible memtable entry points to was added to the
    /// version before that entry's batch was published (collection installs
    /// its output before it submits the moves), and is removed only after a
    /// newer batch (the moves away from it, or the overwrites that made it
    /// dead) was published. So the pinned version holds every file the
    /// entries visible at the sequence number can point to.
    pub fn snapshot(&self) -> (Arc<SuperVersion>, u64) {
        loop {
            let sv = self.super_version();
            let seq = self.seq.load(Ordering::SeqCst);
            // Still current after the sequence number was read: the pair
            // was current together at that read.
            if Arc::ptr_eq(&sv, &self.sv.read()) {
                return (sv, seq);
            }
        }
    }

    /// Publishes the memtables and version in `vs` to readers.
    pub fn install_super_version(&self, vs: &VersionSet) {
        let mut imms = vs.imms.clone();
        imms.reverse();
        *self.sv.write() = Arc::new(SuperVersion {
            mem: vs.mem.clone(),
            imms,
            version: vs.current.clone(),
        });
    }

    /// Makes `edit` durable in the manifest and installs the version it
    /// produces. Called with the version lock held.
    pub fn log_and_apply(
        &self,
        vs: &mut VersionSet,
        mut edit: VersionEdit,
        tables: &[Arc<Table>],
        blobs: &[Arc<BlobReader>],
    ) -> Result<()> {
        edit.next_file_number = Some(vs.next_file_number);
        let next = vs.current.apply(&edit, tables, blobs)?;
        let manifest_before = vs.manifest_number;
        let written = if vs.manifest.size() > crate::manifest::MANIFEST_ROLL_SIZE {
            self.roll_manifest(vs, &next, edit.log_number.unwrap_or(vs.log_number))
        } else {
            vs.manifest.append(&edit)
        };
        if let Err(e) = written {
            if vs.manifest.is_poisoned() {
                self.set_fatal(format!("manifest sync failed: {e}"));
            }
            if vs.manifest_number != manifest_before {
                // The roll switched manifests and then failed (the
                // engine is read-only now): the new manifest, which
                // `CURRENT` names, holds this edit, so the version must
                // too, or the next edit would contradict it. The caller
                // still sees the error and keeps its input files.
                self.install(vs, &edit, next);
            }
            return Err(e);
        }
        self.install(vs, &edit, next);
        Ok(())
    }

    /// Makes `next`, the version `edit` produced, current.
    fn install(&self, vs: &mut VersionSet, edit: &VersionEdit, next: Version) {
        if let Some(n) = edit.log_number {
            vs.log_number = n;
        }
        vs.current = Arc::new(next);
        self.install_super_version(vs);
    }

    /// Writes a fresh manifest holding a snapshot of `version` and points
    /// `CURRENT` at it.
    ///
    /// Once `CURRENT` has been renamed, it names the new manifest, so the
    /// engine switches to it even if the directory fsync that follows
    /// fails: edits never go to a manifest `CURRENT` does not name. Such a
    /// failure leaves it unknown which manifest a crash would bring back,
    /// so the engine goes read-only (`set_fatal`), keeps the old manifest
    /// file, and returns the error (`vs.manifest_number` has then changed).
    /// A failed rename leaves the old manifest in use if `CURRENT` still
    /// names it (the new file is removed), switches as above if it names
    /// the new one, and if `CURRENT` cannot be read back refuses every
    /// further edit (read-only, the old writer poisoned).
    pub fn roll_manifest(
        &self,
        vs: &mut VersionSet,
        version: &Version,
        log_number: u64,
    ) -> Result<()> {
        let number = vs.new_file_number();
        let mut snap = version.snapshot_edit();
        snap.log_number = Some(log_number);
        snap.next_file_number = Some(vs.next_file_number);
        let name = crate::version::manifest_name(number);
        let path = self.dir.join(&name);
        let w = ManifestWriter::create(&self.fs, &path, &snap)?;
        if let Err(e) = crate::manifest::replace_current(&self.fs, &self.dir, &name) {
            // CURRENT may or may not have been replaced: only if it still
            // names the old manifest may the new file go.
            match crate::manifest::read_current(&self.fs, &self.dir) {
                Ok(Some(n)) if n == name => {
                    self.set_fatal(format!("replacing CURRENT failed: {e}"));
                    vs.manifest = w;
                    vs.manifest_number = number;
                }
                Ok(_) => {
                    drop(w);
                    let _ = self.fs.remove_file(&path);
                }
                Err(read) => {
                    // Which manifest CURRENT names is unknown: no edit may
                    // go to either.
                    self.set_fatal(format!(
                        "replacing CURRENT failed ({e}) and it cannot be read back ({read})"
                    ));
                    vs.manifest.poison();
                }
            }
            return Err(e);
        }
        let old = std::mem::replace(&mut vs.manifest, w);
        vs.manifest_number = number;
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            let e = Error::io(format!("sync directory {}", self.dir.display()), e);
            self.set_fatal(format!(
                "directory sync after pointing CURRENT at {name} failed: {e}"
            ));
            return Err(e);
        }
        let _ = self.fs.remove_file(old.path());
        Ok(())
    }

    /// Refuses writes after a fatal error.
    pub fn check_writable(&self) -> Result<()> {
        if self.shutdown.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if let Some(reason) = self.fatal.lock().as_ref() {
            return Err(Error::ReadOnly(reason.clone()));
        }
        Ok(())
    }

    /// True after a fatal error. Files written by a failed operation must
    /// then be left in place: an edit naming them may still reach the disk.
    pub fn is_fatal(&self) -> bool {
        self.fatal.lock().is_some()
    }

    /// Removes files a failed flush, compaction or collection wrote, unless
    /// the engine is in a fatal state (see [`Shared::is_fatal`]).
    pub fn remove_outputs(&self, paths: impl IntoIterator<Item = PathBuf>) {
        if self.is_fatal() {
            return;
        }
        for p in paths {
            let _ = self.fs.remove_file(&p);
        }
    }

    /// Records a fatal error: writes are refused until reopen.
    pub fn set_fatal(&self, reason: String) {
        tracing::error!(%reason, "engine is now read-only");
        let mut f = self.fatal.lock();
        if f.is_none() {
            *f = Some(reason);
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether a flushed log is kept to be overwritten by the next log
    /// instead of being deleted. Overwriting a file whose blocks are
    /// allocated (and whose pages are likely still cached) costs less than
    /// writing a new one: no block allocation, no page-cache truncation on
    /// unlink (docs/performance.md, fourth pass); in `sync` mode its
    /// fdatasyncs then need no metadata update either. Only while writes
    /// come in, in both modes, so
    /// that an idle database holds no spare log
    /// ([`Shared::remove_recyclable_logs`]; in `sync` mode the spare held a
    /// whole preallocated segment: 3.0x the live data at rest, sixth pass).
    pub fn recycles_logs(&self) -> bool {
        self.opts.wal_recycle && !idle::is_idle(self)
    }

    /// Deletes the flushed logs kept for reuse (at close, and once writes
    /// have paused).
    pub fn remove_recyclable_logs(&self) {
        let recyclable = std::mem::take(&mut self.vs.lock().recyclable_logs);
        if recyclable.is_empty() {
            return;
        }
        for (p, _) in &recyclable {
            if let Err(e) = self.fs.remove_file(p) {
                tracing::warn!(error = %e, log = %p.display(), "could not remove a spare log");
            }
        }
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            tracing::warn!(error = %e, "could not sync the directory after removing spare logs");
        }
    }

    /// Wakes the background threads.
    pub fn wake_background(&self) {
        self.bg_cv.notify_all();
    }
}

/// An open database. Cheap to clone; all clones share one engine, which
/// is closed when the last clone is dropped (or by [`Db::close`]).
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    shared: Arc<Shared>,
    commit: commit::CommitHandle,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for DbInner {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the database on drop failed");
        }
    }
}

impl DbInner {
    fn close(&self) -> Result<()> {
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Ok(());
        }
        self.shared.closing.store(true, Ordering::Release);
        let synced = self.commit.control_wait(commit::Control::Sync);
        self.commit.control_wait(commit::Control::Stop).ok();
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake_background();
        {
            // Under the mutex: the sync thread checks `shutdown` holding it
            // before it waits, so the notice cannot fall between the two.
            let _w = self.shared.sync_wait.lock();
            self.shared.sync_cv.notify_all();
        }
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            let _ = t.join();
        }
        // Frozen segments not yet flushed were sealed when they were
        // frozen; cut them after their end markers too (see
        // `WalWriter::trim_after_seal`), so that a closed directory holds no
        // byte past a log's end.
        let frozen = self.shared.vs.lock().live_logs.clone();
        for (n, len) in frozen {
            let end = len + crate::wal::END_MARKERS_LEN as u64;
            let path = self.shared.path(&crate::version::log_name(n));
            if let Ok(f) = self.shared.fs.open(&path, crate::fs::OpenMode::ReadWrite) {
                if f.len().is_ok_and(|size| size > end) {
                    let _ = f.set_len(end).and_then(|()| f.sync_all());
                }
            }
        }
        // Flushed log files kept for reuse are not part of the database:
        // remove them, so a closed directory holds only live files.
        self.shared.remove_recyclable_logs();
        self.shared.lock.lock().take();
        synced
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.inner.shared.dir)
            .finish()
    }
}

impl Db {
    /// Opens (creating if needed) the database in `opts.dir`, recovering
    /// from the log after a crash.
    pub fn open(opts: Options) -> Result<Db> {
        open::open(opts)
    }

    /// The options the database was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.shared.opts
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
            if v.len() > self.inner.shared.opts.value_len_max {
                return Err(Error::InvalidArgument(format!(
                    "value too long: {} bytes (max {})",
                    v.len(),
                    self.inner.shared.opts.value_len_max
                )));
            }
        }
        Ok(())
    }

    /// Checks the key and value of a write against the limits.
    fn validate_op(&self, op: &WriteOp) -> Result<()> {
        match op {
            WriteOp::Put { key, value } => self.validate(key, Some(value)),
            WriteOp::Delete { key } => self.validate(key, None),
        }
    }

    /// Submits a write; `done` runs (on the commit thread) once it is
    /// acknowledged or has failed. Writes submitted by one thread are
    /// applied in submission order.
    pub fn submit(&self, op: WriteOp, done: WriteCallback) {
        if let Err(e) = self
            .validate_op(&op)
            .and_then(|_| self.inner.shared.check_writable())
        {
            done(Err(e));
            return;
        }
        self.inner.commit.submit(op, done);
    }

    /// Submits several writes at once, in order: as if by [`Db::submit`]
    /// for each, but they enter the commit queue together, so a pipeline
    /// of writes from one connection shares one log write.
    pub fn submit_many(&self, writes: Vec<(WriteOp, WriteCallback)>) {
        self.queue_many(writes, true);
    }

    /// Like [`Db::submit_many`], but the writes only join the commit
    /// queue: the caller commits them with [`Db::commit_queued`] once other
    /// threads have had a chance to queue theirs, so that writes of many
    /// connections share one log write (if nobody does, the commit thread
    /// takes them within 100 ms).
    pub fn submit_many_deferred(&self, writes: Vec<(WriteOp, WriteCallback)>) {
        self.queue_many(writes, false);
    }

    /// Commits the writes queued by [`Db::submit_many_deferred`] (and any
    /// others waiting) on the calling thread, unless another thread is
    /// committing them already.
    pub fn commit_queued(&self) {
        self.inner.commit.commit_queued();
    }

    fn queue_many(&self, writes: Vec<(WriteOp, WriteCallback)>, lead: bool) {
        let writable = self.inner.shared.check_writable();
        let mut ok = Vec::with_capacity(writes.len());
        for (op, done) in writes {
            let checked = match &writable {
                Ok(()) => self.validate_op(&op),
                Err(e) => Err(e.clone()),
            };
            match checked {
                Ok(()) => ok.push((op, done)),
                Err(e) => done(Err(e)),
            }
        }
        self.inner.commit.submit_many(ok, lead);
    }

    /// Submits a transaction (see [`Txn`]); `done` runs (on the commit
    /// thread) once it is acknowledged or has failed. Ordered with
    /// [`Db::submit`]: one thread's writes and transactions apply in
    /// submission order.
    pub fn submit_txn(&self, t: Txn, done: TxnCallback) {
        let shared = &self.inner.shared;
        if let Err(e) = t
            .validate(|k, v| self.validate(k, v))
            .and_then(|_| shared.check_writable())
        {
            done(Err(e));
            return;
        }
        self.inner.commit.submit_txn(t, done);
    }

    /// Runs a transaction, blocking until it is acknowledged.
    pub fn txn(&self, t: Txn) -> Result<Vec<TxnResult>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit_txn(
            t,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// The exact number of live keys, counted on a snapshot (reads every
    /// key: O(keys)).
    pub fn count_keys(&self) -> Result<u64> {
        let mut n = 0u64;
        for k in self.keys()? {
            k?;
            n += 1;
        }
        Ok(n)
    }

    fn submit_wait(&self, op: WriteOp) -> Result<bool> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(
            op,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Sets `key` to `value`, blocking until acknowledged.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.submit_wait(WriteOp::Put {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        })
        .map(|_| ())
    }

    /// Deletes `key`, blocking until acknowledged; returns whether it existed.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.submit_wait(WriteOp::Delete {
            key: Bytes::copy_from_slice(key),
        })
    }

    /// Reads the current value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.get_found(key)?.map(|f| f.value))
    }

    /// Reads the current value of `key`, with whether it holds a `\r`
    /// byte when the value cache knows that already ([`Found::has_cr`]):
    /// the text protocol cannot frame such a value, and the cache saves
    /// it a pass over each hot value's bytes.
    pub fn get_found(&self, key: &[u8]) -> Result<Option<Found>> {
        self.check_open()?;
        self.inner.shared.reads.note();
        read::get(&self.inner.shared, key)
    }

    /// Streams every live `(key, value)` whose key starts with `prefix`, in
    /// ascending key order. An empty prefix lists everything. The scan sees
    /// the database as it was when it started.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<ScanIter> {
        self.check_open()?;
        self.inner.shared.reads.note();
        ScanIter::new(self.inner.shared.clone(), prefix)
    }

    /// Streams every live key in ascending order.
    pub fn keys(&self) -> Result<KeysIter> {
        self.check_open()?;
        self.inner.shared.reads.note();
        KeysIter::new(self.inner.shared.clone())
    }

    /// Freezes the active memtable and waits until every frozen memtable is
    /// written to table files.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        self.inner.commit.control_wait(commit::Control::Rotate)?;
        flush::wait_flushed(&self.inner.shared)
    }

    /// Makes every acknowledged write durable on stable storage now.
    pub fn sync(&self) -> Result<()> {
        self.check_open()?;
        self.inner.commit.control_wait(commit::Control::Sync)
    }

    /// Compacts level 0 into the levels below whatever its size, then runs
    /// compactions and blob garbage collection until none is needed.
    pub fn compact(&self) -> Result<()> {
        self.check_open()?;
        crate::compaction::compact_until_idle(&self.inner.shared, &self.inner.commit)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.shared.shutdown.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Current statistics.
    pub fn stats(&self) -> Stats {
        let s = &self.inner.shared;
        let sv = s.super_version();
        let c = &s.counters;
        let v = &sv.version;
        let sst_bytes: u64 = (0..v.levels.len()).map(|l| v.level_bytes(l)).sum();
        let blob_bytes: u64 = v.blobs.values().map(|b| b.entry.file_size).sum();
        let (frozen_logs, recyclable) = {
            let vs = s.vs.lock();
            (
                vs.live_logs.iter().map(|(_, n)| n).sum::<u64>(),
                vs.recyclable_logs.iter().map(|(_, n)| n).sum::<u64>(),
            )
        };
        let wal_size = frozen_logs + c.wal_bytes.load(Ordering::Relaxed);
        // What the log files take on disk: preallocated and recycled space
        // included.
        let current_file = s.wal_file.lock().clone();
        let current_len = current_file.and_then(|f| f.len().ok()).unwrap_or(0);
        let wal_disk =
            frozen_logs + recyclable + current_len.max(c.wal_bytes.load(Ordering::Relaxed));
        let (hits, misses) = s.cache.hits_misses();
        Stats {
            flushes: c.flushes.load(Ordering::Relaxed),
            memtable_size: sv.mem.size(),
            immutable_memtable_size: sv.imms.iter().map(|m| m.size()).sum(),
            sst_count: v.table_count() as u64,
            wal_size,
            compactions: c.compactions.load(Ordering::Relaxed),
            sst_bytes,
            blob_files: v.blobs.len() as u64,
            blob_bytes,
            blob_garbage_bytes: v.blobs.values().map(|b| b.garbage).sum(),
            blob_gcs: c.blob_gcs.load(Ordering::Relaxed),
            disk_bytes: sst_bytes + blob_bytes + wal_disk,
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            user_bytes_written: c.user_bytes_written.load(Ordering::Relaxed),
            cache_hits: hits,
            cache_misses: misses,
            cache_bytes: s.cache.bytes(),
            wal_syncs: c.wal_syncs.load(Ordering::Relaxed),
            write_stalls: c.write_stalls.load(Ordering::Relaxed),
            level_files: v.levels.iter().map(|l| l.len() as u64).collect(),
            wal_dropped_records: c.wal_dropped_records.load(Ordering::Relaxed),
            wal_dropped_bytes: c.wal_dropped_bytes.load(Ordering::Relaxed),
            level_bytes: (0..v.levels.len()).map(|l| v.level_bytes(l)).collect(),
            table_entries: v.levels.iter().flatten().map(|t| t.entry.entries).sum(),
            memtable_entries: (sv.mem.len() + sv.imms.iter().map(|m| m.len()).sum::<usize>())
                as u64,
            flush_bytes_written: c.flush_bytes_written.load(Ordering::Relaxed),
            compaction_bytes_read: c.compaction_bytes_read.load(Ordering::Relaxed),
            compaction_bytes_written: c.compaction_bytes_written.load(Ordering::Relaxed),
            blob_gc_bytes_read: c.blob_gc_bytes_read.load(Ordering::Relaxed),
            blob_gc_bytes_written: c.blob_gc_bytes_written.load(Ordering::Relaxed),
        }
    }

    /// Snapshots of the write path's histograms: fdatasync latency and
    /// requests per log write.
    pub fn histograms(&self) -> metrics::WriteHistograms {
        let m = &self.inner.shared.metrics;
        metrics::WriteHistograms {
            fsync_ns: m.fsync.snapshot(),
            batch_requests: m.batch.snapshot(),
        }
    }

    /// A handle on the counts of the log's fdatasyncs (started, running);
    /// it stays valid after the database closed.
    pub fn log_syncs(&self) -> metrics::LogSyncs {
        self.inner.shared.metrics.syncs.clone()
    }

    /// Syncs the log, stops background work and releases the directory
    /// lock (the database can be reopened at once, even while clones of
    /// this handle exist). Later calls on any clone return
    /// [`Error::Closed`]. Writes in flight are finished first.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}
