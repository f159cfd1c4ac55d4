//! Prometheus metrics: what is counted per request, and the text exposition
//! of everything at scrape time ([`render`]).
//!
//! Per request, the server only bumps relaxed atomics in [`RECORDER`]
//! (requests by protocol and command, error replies by kind, read and
//! write latency histograms): no lock, no allocation. Everything else is
//! read when `/metrics` is scraped: the connection and byte counters of
//! [`Counters`], the engine's [`Db::stats`] and [`Db::histograms`], and
//! the process's own figures from `/proc/self` ([`process`]). The text is
//! produced with the `prometheus` crate's encoder; [`http`] serves it.
//!
//! [`RECORDER`] is one per process (the process runs one server): a static
//! reaches every place an error reply is made without threading a handle
//! through them, and costs a write no reference count.

pub mod http;
pub mod process;

use crate::command::COMMAND_NAMES;
use crate::protocol::text::Request;
use crate::server::stats::Counters;
use escabelo_engine::db::metrics::LATENCY_BOUNDS_NS;
use escabelo_engine::{Db, Found, Histogram, HistogramSnapshot, Stats, WriteHistograms};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
/// The clock of the request-latency histograms: the CPU's time-stamp
/// counter where it is usable (calibrated against the system clock by
/// `quanta`), which costs a few nanoseconds where `clock_gettime` took 6%
/// of a pipelined GET.
use quanta::Instant;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Text-protocol commands, as the `command` label names them; requests
/// the parser refused count as `other`.
pub const TEXT_COMMANDS: &[&str] = &[
    "write", "read", "delete", "status", "keys", "reads", "other",
];
const TEXT_OTHER: usize = TEXT_COMMANDS.len() - 1;
/// RESP commands counted: every served command ([`COMMAND_NAMES`]), then
/// `other` for unknown names.
const RESP_SLOTS: usize = COMMAND_NAMES.len() + 1;

/// Why an error reply was sent (the `kind` label of
/// `escabelo_errors_total`). Requests refused by a parser are counted by
/// [`Counters::bad_requests`] and reported as kind `bad_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A RESP command name the server does not serve.
    UnknownCommand,
    /// A RESP command with the wrong number of arguments.
    WrongArity,
    /// A RESP command with arguments it cannot parse.
    Syntax,
    /// A key or value over the limits (or an empty key).
    Limit,
    /// The engine failed the request (I/O error, disk full, read-only,
    /// shutting down).
    Engine,
}

/// Every [`ErrorKind`], in the order of its counters, with its label.
const ERROR_KINDS: [(ErrorKind, &str); 5] = [
    (ErrorKind::UnknownCommand, "unknown_command"),
    (ErrorKind::WrongArity, "wrong_arity"),
    (ErrorKind::Syntax, "syntax"),
    (ErrorKind::Limit, "limit"),
    (ErrorKind::Engine, "engine"),
];

/// The per-request counters of this process.
pub struct Recorder {
    text: [AtomicU64; TEXT_COMMANDS.len()],
    resp: [AtomicU64; RESP_SLOTS],
    errors: [AtomicU64; ERROR_KINDS.len()],
    /// Single-key reads (text `read`, `GET`): engine time, nanoseconds.
    read: Histogram,
    /// Writes and transactions: from submission to the engine until
    /// acknowledged, nanoseconds.
    write: Histogram,
}

