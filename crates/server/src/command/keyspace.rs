//! Keyspace commands: DEL, UNLINK, EXISTS, TYPE, TTL, PTTL, KEYS, SCAN,
//! DBSIZE, FLUSHDB, FLUSHALL; and the text protocol's `keys` and `reads`.
//!
//! Long listings are streamed: `keys`, `reads` and `KEYS` write their reply
//! in chunks through a [`Sink`] as the engine's iterator advances, so a
//! million keys are never held in memory at once. `KEYS` needs its count
//! before its items (RESP arrays are length-prefixed): its items are
//! gathered in memory up to [`SPOOL_MEMORY`] bytes and past that in an
//! unlinked temporary file.
//!
//! `SCAN` cursors are integers (clients parse them as such). Each cursor
//! handed out is mapped, in a bounded table shared by all connections, to
//! the exact position after the last key returned; the cursor's high bits
//! also carry the first bytes of that position, so a cursor that fell out
//! of the table resumes from there: some keys may come again (allowed by
//! SCAN's contract), but no key present for the whole scan is skipped.

use super::glob::Glob;
use super::strings::op;
use super::{engine_error, syntax_error, Call, KeyCmd, Out, Plan, Sink};
use crate::error::reply_reason;
use crate::protocol::text;
use crate::protocol::{resp, Wire};
use crate::reply::Reply;
use crate::server::connection::Context;
use crate::server::stats::Counters;
use crate::txn::{TxnAction, TxnCond};
use bytes::{BufMut, Bytes, BytesMut};
use escabelo_engine::{Db, Error, WriteOp};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, Write};

/// `KEYS` items kept in memory before spilling to a temporary file.
pub const SPOOL_MEMORY: usize = 4 * 1024 * 1024;
/// Cursors remembered by the table.
pub const CURSORS_MAX: usize = 4096;
/// Key bytes the cursor table may hold.
pub const CURSOR_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest `SCAN COUNT` honoured.
pub const SCAN_COUNT_MAX: usize = 100_000;
/// Key bytes one `SCAN` reply may hold before it stops early.
pub const SCAN_REPLY_BYTES: usize = 1024 * 1024;
/// Empty ranges one `SCAN` call may probe before it returns (see
/// [`RangeKeys`]).
pub const SCAN_PROBES_MAX: usize = 4096;
/// Deletes submitted at once by `FLUSHDB`.
const FLUSH_BATCH: usize = 1024;

fn del_done(c: &Counters, r: Result<escabelo_engine::Result<bool>, ()>) -> Reply {
    Counters::bump(&c.deletes);
    match r {
        Ok(Ok(existed)) => Reply::Int(existed as i64),
        Ok(Err(e)) => engine_error(&e),
        Err(()) => engine_error(&Error::Closed),
    }
}

/// `DEL key [key ...]` and `UNLINK`: the keys are removed atomically.
pub fn del(c: &mut Call) -> Out {
    let keys = &c.args[1..];
    if keys.len() == 1 && !c.in_multi && !keys[0].is_empty() {
        return Out::Plan(Plan::Write {
            op: WriteOp::Delete {
                key: keys[0].clone(),
            },
            finish: del_done,
        });
    }
    let ops = keys
        .iter()
        .filter(|k| !k.is_empty())
        .map(|k| op(k, TxnAction::Delete, TxnCond::Always, false))
        .collect();
    Out::Key(KeyCmd {
        ops,
        all_or_nothing: false,
        finish: Box::new(|r| Reply::Int(r.iter().filter(|x| x.applied).count() as i64)),
    })
}

