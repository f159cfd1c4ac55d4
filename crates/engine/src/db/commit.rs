//! Group commit of the write-ahead log.
//!
//! Writers put requests in one queue. Whoever commits takes everything
//! waiting (up to [`BATCH_BYTES_MAX`]), decides each request (a delete of an
//! absent key writes nothing; a garbage-collection move applies only if the
//! key still points where it did), appends the whole batch to the log with
//! one `write`, applies it to the memtable under a new sequence number and
//! publishes it ([`publish`]: the sequence number, cache invalidation,
//! acknowledgements). While it does, the next batch gathers in the queue.
//! In `sync` mode the batch is handed to the sync stage instead of being
//! published ([`super::sync_stage`]): it is published once an fdatasync
//! covering it returned, while the next batch is appended.
//!
//! Order: the queue is first in, first out, and whoever commits takes its
//! batch from the front of the queue only while holding the log (the
//! `committer` lock), and commits it before letting go. So batches reach
//! the log, the memtable and the callbacks in queue order, and the
//! requests one thread submits apply in the order it submitted them.
//!
//! Who commits:
//! - the submitting thread itself when the log is free (it becomes the
//!   leader and also commits what others queued meanwhile), so a write
//!   costs no thread hand-off. In both modes: the leader only appends
//!   (a buffered `write`) and applies; in `sync` mode the fdatasync runs on
//!   the sync stage's thread, so it does not block a server I/O thread
//!   while other writes could share it. (The commit thread used to commit
//!   every batch in `sync` mode: with one client that hop cost 20% of its
//!   writes per second.) A batch alone (one request, nothing in or waiting
//!   for a sync, the last syncs covered one request each) is synced by the
//!   leader itself: the hop to the sync stage and back would cost two
//!   thread switches with nothing to overlap (see `sync_stage`).
//! - the **commit thread** otherwise: when writers must be slowed down or
//!   held (backpressure), to switch log segments (which waits for the sync
//!   stage; from the batch that fills the memtable until the switch,
//!   leaders leave every batch to this thread, so the full memtable takes
//!   no more), for control requests, and for writes queued without a leader
//!   ([`CommitHandle::submit_many`] without `lead`) that nobody committed.
//!
//! When the memtable or its log segment passes `memtable_size`, the
//! memtable is frozen and a new log segment started; the flush thread
//! takes it from there. Backpressure: with too many frozen memtables or
//! level-0 tables, batches are first delayed by a millisecond each, then
//! held until the flush or compaction catches up.

use super::sync_stage::{Appended, SyncStage};
use super::txn::{self, Txn, TxnCallback, TxnResult};
use super::{Shared, WriteCallback, WriteOp};
use crate::error::{Error, Result};
use crate::memtable::{Memtable, SEQ_LATEST};
use crate::options::Durability;
use crate::types::{BlobRef, Value};
use crate::version::log_name;
use crate::version::SuperVersion;
use crate::wal::{Batch, WalWriter};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Most bytes of records gathered into one log write.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most requests gathered into one batch.
pub const BATCH_REQUESTS_MAX: usize = 4096;
/// Batches a submitting thread commits before leaving the rest to the
/// commit thread (so one caller is not kept busy for long).
const INLINE_BATCHES_MAX: usize = 4;
/// Delay given to each batch when writers are being slowed down.
const SLOWDOWN_DELAY: Duration = Duration::from_millis(1);
/// How long a stopped writer sleeps between checks.
const STOP_POLL: Duration = Duration::from_millis(10);
/// How long the idle commit thread sleeps between checks.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Control requests handled in order with writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// fdatasync the log.
    Sync,
    /// Freeze the memtable (even a small one) and start a new segment.
    Rotate,
    /// Sync, then exit the thread.
    Stop,
}

type ControlCallback = Box<dyn FnOnce(Result<()>) + Send + 'static>;

enum Request {
    Write(WriteOp, WriteCallback),
    GcMove {
        key: Bytes,
        old: BlobRef,
        new: BlobRef,
        done: WriteCallback,
    },
    Txn(Txn, TxnCallback),
    Control(Control, ControlCallback),
}

