//! `check`: verifies every checksum of every file of a closed database.

use super::{describe, engine_files, load_manifest, lock_dir, Fold};
use crate::blob::{BlobReader, FOOTER_LEN, HEADER_LEN};
use crate::error::Result;
use crate::options::Options;
use crate::table::Table;
use crate::types::{BlobRef, Value};
use crate::version::{blob_name, log_name, parse_file_name, table_name, FileKind, NUM_LEVELS};
use crate::wal::{ReadMode, WalReader};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// Pointer problems reported per file before the rest are only counted.
const POINTER_PROBLEMS_MAX: u64 = 20;

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Files read and verified (`CURRENT`, the manifest, tables, blob files
    /// and logs), damaged ones included.
    pub files_checked: u64,
    /// Entries verified: table entries plus log records.
    pub entries: u64,
    /// Blob records verified.
    pub blob_records: u64,
    /// One line per file checked: its name, what it is and its verdict.
    pub files: Vec<String>,
    /// Every problem found; each names the file and, for damaged bytes, the
    /// offset.
    pub problems: Vec<String>,
    /// Engine files that the manifest does not name (outputs of interrupted
    /// work, obsolete logs); `Db::open` deletes them. Not problems.
    pub leftovers: Vec<String>,
    /// Remarks that are not problems (a torn last manifest record, a torn
    /// log tail: both normal after a crash).
    pub notes: Vec<String>,
}

impl CheckReport {
    /// True if no problem was found (leftovers and notes are not problems).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.files {
            writeln!(f, "file     {l}")?;
        }
        for l in &self.notes {
            writeln!(f, "note     {l}")?;
        }
        for l in &self.leftovers {
            writeln!(f, "leftover {l}")?;
        }
        for l in &self.problems {
            writeln!(f, "PROBLEM  {l}")?;
        }
        write!(
            f,
            "{}: {} files checked, {} entries, {} blob records, {} problems, {} leftovers",
            if self.is_ok() { "OK" } else { "DAMAGED" },
            self.files_checked,
            self.entries,
            self.blob_records,
            self.problems.len(),
            self.leftovers.len()
        )
    }
}

/// What is known of the records of one live blob file, for pointer checks.
struct BlobIndex {
    /// Record offset -> (length, checksum, hash of the key).
    records: HashMap<u64, (u32, u32, u64)>,
    /// Every record was read (the scan reached the footer).
    complete: bool,
    /// End of the record region, if the file opened.
    data_end: Option<u64>,
}

