//! The cryptographic operations: Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
//! GenerateDataKeyWithoutPlaintext and GenerateRandom. All AES work happens inside the HSM
//! cluster; the IV is fresh from the operating system's generator for every ciphertext, and
//! the blob header plus the canonical encryption context are bound as AAD.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretSlice};
use zeroize::Zeroizing;

use super::api::*;
use super::rsa_encryption::RsaCiphertext;
use super::{Access, Caller, KeyStore, Naming, cluster_error};
use crate::audit::event::Call;
use crate::crypto::blob::{BlobHeader, CiphertextBlob, MAX_BLOB_LEN};
use crate::crypto::context::EncryptionContext;
use crate::error::KmsError;
use crate::hsm::{Gcm, GcmSeal};
use crate::keys::records::{KeyRecord, store_key};
use crate::keys::spec::{EncryptionAlgorithm, KeyUsage};
use crate::keys::state::{self, Operation};
use crate::policy::keys;

/// ReEncrypt's action on its source key.
const RE_ENCRYPT_FROM: &str = "kms:ReEncryptFrom";
/// ReEncrypt's action on its destination key.
const RE_ENCRYPT_TO: &str = "kms:ReEncryptTo";

const PLAINTEXT_MAX: usize = 4096;
const CIPHERTEXT_MAX: usize = 6144;
const DATA_KEY_MAX: i64 = 1024;
const RANDOM_MAX: i64 = 1024;

/// Asymmetric algorithms AWS knows: asking for one with a symmetric key is a key-usage error.
const ASYMMETRIC_ALGORITHMS: [&str; 3] = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"];

/// What Decrypt and ReEncrypt say about the ciphertext they open.
struct SealedInput<'a> {
    blob: &'a [u8],
    context: Option<EncryptionContextMap>,
    /// The key the request names (`KeyId`, `SourceKeyId`), if any.
    expected_key: Option<&'a str>,
    algorithm: Option<&'a str>,
    grant_tokens: &'a [String],
}

/// A ciphertext blob opened: its key, the material version that sealed it, the plaintext.
struct OpenedBlob {
    key: Arc<KeyRecord>,
    version: u32,
    plaintext: Zeroizing<Vec<u8>>,
}

/// A fresh data key: its key, the plaintext bytes and the ciphertext blob.
type DataKey = (Arc<KeyRecord>, Zeroizing<Vec<u8>>, Vec<u8>);

impl KeyStore {
    /// Encrypt up to 4096 bytes under a key.
    pub fn encrypt(
        &self,
        caller: &Caller,
        request: EncryptRequest,
    ) -> Result<EncryptResponse, KmsError> {
        let mut call = Call::of(Operation::Encrypt);
        call.param("keyId", request.key_id.as_str())
            .param(
                "encryptionAlgorithm",
                algorithm_name(request.encryption_algorithm.as_deref()),
            )
            .context("encryptionContext", request.encryption_context.as_ref());
        self.audited(caller, call, |call| {
            let plaintext = request.plaintext.expose_secret();
            check_length("plaintext", plaintext.len(), PLAINTEXT_MAX)?;
            check_algorithm(
                "encryptionAlgorithm",
                request.encryption_algorithm.as_deref(),
            )?;
            let context = context(request.encryption_context)?;
            let access = crypto_access(
                Operation::Encrypt,
                &context,
                request.encryption_algorithm.as_deref(),
            )
            .with_grant_tokens(&request.grant_tokens);
            let key = self.key_for(
                caller,
                call,
                access,
                "keyId",
                &request.key_id,
                Naming::AnyReference,
            )?;
            let arn = key.arn();
            if let Some(algorithm) = rsa_algorithm(
                &key,
                Operation::Encrypt,
                request.encryption_algorithm.as_deref(),
            )? {
                let ciphertext_blob =
                    self.rsa_encrypt(call, &key, algorithm, &context, plaintext)?;
                return Ok(EncryptResponse {
                    ciphertext_blob,
                    key_id: arn,
                    encryption_algorithm: algorithm.as_str().to_owned(),
                });
            }
            let ciphertext_blob = self.seal(call, &key, &context, plaintext)?;
            Ok(EncryptResponse {
                ciphertext_blob,
                key_id: arn,
                encryption_algorithm: SYMMETRIC_DEFAULT.to_owned(),
            })
        })
    }

