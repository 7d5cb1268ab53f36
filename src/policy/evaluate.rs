//! The evaluator: key policy, identity policies and grants to one [`Decision`], as AWS
//! evaluates a KMS request.
//!
//! This module owns the order of evaluation and the AccessDeniedException messages:
//! 1. an explicit `Deny` that applies, in the key policy or in any identity policy of the
//!    caller, refuses the call ("... with an explicit deny in a resource-based policy" /
//!    "... in an identity-based policy"); grants cannot override it;
//! 2. a key policy `Allow` naming the caller directly (its ARN, its role, or `"*"`) allows
//!    a caller of the key's account without identity policies;
//! 3. a key policy `Allow` naming the caller's account (account id or root ARN), or naming
//!    a caller of another account in any form, allows only if an identity policy of the
//!    caller allows the call too;
//! 4. otherwise a grant for the caller that covers the request allows it;
//! 5. otherwise: `"... because no identity-based policy allows the kms:<Action> action"`
//!    when the key policy allowed through the account, else `"... because no
//!    resource-based policy allows the kms:<Action> action"`.
//!
//! Identity policies: `identity: None` is a credential without any, which keeps the
//! behaviour of hsm-kms before policies in its own account: there it counts as allowed by
//! identity; in another account it allows nothing. The root of an account is always
//! allowed by identity (IAM policies do not restrict the root user), but an explicit Deny
//! in policies attached to it still refuses.

use std::sync::Arc;

use super::context::RequestContext;
use super::document::{Effect, PolicyDocument, PrincipalMatch};
use super::grant::Grant;
use crate::error::KmsError;

/// Everything that decides a request on one key, borrowed from the wiring's caches.
#[derive(Debug, Clone, Copy)]
pub struct Policies<'a> {
    /// The key's policy, parsed once per key revision.
    pub key_policy: &'a PolicyDocument,
    /// The account that owns the key.
    pub key_account: &'a str,
    /// The caller's identity policies; `None` for a credential without any.
    pub identity: Option<&'a [Arc<PolicyDocument>]>,
    /// The key's grants that may apply (those of the caller, or named by grant tokens).
    pub grants: &'a [Grant],
}

/// What allowed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowance {
    /// The key policy named the caller (same account).
    KeyPolicy,
    /// The key policy allowed through the account (or across accounts) and an identity
    /// policy (or the implicit identity permission) allowed too.
    KeyPolicyAndIdentity,
    /// A grant allowed it.
    Grant {
        /// The grant that allowed it.
        grant_id: String,
    },
    /// An operation on no key, allowed by identity ([`evaluate_without_key`]).
    Identity,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialReason {
    /// A `Deny` statement of the key policy applied.
    ExplicitDenyInKeyPolicy,
    /// A `Deny` statement of an identity policy applied.
    ExplicitDenyInIdentityPolicy,
    /// No key policy statement allowed the call and no grant did.
    NoKeyPolicyAllows,
    /// The key policy delegated to the caller's account and no identity policy allowed.
    NoIdentityPolicyAllows,
}

/// A refusal, with what AWS's AccessDeniedException message names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Which rule refused.
    pub reason: DenialReason,
    /// The caller.
    pub principal_arn: String,
    /// The action, e.g. `kms:Decrypt`.
    pub action: String,
    /// The resource the request names: the key ARN, or `*` for operations on no key.
    pub resource: String,
}

impl Denial {
    /// AWS's message, e.g. "User: arn:aws:iam::111122223333:user/app is not authorized to
    /// perform: kms:Encrypt on resource: arn:aws:kms:...:key/... because no resource-based
    /// policy allows the kms:Encrypt action".
    pub fn message(&self) -> String {
        let Denial {
            principal_arn,
            action,
            resource,
            ..
        } = self;
        let head = format!(
            "User: {principal_arn} is not authorized to perform: {action} on resource: {resource}"
        );
        match self.reason {
            DenialReason::ExplicitDenyInKeyPolicy => {
                format!("{head} with an explicit deny in a resource-based policy")
            }
            DenialReason::ExplicitDenyInIdentityPolicy => {
                format!("{head} with an explicit deny in an identity-based policy")
            }
            DenialReason::NoKeyPolicyAllows => {
                format!("{head} because no resource-based policy allows the {action} action")
            }
            DenialReason::NoIdentityPolicyAllows => {
                format!("{head} because no identity-based policy allows the {action} action")
            }
        }
    }

