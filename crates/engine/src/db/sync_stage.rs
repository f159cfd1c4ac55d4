//! The sync stage of `sync` durability: the log's fdatasyncs run on a
//! thread of their own, so that the committer appends the next batch
//! while the current one is being synced.
//!
//! The committer (the leading writer or the commit thread, whoever holds
//! the log: see [`super::commit`]) appends a batch to the log, inserts it
//! into the memtable under its sequence number **without publishing it**,
//! and hands it here ([`SyncStage::hand_over`]). This thread takes every
//! batch handed over so far, fdatasyncs the log once, and then publishes
//! those batches in order (sequence number, cache updates,
//! acknowledgements; see
//! [`super::commit::publish`]). A sync starts as soon as the previous one
//! ends and covers everything appended by then, so concurrent writers share
//! few, large syncs (the batching of PostgreSQL's and Redis's `always`
//! mode, without blocking the appends).
//!
//! Why this keeps every promise of `sync` mode:
//! - *Acknowledged only after fdatasync*: a batch is handed over only once
//!   its `write` returned, so an fdatasync that starts after the hand-over
//!   covers it; acknowledgements are sent after that fdatasync returned Ok.
//! - *Nothing is visible before it is durable*: readers see memtable
//!   versions only up to the published sequence number
//!   ([`crate::memtable`]); the committer alone reads the unpublished
//!   ones (`SEQ_LATEST`), to decide deletes, collection moves and
//!   transactions against the newest state.
//! - *Order*: batches are published in the order they were appended, by
//!   this one thread.
//! - *Segment switches and control requests* wait until every batch handed
//!   over is published ([`SyncStage::drain`]), so a frozen memtable holds
//!   only published versions and a frozen segment only synced batches.
//! - *A failed fdatasync* makes the engine read-only and fails every batch
//!   of that sync (their outcome is unknown: the bytes are in the log and
//!   may or may not be on disk); they are never published. Later syncs of
//!   that log fail too (see `wal::writer`), so nothing after them is
//!   published either.
//!
//! **A batch alone is synced by its committer** ([`SyncStage::alone`]):
//! when nothing is handed over or being synced, the batch holds one
//! request and so did each of the last [`ALONE_STREAK`] syncs (a client
//! writing one request at a time), the committer fdatasyncs and publishes it itself, still
//! holding the log. The hand-over and the wake-up back cost two thread
//! switches per write, a quarter of one client's writes per second; with
//! nothing else in flight there is nothing to overlap. Order holds: the
//! stage is idle, so every batch handed over earlier is published, and
//! none can be handed over while the committer holds the log. As soon as
//! two requests meet in a batch, batches go to this thread again.

use super::commit::{fail_decided, publish, Decided};
use super::Shared;
use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A batch in the log and the memtable, waiting for its fdatasync.
pub(super) struct Appended {
    /// The batch's sequence number (not yet published).
    pub seq: u64,
    /// Its requests, to acknowledge.
    pub decided: Vec<Decided>,
    /// It wrote to the log (a batch of deletes of absent keys writes
    /// nothing, but is still published in order).
    pub logged: bool,
}

#[derive(Default)]
struct State {
    /// Handed over, not yet taken by a sync.
    waiting: Vec<Appended>,
    /// A sync (and the publication after it) is running.
    busy: bool,
    /// Exit once nothing waits.
    stop: bool,
}

/// The hand-over point between the committer and the sync thread.
pub(super) struct SyncStage {
    state: Mutex<State>,
    /// Wakes the sync thread, and whoever waits in [`SyncStage::drain`].
    cv: Condvar,
    /// How many fdatasyncs in a row (here or by a committer) covered at
    /// most [`ALONE_REQUESTS_MAX`] requests.
    singles: AtomicUsize,
}

