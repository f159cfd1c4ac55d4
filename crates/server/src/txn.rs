//! Stand-in for the engine's transaction API (`txn-api.md`) until it lands
//! on main: the same types and `submit_txn`, applied op by op. Replaced by
//! a re-export of `escabelo_engine`'s types once they exist.

use bytes::Bytes;
use escabelo_engine::{Db, Result, WriteOp};
use std::collections::HashMap;

/// What one op does.
pub enum TxnAction {
    /// Read the current value.
    Get,
    /// Set the key to this value.
    Put(Bytes),
    /// Remove the key.
    Delete,
    /// Append these bytes to the current value.
    Append(Bytes),
}

/// When an op applies.
pub enum TxnCond {
    /// Always.
    Always,
    /// Only if the key is absent.
    IfAbsent,
    /// Only if the key is present.
    IfPresent,
}

/// One op of a transaction.
pub struct TxnOp {
    /// The key.
    pub key: Bytes,
    /// The action.
    pub action: TxnAction,
    /// The condition.
    pub cond: TxnCond,
    /// Return the previous value.
    pub want_old: bool,
}

/// A transaction.
pub struct Txn {
    /// The ops, in order.
    pub ops: Vec<TxnOp>,
    /// Apply none if any condition fails.
    pub all_or_nothing: bool,
}

/// The outcome of one op.
pub struct TxnResult {
    /// Whether the op applied.
    pub applied: bool,
    /// The previous value.
    pub old: Option<Bytes>,
    /// The new length.
    pub new_len: u64,
}

/// Called with the outcome.
pub type TxnCallback = Box<dyn FnOnce(Result<Vec<TxnResult>>) + Send + 'static>;

/// Runs `txn` (not atomically: this is the stand-in) and calls `done`.
pub fn submit_txn(db: &Db, txn: Txn, done: TxnCallback) {
    done(run(db, txn));
}

fn run(db: &Db, txn: Txn) -> Result<Vec<TxnResult>> {
    let mut overlay: HashMap<Bytes, Option<Bytes>> = HashMap::new();
    let mut results = Vec::with_capacity(txn.ops.len());
    let mut writes = Vec::new();
    let mut failed = false;
    for op in txn.ops {
        let cur = match overlay.get(&op.key) {
            Some(v) => v.clone(),
            None => db.get(&op.key)?,
        };
        let ok = match op.cond {
            TxnCond::Always => true,
            TxnCond::IfAbsent => cur.is_none(),
            TxnCond::IfPresent => cur.is_some(),
        };
        let mut r = TxnResult {
            applied: ok,
            old: if op.want_old || matches!(op.action, TxnAction::Get) {
                cur.clone()
            } else {
                None
            },
            new_len: 0,
        };
        if !ok {
            failed = true;
            results.push(r);
            continue;
        }
        match op.action {
            TxnAction::Get => {}
            TxnAction::Put(v) => {
                db.validate(&op.key, Some(&v))?;
                r.new_len = v.len() as u64;
                overlay.insert(op.key.clone(), Some(v.clone()));
                writes.push(WriteOp::Put {
                    key: op.key,
                    value: v,
                });
            }
            TxnAction::Delete => {
                r.applied = cur.is_some();
                overlay.insert(op.key.clone(), None);
                writes.push(WriteOp::Delete { key: op.key });
            }
            TxnAction::Append(a) => {
                let mut v = cur.map(|c| c.to_vec()).unwrap_or_default();
                v.extend_from_slice(&a);
                let v = Bytes::from(v);
                db.validate(&op.key, Some(&v))?;
                r.new_len = v.len() as u64;
                overlay.insert(op.key.clone(), Some(v.clone()));
                writes.push(WriteOp::Put {
                    key: op.key,
                    value: v,
                });
            }
        }
        results.push(r);
    }
    if failed && txn.all_or_nothing {
        for r in &mut results {
            r.applied = false;
        }
        return Ok(results);
    }
    for w in writes {
        match w {
            WriteOp::Put { key, value } => db.put(&key, &value)?,
            WriteOp::Delete { key } => {
                db.delete(&key)?;
            }
        }
    }
    Ok(results)
}
