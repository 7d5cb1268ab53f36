//! Prometheus metrics of the endpoint: requests by operation and outcome, latency histograms by
//! operation, HSM member health, keys pending deletion, `/healthz` probes, connections refused at
//! the limit, whether the audit trail is failing and the material pool's ready objects per cluster.
//! Every label value comes from a fixed set (served operations, `unknown`, error codes, configured
//! members), and a scrape reads maintained counters only: its cost does not grow with the number of
//! keys or with what callers send.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::keys::state::KeyState;
use crate::keystore::KeyStore;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    member: String,
    zone: String,
}

/// The endpoint's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
    member_up: Family<MemberLabels, Gauge>,
    pending_deletions: Gauge,
    health_probes: Counter,
    connections_refused: Counter,
    audit_failing: Gauge,
    material_pool_ready: Family<ClusterLabels, Gauge>,
    leader: Gauge,
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hsm_kms");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ])
        });
        let member_up = Family::<MemberLabels, Gauge>::default();
        let pending_deletions = Gauge::default();
        let health_probes = Counter::default();
        let connections_refused = Counter::default();
        let audit_failing = Gauge::default();
        let material_pool_ready = Family::<ClusterLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "requests",
            "API requests by operation and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "API request latency by operation",
            latency.clone(),
        );
        registry.register(
            "hsm_member_up",
            "1 when the HSM member is healthy",
            member_up.clone(),
        );
        registry.register(
            "pending_deletions",
            "Keys pending deletion",
            pending_deletions.clone(),
        );
        registry.register(
            "health_probes",
            "Cluster health probes run for /healthz",
            health_probes.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because max_connections were open",
            connections_refused.clone(),
        );
        registry.register(
            "audit_failing",
            "1 while the audit trail cannot be written",
            audit_failing.clone(),
        );
        registry.register(
            "material_pool_ready",
            "Key material objects ready in the cluster's material pool",
            material_pool_ready.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance runs the background work (always on a store of its own)",
            leader.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            member_up,
            pending_deletions,
            health_probes,
            connections_refused,
            audit_failing,
            material_pool_ready,
            leader,
        }
    }

    /// The counter of connections refused, for the connection limit to count them.
    pub fn connections_refused(&self) -> Counter {
        self.connections_refused.clone()
    }

    /// The counter of `/healthz` probes, for the probe to count its runs.
    pub fn health_probes(&self) -> Counter {
        self.health_probes.clone()
    }

    /// Counts one request and its latency; `operation` is a served operation or `unknown`,
    /// `outcome` "ok" or the error code.
    pub fn observe(&self, operation: &'static str, outcome: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition, with member health and key counts read from the key store now.
    pub fn render(&self, store: &KeyStore) -> String {
        for member in store.cluster().members() {
            self.member_up
                .get_or_create(&MemberLabels {
                    member: member.name().to_owned(),
                    zone: member.zone().to_owned(),
                })
                .set(i64::from(member.is_up()));
        }
        let pending = store.keys_in_state(KeyState::PendingDeletion);
        self.pending_deletions
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.audit_failing
            .set(i64::from(!store.audit_health().writable));
        let pool = store.material_pool_status();
        self.material_pool_ready
            .get_or_create(&ClusterLabels {
                cluster: pool.cluster,
            })
            .set(i64::try_from(pool.ready).unwrap_or(i64::MAX));
        self.leader.set(i64::from(store.is_leader()));
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
