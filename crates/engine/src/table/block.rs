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
    /// Decodes the entry at `self.pos`, checking it sorts after the
    /// previous one. `Ok(None)` at the end of the block.
    fn decode_next(&mut self, path: &Path) -> Result<Option<(Bytes, Value)>> {
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
        let value =
            Value::decode_shared(&mut d, &self.block.data).ok_or_else(|| bad("malformed value"))?;
        self.pos = d.position();
        Ok(Some((Bytes::copy_from_slice(&self.key), value)))
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
        // Last restart point whose key is < target (or the first one).
        let (mut lo, mut hi) = (0usize, self.block.restarts.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            self.pos = self.block.restarts[mid] as usize;
            self.key.clear();
            match self.decode_next(path)? {
                Some((k, _)) if k.as_ref() < target => lo = mid,
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
        while let Some((k, v)) = self.decode_next(path)? {
            if k.as_ref() >= target {
                self.peeked = Some((k, v));
                break;
            }
        }
        Ok(())
    }
}
