//! The `[compliance]` section of the config: the thresholds the checks hold the evidence to.
//! It owns their defaults and nothing else; every field is optional.

use serde::Deserialize;

use crate::audit::log::AuditSettings;

/// `[compliance]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ComplianceSettings {
    /// Longest an event may wait for the checkpoint that seals it, in seconds (default: twice
    /// `[audit] checkpoint_interval_s`, plus 60).
    pub checkpoint_max_gap_s: Option<u64>,
    /// Most events between two sealed checkpoints (default: twice `[audit] checkpoint_every`).
    pub checkpoint_max_events: Option<u64>,
    /// Longest an alarm may leave an event undelivered, in seconds.
    pub alarm_max_lag_s: u64,
    /// Time allowed after a key's rotation period before it counts as not rotated, in seconds
    /// (maintenance rotates keys on its next run, not at the exact instant).
    pub rotation_grace_s: u64,
    /// Grants older than this are findings.
    pub grant_max_age_days: u64,
    /// Imported key material expiring within this many days is a warning.
    pub imported_expiry_warn_days: u64,
}

impl Default for ComplianceSettings {
    fn default() -> Self {
        ComplianceSettings {
            checkpoint_max_gap_s: None,
            checkpoint_max_events: None,
            alarm_max_lag_s: 300,
            rotation_grace_s: 86_400,
            grant_max_age_days: 90,
            imported_expiry_warn_days: 30,
        }
    }
}

impl ComplianceSettings {
    /// The checkpoint gap in milliseconds, defaulted from the audit settings.
    pub fn checkpoint_max_gap_ms(&self, audit: &AuditSettings) -> i64 {
        let seconds = self
            .checkpoint_max_gap_s
            .unwrap_or_else(|| 2 * audit.checkpoint_interval.as_secs() + 60);
        i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// The most events between checkpoints, defaulted from the audit settings.
    pub fn checkpoint_max_events(&self, audit: &AuditSettings) -> u64 {
        self.checkpoint_max_events
            .unwrap_or_else(|| audit.checkpoint_every.saturating_mul(2))
    }
}
