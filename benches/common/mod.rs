//! What every benchmark shares: a throw-away SoftHSM2 cluster, the seconds per case, timed
//! slices and their tallies, medians, verdicts, the machine's CPUs and load and the process's
//! memory, so each benchmark measures and prints its figures the same way.
#![allow(dead_code)] // each benchmark binary uses its own part of this module

pub mod http;
pub mod token;

use std::error::Error;
use std::ops::AddAssign;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hsm_kms::config::Config;

pub type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Makes a SoftHSM2 cluster of `members` tokens in `dir` with `scripts/softhsm-cluster.sh`
/// and loads its configuration (`dir/hsm-kms.toml`). The cluster is not initialised.
pub fn make_cluster(dir: &Path, members: usize) -> Res<Config> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/softhsm-cluster.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .arg(members.to_string())
        .stdout(Stdio::null())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(Config::load(&dir.join("hsm-kms.toml"))?)
}

/// `HSM_KMS_BENCH_SECS` (seconds per case, fractions allowed), or `default` when it is unset.
pub fn seconds(default: f64) -> Res<Duration> {
    let seconds = match std::env::var("HSM_KMS_BENCH_SECS") {
        Ok(text) => text
            .parse()
            .map_err(|error| format!("HSM_KMS_BENCH_SECS={text:?}: {error}"))?,
        Err(_) => default,
    };
    Ok(Duration::try_from_secs_f64(seconds)
        .map_err(|error| format!("HSM_KMS_BENCH_SECS={seconds}: {error}"))?)
}

/// How many slices of `slice` make up `duration`: rounded up, at least one.
pub fn slices(duration: Duration, slice: Duration) -> usize {
    (duration.as_nanos().div_ceil(slice.as_nanos()) as usize).max(1)
}

/// Calls made, wall-clock seconds and CPU seconds of the calling thread(s) spent on them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub calls: u64,
    pub wall: f64,
    pub cpu: f64,
}

impl Tally {
    /// Calls per second of wall-clock time.
    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.wall
    }

    /// Calls per CPU second of the calling thread(s).
    pub fn per_cpu_second(&self) -> f64 {
        self.calls as f64 / self.cpu
    }
}

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.calls += other.calls;
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

/// CPU time this thread has run, in seconds, from `/proc/thread-self/schedstat`. SoftHSM2 does
/// all its work in the calling thread, so this is a call's cost without the time spent
/// waiting for a CPU, which on a loaded machine is most of the wall-clock time.
pub fn thread_cpu_seconds() -> Res<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let nanos: f64 = text
        .split_whitespace()
        .next()
        .ok_or("empty /proc/thread-self/schedstat")?
        .parse()?;
    Ok(nanos / 1e9)
}

/// Calls `op` (given the calls made so far) until `duration` has passed, at least once.
pub fn run(duration: Duration, mut op: impl FnMut(u64) -> Res<()>) -> Res<Tally> {
    let cpu = thread_cpu_seconds()?;
    let start = Instant::now();
    let mut calls = 0;
    loop {
        op(calls)?;
        calls += 1;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return Ok(Tally {
                calls,
                wall: elapsed.as_secs_f64(),
                cpu: thread_cpu_seconds()? - cpu,
            });
        }
    }
}

/// One round: `N` cases take turns of one slice (`measure(case)`) `slices` times; each one's tally.
pub fn interleave<const N: usize>(
    slices: usize,
    mut measure: impl FnMut(usize) -> Res<Tally>,
) -> Res<[Tally; N]> {
    let mut tallies = [Tally::default(); N];
    for slice in 0..slices {
        // The case going first moves on by one each time: load from elsewhere hits all alike.
        for k in 0..N {
            let case = (k + slice) % N;
            tallies[case] += measure(case)?;
        }
    }
    Ok(tallies)
}

/// The median of `values` (the upper one of an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The verdict printed next to a goal.
pub fn verdict(meets: bool) -> &'static str {
    if meets { "meets goal" } else { "BELOW goal" }
}

/// The shorter verdict the envelope and policy benchmarks print after a goal.
pub fn met(meets: bool) -> &'static str {
    if meets { "met" } else { "NOT met" }
}

/// The CPUs this process may run on, or 0 when the system does not tell.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The one-minute load average, as `/proc/loadavg` gives it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// A memory figure of this process in KiB from `/proc/self/status`, such as `VmRSS` or `VmHWM`.
pub fn status_kib(field: &str) -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
    let kib = value
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("no value of {field} in /proc/self/status"))?;
    Ok(kib.parse()?)
}
