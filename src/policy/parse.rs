//! The policy parser: JSON text to a [`PolicyDocument`], with AWS's validation.
//!
//! This module owns every refusal of a policy document and its message. Each is a
//! `MalformedPolicyDocumentException` with AWS's wording; where AWS KMS publishes none,
//! the wording is IAM's for the same fault:
//! - not JSON, a wrong type, an unknown element, both `Action` and `NotAction` (etc.):
//!   "Syntax errors in policy.";
//! - `Version` other than `2012-10-17` or `2008-10-17`: "The policy failed legacy
//!   parsing" (a document without `Version` is `2008-10-17`, as in AWS);
//! - no `Statement`: "Missing required field Statement."; no `Effect`, no `Principal` in
//!   a key policy: "Missing required field Effect." / "... Principal."; an effect other
//!   than `Allow`/`Deny`: `"Invalid effect: <value>"`;
//! - a `Principal` in an identity policy: "Policy document should not specify a
//!   principal.";
//! - a principal that is not `"*"`, an account id, or an IAM/STS ARN (user, role, root,
//!   assumed role), or an unknown principal type: "Policy contains a statement with one or
//!   more invalid principals.";
//! - no `Action`/`NotAction`: "Policy statement must contain actions."; an action without
//!   a service prefix: "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb,
//!   ec2, etc.";
//! - no `Resource`/`NotResource`: "Policy statement must contain resources."; a resource
//!   that is not an ARN or `"*"`: `"Resource <value> must be in ARN format or \"*\"."`;
//! - an unknown condition operator: `"Invalid Condition type : <operator>."`; a condition
//!   value of the wrong form (a number for `NumericEquals`, a CIDR for `IpAddress`, ...):
//!   "Syntax errors in policy.";
//! - two statements with one `Sid`: "Statement IDs (SID) in a single policy must be
//!   unique.".
//!
//! Sizes are checked before parsing. A key policy over 32,768 characters is refused as
//! AWS's API model refuses the `Policy` parameter: `ValidationException` "1 validation
//! error detected: Value at 'policy' failed to satisfy constraint: Member must have length
//! less than or equal to 32768". An identity policy over 6,144 non-whitespace characters
//! (IAM's managed-policy quota) is `LimitExceededException` "Cannot exceed quota for
//! PolicySize: 6144".

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::condition::{Condition, ConditionError};
use super::document::{
    Effect, PatternList, PolicyDocument, PolicyKind, PolicyVersion, PrincipalEntry, Principals,
    Statement,
};
use super::pattern::Pattern;
use crate::error::KmsError;

/// The largest key policy, in characters (AWS: 32 KB).
pub const MAX_KEY_POLICY_CHARS: usize = 32_768;
/// The largest identity policy, in non-whitespace characters (IAM managed policies).
pub const MAX_IDENTITY_POLICY_CHARS: usize = 6_144;

const SYNTAX: &str = "Syntax errors in policy.";
const INVALID_PRINCIPALS: &str = "Policy contains a statement with one or more invalid principals.";
const PRINCIPAL_IN_IDENTITY: &str = "Policy document should not specify a principal.";
const DUPLICATE_SID: &str = "Statement IDs (SID) in a single policy must be unique.";
const NO_ACTIONS: &str = "Policy statement must contain actions.";
const NO_RESOURCES: &str = "Policy statement must contain resources.";
const NO_VENDOR: &str =
    "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.";
const BAD_VERSION: &str = "The policy failed legacy parsing";

/// Parses and validates a key policy.
pub fn parse_key_policy(text: &str) -> Result<PolicyDocument, KmsError> {
    parse_policy(text, PolicyKind::Key)
}

/// Parses and validates an identity policy.
pub fn parse_identity_policy(text: &str) -> Result<PolicyDocument, KmsError> {
    parse_policy(text, PolicyKind::Identity)
}

/// Parses and validates a policy of either kind (see the module docs for the refusals).
pub fn parse_policy(text: &str, kind: PolicyKind) -> Result<PolicyDocument, KmsError> {
    check_size(text, kind)?;
    let value: Value = serde_json::from_str(text).map_err(|_| malformed(SYNTAX))?;
    parse_value(&value, kind)
}

