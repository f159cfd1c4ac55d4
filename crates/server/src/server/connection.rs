//! One client connection: read, parse, plan, answer in order. This loop
//! knows neither protocol: the first bytes choose a parser
//! ([`crate::protocol::detect`]), the command layer ([`crate::command`])
//! turns each request into a [`Plan`], and replies are encoded with the
//! [`Wire`] in effect when their request was parsed.
//!
//! Every parsed request becomes an entry of an ordered queue. Writes and
//! transactions are submitted to the engine at once (so pipelined writes
//! share a log write) and wait in the queue for their acknowledgement;
//! reads, scans and the other commands are executed only when they reach
//! the front, so they see every earlier write of the same connection and
//! replies leave in request order. Finished replies are gathered in an
//! [`Output`] (long values are not copied into it) and sent with as few
//! writes as possible.
//!
//! Memory per connection is bounded: the input buffer holds at most one
//! unfinished request (see the parsers' limits) plus one read, reading
//! pauses while the queued requests and unsent replies exceed
//! [`OUT_LIMIT`] bytes or [`QUEUE_LIMIT`] requests, and long replies are
//! streamed in chunks that are only accepted while the output buffer is
//! under [`OUT_LIMIT`].

use crate::command::keyspace::Cursors;
use crate::command::{
    self, Job, Plan, ReadFinish, Session, Sink, StreamJob, TxnFinish, WriteFinish,
};
use crate::metrics;
use crate::protocol::resp::{self, Parsed};
use crate::protocol::text::{self, Parser};
use crate::protocol::{detect, Detect, Protocol, Wire};
use crate::reply::Reply;
use crate::server::input::{self, Keep};
use crate::server::output::Output;
use crate::server::stats::Counters;
use crate::txn::TxnResult;
use bytes::{Bytes, BytesMut};
use escabelo_engine::{Db, WriteOp};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
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
/// connections hold little memory (an input buffer may be kept up to
/// [`input::KEEP_EACH_MAX`] while the shared [`input::INPUT_BUDGET`] allows).
const KEEP_BUFFER: usize = 64 * 1024;
/// How long a first line that ends in `\r` and could be a Redis inline
/// command waits for a `\n` before it is taken as the text protocol.
pub const DETECT_CR_WAIT: Duration = Duration::from_millis(20);
/// Chunks of a streamed reply in flight between producer and connection.
const STREAM_CHUNKS: usize = 2;

/// Facts about the server that commands report, and state shared by all
/// connections.
pub struct ServerInfo {
    /// The listening port.
    pub port: u16,
    /// The bind address.
    pub bind: String,
    /// `--max-connections`.
    pub max_connections: usize,
    /// A random id of this process (`INFO run_id`).
    pub run_id: String,
    /// SCAN cursors.
    pub cursors: Mutex<Cursors>,
    /// SCANs kept open between calls.
    pub scans: Mutex<crate::command::keyspace::LiveScans>,
}

impl ServerInfo {
    /// Info for a server on `addr`.
    pub fn new(addr: std::net::SocketAddr, max_connections: usize) -> ServerInfo {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let run_id: String = (0..40)
            .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
            .collect();
        ServerInfo {
            port: addr.port(),
            bind: addr.ip().to_string(),
            max_connections,
            run_id,
            cursors: Mutex::new(Cursors::default()),
            scans: Mutex::new(Default::default()),
        }
    }
}

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
    /// Server facts and shared command state.
    pub info: Arc<ServerInfo>,
}

