//! Writing a table file.

use super::block::BlockBuilder;
use super::bloom;
use super::footer::{
    append_frame, BlockHandle, Footer, FOOTER_LEN, FORMAT_VERSION, FRAME_OVERHEAD, KIND_DATA,
    KIND_FILTER, KIND_INDEX, KIND_PROPS,
};
use super::props::Props;
use super::{SeqRange, TableMeta};
use crate::coding::{put_length_prefixed, put_varint64};
use crate::error::{Error, IoContext, Result};
use crate::fs::{File, FsRef, OpenMode};
use crate::limits::{BLOCK_LEN_MAX, BLOCK_SIZE_TARGET, BLOOM_BITS_PER_KEY, KEY_LEN_MAX};
use crate::types::Value;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Write-buffer size: the file is written in chunks of about this size.
const WRITE_CHUNK: usize = 64 * 1024;

/// Writes a new table file. Keys must be added in strictly increasing order.
#[derive(Debug)]
pub struct TableBuilder {
    fs: FsRef,
    path: PathBuf,
    file: Arc<dyn File>,
    /// Bytes handed to the file so far.
    written: u64,
    /// Bytes waiting to be written at `written`.
    buf: Vec<u8>,
    block: BlockBuilder,
    /// Scratch for finished block contents.
    scratch: Vec<u8>,
    /// Encoded index block contents so far.
    index: Vec<u8>,
    hashes: Vec<u64>,
    props: Props,
    /// The sequence numbers noted so far (see [`TableBuilder::note_seqs`]).
    seqs: Option<SeqRange>,
    /// True once an I/O error happened; the builder then refuses work.
    failed: bool,
}

impl TableBuilder {
    /// Creates (truncating) the file at `path` for table `number`.
    pub fn create(fs: &FsRef, path: &Path, number: u64) -> Result<TableBuilder> {
        let file = fs
            .open(path, OpenMode::CreateTruncate)
            .ctx(|| format!("create table {}", path.display()))?;
        Ok(TableBuilder {
            fs: fs.clone(),
            path: path.to_path_buf(),
            file,
            written: 0,
            buf: Vec::with_capacity(WRITE_CHUNK + BLOCK_SIZE_TARGET * 2),
            block: BlockBuilder::default(),
            scratch: Vec::new(),
            index: Vec::new(),
            hashes: Vec::new(),
            props: Props {
                number,
                ..Props::default()
            },
            seqs: None,
            failed: false,
        })
    }

    /// Widens the table's sequence-number range (stored in its properties,
    /// see [`SeqRange`]) to hold `seqs`: the writer must cover the sequence
    /// number of every entry it adds. A table with entries and no range
    /// noted is refused by [`TableBuilder::finish`].
    pub fn note_seqs(&mut self, seqs: SeqRange) {
        self.seqs = Some(self.seqs.map_or(seqs, |s| s.hull(seqs)));
    }

