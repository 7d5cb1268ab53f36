//! KMS-AUD-1 (the chain verifies end to end, no gap), KMS-AUD-2 (checkpoint spacing) and
//! KMS-AUD-3 (alarms configured and delivering), from one pass over the audit trail in the
//! metadata store, its HSM-sealed checkpoints and the alarms' delivery cursors. It owns the
//! [`TrailView`] the other controls also read (ScheduleKeyDeletion events, members going down,
//! events per day). It never writes to the trail: verifying with the HSMs opens seals only.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::catalogue;
use super::report::{AuditScope, Bar, ControlResult, Finding, Status, SubjectKind};
use super::{ComplianceError, Sources};
use crate::audit::alarm::{KEY_DISABLED_OR_DELETION_SCHEDULED, UNUSABLE_KEY_USED, event_millis};
use crate::audit::checkpoint::{Checkpoint, ClusterSealer, Sealer};
use crate::audit::dispatcher::read_cursor;
use crate::audit::event::event_time;
use crate::audit::log::{Head, read_events, read_head};
use crate::audit::verify::{VerifyReport, verify};
use crate::store::Table;

/// The sealed checkpoint stored at `seq`, if any (for the evidence bundle).
pub fn checkpoint_at(
    store: &dyn crate::store::MetadataStore,
    seq: u64,
) -> Result<Option<Checkpoint>, ComplianceError> {
    let Some(record) = store.get(Table::AuditCheckpoints, &seq.to_be_bytes())? else {
        return Ok(None);
    };
    serde_json::from_slice(&record.payload)
        .map(Some)
        .map_err(|e| ComplianceError::Output(format!("checkpoint {seq} is unreadable: {e}")))
}

/// What the controls need of the audit trail, read once.
#[derive(Debug, Clone)]
pub struct TrailView {
    head: Head,
    /// `(seq, eventTime in ms)` of every readable event, in order.
    times: Vec<(u64, i64)>,
    /// The chain verification, with seals checked in the HSMs.
    verified: Result<VerifyReport, String>,
    checkpoints: Vec<Checkpoint>,
    unreadable_checkpoints: Vec<String>,
    /// Key ARN to its newest successful ScheduleKeyDeletion event.
    schedule_deletion: BTreeMap<String, (u64, Value)>,
    /// Member name to its last `HsmMemberDown` `(seq, time)`, when no `HsmMemberUp` followed.
    down: BTreeMap<String, (u64, i64)>,
}

impl TrailView {
    /// Reads the trail, verifies it (seals opened in `sources.cluster`) and gathers what the
    /// controls look at.
    pub fn read(sources: &Sources<'_>) -> Result<TrailView, ComplianceError> {
        let store = sources.store;
        let head = read_head(store)?;
        let sealer = ClusterSealer::new(sources.cluster.clone());
        let verified = verify(store, Some(&sealer as &dyn Sealer), None).map_err(|e| e.to_string());
        let mut view = TrailView {
            head,
            times: Vec::new(),
            verified,
            checkpoints: Vec::new(),
            unreadable_checkpoints: Vec::new(),
            schedule_deletion: BTreeMap::new(),
            down: BTreeMap::new(),
        };
        let mut after = 0;
        loop {
            let page = read_events(store, after, 1000)?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.seq;
            for stored in page {
                let event = stored.event();
                view.times.push((stored.seq, event_millis(&event)));
                let name = event["eventName"].as_str().unwrap_or_default();
                match name {
                    "ScheduleKeyDeletion" if event.get("errorCode").is_none_or(Value::is_null) => {
                        if let Some(resources) = event["resources"].as_array() {
                            for arn in resources.iter().filter_map(|r| r["ARN"].as_str()) {
                                view.schedule_deletion
                                    .insert(arn.to_owned(), (stored.seq, event.clone()));
                            }
                        }
                    }
                    "HsmMemberDown" | "HsmMemberUp" => {
                        let member = event["serviceEventDetails"]["member"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        if name == "HsmMemberDown" {
                            view.down.insert(member, (stored.seq, event_millis(&event)));
                        } else {
                            view.down.remove(&member);
                        }
                    }
                    _ => {}
                }
            }
        }
        for (key, record) in store.scan(Table::AuditCheckpoints, b"", None, usize::MAX)? {
            match serde_json::from_slice::<Checkpoint>(&record.payload) {
                Ok(checkpoint) => view.checkpoints.push(checkpoint),
                Err(error) => view.unreadable_checkpoints.push(format!(
                    "checkpoint record {} is unreadable: {error}",
                    hex::encode(&key)
                )),
            }
        }
        view.checkpoints.sort_by_key(|c| c.seq);
        Ok(view)
    }

    /// The newest successful ScheduleKeyDeletion event naming `arn`: `(seq, event)`.
    pub fn schedule_deletion_event(&self, arn: &str) -> Option<&(u64, Value)> {
        self.schedule_deletion.get(arn)
    }

    /// When `member` went down, if the trail's last word on it is `HsmMemberDown`.
    pub fn member_down_since(&self, member: &str) -> Option<(u64, i64)> {
        self.down.get(member).copied()
    }

    /// The newest sealed checkpoint.
    pub fn newest_checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoints.last()
    }

