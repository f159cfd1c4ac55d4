//! Write and space amplification, throughput and restart time of the engine
//! under the challenge workload (`/work/shared/CHALLENGE.md`): values 70%
//! 1 B..1 KiB, 20% 1..10 KiB, 10% 10..100 KiB; 80% of accesses on the
//! hottest 20% of keys.
//!
//! ```text
//! cargo run --release -p escabelo-engine --example amplification -- [flags]
//!
//!   --keys N             keys loaded (default 20000)
//!   --overwrites R       times every key is rewritten after the load (default 3)
//!   --skewed             overwrite with 80/20 draws (R x N writes) instead of
//!                        one random permutation of the keys per round
//!   --threads T          writer and reader threads (default 4)
//!   --reads N            reads in the read phase (default 200000)
//!   --durability os|sync (default os)
//!   --no-blob            keep every value inline (blob_threshold None)
//!   --memtable-size B    memtable size in bytes (default 64 MiB)
//!   --blob-gc-threshold F dead share at which a blob file is rewritten
//!                        (default: the engine's default)
//!   --gc-wait S          seconds to wait for background work after
//!                        flush + compact (default 5)
//!   --dir PATH           data directory, empty or missing (default a tempdir)
//!   --reopen-test        instead: a child process loads N keys with small
//!                        values (1 B..1 KiB), keeps overwriting and is killed
//!                        with SIGKILL; the parent times Db::open on the
//!                        directory and checks the keys
//!   --kill-after-ms MS   in --reopen-test, how long the child keeps writing
//!                        after its load before the kill (default 500)
//! ```
//!
//! Every value is a function of its key and version, so reads can check
//! content, not only presence.

use escabelo_engine::{Db, Durability, Options, Stats};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error>>;

const MIB: f64 = 1024.0 * 1024.0;
/// Random bytes every value is sliced from.
const POOL: usize = 256 * 1024;

#[derive(Debug, Clone)]
struct Args {
    keys: usize,
    overwrites: u32,
    skewed: bool,
    threads: usize,
    reads: usize,
    durability: Durability,
    no_blob: bool,
    memtable_size: usize,
    blob_gc_threshold: Option<f64>,
    gc_wait: u64,
    dir: Option<PathBuf>,
    reopen_test: bool,
    kill_after_ms: u64,
    /// Internal: run as the child writer of `--reopen-test`.
    child_writer: bool,
}

impl Args {
    fn parse() -> Res<Args> {
        let mut a = Args {
            keys: 20_000,
            overwrites: 3,
            skewed: false,
            threads: 4,
            reads: 200_000,
            durability: Durability::Os,
            no_blob: false,
            memtable_size: 64 * 1024 * 1024,
            blob_gc_threshold: None,
            gc_wait: 5,
            dir: None,
            reopen_test: false,
            kill_after_ms: 500,
            child_writer: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--keys" => a.keys = value()?.parse()?,
                "--overwrites" => a.overwrites = value()?.parse()?,
                "--skewed" => a.skewed = true,
                "--threads" => a.threads = value()?.parse()?,
                "--reads" => a.reads = value()?.parse()?,
                "--durability" => a.durability = value()?.parse()?,
                "--no-blob" => a.no_blob = true,
                "--memtable-size" => a.memtable_size = value()?.parse()?,
                "--blob-gc-threshold" => a.blob_gc_threshold = Some(value()?.parse()?),
                "--gc-wait" => a.gc_wait = value()?.parse()?,
                "--dir" => a.dir = Some(PathBuf::from(value()?)),
                "--reopen-test" => a.reopen_test = true,
                "--kill-after-ms" => a.kill_after_ms = value()?.parse()?,
                "--child-writer" => a.child_writer = true,
                "-h" | "--help" => {
                    println!("see the header of crates/engine/examples/amplification.rs");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown flag {other:?}").into()),
            }
        }
        if a.keys == 0 || a.threads == 0 {
            return Err("--keys and --threads must be positive".into());
        }
        Ok(a)
    }

    fn options(&self, dir: &Path) -> Options {
        let mut o = Options::new(dir);
        o.durability = self.durability;
        o.memtable_size = self.memtable_size;
        if self.no_blob {
            o.blob_threshold = None;
        }
        if let Some(f) = self.blob_gc_threshold {
            o.blob_gc_threshold = f;
        }
        o
    }
}

