//! Transactions: several reads and conditional writes applied as one.
//!
//! A [`Txn`] goes through the same commit queue as plain writes, so it is
//! ordered with them: the writes one thread submits, transactions included,
//! apply in submission order. The commit thread evaluates its operations in
//! order against the newest state (plus the earlier operations of the same
//! transaction), and no other write runs in between. Its writes are logged
//! together as one log record group (see [`crate::wal`]): after a crash
//! either all of them are there or none.
//!
//! Validation happens before anything is applied: an invalid key or value
//! (or an append that would pass the value limit) fails the whole
//! transaction with [`Error::InvalidArgument`], and nothing of it is
//! written.

use crate::error::{Error, Result};
use crate::types::Value;
use bytes::{Bytes, BytesMut};

/// Most operations in one transaction.
pub const TXN_OPS_MAX: usize = 1 << 16;

/// What one operation of a transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnAction {
    /// Reads the current value (returned as [`TxnResult::old`]).
    Get,
    /// Sets the key to this value.
    Put(Bytes),
    /// Removes the key; `applied` says whether it existed.
    Delete,
    /// Appends these bytes to the current value (an absent key counts as
    /// empty).
    Append(Bytes),
}

/// When an operation applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnCond {
    /// Always.
    Always,
    /// Only if the key is absent.
    IfAbsent,
    /// Only if the key is present.
    IfPresent,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOp {
    /// The key.
    pub key: Bytes,
    /// What to do.
    pub action: TxnAction,
    /// When to do it.
    pub cond: TxnCond,
    /// Return the value the key had before this operation.
    pub want_old: bool,
}

impl TxnOp {
    /// An unconditional operation that does not return the old value.
    pub fn new(key: Bytes, action: TxnAction) -> TxnOp {
        TxnOp {
            key,
            action,
            cond: TxnCond::Always,
            want_old: false,
        }
    }
}

/// Operations applied together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// The operations, in order.
    pub ops: Vec<TxnOp>,
    /// If any operation's condition fails, none is applied (conditions are
    /// then judged on the state before the transaction).
    pub all_or_nothing: bool,
}

/// The outcome of one operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnResult {
    /// The condition held and the operation was applied (for a delete: the
    /// key existed; for a get: the key is present).
    pub applied: bool,
    /// The value before the operation, for a get or with `want_old`.
    pub old: Option<Bytes>,
    /// Length of the key's value after the operation (0 if absent).
    pub new_len: u64,
}

/// Called once the transaction is durable (per the durability mode) and
/// visible, or has failed.
pub type TxnCallback = Box<dyn FnOnce(Result<Vec<TxnResult>>) + Send + 'static>;

impl Txn {
    /// Bytes of keys and values, for batching and backpressure.
    pub(crate) fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|o| {
                16 + o.key.len()
                    + match &o.action {
                        TxnAction::Put(v) | TxnAction::Append(v) => v.len(),
                        _ => 0,
                    }
            })
            .sum()
    }

    /// Checks what can be checked before the state is known.
    pub(crate) fn validate(
        &self,
        check: impl Fn(&[u8], Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        if self.ops.len() > TXN_OPS_MAX {
            return Err(Error::InvalidArgument(format!(
                "transaction too large: {} operations (max {TXN_OPS_MAX})",
                self.ops.len()
            )));
        }
        for o in &self.ops {
            let value = match &o.action {
                TxnAction::Put(v) | TxnAction::Append(v) => Some(v.as_ref()),
                _ => None,
            };
            check(&o.key, value)?;
        }
        Ok(())
    }
}

/// The current state as the commit thread sees it.
pub(crate) trait State {
    /// The newest entry of `key`.
    fn entry(&mut self, key: &[u8]) -> Result<Option<Value>>;
    /// The bytes of a live entry (reads a blob if needed).
    fn bytes(&mut self, key: &[u8], v: &Value) -> Result<Bytes>;
}

/// The writes a transaction makes, in order, and one result per operation.
pub(crate) type Evaluated = (Vec<(Bytes, Value)>, Vec<TxnResult>);

