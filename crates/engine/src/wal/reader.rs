//! Reading a log segment back, for recovery.

use super::HEADER_LEN;
use crate::coding::Decoder;
use crate::error::{Error, IoContext, Result};
use crate::fs::{File, FsRef, OpenMode};
use crate::limits::{BLOCK_LEN_MAX, KEY_LEN_MAX};
use crate::types::Value;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes read from the file at a time (more if one record is larger).
const CHUNK: usize = 1 << 20;

/// What to do with damage in the middle of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Report a bad record followed by valid ones as corruption.
    Strict,
    /// Skip bad records, keep every valid one, and count the skipped bytes.
    Salvage,
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// The key.
    pub key: Bytes,
    /// The value: inline bytes (a put), a tombstone (a delete) or a blob
    /// pointer (a garbage-collection update).
    pub value: Value,
    /// Offset of the record's first header byte in the segment.
    pub offset: u64,
}

/// Why a record at some offset is not a valid record.
enum Bad {
    /// The file ends inside the record.
    Short(&'static str),
    /// The bytes are there but are not a valid record of this log.
    Invalid(String),
}

impl Bad {
    fn reason(&self) -> String {
        match self {
            Bad::Short(r) => (*r).to_string(),
            Bad::Invalid(r) => r.clone(),
        }
    }
}

/// Reads the records of one log segment in order.
#[derive(Debug)]
pub struct WalReader {
    file: Arc<dyn File>,
    path: PathBuf,
    log_number: u32,
    mode: ReadMode,
    file_len: u64,
    /// Next offset to decode.
    pos: u64,
    /// End of the last valid record.
    end_offset: u64,
    /// Bytes of the file cached in memory, starting at `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    skipped: u64,
    done: bool,
    /// Set after a Strict-mode corruption, which is returned again.
    failed: Option<(u64, String)>,
}

impl WalReader {
    /// Opens segment `path`, whose log number is `log_number`.
    pub fn open(fs: &FsRef, path: &Path, log_number: u64, mode: ReadMode) -> Result<WalReader> {
        let file = fs
            .open(path, OpenMode::Read)
            .ctx(|| format!("opening log {}", path.display()))?;
        let file_len = file
            .len()
            .ctx(|| format!("reading length of log {}", path.display()))?;
        Ok(WalReader {
            file,
            path: path.to_path_buf(),
            log_number: log_number as u32,
            mode,
            file_len,
            pos: 0,
            end_offset: 0,
            buf: Vec::new(),
            buf_start: 0,
            skipped: 0,
            done: false,
            failed: None,
        })
    }

    /// Returns the next record, or `Ok(None)` at the end of the log.
    ///
    /// A record that fails its checksum, is cut short, or has another log
    /// number ends the log if no valid record of this log follows it
    /// anywhere later in the file (a torn tail: normal after a crash). If a
    /// valid record does follow, [`ReadMode::Strict`] returns
    /// [`Error::Corruption`] naming the file and the bad record's offset,
    /// and [`ReadMode::Salvage`] skips to the valid record.
    pub fn next_record(&mut self) -> Result<Option<WalRecord>> {
        if let Some((offset, reason)) = &self.failed {
            return Err(Error::corruption(&self.path, *offset, reason.clone()));
        }
        if self.done {
            return Ok(None);
        }
        if self.pos >= self.file_len {
            self.done = true;
            return Ok(None);
        }
        let bad = match self.try_record(self.pos)? {
            Ok((rec, next)) => {
                self.pos = next;
                self.end_offset = next;
                return Ok(Some(rec));
            }
            Err(bad) => bad,
        };
        let bad_offset = self.pos;
        match self.find_next_valid(bad_offset + 1)? {
            None => {
                self.done = true;
                self.log_tail(bad_offset, &bad)?;
                Ok(None)
            }
            Some(next) => match self.mode {
                ReadMode::Strict => {
                    let reason = format!(
                        "bad log record ({}) followed by a valid record at offset {next}",
                        bad.reason()
                    );
                    self.failed = Some((bad_offset, reason.clone()));
                    Err(Error::corruption(&self.path, bad_offset, reason))
                }
                ReadMode::Salvage => {
                    tracing::warn!(
                        file = %self.path.display(),
                        offset = bad_offset,
                        skipped = next - bad_offset,
                        "skipping damaged log records: {}",
                        bad.reason()
                    );
                    self.skipped += next - bad_offset;
                    self.pos = next;
                    match self.try_record(next)? {
                        Ok((rec, after)) => {
                            self.pos = after;
                            self.end_offset = after;
                            Ok(Some(rec))
                        }
                        // find_next_valid checked this record; unreachable
                        // unless the file changes under us.
                        Err(bad) => Err(Error::corruption(&self.path, next, bad.reason())),
                    }
                }
            },
        }
    }

    /// Where the valid records end: the recovery point.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// Bytes after the last valid record (a torn tail, preallocated zeros
    /// or old data of a recycled file) once the end of the log is reached;
    /// 0 before that.
    pub fn dropped_tail_bytes(&self) -> u64 {
        if self.done {
            self.file_len.saturating_sub(self.end_offset)
        } else {
            0
        }
    }

