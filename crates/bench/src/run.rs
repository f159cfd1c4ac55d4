//! Drives the load: the optional preload, then one task per connection until
//! the duration (or the request budget) is used up, with a live progress line.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::client::{ClientError, Conn, ReplyKind};
use crate::config::Config;
use crate::interval::{self, Intervals, Phase, Reporter};
use crate::report::{OpStats, Report, Results};
use crate::workload::{self, KeyName, Op, SizeModel, Workload};

/// How many error messages are kept for the report.
const MAX_ERROR_SAMPLES: usize = 10;

/// State shared by all connections.
pub struct Shared {
    cfg: Config,
    workload: Workload,
    sizes_model: SizeModel,
    /// Latest acknowledged value size per key; 0 = not known to exist.
    sizes: Vec<AtomicU32>,
    /// Next version number for written values (0 is the preload's).
    version: AtomicU64,
    /// Requests completed (for the progress line).
    done: AtomicU64,
    /// Requests issued (for `--max-requests`).
    issued: AtomicU64,
    stop: AtomicBool,
    samples: Mutex<Vec<String>>,
    /// Per-interval figures for `--report-every`.
    intervals: Arc<Intervals>,
}

impl Shared {
    /// Shared state for a run of `cfg`.
    pub fn new(cfg: Config) -> Arc<Self> {
        let workload = Workload::new(cfg.key_count, cfg.hot_key_ratio, cfg.read_ratio);
        let sizes_model = SizeModel::from_flag(cfg.value_size as usize);
        let sizes = (0..cfg.key_count)
            .map(|i| {
                let size = if cfg.assume_preloaded {
                    let key = KeyName::new(i);
                    workload::effective_len(key.as_str(), sizes_model.preload(cfg.seed, i), 0)
                } else {
                    0
                };
                AtomicU32::new(u32::try_from(size).unwrap_or(u32::MAX))
            })
            .collect();
        Arc::new(Shared {
            intervals: Arc::new(Intervals::new(cfg.report_every.is_some())),
            cfg,
            workload,
            sizes_model,
            sizes,
            version: AtomicU64::new(1),
            done: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            samples: Mutex::new(Vec::new()),
        })
    }

    fn note_error(&self, msg: String) {
        if let Ok(mut s) = self.samples.lock() {
            if s.len() < MAX_ERROR_SAMPLES {
                s.push(msg);
            }
        }
    }

    /// Keys known to exist, and their value plus key bytes.
    pub fn live(&self) -> (u64, u64) {
        let mut keys = 0;
        let mut bytes = 0;
        for (i, s) in self.sizes.iter().enumerate() {
            let s = u64::from(s.load(Ordering::Relaxed));
            if s > 0 {
                keys += 1;
                bytes += s + KeyName::new(i as u64).as_str().len() as u64;
            }
        }
        (keys, bytes)
    }
}

/// One request of a batch, remembered until its reply arrives.
struct InFlight {
    op: Op,
    key: u64,
    /// Writes: the value's length. Reads: the key's known size when sent.
    len: u32,
}

/// Sends one batch, reads its replies, and records them into `res`.
/// On a connection failure or when the batch takes longer than the
/// timeout, the unanswered requests are counted as errors.
async fn run_batch(
    conn: &mut Conn,
    batch: &[InFlight],
    shared: &Shared,
    res: &mut Results,
) -> Result<(), ClientError> {
    let started = Instant::now();
    let mut answered = 0;
    let limit = shared.cfg.timeout;
    let exchange = async {
        conn.flush().await?;
        for req in batch {
            let (kind, body) = conn.next_reply().await?;
            let latency = started.elapsed();
            answered += 1;
            let stats = match req.op {
                Op::Read => &mut res.read,
                Op::Write => &mut res.write,
            };
            stats.record(latency);
            shared.intervals.record(req.op, latency);
            if let Err(msg) = classify(req, kind, body, stats, shared) {
                stats.errors += 1;
                shared.intervals.error();
                shared.note_error(msg);
            }
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<(), ClientError>(())
    };
    let outcome = match tokio::time::timeout(limit, exchange).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout(
            limit,
            "waiting for a batch of replies",
        )),
    };
    if let Err(e) = outcome {
        for req in &batch[answered..] {
            shared.intervals.error();
            match req.op {
                Op::Read => res.read.errors += 1,
                Op::Write => res.write.errors += 1,
            }
        }
        return Err(e);
    }
    Ok(())
}

