//! The Redis protocol (RESP2 and RESP3): an incremental request parser for
//! multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline (`GET k\r\n`)
//! requests, and the reply encoder. No I/O happens here.
//!
//! # Limits and memory bound
//!
//! A request is kept in memory until it is complete; nothing larger than
//! the limits below is ever buffered:
//!
//! - a bulk string longer than [`Limits::max_bulk`] is refused from its
//!   header (`$<len>`), before any of its bytes are read;
//! - a whole request (all of its arguments) may hold at most
//!   [`Limits::max_request`] bytes, checked from each header too;
//! - a header line (`*<n>`, `$<n>`) or an inline request may be at most
//!   [`LINE_MAX`] bytes; a multibulk request has at most [`ARGS_MAX`]
//!   arguments.
//!
//! Breaking a limit, or a malformed header, is a protocol error: the
//! connection answers `-ERR Protocol error: ...` and is closed, as Redis
//! does, because the rest of the stream cannot be framed any more.

use crate::reply::Reply;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Longest header line or inline request (Redis: `PROTO_INLINE_MAX_SIZE`).
pub const LINE_MAX: usize = 64 * 1024;
/// Most arguments of one multibulk request.
pub const ARGS_MAX: usize = 1024 * 1024;
/// Bytes counted for each argument on top of its length (its bookkeeping).
const ARG_OVERHEAD: usize = 32;

/// The size limits of the parser.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest bulk string (the larger of the value and key limits).
    pub max_bulk: usize,
    /// Most bytes one request may hold.
    pub max_request: usize,
}

impl Limits {
    /// The limits for a server whose largest value is `max_value_len`.
    pub fn for_values(max_value_len: usize) -> Limits {
        let max_bulk = max_value_len.max(escabelo_engine::limits::KEY_LEN_MAX);
        Limits {
            max_bulk,
            // Room for a command with a few full-size arguments (MSET),
            // but bounded.
            max_request: (4 * max_bulk).max(64 * 1024 * 1024),
        }
    }
}

/// What the parser produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete request: the command name and its arguments.
    Command(Vec<Bytes>),
    /// A protocol error (the text after `ERR `); the connection must be
    /// closed after replying.
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a request.
    Start,
    /// Inside a multibulk request: `remaining` arguments to read.
    Args { remaining: usize },
    /// Reading the data of a bulk string of `len` bytes.
    Bulk { remaining: usize, len: usize },
    /// After a protocol error: nothing more is parsed.
    Failed,
}

/// An incremental RESP request parser.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    state: State,
    args: Vec<Bytes>,
    /// Bytes accounted to the request being read.
    request_bytes: usize,
}

