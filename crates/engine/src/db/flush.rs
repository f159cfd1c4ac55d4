//! The flush thread: frozen memtables become a level-0 table and a blob
//! file.
//!
//! Values at least `blob_threshold` bytes long go to the blob file and the
//! table keeps a pointer. For each key, the previous version in the tables
//! is looked up: a pointer it held is now garbage (counted against its blob
//! file), and a tombstone for a key that no table holds is dropped instead
//! of written. The edit that adds the files also advances the log number,
//! so the memtable's log segment is no longer needed once the edit is
//! durable.
//!
//! A failed lookup (an unreadable block in an older table) never fails the
//! flush, since that would turn one bad block into a write outage: the key's
//! tombstone is kept (it may shadow something), and the garbage of the
//! pointer it may have replaced is not counted. Garbage counts are then an
//! underestimate for those keys, so that blob file may be collected later
//! than its true dead share warrants; when it is collected, the liveness
//! check of every record finds the real garbage. The flush logs one
//! warning with the number of failed lookups and the first error.

use super::Shared;
use crate::blob::{BlobReader, BlobWriter};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{BlobEntry, TableEntry, VersionEdit};
use crate::memtable::Memtable;
use crate::table::{SeqRange, Table, TableBuilder};
use crate::types::Value;
use crate::version::{blob_name, log_name, table_name, Version};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Pause after a failed flush before trying again.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// Starts the flush thread.
pub(crate) fn start(shared: Arc<Shared>) -> Result<std::thread::JoinHandle<()>> {
    let nice = shared.opts.background_nice;
    super::background::spawn("escabelo-flush", nice, move || run(shared))
}

fn run(shared: Arc<Shared>) {
    loop {
        let imm = {
            let mut vs = shared.vs.lock();
            loop {
                if shared.shutdown.load(Ordering::Acquire) {
                    return;
                }
                if let Some(m) = vs.imms.first() {
                    break m.clone();
                }
                shared.bg_cv.wait_for(&mut vs, Duration::from_secs(1));
            }
        };
        let result = flush_one(&shared, &imm);
        shared
            .counters
            .flush_attempts
            .fetch_add(1, Ordering::Release);
        match result {
            Ok(()) => {
                *shared.flush_error.lock() = None;
                shared.counters.flushes.fetch_add(1, Ordering::Relaxed);
                shared.wake_background();
            }
            Err(e) => {
                tracing::error!(error = %e, "flush failed; will retry");
                *shared.flush_error.lock() = Some(e);
                shared.wake_background();
                let mut vs = shared.vs.lock();
                if !shared.shutdown.load(Ordering::Acquire) {
                    shared.bg_cv.wait_for(&mut vs, RETRY_DELAY);
                }
            }
        }
    }
}

/// Outputs of a flush under construction, removed again on failure.
#[derive(Default)]
struct Outputs {
    table: Option<TableBuilder>,
    blob: Option<BlobWriter>,
}

impl Outputs {
    fn abandon(&mut self) {
        if let Some(t) = self.table.take() {
            t.abandon();
        }
        if let Some(b) = self.blob.take() {
            b.abandon();
        }
    }
}

