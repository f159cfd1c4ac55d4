//! Races seen through the socket, against the real server binary:
//!
//! - `pipelined_bursts_apply_in_order`: many connections each pipeline
//!   bursts like `write k|1 .. write k|12 read k write j|x delete j read j`
//!   on keys of their own, with values of 5 B to 20 KiB and a small
//!   memtable; every reply and the final state are checked. Before the
//!   commit-order fix a few reads in nearly every run returned an older
//!   value, and deletes answered `error`.
//! - `scans_never_fail_while_blob_gc_runs`: writers overwrite values of
//!   100 B to 90 KiB while readers run `reads <prefix>`; no reply may be an
//!   error or hold a value that was never written.
//!
//! `ESCABELO_RACE_SECS` lengthens the scan test (default 5 s) and
//! `ESCABELO_RACE_BURSTS` the bursts per connection (default 300; before
//! the fix, 60 rarely showed the bug and 300 did).

mod common;

use common::{lossy, Client, Server};
use rand::{Rng, SeedableRng};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A value naming its key and write, `len` bytes of the text protocol's
/// value alphabet (no `\r`).
fn value(key: &str, id: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{key}#{id}#").into_bytes();
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

/// True if `v` is a value `value` produced for `key`.
fn well_formed(key: &str, v: &[u8]) -> bool {
    let prefix = format!("{key}#");
    let Some(rest) = v.strip_prefix(prefix.as_bytes()) else {
        return false;
    };
    let Some(end) = rest.iter().position(|&b| b == b'#') else {
        return false;
    };
    match std::str::from_utf8(&rest[..end]).map(|s| s.parse::<u64>()) {
        Ok(Ok(id)) => value(key, id, v.len()) == v,
        _ => false,
    }
}

fn random_len(rng: &mut impl Rng, max: usize) -> usize {
    match rng.gen_range(0..4) {
        0 => rng.gen_range(5..100),
        1 => rng.gen_range(100..1024),
        2 => rng.gen_range(1024..8192),
        _ => rng.gen_range(8192..max),
    }
}

/// What a key must hold at the end (`None`: absent).
type Final = Vec<(String, Option<Vec<u8>>)>;

/// Splits a reply holding `n` `\r`-terminated items.
fn items(reply: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = reply.split(|&b| b == b'\r').collect();
    v.pop();
    v
}

#[test]
fn pipelined_bursts_apply_in_order() {
    let server = Server::start(&["--memtable-size", "2097152"]);
    let port = server.port;
    let conns = 48;
    let bursts = env_or("ESCABELO_RACE_BURSTS", 300) as usize;
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            std::thread::spawn(move || -> Result<Final, String> {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(c as u64 + 1);
                let mut client = Client::connect(port);
                let mut last = Vec::new();
                for b in 0..bursts {
                    let k = format!("c{c}:k{}", b % 4);
                    let j = format!("c{c}:j{}", b % 3);
                    let mut req = Vec::new();
                    let mut v = Vec::new();
                    for i in 0..12 {
                        v = value(&k, (b * 100 + i) as u64, random_len(&mut rng, 20 * 1024));
                        req.extend_from_slice(format!("write {k}|").as_bytes());
                        req.extend_from_slice(&v);
                        req.push(b'\r');
                    }
                    req.extend_from_slice(format!("read {k}\r").as_bytes());
                    let jv = value(&j, b as u64, random_len(&mut rng, 20 * 1024));
                    req.extend_from_slice(format!("write {j}|").as_bytes());
                    req.extend_from_slice(&jv);
                    req.extend_from_slice(format!("\rdelete {j}\rread {j}\r").as_bytes());
                    let reply = client.request(&req, 16);
                    let got = items(&reply);
                    let mut want: Vec<&[u8]> = vec![b"success"; 12];
                    want.push(&v);
                    want.extend_from_slice(&[b"success", b"success", b"error"]);
                    if got != want {
                        let at = got.iter().zip(&want).position(|(g, w)| g != w).unwrap_or(0);
                        let short = |b: &[u8]| lossy(&b[..b.len().min(40)]);
                        return Err(format!(
                            "connection {c} burst {b}: reply {at} is {:?}, expected {:?}",
                            short(got.get(at).copied().unwrap_or(b"")),
                            short(want[at])
                        ));
                    }
                    if b + 4 >= bursts {
                        last.retain(|(key, _): &(String, Option<Vec<u8>>)| key != &k && key != &j);
                        last.push((k, Some(v)));
                        last.push((j, None));
                    }
                }
                Ok(last)
            })
        })
        .collect();
    let mut finals = Vec::new();
    for h in handles {
        finals.extend(h.join().unwrap().unwrap_or_else(|e| panic!("{e}")));
    }
    // The final state, read on a fresh connection.
    let mut client = Client::connect(port);
    for (key, want) in &finals {
        let reply = client.request(format!("read {key}\r").as_bytes(), 1);
        let got = items(&reply)[0];
        match want {
            Some(v) => assert!(got == &v[..], "{key} ends with an older value"),
            None => assert_eq!(got, b"error", "{key} present after its delete"),
        }
    }
}