/// The recorder every connection counts into.
pub static RECORDER: Recorder = Recorder::new();

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// All zero.
    pub const fn new() -> Recorder {
        Recorder {
            text: [const { AtomicU64::new(0) }; TEXT_COMMANDS.len()],
            resp: [const { AtomicU64::new(0) }; RESP_SLOTS],
            errors: [const { AtomicU64::new(0) }; ERROR_KINDS.len()],
            read: Histogram::new(LATENCY_BOUNDS_NS),
            write: Histogram::new(LATENCY_BOUNDS_NS),
        }
    }

    /// Counts a text-protocol request.
    #[inline]
    pub fn text_request(&self, req: &Request) {
        let i = match req {
            Request::Write { .. } => 0,
            Request::Read { .. } => 1,
            Request::Delete { .. } => 2,
            Request::Status => 3,
            Request::Keys => 4,
            Request::Reads { .. } => 5,
            Request::Invalid(_) => TEXT_OTHER,
        };
        self.text[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a RESP command: `index` into [`COMMAND_NAMES`], `None` for
    /// an unknown name.
    #[inline]
    pub fn resp_request(&self, index: Option<usize>) {
        let i = index.filter(|&i| i < COMMAND_NAMES.len());
        self.resp[i.unwrap_or(COMMAND_NAMES.len())].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error reply.
    #[inline]
    pub fn error(&self, kind: ErrorKind) {
        let i = ERROR_KINDS
            .iter()
            .position(|(k, _)| *k == kind)
            .unwrap_or(0);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// One single-key read in this many, on each thread, is timed. Reading
/// the clock twice per read cost 13-20% of a pipelined GET's throughput
/// (docs/performance.md, thirteenth pass); a read that is not timed
/// counts with the duration of its thread's last timed read.
pub const READ_TIMING_EVERY: u32 = 16;

thread_local! {
    /// Reads left until this thread times one, and the duration of its
    /// last timed read in nanoseconds.
    static READ_CLOCK: Cell<(u32, u64)> = const { Cell::new((0, 0)) };
}

/// Reads `key` and counts it in the read-latency histogram. Every read is
/// counted; one in [`READ_TIMING_EVERY`] on each thread is timed (the
/// first one included), and the others count with the last timed
/// duration, so the histogram's count is exact and its buckets and sum
/// are a sample.
#[inline]
pub fn timed_get(db: &Db, key: &[u8]) -> escabelo_engine::Result<Option<Found>> {
    let (left, last) = READ_CLOCK.with(Cell::get);
    if left > 0 {
        let r = db.get_found(key);
        RECORDER.read.observe(last);
        READ_CLOCK.with(|c| c.set((left - 1, last)));
        return r;
    }
    let start = Instant::now();
    let r = db.get_found(key);
    let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    RECORDER.read.observe(ns);
    READ_CLOCK.with(|c| c.set((READ_TIMING_EVERY - 1, ns)));
    r
}

/// The sending side of a write's reply channel: sending records the time
/// since the channel was made in the write-latency histogram.
pub struct TimedSender<T> {
    tx: oneshot::Sender<T>,
    start: Instant,
}

impl<T> TimedSender<T> {
    /// Records the write's latency and delivers its outcome (`Err` gives
    /// the value back if the receiver is gone).
    pub fn send(self, value: T) -> Result<(), T> {
        RECORDER.write.observe_duration(self.start.elapsed());
        self.tx.send(value)
    }
}

/// A oneshot channel for a write's outcome whose sender times the write
/// (see [`TimedSender`]). Make it right before submitting.
#[inline]
pub fn write_channel<T>() -> (TimedSender<T>, oneshot::Receiver<T>) {
    let (tx, rx) = oneshot::channel();
    (
        TimedSender {
            tx,
            start: Instant::now(),
        },
        rx,
    )
}

/// Everything one scrape reports, gathered first so that the text is
/// built without holding anything.
pub struct Scrape<'a> {
    /// The server's connection and byte counters.
    pub counters: &'a Counters,
    /// The per-request counters.
    pub recorder: &'a Recorder,
    /// The engine's figures.
    pub stats: Stats,
    /// The engine's histograms.
    pub histograms: WriteHistograms,
    /// The process's figures (absent where `/proc` could not be read).
    pub process: process::ProcessStats,
}

impl<'a> Scrape<'a> {
    /// Takes the figures of `db` and this process now.
    pub fn take(counters: &'a Counters, recorder: &'a Recorder, db: &Db) -> Scrape<'a> {
        Scrape {
            counters,
            recorder,
            stats: db.stats(),
            histograms: db.histograms(),
            process: process::ProcessStats::read(),
        }
    }
}

/// Builds metric families; every family gets a HELP and a TYPE.
struct Families(Vec<MetricFamily>);

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

impl Families {
    fn family(&mut self, name: &str, help: &str, t: MetricType, metrics: Vec<proto::Metric>) {
        if metrics.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(t);
        f.set_metric(metrics);
        self.0.push(f);
    }

    fn value(labels: &[(&str, &str)], t: MetricType, v: f64) -> proto::Metric {
        let mut m = proto::Metric::from_label(labels.iter().map(|(n, v)| label(n, v)).collect());
        match t {
            MetricType::COUNTER => {
                let mut c = proto::Counter::default();
                c.set_value(v);
                m.set_counter(c);
            }
            _ => {
                let mut g = proto::Gauge::default();
                g.set_value(v);
                m.set_gauge(g);
            }
        }
        m
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let m = Self::value(&[], MetricType::COUNTER, v as f64);
        self.family(name, help, MetricType::COUNTER, vec![m]);
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        let m = Self::value(&[], MetricType::GAUGE, v);
        self.family(name, help, MetricType::GAUGE, vec![m]);
    }

    /// A family of one series per `(label values, value)`.
    fn labeled<'l>(
        &mut self,
        name: &str,
        help: &str,
        t: MetricType,
        label_names: &[&str],
        series: impl IntoIterator<Item = (Vec<&'l str>, f64)>,
    ) {
        let metrics = series
            .into_iter()
            .map(|(values, v)| {
                let labels: Vec<(&str, &str)> = label_names.iter().copied().zip(values).collect();
                Self::value(&labels, t, v)
            })
            .collect();
        self.family(name, help, t, metrics);
    }

    /// A histogram family; `scale` converts recorded values to the
    /// reported unit (1e-9 for nanoseconds to seconds).
    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        series: &[(&[(&str, &str)], &HistogramSnapshot)],
        scale: f64,
    ) {
        let metrics = series
            .iter()
            .map(|(labels, h)| {
                let mut p = proto::Histogram::default();
                p.set_sample_count(h.count());
                p.set_sample_sum(h.sum as f64 * scale);
                p.set_bucket(
                    h.cumulative()
                        .map(|(bound, n)| {
                            let mut b = proto::Bucket::default();
                            b.set_upper_bound(bound as f64 * scale);
                            b.set_cumulative_count(n);
                            b
                        })
                        .collect(),
                );
                let mut m =
                    proto::Metric::from_label(labels.iter().map(|(n, v)| label(n, v)).collect());
                m.set_histogram(p);
                m
            })
            .collect();
        self.family(name, help, MetricType::HISTOGRAM, metrics);
    }
}

const NS: f64 = 1e-9;

/// The Prometheus text exposition of `s`.
pub fn render(s: &Scrape) -> String {
    let mut f = Families(Vec::with_capacity(64));
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let c = s.counters;
    let r = s.recorder;
    let st = &s.stats;

    f.labeled(
        "escabelo_build_info",
        "Always 1; the version label is the server's version.",
        MetricType::GAUGE,
        &["version"],
        [(vec![env!("CARGO_PKG_VERSION")], 1.0)],
    );
    let text = TEXT_COMMANDS
        .iter()
        .zip(&r.text)
        .map(|(name, n)| (vec!["text", *name], get(n) as f64));
    let resp = COMMAND_NAMES
        .iter()
        .chain(std::iter::once(&"other"))
        .zip(&r.resp)
        .map(|(name, n)| (vec!["resp", *name], get(n) as f64));
    f.labeled(
        "escabelo_requests_total",
        "Requests received, by protocol (text, resp) and command (unknown commands and refused text requests count as other).",
        MetricType::COUNTER,
        &["protocol", "command"],
        text.chain(resp),
    );
    let errors = ERROR_KINDS
        .iter()
        .zip(&r.errors)
        .map(|((_, name), n)| (vec![*name], get(n) as f64))
        .chain(std::iter::once((
            vec!["bad_request"],
            get(&c.bad_requests) as f64,
        )));
    f.labeled(
        "escabelo_errors_total",
        "Error replies, by kind: bad_request (malformed or over a protocol limit), unknown_command, wrong_arity, syntax, limit (key or value size), engine (storage failure).",
        MetricType::COUNTER,
        &["kind"],
        errors,
    );
    f.histogram(
        "escabelo_request_duration_seconds",
        "Request latency: op=read is the engine time of a single-key read (text read, GET), every read counted and one in 16 per thread timed (the others count with their thread's last timed duration); op=write runs from submission of a write or transaction to the engine until it is acknowledged (durable per --durability).",
        &[
            (&[("op", "read")], &r.read.snapshot()),
            (&[("op", "write")], &r.write.snapshot()),
        ],
        NS,
    );
    f.gauge(
        "escabelo_connections",
        "Clients connected now.",
        get(&c.connections) as f64,
    );
    f.gauge(
        "escabelo_input_buffers_kept_bytes",
        "Bytes of emptied input buffers that busy connections keep for their next long request.",
        crate::server::input::INPUT_BUDGET.used() as f64,
    );
    f.counter(
        "escabelo_connections_accepted_total",
        "Clients accepted since start.",
        get(&c.connections_total),
    );
    f.counter(
        "escabelo_connections_refused_total",
        "Clients refused because of --max-connections.",
        get(&c.connections_refused),
    );
    f.counter(
        "escabelo_network_received_bytes_total",
        "Bytes received from clients.",
        get(&c.net_input_bytes),
    );
    f.counter(
        "escabelo_network_sent_bytes_total",
        "Bytes sent to clients.",
        get(&c.net_output_bytes),
    );
    f.labeled(
        "escabelo_keyspace_lookups_total",
        "Single-key reads through RESP, by whether the key was found.",
        MetricType::COUNTER,
        &["result"],
        [
            (vec!["hit"], get(&c.keyspace_hits) as f64),
            (vec!["miss"], get(&c.keyspace_misses) as f64),
        ],
    );

    f.gauge(
        "escabelo_keys_estimated",
        "Estimated keys: entries in the memtables and table files. An upper bound: overwritten versions and tombstones count until a compaction merges them (DBSIZE gives the exact count).",
        (st.table_entries + st.memtable_entries) as f64,
    );
    f.labeled(
        "escabelo_memtable_bytes",
        "Bytes of keys, values and entry overhead in the memtables, by state (active, or frozen and waiting for a flush).",
        MetricType::GAUGE,
        &["state"],
        [
            (vec!["active"], st.memtable_size as f64),
            (vec!["frozen"], st.immutable_memtable_size as f64),
        ],
    );
    f.gauge(
        "escabelo_wal_bytes",
        "Bytes of records in the live write-ahead log segments.",
        st.wal_size as f64,
    );
    f.counter(
        "escabelo_wal_fsyncs_total",
        "fdatasync calls on the write-ahead log.",
        st.wal_syncs,
    );
    f.histogram(
        "escabelo_wal_fsync_duration_seconds",
        "Duration of each fdatasync of the write-ahead log.",
        &[(&[], &s.histograms.fsync_ns)],
        NS,
    );
    f.histogram(
        "escabelo_wal_batch_requests",
        "Requests per write-ahead log write (group-commit batch size).",
        &[(&[], &s.histograms.batch_requests)],
        1.0,
    );
    f.counter(
        "escabelo_disk_written_bytes_total",
        "Bytes written to disk: log, tables and blobs.",
        st.bytes_written,
    );
    f.counter(
        "escabelo_user_written_bytes_total",
        "Bytes of keys and values written by clients (divide disk_written by this for write amplification).",
        st.user_bytes_written,
    );
    let levels: Vec<String> = (0..st.level_files.len().max(st.level_bytes.len()))
        .map(|l| l.to_string())
        .collect();
    f.labeled(
        "escabelo_table_files",
        "Live table files, by level.",
        MetricType::GAUGE,
        &["level"],
        levels
            .iter()
            .zip(&st.level_files)
            .map(|(l, n)| (vec![l.as_str()], *n as f64)),
    );
    f.labeled(
        "escabelo_table_bytes",
        "Bytes of live table files, by level.",
        MetricType::GAUGE,
        &["level"],
        levels
            .iter()
            .zip(&st.level_bytes)
            .map(|(l, n)| (vec![l.as_str()], *n as f64)),
    );
    f.gauge(
        "escabelo_blob_files",
        "Live blob files (large values).",
        st.blob_files as f64,
    );
    f.gauge(
        "escabelo_blob_bytes",
        "Bytes of live blob files, garbage included.",
        st.blob_bytes as f64,
    );
    f.gauge(
        "escabelo_blob_garbage_bytes",
        "Bytes in blob files known to be dead, awaiting garbage collection.",
        st.blob_garbage_bytes as f64,
    );
    f.gauge(
        "escabelo_disk_bytes",
        "Bytes of the files the engine keeps: tables, blobs, and log files with their preallocated space.",
        st.disk_bytes as f64,
    );
    f.counter(
        "escabelo_flushes_total",
        "Memtable flushes completed.",
        st.flushes,
    );
    f.counter(
        "escabelo_flush_written_bytes_total",
        "Bytes of table and blob files written by flushes.",
        st.flush_bytes_written,
    );
    f.counter(
        "escabelo_compactions_total",
        "Compactions completed (trivial moves included).",
        st.compactions,
    );
    f.counter(
        "escabelo_compaction_read_bytes_total",
        "Bytes of table files merged by compactions.",
        st.compaction_bytes_read,
    );
    f.counter(
        "escabelo_compaction_written_bytes_total",
        "Bytes of table files written by compactions.",
        st.compaction_bytes_written,
    );
    f.counter(
        "escabelo_blob_gcs_total",
        "Blob files rewritten by garbage collection.",
        st.blob_gcs,
    );
    f.counter(
        "escabelo_blob_gc_read_bytes_total",
        "Bytes of blob files read by garbage collection.",
        st.blob_gc_bytes_read,
    );
    f.counter(
        "escabelo_blob_gc_written_bytes_total",
        "Bytes of blob files written by garbage collection.",
        st.blob_gc_bytes_written,
    );
    f.counter(
        "escabelo_write_stalls_total",
        "Write batches delayed or held by backpressure (flushes or level-0 compaction behind).",
        st.write_stalls,
    );
    f.counter(
        "escabelo_cache_hits_total",
        "Value-cache hits.",
        st.cache_hits,
    );
    f.counter(
        "escabelo_cache_misses_total",
        "Value-cache misses.",
        st.cache_misses,
    );
    f.gauge(
        "escabelo_cache_bytes",
        "Bytes held by the value cache.",
        st.cache_bytes as f64,
    );
    f.gauge(
        "escabelo_recovery_dropped_records",
        "Log records the last open dropped as the unsynced tail of a crash.",
        st.wal_dropped_records as f64,
    );
    s.process.families(&mut f);

    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&f.0, &mut out) {
        // Only a family without series or a bad name fails; both are
        // bugs. Report it in the body rather than serve a broken scrape.
        tracing::error!(error = %e, "encoding metrics failed");
        out.clear();
        out.push_str(&format!("# encoding failed: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::text::RequestError;

    fn sample<'a>(c: &'a Counters, r: &'a Recorder) -> Scrape<'a> {
        Scrape {
            counters: c,
            recorder: r,
            stats: Stats {
                level_files: vec![2, 1],
                level_bytes: vec![300, 700],
                wal_syncs: 4,
                ..Stats::default()
            },
            histograms: WriteHistograms {
                fsync_ns: Histogram::new(LATENCY_BOUNDS_NS).snapshot(),
                batch_requests: Histogram::new(&[1, 2, 4]).snapshot(),
            },
            process: process::ProcessStats::default(),
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}:\n{text}"))
    }

    #[test]
    fn counts_requests_errors_and_latency() {
        let c = Counters::new();
        let r = Recorder::new();
        r.text_request(&Request::Status);
        r.text_request(&Request::Invalid(RequestError::WriteFormat));
        r.resp_request(COMMAND_NAMES.iter().position(|n| *n == "get"));
        r.resp_request(None);
        r.error(ErrorKind::Engine);
        r.read.observe(2_000_000);
        Counters::bump(&c.bad_requests);
        let text = render(&sample(&c, &r));
        assert_eq!(
            line(
                &text,
                "escabelo_requests_total{protocol=\"text\",command=\"status\"}"
            ),
            "escabelo_requests_total{protocol=\"text\",command=\"status\"} 1"
        );
        line(
            &text,
            "escabelo_requests_total{protocol=\"text\",command=\"other\"} 1",
        );
        line(
            &text,
            "escabelo_requests_total{protocol=\"resp\",command=\"get\"} 1",
        );
        line(
            &text,
            "escabelo_requests_total{protocol=\"resp\",command=\"other\"} 1",
        );
        line(&text, "escabelo_errors_total{kind=\"engine\"} 1");
        line(&text, "escabelo_errors_total{kind=\"bad_request\"} 1");
        line(
            &text,
            "escabelo_request_duration_seconds_bucket{op=\"read\",le=\"0.001\"} 0",
        );
        line(
            &text,
            "escabelo_request_duration_seconds_bucket{op=\"read\",le=\"0.0025\"} 1",
        );
        line(
            &text,
            "escabelo_request_duration_seconds_sum{op=\"read\"} 0.002",
        );
        line(
            &text,
            "escabelo_request_duration_seconds_count{op=\"write\"} 0",
        );
        line(&text, "escabelo_table_bytes{level=\"1\"} 700");
        line(&text, "escabelo_table_files{level=\"0\"} 2");
        line(&text, "escabelo_wal_fsyncs_total 4");
        line(&text, "escabelo_wal_batch_requests_bucket{le=\"4\"} 0");
    }

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        let c = Counters::new();
        let r = Recorder::new();
        let text = render(&sample(&c, &r));
        let mut types = 0;
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            types += 1;
            let mut w = l.split(' ').skip(2);
            let (name, t) = (w.next().unwrap(), w.next().unwrap());
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            assert_eq!(name.ends_with("_total"), t == "counter", "{l}");
            assert!(
                name.starts_with("escabelo_") || name.starts_with("process_"),
                "{name}"
            );
        }
        assert!(types > 30, "{text}");
    }
}
