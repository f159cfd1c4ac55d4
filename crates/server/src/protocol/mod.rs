//! Wire protocols. Each one is a pure parser plus a reply encoder; the
//! connection loop in [`crate::server`] does the I/O and the command layer
//! in [`crate::command`] the work.
//!
//! The first bytes a client sends choose the protocol for the whole
//! connection (see [`detect`], and `PROTOCOL.md` section 6).

pub mod resp;
pub mod text;

use crate::reply::Reply;
use bytes::BytesMut;

/// The protocol spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The `\r`-terminated text protocol of `PROTOCOL.md`.
    Text,
    /// RESP (multibulk and inline requests).
    Resp,
}

/// How replies are encoded: the protocol plus, for RESP, its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// The text protocol.
    Text,
    /// RESP2 or RESP3.
    Resp(resp::Version),
}

impl Wire {
    /// Appends `reply` in this encoding.
    pub fn encode(self, out: &mut BytesMut, reply: &Reply) {
        match self {
            Wire::Text => text::encode_reply(out, reply),
            Wire::Resp(v) => resp::encode(out, v, reply),
        }
    }
}

/// The outcome of looking at the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// Decided.
    Is(Protocol),
    /// More bytes are needed.
    NeedMore,
    /// The first line ended with a `\r` and nothing after it yet, and it
    /// could be a Redis inline command: wait a little for a `\n`, then
    /// choose the text protocol.
    CrPending,
}

/// Longest first line examined before choosing the text protocol.
pub const DETECT_MAX: usize = resp::LINE_MAX;

/// Words of the text protocol.
const TEXT_WORDS: &[&[u8]] = &[b"write", b"read", b"delete", b"status", b"keys", b"reads"];

/// Chooses the protocol from the first bytes received on a connection:
/// `*` is RESP; a first line ending in `\n` whose first word is a Redis
/// command (and not a text-protocol request: `keys` alone is text, `keys *`
/// is Redis) is RESP inline; everything else is the text protocol.
///
/// Waits only while the answer could still be RESP: as soon as the first
/// word is known not to be a Redis command, or to be a text command, the
/// text protocol is chosen without waiting for the end of the line.
pub fn detect(buf: &[u8], is_redis_command: impl Fn(&[u8]) -> bool) -> Detect {
    let Some(&first) = buf.first() else {
        return Detect::NeedMore;
    };
    if first == b'*' {
        return Detect::Is(Protocol::Resp);
    }
    // The first word, after optional spaces.
    let start = buf.iter().position(|&b| b != b' ').unwrap_or(buf.len());
    let rest = &buf[start..];
    let word_end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n' || b == b'\t');
    let word = &rest[..word_end.unwrap_or(rest.len())];
    if word.len() > 32 {
        return Detect::Is(Protocol::Text);
    }
    let Some(word_end) = word_end else {
        // The word is not complete yet.
        if start == buf.len() || could_be_command(word, &is_redis_command) {
            return if buf.len() > DETECT_MAX {
                Detect::Is(Protocol::Text)
            } else {
                Detect::NeedMore
            };
        }
        return Detect::Is(Protocol::Text);
    };
    if word.is_empty() {
        // A line starting with `\r`, `\n` or a tab: not a Redis command.
        return Detect::Is(Protocol::Text);
    }
    let text_word = TEXT_WORDS.iter().any(|w| word.eq_ignore_ascii_case(w));
    let is_keys = word.eq_ignore_ascii_case(b"keys");
    if (text_word && !is_keys) || !is_redis_command(word) {
        return Detect::Is(Protocol::Text);
    }
    // A Redis command word (`keys` included): the end of the line decides.
    let line = &rest[word_end..];
    let Some(end) = line.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() > DETECT_MAX {
            Detect::Is(Protocol::Text)
        } else {
            Detect::NeedMore
        };
    };
    let has_args = line[..end].iter().any(|&b| b != b' ' && b != b'\t');
    let inline = if is_keys { has_args } else { true };
    if line[end] == b'\n' {
        return Detect::Is(if inline {
            Protocol::Resp
        } else {
            Protocol::Text
        });
    }
    // A `\r`: RESP inline only if a `\n` follows.
    if !inline {
        return Detect::Is(Protocol::Text);
    }
    match line.get(end + 1) {
        Some(b'\n') => Detect::Is(Protocol::Resp),
        Some(_) => Detect::Is(Protocol::Text),
        None => Detect::CrPending,
    }
}

/// Whether `prefix` is the start of some Redis command name.
fn could_be_command(prefix: &[u8], is_redis_command: &impl Fn(&[u8]) -> bool) -> bool {
    crate::command::COMMAND_NAMES.iter().any(|n| {
        n.len() >= prefix.len() && n.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix)
    }) || is_redis_command(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: &[u8]) -> Detect {
        detect(b, crate::command::is_command)
    }

    const TEXT: Detect = Detect::Is(Protocol::Text);
    const RESP: Detect = Detect::Is(Protocol::Resp);

    #[test]
    fn detection() {
        assert_eq!(d(b""), Detect::NeedMore);
        assert_eq!(d(b"*"), RESP);
        assert_eq!(d(b"*2\r\n$3\r\nGET"), RESP);
        assert_eq!(d(b"PING\r\n"), RESP);
        assert_eq!(d(b"ping\n"), RESP);
        assert_eq!(d(b"PING\r"), Detect::CrPending);
        assert_eq!(d(b"PING\rread"), TEXT);
        assert_eq!(d(b"PIN"), Detect::NeedMore);
        assert_eq!(d(b"GET k\r\n"), RESP);
        assert_eq!(d(b"GET k"), Detect::NeedMore);
        assert_eq!(d(b"set k v\n"), RESP);
        // Text requests are decided at once.
        assert_eq!(d(b"read k\r"), TEXT);
        assert_eq!(d(b"read "), TEXT);
        assert_eq!(d(b"write k|v\r\n"), TEXT);
        assert_eq!(d(b"status\r\n"), TEXT);
        assert_eq!(d(b"keys\r"), TEXT);
        assert_eq!(d(b"keys\r\n"), TEXT);
        assert_eq!(d(b"KEYS\n"), TEXT);
        assert_eq!(d(b"keys *\r\n"), RESP);
        assert_eq!(d(b"keys *\r"), Detect::CrPending);
        assert_eq!(d(b"keys *"), Detect::NeedMore);
        assert_eq!(d(b"foo bar\r"), TEXT);
        assert_eq!(d(b"foo"), TEXT);
        assert_eq!(d(b"\r"), TEXT);
        assert_eq!(d(b"\x00\xff"), TEXT);
        assert_eq!(d(b"  PING\r\n"), RESP);
        assert_eq!(d(b"   "), Detect::NeedMore);
        // Bounded: a long line is text.
        let mut long = b"SET k ".to_vec();
        long.extend(std::iter::repeat_n(b'v', DETECT_MAX + 1));
        assert_eq!(d(&long), TEXT);
    }
}
