//! RESP2, as spoken by Redis: `SET`/`GET` as arrays of bulk strings; replies
//! `+OK`, `-ERR ...`, `$-1` (nil) and bulk strings.

use super::{Decoded, ProtoError, ReplyKind};

fn bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    out.extend_from_slice(len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    bulk_header(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends `GET <key>`.
pub fn encode_read(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b"*2\r\n");
    bulk(out, b"GET");
    bulk(out, key.as_bytes());
}

/// Appends `SET <key> <value>`; `value` must append exactly `len` bytes.
pub fn encode_write(out: &mut Vec<u8>, key: &str, len: usize, value: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"*3\r\n");
    bulk(out, b"SET");
    bulk(out, key.as_bytes());
    bulk_header(out, len);
    value(out);
    out.extend_from_slice(b"\r\n");
}

/// Appends `DEL <key>` (the workload has no deletes yet; kept for tools built on it).
#[cfg_attr(not(test), allow(dead_code))]
pub fn encode_delete(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b"*2\r\n");
    bulk(out, b"DEL");
    bulk(out, key.as_bytes());
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n")
}

fn parse_int(b: &[u8]) -> Result<i64, ProtoError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtoError(format!("bad RESP integer {:?}", String::from_utf8_lossy(b))))
}

/// Decodes one reply from the start of `buf`, or `None` if it is incomplete.
/// `+OK` is success, `-...` a failure, `$-1` not-found, a bulk string a
/// value; integers, other simple strings and arrays count as failures.
pub fn decode(buf: &[u8]) -> Result<Option<Decoded>, ProtoError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let Some(eol) = find_crlf(buf) else {
        if buf.len() > 64 && tag != b'-' && tag != b'+' {
            return Err(ProtoError("RESP header without CRLF".into()));
        }
        return Ok(None);
    };
    let line = 1..eol;
    let after = eol + 2;
    let simple = |kind| {
        Ok(Some(Decoded {
            kind,
            body: line.clone(),
            consumed: after,
        }))
    };
    match tag {
        b'+' if &buf[line.clone()] == b"OK" => simple(ReplyKind::Success),
        b'+' | b'-' | b':' => simple(ReplyKind::Failure),
        b'$' => {
            let n = parse_int(&buf[line.clone()])?;
            if n < 0 {
                return simple(ReplyKind::NotFound);
            }
            let n = usize::try_from(n).map_err(|_| ProtoError("bulk length".into()))?;
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err(ProtoError("bulk string not followed by CRLF".into()));
            }
            Ok(Some(Decoded {
                kind: ReplyKind::Value,
                body: after..after + n,
                consumed: after + n + 2,
            }))
        }
        other => Err(ProtoError(format!(
            "unexpected RESP reply type {:?}",
            other as char
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: &[u8]) -> Option<(ReplyKind, Vec<u8>, usize)> {
        decode(b)
            .ok()
            .flatten()
            .map(|d| (d.kind, b[d.body].to_vec(), d.consumed))
    }

    #[test]
    fn encodes() {
        let mut out = Vec::new();
        encode_write(&mut out, "k", 3, |o| o.extend_from_slice(b"a\rb"));
        encode_read(&mut out, "k");
        encode_delete(&mut out, "k");
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na\rb\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n"
        );
    }

    #[test]
    fn decodes() {
        assert_eq!(d(b"+OK\r\n"), Some((ReplyKind::Success, b"OK".to_vec(), 5)));
        assert_eq!(
            d(b"-ERR wrong\r\n"),
            Some((ReplyKind::Failure, b"ERR wrong".to_vec(), 12))
        );
        assert_eq!(
            d(b"$-1\r\n"),
            Some((ReplyKind::NotFound, b"-1".to_vec(), 5))
        );
        assert_eq!(
            d(b"$3\r\na\rb\r\n+OK"),
            Some((ReplyKind::Value, b"a\rb".to_vec(), 9))
        );
        assert_eq!(d(b"$3\r\na\rb"), None);
        assert_eq!(d(b"$3\r"), None);
        assert!(decode(b"*1\r\n").is_err());
        assert!(decode(b"$3\r\nabcXY").is_err());
    }
}
