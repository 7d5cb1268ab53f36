//! KMS-ROT-1 (automatic rotation) and KMS-DEL-1 (scheduled deletion), from the key records of
//! the metadata store, the audit trail and the alarms' delivery cursors; plus the key charts.
//! It judges records as they are stored; it never rotates, cancels or deletes anything.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::catalogue;
use super::report::{Bar, ControlResult, Finding, Status, SubjectKind};
use super::trail::TrailView;
use super::{Sources, days};
use crate::audit::dispatcher::read_cursor;
use crate::audit::event::event_time;
use crate::keys::records::KeyRecord;
use crate::keys::state::KeyState;

/// AWS's bounds of a deletion waiting period, in days.
const MIN_WINDOW_DAYS: u32 = 7;
const MAX_WINDOW_DAYS: u32 = 30;
const DAY_MS: i64 = 86_400_000;

/// KMS-ROT-1.
pub fn rotation(
    sources: &Sources<'_>,
    records: &BTreeMap<String, Result<KeyRecord, String>>,
) -> ControlResult {
    let grace_ms = i64::try_from(sources.config.compliance.rotation_grace_s)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    let mut findings = Vec::new();
    for (key_id, record) in records {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                findings.push(Finding::new(
                    SubjectKind::Key,
                    key_id,
                    Status::Fail,
                    error,
                    Value::Null,
                ));
                continue;
            }
        };
        let newest = record.materials.last();
        let evidence = json!({
            "key_state": record.state.as_str(),
            "key_spec": record.key_spec,
            "origin": record.origin,
            "rotation_enabled": record.rotation.is_some(),
            "rotation_period_days": record.rotation.as_ref().map(|r| r.period_days),
            "next_rotation": record.rotation.as_ref().map(|r| event_time(r.next_rotation)),
            "material_versions": record.materials.len(),
            "newest_version": newest.map(|m| m.version),
            "newest_version_created": newest.map(|m| event_time(m.created)),
            "newest_version_rotation_type": newest.and_then(|m| m.rotation_type).map(|t| t.as_str()),
        });
        if record.state != KeyState::Enabled || record.key_spec != "SYMMETRIC_DEFAULT" {
            findings.push(Finding::new(
                SubjectKind::Key,
                key_id,
                Status::NotApplicable,
                format!(
                    "{} {} key: the rule applies to enabled symmetric keys",
                    record.state.as_str(),
                    record.key_spec
                ),
                evidence,
            ));
            continue;
        }
        let Some(schedule) = &record.rotation else {
            findings.push(Finding::new(
                SubjectKind::Key,
                key_id,
                Status::Fail,
                "automatic rotation is off (cmk-backing-key-rotation-enabled: NON_COMPLIANT)",
                evidence,
            ));
            continue;
        };
        let created = newest.map_or(record.creation_date, |m| m.created);
        let age = sources.now_millis - created;
        let period = i64::from(schedule.period_days) * DAY_MS;
        let (status, reason) = if age > period + grace_ms {
            (
                Status::Fail,
                format!(
                    "newest material is {} day(s) old, older than the {}-day rotation period",
                    days(age),
                    schedule.period_days
                ),
            )
        } else if sources.now_millis > schedule.next_rotation + grace_ms {
            (
                Status::Fail,
                format!(
                    "rotation was due on {} and has not happened",
                    event_time(schedule.next_rotation)
                ),
            )
        } else {
            (
                Status::Pass,
                format!(
                    "automatic rotation on, every {} day(s); newest material {} day(s) old",
                    schedule.period_days,
                    days(age)
                ),
            )
        };
        findings.push(Finding::new(
            SubjectKind::Key,
            key_id,
            status,
            reason,
            evidence,
        ));
    }
    ControlResult::from_findings(
        &catalogue::ROTATION,
        json!({ "rotation_grace_s": sources.config.compliance.rotation_grace_s }),
        findings,
        "no keys",
    )
}