fn flush_one(shared: &Arc<Shared>, imm: &Arc<Memtable>) -> Result<()> {
    let start = std::time::Instant::now();
    let version = shared.vs.lock().current.clone();
    let (table_no, blob_no) = {
        let mut vs = shared.vs.lock();
        (vs.new_file_number(), vs.new_file_number())
    };
    let mut out = Outputs::default();
    let mut garbage = imm.blob_garbage();
    let built = build(
        shared,
        imm,
        &version,
        table_no,
        blob_no,
        &mut out,
        &mut garbage,
    );
    if let Err(e) = built {
        out.abandon();
        return Err(e);
    }
    let mut edit = VersionEdit::default();
    let mut tables = Vec::new();
    let mut blobs = Vec::new();
    let mut written = Vec::new();
    let finished = (|| -> Result<()> {
        if let Some(b) = out.blob.take() {
            let meta = b.finish()?;
            written.push(shared.path(&blob_name(meta.number)));
            shared.counters.add_flush_written(meta.file_size);
            blobs.push(BlobReader::open(
                &shared.fs,
                &shared.path(&blob_name(meta.number)),
                meta.number,
            )?);
            edit.added_blobs.push(BlobEntry {
                number: meta.number,
                file_size: meta.file_size,
                records: meta.records,
                record_bytes: meta.record_bytes,
            });
        }
        if let Some(t) = out.table.take() {
            let meta = t.finish()?;
            written.push(shared.path(&table_name(meta.number)));
            shared.counters.add_flush_written(meta.file_size);
            tables.push(Table::open_cached(
                &shared.fs,
                &shared.path(&table_name(meta.number)),
                meta.number,
                shared.block_cache.clone(),
            )?);
            edit.added_tables.push(TableEntry {
                level: 0,
                number: meta.number,
                file_size: meta.file_size,
                entries: meta.entries,
                smallest: meta.smallest,
                largest: meta.largest,
            });
        }
        shared
            .fs
            .sync_dir(&shared.dir)
            .ctx(|| format!("sync directory {}", shared.dir.display()))
    })();
    if let Err(e) = finished {
        out.abandon();
        shared.remove_outputs(written);
        return Err(e);
    }
    edit.blob_garbage = garbage.into_iter().filter(|(_, b)| *b > 0).collect();
    let entries = imm.len();
    let recycles = shared.recycles_logs();
    let mut vs = shared.vs.lock();
    // The oldest frozen memtable is the one being flushed: only this
    // thread removes memtables from the queue.
    let pos = vs.imms.iter().position(|m| Arc::ptr_eq(m, imm));
    let Some(pos) = pos else {
        return Err(Error::InvalidArgument("flushed memtable vanished".into()));
    };
    let removed = vs.imms.remove(pos);
    edit.log_number = Some(
        vs.imms
            .first()
            .map_or(vs.mem.log_number(), |m| m.log_number()),
    );
    if let Err(e) = shared.log_and_apply(&mut vs, edit, &tables, &blobs) {
        vs.imms.insert(pos, removed);
        drop(vs);
        shared.remove_outputs(written);
        return Err(e);
    }
    vs.live_logs.retain(|(n, _)| *n != imm.log_number());
    let log_path = shared.path(&log_name(imm.log_number()));
    if recycles && vs.recyclable_logs.is_empty() {
        let size = shared
            .fs
            .open(&log_path, crate::fs::OpenMode::Read)
            .and_then(|f| f.len())
            .unwrap_or(0);
        vs.recyclable_logs.push((log_path, size));
    } else if let Err(e) = shared.fs.remove_file(&log_path) {
        tracing::warn!(error = %e, log = %log_path.display(), "could not remove flushed log");
    }
    drop(vs);
    tracing::debug!(
        entries,
        tables = tables.len(),
        blobs = blobs.len(),
        ms = start.elapsed().as_millis() as u64,
        "flushed memtable"
    );
    Ok(())
}

fn build(
    shared: &Arc<Shared>,
    imm: &Memtable,
    version: &Version,
    table_no: u64,
    blob_no: u64,
    out: &mut Outputs,
    garbage: &mut HashMap<u64, u64>,
) -> Result<()> {
    let threshold = shared.opts.blob_threshold;
    let mut failed_lookups = 0u64;
    let mut first_error: Option<Error> = None;
    for (key, value, seq) in imm.iter() {
        // `None`: the lookup failed, so what is below is unknown.
        let older = match version.get(&key) {
            Ok(v) => Some(v),
            Err(e) => {
                failed_lookups += 1;
                first_error.get_or_insert(e);
                None
            }
        };
        if let Some(Some(Value::Blob(r))) = &older {
            *garbage.entry(r.file).or_insert(0) += u64::from(r.len);
        }
        let stored = match value {
            Value::Tombstone if matches!(older, Some(None | Some(Value::Tombstone))) => continue,
            Value::Inline(v) if threshold.is_some_and(|t| v.len() >= t) => {
                if out.blob.is_none() {
                    out.blob = Some(BlobWriter::create(
                        &shared.fs,
                        &shared.path(&blob_name(blob_no)),
                        blob_no,
                    )?);
                }
                match out.blob.as_mut() {
                    Some(w) => Value::Blob(w.add(&key, &v)?),
                    None => continue,
                }
            }
            v => v,
        };
        if out.table.is_none() {
            out.table = Some(TableBuilder::create(
                &shared.fs,
                &shared.path(&table_name(table_no)),
                table_no,
            )?);
        }
        if let Some(t) = out.table.as_mut() {
            t.note_seqs(SeqRange::at(seq));
            t.add(&key, &stored)?;
        }
    }
    if let Some(e) = first_error {
        tracing::warn!(
            failed_lookups,
            error = %e,
            "flush could not read older versions of some keys; \
             their blob garbage is not counted and their tombstones are kept"
        );
    }
    Ok(())
}

/// Waits until no frozen memtable is left, or a flush attempted after this
/// call began fails (an older failure does not count: the flush thread is
/// woken to try again at once).
pub(crate) fn wait_flushed(shared: &Shared) -> Result<()> {
    let start = shared.counters.flush_attempts.load(Ordering::Acquire);
    shared.wake_background();
    let mut vs = shared.vs.lock();
    loop {
        if vs.imms.is_empty() {
            return Ok(());
        }
        if shared.counters.flush_attempts.load(Ordering::Acquire) > start {
            if let Some(e) = shared.flush_error.lock().as_ref() {
                return Err(e.clone());
            }
        }
        if shared.shutdown.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        shared.bg_cv.wait_for(&mut vs, Duration::from_millis(50));
    }
}
