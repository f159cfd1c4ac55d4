//! Data block contents: prefix-compressed entries and the restart array
//! (layout in the module doc).

use crate::coding::{put_varint32, Decoder};
use crate::error::{Error, Result};
use crate::limits::KEY_LEN_MAX;
use crate::types::Value;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;

/// Entries between restart points.
pub(crate) const RESTART_INTERVAL: usize = 16;

/// Accumulates the entries of one data block.
#[derive(Debug, Default)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    /// Entries since the last restart point.
    counter: usize,
    last_key: Vec<u8>,
}

impl BlockBuilder {
    /// True if no entry was added since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }

    /// Size of the contents if finished now.
    pub fn size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// Upper bound of what adding this entry would add to `size()`.
    pub fn entry_size_bound(key: &[u8], value: &Value) -> usize {
        10 + key.len() + value_encoded_bound(value) + 4
    }

    /// The last key added (kept across `finish_into`, so it is the last key
    /// of the whole table).
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Appends an entry; the caller guarantees key order.
    pub fn add(&mut self, key: &[u8], value: &Value) {
        let shared = if self.restarts.is_empty() || self.counter == RESTART_INTERVAL {
            self.restarts.push(self.buf.len() as u32);
            self.counter = 0;
            0
        } else {
            key.iter()
                .zip(self.last_key.iter())
                .take_while(|(a, b)| a == b)
                .count()
        };
        put_varint32(&mut self.buf, shared as u32);
        put_varint32(&mut self.buf, (key.len() - shared) as u32);
        self.buf.extend_from_slice(&key[shared..]);
        value.encode_into(&mut self.buf);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.counter += 1;
    }

    /// Returns the finished contents and resets the builder (keeping its
    /// allocations).
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.buf.clear();
        if self.buf.capacity() > 16 * crate::limits::BLOCK_SIZE_TARGET {
            self.buf = Vec::new();
        }
        self.restarts.clear();
        self.counter = 0;
    }
}

/// Bytes `Value::encode_into` writes at most for `value`.
pub(crate) fn value_encoded_bound(value: &Value) -> usize {
    match value {
        Value::Inline(b) => 1 + 10 + b.len(),
        Value::Blob(_) => 1 + 10 + 10 + 5 + 4,
        Value::Tombstone => 1,
    }
}

/// A checked data block, ready to iterate.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    data: Bytes,
    /// Where the entries end and the restart array begins.
    entries_end: usize,
    /// Shared, so that a cached block is cloned without copying.
    restarts: Arc<[u32]>,
    /// File offset of the contents, for error messages.
    file_offset: u64,
}

impl Block {
    /// Bytes this block holds in memory.
    pub fn charge(&self) -> usize {
        self.data.len() + 4 * self.restarts.len()
    }

    /// Parses the restart array of `data`, read from file offset
    /// `file_offset` (of the contents).
    pub fn parse(data: Bytes, path: &Path, file_offset: u64) -> Result<Block> {
        let bad = |reason: &str| Error::corruption(path, file_offset, reason.to_string());
        let n = data.len();
        if n < 4 {
            return Err(bad("data block too short"));
        }
        let count =
            u32::from_le_bytes([data[n - 4], data[n - 3], data[n - 2], data[n - 1]]) as usize;
        let entries_end = count
            .checked_mul(4)
            .and_then(|r| (n - 4).checked_sub(r))
            .ok_or_else(|| bad("restart count exceeds the block"))?;
        if count == 0 || entries_end == 0 {
            return Err(bad("data block holds no entries"));
        }
        let mut d = Decoder::new(&data[entries_end..n - 4]);
        let mut restarts = Vec::with_capacity(count);
        let mut prev = None;
        for _ in 0..count {
            let r = d.u32_le().ok_or_else(|| bad("short restart array"))?;
            let ok = match prev {
                None => r == 0,
                Some(p) => r > p && (r as usize) < entries_end,
            };
            if !ok {
                return Err(bad("restart offsets out of order or out of range"));
            }
            prev = Some(r);
            restarts.push(r);
        }
        Ok(Block {
            data,
            entries_end,
            restarts: restarts.into(),
            file_offset,
        })
    }

