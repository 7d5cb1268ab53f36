//! CloudTrail-shaped audit events. One [`Call`] collects what a key store operation touched
//! (key ARNs, the HSM members that served it) and becomes one record in CloudTrail's shape.
//! Request parameters are built by each operation from identifiers and sizes only: never a
//! plaintext, data key or ciphertext body.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::caller::Caller;
use crate::error::KmsError;
use crate::keys::state::Operation;

mod record;

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
/// CloudTrail's `eventSource` of every KMS record.
const EVENT_SOURCE: &str = "kms.amazonaws.com";
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
    pub request_parameters: RequestParameters,
    /// CloudTrail's `responseElements`, for the operations AWS records them for.
    pub response_elements: Option<Value>,
    /// The key ARNs the call touched.
    pub resources: BTreeSet<String>,
    /// The HSM members that served it, in order of name (usually one: a list, not a tree).
    pub members: Vec<String>,
    /// The `eventID` of the call's event, chosen up front so an intent can name it.
    pub event_id: uuid::Uuid,
    /// The account that owns the key when the caller used another account's key: the call
    /// is then recorded in both accounts ([`ApiCallEvent::owner_copy`]).
    pub key_owner: Option<String>,
}

impl Call {
    /// A call of `event_name`.
    pub fn new(event_name: &'static str, read_only: bool, durable: bool) -> Call {
        Call {
            event_name,
            read_only,
            durable,
            request_parameters: RequestParameters::default(),
            response_elements: None,
            resources: BTreeSet::new(),
            members: Vec::new(),
            event_id: uuid::Uuid::new_v4(),
            key_owner: None,
        }
    }

    /// A call of `operation`, read-only or durable as the operation's kind says.
    pub fn of(operation: Operation) -> Call {
        let read_only = operation.is_read_only();
        Call::new(operation.as_str(), read_only, !read_only)
    }

    /// Records a request parameter (again: replaces it).
    pub fn param(&mut self, name: &'static str, value: impl Into<Value>) -> &mut Self {
        self.request_parameters.set(name, value.into());
        self
    }

    /// Records an encryption context, capped in size; huge contexts are marked truncated.
    pub fn context(
        &mut self,
        name: &'static str,
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
        if let Err(place) = self.members.binary_search_by(|m| m.as_str().cmp(member)) {
            self.members.insert(place, member.to_owned());
        }
    }

    /// The record of this call before it ran, for the audit intent: the call as it will be
    /// recorded, with `additionalEventData.hsmKmsOutcome` `"unknown"` and the `eventID` its
    /// final event will carry. It is chained only if the final event never is.
    pub fn intent_event<'a>(
        &'a self,
        caller: &'a Caller,
        cluster: &'a str,
        time_millis: i64,
    ) -> ApiCallEvent<'a> {
        let mut event = self.event(caller, cluster, time_millis, None);
        event.response_elements = None;
        event.additional_event_data.hsm_members = None;
        event.additional_event_data.hsm_kms_outcome = Some("unknown");
        event
    }

    /// The CloudTrail record of this call, borrowing the call's fields: serialised straight
    /// into the trail, with no intermediate JSON tree.
    pub fn event<'a>(
        &'a self,
        caller: &'a Caller,
        cluster: &'a str,
        time_millis: i64,
        error: Option<&'a KmsError>,
    ) -> ApiCallEvent<'a> {
        let account = caller.scope.account_id();
        ApiCallEvent {
            event_version: EVENT_VERSION,
            event_time: EventTime(time_millis),
            event_source: EVENT_SOURCE,
            event_name: self.event_name,
            aws_region: caller.scope.region(),
            request_id: match &caller.request_id {
                Some(id) => EventId::Given(id),
                None => EventId::Fresh(uuid::Uuid::new_v4()),
            },
            event_id: EventId::Fresh(self.event_id),
            event_type: "AwsApiCall",
            management_event: true,
            event_category: "Management",
            user_identity: UserIdentity::of(caller),
            source_ip_address: caller.source_ip.as_deref().unwrap_or("localhost"),
            user_agent: caller.user_agent.as_deref().unwrap_or(DEFAULT_USER_AGENT),
            error_code: error.map(trail_error_code),
            error_message: error.map(KmsError::message),
            request_parameters: &self.request_parameters,
            response_elements: match error {
                Some(_) => None,
                None => self.response_elements.as_ref(),
            },
            read_only: self.read_only,
            resources: Resources {
                account,
                arns: &self.resources,
            },
            recipient_account_id: account,
            additional_event_data: AdditionalEventData {
                cluster,
                hsm_members: Some(&self.members),
                hsm_kms_outcome: None,
            },
            shared_event_id: None,
        }
    }
}

