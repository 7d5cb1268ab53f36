//! Reading a key material version back from a member for evidence: every object that carries
//! its `CKA_ID` (a duplicate is evidence too), each one's security attributes, and a key check
//! value that tells whether two members hold the same key without revealing it.
//!
//! Two key check values are read, each when available, and a caller compares like with like:
//!
//! - `CKA_CHECK_VALUE` when the token supplies it: the token computed it when the object was
//!   made and shows it to any logged-in user, so reading it reveals nothing new. SoftHSM2 2.6.1
//!   sets it on keys it generates but not on keys it unwraps, so it cannot compare an original
//!   with its copies there;
//! - the first 3 bytes of SHA-256 over an AES-GCM encryption, inside the HSM, of a fixed block
//!   under a fixed probe IV and a probe-only AAD: the same on every copy of the same key. Never
//!   AES-ECB of a zero block (the classic KCV): that block is GCM's hash key H, and hsm-kms keys
//!   are GCM keys. An HSM that chooses its own GCM IV (vendor clusters) gives none: the value
//!   would differ on every call.
//!
//! Material that is not an AES key gets its own probe, compared like with like as well: an
//! HMAC key, the first 3 bytes of SHA-256 over its HMAC-SHA-256 of the fixed block, inside
//! the HSM; a private key, the first 3 bytes of SHA-256 over its public key (RSA modulus and
//! exponent, or EC point, read from the pair's public object): the public key names the pair,
//! and replication proved each private copy against it by a signature or a decryption.
//!
//! This module only reads: it never creates, changes or destroys an object, never reads
//! `CKA_VALUE`, and never returns key bytes.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::{HsmError, KeyAttributes, Member, read};

/// IV of the GCM key check value probe (never chosen by [`super::iv_pool::proposed_iv`] in
/// practice: those are random, and a collision with this one has probability 2^-96).
const PROBE_IV: [u8; 12] = *b"hsm-kms-kcv1";
/// AAD of the probe: no ciphertext hsm-kms makes has it, so the output opens nothing.
const PROBE_AAD: &[u8] = b"hsm-kms key check value probe v1";
/// The block the probe encrypts.
const PROBE_BLOCK: [u8; 16] = [0; 16];

/// How a key check value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckValueMethod {
    /// `CKA_CHECK_VALUE` as the token supplies it.
    CkaCheckValue,
    /// SHA-256 of an AES-GCM encryption of a fixed block under a fixed probe IV, in the HSM.
    GcmProbe,
    /// SHA-256 of an HMAC-SHA-256 of a fixed block, in the HSM.
    HmacProbe,
    /// SHA-256 of the pair's public key.
    PublicKeyDigest,
}

impl CheckValueMethod {
    /// The name as reports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckValueMethod::CkaCheckValue => "CKA_CHECK_VALUE",
            CheckValueMethod::GcmProbe => "GCM_PROBE",
            CheckValueMethod::HmacProbe => "HMAC_PROBE",
            CheckValueMethod::PublicKeyDigest => "PUBLIC_KEY_DIGEST",
        }
    }
}

/// A key check value: 3 bytes, as hex, and how they were obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckValue {
    /// The 3 bytes, as 6 hex digits.
    pub hex: String,
    /// How the HSM computed them.
    pub method: CheckValueMethod,
}

/// One object found under a material's `CKA_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInspection {
    /// Its security attributes.
    pub attributes: KeyAttributes,
    /// The key check values obtained, at most one per method (see the module docs).
    pub check_values: Vec<CheckValue>,
}

impl Member {
    /// Every secret-key or private-key object with `key_id` on this member, read afresh (no
    /// cached handle), with its security attributes and key check value. An empty answer is
    /// checked by a probe first: a broken token also finds nothing.
    pub fn inspect_key(self: &Arc<Self>, key_id: &[u8]) -> Result<Vec<ObjectInspection>, HsmError> {
        let found = self.with_session(|_, session| {
            let _searching = read(&self.token_objects);
            let mut handles = Vec::new();
            for class in [ObjectClass::SECRET_KEY, ObjectClass::PRIVATE_KEY] {
                handles.extend(
                    session
                        .find_objects(&[Attribute::Class(class), Attribute::Id(key_id.to_vec())])
                        .map_err(self.pkcs11_error())?,
                );
            }
            handles
                .into_iter()
                .map(|handle| self.inspect_object(session, handle, key_id))
                .collect::<Result<Vec<_>, HsmError>>()
        })?;
        if found.is_empty() {
            self.probe()
                .inspect_err(|error| self.down_if_unavailable(error))?;
        }
        Ok(found)
    }

