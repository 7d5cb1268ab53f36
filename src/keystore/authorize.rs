//! The facade prologue of every operation on a key: resolve the key the request names,
//! authorize the call against the key's policy, and check the key's state, in that order
//! (AWS answers AccessDeniedException before any state error).
//!
//! This module owns [`Access`] (what a call asks of a key: its operation, policy action and
//! condition keys) and the one place where the key store asks the [`crate::policy`]
//! evaluator. It never changes a key; a refusal is an `AccessDeniedException` that the
//! audited call records like any other failure.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Caller, KeyStore};
use crate::audit::event::Call;
use crate::caller::PrincipalProfile;
use crate::error::KmsError;
use crate::ids::Scope;
use crate::keys::records::KeyRecord;
use crate::keys::state::{self, Operation};
use crate::policy::{
    CallerIdentity, Decision, DenialReason, Policies, RequestContext, evaluate,
    evaluate_without_key, keys,
};

/// The request's own condition keys, added to the caller's and the key's.
type Conditions<'a> = Box<dyn FnOnce(RequestContext) -> RequestContext + 'a>;

/// What a call asks of the key it names: the operation (whose state-table row decides the
/// key's state), the policy action, and the request's condition keys.
pub(super) struct Access<'a> {
    operation: Operation,
    action: &'static str,
    conditions: Conditions<'a>,
    /// The request's `GrantTokens`, checked before the call is decided.
    grant_tokens: &'a [String],
}

impl<'a> Access<'a> {
    /// `operation` under its own policy action (`kms:Encrypt`), with no request condition
    /// keys beyond the caller's and the key's.
    pub(super) fn of(operation: Operation) -> Access<'a> {
        Access {
            operation,
            action: operation.policy_action(),
            conditions: Box::new(|request| request),
            grant_tokens: &[],
        }
    }

    /// The operation this access is for.
    pub(super) fn operation(&self) -> Operation {
        self.operation
    }

    /// The request's grant tokens (each must be one this store issued).
    pub(super) fn with_grant_tokens(mut self, tokens: &'a [String]) -> Access<'a> {
        self.grant_tokens = tokens;
        self
    }

    /// The same operation authorized as `action` (ReEncrypt: `kms:ReEncryptFrom` on the
    /// source key, `kms:ReEncryptTo` on the destination key).
    pub(super) fn under_action(mut self, action: &'static str) -> Access<'a> {
        self.action = action;
        self
    }

    /// Adds the request's condition keys (`kms:EncryptionContext:*`, ...).
    pub(super) fn with(
        mut self,
        conditions: impl FnOnce(RequestContext) -> RequestContext + 'a,
    ) -> Access<'a> {
        let before = std::mem::replace(&mut self.conditions, Box::new(|request| request));
        self.conditions = Box::new(move |request| conditions(before(request)));
        self
    }
}

/// Whether a parameter may name the key through an alias.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Naming {
    /// Key id, key ARN, alias name or alias ARN.
    AnyReference,
    /// Key id or key ARN only.
    KeyIdOrArn,
}

impl KeyStore {
    /// The prologue of an operation on one key: resolves `input` (the wire parameter
    /// `param`) in the caller's scope, authorizes `access` on the key, then checks the
    /// key's state against the effects table.
    pub(super) fn key_for(
        &self,
        caller: &Caller,
        call: &mut Call,
        access: Access<'_>,
        param: &str,
        input: &str,
        naming: Naming,
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let (key, alias) =
            self.resolve_reference(caller, call, access.operation, (param, input), naming)?;
        let operation = access.operation;
        self.authorize(caller, &key, alias.as_deref(), access)?;
        super::import::check_origin_allows(operation, &key)?;
        state::check(operation, key.state, key.arn_display())?;
        Ok(key)
    }

