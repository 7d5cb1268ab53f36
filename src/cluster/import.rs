//! Imported key material across members: the wrapping key pair lives on the one member that
//! made it; the material is opened there, inside the HSM, and then copied to every other
//! member exactly as generated material is (wrapped under the domain key, each copy proven).
//!
//! This module owns choosing that member and tying the HSM steps to the replication path. It
//! never sees key bytes and never decides what the key store makes of a refusal: it reports
//! what the HSM answered ([`Opened`]) and leaves the AWS exception to the key store.

use std::sync::Arc;

use super::{Cluster, ClusterError, MaterialId};
use crate::config::Replication;
use crate::hsm::import::{
    Destination, Opened, WRAPPING_KEY_PREFIX, WrappingAlgorithm, WrappingKeySpec,
};
use crate::hsm::{Failure, HsmError, MaterialSpec, Member, Portability};

/// A fresh wrapping key pair: where its private half lives and its public half.
#[derive(Debug, Clone)]
pub struct WrappingKey {
    /// The member holding the private half.
    pub member: String,
    /// The private half's `CKA_ID`.
    pub id: Vec<u8>,
    /// The public half, DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
}

impl Cluster {
    /// Generates a wrapping key pair on the least busy healthy member, valid until `valid_to`
    /// (epoch seconds), for material of `key_arn`.
    pub fn make_wrapping_key(
        &self,
        key_arn: &str,
        spec: WrappingKeySpec,
        algorithm: WrappingAlgorithm,
        valid_to: i64,
    ) -> Result<WrappingKey, ClusterError> {
        let mut healthy = self.healthy();
        healthy.sort_by_key(|member| member.in_flight());
        let Some(member) = healthy.first() else {
            return Err(ClusterError::Unavailable {
                cluster: self.name.clone(),
                failures: Vec::new(),
            });
        };
        let id = format!("{WRAPPING_KEY_PREFIX}{}", uuid::Uuid::new_v4()).into_bytes();
        let label = format!("hsm-kms import wrapping key for {key_arn}");
        let public_key = member
            .generate_wrapping_key(&id, &label, valid_to, spec, algorithm)
            .map_err(ClusterError::Hsm)?;
        Ok(WrappingKey {
            member: member.name().to_owned(),
            id,
            public_key,
        })
    }

    /// Opens wrapped material of kind `spec` on `member` with its wrapping key `wrapping_id`,
    /// checks it against `expected` (a key check value), and with `keep` makes it material version
    /// `material` on every member: kept on `member`, then replicated and proven like generated
    /// material (which needs the quorum, checked first). Without `keep` the material is only
    /// checked. Anything the HSM refused leaves nothing behind.
    #[allow(clippy::too_many_arguments)]
    pub fn import_material(
        &self,
        material: &MaterialId,
        label: &str,
        member: &str,
        wrapping_id: &[u8],
        algorithm: WrappingAlgorithm,
        wrapped: &[u8],
        spec: MaterialSpec,
        expected: Option<&[u8]>,
        keep: bool,
    ) -> Result<Opened, ClusterError> {
        let source = self.wrapping_member(member)?;
        if !keep {
            return source
                .open_wrapped_material(
                    wrapping_id,
                    algorithm,
                    wrapped,
                    spec,
                    expected,
                    Destination::CheckOnly,
                )
                .map_err(ClusterError::Hsm);
        }
        self.check_quorum_for_writes()?;
        let id = material.cka_id();
        let _writing = self.writers.claim(&id);
        let portability = match self.replication {
            Replication::Vendor => Portability::NonExtractable,
            Replication::HsmKms => Portability::WrapWithTrusted,
        };
        let opened = source
            .open_wrapped_material(
                wrapping_id,
                algorithm,
                wrapped,
                spec,
                expected,
                Destination::Keep {
                    id: &id,
                    label,
                    portability,
                },
            )
            .map_err(ClusterError::Hsm)?;
        if !matches!(opened, Opened::Material { .. }) || self.replication == Replication::Vendor {
            return Ok(opened);
        }
        let targets: Vec<Arc<Member>> = self
            .healthy()
            .into_iter()
            .filter(|target| target.name() != source.name())
            .collect();
        self.replicate_new(material, label, spec, &source, &targets)?;
        Ok(opened)
    }

    /// Destroys expired wrapping key pairs on every healthy member; returns how many.
    pub fn destroy_expired_wrapping_keys(&self, now_secs: i64) -> Result<usize, ClusterError> {
        let mut destroyed = 0;
        for member in self.healthy() {
            destroyed += member
                .destroy_expired_wrapping_keys(now_secs)
                .map_err(ClusterError::Hsm)?;
        }
        Ok(destroyed)
    }

    /// The member holding a wrapping key, if it is up.
    fn wrapping_member(&self, name: &str) -> Result<Arc<Member>, ClusterError> {
        match self.member(name) {
            Some(member) if member.is_up() => Ok(member.clone()),
            Some(member) => Err(ClusterError::Unavailable {
                cluster: self.name.clone(),
                failures: vec![
                    member
                        .last_failure()
                        .unwrap_or_else(|| HsmError::new(member.name(), Failure::Down)),
                ],
            }),
            None => Err(ClusterError::UnknownMember {
                cluster: self.name.clone(),
                member: name.to_owned(),
            }),
        }
    }
}
