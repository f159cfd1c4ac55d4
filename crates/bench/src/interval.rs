//! `--report-every DURATION --csv FILE`: one CSV line per interval with
//! the throughput and the latency percentiles of that interval alone (not
//! of the run so far), its errors, and the live data the tool knows of.
//! `scripts/soak.sh` and `scripts/scale.sh` draw their curves from it.
//!
//! Replies are recorded into a few mutex-protected shards (one per worker
//! thread, so the locks are hardly ever contended); a plain thread wakes
//! up every interval, empties the shards and appends one line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::report::OpStats;
use crate::workload::Op;

/// Number of shards replies are spread over.
const SHARDS: usize = 8;

/// The first line of the CSV file.
pub const HEADER: &str = "unix_s,elapsed_s,phase,interval_s,read_ops_s,write_ops_s,\
read_p50_us,read_p95_us,read_p99_us,write_p50_us,write_p95_us,write_p99_us,\
errors,live_keys,live_bytes";

/// Which part of the run an interval ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Writing every key once (`--preload`).
    Preload = 0,
    /// The measured phase.
    Run = 1,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Preload => "preload",
            Phase::Run => "run",
        }
    }
}

/// Next shard handed to a thread that records for the first time.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// Reads and writes of one shard since the last line.
#[derive(Default)]
struct Shard {
    read: OpStats,
    write: OpStats,
}

/// What the connections record for the per-interval report; does nothing
/// when the report is off.
pub struct Intervals {
    /// Empty when `--report-every` is not given.
    shards: Vec<Mutex<Shard>>,
    errors: AtomicU64,
    phase: AtomicU8,
}

impl Intervals {
    /// Recording on (`enabled`) or off.
    pub fn new(enabled: bool) -> Self {
        let n = if enabled { SHARDS } else { 0 };
        Intervals {
            shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(),
            errors: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Preload as u8),
        }
    }

    /// Records one reply of `op` that took `latency`.
    pub fn record(&self, op: Op, latency: Duration) {
        if self.shards.is_empty() {
            return;
        }
        let i = SHARD.with(|s| *s);
        if let Ok(mut s) = self.shards[i].lock() {
            match op {
                Op::Read => s.read.record(latency),
                Op::Write => s.write.record(latency),
            }
        }
    }

    /// Counts one failed request (or connection attempt).
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the start of `phase`; later lines carry its name.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    fn phase(&self) -> Phase {
        if self.phase.load(Ordering::Relaxed) == Phase::Run as u8 {
            Phase::Run
        } else {
            Phase::Preload
        }
    }

    /// Empties every shard into one pair of counters.
    fn take(&self) -> (OpStats, OpStats, u64) {
        let (mut read, mut write) = (OpStats::new(), OpStats::new());
        for shard in &self.shards {
            if let Ok(mut s) = shard.lock() {
                read.merge(&s.read);
                write.merge(&s.write);
                clear(&mut s.read);
                clear(&mut s.write);
            }
        }
        (read, write, self.errors.swap(0, Ordering::Relaxed))
    }
}

fn clear(s: &mut OpStats) {
    s.count = 0;
    s.errors = 0;
    s.misses = 0;
    s.bytes = 0;
    s.hist.reset();
}

/// One CSV line from the counters of an interval of `secs` seconds.
fn line(
    at: (f64, f64),
    phase: Phase,
    secs: f64,
    (read, write, errors): &(OpStats, OpStats, u64),
    (live_keys, live_bytes): (u64, u64),
) -> String {
    let q = |s: &OpStats, p: f64| {
        if s.hist.is_empty() {
            0
        } else {
            s.hist.value_at_quantile(p)
        }
    };
    let per_sec = |n: u64| n as f64 / secs.max(1e-9);
    format!(
        "{:.3},{:.3},{},{:.6},{:.1},{:.1},{},{},{},{},{},{},{},{},{}",
        at.0,
        at.1,
        phase.name(),
        secs,
        per_sec(read.count),
        per_sec(write.count),
        q(read, 0.5),
        q(read, 0.95),
        q(read, 0.99),
        q(write, 0.5),
        q(write, 0.95),
        q(write, 0.99),
        errors,
        live_keys,
        live_bytes
    )
}

