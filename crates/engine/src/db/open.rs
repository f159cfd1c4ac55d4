//! Opening a database: lock, manifest, orphan files, log replay.
//!
//! Recovery replays every log segment the manifest still needs into frozen
//! memtables (bounded by the memtable size, so replay is short), which the
//! flush thread writes out in the background; writes are accepted at once,
//! into a new segment. Tables and blob files are opened (footer, index and
//! filter only). Files the manifest does not name are deleted: they are the
//! outputs of a flush, compaction or collection that a crash interrupted.
//!
//! Log replay is strict (see [`crate::wal`]): damage in synced or cleanly
//! closed log data fails the open with the file and offset; only the
//! unsynced tail of a crash is dropped, logged with the records and bytes
//! dropped and counted in [`Stats`](super::Stats). A replayed segment that
//! a crash left without an end marker gets one where its valid records
//! end, so the next open reads it strictly too.

use super::{commit, flush, Counters, Db, Shared, VersionSet};
use crate::blob::BlobReader;
use crate::cache::ValueCache;
use crate::error::{Error, IoContext, Result};
use crate::limits::VALUE_LEN_MAX_LIMIT;
use crate::manifest::{
    read_current, read_manifest, set_current, LiveFiles, ManifestWriter, VersionEdit,
};
use crate::memtable::Memtable;
use crate::options::{Durability, Options};
use crate::table::BlockCache;
use crate::table::Table;
use crate::version::{
    blob_name, log_name, manifest_name, parse_file_name, table_name, FileKind, Version, NUM_LEVELS,
};
use crate::wal::{seal_recovered, ReadMode, WalReader, WalWriter};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

fn check_options(o: &Options) -> Result<()> {
    if o.value_len_max > VALUE_LEN_MAX_LIMIT {
        return Err(Error::InvalidArgument(format!(
            "value size limit {} is above the engine's ceiling {VALUE_LEN_MAX_LIMIT}",
            o.value_len_max
        )));
    }
    if o.memtable_size < 64 * 1024 {
        return Err(Error::InvalidArgument(
            "memtable size must be at least 64 KiB".into(),
        ));
    }
    for (t, what) in [
        (o.blob_gc_threshold, "blob GC threshold"),
        (o.blob_gc_idle_threshold, "idle blob GC threshold"),
    ] {
        if !(0.0..=1.0).contains(&t) || t == 0.0 {
            return Err(Error::InvalidArgument(format!("{what} must be in (0, 1]")));
        }
    }
    Ok(())
}

