//! The merging iterator.

use super::Source;
use crate::error::Result;
use crate::types::Value;
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Merges sources given newest first; yields each key once, with its
/// newest entry (tombstones included: the caller decides what they mean).
pub struct MergeIter {
    sources: Vec<Box<dyn Source>>,
    heads: Vec<Option<Value>>,
    heap: BinaryHeap<Reverse<(Bytes, usize)>>,
    failed: bool,
}

impl MergeIter {
    /// Merges `sources` (index 0 is the newest), each positioned at the
    /// first key `>= start`.
    pub fn new(mut sources: Vec<Box<dyn Source>>, start: &[u8]) -> Result<MergeIter> {
        let mut heads = Vec::with_capacity(sources.len());
        let mut heap = BinaryHeap::new();
        for (i, s) in sources.iter_mut().enumerate() {
            s.seek(start)?;
            match s.next_entry() {
                Some(Ok((k, v))) => {
                    heap.push(Reverse((k, i)));
                    heads.push(Some(v));
                }
                Some(Err(e)) => return Err(e),
                None => heads.push(None),
            }
        }
        Ok(MergeIter {
            sources,
            heads,
            heap,
            failed: false,
        })
    }

    fn advance(&mut self, i: usize) -> Result<()> {
        match self.sources[i].next_entry() {
            Some(Ok((k, v))) => {
                self.heap.push(Reverse((k, i)));
                self.heads[i] = Some(v);
            }
            Some(Err(e)) => return Err(e),
            None => self.heads[i] = None,
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(Bytes, Value)>> {
        let Some(Reverse((key, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let value = self.heads[i].take().unwrap_or(Value::Tombstone);
        self.advance(i)?;
        // Older versions of the same key in other sources are shadowed.
        while let Some(Reverse((k, j))) = self.heap.peek() {
            if *k != key {
                break;
            }
            let j = *j;
            self.heap.pop();
            self.heads[j] = None;
            self.advance(j)?;
        }
        Ok(Some((key, value)))
    }
}

impl Iterator for MergeIter {
    type Item = Result<(Bytes, Value)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iter::MemSource;
    use crate::memtable::Memtable;
    use std::sync::Arc;

    fn mem(entries: &[(&str, Option<&str>)]) -> Box<dyn Source> {
        let m = Memtable::new(0);
        for (k, v) in entries {
            let v = match v {
                Some(s) => Value::Inline(Bytes::copy_from_slice(s.as_bytes())),
                None => Value::Tombstone,
            };
            m.insert(Bytes::copy_from_slice(k.as_bytes()), v, 1);
        }
        Box::new(MemSource::new(Arc::new(m), crate::memtable::SEQ_LATEST))
    }

    #[test]
    fn newest_wins_and_order_kept() {
        let newer = mem(&[("b", Some("new")), ("d", None)]);
        let older = mem(&[
            ("a", Some("1")),
            ("b", Some("old")),
            ("c", Some("3")),
            ("d", Some("4")),
        ]);
        let out: Vec<_> = MergeIter::new(vec![newer, older], b"")
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let keys: Vec<_> = out.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec!["a", "b", "c", "d"]);
        assert_eq!(out[1].1, Value::Inline(Bytes::from_static(b"new")));
        assert_eq!(out[3].1, Value::Tombstone);
    }

    #[test]
    fn seek_start() {
        let a = mem(&[("a", Some("1")), ("c", Some("3"))]);
        let b = mem(&[("b", Some("2"))]);
        let keys: Vec<_> = MergeIter::new(vec![a, b], b"b")
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(keys, vec!["b", "c"]);
    }
}
