//! Torture test: concurrent writes, overwrites and deletes of self-checking
//! values, `kill -9` of the real server at random moments (mid-write,
//! mid-flush, mid-compaction), restart on the same data directory, and a
//! check of every key after each restart.
//!
//! The default run is short (a few kill rounds). The long run:
//!
//! ```text
//! ESCABELO_TORTURE_SECS=600 ESCABELO_TORTURE_KILLS=100 \
//!     cargo test --release -p escabelo --test torture -- --nocapture
//! ```
//!
//! Other knobs: `ESCABELO_TORTURE_SEED` (repeat a run's random choices;
//! the seed is printed), `ESCABELO_TORTURE_WORKERS` (connections, 8),
//! `ESCABELO_TORTURE_KEYS` (key space, 1000), `ESCABELO_TORTURE_DIR` (keep
//! the data directories there for a post-mortem). The `sync` run gets a
//! tenth of the kills and of the time.
//!
//! Besides wrong data, a panic or an `ERROR` line in the server's log is a
//! failure.

mod common;
#[path = "torture/mod.rs"]
mod harness;

use harness::Config;
use std::sync::Mutex;

/// The runs share two cores with everything else: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn check(cfg: Config) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = harness::run(&cfg);
    assert!(s.kills >= 1 && s.restarts == s.kills + 1);
    assert!(s.acked_writes > 0, "no write was acknowledged");
    assert_eq!(
        s.failures, 0,
        "torture[{}] found {} failures (seed {}); first: {:#?}",
        cfg.name, s.failures, cfg.seed, s.messages
    );
}

/// Small memtable and a low blob collection threshold so flushes,
/// compactions and blob garbage collection run all the time.
const BUSY_ENGINE: [&str; 6] = [
    "--memtable-size",
    "65536",
    "--compaction-interval",
    "1s",
    "--blob-gc-threshold",
    "0.1",
];

/// Acknowledgement once in the OS (survives kill -9), with the engine's
/// background work running all the time.
#[test]
fn torture_kill_9_durability_os() {
    check(Config::from_env("os", 4, &BUSY_ENGINE));
}

/// The same with an fsync before every acknowledgement.
#[test]
fn torture_kill_9_durability_sync() {
    let args = [&BUSY_ENGINE[..], &["--durability", "sync"]].concat();
    let mut cfg = Config::from_env("sync", 1, &args);
    cfg.kills = (cfg.kills / 10).max(1);
    cfg.secs = cfg.secs.map(|s| s / 10.0);
    cfg.workers = cfg.workers.max(8);
    check(cfg);
}
