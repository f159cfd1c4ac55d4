//! The protocol-neutral reply of a command. Each protocol's encoder turns it
//! into bytes (see [`crate::protocol`]).

use bytes::Bytes;
use std::borrow::Cow;

/// A reply, before it is encoded for the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Success without data: RESP `+OK`, text `success`.
    Ok,
    /// A short status line: RESP `+<text>`.
    Status(Cow<'static, str>),
    /// A failure. RESP writes `-<code> <msg>`; the text protocol writes
    /// `error: <msg>`.
    Error {
        /// The error class clients map to exceptions (`ERR`, `NOPROTO`...).
        code: &'static str,
        /// The message.
        msg: Cow<'static, str>,
    },
    /// An integer.
    Int(i64),
    /// A binary-safe string (text protocol: the bytes, if they can be
    /// framed).
    Bulk(Bytes),
    /// A string known to hold no `\r`: a bulk string in RESP, sent as it is
    /// by the text protocol without looking for one (see
    /// [`escabelo_engine::Found`]).
    BulkNoCr(Bytes),
    /// A missing value: RESP2 `$-1`, RESP3 `_`, text `error`.
    Null,
    /// A missing array: RESP2 `*-1`, RESP3 `_`.
    NullArray,
    /// An array of replies.
    Array(Vec<Reply>),
    /// A map: RESP3 `%`, RESP2 a flat array of key, value, ...
    Map(Vec<(Reply, Reply)>),
    /// A set: RESP3 `~`, RESP2 an array.
    Set(Vec<Reply>),
    /// Text for humans: RESP3 verbatim string `=` of format `txt`, RESP2
    /// a bulk string.
    Verbatim(Bytes),
    /// Bytes already encoded for the connection's protocol.
    Raw(Bytes),
}

impl Reply {
    /// `ERR <msg>`.
    pub fn err(msg: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Error {
            code: "ERR",
            msg: msg.into(),
        }
    }

    /// An error with its own class (`NOPROTO`, `EXECABORT`, ...).
    pub fn error(code: &'static str, msg: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Error {
            code,
            msg: msg.into(),
        }
    }

    /// A bulk string copied from a slice.
    #[cfg(test)]
    pub fn bulk(b: &[u8]) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(b))
    }

    /// A bulk string from static text.
    pub fn text(s: &'static str) -> Reply {
        Reply::Bulk(Bytes::from_static(s.as_bytes()))
    }

    /// The value or a null.
    pub fn opt(v: Option<Bytes>) -> Reply {
        match v {
            Some(v) => Reply::Bulk(v),
            None => Reply::Null,
        }
    }
}
