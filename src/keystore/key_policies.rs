//! Key policies: GetKeyPolicy, PutKeyPolicy and ListKeyPolicies, and the checks a new
//! policy passes (AWS's validation and the policy lockout safety check) in PutKeyPolicy
//! and CreateKey.
//!
//! Every key has exactly one policy, named `default`; a policy is stored as its text with
//! the key record (what GetKeyPolicy returns) and parsed once per key revision. This module
//! never evaluates a call: that is the prologue's ([`super::authorize`]).

use super::api::*;
use super::authorize::caller_identity;
use super::{Access, Caller, KeyStore, Naming, limit};
use crate::audit::event::Call;
use crate::error::KmsError;
use crate::keys::state::Operation;
use crate::policy::{
    POLICY_NAME, PolicyDocument, RequestContext, check_lockout, keys, parse_key_policy,
};

impl KeyStore {
    /// GetKeyPolicy: the text of the key's policy.
    pub fn get_key_policy(
        &self,
        caller: &Caller,
        request: GetKeyPolicyRequest,
    ) -> Result<GetKeyPolicyResponse, KmsError> {
        let mut call = Call::of(Operation::GetKeyPolicy);
        call.param("keyId", request.key_id.as_str());
        call.param("policyName", policy_name(request.policy_name.as_deref()));
        self.audited(caller, call, |call| {
            let name = check_policy_name(request.policy_name.as_deref())?;
            let key = self.key_for(
                caller,
                call,
                Access::of(Operation::GetKeyPolicy),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            Ok(GetKeyPolicyResponse {
                policy: key.policy_text(),
                policy_name: name.to_owned(),
            })
        })
    }

    /// PutKeyPolicy: replaces the key's policy, after AWS's validation and (unless
    /// bypassed) the lockout safety check.
    pub fn put_key_policy(
        &self,
        caller: &Caller,
        request: PutKeyPolicyRequest,
    ) -> Result<(), KmsError> {
        let bypass = request.bypass_policy_lockout_safety_check == Some(true);
        let mut call = Call::of(Operation::PutKeyPolicy);
        call.param("keyId", request.key_id.as_str())
            .param("policyName", policy_name(request.policy_name.as_deref()))
            .param("policy", request.policy.as_str())
            .param("bypassPolicyLockoutSafetyCheck", bypass);
        self.audited(caller, call, |call| {
            check_policy_name(request.policy_name.as_deref())?;
            let access = Access::of(Operation::PutKeyPolicy).with(move |mut context| {
                context.set(
                    keys::BYPASS_POLICY_LOCKOUT_SAFETY_CHECK,
                    &bypass.to_string(),
                );
                context
            });
            let key = self.key_for(
                caller,
                call,
                access,
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            let policy = parse_key_policy(&request.policy)?;
            if !bypass {
                self.check_lockout(caller, &key.arn(), &key.account_id, &policy)?;
            }
            self.update_key(&key.store_key(), |record, _| {
                record.policy = Some(request.policy);
                Ok(())
            })
        })
    }

    /// ListKeyPolicies: always the one name `default`.
    pub fn list_key_policies(
        &self,
        caller: &Caller,
        request: ListKeyPoliciesRequest,
    ) -> Result<ListKeyPoliciesResponse, KmsError> {
        let mut call = Call::of(Operation::ListKeyPolicies);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            limit(request.limit, 100)?;
            self.key_for(
                caller,
                call,
                Access::of(Operation::ListKeyPolicies),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            let policy_names = match request.marker {
                Some(_) => Vec::new(),
                None => vec![POLICY_NAME.to_owned()],
            };
            Ok(ListKeyPoliciesResponse {
                policy_names,
                truncated: false,
            })
        })
    }

    /// The policy lockout safety check: `policy` on the key `key_arn` of `account` must let
    /// the caller call PutKeyPolicy later (`MalformedPolicyDocumentException` otherwise).
    pub(super) fn check_lockout(
        &self,
        caller: &Caller,
        key_arn: &str,
        account: &str,
        policy: &PolicyDocument,
    ) -> Result<(), KmsError> {
        let request = RequestContext::new("kms:PutKeyPolicy", key_arn, caller_identity(caller))
            .with_current_time(self.system_time());
        check_lockout(
            policy,
            account,
            caller.profile.policies.as_deref(),
            &request,
        )
    }
}

/// The policy name a request names, `default` when it names none.
fn policy_name(name: Option<&str>) -> &str {
    name.unwrap_or(POLICY_NAME)
}

/// Checks `PolicyName`: AWS's constraints (1 to 128 word characters), and only `default`
/// exists (`NotFoundException` for any other name).
fn check_policy_name(name: Option<&str>) -> Result<&str, KmsError> {
    let name = policy_name(name);
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if name.is_empty() || name.len() > 128 || !name.chars().all(word) {
        return Err(KmsError::constraint_violation(
            "policyName",
            Some(name),
            &[
                "Member must have length greater than or equal to 1",
                "Member must have length less than or equal to 128",
                "Member must satisfy regular expression pattern: [\\w]+",
            ],
        ));
    }
    if name != POLICY_NAME {
        return Err(KmsError::NotFound(format!(
            "Policy '{name}' does not exist: every key has the one policy '{POLICY_NAME}'."
        )));
    }
    Ok(name)
}
