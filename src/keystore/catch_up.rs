//! Bringing members that were away up to date. The cluster copies key material but cannot
//! know which versions should exist; the key records do. When a member of the key store's
//! cluster or of a Region's cluster comes back (its health listener says so) and on every
//! maintenance run, the material versions named by the
//! records of the cluster's keys are handed to [`Cluster::catch_up`], and every copy made is
//! recorded in the audit trail as an `HsmMaterialCopied` service event. Keys whose
//! destruction has begun are left out, so a deleted key is never brought back.

use std::sync::{Arc, Weak};

use serde::Serialize;

use super::regions::region_member_name;
use super::{KeyStore, decode, internal};
use crate::audit::log::AuditLog;
use crate::clock::{Clock, SystemClock};
use crate::cluster::{CatchUp, Cluster, MaterialId};
use crate::error::KmsError;
use crate::hsm::HealthListener;
use crate::ids::Scope;
use crate::keys::records::KeyRecord;
use crate::store::{MetadataStore, Table, pages};

/// What catching up one member did, for the maintenance report.
#[derive(Debug, Clone, Serialize)]
pub struct CaughtUp {
    /// The member that lacked material.
    pub member: String,
    /// Material versions copied onto the member.
    pub copied: Vec<String>,
    /// Material versions still missing on it, with the reason (or why it could not be
    /// listed).
    pub uncopied: Vec<String>,
}

impl KeyStore {
    /// Copies onto every healthy member of the key store's cluster, and of the clusters of regions
    /// with their own and of connected custom key stores, the material versions it lacks, and
    /// reports the members that lacked any. Members that are down are skipped (their return
    /// triggers a catch-up).
    pub fn catch_up_members(&self) -> Result<Vec<CaughtUp>, KmsError> {
        // A Region's cluster's members are named `<cluster>/<member>`, as in reconciliation.
        let mut clusters = vec![(self.cluster.clone(), false)];
        clusters.extend(self.region_clusters().into_iter().map(|c| (c, true)));
        clusters.extend(self.custom.open_clusters().into_iter().map(|c| (c, false)));
        let mut done = Vec::new();
        for (cluster, qualified) in clusters {
            let versions = recorded_materials(self.store.as_ref(), cluster.name())?;
            for outcome in cluster.catch_up_all(&versions) {
                match outcome {
                    Ok(report) if report.copied.is_empty() && report.uncopied.is_empty() => {}
                    Ok(mut report) => {
                        if qualified {
                            report.member = region_member_name(cluster.name(), &report.member);
                        }
                        record(
                            &self.audit,
                            &self.scope,
                            self.now(),
                            cluster.name(),
                            &report,
                        );
                        done.push(caught_up(report));
                    }
                    Err(error) => done.push(CaughtUp {
                        member: error.member.clone(),
                        copied: Vec::new(),
                        uncopied: vec![error.to_string()],
                    }),
                }
            }
        }
        Ok(done)
    }
}

/// Records in the audit trail every member of `cluster` going down (`HsmMemberDown`) and
/// coming back (`HsmMemberUp`), and catches a returning member up at once. A member of a
/// Region's cluster (`qualified`) is named `<cluster>/<member>` in those events, since each
/// site may call its members hsm-a and hsm-b.
pub(super) fn watch_members(
    cluster: &Arc<Cluster>,
    qualified: bool,
    audit: &Arc<AuditLog>,
    store: &Arc<dyn MetadataStore>,
    scope: &Scope,
) {
    let (audit, weak_cluster, store) = (
        Arc::downgrade(audit),
        Arc::downgrade(cluster),
        Arc::downgrade(store),
    );
    let (scope, cluster_name) = (scope.clone(), cluster.name().to_owned());
    let health: HealthListener = Arc::new(move |member, cause| {
        let Some(audit) = audit.upgrade() else {
            return;
        };
        let named = match qualified {
            true => region_member_name(&cluster_name, member),
            false => member.to_owned(),
        };
        let (name, details) = match cause {
            Some(cause) => (
                "HsmMemberDown",
                serde_json::json!({ "member": named, "reason": cause.failure.to_string() }),
            ),
            None => ("HsmMemberUp", serde_json::json!({ "member": named })),
        };
        let event = crate::audit::event::service_event(
            scope.region(),
            scope.account_id(),
            SystemClock.now_millis(),
            name,
            &[],
            details,
        );
        if let Err(error) = audit.append(&event, false) {
            tracing::error!(%error, "audit event lost");
        }
        if cause.is_none() {
            on_member_up(&weak_cluster, &store, &audit, &scope, member, &named);
        }
    });
    for member in cluster.members() {
        member.set_health_listener(health.clone());
    }
}

