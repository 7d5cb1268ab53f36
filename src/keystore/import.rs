//! Imported key material (origin `EXTERNAL`): GetParametersForImport, ImportKeyMaterial,
//! DeleteImportedKeyMaterial, and the expiry of imported material in the maintenance run.
//!
//! This module owns the import token and the rules AWS sets around the HSM work: the
//! token is the wrapping key's member and id, the key ARN, the algorithm and the end of its
//! validity, sealed under the cluster's internal import-token key (AES-GCM inside the HSMs),
//! so it can be neither forged nor moved to another key; the material must be the one first
//! imported (its key check value is kept); deleted or expired material is destroyed on every
//! member, verified, and a member that was away owes its destruction until maintenance
//! finishes it. It never sees, logs or stores key material: wrapped bytes go to an HSM, and
//! only a key check value comes back.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::api::*;
use super::{Access, Caller, KeyStore, Naming, cluster_error, encode};
use crate::audit::event::Call;
use crate::clock::{DAY_MILLIS, to_epoch_seconds};
use crate::cluster::{ClusterError, MaterialId};
use crate::error::KmsError;
use crate::hsm::Failure;
use crate::hsm::import::{Opened, WrappingAlgorithm, WrappingKeySpec, material_lengths};
use crate::keys::records::{ImportRecord, KeyRecord, MaterialRecord};
use crate::keys::spec::KeySpec;
use crate::keys::state::{self, KeyState, Operation};
use crate::policy::keys;
use crate::store::{Batch, Precondition, Table};

/// The internal key that seals import tokens.
const TOKEN_KEY: &str = "hsm-kms-import-token";
const TOKEN_KEY_LABEL: &str = "hsm-kms import token key";
/// An import token starts with these bytes and a format version.
const TOKEN_MAGIC: &[u8] = b"hkit";
const TOKEN_VERSION: u8 = 1;
const TOKEN_AAD: &[u8] = b"hsm-kms import token v1";
const IV_LEN: usize = 12;

/// The material version of imported key material (re-imports bring the same material, so
/// ciphertexts made before a deletion decrypt after the re-import).
const IMPORTED_VERSION: u32 = 1;

/// How long an import token and its public key can be used (AWS: 24 hours).
const PARAMETERS_VALIDITY_MILLIS: i64 = DAY_MILLIS;
/// The latest `ValidTo` AWS accepts: 365 days from the request.
const VALID_TO_MAX_DAYS: i64 = 365;
/// `CiphertextType`: 1 to 6144 bytes.
const CIPHERTEXT_MAX: usize = 6144;

const EXPIRES: &str = "KEY_MATERIAL_EXPIRES";
const DOES_NOT_EXPIRE: &str = "KEY_MATERIAL_DOES_NOT_EXPIRE";

/// What an import token says, sealed.
#[derive(Debug, Serialize, Deserialize)]
struct TokenClaims {
    /// The key the material is for (ARN).
    key: String,
    /// The member holding the wrapping key's private half.
    member: String,
    /// The wrapping key's `CKA_ID`, hex.
    wrapping_key: String,
    algorithm: String,
    spec: String,
    /// End of validity, epoch milliseconds.
    valid_to: i64,
}

/// What material a key holds, for the DescribeKey-like answer of the import operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// No material: the key waits for an import.
    Nothing,
    /// Material in the HSMs.
    Material,
}

/// Why the expired material of a key could not be destroyed everywhere yet.
#[derive(Debug)]
pub(super) enum Expiry {
    /// The material is gone from every member.
    Done,
    /// These members still hold it; a later run finishes.
    Pending(Vec<String>),
}

