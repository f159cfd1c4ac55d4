//! Command execution, shared by both protocols.
//!
//! A parsed request (a text-protocol [`Request`] or a RESP argument list)
//! becomes a [`Plan`]: what the connection must do to answer it, in order
//! with the other requests of the connection. Plans are protocol-neutral:
//! they produce [`Reply`] values, which the connection encodes with the
//! protocol the request arrived in.
//!
//! The Redis commands live in one file per group: [`strings`],
//! [`keyspace`], [`server`] (connection and server commands) and
//! [`transactions`].

pub mod glob;
pub mod keyspace;
pub mod server;
pub mod strings;
pub mod transactions;

use crate::error::reply_reason;
use crate::metrics::{ErrorKind, RECORDER};
use crate::protocol::text::{self, Request, KEY_LEN_MAX};
use crate::protocol::Wire;
use crate::reply::Reply;
use crate::server::connection::Context;
use crate::server::stats::Counters;
use crate::txn::{Txn, TxnOp, TxnResult};
use bytes::{Bytes, BytesMut};
use escabelo_engine::{Error, Found, WriteOp};

/// Finishes a plain write or delete: turns the engine's outcome into the
/// reply (and counts it).
pub type WriteFinish = fn(&Counters, Result<escabelo_engine::Result<bool>, ()>) -> Reply;
/// Finishes a read of one key.
pub type ReadFinish = fn(&Counters, escabelo_engine::Result<Option<Found>>) -> Reply;
/// Finishes a transaction.
pub type TxnFinish =
    Box<dyn FnOnce(Result<escabelo_engine::Result<Vec<TxnResult>>, ()>) -> Reply + Send>;
/// Builds a key command's reply from the results of its ops.
pub type KeyFinish = Box<dyn FnOnce(&[TxnResult]) -> Reply + Send>;
/// Work run when a request reaches the front of the queue.
pub type Job = Box<dyn FnOnce(&Context) -> Reply + Send>;
/// A producer of a long reply, run on the blocking pool; it writes encoded
/// bytes to the sink.
pub type StreamJob = Box<dyn FnOnce(&Context, &mut Sink) + Send>;

/// What the connection does to answer one request.
pub enum Plan {
    /// Answer with this reply (in order).
    Reply(Reply),
    /// Submit a write to the engine now; answer when acknowledged.
    Write {
        /// The write.
        op: WriteOp,
        /// Builds the reply.
        finish: WriteFinish,
    },
    /// Submit a transaction to the engine now; answer when it is done.
    Txn {
        /// The transaction.
        txn: Txn,
        /// Bytes it holds.
        size: usize,
        /// Builds the reply.
        finish: TxnFinish,
    },
    /// Read a key when the request reaches the front.
    Read {
        /// The key.
        key: Bytes,
        /// Builds the reply.
        finish: ReadFinish,
    },
    /// Run quick work when the request reaches the front.
    Front(Job),
    /// Run slow work on the blocking pool when the request reaches the
    /// front.
    Blocking(Job),
    /// Stream a long reply from the blocking pool when the request reaches
    /// the front.
    Stream(StreamJob),
    /// Answer, then close the connection.
    Close(Reply),
}

/// Where a [`StreamJob`] writes: encoded bytes, sent to the connection in
/// chunks of about [`Sink::CHUNK`] bytes, with backpressure.
pub struct Sink {
    /// The bytes not sent yet.
    pub buf: BytesMut,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    closed: bool,
}

impl Sink {
    /// Bytes gathered before a chunk is handed to the connection.
    pub const CHUNK: usize = 64 * 1024;

    /// A sink sending to `tx`.
    pub fn new(tx: tokio::sync::mpsc::Sender<Bytes>) -> Sink {
        Sink {
            buf: BytesMut::new(),
            tx,
            closed: false,
        }
    }

    /// Sends a chunk if enough bytes are gathered. Returns `false` once
    /// the connection is gone (the producer should stop).
    pub fn maybe_flush(&mut self) -> bool {
        if self.buf.len() >= Self::CHUNK {
            self.flush();
        }
        !self.closed
    }

