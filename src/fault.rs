//! Crash points for crash-consistency tests. When the environment variable
//! `HSM_KMS_CRASH_AT` names a point, the process aborts there, as a power cut would: no
//! destructor, no flush. This module exists only with the `fault-injection` cargo feature,
//! which the tests turn on; in any other build the `crash_point!` calls compile to nothing.

use std::sync::OnceLock;

/// Environment variable naming the crash point to abort at.
pub const CRASH_AT_ENV: &str = "HSM_KMS_CRASH_AT";

/// Aborts the process if `HSM_KMS_CRASH_AT` names `point`.
pub fn crash_point(point: &str) {
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    let crash_at = CRASH_AT.get_or_init(|| std::env::var(CRASH_AT_ENV).ok());
    if crash_at.as_deref() == Some(point) {
        eprintln!("hsm-kms: crash point {point} reached; aborting");
        std::process::abort();
    }
}
