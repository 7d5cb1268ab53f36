//! The `/healthz` answer: the cluster's health, probed at most once per [`PROBE_INTERVAL`]
//! however many callers ask. Concurrent callers wait for the one probe in progress and share
//! its result, so an unauthenticated caller cannot make the server probe its HSMs at will.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Shortest time between two probes of the cluster.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// One probe's result, as `/healthz` sends it.
#[derive(Debug)]
pub struct HealthAnswer {
    /// The quorum holds: the server answers 200, else 503.
    pub serving: bool,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// The latest probe result and when it was taken.
pub struct HealthProbe {
    latest: Mutex<Option<(Instant, Arc<HealthAnswer>)>>,
    probes: Counter,
}

impl HealthProbe {
    /// A probe that counts its runs in `probes`.
    pub fn new(probes: Counter) -> HealthProbe {
        HealthProbe {
            latest: Mutex::new(None),
            probes,
        }
    }

    /// The cluster's health: the latest result when it is younger than [`PROBE_INTERVAL`],
    /// else a new probe (one at a time; callers arriving meanwhile wait for it).
    pub async fn answer(
        &self,
        probe: impl FnOnce() -> HealthAnswer + Send + 'static,
    ) -> Option<Arc<HealthAnswer>> {
        let mut latest = self.latest.lock().await;
        if let Some((taken, answer)) = latest.as_ref()
            && taken.elapsed() < PROBE_INTERVAL
        {
            return Some(answer.clone());
        }
        self.probes.inc();
        let answer = Arc::new(tokio::task::spawn_blocking(probe).await.ok()?);
        *latest = Some((Instant::now(), answer.clone()));
        Some(answer)
    }
}
