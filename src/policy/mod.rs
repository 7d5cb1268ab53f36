//! Who may use which key: key policies, identity policies, grants, and their evaluation
//! as AWS KMS does it.
//!
//! This module is pure: no I/O, no clock (the wiring passes the time in through
//! [`RequestContext::with_current_time`]), no store, no HSM. It never sees key material
//! or plaintext, and its errors and `Debug` output hold only policy text, ARNs and
//! condition values, which AWS also records in CloudTrail.
//!
//! The parts, one concept per module:
//! - [`pattern`]: `*`/`?` wildcards, compiled once;
//! - [`document`]: the parsed model (statements, principals, actions, resources);
//! - [`parse`]: JSON to a document, with AWS's validation and messages;
//! - [`condition`]: condition operators and AWS's evaluation rules;
//! - [`context`]: the request context and the condition keys hsm-kms fills;
//! - [`mod@evaluate`]: the decision and the AccessDeniedException messages;
//! - [`key_policy`]: the default key policy and the lockout safety check;
//! - [`grant`]: grants, their constraints, and CreateGrant validation.
//!
//! # How the request path uses it
//!
//! ```
//! use std::sync::Arc;
//! use std::time::SystemTime;
//! use hsm_kms::policy::{
//!     CallerIdentity, Policies, RequestContext, default_key_policy, evaluate,
//!     parse_key_policy,
//! };
//!
//! // Once per key revision (CreateKey, PutKeyPolicy, or loading the key): parse and
//! // cache. The text is what GetKeyPolicy returns.
//! let text = default_key_policy("111122223333");
//! let key_policy = Arc::new(parse_key_policy(&text)?);
//!
//! // Per call: who calls, what, on which key, with which condition keys.
//! let caller = CallerIdentity::new("arn:aws:iam::111122223333:user/app", "111122223333");
//! let key_arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
//! let request = RequestContext::new("kms:Encrypt", key_arn, caller)
//!     .with_current_time(SystemTime::now());
//! let policies = Policies {
//!     key_policy: &key_policy,
//!     key_account: "111122223333",
//!     identity: None, // a credential without identity policies
//!     grants: &[],
//! };
//! // Allowed: the default policy delegates to the account, and a credential without
//! // identity policies counts as allowed by identity in its own account.
//! evaluate(&policies, &request).into_result()?;
//! # Ok::<(), hsm_kms::error::KmsError>(())
//! ```
//!
//! The wiring's duties, which this module cannot check:
//! - the action is `kms:` + the operation's AWS name, the resource the key's ARN (also
//!   when the request named an alias: fill `kms:RequestAlias` then); ReEncrypt is two
//!   decisions, `kms:ReEncryptFrom` on the source key and `kms:ReEncryptTo` on the
//!   destination key, as in AWS;
//! - operations on no key (CreateKey, ListKeys, ListAliases, the custom key store
//!   operations) use [`evaluate_without_key`] with the resource `*`: AWS authorizes them
//!   by identity policies alone;
//! - fill the condition keys the operation has (see [`context`]): the encryption context
//!   of cryptographic operations, `kms:EncryptionAlgorithm`, the key's properties
//!   (`kms:KeySpec`, `kms:KeyUsage`, `kms:KeyOrigin`, `kms:ResourceAliases`,
//!   `aws:ResourceTag/<k>`), the CreateGrant parameters, and so on;
//! - pass `identity: Some(..)` for a credential with identity policies (parsed once, at
//!   configuration load, with [`parse_identity_policy`]) and `None` otherwise;
//! - pass the key's grants whose grantee is the caller, plus those named by the request's
//!   grant tokens; grants of other keys must never be passed;
//! - run [`check_lockout`] in CreateKey and PutKeyPolicy unless
//!   `BypassPolicyLockoutSafetyCheck` is true.

pub mod condition;
pub mod context;
pub mod document;
pub mod evaluate;
pub mod grant;
pub mod key_policy;
pub mod parse;
pub mod pattern;

#[cfg(test)]
mod tests;

pub use context::{CallerIdentity, ContextValue, RequestContext, keys};
pub use document::{Effect, PolicyDocument, PolicyKind};
pub use evaluate::{
    Allowance, Decision, Denial, DenialReason, Policies, evaluate, evaluate_without_key,
};
pub use grant::{Grant, GrantConstraints, GrantOperation, GrantRequest};
pub use key_policy::{
    ManagedKeyAccess, POLICY_NAME, check_lockout, default_key_policy, managed_key_policy,
};
pub use parse::{parse_identity_policy, parse_key_policy, parse_policy};
