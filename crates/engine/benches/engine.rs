//! Criterion benchmarks of the engine under the challenge workload
//! (`/work/shared/CHALLENGE.md`): values 70% 1 B..1 KiB, 20% 1..10 KiB,
//! 10% 10..100 KiB; 80% of accesses on the hottest 20% of keys.
//!
//! - `put`: acknowledged writes (os durability, default options), one
//!   thread and four threads (group commit), reported both in bytes of
//!   keys and values per second and in writes per second;
//! - `get`: reads over a loaded database with the 80/20 access pattern,
//!   one thread and four threads, in reads per second and bytes per second
//!   (bytes of keys and values returned; values are shared, not copied);
//! - `get_nocache`: the same with the value cache disabled, so every read
//!   decodes from table and blob files (in the operating system's cache).
//!
//! Sample sizes and measurement times are kept small so the whole run
//! takes well under two minutes: `cargo bench -p escabelo-engine`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use escabelo_engine::{Db, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

/// Distinct keys written by the `put` benchmark (overwritten over and over).
const PUT_KEYS: usize = 10_000;
/// Keys loaded before the `get` benchmark.
const GET_KEYS: usize = 10_000;
/// Operations per benchmark iteration.
const BATCH: usize = 500;
/// Random bytes values are sliced from.
const POOL: usize = 256 * 1024;

/// A value length drawn from the challenge's size mix.
fn value_len(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..100) {
        0..=69 => rng.gen_range(1..=1024),
        70..=89 => rng.gen_range(1025..=10 * 1024),
        _ => rng.gen_range(10 * 1024 + 1..=100 * 1024),
    }
}

/// A key index with 80% of draws on the first 20% of `n` keys.
fn hot_index(rng: &mut SmallRng, n: usize) -> usize {
    let hot = (n / 5).max(1);
    if rng.gen_bool(0.8) {
        rng.gen_range(0..hot)
    } else {
        rng.gen_range(hot..n.max(hot + 1))
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:010}").into_bytes()
}

fn pool() -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(7);
    (0..POOL).map(|_| rng.gen()).collect()
}

/// One batch of puts: `(key, value offset in the pool, value length)`.
struct PutBatch {
    ops: Vec<(Vec<u8>, usize, usize)>,
    bytes: u64,
}

fn put_batch(seed: u64, n_keys: usize) -> PutBatch {
    let mut rng = SmallRng::seed_from_u64(seed);
    let ops: Vec<_> = (0..BATCH)
        .map(|_| {
            let len = value_len(&mut rng);
            let off = rng.gen_range(0..=POOL - len);
            (key(hot_index(&mut rng, n_keys)), off, len)
        })
        .collect();
    let bytes = ops.iter().map(|(k, _, len)| (k.len() + len) as u64).sum();
    PutBatch { ops, bytes }
}

/// Runs `batch` split over `threads` writers; returns when all are acked.
fn run_puts(db: &Db, pool: &[u8], batch: &PutBatch, threads: usize) {
    let chunk = batch.ops.len().div_ceil(threads);
    std::thread::scope(|s| {
        for part in batch.ops.chunks(chunk) {
            s.spawn(move || {
                for (k, off, len) in part {
                    db.put(k, &pool[*off..*off + *len]).expect("put");
                }
            });
        }
    });
}

fn bench_put(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(Options::new(dir.path())).expect("open");
    let pool = pool();
    let batch = put_batch(1, PUT_KEYS);
    eprintln!(
        "put: {} writes of {} bytes (keys + values) per iteration",
        batch.ops.len(),
        batch.bytes
    );

    let mut g = c.benchmark_group("put");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for threads in [1usize, 4] {
        g.throughput(Throughput::Bytes(batch.bytes));
        g.bench_with_input(BenchmarkId::new("bytes", threads), &threads, |b, &t| {
            b.iter(|| run_puts(&db, &pool, &batch, t))
        });
        g.throughput(Throughput::Elements(batch.ops.len() as u64));
        g.bench_with_input(BenchmarkId::new("ops", threads), &threads, |b, &t| {
            b.iter(|| run_puts(&db, &pool, &batch, t))
        });
    }
    g.finish();
    db.close().expect("close");
}

/// Reads per `get` iteration (large enough that starting the reader
/// threads is noise).
const READS: usize = 10_000;

fn bench_get(c: &mut Criterion) {
    // Default options: most hot values come from the value cache.
    bench_get_with(c, "get", None);
    // No value cache: every read goes to table and blob files (through the
    // operating system's page cache).
    bench_get_with(c, "get_nocache", Some(0));
}

