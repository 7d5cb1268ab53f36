//! Client-side envelope encryption of bulk data in the AWS Encryption SDK message format
//! (version 2, committing suites only, framed), interoperable byte for byte with the AWS
//! Encryption SDK. A message's data key comes from a key store through a [`Keyring`]
//! (in-process [`LocalKms`], or the AWS KMS wire protocol through the light `HttpKms` of the
//! `envelope-http` feature or, with the `envelope-aws-sdk` feature, the AWS SDK's
//! `aws_sdk::SdkKms`), optionally through a
//! [`CachingMaterialsManager`]; [`Encryptor`] and [`Decryptor`] stream in constant memory.
//! This module never writes a data key, derived key or plaintext anywhere but the
//! caller's writer, and keeps them in zeroizing types from creation to drop.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//! use hsm_kms::envelope::{self, DefaultMaterialsManager, KmsKeyring, LocalKms};
//! # fn demo(store: Arc<hsm_kms::keystore::KeyStore>) -> Result<(), envelope::EnvelopeError> {
//! let keyring = KmsKeyring::strict(Arc::new(LocalKms::new(store)), vec!["alias/app".into()])?;
//! let manager = DefaultMaterialsManager::new(Arc::new(keyring));
//! let mut encryptor = envelope::Encryptor::new(Vec::new(), &manager, &Default::default())?;
//! encryptor.write_all(b"bulk data")?;
//! let message = encryptor.finish()?;
//! let mut plaintext = Vec::new();
//! envelope::Decryptor::new(message.as_slice(), &manager, &Default::default())?
//!     .read_to_end(&mut plaintext)?;
//! # Ok(()) }
//! ```

#[cfg(feature = "envelope-aws-sdk")]
pub mod aws_sdk;
pub mod cache;
pub mod format;
pub mod keyring;
pub mod materials;
#[cfg(feature = "envelope-http")]
pub mod remote;
pub mod stream;
pub mod suite;

use std::io;

#[cfg(feature = "envelope-aws-sdk")]
pub use aws_sdk::SdkKms;
pub use cache::{CacheLimits, CacheStatistics, CachingMaterialsManager, MaterialsCache};
pub use format::{EncryptedDataKey, EncryptionContext, Header};
pub use keyring::{DiscoveryFilter, Keyring, KmsCallError, KmsClient, KmsKeyring, LocalKms};
pub use materials::{DefaultMaterialsManager, MaterialsManager};
#[cfg(feature = "envelope-http")]
pub use remote::HttpKms;
pub use stream::{DecryptOptions, Decryptor, EncryptOptions, Encryptor};
pub use suite::AlgorithmSuite;

/// Why a message could not be written or read. Never carries key bytes or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The message is malformed.
    #[error("malformed message: {0}")]
    Format(String),
    /// The message ends before its end.
    #[error("the message is truncated")]
    Truncated,
    /// The header's key commitment does not match the data key.
    #[error("the message's key commitment does not match its data key")]
    Commitment,
    /// A tag or the signature did not verify.
    #[error("{0} failed authentication")]
    Authentication(&'static str),
    /// The commitment policy, the encrypted-data-key limit or an encryption context
    /// requirement refuses the message.
    #[error("refused: {0}")]
    Policy(String),
    /// The caller's input is not acceptable.
    #[error("{0}")]
    InvalidInput(String),
    /// A key store call failed.
    #[error("{0}")]
    Kms(KmsCallError),
    /// No encrypted data key of the message could be decrypted.
    #[error("no encrypted data key could be decrypted: {0}")]
    NoDecryptableKey(String),
    /// The random generator failed.
    #[error("{0}")]
    Random(&'static str),
    /// Reading or writing the stream failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl EnvelopeError {
    /// This error as an [`io::Error`] a caller can turn back with [`EnvelopeError::from_io`].
    pub fn into_io(self) -> io::Error {
        match self {
            EnvelopeError::Io(error) => error,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }

    /// The envelope error inside an [`io::Error`] made by [`EnvelopeError::into_io`], else
    /// the I/O error itself.
    pub fn from_io(error: io::Error) -> EnvelopeError {
        if error
            .get_ref()
            .is_some_and(|inner| inner.is::<EnvelopeError>())
        {
            match error
                .into_inner()
                .map(|inner| inner.downcast::<EnvelopeError>())
            {
                Some(Ok(envelope)) => return *envelope,
                Some(Err(inner)) => return EnvelopeError::Io(io::Error::other(inner)),
                None => return EnvelopeError::Io(io::Error::other("unknown I/O error")),
            }
        }
        EnvelopeError::Io(error)
    }
}
