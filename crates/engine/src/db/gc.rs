//! Blob garbage collection: rewriting a blob file whose dead share passed
//! `blob_gc_threshold` (`blob_gc_idle_threshold` once writes have paused:
//! [`threshold`]).
//!
//! 1. Every record of the file is checked against the tree: it is live if
//!    its key's newest entry still points at it. Only the header and key of
//!    a record are read for this; live records are then read whole,
//!    verified, and copied to a new blob file, which is written, synced and
//!    added to the manifest with all its bytes counted dead. (A damaged key
//!    in a record makes it look dead; its value, which its checksum covers
//!    together with the key, was unreadable already, and after collection
//!    its key's reads report a pointer into a collected file instead.)
//! 2. For each copied record a *move* goes through the commit thread:
//!    "point the key at the new record if it still points at the old one".
//!    A key overwritten meanwhile keeps its newer value, and its copy is
//!    garbage.
//! 3. The log is synced, so the moves are durable, and so are the writes
//!    that made the other records dead; then one manifest edit
//!    removes the old file and sets the new file's dead bytes to what the
//!    moves did not claim; then the old file is unlinked.
//!
//! A crash before step 3 leaves the old file live and the new one counted
//! as all garbage: the next collection redoes the work and nothing leaks.
//!
//! Collection has a thread of its own: it waits for the commit thread,
//! which may itself be waiting (backpressure) for flushes and compactions,
//! so it must never hold up those.

use super::background::{work_loop, StopAt};
use super::commit::CommitHandle;
use super::Shared;
use crate::blob::{BlobReader, BlobWriter};
use crate::error::{IoContext, Result};
use crate::manifest::{BlobEntry, VersionEdit};
use crate::types::Value;
use crate::version::{blob_name, Version};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// How often the collection thread looks for work when nothing wakes it.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);
/// Pause after a failed collection.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the blob collection thread.
pub(crate) fn start(
    shared: Arc<Shared>,
    commit: CommitHandle,
) -> Result<std::thread::JoinHandle<()>> {
    let nice = shared.opts.background_nice;
    super::background::spawn("escabelo-blob-gc", nice, move || {
        work_loop(
            &shared,
            "blob garbage collection",
            TICK,
            RETRY_DELAY,
            StopAt::Closing,
            || {},
            || {
                if !shared.opts.blob_gc_background {
                    return Ok(false);
                }
                run_once(&shared, &commit)
            },
        )
    })
}

/// Collects one blob file if one is due; false if none was.
pub(crate) fn run_once(shared: &Arc<Shared>, commit: &CommitHandle) -> Result<bool> {
    let _one_at_a_time = shared.gc_lock.lock();
    let version = shared.vs.lock().current.clone();
    match pick(&version, threshold(shared)) {
        Some(n) => run(shared, commit, n).map(|_| true),
        None => Ok(false),
    }
}

/// The dead share at which a blob file is collected now: the busy
/// threshold while writes come in (copying little per byte reclaimed), the
/// lower idle one once they have paused (so little garbage stays at rest).
pub(crate) fn threshold(shared: &Shared) -> f64 {
    let o = &shared.opts;
    if super::idle::is_idle(shared) {
        o.blob_gc_idle_threshold.min(o.blob_gc_threshold)
    } else {
        o.blob_gc_threshold
    }
}

/// The blob file most in need of collection, if any passes the threshold.
pub(crate) fn pick(v: &Version, threshold: f64) -> Option<u64> {
    v.blobs
        .values()
        .filter(|b| b.garbage_ratio() >= threshold)
        .max_by(|a, b| a.garbage_ratio().total_cmp(&b.garbage_ratio()))
        .map(|b| b.entry.number)
}

