//! Values as the engine stores them: inline bytes, a pointer to a blob file,
//! or a tombstone.

use crate::coding::{put_varint32, put_varint64, Decoder};
use bytes::Bytes;

/// Where a separated value lives: a record in a blob file.
///
/// Encoded in tables as: varint u64 file number, varint u64 offset,
/// varint u32 record length, u32 LE record checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobRef {
    /// Blob file number (names the file `NNNNNN.blob`).
    pub file: u64,
    /// Offset of the record's first byte in the file.
    pub offset: u64,
    /// Length of the whole record in bytes (header, key and value).
    pub len: u32,
    /// The record's CRC32C, as stored in its header; checked on read.
    pub checksum: u32,
}

impl BlobRef {
    /// Appends the encoding of this pointer.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint64(out, self.file);
        put_varint64(out, self.offset);
        put_varint32(out, self.len);
        out.extend_from_slice(&self.checksum.to_le_bytes());
    }

    /// Decodes a pointer; `None` if malformed.
    pub fn decode(d: &mut Decoder<'_>) -> Option<BlobRef> {
        Some(BlobRef {
            file: d.varint64()?,
            offset: d.varint64()?,
            len: d.varint32()?,
            checksum: d.u32_le()?,
        })
    }
}

/// One stored version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The value's bytes, stored with the key.
    Inline(Bytes),
    /// The value lives in a blob file.
    Blob(BlobRef),
    /// The key was deleted.
    Tombstone,
}

/// Values up to this long are copied for a reader rather than shared
/// ([`Value::for_reader`]).
pub const READ_COPY_MAX: usize = 1024;

impl Value {
    /// This value for a reader on another thread: a short inline value is
    /// copied, anything else shared. Sharing a `Bytes` is an atomic
    /// increment, and later a decrement, of a reference count that the
    /// writer's and the other readers' cores also touch: on a large map of
    /// hot keys, a cache line fetched from another core (or from memory)
    /// each time. A short copy reads the bytes the reply needs anyway and
    /// writes to memory of this thread's own.
    pub fn for_reader(&self) -> Value {
        match self {
            Value::Inline(b) => Value::Inline(bytes_for_reader(b)),
            v => v.clone(),
        }
    }
}

/// Value bytes for a reader on another thread: copied if at most
/// [`READ_COPY_MAX`] long, shared otherwise (see [`Value::for_reader`]).
pub fn bytes_for_reader(b: &Bytes) -> Bytes {
    if b.len() <= READ_COPY_MAX {
        Bytes::copy_from_slice(b)
    } else {
        b.clone()
    }
}

/// On-disk tag for [`Value::Inline`] (tables, WAL).
pub const KIND_INLINE: u8 = 0;
/// On-disk tag for [`Value::Tombstone`].
pub const KIND_TOMBSTONE: u8 = 1;
/// On-disk tag for [`Value::Blob`].
pub const KIND_BLOB: u8 = 2;

impl Value {
    /// The on-disk tag of this kind of value.
    pub fn kind(&self) -> u8 {
        match self {
            Value::Inline(_) => KIND_INLINE,
            Value::Tombstone => KIND_TOMBSTONE,
            Value::Blob(_) => KIND_BLOB,
        }
    }

    /// Bytes this value takes in memory / in a table, roughly.
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::Inline(b) => b.len() + 5,
            Value::Blob(_) => 24,
            Value::Tombstone => 1,
        }
    }

    /// Appends `kind` byte then the payload: for inline values a varint
    /// length and the bytes, for blobs the [`BlobRef`] encoding, for
    /// tombstones nothing.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.kind());
        match self {
            Value::Inline(b) => crate::coding::put_length_prefixed(out, b),
            Value::Blob(r) => r.encode_into(out),
            Value::Tombstone => {}
        }
    }

    /// Decodes what [`Value::encode_into`] wrote. Inline bytes are copied
    /// out of the decoder's buffer; use [`Value::decode_shared`] to slice a
    /// shared buffer without copying.
    pub fn decode(d: &mut Decoder<'_>) -> Option<Value> {
        match d.u8()? {
            KIND_INLINE => Some(Value::Inline(Bytes::copy_from_slice(d.length_prefixed()?))),
            KIND_TOMBSTONE => Some(Value::Tombstone),
            KIND_BLOB => Some(Value::Blob(BlobRef::decode(d)?)),
            _ => None,
        }
    }

    /// Moves `d` past what [`Value::encode_into`] wrote, checking it as
    /// [`Value::decode`] would, without building the value (a table
    /// block's seek passes over entries this way).
    pub fn skip(d: &mut Decoder<'_>) -> Option<()> {
        match d.u8()? {
            KIND_INLINE => d.length_prefixed().map(|_| ()),
            KIND_TOMBSTONE => Some(()),
            KIND_BLOB => BlobRef::decode(d).map(|_| ()),
            _ => None,
        }
    }

    /// Like [`Value::decode`], but `d` must decode `buf`, and inline values
    /// become zero-copy slices of `buf`.
    pub fn decode_shared(d: &mut Decoder<'_>, buf: &Bytes) -> Option<Value> {
        match d.u8()? {
            KIND_INLINE => {
                let n = usize::try_from(d.varint64()?).ok()?;
                let start = d.position();
                d.bytes(n)?;
                Some(Value::Inline(buf.slice(start..start + n)))
            }
            KIND_TOMBSTONE => Some(Value::Tombstone),
            KIND_BLOB => Some(Value::Blob(BlobRef::decode(d)?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_gets_short_values_copied_and_long_ones_shared() {
        for len in [
            0,
            1,
            READ_COPY_MAX - 1,
            READ_COPY_MAX,
            READ_COPY_MAX + 1,
            70_000,
        ] {
            let b = Bytes::from(vec![b'v'; len]);
            let v = Value::Inline(b.clone());
            let r = v.for_reader();
            assert_eq!(r, v, "len {len}");
            let Value::Inline(rb) = r else {
                panic!("not inline")
            };
            if len > 0 {
                // (Empty values have no allocation to share or not.)
                let shared = rb.as_ptr() == b.as_ptr();
                assert_eq!(shared, len > READ_COPY_MAX, "len {len}");
            }
        }
        let blob = Value::Blob(BlobRef {
            file: 1,
            offset: 2,
            len: 3,
            checksum: 4,
        });
        assert_eq!(blob.for_reader(), blob);
        assert_eq!(Value::Tombstone.for_reader(), Value::Tombstone);
    }

    #[test]
    fn value_round_trip() {
        let vals = [
            Value::Inline(Bytes::from_static(b"hello")),
            Value::Inline(Bytes::new()),
            Value::Tombstone,
            Value::Blob(BlobRef {
                file: 7,
                offset: 1 << 40,
                len: 100_000,
                checksum: 0xdead_beef,
            }),
        ];
        for v in vals {
            let mut buf = Vec::new();
            v.encode_into(&mut buf);
            let shared = Bytes::from(buf.clone());
            assert_eq!(Value::decode(&mut Decoder::new(&buf)), Some(v.clone()));
            assert_eq!(
                Value::decode_shared(&mut Decoder::new(&shared), &shared),
                Some(v)
            );
        }
    }

    #[test]
    fn unknown_kind_rejected() {
        assert_eq!(Value::decode(&mut Decoder::new(&[9])), None);
    }
}
