//! Shared helpers for the fault-injection tests: options for small,
//! busy databases on the in-memory file system, self-describing values,
//! a history of attempted writes that says which values a key may hold
//! after a crash, and a watchdog that turns hangs into failures.

#![allow(dead_code)]

use bytes::Bytes;
use escabelo_engine::fs::MemFs;
use escabelo_engine::{Db, Durability, Options};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The directory every test database lives in (on the in-memory FS).
pub const DIR: &str = "/db";

/// Blob threshold used by every test: values at least this long go to
/// blob files.
pub const BLOB_THRESHOLD: usize = 512;

/// The seed: `ESCABELO_SEED` if set, else random.
pub fn seed_from_env() -> u64 {
    std::env::var("ESCABELO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// Number of crash rounds: `ESCABELO_CRASH_ROUNDS` if set, else `default`.
pub fn rounds_from_env(default: usize) -> usize {
    std::env::var("ESCABELO_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Options that make flushes, compactions and blob collections frequent.
pub fn small_options(fs: &MemFs, durability: Durability) -> Options {
    let mut o = Options::new(DIR);
    o.fs = Arc::new(fs.clone());
    o.durability = durability;
    o.wal_sync_interval = Duration::from_millis(5);
    o.memtable_size = 64 * 1024;
    o.blob_threshold = Some(BLOB_THRESHOLD);
    o.blob_file_size = 128 * 1024;
    o.blob_gc_threshold = 0.25;
    o.table_file_size = 32 * 1024;
    o.base_level_size = 64 * 1024;
    o.level_size_multiplier = 4;
    o.l0_compaction_trigger = 2;
    o.cache_size = 64 * 1024;
    o.compaction_interval = Duration::from_millis(20);
    o
}

/// The key with index `i`.
pub fn key(i: usize) -> String {
    format!("k{i:04}")
}

/// A value that names its key and the write that produced it, padded to
/// `len` bytes with bytes derived from both, so any damage is detectable.
pub fn make_value(key: &str, id: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{key}#{id}#").into_bytes();
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key.len() as u64;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

/// A random value length on both sides of the blob threshold.
pub fn random_len(rng: &mut impl rand::Rng) -> usize {
    match rng.gen_range(0..10) {
        0..=4 => rng.gen_range(0..200),
        5..=6 => rng.gen_range(200..BLOB_THRESHOLD),
        7..=8 => rng.gen_range(BLOB_THRESHOLD..4000),
        _ => rng.gen_range(4000..16_000),
    }
}

/// Runs `f` on a new thread and panics if it does not finish within
/// `secs` seconds (the engine hung). The hung thread is left behind.
pub fn with_timeout<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let h = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().unwrap(),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(_) => panic!("{what}: did not finish within {secs} s (engine hung)"),
    }
}

/// One attempted write to a key.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// `Some(value)` for a put, `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// Global clock when it was submitted.
    pub start: u64,
    /// Global clock when its result came back (`u64::MAX` if never).
    pub end: u64,
    /// Whether it was acknowledged (Ok returned).
    pub acked: bool,
}

/// Every write attempted on every key since the last verified state.
///
/// After a crash, a key may hold the value of any attempt that was not
/// definitely overwritten by a later acknowledged attempt (one that
/// started after it ended). The baseline (the state verified at the last
/// open) counts as an acknowledged attempt at time 0.
#[derive(Debug, Default)]
pub struct History {
    pub keys: BTreeMap<String, Vec<Attempt>>,
}

impl History {
    /// A history whose baseline is `state` (keys absent from it are
    /// absent).
    pub fn from_state(state: &BTreeMap<String, Vec<u8>>, all_keys: &[String]) -> History {
        let mut h = History::default();
        for k in all_keys {
            h.keys.insert(
                k.clone(),
                vec![Attempt {
                    value: state.get(k).cloned(),
                    start: 0,
                    end: 0,
                    acked: true,
                }],
            );
        }
        h
    }

    /// Adds the attempts of one thread.
    pub fn merge(&mut self, attempts: Vec<(String, Attempt)>) {
        for (k, a) in attempts {
            self.keys.entry(k).or_default().push(a);
        }
    }

    /// The values `key` may hold now (`None` = absent).
    pub fn allowed(&self, key: &str) -> Vec<(Option<&[u8]>, bool, u64)> {
        let Some(attempts) = self.keys.get(key) else {
            return vec![(None, true, 0)];
        };
        attempts
            .iter()
            .filter(|a| {
                !attempts
                    .iter()
                    .any(|b| b.acked && b.start > a.end && a.end != u64::MAX)
            })
            .map(|a| (a.value.as_deref(), a.acked, a.start))
            .collect()
    }

    /// Checks that `got` is a value `key` may hold; returns a description
    /// of the problem otherwise.
    pub fn check(&self, key: &str, got: Option<&[u8]>) -> Result<(), String> {
        let allowed = self.allowed(key);
        if allowed.iter().any(|(v, _, _)| *v == got) {
            return Ok(());
        }
        let describe = |v: Option<&[u8]>| match v {
            None => "absent".to_string(),
            Some(v) => describe_value(v),
        };
        let all: Vec<String> = self
            .keys
            .get(key)
            .map(|a| {
                a.iter()
                    .map(|a| {
                        format!(
                            "{}[{}..{}{}]",
                            describe(a.value.as_deref()),
                            a.start,
                            a.end,
                            if a.acked { ", acked" } else { "" }
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Err(format!(
            "key {key}: got {}, allowed {:?}; attempts {:?}",
            describe(got),
            allowed
                .iter()
                .map(|(v, _, _)| describe(*v))
                .collect::<Vec<_>>(),
            all
        ))
    }
}

/// A short description of a value made by [`make_value`].
pub fn describe_value(v: &[u8]) -> String {
    let head = String::from_utf8_lossy(&v[..v.len().min(24)]).to_string();
    let head = head.split('#').take(2).collect::<Vec<_>>().join("#");
    format!("{head}({} B)", v.len())
}

/// Reads every key in `all_keys` and the full key listing and scan; checks
/// each against `history` and returns the state found. Panics (with
/// `ctx`) on any violation.
pub fn verify(
    db: &Db,
    history: &History,
    all_keys: &[String],
    ctx: &str,
) -> BTreeMap<String, Vec<u8>> {
    let mut state = BTreeMap::new();
    let mut problems = Vec::new();
    for k in all_keys {
        match db.get(k.as_bytes()) {
            Ok(got) => {
                if let Err(e) = history.check(k, got.as_deref()) {
                    problems.push(format!("get: {e}"));
                }
                if let Some(v) = got {
                    state.insert(k.clone(), v.to_vec());
                }
            }
            Err(e) => problems.push(format!("get {k}: error {e}")),
        }
    }
    // The listing and the scan must agree with the point reads.
    let mut listed = Vec::new();
    match db.keys() {
        Ok(it) => {
            for r in it {
                match r {
                    Ok(k) => listed.push(k),
                    Err(e) => {
                        problems.push(format!("keys(): error {e}"));
                        break;
                    }
                }
            }
        }
        Err(e) => problems.push(format!("keys(): error {e}")),
    }
    let want: Vec<Bytes> = state
        .keys()
        .map(|k| Bytes::copy_from_slice(k.as_bytes()))
        .collect();
    if listed != want {
        let extra: Vec<_> = listed.iter().filter(|k| !want.contains(k)).collect();
        let missing: Vec<_> = want.iter().filter(|k| !listed.contains(k)).collect();
        problems.push(format!(
            "keys() disagrees with get: extra {extra:?}, missing {missing:?}"
        ));
    }
    match db.scan_prefix(b"") {
        Ok(it) => {
            let mut n = 0;
            for r in it {
                match r {
                    Ok((k, v)) => {
                        n += 1;
                        let ks = String::from_utf8_lossy(&k).to_string();
                        if state.get(&ks).map(|x| x.as_slice()) != Some(v.as_ref()) {
                            problems.push(format!(
                                "scan: key {ks} value {} disagrees with get",
                                describe_value(&v)
                            ));
                        }
                    }
                    Err(e) => {
                        problems.push(format!("scan: error {e}"));
                        break;
                    }
                }
            }
            if n != state.len() {
                problems.push(format!(
                    "scan returned {n} entries, get found {}",
                    state.len()
                ));
            }
        }
        Err(e) => problems.push(format!("scan: error {e}")),
    }
    if !problems.is_empty() {
        let shown: Vec<_> = problems.iter().take(10).collect();
        panic!(
            "{ctx}: {} problem(s):\n{}",
            problems.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    state
}