pub(super) fn open(opts: Options) -> Result<Db> {
    check_options(&opts)?;
    let started = Instant::now();
    let fs = opts.fs.clone();
    let dir = opts.dir.clone();
    fs.create_dir_all(&dir)
        .ctx(|| format!("create data directory {}", dir.display()))?;
    let lock = fs.lock(&dir.join("LOCK")).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked(dir.clone())
        } else {
            Error::io(format!("lock {}", dir.join("LOCK").display()), e)
        }
    })?;

    let mut fold = LiveFiles::default();
    let old_manifest = read_current(&fs, &dir)?;
    let mut old_manifest_number = None;
    if let Some(name) = &old_manifest {
        let path = dir.join(name);
        let (edits, _torn) = read_manifest(&fs, &path)?;
        for e in edits {
            fold.apply(e)?;
        }
        old_manifest_number = name
            .strip_prefix("MANIFEST-")
            .and_then(|n| n.parse::<u64>().ok());
    }

    // Open live files.
    let block_cache = Arc::new(BlockCache::new(opts.block_cache_size));
    let mut tables = Vec::with_capacity(fold.tables.len());
    let mut snapshot = VersionEdit::default();
    for t in fold.tables.values() {
        if t.level as usize >= NUM_LEVELS {
            return Err(Error::corruption(
                dir.join(name_or(&old_manifest)),
                0,
                format!("table {} at level {}", t.number, t.level),
            ));
        }
        tables.push(Table::open_cached(
            &fs,
            &dir.join(table_name(t.number)),
            t.number,
            block_cache.clone(),
        )?);
        snapshot.added_tables.push(t.clone());
    }
    let mut blobs = Vec::with_capacity(fold.blobs.len());
    for b in fold.blobs.values() {
        blobs.push(BlobReader::open(
            &fs,
            &dir.join(blob_name(b.number)),
            b.number,
        )?);
        snapshot.added_blobs.push(b.clone());
        let garbage = fold.blob_garbage.get(&b.number).copied().unwrap_or(0);
        snapshot.blob_garbage_set.push((b.number, garbage));
    }
    let version = Version::empty(&dir).apply(&snapshot, &tables, &blobs)?;

    // Orphans, logs to replay, and the highest file number in use.
    let mut logs = Vec::new();
    let names = fs
        .list_dir(&dir)
        .ctx(|| format!("list {}", dir.display()))?;
    let mut removed = 0;
    for name in &names {
        let Some(kind) = parse_file_name(name) else {
            continue;
        };
        let orphan = match kind {
            FileKind::Table(n) => {
                fold.next_file = fold.next_file.max(n + 1);
                !fold.tables.contains_key(&n)
            }
            FileKind::Blob(n) => {
                fold.next_file = fold.next_file.max(n + 1);
                !fold.blobs.contains_key(&n)
            }
            FileKind::Log(n) => {
                fold.next_file = fold.next_file.max(n + 1);
                if n >= fold.log_number {
                    logs.push(n);
                    false
                } else {
                    true
                }
            }
            FileKind::Manifest(n) => {
                fold.next_file = fold.next_file.max(n + 1);
                Some(n) != old_manifest_number
            }
            FileKind::Temp => true,
        };
        if orphan {
            let p = dir.join(name);
            fs.remove_file(&p)
                .ctx(|| format!("remove leftover {}", p.display()))?;
            removed += 1;
        }
    }
    logs.sort_unstable();

    // Replay.
    let mut imms = Vec::new();
    let mut live_logs = Vec::new();
    let mut records = 0u64;
    let mut empty_logs = Vec::new();
    let (mut dropped_records, mut dropped_bytes) = (0u64, 0u64);
    // Sequence numbers continue from the newest table (see `SeqRange`):
    // the unflushed logs hold newer writes than every table, and so does
    // everything written from now on.
    let mut seq = version
        .levels
        .iter()
        .flatten()
        .map(|t| t.table.seqs().max)
        .max()
        .unwrap_or(0);
    for &n in &logs {
        let path = dir.join(log_name(n));
        let mut reader = WalReader::open(&fs, &path, n, ReadMode::Strict)?;
        let mem = Memtable::new(n);
        while let Some(rec) = reader.next_record()? {
            seq += 1;
            mem.insert(rec.key, rec.value, seq);
            records += 1;
        }
        dropped_records += reader.tail().dropped_records;
        dropped_bytes += reader.tail().dropped_bytes;
        if mem.is_empty() {
            empty_logs.push(path);
        } else {
            if !reader.sealed() {
                // A crash left it open: end it where its valid records end,
                // so that from now on damage in it reads as corruption and
                // the next open does not drop its tail again.
                seal_recovered(&fs, &path, n, reader.end_offset(), reader.content_crc())?;
            }
            live_logs.push((n, reader.end_offset()));
            imms.push(Arc::new(mem));
        }
    }

    // A fresh manifest (a snapshot of the recovered state) and log.
    let mut next_file = fold.next_file;
    let manifest_number = next_file;
    let log_number = next_file + 1;
    next_file += 2;
    let mut snap = version.snapshot_edit();
    snap.log_number = Some(
        imms.first()
            .map_or(log_number, |m: &Arc<Memtable>| m.log_number()),
    );
    snap.next_file_number = Some(next_file);
    let manifest_name_new = manifest_name(manifest_number);
    let manifest = ManifestWriter::create(&fs, &dir.join(&manifest_name_new), &snap)?;
    let prealloc = if opts.durability == Durability::Sync && opts.wal_preallocate {
        opts.memtable_size as u64
    } else {
        0
    };
    let recycle = empty_logs.pop();
    let wal = WalWriter::create(
        &fs,
        &dir,
        &dir.join(log_name(log_number)),
        log_number,
        prealloc,
        recycle.as_deref(),
    )?;
    set_current(&fs, &dir, &manifest_name_new)?;
    if let Some(old) = &old_manifest {
        let p = dir.join(old);
        fs.remove_file(&p)
            .ctx(|| format!("remove old manifest {}", p.display()))?;
    }
    for p in empty_logs {
        fs.remove_file(&p)
            .ctx(|| format!("remove empty log {}", p.display()))?;
    }
    let vs = VersionSet {
        current: Arc::new(version),
        mem: Arc::new(Memtable::new(log_number)),
        imms,
        manifest,
        manifest_number,
        next_file_number: next_file,
        log_number: snap.log_number.unwrap_or(log_number),
        live_logs,
        recyclable_logs: Vec::new(),
    };
    let cache_size = opts.cache_size;
    let table_count = vs.current.table_count();
    let blob_count = vs.current.blobs.len();
    let replayed = vs.imms.len();
    let sv = Arc::new(crate::version::SuperVersion {
        mem: vs.mem.clone(),
        imms: vs.imms.iter().rev().cloned().collect(),
        version: vs.current.clone(),
    });
    let shared = Arc::new(Shared {
        opts,
        fs,
        dir,
        lock: Mutex::new(Some(lock)),
        sv: RwLock::new(sv),
        vs: Mutex::new(vs),
        bg_cv: Condvar::new(),
        sync_cv: Condvar::new(),
        sync_wait: Mutex::new(()),
        cache: ValueCache::new(cache_size),
        block_cache,
        seq: AtomicU64::new(seq),
        counters: Counters::default(),
        metrics: Default::default(),
        fatal: Mutex::new(None),
        shutdown: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        wal_file: Mutex::new(None),
        flush_error: Mutex::new(None),
        last_write: Mutex::new(Instant::now()),
        reads: super::idle::Reads::new(),
        compaction_lock: Mutex::new(()),
        gc_lock: Mutex::new(()),
        compaction_cursors: Mutex::new(vec![Bytes::new(); NUM_LEVELS]),
    });
    let c = &shared.counters;
    c.wal_dropped_records
        .store(dropped_records, std::sync::atomic::Ordering::Relaxed);
    c.wal_dropped_bytes
        .store(dropped_bytes, std::sync::atomic::Ordering::Relaxed);
    let (commit, mut threads) = commit::start(shared.clone(), wal)?;
    threads.push(flush::start(shared.clone())?);
    threads.push(crate::compaction::start(shared.clone(), commit.clone())?);
    threads.push(super::gc::start(shared.clone(), commit.clone())?);
    if shared.opts.durability == Durability::Os {
        threads.push(commit::start_syncer(shared.clone())?);
    }
    tracing::info!(
        dir = %shared.dir.display(),
        tables = table_count,
        blob_files = blob_count,
        logs_replayed = replayed,
        records_replayed = records,
        log_records_dropped = dropped_records,
        log_bytes_dropped = dropped_bytes,
        leftovers_removed = removed,
        ms = started.elapsed().as_millis() as u64,
        "database opened"
    );
    Ok(Db {
        inner: Arc::new(super::DbInner {
            shared,
            commit,
            threads: Mutex::new(threads),
        }),
    })
}

fn name_or(m: &Option<String>) -> String {
    m.clone().unwrap_or_else(|| "MANIFEST".into())
}