    /// Decides whether the caller may make the call `access` describes on `key`, named
    /// through `alias` when the request used one (`kms:RequestAlias`).
    ///
    /// The key's grants are read only when the policies alone refused without an explicit
    /// deny (which no grant overrides), so calls allowed by policy never scan them.
    pub(super) fn authorize(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        alias: Option<&str>,
        access: Access<'_>,
    ) -> Result<(), KmsError> {
        KeyStore::check_grant_tokens(access.grant_tokens)?;
        let key_policy = key.key_policy()?;
        let arn = key.arn();
        let identity = caller.profile.policies.as_deref();
        // Only the condition keys some deciding policy reads are filled: for AWS's default
        // key policy, none.
        let mut names = key_policy.condition_keys().clone();
        for document in identity.unwrap_or_default() {
            if !document.condition_keys().is_subset(&names) {
                names = Arc::new(names.union(document.condition_keys()).cloned().collect());
            }
        }
        let mut request =
            RequestContext::naming_only(access.action, arn, caller_identity(caller), names)
                .with_current_time(self.system_time())
                .with_resource_tags(&key.tags);
        request.set(keys::KEY_SPEC, &key.key_spec);
        request.set(keys::KEY_USAGE, &key.key_usage);
        request.set(keys::KEY_ORIGIN, &key.origin);
        request.set(
            keys::MULTI_REGION,
            if key.multi_region.is_some() {
                "true"
            } else {
                "false"
            },
        );
        if key.multi_region.is_some() {
            request.set(
                keys::MULTI_REGION_KEY_TYPE,
                if key.is_primary() {
                    "PRIMARY"
                } else {
                    "REPLICA"
                },
            );
        }
        if let Some(alias) = alias {
            request.set(keys::REQUEST_ALIAS, alias);
        }
        if key.policy_names_resource_aliases()? || caller.profile.names_resource_aliases {
            let owner = Scope::new(&key.region, &key.account_id)?;
            let aliases = self
                .aliases_of(&owner, &key.key_id)?
                .into_iter()
                .map(|alias| alias.name)
                .collect();
            request.set_multi(keys::RESOURCE_ALIASES, aliases);
        }
        let request = (access.conditions)(request);
        let mut policies = Policies {
            key_policy: &key_policy,
            key_account: &key.account_id,
            identity,
            grants: &[],
        };
        let denial = match evaluate(&policies, &request) {
            Decision::Allow(_) => return Ok(()),
            Decision::Deny(denial) => denial,
        };
        if matches!(
            denial.reason,
            DenialReason::ExplicitDenyInKeyPolicy | DenialReason::ExplicitDenyInIdentityPolicy
        ) {
            return Err(denial.to_error());
        }
        let grants = self.grants_for_evaluation(key, request.caller())?;
        if grants.is_empty() {
            return Err(denial.to_error());
        }
        policies.grants = &grants;
        evaluate(&policies, &request).into_result().map(drop)
    }

    /// Decides an operation on no key (CreateKey, ListKeys, ListAliases, GenerateRandom,
    /// the custom key store operations) by the caller's identity policies alone, as AWS
    /// does, with `*` as the resource.
    pub(super) fn authorize_without_key(
        &self,
        caller: &Caller,
        operation: Operation,
        conditions: impl FnOnce(RequestContext) -> RequestContext,
    ) -> Result<(), KmsError> {
        let request = RequestContext::new(operation.policy_action(), "*", caller_identity(caller))
            .with_current_time(self.system_time());
        let request = conditions(request);
        evaluate_without_key(
            caller.profile.policies.as_deref(),
            caller.scope.account_id(),
            &request,
        )
        .into_result()
        .map(drop)
    }

    /// Decides CreateAlias, UpdateAlias or DeleteAlias on the alias itself: AWS asks for the
    /// permission on the alias ARN in an identity policy, and on the key in its key policy
    /// ([`KeyStore::authorize`] decides that side).
    pub(super) fn authorize_alias(
        &self,
        caller: &Caller,
        operation: Operation,
        alias_arn: &str,
    ) -> Result<(), KmsError> {
        let request = RequestContext::new(
            operation.policy_action(),
            alias_arn,
            caller_identity(caller),
        )
        .with_current_time(self.system_time());
        evaluate_without_key(
            caller.profile.policies.as_deref(),
            caller.scope.account_id(),
            &request,
        )
        .into_result()
        .map(drop)
    }

