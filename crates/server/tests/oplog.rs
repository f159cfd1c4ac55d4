//! `escabelo log` through the real binary: the operations still held in
//! the write-ahead log of a directory written through the text protocol.

mod common;

use common::Server;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// Runs the binary; (success, stdout, stderr).
fn escabelo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_escabelo"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes three keys, overwrites one and deletes one, then stops the server.
fn fill(data: &Path) {
    let mut srv = Server::start_in(data, &[]);
    let mut c = srv.client();
    c.roundtrip(b"write user:1|alice\r", b"success\r");
    c.roundtrip(b"write user:2|bob\r", b"success\r");
    c.roundtrip(b"write user:1|alicia\r", b"success\r");
    c.roundtrip(b"delete user:2\r", b"success\r");
    c.roundtrip(b"write k|\r", b"success\r");
    drop(c);
    assert!(srv.stop().success());
}

/// The operations of `fill`, in order: (op, key, len).
const EXPECTED: &[(&str, &str, Option<u64>)] = &[
    ("write", "user:1", Some(5)),
    ("write", "user:2", Some(3)),
    ("write", "user:1", Some(6)),
    ("delete", "user:2", None),
    ("write", "k", Some(0)),
];

#[test]
fn log_lists_the_operations_as_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fill(&data);
    let d = data.to_str().unwrap();

    let (ok, out, err) = escabelo(&["log", "--data-dir", d]);
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), EXPECTED.len() + 1, "{out}");
    for (i, (line, (op, key, len))) in lines.iter().zip(EXPECTED).enumerate() {
        let len = len.map_or("-".to_string(), |l| l.to_string());
        assert!(line.starts_with(&format!("seq={} file=", i + 1)), "{line}");
        assert!(
            line.ends_with(&format!(" op={op} key={key} len={len}")),
            "{line}"
        );
    }
    assert!(
        lines[EXPECTED.len()].starts_with("summary: 5 entries in 5 records, "),
        "{out}"
    );

    let (ok, out, err) = escabelo(&["log", "--data-dir", d, "--json"]);
    assert!(ok, "{out}{err}");
    let objs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(objs.len(), EXPECTED.len() + 1, "{out}");
    let mut last_offset = None;
    for (i, (o, (op, key, len))) in objs.iter().zip(EXPECTED).enumerate() {
        assert_eq!(o["seq"], i as u64 + 1, "{o}");
        assert_eq!(o["op"], *op, "{o}");
        assert_eq!(o["key"], *key, "{o}");
        assert_eq!(o["len"].as_u64(), *len, "{o}");
        assert!(o["txn"].is_null(), "{o}");
        assert!(o["file"].as_str().unwrap().ends_with(".log"), "{o}");
        let offset = o["offset"].as_u64().unwrap();
        if o["file"] == objs[0]["file"] {
            assert!(last_offset < Some(offset), "offsets grow: {out}");
            last_offset = Some(offset);
        }
    }
    assert_eq!(objs[EXPECTED.len()]["summary"]["entries"], 5, "{out}");

    // Listing changed nothing: check still passes and the log is the same.
    let (ok, report, _) = escabelo(&["check", "--data-dir", d]);
    assert!(ok, "{report}");
    let (_, again, _) = escabelo(&["log", "--data-dir", d, "--json"]);
    assert_eq!(again, out);
}

#[test]
fn log_refuses_while_the_server_runs_unless_following() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let srv = Server::start_in(&data, &[]);
    let d = data.to_str().unwrap();
    let mut c = srv.client();
    c.roundtrip(b"write a|1\r", b"success\r");

    let (ok, out, err) = escabelo(&["log", "--data-dir", d]);
    assert!(!ok, "{out}");
    assert!(err.contains("locked"), "{err}");

    // --follow takes no lock: it lists what is there, then what is written
    // after it started.
    let mut child = Command::new(env!("CARGO_BIN_EXE_escabelo"))
        .args(["log", "--data-dir", d, "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |rx: &mpsc::Receiver<String>| -> serde_json::Value {
        let line = rx
            .recv_timeout(common::TIMEOUT)
            .expect("a line from log --follow");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    let first = next(&rx);
    assert_eq!(
        (first["seq"].as_u64(), first["key"].as_str()),
        (Some(1), Some("a"))
    );
    c.roundtrip(b"write b|22\r", b"success\r");
    c.roundtrip(b"delete a\r", b"success\r");
    let second = next(&rx);
    assert_eq!(second["key"], "b", "{second}");
    assert_eq!(second["len"], 2, "{second}");
    let third = next(&rx);
    assert_eq!(
        (third["op"].as_str(), third["key"].as_str()),
        (Some("delete"), Some("a"))
    );
    assert_eq!(third["seq"], 3, "{third}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn log_tables_lists_flushed_writes_first() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // A small memtable: the first writes are flushed to a level-0 table.
    let mut srv = Server::start_in(&data, &["--memtable-size", "65536"]);
    let mut c = srv.client();
    let big = "x".repeat(500);
    for i in 0..200 {
        c.roundtrip(format!("write f:{i:04}|{big}\r").as_bytes(), b"success\r");
    }
    // Wait (bounded) until the flush is done: a memtable frozen but not yet
    // flushed at shutdown stays in the log.
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while common::metric(&c.status(), "flushes") == 0 {
        assert!(std::time::Instant::now() < deadline, "no flush happened");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    c.roundtrip(b"write last|1\r", b"success\r");
    drop(c);
    assert!(srv.stop().success());
    let d = data.to_str().unwrap();

    let (ok, plain, err) = escabelo(&["log", "--data-dir", d]);
    assert!(ok, "{plain}{err}");
    assert!(!plain.contains("table="), "{plain}");
    let (ok, out, err) = escabelo(&["log", "--data-dir", d, "--tables"]);
    assert!(ok, "{out}{err}");
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("table="), "{out}");
    assert!(first.contains(" level=0 op=write key=f:"), "{first}");
    // The tables come before the log, and the log part is unchanged.
    let log_part: Vec<&str> = out
        .lines()
        .skip_while(|l| l.starts_with("table="))
        .collect();
    assert_eq!(log_part, plain.lines().collect::<Vec<_>>());
    assert!(plain.contains(" op=write key=last len=1"), "{plain}");
}
