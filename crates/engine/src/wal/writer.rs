//! Appending records to a log segment.

use crate::error::{IoContext, Result};
use crate::fs::{File, FsRef, OpenMode};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Zeros written per call when preallocating.
const PREALLOCATE_CHUNK: usize = 1 << 20;

/// Appends records to one log segment file.
///
/// Not internally synchronized: one owner appends; other threads may sync
/// through [`WalWriter::file`].
#[derive(Debug)]
pub struct WalWriter {
    file: Arc<dyn File>,
    path: PathBuf,
    log_number: u64,
    /// Logical end: bytes of records successfully written.
    len: u64,
    /// End of the bytes a failed write may have left past `len`. The next
    /// append pads with zeros up to here, so no complete record from a
    /// failed write can survive after later records.
    garbage_end: u64,
}

impl WalWriter {
    /// Creates segment file `path` with number `log_number`.
    ///
    /// If `recycle` is `Some(old)`, the old (fully written, synced) log file
    /// is renamed to `path` and overwritten in place; otherwise, if
    /// `preallocate > 0`, the new file is zero-filled to that many bytes and
    /// fdatasynced, so later fdatasyncs over that region need no metadata
    /// update. Syncs the directory `dir` after creating/renaming.
    pub fn create(
        fs: &FsRef,
        dir: &Path,
        path: &Path,
        log_number: u64,
        preallocate: u64,
        recycle: Option<&Path>,
    ) -> Result<WalWriter> {
        let file = match recycle {
            Some(old) => {
                fs.rename(old, path)
                    .ctx(|| format!("recycling log {} as {}", old.display(), path.display()))?;
                fs.open(path, OpenMode::ReadWrite)
                    .ctx(|| format!("opening recycled log {}", path.display()))?
            }
            None => {
                let file = fs
                    .open(path, OpenMode::CreateTruncate)
                    .ctx(|| format!("creating log {}", path.display()))?;
                if preallocate > 0 {
                    let zeros = vec![0u8; PREALLOCATE_CHUNK];
                    let mut off = 0u64;
                    while off < preallocate {
                        let n = (preallocate - off).min(PREALLOCATE_CHUNK as u64) as usize;
                        file.write_all_at(&zeros[..n], off)
                            .ctx(|| format!("preallocating log {}", path.display()))?;
                        off += n as u64;
                    }
                    file.sync_data()
                        .ctx(|| format!("syncing preallocated log {}", path.display()))?;
                }
                file
            }
        };
        fs.sync_dir(dir)
            .ctx(|| format!("syncing directory {}", dir.display()))?;
        Ok(WalWriter {
            file,
            path: path.to_path_buf(),
            log_number,
            len: 0,
            garbage_end: 0,
        })
    }

    /// Writes `data` (one or more encoded records) with one positioned write
    /// at the current end.
    ///
    /// On error the logical end does not advance: the next append overwrites
    /// the failed bytes, so a failed write (e.g. ENOSPC) never leaves a hole
    /// before later records.
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = self.len + data.len() as u64;
        let result = if end < self.garbage_end {
            // Cover what a failed write left behind with zeros (read back as
            // the end of the log), in the same single write.
            let mut padded = Vec::with_capacity((self.garbage_end - self.len) as usize);
            padded.extend_from_slice(data);
            padded.resize((self.garbage_end - self.len) as usize, 0);
            self.file.write_all_at(&padded, self.len)
        } else {
            self.file.write_all_at(data, self.len)
        };
        match result {
            Ok(()) => {
                self.len = end;
                if end >= self.garbage_end {
                    self.garbage_end = 0;
                }
                Ok(())
            }
            Err(e) => {
                self.garbage_end = self.garbage_end.max(end);
                Err(e).ctx(|| {
                    format!(
                        "appending {} bytes to log {} at offset {}",
                        data.len(),
                        self.path.display(),
                        self.len
                    )
                })
            }
        }
    }

    /// Makes everything appended so far durable (fdatasync).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .ctx(|| format!("syncing log {}", self.path.display()))
    }

    /// The open file, so another thread can fdatasync without the writer.
    pub fn file(&self) -> Arc<dyn File> {
        Arc::clone(&self.file)
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
