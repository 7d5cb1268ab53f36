//! Grants, pure part: the grant model, whether a grant allows a request, who may retire
//! it, and AWS's validation of CreateGrant parameters.
//!
//! This module owns [`Grant`], [`GrantOperation`], [`GrantConstraints`] and
//! [`GrantRequest`] (a validated CreateGrant), and the limits AWS sets on them. Storage,
//! ids and tokens belong to the wiring: a grant here is a value it loads. A grant can only
//! allow, never deny, and needs no identity policy, even for a grantee of another account.
//!
//! AWS's rules, as implemented:
//! - a grant allows an operation when the caller is the grantee (its exact ARN, or a
//!   session of the grantee role) and the operation is in the grant's list;
//! - encryption context constraints (`EncryptionContextEquals`, `EncryptionContextSubset`)
//!   apply to the operations that take an encryption context and are ignored for the
//!   others (`DescribeKey`, `RetireGrant`); keys compare case-insensitively and values
//!   case-sensitively, as AWS documents for grant constraints;
//! - a grant that includes `CreateGrant` lets its grantee create grants with a subset of
//!   its operations and constraints at least as strict as its own;
//! - a grant with constraints may not list an operation that takes no encryption context
//!   besides `DescribeKey`, `RetireGrant` and `CreateGrant` (AWS: encryption context
//!   constraints cannot be used with asymmetric or HMAC operations);
//! - RetireGrant is for the retiring principal, the grantee when the grant includes
//!   `RetireGrant`, and the root of the account that owns the key.
//!
//! Choices where AWS is silent: a grantee or retiring principal must be an account id or
//! an IAM/STS principal ARN (the forms key policies accept) or an AWS service principal
//! (`name.amazonaws.com`); anything else is `ValidationException`
//! `"Invalid principal: <value>"`. The refusals of constraints name the operations.

use std::collections::BTreeMap;

use super::context::{CallerIdentity, PrincipalKind, RequestContext};
use crate::error::KmsError;

/// The most grants one key may have.
pub const MAX_GRANTS_PER_KEY: usize = 50_000;
/// The most grant tokens one request may carry.
pub const MAX_GRANT_TOKENS: usize = 10;
/// The longest grant token.
pub const MAX_GRANT_TOKEN_CHARS: usize = 8_192;
/// The most pairs in one encryption context constraint.
pub const MAX_CONSTRAINT_PAIRS: usize = 8;
/// The longest value in an encryption context constraint.
pub const MAX_CONSTRAINT_VALUE_CHARS: usize = 384;

/// An operation a grant may allow, by its AWS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GrantOperation {
    /// Allows Decrypt with the key.
    Decrypt,
    /// Allows Encrypt with the key.
    Encrypt,
    /// Allows GenerateDataKey with the key.
    GenerateDataKey,
    /// Allows GenerateDataKeyWithoutPlaintext with the key.
    GenerateDataKeyWithoutPlaintext,
    /// `ReEncryptFrom`: ReEncrypt with this key as the source.
    ReEncryptFrom,
    /// `ReEncryptTo`: ReEncrypt with this key as the destination.
    ReEncryptTo,
    /// Allows Sign with the key.
    Sign,
    /// Allows Verify with the key.
    Verify,
    /// Allows GetPublicKey with the key.
    GetPublicKey,
    /// `CreateGrant`: a grant with a subset of this grant's operations and constraints.
    CreateGrant,
    /// Allows RetireGrant with the key.
    RetireGrant,
    /// Allows DescribeKey with the key.
    DescribeKey,
    /// Allows GenerateDataKeyPair with the key.
    GenerateDataKeyPair,
    /// Allows GenerateDataKeyPairWithoutPlaintext with the key.
    GenerateDataKeyPairWithoutPlaintext,
    /// Allows GenerateMac with the key.
    GenerateMac,
    /// Allows VerifyMac with the key.
    VerifyMac,
    /// Allows DeriveSharedSecret with the key.
    DeriveSharedSecret,
}

impl GrantOperation {
    /// Every grant operation, in AWS's enum order.
    pub const ALL: [GrantOperation; 17] = [
        GrantOperation::Decrypt,
        GrantOperation::Encrypt,
        GrantOperation::GenerateDataKey,
        GrantOperation::GenerateDataKeyWithoutPlaintext,
        GrantOperation::ReEncryptFrom,
        GrantOperation::ReEncryptTo,
        GrantOperation::Sign,
        GrantOperation::Verify,
        GrantOperation::GetPublicKey,
        GrantOperation::CreateGrant,
        GrantOperation::RetireGrant,
        GrantOperation::DescribeKey,
        GrantOperation::GenerateDataKeyPair,
        GrantOperation::GenerateDataKeyPairWithoutPlaintext,
        GrantOperation::GenerateMac,
        GrantOperation::VerifyMac,
        GrantOperation::DeriveSharedSecret,
    ];