impl Request {
    fn bytes(&self) -> usize {
        match self {
            Request::Write(WriteOp::Put { key, value }, _) => key.len() + value.len() + 16,
            Request::Write(WriteOp::Delete { key }, _) => key.len() + 16,
            Request::GcMove { key, .. } => key.len() + 40,
            Request::Txn(t, _) => t.bytes(),
            Request::Control(..) => 0,
        }
    }
}

/// The queue, and the log behind a lock that whoever commits holds.
struct Pipeline {
    queue: Mutex<Queue>,
    /// Wakes the commit thread; paired with `queue`.
    wake: Condvar,
    committer: Mutex<Committer>,
    shared: Arc<Shared>,
}

struct Queue {
    requests: VecDeque<Request>,
    /// Set by the commit thread when it exits; later requests are refused.
    stopped: bool,
    /// A leader saw that the memtable is full: the commit thread switches.
    rotate_wanted: bool,
}

impl Pipeline {
    /// Takes a batch from the front of the queue. With `writes_only`, stops
    /// before the first control request.
    fn take_batch(q: &mut Queue, writes_only: bool) -> Vec<Request> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while bytes < BATCH_BYTES_MAX && batch.len() < BATCH_REQUESTS_MAX {
            match q.requests.front() {
                None => break,
                Some(Request::Control(..)) if writes_only => break,
                Some(r) => bytes += r.bytes(),
            }
            if let Some(r) = q.requests.pop_front() {
                batch.push(r);
            }
        }
        batch
    }

    /// True if a leader must leave the work to the commit thread.
    fn must_defer(&self) -> bool {
        let o = &self.shared.opts;
        let sv = self.shared.super_version();
        sv.imms.len() >= o.max_immutable_memtables.max(1)
            || sv.version.levels[0].len() >= o.l0_slowdown
    }

    /// Commits queued writes on the calling thread while the log is free.
    fn lead(&self) {
        let mut batches = 0;
        loop {
            let Some(mut c) = self.committer.try_lock() else {
                // The holder commits what we queued before it lets go.
                return;
            };
            while batches < INLINE_BATCHES_MAX {
                batches += 1;
                if self.must_defer() {
                    drop(c);
                    self.wake.notify_one();
                    return;
                }
                let batch = {
                    let mut q = self.queue.lock();
                    // The memtable is full and waits for the commit thread
                    // to freeze it: committing more would grow it past its
                    // limit for as long as leaders beat that thread to the
                    // log (test `leaders_never_write_into_a_full_memtable`).
                    if q.rotate_wanted {
                        drop(q);
                        drop(c);
                        self.wake.notify_one();
                        return;
                    }
                    Self::take_batch(&mut q, true)
                };
                if batch.is_empty() {
                    break;
                }
                if c.commit(batch) {
                    self.queue.lock().rotate_wanted = true;
                    drop(c);
                    self.wake.notify_one();
                    return;
                }
            }
            drop(c);
            let q = self.queue.lock();
            match q.requests.front() {
                None => return,
                Some(Request::Control(..)) => {
                    drop(q);
                    self.wake.notify_one();
                    return;
                }
                // Queued after our last look: commit it too, unless we have
                // done our share, then hand it to the commit thread.
                Some(_) if batches >= INLINE_BATCHES_MAX => {
                    drop(q);
                    self.wake.notify_one();
                    return;
                }
                Some(_) => {}
            }
        }
    }
}

/// What a submitter does once its requests are queued.
enum Then {
    /// Commit them on this thread, with what else is queued.
    Lead,
    /// Wake the commit thread.
    Wake,
    /// Nothing yet: the submitter calls `commit_queued` soon.
    Defer,
}

/// The sending side of the commit queue.
#[derive(Clone)]
pub(crate) struct CommitHandle {
    p: Arc<Pipeline>,
}

impl CommitHandle {
    fn push(&self, r: Request) {
        let then = if !matches!(r, Request::Control(..)) {
            Then::Lead
        } else {
            Then::Wake
        };
        self.push_all(std::iter::once(r), then);
    }