    /// Sends what is gathered (blocks while the connection is behind).
    pub fn flush(&mut self) {
        if self.buf.is_empty() || self.closed {
            return;
        }
        let chunk = self.buf.split().freeze();
        if self.tx.blocking_send(chunk).is_err() {
            self.closed = true;
        }
    }
}

impl Sink {
    /// Gives up on the reply after part of it was sent: the connection
    /// is closed once the sent part is written (signalled by an empty
    /// chunk).
    pub fn abort(&mut self) {
        self.buf.clear();
        if !self.closed {
            let _ = self.tx.blocking_send(Bytes::new());
            self.closed = true;
        }
    }
}

/// One command's part of a transaction: its ops, and how its reply is
/// built from their results.
pub struct KeyCmd {
    /// The ops.
    pub ops: Vec<TxnOp>,
    /// Whether a failed condition cancels every op (`MSETNX`).
    pub all_or_nothing: bool,
    /// Builds the reply from the results of `ops` (same length, same
    /// order).
    pub finish: KeyFinish,
}

impl KeyCmd {
    fn size(&self) -> usize {
        self.ops
            .iter()
            .map(|o| {
                o.key.len()
                    + 64
                    + match &o.action {
                        crate::txn::TxnAction::Put(v) | crate::txn::TxnAction::Append(v) => v.len(),
                        _ => 0,
                    }
            })
            .sum()
    }

    /// A key the engine would refuse (empty or over the limit) fails the
    /// whole transaction: such a command is answered with an error alone.
    pub fn check(&self) -> Result<(), Reply> {
        self.ops.iter().try_for_each(|o| check_key(&o.key))
    }

    /// The plan that runs this command alone as one transaction.
    pub fn into_plan(self) -> Plan {
        if let Err(e) = self.check() {
            return Plan::Reply(e);
        }
        if self.ops.is_empty() {
            return Plan::Reply((self.finish)(&[]));
        }
        let size = self.size();
        let finish = self.finish;
        Plan::Txn {
            txn: Txn {
                ops: self.ops,
                all_or_nothing: self.all_or_nothing,
            },
            size,
            finish: Box::new(move |r| match r {
                Ok(Ok(results)) => finish(&results),
                Ok(Err(e)) => engine_error(&e),
                Err(()) => engine_error(&Error::Closed),
            }),
        }
    }
}

/// What a command handler returns.
pub enum Out {
    /// A plan to carry out.
    Plan(Plan),
    /// Ops of a transaction (run alone, or inside `EXEC`).
    Key(KeyCmd),
}

impl From<Reply> for Out {
    fn from(r: Reply) -> Out {
        Out::Plan(Plan::Reply(r))
    }
}

/// State of one connection that commands read and change.
#[derive(Default)]
pub struct Session {
    /// Client id (`CLIENT ID`).
    pub id: u64,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: Option<Bytes>,
    /// Peer address, for `CLIENT INFO`.
    pub peer: String,
    /// Local address, for `CLIENT INFO`.
    pub local: String,
    /// Whether the connection speaks RESP3 (`HELLO 3`).
    pub resp3: bool,
    /// The open `MULTI` block, if any.
    pub multi: Option<transactions::Multi>,
}

/// A handler's view of one request.
pub struct Call<'a> {
    /// The server.
    pub ctx: &'a Context,
    /// The connection.
    pub session: &'a mut Session,
    /// The arguments, the command name first.
    pub args: Vec<Bytes>,
    /// Whether the command is being queued inside `MULTI` (key commands
    /// must then return [`Out::Key`]).
    pub in_multi: bool,
}

impl Call<'_> {
    /// The `i`-th argument.
    pub fn arg(&self, i: usize) -> &Bytes {
        &self.args[i]
    }

    /// Whether argument `i` equals `word`, ignoring ASCII case.
    pub fn is(&self, i: usize, word: &str) -> bool {
        self.args
            .get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    }
}

