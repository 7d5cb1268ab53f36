//! The append-only, hash-chained audit log in the metadata store.
//!
//! Every event is stored under its sequence number (1, 2, ...) as
//! `seq (u64 BE) || previous hash (32) || hash (32) || event JSON`, where
//! `hash = SHA-256(previous hash || seq BE || event JSON)` and the first event's previous hash is
//! all zeros. One writer thread appends, so the chain has one order. Events of calls that
//! change state are durable before the call returns; the others are group-committed: flushed
//! at most [`AuditSettings::group_commit`] after they were queued, or as soon as
//! [`AuditSettings::group_commit_events`] are waiting — a crash loses at most that window.
//! Every [`AuditSettings::checkpoint_every`] events (and at shutdown) the head is sealed by a
//! key inside the HSMs (see [`super::checkpoint`]).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::checkpoint::{Checkpoint, Sealer};
use crate::clock::{Clock, SystemClock};
use crate::store::{Batch, MetadataStore, StoreError, Table};

/// Length of the fixed prefix of a stored event.
const PREFIX_LEN: usize = 8 + 32 + 32;
/// Meta-table key of the chain head.
const HEAD_KEY: &[u8] = b"audit-head";

/// How the audit log commits and seals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Record events at all (turning it off is for benchmarks; the default is on).
    pub enabled: bool,
    /// Longest time a group-committed event waits before it is flushed.
    #[serde(rename = "group_commit_ms", with = "millis")]
    pub group_commit: Duration,
    /// Most events waiting before a group commit is forced.
    pub group_commit_events: usize,
    /// Seal a checkpoint after this many events.
    pub checkpoint_every: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            group_commit: Duration::from_millis(100),
            group_commit_events: 256,
            checkpoint_every: 1000,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// One stored event with its place in the chain.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub previous: [u8; 32],
    pub hash: [u8; 32],
    /// The event's JSON exactly as hashed.
    pub json: Vec<u8>,
}

impl StoredEvent {
    /// The event as JSON.
    pub fn event(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(PREFIX_LEN + self.json.len());
        bytes.extend_from_slice(&self.seq.to_be_bytes());
        bytes.extend_from_slice(&self.previous);
        bytes.extend_from_slice(&self.hash);
        bytes.extend_from_slice(&self.json);
        bytes
    }

    /// Parses a stored event; `None` if it is too short to be one.
    pub fn decode(bytes: &[u8]) -> Option<StoredEvent> {
        if bytes.len() < PREFIX_LEN {
            return None;
        }
        Some(StoredEvent {
            seq: u64::from_be_bytes(bytes[0..8].try_into().ok()?),
            previous: bytes[8..40].try_into().ok()?,
            hash: bytes[40..72].try_into().ok()?,
            json: bytes[PREFIX_LEN..].to_vec(),
        })
    }
}

/// The chain hash of an event.
pub fn chain_hash(previous: &[u8; 32], seq: u64, json: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(seq.to_be_bytes());
    hasher.update(json);
    hasher.finalize().into()
}

/// The head of the chain: the last sequence number and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
}

/// Hex (de)serialisation of 32-byte hashes.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&crate::hsm::hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// Parses 64 hex digits.
pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Reads the chain head recorded in the store (zero when the log is empty).
pub fn read_head(store: &dyn MetadataStore) -> Result<Head, StoreError> {
    Ok(match store.get(Table::Meta, HEAD_KEY)? {
        Some(record) => serde_json::from_slice(&record.payload).unwrap_or(Head {
            seq: 0,
            hash: [0; 32],
        }),
        None => Head {
            seq: 0,
            hash: [0; 32],
        },
    })
}

/// Reads up to `limit` events after sequence number `after`, in order.
pub fn read_events(
    store: &dyn MetadataStore,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let after_key = after.to_be_bytes();
    let page = store.scan(
        Table::Audit,
        b"",
        (after > 0).then_some(&after_key[..]),
        limit,
    )?;
    Ok(page
        .into_iter()
        .filter_map(|(_, record)| StoredEvent::decode(&record.payload))
        .collect())
}

/// The audit log's writer.
pub struct AuditLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    store: Arc<dyn MetadataStore>,
    sealer: Option<Arc<dyn Sealer>>,
    settings: AuditSettings,
    queue: Mutex<Queue>,
    wake: Condvar,
    committed: Condvar,
    /// Told after every commit of events (the alarm dispatcher).
    on_commit: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<(u64, Vec<u8>)>,
    oldest: Option<Instant>,
    durable_waiting: usize,
    next_ticket: u64,
    committed_ticket: u64,
    failure: Option<String>,
    shutdown: bool,
}

