//! `repair`: salvages every intact record into a fresh, consistent
//! database, and never brings back a value that was overwritten or
//! deleted.
//!
//! # Lost keys
//!
//! Damage can destroy a key's newest version while an older one survives
//! elsewhere (an older table, a lower level, an earlier log record).
//! Falling back to that older version would serve a value that was
//! overwritten, or one that was deleted. So repair works out, for every
//! damaged region, which keys its lost entries could have had, and treats
//! every such key as **lost** unless a source *newer than the damaged one*
//! holds an intact version of it:
//!
//! - a damaged table block: if the table still opens (footer, index and
//!   properties intact), the index gives the block's range exactly: after
//!   the previous block's last key, up to its own last key. Otherwise its
//!   keys lie strictly between the last intact entry before the damage and
//!   the first one after it (blocks are in key order;
//!   [`table::salvage_with_gaps`] says where the damage lies), and within
//!   the table's key range when the manifest gives it (smallest and largest
//!   key). Damage after the last intact data block (say, a damaged index)
//!   with a manifest thus covers nothing, the table's largest key being the
//!   last data key;
//! - a table the manifest names but that is missing: its whole key range;
//! - a damaged log record (damage followed by intact records; a torn tail
//!   is not damage, as for `Db::open`): its key is unknown (its checksum
//!   failed, so no byte of it can be trusted), so **every key** is
//!   possibly lost at that point of the log: only versions written after
//!   the damage (later in that log, or in a later log) survive;
//! - a damaged blob record: the pointer to it names its key, so a key
//!   whose newest entry points at a record that was not salvaged is lost.
//!
//! A lost key is left out of the rebuilt database (nothing older survives
//! there: every old file is moved aside), so it reads as absent, and it is
//! listed: the report names the first [`LOST_KEYS_SHOWN`] and writes every
//! one to `LOST-KEYS` in the directory the old files are moved to, one a
//! line (the key with non-printable bytes escaped as `\xNN`, a tab, why).
//! Keys that only the damaged region held (no older version anywhere)
//! are gone too but cannot be named.

