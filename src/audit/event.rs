//! CloudTrail-shaped audit events. One [`Call`] collects what a key store operation touched
//! (key ARNs, the HSM members that served it) and becomes one record in CloudTrail's shape.
//! Request parameters are built by each operation from identifiers and sizes only: never a
//! plaintext, data key or ciphertext body.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::caller::Caller;
use crate::error::KmsError;
use crate::keys::state::Operation;

/// The `errorCode` CloudTrail records for a failed call: the exception name, except for
/// refusals by policy, which CloudTrail records as `AccessDenied`.
fn trail_error_code(error: &KmsError) -> &'static str {
    match error {
        KmsError::AccessDenied(_) => "AccessDenied",
        other => other.code(),
    }
}

/// CloudTrail's record version this shape follows.
pub const EVENT_VERSION: &str = "1.08";
/// `eventName` of the service event that records events the trail failed to write.
pub const EVENTS_LOST: &str = "AuditEventsLost";
/// Longest encryption context (in bytes of keys plus values) recorded in full.
const CONTEXT_RECORD_MAX: usize = 8 * 1024;

/// What one API call did, gathered while it runs.
#[derive(Debug)]
pub struct Call {
    /// The operation's AWS name, e.g. `Encrypt`.
    pub event_name: &'static str,
    /// Whether the operation only reads (CloudTrail's `readOnly`).
    pub read_only: bool,
    /// Writes state: its event is durable before the call returns.
    pub durable: bool,
    /// CloudTrail's `requestParameters`: the call's parameters, never a plaintext or key.
    pub request_parameters: Map<String, Value>,
    /// CloudTrail's `responseElements`, for the operations AWS records them for.
    pub response_elements: Option<Value>,
    /// The key ARNs the call touched.
    pub resources: BTreeSet<String>,
    /// The HSM members that served it.
    pub members: BTreeSet<String>,
    /// The `eventID` of the call's event, chosen up front so an intent can name it.
    pub event_id: uuid::Uuid,
    /// The account that owns the key when the caller used another account's key: the call
    /// is then recorded in both accounts ([`Call::owner_copy`]).
    pub key_owner: Option<String>,
}

impl Call {
    /// A call of `event_name`.
    pub fn new(event_name: &'static str, read_only: bool, durable: bool) -> Call {
        Call {
            event_name,
            read_only,
            durable,
            request_parameters: Map::new(),
            response_elements: None,
            resources: BTreeSet::new(),
            members: BTreeSet::new(),
            event_id: uuid::Uuid::new_v4(),
            key_owner: None,
        }
    }

    /// A call of `operation`, read-only or durable as the operation's kind says.
    pub fn of(operation: Operation) -> Call {
        let read_only = operation.is_read_only();
        Call::new(operation.as_str(), read_only, !read_only)
    }

    /// Records a request parameter.
    pub fn param(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.request_parameters
            .insert(name.to_owned(), value.into());
        self
    }

    /// Records an encryption context, capped in size; huge contexts are marked truncated.
    pub fn context(
        &mut self,
        name: &str,
        context: Option<&std::collections::BTreeMap<String, String>>,
    ) -> &mut Self {
        let Some(context) = context.filter(|c| !c.is_empty()) else {
            return self;
        };
        let mut recorded = Map::new();
        let mut size = 0;
        for (key, value) in context {
            size += key.len() + value.len();
            if size > CONTEXT_RECORD_MAX {
                recorded.insert("hsmKmsTruncated".into(), Value::Bool(true));
                break;
            }
            recorded.insert(key.clone(), Value::String(value.clone()));
        }
        self.param(name, Value::Object(recorded))
    }

    /// Records a key ARN the call touched.
    pub fn resource(&mut self, arn: String) {
        self.resources.insert(arn);
    }

    /// Records an HSM member that served the call.
    pub fn served_by(&mut self, member: &str) {
        if !self.members.contains(member) {
            self.members.insert(member.to_owned());
        }
    }

