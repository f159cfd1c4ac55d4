//! Versions: immutable snapshots of the set of live files, and the
//! super-version that readers pin (memtables plus a version).
//!
//! Level invariants: level 0 holds flushed memtables, possibly
//! overlapping, ordered newest first (a higher file number is newer,
//! because only flushes write level 0). Every other level holds files with
//! disjoint key ranges sorted by smallest key, and for any key every entry
//! in level `n` is newer than every entry in level `n + 1`.
//! [`Version::apply`] checks them on every edit (with the rules of
//! [`crate::manifest`]'s `apply_edit`, shared with the manifest fold).

use crate::blob::BlobReader;
use crate::error::{Error, Result};
use crate::manifest::{apply_edit, BlobEntry, EditTarget, TableEntry, VersionEdit};
use crate::memtable::Memtable;
use crate::table::Table;
use crate::types::{BlobRef, Value};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Number of levels, level 0 included.
pub const NUM_LEVELS: usize = 7;

/// File name of table number `n`.
pub fn table_name(n: u64) -> String {
    format!("{n:06}.sst")
}
/// File name of blob file number `n`.
pub fn blob_name(n: u64) -> String {
    format!("{n:06}.blob")
}
/// File name of log segment number `n`.
pub fn log_name(n: u64) -> String {
    format!("{n:06}.log")
}
/// File name of manifest number `n`.
pub fn manifest_name(n: u64) -> String {
    format!("MANIFEST-{n:06}")
}

/// What kind of engine file a directory entry is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `NNNNNN.sst`
    Table(u64),
    /// `NNNNNN.blob`
    Blob(u64),
    /// `NNNNNN.log`
    Log(u64),
    /// `MANIFEST-NNNNNN`
    Manifest(u64),
    /// Any `*.tmp`
    Temp,
}

/// Parses an engine file name.
pub fn parse_file_name(name: &str) -> Option<FileKind> {
    if name.ends_with(".tmp") {
        return Some(FileKind::Temp);
    }
    if let Some(n) = name.strip_prefix("MANIFEST-") {
        return n.parse().ok().map(FileKind::Manifest);
    }
    let (stem, ext) = name.split_once('.')?;
    let n: u64 = stem.parse().ok()?;
    match ext {
        "sst" => Some(FileKind::Table(n)),
        "blob" => Some(FileKind::Blob(n)),
        "log" => Some(FileKind::Log(n)),
        _ => None,
    }
}

/// A live blob file and what is known of its garbage.
#[derive(Debug, Clone)]
pub struct BlobFile {
    /// The open file.
    pub reader: Arc<BlobReader>,
    /// Its manifest entry.
    pub entry: BlobEntry,
    /// Dead record bytes known so far.
    pub garbage: u64,
}

impl BlobFile {
    /// Dead share of the file's record bytes.
    pub fn garbage_ratio(&self) -> f64 {
        if self.entry.record_bytes == 0 {
            1.0
        } else {
            self.garbage as f64 / self.entry.record_bytes as f64
        }
    }
}

/// A live table and its manifest entry.
#[derive(Debug, Clone)]
pub struct TableFile {
    /// The open table.
    pub table: Arc<Table>,
    /// Its manifest entry.
    pub entry: TableEntry,
}

/// An immutable set of live files.
#[derive(Debug, Clone, Default)]
pub struct Version {
    /// Tables per level (see the module doc for the order).
    pub levels: Vec<Vec<TableFile>>,
    /// Live blob files by number.
    pub blobs: BTreeMap<u64, BlobFile>,
    dir: PathBuf,
}

impl Version {
    /// An empty version for the database in `dir`.
    pub fn empty(dir: &Path) -> Version {
        Version {
            levels: vec![Vec::new(); NUM_LEVELS],
            blobs: BTreeMap::new(),
            dir: dir.to_path_buf(),
        }
    }

    /// A new version with `edit` applied (the semantics and the invariants
    /// checked are those of the manifest module's `apply_edit`, see
    /// [`crate::manifest`]). Files the edit adds must be in
    /// `opened_tables` / `opened_blobs`.
    ///
    /// An edit that breaks an invariant is a bug in the engine (a manifest
    /// that breaks one is refused earlier, when it is read): it panics in
    /// debug builds and is refused with [`Error::Corruption`] otherwise,
    /// before it reaches the manifest, and this version is unchanged.
    pub fn apply(
        &self,
        edit: &VersionEdit,
        opened_tables: &[Arc<Table>],
        opened_blobs: &[Arc<BlobReader>],
    ) -> Result<Version> {
        let mut next = Applying {
            v: self.clone(),
            tables: opened_tables,
            blobs: opened_blobs,
        };
        apply_edit(&mut next, edit)?;
        Ok(next.v)
    }

    fn sort_levels(&mut self) {
        if let Some(l0) = self.levels.first_mut() {
            l0.sort_by_key(|t| std::cmp::Reverse(t.entry.number));
        }
        for l in self.levels.iter_mut().skip(1) {
            l.sort_by(|a, b| a.entry.smallest.cmp(&b.entry.smallest));
        }
    }

    /// The edit that recreates this version from nothing (a manifest's
    /// first record).
    pub fn snapshot_edit(&self) -> VersionEdit {
        let mut e = VersionEdit::default();
        for l in &self.levels {
            e.added_tables.extend(l.iter().map(|t| t.entry.clone()));
        }
        for b in self.blobs.values() {
            e.added_blobs.push(b.entry.clone());
            if b.garbage > 0 {
                e.blob_garbage.push((b.entry.number, b.garbage));
            }
        }
        e
    }

