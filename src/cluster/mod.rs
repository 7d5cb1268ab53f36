//! The set of HSM members behind one cluster name: preflight quorum over zones, routing to
//! any healthy member that can serve a call, health, and replication of key material between
//! members.
//! A member that is down is reconnected by the HSM layer in the background; while fewer than
//! two members are healthy, crypto keeps working on the survivors and anything that must
//! write key material refuses with [`ClusterError::CannotWriteKeys`].

pub mod import;
pub mod internal;
mod link;
pub mod preflight;
mod replication;
pub mod vendor;
mod writers;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::{ClusterConfig, HsmEndpoint, Replication};
use crate::hsm::{
    Disposition, DomainKey, Failure, Gcm, GcmSeal, HsmError, KeyObject, Member, Sealed,
};
pub use link::LinkReport;
pub use preflight::PreflightFailure;
pub use replication::{CatchUp, DestroyReport, MaterialId, POOL_PREFIX};

/// An error of a cluster-level operation.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster does not meet the conditions to serve (see [`preflight`]).
    #[error(transparent)]
    Preflight(#[from] PreflightFailure),
    /// Too few healthy members to write key material to them.
    #[error("cannot write key material to cluster {cluster}: {}", problems.join("; "))]
    CannotWriteKeys {
        /// The cluster's name.
        cluster: String,
        /// What keeps each member or zone from taking a write.
        problems: Vec<String>,
    },
    /// No healthy member could serve the call.
    #[error(
        "no HSM member of cluster {cluster} could serve the call: {}",
        join_errors(failures)
    )]
    Unavailable {
        /// The cluster's name.
        cluster: String,
        /// What each member tried answered.
        failures: Vec<HsmError>,
    },
    /// Replication failed part-way; the copies written so far were rolled back, except on
    /// `left_behind`, which needs repair.
    #[error(
        "replicating {material} failed: {cause}{}",
        left_behind_note(left_behind)
    )]
    Replication {
        /// The material version being replicated.
        material: String,
        /// The failure that stopped it.
        cause: HsmError,
        /// Members whose copy could not be rolled back.
        left_behind: Vec<String>,
    },
    /// A member refused the call for a reason no other member would change.
    #[error(transparent)]
    Hsm(HsmError),
    /// Two clusters cannot be linked, or are not linked.
    #[error("{0}")]
    Link(String),
    /// A member name that is not in the cluster's config.
    #[error("cluster {cluster} has no member named {member:?}")]
    UnknownMember {
        /// The cluster's name.
        cluster: String,
        /// The name asked for.
        member: String,
    },
}

impl ClusterError {
    /// Whether a healthy HSM rejected a ciphertext (wrong tag, AAD or IV).
    pub fn is_rejected_ciphertext(&self) -> bool {
        matches!(
            self,
            ClusterError::Hsm(HsmError {
                failure: Failure::Rejected,
                ..
            })
        )
    }
}

fn join_errors(errors: &[HsmError]) -> String {
    if errors.is_empty() {
        return "no member is up".into();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn left_behind_note(members: &[String]) -> String {
    if members.is_empty() {
        String::new()
    } else {
        format!(" (copies left on {} need repair)", members.join(", "))
    }
}

/// A result and the member that produced it.
#[derive(Debug)]
pub struct Served<T> {
    /// What the call returned.
    pub value: T,
    /// The member that answered (for metrics and the audit trail).
    pub member: Arc<Member>,
}

/// An open cluster.
pub struct Cluster {
    name: String,
    replication: Replication,
    members: Vec<Arc<Member>>,
    hsms: Vec<HsmEndpoint>,
    next: AtomicUsize,
    /// Serialises the first use of internal keys, so one is never created twice.
    internal_first_use: Mutex<()>,
    /// One writer per material version (create, copy, destroy).
    writers: writers::MaterialWriters,
}

/// Health of one member as `cluster status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// The member's name.
    pub name: String,
    /// Its availability zone.
    pub zone: String,
    /// Whether it answered the last probe.
    pub healthy: bool,
    /// Why it is not healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Number of hsm-kms key objects on its token, when probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_objects: Option<usize>,
}

/// Health of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub cluster: String,
    /// `hsm-kms` or `vendor`.
    pub replication: &'static str,
    /// Quorum holds: at least two healthy HSMs in two zones.
    pub serving: bool,
    /// Some member or HSM is down, or key material cannot be written.
    pub degraded: bool,
    /// Each member (the one slot, for a vendor cluster).
    pub members: Vec<MemberStatus>,
    /// The HSMs behind a vendor cluster's slot, as probed on their addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hsms: Vec<vendor::HsmProbe>,
    /// Why the cluster is not serving or degraded, one sentence each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Per key material version, the members holding it (probed status of self-replicated
    /// clusters only; members that could not be listed count as not holding it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_copies: Vec<KeyCopies>,
    /// Key material versions held by fewer members than the cluster has.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub below_full_redundancy: Vec<String>,
    /// The clusters this one is linked with (`cluster link`), as probed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkStatus>,
}