    /// The record of this call before it ran, for the audit intent: the call as it will be
    /// recorded, with `additionalEventData.hsmKmsOutcome` `"unknown"` and the `eventID` its
    /// final event will carry. It is chained only if the final event never is.
    pub fn intent_event(&self, caller: &Caller, cluster: &str, time_millis: i64) -> Value {
        let mut event = Call {
            event_name: self.event_name,
            read_only: self.read_only,
            durable: self.durable,
            request_parameters: self.request_parameters.clone(),
            response_elements: None,
            resources: self.resources.clone(),
            members: BTreeSet::new(),
            event_id: self.event_id,
            key_owner: None,
        }
        .into_event(caller, cluster, time_millis, None);
        event["additionalEventData"]["hsmKmsOutcome"] = Value::String("unknown".into());
        event
    }

    /// For a call on another account's key, the record the key owner's account gets, as
    /// CloudTrail writes it: `recipientAccountId` the owner, its own `eventID`, and the
    /// `sharedEventID` that `event` (the caller's record, marked here) carries too.
    pub fn owner_copy(owner: &str, event: &mut Value) -> Value {
        let shared = uuid::Uuid::new_v4().to_string();
        event["sharedEventID"] = Value::String(shared);
        let mut copy = event.clone();
        copy["recipientAccountId"] = Value::String(owner.to_owned());
        copy["eventID"] = Value::String(uuid::Uuid::new_v4().to_string());
        copy
    }

    /// The CloudTrail record of this call.
    pub fn into_event(
        self,
        caller: &Caller,
        cluster: &str,
        time_millis: i64,
        error: Option<&KmsError>,
    ) -> Value {
        let mut event = base(
            caller.scope.region(),
            time_millis,
            self.event_name,
            "AwsApiCall",
        );
        event.insert("eventID".into(), Value::String(self.event_id.to_string()));
        if let Some(request_id) = &caller.request_id {
            event.insert("requestID".into(), Value::String(request_id.clone()));
        }
        let account = caller.scope.account_id();
        event.insert("userIdentity".into(), user_identity(caller));
        event.insert(
            "sourceIPAddress".into(),
            Value::String(
                caller
                    .source_ip
                    .clone()
                    .unwrap_or_else(|| "localhost".into()),
            ),
        );
        event.insert(
            "userAgent".into(),
            Value::String(caller.user_agent.clone().unwrap_or_else(default_user_agent)),
        );
        if let Some(error) = error {
            event.insert(
                "errorCode".into(),
                Value::String(trail_error_code(error).into()),
            );
            event.insert(
                "errorMessage".into(),
                Value::String(error.message().to_owned()),
            );
        }
        event.insert(
            "requestParameters".into(),
            Value::Object(self.request_parameters),
        );
        event.insert(
            "responseElements".into(),
            if error.is_some() {
                Value::Null
            } else {
                self.response_elements.unwrap_or(Value::Null)
            },
        );
        event.insert("readOnly".into(), Value::Bool(self.read_only));
        event.insert("resources".into(), resources(account, &self.resources));
        event.insert(
            "recipientAccountId".into(),
            Value::String(account.to_owned()),
        );
        event.insert(
            "additionalEventData".into(),
            json!({ "cluster": cluster, "hsmMembers": self.members }),
        );
        Value::Object(event)
    }
}

/// A background action of the service itself (scheduled deletion carried out, automatic
/// rotation, an HSM member going down or coming back), as an `AwsServiceEvent`.
pub fn service_event(
    region: &str,
    account: &str,
    time_millis: i64,
    event_name: &str,
    resources_arns: &[String],
    details: Value,
) -> Value {
    let mut event = base(region, time_millis, event_name, "AwsServiceEvent");
    event.insert(
        "userIdentity".into(),
        json!({ "accountId": account, "invokedBy": "kms.amazonaws.com" }),
    );
    event.insert(
        "sourceIPAddress".into(),
        Value::String("kms.amazonaws.com".into()),
    );
    event.insert(
        "userAgent".into(),
        Value::String("kms.amazonaws.com".into()),
    );
    event.insert("requestParameters".into(), Value::Null);
    event.insert("responseElements".into(), Value::Null);
    event.insert("readOnly".into(), Value::Bool(false));
    let arns: BTreeSet<String> = resources_arns.iter().cloned().collect();
    event.insert("resources".into(), resources(account, &arns));
    event.insert(
        "recipientAccountId".into(),
        Value::String(account.to_owned()),
    );
    event.insert("serviceEventDetails".into(), details);
    Value::Object(event)
}