impl AuditLog {
    /// Starts the writer over `store`; `sealer` seals checkpoints with a key in the HSMs.
    pub fn start(
        store: Arc<dyn MetadataStore>,
        sealer: Option<Arc<dyn Sealer>>,
        settings: AuditSettings,
    ) -> Result<AuditLog, StoreError> {
        let head = read_head(store.as_ref())?;
        let shared = Arc::new(Shared {
            store,
            sealer,
            settings,
            queue: Mutex::new(Queue {
                next_ticket: 1,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            committed: Condvar::new(),
            on_commit: Mutex::new(None),
        });
        let worker = shared.clone();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || worker.run(head))
            .map_err(StoreError::Io)?;
        Ok(AuditLog {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Whether events are recorded.
    pub fn enabled(&self) -> bool {
        self.shared.settings.enabled
    }

    /// Appends an event; with `durable`, returns only once it is flushed.
    pub fn append(&self, event: &Value, durable: bool) -> Result<(), String> {
        if !self.shared.settings.enabled {
            return Ok(());
        }
        let json = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let mut queue = self.shared.lock();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.pending.push((ticket, json));
        queue.oldest.get_or_insert_with(Instant::now);
        if durable {
            queue.durable_waiting += 1;
        }
        // The writer sleeps without a deadline only while the queue is empty; otherwise it
        // wakes by itself when the group-commit window closes. Wake it only when it must act.
        let pending = queue.pending.len();
        if durable || pending == 1 || pending >= self.shared.settings.group_commit_events {
            self.shared.wake.notify_one();
        }
        if !durable {
            return Ok(());
        }
        while queue.committed_ticket < ticket && queue.failure.is_none() {
            queue = self
                .shared
                .committed
                .wait(queue)
                .unwrap_or_else(|p| p.into_inner());
        }
        queue.durable_waiting -= 1;
        match &queue.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    /// Calls `listener` after every commit of events (replacing any earlier listener).
    pub fn on_commit(&self, listener: Arc<dyn Fn() + Send + Sync>) {
        *self
            .shared
            .on_commit
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    /// Flushes everything queued, seals a checkpoint and stops the writer.
    pub fn shutdown(&self) {
        {
            let mut queue = self.shared.lock();
            queue.shutdown = true;
            self.shared.wake.notify_one();
        }
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            tracing::error!("audit writer panicked");
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer thread: waits for events, commits them in groups, seals checkpoints.
    fn run(&self, mut head: Head) {
        let mut since_checkpoint = 0u64;
        loop {
            let (batch, last_ticket, stopping) = {
                let mut queue = self.lock();
                loop {
                    if queue.shutdown
                        || queue.durable_waiting > 0
                        || queue.pending.len() >= self.settings.group_commit_events
                    {
                        break;
                    }
                    match queue.oldest {
                        Some(oldest) => {
                            let waited = oldest.elapsed();
                            if waited >= self.settings.group_commit {
                                break;
                            }
                            queue = self
                                .wake
                                .wait_timeout(queue, self.settings.group_commit - waited)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                        None => queue = self.wake.wait(queue).unwrap_or_else(|p| p.into_inner()),
                    }
                }
                queue.oldest = None;
                let batch = std::mem::take(&mut queue.pending);
                let last = batch
                    .last()
                    .map_or(queue.committed_ticket, |(ticket, _)| *ticket);
                (batch, last, queue.shutdown)
            };
            if !batch.is_empty() {
                let count = batch.len() as u64;
                let outcome = self.commit(&mut head, batch);
                let mut queue = self.lock();
                match outcome {
                    Ok(()) => queue.committed_ticket = last_ticket,
                    Err(error) => {
                        tracing::error!(%error, "audit events could not be written");
                        queue.failure = Some(format!("audit trail write failed: {error}"));
                    }
                }
                self.committed.notify_all();
                drop(queue);
                since_checkpoint += count;
                let listener = self
                    .on_commit
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if let Some(listener) = listener {
                    listener();
                }
            }
            if since_checkpoint >= self.settings.checkpoint_every
                || (stopping && since_checkpoint > 0)
            {
                match self.seal(head) {
                    Ok(()) => since_checkpoint = 0,
                    Err(error) => tracing::warn!(%error, "audit checkpoint not sealed; will retry"),
                }
            }
            if stopping && self.lock().pending.is_empty() {
                return;
            }
        }
    }

    /// Chains and writes one group of events and the new head in one flushed batch.
    fn commit(&self, head: &mut Head, events: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        let mut next = *head;
        for (_, json) in events {
            let seq = next.seq + 1;
            let hash = chain_hash(&next.hash, seq, &json);
            let stored = StoredEvent {
                seq,
                previous: next.hash,
                hash,
                json,
            };
            batch.put(Table::Audit, &seq.to_be_bytes(), stored.encode());
            next = Head { seq, hash };
        }
        batch.put(
            Table::Meta,
            HEAD_KEY,
            serde_json::to_vec(&next).map_err(|e| StoreError::Backend(Box::new(e)))?,
        );
        match self.store.commit(batch)? {
            Ok(()) => {
                *head = next;
                Ok(())
            }
            Err(conflict) => Err(StoreError::Backend(conflict.to_string().into())),
        }
    }

    fn seal(&self, head: Head) -> Result<(), String> {
        let Some(sealer) = &self.sealer else {
            return Ok(());
        };
        let checkpoint = Checkpoint::seal(sealer.as_ref(), head, SystemClock.now_millis())?;
        let mut batch = Batch::new();
        batch.put(
            Table::AuditCheckpoints,
            &head.seq.to_be_bytes(),
            serde_json::to_vec(&checkpoint).map_err(|e| e.to_string())?,
        );
        self.store
            .commit(batch)
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}
