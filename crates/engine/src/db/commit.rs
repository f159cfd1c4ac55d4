//! The commit thread: group commit of the write-ahead log.
//!
//! Writers put requests in a queue. The commit thread takes everything
//! waiting (up to [`BATCH_BYTES_MAX`]), decides each request (a delete of an
//! absent key writes nothing; a garbage-collection move applies only if the
//! key still points where it did), appends the whole batch to the log with
//! one `write`, in `sync` mode fdatasyncs it, applies it to the memtable,
//! invalidates the cache and acknowledges every request. While it does,
//! the next batch gathers in the queue.
//!
//! When the memtable or its log segment passes `memtable_size`, the
//! memtable is frozen and a new log segment started; the flush thread
//! takes it from there. Backpressure: with too many frozen memtables or
//! level-0 tables, batches are first delayed by a millisecond each, then
//! held until the flush or compaction catches up.

use super::{Shared, WriteCallback, WriteOp};
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::options::Durability;
use crate::types::{BlobRef, Value};
use crate::version::log_name;
use crate::wal::{encode_record, WalWriter};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Most bytes of records gathered into one log write.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most requests gathered into one batch.
pub const BATCH_REQUESTS_MAX: usize = 4096;
/// Delay given to each batch when writers are being slowed down.
const SLOWDOWN_DELAY: Duration = Duration::from_millis(1);
/// How long a stopped writer sleeps between checks.
const STOP_POLL: Duration = Duration::from_millis(10);

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
    Control(Control, ControlCallback),
}

impl Request {
    fn bytes(&self) -> usize {
        match self {
            Request::Write(WriteOp::Put { key, value }, _) => key.len() + value.len() + 16,
            Request::Write(WriteOp::Delete { key }, _) => key.len() + 16,
            Request::GcMove { key, .. } => key.len() + 40,
            Request::Control(..) => 0,
        }
    }
}

/// The sending side of the commit queue.
#[derive(Clone)]
pub(crate) struct CommitHandle {
    tx: Sender<Request>,
}

impl CommitHandle {
    pub fn submit(&self, op: WriteOp, done: WriteCallback) {
        if let Err(e) = self.tx.send(Request::Write(op, done)) {
            if let Request::Write(_, done) = e.0 {
                done(Err(Error::Closed));
            }
        }
    }

    /// Submits a garbage-collection move: point `key` at `new` if it still
    /// points at `old`. The outcome says whether it did.
    pub fn gc_move(&self, key: Bytes, old: BlobRef, new: BlobRef, done: WriteCallback) {
        if let Err(e) = self.tx.send(Request::GcMove {
            key,
            old,
            new,
            done,
        }) {
            if let Request::GcMove { done, .. } = e.0 {
                done(Err(Error::Closed));
            }
        }
    }

    /// Queues a control request without waiting for it.
    pub fn control_async(&self, c: Control) {
        let _ = self.tx.send(Request::Control(c, Box::new(|_| {})));
    }

    pub fn control_wait(&self, c: Control) -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let req = Request::Control(
            c,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        if self.tx.send(req).is_err() {
            return Err(Error::Closed);
        }
        rx.recv().unwrap_or(Err(Error::Closed))
    }
}

