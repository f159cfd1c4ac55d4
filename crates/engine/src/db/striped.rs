//! Counters that every thread can add to without sharing cache lines.
//!
//! A plain `AtomicU64` bumped by two event loops on two cores moves its
//! cache line from one core to the other on nearly every request: each
//! `fetch_add` then waits for the line instead of taking a few cycles. A
//! pipelined GET bumps six such counters (commands, reads, hits, the
//! command's own count, the latency bucket and the latency sum), and
//! turning them off made GETs 17-33% faster (docs/performance.md,
//! thirteenth pass).
//!
//! So a [`Striped`] set keeps [`STRIPES`] copies of its counters, each
//! copy on cache lines of its own. A thread adds to the copy it was dealt
//! the first time it counted ([`stripe`]), and a reader sums the copies.
//! Threads beyond [`STRIPES`] share copies, which stays correct (the
//! additions are atomic) and only costs the old contention.
//!
//! Invariant: a sum read after every addition has completed is exact;
//! one read while additions run may or may not include each of them, as
//! with a single atomic.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Copies of each striped counter set: the threads that count often (the
/// event loops, the commit and sync threads) each get one of their own on
/// machines of up to this many of them.
pub const STRIPES: usize = 16;

/// Where the next thread's stripe is dealt from.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe, `usize::MAX` until it first counts.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The stripe of the calling thread, dealt in turn when it first counts.
#[inline]
pub fn stripe() -> usize {
    STRIPE.with(|s| {
        let v = s.get();
        if v < STRIPES {
            return v;
        }
        let v = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
        s.set(v);
        v
    })
}

/// One thread's copy of `N` counters, alone on its cache lines (128
/// bytes: adjacent-line prefetching pairs lines on x86).
#[derive(Debug)]
#[repr(align(128))]
struct Lanes<const N: usize>([AtomicU64; N]);

/// `N` counters, striped by thread (see the module documentation).
#[derive(Debug)]
pub struct Striped<const N: usize> {
    stripes: [Lanes<N>; STRIPES],
}

impl<const N: usize> Default for Striped<N> {
    fn default() -> Self {
        Striped::new()
    }
}

impl<const N: usize> Striped<N> {
    /// `N` counters at zero.
    pub const fn new() -> Striped<N> {
        Striped {
            stripes: [const { Lanes([const { AtomicU64::new(0) }; N]) }; STRIPES],
        }
    }

    /// Adds `n` to counter `i` (wrapping); an `i` of `N` or more is
    /// ignored.
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        if let Some(c) = self.stripes[stripe()].0.get(i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counter `i` (0 for an `i` of `N` or more): the wrapping sum of the
    /// stripes.
    pub fn get(&self, i: usize) -> u64 {
        self.stripes
            .iter()
            .filter_map(|l| l.0.get(i))
            .fold(0u64, |sum, c| sum.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

/// One counter, striped by thread.
#[derive(Debug, Default)]
pub struct Counter(Striped<1>);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Counter {
        Counter(Striped::new())
    }

    /// Adds one.
    #[inline]
    pub fn bump(&self) {
        self.0.add(0, 1);
    }

    /// Adds `n` (wrapping).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.add(0, n);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.get(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn many_threads_adding_at_once_lose_nothing() {
        // More threads than stripes, so that some share a stripe.
        let threads = STRIPES + 4;
        let per = 20_000u64;
        let set = Arc::new(Striped::<3>::new());
        let one = Arc::new(Counter::new());
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let set = set.clone();
                let one = one.clone();
                std::thread::spawn(move || {
                    for _ in 0..per {
                        set.add(0, 1);
                        set.add(2, t as u64);
                        one.bump();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let t = threads as u64;
        assert_eq!(set.get(0), t * per);
        assert_eq!(set.get(1), 0);
        assert_eq!(set.get(2), per * (t * (t - 1) / 2));
        assert_eq!(one.get(), t * per);
    }

    #[test]
    fn an_index_past_the_set_is_ignored() {
        let set = Striped::<2>::new();
        set.add(2, 5);
        set.add(usize::MAX, 5);
        assert_eq!((set.get(0), set.get(1), set.get(2)), (0, 0, 0));
    }

    #[test]
    fn counts_wrap_instead_of_overflowing() {
        let c = Counter::new();
        c.add(u64::MAX);
        c.add(2);
        assert_eq!(c.get(), 1);
    }

    #[test]
    fn each_stripe_sits_on_lines_of_its_own() {
        assert_eq!(std::mem::align_of::<Lanes<1>>(), 128);
        assert_eq!(std::mem::size_of::<Striped<1>>(), 128 * STRIPES);
        let a = stripe();
        assert_eq!(stripe(), a, "a thread keeps its stripe");
        assert!(a < STRIPES);
    }
}
