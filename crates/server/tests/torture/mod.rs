//! The torture harness: concurrent writers, overwriters and deleters on a
//! shared key space of self-checking values, `kill -9` of the real server
//! at random moments, restart on the same data directory, and a check of
//! every key against the history of acknowledged and in-flight changes.
//!
//! Used by `tests/torture.rs`; the long run is configured from the
//! environment (see [`Config::from_env`]).

pub mod conn;
pub mod values;

use crate::common::{spawn, Server};
use conn::{metric, Conn};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use values::{claimed_id, describe, key_name, pick_len, value_bytes};

/// Timeout of every network wait of the harness.
pub const NET_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a (re)started server to answer `status`.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What one torture run does.
#[derive(Debug, Clone)]
pub struct Config {
    /// A name for the printed summary.
    pub name: &'static str,
    /// Extra server flags (memtable size, durability...).
    pub server_args: Vec<String>,
    /// Number of `kill -9` rounds.
    pub kills: u64,
    /// Stop starting new rounds after this long, if set.
    pub secs: Option<f64>,
    /// Mean time the workload runs before a kill.
    pub round_secs: f64,
    /// Concurrent client connections.
    pub workers: usize,
    /// Size of the shared key space.
    pub keys: usize,
    /// Largest value of the 10% "big" class.
    pub big_max: usize,
    /// Seed of all random choices (printed, so a run can be repeated).
    pub seed: u64,
}

impl Config {
    /// The default (CI) run, overridden by `ESCABELO_TORTURE_SECS` (total
    /// run time) and `ESCABELO_TORTURE_KILLS` (number of kill rounds),
    /// `ESCABELO_TORTURE_SEED`, `ESCABELO_TORTURE_WORKERS` and
    /// `ESCABELO_TORTURE_KEYS`. With only one of SECS and KILLS set, the
    /// other follows at about 5 s per round.
    pub fn from_env(name: &'static str, default_kills: u64, server_args: &[&str]) -> Config {
        let env_f64 = |n: &str| {
            std::env::var(n)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let secs = env_f64("ESCABELO_TORTURE_SECS");
        let kills = env_f64("ESCABELO_TORTURE_KILLS").map(|k| k.max(1.0) as u64);
        let (kills, secs, round_secs) = match (secs, kills) {
            (None, None) => (default_kills, None, 3.0),
            (Some(s), None) => (u64::MAX, Some(s), 5.0),
            (None, Some(k)) => (k, None, 4.0),
            (Some(s), Some(k)) => (k, Some(s), (s / k as f64 * 0.8).max(0.3)),
        };
        let seed = env_f64("ESCABELO_TORTURE_SEED")
            .map(|s| s as u64)
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        Config {
            name,
            server_args: server_args.iter().map(|s| s.to_string()).collect(),
            kills,
            secs,
            round_secs,
            workers: env_f64("ESCABELO_TORTURE_WORKERS").map_or(8, |w| w.max(1.0) as usize),
            keys: env_f64("ESCABELO_TORTURE_KEYS").map_or(1000, |k| k.max(1.0) as usize),
            big_max: 100 * 1024,
            seed,
        }
    }
}

/// The state of a key as the harness knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    Absent,
    Present { id: u64, len: usize },
}

/// One key: its last acknowledged state, the outcomes of changes attempted
/// but not acknowledged (in flight at a kill), and every write ever made
/// to it (to tell a lost update from a value never written here).
#[derive(Debug)]
pub struct KeyState {
    pub name: String,
    pub cur: Val,
    pub pending: Vec<Val>,
    pub history: Vec<(u64, usize)>,
}

