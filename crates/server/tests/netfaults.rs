//! Network faults against the real binary: clients that vanish mid-request,
//! half-open connections, clients that pipeline a huge stream and never
//! read, thousands of connect/disconnect cycles. Throughout, a well-behaved
//! client keeps writing and reading with correct replies; at the end every
//! acknowledged write is readable, `status` works, the server's memory
//! stayed bounded, and no connection leaked.

mod common;
#[path = "torture/conn.rs"]
#[allow(dead_code)]
mod conn;

use common::Server;
use conn::{metric, Conn};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);
/// The server's resident memory must stay under this.
const RSS_LIMIT_KB: u64 = 300 * 1024;

/// The resident set size of a process, in KiB, from /proc/<pid>/status.
fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Closes with a reset (RST) instead of a FIN.
fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// A value of `len` bytes for the well-behaved client, from `n`.
fn good_value(n: u64, len: usize) -> Vec<u8> {
    let mut v = format!("good-{n}-").into_bytes();
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b"abcdefghijklmnopqrstuvwxyz0123456789 |"[(x % 38) as usize]);
    }
    v
}

/// The well-behaved client: writes, reads back, deletes now and then,
/// checks every reply, until `stop`. Returns its model of the data and
/// the number of requests served, or the first wrong reply.
fn good_client(
    port: u16,
    stop: &AtomicBool,
    ops: &AtomicU64,
    max_latency: &Mutex<Duration>,
) -> Result<BTreeMap<String, Option<Vec<u8>>>, String> {
    let mut c = Conn::connect(port, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    let mut model: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("good:{}", n % 300);
        let t = Instant::now();
        let (req, expect): (Vec<u8>, Vec<u8>) = if n.is_multiple_of(17) {
            let existed = matches!(model.get(&key), Some(Some(_)));
            model.insert(key.clone(), None);
            let r: &[u8] = if existed { b"success" } else { b"error" };
            (format!("delete {key}\r").into_bytes(), r.to_vec())
        } else if n.is_multiple_of(3) {
            let r = match model.get(&key) {
                Some(Some(v)) => v.clone(),
                _ => b"error".to_vec(),
            };
            (format!("read {key}\r").into_bytes(), r)
        } else if n % 50 == 1 {
            (b"status\r".to_vec(), Vec::new())
        } else {
            let v = good_value(n, 1 + (n as usize * 7919) % 3000);
            let mut req = format!("write {key}|").into_bytes();
            req.extend_from_slice(&v);
            req.push(b'\r');
            model.insert(key.clone(), Some(v));
            (req, b"success".to_vec())
        };
        c.send(&req)
            .map_err(|e| format!("request {n}: send: {e}"))?;
        let r = c.reply().map_err(|e| format!("request {n}: reply: {e}"))?;
        if req == b"status\r" {
            if !r.starts_with(conn::STATUS_HEADER) {
                return Err(format!("status got {:?}", String::from_utf8_lossy(&r)));
            }
        } else if r != expect {
            return Err(format!(
                "{:?} got {:?}, expected {:?}",
                String::from_utf8_lossy(&req[..req.len().min(40)]),
                String::from_utf8_lossy(&r[..r.len().min(60)]),
                String::from_utf8_lossy(&expect[..expect.len().min(60)])
            ));
        }
        let took = t.elapsed();
        let mut m = max_latency.lock().unwrap();
        *m = (*m).max(took);
        drop(m);
        ops.fetch_add(1, Ordering::Relaxed);
    }
    Ok(model)
}

/// Sends `unit` over and over without ever reading, until the server stops
/// taking more (the write times out), `max_bytes` went out, or `max_time`
/// passed. Returns the stream (still open) and the bytes sent.
fn hog(port: u16, unit: &[u8], max_bytes: usize, max_time: Duration) -> (TcpStream, usize) {
    let mut s = connect(port);
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let chunk = unit.repeat((64 * 1024 / unit.len()).max(1));
    let start = Instant::now();
    let mut sent = 0;
    while sent < max_bytes && start.elapsed() < max_time {
        match s.write(&chunk) {
            Ok(k) => sent += k,
            Err(_) => break,
        }
    }
    (s, sent)
}

