//! The operations of asymmetric and HMAC material inside a member: signing and verifying
//! a digest (RSASSA-PSS, RSASSA-PKCS1-v1_5, ECDSA), RSAES-OAEP encryption and decryption,
//! ECDH key agreement, HMAC, and reading a pair's public key.
//!
//! Messages are hashed by the caller (they are not secret and at most 4 KiB); the HSM signs
//! the digest, which serves `MessageType` RAW and DIGEST alike. PKCS#11 ECDSA signatures are
//! `r || s`; AWS's are DER, so this module converts both ways. A signature or MAC that does
//! not verify is an answer (`Ok(false)`), not a failure of the member.

use std::sync::Arc;

use cryptoki::context::Function;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::material::{PublicKey, der_integer};
use super::{Connection, Failure, HsmError, Member, read, write};
use crate::keys::spec::{Curve, Digest, EncryptionAlgorithm, SignatureScheme, SigningAlgorithm};

/// The handle cache key of a pair's public object (the private one is cached by its id).
pub(super) fn public_cache_key(id: &[u8]) -> Vec<u8> {
    let mut key = id.to_vec();
    key.extend_from_slice(b"#public");
    key
}

impl Member {
    /// Signs `digest` (the hash `algorithm` names, already computed) with the private key
    /// `key_id`; ECDSA signatures come back DER-encoded.
    pub fn sign_digest(
        self: &Arc<Self>,
        key_id: &[u8],
        algorithm: SigningAlgorithm,
        curve: Option<Curve>,
        digest: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        self.with_session(|connection, session| {
            let key = self.key_handle(connection, session, key_id)?;
            let (mechanism, input) = signature_input(algorithm, digest);
            let signed = session
                .sign(&mechanism, key, &input)
                .map_err(self.pkcs11_error());
            let signature = self.forget_handle(connection, key_id, signed)?;
            match (algorithm.scheme(), curve) {
                (SignatureScheme::Ecdsa, Some(_)) => Ok(ecdsa_raw_to_der(&signature)),
                _ => Ok(signature),
            }
        })
    }

