use super::*;
use crate::error::{Error, Result};
use crate::fs::{FsRef, OpenMode, RealFs};
use crate::types::BlobRef;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn real() -> (tempfile::TempDir, FsRef) {
    (tempfile::tempdir().unwrap(), Arc::new(RealFs))
}

fn sample(i: usize) -> (Vec<u8>, Value) {
    let key = format!("key-{i:05}").into_bytes();
    let value = match i % 3 {
        0 => Value::Inline(Bytes::from(vec![i as u8; i % 50])),
        1 => Value::Tombstone,
        _ => Value::Blob(BlobRef {
            file: i as u64,
            offset: (i as u64) << 20,
            len: i as u32,
            checksum: 0xabcd_0000 + i as u32,
        }),
    };
    (key, value)
}

/// Writes `n` sample records, in groups of 7 per append, and syncs (an
/// unsealed log, as a crash leaves it); returns the offset of each record.
fn write_samples(fs: &FsRef, dir: &Path, path: &Path, log: u64, n: usize) -> Vec<u64> {
    write_samples_then(fs, dir, path, log, n, false)
}

/// Like [`write_samples`], then seals the log (as a clean close does).
fn write_sealed_samples(fs: &FsRef, dir: &Path, path: &Path, log: u64, n: usize) -> Vec<u64> {
    write_samples_then(fs, dir, path, log, n, true)
}

fn write_samples_then(
    fs: &FsRef,
    dir: &Path,
    path: &Path,
    log: u64,
    n: usize,
    seal: bool,
) -> Vec<u64> {
    let mut w = WalWriter::create(fs, dir, path, log, 0, None).unwrap();
    let mut offsets = Vec::new();
    let mut batch = Vec::new();
    for i in 0..n {
        offsets.push(w.len() + batch.len() as u64);
        let (k, v) = sample(i);
        encode_record(&mut batch, log, &k, &v);
        if i % 7 == 6 {
            w.append(&batch).unwrap();
            batch.clear();
        }
    }
    w.append(&batch).unwrap();
    w.sync().unwrap();
    if seal {
        w.seal().unwrap();
    }
    offsets
}

fn read_all(
    fs: &FsRef,
    path: &Path,
    log: u64,
    mode: ReadMode,
) -> Result<(Vec<WalRecord>, WalReader)> {
    let mut r = WalReader::open(fs, path, log, mode)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok((out, r))
}

fn check_samples(recs: &[WalRecord], indexes: impl IntoIterator<Item = usize>) {
    let idx: Vec<usize> = indexes.into_iter().collect();
    assert_eq!(recs.len(), idx.len());
    for (rec, i) in recs.iter().zip(idx) {
        let (k, v) = sample(i);
        assert_eq!(&rec.key[..], &k[..]);
        assert_eq!(rec.value, v);
    }
}

#[test]
fn round_trip_small_and_huge() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000005.log");
    let mut w = WalWriter::create(&fs, tmp.path(), &path, 5, 0, None).unwrap();
    let big_key = vec![b'k'; crate::limits::KEY_LEN_MAX];
    let big_val: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let mut expected = Vec::new();
    for i in 0..200 {
        let (k, v) = sample(i);
        expected.push((k, v));
    }
    expected.push((big_key.clone(), Value::Inline(Bytes::from(big_val.clone()))));
    expected.push((b"small".to_vec(), Value::Inline(Bytes::from(big_val))));
    expected.push((big_key, Value::Tombstone));
    // (An empty key never reaches the log: a payload starting with a key
    // length of 0 is a record group.)
    expected.push((b"e".to_vec(), Value::Inline(Bytes::new())));
    let mut batch = Vec::new();
    for (i, (k, v)) in expected.iter().enumerate() {
        encode_record(&mut batch, 5, k, v);
        if i % 5 == 0 {
            w.append(&batch).unwrap();
            batch.clear();
        }
    }
    w.append(&batch).unwrap();
    w.sync().unwrap();
    w.file().sync_data().unwrap();
    assert_eq!(w.log_number(), 5);
    assert_eq!(w.path(), path.as_path());
    let written = w.len();
    let (recs, r) = read_all(&fs, &path, 5, ReadMode::Strict).unwrap();
    assert_eq!(recs.len(), expected.len());
    for (rec, (k, v)) in recs.iter().zip(&expected) {
        assert_eq!(&rec.key[..], &k[..]);
        assert_eq!(&rec.value, v);
    }
    assert_eq!(recs[0].offset, 0);
    assert_eq!(r.end_offset(), written);
    assert_eq!(r.dropped_tail_bytes(), 0);
    assert_eq!(r.skipped_bytes(), 0);
}

