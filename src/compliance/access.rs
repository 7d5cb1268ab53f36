//! KMS-ACC-1 (key policies), KMS-ACC-2 (identity policies of `[[credentials]]`) and KMS-ACC-3
//! (grant age), from the policy documents as stored or configured, read through the pure
//! policy model. It decides from the parsed statements only; it never evaluates a request,
//! changes a policy or reads a secret of a credential.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::catalogue;
use super::report::{ControlResult, Finding, Status, SubjectKind};
use super::{Sources, days};
use crate::audit::event::event_time;
use crate::config::Config;
use crate::keys::records::{GrantRecord, KeyRecord};
use crate::policy::document::{PrincipalEntry, Statement};
use crate::policy::{Effect, PolicyDocument};
use crate::store::{MetadataStore, Table};

/// Actions whose grant to everyone (or on every key) the controls look for; `kms:*` and
/// `kms:ReEncrypt*` cover them.
const DECRYPTING_ACTIONS: [&str; 3] = ["kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo"];

/// Whether a condition key narrows who the caller can be.
fn narrows(key: &str) -> bool {
    key.starts_with("aws:principal")
        || matches!(
            key,
            "kms:calleraccount"
                | "kms:viaservice"
                | "aws:sourceaccount"
                | "aws:sourcearn"
                | "aws:sourceip"
                | "aws:sourcevpc"
                | "aws:sourcevpce"
                | "aws:userid"
                | "aws:username"
                | "kms:grantisforawsresource"
        )
}

/// Whether a condition key narrows which keys an identity policy statement reaches (or, as
/// [`narrows`], who the caller is).
fn narrows_keys(key: &str) -> bool {
    narrows(key)
        || key.starts_with("aws:resourcetag/")
        || key.starts_with("kms:encryptioncontext")
        || matches!(key, "kms:resourcealiases" | "kms:requestalias")
}

/// The decrypting actions a statement allows, and the condition keys that narrow it (by
/// `narrowing`).
fn decrypting(
    statement: &Statement,
    narrowing: fn(&str) -> bool,
) -> (Vec<&'static str>, Vec<String>) {
    let actions = DECRYPTING_ACTIONS
        .iter()
        .copied()
        .filter(|action| statement.actions.covers(action))
        .collect();
    let narrowing_keys = statement
        .conditions
        .iter()
        .map(|c| c.key().to_owned())
        .filter(|key| narrowing(key))
        .collect();
    (actions, narrowing_keys)
}

fn statement_name(index: usize, statement: &Statement) -> String {
    match statement.sid() {
        Some(sid) => format!("statement {index} (Sid {sid})"),
        None => format!("statement {index}"),
    }
}

/// KMS-ACC-1.
pub fn key_policies(records: &BTreeMap<String, Result<KeyRecord, String>>) -> ControlResult {
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
        let policy = match record.key_policy() {
            Ok(policy) => policy,
            Err(error) => {
                findings.push(Finding::new(
                    SubjectKind::Policy,
                    key_id,
                    Status::Fail,
                    format!("the stored key policy does not parse: {}", error.message()),
                    Value::Null,
                ));
                continue;
            }
        };
        let mut open = Vec::new();
        for (index, statement) in policy.statements().iter().enumerate() {
            if statement.effect() != Effect::Allow {
                continue;
            }
            let Some(principals) = &statement.principals else {
                continue;
            };
            let everyone =
                principals.negated || principals.entries().contains(&PrincipalEntry::Everyone);
            if !everyone {
                continue;
            }
            let (actions, narrowing) = decrypting(statement, narrows);
            if !actions.is_empty() && narrowing.is_empty() {
                open.push(json!({
                    "statement": statement_name(index, statement),
                    "principal": if principals.negated { "NotPrincipal" } else { "*" },
                    "actions_allowed": actions,
                    "condition_keys": statement.conditions.iter().map(|c| c.key().to_owned()).collect::<Vec<_>>(),
                }));
            }
        }
        let evidence = json!({
            "default_policy": record.policy.is_none(),
            "statements": policy.statements().len(),
            "open_statements": open,
        });
        findings.push(if open.is_empty() {
            Finding::new(
                SubjectKind::Policy,
                key_id,
                Status::Pass,
                "no statement allows decryption to everyone without a narrowing condition",
                evidence,
            )
        } else {
            Finding::new(
                SubjectKind::Policy,
                key_id,
                Status::Fail,
                format!(
                    "{} statement(s) allow kms:Decrypt or kms:ReEncrypt* to Principal \"*\" without a narrowing condition",
                    open.len()
                ),
                evidence,
            )
        });
    }
    ControlResult::from_findings(
        &catalogue::KEY_POLICIES,
        json!({ "actions": DECRYPTING_ACTIONS }),
        findings,
        "no keys",
    )
}

