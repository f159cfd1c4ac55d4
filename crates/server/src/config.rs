//! Command-line flags (each also read from `ESCABELO_<NAME>`), and their
//! mapping onto the engine's [`Options`].

use clap::{Parser, Subcommand};
use escabelo_engine::limits::VALUE_LEN_MAX_LIMIT;
use escabelo_engine::{Durability, Options};
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Escabelo: a persistent key-value database server speaking a small text
/// protocol over TCP.
///
/// Sizes accept plain byte counts (67108864) or suffixes (64MiB, 512KiB,
/// 1GiB; KB/MB/GB and K/M/G mean the same powers of 1024). Durations accept
/// 100ms, 1s, 5m, 1h, 1m30s (a plain number is seconds).
#[derive(Debug, Clone, Parser)]
#[command(name = "escabelo", version)]
pub struct Config {
    /// TCP port to listen on.
    #[arg(long, env = "ESCABELO_PORT", default_value_t = 8080)]
    pub port: u16,

    /// IP address to bind.
    #[arg(long, env = "ESCABELO_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Directory holding the database files (created if missing).
    #[arg(long, env = "ESCABELO_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Bytes of keys and values buffered in memory before a flush to a table
    /// file. Overwritten versions count until the flush, so a larger
    /// memtable flushes fewer dead versions of hot keys (docs/performance.md).
    #[arg(long, env = "ESCABELO_MEMTABLE_SIZE", default_value = "128MiB", value_parser = parse_size)]
    pub memtable_size: u64,

    /// Period of the background compaction check.
    #[arg(long, env = "ESCABELO_COMPACTION_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub compaction_interval: Duration,

    /// With --durability=os, how often the write-ahead log is fsynced in the
    /// background.
    #[arg(long, env = "ESCABELO_WAL_SYNC_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub wal_sync_interval: Duration,

    /// When a write is acknowledged: "os" once the log record is in the
    /// operating system (survives kill -9), "sync" after an fsync (survives
    /// power loss; concurrent writers share one fsync).
    #[arg(long, env = "ESCABELO_DURABILITY", default_value = "os", value_parser = parse_durability)]
    pub durability: Durability,

    /// Largest value accepted, in bytes; larger writes get an error.
    #[arg(long, env = "ESCABELO_MAX_VALUE_SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub max_value_size: u64,

    /// Bytes of hot values kept in memory. 256MiB holds the challenge's
    /// 20,000 keys (140 MB) whole: a read that misses it costs a table
    /// lookup and a `pread` (docs/performance.md, fifth pass).
    #[arg(long, env = "ESCABELO_CACHE_SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub cache_size: u64,

    /// Bytes of table blocks kept in memory for point lookups (reads that
    /// miss the value cache, and the flush's and blob collection's
    /// lookups); 0 turns the block cache off.
    #[arg(long, env = "ESCABELO_BLOCK_CACHE_SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub block_cache_size: u64,

    /// Dead share (0 to 1] at which a blob file (values of 1 KiB and more)
    /// is rewritten while writes come in. Rewriting copies the live share,
    /// so the default 0.75 copies a third of what it reclaims; lower keeps
    /// less dead space during bursts for more background writing. 5 s after
    /// the last write, files with 5% dead space or more are rewritten
    /// whatever this says.
    #[arg(long, env = "ESCABELO_BLOB_GC_THRESHOLD", default_value_t = 0.75)]
    pub blob_gc_threshold: f64,

    /// Most clients connected at once; extra clients get
    /// "error: too many connections" and are disconnected.
    #[arg(long, env = "ESCABELO_MAX_CONNECTIONS", default_value_t = 10000)]
    pub max_connections: usize,

    /// Threads serving client connections (parsing, replies, reads, and in
    /// `os` mode the log writes); 0, the default, means one per core, and
    /// at most 1024. Each runs an event loop of its own, and a connection
    /// stays on the loop it was given when it connected (as Redis's single
    /// loop, without work stealing between threads: docs/performance.md,
    /// twelfth pass). Flushes, compactions, blob collection and the `sync`
    /// mode fdatasyncs run on threads of their own.
    #[arg(long, env = "ESCABELO_IO_THREADS", default_value_t = 0)]
    pub io_threads: usize,

    /// While a single client is connected, how long (microseconds) the
    /// event loop serving it polls its socket before sleeping, so that its
    /// next request is read without a sleep and a wake-up (docs/performance.md,
    /// thirteenth pass); 0 turns it off, at most 1000. Costs up to this much
    /// CPU per request of that client; not used with --durability=sync.
    #[arg(long, env = "ESCABELO_BUSY_POLL_US", default_value_t = crate::server::busy_poll::BUSY_POLL_US_DEFAULT)]
    pub busy_poll_us: u64,

