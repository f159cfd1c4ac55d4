//! Tests of the offline `check` and `repair` tools.

use escabelo_engine::tools::{check, repair};
use escabelo_engine::{Db, Error, Options};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn small_options(dir: &Path) -> Options {
    let mut o = Options::new(dir);
    o.memtable_size = 64 * 1024;
    o.blob_threshold = Some(512);
    o.blob_file_size = 256 * 1024;
    o.table_file_size = 32 * 1024;
    o.base_level_size = 64 * 1024;
    o.level_size_multiplier = 4;
    o.l0_compaction_trigger = 2;
    o
}

fn value_for(i: usize, version: usize) -> Vec<u8> {
    // Every fifth value goes to a blob file.
    let len = if i.is_multiple_of(5) {
        1500 + i % 700
    } else {
        20 + i % 200
    };
    let mut v = format!("value-{i}-{version}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v
}

fn key_for(i: usize) -> String {
    format!("key-{i:06}")
}

/// Builds a database with tables (flushed and compacted), blob files, and
/// unflushed records in the log; returns the expected contents.
fn build(opts: &Options) -> BTreeMap<String, Vec<u8>> {
    let db = Db::open(opts.clone()).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..3 {
        for i in 0..600 {
            let (k, v) = (key_for(i), value_for(i, round));
            db.put(k.as_bytes(), &v).unwrap();
            model.insert(k, v);
        }
        for i in (round..600).step_by(17) {
            db.delete(key_for(i).as_bytes()).unwrap();
            model.remove(&key_for(i));
        }
        db.flush().unwrap();
    }
    db.compact().unwrap();
    // Unflushed writes stay in the log.
    for i in 600..700 {
        let (k, v) = (key_for(i), value_for(i, 9));
        db.put(k.as_bytes(), &v).unwrap();
        model.insert(k, v);
    }
    db.delete(key_for(1).as_bytes()).unwrap();
    model.remove(&key_for(1));
    db.close().unwrap();
    drop(db);
    model
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn manifest_path(dir: &Path) -> PathBuf {
    let cur = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(cur.trim_end())
}

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x5a;
    std::fs::write(path, b).unwrap();
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn assert_contents(opts: &Options, model: &BTreeMap<String, Vec<u8>>) {
    let db = Db::open(opts.clone()).unwrap();
    for (k, v) in model {
        let got = db.get(k.as_bytes()).unwrap();
        assert_eq!(got.as_deref(), Some(v.as_slice()), "key {k}");
    }
    let keys: Vec<String> = db
        .keys()
        .unwrap()
        .map(|k| String::from_utf8(k.unwrap().to_vec()).unwrap())
        .collect();
    let want: Vec<String> = model.keys().cloned().collect();
    assert_eq!(keys, want);
    db.close().unwrap();
}

#[test]
fn check_healthy_database() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_options(dir.path());
    let model = build(&opts);
    assert!(!files_ending(dir.path(), ".blob").is_empty());
    assert!(!files_ending(dir.path(), ".sst").is_empty());
    let r = check(&opts).unwrap();
    assert!(r.is_ok(), "{r}");
    // Every live key has at least one entry (table entry or log record).
    assert!(r.entries >= model.len() as u64, "{r}");
    assert!(r.blob_records > 0, "{r}");
    let text = r.to_string();
    assert!(text.lines().last().unwrap().starts_with("OK:"), "{text}");
    // Check modifies nothing and the database still opens.
    let db = Db::open(opts.clone()).unwrap();
    db.close().unwrap();
}

#[test]
fn check_refuses_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_options(dir.path());
    let db = Db::open(opts.clone()).unwrap();
    db.put(b"k", b"v").unwrap();
    assert!(matches!(check(&opts), Err(Error::Locked(_))));
    db.close().unwrap();
    drop(db);
    assert!(check(&opts).unwrap().is_ok());
}

/// Damages one file, checks that `check` names it, and returns the report.
fn check_finds(damage: impl FnOnce(&Path) -> PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_options(dir.path());
    build(&opts);
    let damaged = damage(dir.path());
    let r = check(&opts).unwrap();
    assert!(!r.is_ok(), "{r}");
    let name = name_of(&damaged);
    assert!(
        r.problems.iter().any(|p| p.contains(&name)),
        "{name} not named: {r}"
    );
    assert!(r.to_string().lines().last().unwrap().starts_with("DAMAGED"));
}

#[test]
fn check_finds_damaged_table() {
    check_finds(|d| {
        let t = files_ending(d, ".sst").remove(0);
        flip(&t, 100);
        t
    });
}

#[test]
fn check_finds_damaged_blob() {
    check_finds(|d| {
        let b = files_ending(d, ".blob").remove(0);
        flip(&b, 24 + 30);
        b
    });
}

#[test]
fn check_finds_damaged_log() {
    check_finds(|d| {
        let l = files_ending(d, ".log")
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        flip(&l, 20);
        l
    });
}