impl KeyStore {
    /// GetParametersForImport: a wrapping key pair made inside an HSM member, its public
    /// half, and an import token bound to the key, the wrapping key and the algorithm,
    /// valid for 24 hours.
    pub fn get_parameters_for_import(
        &self,
        caller: &Caller,
        request: GetParametersForImportRequest,
    ) -> Result<GetParametersForImportResponse, KmsError> {
        let mut call = Call::of(Operation::GetParametersForImport);
        call.param("keyId", request.key_id.as_str());
        call.param("wrappingAlgorithm", request.wrapping_algorithm.as_str());
        call.param("wrappingKeySpec", request.wrapping_key_spec.as_str());
        self.audited(caller, call, |call| {
            let algorithm = wrapping_algorithm(&request.wrapping_algorithm)?;
            let spec = wrapping_key_spec(&request.wrapping_key_spec)?;
            let key = self.import_key_for(
                caller,
                call,
                Access::of(Operation::GetParametersForImport).with(|mut context| {
                    context.set(keys::WRAPPING_ALGORITHM, algorithm.as_str());
                    context.set(keys::WRAPPING_KEY_SPEC, spec.as_str());
                    context
                }),
                &request.key_id,
            )?;
            check_wrapping_for(key.material_spec()?.spec, algorithm, spec)?;
            let valid_to = self.now() + PARAMETERS_VALIDITY_MILLIS;
            let cluster = self.cluster_of(&key)?;
            let wrapping = cluster
                .make_wrapping_key(&key.arn(), spec, algorithm, valid_to / 1000)
                .map_err(|error| match &error {
                    ClusterError::Hsm(hsm) if hsm.refuses_mechanism_parameters() => {
                        KmsError::UnsupportedOperation(format!(
                            "The wrapping algorithm {} is not supported by the HSMs of this key store; use {} or {}.",
                            algorithm.as_str(),
                            WrappingAlgorithm::RsaesOaepSha1.as_str(),
                            WrappingAlgorithm::RsaAesKeyWrapSha1.as_str(),
                        ))
                    }
                    ClusterError::Hsm(hsm) if hsm.lacks_import_functions() => {
                        KmsError::UnsupportedOperation(
                            "Importing key material is not supported by the HSMs of this key store."
                                .into(),
                        )
                    }
                    _ => cluster_error(error),
                })?;
            let claims = TokenClaims {
                key: key.arn(),
                member: wrapping.member,
                wrapping_key: hex::encode(&wrapping.id),
                algorithm: algorithm.as_str().to_owned(),
                spec: spec.as_str().to_owned(),
                valid_to,
            };
            let import_token = self.seal_token(&claims)?;
            Ok(GetParametersForImportResponse {
                key_id: key.arn(),
                import_token,
                public_key: wrapping.public_key,
                parameters_valid_to: to_epoch_seconds(valid_to),
            })
        })
    }

