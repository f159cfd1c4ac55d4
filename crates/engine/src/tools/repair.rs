//! `repair`: salvages every intact record into a fresh, consistent
//! database.

use super::{describe, engine_files, load_manifest, lock_dir};
use crate::blob::{self, BlobReader, BlobWriter};
use crate::error::{Error, IoContext, Result};
use crate::fs::OpenMode;
use crate::limits::KEY_LEN_MAX;
use crate::manifest::{set_current, BlobEntry, ManifestWriter, TableEntry, VersionEdit};
use crate::options::Options;
use crate::table::{self, Table, TableBuilder};
use crate::types::{BlobRef, Value};
use crate::version::{
    blob_name, log_name, manifest_name, parse_file_name, table_name, FileKind, NUM_LEVELS,
};
use crate::wal::{ReadMode, WalReader};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Keys named in the report's list of lost entries, at most.
const LOST_KEYS_MAX: usize = 20;

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Live entries written to the rebuilt database.
    pub salvaged_entries: u64,
    /// Entries dropped because the newest version of their key points to a
    /// blob record that could not be salvaged (or holds an invalid key).
    /// Entries inside damaged table blocks or log records cannot be counted;
    /// see `damaged_blocks` and `skipped_bytes`.
    pub lost_entries: u64,
    /// Damaged table blocks skipped.
    pub damaged_blocks: u64,
    /// Bytes of blob files and logs that belonged to no intact record.
    pub skipped_bytes: u64,
    /// Files found damaged, each with what was wrong.
    pub damaged_files: Vec<String>,
    /// Remarks: how the age of entries was decided, files not salvaged.
    pub notes: Vec<String>,
    /// Some of the lost keys (at most 20).
    pub lost_keys: Vec<String>,
    /// The directory the old files were moved to (`lost/<unix-time>`).
    pub moved_aside_to: PathBuf,
    /// Names of the files moved there.
    pub moved_files: Vec<String>,
    /// Names of the files written (tables, blob files, the manifest).
    pub written_files: Vec<String>,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.damaged_files {
            writeln!(f, "damaged  {l}")?;
        }
        for l in &self.notes {
            writeln!(f, "note     {l}")?;
        }
        for k in &self.lost_keys {
            writeln!(f, "lost     key {k}")?;
        }
        writeln!(
            f,
            "moved    {} files to {}",
            self.moved_files.len(),
            self.moved_aside_to.display()
        )?;
        writeln!(f, "wrote    {}", self.written_files.join(" "))?;
        write!(
            f,
            "repaired: {} entries salvaged, {} lost, {} damaged table blocks, \
             {} bytes of blob/log records skipped, {} damaged files (kept in {})",
            self.salvaged_entries,
            self.lost_entries,
            self.damaged_blocks,
            self.skipped_bytes,
            self.damaged_files.len(),
            self.moved_aside_to.display()
        )
    }
}

/// How new an entry is; larger wins: (class, a, b, c).
type Newness = (u8, u64, u64, u64);

