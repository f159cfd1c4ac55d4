//! Tests of the `oplog` tool: the operations still held in the log.

use bytes::Bytes;
use escabelo_engine::tools::{oplog, write_oplog, OpEntry, OpKind, OplogEvent, OplogOptions};
use escabelo_engine::{Db, Error, Options, Txn, TxnAction, TxnOp};
use std::path::Path;
use std::time::Duration;

/// Entries and notes of one offline run.
fn run(opts: &Options) -> escabelo_engine::Result<(Vec<OpEntry>, Vec<String>)> {
    let mut entries = Vec::new();
    let mut notes = Vec::new();
    oplog(opts, &OplogOptions::default(), &mut |ev| {
        match ev {
            OplogEvent::Entry(e) => entries.push(e),
            OplogEvent::Note(n) => notes.push(n),
            OplogEvent::Table(t) => panic!("tables were not asked for: {t:?}"),
            OplogEvent::Polled => {}
        }
        true
    })?;
    Ok((entries, notes))
}

fn put(key: &[u8], value: &[u8]) -> TxnOp {
    TxnOp::new(
        Bytes::copy_from_slice(key),
        TxnAction::Put(Bytes::copy_from_slice(value)),
    )
}

/// Writes puts, a delete, a three-entry transaction and a key with
/// unprintable bytes, then closes.
fn write_sample(dir: &Path) -> Options {
    let opts = Options::new(dir);
    let db = Db::open(opts.clone()).unwrap();
    db.put(b"a", b"1").unwrap();
    db.put(b"b", b"22").unwrap();
    assert!(db.delete(b"a").unwrap());
    db.txn(Txn {
        ops: vec![
            put(b"t1", b"xxx"),
            put(b"t2", b"yyyy"),
            TxnOp::new(Bytes::from_static(b"b"), TxnAction::Delete),
        ],
        all_or_nothing: true,
    })
    .unwrap();
    db.put(b"odd key\x00\xff\\", b"").unwrap();
    db.close().unwrap();
    opts
}

/// (op, key, len, txn) of each entry.
type Brief = (OpKind, Vec<u8>, Option<u64>, Option<(u32, u32)>);

fn brief(entries: &[OpEntry]) -> Vec<Brief> {
    entries
        .iter()
        .map(|e| (e.op, e.key.to_vec(), e.len, e.txn))
        .collect()
}

#[test]
fn oplog_lists_puts_deletes_and_transactions_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = write_sample(tmp.path());
    let (entries, notes) = run(&opts).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    use OpKind::{Delete, Write};
    assert_eq!(
        brief(&entries),
        vec![
            (Write, b"a".to_vec(), Some(1), None),
            (Write, b"b".to_vec(), Some(2), None),
            (Delete, b"a".to_vec(), None, None),
            (Write, b"t1".to_vec(), Some(3), Some((1, 3))),
            (Write, b"t2".to_vec(), Some(4), Some((2, 3))),
            (Delete, b"b".to_vec(), None, Some((3, 3))),
            (Write, b"odd key\x00\xff\\".to_vec(), Some(0), None),
        ]
    );
    // seq counts entries from 1; one segment; offsets grow by record and
    // the transaction's entries share one offset.
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<u64>>());
    assert!(entries.iter().all(|e| e.log == entries[0].log));
    assert_eq!(entries[0].offset, 0);
    assert!(entries[0].offset < entries[1].offset);
    assert!(entries[1].offset < entries[2].offset);
    assert!(entries[2].offset < entries[3].offset);
    assert_eq!(entries[3].offset, entries[4].offset);
    assert_eq!(entries[4].offset, entries[5].offset);
    assert!(entries[5].offset < entries[6].offset);

    // The text form escapes the key onto one line.
    let mut out = Vec::new();
    let summary = write_oplog(&opts, &OplogOptions::default(), false, &mut out).unwrap();
    assert_eq!(
        (summary.entries, summary.records, summary.segments),
        (7, 5, 1)
    );
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(
        lines[3].ends_with("op=write key=t1 len=3 txn=1/3"),
        "{text}"
    );
    assert!(lines[5].contains("op=delete key=b len=- txn=3/3"), "{text}");
    assert!(
        lines[6].ends_with("op=write key=odd\\x20key\\x00\\xff\\\\ len=0"),
        "{text}"
    );
    assert!(lines[7].starts_with("summary: 7 entries in 5 records, 1 log segments"));
}