/// Rewrites blob file `number`.
pub(crate) fn run(shared: &Arc<Shared>, commit: &CommitHandle, number: u64) -> Result<()> {
    let start = std::time::Instant::now();
    // Liveness is judged on a published snapshot, never on a batch still
    // being applied (see `Shared::snapshot`).
    let (sv, snap) = shared.snapshot();
    let Some(file) = sv.version.blobs.get(&number).cloned() else {
        return Ok(());
    };
    let new_no = shared.vs.lock().new_file_number();
    let new_path = shared.path(&blob_name(new_no));
    let mut writer: Option<BlobWriter> = None;
    let mut moves = Vec::new();
    let copied = (|| -> Result<()> {
        // A record's liveness is judged from its header and key; only live
        // records have their values read and verified (a dead record's
        // lengths are covered by its header checksum).
        let mut records = file.reader.iter();
        let live = |r: &crate::types::BlobRef, key: &[u8]| -> Result<bool> {
            Ok(matches!(sv.get_raw(key, snap)?, Some(Value::Blob(x)) if x == *r))
        };
        while let Some(rec) = records.next_filtered(live) {
            let (old_ref, key, value) = rec?;
            let Some(value) = value else { continue };
            if writer.is_none() {
                writer = Some(BlobWriter::create(&shared.fs, &new_path, new_no)?);
            }
            if let Some(w) = writer.as_mut() {
                let new_ref = w.add(&key, &value)?;
                moves.push((key, old_ref, new_ref));
            }
        }
        Ok(())
    })();
    if let Err(e) = copied {
        if let Some(w) = writer.take() {
            w.abandon();
        }
        return Err(e);
    }
    drop(sv);

    // Step 1 done: make the new file live, counted as all garbage.
    let mut new_entry = None;
    if let Some(w) = writer.take() {
        let meta = w.finish()?;
        let c = &shared.counters;
        c.bytes_written.fetch_add(meta.file_size, Ordering::Relaxed);
        c.blob_gc_bytes_written
            .fetch_add(meta.file_size, Ordering::Relaxed);
        shared
            .fs
            .sync_dir(&shared.dir)
            .ctx(|| format!("sync directory {}", shared.dir.display()))?;
        let reader = BlobReader::open(&shared.fs, &new_path, new_no)?;
        let entry = BlobEntry {
            number: new_no,
            file_size: meta.file_size,
            records: meta.records,
            record_bytes: meta.record_bytes,
        };
        let edit = VersionEdit {
            added_blobs: vec![entry.clone()],
            blob_garbage_set: vec![(new_no, meta.record_bytes)],
            ..Default::default()
        };
        let mut vs = shared.vs.lock();
        if let Err(e) = shared.log_and_apply(&mut vs, edit, &[], &[reader]) {
            drop(vs);
            shared.remove_outputs([new_path]);
            return Err(e);
        }
        new_entry = Some(entry);
    }

    // Step 2: the moves.
    let (tx, rx) = crossbeam_channel::unbounded();
    for (key, old_ref, new_ref) in &moves {
        let tx = tx.clone();
        let len = u64::from(new_ref.len);
        commit.gc_move(
            key.clone(),
            *old_ref,
            *new_ref,
            Box::new(move |r| {
                let _ = tx.send((r, len));
            }),
        );
    }
    drop(tx);
    let mut claimed = 0u64;
    let mut failure = None;
    for (r, len) in rx.iter() {
        match r {
            Ok(true) => claimed += len,
            Ok(false) => {}
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }

    // Step 3: durable moves, then drop the old file. The log is synced even
    // when nothing moved: a record was judged dead because its key has a
    // newer write, which in `os` mode may not be durable yet; lost to a
    // power cut, the key would point into the removed file again
    // (regression test `blob_collection_that_moves_nothing_syncs_before_it_drops_the_file`
    // in tests/crash.rs; the sync used to come only with moves).
    commit.control_wait(super::commit::Control::Sync)?;
    let mut edit = VersionEdit {
        deleted_blobs: vec![number],
        ..Default::default()
    };
    {
        let mut vs = shared.vs.lock();
        if let Some(entry) = &new_entry {
            let garbage_now = vs
                .current
                .blobs
                .get(&entry.number)
                .map_or(entry.record_bytes, |b| b.garbage);
            // Garbage found by flushes since step 1, plus unclaimed copies.
            let since = garbage_now.saturating_sub(entry.record_bytes);
            let unclaimed = entry.record_bytes.saturating_sub(claimed);
            edit.blob_garbage_set
                .push((entry.number, since + unclaimed));
        }
        shared.log_and_apply(&mut vs, edit, &[], &[])?;
    }
    let old_path = shared.path(&blob_name(number));
    if let Err(e) = shared.fs.remove_file(&old_path) {
        tracing::warn!(error = %e, file = %old_path.display(), "could not remove collected blob file");
    }
    shared.counters.blob_gcs.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .blob_gc_bytes_read
        .fetch_add(file.entry.file_size, Ordering::Relaxed);
    tracing::debug!(
        file = number,
        moved = moves.len(),
        claimed,
        ms = start.elapsed().as_millis() as u64,
        "collected blob file"
    );
    Ok(())
}
