//! Startup flags, shutdown, and persistence across restarts, against the
//! real binary.
//!
//! The persistence tests need the real storage engine; with the temporary
//! in-memory stand-in they fail, as expected until the engine lands.

mod common;

use common::{metric, spawn, Server, TIMEOUT};
use std::process::Command;

#[test]
fn legacy_single_dash_invocation_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args: Vec<String> = vec![
        "-port=0".into(),
        format!("-data-dir={}", data.display()),
        "-memtable-size=67108864".into(),
        "-compaction-interval=5m".into(),
        "-wal-sync-interval=1s".into(),
    ];
    let mut srv = Server::spawn_ready(&args, &data).expect("legacy invocation did not start");
    srv.client()
        .roundtrip(b"write a|1\rread a\r", b"success\r1\r");
    assert!(srv.stop().success());
    let log = srv.log.text();
    assert!(log.contains("wal_sync_interval=1s"), "{log}");
    assert!(log.contains("memtable_size=67108864"), "{log}");
}

#[test]
fn legacy_flags_with_separate_values_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args: Vec<String> = vec![
        "-port".into(),
        "0".into(),
        "-data-dir".into(),
        data.display().to_string(),
        "-durability".into(),
        "sync".into(),
    ];
    let mut srv = Server::spawn_ready(&args, &data).expect("started");
    let r = srv.client().request(b"status\r", 1);
    assert!(String::from_utf8_lossy(&r).contains(" durability=sync"));
    assert!(srv.stop().success());
}

#[test]
fn help_lists_flags_with_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_escabelo"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--port",
        "--bind",
        "--data-dir",
        "--memtable-size",
        "--compaction-interval",
        "--wal-sync-interval",
        "--durability",
        "--max-value-size",
        "--cache-size",
        "--max-connections",
        "--log-level",
        "ESCABELO_PORT",
        "[default: 8080]",
        "[default: 128MiB]",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn bad_flags_fail() {
    let st = Command::new(env!("CARGO_BIN_EXE_escabelo"))
        .args(["--memtable-size", "lots"])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success());
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let mut srv = Server::start(&[]);
    let mut c = srv.client();
    c.roundtrip(b"write a|1\r", b"success\r");
    // Requests already received are answered after the signal.
    c.send(&b"read a\r".repeat(200));
    std::thread::sleep(std::time::Duration::from_millis(100));
    srv.signal(libc::SIGTERM);
    let r = c.read_crs(200);
    assert_eq!(r, b"1\r".repeat(200));
    assert!(c.is_closed());
    let st = srv.wait_exit(TIMEOUT);
    assert!(st.success(), "exit status {st:?}");
}

#[test]
fn persistence_across_sigterm_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut srv = Server::start_in(&data, &[]);
    let mut c = srv.client();
    for i in 0..100 {
        c.roundtrip(format!("write p:{i}|v{i}\r").as_bytes(), b"success\r");
    }
    c.roundtrip(b"delete p:7\r", b"success\r");
    c.roundtrip(b"write p:8|changed\r", b"success\r");
    drop(c);
    assert!(srv.stop().success());
    drop(srv);

    let srv = Server::start_in(&data, &[]);
    let mut c = srv.client();
    c.roundtrip(b"read p:0\r", b"v0\r");
    c.roundtrip(b"read p:99\r", b"v99\r");
    c.roundtrip(b"read p:7\r", b"error\r");
    c.roundtrip(b"read p:8\r", b"changed\r");
    c.request(b"keys\r", 99);
    assert_eq!(metric(&c.status(), "writes"), 0);
}

#[test]
fn persistence_across_kill_9_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut srv = Server::start_in(&data, &[]);
    let mut c = srv.client();
    let mut req = Vec::new();
    for i in 0..300 {
        req.extend_from_slice(format!("write k:{i}|value {i}\r").as_bytes());
    }
    req.extend_from_slice(b"delete k:5\r");
    c.send(&req);
    let r = c.read_crs(301);
    assert_eq!(r, b"success\r".repeat(301));
    // Every acknowledged change must survive a kill -9 right after.
    srv.kill9();
    drop(srv);

    let srv = Server::start_in(&data, &[]);
    let mut c = srv.client();
    c.roundtrip(b"read k:0\r", b"value 0\r");
    c.roundtrip(b"read k:299\r", b"value 299\r");
    c.roundtrip(b"read k:5\r", b"error\r");
    c.request(b"keys\r", 299);
}