    /// ImportKeyMaterial: opens the wrapped material inside the HSM that holds the token's
    /// wrapping key and makes it the key's material on every member; or, when the key has
    /// its material already, checks that the import brings the same and sets the new
    /// expiration.
    ///
    /// For a key pending import, the material is created like generated material (an intent
    /// first, then the HSM work, then the record): the key becomes Enabled with the
    /// expiration asked for, and its key check value is kept on the first import; every
    /// later import must match it.
    pub fn import_key_material(
        &self,
        caller: &Caller,
        request: ImportKeyMaterialRequest,
    ) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::ImportKeyMaterial);
        call.param("keyId", request.key_id.as_str());
        if let Some(model) = &request.expiration_model {
            call.param("expirationModel", model.as_str());
        }
        if let Some(valid_to) = request.valid_to {
            call.param("validTo", valid_to);
        }
        self.audited(caller, call, |call| {
            check_ciphertext_param("importToken", &request.import_token)?;
            check_ciphertext_param("encryptedKeyMaterial", &request.encrypted_key_material)?;
            let model = request.expiration_model.as_deref().unwrap_or(EXPIRES);
            let key = self.import_key_for(
                caller,
                call,
                Access::of(Operation::ImportKeyMaterial).with(|mut context| {
                    context.set(keys::EXPIRATION_MODEL, model);
                    if let Some(valid_to) = request.valid_to {
                        context.set(keys::VALID_TO, &format!("{}", valid_to.trunc() as i64));
                    }
                    context
                }),
                &request.key_id,
            )?;
            let now = self.now();
            let valid_to = expiration(model, request.valid_to, now)?;
            let claims = self.open_token(&request.import_token)?;
            if claims.key != key.arn() {
                return Err(KmsError::InvalidImportToken(
                    "The import token is not valid for this KMS key.".into(),
                ));
            }
            if claims.valid_to <= now {
                return Err(KmsError::ExpiredImportToken(
                    "The import token is expired. Use GetParametersForImport to get a new import token and public key.".into(),
                ));
            }
            let algorithm = WrappingAlgorithm::from_name(&claims.algorithm)
                .ok_or_else(invalid_token)?;
            let wrapping_id = hex::decode(&claims.wrapping_key).map_err(|_| invalid_token())?;
            let import = key.import.clone().unwrap_or_default();
            if !import.destruction_owed.is_empty() {
                return Err(KmsError::KmsInternal(format!(
                    "the deleted key material of {} is still to be destroyed on an HSM member that is away; import again once maintenance has finished it",
                    key.arn()
                )));
            }
            // A multi-Region key's copies import the same material: until this copy has its
            // own check value, another copy's names the material it must be.
            let check_value = match &import.check_value {
                Some(own) => Some(own.clone()),
                None => self
                    .other_copies(&key)?
                    .into_iter()
                    .find_map(|(_, copy, _)| copy.import.and_then(|import| import.check_value)),
            };
            let expected = check_value
                .as_deref()
                .map(hex::decode)
                .transpose()
                .map_err(|_| KmsError::KmsInternal("a stored key check value does not decode".into()))?;
            let cluster = self.cluster_of(&key)?;
            let material = MaterialId::new(key.key_id.clone(), IMPORTED_VERSION);
            let held = if key.materials.is_empty() {
                Held::Nothing
            } else {
                Held::Material
            };
            let arn = key.arn();
            let spec = key.material_spec()?;
            let opened = std::cell::RefCell::new(None);
            let refused = std::cell::RefCell::new(None);
            let open = |keep: bool| {
                cluster.import_material(
                    &material,
                    &arn,
                    &claims.member,
                    &wrapping_id,
                    algorithm,
                    &request.encrypted_key_material,
                    spec,
                    expected.as_deref(),
                    keep,
                )
            };
            let outcome = match held {
                Held::Material => open(false)
                    .map(|o| *opened.borrow_mut() = Some(o))
                    .map_err(|e| import_refusal(&e, &arn).unwrap_or_else(|| cluster_error(e))),
                Held::Nothing => self.create_material_with(
                    &key,
                    IMPORTED_VERSION,
                    |_, _| {
                        let result = open(true).inspect_err(|e| {
                            *refused.borrow_mut() = import_refusal(e, &arn);
                        })?;
                        let usable = matches!(result, Opened::Material { .. });
                        *opened.borrow_mut() = Some(result);
                        if usable {
                            Ok(())
                        } else {
                            // Nothing was kept; the caller is told why below.
                            Err(ClusterError::Hsm(crate::hsm::HsmError::new(
                                cluster.name(),
                                Failure::Rejected,
                            )))
                        }
                    },
                    |batch| {
                        let opened = opened.borrow().clone();
                        self.record_first_import(&key, opened, model, valid_to, now, batch)
                    },
                ),
            };
            if let Some(refusal) = refused.into_inner() {
                return Err(refusal);
            }
            match (outcome, opened.into_inner()) {
                (_, Some(Opened::DifferentMaterial)) => return Err(incorrect_material()),
                (_, Some(Opened::Unfit)) => return Err(unfit_material(spec.spec)),
                (Err(error), _) => return Err(error),
                (Ok(()), _) => {}
            }
            if held == Held::Material {
                // The same material again: only the expiration changes.
                self.update_key(&key.store_key(), |record, _| {
                    check_origin(record)?;
                    state::check(Operation::ImportKeyMaterial, record.state, &arn)?;
                    if record.materials.is_empty() {
                        return Err(KmsError::Conflict(format!(
                            "A concurrent change to {arn} won: retry the request"
                        )));
                    }
                    let stored = record.import.get_or_insert_with(ImportRecord::default);
                    stored.expiration_model = Some(model.to_owned());
                    stored.valid_to = valid_to;
                    Ok(())
                })?;
            }
            Ok(())
        })
    }

    /// Adds to `batch` the record of a key's first imported material, `opened` in the HSM:
    /// the key check value kept (or checked against the one kept, and against its
    /// multi-Region copies'), the expiration, the material's version, the public key of a
    /// pair; a key pending import becomes Enabled.
    fn record_first_import(
        &self,
        key: &KeyRecord,
        opened: Option<Opened>,
        model: &str,
        valid_to: Option<i64>,
        now: i64,
        batch: &mut Batch,
    ) -> Result<(), KmsError> {
        let arn = key.arn();
        let (mut record, revision) = self
            .stored_key(&key.store_key())?
            .ok_or_else(|| KmsError::NotFound(format!("Key '{arn}' does not exist")))?;
        check_origin(&record)?;
        state::check(Operation::ImportKeyMaterial, record.state, &arn)?;
        let Some(Opened::Material {
            check_value,
            public,
        }) = opened
        else {
            return Err(KmsError::KmsInternal(
                "the import has no key check value".into(),
            ));
        };
        let stored = record.import.get_or_insert_with(ImportRecord::default);
        if !record.materials.is_empty() || !stored.destruction_owed.is_empty() {
            return Err(KmsError::Conflict(format!(
                "A concurrent change to {arn} won: retry the request"
            )));
        }
        match &stored.check_value {
            Some(kept) if *kept != hex::encode(check_value) => {
                return Err(incorrect_material());
            }
            Some(_) => {}
            None => stored.check_value = Some(hex::encode(check_value)),
        }
        // Two copies' first imports racing: the one committed second finds
        // the other's check value here, or conflicts on its revision.
        for (copy_key, copy, copy_revision) in self.other_copies(key)? {
            let kept = copy.import.and_then(|import| import.check_value);
            if kept.is_some_and(|kept| kept != hex::encode(check_value)) {
                return Err(incorrect_material());
            }
            batch.expect(
                Table::Keys,
                copy_key.as_bytes(),
                Precondition::ExpectRevision(copy_revision),
            );
        }
        stored.expiration_model = Some(model.to_owned());
        stored.valid_to = valid_to;
        record.materials = vec![MaterialRecord {
            version: IMPORTED_VERSION,
            created: now,
            rotation_type: None,
            pool_object: None,
        }];
        if record.state == KeyState::PendingImport {
            record.state = KeyState::Enabled;
        }
        if let Some(public) = &public {
            // As for a generated pair: GetPublicKey answers from the record.
            use base64::Engine as _;
            record.public_key = Some(
                base64::engine::general_purpose::STANDARD
                    .encode(crate::hsm::material::subject_public_key_info(public)),
            );
        }
        batch.put_if(
            Table::Keys,
            record.store_key().as_bytes(),
            Precondition::ExpectRevision(revision),
            encode(&record)?,
        );
        Ok(())
    }

    /// DeleteImportedKeyMaterial: the key stops working at once (PendingImport, or still
    /// PendingDeletion), then its material is destroyed on every member and verified gone.
    /// A member that cannot be reached owes the destruction, which the maintenance run
    /// finishes when it returns.
    pub fn delete_imported_key_material(
        &self,
        caller: &Caller,
        request: KeyIdRequest,
    ) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::DeleteImportedKeyMaterial);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            let key = self.import_key_for(
                caller,
                call,
                Access::of(Operation::DeleteImportedKeyMaterial),
                &request.key_id,
            )?;
            call.response_elements = Some(serde_json::json!({ "keyId": key.arn() }));
            self.discard_imported_material(&key.store_key(), Operation::DeleteImportedKeyMaterial)
                .map(drop)
        })
    }

    /// Takes the material away from an EXTERNAL key: durably first (the key reads as
    /// PendingImport, unless pending deletion, and its versions are owed for destruction),
    /// then destroys them on every member, then records what is still owed.
    fn discard_imported_material(
        &self,
        store_key: &str,
        operation: Operation,
    ) -> Result<Expiry, KmsError> {
        let key = self.update_key(store_key, |record, _| {
            check_origin(record)?;
            state::check(operation, record.state, record.arn_display())?;
            let versions: Vec<u32> = record.materials.iter().map(|m| m.version).collect();
            record.materials.clear();
            let import = record.import.get_or_insert_with(ImportRecord::default);
            import.valid_to = None;
            for version in versions {
                if !import.destruction_owed.contains(&version) {
                    import.destruction_owed.push(version);
                }
            }
            if record.state != KeyState::PendingDeletion {
                record.state = KeyState::PendingImport;
            }
            Ok(record.clone())
        })?;
        self.finish_owed_destruction(&key)
    }

    /// Destroys the material versions `key` owes on every member; forgets the ones verified
    /// gone everywhere.
    fn finish_owed_destruction(&self, key: &KeyRecord) -> Result<Expiry, KmsError> {
        let owed = key
            .import
            .as_ref()
            .map(|import| import.destruction_owed.clone())
            .unwrap_or_default();
        if owed.is_empty() {
            return Ok(Expiry::Done);
        }
        let cluster = self.cluster_of(key)?;
        let mut destroyed = Vec::new();
        let mut pending = std::collections::BTreeSet::new();
        for version in &owed {
            let report = cluster.destroy_key(&MaterialId::new(key.key_id.clone(), *version));
            if report.complete() {
                destroyed.push(*version);
            } else {
                pending.extend(report.pending.into_iter().map(|error| error.member));
            }
        }
        self.update_key(&key.store_key(), |record, _| {
            if let Some(import) = record.import.as_mut() {
                import.destruction_owed.retain(|v| !destroyed.contains(v));
            }
            Ok(())
        })?;
        if pending.is_empty() {
            Ok(Expiry::Done)
        } else {
            Ok(Expiry::Pending(pending.into_iter().collect()))
        }
    }

    /// The maintenance run's part: expires imported material whose `ValidTo` has come (a
    /// `DeleteExpiredKeyMaterial` service event each), finishes destructions still owed, and
    /// destroys expired wrapping keys. Returns the ARNs expired and the failures.
    pub(super) fn expire_imported_material(&self) -> Result<(Vec<String>, Vec<String>), KmsError> {
        let now = self.now();
        let mut expired = Vec::new();
        let mut failures = Vec::new();
        for key in self.all_keys()? {
            let Some(import) = key.import.as_ref() else {
                continue;
            };
            let due = !key.materials.is_empty() && import.valid_to.is_some_and(|to| to <= now);
            let outcome = if due {
                let outcome =
                    self.discard_imported_material(&key.store_key(), Operation::DescribeKey);
                if outcome.is_ok() {
                    self.service_event(
                        &key,
                        "DeleteExpiredKeyMaterial",
                        serde_json::json!({ "keyId": key.key_id }),
                    );
                    expired.push(key.arn());
                }
                outcome
            } else if !import.destruction_owed.is_empty() {
                self.finish_owed_destruction(&key)
            } else {
                continue;
            };
            match outcome {
                Ok(Expiry::Done) => {}
                Ok(Expiry::Pending(members)) => failures.push(format!(
                    "{}: imported key material still to be destroyed on {}",
                    key.arn(),
                    members.join(", ")
                )),
                Err(error) => failures.push(format!("{}: {error}", key.arn())),
            }
        }
        if let Err(error) = self.cluster.destroy_expired_wrapping_keys(now / 1000) {
            failures.push(format!("expired wrapping keys: {error}"));
        }
        Ok((expired, failures))
    }

    /// The prologue of the import operations: resolve (key id or ARN), authorize, then the
    /// key's origin, then its state.
    fn import_key_for(
        &self,
        caller: &Caller,
        call: &mut Call,
        access: Access<'_>,
        input: &str,
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let operation = access.operation();
        let (key, alias) = self.resolve_reference(
            caller,
            call,
            operation,
            ("keyId", input),
            Naming::KeyIdOrArn,
        )?;
        self.authorize(caller, &key, alias.as_deref(), access)?;
        check_origin(&key)?;
        state::check(operation, key.state, key.arn_display())?;
        Ok(key)
    }

    fn seal_token(&self, claims: &TokenClaims) -> Result<Vec<u8>, KmsError> {
        let plaintext = serde_json::to_vec(claims)
            .map_err(|e| KmsError::KmsInternal(format!("cannot encode an import token: {e}")))?;
        let sealed = self
            .cluster
            .seal_internal(TOKEN_KEY, TOKEN_KEY_LABEL, TOKEN_AAD, &plaintext)
            .map_err(cluster_error)?;
        let mut token = Vec::with_capacity(TOKEN_MAGIC.len() + 1 + IV_LEN + plaintext.len() + 16);
        token.extend_from_slice(TOKEN_MAGIC);
        token.push(TOKEN_VERSION);
        token.extend_from_slice(sealed.iv());
        token.extend_from_slice(sealed.ciphertext_and_tag());
        Ok(token)
    }

    fn open_token(&self, token: &[u8]) -> Result<TokenClaims, KmsError> {
        let rest = token
            .strip_prefix(TOKEN_MAGIC)
            .and_then(|rest| rest.strip_prefix(&[TOKEN_VERSION]))
            .ok_or_else(invalid_token)?;
        if rest.len() <= IV_LEN {
            return Err(invalid_token());
        }
        let (iv, sealed) = rest.split_at(IV_LEN);
        let plaintext = self
            .cluster
            .open_internal(TOKEN_KEY, TOKEN_AAD, iv, sealed)
            .map_err(|error| {
                // No token key yet (no token was ever issued here): the token is forged too.
                let never_issued = matches!(&error, ClusterError::Unavailable { failures, .. }
                    if !failures.is_empty()
                        && failures.iter().all(|f| matches!(f.failure, Failure::KeyMissing(_))));
                if error.is_rejected_ciphertext() || never_issued {
                    invalid_token()
                } else {
                    cluster_error(error)
                }
            })?;
        serde_json::from_slice(&plaintext).map_err(|_| invalid_token())
    }
}

