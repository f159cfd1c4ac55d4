//! Regression tests of the engine's file structure that need its
//! internals: the level order kept by a forced level-0 compaction, and
//! where edits go after a failed manifest roll.

use super::{Db, Shared};
use crate::error::{IoContext, Result};
use crate::fs::{CrashMode, Fault, FaultOp, MemFs};
use crate::manifest::{read_current, read_manifest, LiveFiles, TableEntry, VersionEdit};
use crate::options::Options;
use crate::table::{Table, TableBuilder};
use crate::types::Value;
use crate::version::table_name;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

const DIR: &str = "/db";

fn options(fs: &MemFs) -> Options {
    let mut o = Options::new(DIR);
    o.fs = Arc::new(fs.clone());
    o.memtable_size = 1 << 20;
    o.table_file_size = 32 * 1024;
    o.base_level_size = 64 * 1024;
    o.level_size_multiplier = 4;
    o.l0_compaction_trigger = 4;
    o
}

fn inline(v: &str) -> Value {
    Value::Inline(Bytes::copy_from_slice(v.as_bytes()))
}

/// Writes a table holding `entries` (in key order) and adds it at `level`
/// through the manifest.
fn add_table(shared: &Arc<Shared>, level: u32, entries: &[(&str, Value)]) -> Result<()> {
    let n = shared.vs.lock().new_file_number();
    let path = shared.path(&table_name(n));
    let mut b = TableBuilder::create(&shared.fs, &path, n)?;
    b.note_seqs(crate::table::SeqRange::at(n));
    for (k, v) in entries {
        b.add(k.as_bytes(), v)?;
    }
    let m = b.finish()?;
    shared
        .fs
        .sync_dir(&shared.dir)
        .ctx(|| "sync dir".to_string())?;
    let t = Table::open(&shared.fs, &path, n)?;
    let edit = VersionEdit {
        added_tables: vec![TableEntry {
            level,
            number: n,
            file_size: m.file_size,
            entries: m.entries,
            smallest: m.smallest,
            largest: m.largest,
        }],
        ..VersionEdit::default()
    };
    let mut vs = shared.vs.lock();
    shared.log_and_apply(&mut vs, edit, &[t], &[])
}