    /// Verifies `signature` over `digest` with the public key `key_id`: `Ok(false)` when it
    /// does not verify (including an ECDSA signature that is not DER of the curve's size).
    pub fn verify_digest(
        self: &Arc<Self>,
        key_id: &[u8],
        algorithm: SigningAlgorithm,
        curve: Option<Curve>,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool, HsmError> {
        let signature = match (algorithm.scheme(), curve) {
            (SignatureScheme::Ecdsa, Some(curve)) => match ecdsa_der_to_raw(signature, curve) {
                Some(raw) => raw,
                None => return Ok(false),
            },
            _ => signature.to_vec(),
        };
        self.with_session(|connection, session| {
            let key = self.public_handle(connection, session, key_id)?;
            let (mechanism, input) = signature_input(algorithm, digest);
            match session.verify(&mechanism, key, &input, &signature) {
                Ok(()) => Ok(true),
                Err(CryptokiError::Pkcs11(
                    RvError::SignatureInvalid | RvError::SignatureLenRange,
                    _,
                )) => Ok(false),
                Err(error) => {
                    let result = Err(self.pkcs11_error()(error));
                    self.forget_handle(connection, &public_cache_key(key_id), result)
                }
            }
        })
    }

    /// RSAES-OAEP encryption with the public key `key_id`: the raw RSA output, as AWS's
    /// asymmetric ciphertexts are.
    pub fn oaep_encrypt(
        self: &Arc<Self>,
        key_id: &[u8],
        algorithm: EncryptionAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        self.with_session(|connection, session| {
            let key = self.public_handle(connection, session, key_id)?;
            let result = session
                .encrypt(&oaep(algorithm), key, plaintext)
                .map_err(|error| self.oaep_error(error));
            self.forget_handle(connection, &public_cache_key(key_id), result)
        })
    }

    /// RSAES-OAEP decryption with the private key `key_id`; a ciphertext the key does not
    /// open is [`Failure::Rejected`].
    pub fn oaep_decrypt(
        self: &Arc<Self>,
        key_id: &[u8],
        algorithm: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let result = self.with_session(|connection, session| {
            let key = self.key_handle(connection, session, key_id)?;
            match session.decrypt(&oaep(algorithm), key, ciphertext) {
                Ok(plaintext) => Ok(Zeroizing::new(plaintext)),
                Err(CryptokiError::Pkcs11(
                    RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                    _,
                )) => Err(self.fail(Failure::Rejected)),
                Err(error) => {
                    let result = Err(self.oaep_error(error));
                    self.forget_handle(connection, key_id, result)
                }
            }
        });
        // SoftHSM2 answers a ciphertext that does not decode with CKR_GENERAL_ERROR, as a
        // vanished token would: believed only after the member proved healthy (the session
        // layer probed it).
        match result {
            Err(error) if error.may_be_bad_input() && self.is_up() => {
                Err(self.fail(Failure::Rejected))
            }
            other => other,
        }
    }

    /// An OAEP failure. A module that refuses the OAEP parameters themselves (SoftHSM2 2.6
    /// takes only SHA-1 for OAEP, answering `CKR_ARGUMENTS_BAD` to SHA-256) cannot serve the
    /// algorithm on any member: the caller is told so rather than the member called broken.
    fn oaep_error(&self, error: CryptokiError) -> HsmError {
        match error {
            CryptokiError::Pkcs11(
                RvError::ArgumentsBad | RvError::MechanismParamInvalid | RvError::MechanismInvalid,
                Function::EncryptInit | Function::DecryptInit,
            ) => self.fail(Failure::InvalidInput(
                "the HSM's PKCS#11 module does not offer RSAES-OAEP with this hash",
            )),
            other => self.pkcs11_error()(other),
        }
    }

    /// ECDH (`CKM_ECDH1_DERIVE`, no KDF) of the private key `key_id` with the uncompressed
    /// point `peer`: the shared secret (the x-coordinate), as AWS's DeriveSharedSecret returns
    /// it. It is derived into a short-lived, non-sensitive session object whose value is read
    /// once and which is destroyed at once; a point the HSM refuses is [`Failure::InvalidInput`].
    pub fn derive_shared_secret(
        self: &Arc<Self>,
        key_id: &[u8],
        curve: Curve,
        peer: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let result = self.with_session(|connection, session| {
            let key = self.key_handle(connection, session, key_id)?;
            let params = Ecdh1DeriveParams::new(EcKdf::null(), peer);
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(cryptoki::object::KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::ValueLen((curve.field_bytes() as u64).into()),
            ];
            let derived = match session.derive_key(&Mechanism::Ecdh1Derive(params), key, &template)
            {
                Ok(derived) => derived,
                Err(CryptokiError::Pkcs11(
                    RvError::ArgumentsBad
                    | RvError::MechanismParamInvalid
                    | RvError::DomainParamsInvalid,
                    _,
                )) => {
                    return Err(self.fail(Failure::InvalidInput(
                        "the public key is not a point of the key's curve",
                    )));
                }
                Err(error) => {
                    let result = Err(self.pkcs11_error()(error));
                    return self.forget_handle(connection, key_id, result);
                }
            };
            let value = session.get_attributes(derived, &[AttributeType::Value]);
            if let Err(error) = session.destroy_object(derived) {
                // The derived session object goes when the session closes.
                tracing::warn!(member = self.name(), %error, "derived object not destroyed");
            }
            let value = value.map_err(self.pkcs11_error())?;
            match value.into_iter().next() {
                Some(Attribute::Value(secret)) => Ok(Zeroizing::new(secret)),
                _ => Err(self.fail(Failure::Other(
                    "the derived secret's value could not be read".into(),
                ))),
            }
        });
        // SoftHSM2 answers a point off the curve with CKR_GENERAL_ERROR, as a vanished token
        // would: believed to be the caller's point only after the member proved healthy (the
        // session layer probed it).
        match result {
            Err(error) if error.may_be_bad_input() && self.is_up() => Err(self.fail(
                Failure::InvalidInput("the public key is not a point of the key's curve"),
            )),
            other => other,
        }
    }

    /// The HMAC of `message` with the secret `key_id`.
    pub fn hmac(
        self: &Arc<Self>,
        key_id: &[u8],
        digest: Digest,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        self.with_session(|connection, session| {
            let key = self.key_handle(connection, session, key_id)?;
            let mechanism = match digest {
                Digest::Sha224 => Mechanism::Sha224Hmac,
                Digest::Sha256 => Mechanism::Sha256Hmac,
                Digest::Sha384 => Mechanism::Sha384Hmac,
                Digest::Sha512 => Mechanism::Sha512Hmac,
            };
            let result = session
                .sign(&mechanism, key, message)
                .map_err(self.pkcs11_error());
            self.forget_handle(connection, key_id, result)
        })
    }

    /// The public key of the pair `key_id`, read from its public object.
    pub fn public_key(self: &Arc<Self>, key_id: &[u8]) -> Result<PublicKey, HsmError> {
        self.with_session(|connection, session| {
            let key = self.public_handle(connection, session, key_id)?;
            let attributes = session
                .get_attributes(
                    key,
                    &[
                        AttributeType::Modulus,
                        AttributeType::PublicExponent,
                        AttributeType::EcParams,
                        AttributeType::EcPoint,
                    ],
                )
                .map_err(self.pkcs11_error())?;
            let (mut modulus, mut exponent, mut params, mut point) = (None, None, None, None);
            for attribute in attributes {
                match attribute {
                    Attribute::Modulus(value) => modulus = Some(value),
                    Attribute::PublicExponent(value) => exponent = Some(value),
                    Attribute::EcParams(value) => params = Some(value),
                    Attribute::EcPoint(value) => point = Some(value),
                    _ => {}
                }
            }
            let curve = params.and_then(|params| {
                [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1]
                    .into_iter()
                    .find(|curve| curve.oid_der() == params.as_slice())
            });
            match (modulus, exponent, curve, point) {
                (Some(modulus), Some(exponent), _, _) => Ok(PublicKey::Rsa { modulus, exponent }),
                (_, _, Some(curve), Some(point)) => Ok(PublicKey::Ec { curve, point }),
                _ => Err(self.fail(Failure::Other(
                    "the public key object has neither RSA nor EC attributes".into(),
                ))),
            }
        })
    }

    /// Looks up (and caches) the handle of the public object of the pair `id`.
    fn public_handle(
        &self,
        connection: &Connection,
        session: &Session,
        id: &[u8],
    ) -> Result<ObjectHandle, HsmError> {
        let cache_key = public_cache_key(id);
        if let Some(handle) = read(&connection.handles).get(&cache_key) {
            return Ok(*handle);
        }
        let found = self.search(
            session,
            &[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(id.to_vec()),
            ],
        )?;
        match found.as_slice() {
            [handle] => {
                write(&connection.handles).insert(cache_key, *handle);
                Ok(*handle)
            }
            [] => Err(self.fail(Failure::KeyMissing(hex::encode(id)))),
            _ => Err(self.fail(Failure::Other(format!(
                "{} public key objects share CKA_ID {}",
                found.len(),
                hex::encode(id)
            )))),
        }
    }
}

/// The mechanism and the input that sign or verify `digest` with `algorithm`.
fn signature_input(algorithm: SigningAlgorithm, digest: &[u8]) -> (Mechanism<'static>, Vec<u8>) {
    let hash = algorithm.digest();
    match algorithm.scheme() {
        SignatureScheme::Pss => {
            let (hash_alg, mgf) = match hash {
                Digest::Sha224 => (MechanismType::SHA224, PkcsMgfType::MGF1_SHA224),
                Digest::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
                Digest::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
                Digest::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
            };
            let params = PkcsPssParams {
                hash_alg,
                mgf,
                s_len: (hash.output_len() as u64).into(),
            };
            (Mechanism::RsaPkcsPss(params), digest.to_vec())
        }
        SignatureScheme::Pkcs1V15 => {
            let mut input = hash.digest_info_prefix().to_vec();
            input.extend_from_slice(digest);
            (Mechanism::RsaPkcs, input)
        }
        SignatureScheme::Ecdsa => (Mechanism::Ecdsa, digest.to_vec()),
    }
}

/// RSAES-OAEP with MGF1 of the same hash and an empty label, as AWS uses it.
fn oaep(algorithm: EncryptionAlgorithm) -> Mechanism<'static> {
    let (hash, mgf) = match algorithm {
        EncryptionAlgorithm::RsaesOaepSha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        EncryptionAlgorithm::RsaesOaepSha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    };
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
}

