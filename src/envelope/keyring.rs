//! Keyrings: who wraps a message's data key and who can unwrap it. The KMS keyring asks a
//! key store for a data key under its first key id and has each further key id encrypt a
//! copy; on decrypt it asks for the copies it is allowed to (its key ids, or in discovery
//! mode any key of the filter's accounts and partition) until one succeeds. The key store
//! is reached in-process ([`LocalKms`]) or over the AWS KMS wire protocol (`HttpKms` of the
//! `envelope-http` feature, or the AWS SDK's `SdkKms`), behind one [`KmsClient`] trait. It
//! never logs or returns a data key outside a zeroizing type.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretBox, SecretSlice};

use super::EnvelopeError;
use super::format::{EncryptedDataKey, EncryptionContext};
use super::materials::DataKey;
use super::suite::{AlgorithmSuite, KEY_LEN};
use crate::keystore::api::{DecryptRequest, EncryptRequest, GenerateDataKeyRequest};
use crate::keystore::{Caller, KeyStore};

/// The provider id of encrypted data keys wrapped by AWS KMS (and by hsm-kms).
pub const KMS_PROVIDER_ID: &str = "aws-kms";

/// A failed key store call: the AWS exception name and its message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{exception}: {message}")]
pub struct KmsCallError {
    /// The exception name, e.g. `AccessDeniedException`.
    pub exception: String,
    /// The exception's message.
    pub message: String,
}

/// A fresh data key from the key store.
pub struct GeneratedDataKey {
    /// The data key, zeroized on drop.
    pub plaintext: DataKey,
    /// The data key encrypted under the key store key.
    pub ciphertext_blob: Vec<u8>,
    /// The ARN of the key that wrapped it.
    pub key_arn: String,
}

/// The three key store operations a keyring needs, in-process or over the wire.
pub trait KmsClient: Send + Sync {
    /// GenerateDataKey with `KeySpec` AES_256.
    fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsCallError>;

    /// Encrypt a copy of a data key; returns the ciphertext blob and the key's ARN.
    fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, String), KmsCallError>;

    /// Decrypt a data key under `key_id`; returns the plaintext and the key's ARN.
    fn decrypt(
        &self,
        key_id: &str,
        ciphertext_blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<(SecretSlice<u8>, String), KmsCallError>;
}

/// The key store in this process, called as one caller.
pub struct LocalKms {
    store: Arc<KeyStore>,
    caller: Caller,
}

impl LocalKms {
    /// Calls `store` as its account's root principal in this process.
    pub fn new(store: Arc<KeyStore>) -> LocalKms {
        let caller = Caller::local(store.scope());
        LocalKms { store, caller }
    }
}

fn call_error(error: crate::error::KmsError) -> KmsCallError {
    KmsCallError {
        exception: error.code().to_owned(),
        message: error.message().to_owned(),
    }
}

fn context_param(context: &EncryptionContext) -> Option<EncryptionContext> {
    (!context.is_empty()).then(|| context.clone())
}

impl KmsClient for LocalKms {
    fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsCallError> {
        let response = self
            .store
            .generate_data_key(
                &self.caller,
                GenerateDataKeyRequest {
                    key_id: key_id.to_owned(),
                    encryption_context: context_param(context),
                    key_spec: Some("AES_256".to_owned()),
                    ..Default::default()
                },
            )
            .map_err(call_error)?;
        Ok(GeneratedDataKey {
            plaintext: data_key(response.plaintext.expose_secret()).map_err(|_| KmsCallError {
                exception: "KMSInternalException".to_owned(),
                message: "GenerateDataKey returned a key of the wrong length".to_owned(),
            })?,
            ciphertext_blob: response.ciphertext_blob,
            key_arn: response.key_id,
        })
    }

    fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, String), KmsCallError> {
        let response = self
            .store
            .encrypt(
                &self.caller,
                EncryptRequest {
                    key_id: key_id.to_owned(),
                    plaintext: SecretSlice::from(plaintext.to_vec()),
                    encryption_context: context_param(context),
                    ..Default::default()
                },
            )
            .map_err(call_error)?;
        Ok((response.ciphertext_blob, response.key_id))
    }

    fn decrypt(
        &self,
        key_id: &str,
        ciphertext_blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<(SecretSlice<u8>, String), KmsCallError> {
        let response = self
            .store
            .decrypt(
                &self.caller,
                DecryptRequest {
                    ciphertext_blob: ciphertext_blob.to_vec(),
                    encryption_context: context_param(context),
                    key_id: Some(key_id.to_owned()),
                    ..Default::default()
                },
            )
            .map_err(call_error)?;
        Ok((response.plaintext, response.key_id))
    }
}

/// Copies a 32-byte data key into a zeroizing box, refusing any other length.
pub fn data_key(bytes: &[u8]) -> Result<DataKey, EnvelopeError> {
    let array: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
        EnvelopeError::Format(format!(
            "a data key of {} bytes; the suite needs {KEY_LEN}",
            bytes.len()
        ))
    })?;
    Ok(SecretBox::new(Box::new(array)))
}

/// Wraps a new message's data key, and unwraps an existing message's.
pub trait Keyring: Send + Sync {
    /// A fresh data key and its encrypted copies, bound to `context`.
    fn on_encrypt(
        &self,
        suite: AlgorithmSuite,
        context: &EncryptionContext,
    ) -> Result<(DataKey, Vec<EncryptedDataKey>), EnvelopeError>;

    /// The data key of a message, from the first of its copies this keyring can decrypt.
    fn on_decrypt(
        &self,
        suite: AlgorithmSuite,
        context: &EncryptionContext,
        encrypted_data_keys: &[EncryptedDataKey],
    ) -> Result<DataKey, EnvelopeError>;
}

/// Which keys a discovery keyring may use: keys of these accounts in this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryFilter {
    /// The ARN partition, e.g. `aws`.
    pub partition: String,
    /// The 12-digit accounts whose keys may decrypt.
    pub accounts: Vec<String>,
}

impl DiscoveryFilter {
    /// Whether the key ARN is in the filter's partition and one of its accounts.
    fn allows(&self, arn: &str) -> bool {
        let mut parts = arn.splitn(6, ':');
        let (
            Some("arn"),
            Some(partition),
            Some("kms"),
            Some(_region),
            Some(account),
            Some(resource),
        ) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        )
        else {
            return false;
        };
        partition == self.partition
            && resource.starts_with("key/")
            && self.accounts.iter().any(|allowed| allowed == account)
    }
}

/// Which wrapped copies a KMS keyring asks the key store to decrypt.
enum Mode {
    /// Copies wrapped by the listed keys, which also encrypt.
    Strict(Vec<String>),
    /// Copies wrapped by any KMS key (within the filter, when there is one); no encryption.
    Discovery(Option<DiscoveryFilter>),
}

/// A keyring over KMS keys.
pub struct KmsKeyring {
    client: Arc<dyn KmsClient>,
    mode: Mode,
}

impl KmsKeyring {
    /// A keyring that encrypts under `key_ids` (the first generates the data key) and
    /// decrypts only copies wrapped by one of them. Key ids are key ARNs, key ids or (for
    /// encryption only) aliases.
    pub fn strict(
        client: Arc<dyn KmsClient>,
        key_ids: Vec<String>,
    ) -> Result<KmsKeyring, EnvelopeError> {
        if key_ids.is_empty() {
            return Err(EnvelopeError::InvalidInput(
                "a strict keyring needs at least one key id".to_owned(),
            ));
        }
        Ok(KmsKeyring {
            client,
            mode: Mode::Strict(key_ids),
        })
    }

    /// A decrypt-only keyring that tries any KMS key ARN the message names, within the
    /// filter (`None`: any account and partition, which AWS advises against).
    pub fn discovery(client: Arc<dyn KmsClient>, filter: Option<DiscoveryFilter>) -> KmsKeyring {
        KmsKeyring {
            client,
            mode: Mode::Discovery(filter),
        }
    }