/// `EXISTS key [key ...]`: counts every argument that exists (duplicates
/// too).
pub fn exists(c: &mut Call) -> Out {
    let keys: Vec<Bytes> = c.args[1..].to_vec();
    if c.in_multi {
        let ops = keys
            .iter()
            .map(|k| op(k, TxnAction::Get, TxnCond::Always, true))
            .collect();
        return Out::Key(KeyCmd {
            ops,
            all_or_nothing: false,
            finish: Box::new(|r| Reply::Int(r.iter().filter(|x| x.old.is_some()).count() as i64)),
        });
    }
    Out::Plan(Plan::Front(Box::new(move |ctx| {
        let mut n = 0;
        for k in &keys {
            match ctx.db.get(k) {
                Ok(Some(_)) => n += 1,
                Ok(None) => {}
                Err(e) => return engine_error(&e),
            }
        }
        Reply::Int(n)
    })))
}

fn presence(c: &mut Call, f: fn(bool) -> Reply, rf: super::ReadFinish) -> Out {
    let key = c.arg(1).clone();
    if c.in_multi {
        return Out::Key(KeyCmd {
            ops: vec![op(&key, TxnAction::Get, TxnCond::Always, true)],
            all_or_nothing: false,
            finish: Box::new(move |r| f(r[0].old.is_some())),
        });
    }
    Out::Plan(Plan::Read { key, finish: rf })
}

fn type_reply(present: bool) -> Reply {
    Reply::Status(if present { "string" } else { "none" }.into())
}

fn ttl_reply(present: bool) -> Reply {
    Reply::Int(if present { -1 } else { -2 })
}

/// `TYPE key`: `string` or `none`.
pub fn type_(c: &mut Call) -> Out {
    presence(c, type_reply, |_, r| match r {
        Ok(v) => type_reply(v.is_some()),
        Err(e) => engine_error(&e),
    })
}

/// `TTL key`: -1 when present (no expiry), -2 when absent.
pub fn ttl(c: &mut Call) -> Out {
    presence(c, ttl_reply, |_, r| match r {
        Ok(v) => ttl_reply(v.is_some()),
        Err(e) => engine_error(&e),
    })
}

/// `PTTL key`: as `TTL`.
pub fn pttl(c: &mut Call) -> Out {
    ttl(c)
}

fn not_in_multi(c: &Call) -> Option<Out> {
    c.in_multi
        .then(|| Reply::err("this command is not supported inside MULTI").into())
}

/// `DBSIZE`: the exact number of keys.
pub fn dbsize(c: &mut Call) -> Out {
    if let Some(o) = not_in_multi(c) {
        return o;
    }
    Out::Plan(Plan::Blocking(Box::new(|ctx| match count_keys(&ctx.db) {
        Ok(n) => Reply::Int(n as i64),
        Err(e) => engine_error(&e),
    })))
}

/// Counts the live keys (exact; a full key scan in the engine for now).
pub fn count_keys(db: &Db) -> escabelo_engine::Result<u64> {
    db.count_keys()
}

/// `FLUSHDB [ASYNC|SYNC]` and `FLUSHALL`: deletes every key through the
/// engine (durably), replying once every delete is acknowledged.
pub fn flushdb(c: &mut Call) -> Out {
    if let Some(o) = not_in_multi(c) {
        return o;
    }
    if c.args.len() > 2 || (c.args.len() == 2 && !c.is(1, "async") && !c.is(1, "sync")) {
        return syntax_error().into();
    }
    Out::Plan(Plan::Blocking(Box::new(|ctx| match flush_all(&ctx.db) {
        Ok(()) => Reply::Ok,
        Err(e) => engine_error(&e),
    })))
}

