//! Unit tests for blob files, on the real file system.

use super::*;
use crate::fs::{FsRef, OpenMode, RealFs};
use crate::limits::KEY_LEN_MAX;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn real_fs() -> FsRef {
    Arc::new(RealFs)
}

/// Deterministic pseudo-random bytes.
fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

type Rec = (Vec<u8>, Vec<u8>);

fn write_file(fs: &FsRef, path: &Path, number: u64, recs: &[Rec]) -> (Vec<BlobRef>, BlobFileMeta) {
    let mut w = BlobWriter::create(fs, path, number).unwrap();
    let mut refs = Vec::new();
    for (k, v) in recs {
        let before = w.size();
        let r = w.add(k, v).unwrap();
        assert_eq!(r.file, number);
        assert_eq!(r.offset, before - FOOTER_LEN);
        assert_eq!(w.size(), before + u64::from(r.len));
        refs.push(r);
    }
    assert_eq!(w.records(), recs.len() as u64);
    let expected_size = w.size();
    let meta = w.finish().unwrap();
    assert_eq!(meta.file_size, expected_size);
    (refs, meta)
}

fn mixed_records() -> Vec<Rec> {
    let sizes = [
        0usize,
        1,
        100,
        1023,
        1024,
        4096,
        100_000,
        256 * 1024 - 1,
        256 * 1024,
        256 * 1024 + 1,
        1 << 20,
        2 << 20,
    ];
    let mut recs = Vec::new();
    for (i, &s) in sizes.iter().enumerate() {
        let key_len = [0, 1, 16, KEY_LEN_MAX][i % 4];
        recs.push((bytes_of(key_len, i as u64 + 1000), bytes_of(s, i as u64)));
    }
    for i in 0..300u64 {
        let key = format!("key-{i:05}").into_bytes();
        recs.push((key, bytes_of(1024 + (i as usize * 37) % 3000, i + 7)));
    }
    // A big key with a big value at the end too.
    recs.push((vec![b'k'; KEY_LEN_MAX], bytes_of(2 << 20, 99)));
    recs
}

fn path_in(dir: &tempfile::TempDir, number: u64) -> PathBuf {
    dir.path().join(format!("{number:06}.blob"))
}

#[test]
fn round_trip_get_and_iter() {
    let dir = tempfile::tempdir().unwrap();
    let fs = real_fs();
    let path = path_in(&dir, 7);
    let recs = mixed_records();
    let (refs, meta) = write_file(&fs, &path, 7, &recs);
    assert_eq!(meta.number, 7);
    assert_eq!(meta.records, recs.len() as u64);
    assert_eq!(
        meta.record_bytes,
        refs.iter().map(|r| u64::from(r.len)).sum::<u64>()
    );
    assert_eq!(meta.file_size, HEADER_LEN + meta.record_bytes + FOOTER_LEN);

    let r = BlobReader::open(&fs, &path, 7).unwrap();
    assert_eq!(r.meta(), meta);
    assert_eq!(r.number(), 7);
    assert_eq!(r.file_size(), meta.file_size);
    // Reads in reverse order, to not depend on sequential access.
    for ((k, v), p) in recs.iter().zip(&refs).rev() {
        assert_eq!(r.get(p, k).unwrap(), Bytes::from(v.clone()));
    }
    let mut n = 0;
    for (item, ((k, v), p)) in r.iter().zip(recs.iter().zip(&refs)) {
        let (rr, kk, vv) = item.unwrap();
        assert_eq!(&rr, p);
        assert_eq!(&kk[..], &k[..]);
        assert_eq!(&vv[..], &v[..]);
        n += 1;
    }
    assert_eq!(n, recs.len());
    assert_eq!(r.iter().count(), recs.len());
    assert!(r.iter().all(|x| x.is_ok()));
}

#[test]
fn empty_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let fs = real_fs();
    let path = path_in(&dir, 1);
    let (_, meta) = write_file(&fs, &path, 1, &[]);
    assert_eq!(meta.file_size, HEADER_LEN + FOOTER_LEN);
    let r = BlobReader::open(&fs, &path, 1).unwrap();
    assert_eq!(r.iter().count(), 0);
    let (found, skipped) = salvage(&fs, &path, 1).unwrap();
    assert!(found.is_empty());
    assert_eq!(skipped, 0);
}

fn flip_byte(fs: &FsRef, path: &Path, offset: u64) {
    let f = fs.open(path, OpenMode::ReadWrite).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
}

fn small_records(n: u64) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            (
                format!("key-{i:04}").into_bytes(),
                bytes_of(1000 + i as usize * 13, i),
            )
        })
        .collect()
}