use super::{describe, engine_files, load_manifest, lock_dir};
use crate::blob::{self, BlobReader, BlobWriter};
use crate::error::{Error, IoContext, Result};
use crate::fs::OpenMode;
use crate::limits::KEY_LEN_MAX;
use crate::manifest::{set_current, BlobEntry, ManifestWriter, TableEntry, VersionEdit};
use crate::options::Options;
use crate::table::{self, SeqRange, Table, TableBuilder};
use crate::types::{BlobRef, Value};
use crate::version::{
    blob_name, log_name, manifest_name, parse_file_name, table_name, FileKind, NUM_LEVELS,
};
use crate::wal::{ReadMode, WalReader};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Bound;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lost keys named in the report itself, at most (all of them go to the
/// `LOST-KEYS` file).
pub const LOST_KEYS_SHOWN: usize = 100;

/// Name of the file listing every lost key, in the directory the old files
/// are moved to.
pub const LOST_KEYS_FILE: &str = "LOST-KEYS";

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Live entries written to the rebuilt database.
    pub salvaged_entries: u64,
    /// Keys left out because their newest version may have been lost (see
    /// the module doc): in a damaged table block, a missing table or a
    /// damaged log record while an older version survived, or in a blob
    /// record that could not be salvaged; also keys of invalid length.
    /// Keys that nothing intact mentions cannot be counted; see
    /// `damaged_blocks` and `skipped_bytes`.
    pub lost_entries: u64,
    /// Damaged table blocks skipped.
    pub damaged_blocks: u64,
    /// Bytes of blob files and logs that belonged to no intact record.
    pub skipped_bytes: u64,
    /// Files found damaged, each with what was wrong.
    pub damaged_files: Vec<String>,
    /// Remarks: how the age of entries was decided, files not salvaged,
    /// the key ranges whose newest versions may have been lost.
    pub notes: Vec<String>,
    /// The first [`LOST_KEYS_SHOWN`] lost keys, each with why.
    pub lost_keys: Vec<String>,
    /// The file listing every lost key (see the module doc), if any was
    /// lost.
    pub lost_keys_file: Option<PathBuf>,
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
        if let Some(p) = &self.lost_keys_file {
            if self.lost_entries > self.lost_keys.len() as u64 {
                writeln!(
                    f,
                    "lost     ... {} more; every lost key is listed in {}",
                    self.lost_entries - self.lost_keys.len() as u64,
                    p.display()
                )?;
            } else {
                writeln!(f, "lost     keys listed in {}", p.display())?;
            }
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

/// The newest thing known of a key: an intact entry, or the mark that its
/// newest version may have been lost (an index into [`Lost::why`]).
#[derive(Debug, Clone)]
enum Slot {
    Entry(Value),
    Lost(usize),
}

/// A key range whose newest versions may have been lost, as new as the
/// damaged source.
#[derive(Debug)]
struct LostRange {
    lo: Bound<Bytes>,
    hi: Bound<Bytes>,
    at: Newness,
    why: usize,
}

/// Lost keys and why, collected while folding.
#[derive(Debug, Default)]
struct Lost {
    /// Reasons, indexed by [`Slot::Lost`] and [`LostRange::why`].
    why: Vec<String>,
    ranges: Vec<LostRange>,
    /// Every lost key, with its reason, in the order found.
    keys: Vec<(Bytes, String)>,
}

impl Lost {
    fn range(&mut self, lo: Bound<Bytes>, hi: Bound<Bytes>, at: Newness, why: String) {
        self.why.push(why);
        self.ranges.push(LostRange {
            lo,
            hi,
            at,
            why: self.why.len() - 1,
        });
    }
}

/// True if the range holds no key (so `BTreeMap::range` would panic).
fn is_empty_range(lo: &Bound<Bytes>, hi: &Bound<Bytes>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

/// `key` as text for the report: printable ASCII kept, other bytes as
/// `\xNN`.
fn show_key(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

fn show_bound(b: &Bound<Bytes>, below: bool) -> String {
    match (b, below) {
        (Bound::Unbounded, _) => String::new(),
        (Bound::Included(k), true) => format!(" from \"{}\"", show_key(k)),
        (Bound::Excluded(k), true) => format!(" after \"{}\"", show_key(k)),
        (Bound::Included(k), false) => format!(" up to \"{}\"", show_key(k)),
        (Bound::Excluded(k), false) => format!(" before \"{}\"", show_key(k)),
    }
}

/// Salvages every intact record of a closed database into a fresh,
/// consistent one, in the spirit of LevelDB's `RepairDB`, except that a
/// key whose newest version may have been lost is dropped rather than
/// resurrected from an older version (see the module doc).
///
/// Takes the directory lock (fails with [`Error::Locked`] if the server
/// runs). Then:
///
/// 1. Reads the intact entries of every table ([`table::salvage_with_gaps`]),
///    the intact records of every log ([`ReadMode::Salvage`], the log number
///    taken from the file name) and of every blob file ([`blob::salvage`]),
///    noting the key ranges whose entries were lost (module doc).
/// 2. Keeps the newest entry of each key. **Which entry is newest:** logs
///    are newer than tables, a higher log number is newer, and within a log
///    a later record is newer. If `CURRENT` and the manifest are readable,
///    they decide the rest exactly as the engine does: only the files they
///    name are salvaged (plus logs not older than the manifest's log
///    number; other files are leftovers `Db::open` would delete), a table at
///    a lower level is newer, and within level 0 a higher file number is
///    newer. Otherwise every file in the directory is salvaged and tables
///    are ordered by the sequence ranges in their properties
///    ([`SeqRange`]): of two tables holding a key, the one whose whole
///    range lies above the other's holds the newer version; if the ranges
///    overlap (or a table's properties are unreadable, or both are format
///    version 1 tables), neither is trusted and the key is **lost** unless
///    a log holds it. (File numbers cannot order them: a compaction output
///    gets a higher number than a level-0 table flushed while it ran, and
///    only the manifest records levels.) A table the manifest does not
///    name and a log it calls flushed are not salvaged when it is readable;
///    without it, a flushed log left behind by a crash counts as newer than
///    every table.
/// 3. Marks lost every key in a lost range whose newest intact entry is
///    older than the damaged source, and every key whose newest entry
///    points to a blob record that was not salvaged. Drops lost keys and
///    keys whose newest entry is a tombstone.
/// 4. Writes the survivors, in key order, to new tables at the last level
///    (their sequence range reaching past every salvaged one; split at [`Options::table_file_size`]) with values of at least
///    [`Options::blob_threshold`] bytes in new blob files (split at
///    [`Options::blob_file_size`]), all fsynced, then a new manifest holding
///    one snapshot edit.
/// 5. Moves every old engine file (tables, blob files, logs, manifests,
///    temporaries, a copy of `CURRENT`) into `lost/<unix-time>/` under the
///    data directory (never deleting anything), writes the list of lost
///    keys there, then points `CURRENT` at the new manifest. `Db::open`
///    then returns every salvaged entry.
///
/// Memory: the newest entry of every key (with inline values), the lost
/// keys and the referenced blob values are held in memory at once; fine for
/// a repair tool on a database that fits in memory, not beyond.
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
    // With a manifest: a lower level is newer, then a higher number (level
    // 0). Without one, see `Age::Seqs`.
    let table_newness = |n: u64, level: u32| -> Newness {
        (
            1,
            (NUM_LEVELS as u64).saturating_sub(u64::from(level)),
            n,
            0,
        )
    };

    // What to salvage, and the highest file number in use.
    let mut max_number = fold.as_ref().map_or(0, |f| f.next_file);
    let mut tables: Vec<(u64, Option<TableEntry>)> = Vec::new();
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
                        Some(t) => tables.push((n, Some(t.clone()))),
                        None => r
                            .notes
                            .push(format!("{name}: not live (a leftover), not salvaged")),
                    },
                    None => tables.push((n, None)),
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
    let mut lost = Lost::default();
    if let Some(f) = &fold {
        for (n, t) in &f.tables {
            if !names.contains(&table_name(*n)) {
                r.damaged_files.push(format!(
                    "{}: named by the manifest but missing",
                    table_name(*n)
                ));
                if t.entries > 0 {
                    lost.range(
                        Bound::Included(t.smallest.clone()),
                        Bound::Included(t.largest.clone()),
                        table_newness(*n, t.level),
                        format!("{} is missing", table_name(*n)),
                    );
                }
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

    // 1-2: the newest entry of every key, and the lost ranges.
    let mut newest: BTreeMap<Bytes, (Newness, Slot)> = BTreeMap::new();
    // Reason (an index into `lost.why`) for keys that two tables without a
    // manifest hold with overlapping sequence ranges.
    let mut unordered: Option<usize> = None;
    // The highest sequence number of a readable table: the rebuilt tables'
    // range reaches past it (and past the salvaged log records), so that
    // the repaired database's next writes are newer than all of them.
    let mut max_seq = 0u64;
    let mut keep = |key: Bytes, at: Newness, value: Value, lost: &mut Lost| {
        let Some(old) = newest.get_mut(&key) else {
            newest.insert(key, (at, Slot::Entry(value)));
            return;
        };
        if fold.is_none() && at.0 == 1 && old.0 .0 == 1 {
            // Two tables without a manifest: `(1, 0, min_seq, max_seq)`.
            let (lo, hi, old_lo, old_hi) = (at.2, at.3, old.0 .2, old.0 .3);
            if lo > old_hi {
                *old = (at, Slot::Entry(value));
            } else if old_lo <= hi {
                // Either may hold the newer version: the key is lost
                // unless something newer than both holds it.
                let why = *unordered.get_or_insert_with(|| {
                    lost.why.push(
                        "two tables hold it and their sequence ranges overlap: with no \
                         readable manifest, which version is newer is unknown"
                            .into(),
                    );
                    lost.why.len() - 1
                });
                *old = ((1, 0, lo.max(old_lo), hi.max(old_hi)), Slot::Lost(why));
            }
            return;
        }
        if old.0 < at {
            *old = (at, Slot::Entry(value));
        }
    };
    for (n, entry) in &tables {
        let n = *n;
        let name = table_name(n);
        let path = dir.join(&name);
        // How new this table's entries are (`at`), and how new an entry
        // must be to stand for a key in a range this table lost (`lost_at`).
        let seqs = Table::open(fs, &path, n).ok().map(|t| t.seqs());
        if let Some(s) = seqs {
            max_seq = max_seq.max(s.max);
        }
        let (at, lost_at) = match entry {
            Some(t) => (table_newness(n, t.level), table_newness(n, t.level)),
            None => {
                // No manifest: the table's sequence range, unknown (so
                // overlapping every other) if its properties are unreadable.
                let s = seqs.unwrap_or(SeqRange {
                    min: 0,
                    max: u64::MAX,
                });
                ((1, 0, s.min, s.max), (1, 0, s.max.saturating_add(1), 0))
            }
        };
        let got = table::salvage_with_gaps(fs, &path)?;
        let damaged = got.damaged;
        if damaged > 0 {
            r.damaged_blocks += damaged;
            r.damaged_files.push(format!(
                "{name}: {damaged} damaged blocks skipped, {} entries salvaged",
                got.entries.len()
            ));
        } else if let Err(e) = Table::open(fs, &path, n).and_then(|t| t.verify()) {
            r.damaged_files.push(format!(
                "{}; every data block intact, {} entries salvaged",
                describe(&e, dir),
                got.entries.len()
            ));
        }
        // The damaged blocks' key ranges: from the index if the table opens
        // (exact), else from the intact entries around the damage.
        let by_index = match damaged {
            0 => None,
            _ => match Table::open(fs, &path, n) {
                Ok(t) => Some(t.unreadable_blocks()?),
                Err(_) => None,
            },
        };
        for (prev, last) in by_index.iter().flatten() {
            let lo = match (prev, entry) {
                (Some(k), _) => Bound::Excluded(k.clone()),
                (None, Some(t)) => Bound::Included(t.smallest.clone()),
                (None, None) => Bound::Unbounded,
            };
            let hi = Bound::Included(last.clone());
            if is_empty_range(&lo, &hi) {
                continue;
            }
            let why = format!(
                "{name}: keys{}{} may have lost their newest version (damaged block)",
                show_bound(&lo, true),
                show_bound(&hi, false)
            );
            lost.range(lo, hi, lost_at, why);
        }
        for &g in got.gaps.iter().filter(|_| by_index.is_none()) {
            let lo = match g.checked_sub(1).and_then(|i| got.entries.get(i)) {
                Some((k, _)) => Bound::Excluded(k.clone()),
                None => match entry {
                    Some(t) if t.entries > 0 => Bound::Included(t.smallest.clone()),
                    _ => Bound::Unbounded,
                },
            };
            let hi = match got.entries.get(g) {
                Some((k, _)) => Bound::Excluded(k.clone()),
                None => match entry {
                    Some(t) if t.entries > 0 => Bound::Included(t.largest.clone()),
                    _ => Bound::Unbounded,
                },
            };
            if entry.as_ref().is_some_and(|t| t.entries == 0) || is_empty_range(&lo, &hi) {
                continue;
            }
            let why = format!(
                "{name}: keys{}{} may have lost their newest version (damaged block)",
                show_bound(&lo, true),
                show_bound(&hi, false)
            );
            lost.range(lo, hi, lost_at, why);
        }
        for (key, value) in got.entries {
            keep(key, at, value, &mut lost);
        }
    }
    for &n in &logs {
        let name = log_name(n);
        let mut reader = WalReader::open(fs, &dir.join(&name), n, ReadMode::Salvage)?;
        let mut seq = 0u64;
        loop {
            let skipped_before = reader.skipped_bytes();
            match reader.next_record() {
                Ok(Some(rec)) => {
                    if reader.skipped_bytes() > skipped_before {
                        lost.range(
                            Bound::Unbounded,
                            Bound::Unbounded,
                            (2, n, seq, 1),
                            format!(
                                "{name}: damaged records before record {}: every key \
                                 not written again after them may have lost its newest version",
                                seq + 1
                            ),
                        );
                    }
                    seq += 1;
                    max_seq = max_seq.saturating_add(1);
                    keep(rec.key, (2, n, seq, 0), rec.value, &mut lost);
                }
                Ok(None) => {
                    // Damage skipped on the way to the end (the last
                    // records of a sealed log, before its end marker).
                    if reader.skipped_bytes() > skipped_before {
                        lost.range(
                            Bound::Unbounded,
                            Bound::Unbounded,
                            (2, n, seq, 1),
                            format!(
                                "{name}: damaged records after record {seq}: every key \
                                 not written again later may have lost its newest version"
                            ),
                        );
                    }
                    break;
                }
                Err(e) if e.is_corruption() => {
                    r.damaged_files.push(describe(&e, dir));
                    lost.range(
                        Bound::Unbounded,
                        Bound::Unbounded,
                        (2, n, seq, 1),
                        format!(
                            "{name}: unreadable after record {seq}: every key not written \
                             again later may have lost its newest version"
                        ),
                    );
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

    // 3: keys whose newest version may be in a lost range.
    for range in &lost.ranges {
        if is_empty_range(&range.lo, &range.hi) {
            continue;
        }
        let mut count = 0u64;
        for (_, slot) in newest.range_mut((range.lo.clone(), range.hi.clone())) {
            if slot.0 < range.at {
                *slot = (range.at, Slot::Lost(range.why));
                count += 1;
            }
        }
        r.notes.push(format!(
            "{}; {count} keys with only older versions left out",
            lost.why[range.why]
        ));
    }

    // Blob records that the surviving entries need.
    let needed: HashSet<(u64, u64)> = newest
        .values()
        .filter_map(|(_, v)| match v {
            Slot::Entry(Value::Blob(p)) => Some((p.file, p.offset)),
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
    let mut out = Outputs {
        seqs: SeqRange {
            min: 0,
            max: max_seq,
        },
        ..Outputs::default()
    };
    let written = write_all(
        opts,
        newest,
        &mut records,
        &mut next,
        &mut out,
        &mut lost,
        &mut r.salvaged_entries,
    );
    for (key, why) in &lost.keys {
        r.lost_entries += 1;
        if r.lost_keys.len() < LOST_KEYS_SHOWN {
            r.lost_keys.push(format!("\"{}\": {why}", show_key(key)));
        }
    }
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
    let lost_to = lost_dir(opts)?;
    fs.create_dir_all(&lost_to)
        .ctx(|| format!("create {}", lost_to.display()))?;
    for name in &names {
        if name == "CURRENT" {
            continue;
        }
        let from = dir.join(name);
        let to = lost_to.join(name);
        fs.rename(&from, &to)
            .ctx(|| format!("move {} to {}", from.display(), to.display()))?;
        r.moved_files.push(name.clone());
    }
    if names.iter().any(|n| n == "CURRENT") {
        copy_file(opts, &dir.join("CURRENT"), &lost_to.join("CURRENT"))?;
        r.moved_files.push("CURRENT".into());
    }
    if !lost.keys.is_empty() {
        let path = lost_to.join(LOST_KEYS_FILE);
        write_lost_keys(opts, &path, &lost.keys)?;
        r.lost_keys_file = Some(path);
    }
    fs.sync_dir(&lost_to)
        .ctx(|| format!("sync directory {}", lost_to.display()))?;
    if let Some(parent) = lost_to.parent() {
        fs.sync_dir(parent)
            .ctx(|| format!("sync directory {}", parent.display()))?;
    }
    fs.sync_dir(dir)
        .ctx(|| format!("sync directory {}", dir.display()))?;
    set_current(fs, dir, &manifest_name(manifest_number))?;
    r.moved_aside_to = lost_to;
    tracing::info!(
        dir = %dir.display(),
        salvaged = r.salvaged_entries,
        lost = r.lost_entries,
        "database repaired"
    );
    Ok(r)
}

/// Writes every lost key, one a line (escaped key, tab, reason), fsynced.
/// Written in chunks, so the text is never held whole.
fn write_lost_keys(opts: &Options, path: &std::path::Path, keys: &[(Bytes, String)]) -> Result<()> {
    /// Bytes buffered before a write.
    const CHUNK: usize = 1 << 20;
    let f = opts
        .fs
        .open(path, OpenMode::CreateTruncate)
        .ctx(|| format!("create {}", path.display()))?;
    let mut buf = String::new();
    let mut at = 0u64;
    for (i, (key, why)) in keys.iter().enumerate() {
        buf.push_str(&show_key(key));
        buf.push('\t');
        buf.push_str(why);
        buf.push('\n');
        if buf.len() >= CHUNK || i + 1 == keys.len() {
            f.write_all_at(buf.as_bytes(), at)
                .ctx(|| format!("write {}", path.display()))?;
            at += buf.len() as u64;
            buf.clear();
        }
    }
    f.sync_all().ctx(|| format!("sync {}", path.display()))
}

/// Files written so far by the rebuild.
#[derive(Default)]
struct Outputs {
    /// The sequence range every rebuilt table records.
    seqs: SeqRange,
    tables: Vec<TableEntry>,
    blobs: Vec<BlobEntry>,
    paths: Vec<PathBuf>,
}

/// Writes every surviving entry to new tables and blob files, fsynced;
/// records the keys left out in `lost.keys`.
fn write_all(
    opts: &Options,
    newest: BTreeMap<Bytes, (Newness, Slot)>,
    records: &mut HashMap<(u64, u64), (BlobRef, Bytes, Bytes)>,
    next: &mut u64,
    out: &mut Outputs,
    lost: &mut Lost,
    salvaged: &mut u64,
) -> Result<()> {
    let fs = &opts.fs;
    let dir = &opts.dir;
    let level = (NUM_LEVELS - 1) as u32;
    let mut table: Option<TableBuilder> = None;
    let mut blob: Option<BlobWriter> = None;
    for (key, (_, slot)) in newest {
        let value = match slot {
            Slot::Lost(why) => {
                let why = lost.why[why].clone();
                lost.keys.push((key, why));
                continue;
            }
            Slot::Entry(v) => v,
        };
        let bytes = match value {
            Value::Tombstone => continue,
            _ if key.is_empty() || key.len() > KEY_LEN_MAX => {
                lost.keys.push((key, "invalid key length".into()));
                continue;
            }
            Value::Inline(v) => v,
            Value::Blob(p) => match records.remove(&(p.file, p.offset)) {
                Some((got, k, v)) if got.len == p.len && got.checksum == p.checksum && k == key => {
                    v
                }
                _ => {
                    let why = format!(
                        "its value in {} at offset {} was not salvaged",
                        blob_name(p.file),
                        p.offset
                    );
                    lost.keys.push((key, why));
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
                let mut t = TableBuilder::create(fs, &path, n)?;
                t.note_seqs(out.seqs);
                table.insert(t)
            }
        };
        t.add(&key, &stored)?;
        *salvaged += 1;
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
