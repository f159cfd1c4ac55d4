//! RESP framing for the tests that speak the Redis protocol: encoding a
//! command, finding where a reply ends, reading one reply, and parsing it.

use super::{lossy, Client};
use std::io::Read;

/// The length of the first complete RESP value in `b`, if complete.
pub fn value_len(b: &[u8]) -> Option<usize> {
    let line_end = b.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&b[1..line_end]).ok()?;
    let after = line_end + 2;
    match b[0] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' => Some(after),
        b'$' | b'=' => {
            let n: i64 = head.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (b.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'%' => {
            let n: i64 = head.parse().ok()?;
            let items = if b[0] == b'%' { n * 2 } else { n };
            let mut at = after;
            for _ in 0..items.max(0) {
                at += value_len(&b[at..])?;
            }
            Some(at)
        }
        _ => panic!("not RESP: {:?}", lossy(b)),
    }
}

/// Reads one whole RESP reply.
pub fn reply(c: &mut Client, pending: &mut Vec<u8>) -> Vec<u8> {
    let mut buf = [0u8; 65536];
    loop {
        if !pending.is_empty() {
            if let Some(n) = value_len(pending) {
                return pending.drain(..n).collect();
            }
        }
        let k = c.stream.read(&mut buf).expect("read timed out");
        assert!(k > 0, "closed; got {:?}", lossy(pending));
        pending.extend_from_slice(&buf[..k]);
    }
}

/// RESP encoding of a command.
pub fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A parsed RESP2 reply (what the tests going through twemproxy need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+...`
    Simple(String),
    /// `-...`
    Error(String),
    /// `:...`
    Int(i64),
    /// `$...`; `None` for the null bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*...`; `None` for the null array `*-1`.
    Array(Option<Vec<Value>>),
}

/// Parses one complete RESP2 reply (as returned by [`reply`]).
pub fn parse(b: &[u8]) -> Value {
    let (v, used) = parse_at(b);
    assert_eq!(
        used,
        b.len(),
        "trailing bytes after a reply: {:?}",
        lossy(b)
    );
    v
}

fn parse_at(b: &[u8]) -> (Value, usize) {
    let line_end = b
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or_else(|| panic!("incomplete reply: {:?}", lossy(b)));
    let head = lossy(&b[1..line_end]);
    let after = line_end + 2;
    let int = || -> i64 {
        head.parse()
            .unwrap_or_else(|_| panic!("bad RESP header {head:?}"))
    };
    match b[0] {
        b'+' => (Value::Simple(head.clone()), after),
        b'-' => (Value::Error(head.clone()), after),
        b':' => (Value::Int(int()), after),
        b'$' => {
            let n = int();
            if n < 0 {
                return (Value::Bulk(None), after);
            }
            let end = after + n as usize;
            assert_eq!(&b[end..end + 2], b"\r\n", "bulk string not ended by CRLF");
            (Value::Bulk(Some(b[after..end].to_vec())), end + 2)
        }
        b'*' => {
            let n = int();
            if n < 0 {
                return (Value::Array(None), after);
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut at = after;
            for _ in 0..n {
                let (v, used) = parse_at(&b[at..]);
                items.push(v);
                at += used;
            }
            (Value::Array(Some(items)), at)
        }
        _ => panic!("not a RESP2 reply: {:?}", lossy(b)),
    }
}
