//! Injected I/O failures: a full disk (ENOSPC) and failed fsyncs (EIO).
//!
//! `ESCABELO_SEED` replays one seed (printed by every test);
//! `ESCABELO_CRASH_ROUNDS` sets how many rounds the randomized tests run.

mod common;

use common::*;
use escabelo_engine::fs::{CrashMode, Fault, FaultOp, MemFs};
use escabelo_engine::{Db, Durability, Error};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY_SPACE: usize = 400;

fn all_keys() -> Vec<String> {
    (0..KEY_SPACE).map(key).collect()
}

/// Puts `n` random keys; returns the model of what is stored.
fn fill(
    db: &Db,
    rng: &mut SmallRng,
    n: usize,
    id_base: u64,
    model: &mut BTreeMap<String, Vec<u8>>,
) {
    for i in 0..n {
        let k = key(rng.gen_range(0..KEY_SPACE));
        let v = make_value(&k, id_base + i as u64, random_len(rng));
        db.put(k.as_bytes(), &v)
            .unwrap_or_else(|e| panic!("fill put {k}: {e}"));
        model.insert(k, v);
    }
}

/// Checks `db` holds exactly `model`.
fn verify_exact(db: &Db, model: &BTreeMap<String, Vec<u8>>, ctx: &str) {
    let h = History::from_state(model, &all_keys());
    verify(db, &h, &all_keys(), ctx);
}

// ---------------------------------------------------------------------
// Full disk
// ---------------------------------------------------------------------

