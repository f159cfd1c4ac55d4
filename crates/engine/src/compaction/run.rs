//! The compaction thread and the merge it runs.

use super::picker::{pick, Compaction};
use crate::db::background::{work_loop, StopAt};
use crate::db::commit::CommitHandle;
use crate::db::{gc, idle, Shared};
use crate::error::{IoContext, Result};
use crate::iter::{LevelSource, MergeIter, Source, TableSource};
use crate::manifest::{TableEntry, VersionEdit};
use crate::table::{SeqRange, Table, TableBuilder};
use crate::types::Value;
use crate::version::table_name;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the thread looks for work when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);
/// Pause after a failed compaction.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Starts the compaction thread.
pub(crate) fn start(
    shared: Arc<Shared>,
    commit: CommitHandle,
) -> Result<std::thread::JoinHandle<()>> {
    let nice = shared.opts.background_nice;
    crate::db::background::spawn("escabelo-compact", nice, move || run_thread(shared, commit))
}

fn run_thread(shared: Arc<Shared>, commit: CommitHandle) {
    let mut last_periodic = Instant::now();
    work_loop(
        &shared,
        "compaction",
        TICK,
        RETRY_DELAY,
        StopAt::Shutdown,
        || {
            if last_periodic.elapsed() >= shared.opts.compaction_interval {
                last_periodic = Instant::now();
                tracing::debug!("periodic compaction check");
            }
            idle::tidy_if_idle(&shared, &commit);
        },
        || run_once(&shared),
    )
}

/// Runs compactions, then blob collections, until none is due.
pub(crate) fn compact_until_idle(shared: &Arc<Shared>, commit: &CommitHandle) -> Result<()> {
    if run_forced_l0(shared)? {
        shared.counters.compactions.fetch_add(1, Ordering::Relaxed);
    }
    while run_once(shared)? {}
    while gc::run_once(shared, commit)? {}
    Ok(())
}

/// Compacts every level-0 file down, whatever their number; false if level
/// 0 was empty.
fn run_forced_l0(shared: &Arc<Shared>) -> Result<bool> {
    let _one_at_a_time = shared.compaction_lock.lock();
    run_forced_l0_locked(shared)
}

/// [`run_forced_l0`] with the compaction lock already held.
pub(crate) fn run_forced_l0_locked(shared: &Arc<Shared>) -> Result<bool> {
    let version = shared.vs.lock().current.clone();
    match super::picker::pick_level0(&version, &shared.opts) {
        Some(c) => run_compaction(shared, c).map(|_| true),
        None => Ok(false),
    }
}

/// Runs one compaction; false if none was due.
fn run_once(shared: &Arc<Shared>) -> Result<bool> {
    let _one_at_a_time = shared.compaction_lock.lock();
    let version = shared.vs.lock().current.clone();
    let chosen = {
        let mut cursors = shared.compaction_cursors.lock();
        pick(&version, &shared.opts, &mut cursors)
    };
    if let Some(c) = chosen {
        run_compaction(shared, c)?;
        shared.counters.compactions.fetch_add(1, Ordering::Relaxed);
        shared.wake_background();
        return Ok(true);
    }
    Ok(false)
}

