//! The records of one log append, held so that long values are written
//! from where they already are.
//!
//! A [`Batch`] holds exactly the bytes [`encode_record`](super::encode_record)
//! and [`encode_group`](super::encode_group) would put into one buffer, in
//! the same order (the record layout is in the [module doc](super)). The
//! difference: an inline value of at least [`SHARE_VALUE_MIN`] bytes is not
//! copied into the buffer; the batch keeps the value's [`Bytes`] and the
//! offset in the buffer where its bytes belong, and
//! [`WalWriter::append_batch`](super::WalWriter::append_batch) hands the
//! pieces to one vectored write. The record's checksum is computed over its
//! pieces, so what reaches the file is byte for byte what the copying
//! encoder wrote (`a_batch_holds_the_bytes_of_the_copying_encoder`).
//!
//! Invariant: the spliced values are in ascending offset order, each offset
//! at most `buf.len()`, and [`Batch::len`] is `buf.len()` plus the lengths
//! of the spliced values.

use super::{encode_group, finish_header_over, HEADER_LEN};
use crate::coding::put_varint64;
use crate::types::Value;
use bytes::Bytes;

/// Inline values at least this long are written from their own buffer
/// rather than copied into the batch (below it, a copy costs less than one
/// more buffer in the vectored write).
pub const SHARE_VALUE_MIN: usize = 1024;

/// Encoded records waiting for one append.
#[derive(Debug, Default)]
pub struct Batch {
    /// Everything but the spliced values.
    buf: Vec<u8>,
    /// Values written between the buffer's bytes: (offset in `buf`, value).
    values: Vec<(usize, Bytes)>,
    /// Bytes of `values`.
    values_len: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// An empty batch whose buffer has room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Batch {
        Batch {
            buf: Vec::with_capacity(bytes),
            ..Batch::default()
        }
    }

    /// Empties the batch, keeping its buffer's room.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.values.clear();
        self.values_len = 0;
    }

    /// Bytes the batch will write.
    pub fn len(&self) -> usize {
        self.buf.len() + self.values_len
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one record for `key`/`value` to segment `log_number`, as
    /// [`encode_record`](super::encode_record) does.
    pub fn push_record(&mut self, log_number: u64, key: &[u8], value: &Value) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; HEADER_LEN]);
        put_varint64(&mut self.buf, key.len() as u64);
        self.buf.extend_from_slice(key);
        match value {
            Value::Inline(v) if v.len() >= SHARE_VALUE_MIN => {
                // The kind byte and the length, then the value's bytes from
                // the value itself.
                self.buf.push(value.kind());
                put_varint64(&mut self.buf, v.len() as u64);
                finish_header_over(&mut self.buf, start, log_number, v);
                self.values.push((self.buf.len(), v.clone()));
                self.values_len += v.len();
            }
            _ => {
                value.encode_into(&mut self.buf);
                finish_header_over(&mut self.buf, start, log_number, &[]);
            }
        }
    }

    /// Appends a record group, as [`encode_group`] does (copied); false if
    /// it does not fit one record, leaving the batch as it was.
    pub fn push_group(&mut self, log_number: u64, entries: &[(Bytes, Value)]) -> bool {
        if let [(key, value)] = entries {
            self.push_record(log_number, key, value);
            return true;
        }
        encode_group(&mut self.buf, log_number, entries)
    }

    /// The batch's bytes in order, as slices to write one after the other.
    pub fn pieces(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(2 * self.values.len() + 1);
        let mut from = 0;
        for (at, v) in &self.values {
            out.push(&self.buf[from..*at]);
            out.push(&v[..]);
            from = *at;
        }
        out.push(&self.buf[from..]);
        out.retain(|p| !p.is_empty());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{encode_group, encode_record};

    #[test]
    fn a_batch_holds_the_bytes_of_the_copying_encoder() {
        let mut copied = Vec::new();
        let mut batch = Batch::new();
        let long = Bytes::from(vec![b'v'; SHARE_VALUE_MIN + 17]);
        let longer = Bytes::from((0..70_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let group = vec![
            (Bytes::from_static(b"g1"), Value::Inline(long.clone())),
            (Bytes::from_static(b"g2"), Value::Tombstone),
        ];
        let cases: Vec<(Bytes, Value)> = vec![
            (
                Bytes::from_static(b"short"),
                Value::Inline(Bytes::from_static(b"x")),
            ),
            (Bytes::from_static(b"long"), Value::Inline(long.clone())),
            (Bytes::from_static(b"gone"), Value::Tombstone),
            (Bytes::from_static(b"longer"), Value::Inline(longer.clone())),
            (
                Bytes::from_static(b"edge"),
                Value::Inline(long.slice(..SHARE_VALUE_MIN)),
            ),
            (
                Bytes::from_static(b"edge-1"),
                Value::Inline(long.slice(1..SHARE_VALUE_MIN)),
            ),
        ];
        for (k, v) in &cases {
            encode_record(&mut copied, 9, k, v);
            batch.push_record(9, k, v);
        }
        assert!(encode_group(&mut copied, 9, &group));
        assert!(batch.push_group(9, &group));
        encode_record(&mut copied, 9, b"last", &Value::Inline(long.clone()));
        batch.push_record(9, b"last", &Value::Inline(long));
        assert_eq!(batch.len(), copied.len());
        assert!(batch.pieces().concat() == copied);
        assert!(batch.pieces().len() > 3, "long values are not copied");
        batch.clear();
        assert!(batch.is_empty());
        assert!(batch.pieces().is_empty());
    }
}
