//! Request counters of this server process and the `status` reply.

use crate::protocol::text::STATUS_HEADER;
use bytes::{BufMut, BytesMut};
use escabelo_engine::{Db, Stats};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counters shared by every connection. Each figure is exact: it is
/// incremented when the reply to a request is produced.
#[derive(Debug)]
pub struct Counters {
    /// `write` requests answered by the engine.
    pub writes: AtomicU64,
    /// `read` requests answered.
    pub reads: AtomicU64,
    /// `delete` requests answered by the engine.
    pub deletes: AtomicU64,
    /// `keys` and `reads` requests answered.
    pub scans: AtomicU64,
    /// Requests rejected before reaching the engine (bad syntax, limits).
    pub bad_requests: AtomicU64,
    /// Clients connected now.
    pub connections: AtomicU64,
    /// Clients accepted since start.
    pub connections_total: AtomicU64,
    /// Clients refused because of `--max-connections`.
    pub connections_refused: AtomicU64,
    /// RESP commands received.
    pub commands: AtomicU64,
    /// Reads through RESP that found their key.
    pub keyspace_hits: AtomicU64,
    /// Reads through RESP that did not.
    pub keyspace_misses: AtomicU64,
    /// Bytes received from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes sent to clients.
    pub net_output_bytes: AtomicU64,
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
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            scans: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            keyspace_hits: AtomicU64::new(0),
            keyspace_misses: AtomicU64::new(0),
            net_input_bytes: AtomicU64::new(0),
            net_output_bytes: AtomicU64::new(0),
            next_client_id: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Time since the server started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Adds one to a counter.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the whole `status` reply, final `\r` included.
    pub fn encode_status(&self, db: &Db, out: &mut BytesMut) {
        let s = db.stats();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut line = String::with_capacity(512);
        // `write!` to a String cannot fail.
        let _ = write!(
            line,
            "writes={} reads={} deletes={} flushes={} memtable_size={} sst_count={} wal_size={}",
            get(&self.writes),
            get(&self.reads),
            get(&self.deletes),
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
            get(&self.scans),
            get(&self.bad_requests),
            get(&self.connections),
            get(&self.connections_total),
            get(&self.connections_refused),
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