    /// An iterator positioned before the first entry.
    pub fn iter(self) -> BlockIter {
        BlockIter {
            block: self,
            pos: 0,
            key: Vec::new(),
            peeked: None,
        }
    }
}

/// Iterates the entries of one block.
#[derive(Debug)]
pub(crate) struct BlockIter {
    block: Block,
    /// Offset of the next entry to decode.
    pos: usize,
    /// Key of the last decoded entry (empty before the first).
    key: Vec<u8>,
    /// An entry decoded by `seek` but not returned yet.
    peeked: Option<(Bytes, Value)>,
}

impl BlockIter {
    /// Decodes the key of the entry at `self.pos` into `self.key`,
    /// checking it sorts after the previous one, and moves past its value
    /// without building it; returns where the value starts (`Ok(None)` at
    /// the end of the block). A seek passes over entries this way, so only
    /// the entry it stops at costs a key copy and a value.
    fn advance(&mut self, path: &Path) -> Result<Option<usize>> {
        let end = self.block.entries_end;
        if self.pos >= end {
            return Ok(None);
        }
        let at = self.block.file_offset + self.pos as u64;
        let bad = |reason: &str| Error::corruption(path, at, reason.to_string());
        let mut d = Decoder::new(&self.block.data[..end]);
        d.bytes(self.pos)
            .ok_or_else(|| bad("entry offset out of range"))?;
        let shared = d.varint32().ok_or_else(|| bad("bad key prefix length"))? as usize;
        let unshared = d.varint32().ok_or_else(|| bad("bad key suffix length"))? as usize;
        if shared > self.key.len() {
            return Err(bad("key shares more bytes than the previous key has"));
        }
        if shared + unshared == 0 || shared + unshared > KEY_LEN_MAX {
            return Err(bad("key length out of range"));
        }
        let suffix = d
            .bytes(unshared)
            .ok_or_else(|| bad("key runs past the block"))?;
        // The new key sorts after the previous one iff its suffix sorts after
        // the previous key's bytes past the shared prefix.
        if !self.key.is_empty() && suffix <= &self.key[shared..] {
            return Err(bad("keys out of order in block"));
        }
        self.key.truncate(shared);
        self.key.extend_from_slice(suffix);
        let value_at = d.position();
        Value::skip(&mut d).ok_or_else(|| bad("malformed value"))?;
        self.pos = d.position();
        Ok(Some(value_at))
    }

    /// The value that starts at `value_at` (as [`BlockIter::advance`]
    /// returned it).
    fn value_at(&self, value_at: usize, path: &Path) -> Result<Value> {
        let bad = || {
            Error::corruption(
                path,
                self.block.file_offset + value_at as u64,
                "malformed value",
            )
        };
        let mut d = Decoder::new(&self.block.data[..self.block.entries_end]);
        d.bytes(value_at).ok_or_else(bad)?;
        Value::decode_shared(&mut d, &self.block.data).ok_or_else(bad)
    }

    /// Decodes the entry at `self.pos`, checking it sorts after the
    /// previous one. `Ok(None)` at the end of the block.
    fn decode_next(&mut self, path: &Path) -> Result<Option<(Bytes, Value)>> {
        match self.advance(path)? {
            Some(at) => Ok(Some((
                Bytes::copy_from_slice(&self.key),
                self.value_at(at, path)?,
            ))),
            None => Ok(None),
        }
    }

    /// The next entry, `Ok(None)` at the end of the block.
    pub fn next_entry(&mut self, path: &Path) -> Result<Option<(Bytes, Value)>> {
        if let Some(e) = self.peeked.take() {
            return Ok(Some(e));
        }
        self.decode_next(path)
    }

    /// Positions the iterator so that `next_entry` returns the first entry
    /// with a key `>= target`.
    pub fn seek(&mut self, target: &[u8], path: &Path) -> Result<()> {
        self.peeked = None;
        if let Some(at) = self.seek_at(target, path)? {
            let value = self.value_at(at, path)?;
            self.peeked = Some((Bytes::copy_from_slice(&self.key), value));
        }
        Ok(())
    }