#[test]
fn network_faults_do_not_disturb_other_clients() {
    let start = Instant::now();
    let srv = Server::start(&[]);
    let port = srv.port;
    let pid = srv.child.id();

    // A 100 KiB value for the reading hog.
    let mut setup = Conn::connect(port, TIMEOUT).unwrap();
    let mut req = b"write big|".to_vec();
    req.extend(std::iter::repeat_n(b'B', 100 * 1024));
    req.push(b'\r');
    setup.send(&req).unwrap();
    assert_eq!(setup.reply().unwrap(), b"success");

    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let max_latency = Mutex::new(Duration::ZERO);
    let max_rss = AtomicU64::new(0);

    thread::scope(|s| {
        let good = s.spawn(|| good_client(port, &stop, &ops, &max_latency));
        let sampler = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    max_rss.fetch_max(kb, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });

        // 1. Half-open connections: 300 that send nothing, 100 that send
        //    half a write; all kept open while the rest goes on.
        let mut idle: Vec<TcpStream> = (0..300).map(|_| connect(port)).collect();
        let mut halves: Vec<TcpStream> = (0..100)
            .map(|i| {
                let mut c = connect(port);
                c.write_all(format!("write half:{i}|first half ").as_bytes())
                    .unwrap();
                c
            })
            .collect();
        println!(
            "netfaults: {} half-open connections",
            idle.len() + halves.len()
        );

        // 2. Clients that vanish mid-request, half with a FIN, half with a
        //    reset.
        let mut vanished = 0;
        for i in 0..600u32 {
            let mut c = connect(port);
            let r = match i % 4 {
                0 => c.write_all(format!("write van:{i}|never finished").as_bytes()),
                1 => {
                    let mut r = format!("write van:{i}|").into_bytes();
                    r.extend(std::iter::repeat_n(b'v', 50 * 1024));
                    c.write_all(&r)
                }
                2 => c.write_all(format!("read van:{i}").as_bytes()),
                _ => c.write_all(b"wri"),
            };
            r.unwrap();
            if i % 2 == 0 {
                drop(c);
            } else {
                reset(c);
            }
            vanished += 1;
        }
        println!("netfaults: {vanished} clients vanished mid-request");

        // 3. Clients that pipeline a huge stream and never read: one asks
        //    for 100 KiB values, one writes.
        let (read_hog, read_sent) = hog(port, b"read big\r", 256 << 20, Duration::from_secs(6));
        let rss_after_read_hog = rss_kb(pid).unwrap_or(0);
        let mut wunit = b"write hog:1|".to_vec();
        wunit.extend(std::iter::repeat_n(b'h', 4000));
        wunit.push(b'\r');
        let (write_hog, write_sent) = hog(port, &wunit, 256 << 20, Duration::from_secs(4));
        println!(
            "netfaults: reading hog sent {} KiB of `read big` (asking for {} MiB), \
             writing hog sent {} KiB; server RSS {} KiB",
            read_sent / 1024,
            read_sent / 9 * 100 / 1024,
            write_sent / 1024,
            rss_after_read_hog
        );

        // 4. Connect/disconnect cycles, in two threads.
        let cycles = AtomicU64::new(0);
        thread::scope(|s2| {
            for t in 0..2u64 {
                let cycles = &cycles;
                s2.spawn(move || {
                    for i in 0..1100u64 {
                        let mut c = connect(port);
                        match (i + t) % 4 {
                            0 => drop(c),
                            1 => reset(c),
                            2 => {
                                c.write_all(b"status\r").unwrap();
                                let mut b = [0u8; 64];
                                let k = c.read(&mut b).unwrap();
                                assert!(b[..k].starts_with(b"well going"));
                            }
                            _ => {
                                // Ask, then leave without reading.
                                c.write_all(b"read big\r").unwrap();
                                reset(c);
                            }
                        }
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        println!(
            "netfaults: {} connect/disconnect cycles",
            cycles.load(Ordering::Relaxed)
        );

        // Half-open clients are still served: finish the half writes.
        for (i, c) in halves.iter_mut().enumerate() {
            c.write_all(b"second half\r").unwrap();
            let mut b = [0u8; 8];
            c.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"success\r", "half:{i}");
        }
        for c in idle.iter_mut().step_by(50) {
            c.write_all(b"read half:7\r").unwrap();
            let want = b"first half second half\r";
            let mut b = vec![0u8; want.len()];
            c.read_exact(&mut b).unwrap();
            assert_eq!(&b[..], &want[..]);
        }

        // Let the well-behaved client run a little longer, then stop it.
        thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        let model = good
            .join()
            .unwrap()
            .expect("the well-behaved client failed");
        let served = ops.load(Ordering::Relaxed);
        let lat = *max_latency.lock().unwrap();
        println!("netfaults: well-behaved client: {served} requests, max latency {lat:?}");
        assert!(
            served > 1000,
            "the well-behaved client was starved: {served} requests"
        );

        // Every acknowledged write is readable, deletes stayed deleted.
        let mut c = Conn::connect(port, TIMEOUT).unwrap();
        for (k, v) in &model {
            c.send(format!("read {k}\r").as_bytes()).unwrap();
            let r = c.reply().unwrap();
            match v {
                Some(v) => assert_eq!(&r, v, "{k}"),
                None => assert_eq!(r, b"error", "{k}"),
            }
        }
        // Vanished requests were never executed.
        for i in (0..600).step_by(4) {
            c.send(format!("read van:{i}\rread van:{}\r", i + 1).as_bytes())
                .unwrap();
            assert_eq!(c.reply().unwrap(), b"error", "van:{i}");
            assert_eq!(c.reply().unwrap(), b"error", "van:{}", i + 1);
        }
        // The writing hog's writes all landed on one key, intact.
        if write_sent >= wunit.len() {
            c.send(b"read hog:1\r").unwrap();
            assert_eq!(c.reply().unwrap(), wunit[12..wunit.len() - 1].to_vec());
        }

        // Close everything; the server must notice and free the
        // connections.
        drop(idle);
        drop(halves);
        drop(read_hog);
        drop(write_hog);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut open;
        loop {
            open = metric(&c.status().unwrap(), "connections");
            if open <= 2 || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let m = c.status().unwrap();
        println!(
            "netfaults: after closing: connections={} connections_total={} bad_requests={}",
            metric(&m, "connections"),
            metric(&m, "connections_total"),
            metric(&m, "bad_requests")
        );
        assert!(
            open <= 2,
            "{open} connections still open after all clients left"
        );
    });

    let peak = max_rss.load(Ordering::Relaxed);
    let now = rss_kb(pid).unwrap_or(0);
    println!(
        "netfaults: server RSS peak {} MiB, now {} MiB; {:.1}s",
        peak / 1024,
        now / 1024,
        start.elapsed().as_secs_f64()
    );
    assert!(peak < RSS_LIMIT_KB, "server RSS reached {peak} KiB");
}