/// KMS-DEL-1.
pub fn deletion(
    sources: &Sources<'_>,
    records: &BTreeMap<String, Result<KeyRecord, String>>,
    trail: &TrailView,
) -> ControlResult {
    let alarms = sources
        .config
        .alarms
        .alarms(&sources.config.service.data_dir)
        .unwrap_or_default();
    let mut findings = Vec::new();
    for (key_id, record) in records {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                findings.push(Finding::new(
                    SubjectKind::Key,
                    key_id,
                    Status::Fail,
                    error,
                    Value::Null,
                ));
                continue;
            }
        };
        if record.state != KeyState::PendingDeletion {
            findings.push(Finding::new(
                SubjectKind::Key,
                key_id,
                Status::Pass,
                format!("{}: not scheduled for deletion", record.state.as_str()),
                json!({ "key_state": record.state.as_str() }),
            ));
            continue;
        }
        let mut failures = Vec::new();
        let window = record.pending_window_days;
        match window {
            Some(days) if (MIN_WINDOW_DAYS..=MAX_WINDOW_DAYS).contains(&days) => {}
            Some(days) => failures.push(format!(
                "waiting period {days} day(s) is outside {MIN_WINDOW_DAYS}-{MAX_WINDOW_DAYS}"
            )),
            None => failures.push("no waiting period is recorded".to_owned()),
        }
        let arn = record.arn();
        let scheduled = trail.schedule_deletion_event(&arn);
        let mut delivered: Vec<Value> = Vec::new();
        match scheduled {
            None => failures
                .push("no ScheduleKeyDeletion event for the key in the audit trail".to_owned()),
            Some((seq, event)) => {
                for alarm in alarms.iter().filter(|alarm| alarm.pattern.matches(event)) {
                    let cursor = read_cursor(sources.store, &alarm.name).ok().flatten();
                    let cursor_seq = cursor.map(|c| c.seq);
                    let fired = cursor_seq.is_some_and(|c| c >= *seq) && alarm.threshold == 1;
                    delivered.push(json!({
                        "alarm": alarm.name,
                        "threshold": alarm.threshold,
                        "cursor_seq": cursor_seq,
                        "delivered": fired,
                    }));
                }
                if !delivered
                    .iter()
                    .any(|d| d["delivered"] == Value::Bool(true))
                {
                    failures.push(format!(
                        "no alarm fired on the ScheduleKeyDeletion event {seq}{}",
                        if delivered.is_empty() {
                            " (no configured alarm matches it)"
                        } else {
                            " (matching alarms have not delivered it)"
                        }
                    ));
                }
            }
        }
        let evidence = json!({
            "key_state": record.state.as_str(),
            "pending_window_days": window,
            "deletion_date": record.deletion_date.map(event_time),
            "schedule_event_seq": scheduled.map(|(seq, _)| *seq),
            "schedule_event_time": scheduled.map(|(_, event)| event["eventTime"].clone()),
            "alarms": delivered,
        });
        let (status, reason) = if failures.is_empty() {
            (
                Status::Warn,
                format!(
                    "pending deletion on {} (Security Hub KMS.3 finding); window {} day(s), alarm delivered",
                    record.deletion_date.map(event_time).unwrap_or_default(),
                    window.unwrap_or_default()
                ),
            )
        } else {
            (Status::Fail, failures.join("; "))
        };
        findings.push(Finding::new(
            SubjectKind::Key,
            key_id,
            status,
            reason,
            evidence,
        ));
    }
    ControlResult::from_findings(
        &catalogue::DELETION,
        json!({ "window_days": [MIN_WINDOW_DAYS, MAX_WINDOW_DAYS], "alarms": alarms.iter().map(|a| a.name.clone()).collect::<Vec<_>>() }),
        findings,
        "no keys",
    )
}

/// Keys by state, for the chart.
pub fn by_state(records: &BTreeMap<String, Result<KeyRecord, String>>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records.values() {
        let state = match record {
            Ok(record) => record.state.as_str(),
            Err(_) => "Unreadable",
        };
        *counts.entry(state.to_owned()).or_default() += 1;
    }
    counts
}

/// Days since the newest material version of each enabled key, for the chart.
pub fn rotation_ages(records: &BTreeMap<String, Result<KeyRecord, String>>, now: i64) -> Vec<Bar> {
    records
        .values()
        .filter_map(|record| record.as_ref().ok())
        .filter(|record| record.state == KeyState::Enabled)
        .map(|record| Bar {
            label: record.key_id.clone(),
            value: days(
                now - record
                    .materials
                    .last()
                    .map_or(record.creation_date, |m| m.created),
            ),
        })
        .collect()
}
