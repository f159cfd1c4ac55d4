//! Counting results (HDR histograms in microseconds) and printing them as a
//! table or as one JSON object.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::{Config, Protocol};

/// Highest latency the histograms track exactly (larger ones are clamped).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Counters and latency histogram for one kind of request.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Replies received.
    pub count: u64,
    /// Failed requests: error replies, bad values, unexpected misses, and
    /// requests lost with their connection.
    pub errors: u64,
    /// Reads of keys that were not known to exist and were absent.
    pub misses: u64,
    /// Value bytes sent (writes) or received (reads).
    pub bytes: u64,
    /// Latency of every reply, in microseconds.
    pub hist: Histogram<u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        Self::new()
    }
}

impl OpStats {
    /// Empty counters.
    pub fn new() -> Self {
        // Bounds are constants that are valid; fall back to an auto-resizing
        // histogram should that ever change.
        let hist = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .or_else(|_| Histogram::new(3))
            .unwrap_or_else(|_| unreachable!("3 significant figures is valid"));
        OpStats {
            count: 0,
            errors: 0,
            misses: 0,
            bytes: 0,
            hist,
        }
    }

    /// Records one reply that took `latency`.
    pub fn record(&mut self, latency: Duration) {
        self.count += 1;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Adds another set of counters to this one.
    pub fn merge(&mut self, other: &OpStats) {
        self.count += other.count;
        self.errors += other.errors;
        self.misses += other.misses;
        self.bytes += other.bytes;
        // Both histograms share bounds; if adding fails, count the loss.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }
}

/// Counters for the reads and the writes of one connection or of the run.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Reads.
    pub read: OpStats,
    /// Writes.
    pub write: OpStats,
    /// Failed attempts to connect (or reconnect) during the measured phase.
    pub connect_errors: u64,
}

impl Results {
    /// Adds another connection's results.
    pub fn merge(&mut self, other: &Results) {
        self.read.merge(&other.read);
        self.write.merge(&other.write);
        self.connect_errors += other.connect_errors;
    }