/// Batches whose long values are written from their own buffers (one
/// `pwritev` on the real file system) read back record for record, with
/// sync points between them, and the sealed segment's content checksum,
/// kept over the pieces, matches what the reader computes.
#[test]
fn batches_with_shared_values_round_trip_on_a_real_file() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000008.log");
    let mut w = WalWriter::create(&fs, tmp.path(), &path, 8, 0, None).unwrap();
    let mut expected = Vec::new();
    let mut batch = Batch::new();
    for i in 0..3000usize {
        let key = format!("k{i:05}").into_bytes();
        let value = match i % 4 {
            0 => Value::Inline(Bytes::from(vec![i as u8; SHARE_VALUE_MIN + i % 9000])),
            1 => Value::Inline(Bytes::from(vec![i as u8; i % 100])),
            2 => Value::Tombstone,
            _ => Value::Inline(Bytes::from(vec![(i >> 3) as u8; SHARE_VALUE_MIN - 1])),
        };
        batch.push_record(8, &key, &value);
        expected.push((key, value));
        // Batches of up to 1,500 records: more pieces than one pwritev takes.
        if i % 1500 == 1499 || i % 97 == 96 {
            w.append_batch(&batch).unwrap();
            batch.clear();
            if i % 3 == 0 {
                w.sync().unwrap();
            }
        }
    }
    w.append_batch(&batch).unwrap();
    let written = w.len();
    w.seal().unwrap();
    let (recs, r) = read_all(&fs, &path, 8, ReadMode::Strict).unwrap();
    assert_eq!(recs.len(), expected.len());
    for (rec, (k, v)) in recs.iter().zip(&expected) {
        assert_eq!(&rec.key[..], &k[..]);
        assert_eq!(&rec.value, v);
    }
    // Sealed: the end marker's content checksum matched the records read.
    assert!(r.sealed() && !r.tail().end_copy_damaged);
    assert_eq!(r.end_offset(), written);
    assert_eq!(r.dropped_tail_bytes(), END_MARKERS_LEN as u64);
    assert_eq!(r.skipped_bytes(), 0);
}

/// The writes of a transaction: one record, all of it or none.
#[test]
fn record_group_round_trip_and_torn_group_is_dropped_whole() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000003.log");
    let mut w = WalWriter::create(&fs, tmp.path(), &path, 3, 0, None).unwrap();
    let mut buf = Vec::new();
    let (k0, v0) = sample(0);
    encode_record(&mut buf, 3, &k0, &v0);
    let group: Vec<(Bytes, Value)> = (1..6)
        .map(|i| {
            let (k, v) = sample(i);
            (Bytes::from(k), v)
        })
        .collect();
    let group_at = buf.len();
    assert!(encode_group(&mut buf, 3, &group));
    assert!(
        !encode_group(&mut buf.clone(), 3, &[]),
        "an empty group is refused"
    );
    w.append(&buf).unwrap();
    w.sync().unwrap();
    drop(w);
    let (recs, _) = read_all(&fs, &path, 3, ReadMode::Strict).unwrap();
    check_samples(&recs, 0..6);
    assert!(recs[1..].iter().all(|r| r.offset == group_at as u64));
    // Cut anywhere inside the group: the group is dropped as a whole.
    let full = std::fs::read(&path).unwrap();
    let cut_path = tmp.path().join("cut.log");
    for cut in [group_at + 1, group_at + 20, full.len() - 1] {
        std::fs::write(&cut_path, &full[..cut]).unwrap();
        let (recs, _) = read_all(&fs, &cut_path, 3, ReadMode::Strict).unwrap();
        check_samples(&recs, 0..1);
    }
}

#[test]
fn malformed_record_groups_are_bad() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000004.log");
    // Hand-made group payloads: count 1, count 0, a huge count, an empty
    // key, trailing bytes.
    let cases: Vec<Vec<u8>> = vec![
        vec![0, 1, 1, b'k', 1],
        vec![0, 0],
        vec![0, 0xff, 0xff, 0xff, 0x7f, 1, b'k', 1],
        vec![0, 2, 0, 1, 1, b'k', 1],
        vec![0, 2, 1, b'a', 1, 1, b'b', 1, 9],
    ];
    for payload in cases {
        let mut rec = vec![0u8; HEADER_LEN];
        rec.extend_from_slice(&payload);
        let len = payload.len() as u32;
        rec[4..8].copy_from_slice(&len.to_le_bytes());
        rec[8..12].copy_from_slice(&4u32.to_le_bytes());
        let crc = crc32c::crc32c(&rec[4..]);
        rec[0..4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &rec).unwrap();
        let (recs, r) = read_all(&fs, &path, 4, ReadMode::Strict).unwrap();
        assert!(recs.is_empty(), "payload {payload:?} read as records");
        assert_eq!(r.end_offset(), 0);
    }
}