/// Checks one reply; `Err` carries the error message.
fn classify(
    req: &InFlight,
    kind: ReplyKind,
    body: &[u8],
    stats: &mut OpStats,
    shared: &Shared,
) -> Result<(), String> {
    let key = KeyName::new(req.key);
    let key = key.as_str();
    let lossy = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned();
    match (req.op, kind) {
        (Op::Write, ReplyKind::Success) => {
            stats.bytes += u64::from(req.len);
            if let Some(s) = shared.sizes.get(req.key as usize) {
                s.store(req.len, Ordering::Relaxed);
            }
            Ok(())
        }
        (Op::Read, ReplyKind::Value) => match workload::check_value(key, body) {
            Ok(()) => {
                stats.bytes += body.len() as u64;
                Ok(())
            }
            Err(e) => Err(format!(
                "read {key}: {e} ({} bytes: {:?}...)",
                body.len(),
                lossy(body)
            )),
        },
        (Op::Read, ReplyKind::NotFound) => {
            if req.len > 0 {
                Err(format!("read {key}: not found, but it was written before"))
            } else {
                stats.misses += 1;
                Ok(())
            }
        }
        (op, ReplyKind::Failure) => Err(format!("{op:?} {key}: server error {:?}", lossy(body))),
        (op, kind) => Err(format!(
            "{op:?} {key}: unexpected {kind:?} reply {:?}",
            lossy(body)
        )),
    }
}

async fn connect(shared: &Shared) -> Result<Conn, ClientError> {
    let cfg = &shared.cfg;
    Conn::connect(&cfg.addr, cfg.protocol, cfg.timeout).await
}

/// Writes keys `first, first + step, ...` once each with version 0.
async fn preload_task(shared: Arc<Shared>, first: u64, step: u64) -> (u64, u64) {
    let cfg = &shared.cfg;
    let mut res = Results::default();
    let mut conn = match connect(&shared).await {
        Ok(c) => c,
        Err(e) => {
            shared.note_error(format!("preload: connecting to {}: {e}", cfg.addr));
            let n = (first..cfg.key_count).step_by(step as usize).count() as u64;
            return (0, n);
        }
    };
    let mut keys = (first..cfg.key_count).step_by(step as usize).peekable();
    let mut batch = Vec::with_capacity(cfg.pipeline as usize);
    while keys.peek().is_some() {
        batch.clear();
        for i in keys.by_ref().take(cfg.pipeline as usize) {
            let key = KeyName::new(i);
            let key = key.as_str();
            let len = workload::effective_len(key, shared.sizes_model.preload(cfg.seed, i), 0);
            conn.queue_write(key, len, |out| {
                workload::write_value(out, key, len, 0);
            });
            batch.push(InFlight {
                op: Op::Write,
                key: i,
                len: u32::try_from(len).unwrap_or(u32::MAX),
            });
        }
        if let Err(e) = run_batch(&mut conn, &batch, &shared, &mut res).await {
            shared.note_error(format!("preload: {e}"));
            let rest = keys.count() as u64;
            return (res.write.count, res.write.errors + rest);
        }
    }
    (res.write.count, res.write.errors)
}