fn get(db: &Db, k: &str) -> Option<String> {
    db.get(k.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn assert_newest(db: &Db, when: &str) {
    assert_eq!(
        get(db, "a").as_deref(),
        Some("new"),
        "overwritten key {when}"
    );
    assert_eq!(get(db, "b"), None, "deleted key {when}");
    assert_eq!(get(db, "c").as_deref(), Some("old"), "untouched key {when}");
    assert_eq!(get(db, "z").as_deref(), Some("last"), "{when}");
}

/// Regression: `Db::compact` moved level 0 to the base level even when a
/// level above the base still held older versions of its keys; reads then
/// returned the older value, and the tombstone was dropped as if nothing
/// lay below it.
#[test]
fn forced_level0_compaction_keeps_newer_data_above_older() {
    let fs = MemFs::new();
    let db = Db::open(options(&fs)).unwrap();
    let shared = db.inner.shared.clone();
    {
        // No background compaction may tidy the levels meanwhile.
        let _one_at_a_time = shared.compaction_lock.lock();
        // A tiny last level keeps the base level at 6, while level 5
        // still holds older versions (as after the last level shrank).
        add_table(&shared, 6, &[("z", inline("last"))]).unwrap();
        add_table(
            &shared,
            5,
            &[
                ("a", inline("old")),
                ("b", inline("old")),
                ("c", inline("old")),
            ],
        )
        .unwrap();
        db.put(b"a", b"new").unwrap();
        db.delete(b"b").unwrap();
        db.flush().unwrap();
        assert_eq!(shared.super_version().version.levels[0].len(), 1);
        assert_newest(&db, "before the compaction");
        crate::compaction::run_forced_l0_locked(&shared).unwrap();
        assert!(shared.super_version().version.levels[0].is_empty());
        assert_newest(&db, "after level 0 was compacted");
    }
    db.compact().unwrap();
    assert_newest(&db, "after a full compaction");
    db.close().unwrap();
    drop(db);
    let db = Db::open(options(&fs)).unwrap();
    assert_newest(&db, "after reopening");
    db.close().unwrap();
}

/// The tables the manifest `CURRENT` names describes, by number.
fn tables_named_by_current(fs: &MemFs) -> BTreeMap<u64, u32> {
    let fsr: crate::fs::FsRef = Arc::new(fs.clone());
    let dir = std::path::Path::new(DIR);
    let name = read_current(&fsr, dir).unwrap().unwrap();
    let (edits, _) = read_manifest(&fsr, &dir.join(name)).unwrap();
    let mut live = LiveFiles::default();
    for e in edits {
        live.apply(e).unwrap();
    }
    live.tables.values().map(|t| (t.number, t.level)).collect()
}

/// Regression: when the directory fsync after `CURRENT` was renamed
/// failed, `CURRENT` named the new manifest while edits kept going to the
/// old one; after a restart the flushed data (and the log it came from)
/// were gone.
#[test]
fn failed_dir_sync_after_current_rename_keeps_edits_in_the_named_manifest() {
    let fs = MemFs::new();
    let db = Db::open(options(&fs)).unwrap();
    let shared = db.inner.shared.clone();
    db.put(b"a", b"1").unwrap();
    db.flush().unwrap();
    fs.inject(Fault {
        op: FaultOp::SyncDir,
        path_contains: None,
        skip: 0,
        times: Some(1),
        errno: libc::EIO,
    });
    let rolled = {
        let mut vs = shared.vs.lock();
        let v = vs.current.clone();
        let log_number = vs.log_number;
        shared.roll_manifest(&mut vs, &v, log_number)
    };
    assert!(rolled.is_err(), "the directory sync failed");
    // Writes are refused, or their edits reach the manifest CURRENT names.
    let put = db.put(b"b", b"2");
    let flushed = db.flush();
    println!("after the failed roll: put {put:?}, flush {flushed:?}");
    let in_memory: BTreeMap<u64, u32> = shared
        .super_version()
        .version
        .levels
        .iter()
        .flatten()
        .map(|t| (t.entry.number, t.entry.level))
        .collect();
    assert_eq!(
        tables_named_by_current(&fs),
        in_memory,
        "the manifest CURRENT names differs from the live version"
    );
    let after = fs.crash(CrashMode::ProcessKill);
    drop(db);
    let db = Db::open(options(&after)).unwrap();
    assert_eq!(get(&db, "a").as_deref(), Some("1"));
    if put.is_ok() {
        assert_eq!(
            get(&db, "b").as_deref(),
            Some("2"),
            "acknowledged write lost"
        );
    }
    db.close().unwrap();
}

fn log_files(fs: &MemFs) -> Vec<String> {
    use crate::fs::FileSystem;
    let mut logs: Vec<String> = fs
        .list_dir(std::path::Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    logs
}

/// In both durability modes a flushed log is kept and overwritten by a
/// later one while writes come in (less work for the file system than a
/// new file), and dropped once writes pause, so an idle database holds no
/// spare log (in `sync` mode it used to keep one: with its preallocation,
/// 3.0x the live data on disk at rest); the data of recycled logs survives
/// a crash.
#[test]
fn recycles_logs_while_busy_and_keeps_no_spare_when_idle() {
    for durability in [
        crate::options::Durability::Os,
        crate::options::Durability::Sync,
    ] {
        recycles_then_drops_the_spare(durability);
    }
}

fn recycles_then_drops_the_spare(durability: crate::options::Durability) {
    let options = |fs: &MemFs| {
        let mut o = options(fs);
        o.durability = durability;
        o
    };
    let fs = MemFs::new();
    let db = Db::open(options(&fs)).unwrap();
    let shared = db.inner.shared.clone();
    let value = vec![b'v'; 4000];
    let mut recycled = false;
    // Each round fills more than a memtable, so logs rotate and flush.
    for round in 0..6u32 {
        for i in 0..400u32 {
            db.put(format!("k{i:04}").as_bytes(), &value).unwrap();
        }
        db.put(b"round", round.to_string().as_bytes()).unwrap();
        db.flush().unwrap();
        recycled |= !shared.vs.lock().recyclable_logs.is_empty();
    }
    assert!(recycled, "no flushed log was kept for reuse while busy");
    // Recycled logs hold the newest data: it survives a crash.
    let after = fs.crash(CrashMode::ProcessKill);
    let reopened = Db::open(options(&after)).unwrap();
    assert_eq!(get(&reopened, "round").as_deref(), Some("5"));
    assert_eq!(reopened.get(b"k0399").unwrap().as_deref(), Some(&value[..]));
    reopened.close().unwrap();

    // Writes pause: the compaction thread's idle check drops the spare.
    super::idle::pretend_idle(&shared);
    assert!(!shared.recycles_logs());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !shared.vs.lock().recyclable_logs.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the spare log was not removed when idle"
        );
        shared.wake_background();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Only the current log is left (the idle flush may have rotated it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log_files(&fs).len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "logs left when idle: {:?}",
            log_files(&fs)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    db.close().unwrap();
}

/// While writes come in, a blob file is collected only once its dead share
/// reaches the (high) busy threshold; once writes pause, the threshold
/// drops to the idle one, so the database at rest holds little garbage.
/// Collection's own moves are not client writes: they must not end the
/// idle state (or each collection would hold off the next for 5 s).
#[test]
fn idle_database_collects_blob_garbage_below_the_busy_threshold() {
    let fs = MemFs::new();
    let mut o = options(&fs);
    o.blob_gc_threshold = 0.9;
    o.blob_gc_idle_threshold = 0.05;
    let db = Db::open(o).unwrap();
    let shared = db.inner.shared.clone();
    let value = vec![b'v'; 4000];
    for i in 0..200u32 {
        db.put(format!("k{i:04}").as_bytes(), &value).unwrap();
    }
    db.flush().unwrap();
    // A quarter of the first blob file becomes garbage.
    let newer = vec![b'w'; 4000];
    for i in 0..50u32 {
        db.put(format!("k{i:04}").as_bytes(), &newer).unwrap();
    }
    db.flush().unwrap();
    let most_garbage = |s: &Shared| {
        let v = s.vs.lock().current.clone();
        v.blobs
            .values()
            .map(|b| b.garbage_ratio())
            .fold(0.0f64, f64::max)
    };
    assert!(most_garbage(&shared) >= 0.2);
    // Busy: below the busy threshold, nothing is collected.
    for _ in 0..5 {
        *shared.last_write.lock() = std::time::Instant::now();
        shared.wake_background();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(most_garbage(&shared) >= 0.2, "collected while busy");
    assert_eq!(super::gc::threshold(&shared), 0.9);
    // Idle: collected down to the idle threshold.
    super::idle::pretend_idle(&shared);
    assert_eq!(super::gc::threshold(&shared), 0.05);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while most_garbage(&shared) >= 0.05 {
        assert!(
            std::time::Instant::now() < deadline,
            "garbage left when idle: {}",
            most_garbage(&shared)
        );
        shared.wake_background();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        super::idle::is_idle(&shared),
        "blob collection's moves counted as client writes"
    );
    for i in 0..200u32 {
        let want = if i < 50 { &newer } else { &value };
        assert_eq!(
            db.get(format!("k{i:04}").as_bytes()).unwrap().as_deref(),
            Some(&want[..])
        );
    }
    db.close().unwrap();
}

/// Reads keep a database busy (no idle flush or collection while clients
/// read), until no write came for `READS_DEFER_IDLE_MAX`.
#[test]
fn reads_keep_the_database_busy_until_the_reads_cap() {
    use super::idle::{is_idle, pretend_idle, IDLE_FLUSH_AFTER, READS_DEFER_IDLE_MAX};
    use std::time::{Duration, Instant};
    let fs = MemFs::new();
    let db = Db::open(options(&fs)).unwrap();
    let shared = db.inner.shared.clone();
    db.put(b"k", b"v").unwrap();
    pretend_idle(&shared);
    assert!(is_idle(&shared), "no request for 10 s, yet busy");
    // A read in the current round.
    assert_eq!(get(&db, "k").as_deref(), Some("v"));
    assert!(!is_idle(&shared), "idle right after a read");
    // The round ends (the compaction thread's wake-up): still recent.
    shared.reads.backdate(Duration::ZERO);
    assert!(!is_idle(&shared), "idle a moment after a read");
    // Reads 10 s ago, the write too: idle.
    shared.reads.backdate(IDLE_FLUSH_AFTER * 2);
    assert!(is_idle(&shared));
    // Scans and key listings count as reads.
    drop(db.keys().unwrap());
    assert!(!is_idle(&shared), "a key listing did not count as a read");
    shared.reads.backdate(IDLE_FLUSH_AFTER * 2);
    drop(db.scan_prefix(b"").unwrap());
    assert!(!is_idle(&shared), "a scan did not count as a read");
    // Reads all the time, but no write for longer than the cap: idle.
    *shared.last_write.lock() = Instant::now() - READS_DEFER_IDLE_MAX - Duration::from_secs(1);
    assert_eq!(get(&db, "k").as_deref(), Some("v"));
    assert!(
        is_idle(&shared),
        "reads kept the database busy past the cap"
    );
    db.close().unwrap();
}

/// `sync` mode, one client writing one request at a time: once
/// `ALONE_STREAK` syncs in a row covered one request each, the writer
/// syncs its batch itself instead of handing it to the sync stage (two
/// thread switches saved per write). Every acknowledged write is still on
/// disk: a power loss right after keeps them all.
#[test]
fn lone_writer_syncs_its_own_batches_and_loses_nothing_acknowledged() {
    use super::sync_stage::ALONE_STREAK;
    let options = |fs: &MemFs| {
        let mut o = options(fs);
        o.durability = crate::options::Durability::Sync;
        o
    };
    let fs = MemFs::new();
    let db = Db::open(options(&fs)).unwrap();
    let counters = &db.inner.shared.counters;
    let writes = 200u64;
    for i in 0..writes {
        db.put(format!("k{i:04}").as_bytes(), i.to_string().as_bytes())
            .unwrap();
    }
    let by_committer = counters
        .wal_syncs_by_committer
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        by_committer >= writes - ALONE_STREAK as u64 - 1,
        "only {by_committer} of {writes} lone writes were synced by their writer"
    );
    let after = fs.crash(CrashMode::PowerLoss);
    let reopened = Db::open(options(&after)).unwrap();
    for i in 0..writes {
        assert_eq!(
            get(&reopened, &format!("k{i:04}")),
            Some(i.to_string()),
            "acknowledged write {i} lost by a power loss"
        );
    }
    reopened.close().unwrap();
    db.close().unwrap();
}

/// A blob collection's move changes where a value lives, not its bytes, so
/// it leaves the key's cached value in place: every move used to evict its
/// key, and the hot keys of a collected file all missed the cache once
/// more. A client's write after the move still replaces the cached value.
#[test]
fn a_blob_collection_move_keeps_the_moved_key_cached() {
    let fs = MemFs::new();
    let mut o = options(&fs);
    o.blob_gc_threshold = 0.5;
    o.blob_gc_background = false;
    let db = Db::open(o).unwrap();
    let shared = db.inner.shared.clone();
    let key = |i: u32| format!("k{i:04}");
    let value = vec![b'v'; 4000];
    for i in 0..200u32 {
        db.put(key(i).as_bytes(), &value).unwrap();
    }
    db.flush().unwrap();
    let blobs = |s: &Shared| -> Vec<u64> { s.vs.lock().current.blobs.keys().copied().collect() };
    let first = blobs(&shared);
    assert_eq!(first.len(), 1);
    // Three quarters of the first blob file become garbage.
    let newer = vec![b'w'; 4000];
    for i in 50..200u32 {
        db.put(key(i).as_bytes(), &newer).unwrap();
    }
    db.flush().unwrap();
    // The survivors are read from the first blob file into the cache.
    for i in 0..50u32 {
        assert_eq!(
            db.get(key(i).as_bytes()).unwrap().as_deref(),
            Some(&value[..])
        );
    }
    db.compact().unwrap();
    assert!(
        !blobs(&shared).contains(&first[0]),
        "the first blob file was not collected"
    );
    let before = db.stats();
    for i in 0..50u32 {
        assert_eq!(
            db.get(key(i).as_bytes()).unwrap().as_deref(),
            Some(&value[..])
        );
    }
    let after = db.stats();
    assert_eq!(
        after.cache_misses - before.cache_misses,
        0,
        "moved keys were evicted from the cache"
    );
    assert_eq!(after.cache_hits - before.cache_hits, 50);
    db.put(key(0).as_bytes(), b"x").unwrap();
    assert_eq!(
        db.get(key(0).as_bytes()).unwrap().as_deref(),
        Some(&b"x"[..])
    );
    db.close().unwrap();
}
