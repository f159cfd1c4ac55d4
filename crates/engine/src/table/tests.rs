//! Tests of the table format: round trips, lookups, seeks, the Bloom
//! filter, corruption detection and salvage.

use super::footer::FOOTER_LEN;
use super::*;
use crate::error::Error;
use crate::fs::{FsRef, RealFs};
use crate::types::{BlobRef, Value};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fs() -> FsRef {
    Arc::new(RealFs)
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

fn value_for(i: u64) -> Value {
    match i % 7 {
        0 => Value::Tombstone,
        1 => Value::Blob(BlobRef {
            file: i,
            offset: i * 100,
            len: (i as u32) + 10,
            checksum: i as u32 ^ 0xabcd,
        }),
        _ => Value::Inline(Bytes::from(
            format!("value-{i}-").repeat((i % 5) as usize + 1),
        )),
    }
}

fn build(path: &Path, entries: &[(Vec<u8>, Value)]) -> TableMeta {
    let fs = fs();
    let mut b = TableBuilder::create(&fs, path, 7).unwrap();
    b.note_seqs(SeqRange { min: 3, max: 40 });
    for (k, v) in entries {
        b.add(k, v).unwrap();
    }
    let est = b.estimated_size();
    let meta = b.finish().unwrap();
    let diff = est.abs_diff(meta.file_size);
    assert!(
        diff <= 64 + meta.file_size / 50,
        "estimate {est} vs {}",
        meta.file_size
    );
    meta
}

fn simple_entries(n: u64) -> Vec<(Vec<u8>, Value)> {
    (0..n).map(|i| (key(i * 2), value_for(i))).collect()
}

fn collect(t: &Arc<Table>) -> Vec<(Bytes, Value)> {
    t.iter().map(|r| r.unwrap()).collect()
}

#[test]
fn round_trip_with_big_keys_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("000001.sst");
    let mut entries = Vec::new();
    for i in 0..3000u64 {
        entries.push((key(i), value_for(i)));
        if i % 1000 == 500 {
            // A 100 KiB key and a 1 MiB value right after it.
            let mut big = key(i);
            big.extend(std::iter::repeat_n(
                b'x',
                crate::limits::KEY_LEN_MAX - big.len(),
            ));
            entries.push((
                big.clone(),
                Value::Inline(Bytes::from(vec![i as u8; 1 << 20])),
            ));
            big.push(b'y');
            big.truncate(crate::limits::KEY_LEN_MAX);
            *big.last_mut().unwrap() = b'y';
            entries.push((big, Value::Tombstone));
        }
    }
    let meta = build(&path, &entries);
    assert_eq!(meta.entries, entries.len() as u64);
    assert_eq!(meta.smallest.as_ref(), entries[0].0.as_slice());
    assert_eq!(meta.largest.as_ref(), entries.last().unwrap().0.as_slice());
    let tombstones = entries.iter().filter(|e| e.1 == Value::Tombstone).count() as u64;
    let blobs: Vec<u64> = entries
        .iter()
        .filter_map(|e| match &e.1 {
            Value::Blob(r) => Some(u64::from(r.len)),
            _ => None,
        })
        .collect();
    assert_eq!(meta.tombstones, tombstones);
    assert_eq!(meta.blob_refs, blobs.len() as u64);
    assert_eq!(meta.blob_ref_bytes, blobs.iter().sum::<u64>());

    let t = Table::open(&fs(), &path, 1).unwrap();
    let mut expect_meta = meta.clone();
    expect_meta.number = 1;
    assert_eq!(t.meta(), expect_meta);
    assert_eq!(t.number(), 1);
    assert_eq!(t.file_size(), meta.file_size);
    assert_eq!(t.entries(), meta.entries);
    assert_eq!(t.smallest(), &meta.smallest);
    assert_eq!(t.largest(), &meta.largest);
    assert_eq!(t.verify().unwrap(), entries.len() as u64);

    let got = collect(&t);
    assert_eq!(got.len(), entries.len());
    for ((k, v), (ek, ev)) in got.iter().zip(&entries) {
        assert_eq!(k.as_ref(), ek.as_slice());
        assert_eq!(v, ev);
    }
    for (k, v) in &entries {
        assert!(t.may_contain(k));
        assert_eq!(t.get(k).unwrap().as_ref(), Some(v));
    }
}