/// Statements of an identity policy allowing decryption on every key, unnarrowed.
fn broad_statements(policy: &PolicyDocument, every_key: &str) -> Vec<Value> {
    policy
        .statements()
        .iter()
        .enumerate()
        .filter(|(_, statement)| statement.effect() == Effect::Allow)
        .filter(|(_, statement)| statement.resources.covers(every_key))
        .filter_map(|(index, statement)| {
            let (actions, narrowing) = decrypting(statement, narrows_keys);
            (!actions.is_empty() && narrowing.is_empty()).then(|| {
                json!({
                    "statement": statement_name(index, statement),
                    "actions_allowed": actions,
                    "condition_keys": statement.conditions.iter().map(|c| c.key().to_owned()).collect::<Vec<_>>(),
                })
            })
        })
        .collect()
}

/// KMS-ACC-2.
pub fn identity_policies(config: &Config) -> ControlResult {
    let mut findings = Vec::new();
    for credential in &config.credentials {
        let subject = credential.principal_arn.clone();
        if credential.policies.is_empty() {
            findings.push(Finding::new(
                SubjectKind::Credential,
                subject,
                Status::Fail,
                "no identity policy: the credential is allowed by identity for every key of its account",
                json!({ "account_id": credential.account_id, "policies": 0 }),
            ));
            continue;
        }
        let profile = match credential.profile() {
            Ok(profile) => profile,
            Err(error) => {
                findings.push(Finding::new(
                    SubjectKind::Credential,
                    subject,
                    Status::Fail,
                    error.to_string(),
                    Value::Null,
                ));
                continue;
            }
        };
        // A key id no pattern names: only wildcards cover it, i.e. "every key".
        let every_key = format!(
            "arn:aws:kms:{}:{}:key/*",
            config.service.region, credential.account_id
        );
        let broad: Vec<Value> = profile
            .policies
            .iter()
            .flatten()
            .enumerate()
            .flat_map(|(index, policy)| {
                broad_statements(policy, &every_key)
                    .into_iter()
                    .map(move |mut statement| {
                        statement["policy"] = json!(index);
                        statement
                    })
            })
            .collect();
        let evidence = json!({
            "account_id": credential.account_id,
            "policies": credential.policies.len(),
            "broad_statements": broad,
        });
        findings.push(if broad.is_empty() {
            Finding::new(
                SubjectKind::Credential,
                subject,
                Status::Pass,
                "identity policies present; none allows decryption on every key without a narrowing condition",
                evidence,
            )
        } else {
            Finding::new(
                SubjectKind::Credential,
                subject,
                Status::Fail,
                format!(
                    "{} statement(s) allow kms:Decrypt or kms:ReEncrypt* on every key (Resource \"*\") without a narrowing condition",
                    broad.len()
                ),
                evidence,
            )
        });
    }
    ControlResult::from_findings(
        &catalogue::IDENTITY_POLICIES,
        json!({ "credentials": config.credentials.len() }),
        findings,
        "no [[credentials]] configured",
    )
}

/// One grant as the grants control needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSummary {
    /// The grant id.
    pub grant_id: String,
    /// The key it is on.
    pub key_id: String,
    /// Milliseconds since the epoch.
    pub creation_date: i64,
}

/// Every stored grant: its id, key and creation time.
pub fn stored_grants(store: &dyn MetadataStore) -> Result<Vec<GrantSummary>, String> {
    let mut grants = Vec::new();
    for page in crate::store::pages(store, Table::Grants, b"") {
        for (key, record) in &page.map_err(|error| error.to_string())? {
            let grant: GrantRecord = serde_json::from_slice(&record.payload).map_err(|error| {
                format!(
                    "grant record {} does not decode: {error}",
                    String::from_utf8_lossy(key)
                )
            })?;
            grants.push(GrantSummary {
                grant_id: grant.grant_id,
                key_id: grant.key_id,
                creation_date: grant.creation_date,
            });
        }
    }
    Ok(grants)
}

