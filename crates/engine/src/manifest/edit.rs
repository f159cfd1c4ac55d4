//! Version edits: the changes to the set of live files.

use crate::coding::{put_length_prefixed, put_varint64, Decoder};
use bytes::Bytes;

/// A table file added at a level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// Level (0 = newest, overlapping files).
    pub level: u32,
    /// File number.
    pub number: u64,
    /// Bytes.
    pub file_size: u64,
    /// Entries in the file.
    pub entries: u64,
    /// Smallest key.
    pub smallest: Bytes,
    /// Largest key.
    pub largest: Bytes,
}

/// A blob file added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// File number.
    pub number: u64,
    /// Bytes.
    pub file_size: u64,
    /// Records in the file.
    pub records: u64,
    /// Bytes of records (what garbage is measured against).
    pub record_bytes: u64,
}

/// One atomic change to the live files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionEdit {
    /// Log segments numbered below this are no longer needed.
    pub log_number: Option<u64>,
    /// Next file number to allocate.
    pub next_file_number: Option<u64>,
    /// Tables added.
    pub added_tables: Vec<TableEntry>,
    /// Tables removed: (level, number).
    pub deleted_tables: Vec<(u32, u64)>,
    /// Blob files added.
    pub added_blobs: Vec<BlobEntry>,
    /// Blob files removed.
    pub deleted_blobs: Vec<u64>,
    /// Dead bytes discovered in blob files: (number, bytes).
    pub blob_garbage: Vec<(u64, u64)>,
    /// Dead byte counts set outright: (number, bytes). Applied after
    /// `blob_garbage`.
    pub blob_garbage_set: Vec<(u64, u64)>,
}

const TAG_LOG_NUMBER: u8 = 1;
const TAG_NEXT_FILE: u8 = 2;
const TAG_ADD_TABLE: u8 = 3;
const TAG_DEL_TABLE: u8 = 4;
const TAG_ADD_BLOB: u8 = 5;
const TAG_DEL_BLOB: u8 = 6;
const TAG_BLOB_GARBAGE: u8 = 7;
const TAG_BLOB_GARBAGE_SET: u8 = 8;

