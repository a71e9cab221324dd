//! Measurement helpers: latency percentiles from a sorted `Vec`, and CPU time of this
//! process (`getrusage`) and of another one (`/proc/<pid>/stat`).

use std::collections::HashMap;
use std::time::Duration;

/// Latencies in microseconds, summarised once the run is over.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    micros: Vec<u32>,
}

impl Latencies {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            micros: Vec::with_capacity(n),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        self.micros
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn summary(mut self) -> Summary {
        self.micros.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.micros.is_empty() {
                return 0.0;
            }
            // Nearest-rank: the smallest value with at least p of the samples at or below it.
            let rank = ((p * self.micros.len() as f64).ceil() as usize).clamp(1, self.micros.len());
            f64::from(self.micros[rank - 1]) / 1000.0
        };
        Summary {
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
        }
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The 50th and 90th percentiles and the maximum of a sample (nearest rank), in the
/// sample's own unit. Values may be negative (differences of coarse clocks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

pub fn spread(values: &[f64]) -> Spread {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    };
    Spread {
        n: sorted.len(),
        p50: pct(0.50),
        p90: pct(0.90),
        max: pct(1.0),
    }
}

/// User + system CPU time of this whole process (every thread), microsecond resolution.
pub fn self_cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User + system CPU time of process `pid` (all its threads), from `/proc/<pid>/stat`;
/// clock-tick resolution (usually 10 ms). `None` when it cannot be read (not Linux, or
/// the process is gone).
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// CPU time of each PostgreSQL backend on this machine connected to `database`, by pid:
/// the processes whose title (`update_process_title`, on by default) reads
/// `postgres: [cluster: ]user database host(port) activity`. Empty when there are none
/// or when PostgreSQL runs elsewhere.
pub fn postgres_backends_cpu(database: &str) -> HashMap<u32, Duration> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if is_backend_of(&String::from_utf8_lossy(&cmdline), database)
            && let Some(cpu) = process_cpu_time(pid)
        {
            out.insert(pid, cpu);
        }
    }
    out
}

/// Whether a process title (NUL-separated) is that of a backend of `database`.
fn is_backend_of(cmdline: &str, database: &str) -> bool {
    let title = cmdline.replace('\0', " ");
    title.starts_with("postgres:") && title.split_whitespace().any(|word| word == database)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(Latencies::default().summary().p99_ms, 0.0);
    }

    #[test]
    fn spread_of_floats() {
        let values: Vec<f64> = (1..=10).rev().map(f64::from).chain([f64::NAN]).collect();
        let s = spread(&values);
        assert_eq!((s.n, s.p50, s.p90, s.max), (10, 5.0, 9.0, 10.0));
        let s = spread(&[-1.5]);
        assert_eq!((s.n, s.p50, s.p90, s.max), (1, -1.5, -1.5, -1.5));
        assert_eq!(spread(&[]).n, 0);
    }

    #[test]
    fn cpu_clocks_advance() {
        let before = self_cpu_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(self_cpu_time() > before);
        assert!(process_cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn recognises_postgres_backends() {
        let db = "pipelet_bench_0123";
        assert!(is_backend_of(
            "postgres: 15/main: postgres pipelet_bench_0123 127.0.0.1(40312) idle\0\0",
            db
        ));
        assert!(is_backend_of(
            "postgres: bench pipelet_bench_0123 [local] UPDATE",
            db
        ));
        assert!(!is_backend_of(
            "postgres: 15/main: postgres pipelet_bench_01234 127.0.0.1(1) idle",
            db
        ));
        assert!(!is_backend_of("postgres: 15/main: walwriter", db));
        assert!(!is_backend_of("/usr/bin/psql\0pipelet_bench_0123", db));
    }
}
