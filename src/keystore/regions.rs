//! Regions as sites: which HSM cluster holds the keys of each region the service answers
//! for (`[service.region_clusters]`; a region not named there uses the default cluster).
//! The key store opens each such cluster once; a key's material lives in the cluster its
//! record names, so a key never moves when the mapping changes later.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{KeyStore, OpenError};
use crate::cluster::Cluster;
use crate::config::Config;

/// The clusters of regions not served by the default cluster.
#[derive(Default)]
pub(super) struct RegionClusters {
    /// The cluster name of each region with its own cluster.
    by_region: BTreeMap<String, String>,
    /// Those clusters, open, by name.
    open: BTreeMap<String, Arc<Cluster>>,
    /// Every Region the service answers for (`[service] regions`; empty until the config is
    /// applied, when only the key store's own Region is served).
    served: Vec<String>,
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
    /// besides the default one, so that keys of those regions live there.
    pub fn with_region_clusters(mut self, config: &Config) -> Result<KeyStore, OpenError> {
        let default = self.cluster.name().to_owned();
        for name in RegionClusters::names(config) {
            if name == default || self.regions.open.contains_key(name) {
                continue;
            }
            let cluster_config = config
                .cluster(name)
                .map_err(|e| OpenError::Config(e.to_string()))?;
            let cluster = Cluster::open(name, cluster_config)?;
            self.regions.open.insert(name.to_owned(), Arc::new(cluster));
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

    /// The cluster that holds the keys of `region`.
    pub(super) fn region_cluster(&self, region: &str) -> Arc<Cluster> {
        self.regions
            .by_region
            .get(region)
            .and_then(|name| self.regions.open.get(name))
            .unwrap_or(&self.cluster)
            .clone()
    }

    /// The open cluster named `name` among the default and the region clusters.
    pub(super) fn cluster_named(&self, name: &str) -> Option<Arc<Cluster>> {
        if name == self.cluster.name() {
            return Some(self.cluster.clone());
        }
        self.regions.open.get(name).cloned()
    }

    /// The clusters serving regions other than the default cluster, by name.
    pub fn region_clusters(&self) -> Vec<Arc<Cluster>> {
        self.regions.open.values().cloned().collect()
    }
}
