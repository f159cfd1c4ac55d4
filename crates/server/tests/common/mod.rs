//! Helpers shared by the integration tests: start the real `escabelo`
//! binary on a free 127.0.0.1 port with a temporary data directory, and a
//! small blocking client.

#![allow(dead_code)]

pub mod resp;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default timeout of every network wait in the tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Keeps the temporary directory alive.
    pub tmp: Option<tempfile::TempDir>,
    /// Everything the server wrote to stderr so far.
    pub log: Log,
}

/// The stderr of a server process, collected by a thread.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    /// The text so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// The port from the `listening addr=...` line, once logged.
    pub fn port(&self) -> Option<u16> {
        let t = self.text();
        let at = t.find("listening addr=")? + "listening addr=".len();
        let addr: String = t[at..].chars().take_while(|c| !c.is_whitespace()).collect();
        addr.rsplit(':').next()?.parse().ok()
    }
}

impl Server {
    /// Starts a server with a fresh data directory and extra flags.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut s = Server::start_in(&data_dir, extra);
        s.tmp = Some(tmp);
        s
    }

    /// Starts a server on `data_dir` with extra flags, on a port chosen by
    /// the kernel (`--port 0`; the port is read from the log).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn_ready(&args, data_dir).expect("server did not start")
    }

    /// Spawns the binary with raw arguments and waits until it logs its
    /// listening address and accepts connections; `None` if it exited.
    pub fn spawn_ready(args: &[String], data_dir: &Path) -> Option<Server> {
        let (mut child, log) = spawn(args);
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Some(port) = log.port() {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Server {
                        child,
                        port,
                        data_dir: data_dir.to_path_buf(),
                        tmp: None,
                        log,
                    });
                }
            }
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// A new client connection.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(pid, sig) };
        assert_eq!(r, 0, "kill failed");
    }

    /// Waits for the process to exit, with a timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "server did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(TIMEOUT)
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_exit(TIMEOUT);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns the binary with raw arguments (info logging, no colours);
/// stderr is collected into the returned [`Log`]. The metrics endpoint is
/// off unless the arguments ask for it (`--metrics-port`), so servers
/// started in parallel do not compete for its default port.
pub fn spawn(args: &[String]) -> (Child, Log) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_escabelo"))
        .args(args)
        .env("ESCABELO_LOG_LEVEL", "info")
        .env("ESCABELO_METRICS_PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::default();
    if let Some(mut err) = child.stderr.take() {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.0
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    (child, log)
}

/// A blocking test client.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    /// Connects with read/write timeouts.
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads until `n` `\r` bytes have arrived; returns everything read.
    /// Panics on timeout or EOF before that.
    pub fn read_crs(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut seen = 0;
        let mut buf = [0u8; 65536];
        while seen < n {
            let k = self.stream.read(&mut buf).expect("read timed out");
            assert!(k > 0, "server closed the connection; got {:?}", lossy(&out));
            seen += buf[..k].iter().filter(|&&b| b == b'\r').count();
            out.extend_from_slice(&buf[..k]);
        }
        assert_eq!(seen, n, "more replies than expected: {:?}", lossy(&out));
        out
    }

    /// Reads exactly `expected.len()` bytes and compares them.
    pub fn expect(&mut self, expected: &[u8]) {
        let mut got = vec![0u8; expected.len()];
        self.stream.read_exact(&mut got).expect("read timed out");
        assert_eq!(lossy(&got), lossy(expected));
    }

    /// Sends `req` and checks the reply byte for byte.
    pub fn roundtrip(&mut self, req: &[u8], expected: &[u8]) {
        self.send(req);
        self.expect(expected);
    }

    /// Sends a request and returns a reply holding `crs` `\r` bytes.
    pub fn request(&mut self, req: &[u8], crs: usize) -> Vec<u8> {
        self.send(req);
        self.read_crs(crs)
    }

    /// Reads the `status` reply and returns the metrics as pairs.
    pub fn status(&mut self) -> Vec<(String, String)> {
        let r = self.request(b"status\r", 1);
        parse_status(&r)
    }

    /// True when the server closed the connection (EOF or reset) within the
    /// timeout.
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        matches!(self.stream.read(&mut buf), Ok(0) | Err(_))
    }
}

/// Splits a `status` reply into its metrics.
pub fn parse_status(r: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8(r.to_vec()).unwrap();
    let body = text
        .strip_prefix("well going our operation\n")
        .expect("status header")
        .strip_suffix('\r')
        .expect("status ends with \\r");
    body.split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("name=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The value of metric `name`.
pub fn metric(m: &[(String, String)], name: &str) -> u64 {
    m.iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
        .1
        .parse()
        .unwrap()
}

/// Printable form of bytes for assertion messages.
pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