#[test]
fn torn_tail_at_every_truncation_point() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000001.log");
    let n = 20;
    let offsets = write_samples(&fs, tmp.path(), &path, 1, n);
    let full = std::fs::read(&path).unwrap();
    let last = offsets[n - 1] as usize;
    let cut_path = tmp.path().join("cut.log");
    for cut in last..full.len() {
        std::fs::write(&cut_path, &full[..cut]).unwrap();
        for mode in [ReadMode::Strict, ReadMode::Salvage] {
            let (recs, r) = read_all(&fs, &cut_path, 1, mode).unwrap();
            check_samples(&recs, 0..n - 1);
            assert_eq!(r.end_offset(), last as u64);
            assert_eq!(r.dropped_tail_bytes(), (cut - last) as u64);
        }
    }
    // Garbage (not zeros) after the last record is also a torn tail.
    let mut g = full.clone();
    g.extend_from_slice(&[0x5a; 40]);
    std::fs::write(&cut_path, &g).unwrap();
    let (recs, r) = read_all(&fs, &cut_path, 1, ReadMode::Strict).unwrap();
    check_samples(&recs, 0..n);
    assert_eq!(r.dropped_tail_bytes(), 40);
}

/// In a sealed (cleanly closed) log, damage in the middle is corruption;
/// Salvage skips it. Unsealed and never covered by a sync point, the same
/// damage is the unsynced tail of a crash: dropped from there on.
#[test]
fn flipped_byte_in_middle_record() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000009.log");
    let n = 30;
    let offsets = write_sealed_samples(&fs, tmp.path(), &path, 9, n);
    let full = std::fs::read(&path).unwrap();
    let bad = 12;
    let start = offsets[bad] as usize;
    let end = offsets[bad + 1] as usize;
    for at in start..end {
        let mut damaged = full.clone();
        damaged[at] ^= 0x10;
        let p = tmp.path().join("damaged.log");
        std::fs::write(&p, &damaged).unwrap();
        let err = read_all(&fs, &p, 9, ReadMode::Strict).unwrap_err();
        match err {
            Error::Corruption { file, offset, .. } => {
                assert_eq!(file, p);
                assert_eq!(offset, start as u64);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        let (recs, r) = read_all(&fs, &p, 9, ReadMode::Salvage).unwrap();
        check_samples(&recs, (0..n).filter(|&i| i != bad));
        assert_eq!(r.skipped_bytes(), (end - start) as u64);
        assert_eq!(r.end_offset(), (full.len() - END_MARKERS_LEN) as u64);
        assert!(r.sealed());
    }
    // The same damage in a log that was never sealed nor synced before
    // later records: a hole in the unsynced tail.
    let unsealed = tmp.path().join("000010.log");
    let offsets = write_samples(&fs, tmp.path(), &unsealed, 10, n);
    let mut data = std::fs::read(&unsealed).unwrap();
    data[offsets[bad] as usize + 14] ^= 0x10;
    std::fs::write(&unsealed, &data).unwrap();
    let (recs, r) = read_all(&fs, &unsealed, 10, ReadMode::Strict).unwrap();
    check_samples(&recs, 0..bad);
    assert_eq!(r.end_offset(), offsets[bad]);
    assert_eq!(r.tail().bad_offset, Some(offsets[bad]));
    assert_eq!(r.tail().dropped_records, (n - bad) as u64);
    assert_eq!(r.tail().dropped_bytes, data.len() as u64 - offsets[bad]);
    assert!(!r.sealed());
}

#[test]
fn strict_returns_records_before_damage_then_error() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000002.log");
    let offsets = write_sealed_samples(&fs, tmp.path(), &path, 2, 10);
    let mut data = std::fs::read(&path).unwrap();
    data[offsets[4] as usize + 5] ^= 1; // inside the length field
    std::fs::write(&path, &data).unwrap();
    let mut r = WalReader::open(&fs, &path, 2, ReadMode::Strict).unwrap();
    for _ in 0..4 {
        assert!(r.next_record().unwrap().is_some());
    }
    assert!(r.next_record().unwrap_err().is_corruption());
    assert!(r.next_record().unwrap_err().is_corruption());
    assert_eq!(r.end_offset(), offsets[4]);
}

