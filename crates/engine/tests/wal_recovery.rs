//! Nothing reverts silently: how log damage is told apart from a crash.
//!
//! - After a clean close ([`Db::close`]) every bad record of a log is
//!   corruption: the open fails naming the log and `tools::check` reports a
//!   problem, never an older value.
//! - After a crash only the unsynced tail of the log may be dropped (a torn
//!   record, or a hole left by out-of-order writeback followed by records);
//!   the open succeeds and counts what it dropped in [`Stats`]. Damage in
//!   data that was synced is corruption.
//! - A failed log preallocation (full disk, `sync` mode) leaves no file
//!   behind.
//!
//! The log layout these tests parse is the one in `wal/mod.rs`.

mod common;

use common::*;
use escabelo_engine::fs::{CrashMode, MemFs};
use escabelo_engine::{tools, Db, Durability, Error, Options};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bit 31 of a record's length field marks a control record (wal/mod.rs).
const CONTROL_FLAG: u32 = 1 << 31;
/// Control record kinds (wal/mod.rs).
const KIND_END: u8 = 2;
const KIND_END_COPY: u8 = 3;

/// One record of a log: its byte range and, for a control record, its
/// kind.
#[derive(Debug, Clone, Copy)]
struct Rec {
    start: u64,
    end: u64,
    control: Option<u8>,
}

/// The records of a log segment, up to the end-marker copy or the first
/// record that does not parse.
fn log_layout(data: &[u8], number: u64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 12 <= data.len() {
        let raw = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap());
        let n = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap());
        let len = (raw & !CONTROL_FLAG) as usize;
        if len == 0 || n != number as u32 || off + 12 + len > data.len() {
            break;
        }
        let control = (raw & CONTROL_FLAG != 0).then(|| data[off + 12]);
        out.push(Rec {
            start: off as u64,
            end: (off + 12 + len) as u64,
            control,
        });
        off += 12 + len;
        if control == Some(KIND_END_COPY) {
            break;
        }
    }
    out
}

fn log_number(path: &Path) -> u64 {
    path.file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".log")
        .parse()
        .unwrap()
}

/// The log segments of the database, by number.
fn logs(fs: &MemFs) -> Vec<PathBuf> {
    let mut l: Vec<PathBuf> = fs
        .list_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .collect();
    l.sort();
    l
}

/// Options for a database whose writes all stay in one log segment.
fn one_segment_options(fs: &MemFs, durability: Durability) -> Options {
    let mut o = small_options(fs, durability);
    o.memtable_size = 4 << 20;
    // No sync thread round during a test (it wakes only on its interval
    // and at close).
    o.wal_sync_interval = Duration::from_secs(3600);
    o
}

/// Puts `n` inline values over 12 keys (so most keys have older values a
/// dropped record would revert to) and a few deletes; returns the model.
fn write_some(db: &Db, model: &mut BTreeMap<String, Vec<u8>>, from: u64, n: u64) {
    for id in from..from + n {
        let k = key((id % 12) as usize);
        if id % 9 == 8 {
            if db.delete(k.as_bytes()).unwrap() {
                model.remove(&k);
            }
        } else {
            let v = make_value(&k, id, 20 + (id as usize * 7) % 90);
            db.put(k.as_bytes(), &v).unwrap();
            model.insert(k, v);
        }
    }
}

/// Every key of the model (and a few never written) reads back exactly.
fn differences(db: &Db, model: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..14 {
        let k = key(i);
        match db.get(k.as_bytes()) {
            Ok(got) => {
                if got.as_deref() != model.get(&k).map(|v| v.as_slice()) {
                    out.push(format!(
                        "{k}: got {:?}, want {:?}",
                        got.as_deref().map(describe_value),
                        model.get(&k).map(|v| describe_value(v))
                    ));
                }
            }
            Err(e) => out.push(format!("{k}: error {e}")),
        }
    }
    out
}

fn names(e: &Error, file: &Path) -> bool {
    matches!(e, Error::Corruption { file: f, .. } if f.file_name() == file.file_name())
}

