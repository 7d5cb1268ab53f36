//! The watch of a [`super::PostgresStore`]: how an instance learns of records other
//! instances committed, so that its caches never outlive them. It owns one dedicated
//! connection that `LISTEN`s on [`CHANNEL`] (every commit that writes a watched table
//! sends one `NOTIFY` per record, delivered when it commits) and the freshness test that
//! tells a cache whether it may be served. It never reads records and never holds a
//! payload: a notification names a table and a key only.
//!
//! # Why a cache can trust it
//!
//! PostgreSQL hands a listening session every notification committed before a query's
//! answer ahead of that answer. So the watch thread runs a heartbeat query every
//! [`HEARTBEAT`]; once it is answered and the notifications before it are passed on,
//! every change committed before the heartbeat *began* is known. Caches are current
//! until [`FRESHNESS`] after that beginning: a change committed earlier than that window
//! has already been told. When the connection is lost, slow or stuck, freshness simply
//! runs out and caches are bypassed (reads go to the database); a new connection first
//! tells [`Change::Everything`], since notifications sent meanwhile are lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use postgres::NoTls;
use postgres::fallible_iterator::FallibleIterator;

use super::{Change, ChangeListener, Table};

/// The notification channel of record changes; payload `TABLE:HEX-KEY`.
pub(super) const CHANNEL: &str = "hsm_kms_changes";

/// Time between two heartbeats of the watch connection.
const HEARTBEAT: Duration = Duration::from_millis(200);

/// How long after a heartbeat began caches stay current without another one. A change is
/// never served from a cache for longer than this after it committed.
pub(super) const FRESHNESS: Duration = Duration::from_millis(600);

/// Pause before connecting again after the watch connection failed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// The payload that tells a watcher of a write to `table`/`key`.
pub(super) fn payload(table: Table, key: &[u8]) -> String {
    format!("{}:{}", table.name(), hex::encode(key))
}

/// What the watch thread shares with the store.
#[derive(Default)]
struct Shared {
    listeners: Mutex<Vec<ChangeListener>>,
    /// Caches are current until this instant ([`monotonic_millis`]); 0: they are not.
    current_until: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn tell(&self, change: Change<'_>) {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for listener in listeners {
            listener(change);
        }
    }

    /// Passes on one notification; one this build cannot read forgets everything.
    fn tell_payload(&self, payload: &str) {
        let parsed = payload
            .split_once(':')
            .and_then(|(table, key)| Some((Table::from_name(table)?, hex::decode(key).ok()?)));
        match parsed {
            Some((table, key)) => self.tell(Change::Record { table, key: &key }),
            None => self.tell(Change::Everything),
        }
    }
}

/// The watch of one store: started by the first listener, stopped with the store.
pub(super) struct Watch {
    config: postgres::Config,
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

impl Watch {
    /// A watch that will connect with `config` once it has a listener.
    pub(super) fn new(config: postgres::Config) -> Watch {
        Watch {
            config,
            shared: Arc::default(),
            started: OnceLock::new(),
        }
    }

    /// Adds a listener, starting the watch thread the first time.
    pub(super) fn add(&self, listener: ChangeListener) -> std::io::Result<()> {
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
        if self.started.get().is_some() {
            return Ok(());
        }
        let (config, shared) = (self.config.clone(), self.shared.clone());
        std::thread::Builder::new()
            .name("metadata-store-watch".into())
            .spawn(move || run(&config, &shared))?;
        let _ = self.started.set(());
        Ok(())
    }

    /// Whether every change committed more than [`FRESHNESS`] ago has been told.
    pub(super) fn caches_are_current(&self) -> bool {
        monotonic_millis() < self.shared.current_until.load(Ordering::SeqCst)
    }
}

impl Drop for Watch {
    /// Asks the thread to stop; it notices within one heartbeat.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// Milliseconds on a monotonic clock, from 1 (0 means "never").
fn monotonic_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

/// The watch thread: one session after another until the store is dropped.
fn run(config: &postgres::Config, shared: &Shared) {
    let mut failing = false;
    while !shared.stop.load(Ordering::SeqCst) {
        match session(config, shared, &mut failing) {
            Ok(()) => return,
            Err(error) => {
                if !failing {
                    tracing::warn!(
                        error = %super::postgres_store::error_text(&error),
                        "the metadata store watch lost its connection: caches are bypassed \
                         until it is back"
                    );
                    failing = true;
                }
                std::thread::sleep(RECONNECT_PAUSE);
            }
        }
    }
}

/// One connection's life: listen, forget everything, then heartbeats and notifications
/// until the store is dropped (`Ok`) or the connection fails.
fn session(
    config: &postgres::Config,
    shared: &Shared,
    failing: &mut bool,
) -> Result<(), postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    shared.tell(Change::Everything);
    if *failing {
        tracing::info!("the metadata store watch is connected again");
        *failing = false;
    }
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let beat = monotonic_millis();
        client.batch_execute("SELECT 1")?;
        let pending: Vec<_> = client.notifications().iter().collect()?;
        for notification in &pending {
            shared.tell_payload(notification.payload());
        }
        let fresh_until = beat + u64::try_from(FRESHNESS.as_millis()).unwrap_or(0);
        shared.current_until.store(fresh_until, Ordering::SeqCst);

        let next_beat = Instant::now() + HEARTBEAT;
        loop {
            let left = next_beat.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut notifications = client.notifications();
            match notifications.timeout_iter(left).next()? {
                Some(notification) => shared.tell_payload(notification.payload()),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_table_and_key_and_unreadable_ones_forget_everything() {
        let shared = Shared::default();
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        shared
            .listeners
            .lock()
            .unwrap()
            .push(Arc::new(move |change| {
                let text = match change {
                    Change::Record { table, key } => format!("{table} {}", hex::encode(key)),
                    Change::Everything => "everything".to_owned(),
                };
                sink.lock().unwrap().push(text);
            }));
        shared.tell_payload(&payload(Table::Keys, b"\x00key-1"));
        shared.tell_payload(&payload(Table::CustomKeyStores, b"cks"));
        for unreadable in ["keys", "nonsense:00", "keys:zz"] {
            shared.tell_payload(unreadable);
        }
        assert_eq!(
            *told.lock().unwrap(),
            [
                "keys 006b65792d31",
                "custom-key-stores 636b73",
                "everything",
                "everything",
                "everything"
            ]
        );
    }
}
