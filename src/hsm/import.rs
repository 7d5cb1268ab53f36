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
//! the material becomes a token object only after it proved to fit its key spec and its key
//! check value passed. It never returns, logs or stores key bytes: what leaves is a public
//! key, a key check value and identifiers.
//!
//! Material of every spec AWS imports is opened the same way, into the template of its kind:
//! AES-256 (checked by an encryption of a fixed block), HMAC secrets of the lengths AWS allows
//! (an HMAC of that block), RSA and EC private keys from their PKCS #8 structure (named by
//! their public key). The public key of an RSA key is read from the private object; that of
//! an EC key, which SoftHSM2 does not keep with an unwrapped private key, is recovered from
//! ECDSA signatures the HSM makes and then verified by the HSM (see `derive_ec_point`).

use std::ops::RangeInclusive;
use std::sync::Arc;

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use subtle::ConstantTimeEq;

use super::error::{Failure, HsmError};
use super::material::{MaterialSpec, PublicKey, der_tagged, subject_public_key_info};
use super::signing::public_cache_key;
use super::templates::{self, Portability};
use super::{Member, write};
use crate::keys::spec::{Curve, Digest, KeySpec};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The material fits the key spec: its key check value, and for a pair its public key
    /// (kept or not, as asked).
    Material {
        /// The key check value kept in the metadata (made inside the HSM: see the module doc).
        check_value: [u8; CHECK_VALUE_LEN],
        /// A pair's public key, read from the private key (RSA) or derived from signatures
        /// the HSM made with it (EC).
        public: Option<PublicKey>,
    },
    /// The material differs from the expected one; nothing was kept.
    DifferentMaterial,
    /// The material does not fit the key spec (its length, or a private key of another
    /// type, size or curve); nothing was kept.
    Unfit,
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
                Ok(subject_public_key_info(&PublicKey::Rsa { modulus, exponent }))
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

    /// Opens `wrapped` (material of kind `spec` wrapped with `algorithm` under the public
    /// half of the wrapping key `wrapping_id`) inside this HSM, checks that it fits the key
    /// spec and its key check value against `expected` (when given), and keeps it as
    /// `destination` says: a secret as one object, a pair as its private object and a public
    /// object made from the public key read or derived here. A ciphertext the HSM cannot open
    /// is [`Failure::Rejected`] (after the member proved healthy).
    pub fn open_wrapped_material(
        self: &Arc<Self>,
        wrapping_id: &[u8],
        algorithm: WrappingAlgorithm,
        wrapped: &[u8],
        spec: MaterialSpec,
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
                // Wrappable under the domain key like any CMK: a secret's length is read that way.
                Destination::CheckOnly => (
                    &b"hsm-kms-import-check"[..],
                    "",
                    Portability::WrapWithTrusted,
                ),
            };
            let unwrapper = Unwrapper::new(self, session, *wrapping_key, algorithm, wrapped)?;
            let material = SessionObject {
                session,
                handle: unwrapper.unwrap(&session_template(spec, id, label, portability))?,
            };
            let fitted = if spec.is_pair() {
                fit_pair(self, session, &unwrapper, material.handle, spec)?
            } else {
                fit_secret(self, connection, session, material.handle, spec, portability)?
            };
            let Opened::Material { check_value, public } = fitted else {
                return Ok(fitted);
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
                if let Some(public) = &public {
                    let made = session.create_object(&spec.public_object(id, label, public));
                    match made {
                        Ok(handle) => {
                            write(&connection.handles).insert(public_cache_key(id), handle);
                        }
                        Err(error) => {
                            if let Err(error) = session.destroy_object(kept) {
                                tracing::warn!(member = self.name(), %error, "an imported private key without its public key could not be destroyed");
                            }
                            return Err(self.pkcs11_error()(error));
                        }
                    }
                }
                write(&connection.handles).insert(id.to_vec(), kept);
            }
            drop(material);
            Ok(Opened::Material { check_value, public })
        });
        match result {
            // The wrapped bytes opened but are no private key of that type: SoftHSM2 fails to
            // decode the PKCS #8 structure into the object (believed of a healthy member).
            Err(error) if spec.is_pair() && undecodable(&error) && self.is_up() => {
                Ok(Opened::Unfit)
            }
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

/// The material as a session object, not yet on the token: the template of a CMK for
/// AES-256, else of the secret or private object of `spec`.
fn session_template(
    spec: MaterialSpec,
    id: &[u8],
    label: &str,
    portability: Portability,
) -> Vec<Attribute> {
    let template = if spec == MaterialSpec::AES {
        templates::cmk(id, label, portability)
    } else {
        spec.secret_template(id, label, portability)
    };
    template
        .into_iter()
        .map(|attribute| match attribute {
            Attribute::Token(_) => Attribute::Token(false),
            other => other,
        })
        .collect()
}

/// The private EC key as a short-lived session object that can only sign: what derives a
/// pair's public point, whatever the key's own usage.
fn ec_probe_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Derive(false),
        Attribute::Unwrap(false),
    ]
}

