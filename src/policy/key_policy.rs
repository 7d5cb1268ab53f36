//! What only key policies have: AWS's default key policy, the policy of an AWS managed key,
//! and the policy lockout safety check.
//!
//! This module owns [`default_key_policy`] (the text CreateKey stores when the request
//! has no `Policy`, as AWS writes it), [`managed_key_policy`] (the text an AWS managed key
//! is created with, which no caller can change) and [`check_lockout`] (CreateKey and
//! PutKeyPolicy run it unless `BypassPolicyLockoutSafetyCheck` is true). Every key has
//! exactly one policy, named [`POLICY_NAME`].

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

/// What the policy of one service's AWS managed key says, as AWS words it for that service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagedKeyAccess<'a> {
    /// The policy's `Id`, e.g. `auto-s3-2`.
    pub policy_id: &'a str,
    /// The service as the first statement's `Sid` names it in "Allow access through ...",
    /// e.g. `AWS Lambda`.
    pub service_title: &'a str,
    /// The service as the `Sid` names it in "... authorized to use ...".
    pub service_user_title: &'a str,
    /// The first label of the service's endpoint, which `kms:ViaService` names
    /// (`<via>.<region>.amazonaws.com`): `ec2` for EBS volumes.
    pub via_service: &'a str,
    /// The actions principals of the account may call through the service.
    pub actions: &'a [&'a str],
    /// The actions the account may call directly (`kms:Describe*`, `kms:Get*`, `kms:List*`,
    /// and for some services `kms:RevokeGrant`).
    pub direct_actions: &'a [&'a str],
}

/// The key policy of an AWS managed key of `account` in `region`, as AWS writes it: the
/// account's principals may use the key only through the service
/// (`kms:ViaService` = `<via>.<region>.amazonaws.com` and `kms:CallerAccount` = the
/// account), and the account may read the key's metadata directly.
pub fn managed_key_policy(access: &ManagedKeyAccess<'_>, account: &str, region: &str) -> String {
    let policy = json!({
        "Version": "2012-10-17",
        "Id": access.policy_id,
        "Statement": [
            {
                "Sid": format!(
                    "Allow access through {} for all principals in the account that are authorized to use {}",
                    access.service_title, access.service_user_title
                ),
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": access.actions,
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:CallerAccount": account,
                        "kms:ViaService": format!("{}.{region}.amazonaws.com", access.via_service)
                    }
                }
            },
            {
                "Sid": "Allow direct access to key metadata to the account",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
                "Action": access.direct_actions,
                "Resource": "*"
            }
        ]
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
