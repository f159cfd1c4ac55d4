//! `oplog`: lists the operations still held in the write-ahead log.
//!
//! # What is listed
//!
//! The *live* log segments are the `NNNNNN.log` files numbered at or after
//! the manifest's log number (the same set `Db::open` replays and
//! [`check`](super::check) verifies). They hold every write acknowledged
//! since the memtables were last flushed; older writes are summarized by the
//! tables, which keep only the newest version of each key and no order, so
//! they are not listed. Segments are read in number order, each with
//! [`WalReader`] in [`ReadMode::Strict`], i.e. in replay order.
//!
//! Each log entry becomes one [`OpEntry`]:
//!
//! - `seq`: the entry's position, starting at 1, in the output of this run:
//!   a running count of entries across the live segments in replay order
//!   (each entry of a transaction counts once). It is not stored on disk and
//!   is not stable across runs: a flush removes segments and the count
//!   starts again from the oldest remaining one.
//! - `file`, `offset`: the segment and the offset of the record's first
//!   header byte. The entries of a record group (one transaction, see
//!   [`crate::wal`]) share the offset of their one record and carry
//!   `txn = Some((index, count))`, 1-based.
//! - `op`: [`OpKind::Write`] for an inline value (a put), [`OpKind::Delete`]
//!   for a tombstone, [`OpKind::GcMove`] for a blob pointer (written by blob
//!   garbage collection when it moves a value).
//! - `key`, and `len`: the value's length for a write, the length of the
//!   whole blob record (header, key and value) the pointer names for a
//!   gc-move, none for a delete.
//!
//! With [`OplogOptions::tables`], the entries of the level-0 tables (the
//! most recent flushes) come first, oldest table first, each as a
//! [`TableOp`]: a table holds one entry per key (its newest version at the
//! time of the flush), in key order, with no offset or sequence number.
//!
//! A torn tail (the unsynced end of a crash, which recovery drops) is
//! reported as a note after the segment's entries, not as an error; a bad
//! record that recovery would refuse is an [`Error::Corruption`].
//!
//! # Offline and follow modes
//!
//! Without `follow`, the tool takes the directory lock like `check`, so it
//! fails with [`Error::Locked`] while a server has the database open.
//!
//! With `follow`, it takes no lock and only reads (it never writes, renames
//! or deletes a file), so it is safe to run against a live server: it lists
//! what is there, then every [`OplogOptions::poll_interval`] re-reads the
//! manifest and the live segments and lists entries not listed yet (a new
//! segment, or records appended to one already seen), until the sink asks
//! it to stop. Limits of that mode: a segment that is flushed and deleted
//! between two polls may have entries that are never listed (they are in a
//! table by then); torn tails are not noted (the end of a live segment is
//! routinely incomplete); an error (a file deleted or replaced while it was
//! read) is retried at the next poll and returned only after
//! [`FOLLOW_RETRIES_MAX`] consecutive failing polls.

use super::{load_manifest, lock_dir, short_name};
use crate::error::{Error, IoContext, Result};
use crate::manifest::LiveFiles;
use crate::options::Options;
use crate::table::Table;
use crate::types::Value;
use crate::version::{blob_name, log_name, parse_file_name, table_name, FileKind};
use crate::wal::{ReadMode, WalReader, WalRecord};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

/// Consecutive failing polls after which `follow` gives up.
pub const FOLLOW_RETRIES_MAX: u32 = 20;