/// A database closed cleanly after `n` writes: its file system, model and
/// current log.
fn closed(durability: Durability, n: u64) -> (MemFs, BTreeMap<String, Vec<u8>>, PathBuf) {
    let fs = MemFs::new();
    let db = Db::open(one_segment_options(&fs, durability)).unwrap();
    let mut model = BTreeMap::new();
    write_some(&db, &mut model, 0, n);
    db.close().unwrap();
    drop(db);
    let log = logs(&fs).pop().unwrap();
    (fs, model, log)
}

/// Flips bytes in every region of the current log of a cleanly closed
/// database: headers and payloads of the first, middle and last records,
/// the sync points between them and the end marker. Each flip must make
/// the open fail with a corruption error naming the log, and `check`
/// report a problem. The one exception is the end marker's copy, the very
/// last bytes written: the data is intact and reads back exactly.
fn clean_close_flips(durability: Durability) {
    let (fs, model, log) = closed(durability, 40);
    let data = fs.read_file(&log).unwrap();
    let recs = log_layout(&data, log_number(&log));
    println!("{}: {} bytes, records {recs:?}", log.display(), data.len());
    // (On a copy: an open replays and may flush the log.)
    let opts = one_segment_options(&fs.crash(CrashMode::ProcessKill), durability);
    let report = tools::check(&opts).unwrap();
    assert!(report.is_ok(), "undamaged: {report}");
    {
        let db = Db::open(opts).unwrap();
        assert_eq!(differences(&db, &model), Vec::<String>::new());
        db.close().unwrap();
    }
    let data_recs: Vec<&Rec> = recs.iter().filter(|r| r.control.is_none()).collect();
    assert!(data_recs.len() >= 30);
    let sync_points: Vec<u64> = recs
        .iter()
        .filter(|r| r.control.is_some_and(|k| k < KIND_END))
        .map(|r| r.start)
        .collect();
    let mut offsets = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let every_byte = i == 0
            || r.control.is_some_and(|k| k >= KIND_END)
            || sync_points.first() == Some(&r.start)
            || sync_points.last() == Some(&r.start)
            || r.start == data_recs[data_recs.len() - 1].start
            || i == recs.len() / 2;
        if every_byte {
            offsets.extend(r.start..r.end);
        } else {
            // Header fields and a payload byte.
            offsets.extend([r.start, r.start + 5, r.start + 9, r.end - 1]);
        }
    }
    let copy = recs
        .iter()
        .find(|r| r.control == Some(KIND_END_COPY))
        .map(|r| r.start..r.end);
    let mut failures = Vec::new();
    for off in offsets {
        let xor = 1u8 << (off % 8);
        let crashed = fs.crash(CrashMode::ProcessKill);
        crashed.corrupt(&log, off, xor).unwrap();
        let opts = one_segment_options(&crashed, durability);
        let harmless = copy.as_ref().is_some_and(|c| c.contains(&off));
        match Db::open(opts.clone()) {
            Err(e) => {
                if harmless || !names(&e, &log) {
                    failures.push(format!("@{off}: open failed: {e}"));
                }
            }
            Ok(db) => {
                let diff = differences(&db, &model);
                if !harmless || !diff.is_empty() {
                    failures.push(format!("@{off}: opened; differences {diff:?}"));
                }
                db.close().unwrap();
                drop(db);
                continue;
            }
        }
        let report = tools::check(&opts).unwrap();
        if report.is_ok() {
            failures.push(format!("@{off}: check found nothing:\n{report}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} flips went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn clean_close_flip_in_current_log_is_corruption_os() {
    clean_close_flips(Durability::Os);
}

#[test]
fn clean_close_flip_in_current_log_is_corruption_sync() {
    clean_close_flips(Durability::Sync);
}

/// Writes `synced` values, syncs, writes `unsynced` more (not synced), and
/// kills the process: the state before the damage is applied.
fn crashed(synced: u64, unsynced: u64) -> (MemFs, PathBuf, BTreeMap<String, Vec<u8>>) {
    let fs = MemFs::new();
    let db = Db::open(one_segment_options(&fs, Durability::Os)).unwrap();
    let mut model = BTreeMap::new();
    write_some(&db, &mut model, 0, synced);
    db.sync().unwrap();
    write_some(&db, &mut model, synced, unsynced);
    let crashed = fs.crash(CrashMode::ProcessKill);
    db.close().unwrap();
    let log = logs(&crashed).pop().unwrap();
    (crashed, log, model)
}

/// The model after replaying the records before `cut` only.
fn model_before(fs: &MemFs, log: &Path, cut: u64) -> BTreeMap<String, Vec<u8>> {
    let db_fs = fs.crash(CrashMode::ProcessKill);
    // Rebuild by replaying the writes in order: write_some is
    // deterministic, so the first `k` data records are writes 0..k (a
    // delete of an absent key writes no record, so count records).
    let data = db_fs.read_file(log).unwrap();
    let records = log_layout(&data, log_number(log))
        .iter()
        .filter(|r| r.control.is_none() && r.end <= cut)
        .count() as u64;
    let mut model = BTreeMap::new();
    let mut written = 0;
    let mut id = 0;
    while written < records {
        let k = key((id % 12) as usize);
        if id % 9 == 8 {
            if model.remove(&k).is_some() {
                written += 1;
            }
        } else {
            model.insert(k.clone(), make_value(&k, id, 20 + (id as usize * 7) % 90));
            written += 1;
        }
        id += 1;
    }
    model
}

/// After a crash, a damaged last record (a torn write) is dropped: the
/// open succeeds, its key falls back to its older value and the drop is
/// counted.
#[test]
fn torn_tail_after_crash_is_dropped_and_counted() {
    let (fs, log, model) = crashed(20, 10);
    let data = fs.read_file(&log).unwrap();
    let recs = log_layout(&data, log_number(&log));
    let last = *recs.iter().rev().find(|r| r.control.is_none()).unwrap();
    fs.corrupt(&log, last.end - 1, 0x40).unwrap();
    // (Before the open, which may flush the log away.)
    let want = model_before(&fs, &log, last.start);
    let db = Db::open(one_segment_options(&fs, Durability::Os)).unwrap();
    assert_ne!(want, model, "the last record changed something");
    assert_eq!(differences(&db, &want), Vec::<String>::new());
    let s = db.stats();
    assert_eq!(s.wal_dropped_records, 1, "{s:?}");
    assert_eq!(s.wal_dropped_bytes, last.end - last.start, "{s:?}");
    db.close().unwrap();
    drop(db);
    // Recovery sealed the log where its records end: no more drops, and
    // check is content.
    let db = Db::open(one_segment_options(&fs, Durability::Os)).unwrap();
    assert_eq!(db.stats().wal_dropped_records, 0);
    assert_eq!(differences(&db, &want), Vec::<String>::new());
    db.close().unwrap();
    drop(db);
    let report = tools::check(&one_segment_options(&fs, Durability::Os)).unwrap();
    assert!(report.is_ok(), "{report}");
}

/// After a crash, a hole in the unsynced tail followed by valid records
/// (out-of-order writeback) is a normal crash: everything from the hole on
/// is dropped and counted, and the database opens.
#[test]
fn hole_in_unsynced_tail_is_dropped_not_corruption() {
    let (fs, log, _model) = crashed(20, 20);
    let data = fs.read_file(&log).unwrap();
    let recs = log_layout(&data, log_number(&log));
    let data_recs: Vec<Rec> = recs
        .iter()
        .filter(|r| r.control.is_none())
        .copied()
        .collect();
    // The 25th record: after the sync, with 15 records after it.
    let hole = data_recs[24];
    fs.corrupt(&log, hole.start + 13, 0x01).unwrap();
    let opts = one_segment_options(&fs, Durability::Os);
    let want = model_before(&fs, &log, hole.start);
    let db = Db::open(opts.clone()).unwrap_or_else(|e| panic!("hole in the unsynced tail: {e}"));
    assert_eq!(differences(&db, &want), Vec::<String>::new());
    let s = db.stats();
    let after: Vec<&Rec> = recs.iter().filter(|r| r.start >= hole.start).collect();
    assert_eq!(
        s.wal_dropped_records,
        after.iter().filter(|r| r.control.is_none()).count() as u64,
        "{s:?}"
    );
    assert_eq!(s.wal_dropped_bytes, after.last().unwrap().end - hole.start);
    db.close().unwrap();
}

/// After a crash, damage before the last sync point (data that was synced)
/// is corruption, not a torn tail.
#[test]
fn damage_in_synced_part_after_crash_is_corruption() {
    let (fs, log, _model) = crashed(20, 20);
    let data = fs.read_file(&log).unwrap();
    let recs = log_layout(&data, log_number(&log));
    let data_recs: Vec<Rec> = recs
        .iter()
        .filter(|r| r.control.is_none())
        .copied()
        .collect();
    let target = data_recs[10];
    fs.corrupt(&log, target.start + 13, 0x01).unwrap();
    let opts = one_segment_options(&fs, Durability::Os);
    match Db::open(opts.clone()) {
        Err(e) => {
            assert!(names(&e, &log), "{e}");
            assert!(
                e.to_string().contains(&format!("offset {}", target.start)),
                "{e}"
            );
        }
        Ok(db) => panic!("opened over damaged synced data: {:?}", db.stats()),
    }
    assert!(!tools::check(&opts).unwrap().is_ok());
}

/// Regression: "A failed log preallocation leaves its file behind on every
/// retry (full disk, `sync` mode)". The disk fills up; every rotation
/// tries to preallocate a new log and fails. No log file may pile up.
#[test]
fn failed_log_preallocation_leaves_no_file() {
    let fs = MemFs::new();
    let mut o = small_options(&fs, Durability::Sync);
    o.wal_preallocate = true;
    let db = Db::open(o).unwrap();
    let before = logs(&fs).len();
    // Room for the current log (preallocated) and a little more, not for
    // another preallocated log.
    fs.set_capacity(Some(fs.total_bytes() + 48 * 1024));
    let mut errors = 0;
    for id in 0..400u64 {
        let k = key((id % 50) as usize);
        if db.put(k.as_bytes(), &make_value(&k, id, 300)).is_err() {
            errors += 1;
        }
        assert!(
            logs(&fs).len() <= before + 1,
            "after write {id}: log files {:?}",
            logs(&fs)
        );
    }
    println!("{errors} writes failed; logs {:?}", logs(&fs));
    fs.set_capacity(None);
    db.close().ok();
}

/// A segment frozen when its memtable filled, still unflushed at a clean
/// close (table writes fail), was sealed when it was frozen: a flip in its
/// last record is corruption, not a torn tail.
#[test]
fn frozen_segment_flip_is_corruption() {
    use escabelo_engine::fs::{Fault, FaultOp};
    let fs = MemFs::new();
    let mut o = small_options(&fs, Durability::Os);
    o.wal_sync_interval = Duration::from_secs(3600);
    let db = Db::open(o.clone()).unwrap();
    fs.inject(Fault {
        op: FaultOp::Open,
        path_contains: Some(".sst".into()),
        skip: 0,
        times: None,
        errno: libc::EIO,
    });
    let mut model = BTreeMap::new();
    let mut id = 0u64;
    // Fill the 64 KiB memtable so it is frozen (and its flush fails).
    while logs(&fs).len() < 2 {
        let k = key((id % 12) as usize);
        let v = make_value(&k, id, 300);
        db.put(k.as_bytes(), &v).unwrap();
        model.insert(k, v);
        id += 1;
        assert!(id < 10_000, "no rotation");
    }
    write_some(&db, &mut model, id, 5);
    db.close().unwrap();
    drop(db);
    fs.clear_faults();
    let frozen = logs(&fs).remove(0);
    let data = fs.read_file(&frozen).unwrap();
    let recs = log_layout(&data, log_number(&frozen));
    assert_eq!(
        recs.last().unwrap().control,
        Some(KIND_END_COPY),
        "{recs:?}"
    );
    let last = *recs.iter().rev().find(|r| r.control.is_none()).unwrap();
    for off in [last.start, last.start + 13, last.end - 1] {
        let crashed = fs.crash(CrashMode::ProcessKill);
        crashed.corrupt(&frozen, off, 0x08).unwrap();
        let mut o = small_options(&crashed, Durability::Os);
        o.wal_sync_interval = Duration::from_secs(3600);
        match Db::open(o.clone()) {
            Err(e) => assert!(names(&e, &frozen), "@{off}: {e}"),
            Ok(db) => panic!("@{off}: opened; differences {:?}", differences(&db, &model)),
        }
        assert!(!tools::check(&o).unwrap().is_ok());
    }
}