/// CloudTrail's `requestParameters` of a call, in the order the operation recorded them. Their
/// names are the API model's member names, written as they are (none needs escaping); a few
/// per call, so a list is searched faster than a map is built.
#[derive(Debug, Clone, Default)]
pub struct RequestParameters(Vec<(&'static str, Value)>);

impl RequestParameters {
    /// Records `name`, replacing an earlier value in its place.
    fn set(&mut self, name: &'static str, value: Value) {
        match self.0.iter_mut().find(|(recorded, _)| *recorded == name) {
            Some((_, recorded)) => *recorded = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value recorded under `name`.
    #[cfg(test)]
    fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(recorded, _)| *recorded == name)
            .map(|(_, value)| value)
    }
}

#[cfg(test)]
impl Serialize for RequestParameters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
    }
}

/// The CloudTrail record of one API call (`AwsApiCall`), fields in CloudTrail's order. Its JSON
/// is written in two steps, its values captured by the calling thread and written as JSON by the
/// audit writer (module `record`); the derived serialisation (in tests only) is the reference
/// that JSON is checked against.
#[derive(Debug, Clone)]
#[cfg_attr(test, derive(Serialize))]
#[cfg_attr(test, serde(rename_all = "camelCase"))]
pub struct ApiCallEvent<'a> {
    event_version: &'static str,
    event_time: EventTime,
    event_source: &'static str,
    event_name: &'static str,
    aws_region: &'a str,
    #[cfg_attr(test, serde(rename = "requestID"))]
    request_id: EventId<'a>,
    #[cfg_attr(test, serde(rename = "eventID"))]
    event_id: EventId<'a>,
    event_type: &'static str,
    management_event: bool,
    event_category: &'static str,
    user_identity: UserIdentity<'a>,
    #[cfg_attr(test, serde(rename = "sourceIPAddress"))]
    source_ip_address: &'a str,
    user_agent: &'a str,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    error_code: Option<&'static str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    error_message: Option<&'a str>,
    request_parameters: &'a RequestParameters,
    /// `null` for failed calls and intents, as CloudTrail records them.
    response_elements: Option<&'a Value>,
    read_only: bool,
    resources: Resources<'a>,
    recipient_account_id: &'a str,
    additional_event_data: AdditionalEventData<'a>,
    /// Set on both records of a call on another account's key.
    #[cfg_attr(
        test,
        serde(rename = "sharedEventID", skip_serializing_if = "Option::is_none")
    )]
    shared_event_id: Option<uuid::Uuid>,
}

impl<'a> ApiCallEvent<'a> {
    /// For a call on another account's key, the record the key owner's account gets, as
    /// CloudTrail writes it: `recipientAccountId` the owner, its own `eventID`, and the
    /// `sharedEventID` that this record (the caller's, marked here) carries too.
    pub fn owner_copy(&mut self, owner: &'a str) -> ApiCallEvent<'a> {
        self.shared_event_id = Some(uuid::Uuid::new_v4());
        let mut copy = self.clone();
        copy.recipient_account_id = owner;
        copy.event_id = EventId::Fresh(uuid::Uuid::new_v4());
        copy
    }
}

/// An identifier the caller gave (a request id) or one chosen here.
#[derive(Debug, Clone)]
#[cfg_attr(test, derive(Serialize))]
#[cfg_attr(test, serde(untagged))]
enum EventId<'a> {
    Given(&'a str),
    Fresh(uuid::Uuid),
}

/// CloudTrail's `eventTime`: RFC 3339, UTC, whole seconds.
#[derive(Debug, Clone, Copy)]
struct EventTime(i64);

#[cfg(test)]
impl Serialize for EventTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_seconds(system_time(self.0)))
    }
}

#[derive(Debug, Clone)]
#[cfg_attr(test, derive(Serialize))]
#[cfg_attr(test, serde(rename_all = "camelCase"))]
struct UserIdentity<'a> {
    #[cfg_attr(test, serde(rename = "type"))]
    kind: &'static str,
    principal_id: &'a str,
    arn: &'a str,
    account_id: &'a str,
}