    /// The newest entry for `key` in the tables (a tombstone included).
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        for t in &self.levels[0] {
            if key < t.entry.smallest.as_ref() || key > t.entry.largest.as_ref() {
                continue;
            }
            if let Some(v) = t.table.get(key)? {
                return Ok(Some(v));
            }
        }
        for level in &self.levels[1..] {
            let i = level.partition_point(|t| t.entry.largest.as_ref() < key);
            if let Some(t) = level.get(i) {
                if t.entry.smallest.as_ref() <= key {
                    if let Some(v) = t.table.get(key)? {
                        return Ok(Some(v));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Reads a separated value.
    pub fn read_blob(&self, r: &BlobRef, key: &[u8]) -> Result<Bytes> {
        match self.blobs.get(&r.file) {
            Some(b) => b.reader.get(r, key),
            None => Err(Error::corruption(
                self.dir.join(blob_name(r.file)),
                r.offset,
                "value points to a blob file that is not live",
            )),
        }
    }

    /// Tables at `level` whose key range meets `[smallest, largest]`.
    pub fn overlapping(&self, level: usize, smallest: &[u8], largest: &[u8]) -> Vec<TableFile> {
        self.levels[level]
            .iter()
            .filter(|t| {
                t.entry.largest.as_ref() >= smallest && t.entry.smallest.as_ref() <= largest
            })
            .cloned()
            .collect()
    }

    /// Bytes of tables at `level`.
    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|t| t.entry.file_size).sum()
    }

    /// Number of live tables.
    pub fn table_count(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A version being changed by an edit, with the files the edit adds.
struct Applying<'a> {
    v: Version,
    tables: &'a [Arc<Table>],
    blobs: &'a [Arc<BlobReader>],
}

impl EditTarget for Applying<'_> {
    fn table_entries(&self) -> Vec<&TableEntry> {
        self.v.levels.iter().flatten().map(|t| &t.entry).collect()
    }
    fn remove_table(&mut self, level: u32, number: u64) {
        if let Some(l) = self.v.levels.get_mut(level as usize) {
            l.retain(|t| t.entry.number != number);
        }
    }
    fn add_table(&mut self, e: &TableEntry) -> Result<()> {
        let table = self
            .tables
            .iter()
            .find(|t| t.number() == e.number)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("table {} not opened", e.number)))?;
        let level = self
            .v
            .levels
            .get_mut(e.level as usize)
            .ok_or_else(|| Error::InvalidArgument(format!("level {} out of range", e.level)))?;
        level.push(TableFile {
            table,
            entry: e.clone(),
        });
        Ok(())
    }
    fn has_blob(&self, number: u64) -> bool {
        self.v.blobs.contains_key(&number)
    }
    fn remove_blob(&mut self, number: u64) {
        self.v.blobs.remove(&number);
    }
    fn add_blob(&mut self, e: &BlobEntry) -> Result<()> {
        let reader = self
            .blobs
            .iter()
            .find(|b| b.number() == e.number)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("blob {} not opened", e.number)))?;
        self.v.blobs.insert(
            e.number,
            BlobFile {
                reader,
                entry: e.clone(),
                garbage: 0,
            },
        );
        Ok(())
    }
    fn blob_garbage_mut(&mut self, number: u64) -> Option<(&mut u64, u64)> {
        self.v
            .blobs
            .get_mut(&number)
            .map(|b| (&mut b.garbage, b.entry.record_bytes))
    }
    fn finish(&mut self) {
        self.v.sort_levels();
    }
    fn violation(&self, what: String) -> Error {
        debug_assert!(false, "an edit breaks the level invariants: {what}");
        tracing::error!(%what, "refusing an edit that breaks the level invariants");
        Error::corruption(
            self.v.dir.join("MANIFEST"),
            0,
            format!("edit refused, it breaks the level invariants: {what}"),
        )
    }
}

/// What a reader pins: the memtables and the version, consistent with each
/// other.
#[derive(Debug, Clone)]
pub struct SuperVersion {
    /// The active memtable.
    pub mem: Arc<Memtable>,
    /// Frozen memtables, newest first.
    pub imms: Vec<Arc<Memtable>>,
    /// The live files.
    pub version: Arc<Version>,
}

impl SuperVersion {
    /// The entry for `key` visible at snapshot `snap` (see
    /// [`crate::memtable`]), in memtables then tables.
    pub fn get_raw(&self, key: &[u8], snap: u64) -> Result<Option<Value>> {
        match self.find_mem(|m| m.get(key, snap)) {
            Some(v) => Ok(Some(v)),
            None => self.version.get(key),
        }
    }

    /// The entry for `key` visible at snapshot `snap`, in the memtables
    /// only, with whether an inline value holds a `\r`
    /// ([`Memtable::get_checked`]).
    pub fn get_mem(&self, key: &[u8], snap: u64) -> Option<(Value, Option<bool>)> {
        self.find_mem(|m| m.get_checked(key, snap))
    }

    /// The first answer of `f` over the memtables, active then frozen
    /// (newest first).
    fn find_mem<T>(&self, f: impl Fn(&Memtable) -> Option<T>) -> Option<T> {
        f(&self.mem).or_else(|| self.imms.iter().find_map(|m| f(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(parse_file_name(&table_name(12)), Some(FileKind::Table(12)));
        assert_eq!(parse_file_name(&blob_name(7)), Some(FileKind::Blob(7)));
        assert_eq!(
            parse_file_name(&log_name(1234567)),
            Some(FileKind::Log(1234567))
        );
        assert_eq!(
            parse_file_name(&manifest_name(3)),
            Some(FileKind::Manifest(3))
        );
        assert_eq!(parse_file_name("CURRENT.tmp"), Some(FileKind::Temp));
        assert_eq!(parse_file_name("LOCK"), None);
        assert_eq!(parse_file_name("x.sst"), None);
    }
}