/// Evaluates `txn` against `state`: the writes to log and apply (in order;
/// a key may appear more than once) and one result per operation.
pub(crate) fn evaluate(
    txn: &Txn,
    state: &mut dyn State,
    value_len_max: usize,
) -> Result<Evaluated> {
    // Values written by earlier operations of this transaction, newest last.
    let mut local: Vec<(Bytes, Option<Bytes>)> = Vec::new();
    let current = |state: &mut dyn State,
                   local: &[(Bytes, Option<Bytes>)],
                   key: &Bytes|
     -> Result<Option<Bytes>> {
        if let Some((_, v)) = local.iter().rev().find(|(k, _)| k == key) {
            return Ok(v.clone());
        }
        match state.entry(key)? {
            None | Some(Value::Tombstone) => Ok(None),
            Some(v) => state.bytes(key, &v).map(Some),
        }
    };
    if txn.all_or_nothing {
        for o in &txn.ops {
            let present = current(state, &local, &o.key)?.is_some();
            let holds = match o.cond {
                TxnCond::Always => true,
                TxnCond::IfAbsent => !present,
                TxnCond::IfPresent => present,
            };
            if !holds {
                return Ok((Vec::new(), vec![TxnResult::default(); txn.ops.len()]));
            }
        }
    }
    let mut writes = Vec::new();
    let mut results = Vec::with_capacity(txn.ops.len());
    for o in &txn.ops {
        let old = current(state, &local, &o.key)?;
        let holds = txn.all_or_nothing
            || match o.cond {
                TxnCond::Always => true,
                TxnCond::IfAbsent => old.is_none(),
                TxnCond::IfPresent => old.is_some(),
            };
        let old_len = old.as_ref().map_or(0, |v| v.len() as u64);
        let mut r = TxnResult {
            applied: false,
            old: if o.want_old || o.action == TxnAction::Get {
                old.clone()
            } else {
                None
            },
            new_len: old_len,
        };
        if holds {
            let new: Option<Option<Bytes>> = match &o.action {
                TxnAction::Get => {
                    r.applied = old.is_some();
                    None
                }
                TxnAction::Put(v) => {
                    r.applied = true;
                    Some(Some(v.clone()))
                }
                TxnAction::Delete => {
                    r.applied = old.is_some();
                    old.is_some().then_some(None)
                }
                TxnAction::Append(suffix) => {
                    let base = old.clone().unwrap_or_default();
                    let len = base.len() + suffix.len();
                    if len > value_len_max {
                        return Err(Error::InvalidArgument(format!(
                            "value too long: {len} bytes (max {value_len_max})"
                        )));
                    }
                    let mut b = BytesMut::with_capacity(len);
                    b.extend_from_slice(&base);
                    b.extend_from_slice(suffix);
                    r.applied = true;
                    Some(Some(b.freeze()))
                }
            };
            if let Some(new) = new {
                r.new_len = new.as_ref().map_or(0, |v| v.len() as u64);
                writes.push((
                    o.key.clone(),
                    match &new {
                        Some(v) => Value::Inline(v.clone()),
                        None => Value::Tombstone,
                    },
                ));
                local.push((o.key.clone(), new));
            }
        }
        results.push(r);
    }
    Ok((writes, results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Map(BTreeMap<Bytes, Bytes>);
    impl State for Map {
        fn entry(&mut self, key: &[u8]) -> Result<Option<Value>> {
            Ok(self.0.get(key).map(|v| Value::Inline(v.clone())))
        }
        fn bytes(&mut self, _key: &[u8], v: &Value) -> Result<Bytes> {
            match v {
                Value::Inline(b) => Ok(b.clone()),
                _ => Err(Error::InvalidArgument("not inline".into())),
            }
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn op(k: &str, action: TxnAction, cond: TxnCond, want_old: bool) -> TxnOp {
        TxnOp {
            key: b(k),
            action,
            cond,
            want_old,
        }
    }

    #[test]
    fn later_ops_see_earlier_ones() {
        let mut m = Map(BTreeMap::new());
        let txn = Txn {
            ops: vec![
                op("k", TxnAction::Put(b("1")), TxnCond::Always, false),
                op("k", TxnAction::Append(b("23")), TxnCond::Always, true),
                op("k", TxnAction::Get, TxnCond::Always, false),
                op("k", TxnAction::Delete, TxnCond::Always, false),
                op("k", TxnAction::Delete, TxnCond::Always, false),
                op("k", TxnAction::Put(b("x")), TxnCond::IfAbsent, false),
            ],
            all_or_nothing: false,
        };
        let (writes, r) = evaluate(&txn, &mut m, 100).unwrap();
        assert_eq!(r[1].old, Some(b("1")));
        assert_eq!(r[1].new_len, 3);
        assert_eq!(r[2].old, Some(b("123")));
        assert!(r[3].applied);
        assert!(!r[4].applied);
        assert!(r[5].applied);
        assert_eq!(writes.len(), 4);
        assert_eq!(writes[3], (b("k"), Value::Inline(b("x"))));
    }

    #[test]
    fn all_or_nothing_applies_none_when_one_condition_fails() {
        let mut m = Map(BTreeMap::from([(b("b"), b("old"))]));
        let txn = Txn {
            ops: vec![
                op("a", TxnAction::Put(b("1")), TxnCond::IfAbsent, false),
                op("b", TxnAction::Put(b("2")), TxnCond::IfAbsent, false),
            ],
            all_or_nothing: true,
        };
        let (writes, r) = evaluate(&txn, &mut m, 100).unwrap();
        assert!(writes.is_empty());
        assert!(r.iter().all(|r| !r.applied));
    }

    #[test]
    fn append_past_the_limit_fails_the_whole_txn() {
        let mut m = Map(BTreeMap::from([(b("k"), b("12345"))]));
        let txn = Txn {
            ops: vec![
                op("a", TxnAction::Put(b("1")), TxnCond::Always, false),
                op("k", TxnAction::Append(b("678")), TxnCond::Always, false),
            ],
            all_or_nothing: false,
        };
        assert!(matches!(
            evaluate(&txn, &mut m, 6),
            Err(Error::InvalidArgument(_))
        ));
    }
}
