//! The algorithm suites this module writes and reads: the two committing suites of the AWS
//! Encryption SDK message format version 2, and the key schedule they share (HKDF-SHA512
//! over the data key, salted with the message id, giving a data encryption key and a
//! commitment key). It never hands out a derived key outside a zeroizing wrapper.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use hkdf::Hkdf;
use sha2::Sha512;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::EnvelopeError;

/// Length of a data key, a derived key and a commitment value for both suites.
pub const KEY_LEN: usize = 32;
/// Length of a version-2 message id (the HKDF salt).
pub const MESSAGE_ID_LEN: usize = 32;
/// HKDF info label of the data encryption key (after the suite id).
const DERIVE_KEY_LABEL: &[u8] = b"DERIVEKEY";
/// HKDF info label of the commitment key.
const COMMIT_KEY_LABEL: &[u8] = b"COMMITKEY";

/// An algorithm suite of message format version 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlgorithmSuite {
    /// `AES_256_GCM_HKDF_SHA512_COMMIT_KEY` (0x0478), the default.
    Committing,
    /// `AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384` (0x0578): also signed with ECDSA P-384.
    CommittingSigned,
}

impl AlgorithmSuite {
    /// The suite's two-byte id as written in the header.
    pub fn id(self) -> u16 {
        match self {
            AlgorithmSuite::Committing => 0x0478,
            AlgorithmSuite::CommittingSigned => 0x0578,
        }
    }

    /// The suite with this id, or why it is refused (non-committing suites included).
    pub fn from_id(id: u16) -> Result<AlgorithmSuite, EnvelopeError> {
        match id {
            0x0478 => Ok(AlgorithmSuite::Committing),
            0x0578 => Ok(AlgorithmSuite::CommittingSigned),
            0x0014 | 0x0046 | 0x0078 | 0x0114 | 0x0146 | 0x0178 | 0x0214 | 0x0346 | 0x0378 => {
                Err(EnvelopeError::Policy(format!(
                    "algorithm suite 0x{id:04X} does not commit to its key; the commitment \
                     policy REQUIRE_ENCRYPT_REQUIRE_DECRYPT refuses it"
                )))
            }
            _ => Err(EnvelopeError::Format(format!(
                "unknown algorithm suite 0x{id:04X}"
            ))),
        }
    }

    /// The AWS name of the suite.
    pub fn name(self) -> &'static str {
        match self {
            AlgorithmSuite::Committing => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            AlgorithmSuite::CommittingSigned => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
        }
    }

    /// The suite with this AWS name (case-insensitive), if any.
    pub fn from_name(name: &str) -> Option<AlgorithmSuite> {
        [AlgorithmSuite::Committing, AlgorithmSuite::CommittingSigned]
            .into_iter()
            .find(|suite| suite.name().eq_ignore_ascii_case(name))
    }

    /// Whether messages of this suite end with an ECDSA P-384 signature.
    pub fn is_signed(self) -> bool {
        self == AlgorithmSuite::CommittingSigned
    }
}

/// The keys derived from one data key for one message.
pub struct MessageKeys {
    /// The AES-256-GCM cipher under the derived data encryption key.
    pub cipher: Aes256Gcm,
    /// The commitment value written in (or expected from) the header.
    pub commitment: Zeroizing<[u8; KEY_LEN]>,
}

/// Derives the message's encryption key and commitment value from the data key.
pub fn derive(
    suite: AlgorithmSuite,
    data_key: &[u8],
    message_id: &[u8; MESSAGE_ID_LEN],
) -> Result<MessageKeys, EnvelopeError> {
    if data_key.len() != KEY_LEN {
        return Err(EnvelopeError::Format(format!(
            "a data key of {} bytes; the suite needs {KEY_LEN}",
            data_key.len()
        )));
    }
    let hkdf = Hkdf::<Sha512>::new(Some(message_id), data_key);
    let mut info = Vec::with_capacity(2 + DERIVE_KEY_LABEL.len());
    info.extend_from_slice(&suite.id().to_be_bytes());
    info.extend_from_slice(DERIVE_KEY_LABEL);
    let mut encryption_key = Zeroizing::new([0u8; KEY_LEN]);
    let mut commitment = Zeroizing::new([0u8; KEY_LEN]);
    hkdf.expand(&info, encryption_key.as_mut())
        .and_then(|()| hkdf.expand(COMMIT_KEY_LABEL, commitment.as_mut()))
        .map_err(|_| EnvelopeError::Format("HKDF output length refused".to_owned()))?;
    let cipher = Aes256Gcm::new_from_slice(encryption_key.as_ref())
        .map_err(|_| EnvelopeError::Format("derived key length refused".to_owned()))?;
    Ok(MessageKeys { cipher, commitment })
}

impl MessageKeys {
    /// Whether the header's commitment value is this data key's, compared in constant time.
    pub fn commits_to(&self, header_commitment: &[u8]) -> bool {
        header_commitment.ct_eq(self.commitment.as_ref()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_ids_and_names_round_trip() {
        for suite in [AlgorithmSuite::Committing, AlgorithmSuite::CommittingSigned] {
            assert_eq!(AlgorithmSuite::from_id(suite.id()).ok(), Some(suite));
            assert_eq!(AlgorithmSuite::from_name(suite.name()), Some(suite));
        }
        assert!(matches!(
            AlgorithmSuite::from_id(0x0178),
            Err(EnvelopeError::Policy(_))
        ));
        assert!(matches!(
            AlgorithmSuite::from_id(0x1234),
            Err(EnvelopeError::Format(_))
        ));
    }

    #[test]
    fn commitment_depends_on_the_data_key_and_message_id() {
        let id = [7u8; MESSAGE_ID_LEN];
        let a = derive(AlgorithmSuite::Committing, &[1u8; KEY_LEN], &id).unwrap();
        let b = derive(AlgorithmSuite::Committing, &[2u8; KEY_LEN], &id).unwrap();
        let c = derive(
            AlgorithmSuite::Committing,
            &[1u8; KEY_LEN],
            &[8u8; MESSAGE_ID_LEN],
        )
        .unwrap();
        assert!(a.commits_to(b"").eq(&false));
        assert!(a.commits_to(a.commitment.as_ref()));
        assert!(!a.commits_to(b.commitment.as_ref()));
        assert!(!a.commits_to(c.commitment.as_ref()));
    }
}