    /// What the report relied on.
    pub fn scope(&self) -> AuditScope {
        AuditScope {
            head_seq: self.head.seq,
            events: self.times.len() as u64,
            newest_checkpoint_seq: self.newest_checkpoint().map(|c| c.seq),
        }
    }

    /// Events per UTC day, for the chart.
    pub fn events_per_day(&self) -> Vec<Bar> {
        let mut days: BTreeMap<String, usize> = BTreeMap::new();
        for (_, time) in &self.times {
            let day = event_time(*time).chars().take(10).collect::<String>();
            *days.entry(day).or_default() += 1;
        }
        days.into_iter()
            .map(|(label, count)| Bar {
                label,
                value: count as f64,
            })
            .collect()
    }

    fn time_of(&self, seq: u64) -> Option<i64> {
        self.times
            .binary_search_by_key(&seq, |(s, _)| *s)
            .ok()
            .map(|index| self.times[index].1)
    }

    /// KMS-AUD-1.
    pub fn chain(&self) -> ControlResult {
        let control = &catalogue::AUDIT_CHAIN;
        let report = match &self.verified {
            Ok(report) => report,
            Err(error) => {
                let finding = Finding::new(
                    SubjectKind::Trail,
                    "audit trail",
                    Status::Fail,
                    format!("the trail could not be read to verify it: {error}"),
                    Value::Null,
                );
                return ControlResult::from_findings(control, Value::Null, vec![finding], "");
            }
        };
        let mut findings: Vec<Finding> = report
            .problems
            .iter()
            .map(|problem| {
                Finding::new(
                    SubjectKind::Trail,
                    format!("event {}", problem.seq),
                    Status::Fail,
                    problem.what.clone(),
                    json!({ "seq": problem.seq }),
                )
            })
            .collect();
        for unreadable in &self.unreadable_checkpoints {
            findings.push(Finding::new(
                SubjectKind::Checkpoint,
                "checkpoints",
                Status::Fail,
                unreadable.clone(),
                Value::Null,
            ));
        }
        let evidence = json!({
            "events_checked": report.events,
            "checkpoints_checked": report.checkpoints,
            "seals_verified_in_hsms": report.seals_verified,
            "head_seq": self.head.seq,
            "head_hash": hex::encode(self.head.hash),
            "first_bad_seq": report.first_bad(),
        });
        if findings.is_empty() {
            findings.push(Finding::new(
                SubjectKind::Trail,
                "audit trail",
                if report.seals_verified { Status::Pass } else { Status::Fail },
                if report.seals_verified {
                    format!(
                        "{} event(s) and {} checkpoint seal(s) verified from event 1 to the head {}; no events lost",
                        report.events, report.checkpoints, self.head.seq
                    )
                } else {
                    "the checkpoint seals were not verified in the HSMs".to_owned()
                },
                evidence.clone(),
            ));
        }
        ControlResult::from_findings(control, evidence, findings, "")
    }

    /// KMS-AUD-2.
    pub fn checkpoints(&self, sources: &Sources<'_>) -> ControlResult {
        let control = &catalogue::CHECKPOINTS;
        let audit = &sources.config.audit;
        let max_gap = sources.config.compliance.checkpoint_max_gap_ms(audit);
        let max_events = sources.config.compliance.checkpoint_max_events(audit);
        let settings =
            json!({ "checkpoint_max_gap_ms": max_gap, "checkpoint_max_events": max_events });
        if self.times.is_empty() {
            return ControlResult::from_findings(
                control,
                settings,
                Vec::new(),
                "the trail is empty",
            );
        }
        let mut findings = Vec::new();
        let mut previous = 0u64;
        let mut widest_events = 0u64;
        let mut longest_wait = 0i64;
        for checkpoint in &self.checkpoints {
            let events = checkpoint.seq.saturating_sub(previous);
            let waited = self
                .time_of(previous + 1)
                .map_or(0, |first| checkpoint.time - first);
            widest_events = widest_events.max(events);
            longest_wait = longest_wait.max(waited);
            let mut problems = Vec::new();
            if events > max_events {
                problems.push(format!("it seals {events} events since checkpoint {previous} (most allowed {max_events})"));
            }
            if waited > max_gap {
                problems.push(format!(
                    "event {} waited {} s for it (most allowed {} s)",
                    previous + 1,
                    waited / 1000,
                    max_gap / 1000
                ));
            }
            if !problems.is_empty() {
                findings.push(Finding::new(
                    SubjectKind::Checkpoint,
                    format!("checkpoint {}", checkpoint.seq),
                    Status::Fail,
                    problems.join("; "),
                    json!({ "seq": checkpoint.seq, "previous_seq": previous, "time": event_time(checkpoint.time), "events": events, "waited_ms": waited }),
                ));
            }
            previous = checkpoint.seq;
        }
        let unsealed = self.head.seq.saturating_sub(previous);
        let tail_wait = if unsealed > 0 {
            self.time_of(previous + 1)
                .map_or(0, |first| sources.now_millis - first)
        } else {
            0
        };
        if unsealed > max_events || tail_wait > max_gap {
            findings.push(Finding::new(
                SubjectKind::Checkpoint,
                "head",
                Status::Fail,
                format!(
                    "events {} to {} are not sealed by any checkpoint; the oldest waited {} s",
                    previous + 1,
                    self.head.seq,
                    tail_wait / 1000
                ),
                json!({ "newest_checkpoint_seq": previous, "head_seq": self.head.seq, "waited_ms": tail_wait }),
            ));
        }
        if findings.is_empty() {
            findings.push(Finding::new(
                SubjectKind::Trail,
                "checkpoints",
                Status::Pass,
                format!(
                    "{} checkpoint(s); at most {widest_events} event(s) and {} s between seals; {unsealed} event(s) after the newest, waiting {} s",
                    self.checkpoints.len(),
                    longest_wait / 1000,
                    tail_wait / 1000
                ),
                json!({
                    "checkpoints": self.checkpoints.len(),
                    "newest_checkpoint_seq": previous,
                    "head_seq": self.head.seq,
                    "most_events_between": widest_events,
                    "longest_wait_ms": longest_wait,
                    "unsealed_events": unsealed,
                    "unsealed_wait_ms": tail_wait,
                }),
            ));
        }
        ControlResult::from_findings(control, settings, findings, "")
    }

