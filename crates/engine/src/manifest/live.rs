//! What a sequence of version edits describes: the live files.
//!
//! [`apply_edit`] is the one statement of what an edit means, and of the
//! invariants every edit must keep. Both readers of edits use it: the
//! manifest fold ([`LiveFiles`], for recovery and the offline tools) and
//! the engine's [`Version`](crate::version::Version).
//!
//! # Invariants checked on every edit
//!
//! - Every level named is below [`NUM_LEVELS`]; a deleted table is live at
//!   the level the edit names; an added table or blob file is not already
//!   live; a deleted blob file is live.
//! - Below level 0 the tables of a level have disjoint key ranges.
//! - Newer data lies in a higher level (level 0 above level 1 and so on;
//!   within level 0 a higher table number is newer). An edit that deletes
//!   tables and adds tables moves data from the highest level it deletes
//!   from (the newest data it takes, `src`) to the levels it adds to: for
//!   an added table at level `d`, no table left at a level strictly between
//!   `src` and `d` may overlap it (that table would then hold older data
//!   above newer, or newer below older); when level 0 is compacted, no
//!   level-0 table it leaves may be older than one it takes and overlap the
//!   output; and data from below level 0 may not move into level 0 over an
//!   overlapping level-0 table. Tables carry no sequence numbers, so this
//!   is all the data allows: an edit that only adds tables (a flush, a
//!   snapshot) is checked for ranges only.
//!
//! A violation read from a manifest is [`Error::Corruption`]; in the
//! running engine it is a bug (see `Version::apply`).

use super::{BlobEntry, TableEntry, VersionEdit};
use crate::error::{Error, Result};
use crate::version::NUM_LEVELS;
use std::collections::BTreeMap;

/// A set of live files that [`apply_edit`] can change. Implemented by
/// [`LiveFiles`] (manifest entries) and by the engine's version (open
/// files).
pub(crate) trait EditTarget {
    /// Every live table's entry.
    fn table_entries(&self) -> Vec<&TableEntry>;
    /// Removes a table known to be live at `level`.
    fn remove_table(&mut self, level: u32, number: u64);
    /// Adds a table (its level is in the entry).
    fn add_table(&mut self, e: &TableEntry) -> Result<()>;
    /// True if blob file `number` is live.
    fn has_blob(&self, number: u64) -> bool;
    /// Removes a live blob file.
    fn remove_blob(&mut self, number: u64);
    /// Adds a blob file with no dead bytes.
    fn add_blob(&mut self, e: &BlobEntry) -> Result<()>;
    /// A live blob file's dead byte count and its record bytes.
    fn blob_garbage_mut(&mut self, number: u64) -> Option<(&mut u64, u64)>;
    /// Called once all changes are made.
    fn finish(&mut self) {}
    /// The error for an edit that breaks an invariant.
    fn violation(&self, what: String) -> Error;
}

/// Applies one edit: checks it against the invariants (module doc), then
/// deletes tables, adds tables, deletes blob files, adds blob files, adds
/// `blob_garbage` and sets `blob_garbage_set` (dead bytes capped at the
/// file's record bytes; counts for files that are not live are ignored).
/// Nothing is changed if the check fails.
pub(crate) fn apply_edit(t: &mut impl EditTarget, e: &VersionEdit) -> Result<()> {
    if let Err(what) = check_edit(&*t, e) {
        return Err(t.violation(what));
    }
    for &(level, n) in &e.deleted_tables {
        t.remove_table(level, n);
    }
    for a in &e.added_tables {
        t.add_table(a)?;
    }
    for &n in &e.deleted_blobs {
        t.remove_blob(n);
    }
    for b in &e.added_blobs {
        t.add_blob(b)?;
    }
    for &(n, g) in &e.blob_garbage {
        if let Some((cur, cap)) = t.blob_garbage_mut(n) {
            *cur = cur.saturating_add(g).min(cap);
        }
    }
    for &(n, g) in &e.blob_garbage_set {
        if let Some((cur, cap)) = t.blob_garbage_mut(n) {
            *cur = g.min(cap);
        }
    }
    t.finish();
    Ok(())
}

