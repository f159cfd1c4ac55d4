//! Connection and server commands: PING, ECHO, QUIT, HELLO, AUTH, SELECT,
//! CLIENT, INFO, CONFIG, COMMAND, LATENCY, SLOWLOG.

use super::keyspace::count_keys;
use super::{glob::Glob, syntax_error, wrong_args, Call, Out, Plan, COMMANDS};
use crate::protocol::resp::parse_i64;
use crate::reply::Reply;
use crate::server::connection::Context;
use bytes::Bytes;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// The Redis version reported, so that clients enable the features they
/// gate on it.
pub const REDIS_VERSION: &str = "7.2.4";

/// `PING [message]`.
pub fn ping(c: &mut Call) -> Out {
    match c.args.len() {
        1 => Reply::Status("PONG".into()).into(),
        2 => Reply::Bulk(c.arg(1).clone()).into(),
        _ => wrong_args("ping").into(),
    }
}

/// `ECHO message`.
pub fn echo(c: &mut Call) -> Out {
    Reply::Bulk(c.arg(1).clone()).into()
}

/// `QUIT`: `+OK`, then the connection closes.
pub fn quit(_: &mut Call) -> Out {
    Out::Plan(Plan::Close(Reply::Ok))
}

fn check_auth(user: &[u8]) -> Result<(), Reply> {
    // No password is configured: the default user takes any password.
    if user == b"default" {
        Ok(())
    } else {
        Err(Reply::error(
            "WRONGPASS",
            "invalid username-password pair or user is disabled.",
        ))
    }
}