/// The origin rule of the other operations: key rotation does not apply to imported
/// material (AWS: UnsupportedOperationException, as the state table answers for a key
/// pending import).
pub(super) fn check_origin_allows(operation: Operation, key: &KeyRecord) -> Result<(), KmsError> {
    let rotation = matches!(
        operation,
        Operation::EnableKeyRotation
            | Operation::DisableKeyRotation
            | Operation::GetKeyRotationStatus
            | Operation::RotateKeyOnDemand
            | Operation::ListKeyRotations
    );
    if rotation && key.origin == "EXTERNAL" {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} origin is EXTERNAL which is not valid for this operation.",
            key.arn()
        )));
    }
    Ok(())
}

/// The key's origin must be EXTERNAL (AWS's message, as for the other origin refusals).
fn check_origin(key: &KeyRecord) -> Result<(), KmsError> {
    if key.origin == "EXTERNAL" {
        Ok(())
    } else {
        Err(KmsError::UnsupportedOperation(format!(
            "{} origin is {} which is not valid for this operation.",
            key.arn(),
            key.origin
        )))
    }
}

fn invalid_token() -> KmsError {
    KmsError::InvalidImportToken(
        "The import token is invalid or is associated with a different KMS key.".into(),
    )
}

fn incorrect_material() -> KmsError {
    KmsError::IncorrectKeyMaterial(
        "The key material is not the same key material that was previously imported into this KMS key.".into(),
    )
}