    /// While a single client is connected, how long (microseconds) after
    /// its last request a thread of the idle scheduling class keeps a core
    /// awake by spinning, so that the reply does not wake the client on a
    /// halted vCPU (docs/performance.md, fourteenth pass); 0 turns it off,
    /// at most 100000. It only takes otherwise idle CPU, and parks once the
    /// client pauses for that long, and while the log is being synced
    /// (fifteenth pass).
    #[arg(long, env = "ESCABELO_KEEP_AWAKE_US", default_value_t = crate::server::keep_awake::KEEP_AWAKE_US_DEFAULT)]
    pub keep_awake_us: u64,

    /// TCP port of the Prometheus endpoint (`GET /metrics`, plain HTTP), on
    /// the --bind address; 0 turns it off.
    #[arg(long, env = "ESCABELO_METRICS_PORT", default_value_t = 9187)]
    pub metrics_port: u16,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive
    /// such as "escabelo=debug".
    #[arg(long, env = "ESCABELO_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Run an offline tool instead of the server.
    #[command(subcommand)]
    pub command: Option<Tool>,
}

/// Offline tools; each takes the directory lock, so the server must be
/// stopped (except `log --follow`, which only reads).
#[derive(Debug, Clone, Subcommand)]
pub enum Tool {
    /// Verify every checksum of every file and print a report; exits 1 if
    /// anything is damaged.
    Check {
        /// Data directory to check (default: the top-level --data-dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Salvage every intact record into a consistent database. The original
    /// files are moved to <data-dir>/lost/<time>/, never deleted.
    Repair {
        /// Data directory to repair (default: the top-level --data-dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List the operations still held in the write-ahead log, in replay
    /// order; exits 1 if a log is damaged.
    Log {
        /// Data directory to read (default: the top-level --data-dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Take no lock and keep polling for new operations until
        /// interrupted (read-only: safe while the server runs).
        #[arg(long)]
        follow: bool,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
        /// First list the entries of the level-0 tables (the most recent
        /// flushes), oldest table first.
        #[arg(long)]
        tables: bool,
    },
}

/// Long flags that the original Go program accepted with a single dash.
const LEGACY_FLAGS: &[&str] = &[
    "port",
    "bind",
    "data-dir",
    "memtable-size",
    "compaction-interval",
    "wal-sync-interval",
    "durability",
    "max-value-size",
    "cache-size",
    "max-connections",
    "log-level",
    "metrics-port",
    "io-threads",
    "help",
    "version",
];

/// Rewrites Go-style single-dash long flags (`-port=8080`, `-port 8080`)
/// to `--port...` so clap accepts them. Stops at a bare `--`.
pub fn normalize_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest_verbatim = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || rest_verbatim {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            rest_verbatim = true;
            out.push(arg);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            let body = s.strip_prefix('-')?;
            if body.starts_with('-') {
                return None;
            }
            let name = body.split('=').next().unwrap_or(body);
            LEGACY_FLAGS
                .contains(&name)
                .then(|| OsString::from(format!("-{s}")))
        });
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

impl Config {
    /// Parses the process arguments (after the legacy rewrite) and the
    /// environment; prints help or an error and exits on bad input.
    pub fn from_args() -> Config {
        Config::parse_from(normalize_args(std::env::args_os()))
    }

    /// The engine options these flags describe.
    pub fn engine_options(&self) -> Result<Options, String> {
        let mut o = Options::new(self.data_dir.clone());
        o.durability = self.durability;
        o.wal_sync_interval = self.wal_sync_interval;
        o.compaction_interval = self.compaction_interval;
        o.memtable_size = to_usize(self.memtable_size, "--memtable-size")?;
        if o.memtable_size == 0 {
            return Err("--memtable-size must be greater than 0".into());
        }
        o.value_len_max = self.max_value_len()?;
        o.cache_size = to_usize(self.cache_size, "--cache-size")?;
        o.block_cache_size = to_usize(self.block_cache_size, "--block-cache-size")?;
        if !(self.blob_gc_threshold > 0.0 && self.blob_gc_threshold <= 1.0) {
            return Err(format!(
                "--blob-gc-threshold must be above 0 and at most 1, not {}",
                self.blob_gc_threshold
            ));
        }
        o.blob_gc_threshold = self.blob_gc_threshold;
        Ok(o)
    }

    /// Event loops serving connections: `--io-threads`, with 0 as one per
    /// core.
    pub fn io_threads(&self) -> Result<usize, String> {
        let max = crate::server::loops::IO_THREADS_MAX;
        match self.io_threads {
            0 => Ok(std::thread::available_parallelism().map_or(1, |n| n.get().min(max))),
            n if n > max => Err(format!("--io-threads {n} is over the limit of {max}")),
            n => Ok(n),
        }
    }

