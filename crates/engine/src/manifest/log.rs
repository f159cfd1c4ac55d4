//! Reading and writing manifest files and the `CURRENT` pointer.

use super::{VersionEdit, MANIFEST_RECORD_MAX};
use crate::error::{Error, IoContext, Result};
use crate::fs::{File, FsRef, OpenMode};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Magic bytes at the start of every manifest file.
pub const MANIFEST_MAGIC: &[u8; 8] = b"ESCMANI1";
const HEADER: usize = 12;
/// Mixed into the length check so a zeroed header never passes it.
const LEN_CHECK_MASK: u32 = 0xa282_ead8;

fn len_check(len: &[u8; 4]) -> u32 {
    crc32c::crc32c(len) ^ LEN_CHECK_MASK
}

/// Appends edits to a manifest file, each made durable before returning.
#[derive(Debug)]
pub struct ManifestWriter {
    file: Arc<dyn File>,
    path: PathBuf,
    offset: u64,
    /// End of the bytes a failed append may have left behind; the next
    /// append pads with zeros up to here so no stale record survives after
    /// it.
    dirty_until: u64,
    /// Set when an fsync failed: what reached the disk is unknown, so no
    /// further edit may be written.
    poisoned: bool,
}

impl ManifestWriter {
    /// Creates a new manifest at `path` holding `snapshot` as its first
    /// record, durable on return (the caller then points `CURRENT` at it).
    pub fn create(fs: &FsRef, path: &Path, snapshot: &VersionEdit) -> Result<ManifestWriter> {
        let file = fs
            .open(path, OpenMode::CreateTruncate)
            .ctx(|| format!("create manifest {}", path.display()))?;
        file.write_all_at(MANIFEST_MAGIC, 0)
            .ctx(|| format!("write manifest {}", path.display()))?;
        let mut w = ManifestWriter {
            file,
            path: path.to_path_buf(),
            offset: MANIFEST_MAGIC.len() as u64,
            dirty_until: 0,
            poisoned: false,
        };
        w.append(snapshot)?;
        Ok(w)
    }

    /// Appends one edit and fdatasyncs it.
    pub fn append(&mut self, edit: &VersionEdit) -> Result<()> {
        if self.poisoned {
            return Err(Error::ReadOnly(format!(
                "an earlier sync of {} failed",
                self.path.display()
            )));
        }
        let payload = edit.encode();
        if payload.is_empty() || payload.len() > MANIFEST_RECORD_MAX {
            return Err(Error::InvalidArgument(format!(
                "manifest edit of {} bytes",
                payload.len()
            )));
        }
        let mut rec = Vec::with_capacity(HEADER + payload.len());
        let len = (payload.len() as u32).to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &payload);
        rec.extend_from_slice(&crc.to_le_bytes());
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&len_check(&len).to_le_bytes());
        rec.extend_from_slice(&payload);
        let end = self.offset + rec.len() as u64;
        if end < self.dirty_until {
            rec.resize((self.dirty_until - self.offset) as usize, 0);
        }
        // Until the write and its sync succeed, these bytes may hold a
        // record that must not count.
        self.dirty_until = self.dirty_until.max(self.offset + rec.len() as u64);
        self.file
            .write_all_at(&rec, self.offset)
            .ctx(|| format!("write manifest {}", self.path.display()))?;
        if let Err(e) = self.file.sync_data() {
            self.poisoned = true;
            return Err(Error::io(
                format!("sync manifest {}", self.path.display()),
                e,
            ));
        }
        self.dirty_until = 0;
        self.offset = end;
        Ok(())
    }

    /// True once an fsync of this manifest failed (or it was poisoned on purpose).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Refuses every further append: used when it is unknown whether
    /// `CURRENT` still names this manifest.
    pub(crate) fn poison(&mut self) {
        self.poisoned = true;
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.offset
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every durable edit of a manifest. A torn last record is dropped
/// (the returned flag says so); any other damage is corruption.
pub fn read_manifest(fs: &FsRef, path: &Path) -> Result<(Vec<VersionEdit>, bool)> {
    let file = fs
        .open(path, OpenMode::Read)
        .ctx(|| format!("open manifest {}", path.display()))?;
    let len = file
        .len()
        .ctx(|| format!("stat manifest {}", path.display()))?;
    let len_usize =
        usize::try_from(len).map_err(|_| Error::corruption(path, 0, "manifest too large"))?;
    let mut buf = vec![0u8; len_usize];
    file.read_exact_at(&mut buf, 0)
        .ctx(|| format!("read manifest {}", path.display()))?;
    if buf.len() < MANIFEST_MAGIC.len() || &buf[..MANIFEST_MAGIC.len()] != MANIFEST_MAGIC {
        return Err(Error::corruption(path, 0, "bad manifest magic"));
    }
    let mut edits = Vec::new();
    let mut pos = MANIFEST_MAGIC.len();
    let mut torn = false;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.iter().all(|&b| b == 0) {
            // Zeros written over a failed append: the end of the edits.
            break;
        }
        if rest.len() < HEADER {
            // The last append was cut inside its header.
            torn = true;
            break;
        }
        let crc = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let len_bytes = [rest[4], rest[5], rest[6], rest[7]];
        let check = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if len_check(&len_bytes) != check {
            return Err(Error::corruption(
                path,
                pos as u64,
                "manifest record header checksum mismatch",
            ));
        }
        let n = u32::from_le_bytes(len_bytes) as usize;
        if n == 0 || n > MANIFEST_RECORD_MAX {
            return Err(Error::corruption(
                path,
                pos as u64,
                format!("manifest record length {n}"),
            ));
        }
        let end = HEADER + n;
        if end > rest.len() {
            // A trustworthy length running past the end: the last append
            // was cut short by a crash. Nothing relied on it yet.
            torn = true;
            break;
        }
        let payload = &rest[HEADER..end];
        if crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload) != crc {
            // Complete records were fsynced before anything relied on
            // them, so a bad one is damage even at the end of the file.
            return Err(Error::corruption(
                path,
                pos as u64,
                "manifest record checksum mismatch",
            ));
        }
        let edit = VersionEdit::decode(payload)
            .map_err(|r| Error::corruption(path, pos as u64, format!("bad version edit: {r}")))?;
        edits.push(edit);
        pos += end;
    }
    if torn {
        tracing::warn!(manifest = %path.display(), offset = pos, "dropped a torn manifest record");
    }
    Ok((edits, torn))
}

