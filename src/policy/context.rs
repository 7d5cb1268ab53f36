//! The request context a policy is evaluated against: the action, the key, the caller and
//! the condition keys of the request.
//!
//! This module owns [`RequestContext`], [`CallerIdentity`] and [`ContextValue`], and the
//! names of the condition keys hsm-kms fills ([`keys`]). It holds only what the wiring code
//! puts in: it reads no clock, no store and no HSM. Condition key names are
//! case-insensitive, as AWS documents ("Context key names are not case-sensitive"), so
//! they are compared ignoring ASCII case; this includes the `<key>` part of
//! `kms:EncryptionContext:<key>` and the tag key of `aws:ResourceTag/<k>`,
//! `aws:RequestTag/<k>` and `aws:PrincipalTag/<k>`. Values keep their case: whether they
//! compare case-sensitively is the condition operator's choice. So, as AWS documents, a
//! policy that needs the encryption context keys' case exact tests
//! `kms:EncryptionContextKeys` (whose values are the keys as sent) with `StringEquals`.
//!
//! An Encrypt builds its context on every call, and a policy reads few of its keys (of a
//! 20-statement policy, those of the statements naming the caller and the action), so
//! nothing is computed that no condition asks for:
//!
//! - the keys of the caller, the time and the encryption context are computed when a
//!   condition reads them: `aws:PrincipalArn`, `aws:PrincipalAccount`, `kms:CallerAccount`,
//!   `aws:PrincipalTag/<k>`, `kms:ViaService` (the credential's `via_service`: the gateway
//!   or storage service that calls on behalf of users), `aws:SourceIp`,
//!   `aws:SecureTransport` from the [`CallerIdentity`] of [`RequestContext::new`];
//!   `aws:CurrentTime`, `aws:EpochTime` from [`RequestContext::with_current_time`];
//!   `kms:EncryptionContext:<key>`, `kms:EncryptionContextKeys` from
//!   [`RequestContext::with_encryption_context`] (whose pairs grant constraints check too);
//! - the others are set by the wiring code, in a short list under the names of [`keys`]
//!   (borrowed, not copied), and only those the deciding policies read
//!   ([`RequestContext::naming_only`] with their
//!   [`PolicyDocument::condition_keys`](super::PolicyDocument::condition_keys); most
//!   policies read none): [`RequestContext::with_resource_tags`] and
//!   [`RequestContext::with_request_tags`] set `aws:ResourceTag/<k>`, `aws:RequestTag/<k>`,
//!   `aws:TagKeys`; [`RequestContext::with_grant_request`] sets `kms:GrantOperations`,
//!   `kms:GranteePrincipal`, `kms:RetiringPrincipal`, `kms:GrantIsForAWSResource`, and
//!   [`RequestContext::with_requested_constraints`] the grant's constraints;
//!   [`RequestContext::set`] and [`RequestContext::set_multi`] the rest
//!   (`kms:EncryptionAlgorithm`, `kms:KeyOrigin`, `kms:KeySpec`, `kms:KeyUsage`,
//!   `kms:ValidTo`, `kms:RequestAlias`, `kms:ResourceAliases`, `kms:MultiRegion`,
//!   `kms:BypassPolicyLockoutSafetyCheck`, `kms:ScheduleKeyDeletionPendingWindowInDays`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::grant::GrantConstraints;