    fn inspect_object(
        &self,
        session: &Session,
        handle: ObjectHandle,
        key_id: &[u8],
    ) -> Result<ObjectInspection, HsmError> {
        let mut wanted = KeyAttributes::TYPES.to_vec();
        wanted.extend([
            AttributeType::CheckValue,
            AttributeType::Class,
            AttributeType::KeyType,
        ]);
        let values = session
            .get_attributes(handle, &wanted)
            .map_err(self.pkcs11_error())?;
        let mut attributes = KeyAttributes::default();
        let mut check_values = Vec::new();
        let (mut class, mut key_type) = (None, None);
        for value in values {
            if attributes.record(&value) {
                continue;
            }
            match value {
                Attribute::Class(v) => class = Some(v),
                Attribute::KeyType(v) => key_type = Some(v),
                Attribute::CheckValue(bytes) if !bytes.is_empty() => {
                    check_values.push(CheckValue {
                        hex: hex::encode(&bytes[..bytes.len().min(3)]),
                        method: CheckValueMethod::CkaCheckValue,
                    })
                }
                _ => {}
            }
        }
        if class == Some(ObjectClass::PRIVATE_KEY) {
            check_values.extend(self.public_key_digest(session, key_id));
        } else if key_type == Some(KeyType::GENERIC_SECRET) {
            check_values.extend(self.hmac_probe(session, handle));
        } else if attributes.encrypt {
            check_values.extend(self.gcm_probe(session, handle));
        }
        Ok(ObjectInspection {
            attributes,
            check_values,
        })
    }

    /// The GCM probe (see the module docs); `None` when the HSM refused it or moved the IV.
    fn gcm_probe(&self, session: &Session, handle: ObjectHandle) -> Option<CheckValue> {
        let mut iv = PROBE_IV;
        let params = GcmParams::new(&mut iv, PROBE_AAD, 128.into()).ok()?;
        let output = session
            .encrypt(&Mechanism::AesGcm(params), handle, &PROBE_BLOCK)
            .ok()?;
        if iv != PROBE_IV {
            return None;
        }
        let digest = Sha256::digest(&output);
        Some(CheckValue {
            hex: hex::encode(&digest[..3]),
            method: CheckValueMethod::GcmProbe,
        })
    }

    /// The HMAC probe of a generic secret (see the module docs); `None` when refused.
    fn hmac_probe(&self, session: &Session, handle: ObjectHandle) -> Option<CheckValue> {
        let output = session
            .sign(&Mechanism::Sha256Hmac, handle, &PROBE_BLOCK)
            .ok()?;
        let digest = Sha256::digest(&output);
        Some(CheckValue {
            hex: hex::encode(&digest[..3]),
            method: CheckValueMethod::HmacProbe,
        })
    }

    /// The digest of the public key of the pair `key_id` (see the module docs); `None` when
    /// the member has no public object for it.
    fn public_key_digest(&self, session: &Session, key_id: &[u8]) -> Option<CheckValue> {
        let handle = *session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(key_id.to_vec()),
            ])
            .ok()?
            .first()?;
        let values = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::EcPoint,
                ],
            )
            .ok()?;
        let mut hasher = Sha256::new();
        for value in values {
            match value {
                Attribute::Modulus(bytes)
                | Attribute::PublicExponent(bytes)
                | Attribute::EcPoint(bytes) => hasher.update(&bytes),
                _ => {}
            }
        }
        let digest = hasher.finalize();
        Some(CheckValue {
            hex: hex::encode(&digest[..3]),
            method: CheckValueMethod::PublicKeyDigest,
        })
    }
}