/// One linked cluster, as `cluster status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    /// The other cluster's name.
    pub cluster: String,
    /// The members of this cluster that hold the link key.
    pub members: Vec<String>,
    /// Whether every member of this cluster holds it.
    pub complete: bool,
}

/// How many members hold one key material version.
#[derive(Debug, Clone, Serialize)]
pub struct KeyCopies {
    /// `<key id>/<version>` (the object's `CKA_ID`).
    pub material: String,
    /// Number of members holding it.
    pub copies: usize,
    /// The members holding it.
    pub members: Vec<String>,
}

impl Cluster {
    /// The members of a configured cluster, not yet connected.
    pub fn members_from_config(config: &ClusterConfig) -> Vec<Arc<Member>> {
        let interval = Duration::from_millis(config.reconnect_interval_ms);
        let domain_key = match config.replication {
            Replication::HsmKms => DomainKey::Required,
            Replication::Vendor => DomainKey::Optional,
        };
        let member_configs: Vec<_> = match config.replication {
            Replication::HsmKms => config.members.clone(),
            Replication::Vendor => config.slot.iter().cloned().collect(),
        };
        member_configs
            .into_iter()
            .map(|member| {
                let zone = member.zone.clone().unwrap_or_else(|| "vendor".into());
                Member::new(
                    member,
                    zone,
                    config.sessions_per_member,
                    interval,
                    domain_key,
                )
            })
            .collect()
    }

