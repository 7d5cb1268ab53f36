//! Imported key material inside one member: the RSA wrapping key pairs that
//! GetParametersForImport hands out, opening wrapped material with them, and the key check
//! value that tells one material from another.
//!
//! This module owns the PKCS#11 side of AWS's import flow. The private half of a wrapping
//! key pair is a sensitive, non-extractable token object that can only unwrap; the public
//! half lives only as long as it takes to read its modulus (and to check that the HSM takes
//! the OAEP parameters asked for). Wrapped material is opened only by `C_UnwrapKey`, straight
//! into a sensitive session object (for `RSA_AES_KEY_WRAP_*`: first the ephemeral AES key,
//! itself a non-extractable session object, then the material with `CKM_AES_KEY_WRAP_PAD`);
//! the material becomes a token object only after its length and key check value passed.
//! It never returns, logs or stores key bytes: what leaves is a public key, a key check value
//! (a hash of an encryption of a fixed block, truncated) and identifiers.
//!
//! Only AES-256 material (SYMMETRIC_DEFAULT) is imported today. Other key specs slot in as
//! another unwrap template and another check (a signature or MAC for key pairs and HMAC keys)
//! behind the same two entry points.

use std::sync::Arc;

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use subtle::ConstantTimeEq;

use super::error::{Failure, HsmError};
use super::templates::{self, Portability};
use super::{Member, write};

/// Prefix of the `CKA_ID` of every wrapping key pair's private half.
pub const WRAPPING_KEY_PREFIX: &str = "hsm-kms-import-wrapping/";

/// Length of the key check value kept in the metadata.
pub const CHECK_VALUE_LEN: usize = 8;

/// Length in bytes of the key material of a SYMMETRIC_DEFAULT key.
pub const SYMMETRIC_MATERIAL_LEN: usize = 32;

/// The label prefix before the wrapping key's end of validity (epoch seconds).
const VALID_TO_MARK: &str = " valid-to=";

/// AWS's wrapping algorithms (`AlgorithmSpec`) that this store accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrappingAlgorithm {
    /// RSA-OAEP with SHA-1 and MGF1-SHA-1 of the material itself.
    RsaesOaepSha1,
    /// RSA-OAEP with SHA-256 and MGF1-SHA-256 of the material itself.
    RsaesOaepSha256,
    /// RSA-OAEP (SHA-1) of an ephemeral AES key, then RFC 5649 of the material under it.
    RsaAesKeyWrapSha1,
    /// RSA-OAEP (SHA-256) of an ephemeral AES key, then RFC 5649 of the material under it.
    RsaAesKeyWrapSha256,
}

impl WrappingAlgorithm {
    /// Every algorithm, in AWS's order.
    pub const ALL: [WrappingAlgorithm; 4] = [
        WrappingAlgorithm::RsaesOaepSha1,
        WrappingAlgorithm::RsaesOaepSha256,
        WrappingAlgorithm::RsaAesKeyWrapSha1,
        WrappingAlgorithm::RsaAesKeyWrapSha256,
    ];

    /// AWS's name.
    pub fn as_str(self) -> &'static str {
        match self {
            WrappingAlgorithm::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            WrappingAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
            WrappingAlgorithm::RsaAesKeyWrapSha1 => "RSA_AES_KEY_WRAP_SHA_1",
            WrappingAlgorithm::RsaAesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
        }
    }

    /// The algorithm AWS's name denotes.
    pub fn from_name(name: &str) -> Option<WrappingAlgorithm> {
        WrappingAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == name)
    }

    /// Whether the material is wrapped under an ephemeral AES key (two steps).
    pub fn is_two_step(self) -> bool {
        matches!(
            self,
            WrappingAlgorithm::RsaAesKeyWrapSha1 | WrappingAlgorithm::RsaAesKeyWrapSha256
        )
    }

    /// Whether OAEP uses SHA-256 (else SHA-1), for its hash and its MGF1.
    pub fn is_sha256(self) -> bool {
        matches!(
            self,
            WrappingAlgorithm::RsaesOaepSha256 | WrappingAlgorithm::RsaAesKeyWrapSha256
        )
    }

    fn oaep(self) -> Mechanism<'static> {
        let (hash, mgf) = if self.is_sha256() {
            (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256)
        } else {
            (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1)
        };
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
    }
}

/// AWS's wrapping key specs (`WrappingKeySpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrappingKeySpec {
    /// `RSA_2048`.
    Rsa2048,
    /// `RSA_3072`.
    Rsa3072,
    /// `RSA_4096`.
    Rsa4096,
}

