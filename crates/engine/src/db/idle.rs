//! What an idle database does: once no client write came for
//! [`IDLE_FLUSH_AFTER`], the memtable is flushed (so its log, and the old
//! versions it shadows in the tables and blob files, stop taking disk
//! space) and the spare log kept for recycling is deleted (run by the
//! compaction thread at each of its wake-ups), and blob collection drops to
//! its idle threshold (`super::gc::threshold`). So a database at rest holds
//! its live files and little garbage. Blob collection's own moves do not
//! count as writes here, or a collection would keep the database busy.

use super::commit::{CommitHandle, Control};
use super::Shared;
use std::time::Duration;

/// A memtable that got no write for this long is flushed.
pub const IDLE_FLUSH_AFTER: Duration = Duration::from_secs(5);

/// True once no client write came for [`IDLE_FLUSH_AFTER`].
pub(crate) fn is_idle(shared: &Shared) -> bool {
    shared.last_write.lock().elapsed() >= IDLE_FLUSH_AFTER
}

/// Flushes the memtable and drops the spare log if no write came for
/// [`IDLE_FLUSH_AFTER`].
pub(crate) fn tidy_if_idle(shared: &Shared, commit: &CommitHandle) {
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
