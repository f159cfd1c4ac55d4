//! An in-memory file system that simulates crashes, full disks, I/O errors
//! and bit flips, for deterministic tests of the whole engine.
//!
//! The model follows the durability rules in the [module doc](super):
//! - every file (an inode) has its *current* contents, what reads see, and
//!   its *durable* contents, as of its last `sync_data`/`sync_all`;
//! - every directory has its *current* entries and its *durable* entries, as
//!   of its last `sync_dir`. Creating, renaming and removing a file change
//!   the current entries of the parent directories only. A path's directory
//!   is its parent (`Path::parent`); `/` and the empty path always exist.
//!
//! Directories themselves (`create_dir_all`) are durable at once.
//! [`MemFs::crash`] builds the file system a restart would find. Open
//! handles keep working on the old state, which never affects the new one.

use super::{DirLock, File, FileSystem, OpenMode};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What survives a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// The process dies (`kill -9`) but the operating system survives:
    /// everything written is kept, synced or not.
    ProcessKill,
    /// Power is lost: only durable state is kept (file contents as of their
    /// last sync, directory entries as of their directory's last sync).
    PowerLoss,
    /// Like [`CrashMode::PowerLoss`], but each file also keeps a random
    /// prefix (possibly empty, possibly all) of the bytes written since its
    /// last sync, chosen deterministically from `seed`. Where that prefix
    /// ends, the file's older durable bytes (if longer) follow.
    PowerLossTorn {
        /// Seed of the random choices.
        seed: u64,
    },
    /// Power is lost while the disk writes back dirty pages in any order:
    /// each [`CRASH_PAGE_SIZE`] page of a file (aligned to file offsets)
    /// holding bytes written since the file's last sync independently
    /// keeps its new contents or its old durable ones, by a coin toss
    /// seeded with `seed`. A lost page beyond the old durable length
    /// that is followed by a kept one reads as zeros (a hole); the file
    /// ends after the last byte that survived. Directory entries are as
    /// in [`CrashMode::PowerLoss`].
    PowerLossPages {
        /// Seed of the random choices.
        seed: u64,
    },
}

/// Page size of [`CrashMode::PowerLossPages`].
pub const CRASH_PAGE_SIZE: usize = 4096;

/// The kind of operation a [`Fault`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// Opening a file, in any mode.
    Open,
    /// Reading from an open file.
    Read,
    /// Writing to an open file, or changing its length.
    Write,
    /// `sync_data` or `sync_all` on an open file.
    Sync,
    /// Syncing a directory (the path matched is the directory's).
    SyncDir,
    /// Renaming (matches if either path matches).
    Rename,
    /// Removing a file.
    Remove,
}

/// An injected failure: matching operations fail with `errno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The kind of operation that fails.
    pub op: FaultOp,
    /// Only operations on a path containing this string match (for open
    /// files, the path they were opened with); `None` matches every path.
    pub path_contains: Option<String>,
    /// Let this many matching operations succeed first.
    pub skip: u64,
    /// Fail this many matching operations; `None` = forever.
    pub times: Option<u64>,
    /// The error number returned, e.g. `libc::EIO` or `libc::ENOSPC`.
    pub errno: i32,
}

#[derive(Debug)]
struct FaultState {
    fault: Fault,
    matched: u64,
    fired: u64,
}

#[derive(Debug, Default, Clone)]
struct Inode {
    content: Vec<u8>,
    durable: Vec<u8>,
    /// Lowest offset changed since the last sync; `content[..dirty_from]`
    /// equals `durable[..dirty_from]`.
    dirty_from: Option<usize>,
    handles: usize,
}

impl Inode {
    fn touch(&mut self, from: usize) {
        let from = from.min(self.content.len());
        self.dirty_from = Some(self.dirty_from.map_or(from, |d| d.min(from)));
    }

