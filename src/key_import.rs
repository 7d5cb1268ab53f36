//! The user's side of importing key material: wrapping it, on the user's machine, under the
//! public key GetParametersForImport returned, exactly as AWS's openssl recipe does.
//!
//! - `RSAES_OAEP_SHA_*`: RSA-OAEP (hash and MGF1 both SHA-1 or both SHA-256, no label) of the
//!   material itself;
//! - `RSA_AES_KEY_WRAP_SHA_*`: a fresh 256-bit AES key wrapped with that RSA-OAEP, followed
//!   by the material wrapped under it with AES key wrap with padding (RFC 5649).
//!
//! The material is what AWS imports for the key spec: 32 bytes for SYMMETRIC_DEFAULT, raw
//! bytes of an allowed length for HMAC, a DER PKCS #8 private key for RSA and ECC specs (RSA
//! ones only with `RSA_AES_KEY_WRAP_*`, as AWS rules).
//!
//! This module owns that wrapping and the check of the material for the key spec, made
//! before anything is sent. It runs in the client (the CLI, a library caller), never in
//! the key store, which opens wrapped material only inside its HSMs. It never logs or keeps
//! the material: the ephemeral AES key and every copy of the material are zeroized.

use aes_kw::KwpAes256;
use aes_kw::cipher::KeyInit;
use std::ops::RangeInclusive;

use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, ObjectIdentifier, PrivateKeyInfoRef};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, PublicKey as RsaPublicKey};
use secrecy::{ExposeSecret, SecretSlice};
use zeroize::Zeroizing;

pub use crate::hsm::import::{SYMMETRIC_MATERIAL_LEN, WrappingAlgorithm, material_lengths};
use crate::keys::spec::KeySpec;

/// Why material could not be wrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapError {
    /// The material does not have a length the key spec takes (checked before anything is
    /// sent).
    #[error(
        "key material for a {key_spec} key must be {} bytes, not {actual}",
        lengths_text(lengths)
    )]
    WrongLength {
        /// The key spec, e.g. `SYMMETRIC_DEFAULT`.
        key_spec: &'static str,
        /// The lengths it takes.
        lengths: RangeInclusive<usize>,
        /// The length given.
        actual: usize,
    },
    /// The material for an RSA or ECC key spec is not a DER PKCS #8 private key of that spec.
    #[error(
        "key material for a {0} key must be a DER-encoded PKCS #8 private key of that key spec"
    )]
    NotAPrivateKey(&'static str),
    /// The wrapping algorithm cannot carry material of this key spec (AWS's rule: RSA
    /// private keys only with `RSA_AES_KEY_WRAP_*`).
    #[error(
        "{key_spec} key material must be wrapped with RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256, not {algorithm}"
    )]
    Algorithm {
        /// The key spec.
        key_spec: &'static str,
        /// The algorithm asked for.
        algorithm: &'static str,
    },
    /// The public key is not a DER SubjectPublicKeyInfo of an RSA key.
    #[error("the public key is not a DER-encoded RSA SubjectPublicKeyInfo")]
    PublicKey,
    /// The key spec is none AWS imports.
    #[error("importing key material for key spec {0} is not supported")]
    KeySpec(String),
    /// RSA-OAEP or the key wrap failed (the message is the library's, never a key byte).
    #[error("wrapping failed: {0}")]
    Wrap(String),
}

fn lengths_text(lengths: &RangeInclusive<usize>) -> String {
    if lengths.start() == lengths.end() {
        lengths.start().to_string()
    } else {
        format!("{} to {}", lengths.start(), lengths.end())
    }
}