#[test]
fn absent_keys_and_empty_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let entries = simple_entries(2000);
    build(&path, &entries);
    let t = Table::open(&fs(), &path, 1).unwrap();
    for i in 0..2000u64 {
        assert_eq!(t.get(&key(i * 2 + 1)).unwrap(), None);
    }
    assert_eq!(t.get(b"").unwrap(), None);
    assert_eq!(t.get(b"a").unwrap(), None);
    assert_eq!(t.get(b"zzz").unwrap(), None);

    let empty = dir.path().join("empty.sst");
    let meta = build(&empty, &[]);
    assert_eq!(meta.entries, 0);
    let t = Table::open(&fs(), &empty, 2).unwrap();
    assert_eq!(t.verify().unwrap(), 0);
    assert_eq!(t.get(b"x").unwrap(), None);
    assert!(t.iter().next().is_none());
    let mut it = t.iter();
    it.seek(b"a").unwrap();
    assert!(it.next().is_none());
}

#[test]
fn builder_rejects_bad_keys_and_abandon_removes_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let fs = fs();
    let mut b = TableBuilder::create(&fs, &path, 1).unwrap();
    b.add(b"b", &Value::Tombstone).unwrap();
    for bad in [&b"b"[..], b"a", b""] {
        assert!(matches!(
            b.add(bad, &Value::Tombstone),
            Err(Error::InvalidArgument(_))
        ));
    }
    let long = vec![b'z'; crate::limits::KEY_LEN_MAX + 1];
    assert!(matches!(
        b.add(&long, &Value::Tombstone),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(b.entries(), 1);
    assert!(path.exists());
    b.abandon();
    assert!(!path.exists());
}

#[test]
fn seek_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let entries = simple_entries(3000); // keys key(0), key(2), ...
    build(&path, &entries);
    let t = Table::open(&fs(), &path, 1).unwrap();
    let mut it = t.iter();
    for probe in [0u64, 1, 2, 31, 32, 33, 999, 1000, 4097, 5995] {
        it.seek(&key(probe)).unwrap();
        let want = probe.div_ceil(2) * 2;
        let (k, v) = it.next().unwrap().unwrap();
        assert_eq!(k.as_ref(), key(want).as_slice(), "seek {probe}");
        assert_eq!(v, value_for(want / 2));
        // Iteration continues in order from there.
        let (k2, _) = it.next().unwrap().unwrap();
        assert_eq!(k2.as_ref(), key(want + 2).as_slice());
    }
    for probe in [5997, 5998] {
        it.seek(&key(probe)).unwrap();
        assert_eq!(it.next().unwrap().unwrap().0.as_ref(), key(5998).as_slice());
        assert!(it.next().is_none());
    }
    it.seek(&key(5999)).unwrap();
    assert!(it.next().is_none());
    it.seek(&key(6000)).unwrap();
    assert!(it.next().is_none());
    it.seek(b"").unwrap();
    assert_eq!(it.next().unwrap().unwrap().0.as_ref(), key(0).as_slice());
    it.seek(b"zzz").unwrap();
    assert!(it.next().is_none());
    it.seek_to_first().unwrap();
    assert_eq!(it.count(), 3000);
}

