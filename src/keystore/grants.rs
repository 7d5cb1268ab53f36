//! Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant and RevokeGrant, the
//! grant tokens every operation accepts, and the grants the prologue hands the evaluator.
//!
//! A grant is a record of table `grants` under `<key id>/<grant id>`, so a key's grants are
//! one prefix scan and are deleted with the key, in the batch that deletes its record. Two
//! indexes, written and deleted in each grant's own batches, keep the reads of one principal's
//! grants from reading any other: an entry in table `grantee-grants` under
//! `<key's store key>\0<grantee>\0<grant's store key>`, through which a call reads only the
//! grants whose grantee the caller is, and, for a grant that names a retiring principal, one
//! in table `retiring-grants` under `<Region>\0<retiring principal>\0<grant's store key>`,
//! which ListRetirableGrants reads. What
//! a grant allows, who may retire it and how CreateGrant's parameters are validated is pure
//! policy logic ([`crate::policy::grant`]); this module stores, lists and removes grants.
//!
//! Grant tokens. In AWS a new grant takes a while to be effective everywhere and its token
//! bridges that gap. Here a committed grant is effective at once, so a token is only a
//! handle: `base64url("g1:<key id>:<grant id>:<nonce>")`, with a fresh nonce per
//! CreateGrant. It confers nothing by itself (a grant allows only its grantee); RetireGrant
//! takes one to name a grant, and every operation refuses a token that does not decode with
//! `InvalidGrantTokenException`, as AWS does.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::api::*;
use super::authorize::caller_identity;
use super::signing::dry_run;
use super::{Access, Caller, KeyStore, Naming, backfill_index, decode, encode, internal, limit};
use crate::audit::event::Call;
use crate::clock::to_epoch_seconds;
use crate::error::KmsError;
use crate::ids::KeyId;
use crate::keys::records::{GrantRecord, KeyRecord, store_key};
use crate::keys::state::{self, Operation};
use crate::policy::CallerIdentity;
use crate::policy::grant::{
    check_grant_quota, check_principal, principals_of, validate_grant_tokens,
};
use crate::policy::{Grant, GrantConstraints, GrantOperation, GrantRequest};
use crate::store::{Batch, Precondition, Table, pages};

/// ListGrants' and ListRetirableGrants' page size when the request names none, and the
/// most they return (AWS: 1 to 100, default 50).
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 100;
/// Bytes of randomness in a grant id (64 hex digits, like AWS's grant ids).
const GRANT_ID_BYTES: usize = 32;
/// The version tag inside a grant token.
const TOKEN_VERSION: &str = "g1";