impl WrappingKeySpec {
    /// Every spec.
    pub const ALL: [WrappingKeySpec; 3] = [
        WrappingKeySpec::Rsa2048,
        WrappingKeySpec::Rsa3072,
        WrappingKeySpec::Rsa4096,
    ];

    /// AWS's name.
    pub fn as_str(self) -> &'static str {
        match self {
            WrappingKeySpec::Rsa2048 => "RSA_2048",
            WrappingKeySpec::Rsa3072 => "RSA_3072",
            WrappingKeySpec::Rsa4096 => "RSA_4096",
        }
    }

    /// The spec AWS's name denotes.
    pub fn from_name(name: &str) -> Option<WrappingKeySpec> {
        WrappingKeySpec::ALL
            .into_iter()
            .find(|spec| spec.as_str() == name)
    }

    /// The modulus length in bits.
    pub fn bits(self) -> u64 {
        match self {
            WrappingKeySpec::Rsa2048 => 2048,
            WrappingKeySpec::Rsa3072 => 3072,
            WrappingKeySpec::Rsa4096 => 4096,
        }
    }
}

/// Where opened material goes.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// A token object with this `CKA_ID` and `CKA_LABEL`.
    Keep {
        /// The new object's `CKA_ID` (its material id).
        id: &'a [u8],
        /// The new object's `CKA_LABEL`.
        label: &'a str,
        /// Whether it may be wrapped for replication.
        portability: Portability,
    },
    /// Nowhere: the material is only checked, then destroyed.
    CheckOnly,
}

/// What opening wrapped material came to (the HSM answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The material is AES-256 with this key check value (kept or not, as asked).
    Material([u8; CHECK_VALUE_LEN]),
    /// The material differs from the expected one; nothing was kept.
    DifferentMaterial,
    /// The material has the wrong length for the key spec; nothing was kept.
    WrongLength,
}

/// A session object destroyed when dropped (the session is pooled: its objects would live on).
struct SessionObject<'a> {
    session: &'a Session,
    handle: ObjectHandle,
}

impl Drop for SessionObject<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.session.destroy_object(self.handle) {
            tracing::warn!(%error, "a session object of a key import could not be destroyed");
        }
    }
}

impl HsmError {
    /// Whether the HSM refused the mechanism's parameters (SoftHSM2 takes only SHA-1 for
    /// RSA-OAEP): the wrapping algorithm is not available on this HSM.
    pub fn refuses_mechanism_parameters(&self) -> bool {
        matches!(
            self.failure,
            Failure::Pkcs11 {
                rv: cryptoki::error::RvError::ArgumentsBad
                    | cryptoki::error::RvError::MechanismParamInvalid
                    | cryptoki::error::RvError::MechanismInvalid,
                ..
            }
        )
    }
}

impl HsmError {
    /// Whether the module lacks the functions import needs (`C_GenerateKeyPair`,
    /// `C_UnwrapKey`): a vendor module that keeps them to its own tools.
    pub fn lacks_import_functions(&self) -> bool {
        matches!(
            self.failure,
            Failure::Pkcs11 {
                rv: cryptoki::error::RvError::FunctionNotSupported,
                ..
            }
        )
    }
}