#[test]
fn recycled_file_ends_at_new_data() {
    let (tmp, fs) = real();
    let old = tmp.path().join("000003.log");
    write_samples(&fs, tmp.path(), &old, 3, 100);
    let old_len = std::fs::metadata(&old).unwrap().len();
    let new = tmp.path().join("000004.log");
    let mut w = WalWriter::create(&fs, tmp.path(), &new, 4, 0, Some(&old)).unwrap();
    assert!(!fs.exists(&old));
    let mut batch = Vec::new();
    for i in 0..10 {
        let (k, v) = sample(i);
        encode_record(&mut batch, 4, &k, &v);
    }
    w.append(&batch).unwrap();
    w.sync().unwrap();
    assert!(w.len() < old_len);
    for mode in [ReadMode::Strict, ReadMode::Salvage] {
        let (recs, r) = read_all(&fs, &new, 4, mode).unwrap();
        check_samples(&recs, 0..10);
        assert_eq!(r.end_offset(), w.len());
        assert_eq!(r.dropped_tail_bytes(), old_len - w.len());
        assert_eq!(r.skipped_bytes(), 0);
    }
}

#[test]
fn preallocated_zeros_end_cleanly() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000007.log");
    let mut w = WalWriter::create(&fs, tmp.path(), &path, 7, 3 << 20, None).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 << 20);
    let mut batch = Vec::new();
    for i in 0..50 {
        let (k, v) = sample(i);
        encode_record(&mut batch, 7, &k, &v);
    }
    w.append(&batch[..batch.len() / 2]).unwrap();
    w.append(&batch[batch.len() / 2..]).unwrap();
    w.sync().unwrap();
    let (recs, r) = read_all(&fs, &path, 7, ReadMode::Strict).unwrap();
    check_samples(&recs, 0..50);
    assert_eq!(r.end_offset(), batch.len() as u64);
    // An empty preallocated log has no records.
    let p2 = tmp.path().join("000008.log");
    WalWriter::create(&fs, tmp.path(), &p2, 8, 1 << 16, None).unwrap();
    let (recs, r) = read_all(&fs, &p2, 8, ReadMode::Strict).unwrap();
    assert!(recs.is_empty());
    assert_eq!(r.end_offset(), 0);
}

/// A preallocating log is zero-filled one step ahead of its records, not
/// to its whole target at once (an idle `sync`-mode database held a whole
/// preallocated segment: 3.0x its live data on disk); the records read
/// back across the steps, and a clean close cuts the zeros off.
#[test]
fn preallocation_grows_in_steps_ahead_of_the_records() {
    use super::writer::PREALLOCATE_STEP as STEP;
    let (tmp, fs) = real();
    let path = tmp.path().join("000009.log");
    let target = 3 * STEP + STEP / 2;
    let size = || std::fs::metadata(&path).unwrap().len();
    let mut w = WalWriter::create(&fs, tmp.path(), &path, 9, target, None).unwrap();
    assert_eq!(
        size(),
        STEP,
        "only the first step is zero-filled at creation"
    );
    let value = Value::Inline(Bytes::from(vec![7u8; 256 * 1024]));
    let mut n = 0usize;
    let mut sizes = Vec::new();
    while w.len() < target + STEP {
        let mut batch = Vec::new();
        encode_record(&mut batch, 9, format!("k{n:06}").as_bytes(), &value);
        w.append(&batch).unwrap();
        n += 1;
        let s = size();
        assert!(s >= w.len());
        if w.len() <= target {
            // Never more than one step of zeros ahead.
            assert!(s - w.len() <= STEP, "{s} bytes for {} of records", w.len());
        }
        if sizes.last() != Some(&s) {
            sizes.push(s);
        }
    }
    assert_eq!(&sizes[..3], &[STEP, 2 * STEP, 3 * STEP]);
    assert!(sizes.contains(&target), "the last step stops at the target");
    // Past the target the file just grows with the records.
    assert_eq!(size(), w.len());
    w.sync().unwrap();
    let (recs, r) = read_all(&fs, &path, 9, ReadMode::Strict).unwrap();
    assert_eq!(recs.len(), n);
    assert_eq!(r.end_offset(), w.len());
    w.seal().unwrap();
    w.trim_after_seal().unwrap();
    assert_eq!(size(), w.len() + END_MARKERS_LEN as u64);
}

