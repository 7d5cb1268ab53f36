//! GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext: an RSA or EC key pair made
//! by an HSM member for the caller's own use, its private key (DER PKCS#8) returned in the
//! clear and encrypted under a symmetric KMS key in this store's ciphertext format (so
//! Decrypt, with the same encryption context, opens it), its public key as DER
//! SubjectPublicKeyInfo. The plaintext private key travels only as a [`SecretSlice`]; the
//! audit trail records the key, the pair spec and the context, never a key.

use secrecy::SecretSlice;

use super::api::*;
use super::crypto_ops::{crypto_access, symmetric_encryption_key};
use super::signing::dry_run;
use super::{Caller, KeyStore, Naming, cluster_error};
use crate::audit::event::Call;
use crate::crypto::context::EncryptionContext;
use crate::error::KmsError;
use crate::hsm::data_key_pair::{DataKeyPair, data_key_pair_spec};
use crate::keys::state::Operation;

/// The `DataKeyPairSpec` enum of the API model.
const MODEL_PAIR_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SM2",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
];

impl KeyStore {
    /// GenerateDataKeyPair: a fresh key pair, its private key in the clear and encrypted
    /// under the symmetric key `KeyId`.
    pub fn generate_data_key_pair(
        &self,
        caller: &Caller,
        request: GenerateDataKeyPairRequest,
    ) -> Result<GenerateDataKeyPairResponse, KmsError> {
        let call = pair_call(Operation::GenerateDataKeyPair, &request);
        self.audited(caller, call, |call| {
            let (key_id, pair, private_key_ciphertext_blob) =
                self.data_key_pair(caller, call, &request, Operation::GenerateDataKeyPair)?;
            Ok(GenerateDataKeyPairResponse {
                private_key_ciphertext_blob,
                private_key_plaintext: SecretSlice::from(pair.private_pkcs8.to_vec()),
                public_key: pair.public_spki,
                key_id,
                key_pair_spec: request.key_pair_spec.clone(),
            })
        })
    }

    /// GenerateDataKeyPairWithoutPlaintext: the same, without the plaintext private key.
    pub fn generate_data_key_pair_without_plaintext(
        &self,
        caller: &Caller,
        request: GenerateDataKeyPairRequest,
    ) -> Result<GenerateDataKeyPairWithoutPlaintextResponse, KmsError> {
        let call = pair_call(Operation::GenerateDataKeyPairWithoutPlaintext, &request);
        self.audited(caller, call, |call| {
            let (key_id, pair, private_key_ciphertext_blob) = self.data_key_pair(
                caller,
                call,
                &request,
                Operation::GenerateDataKeyPairWithoutPlaintext,
            )?;
            Ok(GenerateDataKeyPairWithoutPlaintextResponse {
                private_key_ciphertext_blob,
                public_key: pair.public_spki,
                key_id,
                key_pair_spec: request.key_pair_spec.clone(),
            })
        })
    }

    /// Both operations: checks, authorization (`kms:EncryptionContext*`), the pair made by
    /// a member, and its private key sealed under the key.
    fn data_key_pair(
        &self,
        caller: &Caller,
        call: &mut Call,
        request: &GenerateDataKeyPairRequest,
        operation: Operation,
    ) -> Result<(String, DataKeyPair, Vec<u8>), KmsError> {
        if !MODEL_PAIR_SPECS.contains(&request.key_pair_spec.as_str()) {
            return Err(KmsError::constraint_violation(
                "keyPairSpec",
                Some(&request.key_pair_spec),
                &[&format!(
                    "Member must satisfy enum value set: [{}]",
                    MODEL_PAIR_SPECS.join(", ")
                )],
            ));
        }
        if request.recipient.is_some() {
            return Err(KmsError::UnsupportedOperation(
                "Recipient (Nitro Enclaves attestation) is not supported: there is no enclave on premises.".into(),
            ));
        }
        let spec = data_key_pair_spec(&request.key_pair_spec).ok_or_else(|| {
            KmsError::UnsupportedOperation(format!(
                "KeyPairSpec {} is not supported by this key store.",
                request.key_pair_spec
            ))
        })?;
        let context =
            EncryptionContext::new(request.encryption_context.clone().unwrap_or_default())?;
        let access =
            crypto_access(operation, &context, None).with_grant_tokens(&request.grant_tokens);
        let key = self.key_for(
            caller,
            call,
            access,
            "keyId",
            &request.key_id,
            Naming::AnyReference,
        )?;
        symmetric_encryption_key(&key, operation.as_str())?;
        dry_run(request.dry_run)?;
        let pair = self
            .cluster_of(&key)?
            .on_any_member(|member| member.generate_data_key_pair(spec))
            .map_err(cluster_error)?;
        call.served_by(pair.member.name());
        let sealed = self.seal(call, &key, &context, &pair.value.private_pkcs8)?;
        Ok((key.arn(), pair.value, sealed))
    }
}

/// What the audit trail records of a data key pair call.
fn pair_call(operation: Operation, request: &GenerateDataKeyPairRequest) -> Call {
    let mut call = Call::of(operation);
    call.param("keyId", request.key_id.as_str())
        .param("keyPairSpec", request.key_pair_spec.as_str())
        .context("encryptionContext", request.encryption_context.as_ref());
    call
}