fn full_disk(seed: u64, durability: Durability) {
    println!("seed {seed} ({durability})");
    let mut rng = SmallRng::seed_from_u64(seed);
    let fs = MemFs::new();
    let db = Db::open(small_options(&fs, durability)).unwrap();
    let mut model = BTreeMap::new();
    fill(&db, &mut rng, 300, 0, &mut model);
    db.flush().unwrap();
    let mut history = History::from_state(&model, &all_keys());
    let slack = match rng.gen_range(0..3) {
        0 => rng.gen_range(0..2_000),
        1 => rng.gen_range(0..20_000),
        _ => rng.gen_range(0..100_000),
    };
    let cap = fs.total_bytes() + slack;
    println!("used {} bytes, capacity {cap}", fs.total_bytes());
    fs.set_capacity(Some(cap));

    // Write until the disk has said "full" many times.
    let clock = AtomicU64::new(1);
    let mut no_space = 0;
    let mut acked_while_full = 0;
    let mut ops = 0;
    let started = Instant::now();
    while no_space < 40 && ops < 4000 {
        ops += 1;
        if no_space == 0 && ops % 1000 == 0 {
            // Blob collection and compaction can keep the data under the
            // capacity (seen in CI: 4000 ops and the disk never filled):
            // take the slack away, so the disk fills whatever they do.
            fs.set_capacity(Some(fs.total_bytes()));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "seed {seed}: writes on a full disk took too long ({ops} ops)"
        );
        let k = key(rng.gen_range(0..KEY_SPACE));
        let id = 1_000_000 + ops as u64;
        let start = clock.fetch_add(1, Ordering::SeqCst);
        let (value, r) = match rng.gen_range(0..100) {
            0..=79 => {
                let v = make_value(&k, id, random_len(&mut rng));
                let r = db.put(k.as_bytes(), &v);
                (Some(v), r)
            }
            80..=94 => (None, db.delete(k.as_bytes()).map(|_| ())),
            95..=97 => {
                let r = db.flush();
                assert!(
                    matches!(r, Ok(()) | Err(Error::NoSpace { .. })),
                    "seed {seed}: flush on a full disk: {r:?}"
                );
                continue;
            }
            _ => {
                let r = db.compact();
                assert!(
                    matches!(r, Ok(()) | Err(Error::NoSpace { .. })),
                    "seed {seed}: compact on a full disk: {r:?}"
                );
                continue;
            }
        };
        let end = clock.fetch_add(1, Ordering::SeqCst);
        match &r {
            Ok(()) => {
                acked_while_full += 1;
                match &value {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(&k),
                };
            }
            Err(Error::NoSpace { .. }) => no_space += 1,
            Err(e) => panic!(
                "seed {seed} op {ops}: a write on a full disk failed with {e:?}, expected NoSpace"
            ),
        }
        history.merge(vec![(
            k.clone(),
            Attempt {
                value,
                start,
                end,
                acked: r.is_ok(),
            },
        )]);
        // What was acknowledged is readable, what failed is not.
        let got = db
            .get(k.as_bytes())
            .unwrap_or_else(|e| panic!("seed {seed}: get {k} on a full disk: {e}"));
        assert_eq!(
            got.as_deref(),
            model.get(&k).map(|v| v.as_slice()),
            "seed {seed} op {ops}: get {k} after a write that returned {r:?}"
        );
    }
    println!(
        "{ops} ops on a full disk: {acked_while_full} acknowledged, {no_space} NoSpace; stats {:?}",
        db.stats()
    );
    assert!(
        no_space > 0,
        "seed {seed}: the disk never filled up (capacity {cap})"
    );
    // Reads keep working on a full disk.
    verify_exact(&db, &model, &format!("seed {seed}: reads on a full disk"));

    // Free space: writes work again without reopening. The flush thread
    // only notices after its retry delay (500 ms), and until then writers
    // blocked on frozen memtables get the stale NoSpace: allow that for a
    // grace period, then require every write to succeed.
    fs.set_capacity(None);
    let freed = Instant::now();
    let grace = Duration::from_secs(2);
    let mut last_no_space = None;
    for i in 0..400u64 {
        let k = key(rng.gen_range(0..KEY_SPACE));
        let v = make_value(&k, 2_000_000 + i, random_len(&mut rng));
        loop {
            match db.put(k.as_bytes(), &v) {
                Ok(()) => break,
                Err(Error::NoSpace { .. }) if freed.elapsed() < grace => {
                    last_no_space = Some(freed.elapsed());
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!(
                    "seed {seed}: write {i} {:?} after space was freed failed: {e:?}",
                    freed.elapsed()
                ),
            }
        }
        model.insert(k, v);
    }
    println!("after space was freed, NoSpace was last returned at {last_no_space:?}");
    db.flush()
        .unwrap_or_else(|e| panic!("seed {seed}: flush after space was freed: {e}"));
    db.compact()
        .unwrap_or_else(|e| panic!("seed {seed}: compact after space was freed: {e}"));
    fill(&db, &mut rng, 50, 3_000_000, &mut model);
    verify_exact(&db, &model, &format!("seed {seed}: after space was freed"));

    // Nothing acknowledged is lost in a crash.
    let mode = if durability == Durability::Sync {
        CrashMode::PowerLoss
    } else {
        CrashMode::ProcessKill
    };
    let fs2 = fs.crash(mode);
    db.close().ok();
    let db = Db::open(small_options(&fs2, durability))
        .unwrap_or_else(|e| panic!("seed {seed}: reopen after the full disk: {e}"));
    verify_exact(&db, &model, &format!("seed {seed}: after crash and reopen"));
    db.close().unwrap();
}

#[test]
fn full_disk_sync() {
    let seed = seed_from_env();
    let rounds = rounds_from_env(4);
    let mut rng = SmallRng::seed_from_u64(seed);
    for _ in 0..rounds {
        let s = rng.gen();
        with_timeout(60, "full disk", move || full_disk(s, Durability::Sync));
    }
}

#[test]
fn full_disk_os() {
    let seed = seed_from_env();
    let rounds = rounds_from_env(4);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x55);
    for _ in 0..rounds {
        let s = rng.gen();
        with_timeout(60, "full disk", move || full_disk(s, Durability::Os));
    }
}

// ---------------------------------------------------------------------
// Failed fsync of the log
// ---------------------------------------------------------------------

fn eio_fault(path: &str, skip: u64, times: Option<u64>) -> Fault {
    Fault {
        op: FaultOp::Sync,
        path_contains: Some(path.into()),
        skip,
        times,
        errno: libc::EIO,
    }
}

