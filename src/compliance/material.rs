//! KMS-HSM-1 (key material in HSMs only) and KMS-HSM-2 (redundancy), from what the members
//! answer through PKCS#11 for every key material version the metadata names. It owns the
//! [`Inventory`] (one read of every version on every member) and the rules applied to it. It
//! never reads an HSM outside [`Inventory::read`], never counts a member that did not answer
//! as holding or lacking a key, and never changes an object.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

use super::catalogue;
use super::report::{Bar, ControlResult, Finding, Status, SubjectKind};
use super::trail::TrailView;
use super::{Sources, days};
use crate::cluster::MaterialId;
use crate::cluster::internal::INTERNAL_PREFIX;
use crate::cluster::preflight::quorum_problems;
use crate::cluster::vendor::probe_all;
use crate::config::Replication;
use crate::hsm::{CheckValueMethod, Member, ObjectInspection};
use crate::keys::records::KeyRecord;
use crate::keys::state::KeyState;

/// What one member answered for one material version.
#[derive(Debug, Clone)]
pub enum MemberRead {
    /// The objects found under the version's `CKA_ID` (none: the member lacks it).
    Read(Vec<ObjectInspection>),
    /// The member could not be asked (down) or failed to answer.
    Unreadable(String),
}

/// One key material version as every member holds it.
#[derive(Debug, Clone)]
pub struct VersionEvidence {
    /// The key the material belongs to.
    pub key_id: String,
    /// The material version.
    pub version: u32,
    /// The key's AWS state, or `internal` for hsm-kms's own keys (audit seals, custom key
    /// store passwords, evidence manifests).
    pub state: &'static str,
    /// By member name: (zone, answer).
    pub members: BTreeMap<String, (String, MemberRead)>,
}

impl VersionEvidence {
    fn subject(&self) -> String {
        format!("{}/{}", self.key_id, self.version)
    }

    fn holders(&self) -> Vec<(&str, &str)> {
        self.members
            .iter()
            .filter(
                |(_, (_, read))| matches!(read, MemberRead::Read(objects) if !objects.is_empty()),
            )
            .map(|(name, (zone, _))| (name.as_str(), zone.as_str()))
            .collect()
    }

    fn evidence(&self) -> Value {
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|(name, (zone, read))| match read {
                MemberRead::Read(objects) => json!({
                    "member": name,
                    "zone": zone,
                    "objects_found": objects.len(),
                    "objects": objects.iter().map(|object| json!({
                        "CKA_SENSITIVE": object.attributes.sensitive,
                        "CKA_ALWAYS_SENSITIVE": object.attributes.always_sensitive,
                        "CKA_EXTRACTABLE": object.attributes.extractable,
                        "CKA_NEVER_EXTRACTABLE": object.attributes.never_extractable,
                        "CKA_WRAP_WITH_TRUSTED": object.attributes.wrap_with_trusted,
                        "CKA_TOKEN": object.attributes.token,
                        "CKA_PRIVATE": object.attributes.private,
                        "key_check_values": object.check_values,
                    })).collect::<Vec<_>>(),
                }),
                MemberRead::Unreadable(error) => json!({
                    "member": name,
                    "zone": zone,
                    "error": error,
                }),
            })
            .collect();
        json!({
            "key_id": self.key_id,
            "version": self.version,
            "key_state": self.state,
            "cka_id": String::from_utf8_lossy(&MaterialId::new(self.key_id.clone(), self.version).cka_id()),
            "members": members,
        })
    }
}

/// Every material version of the cluster's keys, read on every member, plus the keys that
/// were not read and why.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Every material version found, with its attributes on each member.
    pub versions: Vec<VersionEvidence>,
    /// Keys whose material could not be read: key id and why.
    pub not_read: Vec<(String, String)>,
}

impl Inventory {
    /// Reads every material version of every key held by `sources.cluster` on every member.
    pub fn read(
        sources: &Sources<'_>,
        records: &BTreeMap<String, Result<KeyRecord, String>>,
    ) -> Inventory {
        let mut inventory = Inventory::default();
        let members: Vec<&Arc<Member>> = sources.cluster.members().iter().collect();
        for (key_id, record) in records {
            let record = match record {
                Ok(record) => record,
                Err(error) => {
                    inventory.not_read.push((key_id.clone(), error.clone()));
                    continue;
                }
            };
            if record.cluster != sources.cluster.name() {
                inventory.not_read.push((
                    key_id.clone(),
                    format!(
                        "held by cluster {} (a custom key store), which this check did not open",
                        record.cluster
                    ),
                ));
                continue;
            }
            if record.state == KeyState::PendingImport || record.materials.is_empty() {
                inventory
                    .not_read
                    .push((key_id.clone(), "the key has no key material".into()));
                continue;
            }
            if record.destruction_begun() {
                inventory.not_read.push((
                    key_id.clone(),
                    "scheduled deletion is destroying its key material".into(),
                ));
                continue;
            }
            for material in &record.materials {
                let id = MaterialId::new(record.key_id.clone(), material.version);
                inventory
                    .versions
                    .push(read_version(&members, id, record.state.as_str()));
            }
        }
        // hsm-kms's own keys, as any member lists them: every member must hold them too.
        let mut internal = BTreeSet::new();
        for member in members.iter().filter(|m| m.is_up()) {
            if let Ok(objects) = member.list_keys() {
                internal.extend(
                    objects
                        .iter()
                        .filter(|object| object.id.starts_with(INTERNAL_PREFIX.as_bytes()))
                        .filter_map(|object| MaterialId::from_cka_id(&object.id)),
                );
            }
        }
        for id in internal {
            inventory
                .versions
                .push(read_version(&members, id, "internal"));
        }
        inventory
    }

