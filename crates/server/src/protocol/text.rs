//! The text protocol of `PROTOCOL.md`: an incremental request parser and the
//! reply encoder. No I/O happens here.
//!
//! # Memory bound
//!
//! [`Parser::next`] consumes bytes from the caller's buffer as soon as it no
//! longer needs them. The only bytes it leaves in the buffer are those of the
//! key or the value being read, so the buffer never holds more than
//! [`KEY_LEN_MAX`] bytes of an unfinished key or `max_value_len` bytes of an
//! unfinished value (plus whatever the caller appended in its last read).
//! The command word is copied into a small fixed array; spaces and the rest
//! of a rejected request are dropped as they arrive. A key or value that
//! crosses its limit is reported at once, and the rest of that request is
//! discarded up to its `\r` without being kept.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// Largest key accepted, in bytes.
pub const KEY_LEN_MAX: usize = escabelo_engine::limits::KEY_LEN_MAX;

/// Bytes of an unknown command word kept to echo it in the error reply.
const WORD_KEEP: usize = 32;

/// One parsed request, or the reason a request was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `write <key>|<value>`.
    Write {
        /// The key.
        key: Bytes,
        /// The value, byte for byte.
        value: Bytes,
    },
    /// `read <key>`.
    Read {
        /// The key.
        key: Bytes,
    },
    /// `delete <key>`.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// `status`.
    Status,
    /// `keys`.
    Keys,
    /// `reads <prefix>`.
    Reads {
        /// The key prefix.
        prefix: Bytes,
    },
    /// A request that cannot be executed; answered with `error: <reason>`.
    Invalid(RequestError),
}

/// Why a request was rejected. The `Display` text is the reason sent after
/// `error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// `write` without a `|`.
    WriteFormat,
    /// `read` without a key.
    ReadFormat,
    /// `delete` without a key.
    DeleteFormat,
    /// `reads` without a prefix.
    ReadsFormat,
    /// A key (or prefix) outside the grammar `[A-Za-z0-9.:_-]+`.
    InvalidKey,
    /// A key longer than [`KEY_LEN_MAX`].
    KeyTooLong,
    /// A value longer than the configured maximum.
    ValueTooLong {
        /// The configured maximum, in bytes.
        max: usize,
    },
    /// An unrecognised command word (the first bytes of it).
    UnknownCommand {
        /// Up to 32 bytes of the word.
        word: Vec<u8>,
        /// Whether the word was longer than what is kept.
        truncated: bool,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::WriteFormat => f.write_str("write format: write <key>|<value>"),
            RequestError::ReadFormat => f.write_str("read format: read <key>"),
            RequestError::DeleteFormat => f.write_str("delete format: delete <key>"),
            RequestError::ReadsFormat => f.write_str("reads format: reads <prefix>"),
            RequestError::InvalidKey => f.write_str("invalid key format"),
            RequestError::KeyTooLong => write!(f, "key too long (max {KEY_LEN_MAX} bytes)"),
            RequestError::ValueTooLong { max } => write!(f, "value too long (max {max} bytes)"),
            RequestError::UnknownCommand { word, truncated } => {
                f.write_str("unknown command: ")?;
                let text: String = String::from_utf8_lossy(word)
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                f.write_str(&text)?;
                if *truncated {
                    f.write_str("...")?;
                }
                Ok(())
            }
        }
    }
}

/// True for the bytes allowed in a key: `A-Z a-z 0-9 . - : _`.
pub fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_')
}

/// Commands that take a key argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Write,
    Read,
    Delete,
    Reads,
}

impl Cmd {
    fn format_error(self) -> RequestError {
        match self {
            Cmd::Write => RequestError::WriteFormat,
            Cmd::Read => RequestError::ReadFormat,
            Cmd::Delete => RequestError::DeleteFormat,
            Cmd::Reads => RequestError::ReadsFormat,
        }
    }

    /// The request for a complete, valid key (never called for `Write`).
    fn request(self, key: Bytes) -> Request {
        match self {
            Cmd::Write => Request::Invalid(RequestError::WriteFormat),
            Cmd::Read => Request::Read { key },
            Cmd::Delete => Request::Delete { key },
            Cmd::Reads => Request::Reads { prefix: key },
        }
    }
}

