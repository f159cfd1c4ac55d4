//! Startup flags, shutdown, and persistence across restarts, against the
//! real binary.
//!
//! The persistence tests need the real storage engine; with the temporary
//! in-memory stand-in they fail, as expected until the engine lands.

mod common;

use common::{free_port, metric, spawn, Server, TIMEOUT};
use std::process::Command;

#[test]
fn legacy_single_dash_invocation_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for _ in 0..5 {
        let port = free_port();
        let args: Vec<String> = vec![
            format!("-port={port}"),
            format!("-data-dir={}", data.display()),
            "-memtable-size=67108864".into(),
            "-compaction-interval=5m".into(),
            "-wal-sync-interval=1s".into(),
        ];
        let child = spawn(&args);
        if let Some(mut srv) = Server::wait_ready(child, port, &data) {
            srv.client()
                .roundtrip(b"write a|1\rread a\r", b"success\r1\r");
            assert!(srv.stop().success());
            return;
        }
    }
    panic!("legacy invocation did not start");
}

#[test]
fn legacy_flags_with_separate_values_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let args: Vec<String> = vec![
        "-port".into(),
        port.to_string(),
        "-data-dir".into(),
        data.display().to_string(),
        "-durability".into(),
        "sync".into(),
    ];
    let mut srv = Server::wait_ready(spawn(&args), port, &data).expect("started");
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
        "[default: 64MiB]",
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
    assert_eq!(metric(&c.status(), "keys"), 99);
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
    assert_eq!(metric(&c.status(), "keys"), 299);
}
