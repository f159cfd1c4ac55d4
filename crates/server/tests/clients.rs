//! The real Redis clients against the real binary: redis-cli,
//! redis-benchmark, redis-py (RESP3 and RESP2) and ioredis. Each test
//! prints `SKIPPED: <reason>` and returns when its client is not installed;
//! `scripts/test-deps.sh` (run by `.ci/run`) installs them.

mod common;

use common::Server;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `prog` runs.
fn available(prog: &str, arg: &str) -> bool {
    Command::new(prog)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn cli(srv: &Server, args: &[&str]) -> String {
    let port = srv.port.to_string();
    let out = run(Command::new("redis-cli").args(["-p", &port]).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli() {
    if !available("redis-cli", "--version") {
        println!("SKIPPED: redis-cli is not installed (scripts/test-deps.sh installs it)");
        return;
    }
    let srv = Server::start(&[]);
    assert_eq!(cli(&srv, &["PING"]), "PONG\n");
    assert_eq!(cli(&srv, &["SET", "cli:a", "hello world"]), "OK\n");
    assert_eq!(cli(&srv, &["get", "cli:a"]), "hello world\n");
    assert_eq!(cli(&srv, &["GET", "cli:none"]), "\n");
    assert_eq!(cli(&srv, &["MSET", "cli:b", "1", "cli:c", "2"]), "OK\n");
    assert_eq!(cli(&srv, &["MGET", "cli:b", "cli:c"]), "1\n2\n");
    assert_eq!(cli(&srv, &["DBSIZE"]), "3\n");
    assert_eq!(cli(&srv, &["EXISTS", "cli:a", "cli:b", "cli:x"]), "2\n");
    let err = cli(&srv, &["NOSUCH", "x"]);
    assert!(err.contains("ERR unknown command 'NOSUCH'"), "{err}");
    for i in 0..200 {
        cli_quiet(&srv, &format!("cli:s:{i:03}"));
    }
    let scan = cli(&srv, &["--scan", "--pattern", "cli:s:*"]);
    let mut keys: Vec<&str> = scan.lines().collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 200, "{scan}");
    let all = cli(&srv, &["--scan"]);
    assert_eq!(all.lines().count(), 203);
    // RESP3.
    let hello = cli(&srv, &["-3", "HELLO", "3"]);
    assert!(hello.contains("proto") && hello.contains('3'), "{hello}");
    assert_eq!(cli(&srv, &["-3", "GET", "cli:a"]), "hello world\n");
    let info = cli(&srv, &["INFO", "keyspace"]);
    assert!(info.contains("db0:keys=203,expires=0,avg_ttl=0"), "{info}");
    // The text protocol reads what redis-cli wrote.
    let mut c = srv.client();
    c.roundtrip(b"read cli:b\r", b"1\r");
}

fn cli_quiet(srv: &Server, key: &str) {
    assert_eq!(cli(srv, &["SET", key, "v"]), "OK\n");
}

#[test]
fn redis_benchmark() {
    if !available("redis-benchmark", "--version") {
        println!("SKIPPED: redis-benchmark is not installed (scripts/test-deps.sh installs it)");
        return;
    }
    let srv = Server::start(&[]);
    let port = srv.port.to_string();
    let out = run(Command::new("redis-benchmark").args([
        "-p",
        &port,
        "-t",
        "set,get,mset,ping",
        "-n",
        "2000",
        "-c",
        "10",
        "-q",
    ]));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for t in [
        "PING_INLINE:",
        "PING_MBULK:",
        "SET:",
        "GET:",
        "MSET (10 keys):",
    ] {
        let done = text
            .split(['\r', '\n'])
            .any(|l| l.starts_with(t) && l.contains("requests per second"));
        assert!(done, "{t} missing: {text}");
    }
    assert!(!text.to_lowercase().contains("error"), "{text}");
    // With pipelining too.
    let out = run(Command::new("redis-benchmark")
        .args(["-p", &port, "-t", "set,get", "-n", "5000", "-P", "16", "-q"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SET:") && text.contains("GET:"), "{text}");
    assert!(!text.to_lowercase().contains("error"), "{text}");
}

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ESCABELO_TEST_PYTHON") {
        return Some(p.into());
    }
    let venv = workspace_root().join("target/test-deps/venv/bin/python");
    for p in [venv, PathBuf::from("python3")] {
        let ok = Command::new(&p)
            .args(["-c", "import redis"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(p);
        }
    }
    None
}

#[test]
fn redis_py_resp3_and_resp2() {
    let Some(py) = python() else {
        println!("SKIPPED: redis-py is not installed (scripts/test-deps.sh installs it)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/redis_py.py");
    for proto in ["3", "2"] {
        let srv = Server::start(&[]);
        let out = run(Command::new(&py)
            .arg(&script)
            .arg(srv.port.to_string())
            .arg(proto));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
        // What redis-py wrote, read through the text protocol.
        let mut c = srv.client();
        c.roundtrip(b"read py:t1\r", b"a\r");
        c.roundtrip(
            b"read py:c\r",
            b"error: value not representable in the text protocol\r",
        );
    }
}

#[test]
fn ioredis() {
    let modules = workspace_root().join("target/test-deps/node/node_modules");
    if !available("node", "--version") || !modules.join("ioredis").exists() {
        println!("SKIPPED: node or ioredis is not installed (scripts/test-deps.sh installs them)");
        return;
    }
    let srv = Server::start(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ioredis.js");
    let out = run(Command::new("node")
        .arg(&script)
        .arg(srv.port.to_string())
        .env("NODE_PATH", &modules));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
}