#[test]
fn bloom_false_positive_rate_about_one_percent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let entries: Vec<_> = (0..20_000u64).map(|i| (key(i), Value::Tombstone)).collect();
    build(&path, &entries);
    let t = Table::open(&fs(), &path, 1).unwrap();
    assert!(entries.iter().all(|(k, _)| t.may_contain(k)));
    let probes = 50_000u64;
    let fp = (0..probes)
        .filter(|i| t.may_contain(format!("absent{i}").as_bytes()))
        .count();
    let rate = fp as f64 / probes as f64;
    assert!(rate < 0.02, "false-positive rate {rate}");
    assert!(rate > 0.002, "false-positive rate {rate} suspiciously low");
}

/// Builds a table of a few blocks and returns its path and bytes.
type Entries = Vec<(Vec<u8>, Value)>;

fn damaged_setup(dir: &Path) -> (PathBuf, Vec<u8>, Entries) {
    let path = dir.join("t.sst");
    let entries = simple_entries(1000);
    build(&path, &entries);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes, entries)
}

/// Opens, verifies, reads and iterates a table; every result must be either
/// right or a corruption error. Returns true if some corruption was found.
fn check_never_wrong(path: &Path, entries: &[(Vec<u8>, Value)]) -> bool {
    let t = match Table::open(&fs(), path, 1) {
        Ok(t) => t,
        Err(e) => {
            assert!(e.is_corruption(), "{e}");
            return true;
        }
    };
    let mut found = false;
    match t.verify() {
        Ok(n) => assert_eq!(n, entries.len() as u64),
        Err(e) => {
            assert!(e.is_corruption(), "{e}");
            found = true;
        }
    }
    for (k, v) in entries.iter().step_by(13) {
        match t.get(k) {
            Ok(got) => assert_eq!(got.as_ref(), Some(v)),
            Err(e) => {
                assert!(e.is_corruption(), "{e}");
                found = true;
            }
        }
    }
    let mut n = 0;
    for r in t.iter() {
        match r {
            Ok((k, v)) => {
                assert_eq!(k.as_ref(), entries[n].0.as_slice());
                assert_eq!(v, entries[n].1);
                n += 1;
            }
            Err(e) => {
                assert!(e.is_corruption(), "{e}");
                found = true;
            }
        }
    }
    found
}

#[test]
fn truncated_file_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, _) = damaged_setup(dir.path());
    for len in [0, 10, FOOTER_LEN - 1, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let e = Table::open(&fs(), &path, 1).unwrap_err();
        assert!(e.is_corruption(), "{e}");
        assert!(e.to_string().contains("t.sst"), "{e}");
    }
}

#[test]
fn flipped_bytes_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, entries) = damaged_setup(dir.path());
    let t = Table::open(&fs(), &path, 1).unwrap();
    let index_at = t.index_handle().offset as usize;
    let footer_at = bytes.len() - FOOTER_LEN;
    drop(t);
    // A data block, the index block, the footer.
    for at in [100, index_at + 12, footer_at + 3, footer_at + 60] {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        std::fs::write(&path, &b).unwrap();
        assert!(check_never_wrong(&path, &entries), "flip at {at} unnoticed");
    }
    // Flip every byte in turn over a sample: never wrong data, never a panic.
    for at in (0..bytes.len()).step_by(61) {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        std::fs::write(&path, &b).unwrap();
        assert!(check_never_wrong(&path, &entries), "flip at {at} unnoticed");
    }
}

#[test]
fn garbage_files_never_panic() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, entries) = damaged_setup(dir.path());
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    for _ in 0..200 {
        let mut b = bytes.clone();
        let start = rng.gen_range(0..b.len());
        let n = rng.gen_range(1..64).min(b.len() - start);
        rng.fill(&mut b[start..start + n]);
        std::fs::write(&path, &b).unwrap();
        check_never_wrong(&path, &entries);
        let _ = salvage(&fs(), &path).unwrap();
    }
    let junk: Vec<u8> = (0..5000).map(|_| rng.gen()).collect();
    std::fs::write(&path, &junk).unwrap();
    assert!(Table::open(&fs(), &path, 1).unwrap_err().is_corruption());
    let (got, _) = salvage(&fs(), &path).unwrap();
    assert!(got.is_empty());
}