#[test]
fn lengths_are_checked_before_use() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000001.log");
    let f = fs.open(&path, OpenMode::CreateTruncate).unwrap();
    // Over-limit length with matching log number, then nothing.
    let mut h = Vec::new();
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    f.write_all_at(&h, 0).unwrap();
    let (recs, _) = read_all(&fs, &path, 1, ReadMode::Strict).unwrap();
    assert!(recs.is_empty());
    // A length that passes the limit but not the file size.
    h[4..8].copy_from_slice(&1000u32.to_le_bytes());
    f.write_all_at(&h, 0).unwrap();
    let (recs, r) = read_all(&fs, &path, 1, ReadMode::Strict).unwrap();
    assert!(recs.is_empty());
    assert_eq!(r.dropped_tail_bytes(), 12);
}

#[test]
fn checksummed_but_malformed_payload_is_bad() {
    let (tmp, fs) = real();
    let path: PathBuf = tmp.path().join("000001.log");
    let f = fs.open(&path, OpenMode::CreateTruncate).unwrap();
    // Payload: key_len 1, key, kind 9 (unknown).
    let payload = [1u8, b'a', 9];
    let mut rec = Vec::new();
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&1u32.to_le_bytes());
    rec.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&rec[4..]);
    rec[..4].copy_from_slice(&crc.to_le_bytes());
    let mut good = Vec::new();
    encode_record(&mut good, 1, b"b", &Value::Tombstone);
    let mut all = rec.clone();
    all.extend_from_slice(&good);
    // Sealed, so that damage before the end is corruption.
    let crc = crc32c::crc32c(&all);
    let covered = all.len() as u64;
    encode_end_markers(&mut all, 1, covered, crc);
    f.write_all_at(&all, 0).unwrap();
    assert!(read_all(&fs, &path, 1, ReadMode::Strict)
        .unwrap_err()
        .is_corruption());
    let (recs, r) = read_all(&fs, &path, 1, ReadMode::Salvage).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(&recs[0].key[..], b"b");
    assert_eq!(recs[0].offset, rec.len() as u64);
    assert_eq!(r.skipped_bytes(), rec.len() as u64);
}

mod with_memfs {
    use super::*;
    use crate::fs::{CrashMode, Fault, FaultOp, FileSystem, MemFs};

    fn memfs() -> (MemFs, FsRef, PathBuf) {
        let mem = MemFs::new();
        let fs: FsRef = Arc::new(mem.clone());
        let dir = PathBuf::from("/db");
        fs.create_dir_all(&dir).unwrap();
        (mem, fs, dir)
    }

    fn batch(log: u64, range: std::ops::Range<usize>) -> Vec<u8> {
        let mut b = Vec::new();
        for i in range {
            let (k, v) = sample(i);
            encode_record(&mut b, log, &k, &v);
        }
        b
    }

    #[test]
    fn failed_append_leaves_no_hole() {
        let (mem, fs, dir) = memfs();
        let path = dir.join("000001.log");
        let mut w = WalWriter::create(&fs, &dir, &path, 1, 0, None).unwrap();
        w.append(&batch(1, 0..5)).unwrap();
        let len = w.len();
        mem.inject(Fault {
            op: FaultOp::Write,
            path_contains: Some("000001.log".into()),
            skip: 0,
            times: Some(1),
            errno: libc::EIO,
        });
        assert!(matches!(w.append(&batch(1, 5..10)), Err(Error::Io { .. })));
        assert_eq!(w.len(), len);
        // A full disk: NoSpace, and the end still does not move.
        mem.set_capacity(Some(mem.total_bytes() + 10));
        assert!(matches!(
            w.append(&batch(1, 5..10)),
            Err(Error::NoSpace { .. })
        ));
        assert_eq!(w.len(), len);
        mem.set_capacity(None);
        w.append(&batch(1, 10..15)).unwrap();
        w.sync().unwrap();
        let (recs, r) = read_all(&fs, &path, 1, ReadMode::Strict).unwrap();
        check_samples(&recs, (0..5).chain(10..15));
        assert_eq!(r.end_offset(), w.len());
    }