    /// The `AccessDeniedException` to answer with.
    pub fn to_error(&self) -> KmsError {
        KmsError::AccessDenied(self.message())
    }
}

/// The outcome of evaluating one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The request may go on, and why.
    Allow(Allowance),
    /// The request is refused, and why.
    Deny(Denial),
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The allowance, or the `AccessDeniedException` of the refusal.
    pub fn into_result(self) -> Result<Allowance, KmsError> {
        match self {
            Decision::Allow(allowance) => Ok(allowance),
            Decision::Deny(denial) => Err(denial.to_error()),
        }
    }
}

/// Decides the request (see the module docs for the order).
pub fn evaluate(policies: &Policies<'_>, request: &RequestContext) -> Decision {
    let deny = |reason| {
        Decision::Deny(Denial {
            reason,
            principal_arn: request.caller().principal_arn().to_owned(),
            action: request.action().to_owned(),
            resource: request.resource().to_owned(),
        })
    };
    let identity_docs = policies.identity.unwrap_or_default();
    if applies(policies.key_policy, Effect::Deny, request).is_some() {
        return deny(DenialReason::ExplicitDenyInKeyPolicy);
    }
    if identity_docs
        .iter()
        .any(|doc| applies(doc, Effect::Deny, request).is_some())
    {
        return deny(DenialReason::ExplicitDenyInIdentityPolicy);
    }
    let caller = request.caller();
    let same_account = caller.account() == policies.key_account;
    let key_allow = applies(policies.key_policy, Effect::Allow, request);
    if key_allow == Some(PrincipalMatch::Direct) && same_account {
        return Decision::Allow(Allowance::KeyPolicy);
    }
    if key_allow.is_some() {
        let identity_allows = caller.is_account_root()
            || match policies.identity {
                None => same_account,
                Some(docs) => docs
                    .iter()
                    .any(|doc| applies(doc, Effect::Allow, request).is_some()),
            };
        if identity_allows {
            return Decision::Allow(Allowance::KeyPolicyAndIdentity);
        }
    }
    if let Some(grant) = policies.grants.iter().find(|grant| grant.allows(request)) {
        return Decision::Allow(Allowance::Grant {
            grant_id: grant.grant_id.clone(),
        });
    }
    if key_allow.is_some() {
        deny(DenialReason::NoIdentityPolicyAllows)
    } else {
        deny(DenialReason::NoKeyPolicyAllows)
    }
}

/// Decides an operation that acts on no key (CreateKey, ListKeys, ListAliases, the custom
/// key store operations, ...), which AWS authorizes by identity policies alone: an
/// explicit Deny refuses, then an Allow (or, for a credential without identity policies,
/// being in `account`, the account the call is made in; or being its root) allows. The
/// request's resource is `*`, as in AWS's message for these operations.
pub fn evaluate_without_key(
    identity: Option<&[Arc<PolicyDocument>]>,
    account: &str,
    request: &RequestContext,
) -> Decision {
    let deny = |reason| {
        Decision::Deny(Denial {
            reason,
            principal_arn: request.caller().principal_arn().to_owned(),
            action: request.action().to_owned(),
            resource: request.resource().to_owned(),
        })
    };
    let docs = identity.unwrap_or_default();
    if docs
        .iter()
        .any(|doc| applies(doc, Effect::Deny, request).is_some())
    {
        return deny(DenialReason::ExplicitDenyInIdentityPolicy);
    }
    let caller = request.caller();
    let in_account = caller.account() == account;
    let allowed = (in_account && (caller.is_account_root() || identity.is_none()))
        || docs
            .iter()
            .any(|doc| applies(doc, Effect::Allow, request).is_some());
    if allowed {
        Decision::Allow(Allowance::Identity)
    } else {
        deny(DenialReason::NoIdentityPolicyAllows)
    }
}

/// The strongest principal match among the statements of `effect` that apply.
fn applies(
    document: &PolicyDocument,
    effect: Effect,
    request: &RequestContext,
) -> Option<PrincipalMatch> {
    let mut best = None;
    for statement in document
        .statements()
        .iter()
        .filter(|s| s.effect() == effect)
    {
        match statement.applies(request) {
            Some(PrincipalMatch::Direct) => return Some(PrincipalMatch::Direct),
            Some(found) => best = Some(found),
            None => {}
        }
    }
    best
}