/// A command handler.
pub type Handler = fn(&mut Call) -> Out;

/// One entry of the command table.
pub struct Spec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis arity: `n` exactly n arguments (name included), `-n` at least n.
    pub arity: i32,
    /// Redis command flags (for `COMMAND`).
    pub flags: &'static [&'static str],
    /// First key argument, last key argument (-1: the last), step (0: no keys).
    pub keys: (i32, i32, i32),
    /// The handler.
    pub handler: Handler,
}

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $h:path) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            handler: $h,
        }
    };
}

const W: &[&str] = &["write"];
const R: &[&str] = &["readonly", "fast"];
const F: &[&str] = &["fast"];
const NK: (i32, i32, i32) = (0, 0, 0);
const K1: (i32, i32, i32) = (1, 1, 1);
const KA: (i32, i32, i32) = (1, -1, 1);
const KP: (i32, i32, i32) = (1, -1, 2);

/// Every Redis command served.
pub static COMMANDS: &[Spec] = &[
    spec!("append", 3, W, K1, strings::append),
    spec!("auth", -2, F, NK, server::auth),
    spec!("client", -2, F, NK, server::client),
    spec!("command", -1, F, NK, server::command),
    spec!("config", -2, F, NK, server::config),
    spec!("dbsize", 1, R, NK, keyspace::dbsize),
    spec!("del", -2, W, KA, keyspace::del),
    spec!("discard", 1, F, NK, transactions::discard),
    spec!("echo", 2, F, NK, server::echo),
    spec!("exec", 1, F, NK, transactions::exec),
    spec!("exists", -2, R, KA, keyspace::exists),
    spec!("flushall", -1, W, NK, keyspace::flushdb),
    spec!("flushdb", -1, W, NK, keyspace::flushdb),
    spec!("get", 2, R, K1, strings::get),
    spec!("getdel", 2, W, K1, strings::getdel),
    spec!("getset", 3, W, K1, strings::getset),
    spec!("hello", -1, F, NK, server::hello),
    spec!("info", -1, F, NK, server::info),
    spec!("keys", 2, &["readonly"], NK, keyspace::keys),
    spec!("latency", -2, F, NK, server::latency),
    spec!("mget", -2, R, KA, strings::mget),
    spec!("mset", -3, W, KP, strings::mset),
    spec!("msetnx", -3, W, KP, strings::msetnx),
    spec!("multi", 1, F, NK, transactions::multi),
    spec!("ping", -1, F, NK, server::ping),
    spec!("pttl", 2, R, K1, keyspace::pttl),
    spec!("quit", -1, F, NK, server::quit),
    spec!("scan", -2, &["readonly"], NK, keyspace::scan),
    spec!("select", 2, F, NK, server::select),
    spec!("set", -3, W, K1, strings::set),
    spec!("setnx", 3, W, K1, strings::setnx),
    spec!("slowlog", -2, F, NK, server::slowlog),
    spec!("strlen", 2, R, K1, strings::strlen),
    spec!("ttl", 2, R, K1, keyspace::ttl),
    spec!("type", 2, R, K1, keyspace::type_),
    spec!("unlink", -2, W, KA, keyspace::del),
];

/// The names of [`COMMANDS`].
pub static COMMAND_NAMES: &[&str] = &[
    "append", "auth", "client", "command", "config", "dbsize", "del", "discard", "echo", "exec",
    "exists", "flushall", "flushdb", "get", "getdel", "getset", "hello", "info", "keys", "latency",
    "mget", "mset", "msetnx", "multi", "ping", "pttl", "quit", "scan", "select", "set", "setnx",
    "slowlog", "strlen", "ttl", "type", "unlink",
];

/// The table entry for a command name (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    lookup_index(name).map(|i| &COMMANDS[i])
}

/// Longest command name.
const NAME_LEN_MAX: usize = 16;