/// Material that does not fit the key spec, with what the spec takes.
fn unfit_material(spec: KeySpec) -> KmsError {
    let takes = match material_lengths(spec) {
        Some(lengths) if spec == KeySpec::SymmetricDefault => {
            format!("256-bit ({}-byte) key material", lengths.start())
        }
        Some(lengths) => format!(
            "key material of {} to {} bytes",
            lengths.start(),
            lengths.end()
        ),
        None => "a DER-encoded PKCS #8 private key of that key spec".to_owned(),
    };
    KmsError::IncorrectKeyMaterial(format!(
        "The key material is invalid: key spec {} takes {takes}.",
        spec.as_str()
    ))
}

/// The wrapping algorithms AWS allows for the key's material: RSA private keys only with
/// `RSA_AES_KEY_WRAP_*`; ECC_NIST_P521 not with `RSAES_OAEP_*` under an RSA_2048 wrapping key
/// (its PKCS #8 structure is longer than OAEP can carry there).
fn check_wrapping_for(
    spec: KeySpec,
    algorithm: WrappingAlgorithm,
    wrapping_spec: WrappingKeySpec,
) -> Result<(), KmsError> {
    if algorithm.is_two_step() {
        return Ok(());
    }
    if spec.rsa_bits().is_some() {
        return Err(KmsError::Validation(format!(
            "The wrapping algorithm {} cannot wrap {} key material: RSA private keys are imported with RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256.",
            algorithm.as_str(),
            spec.as_str()
        )));
    }
    if spec == KeySpec::EccNistP521 && wrapping_spec == WrappingKeySpec::Rsa2048 {
        return Err(KmsError::Validation(format!(
            "The wrapping algorithm {} with wrapping key spec RSA_2048 cannot wrap ECC_NIST_P521 key material: use a larger wrapping key or an RSA_AES_KEY_WRAP algorithm.",
            algorithm.as_str()
        )));
    }
    Ok(())
}