impl VersionEdit {
    /// True if the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == VersionEdit::default()
    }

    /// Serialises the edit.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(n) = self.log_number {
            out.push(TAG_LOG_NUMBER);
            put_varint64(&mut out, n);
        }
        if let Some(n) = self.next_file_number {
            out.push(TAG_NEXT_FILE);
            put_varint64(&mut out, n);
        }
        for t in &self.added_tables {
            out.push(TAG_ADD_TABLE);
            put_varint64(&mut out, u64::from(t.level));
            put_varint64(&mut out, t.number);
            put_varint64(&mut out, t.file_size);
            put_varint64(&mut out, t.entries);
            put_length_prefixed(&mut out, &t.smallest);
            put_length_prefixed(&mut out, &t.largest);
        }
        for &(level, number) in &self.deleted_tables {
            out.push(TAG_DEL_TABLE);
            put_varint64(&mut out, u64::from(level));
            put_varint64(&mut out, number);
        }
        for b in &self.added_blobs {
            out.push(TAG_ADD_BLOB);
            put_varint64(&mut out, b.number);
            put_varint64(&mut out, b.file_size);
            put_varint64(&mut out, b.records);
            put_varint64(&mut out, b.record_bytes);
        }
        for &n in &self.deleted_blobs {
            out.push(TAG_DEL_BLOB);
            put_varint64(&mut out, n);
        }
        for &(n, bytes) in &self.blob_garbage {
            out.push(TAG_BLOB_GARBAGE);
            put_varint64(&mut out, n);
            put_varint64(&mut out, bytes);
        }
        for &(n, bytes) in &self.blob_garbage_set {
            out.push(TAG_BLOB_GARBAGE_SET);
            put_varint64(&mut out, n);
            put_varint64(&mut out, bytes);
        }
        out
    }

    /// Parses an edit; `Err` carries a reason.
    pub fn decode(buf: &[u8]) -> Result<VersionEdit, String> {
        let mut d = Decoder::new(buf);
        let mut e = VersionEdit::default();
        let short = || "edit cut short".to_string();
        let level = |v: u64| u32::try_from(v).map_err(|_| format!("level {v} out of range"));
        while d.remaining() > 0 {
            let tag = d.u8().ok_or_else(short)?;
            match tag {
                TAG_LOG_NUMBER => e.log_number = Some(d.varint64().ok_or_else(short)?),
                TAG_NEXT_FILE => e.next_file_number = Some(d.varint64().ok_or_else(short)?),
                TAG_ADD_TABLE => {
                    let lv = level(d.varint64().ok_or_else(short)?)?;
                    let number = d.varint64().ok_or_else(short)?;
                    let file_size = d.varint64().ok_or_else(short)?;
                    let entries = d.varint64().ok_or_else(short)?;
                    let smallest = Bytes::copy_from_slice(d.length_prefixed().ok_or_else(short)?);
                    let largest = Bytes::copy_from_slice(d.length_prefixed().ok_or_else(short)?);
                    e.added_tables.push(TableEntry {
                        level: lv,
                        number,
                        file_size,
                        entries,
                        smallest,
                        largest,
                    });
                }
                TAG_DEL_TABLE => {
                    let lv = level(d.varint64().ok_or_else(short)?)?;
                    e.deleted_tables.push((lv, d.varint64().ok_or_else(short)?));
                }
                TAG_ADD_BLOB => e.added_blobs.push(BlobEntry {
                    number: d.varint64().ok_or_else(short)?,
                    file_size: d.varint64().ok_or_else(short)?,
                    records: d.varint64().ok_or_else(short)?,
                    record_bytes: d.varint64().ok_or_else(short)?,
                }),
                TAG_DEL_BLOB => e.deleted_blobs.push(d.varint64().ok_or_else(short)?),
                TAG_BLOB_GARBAGE => {
                    let n = d.varint64().ok_or_else(short)?;
                    e.blob_garbage.push((n, d.varint64().ok_or_else(short)?));
                }
                TAG_BLOB_GARBAGE_SET => {
                    let n = d.varint64().ok_or_else(short)?;
                    e.blob_garbage_set
                        .push((n, d.varint64().ok_or_else(short)?));
                }
                other => return Err(format!("unknown edit tag {other}")),
            }
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VersionEdit {
        VersionEdit {
            log_number: Some(7),
            next_file_number: Some(12),
            added_tables: vec![TableEntry {
                level: 3,
                number: 9,
                file_size: 4096,
                entries: 10,
                smallest: Bytes::from_static(b"a"),
                largest: Bytes::from(vec![b'z'; 100 * 1024]),
            }],
            deleted_tables: vec![(0, 4), (1, 5)],
            added_blobs: vec![BlobEntry {
                number: 10,
                file_size: 1 << 30,
                records: 3,
                record_bytes: 99,
            }],
            deleted_blobs: vec![2],
            blob_garbage: vec![(10, 55)],
            blob_garbage_set: vec![(10, 7)],
        }
    }

    #[test]
    fn round_trip() {
        let e = sample();
        assert_eq!(VersionEdit::decode(&e.encode()), Ok(e));
        assert_eq!(VersionEdit::decode(&[]), Ok(VersionEdit::default()));
    }

    #[test]
    fn truncated_or_unknown_rejected() {
        let b = sample().encode();
        for cut in 1..b.len() {
            // Every strict prefix either fails or decodes to something else;
            // it must never panic.
            let _ = VersionEdit::decode(&b[..cut]);
        }
        assert!(VersionEdit::decode(&b[..b.len() - 1]).is_err());
        assert!(VersionEdit::decode(&[99]).is_err());
    }
}