/// One writer, sync mode: the write whose log fsync fails is not
/// acknowledged, every later write is refused with ReadOnly, reads work.
#[test]
fn log_fsync_eio_makes_read_only() {
    let seed = seed_from_env();
    println!("seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let fs = MemFs::new();
    let db = Db::open(small_options(&fs, Durability::Sync)).unwrap();
    let mut model = BTreeMap::new();
    fill(&db, &mut rng, 500, 0, &mut model);
    // One failure only: the engine must not retry the fsync and carry on.
    fs.inject(eio_fault(".log", 0, Some(1)));
    let v = make_value("k0001", 9_000_000, 1000);
    let r = db.put(b"k0001", &v);
    assert!(
        r.is_err(),
        "seed {seed}: a put whose fsync failed was acknowledged"
    );
    println!("put with failed fsync: {r:?}");
    for i in 0..20 {
        let k = key(rng.gen_range(0..KEY_SPACE));
        let r = if i % 3 == 0 {
            db.delete(k.as_bytes()).map(|_| ())
        } else {
            db.put(k.as_bytes(), b"after the failure")
        };
        assert!(
            matches!(r, Err(Error::ReadOnly(_))),
            "seed {seed}: write {i} after a failed fsync returned {r:?}, expected ReadOnly"
        );
    }
    // Reads still work: everything acknowledged, and the failed put either
    // visible or not (it never was acknowledged).
    let mut h = History::from_state(&model, &all_keys());
    h.merge(vec![(
        "k0001".into(),
        Attempt {
            value: Some(v),
            start: 1,
            end: 2,
            acked: false,
        },
    )]);
    verify(
        &db,
        &h,
        &all_keys(),
        &format!("seed {seed}: reads after EIO"),
    );
    let fs2 = fs.crash(CrashMode::PowerLoss);
    db.close().ok();
    let db = Db::open(small_options(&fs2, Durability::Sync)).unwrap();
    verify(&db, &h, &all_keys(), &format!("seed {seed}: after reopen"));
    // Writable again after reopen.
    db.put(b"k0002", b"again").unwrap();
    assert_eq!(db.get(b"k0002").unwrap().as_deref(), Some(&b"again"[..]));
    db.close().unwrap();
}

/// Many writers in sync mode (group commit) when a log fsync fails at a
/// random point: no write of the failed group or after it is acknowledged,
/// and everything acknowledged survives a power loss.
#[test]
fn log_fsync_eio_group_commit() {
    let seed = seed_from_env();
    let rounds = rounds_from_env(6);
    println!("seed {seed}, {rounds} rounds");
    let mut rng = SmallRng::seed_from_u64(seed);
    for round in 0..rounds {
        let fs = MemFs::new();
        let db = Db::open(small_options(&fs, Durability::Sync)).unwrap();
        let mut model = BTreeMap::new();
        fill(&db, &mut rng, 100, 0, &mut model);
        let skip = rng.gen_range(0..300);
        println!("round {round}: fsync {skip} fails");
        fs.inject(eio_fault(".log", skip, Some(1)));
        let clock = Arc::new(AtomicU64::new(1));
        let failed_at = Arc::new(AtomicU64::new(u64::MAX));
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let db = db.clone();
                let clock = clock.clone();
                let failed_at = failed_at.clone();
                let stop = stop.clone();
                let mut trng = SmallRng::seed_from_u64(rng.gen());
                std::thread::spawn(move || {
                    let mut attempts = Vec::new();
                    let mut errors = Vec::new();
                    for i in 0..400 {
                        if stop.load(Ordering::SeqCst) && i % 50 == 49 {
                            break;
                        }
                        let k = key(trng.gen_range(0..KEY_SPACE));
                        let v =
                            make_value(&k, (t as u64 + 1) * 1_000_000 + i, random_len(&mut trng));
                        let start = clock.fetch_add(1, Ordering::SeqCst);
                        let r = db.put(k.as_bytes(), &v);
                        let end = clock.fetch_add(1, Ordering::SeqCst);
                        if r.is_err() {
                            failed_at.fetch_min(end, Ordering::SeqCst);
                            stop.store(true, Ordering::SeqCst);
                        }
                        if let Err(e) = &r {
                            errors.push(format!("{e}"));
                        }
                        attempts.push((
                            k,
                            Attempt {
                                value: Some(v),
                                start,
                                end,
                                acked: r.is_ok(),
                            },
                        ));
                    }
                    (attempts, errors)
                })
            })
            .collect();
        let mut h = History::from_state(&model, &all_keys());
        let mut all = Vec::new();
        for handle in handles {
            let (a, _) = with_timeout(30, "writer", move || handle.join().unwrap());
            all.extend(a);
        }
        let first_fail = failed_at.load(Ordering::SeqCst);
        if first_fail != u64::MAX {
            // Nothing that started after a write had failed may be acked.
            let late: Vec<_> = all
                .iter()
                .filter(|(_, a)| a.acked && a.start > first_fail)
                .map(|(k, a)| format!("{k} [{}..{}]", a.start, a.end))
                .collect();
            assert!(
                late.is_empty(),
                "seed {seed} round {round}: writes acknowledged after the fsync failure: {late:?}"
            );
            let r = db.put(b"k0000", b"x");
            assert!(
                matches!(r, Err(Error::ReadOnly(_))),
                "seed {seed} round {round}: write after the fsync failure returned {r:?}"
            );
        }
        h.merge(all);
        verify(
            &db,
            &h,
            &all_keys(),
            &format!("seed {seed} round {round}: live"),
        );
        let fs2 = fs.crash(CrashMode::PowerLoss);
        db.close().ok();
        let db = Db::open(small_options(&fs2, Durability::Sync)).unwrap();
        verify(
            &db,
            &h,
            &all_keys(),
            &format!("seed {seed} round {round}: after power loss"),
        );
        db.close().unwrap();
    }
}