/// Opens the wrapped bytes of one import with `C_UnwrapKey`, as often as asked (an EC key
/// is opened twice: once as a probe that signs, once as the key): directly with RSA-OAEP,
/// or, for the two-step algorithms, with the ephemeral AES key it opened first, a session
/// object destroyed with the unwrapper.
struct Unwrapper<'a> {
    member: &'a Member,
    session: &'a Session,
    step: Step<'a>,
}

enum Step<'a> {
    /// RSA-OAEP of the material under the wrapping key.
    Oaep {
        wrapping_key: ObjectHandle,
        mechanism: Mechanism<'static>,
        wrapped: &'a [u8],
    },
    /// RFC 5649 of the material under the ephemeral key.
    KeyWrap {
        ephemeral: SessionObject<'a>,
        wrapped: &'a [u8],
    },
}

impl<'a> Unwrapper<'a> {
    fn new(
        member: &'a Member,
        session: &'a Session,
        wrapping_key: ObjectHandle,
        algorithm: WrappingAlgorithm,
        wrapped: &'a [u8],
    ) -> Result<Unwrapper<'a>, HsmError> {
        let step = if algorithm.is_two_step() {
            let modulus_len = modulus_len(member, session, wrapping_key)?;
            if wrapped.len() <= modulus_len {
                return Err(member.fail(Failure::Rejected));
            }
            let (rsa_part, kwp_part) = wrapped.split_at(modulus_len);
            let ephemeral = session
                .unwrap_key(
                    &algorithm.oaep(),
                    wrapping_key,
                    rsa_part,
                    &ephemeral_key_template(),
                )
                .map_err(member.pkcs11_error())?;
            Step::KeyWrap {
                ephemeral: SessionObject {
                    session,
                    handle: ephemeral,
                },
                wrapped: kwp_part,
            }
        } else {
            Step::Oaep {
                wrapping_key,
                mechanism: algorithm.oaep(),
                wrapped,
            }
        };
        Ok(Unwrapper {
            member,
            session,
            step,
        })
    }

    fn unwrap(&self, template: &[Attribute]) -> Result<ObjectHandle, HsmError> {
        match &self.step {
            Step::Oaep {
                wrapping_key,
                mechanism,
                wrapped,
            } => self
                .session
                .unwrap_key(mechanism, *wrapping_key, wrapped, template),
            Step::KeyWrap { ephemeral, wrapped } => self.session.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                ephemeral.handle,
                wrapped,
                template,
            ),
        }
        .map_err(self.member.pkcs11_error())
    }
}

/// Whether `C_UnwrapKey` opened the bytes but could not make them a key object
/// (`CKR_FUNCTION_FAILED`: SoftHSM2's answer to a PKCS #8 structure that is no private key of
/// the template's type).
fn undecodable(error: &HsmError) -> bool {
    use cryptoki::context::Function;
    use cryptoki::error::RvError;
    matches!(
        error.failure,
        Failure::Pkcs11 {
            function: Function::UnwrapKey,
            rv: RvError::FunctionFailed,
        }
    )
}

/// The lengths in bytes of the key material AWS imports for a secret key spec: 32 for
/// SYMMETRIC_DEFAULT; for HMAC, from the digest length to the hash's block size.
pub fn material_lengths(spec: KeySpec) -> Option<RangeInclusive<usize>> {
    match spec {
        KeySpec::SymmetricDefault => Some(SYMMETRIC_MATERIAL_LEN..=SYMMETRIC_MATERIAL_LEN),
        KeySpec::Hmac224 => Some(28..=64),
        KeySpec::Hmac256 => Some(32..=64),
        KeySpec::Hmac384 => Some(48..=128),
        KeySpec::Hmac512 => Some(64..=128),
        _ => None,
    }
}

