//! Cryptographic materials and the managers that produce them: the data key (in plaintext,
//! zeroized on drop) with its encrypted copies for a new message, or the data key recovered
//! for a message being read, plus the signed suite's ECDSA P-384 key. The default manager
//! asks a [`Keyring`] and adds the signing key; it never lets a caller set a reserved
//! encryption context key.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p384::ecdsa::{SigningKey, VerifyingKey};
use secrecy::SecretBox;

use super::EnvelopeError;
use super::format::{
    EncryptedDataKey, EncryptionContext, PUBLIC_KEY_CONTEXT_KEY, RESERVED_CONTEXT_PREFIX,
};
use super::keyring::Keyring;
use super::suite::{AlgorithmSuite, KEY_LEN};

/// A plaintext data key, zeroized when dropped.
pub type DataKey = SecretBox<[u8; KEY_LEN]>;

/// What a new message is encrypted with.
pub struct EncryptionMaterials {
    /// The algorithm suite of the message.
    pub suite: AlgorithmSuite,
    /// The caller's encryption context, plus the public key for the signed suite.
    pub context: EncryptionContext,
    /// The plaintext data key the message's key is derived from.
    pub data_key: DataKey,
    /// The data key encrypted by each key of the keyring, for the header.
    pub encrypted_data_keys: Vec<EncryptedDataKey>,
    /// The signed suite's private key (zeroized on drop by `p384`).
    pub signing_key: Option<SigningKey>,
}

/// What a message is decrypted with.
pub struct DecryptionMaterials {
    /// The algorithm suite the header names.
    pub suite: AlgorithmSuite,
    /// The data key one of the encrypted data keys decrypted to.
    pub data_key: DataKey,
    /// The signed suite's public key, from the encryption context.
    pub verifying_key: Option<VerifyingKey>,
}

/// What a new message needs materials for.
#[derive(Debug, Clone, Copy)]
pub struct EncryptionRequest<'a> {
    /// The caller's encryption context.
    pub context: &'a EncryptionContext,
    /// The algorithm suite the message will use.
    pub suite: AlgorithmSuite,
    /// The plaintext's length when known in advance (the cache needs it to count bytes).
    pub plaintext_length: Option<u64>,
}

/// What a message being decrypted offers.
#[derive(Debug, Clone, Copy)]
pub struct DecryptionRequest<'a> {
    /// The algorithm suite the header names.
    pub suite: AlgorithmSuite,
    /// The header's encryption context.
    pub context: &'a EncryptionContext,
    /// The header's encrypted data keys.
    pub encrypted_data_keys: &'a [EncryptedDataKey],
}

/// Produces materials for messages: directly from a keyring or through a cache.
pub trait MaterialsManager: Send + Sync {
    /// Materials for encrypting one message.
    fn encryption_materials(
        &self,
        request: &EncryptionRequest<'_>,
    ) -> Result<Arc<EncryptionMaterials>, EnvelopeError>;

    /// Materials for decrypting one message.
    fn decryption_materials(
        &self,
        request: &DecryptionRequest<'_>,
    ) -> Result<Arc<DecryptionMaterials>, EnvelopeError>;
}

/// The default materials manager: a keyring, and a fresh signing key per signed message.
pub struct DefaultMaterialsManager {
    keyring: Arc<dyn Keyring>,
}

impl DefaultMaterialsManager {
    /// A manager over `keyring`.
    pub fn new(keyring: Arc<dyn Keyring>) -> DefaultMaterialsManager {
        DefaultMaterialsManager { keyring }
    }
}

impl MaterialsManager for DefaultMaterialsManager {
    fn encryption_materials(
        &self,
        request: &EncryptionRequest<'_>,
    ) -> Result<Arc<EncryptionMaterials>, EnvelopeError> {
        if let Some(key) = request
            .context
            .keys()
            .find(|key| key.starts_with(RESERVED_CONTEXT_PREFIX))
        {
            return Err(EnvelopeError::InvalidInput(format!(
                "the encryption context key {key:?} is reserved (keys starting with \
                 {RESERVED_CONTEXT_PREFIX:?} belong to the SDK)"
            )));
        }
        let mut context = request.context.clone();
        let signing_key = if request.suite.is_signed() {
            let key = new_signing_key()?;
            let public = key.verifying_key().to_sec1_point(true);
            context.insert(
                PUBLIC_KEY_CONTEXT_KEY.to_owned(),
                STANDARD.encode(public.as_bytes()),
            );
            Some(key)
        } else {
            None
        };
        let (data_key, encrypted_data_keys) = self.keyring.on_encrypt(request.suite, &context)?;
        Ok(Arc::new(EncryptionMaterials {
            suite: request.suite,
            context,
            data_key,
            encrypted_data_keys,
            signing_key,
        }))
    }

    fn decryption_materials(
        &self,
        request: &DecryptionRequest<'_>,
    ) -> Result<Arc<DecryptionMaterials>, EnvelopeError> {
        let public_key = request.context.get(PUBLIC_KEY_CONTEXT_KEY);
        let verifying_key = match (request.suite.is_signed(), public_key) {
            (true, Some(encoded)) => Some(verifying_key(encoded)?),
            (true, None) => {
                return Err(EnvelopeError::Format(format!(
                    "a signed message without {PUBLIC_KEY_CONTEXT_KEY} in its encryption context"
                )));
            }
            (false, Some(_)) => {
                return Err(EnvelopeError::Format(format!(
                    "an unsigned message with {PUBLIC_KEY_CONTEXT_KEY} in its encryption context"
                )));
            }
            (false, None) => None,
        };
        let data_key =
            self.keyring
                .on_decrypt(request.suite, request.context, request.encrypted_data_keys)?;
        Ok(Arc::new(DecryptionMaterials {
            suite: request.suite,
            data_key,
            verifying_key,
        }))
    }
}

/// A fresh ECDSA P-384 private key from the operating system's generator.
fn new_signing_key() -> Result<SigningKey, EnvelopeError> {
    // A random 48-byte string is a valid scalar unless it is zero or not below the group
    // order, which happens with probability below 2^-190; retry then.
    for _ in 0..8 {
        let mut bytes = zeroize::Zeroizing::new([0u8; 48]);
        getrandom::fill(bytes.as_mut())
            .map_err(|_| EnvelopeError::Random("the operating system's generator failed"))?;
        if let Ok(key) = SigningKey::from_slice(bytes.as_ref()) {
            return Ok(key);
        }
    }
    Err(EnvelopeError::Random(
        "no valid ECDSA P-384 key in eight draws",
    ))
}

/// The verification key carried (base64, compressed SEC1) in the encryption context.
fn verifying_key(encoded: &str) -> Result<VerifyingKey, EnvelopeError> {
    let bad = || {
        EnvelopeError::Format(format!(
            "{PUBLIC_KEY_CONTEXT_KEY} is not a P-384 public key"
        ))
    };
    let bytes = STANDARD.decode(encoded).map_err(|_| bad())?;
    VerifyingKey::from_sec1_bytes(&bytes).map_err(|_| bad())
}
