//! Recovering the intact records of a damaged blob file (for the repair
//! tool).

use super::record::{check_footer, parse_head, verify, FOOTER_LEN, HEADER_LEN, RECORD_HEADER_MAX};
use super::window::Window;
use super::BlobRecord;
use crate::error::{Error, IoContext, Result};
use crate::fs::{FsRef, OpenMode};
use crate::types::BlobRef;
use bytes::Bytes;
use std::path::Path;

/// Scans a possibly damaged blob file and returns every record whose
/// checksum is intact, as `(pointer, key, value)` in file order, plus the
/// number of bytes of the record region that belong to no recovered record.
///
/// The header is not required to be intact: records are looked for from
/// offset [`HEADER_LEN`] with the given file `number` (which seeds every
/// record's CRC). If the footer is intact the scan stops where it begins,
/// otherwise at the end of the file. After damage the scan resynchronises by
/// trying every following byte offset until a record verifies; claimed
/// lengths are checked against the limits and the bytes left before anything
/// is read for them. A record is accepted only if its CRC (seeded with the
/// file number) verifies, so a record's bytes embedded inside a damaged
/// value are found only if they were a valid record of this very file.
///
/// Errors only if the file cannot be opened or read.
pub fn salvage(fs: &FsRef, path: &Path, number: u64) -> Result<(Vec<BlobRecord>, u64)> {
    let file = fs
        .open(path, OpenMode::Read)
        .ctx(|| format!("opening blob file {}", path.display()))?;
    let file_size = file
        .len()
        .ctx(|| format!("reading the size of blob file {}", path.display()))?;
    if file_size <= HEADER_LEN {
        return Ok((Vec::new(), 0));
    }
    let mut end = file_size;
    if file_size >= HEADER_LEN + FOOTER_LEN {
        let mut footer = [0u8; FOOTER_LEN as usize];
        let at = file_size - FOOTER_LEN;
        match file.read_exact_at(&mut footer, at) {
            Ok(()) => {
                if check_footer(&footer, number, file_size).is_ok() {
                    end = at;
                }
            }
            Err(e) => {
                return Err(Error::io(
                    format!("reading blob file {}", path.display()),
                    e,
                ))
            }
        }
    }

    let mut window = Window::new(file, path, end);
    let mut found = Vec::new();
    let mut skipped = 0u64;
    let mut pos = HEADER_LEN;
    while pos < end {
        match try_record(&mut window, number, pos, end)? {
            Some(item) => {
                pos += u64::from(item.0.len);
                found.push(item);
            }
            None => {
                pos += 1;
                skipped += 1;
            }
        }
    }
    Ok((found, skipped))
}

/// The record at `pos` if one verifies there; I/O errors are returned.
fn try_record(window: &mut Window, number: u64, pos: u64, end: u64) -> Result<Option<BlobRecord>> {
    let avail = end - pos;
    let hn = (RECORD_HEADER_MAX as u64).min(avail) as usize;
    let head = match parse_head(number, window.get(pos, hn)?) {
        Ok(h) => h,
        Err(_) => return Ok(None),
    };
    let total = head.total();
    if total as u64 > avail {
        return Ok(None);
    }
    let rec = window.get(pos, total)?;
    if verify(number, &head, rec).is_err() {
        return Ok(None);
    }
    let r = BlobRef {
        file: number,
        offset: pos,
        // total <= BLOCK_LEN_MAX < u32::MAX, checked by parse_head.
        len: total as u32,
        checksum: head.crc,
    };
    let key = Bytes::copy_from_slice(&rec[head.key_range()]);
    let value = Bytes::copy_from_slice(&rec[head.value_range()]);
    Ok(Some((r, key, value)))
}