/// Reads `CURRENT` in `dir`: the manifest's file name, or `None` for a new
/// database.
pub fn read_current(fs: &FsRef, dir: &Path) -> Result<Option<String>> {
    let path = dir.join("CURRENT");
    if !fs.exists(&path) {
        return Ok(None);
    }
    let file = fs
        .open(&path, OpenMode::Read)
        .ctx(|| format!("open {}", path.display()))?;
    let len = file.len().ctx(|| format!("stat {}", path.display()))?;
    if len == 0 || len > 256 {
        return Err(Error::corruption(
            &path,
            0,
            format!("CURRENT has {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)
        .ctx(|| format!("read {}", path.display()))?;
    let s = std::str::from_utf8(&buf)
        .map_err(|_| Error::corruption(&path, 0, "CURRENT is not text"))?;
    let name = s.strip_suffix('\n').unwrap_or(s);
    if !name.starts_with("MANIFEST-") || name.contains('/') {
        return Err(Error::corruption(
            &path,
            0,
            format!("CURRENT names {name:?}"),
        ));
    }
    Ok(Some(name.to_string()))
}

/// Points `CURRENT` at `manifest_name`, atomically and durably.
pub fn set_current(fs: &FsRef, dir: &Path, manifest_name: &str) -> Result<()> {
    replace_current(fs, dir, manifest_name)?;
    fs.sync_dir(dir)
        .ctx(|| format!("sync directory {}", dir.display()))?;
    Ok(())
}

/// The first half of [`set_current`]: writes `CURRENT.tmp`, fsyncs it and
/// renames it over `CURRENT`, without the directory fsync. Once this
/// returns `Ok`, `CURRENT` names `manifest_name` (durably or not: that
/// takes the directory fsync), so edits must go to that manifest from then
/// on, whatever the fsync does.
pub(crate) fn replace_current(fs: &FsRef, dir: &Path, manifest_name: &str) -> Result<()> {
    let tmp = dir.join("CURRENT.tmp");
    let f = fs
        .open(&tmp, OpenMode::CreateTruncate)
        .ctx(|| format!("create {}", tmp.display()))?;
    f.write_all_at(format!("{manifest_name}\n").as_bytes(), 0)
        .ctx(|| format!("write {}", tmp.display()))?;
    f.sync_all().ctx(|| format!("sync {}", tmp.display()))?;
    let cur = dir.join("CURRENT");
    fs.rename(&tmp, &cur)
        .ctx(|| format!("rename {} to {}", tmp.display(), cur.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;

    #[test]
    fn write_read_torn_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let fs: FsRef = Arc::new(RealFs);
        let p = dir.path().join("MANIFEST-000001");
        let e1 = VersionEdit {
            log_number: Some(3),
            ..Default::default()
        };
        let e2 = VersionEdit {
            next_file_number: Some(9),
            ..Default::default()
        };
        let mut w = ManifestWriter::create(&fs, &p, &e1).unwrap();
        w.append(&e2).unwrap();
        let good_len = w.size();
        assert_eq!(
            read_manifest(&fs, &p).unwrap(),
            (vec![e1.clone(), e2.clone()], false)
        );

        // Torn tail at every cut of the last record.
        let full = std::fs::read(&p).unwrap();
        let first_end = MANIFEST_MAGIC.len() + HEADER + e1.encode().len();
        for cut in first_end + 1..full.len() {
            std::fs::write(&p, &full[..cut]).unwrap();
            let (edits, torn) = read_manifest(&fs, &p).unwrap();
            assert_eq!(edits, vec![e1.clone()]);
            assert!(torn);
        }
        // A flipped byte in the first record, with a good one after it.
        let mut bad = full.clone();
        bad[MANIFEST_MAGIC.len() + HEADER] ^= 0x40;
        std::fs::write(&p, &bad).unwrap();
        assert!(read_manifest(&fs, &p).unwrap_err().is_corruption());
        assert_eq!(good_len as usize, full.len());
    }

    /// A manifest on MemFs holding one edit, and a large edit whose
    /// append will meet the fault `op`/`errno` once.
    fn writer_with_one_fault(
        op: crate::fs::FaultOp,
        errno: i32,
    ) -> (FsRef, ManifestWriter, VersionEdit, VersionEdit) {
        use crate::fs::{Fault, MemFs};
        let mem = MemFs::new();
        let fs: FsRef = Arc::new(mem.clone());
        fs.create_dir_all(std::path::Path::new("/db")).unwrap();
        let first = VersionEdit {
            log_number: Some(3),
            ..Default::default()
        };
        let w = ManifestWriter::create(&fs, std::path::Path::new(FAULT_TEST_PATH), &first).unwrap();
        mem.inject(Fault {
            op,
            path_contains: Some("MANIFEST".into()),
            skip: 0,
            times: Some(1),
            errno,
        });
        let big = VersionEdit {
            deleted_blobs: (0..500).collect(),
            ..Default::default()
        };
        (fs, w, first, big)
    }

    const FAULT_TEST_PATH: &str = "/db/MANIFEST-000001";

    #[test]
    fn failed_sync_poisons_the_writer() {
        let (_fs, mut w, _first, big) = writer_with_one_fault(crate::fs::FaultOp::Sync, libc::EIO);
        // The write lands, its sync fails: the writer refuses more edits.
        assert!(w.append(&big).is_err());
        assert!(w.is_poisoned());
        let small = VersionEdit {
            next_file_number: Some(9),
            ..Default::default()
        };
        assert!(matches!(w.append(&small), Err(Error::ReadOnly(_))));
    }

    #[test]
    fn failed_write_is_overwritten_without_stale_bytes() {
        let (fs, mut w, e1, big) = writer_with_one_fault(crate::fs::FaultOp::Write, libc::ENOSPC);
        let p = std::path::Path::new(FAULT_TEST_PATH);
        assert!(matches!(w.append(&big), Err(Error::NoSpace { .. })));
        let small = VersionEdit {
            next_file_number: Some(9),
            ..Default::default()
        };
        w.append(&small).unwrap();
        let (edits, torn) = read_manifest(&fs, p).unwrap();
        assert_eq!(edits, vec![e1, small]);
        assert!(!torn);
    }

    #[test]
    fn current_pointer() {
        let dir = tempfile::tempdir().unwrap();
        let fs: FsRef = Arc::new(RealFs);
        assert_eq!(read_current(&fs, dir.path()).unwrap(), None);
        set_current(&fs, dir.path(), "MANIFEST-000004").unwrap();
        assert_eq!(
            read_current(&fs, dir.path()).unwrap().as_deref(),
            Some("MANIFEST-000004")
        );
        std::fs::write(dir.path().join("CURRENT"), b"../etc\n").unwrap();
        assert!(read_current(&fs, dir.path()).is_err());
    }
}