    /// Queues `requests` in order under one queue lock, then does `then`.
    fn push_all(&self, requests: impl IntoIterator<Item = Request>, then: Then) {
        let requests = requests.into_iter();
        {
            let mut q = self.p.queue.lock();
            if q.stopped {
                drop(q);
                for r in requests {
                    fail_request(r, &Error::Closed);
                }
                return;
            }
            q.requests.extend(requests);
        }
        match then {
            Then::Lead => self.p.lead(),
            Then::Wake => {
                self.p.wake.notify_one();
            }
            Then::Defer => {}
        }
    }

    pub fn submit(&self, op: WriteOp, done: WriteCallback) {
        self.push(Request::Write(op, done));
    }

    /// Queues several writes together (one queue lock). With `lead`, they
    /// are committed at once (by this thread, unless another is
    /// committing); without it, they wait for
    /// [`CommitHandle::commit_queued`] (or for the commit thread's next
    /// look, at most `IDLE_POLL` later).
    pub fn submit_many(&self, writes: Vec<(WriteOp, WriteCallback)>, lead: bool) {
        let then = if lead { Then::Lead } else { Then::Defer };
        let requests = writes
            .into_iter()
            .map(|(op, done)| Request::Write(op, done));
        self.push_all(requests, then);
    }

    /// Commits what is queued, on this thread (unless another thread is
    /// committing: it takes them).
    pub fn commit_queued(&self) {
        self.p.lead();
    }

    /// Submits a transaction, ordered with writes.
    pub fn submit_txn(&self, t: Txn, done: TxnCallback) {
        self.push(Request::Txn(t, done));
    }

    /// Submits a garbage-collection move: point `key` at `new` if it still
    /// points at `old`. The outcome says whether it did.
    pub fn gc_move(&self, key: Bytes, old: BlobRef, new: BlobRef, done: WriteCallback) {
        self.push(Request::GcMove {
            key,
            old,
            new,
            done,
        });
    }

    /// Queues a control request without waiting for it.
    pub fn control_async(&self, c: Control) {
        self.push(Request::Control(c, Box::new(|_| {})));
    }

    pub fn control_wait(&self, c: Control) -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.push(Request::Control(
            c,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        ));
        rx.recv().unwrap_or(Err(Error::Closed))
    }
}

/// Starts the commit thread, writing to `wal`, and in `sync` mode the
/// sync stage's thread ([`super::sync_stage`]).
pub(crate) fn start(
    shared: Arc<Shared>,
    wal: WalWriter,
) -> Result<(CommitHandle, Vec<std::thread::JoinHandle<()>>)> {
    *shared.wal_file.lock() = Some(wal.file());
    let mut threads = Vec::new();
    let stage = if shared.opts.durability == Durability::Sync {
        let (stage, h) = SyncStage::start(shared.clone())?;
        threads.push(h);
        Some(stage)
    } else {
        None
    };
    let p = Arc::new(Pipeline {
        queue: Mutex::new(Queue {
            requests: VecDeque::new(),
            stopped: false,
            rotate_wanted: false,
        }),
        wake: Condvar::new(),
        committer: Mutex::new(Committer {
            last_seq: shared.seq.load(Ordering::SeqCst),
            shared: shared.clone(),
            wal,
            buf: Batch::with_capacity(BATCH_BYTES_MAX),
            stage: stage.clone(),
        }),
        shared,
    });
    let thread_p = p.clone();
    let h = std::thread::Builder::new()
        .name("escabelo-commit".into())
        .spawn(move || run(&thread_p))
        .map_err(|e| Error::io("spawn commit thread", e));
    match h {
        Ok(h) => threads.push(h),
        Err(e) => {
            if let Some(stage) = &stage {
                stage.stop();
            }
            return Err(e);
        }
    }
    Ok((CommitHandle { p }, threads))
}

/// The commit thread.
fn run(p: &Pipeline) {
    loop {
        {
            let mut q = p.queue.lock();
            while q.requests.is_empty() && !q.rotate_wanted {
                p.wake.wait_for(&mut q, IDLE_POLL);
            }
        }
        // The batch is taken only once the log is ours: a leader holding it
        // may commit requests queued after the ones we would have taken,
        // and those must not reach the log first.
        let mut c = p.committer.lock();
        let (batch, rotate) = {
            let mut q = p.queue.lock();
            let rotate = std::mem::take(&mut q.rotate_wanted);
            (Pipeline::take_batch(&mut q, false), rotate)
        };
        if batch.is_empty() && !rotate {
            continue;
        }
        if rotate {
            if let Err(e) = c.rotate() {
                tracing::error!(error = %e, "could not start a new log segment");
            }
        }
        if c.process(batch) {
            let rest = {
                let mut q = p.queue.lock();
                q.stopped = true;
                std::mem::take(&mut q.requests)
            };
            for r in rest {
                fail_request(r, &Error::Closed);
            }
            return;
        }
    }
}