/// Whether opened secret material fits its spec, and its key check value: AES-256 as
/// [`check_value`] computes it; HMAC material of a length AWS allows, named by an HMAC over
/// [`CHECK_BLOCK`]. When the HSM does not report the length it is measured under the domain
/// key, to the 8 bytes key wrap pads to (so 25 to 27 bytes pass for HMAC_224's 28).
fn fit_secret(
    member: &Member,
    connection: &super::Connection,
    session: &Session,
    material: ObjectHandle,
    spec: MaterialSpec,
    portability: Portability,
) -> Result<Opened, HsmError> {
    let Some(lengths) = material_lengths(spec.spec) else {
        return Ok(Opened::Unfit);
    };
    let (length, exact) = material_len(member, connection, session, material, portability)?;
    let fits = if exact {
        lengths.contains(&length)
    } else {
        (lengths.start().next_multiple_of(8)..=*lengths.end()).contains(&length)
    };
    if !fits {
        return Ok(Opened::Unfit);
    }
    let check = match spec.spec.mac_algorithm() {
        Some(mac) => hmac_check_value(member, session, material, mac.digest()),
        None => check_value(member, session, material),
    };
    match check {
        Ok(check_value) => Ok(Opened::Material {
            check_value,
            public: None,
        }),
        // Key wrap pads to 8 bytes: 25 to 31 bytes measure as 32, and are no AES key.
        Err(error) if not_an_aes_key(&error) => Ok(Opened::Unfit),
        Err(error) => Err(error),
    }
}

/// Whether an opened private key fits its spec (RSA of the modulus size, EC on the curve),
/// its public key, and the key check value: a hash of the public key's DER, so that the same
/// material is the same public key.
fn fit_pair(
    member: &Member,
    session: &Session,
    unwrapper: &Unwrapper<'_>,
    private: ObjectHandle,
    spec: MaterialSpec,
) -> Result<Opened, HsmError> {
    let attributes = session
        .get_attributes(
            private,
            &[
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::EcParams,
            ],
        )
        .map_err(member.pkcs11_error())?;
    let (mut modulus, mut exponent, mut params) = (None, None, None);
    for attribute in attributes {
        match attribute {
            Attribute::Modulus(value) => modulus = Some(value),
            Attribute::PublicExponent(value) => exponent = Some(value),
            Attribute::EcParams(value) => params = Some(value),
            _ => {}
        }
    }
    let public = match (spec.spec.rsa_bits(), spec.spec.curve()) {
        (Some(bits), _) => match (modulus, exponent) {
            (Some(modulus), Some(exponent)) if bit_length(&modulus) == bits => {
                PublicKey::Rsa { modulus, exponent }
            }
            _ => return Ok(Opened::Unfit),
        },
        (None, Some(curve)) => {
            if params.as_deref() != Some(curve.oid_der()) {
                return Ok(Opened::Unfit);
            }
            let probe = SessionObject {
                session,
                handle: unwrapper.unwrap(&ec_probe_template())?,
            };
            let point = derive_ec_point(member, session, probe.handle, curve)?;
            PublicKey::Ec {
                curve,
                point: der_tagged(0x04, &point),
            }
        }
        (None, None) => return Ok(Opened::Unfit),
    };
    use sha2::Digest;
    let digest = sha2::Sha256::digest(subject_public_key_info(&public));
    let mut check_value = [0u8; CHECK_VALUE_LEN];
    check_value.copy_from_slice(&digest[..CHECK_VALUE_LEN]);
    Ok(Opened::Material {
        check_value,
        public: Some(public),
    })
}

/// The number of significant bits of a big-endian unsigned integer.
fn bit_length(value: &[u8]) -> usize {
    match value.iter().position(|byte| *byte != 0) {
        Some(first) => (value.len() - first) * 8 - value[first].leading_zeros() as usize,
        None => 0,
    }
}