    /// The value of the entry whose key is `target`, if the block holds
    /// one (a point lookup: no key is copied). Leaves the iterator
    /// positioned after that entry, or after the first one past `target`.
    pub fn get(&mut self, target: &[u8], path: &Path) -> Result<Option<Value>> {
        self.peeked = None;
        match self.seek_at(target, path)? {
            Some(at) if self.key == target => Ok(Some(self.value_at(at, path)?)),
            _ => Ok(None),
        }
    }

    /// Moves to the first entry with a key `>= target`, whose key is then
    /// in `self.key`; returns where its value starts (`None`: every key
    /// is smaller). `self.pos` is past that entry.
    fn seek_at(&mut self, target: &[u8], path: &Path) -> Result<Option<usize>> {
        // Last restart point whose key is < target (or the first one).
        let (mut lo, mut hi) = (0usize, self.block.restarts.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            self.pos = self.block.restarts[mid] as usize;
            self.key.clear();
            match self.advance(path)? {
                Some(_) if self.key.as_slice() < target => lo = mid,
                Some(_) => hi = mid,
                None => {
                    return Err(Error::corruption(
                        path,
                        self.block.file_offset,
                        "bad restart",
                    ))
                }
            }
        }
        self.pos = self.block.restarts[lo] as usize;
        self.key.clear();
        while let Some(at) = self.advance(path)? {
            if self.key.as_slice() >= target {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BlobRef;

    /// A block of `n` entries with keys `k0000`, `k0002`, ... (even
    /// numbers, so odd ones fall between), values of every kind.
    fn block(n: usize) -> (Block, Vec<(Vec<u8>, Value)>) {
        let mut b = BlockBuilder::default();
        let mut entries = Vec::new();
        for i in 0..n {
            let key = format!("k{:04}", i * 2).into_bytes();
            let value = match i % 3 {
                0 => Value::Tombstone,
                1 => Value::Blob(BlobRef {
                    file: i as u64,
                    offset: 7,
                    len: 9,
                    checksum: 1,
                }),
                _ => Value::Inline(Bytes::from(format!("v{i}"))),
            };
            b.add(&key, &value);
            entries.push((key, value));
        }
        let mut out = Vec::new();
        b.finish_into(&mut out);
        let block = Block::parse(Bytes::from(out), Path::new("t"), 0).unwrap();
        (block, entries)
    }

    #[test]
    fn a_point_lookup_finds_each_key_and_nothing_between() {
        let path = Path::new("t");
        // One entry, one restart interval exactly, and several intervals.
        for n in [1, RESTART_INTERVAL, RESTART_INTERVAL * 5 + 3] {
            let (block, entries) = block(n);
            for (i, (key, value)) in entries.iter().enumerate() {
                let mut it = block.clone().iter();
                assert_eq!(
                    it.get(key, path).unwrap().as_ref(),
                    Some(value),
                    "n {n} key {i}"
                );
                // Between this key and the next, and a prefix of it.
                let between = format!("k{:04}", i * 2 + 1).into_bytes();
                assert_eq!(block.clone().iter().get(&between, path).unwrap(), None);
                assert_eq!(block.clone().iter().get(&key[..3], path).unwrap(), None);
                // A seek stops at the same entry a lookup finds.
                let mut it = block.clone().iter();
                it.seek(key, path).unwrap();
                let (k, v) = it.next_entry(path).unwrap().unwrap();
                assert_eq!((&k[..], &v), (&key[..], value));
            }
            assert_eq!(block.clone().iter().get(b"a", path).unwrap(), None);
            assert_eq!(block.clone().iter().get(b"z", path).unwrap(), None);
            // After the last key, a seek finds nothing.
            let mut it = block.clone().iter();
            it.seek(b"z", path).unwrap();
            assert!(it.next_entry(path).unwrap().is_none());
        }
    }
}