#[test]
fn flipped_byte_is_corruption_and_others_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let fs = real_fs();
    let path = path_in(&dir, 3);
    let recs = small_records(20);
    let (refs, _) = write_file(&fs, &path, 3, &recs);
    let bad = 9;
    // Flip a byte in the value, then (separately) in the length varint and crc.
    for delta in [u64::from(refs[bad].len) - 1, 4, 0, 12] {
        let at = refs[bad].offset + delta;
        flip_byte(&fs, &path, at);
        let r = BlobReader::open(&fs, &path, 3).unwrap();
        let e = r.get(&refs[bad], &recs[bad].0).unwrap_err();
        assert!(e.is_corruption(), "{e}");
        for (i, ((k, v), p)) in recs.iter().zip(&refs).enumerate() {
            if i != bad {
                assert_eq!(&r.get(p, k).unwrap()[..], &v[..]);
            }
        }
        // The scan yields the records before the damage, then one error, then stops.
        let items: Vec<_> = r.iter().collect();
        assert_eq!(items.len(), bad + 1);
        assert!(items[..bad].iter().all(|x| x.is_ok()));
        assert!(items[bad].as_ref().unwrap_err().is_corruption());
        flip_byte(&fs, &path, at); // restore
        assert!(r.get(&refs[bad], &recs[bad].0).is_ok());
    }
}

#[test]
fn misdirected_pointers_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let fs = real_fs();
    let path = path_in(&dir, 5);
    let recs = small_records(5);
    let (refs, meta) = write_file(&fs, &path, 5, &recs);
    let r = BlobReader::open(&fs, &path, 5).unwrap();
    let p = refs[2];
    let check = |p: BlobRef, key: &[u8]| {
        let e = r.get(&p, key).unwrap_err();
        assert!(e.is_corruption(), "{e}");
    };
    check(p, b"some other key");
    check(p, &recs[1].0);
    check(BlobRef { file: 6, ..p }, &recs[2].0);
    check(
        BlobRef {
            checksum: p.checksum ^ 1,
            ..p
        },
        &recs[2].0,
    );
    check(
        BlobRef {
            len: p.len - 1,
            ..p
        },
        &recs[2].0,
    );
    check(
        BlobRef {
            len: p.len + 1,
            ..p
        },
        &recs[2].0,
    );
    check(
        BlobRef {
            offset: p.offset + 1,
            ..p
        },
        &recs[2].0,
    );
    check(BlobRef { offset: 0, ..p }, &recs[2].0);
    check(
        BlobRef {
            offset: meta.file_size - 10,
            ..p
        },
        &recs[2].0,
    );
    check(
        BlobRef {
            offset: u64::MAX - 2,
            ..p
        },
        &recs[2].0,
    );
    check(BlobRef { len: u32::MAX, ..p }, &recs[2].0);
    check(BlobRef { len: 0, ..p }, &recs[2].0);
    // The pointer to another record, with this record's key.
    check(refs[3], &recs[2].0);

    // A file copied under another number: header and records fail.
    let other = path_in(&dir, 6);
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&other, &data).unwrap();
    let e = BlobReader::open(&fs, &other, 6).unwrap_err();
    assert!(e.is_corruption(), "{e}");
    let (found, _) = salvage(&fs, &other, 6).unwrap();
    assert!(found.is_empty());
}

#[test]
fn truncated_or_unfinished_file_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let fs = real_fs();
    let path = path_in(&dir, 2);
    let recs = small_records(10);
    let (_, meta) = write_file(&fs, &path, 2, &recs);
    let f = fs.open(&path, OpenMode::ReadWrite).unwrap();
    for len in [
        meta.file_size - 1,
        meta.file_size - FOOTER_LEN,
        1000,
        30,
        10,
        0,
    ] {
        f.set_len(len).unwrap();
        let e = BlobReader::open(&fs, &path, 2).unwrap_err();
        assert!(e.is_corruption(), "{e}");
        assert!(!e.to_string().is_empty());
    }

    // An unfinished writer's file (dropped without finish) has no footer.
    let p2 = path_in(&dir, 4);
    let mut w = BlobWriter::create(&fs, &p2, 4).unwrap();
    for (k, v) in small_records(400) {
        w.add(&k, &v).unwrap();
    }
    drop(w);
    let e = BlobReader::open(&fs, &p2, 4).unwrap_err();
    assert!(e.is_corruption(), "{e}");
    // ... but salvage gets back what reached the disk.
    let (found, _) = salvage(&fs, &p2, 4).unwrap();
    assert!(!found.is_empty());

    // Garbage in place of the header.
    let p3 = path_in(&dir, 8);
    std::fs::write(&p3, bytes_of(5000, 1)).unwrap();
    assert!(BlobReader::open(&fs, &p3, 8).unwrap_err().is_corruption());
}

