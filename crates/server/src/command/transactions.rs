//! MULTI, EXEC, DISCARD.
//!
//! Commands sent after `MULTI` are checked and queued (`+QUEUED`); an
//! unknown command or a wrong number of arguments marks the block failed,
//! and its `EXEC` answers `-EXECABORT`, like Redis. At `EXEC`, every key
//! command of the block becomes part of ONE engine transaction, so the
//! writes of one `EXEC` are atomic (all or none after a crash) and no
//! other client sees a part of them. Errors found when a command is
//! prepared (a syntax error, a value over the limit) are that command's
//! reply inside the `EXEC` array; the rest of the block still runs, as in
//! Redis.

use super::{Call, KeyCmd, Out, Plan, Session, Spec};
use crate::reply::Reply;
use crate::server::connection::Context;
use crate::txn::Txn;
use bytes::Bytes;

/// Most commands one MULTI block may queue.
pub const MULTI_COMMANDS_MAX: usize = escabelo_engine::TXN_OPS_MAX;
/// Most bytes one MULTI block may queue.
pub const MULTI_BYTES_MAX: usize = 256 * 1024 * 1024;

/// One queued command.
pub enum Queued {
    /// Ops for the transaction.
    Key(KeyCmd),
    /// A reply already known (PING, a syntax error...).
    Reply(Reply),
}

/// An open MULTI block.
#[derive(Default)]
pub struct Multi {
    /// The queued commands.
    pub items: Vec<Queued>,
    /// A command was refused while queuing: EXEC aborts.
    pub failed: bool,
    /// Bytes queued.
    pub bytes: usize,
}

/// `MULTI`.
pub fn multi(c: &mut Call) -> Out {
    if c.session.multi.is_some() {
        return Reply::err("MULTI calls can not be nested").into();
    }
    c.session.multi = Some(Multi::default());
    Reply::Ok.into()
}

/// `DISCARD`.
pub fn discard(c: &mut Call) -> Out {
    match c.session.multi.take() {
        Some(_) => Reply::Ok.into(),
        None => Reply::err("DISCARD without MULTI").into(),
    }
}

/// Queues one command inside MULTI.
pub fn queue(ctx: &Context, session: &mut Session, spec: &Spec, args: Vec<Bytes>) -> Plan {
    let size: usize = args.iter().map(|a| a.len() + 32).sum();
    if matches!(spec.name, "hello" | "auth" | "watch" | "select") {
        if let Some(m) = &mut session.multi {
            m.failed = true;
        }
        return Plan::Reply(Reply::err("Command not allowed inside a transaction"));
    }
    let full = session
        .multi
        .as_ref()
        .is_some_and(|m| m.items.len() >= MULTI_COMMANDS_MAX || m.bytes + size > MULTI_BYTES_MAX);
    if full {
        if let Some(m) = &mut session.multi {
            m.failed = true;
        }
        return Plan::Reply(Reply::err("MULTI block too large"));
    }
    let mut call = Call {
        ctx,
        session,
        args,
        in_multi: true,
    };
    let out = (spec.handler)(&mut call);
    let Some(m) = &mut session.multi else {
        return Plan::Reply(Reply::err("EXEC without MULTI"));
    };
    let item = match out {
        Out::Key(k) => match k.check() {
            Ok(()) => Queued::Key(k),
            Err(e) => Queued::Reply(e),
        },
        Out::Plan(Plan::Reply(r)) => Queued::Reply(r),
        Out::Plan(_) => {
            m.failed = true;
            return Plan::Reply(Reply::err("Command not allowed inside a transaction"));
        }
    };
    m.bytes += size;
    m.items.push(item);
    Plan::Reply(Reply::Status("QUEUED".into()))
}

/// How one queued command's reply is made at EXEC.
enum Part {
    Reply(Reply),
    Key { n: usize, finish: super::KeyFinish },
}

/// `EXEC`: runs the block as one transaction.
pub fn exec(c: &mut Call) -> Out {
    let Some(m) = c.session.multi.take() else {
        return Reply::err("EXEC without MULTI").into();
    };
    if m.failed {
        return Reply::error(
            "EXECABORT",
            "Transaction discarded because of previous errors.",
        )
        .into();
    }
    let mut ops = Vec::new();
    let mut parts = Vec::with_capacity(m.items.len());
    for item in m.items {
        match item {
            Queued::Reply(r) => parts.push(Part::Reply(r)),
            Queued::Key(k) => {
                parts.push(Part::Key {
                    n: k.ops.len(),
                    finish: k.finish,
                });
                ops.extend(k.ops);
            }
        }
    }
    if ops.is_empty() {
        let replies = parts
            .into_iter()
            .map(|p| match p {
                Part::Reply(r) => r,
                Part::Key { finish, .. } => finish(&[]),
            })
            .collect();
        return Reply::Array(replies).into();
    }
    let size = m.bytes;
    Out::Plan(Plan::Txn {
        txn: Txn {
            ops,
            all_or_nothing: false,
        },
        size,
        finish: Box::new(move |r| {
            let results = match r {
                Ok(Ok(results)) => results,
                Ok(Err(e)) => {
                    return Reply::error(
                        "EXECABORT",
                        format!(
                            "Transaction failed, nothing applied: {}",
                            crate::error::reply_reason(&e)
                        ),
                    )
                }
                Err(()) => return super::engine_error(&escabelo_engine::Error::Closed),
            };
            let mut at = 0;
            let mut replies = Vec::with_capacity(parts.len());
            for p in parts {
                replies.push(match p {
                    Part::Reply(r) => r,
                    Part::Key { n, finish } => {
                        let end = (at + n).min(results.len());
                        let r = finish(&results[at..end]);
                        at = end;
                        r
                    }
                });
            }
            Reply::Array(replies)
        }),
    })
}
