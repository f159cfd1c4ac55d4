//! A blocking client whose failures are values, not panics: during a
//! torture round the server is killed under it.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One connection with a buffered reader for `\r`-terminated replies.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    /// Connects to 127.0.0.1:`port` with read and write timeouts.
    pub fn connect(port: u16, timeout: Duration) -> io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::with_capacity(256 * 1024, s.try_clone()?),
            writer: s,
        })
    }

    /// Sends raw bytes.
    pub fn send(&mut self, b: &[u8]) -> io::Result<()> {
        self.writer.write_all(b)
    }

    /// The next reply, without its final `\r`. EOF is an error.
    pub fn reply(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let n = self.reader.read_until(b'\r', &mut out)?;
        if n == 0 || out.last() != Some(&b'\r') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-reply",
            ));
        }
        out.pop();
        Ok(out)
    }

    /// Sends `status` and returns the metrics as pairs.
    pub fn status(&mut self) -> io::Result<Vec<(String, String)>> {
        self.send(b"status\r")?;
        let r = self.reply()?;
        parse_status(&r).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status reply {:?}", String::from_utf8_lossy(&r)),
            )
        })
    }

    /// Sends `keys` followed by `status`, and returns the listed keys (the
    /// `status` reply, whose header cannot be a key, marks the list's end).
    pub fn keys(&mut self) -> io::Result<Vec<Vec<u8>>> {
        self.list(b"keys\r")
    }

    /// Sends a listing request (`keys`, `reads <prefix>`; with its `\r`)
    /// followed by `status`, and returns the listed items. The `status`
    /// reply marks the list's end; it must not look like an item.
    pub fn list(&mut self, req: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let mut r = req.to_vec();
        r.extend_from_slice(b"status\r");
        self.send(&r)?;
        let mut items = Vec::new();
        loop {
            let r = self.reply()?;
            if r.starts_with(STATUS_HEADER) {
                break;
            }
            items.push(r);
        }
        // An empty list is a single bare `\r`.
        if items.len() == 1 && items[0].is_empty() {
            items.clear();
        }
        Ok(items)
    }
}

/// The first line of every `status` reply.
pub const STATUS_HEADER: &[u8] = b"well going our operation\n";

/// Splits a `status` reply (without its `\r`) into metrics.
pub fn parse_status(r: &[u8]) -> Option<Vec<(String, String)>> {
    let body = std::str::from_utf8(r.strip_prefix(STATUS_HEADER)?).ok()?;
    body.split(' ')
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Metric `name` as a number, 0 when absent or not numeric.
pub fn metric(m: &[(String, String)], name: &str) -> u64 {
    m.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