/// Verifies every checksum of every file of a closed database, without
/// modifying anything.
///
/// Takes the directory lock (fails with [`Error::Locked`] if the server
/// runs). Reads `CURRENT` and every edit of the manifest; every live table
/// ([`Table::verify`], plus its size, entry count and key range against the
/// manifest, and the level invariants); every live blob file (every record
/// read and verified, the footer's counts against the manifest); every log
/// segment the manifest still needs (every record, strictly). Cross-checks
/// that every blob pointer in the tables and logs names a live blob file
/// and a record that starts at that offset with that length, checksum and
/// key; that the files the manifest names exist; and lists files the
/// manifest does not name as leftovers.
///
/// If the manifest cannot be read, every table, blob file and log in the
/// directory is checked instead.
///
/// Damage is reported in the [`CheckReport`]; `Err` only if the directory
/// cannot be locked or listed.
pub fn check(opts: &Options) -> Result<CheckReport> {
    let _lock = lock_dir(opts)?;
    let dir = &opts.dir;
    let names = engine_files(opts)?;
    let mut r = CheckReport::default();

    // CURRENT and the manifest.
    let fold = match load_manifest(opts) {
        Ok(Some(fold)) => {
            r.files_checked += 2;
            r.files
                .push(format!("CURRENT: names {}: ok", fold.manifest));
            r.files.push(format!(
                "{}: manifest, {} edits, {} tables, {} blob files, logs from {}: ok",
                fold.manifest,
                fold.edits,
                fold.tables.len(),
                fold.blobs.len(),
                fold.log_number
            ));
            if fold.torn {
                r.notes.push(format!(
                    "{}: a torn last record was dropped (normal after a crash)",
                    fold.manifest
                ));
            }
            Some(fold)
        }
        Ok(None) => {
            r.problem("CURRENT: missing (not a database, or CURRENT was lost)".into());
            None
        }
        Err(e) => {
            r.files_checked += 1;
            r.problem(describe(&e, dir));
            None
        }
    };
    if fold.is_none() {
        r.notes.push(
            "no readable manifest: checking every table, blob file and log in the directory".into(),
        );
    }

    // Which files are live.
    let mut tables: Vec<(Option<u32>, u64)> = Vec::new();
    let mut blobs: Vec<u64> = Vec::new();
    let mut logs: Vec<u64> = Vec::new();
    let mut on_disk = BTreeSet::new();
    for name in &names {
        let Some(kind) = parse_file_name(name) else {
            continue;
        };
        on_disk.insert(name.clone());
        let leftover = match (kind, &fold) {
            (FileKind::Table(n), Some(f)) => !f.tables.contains_key(&n),
            (FileKind::Table(n), None) => {
                tables.push((None, n));
                false
            }
            (FileKind::Blob(n), Some(f)) => !f.blobs.contains_key(&n),
            (FileKind::Blob(n), None) => {
                blobs.push(n);
                false
            }
            (FileKind::Log(n), f) => {
                if f.as_ref().is_some_and(|f| n < f.log_number) {
                    true
                } else {
                    logs.push(n);
                    false
                }
            }
            (FileKind::Manifest(_), Some(f)) => *name != f.manifest,
            (FileKind::Manifest(_), None) => false,
            (FileKind::Temp, _) => true,
        };
        if leftover {
            r.leftovers.push(name.clone());
        }
    }
    if let Some(f) = &fold {
        tables = f
            .tables
            .values()
            .map(|t| (Some(t.level), t.number))
            .collect();
        blobs = f.blobs.keys().copied().collect();
        check_levels(f, &mut r);
    }
    logs.sort_unstable();

    // Blob files first, so pointers can be checked against their records.
    let mut index: HashMap<u64, BlobIndex> = HashMap::new();
    for &n in &blobs {
        let name = blob_name(n);
        if !on_disk.contains(&name) {
            r.problem(format!("{name}: named by the manifest but missing"));
            continue;
        }
        r.files_checked += 1;
        index.insert(n, check_blob(opts, fold.as_ref(), n, &mut r));
    }

    // Tables and logs; pointer failures are resolved at the end, because a
    // pointer shadowed by a newer entry for its key may name a blob file
    // that garbage collection has already deleted.
    let mut opened: Vec<OpenedTable> = Vec::new();
    for &(level, n) in &tables {
        let name = table_name(n);
        if !on_disk.contains(&name) {
            r.problem(format!("{name}: named by the manifest but missing"));
            continue;
        }
        r.files_checked += 1;
        if let Some(t) = check_table(opts, fold.as_ref(), level, n, &index, &mut r) {
            opened.push(t);
        }
    }
    let mut log_keys: HashMap<Bytes, (u64, u64)> = HashMap::new();
    let mut log_fails = Vec::new();
    for &n in &logs {
        r.files_checked += 1;
        check_log(opts, n, &index, &mut log_keys, &mut log_fails, &mut r);
    }

    let mut stale = 0u64;
    for t in &opened {
        let mut bad = 0u64;
        for (key, reason) in &t.bad_pointers {
            let newer = log_keys.contains_key(key)
                || opened
                    .iter()
                    .any(|o| o.newness > t.newness && matches!(o.table.get(key), Ok(Some(_))));
            if newer {
                stale += 1;
            } else {
                bad += 1;
                if bad <= POINTER_PROBLEMS_MAX {
                    r.problem(format!("{}: key {}: {reason}", t.name, show_key(key)));
                }
            }
        }
        more_pointers(&t.name, bad, &mut r);
    }
    let mut bad_in_logs: HashMap<u64, u64> = HashMap::new();
    for (n, offset, key, reason) in log_fails {
        if log_keys.get(&key).is_some_and(|&last| last > (n, offset)) {
            stale += 1;
            continue;
        }
        let bad = bad_in_logs.entry(n).or_insert(0);
        *bad += 1;
        if *bad <= POINTER_PROBLEMS_MAX {
            r.problem(format!(
                "{} at offset {offset}: key {}: {reason}",
                log_name(n),
                show_key(&key)
            ));
        }
    }
    for (n, bad) in bad_in_logs {
        more_pointers(&log_name(n), bad, &mut r);
    }
    if stale > 0 {
        r.notes.push(format!(
            "{stale} shadowed entries point to blob records that garbage collection \
             removed (harmless: a newer entry for the same key exists)"
        ));
    }
    Ok(r)
}

/// A table's key range and number.
type Span<'a> = (&'a [u8], &'a [u8], u64);

