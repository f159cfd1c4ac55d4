//! Crash simulation: a random workload from 1–3 threads on the in-memory
//! file system, the disk frozen at a random point (the process dies in the
//! middle of a log write, flush, compaction or blob collection), then a
//! crash, a reopen and a check that every acknowledged write survived and
//! nothing else appeared; several rounds on the same data.
//!
//! `crash_os_power_loss_pages_model` checks `os` mode against a `BTreeMap`
//! model under out-of-order writeback: power is lost at a random moment
//! and every unsynced 4 KiB page of every file is kept or lost on its own
//! ([`CrashMode::PowerLossPages`]). Every write acknowledged before the
//! last completed `sync()` must survive with its value, nothing never
//! written may appear, and the database must open (a hole in the unsynced
//! log tail is a normal crash).
//!
//! `ESCABELO_SEED` replays one seed (printed by every test);
//! `ESCABELO_CRASH_ROUNDS` sets the number of crash/reopen rounds (the
//! defaults keep each test to a few seconds; e.g.
//! `ESCABELO_CRASH_ROUNDS=200` for a long run).

mod common;

use bytes::Bytes;
use common::*;
use escabelo_engine::fs::{CrashMode, MemFs};
use escabelo_engine::{Db, Durability};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const KEY_SPACE: usize = 150;

/// What one worker thread did.
struct WorkerResult {
    attempts: Vec<(String, Attempt)>,
    unexpected: Vec<String>,
    acked: u64,
    failed: u64,
}

struct Shared {
    clock: AtomicU64,
    frozen: AtomicBool,
    stop: AtomicBool,
    /// Keys used this round: `0..key_range`.
    key_range: usize,
    /// Start times of the `sync()` calls that returned Ok.
    syncs: parking_lot::Mutex<Vec<u64>>,
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[allow(clippy::too_many_arguments)]
fn worker(
    db: Db,
    fs: MemFs,
    shared: Arc<Shared>,
    seed: u64,
    tid: usize,
    max_ops: usize,
    freeze: Option<(usize, u64)>,
    id_base: u64,
) -> WorkerResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = WorkerResult {
        attempts: Vec::new(),
        unexpected: Vec::new(),
        acked: 0,
        failed: 0,
    };
    for i in 0..max_ops {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if let Some((at, n)) = freeze {
            if i == at {
                fs.freeze_after(n);
                shared.frozen.store(true, Ordering::SeqCst);
            }
        }
        let k = key(rng.gen_range(0..shared.key_range));
        let id = id_base + (tid as u64) * 1_000_000 + i as u64;
        let op = rng.gen_range(0..100);
        let (value, result) = match op {
            0..=69 => {
                let v = make_value(&k, id, random_len(&mut rng));
                let start = shared.tick();
                let r = db.put(k.as_bytes(), &v).map(|_| ());
                (Some((Some(v), start)), r)
            }
            70..=89 => {
                let start = shared.tick();
                let r = db.delete(k.as_bytes()).map(|_| ());
                (Some((None, start)), r)
            }
            90..=95 => (None, db.get(k.as_bytes()).map(|_| ())),
            96..=97 => (None, db.flush()),
            98 => {
                let start = shared.tick();
                let r = db.sync();
                if r.is_ok() {
                    shared.syncs.lock().push(start);
                }
                (None, r)
            }
            _ => (None, db.compact()),
        };
        let is_write = value.is_some();
        if let Some((value, start)) = value {
            let end = shared.tick();
            out.attempts.push((
                k.clone(),
                Attempt {
                    value,
                    start,
                    end,
                    acked: result.is_ok(),
                },
            ));
            if result.is_ok() {
                out.acked += 1;
            } else {
                out.failed += 1;
            }
        }
        if let Err(e) = result {
            if shared.frozen.load(Ordering::SeqCst) {
                // The process is dying: stop once writes start failing.
                if is_write {
                    shared.stop.store(true, Ordering::SeqCst);
                }
            } else {
                out.unexpected
                    .push(format!("thread {tid} op {i} ({op}) on {k}: {e}"));
                shared.stop.store(true, Ordering::SeqCst);
            }
        }
    }
    out
}