    /// Preallocation only makes fdatasyncs cheaper: when its zeros do not
    /// fit on the disk, appends that do fit still succeed, and the log
    /// reads back whole, also after a crash.
    #[test]
    fn full_disk_stops_preallocation_but_not_appends() {
        use super::super::writer::PREALLOCATE_STEP as STEP;
        let (mem, fs, dir) = memfs();
        let path = dir.join("000002.log");
        let mut w = WalWriter::create(&fs, &dir, &path, 2, 4 * STEP, None).unwrap();
        assert_eq!(mem.read_file(&path).unwrap().len() as u64, STEP);
        let value = Value::Inline(Bytes::from(vec![3u8; 64 * 1024]));
        let record = |i: usize| {
            let mut b = Vec::new();
            encode_record(&mut b, 2, format!("k{i:05}").as_bytes(), &value);
            b
        };
        // Room for the first step and a few more records, not a second step.
        mem.set_capacity(Some(mem.total_bytes() + STEP / 2));
        let mut i = 0;
        while w.len() < STEP + STEP / 4 {
            w.append(&record(i)).unwrap();
            i += 1;
        }
        w.sync().unwrap();
        let (recs, _) = read_all(&fs, &path, 2, ReadMode::Strict).unwrap();
        assert_eq!(recs.len(), i);
        // A write that does not fit still fails, and moves nothing.
        let len = w.len();
        let big = Value::Inline(Bytes::from(vec![4u8; (STEP / 2) as usize]));
        let mut b = Vec::new();
        encode_record(&mut b, 2, b"big", &big);
        assert!(matches!(w.append(&b), Err(Error::NoSpace { .. })));
        assert_eq!(w.len(), len);
        let after = mem.crash(CrashMode::PowerLoss);
        let fs2: FsRef = Arc::new(after);
        let (recs, _) = read_all(&fs2, &path, 2, ReadMode::Salvage).unwrap();
        assert_eq!(recs.len(), i, "every synced record survives");
    }

    #[test]
    fn recovers_after_every_kind_of_crash() {
        let (mem, fs, dir) = memfs();
        let path = dir.join("000003.log");
        let mut w = WalWriter::create(&fs, &dir, &path, 3, 4096, None).unwrap();
        w.append(&batch(3, 0..10)).unwrap();
        w.sync().unwrap();
        w.append(&batch(3, 10..20)).unwrap();
        for seed in 0..32 {
            for mode in [
                CrashMode::ProcessKill,
                CrashMode::PowerLoss,
                CrashMode::PowerLossTorn { seed },
            ] {
                let after: FsRef = Arc::new(mem.crash(mode));
                let (recs, _) = read_all(&after, &path, 3, ReadMode::Strict).unwrap();
                assert!(recs.len() >= 10 && recs.len() <= 20, "{mode:?}");
                check_samples(&recs, 0..recs.len());
                if mode == CrashMode::ProcessKill {
                    assert_eq!(recs.len(), 20);
                }
                if mode == CrashMode::PowerLoss {
                    assert_eq!(recs.len(), 10);
                }
            }
        }
    }

    #[test]
    fn unsynced_log_creation_is_durable_after_create() {
        let (mem, fs, dir) = memfs();
        let path = dir.join("000004.log");
        let _w = WalWriter::create(&fs, &dir, &path, 4, 0, None).unwrap();
        // create() synced the directory: the file survives power loss.
        assert!(mem.crash(CrashMode::PowerLoss).exists(&path));
    }
}