impl Parser {
    /// A parser with these limits.
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            state: State::Start,
            args: Vec::new(),
            request_bytes: 0,
        }
    }

    /// Parses the next request from the front of `buf`, removing the bytes
    /// it consumed. `None`: more bytes are needed (keep the rest of `buf`
    /// and append to it).
    pub fn next(&mut self, buf: &mut BytesMut) -> Option<Parsed> {
        loop {
            match self.state {
                State::Failed => return None,
                State::Start => {
                    let first = *buf.first()?;
                    if first != b'*' {
                        match self.inline(buf)? {
                            Ok(args) if args.is_empty() => continue,
                            Ok(args) => return Some(Parsed::Command(args)),
                            Err(e) => return Some(self.fail(e)),
                        }
                    }
                    let n = match header(buf, "mbulk")? {
                        Ok(n) => n,
                        Err(e) => return Some(self.fail(e)),
                    };
                    let n = match n {
                        Some(n) if n <= 0 => continue,
                        Some(n) if (n as u64) <= ARGS_MAX as u64 => n as usize,
                        _ => return Some(self.fail("invalid multibulk length".into())),
                    };
                    self.args = Vec::with_capacity(n.min(1024));
                    self.request_bytes = 0;
                    self.state = State::Args { remaining: n };
                }
                State::Args { remaining: 0 } => {
                    self.state = State::Start;
                    return Some(Parsed::Command(std::mem::take(&mut self.args)));
                }
                State::Args { remaining } => {
                    let first = *buf.first()?;
                    if first != b'$' {
                        let got = first as char;
                        return Some(self.fail(format!("expected '$', got '{got}'")));
                    }
                    let len = match header(buf, "bulk")? {
                        Ok(n) => n,
                        Err(e) => return Some(self.fail(e)),
                    };
                    let len = match len {
                        Some(n) if n >= 0 && (n as u64) <= self.limits.max_bulk as u64 => {
                            n as usize
                        }
                        _ => return Some(self.fail("invalid bulk length".into())),
                    };
                    self.request_bytes = self.request_bytes.saturating_add(len + ARG_OVERHEAD);
                    if self.request_bytes > self.limits.max_request {
                        return Some(self.fail("request too large".into()));
                    }
                    self.state = State::Bulk { remaining, len };
                }
                State::Bulk { remaining, len } => {
                    if buf.len() < len + 2 {
                        buf.reserve(len + 2 - buf.len());
                        return None;
                    }
                    // Copied into an allocation of its own, never split off
                    // the read buffer: a key or value the engine keeps (in
                    // the memtable, the value cache) must not keep the
                    // whole buffer alive with it (tested by
                    // `copied_arguments_never_hold_the_read_buffer`). With
                    // split keys, a million pipelined SETs of fresh keys
                    // left the server at 552 MB resident for 151 MB of
                    // memtables, 338 MB with copies (docs/performance.md,
                    // ninth pass). A split also cost an atomic count up and down on the
                    // buffer's shared header, and values were copied again
                    // before they were stored.
                    let data = Bytes::copy_from_slice(&buf[..len]);
                    // Like Redis, the two bytes after the data are taken as
                    // the line end without looking at them.
                    buf.advance(len + 2);
                    self.args.push(data);
                    self.state = State::Args {
                        remaining: remaining - 1,
                    };
                }
            }
        }
    }

    fn fail(&mut self, msg: String) -> Parsed {
        self.state = State::Failed;
        self.args = Vec::new();
        Parsed::Error(format!("Protocol error: {msg}"))
    }

    /// An inline request: one line ended by `\n` (a `\r` before it is
    /// dropped), split like Redis's `sdssplitargs`.
    fn inline(&mut self, buf: &mut BytesMut) -> Option<Result<Vec<Bytes>, String>> {
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            if buf.len() > LINE_MAX {
                return Some(Err("too big inline request".into()));
            }
            return None;
        };
        if nl > LINE_MAX {
            return Some(Err("too big inline request".into()));
        }
        let line = buf.split_to(nl + 1);
        let mut line = &line[..nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        Some(split_args(line).ok_or_else(|| "unbalanced quotes in request".to_string()))
    }
}

/// Reads a `*<n>\r\n` or `$<n>\r\n` header at the front of `buf`. `None`:
/// incomplete. `Ok(None)`: not a number.
fn header(buf: &mut BytesMut, what: &str) -> Option<Result<Option<i64>, String>> {
    let Some(cr) = memchr::memchr(b'\r', buf) else {
        if buf.len() > LINE_MAX {
            return Some(Err(format!("too big {what} count string")));
        }
        return None;
    };
    if cr > LINE_MAX {
        return Some(Err(format!("too big {what} count string")));
    }
    if buf.len() < cr + 2 {
        return None;
    }
    let n = parse_i64(&buf[1..cr]);
    buf.advance(cr + 2);
    Some(Ok(n))
}

/// Parses a decimal integer the way Redis's `string2ll` does: optional
/// `-`, digits, no leading zeros, no spaces, no `+`.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    if neg && digits == b"0" {
        return None;
    }
    let mut v: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (d - b'0') as i128;
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline line into arguments like Redis's `sdssplitargs`:
/// spaces separate arguments; `"..."` supports `\n \r \t \b \a \\ \" \xHH`;
/// `'...'` supports `\'`; a closing quote must be followed by a space or
/// the end. `None` for unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && hex_val(line[i + 2]).is_some()
                    && hex_val(line[i + 3]).is_some()
                {
                    let h =
                        hex_val(line[i + 2]).unwrap_or(0) * 16 + hex_val(line[i + 3]).unwrap_or(0);
                    cur.push(h);
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if in_sq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    c if is_space(c) => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        out.push(Bytes::from(cur));
    }
}