#[test]
fn salvage_recovers_intact_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, entries) = damaged_setup(dir.path());
    // Intact file: everything, nothing damaged.
    let (got, damaged) = salvage(&fs(), &path).unwrap();
    assert_eq!(damaged, 0);
    assert_eq!(got.len(), entries.len());

    // Damage the second data block (and, separately, its header).
    let t = Table::open(&fs(), &path, 1).unwrap();
    let blocks = t.data_handles();
    assert!(blocks.len() > 4);
    let victim = blocks[1];
    drop(t);
    for at in [victim.offset + 30, victim.offset + 5, victim.offset] {
        let mut b = bytes.clone();
        b[at as usize] ^= 0x40;
        // Also destroy the footer: salvage must not need it.
        let n = b.len();
        b[n - 1] ^= 0xff;
        std::fs::write(&path, &b).unwrap();
        let (got, damaged) = salvage(&fs(), &path).unwrap();
        assert!(damaged >= 1, "flip at {at}");
        let lost = entries.len() - got.len();
        assert!(lost > 0 && lost < entries.len() / 4, "lost {lost}");
        // Every salvaged entry is a real one.
        for (k, v) in &got {
            let i = entries.binary_search_by(|e| e.0.as_slice().cmp(k)).unwrap();
            assert_eq!(&entries[i].1, v);
        }
    }
    // A file cut in the middle of a block keeps the blocks before it.
    std::fs::write(&path, &bytes[..(blocks[3].offset + 20) as usize]).unwrap();
    let (got, damaged) = salvage(&fs(), &path).unwrap();
    assert_eq!(damaged, 1);
    assert!(!got.is_empty() && got.len() < entries.len());
}

#[test]
fn types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Table>();
    send_sync::<TableMeta>();
    send::<TableIter>();
    send::<TableBuilder>();
}

#[test]
fn bloom_format_is_stable() {
    // Pins the hash and the probe sequence: changing either breaks every
    // existing file's filter.
    assert_eq!(super::bloom::key_hash(b"escabelo"), PINNED_HASH);
    let hashes: Vec<u64> = (0..10u64)
        .map(|i| super::bloom::key_hash(&key(i)))
        .collect();
    let filter = super::bloom::build(&hashes, 10);
    assert_eq!(filter.len(), 100 / 8 + 1 + 1);
    assert_eq!(*filter.last().unwrap(), 7);
    assert_eq!(xxhash_rust::xxh3::xxh3_64(&filter), PINNED_FILTER);
}

const PINNED_HASH: u64 = 3112922837177940099;
const PINNED_FILTER: u64 = 7163877766024244151;

#[test]
fn sequence_range_round_trips_and_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    build(&path, &simple_entries(100));
    let t = Table::open(&fs(), &path, 7).unwrap();
    assert_eq!(t.seqs(), SeqRange { min: 3, max: 40 });
    t.verify().unwrap();

    // Entries but no range: refused, and the partial file is removed.
    let path2 = dir.path().join("t2.sst");
    let mut b = TableBuilder::create(&fs(), &path2, 8).unwrap();
    b.add(b"k", &Value::Tombstone).unwrap();
    assert!(matches!(b.finish(), Err(Error::InvalidArgument(_))));
    assert!(!path2.exists());

    // Noted ranges widen to their hull.
    let path3 = dir.path().join("t3.sst");
    let mut b = TableBuilder::create(&fs(), &path3, 9).unwrap();
    b.note_seqs(SeqRange::at(20));
    b.note_seqs(SeqRange::at(5));
    b.note_seqs(SeqRange { min: 7, max: 30 });
    b.add(b"k", &Value::Tombstone).unwrap();
    b.finish().unwrap();
    let t = Table::open(&fs(), &path3, 9).unwrap();
    assert_eq!(t.seqs(), SeqRange { min: 5, max: 30 });
}
