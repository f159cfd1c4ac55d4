//! Criterion benchmarks of the request parsers and reply encoders, the
//! per-request work of the connection loop that is not the engine's:
//!
//! - `parse_text`: a pipelined burst of text-protocol requests (`write` with
//!   challenge-sized values, `read`), parsed from one input buffer;
//! - `parse_resp`: the same burst as RESP `SET`/`GET` arrays;
//! - `encode`: a value reply in the text protocol and in RESP2.
//!
//! `cargo bench -p escabelo --bench protocol`; the whole run takes well
//! under a minute.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use escabelo::protocol::resp::{self, Parsed};
use escabelo::protocol::text;
use escabelo::protocol::Wire;
use escabelo::reply::Reply;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Requests in one burst.
const BURST: usize = 256;
/// Largest value accepted by the parsers here.
const VALUE_MAX: usize = 1 << 20;

/// A value length drawn from the challenge's size mix.
fn value_len(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..100) {
        0..=69 => rng.gen_range(1..=1024),
        70..=89 => rng.gen_range(1025..=10 * 1024),
        _ => rng.gen_range(10 * 1024 + 1..=100 * 1024),
    }
}

/// One burst: (key, Some(value)) for a write, (key, None) for a read;
/// 20% writes, as in the challenge's 80% read mix.
fn burst() -> Vec<(String, Option<Vec<u8>>)> {
    let mut rng = SmallRng::seed_from_u64(42);
    (0..BURST)
        .map(|i| {
            let key = format!("bench:{:06}", rng.gen_range(0..10_000));
            if i % 5 == 0 {
                let v = (0..value_len(&mut rng))
                    .map(|j| b'a' + (j % 26) as u8)
                    .collect();
                (key, Some(v))
            } else {
                (key, None)
            }
        })
        .collect()
}

fn text_bytes(reqs: &[(String, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in reqs {
        match v {
            Some(v) => {
                out.extend_from_slice(b"write ");
                out.extend_from_slice(k.as_bytes());
                out.push(b'|');
                out.extend_from_slice(v);
            }
            None => {
                out.extend_from_slice(b"read ");
                out.extend_from_slice(k.as_bytes());
            }
        }
        out.push(b'\r');
    }
    out
}

fn resp_bytes(reqs: &[(String, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let bulk = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    };
    for (k, v) in reqs {
        match v {
            Some(v) => {
                out.extend_from_slice(b"*3\r\n");
                bulk(&mut out, b"SET");
                bulk(&mut out, k.as_bytes());
                bulk(&mut out, v);
            }
            None => {
                out.extend_from_slice(b"*2\r\n");
                bulk(&mut out, b"GET");
                bulk(&mut out, k.as_bytes());
            }
        }
    }
    out
}

fn bench_parse(c: &mut Criterion) {
    let reqs = burst();
    let text = text_bytes(&reqs);
    let resp = resp_bytes(&reqs);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("text", |b| {
        b.iter(|| {
            let mut p = text::Parser::new(VALUE_MAX);
            let mut buf = BytesMut::from(&text[..]);
            let mut n = 0;
            while p.next(&mut buf).is_some() {
                n += 1;
            }
            assert_eq!(n, BURST);
        })
    });
    g.bench_function("resp", |b| {
        b.iter(|| {
            let mut p = resp::Parser::new(resp::Limits::for_values(VALUE_MAX));
            let mut buf = BytesMut::from(&resp[..]);
            let mut n = 0;
            while let Some(parsed) = p.next(&mut buf) {
                assert!(matches!(parsed, Parsed::Command(_)));
                n += 1;
            }
            assert_eq!(n, BURST);
        })
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for len in [100usize, 4096, 65536] {
        let value = Bytes::from(vec![b'x'; len]);
        let reply = Reply::Bulk(value);
        g.throughput(Throughput::Bytes(len as u64));
        for (name, wire) in [
            ("text", Wire::Text),
            ("resp2", Wire::Resp(resp::Version::Resp2)),
        ] {
            g.bench_function(format!("{name}/{len}"), |b| {
                let mut out = BytesMut::with_capacity(2 * len);
                b.iter(|| {
                    out.clear();
                    wire.encode(&mut out, &reply);
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_parse, bench_encode
}
criterion_main!(benches);
