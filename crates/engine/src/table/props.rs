//! The properties block (layout in the module doc).

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
        out
    }

    /// Decodes block contents; `None` if malformed or followed by garbage.
    pub fn decode(contents: &Bytes) -> Option<Props> {
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
        };
        (d.remaining() == 0).then_some(p)
    }
}