/// The condition keys hsm-kms knows, spelled as AWS documents them.
pub mod keys {
    /// The caller's account id.
    pub const CALLER_ACCOUNT: &str = "kms:CallerAccount";
    /// The service calling on the user's behalf (a credential's `via_service`).
    pub const VIA_SERVICE: &str = "kms:ViaService";
    /// The `EncryptionAlgorithm` of the request (`SYMMETRIC_DEFAULT` when absent).
    pub const ENCRYPTION_ALGORITHM: &str = "kms:EncryptionAlgorithm";
    /// Prefix of `kms:EncryptionContext:<key>`: one key per encryption context pair.
    pub const ENCRYPTION_CONTEXT_PREFIX: &str = "kms:EncryptionContext:";
    /// The keys of the request's encryption context (multi-valued).
    pub const ENCRYPTION_CONTEXT_KEYS: &str = "kms:EncryptionContextKeys";
    /// The operations of a CreateGrant request (multi-valued).
    pub const GRANT_OPERATIONS: &str = "kms:GrantOperations";
    /// The grantee principal of a CreateGrant request.
    pub const GRANTEE_PRINCIPAL: &str = "kms:GranteePrincipal";
    /// The retiring principal of a CreateGrant request.
    pub const RETIRING_PRINCIPAL: &str = "kms:RetiringPrincipal";
    /// Whether a CreateGrant is made by an AWS service (always `false` on premises).
    pub const GRANT_IS_FOR_AWS_RESOURCE: &str = "kms:GrantIsForAWSResource";
    /// The key's origin (`AWS_KMS`, `EXTERNAL`, `AWS_CLOUDHSM`).
    pub const KEY_ORIGIN: &str = "kms:KeyOrigin";
    /// The key's spec (`SYMMETRIC_DEFAULT`, ...).
    pub const KEY_SPEC: &str = "kms:KeySpec";
    /// The key's usage (`ENCRYPT_DECRYPT`, ...).
    pub const KEY_USAGE: &str = "kms:KeyUsage";
    /// ImportKeyMaterial's `ValidTo` (epoch seconds), when the request sets one.
    pub const VALID_TO: &str = "kms:ValidTo";
    /// ImportKeyMaterial's `ExpirationModel` (`KEY_MATERIAL_EXPIRES` by default).
    pub const EXPIRATION_MODEL: &str = "kms:ExpirationModel";
    /// GetParametersForImport's `WrappingAlgorithm`.
    pub const WRAPPING_ALGORITHM: &str = "kms:WrappingAlgorithm";
    /// GetParametersForImport's `WrappingKeySpec`.
    pub const WRAPPING_KEY_SPEC: &str = "kms:WrappingKeySpec";
    /// The alias the request named the key by.
    pub const REQUEST_ALIAS: &str = "kms:RequestAlias";
    /// The aliases of the key (multi-valued).
    pub const RESOURCE_ALIASES: &str = "kms:ResourceAliases";
    /// Whether the key is multi-Region.
    pub const MULTI_REGION: &str = "kms:MultiRegion";
    /// A multi-Region key's type: `PRIMARY` or `REPLICA`.
    pub const MULTI_REGION_KEY_TYPE: &str = "kms:MultiRegionKeyType";
    /// ReplicateKey's `ReplicaRegion`.
    pub const REPLICA_REGION: &str = "kms:ReplicaRegion";
    /// UpdatePrimaryRegion's `PrimaryRegion`.
    pub const PRIMARY_REGION: &str = "kms:PrimaryRegion";
    /// The `BypassPolicyLockoutSafetyCheck` parameter of CreateKey and PutKeyPolicy.
    pub const BYPASS_POLICY_LOCKOUT_SAFETY_CHECK: &str = "kms:BypassPolicyLockoutSafetyCheck";
    /// The `PendingWindowInDays` parameter of ScheduleKeyDeletion.
    pub const SCHEDULE_KEY_DELETION_PENDING_WINDOW_IN_DAYS: &str =
        "kms:ScheduleKeyDeletionPendingWindowInDays";
    /// The caller's principal ARN.
    pub const PRINCIPAL_ARN: &str = "aws:PrincipalArn";
    /// The caller's account id.
    pub const PRINCIPAL_ACCOUNT: &str = "aws:PrincipalAccount";
    /// Prefix of `aws:PrincipalTag/<k>`: the tags declared on the credential.
    pub const PRINCIPAL_TAG_PREFIX: &str = "aws:PrincipalTag/";
    /// The caller's IP address.
    pub const SOURCE_IP: &str = "aws:SourceIp";
    /// Whether the request came over TLS.
    pub const SECURE_TRANSPORT: &str = "aws:SecureTransport";
    /// The request time, ISO 8601.
    pub const CURRENT_TIME: &str = "aws:CurrentTime";
    /// The request time, epoch seconds.
    pub const EPOCH_TIME: &str = "aws:EpochTime";
    /// Prefix of `aws:ResourceTag/<k>`: the key's tags.
    pub const RESOURCE_TAG_PREFIX: &str = "aws:ResourceTag/";
    /// Prefix of `aws:RequestTag/<k>`: the tags of a TagResource or CreateKey request.
    pub const REQUEST_TAG_PREFIX: &str = "aws:RequestTag/";
    /// The tag keys of the request (multi-valued).
    pub const TAG_KEYS: &str = "aws:TagKeys";
}