impl Member {
    /// Generates a wrapping key pair: the private half a token object with `id` and a label
    /// carrying `valid_to` (epoch seconds), sensitive, non-extractable, unwrap only. Checks
    /// with the public half that this HSM takes `algorithm`'s OAEP parameters (a refusal is
    /// reported by [`HsmError::refuses_mechanism_parameters`], with nothing left behind) and
    /// returns the public key as DER SubjectPublicKeyInfo.
    pub fn generate_wrapping_key(
        self: &Arc<Self>,
        id: &[u8],
        label: &str,
        valid_to: i64,
        spec: WrappingKeySpec,
        algorithm: WrappingAlgorithm,
    ) -> Result<Vec<u8>, HsmError> {
        self.with_session(|_, session| {
            let public_template = vec![
                Attribute::Token(false),
                Attribute::Private(false),
                Attribute::Encrypt(true),
                Attribute::Wrap(false),
                Attribute::Verify(false),
                Attribute::ModulusBits(spec.bits().into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ];
            let private_template = vec![
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Unwrap(true),
                Attribute::Decrypt(false),
                Attribute::Sign(false),
                Attribute::Derive(false),
                Attribute::Modifiable(false),
                Attribute::Id(id.to_vec()),
                Attribute::Label(format!("{label}{VALID_TO_MARK}{valid_to}").into_bytes()),
            ];
            let (public, private) = {
                let _writing = write(&self.token_objects);
                session
                    .generate_key_pair(
                        &Mechanism::RsaPkcsKeyPairGen,
                        &public_template,
                        &private_template,
                    )
                    .map_err(self.pkcs11_error())?
            };
            let public = SessionObject {
                session,
                handle: public,
            };
            let result = (|| {
                let mut modulus = Vec::new();
                let mut exponent = Vec::new();
                for attribute in session
                    .get_attributes(
                        public.handle,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                    .map_err(self.pkcs11_error())?
                {
                    match attribute {
                        Attribute::Modulus(value) => modulus = value,
                        Attribute::PublicExponent(value) => exponent = value,
                        _ => {}
                    }
                }
                // The HSM must take this algorithm's OAEP parameters before anyone wraps
                // material for it.
                session
                    .encrypt(
                        &algorithm.oaep(),
                        public.handle,
                        &[0u8; SYMMETRIC_MATERIAL_LEN],
                    )
                    .map_err(self.pkcs11_error())?;
                Ok(subject_public_key_info(&modulus, &exponent))
            })();
            drop(public);
            if result.is_err() {
                let _writing = write(&self.token_objects);
                if let Err(error) = session.destroy_object(private) {
                    tracing::warn!(member = self.name(), %error, "an unusable wrapping key could not be destroyed");
                }
            }
            result
        })
    }

    /// Opens `wrapped` (material wrapped with `algorithm` under the public half of the
    /// wrapping key `wrapping_id`) inside this HSM, checks its length and its key check value
    /// against `expected` (when given), and keeps it as `destination` says. A ciphertext the
    /// HSM cannot open is [`Failure::Rejected`] (after the member proved healthy).
    pub fn open_wrapped_material(
        self: &Arc<Self>,
        wrapping_id: &[u8],
        algorithm: WrappingAlgorithm,
        wrapped: &[u8],
        expected: Option<&[u8]>,
        destination: Destination<'_>,
    ) -> Result<Opened, HsmError> {
        let result = self.with_session(|connection, session| {
            let found = self.search(
                session,
                &[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Id(wrapping_id.to_vec()),
                ],
            )?;
            let [wrapping_key] = found.as_slice() else {
                return Err(self.fail(Failure::KeyMissing(hex::encode(wrapping_id))));
            };
            let (id, label, portability) = match destination {
                Destination::Keep {
                    id,
                    label,
                    portability,
                } => (id, label, portability),
                // Wrappable under the domain key like any CMK: its length is read that way.
                Destination::CheckOnly => (
                    &b"hsm-kms-import-check"[..],
                    "",
                    Portability::WrapWithTrusted,
                ),
            };
            let template = session_material_template(id, label, portability);
            let material = if algorithm.is_two_step() {
                let modulus_len = modulus_len(self, session, *wrapping_key)?;
                if wrapped.len() <= modulus_len {
                    return Err(self.fail(Failure::Rejected));
                }
                let (rsa_part, kwp_part) = wrapped.split_at(modulus_len);
                let ephemeral = session
                    .unwrap_key(
                        &algorithm.oaep(),
                        *wrapping_key,
                        rsa_part,
                        &ephemeral_key_template(),
                    )
                    .map_err(self.pkcs11_error())?;
                let ephemeral = SessionObject {
                    session,
                    handle: ephemeral,
                };
                session
                    .unwrap_key(
                        &Mechanism::AesKeyWrapPad,
                        ephemeral.handle,
                        kwp_part,
                        &template,
                    )
                    .map_err(self.pkcs11_error())?
            } else {
                session
                    .unwrap_key(&algorithm.oaep(), *wrapping_key, wrapped, &template)
                    .map_err(self.pkcs11_error())?
            };
            let material = SessionObject {
                session,
                handle: material,
            };
            if material_len(self, connection, session, material.handle, portability)?
                != SYMMETRIC_MATERIAL_LEN
            {
                return Ok(Opened::WrongLength);
            }
            let check_value = match check_value(self, session, material.handle) {
                Ok(value) => value,
                // Key wrap pads to 8 bytes: 25 to 31 bytes measure as 32, and are no AES key.
                Err(error) if not_an_aes_key(&error) => return Ok(Opened::WrongLength),
                Err(error) => return Err(error),
            };
            if let Some(expected) = expected
                && !bool::from(expected.ct_eq(&check_value))
            {
                return Ok(Opened::DifferentMaterial);
            }
            if let Destination::Keep { id, .. } = destination {
                let _writing = write(&self.token_objects);
                let kept = session
                    .copy_object(
                        material.handle,
                        &[Attribute::Token(true), Attribute::Modifiable(false)],
                    )
                    .map_err(self.pkcs11_error())?;
                write(&connection.handles).insert(id.to_vec(), kept);
            }
            drop(material);
            Ok(Opened::Material(check_value))
        });
        match result {
            Err(error) if unwrap_refused(&error) && self.is_up() => {
                Err(self.fail(Failure::Rejected))
            }
            other => other,
        }
    }

    /// Destroys the wrapping key pairs whose validity ended at or before `now` (epoch
    /// seconds); returns how many were destroyed.
    pub fn destroy_expired_wrapping_keys(self: &Arc<Self>, now: i64) -> Result<usize, HsmError> {
        self.with_session(|_, session| {
            let _writing = write(&self.token_objects);
            let handles = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Token(true),
                ])
                .map_err(self.pkcs11_error())?;
            let mut destroyed = 0;
            for handle in handles {
                let mut id = Vec::new();
                let mut label = Vec::new();
                for attribute in session
                    .get_attributes(handle, &[AttributeType::Id, AttributeType::Label])
                    .map_err(self.pkcs11_error())?
                {
                    match attribute {
                        Attribute::Id(value) => id = value,
                        Attribute::Label(value) => label = value,
                        _ => {}
                    }
                }
                if !id.starts_with(WRAPPING_KEY_PREFIX.as_bytes()) {
                    continue;
                }
                let label = String::from_utf8_lossy(&label);
                let valid_to = label
                    .rsplit_once(VALID_TO_MARK)
                    .and_then(|(_, secs)| secs.parse::<i64>().ok());
                // A wrapping key whose validity cannot be read is past any use: destroy it.
                if valid_to.is_none_or(|valid_to| valid_to <= now) {
                    session
                        .destroy_object(handle)
                        .map_err(self.pkcs11_error())?;
                    destroyed += 1;
                }
            }
            Ok(destroyed)
        })
    }

