//! What an idle database does: once no client request came for
//! [`IDLE_FLUSH_AFTER`] (or no write for [`READS_DEFER_IDLE_MAX`], whatever
//! the reads), the memtable is flushed (so its log, and the old versions it
//! shadows in the tables and blob files, stop taking disk space) and the
//! spare log kept for recycling is deleted (run by the compaction thread at
//! each of its wake-ups), and blob collection drops to its idle threshold
//! (`super::gc::threshold`). So a database at rest holds its live files
//! and little garbage. Blob collection's own moves do not count as writes
//! here, or a collection would keep the database busy.
//!
//! Reads count too, so that the collection a burst of writes left to do
//! does not take CPU from the reads right after it (measured with 50
//! clients reading after a writes-only phase: the flush and blob
//! collection threads took 6% of the server's CPU). A read marks the
//! current check round ([`Reads::note`]: two relaxed loads, and a store
//! once per round, so reads on many threads do not fight over a cache
//! line); the compaction thread ends a round at each of its wake-ups (at
//! least once a second) and records whether a read came in it. A read racing with the end of a round may go unseen;
//! with reads coming all the time the next round sees one.

use super::commit::{CommitHandle, Control};
use super::Shared;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A database that got no client request for this long is idle.
pub const IDLE_FLUSH_AFTER: Duration = Duration::from_secs(5);
/// Longest that reads alone keep a database busy: this long after the
/// last write it is idle however many reads come, so one that is only
/// read does not keep its garbage.
pub const READS_DEFER_IDLE_MAX: Duration = Duration::from_secs(60);

/// When client reads last came, at the precision of the check rounds.
#[derive(Debug)]
pub(crate) struct Reads {
    /// The current round; ended by [`Reads::end_round`].
    round: AtomicU64,
    /// The last round a read came in.
    seen_in: AtomicU64,
    /// When a round that had a read ended (or the database opened).
    last: Mutex<Instant>,
}

impl Reads {
    pub fn new() -> Reads {
        Reads {
            round: AtomicU64::new(1),
            seen_in: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    /// Marks that a client read came.
    #[inline]
    pub fn note(&self) {
        let round = self.round.load(Ordering::Relaxed);
        if self.seen_in.load(Ordering::Relaxed) != round {
            self.seen_in.store(round, Ordering::Relaxed);
        }
    }

    /// Ends the current round, recording whether a read came in it.
    fn end_round(&self) {
        let round = self.round.load(Ordering::Relaxed);
        if self.seen_in.load(Ordering::Relaxed) == round {
            *self.last.lock() = Instant::now();
        }
        self.round.store(round + 1, Ordering::Relaxed);
    }

    /// Tests: pretends the last read came `ago` ago.
    #[cfg(test)]
    pub fn backdate(&self, ago: Duration) {
        self.round.fetch_add(1, Ordering::Relaxed);
        *self.last.lock() = Instant::now() - ago;
    }

    /// How long ago the last read came (zero if one came this round).
    fn since_last(&self) -> Duration {
        if self.seen_in.load(Ordering::Relaxed) == self.round.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        self.last.lock().elapsed()
    }
}

/// True once no client request came for [`IDLE_FLUSH_AFTER`], or no write
/// for [`READS_DEFER_IDLE_MAX`].
pub(crate) fn is_idle(shared: &Shared) -> bool {
    let since_write = shared.last_write.lock().elapsed();
    since_write >= IDLE_FLUSH_AFTER
        && (since_write >= READS_DEFER_IDLE_MAX || shared.reads.since_last() >= IDLE_FLUSH_AFTER)
}

/// Ends a round of read marks, then flushes the memtable and drops the
/// spare log if the database is idle.
pub(crate) fn tidy_if_idle(shared: &Shared, commit: &CommitHandle) {
    shared.reads.end_round();
    if !is_idle(shared) {
        return;
    }
    if !shared.super_version().mem.is_empty() {
        // Never wait for the commit thread here: it may be waiting for
        // the compaction thread (backpressure on level 0).
        commit.control_async(Control::Rotate);
    }
    if !shared.recycles_logs() {
        // A spare log is worth keeping only while writes come in.
        shared.remove_recyclable_logs();
    }
}

/// Tests: pretends no client request came for twice [`IDLE_FLUSH_AFTER`].
#[cfg(test)]
pub(crate) fn pretend_idle(shared: &Shared) {
    *shared.last_write.lock() = Instant::now() - IDLE_FLUSH_AFTER * 2;
    shared.reads.backdate(IDLE_FLUSH_AFTER * 2);
}