    /// Decrypt a ciphertext blob; `KeyId`, when given, must name the blob's key.
    pub fn decrypt(
        &self,
        caller: &Caller,
        request: DecryptRequest,
    ) -> Result<DecryptResponse, KmsError> {
        let mut call = Call::of(Operation::Decrypt);
        call.param(
            "encryptionAlgorithm",
            algorithm_name(request.encryption_algorithm.as_deref()),
        )
        .context("encryptionContext", request.encryption_context.as_ref());
        if let Some(key_id) = &request.key_id {
            call.param("keyId", key_id.as_str());
        }
        self.audited(caller, call, |call| {
            check_algorithm(
                "encryptionAlgorithm",
                request.encryption_algorithm.as_deref(),
            )?;
            if let Some(opened) = self.rsa_decrypt(caller, call, &request)? {
                return Ok(opened);
            }
            let OpenedBlob {
                key,
                version,
                plaintext,
            } = self.open_blob(
                caller,
                call,
                SealedInput {
                    blob: &request.ciphertext_blob,
                    context: request.encryption_context,
                    expected_key: request.key_id.as_deref(),
                    algorithm: request.encryption_algorithm.as_deref(),
                    grant_tokens: &request.grant_tokens,
                },
                Operation::Decrypt,
            )?;
            Ok(DecryptResponse {
                key_id: key.arn(),
                plaintext: SecretSlice::from(plaintext.to_vec()),
                encryption_algorithm: SYMMETRIC_DEFAULT.to_owned(),
                key_material_id: Some(key.key_material_id(version)),
            })
        })
    }

    /// ReEncrypt: decrypt under the source key and encrypt under the destination key, the
    /// plaintext never leaving this process's zeroized memory.
    pub fn re_encrypt(
        &self,
        caller: &Caller,
        request: ReEncryptRequest,
    ) -> Result<ReEncryptResponse, KmsError> {
        let mut call = Call::of(Operation::ReEncrypt);
        call.param("destinationKeyId", request.destination_key_id.as_str())
            .context(
                "sourceEncryptionContext",
                request.source_encryption_context.as_ref(),
            )
            .context(
                "destinationEncryptionContext",
                request.destination_encryption_context.as_ref(),
            );
        if let Some(source) = &request.source_key_id {
            call.param("sourceKeyId", source.as_str());
        }
        self.audited(caller, call, |call| {
            check_algorithm(
                "sourceEncryptionAlgorithm",
                request.source_encryption_algorithm.as_deref(),
            )?;
            check_algorithm(
                "destinationEncryptionAlgorithm",
                request.destination_encryption_algorithm.as_deref(),
            )?;
            let destination_context = context(request.destination_encryption_context)?;
            let (destination, destination_alias) = self.resolve_reference(
                caller,
                call,
                Operation::ReEncrypt,
                ("destinationKeyId", &request.destination_key_id),
                Naming::AnyReference,
            )?;
            let rsa_source = self.rsa_open(
                caller,
                call,
                RsaCiphertext {
                    operation: Operation::ReEncrypt,
                    param: "sourceKeyId",
                    key: request.source_key_id.as_deref(),
                    algorithm: request.source_encryption_algorithm.as_deref(),
                    ciphertext: &request.ciphertext_blob,
                    context: request.source_encryption_context.as_ref(),
                    grant_tokens: &request.grant_tokens,
                },
            )?;
            let (source, source_algorithm, plaintext) = match rsa_source {
                Some((source, algorithm, plaintext)) => (source, algorithm.as_str(), plaintext),
                None => {
                    let OpenedBlob {
                        key: source,
                        plaintext,
                        ..
                    } = self.open_blob(
                        caller,
                        call,
                        SealedInput {
                            blob: &request.ciphertext_blob,
                            context: request.source_encryption_context,
                            expected_key: request.source_key_id.as_deref(),
                            algorithm: request.source_encryption_algorithm.as_deref(),
                            grant_tokens: &request.grant_tokens,
                        },
                        Operation::ReEncrypt,
                    )?;
                    (source, SYMMETRIC_DEFAULT, plaintext)
                }
            };
            let access = crypto_access(
                Operation::ReEncrypt,
                &destination_context,
                request.destination_encryption_algorithm.as_deref(),
            )
            .under_action(RE_ENCRYPT_TO)
            .with_grant_tokens(&request.grant_tokens);
            self.authorize(caller, &destination, destination_alias.as_deref(), access)?;
            let destination_arn = destination.arn();
            state::check(Operation::ReEncrypt, destination.state, &destination_arn)?;
            let (ciphertext_blob, destination_algorithm) = match rsa_algorithm(
                &destination,
                Operation::ReEncrypt,
                request.destination_encryption_algorithm.as_deref(),
            )? {
                Some(algorithm) => (
                    self.rsa_encrypt(
                        call,
                        &destination,
                        algorithm,
                        &destination_context,
                        &plaintext,
                    )?,
                    algorithm.as_str(),
                ),
                None => (
                    self.seal(call, &destination, &destination_context, &plaintext)?,
                    SYMMETRIC_DEFAULT,
                ),
            };
            Ok(ReEncryptResponse {
                ciphertext_blob,
                source_key_id: source.arn(),
                key_id: destination_arn,
                source_encryption_algorithm: source_algorithm.to_owned(),
                destination_encryption_algorithm: destination_algorithm.to_owned(),
            })
        })
    }

