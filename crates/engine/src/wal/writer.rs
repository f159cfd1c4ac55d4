//! Appending records to a log segment.

use super::{encode_end_markers, encode_sync_point, Batch, END_MARKERS_LEN};
use crate::error::{IoContext, Result};
use crate::fs::{File, FsRef, OpenMode};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Zeros written per call when preallocating.
const PREALLOCATE_CHUNK: usize = 1 << 20;
/// Bytes a preallocating log is zero-filled ahead of its records: the
/// first step when the file is created (and fdatasynced), then one more
/// step each time an append would pass the zero-filled end, until the
/// segment's target size. A database at rest then holds at most one step
/// of zeros, not a whole segment (docs/performance.md, sixth pass).
pub const PREALLOCATE_STEP: u64 = 8 << 20;
/// The zeros written (a static buffer: no allocation per step).
static ZEROS: [u8; PREALLOCATE_CHUNK] = [0; PREALLOCATE_CHUNK];
/// Largest buffer kept between appends for putting a sync point in front
/// of a batch (the commit code's batches are at most 4 MiB).
const SCRATCH_KEEP_MAX: usize = 8 << 20;

/// What the writer and whoever syncs the file share.
#[derive(Debug, Default)]
struct SyncState {
    /// Bytes of records written (the writer's `len`), published after each
    /// successful write.
    appended: AtomicU64,
    /// Bytes known durable: `appended` as it was when an fdatasync that
    /// returned Ok was called.
    synced: AtomicU64,
    /// An fdatasync of this file failed: what reached the disk is unknown,
    /// so every later sync fails too and no sync point or end marker is
    /// written.
    failed: AtomicBool,
}

/// The segment file as handed out by [`WalWriter::file`]: syncing it
/// records how much of the log is durable, for the next sync point.
#[derive(Debug)]
struct TrackedFile {
    inner: Arc<dyn File>,
    state: Arc<SyncState>,
}

impl TrackedFile {
    fn tracked_sync(&self, sync: impl FnOnce(&dyn File) -> io::Result<()>) -> io::Result<()> {
        if self.state.failed.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "an earlier fdatasync of this log failed; what reached the disk is unknown",
            ));
        }
        let upto = self.state.appended.load(Ordering::Acquire);
        match sync(&*self.inner) {
            Ok(()) => {
                self.state.synced.fetch_max(upto, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                self.state.failed.store(true, Ordering::Release);
                Err(e)
            }
        }
    }
}