/// Os mode: when the background log fsync fails, `sync()` reports it and
/// writes are refused from then on.
#[test]
fn log_fsync_eio_os_mode() {
    let seed = seed_from_env();
    println!("seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let fs = MemFs::new();
    let db = Db::open(small_options(&fs, Durability::Os)).unwrap();
    let mut model = BTreeMap::new();
    fill(&db, &mut rng, 300, 0, &mut model);
    db.sync().unwrap();
    fs.inject(eio_fault(".log", 0, None));
    db.put(b"k0003", b"pending").ok();
    let r = db.sync();
    assert!(
        r.is_err(),
        "seed {seed}: sync() with a failing fsync returned Ok"
    );
    let r = db.put(b"k0004", b"refused");
    assert!(
        matches!(r, Err(Error::ReadOnly(_))),
        "seed {seed}: write after a failed fsync returned {r:?}, expected ReadOnly"
    );
    assert_eq!(
        db.get(b"k0004").unwrap().as_deref(),
        model.get("k0004").map(|v| v.as_slice()),
        "seed {seed}: a refused write is visible"
    );
    db.close().ok();
}

// ---------------------------------------------------------------------
// Failed fsync of table, blob and manifest files
// ---------------------------------------------------------------------

/// A single fsync failure on a table, blob, manifest or CURRENT file at a
/// random point of a busy workload (flushes, compactions, blob GC), then
/// a power loss: nothing acknowledged may be lost, and the engine must
/// still open.
#[test]
fn file_fsync_eio_then_power_loss() {
    let seed = seed_from_env();
    let rounds = rounds_from_env(3);
    println!("seed {seed}, {rounds} rounds");
    let mut rng = SmallRng::seed_from_u64(seed);
    for round in 0..rounds {
        for pattern in [".sst", ".blob", "MANIFEST", "CURRENT", ".log"] {
            let fs = MemFs::new();
            let db = Db::open(small_options(&fs, Durability::Sync)).unwrap();
            let mut model = BTreeMap::new();
            fill(&db, &mut rng, 50, 0, &mut model);
            let skip = rng.gen_range(0..20);
            fs.inject(eio_fault(pattern, skip, Some(1)));
            let mut h = History::from_state(&model, &all_keys());
            let mut errors = BTreeMap::<String, usize>::new();
            let mut acked = 0;
            for i in 0..1500u64 {
                let k = key(rng.gen_range(0..KEY_SPACE));
                let (value, r) = match rng.gen_range(0..100) {
                    0..=79 => {
                        let v = make_value(&k, 1_000_000 + i, random_len(&mut rng));
                        let r = db.put(k.as_bytes(), &v);
                        (Some(Some(v)), r)
                    }
                    80..=94 => (Some(None), db.delete(k.as_bytes()).map(|_| ())),
                    95..=97 => (None, db.flush()),
                    _ => (None, db.compact()),
                };
                if let Err(e) = &r {
                    let kind = format!("{e:?}")
                        .split([' ', '(', '{'])
                        .next()
                        .unwrap_or("")
                        .to_string();
                    *errors.entry(kind).or_default() += 1;
                }
                if let Some(value) = value {
                    acked += r.is_ok() as usize;
                    h.merge(vec![(
                        k,
                        Attempt {
                            value,
                            start: 2 * i + 1,
                            end: 2 * i + 2,
                            acked: r.is_ok(),
                        },
                    )]);
                }
            }
            println!(
                "round {round} {pattern}: fsync {skip} fails; {acked} acked, errors {errors:?}, stats {:?}",
                db.stats()
            );
            verify(
                &db,
                &h,
                &all_keys(),
                &format!("seed {seed} round {round} {pattern}: live"),
            );
            let fs2 = fs.crash(CrashMode::PowerLoss);
            db.close().ok();
            let db = Db::open(small_options(&fs2, Durability::Sync)).unwrap_or_else(|e| {
                panic!("seed {seed} round {round} {pattern}: reopen after power loss: {e}")
            });
            verify(
                &db,
                &h,
                &all_keys(),
                &format!("seed {seed} round {round} {pattern}: after power loss"),
            );
            db.close().unwrap();
        }
    }
}

// ---------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------

/// `Db::close` is documented to release the data directory, so the
/// database can be reopened while the closed handle still exists.
#[test]
fn close_releases_directory_lock() {
    let fs = MemFs::new();
    let opts = small_options(&fs, Durability::Sync);
    let db = Db::open(opts.clone()).unwrap();
    db.put(b"k0000", b"v").unwrap();
    db.close().unwrap();
    let again = Db::open(opts);
    assert!(
        again.is_ok(),
        "reopen after close (handle not yet dropped) failed: {:?}",
        again.err()
    );
    drop(db);
}

/// A flush that fails with EIO (not ENOSPC) must not be reported as a
/// full disk: `Error::NoSpace` tells the caller to free space and retry,
/// which cannot help here.
#[test]
fn flush_eio_is_not_reported_as_disk_full() {
    let fs = MemFs::new();
    let db = Db::open(small_options(&fs, Durability::Sync)).unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut model = BTreeMap::new();
    fill(&db, &mut rng, 50, 0, &mut model);
    fs.inject(eio_fault(".sst", 0, None));
    let r = db.flush();
    println!("flush with failing table fsync: {r:?}");
    assert!(r.is_err(), "flush whose table fsync failed returned Ok");
    assert!(
        !matches!(r, Err(Error::NoSpace { .. })),
        "an EIO during flush was reported as a full disk: {r:?}"
    );
    // Reads keep working, nothing acknowledged is lost.
    verify_exact(&db, &model, "after a failed flush");
    fs.clear_faults();
    db.flush().unwrap();
    verify_exact(&db, &model, "after a successful flush");
    db.close().unwrap();
}

// ---------------------------------------------------------------------
// Read faults in old tables during a flush
// ---------------------------------------------------------------------

/// Writes keys 0..200, flushes them to one table, then damages that
/// table with `damage` and overwrites the same keys: the flush (whose
/// blob accounting looks every key up in the older tables) must succeed,
/// and the new values must be read back.
fn flush_over_unreadable_table(damage: impl FnOnce(&MemFs, &std::path::Path)) {
    let fs = MemFs::new();
    let mut o = small_options(&fs, Durability::Sync);
    o.memtable_size = 4 << 20;
    let db = Db::open(o).unwrap();
    let k = |i: usize| key(i);
    for i in 0..200 {
        let v = make_value(&k(i), i as u64, 600 + i);
        db.put(k(i).as_bytes(), &v).unwrap();
    }
    db.flush().unwrap();
    let table = fs
        .list_files()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".sst"))
        .expect("a table");
    damage(&fs, &table);
    let mut model = BTreeMap::new();
    for i in 0..200 {
        let v = make_value(&k(i), 1000 + i as u64, 700 + i);
        db.put(k(i).as_bytes(), &v).unwrap();
        model.insert(k(i), v);
    }
    db.flush()
        .expect("flush failed because an older table has an unreadable block");
    for (key, v) in &model {
        let got = db.get(key.as_bytes()).unwrap();
        assert_eq!(got.as_deref(), Some(v.as_slice()), "{key}");
    }
    // More writes keep working.
    db.put(b"after", b"x").unwrap();
    db.flush().unwrap();
    drop(db);
}

/// Regression: one corrupt block in an old table made every flush, and so
/// every write, fail (the flush's lookup of the older version failed).
#[test]
fn flush_succeeds_over_an_old_table_with_a_corrupt_block() {
    flush_over_unreadable_table(|fs, table| fs.corrupt(table, 20, 0x5a).unwrap());
}

/// The same with an I/O error on every read of the old table.
#[test]
fn flush_succeeds_over_an_old_table_whose_reads_fail() {
    flush_over_unreadable_table(|fs, table| {
        fs.inject(Fault {
            op: FaultOp::Read,
            path_contains: Some(table.file_name().unwrap().to_string_lossy().into_owned()),
            skip: 0,
            times: None,
            errno: libc::EIO,
        })
    });
}