    /// GenerateDataKey: a data key from the HSMs' generator, in plaintext and encrypted.
    pub fn generate_data_key(
        &self,
        caller: &Caller,
        request: GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyResponse, KmsError> {
        let call = data_key_call(Operation::GenerateDataKey, &request);
        self.audited(caller, call, |call| {
            let (key, data_key, ciphertext_blob) =
                self.data_key(caller, call, request, Operation::GenerateDataKey)?;
            Ok(GenerateDataKeyResponse {
                ciphertext_blob,
                plaintext: SecretSlice::from(data_key.to_vec()),
                key_id: key.arn(),
            })
        })
    }

    /// GenerateDataKeyWithoutPlaintext: only the encrypted copy of a fresh data key.
    pub fn generate_data_key_without_plaintext(
        &self,
        caller: &Caller,
        request: GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse, KmsError> {
        let call = data_key_call(Operation::GenerateDataKeyWithoutPlaintext, &request);
        self.audited(caller, call, |call| {
            let (key, _, ciphertext_blob) = self.data_key(
                caller,
                call,
                request,
                Operation::GenerateDataKeyWithoutPlaintext,
            )?;
            Ok(GenerateDataKeyWithoutPlaintextResponse {
                ciphertext_blob,
                key_id: key.arn(),
            })
        })
    }

    /// GenerateRandom: 1–1024 bytes from the HSMs.
    pub fn generate_random(
        &self,
        caller: &Caller,
        request: GenerateRandomRequest,
    ) -> Result<GenerateRandomResponse, KmsError> {
        let mut call = Call::of(Operation::GenerateRandom);
        if let Some(count) = request.number_of_bytes {
            call.param("numberOfBytes", count);
        }
        if let Some(id) = &request.custom_key_store_id {
            call.param("customKeyStoreId", id.as_str());
        }
        self.audited(caller, call, |call| {
            self.authorize_without_key(caller, Operation::GenerateRandom, |c| c)?;
            let cluster = match &request.custom_key_store_id {
                Some(id) => self.connected_store(caller, id)?,
                None => self.cluster.clone(),
            };
            let count = request
                .number_of_bytes
                .ok_or_else(|| KmsError::Validation("NumberOfBytes is required".to_owned()))?;
            check_count("numberOfBytes", count, RANDOM_MAX)?;
            let bytes = cluster.random(count as usize).map_err(cluster_error)?;
            call.served_by(bytes.member.name());
            Ok(GenerateRandomResponse {
                plaintext: SecretSlice::from(bytes.value.to_vec()),
            })
        })
    }

    fn data_key(
        &self,
        caller: &Caller,
        call: &mut Call,
        request: GenerateDataKeyRequest,
        operation: Operation,
    ) -> Result<DataKey, KmsError> {
        let length = match (request.key_spec.as_deref(), request.number_of_bytes) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(KmsError::Validation(
                    "Please specify either number of bytes or key spec.".to_owned(),
                ));
            }
            (Some("AES_256"), None) => 32,
            (Some("AES_128"), None) => 16,
            (Some(other), None) => {
                return Err(KmsError::constraint_violation(
                    "keySpec",
                    Some(other),
                    &["Member must satisfy enum value set: [AES_256, AES_128]"],
                ));
            }
            (None, Some(count)) => {
                check_count("numberOfBytes", count, DATA_KEY_MAX)?;
                count as usize
            }
        };
        let context = context(request.encryption_context)?;
        let key = self.key_for(
            caller,
            call,
            crypto_access(operation, &context, None).with_grant_tokens(&request.grant_tokens),
            "keyId",
            &request.key_id,
            Naming::AnyReference,
        )?;
        let data_key = self.cluster.random(length).map_err(cluster_error)?;
        call.served_by(data_key.member.name());
        let data_key = data_key.value;
        let ciphertext_blob = self.seal(call, &key, &context, &data_key)?;
        Ok((key, data_key, ciphertext_blob))
    }

