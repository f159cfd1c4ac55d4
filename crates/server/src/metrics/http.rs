//! The metrics listener: a minimal HTTP/1.x server, on its own port, that
//! answers `GET /metrics` (and `HEAD /metrics`) with the Prometheus text
//! exposition and closes the connection after every reply.
//!
//! - Any other path gets `404`, any other method `405`; a request head that
//!   is malformed or over [`REQUEST_MAX`] bytes gets `400`.
//! - A request must arrive within [`REQUEST_TIMEOUT`] (else `408`) and the
//!   reply be taken within [`WRITE_TIMEOUT`]; at most [`SCRAPES_MAX`]
//!   requests are served at once (others get `503`).
//! - Nothing here can stop the database server: failures are logged at
//!   debug level and end only the connection they happened on.

use super::{render, Scrape, RECORDER};
use crate::server::stats::Counters;
use escabelo_engine::Db;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Largest request head accepted, in bytes.
pub const REQUEST_MAX: usize = 8 * 1024;
/// Time allowed for the whole request head to arrive.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the client to take the whole reply.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests served at once.
pub const SCRAPES_MAX: usize = 8;
/// The content type of the text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// After replying, bytes of an unread request drained before closing (so
/// the close does not reset the connection and lose the reply).
const DRAIN_MAX: usize = 64 * 1024;
/// Time spent draining at most.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// A bound metrics listener, not yet serving.
pub struct MetricsServer {
    listener: TcpListener,
    db: Db,
    counters: Arc<Counters>,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The metrics; `head`: headers only.
    Metrics { head: bool },
    /// An error status and its reason phrase.
    Error(u16, &'static str),
}

impl MetricsServer {
    /// Binds the listener. Must run inside a tokio runtime.
    pub fn bind(addr: SocketAddr, db: Db, counters: Arc<Counters>) -> io::Result<MetricsServer> {
        Ok(MetricsServer {
            listener: crate::server::bind(addr)?,
            db,
            counters,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves scrapes until the task is dropped or aborted.
    pub async fn run(self) {
        let slots = Arc::new(Semaphore::new(SCRAPES_MAX));
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        debug!(%peer, "metrics: too many scrapes at once");
                        refuse_busy(stream);
                        continue;
                    };
                    let db = self.db.clone();
                    let counters = self.counters.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Err(e) = serve(stream, db, counters).await {
                            debug!(%peer, error = %e, "metrics connection failed");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

fn refuse_busy(stream: TcpStream) {
    let reply = response(503, "Service Unavailable", "text/plain", b"busy\n", false);
    let _ = stream.try_write(&reply);
}

/// Where the request head ends (just after its blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Routes a complete request head.
fn route(head: &[u8]) -> Route {
    const BAD: Route = Route::Error(400, "Bad Request");
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let Ok(line) = std::str::from_utf8(line) else {
        return BAD;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return BAD;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || target.bytes().any(|b| b.is_ascii_control())
    {
        return BAD;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::Error(405, "Method Not Allowed"),
    };
    let path = target.split('?').next().unwrap_or(target);
    if path == "/metrics" {
        Route::Metrics { head: head_only }
    } else {
        Route::Error(404, "Not Found")
    }
}

/// An HTTP/1.1 response that closes the connection.
fn response(code: u16, reason: &str, content_type: &str, body: &[u8], head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head {
        out.extend_from_slice(body);
    }
    out
}

/// Reads the request head: `Ok(Ok(len))` once complete, `Ok(Err(400))`
/// when it is over the limit; an error if the client closed first.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Result<usize, Route>> {
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the request",
            ));
        }
        // Only the new bytes (and the three before them) can complete the
        // blank line.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[from..]) {
            return Ok(Ok(from + end));
        }
        if buf.len() > REQUEST_MAX {
            return Ok(Err(Route::Error(400, "Bad Request")));
        }
    }
}

/// Serves one connection: one request, one reply, close.
async fn serve(mut stream: TcpStream, db: Db, counters: Arc<Counters>) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let route = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream, &mut buf)).await
    {
        Err(_) => Route::Error(408, "Request Timeout"),
        Ok(r) => match r? {
            Ok(end) => route(&buf[..end]),
            Err(too_long) => too_long,
        },
    };
    let reply = match route {
        Route::Metrics { head } => {
            // `Db::stats` takes the engine's locks: keep it off the I/O
            // threads.
            let body = tokio::task::spawn_blocking(move || {
                render(&Scrape::take(&counters, &RECORDER, &db))
            })
            .await
            .map_err(io::Error::other)?;
            response(200, "OK", METRICS_CONTENT_TYPE, body.as_bytes(), head)
        }
        Route::Error(code, reason) => {
            let body = format!("{code} {reason}\n");
            response(
                code,
                reason,
                "text/plain; charset=utf-8",
                body.as_bytes(),
                false,
            )
        }
    };
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&reply))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "reply not taken in time"))??;
    stream.shutdown().await?;
    // Take what the client may still send, briefly, so that closing does
    // not reset the connection before it has read the reply.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut drained = 0;
        let mut sink = [0u8; 4096];
        while drained < DRAIN_MAX {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0\n\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { head: true }
        );
        assert_eq!(
            route(b"GET / HTTP/1.1\r\n\r\n"),
            Route::Error(404, "Not Found")
        );
        assert_eq!(
            route(b"GET /metricsx HTTP/1.1\r\n\r\n"),
            Route::Error(404, "Not Found")
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::Error(405, "Method Not Allowed")
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET /metrics HTTP/2\r\n\r\n",
            b"hello\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(route(bad), Route::Error(400, "Bad Request"), "{bad:?}");
        }
    }

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn responses_say_their_length_and_close() {
        let r =
            String::from_utf8(response(404, "Not Found", "text/plain", b"nope\n", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        assert!(r.contains("Content-Length: 5\r\n") && r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nnope\n"));
        let h = String::from_utf8(response(200, "OK", "text/plain", b"abc", true)).unwrap();
        assert!(h.contains("Content-Length: 3\r\n") && h.ends_with("\r\n\r\n"));
    }
}
