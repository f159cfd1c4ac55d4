//! The Redis protocol on the same port, against the real binary: raw RESP2
//! and RESP3 exchanges compared byte for byte with what Redis 7 answers,
//! protocol detection, limits, both protocols sharing one keyspace.

mod common;

use common::resp::{cmd, reply};
use common::{lossy, Client, Server};
use std::io::{Read, Write};
use std::time::Duration;

/// A RESP client over the test client.
struct Resp {
    c: Client,
    pending: Vec<u8>,
}

impl Resp {
    fn new(srv: &Server) -> Resp {
        Resp {
            c: srv.client(),
            pending: Vec::new(),
        }
    }

    /// Sends a command given as words and returns the raw reply.
    fn call(&mut self, words: &[&str]) -> Vec<u8> {
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        self.call_bytes(&args)
    }

    fn call_bytes(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.c.send(&cmd(args));
        reply(&mut self.c, &mut self.pending)
    }

    /// Sends and checks the reply byte for byte.
    fn check(&mut self, words: &[&str], expected: &[u8]) {
        let got = self.call(words);
        assert_eq!(lossy(&got), lossy(expected), "reply to {words:?}");
    }
}

#[test]
fn hello_switches_protocol_and_null_shapes() {
    let srv = Server::start(&[]);
    let mut r = Resp::new(&srv);
    r.check(&["GET", "missing"], b"$-1\r\n");
    r.check(&["PING"], b"+PONG\r\n");
    r.check(
        &["HELLO", "4"],
        b"-NOPROTO unsupported protocol version\r\n",
    );
    r.check(
        &["HELLO", "1"],
        b"-NOPROTO unsupported protocol version\r\n",
    );
    r.check(
        &["HELLO", "x"],
        b"-ERR Protocol version is not an integer or out of range\r\n",
    );
    r.check(
        &["HELLO", "3", "FOO"],
        b"-ERR Syntax error in HELLO option 'FOO'\r\n",
    );
    let h = r.call(&["HELLO", "3"]);
    let h = lossy(&h);
    assert!(h.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.4\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:"), "{h}");
    assert!(h.ends_with("$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"), "{h}");
    r.check(&["GET", "missing"], b"_\r\n");
    r.check(&["MGET", "missing", "x"], b"*2\r\n_\r\n_\r\n");
    r.check(
        &["CONFIG", "GET", "databases"],
        b"%1\r\n$9\r\ndatabases\r\n$1\r\n1\r\n",
    );
    r.check(&["CONFIG", "GET", "nosuch"], b"%0\r\n");
    let info = r.call(&["INFO", "persistence"]);
    assert!(info.starts_with(b"="), "{:?}", lossy(&info));
    assert!(lossy(&info).contains("loading:0\r\n"));
    // Back to RESP2.
    let h = r.call(&["HELLO", "2"]);
    assert!(h.starts_with(b"*14\r\n$6\r\nserver\r\n"), "{:?}", lossy(&h));
    assert!(lossy(&h).contains("$5\r\nproto\r\n:2\r\n"));
    r.check(&["GET", "missing"], b"$-1\r\n");
    r.check(
        &["CONFIG", "GET", "databases"],
        b"*2\r\n$9\r\ndatabases\r\n$1\r\n1\r\n",
    );
    r.check(
        &["HELLO", "3", "AUTH", "bob", "pw"],
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    let h = r.call(&["hello", "3", "auth", "default", "pw", "setname", "me"]);
    assert!(h.starts_with(b"%7\r\n"));
    r.check(&["CLIENT", "GETNAME"], b"$2\r\nme\r\n");
}

#[test]
fn redis_error_texts() {
    let srv = Server::start(&[]);
    let mut r = Resp::new(&srv);
    r.check(
        &["FOO", "a", "b"],
        b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n",
    );
    r.check(
        &["nosuch"],
        b"-ERR unknown command 'nosuch', with args beginning with: \r\n",
    );
    r.check(
        &["get"],
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    r.check(
        &["GET", "a", "b"],
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    r.check(&["SET", "k", "v", "BOGUS"], b"-ERR syntax error\r\n");
    r.check(&["SET", "k", "v", "NX", "XX"], b"-ERR syntax error\r\n");
    let ex = r.call(&["SET", "k", "v", "EX", "10"]);
    assert!(ex.starts_with(b"-ERR EX, PX, EXAT, PXAT and KEEPTTL are not supported"));
    r.check(&["GET", "k"], b"$-1\r\n");
    r.check(&["SELECT", "0"], b"+OK\r\n");
    r.check(&["SELECT", "1"], b"-ERR DB index is out of range\r\n");
    r.check(
        &["CLIENT", "NOPE"],
        b"-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n",
    );
    r.check(
        &["client", "maint_notifications", "on"],
        b"-ERR unknown subcommand 'maint_notifications'. Try CLIENT HELP.\r\n",
    );
    r.check(&["CLIENT", "SETINFO", "LIB-NAME", "x"], b"+OK\r\n");
    r.check(&["EXEC"], b"-ERR EXEC without MULTI\r\n");
    r.check(&["DISCARD"], b"-ERR DISCARD without MULTI\r\n");
    r.check(&["LATENCY", "LATEST"], b"*0\r\n");
    r.check(&["SLOWLOG", "LEN"], b":0\r\n");
    r.check(&["ECHO", "a\r\nb"], b"$4\r\na\r\nb\r\n");
    r.check(&["PING", "hi"], b"$2\r\nhi\r\n");
}

#[test]
fn string_commands() {
    let srv = Server::start(&[]);
    let mut r = Resp::new(&srv);
    r.check(&["SET", "k", "v1"], b"+OK\r\n");
    r.check(&["SET", "k", "v2", "NX"], b"$-1\r\n");
    r.check(&["SET", "k", "v2", "XX", "GET"], b"$2\r\nv1\r\n");
    r.check(&["SET", "new", "x", "XX"], b"$-1\r\n");
    r.check(&["SET", "new", "x", "nx"], b"+OK\r\n");
    r.check(&["GET", "k"], b"$2\r\nv2\r\n");
    r.check(&["SETNX", "k", "z"], b":0\r\n");
    r.check(&["SETNX", "k2", "z"], b":1\r\n");
    r.check(&["GETSET", "k2", "y"], b"$1\r\nz\r\n");
    r.check(&["GETDEL", "k2"], b"$1\r\ny\r\n");
    r.check(&["GETDEL", "k2"], b"$-1\r\n");
    r.check(&["APPEND", "ap", "ab"], b":2\r\n");
    r.check(&["APPEND", "ap", "cde"], b":5\r\n");
    r.check(&["STRLEN", "ap"], b":5\r\n");
    r.check(&["STRLEN", "nope"], b":0\r\n");
    r.check(&["MSET", "a", "1", "b", "2"], b"+OK\r\n");
    r.check(
        &["MSET", "a", "1", "b"],
        b"-ERR wrong number of arguments for 'mset' command\r\n",
    );
    r.check(
        &["MGET", "a", "nope", "b"],
        b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n",
    );
    r.check(&["MSETNX", "a", "9", "c", "3"], b":0\r\n");
    r.check(&["GET", "c"], b"$-1\r\n");
    r.check(&["MSETNX", "c", "3", "d", "4"], b":1\r\n");
    r.check(&["EXISTS", "a", "a", "nope", "c"], b":3\r\n");
    r.check(&["DEL", "a", "nope", "b"], b":2\r\n");
    r.check(&["UNLINK", "c"], b":1\r\n");
    r.check(&["DEL", "c"], b":0\r\n");
    r.check(&["TYPE", "d"], b"+string\r\n");
    r.check(&["TYPE", "c"], b"+none\r\n");
    r.check(&["TTL", "d"], b":-1\r\n");
    r.check(&["PTTL", "c"], b":-2\r\n");
    // Binary keys and values, `\r` included.
    let bin: &[u8] = b"a\r\nb\x00\xff";
    assert_eq!(r.call_bytes(&[b"SET", b"{tag}\r\n", bin]), b"+OK\r\n");
    let mut want = format!("${}\r\n", bin.len()).into_bytes();
    want.extend_from_slice(bin);
    want.extend_from_slice(b"\r\n");
    assert_eq!(r.call_bytes(&[b"GET", b"{tag}\r\n"]), want);
    // Key limit: a 100 KiB key works, one byte more is refused.
    let key = vec![b'k'; 100 * 1024];
    assert_eq!(r.call_bytes(&[b"SET", &key, b"v"]), b"+OK\r\n");
    let long = vec![b'k'; 100 * 1024 + 1];
    let e = r.call_bytes(&[b"SET", &long, b"v"]);
    assert!(e.starts_with(b"-ERR key too long"), "{:?}", lossy(&e));
}

#[test]
fn multi_exec() {
    let srv = Server::start(&[]);
    let mut r = Resp::new(&srv);
    r.check(&["MULTI"], b"+OK\r\n");
    r.check(&["MULTI"], b"-ERR MULTI calls can not be nested\r\n");
    r.check(&["SET", "t1", "a"], b"+QUEUED\r\n");
    r.check(
        &["INCRBY", "t1", "1"],
        b"-ERR unknown command 'INCRBY', with args beginning with: 't1' '1' \r\n",
    );
    r.check(&["GET", "t1"], b"+QUEUED\r\n");
    r.check(
        &["EXEC"],
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    r.check(&["GET", "t1"], b"$-1\r\n");
    r.check(&["MULTI"], b"+OK\r\n");
    r.check(&["SET", "t1", "a"], b"+QUEUED\r\n");
    r.check(&["SET", "t2", "b", "BOGUS"], b"+QUEUED\r\n");
    r.check(&["GET", "t1"], b"+QUEUED\r\n");
    r.check(&["PING"], b"+QUEUED\r\n");
    r.check(&["DEL", "t1", "zz"], b"+QUEUED\r\n");
    r.check(&["SETNX", "t3", "c"], b"+QUEUED\r\n");
    r.check(
        &["EXEC"],
        b"*6\r\n+OK\r\n-ERR syntax error\r\n$1\r\na\r\n+PONG\r\n:1\r\n:1\r\n",
    );
    r.check(
        &["MGET", "t1", "t2", "t3"],
        b"*3\r\n$-1\r\n$-1\r\n$1\r\nc\r\n",
    );
    r.check(&["MULTI"], b"+OK\r\n");
    r.check(&["SET", "t4", "x"], b"+QUEUED\r\n");
    r.check(&["DISCARD"], b"+OK\r\n");
    r.check(&["GET", "t4"], b"$-1\r\n");
    r.check(&["MULTI"], b"+OK\r\n");
    r.check(&["EXEC"], b"*0\r\n");
    // A key the engine refuses fails only its own command.
    r.check(&["MULTI"], b"+OK\r\n");
    r.check(&["SET", "t5", "v"], b"+QUEUED\r\n");
    r.check(&["GET", ""], b"+QUEUED\r\n");
    r.check(
        &["EXEC"],
        b"*2\r\n+OK\r\n-ERR empty keys are not supported\r\n",
    );
    r.check(&["GET", "t5"], b"$1\r\nv\r\n");
}

#[test]
fn scan_keys_dbsize_flush() {
    let srv = Server::start(&[]);
    let mut r = Resp::new(&srv);
    r.check(&["DBSIZE"], b":0\r\n");
    r.check(&["SCAN", "0"], b"*2\r\n$1\r\n0\r\n*0\r\n");
    r.check(&["KEYS", "*"], b"*0\r\n");
    let n = 500;
    let mut all: Vec<String> = (0..n).map(|i| format!("user:{i:04}")).collect();
    all.push("other".into());
    all.push("usex".into());
    for chunk in all.chunks(50) {
        let mut words = vec!["MSET"];
        for k in chunk {
            words.push(k);
            words.push("v");
        }
        r.check(&words, b"+OK\r\n");
    }
    r.check(&["DBSIZE"], format!(":{}\r\n", all.len()).as_bytes());
    // KEYS with a pattern (literal prefix served as a range).
    let k = r.call(&["KEYS", "user:000?"]);
    assert_eq!(
        lossy(&k),
        (0..10).fold("*10\r\n".to_string(), |s, i| s + &format!(
            "$9\r\nuser:000{i}\r\n"
        ))
    );
    let k = r.call(&["KEYS", "*x"]);
    assert_eq!(k, b"*1\r\n$4\r\nusex\r\n");
    // A full SCAN returns every key at least once.
    for (pattern, count, want) in [
        (None, "7", all.clone()),
        (
            Some("user:01*"),
            "3",
            (100..200).map(|i| format!("user:{i:04}")).collect(),
        ),
        (
            Some("*9"),
            "50",
            all.iter().filter(|k| k.ends_with('9')).cloned().collect(),
        ),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = "0".to_string();
        for round in 0.. {
            assert!(round < 10_000, "scan does not end");
            let mut words = vec!["SCAN", cursor.as_str(), "COUNT", count];
            if let Some(p) = pattern {
                words.push("MATCH");
                words.push(p);
            }
            let got = r.call(&words);
            let (next, keys) = parse_scan(&got);
            seen.extend(keys);
            cursor = next;
            if cursor == "0" {
                break;
            }
            assert!(cursor.parse::<u64>().is_ok());
        }
        let want: std::collections::BTreeSet<String> = want.into_iter().collect();
        assert_eq!(seen, want, "pattern {pattern:?}");
    }
    // A cursor the server never handed out still works: it resumes from
    // the position encoded in it (here: near the start).
    let got = r.call(&["SCAN", "123456789", "COUNT", "1000"]);
    let (next, keys) = parse_scan(&got);
    assert_eq!(next, "0");
    assert!(!keys.is_empty());
    r.check(&["SCAN", "x"], b"-ERR invalid cursor\r\n");
    r.check(&["SCAN", "0", "TYPE", "hash"], b"*2\r\n$1\r\n0\r\n*0\r\n");
    r.check(&["FLUSHDB"], b"+OK\r\n");
    r.check(&["DBSIZE"], b":0\r\n");
    r.check(&["SET", "a", "1"], b"+OK\r\n");
    r.check(&["FLUSHALL"], b"+OK\r\n");
    r.check(&["KEYS", "*"], b"*0\r\n");
}

/// Splits a SCAN reply into its cursor and keys.
fn parse_scan(b: &[u8]) -> (String, Vec<String>) {
    let s = lossy(b);
    let mut lines = s.split("\r\n");
    assert_eq!(lines.next(), Some("*2"));
    lines.next();
    let cursor = lines.next().unwrap().to_string();
    let n: usize = lines.next().unwrap()[1..].parse().unwrap();
    let mut keys = Vec::new();
    for _ in 0..n {
        lines.next();
        keys.push(lines.next().unwrap().to_string());
    }
    (cursor, keys)
}

#[test]
fn info_and_commands() {
    let srv = Server::start(&[]);
    let mut r = Resp::new(&srv);
    r.check(&["SET", "k", "v"], b"+OK\r\n");
    let info = lossy(&r.call(&["INFO"]));
    for field in [
        "# Server\r\n",
        "redis_version:7.2.4\r\n",
        "escabelo_version:",
        "redis_mode:standalone\r\n",
        "connected_clients:",
        "loading:0\r\n",
        "total_commands_processed:",
        "role:master\r\n",
        "# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n",
        "# Escabelo\r\n",
        "sst_count:",
    ] {
        assert!(info.contains(field), "{field} missing in {info}");
    }
    // The keyspace line is exact right after a write.
    r.check(&["SET", "k2", "v"], b"+OK\r\n");
    let ks = lossy(&r.call(&["INFO", "keyspace"]));
    assert!(ks.contains("db0:keys=2,"), "{ks}");
    r.check(&["DEL", "k2"], b":1\r\n");
    let ks = lossy(&r.call(&["INFO", "keyspace"]));
    assert!(ks.contains("db0:keys=1,"), "{ks}");
    let only = lossy(&r.call(&["info", "server"]));
    assert!(only.contains("# Server") && !only.contains("# Keyspace"));
    let count = lossy(&r.call(&["COMMAND", "COUNT"]));
    assert!(count.starts_with(':'));
    r.check(&["COMMAND", "DOCS"], b"*0\r\n");
    let all = r.call(&["COMMAND"]);
    assert!(all.starts_with(b"*"));
    let cfg = lossy(&r.call(&["CONFIG", "GET", "save", "appendonly"]));
    assert_eq!(
        cfg,
        "*4\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n$4\r\nsave\r\n$0\r\n\r\n"
    );
    let id = lossy(&r.call(&["CLIENT", "ID"]));
    assert!(id.starts_with(':'));
    r.check(&["CLIENT", "GETNAME"], b"$-1\r\n");
    r.check(
        &["CLIENT", "SETNAME", "a b"],
        b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
    );
    r.check(&["CLIENT", "SETNAME", "app"], b"+OK\r\n");
    r.check(&["CLIENT", "GETNAME"], b"$3\r\napp\r\n");
    r.check(&["QUIT"], b"+OK\r\n");
    assert!(r.c.is_closed());
}

#[test]
fn protocol_errors_close_without_buffering() {
    let srv = Server::start(&["--max-value-size", "1MiB"]);
    // A bulk over the value limit: refused from its header.
    let mut c = srv.client();
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$999999999\r\n");
    c.expect(b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(c.is_closed());
    for (input, want) in [
        (
            &b"*x\r\n"[..],
            &b"-ERR Protocol error: invalid multibulk length\r\n"[..],
        ),
        (
            b"*1\r\n:5\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"PING\r\nSET k \"abc\r\n",
            b"+PONG\r\n-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ] {
        let mut c = srv.client();
        c.send(input);
        c.expect(want);
        assert!(c.is_closed(), "{:?}", lossy(input));
    }
    // A value between the value limit and the bulk limit: an error reply,
    // the connection stays usable.
    let srv = Server::start(&["--max-value-size", "1KiB"]);
    let mut r = Resp::new(&srv);
    let v = vec![b'v'; 2000];
    let e = r.call_bytes(&[b"SET", b"k", &v]);
    assert!(e.starts_with(b"-ERR value too long"), "{:?}", lossy(&e));
    r.check(&["PING"], b"+PONG\r\n");
}

#[test]
fn detection_on_the_same_port() {
    let srv = Server::start(&[]);
    // Inline commands.
    let mut c = srv.client();
    c.roundtrip(b"PING\r\n", b"+PONG\r\n");
    c.roundtrip(b"set a 1\r\nget a\n", b"+OK\r\n$1\r\n1\r\n");
    c.roundtrip(b"keys *\r\n", b"*1\r\n$1\r\na\r\n");
    // `keys *` first is Redis; `keys` alone is the text protocol.
    let mut c = srv.client();
    c.roundtrip(b"keys *\r\n", b"*1\r\n$1\r\na\r\n");
    let mut c = srv.client();
    c.roundtrip(b"keys\r\n", b"a\r");
    let mut c = srv.client();
    c.roundtrip(b"KEYS\r", b"a\r");
    // A text request ending in `\r` alone is answered at once.
    let mut c = srv.client();
    c.roundtrip(b"read a\r", b"1\r");
    c.roundtrip(b"read a\r\n", b"1\r");
    // A Redis word ending in `\r` with nothing after it is text after a
    // short wait.
    let mut c = srv.client();
    c.roundtrip(b"PING\r", b"error: unknown command: PING\r");
    let mut c = srv.client();
    c.roundtrip(b"foo bar\r", b"error: unknown command: foo\r");
    let mut c = srv.client();
    c.roundtrip(b"\x01zz\r", b"error: unknown command: ?zz\r");
    // Split first bytes.
    let mut c = srv.client();
    c.send(b"PI");
    std::thread::sleep(Duration::from_millis(50));
    c.roundtrip(b"NG\r\n", b"+PONG\r\n");
    let mut c = srv.client();
    c.send(b"*1\r\n$4\r\nPI");
    std::thread::sleep(Duration::from_millis(50));
    c.roundtrip(b"NG\r\n", b"+PONG\r\n");
}

#[test]
fn text_protocol_never_broken_by_resp_data() {
    let srv = Server::start(&[]);
    let mut r = Resp::new(&srv);
    r.check(&["SET", "t:plain", "hello"], b"+OK\r\n");
    assert_eq!(r.call_bytes(&[b"SET", b"t:cr", b"a\rb"]), b"+OK\r\n");
    assert_eq!(r.call_bytes(&[b"SET", b"{tag} k", b"x"]), b"+OK\r\n");
    assert_eq!(r.call_bytes(&[b"SET", b"t:\rkey", b"y"]), b"+OK\r\n");
    let mut c = srv.client();
    c.roundtrip(b"read t:plain\r", b"hello\r");
    c.roundtrip(
        b"read t:cr\r",
        b"error: value not representable in the text protocol\r",
    );
    // keys lists only keys the text protocol can address.
    c.roundtrip(b"keys\r", b"t:cr\rt:plain\r");
    // reads leaves out values it cannot frame.
    c.roundtrip(b"reads t:\r", b"y\rhello\r");
    // Text writes are seen through RESP.
    c.roundtrip(b"write from:text|v a|b\r", b"success\r");
    r.check(&["GET", "from:text"], b"$5\r\nv a|b\r\n");
    c.roundtrip(b"delete t:cr\r", b"success\r");
    r.check(&["EXISTS", "t:cr"], b":0\r\n");
}

/// The value cache remembers whether a value holds a `\r` (the text
/// protocol cannot frame one). A hot key overwritten through RESP, in turns
/// with and without a `\r`, short and long (sent from its own buffer), and
/// pushed out of the memtable each time so the reads go through the cache,
/// must always be answered as its newest value says.
#[test]
fn text_reads_of_cached_values_follow_each_overwrite_through_resp() {
    let srv = Server::start(&["--memtable-size", "64KiB"]);
    let mut r = Resp::new(&srv);
    let mut c = srv.client();
    let stat = |c: &mut Client, name: &str| -> u64 {
        let st = c.status();
        let v = st.iter().find(|(k, _)| k == name);
        v.map(|(_, v)| v.parse().unwrap_or(0)).unwrap_or(0)
    };
    let filler = vec![b'f'; 2000];
    let hits_before = stat(&mut c, "cache_hits");
    for round in 0..12u8 {
        let n = if round % 4 >= 2 { 5000 } else { 100 };
        let mut v = vec![b'a' + round; n];
        let has_cr = round % 2 == 1;
        if has_cr {
            v[n / 2] = b'\r';
        }
        assert_eq!(r.call_bytes(&[b"SET", b"hot", &v]), b"+OK\r\n");
        for i in 0..64 {
            let k = format!("fill:{i}");
            assert_eq!(r.call_bytes(&[b"SET", k.as_bytes(), &filler]), b"+OK\r\n");
        }
        for _ in 0..500 {
            if stat(&mut c, "immutable_memtable_size") == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let expected = if has_cr {
            b"error: value not representable in the text protocol\r".to_vec()
        } else {
            let mut e = v.clone();
            e.push(b'\r');
            e
        };
        for _ in 0..3 {
            c.roundtrip(b"read hot\r", &expected);
        }
        r.check(&["STRLEN", "hot"], format!(":{n}\r\n").as_bytes());
    }
    let hits = stat(&mut c, "cache_hits") - hits_before;
    assert!(
        hits >= 24,
        "only {hits} reads were served by the value cache"
    );
}

/// A memtable version remembers whether its value holds a `\r`, worked
/// out by the first read. A key overwritten in turns with and without a
/// `\r` (through RESP, and through the text protocol, which cannot write
/// one), short and long, and read from the memtable between writes, must
/// always be answered as its newest version says, never as an older one
/// did.
#[test]
fn text_reads_of_memtable_values_follow_each_overwrite() {
    let srv = Server::start(&[]);
    let mut r = Resp::new(&srv);
    let mut c = srv.client();
    let not_representable = b"error: value not representable in the text protocol\r".to_vec();
    for round in 0..16u8 {
        let n = if round % 4 >= 2 { 5000 } else { 100 };
        let mut v = vec![b'a' + round; n];
        let expected = match round % 3 {
            0 => {
                v[n / 2] = b'\r';
                assert_eq!(r.call_bytes(&[b"SET", b"hot", &v]), b"+OK\r\n");
                not_representable.clone()
            }
            1 => {
                assert_eq!(r.call_bytes(&[b"SET", b"hot", &v]), b"+OK\r\n");
                [&v[..], b"\r"].concat()
            }
            _ => {
                let mut req = b"write hot|".to_vec();
                req.extend_from_slice(&v);
                req.push(b'\r');
                c.roundtrip(&req, b"success\r");
                [&v[..], b"\r"].concat()
            }
        };
        for _ in 0..3 {
            c.roundtrip(b"read hot\r", &expected);
        }
        r.check(&["STRLEN", "hot"], format!(":{n}\r\n").as_bytes());
    }
    let st = c.status();
    let hits = st.iter().find(|(k, _)| k == "cache_hits");
    assert_eq!(
        hits.map(|(_, v)| v.as_str()),
        Some("0"),
        "the reads were to be served by the memtable"
    );
}

#[test]
fn pipelined_resp_keeps_order() {
    let srv = Server::start(&[]);
    let mut c = srv.client();
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..2000 {
        req.extend_from_slice(&cmd(&[b"SET", b"p", format!("{i}").as_bytes()]));
        req.extend_from_slice(&cmd(&[b"GET", b"p"]));
        want.extend_from_slice(b"+OK\r\n");
        want.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    req.extend_from_slice(&cmd(&[b"DBSIZE"]));
    want.extend_from_slice(b":1\r\n");
    c.stream.write_all(&req).unwrap();
    c.expect(&want);
}

/// MSET and the writes of one EXEC are all or none after `kill -9`: pairs
/// of keys always written together hold the same value after a restart.
#[test]
fn mset_and_exec_are_all_or_none_after_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut srv = Server::start_in(&dir, &[]);
    let port = srv.port;
    let writer = std::thread::spawn(move || {
        let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return;
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        let mut s = s;
        let mut drain = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while matches!(drain.read(&mut buf), Ok(n) if n > 0) {}
        });
        for i in 0u64.. {
            let j = (i % 20).to_string();
            let v = format!("{i}-{}", "x".repeat((i % 7) as usize * 300));
            let mut req = cmd(&[
                b"MSET",
                format!("x:{j}").as_bytes(),
                v.as_bytes(),
                format!("y:{j}").as_bytes(),
                v.as_bytes(),
            ]);
            req.extend_from_slice(&cmd(&[b"MULTI"]));
            req.extend_from_slice(&cmd(&[b"SET", format!("p:{j}").as_bytes(), v.as_bytes()]));
            req.extend_from_slice(&cmd(&[b"SET", format!("q:{j}").as_bytes(), v.as_bytes()]));
            req.extend_from_slice(&cmd(&[b"EXEC"]));
            if s.write_all(&req).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    srv.kill9();
    let _ = writer.join();
    let srv = Server::start_in(&dir, &[]);
    let mut r = Resp::new(&srv);
    let mut checked = 0;
    for j in 0..20 {
        for (a, b) in [("x", "y"), ("p", "q")] {
            let va = r.call(&["GET", &format!("{a}:{j}")]);
            let vb = r.call(&["GET", &format!("{b}:{j}")]);
            assert_eq!(lossy(&va), lossy(&vb), "{a}:{j} and {b}:{j} differ");
            checked += (va != b"$-1\r\n") as usize;
        }
    }
    assert!(checked > 0, "nothing was written before the kill");
}