    /// Encrypts `plaintext` under the key's current material into a ciphertext blob.
    pub(super) fn seal(
        &self,
        call: &mut Call,
        key: &KeyRecord,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        symmetric_encryption_key(key, call.event_name)?;
        let header = BlobHeader::new(key.id(), key.current_version());
        let aad = header.aad(context);
        let seal = GcmSeal::new(&aad, 128).map_err(|e| KmsError::KmsInternal(e.to_string()))?;
        let material = key.material(header.material_version());
        let sealed = self
            .cluster_of(key)?
            .encrypt(&material, &seal, plaintext)
            .map_err(cluster_error)?;
        call.served_by(sealed.member.name());
        header.encode(sealed.value.iv(), sealed.value.ciphertext_and_tag())
    }

    /// Authenticates and decrypts a blob: finds its key, checks `expected_key` and the state.
    fn open_blob(
        &self,
        caller: &Caller,
        call: &mut Call,
        input: SealedInput<'_>,
        operation: Operation,
    ) -> Result<OpenedBlob, KmsError> {
        let SealedInput {
            blob,
            context,
            expected_key,
            algorithm,
            grant_tokens,
        } = input;
        check_length("ciphertextBlob", blob.len(), CIPHERTEXT_MAX)?;
        let context = self::context(context)?;
        let param = match operation {
            Operation::ReEncrypt => "sourceKeyId",
            _ => "keyId",
        };
        let expected = match expected_key {
            Some(reference) => Some(self.resolve_reference(
                caller,
                call,
                operation,
                (param, reference),
                Naming::AnyReference,
            )?),
            None => None,
        };
        let invalid = || KmsError::InvalidCiphertext(String::new());
        if blob.len() > MAX_BLOB_LEN {
            return Err(invalid());
        }
        let parsed = CiphertextBlob::parse(blob)?;
        let header = parsed.header();
        let key_id = header.key_id().to_string();
        if let Some((expected, _)) = &expected
            && expected.key_id != key_id
        {
            return Err(KmsError::IncorrectKey(
                "The key ID in the request does not identify a CMK that can perform this operation.".to_owned(),
            ));
        }
        let key = self
            .key(&store_key(&key_id, caller.scope.region()))?
            .ok_or_else(invalid)?;
        let arn = key.arn();
        call.resource(arn.clone());
        let shared = operation.allows_cross_account() && key.region == caller.scope.region();
        if !key.in_scope(&caller.scope) {
            if !shared {
                return Err(KmsError::AccessDenied(format!(
                    "User: {} is not authorized to perform: kms:{} on resource: {}",
                    caller.principal,
                    operation.as_str(),
                    arn
                )));
            }
            call.key_owner = Some(key.account_id.clone());
        }
        let access = crypto_access(operation, &context, algorithm)
            .under_action(match operation {
                Operation::ReEncrypt => RE_ENCRYPT_FROM,
                _ => "kms:Decrypt",
            })
            .with_grant_tokens(grant_tokens);
        let alias = expected.and_then(|(_, alias)| alias);
        self.authorize(caller, &key, alias.as_deref(), access)?;
        state::check(operation, key.state, &arn)?;
        symmetric_encryption_key(&key, operation.as_str())?;
        if !key
            .materials
            .iter()
            .any(|m| m.version == header.material_version())
        {
            return Err(invalid());
        }
        let aad = header.aad(&context);
        let gcm = Gcm::new(parsed.iv(), &aad, 128).map_err(|_| invalid())?;
        let material = key.material(header.material_version());
        let plaintext = self
            .cluster_of(&key)?
            .decrypt(&material, &gcm, parsed.ciphertext_and_tag())
            .map_err(|error| {
                if error.is_rejected_ciphertext() {
                    invalid()
                } else {
                    cluster_error(error)
                }
            })?;
        call.served_by(plaintext.member.name());
        Ok(OpenedBlob {
            key,
            version: header.material_version(),
            plaintext: plaintext.value,
        })
    }
}

fn context(map: Option<EncryptionContextMap>) -> Result<EncryptionContext, KmsError> {
    EncryptionContext::new(map.unwrap_or_default())
}

fn check_length(param: &str, length: usize, max: usize) -> Result<(), KmsError> {
    if length == 0 {
        return Err(KmsError::constraint_violation(
            param,
            None,
            &["Member must have length greater than or equal to 1"],
        ));
    }
    if length > max {
        return Err(KmsError::constraint_violation(
            param,
            None,
            &[&format!(
                "Member must have length less than or equal to {max}"
            )],
        ));
    }
    Ok(())
}

