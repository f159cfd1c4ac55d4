//! The budget that lets busy connections keep a large input buffer.
//!
//! A connection's input buffer grows to hold a long request: a 100 KB
//! value arrives over several reads, and each `reserve` reallocates the
//! buffer and copies what came before into fresh memory that the kernel
//! then faults in. Freeing the buffer every time it empties, as an idle
//! connection should, made every long value pay that again (2% of the
//! server's CPU under the challenge's mix, docs/performance.md, seventh
//! pass). So an emptied buffer of up to [`KEEP_EACH_MAX`] bytes is kept,
//! as long as the buffers kept by all connections together stay within a
//! shared [`Budget`] ([`KEEP_TOTAL`] for the server): memory held by
//! emptied buffers is bounded whatever the number of connections. Past
//! the budget, buffers are freed when they empty, as before.
//!
//! Invariant: a [`Keep`] holds exactly the bytes it added to its budget,
//! and gives them back when released or dropped.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest emptied input buffer one connection may keep.
pub const KEEP_EACH_MAX: usize = 1024 * 1024;
/// Bytes of emptied input buffers all connections together may keep.
pub const KEEP_TOTAL: usize = 64 * 1024 * 1024;

/// Bytes that connections may hold in emptied buffers, shared by them.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    total: usize,
}

impl Budget {
    /// A budget of `total` bytes.
    pub const fn new(total: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            total,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// The server's budget for input buffers.
pub static INPUT_BUDGET: Budget = Budget::new(KEEP_TOTAL);

/// One connection's share of a [`Budget`].
#[derive(Debug)]
pub struct Keep {
    budget: &'static Budget,
    held: usize,
}

impl Keep {
    /// A share of nothing yet.
    pub fn new(budget: &'static Budget) -> Keep {
        Keep { budget, held: 0 }
    }

    /// Whether an emptied buffer of `size` bytes may be kept: the share
    /// becomes `size` if the budget allows it. On `false` the share is
    /// given back and the buffer must be freed.
    pub fn hold(&mut self, size: usize) -> bool {
        if size > KEEP_EACH_MAX {
            self.release();
            return false;
        }
        if size <= self.held {
            self.budget
                .used
                .fetch_sub(self.held - size, Ordering::Relaxed);
            self.held = size;
            return true;
        }
        let extra = size - self.held;
        let total = self.budget.total;
        let grown = self
            .budget
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(extra).filter(|&n| n <= total)
            });
        if grown.is_ok() {
            self.held = size;
            true
        } else {
            self.release();
            false
        }
    }

    /// Gives the share back (the buffer was freed).
    pub fn release(&mut self) {
        if self.held > 0 {
            self.budget.used.fetch_sub(self.held, Ordering::Relaxed);
            self.held = 0;
        }
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Keep {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: usize) -> &'static Budget {
        Box::leak(Box::new(Budget::new(total)))
    }

    #[test]
    fn shares_stay_within_the_budget_and_are_given_back() {
        let b = budget(1000);
        let mut one = Keep::new(b);
        let mut two = Keep::new(b);
        assert!(one.hold(600));
        assert!(!two.hold(500), "over the budget");
        assert_eq!((two.held(), b.used()), (0, 600));
        assert!(two.hold(400));
        assert_eq!(b.used(), 1000);
        // Shrinking gives the difference back; growing past it fails and
        // gives everything back.
        assert!(one.hold(100));
        assert_eq!(b.used(), 500);
        assert!(!one.hold(700));
        assert_eq!((one.held(), b.used()), (0, 400));
        drop(two);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_buffer_past_the_per_connection_cap_is_never_kept() {
        let b = budget(usize::MAX);
        let mut k = Keep::new(b);
        assert!(k.hold(KEEP_EACH_MAX));
        assert!(!k.hold(KEEP_EACH_MAX + 1));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn many_threads_never_overdraw_the_budget() {
        let b = budget(10_000);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut k = Keep::new(b);
                    for i in 0..20_000usize {
                        let size = 1 + (i * 7919 + t * 104_729) % 4000;
                        let kept = k.hold(size);
                        assert!(b.used() <= 10_000);
                        assert_eq!(k.held(), if kept { size } else { 0 });
                        if i % 5 == 0 {
                            k.release();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.used(), 0);
    }
}