    /// KMS-AUD-3.
    pub fn alarms(&self, sources: &Sources<'_>) -> ControlResult {
        let control = &catalogue::ALARMS;
        let max_lag = i64::try_from(sources.config.compliance.alarm_max_lag_s)
            .unwrap_or(i64::MAX / 2)
            .saturating_mul(1000);
        let alarms = match sources
            .config
            .alarms
            .alarms(&sources.config.service.data_dir)
        {
            Ok(alarms) => alarms,
            Err(error) => {
                let finding = Finding::new(
                    SubjectKind::Alarm,
                    "[alarms]",
                    Status::Fail,
                    error.to_string(),
                    Value::Null,
                );
                return ControlResult::from_findings(control, Value::Null, vec![finding], "");
            }
        };
        let mut findings = Vec::new();
        for required in [UNUSABLE_KEY_USED, KEY_DISABLED_OR_DELETION_SCHEDULED] {
            if !alarms.iter().any(|alarm| alarm.name == required) {
                findings.push(Finding::new(
                    SubjectKind::Alarm,
                    required,
                    Status::Fail,
                    "built-in alarm is turned off in [alarms]",
                    json!({ "configured": false }),
                ));
            }
        }
        for alarm in &alarms {
            let cursor = read_cursor(sources.store, &alarm.name);
            let actions: Vec<String> = alarm.actions.iter().map(|a| a.describe()).collect();
            let finding = match cursor {
                Err(error) => Finding::new(
                    SubjectKind::Alarm,
                    &alarm.name,
                    Status::Fail,
                    format!("its delivery cursor is unreadable: {error}"),
                    Value::Null,
                ),
                Ok(None) => Finding::new(
                    SubjectKind::Alarm,
                    &alarm.name,
                    Status::Fail,
                    "it has never run against this store (no delivery cursor)",
                    json!({ "actions": actions, "head_seq": self.head.seq }),
                ),
                Ok(Some(cursor)) => {
                    let behind = self.head.seq.saturating_sub(cursor.seq);
                    let lag = if behind > 0 {
                        self.time_of(cursor.seq + 1)
                            .map_or(0, |oldest| sources.now_millis - oldest)
                    } else {
                        0
                    };
                    let evidence = json!({
                        "actions": actions,
                        "cursor_seq": cursor.seq,
                        "head_seq": self.head.seq,
                        "events_behind": behind,
                        "lag_ms": lag,
                        "max_lag_ms": max_lag,
                    });
                    if lag > max_lag {
                        Finding::new(
                            SubjectKind::Alarm,
                            &alarm.name,
                            Status::Fail,
                            format!(
                                "{behind} event(s) undelivered, the oldest for {} s (most allowed {} s)",
                                lag / 1000,
                                max_lag / 1000
                            ),
                            evidence,
                        )
                    } else {
                        Finding::new(
                            SubjectKind::Alarm,
                            &alarm.name,
                            Status::Pass,
                            format!(
                                "configured; delivered through event {} of {} (lag {} s)",
                                cursor.seq,
                                self.head.seq,
                                lag / 1000
                            ),
                            evidence,
                        )
                    }
                }
            };
            findings.push(finding);
        }
        ControlResult::from_findings(
            control,
            json!({ "alarm_max_lag_s": sources.config.compliance.alarm_max_lag_s }),
            findings,
            "no alarms",
        )
    }
}
