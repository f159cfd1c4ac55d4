//! `escabelo-bench`: load generator for Escabelo (text protocol) and Redis
//! (RESP2) with the challenge's workload. Prints a table (or one JSON object
//! with `--json`); exits non-zero if any request failed or any value read
//! back was wrong.

mod client;
mod config;
mod interval;
mod report;
mod run;
mod verify;
mod workload;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cfg = config::Config::from_env_args();
    let built = if cfg.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("escabelo-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let json = cfg.json;
    if cfg.verify_all {
        let key_count = cfg.key_count;
        let v = runtime.block_on(verify::run(cfg));
        if json {
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
        } else {
            println!("{}", verify::summary(&v, key_count));
        }
        for e in &v.samples {
            eprintln!("error: {e}");
        }
        return if v.wrong > 0 || v.keys < key_count {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }
    let report = runtime.block_on(run::run(cfg));
    if json {
        println!("{}", report.to_json());
        for e in &report.error_samples {
            eprintln!("error: {e}");
        }
    } else {
        print!("{}", report.to_table());
    }
    if report.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests;