/// Levels above 0 must hold disjoint key ranges; levels must exist.
fn check_levels(f: &Fold, r: &mut CheckReport) {
    let mut by_level: Vec<Vec<Span<'_>>> = vec![Vec::new(); NUM_LEVELS];
    for t in f.tables.values() {
        match by_level.get_mut(t.level as usize) {
            Some(l) => l.push((t.smallest.as_ref(), t.largest.as_ref(), t.number)),
            None => r.problem(format!(
                "{}: table {} is at level {}, beyond the last level {}",
                f.manifest,
                t.number,
                t.level,
                NUM_LEVELS - 1
            )),
        }
    }
    for (level, l) in by_level.iter_mut().enumerate().skip(1) {
        l.sort();
        for w in l.windows(2) {
            if w[0].1 >= w[1].0 {
                r.problem(format!(
                    "{}: tables {} and {} overlap at level {level}",
                    f.manifest, w[0].2, w[1].2
                ));
            }
        }
    }
}

fn check_blob(opts: &Options, fold: Option<&Fold>, n: u64, r: &mut CheckReport) -> BlobIndex {
    let name = blob_name(n);
    let path = opts.dir.join(&name);
    let mut idx = BlobIndex {
        records: HashMap::new(),
        complete: false,
        data_end: None,
    };
    let reader = match BlobReader::open(&opts.fs, &path, n) {
        Ok(b) => b,
        Err(e) => {
            r.files.push(format!("{name}: blob file: DAMAGED"));
            r.problem(describe(&e, &opts.dir));
            return idx;
        }
    };
    let meta = reader.meta();
    idx.data_end = Some(meta.file_size.saturating_sub(FOOTER_LEN));
    let mut ok = true;
    if let Some(entry) = fold.and_then(|f| f.blobs.get(&n)) {
        if (entry.file_size, entry.records, entry.record_bytes)
            != (meta.file_size, meta.records, meta.record_bytes)
        {
            ok = false;
            r.problem(format!(
                "{name}: the manifest says {} bytes, {} records, {} record bytes; the file says {}, {}, {}",
                entry.file_size, entry.records, entry.record_bytes,
                meta.file_size, meta.records, meta.record_bytes
            ));
        }
    }
    let mut count = 0u64;
    idx.complete = true;
    for item in reader.iter() {
        match item {
            Ok((p, key, _value)) => {
                count += 1;
                idx.records
                    .insert(p.offset, (p.len, p.checksum, xxh3_64(&key)));
            }
            Err(e) => {
                ok = false;
                idx.complete = false;
                r.problem(describe(&e, &opts.dir));
            }
        }
    }
    r.blob_records += count;
    r.files.push(format!(
        "{name}: blob file, {count} records, {} bytes: {}",
        meta.file_size,
        verdict(ok)
    ));
    idx
}

/// A table that opened, with the pointer failures of its entries.
struct OpenedTable {
    name: String,
    table: Arc<Table>,
    /// Larger is newer: level 0 before level 1..., and within level 0 a
    /// higher number. Without a manifest, the file number.
    newness: (u64, u64),
    bad_pointers: Vec<(Bytes, String)>,
}

