//! `escabelo`: the Escabelo key-value database server.
//!
//! This file is startup and lifecycle only: parse the configuration, open
//! the engine, serve until SIGTERM/SIGINT, then drain, sync and close.

use config::Config;
use escabelo::{config, metrics, server};
use escabelo_engine::Db;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tracing::{error, info, warn};

/// jemalloc instead of the system allocator: with glibc's, `malloc` and
/// `free` took 19% of the server's CPU under pipelined writes
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation; the environment
/// variable `_RJEM_MALLOC_CONF` can still override them.
/// - `narenas:1`: one arena for all threads. With jemalloc's default (4
///   per core) a memtable built by one I/O thread and freed by the flush
///   left its pages idle in that thread's arena while the next memtable,
///   built by another thread, took new ones: resident memory summed each
///   arena's high-water mark (the network-faults test peaked at 292-369
///   MiB; 216-277 with one arena).
/// - `dirty_decay_ms:2000,muzzy_decay_ms:0`: freed pages go back to the
///   system after 2 s instead of 10, and at once instead of through
///   `MADV_FREE` (whose pages still count as resident until the kernel
///   needs them). 199-226 MiB in that test.
///
/// Writes only and 80% reads through the load tool, alternated with the
/// defaults: even in requests per second and CPU per request
/// (docs/performance.md, tenth pass).
#[unsafe(export_name = "_rjem_malloc_conf")]
static ALLOCATOR_OPTIONS: &u8 = &ALLOCATOR_OPTIONS_TEXT[0];
/// The text behind [`ALLOCATOR_OPTIONS`], NUL-terminated for C.
const ALLOCATOR_OPTIONS_TEXT: &[u8] = b"narenas:1,dirty_decay_ms:2000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let cfg = Config::from_args();
    if let Err(e) = init_logging(&cfg.log_level) {
        eprintln!("escabelo: invalid --log-level {:?}: {e}", cfg.log_level);
        return ExitCode::from(2);
    }
    if let Some(tool) = cfg.command.clone() {
        return run_tool(&cfg, tool);
    }
    // Every I/O thread runs an event loop of its own (server/loops.rs):
    // this one accepts and serves, the others serve what it deals out.
    let runtime = match server::loops::runtime("escabelo").build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cfg));
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