    fn sync(&mut self) {
        if let Some(d) = self.dirty_from.take() {
            let d = d.min(self.durable.len()).min(self.content.len());
            self.durable.truncate(d);
            self.durable.extend_from_slice(&self.content[d..]);
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Dir {
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    dirs: BTreeMap<PathBuf, Dir>,
    faults: Vec<FaultState>,
    capacity: Option<u64>,
    ops: u64,
    freeze_at: Option<u64>,
    locks: HashSet<PathBuf>,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn not_found() -> io::Error {
    errno(libc::ENOENT)
}

/// The directory and name of a file path.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    Ok((dir, name.to_string()))
}

fn is_root(p: &Path) -> bool {
    p.as_os_str().is_empty() || p == Path::new("/")
}

impl State {
    fn new() -> State {
        let mut s = State::default();
        s.dirs.insert(PathBuf::new(), Dir::default());
        s.dirs.insert(PathBuf::from("/"), Dir::default());
        s
    }

    /// Counts a mutating operation and fails it if the disk is frozen or a
    /// fault matches.
    fn mutate(&mut self, op: FaultOp, paths: &[&Path]) -> io::Result<()> {
        let i = self.ops;
        self.ops += 1;
        if self.freeze_at.is_some_and(|f| i >= f) {
            return Err(errno(libc::EIO));
        }
        self.check_fault(op, paths)
    }

    fn check_fault(&mut self, op: FaultOp, paths: &[&Path]) -> io::Result<()> {
        for f in &mut self.faults {
            if f.fault.op != op {
                continue;
            }
            if let Some(s) = &f.fault.path_contains {
                if !paths
                    .iter()
                    .any(|p| p.to_string_lossy().contains(s.as_str()))
                {
                    continue;
                }
            }
            f.matched += 1;
            if f.matched <= f.fault.skip {
                continue;
            }
            if f.fault.times.is_some_and(|t| f.fired >= t) {
                continue;
            }
            f.fired += 1;
            return Err(errno(f.fault.errno));
        }
        Ok(())
    }

    fn lookup(&self, path: &Path) -> Option<u64> {
        let (dir, name) = split(path).ok()?;
        self.dirs.get(&dir)?.current.get(&name).copied()
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| errno(libc::EBADF))
    }

    /// Inodes reachable now: by a current directory entry or an open handle.
    fn live(&self) -> BTreeSet<u64> {
        let mut live: BTreeSet<u64> = self
            .dirs
            .values()
            .flat_map(|d| d.current.values().copied())
            .collect();
        live.extend(
            self.inodes
                .iter()
                .filter(|(_, i)| i.handles > 0)
                .map(|(&n, _)| n),
        );
        live
    }

    fn used(&self) -> u64 {
        let live = self.live();
        live.iter()
            .filter_map(|n| self.inodes.get(n))
            .map(|i| i.content.len() as u64)
            .sum()
    }

    /// Fails with ENOSPC if growing the files by `growth` bytes would pass
    /// the capacity.
    fn check_space(&self, growth: u64) -> io::Result<()> {
        match self.capacity {
            Some(cap) if growth > 0 && self.used() + growth > cap => Err(errno(libc::ENOSPC)),
            _ => Ok(()),
        }
    }

    /// Forgets an inode nothing can reach any more, even after a crash.
    fn collect(&mut self, ino: u64) {
        let referenced = self.dirs.values().any(|d| {
            d.current
                .values()
                .chain(d.durable.values())
                .any(|&n| n == ino)
        });
        if !referenced && self.inodes.get(&ino).is_some_and(|i| i.handles == 0) {
            self.inodes.remove(&ino);
        }
    }

    fn collect_all(&mut self) {
        let inos: Vec<u64> = self.inodes.keys().copied().collect();
        for ino in inos {
            self.collect(ino);
        }
    }

    fn create(&mut self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        let d = self.dirs.get_mut(&dir).ok_or_else(not_found)?;
        let ino = self.next_ino;
        self.next_ino += 1;
        d.current.insert(name, ino);
        self.inodes.insert(ino, Inode::default());
        Ok(ino)
    }
}

/// A simple deterministic random number generator (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// An in-memory, fault-injecting file system. Clones share the same state.
#[derive(Clone)]
pub struct MemFs {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("MemFs")
            .field("files", &s.inodes.len())
            .field("mutating_ops", &s.ops)
            .field("capacity", &s.capacity)
            .finish()
    }
}

impl Default for MemFs {
    fn default() -> Self {
        MemFs::new()
    }
}

impl MemFs {
    /// An empty file system with only the root directories (`/` and the
    /// empty path).
    pub fn new() -> MemFs {
        MemFs {
            state: Arc::new(Mutex::new(State::new())),
        }
    }