/// Reads a `reads` reply of `n` values, or an error reply.
fn read_list(client: &mut Client, n: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut seen = 0;
    let mut buf = [0u8; 65536];
    while seen < n {
        let k = client.stream.read(&mut buf).map_err(|e| {
            format!(
                "read: {e} after {seen} of {n} values ({} bytes; last bytes: {}; {})",
                out.len(),
                lossy(&out[out.len().saturating_sub(60)..]),
                which_arrived(&out)
            )
        })?;
        if k == 0 {
            return Err("server closed the connection".into());
        }
        seen += buf[..k].iter().filter(|&&b| b == b'\r').count();
        out.extend_from_slice(&buf[..k]);
        // An error ends a list at any point (values here never start
        // with "error").
        let error_at = if out.starts_with(b"error") {
            Some(0)
        } else {
            out.windows(6).position(|w| w == b"\rerror").map(|i| i + 1)
        };
        if let Some(at) = error_at {
            if out[at..].contains(&b'\r') {
                return Err(format!(
                    "error reply after {} values: {}; {}",
                    out[..at].iter().filter(|&&b| b == b'\r').count(),
                    lossy(&out[at..out.len().min(at + 160)]),
                    which_arrived(&out[..at])
                ));
            }
        }
    }
    Ok(out)
}

/// Names the keys whose values (`<key>#<id>#...`) a partial scan reply
/// holds, as ranges, so a missing key and a stalled reply can be told apart.
fn which_arrived(out: &[u8]) -> String {
    let mut ranges: Vec<(String, String)> = Vec::new();
    for item in out.split(|&b| b == b'\r') {
        let Some(end) = item.iter().position(|&b| b == b'#') else {
            continue;
        };
        let name = lossy(&item[..end]);
        match ranges.last_mut() {
            Some((_, last)) if next_name(last) == name => *last = name,
            _ => ranges.push((name.clone(), name)),
        }
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.clone()
            } else {
                format!("{a}..{b}")
            }
        })
        .collect();
    format!("keys that arrived: {}", parts.join(", "))
}

/// `scan:007` -> `scan:008`.
fn next_name(name: &str) -> String {
    match name
        .rsplit_once(':')
        .and_then(|(p, n)| Some((p, n.parse::<usize>().ok()?)))
    {
        Some((p, n)) => format!("{p}:{:03}", n + 1),
        None => String::new(),
    }
}

#[test]
fn scans_never_fail_while_blob_gc_runs() {
    // A low collection threshold: blob files are rewritten all the time.
    let server = Server::start(&["--memtable-size", "1048576", "--blob-gc-threshold", "0.1"]);
    let port = server.port;
    let keys = 300usize;
    let key = |i: usize| format!("scan:{i:03}");
    {
        let mut c = Client::connect(port);
        for i in 0..keys {
            let mut req = format!("write {}|", key(i)).into_bytes();
            req.extend_from_slice(&value(&key(i), 0, 200));
            req.push(b'\r');
            c.roundtrip(&req, b"success\r");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(w + 7);
                let mut c = Client::connect(port);
                let mut id = (w + 1) * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.gen_range(0..keys);
                    id += 1;
                    let len = match rng.gen_range(0..3) {
                        0 => rng.gen_range(100..1024),
                        1 => rng.gen_range(1024..10_000),
                        _ => rng.gen_range(10_000..90_000),
                    };
                    let mut req = format!("write {}|", key(i)).into_bytes();
                    req.extend_from_slice(&value(&key(i), id, len));
                    req.push(b'\r');
                    c.roundtrip(&req, b"success\r");
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<u64, String> {
                let mut c = Client::connect(port);
                let mut scans = 0;
                while !stop.load(Ordering::Relaxed) {
                    c.send(b"reads scan:\r");
                    let reply = read_list(&mut c, keys)?;
                    let got = items(&reply);
                    if got.len() != keys {
                        return Err(format!("{} values instead of {keys}", got.len()));
                    }
                    for (i, v) in got.iter().enumerate() {
                        if !well_formed(&key(i), v) {
                            return Err(format!(
                                "bad value for {}: {}",
                                key(i),
                                lossy(&v[..v.len().min(40)])
                            ));
                        }
                    }
                    scans += 1;
                }
                Ok(scans)
            })
        })
        .collect();
    let secs = env_or("ESCABELO_RACE_SECS", 5);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let mut scans = 0;
    for r in readers {
        scans += r.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(scans > 0, "no scan finished");
}