#[test]
fn scan_over_zeros_with_log_number_zero_is_linear() {
    // Log number 0 matches every zero header: the scan must still be cheap.
    let (tmp, fs) = real();
    let path = tmp.path().join("000000.log");
    let mut w = WalWriter::create(&fs, tmp.path(), &path, 0, 8 << 20, None).unwrap();
    let mut b = Vec::new();
    encode_record(&mut b, 0, b"k", &Value::Tombstone);
    w.append(&b).unwrap();
    let start = std::time::Instant::now();
    let (recs, r) = read_all(&fs, &path, 0, ReadMode::Strict).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(r.dropped_tail_bytes(), (8 << 20) - b.len() as u64);
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

/// A file system whose next write, when armed, stores all but the last
/// `cut` bytes and then fails, like a write interrupted by a full disk.
mod partial_write {
    use super::*;
    use crate::fs::{DirLock, File, FileSystem, MemFs};
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Clone)]
    struct PartialFs {
        inner: MemFs,
        cut: Arc<AtomicUsize>,
    }

    #[derive(Debug)]
    struct PartialFile {
        inner: Arc<dyn File>,
        cut: Arc<AtomicUsize>,
    }

    impl File for PartialFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.inner.read_at(buf, offset)
        }
        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let cut = self.cut.swap(0, Ordering::SeqCst);
            if cut > 0 {
                let keep = buf.len().saturating_sub(cut);
                self.inner.write_all_at(&buf[..keep], offset)?;
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.inner.write_all_at(buf, offset)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.inner.sync_data()
        }
        fn sync_all(&self) -> io::Result<()> {
            self.inner.sync_all()
        }
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }
    }

    impl FileSystem for PartialFs {
        fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
            Ok(Arc::new(PartialFile {
                inner: self.inner.open(path, mode)?,
                cut: Arc::clone(&self.cut),
            }))
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.inner.remove_file(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.inner.rename(from, to)
        }
        fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
            self.inner.list_dir(dir)
        }
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            self.inner.create_dir_all(dir)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.inner.sync_dir(dir)
        }
        fn exists(&self, path: &Path) -> bool {
            self.inner.exists(path)
        }
        fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
            self.inner.lock(path)
        }
        fn available_space(&self, dir: &Path) -> Option<u64> {
            self.inner.available_space(dir)
        }
    }

    #[test]
    fn partial_failed_write_cannot_resurrect_records() {
        let pfs = PartialFs {
            inner: MemFs::new(),
            cut: Arc::new(AtomicUsize::new(0)),
        };
        let fs: FsRef = Arc::new(pfs.clone());
        let dir = PathBuf::from("/db");
        fs.create_dir_all(&dir).unwrap();
        let path = dir.join("000001.log");
        let mut w = WalWriter::create(&fs, &dir, &path, 1, 0, None).unwrap();
        let mut first = Vec::new();
        encode_record(&mut first, 1, b"a", &Value::Tombstone);
        w.append(&first).unwrap();
        // A failed group of three records whose first two reach the file.
        let mut failed = Vec::new();
        for k in [b"x1", b"x2", b"x3"] {
            encode_record(
                &mut failed,
                1,
                k,
                &Value::Inline(Bytes::from_static(b"lost")),
            );
        }
        pfs.cut.store(3, Ordering::SeqCst);
        assert!(matches!(w.append(&failed), Err(Error::NoSpace { .. })));
        assert_eq!(w.len(), first.len() as u64);
        // A shorter later record must not leave x2 readable after it.
        let mut next = Vec::new();
        encode_record(&mut next, 1, b"b", &Value::Tombstone);
        assert!(next.len() < failed.len() / 3);
        w.append(&next).unwrap();
        for mode in [ReadMode::Strict, ReadMode::Salvage] {
            let (recs, r) = read_all(&fs, &path, 1, mode).unwrap();
            let keys: Vec<&[u8]> = recs.iter().map(|r| &r.key[..]).collect();
            assert_eq!(keys, vec![&b"a"[..], &b"b"[..]]);
            assert_eq!(r.end_offset(), w.len());
        }
    }
}

/// A sync point follows every completed fdatasync: damage before the
/// bytes it covers is corruption, damage after them a dropped tail.
#[test]
fn sync_point_marks_synced_data() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000011.log");
    let mut w = WalWriter::create(&fs, tmp.path(), &path, 11, 0, None).unwrap();
    let mut b = Vec::new();
    for i in 0..10 {
        let (k, v) = sample(i);
        encode_record(&mut b, 11, &k, &v);
    }
    w.append(&b).unwrap();
    let synced = w.len();
    // A sync through the shared handle, as the sync thread does.
    w.file().sync_data().unwrap();
    let mut b2 = Vec::new();
    for i in 10..20 {
        let (k, v) = sample(i);
        encode_record(&mut b2, 11, &k, &v);
    }
    w.append(&b2).unwrap();
    let full = std::fs::read(&path).unwrap();
    assert_eq!(
        full.len() as u64,
        synced + (HEADER_LEN + SYNC_POINT_PAYLOAD_LEN) as u64 + b2.len() as u64
    );
    let (recs, r) = read_all(&fs, &path, 11, ReadMode::Strict).unwrap();
    check_samples(&recs, 0..20);
    assert_eq!(r.end_offset(), full.len() as u64);
    let p = tmp.path().join("damaged.log");
    // Before the synced length: corruption.
    let mut d = full.clone();
    d[synced as usize - 1] ^= 1;
    std::fs::write(&p, &d).unwrap();
    let e = read_all(&fs, &p, 11, ReadMode::Strict).unwrap_err();
    assert!(e.is_corruption(), "{e}");
    assert!(e.to_string().contains("synced"), "{e}");
    // In the sync point itself or after it: the unsynced tail.
    for at in [synced as usize + 2, synced as usize + 30] {
        let mut d = full.clone();
        d[at] ^= 1;
        std::fs::write(&p, &d).unwrap();
        let (recs, r) = read_all(&fs, &p, 11, ReadMode::Strict).unwrap();
        assert!(recs.len() >= 10 && recs.len() < 20);
        check_samples(&recs, 0..recs.len());
        assert!(r.tail().dropped_records > 0);
    }
}

