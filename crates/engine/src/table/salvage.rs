//! Salvage for the repair tool: recovers the entries of every intact data
//! block of a possibly damaged table without trusting its index or footer.
//!
//! The file is scanned frame by frame from offset 0. A frame is accepted
//! only if its magic, kind, length and checksum are all good. When a frame
//! is bad, and its header looks sane and the frame right after it is good,
//! the bad frame is skipped by its length; otherwise the scan resumes at the
//! next occurrence of the block magic. Each skipped region counts as one
//! damaged block (so the count is exact for isolated damaged blocks and a
//! lower bound otherwise).

use super::block::Block;
use super::footer::{
    check_frame, read_exact, Footer, BLOCK_MAGIC, FOOTER_LEN, FRAME_HEADER_LEN, FRAME_OVERHEAD,
    FRAME_TRAILER_LEN, KIND_DATA, KIND_PROPS,
};
use crate::error::{IoContext, Result};
use crate::fs::{File, FsRef, OpenMode};
use crate::limits::BLOCK_LEN_MAX;
use crate::types::Value;
use bytes::Bytes;
use std::path::Path;

/// Scans a possibly damaged table file block by block and returns every
/// entry from data blocks whose checksum is intact, in file order, plus the
/// number of damaged blocks found. Does not trust the index or footer.
/// Fails only on I/O errors.
pub fn salvage(fs: &FsRef, path: &Path) -> Result<(Vec<(Bytes, Value)>, u64)> {
    salvage_with_gaps(fs, path).map(|s| (s.entries, s.damaged))
}

/// What [`salvage_with_gaps`] recovered from a table.
#[derive(Debug, Default)]
pub struct Salvaged {
    /// Entries of the intact data blocks, in file (and so key) order.
    pub entries: Vec<(Bytes, Value)>,
    /// Damaged blocks found.
    pub damaged: u64,
    /// Where damage lies among the entries, ascending: a gap `g` means
    /// damaged bytes (whatever block they were) lie after `entries[g - 1]`
    /// and before `entries[g]`, so lost entries, if any, have keys strictly
    /// between those two (`g == 0`: before the first, `g == entries.len()`:
    /// after the last).
    pub gaps: Vec<usize>,
}

/// [`salvage`], also saying where the damage lies among the entries.
pub fn salvage_with_gaps(fs: &FsRef, path: &Path) -> Result<Salvaged> {
    let file = fs
        .open(path, OpenMode::Read)
        .ctx(|| format!("open table {}", path.display()))?;
    let file = &*file;
    let size = file
        .len()
        .ctx(|| format!("size of table {}", path.display()))?;
    // Do not scan the footer if it is intact.
    let mut end = size;
    if size >= FOOTER_LEN as u64 {
        let mut buf = [0u8; FOOTER_LEN];
        let at = size - FOOTER_LEN as u64;
        if read_exact(file, path, &mut buf, at).is_ok() && Footer::decode(&buf, path, at).is_ok() {
            end = at;
        }
    }
    let mut entries = Vec::new();
    let mut damaged = 0u64;
    let mut gaps: Vec<usize> = Vec::new();
    let gap_at = |gaps: &mut Vec<usize>, at: usize| {
        if gaps.last() != Some(&at) {
            gaps.push(at);
        }
    };
    let mut pos = 0u64;
    while pos < end {
        match frame_at(file, path, pos, end)? {
            Frame::Good {
                kind,
                contents,
                next,
            } => {
                if kind == KIND_DATA {
                    if let Err(()) = collect(contents, path, pos, &mut entries) {
                        damaged += 1;
                        gap_at(&mut gaps, entries.len());
                    }
                }
                pos = next;
            }
            Frame::Bad { next } => {
                damaged += 1;
                gap_at(&mut gaps, entries.len());
                let skip = match next {
                    Some(n) if n == end => Some(n),
                    Some(n) => match frame_at(file, path, n, end)? {
                        Frame::Good { .. } => Some(n),
                        Frame::Bad { .. } => None,
                    },
                    None => None,
                };
                pos = match skip {
                    Some(n) => n,
                    None => next_magic(file, path, pos + 1, end)?,
                };
            }
        }
    }
    Ok(Salvaged {
        entries,
        damaged,
        gaps,
    })
}

enum Frame {
    /// An intact frame; `next` is the offset just past it.
    Good {
        kind: u8,
        contents: Bytes,
        next: u64,
    },
    /// No intact frame here; `next` is where it would end if its header
    /// looks sane.
    Bad { next: Option<u64> },
}

/// Tries to read an intact frame at `pos` that ends by `end`.
fn frame_at(file: &dyn File, path: &Path, pos: u64, end: u64) -> Result<Frame> {
    if end - pos < FRAME_OVERHEAD {
        return Ok(Frame::Bad { next: None });
    }
    let mut hdr = [0u8; FRAME_HEADER_LEN];
    if !read_or_short(file, path, &mut hdr, pos)? || hdr[0..4] != BLOCK_MAGIC || hdr[4] > KIND_PROPS
    {
        return Ok(Frame::Bad { next: None });
    }
    let len = u64::from(u32::from_le_bytes([hdr[5], hdr[6], hdr[7], hdr[8]]));
    if len > BLOCK_LEN_MAX as u64 || len + FRAME_OVERHEAD > end - pos {
        return Ok(Frame::Bad { next: None });
    }
    let next = pos + len + FRAME_OVERHEAD;
    let mut frame = vec![0u8; (len + FRAME_OVERHEAD) as usize];
    if !read_or_short(file, path, &mut frame, pos)?
        || check_frame(&frame, path, pos, hdr[4], None).is_err()
    {
        return Ok(Frame::Bad { next: Some(next) });
    }
    let n = frame.len();
    let contents = Bytes::from(frame).slice(FRAME_HEADER_LEN..n - FRAME_TRAILER_LEN);
    Ok(Frame::Good {
        kind: hdr[4],
        contents,
        next,
    })
}

/// Reads exactly; `Ok(false)` if the file turned out shorter.
fn read_or_short(file: &dyn File, path: &Path, buf: &mut [u8], pos: u64) -> Result<bool> {
    match read_exact(file, path, buf, pos) {
        Ok(()) => Ok(true),
        Err(e) if e.is_corruption() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Offset of the next block magic at or after `from`, or `end`.
fn next_magic(file: &dyn File, path: &Path, from: u64, end: u64) -> Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut pos = from;
    let mut buf = Vec::new();
    while pos < end {
        let n = CHUNK.min(end - pos) as usize;
        buf.resize(n, 0);
        if !read_or_short(file, path, &mut buf, pos)? {
            return Ok(end);
        }
        if let Some(i) = buf
            .windows(BLOCK_MAGIC.len())
            .position(|w| w == BLOCK_MAGIC)
        {
            return Ok(pos + i as u64);
        }
        if pos + n as u64 >= end {
            break;
        }
        // Overlap so a magic split across chunks is still found.
        pos += (n - (BLOCK_MAGIC.len() - 1)) as u64;
    }
    Ok(end)
}

/// Decodes every entry of a data block; `Err` if the block is malformed
/// (then nothing from it is kept).
fn collect(
    contents: Bytes,
    path: &Path,
    pos: u64,
    out: &mut Vec<(Bytes, Value)>,
) -> std::result::Result<(), ()> {
    let block = Block::parse(contents, path, pos + FRAME_HEADER_LEN as u64).map_err(|_| ())?;
    let mut it = block.iter();
    let mut got = Vec::new();
    while let Some(e) = it.next_entry(path).map_err(|_| ())? {
        got.push(e);
    }
    out.append(&mut got);
    Ok(())
}
