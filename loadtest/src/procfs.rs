//! A process's memory and CPU from /proc: `VmRSS`/`VmHWM` from
//! `/proc/<pid>/status`, `utime + stime` from `/proc/<pid>/stat`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub cpu_secs: f64,
    pub at: Instant,
}

/// Reads `pid` (or `self`); `None` when the process is gone or /proc is unreadable.
pub fn sample(pid: Option<u32>) -> Option<Sample> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    Some(Sample {
        rss_kib: status_kib(&status, "VmRSS:")?,
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
        cpu_secs: cpu_ticks(&stat)? as f64 / USER_HZ,
        at: Instant::now(),
    })
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime`: fields 14 and 15, counted after the `(comm)` that may hold spaces.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The soft limit on open files of `pid` (or `self`), from `/proc/<pid>/limits`.
pub fn max_open_files(pid: Option<u32>) -> Option<u64> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let limits = std::fs::read_to_string(format!("{dir}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What a process used over a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcStats {
    pub pid: Option<u32>,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Highest RSS seen by the once-a-second sampler during the run.
    pub rss_max_kib: u64,
    /// The kernel's high-water mark at the end (`VmHWM`, since the process started).
    pub hwm_kib: u64,
    pub cpu_secs: f64,
    /// CPU time over wall time, in percent of one core (200 = both cores of this machine).
    pub cpu_percent: f64,
}

impl ProcStats {
    pub fn between(pid: Option<u32>, before: &Sample, after: &Sample, rss_max_kib: u64) -> Self {
        let wall = after.at.duration_since(before.at).as_secs_f64();
        let cpu = (after.cpu_secs - before.cpu_secs).max(0.0);
        Self {
            pid,
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
            rss_max_kib: rss_max_kib.max(after.rss_kib).max(before.rss_kib),
            hwm_kib: after.hwm_kib,
            cpu_secs: cpu,
            cpu_percent: if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let stat = "1234 (my proc (x)) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(300));
    }

    #[test]
    fn reads_self() {
        let s = sample(None).expect("own /proc entry");
        assert!(s.rss_kib > 0);
        assert!(max_open_files(None).unwrap_or(0) > 0);
    }
}
