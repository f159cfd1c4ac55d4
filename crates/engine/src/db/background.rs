//! Starting the background threads (flush, compaction, blob collection)
//! and the loop that compaction and blob collection share ([`work_loop`]).
//!
//! They run at a lower scheduling priority than the threads that serve
//! requests: on a machine whose cores the server shares with its clients,
//! a flush or a collection then takes the time the request path leaves
//! idle instead of delaying replies. They are never starved for long: a
//! writer that outruns them is held by backpressure (too many frozen
//! memtables or level-0 tables), which leaves the cores to them.

use super::Shared;
use crate::error::{Error, Result};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How much lower than the request path the background threads run by
/// default ([`crate::Options::background_nice`]), as a nice increment.
/// Measured on 2 cores shared with the load generator (escabelo-bench, 50
/// connections, 80/20, 8 s, alternated): writes only 36.9k/44.2k ops/s
/// (medians of 4 rounds, twice) at 10 against 28.3k/41.0k at 0, 80% reads
/// 67k against 63k (docs/performance.md, fifth pass).
pub const BACKGROUND_NICE: i32 = 10;

/// Spawns a background thread called `name` running `f`, `nice` below
/// the caller's priority.
pub(crate) fn spawn(
    name: &str,
    nice: i32,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_priority(nice);
            f()
        })
        .map_err(|e| Error::io(format!("spawn thread {name}"), e))
}

/// When a [`work_loop`] gives up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopAt {
    /// At shutdown only: the thread keeps working while the engine closes
    /// (compaction: a closing engine's last flush may wait for it).
    Shutdown,
    /// As soon as the engine starts closing (blob collection).
    Closing,
}

/// The loop of a background thread: sleep until woken (`bg_cv`) or for
/// `tick`, run `on_wake`, then `step` until it reports no more work
/// (`Ok(false)`). A failed step is logged as `what` failed and retried
/// after `retry_delay` on a later wake-up.
pub(crate) fn work_loop(
    shared: &Shared,
    what: &str,
    tick: Duration,
    retry_delay: Duration,
    stop_at: StopAt,
    mut on_wake: impl FnMut(),
    mut step: impl FnMut() -> Result<bool>,
) {
    let stopped = || {
        shared.shutdown.load(Ordering::Acquire)
            || (stop_at == StopAt::Closing && shared.closing.load(Ordering::Acquire))
    };
    loop {
        {
            let mut vs = shared.vs.lock();
            if stopped() {
                return;
            }
            shared.bg_cv.wait_for(&mut vs, tick);
        }
        if stopped() {
            return;
        }
        on_wake();
        loop {
            if stopped() {
                return;
            }
            match step() {
                Ok(true) => continue,
                Ok(false) => break,
                // Failing because the engine is stopping is expected.
                Err(_) if stopped() => return,
                Err(e) => {
                    tracing::error!(error = %e, "{what} failed; will retry");
                    std::thread::sleep(retry_delay);
                    break;
                }
            }
        }
    }
}

/// Raises the calling thread's nice value by `by` (a failure only costs
/// the priority, so it is logged and otherwise ignored).
fn lower_priority(by: i32) {
    if by <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers; on Linux,
        // PRIO_PROCESS with a thread id sets that thread's nice value.
        let r = unsafe {
            let tid = libc::gettid();
            let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, (now + by).min(19))
        };
        if r != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn own_nice() -> i32 {
        // SAFETY: no pointers; reads the calling thread's nice value.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn background_threads_run_below_their_starter() {
        let base = own_nice();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = spawn("escabelo-test-bg", BACKGROUND_NICE, move || {
            let _ = tx.send(own_nice());
        })
        .unwrap();
        h.join().unwrap();
        assert_eq!(rx.recv().unwrap(), (base + BACKGROUND_NICE).min(19));
        // The starter itself is unchanged.
        assert_eq!(own_nice(), base);
    }

    #[test]
    fn zero_keeps_the_priority() {
        let base = own_nice();
        let (tx, rx) = std::sync::mpsc::channel();
        spawn("escabelo-test-bg0", 0, move || {
            let _ = tx.send(own_nice());
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(rx.recv().unwrap(), base);
    }
}