impl KeyState {
    /// Checks a `read` reply against the acceptable states; returns the
    /// state it shows, or a description of the failure.
    pub fn check(&self, reply: &[u8]) -> Result<Val, String> {
        let allowed = || std::iter::once(self.cur).chain(self.pending.iter().copied());
        if reply == b"error" {
            if allowed().any(|v| v == Val::Absent) {
                return Ok(Val::Absent);
            }
            return Err(format!(
                "key {} reads `error` (absent) but must hold {:?} (in flight: {:?})",
                self.short(),
                self.cur,
                self.pending
            ));
        }
        let claimed = claimed_id(reply);
        for v in allowed() {
            if let Val::Present { id, len } = v {
                if claimed.is_some_and(|c| c != id) || len != reply.len() {
                    continue;
                }
                if value_bytes(&self.name, id, len) == reply {
                    return Ok(v);
                }
            }
        }
        let older = claimed.filter(|c| self.history.iter().any(|(id, _)| id == c));
        let what = match older {
            Some(_)
                if self.history.iter().any(|&(id, len)| {
                    Some(id) == claimed
                        && len == reply.len()
                        && value_bytes(&self.name, id, len) == reply
                }) =>
            {
                "an OLDER write to this key (lost update)"
            }
            Some(_) => "a CORRUPTED copy of a write to this key",
            None => "a value NEVER written to this key",
        };
        Err(format!(
            "key {} reads {} — {what}; must hold {:?} (in flight: {:?})",
            self.short(),
            describe(reply),
            self.cur,
            self.pending
        ))
    }

    fn short(&self) -> String {
        if self.name.len() > 40 {
            format!("{}...({} bytes)", &self.name[..20], self.name.len())
        } else {
            self.name.clone()
        }
    }
}

/// Counters of a run.
#[derive(Default)]
pub struct Stats {
    pub acked_writes: AtomicU64,
    pub acked_deletes: AtomicU64,
    pub reads_checked: AtomicU64,
    pub failures: AtomicU64,
    pub messages: Mutex<Vec<String>>,
}

