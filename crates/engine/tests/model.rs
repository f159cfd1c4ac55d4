//! Randomized model test: the engine against a `BTreeMap`, with random
//! flushes, compactions and reopens, through the real file system.
//!
//! `ESCABELO_MODEL_OPS` sets the number of operations (default a few
//! thousand); `ESCABELO_SEED` replays one seed.

use bytes::Bytes;
use escabelo_engine::{Db, Durability, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

fn ops_from_env(default: usize) -> usize {
    std::env::var("ESCABELO_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn seed_from_env() -> u64 {
    std::env::var("ESCABELO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

fn small_options(dir: &std::path::Path) -> Options {
    let mut o = Options::new(dir);
    o.memtable_size = 64 * 1024;
    o.blob_threshold = Some(512);
    o.blob_file_size = 256 * 1024;
    o.blob_gc_threshold = 0.3;
    o.table_file_size = 32 * 1024;
    o.base_level_size = 64 * 1024;
    o.level_size_multiplier = 4;
    o.l0_compaction_trigger = 2;
    o.cache_size = 256 * 1024;
    o
}

fn value_for(rng: &mut SmallRng, key: &str, version: u64) -> Vec<u8> {
    // Values on both sides of the blob threshold.
    let len = match rng.gen_range(0..10) {
        0..=5 => rng.gen_range(0..300),
        6..=8 => rng.gen_range(300..3000),
        _ => rng.gen_range(3000..20_000),
    };
    let mut v = format!("{key}:{version}:").into_bytes();
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v
}

fn check_all(db: &Db, model: &BTreeMap<String, Vec<u8>>, seed: u64) {
    for (k, v) in model {
        let got = db.get(k.as_bytes()).unwrap();
        assert_eq!(got.as_deref(), Some(v.as_slice()), "seed {seed}: key {k}");
    }
    let keys: Vec<Bytes> = db.keys().unwrap().map(|r| r.unwrap()).collect();
    let want: Vec<&String> = model.keys().collect();
    assert_eq!(keys.len(), want.len(), "seed {seed}: key count");
    for (a, b) in keys.iter().zip(want) {
        assert_eq!(a.as_ref(), b.as_bytes(), "seed {seed}");
    }
}

fn run_model(seed: u64, ops: usize, durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut opts = small_options(dir.path());
    opts.durability = durability;
    let mut db = Db::open(opts.clone()).unwrap();
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let key_space = 300;
    for i in 0..ops {
        let key = format!("k{:04}", rng.gen_range(0..key_space));
        match rng.gen_range(0..100) {
            0..=54 => {
                let v = value_for(&mut rng, &key, i as u64);
                db.put(key.as_bytes(), &v).unwrap();
                model.insert(key, v);
            }
            55..=69 => {
                let existed = db.delete(key.as_bytes()).unwrap();
                assert_eq!(
                    existed,
                    model.remove(&key).is_some(),
                    "seed {seed}: delete {key}"
                );
            }
            70..=89 => {
                let got = db.get(key.as_bytes()).unwrap();
                assert_eq!(
                    got.as_deref(),
                    model.get(&key).map(|v| v.as_slice()),
                    "seed {seed}: get {key} at op {i}"
                );
            }
            90..=94 => {
                let prefix = format!("k{:02}", rng.gen_range(0..3));
                let got: Vec<(Bytes, Bytes)> = db
                    .scan_prefix(prefix.as_bytes())
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                let want: Vec<(&String, &Vec<u8>)> = model
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .collect();
                assert_eq!(got.len(), want.len(), "seed {seed}: scan {prefix}");
                for ((gk, gv), (wk, wv)) in got.iter().zip(want) {
                    assert_eq!(gk.as_ref(), wk.as_bytes(), "seed {seed}");
                    assert_eq!(gv.as_ref(), wv.as_slice(), "seed {seed}");
                }
            }
            95..=96 => db.flush().unwrap(),
            97 => db.compact().unwrap(),
            _ => {
                db.close().unwrap();
                drop(db);
                db = Db::open(opts.clone()).unwrap();
                check_all(&db, &model, seed);
            }
        }
    }
    db.flush().unwrap();
    db.compact().unwrap();
    check_all(&db, &model, seed);
    let s = db.stats();
    println!("{s:?}");
    assert!(s.flushes > 0, "seed {seed}: no flush happened");
    assert!(s.compactions > 0, "seed {seed}: no compaction happened");
    db.close().unwrap();
    drop(db);
    let db = Db::open(opts).unwrap();
    check_all(&db, &model, seed);
}

#[test]
fn model_os_mode() {
    let seed = seed_from_env();
    println!("seed {seed}");
    run_model(seed, ops_from_env(4000), Durability::Os);
}

#[test]
fn model_sync_mode() {
    let seed = seed_from_env();
    println!("seed {seed}");
    run_model(seed, ops_from_env(2000), Durability::Sync);
}