/// Runs `rounds` rounds of workload, freeze, crash and reopen.
fn crash_rounds(
    seed: u64,
    rounds: usize,
    durability: Durability,
    pick: fn(&mut SmallRng) -> CrashMode,
    durable_only_after_sync: bool,
) {
    println!("seed {seed} ({durability}, {rounds} rounds)");
    let all_keys: Vec<String> = (0..KEY_SPACE).map(key).collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut fs = MemFs::new();
    let mut history = History::from_state(&BTreeMap::new(), &all_keys);
    let mut total_acked = 0;
    for round in 0..rounds {
        if round > 0 && rng.gen_bool(0.3) {
            // Die again during recovery (log replay, the flush of the
            // replayed memtables, orphan deletion, manifest roll).
            let n = rng.gen_range(0..60);
            let mode = pick(&mut rng);
            println!("round {round}: crash during recovery after {n} ops, {mode:?}");
            fs.freeze_after(n);
            let opts = small_options(&fs, durability);
            let opened = with_timeout(30, "open on a dying disk", move || Db::open(opts));
            if let Ok(db) = &opened {
                std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(0..30)));
                let _ = db.put(b"k0000", b"never acknowledged?");
            }
            let next = fs.crash(mode);
            if let Ok(db) = opened {
                // The put above may or may not have been acknowledged.
                with_timeout(30, "close of the crashed engine", move || {
                    let _ = db.close();
                });
            }
            // Whatever that put did, it was attempted after everything
            // else: allow it without requiring it.
            history.merge(vec![(
                key(0),
                Attempt {
                    value: Some(b"never acknowledged?".to_vec()),
                    start: u64::MAX - 1,
                    end: u64::MAX - 1,
                    acked: false,
                },
            )]);
            fs = next;
        }
        let opts = small_options(&fs, durability);
        let db = with_timeout(30, "open", move || Db::open(opts))
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: reopen failed: {e}"));
        let state = verify(
            &db,
            &history,
            &all_keys,
            &format!("seed {seed} round {round} after reopen"),
        );
        history = History::from_state(&state, &all_keys);

        let threads = rng.gen_range(1..=3usize);
        let max_ops = rng.gen_range(200..1200usize);
        let freeze_at = rng.gen_range(0..max_ops);
        let freeze_n = match rng.gen_range(0..4) {
            0 => rng.gen_range(0..10),
            1 => rng.gen_range(0..100),
            2 => rng.gen_range(0..400),
            _ => rng.gen_range(0..3000),
        };
        let mode = pick(&mut rng);
        println!(
            "round {round}: {} keys live, {threads} thread(s), {max_ops} ops, freeze after {freeze_n} more ops at op {freeze_at}, {mode:?}",
            state.len()
        );
        // Sometimes a few hot keys, for races between writers of one key.
        let key_range = if rng.gen_bool(0.3) { 8 } else { KEY_SPACE };
        let shared = Arc::new(Shared {
            clock: AtomicU64::new(0),
            frozen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            key_range,
            syncs: parking_lot::Mutex::new(Vec::new()),
        });
        let handles: Vec<_> = (0..threads)
            .map(|tid| {
                let db = db.clone();
                let fs = fs.clone();
                let shared = shared.clone();
                let wseed = rng.gen();
                let freeze = (tid == 0).then_some((freeze_at, freeze_n));
                let id_base = (round as u64 + 1) * 10_000_000;
                std::thread::spawn(move || {
                    worker(db, fs, shared, wseed, tid, max_ops, freeze, id_base)
                })
            })
            .collect();
        let mut unexpected = Vec::new();
        let (mut acked, mut failed) = (0, 0);
        let mut results = Vec::new();
        for h in handles {
            results.push(with_timeout(60, "workload thread", move || {
                h.join().unwrap()
            }));
        }
        // Without fsync per write, only what a successful sync() started
        // after is guaranteed: later acknowledgements count as attempts.
        let synced_before = shared.syncs.lock().iter().copied().max().unwrap_or(0);
        for mut r in results {
            if durable_only_after_sync {
                for (_, a) in &mut r.attempts {
                    a.acked &= a.end < synced_before;
                }
            }
            history.merge(r.attempts);
            unexpected.extend(r.unexpected);
            acked += r.acked;
            failed += r.failed;
        }
        total_acked += acked;
        println!(
            "round {round}: {acked} writes acknowledged, {failed} failed, {} mutating ops, stats {:?}",
            fs.mutating_ops(),
            db.stats()
        );
        assert!(
            unexpected.is_empty(),
            "seed {seed} round {round}: errors before the disk froze: {unexpected:?}"
        );
        // The process dies: only what the disk kept survives.
        let next = fs.crash(mode);
        // Stop the dead engine's threads (on the old, frozen file system).
        with_timeout(30, "close of the crashed engine", move || {
            let _ = db.close();
        });
        fs = next;
    }
    let opts = small_options(&fs, durability);
    let db = Db::open(opts).unwrap_or_else(|e| panic!("seed {seed}: final reopen failed: {e}"));
    verify(
        &db,
        &history,
        &all_keys,
        &format!("seed {seed} final reopen"),
    );
    db.close().unwrap();
    assert!(total_acked > 0, "seed {seed}: nothing was acknowledged");
}

fn power_loss(rng: &mut SmallRng) -> CrashMode {
    match rng.gen_range(0..3) {
        0 => CrashMode::PowerLoss,
        1 => CrashMode::PowerLossTorn { seed: rng.gen() },
        _ => CrashMode::PowerLossPages { seed: rng.gen() },
    }
}

