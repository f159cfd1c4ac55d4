//! A forward-moving read buffer over a region of a file, for sequential
//! scans (iteration and salvage): reads in large chunks and hands out
//! slices by absolute file offset.

use crate::error::{Error, Result};
use crate::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Minimum amount read from the file at a time.
const READ_CHUNK: u64 = 256 * 1024;

pub(crate) struct Window {
    file: Arc<dyn File>,
    path: PathBuf,
    /// End of the readable region (exclusive).
    end: u64,
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
}

impl Window {
    /// A window over `[.., end)` of `file`.
    pub fn new(file: Arc<dyn File>, path: &Path, end: u64) -> Window {
        Window {
            file,
            path: path.to_path_buf(),
            end,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// Returns the bytes `[pos, pos + n)`, reading them if needed. Bytes
    /// before `pos` may be discarded: positions must not move backwards by
    /// more than what is still buffered. The caller has checked that
    /// `pos + n <= end` (else this returns corruption).
    pub fn get(&mut self, pos: u64, n: usize) -> Result<&[u8]> {
        let want_end = pos
            .checked_add(n as u64)
            .filter(|&e| e <= self.end)
            .ok_or_else(|| {
                Error::corruption(&self.path, pos, "read past the end of the data region")
            })?;
        let have_end = self.start + self.buf.len() as u64;
        if pos < self.start || want_end > have_end {
            // Drop what lies before `pos`, keep the rest, read the missing part.
            if pos >= self.start && pos <= have_end {
                let drop = (pos - self.start) as usize;
                self.buf.drain(..drop);
            } else {
                self.buf.clear();
            }
            self.start = pos;
            let have_end = self.start + self.buf.len() as u64;
            let read_to = want_end
                .max(have_end.saturating_add(READ_CHUNK))
                .min(self.end);
            let old = self.buf.len();
            let add = (read_to - have_end) as usize;
            self.buf.resize(old + add, 0);
            if let Err(e) = self.file.read_exact_at(&mut self.buf[old..], have_end) {
                self.buf.truncate(old);
                return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::corruption(&self.path, have_end, "file is shorter than expected")
                } else {
                    Error::io(format!("reading blob file {}", self.path.display()), e)
                });
            }
        }
        let from = (pos - self.start) as usize;
        Ok(&self.buf[from..from + n])
    }
}