// ---------------------------------------------------------------------------
// The workload: keys, deterministic values, 80/20 draws.

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:010}").into_bytes()
}

/// Value sizes: the challenge's mix, or only its small class.
#[derive(Clone, Copy)]
enum Sizes {
    Challenge,
    Small,
}

/// The pool of random bytes values are cut from.
fn pool() -> Vec<u8> {
    let mut x = 1u64;
    (0..POOL)
        .map(|_| {
            x = splitmix(x);
            x as u8
        })
        .collect()
}

/// `(offset in the pool, length)` of version `version` of key `i`.
fn value_span(sizes: Sizes, i: usize, version: u32) -> (usize, usize) {
    let h = splitmix((i as u64) << 20 ^ version as u64);
    let r = h >> 8;
    let len = match sizes {
        Sizes::Small => 1 + (r % 1024) as usize,
        Sizes::Challenge => match h % 100 {
            0..=69 => 1 + (r % 1024) as usize,
            70..=89 => 1025 + (r % (10 * 1024 - 1024)) as usize,
            _ => 10 * 1024 + 1 + (r % (100 * 1024 - 10 * 1024)) as usize,
        },
    };
    let off = (splitmix(h) % (POOL - len + 1) as u64) as usize;
    (off, len)
}

fn value(pool: &[u8], sizes: Sizes, i: usize, version: u32) -> &[u8] {
    let (off, len) = value_span(sizes, i, version);
    &pool[off..off + len]
}

/// The keys writer `t` of `threads` owns: `t, t + threads, ...`. Each key
/// has one writer, so the latest version of a key is well defined.
fn owned(t: usize, threads: usize, n: usize) -> Vec<usize> {
    (t..n).step_by(threads).collect()
}

/// A draw from `keys` (ascending) with 80% on those below `hot`.
fn draw_80_20(rng: &mut SmallRng, keys: &[usize], hot: usize) -> usize {
    let n_hot = keys.partition_point(|&k| k < hot);
    if n_hot > 0 && (n_hot == keys.len() || rng.gen_bool(0.8)) {
        keys[rng.gen_range(0..n_hot)]
    } else {
        keys[rng.gen_range(n_hot..keys.len())]
    }
}

// ---------------------------------------------------------------------------
// Measurements.

/// Apparent size (sum of file lengths) and allocated size (blocks) of
/// every file under `dir`.
fn dir_size(dir: &Path) -> Res<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut alloc, mut files) = (0u64, 0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let md = entry.metadata()?;
            if md.is_dir() {
                stack.push(entry.path());
            } else {
                len += md.len();
                alloc += md.blocks() * 512;
                files += 1;
            }
        }
    }
    Ok((len, alloc, files))
}

/// Per-file-kind apparent sizes, by extension (or name when none).
fn dir_breakdown(dir: &Path) -> Res<Vec<(String, u64, u64)>> {
    let mut kinds: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let md = entry.metadata()?;
        if md.is_dir() {
            continue;
        }
        let path = entry.path();
        let kind = match path.extension() {
            Some(e) => e.to_string_lossy().into_owned(),
            None => entry.file_name().to_string_lossy().into_owned(),
        };
        let k = kinds.entry(kind).or_default();
        k.0 += 1;
        k.1 += md.len();
    }
    Ok(kinds.into_iter().map(|(k, (n, b))| (k, n, b)).collect())
}

/// `write_bytes` and `wchar` of this process, when /proc/self/io is readable.
fn proc_io() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some((field("write_bytes:")?, field("wchar:")?))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn row(name: &str, value: String) {
    println!("  {name:<48} {value}");
}

fn rate(ops: u64, bytes: u64, secs: f64) -> String {
    format!(
        "{:>10.0} ops/s  {:>8.1} MiB/s  ({ops} ops, {:.1} MiB, {secs:.2} s)",
        ops as f64 / secs,
        mb(bytes) / secs,
        mb(bytes)
    )
}