/// Salvages every intact record of a closed database into a fresh,
/// consistent one, as LevelDB's `RepairDB` does.
///
/// Takes the directory lock (fails with [`Error::Locked`] if the server
/// runs). Then:
///
/// 1. Reads the intact entries of every table ([`table::salvage`]), the
///    intact records of every log ([`ReadMode::Salvage`], the log number
///    taken from the file name) and of every blob file ([`blob::salvage`]).
/// 2. Keeps the newest entry of each key. **Which entry is newest:** logs
///    are newer than tables, a higher log number is newer, and within a log
///    a later record is newer. If `CURRENT` and the manifest are readable,
///    they decide the rest exactly as the engine does: only the files they
///    name are salvaged (plus logs not older than the manifest's log
///    number; other files are leftovers `Db::open` would delete), a table at
///    a lower level is newer, and within level 0 a higher file number is
///    newer. Otherwise every file in the directory is salvaged and a higher
///    table file number is newer (a compaction output can then wrongly win
///    over a level-0 table flushed while it ran: the manifest is the only
///    record of levels).
/// 3. Drops keys whose newest entry is a tombstone, and entries whose blob
///    pointer names a record that was not salvaged (counted as lost). A key
///    whose newest entry sat in a damaged block falls back to its next
///    newest intact entry, as in LevelDB.
/// 4. Writes the survivors, in key order, to new tables at the last level
///    (split at [`Options::table_file_size`]) with values of at least
///    [`Options::blob_threshold`] bytes in new blob files (split at
///    [`Options::blob_file_size`]), all fsynced, then a new manifest holding
///    one snapshot edit.
/// 5. Moves every old engine file (tables, blob files, logs, manifests,
///    temporaries, a copy of `CURRENT`) into `lost/<unix-time>/` under the
///    data directory (never deleting anything), then points `CURRENT` at
///    the new manifest. `Db::open` then returns every salvaged entry.
///
/// Memory: the newest entry of every key (with inline values) and the
/// referenced blob values are held in memory at once; fine for a repair
/// tool on a database that fits in memory, not beyond.
///
/// Crash safety: until `CURRENT` is replaced the old `CURRENT` names a
/// manifest that is either still there (nothing happened) or already moved
/// aside, in which case `Db::open` fails and running `repair` again
/// rebuilds from the new files (which have the highest numbers).
pub fn repair(opts: &Options) -> Result<RepairReport> {
    let _lock = lock_dir(opts)?;
    let fs = &opts.fs;
    let dir = &opts.dir;
    let names = engine_files(opts)?;
    let mut r = RepairReport::default();

    let fold = match load_manifest(opts) {
        Ok(f) => f,
        Err(e) => {
            r.damaged_files.push(describe(&e, dir));
            None
        }
    };
    match &fold {
        Some(f) => r.notes.push(format!(
            "{} is readable: it decides which files are live and the age of tables",
            f.manifest
        )),
        None => r.notes.push(
            "no readable manifest: every file salvaged, a higher file number is newer".into(),
        ),
    }

    // What to salvage, and the highest file number in use.
    let mut max_number = fold.as_ref().map_or(0, |f| f.next_file);
    let mut tables: Vec<(u64, Newness)> = Vec::new();
    let mut logs: Vec<u64> = Vec::new();
    let mut blob_files: Vec<u64> = Vec::new();
    for name in &names {
        let Some(kind) = parse_file_name(name) else {
            continue;
        };
        match kind {
            FileKind::Table(n) => {
                max_number = max_number.max(n);
                match &fold {
                    Some(f) => match f.tables.get(&n) {
                        Some(t) => tables.push((
                            n,
                            (
                                1,
                                (NUM_LEVELS as u64).saturating_sub(u64::from(t.level)),
                                n,
                                0,
                            ),
                        )),
                        None => r
                            .notes
                            .push(format!("{name}: not live (a leftover), not salvaged")),
                    },
                    None => tables.push((n, (1, 0, n, 0))),
                }
            }
            FileKind::Log(n) => {
                max_number = max_number.max(n);
                match &fold {
                    Some(f) if n < f.log_number => r
                        .notes
                        .push(format!("{name}: obsolete (already flushed), not salvaged")),
                    _ => logs.push(n),
                }
            }
            FileKind::Blob(n) => {
                max_number = max_number.max(n);
                blob_files.push(n);
            }
            FileKind::Manifest(n) => max_number = max_number.max(n),
            FileKind::Temp => {}
        }
    }
    if let Some(f) = &fold {
        for n in f.tables.keys() {
            if !names.contains(&table_name(*n)) {
                r.damaged_files.push(format!(
                    "{}: named by the manifest but missing",
                    table_name(*n)
                ));
            }
        }
        for n in f.blobs.keys() {
            if !names.contains(&blob_name(*n)) {
                r.damaged_files.push(format!(
                    "{}: named by the manifest but missing",
                    blob_name(*n)
                ));
            }
        }
    }

    // 1-2: the newest entry of every key.
    let mut newest: BTreeMap<Bytes, (Newness, Value)> = BTreeMap::new();
    let mut keep = |key: Bytes, at: Newness, value: Value| match newest.get_mut(&key) {
        Some(old) if old.0 >= at => {}
        Some(old) => *old = (at, value),
        None => {
            newest.insert(key, (at, value));
        }
    };
    for &(n, at) in &tables {
        let name = table_name(n);
        let path = dir.join(&name);
        let (entries, damaged) = table::salvage(fs, &path)?;
        if damaged > 0 {
            r.damaged_blocks += damaged;
            r.damaged_files.push(format!(
                "{name}: {damaged} damaged blocks skipped, {} entries salvaged",
                entries.len()
            ));
        } else if let Err(e) = Table::open(fs, &path, n).and_then(|t| t.verify()) {
            r.damaged_files.push(format!(
                "{}; every data block intact, {} entries salvaged",
                describe(&e, dir),
                entries.len()
            ));
        }
        for (key, value) in entries {
            keep(key, at, value);
        }
    }
    for &n in &logs {
        let name = log_name(n);
        let mut reader = WalReader::open(fs, &dir.join(&name), n, ReadMode::Salvage)?;
        let mut seq = 0u64;
        loop {
            match reader.next_record() {
                Ok(Some(rec)) => {
                    seq += 1;
                    keep(rec.key, (2, n, seq, 0), rec.value);
                }
                Ok(None) => break,
                Err(e) if e.is_corruption() => {
                    r.damaged_files.push(describe(&e, dir));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if reader.skipped_bytes() > 0 {
            r.skipped_bytes += reader.skipped_bytes();
            r.damaged_files.push(format!(
                "{name}: {} bytes of damaged records skipped, {seq} records salvaged",
                reader.skipped_bytes()
            ));
        }
    }

    // Blob records that the surviving entries need.
    let needed: HashSet<(u64, u64)> = newest
        .values()
        .filter_map(|(_, v)| match v {
            Value::Blob(p) => Some((p.file, p.offset)),
            _ => None,
        })
        .collect();
    let needed_files: HashSet<u64> = needed.iter().map(|&(f, _)| f).collect();
    let mut records: HashMap<(u64, u64), (BlobRef, Bytes, Bytes)> = HashMap::new();
    for &n in &blob_files {
        if !needed_files.contains(&n) {
            continue;
        }
        let name = blob_name(n);
        let path = dir.join(&name);
        let (found, skipped) = blob::salvage(fs, &path, n)?;
        if skipped > 0 {
            r.skipped_bytes += skipped;
            r.damaged_files.push(format!(
                "{name}: {skipped} bytes of damaged records skipped, {} records salvaged",
                found.len()
            ));
        } else if let Err(e) = BlobReader::open(fs, &path, n) {
            r.damaged_files.push(format!(
                "{}; every record intact, {} records salvaged",
                describe(&e, dir),
                found.len()
            ));
        }
        for (p, k, v) in found {
            if needed.contains(&(p.file, p.offset)) {
                records.insert((p.file, p.offset), (p, k, v));
            }
        }
    }
    drop(needed);

    // 3-4: write the survivors.
    let mut next = max_number + 1;
    let mut out = Outputs::default();
    let written = write_all(opts, newest, &mut records, &mut next, &mut out, &mut r);
    let manifest_number = next;
    let result = written.and_then(|()| {
        let edit = VersionEdit {
            log_number: Some(manifest_number + 1),
            next_file_number: Some(manifest_number + 1),
            added_tables: out.tables.clone(),
            added_blobs: out.blobs.clone(),
            ..VersionEdit::default()
        };
        let path = dir.join(manifest_name(manifest_number));
        out.paths.push(path.clone());
        ManifestWriter::create(fs, &path, &edit)?;
        fs.sync_dir(dir)
            .ctx(|| format!("sync directory {}", dir.display()))
    });
    if let Err(e) = result {
        // Nothing refers to the new files yet: remove them.
        for p in &out.paths {
            let _ = fs.remove_file(p);
        }
        return Err(e);
    }
    r.written_files = out
        .paths
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();

    // 5: move the old files aside, then switch CURRENT.
    let lost = lost_dir(opts)?;
    fs.create_dir_all(&lost)
        .ctx(|| format!("create {}", lost.display()))?;
    for name in &names {
        if name == "CURRENT" {
            continue;
        }
        let from = dir.join(name);
        let to = lost.join(name);
        fs.rename(&from, &to)
            .ctx(|| format!("move {} to {}", from.display(), to.display()))?;
        r.moved_files.push(name.clone());
    }
    if names.iter().any(|n| n == "CURRENT") {
        copy_file(opts, &dir.join("CURRENT"), &lost.join("CURRENT"))?;
        r.moved_files.push("CURRENT".into());
    }
    fs.sync_dir(&lost)
        .ctx(|| format!("sync directory {}", lost.display()))?;
    if let Some(parent) = lost.parent() {
        fs.sync_dir(parent)
            .ctx(|| format!("sync directory {}", parent.display()))?;
    }
    fs.sync_dir(dir)
        .ctx(|| format!("sync directory {}", dir.display()))?;
    set_current(fs, dir, &manifest_name(manifest_number))?;
    r.moved_aside_to = lost;
    tracing::info!(
        dir = %dir.display(),
        salvaged = r.salvaged_entries,
        lost = r.lost_entries,
        "database repaired"
    );
    Ok(r)
}

/// Files written so far by the rebuild.
#[derive(Default)]
struct Outputs {
    tables: Vec<TableEntry>,
    blobs: Vec<BlobEntry>,
    paths: Vec<PathBuf>,
}

/// Writes every surviving entry to new tables and blob files, fsynced.
fn write_all(
    opts: &Options,
    newest: BTreeMap<Bytes, (Newness, Value)>,
    records: &mut HashMap<(u64, u64), (BlobRef, Bytes, Bytes)>,
    next: &mut u64,
    out: &mut Outputs,
    r: &mut RepairReport,
) -> Result<()> {
    let fs = &opts.fs;
    let dir = &opts.dir;
    let level = (NUM_LEVELS - 1) as u32;
    let mut table: Option<TableBuilder> = None;
    let mut blob: Option<BlobWriter> = None;
    for (key, (_, value)) in newest {
        let bytes = match value {
            Value::Tombstone => continue,
            _ if key.is_empty() || key.len() > KEY_LEN_MAX => {
                lose(r, &key, "invalid key length");
                continue;
            }
            Value::Inline(v) => v,
            Value::Blob(p) => match records.remove(&(p.file, p.offset)) {
                Some((got, k, v)) if got.len == p.len && got.checksum == p.checksum && k == key => {
                    v
                }
                _ => {
                    lose(
                        r,
                        &key,
                        &format!(
                            "its value in {} at offset {} was not salvaged",
                            blob_name(p.file),
                            p.offset
                        ),
                    );
                    continue;
                }
            },
        };
        let stored = if opts.blob_threshold.is_some_and(|t| bytes.len() >= t) {
            let w = match &mut blob {
                Some(w) => w,
                None => {
                    let n = take(next);
                    let path = dir.join(blob_name(n));
                    out.paths.push(path.clone());
                    blob.insert(BlobWriter::create(fs, &path, n)?)
                }
            };
            let p = w.add(&key, &bytes)?;
            if w.size() >= opts.blob_file_size {
                if let Some(w) = blob.take() {
                    finish_blob(w, out)?;
                }
            }
            Value::Blob(p)
        } else {
            Value::Inline(bytes)
        };
        let t = match &mut table {
            Some(t) => t,
            None => {
                let n = take(next);
                let path = dir.join(table_name(n));
                out.paths.push(path.clone());
                table.insert(TableBuilder::create(fs, &path, n)?)
            }
        };
        t.add(&key, &stored)?;
        r.salvaged_entries += 1;
        if t.estimated_size() >= opts.table_file_size {
            if let Some(t) = table.take() {
                finish_table(t, level, out)?;
            }
        }
    }
    if let Some(w) = blob.take() {
        finish_blob(w, out)?;
    }
    if let Some(t) = table.take() {
        finish_table(t, level, out)?;
    }
    Ok(())
}

fn take(next: &mut u64) -> u64 {
    let n = *next;
    *next += 1;
    n
}

fn finish_blob(w: BlobWriter, out: &mut Outputs) -> Result<()> {
    let m = w.finish()?;
    out.blobs.push(BlobEntry {
        number: m.number,
        file_size: m.file_size,
        records: m.records,
        record_bytes: m.record_bytes,
    });
    Ok(())
}

fn finish_table(t: TableBuilder, level: u32, out: &mut Outputs) -> Result<()> {
    let m = t.finish()?;
    out.tables.push(TableEntry {
        level,
        number: m.number,
        file_size: m.file_size,
        entries: m.entries,
        smallest: m.smallest,
        largest: m.largest,
    });
    Ok(())
}

fn lose(r: &mut RepairReport, key: &[u8], why: &str) {
    r.lost_entries += 1;
    if r.lost_keys.len() < LOST_KEYS_MAX {
        r.lost_keys
            .push(format!("{:?}: {why}", String::from_utf8_lossy(key)));
    }
}

/// `lost/<unix-time>` under the data directory, with a suffix if a repair
/// in the same second already used that name.
fn lost_dir(opts: &Options) -> Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = opts.dir.join("lost");
    let mut path = base.join(secs.to_string());
    let mut i = 1;
    while opts.fs.exists(&path) {
        path = base.join(format!("{secs}-{i}"));
        i += 1;
        if i > 1000 {
            return Err(Error::InvalidArgument(format!(
                "too many repairs in {}",
                base.display()
            )));
        }
    }
    Ok(path)
}

/// Copies a small file, fsynced.
fn copy_file(opts: &Options, from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let src = opts
        .fs
        .open(from, OpenMode::Read)
        .ctx(|| format!("open {}", from.display()))?;
    let len = src.len().ctx(|| format!("stat {}", from.display()))?;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0).min(1 << 20)];
    src.read_exact_at(&mut buf, 0)
        .ctx(|| format!("read {}", from.display()))?;
    let dst = opts
        .fs
        .open(to, OpenMode::CreateTruncate)
        .ctx(|| format!("create {}", to.display()))?;
    dst.write_all_at(&buf, 0)
        .ctx(|| format!("write {}", to.display()))?;
    dst.sync_all().ctx(|| format!("sync {}", to.display()))
}
