//! Opening and reading a table file.

use super::block::{Block, BlockIter};
use super::block_cache::BlockCache;
use super::bloom::{self, Bloom};
use super::footer::{
    read_block, read_exact, BlockHandle, Footer, FOOTER_LEN, FRAME_HEADER_LEN, KIND_DATA,
    KIND_FILTER, KIND_INDEX, KIND_PROPS,
};
use super::iter::TableIter;
use super::props::Props;
use super::SeqRange;
use super::TableMeta;
use crate::coding::Decoder;
use crate::error::{Error, IoContext, Result};
use crate::fs::{File, FsRef, OpenMode};
use crate::limits::{BLOCK_LEN_MAX, KEY_LEN_MAX};
use crate::types::Value;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One index entry: the last key of a data block and where the block is.
#[derive(Debug, Clone)]
pub(crate) struct IndexEntry {
    pub last_key: Bytes,
    pub handle: BlockHandle,
}

/// An open table: index, filter and properties in memory, data blocks read
/// on demand (checksums verified on every read).
#[derive(Debug)]
pub struct Table {
    path: PathBuf,
    number: u64,
    file: Arc<dyn File>,
    file_size: u64,
    index: Vec<IndexEntry>,
    filter: Bloom,
    props: Props,
    footer: Footer,
    /// Where point lookups keep the blocks they read.
    cache: Option<Arc<BlockCache>>,
}

impl Table {
    /// Opens a table: reads and checks the footer, index, filter and
    /// properties (checksums verified). Errors name the file and offset.
    pub fn open(fs: &FsRef, path: &Path, number: u64) -> Result<Arc<Table>> {
        Self::open_with(fs, path, number, None)
    }

    /// Opens a table whose point lookups keep their blocks in `cache`.
    pub fn open_cached(
        fs: &FsRef,
        path: &Path,
        number: u64,
        cache: Arc<BlockCache>,
    ) -> Result<Arc<Table>> {
        Self::open_with(fs, path, number, Some(cache))
    }

    fn open_with(
        fs: &FsRef,
        path: &Path,
        number: u64,
        cache: Option<Arc<BlockCache>>,
    ) -> Result<Arc<Table>> {
        let file = fs
            .open(path, OpenMode::Read)
            .ctx(|| format!("open table {}", path.display()))?;
        let file_size = file
            .len()
            .ctx(|| format!("size of table {}", path.display()))?;
        if file_size < FOOTER_LEN as u64 {
            return Err(Error::corruption(
                path,
                0,
                format!("file of {file_size} bytes is too short for a table"),
            ));
        }
        let footer_at = file_size - FOOTER_LEN as u64;
        let mut buf = [0u8; FOOTER_LEN];
        read_exact(&*file, path, &mut buf, footer_at)?;
        let footer = Footer::decode(&buf, path, footer_at)?;
        // The meta blocks lie in order between the data and the footer.
        if footer.filter.end() > footer.index.offset
            || footer.index.end() > footer.props.offset
            || footer.props.end() > footer_at
        {
            return Err(Error::corruption(
                path,
                footer_at,
                "footer block handles overlap or exceed the file",
            ));
        }
        let props_raw = read_block(&*file, path, footer.props, KIND_PROPS, footer_at)?;
        let props_at = footer.props.offset + FRAME_HEADER_LEN as u64;
        let props = Props::decode(&props_raw, footer.version)
            .ok_or_else(|| Error::corruption(path, props_at, "malformed properties block"))?;
        let filter_raw = read_block(&*file, path, footer.filter, KIND_FILTER, footer_at)?;
        let filter = Bloom::decode(filter_raw).ok_or_else(|| {
            Error::corruption(
                path,
                footer.filter.offset + FRAME_HEADER_LEN as u64,
                "malformed filter block",
            )
        })?;
        let index_raw = read_block(&*file, path, footer.index, KIND_INDEX, footer_at)?;
        let index_at = footer.index.offset + FRAME_HEADER_LEN as u64;
        let index = decode_index(&index_raw, path, index_at, footer.filter.offset)?;
        check_props(&props, &index, path, props_at)?;
        Ok(Arc::new(Table {
            path: path.to_path_buf(),
            number,
            file,
            file_size,
            index,
            filter,
            props,
            footer,
            cache,
        }))
    }