/// A command name of at most [`NAME_LEN_MAX`] bytes, lowercased and packed
/// into one integer (zero-padded, so a name holding a zero byte is no
/// command), so that a lookup compares integers instead of calling
/// `memcmp` for each probe (the binary search over names took 10% of a
/// pipelined GET).
fn pack_name(name: &[u8]) -> Option<u128> {
    if name.len() > NAME_LEN_MAX || name.contains(&0) {
        return None;
    }
    let mut lower = [0u8; NAME_LEN_MAX];
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    Some(u128::from_le_bytes(lower))
}

/// The position in [`COMMANDS`] (and [`COMMAND_NAMES`]) of a command name
/// (any case).
pub fn lookup_index(name: &[u8]) -> Option<usize> {
    static PACKED: std::sync::OnceLock<Vec<(u128, usize)>> = std::sync::OnceLock::new();
    let packed = PACKED.get_or_init(|| {
        let mut v: Vec<(u128, usize)> = COMMANDS
            .iter()
            .enumerate()
            .filter_map(|(i, s)| pack_name(s.name.as_bytes()).map(|k| (k, i)))
            .collect();
        v.sort_unstable();
        v
    });
    let key = pack_name(name)?;
    packed
        .binary_search_by_key(&key, |e| e.0)
        .ok()
        .map(|i| packed[i].1)
}

/// Whether `name` (any case) is a Redis command served here.
pub fn is_command(name: &[u8]) -> bool {
    lookup(name).is_some()
}

/// The reply to an engine failure.
pub fn engine_error(e: &Error) -> Reply {
    Reply::err(reply_reason(e))
}

/// `ERR wrong number of arguments for '<name>' command`.
pub fn wrong_args(name: &str) -> Reply {
    RECORDER.error(ErrorKind::WrongArity);
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

/// `ERR syntax error`.
pub fn syntax_error() -> Reply {
    RECORDER.error(ErrorKind::Syntax);
    Reply::err("syntax error")
}

/// Redis's unknown-command error, echoing the first arguments.
pub fn unknown_command(args: &[Bytes]) -> Reply {
    RECORDER.error(ErrorKind::UnknownCommand);
    let name = String::from_utf8_lossy(&args[0][..args[0].len().min(128)]).into_owned();
    let mut rest = String::new();
    for a in &args[1..] {
        if rest.len() >= 128 {
            break;
        }
        let room = 128 - rest.len();
        let s = String::from_utf8_lossy(&a[..a.len().min(room)]).into_owned();
        rest.push('\'');
        rest.push_str(&s);
        rest.push_str("' ");
    }
    Reply::err(format!(
        "unknown command '{name}', with args beginning with: {rest}"
    ))
}

/// Checks a key argument against the engine's key limit.
pub fn check_key(key: &[u8]) -> Result<(), Reply> {
    if key.len() > KEY_LEN_MAX {
        RECORDER.error(ErrorKind::Limit);
        return Err(Reply::err(format!(
            "key too long: {} bytes (max {KEY_LEN_MAX})",
            key.len()
        )));
    }
    if key.is_empty() {
        RECORDER.error(ErrorKind::Limit);
        return Err(Reply::err("empty keys are not supported"));
    }
    Ok(())
}

/// A value argument to store. The engine keeps a stored value as given (in
/// the memtable, and in the value cache when its key is hot), so it must
/// own its allocation (see `WriteOp::Put`): a slice of a larger buffer
/// would keep all of it alive. Both parsers give every argument an
/// allocation of its own (`resp::Parser`, the text parser), so this shares
/// the argument rather than copying it.
pub fn stored(v: &Bytes) -> Bytes {
    v.clone()
}

/// Checks a value argument against the configured limit.
pub fn check_value(ctx: &Context, v: &[u8]) -> Result<(), Reply> {
    if v.len() > ctx.max_value_len {
        RECORDER.error(ErrorKind::Limit);
        return Err(Reply::err(format!(
            "value too long: {} bytes (max {})",
            v.len(),
            ctx.max_value_len
        )));
    }
    Ok(())
}

/// Plans a RESP request.
pub fn plan_redis(ctx: &Context, session: &mut Session, args: Vec<Bytes>) -> Plan {
    Counters::bump(&ctx.counters.commands);
    let index = lookup_index(&args[0]);
    RECORDER.resp_request(index);
    let Some(spec) = index.map(|i| &COMMANDS[i]) else {
        if let Some(m) = &mut session.multi {
            m.failed = true;
        }
        return Plan::Reply(unknown_command(&args));
    };
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        if let Some(m) = &mut session.multi {
            m.failed = true;
        }
        return Plan::Reply(wrong_args(spec.name));
    }
    if session.multi.is_some() && !matches!(spec.name, "exec" | "discard" | "multi" | "quit") {
        return transactions::queue(ctx, session, spec, args);
    }
    let mut call = Call {
        ctx,
        session,
        args,
        in_multi: false,
    };
    match (spec.handler)(&mut call) {
        Out::Plan(p) => p,
        Out::Key(k) => k.into_plan(),
    }
}