fn flush_all(db: &Db) -> escabelo_engine::Result<()> {
    loop {
        let batch: Vec<Bytes> = db.keys()?.take(FLUSH_BATCH).collect::<Result<_, _>>()?;
        if batch.is_empty() {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let n = batch.len();
        for key in batch {
            let tx = tx.clone();
            db.submit(
                WriteOp::Delete { key },
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
        }
        for _ in 0..n {
            rx.recv().unwrap_or(Err(Error::Closed))?;
        }
    }
}

/// Calls `f` with every live key that starts with `prefix`, in order,
/// until it returns `false`.
fn for_each_key(
    db: &Db,
    prefix: &[u8],
    mut f: impl FnMut(&[u8], Option<&[u8]>) -> bool,
) -> escabelo_engine::Result<()> {
    if prefix.is_empty() {
        for k in db.keys()? {
            if !f(&k?, None) {
                break;
            }
        }
    } else {
        for kv in db.scan_prefix(prefix)? {
            let (k, v) = kv?;
            if !f(&k, Some(&v)) {
                break;
            }
        }
    }
    Ok(())
}

/// The text protocol's `keys`: every key in the text grammar (keys written
/// through RESP that it cannot address are left out), streamed.
pub fn text_keys(ctx: &Context, sink: &mut Sink) {
    let mut any = false;
    let r = for_each_key(&ctx.db, b"", |k, _| {
        if text::is_text_key(k) {
            any = true;
            text::encode_list_item(&mut sink.buf, k);
        }
        sink.maybe_flush()
    });
    finish_text_list(ctx, sink, r, any);
}

/// The text protocol's `reads <prefix>`: the value of every key with the
/// prefix, in key order; values holding a `\r` (written through RESP) are
/// left out, as the protocol cannot frame them.
pub fn text_reads(ctx: &Context, prefix: &[u8], sink: &mut Sink) {
    let mut any = false;
    let r = (|| {
        for kv in ctx.db.scan_prefix(prefix)? {
            let (_, v) = kv?;
            if text::can_frame(&v) {
                any = true;
                text::encode_list_item(&mut sink.buf, &v);
            }
            if !sink.maybe_flush() {
                break;
            }
        }
        Ok(())
    })();
    finish_text_list(ctx, sink, r, any);
}

fn finish_text_list(ctx: &Context, sink: &mut Sink, r: escabelo_engine::Result<()>, any: bool) {
    Counters::bump(&ctx.counters.scans);
    match r {
        // An error after part of the list was sent ends the list with an
        // error line.
        Err(e) => text::encode_error(&mut sink.buf, &reply_reason(&e)),
        Ok(()) if !any => text::encode_empty_list(&mut sink.buf),
        Ok(()) => {}
    }
    sink.flush();
}

/// Encoded items gathered in memory, then in an unlinked temporary file.
struct Spool {
    mem: BytesMut,
    file: Option<std::fs::File>,
}

impl Spool {
    fn new() -> Spool {
        Spool {
            mem: BytesMut::new(),
            file: None,
        }
    }

    fn maybe_spill(&mut self) -> std::io::Result<()> {
        if self.mem.len() < SPOOL_MEMORY {
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(temp_file()?);
        }
        if let Some(f) = &mut self.file {
            f.write_all(&self.mem)?;
        }
        self.mem.clear();
        Ok(())
    }

    /// Sends everything to the sink.
    fn drain(mut self, sink: &mut Sink) -> std::io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.rewind()?;
            let mut chunk = vec![0u8; Sink::CHUNK];
            loop {
                let n = f.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                sink.buf.put_slice(&chunk[..n]);
                if !sink.maybe_flush() {
                    return Ok(());
                }
            }
        }
        for piece in self.mem.chunks(Sink::CHUNK) {
            sink.buf.put_slice(piece);
            if !sink.maybe_flush() {
                return Ok(());
            }
        }
        sink.flush();
        Ok(())
    }
}

fn temp_file() -> std::io::Result<std::fs::File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "escabelo-spool-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    // Unlinked at once: the space is freed when the file is closed.
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

/// `KEYS pattern`: streamed; a literal prefix of the pattern is served as
/// a range scan.
pub fn keys(c: &mut Call) -> Out {
    if let Some(o) = not_in_multi(c) {
        return o;
    }
    let pattern = c.arg(1).clone();
    let wire = super::wire_of(c.session);
    Out::Plan(Plan::Stream(Box::new(move |ctx, sink| {
        keys_stream(ctx, &pattern, wire, sink)
    })))
}

