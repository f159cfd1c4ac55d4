//! Busy polling for a server with one client: before the loop serving the
//! only connection sleeps, it polls that connection's socket for a short
//! while (`--busy-poll-us`), so that the client's next request is read
//! without the loop being put to sleep and woken again.
//!
//! Why: with one request in flight, the server and the client take turns,
//! and on this kind of machine (a VM with two vCPUs) each turn that wakes
//! a sleeping thread on an idle vCPU costs tens of microseconds: one
//! connection wrote 10.2k/s with the client and the server pinned to two
//! different cores, and 40.7k/s with both pinned to one. Polling removes
//! the server's half of that wait; [`super::keep_awake`] the client's.
//! One connection, writes only, 3 alternated rounds: 15.5k, 15.8k, 13.8k
//! writes/s polling 30 µs against 10.9k, 11.5k, 12.4k without
//! (docs/performance.md, thirteenth pass).
//!
//! Cost: up to `--busy-poll-us` of CPU each time the loop would sleep,
//! and only while exactly one client is connected: with more, the cores
//! are better spent serving them, and the yield of [`super::loops`] does
//! the work. Not with `--durability sync`: there a write's acknowledgement
//! comes from the sync thread, which polling the socket would not notice.
//!
//! Invariant: a [`Served`] guard lives exactly as long as a connection is
//! served on its loop's thread, so this thread's list holds the sockets
//! of the connections it serves now, and [`SERVED_TOTAL`] their number
//! over all loops. This rests on the invariant of [`super::loops`]: in the
//! server binary a connection's task never changes threads. (A `Server`
//! run on a multi-thread runtime, as some tests do, may drop a guard on
//! another thread and leave its socket listed; only `main` turns the poll
//! on, and only the loops' runtimes call it.)

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Largest `--busy-poll-us`: a longer poll is a core spent waiting.
pub const BUSY_POLL_US_MAX: u64 = 1000;
/// Default `--busy-poll-us`: longer than the server's share of one
/// request's turn, shorter than a sleep and a wake-up (the default was
/// chosen from 15, 30 and 60 µs: 30 gave the most writes per second).
pub const BUSY_POLL_US_DEFAULT: u64 = 30;

/// How long to poll, in microseconds (0: never).
static BUSY_POLL_US: AtomicU64 = AtomicU64::new(0);
/// Connections served now by every loop of this process.
static SERVED_TOTAL: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Sockets of the connections this thread's loop serves now.
    static SERVED: RefCell<Vec<RawFd>> = const { RefCell::new(Vec::new()) };
}

/// Sets how long a loop polls its only connection before sleeping
/// (clamped to [`BUSY_POLL_US_MAX`]; 0 turns polling off).
pub fn set_busy_poll_us(us: u64) {
    BUSY_POLL_US.store(us.min(BUSY_POLL_US_MAX), Ordering::Relaxed);
}

/// Marks a connection as served by the calling thread's loop, until
/// dropped.
#[derive(Debug)]
pub struct Served {
    fd: RawFd,
}

impl Served {
    /// Starts serving the connection whose socket is `fd`, on this thread.
    pub fn new(fd: RawFd) -> Served {
        SERVED.with(|s| s.borrow_mut().push(fd));
        SERVED_TOTAL.fetch_add(1, Ordering::Relaxed);
        Served { fd }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        SERVED.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(i) = s.iter().position(|&f| f == self.fd) {
                s.swap_remove(i);
            }
        });
        SERVED_TOTAL.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The calling loop's connection, if it is the only one of the process
/// (then noted to [`super::keep_awake`]), with how long to poll it (`None`
/// if polling is off).
fn only_connection() -> Option<(RawFd, Option<Duration>)> {
    let total = SERVED_TOTAL.load(Ordering::Relaxed);
    let fd = SERVED.with(|s| pick(total, &s.borrow()))?;
    super::keep_awake::note();
    let us = BUSY_POLL_US.load(Ordering::Relaxed);
    Some((fd, (us > 0).then(|| Duration::from_micros(us))))
}

/// The socket of this loop's connection if it is the only one of the
/// process, given the process's connections and this loop's sockets.
fn pick(total: usize, here: &[RawFd]) -> Option<RawFd> {
    match here {
        [fd] if total == 1 => Some(*fd),
        _ => None,
    }
}

/// Before the loop serving the process's only connection sleeps: notes
/// the client's turn to [`super::keep_awake`], then polls the socket until
/// it has bytes to read (returns `true`) or the poll time has passed
/// (`false`, also when there is nothing to poll).
pub fn poll_only_connection() -> bool {
    match only_connection() {
        Some((fd, Some(budget))) => poll_readable(fd, budget),
        _ => false,
    }
}

/// Polls `fd` until it is readable (`true`) or `budget` has passed.
fn poll_readable(fd: RawFd, budget: Duration) -> bool {
    let deadline = Instant::now() + budget;
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd for the duration of the call; a
        // timeout of 0 never blocks. The fd belongs to a connection this
        // thread serves now (its `Served` guard is alive), and at worst a
        // closed fd reports POLLNVAL, which ends the poll.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n != 0 {
            return n > 0 && p.revents & libc::POLLIN != 0;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn only_the_single_connection_of_the_process_is_polled() {
        assert_eq!(pick(1, &[7]), Some(7));
        assert_eq!(pick(2, &[7]), None, "another loop has a connection");
        assert_eq!(pick(2, &[7, 8]), None, "two on this loop");
        assert_eq!(pick(0, &[]), None, "none");
    }

    #[test]
    fn a_guard_lists_its_socket_on_its_thread_while_it_lives() {
        // On a thread of its own: other tests' servers do not count here.
        std::thread::spawn(|| {
            let here = || SERVED.with(|s| s.borrow().clone());
            let one = Served::new(5);
            let two = Served::new(9);
            assert_eq!(here(), vec![5, 9]);
            drop(one);
            assert_eq!(here(), vec![9]);
            drop(two);
            assert!(here().is_empty());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_poll_ends_when_bytes_arrive_or_its_time_is_up() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let fd = server.as_raw_fd();
        let budget = Duration::from_micros(300);
        let start = Instant::now();
        assert!(!poll_readable(fd, budget), "nothing to read");
        assert!(start.elapsed() >= budget);
        client.write_all(b"read k\r").unwrap();
        let start = Instant::now();
        while !poll_readable(fd, budget) {
            assert!(start.elapsed() < Duration::from_secs(10), "never readable");
        }
        drop(client);
        // The peer closed: readable (end of file), so the loop wakes to
        // see it.
        assert!(poll_readable(fd, budget));
    }

    #[test]
    fn the_poll_time_is_capped() {
        // Stored process-wide; no server in these tests polls with it
        // (only main sets it).
        set_busy_poll_us(u64::MAX);
        assert_eq!(BUSY_POLL_US.load(Ordering::Relaxed), BUSY_POLL_US_MAX);
        set_busy_poll_us(0);
    }
}
