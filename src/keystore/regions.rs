//! Regions as sites: which HSM cluster holds the keys of each region the service answers
//! for (`[service.region_clusters]`; a region not named there uses the default cluster).
//! The key store opens each such cluster once; a key's material lives in the cluster its
//! record names, so a key never moves when the mapping changes later.
//!
//! A Region's cluster that cannot be opened when the key store opens (another site down, its
//! quorum not met) does not keep the key store from serving the other Regions: it waits, its
//! keys answer `KeyUnavailableException`, and the first call that needs it after
//! [`REOPEN_INTERVAL`] (or the next maintenance run) opens it, preflight included.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{KeyStore, OpenError, read, write};
use crate::cluster::Cluster;
use crate::config::{ClusterConfig, Config};
use crate::error::KmsError;

/// Least time between two attempts to open a Region's cluster that could not be opened.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(2);

/// The clusters of regions not served by the default cluster.
#[derive(Default)]
pub(super) struct RegionClusters {
    /// The cluster name of each region with its own cluster.
    by_region: BTreeMap<String, String>,
    /// Those clusters, open, by name.
    open: RwLock<BTreeMap<String, Arc<Cluster>>>,
    /// Those that could not be opened yet, by name.
    waiting: Mutex<BTreeMap<String, Waiting>>,
    /// Every Region the service answers for (`[service] regions`; empty until the config is
    /// applied, when only the key store's own Region is served).
    served: Vec<String>,
}

/// A Region's cluster not open yet.
struct Waiting {
    config: ClusterConfig,
    /// Not before this instant again.
    retry_at: Instant,
    /// Why the last attempt failed.
    error: String,
}

impl RegionClusters {
    /// Every cluster name that serves a region (the default one excluded).
    pub(super) fn names(config: &Config) -> Vec<&str> {
        let mut names: Vec<&str> = config
            .service
            .region_clusters
            .values()
            .map(String::as_str)
            .filter(|name| *name != config.default_cluster)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl KeyStore {
    /// Opens (running each one's preflight) the clusters `[service.region_clusters]` names
    /// besides the default one, so that keys of those regions live there. One that cannot be
    /// opened now waits (logged as an error) and is opened when it can be.
    pub fn with_region_clusters(mut self, config: &Config) -> Result<KeyStore, OpenError> {
        let default = self.cluster.name().to_owned();
        for name in RegionClusters::names(config) {
            if name == default || read(&self.regions.open).contains_key(name) {
                continue;
            }
            let cluster_config = config
                .cluster(name)
                .map_err(|e| OpenError::Config(e.to_string()))?;
            match Cluster::open(name, cluster_config) {
                Ok(cluster) => {
                    let cluster = Arc::new(cluster);
                    self.watch_region_members(&cluster);
                    write(&self.regions.open).insert(name.to_owned(), cluster);
                }
                Err(error) => {
                    tracing::error!(
                        cluster = name,
                        %error,
                        "a Region's cluster cannot be opened: its keys are unavailable until it can"
                    );
                    self.regions.waiting_lock().insert(
                        name.to_owned(),
                        Waiting {
                            config: cluster_config.clone(),
                            retry_at: Instant::now() + REOPEN_INTERVAL,
                            error: error.to_string(),
                        },
                    );
                }
            }
        }
        self.regions.by_region = config
            .service
            .region_clusters
            .iter()
            .filter(|(_, name)| **name != default)
            .map(|(region, name)| (region.clone(), name.clone()))
            .collect();
        self.regions.served = config.service.regions.clone();
        Ok(self)
    }

    /// Whether the service answers for `region` (it is in `[service] regions`).
    pub(super) fn serves_region(&self, region: &str) -> bool {
        if self.regions.served.is_empty() {
            return region == self.scope.region();
        }
        self.regions.served.iter().any(|served| served == region)
    }

    /// The name of the cluster that holds the keys of `region`.
    pub(super) fn region_cluster_name(&self, region: &str) -> String {
        self.regions
            .by_region
            .get(region)
            .cloned()
            .unwrap_or_else(|| self.cluster.name().to_owned())
    }

    /// The cluster named `name` among the default and the region clusters; a Region's
    /// cluster that could not be opened is tried again (at most every [`REOPEN_INTERVAL`]),
    /// `KeyUnavailableException` while it still cannot be. A name no Region uses is the
    /// default cluster.
    pub(super) fn cluster_named(&self, name: &str) -> Result<Arc<Cluster>, KmsError> {
        if name == self.cluster.name() {
            return Ok(self.cluster.clone());
        }
        if let Some(open) = read(&self.regions.open).get(name) {
            return Ok(open.clone());
        }
        match self.reopen(name, false) {
            Some(Err(error)) => Err(KmsError::KeyUnavailable(format!(
                "The HSM cluster {name} that holds this key cannot be reached: {error}"
            ))),
            Some(Ok(cluster)) => Ok(cluster),
            None => Ok(self.cluster.clone()),
        }
    }

    /// Tries to open the waiting cluster `name` (`None` if it is not waiting), unless the
    /// last attempt was less than [`REOPEN_INTERVAL`] ago and `now` is not set.
    fn reopen(&self, name: &str, now: bool) -> Option<Result<Arc<Cluster>, String>> {
        let config = {
            let mut waiting = self.regions.waiting_lock();
            let entry = waiting.get_mut(name)?;
            if !now && Instant::now() < entry.retry_at {
                return Some(Err(entry.error.clone()));
            }
            entry.retry_at = Instant::now() + REOPEN_INTERVAL;
            entry.config.clone()
        };
        match Cluster::open(name, &config) {
            Ok(cluster) => {
                let cluster = Arc::new(cluster);
                self.watch_region_members(&cluster);
                write(&self.regions.open).insert(name.to_owned(), cluster.clone());
                self.regions.waiting_lock().remove(name);
                tracing::info!(
                    cluster = name,
                    "a Region's cluster that was unavailable is open"
                );
                Some(Ok(cluster))
            }
            Err(error) => {
                let error = error.to_string();
                if let Some(entry) = self.regions.waiting_lock().get_mut(name) {
                    entry.error.clone_from(&error);
                }
                Some(Err(error))
            }
        }
    }

    /// Tries now to open every Region's cluster that could not be opened (for the
    /// maintenance run); returns the names of those that still cannot be, with why.
    pub(super) fn reopen_waiting_clusters(&self) -> Vec<(String, String)> {
        let names: Vec<String> = self.regions.waiting_lock().keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|name| match self.reopen(&name, true) {
                Some(Err(error)) => Some((name, error)),
                _ => None,
            })
            .collect()
    }

    /// Records the ups and downs of a Region's cluster's members and catches a returning
    /// one up at once, as for the key store's own cluster.
    fn watch_region_members(&self, cluster: &Arc<Cluster>) {
        super::catch_up::watch_members(cluster, true, &self.audit, &self.store, &self.scope);
    }

    /// The open clusters serving regions other than the default cluster.
    pub fn region_clusters(&self) -> Vec<Arc<Cluster>> {
        read(&self.regions.open).values().cloned().collect()
    }
}

/// How reports and the audit trail name a member of a Region's cluster: `<cluster>/<member>`,
/// since every site may call its members hsm-a and hsm-b.
pub(super) fn region_member_name(cluster: &str, member: &str) -> String {
    format!("{cluster}/{member}")
}

impl RegionClusters {
    fn waiting_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}