/// A refusal of the HSM step as the caller sees it: material the HSM could not open is
/// `InvalidCiphertextException`, a wrapping key that is gone makes the token invalid.
/// `None` for any other failure (the key store's usual mapping applies).
fn import_refusal(error: &ClusterError, arn: &str) -> Option<KmsError> {
    let undecryptable = || {
        KmsError::InvalidCiphertext(format!(
            "The encrypted key material for {arn} could not be decrypted with the wrapping key and algorithm of the import token."
        ))
    };
    match error {
        // Checked when the parameters were issued; an HSM that refuses the OAEP parameters
        // at the unwrap itself is named as the limit, not taken for a failure.
        ClusterError::Hsm(hsm) if hsm.refuses_mechanism_parameters() => {
            Some(KmsError::UnsupportedOperation(
                "The HSMs of this key store do not support the OAEP parameters of the import token's wrapping algorithm; get new parameters with RSAES_OAEP_SHA_1 or RSA_AES_KEY_WRAP_SHA_1.".into(),
            ))
        }
        ClusterError::Hsm(hsm) => match &hsm.failure {
            Failure::Rejected => Some(undecryptable()),
            Failure::KeyMissing(_) => Some(invalid_token()),
            _ => None,
        },
        ClusterError::UnknownMember { .. } => Some(invalid_token()),
        _ => None,
    }
}