/// The thread writing the CSV file; [`Reporter::finish`] writes the last,
/// partial interval and closes the file.
pub struct Reporter {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<io::Result<()>>,
}

impl Reporter {
    /// Creates `path` (truncating it), writes the header, and starts a
    /// line every `every`. `live` gives the live keys and bytes.
    pub fn start<F>(
        path: &Path,
        every: Duration,
        intervals: Arc<Intervals>,
        live: F,
    ) -> io::Result<Reporter>
    where
        F: Fn() -> (u64, u64) + Send + 'static,
    {
        let file = File::create(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
        })?;
        let mut out = BufWriter::new(file);
        writeln!(out, "{HEADER}")?;
        out.flush()?;
        let every = every.max(Duration::from_millis(10));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut last = started;
            loop {
                let wait = (last + every).saturating_duration_since(Instant::now());
                let done = match stopped.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => false,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                };
                let now = Instant::now();
                let unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let counts = intervals.take();
                let secs = (now - last).as_secs_f64();
                if !done || counts.0.count + counts.1.count + counts.2 > 0 {
                    let at = (unix, (now - started).as_secs_f64());
                    writeln!(
                        out,
                        "{}",
                        line(at, intervals.phase(), secs, &counts, live())
                    )?;
                    out.flush()?;
                }
                last = now;
                if done {
                    return Ok(());
                }
            }
        });
        Ok(Reporter { stop, thread })
    }

    /// Writes the last interval and waits for the thread.
    pub fn finish(self) -> io::Result<()> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the --csv writer thread panicked")))
    }
}

/// Starts the CSV writer when `--report-every` is given; exits (status 2)
/// if the file cannot be created, before any request is sent.
pub fn start<F>(cfg: &Config, intervals: Arc<Intervals>, live: F) -> Option<Reporter>
where
    F: Fn() -> (u64, u64) + Send + 'static,
{
    let (every, path) = (cfg.report_every?, cfg.csv.as_ref()?);
    match Reporter::start(path, every, intervals, live) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("escabelo-bench: --csv: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_holds_only_its_interval() {
        let dir = std::env::temp_dir().join(format!("escabelo-interval-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.csv");
        let iv = Arc::new(Intervals::new(true));
        let r = Reporter::start(&path, Duration::from_secs(3600), iv.clone(), || (7, 700)).unwrap();
        // From another thread too: shards are per thread.
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..50 {
                    iv.record(Op::Read, Duration::from_millis(2));
                }
            });
        });
        for _ in 0..50 {
            iv.record(Op::Read, Duration::from_millis(10));
        }
        iv.record(Op::Write, Duration::from_micros(300));
        iv.error();
        iv.set_phase(Phase::Run);
        r.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines.len(), 2, "{text}");
        let f: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(f.len(), HEADER.split(',').count());
        assert_eq!(f[2], "run");
        let p50: u64 = f[6].parse().unwrap();
        let p99: u64 = f[8].parse().unwrap();
        assert!(
            (1990..=2010).contains(&p50) || (9990..=10010).contains(&p50),
            "{p50}"
        );
        assert!((9990..=10010).contains(&p99), "{p99}");
        assert!((299..=301).contains(&f[9].parse::<u64>().unwrap()));
        assert_eq!(&f[12..], ["1", "7", "700"]);
        // Emptied: the next interval starts from nothing.
        let (read, write, errors) = iv.take();
        assert_eq!((read.count, write.count, errors), (0, 0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rates_are_per_second_of_the_interval() {
        let (mut read, mut write) = (OpStats::new(), OpStats::new());
        for _ in 0..100 {
            read.record(Duration::from_millis(1));
        }
        write.record(Duration::from_millis(4));
        let l = line((1.0, 2.0), Phase::Preload, 2.0, &(read, write, 0), (0, 0));
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(&f[2..6], ["preload", "2.000000", "50.0", "0.5"]);
        let p50: u64 = f[9].parse().unwrap();
        assert!((3995..=4005).contains(&p50), "{p50}");
    }

    #[test]
    fn off_records_nothing() {
        let iv = Intervals::new(false);
        iv.record(Op::Read, Duration::from_millis(1));
        let (read, _, _) = iv.take();
        assert_eq!(read.count, 0);
    }
}
