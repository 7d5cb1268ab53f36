//! The caller of a key store operation: the account and region the call is scoped to and
//! who is calling, as the audit trail records it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::ids::Scope;
use crate::policy::PolicyDocument;

/// Who is calling: the account and region the call is scoped to, and who they are (for the
/// audit trail).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account and region the call acts in.
    pub scope: Scope,
    /// The principal's ARN.
    pub principal: String,
    /// The client's address, for the audit trail and `aws:SourceIp`.
    pub source_ip: Option<String>,
    /// The client's `User-Agent`, for the audit trail.
    pub user_agent: Option<String>,
    /// The request id the caller was given (`x-amzn-RequestId`), recorded as the audit
    /// event's `requestID`; `None` gives each audit event a fresh one.
    pub request_id: Option<String>,
    /// Whether the request came over TLS (`aws:SecureTransport`); false in-process.
    pub secure_transport: bool,
    /// What the caller's credential declares: identity policies, tags, via service.
    pub profile: Arc<PrincipalProfile>,
}

/// What a credential declares about its principal beyond its ARN, for authorization.
#[derive(Debug, Default, PartialEq)]
pub struct PrincipalProfile {
    /// The identity policies attached to the credential, parsed once at start-up; `None`
    /// for a credential without any, which is allowed by identity in its own account (as
    /// before key policies existed), so only key policies restrict it.
    pub policies: Option<Vec<Arc<PolicyDocument>>>,
    /// The principal's tags (`aws:PrincipalTag/<k>`).
    pub tags: BTreeMap<String, String>,
    /// The service the credential calls on behalf of others (`kms:ViaService`), e.g. a
    /// gateway or storage service; `None` for a caller acting for itself.
    pub via_service: Option<String>,
    /// Whether an identity policy names `kms:ResourceAliases`.
    pub names_resource_aliases: bool,
}

impl Eq for PrincipalProfile {}

impl Caller {
    /// The account's root principal calling from this process.
    pub fn local(scope: &Scope) -> Caller {
        Caller {
            principal: format!("arn:aws:iam::{}:root", scope.account_id()),
            scope: scope.clone(),
            source_ip: None,
            user_agent: None,
            request_id: None,
            secure_transport: false,
            profile: Arc::default(),
        }
    }
}