    /// The `CKA_ID`s of the wrapping keys on this member (for tests and reports).
    pub fn wrapping_keys(self: &Arc<Self>) -> Result<Vec<Vec<u8>>, HsmError> {
        self.with_session(|_, session| {
            let handles = self.search(
                session,
                &[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Token(true),
                ],
            )?;
            let mut ids = Vec::new();
            for handle in handles {
                for attribute in session
                    .get_attributes(handle, &[AttributeType::Id])
                    .map_err(self.pkcs11_error())?
                {
                    if let Attribute::Id(id) = attribute
                        && id.starts_with(WRAPPING_KEY_PREFIX.as_bytes())
                    {
                        ids.push(id);
                    }
                }
            }
            Ok(ids)
        })
    }
}

/// Whether `C_UnwrapKey` refused the wrapped bytes (SoftHSM2 answers a failed OAEP or key
/// unwrap with `CKR_GENERAL_ERROR`, which also means a vanished token: the member has been
/// probed by then, and only a healthy one's refusal counts as the caller's).
fn unwrap_refused(error: &HsmError) -> bool {
    use cryptoki::context::Function;
    use cryptoki::error::RvError;
    matches!(
        error.failure,
        Failure::Pkcs11 {
            function: Function::UnwrapKey,
            rv: RvError::GeneralError
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange
                | RvError::DataLenRange
                | RvError::DataInvalid
                | RvError::TemplateInconsistent,
        }
    )
}

/// Whether `C_EncryptInit` refused the material as an AES key (its length is none of AES's).
fn not_an_aes_key(error: &HsmError) -> bool {
    use cryptoki::context::Function;
    use cryptoki::error::RvError;
    matches!(
        error.failure,
        Failure::Pkcs11 {
            function: Function::EncryptInit | Function::Encrypt,
            rv: RvError::MechanismInvalid | RvError::KeySizeRange | RvError::KeyTypeInconsistent,
        }
    )
}

/// The material as a session object: a CMK template, not yet on the token.
fn session_material_template(id: &[u8], label: &str, portability: Portability) -> Vec<Attribute> {
    let template: Vec<Attribute> = templates::cmk(id, label, portability)
        .into_iter()
        .map(|attribute| match attribute {
            Attribute::Token(_) => Attribute::Token(false),
            other => other,
        })
        .collect();
    template
}

/// The ephemeral AES key of the two-step algorithms: a session object that can only unwrap.
fn ephemeral_key_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Wrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