#[test]
fn second_signal_exits_at_once() {
    let mut srv = Server::start(&[]);
    let mut c = srv.client();
    let mut req = b"write big|".to_vec();
    req.extend(std::iter::repeat_n(b'v', 256 * 1024));
    req.push(b'\r');
    c.roundtrip(&req, b"success\r");
    // A client that never reads keeps its connection from draining.
    let mut hog = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    hog.set_write_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    let batch = b"read big\r".repeat(100);
    for _ in 0..200 {
        if std::io::Write::write_all(&mut hog, &batch).is_err() {
            break;
        }
    }
    // Make sure the server is answering the hog (its requests are in
    // flight) before the signal: on a slow machine the connection may not
    // have been read yet, and requests never received are not in flight.
    hog.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut hog, &mut first).unwrap();
    assert_eq!(&first, b"v");
    srv.signal(libc::SIGTERM);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(srv.child.try_wait().unwrap().is_none(), "still draining");
    let start = std::time::Instant::now();
    srv.signal(libc::SIGTERM);
    let st = srv.wait_exit(TIMEOUT);
    assert!(start.elapsed() < std::time::Duration::from_secs(3));
    assert!(!st.success());
}

/// One server per data directory. Needs the real engine's directory lock
/// (the in-memory stand-in has none).
#[test]
fn second_server_on_same_data_dir_exits_with_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _first = Server::start_in(&data, &[]);
    let (mut child, log) = spawn(&[
        "--port".into(),
        "0".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ]);
    let status = exits_by_itself(&mut child, "a second server on the same data directory");
    assert!(!status.success());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let err = log.text();
    assert!(err.contains("cannot open the database"), "{err}");
}

/// `--io-threads 1` runs a single-threaded event loop (tokio's
/// current-thread runtime): many clients at once, a streamed reply (which
/// runs on the blocking pool), and a graceful stop must all work on it.
#[test]
fn one_io_thread_serves_many_clients_and_stops_gracefully() {
    serves_many_clients_and_stops_gracefully("1");
}

/// With three event loops, connections are dealt out between them: each
/// loop's clients are served, writes made on one loop are read on the
/// others, and a graceful stop still lets every loop answer what it got.
#[test]
fn three_io_threads_serve_many_clients_and_stop_gracefully() {
    serves_many_clients_and_stops_gracefully("3");
}

/// An `--io-threads` over the limit is refused at startup (exit 2).
#[test]
fn too_many_io_threads_are_refused() {
    refused_with(
        "--io-threads",
        "5000",
        "--io-threads 5000 is over the limit",
    );
}

#[test]
fn a_busy_poll_over_the_limit_is_refused() {
    refused_with(
        "--busy-poll-us",
        "5000",
        "--busy-poll-us 5000 is over the limit",
    );
}

#[test]
fn a_keep_awake_window_over_the_limit_is_refused() {
    refused_with(
        "--keep-awake-us",
        "100001",
        "--keep-awake-us 100001 is over the limit",
    );
}

/// Starts a server with `flag value`, which must exit with code 2 and say
/// `message`.
fn refused_with(flag: &str, value: &str, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = spawn(&[
        "--port".into(),
        "0".into(),
        "--data-dir".into(),
        dir.path().join("d").display().to_string(),
        flag.into(),
        value.into(),
    ]);
    let status = exits_by_itself(&mut child, &format!("a server with {flag} {value}"));
    assert_eq!(status.code(), Some(2));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(log.text().contains(message), "{}", log.text());
}

fn serves_many_clients_and_stops_gracefully(io_threads: &str) {
    let mut srv = Server::start(&["--io-threads", io_threads]);
    let port = srv.port;
    let writers: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = common::Client::connect(port);
                let mut batch = Vec::new();
                for i in 0..200 {
                    batch.extend_from_slice(format!("write t{t}:{i:03}|v{t}.{i}\r").as_bytes());
                }
                c.send(&batch);
                assert_eq!(c.read_crs(200), b"success\r".repeat(200));
                for i in (0..200).step_by(37) {
                    c.roundtrip(
                        format!("read t{t}:{i:03}\r").as_bytes(),
                        format!("v{t}.{i}\r").as_bytes(),
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("client thread");
    }
    // Fresh connections land on every loop in turn; each reads what the
    // writers' connections (on other loops) wrote.
    for t in 0..8 {
        let mut c = srv.client();
        c.roundtrip(
            format!("read t{t}:199\r").as_bytes(),
            format!("v{t}.199\r").as_bytes(),
        );
    }
    let mut c = srv.client();
    let keys = c.request(b"keys\r", 1600);
    assert_eq!(keys.iter().filter(|&&b| b == b'\r').count(), 1600);
    c.send(&b"read t3:005\r".repeat(100));
    std::thread::sleep(std::time::Duration::from_millis(50));
    srv.signal(libc::SIGTERM);
    assert_eq!(c.read_crs(100), b"v3.5\r".repeat(100));
    let st = srv.wait_exit(TIMEOUT);
    assert!(st.success(), "exit status {st:?}");
}

/// Waits up to `TIMEOUT` for a server expected to stop by itself; kills it
/// and fails the test if it keeps running.
fn exits_by_itself(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