#[test]
fn abandon_removes_file_and_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let fs = real_fs();
    let path = path_in(&dir, 9);
    let mut w = BlobWriter::create(&fs, &path, 9).unwrap();
    w.add(b"k", b"v").unwrap();
    assert!(matches!(
        w.add(&vec![0; KEY_LEN_MAX + 1], b"v"),
        Err(crate::Error::InvalidArgument(_))
    ));
    w.abandon();
    assert!(!fs.exists(&path));
}

#[test]
fn salvage_recovers_around_damage() {
    let dir = tempfile::tempdir().unwrap();
    let fs = real_fs();
    let path = path_in(&dir, 11);
    let mut recs = small_records(30);
    recs[12].1 = bytes_of(600_000, 5); // larger than the read chunk
    let (refs, _) = write_file(&fs, &path, 11, &recs);

    // Intact file: everything, nothing skipped.
    let (found, skipped) = salvage(&fs, &path, 11).unwrap();
    assert_eq!(found.len(), recs.len());
    assert_eq!(skipped, 0);

    // Damage record 5's length field, record 12's value and record 20's crc.
    flip_byte(&fs, &path, refs[5].offset + 4);
    flip_byte(&fs, &path, refs[12].offset + 5000);
    flip_byte(&fs, &path, refs[20].offset + 1);
    let (found, skipped) = salvage(&fs, &path, 11).unwrap();
    let lost = [5usize, 12, 20];
    let expect: Vec<usize> = (0..recs.len()).filter(|i| !lost.contains(i)).collect();
    assert_eq!(found.len(), expect.len());
    for ((r, k, v), &i) in found.iter().zip(&expect) {
        assert_eq!(r, &refs[i]);
        assert_eq!(&k[..], &recs[i].0[..]);
        assert_eq!(&v[..], &recs[i].1[..]);
    }
    assert_eq!(
        skipped,
        lost.iter().map(|&i| u64::from(refs[i].len)).sum::<u64>()
    );

    // Truncated in the middle of a record, footer gone.
    let f = fs.open(&path, OpenMode::ReadWrite).unwrap();
    f.set_len(refs[25].offset + 100).unwrap();
    let (found, skipped) = salvage(&fs, &path, 11).unwrap();
    let expect: Vec<usize> = (0..25).filter(|i| !lost.contains(i)).collect();
    assert_eq!(found.len(), expect.len());
    assert_eq!(
        skipped,
        100 + lost.iter().map(|&i| u64::from(refs[i].len)).sum::<u64>()
    );
}

#[test]
fn garbage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let fs = real_fs();
    for seed in 0..20u64 {
        let path = path_in(&dir, seed);
        let mut data = bytes_of(3000 + seed as usize * 17, seed);
        // Sometimes a valid header in front of the garbage.
        if seed % 2 == 0 {
            data[..HEADER_LEN as usize].copy_from_slice(&record::encode_header(seed));
        }
        std::fs::write(&path, &data).unwrap();
        assert!(BlobReader::open(&fs, &path, seed).is_err());
        let (found, skipped) = salvage(&fs, &path, seed).unwrap();
        assert!(found.is_empty());
        assert_eq!(skipped, data.len() as u64 - HEADER_LEN);
    }
}

#[test]
fn file_with_lying_footer_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let fs = real_fs();
    let path = path_in(&dir, 12);
    let recs = small_records(4);
    let (_, meta) = write_file(&fs, &path, 12, &recs);
    // Rewrite the footer claiming one more record than there are.
    let footer = record::encode_footer(12, meta.records + 1, meta.record_bytes);
    let f = fs.open(&path, OpenMode::ReadWrite).unwrap();
    f.write_all_at(&footer, meta.file_size - FOOTER_LEN)
        .unwrap();
    let r = BlobReader::open(&fs, &path, 12).unwrap();
    let items: Vec<_> = r.iter().collect();
    assert_eq!(items.len(), 5);
    assert!(items[4].as_ref().unwrap_err().is_corruption());
}

#[test]
fn reader_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BlobReader>();
    let dir = tempfile::tempdir().unwrap();
    let fs = real_fs();
    let path = path_in(&dir, 13);
    let recs = small_records(50);
    let (refs, _) = write_file(&fs, &path, 13, &recs);
    let r = BlobReader::open(&fs, &path, 13).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (r, recs, refs) = (&r, &recs, &refs);
            s.spawn(move || {
                for (i, ((k, v), p)) in recs.iter().zip(refs).enumerate() {
                    if i % 4 == t {
                        assert_eq!(&r.get(p, k).unwrap()[..], &v[..]);
                    }
                }
            });
        }
    });
}