fn check_table(
    opts: &Options,
    fold: Option<&Fold>,
    level: Option<u32>,
    n: u64,
    index: &HashMap<u64, BlobIndex>,
    r: &mut CheckReport,
) -> Option<OpenedTable> {
    let name = table_name(n);
    let path = opts.dir.join(&name);
    let level_txt = level.map_or(String::new(), |l| format!(" at level {l}"));
    let table = match Table::open(&opts.fs, &path, n) {
        Ok(t) => t,
        Err(e) => {
            r.files.push(format!("{name}: table{level_txt}: DAMAGED"));
            r.problem(describe(&e, &opts.dir));
            return None;
        }
    };
    let mut ok = true;
    if let Some(entry) = fold.and_then(|f| f.tables.get(&n)) {
        let meta = table.meta();
        if (
            entry.file_size,
            entry.entries,
            &entry.smallest,
            &entry.largest,
        ) != (meta.file_size, meta.entries, &meta.smallest, &meta.largest)
        {
            ok = false;
            r.problem(format!(
                "{name}: size, entry count or key range differ from the manifest's \
                 ({} bytes, {} entries in the manifest; {} bytes, {} entries in the file)",
                entry.file_size, entry.entries, meta.file_size, meta.entries
            ));
        }
    }
    match table.verify() {
        Ok(count) => r.entries += count,
        Err(e) => {
            ok = false;
            r.problem(describe(&e, &opts.dir));
        }
    }
    // Blob pointers (a damaged block, reported above, ends the scan).
    let mut bad_pointers = Vec::new();
    for item in table.iter() {
        match item {
            Ok((key, Value::Blob(p))) => {
                if let Some(reason) = check_pointer(&p, &key, index) {
                    bad_pointers.push((key, reason));
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    r.files.push(format!(
        "{name}: table{level_txt}, {} entries, {} bytes: {}",
        table.entries(),
        table.file_size(),
        verdict(ok)
    ));
    let newness = match level {
        Some(l) => ((NUM_LEVELS as u64).saturating_sub(u64::from(l)), n),
        None => (0, n),
    };
    Some(OpenedTable {
        name,
        table,
        newness,
        bad_pointers,
    })
}

/// A blob pointer failure in a log: (log number, offset, key, reason).
type LogFail = (u64, u64, Bytes, String);

fn check_log(
    opts: &Options,
    n: u64,
    index: &HashMap<u64, BlobIndex>,
    log_keys: &mut HashMap<Bytes, (u64, u64)>,
    fails: &mut Vec<LogFail>,
    r: &mut CheckReport,
) {
    let name = log_name(n);
    let path = opts.dir.join(&name);
    let mut reader = match WalReader::open(&opts.fs, &path, n, ReadMode::Strict) {
        Ok(w) => w,
        Err(e) => {
            r.files.push(format!("{name}: log: DAMAGED"));
            r.problem(describe(&e, &opts.dir));
            return;
        }
    };
    let mut ok = true;
    let mut count = 0u64;
    loop {
        match reader.next_record() {
            Ok(Some(rec)) => {
                count += 1;
                if let Value::Blob(p) = &rec.value {
                    if let Some(reason) = check_pointer(p, &rec.key, index) {
                        fails.push((n, rec.offset, rec.key.clone(), reason));
                    }
                }
                log_keys.insert(rec.key, (n, rec.offset));
            }
            Ok(None) => break,
            Err(e) => {
                ok = false;
                r.problem(describe(&e, &opts.dir));
                break;
            }
        }
    }
    let tail = reader.tail().clone();
    if tail.dropped_records > 0 || tail.dropped_bytes > 0 {
        r.notes.push(format!(
            "{name}: the unsynced tail of a crash would be dropped at offset {}: {} records, \
             {} bytes ({}; normal after a crash)",
            tail.bad_offset.unwrap_or(reader.end_offset()),
            tail.dropped_records,
            tail.dropped_bytes,
            tail.reason.as_deref().unwrap_or("bad record")
        ));
    }
    if tail.end_copy_damaged {
        // Damage all the same: a clean close writes both markers, so bytes
        // changed after it are reported, even where the records are intact
        // (the server opens and serves every record; the segment is
        // discarded at its next flush).
        ok = false;
        r.problem(format!(
            "{name}: the copy of the end marker at offset {} is missing or damaged \
             (the end marker before it and every record are intact)",
            reader.end_offset() + (crate::wal::END_MARKERS_LEN / 2) as u64
        ));
    }
    r.entries += count;
    let ended = if tail.sealed { ", closed cleanly" } else { "" };
    r.files.push(format!(
        "{name}: log, {count} records{ended}: {}",
        verdict(ok)
    ));
}

fn more_pointers(name: &str, bad: u64, r: &mut CheckReport) {
    if bad > POINTER_PROBLEMS_MAX {
        r.problem(format!(
            "{name}: {} more bad blob pointers not listed",
            bad - POINTER_PROBLEMS_MAX
        ));
    }
}

/// Why the pointer `p` for `key` is bad, if it is.
fn check_pointer(p: &BlobRef, key: &[u8], index: &HashMap<u64, BlobIndex>) -> Option<String> {
    let target = format!(
        "blob pointer to {} offset {} length {}",
        blob_name(p.file),
        p.offset,
        p.len
    );
    let Some(b) = index.get(&p.file) else {
        return Some(format!("{target}: the blob file is not live"));
    };
    match b.records.get(&p.offset) {
        Some(&(len, crc, key_hash)) => {
            if len != p.len || crc != p.checksum {
                Some(format!(
                    "{target}: the record there has length {len} and checksum {crc:#010x}, \
                     the pointer says checksum {:#010x}",
                    p.checksum
                ))
            } else if key_hash != xxh3_64(key) {
                Some(format!("{target}: the record there holds another key"))
            } else {
                None
            }
        }
        None if b.complete => Some(format!("{target}: no record starts there")),
        None => {
            // The file is damaged (already reported); check bounds only.
            let end = p.offset.checked_add(u64::from(p.len));
            let in_bounds = p.offset >= HEADER_LEN
                && match (end, b.data_end) {
                    (Some(e), Some(d)) => e <= d,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
            (!in_bounds).then(|| format!("{target}: outside the file's records"))
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "DAMAGED"
    }
}

/// A key for a report line: text if printable, else hex; long keys cut.
fn show_key(key: &[u8]) -> String {
    let cut = &key[..key.len().min(64)];
    let more = if key.len() > cut.len() { "..." } else { "" };
    if cut.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}{more}", String::from_utf8_lossy(cut))
    } else {
        let hex: String = cut.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}{more}")
    }
}
