//! Keeping a core awake for a single client: while exactly one client is
//! connected and it sent a request in the last `--keep-awake-us`, a thread
//! of the lowest scheduling class (`SCHED_IDLE`) spins, so the vCPU that
//! the client or the server is about to sleep on does not halt.
//!
//! Why: with one request in flight, the client and the server take turns,
//! and on this kind of machine (a VM with two vCPUs) every turn that wakes
//! a thread on a halted vCPU costs tens of microseconds: the host must
//! schedule that vCPU again. [`super::busy_poll`] removes the server's
//! half of the wait; this removes the client's, which no setting of the
//! server reached before: the reply wakes the client's thread on a vCPU
//! that is running (this spinner), not halted. Go's runtime does the same
//! with the threads it keeps spinning for work, which is how the original
//! Go server wrote 20k times a second with one connection here against
//! this server's 14k (docs/performance.md, fourteenth pass).
//!
//! Cost: the spinner only runs on otherwise idle time. `SCHED_IDLE` gives
//! way to every other thread at once (a waking thread preempts it), and
//! its share of a busy core is the class's minimal weight. It spins only
//! while a single client is active: it parks once no request came for
//! the window, so an idle server uses no CPU (hunted by
//! `an_idle_single_client_does_not_keep_the_server_busy`), and with two
//! clients or more it never starts (the cores are better spent serving
//! them). Its CPU is counted as the server's. If the system refuses the
//! idle class, the spinner does not run at all: spinning at a normal
//! priority would take CPU from real work.
//!
//! Out of the disk's way ([`watch_disk`], given the engine's counts of
//! log fdatasyncs): a spinning vCPU does not make a disk faster. So the
//! spinner parks while the log syncs, and a turn of the client during
//! which the log synced (a `--durability sync` write) does not keep it
//! awake. With neither, spinning through one client's sync writes cost
//! 300 µs of CPU per write and took them from 5.2k/s to 4.7k/s; parking
//! only during the syncs was worse still (3.3k/s against 4.3k/s: the
//! spinner was woken again after every write). Its sync reads still
//! gain (fifteenth pass).
//!
//! Invariant: the spinner spins only while `now < UNTIL_NS` and no log
//! sync runs, and only [`note`] moves `UNTIL_NS` forward; a [`note`]
//! that finds the spinner parked unparks it. Both sides use `SeqCst`
//! (the spinner stores `PARKED`, then looks at the window and the log's
//! syncs again; a note stores the window, then looks at `PARKED`), so a
//! note racing with the spinner going to sleep is seen by one or the
//! other. The same holds for a sync that ends while the spinner parks:
//! the sync's end is followed by the loop's next note (the engine's
//! counts are `SeqCst` too).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Largest `--keep-awake-us`: beyond this a pause of the client is not a
/// turn of a request any more.
pub const KEEP_AWAKE_US_MAX: u64 = 100_000;
/// Default `--keep-awake-us`: many request turns long, so that one
/// client's steady stream of requests never lets the spinner park (200 µs
/// gave 21.6k writes/s, 2,000 µs 30.7k: fourteenth pass).
pub const KEEP_AWAKE_US_DEFAULT: u64 = 2000;
/// Spin-loop hints between two looks at the clock.
const SPINS_PER_CHECK: u32 = 64;
/// Longest park: a missed unpark (there should be none) costs at most
/// this much of the window.
const PARK_MAX: Duration = Duration::from_secs(1);

/// The window in nanoseconds (0: off, and no spinner was started).
static WINDOW_NS: AtomicU64 = AtomicU64::new(0);
/// Until when the spinner spins, in nanoseconds since [`epoch`].
static UNTIL_NS: AtomicU64 = AtomicU64::new(0);
/// True while the spinner is parked or about to park.
static PARKED: AtomicBool = AtomicBool::new(false);
/// The spinner, once started.
static SPINNER: OnceLock<std::thread::Thread> = OnceLock::new();
/// The disk to stay out of the way of ([`watch_disk`]).
static DISK: OnceLock<Box<dyn Disk>> = OnceLock::new();
/// `Disk::syncs_started` at the last [`note`].
static SYNCS_SEEN: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Starts the spinner with a window of `us` microseconds (clamped to
/// [`KEEP_AWAKE_US_MAX`]; 0 starts nothing). Only the first call with a
/// window starts a thread; later ones change the window.
pub fn start(us: u64) -> std::io::Result<()> {
    let us = us.min(KEEP_AWAKE_US_MAX);
    WINDOW_NS.store(us * 1000, Ordering::Relaxed);
    if us == 0 || SPINNER.get().is_some() {
        return Ok(());
    }
    let _ = epoch();
    let handle = std::thread::Builder::new()
        .name("escabelo-awake".into())
        .spawn(run)?;
    let _ = SPINNER.set(handle.thread().clone());
    Ok(())
}

/// What the spinner needs to know of the log's fdatasyncs.
pub trait Disk: Send + Sync + 'static {
    /// Syncs started so far.
    fn syncs_started(&self) -> u64;
    /// True while a sync runs.
    fn syncing(&self) -> bool;
}

impl Disk for escabelo_engine::LogSyncs {
    fn syncs_started(&self) -> u64 {
        self.started()
    }
    fn syncing(&self) -> bool {
        self.running() > 0
    }
}

/// Makes the spinner stay out of the way of `disk`: it parks while a sync
/// runs, and a turn during which a sync started does not keep it awake.
/// Both are looked at often (one or two atomic loads each). Only the
/// first call takes effect.
pub fn watch_disk(disk: impl Disk) {
    let seen = disk.syncs_started();
    if DISK.set(Box::new(disk)).is_ok() {
        SYNCS_SEEN.store(seen, Ordering::Relaxed);
    }
}