    /// The table's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// File size in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Number of entries (tombstones included).
    pub fn entries(&self) -> u64 {
        self.props.entries
    }

    /// The sequence numbers of the entries (see [`SeqRange`]).
    pub fn seqs(&self) -> SeqRange {
        self.props.seqs
    }

    /// Smallest key (empty if the table is empty).
    pub fn smallest(&self) -> &Bytes {
        &self.props.smallest
    }

    /// Largest key (empty if the table is empty).
    pub fn largest(&self) -> &Bytes {
        &self.props.largest
    }

    /// The table's metadata, as [`TableBuilder::finish`](super::TableBuilder::finish)
    /// returned it.
    pub fn meta(&self) -> TableMeta {
        let p = &self.props;
        TableMeta {
            number: self.number,
            file_size: self.file_size,
            entries: p.entries,
            smallest: p.smallest.clone(),
            largest: p.largest.clone(),
            tombstones: p.tombstones,
            blob_refs: p.blob_refs,
            blob_ref_bytes: p.blob_ref_bytes,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// False if the key is certainly not in the table (Bloom filter).
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.props.entries > 0 && self.filter.may_contain_hash(bloom::key_hash(key))
    }

    /// Looks a key up: Bloom filter, then index, then one block from the
    /// block cache or read from the file (checksum verified).
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        if !self.may_contain(key) {
            return Ok(None);
        }
        let i = self.block_for(key);
        if i >= self.index.len() {
            return Ok(None);
        }
        self.cached_data_block(i)?.iter().get(key, &self.path)
    }

    /// An iterator positioned before the first entry.
    pub fn iter(self: &Arc<Self>) -> TableIter {
        TableIter::new(self.clone())
    }

    /// Reads every block, checking every checksum, the key order, the index
    /// and the properties; returns the number of entries.
    pub fn verify(&self) -> Result<u64> {
        let mut count = 0u64;
        let (mut tombstones, mut blob_refs, mut blob_ref_bytes) = (0u64, 0u64, 0u64);
        let mut prev_last: Option<&Bytes> = None;
        let mut first_key: Option<Bytes> = None;
        for (i, entry) in self.index.iter().enumerate() {
            let at = entry.handle.offset;
            let bad = |reason: &str| Error::corruption(&self.path, at, reason.to_string());
            let mut it = self.read_data_block(i)?.iter();
            let mut last = None;
            while let Some((k, v)) = it.next_entry(&self.path)? {
                if last.is_none() {
                    if prev_last.is_some_and(|p| k <= *p) {
                        return Err(bad("block's first key does not follow the previous block"));
                    }
                    if first_key.is_none() {
                        first_key = Some(k.clone());
                    }
                }
                if !self.filter.may_contain_hash(bloom::key_hash(&k)) {
                    return Err(bad("Bloom filter misses a key of the block"));
                }
                match v {
                    Value::Tombstone => tombstones += 1,
                    Value::Blob(r) => {
                        blob_refs += 1;
                        blob_ref_bytes += u64::from(r.len);
                    }
                    Value::Inline(_) => {}
                }
                count += 1;
                last = Some(k);
            }
            if last.as_ref() != Some(&entry.last_key) {
                return Err(bad("block's last key differs from its index key"));
            }
            prev_last = Some(&entry.last_key);
        }
        let p = &self.props;
        let ok = count == p.entries
            && tombstones == p.tombstones
            && blob_refs == p.blob_refs
            && blob_ref_bytes == p.blob_ref_bytes
            && first_key.unwrap_or_default() == p.smallest;
        if !ok {
            return Err(Error::corruption(
                &self.path,
                self.footer.props.offset,
                "properties do not match the data blocks",
            ));
        }
        Ok(count)
    }

    /// Handle of the index block (tests damage it).
    #[cfg(test)]
    pub(crate) fn index_handle(&self) -> BlockHandle {
        self.footer.index
    }

    /// Handles of the data blocks (tests damage them).
    #[cfg(test)]
    pub(crate) fn data_handles(&self) -> Vec<BlockHandle> {
        self.index.iter().map(|e| e.handle).collect()
    }

