//! The manifest: which table and blob files are live, at which level, and
//! which log segments are still needed.
//!
//! # Files
//! - `CURRENT`: the name of the live manifest file followed by `\n`. It is
//!   replaced atomically: written to `CURRENT.tmp`, fsynced, renamed over
//!   `CURRENT`, then the directory is fsynced.
//! - `MANIFEST-NNNNNN`: an 8-byte magic `ESCMANI1` followed by records.
//!
//! # Record layout
//! ```text
//! crc32c:    u32 LE   CRC32C of the length field and the payload
//! length:    u32 LE   payload length, 1 ..= MANIFEST_RECORD_MAX
//! len_check: u32 LE   CRC32C of the length field, xor 0xa282ead8
//! payload:   a version edit (see below)
//! ```
//! A record is written with one write and then fdatasynced; an edit takes
//! effect only once its record is durable. The first record of a manifest
//! is a full snapshot (every live file), so older manifests can be deleted.
//!
//! Reading: bytes that are all zeros end the edits (a failed append is
//! overwritten with zeros by the next one). A header cut short by the end
//! of the file, or a checked length that runs past it, is a torn write from
//! a crash: it is dropped (the edit never happened; nothing relied on it).
//! Anything else that fails a check (the length check, the record CRC, the
//! edit's syntax) is corruption, even in the last record, and the open
//! fails naming the manifest and the offset: the length is never trusted
//! before its own check, so a damaged length cannot pass for a torn tail.
//!
//! # Version edit payload
//! A sequence of fields, each a one-byte tag followed by varints
//! (`lp` = varint length then bytes):
//! ```text
//! 1 log_number         varint u64: log segments below this are obsolete
//! 2 next_file_number   varint u64
//! 3 add table          level, number, file_size, entries, lp smallest, lp largest
//! 4 delete table       level, number
//! 5 add blob file      number, file_size, records, record_bytes
//! 6 delete blob file   number
//! 7 blob garbage       number, bytes (added to the file's dead byte count)
//! 8 blob garbage set   number, bytes (the file's dead byte count, outright)
//! ```
//! Unknown tags are corruption (a newer format must change the magic).
//!
//! Invariants: a file is added by an edit only after it was written,
//! fdatasynced and the directory fsynced; a file is unlinked only after the
//! edit deleting it is durable. On open, files that the manifest does not
//! reference are deleted (they are leftovers of interrupted work).
//!
//! Every edit must also keep the level invariants: levels are in range, a
//! deleted file is live, an added one is not, tables below level 0 have
//! disjoint key ranges, and an edit that moves data between levels never
//! moves it past an overlapping table of a level in between (newer data
//! stays above older). They are checked where edits are applied, in
//! `live.rs` (shared by [`LiveFiles`] and the engine's version): a manifest
//! that breaks them is corruption at open.

mod edit;
mod live;
mod log;

pub use edit::{BlobEntry, TableEntry, VersionEdit};
pub use live::LiveFiles;
pub(crate) use live::{apply_edit, EditTarget};
pub(crate) use log::replace_current;
pub use log::{read_current, read_manifest, set_current, ManifestWriter, MANIFEST_MAGIC};

/// Largest manifest record accepted.
pub const MANIFEST_RECORD_MAX: usize = 64 * 1024 * 1024;

/// A manifest larger than this is rewritten as a snapshot.
pub const MANIFEST_ROLL_SIZE: u64 = 8 * 1024 * 1024;