    /// The AWS name, e.g. `GenerateDataKey`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantOperation::Decrypt => "Decrypt",
            GrantOperation::Encrypt => "Encrypt",
            GrantOperation::GenerateDataKey => "GenerateDataKey",
            GrantOperation::GenerateDataKeyWithoutPlaintext => "GenerateDataKeyWithoutPlaintext",
            GrantOperation::ReEncryptFrom => "ReEncryptFrom",
            GrantOperation::ReEncryptTo => "ReEncryptTo",
            GrantOperation::Sign => "Sign",
            GrantOperation::Verify => "Verify",
            GrantOperation::GetPublicKey => "GetPublicKey",
            GrantOperation::CreateGrant => "CreateGrant",
            GrantOperation::RetireGrant => "RetireGrant",
            GrantOperation::DescribeKey => "DescribeKey",
            GrantOperation::GenerateDataKeyPair => "GenerateDataKeyPair",
            GrantOperation::GenerateDataKeyPairWithoutPlaintext => {
                "GenerateDataKeyPairWithoutPlaintext"
            }
            GrantOperation::GenerateMac => "GenerateMac",
            GrantOperation::VerifyMac => "VerifyMac",
            GrantOperation::DeriveSharedSecret => "DeriveSharedSecret",
        }
    }

    /// The operation of an AWS name (exact case, as AWS's enum).
    pub fn parse(name: &str) -> Option<GrantOperation> {
        GrantOperation::ALL
            .into_iter()
            .find(|operation| operation.as_str() == name)
    }

    /// Whether the operation takes an encryption context, so that constraints apply.
    pub fn takes_encryption_context(self) -> bool {
        matches!(
            self,
            GrantOperation::Decrypt
                | GrantOperation::Encrypt
                | GrantOperation::GenerateDataKey
                | GrantOperation::GenerateDataKeyWithoutPlaintext
                | GrantOperation::ReEncryptFrom
                | GrantOperation::ReEncryptTo
                | GrantOperation::GenerateDataKeyPair
                | GrantOperation::GenerateDataKeyPairWithoutPlaintext
        )
    }

    /// Whether a grant with constraints may list the operation (the constraint is applied
    /// to it, or ignored as AWS ignores it for DescribeKey and RetireGrant).
    fn allowed_with_constraints(self) -> bool {
        self.takes_encryption_context()
            || matches!(
                self,
                GrantOperation::DescribeKey
                    | GrantOperation::RetireGrant
                    | GrantOperation::CreateGrant
            )
    }
}

/// A grant's encryption context constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantConstraints {
    /// The request's context must be exactly these pairs.
    pub encryption_context_equals: Option<BTreeMap<String, String>>,
    /// The request's context must include these pairs.
    pub encryption_context_subset: Option<BTreeMap<String, String>>,
}

impl GrantConstraints {
    /// Whether a request's encryption context satisfies the constraints.
    pub fn allow(&self, context: &BTreeMap<String, String>) -> bool {
        let equals_ok = self
            .encryption_context_equals
            .as_ref()
            .is_none_or(|pairs| pairs.len() == context.len() && includes(context, pairs));
        let subset_ok = self
            .encryption_context_subset
            .as_ref()
            .is_none_or(|pairs| includes(context, pairs));
        equals_ok && subset_ok
    }

    /// Whether `child` is at least as strict as `self`: every context `child` allows,
    /// `self` allows too.
    pub fn at_least_as_strict(&self, child: Option<&GrantConstraints>) -> bool {
        let Some(child) = child else {
            return self.is_empty();
        };
        let equals_ok = match (
            &self.encryption_context_equals,
            &child.encryption_context_equals,
        ) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine.len() == theirs.len() && includes(theirs, mine),
            (Some(_), None) => false,
        };
        let subset_ok = match &self.encryption_context_subset {
            None => true,
            Some(mine) => [
                &child.encryption_context_equals,
                &child.encryption_context_subset,
            ]
            .into_iter()
            .flatten()
            .any(|theirs| includes(theirs, mine)),
        };
        equals_ok && subset_ok
    }

    fn is_empty(&self) -> bool {
        self.encryption_context_equals.is_none() && self.encryption_context_subset.is_none()
    }
}

/// Whether `context` holds every pair of `required` (keys case-insensitive, values exact).
fn includes(context: &BTreeMap<String, String>, required: &BTreeMap<String, String>) -> bool {
    required.iter().all(|(key, value)| {
        context
            .iter()
            .any(|(have_key, have_value)| have_key.eq_ignore_ascii_case(key) && have_value == value)
    })
}