impl Stats {
    pub fn fail(&self, msg: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut m = lock(&self.messages);
        if m.len() < 50 {
            eprintln!("TORTURE FAILURE: {msg}");
            m.push(msg);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shared by the workers of a run.
pub struct World {
    pub keys: Vec<Mutex<KeyState>>,
    pub next_id: AtomicU64,
    pub stats: Stats,
    pub big_max: usize,
}

/// The result of a run, printed at its end.
#[derive(Debug, Default)]
pub struct Summary {
    pub rounds: u64,
    pub kills: u64,
    pub restarts: u64,
    pub restart_times: Vec<Duration>,
    pub acked_writes: u64,
    pub acked_deletes: u64,
    pub reads_checked: u64,
    pub in_flight_at_kill: u64,
    pub keys_checked: u64,
    pub keys_listings_checked: u64,
    pub scans_checked: u64,
    pub kills_in_recovery: u64,
    pub flushes: u64,
    pub compactions: u64,
    pub blob_gcs: u64,
    pub write_stalls: u64,
    pub kill_modes: [u64; 5],
    pub failures: u64,
    pub messages: Vec<String>,
    pub elapsed: Duration,
}

impl Summary {
    pub fn print(&self, name: &str) {
        let n = self.restart_times.len().max(1) as f64;
        let mean = self
            .restart_times
            .iter()
            .map(|d| d.as_secs_f64())
            .sum::<f64>()
            / n;
        let max = self
            .restart_times
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64();
        println!(
            "torture[{name}]: {:.1}s rounds={} kills={} (delay={} burst={} mid-flush={} after-flush={} \
             during-shutdown={}) kills_in_recovery={} restarts={} restart_ms mean={:.1} max={:.1}\n  \
             acked_writes={} acked_deletes={} reads_checked={} in_flight_at_kill={} keys_checked={} \
             keys_listings_checked={} scans_checked={}\n  server: flushes={} \
             compactions={} blob_gcs={} write_stalls={}\n  failures={}",
            self.elapsed.as_secs_f64(),
            self.rounds,
            self.kills,
            self.kill_modes[0],
            self.kill_modes[1],
            self.kill_modes[2],
            self.kill_modes[3],
            self.kill_modes[4],
            self.kills_in_recovery,
            self.restarts,
            mean * 1e3,
            max * 1e3,
            self.acked_writes,
            self.acked_deletes,
            self.reads_checked,
            self.in_flight_at_kill,
            self.keys_checked,
            self.keys_listings_checked,
            self.scans_checked,
            self.flushes,
            self.compactions,
            self.blob_gcs,
            self.write_stalls,
            self.failures,
        );
        for m in &self.messages {
            println!("  FAILURE: {m}");
        }
    }
}

/// Starts the server on `data_dir` and waits until `status` answers;
/// returns it and the time from spawn to the first `status` reply.
pub fn start_server(data_dir: &Path, extra: &[String]) -> (Server, Duration) {
    let mut args: Vec<String> = vec![
        "--bind".into(),
        "127.0.0.1".into(),
        "--port".into(),
        "0".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    let t0 = Instant::now();
    let (mut child, log) = spawn(&args);
    loop {
        if let Some(port) = log.port() {
            if let Ok(mut c) = Conn::connect(port, NET_TIMEOUT) {
                if c.status().is_ok() {
                    let took = t0.elapsed();
                    let srv = Server {
                        child,
                        port,
                        data_dir: data_dir.to_path_buf(),
                        tmp: None,
                        log,
                    };
                    return (srv, took);
                }
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "server exited with {st} while starting on {}:\n{}",
                data_dir.display(),
                log.text()
            );
        }
        if t0.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not answer status in {START_TIMEOUT:?}:\n{}",
                log.text()
            );
        }
        thread::sleep(Duration::from_millis(2));
    }
}

enum Op {
    Write(Val),
    Delete,
    Read,
}

/// One client connection: random pipelined batches of writes, overwrites,
/// deletes and reads on keys it holds locked, until `stop` or until the
/// connection fails (the server was killed).
fn worker(world: &World, port: u16, stop: &AtomicBool, burst: &AtomicBool, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let Ok(mut conn) = Conn::connect(port, NET_TIMEOUT) else {
        return;
    };
    let nkeys = world.keys.len();
    let mut req = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let bursting = burst.load(Ordering::Relaxed);
        let want = if bursting {
            rng.gen_range(8..=32)
        } else {
            rng.gen_range(1..=6)
        };
        let mut batch: Vec<(MutexGuard<'_, KeyState>, Op)> = Vec::with_capacity(want);
        let mut taken: Vec<usize> = Vec::with_capacity(want);
        for _ in 0..want * 2 {
            if taken.len() == want {
                break;
            }
            let k = rng.gen_range(0..nkeys);
            if taken.contains(&k) {
                continue;
            }
            if let Ok(g) = world.keys[k].try_lock() {
                taken.push(k);
                batch.push((g, Op::Read));
            }
        }
        if batch.is_empty() {
            thread::yield_now();
            continue;
        }
        req.clear();
        for (g, op) in batch.iter_mut() {
            let p: f64 = rng.gen();
            if bursting || p < 0.55 {
                let id = world.next_id.fetch_add(1, Ordering::Relaxed);
                let len = pick_len(&mut rng, world.big_max);
                g.pending.push(Val::Present { id, len });
                g.history.push((id, len));
                req.extend_from_slice(b"write ");
                req.extend_from_slice(g.name.as_bytes());
                req.push(b'|');
                req.extend_from_slice(&value_bytes(&g.name, id, len));
                req.push(b'\r');
                *op = Op::Write(Val::Present { id, len });
            } else if p < 0.70 {
                g.pending.push(Val::Absent);
                req.extend_from_slice(b"delete ");
                req.extend_from_slice(g.name.as_bytes());
                req.push(b'\r');
                *op = Op::Delete;
            } else {
                req.extend_from_slice(b"read ");
                req.extend_from_slice(g.name.as_bytes());
                req.push(b'\r');
                *op = Op::Read;
            }
        }
        if conn.send(&req).is_err() {
            return;
        }
        for (g, op) in batch.iter_mut() {
            let Ok(r) = conn.reply() else {
                // Killed: the rest of the batch stays in flight.
                return;
            };
            match op {
                Op::Write(v) => {
                    if r == b"success" {
                        g.cur = *v;
                        let at = g.pending.iter().rposition(|p| p == v).unwrap();
                        g.pending.remove(at);
                        world.stats.acked_writes.fetch_add(1, Ordering::Relaxed);
                    } else {
                        world.stats.fail(format!(
                            "write {} got {:?} instead of success",
                            g.short(),
                            String::from_utf8_lossy(&r)
                        ));
                    }
                }
                Op::Delete => {
                    let expect: &[u8] = if g.pending.len() == 1 {
                        match g.cur {
                            Val::Absent => b"error",
                            Val::Present { .. } => b"success",
                        }
                    } else {
                        &r
                    };
                    if r == expect && (r == b"error" || r == b"success") {
                        g.cur = Val::Absent;
                        let at = g.pending.iter().rposition(|p| *p == Val::Absent).unwrap();
                        g.pending.remove(at);
                        world.stats.acked_deletes.fetch_add(1, Ordering::Relaxed);
                    } else {
                        world.stats.fail(format!(
                            "delete {} got {:?} but the key is {:?}",
                            g.short(),
                            String::from_utf8_lossy(&r),
                            g.cur
                        ));
                    }
                }
                Op::Read => {
                    world.stats.reads_checked.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = g.check(&r) {
                        world.stats.fail(format!("during the workload: {e}"));
                    }
                }
            }
        }
    }
}

/// Reads back every key and `keys`, checks them against the history, and
/// resolves in-flight changes to what the database shows.
fn verify_all(world: &World, port: u16, summary: &mut Summary, when: &str, rng: &mut SmallRng) {
    let mut conn = Conn::connect(port, NET_TIMEOUT).expect("connect for verification");
    let n = world.keys.len();
    let mut guards: Vec<MutexGuard<'_, KeyState>> = world.keys.iter().map(lock).collect();
    let in_flight: usize = guards.iter().map(|g| g.pending.len()).sum();
    summary.in_flight_at_kill += in_flight as u64;
    let mut req = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        req.clear();
        for &i in chunk {
            req.extend_from_slice(b"read ");
            req.extend_from_slice(guards[i].name.as_bytes());
            req.push(b'\r');
        }
        conn.send(&req).expect("send verification reads");
        for &i in chunk {
            let r = conn.reply().expect("verification read reply");
            summary.keys_checked += 1;
            let g = &mut guards[i];
            match g.check(&r) {
                Ok(v) => g.cur = v,
                Err(e) => {
                    world.stats.fail(format!("{when}: {e}"));
                    // Put the key back into a known state.
                    conn.send(format!("delete {}\r", g.name).as_bytes())
                        .expect("send repair delete");
                    let _ = conn.reply().expect("repair delete reply");
                    g.cur = Val::Absent;
                }
            }
            g.pending.clear();
        }
    }
    // `keys` must list exactly the present keys, in ascending byte order.
    let listed = conn.keys().expect("keys");
    let mut expected: Vec<Vec<u8>> = guards
        .iter()
        .filter(|g| g.cur != Val::Absent)
        .map(|g| g.name.as_bytes().to_vec())
        .collect();
    expected.sort();
    summary.keys_listings_checked += 1;
    if listed != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|k| listed.binary_search(k).is_err())
            .take(5)
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let extra: Vec<_> = listed
            .iter()
            .filter(|k| expected.binary_search(k).is_err())
            .take(5)
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let sorted = listed.windows(2).all(|w| w[0] < w[1]);
        world.stats.fail(format!(
            "{when}: `keys` lists {} keys, expected {}; missing {missing:?}, extra {extra:?}, \
             ascending={sorted}",
            listed.len(),
            expected.len()
        ));
    }
    // `reads <prefix>` lists the values of the present keys with that
    // prefix, in key order: all of them, and a few narrow prefixes.
    let mut prefixes = vec!["t:".to_string()];
    for _ in 0..3 {
        prefixes.push(format!(
            "t:00{}{}",
            rng.gen_range(0..10),
            rng.gen_range(0..10)
        ));
    }
    for prefix in prefixes {
        let got = conn
            .list(format!("reads {prefix}\r").as_bytes())
            .expect("reads");
        let mut want: Vec<(&str, Val)> = guards
            .iter()
            .filter(|g| g.cur != Val::Absent && g.name.starts_with(&prefix))
            .map(|g| (g.name.as_str(), g.cur))
            .collect();
        want.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        summary.scans_checked += 1;
        let same = got.len() == want.len()
            && got.iter().zip(&want).all(|(v, (name, cur))| match *cur {
                Val::Present { id, len } => v.len() == len && value_bytes(name, id, len) == *v,
                Val::Absent => false,
            });
        if !same {
            let first_bad = got
                .iter()
                .zip(&want)
                .position(|(v, (name, cur))| match *cur {
                    Val::Present { id, len } => value_bytes(name, id, len) != *v,
                    Val::Absent => true,
                });
            world.stats.fail(format!(
                "{when}: `reads {prefix}` returned {} values, expected {}; first mismatch at {:?}: {}",
                got.len(),
                want.len(),
                first_bad,
                first_bad
                    .map(|i| describe(&got[i]))
                    .unwrap_or_default()
            ));
        }
    }
}

