//! The engine's one error type.
//!
//! Every variant is something a caller can act on: retry later (`Io` with a
//! transient cause, `NoSpace`), fix the request (`InvalidArgument`), stop and
//! investigate or run `escabelo repair` (`Corruption`), or give up
//! (`Locked`, `Closed`, `ReadOnly`).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by the storage engine.
///
/// Cloneable (the I/O cause is shared), because one failure can be the
/// answer to many requests: every write of a batch whose log write failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed. `context` names the operation and the file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path involved.
        context: String,
        /// The underlying operating-system error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The disk is full: the operation was not made durable and nothing was
    /// acknowledged. Writes work again once space is freed.
    #[error("disk full: {context}")]
    NoSpace {
        /// What was being done when space ran out.
        context: String,
    },
    /// Stored data failed a checksum or a structural check. Never returned as
    /// data: the read or the open fails instead.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        /// The file that holds the bad bytes.
        file: PathBuf,
        /// Byte offset in that file where the problem was found.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The request itself is invalid (key or value too large, empty key...).
    #[error("{0}")]
    InvalidArgument(String),
    /// Another process holds the lock on the data directory.
    #[error("data directory {0} is locked by another process")]
    Locked(PathBuf),
    /// A previous fatal error (a failed fsync) made the engine refuse writes
    /// until it is reopened; reads still work.
    #[error("engine is read-only after a fatal error: {0}")]
    ReadOnly(String),
    /// The engine has been closed.
    #[error("engine is closed")]
    Closed,
}

impl Error {
    /// Wraps an I/O error with context, mapping "no space left on device"
    /// (and quota exhaustion) to [`Error::NoSpace`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        let context = context.into();
        if is_no_space(&source) {
            Error::NoSpace { context }
        } else {
            Error::Io {
                context,
                source: Arc::new(source),
            }
        }
    }

    /// Builds a [`Error::Corruption`].
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True for errors that say stored data is damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}

/// True if the I/O error means the disk (or quota) is full.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

/// Extension to attach context to `io::Result`s.
pub trait IoContext<T> {
    /// Converts an `io::Error` into an [`Error`] with the given context.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
