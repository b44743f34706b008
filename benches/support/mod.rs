//! Shared by benches/e2e.rs and benches/webhooks.rs (each uses a part): how a bench was
//! started, and what the benchmarks read off /proc and the services (load, memory, CPU time)
//! and the latency percentiles they report.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The `main` of a `harness = false` bench called `name`. `cargo bench` passes `--bench`: the
/// arguments are then the bench's own. `cargo test` passes a test filter and libtest flags
/// instead; the smoke version (`--smoke`) then runs when the test services are there
/// (PP_TEST_DATABASE_URL, PP_TEST_AMQP_URL) and the filter keeps `<name>_smoke`, else the bench
/// says it skipped. `how_to_run` completes "run it with ...".
pub fn bench_main<O, F>(
    name: &str,
    how_to_run: &str,
    parse: impl FnOnce(&[String]) -> anyhow::Result<O>,
    run: impl FnOnce(O) -> F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = if args.iter().any(|a| a == "--bench") {
        match parse(&args) {
            Ok(options) => options,
            Err(e) => {
                // clap prints its own errors (exit code 2) and --help (exit code 0).
                if let Some(e) = e.downcast_ref::<clap::Error>() {
                    e.exit();
                }
                eprintln!("{name}: {e:#}");
                return ExitCode::from(2);
            }
        }
    } else {
        if args.iter().any(|a| a == "--list") {
            return ExitCode::SUCCESS;
        }
        let smoke_test = format!("{name}_smoke");
        let filtered_out = args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .any(|filter| !smoke_test.contains(filter.as_str()));
        let services = ["PP_TEST_DATABASE_URL", "PP_TEST_AMQP_URL"]
            .iter()
            .all(|v| std::env::var_os(v).is_some());
        if filtered_out || !services {
            println!("{name} bench: skipped (run it with {how_to_run}, or scripts/test.sh for the smoke version)");
            return ExitCode::SUCCESS;
        }
        println!("{name} bench: smoke run under cargo test (not a measurement)");
        match parse(&["--smoke".to_owned()]) {
            Ok(options) => options,
            Err(e) => {
                eprintln!("{name}: the smoke options: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A clap value parser: a count of at least 1.
pub fn positive(value: &str) -> Result<usize, String> {
    match value.parse() {
        Ok(0) => Err("must be positive".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Samples the worker's VmRSS every 100 ms until cancelled; returns the highest.
pub fn sample_rss(pid: u32, stop: CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {
                    if let Some(rss) = proc_status_kib(pid, "VmRSS:") {
                        peak = peak.max(rss);
                    }
                }
            }
        }
        peak
    })
}

/// Reads a `kB` field of /proc/PID/status.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The fields of /proc/PID/stat after the command name (which is in parentheses and may hold
/// spaces): index 0 is field 3 (state), 1 the parent's pid, 11 utime, 12 stime, 13 cutime,
/// 14 cstime, times in clock ticks of 10 ms (USER_HZ is 100 on Linux).
pub fn proc_stat(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat.rsplit_once(')')?.1.split_whitespace();
    Some(fields.map(|f| f.parse().unwrap_or(0)).collect())
}

pub fn ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 10)
}

/// User + system CPU time of a process (all its threads) so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = proc_stat(pid)?;
    Some(ticks(stat.get(11)? + stat.get(12)?))
}

/// CPU time of a server and its children so far: its own, its reaped children's (cutime,
/// cstime: PostgreSQL's backends that exited) and its live children's.
pub fn server_cpu_time(pid: u32) -> Option<Duration> {
    let stat = proc_stat(pid)?;
    let mut total = stat.get(11)? + stat.get(12)? + stat.get(13)? + stat.get(14)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = proc_stat(child) {
            if stat.get(1) == Some(&u64::from(pid)) {
                total += stat.get(11).unwrap_or(&0) + stat.get(12).unwrap_or(&0);
            }
        }
    }
    Some(ticks(total))
}

/// The pids of the services scripts/services.sh started (from PP_PG_DATA and
/// PP_SERVICES_DIR), when they can be found: PostgreSQL's postmaster and RabbitMQ's VM.
pub fn service_pids() -> (Option<u32>, Option<u32>) {
    let first_line = |path: PathBuf| -> Option<u32> {
        std::fs::read_to_string(path)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    };
    let postgres = std::env::var_os("PP_PG_DATA")
        .and_then(|d| first_line(Path::new(&d).join("postmaster.pid")));
    let rabbitmq = std::env::var_os("PP_SERVICES_DIR")
        .and_then(|d| first_line(Path::new(&d).join("rabbitmq/rabbitmq.pid")));
    (postgres, rabbitmq)
}
