//! Scale-out through twemproxy (nutcracker): three real servers behind the
//! proxy configured by `deploy/twemproxy/nutcracker.yml`. Keys and values
//! of the challenge's sizes (keys up to 100 KiB) are written and read back
//! through the proxy with SET, MSET, GET, MGET and DEL; every server must
//! hold a share of them, hash tags must keep keys together, and after one
//! server is killed with SIGKILL and restarted on the same port and data
//! directory, every acknowledged write must be there.
//!
//! Prints `SKIPPED: <reason>` and returns when `nutcracker` is not
//! installed (`scripts/test-deps.sh` installs Debian's package).

mod common;

use common::resp::{cmd, reply, value_len, Value};
use common::{Client, Server, TIMEOUT};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nutcracker's `-m`: the mbuf size the template documents, large enough
/// for 100 KiB keys.
const MBUF_SIZE: usize = 131_072;
/// Distinct keys written through the proxy.
const KEYS: usize = 3000;
/// Largest key the server accepts.
const MAX_KEY: usize = 102_400;
/// Requests per pipelined batch.
const BATCH: usize = 64;

/// Flags every server of this test gets, in one place. A server that has a
/// metrics listener (default port 9187) gets `--metrics-port 0`, so that
/// three of them can run side by side.
fn server_args() -> Vec<String> {
    let mut args = vec!["--memtable-size".to_string(), "2MiB".to_string()];
    let help = Command::new(env!("CARGO_BIN_EXE_escabelo"))
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if help.contains("--metrics-port") {
        args.extend(["--metrics-port".to_string(), "0".to_string()]);
    }
    args
}