/// The kill moments: after a random delay; right after a burst of
/// pipelined writes; while a flush is running; just after a flush (when
/// compactions start); during a clean shutdown (SIGTERM, then SIGKILL).
#[derive(Debug, Clone, Copy)]
enum KillMode {
    Delay,
    Burst,
    MidFlush,
    AfterFlush,
    DuringShutdown,
}

/// Polls `status` and remembers the last reply's counters.
struct Watch {
    conn: Option<Conn>,
    last: Vec<(String, String)>,
}

impl Watch {
    fn poll(&mut self) -> Option<&[(String, String)]> {
        let c = self.conn.as_mut()?;
        match c.status() {
            Ok(m) => {
                self.last = m;
                Some(&self.last)
            }
            Err(_) => {
                self.conn = None;
                None
            }
        }
    }
}

/// Runs the torture described by `cfg`; returns the summary (already
/// printed).
pub fn run(cfg: &Config) -> Summary {
    println!("torture[{}]: {:?}", cfg.name, cfg);
    let t0 = Instant::now();
    // ESCABELO_TORTURE_DIR keeps the data directory for a post-mortem.
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = match std::env::var_os("ESCABELO_TORTURE_DIR") {
        Some(d) => Path::new(&d).join(cfg.name),
        None => tmp.path().join("data"),
    };
    let world = World {
        keys: (0..cfg.keys)
            .map(|i| {
                Mutex::new(KeyState {
                    name: key_name(i),
                    cur: Val::Absent,
                    pending: Vec::new(),
                    history: Vec::new(),
                })
            })
            .collect(),
        next_id: AtomicU64::new(1),
        stats: Stats::default(),
        big_max: cfg.big_max,
    };
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let mut summary = Summary::default();
    let (mut srv, _) = start_server(&data_dir, &cfg.server_args);

    while summary.kills < cfg.kills {
        if let Some(s) = cfg.secs {
            if summary.kills > 0 && t0.elapsed().as_secs_f64() > s {
                break;
            }
        }
        summary.rounds += 1;
        let stop = AtomicBool::new(false);
        let burst = AtomicBool::new(false);
        let port = srv.port;
        let mode = match rng.gen_range(0..9) {
            0 | 1 => KillMode::Delay,
            2 | 3 => KillMode::Burst,
            4 | 5 => KillMode::MidFlush,
            6 | 7 => KillMode::AfterFlush,
            _ => KillMode::DuringShutdown,
        };
        let delay = Duration::from_secs_f64(cfg.round_secs * rng.gen_range(0.3..1.7));
        let round_seed: u64 = rng.gen();
        let round_start = Instant::now();
        let mut watch = Watch {
            conn: Conn::connect(port, NET_TIMEOUT).ok(),
            last: Vec::new(),
        };
        thread::scope(|s| {
            for w in 0..cfg.workers {
                let (world, stop, burst) = (&world, &stop, &burst);
                s.spawn(move || worker(world, port, stop, burst, round_seed ^ (w as u64 + 1)));
            }
            let started = Instant::now();
            let mut ctl = SmallRng::seed_from_u64(round_seed);
            match mode {
                KillMode::Delay | KillMode::DuringShutdown => {
                    while started.elapsed() < delay {
                        thread::sleep(Duration::from_millis(20));
                        watch.poll();
                    }
                }
                KillMode::Burst => {
                    while started.elapsed() < delay / 2 {
                        thread::sleep(Duration::from_millis(20));
                        watch.poll();
                    }
                    burst.store(true, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(ctl.gen_range(0..60)));
                    watch.poll();
                }
                KillMode::MidFlush | KillMode::AfterFlush => {
                    while started.elapsed() < delay / 3 {
                        thread::sleep(Duration::from_millis(20));
                        watch.poll();
                    }
                    let flushes0 = metric(&watch.last, "flushes");
                    while started.elapsed() < delay * 2 {
                        let Some(m) = watch.poll() else { break };
                        let hit = match mode {
                            KillMode::MidFlush => metric(m, "immutable_memtable_size") > 0,
                            _ => metric(m, "flushes") > flushes0,
                        };
                        if hit {
                            if let KillMode::AfterFlush = mode {
                                thread::sleep(Duration::from_millis(ctl.gen_range(0..20)));
                            }
                            break;
                        }
                        thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            if let KillMode::DuringShutdown = mode {
                srv.signal(libc::SIGTERM);
                thread::sleep(Duration::from_millis(ctl.gen_range(0..80)));
                if let Ok(Some(st)) = srv.child.try_wait() {
                    // Finished its shutdown before the kill.
                    if !st.success() {
                        world.stats.fail(format!("SIGTERM exit status {st}"));
                    }
                } else {
                    srv.kill9();
                }
            } else {
                srv.kill9();
            }
            stop.store(true, Ordering::Relaxed);
        });
        let round_time = round_start.elapsed();
        summary.kills += 1;
        summary.kill_modes[mode as usize] += 1;
        summary.flushes += metric(&watch.last, "flushes");
        summary.compactions += metric(&watch.last, "compactions");
        summary.blob_gcs += metric(&watch.last, "blob_gcs");
        summary.write_stalls += metric(&watch.last, "write_stalls");
        check_log(&world, &srv, "before the kill");
        drop(srv);

        // Now and then, also kill a restart while it recovers.
        if rng.gen_bool(0.25) {
            let last = summary.restart_times.last().copied().unwrap_or_default();
            let after = last.mul_f64(rng.gen_range(0.0..1.2));
            kill_during_recovery(&data_dir, &cfg.server_args, after);
            summary.kills_in_recovery += 1;
        }

        let (s2, took) = start_server(&data_dir, &cfg.server_args);
        srv = s2;
        summary.restarts += 1;
        summary.restart_times.push(took);
        let when = format!("after kill {}", summary.kills);
        verify_all(&world, srv.port, &mut summary, &when, &mut rng);
        let (files, bytes) = dir_usage(&data_dir);
        let m = Conn::connect(srv.port, NET_TIMEOUT)
            .and_then(|mut c| c.status())
            .unwrap_or_default();
        println!(
            "  round {:>3}: kill {:?} after {:.2}s, restart {:.1} ms, data dir {} files {} KiB \
             (server: sst_count={} blob_files={} disk_bytes={} KiB)",
            summary.rounds,
            mode,
            round_time.as_secs_f64(),
            took.as_secs_f64() * 1e3,
            files,
            bytes / 1024,
            metric(&m, "sst_count"),
            metric(&m, "blob_files"),
            metric(&m, "disk_bytes") / 1024,
        );
    }

    // A clean shutdown and restart keeps everything too.
    let mut c = Conn::connect(srv.port, NET_TIMEOUT).unwrap();
    if let Ok(m) = c.status() {
        summary.flushes += metric(&m, "flushes");
        summary.compactions += metric(&m, "compactions");
        summary.blob_gcs += metric(&m, "blob_gcs");
    }
    drop(c);
    let st = srv.stop();
    if !st.success() {
        world.stats.fail(format!("SIGTERM exit status {st}"));
    }
    check_log(&world, &srv, "before the clean stop");
    drop(srv);
    let (srv, took) = start_server(&data_dir, &cfg.server_args);
    summary.restarts += 1;
    summary.restart_times.push(took);
    verify_all(
        &world,
        srv.port,
        &mut summary,
        "after a clean restart",
        &mut rng,
    );
    check_log(&world, &srv, "at the end");
    drop(srv);

    let st = &world.stats;
    summary.acked_writes = st.acked_writes.load(Ordering::Relaxed);
    summary.acked_deletes = st.acked_deletes.load(Ordering::Relaxed);
    summary.reads_checked = st.reads_checked.load(Ordering::Relaxed);
    summary.failures = st.failures.load(Ordering::Relaxed);
    summary.messages = lock(&st.messages).clone();
    summary.elapsed = t0.elapsed();
    summary.print(cfg.name);
    summary
}

/// Starts the server on `data_dir` and kills it with SIGKILL `after` the
/// spawn, in the middle of its recovery if it takes that long.
fn kill_during_recovery(data_dir: &Path, extra: &[String], after: Duration) {
    let mut args: Vec<String> = vec![
        "--bind".into(),
        "127.0.0.1".into(),
        "--port".into(),
        "0".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    let (mut child, _log) = spawn(&args);
    thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

/// Number of files and their total size under `dir`, recursively.
fn dir_usage(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => {
                    let (f, b) = dir_usage(&e.path());
                    files += f;
                    bytes += b;
                }
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

/// A panic or an error in the server's log is a failure.
fn check_log(world: &World, srv: &Server, when: &str) {
    let log = srv.log.text();
    for line in log.lines() {
        if line.contains("panicked") || line.contains(" ERROR ") {
            world.stats.fail(format!("{when}: server log: {line}"));
        }
    }
}
