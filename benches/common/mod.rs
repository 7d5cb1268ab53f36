//! What every benchmark shares: a throw-away SoftHSM2 cluster, the seconds per case, medians,
//! verdicts and the machine's load, so each benchmark prints its figures the same way.
#![allow(dead_code)] // each benchmark binary uses its own part of this module

pub mod http;

use std::error::Error;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// `HSM_KMS_BENCH_SECS` (seconds per case), or `default`.
pub fn seconds(default: u64) -> Duration {
    Duration::from_secs(
        std::env::var("HSM_KMS_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
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

/// The one-minute load average, as `/proc/loadavg` gives it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
