//! The report model: a status per control and per subject (a key, a key material version, a
//! member, a policy statement, a file), each with the evidence that decided it. This module
//! owns the statuses, how they combine, and the JSON shape of schema version
//! [`SCHEMA_VERSION`] (documented in `docs/compliance.md`, checked by
//! `docs/compliance-report.schema.json`). It only holds what the checks found; it never reads
//! an HSM, the store or a file, and nothing in it may hold a PIN, key byte or plaintext.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::catalogue::Control;

/// Name of the report format, in every report.
pub const SCHEMA: &str = "hsm-kms/compliance-report";
/// Version of the report format: the major part changes when a field changes meaning or
/// goes away, the minor part when fields are added.
pub const SCHEMA_VERSION: &str = "1.0";

/// The outcome of one control or one subject, worst first when ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The evidence shows the control is broken.
    Fail,
    /// The control holds, with something a reviewer should look at.
    Warn,
    /// The evidence shows the control holds.
    Pass,
    /// Nothing to check, or the check cannot apply yet (the reason says which).
    NotApplicable,
}

impl Status {
    /// The name as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Fail => "FAIL",
            Status::Warn => "WARN",
            Status::Pass => "PASS",
            Status::NotApplicable => "NOT_APPLICABLE",
        }
    }

    /// Every status, worst first.
    pub const ALL: [Status; 4] = [
        Status::Fail,
        Status::Warn,
        Status::Pass,
        Status::NotApplicable,
    ];
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// An HSM cluster of the config.
    Cluster,
    /// One HSM of a cluster.
    Member,
    /// A key (all its material versions).
    Key,
    /// One material version of a key.
    KeyVersion,
    /// A key policy or identity policy.
    Policy,
    /// An access key of `[[credentials]]`.
    Credential,
    /// A grant on a key.
    Grant,
    /// An alarm on the audit trail.
    Alarm,
    /// The audit trail as a whole.
    Trail,
    /// A checkpoint sealed in the HSMs.
    Checkpoint,
    /// The server's listening socket.
    Listener,
    /// A file on disk (config, PIN file, data directory).
    File,
}

/// One subject's outcome under a control.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The finding's subject, by name, ARN or path.
    pub subject: String,
    /// What kind of thing the subject is.
    pub kind: SubjectKind,
    /// The outcome for this subject.
    pub status: Status,
    /// One sentence: why this status.
    pub reason: String,
    /// The values read that decided it (attribute values, counts, sequence numbers, times).
    pub evidence: Value,
}

impl Finding {
    /// A finding.
    pub fn new(
        kind: SubjectKind,
        subject: impl Into<String>,
        status: Status,
        reason: impl Into<String>,
        evidence: Value,
    ) -> Finding {
        Finding {
            subject: subject.into(),
            kind,
            status,
            reason: reason.into(),
            evidence,
        }
    }
}

/// One control's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ControlResult {
    /// The control's stable identifier, e.g. `KMS-HSM-1`.
    pub id: &'static str,
    /// A one-line title.
    pub title: &'static str,
    /// The standards' clauses the control answers to.
    pub references: &'static [&'static str],
    /// What the control checks and from which primary evidence.
    pub description: &'static str,
    /// The worst status among the findings (NOT_APPLICABLE without findings).
    pub status: Status,
    /// One sentence over all findings.
    pub summary: String,
    /// Control-wide evidence (configuration values the check used, totals).
    pub evidence: Value,
    /// One finding per subject checked.
    pub findings: Vec<Finding>,
}

impl ControlResult {
    /// The result of `control` from its findings: the worst finding decides, and a control
    /// without findings is NOT_APPLICABLE with `empty` as its summary.
    pub fn from_findings(
        control: &Control,
        evidence: Value,
        findings: Vec<Finding>,
        empty: &str,
    ) -> ControlResult {
        let status = findings
            .iter()
            .map(|f| f.status)
            .filter(|s| *s != Status::NotApplicable)
            .min()
            .unwrap_or(Status::NotApplicable);
        let summary = if findings.is_empty() {
            empty.to_owned()
        } else {
            let mut counts: BTreeMap<Status, usize> = BTreeMap::new();
            for finding in &findings {
                *counts.entry(finding.status).or_default() += 1;
            }
            let parts: Vec<String> = counts
                .iter()
                .map(|(status, count)| format!("{count} {}", status.as_str()))
                .collect();
            format!("{} finding(s): {}", findings.len(), parts.join(", "))
        };
        ControlResult {
            id: control.id,
            title: control.title,
            references: control.references,
            description: control.description,
            status,
            summary,
            evidence,
            findings,
        }
    }

    /// A control that does not apply as a whole, with the reason.
    pub fn not_applicable(control: &Control, reason: &str) -> ControlResult {
        ControlResult {
            id: control.id,
            title: control.title,
            references: control.references,
            description: control.description,
            status: Status::NotApplicable,
            summary: reason.to_owned(),
            evidence: Value::Null,
            findings: Vec::new(),
        }
    }
}

/// Counts by status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Number that passed.
    #[serde(rename = "PASS")]
    pub pass: usize,
    /// Number that failed.
    #[serde(rename = "FAIL")]
    pub fail: usize,
    /// Number with a warning.
    #[serde(rename = "WARN")]
    pub warn: usize,
    /// Number to which the check did not apply.
    #[serde(rename = "NOT_APPLICABLE")]
    pub not_applicable: usize,
}