    /// The request time from the store's clock, for `aws:CurrentTime`.
    pub(super) fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.now()).unwrap_or(0))
    }
}

/// The caller as the policy evaluator sees it.
///
/// Building one copies the caller's principal, account, tags and via service, which is a
/// good part of authorizing a call on a key whose policy reads none of them. A thread keeps
/// the last identity it built and hands it out again while the same caller calls (the same
/// principal, account, address, transport and credential profile), as a service embedding
/// the store or a client's connection does call after call. The kept profile is held, so
/// another profile cannot take its address and pass for it.
pub(super) fn caller_identity(caller: &Caller) -> Arc<CallerIdentity> {
    struct Built {
        principal: String,
        account: String,
        source_ip: Option<String>,
        secure_transport: bool,
        profile: Arc<PrincipalProfile>,
        identity: Arc<CallerIdentity>,
    }
    impl Built {
        fn is_for(&self, caller: &Caller) -> bool {
            Arc::ptr_eq(&self.profile, &caller.profile)
                && self.secure_transport == caller.secure_transport
                && self.principal == caller.principal
                && self.account == caller.scope.account_id()
                && self.source_ip == caller.source_ip
        }
    }
    thread_local! {
        static LAST: RefCell<Option<Built>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some(built) = last.as_ref().filter(|built| built.is_for(caller)) {
            return Arc::clone(&built.identity);
        }
        let identity = Arc::new(build_identity(caller));
        *last = Some(Built {
            principal: caller.principal.clone(),
            account: caller.scope.account_id().to_owned(),
            source_ip: caller.source_ip.clone(),
            secure_transport: caller.secure_transport,
            profile: Arc::clone(&caller.profile),
            identity: Arc::clone(&identity),
        });
        identity
    })
}

/// The caller's identity built afresh, which [`caller_identity`] keeps.
fn build_identity(caller: &Caller) -> CallerIdentity {
    let source_ip = caller
        .source_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    CallerIdentity::new(&caller.principal, caller.scope.account_id())
        .with_transport(source_ip, caller.secure_transport)
        .with_tags(caller.profile.tags.clone())
        .with_via_service(caller.profile.via_service.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_hands_out_the_identity_it_built_only_to_the_same_caller() {
        let scope = Scope::new("us-east-1", "111122223333").unwrap();
        let root = Caller::local(&scope);
        let tagged = |team: &str| {
            Arc::new(PrincipalProfile {
                tags: [("team".to_owned(), team.to_owned())].into(),
                ..PrincipalProfile::default()
            })
        };
        let callers = [
            root.clone(),
            Caller {
                principal: "arn:aws:iam::111122223333:user/alice".to_owned(),
                ..root.clone()
            },
            Caller {
                source_ip: Some("192.0.2.1".to_owned()),
                ..root.clone()
            },
            Caller {
                source_ip: Some("192.0.2.2".to_owned()),
                ..root.clone()
            },
            Caller {
                secure_transport: true,
                ..root.clone()
            },
            Caller {
                profile: tagged("blue"),
                ..root.clone()
            },
            Caller {
                profile: tagged("red"),
                ..root.clone()
            },
            Caller {
                scope: Scope::new("us-east-1", "444455556666").unwrap(),
                ..root.clone()
            },
        ];
        // Each caller after every other, and each twice in a row.
        for caller in callers.iter().chain(&callers).chain(callers.iter().rev()) {
            for _ in 0..2 {
                assert_eq!(
                    *caller_identity(caller),
                    build_identity(caller),
                    "{caller:?}"
                );
            }
        }
        let first = caller_identity(&root);
        assert!(Arc::ptr_eq(&first, &caller_identity(&root.clone())));
        // A profile equal to the last one but another credential's is not taken for it.
        let blue = caller_identity(&callers[5]);
        let other_blue = Caller {
            profile: tagged("blue"),
            ..root.clone()
        };
        assert!(!Arc::ptr_eq(&blue, &caller_identity(&other_blue)));
    }
}
