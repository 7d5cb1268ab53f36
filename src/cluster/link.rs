//! Linked clusters: the `cluster link` ceremony that gives two clusters (two sites) one
//! trusted, sensitive link key on every member of both, and copying a material version from
//! one cluster into the other, wrapped under that key inside the HSMs and proven equal, as
//! replication inside a cluster is. Key material never crosses between clusters any other
//! way, and never in the clear.

use std::sync::Arc;

use serde::Serialize;
use zeroize::Zeroizing;

use super::replication::{PROBE_PREFIX, prove_equal};
use super::{Cluster, ClusterError, preflight};
use crate::config::{ClusterConfig, Replication};
use crate::hsm::templates::TrustedKey;
use crate::hsm::{Failure, HsmError, MaterialSpec, Member, Portability, ceremony};

/// What `cluster link` found and did.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    /// The two clusters, as named in the config.
    pub clusters: [String; 2],
    /// Members (`cluster/member`) given the link key by this run.
    pub received: Vec<String>,
    /// Members on which the link key is proven equal to every other's.
    pub proven: Vec<String>,
    /// Members that could not be reached: they lack the link key until the ceremony is run
    /// again.
    pub unreached: Vec<String>,
}

/// One side of a link being made: its members, not connected, sorted by what they hold.
struct Side {
    name: String,
    holders: Vec<Arc<Member>>,
    lacking: Vec<Arc<Member>>,
    unreached: Vec<(Arc<Member>, HsmError)>,
}

impl Side {
    fn survey(name: &str, config: &ClusterConfig, link: &TrustedKey) -> Result<Side, ClusterError> {
        if config.replication == Replication::Vendor {
            return Err(ClusterError::Link(format!(
                "cluster {name} is a vendor cluster: its key material never leaves its HSMs, so it cannot be linked"
            )));
        }
        let mut side = Side {
            name: name.to_owned(),
            holders: Vec::new(),
            lacking: Vec::new(),
            unreached: Vec::new(),
        };
        for member in Cluster::members_from_config(config) {
            let held = ceremony::has_domain_key(&member).and_then(|initialised| {
                if !initialised {
                    return Err(HsmError::new(member.name(), Failure::DomainKeyMissing));
                }
                ceremony::has_trusted_key(&member, link)
            });
            match held {
                Ok(true) => side.holders.push(member),
                Ok(false) => side.lacking.push(member),
                Err(error) if matches!(error.failure, Failure::DomainKeyMissing) => {
                    return Err(ClusterError::Link(format!(
                        "member {} of cluster {name} has no domain key: run `hsm-kms cluster init` on {name} first",
                        member.name()
                    )));
                }
                Err(error) => side.unreached.push((member, error)),
            }
        }
        let reachable = side.holders.iter().chain(&side.lacking);
        let problems = preflight::quorum_problems(reachable.map(|m| (m.name(), m.zone())));
        if !problems.is_empty() {
            return Err(ClusterError::CannotWriteKeys {
                cluster: side.name,
                problems,
            });
        }
        Ok(side)
    }

    fn qualified(&self, member: &Member) -> String {
        format!("{}/{}", self.name, member.name())
    }
}

impl Cluster {
    /// `cluster link A B`: establishes the link key of clusters `a` and `b` on every
    /// reachable member of both (idempotently: members holding it keep it, a run after an
    /// interruption finishes the job), then opens both clusters and proves the key equal on
    /// every healthy member. Refused while either cluster lacks its quorum, for a vendor
    /// cluster, and before `cluster init`.
    ///
    /// The key is generated inside one member (of `a`, unless some member holds it already)
    /// and travels to each other member wrapped under an RSA-OAEP transport key that member's
    /// security officer made inside its HSM (see [`ceremony`]).
    pub fn link(
        a: (&str, &ClusterConfig),
        b: (&str, &ClusterConfig),
    ) -> Result<(Cluster, Cluster, LinkReport), ClusterError> {
        if a.0 == b.0 {
            return Err(ClusterError::Link(format!(
                "cluster {} cannot be linked with itself",
                a.0
            )));
        }
        let link = TrustedKey::link(a.0, b.0);
        let sides = [
            Side::survey(a.0, a.1, &link)?,
            Side::survey(b.0, b.1, &link)?,
        ];
        let source = sides
            .iter()
            .find_map(|side| side.holders.first())
            .or_else(|| sides[0].lacking.first())
            .cloned()
            .ok_or_else(|| ClusterError::Link(format!("cluster {} has no member", a.0)))?;
        let receivers: Vec<(usize, Arc<Member>)> = sides
            .iter()
            .enumerate()
            .flat_map(|(index, side)| side.lacking.iter().map(move |m| (index, m.clone())))
            .filter(|(_, member)| !Arc::ptr_eq(member, &source))
            .collect();
        let mut report = LinkReport {
            clusters: [a.0.to_owned(), b.0.to_owned()],
            received: receivers
                .iter()
                .map(|(side, member)| sides[*side].qualified(member))
                .collect(),
            proven: Vec::new(),
            unreached: sides
                .iter()
                .flat_map(|side| side.unreached.iter().map(|(m, _)| side.qualified(m)))
                .collect(),
        };
        if sides[0]
            .lacking
            .iter()
            .chain(&sides[1].lacking)
            .next()
            .is_some()
        {
            let members: Vec<Arc<Member>> = receivers.into_iter().map(|(_, m)| m).collect();
            ceremony::distribute_trusted_key(&source, &members, &link)
                .map_err(ClusterError::Hsm)?;
        }
        drop(source);
        drop(sides);
        let first = Cluster::open(a.0, a.1)?;
        let second = Cluster::open(b.0, b.1)?;
        report.proven = first.prove_link(&second)?;
        Ok((first, second, report))
    }