/// What a queue entry waits for.
enum Kind {
    /// The encoded reply.
    Ready(Bytes),
    /// A write submitted to the engine.
    Write {
        rx: oneshot::Receiver<escabelo_engine::Result<bool>>,
        finish: WriteFinish,
    },
    /// A transaction submitted to the engine.
    Txn {
        rx: oneshot::Receiver<escabelo_engine::Result<Vec<TxnResult>>>,
        finish: Option<TxnFinish>,
    },
    /// A read, executed when it reaches the front.
    Read { key: Bytes, finish: ReadFinish },
    /// Quick work, executed when it reaches the front.
    Front(Option<Job>),
    /// Slow work, started on the blocking pool when it reaches the front.
    Blocking(Option<Job>),
    /// Slow work running.
    Running(JoinHandle<Reply>),
    /// A long reply, started when it reaches the front.
    Stream(Option<StreamJob>),
    /// A long reply being produced.
    Streaming(mpsc::Receiver<Bytes>),
    /// A write or transaction parsed after a read that has not run yet:
    /// submitted once every read before it has run, so that no read sees
    /// a write sent after it.
    Unsubmitted(Option<Plan>),
    /// Close the connection once everything before is sent.
    Close,
}

impl Kind {
    /// Entries that read the database when they reach the front.
    fn reads(&self) -> bool {
        matches!(
            self,
            Kind::Read { .. }
                | Kind::Front(_)
                | Kind::Blocking(_)
                | Kind::Running(_)
                | Kind::Stream(_)
                | Kind::Streaming(_)
        )
    }
}

/// A request waiting for its reply, in request order.
struct Pending {
    kind: Kind,
    /// Bytes held by the entry (counted in `Conn::queued_bytes`).
    size: usize,
    /// The encoding of its reply.
    wire: Wire,
}

/// The outcome of waiting on the front of the queue.
enum Done {
    Write(Result<escabelo_engine::Result<bool>, oneshot::error::RecvError>),
    Txn(Result<escabelo_engine::Result<Vec<TxnResult>>, oneshot::error::RecvError>),
    Ran(Result<Reply, tokio::task::JoinError>),
    Chunk(Option<Bytes>),
}

enum Parsers {
    Undecided,
    Text(Parser),
    Resp(resp::Parser),
}

struct Conn {
    ctx: Context,
    parser: Parsers,
    session: Session,
    inbuf: BytesMut,
    /// This connection's share of the budget for emptied input buffers.
    keep: Keep,
    out: Output,
    queue: VecDeque<Pending>,
    /// Bytes held by queue entries.
    queued_bytes: usize,
    /// Entries of the queue that read the database ([`Kind::reads`]).
    reads_pending: usize,
    /// Writes planned but not yet handed to the engine: submitted together
    /// (one log write for a pipeline) before anything waits for them.
    batch: Vec<(WriteOp, escabelo_engine::WriteCallback)>,
    /// Writes were queued without being committed: commit after a yield.
    commit_pending: bool,
    /// When a first line ending in `\r` stops waiting for a `\n`.
    detect_deadline: Option<Instant>,
    /// The wait above is over.
    detect_expired: bool,
    /// No more requests are read (QUIT, protocol error).
    closing: bool,
    /// Everything to send is in `out`: close once it is written.
    finished: bool,
    eof: bool,
}

