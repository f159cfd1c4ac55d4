//! Reading a finished blob file: point lookups by [`BlobRef`] and verified
//! sequential scans.

use super::record::{check_footer, check_header, parse_head, verify, FOOTER_LEN, HEADER_LEN};
use super::record::{RECORD_HEADER_MAX, RECORD_LEN_MIN};
use super::window::Window;
use super::BlobFileMeta;
use super::BlobRecord;
use crate::error::{Error, IoContext, Result};
use crate::fs::{File, FsRef, OpenMode};
use crate::limits::BLOCK_LEN_MAX;
use crate::types::BlobRef;
use bytes::Bytes;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A value read by [`BlobReader::get`] shares the buffer it was read into
/// (record head and key included) only while those take at most
/// 1/`PIN_SHARE_MAX` of its length; otherwise it is copied out.
pub const PIN_SHARE_MAX: usize = 8;

/// An open, finished blob file. Shared between threads (`Send + Sync`);
/// every read is a positioned read.
#[derive(Debug)]
pub struct BlobReader {
    file: Arc<dyn File>,
    path: PathBuf,
    meta: BlobFileMeta,
}

impl BlobReader {
    /// Opens blob file `path` (number `number`) and checks its header and
    /// footer. A file without a valid footer (unfinished, truncated) is
    /// reported as corruption.
    pub fn open(fs: &FsRef, path: &Path, number: u64) -> Result<Arc<BlobReader>> {
        let file = fs
            .open(path, OpenMode::Read)
            .ctx(|| format!("opening blob file {}", path.display()))?;
        let file_size = file
            .len()
            .ctx(|| format!("reading the size of blob file {}", path.display()))?;
        if file_size < HEADER_LEN + FOOTER_LEN {
            return Err(Error::corruption(
                path,
                0,
                format!(
                    "blob file is {file_size} bytes, too short for header and footer (truncated?)"
                ),
            ));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        read_exact(&*file, path, &mut header, 0)?;
        check_header(&header, number).map_err(|r| Error::corruption(path, 0, r))?;
        let footer_at = file_size - FOOTER_LEN;
        let mut footer = [0u8; FOOTER_LEN as usize];
        read_exact(&*file, path, &mut footer, footer_at)?;
        let (records, record_bytes) = check_footer(&footer, number, file_size)
            .map_err(|r| Error::corruption(path, footer_at, r))?;
        Ok(Arc::new(BlobReader {
            file,
            path: path.to_path_buf(),
            meta: BlobFileMeta {
                number,
                file_size,
                records,
                record_bytes,
            },
        }))
    }

    /// The file's number.
    pub fn number(&self) -> u64 {
        self.meta.number
    }

    /// The file's size in bytes.
    pub fn file_size(&self) -> u64 {
        self.meta.file_size
    }

    /// The file's summary, from its footer.
    pub fn meta(&self) -> BlobFileMeta {
        self.meta
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// End of the record region (start of the footer).
    fn data_end(&self) -> u64 {
        HEADER_LEN + self.meta.record_bytes
    }

    /// Reads the value `r` points to with one positioned read of `r.len`
    /// bytes at `r.offset`.
    ///
    /// Checks that `r.file` is this file, that the record lies inside the
    /// record region, that its stored CRC equals `r.checksum` and matches
    /// the record, that its length is `r.len`, and that its key equals
    /// `key`. Any mismatch is [`Error::Corruption`]; wrong data is never
    /// returned.
    ///
    /// The value is a slice of the buffer read, which also holds the
    /// record's head and key, unless those weigh more than
    /// 1/[`PIN_SHARE_MAX`] of the value: then it is a copy. So the value
    /// keeps at most that share more than its own length alive, and the
    /// value cache can hold it as it is.
    pub fn get(&self, r: &BlobRef, key: &[u8]) -> Result<Bytes> {
        let corrupt = |reason: String| Error::corruption(&self.path, r.offset, reason);
        if r.file != self.meta.number {
            return Err(corrupt(format!(
                "pointer names blob file {} but was resolved in file {}",
                r.file, self.meta.number
            )));
        }
        let len = r.len as usize;
        let in_bounds = r.offset >= HEADER_LEN
            && r.offset
                .checked_add(u64::from(r.len))
                .is_some_and(|end| end <= self.data_end());
        if !in_bounds || !(RECORD_LEN_MIN..=BLOCK_LEN_MAX).contains(&len) {
            return Err(corrupt(format!(
                "pointer (offset {}, length {}) is outside the records of a {}-byte file",
                r.offset, r.len, self.meta.file_size
            )));
        }
        // Zeroed by hand, not by `vec![0; len]`: for a large value that asks
        // jemalloc for zeroed pages, which it gets by returning recycled
        // ones to the kernel and faulting them back in (2% of the server
        // under an 80%-read mix); a memset is cheaper and warms the lines
        // the read then fills.
        #[allow(clippy::slow_vector_initialization)] // faster here: see above
        let mut buf = {
            let mut b = Vec::with_capacity(len);
            b.resize(len, 0u8);
            b
        };
        read_exact(&*self.file, &self.path, &mut buf, r.offset)?;
        let head = parse_head(self.meta.number, &buf).map_err(corrupt)?;
        if head.crc != r.checksum {
            return Err(corrupt(format!(
                "record checksum {:#010x} differs from the pointer's {:#010x}",
                head.crc, r.checksum
            )));
        }
        verify(self.meta.number, &head, &buf).map_err(corrupt)?;
        if &buf[head.key_range()] != key {
            return Err(corrupt(
                "record holds a different key (misdirected pointer)".into(),
            ));
        }
        let value = head.value_range();
        if (buf.len() - value.len()) * PIN_SHARE_MAX > value.len() {
            return Ok(Bytes::copy_from_slice(&buf[value]));
        }
        Ok(Bytes::from(buf).slice(value))
    }

    /// A sequential scan of all records, each verified, in file order.
    pub fn iter(self: &Arc<Self>) -> BlobIter {
        BlobIter {
            window: Window::new(Arc::clone(&self.file), &self.path, self.data_end()),
            reader: Arc::clone(self),
            pos: HEADER_LEN,
            seen: 0,
            done: false,
        }
    }
}

/// Reads exactly `buf.len()` bytes at `offset`; a short file is corruption.
fn read_exact(file: &dyn File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::corruption(path, offset, "file is shorter than expected")
        } else {
            Error::io(format!("reading blob file {}", path.display()), e)
        }
    })
}