impl KeyStore {
    /// CreateGrant: validates the request, authorizes `kms:CreateGrant` on the key (with
    /// `kms:GrantOperations`, `kms:GranteePrincipal`, `kms:RetiringPrincipal`, and the
    /// requested constraints, which a grant that allows CreateGrant compares with its
    /// own), and stores the grant. A repeated named request returns the existing grant's
    /// id with a new token (AWS's idempotency).
    pub fn create_grant(
        &self,
        caller: &Caller,
        request: CreateGrantRequest,
    ) -> Result<CreateGrantResponse, KmsError> {
        let mut call = Call::of(Operation::CreateGrant);
        call.param("keyId", request.key_id.as_str())
            .param("granteePrincipal", request.grantee_principal.as_str())
            .param("operations", request.operations.clone());
        if let Some(retiring) = &request.retiring_principal {
            call.param("retiringPrincipal", retiring.as_str());
        }
        if let Some(name) = &request.name {
            call.param("name", name.as_str());
        }
        if let Some(constraints) = &request.constraints {
            call.param("constraints", constraints.audit_value());
        }
        self.audited(caller, call, |call| {
            let grant = GrantRequest::validate(
                &request.grantee_principal,
                request.retiring_principal.as_deref(),
                &request.operations,
                request.constraints.clone().map(GrantConstraints::from),
                request.name.as_deref(),
            )?;
            let operations: Vec<&str> = grant.operations.iter().map(|op| op.as_str()).collect();
            let access = Access::of(Operation::CreateGrant)
                .with_grant_tokens(&request.grant_tokens)
                .with(|context| {
                    context
                        .with_grant_request(
                            &operations,
                            &grant.grantee_principal,
                            grant.retiring_principal.as_deref(),
                        )
                        .with_requested_constraints(grant.constraints.clone())
                });
            let key = self.key_for(
                caller,
                call,
                access,
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            check_operations_fit_key(&grant, &key)?;
            let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
            // A repeat names the same grantee, so only the grantee's grants are read; the
            // quota counts the key's index entries, which hold no payload to decode.
            let (key_store_key, arn) = (key.store_key(), key.arn());
            let to_grantee = self.grants_to(&key_store_key, &grant.grantee_principal)?;
            let repeated = to_grantee
                .iter()
                .find(|record| policy_grant(record, &arn).is_repeated_by(&grant));
            if let Some(same) = repeated {
                dry_run(request.dry_run)?;
                call.response_elements = Some(serde_json::json!({ "grantId": same.grant_id }));
                return Ok(CreateGrantResponse {
                    grant_token: new_token(&key.key_id, &same.grant_id)?,
                    grant_id: same.grant_id.clone(),
                });
            }
            check_grant_quota(self.grant_count(&key_store_key)?, &arn)?;
            dry_run(request.dry_run)?;
            let record = new_record(grant, &key, caller.scope.account_id(), self.now())?;
            let mut batch = Batch::new();
            batch.expect(
                Table::Keys,
                key_store_key.as_bytes(),
                Precondition::ExpectPresent,
            );
            put_grant(&mut batch, &key_store_key, &record)?;
            self.commit(batch, &key_store_key)?;
            call.response_elements = Some(serde_json::json!({ "grantId": record.grant_id }));
            Ok(CreateGrantResponse {
                grant_token: new_token(&key.key_id, &record.grant_id)?,
                grant_id: record.grant_id,
            })
        })
    }

    /// ListGrants: the key's grants, optionally only one grant id or one grantee, in pages
    /// whose marker is the last grant id returned.
    pub fn list_grants(
        &self,
        caller: &Caller,
        request: ListGrantsRequest,
    ) -> Result<ListGrantsResponse, KmsError> {
        let mut call = Call::of(Operation::ListGrants);
        call.param("keyId", request.key_id.as_str());
        if let Some(grant_id) = &request.grant_id {
            call.param("grantId", grant_id.as_str());
        }
        if let Some(grantee) = &request.grantee_principal {
            call.param("granteePrincipal", grantee.as_str());
        }
        self.audited(caller, call, |call| {
            let page = limit(request.limit, DEFAULT_PAGE)?.min(MAX_PAGE);
            if let Some(grant_id) = &request.grant_id {
                check_grant_id(grant_id)?;
            }
            if let Some(grantee) = &request.grantee_principal {
                check_principal("granteePrincipal", grantee)?;
            }
            let key = self.key_for(
                caller,
                call,
                Access::of(Operation::ListGrants),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            let after = match request.marker.as_deref() {
                None => None,
                Some(marker) if is_grant_id(marker) => Some(grant_key(&key.store_key(), marker)),
                Some(marker) => return Err(invalid_marker(marker)),
            };
            let (grants, more) =
                self.grant_page(&grant_prefix(&key.store_key()), after, page, |g| {
                    request.grant_id.as_ref().is_none_or(|id| *id == g.grant_id)
                        && request
                            .grantee_principal
                            .as_ref()
                            .is_none_or(|grantee| *grantee == g.grantee_principal)
                })?;
            let next_marker = grants
                .last()
                .filter(|_| more)
                .map(|last| last.grant_id.clone());
            Ok(ListGrantsResponse {
                grants: grants.iter().map(|g| list_entry(g, &key.arn())).collect(),
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }

    /// ListRetirableGrants: the grants on keys of the caller's region whose retiring
    /// principal is the one named, which must be of the caller's account (AWS: "You must
    /// specify a principal in your AWS account"); those may be on keys of other accounts.
    /// Authorized by identity policies alone. It reads every grant of the store.
    pub fn list_retirable_grants(
        &self,
        caller: &Caller,
        request: ListRetirableGrantsRequest,
    ) -> Result<ListGrantsResponse, KmsError> {
        let mut call = Call::of(Operation::ListRetirableGrants);
        call.param("retiringPrincipal", request.retiring_principal.as_str());
        self.audited(caller, call, |_| {
            let page = limit(request.limit, DEFAULT_PAGE)?.min(MAX_PAGE);
            check_principal("retiringPrincipal", &request.retiring_principal)?;
            self.authorize_without_key(caller, Operation::ListRetirableGrants, |c| c)?;
            if principal_account(&request.retiring_principal) != Some(caller.scope.account_id())
            {
                return Err(KmsError::Validation(format!(
                    "The retiring principal {} is not of account {}: ListRetirableGrants lists the grants of principals of the caller's own account.",
                    request.retiring_principal,
                    caller.scope.account_id()
                )));
            }
            let after = request
                .marker
                .as_deref()
                .map(|marker| {
                    URL_SAFE_NO_PAD
                        .decode(marker)
                        .map_err(|_| invalid_marker(marker))
                })
                .transpose()?;
            let (grants, more) = self.retirable_page(
                caller.scope.region(),
                &request.retiring_principal,
                after,
                page,
            )?;
            let next_marker = grants.last().filter(|_| more).map(|last| {
                URL_SAFE_NO_PAD.encode(grant_key(
                    &store_key(&last.key_id, &last.region),
                    &last.grant_id,
                ))
            });
            Ok(ListGrantsResponse {
                grants: grants.iter().map(|g| list_entry(g, &key_arn(g))).collect(),
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }

    /// RetireGrant: removes a grant named by its token, or by key and grant id. Decided by
    /// the grant, not by policies (AWS): its retiring principal, its grantee when it allows
    /// RetireGrant, or the root of the key's account may retire it.
    pub fn retire_grant(
        &self,
        caller: &Caller,
        request: RetireGrantRequest,
    ) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::RetireGrant);
        if let Some(key_id) = &request.key_id {
            call.param("keyId", key_id.as_str());
        }
        if let Some(grant_id) = &request.grant_id {
            call.param("grantId", grant_id.as_str());
        }
        self.audited(caller, call, |call| {
            let (key, grant_id) = match (&request.grant_token, &request.key_id, &request.grant_id)
            {
                (Some(token), _, _) => {
                    validate_grant_tokens(std::slice::from_ref(token))?;
                    let (key_id, grant_id) = parse_token(token)?;
                    let key = self.key_by_token(caller, call, &key_id)?;
                    (key, grant_id)
                }
                (None, Some(key_id), Some(grant_id)) => {
                    check_grant_id(grant_id)?;
                    let (key, _) = self.resolve_reference(
                        caller,
                        call,
                        Operation::RetireGrant,
                        ("keyId", key_id),
                        Naming::KeyIdOrArn,
                    )?;
                    (key, grant_id.clone())
                }
                _ => {
                    return Err(KmsError::Validation(
                        "Either GrantToken, or both KeyId and GrantId, must be specified."
                            .to_owned(),
                    ));
                }
            };
            call.param("grantId", grant_id.as_str());
            state::check(Operation::RetireGrant, key.state, key.arn_display())?;
            let (record, revision) = self.stored_grant(&key, &grant_id)?;
            if !policy_grant(&record, &key.arn()).may_retire(&caller_identity(caller)) {
                return Err(KmsError::AccessDenied(format!(
                    "User: {} is not authorized to perform: kms:RetireGrant on resource: {} because the grant names neither it as retiring principal nor as a grantee allowed to retire it",
                    caller.principal,
                    key.arn()
                )));
            }
            dry_run(request.dry_run)?;
            self.remove_grant(&key, &record, revision)
        })
    }

    /// RevokeGrant: removes a grant of the key, authorized by `kms:RevokeGrant` in the
    /// key's policy (and the caller's identity policies).
    pub fn revoke_grant(
        &self,
        caller: &Caller,
        request: RevokeGrantRequest,
    ) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::RevokeGrant);
        call.param("keyId", request.key_id.as_str())
            .param("grantId", request.grant_id.as_str());
        self.audited(caller, call, |call| {
            check_grant_id(&request.grant_id)?;
            let key = self.key_for(
                caller,
                call,
                Access::of(Operation::RevokeGrant),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            let (record, revision) = self.stored_grant(&key, &request.grant_id)?;
            dry_run(request.dry_run)?;
            self.remove_grant(&key, &record, revision)
        })
    }

    /// The grants of the key whose grantee the caller is ([`principals_of`]), for the
    /// evaluator (only read when the policies alone did not allow the call), through their
    /// entries in table `grantee-grants` (an entry whose grant was removed meanwhile is
    /// passed over).
    pub(super) fn grants_for_evaluation(
        &self,
        key: &KeyRecord,
        caller: &CallerIdentity,
    ) -> Result<Vec<Grant>, KmsError> {
        let arn = key.arn();
        let key_store_key = key.store_key();
        let mut grants = Vec::new();
        for grantee in principals_of(caller) {
            for record in self.grants_to(&key_store_key, grantee)? {
                grants.push(policy_grant(&record, &arn));
            }
        }
        Ok(grants)
    }

    /// The grants to `grantee` of the key whose store key is `key`, through the
    /// `grantee-grants` index.
    fn grants_to(&self, key: &str, grantee: &str) -> Result<Vec<GrantRecord>, KmsError> {
        let prefix = grantee_prefix(key.as_bytes(), grantee);
        let entries = self
            .store
            .scan(Table::GranteeGrants, &prefix, None, usize::MAX)
            .map_err(internal)?;
        let mut grants = Vec::with_capacity(entries.len());
        for (entry, _) in entries {
            let grant_key = &entry[prefix.len()..];
            if let Some(found) = self.store.get(Table::Grants, grant_key).map_err(internal)? {
                grants.push(decode(&found.payload)?);
            }
        }
        Ok(grants)
    }

    /// How many grants the key whose store key is `key` has: its entries in the
    /// `grantee-grants` index (one per grant, each without a payload), counted page by page.
    fn grant_count(&self, key: &str) -> Result<usize, KmsError> {
        let mut count = 0;
        let prefix = key_grantees_prefix(key.as_bytes());
        for page in pages(self.store.as_ref(), Table::GranteeGrants, &prefix) {
            count += page.map_err(internal)?.len();
        }
        Ok(count)
    }

    /// Checks the `GrantTokens` of a request: at most 10, each one this store issued.
    pub(super) fn check_grant_tokens(tokens: &[String]) -> Result<(), KmsError> {
        validate_grant_tokens(tokens)?;
        tokens
            .iter()
            .try_for_each(|token| parse_token(token).map(drop))
    }

    /// Every grant of the key, in grant id order.
    fn grants_of(&self, key_id: &str) -> Result<Vec<GrantRecord>, KmsError> {
        let mut grants = Vec::new();
        for page in pages(self.store.as_ref(), Table::Grants, &grant_prefix(key_id)) {
            for (_, record) in page.map_err(internal)? {
                grants.push(decode(&record.payload)?);
            }
        }
        Ok(grants)
    }

    /// Up to `page` grants under `prefix` after the store key `after` that `keep` accepts,
    /// and whether more such grants follow.
    fn grant_page(
        &self,
        prefix: &[u8],
        after: Option<Vec<u8>>,
        page: usize,
        keep: impl Fn(&GrantRecord) -> bool,
    ) -> Result<(Vec<GrantRecord>, bool), KmsError> {
        let mut grants = Vec::new();
        for stored in pages(self.store.as_ref(), Table::Grants, prefix).after(after) {
            for (_, record) in stored.map_err(internal)? {
                let grant: GrantRecord = decode(&record.payload)?;
                if keep(&grant) {
                    if grants.len() == page {
                        return Ok((grants, true));
                    }
                    grants.push(grant);
                }
            }
        }
        Ok((grants, false))
    }

    /// Up to `page` grants whose retiring principal is `principal`, in `region`, after the
    /// grant whose store key is `after`, and whether more follow; read through their entries
    /// in table `retiring-grants` (an entry whose grant was removed meanwhile is passed over).
    fn retirable_page(
        &self,
        region: &str,
        principal: &str,
        after: Option<Vec<u8>>,
        page: usize,
    ) -> Result<(Vec<GrantRecord>, bool), KmsError> {
        let prefix = retiring_prefix(region, principal);
        let after = after.map(|grant| [prefix.as_slice(), &grant].concat());
        let mut grants = Vec::new();
        let entries = pages(self.store.as_ref(), Table::RetiringGrants, &prefix)
            .after(after)
            .size(page + 1);
        for stored in entries {
            for (entry, _) in stored.map_err(internal)? {
                let grant_key = &entry[prefix.len()..];
                let Some(found) = self.store.get(Table::Grants, grant_key).map_err(internal)?
                else {
                    continue;
                };
                if grants.len() == page {
                    return Ok((grants, true));
                }
                grants.push(decode(&found.payload)?);
            }
        }
        Ok((grants, false))
    }

    /// Writes the index entries (tables `grantee-grants` and `retiring-grants`) that grants
    /// written before the indexes existed lack (see [`backfill_index`]).
    pub(super) fn index_grants(&self) -> Result<(), KmsError> {
        backfill_index(
            self.store.as_ref(),
            Table::Grants,
            GRANTS_INDEXED,
            |key, payload| Ok(index_entries(&decode(payload)?, key)),
        )
    }

    /// The grant `grant_id` of `key` as stored, with its revision (`NotFoundException`
    /// when the key has no such grant).
    fn stored_grant(
        &self,
        key: &KeyRecord,
        grant_id: &str,
    ) -> Result<(GrantRecord, u64), KmsError> {
        match self
            .store
            .get(Table::Grants, &grant_key(&key.store_key(), grant_id))
            .map_err(internal)?
        {
            Some(found) => Ok((decode(&found.payload)?, found.revision)),
            None => Err(KmsError::NotFound(format!(
                "Grant '{grant_id}' does not exist on key '{}'",
                key.arn()
            ))),
        }
    }

    /// Deletes a grant, unless it changed since it was read at `revision`.
    fn remove_grant(
        &self,
        key: &KeyRecord,
        grant: &GrantRecord,
        revision: u64,
    ) -> Result<(), KmsError> {
        let mut batch = Batch::new();
        batch.expect(
            Table::Grants,
            &grant_key(&key.store_key(), &grant.grant_id),
            Precondition::ExpectRevision(revision),
        );
        delete_grant(&mut batch, &key.store_key(), grant);
        self.commit(batch, &key.store_key())
    }

    /// The key a grant token names: any account's key in the caller's region, recorded in
    /// the owner's trail too when it is another account's.
    fn key_by_token(
        &self,
        caller: &Caller,
        call: &mut Call,
        key_id: &KeyId,
    ) -> Result<std::sync::Arc<KeyRecord>, KmsError> {
        let key = self
            .key(&store_key(&key_id.to_string(), caller.scope.region()))?
            .filter(|key| key.region == caller.scope.region())
            .ok_or_else(|| {
                KmsError::NotFound(format!(
                    "The key of the grant token ({key_id}) does not exist"
                ))
            })?;
        call.resource(key.arn());
        if key.account_id != caller.scope.account_id() {
            call.key_owner = Some(key.account_id.clone());
        }
        Ok(key)
    }

    /// The store keys of every grant of the key stored under `key` (see
    /// [`store_key`]), for the batch that deletes the key.
    /// Adds the deletion of every grant of the key (store key `key`) to `batch`.
    pub(super) fn delete_grants_of(&self, key: &str, batch: &mut Batch) -> Result<(), KmsError> {
        for grant in self.grants_of(key)? {
            delete_grant(batch, key, &grant);
        }
        Ok(())
    }
}

/// Refuses operations the key cannot perform: a symmetric encryption key takes no
/// signing, MAC or key agreement operation (AWS: `ValidationException`).
fn check_operations_fit_key(grant: &GrantRequest, key: &KeyRecord) -> Result<(), KmsError> {
    use GrantOperation::*;
    let fits = |op: &GrantOperation| match key.key_usage.as_str() {
        "ENCRYPT_DECRYPT" if key.key_spec == "SYMMETRIC_DEFAULT" => matches!(
            op,
            Decrypt
                | Encrypt
                | GenerateDataKey
                | GenerateDataKeyWithoutPlaintext
                | ReEncryptFrom
                | ReEncryptTo
                | GenerateDataKeyPair
                | GenerateDataKeyPairWithoutPlaintext
                | CreateGrant
                | RetireGrant
                | DescribeKey
        ),
        _ => true,
    };
    let unfit: Vec<&str> = grant
        .operations
        .iter()
        .filter(|op| !fits(op))
        .map(|op| op.as_str())
        .collect();
    if unfit.is_empty() {
        Ok(())
    } else {
        Err(KmsError::Validation(format!(
            "Grant operations {} are not valid for key {} (key spec {}, key usage {}).",
            unfit.join(", "),
            key.arn(),
            key.key_spec,
            key.key_usage
        )))
    }
}

/// The stored form of a validated grant on `key`.
fn new_record(
    grant: GrantRequest,
    key: &KeyRecord,
    issuing_account: &str,
    now: i64,
) -> Result<GrantRecord, KmsError> {
    let mut id = [0u8; GRANT_ID_BYTES];
    getrandom::fill(&mut id)
        .map_err(|e| KmsError::KmsInternal(format!("no randomness for a grant id: {e}")))?;
    let (equals, subset) = match grant.constraints {
        Some(c) => (c.encryption_context_equals, c.encryption_context_subset),
        None => (None, None),
    };
    Ok(GrantRecord {
        grant_id: hex::encode(id),
        key_id: key.key_id.clone(),
        account_id: key.account_id.clone(),
        region: key.region.clone(),
        name: grant.name,
        creation_date: now,
        grantee_principal: grant.grantee_principal,
        retiring_principal: grant.retiring_principal,
        issuing_account: issuing_account.to_owned(),
        operations: grant
            .operations
            .iter()
            .map(|op| op.as_str().to_owned())
            .collect(),
        encryption_context_equals: equals,
        encryption_context_subset: subset,
    })
}

/// The grant as the policy evaluator sees it. Operations the record names but this version
/// does not know are left out (they allow nothing).
fn policy_grant(record: &GrantRecord, key_arn: &str) -> Grant {
    let constraints = (record.encryption_context_equals.is_some()
        || record.encryption_context_subset.is_some())
    .then(|| GrantConstraints {
        encryption_context_equals: record.encryption_context_equals.clone(),
        encryption_context_subset: record.encryption_context_subset.clone(),
    });
    Grant {
        grant_id: record.grant_id.clone(),
        key_arn: key_arn.to_owned(),
        key_account: record.account_id.clone(),
        request: GrantRequest {
            grantee_principal: record.grantee_principal.clone(),
            retiring_principal: record.retiring_principal.clone(),
            operations: record
                .operations
                .iter()
                .filter_map(|name| GrantOperation::parse(name))
                .collect(),
            constraints,
            name: record.name.clone(),
        },
    }
}

fn list_entry(record: &GrantRecord, key_arn: &str) -> GrantListEntry {
    let constraints = (record.encryption_context_equals.is_some()
        || record.encryption_context_subset.is_some())
    .then(|| GrantConstraintsShape {
        encryption_context_equals: record.encryption_context_equals.clone(),
        encryption_context_subset: record.encryption_context_subset.clone(),
    });
    GrantListEntry {
        key_id: key_arn.to_owned(),
        grant_id: record.grant_id.clone(),
        name: record.name.clone(),
        creation_date: to_epoch_seconds(record.creation_date),
        grantee_principal: record.grantee_principal.clone(),
        retiring_principal: record.retiring_principal.clone(),
        issuing_account: format!("arn:aws:iam::{}:root", record.issuing_account),
        operations: record.operations.clone(),
        constraints,
    }
}

fn key_arn(record: &GrantRecord) -> String {
    format!(
        "arn:aws:kms:{}:{}:key/{}",
        record.region, record.account_id, record.key_id
    )
}

/// The store key of a grant.
fn grant_key(key: &str, grant_id: &str) -> Vec<u8> {
    format!("{key}/{grant_id}").into_bytes()
}

/// Adds `grant` of the key whose store key is `key` to `batch`, with its index entries.
fn put_grant(batch: &mut Batch, key: &str, grant: &GrantRecord) -> Result<(), KmsError> {
    let store_key = grant_key(key, &grant.grant_id);
    for (table, entry) in index_entries(grant, &store_key) {
        batch.put(table, &entry, Vec::new());
    }
    batch.put(Table::Grants, &store_key, encode(grant)?);
    Ok(())
}

/// Adds the deletion of `grant` of the key whose store key is `key` to `batch`, with its
/// index entries.
fn delete_grant(batch: &mut Batch, key: &str, grant: &GrantRecord) {
    let store_key = grant_key(key, &grant.grant_id);
    for (table, entry) in index_entries(grant, &store_key) {
        batch.delete(table, &entry);
    }
    batch.delete(Table::Grants, &store_key);
}

/// The meta-table marker of a store whose grants all have their index entries.
const GRANTS_INDEXED: &[u8] = b"grant-indexes-written";

/// The index entries of `grant`, whose store key is `grant_key` (`<key's store key>/<grant
/// id>`): its grantee's in table `grantee-grants`, and its retiring principal's in table
/// `retiring-grants` when it names one.
fn index_entries(grant: &GrantRecord, grant_key: &[u8]) -> Vec<(Table, Vec<u8>)> {
    let key = &grant_key[..grant_key.len() - grant.grant_id.len() - 1];
    let grantee = grantee_prefix(key, &grant.grantee_principal);
    let mut entries = vec![(
        Table::GranteeGrants,
        [grantee.as_slice(), grant_key].concat(),
    )];
    if let Some(principal) = grant.retiring_principal.as_deref() {
        let retiring = retiring_prefix(&grant.region, principal);
        entries.push((
            Table::RetiringGrants,
            [retiring.as_slice(), grant_key].concat(),
        ));
    }
    entries
}

/// The prefix of the `grantee-grants` entries of the key whose store key is `key`, for its
/// grants to `grantee`.
fn grantee_prefix(key: &[u8], grantee: &str) -> Vec<u8> {
    [&key_grantees_prefix(key), grantee.as_bytes(), b"\0"].concat()
}

/// The prefix of every `grantee-grants` entry of the key whose store key is `key`.
fn key_grantees_prefix(key: &[u8]) -> Vec<u8> {
    [key, b"\0"].concat()
}

/// The prefix of the `retiring-grants` entries of `principal`'s grants in `region`. No
/// Region name, store key or principal holds a NUL byte, so no prefix of either index
/// extends another.
fn retiring_prefix(region: &str, principal: &str) -> Vec<u8> {
    [region.as_bytes(), b"\0", principal.as_bytes(), b"\0"].concat()
}

/// The store key prefix of a key's grants.
fn grant_prefix(key: &str) -> Vec<u8> {
    format!("{key}/").into_bytes()
}

/// A new token naming the grant (see the module docs).
fn new_token(key_id: &str, grant_id: &str) -> Result<String, KmsError> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce)
        .map_err(|e| KmsError::KmsInternal(format!("no randomness for a grant token: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(format!(
        "{TOKEN_VERSION}:{key_id}:{grant_id}:{}",
        hex::encode(nonce)
    )))
}

/// The key and grant a token names; `InvalidGrantTokenException` for anything this store
/// did not issue.
fn parse_token(token: &str) -> Result<(KeyId, String), KmsError> {
    let invalid = || {
        KmsError::InvalidGrantToken(
            "The grant token is not valid: this key store did not issue it.".to_owned(),
        )
    };
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    let mut parts = text.split(':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(TOKEN_VERSION), Some(key_id), Some(grant_id), Some(nonce), None)
            if is_grant_id(grant_id) && nonce.len() == 32 =>
        {
            let key_id = KeyId::parse(key_id).map_err(|_| invalid())?;
            Ok((key_id, grant_id.to_owned()))
        }
        _ => Err(invalid()),
    }
}

/// Whether `id` has the form of a grant id this store issues.
fn is_grant_id(id: &str) -> bool {
    id.len() == 2 * GRANT_ID_BYTES && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a `GrantId` parameter: AWS's length constraint, then the form of a grant id
/// (`InvalidGrantIdException` otherwise).
fn check_grant_id(id: &str) -> Result<(), KmsError> {
    if id.is_empty() || id.chars().count() > 128 {
        return Err(KmsError::constraint_violation(
            "grantId",
            Some(id),
            &[
                "Member must have length greater than or equal to 1",
                "Member must have length less than or equal to 128",
            ],
        ));
    }
    if is_grant_id(id) {
        Ok(())
    } else {
        Err(KmsError::InvalidGrantId(format!("Invalid grant ID: {id}")))
    }
}

/// The account of a principal: an account id, or the account field of an IAM or STS ARN.
fn principal_account(principal: &str) -> Option<&str> {
    if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        return Some(principal);
    }
    let mut parts = principal.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(_), Some("iam" | "sts"), Some(""), Some(account)) => Some(account),
        _ => None,
    }
}

fn invalid_marker(marker: &str) -> KmsError {
    KmsError::InvalidMarker(format!("Invalid marker: {marker}"))
}

impl From<GrantConstraintsShape> for GrantConstraints {
    fn from(shape: GrantConstraintsShape) -> GrantConstraints {
        GrantConstraints {
            encryption_context_equals: shape.encryption_context_equals,
            encryption_context_subset: shape.encryption_context_subset,
        }
    }
}

impl GrantConstraintsShape {
    /// The constraints as the audit trail records them.
    fn audit_value(&self) -> serde_json::Value {
        let pairs = |map: &Option<BTreeMap<String, String>>| serde_json::json!(map);
        serde_json::json!({
            "encryptionContextEquals": pairs(&self.encryption_context_equals),
            "encryptionContextSubset": pairs(&self.encryption_context_subset),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_tokens_are_refused() {
        let key_id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        let grant_id = "ab".repeat(32);
        let token = new_token(key_id, &grant_id).unwrap();
        let (parsed_key, parsed_grant) = parse_token(&token).unwrap();
        assert_eq!(parsed_key.to_string(), key_id);
        assert_eq!(parsed_grant, grant_id);
        assert_ne!(
            token,
            new_token(key_id, &grant_id).unwrap(),
            "a fresh nonce each"
        );
        for foreign in [
            "not-a-token",
            "AQIDBAUGBwgJ",
            &URL_SAFE_NO_PAD.encode(format!("g1:{key_id}:{grant_id}")),
            &URL_SAFE_NO_PAD.encode(format!("g2:{key_id}:{grant_id}:{}", "0".repeat(32))),
            &URL_SAFE_NO_PAD.encode(format!("g1:not-a-key:{grant_id}:{}", "0".repeat(32))),
        ] {
            let error = parse_token(foreign).unwrap_err();
            assert_eq!(error.code(), "InvalidGrantTokenException", "{foreign}");
        }
    }

    #[test]
    fn grant_ids_and_principal_accounts() {
        assert!(check_grant_id(&"0f".repeat(32)).is_ok());
        assert_eq!(
            check_grant_id("").unwrap_err().code(),
            "ValidationException"
        );
        assert_eq!(
            check_grant_id(&"x".repeat(129)).unwrap_err().code(),
            "ValidationException"
        );
        assert_eq!(
            check_grant_id("not-a-grant").unwrap_err().code(),
            "InvalidGrantIdException"
        );
        assert_eq!(principal_account("111122223333"), Some("111122223333"));
        assert_eq!(
            principal_account("arn:aws:iam::111122223333:user/app"),
            Some("111122223333")
        );
        assert_eq!(
            principal_account("arn:aws:sts::444455556666:assumed-role/r/s"),
            Some("444455556666")
        );
        assert_eq!(principal_account("service.amazonaws.com"), None);
    }
}