/// Serves one client until it disconnects, or until shutdown once every
/// request it already sent is answered.
pub async fn serve(mut stream: TcpStream, ctx: Context) {
    let mut shutdown = ctx.shutdown.clone();
    let id = ctx.counters.next_client_id.fetch_add(1, Ordering::Relaxed) + 1;
    let session = Session {
        id,
        peer: stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        local: stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        ..Session::default()
    };
    let mut conn = Conn {
        parser: Parsers::Undecided,
        session,
        ctx,
        inbuf: BytesMut::new(),
        keep: Keep::new(&input::INPUT_BUDGET),
        out: Output::default(),
        queue: VecDeque::new(),
        queued_bytes: 0,
        reads_pending: 0,
        batch: Vec::new(),
        commit_pending: false,
        detect_deadline: None,
        detect_expired: false,
        closing: false,
        finished: false,
        eof: false,
    };
    let (mut rd, wr) = stream.split();
    let mut stopping = *shutdown.borrow();
    // Made once: a `changed()` made anew in every pass of the loop would
    // register and drop a waiter (a lock) per request.
    let stop_signal = async {
        // A closed channel means the server is gone: stop too.
        while shutdown.changed().await.is_ok() {
            if *shutdown.borrow() {
                return;
            }
        }
    };
    tokio::pin!(stop_signal);
    let mut read_size = READ_MIN;
    loop {
        conn.resolve_front();
        let stalled = conn.parse_available();
        // Only parsing empties the input buffer. Tidied here, before any
        // reply to what was parsed can be written, so that a client that
        // has its reply sees the buffer's share already counted
        // (`escabelo_input_buffers_kept_bytes`).
        if conn.inbuf.is_empty() && conn.tidy_input() {
            read_size = READ_MIN;
        }
        conn.resolve_front();
        // Writes queued but not committed (see `Conn::submit_batch`): let
        // the other ready connections queue theirs, then commit them all.
        while conn.commit_pending {
            conn.commit_pending = false;
            tokio::task::yield_now().await;
            conn.ctx.db.commit_queued();
            conn.resolve_front();
        }
        let idle = !stalled && conn.queue.is_empty() && conn.out.is_empty();
        if (conn.eof || stopping || conn.closing) && idle {
            break;
        }
        if conn.finished && conn.out.is_empty() {
            break;
        }
        let can_read = !conn.eof && !stopping && !stalled && !conn.closing;
        let waiting = match conn.queue.front() {
            Some(p) => match p.kind {
                Kind::Write { .. } | Kind::Txn { .. } | Kind::Running(_) => true,
                Kind::Streaming(_) => conn.out.len() < OUT_LIMIT,
                _ => false,
            },
            None => false,
        };
        let deadline = conn.detect_deadline.filter(|_| !conn.detect_expired);
        tokio::select! {
            // Wait for readiness before making room, so that an idle
            // connection holds at most a small buffer. Reading through
            // `AsyncRead` lets a partial read mark the socket drained, which
            // saves a failing `recv` per request.
            r = read_some(&mut rd, &mut conn.inbuf, read_size), if can_read => {
                match r {
                    Ok(0) => conn.eof = true,
                    Ok(n) => {
                        conn.ctx.counters.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
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
                let written = match conn.out.contiguous() {
                    Some(b) => wr.try_write(b),
                    None => wr.try_write_vectored(&conn.out.slices()),
                };
                match written {
                    Ok(0) => return,
                    Ok(n) => {
                        conn.ctx.counters.net_output_bytes.fetch_add(n as u64, Ordering::Relaxed);
                        conn.out.advance(n);
                        if conn.out.is_empty() && conn.out.capacity() > KEEP_BUFFER {
                            conn.out.shrink();
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            },
            done = wait_front(&mut conn.queue), if waiting => conn.complete_front(done),
            _ = sleep_until(deadline), if deadline.is_some() => conn.detect_expired = true,
            _ = &mut stop_signal, if !stopping => stopping = true,
        }
    }
    let _ = stream.shutdown().await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
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

/// Waits until the front entry completes (or yields a chunk).
async fn wait_front(queue: &mut VecDeque<Pending>) -> Done {
    match queue.front_mut().map(|p| &mut p.kind) {
        Some(Kind::Write { rx, .. }) => Done::Write(rx.await),
        Some(Kind::Txn { rx, .. }) => Done::Txn(rx.await),
        Some(Kind::Running(h)) => Done::Ran(h.await),
        Some(Kind::Streaming(rx)) => Done::Chunk(rx.recv().await),
        // Not reached: the branch is only enabled for the cases above.
        _ => std::future::pending().await,
    }
}

impl Conn {
    /// Called when the input buffer is empty: rewinds it to the start of
    /// its allocation, and frees it if it is large and the shared budget
    /// does not let this connection keep it ([`crate::server::input`]).
    /// Returns whether it was freed.
    fn tidy_input(&mut self) -> bool {
        let cap = self.inbuf.capacity();
        if cap == 0 {
            self.keep.release();
            return false;
        }
        // Without allocating: the bytes already consumed are part of the
        // allocation too, and the next read lands on warm lines.
        let _ = self.inbuf.try_reclaim(cap + 1);
        let size = self.inbuf.capacity();
        if size <= KEEP_BUFFER {
            self.keep.release();
            return false;
        }
        if self.keep.hold(size) {
            return false;
        }
        self.inbuf = BytesMut::new();
        true
    }

    /// Chooses the protocol once the first bytes allow it. Returns `false`
    /// while undecided.
    fn decide(&mut self) -> bool {
        if !matches!(self.parser, Parsers::Undecided) {
            return true;
        }
        let verdict = match detect(&self.inbuf, command::is_command) {
            Detect::Is(p) => Some(p),
            _ if self.eof => Some(Protocol::Text),
            Detect::NeedMore => None,
            Detect::CrPending => {
                if self.detect_expired {
                    Some(Protocol::Text)
                } else {
                    if self.detect_deadline.is_none() {
                        self.detect_deadline = Some(Instant::now() + DETECT_CR_WAIT);
                    }
                    None
                }
            }
        };
        match verdict {
            Some(Protocol::Text) => {
                self.parser = Parsers::Text(Parser::new(self.ctx.max_value_len));
                true
            }
            Some(Protocol::Resp) => {
                self.parser = Parsers::Resp(resp::Parser::new(resp::Limits::for_values(
                    self.ctx.max_value_len,
                )));
                true
            }
            None => false,
        }
    }

    /// Parses requests from the input buffer until more bytes are needed
    /// (returns `false`) or the reply bounds are reached (returns `true`),
    /// then submits the writes among them together.
    fn parse_available(&mut self) -> bool {
        let stalled = self.parse_requests();
        self.submit_batch();
        stalled
    }

    /// Hands the batched writes to the engine, in order. When other
    /// clients are connected they are only queued: the loop yields once so
    /// that the connections ready on this thread queue theirs too, then
    /// commits them all with one log write ([`Conn::commit_pending`]), as
    /// Redis writes its log once per event-loop pass.
    fn submit_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let db = &self.ctx.db;
        if self.ctx.counters.connections.load(Ordering::Relaxed) > 1 {
            db.submit_many_deferred(batch);
            self.commit_pending = true;
        } else {
            db.submit_many(batch);
        }
    }

    fn parse_requests(&mut self) -> bool {
        if self.closing || !self.decide() {
            return false;
        }
        loop {
            if self.closing {
                return false;
            }
            if self.out.len() + self.queued_bytes > OUT_LIMIT || self.queue.len() >= QUEUE_LIMIT {
                return true;
            }
            let (plan, size, wire) = match &mut self.parser {
                Parsers::Undecided => return false,
                Parsers::Text(p) => {
                    let Some(req) = p.next(&mut self.inbuf) else {
                        return false;
                    };
                    let size = match &req {
                        text::Request::Write { key, value } => key.len() + value.len(),
                        text::Request::Read { key } | text::Request::Delete { key } => key.len(),
                        text::Request::Reads { prefix } => prefix.len(),
                        _ => 0,
                    };
                    (command::plan_text(&self.ctx, req), size, Wire::Text)
                }
                Parsers::Resp(p) => match p.next(&mut self.inbuf) {
                    None => return false,
                    Some(Parsed::Command(args)) => {
                        let size = args.iter().map(|a| a.len()).sum();
                        let plan = command::plan_redis(&self.ctx, &mut self.session, args);
                        // After planning: HELLO's reply is in the new
                        // protocol.
                        (plan, size, command::wire_of(&self.session))
                    }
                    Some(Parsed::Error(msg)) => {
                        Counters::bump(&self.ctx.counters.bad_requests);
                        self.inbuf = BytesMut::new();
                        (
                            Plan::Close(Reply::err(msg)),
                            0,
                            command::wire_of(&self.session),
                        )
                    }
                },
            };
            self.push(plan, size, wire);
        }
    }

    fn push(&mut self, plan: Plan, size: usize, wire: Wire) {
        if self.reads_pending > 0 && matches!(plan, Plan::Write { .. } | Plan::Txn { .. }) {
            let size = match &plan {
                Plan::Write { op, .. } => write_size(op),
                Plan::Txn { size: t, .. } => size.max(*t),
                _ => size,
            };
            self.enqueue(Kind::Unsubmitted(Some(plan)), size, wire);
            return;
        }
        let kind = match plan {
            Plan::Reply(r) => {
                if self.queue.is_empty() {
                    self.out.encode(wire, &r);
                    return;
                }
                let mut b = BytesMut::new();
                wire.encode(&mut b, &r);
                self.enqueue(Kind::Ready(b.freeze()), 0, wire);
                return;
            }
            Plan::Write { op, finish } => self.submit_write(op, finish),
            Plan::Txn {
                txn,
                size: tsize,
                finish,
            } => {
                let kind = self.submit_txn(txn, finish);
                self.enqueue(kind, size.max(tsize), wire);
                return;
            }
            Plan::Read { key, finish } => {
                if self.queue.is_empty() {
                    let r = finish(&self.ctx.counters, metrics::timed_get(&self.ctx.db, &key));
                    self.out.encode(wire, &r);
                    return;
                }
                Kind::Read { key, finish }
            }
            Plan::Front(job) => {
                if self.queue.is_empty() {
                    let r = job(&self.ctx);
                    self.out.encode(wire, &r);
                    return;
                }
                Kind::Front(Some(job))
            }
            Plan::Blocking(job) => Kind::Blocking(Some(job)),
            Plan::Stream(job) => Kind::Stream(Some(job)),
            Plan::Close(r) => {
                self.closing = true;
                let mut b = BytesMut::new();
                wire.encode(&mut b, &r);
                let n = b.len();
                self.enqueue(Kind::Ready(b.freeze()), n, wire);
                Kind::Close
            }
        };
        self.enqueue(kind, size, wire);
    }

    /// Adds a write to the batch (see [`Conn::submit_batch`]).
    fn submit_write(&mut self, op: WriteOp, finish: WriteFinish) -> Kind {
        let (tx, rx) = metrics::write_channel();
        self.batch.push((
            op,
            Box::new(move |r| {
                // The connection may be gone; the write stands anyway.
                let _ = tx.send(r);
            }),
        ));
        Kind::Write { rx, finish }
    }

    /// Submits a transaction, after the writes batched before it.
    fn submit_txn(&mut self, txn: crate::txn::Txn, finish: TxnFinish) -> Kind {
        self.submit_batch();
        let (tx, rx) = metrics::write_channel();
        crate::txn::submit_txn(
            &self.ctx.db,
            txn,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        Kind::Txn {
            rx,
            finish: Some(finish),
        }
    }

    /// Submits the deferred writes at the front of the queue, up to the
    /// next entry that reads.
    fn submit_deferred(&mut self) {
        self.defer_to_batch();
        self.submit_batch();
    }

    fn defer_to_batch(&mut self) {
        for i in 0..self.queue.len() {
            if self.queue[i].kind.reads() {
                return;
            }
            let plan = match &mut self.queue[i].kind {
                Kind::Unsubmitted(p) => p.take(),
                _ => continue,
            };
            self.queue[i].kind = match plan {
                Some(Plan::Write { op, finish }) => self.submit_write(op, finish),
                Some(Plan::Txn { txn, finish, .. }) => self.submit_txn(txn, finish),
                // Only writes and transactions are deferred.
                _ => Kind::Ready(Bytes::new()),
            };
        }
    }

    fn enqueue(&mut self, kind: Kind, size: usize, wire: Wire) {
        let size = match &kind {
            Kind::Ready(b) => b.len(),
            _ => size,
        };
        self.queued_bytes += size;
        if kind.reads() {
            self.reads_pending += 1;
        }
        self.queue.push_back(Pending { kind, size, wire });
    }

    /// Moves every finished entry at the front of the queue into the output
    /// buffer, executing reads and quick work, and starting slow work or a
    /// stream if one is reached.
    fn resolve_front(&mut self) {
        while let Some(front) = self.queue.front_mut() {
            let wire = front.wire;
            match &mut front.kind {
                Kind::Ready(b) => self.out.push(std::mem::take(b)),
                Kind::Read { key, finish } => {
                    let r = finish(&self.ctx.counters, metrics::timed_get(&self.ctx.db, key));
                    self.out.encode(wire, &r);
                }
                Kind::Front(job) => {
                    if let Some(job) = job.take() {
                        let r = job(&self.ctx);
                        self.out.encode(wire, &r);
                    }
                }
                Kind::Write { rx, finish } => {
                    let finish = *finish;
                    let r = match rx.try_recv() {
                        Ok(r) => Ok(r),
                        Err(oneshot::error::TryRecvError::Empty) => return,
                        Err(oneshot::error::TryRecvError::Closed) => Err(()),
                    };
                    let reply = finish(&self.ctx.counters, r);
                    self.out.encode(wire, &reply);
                }
                Kind::Txn { rx, finish } => {
                    let r = match rx.try_recv() {
                        Ok(r) => Ok(r),
                        Err(oneshot::error::TryRecvError::Empty) => return,
                        Err(oneshot::error::TryRecvError::Closed) => Err(()),
                    };
                    if let Some(f) = finish.take() {
                        self.out.encode(wire, &f(r));
                    }
                }
                Kind::Blocking(job) => {
                    let Some(job) = job.take() else { return };
                    let ctx = self.ctx.clone();
                    front.kind = Kind::Running(tokio::task::spawn_blocking(move || job(&ctx)));
                    return;
                }
                Kind::Stream(job) => {
                    let Some(job) = job.take() else { return };
                    let ctx = self.ctx.clone();
                    let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
                    tokio::task::spawn_blocking(move || {
                        let mut sink = Sink::new(tx);
                        job(&ctx, &mut sink);
                        sink.flush();
                    });
                    front.kind = Kind::Streaming(rx);
                    return;
                }
                // Collected by `complete_front`.
                Kind::Running(_) | Kind::Streaming(_) => return,
                Kind::Unsubmitted(_) => {
                    self.submit_deferred();
                    continue;
                }
                Kind::Close => {
                    self.finished = true;
                    self.queue.clear();
                    self.queued_bytes = 0;
                    self.reads_pending = 0;
                    return;
                }
            }
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(p) = self.queue.pop_front() {
            self.queued_bytes -= p.size;
            if p.kind.reads() {
                self.reads_pending -= 1;
                self.submit_deferred();
            }
        }
    }

    fn complete_front(&mut self, done: Done) {
        let Some(front) = self.queue.front_mut() else {
            return;
        };
        let wire = front.wire;
        match done {
            Done::Write(r) => {
                if let Kind::Write { finish, .. } = &front.kind {
                    let reply = finish(&self.ctx.counters, r.map_err(|_| ()));
                    self.out.encode(wire, &reply);
                }
            }
            Done::Txn(r) => {
                if let Kind::Txn { finish, .. } = &mut front.kind {
                    if let Some(f) = finish.take() {
                        self.out.encode(wire, &f(r.map_err(|_| ())));
                    }
                }
            }
            Done::Ran(Ok(reply)) => self.out.encode(wire, &reply),
            Done::Ran(Err(_)) => self.out.encode(wire, &Reply::err("command failed")),
            Done::Chunk(Some(b)) if b.is_empty() => {
                // The producer gave up after part of its reply went out:
                // nothing after it can be framed.
                self.finished = true;
                self.closing = true;
                self.queue.clear();
                self.queued_bytes = 0;
                self.reads_pending = 0;
                return;
            }
            Done::Chunk(Some(b)) => {
                self.out.push(b);
                return;
            }
            Done::Chunk(None) => {}
        }
        self.pop_front();
    }
}

/// Bytes of key and value a write holds until it is acknowledged.
fn write_size(op: &WriteOp) -> usize {
    match op {
        WriteOp::Put { key, value } => key.len() + value.len(),
        WriteOp::Delete { key } => key.len(),
    }
}