/// Parses an already-decoded JSON document (no size check: that is on the text).
pub fn parse_value(value: &Value, kind: PolicyKind) -> Result<PolicyDocument, KmsError> {
    let top = value.as_object().ok_or_else(|| malformed(SYNTAX))?;
    only_fields(top, &["Version", "Id", "Statement"])?;
    let version = match top.get("Version") {
        None => PolicyVersion::V2008,
        Some(Value::String(v)) if v == "2012-10-17" => PolicyVersion::V2012,
        Some(Value::String(v)) if v == "2008-10-17" => PolicyVersion::V2008,
        Some(_) => return Err(malformed(BAD_VERSION)),
    };
    if top.get("Id").is_some_and(|id| !id.is_string()) {
        return Err(malformed(SYNTAX));
    }
    let raw_statements: Vec<&Value> = match top.get("Statement") {
        None => return Err(malformed("Missing required field Statement.")),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single @ Value::Object(_)) => vec![single],
        Some(_) => return Err(malformed(SYNTAX)),
    };
    let mut sids = HashSet::new();
    let mut statements = Vec::with_capacity(raw_statements.len());
    for raw in raw_statements {
        let statement = parse_statement(raw, kind, version)?;
        if let Some(sid) = &statement.sid
            && !sids.insert(sid.clone())
        {
            return Err(malformed(DUPLICATE_SID));
        }
        statements.push(statement);
    }
    let mut condition_keys = BTreeSet::new();
    for condition in statements
        .iter()
        .flat_map(|statement| &statement.conditions)
    {
        condition.add_keys_read(&mut condition_keys);
    }
    Ok(PolicyDocument {
        kind,
        version,
        statements,
        condition_keys: Arc::new(condition_keys),
    })
}

fn check_size(text: &str, kind: PolicyKind) -> Result<(), KmsError> {
    match kind {
        PolicyKind::Key if text.is_empty() => Err(KmsError::constraint_violation(
            "policy",
            None,
            &["Member must have length greater than or equal to 1"],
        )),
        PolicyKind::Key if text.chars().count() > MAX_KEY_POLICY_CHARS => {
            Err(KmsError::constraint_violation(
                "policy",
                None,
                &["Member must have length less than or equal to 32768"],
            ))
        }
        PolicyKind::Identity
            if text.chars().filter(|c| !c.is_whitespace()).count() > MAX_IDENTITY_POLICY_CHARS =>
        {
            Err(KmsError::LimitExceeded(format!(
                "Cannot exceed quota for PolicySize: {MAX_IDENTITY_POLICY_CHARS}"
            )))
        }
        _ => Ok(()),
    }
}

fn parse_statement(
    raw: &Value,
    kind: PolicyKind,
    version: PolicyVersion,
) -> Result<Statement, KmsError> {
    let fields = raw.as_object().ok_or_else(|| malformed(SYNTAX))?;
    only_fields(
        fields,
        &[
            "Sid",
            "Effect",
            "Principal",
            "NotPrincipal",
            "Action",
            "NotAction",
            "Resource",
            "NotResource",
            "Condition",
        ],
    )?;
    let sid = match fields.get("Sid") {
        None => None,
        Some(Value::String(sid)) => Some(sid.clone()),
        Some(_) => return Err(malformed(SYNTAX)),
    };
    let effect = match fields.get("Effect") {
        None => return Err(malformed("Missing required field Effect.")),
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(Value::String(e)) => return Err(malformed(&format!("Invalid effect: {e}"))),
        Some(_) => return Err(malformed(SYNTAX)),
    };
    let principals = match (kind, either(fields, "Principal", "NotPrincipal")?) {
        (PolicyKind::Key, None) => return Err(malformed("Missing required field Principal.")),
        (PolicyKind::Key, Some((value, negated))) => Some(parse_principals(value, negated)?),
        (PolicyKind::Identity, None) => None,
        (PolicyKind::Identity, Some(_)) => return Err(malformed(PRINCIPAL_IN_IDENTITY)),
    };
    let actions = match either(fields, "Action", "NotAction")? {
        None => return Err(malformed(NO_ACTIONS)),
        Some((value, negated)) => parse_actions(value, negated)?,
    };
    let resources = match either(fields, "Resource", "NotResource")? {
        None => return Err(malformed(NO_RESOURCES)),
        Some((value, negated)) => parse_resources(value, negated)?,
    };
    let conditions = match fields.get("Condition") {
        None => Vec::new(),
        Some(block) => parse_conditions(block, version)?,
    };
    Ok(Statement {
        sid,
        effect,
        principals,
        actions,
        resources,
        conditions,
    })
}

/// The element `positive` or `negative` (with `true`), refusing both at once.
fn either<'a>(
    fields: &'a Map<String, Value>,
    positive: &str,
    negative: &str,
) -> Result<Option<(&'a Value, bool)>, KmsError> {
    match (fields.get(positive), fields.get(negative)) {
        (Some(_), Some(_)) => Err(malformed(SYNTAX)),
        (Some(value), None) => Ok(Some((value, false))),
        (None, Some(value)) => Ok(Some((value, true))),
        (None, None) => Ok(None),
    }
}