/// Most requests a batch holds, and each of the last [`ALONE_STREAK`]
/// syncs covered, for the committer to sync the batch itself
/// ([`SyncStage::alone`]).
pub(super) const ALONE_REQUESTS_MAX: usize = 1;
/// Syncs in a row of at most [`ALONE_REQUESTS_MAX`] requests before a
/// committer syncs a batch itself. With many clients a sync of one request
/// happens now and then (the first write after a large sync); a committer
/// syncing then would block its I/O thread while others could have shared
/// the sync. Measured with 50 clients: with a streak of one, 8% of the
/// syncs ran on I/O threads.
pub(super) const ALONE_STREAK: usize = 8;

impl SyncStage {
    /// Starts the sync thread.
    pub fn start(shared: Arc<Shared>) -> Result<(Arc<SyncStage>, JoinHandle<()>)> {
        let stage = Arc::new(SyncStage {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            singles: AtomicUsize::new(0),
        });
        let s = stage.clone();
        let h = std::thread::Builder::new()
            .name("escabelo-fsync".into())
            .spawn(move || s.run(&shared))
            .map_err(|e| Error::io("spawn log sync thread", e))?;
        Ok((stage, h))
    }

    /// Queues a batch whose log write has returned.
    pub fn hand_over(&self, a: Appended) {
        self.state.lock().waiting.push(a);
        self.cv.notify_all();
    }

    /// True if the committer should sync and publish its batch of
    /// `requests` itself: nothing is handed over or being synced, and
    /// neither this batch nor any of the last [`ALONE_STREAK`] syncs holds
    /// more than [`ALONE_REQUESTS_MAX`] requests. The committer must hold
    /// the log from this call until it has published the batch.
    pub fn alone(&self, requests: usize) -> bool {
        if requests > ALONE_REQUESTS_MAX || self.singles.load(Ordering::Relaxed) < ALONE_STREAK {
            return false;
        }
        let s = self.state.lock();
        !s.busy && s.waiting.is_empty()
    }

    /// Records that an fdatasync covered `requests` requests.
    pub fn covered(&self, requests: usize) {
        if requests > ALONE_REQUESTS_MAX {
            self.singles.store(0, Ordering::Relaxed);
        } else {
            self.singles.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every batch handed over is synced and published (or
    /// failed).
    pub fn drain(&self) {
        let mut s = self.state.lock();
        while s.busy || !s.waiting.is_empty() {
            self.cv.wait(&mut s);
        }
    }

    /// Lets the thread exit once everything handed over is done.
    pub fn stop(&self) {
        self.state.lock().stop = true;
        self.cv.notify_all();
    }

    fn run(&self, shared: &Shared) {
        loop {
            let batches = {
                let mut s = self.state.lock();
                while s.waiting.is_empty() && !s.stop {
                    self.cv.wait(&mut s);
                }
                if s.waiting.is_empty() {
                    return;
                }
                s.busy = true;
                std::mem::take(&mut s.waiting)
            };
            // Every batch taken was written before this call: it covers
            // them all. The file is the current segment's: a segment switch
            // drains this stage first.
            let file = shared.wal_file.lock().clone();
            let r = match file {
                _ if !batches.iter().any(|b| b.logged) => Ok(()),
                Some(f) => shared
                    .metrics
                    .timed_fsync(|| f.sync_data())
                    .map_err(|e| Error::io("syncing the log", e)),
                None => Err(Error::Closed),
            };
            if batches.iter().any(|b| b.logged) {
                shared.counters.wal_syncs.fetch_add(1, Ordering::Relaxed);
                self.covered(batches.iter().map(|b| b.decided.len()).sum());
            }
            match r {
                Ok(()) => {
                    for b in batches {
                        publish(shared, b.seq, b.decided);
                    }
                }
                Err(e) => {
                    shared.set_fatal(format!("log sync failed: {e}"));
                    for b in batches {
                        fail_decided(b.decided, &e);
                    }
                }
            }
            self.state.lock().busy = false;
            self.cv.notify_all();
        }
    }
}