fn overlaps(a: &TableEntry, b: &TableEntry) -> bool {
    a.entries > 0 && b.entries > 0 && a.smallest <= b.largest && b.smallest <= a.largest
}

/// Checks an edit against the live files before it; the reason if it
/// breaks an invariant.
fn check_edit(t: &impl EditTarget, e: &VersionEdit) -> std::result::Result<(), String> {
    let mut levels: Vec<Vec<&TableEntry>> = vec![Vec::new(); NUM_LEVELS];
    for f in t.table_entries() {
        match levels.get_mut(f.level as usize) {
            Some(l) => l.push(f),
            None => return Err(format!("table {} is at level {}", f.number, f.level)),
        }
    }
    // The highest level data is taken from, and the newest level-0 table.
    let mut src: Option<usize> = None;
    let mut newest_taken_l0 = 0u64;
    for &(level, n) in &e.deleted_tables {
        let l = level as usize;
        let files = levels
            .get_mut(l)
            .ok_or_else(|| format!("deletes table {n} at level {level}, out of range"))?;
        let i = files
            .iter()
            .position(|f| f.number == n)
            .ok_or_else(|| format!("deletes table {n} at level {level}, which is not there"))?;
        files.swap_remove(i);
        src = Some(src.map_or(l, |s| s.min(l)));
        if l == 0 {
            newest_taken_l0 = newest_taken_l0.max(n);
        }
    }
    for a in &e.added_tables {
        let d = a.level as usize;
        if d >= NUM_LEVELS {
            return Err(format!("adds table {} at level {}", a.number, a.level));
        }
        if levels.iter().flatten().any(|f| f.number == a.number) {
            return Err(format!("adds table {}, which is already live", a.number));
        }
        if a.entries > 0 && a.smallest > a.largest {
            return Err(format!(
                "adds table {} with smallest key > largest",
                a.number
            ));
        }
        if d > 0 {
            if let Some(f) = levels[d].iter().find(|f| overlaps(f, a)) {
                return Err(format!(
                    "adds table {} at level {d} overlapping table {} there",
                    a.number, f.number
                ));
            }
        }
        if let Some(s) = src {
            let (lo, hi) = (s.min(d), s.max(d));
            for (l, files) in levels.iter().enumerate().take(hi).skip(lo + 1) {
                if let Some(f) = files.iter().find(|f| overlaps(f, a)) {
                    return Err(format!(
                        "moves data from level {s} to level {d} (table {}) past table {} \
                         at level {l}, which overlaps it",
                        a.number, f.number
                    ));
                }
            }
            if s == 0 && d > 0 {
                if let Some(f) = levels[0]
                    .iter()
                    .find(|f| f.number < newest_taken_l0 && overlaps(f, a))
                {
                    return Err(format!(
                        "compacts level-0 table {newest_taken_l0} to level {d} but leaves \
                         the older level-0 table {} above it",
                        f.number
                    ));
                }
            }
            if d == 0 && s > 0 {
                if let Some(f) = levels[0].iter().find(|f| overlaps(f, a)) {
                    return Err(format!(
                        "moves data from level {s} into level 0 (table {}) over table {}",
                        a.number, f.number
                    ));
                }
            }
        }
        levels[d].push(a);
    }
    for &n in &e.deleted_blobs {
        if !t.has_blob(n) {
            return Err(format!("deletes blob file {n}, which is not live"));
        }
    }
    for b in &e.added_blobs {
        if t.has_blob(b.number) && !e.deleted_blobs.contains(&b.number) {
            return Err(format!(
                "adds blob file {}, which is already live",
                b.number
            ));
        }
    }
    Ok(())
}