/// A string or a non-empty array of strings.
fn strings(value: &Value) -> Result<Vec<&str>, KmsError> {
    match value {
        Value::String(text) => Ok(vec![text.as_str()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().ok_or_else(|| malformed(SYNTAX)))
            .collect(),
        _ => Err(malformed(SYNTAX)),
    }
}

fn parse_principals(value: &Value, negated: bool) -> Result<Principals, KmsError> {
    let entries = match value {
        Value::String(star) if star == "*" => vec![PrincipalEntry::Everyone],
        Value::Object(types) if !types.is_empty() => {
            let mut entries = Vec::new();
            for (principal_type, names) in types {
                let names = strings(names).map_err(|_| malformed(INVALID_PRINCIPALS))?;
                match principal_type.as_str() {
                    "AWS" => {
                        for name in names {
                            entries.push(parse_aws_principal(name)?);
                        }
                    }
                    "Service" | "Federated" | "CanonicalUser" => {
                        entries.push(PrincipalEntry::NeverMatches);
                    }
                    _ => return Err(malformed(INVALID_PRINCIPALS)),
                }
            }
            entries
        }
        _ => return Err(malformed(INVALID_PRINCIPALS)),
    };
    Ok(Principals { entries, negated })
}

/// One `AWS` principal: `*`, an account id, or an IAM/STS principal ARN without wildcards.
pub(crate) fn parse_aws_principal(name: &str) -> Result<PrincipalEntry, KmsError> {
    if name == "*" {
        return Ok(PrincipalEntry::Everyone);
    }
    if is_account_id(name) {
        return Ok(PrincipalEntry::Account(name.to_owned()));
    }
    let invalid = || malformed(INVALID_PRINCIPALS);
    let parts: Vec<&str> = name.splitn(6, ':').collect();
    let [scheme, partition, service, region, account, resource] = parts[..] else {
        return Err(invalid());
    };
    let well_formed = scheme == "arn"
        && partition.starts_with("aws")
        && region.is_empty()
        && is_account_id(account)
        && !resource.contains(['*', '?']);
    if !well_formed {
        return Err(invalid());
    }
    let named = |prefix: &str| {
        resource
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && !rest.ends_with('/'))
    };
    match service {
        "iam" if resource == "root" => Ok(PrincipalEntry::Account(account.to_owned())),
        "iam" if named("user/") || named("role/") => Ok(PrincipalEntry::Arn(name.to_owned())),
        "sts" if named("assumed-role/") && resource.matches('/').count() >= 2 => {
            Ok(PrincipalEntry::Arn(name.to_owned()))
        }
        _ => Err(invalid()),
    }
}

fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

fn parse_actions(value: &Value, negated: bool) -> Result<PatternList, KmsError> {
    let patterns = strings(value)?
        .into_iter()
        .map(|action| {
            let vendor_ok = action == "*"
                || action.split_once(':').is_some_and(|(vendor, name)| {
                    !vendor.is_empty()
                        && vendor
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !name.is_empty()
                });
            if vendor_ok {
                Ok(Pattern::ignoring_case(action))
            } else {
                Err(malformed(NO_VENDOR))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(PatternList { patterns, negated })
}

fn parse_resources(value: &Value, negated: bool) -> Result<PatternList, KmsError> {
    let patterns = strings(value)?
        .into_iter()
        .map(|resource| {
            if resource == "*" || resource.starts_with("arn:") {
                Ok(Pattern::new(resource))
            } else {
                Err(malformed(&format!(
                    "Resource {resource} must be in ARN format or \"*\"."
                )))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(PatternList { patterns, negated })
}

fn parse_conditions(block: &Value, version: PolicyVersion) -> Result<Vec<Condition>, KmsError> {
    let operators = block.as_object().ok_or_else(|| malformed(SYNTAX))?;
    let mut conditions = Vec::new();
    for (operator, entries) in operators {
        let entries = entries.as_object().ok_or_else(|| malformed(SYNTAX))?;
        if entries.is_empty() {
            return Err(malformed(SYNTAX));
        }
        for (key, values) in entries {
            let condition =
                Condition::parse(operator, key, values, version == PolicyVersion::V2012).map_err(
                    |error| match error {
                        ConditionError::UnknownOperator(name) => {
                            malformed(&format!("Invalid Condition type : {name}."))
                        }
                        ConditionError::BadValue => malformed(SYNTAX),
                    },
                )?;
            conditions.push(condition);
        }
    }
    Ok(conditions)
}

fn only_fields(object: &Map<String, Value>, allowed: &[&str]) -> Result<(), KmsError> {
    if object.keys().all(|key| allowed.contains(&key.as_str())) {
        Ok(())
    } else {
        Err(malformed(SYNTAX))
    }
}

fn malformed(message: &str) -> KmsError {
    KmsError::MalformedPolicyDocument(message.to_owned())
}