/// The validated parameters of a CreateGrant request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    /// The principal the grant allows, as an ARN.
    pub grantee_principal: String,
    /// The principal that may also retire the grant, as an ARN.
    pub retiring_principal: Option<String>,
    /// Sorted and without duplicates.
    pub operations: Vec<GrantOperation>,
    /// Encryption context the grant's calls must have.
    pub constraints: Option<GrantConstraints>,
    /// A name that makes retrying CreateGrant idempotent.
    pub name: Option<String>,
}

impl GrantRequest {
    /// Validates CreateGrant's parameters as AWS does (see the module docs); errors are
    /// `ValidationException`s.
    pub fn validate(
        grantee_principal: &str,
        retiring_principal: Option<&str>,
        operations: &[String],
        constraints: Option<GrantConstraints>,
        name: Option<&str>,
    ) -> Result<GrantRequest, KmsError> {
        check_principal("granteePrincipal", grantee_principal)?;
        if let Some(retiring) = retiring_principal {
            check_principal("retiringPrincipal", retiring)?;
        }
        let mut parsed = operations
            .iter()
            .map(|name| GrantOperation::parse(name))
            .collect::<Option<Vec<_>>>()
            .filter(|parsed| !parsed.is_empty())
            .ok_or_else(|| {
                let names: Vec<&str> = GrantOperation::ALL.iter().map(|op| op.as_str()).collect();
                KmsError::constraint_violation(
                    "operations",
                    Some(&format!("[{}]", operations.join(", "))),
                    &[&format!(
                        "Member must satisfy constraint: [Member must satisfy enum value set: [{}]]",
                        names.join(", ")
                    )],
                )
            })?;
        parsed.sort();
        parsed.dedup();
        let constraints = constraints.filter(|c| !c.is_empty());
        if let Some(constraints) = &constraints {
            check_constraints(constraints, &parsed)?;
        }
        if let Some(name) = name {
            let valid = !name.is_empty()
                && name.chars().count() <= 256
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b));
            if !valid {
                return Err(KmsError::constraint_violation(
                    "name",
                    Some(name),
                    &[
                        "Member must have length less than or equal to 256",
                        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
                    ],
                ));
            }
        }
        Ok(GrantRequest {
            grantee_principal: grantee_principal.to_owned(),
            retiring_principal: retiring_principal.map(str::to_owned),
            operations: parsed,
            constraints,
            name: name.map(str::to_owned),
        })
    }
}

/// Checks a principal parameter (grantee or retiring principal): AWS's pattern, then one of
/// the forms the module docs list.
pub fn check_principal(param: &str, principal: &str) -> Result<(), KmsError> {
    let pattern_ok = !principal.is_empty()
        && principal.chars().count() <= 256
        && principal
            .chars()
            .all(|c| c.is_alphanumeric() || "_+=,.@:/-".contains(c));
    if !pattern_ok {
        return Err(KmsError::constraint_violation(
            param,
            Some(principal),
            &[
                "Member must have length less than or equal to 256",
                "Member must satisfy regular expression pattern: ^[\\w+=,.@:/-]+$",
            ],
        ));
    }
    let service = principal.ends_with(".amazonaws.com");
    let aws = super::parse::parse_aws_principal(principal)
        .is_ok_and(|entry| entry != super::document::PrincipalEntry::Everyone);
    if service || aws {
        Ok(())
    } else {
        Err(KmsError::Validation(format!(
            "Invalid principal: {principal}"
        )))
    }
}

fn check_constraints(
    constraints: &GrantConstraints,
    operations: &[GrantOperation],
) -> Result<(), KmsError> {
    for (param, pairs) in [
        (
            "constraints.encryptionContextEquals",
            &constraints.encryption_context_equals,
        ),
        (
            "constraints.encryptionContextSubset",
            &constraints.encryption_context_subset,
        ),
    ] {
        let Some(pairs) = pairs else { continue };
        if pairs.len() > MAX_CONSTRAINT_PAIRS {
            return Err(KmsError::constraint_violation(
                param,
                None,
                &["Member must have length less than or equal to 8"],
            ));
        }
        if pairs
            .values()
            .any(|value| value.chars().count() > MAX_CONSTRAINT_VALUE_CHARS)
        {
            return Err(KmsError::constraint_violation(
                param,
                None,
                &["Map value must have length less than or equal to 384"],
            ));
        }
    }
    let refused: Vec<&str> = operations
        .iter()
        .filter(|op| !op.allowed_with_constraints())
        .map(|op| op.as_str())
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(KmsError::Validation(format!(
            "Encryption context grant constraints cannot be used with the operations: {}.",
            refused.join(", ")
        )))
    }
}

