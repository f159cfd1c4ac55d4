//! What a sequence of version edits describes: the live files.

use super::{BlobEntry, TableEntry, VersionEdit};
use std::collections::BTreeMap;

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
    /// Applies one edit.
    pub fn apply(&mut self, e: VersionEdit) -> crate::error::Result<()> {
        self.edits += 1;
        if let Some(n) = e.log_number {
            self.log_number = n;
        }
        if let Some(n) = e.next_file_number {
            self.next_file = self.next_file.max(n);
        }
        for (_, n) in e.deleted_tables {
            self.tables.remove(&n);
        }
        for t in e.added_tables {
            self.tables.insert(t.number, t);
        }
        for n in e.deleted_blobs {
            self.blobs.remove(&n);
            self.blob_garbage.remove(&n);
        }
        for b in e.added_blobs {
            self.blob_garbage.insert(b.number, 0);
            self.blobs.insert(b.number, b);
        }
        for (n, g) in e.blob_garbage {
            if let (Some(b), Some(cur)) = (self.blobs.get(&n), self.blob_garbage.get_mut(&n)) {
                *cur = (*cur + g).min(b.record_bytes);
            }
        }
        for (n, g) in e.blob_garbage_set {
            if let (Some(b), Some(cur)) = (self.blobs.get(&n), self.blob_garbage.get_mut(&n)) {
                *cur = g.min(b.record_bytes);
            }
        }
        Ok(())
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
}
