//! Offline maintenance tools for a closed database: [`check`] verifies every
//! checksum of every file without modifying anything, and [`repair`]
//! salvages every intact record into a fresh, consistent database (in the
//! spirit of LevelDB's `RepairDB`, but a key whose newest version may have
//! been lost is left out and listed, never resurrected from an older
//! version).
//!
//! [`oplog`] lists the operations still held in the write-ahead log.
//!
//! All take the data directory's lock (`oplog` unless it follows a live
//! log, read-only), so they fail with [`Error::Locked`] while a server has
//! the database open, and all do their I/O through [`Options::fs`].

mod check;
mod oplog;
mod repair;

pub use check::{check, CheckReport};
pub use oplog::{
    escape_key, oplog, write_oplog, OpEntry, OpKind, OplogEvent, OplogOptions, OplogSummary,
    TableOp, FOLLOW_POLL_INTERVAL, FOLLOW_RETRIES_MAX,
};
pub use repair::{repair, RepairReport, LOST_KEYS_FILE, LOST_KEYS_SHOWN};

use crate::error::{Error, IoContext, Result};
use crate::fs::DirLock;
use crate::manifest::{read_current, read_manifest, LiveFiles};
use crate::options::Options;
use crate::version::parse_file_name;
use std::path::Path;

/// Takes the data directory's lock; the directory must already exist (the
/// tools never create a database).
fn lock_dir(opts: &Options) -> Result<Box<dyn DirLock>> {
    let dir = &opts.dir;
    if !opts.fs.exists(dir) {
        return Err(Error::InvalidArgument(format!(
            "data directory {} does not exist",
            dir.display()
        )));
    }
    let path = dir.join("LOCK");
    opts.fs.lock(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked(dir.clone())
        } else {
            Error::io(format!("lock {}", path.display()), e)
        }
    })
}

/// The engine files of the directory (`CURRENT` included, `LOCK` and
/// unknown names excluded), sorted by name.
fn engine_files(opts: &Options) -> Result<Vec<String>> {
    let dir = &opts.dir;
    let mut names: Vec<String> = opts
        .fs
        .list_dir(dir)
        .ctx(|| format!("list {}", dir.display()))?
        .into_iter()
        .filter(|n| n == "CURRENT" || parse_file_name(n).is_some())
        .collect();
    names.sort();
    Ok(names)
}

/// Live files after folding every edit of a manifest (the same fold as
/// `Db::open`).
#[derive(Debug, Default)]
struct Fold {
    /// Name of the manifest file.
    manifest: String,
    /// What the manifest's edits describe.
    live: LiveFiles,
    /// The last record was torn (and dropped).
    torn: bool,
}

impl std::ops::Deref for Fold {
    type Target = LiveFiles;
    fn deref(&self) -> &LiveFiles {
        &self.live
    }
}

/// Reads `CURRENT` and the manifest it names. `Ok(None)` if there is no
/// `CURRENT`.
fn load_manifest(opts: &Options) -> Result<Option<Fold>> {
    let Some(name) = read_current(&opts.fs, &opts.dir)? else {
        return Ok(None);
    };
    let path = opts.dir.join(&name);
    if !opts.fs.exists(&path) {
        return Err(Error::corruption(
            opts.dir.join("CURRENT"),
            0,
            format!("CURRENT names {name}, which does not exist"),
        ));
    }
    let (edits, torn) = read_manifest(&opts.fs, &path)?;
    let mut fold = Fold {
        manifest: name,
        torn,
        live: LiveFiles::default(),
    };
    for e in edits {
        fold.live.apply(e).map_err(|e| match e {
            Error::Corruption { offset, reason, .. } => Error::corruption(&path, offset, reason),
            other => other,
        })?;
    }
    Ok(Some(fold))
}

/// A one-line description of an error: for corruption, the file (relative
/// to the data directory) and the offset.
fn describe(e: &Error, dir: &Path) -> String {
    match e {
        Error::Corruption {
            file,
            offset,
            reason,
        } => format!("{} at offset {offset}: {reason}", short_name(file, dir)),
        other => other.to_string(),
    }
}

/// `path` relative to `dir` if it is inside it.
fn short_name(path: &Path, dir: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}
