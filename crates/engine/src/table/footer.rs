//! Block frames, block handles and the footer (layout in the module doc).

use crate::error::{Error, Result};
use crate::fs::File;
use crate::limits::BLOCK_LEN_MAX;
use bytes::Bytes;
use std::io;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

/// First bytes of every block frame.
pub(crate) const BLOCK_MAGIC: [u8; 4] = [0xE5, 0xB1, 0x0C, 0x4B];
/// Frame header: magic, kind, len.
pub(crate) const FRAME_HEADER_LEN: usize = 9;
/// Frame trailer: checksum.
pub(crate) const FRAME_TRAILER_LEN: usize = 8;
/// Bytes a frame adds around its contents.
pub(crate) const FRAME_OVERHEAD: u64 = (FRAME_HEADER_LEN + FRAME_TRAILER_LEN) as u64;

/// Block kinds.
pub(crate) const KIND_DATA: u8 = 0;
pub(crate) const KIND_FILTER: u8 = 1;
pub(crate) const KIND_INDEX: u8 = 2;
pub(crate) const KIND_PROPS: u8 = 3;

/// Footer size in bytes.
pub(crate) const FOOTER_LEN: usize = 68;
/// Footer magic, its last 8 bytes.
pub(crate) const FOOTER_MAGIC: [u8; 8] = *b"EscblSST";
/// The format version this code writes. It reads this one and
/// [`FORMAT_VERSION_V1`] (no sequence numbers in the properties).
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The first format version, still read.
pub(crate) const FORMAT_VERSION_V1: u32 = 1;

/// Where a block's frame is: offset of its first byte and contents length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BlockHandle {
    pub offset: u64,
    pub len: u64,
}

impl BlockHandle {
    /// Offset just past the frame (saturating; callers check bounds first).
    pub fn end(&self) -> u64 {
        self.offset
            .saturating_add(self.len)
            .saturating_add(FRAME_OVERHEAD)
    }
}

/// Appends a frame holding `contents` to `out`.
pub(crate) fn append_frame(out: &mut Vec<u8>, kind: u8, contents: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&BLOCK_MAGIC);
    out.push(kind);
    out.extend_from_slice(&(contents.len() as u32).to_le_bytes());
    out.extend_from_slice(contents);
    let sum = xxh3_64(&out[start..]);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// Reads `buf.len()` bytes at `offset`, reporting a short file as corruption.
pub(crate) fn read_exact(file: &dyn File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::corruption(path, offset, "file ends inside a block")
        } else {
            Error::io(format!("read table {} at {offset}", path.display()), e)
        }
    })
}

/// Checks a frame held in `frame` (header, contents, trailer) read from
/// `offset`; returns the contents range. `expect_len` is the handle's length
/// if known.
pub(crate) fn check_frame(
    frame: &[u8],
    path: &Path,
    offset: u64,
    kind: u8,
    expect_len: Option<u64>,
) -> Result<()> {
    let bad = |reason: &str| Error::corruption(path, offset, reason.to_string());
    if frame.len() < FRAME_HEADER_LEN + FRAME_TRAILER_LEN {
        return Err(bad("block frame too short"));
    }
    if frame[0..4] != BLOCK_MAGIC {
        return Err(bad("bad block magic"));
    }
    if frame[4] != kind {
        return Err(bad(&format!(
            "block kind {} where {} was expected",
            frame[4], kind
        )));
    }
    let len = u32::from_le_bytes([frame[5], frame[6], frame[7], frame[8]]) as u64;
    let actual = (frame.len() - FRAME_HEADER_LEN - FRAME_TRAILER_LEN) as u64;
    if len != actual || expect_len.is_some_and(|l| l != len) {
        return Err(bad("block length does not match its handle"));
    }
    let body_end = frame.len() - FRAME_TRAILER_LEN;
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&frame[body_end..]);
    if xxh3_64(&frame[..body_end]) != u64::from_le_bytes(sum) {
        return Err(bad("block checksum mismatch"));
    }
    Ok(())
}

/// Reads and checks the block named by `handle`, which must end at or
/// before `limit`; returns its contents.
pub(crate) fn read_block(
    file: &dyn File,
    path: &Path,
    handle: BlockHandle,
    kind: u8,
    limit: u64,
) -> Result<Bytes> {
    if handle.len > BLOCK_LEN_MAX as u64 {
        return Err(Error::corruption(
            path,
            handle.offset,
            format!("block length {} exceeds the limit", handle.len),
        ));
    }
    let end = handle
        .offset
        .checked_add(handle.len + FRAME_OVERHEAD)
        .filter(|&e| e <= limit)
        .ok_or_else(|| Error::corruption(path, handle.offset, "block extends past its region"))?;
    let frame_len = (end - handle.offset) as usize;
    let mut frame = vec![0u8; frame_len];
    read_exact(file, path, &mut frame, handle.offset)?;
    check_frame(&frame, path, handle.offset, kind, Some(handle.len))?;
    let contents = Bytes::from(frame);
    Ok(contents.slice(FRAME_HEADER_LEN..frame_len - FRAME_TRAILER_LEN))
}

/// The decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub filter: BlockHandle,
    pub index: BlockHandle,
    pub props: BlockHandle,
    /// Format version: [`FORMAT_VERSION_V1`] or [`FORMAT_VERSION`] when
    /// read; writers use [`FORMAT_VERSION`].
    pub version: u32,
}

impl Footer {
    /// Encodes the footer (exactly [`FOOTER_LEN`] bytes).
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        let fields = [
            self.filter.offset,
            self.filter.len,
            self.index.offset,
            self.index.len,
            self.props.offset,
            self.props.len,
        ];
        for (i, v) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out[48..52].copy_from_slice(&self.version.to_le_bytes());
        let sum = xxh3_64(&out[..52]);
        out[52..60].copy_from_slice(&sum.to_le_bytes());
        out[60..68].copy_from_slice(&FOOTER_MAGIC);
        out
    }

    /// Decodes and checks a footer read from `offset`.
    pub fn decode(buf: &[u8; FOOTER_LEN], path: &Path, offset: u64) -> Result<Footer> {
        let bad = |reason: &str| Error::corruption(path, offset, reason.to_string());
        if buf[60..68] != FOOTER_MAGIC {
            return Err(bad("bad footer magic (not a table file, or truncated)"));
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if xxh3_64(&buf[..52]) != u64_at(52) {
            return Err(bad("footer checksum mismatch"));
        }
        let version = u32::from_le_bytes([buf[48], buf[49], buf[50], buf[51]]);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_V1 {
            return Err(bad(&format!("unsupported table format version {version}")));
        }
        Ok(Footer {
            filter: BlockHandle {
                offset: u64_at(0),
                len: u64_at(8),
            },
            index: BlockHandle {
                offset: u64_at(16),
                len: u64_at(24),
            },
            props: BlockHandle {
                offset: u64_at(32),
                len: u64_at(40),
            },
            version,
        })
    }
}