fn syncing() -> bool {
    DISK.get().is_some_and(|d| d.syncing())
}

/// True if a sync started since the last call.
fn synced_since_last_turn() -> bool {
    DISK.get().is_some_and(|d| {
        let n = d.syncs_started();
        SYNCS_SEEN.swap(n, Ordering::Relaxed) != n
    })
}

/// True while the spinner should park: no note for the window, or a log
/// sync runs.
fn idle() -> bool {
    now_ns() >= UNTIL_NS.load(Ordering::SeqCst) || syncing()
}

/// Notes a turn of the only client: the spinner spins for the window from
/// now, unless the log synced since the last turn. Called by the loop
/// serving it each time it would sleep.
#[inline]
pub fn note() {
    let w = WINDOW_NS.load(Ordering::Relaxed);
    if w == 0 || synced_since_last_turn() {
        return;
    }
    UNTIL_NS.store(now_ns().saturating_add(w), Ordering::SeqCst);
    if PARKED.load(Ordering::SeqCst) {
        if let Some(t) = SPINNER.get() {
            t.unpark();
        }
    }
}

/// True while the spinner is spinning (tests).
#[cfg(test)]
fn spinning() -> bool {
    !PARKED.load(Ordering::SeqCst) && now_ns() < UNTIL_NS.load(Ordering::SeqCst)
}

/// Puts the calling thread in the idle scheduling class; false if the
/// system refused.
fn to_idle_class() -> bool {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: `p` is a valid sched_param for the call; pid 0 is the
    // calling thread, whose policy alone changes.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) == 0 }
}

fn run() {
    if !to_idle_class() {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "the idle scheduling class was refused; --keep-awake-us is off"
        );
        WINDOW_NS.store(0, Ordering::Relaxed);
        PARKED.store(true, Ordering::SeqCst);
        return;
    }
    loop {
        if idle() {
            PARKED.store(true, Ordering::SeqCst);
            // Looked at again after saying so: a note in between either
            // saw PARKED (and unparks) or is seen here.
            if idle() {
                std::thread::park_timeout(PARK_MAX);
            }
            PARKED.store(false, Ordering::SeqCst);
            continue;
        }
        for _ in 0..SPINS_PER_CHECK {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until `cond` holds, failing with `what` after 10 s.
    fn wait_until(cond: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn parked() -> bool {
        PARKED.load(Ordering::SeqCst)
    }

    /// The one test of this process-wide state (only `main` starts it
    /// otherwise), so nothing else moves the window meanwhile.
    #[test]
    fn the_spinner_spins_after_a_note_and_parks_when_the_window_has_passed_or_the_log_syncs() {
        assert!(!spinning(), "nothing noted yet");
        start(2000).unwrap();
        // The thread names itself as it starts: look until it has.
        let deadline = Instant::now() + Duration::from_secs(10);
        let task = loop {
            let found = std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|e| e.ok())
                .find(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "escabelo-awake")
                });
            if let Some(e) = found {
                break e.path();
            }
            assert!(
                Instant::now() < deadline,
                "the spinner thread is not listed in /proc/self/task"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        // The policy (field 41 of stat: 5 is SCHED_IDLE) is set by the
        // thread itself right after it starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            let after_comm = stat.rsplit_once(')').unwrap().1;
            let policy: u32 = after_comm
                .split_whitespace()
                .nth(38)
                .unwrap()
                .parse()
                .unwrap();
            if policy == libc::SCHED_IDLE as u32 {
                break;
            }
            assert!(Instant::now() < deadline, "policy stays {policy}");
            std::thread::sleep(Duration::from_millis(10));
        }
        wait_until(parked, "never parked with nothing noted");
        wait_until(
            || {
                note();
                !parked()
            },
            "a note did not wake the spinner",
        );
        // No note for the window (2 ms): it parks again.
        wait_until(parked, "never parked after the window");
        assert!(!spinning());
        // A sync parks it although the window is still open (a minute,
        // so that without the sync it would not park within the test's
        // deadlines); the first note after the sync is not kept awake
        // (the turn synced), the next one is.
        static STARTED: AtomicU64 = AtomicU64::new(0);
        static RUNNING: AtomicBool = AtomicBool::new(false);
        struct TestDisk;
        impl Disk for TestDisk {
            fn syncs_started(&self) -> u64 {
                STARTED.load(Ordering::SeqCst)
            }
            fn syncing(&self) -> bool {
                RUNNING.load(Ordering::SeqCst)
            }
        }
        watch_disk(TestDisk);
        WINDOW_NS.store(60_000_000_000, Ordering::Relaxed);
        note();
        wait_until(|| !parked(), "a note did not wake the spinner");
        STARTED.fetch_add(1, Ordering::SeqCst);
        RUNNING.store(true, Ordering::SeqCst);
        wait_until(parked, "spins through a sync");
        RUNNING.store(false, Ordering::SeqCst);
        UNTIL_NS.store(0, Ordering::SeqCst);
        note();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            PARKED.load(Ordering::SeqCst) && !spinning(),
            "kept awake by a turn that synced"
        );
        note();
        wait_until(|| !parked(), "a turn without a sync did not wake it");
        // Close the window at once.
        UNTIL_NS.store(0, Ordering::SeqCst);
        wait_until(parked, "never parked once the window closed");
        // Off: a note neither spins nor wakes anything.
        start(0).unwrap();
        note();
        std::thread::sleep(Duration::from_millis(5));
        assert!(PARKED.load(Ordering::SeqCst));
    }
}