#[test]
fn oplog_refuses_a_locked_directory_unless_following() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options::new(tmp.path());
    let db = Db::open(opts.clone()).unwrap();
    db.put(b"k1", b"v1").unwrap();
    match run(&opts) {
        Err(Error::Locked(_)) => {}
        other => panic!("expected Locked, got {other:?}"),
    }

    // Follow mode only reads: it lists what is there, then what is
    // appended between two polls, each entry once.
    let lo = OplogOptions {
        follow: true,
        poll_interval: Duration::from_millis(10),
        tables: false,
    };
    let mut keys = Vec::new();
    let mut polls = 0;
    oplog(&opts, &lo, &mut |ev| {
        match ev {
            OplogEvent::Entry(e) => keys.push((e.seq, e.key.to_vec())),
            OplogEvent::Note(n) => panic!("unexpected note {n}"),
            OplogEvent::Table(t) => panic!("unexpected table entry {t:?}"),
            OplogEvent::Polled => {
                polls += 1;
                if polls == 1 {
                    db.put(b"k2", b"v2").unwrap();
                    db.delete(b"k1").unwrap();
                    db.sync().unwrap();
                }
                return polls < 3;
            }
        }
        true
    })
    .unwrap();
    assert_eq!(
        keys,
        vec![
            (1, b"k1".to_vec()),
            (2, b"k2".to_vec()),
            (3, b"k1".to_vec())
        ]
    );
    db.close().unwrap();
    // Nothing was modified: the offline listing sees the same.
    let (entries, _) = run(&opts).unwrap();
    assert_eq!(entries.len(), 3);
}

fn only_log(dir: &Path) -> std::path::PathBuf {
    let logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs[0].clone()
}

#[test]
fn oplog_notes_a_torn_tail_and_fails_on_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = write_sample(tmp.path());
    let log = only_log(tmp.path());
    let bytes = std::fs::read(&log).unwrap();

    // Cut the last record short (and the end markers with it): a crash.
    let cut = bytes.len() - escabelo_engine::wal::END_MARKERS_LEN - 3;
    std::fs::write(&log, &bytes[..cut]).unwrap();
    let (entries, notes) = run(&opts).unwrap();
    assert_eq!(entries.len(), 6, "the torn record is not listed");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("torn tail"), "{notes:?}");

    // Damage the first record of a cleanly closed log: corruption.
    let mut damaged = bytes.clone();
    damaged[14] ^= 0x40;
    std::fs::write(&log, &damaged).unwrap();
    match run(&opts) {
        Err(Error::Corruption { offset: 0, .. }) => {}
        other => panic!("expected corruption at offset 0, got {other:?}"),
    }
}

#[test]
fn oplog_lists_level0_tables_before_the_log_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = Options::new(tmp.path());
    // Both flushed tables stay at level 0.
    opts.l0_compaction_trigger = 8;
    let db = Db::open(opts.clone()).unwrap();
    db.put(b"a", b"1").unwrap();
    db.put(b"b", &[b'v'; 3000]).unwrap();
    db.put(b"c", b"3").unwrap();
    db.flush().unwrap();
    assert!(db.delete(b"c").unwrap());
    db.put(b"a", b"11").unwrap();
    db.flush().unwrap();
    db.put(b"d", b"4444").unwrap();
    db.close().unwrap();

    // Without tables: only what the log still holds.
    let (entries, _) = run(&opts).unwrap();
    assert_eq!(
        brief(&entries),
        vec![(OpKind::Write, b"d".to_vec(), Some(4), None)]
    );
    assert_eq!(entries[0].seq, 1);

    let lo = OplogOptions {
        tables: true,
        ..OplogOptions::default()
    };
    let mut events = Vec::new();
    oplog(&opts, &lo, &mut |ev| {
        events.push(ev);
        true
    })
    .unwrap();
    let tables: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            OplogEvent::Table(t) => Some((t.op, t.key.to_vec(), t.len, t.blob.is_some())),
            _ => None,
        })
        .collect();
    // Oldest table first; in a table one entry per key, in key order.
    assert_eq!(
        tables,
        vec![
            (OpKind::Write, b"a".to_vec(), Some(1), false),
            (OpKind::Write, b"b".to_vec(), tables[1].2, true),
            (OpKind::Write, b"c".to_vec(), Some(1), false),
            (OpKind::Write, b"a".to_vec(), Some(2), false),
            (OpKind::Delete, b"c".to_vec(), None, false),
        ]
    );
    assert!(tables[1].2.is_some_and(|l| l >= 3000));
    // Tables come first, then the log.
    assert!(matches!(events.last(), Some(OplogEvent::Entry(e)) if &e.key[..] == b"d"));
    let mut out = Vec::new();
    write_oplog(&opts, &lo, false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("table=") && text.contains(" level=0 op=delete key=c len=-\n"),
        "{text}"
    );
}
