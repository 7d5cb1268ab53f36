//! Internal keys: AES-256 keys hsm-kms keeps in a cluster's HSMs for its own secrets (the
//! audit checkpoint key, the custom key store password key). They are replicated like CMK
//! material, named `hsm-kms-<purpose>` (no key record names them, so reconciliation skips
//! them), created on first use, and used only for AES-GCM sealing with a fresh IV.

use zeroize::Zeroizing;

use super::{Cluster, ClusterError, MaterialId};
use crate::hsm::{Gcm, GcmSeal, HsmError, Sealed, gcm};

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
        let sealed = match self.encrypt(&material, &seal, plaintext) {
            Ok(sealed) => sealed,
            Err(_) => {
                self.create_internal_key(&material, label)?;
                self.encrypt(&material, &seal, plaintext)?
            }
        };
        Ok(sealed.value)
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

    fn create_internal_key(&self, material: &MaterialId, label: &str) -> Result<(), ClusterError> {
        let present = self
            .members()
            .iter()
            .filter(|m| m.is_up())
            .any(|m| m.has_key(&material.cka_id()).unwrap_or(false));
        if present {
            return Ok(());
        }
        self.create_key(material, label)
    }
}