/// Default interval between two polls in `follow` mode.
pub const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How to run [`oplog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OplogOptions {
    /// Take no lock, and keep polling for new entries (module doc).
    pub follow: bool,
    /// Time between two polls in follow mode.
    pub poll_interval: Duration,
    /// First list the entries of the level-0 tables (once, at the start).
    pub tables: bool,
}

impl Default for OplogOptions {
    fn default() -> Self {
        OplogOptions {
            follow: false,
            poll_interval: FOLLOW_POLL_INTERVAL,
            tables: false,
        }
    }
}

/// What an entry of the log does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A put: the value is inline.
    Write,
    /// A delete: a tombstone.
    Delete,
    /// A blob pointer update written by blob garbage collection.
    GcMove,
}

impl OpKind {
    /// The name printed: `write`, `delete` or `gc-move`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Write => "write",
            OpKind::Delete => "delete",
            OpKind::GcMove => "gc-move",
        }
    }
}

/// One entry of the log (fields described in the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpEntry {
    /// Position in this run's output, from 1.
    pub seq: u64,
    /// Number of the log segment.
    pub log: u64,
    /// Offset of the record in the segment.
    pub offset: u64,
    /// What the entry does.
    pub op: OpKind,
    /// The key.
    pub key: Bytes,
    /// Value length (write), blob record length (gc-move), none (delete).
    pub len: Option<u64>,
    /// For a gc-move: the blob file number and the record's offset in it.
    pub blob: Option<(u64, u64)>,
    /// For an entry of a record group: its index (from 1) and the count.
    pub txn: Option<(u32, u32)>,
}

impl OpEntry {
    /// One line of text: `seq=N file=F offset=O op=OP key=K len=L`, then
    /// ` blob=FILE@OFFSET` for a gc-move and ` txn=I/N` in a group. The key
    /// is escaped by [`escape_key`]; `len=-` for a delete.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "seq={} file={} offset={} op={} key={} len=",
            self.seq,
            log_name(self.log),
            self.offset,
            self.op.name(),
            escape_key(&self.key)
        );
        match self.len {
            Some(l) => {
                let _ = write!(s, "{l}");
            }
            None => s.push('-'),
        }
        if let Some((f, o)) = self.blob {
            let _ = write!(s, " blob={}@{o}", blob_name(f));
        }
        if let Some((i, n)) = self.txn {
            let _ = write!(s, " txn={i}/{n}");
        }
        s
    }

    /// One JSON object on one line: `seq`, `file`, `offset`, `op`, `key`
    /// (escaped by [`escape_key`]), `len` (null for a delete), `blob`
    /// (`{"file","offset"}` or null) and `txn` (`{"index","count"}` or
    /// null).
    pub fn to_json(&self) -> String {
        let len = self.len.map_or("null".to_string(), |l| l.to_string());
        let blob = json_blob(self.blob);
        let txn = self.txn.map_or("null".to_string(), |(i, n)| {
            format!("{{\"index\":{i},\"count\":{n}}}")
        });
        format!(
            "{{\"seq\":{},\"file\":{},\"offset\":{},\"op\":{},\"key\":{},\"len\":{len},\
             \"blob\":{blob},\"txn\":{txn}}}",
            self.seq,
            json_str(&log_name(self.log)),
            self.offset,
            json_str(self.op.name()),
            json_str(&escape_key(&self.key)),
        )
    }
}

/// One entry of a level-0 table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOp {
    /// Number of the table file.
    pub table: u64,
    /// [`OpKind::Write`] (inline or blob value) or [`OpKind::Delete`].
    pub op: OpKind,
    /// The key.
    pub key: Bytes,
    /// Value length (inline), blob record length (blob), none (delete).
    pub len: Option<u64>,
    /// For a value in a blob file: the file number and the record offset.
    pub blob: Option<(u64, u64)>,
}

impl TableOp {
    /// `table=NNNNNN.sst level=0 op=OP key=K len=L`, then ` blob=FILE@OFFSET`
    /// for a value in a blob file.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "table={} level=0 op={} key={} len={}",
            table_name(self.table),
            self.op.name(),
            escape_key(&self.key),
            self.len.map_or("-".to_string(), |l| l.to_string())
        );
        if let Some((f, o)) = self.blob {
            let _ = write!(s, " blob={}@{o}", blob_name(f));
        }
        s
    }

    /// `{"table","level","op","key","len","blob"}` on one line.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"table\":{},\"level\":0,\"op\":{},\"key\":{},\"len\":{},\"blob\":{}}}",
            json_str(&table_name(self.table)),
            json_str(self.op.name()),
            json_str(&escape_key(&self.key)),
            self.len.map_or("null".to_string(), |l| l.to_string()),
            json_blob(self.blob)
        )
    }
}

/// `{"file","offset"}` or `null`.
fn json_blob(blob: Option<(u64, u64)>) -> String {
    blob.map_or("null".to_string(), |(f, o)| {
        format!("{{\"file\":{},\"offset\":{o}}}", json_str(&blob_name(f)))
    })
}

/// The kind, length and blob location of a value.
fn describe_value(v: &Value) -> (OpKind, Option<u64>, Option<(u64, u64)>) {
    match v {
        Value::Inline(v) => (OpKind::Write, Some(v.len() as u64), None),
        Value::Tombstone => (OpKind::Delete, None, None),
        Value::Blob(p) => (
            OpKind::GcMove,
            Some(u64::from(p.len)),
            Some((p.file, p.offset)),
        ),
    }
}

/// What [`oplog`] hands to its sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OplogEvent {
    /// An entry of the log.
    Entry(OpEntry),
    /// An entry of a level-0 table (with [`OplogOptions::tables`]).
    Table(TableOp),
    /// A remark that is not an error (a torn tail).
    Note(String),
    /// Follow mode: a poll found nothing more; the sink may stop here.
    Polled,
}

/// Totals of one run of [`oplog`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OplogSummary {
    /// Entries listed.
    pub entries: u64,
    /// Log records they came from (a group is one record).
    pub records: u64,
    /// Live segments read (in follow mode: distinct segments seen).
    pub segments: u64,
    /// The manifest's log number at the last read.
    pub log_number: u64,
}

/// Escapes a key so that every byte is printable on one line and the
/// escaping is reversible: bytes `!`..=`~` except `\` stand for themselves,
/// `\` is `\\`, and every other byte (space, controls, non-ASCII) is `\xNN`
/// with two lowercase hex digits.
pub fn escape_key(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key {
        if b == b'\\' {
            s.push_str("\\\\");
        } else if b.is_ascii_graphic() {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// A JSON string literal for `s`.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Lists the entries of the live log segments in replay order, handing each
/// to `sink`; stops early (returning `Ok`) when `sink` returns false. See
/// the module doc for what is listed and for the follow mode.
///
/// Fails with [`Error::Locked`] (without `follow`) while the server runs,
/// [`Error::InvalidArgument`] if the directory does not exist or holds no
/// database, and [`Error::Corruption`] for a damaged log or manifest.
pub fn oplog(
    opts: &Options,
    lo: &OplogOptions,
    sink: &mut dyn FnMut(OplogEvent) -> bool,
) -> Result<OplogSummary> {
    if !lo.follow {
        let _lock = lock_dir(opts)?;
        let mut st = State {
            tables_pending: lo.tables,
            ..State::default()
        };
        st.poll(opts, false, sink)?;
        return Ok(st.summary);
    }
    if !opts.fs.exists(&opts.dir) {
        return Err(Error::InvalidArgument(format!(
            "data directory {} does not exist",
            opts.dir.display()
        )));
    }
    let mut st = State {
        tables_pending: lo.tables,
        ..State::default()
    };
    let mut failures = 0u32;
    loop {
        match st.poll(opts, true, sink) {
            Ok(false) => return Ok(st.summary),
            Ok(true) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= FOLLOW_RETRIES_MAX {
                    return Err(e);
                }
            }
        }
        if !sink(OplogEvent::Polled) {
            return Ok(st.summary);
        }
        std::thread::sleep(lo.poll_interval);
    }
}

/// Writes every event of [`oplog`] as a line to `out` (text: entries as
/// [`OpEntry::to_text`], notes as `note: ...`; JSON: entries as
/// [`OpEntry::to_json`], notes as `{"note":"..."}`), then, unless
/// following, a summary line (`summary: N entries in R records, S log
/// segments from NNNNNN.log`, or `{"summary":{...}}`). Each line is flushed;
/// a failed write (a closed pipe) stops the listing with an error.
pub fn write_oplog(
    opts: &Options,
    lo: &OplogOptions,
    json: bool,
    out: &mut dyn Write,
) -> Result<OplogSummary> {
    let mut failed: Option<std::io::Error> = None;
    let mut sink = |ev: OplogEvent| {
        let line = match ev {
            OplogEvent::Entry(e) if json => e.to_json(),
            OplogEvent::Entry(e) => e.to_text(),
            OplogEvent::Table(t) if json => t.to_json(),
            OplogEvent::Table(t) => t.to_text(),
            OplogEvent::Note(n) if json => format!("{{\"note\":{}}}", json_str(&n)),
            OplogEvent::Note(n) => format!("note: {n}"),
            OplogEvent::Polled => return true,
        };
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    };
    let summary = oplog(opts, lo, &mut sink)?;
    if let Some(e) = failed {
        return Err(Error::io("writing the listing", e));
    }
    if !lo.follow {
        let line = if json {
            format!(
                "{{\"summary\":{{\"entries\":{},\"records\":{},\"segments\":{},\"log_number\":{}}}}}",
                summary.entries, summary.records, summary.segments, summary.log_number
            )
        } else {
            format!(
                "summary: {} entries in {} records, {} log segments from {}",
                summary.entries,
                summary.records,
                summary.segments,
                log_name(summary.log_number)
            )
        };
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("writing the listing", e))?;
    }
    Ok(summary)
}