/// The live files after applying edits in order. Recovery and the offline
/// tools both read a manifest through this, so they agree on its meaning.
#[derive(Debug, Clone)]
pub struct LiveFiles {
    /// Live tables by number.
    pub tables: BTreeMap<u64, TableEntry>,
    /// Live blob files by number.
    pub blobs: BTreeMap<u64, BlobEntry>,
    /// Dead record bytes per live blob file.
    pub blob_garbage: BTreeMap<u64, u64>,
    /// Log segments numbered below this are obsolete.
    pub log_number: u64,
    /// Next file number to allocate (at least 1).
    pub next_file: u64,
    /// Edits applied.
    pub edits: usize,
}

impl Default for LiveFiles {
    fn default() -> Self {
        LiveFiles {
            tables: BTreeMap::new(),
            blobs: BTreeMap::new(),
            blob_garbage: BTreeMap::new(),
            log_number: 0,
            next_file: 1,
            edits: 0,
        }
    }
}

impl LiveFiles {
    /// Applies one edit (see the module doc for what it means). An edit
    /// that breaks an invariant of the module doc is
    /// [`Error::Corruption`] (naming the edit by its position; the file
    /// named is `MANIFEST`, callers that know the file may say which) and
    /// changes nothing.
    pub fn apply(&mut self, e: VersionEdit) -> Result<()> {
        apply_edit(self, &e)?;
        self.edits += 1;
        if let Some(n) = e.log_number {
            self.log_number = n;
        }
        if let Some(n) = e.next_file_number {
            self.next_file = self.next_file.max(n);
        }
        Ok(())
    }
}

