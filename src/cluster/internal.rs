//! Internal keys: keys hsm-kms keeps in a cluster's HSMs for its own purposes: AES-256 keys
//! for its secrets (the audit checkpoint key, the custom key store password key), used only
//! for AES-GCM sealing with a fresh IV, and ECC_NIST_P256 signing keys for what others must
//! verify without the HSMs (compliance evidence manifests). They are replicated like CMK
//! material, named `hsm-kms-<purpose>` (no key record names them, so reconciliation skips
//! them), and created on first use.
//!
//! First use must never create a key twice: two objects with one `CKA_ID` would break every
//! seal and open after a restart. So a key is created only when every healthy member answered
//! "not found" to the seal, and then only under a process-wide lock, after every configured
//! member (down ones included) has proven it holds no such key. A member that is down, busy
//! or fails its probe proves nothing: the seal then fails and is retried later.

use zeroize::Zeroizing;

use super::{Cluster, ClusterError, MaterialId};
use crate::hsm::material::subject_public_key_info;
use crate::hsm::{Failure, Gcm, GcmSeal, HsmError, MaterialSpec, Sealed, gcm};
use crate::keys::spec::{Curve, KeySpec, KeyUsage, SigningAlgorithm};

/// The kind of internal signing keys.
const SIGNING: MaterialSpec = MaterialSpec {
    spec: KeySpec::EccNistP256,
    usage: KeyUsage::SignVerify,
};

/// Prefix of every internal key id.
pub const INTERNAL_PREFIX: &str = "hsm-kms-";

impl Cluster {
    /// Seals `plaintext` with AAD `aad` under the internal key `key` (created on first use);
    /// the result carries the IV the HSM used.
    pub fn seal_internal(
        &self,
        key: &str,
        label: &str,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Sealed, ClusterError> {
        let seal = GcmSeal::new(aad, gcm::TAG_LEN * 8)
            .map_err(|f| ClusterError::Hsm(HsmError::new(self.name(), f)))?;
        let material = MaterialId::new(key, 1);
        match self.encrypt(&material, &seal, plaintext) {
            Ok(sealed) => return Ok(sealed.value),
            Err(error) if !missing_everywhere(&error) => return Err(error),
            Err(_) => {}
        }
        let _first_use = self
            .internal_first_use
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.create_internal_key(&material, label, MaterialSpec::AES)?;
        Ok(self.encrypt(&material, &seal, plaintext)?.value)
    }

    /// Signs the SHA-256 `digest` with the internal ECC_NIST_P256 signing key `key` (created
    /// on first use, replicated like every key pair); returns the DER ECDSA signature and the
    /// key's DER SubjectPublicKeyInfo, so anyone can verify it (`openssl dgst -verify`).
    pub fn sign_internal(
        &self,
        key: &str,
        label: &str,
        digest: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), ClusterError> {
        let material = MaterialId::new(key, 1);
        let sign = || {
            self.with_material(&material, |member, id| {
                let signature = member.sign_digest(
                    id,
                    SigningAlgorithm::EcdsaSha256,
                    Some(Curve::P256),
                    digest,
                )?;
                Ok((signature, member.public_key(id)?))
            })
        };
        let signed = match sign() {
            Ok(signed) => signed,
            Err(error) if !missing_everywhere(&error) => return Err(error),
            Err(_) => {
                let _first_use = self
                    .internal_first_use
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                self.create_internal_key(&material, label, SIGNING)?;
                sign()?
            }
        };
        let (signature, public) = signed.value;
        Ok((signature, subject_public_key_info(&public)))
    }

    /// Opens what [`Cluster::seal_internal`] sealed; a changed byte is a rejected ciphertext.
    pub fn open_internal(
        &self,
        key: &str,
        aad: &[u8],
        iv: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ClusterError> {
        let gcm = Gcm::new(iv, aad, gcm::TAG_LEN * 8)
            .map_err(|f| ClusterError::Hsm(HsmError::new(self.name(), f)))?;
        Ok(self.decrypt(&MaterialId::new(key, 1), &gcm, sealed)?.value)
    }

    /// Creates an internal key unless some member holds it already (another thread created it
    /// meanwhile, or a member has it that the others lack: catch-up copies it). Called under
    /// the first-use lock; every configured member must answer, a failed answer is no "absent".
    fn create_internal_key(
        &self,
        material: &MaterialId,
        label: &str,
        spec: MaterialSpec,
    ) -> Result<(), ClusterError> {
        let id = material.cka_id();
        for member in self.members() {
            match member.has_key(&id) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(error) => {
                    return Err(ClusterError::Unavailable {
                        cluster: self.name().to_owned(),
                        failures: vec![error],
                    });
                }
            }
        }
        self.create_material(material, label, spec)
    }
}

/// Whether a routed call failed only because every member it reached lacks the key.
fn missing_everywhere(error: &ClusterError) -> bool {
    match error {
        ClusterError::Unavailable { failures, .. } => {
            !failures.is_empty()
                && failures
                    .iter()
                    .all(|f| matches!(f.failure, Failure::KeyMissing(_)))
        }
        _ => false,
    }
}