    /// Copies per material version, for the chart.
    pub fn copies(&self) -> Vec<Bar> {
        self.versions
            .iter()
            .map(|version| Bar {
                label: version.subject(),
                value: version.holders().len() as f64,
            })
            .collect()
    }
}

/// One material version as every member answers for it.
fn read_version(members: &[&Arc<Member>], id: MaterialId, state: &'static str) -> VersionEvidence {
    let cka_id = id.cka_id();
    let mut answers = BTreeMap::new();
    for member in members {
        let read = if !member.is_up() {
            MemberRead::Unreadable(
                member
                    .last_failure()
                    .map(|e| format!("member down: {}", e.failure))
                    .unwrap_or_else(|| "member down".into()),
            )
        } else {
            match member.inspect_key(&cka_id) {
                Ok(objects) => MemberRead::Read(objects),
                Err(error) => MemberRead::Unreadable(error.failure.to_string()),
            }
        };
        answers.insert(member.name().to_owned(), (member.zone().to_owned(), read));
    }
    VersionEvidence {
        key_id: id.key_id,
        version: id.version,
        state,
        members: answers,
    }
}

/// KMS-HSM-1.
pub fn hsm_only(sources: &Sources<'_>, inventory: &Inventory) -> ControlResult {
    let vendor = sources.cluster.replication() == Replication::Vendor;
    let mut findings = not_read(inventory);
    for version in &inventory.versions {
        let mut failures = Vec::new();
        let mut warnings = Vec::new();
        let mut generated_inside = false;
        let mut check_values: BTreeMap<CheckValueMethod, Vec<(&str, String)>> = BTreeMap::new();
        let mut copies = 0usize;
        for (member, (_, read)) in &version.members {
            let objects = match read {
                MemberRead::Read(objects) => objects,
                MemberRead::Unreadable(error) => {
                    warnings.push(format!("member {member} could not be read ({error})"));
                    continue;
                }
            };
            match objects.len() {
                0 => failures.push(format!("member {member} does not hold it")),
                1 => {}
                n => failures.push(format!("{n} objects share its CKA_ID on member {member}")),
            }
            for object in objects {
                let a = &object.attributes;
                if !a.sensitive {
                    failures.push(format!("CKA_SENSITIVE is false on member {member}"));
                }
                if a.extractable && !a.wrap_with_trusted {
                    failures.push(format!(
                        "extractable without CKA_WRAP_WITH_TRUSTED on member {member}"
                    ));
                }
                if vendor && a.extractable {
                    failures.push(format!(
                        "extractable on member {member} of a vendor cluster (keys there are never extractable)"
                    ));
                }
                if vendor && !a.never_extractable {
                    failures.push(format!("CKA_NEVER_EXTRACTABLE is false on member {member}"));
                }
                if a.always_sensitive {
                    generated_inside = true;
                }
                for value in &object.check_values {
                    check_values
                        .entry(value.method)
                        .or_default()
                        .push((member.as_str(), value.hex.clone()));
                }
                copies += 1;
            }
        }
        if !generated_inside && !version.holders().is_empty() {
            failures.push(
                "no copy has CKA_ALWAYS_SENSITIVE: nothing shows the material was generated inside an HSM"
                    .into(),
            );
        }
        let mut compared = false;
        for (method, values) in &check_values {
            let distinct: BTreeSet<&str> = values.iter().map(|(_, value)| value.as_str()).collect();
            if distinct.len() > 1 {
                let listed: Vec<String> = values
                    .iter()
                    .map(|(member, value)| format!("{value} on {member}"))
                    .collect();
                failures.push(format!(
                    "the key check values ({}) differ ({}): the copies are not the same key",
                    method.as_str(),
                    listed.join(", ")
                ));
            }
            compared |= values.len() == copies;
        }
        if !compared && copies > 1 {
            warnings.push(
                "no key check value method answered on every copy: the copies could not be compared"
                    .to_owned(),
            );
        }
        let (status, reason) = if !failures.is_empty() {
            (Status::Fail, failures.join("; "))
        } else if !warnings.is_empty() {
            (Status::Warn, warnings.join("; "))
        } else {
            (
                Status::Pass,
                format!(
                    "{} cop(y/ies), all sensitive, extractable only under a trusted key, one generated inside an HSM, key check values equal",
                    version.holders().len()
                ),
            )
        };
        findings.push(Finding::new(
            SubjectKind::KeyVersion,
            version.subject(),
            status,
            reason,
            version.evidence(),
        ));
    }
    ControlResult::from_findings(
        &catalogue::HSM_ONLY,
        json!({
            "members": sources.cluster.members().iter().map(|m| m.name()).collect::<Vec<_>>(),
            "key_check_value": "CKA_CHECK_VALUE where the token supplies it, else SHA-256 of an in-HSM AES-GCM probe (see docs/compliance.md)",
        }),
        findings,
        "no key material to check",
    )
}