fn keys_stream(ctx: &Context, pattern: &[u8], wire: Wire, sink: &mut Sink) {
    let glob = Glob::new(pattern);
    let all = glob.matches_all();
    let mut spool = Spool::new();
    let mut n = 0usize;
    let mut io_err = None;
    let r = for_each_key(&ctx.db, glob.literal_prefix(), |k, _| {
        if all || glob.matches(k) {
            n += 1;
            resp::encode_bulk(&mut spool.mem, k);
            if let Err(e) = spool.maybe_spill() {
                io_err = Some(e);
                return false;
            }
        }
        true
    });
    Counters::bump(&ctx.counters.scans);
    let fail = match (r, io_err) {
        (Err(e), _) => Some(engine_error(&e)),
        (_, Some(e)) => Some(Reply::err(format!("KEYS spool failed: {e}"))),
        _ => None,
    };
    if let Some(reply) = fail {
        wire.encode(&mut sink.buf, &reply);
        sink.flush();
        return;
    }
    resp::encode_array_header(&mut sink.buf, n);
    if spool.drain(sink).is_err() {
        // The header is out: the reply cannot be completed. The
        // connection is closed.
        sink.abort();
    }
}

/// Where a scan resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The bound.
    pub key: Bytes,
    /// Whether the bound itself was already returned.
    pub exclusive: bool,
}

/// The table of SCAN cursors.
#[derive(Default)]
pub struct Cursors {
    seq: u64,
    map: HashMap<u64, Position>,
    order: VecDeque<u64>,
    bytes: usize,
}

/// Bits of the cursor holding the sequence number.
const SEQ_BITS: u32 = 23;
/// Bytes of the position carried in the cursor.
const PREFIX_BYTES: usize = 5;

impl Cursors {
    /// Remembers `pos` and returns its cursor (never 0).
    pub fn insert(&mut self, pos: Position) -> u64 {
        self.seq = (self.seq % ((1 << SEQ_BITS) - 1)) + 1;
        let mut prefix = 0u64;
        for i in 0..PREFIX_BYTES {
            prefix = (prefix << 8) | pos.key.get(i).copied().unwrap_or(0) as u64;
        }
        let cursor = (prefix << SEQ_BITS) | self.seq;
        self.bytes += pos.key.len();
        if let Some(old) = self.map.insert(cursor, pos) {
            self.bytes -= old.key.len();
        } else {
            self.order.push_back(cursor);
        }
        while self.order.len() > CURSORS_MAX || self.bytes > CURSOR_BYTES_MAX {
            let Some(c) = self.order.pop_front() else {
                break;
            };
            if let Some(p) = self.map.remove(&c) {
                self.bytes -= p.key.len();
            }
        }
        cursor
    }

    /// The position of a cursor: exact if remembered, else decoded from
    /// the cursor's bits (at or before the exact one).
    pub fn get(&self, cursor: u64) -> Position {
        if let Some(p) = self.map.get(&cursor) {
            return p.clone();
        }
        let prefix = cursor >> SEQ_BITS;
        let mut key: Vec<u8> = (0..PREFIX_BYTES)
            .map(|i| (prefix >> (8 * (PREFIX_BYTES - 1 - i))) as u8)
            .collect();
        while key.last() == Some(&0) {
            key.pop();
        }
        Position {
            key: key.into(),
            exclusive: false,
        }
    }
}

/// Scans kept open between `SCAN` calls, so that a scan walks one
/// engine iterator instead of seeking again at every call.
pub const LIVE_SCANS_MAX: usize = 8;
/// An open scan not resumed for this long is dropped (it pins the files
/// and memtables of its snapshot).
pub const LIVE_SCAN_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// The open scans, by the cursor that resumes them.
#[derive(Default)]
pub struct LiveScans {
    open: Vec<LiveScan>,
}

struct LiveScan {
    cursor: u64,
    within: Vec<u8>,
    at: std::time::Instant,
    range: RangeKeys,
}

