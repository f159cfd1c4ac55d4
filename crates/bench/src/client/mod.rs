//! A pipelined connection to the server, generic over the two protocols.

use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::Protocol;

pub mod resp;
pub mod text;

/// What a reply says, independent of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// The write was acknowledged (`success`, `+OK`).
    Success,
    /// A value (text: any other line; RESP: a bulk string).
    Value,
    /// The key is absent (text: bare `error`; RESP: `$-1`).
    NotFound,
    /// The server reported a failure (`error: ...`, `-ERR ...`, or an
    /// unexpected RESP type).
    Failure,
}

/// One decoded reply: its kind, where its body is, and its size on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Kind of reply.
    pub kind: ReplyKind,
    /// The body (value or message) inside the buffer that was decoded.
    pub body: Range<usize>,
    /// Bytes the reply took, including its terminator.
    pub consumed: usize,
}

/// The server sent bytes that are not a reply of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol error: {0}")]
pub struct ProtoError(pub String);

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No progress within the timeout.
    #[error("timed out after {0:?} {1}")]
    Timeout(Duration, &'static str),
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
    /// The server's bytes made no sense.
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

/// A pipelined client connection: requests are appended to a send buffer,
/// sent together with [`Conn::flush`], and replies read in order with
/// [`Conn::next_reply`]. Only connecting has a timeout of its own; the
/// caller bounds a whole batch (one timer per batch, not one per call).
pub struct Conn {
    stream: TcpStream,
    protocol: Protocol,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    start: usize,
    pending_consume: usize,
    /// Bytes after `start` known to hold no complete reply's terminator
    /// (text protocol), so that the next search starts after them.
    scanned: usize,
}

impl Conn {
    /// Connects to `addr` with TCP_NODELAY, giving up after `io_timeout`.
    pub async fn connect(
        addr: &str,
        protocol: Protocol,
        io_timeout: Duration,
    ) -> Result<Conn, ClientError> {
        let stream = timeout(io_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(io_timeout, "connecting"))??;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            protocol,
            wbuf: Vec::with_capacity(64 * 1024),
            rbuf: Vec::with_capacity(256 * 1024),
            start: 0,
            pending_consume: 0,
            scanned: 0,
        })
    }

    /// Queues a read of `key`.
    pub fn queue_read(&mut self, key: &str) {
        match self.protocol {
            Protocol::Text => text::encode_read(&mut self.wbuf, key),
            Protocol::Resp => resp::encode_read(&mut self.wbuf, key),
        }
    }

    /// Queues a write of `key`; `value` must append exactly `len` bytes
    /// (and, for the text protocol, no `\r`).
    pub fn queue_write(&mut self, key: &str, len: usize, value: impl FnOnce(&mut Vec<u8>)) {
        match self.protocol {
            Protocol::Text => text::encode_write(&mut self.wbuf, key, value),
            Protocol::Resp => resp::encode_write(&mut self.wbuf, key, len, value),
        }
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// Waits for the next reply and returns its kind and body.
    pub async fn next_reply(&mut self) -> Result<(ReplyKind, &[u8]), ClientError> {
        self.start += self.pending_consume;
        self.pending_consume = 0;
        let decoded = loop {
            let avail = &self.rbuf[self.start..];
            let d = match self.protocol {
                Protocol::Text => text::decode(avail, self.scanned)?,
                Protocol::Resp => resp::decode(avail)?,
            };
            if let Some(d) = d {
                break d;
            }
            self.scanned = avail.len();
            if self.start == self.rbuf.len() {
                // Everything was consumed: reuse the buffer from its start.
                self.rbuf.clear();
                self.start = 0;
            } else if self.start > 0 {
                self.rbuf.drain(..self.start);
                self.start = 0;
            }
            self.rbuf.reserve(64 * 1024);
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
        };
        self.scanned = 0;
        self.pending_consume = decoded.consumed;
        let base = self.start;
        Ok((
            decoded.kind,
            &self.rbuf[base + decoded.body.start..base + decoded.body.end],
        ))
    }
}
