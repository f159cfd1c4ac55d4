//! `--verify-all`: reads every key `bench:000000 ..` once and compares it
//! byte for byte with the value the preload of the same `--seed` and
//! `--key-count` wrote. `scripts/scale.sh` runs it after a restart.

use std::time::{Duration, Instant};

use crate::client::{Conn, ReplyKind};
use crate::config::Config;
use crate::workload::{self, key_name};

/// How many wrong keys are described in the result.
const MAX_SAMPLES: usize = 10;

/// The outcome of a full read-back.
#[derive(Debug, Default, serde::Serialize)]
pub struct Verified {
    /// Keys read.
    pub keys: u64,
    /// Value bytes read.
    pub bytes: u64,
    /// Keys absent, different, or not read because of an error.
    pub wrong: u64,
    /// Seconds the read-back took.
    pub secs: f64,
    /// The first few problems.
    pub samples: Vec<String>,
}

impl Verified {
    fn note(&mut self, msg: String) {
        self.wrong += 1;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(msg);
        }
    }

    fn merge(&mut self, other: Verified) {
        self.keys += other.keys;
        self.bytes += other.bytes;
        self.wrong += other.wrong;
        for s in other.samples {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.push(s);
            }
        }
    }
}

/// Checks keys `first, first + step, ...` over one connection.
async fn verify_task(cfg: Config, first: u64, step: u64) -> Verified {
    let mut v = Verified::default();
    let keys: Vec<u64> = (first..cfg.key_count).step_by(step as usize).collect();
    let mut conn = match Conn::connect(&cfg.addr, cfg.protocol, cfg.timeout).await {
        Ok(c) => c,
        Err(e) => {
            v.note(format!("connecting to {}: {e}", cfg.addr));
            v.wrong += (keys.len() as u64).saturating_sub(1);
            return v;
        }
    };
    let mut expected = Vec::new();
    for (n, batch) in keys.chunks(cfg.pipeline.max(1) as usize).enumerate() {
        for &i in batch {
            conn.queue_read(&key_name(i));
        }
        let sent = async {
            conn.flush().await?;
            for &i in batch {
                let key = key_name(i);
                let (kind, body) = conn.next_reply().await?;
                v.keys += 1;
                match kind {
                    ReplyKind::Value => {
                        expected.clear();
                        let len = workload::preload_size(cfg.seed, i);
                        workload::write_value(&mut expected, &key, len, 0);
                        v.bytes += body.len() as u64;
                        if body != expected.as_slice() {
                            let why = workload::check_value(&key, body)
                                .err()
                                .map_or("a later version".to_string(), |e| e.to_string());
                            v.note(format!(
                                "{key}: {} bytes, expected {} ({why})",
                                body.len(),
                                expected.len()
                            ));
                        }
                    }
                    ReplyKind::NotFound => v.note(format!("{key}: not found")),
                    other => v.note(format!("{key}: unexpected {other:?} reply")),
                }
            }
            Ok::<(), crate::client::ClientError>(())
        }
        .await;
        if let Err(e) = sent {
            let done = (n * cfg.pipeline.max(1) as usize) as u64;
            let rest = keys.len() as u64 - done.min(keys.len() as u64);
            v.note(format!("connection failed: {e}"));
            v.wrong += rest.saturating_sub(1);
            return v;
        }
    }
    v
}

/// Reads every key over `--concurrency` connections.
pub async fn run(cfg: Config) -> Verified {
    let started = Instant::now();
    let conns = u64::from(cfg.concurrency).min(cfg.key_count).max(1);
    let tasks: Vec<_> = (0..conns)
        .map(|i| tokio::spawn(verify_task(cfg.clone(), i, conns)))
        .collect();
    let mut total = Verified::default();
    for t in tasks {
        match t.await {
            Ok(v) => total.merge(v),
            Err(e) => total.note(format!("verify task failed: {e}")),
        }
    }
    total.secs = started.elapsed().as_secs_f64();
    total
}

/// One line for the terminal.
pub fn summary(v: &Verified, key_count: u64) -> String {
    let rate = v.keys as f64 / v.secs.max(1e-9);
    let secs = Duration::from_secs_f64(v.secs.max(0.0));
    format!(
        "verify: {} of {key_count} keys read ({} value bytes) in {secs:.1?} ({rate:.0} keys/s), {} wrong",
        v.keys, v.bytes, v.wrong
    )
}