/// What the command word turned out to be.
enum Word {
    Arg(Cmd),
    Status,
    Keys,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first byte of a request.
    Start,
    /// Reading the command word (copied into `Parser::word`).
    Word,
    /// Spaces between the command word and its argument.
    ArgSpaces(Cmd),
    /// Reading a key. When `invalid` is false its bytes are
    /// `buf[..scan]`; otherwise they are dropped and only counted in `len`.
    Key { cmd: Cmd, invalid: bool, len: usize },
    /// After a complete key (in `Parser::key`), skipping spaces.
    KeySpaces(Cmd),
    /// Reading a value: its bytes are `buf[..scan]`.
    Value,
    /// Dropping bytes up to the next `\r`, then returning `Parser::pending`.
    Discard,
}

/// An incremental parser for the text protocol.
///
/// Feed it by appending received bytes to a [`BytesMut`] and calling
/// [`Parser::next`] until it returns `None`.
#[derive(Debug)]
pub struct Parser {
    state: State,
    /// The previous byte consumed was the `\r` ending a request.
    after_cr: bool,
    word: [u8; WORD_KEEP],
    word_len: usize,
    /// Bytes of the buffer already examined for the current key or value.
    scan: usize,
    key: Bytes,
    pending: Option<Request>,
    max_value_len: usize,
}

impl Parser {
    /// A parser that rejects values longer than `max_value_len` bytes.
    pub fn new(max_value_len: usize) -> Parser {
        Parser {
            state: State::Start,
            after_cr: false,
            word: [0; WORD_KEEP],
            word_len: 0,
            scan: 0,
            key: Bytes::new(),
            pending: None,
            max_value_len,
        }
    }