#[test]
fn check_finds_damaged_manifest() {
    check_finds(|d| {
        let m = manifest_path(d);
        flip(&m, 8 + 8 + 2);
        m
    });
}

#[test]
fn repair_undamaged_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_options(dir.path());
    let model = build(&opts);
    let r = repair(&opts).unwrap();
    assert_eq!(r.lost_entries, 0, "{r}");
    assert_eq!(r.salvaged_entries, model.len() as u64, "{r}");
    assert!(r.damaged_files.is_empty(), "{r}");
    assert!(r.moved_aside_to.starts_with(dir.path().join("lost")));
    assert!(r.moved_aside_to.join("CURRENT").exists());
    let c = check(&opts).unwrap();
    assert!(c.is_ok(), "{c}");
    assert_contents(&opts, &model);
}

#[test]
fn repair_recovers_around_a_damaged_table_block() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_options(dir.path());
    let mut model = build(&opts);
    // Damage the first data block of the largest table, and find which
    // keys it held (the ones check can no longer read).
    let table = files_ending(dir.path(), ".sst")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let before = std::fs::read(&table).unwrap();
    flip(&table, 60);
    let c = check(&opts).unwrap();
    assert!(!c.is_ok());
    let r = repair(&opts).unwrap();
    println!("{r}");
    let name = name_of(&table);
    assert!(r.damaged_files.iter().any(|d| d.contains(&name)), "{r}");
    assert_eq!(r.damaged_blocks, 1, "{r}");
    // The damaged file is kept, byte for byte (with the flip).
    let kept = std::fs::read(r.moved_aside_to.join(&name)).unwrap();
    assert_eq!(kept.len(), before.len());
    assert_ne!(kept, before);
    assert!(!table.exists());
    // Every key outside the damaged block is back with its value; keys of
    // the damaged block are either gone or hold an older intact version.
    let db = Db::open(opts.clone()).unwrap();
    let mut missing = 0;
    for (k, v) in &model {
        match db.get(k.as_bytes()).unwrap() {
            Some(got) if got.as_ref() == v.as_slice() => {}
            _ => missing += 1,
        }
    }
    assert!(missing > 0 && missing < 100, "missing {missing}");
    db.close().unwrap();
    drop(db);
    assert!(check(&opts).unwrap().is_ok());
    // A second repair of the repaired database loses nothing.
    let db = Db::open(opts.clone()).unwrap();
    model.clear();
    for k in db.keys().unwrap() {
        let k = k.unwrap();
        let v = db.get(&k).unwrap().unwrap();
        model.insert(String::from_utf8(k.to_vec()).unwrap(), v.to_vec());
    }
    db.close().unwrap();
    drop(db);
    let r2 = repair(&opts).unwrap();
    assert_eq!(r2.lost_entries, 0);
    assert_contents(&opts, &model);
}

#[test]
fn repair_refuses_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_options(dir.path());
    let db = Db::open(opts.clone()).unwrap();
    assert!(matches!(repair(&opts), Err(Error::Locked(_))));
    db.close().unwrap();
}

#[test]
fn repair_counts_values_lost_with_a_damaged_blob_record() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_options(dir.path());
    let model = build(&opts);
    let blob = files_ending(dir.path(), ".blob").remove(0);
    flip(&blob, 24 + 30);
    let r = repair(&opts).unwrap();
    let name = name_of(&blob);
    assert!(r.damaged_files.iter().any(|d| d.contains(&name)), "{r}");
    assert_eq!(r.lost_entries, 1, "{r}");
    assert_eq!(r.salvaged_entries + 1, model.len() as u64, "{r}");
    assert!(r.to_string().lines().last().unwrap().contains("1 lost"));
    assert!(check(&opts).unwrap().is_ok());
    let db = Db::open(opts.clone()).unwrap();
    let mut present = 0;
    for (k, v) in &model {
        if let Some(got) = db.get(k.as_bytes()).unwrap() {
            assert_eq!(got.as_ref(), v.as_slice(), "key {k}");
            present += 1;
        }
    }
    assert_eq!(present + 1, model.len());
    db.close().unwrap();
}

/// A database whose keys `0..600` have an old version (round 0, compacted
/// into the last level) and a newer one written after it: round 1
/// overwrites every key and deletes every seventh. With `flush_round_1`
/// the newer versions are one level-0 table (the highest table number),
/// otherwise they stay in the log. Returns the expected contents.
fn build_two_versions(opts: &Options, flush_round_1: bool) -> BTreeMap<String, Vec<u8>> {
    let db = Db::open(opts.clone()).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..600 {
        let (k, v) = (key_for(i), value_for(i, 0));
        db.put(k.as_bytes(), &v).unwrap();
        model.insert(k, v);
    }
    db.flush().unwrap();
    db.compact().unwrap();
    for i in 0..600 {
        let k = key_for(i);
        if i % 7 == 3 {
            db.delete(k.as_bytes()).unwrap();
            model.remove(&k);
        } else {
            let v = value_for(i, 1);
            db.put(k.as_bytes(), &v).unwrap();
            model.insert(k, v);
        }
    }
    if flush_round_1 {
        db.flush().unwrap();
    }
    db.close().unwrap();
    drop(db);
    model
}

