//! One client connection: read, parse, execute, answer in order.
//!
//! Every parsed request becomes an entry of an ordered queue. Writes and
//! deletes are submitted to the engine at once (so pipelined writes share a
//! log write) and wait in the queue for their acknowledgement; reads, scans
//! and `status` are executed only when they reach the front, so they see
//! every earlier write of the same connection and replies leave in request
//! order. Finished replies are gathered in one output buffer and sent with
//! as few writes as possible.
//!
//! Memory per connection is bounded: the input buffer holds at most one
//! unfinished request (see [`crate::protocol::text`]) plus one read, and
//! reading pauses while the queued and unsent replies exceed
//! [`OUT_LIMIT`] bytes or [`QUEUE_LIMIT`] requests.

use crate::error::reply_reason;
use crate::protocol::text::{self, Parser, Request};
use crate::protocol::{detect, Protocol};
use crate::server::stats::Counters;
use bytes::{Buf, Bytes, BytesMut};
use escabelo_engine::{Db, Error, WriteOp};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Reading pauses while unsent reply bytes plus the bytes of queued
/// requests (including writes the engine has not acknowledged yet) pass
/// this bound.
pub const OUT_LIMIT: usize = 4 * 1024 * 1024;
/// Reading pauses while this many requests wait for their replies.
pub const QUEUE_LIMIT: usize = 4096;
/// Room made for the first socket read of a burst.
const READ_MIN: usize = 4 * 1024;
/// Room made for one socket read at most (values larger than this arrive
/// over several reads).
const READ_MAX: usize = 256 * 1024;
/// Buffers larger than this are freed when they become empty, so idle
/// connections hold little memory.
const KEEP_BUFFER: usize = 64 * 1024;

