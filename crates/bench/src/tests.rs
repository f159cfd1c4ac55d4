//! End-to-end tests against a tiny text-protocol server on 127.0.0.1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::run;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Flip one byte in the middle of every value read.
    Corrupt,
    /// Answer every read with not-found.
    Forget,
    /// Read requests and never answer.
    Silent,
}

/// Serves `write k|v` and `read k` from a HashMap; returns its address.
async fn tiny_server(fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let map: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let map = map.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if fault == Fault::Silent {
                        continue;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let mut out = Vec::new();
                    while let Some(end) = buf.iter().position(|&b| b == b'\r') {
                        let cmd: Vec<u8> = buf.drain(..=end).take(end).collect();
                        if let Some(rest) = cmd.strip_prefix(b"write ") {
                            let bar = rest.iter().position(|&b| b == b'|').unwrap();
                            map.lock()
                                .unwrap()
                                .insert(rest[..bar].to_vec(), rest[bar + 1..].to_vec());
                            out.extend_from_slice(b"success\r");
                        } else if let Some(key) = cmd.strip_prefix(b"read ") {
                            let v = map.lock().unwrap().get(key).cloned();
                            match v {
                                Some(mut v) if fault != Fault::Forget => {
                                    if fault == Fault::Corrupt {
                                        let mid = v.len() / 2;
                                        v[mid] = if v[mid] == b'x' { b'y' } else { b'x' };
                                    }
                                    out.extend_from_slice(&v);
                                    out.push(b'\r');
                                }
                                _ => out.extend_from_slice(b"error\r"),
                            }
                        } else {
                            out.extend_from_slice(b"error: unknown command\r");
                        }
                    }
                    if sock.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn config(addr: &str, extra: &[&str]) -> Config {
    let mut args = vec![
        "escabelo-bench",
        "--addr",
        addr,
        "--concurrency",
        "4",
        "--quiet",
    ];
    if !extra.contains(&"--duration") {
        args.extend_from_slice(&["--duration", "700ms"]);
    }
    if !extra.contains(&"--key-count") {
        args.extend_from_slice(&["--key-count", "300"]);
    }
    args.extend_from_slice(extra);
    Config::parse_from(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_has_no_errors() {
    let addr = tiny_server(Fault::None).await;
    let r = run::run(config(&addr, &["--preload", "--pipeline", "8"])).await;
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert_eq!(r.preload_writes, 300);
    assert!(r.read.count > 0 && r.write.count > 0);
    assert_eq!(r.read.misses, 0);
    assert_eq!(r.live_keys, 300);
    assert!(r.live_bytes > 300 * 12);
    assert!(r.read.bytes > 0);
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["total"]["count"], r.total.count);
    assert!(json["write"]["latency_us"]["p95"].is_u64());
    assert!(r.to_table().contains("total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_without_preload_are_not_errors() {
    let addr = tiny_server(Fault::None).await;
    let r = run::run(config(&addr, &["--key-count", "100000"])).await;
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert!(r.read.misses > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_values_are_errors() {
    let addr = tiny_server(Fault::Corrupt).await;
    let r = run::run(config(&addr, &["--preload"])).await;
    assert!(r.read.errors > 0);
    assert!(r.errors > 0);
    assert!(r.error_samples.iter().any(|e| e.contains("corrupted")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_preloaded_keys_are_errors() {
    let addr = tiny_server(Fault::Forget).await;
    let r = run::run(config(&addr, &["--preload"])).await;
    assert!(r.read.errors > 0);
    assert_eq!(r.read.misses, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_per_batch() {
    let addr = tiny_server(Fault::Silent).await;
    let started = std::time::Instant::now();
    let r = run::run(config(
        &addr,
        &[
            "--duration",
            "300ms",
            "--timeout",
            "200ms",
            "--pipeline",
            "4",
        ],
    ))
    .await;
    assert!(r.errors > 0);
    assert_eq!(r.read.count + r.write.count, 0);
    assert!(
        r.error_samples.iter().any(|e| e.contains("timed out")),
        "{:?}",
        r.error_samples
    );
    // One timeout per batch: the run ends soon after its duration.
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let r = run::run(config(&addr, &["--duration", "300ms"])).await;
    assert!(r.connect_errors > 0);
    assert!(r.errors >= r.connect_errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_value_size_is_what_is_written() {
    let addr = tiny_server(Fault::None).await;
    let r = run::run(config(&addr, &["--preload", "--value-size", "1000"])).await;
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert!(r.write.count > 0 && r.read.count > 0);
    assert_eq!(r.write.bytes, r.write.count * 1000);
    assert_eq!(r.read.bytes, r.read.count * 1000);
    assert_eq!(r.live_bytes, 300 * (1000 + 12));
}

/// The bench's default runtime: every connection on one thread.
#[tokio::test(flavor = "current_thread")]
async fn clean_run_on_one_thread() {
    let addr = tiny_server(Fault::None).await;
    let r = run::run(config(&addr, &["--preload", "--protocol", "text"])).await;
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert!(r.read.count > 0 && r.write.count > 0);
    assert_eq!(r.read.misses, 0);
}
