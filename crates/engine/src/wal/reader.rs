//! Reading a log segment back, for recovery.

use super::{
    CONTROL_FLAG, END_PAYLOAD_LEN, GROUP_MARKER, HEADER_LEN, KIND_END, KIND_END_COPY,
    KIND_SYNC_POINT, SYNC_POINT_PAYLOAD_LEN,
};
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

/// A valid record: data, or a control record (layout in the module doc).
enum Item {
    Data(WalRecord),
    /// The entries of a record group, in order.
    Group(Vec<WalRecord>),
    SyncPoint {
        covered: u64,
    },
    End {
        copy: bool,
        covered: u64,
        crc: u32,
    },
}

/// How a segment ended, known once the reader has returned `Ok(None)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// The segment ended in a valid end marker (closed cleanly, or sealed
    /// by an earlier recovery).
    pub sealed: bool,
    /// The end marker's copy was missing or damaged (harmless: see the
    /// module doc).
    pub end_copy_damaged: bool,
    /// Where the first bad record was, if the log did not end at an end
    /// marker or at the end of the file.
    pub bad_offset: Option<u64>,
    /// Why that record was bad.
    pub reason: Option<String>,
    /// Records dropped as the unsynced tail of a crash: the torn record (if
    /// the bad bytes are not simply zeros or another log's) and every valid
    /// record found after it.
    pub dropped_records: u64,
    /// Bytes of the dropped records, from the first bad record to the end
    /// of the last record of this log found after it.
    pub dropped_bytes: u64,
}