/// The value of one condition key in a request: one string, or a set of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextValue {
    /// A single-valued key (`kms:CallerAccount`).
    Single(String),
    /// A multi-valued key (`kms:EncryptionContextKeys`, `aws:TagKeys`), possibly empty.
    Multi(Vec<String>),
}

impl ContextValue {
    /// The values as a slice (one for a single-valued key).
    pub fn values(&self) -> &[String] {
        match self {
            ContextValue::Single(value) => std::slice::from_ref(value),
            ContextValue::Multi(values) => values,
        }
    }
}

/// What kind of IAM principal a caller is, parsed from its ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// `arn:aws:iam::<account>:root`.
    Root,
    /// `arn:aws:iam::<account>:user/...`.
    User,
    /// `arn:aws:iam::<account>:role/...`.
    Role,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`: a session of the role whose
    /// ARN this holds (`arn:aws:iam::<account>:role/<role>`), which a key policy naming
    /// the role matches, as in AWS.
    AssumedRole {
        /// The role's ARN.
        role_arn: String,
    },
    /// Any other ARN: matched only by its exact ARN, `"*"` and its account.
    Other,
}

/// Who is calling, as the policy evaluator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    principal_arn: String,
    account: String,
    kind: PrincipalKind,
    tags: BTreeMap<String, String>,
    via_service: Option<String>,
    source_ip: Option<IpAddr>,
    secure_transport: bool,
}

impl CallerIdentity {
    /// A caller from its principal ARN and account id; no tags, no via service, no source
    /// IP, not over TLS until said otherwise.
    pub fn new(principal_arn: &str, account: &str) -> CallerIdentity {
        CallerIdentity {
            kind: principal_kind(principal_arn),
            principal_arn: principal_arn.to_owned(),
            account: account.to_owned(),
            tags: BTreeMap::new(),
            via_service: None,
            source_ip: None,
            secure_transport: false,
        }
    }

    /// The root of `account` (`arn:aws:iam::<account>:root`), as in-process CLI calls act.
    pub fn account_root(account: &str) -> CallerIdentity {
        CallerIdentity::new(&format!("arn:aws:iam::{account}:root"), account)
    }

    /// The tags declared on the credential (`aws:PrincipalTag/<k>`).
    pub fn with_tags(mut self, tags: BTreeMap<String, String>) -> CallerIdentity {
        self.tags = tags;
        self
    }

    /// The service the credential calls through (`kms:ViaService`).
    pub fn with_via_service(mut self, service: Option<String>) -> CallerIdentity {
        self.via_service = service;
        self
    }

    /// Where the request came from (`aws:SourceIp`) and whether over TLS
    /// (`aws:SecureTransport`).
    pub fn with_transport(mut self, source_ip: Option<IpAddr>, secure: bool) -> CallerIdentity {
        self.source_ip = source_ip;
        self.secure_transport = secure;
        self
    }

    /// The principal ARN, as AccessDeniedException messages name it.
    pub fn principal_arn(&self) -> &str {
        &self.principal_arn
    }

    /// The caller's account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The kind of principal, parsed from the ARN.
    pub fn kind(&self) -> &PrincipalKind {
        &self.kind
    }

    /// Whether the caller is the root of its account, whose identity permissions are
    /// implicitly complete (IAM policies do not restrict it).
    pub fn is_account_root(&self) -> bool {
        self.kind == PrincipalKind::Root
    }
}

/// Parses the kind of an IAM or STS principal ARN; anything else is [`PrincipalKind::Other`].
fn principal_kind(arn: &str) -> PrincipalKind {
    let mut parts = arn.splitn(6, ':');
    let mut part = || parts.next();
    let (
        Some(scheme),
        Some(partition),
        Some(service),
        Some(_region),
        Some(account),
        Some(resource),
    ) = (part(), part(), part(), part(), part(), part())
    else {
        return PrincipalKind::Other;
    };
    if scheme != "arn" {
        return PrincipalKind::Other;
    }
    match service {
        "iam" if resource == "root" => PrincipalKind::Root,
        "iam" if resource.starts_with("user/") => PrincipalKind::User,
        "iam" if resource.starts_with("role/") => PrincipalKind::Role,
        "sts" => match resource.strip_prefix("assumed-role/") {
            Some(rest) => match rest.split_once('/') {
                Some((role, _session)) if !role.is_empty() => PrincipalKind::AssumedRole {
                    role_arn: format!("arn:{partition}:iam::{account}:role/{role}"),
                },
                _ => PrincipalKind::Other,
            },
            None => PrincipalKind::Other,
        },
        _ => PrincipalKind::Other,
    }
}

/// One request as the evaluator sees it: the action, the key, the caller, the condition
/// keys and the encryption context.
#[derive(Debug, Clone)]
pub struct RequestContext {
    action: &'static str,
    resource: String,
    caller: Arc<CallerIdentity>,
    /// The condition keys set, each name once (compared ignoring ASCII case).
    keys: Vec<(Cow<'static, str>, ContextValue)>,
    /// The condition keys filled: all, or only those the deciding policies read.
    filled: Filled,
    /// The request time in epoch seconds, once [`RequestContext::with_current_time`] gave it.
    current_time: Option<u64>,
    /// The encryption context, once [`RequestContext::with_encryption_context`] gave it.
    encryption_context: Option<BTreeMap<String, String>>,
    requested_constraints: Option<GrantConstraints>,
}

/// The encryption context of a request that has none.
static NO_ENCRYPTION_CONTEXT: BTreeMap<String, String> = BTreeMap::new();

/// Which condition keys a [`RequestContext`] fills.
#[derive(Debug, Clone)]
enum Filled {
    All,
    /// These, in ASCII lower case ([`PolicyDocument::condition_keys`]); a key no policy
    /// reads would be work for nothing on every call.
    ///
    /// [`PolicyDocument::condition_keys`]: super::PolicyDocument::condition_keys
    Only(Arc<BTreeSet<String>>),
}

impl Filled {
    /// Whether the condition key `key` (any case) is filled. `kms:GrantOperations` always is:
    /// grants read it too (a CreateGrant allowed by a grant), whatever the policies name.
    fn includes(&self, key: &str) -> bool {
        match self {
            Filled::All => true,
            Filled::Only(names) => {
                key.eq_ignore_ascii_case(keys::GRANT_OPERATIONS)
                    || names.iter().any(|name| name.eq_ignore_ascii_case(key))
            }
        }
    }

    /// Whether the condition key `prefix` + `rest` (any case) is filled, without building it.
    fn includes_prefixed(&self, prefix: &str, rest: &str) -> bool {
        match self {
            Filled::All => true,
            Filled::Only(names) => names.iter().any(|name| {
                name.len() == prefix.len() + rest.len()
                    && name
                        .get(..prefix.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
                    && name
                        .get(prefix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(rest))
            }),
        }
    }
}

impl RequestContext {
    /// A request for `action` (`kms:Encrypt`) on `resource` (the key ARN) by `caller`, with
    /// the caller's condition keys filled in (see the module docs).
    pub fn new(
        action: &'static str,
        resource: impl Into<String>,
        caller: impl Into<Arc<CallerIdentity>>,
    ) -> RequestContext {
        RequestContext::filling(action, resource, caller, Filled::All)
    }

    /// As [`RequestContext::new`], but filling only the condition keys in `names` (ASCII
    /// lower case), which must include every key the policies deciding the request read
    /// ([`PolicyDocument::condition_keys`]): the decision is then the same, and the keys no
    /// policy reads cost nothing.
    ///
    /// [`PolicyDocument::condition_keys`]: super::PolicyDocument::condition_keys
    pub fn naming_only(
        action: &'static str,
        resource: impl Into<String>,
        caller: impl Into<Arc<CallerIdentity>>,
        names: Arc<BTreeSet<String>>,
    ) -> RequestContext {
        RequestContext::filling(action, resource, caller, Filled::Only(names))
    }

    fn filling(
        action: &'static str,
        resource: impl Into<String>,
        caller: impl Into<Arc<CallerIdentity>>,
        filled: Filled,
    ) -> RequestContext {
        RequestContext {
            action,
            resource: resource.into(),
            caller: caller.into(),
            keys: Vec::new(),
            filled,
            current_time: None,
            encryption_context: None,
            requested_constraints: None,
        }
    }

    /// Sets the condition key `name`, replacing a value set under it in any case.
    fn put(&mut self, name: Cow<'static, str>, value: ContextValue) {
        match self
            .keys
            .iter_mut()
            .find(|(set, _)| set.eq_ignore_ascii_case(&name))
        {
            Some((_, old)) => *old = value,
            None => self.keys.push((name, value)),
        }
    }

    /// Sets the prefixed condition key `prefix` + `rest` (`kms:EncryptionContext:<key>`) if
    /// it is filled.
    fn put_prefixed(&mut self, prefix: &str, rest: &str, value: &str) {
        if self.fills_prefixed(prefix, rest) {
            self.put(
                Cow::Owned(format!("{prefix}{rest}")),
                ContextValue::Single(value.to_owned()),
            );
        }
    }

    /// Whether this request fills the condition key `key` (any case).
    fn fills(&self, key: &str) -> bool {
        self.filled.includes(key)
    }

    /// Whether this request fills the condition key `prefix` + `rest` (any case).
    fn fills_prefixed(&self, prefix: &str, rest: &str) -> bool {
        self.filled.includes_prefixed(prefix, rest)
    }

    /// Sets a single-valued condition key, one of [`keys`] (name case-insensitive).
    pub fn set(&mut self, key: &'static str, value: &str) {
        if self.fills(key) {
            self.put(Cow::Borrowed(key), ContextValue::Single(value.to_owned()));
        }
    }

    /// Sets a multi-valued condition key, one of [`keys`] (name case-insensitive), possibly
    /// empty.
    pub fn set_multi(&mut self, key: &'static str, values: Vec<String>) {
        if self.fills(key) {
            self.put(Cow::Borrowed(key), ContextValue::Multi(values));
        }
    }

    /// The request time, from the caller's clock: `aws:CurrentTime` (ISO 8601, UTC, whole
    /// seconds) and `aws:EpochTime`.
    pub fn with_current_time(mut self, now: SystemTime) -> RequestContext {
        let seconds = now
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or(0);
        self.current_time = Some(seconds);
        self
    }

    /// The request's encryption context: `kms:EncryptionContext:<key>` per pair,
    /// `kms:EncryptionContextKeys`, and the pairs grant constraints compare.
    pub fn with_encryption_context(mut self, pairs: &BTreeMap<String, String>) -> RequestContext {
        self.encryption_context = Some(pairs.clone());
        self
    }

    /// The key's tags: `aws:ResourceTag/<k>`.
    pub fn with_resource_tags(mut self, tags: &BTreeMap<String, String>) -> RequestContext {
        for (key, value) in tags {
            self.put_prefixed(keys::RESOURCE_TAG_PREFIX, key, value);
        }
        self
    }

    /// The tags a TagResource or CreateKey request sets: `aws:RequestTag/<k>` and
    /// `aws:TagKeys`.
    pub fn with_request_tags(mut self, tags: &BTreeMap<String, String>) -> RequestContext {
        for (key, value) in tags {
            self.put_prefixed(keys::REQUEST_TAG_PREFIX, key, value);
        }
        self.set_multi(keys::TAG_KEYS, tags.keys().cloned().collect());
        self
    }

    /// The parameters of a CreateGrant request: `kms:GrantOperations`,
    /// `kms:GranteePrincipal`, `kms:RetiringPrincipal` (when given) and
    /// `kms:GrantIsForAWSResource` (`false`: no AWS service calls on premises).
    pub fn with_grant_request(
        mut self,
        operations: &[&str],
        grantee: &str,
        retiring: Option<&str>,
    ) -> RequestContext {
        self.set_multi(
            keys::GRANT_OPERATIONS,
            operations.iter().map(|op| (*op).to_owned()).collect(),
        );
        self.set(keys::GRANTEE_PRINCIPAL, grantee);
        if let Some(retiring) = retiring {
            self.set(keys::RETIRING_PRINCIPAL, retiring);
        }
        self.set(keys::GRANT_IS_FOR_AWS_RESOURCE, "false");
        self
    }

    /// The constraints a CreateGrant request asks for, which a grant that allows
    /// CreateGrant compares with its own.
    pub fn with_requested_constraints(
        mut self,
        constraints: Option<GrantConstraints>,
    ) -> RequestContext {
        self.requested_constraints = constraints;
        self
    }

    /// The same request for another action (the lockout check asks about
    /// `kms:PutKeyPolicy` with the caller and condition keys of the current call).
    pub fn for_action(&self, action: &'static str) -> RequestContext {
        RequestContext {
            action,
            ..self.clone()
        }
    }

    /// The constraints a CreateGrant request asks for.
    pub fn requested_constraints(&self) -> Option<&GrantConstraints> {
        self.requested_constraints.as_ref()
    }

    /// The action, e.g. `kms:Encrypt`.
    pub fn action(&self) -> &str {
        self.action
    }

    /// The operation name, e.g. `Encrypt` (the action without its `kms:` prefix).
    pub fn operation(&self) -> &str {
        self.action
            .split_once(':')
            .map_or(self.action, |(_, name)| name)
    }

    /// The resource, the key ARN.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The caller.
    pub fn caller(&self) -> &CallerIdentity {
        &self.caller
    }

    /// The request's encryption context pairs.
    pub fn encryption_context(&self) -> &BTreeMap<String, String> {
        self.encryption_context
            .as_ref()
            .unwrap_or(&NO_ENCRYPTION_CONTEXT)
    }

    /// The value of a condition key, by its lower-case name: one set, or one computed from
    /// the caller, the time or the encryption context ([`RequestContext::derived`]).
    pub(crate) fn lookup_lowercase(&self, lowercase_key: &str) -> Option<Cow<'_, ContextValue>> {
        match self
            .keys
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(lowercase_key))
        {
            Some((_, value)) => Some(Cow::Borrowed(value)),
            None => self.derived(lowercase_key).map(Cow::Owned),
        }
    }

    /// The condition keys that come from the caller (`aws:PrincipalArn`,
    /// `aws:PrincipalAccount`, `kms:CallerAccount`, `aws:PrincipalTag/<k>`, `kms:ViaService`,
    /// `aws:SourceIp`, `aws:SecureTransport`), the time (`aws:CurrentTime`,
    /// `aws:EpochTime`) and the encryption context (`kms:EncryptionContext:<key>`,
    /// `kms:EncryptionContextKeys`), computed when a condition reads one: of a 20-statement
    /// policy, an Encrypt typically reads the few keys of the statements naming its caller
    /// and action, so filling them all up front was most of its authorization's cost.
    fn derived(&self, key: &str) -> Option<ContextValue> {
        let is = |name: &str| key.eq_ignore_ascii_case(name);
        let caller = &self.caller;
        let text = |value: &str| Some(ContextValue::Single(value.to_owned()));
        if is(keys::PRINCIPAL_ARN) {
            text(&caller.principal_arn)
        } else if is(keys::PRINCIPAL_ACCOUNT) || is(keys::CALLER_ACCOUNT) {
            text(&caller.account)
        } else if is(keys::VIA_SERVICE) {
            caller.via_service.as_deref().and_then(text)
        } else if is(keys::SOURCE_IP) {
            caller
                .source_ip
                .map(|ip| ContextValue::Single(ip.to_string()))
        } else if is(keys::SECURE_TRANSPORT) {
            text(if caller.secure_transport {
                "true"
            } else {
                "false"
            })
        } else if is(keys::CURRENT_TIME) {
            let seconds = self.current_time?;
            let time = UNIX_EPOCH + std::time::Duration::from_secs(seconds);
            Some(ContextValue::Single(
                humantime::format_rfc3339_seconds(time).to_string(),
            ))
        } else if is(keys::EPOCH_TIME) {
            Some(ContextValue::Single(self.current_time?.to_string()))
        } else if is(keys::ENCRYPTION_CONTEXT_KEYS) {
            let pairs = self.encryption_context.as_ref()?;
            Some(ContextValue::Multi(pairs.keys().cloned().collect()))
        } else if let Some(name) = strip_prefix_ignoring_case(key, keys::ENCRYPTION_CONTEXT_PREFIX)
        {
            last_named(self.encryption_context.as_ref()?, name).and_then(text)
        } else if let Some(name) = strip_prefix_ignoring_case(key, keys::PRINCIPAL_TAG_PREFIX) {
            last_named(&caller.tags, name).and_then(text)
        } else {
            None
        }
    }
}

/// `text` without `prefix`, which it starts with in any ASCII case.
fn strip_prefix_ignoring_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// The value of the last entry of `map` whose key is `name` in any ASCII case (the one a
/// case-insensitive condition key sees when several differ only in case).
fn last_named<'m>(map: &'m BTreeMap<String, String>, name: &str) -> Option<&'m str> {
    map.iter()
        .rev()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_kinds_come_from_the_arn() {
        let cases = [
            ("arn:aws:iam::111122223333:root", PrincipalKind::Root),
            ("arn:aws:iam::111122223333:user/app", PrincipalKind::User),
            ("arn:aws:iam::111122223333:role/dev", PrincipalKind::Role),
            (
                "arn:aws:sts::111122223333:assumed-role/dev/session",
                PrincipalKind::AssumedRole {
                    role_arn: "arn:aws:iam::111122223333:role/dev".to_owned(),
                },
            ),
            (
                "arn:aws:sts::111122223333:assumed-role/dev",
                PrincipalKind::Other,
            ),
            ("111122223333", PrincipalKind::Other),
        ];
        for (arn, kind) in cases {
            assert_eq!(principal_kind(arn), kind, "{arn}");
        }
    }

    #[test]
    fn helpers_fill_the_documented_keys_case_insensitively() {
        let caller = CallerIdentity::new("arn:aws:iam::111122223333:user/app", "111122223333")
            .with_tags(BTreeMap::from([("Team".to_owned(), "blue".to_owned())]))
            .with_via_service(Some("gateway.example".to_owned()))
            .with_transport(Some("10.1.2.3".parse().unwrap()), true);
        let context = RequestContext::new("kms:Encrypt", "arn:k", caller)
            .with_encryption_context(&BTreeMap::from([("Dept".to_owned(), "IT".to_owned())]))
            .with_current_time(UNIX_EPOCH + std::time::Duration::from_secs(86_400));
        let single = |key: &str| match context
            .lookup_lowercase(&key.to_ascii_lowercase())
            .as_deref()
        {
            Some(ContextValue::Single(value)) => Some(value.clone()),
            _ => None,
        };
        assert_eq!(single("kms:CallerAccount").as_deref(), Some("111122223333"));
        assert_eq!(single("AWS:PRINCIPALTAG/team").as_deref(), Some("blue"));
        assert_eq!(single("kms:ViaService").as_deref(), Some("gateway.example"));
        assert_eq!(single("aws:SourceIp").as_deref(), Some("10.1.2.3"));
        assert_eq!(single("aws:SecureTransport").as_deref(), Some("true"));
        assert_eq!(single("kms:EncryptionContext:dept").as_deref(), Some("IT"));
        assert_eq!(
            single("aws:CurrentTime").as_deref(),
            Some("1970-01-02T00:00:00Z")
        );
        assert_eq!(
            context
                .lookup_lowercase("kms:encryptioncontextkeys")
                .as_deref(),
            Some(&ContextValue::Multi(vec!["Dept".to_owned()]))
        );
        assert_eq!(context.operation(), "Encrypt");
    }

    #[test]
    fn a_name_set_twice_in_different_cases_holds_the_last_value() {
        let caller = CallerIdentity::new("arn:aws:iam::111122223333:user/app", "111122223333");
        let pairs = BTreeMap::from([
            ("Dept".to_owned(), "IT".to_owned()),
            ("dept".to_owned(), "HR".to_owned()),
        ]);
        let mut context =
            RequestContext::new("kms:Encrypt", "arn:k", caller).with_encryption_context(&pairs);
        context.set(keys::KEY_SPEC, "RSA_2048");
        context.set("KMS:KEYSPEC", "SYMMETRIC_DEFAULT");
        let single = |key: &str| match context.lookup_lowercase(key).as_deref() {
            Some(ContextValue::Single(value)) => Some(value.clone()),
            _ => None,
        };
        assert_eq!(single("kms:encryptioncontext:dept").as_deref(), Some("HR"));
        assert_eq!(single("kms:keyspec").as_deref(), Some("SYMMETRIC_DEFAULT"));
        let names = context
            .keys
            .iter()
            .map(|(name, _)| name.to_ascii_lowercase());
        let distinct: BTreeSet<String> = names.clone().collect();
        assert_eq!(distinct.len(), names.count(), "each name once");
    }
}