fn process_kill(_: &mut SmallRng) -> CrashMode {
    CrashMode::ProcessKill
}

#[test]
fn crash_sync_power_loss() {
    crash_rounds(
        seed_from_env(),
        rounds_from_env(10),
        Durability::Sync,
        power_loss,
        false,
    );
}

#[test]
fn crash_os_process_kill() {
    crash_rounds(
        seed_from_env(),
        rounds_from_env(10),
        Durability::Os,
        process_kill,
        false,
    );
}

/// `Durability::Os` with power loss: only writes acknowledged before a
/// successful `sync()` started are guaranteed.
#[test]
fn crash_os_power_loss_after_sync() {
    crash_rounds(
        seed_from_env(),
        rounds_from_env(10),
        Durability::Os,
        power_loss,
        true,
    );
}

/// See the module doc: `os` mode, one writer, power lost at a random
/// moment with out-of-order writeback of the unsynced pages, checked
/// against a model of what the last completed `sync()` covered.
#[test]
fn crash_os_power_loss_pages_model() {
    let seed = seed_from_env();
    let rounds = rounds_from_env(12);
    println!("seed {seed} ({rounds} rounds)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let all_keys: Vec<String> = (0..KEY_SPACE).map(key).collect();
    let mut fs = MemFs::new();
    // What the database holds after the last verified open.
    let mut state: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Values a key may hold after the crash besides `synced`: those
    // written after the last completed sync (None = deleted).
    let mut synced = state.clone();
    let mut since_sync: BTreeMap<String, Vec<Option<Vec<u8>>>> = BTreeMap::new();
    let mut total_dropped = 0u64;
    for round in 0..=rounds {
        let mut o = small_options(&fs, Durability::Os);
        o.wal_sync_interval = std::time::Duration::from_millis(rng.gen_range(1..40));
        let db = with_timeout(30, "open", move || Db::open(o)).unwrap_or_else(|e| {
            panic!("seed {seed} round {round}: open after a power loss failed: {e}")
        });
        let stats = db.stats();
        total_dropped += stats.wal_dropped_records;
        let mut problems = Vec::new();
        state.clear();
        for k in &all_keys {
            let got = match db.get(k.as_bytes()) {
                Ok(v) => v.map(|b| b.to_vec()),
                Err(e) => {
                    problems.push(format!("get {k}: {e}"));
                    continue;
                }
            };
            let want = synced.get(k);
            let later = since_sync.get(k).map(Vec::as_slice).unwrap_or(&[]);
            if got.as_ref() != want && !later.iter().any(|v| v.as_ref() == got.as_ref()) {
                problems.push(format!(
                    "{k}: got {}, synced {}, {} later writes",
                    got.as_deref().map_or("absent".into(), describe_value),
                    want.map_or("absent".into(), |v| describe_value(v)),
                    later.len()
                ));
            }
            if let Some(v) = got {
                state.insert(k.clone(), v);
            }
        }
        assert!(
            problems.is_empty(),
            "seed {seed} round {round} (dropped {} records, {} bytes at open): {} problems:\n{}",
            stats.wal_dropped_records,
            stats.wal_dropped_bytes,
            problems.len(),
            problems[..problems.len().min(10)].join("\n")
        );
        if round == rounds {
            db.close().unwrap();
            break;
        }
        synced = state.clone();
        since_sync.clear();
        // Writes, with sync() now and then, then power is lost at once.
        let ops = rng.gen_range(50..600);
        let key_range = if rng.gen_bool(0.3) { 10 } else { KEY_SPACE };
        let mut model = state.clone();
        for i in 0..ops {
            let k = key(rng.gen_range(0..key_range));
            let id = (round as u64 + 1) * 1_000_000 + i as u64;
            match rng.gen_range(0..100) {
                0..=74 => {
                    let v = make_value(&k, id, random_len(&mut rng));
                    db.put(k.as_bytes(), &v).unwrap();
                    since_sync
                        .entry(k.clone())
                        .or_default()
                        .push(Some(v.clone()));
                    model.insert(k, v);
                }
                75..=92 => {
                    db.delete(k.as_bytes()).unwrap();
                    since_sync.entry(k.clone()).or_default().push(None);
                    model.remove(&k);
                }
                93..=97 => {
                    db.sync().unwrap();
                    synced = model.clone();
                    since_sync.clear();
                }
                _ => db.flush().unwrap(),
            }
        }
        let mode = CrashMode::PowerLossPages { seed: rng.gen() };
        println!(
            "round {round}: {ops} ops, {} keys, {} written since the last sync, {mode:?}",
            model.len(),
            since_sync.len()
        );
        let next = fs.crash(mode);
        with_timeout(30, "close of the crashed engine", move || {
            let _ = db.close();
        });
        fs = next;
    }
    println!("{total_dropped} log records dropped over all rounds");
}

/// The writes of one transaction survive a power loss together or not at
/// all, whatever part of the unsynced log the crash keeps.
#[test]
fn txn_writes_survive_a_crash_all_or_none() {
    use escabelo_engine::{Txn, TxnAction, TxnOp};
    let seed = seed_from_env();
    let mut rng = SmallRng::seed_from_u64(seed);
    for round in 0..rounds_from_env(6) {
        let fs = MemFs::new();
        let mut o = small_options(&fs, Durability::Os);
        // Nothing is synced but what the test syncs.
        o.wal_sync_interval = std::time::Duration::from_secs(3600);
        o.memtable_size = 4 << 20;
        let db = Db::open(o.clone()).unwrap();
        let n = 60;
        for i in 0..n {
            let ops = (0..3)
                .map(|j| {
                    let k = format!("t{i:03}:{j}");
                    let v = make_value(&k, i as u64, rng.gen_range(10..3000));
                    TxnOp::new(Bytes::from(k), TxnAction::Put(Bytes::from(v)))
                })
                .collect();
            db.txn(Txn {
                ops,
                all_or_nothing: false,
            })
            .unwrap();
            if i == n / 3 {
                db.sync().unwrap();
            }
        }
        let mode = match round % 2 {
            0 => CrashMode::PowerLossTorn { seed: rng.gen() },
            _ => CrashMode::PowerLossPages { seed: rng.gen() },
        };
        let after = fs.crash(mode);
        drop(db);
        let mut o2 = o.clone();
        o2.fs = std::sync::Arc::new(after);
        let db = Db::open(o2).unwrap();
        for i in 0..n {
            let present: Vec<bool> = (0..3)
                .map(|j| {
                    let k = format!("t{i:03}:{j}");
                    match db.get(k.as_bytes()).unwrap() {
                        Some(v) => {
                            assert_eq!(v, make_value(&k, i as u64, v.len()), "seed {seed}");
                            true
                        }
                        None => false,
                    }
                })
                .collect();
            assert!(
                present.iter().all(|&p| p) || present.iter().all(|&p| !p),
                "seed {seed} round {round} ({mode:?}): txn {i} half applied: {present:?}"
            );
            if i <= n / 3 {
                assert!(present[0], "seed {seed}: txn {i} lost although synced");
            }
        }
    }
}

/// Regression test: blob collection dropped a file whose records were all
/// dead without syncing the log first. A record is dead because its key
/// has a newer write; in `os` mode that write may not be durable yet, and
/// a power cut after the manifest edit left the key pointing into the
/// removed file (`crash_os_power_loss_after_sync` found it once, seed
/// 5932205928080956018). The sync thread here waits an hour, so only the
/// collection's own sync can make the newer writes durable.
#[test]
fn blob_collection_that_moves_nothing_syncs_before_it_drops_the_file() {
    with_timeout(60, "collection without moves", || {
        let fs = MemFs::new();
        let mut o = small_options(&fs, Durability::Os);
        o.wal_sync_interval = std::time::Duration::from_secs(3600);
        o.blob_gc_background = false;
        o.blob_gc_threshold = 0.4;
        o.blob_gc_idle_threshold = 0.4;
        let value = |i: usize, gen: u64| make_value(&key(i), gen, 2 * BLOB_THRESHOLD);
        let db = Db::open(o.clone()).unwrap();
        for i in 0..10 {
            db.put(key(i).as_bytes(), &value(i, 0)).unwrap();
        }
        db.flush().unwrap();
        // Half of the first blob file becomes garbage, counted by a flush.
        for i in 0..5 {
            db.put(key(i).as_bytes(), &value(i, 1)).unwrap();
        }
        db.flush().unwrap();
        // The other half dies to writes only the memtable and the unsynced
        // log hold: the collection finds nothing live and moves nothing.
        for i in 5..10 {
            db.put(key(i).as_bytes(), &value(i, 2)).unwrap();
        }
        let before = db.stats().blob_gcs;
        db.compact().unwrap();
        assert!(
            db.stats().blob_gcs > before,
            "the first blob file was not collected"
        );
        let after = fs.crash(CrashMode::PowerLoss);
        drop(db);
        let mut o2 = o.clone();
        o2.fs = Arc::new(after);
        let db = Db::open(o2).unwrap();
        for i in 0..10 {
            let want = value(i, if i < 5 { 1 } else { 2 });
            match db.get(key(i).as_bytes()) {
                Ok(Some(v)) => assert!(
                    v[..] == want[..],
                    "{}: {} after the power cut, written {}",
                    key(i),
                    describe_value(&v),
                    describe_value(&want)
                ),
                other => panic!("{}: {other:?} after the power cut", key(i)),
            }
        }
    });
}