struct Committer {
    shared: Arc<Shared>,
    wal: WalWriter,
    buf: Batch,
    /// The sequence number of the last batch applied to the memtable (in
    /// `sync` mode it may not be published yet).
    last_seq: u64,
    /// `sync` mode: where appended batches wait for their fdatasync.
    stage: Option<Arc<SyncStage>>,
}

/// A decided request: what goes to the memtable, and who to tell.
pub(super) enum Decided {
    One {
        key: Bytes,
        value: Option<Value>,
        outcome: bool,
        done: WriteCallback,
    },
    Txn {
        writes: Vec<(Bytes, Value)>,
        results: Vec<TxnResult>,
        done: TxnCallback,
    },
}

impl Decided {
    /// A request that writes `new(current)` if that is `Some`, given the
    /// key's current entry (a delete, a collection move).
    fn conditional(
        key: Bytes,
        current: Result<Option<Value>>,
        done: WriteCallback,
        new: impl FnOnce(Option<Value>) -> Option<Value>,
    ) -> Option<Decided> {
        match current {
            Ok(cur) => {
                let value = new(cur);
                Some(Decided::One {
                    key,
                    outcome: value.is_some(),
                    value,
                    done,
                })
            }
            Err(e) => {
                done(Err(e));
                None
            }
        }
    }

    /// The entries this request writes, in order.
    fn writes(&self) -> impl Iterator<Item = (&Bytes, &Value)> {
        let (one, many) = match self {
            Decided::One {
                key,
                value: Some(v),
                ..
            } => (Some((key, v)), &[][..]),
            Decided::One { value: None, .. } => (None, &[][..]),
            Decided::Txn { writes, .. } => (None, &writes[..]),
        };
        one.into_iter().chain(many.iter().map(|(k, v)| (k, v)))
    }

    fn fail(self, e: &Error) {
        match self {
            Decided::One { done, .. } => done(Err(e.clone())),
            Decided::Txn { done, .. } => done(Err(e.clone())),
        }
    }
}

/// The newest state as the committer sees it: the writes decided earlier
/// in the batch, then the memtables and tables.
struct CommitState<'a> {
    overlay: &'a HashMap<Bytes, Value>,
    sv: &'a SuperVersion,
}

impl CommitState<'_> {
    fn current(&self, key: &[u8]) -> Result<Option<Value>> {
        match self.overlay.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None => self.sv.get_raw(key, SEQ_LATEST),
        }
    }
}

impl txn::State for CommitState<'_> {
    fn entry(&mut self, key: &[u8]) -> Result<Option<Value>> {
        self.current(key)
    }

    fn bytes(&mut self, key: &[u8], v: &Value) -> Result<Bytes> {
        match v {
            Value::Inline(b) => Ok(b.clone()),
            Value::Blob(r) => self.sv.version.read_blob(r, key),
            Value::Tombstone => Ok(Bytes::new()),
        }
    }
}

impl Committer {
    /// Handles a batch; returns true when asked to stop (requests after
    /// the stop are refused).
    fn process(&mut self, batch: Vec<Request>) -> bool {
        let mut writes = Vec::new();
        let mut rest = batch.into_iter();
        while let Some(r) = rest.next() {
            match r {
                Request::Control(c, done) => {
                    self.commit_and_rotate(std::mem::take(&mut writes));
                    // Control requests see every earlier batch published.
                    self.drain();
                    let res = match c {
                        Control::Sync => self.sync(),
                        // End the log with its end marker (wal/mod.rs).
                        Control::Stop => self
                            .sync()
                            .and_then(|()| self.wal.seal())
                            .and_then(|()| self.wal.trim_after_seal()),
                        Control::Rotate => self.rotate(),
                    };
                    done(res);
                    if c == Control::Stop {
                        if let Some(stage) = &self.stage {
                            stage.stop();
                        }
                        for r in rest {
                            fail_request(r, &Error::Closed);
                        }
                        return true;
                    }
                }
                w => writes.push(w),
            }
        }
        self.commit_and_rotate(writes);
        false
    }