impl<'a> UserIdentity<'a> {
    fn of(caller: &'a Caller) -> UserIdentity<'a> {
        let account = caller.scope.account_id();
        let (kind, principal_id) = if caller.principal.ends_with(":root") {
            ("Root", account)
        } else {
            (
                "IAMUser",
                caller.principal.rsplit('/').next().unwrap_or_default(),
            )
        };
        UserIdentity {
            kind,
            principal_id,
            arn: &caller.principal,
            account_id: account,
        }
    }
}

/// The keys a call touched, each as CloudTrail's `resources` entry.
#[derive(Debug, Clone, Copy)]
struct Resources<'a> {
    /// The caller's account, for keys whose ARN names none.
    account: &'a str,
    arns: &'a BTreeSet<String>,
}

#[cfg(test)]
impl Serialize for Resources<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.arns.iter().map(|arn| resource(self.account, arn)))
    }
}

#[derive(Debug, Clone, Serialize)]
struct Resource<'a> {
    #[serde(rename = "accountId")]
    account_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ARN")]
    arn: &'a str,
}

fn resource<'a>(account: &'a str, arn: &'a str) -> Resource<'a> {
    // A key of another account (cross-account use) names its own account, the ARN's fifth
    // field.
    let fifth = arn
        .bytes()
        .enumerate()
        .filter(|(_, byte)| *byte == b':')
        .nth(3)
        .map(|(at, _)| {
            let rest = &arn[at + 1..];
            rest.find(':').map_or(rest, |end| &rest[..end])
        });
    let owner = fifth.filter(|field| !field.is_empty()).unwrap_or(account);
    Resource {
        account_id: owner,
        kind: "AWS::KMS::Key",
        arn,
    }
}

#[derive(Debug, Clone)]
#[cfg_attr(test, derive(Serialize))]
#[cfg_attr(test, serde(rename_all = "camelCase"))]
struct AdditionalEventData<'a> {
    cluster: &'a str,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    hsm_members: Option<&'a [String]>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    hsm_kms_outcome: Option<&'static str>,
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

/// What an integrated service did in an account on a caller's behalf, for
/// [`service_call_event`].
#[derive(Debug, Clone, Copy)]
pub struct ServiceCall<'a> {
    /// The account the service acted in.
    pub account: &'a str,
    /// The region it acted in.
    pub region: &'a str,
    /// When, in milliseconds since the epoch.
    pub time_millis: i64,
    /// The API operation, e.g. `CreateKey`.
    pub event_name: &'a str,
    /// The service's principal, e.g. `s3.amazonaws.com`.
    pub invoked_by: &'a str,
    /// The keys it touched.
    pub resources: &'a [String],
}

/// An API call an integrated service made itself, as CloudTrail records one (`AwsApiCall`
/// whose `userIdentity` is of type `AWSService`, `invokedBy` the service, which is also the
/// source and user agent): the creation of an AWS managed key on an account's first use of
/// `alias/aws/<service>`.
pub fn service_call_event(
    call: ServiceCall<'_>,
    request_parameters: Value,
    response_elements: Value,
) -> Value {
    let mut event = base(call.region, call.time_millis, call.event_name, "AwsApiCall");
    event.insert(
        "userIdentity".into(),
        json!({ "type": "AWSService", "invokedBy": call.invoked_by }),
    );
    event.insert(
        "sourceIPAddress".into(),
        Value::String(call.invoked_by.to_owned()),
    );
    event.insert(
        "userAgent".into(),
        Value::String(call.invoked_by.to_owned()),
    );
    event.insert("requestParameters".into(), request_parameters);
    event.insert("responseElements".into(), response_elements);
    event.insert("readOnly".into(), Value::Bool(false));
    let arns: BTreeSet<String> = call.resources.iter().cloned().collect();
    event.insert("resources".into(), resources(call.account, &arns));
    event.insert(
        "recipientAccountId".into(),
        Value::String(call.account.to_owned()),
    );
    Value::Object(event)
}

fn base(region: &str, time_millis: i64, event_name: &str, event_type: &str) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("eventVersion".into(), Value::String(EVENT_VERSION.into()));
    event.insert("eventTime".into(), Value::String(event_time(time_millis)));
    event.insert("eventSource".into(), Value::String(EVENT_SOURCE.into()));
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

