//! String commands: GET, SET, SETNX, GETSET, GETDEL, STRLEN, APPEND, MGET,
//! MSET, MSETNX. Everything conditional or multi-key is one engine
//! transaction, so it is atomic with respect to every other client and
//! all-or-none after a crash.

use super::{
    check_key, check_value, engine_error, stored, syntax_error, wrong_args, Call, KeyCmd, Out, Plan,
};
use crate::reply::Reply;
use crate::server::stats::Counters;
use crate::txn::{TxnAction, TxnCond, TxnOp, TxnResult};
use bytes::Bytes;
use escabelo_engine::{Error, Found, WriteOp};

/// A transaction op.
pub fn op(key: &Bytes, action: TxnAction, cond: TxnCond, want_old: bool) -> TxnOp {
    TxnOp {
        key: key.clone(),
        action,
        cond,
        want_old,
    }
}

fn key_cmd(ops: Vec<TxnOp>, finish: impl FnOnce(&[TxnResult]) -> Reply + Send + 'static) -> Out {
    Out::Key(KeyCmd {
        ops,
        all_or_nothing: false,
        finish: Box::new(finish),
    })
}

/// Counts a read and whether it found the key.
pub fn count_read(c: &Counters, found: bool) {
    Counters::bump(&c.reads);
    Counters::bump(if found {
        &c.keyspace_hits
    } else {
        &c.keyspace_misses
    });
}

fn get_done(c: &Counters, r: escabelo_engine::Result<Option<Found>>) -> Reply {
    match r {
        Ok(v) => {
            let v = v.map(|f| f.value);
            count_read(c, v.is_some());
            Reply::opt(v)
        }
        Err(e) => engine_error(&e),
    }
}

fn strlen_done(_: &Counters, r: escabelo_engine::Result<Option<Found>>) -> Reply {
    match r {
        Ok(v) => Reply::Int(v.map_or(0, |f| f.value.len() as i64)),
        Err(e) => engine_error(&e),
    }
}

fn set_done(c: &Counters, r: Result<escabelo_engine::Result<bool>, ()>) -> Reply {
    Counters::bump(&c.writes);
    match r {
        Ok(Ok(_)) => Reply::Ok,
        Ok(Err(e)) => engine_error(&e),
        Err(()) => engine_error(&Error::Closed),
    }
}

/// `GET key`.
pub fn get(c: &mut Call) -> Out {
    let key = c.arg(1).clone();
    if c.in_multi {
        return key_cmd(vec![op(&key, TxnAction::Get, TxnCond::Always, true)], |r| {
            Reply::opt(r[0].old.clone())
        });
    }
    Out::Plan(Plan::Read {
        key,
        finish: get_done,
    })
}