/// Copies an error for each of several waiters.
pub(crate) fn dup_error(e: &Error) -> Error {
    match e {
        Error::Io { context, source } => Error::Io {
            context: context.clone(),
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        Error::NoSpace { context } => Error::NoSpace {
            context: context.clone(),
        },
        Error::Corruption {
            file,
            offset,
            reason,
        } => Error::Corruption {
            file: file.clone(),
            offset: *offset,
            reason: reason.clone(),
        },
        Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
        Error::Locked(p) => Error::Locked(p.clone()),
        Error::ReadOnly(s) => Error::ReadOnly(s.clone()),
        Error::Closed => Error::Closed,
    }
}

/// Starts the commit thread, writing to `wal` into `mem`.
pub(crate) fn start(
    shared: Arc<Shared>,
    wal: WalWriter,
) -> Result<(CommitHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    *shared.wal_file.lock() = Some(wal.file());
    let mut c = Committer {
        shared,
        rx,
        wal,
        buf: Vec::with_capacity(BATCH_BYTES_MAX),
    };
    let h = std::thread::Builder::new()
        .name("escabelo-commit".into())
        .spawn(move || c.run())
        .map_err(|e| Error::io("spawn commit thread", e))?;
    Ok((CommitHandle { tx }, h))
}

struct Committer {
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    wal: WalWriter,
    buf: Vec<u8>,
}

/// A decided write: what goes to the memtable, and who to tell.
struct Decided {
    key: Bytes,
    value: Option<Value>,
    outcome: bool,
    done: WriteCallback,
}

impl Committer {
    fn run(&mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut bytes = first.bytes();
            let mut batch = vec![first];
            while bytes < BATCH_BYTES_MAX && batch.len() < BATCH_REQUESTS_MAX {
                match self.rx.try_recv() {
                    Ok(r) => {
                        bytes += r.bytes();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            if self.process(batch) {
                return;
            }
        }
    }

    /// Handles a batch; returns true when asked to stop.
    fn process(&mut self, batch: Vec<Request>) -> bool {
        let mut writes = Vec::new();
        for r in batch {
            match r {
                Request::Control(c, done) => {
                    self.commit(std::mem::take(&mut writes));
                    let res = match c {
                        Control::Sync | Control::Stop => self.sync(),
                        Control::Rotate => self.rotate(),
                    };
                    done(res);
                    if c == Control::Stop {
                        // Anything still queued is refused.
                        while let Ok(r) = self.rx.try_recv() {
                            fail_request(r, &Error::Closed);
                        }
                        return true;
                    }
                }
                w => writes.push(w),
            }
        }
        self.commit(writes);
        false
    }

    fn sync(&mut self) -> Result<()> {
        let r = self.wal.sync();
        self.shared
            .counters
            .wal_syncs
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &r {
            self.shared.set_fatal(format!("log sync failed: {e}"));
        }
        r
    }

    fn commit(&mut self, writes: Vec<Request>) {
        if writes.is_empty() {
            return;
        }
        if let Err(e) = self
            .shared
            .check_writable()
            .and_then(|_| self.backpressure())
        {
            for w in writes {
                fail_request(w, &e);
            }
            return;
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
        self.buf.clear();
        for w in writes {
            let (key, value, outcome, done) = match w {
                Request::Write(WriteOp::Put { key, value }, done) => {
                    user_bytes += (key.len() + value.len()) as u64;
                    (key, Some(Value::Inline(value)), true, done)
                }
                Request::Write(WriteOp::Delete { key }, done) => {
                    let current = match overlay.get(&key) {
                        Some(v) => Ok(Some(v.clone())),
                        None => sv.get_raw(&key),
                    };
                    match current {
                        Ok(Some(Value::Inline(_) | Value::Blob(_))) => {
                            (key, Some(Value::Tombstone), true, done)
                        }
                        Ok(_) => (key, None, false, done),
                        Err(e) => {
                            done(Err(e));
                            continue;
                        }
                    }
                }
                Request::GcMove {
                    key,
                    old,
                    new,
                    done,
                } => {
                    let current = match overlay.get(&key) {
                        Some(v) => Ok(Some(v.clone())),
                        None => sv.get_raw(&key),
                    };
                    match current {
                        Ok(Some(Value::Blob(r))) if r == old => {
                            (key, Some(Value::Blob(new)), true, done)
                        }
                        Ok(_) => (key, None, false, done),
                        Err(e) => {
                            done(Err(e));
                            continue;
                        }
                    }
                }
                Request::Control(..) => continue,
            };
            if let Some(v) = &value {
                encode_record(&mut self.buf, log_number, &key, v);
                if needs_lookup {
                    overlay.insert(key.clone(), v.clone());
                }
            }
            decided.push(Decided {
                key,
                value,
                outcome,
                done,
            });
        }
        if !self.buf.is_empty() {
            let mut res = self.wal.append(&self.buf);
            if res.is_ok() && self.shared.opts.durability == Durability::Sync {
                res = self.sync();
            }
            if let Err(e) = res {
                for d in decided {
                    (d.done)(Err(dup_error(&e)));
                }
                return;
            }
            let c = &self.shared.counters;
            c.bytes_written
                .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
            c.user_bytes_written
                .fetch_add(user_bytes, Ordering::Relaxed);
            c.wal_bytes.store(self.wal.len(), Ordering::Relaxed);
        }
        // Apply, then publish the new sequence number, then invalidate:
        // see the cache module for why this order is safe.
        let mem = sv.mem.clone();
        for d in &decided {
            if let Some(v) = &d.value {
                mem.insert(d.key.clone(), v.clone());
            }
        }
        let seq = self.shared.seq.fetch_add(1, Ordering::SeqCst) + 1;
        *self.shared.last_write.lock() = std::time::Instant::now();
        for d in &decided {
            if d.value.is_some() {
                self.shared.cache.invalidate(&d.key, seq);
            }
        }
        for d in decided {
            (d.done)(Ok(d.outcome));
        }
        let limit = self.shared.opts.memtable_size as u64;
        if mem.size() >= limit || self.wal.len() >= limit {
            if let Err(e) = self.rotate() {
                tracing::error!(error = %e, "could not start a new log segment");
            }
        }
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
                if let Some(e) = self.shared.flush_error.lock().as_ref() {
                    return Err(Error::NoSpace {
                        context: format!("memtables cannot be flushed: {e}"),
                    });
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
        if self.shared.super_version().mem.is_empty() {
            return Ok(());
        }
        // The frozen segment must be durable before its memtable can be
        // relied on after a power loss.
        self.sync()?;
        let (number, recycle) = {
            let mut vs = self.shared.vs.lock();
            (vs.new_file_number(), vs.recyclable_logs.pop())
        };
        let o = &self.shared.opts;
        let prealloc = if o.durability == Durability::Sync && o.wal_preallocate && recycle.is_none()
        {
            o.memtable_size as u64
        } else {
            0
        };
        let path = self.shared.path(&log_name(number));
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

fn fail_request(r: Request, e: &Error) {
    match r {
        Request::Write(_, done) | Request::GcMove { done, .. } => done(Err(dup_error(e))),
        Request::Control(_, done) => done(Err(dup_error(e))),
    }
}

/// The sync thread of `os` mode: fdatasyncs the log every interval.
pub(crate) fn start_syncer(shared: Arc<Shared>) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("escabelo-sync".into())
        .spawn(move || {
            let interval = shared.opts.wal_sync_interval.max(Duration::from_millis(1));
            let mut vs = shared.vs.lock();
            while !shared.shutdown.load(Ordering::Acquire) {
                shared.bg_cv.wait_for(&mut vs, interval);
                let file = shared.wal_file.lock().clone();
                if let Some(f) = file {
                    drop(vs);
                    if let Err(e) = f.sync_data() {
                        shared.set_fatal(format!("log sync failed: {e}"));
                    }
                    shared.counters.wal_syncs.fetch_add(1, Ordering::Relaxed);
                    vs = shared.vs.lock();
                }
            }
        })
        .map_err(|e| Error::io("spawn sync thread", e))
}
