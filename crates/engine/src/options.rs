//! Options for opening a database.

use crate::fs::{FsRef, RealFs};
use crate::limits::VALUE_LEN_MAX_DEFAULT;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged once the write-ahead log record is in the operating
    /// system (a `write` returned). Survives `kill -9` of the process; a
    /// power loss can lose up to `wal_sync_interval` of writes.
    #[default]
    Os,
    /// Acknowledged only after an fdatasync that covers the record. Survives
    /// power loss. Concurrent writers share one fsync (group commit).
    Sync,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "os" => Ok(Durability::Os),
            "sync" => Ok(Durability::Sync),
            other => Err(format!(
                "unknown durability mode {other:?} (expected os or sync)"
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Os => "os",
            Durability::Sync => "sync",
        })
    }
}

/// Everything that can be tuned when opening a database.
#[derive(Debug, Clone)]
pub struct Options {
    /// The data directory (created if missing).
    pub dir: PathBuf,
    /// The file system to use; [`RealFs`] outside tests.
    pub fs: FsRef,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// In [`Durability::Os`] mode, how often the log is fsynced in the
    /// background.
    pub wal_sync_interval: Duration,
    /// Bytes of keys and values in the active memtable before it is frozen
    /// and flushed to a table file.
    pub memtable_size: usize,
    /// Frozen memtables allowed to wait for flush before writers are slowed
    /// down; at twice this number writers wait for a flush.
    pub max_immutable_memtables: usize,
    /// Largest value accepted, in bytes.
    pub value_len_max: usize,
    /// Bytes of hot values kept decoded in memory.
    pub cache_size: usize,
    /// Bytes of table data blocks kept in memory for point lookups (reads,
    /// and the flush's and blob collection's lookups); 0 disables it.
    /// Default 32 MiB.
    pub block_cache_size: usize,
    /// Period of the background compaction check (on top of the size
    /// triggers).
    pub compaction_interval: Duration,
    /// Values at least this long are stored in blob files; `None` keeps
    /// every value inline.
    pub blob_threshold: Option<usize>,
    /// Target size of a blob file before a new one is started.
    pub blob_file_size: u64,
    /// While clients use the database, a blob file whose dead share reaches this
    /// fraction is rewritten. Rewriting a file copies its live share, so a
    /// high threshold copies little per byte reclaimed: under the
    /// challenge's overwrites, 0.25 copied 712-888 MB in 8 s of writes
    /// (70-85% of what the flushes wrote, 14% of the server's CPU), 0.75
    /// copied 207-247 MB (docs/performance.md, sixth pass).
    pub blob_gc_threshold: f64,
    /// Once the database is idle (no request for
    /// [`crate::db::IDLE_FLUSH_AFTER`], or no write for
    /// [`crate::db::READS_DEFER_IDLE_MAX`]), the threshold drops to this
    /// (if lower), so a database at rest holds
    /// little garbage whatever the busy threshold let pile up.
    pub blob_gc_idle_threshold: f64,
    /// Collect blob files in the background as soon as they are due. When
    /// false, only [`crate::Db::compact`] collects (for callers that
    /// schedule the work themselves, and for tests that need to choose the
    /// moment).
    pub blob_gc_background: bool,
    /// How much lower than the threads that call the engine its flush,
    /// compaction and blob collection threads run, as a nice increment
    /// (0 to 19; 0 keeps them equal; Linux only). See
    /// [`crate::db::BACKGROUND_NICE`].
    pub background_nice: i32,
    /// Target size of a table file written by compaction.
    pub table_file_size: u64,
    /// Number of level-0 files that triggers a compaction.
    pub l0_compaction_trigger: usize,
    /// Number of level-0 files at which writers start to be slowed down.
    pub l0_slowdown: usize,
    /// Number of level-0 files at which writers wait for compaction.
    pub l0_stop: usize,
    /// Size ratio between adjacent levels.
    pub level_size_multiplier: u64,
    /// Target size of the smallest non-zero level.
    pub base_level_size: u64,
    /// Recycle flushed log files: overwrite one instead of creating a new
    /// one, only while writes come in (`Shared::recycles_logs`).
    pub wal_recycle: bool,
    /// In `sync` mode, zero-fill new log files `PREALLOCATE_STEP` ahead of
    /// their records, so an fdatasync overwrites allocated blocks. Off by
    /// default: writing the zeros, and syncing them with the records, cost
    /// more than the metadata updates they save. Every key written once
    /// into fresh logs (50 clients, 20,000 keys of 7 KB): 11.4k-13.8k
    /// keys/s with it, 16.0k-24.2k without; recycled logs (the steady
    /// state) are allocated either way (docs/performance.md, sixth pass).
    pub wal_preallocate: bool,
}

impl Options {
    /// Defaults for a database in `dir` on the real file system.
    pub fn new(dir: impl Into<PathBuf>) -> Options {
        Options {
            dir: dir.into(),
            fs: Arc::new(RealFs),
            durability: Durability::Os,
            wal_sync_interval: Duration::from_millis(100),
            memtable_size: 128 * 1024 * 1024,
            max_immutable_memtables: 2,
            value_len_max: VALUE_LEN_MAX_DEFAULT,
            cache_size: 256 * 1024 * 1024,
            block_cache_size: 32 * 1024 * 1024,
            compaction_interval: Duration::from_secs(300),
            blob_threshold: Some(1024),
            blob_file_size: 64 * 1024 * 1024,
            blob_gc_threshold: 0.75,
            blob_gc_idle_threshold: 0.05,
            blob_gc_background: true,
            background_nice: crate::db::BACKGROUND_NICE,
            table_file_size: 16 * 1024 * 1024,
            l0_compaction_trigger: 4,
            l0_slowdown: 12,
            l0_stop: 24,
            level_size_multiplier: 10,
            base_level_size: 16 * 1024 * 1024,
            wal_recycle: true,
            wal_preallocate: false,
        }
    }
}