/// `STRLEN key`.
pub fn strlen(c: &mut Call) -> Out {
    let key = c.arg(1).clone();
    if c.in_multi {
        return key_cmd(vec![op(&key, TxnAction::Get, TxnCond::Always, true)], |r| {
            Reply::Int(r[0].old.as_ref().map_or(0, |v| v.len() as i64))
        });
    }
    Out::Plan(Plan::Read {
        key,
        finish: strlen_done,
    })
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]`.
pub fn set(c: &mut Call) -> Out {
    let (mut nx, mut xx, mut want_get, mut expiry) = (false, false, false, false);
    let mut i = 3;
    while i < c.args.len() {
        let a = c.arg(i);
        let has_next = i + 1 < c.args.len();
        if a.eq_ignore_ascii_case(b"nx") && !xx {
            nx = true;
        } else if a.eq_ignore_ascii_case(b"xx") && !nx {
            xx = true;
        } else if a.eq_ignore_ascii_case(b"get") {
            want_get = true;
        } else if a.eq_ignore_ascii_case(b"keepttl") && !expiry {
            expiry = true;
        } else if ["ex", "px", "exat", "pxat"]
            .iter()
            .any(|w| a.eq_ignore_ascii_case(w.as_bytes()))
            && has_next
            && !expiry
        {
            expiry = true;
            i += 1;
        } else {
            return syntax_error().into();
        }
        i += 1;
    }
    if expiry {
        return Reply::err(
            "EX, PX, EXAT, PXAT and KEEPTTL are not supported: Escabelo keys do not expire",
        )
        .into();
    }
    let (key, value) = (c.arg(1).clone(), c.arg(2));
    if let Err(e) = check_key(&key).and_then(|_| check_value(c.ctx, value)) {
        return e.into();
    }
    let value = stored(value);
    if !nx && !xx && !want_get && !c.in_multi {
        return Out::Plan(Plan::Write {
            op: WriteOp::Put { key, value },
            finish: set_done,
        });
    }
    let cond = if nx {
        TxnCond::IfAbsent
    } else if xx {
        TxnCond::IfPresent
    } else {
        TxnCond::Always
    };
    key_cmd(
        vec![op(&key, TxnAction::Put(value), cond, want_get)],
        move |r| {
            if want_get {
                Reply::opt(r[0].old.clone())
            } else if r[0].applied {
                Reply::Ok
            } else {
                Reply::Null
            }
        },
    )
}

/// `SETNX key value`.
pub fn setnx(c: &mut Call) -> Out {
    let (key, value) = (c.arg(1).clone(), c.arg(2));
    if let Err(e) = check_key(&key).and_then(|_| check_value(c.ctx, value)) {
        return e.into();
    }
    let value = stored(value);
    key_cmd(
        vec![op(&key, TxnAction::Put(value), TxnCond::IfAbsent, false)],
        |r| Reply::Int(r[0].applied as i64),
    )
}

/// `GETSET key value`.
pub fn getset(c: &mut Call) -> Out {
    let (key, value) = (c.arg(1).clone(), c.arg(2));
    if let Err(e) = check_key(&key).and_then(|_| check_value(c.ctx, value)) {
        return e.into();
    }
    let value = stored(value);
    key_cmd(
        vec![op(&key, TxnAction::Put(value), TxnCond::Always, true)],
        |r| Reply::opt(r[0].old.clone()),
    )
}

/// `GETDEL key`.
pub fn getdel(c: &mut Call) -> Out {
    let key = c.arg(1).clone();
    if key.is_empty() {
        return Reply::Null.into();
    }
    key_cmd(
        vec![op(&key, TxnAction::Delete, TxnCond::Always, true)],
        |r| Reply::opt(r[0].old.clone()),
    )
}

/// `APPEND key value`.
pub fn append(c: &mut Call) -> Out {
    let (key, value) = (c.arg(1).clone(), c.arg(2).clone());
    if let Err(e) = check_key(&key).and_then(|_| check_value(c.ctx, &value)) {
        return e.into();
    }
    key_cmd(
        vec![op(&key, TxnAction::Append(value), TxnCond::Always, false)],
        |r| Reply::Int(r[0].new_len as i64),
    )
}

/// `MGET key [key ...]`.
pub fn mget(c: &mut Call) -> Out {
    let keys: Vec<Bytes> = c.args[1..].to_vec();
    if c.in_multi {
        let ops = keys
            .iter()
            .map(|k| op(k, TxnAction::Get, TxnCond::Always, true))
            .collect();
        return key_cmd(ops, |r| {
            Reply::Array(r.iter().map(|x| Reply::opt(x.old.clone())).collect())
        });
    }
    Out::Plan(Plan::Front(Box::new(move |ctx| {
        let mut out = Vec::with_capacity(keys.len());
        for k in &keys {
            match ctx.db.get(k) {
                Ok(v) => {
                    count_read(&ctx.counters, v.is_some());
                    out.push(Reply::opt(v));
                }
                Err(e) => return engine_error(&e),
            }
        }
        Reply::Array(out)
    })))
}

fn pairs(c: &Call, name: &str) -> Result<Vec<(Bytes, Bytes)>, Reply> {
    if !(c.args.len() - 1).is_multiple_of(2) {
        return Err(wrong_args(name));
    }
    let mut out = Vec::with_capacity((c.args.len() - 1) / 2);
    for kv in c.args[1..].chunks(2) {
        check_key(&kv[0])?;
        check_value(c.ctx, &kv[1])?;
        out.push((kv[0].clone(), stored(&kv[1])));
    }
    Ok(out)
}

/// `MSET key value [key value ...]`: one transaction.
pub fn mset(c: &mut Call) -> Out {
    let kvs = match pairs(c, "mset") {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    let ops = kvs
        .into_iter()
        .map(|(k, v)| op(&k, TxnAction::Put(v), TxnCond::Always, false))
        .collect();
    key_cmd(ops, |_| Reply::Ok)
}

/// `MSETNX key value [key value ...]`: all or none, only if every key is
/// absent.
pub fn msetnx(c: &mut Call) -> Out {
    let kvs = match pairs(c, "msetnx") {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    if c.in_multi {
        return Reply::err("MSETNX is not supported inside MULTI").into();
    }
    // A key given twice: only the first occurrence is conditional, like
    // Redis (which checks every key before setting any).
    let mut seen = std::collections::HashSet::new();
    let ops = kvs
        .into_iter()
        .map(|(k, v)| {
            let cond = if seen.insert(k.clone()) {
                TxnCond::IfAbsent
            } else {
                TxnCond::Always
            };
            op(&k, TxnAction::Put(v), cond, false)
        })
        .collect();
    Out::Key(KeyCmd {
        ops,
        all_or_nothing: true,
        finish: Box::new(|r| Reply::Int(r.iter().all(|x| x.applied) as i64)),
    })
}