    /// Parses the next request from the front of `buf`, removing the bytes
    /// it consumed. Returns `None` when more bytes are needed; the bytes of
    /// an unfinished key or value are then left in `buf` and must be kept
    /// (append new bytes after them).
    pub fn next(&mut self, buf: &mut BytesMut) -> Option<Request> {
        loop {
            match self.state {
                State::Start => {
                    let b = *buf.first()?;
                    if self.after_cr && b == b'\n' {
                        buf.advance(1);
                        self.after_cr = false;
                        continue;
                    }
                    self.after_cr = false;
                    match b {
                        b'\r' => {
                            buf.advance(1);
                            self.after_cr = true;
                        }
                        b' ' => buf.advance(1),
                        _ => {
                            self.word_len = 0;
                            self.state = State::Word;
                        }
                    }
                }
                State::Word => {
                    let mut i = 0;
                    let mut term = None;
                    while i < buf.len() {
                        let b = buf[i];
                        if b == b' ' || b == b'\r' {
                            term = Some(b);
                            break;
                        }
                        if self.word_len < WORD_KEEP {
                            self.word[self.word_len] = b;
                        }
                        self.word_len = self.word_len.saturating_add(1);
                        i += 1;
                    }
                    buf.advance(i);
                    let term = term?;
                    buf.advance(1);
                    let word = self.classify_word();
                    if term == b'\r' {
                        return Some(self.finish(match word {
                            Word::Arg(cmd) => Request::Invalid(cmd.format_error()),
                            Word::Status => Request::Status,
                            Word::Keys => Request::Keys,
                            Word::Unknown => Request::Invalid(self.unknown()),
                        }));
                    }
                    match word {
                        Word::Arg(cmd) => self.state = State::ArgSpaces(cmd),
                        // Arguments of `status` and `keys` are ignored.
                        Word::Status => self.discard(Some(Request::Status)),
                        Word::Keys => self.discard(Some(Request::Keys)),
                        Word::Unknown => {
                            let e = self.unknown();
                            self.discard(Some(Request::Invalid(e)));
                        }
                    }
                }
                State::ArgSpaces(cmd) => {
                    let b = *buf.first()?;
                    match b {
                        b' ' => buf.advance(1),
                        b'\r' => {
                            buf.advance(1);
                            return Some(self.finish(Request::Invalid(cmd.format_error())));
                        }
                        _ => {
                            self.scan = 0;
                            self.state = State::Key {
                                cmd,
                                invalid: false,
                                len: 0,
                            };
                        }
                    }
                }
                State::Key {
                    cmd,
                    mut invalid,
                    mut len,
                } => {
                    let mut i = self.scan;
                    let mut term = None;
                    while i < buf.len() {
                        let b = buf[i];
                        let ends = match b {
                            b'\r' => true,
                            b'|' => cmd == Cmd::Write,
                            // In an invalid write key, spaces are just more
                            // bad bytes before the `|`.
                            b' ' => !(invalid && cmd == Cmd::Write),
                            _ => false,
                        };
                        if ends {
                            term = Some(b);
                            break;
                        }
                        if !is_key_byte(b) {
                            invalid = true;
                        }
                        i += 1;
                        len += 1;
                        if len > KEY_LEN_MAX {
                            buf.advance(i);
                            self.discard(None);
                            return Some(Request::Invalid(RequestError::KeyTooLong));
                        }
                    }
                    if invalid {
                        // Bad bytes are never kept.
                        buf.advance(i);
                        i = 0;
                    }
                    self.scan = i;
                    self.state = State::Key { cmd, invalid, len };
                    let term = term?;
                    match term {
                        b'\r' => {
                            let req = if cmd == Cmd::Write {
                                Request::Invalid(RequestError::WriteFormat)
                            } else if invalid {
                                Request::Invalid(RequestError::InvalidKey)
                            } else {
                                cmd.request(Bytes::copy_from_slice(&buf[..i]))
                            };
                            buf.advance(i + 1);
                            return Some(self.finish(req));
                        }
                        b'|' => {
                            if invalid || len == 0 {
                                buf.advance(1);
                                self.discard(Some(Request::Invalid(RequestError::InvalidKey)));
                            } else {
                                self.key = Bytes::copy_from_slice(&buf[..i]);
                                buf.advance(i + 1);
                                self.scan = 0;
                                self.state = State::Value;
                            }
                        }
                        _ => {
                            // A space.
                            if invalid {
                                buf.advance(1);
                                self.discard(Some(Request::Invalid(RequestError::InvalidKey)));
                            } else {
                                self.key = Bytes::copy_from_slice(&buf[..i]);
                                buf.advance(i + 1);
                                self.state = State::KeySpaces(cmd);
                            }
                        }
                    }
                }
                State::KeySpaces(cmd) => {
                    let b = *buf.first()?;
                    match b {
                        b' ' => buf.advance(1),
                        b'\r' => {
                            buf.advance(1);
                            let key = std::mem::take(&mut self.key);
                            return Some(self.finish(cmd.request(key)));
                        }
                        b'|' if cmd == Cmd::Write => {
                            buf.advance(1);
                            self.scan = 0;
                            self.state = State::Value;
                        }
                        _ if cmd == Cmd::Write => {
                            // `write a b|v`: the key has a space in it. Keep
                            // looking for the `|` to choose the error.
                            let len = self.key.len() + 1;
                            self.key = Bytes::new();
                            self.scan = 0;
                            self.state = State::Key {
                                cmd,
                                invalid: true,
                                len,
                            };
                        }
                        _ => {
                            self.key = Bytes::new();
                            self.discard(Some(Request::Invalid(RequestError::InvalidKey)));
                        }
                    }
                }
                State::Value => {
                    let start = self.scan;
                    match find_cr(&buf[start..]) {
                        Some(p) => {
                            let end = start + p;
                            let req = if end > self.max_value_len {
                                self.too_long_value()
                            } else {
                                Request::Write {
                                    key: std::mem::take(&mut self.key),
                                    value: Bytes::copy_from_slice(&buf[..end]),
                                }
                            };
                            buf.advance(end + 1);
                            self.key = Bytes::new();
                            return Some(self.finish(req));
                        }
                        None => {
                            self.scan = buf.len();
                            if self.scan > self.max_value_len {
                                buf.advance(self.scan);
                                self.key = Bytes::new();
                                let req = self.too_long_value();
                                self.discard(None);
                                return Some(req);
                            }
                            return None;
                        }
                    }
                }
                State::Discard => match find_cr(buf) {
                    Some(p) => {
                        buf.advance(p + 1);
                        self.after_cr = true;
                        self.state = State::Start;
                        if let Some(req) = self.pending.take() {
                            return Some(req);
                        }
                    }
                    None => {
                        buf.advance(buf.len());
                        return None;
                    }
                },
            }
        }
    }

    fn too_long_value(&self) -> Request {
        Request::Invalid(RequestError::ValueTooLong {
            max: self.max_value_len,
        })
    }

    /// Ends a request whose `\r` has just been consumed.
    fn finish(&mut self, req: Request) -> Request {
        self.after_cr = true;
        self.state = State::Start;
        req
    }