    /// Adds an entry. Keys must be strictly increasing (returns
    /// [`Error::InvalidArgument`] otherwise) and 1..=`KEY_LEN_MAX` bytes.
    pub fn add(&mut self, key: &[u8], value: &Value) -> Result<()> {
        if self.failed {
            return Err(self.poisoned());
        }
        if key.is_empty() || key.len() > KEY_LEN_MAX {
            return Err(Error::InvalidArgument(format!(
                "key length {} outside 1..={KEY_LEN_MAX}",
                key.len()
            )));
        }
        if self.props.entries > 0 && key <= self.block.last_key() {
            return Err(Error::InvalidArgument(
                "table keys must be added in strictly increasing order".into(),
            ));
        }
        let bound = BlockBuilder::entry_size_bound(key, value);
        if bound + 4 > BLOCK_LEN_MAX {
            return Err(Error::InvalidArgument(format!(
                "entry of {bound} bytes exceeds the block limit"
            )));
        }
        if !self.block.is_empty() && self.block.size() + bound > BLOCK_SIZE_TARGET {
            self.flush_block()?;
        }
        self.block.add(key, value);
        self.hashes.push(bloom::key_hash(key));
        let p = &mut self.props;
        if p.entries == 0 {
            p.smallest = Bytes::copy_from_slice(key);
        }
        p.entries += 1;
        match value {
            Value::Tombstone => p.tombstones += 1,
            Value::Blob(r) => {
                p.blob_refs += 1;
                p.blob_ref_bytes += u64::from(r.len);
            }
            Value::Inline(_) => {}
        }
        if self.block.size() >= BLOCK_SIZE_TARGET {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Bytes the file would have if finished now (an estimate, close to
    /// exact).
    pub fn estimated_size(&self) -> u64 {
        let block = if self.block.is_empty() {
            0
        } else {
            self.block.size() as u64 + FRAME_OVERHEAD + self.block.last_key().len() as u64 + 20
        };
        let filter = (self.hashes.len() * BLOOM_BITS_PER_KEY).max(64) as u64 / 8 + 1;
        let props = 70 + self.props.smallest.len() as u64 + self.block.last_key().len() as u64;
        self.written
            + self.buf.len() as u64
            + block
            + self.index.len() as u64
            + filter
            + props
            + 3 * FRAME_OVERHEAD
            + FOOTER_LEN as u64
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.props.entries
    }

    /// The error returned once a write has failed.
    fn poisoned(&self) -> Error {
        Error::io(
            format!("table builder for {}", self.path.display()),
            std::io::Error::other("an earlier write failed"),
        )
    }

    /// Offset the next byte appended to `buf` will have in the file.
    fn offset(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Appends a frame to the write buffer; returns its handle.
    fn write_frame(&mut self, kind: u8, contents: &[u8]) -> Result<BlockHandle> {
        if contents.len() > BLOCK_LEN_MAX {
            return Err(Error::InvalidArgument(format!(
                "table block of {} bytes exceeds the block limit",
                contents.len()
            )));
        }
        let handle = BlockHandle {
            offset: self.written + self.buf.len() as u64,
            len: contents.len() as u64,
        };
        append_frame(&mut self.buf, kind, contents);
        if self.buf.len() >= WRITE_CHUNK {
            self.flush_buf()?;
        }
        Ok(handle)
    }

    fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = self.file.write_all_at(&self.buf, self.written);
        if let Err(e) = res {
            self.failed = true;
            return Err(Error::io(format!("write table {}", self.path.display()), e));
        }
        self.written += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > 4 * WRITE_CHUNK {
            self.buf.shrink_to(WRITE_CHUNK + BLOCK_SIZE_TARGET * 2);
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        put_length_prefixed(&mut self.index, self.block.last_key());
        self.block.finish_into(&mut self.scratch);
        let scratch = std::mem::take(&mut self.scratch);
        let res = self.write_frame(KIND_DATA, &scratch);
        self.scratch = scratch;
        if self.scratch.capacity() > 16 * BLOCK_SIZE_TARGET {
            // Do not keep a huge single-entry block's buffer around.
            self.scratch = Vec::new();
        }
        let handle = res?;
        put_varint64(&mut self.index, handle.offset);
        put_varint64(&mut self.index, handle.len);
        self.props.data_blocks += 1;
        Ok(())
    }

    /// Writes the filter, index, properties and footer, then fdatasyncs the
    /// file. The caller fsyncs the directory. On error the partial file is
    /// removed (errors doing so are ignored).
    pub fn finish(mut self) -> Result<TableMeta> {
        match self.finish_inner() {
            Ok(meta) => Ok(meta),
            Err(e) => {
                let _ = self.fs.remove_file(&self.path);
                Err(e)
            }
        }
    }

    fn finish_inner(&mut self) -> Result<TableMeta> {
        if self.failed {
            return Err(self.poisoned());
        }
        self.flush_block()?;
        if self.props.entries > 0 {
            self.props.largest = Bytes::copy_from_slice(self.block.last_key());
        }
        self.props.seqs = match self.seqs {
            Some(s) => s,
            None if self.props.entries == 0 => SeqRange::default(),
            None => {
                return Err(Error::InvalidArgument(format!(
                    "table {} has entries but no sequence numbers were noted",
                    self.path.display()
                )))
            }
        };
        let filter = bloom::build(&self.hashes, BLOOM_BITS_PER_KEY);
        let filter = self.write_frame(KIND_FILTER, &filter)?;
        let index_contents = std::mem::take(&mut self.index);
        let index = self.write_frame(KIND_INDEX, &index_contents)?;
        let props_contents = self.props.encode();
        let props = self.write_frame(KIND_PROPS, &props_contents)?;
        let footer = Footer {
            filter,
            index,
            props,
            version: FORMAT_VERSION,
        };
        self.buf.extend_from_slice(&footer.encode());
        let file_size = self.offset();
        self.flush_buf()?;
        self.file
            .sync_data()
            .ctx(|| format!("sync table {}", self.path.display()))?;
        let p = &self.props;
        Ok(TableMeta {
            number: p.number,
            file_size,
            entries: p.entries,
            smallest: p.smallest.clone(),
            largest: p.largest.clone(),
            tombstones: p.tombstones,
            blob_refs: p.blob_refs,
            blob_ref_bytes: p.blob_ref_bytes,
        })
    }

    /// Gives up: removes the partial file (errors are ignored).
    pub fn abandon(self) {
        let TableBuilder { fs, path, file, .. } = self;
        drop(file);
        let _ = fs.remove_file(&path);
    }
}