fn space_report(label: &str, db: &Db, dir: &Path, live: u64) -> Res<f64> {
    let s = db.stats();
    let (len, alloc, files) = dir_size(dir)?;
    println!("{label}:");
    row(
        "live data (latest key + value of every key)",
        format!("{:.1} MiB", mb(live)),
    );
    row(
        "data directory, sum of file sizes",
        format!("{:.1} MiB in {files} files", mb(len)),
    );
    row(
        "data directory, allocated blocks",
        format!("{:.1} MiB", mb(alloc)),
    );
    let breakdown = dir_breakdown(dir)?
        .into_iter()
        .map(|(k, n, b)| format!("{k}: {n} = {:.1} MiB", mb(b)))
        .collect::<Vec<_>>()
        .join(", ");
    row("  by kind", breakdown);
    row(
        "engine: sst / blob / blob garbage / wal",
        format!(
            "{:.1} / {:.1} / {:.1} / {:.1} MiB",
            mb(s.sst_bytes),
            mb(s.blob_bytes),
            mb(s.blob_garbage_bytes),
            mb(s.wal_size)
        ),
    );
    row(
        "engine: levels / flushes / compactions / gcs",
        format!(
            "{:?} / {} / {} / {}",
            s.level_files, s.flushes, s.compactions, s.blob_gcs
        ),
    );
    let amp = len as f64 / live as f64;
    row(
        "SPACE AMPLIFICATION (dir size / live)",
        format!(
            "{amp:.3}x  (allocated: {:.3}x, engine disk_bytes: {:.3}x)",
            alloc as f64 / live as f64,
            s.disk_bytes as f64 / live as f64
        ),
    );
    Ok(amp)
}

fn write_amp_report(s: &Stats, io0: Option<(u64, u64)>) {
    row(
        "user bytes written (keys + values)",
        format!("{:.1} MiB", mb(s.user_bytes_written)),
    );
    row(
        "engine bytes written (log, tables, blobs)",
        format!("{:.1} MiB", mb(s.bytes_written)),
    );
    row(
        "WRITE AMPLIFICATION (engine / user)",
        format!(
            "{:.3}x",
            s.bytes_written as f64 / s.user_bytes_written.max(1) as f64
        ),
    );
    match (io0, proc_io()) {
        (Some((wb0, wc0)), Some((wb1, wc1))) => {
            let (wb, wc) = (wb1 - wb0, wc1 - wc0);
            row(
                "/proc/self/io wchar (write syscalls)",
                format!(
                    "{:.1} MiB = {:.3}x user",
                    mb(wc),
                    wc as f64 / s.user_bytes_written.max(1) as f64
                ),
            );
            row(
                "/proc/self/io write_bytes (to block layer)",
                format!(
                    "{:.1} MiB = {:.3}x user{}",
                    mb(wb),
                    wb as f64 / s.user_bytes_written.max(1) as f64,
                    if wb == 0 { " (not accounted here)" } else { "" }
                ),
            );
        }
        _ => row("/proc/self/io", "not readable".into()),
    }
}

// ---------------------------------------------------------------------------
// The amplification run.

/// Latest version written of every key, and its value length.
struct Latest {
    version: Vec<AtomicU32>,
}

impl Latest {
    fn new(n: usize) -> Latest {
        Latest {
            version: (0..n).map(|_| AtomicU32::new(0)).collect(),
        }
    }
    fn live_bytes(&self, sizes: Sizes) -> u64 {
        self.version
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (_, len) = value_span(sizes, i, v.load(Ordering::Relaxed));
                (key(i).len() + len) as u64
            })
            .sum()
    }
}

/// Runs `threads` writers; writer `t` calls `work(t)` and returns the
/// bytes it wrote. Returns (ops, bytes, seconds).
fn writers<F>(threads: usize, work: F) -> Res<(u64, u64, f64)>
where
    F: Fn(usize) -> Res<(u64, u64)> + Sync,
{
    let started = Instant::now();
    let results: Vec<Result<(u64, u64), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let work = &work;
                s.spawn(move || work(t).map_err(|e| e.to_string()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("writer panicked".into())))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let (mut ops, mut bytes) = (0, 0);
    for r in results {
        let (o, b) = r?;
        ops += o;
        bytes += b;
    }
    Ok((ops, bytes, secs))
}

