//! Encrypt and Decrypt with RSA keys of usage ENCRYPT_DECRYPT: RSAES-OAEP inside the HSM,
//! the ciphertext the raw RSA output as AWS returns it, so a ciphertext made outside with the
//! public key (`openssl pkeyutl`) decrypts here. Such ciphertexts name no key: Decrypt needs
//! `KeyId` and the `EncryptionAlgorithm`. Asymmetric keys take no encryption context.

use std::sync::Arc;

use secrecy::SecretSlice;
use zeroize::Zeroizing;

use super::api::*;
use super::{Caller, KeyStore, Naming, cluster_error};
use crate::audit::event::Call;
use crate::cluster::{ClusterError, MaterialId};
use crate::crypto::context::EncryptionContext;
use crate::error::KmsError;
use crate::hsm::Failure;
use crate::keys::records::KeyRecord;
use crate::keys::spec::EncryptionAlgorithm;
use crate::keys::state::Operation;

/// The longest RSA ciphertext the API takes (`CiphertextType`).
const CIPHERTEXT_MAX: usize = 6144;

impl KeyStore {
    /// RSAES-OAEP encryption of `plaintext` under `key`'s public key, inside an HSM.
    pub(super) fn rsa_encrypt(
        &self,
        call: &mut Call,
        key: &KeyRecord,
        algorithm: EncryptionAlgorithm,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        no_context(context)?;
        let spec = key.material_spec()?.spec;
        let max = spec.max_oaep_plaintext(algorithm).unwrap_or(0);
        if plaintext.len() > max {
            return Err(KmsError::Validation(format!(
                "Plaintext of {} bytes is too long for {} with key spec {}: at most {max} bytes.",
                plaintext.len(),
                algorithm.as_str(),
                spec.as_str()
            )));
        }
        let sealed = self
            .cluster_of(key)?
            .with_material(&current(key), |member, id| {
                member.oaep_encrypt(id, algorithm, plaintext)
            })
            .map_err(|error| unsupported_or(error, algorithm))?;
        call.served_by(sealed.member.name());
        Ok(sealed.value)
    }

    /// Decrypt with an RSA key, when the request names an RSAES-OAEP algorithm (`None`
    /// otherwise: the ciphertext is one of this store's symmetric blobs).
    pub(super) fn rsa_decrypt(
        &self,
        caller: &Caller,
        call: &mut Call,
        request: &DecryptRequest,
    ) -> Result<Option<DecryptResponse>, KmsError> {
        let opened = self.rsa_open(
            caller,
            call,
            RsaCiphertext {
                operation: Operation::Decrypt,
                param: "keyId",
                key: request.key_id.as_deref(),
                algorithm: request.encryption_algorithm.as_deref(),
                ciphertext: &request.ciphertext_blob,
                context: request.encryption_context.as_ref(),
                grant_tokens: &request.grant_tokens,
            },
        )?;
        Ok(opened.map(|(key, algorithm, plaintext)| DecryptResponse {
            key_id: key.arn(),
            plaintext: SecretSlice::from(plaintext.to_vec()),
            encryption_algorithm: algorithm.as_str().to_owned(),
            key_material_id: Some(key.key_material_id(key.current_version())),
        }))
    }

    /// Opens an RSA ciphertext inside an HSM for Decrypt or ReEncrypt (authorized as
    /// `kms:Decrypt` or `kms:ReEncryptFrom`), when `algorithm` is an RSAES-OAEP one.
    pub(super) fn rsa_open(
        &self,
        caller: &Caller,
        call: &mut Call,
        input: RsaCiphertext<'_>,
    ) -> Result<Option<Opened>, KmsError> {
        let Some(algorithm) = input.algorithm.and_then(EncryptionAlgorithm::parse) else {
            return Ok(None);
        };
        let Some(key_ref) = input.key else {
            return Err(KmsError::Validation(format!(
                "{} is required to decrypt with EncryptionAlgorithm {}: an asymmetric ciphertext names no key.",
                if input.param == "keyId" {
                    "KeyId"
                } else {
                    "SourceKeyId"
                },
                algorithm.as_str()
            )));
        };
        if input.ciphertext.is_empty() || input.ciphertext.len() > CIPHERTEXT_MAX {
            return Err(KmsError::InvalidCiphertext(String::new()));
        }
        let context = EncryptionContext::new(input.context.cloned().unwrap_or_default())?;
        let action = match input.operation {
            Operation::ReEncrypt => "kms:ReEncryptFrom",
            _ => "kms:Decrypt",
        };
        let access =
            super::crypto_ops::crypto_access(input.operation, &context, Some(algorithm.as_str()))
                .under_action(action)
                .with_grant_tokens(input.grant_tokens);
        let key = self.key_for(
            caller,
            call,
            access,
            input.param,
            key_ref,
            Naming::AnyReference,
        )?;
        super::crypto_ops::rsa_algorithm(&key, input.operation, Some(algorithm.as_str()))?;
        no_context(&context)?;
        let opened = self
            .cluster_of(&key)?
            .with_material(&current(&key), |member, id| {
                member.oaep_decrypt(id, algorithm, input.ciphertext)
            })
            .map_err(|error| {
                if error.is_rejected_ciphertext() {
                    KmsError::InvalidCiphertext(String::new())
                } else {
                    unsupported_or(error, algorithm)
                }
            })?;
        call.served_by(opened.member.name());
        Ok(Some((key, algorithm, opened.value)))
    }
}

/// An opened RSA ciphertext: its key, the algorithm and the plaintext.
pub(super) type Opened = (Arc<KeyRecord>, EncryptionAlgorithm, Zeroizing<Vec<u8>>);

/// An RSA ciphertext to open and what names its key.
pub(super) struct RsaCiphertext<'a> {
    pub operation: Operation,
    /// The parameter that names the key (`keyId`, `sourceKeyId`).
    pub param: &'a str,
    pub key: Option<&'a str>,
    pub algorithm: Option<&'a str>,
    pub ciphertext: &'a [u8],
    pub context: Option<&'a crate::keystore::api::EncryptionContextMap>,
    pub grant_tokens: &'a [String],
}

/// Asymmetric keys take no encryption context (AWS: "Asymmetric KMS keys do not support an
/// encryption context").
fn no_context(context: &EncryptionContext) -> Result<(), KmsError> {
    if context.is_empty() {
        Ok(())
    } else {
        Err(KmsError::Validation(
            "EncryptionContext is not supported with asymmetric KMS keys.".to_owned(),
        ))
    }
}

/// `UnsupportedOperationException` when the HSMs' module does not offer the OAEP hash
/// (SoftHSM2 2.6 has only SHA-1); any other failure as every call maps it.
fn unsupported_or(error: ClusterError, algorithm: EncryptionAlgorithm) -> KmsError {
    match &error {
        ClusterError::Hsm(cause) if matches!(cause.failure, Failure::InvalidInput(_)) => {
            KmsError::UnsupportedOperation(format!(
                "{} is not available: {}.",
                algorithm.as_str(),
                cause.failure
            ))
        }
        _ => cluster_error(error),
    }
}

fn current(key: &KeyRecord) -> MaterialId {
    key.material(key.current_version())
}
