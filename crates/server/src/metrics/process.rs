//! The process's own figures, read from `/proc/self` at scrape time, under
//! the standard `process_*` names that Prometheus client libraries use.
//! A figure that cannot be read (no `/proc`) is left out of the scrape.

use super::Families;
use prometheus::proto::MetricType;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// The fields of `/proc/<pid>/stat` this module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime_ticks: u64,
    stime_ticks: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field n is at index n - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime_ticks: num(14)?,
        stime_ticks: num(15)?,
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

/// The boot time (`btime` of `/proc/stat`), seconds since the epoch.
fn parse_btime(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads its argument.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|&v| v > 0)
}

fn max_fds() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    Some(lim.rlim_cur)
}

impl ProcessStats {
    /// Reads the figures now; each one that fails is `None`.
    pub fn read() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s));
        let ticks = sysconf(libc::_SC_CLK_TCK);
        let page = sysconf(libc::_SC_PAGESIZE);
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_btime(&s));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.filter(|e| e.is_ok()).count() as u64);
        ProcessStats {
            cpu_seconds: stat
                .zip(ticks)
                .map(|(s, t)| (s.utime_ticks + s.stime_ticks) as f64 / t as f64),
            resident_bytes: stat.zip(page).map(|(s, p)| s.rss_pages * p),
            virtual_bytes: stat.map(|s| s.vsize),
            open_fds,
            max_fds: max_fds(),
            start_time_seconds: stat
                .zip(ticks)
                .zip(btime)
                .map(|((s, t), b)| b as f64 + s.start_ticks as f64 / t as f64),
        }
    }

    /// Adds the families of the figures that were read.
    pub(super) fn families(&self, f: &mut Families) {
        let mut one = |name: &str, help: &str, t: MetricType, v: Option<f64>| {
            if let Some(v) = v {
                f.labeled(name, help, t, &[], [(Vec::new(), v)]);
            }
        };
        one(
            "process_cpu_seconds_total",
            "User and system CPU time spent, in seconds.",
            MetricType::COUNTER,
            self.cpu_seconds,
        );
        one(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            MetricType::GAUGE,
            self.resident_bytes.map(|v| v as f64),
        );
        one(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            MetricType::GAUGE,
            self.virtual_bytes.map(|v| v as f64),
        );
        one(
            "process_open_fds",
            "Open file descriptors.",
            MetricType::GAUGE,
            self.open_fds.map(|v| v as f64),
        );
        one(
            "process_max_fds",
            "Limit on open file descriptors.",
            MetricType::GAUGE,
            self.max_fds.map(|v| v as f64),
        );
        one(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            MetricType::GAUGE,
            self.start_time_seconds,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_name() {
        let line = "4242 (esc (a) b) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            Stat {
                utime_ticks: 250,
                stime_ticks: 50,
                start_ticks: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_btime("cpu 1 2\nbtime 1700000000\n"), Some(1700000000));
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::read();
        assert!(p.cpu_seconds.is_some_and(|v| v >= 0.0));
        assert!(p.resident_bytes.is_some_and(|v| v > 0));
        assert!(p.open_fds.is_some_and(|v| v >= 3));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86400.0 * 365.0,
            "{start}"
        );
    }
}