    /// Drops the rest of the request, then returns `pending` (if any).
    fn discard(&mut self, pending: Option<Request>) {
        self.pending = pending;
        self.state = State::Discard;
    }

    fn classify_word(&self) -> Word {
        if self.word_len > WORD_KEEP {
            return Word::Unknown;
        }
        let w = &self.word[..self.word_len];
        if w.eq_ignore_ascii_case(b"write") {
            Word::Arg(Cmd::Write)
        } else if w.eq_ignore_ascii_case(b"read") {
            Word::Arg(Cmd::Read)
        } else if w.eq_ignore_ascii_case(b"delete") {
            Word::Arg(Cmd::Delete)
        } else if w.eq_ignore_ascii_case(b"reads") {
            Word::Arg(Cmd::Reads)
        } else if w.eq_ignore_ascii_case(b"status") {
            Word::Status
        } else if w.eq_ignore_ascii_case(b"keys") {
            Word::Keys
        } else {
            Word::Unknown
        }
    }

    fn unknown(&self) -> RequestError {
        let kept = self.word_len.min(WORD_KEEP);
        RequestError::UnknownCommand {
            word: self.word[..kept].to_vec(),
            truncated: self.word_len > WORD_KEEP,
        }
    }
}

fn find_cr(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\r', b)
}

/// Appends `success\r`.
pub fn encode_success(out: &mut BytesMut) {
    out.put_slice(b"success\r");
}

/// Appends the bare not-found reply `error\r`.
pub fn encode_not_found(out: &mut BytesMut) {
    out.put_slice(b"error\r");
}

/// Appends a value followed by `\r`.
pub fn encode_value(out: &mut BytesMut, value: &[u8]) {
    out.reserve(value.len() + 1);
    out.put_slice(value);
    out.put_u8(b'\r');
}

/// Appends `error: <reason>\r`. Line breaks in `reason` become spaces so
/// the reply stays one line.
pub fn encode_error(out: &mut BytesMut, reason: &dyn fmt::Display) {
    let text = reason.to_string();
    out.put_slice(b"error: ");
    for b in text.bytes() {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_u8(b'\r');
}

/// Appends one item of a `keys` or `reads` list.
pub fn encode_list_item(out: &mut BytesMut, item: &[u8]) {
    encode_value(out, item);
}

/// Appends the reply to a `keys` or `reads` that found nothing: `\r`.
pub fn encode_empty_list(out: &mut BytesMut) {
    out.put_u8(b'\r');
}

/// The reply to a `read` of a value that holds a `\r`, which this protocol
/// cannot frame.
pub const NOT_REPRESENTABLE: &str = "value not representable in the text protocol";

/// Whether the text protocol can carry `value` (it holds no `\r`; the
/// value cache remembers the same check per entry).
pub fn can_frame(value: &[u8]) -> bool {
    !escabelo_engine::cache::holds_cr(value)
}

/// Whether `key` is in the text protocol's key grammar (so it can be
/// listed by `keys` and addressed by the other requests).
pub fn is_text_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= KEY_LEN_MAX && key.iter().all(|&b| is_key_byte(b))
}

/// Appends a protocol-neutral reply in this protocol: `Ok` is `success`,
/// a null is the bare `error`, an error is `error: <msg>`, a string is its
/// bytes (or [`NOT_REPRESENTABLE`] if it holds a `\r`).
pub fn encode_reply(out: &mut BytesMut, reply: &crate::reply::Reply) {
    use crate::reply::Reply;
    match reply {
        Reply::Ok => encode_success(out),
        Reply::Null | Reply::NullArray => encode_not_found(out),
        Reply::Error { msg, .. } => encode_error(out, msg),
        Reply::Bulk(v) | Reply::Verbatim(v) => {
            if can_frame(v) {
                encode_value(out, v)
            } else {
                encode_error(out, &NOT_REPRESENTABLE)
            }
        }
        Reply::BulkNoCr(v) => encode_value(out, v),
        Reply::Status(s) => encode_value(out, s.as_bytes()),
        Reply::Int(n) => encode_value(out, n.to_string().as_bytes()),
        Reply::Raw(b) => out.put_slice(b),
        Reply::Array(_) | Reply::Map(_) | Reply::Set(_) => {
            encode_error(out, &"reply not representable in the text protocol")
        }
    }
}