/// The RESP version a connection speaks (changed by `HELLO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// RESP2, the initial version.
    Resp2,
    /// RESP3.
    Resp3,
}

/// Appends the header `$<len>\r\n` of a bulk string of `len` bytes (the
/// string and its closing `\r\n` follow).
pub fn encode_bulk_header(out: &mut BytesMut, len: usize) {
    put_len(out, b'$', len);
}

fn put_len(out: &mut BytesMut, prefix: u8, n: usize) {
    out.put_u8(prefix);
    let mut b = itoa_buf();
    out.put_slice(fmt_u64(&mut b, n as u64));
    out.put_slice(b"\r\n");
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends a line for simple strings and errors, with CR and LF replaced
/// by spaces so the line cannot be broken.
fn put_line(out: &mut BytesMut, s: &[u8]) {
    for &b in s {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
}

/// Appends the header of an array of `n` items.
pub fn encode_array_header(out: &mut BytesMut, n: usize) {
    put_len(out, b'*', n);
}

/// Appends one bulk string.
pub fn encode_bulk(out: &mut BytesMut, b: &[u8]) {
    out.reserve(b.len() + 24);
    encode_bulk_header(out, b.len());
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

/// Appends `reply` encoded for `version`.
pub fn encode(out: &mut BytesMut, version: Version, reply: &Reply) {
    let v3 = version == Version::Resp3;
    match reply {
        Reply::Ok => out.put_slice(b"+OK\r\n"),
        Reply::Status(s) => {
            out.put_u8(b'+');
            put_line(out, s.as_bytes());
            out.put_slice(b"\r\n");
        }
        Reply::Error { code, msg } => {
            out.put_u8(b'-');
            out.put_slice(code.as_bytes());
            out.put_u8(b' ');
            put_line(out, msg.as_bytes());
            out.put_slice(b"\r\n");
        }
        Reply::Int(n) => {
            out.put_u8(b':');
            let mut b = itoa_buf();
            if *n < 0 {
                out.put_u8(b'-');
            }
            out.put_slice(fmt_u64(&mut b, n.unsigned_abs()));
            out.put_slice(b"\r\n");
        }
        Reply::Bulk(b) | Reply::BulkNoCr(b) => encode_bulk(out, b),
        Reply::Null if v3 => out.put_slice(b"_\r\n"),
        Reply::Null => out.put_slice(b"$-1\r\n"),
        Reply::NullArray if v3 => out.put_slice(b"_\r\n"),
        Reply::NullArray => out.put_slice(b"*-1\r\n"),
        Reply::Array(items) => {
            put_len(out, b'*', items.len());
            for r in items {
                encode(out, version, r);
            }
        }
        Reply::Set(items) => {
            put_len(out, if v3 { b'~' } else { b'*' }, items.len());
            for r in items {
                encode(out, version, r);
            }
        }
        Reply::Map(pairs) => {
            if v3 {
                put_len(out, b'%', pairs.len());
            } else {
                put_len(out, b'*', pairs.len() * 2);
            }
            for (k, v) in pairs {
                encode(out, version, k);
                encode(out, version, v);
            }
        }
        Reply::Verbatim(b) if v3 => {
            out.reserve(b.len() + 32);
            put_len(out, b'=', b.len() + 4);
            out.put_slice(b"txt:");
            out.put_slice(b);
            out.put_slice(b"\r\n");
        }
        Reply::Verbatim(b) => encode_bulk(out, b),
        Reply::Raw(b) => out.put_slice(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const LIM: Limits = Limits {
        max_bulk: 100,
        max_request: 1000,
    };

    fn parse_all(input: &[u8]) -> Vec<Parsed> {
        let mut p = Parser::new(LIM);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = p.next(&mut buf) {
            out.push(r);
        }
        out
    }

    #[test]
    fn copied_arguments_never_hold_the_read_buffer() {
        // A key or value the engine keeps (in the memtable) must not keep
        // the connection's read buffer alive, and the buffer is reused
        // once its bytes are parsed.
        let mut p = Parser::new(Limits {
            max_bulk: 2000,
            max_request: 4000,
        });
        let mut buf = BytesMut::with_capacity(4096);
        let value = vec![b'v'; 1500];
        for _ in 0..3 {
            buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$1500\r\n");
            buf.extend_from_slice(&value);
            buf.extend_from_slice(b"\r\n");
        }
        let start = buf.as_ptr() as usize;
        let range = start..start + buf.capacity();
        let mut kept = Vec::new();
        while let Some(r) = p.next(&mut buf) {
            let Parsed::Command(args) = r else {
                panic!("{r:?}")
            };
            assert_eq!(args[2].len(), 1500);
            for a in &args {
                assert!(
                    !range.contains(&(a.as_ptr() as usize)),
                    "a slice of the buffer"
                );
            }
            kept.push(args);
        }
        assert_eq!(kept.len(), 3);
        assert!(buf.is_empty());
        // The arguments are still alive, yet nothing holds the buffer: more
        // input goes into the same room (asking for all of it, so the
        // consumed front must be reclaimed).
        buf.reserve(range.len());
        assert_eq!(buf.as_ptr() as usize, start, "the buffer was not reused");
    }

    fn parse_bytewise(input: &[u8]) -> Vec<Parsed> {
        let mut p = Parser::new(LIM);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input {
            buf.put_u8(b);
            while let Some(r) = p.next(&mut buf) {
                out.push(r);
            }
        }
        out
    }

    fn cmd(args: &[&[u8]]) -> Parsed {
        Parsed::Command(args.iter().map(|a| Bytes::copy_from_slice(a)).collect())
    }

    fn perr(s: &str) -> Parsed {
        Parsed::Error(format!("Protocol error: {s}"))
    }

    fn check(input: &[u8], expected: Vec<Parsed>) {
        assert_eq!(parse_all(input), expected, "whole: {input:?}");
        assert_eq!(parse_bytewise(input), expected, "bytewise: {input:?}");
    }

    #[test]
    fn multibulk() {
        check(
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            vec![cmd(&[b"GET", b"k"])],
        );
        check(
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n",
            vec![cmd(&[b"SET", b"k", b"a\r\nb"])],
        );
        check(b"*1\r\n$0\r\n\r\n", vec![cmd(&[b""])]);
        // Empty and negative counts are skipped, like Redis.
        check(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n", vec![cmd(&[b"PING"])]);
        // Pipelined.
        check(
            b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n",
            vec![cmd(&[b"PING"]), cmd(&[b"ECHO", b"hi"])],
        );
        // Binary data.
        check(
            b"*2\r\n$4\r\nECHO\r\n$3\r\n\x00\xff\r\r\n",
            vec![cmd(&[b"ECHO", b"\x00\xff\r"])],
        );
    }

    #[test]
    fn inline() {
        check(b"PING\r\n", vec![cmd(&[b"PING"])]);
        check(b"PING\n", vec![cmd(&[b"PING"])]);
        check(b"  set  k   v \r\n", vec![cmd(&[b"set", b"k", b"v"])]);
        check(b"\r\n\n", vec![]);
        check(
            b"set k \"a b\\r\\n\\x41\\\"\"\r\n",
            vec![cmd(&[b"set", b"k", b"a b\r\nA\""])],
        );
        check(b"set k 'it\\'s'\n", vec![cmd(&[b"set", b"k", b"it's"])]);
        check(b"set k \"\"\n", vec![cmd(&[b"set", b"k", b""])]);
        check(b"set k \"abc\n", vec![perr("unbalanced quotes in request")]);
        check(
            b"set k \"a\"b\n",
            vec![perr("unbalanced quotes in request")],
        );
        check(b"set k 'a\n", vec![perr("unbalanced quotes in request")]);
        // Mixed with multibulk on one connection.
        check(
            b"PING\r\n*1\r\n$4\r\nPING\r\nECHO x\n",
            vec![cmd(&[b"PING"]), cmd(&[b"PING"]), cmd(&[b"ECHO", b"x"])],
        );
    }

    #[test]
    fn malformed_headers_fail_and_stop() {
        let bad_count = perr("invalid multibulk length");
        check(b"*x\r\n", vec![bad_count.clone()]);
        check(b"*\r\n", vec![bad_count.clone()]);
        check(b"*01\r\n", vec![bad_count.clone()]);
        check(b"*+1\r\n", vec![bad_count.clone()]);
        check(b"* 1\r\n", vec![bad_count.clone()]);
        check(b"*1 \r\n", vec![bad_count.clone()]);
        check(b"*99999999999999999999\r\n", vec![bad_count.clone()]);
        check(b"*2000000\r\n", vec![bad_count.clone()]);
        let bad_bulk = perr("invalid bulk length");
        check(b"*1\r\n$x\r\n", vec![bad_bulk.clone()]);
        check(b"*1\r\n$-1\r\n", vec![bad_bulk.clone()]);
        check(b"*1\r\n$\r\n", vec![bad_bulk.clone()]);
        check(b"*1\r\n$101\r\n", vec![bad_bulk.clone()]);
        check(b"*1\r\n$-0\r\n", vec![bad_bulk.clone()]);
        check(b"*1\r\n:1\r\n", vec![perr("expected '$', got ':'")]);
        check(
            b"*2\r\n$1\r\na\r\n+x\r\n",
            vec![perr("expected '$', got '+'")],
        );
        // Nothing is parsed after a protocol error.
        check(b"*x\r\n*1\r\n$4\r\nPING\r\n", vec![bad_count]);
    }

    #[test]
    fn oversized_bulk_is_refused_from_its_header() {
        let mut p = Parser::new(LIM);
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$1000000000\r\n"[..]);
        assert_eq!(p.next(&mut buf), Some(perr("invalid bulk length")));
        // Nothing reserved for the declared length.
        assert!(buf.capacity() < 1000);
    }

    #[test]
    fn request_size_limit() {
        // 11 arguments of 100 bytes pass 1000 bytes.
        let mut input = b"*11\r\n".to_vec();
        for _ in 0..11 {
            input.extend_from_slice(b"$100\r\n");
            input.extend_from_slice(&[b'x'; 100]);
            input.extend_from_slice(b"\r\n");
        }
        let r = parse_all(&input);
        assert_eq!(r, vec![perr("request too large")]);
    }

    #[test]
    fn long_lines_are_bounded() {
        let mut p = Parser::new(LIM);
        let mut buf = BytesMut::new();
        buf.put_slice(b"*");
        buf.put_slice(&vec![b'1'; LINE_MAX + 1]);
        assert_eq!(p.next(&mut buf), Some(perr("too big mbulk count string")));
        let mut p = Parser::new(LIM);
        let mut buf = BytesMut::new();
        buf.put_slice(b"*1\r\n$");
        buf.put_slice(&vec![b'1'; LINE_MAX + 1]);
        assert_eq!(p.next(&mut buf), Some(perr("too big bulk count string")));
        let mut p = Parser::new(LIM);
        let mut buf = BytesMut::new();
        buf.put_slice(&vec![b'a'; LINE_MAX + 1]);
        assert_eq!(p.next(&mut buf), Some(perr("too big inline request")));
        // A line at the limit is fine.
        let mut line = vec![b'a'; LINE_MAX - 1];
        line.push(b'\n');
        let r = parse_all_with(&line, Limits::for_values(1024));
        assert_eq!(r.len(), 1);
    }

    fn parse_all_with(input: &[u8], lim: Limits) -> Vec<Parsed> {
        let mut p = Parser::new(lim);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = p.next(&mut buf) {
            out.push(r);
        }
        out
    }

    #[test]
    fn incomplete_waits() {
        for input in [
            &b"*"[..],
            b"*2",
            b"*2\r",
            b"*2\r\n$3",
            b"*2\r\n$3\r\nGE",
            b"*2\r\n$3\r\nGET\r",
            b"*2\r\n$3\r\nGET\r\n",
            b"PING",
            b"PING\r",
        ] {
            assert_eq!(parse_all(input), vec![], "{input:?}");
        }
    }

    #[test]
    fn integers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-5"), Some(-5));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"-0",
            b"+1",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"1x",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    fn enc(v: Version, r: &Reply) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(&mut out, v, r);
        out.to_vec()
    }

    #[test]
    fn encoder_bytes() {
        use Version::*;
        assert_eq!(enc(Resp2, &Reply::Ok), b"+OK\r\n");
        assert_eq!(enc(Resp2, &Reply::Status("PONG".into())), b"+PONG\r\n");
        assert_eq!(
            enc(Resp2, &Reply::err("syntax error")),
            b"-ERR syntax error\r\n"
        );
        assert_eq!(
            enc(Resp3, &Reply::error("NOPROTO", "a\r\nb")),
            b"-NOPROTO a  b\r\n"
        );
        assert_eq!(enc(Resp2, &Reply::Int(-42)), b":-42\r\n");
        assert_eq!(
            enc(Resp2, &Reply::Int(i64::MIN)),
            b":-9223372036854775808\r\n"
        );
        assert_eq!(enc(Resp2, &Reply::Int(0)), b":0\r\n");
        assert_eq!(enc(Resp2, &Reply::bulk(b"a\r\n")), b"$3\r\na\r\n\r\n");
        assert_eq!(enc(Resp2, &Reply::bulk(b"")), b"$0\r\n\r\n");
        assert_eq!(enc(Resp2, &Reply::Null), b"$-1\r\n");
        assert_eq!(enc(Resp3, &Reply::Null), b"_\r\n");
        assert_eq!(enc(Resp2, &Reply::NullArray), b"*-1\r\n");
        assert_eq!(enc(Resp3, &Reply::NullArray), b"_\r\n");
        let arr = Reply::Array(vec![Reply::bulk(b"a"), Reply::Null, Reply::Int(1)]);
        assert_eq!(enc(Resp2, &arr), b"*3\r\n$1\r\na\r\n$-1\r\n:1\r\n");
        assert_eq!(enc(Resp3, &arr), b"*3\r\n$1\r\na\r\n_\r\n:1\r\n");
        assert_eq!(enc(Resp2, &Reply::Array(vec![])), b"*0\r\n");
        let map = Reply::Map(vec![(Reply::text("proto"), Reply::Int(3))]);
        assert_eq!(enc(Resp3, &map), b"%1\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(enc(Resp2, &map), b"*2\r\n$5\r\nproto\r\n:3\r\n");
        let set = Reply::Set(vec![Reply::Status("write".into())]);
        assert_eq!(enc(Resp3, &set), b"~1\r\n+write\r\n");
        assert_eq!(enc(Resp2, &set), b"*1\r\n+write\r\n");
        let v = Reply::Verbatim(Bytes::from_static(b"# Server\r\n"));
        assert_eq!(enc(Resp3, &v), b"=14\r\ntxt:# Server\r\n\r\n");
        assert_eq!(enc(Resp2, &v), b"$10\r\n# Server\r\n\r\n");
    }

    /// A tiny reply decoder for the round trip (RESP2 shapes only).
    fn decode_command(buf: &[u8]) -> Vec<Bytes> {
        let mut p = Parser::new(Limits::for_values(1 << 20));
        let mut b = BytesMut::from(buf);
        match p.next(&mut b) {
            Some(Parsed::Command(a)) => {
                assert!(b.is_empty());
                a
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn randomized_round_trip() {
        // Commands encoded as arrays of bulk strings (what clients send),
        // cut at random points, parse back to the same arguments.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        for _ in 0..500 {
            let n = rng.gen_range(1..6);
            let args: Vec<Bytes> = (0..n)
                .map(|_| {
                    let len = rng.gen_range(0..40);
                    let alphabet = b"ab\r\n\x00\xff*$:+-_ 0123";
                    (0..len)
                        .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                        .collect::<Vec<u8>>()
                        .into()
                })
                .collect();
            let mut wire = BytesMut::new();
            encode(
                &mut wire,
                Version::Resp2,
                &Reply::Array(args.iter().cloned().map(Reply::Bulk).collect()),
            );
            assert_eq!(decode_command(&wire), args);
            // Split at random points.
            let mut p = Parser::new(LIM);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut i = 0;
            while i < wire.len() {
                let step = rng.gen_range(1..8).min(wire.len() - i);
                buf.put_slice(&wire[i..i + step]);
                i += step;
                while let Some(r) = p.next(&mut buf) {
                    got.push(r);
                }
            }
            assert_eq!(got, vec![Parsed::Command(args)]);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        for _ in 0..2000 {
            let n = rng.gen_range(0..200);
            let alphabet = b"*$\r\n0123456789-+:ab \"'\\x";
            let input: Vec<u8> = (0..n)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            assert_eq!(parse_all(&input), parse_bytewise(&input), "{input:?}");
        }
    }
}