impl File for TrackedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn write_all_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.inner.write_all_vectored_at(bufs, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.tracked_sync(|f| f.sync_data())
    }
    fn sync_all(&self) -> io::Result<()> {
        self.tracked_sync(|f| f.sync_all())
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

/// Appends records to one log segment file.
///
/// Not internally synchronized: one owner appends; other threads may sync
/// through [`WalWriter::file`]. Every fdatasync that returns Ok, through
/// [`WalWriter::sync`] or that handle, is recorded in the log by a sync
/// point at the front of the next append (layout in the
/// [module doc](super)).
#[derive(Debug)]
pub struct WalWriter {
    file: Arc<TrackedFile>,
    path: PathBuf,
    log_number: u64,
    /// Logical end: bytes of records successfully written.
    len: u64,
    /// End of the bytes a failed write (or the end markers of a seal) may
    /// have left past `len`. The next append pads with zeros up to here, so
    /// no complete record from a failed write can survive after later
    /// records.
    garbage_end: u64,
    /// `covered` of the last sync point written.
    checkpointed: u64,
    /// File bytes known to exist (zero-filled, or a recycled log's old
    /// contents): writes below this need no block allocation. Never below
    /// `len`.
    allocated: u64,
    /// Size up to which appends keep zero-filling [`PREALLOCATE_STEP`]s
    /// ahead (0: never).
    prealloc_target: u64,
    /// CRC32C of bytes `0..len`.
    crc: u32,
    /// Room to put a sync point in front of a batch.
    scratch: Vec<u8>,
}

impl WalWriter {
    /// Creates segment file `path` with number `log_number`.
    ///
    /// If `recycle` is `Some(old)`, the old (fully written, synced) log file
    /// is renamed to `path` and overwritten in place. If `preallocate > 0`,
    /// the file is kept zero-filled [`PREALLOCATE_STEP`] bytes ahead of its
    /// records up to `preallocate` bytes, so that fdatasyncs over that
    /// region need no metadata update: a new file gets its first step now
    /// (fdatasynced), and appends add the next steps (synced by the next
    /// fdatasync of the log). Syncs the directory `dir` after
    /// creating/renaming.
    ///
    /// If anything fails once the file exists at `path`, the file is
    /// removed again (a full disk must not leave a file per retry).
    pub fn create(
        fs: &FsRef,
        dir: &Path,
        path: &Path,
        log_number: u64,
        preallocate: u64,
        recycle: Option<&Path>,
    ) -> Result<WalWriter> {
        if let Some(old) = recycle {
            fs.rename(old, path)
                .ctx(|| format!("recycling log {} as {}", old.display(), path.display()))?;
        }
        let made = (|| {
            let file = match recycle {
                Some(_) => fs
                    .open(path, OpenMode::ReadWrite)
                    .ctx(|| format!("opening recycled log {}", path.display()))?,
                None => fs
                    .open(path, OpenMode::CreateTruncate)
                    .ctx(|| format!("creating log {}", path.display()))?,
            };
            let allocated = if recycle.is_some() {
                file.len()
                    .ctx(|| format!("reading the length of log {}", path.display()))?
            } else if preallocate > 0 {
                let first = preallocate.min(PREALLOCATE_STEP);
                write_zeros(&*file, 0, first)
                    .ctx(|| format!("preallocating log {}", path.display()))?;
                file.sync_data()
                    .ctx(|| format!("syncing preallocated log {}", path.display()))?;
                first
            } else {
                0
            };
            fs.sync_dir(dir)
                .ctx(|| format!("syncing directory {}", dir.display()))?;
            Ok((file, allocated))
        })();
        let (file, allocated) = match made {
            Ok(f) => f,
            Err(e) => {
                if let Err(re) = fs.remove_file(path) {
                    if re.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(
                            file = %path.display(),
                            error = %re,
                            "could not remove a log file whose creation failed"
                        );
                    }
                }
                return Err(e);
            }
        };
        Ok(WalWriter {
            file: Arc::new(TrackedFile {
                inner: file,
                state: Arc::new(SyncState::default()),
            }),
            path: path.to_path_buf(),
            log_number,
            len: 0,
            garbage_end: 0,
            checkpointed: 0,
            allocated,
            prealloc_target: preallocate,
            crc: 0,
            scratch: Vec::new(),
        })
    }

    /// Writes `data` (one or more encoded records) with one positioned write
    /// at the current end, preceded by a sync point if an fdatasync
    /// returned since the last one.
    ///
    /// On error the logical end does not advance: the next append overwrites
    /// the failed bytes, so a failed write (e.g. ENOSPC) never leaves a hole
    /// before later records.
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        self.append_pieces(&[data])
    }

    /// As [`WalWriter::append`], for the records of `batch`: one vectored
    /// write, long values straight from their own buffers.
    pub fn append_batch(&mut self, batch: &Batch) -> Result<()> {
        self.append_pieces(&batch.pieces())
    }

    fn append_pieces(&mut self, data: &[&[u8]]) -> Result<()> {
        let data_len: usize = data.iter().map(|d| d.len()).sum();
        if data_len == 0 {
            return Ok(());
        }
        let state = &self.file.state;
        let synced = state.synced.load(Ordering::Acquire);
        let sync_point = !state.failed.load(Ordering::Acquire)
            && synced > self.checkpointed
            && synced <= self.len;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(data.len() + 1);
        if sync_point {
            encode_sync_point(&mut buf, self.log_number, synced);
            pieces.push(&buf);
        }
        pieces.extend_from_slice(data);
        let total = buf.len() + data_len;
        self.preallocate_for(self.len + total as u64);
        let result = self.write_at_end(&pieces, total);
        if result.is_ok() {
            for p in &pieces {
                self.crc = crc32c::crc32c_append(self.crc, p);
            }
            self.len += total as u64;
            if sync_point {
                self.checkpointed = synced;
            }
            self.file.state.appended.store(self.len, Ordering::Release);
        }
        drop(pieces);
        // Keep the buffer's room for next time, but not a huge one.
        if buf.capacity() <= SCRATCH_KEEP_MAX {
            self.scratch = buf;
        }
        result.ctx(|| {
            format!(
                "appending {} bytes to log {} at offset {}",
                data_len,
                self.path.display(),
                self.len
            )
        })
    }

    /// Writes `pieces` (`total` bytes) one after the other at `len`
    /// (zero-padded over what a failed write or a seal left after them),
    /// without moving `len`.
    fn write_at_end(&mut self, pieces: &[&[u8]], total: usize) -> io::Result<()> {
        let end = self.len + total as u64;
        let padding;
        let mut padded;
        let all: &[&[u8]] = if end < self.garbage_end {
            // Cover what a failed write left behind with zeros (read back as
            // the end of the log), in the same single write.
            padding = vec![0u8; (self.garbage_end - end) as usize];
            padded = pieces.to_vec();
            padded.push(&padding);
            &padded
        } else {
            pieces
        };
        let result = match all {
            [one] => self.file.write_all_at(one, self.len),
            all => self.file.write_all_vectored_at(all, self.len),
        };
        if result.is_ok() {
            self.allocated = self.allocated.max(end);
        }
        match &result {
            Ok(()) if end >= self.garbage_end => self.garbage_end = 0,
            Ok(()) => {}
            Err(_) => self.garbage_end = self.garbage_end.max(end),
        }
        result
    }

    /// Zero-fills the next [`PREALLOCATE_STEP`] past the allocated end if a
    /// write up to `end` would pass it and the segment is still below its
    /// preallocation target. Only bytes at or past `allocated` (which is at
    /// or past `len`) are written, so no record is ever touched.
    ///
    /// Preallocation only makes later fdatasyncs cheaper: if the zeros
    /// cannot be written (a full disk), this segment stops preallocating
    /// (with a warning) and the append goes on, failing only if its own
    /// bytes do not fit.
    fn preallocate_for(&mut self, end: u64) {
        if end <= self.allocated || self.allocated >= self.prealloc_target {
            return;
        }
        let to = (self.allocated + PREALLOCATE_STEP)
            .min(self.prealloc_target)
            .max(end);
        debug_assert!(self.allocated >= self.len);
        match write_zeros(&*self.file.inner, self.allocated, to) {
            Ok(()) => self.allocated = to,
            Err(e) => {
                tracing::warn!(
                    file = %self.path.display(),
                    error = %e,
                    "could not preallocate the log further; appending without it"
                );
                self.prealloc_target = self.allocated;
            }
        }
    }

    /// Makes everything appended so far durable (fdatasync).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .ctx(|| format!("syncing log {}", self.path.display()))
    }

    /// Ends the segment (clean close, or before switching to a new
    /// segment): fdatasyncs the records unless a sync already covers them,
    /// writes the end marker and its copy after them, and fdatasyncs again.
    /// From then on damage anywhere in the segment reads as corruption,
    /// never as a torn tail.
    ///
    /// Does nothing if an fdatasync of this log has failed (nothing can be
    /// claimed durable). Records appended later overwrite the markers.
    pub fn seal(&mut self) -> Result<()> {
        let r = self.seal_inner();
        if let Err(e) = &r {
            tracing::warn!(
                file = %self.path.display(),
                error = %e,
                "could not end the log with its end marker; the next open reads it as after a crash"
            );
        }
        r
    }

    fn seal_inner(&mut self) -> Result<()> {
        let state = &self.file.state;
        if state.failed.load(Ordering::Acquire) {
            tracing::warn!(
                file = %self.path.display(),
                "not sealing the log: an earlier fdatasync of it failed"
            );
            return Ok(());
        }
        if state.synced.load(Ordering::Acquire) < self.len {
            self.sync()?;
        }
        let mut markers = Vec::with_capacity(END_MARKERS_LEN);
        encode_end_markers(&mut markers, self.log_number, self.len, self.crc);
        let end = self.len + markers.len() as u64;
        self.write_at_end(&[&markers[..]], markers.len()).ctx(|| {
            format!(
                "writing the end marker of log {} at offset {}",
                self.path.display(),
                self.len
            )
        })?;
        // The markers are not records: the next append overwrites them.
        self.garbage_end = self.garbage_end.max(end);
        self.sync()
    }

    /// After a [`WalWriter::seal`] at a clean close: cuts the file right
    /// after its end markers, so no byte past the log remains (the zeros of
    /// preallocation, or an older log's records in a recycled file), and
    /// any later change to the file is damage that `check` and the next
    /// open can see. Does nothing if the log could not be sealed.
    pub fn trim_after_seal(&mut self) -> Result<()> {
        if self.file.state.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let end = self.len + END_MARKERS_LEN as u64;
        let size = self
            .file
            .len()
            .ctx(|| format!("reading the length of log {}", self.path.display()))?;
        if size > end {
            self.file
                .set_len(end)
                .and_then(|()| self.file.sync_all())
                .ctx(|| format!("trimming log {} to {end} bytes", self.path.display()))?;
        }
        Ok(())
    }

    /// The open file, so another thread can fdatasync without the writer
    /// (each successful fdatasync is recorded by the next sync point).
    pub fn file(&self) -> Arc<dyn File> {
        self.file.clone()
    }

    /// Logical bytes of records written.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if no record has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment's log number.
    pub fn log_number(&self) -> u64 {
        self.log_number
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes zeros over bytes `from..to` of `file`.
fn write_zeros(file: &dyn File, from: u64, to: u64) -> io::Result<()> {
    let mut off = from;
    while off < to {
        let n = (to - off).min(PREALLOCATE_CHUNK as u64) as usize;
        file.write_all_at(&ZEROS[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

/// Ends a segment that recovery replayed and that a crash left without an
/// end marker: fdatasyncs what is there (after a process kill the records
/// read may still be only in the page cache), writes the end marker and
/// its copy at `len` (the end of the valid records, whose CRC32C is
/// `content_crc`) over whatever the crash left there, and fdatasyncs again.
/// The next open then reads the segment strictly, without dropping the
/// tail again.
pub fn seal_recovered(
    fs: &FsRef,
    path: &Path,
    log_number: u64,
    len: u64,
    content_crc: u32,
) -> Result<()> {
    let file = fs
        .open(path, OpenMode::ReadWrite)
        .ctx(|| format!("opening log {} to seal it", path.display()))?;
    file.sync_data()
        .ctx(|| format!("syncing log {}", path.display()))?;
    let mut markers = Vec::with_capacity(END_MARKERS_LEN);
    encode_end_markers(&mut markers, log_number, len, content_crc);
    file.write_all_at(&markers, len).ctx(|| {
        format!(
            "writing the end marker of log {} at offset {len}",
            path.display()
        )
    })?;
    file.sync_data()
        .ctx(|| format!("syncing log {}", path.display()))
}