/// What lies after a bad record.
#[derive(Default)]
struct Evidence {
    /// Valid data records.
    records: u64,
    /// End of the last valid record.
    last_end: u64,
    /// Largest `covered` of a valid sync point, and where that sync point is.
    max_covered: u64,
    covering: u64,
    /// Offset of a valid end marker (or copy).
    end_marker: Option<u64>,
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
    /// Entries of a record group not yet returned.
    pending: std::collections::VecDeque<WalRecord>,
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
    /// CRC32C of the records read in sequence (bytes `0..end_offset` when
    /// nothing was skipped).
    crc: u32,
    /// How the log ended.
    tail: Tail,
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
            pending: Default::default(),
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
            crc: 0,
            tail: Tail::default(),
        })
    }

    /// Returns the next data record, or `Ok(None)` at the end of the log.
    ///
    /// Control records are checked and consumed. At a valid end marker the
    /// log ends. At a bad record, [`ReadMode::Strict`] returns
    /// [`Error::Corruption`] naming the file and the bad record's offset if
    /// an end marker, or a sync point covering the bad record, follows it
    /// anywhere in the file; otherwise the rest of the file is the unsynced
    /// tail of a crash and is dropped (see [`WalReader::tail`]).
    /// [`ReadMode::Salvage`] skips to the next valid record.
    pub fn next_record(&mut self) -> Result<Option<WalRecord>> {
        loop {
            if let Some(rec) = self.pending.pop_front() {
                return Ok(Some(rec));
            }
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
            let pos = self.pos;
            let bad = match self.try_record(pos)? {
                Ok((Item::Data(rec), next)) => {
                    self.advance(pos, next)?;
                    return Ok(Some(rec));
                }
                Ok((Item::Group(recs), next)) => {
                    self.advance(pos, next)?;
                    self.pending.extend(recs);
                    continue;
                }
                Ok((Item::SyncPoint { covered }, next)) => {
                    if covered > pos && self.mode == ReadMode::Strict {
                        return self.fail(
                            pos,
                            format!(
                                "sync point claims {covered} bytes synced, more than precede it"
                            ),
                        );
                    }
                    self.advance(pos, next)?;
                    continue;
                }
                Ok((Item::End { copy, covered, crc }, next)) => {
                    if copy || covered != pos || crc != self.crc {
                        let reason = if copy {
                            "end-marker copy without its end marker".to_string()
                        } else {
                            format!(
                                "end marker for {covered} bytes with CRC {crc:#010x} disagrees \
                                 with the {pos} bytes of records before it (CRC {:#010x})",
                                self.crc
                            )
                        };
                        if self.mode == ReadMode::Strict {
                            return self.fail(pos, reason);
                        }
                        tracing::warn!(file = %self.path.display(), offset = pos, "{reason}");
                    }
                    self.finish_sealed(next)?;
                    return Ok(None);
                }
                Err(bad) => bad,
            };
            match self.mode {
                ReadMode::Strict => {
                    let ev = self.scan_rest(pos)?;
                    if let Some(at) = ev.end_marker {
                        return self.fail(
                            pos,
                            format!(
                                "bad log record ({}) before the end marker at offset {at}: \
                                 the log was closed cleanly",
                                bad.reason()
                            ),
                        );
                    }
                    if ev.max_covered > pos {
                        return self.fail(
                            pos,
                            format!(
                                "bad log record ({}) in data that was synced: the sync point at \
                                 offset {} says the log was durable up to offset {}",
                                bad.reason(),
                                ev.covering,
                                ev.max_covered
                            ),
                        );
                    }
                    self.end_at(pos, &bad, &ev)?;
                    return Ok(None);
                }
                ReadMode::Salvage => match self.find_next_valid(pos + 1)? {
                    None => {
                        self.end_at(pos, &bad, &Evidence::default())?;
                        return Ok(None);
                    }
                    Some(next) => {
                        tracing::warn!(
                            file = %self.path.display(),
                            offset = pos,
                            skipped = next - pos,
                            "skipping damaged log records: {}",
                            bad.reason()
                        );
                        self.skipped += next - pos;
                        self.pos = next;
                    }
                },
            }
        }
    }

    /// Where the valid records end: the recovery point.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// Bytes after the last valid record (end markers, a torn tail,
    /// preallocated zeros or old data of a recycled file) once the end of
    /// the log is reached; 0 before that.
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

    /// How the log ended (complete once `next_record` returned `Ok(None)`).
    pub fn tail(&self) -> &Tail {
        &self.tail
    }

    /// True if the log ended in a valid end marker.
    pub fn sealed(&self) -> bool {
        self.tail.sealed
    }

    /// CRC32C of the records read, bytes `0..end_offset` (what an end
    /// marker at `end_offset` carries).
    pub fn content_crc(&self) -> u32 {
        self.crc
    }

    /// Consumes the valid record at `pos .. next`.
    fn advance(&mut self, pos: u64, next: u64) -> Result<()> {
        let crc = self.crc;
        let b = self.bytes(pos, (next - pos) as usize)?;
        self.crc = crc32c::crc32c_append(crc, b);
        self.pos = next;
        self.end_offset = next;
        Ok(())
    }

    /// Records a Strict-mode corruption (returned again by later calls).
    fn fail(&mut self, offset: u64, reason: String) -> Result<Option<WalRecord>> {
        self.failed = Some((offset, reason.clone()));
        Err(Error::corruption(&self.path, offset, reason))
    }

    /// The log ended at a valid end marker; `copy_at` is where its copy
    /// should be.
    fn finish_sealed(&mut self, copy_at: u64) -> Result<()> {
        self.done = true;
        self.tail.sealed = true;
        let copy_ok = match self.try_record(copy_at)? {
            Ok((Item::End { copy, covered, crc }, _)) => {
                copy && covered == self.end_offset && crc == self.crc
            }
            _ => false,
        };
        if !copy_ok {
            self.tail.end_copy_damaged = true;
            tracing::warn!(
                file = %self.path.display(),
                offset = copy_at,
                "the copy of the log's end marker is missing or damaged (the end marker is intact)"
            );
        }
        Ok(())
    }

    /// Follows every valid record of this log after the bad record at
    /// `bad`, to the end of the file or the first end marker.
    fn scan_rest(&mut self, bad: u64) -> Result<Evidence> {
        let mut ev = Evidence::default();
        let mut from = bad + 1;
        while let Some(mut at) = self.find_next_valid(from)? {
            while let Ok((item, next)) = self.try_record(at)? {
                ev.last_end = next;
                match item {
                    Item::Data(_) => ev.records += 1,
                    Item::Group(g) => ev.records += g.len() as u64,
                    Item::SyncPoint { covered } => {
                        if covered <= at && covered > ev.max_covered {
                            ev.max_covered = covered;
                            ev.covering = at;
                        }
                    }
                    Item::End { .. } => {
                        ev.end_marker = Some(at);
                        return Ok(ev);
                    }
                }
                at = next;
            }
            from = at + 1;
        }
        Ok(ev)
    }

    /// Ends the log at the bad record at `offset`: a plain end (zeros or
    /// another log's bytes, nothing of this log after), or a dropped
    /// unsynced tail, which is counted and logged.
    fn end_at(&mut self, offset: u64, bad: &Bad, ev: &Evidence) -> Result<()> {
        self.done = true;
        let left = self.file_len - offset;
        let header_len = (HEADER_LEN as u64).min(left) as usize;
        let header = self.bytes(offset, header_len)?.to_vec();
        let zero = header.iter().all(|&b| b == 0);
        let other_log = header.len() == HEADER_LEN
            && u32::from_le_bytes([header[8], header[9], header[10], header[11]])
                != self.log_number;
        let torn_end = if zero || other_log {
            offset
        } else if header.len() < HEADER_LEN {
            self.file_len
        } else {
            let len =
                u32::from_le_bytes([header[4], header[5], header[6], header[7]]) & !CONTROL_FLAG;
            if len == 0 || len as usize > BLOCK_LEN_MAX {
                offset + HEADER_LEN as u64
            } else {
                (offset + HEADER_LEN as u64 + u64::from(len)).min(self.file_len)
            }
        };
        let records = ev.records + u64::from(torn_end > offset);
        let end = torn_end.max(ev.last_end);
        if records == 0 && end == offset {
            tracing::debug!(
                file = %self.path.display(),
                offset,
                unused = left,
                "log ends before unused space"
            );
            return Ok(());
        }
        self.tail.bad_offset = Some(offset);
        self.tail.reason = Some(bad.reason());
        self.tail.dropped_records = records;
        self.tail.dropped_bytes = end - offset;
        tracing::warn!(
            file = %self.path.display(),
            offset,
            records_dropped = records,
            bytes_dropped = end - offset,
            "dropping the unsynced tail of the log (normal after a crash): {}",
            bad.reason()
        );
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
    fn try_record(&mut self, offset: u64) -> Result<std::result::Result<(Item, u64), Bad>> {
        let left = self.file_len.saturating_sub(offset);
        if left < HEADER_LEN as u64 {
            return Ok(Err(Bad::Short("record header cut short by end of file")));
        }
        let header = self.bytes(offset, HEADER_LEN)?;
        let crc = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let raw_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let log = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let control = raw_len & CONTROL_FLAG != 0;
        let len = raw_len & !CONTROL_FLAG;
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
        if control {
            let u64_at = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&payload[i..i + 8]);
                u64::from_le_bytes(b)
            };
            let item = match (payload[0], payload.len()) {
                (KIND_SYNC_POINT, SYNC_POINT_PAYLOAD_LEN) => Item::SyncPoint { covered: u64_at(1) },
                (kind @ (KIND_END | KIND_END_COPY), END_PAYLOAD_LEN) => Item::End {
                    copy: kind == KIND_END_COPY,
                    covered: u64_at(1),
                    crc: u32::from_le_bytes([payload[9], payload[10], payload[11], payload[12]]),
                },
                (kind, n) => {
                    return Ok(Err(Bad::Invalid(format!(
                        "control record of unknown kind {kind} or length {n}"
                    ))))
                }
            };
            return Ok(Ok((item, offset + total)));
        }
        if payload[0] == GROUP_MARKER {
            return Ok(match decode_group(payload, offset) {
                Some(g) => Ok((Item::Group(g), offset + total)),
                None => Err(Bad::Invalid("record group does not decode".into())),
            });
        }
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
            Some((key, value)) => Ok(Ok((
                Item::Data(WalRecord { key, value, offset }),
                offset + total,
            ))),
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

/// Decodes the payload of a record group (layout in the module doc); every
/// entry gets the group's `offset`.
fn decode_group(payload: &[u8], offset: u64) -> Option<Vec<WalRecord>> {
    let mut d = Decoder::new(payload.get(1..)?);
    let count = usize::try_from(d.varint64()?).ok()?;
    if !(2..=crate::db::TXN_OPS_MAX).contains(&count) {
        return None;
    }
    // Each entry takes at least 3 bytes: no allocation beyond the payload.
    if count > payload.len() / 3 {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let key_len = usize::try_from(d.varint64()?).ok()?;
        if key_len == 0 || key_len > KEY_LEN_MAX {
            return None;
        }
        let key = Bytes::copy_from_slice(d.bytes(key_len)?);
        let value = Value::decode(&mut d)?;
        out.push(WalRecord { key, value, offset });
    }
    (d.remaining() == 0).then_some(out)
}
