//! `hsm-kms compliance check`: proves the key controls from primary evidence — attributes read
//! back from the HSMs through PKCS#11, the records of the metadata store, the audit chain and
//! its HSM-sealed checkpoints, and the files the configuration names — never from what the
//! code intends. It owns the catalogue of controls ([`catalogue`]), the checks (one module per
//! area), the report model ([`report`]) and its renderings ([`junit`], [`html`]), and the
//! evidence bundle ([`bundle`]).
//!
//! It only reads: it never repairs, rotates, deletes or changes a key, an HSM object, a
//! record or a file it checks (the one thing it writes into the HSMs is the seal of an
//! evidence bundle's manifest, under its own internal key). No PIN, key byte or plaintext
//! enters a report: attributes are booleans, key check values are 3-byte fingerprints.
//!
//! It runs in-process, over a cluster and metadata store it is handed (the CLI opens them
//! when no server holds the store; a running server will answer through its admin socket once
//! that exists).
//!
//! [`check`] runs every selected control. Evidence that cannot be read is never taken for
//! good: an undecodable record or an unverifiable trail is a FAIL (a control that cannot be
//! proven does not hold); a member that does not answer is a WARN on the copies it holds, and
//! those copies do not count toward redundancy.

pub mod access;
pub mod bundle;
pub mod catalogue;
pub mod html;
pub mod junit;
pub mod keys;
pub mod material;
pub mod platform;
pub mod report;
pub mod settings;
pub mod trail;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::config::{Config, Replication};
use crate::keys::records::KeyRecord;
use crate::store::{MetadataStore, StoreError, Table};

pub use catalogue::Control;
pub use report::{ControlResult, Finding, Report, Status, SubjectKind};

/// Everything a check reads, handed in by the caller.
pub struct Sources<'a> {
    /// The configuration (thresholds, credentials, listener, secret references, alarms).
    pub config: &'a Config,
    /// The open HSM cluster that holds the keys (the default cluster).
    pub cluster: &'a Arc<Cluster>,
    /// The metadata store (key records, audit trail, checkpoints, alarm cursors).
    pub store: &'a dyn MetadataStore,
    /// Now, in milliseconds since the epoch (the key store's clock).
    pub now_millis: i64,
}

/// Why a check could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    /// A control id that is not in the catalogue: the id, then the known ids.
    #[error("unknown control {0:?} (known: {1})")]
    UnknownControl(String, String),
    /// The metadata store could not be read.
    #[error("cannot read the metadata store: {0}")]
    Store(#[from] StoreError),
    /// Evidence could not be read or the report not written.
    #[error("{0}")]
    Output(String),
}

/// The controls named by `ids` (every control when empty), in catalogue order.
pub fn select(ids: &[String]) -> Result<Vec<&'static Control>, ComplianceError> {
    for id in ids {
        if catalogue::find(id).is_none() {
            let known: Vec<&str> = catalogue::ALL.iter().map(|c| c.id).collect();
            return Err(ComplianceError::UnknownControl(
                id.clone(),
                known.join(", "),
            ));
        }
    }
    Ok(catalogue::ALL
        .iter()
        .filter(|c| ids.is_empty() || ids.iter().any(|id| c.id.eq_ignore_ascii_case(id)))
        .collect())
}

/// Runs the `selected` controls and assembles the report.
pub fn check(sources: &Sources<'_>, selected: &[&Control]) -> Result<Report, ComplianceError> {
    let records = key_records(sources.store)?;
    let wants = |control: &Control| selected.iter().any(|c| c.id == control.id);
    let inventory = if wants(&catalogue::HSM_ONLY) || wants(&catalogue::REDUNDANCY) {
        Some(material::Inventory::read(sources, &records))
    } else {
        None
    };
    let trail = trail::TrailView::read(sources)?;
    let mut controls = Vec::new();
    for control in selected {
        let result = match control.id {
            id if id == catalogue::HSM_ONLY.id => inventory
                .as_ref()
                .map(|inventory| material::hsm_only(sources, inventory)),
            id if id == catalogue::REDUNDANCY.id => inventory
                .as_ref()
                .map(|inventory| material::redundancy(sources, inventory, &trail)),
            id if id == catalogue::ROTATION.id => Some(keys::rotation(sources, &records)),
            id if id == catalogue::DELETION.id => Some(keys::deletion(sources, &records, &trail)),
            id if id == catalogue::KEY_POLICIES.id => Some(access::key_policies(&records)),
            id if id == catalogue::IDENTITY_POLICIES.id => {
                Some(access::identity_policies(sources.config))
            }
            id if id == catalogue::GRANTS.id => Some(access::grants(sources)),
            id if id == catalogue::AUDIT_CHAIN.id => Some(trail.chain()),
            id if id == catalogue::CHECKPOINTS.id => Some(trail.checkpoints(sources)),
            id if id == catalogue::ALARMS.id => Some(trail.alarms(sources)),
            id if id == catalogue::TLS.id => Some(platform::tls(sources.config)),
            id if id == catalogue::SECRET_FILES.id => {
                Some(platform::secret_files_control(sources.config))
            }
            id if id == catalogue::IMPORTED_MATERIAL.id => Some(platform::imported_material(
                &records
                    .values()
                    .filter_map(|r| r.as_ref().ok())
                    .cloned()
                    .collect::<Vec<_>>(),
                sources.now_millis,
                sources.config.compliance.imported_expiry_warn_days,
            )),
            _ => None,
        };
        if let Some(result) = result {
            controls.push(result);
        }
    }
    let charts = report::Charts {
        keys_by_state: keys::by_state(&records),
        rotation_age_days: keys::rotation_ages(&records, sources.now_millis),
        audit_events_per_day: trail.events_per_day(),
        copies_per_key: inventory
            .as_ref()
            .map(material::Inventory::copies)
            .unwrap_or_default(),
    };
    let origin = report::Origin {
        tool: "hsm-kms",
        version: env!("CARGO_PKG_VERSION"),
        cluster: sources.cluster.name().to_owned(),
        replication: match sources.cluster.replication() {
            Replication::HsmKms => "hsm-kms",
            Replication::Vendor => "vendor",
        },
        account_id: sources.config.service.account_id.clone(),
        region: sources.config.service.region.clone(),
        mode: "in-process",
    };
    Ok(Report::new(
        sources.now_millis,
        origin,
        controls,
        charts,
        trail.scope(),
    ))
}

/// Every key record of the store (all accounts and regions), by key id. A record that does
/// not decode is kept as an error, so the controls report it instead of skipping it.
pub(crate) fn key_records(
    store: &dyn MetadataStore,
) -> Result<BTreeMap<String, Result<KeyRecord, String>>, StoreError> {
    let mut records = BTreeMap::new();
    for page in crate::store::pages(store, Table::Keys, b"") {
        for (key, record) in page? {
            let id = String::from_utf8_lossy(&key).into_owned();
            let decoded = serde_json::from_slice::<KeyRecord>(&record.payload)
                .map_err(|error| format!("the key record does not decode: {error}"));
            records.insert(id, decoded);
        }
    }
    Ok(records)
}

/// Milliseconds as whole days (rounded down).
pub(crate) fn days(millis: i64) -> f64 {
    (millis as f64 / 86_400_000.0 * 10.0).floor() / 10.0
}
