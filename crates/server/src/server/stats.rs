//! Request counters of this server process and the `status` reply.

use crate::protocol::text::STATUS_HEADER;
use bytes::{BufMut, BytesMut};
use escabelo_engine::{Counter, Db, Stats};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counters shared by every connection. Each figure is exact: it is
/// incremented when the reply to a request is produced. The per-request
/// ones are striped by thread ([`Counter`]), so that the event loops do
/// not pass their cache lines back and forth.
#[derive(Debug)]
pub struct Counters {
    /// `write` requests answered by the engine.
    pub writes: Counter,
    /// `read` requests answered.
    pub reads: Counter,
    /// `delete` requests answered by the engine.
    pub deletes: Counter,
    /// `keys` and `reads` requests answered.
    pub scans: Counter,
    /// Requests rejected before reaching the engine (bad syntax, limits).
    pub bad_requests: Counter,
    /// Clients connected now.
    pub connections: AtomicU64,
    /// Clients accepted since start.
    pub connections_total: Counter,
    /// Clients refused because of `--max-connections`.
    pub connections_refused: Counter,
    /// RESP commands received.
    pub commands: Counter,
    /// Reads through RESP that found their key.
    pub keyspace_hits: Counter,
    /// Reads through RESP that did not.
    pub keyspace_misses: Counter,
    /// Bytes received from clients.
    pub net_input_bytes: Counter,
    /// Bytes sent to clients.
    pub net_output_bytes: Counter,
    /// The last client id handed out.
    pub next_client_id: AtomicU64,
    started: Instant,
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}

impl Counters {
    /// Zeroed counters; uptime starts now.
    pub fn new() -> Counters {
        Counters {
            writes: Counter::new(),
            reads: Counter::new(),
            deletes: Counter::new(),
            scans: Counter::new(),
            bad_requests: Counter::new(),
            connections: AtomicU64::new(0),
            connections_total: Counter::new(),
            connections_refused: Counter::new(),
            commands: Counter::new(),
            keyspace_hits: Counter::new(),
            keyspace_misses: Counter::new(),
            net_input_bytes: Counter::new(),
            net_output_bytes: Counter::new(),
            next_client_id: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Time since the server started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Appends the whole `status` reply, final `\r` included.
    pub fn encode_status(&self, db: &Db, out: &mut BytesMut) {
        let s = db.stats();
        let mut line = String::with_capacity(512);
        // `write!` to a String cannot fail.
        let _ = write!(
            line,
            "writes={} reads={} deletes={} flushes={} memtable_size={} sst_count={} wal_size={}",
            self.writes.get(),
            self.reads.get(),
            self.deletes.get(),
            s.flushes,
            s.memtable_size,
            s.sst_count,
            s.wal_size,
        );
        for (name, value) in storage_fields(&s) {
            let _ = write!(line, " {name}={value}");
        }
        let _ = write!(
            line,
            " scans={} bad_requests={} connections={} connections_total={} \
             connections_refused={} uptime_s={} durability={}",
            self.scans.get(),
            self.bad_requests.get(),
            self.connections.load(Ordering::Relaxed),
            self.connections_total.get(),
            self.connections_refused.get(),
            self.started.elapsed().as_secs(),
            db.options().durability,
        );
        out.reserve(STATUS_HEADER.len() + line.len() + 1);
        out.put_slice(STATUS_HEADER);
        out.put_slice(line.as_bytes());
        out.put_u8(b'\r');
    }
}

/// The engine's storage figures beyond the original seven, by name, in the
/// order `status` lists them (INFO's `# Escabelo` section lists them too).
pub fn storage_fields(s: &Stats) -> [(&'static str, u64); 15] {
    [
        ("immutable_memtable_size", s.immutable_memtable_size),
        ("sst_bytes", s.sst_bytes),
        ("blob_files", s.blob_files),
        ("blob_bytes", s.blob_bytes),
        ("blob_garbage_bytes", s.blob_garbage_bytes),
        ("disk_bytes", s.disk_bytes),
        ("bytes_written", s.bytes_written),
        ("user_bytes_written", s.user_bytes_written),
        ("compactions", s.compactions),
        ("blob_gcs", s.blob_gcs),
        ("cache_hits", s.cache_hits),
        ("cache_misses", s.cache_misses),
        ("cache_bytes", s.cache_bytes),
        ("wal_syncs", s.wal_syncs),
        ("write_stalls", s.write_stalls),
    ]
}
