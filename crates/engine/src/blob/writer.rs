//! Writing a blob file: header, records appended through a large buffer,
//! footer, fdatasync.

use super::record::{encode_footer, encode_header, encode_record, FOOTER_LEN};
use super::BlobFileMeta;
use crate::error::{Error, IoContext, Result};
use crate::fs::{File, FsRef, OpenMode};
use crate::limits::{KEY_LEN_MAX, VALUE_LEN_MAX_LIMIT};
use crate::types::BlobRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Buffered data is written to the file once it reaches this size.
const WRITE_CHUNK: usize = 256 * 1024;

/// Writes one new blob file. Not thread-safe; owned by the flush or garbage
/// collection job that fills it.
///
/// A writer must end with [`BlobWriter::finish`] or [`BlobWriter::abandon`];
/// dropping it leaves a partial file without a footer (which
/// [`BlobReader::open`](super::BlobReader::open) rejects).
pub struct BlobWriter {
    fs: FsRef,
    file: Arc<dyn File>,
    path: PathBuf,
    number: u64,
    /// Bytes already written to the file.
    written: u64,
    /// Data not yet written, to go at offset `written`.
    buf: Vec<u8>,
    records: u64,
    record_bytes: u64,
    /// Set when a write failed: the file's contents are unknown, so every
    /// further call fails.
    failed: bool,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("path", &self.path)
            .field("number", &self.number)
            .field("size", &self.size())
            .field("records", &self.records)
            .field("failed", &self.failed)
            .finish()
    }
}

impl BlobWriter {
    /// Creates blob file `path` (number `number`), truncating any existing
    /// file, and buffers its header (magic, format version, file number).
    pub fn create(fs: &FsRef, path: &Path, number: u64) -> Result<BlobWriter> {
        let file = fs
            .open(path, OpenMode::CreateTruncate)
            .ctx(|| format!("creating blob file {}", path.display()))?;
        let mut buf = Vec::with_capacity(WRITE_CHUNK + WRITE_CHUNK / 4);
        buf.extend_from_slice(&encode_header(number));
        Ok(BlobWriter {
            fs: Arc::clone(fs),
            file,
            path: path.to_path_buf(),
            number,
            written: 0,
            buf,
            records: 0,
            record_bytes: 0,
            failed: false,
        })
    }

    /// Appends a record holding `key` and `value`; returns its pointer.
    ///
    /// Buffered: data reaches the file in chunks of about 256 KiB, or at
    /// [`BlobWriter::finish`]. Fails with [`Error::InvalidArgument`] if the
    /// key or value exceeds the engine's hard limits.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<BlobRef> {
        self.check_usable()?;
        if key.len() > KEY_LEN_MAX {
            return Err(Error::InvalidArgument(format!(
                "key of {} bytes exceeds the limit of {KEY_LEN_MAX}",
                key.len()
            )));
        }
        if value.len() > VALUE_LEN_MAX_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "value of {} bytes exceeds the limit of {VALUE_LEN_MAX_LIMIT}",
                value.len()
            )));
        }
        let offset = self.written + self.buf.len() as u64;
        let (checksum, len) = encode_record(&mut self.buf, self.number, key, value);
        self.records += 1;
        self.record_bytes += u64::from(len);
        if self.buf.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(BlobRef {
            file: self.number,
            offset,
            len,
            checksum,
        })
    }

    /// Bytes the file would have if finished now (footer included).
    pub fn size(&self) -> u64 {
        self.written + self.buf.len() as u64 + FOOTER_LEN
    }

    /// Number of records added so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The file's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the buffered data and the footer (record count, byte count,
    /// magic, checksummed), then fdatasyncs the file. The caller fsyncs the
    /// directory.
    ///
    /// On failure the partial file is removed (errors removing it are
    /// ignored) and nothing may refer to it.
    pub fn finish(mut self) -> Result<BlobFileMeta> {
        match self.finish_inner() {
            Ok(meta) => Ok(meta),
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    fn finish_inner(&mut self) -> Result<BlobFileMeta> {
        self.check_usable()?;
        let footer = encode_footer(self.number, self.records, self.record_bytes);
        self.buf.extend_from_slice(&footer);
        self.flush()?;
        self.file
            .sync_data()
            .ctx(|| format!("syncing blob file {}", self.path.display()))?;
        Ok(BlobFileMeta {
            number: self.number,
            file_size: self.written,
            records: self.records,
            record_bytes: self.record_bytes,
        })
    }

    /// Removes the partial file, ignoring errors.
    pub fn abandon(self) {
        let BlobWriter { fs, file, path, .. } = self;
        drop(file);
        let _ = fs.remove_file(&path);
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::io(
                format!(
                    "blob file {} after an earlier write error",
                    self.path.display()
                ),
                std::io::Error::other("writer failed earlier"),
            ));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all_at(&self.buf, self.written) {
            self.failed = true;
            return Err(Error::io(
                format!("writing blob file {}", self.path.display()),
                e,
            ));
        }
        self.written += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > 2 * WRITE_CHUNK {
            // A huge record grew the buffer; do not keep that memory.
            self.buf.shrink_to(WRITE_CHUNK + WRITE_CHUNK / 4);
        }
        Ok(())
    }
}