    /// The key ranges of the data blocks that cannot be read whole (frame,
    /// checksum or entry decoding fails), from the index: for each, the
    /// last key of the block before it (`None` for the first block) and its
    /// own last key; the block's keys lie after the first and up to the
    /// second. I/O errors other than corruption are returned.
    pub(crate) fn unreadable_blocks(&self) -> Result<Vec<(Option<Bytes>, Bytes)>> {
        let mut out = Vec::new();
        for i in 0..self.index.len() {
            let read = self.read_data_block(i).and_then(|b| {
                let mut it = b.iter();
                while it.next_entry(&self.path)?.is_some() {}
                Ok(())
            });
            match read {
                Ok(()) => {}
                Err(e) if e.is_corruption() => out.push((
                    i.checked_sub(1).map(|p| self.index[p].last_key.clone()),
                    self.index[i].last_key.clone(),
                )),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Number of data blocks.
    pub(crate) fn block_count(&self) -> usize {
        self.index.len()
    }

    /// Index of the first block whose last key is `>= key` (`block_count()`
    /// if none).
    pub(crate) fn block_for(&self, key: &[u8]) -> usize {
        self.index.partition_point(|e| e.last_key.as_ref() < key)
    }

    /// Data block `i`, from the block cache if the table has one.
    fn cached_data_block(&self, i: usize) -> Result<Block> {
        let Some(cache) = &self.cache else {
            return self.read_data_block(i);
        };
        let Ok(n) = u32::try_from(i) else {
            return self.read_data_block(i);
        };
        if let Some(b) = cache.get(self.number, n) {
            return Ok(b);
        }
        let b = self.read_data_block(i)?;
        cache.insert(self.number, n, &b);
        Ok(b)
    }

    /// Reads and checks data block `i`.
    pub(crate) fn read_data_block(&self, i: usize) -> Result<Block> {
        let handle = self.index[i].handle;
        let limit = self.file_size - FOOTER_LEN as u64;
        let contents = read_block(&*self.file, &self.path, handle, KIND_DATA, limit)?;
        Block::parse(
            contents,
            &self.path,
            handle.offset + FRAME_HEADER_LEN as u64,
        )
    }

    /// Reads data block `i` and returns an iterator over it.
    pub(crate) fn block_iter(&self, i: usize) -> Result<BlockIter> {
        Ok(self.read_data_block(i)?.iter())
    }
}

/// Decodes and checks the index block contents (read from file offset
/// `at`); data blocks must end by `data_end`.
fn decode_index(raw: &Bytes, path: &Path, at: u64, data_end: u64) -> Result<Vec<IndexEntry>> {
    let mut d = Decoder::new(raw);
    let mut out: Vec<IndexEntry> = Vec::new();
    let mut next_free = 0u64;
    while d.remaining() > 0 {
        let pos = at + d.position() as u64;
        let bad = |reason: &str| Error::corruption(path, pos, reason.to_string());
        let key = d
            .length_prefixed()
            .ok_or_else(|| bad("malformed index key"))?;
        if key.is_empty() || key.len() > KEY_LEN_MAX {
            return Err(bad("index key length out of range"));
        }
        let offset = d.varint64().ok_or_else(|| bad("malformed index offset"))?;
        let len = d.varint64().ok_or_else(|| bad("malformed index length"))?;
        let handle = BlockHandle { offset, len };
        if len > BLOCK_LEN_MAX as u64 || offset < next_free || handle.end() > data_end {
            return Err(bad("index block handle out of range"));
        }
        if out.last().is_some_and(|p| p.last_key.as_ref() >= key) {
            return Err(bad("index keys out of order"));
        }
        next_free = handle.end();
        out.push(IndexEntry {
            last_key: Bytes::copy_from_slice(key),
            handle,
        });
    }
    Ok(out)
}

/// Cross-checks the properties with the index.
fn check_props(p: &Props, index: &[IndexEntry], path: &Path, at: u64) -> Result<()> {
    let ok = p.data_blocks == index.len() as u64
        && p.tombstones <= p.entries
        && p.blob_refs <= p.entries
        && p.smallest.len() <= KEY_LEN_MAX
        && p.largest.len() <= KEY_LEN_MAX
        && match index.last() {
            None => p.entries == 0 && p.smallest.is_empty() && p.largest.is_empty(),
            Some(last) => {
                p.entries >= index.len() as u64
                    && !p.smallest.is_empty()
                    && p.largest == last.last_key
                    && p.smallest <= index[0].last_key
            }
        };
    if ok {
        Ok(())
    } else {
        Err(Error::corruption(
            path,
            at,
            "properties inconsistent with the index",
        ))
    }
}