impl LiveScans {
    /// Takes the open scan of `cursor`, if it is kept and was made for the
    /// same literal prefix.
    fn take(&mut self, cursor: u64, within: &[u8]) -> Option<RangeKeys> {
        self.open.retain(|l| l.at.elapsed() < LIVE_SCAN_TTL);
        let i = self
            .open
            .iter()
            .position(|l| l.cursor == cursor && l.within == within)?;
        Some(self.open.swap_remove(i).range)
    }

    fn put(&mut self, cursor: u64, within: &[u8], range: RangeKeys) {
        self.open.retain(|l| l.at.elapsed() < LIVE_SCAN_TTL);
        if self.open.len() >= LIVE_SCANS_MAX {
            // Drop the oldest.
            if let Some(i) = (0..self.open.len()).min_by_key(|&i| self.open[i].at) {
                self.open.swap_remove(i);
            }
        }
        self.open.push(LiveScan {
            cursor,
            within: within.to_vec(),
            at: std::time::Instant::now(),
            range,
        });
    }
}

/// One step of a [`RangeKeys`] walk.
pub enum Step {
    /// The next key.
    Key(Bytes),
    /// The probe budget ran out; resume at this position.
    Pause(Position),
    /// No more keys.
    End,
}

/// Keys at or after a position (and starting with a fixed prefix), in
/// order, built from prefix scans: after `S`, first the keys starting with
/// `S`, then for each shorter prefix `S[..i]` the keys starting with
/// `S[..i] + b` for every byte `b > S[i]`. Empty prefixes cost a probe
/// each; a budget bounds the work of one call.
pub struct RangeKeys {
    db: Db,
    start: Vec<u8>,
    within: usize,
    exclusive: bool,
    cur: Option<escabelo_engine::db::ScanIter>,
    /// Next piece: `None` = the keys starting with `start`; `Some((i, b))`
    /// = the keys starting with `start[..i] + b`.
    next_piece: Option<Option<(usize, u16)>>,
}

impl RangeKeys {
    /// Keys `>= pos` (or `> pos` if exclusive) that start with `within`.
    pub fn new(db: &Db, pos: &Position, within: &[u8]) -> RangeKeys {
        let mut r = RangeKeys {
            db: db.clone(),
            start: pos.key.to_vec(),
            within: within.len(),
            exclusive: pos.exclusive,
            cur: None,
            next_piece: Some(None),
        };
        if !r.start.starts_with(within) {
            if r.start.as_slice() < within {
                r.start = within.to_vec();
                r.exclusive = false;
            } else {
                r.next_piece = None;
            }
        }
        r
    }

    /// The next key; `budget` counts the probes (prefix scans) allowed.
    pub fn step(&mut self, budget: &mut usize) -> escabelo_engine::Result<Step> {
        loop {
            if let Some(it) = &mut self.cur {
                match it.next() {
                    Some(Ok((k, _))) => {
                        if self.exclusive && k.as_ref() == self.start.as_slice() {
                            continue;
                        }
                        return Ok(Step::Key(k));
                    }
                    Some(Err(e)) => return Err(e),
                    None => self.cur = None,
                }
            }
            let Some(piece) = self.next_piece else {
                return Ok(Step::End);
            };
            let prefix = match piece {
                None => self.start.clone(),
                Some((i, b)) => {
                    let mut p = self.start[..i].to_vec();
                    p.push(b as u8);
                    p
                }
            };
            if *budget == 0 {
                return Ok(Step::Pause(Position {
                    key: prefix.into(),
                    exclusive: piece.is_none() && self.exclusive,
                }));
            }
            *budget -= 1;
            self.next_piece = self.after(piece);
            self.cur = Some(self.db.scan_prefix(&prefix)?);
        }
    }

