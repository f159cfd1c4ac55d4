//! Command-line flags, the rewriting of the original Go tool's single-dash
//! spelling, and duration parsing.

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Wire protocol spoken to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Escabelo's text protocol (`write k|v\r`, `read k\r`).
    Text,
    /// RESP2, as spoken by Redis (`SET`, `GET`, `DEL`).
    Resp,
}

impl Protocol {
    /// Lowercase name, as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Text => "text",
            Protocol::Resp => "resp",
        }
    }
}

/// Load generator for Escabelo (and Redis) with the challenge's workload:
/// values of 1 B..100 KiB in three size bands, 80% of requests on the hot
/// keys, and every value read checked against what could have been written.
#[derive(Debug, Clone, Parser)]
#[command(name = "escabelo-bench", version)]
pub struct Config {
    /// Server address (host:port). Nothing else is contacted.
    #[arg(long, env = "ESCABELO_BENCH_ADDR", default_value = "localhost:8080")]
    pub addr: String,

    /// How long to run the measured phase (e.g. 30s, 500ms, 2m, or plain seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Number of concurrent connections (one task each).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// Fraction of requests that are reads (0.0-1.0); the rest are writes.
    #[arg(long, default_value_t = 0.8, value_parser = parse_ratio)]
    pub read_ratio: f64,

    /// Number of distinct keys (`bench:000000` ...).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub key_count: u64,

    /// Fraction of the keys that are hot; 80% of requests go to them.
    #[arg(long, default_value_t = 0.2, value_parser = parse_ratio)]
    pub hot_key_ratio: f64,

    /// Requests in flight per connection (sent together, then N replies read).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub pipeline: u32,

    /// Size in bytes of every written value (0 = the challenge's three size
    /// bands). A value is never shorter than its self-check header (about 25 bytes).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64 * 1024 * 1024))]
    pub value_size: u32,

    /// Threads that drive the connections. 1 (the default) runs every
    /// connection on one event loop, like redis-benchmark, which keeps the
    /// bench's own CPU use (and what it takes from the server) small.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,

    /// Write every key once before the measured phase (not counted in the results).
    #[arg(long)]
    pub preload: bool,

    /// Assume an earlier run with the same --seed and --key-count preloaded
    /// every key: a miss is then an error and the live data size includes the
    /// preloaded values.
    #[arg(long, conflicts_with = "preload")]
    pub assume_preloaded: bool,

    /// Protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Text)]
    pub protocol: Protocol,

    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Seed for the random choices (keys, operations, sizes, preload sizes).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Timeout for connecting and for each batch of replies.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Stop after this many requests in total (0 = only the duration bounds the run).
    #[arg(long, default_value_t = 0)]
    pub max_requests: u64,

    /// Do not draw the live progress line.
    #[arg(long)]
    pub quiet: bool,

    /// Write one CSV line per interval of this length (throughput and
    /// latency percentiles of that interval alone) to the --csv file.
    #[arg(long, value_parser = parse_duration, requires = "csv")]
    pub report_every: Option<Duration>,

    /// File for --report-every (created or truncated; see interval.rs for
    /// the columns).
    #[arg(long, requires = "report_every")]
    pub csv: Option<std::path::PathBuf>,

    /// Instead of a load, read every key once and check that it holds
    /// exactly the value the preload with the same --seed and --key-count
    /// wrote; exits non-zero on any missing or different value.
    #[arg(long, conflicts_with_all = ["preload", "assume_preloaded"])]
    pub verify_all: bool,
}

impl Config {
    /// Parses the process arguments, accepting the original single-dash
    /// spelling (`-addr=localhost:8080 -duration=60s`).
    pub fn from_env_args() -> Self {
        Self::parse_from(rewrite_single_dash(std::env::args()))
    }
}

/// Rewrites Go-style `-name=value` and `-name value` arguments to `--name...`.
///
/// Only arguments that start with exactly one dash followed by at least two
/// characters of a flag name are rewritten; `-h`, `-V`, `--x` and plain values
/// (including negative numbers) are left alone.
pub fn rewrite_single_dash<I, S>(args: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    args.into_iter()
        .map(Into::into)
        .enumerate()
        .map(|(i, a)| {
            if i == 0 || a.starts_with("--") || !a.starts_with('-') {
                return a;
            }
            let body = &a[1..];
            let name = body.split('=').next().unwrap_or("");
            let is_flag_name = name.len() >= 2
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if is_flag_name {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// Parses `30s`, `500ms`, `2m`, `1h`, `1.5s` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 30s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a fraction between 0 and 1 inclusive.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number: {s:?}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be between 0 and 1: {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_is_rewritten() {
        let out = rewrite_single_dash([
            "bench",
            "-addr=localhost:9",
            "-duration",
            "60s",
            "--json",
            "-h",
            "-read-ratio=0.5",
        ]);
        assert_eq!(
            out,
            [
                "bench",
                "--addr=localhost:9",
                "--duration",
                "60s",
                "--json",
                "-h",
                "--read-ratio=0.5"
            ]
        );
    }

    #[test]
    fn original_flags_parse() {
        let c = Config::parse_from(rewrite_single_dash([
            "bench",
            "-addr=localhost:8081",
            "-duration=60s",
            "-concurrency=20",
            "-read-ratio=0.8",
            "-key-count=50000",
            "-hot-key-ratio",
            "0.1",
        ]));
        assert_eq!(c.addr, "localhost:8081");
        assert_eq!(c.duration, Duration::from_secs(60));
        assert_eq!(c.concurrency, 20);
        assert_eq!(c.key_count, 50000);
        assert!((c.hot_key_ratio - 0.1).abs() < 1e-12);
        assert_eq!(c.pipeline, 1);
        assert_eq!(c.protocol, Protocol::Text);
    }

    #[test]
    fn defaults_match_the_original() {
        let c = Config::parse_from(["bench"]);
        assert_eq!(c.addr, "localhost:8080");
        assert_eq!(c.duration, Duration::from_secs(30));
        assert_eq!(c.concurrency, 10);
        assert!((c.read_ratio - 0.8).abs() < 1e-12);
        assert_eq!(c.key_count, 10000);
        assert!((c.hot_key_ratio - 0.2).abs() < 1e-12);
        assert_eq!(c.value_size, 0);
        assert_eq!(c.threads, 1);
    }

    #[test]
    fn threads() {
        assert_eq!(Config::parse_from(["bench", "--threads", "2"]).threads, 2);
        assert!(Config::try_parse_from(["bench", "--threads", "0"]).is_err());
    }

    #[test]
    fn value_size() {
        let c = Config::parse_from(["bench", "--value-size", "1024"]);
        assert_eq!(c.value_size, 1024);
        assert!(Config::try_parse_from(["bench", "--value-size", "-1"]).is_err());
        assert!(Config::try_parse_from(["bench", "--value-size", "99999999999"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3y").is_err());
    }
}
