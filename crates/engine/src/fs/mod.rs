//! The file-system layer. All of the engine's file I/O goes through
//! [`FileSystem`], so that tests can swap the real disk ([`RealFs`]) for an
//! in-memory one that simulates crashes, full disks and bit flips
//! ([`MemFs`]).
//!
//! Files are accessed with positioned reads and writes through a shared
//! handle (`&self`), so one open file can be read by many threads while its
//! owner appends.
//!
//! Durability model (what [`MemFs`] simulates and what the engine relies on):
//! - data written to a file is durable only after `sync_data`/`sync_all` on
//!   that file;
//! - a file's creation, rename or removal is durable only after `sync_dir` on
//!   its directory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod mem;
mod real;

pub use mem::{CrashMode, Fault, FaultOp, MemFs, CRASH_PAGE_SIZE};
pub use real::RealFs;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Create a new empty file for reading and writing, truncating any
    /// existing one.
    CreateTruncate,
}

/// An open file.
#[allow(clippy::len_without_is_empty)]
pub trait File: Send + Sync + std::fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Writes all of `bufs`, one after the other, at `offset`: the same
    /// bytes as one [`File::write_all_at`] of their concatenation. The
    /// default concatenates them (so a wrapper that checks or fails writes
    /// sees one write); the real file system writes them from where they
    /// are (`pwritev`), which saves copying long values into one buffer.
    fn write_all_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut all = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
        for b in bufs {
            all.extend_from_slice(b);
        }
        self.write_all_at(&all, offset)
    }

    /// Makes the file's data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;

    /// Makes the file's data and metadata durable (fsync).
    fn sync_all(&self) -> io::Result<()>;

    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;

    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`, failing with
    /// `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file ends before the requested range",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A held lock on a data directory; released when dropped.
pub trait DirLock: Send + Sync + std::fmt::Debug {}

/// A file system: the real one or a simulated one.
pub trait FileSystem: Send + Sync + std::fmt::Debug + 'static {
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>>;

    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Renames a file, replacing `to` if it exists (atomic on POSIX).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Lists the names (not paths) of the entries of a directory.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// True if the path exists.
    fn exists(&self, path: &Path) -> bool;

    /// Takes an exclusive lock on `path` (created if missing), failing with
    /// `WouldBlock` if another process or handle holds it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;

    /// Bytes of free space available to the process on the file system that
    /// holds `dir`, if known.
    fn available_space(&self, dir: &Path) -> Option<u64>;
}

/// Shared handle to a file system.
pub type FsRef = Arc<dyn FileSystem>;

/// `dir/name`.
pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