/// Checks that `material` is what `key_spec` takes: 32 bytes for SYMMETRIC_DEFAULT, a length
/// AWS allows for HMAC, a DER PKCS #8 private key of the modulus size or curve for RSA and
/// ECC.
pub fn check_material(key_spec: &str, material: &[u8]) -> Result<(), WrapError> {
    let spec = KeySpec::parse(key_spec).ok_or_else(|| WrapError::KeySpec(key_spec.to_owned()))?;
    if let Some(lengths) = material_lengths(spec) {
        if lengths.contains(&material.len()) {
            return Ok(());
        }
        return Err(WrapError::WrongLength {
            key_spec: spec.as_str(),
            lengths,
            actual: material.len(),
        });
    }
    let fits = if let Some(bits) = spec.rsa_bits() {
        rsa::PrivateKey::from_pkcs8_der(material)
            .is_ok_and(|key| usize::try_from(key.n().bit_width()).is_ok_and(|n| n == bits))
    } else if let Some(curve) = spec.curve() {
        PrivateKeyInfoRef::try_from(material).is_ok_and(|info| {
            info.algorithm.oid == EC_PUBLIC_KEY
                && info
                    .algorithm
                    .parameters_oid()
                    .is_ok_and(|oid| curve.oid_der().get(2..) == Some(oid.as_bytes()))
        })
    } else {
        return Err(WrapError::KeySpec(key_spec.to_owned()));
    };
    if fits {
        Ok(())
    } else {
        Err(WrapError::NotAPrivateKey(spec.as_str()))
    }
}

/// `id-ecPublicKey` (RFC 5480), the algorithm of an EC private key's PKCS #8 structure.
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// Wraps `material` for a key of `key_spec` under `public_key` (DER SubjectPublicKeyInfo,
/// as GetParametersForImport returns it) with `algorithm`.
pub fn wrap_key_material(
    public_key: &[u8],
    algorithm: WrappingAlgorithm,
    key_spec: &str,
    material: &SecretSlice<u8>,
) -> Result<Vec<u8>, WrapError> {
    check_material(key_spec, material.expose_secret())?;
    if let Some(spec) = KeySpec::parse(key_spec)
        && spec.rsa_bits().is_some()
        && !algorithm.is_two_step()
    {
        return Err(WrapError::Algorithm {
            key_spec: spec.as_str(),
            algorithm: algorithm.as_str(),
        });
    }
    let public_key =
        RsaPublicKey::from_public_key_der(public_key).map_err(|_| WrapError::PublicKey)?;
    if !algorithm.is_two_step() {
        return oaep(&public_key, algorithm, material.expose_secret());
    }
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    getrandom::fill(ephemeral.as_mut_slice())
        .map_err(|e| WrapError::Wrap(format!("no randomness: {e}")))?;
    let mut wrapped = oaep(&public_key, algorithm, ephemeral.as_slice())?;
    let kwp = KwpAes256::new_from_slice(ephemeral.as_slice())
        .map_err(|_| WrapError::Wrap("bad AES key length".into()))?;
    let plain = material.expose_secret();
    let mut buffer = Zeroizing::new(vec![0u8; plain.len().div_ceil(8) * 8 + 8]);
    let sealed = kwp
        .wrap_key(plain, &mut buffer)
        .map_err(|e| WrapError::Wrap(e.to_string()))?;
    wrapped.extend_from_slice(sealed);
    Ok(wrapped)
}

fn oaep(
    public_key: &RsaPublicKey,
    algorithm: WrappingAlgorithm,
    message: &[u8],
) -> Result<Vec<u8>, WrapError> {
    let mut rng = getrandom::SysRng;
    let result = if algorithm.is_sha256() {
        public_key.encrypt(&mut rng, Oaep::<sha2::Sha256>::new(), message)
    } else {
        public_key.encrypt(&mut rng, Oaep::<sha1::Sha1>::new(), message)
    };
    result.map_err(|e| WrapError::Wrap(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn material_of_the_wrong_length_is_refused_before_anything() {
        for length in [0, 16, 31, 33, 64] {
            let material = SecretSlice::from(vec![7u8; length]);
            assert_eq!(
                wrap_key_material(
                    b"not even a key",
                    WrappingAlgorithm::RsaesOaepSha1,
                    "SYMMETRIC_DEFAULT",
                    &material
                ),
                Err(WrapError::WrongLength {
                    key_spec: "SYMMETRIC_DEFAULT",
                    lengths: 32..=32,
                    actual: length
                })
            );
        }
        let material = SecretSlice::from(vec![7u8; 32]);
        assert_eq!(
            wrap_key_material(
                b"junk",
                WrappingAlgorithm::RsaesOaepSha1,
                "SYMMETRIC_DEFAULT",
                &material
            ),
            Err(WrapError::PublicKey)
        );
    }
}