fn check_count(param: &str, count: i64, max: i64) -> Result<(), KmsError> {
    if count < 1 {
        return Err(KmsError::constraint_violation(
            param,
            Some(&count.to_string()),
            &["Member must have value greater than or equal to 1"],
        ));
    }
    if count > max {
        return Err(KmsError::constraint_violation(
            param,
            Some(&count.to_string()),
            &[&format!(
                "Member must have value less than or equal to {max}"
            )],
        ));
    }
    Ok(())
}

/// Checks an `EncryptionAlgorithm` against the API model's enum (whether it fits the key is
/// decided once the key is known: [`rsa_algorithm`]).
fn check_algorithm(param: &str, algorithm: Option<&str>) -> Result<(), KmsError> {
    match algorithm {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(asymmetric) if ASYMMETRIC_ALGORITHMS.contains(&asymmetric) => Ok(()),
        Some(other) => Err(KmsError::constraint_violation(
            param,
            Some(other),
            &[
                "Member must satisfy enum value set: [SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]",
            ],
        )),
    }
}

/// The access of a cryptographic operation: its encryption context and algorithm
/// (`kms:EncryptionContext:*`, `kms:EncryptionContextKeys`, `kms:EncryptionAlgorithm`).
pub(super) fn crypto_access<'a>(
    operation: Operation,
    context: &'a EncryptionContext,
    algorithm: Option<&'a str>,
) -> Access<'a> {
    Access::of(operation).with(move |request| {
        let mut request = request.with_encryption_context(context.as_map());
        if operation != Operation::GenerateDataKey
            && operation != Operation::GenerateDataKeyWithoutPlaintext
        {
            request.set(keys::ENCRYPTION_ALGORITHM, algorithm_name(algorithm));
        }
        request
    })
}

/// The parameters recorded for GenerateDataKey and GenerateDataKeyWithoutPlaintext.
fn data_key_call(operation: Operation, request: &GenerateDataKeyRequest) -> Call {
    let mut call = Call::of(operation);
    call.param("keyId", request.key_id.as_str())
        .context("encryptionContext", request.encryption_context.as_ref());
    if let Some(spec) = &request.key_spec {
        call.param("keySpec", spec.as_str());
    }
    if let Some(count) = request.number_of_bytes {
        call.param("numberOfBytes", count);
    }
    call
}

/// The algorithm a call names, for the audit record.
fn algorithm_name(algorithm: Option<&str>) -> &str {
    algorithm.unwrap_or(SYMMETRIC_DEFAULT)
}

/// `InvalidKeyUsageException` unless `key` is a symmetric encryption key, the only kind that
/// seals this store's ciphertext blobs and makes data keys.
pub(super) fn symmetric_encryption_key(key: &KeyRecord, operation: &str) -> Result<(), KmsError> {
    if key.key_usage != KeyUsage::EncryptDecrypt.as_str() {
        return Err(KmsError::InvalidKeyUsage(format!(
            "{} key usage is {} which is not valid for {operation}.",
            key.arn(),
            key.key_usage
        )));
    }
    if key.key_spec != SYMMETRIC_DEFAULT {
        return Err(KmsError::InvalidKeyUsage(format!(
            "{} key spec is {} which is not valid for {operation}.",
            key.arn(),
            key.key_spec
        )));
    }
    Ok(())
}

/// The RSAES-OAEP algorithm of a call on an RSA encryption key (`None` for a symmetric key
/// asked for SYMMETRIC_DEFAULT); `InvalidKeyUsageException` when the algorithm does not fit
/// the key.
pub(super) fn rsa_algorithm(
    key: &KeyRecord,
    operation: Operation,
    requested: Option<&str>,
) -> Result<Option<EncryptionAlgorithm>, KmsError> {
    if key.key_spec == SYMMETRIC_DEFAULT && matches!(requested, None | Some(SYMMETRIC_DEFAULT)) {
        return Ok(None);
    }
    let spec = key.material_spec()?;
    if spec.spec.rsa_bits().is_none() {
        return match requested {
            None | Some(SYMMETRIC_DEFAULT) => Ok(None),
            Some(other) => Err(KmsError::InvalidKeyUsage(format!(
                "The encryption algorithm {other} is not valid for {}, whose key spec is {}.",
                key.arn(),
                key.key_spec
            ))),
        };
    }
    if spec.usage != KeyUsage::EncryptDecrypt {
        symmetric_encryption_key(key, operation.as_str())?;
    }
    requested
        .and_then(EncryptionAlgorithm::parse)
        .map(Some)
        .ok_or_else(|| {
            KmsError::InvalidKeyUsage(format!(
                "{} has key spec {}: specify EncryptionAlgorithm RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256.",
                key.arn(),
                key.key_spec
            ))
        })
}