    /// Commits on the commit thread: with backpressure, and switching
    /// segments when the memtable is full.
    fn commit_and_rotate(&mut self, writes: Vec<Request>) {
        if writes.is_empty() {
            return;
        }
        if let Err(e) = self.backpressure() {
            for w in writes {
                fail_request(w, &e);
            }
            return;
        }
        if self.commit(writes) {
            if let Err(e) = self.rotate() {
                tracing::error!(error = %e, "could not start a new log segment");
            }
        }
    }

    /// Waits until every batch handed to the sync stage is published.
    fn drain(&self) {
        if let Some(stage) = &self.stage {
            stage.drain();
        }
    }

    /// fdatasyncs the log. Only the current segment can hold unsynced
    /// records: a segment is synced and sealed when it is frozen (see
    /// `rotate`).
    fn sync(&mut self) -> Result<()> {
        let r = self.shared.metrics.timed_fsync(|| self.wal.sync());
        self.shared
            .counters
            .wal_syncs
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &r {
            self.shared.set_fatal(format!("log sync failed: {e}"));
        }
        r
    }

    /// Commits one batch; returns true when the memtable is full and a new
    /// segment should be started.
    fn commit(&mut self, writes: Vec<Request>) -> bool {
        if writes.is_empty() {
            return false;
        }
        if let Err(e) = self.shared.check_writable() {
            for w in writes {
                fail_request(w, &e);
            }
            return false;
        }
        let sv = self.shared.super_version();
        let log_number = self.wal.log_number();
        let needs_lookup = writes
            .iter()
            .any(|w| !matches!(w, Request::Write(WriteOp::Put { .. }, _)));
        // Newest entry of keys written earlier in this batch.
        let mut overlay: HashMap<Bytes, Value> = HashMap::new();
        let mut decided = Vec::with_capacity(writes.len());
        let mut user_bytes = 0u64;
        // Whether a client wrote (blob collection's moves do not count: the
        // database is idle while only they come in; see `idle`).
        let mut from_clients = false;
        self.buf.clear();
        for w in writes {
            from_clients |= matches!(w, Request::Write(..) | Request::Txn(..));
            let state = CommitState {
                overlay: &overlay,
                sv: &sv,
            };
            let d = match w {
                Request::Write(WriteOp::Put { key, value }, done) => {
                    user_bytes += (key.len() + value.len()) as u64;
                    Decided::One {
                        key,
                        value: Some(Value::Inline(value)),
                        outcome: true,
                        done,
                    }
                }
                // A delete of an absent key writes nothing.
                Request::Write(WriteOp::Delete { key }, done) => {
                    let current = state.current(&key);
                    match Decided::conditional(key, current, done, |cur| match cur {
                        Some(Value::Inline(_) | Value::Blob(_)) => Some(Value::Tombstone),
                        _ => None,
                    }) {
                        Some(d) => d,
                        None => continue,
                    }
                }
                // A move applies only if the key still points where it did.
                Request::GcMove {
                    key,
                    old,
                    new,
                    done,
                } => {
                    let current = state.current(&key);
                    match Decided::conditional(key, current, done, |cur| match cur {
                        Some(Value::Blob(r)) if r == old => Some(Value::Blob(new)),
                        _ => None,
                    }) {
                        Some(d) => d,
                        None => continue,
                    }
                }
                Request::Txn(t, done) => {
                    let mut state = state;
                    match txn::evaluate(&t, &mut state, self.shared.opts.value_len_max) {
                        Ok((writes, results)) => Decided::Txn {
                            writes,
                            results,
                            done,
                        },
                        Err(e) => {
                            done(Err(e));
                            continue;
                        }
                    }
                }
                Request::Control(..) => continue,
            };
            match &d {
                Decided::One {
                    key,
                    value: Some(v),
                    ..
                } => {
                    self.buf.push_record(log_number, key, v);
                    if needs_lookup {
                        overlay.insert(key.clone(), v.clone());
                    }
                }
                Decided::One { value: None, .. } => {}
                Decided::Txn { writes, .. } if writes.is_empty() => {}
                Decided::Txn { writes, .. } => {
                    // One record group: all of it survives a crash or none.
                    if !self.buf.push_group(log_number, writes) {
                        d.fail(&Error::InvalidArgument(format!(
                            "transaction too large for one log record (max {} bytes)",
                            crate::limits::BLOCK_LEN_MAX
                        )));
                        continue;
                    }
                    for (key, v) in writes {
                        if let Value::Inline(b) = v {
                            user_bytes += (key.len() + b.len()) as u64;
                        }
                        overlay.insert(key.clone(), v.clone());
                    }
                }
            }
            decided.push(d);
        }
        // `sync` mode syncs a batch alone here rather than on the sync
        // stage (see `sync_stage`; always without a stage, which `start`
        // makes in `sync` mode).
        let sync_here = self.shared.opts.durability == Durability::Sync
            && self.stage.as_ref().is_none_or(|s| s.alone(decided.len()));
        let logged = !self.buf.is_empty();
        if logged {
            let mut res = self.wal.append_batch(&self.buf);
            let batch_len = self.buf.len();
            // Let go of the long values the batch shares with the requests.
            self.buf.clear();
            if res.is_ok() && sync_here {
                res = self.sync();
                if let Some(stage) = &self.stage {
                    stage.covered(decided.len());
                }
                self.shared
                    .counters
                    .wal_syncs_by_committer
                    .fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = res {
                fail_decided(decided, &e);
                return false;
            }
            self.shared.metrics.observe_batch(decided.len());
            let c = &self.shared.counters;
            c.bytes_written
                .fetch_add(batch_len as u64, Ordering::Relaxed);
            c.user_bytes_written
                .fetch_add(user_bytes, Ordering::Relaxed);
            c.wal_bytes.store(self.wal.len(), Ordering::Relaxed);
        }
        // Apply with the batch's sequence number, then publish it (at once,
        // or after its fdatasync in `sync` mode). Only the committer
        // assigns sequence numbers, under the log lock.
        let mem = sv.mem.clone();
        let seq = self.last_seq + 1;
        self.last_seq = seq;
        for (key, v) in decided.iter().flat_map(Decided::writes) {
            mem.insert(key.clone(), v.clone(), seq);
        }
        if from_clients {
            *self.shared.last_write.lock() = std::time::Instant::now();
        }
        match &self.stage {
            Some(stage) if !sync_here => stage.hand_over(Appended {
                seq,
                decided,
                logged,
            }),
            _ => publish(&self.shared, seq, decided),
        }
        let limit = self.shared.opts.memtable_size as u64;
        mem.size() >= limit || self.wal.len() >= limit
    }

    /// Slows down or holds writes while flushes or level-0 compaction lag.
    fn backpressure(&self) -> Result<()> {
        let o = &self.shared.opts;
        let mut delayed = false;
        loop {
            let mut vs = self.shared.vs.lock();
            let imms = vs.imms.len();
            let l0 = vs.current.levels[0].len();
            if imms >= 2 * o.max_immutable_memtables.max(1) || l0 >= o.l0_stop {
                if !delayed {
                    self.shared
                        .counters
                        .write_stalls
                        .fetch_add(1, Ordering::Relaxed);
                    delayed = true;
                }
                // Memtables cannot be flushed: say why instead of waiting.
                if let Some(e) = self.shared.flush_error.lock().as_ref() {
                    return Err(e.clone());
                }
                self.shared.check_writable()?;
                self.shared.wake_background();
                self.shared.bg_cv.wait_for(&mut vs, STOP_POLL);
                continue;
            }
            drop(vs);
            if !delayed && (imms >= o.max_immutable_memtables.max(1) || l0 >= o.l0_slowdown) {
                self.shared
                    .counters
                    .write_stalls
                    .fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(SLOWDOWN_DELAY);
            }
            return Ok(());
        }
    }

    /// Freezes the memtable and switches to a new log segment.
    fn rotate(&mut self) -> Result<()> {
        // The frozen memtable must hold only published versions, and the
        // sync stage syncs the current segment only.
        self.drain();
        if self.shared.super_version().mem.is_empty() {
            return Ok(());
        }
        let recycles = self.shared.recycles_logs();
        let (number, recycle) = {
            let mut vs = self.shared.vs.lock();
            let recycle = if recycles {
                vs.recyclable_logs.pop()
            } else {
                None
            };
            (vs.new_file_number(), recycle)
        };
        let o = &self.shared.opts;
        let prealloc = if o.durability == Durability::Sync && o.wal_preallocate {
            o.memtable_size as u64
        } else {
            0
        };
        let path = self.shared.path(&log_name(number));
        // End the frozen segment first (sync, end marker, sync; wal/mod.rs):
        // so every segment but the current one is durable, and a sync
        // (`Db::sync`, the sync thread) need only sync the current one.
        self.wal.seal()?;
        let wal = WalWriter::create(
            &self.shared.fs,
            &self.shared.dir,
            &path,
            number,
            prealloc,
            recycle.as_ref().map(|(p, _)| p.as_path()),
        )?;
        let old = std::mem::replace(&mut self.wal, wal);
        *self.shared.wal_file.lock() = Some(self.wal.file());
        {
            let mut vs = self.shared.vs.lock();
            let frozen = std::mem::replace(&mut vs.mem, Arc::new(Memtable::new(number)));
            vs.live_logs.push((old.log_number(), old.len()));
            vs.imms.push(frozen);
            self.shared.install_super_version(&vs);
        }
        self.shared.counters.wal_bytes.store(0, Ordering::Relaxed);
        self.shared.wake_background();
        Ok(())
    }
}

/// Publishes an applied batch: its sequence number, then the cache
/// updates ([`crate::cache::ValueCache::write_through`]), then the
/// acknowledgements. See the memtable and cache
/// modules for why this order is safe. Batches are published in sequence
/// order, by one thread at a time (the committer, or the sync stage).
pub(super) fn publish(shared: &Shared, seq: u64, decided: Vec<Decided>) {
    shared.seq.store(seq, Ordering::SeqCst);
    for (key, value) in decided.iter().flat_map(Decided::writes) {
        let v = match value {
            Value::Inline(v) => Some(v),
            Value::Tombstone => None,
            // Only a collection move writes a blob pointer (values become
            // blobs when flushed): it applied only because the key still
            // pointed at the moved value, so the bytes the cache may hold
            // for it are still the key's value. Left as they are: dropping
            // them made every move evict a key that may be hot.
            Value::Blob(_) => continue,
        };
        shared.cache.write_through(key, v, seq);
    }
    for d in decided {
        match d {
            Decided::One { outcome, done, .. } => done(Ok(outcome)),
            Decided::Txn { results, done, .. } => done(Ok(results)),
        }
    }
}

/// Fails every request of a batch with `e`.
pub(super) fn fail_decided(decided: Vec<Decided>, e: &Error) {
    for d in decided {
        d.fail(e);
    }
}

fn fail_request(r: Request, e: &Error) {
    match r {
        Request::Write(_, done) | Request::GcMove { done, .. } => done(Err(e.clone())),
        Request::Txn(_, done) => done(Err(e.clone())),
        Request::Control(_, done) => done(Err(e.clone())),
    }
}

/// The sync thread of `os` mode: fdatasyncs the log every interval.
pub(crate) fn start_syncer(shared: Arc<Shared>) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("escabelo-sync".into())
        .spawn(move || {
            let interval = shared.opts.wal_sync_interval.max(Duration::from_millis(1));
            let mut w = shared.sync_wait.lock();
            while !shared.shutdown.load(Ordering::Acquire) {
                shared.sync_cv.wait_for(&mut w, interval);
                drop(w);
                // The segment being written (frozen ones were synced when
                // they were frozen).
                let file = shared.wal_file.lock().clone();
                let r = match file {
                    Some(f) => shared
                        .metrics
                        .timed_fsync(|| f.sync_data())
                        .map_err(|e| Error::io("sync log", e)),
                    None => Ok(()),
                };
                if let Err(e) = r {
                    shared.set_fatal(format!("log sync failed: {e}"));
                }
                shared.counters.wal_syncs.fetch_add(1, Ordering::Relaxed);
                w = shared.sync_wait.lock();
            }
        })
        .map_err(|e| Error::io("spawn sync thread", e))
}