/// The nutcracker binary: `$NUTCRACKER`, then `PATH`, then the sbin
/// directories Debian installs it to (not on a non-root `PATH`).
fn find_nutcracker() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NUTCRACKER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("nutcracker"))
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The template with its listen address and its three server addresses
/// replaced by loopback ports (names and every other setting kept).
fn render_config(template: &str, listen: u16, servers: &[u16]) -> String {
    let mut next = servers.iter();
    let mut out = String::new();
    for line in template.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("listen:") {
            out.push_str(&format!("{indent}listen: 127.0.0.1:{listen}\n"));
        } else if let Some(entry) = trimmed.strip_prefix("- ") {
            let (addr, name) = entry.split_once(' ').expect("server line has a name");
            let weight = addr.rsplit(':').next().unwrap();
            let port = next.next().expect("more server lines than servers");
            out.push_str(&format!("{indent}- 127.0.0.1:{port}:{weight} {name}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(next.next().is_none(), "fewer server lines than servers");
    out
}

/// A running nutcracker; killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Proxy {
    /// Checks and starts the proxy for `servers`, retrying with other
    /// ports if the ones picked were taken meanwhile.
    fn start(bin: &Path, dir: &Path, template: &str, servers: &[u16]) -> Proxy {
        let mut last = String::new();
        for attempt in 0..3 {
            let (port, stats) = (free_port(), free_port());
            let conf = dir.join(format!("nutcracker-{attempt}.yml"));
            std::fs::write(&conf, render_config(template, port, servers)).unwrap();
            let test = Command::new(bin)
                .arg("-t")
                .arg("-c")
                .arg(&conf)
                .output()
                .unwrap();
            assert!(
                test.status.success(),
                "nutcracker -t rejects the config: {}",
                String::from_utf8_lossy(&test.stderr)
            );
            let log = dir.join(format!("nutcracker-{attempt}.log"));
            let child = Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .args(["-m", &MBUF_SIZE.to_string()])
                .args(["-s", &stats.to_string(), "-a", "127.0.0.1"])
                .arg("-o")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut proxy = Proxy { child, port, log };
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = proxy.child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let mut c = Conn::new(port);
                    if c.call(&[b"PING"]) == Value::Simple("PONG".into()) {
                        return proxy;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last = proxy.log_text();
        }
        panic!("nutcracker did not start; its last log:\n{last}");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipelining RESP connection.
struct Conn {
    c: Client,
    pending: Vec<u8>,
}

impl Conn {
    fn new(port: u16) -> Conn {
        Conn {
            c: Client::connect(port),
            pending: Vec::new(),
        }
    }

    /// Sends every command, then reads as many replies.
    fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> Vec<Value> {
        let mut req = Vec::new();
        for c in cmds {
            let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
            req.extend_from_slice(&cmd(&args));
        }
        self.c.send(&req);
        cmds.iter()
            .map(|_| common::resp::parse(&reply(&mut self.c, &mut self.pending)))
            .collect()
    }

    /// Like [`Conn::pipeline`], but a closed connection or a timeout ends
    /// the replies early instead of failing the test: during an outage the
    /// proxy may drop the client connection.
    fn pipeline_lossy(&mut self, cmds: &[Vec<Vec<u8>>]) -> Vec<Value> {
        let mut req = Vec::new();
        for c in cmds {
            let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
            req.extend_from_slice(&cmd(&args));
        }
        if std::io::Write::write_all(&mut self.c.stream, &req).is_err() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while out.len() < cmds.len() {
            if let Some(n) = value_len(&self.pending) {
                let raw: Vec<u8> = self.pending.drain(..n).collect();
                out.push(common::resp::parse(&raw));
                continue;
            }
            match self.c.stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => self.pending.extend_from_slice(&buf[..k]),
            }
        }
        out
    }

    fn call(&mut self, args: &[&[u8]]) -> Value {
        let owned = vec![args.iter().map(|a| a.to_vec()).collect()];
        self.pipeline(&owned).remove(0)
    }
}

/// What the test knows about one key.
#[derive(Clone)]
struct Entry {
    key: Vec<u8>,
    /// Value lengths and versions that a read may return; `None` = absent.
    /// One element unless a write's outcome is unknown.
    allowed: Vec<Option<(usize, u32)>>,
}

impl Entry {
    fn set(&mut self, len: usize, version: u32) {
        self.allowed = vec![Some((len, version))];
    }

    /// A write whose reply was an error: it may or may not have happened.
    fn maybe(&mut self, len: usize, version: u32) {
        self.allowed.push(Some((len, version)));
    }

    fn live(&self) -> bool {
        self.allowed == [self.allowed[0]] && self.allowed[0].is_some()
    }

    fn check(&self, got: &Value, what: &str) {
        let ok = self.allowed.iter().any(|a| match (a, got) {
            (None, Value::Bulk(None)) => true,
            (Some((len, version)), Value::Bulk(Some(v))) => *v == value(&self.key, *len, *version),
            _ => false,
        });
        if !ok {
            let shown = match got {
                Value::Bulk(Some(v)) => format!("{} bytes {:?}...", v.len(), &v[..v.len().min(40)]),
                other => format!("{other:?}"),
            };
            panic!(
                "{what}: key {:?}... (len {}) read {shown}, expected one of {:?}",
                String::from_utf8_lossy(&self.key[..self.key.len().min(40)]),
                self.key.len(),
                self.allowed
            );
        }
    }
}

/// The value of `key` at `version`, `len` bytes: a header naming both,
/// then bytes of every value 0..=255 (CR, LF and NUL included) from a
/// generator seeded by the key and the version.
fn value(key: &[u8], len: usize, version: u32) -> Vec<u8> {
    let mut seed = 0xcbf2_9ce4_8422_2325u64 ^ u64::from(version);
    for &b in key {
        seed = (seed ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut v = format!("{}:{version}:", key.len()).into_bytes();
    let mut rng = SmallRng::seed_from_u64(seed);
    while v.len() < len {
        v.push(rng.gen());
    }
    v.truncate(len.max(1));
    v
}

/// A value size from the challenge's bands: 70% up to 1 KiB, 20% 1-10 KiB,
/// 10% 10-100 KiB.
fn challenge_size(rng: &mut SmallRng) -> usize {
    let p: f64 = rng.gen();
    if p < 0.7 {
        rng.gen_range(1..=1024)
    } else if p < 0.9 {
        rng.gen_range(1024..=10 * 1024)
    } else {
        rng.gen_range(10 * 1024..=100 * 1024)
    }
}

/// The keys: mostly short, every 100th one long, one of exactly 100 KiB.
fn make_keys(rng: &mut SmallRng) -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| {
            let mut k = format!("scale:{i:05}:").into_bytes();
            let target = match i {
                0 => MAX_KEY,
                _ if i % 100 == 50 => rng.gen_range(1024..=MAX_KEY),
                _ => 0,
            };
            while k.len() < target {
                k.push(b'a' + (k.len() % 26) as u8);
            }
            k
        })
        .collect()
}

fn set_cmd(key: &[u8], len: usize, version: u32) -> Vec<Vec<u8>> {
    vec![b"SET".to_vec(), key.to_vec(), value(key, len, version)]
}

/// Writes a new version of each entry in `which` through `conn` (SET,
/// pipelined; every `mset_every`-th batch as one MSET). Every reply must be
/// OK.
fn write_all(
    conn: &mut Conn,
    entries: &mut [Entry],
    which: &[usize],
    version: u32,
    rng: &mut SmallRng,
) {
    for (n, chunk) in which.chunks(BATCH).enumerate() {
        let sizes: Vec<usize> = chunk.iter().map(|_| challenge_size(rng)).collect();
        if n % 4 == 3 {
            let mut mset = vec![b"MSET".to_vec()];
            for (&i, &len) in chunk.iter().zip(&sizes) {
                mset.push(entries[i].key.clone());
                mset.push(value(&entries[i].key, len, version));
            }
            let r = conn.pipeline(&[mset]);
            assert_eq!(r, [Value::Simple("OK".into())], "MSET through the proxy");
        } else {
            let cmds: Vec<_> = chunk
                .iter()
                .zip(&sizes)
                .map(|(&i, &len)| set_cmd(&entries[i].key, len, version))
                .collect();
            for r in conn.pipeline(&cmds) {
                assert_eq!(r, Value::Simple("OK".into()), "SET through the proxy");
            }
        }
        for (&i, &len) in chunk.iter().zip(&sizes) {
            entries[i].set(len, version);
        }
    }
}

/// Reads every entry through `conn`, half with GET and half with MGET, and
/// checks each value.
fn check_all(conn: &mut Conn, entries: &[Entry], what: &str) {
    for (n, chunk) in entries.chunks(BATCH).enumerate() {
        if n % 2 == 0 {
            let cmds: Vec<_> = chunk
                .iter()
                .map(|e| vec![b"GET".to_vec(), e.key.clone()])
                .collect();
            for (e, r) in chunk.iter().zip(conn.pipeline(&cmds)) {
                e.check(&r, what);
            }
        } else {
            let mut mget = vec![b"MGET".to_vec()];
            mget.extend(chunk.iter().map(|e| e.key.clone()));
            match conn.pipeline(&[mget]).remove(0) {
                Value::Array(Some(items)) => {
                    assert_eq!(items.len(), chunk.len(), "{what}: MGET reply length");
                    for (e, r) in chunk.iter().zip(&items) {
                        e.check(r, what);
                    }
                }
                other => panic!("{what}: MGET replied {other:?}"),
            }
        }
    }
}

/// For each entry, the index of the server that holds it (asked directly,
/// with EXISTS); asserts that no key is on two servers and that the
/// servers' DBSIZE adds up.
fn owners(servers: &[Server], entries: &[Entry], extra_keys: usize) -> Vec<Option<usize>> {
    let mut owner = vec![None; entries.len()];
    let mut total = 0;
    for (s, srv) in servers.iter().enumerate() {
        let mut c = Conn::new(srv.port);
        for (n, chunk) in entries.chunks(BATCH).enumerate() {
            let cmds: Vec<_> = chunk
                .iter()
                .map(|e| vec![b"EXISTS".to_vec(), e.key.clone()])
                .collect();
            for (j, r) in c.pipeline(&cmds).into_iter().enumerate() {
                let i = n * BATCH + j;
                if r == Value::Int(1) {
                    assert_eq!(owner[i], None, "key {i} is on two servers");
                    owner[i] = Some(s);
                }
            }
        }
        match c.call(&[b"DBSIZE"]) {
            Value::Int(k) => total += k as usize,
            other => panic!("DBSIZE replied {other:?}"),
        }
    }
    let found = owner.iter().filter(|o| o.is_some()).count();
    assert_eq!(
        total,
        found + extra_keys,
        "DBSIZE of the servers versus the keys found"
    );
    owner
}

#[test]
fn three_servers_behind_twemproxy() {
    let Some(bin) = find_nutcracker() else {
        println!("SKIPPED: nutcracker is not installed (scripts/test-deps.sh installs it)");
        return;
    };
    let template_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/twemproxy/nutcracker.yml");
    let template = std::fs::read_to_string(&template_path).unwrap();
    for setting in ["redis: true", "distribution: ketama", "hash_tag: \"{}\""] {
        assert!(template.contains(setting), "the template lacks {setting}");
    }
    assert!(
        template.contains(&format!("-m {MBUF_SIZE}")),
        "the template documents another mbuf size than the test uses"
    );

    let tmp = tempfile::tempdir().unwrap();
    let args = server_args();
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let dirs: Vec<PathBuf> = (1..=3)
        .map(|i| tmp.path().join(format!("data{i}")))
        .collect();
    let mut servers: Vec<Server> = dirs.iter().map(|d| Server::start_in(d, &extra)).collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let proxy = Proxy::start(&bin, tmp.path(), &template, &ports);
    let mut conn = Conn::new(proxy.port);
    let mut rng = SmallRng::seed_from_u64(12);

    // 1. Write every key (version 1), read every key back.
    let mut entries: Vec<Entry> = make_keys(&mut rng)
        .into_iter()
        .map(|key| Entry {
            key,
            allowed: vec![None],
        })
        .collect();
    let all: Vec<usize> = (0..entries.len()).collect();
    write_all(&mut conn, &mut entries, &all, 1, &mut rng);
    check_all(&mut conn, &entries, "after the first writes");

    // 2. Multi-key DEL of every 10th key, ten per command, across servers.
    let doomed: Vec<usize> = (0..entries.len()).filter(|i| i % 10 == 5).collect();
    for chunk in doomed.chunks(10) {
        let mut del = vec![b"DEL".to_vec()];
        del.extend(chunk.iter().map(|&i| entries[i].key.clone()));
        assert_eq!(
            conn.pipeline(&[del]),
            [Value::Int(chunk.len() as i64)],
            "DEL count"
        );
        for &i in chunk {
            entries[i].allowed = vec![None];
        }
    }
    check_all(&mut conn, &entries, "after DEL");

    // 3. Hash tags: keys sharing a {tag} share a server.
    let tagged: Vec<Vec<u8>> = (0..20)
        .flat_map(|t| (0..5).map(move |j| format!("user:{{t{t}}}:{j}").into_bytes()))
        .collect();
    let cmds: Vec<_> = tagged.iter().map(|k| set_cmd(k, 10, 1)).collect();
    for r in conn.pipeline(&cmds) {
        assert_eq!(r, Value::Simple("OK".into()));
    }
    let tag_entries: Vec<Entry> = tagged
        .iter()
        .map(|k| Entry {
            key: k.clone(),
            allowed: vec![Some((10, 1))],
        })
        .collect();
    let tag_owner = owners(
        &servers,
        &tag_entries,
        entries.iter().filter(|e| e.live()).count(),
    );
    for group in tag_owner.chunks(5) {
        assert!(
            group.iter().all(|o| o.is_some() && *o == group[0]),
            "a tag split: {group:?}"
        );
    }

    // 4. Every server holds a share (ketama over three equal servers).
    let owner = owners(&servers, &entries, tag_entries.len());
    let live = entries.iter().filter(|e| e.live()).count();
    for (s, port) in ports.iter().enumerate() {
        let n = owner.iter().filter(|o| **o == Some(s)).count();
        println!("server {s} (port {port}): {n} of {live} keys");
        assert!(n * 10 >= live, "server {s} holds only {n} of {live} keys");
    }
    for (e, o) in entries.iter().zip(&owner) {
        assert_eq!(
            e.live(),
            o.is_some(),
            "a live key on no server, or a deleted one on some"
        );
    }

    // 5. Overwrite everything (version 2) and kill server 0 with SIGKILL
    // right after its last acknowledgement.
    let victim = 0;
    let live_idx: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].live()).collect();
    write_all(&mut conn, &mut entries, &live_idx, 2, &mut rng);
    servers[victim].kill9();

    // 6. While it is down: the other servers' keys are written (version 3)
    // and must succeed; the victim's keys get errors (no ejection, so they
    // are not moved elsewhere). An error reply leaves the outcome unknown.
    let (mut ok, mut failed) = (0, 0);
    for chunk in live_idx.chunks(BATCH) {
        let sizes: Vec<usize> = chunk.iter().map(|_| challenge_size(&mut rng)).collect();
        let cmds: Vec<_> = chunk
            .iter()
            .zip(&sizes)
            .map(|(&i, &len)| set_cmd(&entries[i].key, len, 3))
            .collect();
        let replies = conn.pipeline_lossy(&cmds);
        if replies.len() < cmds.len() {
            conn = Conn::new(proxy.port);
        }
        for (j, (&i, &len)) in chunk.iter().zip(&sizes).enumerate() {
            match replies.get(j) {
                Some(Value::Simple(s)) if s == "OK" => {
                    assert_ne!(
                        owner[i],
                        Some(victim),
                        "a write for the dead server succeeded"
                    );
                    entries[i].set(len, 3);
                    ok += 1;
                }
                other => {
                    if owner[i] != Some(victim) {
                        panic!("write of a live server's key failed: {other:?}");
                    }
                    entries[i].maybe(len, 3);
                    failed += 1;
                }
            }
        }
    }
    println!("during the outage: {ok} writes acknowledged, {failed} refused");
    assert!(ok > 0 && failed > 0);

    // 7. Restart it on the same port and data directory.
    let dead_port = ports[victim];
    let mut restart: Vec<String> = vec![
        "--bind".into(),
        "127.0.0.1".into(),
        "--port".into(),
        dead_port.to_string(),
        "--data-dir".into(),
        dirs[victim].display().to_string(),
    ];
    restart.extend(args.iter().cloned());
    let deadline = Instant::now() + TIMEOUT;
    let started = loop {
        if let Some(s) = Server::spawn_ready(&restart, &dirs[victim]) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not restart on port {dead_port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    servers[victim] = started;

    // 8. The proxy reconnects by itself: a read of one of the victim's
    // keys gets a value again, within a bound.
    let probe = live_idx
        .iter()
        .copied()
        .find(|&i| owner[i] == Some(victim))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let get = vec![vec![b"GET".to_vec(), entries[probe].key.clone()]];
        let r = conn.pipeline_lossy(&get);
        match r.first() {
            Some(v @ Value::Bulk(Some(_))) => {
                entries[probe].check(v, "first read after the restart");
                break;
            }
            Some(_) => {}
            None => conn = Conn::new(proxy.port),
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not reconnect to the restarted server; its log:\n{}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // 9. Nothing acknowledged was lost, through the proxy and directly.
    check_all(&mut conn, &entries, "after kill -9 and restart");
    let after = owners(&servers, &entries, tag_entries.len());
    for (i, (a, b)) in owner.iter().zip(&after).enumerate() {
        if entries[i].live() {
            assert_eq!(a, b, "key {i} changed servers");
        }
    }
}
