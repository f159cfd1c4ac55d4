//! Lock-free histograms for monitoring: the latency of log fdatasyncs and
//! the number of requests per log write (group-commit batch size).
//!
//! A [`Histogram`] has a fixed list of bucket bounds chosen at compile
//! time; recording a value is a binary search over the bounds and two
//! relaxed atomic additions (no lock, no allocation), so it can sit on the
//! write path. A [`HistogramSnapshot`] is what a monitoring scrape reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bounds a [`Histogram`] may have (one more bucket holds the values
/// above the last bound).
pub const HISTOGRAM_BOUNDS_MAX: usize = 31;

/// Bucket bounds for durations, in nanoseconds: 1 µs to 10 s in 1-2.5-5
/// steps.
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Bucket bounds for batch sizes (requests per log write): powers of two
/// up to the commit queue's batch limit.
pub const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// A histogram with fixed bucket bounds, safe to record into from any
/// thread without locking.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// `buckets[i]` counts values `<= bounds[i]` and `> bounds[i - 1]`;
    /// `buckets[bounds.len()]` counts the values above the last bound.
    buckets: [AtomicU64; HISTOGRAM_BOUNDS_MAX + 1],
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds`, which must be strictly increasing
    /// and at most [`HISTOGRAM_BOUNDS_MAX`] long (checked at compile time
    /// when used in a constant).
    pub const fn new(bounds: &'static [u64]) -> Histogram {
        assert!(bounds.len() <= HISTOGRAM_BOUNDS_MAX, "too many bounds");
        let mut i = 1;
        while i < bounds.len() {
            assert!(bounds[i - 1] < bounds[i], "bounds must increase");
            i += 1;
        }
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; HISTOGRAM_BOUNDS_MAX + 1],
            sum: AtomicU64::new(0),
        }
    }

    /// Records one value.
    #[inline]
    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration, in nanoseconds.
    #[inline]
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The counts so far. Each bucket is read atomically, but buckets
    /// recorded into during the read may or may not be included.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.buckets[..=self.bounds.len()]
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// The state of a [`Histogram`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// The bucket bounds (inclusive upper bounds).
    pub bounds: &'static [u64],
    /// Values per bucket (not cumulative): one per bound, then the values
    /// above the last bound.
    pub counts: Vec<u64>,
    /// Sum of every value recorded (wrapping after 2^64).
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(bound, values <= bound)` for every bound, as Prometheus buckets
    /// expect (the `+Inf` bucket is [`HistogramSnapshot::count`]).
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(self.counts.iter().scan(0u64, |acc, c| {
                *acc += c;
                Some(*acc)
            }))
            .map(|(b, c)| (*b, c))
    }
}

/// Histograms of the write path, recorded by the commit and sync threads.
#[derive(Debug)]
pub(crate) struct WriteMetrics {
    /// Duration of each fdatasync of the log, in nanoseconds.
    pub fsync: Histogram,
    /// Requests in each batch written to the log with one write.
    pub batch: Histogram,
    /// fdatasyncs of the log, started and ended.
    pub syncs: LogSyncs,
}

impl Default for WriteMetrics {
    fn default() -> Self {
        WriteMetrics {
            fsync: Histogram::new(LATENCY_BOUNDS_NS),
            batch: Histogram::new(BATCH_BOUNDS),
            syncs: LogSyncs::default(),
        }
    }
}

impl WriteMetrics {
    /// Runs `sync` (an fdatasync of the log), counted in
    /// [`WriteMetrics::syncs`], and records how long it took.
    #[inline]
    pub fn timed_fsync<T>(&self, sync: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let r = {
            let _running = self.syncs.enter();
            sync()
        };
        self.fsync.observe_duration(start.elapsed());
        r
    }

    /// Records a batch of `requests` requests written with one log write.
    #[inline]
    pub fn observe_batch(&self, requests: usize) {
        self.batch.observe(requests as u64);
    }
}

/// The log's fdatasyncs as they start and end, readable from any thread
/// without the database (see [`crate::Db::log_syncs`]). A server can use
/// it to stay out of the disk's way: its keep-awake spinner parks while a
/// sync runs, and is not kept awake for a turn that synced.
///
/// Ordering: both counts move with `SeqCst`, `started` before a sync
/// starts and `ended` after it returned, so a thread that stores a flag
/// and then reads no sync running knows that any sync still to end will
/// end after its flag was stored.
#[derive(Debug, Clone, Default)]
pub struct LogSyncs(Arc<SyncCounts>);

#[derive(Debug, Default)]
struct SyncCounts {
    started: AtomicU64,
    ended: AtomicU64,
}

impl LogSyncs {
    /// fdatasyncs of the log started so far.
    #[inline]
    pub fn started(&self) -> u64 {
        self.0.started.load(Ordering::SeqCst)
    }

    /// fdatasyncs of the log running now.
    #[inline]
    pub fn running(&self) -> u64 {
        // `ended` first: read the other way, a sync that starts and ends
        // in between would count as ended and not started.
        let ended = self.0.ended.load(Ordering::SeqCst);
        self.started().saturating_sub(ended)
    }

    /// Counts one sync as running until the guard drops (also on
    /// unwinding).
    fn enter(&self) -> SyncRunning<'_> {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        SyncRunning(&self.0.ended)
    }
}

/// One running sync of a [`LogSyncs`]: ends it when dropped.
struct SyncRunning<'a>(&'a AtomicU64);

impl Drop for SyncRunning<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Snapshots of the engine's histograms (see [`crate::Db::histograms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteHistograms {
    /// Duration of each fdatasync of the log, in nanoseconds (bounds:
    /// [`LATENCY_BOUNDS_NS`]).
    pub fsync_ns: HistogramSnapshot,
    /// Requests per log write (bounds: [`BATCH_BOUNDS`]).
    pub batch_requests: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_holds_them() {
        static H: Histogram = Histogram::new(&[10, 20, 30]);
        for v in [0, 10, 11, 20, 30, 31, 1000] {
            H.observe(v);
        }
        let s = H.snapshot();
        assert_eq!(s.counts, vec![2, 2, 1, 2]);
        assert_eq!(s.count(), 7);
        assert_eq!(s.sum, 10 + 11 + 20 + 30 + 31 + 1000);
        let cum: Vec<(u64, u64)> = s.cumulative().collect();
        assert_eq!(cum, vec![(10, 2), (20, 4), (30, 5)]);
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = std::sync::Arc::new(Histogram::new(BATCH_BOUNDS));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.observe((i + t) % 5000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.snapshot().count(), 40_000);
    }

    #[test]
    fn timed_fsync_records_one_duration() {
        let m = WriteMetrics::default();
        let r = m.timed_fsync(|| {
            assert_eq!((m.syncs.started(), m.syncs.running()), (1, 1));
            std::thread::sleep(Duration::from_millis(2));
            7
        });
        assert_eq!((m.syncs.started(), m.syncs.running()), (1, 0));
        assert_eq!(r, 7);
        let s = m.fsync.snapshot();
        assert_eq!(s.count(), 1);
        assert!(s.sum >= 2_000_000, "{}", s.sum);
        m.observe_batch(3);
        assert_eq!(m.batch.snapshot().counts[2], 1);
    }
}