/// `r || s` as the DER `SEQUENCE { INTEGER r, INTEGER s }` AWS returns.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [der_integer(r), der_integer(s)].concat();
    let mut out = vec![0x30];
    if body.len() < 0x80 {
        out.push(body.len() as u8);
    } else {
        out.extend([0x81, body.len() as u8]);
    }
    out.extend(body);
    out
}

/// The `r || s` of a DER ECDSA signature for `curve`; `None` when it is not one.
pub fn ecdsa_der_to_raw(der: &[u8], curve: Curve) -> Option<Vec<u8>> {
    let size = curve.field_bytes();
    let body = match der {
        [0x30, len, body @ ..] if usize::from(*len) == body.len() && *len < 0x80 => body,
        [0x30, 0x81, len, body @ ..] if usize::from(*len) == body.len() && *len >= 0x80 => body,
        _ => return None,
    };
    let (r, rest) = der_unsigned(body)?;
    let (s, rest) = der_unsigned(rest)?;
    if !rest.is_empty() || r.len() > size || s.len() > size {
        return None;
    }
    let mut raw = vec![0u8; 2 * size];
    raw[size - r.len()..size].copy_from_slice(r);
    raw[2 * size - s.len()..].copy_from_slice(s);
    Some(raw)
}

/// One DER INTEGER (positive, minimally encoded) and what follows it.
fn der_unsigned(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x02, len, rest @ ..] = input else {
        return None;
    };
    let len = usize::from(*len);
    if len == 0 || len >= 0x80 || rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    // Negative, or a leading zero that is not needed: not DER.
    if value[0] & 0x80 != 0 || (value.len() > 1 && value[0] == 0 && value[1] & 0x80 == 0) {
        return None;
    }
    let value = if value[0] == 0 { &value[1..] } else { value };
    Some((value, rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_convert_both_ways() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let size = curve.field_bytes();
            for (r_first, s_first) in [(0x01u8, 0x80u8), (0x80, 0x00), (0x00, 0x7f)] {
                let mut raw = vec![0x11u8; 2 * size];
                raw[0] = r_first;
                raw[size] = s_first;
                let der = ecdsa_raw_to_der(&raw);
                assert_eq!(der[0], 0x30);
                assert_eq!(ecdsa_der_to_raw(&der, curve).unwrap(), raw, "{curve:?}");
            }
        }
        assert_eq!(ecdsa_der_to_raw(b"\x30\x00", Curve::P256), None);
        assert_eq!(
            ecdsa_der_to_raw(
                &[0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x01],
                Curve::P256
            ),
            None
        );
        let oversized = ecdsa_raw_to_der(&[0x22u8; 2 * 48]);
        assert_eq!(ecdsa_der_to_raw(&oversized, Curve::P256), None);
    }
}