/// KMS-HSM-2.
pub fn redundancy(
    sources: &Sources<'_>,
    inventory: &Inventory,
    trail: &TrailView,
) -> ControlResult {
    let mut findings = Vec::new();
    let members = sources.cluster.members();
    for member in members {
        let _ = member.probe();
    }
    let vendor = sources.cluster.replication() == Replication::Vendor;
    // The quorum, as the preflight counts it.
    let (problems, quorum_evidence) = if vendor {
        let hsms = sources
            .config
            .cluster(sources.cluster.name())
            .map(|c| c.hsms.clone())
            .unwrap_or_default();
        let probes = probe_all(&hsms);
        let reachable: Vec<(&str, &str)> = probes
            .iter()
            .filter(|p| p.reachable)
            .map(|p| (p.name.as_str(), p.zone.as_str()))
            .collect();
        let mut problems = quorum_problems(reachable.iter().copied());
        if !members.iter().any(|m| m.is_up()) {
            problems.push("the cluster's PKCS#11 slot is not reachable".into());
        }
        (problems, json!({ "hsms": probes }))
    } else {
        let healthy: Vec<(&str, &str)> = members
            .iter()
            .filter(|m| m.is_up())
            .map(|m| (m.name(), m.zone()))
            .collect();
        let zones: BTreeSet<&str> = healthy.iter().map(|(_, zone)| *zone).collect();
        (
            quorum_problems(healthy.iter().copied()),
            json!({ "healthy_members": healthy.len(), "zones": zones, "configured_members": members.len() }),
        )
    };
    findings.push(Finding::new(
        SubjectKind::Cluster,
        sources.cluster.name(),
        if problems.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        },
        if problems.is_empty() {
            "the quorum holds: at least two healthy HSMs in at least two zones".to_owned()
        } else {
            problems.join("; ")
        },
        quorum_evidence,
    ));
    for member in members {
        let down = trail.member_down_since(member.name());
        if member.is_up() {
            findings.push(Finding::new(
                SubjectKind::Member,
                member.name(),
                Status::Pass,
                "up: logged in and holding the domain key",
                json!({ "zone": member.zone(), "up": true }),
            ));
        } else {
            let (since, evidence) = match down {
                Some((seq, time)) => (
                    format!(
                        " since {} ({} day(s)), per the HsmMemberDown event {seq}",
                        crate::audit::event::event_time(time),
                        days(sources.now_millis - time)
                    ),
                    json!({ "down_event_seq": seq, "down_since": crate::audit::event::event_time(time), "down_for_ms": sources.now_millis - time }),
                ),
                None => (
                    " (no HsmMemberDown event in the trail: down since before this process opened it)".to_owned(),
                    Value::Null,
                ),
            };
            findings.push(Finding::new(
                SubjectKind::Member,
                member.name(),
                Status::Warn,
                format!(
                    "down{since}: {}",
                    member
                        .last_failure()
                        .map(|e| e.failure.to_string())
                        .unwrap_or_else(|| "no answer".into())
                ),
                json!({ "zone": member.zone(), "up": false, "down": evidence }),
            ));
        }
    }
    findings.extend(not_read(inventory));
    for version in &inventory.versions {
        if vendor {
            findings.push(Finding::new(
                SubjectKind::KeyVersion,
                version.subject(),
                Status::NotApplicable,
                "the vendor synchronises its HSMs; PKCS#11 cannot count copies behind one slot",
                version.evidence(),
            ));
            continue;
        }
        let holders = version.holders();
        let zones: BTreeSet<&str> = holders.iter().map(|(_, zone)| *zone).collect();
        let ok = holders.len() >= 2 && zones.len() >= 2;
        findings.push(Finding::new(
            SubjectKind::KeyVersion,
            version.subject(),
            if ok { Status::Pass } else { Status::Fail },
            format!(
                "{} cop(y/ies) in {} zone(s){}",
                holders.len(),
                zones.len(),
                if ok { "" } else { ": at least 2 copies in 2 zones are required" }
            ),
            json!({
                "copies": holders.len(),
                "holders": holders.iter().map(|(name, zone)| json!({"member": name, "zone": zone})).collect::<Vec<_>>(),
                "zones": zones,
            }),
        ));
    }
    ControlResult::from_findings(
        &catalogue::REDUNDANCY,
        json!({ "minimum_copies": 2, "minimum_zones": 2 }),
        findings,
        "no cluster",
    )
}

fn not_read(inventory: &Inventory) -> Vec<Finding> {
    inventory
        .not_read
        .iter()
        .map(|(key, reason)| {
            let status = if reason.starts_with("the key record does not decode") {
                Status::Fail
            } else {
                Status::NotApplicable
            };
            Finding::new(SubjectKind::Key, key, status, reason, Value::Null)
        })
        .collect()
}