fn wrapping_algorithm(name: &str) -> Result<WrappingAlgorithm, KmsError> {
    match WrappingAlgorithm::from_name(name) {
        Some(algorithm) => Ok(algorithm),
        None if name == "RSAES_PKCS1_V1_5" => Err(KmsError::UnsupportedOperation(
            "The wrapping algorithm RSAES_PKCS1_V1_5 is no longer supported.".into(),
        )),
        None => Err(KmsError::constraint_violation(
            "wrappingAlgorithm",
            Some(name),
            &[
                "Member must satisfy enum value set: [RSAES_PKCS1_V1_5, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, RSA_AES_KEY_WRAP_SHA_1, RSA_AES_KEY_WRAP_SHA_256]",
            ],
        )),
    }
}

fn wrapping_key_spec(name: &str) -> Result<WrappingKeySpec, KmsError> {
    WrappingKeySpec::from_name(name).ok_or_else(|| {
        KmsError::constraint_violation(
            "wrappingKeySpec",
            Some(name),
            &["Member must satisfy enum value set: [RSA_2048, RSA_3072, RSA_4096]"],
        )
    })
}

/// `CiphertextType` members: 1 to 6144 bytes (values left out: they are ciphertexts).
fn check_ciphertext_param(param: &str, value: &[u8]) -> Result<(), KmsError> {
    if value.is_empty() {
        return Err(KmsError::constraint_violation(
            param,
            None,
            &["Member must have length greater than or equal to 1"],
        ));
    }
    if value.len() > CIPHERTEXT_MAX {
        return Err(KmsError::constraint_violation(
            param,
            None,
            &["Member must have length less than or equal to 6144"],
        ));
    }
    Ok(())
}