    fn after(&self, piece: Option<(usize, u16)>) -> Option<Option<(usize, u16)>> {
        // Level i: bytes after start[i]; levels from len-1 down to within.
        let (mut i, mut b) = match piece {
            None => {
                if self.start.len() <= self.within {
                    return None;
                }
                let i = self.start.len() - 1;
                (i, self.start[i] as u16 + 1)
            }
            Some((i, b)) => (i, b + 1),
        };
        loop {
            if b <= 255 {
                return Some(Some((i, b)));
            }
            if i <= self.within {
                return None;
            }
            i -= 1;
            b = self.start[i] as u16 + 1;
        }
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`.
pub fn scan(c: &mut Call) -> Out {
    if let Some(o) = not_in_multi(c) {
        return o;
    }
    let Some(cursor) = std::str::from_utf8(c.arg(1))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return Reply::err("invalid cursor").into();
    };
    let mut pattern: Option<Bytes> = None;
    let mut count = 10usize;
    let mut type_ok = true;
    let mut i = 2;
    while i < c.args.len() {
        if i + 1 >= c.args.len() {
            return syntax_error().into();
        }
        if c.is(i, "match") {
            pattern = Some(c.arg(i + 1).clone());
        } else if c.is(i, "count") {
            match resp::parse_i64(c.arg(i + 1)) {
                Some(n) if n >= 1 => count = (n as usize).min(SCAN_COUNT_MAX),
                Some(_) => return syntax_error().into(),
                None => return Reply::err("value is not an integer or out of range").into(),
            }
        } else if c.is(i, "type") {
            type_ok = c.arg(i + 1).eq_ignore_ascii_case(b"string");
        } else {
            return syntax_error().into();
        }
        i += 2;
    }
    let scan_reply = |cursor: u64, keys: Vec<Reply>| {
        Reply::Array(vec![
            Reply::Bulk(cursor.to_string().into()),
            Reply::Array(keys),
        ])
    };
    if !type_ok {
        return scan_reply(0, Vec::new()).into();
    }
    Out::Plan(Plan::Blocking(Box::new(move |ctx| {
        let glob = pattern.as_deref().map(Glob::new);
        let glob = glob.filter(|g| !g.matches_all());
        let within = glob.as_ref().map_or(&b""[..], |g| g.literal_prefix());
        let pos = if cursor == 0 {
            Position {
                key: Bytes::new(),
                exclusive: false,
            }
        } else {
            match ctx.info.cursors.lock() {
                Ok(t) => t.get(cursor),
                Err(_) => return Reply::err("cursor table unavailable"),
            }
        };
        let live = if cursor == 0 {
            None
        } else {
            ctx.info
                .scans
                .lock()
                .ok()
                .and_then(|mut l| l.take(cursor, within))
        };
        let mut range = match live {
            Some(r) => r,
            None => RangeKeys::new(&ctx.db, &pos, within),
        };
        let mut budget = SCAN_PROBES_MAX;
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut examined = 0;
        let mut last: Option<Bytes> = None;
        let resume = loop {
            if examined >= count || bytes >= SCAN_REPLY_BYTES {
                // Resume after the last key examined.
                break Some(match &last {
                    Some(k) => Position {
                        key: k.clone(),
                        exclusive: true,
                    },
                    None => pos.clone(),
                });
            }
            match range.step(&mut budget) {
                Ok(Step::Key(k)) => {
                    examined += 1;
                    if glob.as_ref().is_none_or(|g| g.matches(&k)) {
                        bytes += k.len();
                        out.push(Reply::Bulk(k.clone()));
                    }
                    last = Some(k);
                }
                Ok(Step::Pause(p)) => break Some(p),
                Ok(Step::End) => break None,
                Err(e) => return engine_error(&e),
            }
        };
        Counters::bump(&ctx.counters.scans);
        let cursor = match resume {
            None => 0,
            Some(p) => match ctx.info.cursors.lock() {
                Ok(mut t) => t.insert(p),
                Err(_) => return Reply::err("cursor table unavailable"),
            },
        };
        if cursor != 0 {
            if let Ok(mut l) = ctx.info.scans.lock() {
                l.put(cursor, within, range);
            }
        }
        scan_reply(cursor, out)
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_spills_to_a_file_and_drains_in_order() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let item = |i: u32| vec![(i % 251) as u8; 4000];
        let producer = std::thread::spawn(move || {
            let mut sink = Sink::new(tx);
            let mut spool = Spool::new();
            for i in 0..3000u32 {
                resp::encode_bulk(&mut spool.mem, &item(i));
                spool.maybe_spill().unwrap();
                // Memory stays bounded while items are gathered.
                assert!(spool.mem.len() < SPOOL_MEMORY + 5000);
            }
            assert!(spool.file.is_some(), "12 MB of items must spill");
            spool.drain(&mut sink).unwrap();
        });
        let mut got = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            assert!(chunk.len() <= 2 * Sink::CHUNK);
            got.extend_from_slice(&chunk);
        }
        producer.join().unwrap();
        let mut want = BytesMut::new();
        for i in 0..3000u32 {
            resp::encode_bulk(&mut want, &item(i));
        }
        assert!(got == want[..], "drained bytes differ");
    }

    #[test]
    fn range_keys_positions() {
        // `after` walks the levels in ascending order.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(escabelo_engine::Options::new(dir.path())).unwrap();
        let keys: [&[u8]; 10] = [
            b"a",
            b"ab",
            b"abc",
            b"abd",
            b"ac",
            b"b",
            b"ba",
            b"b\xff",
            b"b\xff\xff",
            b"c",
        ];
        for k in keys {
            db.put(k, b"v").unwrap();
        }
        let walk = |pos: Position, within: &[u8], budget: usize| {
            let mut r = RangeKeys::new(&db, &pos, within);
            let mut out = Vec::new();
            let mut b = budget;
            loop {
                match r.step(&mut b).unwrap() {
                    Step::Key(k) => out.push(String::from_utf8_lossy(&k).into_owned()),
                    Step::Pause(p) => {
                        // Resume from the pause position with a new budget.
                        r = RangeKeys::new(&db, &p, within);
                        b = budget;
                    }
                    Step::End => return out,
                }
            }
        };
        let pos = |k: &str, ex: bool| Position {
            key: Bytes::copy_from_slice(k.as_bytes()),
            exclusive: ex,
        };
        let all: Vec<String> = keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(walk(pos("", false), b"", 1000), all);
        assert_eq!(walk(pos("abc", true), b"", 1000), all[3..].to_vec());
        assert_eq!(walk(pos("abc", false), b"", 1000), all[2..].to_vec());
        assert_eq!(walk(pos("abz", false), b"", 1000), all[4..].to_vec());
        assert_eq!(walk(pos("", false), b"ab", 1000), all[1..4].to_vec());
        assert_eq!(walk(pos("abc", true), b"ab", 1000), all[3..4].to_vec());
        assert_eq!(walk(pos("b", true), b"b", 1000), all[6..9].to_vec());
        assert_eq!(walk(pos("zz", false), b"b", 1000), Vec::<String>::new());
        // A tiny budget pauses often but returns the same keys.
        assert_eq!(walk(pos("abc", true), b"", 2), all[3..].to_vec());
        db.close().unwrap();
    }

    #[test]
    fn cursor_table_round_trip_and_fallback() {
        let mut t = Cursors::default();
        let p = Position {
            key: Bytes::from_static(b"user:12345"),
            exclusive: true,
        };
        let c = t.insert(p.clone());
        assert_ne!(c, 0);
        assert!(c < (1 << 63));
        assert_eq!(t.get(c), p);
        // Forgotten cursors resume at the first bytes of the position.
        let t2 = Cursors::default();
        let fallback = t2.get(c);
        assert_eq!(fallback.key.as_ref(), b"user:");
        assert!(!fallback.exclusive);
        assert!(fallback.key.as_ref() <= p.key.as_ref());
        // Bounded.
        for i in 0..(CURSORS_MAX + 10) {
            t.insert(Position {
                key: Bytes::from(format!("k{i}")),
                exclusive: true,
            });
        }
        assert!(t.map.len() <= CURSORS_MAX);
    }
}