fn run_compaction(shared: &Arc<Shared>, c: Compaction) -> Result<()> {
    let start = Instant::now();
    let mut edit = VersionEdit::default();
    for t in &c.inputs {
        edit.deleted_tables.push((c.level as u32, t.entry.number));
    }
    if c.is_trivial_move() {
        for t in &c.inputs {
            let mut e = t.entry.clone();
            e.level = c.output_level as u32;
            edit.added_tables.push(e);
        }
        let tables: Vec<Arc<Table>> = c.inputs.iter().map(|t| t.table.clone()).collect();
        let mut vs = shared.vs.lock();
        return shared.log_and_apply(&mut vs, edit, &tables, &[]);
    }
    for t in &c.overlapping {
        edit.deleted_tables
            .push((c.output_level as u32, t.entry.number));
    }
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if c.level == 0 {
        for t in &c.inputs {
            sources.push(Box::new(TableSource::new(&t.table)));
        }
    } else {
        sources.push(Box::new(LevelSource::new(c.inputs.clone())));
    }
    sources.push(Box::new(LevelSource::new(c.overlapping.clone())));
    let mut outputs: Vec<TableBuilder> = Vec::new();
    let mut finished: Vec<Arc<Table>> = Vec::new();
    let res = merge_into(shared, &c, sources, &mut outputs, &mut finished, &mut edit);
    if let Err(e) = res {
        for b in outputs {
            b.abandon();
        }
        shared.remove_outputs(
            finished
                .iter()
                .map(|t| shared.path(&table_name(t.number()))),
        );
        return Err(e);
    }
    {
        let mut vs = shared.vs.lock();
        if let Err(e) = shared.log_and_apply(&mut vs, edit, &finished, &[]) {
            drop(vs);
            shared.remove_outputs(
                finished
                    .iter()
                    .map(|t| shared.path(&table_name(t.number()))),
            );
            return Err(e);
        }
    }
    let read: u64 = c
        .inputs
        .iter()
        .chain(&c.overlapping)
        .map(|t| t.entry.file_size)
        .sum();
    shared
        .counters
        .compaction_bytes_read
        .fetch_add(read, Ordering::Relaxed);
    for t in c.inputs.iter().chain(&c.overlapping) {
        let p = shared.path(&table_name(t.entry.number));
        if let Err(e) = shared.fs.remove_file(&p) {
            tracing::warn!(error = %e, file = %p.display(), "could not remove compacted table");
        }
    }
    tracing::debug!(
        level = c.level,
        output_level = c.output_level,
        inputs = c.inputs.len() + c.overlapping.len(),
        outputs = finished.len(),
        ms = start.elapsed().as_millis() as u64,
        "compaction done"
    );
    Ok(())
}

fn merge_into(
    shared: &Arc<Shared>,
    c: &Compaction,
    sources: Vec<Box<dyn Source>>,
    outputs: &mut Vec<TableBuilder>,
    finished: &mut Vec<Arc<Table>>,
    edit: &mut VersionEdit,
) -> Result<()> {
    let target = shared.opts.table_file_size;
    let seqs = c
        .inputs
        .iter()
        .chain(&c.overlapping)
        .map(|t| t.table.seqs())
        .reduce(SeqRange::hull)
        .unwrap_or_default();
    for item in MergeIter::new(sources, b"")? {
        let (key, value): (Bytes, Value) = item?;
        if c.bottommost && value == Value::Tombstone {
            continue;
        }
        let full = outputs.last().is_none_or(|b| b.estimated_size() >= target);
        if full {
            if let Some(b) = outputs.pop() {
                finish_output(shared, b, c.output_level, finished, edit)?;
            }
            let n = shared.vs.lock().new_file_number();
            let mut b = TableBuilder::create(&shared.fs, &shared.path(&table_name(n)), n)?;
            // Each output may hold a version from any input.
            b.note_seqs(seqs);
            outputs.push(b);
        }
        if let Some(b) = outputs.last_mut() {
            b.add(&key, &value)?;
        }
    }
    if let Some(b) = outputs.pop() {
        finish_output(shared, b, c.output_level, finished, edit)?;
    }
    shared
        .fs
        .sync_dir(&shared.dir)
        .ctx(|| format!("sync directory {}", shared.dir.display()))
}

fn finish_output(
    shared: &Arc<Shared>,
    b: TableBuilder,
    level: usize,
    finished: &mut Vec<Arc<Table>>,
    edit: &mut VersionEdit,
) -> Result<()> {
    let meta = b.finish()?;
    let c = &shared.counters;
    c.bytes_written.fetch_add(meta.file_size, Ordering::Relaxed);
    c.compaction_bytes_written
        .fetch_add(meta.file_size, Ordering::Relaxed);
    let table = Table::open_cached(
        &shared.fs,
        &shared.path(&table_name(meta.number)),
        meta.number,
        shared.block_cache.clone(),
    )?;
    finished.push(table);
    edit.added_tables.push(TableEntry {
        level: level as u32,
        number: meta.number,
        file_size: meta.file_size,
        entries: meta.entries,
        smallest: meta.smallest,
        largest: meta.largest,
    });
    Ok(())
}
