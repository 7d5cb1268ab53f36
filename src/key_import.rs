//! The user's side of importing key material: wrapping it, on the user's machine, under the
//! public key GetParametersForImport returned, exactly as AWS's openssl recipe does.
//!
//! - `RSAES_OAEP_SHA_*`: RSA-OAEP (hash and MGF1 both SHA-1 or both SHA-256, no label) of the
//!   material itself;
//! - `RSA_AES_KEY_WRAP_SHA_*`: a fresh 256-bit AES key wrapped with that RSA-OAEP, followed
//!   by the material wrapped under it with AES key wrap with padding (RFC 5649).
//!
//! This module owns that wrapping and the length check of the material for the key spec,
//! made before anything is sent. It runs in the client (the CLI, a library caller), never in
//! the key store, which opens wrapped material only inside its HSMs. It never logs or keeps
//! the material: the ephemeral AES key and every copy of the material are zeroized.

use aes_kw::KwpAes256;
use aes_kw::cipher::KeyInit;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, PublicKey as RsaPublicKey};
use secrecy::{ExposeSecret, SecretSlice};
use zeroize::Zeroizing;

pub use crate::hsm::import::{SYMMETRIC_MATERIAL_LEN, WrappingAlgorithm};

/// Why material could not be wrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapError {
    /// The material does not fit the key spec (checked before anything is sent).
    #[error("key material for a {key_spec} key must be {expected} bytes, not {actual}")]
    WrongLength {
        /// The key spec, e.g. `SYMMETRIC_DEFAULT`.
        key_spec: &'static str,
        /// The length it needs.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The public key is not a DER SubjectPublicKeyInfo of an RSA key.
    #[error("the public key is not a DER-encoded RSA SubjectPublicKeyInfo")]
    PublicKey,
    /// The key spec has no importable material here yet.
    #[error("importing key material for key spec {0} is not supported")]
    KeySpec(String),
    /// RSA-OAEP or the key wrap failed (the message is the library's, never a key byte).
    #[error("wrapping failed: {0}")]
    Wrap(String),
}

/// Checks that `material` has the length `key_spec` takes.
pub fn check_material(key_spec: &str, material: &[u8]) -> Result<(), WrapError> {
    match key_spec {
        "SYMMETRIC_DEFAULT" if material.len() == SYMMETRIC_MATERIAL_LEN => Ok(()),
        "SYMMETRIC_DEFAULT" => Err(WrapError::WrongLength {
            key_spec: "SYMMETRIC_DEFAULT",
            expected: SYMMETRIC_MATERIAL_LEN,
            actual: material.len(),
        }),
        other => Err(WrapError::KeySpec(other.to_owned())),
    }
}

/// Wraps `material` for a key of `key_spec` under `public_key` (DER SubjectPublicKeyInfo,
/// as GetParametersForImport returns it) with `algorithm`.
pub fn wrap_key_material(
    public_key: &[u8],
    algorithm: WrappingAlgorithm,
    key_spec: &str,
    material: &SecretSlice<u8>,
) -> Result<Vec<u8>, WrapError> {
    check_material(key_spec, material.expose_secret())?;
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
                    expected: 32,
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