/// Runs `escabelo check`, `escabelo repair` or `escabelo log`.
fn run_tool(cfg: &Config, tool: config::Tool) -> ExitCode {
    let mut opts = match cfg.engine_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("escabelo: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match tool {
        config::Tool::Check { data_dir } => {
            if let Some(d) = data_dir {
                opts.dir = d;
            }
            match escabelo_engine::tools::check(&opts) {
                Ok(report) => {
                    println!("{report}");
                    if report.is_ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("escabelo check: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        config::Tool::Repair { data_dir } => {
            if let Some(d) = data_dir {
                opts.dir = d;
            }
            match escabelo_engine::tools::repair(&opts) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("escabelo repair: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        config::Tool::Log {
            data_dir,
            follow,
            json,
            tables,
        } => {
            if let Some(d) = data_dir {
                opts.dir = d;
            }
            let lo = escabelo_engine::tools::OplogOptions {
                follow,
                tables,
                ..Default::default()
            };
            match escabelo_engine::tools::write_oplog(&opts, &lo, json, &mut std::io::stdout()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("escabelo log: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .map_err(|e| e.to_string())
}

async fn run(cfg: Config) -> ExitCode {
    let checked = (|| {
        Ok::<_, String>((
            cfg.engine_options()?,
            cfg.io_threads()?,
            cfg.busy_poll_us()?,
            cfg.keep_awake_us()?,
        ))
    })();
    let (opts, threads, busy_poll_us, keep_awake_us) = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("escabelo: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    server::busy_poll::set_busy_poll_us(busy_poll_us);
    if let Err(e) = server::keep_awake::start(keep_awake_us) {
        warn!(error = %e, "could not start the keep-awake thread; --keep-awake-us is off");
    }
    let max_value_len = opts.value_len_max;
    raise_fd_limit(cfg.max_connections);
    info!(
        port = cfg.port,
        bind = %cfg.bind,
        data_dir = %cfg.data_dir.display(),
        memtable_size = cfg.memtable_size,
        compaction_interval = ?cfg.compaction_interval,
        wal_sync_interval = ?cfg.wal_sync_interval,
        durability = %cfg.durability,
        max_value_size = cfg.max_value_size,
        cache_size = cfg.cache_size,
        max_connections = cfg.max_connections,
        metrics_port = cfg.metrics_port,
        "starting escabelo {}",
        env!("CARGO_PKG_VERSION")
    );

    let started = std::time::Instant::now();
    let db = match tokio::task::spawn_blocking(move || Db::open(opts)).await {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => {
            error!(error = %e, "cannot open the database");
            eprintln!(
                "escabelo: cannot open the database in {}: {e}",
                cfg.data_dir.display()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            error!(error = %e, "opening the database panicked");
            return ExitCode::FAILURE;
        }
    };
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "database open"
    );
    server::keep_awake::watch_disk(db.log_syncs());

    let settings = server::Settings {
        addr: SocketAddr::new(cfg.bind, cfg.port),
        max_connections: cfg.max_connections,
        max_value_len,
    };
    let srv = match server::Server::bind(settings.clone(), db.clone()) {
        Ok(s) => s,
        Err(e) => {
            error!(addr = %settings.addr, error = %e, "cannot listen");
            eprintln!("escabelo: cannot listen on {}: {e}", settings.addr);
            close_db(&db);
            return ExitCode::FAILURE;
        }
    };
    let srv = match server::loops::EventLoops::start(threads - 1) {
        Ok(l) => srv.with_event_loops(l),
        Err(e) => {
            error!(error = %e, "cannot start the I/O threads");
            eprintln!("escabelo: cannot start {threads} I/O threads: {e}");
            close_db(&db);
            return ExitCode::FAILURE;
        }
    };
    match srv.local_addr() {
        Ok(a) => info!(addr = %a, io_threads = threads, "listening"),
        Err(_) => info!(addr = %settings.addr, "listening"),
    }

    // The metrics endpoint is part of the configuration: if its port
    // cannot be had, the server does not start (like the main port).
    let metrics = if cfg.metrics_port == 0 {
        None
    } else {
        let addr = SocketAddr::new(cfg.bind, cfg.metrics_port);
        match metrics::http::MetricsServer::bind(addr, db.clone(), srv.counters()) {
            Ok(m) => {
                info!(addr = %m.local_addr().unwrap_or(addr), "metrics endpoint ready (GET /metrics)");
                Some(tokio::spawn(m.run()))
            }
            Err(e) => {
                error!(%addr, error = %e, "cannot listen for metrics");
                eprintln!("escabelo: cannot listen for metrics on {addr}: {e} (change --metrics-port, or 0 to turn it off)");
                drop(srv);
                close_db(&db);
                return ExitCode::FAILURE;
            }
        }
    };

    srv.run(shutdown_signal()).await;
    if let Some(m) = metrics {
        m.abort();
    }
    info!("connections closed; syncing the database");
    if close_db(&db) {
        info!("shutdown complete");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Raises the soft open-file limit to the hard limit so that
/// `--max-connections` clients (plus the engine's files) fit; warns if they
/// cannot.
fn raise_fd_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    let needed = max_connections.saturating_add(256) as libc::rlim_t;
    if lim.rlim_cur < needed {
        warn!(
            open_files_limit = lim.rlim_cur,
            max_connections,
            "the open-file limit is below --max-connections; some clients may be refused by the OS"
        );
    }
}

/// Syncs and closes the engine; false if either failed.
fn close_db(db: &Db) -> bool {
    let mut ok = true;
    if let Err(e) = db.sync() {
        error!(error = %e, "final sync failed");
        ok = false;
    }
    if let Err(e) = db.close() {
        error!(error = %e, "close failed");
        ok = false;
    }
    ok
}

/// Completes on the first SIGTERM or SIGINT; a second one exits at once.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(
        signal = name,
        "shutting down (send it again to exit at once)"
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        warn!("second signal: exiting immediately");
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    /// Reads one of jemalloc's `opt.*` values by name.
    fn allocator_option<T: Default>(name: &str) -> T {
        let name = std::ffi::CString::new(name).unwrap();
        let mut value = T::default();
        let mut len = std::mem::size_of::<T>();
        // SAFETY: `value` is a `T` of `len` bytes, the type jemalloc
        // documents for the options read here; no new value is written.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&mut value as *mut T).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "mallctl {name:?}");
        value
    }

    /// The options string reaches jemalloc (a misspelt symbol name would
    /// be ignored without a word).
    #[test]
    fn the_allocator_runs_with_our_options() {
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            return; // overridden on purpose
        }
        assert_eq!(allocator_option::<u32>("opt.narenas"), 1);
        assert_eq!(allocator_option::<isize>("opt.dirty_decay_ms"), 2000);
        assert_eq!(allocator_option::<isize>("opt.muzzy_decay_ms"), 0);
    }
}
