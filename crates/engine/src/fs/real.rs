//! The real file system, through `std::fs` and positioned I/O.

use super::{DirLock, File, FileSystem, OpenMode};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(fs::File);

/// Most buffers handed to one `pwritev` (Linux's `IOV_MAX`).
pub const IOV_PER_CALL: usize = 1024;

/// Writes all of `bufs` at `offset` with `pwritev`, [`IOV_PER_CALL`]
/// buffers at a time, going on after short writes and interruptions.
fn pwritev_all(file: &fs::File, bufs: &[&[u8]], mut offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // The buffer being written and how much of it is already written.
    let (mut first, mut done) = (0usize, 0usize);
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(bufs.len().min(IOV_PER_CALL));
    while first < bufs.len() {
        iov.clear();
        for (i, b) in bufs[first..].iter().enumerate() {
            if iov.len() == IOV_PER_CALL {
                break;
            }
            let b = if i == 0 { &b[done..] } else { b };
            if !b.is_empty() {
                iov.push(libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                });
            }
        }
        if iov.is_empty() {
            return Ok(());
        }
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "write offset too large"))?;
        // SAFETY: every iovec points into a slice of `bufs`, which outlives
        // the call; the kernel only reads them. `iov.len()` is at most
        // IOV_PER_CALL, which fits a c_int.
        let n =
            unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, at) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        let mut n = n as usize;
        offset += n as u64;
        // Step past what was written.
        while n > 0 && first < bufs.len() {
            let left = bufs[first].len() - done;
            if n >= left {
                n -= left;
                first += 1;
                done = 0;
            } else {
                done += n;
                n = 0;
            }
        }
        while first < bufs.len() && bufs[first].len() == done {
            first += 1;
            done = 0;
        }
    }
    Ok(())
}

impl File for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn write_all_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        pwritev_all(&self.0, bufs, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

#[derive(Debug)]
struct RealLock(#[allow(dead_code)] fs::File);

impl DirLock for RealLock {}

impl FileSystem for RealFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateTruncate => o.read(true).write(true).create(true).truncate(true),
        };
        Ok(Arc::new(RealFile(o.open(path)?)))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Box::new(RealLock(f))),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "lock held by another process",
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
    fn available_space(&self, dir: &Path) -> Option<u64> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs writes into the zeroed struct we pass; `c` is a
        // valid NUL-terminated path for the duration of the call.
        unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(c.as_ptr(), &mut s) == 0 {
                Some(s.f_bavail as u64 * s.f_frsize as u64)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vectored_write_lays_down_the_same_bytes_as_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        // More buffers than one pwritev takes, with empty ones among them.
        let pieces: Vec<Vec<u8>> = (0..(IOV_PER_CALL * 2 + 37))
            .map(|i| vec![(i % 251) as u8; if i % 5 == 0 { 0 } else { 1 + i % 300 }])
            .collect();
        let slices: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        let joined: Vec<u8> = pieces.concat();
        let a = fs
            .open(&dir.path().join("a"), OpenMode::CreateTruncate)
            .unwrap();
        a.write_all_at(b"head", 0).unwrap();
        a.write_all_vectored_at(&slices, 4).unwrap();
        let mut got = vec![0u8; 4 + joined.len()];
        a.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..] == joined[..]);
        assert_eq!(a.len().unwrap(), 4 + joined.len() as u64);
        a.write_all_vectored_at(&[], 0).unwrap();
        a.write_all_vectored_at(&[b"", b""], 0).unwrap();
        assert_eq!(a.len().unwrap(), 4 + joined.len() as u64);
    }

    #[test]
    fn write_read_rename_lock() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        let p = dir.path().join("a");
        let f = fs.open(&p, OpenMode::CreateTruncate).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.write_all_at(b"world", 10).unwrap();
        assert_eq!(f.len().unwrap(), 15);
        let mut b = [0u8; 5];
        f.read_exact_at(&mut b, 10).unwrap();
        assert_eq!(&b, b"world");
        assert!(f.read_exact_at(&mut b, 12).is_err());
        fs.rename(&p, &dir.path().join("b")).unwrap();
        assert_eq!(fs.list_dir(dir.path()).unwrap(), vec!["b".to_string()]);
        fs.sync_dir(dir.path()).unwrap();
        let l = fs.lock(&dir.path().join("LOCK")).unwrap();
        assert!(fs.lock(&dir.path().join("LOCK")).is_err());
        drop(l);
        assert!(fs.lock(&dir.path().join("LOCK")).is_ok());
        assert!(fs.available_space(dir.path()).is_some());
    }
}
