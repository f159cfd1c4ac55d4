//! Event loops for client connections: one single-threaded tokio runtime
//! per I/O thread, each with its own `epoll`, and no work stealing between
//! them.
//!
//! The accepting loop (the runtime `main` runs) serves connections too;
//! [`EventLoops::start`] adds the other `n - 1`. New connections are dealt
//! out in turn, and a connection stays on its loop until it closes.
//!
//! Why not tokio's multi-thread runtime (used until the twelfth pass of
//! docs/performance.md): its workers steal tasks from each other, so a
//! connection's task, buffers and wake-ups move between the cores. On 2
//! cores shared with 50 clients, loops that own their connections, each
//! yielding the core before it sleeps ([`before_sleep`]), served 17-26%
//! more of the 80% mix, 12-13% more reads only and 4-7% more writes
//! (same-round ratios of 3 alternated rounds).
//!
//! Invariant: in the server binary, a connection's task runs on one thread
//! from its first poll to its drop (every loop is a current-thread
//! runtime).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::warn;

/// Most I/O threads (`--io-threads`); more than this on one machine is a
/// typo.
pub const IO_THREADS_MAX: usize = 1024;

/// The extra event loops, and where the next connection goes.
pub struct EventLoops {
    loops: Vec<Loop>,
    next: AtomicUsize,
}

struct Loop {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EventLoops {
    /// No extra loops: every connection runs on the caller's runtime.
    pub fn none() -> EventLoops {
        EventLoops {
            loops: Vec::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// Starts `extra` event loops, each a thread named `escabelo-io-N`
    /// running a single-threaded runtime until [`EventLoops::stop`]; at
    /// most [`IO_THREADS_MAX`] loops in all.
    pub fn start(extra: usize) -> io::Result<EventLoops> {
        if extra >= IO_THREADS_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {IO_THREADS_MAX} I/O threads"),
            ));
        }
        let mut loops = Vec::with_capacity(extra);
        for i in 1..=extra {
            let rt = runtime(&format!("escabelo-io-{i}")).build()?;
            let handle = rt.handle().clone();
            let (tx, rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("escabelo-io-{i}"))
                .spawn(move || {
                    // Runs the loop's tasks until told to stop (or until
                    // the sender is dropped), then cancels what is left.
                    let _ = rt.block_on(rx);
                    rt.shutdown_timeout(std::time::Duration::from_secs(2));
                })?;
            loops.push(Loop {
                handle,
                stop: Some(tx),
                thread: Some(thread),
            });
        }
        Ok(EventLoops {
            loops,
            next: AtomicUsize::new(0),
        })
    }

    /// Event loops in all, counting the caller's.
    pub fn count(&self) -> usize {
        self.loops.len() + 1
    }

    /// The loop for the next connection: `None` is the caller's own.
    pub fn pick(&self) -> Option<&Handle> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.count();
        if n == 0 {
            None
        } else {
            Some(&self.loops[n - 1].handle)
        }
    }

    /// Stops every extra loop (cancelling its connections' tasks) and
    /// waits for its thread.
    pub fn stop(&mut self) {
        for l in &mut self.loops {
            if let Some(tx) = l.stop.take() {
                let _ = tx.send(());
            }
        }
        for l in &mut self.loops {
            if let Some(t) = l.thread.take() {
                if t.join().is_err() {
                    warn!("an I/O thread panicked");
                }
            }
        }
    }
}

impl Drop for EventLoops {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The runtime of one event loop, the accepting one (built by `main`)
/// and the others alike: single-threaded, with I/O and timers, yielding
/// before it sleeps. `thread_name` names its blocking-pool threads.
pub fn runtime(thread_name: &str) -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all()
        .thread_name(thread_name)
        .on_thread_park(before_sleep);
    b
}

/// Runs each time an event loop is about to sleep in `epoll_wait`: if it
/// serves the server's only connection, notes the client's turn to
/// [`super::keep_awake`], polls the socket for a moment
/// ([`super::busy_poll`]) and returns if a request came; otherwise gives
/// the core to another runnable thread first (`sched_yield`).
///
/// On cores shared with the clients, the thread that would run next is
/// often a client with a request for this loop; when it has sent it, the
/// loop's `epoll_wait` returns at once instead of sleeping and being
/// woken. With two loops and 50 clients, reads only went from 0.25-0.27
/// context switches per request to 0.044, and from 103k-109k to
/// 131k-137k requests per second; writes only lost 3% (docs/performance.md,
/// twelfth pass). When nothing else is runnable, the call returns at once.
pub fn before_sleep() {
    if super::busy_poll::poll_only_connection() {
        return;
    }
    std::thread::yield_now();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_dealt_out_in_turn() {
        let loops = EventLoops::start(2).unwrap();
        assert_eq!(loops.count(), 3);
        let picks: Vec<bool> = (0..6).map(|_| loops.pick().is_none()).collect();
        assert_eq!(picks, [true, false, false, true, false, false]);
    }

    #[test]
    fn too_many_loops_are_refused() {
        assert!(EventLoops::start(IO_THREADS_MAX).is_err());
    }

    #[test]
    fn without_extra_loops_every_connection_stays_on_the_caller() {
        let loops = EventLoops::none();
        assert!((0..4).all(|_| loops.pick().is_none()));
    }

    #[test]
    fn stopping_joins_every_thread() {
        let mut loops = EventLoops::start(3).unwrap();
        assert!(loops.pick().is_none());
        let h = loops.pick().cloned().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        h.spawn(async move {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        let name = rx.recv().unwrap();
        assert_eq!(name.as_deref(), Some("escabelo-io-1"));
        loops.stop();
        assert!(loops.loops.iter().all(|l| l.thread.is_none()));
    }
}
