//! A full disk, end to end: the real binary on a small tmpfs. Needs root
//! (to mount); says so and skips otherwise.

mod common;

use common::Server;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Tmpfs {
            dir,
            _parent: parent,
        })
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(st.success(), "remount failed");
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn value(i: usize) -> String {
    format!("{i}:{}", "v".repeat(32 * 1024))
}

fn check_all(srv: &Server, acked: &BTreeMap<String, String>, when: &str) {
    let mut c = srv.client();
    for (k, v) in acked {
        let got = c.request(format!("read {k}\r").as_bytes(), 1);
        assert_eq!(common::lossy(&got), format!("{v}\r"), "{when}: key {k}");
    }
}

#[test]
fn full_tmpfs_refuses_writes_keeps_reads_and_recovers_when_space_returns() {
    let fs = match Tmpfs::mount("12m") {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIPPED full_tmpfs test: {why} (needs root to mount a tmpfs)");
            return;
        }
    };
    let data = fs.path().join("data");
    let mut srv = Server::start_in(&data, &["--memtable-size", "1MiB"]);
    let mut c = srv.client();
    let mut acked = BTreeMap::new();
    let mut refused = 0;
    let mut i = 0;
    // Fill the disk: unique keys, 32 KiB values.
    while refused < 20 && i < 5000 {
        let (k, v) = (format!("f:{i:05}"), value(i));
        let r = c.request(format!("write {k}|{v}\r").as_bytes(), 1);
        if r == b"success\r" {
            acked.insert(k, v);
        } else {
            let text = common::lossy(&r);
            assert_eq!(text, "error: disk full\r", "a refused write must say why");
            refused += 1;
        }
        i += 1;
    }
    println!(
        "{} writes acknowledged, {refused} refused on a full 12 MiB tmpfs",
        acked.len()
    );
    assert!(refused > 0, "the disk never filled up");
    assert!(!acked.is_empty());
    // Reads keep working and return exactly what was acknowledged; the
    // server is still up.
    check_all(&srv, &acked, "on a full disk");

    // Space returns: writes work again without a restart.
    fs.resize("256m");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recovered = false;
    while Instant::now() < deadline {
        let (k, v) = (format!("g:{i:05}"), value(i));
        i += 1;
        let r = c.request(format!("write {k}|{v}\r").as_bytes(), 1);
        if r == b"success\r" {
            acked.insert(k, v);
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(recovered, "writes did not work again after space was freed");
    for j in 0..50 {
        let (k, v) = (format!("h:{j:05}"), value(j));
        c.roundtrip(format!("write {k}|{v}\r").as_bytes(), b"success\r");
        acked.insert(k, v);
    }
    check_all(&srv, &acked, "after space returned");

    // Nothing acknowledged is lost across a kill -9.
    drop(c);
    srv.kill9();
    drop(srv);
    let srv = Server::start_in(&data, &[]);
    check_all(&srv, &acked, "after kill -9 and restart");
    drop(srv);
}
