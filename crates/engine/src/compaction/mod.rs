//! Compaction: leveled, with dynamic level sizes.
//!
//! The last level's target is its actual size; each level above it is
//! `level_size_multiplier` times smaller, and level 0 is compacted into
//! the *base level*: the highest level whose target is still at least
//! `base_level_size`. Levels between 1 and the base level stay empty: files
//! left there when the base level moves down (the last level shrank) are
//! moved down first, and until they are, level 0 is compacted into the
//! first of them rather than past it (newer data always lies in a higher
//! level; [`Version::apply`](crate::version::Version::apply) refuses an
//! edit that breaks this).
//! With most data in the last level, obsolete versions are at most about
//! 1/multiplier of it, which bounds space amplification near 1.11
//! (RocksDB's dynamic level sizing).
//!
//! Scores: level 0 by file count over `l0_compaction_trigger`, other levels
//! by size over target. The highest score at or above 1 runs first. A file
//! that overlaps nothing in the next level is moved by a manifest edit
//! alone. Tombstones are dropped when no deeper level holds the key range.
//! Blob files whose dead share passes `blob_gc_threshold` are collected
//! when no compaction is due.

mod picker;
mod run;

#[cfg(test)]
pub(crate) use run::run_forced_l0_locked;
pub(crate) use run::{compact_until_idle, start};
