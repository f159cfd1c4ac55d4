//! The properties block (layout in the module doc).

use super::SeqRange;
use crate::coding::{put_length_prefixed, put_varint64, Decoder};
use bytes::Bytes;

/// Table-wide facts stored in the properties block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Props {
    pub number: u64,
    pub entries: u64,
    pub tombstones: u64,
    pub blob_refs: u64,
    pub blob_ref_bytes: u64,
    pub data_blocks: u64,
    pub smallest: Bytes,
    pub largest: Bytes,
    /// Sequence numbers of the entries (format version 2; version 1 tables
    /// read as `0..=0`, older than anything written since).
    pub seqs: SeqRange,
}

impl Props {
    /// Encodes the block contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.smallest.len() + self.largest.len());
        for v in [
            self.number,
            self.entries,
            self.tombstones,
            self.blob_refs,
            self.blob_ref_bytes,
            self.data_blocks,
        ] {
            put_varint64(&mut out, v);
        }
        put_length_prefixed(&mut out, &self.smallest);
        put_length_prefixed(&mut out, &self.largest);
        put_varint64(&mut out, self.seqs.min);
        put_varint64(&mut out, self.seqs.max);
        out
    }

    /// Decodes the block contents of a table of format `version` (1 or 2);
    /// `None` if malformed or followed by garbage.
    pub fn decode(contents: &Bytes, version: u32) -> Option<Props> {
        let mut d = Decoder::new(contents);
        let p = Props {
            number: d.varint64()?,
            entries: d.varint64()?,
            tombstones: d.varint64()?,
            blob_refs: d.varint64()?,
            blob_ref_bytes: d.varint64()?,
            data_blocks: d.varint64()?,
            smallest: Bytes::copy_from_slice(d.length_prefixed()?),
            largest: Bytes::copy_from_slice(d.length_prefixed()?),
            seqs: match version {
                1 => SeqRange::default(),
                _ => SeqRange {
                    min: d.varint64()?,
                    max: d.varint64()?,
                },
            },
        };
        (d.remaining() == 0 && p.seqs.min <= p.seqs.max).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_has_no_sequence_range_and_version_2_requires_one() {
        let p = Props {
            number: 4,
            entries: 2,
            smallest: Bytes::from_static(b"a"),
            largest: Bytes::from_static(b"b"),
            seqs: SeqRange { min: 300, max: 301 },
            ..Props::default()
        };
        let v2 = Bytes::from(p.encode());
        assert_eq!(Props::decode(&v2, 2), Some(p.clone()));
        // Version 1 ends after `largest`: 300 and 301 take 2 bytes each.
        let v1 = v2.slice(..v2.len() - 4);
        let old = Props::decode(&v1, 1).unwrap();
        assert_eq!(old.seqs, SeqRange::default());
        assert_eq!(old.largest, p.largest);
        assert_eq!(Props::decode(&v1, 2), None, "v2 without a range");
        assert_eq!(Props::decode(&v2, 1), None, "v1 followed by garbage");
        // A range whose min exceeds its max is malformed.
        let bad = Props {
            seqs: SeqRange { min: 9, max: 8 },
            ..p
        };
        assert_eq!(Props::decode(&Bytes::from(bad.encode()), 2), None);
    }
}