/// A sealed log reads to its end marker; records appended after a seal
/// overwrite the markers; a damaged copy of the end marker is only noted.
#[test]
fn seal_and_append_after_seal() {
    let (tmp, fs) = real();
    let path = tmp.path().join("000012.log");
    let mut w = WalWriter::create(&fs, tmp.path(), &path, 12, 0, None).unwrap();
    let batch = |r: std::ops::Range<usize>| {
        let mut b = Vec::new();
        for i in r {
            let (k, v) = sample(i);
            encode_record(&mut b, 12, &k, &v);
        }
        b
    };
    w.append(&batch(0..5)).unwrap();
    w.seal().unwrap();
    let (recs, r) = read_all(&fs, &path, 12, ReadMode::Strict).unwrap();
    check_samples(&recs, 0..5);
    assert!(r.sealed() && !r.tail().end_copy_damaged);
    assert_eq!(r.end_offset(), w.len());
    // A short append after the seal: the rest of the markers is zeroed.
    let (k, _) = sample(5);
    let mut tiny = Vec::new();
    encode_record(&mut tiny, 12, &k, &Value::Tombstone);
    w.append(&tiny).unwrap();
    let (recs, r) = read_all(&fs, &path, 12, ReadMode::Strict).unwrap();
    assert_eq!(recs.len(), 6);
    assert!(!r.sealed());
    assert_eq!(r.tail().dropped_records, 0);
    w.append(&batch(6..9)).unwrap();
    w.seal().unwrap();
    let (recs, r) = read_all(&fs, &path, 12, ReadMode::Strict).unwrap();
    assert_eq!(recs.len(), 9);
    assert!(r.sealed());
    // Damage in the copy: still sealed, noted.
    let mut d = std::fs::read(&path).unwrap();
    let last = d.len() - 1;
    d[last] ^= 1;
    std::fs::write(&path, &d).unwrap();
    let (recs, r) = read_all(&fs, &path, 12, ReadMode::Strict).unwrap();
    assert_eq!(recs.len(), 9);
    assert!(r.sealed() && r.tail().end_copy_damaged);
    // Damage in the end marker: corruption (its copy follows).
    d[last] ^= 1;
    d[last - (END_MARKERS_LEN / 2) - 3] ^= 1;
    std::fs::write(&path, &d).unwrap();
    assert!(read_all(&fs, &path, 12, ReadMode::Strict)
        .unwrap_err()
        .is_corruption());
}

/// Regression: "A failed log preallocation leaves its file behind on every
/// retry (full disk, `sync` mode)". create() removes the file it made when
/// preallocation fails.
#[test]
fn failed_preallocation_removes_the_file() {
    use crate::fs::MemFs;
    let mem = MemFs::new();
    let fs: FsRef = Arc::new(mem.clone());
    let dir = PathBuf::from("/db");
    fs.create_dir_all(&dir).unwrap();
    mem.set_capacity(Some(3 << 20));
    for n in 1..5u64 {
        let path = dir.join(format!("{n:06}.log"));
        let e = WalWriter::create(&fs, &dir, &path, n, 4 << 20, None).unwrap_err();
        assert!(matches!(e, Error::NoSpace { .. }), "{e}");
        assert!(!fs.exists(&path), "attempt {n} left {}", path.display());
        assert_eq!(mem.total_bytes(), 0);
    }
    // A failed directory sync, too.
    mem.set_capacity(None);
    mem.inject(crate::fs::Fault {
        op: crate::fs::FaultOp::SyncDir,
        path_contains: None,
        skip: 0,
        times: Some(1),
        errno: libc::EIO,
    });
    let path = dir.join("000009.log");
    assert!(WalWriter::create(&fs, &dir, &path, 9, 1 << 16, None).is_err());
    assert!(!fs.exists(&path));
}