/// `AUTH [username] password`.
pub fn auth(c: &mut Call) -> Out {
    match c.args.len() {
        2 => Reply::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        )
        .into(),
        3 => match check_auth(c.arg(1)) {
            Ok(()) => Reply::Ok.into(),
            Err(e) => e.into(),
        },
        _ => syntax_error().into(),
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`: the
/// protocol is switched before the reply is written.
pub fn hello(c: &mut Call) -> Out {
    let mut resp3 = c.session.resp3;
    let mut name = None;
    if c.args.len() >= 2 {
        match parse_i64(c.arg(1)) {
            None => return Reply::err("Protocol version is not an integer or out of range").into(),
            Some(v) if !(2..=3).contains(&v) => {
                return Reply::error("NOPROTO", "unsupported protocol version").into()
            }
            Some(v) => resp3 = v == 3,
        }
        let mut i = 2;
        while i < c.args.len() {
            let more = c.args.len() - i - 1;
            if c.is(i, "auth") && more >= 2 {
                if let Err(e) = check_auth(c.arg(i + 1)) {
                    return e.into();
                }
                i += 3;
            } else if c.is(i, "setname") && more >= 1 {
                let n = c.arg(i + 1).clone();
                if let Err(e) = check_name(&n) {
                    return e.into();
                }
                name = Some(n);
                i += 2;
            } else {
                let opt = String::from_utf8_lossy(c.arg(i)).into_owned();
                return Reply::err(format!("Syntax error in HELLO option '{opt}'")).into();
            }
        }
    }
    c.session.resp3 = resp3;
    if let Some(n) = name {
        c.session.name = Some(n);
    }
    Reply::Map(vec![
        (Reply::text("server"), Reply::text("redis")),
        (Reply::text("version"), Reply::text(REDIS_VERSION)),
        (Reply::text("proto"), Reply::Int(if resp3 { 3 } else { 2 })),
        (Reply::text("id"), Reply::Int(c.session.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(Vec::new())),
    ])
    .into()
}

fn check_name(n: &[u8]) -> Result<(), Reply> {
    if n.iter().any(|&b| b <= b' ' || b > b'~') {
        return Err(Reply::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

/// `SELECT index`: only database 0 exists.
pub fn select(c: &mut Call) -> Out {
    match parse_i64(c.arg(1)) {
        None => Reply::err("value is not an integer or out of range").into(),
        Some(0) => Reply::Ok.into(),
        Some(_) => Reply::err("DB index is out of range").into(),
    }
}

fn unknown_subcommand(c: &Call, cmd: &str) -> Out {
    let sub = String::from_utf8_lossy(c.arg(1)).into_owned();
    Reply::err(format!("unknown subcommand '{sub}'. Try {cmd} HELP.")).into()
}

fn sub_arity(_: &Call, name: &str, ok: bool) -> Option<Out> {
    (!ok).then(|| wrong_args(name).into())
}

/// The `CLIENT INFO` line of this connection.
fn client_line(c: &Call) -> String {
    let s = &c.session;
    let lossy = |b: &Option<Bytes>| {
        b.as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    format!(
        "id={} addr={} laddr={} fd=0 name={} age=0 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 \
         multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 \
         tot-mem=0 events=r cmd=client|info user=default redir=-1 resp={} lib-name={} lib-ver={}\n",
        s.id,
        s.peer,
        s.local,
        lossy(&s.name),
        s.multi.as_ref().map_or(-1, |m| m.items.len() as i64),
        if s.resp3 { 3 } else { 2 },
        lossy(&s.lib_name),
        lossy(&s.lib_ver),
    )
}

/// `CLIENT ID|SETNAME|GETNAME|SETINFO|INFO|LIST|HELP|NO-EVICT|NO-TOUCH`.
pub fn client(c: &mut Call) -> Out {
    let n = c.args.len();
    if c.is(1, "id") {
        if let Some(o) = sub_arity(c, "client|id", n == 2) {
            return o;
        }
        Reply::Int(c.session.id as i64).into()
    } else if c.is(1, "setname") {
        if let Some(o) = sub_arity(c, "client|setname", n == 3) {
            return o;
        }
        let name = c.arg(2).clone();
        if let Err(e) = check_name(&name) {
            return e.into();
        }
        c.session.name = (!name.is_empty()).then_some(name);
        Reply::Ok.into()
    } else if c.is(1, "getname") {
        if let Some(o) = sub_arity(c, "client|getname", n == 2) {
            return o;
        }
        Reply::opt(c.session.name.clone()).into()
    } else if c.is(1, "setinfo") {
        if let Some(o) = sub_arity(c, "client|setinfo", n == 4) {
            return o;
        }
        let v = c.arg(3).clone();
        if c.is(2, "lib-name") {
            if let Err(e) = check_name(&v) {
                return e.into();
            }
            c.session.lib_name = Some(v);
        } else if c.is(2, "lib-ver") {
            if let Err(e) = check_name(&v) {
                return e.into();
            }
            c.session.lib_ver = Some(v);
        } else {
            let opt = String::from_utf8_lossy(c.arg(2)).into_owned();
            return Reply::err(format!("Unrecognized option '{opt}'")).into();
        }
        Reply::Ok.into()
    } else if c.is(1, "info") || c.is(1, "list") {
        Reply::Verbatim(client_line(c).into()).into()
    } else if c.is(1, "no-evict") || c.is(1, "no-touch") {
        if c.is(2, "on") || c.is(2, "off") {
            Reply::Ok.into()
        } else {
            syntax_error().into()
        }
    } else if c.is(1, "help") {
        help(&[
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GETNAME",
            "ID",
            "INFO",
            "LIST",
            "SETINFO <option> <value>",
            "SETNAME <name>",
        ])
    } else {
        unknown_subcommand(c, "CLIENT")
    }
}

fn help(lines: &[&'static str]) -> Out {
    Reply::Array(lines.iter().map(|l| Reply::Status((*l).into())).collect()).into()
}

/// `COMMAND [COUNT|DOCS|INFO|LIST]`.
pub fn command(c: &mut Call) -> Out {
    if c.args.len() == 1 {
        return Reply::Array(COMMANDS.iter().map(command_info).collect()).into();
    }
    if c.is(1, "count") {
        Reply::Int(COMMANDS.len() as i64).into()
    } else if c.is(1, "docs") {
        Reply::Map(Vec::new()).into()
    } else if c.is(1, "list") {
        Reply::Array(COMMANDS.iter().map(|s| Reply::text(s.name)).collect()).into()
    } else if c.is(1, "info") {
        let infos = if c.args.len() == 2 {
            COMMANDS.iter().map(command_info).collect()
        } else {
            c.args[2..]
                .iter()
                .map(|n| super::lookup(n).map_or(Reply::NullArray, command_info))
                .collect()
        };
        Reply::Array(infos).into()
    } else if c.is(1, "help") {
        help(&[
            "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "COUNT",
            "DOCS",
            "INFO",
            "LIST",
        ])
    } else {
        unknown_subcommand(c, "COMMAND")
    }
}

fn command_info(s: &super::Spec) -> Reply {
    Reply::Array(vec![
        Reply::text(s.name),
        Reply::Int(s.arity as i64),
        Reply::Set(s.flags.iter().map(|f| Reply::Status((*f).into())).collect()),
        Reply::Int(s.keys.0 as i64),
        Reply::Int(s.keys.1 as i64),
        Reply::Int(s.keys.2 as i64),
        Reply::Set(Vec::new()),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// The parameters `CONFIG GET` knows, with their values.
fn config_params(ctx: &Context) -> Vec<(&'static str, String)> {
    let full = matches!(
        ctx.db.options().durability,
        escabelo_engine::Durability::Sync
    );
    vec![
        (
            "appendfsync",
            if full { "always" } else { "everysec" }.into(),
        ),
        ("appendonly", "yes".into()),
        ("bind", ctx.info.bind.clone()),
        ("databases", "1".into()),
        ("dir", ctx.db.options().dir.display().to_string()),
        ("maxclients", ctx.info.max_connections.to_string()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("port", ctx.info.port.to_string()),
        ("proto-max-bulk-len", ctx.max_value_len.to_string()),
        ("save", String::new()),
        ("timeout", "0".into()),
        ("tcp-keepalive", "0".into()),
    ]
}

/// `CONFIG GET pattern [pattern ...]`; `CONFIG RESETSTAT`.
pub fn config(c: &mut Call) -> Out {
    if c.is(1, "get") {
        if c.args.len() < 3 {
            return wrong_args("config|get").into();
        }
        let globs: Vec<Glob> = c.args[2..]
            .iter()
            .map(|p| Glob::new(&p.to_ascii_lowercase()))
            .collect();
        let pairs = config_params(c.ctx)
            .into_iter()
            .filter(|(k, _)| globs.iter().any(|g| g.matches(k.as_bytes())))
            .map(|(k, v)| (Reply::text(k), Reply::Bulk(v.into())))
            .collect();
        Reply::Map(pairs).into()
    } else if c.is(1, "resetstat") {
        Reply::Ok.into()
    } else if c.is(1, "set") {
        let p = c
            .args
            .get(2)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        Reply::err(format!(
            "Unknown option or number of arguments for CONFIG SET - '{p}'"
        ))
        .into()
    } else if c.is(1, "help") {
        help(&[
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "RESETSTAT",
        ])
    } else {
        unknown_subcommand(c, "CONFIG")
    }
}

/// `LATENCY LATEST|HISTORY|RESET`: nothing is tracked.
pub fn latency(c: &mut Call) -> Out {
    if c.is(1, "latest") || c.is(1, "history") {
        Reply::Array(Vec::new()).into()
    } else if c.is(1, "reset") {
        Reply::Int(0).into()
    } else {
        unknown_subcommand(c, "LATENCY")
    }
}

/// `SLOWLOG LEN|GET|RESET`: nothing is tracked.
pub fn slowlog(c: &mut Call) -> Out {
    if c.is(1, "len") {
        Reply::Int(0).into()
    } else if c.is(1, "get") {
        Reply::Array(Vec::new()).into()
    } else if c.is(1, "reset") {
        Reply::Ok.into()
    } else {
        unknown_subcommand(c, "SLOWLOG")
    }
}

/// `INFO [section ...]`: one text reply (a verbatim string in RESP3, as
/// Redis 7 sends).
pub fn info(c: &mut Call) -> Out {
    let sections: Vec<String> = c.args[1..]
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let clients = c.ctx.counters.connections.load(Ordering::Relaxed);
    Out::Plan(Plan::Blocking(Box::new(move |ctx| {
        match info_text(ctx, &sections, clients) {
            Ok(t) => Reply::Verbatim(t.into()),
            Err(e) => super::engine_error(&e),
        }
    })))
}

const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "keyspace",
    "escabelo",
];

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn cpu_times() -> (f64, f64) {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_stime), t(ru.ru_utime))
}

fn info_text(ctx: &Context, asked: &[String], clients: u64) -> escabelo_engine::Result<String> {
    let all = asked.iter().any(|s| s == "all" || s == "everything");
    let wanted = |name: &str| {
        if asked.is_empty() || all || asked.iter().any(|s| s == "default") {
            DEFAULT_SECTIONS.contains(&name)
        } else {
            asked.iter().any(|s| s == name)
        }
    };
    let cn = &ctx.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let s = ctx.db.stats();
    let mut out = String::with_capacity(2048);
    let section = |out: &mut String, name: &str, title: &str| -> bool {
        if !wanted(name) {
            return false;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# {title}\r\n");
        true
    };
    let uptime = cn.uptime().as_secs();
    if section(&mut out, "server", "Server") {
        let _ = write!(
            out,
            "redis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nescabelo_version:{}\r\n\
             os:{} {}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\n\
             uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nexecutable:escabelo\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            ctx.info.run_id,
            ctx.info.port,
            uptime / 86400,
        );
    }
    if section(&mut out, "clients", "Clients") {
        let _ = write!(
            out,
            "connected_clients:{clients}\r\nblocked_clients:0\r\nmaxclients:{}\r\n",
            ctx.info.max_connections
        );
    }
    if section(&mut out, "memory", "Memory") {
        let rss = rss_bytes();
        let _ = write!(
            out,
            "used_memory:{rss}\r\nused_memory_rss:{rss}\r\nmaxmemory:0\r\n\
             maxmemory_policy:noeviction\r\n"
        );
    }
    if section(&mut out, "persistence", "Persistence") {
        out.push_str(
            "loading:0\r\nrdb_bgsave_in_progress:0\r\nrdb_changes_since_last_save:0\r\n\
             aof_enabled:1\r\naof_rewrite_in_progress:0\r\n",
        );
    }
    if section(&mut out, "stats", "Stats") {
        let _ = write!(
            out,
            "total_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             instantaneous_ops_per_sec:0\r\ntotal_net_input_bytes:{}\r\n\
             total_net_output_bytes:{}\r\nrejected_connections:{}\r\nkeyspace_hits:{}\r\n\
             keyspace_misses:{}\r\nexpired_keys:0\r\nevicted_keys:0\r\n",
            get(&cn.connections_total),
            get(&cn.commands),
            get(&cn.net_input_bytes),
            get(&cn.net_output_bytes),
            get(&cn.connections_refused),
            get(&cn.keyspace_hits),
            get(&cn.keyspace_misses),
        );
    }
    if section(&mut out, "replication", "Replication") {
        out.push_str("role:master\r\nconnected_slaves:0\r\n");
    }
    if section(&mut out, "cpu", "CPU") {
        let (sys, user) = cpu_times();
        let _ = write!(out, "used_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\n");
    }
    if wanted("keyspace") {
        // Exact: counted for every INFO that shows the keyspace.
        let n = count_keys(&ctx.db)?;
        section(&mut out, "keyspace", "Keyspace");
        if n > 0 {
            let _ = write!(out, "db0:keys={n},expires=0,avg_ttl=0\r\n");
        }
    }
    if section(&mut out, "escabelo", "Escabelo") {
        let _ = write!(
            out,
            "durability:{}\r\nwrites:{}\r\nreads:{}\r\ndeletes:{}\r\nflushes:{}\r\n\
             memtable_size:{}\r\nsst_count:{}\r\nwal_size:{}\r\n",
            ctx.db.options().durability,
            get(&cn.writes),
            get(&cn.reads),
            get(&cn.deletes),
            s.flushes,
            s.memtable_size,
            s.sst_count,
            s.wal_size,
        );
        for (name, value) in crate::server::stats::storage_fields(&s) {
            let _ = write!(out, "{name}:{value}\r\n");
        }
    }
    Ok(out)
}