/// The modulus length in bytes of the wrapping key.
fn modulus_len(member: &Member, session: &Session, key: ObjectHandle) -> Result<usize, HsmError> {
    session
        .get_attributes(key, &[AttributeType::Modulus])
        .map_err(member.pkcs11_error())?
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::Modulus(modulus) => Some(modulus.len()),
            _ => None,
        })
        .ok_or_else(|| member.fail(Failure::Other("wrapping key without a modulus".into())))
}

/// The length of unwrapped material. SoftHSM2 leaves `CKA_VALUE_LEN` at 0 on unwrapped keys
/// (and refuses it in an unwrap template), so when the HSM does not say, the material is
/// wrapped under the domain key and measured: AES key wrap with padding of a key whose length
/// is a multiple of 8 (every AES key length) is exactly 8 bytes longer than the key.
fn material_len(
    member: &Member,
    connection: &super::Connection,
    session: &Session,
    material: ObjectHandle,
    portability: Portability,
) -> Result<usize, HsmError> {
    let said = session
        .get_attributes(material, &[AttributeType::ValueLen])
        .map_err(member.pkcs11_error())?
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::ValueLen(length) => Some(u64::from(length)),
            _ => None,
        })
        .unwrap_or(0);
    if said > 0 {
        return usize::try_from(said)
            .map_err(|_| member.fail(Failure::Other("key length out of range".into())));
    }
    if portability != Portability::WrapWithTrusted {
        return Err(member.fail(Failure::Other(
            "the HSM does not report the length of unwrapped key material".into(),
        )));
    }
    let domain_key = member.domain_key(connection)?;
    let wrapped = session
        .wrap_key(&Mechanism::AesKeyWrapPad, domain_key, material)
        .map_err(member.pkcs11_error())?;
    Ok(wrapped.len().saturating_sub(8))
}

/// The block the key check value encrypts. Never the zero block, the classic KCV: AES of the
/// zero block is GCM's hash key H, and CMKs are GCM keys. This block is no GCM counter block
/// hsm-kms uses either (those start with a random 96-bit IV).
const CHECK_BLOCK: [u8; 16] = *b"hsm-kms kcv v1\x00\x01";

/// The key check value: SHA-256 over AES-ECB of [`CHECK_BLOCK`] under the material, made
/// inside the HSM, truncated. It names the material without revealing it or anything GCM
/// depends on.
fn check_value(
    member: &Member,
    session: &Session,
    material: ObjectHandle,
) -> Result<[u8; CHECK_VALUE_LEN], HsmError> {
    use sha2::Digest;
    let block = session
        .encrypt(&Mechanism::AesEcb, material, &CHECK_BLOCK)
        .map_err(member.pkcs11_error())?;
    let digest = sha2::Sha256::digest(&block);
    let mut value = [0u8; CHECK_VALUE_LEN];
    value.copy_from_slice(&digest[..CHECK_VALUE_LEN]);
    Ok(value)
}

/// DER SubjectPublicKeyInfo of an RSA public key (RFC 5280, RFC 8017 A.1.1).
pub fn subject_public_key_info(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut key = der_integer(modulus);
    key.extend(der_integer(exponent));
    let key = der(0x30, &key);
    let mut bits = vec![0x00];
    bits.extend(key);
    let mut info = der(0x30, RSA_ENCRYPTION);
    info.extend(der(0x03, &bits));
    der(0x30, &info)
}

fn der_integer(unsigned: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = unsigned.iter().copied().skip_while(|b| *b == 0).collect();
    let mut value = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        value.push(0);
    }
    value.extend(trimmed);
    der(0x02, &value)
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_aws_names() {
        for algorithm in WrappingAlgorithm::ALL {
            assert_eq!(
                WrappingAlgorithm::from_name(algorithm.as_str()),
                Some(algorithm)
            );
        }
        for spec in WrappingKeySpec::ALL {
            assert_eq!(WrappingKeySpec::from_name(spec.as_str()), Some(spec));
        }
        assert_eq!(WrappingAlgorithm::from_name("RSAES_PKCS1_V1_5"), None);
        assert_eq!(WrappingKeySpec::from_name("rsa_2048"), None);
    }

    #[test]
    fn spki_of_a_small_key() {
        // n = 0x00c5 (leading zero trimmed, sign byte added), e = 65537.
        let der = subject_public_key_info(&[0x00, 0xc5], &[0x01, 0x00, 0x01]);
        assert_eq!(
            hex::encode(&der),
            "301d300d06092a864886f70d0101010500030c0030090202 00c50203010001".replace(' ', "")
        );
    }
}