    /// The state a restart would find after a crash of the given kind. The
    /// new file system has no faults, is not frozen, holds no locks, and its
    /// durable state equals its contents; it keeps the capacity limit.
    pub fn crash(&self, mode: CrashMode) -> MemFs {
        let old = self.state.lock();
        let mut new = State::new();
        new.capacity = old.capacity;
        let mut rng = SplitMix(match mode {
            CrashMode::PowerLossTorn { seed } | CrashMode::PowerLossPages { seed } => seed,
            _ => 0,
        });
        let mut renumber: BTreeMap<u64, u64> = BTreeMap::new();
        for (path, dir) in &old.dirs {
            let entries = match mode {
                CrashMode::ProcessKill => &dir.current,
                _ => &dir.durable,
            };
            let mut nd = Dir::default();
            for (name, &ino) in entries {
                let Some(inode) = old.inodes.get(&ino) else {
                    continue;
                };
                let new_ino = match renumber.get(&ino) {
                    Some(&n) => n,
                    None => {
                        let content = match mode {
                            CrashMode::ProcessKill => inode.content.clone(),
                            CrashMode::PowerLoss => inode.durable.clone(),
                            CrashMode::PowerLossTorn { .. } => torn(inode, &mut rng),
                            CrashMode::PowerLossPages { .. } => lost_pages(inode, &mut rng),
                        };
                        let n = new.next_ino;
                        new.next_ino += 1;
                        new.inodes.insert(
                            n,
                            Inode {
                                durable: content.clone(),
                                content,
                                dirty_from: None,
                                handles: 0,
                            },
                        );
                        renumber.insert(ino, n);
                        n
                    }
                };
                nd.current.insert(name.clone(), new_ino);
                nd.durable.insert(name.clone(), new_ino);
            }
            new.dirs.insert(path.clone(), nd);
        }
        MemFs {
            state: Arc::new(Mutex::new(new)),
        }
    }

    /// After `n` more mutating operations (write, set_len, sync, rename,
    /// remove, create, sync_dir), every further mutating operation fails
    /// with EIO: from the disk's view the process is dead. Use with
    /// [`MemFs::crash`] to crash at an exact point.
    pub fn freeze_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.freeze_at = Some(s.ops + n);
    }

    /// Mutating operations attempted so far (including failed ones).
    pub fn mutating_ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Adds a fault. Faults are checked in the order they were added.
    pub fn inject(&self, f: Fault) {
        self.state.lock().faults.push(FaultState {
            fault: f,
            matched: 0,
            fired: 0,
        });
    }

    /// Removes every fault (not the freeze or the capacity).
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// Total bytes of all files above which writes fail with ENOSPC
    /// (`None` = unlimited). A write that would pass it fails whole,
    /// writing nothing.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// XORs the byte at `offset` of the file with `xor`, in both its current
    /// and its durable contents.
    pub fn corrupt(&self, path: &Path, offset: u64, xor: u8) -> io::Result<()> {
        let mut s = self.state.lock();
        let ino = s.lookup(path).ok_or_else(not_found)?;
        let inode = s.inode(ino)?;
        let o = usize::try_from(offset).unwrap_or(usize::MAX);
        if o >= inode.content.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset past the end of the file",
            ));
        }
        inode.content[o] ^= xor;
        if let Some(b) = inode.durable.get_mut(o) {
            *b ^= xor;
        }
        Ok(())
    }

    /// The current contents of a file.
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut s = self.state.lock();
        let ino = s.lookup(path).ok_or_else(not_found)?;
        Ok(s.inode(ino)?.content.clone())
    }

    /// Total bytes of all files (including removed files still open).
    pub fn total_bytes(&self) -> u64 {
        self.state.lock().used()
    }

    /// Paths of all files, sorted.
    pub fn list_files(&self) -> Vec<PathBuf> {
        let s = self.state.lock();
        let mut out: Vec<PathBuf> = s
            .dirs
            .iter()
            .flat_map(|(d, dir)| dir.current.keys().map(move |n| d.join(n)))
            .collect();
        out.sort();
        out
    }
}