    /// Opens a cluster for service: connects every member and runs the preflight. Members
    /// that fail while the quorum still holds are reconnected in the background.
    pub fn open(name: &str, config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        let members = Cluster::members_from_config(config);
        let failures: Vec<Option<HsmError>> = std::thread::scope(|scope| {
            let connecting: Vec<_> = members
                .iter()
                .map(|member| scope.spawn(move || member.connect().err()))
                .collect();
            connecting
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Some(HsmError::new(
                            "?",
                            Failure::Other("connect panicked".into()),
                        ))
                    })
                })
                .collect()
        });
        let cluster = Cluster {
            name: name.to_owned(),
            replication: config.replication,
            members,
            hsms: config.hsms.clone(),
            next: AtomicUsize::new(0),
            internal_first_use: Mutex::new(()),
            writers: writers::MaterialWriters::default(),
        };
        let failed: Vec<(String, String)> = failures
            .iter()
            .flatten()
            .map(|error| (error.member.clone(), error.failure.to_string()))
            .collect();
        let problems = cluster.quorum_problems();
        if !problems.is_empty() {
            return Err(PreflightFailure {
                cluster: name.to_owned(),
                members: failed,
                problems,
                causes: failures.into_iter().flatten().collect(),
            }
            .into());
        }
        for error in failures.into_iter().flatten() {
            if let Some(member) = cluster.member(&error.member)
                && error.disposition() == Disposition::Unavailable
            {
                member.mark_down(error);
            }
        }
        Ok(cluster)
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the cluster keeps its members in step.
    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// Every configured member.
    pub fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Arc<Member>> {
        self.members.iter().find(|member| member.name() == name)
    }

    fn healthy(&self) -> Vec<Arc<Member>> {
        self.members.iter().filter(|m| m.is_up()).cloned().collect()
    }

    /// Refuses a write of key material while the quorum does not hold.
    fn check_quorum_for_writes(&self) -> Result<(), ClusterError> {
        let problems = self.quorum_problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::CannotWriteKeys {
                cluster: self.name.clone(),
                problems,
            })
        }
    }

    /// Problems with the quorum right now (empty when it holds).
    fn quorum_problems(&self) -> Vec<String> {
        match self.replication {
            Replication::HsmKms => {
                let healthy = self.healthy();
                preflight::quorum_problems(healthy.iter().map(|m| (m.name(), m.zone())))
            }
            Replication::Vendor => {
                if self.healthy().is_empty() {
                    return vec!["the cluster's PKCS#11 slot is not reachable".into()];
                }
                let probes = vendor::probe_all(&self.hsms);
                preflight::quorum_problems(
                    probes
                        .iter()
                        .filter(|p| p.reachable)
                        .map(|p| (p.name.as_str(), p.zone.as_str())),
                )
            }
        }
    }

    /// Runs `operation` on the least busy healthy member; while a member is unavailable or
    /// cannot serve (it lacks the key, e.g. a returning member not yet caught up, or is out of
    /// sessions), tries the next healthy member, until every one has been tried.
    fn route<T>(
        &self,
        operation: impl Fn(&Arc<Member>) -> Result<T, HsmError>,
    ) -> Result<Served<T>, ClusterError> {
        let mut failures: Vec<HsmError> = Vec::new();
        while let Some(member) = self.least_busy(&failures) {
            match operation(member) {
                Ok(value) => {
                    return Ok(Served {
                        value,
                        member: member.clone(),
                    });
                }
                Err(error) => match error.disposition() {
                    Disposition::Unavailable | Disposition::RetryElsewhere => failures.push(error),
                    Disposition::Caller | Disposition::Permanent => {
                        return Err(ClusterError::Hsm(error));
                    }
                },
            }
        }
        Err(ClusterError::Unavailable {
            cluster: self.name.clone(),
            failures,
        })
    }

    /// The healthy member with the fewest calls in flight, not yet tried; ties go round-robin.
    /// (A SoftHSM2 token serialises its calls, so two threads on one member would queue.)
    fn least_busy(&self, tried: &[HsmError]) -> Option<&Arc<Member>> {
        let count = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| &self.members[(start + offset) % count])
            .filter(|m| m.is_up() && !tried.iter().any(|e| e.member == m.name()))
            .min_by_key(|m| m.in_flight())
    }

    /// AES-256-GCM encryption under a CMK material version, inside an HSM; the result carries
    /// the IV the HSM used.
    pub fn encrypt(
        &self,
        material: &MaterialId,
        seal: &GcmSeal<'_>,
        plaintext: &[u8],
    ) -> Result<Served<Sealed>, ClusterError> {
        let id = material.cka_id();
        self.route(|member| member.encrypt(&id, seal, plaintext))
    }

    /// AES-256-GCM decryption under a CMK material version, inside an HSM.
    pub fn decrypt(
        &self,
        material: &MaterialId,
        gcm: &Gcm<'_>,
        ciphertext: &[u8],
    ) -> Result<Served<Zeroizing<Vec<u8>>>, ClusterError> {
        let id = material.cka_id();
        self.route(|member| member.decrypt(&id, gcm, ciphertext))
    }

    /// Runs `operation` with the `CKA_ID` of a material version on a member that holds it
    /// (routed as every call is: least busy first, the next one while a member cannot serve).
    pub fn with_material<T>(
        &self,
        material: &MaterialId,
        operation: impl Fn(&Arc<Member>, &[u8]) -> Result<T, HsmError>,
    ) -> Result<Served<T>, ClusterError> {
        let id = material.cka_id();
        self.route(|member| operation(member, &id))
    }

    /// Runs `operation` on a healthy member, routed as every call is.
    pub fn on_any_member<T>(
        &self,
        operation: impl Fn(&Arc<Member>) -> Result<T, HsmError>,
    ) -> Result<Served<T>, ClusterError> {
        self.route(operation)
    }

    /// Random bytes from an HSM.
    pub fn random(&self, length: usize) -> Result<Served<Zeroizing<Vec<u8>>>, ClusterError> {
        self.route(|member| member.random(length))
    }

    /// The key objects on each member (an error for members that cannot be listed).
    pub fn key_objects(&self) -> Vec<(String, Result<Vec<KeyObject>, HsmError>)> {
        self.members
            .iter()
            .map(|member| (member.name().to_owned(), member.list_keys()))
            .collect()
    }

    /// Probes every member and reports health and key-object counts.
    pub fn status(&self) -> ClusterStatus {
        self.report(true)
    }

    /// Health from what the members last saw, without touching the HSMs (for `/healthz`).
    pub fn health(&self) -> ClusterStatus {
        self.report(false)
    }

    fn report(&self, probe: bool) -> ClusterStatus {
        let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let members: Vec<MemberStatus> = self
            .members
            .iter()
            .map(|member| {
                if !probe && member.is_up() {
                    return MemberStatus {
                        name: member.name().to_owned(),
                        zone: member.zone().to_owned(),
                        healthy: true,
                        error: None,
                        key_objects: None,
                    };
                }
                let listed = if member.is_up() {
                    Some(member.list_keys())
                } else {
                    None
                };
                let (healthy, error, key_objects) = match listed {
                    Some(Ok(keys)) => {
                        let count = keys.len();
                        for key in keys {
                            holders
                                .entry(String::from_utf8_lossy(&key.id).into_owned())
                                .or_default()
                                .push(member.name().to_owned());
                        }
                        (true, None, Some(count))
                    }
                    Some(Err(error)) => (member.is_up(), Some(error.failure.to_string()), None),
                    None => (
                        false,
                        Some(
                            member
                                .last_failure()
                                .map(|e| e.failure.to_string())
                                .unwrap_or_else(|| "down".into()),
                        ),
                        None,
                    ),
                };
                MemberStatus {
                    name: member.name().to_owned(),
                    zone: member.zone().to_owned(),
                    healthy,
                    error,
                    key_objects,
                }
            })
            .collect();
        let key_copies: Vec<KeyCopies> = match self.replication {
            Replication::HsmKms => holders
                .into_iter()
                .map(|(material, members)| KeyCopies {
                    material,
                    copies: members.len(),
                    members,
                })
                .collect(),
            Replication::Vendor => Vec::new(),
        };
        let below_full_redundancy: Vec<String> = key_copies
            .iter()
            .filter(|key| key.copies < self.members.len())
            .map(|key| key.material.clone())
            .collect();
        let hsms = match self.replication {
            Replication::HsmKms => Vec::new(),
            Replication::Vendor => vendor::probe_all(&self.hsms),
        };
        let links = match (probe, self.replication) {
            (true, Replication::HsmKms) => self.links(),
            _ => Vec::new(),
        };
        let problems = self.quorum_problems();
        let degraded = !problems.is_empty()
            || members.iter().any(|m| !m.healthy)
            || !below_full_redundancy.is_empty()
            || hsms.iter().any(|h| !h.reachable);
        ClusterStatus {
            cluster: self.name.clone(),
            replication: match self.replication {
                Replication::HsmKms => "hsm-kms",
                Replication::Vendor => "vendor",
            },
            serving: problems.is_empty(),
            degraded,
            members,
            hsms,
            problems,
            key_copies,
            below_full_redundancy,
            links,
        }
    }

    /// The clusters linked with this one, with the healthy members holding each link key.
    fn links(&self) -> Vec<LinkStatus> {
        let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for member in self.healthy() {
            for (first, second) in member.links().unwrap_or_default() {
                let peer = if first == self.name { second } else { first };
                holders
                    .entry(peer)
                    .or_default()
                    .push(member.name().to_owned());
            }
        }
        holders
            .into_iter()
            .map(|(cluster, members)| LinkStatus {
                complete: members.len() == self.members.len(),
                cluster,
                members,
            })
            .collect()
    }
}