    /// Whether this keyring may ask the key store to decrypt a copy wrapped by `arn`.
    fn may_decrypt(&self, arn: &str) -> bool {
        match &self.mode {
            Mode::Discovery(None) => arn.starts_with("arn:"),
            Mode::Discovery(Some(filter)) => filter.allows(arn),
            Mode::Strict(key_ids) => key_ids.iter().any(|id| {
                id == arn
                    || (!id.starts_with("arn:")
                        && !id.starts_with("alias/")
                        && arn.ends_with(&format!(":key/{id}")))
            }),
        }
    }
}

impl Keyring for KmsKeyring {
    fn on_encrypt(
        &self,
        _suite: AlgorithmSuite,
        context: &EncryptionContext,
    ) -> Result<(DataKey, Vec<EncryptedDataKey>), EnvelopeError> {
        let Mode::Strict(key_ids) = &self.mode else {
            return Err(EnvelopeError::InvalidInput(
                "a discovery keyring cannot encrypt: give at least one key id".to_owned(),
            ));
        };
        let Some((generator, others)) = key_ids.split_first() else {
            return Err(EnvelopeError::InvalidInput(
                "a strict keyring needs at least one key id".to_owned(),
            ));
        };
        let generated = self
            .client
            .generate_data_key(generator, context)
            .map_err(EnvelopeError::Kms)?;
        let mut encrypted = vec![EncryptedDataKey {
            provider_id: KMS_PROVIDER_ID.to_owned(),
            provider_info: generated.key_arn.into_bytes(),
            ciphertext: generated.ciphertext_blob,
        }];
        for key_id in others {
            let (ciphertext, arn) = self
                .client
                .encrypt(key_id, generated.plaintext.expose_secret(), context)
                .map_err(EnvelopeError::Kms)?;
            encrypted.push(EncryptedDataKey {
                provider_id: KMS_PROVIDER_ID.to_owned(),
                provider_info: arn.into_bytes(),
                ciphertext,
            });
        }
        Ok((generated.plaintext, encrypted))
    }

    fn on_decrypt(
        &self,
        _suite: AlgorithmSuite,
        context: &EncryptionContext,
        encrypted_data_keys: &[EncryptedDataKey],
    ) -> Result<DataKey, EnvelopeError> {
        let mut failures = Vec::new();
        for key in encrypted_data_keys {
            if key.provider_id != KMS_PROVIDER_ID {
                continue;
            }
            let Ok(arn) = std::str::from_utf8(&key.provider_info) else {
                continue;
            };
            if !self.may_decrypt(arn) {
                continue;
            }
            match self.client.decrypt(arn, &key.ciphertext, context) {
                Ok((plaintext, returned_arn)) if returned_arn == arn => {
                    return data_key(plaintext.expose_secret());
                }
                Ok((_, returned_arn)) => failures.push(format!(
                    "{arn}: the key store answered for another key ({returned_arn})"
                )),
                Err(error) => failures.push(format!("{arn}: {error}")),
            }
        }
        Err(EnvelopeError::NoDecryptableKey(if failures.is_empty() {
            "none of the message's encrypted data keys is wrapped by a key this keyring may use"
                .to_owned()
        } else {
            failures.join("; ")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_filter_checks_partition_account_and_resource() {
        let filter = DiscoveryFilter {
            partition: "aws".to_owned(),
            accounts: vec!["111122223333".to_owned()],
        };
        assert!(filter.allows("arn:aws:kms:us-east-1:111122223333:key/abc"));
        assert!(!filter.allows("arn:aws-cn:kms:us-east-1:111122223333:key/abc"));
        assert!(!filter.allows("arn:aws:kms:us-east-1:444455556666:key/abc"));
        assert!(!filter.allows("arn:aws:kms:us-east-1:111122223333:alias/abc"));
        assert!(!filter.allows("not an arn"));
    }
}