    /// Bytes skipped over damaged records in [`ReadMode::Salvage`].
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Logs the end of the log: a warning for a torn record, a debug line
    /// for plain preallocated zeros or another log's records.
    fn log_tail(&mut self, offset: u64, bad: &Bad) -> Result<()> {
        let dropped = self.file_len - offset;
        let header_len = (HEADER_LEN as u64).min(dropped) as usize;
        let header = self.bytes(offset, header_len)?;
        let zero = header.iter().all(|&b| b == 0);
        let other_log = header.len() == HEADER_LEN
            && u32::from_le_bytes([header[8], header[9], header[10], header[11]])
                != self.log_number;
        if zero || other_log {
            tracing::debug!(
                file = %self.path.display(),
                offset,
                dropped,
                "log ends before unused space"
            );
        } else {
            tracing::warn!(
                file = %self.path.display(),
                offset,
                dropped,
                "dropping torn tail of log: {}",
                bad.reason()
            );
        }
        Ok(())
    }

    /// Scans forward from `from`, byte by byte, for a valid record of this
    /// log; returns its offset.
    fn find_next_valid(&mut self, from: u64) -> Result<Option<u64>> {
        let want = self.log_number.to_le_bytes();
        let mut pos = from;
        while pos + HEADER_LEN as u64 <= self.file_len {
            // Cheap filter first: the log number field must match. Scan what
            // is cached from `pos` on, loading a new chunk only when fewer
            // than a header's bytes are cached.
            let cached_end = self.buf_start + self.buf.len() as u64;
            let window = if pos >= self.buf_start && cached_end >= pos + HEADER_LEN as u64 {
                (cached_end - pos) as usize
            } else {
                (self.file_len - pos).min(CHUNK as u64) as usize
            };
            let chunk = self.bytes(pos, window)?;
            let mut candidate = None;
            let mut i = 0;
            while i + HEADER_LEN <= chunk.len() {
                if chunk[i + 8..i + 12] == want {
                    candidate = Some(i);
                    break;
                }
                i += 1;
            }
            match candidate {
                Some(i) => {
                    let at = pos + i as u64;
                    if self.try_record(at)?.is_ok() {
                        return Ok(Some(at));
                    }
                    pos = at + 1;
                }
                None => {
                    // The last HEADER_LEN - 1 positions of the chunk were
                    // not checked in full; resume there.
                    let advance = (chunk.len() + 1).saturating_sub(HEADER_LEN).max(1);
                    pos += advance as u64;
                }
            }
        }
        Ok(None)
    }

    /// Decodes the record at `offset`: the record and the offset after it,
    /// or why it is bad. I/O errors are the outer error.
    fn try_record(&mut self, offset: u64) -> Result<std::result::Result<(WalRecord, u64), Bad>> {
        let left = self.file_len.saturating_sub(offset);
        if left < HEADER_LEN as u64 {
            return Ok(Err(Bad::Short("record header cut short by end of file")));
        }
        let header = self.bytes(offset, HEADER_LEN)?;
        let crc = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let log = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if len == 0 {
            return Ok(Err(Bad::Invalid("zero record length".into())));
        }
        if len as usize > BLOCK_LEN_MAX {
            return Ok(Err(Bad::Invalid(format!(
                "record length {len} exceeds the limit {BLOCK_LEN_MAX}"
            ))));
        }
        if log != self.log_number {
            return Ok(Err(Bad::Invalid(format!(
                "record of log number {log}, expected {}",
                self.log_number
            ))));
        }
        let total = HEADER_LEN as u64 + u64::from(len);
        if total > left {
            return Ok(Err(Bad::Short("record cut short by end of file")));
        }
        // The length is now bounded by BLOCK_LEN_MAX and by the file.
        let rec = self.bytes(offset, total as usize)?;
        if crc32c::crc32c(&rec[4..]) != crc {
            return Ok(Err(Bad::Invalid("record checksum mismatch".into())));
        }
        let payload = &rec[HEADER_LEN..];
        let mut d = Decoder::new(payload);
        let decoded = (|| {
            let key_len = usize::try_from(d.varint64()?).ok()?;
            if key_len > KEY_LEN_MAX {
                return None;
            }
            let key = Bytes::copy_from_slice(d.bytes(key_len)?);
            let value = Value::decode(&mut d)?;
            (d.remaining() == 0).then_some((key, value))
        })();
        match decoded {
            Some((key, value)) => Ok(Ok((WalRecord { key, value, offset }, offset + total))),
            None => Ok(Err(Bad::Invalid("record payload does not decode".into()))),
        }
    }

    /// Bytes `offset .. offset + n` of the file, which must lie within
    /// `file_len`; served from the cached chunk, reloading it if needed.
    fn bytes(&mut self, offset: u64, n: usize) -> Result<&[u8]> {
        let end = offset + n as u64;
        let cached_end = self.buf_start + self.buf.len() as u64;
        if offset < self.buf_start || end > cached_end {
            let want = (self.file_len - offset).min(CHUNK.max(n) as u64) as usize;
            self.buf.clear();
            self.buf.resize(want, 0);
            self.buf_start = offset;
            if let Err(e) = self.file.read_exact_at(&mut self.buf, offset) {
                self.buf.clear();
                return Err(e)
                    .ctx(|| format!("reading log {} at offset {offset}", self.path.display()));
            }
        }
        let start = (offset - self.buf_start) as usize;
        Ok(&self.buf[start..start + n])
    }
}