/// One connection of the measured phase.
async fn load_task(shared: Arc<Shared>, id: u64, deadline: Instant) -> Results {
    let cfg = &shared.cfg;
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut res = Results::default();
    let mut conn: Option<Conn> = None;
    let mut batch = Vec::with_capacity(cfg.pipeline as usize);
    let mut failures = 0u32;
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&shared).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    res.connect_errors += 1;
                    shared.intervals.error();
                    shared.note_error(format!("connecting to {}: {e}", cfg.addr));
                    failures += 1;
                    let pause = Duration::from_millis(100 * u64::from(failures.min(10)));
                    tokio::time::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    continue;
                }
            },
        };
        batch.clear();
        for _ in 0..cfg.pipeline {
            if cfg.max_requests > 0
                && shared.issued.fetch_add(1, Ordering::Relaxed) >= cfg.max_requests
            {
                shared.stop.store(true, Ordering::Relaxed);
                break;
            }
            let key_idx = shared.workload.choose_key(&mut rng);
            let key = KeyName::new(key_idx);
            let key = key.as_str();
            let known = shared
                .sizes
                .get(key_idx as usize)
                .map_or(0, |s| s.load(Ordering::Relaxed));
            match shared.workload.choose_op(&mut rng) {
                Op::Read => {
                    c.queue_read(key);
                    batch.push(InFlight {
                        op: Op::Read,
                        key: key_idx,
                        len: known,
                    });
                }
                Op::Write => {
                    let version = shared.version.fetch_add(1, Ordering::Relaxed);
                    let wanted = shared.sizes_model.choose(&mut rng);
                    let len = workload::effective_len(key, wanted, version);
                    c.queue_write(key, len, |out| {
                        workload::write_value(out, key, len, version);
                    });
                    batch.push(InFlight {
                        op: Op::Write,
                        key: key_idx,
                        len: u32::try_from(len).unwrap_or(u32::MAX),
                    });
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        match run_batch(c, &batch, &shared, &mut res).await {
            Ok(()) => failures = 0,
            Err(e) => {
                shared.note_error(format!("connection {id}: {e}"));
                conn = None;
            }
        }
    }
    res
}

fn progress_bar(cfg: &Config, len: u64, template: &str) -> ProgressBar {
    if cfg.quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Runs the preload (if asked) and the measured phase; returns the report.
pub async fn run(cfg: Config) -> Report {
    let shared = Shared::new(cfg.clone());
    let conns = u64::from(cfg.concurrency);
    let reporter = {
        let s = shared.clone();
        interval::start(&cfg, shared.intervals.clone(), move || s.live())
    };

    let mut preload = (Duration::ZERO, 0, 0);
    if cfg.preload {
        let pb = progress_bar(
            &cfg,
            cfg.key_count,
            "preload [{elapsed_precise}] [{bar:30}] {pos}/{len} keys {msg}",
        );
        let started = Instant::now();
        let tasks: Vec<_> = (0..conns.min(cfg.key_count))
            .map(|i| tokio::spawn(preload_task(shared.clone(), i, conns)))
            .collect();
        let ticker = {
            let (shared, pb) = (shared.clone(), pb.clone());
            tokio::spawn(async move {
                loop {
                    pb.set_position(shared.done.load(Ordering::Relaxed));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let (mut writes, mut errors) = (0, 0);
        for t in tasks {
            match t.await {
                Ok((w, e)) => {
                    writes += w;
                    errors += e;
                }
                Err(e) => {
                    errors += 1;
                    shared.note_error(format!("preload task failed: {e}"));
                }
            }
        }
        ticker.abort();
        pb.finish_and_clear();
        preload = (started.elapsed(), writes, errors);
        shared.done.store(0, Ordering::Relaxed);
    }

    shared.intervals.set_phase(Phase::Run);
    let secs = cfg.duration.as_secs().max(1);
    let pb = progress_bar(
        &cfg,
        secs,
        "[{elapsed_precise}] [{bar:30}] {pos}/{len}s {msg}",
    );
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let tasks: Vec<_> = (0..conns)
        .map(|i| tokio::spawn(load_task(shared.clone(), i, deadline)))
        .collect();
    let ticker = {
        let (shared, pb) = (shared.clone(), pb.clone());
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = Instant::now();
                let done = shared.done.load(Ordering::Relaxed);
                let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, done);
                pb.set_position(now.duration_since(started).as_secs());
                pb.set_message(format!("{rate:.0} ops/s, {done} requests"));
            }
        })
    };
    let mut results = Results::default();
    for t in tasks {
        match t.await {
            Ok(r) => results.merge(&r),
            Err(e) => {
                results.connect_errors += 1;
                shared.note_error(format!("connection task failed: {e}"));
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(Err(e)) = reporter.map(Reporter::finish) {
        shared.note_error(format!("--csv: {e}"));
    }
    ticker.abort();
    pb.finish_and_clear();

    let samples = shared.samples.lock().map(|s| s.clone()).unwrap_or_default();
    Report::new(&cfg, &results, elapsed, preload, shared.live(), samples)
}
