//! Leadership among the instances that share a [`super::PostgresStore`]: which one runs
//! the background work (due deletions, rotations) that must run once, not once per
//! instance. It owns one dedicated connection per instance that tries to take a
//! session-level advisory lock ([`LEADER_LOCK`]); the instance whose session holds it
//! leads. PostgreSQL releases the lock when that session ends (the process died, the
//! connection was cut or terminated), and another instance takes it at its next attempt.
//!
//! # No two leaders at once
//!
//! A leader only knows it still leads while its session answers, so it counts as leader
//! for [`LEASE`] after the start of its last answered heartbeat, and no longer. A new
//! leader waits one [`LEASE`] after taking the lock before it acts: by then the old
//! leader's lease, which began before the old session ended and so before the lock could
//! be taken, has run out. Both leases are measured on each instance's own monotonic
//! clock; no clocks are compared. Hand-over after a leader dies therefore takes at most
//! the time PostgreSQL needs to notice the dead session, plus [`ATTEMPT_INTERVAL`], plus
//! [`LEASE`] (about 4 s when the session ends cleanly, as on a process kill; a host that
//! vanishes is noticed through TCP keepalives, see `docs/deployment.md`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use postgres::NoTls;

/// The advisory lock key of leadership: "hsmkmsld" as a big-endian integer.
const LEADER_LOCK: i64 = i64::from_be_bytes(*b"hsmkmsld");

/// Time between two attempts to take the lock, and between two heartbeats while held.
const ATTEMPT_INTERVAL: Duration = Duration::from_secs(1);

/// How long leadership lasts after the start of the last answered heartbeat, and how long
/// a new leader waits after taking the lock.
pub(super) const LEASE: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Shared {
    /// Leads from this instant ([`monotonic_millis`]) ...
    leads_from: AtomicU64,
    /// ... until this one; 0: does not lead.
    leads_until: AtomicU64,
    stop: AtomicBool,
}

/// One instance's bid for leadership: started on first question, stopped with the store.
pub(super) struct Leadership {
    config: postgres::Config,
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

impl Leadership {
    pub(super) fn new(config: postgres::Config) -> Leadership {
        Leadership {
            config,
            shared: Arc::default(),
            started: OnceLock::new(),
        }
    }

    /// Whether this instance leads now; the first call starts bidding (and says no).
    pub(super) fn is_leader(&self) -> bool {
        if self.started.get().is_none() {
            let (config, shared) = (self.config.clone(), self.shared.clone());
            let spawned = std::thread::Builder::new()
                .name("metadata-store-leader".into())
                .spawn(move || run(&config, &shared));
            match spawned {
                Ok(_) => {
                    let _ = self.started.set(());
                }
                Err(error) => tracing::error!(%error, "cannot start bidding for leadership"),
            }
            return false;
        }
        let now = monotonic_millis();
        let from = self.shared.leads_from.load(Ordering::SeqCst);
        from <= now && now < self.shared.leads_until.load(Ordering::SeqCst)
    }
}

impl Drop for Leadership {
    /// Asks the thread to stop; its connection, and with it the lock, goes with it.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// Milliseconds on a monotonic clock, from 1.
fn monotonic_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn run(config: &postgres::Config, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        if let Err(error) = session(config, shared) {
            tracing::warn!(
                error = %super::postgres_store::error_text(&error),
                "the leadership connection to the metadata store failed; bidding again"
            );
        }
        std::thread::sleep(ATTEMPT_INTERVAL);
    }
}

/// One connection: try for the lock each interval; once held, heartbeat and extend the
/// lease until the store is dropped or the connection fails.
fn session(config: &postgres::Config, shared: &Shared) -> Result<(), postgres::Error> {
    let mut client = config.connect(NoTls)?;
    let mut held = false;
    while !shared.stop.load(Ordering::SeqCst) {
        let beat = monotonic_millis();
        if held {
            client.batch_execute("SELECT 1")?;
        } else {
            held = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?
                .get(0);
            if held {
                tracing::info!("this instance leads the background work");
                shared
                    .leads_from
                    .store(beat + millis(LEASE), Ordering::SeqCst);
            }
        }
        if held {
            shared
                .leads_until
                .store(beat + millis(LEASE), Ordering::SeqCst);
        }
        std::thread::sleep(ATTEMPT_INTERVAL);
    }
    Ok(())
}