fn resources(account: &str, arns: &BTreeSet<String>) -> Value {
    Value::Array(
        arns.iter()
            .map(|arn| json!(resource(account, arn)))
            .collect(),
    )
}

/// The `userAgent` of calls made in-process, without an HTTP request.
const DEFAULT_USER_AGENT: &str = concat!("hsm-kms/", env!("CARGO_PKG_VERSION"));

fn system_time(time_millis: i64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(time_millis).unwrap_or(0))
}

/// CloudTrail's `eventTime`: RFC 3339, UTC, whole seconds.
pub fn event_time(time_millis: i64) -> String {
    humantime::format_rfc3339_seconds(system_time(time_millis)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::log::AuditEvent;
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
        let event =
            serde_json::to_value(call.event(&caller, "local", 1_700_000_000_000, Some(&error)))
                .unwrap();
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
        let recorded = call.request_parameters.get("encryptionContext").unwrap();
        assert_eq!(recorded["hsmKmsTruncated"], true);
        // Control characters are escaped (6 bytes each), so the JSON stays within a small multiple.
        assert!(serde_json::to_string(recorded).unwrap().len() < 6 * CONTEXT_RECORD_MAX);
    }

    /// Every shape a call's record takes, with strings that need escaping and strings that do
    /// not: the hand-written JSON equals the derived serialisation byte for byte.
    #[test]
    fn the_written_json_is_the_derived_serialisation() {
        let scope = Scope::new("eu-west-1", "111122223333").unwrap();
        let plain = Caller::local(&scope);
        let mut odd = Caller::local(&scope);
        odd.principal = "arn:aws:iam::111122223333:user/q\"uote\\back\u{1}ctl/é".into();
        odd.source_ip = Some("192.0.2.1".into());
        odd.user_agent = Some("agent \"with\" quotes\n".into());
        odd.request_id = Some("req\t1".into());
        let own = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let foreign = "arn:aws:kms:eu-west-1:444455556666:key/0000abcd-12ab-34cd-56ef-1234567890ab";
        let error = KmsError::Disabled(format!("{own} is \"disabled\"."));

        let mut full = Call::new("ReEncrypt", false, true);
        full.param("sourceKeyId", "alias/app\u{7f}");
        full.param(
            "grantTokens",
            Value::Array(vec![Value::from("t1"), Value::from(2)]),
        );
        let context = std::collections::BTreeMap::from([("k\"".to_owned(), "v\\".to_owned())]);
        full.context("encryptionContext", Some(&context));
        full.response_elements = Some(serde_json::json!({"keyId": own, "n": [1, true, null]}));
        full.resource(own.into());
        full.resource(foreign.into());
        full.served_by("hsm-a");
        full.served_by("hsm \"b\"");
        let empty = Call::new("ListKeys", true, false);

        let mut owner_event = full.event(&odd, "c\u{0}luster", 1_700_000_000_999, None);
        let owner_copy = owner_event.owner_copy("444455556666");
        let events = [
            full.event(&plain, "local", 1_700_000_000_000, None),
            full.event(&odd, "local", 0, Some(&error)),
            full.intent_event(&odd, "local", 1_800_000_000_000),
            empty.event(&plain, "local", 1_700_000_000_000, None),
            owner_event,
            owner_copy,
        ];
        for event in &events {
            let mut written = Vec::new();
            event.write_json(&mut written).unwrap();
            let derived = serde_json::to_vec(event).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(derived).unwrap()
            );
        }
    }

    /// A key's account is its ARN's fifth field; without one, the caller's.
    #[test]
    fn a_resource_names_the_account_in_its_arn() {
        let caller_account = "111122223333";
        for (arn, account) in [
            ("arn:aws:kms:eu-west-1:444455556666:key/k", "444455556666"),
            ("arn:aws:kms:eu-west-1:111122223333:key/k", caller_account),
            ("arn:aws:kms:eu-west-1::key/k", caller_account),
            ("arn:aws:kms:eu-west-1", caller_account),
            ("arn:aws:kms:eu-west-1:444455556666", "444455556666"),
            ("alias/app", caller_account),
        ] {
            assert_eq!(resource(caller_account, arn).account_id, account, "{arn}");
        }
    }
}