/// Catches up `member` (`named` so in the trail) after it came back: called from the member's
/// health listener, on the member's reconnect thread. Does nothing once the key store is gone, nor
/// on an instance that does not lead the others sharing its metadata store (the leader's
/// maintenance runs catch every member up).
fn on_member_up(
    cluster: &Weak<Cluster>,
    store: &Weak<dyn MetadataStore>,
    audit: &AuditLog,
    scope: &Scope,
    member: &str,
    named: &str,
) {
    let (Some(cluster), Some(store)) = (cluster.upgrade(), store.upgrade()) else {
        return;
    };
    if !store.is_leader() {
        return;
    }
    let outcome = recorded_materials(store.as_ref(), cluster.name())
        .map_err(|error| error.to_string())
        .and_then(|versions| {
            cluster
                .catch_up(member, &versions)
                .map_err(|error| error.to_string())
        });
    match outcome {
        Ok(mut report) => {
            named.clone_into(&mut report.member);
            record(
                audit,
                scope,
                SystemClock.now_millis(),
                cluster.name(),
                &report,
            );
            if !report.uncopied.is_empty() {
                tracing::warn!(
                    member = named,
                    missing = report.uncopied.len(),
                    "member not fully caught up"
                );
            }
        }
        Err(error) => {
            tracing::warn!(member = named, %error, "catching up a returning member failed");
        }
    }
}

/// The ready material pool objects of `cluster` and every material version the records of
/// `cluster`'s keys name, except those of keys whose
/// destruction has begun (marked, or pending on some member). A copy racing a destruction
/// from an older snapshot is undone by the destruction's retry, which destroys the version on
/// every member again before the record goes.
fn recorded_materials(
    store: &dyn MetadataStore,
    cluster: &str,
) -> Result<Vec<MaterialId>, KmsError> {
    // Ready pool objects too, so a claim rarely has to copy one.
    let mut versions = super::material_pool::pooled_materials(store, cluster)?;
    for page in pages(store, Table::Keys, b"") {
        for (_, found) in &page.map_err(internal)? {
            let key: KeyRecord = decode(&found.payload)?;
            if key.cluster == cluster
                && !key.destruction_started
                && key.destruction_pending.is_empty()
            {
                versions.extend(
                    key.materials
                        .iter()
                        .map(|material| key.material(material.version)),
                );
            }
        }
    }
    Ok(versions)
}

/// Writes an `HsmMaterialCopied` service event when anything was copied.
fn record(audit: &AuditLog, scope: &Scope, now_millis: i64, cluster: &str, report: &CatchUp) {
    if report.copied.is_empty() {
        return;
    }
    tracing::info!(
        member = %report.member,
        copied = report.copied.len(),
        "key material copied onto a returning member"
    );
    let event = crate::audit::event::service_event(
        scope.region(),
        scope.account_id(),
        now_millis,
        "HsmMaterialCopied",
        &[],
        serde_json::json!({
            "cluster": cluster,
            "member": report.member,
            "materials": report.copied,
        }),
    );
    if let Err(error) = audit.append(&event, true) {
        tracing::error!(%error, "audit event lost");
    }
}

fn caught_up(report: CatchUp) -> CaughtUp {
    CaughtUp {
        member: report.member,
        copied: report.copied,
        uncopied: report
            .uncopied
            .into_iter()
            .map(|(material, why)| format!("{material}: {why}"))
            .collect(),
    }
}