fn base(region: &str, time_millis: i64, event_name: &str, event_type: &str) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("eventVersion".into(), Value::String(EVENT_VERSION.into()));
    event.insert("eventTime".into(), Value::String(event_time(time_millis)));
    event.insert(
        "eventSource".into(),
        Value::String("kms.amazonaws.com".into()),
    );
    event.insert("eventName".into(), Value::String(event_name.into()));
    event.insert("awsRegion".into(), Value::String(region.into()));
    event.insert(
        "requestID".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    event.insert(
        "eventID".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    event.insert("eventType".into(), Value::String(event_type.into()));
    event.insert("managementEvent".into(), Value::Bool(true));
    event.insert("eventCategory".into(), Value::String("Management".into()));
    event
}

fn user_identity(caller: &Caller) -> Value {
    let account = caller.scope.account_id();
    let (kind, principal_id) = if caller.principal.ends_with(":root") {
        ("Root", account.to_owned())
    } else {
        (
            "IAMUser",
            caller
                .principal
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    json!({ "type": kind, "principalId": principal_id, "arn": caller.principal, "accountId": account })
}

fn resources(account: &str, arns: &BTreeSet<String>) -> Value {
    Value::Array(
        arns.iter()
            .map(|arn| {
                // A key of another account (cross-account use) names its own account.
                let owner = arn
                    .split(':')
                    .nth(4)
                    .filter(|a| !a.is_empty())
                    .unwrap_or(account);
                json!({ "accountId": owner, "type": "AWS::KMS::Key", "ARN": arn })
            })
            .collect(),
    )
}

fn default_user_agent() -> String {
    format!("hsm-kms/{}", env!("CARGO_PKG_VERSION"))
}

/// CloudTrail's `eventTime`: RFC 3339, UTC, whole seconds.
pub fn event_time(time_millis: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(time_millis.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Scope;

    #[test]
    fn failed_call_has_cloudtrail_shape() {
        let scope = Scope::new("us-east-1", "111122223333").unwrap();
        let caller = Caller::local(&scope);
        let mut call = Call::new("Encrypt", true, false);
        call.param("keyId", "alias/app");
        call.param("encryptionAlgorithm", "SYMMETRIC_DEFAULT");
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        call.resource(arn.into());
        call.served_by("hsm-a");
        let error = KmsError::Disabled(format!("{arn} is disabled."));
        let event = call.into_event(&caller, "local", 1_700_000_000_000, Some(&error));
        assert_eq!(event["eventTime"], "2023-11-14T22:13:20Z");
        assert_eq!(event["eventSource"], "kms.amazonaws.com");
        assert_eq!(event["eventName"], "Encrypt");
        assert_eq!(event["errorCode"], "DisabledException");
        assert_eq!(event["errorMessage"], format!("{arn} is disabled."));
        assert_eq!(event["responseElements"], Value::Null);
        assert_eq!(event["resources"][0]["ARN"], arn);
        assert_eq!(event["resources"][0]["type"], "AWS::KMS::Key");
        assert_eq!(event["userIdentity"]["type"], "Root");
        assert_eq!(event["additionalEventData"]["hsmMembers"][0], "hsm-a");
        assert_eq!(event["eventType"], "AwsApiCall");
        assert_eq!(event["readOnly"], true);
    }

    #[test]
    fn huge_contexts_are_capped() {
        let mut call = Call::new("Encrypt", true, false);
        let huge: std::collections::BTreeMap<String, String> = (0..100)
            .map(|i| (format!("k{i:03}"), "\u{0}\u{1}x".repeat(200)))
            .collect();
        call.context("encryptionContext", Some(&huge));
        let recorded = &call.request_parameters["encryptionContext"];
        assert_eq!(recorded["hsmKmsTruncated"], true);
        // Control characters are escaped (6 bytes each), so the JSON stays within a small multiple.
        assert!(serde_json::to_string(recorded).unwrap().len() < 6 * CONTEXT_RECORD_MAX);
    }
}