/// What a connection needs from the server.
#[derive(Clone)]
pub struct Context {
    /// The database.
    pub db: Db,
    /// Shared request counters.
    pub counters: Arc<Counters>,
    /// Largest value accepted.
    pub max_value_len: usize,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// A request waiting for its reply, in request order.
enum Pending {
    /// The encoded reply.
    Ready(Bytes),
    /// A write or delete submitted to the engine.
    Write {
        rx: oneshot::Receiver<escabelo_engine::Result<bool>>,
        delete: bool,
        /// Bytes of key and value held by the engine until the write is
        /// acknowledged (counted in `Conn::queued_bytes`).
        size: usize,
    },
    /// A read, executed when it reaches the front.
    Read(Bytes),
    /// `status`, computed when it reaches the front.
    Status,
    /// `keys` (`None`) or `reads <prefix>`, started when it reaches the front.
    Scan(Option<Bytes>),
    /// A running scan.
    Scanning(JoinHandle<Bytes>),
}

/// The outcome of waiting on the front of the queue.
enum Done {
    Write(
        Result<escabelo_engine::Result<bool>, oneshot::error::RecvError>,
        bool,
        usize,
    ),
    Scan(Result<Bytes, tokio::task::JoinError>),
}

struct Conn {
    ctx: Context,
    parser: Parser,
    inbuf: BytesMut,
    out: BytesMut,
    queue: VecDeque<Pending>,
    /// Bytes held by queue entries (ready replies, keys of queued reads).
    queued_bytes: usize,
    /// Chosen by the first byte received.
    protocol: Option<Protocol>,
}

/// Serves one client until it disconnects, or until shutdown once every
/// request it already sent is answered.
pub async fn serve(mut stream: TcpStream, ctx: Context) {
    let mut shutdown = ctx.shutdown.clone();
    let mut conn = Conn {
        parser: Parser::new(ctx.max_value_len),
        ctx,
        inbuf: BytesMut::new(),
        out: BytesMut::new(),
        queue: VecDeque::new(),
        queued_bytes: 0,
        protocol: None,
    };
    let (mut rd, wr) = stream.split();
    let mut eof = false;
    let mut stopping = *shutdown.borrow();
    let mut read_size = READ_MIN;
    loop {
        conn.resolve_front();
        let stalled = conn.parse_available();
        conn.resolve_front();
        if (eof || stopping) && !stalled && conn.queue.is_empty() && conn.out.is_empty() {
            break;
        }
        let can_read = !eof && !stopping && !stalled;
        let waiting = matches!(
            conn.queue.front(),
            Some(Pending::Write { .. } | Pending::Scanning(_))
        );
        tokio::select! {
            // Wait for readiness before making room, so that an idle
            // connection holds at most a small buffer. Reading through
            // `AsyncRead` lets a partial read mark the socket drained, which
            // saves a failing `recv` per request.
            r = read_some(&mut rd, &mut conn.inbuf, read_size), if can_read => {
                match r {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        // Grow the reads of a busy connection.
                        if n >= read_size {
                            read_size = (read_size * 2).min(READ_MAX);
                        }
                    }
                    Err(_) => return,
                }
            },
            r = wr.writable(), if !conn.out.is_empty() => {
                if r.is_err() {
                    return;
                }
                match wr.try_write(&conn.out) {
                    Ok(0) => return,
                    Ok(n) => {
                        conn.out.advance(n);
                        if conn.out.is_empty() && conn.out.capacity() > KEEP_BUFFER {
                            conn.out = BytesMut::new();
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            },
            done = wait_front(&mut conn.queue), if waiting => conn.complete_front(done),
            r = shutdown.changed(), if !stopping => {
                // A closed channel means the server is gone: stop too.
                stopping = r.is_err() || *shutdown.borrow();
            }
        }
        if conn.inbuf.is_empty() && conn.inbuf.capacity() > KEEP_BUFFER {
            conn.inbuf = BytesMut::new();
            read_size = READ_MIN;
        }
    }
    let _ = stream.shutdown().await;
}

/// Waits until the socket is readable, then reads what is there (up to
/// `size` more bytes of room). Cancel-safe: nothing is lost if another
/// branch wins.
async fn read_some(
    rd: &mut tokio::net::tcp::ReadHalf<'_>,
    buf: &mut BytesMut,
    size: usize,
) -> std::io::Result<usize> {
    rd.readable().await?;
    buf.reserve(size);
    rd.read_buf(buf).await
}

/// Waits until the front entry (a write or a scan) completes.
async fn wait_front(queue: &mut VecDeque<Pending>) -> Done {
    match queue.front_mut() {
        Some(Pending::Write { rx, delete, size }) => {
            let (delete, size) = (*delete, *size);
            Done::Write(rx.await, delete, size)
        }
        Some(Pending::Scanning(h)) => Done::Scan(h.await),
        // Not reached: the branch is only enabled for the two cases above.
        _ => std::future::pending().await,
    }
}

impl Conn {
    /// Parses requests from the input buffer until more bytes are needed
    /// (returns `false`) or the reply bounds are reached (returns `true`).
    fn parse_available(&mut self) -> bool {
        if self.protocol.is_none() {
            match self.inbuf.first() {
                Some(&b) => self.protocol = Some(detect(b)),
                None => return false,
            }
        }
        loop {
            if self.out.len() + self.queued_bytes > OUT_LIMIT || self.queue.len() >= QUEUE_LIMIT {
                return true;
            }
            let next = match self.protocol {
                Some(Protocol::Text) | None => self.parser.next(&mut self.inbuf),
            };
            let Some(req) = next else {
                return false;
            };
            self.dispatch(req);
        }
    }

    fn dispatch(&mut self, req: Request) {
        match req {
            Request::Write { key, value } => {
                let size = key.len() + value.len();
                self.submit(WriteOp::Put { key, value }, false, size)
            }
            Request::Delete { key } => {
                let size = key.len();
                self.submit(WriteOp::Delete { key }, true, size)
            }
            Request::Read { key } => {
                if self.queue.is_empty() {
                    self.read_now(&key);
                } else {
                    self.queued_bytes += key.len();
                    self.queue.push_back(Pending::Read(key));
                }
            }
            Request::Status => self.queue.push_back(Pending::Status),
            Request::Keys => self.queue.push_back(Pending::Scan(None)),
            Request::Reads { prefix } => {
                self.queued_bytes += prefix.len();
                self.queue.push_back(Pending::Scan(Some(prefix)));
            }
            Request::Invalid(e) => {
                Counters::bump(&self.ctx.counters.bad_requests);
                if self.queue.is_empty() {
                    text::encode_error(&mut self.out, &e);
                } else {
                    let mut b = BytesMut::new();
                    text::encode_error(&mut b, &e);
                    self.queued_bytes += b.len();
                    self.queue.push_back(Pending::Ready(b.freeze()));
                }
            }
        }
    }

    fn submit(&mut self, op: WriteOp, delete: bool, size: usize) {
        self.queued_bytes += size;
        let (tx, rx) = oneshot::channel();
        self.ctx.db.submit(
            op,
            Box::new(move |r| {
                // The connection may be gone; the write stands anyway.
                let _ = tx.send(r);
            }),
        );
        self.queue.push_back(Pending::Write { rx, delete, size });
    }

    fn read_now(&mut self, key: &[u8]) {
        match self.ctx.db.get(key) {
            Ok(Some(v)) => text::encode_value(&mut self.out, &v),
            Ok(None) => text::encode_not_found(&mut self.out),
            Err(e) => text::encode_error(&mut self.out, &reply_reason(&e)),
        }
        Counters::bump(&self.ctx.counters.reads);
    }

    /// Moves every finished entry at the front of the queue into the output
    /// buffer, executing reads and `status`, and starting a scan if one is
    /// reached.
    fn resolve_front(&mut self) {
        while let Some(front) = self.queue.front_mut() {
            match front {
                Pending::Ready(b) => {
                    self.queued_bytes -= b.len();
                    self.out.extend_from_slice(b);
                }
                Pending::Read(key) => {
                    let key = std::mem::take(key);
                    self.queued_bytes -= key.len();
                    self.read_now(&key);
                }
                Pending::Status => self.ctx.counters.encode_status(&self.ctx.db, &mut self.out),
                Pending::Write { rx, delete, size } => {
                    let (delete, size) = (*delete, *size);
                    match rx.try_recv() {
                        Ok(r) => self.write_done(Ok(r), delete, size),
                        Err(oneshot::error::TryRecvError::Empty) => return,
                        Err(oneshot::error::TryRecvError::Closed) => {
                            self.write_done(Err(()), delete, size)
                        }
                    }
                }
                Pending::Scan(prefix) => {
                    let prefix = prefix.take();
                    if let Some(p) = &prefix {
                        self.queued_bytes -= p.len();
                    }
                    let db = self.ctx.db.clone();
                    let h = tokio::task::spawn_blocking(move || scan(&db, prefix.as_deref()));
                    *front = Pending::Scanning(h);
                    return;
                }
                // Collected by `complete_front` once it finishes.
                Pending::Scanning(_) => return,
            }
            self.queue.pop_front();
        }
    }

    fn complete_front(&mut self, done: Done) {
        match done {
            Done::Write(r, delete, size) => self.write_done(r.map_err(|_| ()), delete, size),
            Done::Scan(Ok(reply)) => {
                Counters::bump(&self.ctx.counters.scans);
                self.out.extend_from_slice(&reply);
            }
            Done::Scan(Err(_)) => text::encode_error(&mut self.out, &"scan failed"),
        }
        self.queue.pop_front();
    }

    fn write_done(
        &mut self,
        r: Result<escabelo_engine::Result<bool>, ()>,
        delete: bool,
        size: usize,
    ) {
        self.queued_bytes -= size;
        let c = &self.ctx.counters;
        Counters::bump(if delete { &c.deletes } else { &c.writes });
        match r {
            Ok(Ok(true)) => text::encode_success(&mut self.out),
            Ok(Ok(false)) if delete => text::encode_not_found(&mut self.out),
            Ok(Ok(false)) => text::encode_success(&mut self.out),
            Ok(Err(e)) => text::encode_error(&mut self.out, &reply_reason(&e)),
            Err(()) => text::encode_error(&mut self.out, &reply_reason(&Error::Closed)),
        }
    }
}

/// Runs a `keys` (`prefix` is `None`) or `reads` scan and encodes the whole
/// reply. Blocking: runs on the blocking pool.
fn scan(db: &Db, prefix: Option<&[u8]>) -> Bytes {
    let mut out = BytesMut::new();
    let result: escabelo_engine::Result<()> = (|| {
        match prefix {
            None => {
                for k in db.keys()? {
                    text::encode_list_item(&mut out, &k?);
                }
            }
            Some(p) => {
                for kv in db.scan_prefix(p)? {
                    let (_, v) = kv?;
                    text::encode_list_item(&mut out, &v);
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        out.clear();
        text::encode_error(&mut out, &reply_reason(&e));
    } else if out.is_empty() {
        text::encode_empty_list(&mut out);
    }
    out.freeze()
}