fn text_write_done(c: &Counters, r: Result<escabelo_engine::Result<bool>, ()>) -> Reply {
    Counters::bump(&c.writes);
    match r {
        Ok(Ok(_)) => Reply::Ok,
        Ok(Err(e)) => Reply::err(reply_reason(&e)),
        Err(()) => Reply::err(reply_reason(&Error::Closed)),
    }
}

fn text_delete_done(c: &Counters, r: Result<escabelo_engine::Result<bool>, ()>) -> Reply {
    Counters::bump(&c.deletes);
    match r {
        Ok(Ok(true)) => Reply::Ok,
        Ok(Ok(false)) => Reply::Null,
        Ok(Err(e)) => Reply::err(reply_reason(&e)),
        Err(()) => Reply::err(reply_reason(&Error::Closed)),
    }
}

fn text_read_done(c: &Counters, r: escabelo_engine::Result<Option<Found>>) -> Reply {
    Counters::bump(&c.reads);
    match r {
        Ok(None) => Reply::Null,
        // The value cache knows for a hot value whether it holds a `\r`;
        // otherwise it is looked at here, once.
        Ok(Some(f)) if f.has_cr() => Reply::err(text::NOT_REPRESENTABLE),
        Ok(Some(f)) => Reply::BulkNoCr(f.value),
        Err(e) => Reply::err(reply_reason(&e)),
    }
}

/// Plans a text-protocol request.
pub fn plan_text(ctx: &Context, req: Request) -> Plan {
    RECORDER.text_request(&req);
    match req {
        Request::Write { key, value } => Plan::Write {
            op: WriteOp::Put { key, value },
            finish: text_write_done,
        },
        Request::Delete { key } => Plan::Write {
            op: WriteOp::Delete { key },
            finish: text_delete_done,
        },
        Request::Read { key } => Plan::Read {
            key,
            finish: text_read_done,
        },
        Request::Status => Plan::Front(Box::new(|ctx: &Context| {
            let mut out = BytesMut::new();
            ctx.counters.encode_status(&ctx.db, &mut out);
            Reply::Raw(out.freeze())
        })),
        Request::Keys => Plan::Stream(Box::new(|ctx: &Context, sink: &mut Sink| {
            keyspace::text_keys(ctx, sink)
        })),
        Request::Reads { prefix } => {
            Plan::Stream(Box::new(move |ctx: &Context, sink: &mut Sink| {
                keyspace::text_reads(ctx, &prefix, sink)
            }))
        }
        Request::Invalid(e) => {
            Counters::bump(&ctx.counters.bad_requests);
            Plan::Reply(Reply::err(e.to_string()))
        }
    }
}