/// KMS-ACC-3: every stored grant against the age limit; a store whose grants cannot be read
/// fails the control.
pub fn grants(sources: &Sources<'_>) -> ControlResult {
    let max_age_days = sources.config.compliance.grant_max_age_days;
    match stored_grants(sources.store) {
        Ok(grants) => grant_findings(&grants, sources.now_millis, max_age_days),
        Err(error) => ControlResult::from_findings(
            &catalogue::GRANTS,
            json!({ "grant_max_age_days": max_age_days }),
            vec![Finding::new(
                SubjectKind::Grant,
                "grants",
                Status::Fail,
                format!("the stored grants cannot be read: {error}"),
                Value::Null,
            )],
            "",
        ),
    }
}

/// KMS-ACC-3 over a list of grants.
pub fn grant_findings(grants: &[GrantSummary], now: i64, max_age_days: u64) -> ControlResult {
    let max_age = i64::try_from(max_age_days)
        .unwrap_or(i64::MAX / 86_400_001)
        .saturating_mul(86_400_000);
    let findings = grants
        .iter()
        .map(|grant| {
            let age = now - grant.creation_date;
            let evidence = json!({
                "key_id": grant.key_id,
                "creation_date": event_time(grant.creation_date),
                "age_days": days(age),
            });
            if age > max_age {
                Finding::new(
                    SubjectKind::Grant,
                    &grant.grant_id,
                    Status::Fail,
                    format!("{} day(s) old, older than {max_age_days}", days(age)),
                    evidence,
                )
            } else {
                Finding::new(
                    SubjectKind::Grant,
                    &grant.grant_id,
                    Status::Pass,
                    format!("{} day(s) old", days(age)),
                    evidence,
                )
            }
        })
        .collect();
    ControlResult::from_findings(
        &catalogue::GRANTS,
        json!({ "grant_max_age_days": max_age_days }),
        findings,
        "no grants",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_grants_fail_and_young_ones_pass() {
        let day = 86_400_000;
        let grants = [
            GrantSummary {
                grant_id: "old".into(),
                key_id: "k".into(),
                creation_date: 0,
            },
            GrantSummary {
                grant_id: "young".into(),
                key_id: "k".into(),
                creation_date: 95 * day,
            },
        ];
        let result = grant_findings(&grants, 100 * day, 90);
        assert_eq!(result.status, Status::Fail);
        assert_eq!(result.findings[0].status, Status::Fail);
        assert_eq!(result.findings[1].status, Status::Pass);
    }

    #[test]
    fn a_public_decrypt_statement_is_found_unless_a_condition_narrows_it() {
        let policy = |condition: &str| {
            format!(
                r#"{{"Version":"2012-10-17","Statement":[
                {{"Sid":"root","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},"Action":"kms:*","Resource":"*"}},
                {{"Sid":"open","Effect":"Allow","Principal":"*","Action":["kms:Decrypt"],"Resource":"*"{condition}}}]}}"#
            )
        };
        let record = |text: String| KeyRecord {
            policy: Some(text),
            ..test_record()
        };
        let mut records = BTreeMap::new();
        records.insert("k".to_owned(), Ok(record(policy(""))));
        assert_eq!(key_policies(&records).status, Status::Fail);
        records.insert(
            "k".to_owned(),
            Ok(record(policy(
                r#","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#,
            ))),
        );
        assert_eq!(key_policies(&records).status, Status::Pass);
        records.insert(
            "k".to_owned(),
            Ok(record(policy(
                r#","Condition":{"Bool":{"aws:SecureTransport":"true"}}"#,
            ))),
        );
        assert_eq!(
            key_policies(&records).status,
            Status::Fail,
            "transport does not narrow who"
        );
    }

    fn test_record() -> KeyRecord {
        KeyRecord {
            key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            cluster: "local".into(),
            custom_key_store_id: None,
            creation_date: 0,
            description: String::new(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            origin: "AWS_KMS".into(),
            state: crate::keys::state::KeyState::Enabled,
            deletion_date: None,
            pending_window_days: None,
            tags: BTreeMap::new(),
            materials: Vec::new(),
            rotation: None,
            destruction_pending: Vec::new(),
            destruction_started: false,
            policy: None,
            public_key: None,
            import: None,
            key_manager: Default::default(),
            parsed_policy: Default::default(),
            multi_region: None,
        }
    }
}