fn bench_get_with(c: &mut Criterion, group: &str, cache_size: Option<usize>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(dir.path());
    if let Some(n) = cache_size {
        opts.cache_size = n;
    }
    let db = Db::open(opts).expect("open");
    let pool = pool();

    // Load every key once, from four writers, then flush so reads go to
    // table and blob files (and the value cache) rather than the memtable.
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(2);
    let sizes: Vec<(usize, usize)> = (0..GET_KEYS)
        .map(|_| {
            let len = value_len(&mut rng);
            (rng.gen_range(0..=POOL - len), len)
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (db, pool, sizes) = (&db, &pool, &sizes);
            s.spawn(move || {
                for i in (t..GET_KEYS).step_by(4) {
                    let (off, len) = sizes[i];
                    db.put(&key(i), &pool[off..off + len]).expect("load");
                }
            });
        }
    });
    db.flush().expect("flush");
    let loaded: u64 = sizes.iter().map(|(_, l)| *l as u64).sum();
    eprintln!(
        "{group}: loaded {GET_KEYS} keys, {loaded} value bytes, in {:.2?}",
        started.elapsed()
    );

    // The keys each iteration reads, 80/20, and the bytes they return.
    let mut rng = SmallRng::seed_from_u64(3);
    let reads: Vec<usize> = (0..READS).map(|_| hot_index(&mut rng, GET_KEYS)).collect();
    let read_bytes: u64 = reads
        .iter()
        .map(|&i| (key(i).len() + sizes[i].1) as u64)
        .sum();
    let keys: Vec<Vec<u8>> = reads.iter().map(|&i| key(i)).collect();

    let run_gets = |threads: usize| {
        let chunk = keys.len().div_ceil(threads);
        std::thread::scope(|s| {
            for part in keys.chunks(chunk) {
                let db = &db;
                s.spawn(move || {
                    for k in part {
                        let v = db.get(k).expect("get");
                        assert!(v.is_some(), "loaded key missing");
                    }
                });
            }
        });
    };

    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for threads in [1usize, 4] {
        g.throughput(Throughput::Elements(keys.len() as u64));
        g.bench_with_input(BenchmarkId::new("ops", threads), &threads, |b, &t| {
            b.iter(|| run_gets(t))
        });
        g.throughput(Throughput::Bytes(read_bytes));
        g.bench_with_input(BenchmarkId::new("bytes", threads), &threads, |b, &t| {
            b.iter(|| run_gets(t))
        });
    }
    g.finish();
    db.close().expect("close");
}

/// Point lookups in one table through the block cache (what a read that
/// misses the memtable and the value cache, the flush's look at each
/// key's older version and blob collection's liveness check cost, before
/// any blob read): 20,000 keys with blob pointers, every key looked up
/// once, plus as many absent keys (most stop at the bloom filter).
fn bench_table_get(c: &mut Criterion) {
    use escabelo_engine::fs::{FsRef, RealFs};
    use escabelo_engine::table::{BlockCache, SeqRange, Table, TableBuilder};
    use escabelo_engine::types::{BlobRef, Value};
    use std::sync::Arc;

    const KEYS: usize = 20_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("000001.sst");
    let fs: FsRef = Arc::new(RealFs);
    let mut b = TableBuilder::create(&fs, &path, 1).expect("create");
    b.note_seqs(SeqRange { min: 1, max: 1 });
    for i in 0..KEYS {
        let r = BlobRef {
            file: 9,
            offset: i as u64 * 7_000,
            len: 7_000,
            checksum: i as u32,
        };
        b.add(&key(i), &Value::Blob(r)).expect("add");
    }
    b.finish().expect("finish");
    let cache = Arc::new(BlockCache::new(64 << 20));
    let t = Table::open_cached(&fs, &path, 1, cache).expect("open");
    let present: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    let absent: Vec<Vec<u8>> = (0..KEYS).map(|i| [&key(i)[..], b"-"].concat()).collect();

    let mut g = c.benchmark_group("table_get");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(KEYS as u64));
    g.bench_function("present", |b| {
        b.iter(|| {
            for k in &present {
                assert!(t.get(k).expect("get").is_some());
            }
        })
    });
    g.bench_function("absent", |b| {
        b.iter(|| {
            for k in &absent {
                assert!(t.get(k).expect("get").is_none());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_put, bench_get, bench_table_get);
criterion_main!(benches);
