//! Choosing the next compaction.

use crate::options::Options;
use crate::version::{TableFile, Version, NUM_LEVELS};
use bytes::Bytes;

/// A chosen compaction.
#[derive(Debug)]
pub(crate) struct Compaction {
    /// Level the inputs come from.
    pub level: usize,
    /// Level the outputs go to.
    pub output_level: usize,
    /// Input files from `level` (level 0: newest first).
    pub inputs: Vec<TableFile>,
    /// Overlapping files from `output_level`.
    pub overlapping: Vec<TableFile>,
    /// True when no deeper level holds the key range: tombstones can go.
    pub bottommost: bool,
}

impl Compaction {
    /// A single file with nothing under it: a manifest edit moves it.
    pub fn is_trivial_move(&self) -> bool {
        self.level > 0 && self.inputs.len() == 1 && self.overlapping.is_empty() && !self.bottommost
    }
}

/// Target bytes per level and the base level.
pub(crate) fn targets(v: &Version, o: &Options) -> (Vec<u64>, usize) {
    let last = NUM_LEVELS - 1;
    let mut targets = vec![0u64; NUM_LEVELS];
    let base_size = o.base_level_size.max(1);
    let mult = o.level_size_multiplier.max(2);
    let mut cur = v.level_bytes(last).max(base_size);
    let mut base = last;
    targets[last] = cur;
    while base > 1 && cur / mult >= base_size {
        cur /= mult;
        base -= 1;
        targets[base] = cur;
    }
    (targets, base)
}

/// The most urgent compaction, if any is due. `cursors` holds, per level,
/// the largest key of the last file compacted out of it.
pub(crate) fn pick(v: &Version, o: &Options, cursors: &mut [Bytes]) -> Option<Compaction> {
    let (targets, base) = targets(v, o);
    let last = NUM_LEVELS - 1;
    let mut best: Option<(f64, usize)> = None;
    let l0 = v.levels[0].len();
    if l0 > 0 {
        let score = l0 as f64 / o.l0_compaction_trigger.max(1) as f64;
        best = Some((score, 0));
    }
    for (level, &target) in targets.iter().enumerate().take(last).skip(1) {
        let bytes = v.level_bytes(level);
        if bytes == 0 {
            continue;
        }
        // Levels above the base level should be empty: move them down.
        let score = if level < base {
            f64::MAX
        } else {
            bytes as f64 / target.max(1) as f64
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, level));
        }
    }
    let (score, level) = best?;
    if score < 1.0 {
        return None;
    }
    if level == 0 {
        return pick_level0(v, o);
    }
    let (inputs, output_level) = {
        let files = &v.levels[level];
        let cursor = &cursors[level];
        let f = files
            .iter()
            .find(|t| t.entry.smallest > *cursor)
            .or_else(|| files.first())?
            .clone();
        cursors[level] = f.entry.largest.clone();
        (vec![f], level + 1)
    };
    with_overlaps(v, level, output_level, inputs)
}

/// Compaction of every level-0 file into the base level, if there are any.
///
/// If a level above the base level still holds files (the base level moved
/// down when the last level shrank, and they have not been moved down
/// yet), level 0 goes to the first such level instead: its data is older
/// than level 0's and newer than the levels below it, so level 0 must not
/// pass it.
pub(crate) fn pick_level0(v: &Version, o: &Options) -> Option<Compaction> {
    if v.levels[0].is_empty() {
        return None;
    }
    let (_, base) = targets(v, o);
    let output_level = level0_output(v, base);
    with_overlaps(v, 0, output_level, v.levels[0].clone())
}

/// Where level 0 may be compacted to: the base level, or the first
/// non-empty level above it.
fn level0_output(v: &Version, base: usize) -> usize {
    (1..base).find(|&l| !v.levels[l].is_empty()).unwrap_or(base)
}

fn with_overlaps(
    v: &Version,
    level: usize,
    output_level: usize,
    inputs: Vec<TableFile>,
) -> Option<Compaction> {
    let smallest = inputs.iter().map(|t| t.entry.smallest.clone()).min()?;
    let largest = inputs.iter().map(|t| t.entry.largest.clone()).max()?;
    let overlapping = v.overlapping(output_level, &smallest, &largest);
    let bottommost =
        (output_level + 1..NUM_LEVELS).all(|l| v.overlapping(l, &smallest, &largest).is_empty());
    Some(Compaction {
        level,
        output_level,
        inputs,
        overlapping,
        bottommost,
    })
}
