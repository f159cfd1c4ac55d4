//! The TCP server: listener, connection limit, graceful shutdown.

pub mod busy_poll;
pub mod connection;
pub mod input;
pub mod keep_awake;
pub mod loops;
pub mod output;
pub mod stats;

use connection::Context;
use escabelo_engine::Db;
use loops::EventLoops;
use stats::Counters;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

/// Reply sent to a client refused by `--max-connections`.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"error: too many connections\r";

/// How long shutdown waits for connections to answer what they received.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Server settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Most clients served at once.
    pub max_connections: usize,
    /// Largest value accepted.
    pub max_value_len: usize,
}

/// A bound, not yet serving, server.
pub struct Server {
    listener: TcpListener,
    settings: Settings,
    db: Db,
    counters: Arc<Counters>,
    loops: EventLoops,
}

/// Binds a listening socket with `SO_REUSEADDR` and a large backlog.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Counts a live connection; wakes the shutdown waiter when the last ends.
struct ConnGuard {
    counters: Arc<Counters>,
    idle: Arc<Notify>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.counters.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Server {
    /// Binds the listening socket. Must run inside a tokio runtime.
    pub fn bind(settings: Settings, db: Db) -> io::Result<Server> {
        let listener = bind(settings.addr)?;
        Ok(Server {
            listener,
            settings,
            db,
            counters: Arc::new(Counters::new()),
            loops: EventLoops::none(),
        })
    }

    /// Deals new connections out between the caller's runtime and `loops`
    /// (by default every connection runs on the caller's runtime).
    pub fn with_event_loops(mut self, loops: EventLoops) -> Server {
        self.loops = loops;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The counters its connections update.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Serves clients until `stop` completes, then stops accepting, lets
    /// every connection answer the requests it already received (for up to
    /// 10 seconds), and returns.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        let (tx, rx) = watch::channel(false);
        let idle = Arc::new(Notify::new());
        let ctx = Context {
            db: self.db.clone(),
            counters: self.counters.clone(),
            max_value_len: self.settings.max_value_len,
            shutdown: rx,
            info: Arc::new(connection::ServerInfo::new(
                self.listener.local_addr().unwrap_or(self.settings.addr),
                self.settings.max_connections,
            )),
        };
        let max = self.settings.max_connections as u64;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                r = self.listener.accept() => match r {
                    Ok((stream, peer)) => self.admit(stream, peer, &ctx, &idle, max),
                    Err(e) => {
                        // Out of file descriptors and the like: back off.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(self.listener);
        let _ = tx.send(true);
        let live = self.counters.connections.load(Ordering::Acquire);
        info!(
            connections = live,
            "stopped accepting; finishing in-flight requests"
        );
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            loop {
                let notified = idle.notified();
                if self.counters.connections.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                connections = self.counters.connections.load(Ordering::Acquire),
                "connections still open after the drain timeout; closing them"
            );
        }
        self.loops.stop();
    }

    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        ctx: &Context,
        idle: &Arc<Notify>,
        max: u64,
    ) {
        let counters = &self.counters;
        if counters.connections.fetch_add(1, Ordering::AcqRel) >= max {
            counters.connections.fetch_sub(1, Ordering::AcqRel);
            Counters::bump(&counters.connections_refused);
            debug!(%peer, "refused: too many connections");
            refuse(stream);
            return;
        }
        Counters::bump(&counters.connections_total);
        let guard = ConnGuard {
            counters: counters.clone(),
            idle: idle.clone(),
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "set_nodelay failed");
        }
        let ctx = ctx.clone();
        debug!(%peer, "client connected");
        let Some(handle) = self.loops.pick() else {
            tokio::spawn(serve_client(stream, ctx, guard, peer));
            return;
        };
        // The socket moves to the other loop's reactor: taken off this
        // one's here, registered with that one's inside its task.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, error = %e, "cannot hand the connection over");
                return;
            }
        };
        handle.spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve_client(stream, ctx, guard, peer).await,
                Err(e) => debug!(%peer, error = %e, "cannot register the connection"),
            }
        });
    }
}

/// Serves one admitted client; `guard` counts it until it leaves.
async fn serve_client(stream: TcpStream, ctx: Context, guard: ConnGuard, peer: SocketAddr) {
    let _guard = guard;
    let _served = busy_poll::Served::new(std::os::fd::AsRawFd::as_raw_fd(&stream));
    connection::serve(stream, ctx).await;
    debug!(%peer, "client disconnected");
}

/// Tells a client over the connection limit why, then closes. The reply is
/// tiny and the socket's send buffer empty, so one non-blocking write is
/// enough; no task or buffer is kept for a refused client.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(TOO_MANY_CONNECTIONS);
    drop(stream);
}
