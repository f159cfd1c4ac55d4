//! Encoding and checking of the header, records and footer of a blob file
//! (layout in the parent module's documentation).

use crate::coding::{put_varint32, Decoder};
use crate::limits::{BLOCK_LEN_MAX, KEY_LEN_MAX, VALUE_LEN_MAX_LIMIT};
use std::ops::Range;

/// Magic bytes at the start of every blob file.
pub const HEADER_MAGIC: [u8; 8] = *b"ESCBLOB1";
/// Magic bytes in the footer of every finished blob file.
pub const FOOTER_MAGIC: [u8; 8] = *b"ESCBLOBF";
/// The format version written in the header.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the file header.
pub const HEADER_LEN: u64 = 24;
/// Length of the file footer.
pub const FOOTER_LEN: u64 = 28;
/// Smallest possible record: crc, two one-byte varints, header crc, empty
/// key and value.
pub const RECORD_LEN_MIN: usize = 4 + 1 + 1 + 4;
/// Longest possible fixed part of a record: crc, two 5-byte varints and the
/// header crc.
pub const RECORD_HEADER_MAX: usize = 4 + 5 + 5 + 4;

/// CRC32C seeded with the file number, over `body`.
pub(crate) fn crc_with_number(number: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&number.to_le_bytes()), body)
}

/// Encodes the file header.
pub(crate) fn encode_header(number: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&HEADER_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&number.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a file header against the expected file number.
pub(crate) fn check_header(h: &[u8], number: u64) -> Result<(), String> {
    let mut d = Decoder::new(h);
    let magic = d.bytes(8).ok_or("header truncated")?;
    let version = d.u32_le().ok_or("header truncated")?;
    let stored_number = d.u64_le().ok_or("header truncated")?;
    let crc = d.u32_le().ok_or("header truncated")?;
    if magic != HEADER_MAGIC {
        return Err("not a blob file (bad header magic)".into());
    }
    if crc != crc32c::crc32c(&h[0..20]) {
        return Err("header checksum mismatch".into());
    }
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported blob format version {version} (expected {FORMAT_VERSION})"
        ));
    }
    if stored_number != number {
        return Err(format!(
            "header names blob file {stored_number}, expected {number}"
        ));
    }
    Ok(())
}

/// Encodes the footer.
pub(crate) fn encode_footer(
    number: u64,
    records: u64,
    record_bytes: u64,
) -> [u8; FOOTER_LEN as usize] {
    let mut f = [0u8; FOOTER_LEN as usize];
    f[0..8].copy_from_slice(&records.to_le_bytes());
    f[8..16].copy_from_slice(&record_bytes.to_le_bytes());
    f[16..24].copy_from_slice(&FOOTER_MAGIC);
    let crc = crc_with_number(number, &f[0..24]);
    f[24..28].copy_from_slice(&crc.to_le_bytes());
    f
}

/// Decodes and checks a footer read from the end of a file of `file_size`
/// bytes; returns `(records, record_bytes)`.
pub(crate) fn check_footer(f: &[u8], number: u64, file_size: u64) -> Result<(u64, u64), String> {
    let mut d = Decoder::new(f);
    let records = d.u64_le().ok_or("footer truncated")?;
    let record_bytes = d.u64_le().ok_or("footer truncated")?;
    let magic = d.bytes(8).ok_or("footer truncated")?;
    let crc = d.u32_le().ok_or("footer truncated")?;
    if magic != FOOTER_MAGIC {
        return Err("no footer (file unfinished or truncated)".into());
    }
    if crc != crc_with_number(number, &f[0..24]) {
        return Err("footer checksum mismatch".into());
    }
    let expected = HEADER_LEN
        .checked_add(record_bytes)
        .and_then(|n| n.checked_add(FOOTER_LEN));
    if expected != Some(file_size) {
        return Err(format!(
            "footer claims {record_bytes} record bytes but the file is {file_size} bytes"
        ));
    }
    if (records == 0) != (record_bytes == 0)
        || records.saturating_mul(RECORD_LEN_MIN as u64) > record_bytes
    {
        return Err(format!(
            "footer claims {records} records in {record_bytes} bytes"
        ));
    }
    Ok((records, record_bytes))
}

/// Appends one record to `out`; returns `(crc, record length)`.
///
/// The caller has checked the key and value lengths against the limits.
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    number: u64,
    key: &[u8],
    value: &[u8],
) -> (u32, u32) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    // Lengths are bounded by the limits (checked by the caller), so they fit.
    put_varint32(out, key.len() as u32);
    put_varint32(out, value.len() as u32);
    let head_crc = crc_with_number(number, &out[start + 4..]);
    out.extend_from_slice(&head_crc.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc_with_number(number, &out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    (crc, (out.len() - start) as u32)
}

/// The fixed part of a record, parsed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordHead {
    /// The stored CRC.
    pub crc: u32,
    /// Bytes of crc, the two varints and the header crc.
    pub head_len: usize,
    /// Key length.
    pub key_len: usize,
    /// Value length.
    pub value_len: usize,
}

impl RecordHead {
    /// Length of the whole record.
    pub fn total(&self) -> usize {
        self.head_len + self.key_len + self.value_len
    }
    /// Where the key lies within the record.
    pub fn key_range(&self) -> Range<usize> {
        self.head_len..self.head_len + self.key_len
    }
    /// Where the value lies within the record.
    pub fn value_range(&self) -> Range<usize> {
        self.head_len + self.key_len..self.total()
    }
}

/// Parses the fixed part of a record from the front of `buf`, which holds
/// the record's first bytes (at least [`RECORD_HEADER_MAX`] of them unless
/// the data region ends sooner). Checks the header crc and the lengths
/// against the limits; the caller checks [`RecordHead::total`] against the
/// space left, and [`verify`]s the whole record.
pub(crate) fn parse_head(number: u64, buf: &[u8]) -> Result<RecordHead, String> {
    let mut d = Decoder::new(buf);
    let crc = d.u32_le().ok_or("record header truncated")?;
    let key_len = d.varint32().ok_or("malformed record key length")? as usize;
    let value_len = d.varint32().ok_or("malformed record value length")? as usize;
    let varints_end = d.position();
    let head_crc = d.u32_le().ok_or("record header truncated")?;
    if head_crc != crc_with_number(number, &buf[4..varints_end]) {
        return Err("record header checksum mismatch".into());
    }
    if key_len > KEY_LEN_MAX {
        return Err(format!("record key length {key_len} exceeds the limit"));
    }
    if value_len > VALUE_LEN_MAX_LIMIT {
        return Err(format!("record value length {value_len} exceeds the limit"));
    }
    let head = RecordHead {
        crc,
        head_len: d.position(),
        key_len,
        value_len,
    };
    if head.total() > BLOCK_LEN_MAX {
        return Err(format!("record length {} exceeds the limit", head.total()));
    }
    Ok(head)
}

/// Verifies a whole record (`rec.len() == head.total()`) against its CRC.
pub(crate) fn verify(number: u64, head: &RecordHead, rec: &[u8]) -> Result<(), String> {
    if rec.len() != head.total() {
        return Err(format!(
            "record is {} bytes, its header says {}",
            rec.len(),
            head.total()
        ));
    }
    let actual = crc_with_number(number, &rec[4..]);
    if actual != head.crc {
        return Err(format!(
            "record checksum mismatch (stored {:#010x}, computed {actual:#010x})",
            head.crc
        ));
    }
    Ok(())
}