/// The encoding of replies to a session's requests.
pub fn wire_of(session: &Session) -> Wire {
    Wire::Resp(if session.resp3 {
        crate::protocol::resp::Version::Resp3
    } else {
        crate::protocol::resp::Version::Resp2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_names_match() {
        let names: Vec<&str> = COMMANDS.iter().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names, COMMAND_NAMES);
        assert!(is_command(b"GET") && is_command(b"gEt") && !is_command(b"read"));
    }

    #[test]
    fn every_command_is_found_by_its_name_in_any_case() {
        for (i, s) in COMMANDS.iter().enumerate() {
            assert!(s.name.len() <= NAME_LEN_MAX, "{} is too long", s.name);
            assert_eq!(lookup_index(s.name.as_bytes()), Some(i), "{}", s.name);
            let upper = s.name.to_ascii_uppercase();
            assert_eq!(lookup_index(upper.as_bytes()), Some(i), "{upper}");
        }
        for other in [
            &b""[..],
            b"ge",
            b"gett",
            b"get\0",
            b"\0",
            b"averyverylongcommandname",
        ] {
            assert_eq!(lookup_index(other), None, "{other:?}");
        }
    }

    /// The keys and values a plan hands the engine to keep, from every
    /// kind of plan that stores them.
    fn stored_bytes(plan: &Plan) -> Vec<Bytes> {
        match plan {
            Plan::Write {
                op: WriteOp::Put { key, value },
                ..
            } => vec![key.clone(), value.clone()],
            Plan::Write {
                op: WriteOp::Delete { key },
                ..
            } => vec![key.clone()],
            Plan::Txn { txn, .. } => txn
                .ops
                .iter()
                .flat_map(|o| match &o.action {
                    crate::txn::TxnAction::Put(v) => vec![o.key.clone(), v.clone()],
                    _ => vec![o.key.clone()],
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The engine keeps a stored key and value as given (memtable, value
    /// cache): one sliced from the connection's read buffer would keep the
    /// whole buffer alive as long as it is there. Requests go through the
    /// real RESP parser, from one buffer, as on a connection.
    #[test]
    fn resp_keys_and_values_do_not_pin_the_read_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let db = escabelo_engine::Db::open(escabelo_engine::Options::new(dir.path())).unwrap();
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let ctx = Context {
            db,
            counters: std::sync::Arc::new(Counters::new()),
            max_value_len: 1 << 20,
            shutdown,
            info: std::sync::Arc::new(crate::server::connection::ServerInfo::new(
                "127.0.0.1:0".parse().unwrap(),
                10,
            )),
        };
        let mut session = Session::default();
        let long = "v".repeat(5000);
        for words in [
            &["SET", "k", "value-of-k"][..],
            &["SET", "long", &long],
            &["SETNX", "k2", "value-of-k2"],
            &["GETSET", "k", "another-value"],
            &["MSET", "a", "value-of-a", "b", &long],
            &["SET", "k", "conditional", "XX"],
            &["DEL", "k"],
        ] {
            let mut buf = BytesMut::new();
            buf.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
            for w in words {
                buf.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
            }
            let range = buf.as_ptr_range();
            let mut parser = crate::protocol::resp::Parser::new(
                crate::protocol::resp::Limits::for_values(1 << 20),
            );
            let Some(crate::protocol::resp::Parsed::Command(args)) = parser.next(&mut buf) else {
                panic!("{words:?} did not parse")
            };
            let plan = plan_redis(&ctx, &mut session, args);
            let kept = stored_bytes(&plan);
            assert!(!kept.is_empty(), "{words:?} stores nothing");
            for v in kept {
                assert!(
                    !range.contains(&v.as_ptr()),
                    "{words:?}: {v:?} is a slice of the read buffer"
                );
            }
        }
    }

    #[test]
    fn unknown_command_text() {
        let args: Vec<Bytes> = ["FOO", "a", "b\r\nc"]
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect();
        let mut out = BytesMut::new();
        crate::protocol::resp::encode(
            &mut out,
            crate::protocol::resp::Version::Resp2,
            &unknown_command(&args),
        );
        assert_eq!(
            &out[..],
            b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b  c' \r\n"
        );
    }
}