fn amplification(args: &Args, dir: &Path) -> Res<()> {
    let sizes = Sizes::Challenge;
    let pool = pool();
    let n = args.keys;
    let hot = (n / 5).max(1);
    let latest = Latest::new(n);
    let io0 = proc_io();

    println!(
        "escabelo-engine amplification: {n} keys, {} overwrite round(s) ({}), {} thread(s), \
         durability {}, key-value separation {}, memtable {} MiB",
        args.overwrites,
        if args.skewed {
            "80/20 draws"
        } else {
            "a random permutation per round"
        },
        args.threads,
        args.durability,
        if args.no_blob {
            "off".to_string()
        } else {
            let o = args.options(dir);
            format!(
                "on (values >= {} B, gc at {:.0}% dead)",
                o.blob_threshold.unwrap_or(0),
                o.blob_gc_threshold * 100.0
            )
        },
        args.memtable_size / (1024 * 1024)
    );
    println!("data directory: {}", dir.display());
    println!();

    let started = Instant::now();
    let db = Db::open(args.options(dir))?;
    let open_secs = started.elapsed().as_secs_f64();

    // Load: every key once.
    let (ops, bytes, secs) = writers(args.threads, |t| {
        let (mut ops, mut bytes) = (0, 0);
        for i in owned(t, args.threads, n) {
            let k = key(i);
            let v = value(&pool, sizes, i, 0);
            db.put(&k, v)?;
            ops += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        Ok((ops, bytes))
    })?;
    println!("throughput:");
    row(
        "open (empty directory)",
        format!("{:.1} ms", open_secs * 1e3),
    );
    row("load (each key once)", rate(ops, bytes, secs));

    // Overwrites.
    let (ops, bytes, secs) = writers(args.threads, |t| {
        let mine = owned(t, args.threads, n);
        let mut rng = SmallRng::seed_from_u64(100 + t as u64);
        let mut order = mine.clone();
        let (mut ops, mut bytes) = (0, 0);
        for _ in 0..args.overwrites {
            if args.skewed {
                for o in order.iter_mut() {
                    *o = draw_80_20(&mut rng, &mine, hot);
                }
            } else {
                order.shuffle(&mut rng);
            }
            for &i in &order {
                let version = latest.version[i].load(Ordering::Relaxed) + 1;
                let k = key(i);
                let v = value(&pool, sizes, i, version);
                db.put(&k, v)?;
                latest.version[i].store(version, Ordering::Relaxed);
                ops += 1;
                bytes += (k.len() + v.len()) as u64;
            }
        }
        Ok((ops, bytes))
    })?;
    if ops > 0 {
        row("overwrites", rate(ops, bytes, secs));
    }
    let s = db.stats();
    row(
        "write stalls / log syncs",
        format!("{} / {}", s.write_stalls, s.wal_syncs),
    );
    println!();

    let live = latest.live_bytes(sizes);
    println!("write amplification after load + overwrites:");
    write_amp_report(&db.stats(), io0);
    println!();
    let amp_before = space_report(
        "space after the overwrites (no explicit flush)",
        &db,
        dir,
        live,
    )?;
    println!();

    // Steady state: flush, compact, then let background work settle.
    let started = Instant::now();
    db.flush()?;
    let flush_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    db.compact()?;
    let compact_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(args.gc_wait);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let amp_after = space_report(
        &format!(
            "space at steady state (flush {flush_secs:.2} s, compact {compact_secs:.2} s, \
             then {} s idle)",
            args.gc_wait
        ),
        &db,
        dir,
        live,
    )?;
    println!();
    println!("write amplification, total:");
    write_amp_report(&db.stats(), io0);
    println!();

    // Reads: 80/20 over the final data, checking content.
    let reads_per_thread = args.reads.div_ceil(args.threads);
    let bad = AtomicU64::new(0);
    let (ops, bytes, secs) = writers(args.threads, |t| {
        let all: Vec<usize> = (0..n).collect();
        let mut rng = SmallRng::seed_from_u64(1000 + t as u64);
        let (mut ops, mut bytes) = (0, 0);
        for _ in 0..reads_per_thread {
            let i = draw_80_20(&mut rng, &all, hot);
            let k = key(i);
            let want = value(&pool, sizes, i, latest.version[i].load(Ordering::Relaxed));
            match db.get(&k)? {
                Some(v) if v.as_ref() == want => bytes += (k.len() + v.len()) as u64,
                _ => {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
            ops += 1;
        }
        Ok((ops, bytes))
    })?;
    let s = db.stats();
    println!("reads (80/20 over the final data):");
    row("get", rate(ops, bytes, secs));
    row(
        "value cache hits / misses",
        format!("{} / {}", s.cache_hits, s.cache_misses),
    );
    row(
        "wrong or missing values",
        bad.load(Ordering::Relaxed).to_string(),
    );
    println!();

    let started = Instant::now();
    db.close()?;
    let close_secs = started.elapsed().as_secs_f64();
    // The directory lock lives until the last handle is dropped.
    drop(db);
    let started = Instant::now();
    let db = Db::open(args.options(dir))?;
    let reopen_secs = started.elapsed().as_secs_f64();
    db.close()?;
    println!("summary:");
    row(
        "close / clean reopen",
        format!("{:.1} ms / {:.1} ms", close_secs * 1e3, reopen_secs * 1e3),
    );
    row(
        "space amplification before / after steady state",
        format!("{amp_before:.3}x / {amp_after:.3}x (target < 1.15x)"),
    );
    if bad.load(Ordering::Relaxed) > 0 {
        return Err("some reads returned wrong or missing values".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The restart test.

/// The child of `--reopen-test`: loads version 0 of every key, says
/// `LOADED`, then writes version 1 of every key, reporting `ACK t c` once
/// writer `t` has its first `c` keys acknowledged, until it is killed.
fn child_writer(args: &Args, dir: &Path) -> Res<()> {
    let pool = pool();
    let db = Db::open(args.options(dir))?;
    let n = args.keys;
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let (ops, bytes, secs) = writers(args.threads, |t| {
        let (mut ops, mut bytes) = (0, 0);
        for i in owned(t, args.threads, n) {
            let k = key(i);
            let v = value(&pool, Sizes::Small, i, 0);
            db.put(&k, v)?;
            ops += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        Ok((ops, bytes))
    })?;
    {
        let mut o = out.lock().map_err(|_| "stdout lock poisoned")?;
        writeln!(o, "LOADED {ops} {bytes} {secs}")?;
        o.flush()?;
    }
    writers(args.threads, |t| {
        let mine = owned(t, args.threads, n);
        for (c, &i) in mine.iter().enumerate() {
            db.put(&key(i), value(&pool, Sizes::Small, i, 1))?;
            if (c + 1) % 64 == 0 || c + 1 == mine.len() {
                let mut o = out.lock().map_err(|_| "stdout lock poisoned")?;
                writeln!(o, "ACK {t} {}", c + 1)?;
                o.flush()?;
            }
        }
        Ok((0, 0))
    })?;
    {
        let mut o = out.lock().map_err(|_| "stdout lock poisoned")?;
        writeln!(o, "DONE")?;
        o.flush()?;
    }
    // Wait to be killed, without closing: the parent sends SIGKILL.
    std::mem::forget(db);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn reopen_test(args: &Args, dir: &Path) -> Res<()> {
    let n = args.keys;
    println!(
        "escabelo-engine restart test: {n} keys of 1 B..1 KiB values, {} writer thread(s), \
         durability {}, key-value separation {}, memtable {} MiB",
        args.threads,
        args.durability,
        if args.no_blob { "off" } else { "on" },
        args.memtable_size / (1024 * 1024)
    );
    println!("data directory: {}", dir.display());
    println!();

    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--child-writer")
        .arg("--dir")
        .arg(dir)
        .args(["--keys", &n.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--durability", &args.durability.to_string()])
        .args(["--memtable-size", &args.memtable_size.to_string()]);
    if args.no_blob {
        cmd.arg("--no-blob");
    }
    if let Some(f) = args.blob_gc_threshold {
        cmd.args(["--blob-gc-threshold", &f.to_string()]);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut lines = BufReader::new(stdout).lines();

    // Wait for the load to finish.
    let mut load = None;
    for line in lines.by_ref() {
        let line = line?;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"LOADED") && f.len() == 4 {
            load = Some((
                f[1].parse::<u64>()?,
                f[2].parse::<u64>()?,
                f[3].parse::<f64>()?,
            ));
            break;
        }
    }
    let Some((ops, bytes, secs)) = load else {
        let status = child.wait()?;
        return Err(format!("the child writer ended before its load: {status}").into());
    };

    // Let it overwrite for a while, collecting acknowledgements, then kill.
    let acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.threads).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicU64::new(0));
    let reader = {
        let (acked, done) = (acked.clone(), done.clone());
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let f: Vec<&str> = line.split_whitespace().collect();
                match f.as_slice() {
                    ["ACK", t, c] => {
                        if let (Ok(t), Ok(c)) = (t.parse::<usize>(), c.parse::<u64>()) {
                            if let Some(a) = acked.get(t) {
                                a.fetch_max(c, Ordering::Relaxed);
                            }
                        }
                    }
                    ["DONE"] => done.store(1, Ordering::Relaxed),
                    _ => {}
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(args.kill_after_ms));
    child.kill()?; // SIGKILL
    let status = child.wait()?;
    reader.join().map_err(|_| "reader thread panicked")?;
    let acked: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let acked_total: u64 = acked.iter().sum();

    println!("child writer:");
    row("load", rate(ops, bytes, secs));
    row(
        "overwrites acknowledged before the kill",
        format!(
            "{acked_total} in {} ms{}",
            args.kill_after_ms,
            if done.load(Ordering::Relaxed) == 1 {
                " (all done before the kill: raise --keys or lower --kill-after-ms)"
            } else {
                ""
            }
        ),
    );
    row("child exit", status.to_string());
    let (len, _, files) = dir_size(dir)?;
    row(
        "data directory after the kill",
        format!("{:.1} MiB in {files} files", mb(len)),
    );
    println!();

    // Restart.
    let started = Instant::now();
    let db = Db::open(args.options(dir))?;
    let open_secs = started.elapsed().as_secs_f64();
    let s = db.stats();
    println!("restart:");
    row(
        "RESTART TIME (Db::open after SIGKILL)",
        format!("{:.1} ms", open_secs * 1e3),
    );
    row(
        "recovered memtables (active + frozen)",
        format!("{:.1} MiB", mb(s.memtable_size + s.immutable_memtable_size)),
    );
    row(
        "tables / blob files",
        format!("{} / {}", s.sst_count, s.blob_files),
    );

    // Check: every acknowledged overwrite is there; every other key holds
    // version 0 or 1. Checks all keys up to 200000, a sample beyond.
    let pool = pool();
    let started = Instant::now();
    let step = n.div_ceil(200_000).max(1);
    let (mut checked, mut lost, mut wrong) = (0u64, 0u64, 0u64);
    for i in (0..n).step_by(step) {
        let t = i % args.threads;
        let rank = (i / args.threads) as u64;
        let must_be_new = rank < acked[t];
        let got = db.get(&key(i))?;
        checked += 1;
        let v0 = value(&pool, Sizes::Small, i, 0);
        let v1 = value(&pool, Sizes::Small, i, 1);
        match got {
            Some(v) if v.as_ref() == v1 => {}
            Some(v) if v.as_ref() == v0 && !must_be_new => {}
            Some(v) if v.as_ref() == v0 => lost += 1,
            _ => wrong += 1,
        }
    }
    let verify_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut count = 0u64;
    for k in db.keys()? {
        k?;
        count += 1;
    }
    let count_secs = started.elapsed().as_secs_f64();
    row(
        "keys checked (content)",
        format!("{checked} in {:.2} s", verify_secs),
    );
    row("acknowledged overwrites lost", lost.to_string());
    row("missing or corrupt values", wrong.to_string());
    row(
        "keys listed after restart",
        format!("{count} of {n} in {count_secs:.2} s"),
    );
    let started = Instant::now();
    db.close()?;
    row(
        "close",
        format!("{:.1} ms", started.elapsed().as_secs_f64() * 1e3),
    );
    if lost > 0 || wrong > 0 || count != n as u64 {
        return Err("the restart test found lost or corrupt data".into());
    }
    Ok(())
}

fn main() -> Res<()> {
    let args = Args::parse()?;
    if args.child_writer {
        let dir = args.dir.clone().ok_or("--child-writer needs --dir")?;
        return child_writer(&args, &dir);
    }
    let _tmp;
    let dir = match &args.dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                return Err(format!("{} is not empty", d.display()).into());
            }
            d.clone()
        }
        None => {
            let t = tempfile::tempdir()?;
            let d = t.path().to_path_buf();
            _tmp = t;
            d
        }
    };
    if args.reopen_test {
        reopen_test(&args, &dir)
    } else {
        amplification(&args, &dir)
    }
}