/// The public point (uncompressed SEC1) of the private EC key `probe`, which must be able to
/// sign. SoftHSM2 keeps no public point with an unwrapped private key, and PKCS #11 has no
/// call that computes one, so the point is recovered from ECDSA signatures the HSM makes over
/// fixed digests: each signature admits at most four public keys, two signatures share only
/// the key's own, and the HSM then verifies a third signature with a public object made from
/// it. Nothing but signatures over public digests leaves the HSM.
fn derive_ec_point(
    member: &Member,
    session: &Session,
    probe: ObjectHandle,
    curve: Curve,
) -> Result<Vec<u8>, HsmError> {
    let digest = match curve {
        Curve::P384 => Digest::Sha384,
        Curve::P521 => Digest::Sha512,
        Curve::P256 | Curve::Secp256k1 => Digest::Sha256,
    };
    let mut signed = Vec::new();
    for round in 0u8..3 {
        let prehash = digest.hash(&[b"hsm-kms import public point ".as_slice(), &[round]].concat());
        let signature = session
            .sign(&Mechanism::Ecdsa, probe, &prehash)
            .map_err(member.pkcs11_error())?;
        signed.push((prehash, signature));
    }
    let first = recover_points(curve, &signed[0].0, &signed[0].1);
    let second = recover_points(curve, &signed[1].0, &signed[1].1);
    let shared: Vec<&Vec<u8>> = first
        .iter()
        .filter(|point| second.contains(point))
        .collect();
    let [point] = shared.as_slice() else {
        return Err(member.fail(Failure::Other(
            "the public point of an imported EC key could not be derived".into(),
        )));
    };
    let verifier = session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(curve.oid_der().to_vec()),
            Attribute::EcPoint(der_tagged(0x04, point)),
        ])
        .map_err(member.pkcs11_error())?;
    let verifier = SessionObject {
        session,
        handle: verifier,
    };
    match session.verify(
        &Mechanism::Ecdsa,
        verifier.handle,
        &signed[2].0,
        &signed[2].1,
    ) {
        Ok(()) => Ok(point.to_vec()),
        Err(error) => Err(member.fail(Failure::Other(format!(
            "the derived public point of an imported EC key does not verify its signature: {error}"
        )))),
    }
}

/// The public keys (uncompressed SEC1 points) that the raw ECDSA signature `r || s` over
/// `prehash` may come from.
fn recover_points(curve: Curve, prehash: &[u8], raw: &[u8]) -> Vec<Vec<u8>> {
    macro_rules! recover {
        ($curve:ident) => {{
            use $curve::ecdsa::{Signature, VerifyingKey};
            let Ok(signature) = Signature::from_slice(raw) else {
                return Vec::new();
            };
            (0..=ecdsa::RecoveryId::MAX)
                .filter_map(ecdsa::RecoveryId::from_byte)
                .filter_map(|id| VerifyingKey::recover_from_prehash(prehash, &signature, id).ok())
                .map(|key| key.to_sec1_point(false).as_bytes().to_vec())
                .collect()
        }};
    }
    match curve {
        Curve::P256 => recover!(p256),
        Curve::P384 => recover!(p384),
        Curve::P521 => recover!(p521),
        Curve::Secp256k1 => recover!(k256),
    }
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

/// The length of unwrapped material, and whether it is exact. SoftHSM2 leaves
/// `CKA_VALUE_LEN` at 0 on unwrapped keys (and refuses it in an unwrap template), so when the
/// HSM does not say, the material is wrapped under the domain key and measured: AES key wrap
/// with padding of a key whose length is a multiple of 8 (every AES key length) is exactly 8
/// bytes longer than the key; of any other length, the key rounded up to 8 bytes, plus 8.
fn material_len(
    member: &Member,
    connection: &super::Connection,
    session: &Session,
    material: ObjectHandle,
    portability: Portability,
) -> Result<(usize, bool), HsmError> {
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
            .map(|length| (length, true))
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
    Ok((wrapped.len().saturating_sub(8), false))
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

/// The key check value of HMAC material: SHA-256 over its HMAC of [`CHECK_BLOCK`], made
/// inside the HSM, truncated.
fn hmac_check_value(
    member: &Member,
    session: &Session,
    material: ObjectHandle,
    digest: Digest,
) -> Result<[u8; CHECK_VALUE_LEN], HsmError> {
    use sha2::Digest as _;
    let mechanism = match digest {
        Digest::Sha224 => Mechanism::Sha224Hmac,
        Digest::Sha256 => Mechanism::Sha256Hmac,
        Digest::Sha384 => Mechanism::Sha384Hmac,
        Digest::Sha512 => Mechanism::Sha512Hmac,
    };
    let mac = session
        .sign(&mechanism, material, &CHECK_BLOCK)
        .map_err(member.pkcs11_error())?;
    let hashed = sha2::Sha256::digest(&mac);
    let mut value = [0u8; CHECK_VALUE_LEN];
    value.copy_from_slice(&hashed[..CHECK_VALUE_LEN]);
    Ok(value)
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
        let der = subject_public_key_info(&PublicKey::Rsa {
            modulus: vec![0x00, 0xc5],
            exponent: vec![0x01, 0x00, 0x01],
        });
        assert_eq!(
            hex::encode(&der),
            "301d300d06092a864886f70d0101010500030c0030090202 00c50203010001".replace(' ', "")
        );
    }
}