    /// Proves that every healthy member of this cluster and of `other` holds the same link
    /// key: a throw-away key made inside one member is wrapped there under the link key,
    /// unwrapped on each other member and proven equal, then destroyed everywhere. Returns
    /// the members proven (`cluster/member`).
    pub fn prove_link(&self, other: &Cluster) -> Result<Vec<String>, ClusterError> {
        let link = TrustedKey::link(self.name(), other.name());
        let healthy = self.healthy();
        let Some((source, _)) = healthy.split_first() else {
            return Err(ClusterError::CannotWriteKeys {
                cluster: self.name.clone(),
                problems: vec!["no healthy member".into()],
            });
        };
        let id = format!("{PROBE_PREFIX}{}", uuid::Uuid::new_v4()).into_bytes();
        let label = "hsm-kms link key probe";
        source
            .generate_key(&id, label, MaterialSpec::AES, Portability::WrapWithTrusted)
            .map_err(ClusterError::Hsm)?;
        let proven = (|| {
            let wrapped = Zeroizing::new(
                source
                    .wrap_key_for_link(&id, &link.id)
                    .map_err(|error| self.not_linked(other, error))?,
            );
            let mut proven = vec![format!("{}/{}", self.name, source.name())];
            let targets = healthy[1..]
                .iter()
                .map(|m| (self, m.clone()))
                .chain(other.healthy().into_iter().map(|m| (other, m)));
            for (cluster, target) in targets {
                let copied = target
                    .unwrap_key_from_link(&link.id, &id, label, MaterialSpec::AES, &wrapped, None)
                    .map_err(|error| cluster.not_linked(self, error));
                let equal = copied.and_then(|()| {
                    prove_equal(source, &target, &id, MaterialSpec::AES).map_err(ClusterError::Hsm)
                });
                if let Err(error) = target.destroy_key(&id) {
                    tracing::warn!(member = target.name(), %error, "link probe left behind");
                }
                equal?;
                proven.push(format!("{}/{}", cluster.name, target.name()));
            }
            Ok(proven)
        })();
        if let Err(error) = source.destroy_key(&id) {
            tracing::warn!(member = source.name(), %error, "link probe left behind");
        }
        proven
    }

    /// Copies material version `material` of `source` (a linked cluster) into this cluster:
    /// wrapped under the link key inside a member of `source` that holds it, unwrapped inside
    /// one healthy member here and proven equal to the original, then replicated to the other
    /// members under the domain key as a new material version is. Needs this cluster's
    /// quorum; on failure every copy made here is destroyed again (those that cannot be are
    /// named in the error). A copy left here by an interrupted earlier attempt is replaced.
    pub fn copy_from_linked(
        &self,
        source: &Cluster,
        material: &super::MaterialId,
        label: &str,
        spec: MaterialSpec,
    ) -> Result<(), ClusterError> {
        if source.name() == self.name() {
            return Err(ClusterError::Link(format!(
                "cluster {} cannot copy key material from itself",
                self.name
            )));
        }
        self.check_quorum_for_writes()?;
        let link = TrustedKey::link(self.name(), source.name());
        let id = material.cka_id();
        let wrapped = source
            .route(|member| member.wrap_key_for_link(&id, &link.id))
            .map_err(|error| match error {
                ClusterError::Unavailable { failures, .. } if lacks_link(&failures, &link) => {
                    ClusterError::Link(not_linked_message(self.name(), source.name()))
                }
                other => other,
            })?;
        let from = wrapped.member;
        let wrapped = Zeroizing::new(wrapped.value);
        let public = spec
            .is_pair()
            .then(|| from.public_key(&id))
            .transpose()
            .map_err(ClusterError::Hsm)?;
        let healthy = self.healthy();
        let Some((first, rest)) = healthy.split_first() else {
            return Err(ClusterError::CannotWriteKeys {
                cluster: self.name.clone(),
                problems: vec!["no healthy member".into()],
            });
        };
        let _writing = self.writers.claim(&id);
        for member in &healthy {
            if member.has_key(&id).map_err(ClusterError::Hsm)? {
                member.destroy_key(&id).map_err(ClusterError::Hsm)?;
            }
        }
        first
            .unwrap_key_from_link(&link.id, &id, label, spec, &wrapped, public.as_ref())
            .map_err(|cause| match cause.failure {
                Failure::KeyMissing(_) => {
                    ClusterError::Link(not_linked_message(self.name(), source.name()))
                }
                _ => self.replication_failed(material, cause, &[]),
            })?;
        prove_equal(&from, first, &id, spec).map_err(|cause| {
            self.replication_failed(material, cause, std::slice::from_ref(first))
        })?;
        self.replicate_new(material, label, spec, first, rest)
    }

    /// The error for a wrap or unwrap under the link key of this cluster and `other` that
    /// failed: "not linked" when the member lacks the link key.
    fn not_linked(&self, other: &Cluster, error: HsmError) -> ClusterError {
        match error.failure {
            Failure::KeyMissing(_) => {
                ClusterError::Link(not_linked_message(self.name(), other.name()))
            }
            _ => ClusterError::Hsm(error),
        }
    }
}

/// Whether every member tried failed for want of the link key.
fn lacks_link(failures: &[HsmError], link: &TrustedKey) -> bool {
    let missing = hex::encode(&link.id);
    !failures.is_empty()
        && failures
            .iter()
            .all(|error| matches!(&error.failure, Failure::KeyMissing(id) if *id == missing))
}

fn not_linked_message(a: &str, b: &str) -> String {
    format!(
        "clusters {a} and {b} share no link key on every member: run `hsm-kms cluster link {a} {b}`"
    )
}