impl Counts {
    fn add(&mut self, status: Status) {
        match status {
            Status::Pass => self.pass += 1,
            Status::Fail => self.fail += 1,
            Status::Warn => self.warn += 1,
            Status::NotApplicable => self.not_applicable += 1,
        }
    }
}

/// The report's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// FAIL when any control fails, else WARN when any warns, else PASS (NOT_APPLICABLE
    /// when nothing applied).
    pub status: Status,
    /// Controls by status.
    pub controls: Counts,
    /// Findings by status, over every control.
    pub findings: Counts,
}

/// What the report's pictures show, computed from the same evidence.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Charts {
    /// Keys by AWS key state.
    pub keys_by_state: BTreeMap<String, usize>,
    /// Enabled keys: days since their newest material version was made.
    pub rotation_age_days: Vec<Bar>,
    /// Audit events per UTC day (`YYYY-MM-DD`), by `eventTime`.
    pub audit_events_per_day: Vec<Bar>,
    /// Key material versions: members holding a copy.
    pub copies_per_key: Vec<Bar>,
}

/// One labelled value of a chart.
#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    /// What the bar stands for (a key, a day).
    pub label: String,
    /// Its value, in the chart's unit.
    pub value: f64,
}

/// Where the report came from.
#[derive(Debug, Clone, Serialize)]
pub struct Origin {
    /// The program that wrote the report (`hsm-kms`).
    pub tool: &'static str,
    /// Its version.
    pub version: &'static str,
    /// The cluster checked.
    pub cluster: String,
    /// The cluster's replication mode (`hsm-kms` or `vendor`).
    pub replication: &'static str,
    /// The account whose keys were checked.
    pub account_id: String,
    /// The region the checks ran in.
    pub region: String,
    /// Where the evidence was read: `in-process` (the only mode until the server has an admin
    /// socket).
    pub mode: &'static str,
}

/// The audit events the report relied on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditScope {
    /// Sequence number of the chain head when the check ran.
    pub head_seq: u64,
    /// Events read (all of them: the chain is verified end to end).
    pub events: u64,
    /// Sequence number of the newest sealed checkpoint, if any.
    pub newest_checkpoint_seq: Option<u64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The report format's name, [`SCHEMA`].
    pub schema: &'static str,
    /// The format's version, [`SCHEMA_VERSION`].
    pub schema_version: &'static str,
    /// RFC 3339, UTC.
    pub generated_at: String,
    /// Milliseconds since the epoch, by the clock the checks used.
    pub generated_at_millis: i64,
    /// What produced the report, and for which cluster and account.
    pub origin: Origin,
    /// Counts by status and the overall verdict.
    pub summary: Summary,
    /// Every control, in catalogue order.
    pub controls: Vec<ControlResult>,
    /// The data behind the HTML report's charts.
    pub charts: Charts,
    /// How much of the audit trail the checks read.
    pub audit: AuditScope,
}

impl Report {
    /// Assembles the report and its summary.
    pub fn new(
        now_millis: i64,
        origin: Origin,
        controls: Vec<ControlResult>,
        charts: Charts,
        audit: AuditScope,
    ) -> Report {
        let mut control_counts = Counts::default();
        let mut finding_counts = Counts::default();
        for control in &controls {
            control_counts.add(control.status);
            for finding in &control.findings {
                finding_counts.add(finding.status);
            }
        }
        let status = controls
            .iter()
            .map(|c| c.status)
            .filter(|s| *s != Status::NotApplicable)
            .min()
            .unwrap_or(Status::NotApplicable);
        Report {
            schema: SCHEMA,
            schema_version: SCHEMA_VERSION,
            generated_at: crate::audit::event::event_time(now_millis),
            generated_at_millis: now_millis,
            origin,
            summary: Summary {
                status,
                controls: control_counts,
                findings: finding_counts,
            },
            controls,
            charts,
            audit,
        }
    }

    /// Whether any control failed (the command then exits non-zero).
    pub fn failed(&self) -> bool {
        self.summary.status == Status::Fail
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|error| {
            serde_json::json!({ "error": format!("the report does not encode: {error}") })
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONTROL: Control = Control {
        id: "KMS-TEST-1",
        title: "test",
        references: &["ref"],
        description: "d",
    };

    #[test]
    fn the_worst_finding_decides_and_not_applicable_never_hides_a_result() {
        let finding = |status| Finding::new(SubjectKind::Key, "k", status, "r", json!({}));
        let cases = [
            (vec![], Status::NotApplicable),
            (vec![Status::Pass, Status::NotApplicable], Status::Pass),
            (vec![Status::Pass, Status::Warn], Status::Warn),
            (vec![Status::Warn, Status::Fail, Status::Pass], Status::Fail),
            (vec![Status::NotApplicable], Status::NotApplicable),
        ];
        for (statuses, expected) in cases {
            let findings = statuses.iter().map(|s| finding(*s)).collect();
            let result = ControlResult::from_findings(&CONTROL, Value::Null, findings, "none");
            assert_eq!(result.status, expected, "{statuses:?}");
        }
    }

    #[test]
    fn statuses_serialise_with_their_report_names() {
        for status in Status::ALL {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                json!(status.as_str())
            );
        }
    }
}