/// A torn file: the durable bytes up to the first change since the last
/// sync, then a random prefix of the changed bytes, then any older durable
/// bytes beyond that.
fn torn(inode: &Inode, rng: &mut SplitMix) -> Vec<u8> {
    let Some(d) = inode.dirty_from else {
        return inode.durable.clone();
    };
    let d = d.min(inode.content.len()).min(inode.durable.len());
    let extra = (inode.content.len() - d) as u64;
    let keep = d + (rng.next() % (extra + 1)) as usize;
    let mut out = inode.content[..keep].to_vec();
    if inode.durable.len() > keep {
        out.extend_from_slice(&inode.durable[keep..]);
    }
    out
}

/// A file after out-of-order writeback: every page changed since the last
/// sync keeps its new or its old bytes at random (see
/// [`CrashMode::PowerLossPages`]).
fn lost_pages(inode: &Inode, rng: &mut SplitMix) -> Vec<u8> {
    let Some(d) = inode.dirty_from else {
        return inode.durable.clone();
    };
    let d = d.min(inode.content.len()).min(inode.durable.len());
    let max_len = inode.content.len().max(inode.durable.len());
    let mut out: Vec<u8> = inode.content[..d].to_vec();
    // End of the bytes that survived; bytes before it that did not are a
    // hole of zeros.
    let mut end = d;
    let mut page_start = d - d % CRASH_PAGE_SIZE;
    while page_start < max_len {
        let from = page_start.max(d);
        let to = (page_start + CRASH_PAGE_SIZE).min(max_len);
        let source = if rng.next() & 1 == 1 {
            &inode.content
        } else {
            &inode.durable
        };
        let have = source.len().clamp(from, to);
        if have > from {
            out.resize(from, 0);
            out.extend_from_slice(&source[from..have]);
            end = have;
        }
        page_start += CRASH_PAGE_SIZE;
    }
    out.truncate(end);
    out
}

#[derive(Debug)]
struct MemFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    path: PathBuf,
    writable: bool,
}

impl Drop for MemFile {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if let Some(i) = s.inodes.get_mut(&self.ino) {
            i.handles = i.handles.saturating_sub(1);
        }
        s.collect(self.ino);
    }
}

impl MemFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(errno(libc::EBADF))
        }
    }
}

