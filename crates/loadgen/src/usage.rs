//! What the server used during a measurement: CPU and RSS from Linux's
//! /proc, and its users cache's hits and misses from its metrics.

/// The hits and misses of the server's users cache, from its metrics.
pub async fn user_cache_counts(addr: Option<std::net::SocketAddr>) -> Option<(u64, u64)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = addr.filter(|a| a.ip().is_loopback())?;
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let value = |family: &str| -> Option<u64> {
        let prefix = format!("{family}{{cache=\"users\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Some((
        value("usermgmt_cache_hits_total")?,
        value("usermgmt_cache_misses_total")?,
    ))
}

/// CPU counters from Linux's /proc, in clock ticks (the unit cancels out).
#[derive(Debug)]
pub struct CpuSample {
    pub total: u64,
    pub idle: u64,
    pub cores: usize,
    pub loadgen: u64,
    pub server: Option<u64>,
    pub server_rss_kib: Option<u64>,
}

/// CPU use during one measurement, in cores.
#[derive(Debug)]
pub struct CpuUse {
    pub cores: usize,
    pub busy_cores: f64,
    pub loadgen_cores: f64,
    pub server_cores: Option<f64>,
    pub server_rss_kib: Option<u64>,
}

impl CpuSample {
    /// `None` where /proc is not available. The servers' ticks are summed
    /// (`None` unless every one was read); the RSS is the largest.
    pub fn take(server_pids: &[u32]) -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let mut lines = stat.lines();
        let fields: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest is in user).
        let total = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        let cores = lines
            .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
            .count();
        let loadgen = process_ticks("self")?;
        let server = (!server_pids.is_empty())
            .then(|| {
                server_pids
                    .iter()
                    .map(|pid| process_ticks(&pid.to_string()))
                    .sum::<Option<u64>>()
            })
            .flatten();
        let server_rss_kib = server_pids.iter().filter_map(|&pid| rss_kib(pid)).max();
        Some(CpuSample {
            total,
            idle,
            cores,
            loadgen,
            server,
            server_rss_kib,
        })
    }
}

impl CpuUse {
    /// The time-weighted mean of several rounds' use, and the largest RSS seen.
    pub fn pooled<'a>(rounds: impl Iterator<Item = (&'a CpuUse, f64)>) -> Option<CpuUse> {
        let rounds: Vec<_> = rounds.collect();
        let (last, _) = rounds.last()?;
        let seconds: f64 = rounds.iter().map(|(_, s)| s).sum();
        let mean = |f: &dyn Fn(&CpuUse) -> f64| {
            rounds.iter().map(|(c, s)| f(c) * s).sum::<f64>() / seconds
        };
        let server_cores = rounds
            .iter()
            .map(|(c, s)| c.server_cores.map(|cores| cores * s))
            .sum::<Option<f64>>()
            .map(|weighted| weighted / seconds);
        Some(CpuUse {
            cores: last.cores,
            busy_cores: mean(&|c| c.busy_cores),
            loadgen_cores: mean(&|c| c.loadgen_cores),
            server_cores,
            server_rss_kib: rounds.iter().filter_map(|(c, _)| c.server_rss_kib).max(),
        })
    }

    pub fn between(before: &CpuSample, after: &CpuSample) -> CpuUse {
        let total = after.total.saturating_sub(before.total).max(1) as f64;
        let cores = after.cores.max(1);
        let share = |ticks: u64| ticks as f64 / total * cores as f64;
        let idle = after.idle.saturating_sub(before.idle);
        let busy = after
            .total
            .saturating_sub(before.total)
            .saturating_sub(idle);
        CpuUse {
            cores,
            busy_cores: share(busy),
            loadgen_cores: share(after.loadgen.saturating_sub(before.loadgen)),
            server_cores: match (before.server, after.server) {
                (Some(b), Some(a)) => Some(share(a.saturating_sub(b))),
                _ => None,
            },
            server_rss_kib: after.server_rss_kib,
        }
    }
}

/// utime + stime of a process from /proc/<pid>/stat.
pub fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
