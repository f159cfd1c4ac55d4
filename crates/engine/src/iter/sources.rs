//! The things a merge reads from.

use crate::error::Result;
use crate::memtable::Memtable;
use crate::table::{Table, TableIter};
use crate::types::Value;
use crate::version::TableFile;
use bytes::Bytes;
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

/// Entries fetched from a memtable per refill.
const MEM_CHUNK: usize = 128;

/// An ordered stream of `(key, entry)` that can be repositioned.
pub trait Source: Send {
    /// Positions before the first entry with key `>= key`.
    fn seek(&mut self, key: &[u8]) -> Result<()>;
    /// The next entry, or `None` at the end.
    fn next_entry(&mut self) -> Option<Result<(Bytes, Value)>>;
}

/// A memtable as of a snapshot sequence number, read in chunks (the
/// skiplist cannot be borrowed across calls by an owning iterator).
pub struct MemSource {
    mem: Arc<Memtable>,
    snap: u64,
    buf: VecDeque<(Bytes, Value)>,
    next_from: Option<Bound<Bytes>>,
}

impl MemSource {
    /// A source over the versions of `mem` visible at snapshot `snap`,
    /// positioned at its start.
    pub fn new(mem: Arc<Memtable>, snap: u64) -> MemSource {
        MemSource {
            mem,
            snap,
            buf: VecDeque::new(),
            next_from: Some(Bound::Unbounded),
        }
    }
}

impl Source for MemSource {
    fn seek(&mut self, key: &[u8]) -> Result<()> {
        self.buf.clear();
        self.next_from = Some(Bound::Included(Bytes::copy_from_slice(key)));
        Ok(())
    }

    fn next_entry(&mut self) -> Option<Result<(Bytes, Value)>> {
        while self.buf.is_empty() {
            let from = self.next_from.take()?;
            let (chunk, last) = match &from {
                Bound::Unbounded => self
                    .mem
                    .entries_from(Bound::Unbounded, MEM_CHUNK, self.snap),
                Bound::Included(k) => {
                    self.mem
                        .entries_from(Bound::Included(k.as_ref()), MEM_CHUNK, self.snap)
                }
                Bound::Excluded(k) => {
                    self.mem
                        .entries_from(Bound::Excluded(k.as_ref()), MEM_CHUNK, self.snap)
                }
            };
            self.next_from = last.map(Bound::Excluded);
            self.buf.extend(chunk);
        }
        self.buf.pop_front().map(Ok)
    }
}

/// One table (level 0).
pub struct TableSource {
    iter: TableIter,
}

impl TableSource {
    /// A source over `table`.
    pub fn new(table: &Arc<Table>) -> TableSource {
        TableSource { iter: table.iter() }
    }
}

impl Source for TableSource {
    fn seek(&mut self, key: &[u8]) -> Result<()> {
        self.iter.seek(key)
    }
    fn next_entry(&mut self) -> Option<Result<(Bytes, Value)>> {
        self.iter.next()
    }
}

/// A sorted run of non-overlapping tables (a level >= 1), opened one
/// table at a time.
pub struct LevelSource {
    tables: Vec<TableFile>,
    index: usize,
    current: Option<TableIter>,
}

impl LevelSource {
    /// A source over the tables of one level, sorted by smallest key.
    pub fn new(tables: Vec<TableFile>) -> LevelSource {
        LevelSource {
            tables,
            index: 0,
            current: None,
        }
    }
}

impl Source for LevelSource {
    fn seek(&mut self, key: &[u8]) -> Result<()> {
        self.index = self
            .tables
            .partition_point(|t| t.entry.largest.as_ref() < key);
        self.current = None;
        if let Some(t) = self.tables.get(self.index) {
            let mut it = t.table.iter();
            it.seek(key)?;
            self.current = Some(it);
        }
        Ok(())
    }

    fn next_entry(&mut self) -> Option<Result<(Bytes, Value)>> {
        loop {
            if let Some(it) = self.current.as_mut() {
                match it.next() {
                    Some(r) => return Some(r),
                    None => {
                        self.current = None;
                        self.index += 1;
                    }
                }
            }
            let t = self.tables.get(self.index)?;
            let mut it = t.table.iter();
            if let Err(e) = it.seek_to_first() {
                return Some(Err(e));
            }
            self.current = Some(it);
        }
    }
}