impl File for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut s = self.state.lock();
        s.check_fault(FaultOp::Read, &[&self.path])?;
        let c = &s.inode(self.ino)?.content;
        let Ok(o) = usize::try_from(offset) else {
            return Ok(0);
        };
        if o >= c.len() {
            return Ok(0);
        }
        let n = buf.len().min(c.len() - o);
        buf[..n].copy_from_slice(&c[o..o + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.mutate(FaultOp::Write, &[&self.path])?;
        self.check_writable()?;
        let o = usize::try_from(offset).map_err(|_| errno(libc::EFBIG))?;
        let end = o.checked_add(buf.len()).ok_or_else(|| errno(libc::EFBIG))?;
        let len = s.inode(self.ino)?.content.len();
        s.check_space(end.saturating_sub(len) as u64)?;
        let inode = s.inode(self.ino)?;
        if buf.is_empty() {
            return Ok(());
        }
        inode.touch(o);
        if end > inode.content.len() {
            inode.content.resize(end, 0);
        }
        inode.content[o..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        s.mutate(FaultOp::Sync, &[&self.path])?;
        s.inode(self.ino)?.sync();
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        let mut s = self.state.lock();
        Ok(s.inode(self.ino)?.content.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.mutate(FaultOp::Write, &[&self.path])?;
        self.check_writable()?;
        let len = usize::try_from(len).map_err(|_| errno(libc::EFBIG))?;
        let cur = s.inode(self.ino)?.content.len();
        s.check_space(len.saturating_sub(cur) as u64)?;
        let inode = s.inode(self.ino)?;
        if len != cur {
            inode.touch(len.min(cur));
            inode.content.resize(len, 0);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MemLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl DirLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.path);
    }
}

impl FileSystem for MemFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let mut s = self.state.lock();
        if s.dirs.contains_key(path) {
            return Err(errno(libc::EISDIR));
        }
        let ino = match mode {
            OpenMode::Read | OpenMode::ReadWrite => {
                s.check_fault(FaultOp::Open, &[path])?;
                s.lookup(path).ok_or_else(not_found)?
            }
            OpenMode::CreateTruncate => {
                s.mutate(FaultOp::Open, &[path])?;
                match s.lookup(path) {
                    Some(ino) => {
                        let inode = s.inode(ino)?;
                        if !inode.content.is_empty() {
                            inode.touch(0);
                            inode.content.clear();
                        }
                        ino
                    }
                    None => s.create(path)?,
                }
            }
        };
        s.inode(ino)?.handles += 1;
        Ok(Arc::new(MemFile {
            state: Arc::clone(&self.state),
            ino,
            path: path.to_path_buf(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.mutate(FaultOp::Remove, &[path])?;
        let (dir, name) = split(path)?;
        let ino = s
            .dirs
            .get_mut(&dir)
            .and_then(|d| d.current.remove(&name))
            .ok_or_else(not_found)?;
        s.collect(ino);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.mutate(FaultOp::Rename, &[from, to])?;
        let (fdir, fname) = split(from)?;
        let (tdir, tname) = split(to)?;
        let ino = s.lookup(from).ok_or_else(not_found)?;
        if !s.dirs.contains_key(&tdir) {
            return Err(not_found());
        }
        if from == to {
            return Ok(());
        }
        if let Some(d) = s.dirs.get_mut(&fdir) {
            d.current.remove(&fname);
        }
        let replaced = s
            .dirs
            .get_mut(&tdir)
            .and_then(|d| d.current.insert(tname, ino));
        if let Some(old) = replaced {
            s.collect(old);
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        let d = s.dirs.get(dir).ok_or_else(not_found)?;
        let mut out: Vec<String> = d.current.keys().cloned().collect();
        for sub in s.dirs.keys() {
            if sub.parent() == Some(dir) && !is_root(sub) {
                if let Some(n) = sub.file_name().and_then(|n| n.to_str()) {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        for a in dir.ancestors() {
            if s.lookup(a).is_some() {
                return Err(errno(libc::ENOTDIR));
            }
            s.dirs.entry(a.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.mutate(FaultOp::SyncDir, &[dir])?;
        let d = s.dirs.get_mut(dir).ok_or_else(not_found)?;
        d.durable = d.current.clone();
        s.collect_all();
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.state.lock();
        s.dirs.contains_key(path) || s.lookup(path).is_some()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut s = self.state.lock();
        if s.locks.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "lock held by another handle",
            ));
        }
        if s.lookup(path).is_none() {
            s.create(path)?;
        }
        s.locks.insert(path.to_path_buf());
        Ok(Box::new(MemLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
        }))
    }

    fn available_space(&self, _dir: &Path) -> Option<u64> {
        let s = self.state.lock();
        s.capacity.map(|c| c.saturating_sub(s.used()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn setup() -> MemFs {
        let fs = MemFs::new();
        fs.create_dir_all(&p("/db")).unwrap();
        fs
    }

    fn write(fs: &MemFs, path: &str, data: &[u8]) -> Arc<dyn File> {
        let f = fs.open(&p(path), OpenMode::CreateTruncate).unwrap();
        f.write_all_at(data, 0).unwrap();
        f
    }

    fn fault(op: FaultOp, path: Option<&str>, skip: u64, times: Option<u64>) -> Fault {
        Fault {
            op,
            path_contains: path.map(str::to_string),
            skip,
            times,
            errno: libc::EIO,
        }
    }

    #[test]
    fn read_write_rename_list() {
        let fs = setup();
        let f = write(&fs, "/db/a", b"hello");
        f.write_all_at(b"world", 10).unwrap();
        assert_eq!(f.len().unwrap(), 15);
        let mut b = [0u8; 5];
        f.read_exact_at(&mut b, 10).unwrap();
        assert_eq!(&b, b"world");
        assert!(f.read_exact_at(&mut b, 12).is_err());
        assert_eq!(fs.read_file(&p("/db/a")).unwrap()[5..10], [0; 5]);
        fs.rename(&p("/db/a"), &p("/db/b")).unwrap();
        assert_eq!(fs.list_dir(&p("/db")).unwrap(), vec!["b".to_string()]);
        assert!(!fs.exists(&p("/db/a")));
        assert!(fs.exists(&p("/db/b")));
        // The handle follows the inode through the rename.
        f.write_all_at(b"!", 15).unwrap();
        assert_eq!(fs.read_file(&p("/db/b")).unwrap().len(), 16);
        assert_eq!(fs.total_bytes(), 16);
        assert_eq!(fs.list_files(), vec![p("/db/b")]);
        let r = fs.open(&p("/db/b"), OpenMode::Read).unwrap();
        assert!(r.write_all_at(b"x", 0).is_err());
        assert_eq!(
            fs.open(&p("/db/nope"), OpenMode::Read).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(fs.open(&p("/nodir/x"), OpenMode::CreateTruncate).is_err());
        fs.remove_file(&p("/db/b")).unwrap();
        assert!(fs.list_dir(&p("/db")).unwrap().is_empty());
        assert!(fs.remove_file(&p("/db/b")).is_err());
        f.set_len(3).unwrap();
        assert_eq!(f.len().unwrap(), 3);
    }

    #[test]
    fn unsynced_data_lost_on_power_loss_kept_on_kill() {
        let fs = setup();
        let f = write(&fs, "/db/a", b"durable");
        f.sync_data().unwrap();
        fs.sync_dir(&p("/db")).unwrap();
        f.write_all_at(b"+more", 7).unwrap();
        f.write_all_at(b"D", 0).unwrap();

        let killed = fs.crash(CrashMode::ProcessKill);
        assert_eq!(killed.read_file(&p("/db/a")).unwrap(), b"Durable+more");
        let lost = fs.crash(CrashMode::PowerLoss);
        assert_eq!(lost.read_file(&p("/db/a")).unwrap(), b"durable");
        // After a crash everything present is durable.
        let again = lost.crash(CrashMode::PowerLoss);
        assert_eq!(again.read_file(&p("/db/a")).unwrap(), b"durable");
        // The crashed copy is independent of the original.
        f.write_all_at(b"X", 0).unwrap();
        assert_eq!(lost.read_file(&p("/db/a")).unwrap(), b"durable");
    }

    #[test]
    fn unsynced_creation_and_rename_lost_on_power_loss() {
        let fs = setup();
        let a = write(&fs, "/db/a", b"aaa");
        a.sync_data().unwrap();
        fs.sync_dir(&p("/db")).unwrap();
        let b = write(&fs, "/db/b", b"bbb");
        b.sync_all().unwrap(); // data durable, but the entry is not
        fs.rename(&p("/db/a"), &p("/db/c")).unwrap();

        let lost = fs.crash(CrashMode::PowerLoss);
        assert_eq!(lost.list_files(), vec![p("/db/a")]);
        assert_eq!(lost.read_file(&p("/db/a")).unwrap(), b"aaa");
        let killed = fs.crash(CrashMode::ProcessKill);
        assert_eq!(killed.list_files(), vec![p("/db/b"), p("/db/c")]);

        fs.sync_dir(&p("/db")).unwrap();
        let synced = fs.crash(CrashMode::PowerLoss);
        assert_eq!(synced.list_files(), vec![p("/db/b"), p("/db/c")]);
        assert_eq!(synced.read_file(&p("/db/c")).unwrap(), b"aaa");

        // An unsynced removal comes back after power loss.
        fs.remove_file(&p("/db/b")).unwrap();
        drop(b);
        let back = fs.crash(CrashMode::PowerLoss);
        assert_eq!(back.read_file(&p("/db/b")).unwrap(), b"bbb");
        fs.sync_dir(&p("/db")).unwrap();
        assert!(!fs.crash(CrashMode::PowerLoss).exists(&p("/db/b")));
    }

    #[test]
    fn torn_mode_keeps_a_prefix() {
        let fs = setup();
        let f = write(&fs, "/db/a", b"0123");
        f.sync_data().unwrap();
        fs.sync_dir(&p("/db")).unwrap();
        let tail: Vec<u8> = (0..200u8).collect();
        f.write_all_at(&tail, 4).unwrap();
        let full = fs.read_file(&p("/db/a")).unwrap();
        let mut lens = BTreeSet::new();
        for seed in 0..64 {
            let c = fs.crash(CrashMode::PowerLossTorn { seed });
            let got = c.read_file(&p("/db/a")).unwrap();
            assert!(got.len() >= 4);
            assert_eq!(&got[..], &full[..got.len()]);
            lens.insert(got.len());
            // Deterministic per seed.
            let again = fs.crash(CrashMode::PowerLossTorn { seed });
            assert_eq!(again.read_file(&p("/db/a")).unwrap(), got);
        }
        assert!(lens.len() > 10, "prefix lengths vary: {lens:?}");

        // Overwriting in place: the old durable bytes follow the prefix.
        let g = write(&fs, "/db/g", &[1u8; 100]);
        g.sync_data().unwrap();
        fs.sync_dir(&p("/db")).unwrap();
        g.write_all_at(&[2u8; 50], 0).unwrap();
        for seed in 0..16 {
            let c = fs.crash(CrashMode::PowerLossTorn { seed });
            let got = c.read_file(&p("/db/g")).unwrap();
            assert_eq!(got.len(), 100);
            let k = got.iter().take_while(|&&b| b == 2).count();
            assert!(got[k..].iter().all(|&b| b == 1));
        }
    }

    #[test]
    fn pages_mode_drops_arbitrary_unsynced_pages() {
        let fs = setup();
        let f = write(&fs, "/db/a", &[7u8; 5000]);
        f.sync_data().unwrap();
        fs.sync_dir(&p("/db")).unwrap();
        // Overwrite part of the durable bytes and append six more pages.
        let new: Vec<u8> = (0..6 * CRASH_PAGE_SIZE)
            .map(|i| (i / CRASH_PAGE_SIZE) as u8 + 1)
            .collect();
        f.write_all_at(&new, 4000).unwrap();
        let full = fs.read_file(&p("/db/a")).unwrap();
        let mut holes = 0;
        let mut lens = BTreeSet::new();
        for seed in 0..64 {
            let c = fs.crash(CrashMode::PowerLossPages { seed });
            let got = c.read_file(&p("/db/a")).unwrap();
            assert_eq!(
                got,
                fs.crash(CrashMode::PowerLossPages { seed })
                    .read_file(&p("/db/a"))
                    .unwrap(),
                "deterministic per seed"
            );
            assert!(got.len() >= 5000 && got.len() <= full.len());
            assert!(got[..4000].iter().all(|&b| b == 7));
            lens.insert(got.len());
            // Page by page: all new, all old (7 within the old length),
            // or zeros (a hole beyond it).
            let mut kept = Vec::new();
            for start in (0..got.len()).step_by(CRASH_PAGE_SIZE) {
                let end = (start + CRASH_PAGE_SIZE).min(got.len());
                let from = start.max(4000);
                if from >= end {
                    continue;
                }
                let page = &got[from..end];
                if page == &full[from..end] {
                    kept.push(true);
                } else {
                    let old: Vec<u8> = (from..end).map(|i| if i < 5000 { 7 } else { 0 }).collect();
                    assert_eq!(page, &old[..], "seed {seed}: page at {start} mixed");
                    kept.push(false);
                }
            }
            if kept.windows(2).any(|w| !w[0] && w[1]) {
                holes += 1;
            }
        }
        assert!(holes > 5, "lost pages before kept ones: {holes}");
        assert!(lens.len() > 3, "lengths vary: {lens:?}");
        // Synced data is never touched.
        f.sync_data().unwrap();
        let c = fs.crash(CrashMode::PowerLossPages { seed: 1 });
        assert_eq!(c.read_file(&p("/db/a")).unwrap(), full);
    }

    #[test]
    fn faults_fire_after_skip() {
        let fs = setup();
        fs.inject(fault(FaultOp::Write, Some("log"), 2, Some(1)));
        let f = write(&fs, "/db/x.table", b"t");
        f.write_all_at(b"u", 1).unwrap();
        let l = fs.open(&p("/db/1.log"), OpenMode::CreateTruncate).unwrap();
        l.write_all_at(b"a", 0).unwrap();
        l.write_all_at(b"b", 1).unwrap();
        let e = l.write_all_at(b"c", 2).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert_eq!(fs.read_file(&p("/db/1.log")).unwrap(), b"ab");
        l.write_all_at(b"c", 2).unwrap();

        fs.inject(fault(FaultOp::Sync, None, 0, None));
        assert!(l.sync_data().is_err());
        assert!(f.sync_all().is_err());
        fs.clear_faults();
        l.sync_data().unwrap();

        for (op, run) in [
            (FaultOp::Open, 0),
            (FaultOp::Read, 1),
            (FaultOp::SyncDir, 2),
            (FaultOp::Rename, 3),
            (FaultOp::Remove, 4),
        ] {
            fs.inject(fault(op, None, 0, Some(1)));
            let r = match run {
                0 => fs.open(&p("/db/1.log"), OpenMode::Read).map(|_| ()),
                1 => l.read_at(&mut [0u8; 1], 0).map(|_| ()),
                2 => fs.sync_dir(&p("/db")),
                3 => fs.rename(&p("/db/1.log"), &p("/db/2.log")),
                _ => fs.remove_file(&p("/db/1.log")),
            };
            assert!(r.is_err(), "{op:?} should fail");
            fs.clear_faults();
        }
        assert!(fs.exists(&p("/db/1.log")));
    }

    #[test]
    fn freeze_after_fails_every_later_mutation() {
        let fs = setup();
        let f = write(&fs, "/db/a", b"x");
        let before = fs.mutating_ops();
        assert_eq!(before, 2);
        fs.freeze_after(2);
        f.write_all_at(b"y", 1).unwrap();
        f.sync_data().unwrap();
        assert!(f.write_all_at(b"z", 2).is_err());
        assert!(fs.sync_dir(&p("/db")).is_err());
        assert!(fs.open(&p("/db/b"), OpenMode::CreateTruncate).is_err());
        assert_eq!(fs.mutating_ops(), 7);
        // Reads still work.
        assert_eq!(fs.read_file(&p("/db/a")).unwrap(), b"xy");
        let c = fs.crash(CrashMode::ProcessKill);
        assert_eq!(c.read_file(&p("/db/a")).unwrap(), b"xy");
        c.open(&p("/db/a"), OpenMode::ReadWrite)
            .unwrap()
            .write_all_at(b"z", 2)
            .unwrap();
    }

    #[test]
    fn capacity_gives_enospc_until_raised() {
        let fs = setup();
        fs.set_capacity(Some(10));
        assert_eq!(fs.available_space(&p("/db")), Some(10));
        let f = write(&fs, "/db/a", b"12345678");
        let e = f.write_all_at(b"abcd", 8).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(crate::error::is_no_space(&e));
        assert_eq!(fs.read_file(&p("/db/a")).unwrap(), b"12345678");
        // Overwriting needs no space.
        f.write_all_at(b"ab", 0).unwrap();
        assert!(f.set_len(20).is_err());
        assert_eq!(fs.available_space(&p("/db")), Some(2));
        fs.set_capacity(Some(100));
        f.write_all_at(b"abcd", 8).unwrap();
        assert_eq!(fs.total_bytes(), 12);
        fs.set_capacity(None);
        assert_eq!(fs.available_space(&p("/db")), None);
        // Removing frees space once no handle is open.
        fs.set_capacity(Some(12));
        fs.remove_file(&p("/db/a")).unwrap();
        assert_eq!(fs.total_bytes(), 12);
        drop(f);
        assert_eq!(fs.total_bytes(), 0);
    }

    #[test]
    fn corrupt_flips_current_and_durable() {
        let fs = setup();
        let f = write(&fs, "/db/a", b"abc");
        f.sync_data().unwrap();
        fs.sync_dir(&p("/db")).unwrap();
        fs.corrupt(&p("/db/a"), 1, 0x20).unwrap();
        assert_eq!(fs.read_file(&p("/db/a")).unwrap(), b"aBc");
        let c = fs.crash(CrashMode::PowerLoss);
        assert_eq!(c.read_file(&p("/db/a")).unwrap(), b"aBc");
        assert!(fs.corrupt(&p("/db/a"), 3, 1).is_err());
    }

    #[test]
    fn locks_are_exclusive_and_released() {
        let fs = setup();
        let l = fs.lock(&p("/db/LOCK")).unwrap();
        assert_eq!(
            fs.lock(&p("/db/LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let crashed = fs.crash(CrashMode::ProcessKill);
        assert!(crashed.lock(&p("/db/LOCK")).is_ok());
        drop(l);
        assert!(fs.lock(&p("/db/LOCK")).is_ok());
    }
}
