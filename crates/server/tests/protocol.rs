//! The text protocol of PROTOCOL.md, byte for byte, against the real binary.

mod common;

use common::{metric, parse_status, Server};

/// Every example of PROTOCOL.md section 5, in order, on one server.
#[test]
fn section5_examples() {
    let srv = Server::start(&[]);
    let mut c = srv.client();

    // keys on an empty database
    c.roundtrip(b"keys\r", b"\r");

    c.roundtrip(b"write user:1|alice\r", b"success\r");
    c.roundtrip(b"read user:1\r", b"alice\r");
    c.roundtrip(b"read nope\r", b"error\r");
    c.roundtrip(b"write user:2|bob\r", b"success\r");
    c.roundtrip(b"write other.x-y|z\r", b"success\r");
    c.roundtrip(b"keys\r", b"other.x-y\ruser:1\ruser:2\r");
    c.roundtrip(b"delete user:2\r", b"success\r");
    c.roundtrip(b"delete user:2\r", b"error\r");
    // So far: 3 writes; reads: user:1, nope -> 2. Three more reads make 5.
    c.roundtrip(b"read user:1\r", b"alice\r");
    c.roundtrip(b"read user:2\r", b"error\r");
    c.roundtrip(b"read other.x-y\r", b"z\r");

    c.send(b"write p:1|one\rread p:1\rstatus\r");
    let r = c.read_crs(3);
    let prefix = b"success\rone\rwell going our operation\nwrites=4 reads=6 deletes=2 flushes=";
    assert!(
        r.starts_with(prefix),
        "got {:?}",
        String::from_utf8_lossy(&r)
    );
    let m = parse_status(&r[b"success\rone\r".len()..]);
    let names: Vec<&str> = m.iter().take(7).map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "writes",
            "reads",
            "deletes",
            "flushes",
            "memtable_size",
            "sst_count",
            "wal_size"
        ]
    );
    assert_eq!(metric(&m, "deletes"), 2);
    c.roundtrip(b"keys\r", b"other.x-y\rp:1\ruser:1\r");

    c.roundtrip(
        b"write nopipe\r",
        b"error: write format: write <key>|<value>\r",
    );
    c.roundtrip(b"write bad!key|v\r", b"error: invalid key format\r");
    c.roundtrip(b"foo bar\r", b"error: unknown command: foo\r");
    let r = c.request(b"STATUS\r", 1);
    assert!(r.starts_with(b"well going our operation\nwrites=4 reads=6 deletes=2 "));
    c.roundtrip(b"read   user:1\r", b"alice\r");
}

/// Every row of the table in PROTOCOL.md section 3.
#[test]
fn table_rows() {
    let srv = Server::start(&[]);
    let mut c = srv.client();
    // write
    c.roundtrip(b"write a:1|x\r", b"success\r");
    c.roundtrip(b"write a:1|y\r", b"success\r");
    c.roundtrip(b"write a!|y\r", b"error: invalid key format\r");
    // read
    c.roundtrip(b"read a:1\r", b"y\r");
    c.roundtrip(b"read a:2\r", b"error\r");
    // delete
    c.roundtrip(b"delete a:1\r", b"success\r");
    c.roundtrip(b"read a:1\r", b"error\r");
    c.roundtrip(b"delete a:1\r", b"error\r");
    // status
    let r = c.request(b"status\r", 1);
    assert!(r.starts_with(b"well going our operation\nwrites=2 reads=3 deletes=2 "));
    // keys
    c.roundtrip(b"keys\r", b"\r");
    c.roundtrip(
        b"write b|2\rwrite a|1\rwrite c|3\r",
        b"success\rsuccess\rsuccess\r",
    );
    c.roundtrip(b"keys\r", b"a\rb\rc\r");
    // reads
    c.roundtrip(
        b"write pre:b|vb\rwrite pre:a|va\rwrite prf|no\r",
        b"success\rsuccess\rsuccess\r",
    );
    c.roundtrip(b"reads pre:\r", b"va\rvb\r");
    c.roundtrip(b"reads zzz\r", b"\r");
    c.roundtrip(b"reads\r", b"error: reads format: reads <prefix>\r");
    c.roundtrip(b"reads bad!\r", b"error: invalid key format\r");
    // anything else
    c.roundtrip(b"frobnicate\r", b"error: unknown command: frobnicate\r");
    c.roundtrip(b"read\r", b"error: read format: read <key>\r");
    c.roundtrip(b"delete\r", b"error: delete format: delete <key>\r");
}

#[test]
fn framing_rules() {
    let srv = Server::start(&[]);
    let mut c = srv.client();
    // Empty commands get no reply; \r\n is accepted.
    c.roundtrip(b"\r\r\rwrite k|v\r\n\r\nread k\r\n", b"success\rv\r");
    // Case-insensitive command word, several spaces.
    c.roundtrip(b"READ k\rRead    k   \rwRiTe  k2|w\r", b"v\rv\rsuccess\r");
    // Nothing is executed before its \r.
    c.send(b"write late|1");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut c2 = srv.client();
    c2.roundtrip(b"read late\r", b"error\r");
    c.send(b"\r");
    c.expect(b"success\r");
    c2.roundtrip(b"read late\r", b"1\r");
}

#[test]
fn values_are_kept_byte_for_byte() {
    let srv = Server::start(&[]);
    let mut c = srv.client();
    let values: &[&[u8]] = &[
        b"",
        b"  leading and trailing  ",
        b"a|b|c",
        b"tab\there\nnewline",
        "ünïcødé ✓ 日本".as_bytes(),
        b"\x00\x01\xff binary",
    ];
    for (i, v) in values.iter().enumerate() {
        let mut req = format!("write v:{i}|").into_bytes();
        req.extend_from_slice(v);
        req.push(b'\r');
        c.roundtrip(&req, b"success\r");
        let mut expected = v.to_vec();
        expected.push(b'\r');
        c.roundtrip(format!("read v:{i}\r").as_bytes(), &expected);
    }
    // Keys with every allowed character class.
    c.roundtrip(b"write key_batch1_0|x\r", b"success\r");
    c.roundtrip(b"write AZaz09.-:_|y\r", b"success\r");
    c.roundtrip(b"read AZaz09.-:_\r", b"y\r");
    c.roundtrip(b"read key_batch1_0\r", b"x\r");
}

#[test]
fn large_key_and_value_within_limits() {
    let srv = Server::start(&[]);
    let mut c = srv.client();
    let key = "k".repeat(100 * 1024);
    let value = vec![b'v'; 1024 * 1024];
    let mut req = format!("write {key}|").into_bytes();
    req.extend_from_slice(&value);
    req.push(b'\r');
    c.roundtrip(&req, b"success\r");
    c.send(format!("read {key}\r").as_bytes());
    let r = c.read_crs(1);
    assert_eq!(r.len(), value.len() + 1);
    assert_eq!(&r[..value.len()], &value[..]);
}

/// Regression: pipelined `write k|i` / `read k` pairs. Writes used to be
/// submitted as soon as they were parsed, even while an earlier read was
/// still waiting in the queue, so a read could see a write sent after it
/// (it answered a later value).
#[test]
fn pipelined_read_sees_no_later_write() {
    let srv = Server::start(&[]);
    let mut c = srv.client();
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..2000 {
        req.extend_from_slice(format!("write p|{i}\rread p\r").as_bytes());
        want.extend_from_slice(format!("success\r{i}\r").as_bytes());
    }
    c.send(&req);
    let got = c.read_crs(4000);
    assert!(
        got == want,
        "a read saw a later write: {}",
        common::lossy(&got[..200.min(got.len())])
    );
}