    /// `--busy-poll-us`, checked against its limit; 0 with
    /// `--durability sync`, where polling the socket would not notice a
    /// write's acknowledgement.
    pub fn busy_poll_us(&self) -> Result<u64, String> {
        let max = crate::server::busy_poll::BUSY_POLL_US_MAX;
        let n = checked_us(self.busy_poll_us, max, "--busy-poll-us")?;
        Ok(if self.durability == Durability::Sync {
            0
        } else {
            n
        })
    }

    /// `--keep-awake-us`, checked against its limit (in both durability
    /// modes: the spinner parks while the log syncs, `server::keep_awake`).
    pub fn keep_awake_us(&self) -> Result<u64, String> {
        let max = crate::server::keep_awake::KEEP_AWAKE_US_MAX;
        checked_us(self.keep_awake_us, max, "--keep-awake-us")
    }

    /// The value limit in bytes, checked against the engine's ceiling.
    pub fn max_value_len(&self) -> Result<usize, String> {
        let v = to_usize(self.max_value_size, "--max-value-size")?;
        if v > VALUE_LEN_MAX_LIMIT {
            return Err(format!(
                "--max-value-size {v} is over the engine's limit of {VALUE_LEN_MAX_LIMIT} bytes"
            ));
        }
        Ok(v)
    }
}

/// A single-client time of `flag`, `n` µs, refused over `max`.
fn checked_us(n: u64, max: u64, flag: &str) -> Result<u64, String> {
    if n > max {
        return Err(format!("{flag} {n} is over the limit of {max}"));
    }
    Ok(n)
}

fn to_usize(v: u64, flag: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("{flag} {v} is too large for this machine"))
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    s.parse()
}

/// Parses a byte size: `67108864`, `64MiB`, `64MB`, `64m`, `512KiB`, `1GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size {s:?}: expected a number like 64MiB"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: number too large"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// Parses a duration: `100ms`, `1s`, `5m`, `1h`, `1m30s`, `250us`; a plain
/// number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(split);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: expected e.g. 100ms, 1s, 5m"))?;
        let unit_secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (use ms, s, m, h)"
                ))
            }
        };
        let part = Duration::try_from_secs_f64(n * unit_secs)
            .map_err(|_| format!("invalid duration {s:?}: out of range"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("invalid duration {s:?}: out of range"))?;
        rest = next;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("67108864"), Ok(67108864));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("512kib"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999999999999").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn legacy_flags() {
        let a = normalize_args(args(&[
            "escabelo",
            "-port=8080",
            "-data-dir",
            "./d",
            "--bind=0.0.0.0",
            "-h",
        ]));
        assert_eq!(
            a,
            args(&[
                "escabelo",
                "--port=8080",
                "--data-dir",
                "./d",
                "--bind=0.0.0.0",
                "-h"
            ])
        );
        let c = Config::try_parse_from(normalize_args(args(&[
            "escabelo",
            "-port=8080",
            "-data-dir=./data",
            "-memtable-size=67108864",
            "-compaction-interval=5m",
            "-wal-sync-interval=1s",
        ])))
        .unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.memtable_size, 67108864);
        assert_eq!(c.wal_sync_interval, Duration::from_secs(1));
        assert_eq!(c.compaction_interval, Duration::from_secs(300));
    }

    #[test]
    fn defaults_map_to_options() {
        let c = Config::try_parse_from(["escabelo"]).unwrap();
        let o = c.engine_options().unwrap();
        assert_eq!(o.memtable_size, 128 << 20);
        assert_eq!(o.value_len_max, 16 << 20);
        assert_eq!(o.durability, Durability::Os);
        assert_eq!(c.metrics_port, 9187);
        let c =
            Config::try_parse_from(normalize_args(args(&["escabelo", "-metrics-port=0"]))).unwrap();
        assert_eq!(c.metrics_port, 0);
    }

    #[test]
    fn blob_gc_threshold_is_checked() {
        let c = Config::try_parse_from(["escabelo"]).unwrap();
        assert_eq!(c.engine_options().unwrap().blob_gc_threshold, 0.75);
        let c = Config::try_parse_from(["escabelo", "--blob-gc-threshold", "0.3"]).unwrap();
        assert_eq!(c.engine_options().unwrap().blob_gc_threshold, 0.3);
        for bad in ["0", "1.5", "-0.1", "NaN"] {
            let flag = format!("--blob-gc-threshold={bad}");
            let c = Config::try_parse_from(["escabelo", flag.as_str()]).unwrap();
            assert!(c.engine_options().is_err(), "{bad} accepted");
        }
        assert!(Config::try_parse_from(["escabelo", "--blob-gc-threshold", "half"]).is_err());
    }
}