/// The first line of the `status` reply, including its `\n`.
pub const STATUS_HEADER: &[u8] = b"well going our operation\n";

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64;

    fn parse_all(input: &[u8]) -> Vec<Request> {
        let mut p = Parser::new(MAX);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = p.next(&mut buf) {
            out.push(r);
        }
        out
    }

    /// Feeds the input one byte at a time.
    fn parse_bytewise(input: &[u8]) -> Vec<Request> {
        let mut p = Parser::new(MAX);
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

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn write(k: &str, v: &str) -> Request {
        Request::Write {
            key: b(k),
            value: b(v),
        }
    }

    fn read(k: &str) -> Request {
        Request::Read { key: b(k) }
    }

    fn err(e: RequestError) -> Request {
        Request::Invalid(e)
    }

    fn check(input: &[u8], expected: Vec<Request>) {
        assert_eq!(parse_all(input), expected, "whole: {input:?}");
        assert_eq!(parse_bytewise(input), expected, "bytewise: {input:?}");
    }

    #[test]
    fn basic_commands() {
        check(b"write user:1|alice\r", vec![write("user:1", "alice")]);
        check(b"read user:1\r", vec![read("user:1")]);
        check(
            b"delete user:2\r",
            vec![Request::Delete { key: b("user:2") }],
        );
        check(b"status\r", vec![Request::Status]);
        check(b"keys\r", vec![Request::Keys]);
        check(b"reads us\r", vec![Request::Reads { prefix: b("us") }]);
    }

    #[test]
    fn case_and_spaces() {
        check(b"READ x\r", vec![read("x")]);
        check(b"Read   x  \r", vec![read("x")]);
        check(b"STATUS\r", vec![Request::Status]);
        check(b"  keys\r", vec![Request::Keys]);
        check(b"keys extra\r", vec![Request::Keys]);
        check(b"write  k  |v\r", vec![write("k", "v")]);
    }

    #[test]
    fn values_kept_exactly() {
        check(b"write k| a|b\t\n \r", vec![write("k", " a|b\t\n ")]);
        check(b"write k|\r", vec![write("k", "")]);
        check("write k|ção\r".as_bytes(), vec![write("k", "ção")]);
    }

    #[test]
    fn pipelining_empty_and_crlf() {
        check(
            b"write a|1\r\nread a\r\n\r\r\n\rstatus\r",
            vec![write("a", "1"), read("a"), Request::Status],
        );
        check(b"\r\r\r", vec![]);
        check(b"   \r", vec![]);
    }

    #[test]
    fn incomplete_waits() {
        assert_eq!(parse_all(b"read x"), vec![]);
        assert_eq!(parse_all(b"write x|abc"), vec![]);
        assert_eq!(parse_all(b"wri"), vec![]);
    }

    #[test]
    fn errors() {
        check(b"write nopipe\r", vec![err(RequestError::WriteFormat)]);
        check(b"write\r", vec![err(RequestError::WriteFormat)]);
        check(b"write   \r", vec![err(RequestError::WriteFormat)]);
        check(b"write bad!key\r", vec![err(RequestError::WriteFormat)]);
        check(b"write bad!key|v\r", vec![err(RequestError::InvalidKey)]);
        check(b"write a b|v\r", vec![err(RequestError::InvalidKey)]);
        check(b"write |v\r", vec![err(RequestError::InvalidKey)]);
        check(b"read\r", vec![err(RequestError::ReadFormat)]);
        check(b"delete \r", vec![err(RequestError::DeleteFormat)]);
        check(b"reads\r", vec![err(RequestError::ReadsFormat)]);
        check(b"read a b\r", vec![err(RequestError::InvalidKey)]);
        check(b"read a|b\r", vec![err(RequestError::InvalidKey)]);
        check(b"reads a*\r", vec![err(RequestError::InvalidKey)]);
        check(
            b"foo bar\r",
            vec![err(RequestError::UnknownCommand {
                word: b"foo".to_vec(),
                truncated: false,
            })],
        );
        check(
            b"readx\rread ok\r",
            vec![
                err(RequestError::UnknownCommand {
                    word: b"readx".to_vec(),
                    truncated: false,
                }),
                read("ok"),
            ],
        );
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            RequestError::WriteFormat.to_string(),
            "write format: write <key>|<value>"
        );
        assert_eq!(RequestError::InvalidKey.to_string(), "invalid key format");
        let e = RequestError::UnknownCommand {
            word: b"foo".to_vec(),
            truncated: false,
        };
        assert_eq!(e.to_string(), "unknown command: foo");
        let mut out = BytesMut::new();
        encode_error(&mut out, &e);
        assert_eq!(&out[..], b"error: unknown command: foo\r");
    }

    #[test]
    fn long_word_is_bounded() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b" y\rread a\r");
        let r = parse_all(&input);
        assert_eq!(r.len(), 2);
        assert!(matches!(
            &r[0],
            Request::Invalid(RequestError::UnknownCommand {
                truncated: true,
                ..
            })
        ));
        assert_eq!(r[1], read("a"));
    }

    #[test]
    fn key_limit() {
        let mut p = Parser::new(MAX);
        let mut buf = BytesMut::new();
        buf.put_slice(b"write ");
        assert_eq!(p.next(&mut buf), None);
        let chunk = vec![b'k'; 4096];
        let mut sent = 0;
        let mut got = None;
        while sent <= KEY_LEN_MAX + 4096 {
            buf.put_slice(&chunk);
            sent += chunk.len();
            // Only the key is ever kept.
            assert!(buf.len() <= KEY_LEN_MAX + chunk.len());
            if let Some(r) = p.next(&mut buf) {
                got = Some(r);
                break;
            }
        }
        assert_eq!(got, Some(err(RequestError::KeyTooLong)));
        assert!(sent > KEY_LEN_MAX && sent <= KEY_LEN_MAX + chunk.len());
        // The rest of the request is dropped as it arrives.
        for _ in 0..100 {
            buf.put_slice(&chunk);
            assert_eq!(p.next(&mut buf), None);
            assert!(buf.is_empty());
        }
        buf.put_slice(b"|value\rread k\r");
        assert_eq!(p.next(&mut buf), Some(read("k")));
    }

    #[test]
    fn key_at_limit_is_accepted() {
        let mut input = b"read ".to_vec();
        input.extend(std::iter::repeat_n(b'a', KEY_LEN_MAX));
        input.push(b'\r');
        let r = parse_all(&input);
        assert!(matches!(&r[..], [Request::Read { key }] if key.len() == KEY_LEN_MAX));
    }

    #[test]
    fn value_limit() {
        let mut p = Parser::new(MAX);
        let mut buf = BytesMut::from(&b"write k|"[..]);
        assert_eq!(p.next(&mut buf), None);
        buf.put_slice(&[b'v'; MAX]);
        assert_eq!(p.next(&mut buf), None);
        buf.put_slice(b"v");
        assert_eq!(
            p.next(&mut buf),
            Some(err(RequestError::ValueTooLong { max: MAX }))
        );
        assert!(buf.is_empty());
        buf.put_slice(&[b'v'; 1000]);
        assert_eq!(p.next(&mut buf), None);
        assert!(buf.is_empty());
        buf.put_slice(b"vv\rwrite k|");
        buf.put_slice(&[b'v'; MAX]);
        buf.put_slice(b"\r");
        let r = p.next(&mut buf);
        assert!(matches!(r, Some(Request::Write { value, .. }) if value.len() == MAX));
        // Over the limit in one piece, with its `\r` present.
        let mut input = b"write k|".to_vec();
        input.extend(std::iter::repeat_n(b'v', MAX + 1));
        input.extend_from_slice(b"\rread a\r");
        assert_eq!(
            parse_all(&input),
            vec![err(RequestError::ValueTooLong { max: MAX }), read("a")]
        );
    }

    #[test]
    fn invalid_key_is_not_buffered() {
        let mut p = Parser::new(MAX);
        let mut buf = BytesMut::from(&b"write bad!"[..]);
        assert_eq!(p.next(&mut buf), None);
        assert!(buf.is_empty());
        buf.put_slice(b"more|v\r");
        assert_eq!(p.next(&mut buf), Some(err(RequestError::InvalidKey)));
    }

    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..200 {
            let n = rng.gen_range(0..400);
            let input: Vec<u8> = (0..n)
                .map(|_| {
                    let alphabet = b"rw|: \r\n.x\x00\xffREADwritestatus";
                    alphabet[rng.gen_range(0..alphabet.len())]
                })
                .collect();
            assert_eq!(parse_all(&input), parse_bytewise(&input));
        }
    }
}
