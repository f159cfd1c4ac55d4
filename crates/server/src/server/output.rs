//! A connection's unsent replies, in order.
//!
//! Small replies are encoded into one growing buffer (the tail). A value
//! of at least [`SHARE_MIN`] bytes is not copied: the reply keeps the
//! [`Bytes`] the engine returned, and the socket write sends it from there
//! with the rest, as one vectored write (`writev`). A read of a 50 KiB
//! value then touches its bytes once in user space (the text protocol's
//! `\r` check) instead of also copying them into the buffer.
//!
//! Invariant: the chunks come before the tail, each chunk is non-empty,
//! and [`Output::len`] is the sum of all their lengths.

use crate::protocol::{resp, text, Wire};
use crate::reply::Reply;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Values at least this long are sent from their own buffer rather than
/// copied into the output buffer (below it, a copy costs less than one
/// more `iovec`).
pub const SHARE_MIN: usize = 4 * 1024;
/// Most buffers handed to one vectored write.
pub const IOV_MAX: usize = 64;

/// Replies waiting to be written to the socket.
#[derive(Default)]
pub struct Output {
    /// Finished buffers, oldest first, sent before `tail`.
    chunks: VecDeque<Bytes>,
    /// Where the next small reply is encoded.
    tail: BytesMut,
    /// Bytes in `chunks` and `tail`.
    len: usize,
}

impl Output {
    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether everything has been sent.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the encoding buffer (sent or not).
    pub fn capacity(&self) -> usize {
        self.tail.capacity()
    }

    /// Appends `reply` encoded in `wire`, sharing a long string value
    /// instead of copying it.
    pub fn encode(&mut self, wire: Wire, reply: &Reply) {
        if let Reply::Bulk(v) | Reply::BulkNoCr(v) = reply {
            if v.len() >= SHARE_MIN {
                let no_cr = matches!(reply, Reply::BulkNoCr(_));
                match wire {
                    Wire::Text if no_cr || text::can_frame(v) => {
                        self.share(v.clone());
                        self.append(b"\r");
                        return;
                    }
                    Wire::Text => {}
                    Wire::Resp(_) => {
                        self.encode_tail(|t| resp::encode_bulk_header(t, v.len()));
                        self.share(v.clone());
                        self.append(b"\r\n");
                        return;
                    }
                }
            }
        }
        self.encode_tail(|t| wire.encode(t, reply));
    }

    /// Encodes at the end of the tail with `f`, counting what it adds.
    fn encode_tail(&mut self, f: impl FnOnce(&mut BytesMut)) {
        let before = self.tail.len();
        f(&mut self.tail);
        self.len += self.tail.len() - before;
    }

    /// Appends already encoded bytes, sharing them if they are long.
    pub fn push(&mut self, b: Bytes) {
        if b.len() >= SHARE_MIN {
            self.share(b);
        } else {
            self.append(&b);
        }
    }

    /// Copies `b` to the end.
    fn append(&mut self, b: &[u8]) {
        self.tail.extend_from_slice(b);
        self.len += b.len();
    }

    /// Queues `b` after everything so far, without copying it.
    fn share(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            // `split` keeps the unused capacity in `tail` for what follows.
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.len += b.len();
        self.chunks.push_back(b);
    }

    /// The unsent bytes as buffers for a vectored write, oldest first (at
    /// most [`IOV_MAX`]).
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut v = Vec::with_capacity((self.chunks.len() + 1).min(IOV_MAX));
        for c in self.chunks.iter().take(IOV_MAX) {
            v.push(IoSlice::new(c));
        }
        if v.len() < IOV_MAX && !self.tail.is_empty() {
            v.push(IoSlice::new(&self.tail));
        }
        v
    }

    /// Whether the unsent bytes are in one buffer (a plain write will do).
    pub fn contiguous(&self) -> Option<&[u8]> {
        match (self.chunks.len(), self.tail.is_empty()) {
            (0, _) => Some(&self.tail),
            (1, true) => self.chunks.front().map(|c| &c[..]),
            _ => None,
        }
    }

    /// Drops the first `n` unsent bytes (they were written).
    pub fn advance(&mut self, mut n: usize) {
        debug_assert!(n <= self.len, "advanced past the end of the output");
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(c) if c.len() <= n => {
                    n -= c.len();
                    self.chunks.pop_front();
                }
                Some(c) => {
                    c.advance(n);
                    return;
                }
                None => {
                    self.tail.advance(n);
                    return;
                }
            }
        }
    }

    /// Frees the encoding buffer (call when empty, to keep idle
    /// connections small).
    pub fn shrink(&mut self) {
        debug_assert!(self.is_empty());
        self.tail = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsent(o: &Output) -> Vec<u8> {
        let mut v = Vec::new();
        for s in o.slices() {
            v.extend_from_slice(&s);
        }
        v
    }

    #[test]
    fn long_values_are_shared_and_everything_stays_in_order() {
        let big = Bytes::from(vec![b'v'; SHARE_MIN]);
        let mut o = Output::default();
        o.encode(Wire::Text, &Reply::Ok);
        o.encode(Wire::Text, &Reply::Bulk(big.clone()));
        o.encode(Wire::Text, &Reply::Null);
        let mut want = b"success\r".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\rerror\r");
        assert_eq!(unsent(&o), want);
        assert_eq!(o.len(), want.len());
        // The value was not copied.
        assert!(o.chunks.iter().any(|c| c.as_ptr() == big.as_ptr()));

        // Partial writes, across chunk boundaries.
        let mut sent = Vec::new();
        while !o.is_empty() {
            let s = unsent(&o);
            let n = s.len().min(1000);
            sent.extend_from_slice(&s[..n]);
            o.advance(n);
        }
        assert_eq!(sent, want);
    }

    #[test]
    fn shared_replies_encode_as_copied_ones_do() {
        for wire in [
            Wire::Text,
            Wire::Resp(resp::Version::Resp2),
            Wire::Resp(resp::Version::Resp3),
        ] {
            for len in [0, 1, SHARE_MIN - 1, SHARE_MIN, 3 * SHARE_MIN] {
                for cr in [false, true] {
                    let mut v = vec![b'a'; len];
                    if cr && len > 0 {
                        v[len / 2] = b'\r';
                    }
                    let reply = Reply::Bulk(Bytes::from(v));
                    let mut copied = BytesMut::new();
                    wire.encode(&mut copied, &reply);
                    let mut o = Output::default();
                    o.encode(wire, &reply);
                    assert_eq!(unsent(&o), &copied[..], "{wire:?} len {len} cr {cr}");
                    assert_eq!(o.len(), copied.len());
                }
            }
        }
    }

    #[test]
    fn at_most_iov_max_slices_are_handed_out() {
        let mut o = Output::default();
        for _ in 0..IOV_MAX + 5 {
            o.push(Bytes::from(vec![1u8; SHARE_MIN]));
            o.encode(Wire::Text, &Reply::Ok);
        }
        let want = o.len();
        let mut sent = 0;
        while !o.is_empty() {
            let s = o.slices();
            assert!(!s.is_empty() && s.len() <= IOV_MAX);
            let n: usize = s.iter().map(|s| s.len()).sum();
            o.advance(n);
            sent += n;
        }
        assert_eq!(sent, want);
        assert!(o.contiguous().is_some_and(|c| c.is_empty()));
    }
}
