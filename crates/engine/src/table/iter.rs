//! Iterating a table in key order.

use super::block::BlockIter;
use super::reader::Table;
use crate::error::Result;
use crate::types::Value;
use bytes::Bytes;
use std::sync::Arc;

/// Iterates a table's entries in ascending key order. Starts before the
/// first entry; after an `Err`, yields `None` (until repositioned by
/// [`TableIter::seek`] or [`TableIter::seek_to_first`]).
#[derive(Debug)]
pub struct TableIter {
    table: Arc<Table>,
    /// The block being read, if any.
    block: Option<BlockIter>,
    /// The next block to load when `block` is exhausted.
    next_block: usize,
    /// Set after an error: the iterator yields nothing more.
    failed: bool,
}

impl TableIter {
    pub(crate) fn new(table: Arc<Table>) -> TableIter {
        TableIter {
            table,
            block: None,
            next_block: 0,
            failed: false,
        }
    }

    /// Positions the iterator so that `next()` yields the first entry with
    /// a key `>= key`.
    pub fn seek(&mut self, key: &[u8]) -> Result<()> {
        self.failed = false;
        self.block = None;
        let i = self.table.block_for(key);
        self.next_block = i;
        if i >= self.table.block_count() {
            return Ok(());
        }
        let res = self.table.block_iter(i).and_then(|mut b| {
            b.seek(key, self.table.path())?;
            Ok(b)
        });
        match res {
            Ok(b) => {
                self.block = Some(b);
                self.next_block = i + 1;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Positions the iterator before the first entry.
    pub fn seek_to_first(&mut self) -> Result<()> {
        self.failed = false;
        self.block = None;
        self.next_block = 0;
        Ok(())
    }
}

impl Iterator for TableIter {
    type Item = Result<(Bytes, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(b) = &mut self.block {
                match b.next_entry(self.table.path()) {
                    Ok(Some(e)) => return Some(Ok(e)),
                    Ok(None) => self.block = None,
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
            if self.next_block >= self.table.block_count() {
                return None;
            }
            match self.table.block_iter(self.next_block) {
                Ok(b) => {
                    self.block = Some(b);
                    self.next_block += 1;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