/// Checks the `GrantTokens` parameter: at most 10 tokens of 1 to 8,192 characters.
pub fn validate_grant_tokens(tokens: &[String]) -> Result<(), KmsError> {
    if tokens.len() > MAX_GRANT_TOKENS {
        return Err(KmsError::constraint_violation(
            "grantTokens",
            None,
            &["Member must have length less than or equal to 10"],
        ));
    }
    if tokens
        .iter()
        .any(|token| token.is_empty() || token.chars().count() > MAX_GRANT_TOKEN_CHARS)
    {
        return Err(KmsError::constraint_violation(
            "grantTokens",
            None,
            &[
                "Member must satisfy constraint: [Member must have length less than or equal to 8192, Member must have length greater than or equal to 1]",
            ],
        ));
    }
    Ok(())
}

/// Refuses one more grant on a key that has `existing` grants already, with AWS's
/// `LimitExceededException`.
pub fn check_grant_quota(existing: usize, key_arn: &str) -> Result<(), KmsError> {
    if existing >= MAX_GRANTS_PER_KEY {
        Err(KmsError::LimitExceeded(format!(
            "The request was rejected because the number of grants for {key_arn} exceeds the limit of {MAX_GRANTS_PER_KEY}."
        )))
    } else {
        Ok(())
    }
}

/// A grant on one key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The grant id (64 hex digits).
    pub grant_id: String,
    /// The key ARN the grant is on.
    pub key_arn: String,
    /// The account that owns the key.
    pub key_account: String,
    /// What CreateGrant asked for, validated.
    pub request: GrantRequest,
}

impl Grant {
    /// Whether the grant allows the request (see the module docs). For CreateGrant the
    /// request's `kms:GrantOperations` must be a subset of the grant's operations and the
    /// requested constraints ([`RequestContext::with_requested_constraints`]) at least as
    /// strict as the grant's.
    pub fn allows(&self, request: &RequestContext) -> bool {
        let Some(operation) = GrantOperation::parse(request.operation()) else {
            return false;
        };
        if !self.request.operations.contains(&operation)
            || !principal_is(request.caller(), &self.request.grantee_principal)
        {
            return false;
        }
        let constraints = self.request.constraints.as_ref();
        match operation {
            GrantOperation::CreateGrant => {
                let operations_ok =
                    request
                        .lookup_lowercase("kms:grantoperations")
                        .is_some_and(|asked| {
                            asked.values().iter().all(|name| {
                                GrantOperation::parse(name)
                                    .is_some_and(|op| self.request.operations.contains(&op))
                            })
                        });
                operations_ok
                    && constraints
                        .is_none_or(|mine| mine.at_least_as_strict(request.requested_constraints()))
            }
            op if op.takes_encryption_context() => {
                constraints.is_none_or(|mine| mine.allow(request.encryption_context()))
            }
            _ => true,
        }
    }

    /// Whether `caller` may retire the grant: its retiring principal, its grantee when
    /// the grant includes RetireGrant, or the root of the key's account.
    pub fn may_retire(&self, caller: &CallerIdentity) -> bool {
        let retiring = self
            .request
            .retiring_principal
            .as_deref()
            .is_some_and(|retiring| principal_is(caller, retiring));
        let grantee = self
            .request
            .operations
            .contains(&GrantOperation::RetireGrant)
            && principal_is(caller, &self.request.grantee_principal);
        let owner = caller.is_account_root() && caller.account() == self.key_account;
        retiring || grantee || owner
    }

    /// Whether a CreateGrant with these parameters is a repeat of this grant (AWS's
    /// idempotency: same name and the same parameters return the same grant).
    pub fn is_repeated_by(&self, request: &GrantRequest) -> bool {
        self.request.name.is_some() && self.request == *request
    }
}

/// Whether the caller is `principal`: the same ARN, or a session of that role.
fn principal_is(caller: &CallerIdentity, principal: &str) -> bool {
    principals_of(caller).any(|name| name == principal)
}

/// Every principal the caller is, as a grant names its grantee: the caller's ARN, and for a
/// role session also the role's ARN. A grant allows only a caller that is its grantee, so
/// the grants that may allow a call are those whose grantee is one of these.
pub fn principals_of(caller: &CallerIdentity) -> impl Iterator<Item = &str> {
    let role = match caller.kind() {
        PrincipalKind::AssumedRole { role_arn } => Some(role_arn.as_str()),
        _ => None,
    };
    std::iter::once(caller.principal_arn()).chain(role)
}