/// Iterator over the records of a blob file: yields `(pointer, key, value)`
/// in file order, each verified. After an error it yields `None`.
pub struct BlobIter {
    reader: Arc<BlobReader>,
    window: Window,
    pos: u64,
    seen: u64,
    done: bool,
}

impl std::fmt::Debug for BlobIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobIter")
            .field("path", &self.reader.path)
            .field("pos", &self.pos)
            .field("done", &self.done)
            .finish()
    }
}

impl BlobIter {
    /// Reads the record at `pos`. Its value is read and the whole record
    /// verified only if `keep` accepts its pointer and key; otherwise only
    /// the header is read (its lengths are covered by `head_crc`) and the
    /// value is `None`.
    fn step(
        &mut self,
        keep: &mut dyn FnMut(&BlobRef, &[u8]) -> Result<bool>,
    ) -> Result<(BlobRef, Bytes, Option<Bytes>)> {
        let number = self.reader.meta.number;
        let path = &self.reader.path;
        let pos = self.pos;
        let corrupt = |reason: String| Error::corruption(path, pos, reason);
        let avail = self.reader.data_end() - pos;
        let hn = (RECORD_HEADER_MAX as u64).min(avail) as usize;
        let head = parse_head(number, self.window.get(pos, hn)?).map_err(corrupt)?;
        let total = head.total();
        if total as u64 > avail {
            return Err(corrupt(format!(
                "record of {total} bytes runs past the end of the records"
            )));
        }
        let r = BlobRef {
            file: number,
            offset: pos,
            // total <= BLOCK_LEN_MAX < u32::MAX, checked by parse_head.
            len: total as u32,
            checksum: head.crc,
        };
        let key_end = head.key_range().end;
        let key = Bytes::copy_from_slice(&self.window.get(pos, key_end)?[head.key_range()]);
        let value = if keep(&r, &key)? {
            let rec = self.window.get(pos, total)?;
            verify(number, &head, rec).map_err(corrupt)?;
            if rec[head.key_range()] != key[..] {
                return Err(corrupt("record changed while being read".into()));
            }
            Some(Bytes::copy_from_slice(&rec[head.value_range()]))
        } else {
            None
        };
        self.pos += total as u64;
        self.seen += 1;
        Ok((r, key, value))
    }

    /// The next record whose value `keep` wants (given its pointer and
    /// key), with that value read and verified; records `keep` refuses are
    /// passed over without reading their values (`None`), which saves
    /// reading dead records during garbage collection. The key of a record
    /// passed over is not verified by the record checksum (its length is).
    pub fn next_filtered(
        &mut self,
        mut keep: impl FnMut(&BlobRef, &[u8]) -> Result<bool>,
    ) -> Option<Result<(BlobRef, Bytes, Option<Bytes>)>> {
        if self.done {
            return None;
        }
        if self.pos >= self.reader.data_end() {
            self.done = true;
            let want = self.reader.meta.records;
            if self.seen != want {
                return Some(Err(Error::corruption(
                    &self.reader.path,
                    self.pos,
                    format!("found {} records, the footer says {want}", self.seen),
                )));
            }
            return None;
        }
        let item = self.step(&mut keep);
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

impl Iterator for BlobIter {
    type Item = Result<BlobRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_filtered(|_, _| Ok(true))
            .map(|r| r.map(|(r, k, v)| (r, k, v.unwrap_or_default())))
    }
}