/// Progress across polls.
#[derive(Default)]
struct State {
    /// Per segment seen: the offset from which records are not listed yet.
    next_offset: BTreeMap<u64, u64>,
    summary: OplogSummary,
    /// The level-0 tables are still to be listed.
    tables_pending: bool,
}

impl State {
    /// Reads the manifest and the live segments once, listing what is new.
    /// `Ok(false)` if the sink asked to stop.
    fn poll(
        &mut self,
        opts: &Options,
        follow: bool,
        sink: &mut dyn FnMut(OplogEvent) -> bool,
    ) -> Result<bool> {
        let Some(fold) = load_manifest(opts)? else {
            return Err(Error::InvalidArgument(format!(
                "{} holds no database (no CURRENT file)",
                opts.dir.display()
            )));
        };
        self.summary.log_number = fold.log_number;
        if self.tables_pending {
            self.tables_pending = false;
            if !list_tables(opts, &fold.live, sink)? {
                return Ok(false);
            }
        }
        let mut logs: Vec<u64> = opts
            .fs
            .list_dir(&opts.dir)
            .ctx(|| format!("list {}", opts.dir.display()))?
            .iter()
            .filter_map(|n| match parse_file_name(n) {
                Some(FileKind::Log(n)) if n >= fold.log_number => Some(n),
                _ => None,
            })
            .collect();
        logs.sort_unstable();
        // Segments below the log number are flushed: forget them.
        self.next_offset = self.next_offset.split_off(&fold.log_number);
        for n in logs {
            let path = opts.dir.join(log_name(n));
            if follow && !opts.fs.exists(&path) {
                continue; // flushed and deleted since the listing
            }
            let from = match self.next_offset.get(&n) {
                Some(&o) => o,
                None => {
                    self.summary.segments += 1;
                    self.next_offset.insert(n, 0);
                    0
                }
            };
            if !self.segment(opts, n, from, follow, sink)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Lists the records of segment `n` at or after offset `from`.
    fn segment(
        &mut self,
        opts: &Options,
        n: u64,
        from: u64,
        follow: bool,
        sink: &mut dyn FnMut(OplogEvent) -> bool,
    ) -> Result<bool> {
        let name = log_name(n);
        let path = opts.dir.join(&name);
        let mut reader = WalReader::open(&opts.fs, &path, n, ReadMode::Strict)?;
        // The entries of one record share its offset: collect a run of
        // equal offsets, list it when the next offset differs.
        let mut run: Vec<WalRecord> = Vec::new();
        loop {
            let rec = reader.next_record()?;
            if run
                .first()
                .is_some_and(|r| rec.as_ref().is_none_or(|x| x.offset != r.offset))
            {
                let group = std::mem::take(&mut run);
                if !self.emit(n, group, sink) {
                    return Ok(false);
                }
            }
            match rec {
                Some(r) if r.offset >= from => run.push(r),
                Some(_) => {}
                None => break,
            }
        }
        let tail = reader.tail().clone();
        if !follow && (tail.dropped_records > 0 || tail.dropped_bytes > 0) {
            let note = format!(
                "{}: torn tail at offset {}: {} records, {} bytes not listed; recovery drops \
                 them ({}; normal after a crash)",
                short_name(&path, &opts.dir),
                tail.bad_offset.unwrap_or(reader.end_offset()),
                tail.dropped_records,
                tail.dropped_bytes,
                tail.reason.as_deref().unwrap_or("bad record")
            );
            if !sink(OplogEvent::Note(note)) {
                return Ok(false);
            }
        }
        if !follow && tail.end_copy_damaged {
            let note = format!(
                "{name}: the copy of the end marker is missing or damaged (every record is \
                 intact; `escabelo check` reports it)"
            );
            if !sink(OplogEvent::Note(note)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Lists the entries of one record (several for a group).
    fn emit(
        &mut self,
        n: u64,
        group: Vec<WalRecord>,
        sink: &mut dyn FnMut(OplogEvent) -> bool,
    ) -> bool {
        let Some(offset) = group.first().map(|r| r.offset) else {
            return true;
        };
        self.next_offset.insert(n, offset + 1);
        self.summary.records += 1;
        let count = u32::try_from(group.len()).unwrap_or(u32::MAX);
        for (i, r) in group.into_iter().enumerate() {
            self.summary.entries += 1;
            let (op, len, blob) = describe_value(&r.value);
            let entry = OpEntry {
                seq: self.summary.entries,
                log: n,
                offset,
                op,
                key: r.key,
                len,
                blob,
                txn: (count > 1).then(|| (u32::try_from(i + 1).unwrap_or(u32::MAX), count)),
            };
            if !sink(OplogEvent::Entry(entry)) {
                return false;
            }
        }
        true
    }
}

/// Lists the entries of the level-0 tables, oldest first. `Ok(false)` if
/// the sink asked to stop.
fn list_tables(
    opts: &Options,
    live: &LiveFiles,
    sink: &mut dyn FnMut(OplogEvent) -> bool,
) -> Result<bool> {
    // Table numbers ascend with age within level 0; the map is by number.
    for t in live.tables.values().filter(|t| t.level == 0) {
        let path = opts.dir.join(table_name(t.number));
        let table = Table::open(&opts.fs, &path, t.number)?;
        for item in table.iter() {
            let (key, value) = item?;
            let (op, len, blob) = describe_value(&value);
            // A blob pointer in a table is a write whose value is in a blob
            // file.
            let op = if op == OpKind::GcMove {
                OpKind::Write
            } else {
                op
            };
            let ev = OplogEvent::Table(TableOp {
                table: t.number,
                op,
                key,
                len,
                blob,
            });
            if !sink(ev) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_key_is_printable_and_reversible() {
        assert_eq!(escape_key(b"user:1"), "user:1");
        assert_eq!(escape_key(b"a b\\c\n\xff\""), "a\\x20b\\\\c\\x0a\\xff\"");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\u{1}"), "\"a\\\"b\\\\c\\u0001\"");
    }

    #[test]
    fn a_gc_move_names_its_blob_record() {
        let e = OpEntry {
            seq: 9,
            log: 12,
            offset: 40,
            op: OpKind::GcMove,
            key: Bytes::from_static(b"k"),
            len: Some(1500),
            blob: Some((7, 1234)),
            txn: None,
        };
        assert_eq!(
            e.to_text(),
            "seq=9 file=000012.log offset=40 op=gc-move key=k len=1500 blob=000007.blob@1234"
        );
        assert_eq!(
            e.to_json(),
            "{\"seq\":9,\"file\":\"000012.log\",\"offset\":40,\"op\":\"gc-move\",\"key\":\"k\",\
             \"len\":1500,\"blob\":{\"file\":\"000007.blob\",\"offset\":1234},\"txn\":null}"
        );
    }
}
