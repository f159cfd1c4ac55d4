//! # escabelo-engine
//!
//! The Escabelo storage engine: a log-structured merge tree with a
//! write-ahead log and group commit, block-based table files with Bloom
//! filters, leveled compaction, and key-value separation for large values.
//!
//! The byte layout of every file is documented next to its code and
//! collected in `docs/format.md`:
//! - [`wal`]: the write-ahead log;
//! - [`table`]: sorted table files;
//! - [`blob`]: blob files holding large values;
//! - [`manifest`]: the record of which files are live.
//!
//! The engine does no networking; the `escabelo` server crate puts it on a
//! socket.

#![deny(missing_docs)]

pub mod blob;
pub mod cache;
pub mod coding;
pub mod compaction;
pub mod db;
pub mod error;
pub mod fs;
pub mod iter;
pub mod limits;
pub mod manifest;
pub mod memtable;
pub mod options;
pub mod table;
pub mod tools;
pub mod types;
pub mod version;
pub mod wal;

pub use db::metrics::{Histogram, HistogramSnapshot, LogSyncs, WriteHistograms};
pub use db::{
    Db, Found, Stats, Txn, TxnAction, TxnCallback, TxnCond, TxnOp, TxnResult, WriteCallback,
    WriteOp, TXN_OPS_MAX,
};
pub use error::{Error, Result};
pub use options::{Durability, Options};
