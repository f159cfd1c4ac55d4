//! Pipelining, split requests, many clients, limits, garbage and
//! disconnects, against the real binary.

mod common;

use common::{metric, Client, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn hundreds_of_pipelined_requests_in_one_write() {
    let srv = Server::start(&[]);
    let mut c = srv.client();
    let n = 500;
    let mut req = Vec::new();
    let mut expected = Vec::new();
    for i in 0..n {
        req.extend_from_slice(format!("write pk:{i:04}|value-{i}\r").as_bytes());
        expected.extend_from_slice(b"success\r");
        req.extend_from_slice(format!("read pk:{i:04}\r").as_bytes());
        expected.extend_from_slice(format!("value-{i}\r").as_bytes());
        req.extend_from_slice(b"read pk:none\r");
        expected.extend_from_slice(b"error\r");
    }
    c.roundtrip(&req, &expected);
    let m = c.status();
    assert_eq!(metric(&m, "writes"), n);
    assert_eq!(metric(&m, "reads"), 2 * n);
    let keys = c.request(b"keys\r", n as usize);
    assert!(keys.starts_with(b"pk:0000\rpk:0001\r"));
}

#[test]
fn request_sent_one_byte_at_a_time() {
    let srv = Server::start(&[]);
    let mut c = srv.client();
    let req = b"write  slow:key|slow value |x\r\nread slow:key\rkeys\r";
    for b in req {
        c.send(&[*b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    c.expect(b"success\rslow value |x\rslow:key\r");
}

#[test]
fn two_hundred_concurrent_clients() {
    let srv = Server::start(&[]);
    let port = srv.port;
    let threads: Vec<_> = (0..200)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                for i in 0..20 {
                    let key = format!("c{t}:k{i}");
                    c.roundtrip(format!("write {key}|{t}-{i}\r").as_bytes(), b"success\r");
                    c.roundtrip(
                        format!("read {key}\r").as_bytes(),
                        format!("{t}-{i}\r").as_bytes(),
                    );
                }
                c.roundtrip(format!("delete c{t}:k0\r").as_bytes(), b"success\r");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = srv.client();
    let m = c.status();
    assert_eq!(metric(&m, "writes"), 200 * 20);
    assert_eq!(metric(&m, "reads"), 200 * 20);
    assert_eq!(metric(&m, "deletes"), 200);
    c.request(b"keys\r", 200 * 19);
}

#[test]
fn over_limit_key_gets_an_error_and_connection_still_works() {
    let srv = Server::start(&[]);
    let mut c = srv.client();
    c.send(b"write ");
    let chunk = vec![b'k'; 64 * 1024];
    // Cross the 100 KiB limit; the error comes before the request ends.
    c.send(&chunk);
    c.send(&chunk);
    c.expect(b"error: key too long (max 102400 bytes)\r");
    // The rest of the request is discarded up to its \r.
    for _ in 0..16 {
        c.send(&chunk);
    }
    c.send(b"|value\r");
    c.roundtrip(b"write ok|1\rread ok\r", b"success\r1\r");
    // Same for read.
    let mut req = b"read ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 100 * 1024 + 1));
    req.extend_from_slice(b"\rread ok\r");
    c.roundtrip(&req, b"error: key too long (max 102400 bytes)\r1\r");
}

#[test]
fn over_limit_value_gets_an_error_and_connection_still_works() {
    let srv = Server::start(&["--max-value-size", "1MiB"]);
    let mut c = srv.client();
    c.send(b"write big|");
    let chunk = vec![b'v'; 256 * 1024];
    for _ in 0..5 {
        c.send(&chunk);
    }
    // Answered as soon as the limit is crossed, before the \r.
    c.expect(b"error: value too long (max 1048576 bytes)\r");
    // Much more than the limit is discarded, not buffered.
    for _ in 0..40 {
        c.send(&chunk);
    }
    c.send(b"\rread big\rwrite big|small\rread big\r");
    c.expect(b"error\rsuccess\rsmall\r");
    // A value exactly at the limit is accepted.
    let mut req = b"write edge|".to_vec();
    req.extend(std::iter::repeat_n(b'e', 1024 * 1024));
    req.push(b'\r');
    c.roundtrip(&req, b"success\r");
}

#[test]
fn garbage_and_mid_request_disconnects_do_not_disturb_others() {
    let srv = Server::start(&[]);
    let mut good = srv.client();
    good.roundtrip(b"write g|1\r", b"success\r");
    for round in 0..20u32 {
        // Random-looking garbage, then hang up.
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(round) >> 7) as u8)
            .collect();
        let _ = s.write_all(&garbage);
        drop(s);
        // Hang up in the middle of a large write and of a read.
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        let _ = s.write_all(b"write half|");
        let _ = s.write_all(&[b'x'; 10000]);
        drop(s);
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        let _ = s.write_all(b"read g");
        drop(s);
        // Send requests and leave without reading the replies.
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        let _ = s.write_all(&b"read g\r".repeat(1000));
        drop(s);
        good.roundtrip(b"read g\r", b"1\r");
    }
    good.roundtrip(b"read half\r", b"error\r");
    // Garbage on a connection gets errors, not a crash, and the connection
    // keeps working.
    let mut c = srv.client();
    c.send(b"\x00\xff\x01 zz\r");
    let r = c.read_crs(1);
    assert!(r.starts_with(b"error: unknown command: "), "{r:?}");
    c.roundtrip(b"read g\r", b"1\r");
}

#[test]
fn client_that_never_reads_is_bounded_and_others_proceed() {
    let srv = Server::start(&[]);
    let mut c = srv.client();
    let value = vec![b'v'; 64 * 1024];
    let mut req = b"write big|".to_vec();
    req.extend_from_slice(&value);
    req.push(b'\r');
    c.roundtrip(&req, b"success\r");
    // A writer that never reads: the server stops reading from it once its
    // unsent replies pile up, so our writes eventually block (time out).
    let mut hog = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let batch = b"read big\r".repeat(1000);
    let mut sent = 0usize;
    for _ in 0..10_000 {
        match hog.write_all(&batch) {
            Ok(()) => sent += batch.len(),
            Err(_) => break,
        }
    }
    // 10 000 batches would be 90 MB of requests asking for 640 GB of
    // replies: the hog must have been throttled long before.
    assert!(sent < 9_000 * 10_000, "server kept reading: {sent} bytes");
    c.roundtrip(b"write other|1\rread other\r", b"success\r1\r");
    drop(hog);
}

#[test]
fn max_connections_refuses_cleanly() {
    let srv = Server::start(&["--max-connections", "3"]);
    // Wait until the start-up probe connection is gone.
    let mut first = srv.client();
    for _ in 0..200 {
        if metric(&first.status(), "connections") == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut held: Vec<Client> = vec![first, srv.client(), srv.client()];
    for c in held.iter_mut() {
        c.roundtrip(b"write x|1\r", b"success\r");
    }
    let mut extra = srv.client();
    let mut buf = Vec::new();
    let _ = extra.stream.read_to_end(&mut buf);
    assert_eq!(buf, b"error: too many connections\r");
    // Existing clients are unaffected; a freed slot can be reused.
    held[0].roundtrip(b"read x\r", b"1\r");
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = srv.client();
        c.send(b"read x\r");
        let mut got = [0u8; 2];
        if c.stream.read_exact(&mut got).is_ok() && &got == b"1\r" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = held[0].status();
    assert!(metric(&m, "connections_refused") >= 1);
}

#[test]
fn a_thousand_connections_at_once() {
    let srv = Server::start(&[]);
    let mut clients: Vec<Client> = (0..1000).map(|_| srv.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("write t:{i}|{i}\rread t:{i}\r").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect(format!("success\r{i}\r").as_bytes());
    }
    let m = clients[0].status();
    assert_eq!(metric(&m, "connections"), 1000);
    assert_eq!(metric(&m, "writes"), 1000);
}