/// The material's end (epoch milliseconds) from the request's `ExpirationModel` and
/// `ValidTo` (epoch seconds), as AWS's rules have them.
fn expiration(model: &str, valid_to: Option<f64>, now: i64) -> Result<Option<i64>, KmsError> {
    match (model, valid_to) {
        (EXPIRES, None) => Err(KmsError::Validation(
            "A ValidTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES".into(),
        )),
        (EXPIRES, Some(seconds)) => {
            if !seconds.is_finite() {
                return Err(KmsError::Validation("ValidTo is not a valid date".into()));
            }
            let millis = (seconds * 1000.0) as i64;
            if millis <= now {
                return Err(KmsError::Validation(
                    "The ValidTo date must be in the future".into(),
                ));
            }
            if millis > now + VALID_TO_MAX_DAYS * DAY_MILLIS {
                return Err(KmsError::Validation(
                    "The ValidTo date must be at most 365 days in the future".into(),
                ));
            }
            Ok(Some(millis))
        }
        (DOES_NOT_EXPIRE, None) => Ok(None),
        (DOES_NOT_EXPIRE, Some(_)) => Err(KmsError::Validation(
            "A ValidTo date must not be set if the ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE"
                .into(),
        )),
        (other, _) => Err(KmsError::constraint_violation(
            "expirationModel",
            Some(other),
            &[
                "Member must satisfy enum value set: [KEY_MATERIAL_EXPIRES, KEY_MATERIAL_DOES_NOT_EXPIRE]",
            ],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfit_material_says_what_the_key_spec_takes() {
        for (spec, takes) in [
            (KeySpec::SymmetricDefault, "256-bit (32-byte) key material"),
            (KeySpec::Hmac224, "key material of 28 to 64 bytes"),
            (KeySpec::Hmac512, "key material of 64 to 128 bytes"),
            (
                KeySpec::EccSecgP256k1,
                "a DER-encoded PKCS #8 private key of that key spec",
            ),
        ] {
            let error = unfit_material(spec);
            assert_eq!(error.code(), "IncorrectKeyMaterialException");
            assert_eq!(
                error.message(),
                format!(
                    "The key material is invalid: key spec {} takes {takes}.",
                    spec.as_str()
                )
            );
        }
    }

    #[test]
    fn wrapping_algorithms_follow_aws_rules_per_key_spec() {
        use WrappingAlgorithm::*;
        use WrappingKeySpec::*;
        for (spec, algorithm, wrapping, allowed) in [
            (KeySpec::Rsa2048, RsaesOaepSha1, Rsa4096, false),
            (KeySpec::Rsa4096, RsaesOaepSha256, Rsa4096, false),
            (KeySpec::Rsa2048, RsaAesKeyWrapSha1, Rsa2048, true),
            (KeySpec::EccNistP521, RsaesOaepSha1, Rsa2048, false),
            (KeySpec::EccNistP521, RsaesOaepSha256, Rsa3072, true),
            (KeySpec::EccNistP521, RsaAesKeyWrapSha256, Rsa2048, true),
            (KeySpec::EccNistP384, RsaesOaepSha1, Rsa2048, true),
            (KeySpec::Hmac512, RsaesOaepSha1, Rsa2048, true),
            (KeySpec::SymmetricDefault, RsaesOaepSha256, Rsa2048, true),
        ] {
            let answer = check_wrapping_for(spec, algorithm, wrapping);
            assert_eq!(
                answer.is_ok(),
                allowed,
                "{spec:?} {algorithm:?} {wrapping:?}: {answer:?}"
            );
            if let Err(error) = answer {
                assert_eq!(error.code(), "ValidationException");
            }
        }
    }

    #[test]
    fn an_hsm_that_refuses_the_oaep_parameters_at_the_unwrap_is_named_as_the_limit() {
        use cryptoki::context::Function;
        use cryptoki::error::RvError;
        let refused = |rv| {
            ClusterError::Hsm(crate::hsm::HsmError::new(
                "hsm-a",
                Failure::Pkcs11 {
                    function: Function::UnwrapKey,
                    rv,
                },
            ))
        };
        for rv in [
            RvError::ArgumentsBad,
            RvError::MechanismParamInvalid,
            RvError::MechanismInvalid,
        ] {
            let answer = import_refusal(&refused(rv), "arn").map(|e| e.code());
            assert_eq!(answer, Some("UnsupportedOperationException"), "{rv:?}");
        }
        assert!(import_refusal(&refused(RvError::DeviceError), "arn").is_none());
    }

    #[test]
    fn expiration_follows_aws_rules() {
        let now = 1_000_000_000_000;
        let future = (now / 1000 + 3600) as f64;
        assert_eq!(
            expiration(EXPIRES, Some(future), now),
            Ok(Some((future * 1000.0) as i64))
        );
        assert_eq!(expiration(DOES_NOT_EXPIRE, None, now), Ok(None));
        for (model, valid_to) in [
            (EXPIRES, None),
            (EXPIRES, Some((now / 1000 - 1) as f64)),
            (EXPIRES, Some((now / 1000 + 366 * 86400) as f64)),
            (DOES_NOT_EXPIRE, Some(future)),
            ("NEVER", None),
        ] {
            assert_eq!(
                expiration(model, valid_to, now).unwrap_err().code(),
                "ValidationException",
                "{model} {valid_to:?}"
            );
        }
    }
}
