//! Escabelo's text protocol: `write <key>|<value>\r`, `read <key>\r`;
//! every reply is the bytes up to the next `\r`.

use super::{Decoded, ProtoError, ReplyKind};

/// Appends `read <key>\r`.
pub fn encode_read(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b"read ");
    out.extend_from_slice(key.as_bytes());
    out.push(b'\r');
}

/// Appends `write <key>|<value>\r`, with the value produced by `value`.
pub fn encode_write(out: &mut Vec<u8>, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"write ");
    out.extend_from_slice(key.as_bytes());
    out.push(b'|');
    value(out);
    out.push(b'\r');
}

/// Decodes one reply from the start of `buf`, or `None` if its `\r` has not
/// arrived. `success` is success, the bare word `error` is not-found,
/// `error: <reason>` is a failure and anything else is a value.
///
/// `scanned` bytes at the start of `buf` are known to hold no `\r` (an
/// earlier call on a shorter `buf` returned `None`), so the search for the
/// terminator starts after them: a large value arriving in many reads is
/// scanned once, not once per read.
pub fn decode(buf: &[u8], scanned: usize) -> Result<Option<Decoded>, ProtoError> {
    let from = scanned.min(buf.len());
    let Some(end) = memchr::memchr(b'\r', &buf[from..]).map(|i| from + i) else {
        return Ok(None);
    };
    let line = &buf[..end];
    let kind = if line == b"success" {
        ReplyKind::Success
    } else if line == b"error" {
        ReplyKind::NotFound
    } else if line.starts_with(b"error:") {
        ReplyKind::Failure
    } else {
        ReplyKind::Value
    };
    Ok(Some(Decoded {
        kind,
        body: 0..end,
        consumed: end + 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        let mut out = Vec::new();
        encode_read(&mut out, "a:1");
        encode_write(&mut out, "a:1", |o| o.extend_from_slice(b"x|y z"));
        assert_eq!(out, b"read a:1\rwrite a:1|x|y z\r");
    }

    #[test]
    fn decodes() {
        let d = |b: &[u8]| {
            decode(b, 0)
                .ok()
                .flatten()
                .map(|d| (d.kind, d.body, d.consumed))
        };
        assert_eq!(d(b"success\rxx"), Some((ReplyKind::Success, 0..7, 8)));
        assert_eq!(d(b"error\r"), Some((ReplyKind::NotFound, 0..5, 6)));
        assert_eq!(
            d(b"error: invalid key format\r"),
            Some((ReplyKind::Failure, 0..25, 26))
        );
        assert_eq!(d(b"abc|d\r"), Some((ReplyKind::Value, 0..5, 6)));
        assert_eq!(d(b"\r"), Some((ReplyKind::Value, 0..0, 1)));
        assert_eq!(d(b"partial"), None);
    }

    #[test]
    fn resumes_after_the_scanned_prefix() {
        let mut buf = b"abc".to_vec();
        assert_eq!(decode(&buf, 0), Ok(None));
        buf.extend_from_slice(b"def\rgh");
        let got = decode(&buf, 3)
            .ok()
            .flatten()
            .map(|d| (d.kind, d.body, d.consumed));
        assert_eq!(got, Some((ReplyKind::Value, 0..6, 7)));
        // A hint past the end is harmless.
        assert_eq!(decode(b"ab", 10), Ok(None));
    }
}
