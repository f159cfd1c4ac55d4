//! Ordered iteration over the tree: one source per memtable, level-0 table
//! and level, merged so that the newest version of each key wins. Used by
//! scans and by compaction.

mod merge;
mod sources;

pub use merge::MergeIter;
pub use sources::{LevelSource, MemSource, Source, TableSource};