/// Opens the repaired database and checks that no key holds a value other
/// than its newest one (an overwritten value, or one that was deleted);
/// returns the keys that are absent but should be present.
fn assert_no_stale_values(opts: &Options, model: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let db = Db::open(opts.clone()).unwrap();
    let mut wrong = Vec::new();
    let mut absent = Vec::new();
    for i in 0..600 {
        let k = key_for(i);
        let got = db.get(k.as_bytes()).unwrap();
        match (got, model.get(&k)) {
            (None, Some(_)) => absent.push(k),
            (None, None) => {}
            (Some(g), Some(v)) if g.as_ref() == v.as_slice() => {}
            (Some(g), want) => wrong.push(format!(
                "{k}: got {:?}, newest is {:?}",
                String::from_utf8_lossy(&g[..g.len().min(16)]),
                want.map(|v| String::from_utf8_lossy(&v[..v.len().min(16)]).into_owned())
            )),
        }
    }
    db.close().unwrap();
    assert!(
        wrong.is_empty(),
        "repair served {} overwritten or deleted values: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    absent
}

/// Regression: a key whose newest version was in a damaged table block
/// came back after repair with an older, overwritten value (or deleted
/// keys came back). It must read as absent and be reported lost.
#[test]
fn repair_never_serves_values_overwritten_in_a_damaged_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = small_options(dir.path());
    // Round 1 fits one memtable: one level-0 table over the old versions.
    opts.memtable_size = 4 << 20;
    let model = build_two_versions(&opts, true);
    let newest = files_ending(dir.path(), ".sst").pop().unwrap();
    flip(&newest, 60);
    let r = repair(&opts).unwrap();
    println!("{r}");
    assert_eq!(r.damaged_blocks, 1, "{r}");
    let absent = assert_no_stale_values(&opts, &model);
    assert!(!absent.is_empty(), "the damaged block's keys survived?");
    assert!(
        absent.len() < 100,
        "{} keys lost to one block",
        absent.len()
    );
    assert_lost_listed(&r, &absent);
    assert!(check(&opts).unwrap().is_ok());
}

/// Regression: the same with a damaged record in the middle of a log: the
/// lost record could have been any key's newest version, so no older
/// version may be served in its place.
#[test]
fn repair_never_serves_values_overwritten_in_a_damaged_log_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = small_options(dir.path());
    opts.memtable_size = 4 << 20;
    let model = build_two_versions(&opts, false);
    let log = files_ending(dir.path(), ".log")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let len = std::fs::metadata(&log).unwrap().len();
    flip(&log, len / 2);
    let r = repair(&opts).unwrap();
    println!("{r}");
    assert!(r.skipped_bytes > 0, "{r}");
    let absent = assert_no_stale_values(&opts, &model);
    assert!(!absent.is_empty());
    assert_lost_listed(&r, &absent);
    assert!(check(&opts).unwrap().is_ok());
}

/// Every key that reads as absent but had a value is named as lost: in
/// the report (the first ones) and in the `LOST-KEYS` file (all).
fn assert_lost_listed(r: &escabelo_engine::tools::RepairReport, absent: &[String]) {
    assert!(r.lost_entries >= absent.len() as u64, "{r}");
    let file = r.lost_keys_file.as_ref().expect("a list of lost keys");
    let text = std::fs::read_to_string(file).unwrap();
    let listed: std::collections::HashSet<&str> = text
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(listed.len() as u64, r.lost_entries, "{r}");
    for k in absent {
        assert!(
            listed.contains(k.as_str()),
            "{k} absent but not listed as lost"
        );
    }
    let shown = r.lost_keys.len().min(absent.len());
    assert!(shown > 0, "{r}");
    let text = r.to_string();
    assert!(text.contains("lost     key"), "{text}");
}

/// The same when the table's footer is damaged too, so its index cannot
/// be used: the damaged block's range comes from the intact entries around
/// it.
#[test]
fn repair_never_serves_values_overwritten_in_a_damaged_block_of_a_table_without_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = small_options(dir.path());
    opts.memtable_size = 4 << 20;
    let model = build_two_versions(&opts, true);
    let newest = files_ending(dir.path(), ".sst").pop().unwrap();
    let len = std::fs::metadata(&newest).unwrap().len();
    flip(&newest, len / 2);
    flip(&newest, len - 3);
    let r = repair(&opts).unwrap();
    println!("{r}");
    assert!(r.damaged_blocks >= 1, "{r}");
    let absent = assert_no_stale_values(&opts, &model);
    assert!(!absent.is_empty(), "the damaged block's keys survived?");
    assert!(
        absent.len() < 200,
        "{} keys lost to one block",
        absent.len()
    );
    assert_lost_listed(&r, &absent);
    assert!(check(&opts).unwrap().is_ok());
}
