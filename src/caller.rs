//! The caller of a key store operation: the account and region the call is scoped to and
//! who is calling, as the audit trail records it.

use crate::ids::Scope;

/// Who is calling: the account and region the call is scoped to, and who they are (for the
/// audit trail).
#[derive(Debug, Clone)]
pub struct Caller {
    pub scope: Scope,
    /// The principal's ARN.
    pub principal: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// The request id the caller was given (`x-amzn-RequestId`), recorded as the audit
    /// event's `requestID`; `None` gives each audit event a fresh one.
    pub request_id: Option<String>,
    /// Whether the request came over TLS (`aws:SecureTransport`); false in-process.
    pub secure_transport: bool,
}

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
        }
    }
}
