//! What only key policies have: AWS's default key policy and the policy lockout safety
//! check.
//!
//! This module owns [`default_key_policy`] (the text CreateKey stores when the request
//! has no `Policy`, as AWS writes it) and [`check_lockout`] (CreateKey and PutKeyPolicy
//! run it unless `BypassPolicyLockoutSafetyCheck` is true). Every key has exactly one
//! policy, named [`POLICY_NAME`].

use std::sync::Arc;

use serde_json::json;

use super::context::RequestContext;
use super::document::PolicyDocument;
use super::evaluate::{Policies, evaluate};
use crate::error::KmsError;

/// The name of the one policy of every key (`ListKeyPolicies`, `GetKeyPolicy`).
pub const POLICY_NAME: &str = "default";

/// The lockout check's refusal, AWS's message.
pub const LOCKOUT_MESSAGE: &str =
    "The new key policy will not allow you to update the key policy in the future.";

/// AWS's default key policy for a key of `account`: one statement, "Enable IAM User
/// Permissions", allowing `kms:*` to the account root, which delegates to the identity
/// policies of the account's principals.
pub fn default_key_policy(account: &str) -> String {
    let policy = json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    });
    serde_json::to_string_pretty(&policy).unwrap_or_default()
}

/// The policy lockout safety check: refuses `new_policy` unless, with it in place, the
/// caller of `request` (with its identity policies) could call `kms:PutKeyPolicy` on the
/// key. Grants are not considered: no grant can allow PutKeyPolicy. The refusal is
/// `MalformedPolicyDocumentException` with AWS's message.
pub fn check_lockout(
    new_policy: &PolicyDocument,
    key_account: &str,
    identity: Option<&[Arc<PolicyDocument>]>,
    request: &RequestContext,
) -> Result<(), KmsError> {
    let policies = Policies {
        key_policy: new_policy,
        key_account,
        identity,
        grants: &[],
    };
    if evaluate(&policies, &request.for_action("kms:PutKeyPolicy")).is_allowed() {
        Ok(())
    } else {
        Err(KmsError::MalformedPolicyDocument(
            LOCKOUT_MESSAGE.to_owned(),
        ))
    }
}
