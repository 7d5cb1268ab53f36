//! Checkpoints of the audit chain sealed inside the HSMs. A checkpoint is (sequence number,
//! head hash, time); its SHA-256 digest is encrypted with AES-256-GCM under a dedicated key
//! that lives only in the cluster's HSMs, which makes the GCM tag a MAC that cannot be forged
//! without the HSMs. Exported checkpoints let `audit verify` detect a truncated tail.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::log::{AuditError, Head, hex_bytes};
use crate::cluster::Cluster;

/// The HSM key that seals checkpoints (an internal key: no key record names it).
pub const AUDIT_KEY_ID: &str = "hsm-kms-audit";
const AAD: &[u8] = b"hsm-kms audit checkpoint v1";

/// Seals and opens 32-byte digests with a key that never leaves the HSMs.
pub trait Sealer: Send + Sync {
    /// Returns (IV, ciphertext || tag).
    fn seal(&self, digest: &[u8; 32]) -> Result<(Vec<u8>, Vec<u8>), AuditError>;
    /// Opens what [`Sealer::seal`] produced; fails if anything was changed.
    fn open(&self, iv: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuditError>;
}

/// A sealed checkpoint of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The sequence number of the last event it covers.
    pub seq: u64,
    /// That event's chain hash.
    #[serde(with = "hex_bytes")]
    pub head_hash: [u8; 32],
    /// Milliseconds since the epoch.
    pub time: i64,
    /// The GCM IV of the seal, in hex.
    pub iv: String,
    /// The SHA-256 digest of `seq`, `head_hash` and `time`, sealed by the [`Sealer`] (an
    /// internal key in the HSMs), in hex.
    pub seal: String,
}

impl Checkpoint {
    fn digest(seq: u64, head_hash: &[u8; 32], time: i64) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(AAD);
        hasher.update(seq.to_be_bytes());
        hasher.update(head_hash);
        hasher.update(time.to_be_bytes());
        hasher.finalize().into()
    }

    /// Seals the chain head.
    pub fn seal(sealer: &dyn Sealer, head: Head, time: i64) -> Result<Checkpoint, AuditError> {
        let (iv, seal) = sealer.seal(&Checkpoint::digest(head.seq, &head.hash, time))?;
        Ok(Checkpoint {
            seq: head.seq,
            head_hash: head.hash,
            time,
            iv: hex::encode(&iv),
            seal: hex::encode(&seal),
        })
    }

    /// Checks the seal against the HSM key.
    pub fn verify(&self, sealer: &dyn Sealer) -> Result<(), AuditError> {
        let iv = hex::decode(&self.iv)
            .ok()
            .ok_or(AuditError::Malformed("IV"))?;
        let seal = hex::decode(&self.seal)
            .ok()
            .ok_or(AuditError::Malformed("seal"))?;
        let opened = sealer.open(&iv, &seal)?;
        if opened == Checkpoint::digest(self.seq, &self.head_hash, self.time) {
            Ok(())
        } else {
            Err(AuditError::SealMismatch)
        }
    }
}

/// Seals with the cluster's audit key, an internal key created on first use.
pub struct ClusterSealer {
    cluster: Arc<Cluster>,
}

impl ClusterSealer {
    /// A sealer over `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> ClusterSealer {
        ClusterSealer { cluster }
    }
}

impl Sealer for ClusterSealer {
    fn seal(&self, digest: &[u8; 32]) -> Result<(Vec<u8>, Vec<u8>), AuditError> {
        let (iv, sealed) = self
            .cluster
            .seal_internal(AUDIT_KEY_ID, "hsm-kms audit checkpoint key", AAD, digest)
            .map_err(|e| AuditError::Seal(e.to_string()))?
            .into_parts();
        Ok((iv.to_vec(), sealed))
    }

    fn open(&self, iv: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuditError> {
        self.cluster
            .open_internal(AUDIT_KEY_ID, AAD, iv, sealed)
            .map(|plaintext| plaintext.to_vec())
            .map_err(|error| {
                AuditError::Seal(if error.is_rejected_ciphertext() {
                    "the HSM rejected the checkpoint seal".to_owned()
                } else {
                    error.to_string()
                })
            })
    }
}