    /// Reads and writes together.
    pub fn total(&self) -> OpStats {
        let mut t = self.read.clone();
        t.merge(&self.write);
        t
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// Summary of one kind of request.
#[derive(Debug, Clone, Serialize)]
pub struct OpSummary {
    /// Replies received.
    pub count: u64,
    /// Replies per second of the measured phase.
    pub ops_per_sec: f64,
    /// Value megabytes (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Value bytes moved.
    pub bytes: u64,
    /// Failed requests.
    pub errors: u64,
    /// Reads of absent keys that were not known to exist.
    pub misses: u64,
    /// Latency in microseconds.
    pub latency_us: Latency,
}

impl OpSummary {
    /// Summarises `s` over `elapsed`.
    pub fn new(s: &OpStats, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let h = &s.hist;
        let empty = h.is_empty();
        let q = |p: f64| if empty { 0 } else { h.value_at_quantile(p) };
        OpSummary {
            count: s.count,
            ops_per_sec: s.count as f64 / secs,
            mb_per_sec: s.bytes as f64 / secs / 1e6,
            bytes: s.bytes,
            errors: s.errors,
            misses: s.misses,
            latency_us: Latency {
                p50: q(0.50),
                p95: q(0.95),
                p99: q(0.99),
                max: if empty { 0 } else { h.max() },
                mean: if empty { 0.0 } else { h.mean() },
            },
        }
    }
}

/// The whole run, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Server address.
    pub addr: String,
    /// Protocol spoken.
    pub protocol: Protocol,
    /// Connections.
    pub concurrency: u32,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// Fraction of reads.
    pub read_ratio: f64,
    /// Number of keys.
    pub key_count: u64,
    /// Fraction of hot keys.
    pub hot_key_ratio: f64,
    /// Seed.
    pub seed: u64,
    /// Whether every key was written before the measured phase.
    pub preloaded: bool,
    /// Seconds the preload took (0 without one).
    pub preload_secs: f64,
    /// Writes sent by the preload (not in the results below).
    pub preload_writes: u64,
    /// Failed preload writes.
    pub preload_errors: u64,
    /// Seconds the measured phase lasted.
    pub elapsed_secs: f64,
    /// Reads.
    pub read: OpSummary,
    /// Writes.
    pub write: OpSummary,
    /// Reads and writes together.
    pub total: OpSummary,
    /// Keys known to exist at the end (preloaded or written).
    pub live_keys: u64,
    /// Sum of the latest written value size plus key size over the live keys.
    pub live_bytes: u64,
    /// Failed attempts to connect during the measured phase.
    pub connect_errors: u64,
    /// All errors: reads, writes, connects and the preload's; non-zero
    /// means a non-zero exit status.
    pub errors: u64,
    /// The first few error messages.
    pub error_samples: Vec<String>,
}

impl Report {
    /// Assembles the report of a run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &Config,
        results: &Results,
        elapsed: Duration,
        preload: (Duration, u64, u64),
        live: (u64, u64),
        error_samples: Vec<String>,
    ) -> Self {
        let total = results.total();
        let (preload_time, preload_writes, preload_errors) = preload;
        Report {
            addr: cfg.addr.clone(),
            protocol: cfg.protocol,
            concurrency: cfg.concurrency,
            pipeline: cfg.pipeline,
            read_ratio: cfg.read_ratio,
            key_count: cfg.key_count,
            hot_key_ratio: cfg.hot_key_ratio,
            seed: cfg.seed,
            preloaded: cfg.preload || cfg.assume_preloaded,
            preload_secs: preload_time.as_secs_f64(),
            preload_writes,
            preload_errors,
            elapsed_secs: elapsed.as_secs_f64(),
            read: OpSummary::new(&results.read, elapsed),
            write: OpSummary::new(&results.write, elapsed),
            connect_errors: results.connect_errors,
            errors: total.errors + preload_errors + results.connect_errors,
            total: OpSummary::new(&total, elapsed),
            live_keys: live.0,
            live_bytes: live.1,
            error_samples,
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as a human-readable table.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "escabelo-bench: {} ({}), {} connections x pipeline {}, {:.1}s, read ratio {:.2}, {} keys ({:.0}% hot)\n",
            self.addr,
            self.protocol.name(),
            self.concurrency,
            self.pipeline,
            self.elapsed_secs,
            self.read_ratio,
            self.key_count,
            self.hot_key_ratio * 100.0
        ));
        if self.preloaded {
            s.push_str(&format!(
                "preload: {} writes in {:.1}s, {} errors\n",
                self.preload_writes, self.preload_secs, self.preload_errors
            ));
        }
        s.push('\n');
        s.push_str(&format!(
            "{:<6} {:>10} {:>11} {:>9} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}\n",
            "op",
            "count",
            "ops/s",
            "MB/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "errors",
            "misses"
        ));
        for (name, o) in [
            ("read", &self.read),
            ("write", &self.write),
            ("total", &self.total),
        ] {
            let ms = |us: u64| us as f64 / 1000.0;
            s.push_str(&format!(
                "{:<6} {:>10} {:>11.1} {:>9.2} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>8} {:>8}\n",
                name,
                o.count,
                o.ops_per_sec,
                o.mb_per_sec,
                ms(o.latency_us.p50),
                ms(o.latency_us.p95),
                ms(o.latency_us.p99),
                ms(o.latency_us.max),
                o.errors,
                o.misses
            ));
        }
        s.push_str(&format!(
            "\nlive data: {} keys, {} bytes (values + keys)\n",
            self.live_keys, self.live_bytes
        ));
        if self.errors > 0 {
            s.push_str(&format!(
                "ERRORS: {} (connect failures: {}, preload: {})\n",
                self.errors, self.connect_errors, self.preload_errors
            ));
            for e in &self.error_samples {
                s.push_str(&format!("  {e}\n"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let mut a = OpStats::new();
        for us in 1..=100u64 {
            a.record(Duration::from_micros(us * 10));
        }
        let mut b = OpStats::new();
        b.record(Duration::from_secs(2));
        b.errors = 1;
        a.merge(&b);
        let s = OpSummary::new(&a, Duration::from_secs(1));
        assert_eq!(s.count, 101);
        assert_eq!(s.errors, 1);
        assert!((500..=515).contains(&s.latency_us.p50));
        assert!((950..=970).contains(&s.latency_us.p95));
        assert!(s.latency_us.max >= 1_999_000);
        assert!((s.ops_per_sec - 101.0).abs() < 1e-9);
    }
}
