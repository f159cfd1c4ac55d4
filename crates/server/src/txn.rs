//! The engine's transaction API (`escabelo_engine::Txn`), used by every
//! conditional, multi-key or read-modify-write command and by `EXEC`: the
//! ops of one transaction apply atomically with respect to every other
//! client and are logged as one record group (all or none after a crash).

pub use escabelo_engine::{Txn, TxnAction, TxnCallback, TxnCond, TxnOp, TxnResult};

/// Submits `txn`; `done` runs once it is applied (ordered with plain
/// writes submitted by the same thread).
pub fn submit_txn(db: &escabelo_engine::Db, txn: Txn, done: TxnCallback) {
    db.submit_txn(txn, done);
}