impl EditTarget for LiveFiles {
    fn table_entries(&self) -> Vec<&TableEntry> {
        self.tables.values().collect()
    }
    fn remove_table(&mut self, _level: u32, number: u64) {
        self.tables.remove(&number);
    }
    fn add_table(&mut self, e: &TableEntry) -> Result<()> {
        self.tables.insert(e.number, e.clone());
        Ok(())
    }
    fn has_blob(&self, number: u64) -> bool {
        self.blobs.contains_key(&number)
    }
    fn remove_blob(&mut self, number: u64) {
        self.blobs.remove(&number);
        self.blob_garbage.remove(&number);
    }
    fn add_blob(&mut self, e: &BlobEntry) -> Result<()> {
        self.blob_garbage.insert(e.number, 0);
        self.blobs.insert(e.number, e.clone());
        Ok(())
    }
    fn blob_garbage_mut(&mut self, number: u64) -> Option<(&mut u64, u64)> {
        let cap = self.blobs.get(&number)?.record_bytes;
        self.blob_garbage.get_mut(&number).map(|g| (g, cap))
    }
    fn violation(&self, what: String) -> Error {
        Error::corruption(
            "MANIFEST",
            0,
            format!(
                "edit {} breaks the level invariants: {what}",
                self.edits + 1
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn add_delete_and_garbage() {
        let mut l = LiveFiles::default();
        l.apply(VersionEdit {
            log_number: Some(4),
            next_file_number: Some(9),
            added_tables: vec![TableEntry {
                level: 0,
                number: 5,
                file_size: 1,
                entries: 1,
                smallest: Bytes::from_static(b"a"),
                largest: Bytes::from_static(b"b"),
            }],
            added_blobs: vec![BlobEntry {
                number: 6,
                file_size: 10,
                records: 1,
                record_bytes: 100,
            }],
            blob_garbage: vec![(6, 30)],
            ..Default::default()
        })
        .unwrap();
        l.apply(VersionEdit {
            blob_garbage: vec![(6, 90), (77, 5)],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(l.blob_garbage[&6], 100, "capped at the file's record bytes");
        l.apply(VersionEdit {
            blob_garbage_set: vec![(6, 10)],
            deleted_tables: vec![(0, 5)],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(l.blob_garbage[&6], 10);
        assert!(l.tables.is_empty());
        assert_eq!((l.log_number, l.next_file, l.edits), (4, 9, 3));
    }

    fn table(level: u32, number: u64, smallest: &str, largest: &str) -> TableEntry {
        TableEntry {
            level,
            number,
            file_size: 1,
            entries: 1,
            smallest: Bytes::copy_from_slice(smallest.as_bytes()),
            largest: Bytes::copy_from_slice(largest.as_bytes()),
        }
    }

    fn with(tables: Vec<TableEntry>) -> LiveFiles {
        let mut l = LiveFiles::default();
        l.apply(VersionEdit {
            added_tables: tables,
            ..Default::default()
        })
        .unwrap();
        l
    }

    fn refused(l: &mut LiveFiles, e: VersionEdit, what: &str) {
        let before = (l.tables.clone(), l.edits);
        match l.apply(e) {
            Err(Error::Corruption { reason, .. }) => {
                assert!(reason.contains(what), "{reason}")
            }
            other => panic!("expected corruption ({what}), got {other:?}"),
        }
        assert_eq!(
            (l.tables.clone(), l.edits),
            before,
            "a refused edit changed nothing"
        );
    }

    #[test]
    fn overlapping_tables_below_level_0_are_corruption() {
        let mut l = with(vec![table(1, 1, "a", "f")]);
        refused(
            &mut l,
            VersionEdit {
                added_tables: vec![table(1, 2, "f", "k")],
                ..Default::default()
            },
            "overlapping table 1",
        );
        // Level 0 may overlap.
        l.apply(VersionEdit {
            added_tables: vec![table(0, 3, "a", "z"), table(0, 4, "b", "c")],
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn bad_deletes_and_duplicates_are_corruption() {
        let mut l = with(vec![table(2, 1, "a", "f")]);
        let del = |level, n| VersionEdit {
            deleted_tables: vec![(level, n)],
            ..Default::default()
        };
        refused(&mut l, del(1, 1), "not there");
        refused(&mut l, del(2, 9), "not there");
        refused(&mut l, del(9, 1), "out of range");
        refused(
            &mut l,
            VersionEdit {
                added_tables: vec![table(3, 1, "x", "y")],
                ..Default::default()
            },
            "already live",
        );
        refused(
            &mut l,
            VersionEdit {
                added_tables: vec![table(7, 5, "x", "y")],
                ..Default::default()
            },
            "at level 7",
        );
        refused(
            &mut l,
            VersionEdit {
                deleted_blobs: vec![4],
                ..Default::default()
            },
            "blob file 4",
        );
        // A move to the next level is fine.
        l.apply(VersionEdit {
            deleted_tables: vec![(2, 1)],
            added_tables: vec![table(3, 1, "a", "f")],
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn moving_newer_data_past_older_data_is_corruption() {
        // Level 0 compacted to level 6 past an overlapping table at level 5:
        // what Db::compact did when the base level was below a non-empty
        // level.
        let mut l = with(vec![
            table(0, 10, "a", "c"),
            table(5, 4, "b", "d"),
            table(6, 2, "x", "z"),
        ]);
        refused(
            &mut l,
            VersionEdit {
                deleted_tables: vec![(0, 10)],
                added_tables: vec![table(6, 11, "a", "c")],
                ..Default::default()
            },
            "past table 4 at level 5",
        );
        // Older data moved above newer.
        refused(
            &mut l,
            VersionEdit {
                deleted_tables: vec![(6, 2)],
                added_tables: vec![table(4, 12, "x", "z"), table(1, 13, "b", "b")],
                ..Default::default()
            },
            "past table 4 at level 5",
        );
        // Level 0 compacted while an older level-0 table stays.
        let mut l = with(vec![table(0, 3, "a", "c"), table(0, 7, "b", "d")]);
        refused(
            &mut l,
            VersionEdit {
                deleted_tables: vec![(0, 7)],
                added_tables: vec![table(1, 8, "b", "d")],
                ..Default::default()
            },
            "older level-0 table 3",
        );
        // Compacting into the first non-empty level is fine.
        let mut l = with(vec![table(0, 10, "a", "c"), table(5, 4, "b", "d")]);
        l.apply(VersionEdit {
            deleted_tables: vec![(0, 10), (5, 4)],
            added_tables: vec![table(5, 11, "a", "d")],
            ..Default::default()
        })
        .unwrap();
    }
}
