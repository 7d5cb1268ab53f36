//! The append-only, hash-chained audit log in the metadata store.
//!
//! Every event has a sequence number (1, 2, ...) and a chain hash,
//! `hash = SHA-256(previous hash || seq BE || event JSON)`, the first event's previous hash all
//! zeros. A group of consecutive events committed together is stored as one compressed record
//! under its first sequence number (see [`StoredEvent::encode_record`]): the store's cost is
//! per record and per byte, and it was most of the trail's. One writer thread appends, so the
//! chain has one order; it also writes the JSON of API calls' records, which the calling
//! threads hand over as the values only ([`AuditEvent::capture`]). Events of calls that change
//! state are durable before the call returns (with [`AuditSettings::durable_wait`] set,
//! committed together with those of the other such calls under way, which they wait for that
//! long at most); the others are group-committed: flushed at most
//! [`AuditSettings::group_commit`] after they were queued, or as soon as
//! [`AuditSettings::group_commit_events`] are waiting — a crash loses at most that window.
//! Every [`AuditSettings::checkpoint_every`] events, every
//! [`AuditSettings::checkpoint_interval`] while events arrive, and at shutdown, the head is
//! sealed by a key inside the HSMs (see [`super::checkpoint`]).
//!
//! Failures never pass silently:
//!
//! - A group whose commit fails is dropped, and the durable callers waiting on it are told so.
//!   What was dropped (how many events, their names, request ids and times) is kept and written
//!   as an `AuditEventsLost` record at the head of the next group that commits, so the chain
//!   itself shows the gap. While the trail is failing the writer retries every
//!   [`RETRY_INTERVAL`] even without new events (writing the record, or just the head).
//! - The log is *failing* from a failed write until the next successful one; [`AuditLog::health`]
//!   reports it (for `/healthz` and `/metrics`), and with [`OnFailure::Refuse`] the key store
//!   refuses calls meanwhile.
//! - For a call that changes state, [`AuditLog::begin`] first writes an *intent* (the call's
//!   event with an unknown outcome) durably under `audit-intent/ID` in the meta table, before
//!   the change; [`AuditLog::complete`] appends the final event and deletes the intent in the
//!   same batch. An intent left behind (a crash, or a completion whose group was dropped) is an
//!   orphan: the writer chains it as an event marked `"hsmKmsOutcome": "unknown"` at start-up
//!   and after a failed write, so a change is never made without a durable record of it.
//! - On a store several instances share, an intent this process did not write may be another
//!   instance's call in progress: it is taken for an orphan only once its event time is
//!   [`FOREIGN_INTENT_GRACE`] old (the writer looks again when the youngest one comes of age,
//!   so a crashed instance's intents are chained by the others without a restart). Chaining an
//!   orphan requires its intent still on disk, so two instances never chain the same one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::checkpoint::{Checkpoint, Sealer};
use crate::clock::Clock;
use crate::store::{Batch, MetadataStore, Precondition, StoreError, Table};

/// Length of the fixed prefix of a stored event: its sequence number and the two hashes.
const PREFIX_LEN: usize = 8 + 32 + 32;
/// First byte of a record in format 1: one or more consecutive events, each its prefix, its
/// JSON's length (u32 BE) and its JSON. A record in format 0 (written before groups were)
/// holds one event, its prefix then its JSON, and starts with its sequence number's top byte,
/// 0 for every sequence number below 2^56.
const RECORD_FORMAT_GROUP: u8 = 1;
/// First byte of a record in format 2: a record of format 1 without its first byte,
/// compressed (LZ4 block, its uncompressed length first as u32 LE). The format records are
/// written in.
const RECORD_FORMAT_COMPRESSED: u8 = 2;
/// Largest uncompressed body a record of format 2 may claim: far above any real group, low
/// enough that a tampered length cannot make a reader allocate without bound.
const RECORD_BODY_MAX: usize = 16 << 20;
/// Most events one record holds, so that the record holding event `n` is keyed at most
/// `EVENTS_PER_RECORD_MAX - 1` below `n`: readers find it by a forward scan.
pub const EVENTS_PER_RECORD_MAX: usize = 64;
/// Events are added to a record until its body reaches this size before compression. Larger
/// records cost sled more than they save: it keeps up to 16 records in a leaf and writes a
/// leaf of more than a quarter of its 512 KiB segment as a file of its own, rewritten whole
/// at every change.
const RECORD_BYTES_TARGET: usize = 6 * 1024;
/// Meta-table key of the chain head.
const HEAD_KEY: &[u8] = b"audit-head";
/// Meta-table key prefix of intents of state-changing calls not yet completed.
pub const INTENT_PREFIX: &[u8] = b"audit-intent/";
/// How often the writer retries while a record of lost events waits to be written, and how
/// long it waits before retrying a checkpoint seal that failed.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How often one group is chained again on a newer head after another instance (sharing
/// the store) extended the chain first; each retry means the chain itself moved on.
const CHAIN_ATTEMPTS: u32 = 64;
/// On a shared store, how old another instance's intent must be before it is taken for an
/// orphan: far longer than any call holds one (milliseconds, seconds when an HSM is slow),
/// as long as a replica left `Creating` waits for maintenance. A call slower than this would
/// have its intent chained besides its final event: a duplicate, never a loss.
pub const FOREIGN_INTENT_GRACE: Duration = Duration::from_secs(600);
/// Most request ids an `AuditEventsLost` record lists (the count is always exact).
const LOST_IDS_MAX: usize = 100;

/// What the key store does when an audit event cannot be made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Fail closed: a state-changing call whose intent cannot be written is refused and
    /// changes nothing; every other call is refused while the trail cannot be written.
    #[default]
    Refuse,
    /// Fail open: calls go on and lost events are only logged (and recorded as a gap).
    Log,
}

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
    /// Longest time a state-changing call's event is held for the events of the other
    /// state-changing calls under way, so that they are committed together. 0 (the default):
    /// at once. It makes bursts of quick changes cheaper on disk and every change that runs
    /// beside a slow one (a CreateKey that generates its material) later by up to this much.
    #[serde(rename = "durable_wait_ms", with = "millis")]
    pub durable_wait: Duration,
    /// Seal a checkpoint after this many events.
    pub checkpoint_every: u64,
    /// Seal a checkpoint when this much time (by the key store's clock) has passed since the
    /// last one and events arrived meanwhile.
    #[serde(rename = "checkpoint_interval_s", with = "seconds")]
    pub checkpoint_interval: Duration,
    /// What happens to calls when the trail cannot be written.
    pub on_failure: OnFailure,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            group_commit: Duration::from_millis(100),
            group_commit_events: 256,
            durable_wait: Duration::ZERO,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            on_failure: OnFailure::Refuse,
        }
    }
}

/// Why the audit trail could not take or keep an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The event could not be serialised.
    #[error("audit event does not encode: {0}")]
    Encode(String),
    /// The metadata store refused the write; the event was dropped (and the chain will record
    /// the gap). The text is the store's error, which names tables and keys, never payloads.
    #[error("audit trail write failed: {0}")]
    Write(String),
    /// The log was shut down; nothing more is written.
    #[error("the audit trail is shut down")]
    Stopped,
    /// The HSMs could not seal or open a checkpoint.
    #[error("audit checkpoint seal failed: {0}")]
    Seal(String),
    /// A checkpoint's seal opened but does not match the checkpoint's contents.
    #[error("checkpoint seal does not match its contents")]
    SealMismatch,
    /// A checkpoint field is not in its format.
    #[error("checkpoint {0} is not hex")]
    Malformed(&'static str),
}

/// The trail's write health, as `/healthz` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditHealth {
    /// The configured policy.
    pub on_failure: OnFailure,
    /// False from a failed write until the next successful one.
    pub writable: bool,
    /// Why the last write failed, while it is failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Events dropped by failed writes since start (each drop is recorded in the chain).
    pub lost_events: u64,
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Reads a whole number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

mod seconds {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Reads a whole number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

/// An event the trail records, as the JSON it writes into `out`: a call's record
/// ([`ApiCallEvent`](super::event::ApiCallEvent)), or any JSON value (service events, tests).
pub trait AuditEvent {
    /// Appends the event's JSON to `out`.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error>;

    /// Appends to `out` what the writer needs to write the event's JSON on its own thread,
    /// and says what that is: by default the JSON itself, written here.
    fn capture(&self, out: &mut Vec<u8>) -> Result<Captured, serde_json::Error> {
        self.write_json(out)?;
        Ok(Captured::Json)
    }
}

/// What [`AuditEvent::capture`] appended.
#[derive(Debug, Clone, Copy)]
pub enum Captured {
    /// The event's JSON.
    Json,
    /// Values that the function writes as the event's JSON (appending to its second argument).
    Values(fn(&[u8], &mut Vec<u8>)),
}

impl AuditEvent for Value {
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        serde_json::to_writer(out, self)
    }
}

/// One stored event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its sequence number, from 1, without gaps.
    pub seq: u64,
    /// The chain hash of the event before it (zeros for the first).
    pub previous: [u8; 32],
    /// Its chain hash: [`chain_hash`] of `previous`, `seq` and `json`.
    pub hash: [u8; 32],
    /// The event's JSON exactly as hashed.
    pub json: Vec<u8>,
}

impl StoredEvent {
    /// The event as JSON.
    pub fn event(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    /// The stored form (format 2) of consecutive `events`, stored under the first one's
    /// sequence number.
    pub fn encode_record<'a>(events: impl IntoIterator<Item = &'a StoredEvent>) -> Vec<u8> {
        let mut body = Vec::new();
        for event in events {
            append_to_record(
                &mut body,
                event.seq,
                &event.previous,
                &event.hash,
                &event.json,
            );
        }
        compressed_record(&body)
    }

    /// The events of a stored record, in any format; `None` if it cannot be one.
    pub fn decode_record(bytes: &[u8]) -> Option<Vec<StoredEvent>> {
        let (&format, body) = bytes.split_first()?;
        match format {
            RECORD_FORMAT_COMPRESSED => {
                let claimed = u32::from_le_bytes(body.get(..4)?.try_into().ok()?);
                let claimed = usize::try_from(claimed).ok()?;
                if claimed > RECORD_BODY_MAX {
                    return None;
                }
                // Exactly the length it claims, or the record was cut or altered.
                let mut group = vec![0; claimed];
                let written = lz4_flex::decompress_into(&body[4..], &mut group).ok()?;
                (written == claimed).then_some(())?;
                StoredEvent::decode_group(&group)
            }
            RECORD_FORMAT_GROUP => StoredEvent::decode_group(body),
            _ => Some(vec![StoredEvent::parse_prefixed(
                bytes,
                bytes.get(PREFIX_LEN..)?,
            )?]),
        }
    }

    /// The events of a record body of format 1 (after its first byte).
    fn decode_group(mut rest: &[u8]) -> Option<Vec<StoredEvent>> {
        let mut events = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest.get(PREFIX_LEN..PREFIX_LEN + 4)?.try_into().ok()?);
            let json_start = PREFIX_LEN + 4;
            let json_end = json_start.checked_add(usize::try_from(len).ok()?)?;
            events.push(StoredEvent::parse_prefixed(
                rest,
                rest.get(json_start..json_end)?,
            )?);
            rest = &rest[json_end..];
        }
        (!events.is_empty()).then_some(events)
    }

    fn parse_prefixed(prefix: &[u8], json: &[u8]) -> Option<StoredEvent> {
        Some(StoredEvent {
            seq: u64::from_be_bytes(prefix.get(0..8)?.try_into().ok()?),
            previous: prefix.get(8..40)?.try_into().ok()?,
            hash: prefix.get(40..72)?.try_into().ok()?,
            json: json.to_vec(),
        })
    }
}

/// A record of format 2 holding `body`, the events of a record of format 1.
fn compressed_record(body: &[u8]) -> Vec<u8> {
    let mut record = vec![RECORD_FORMAT_COMPRESSED];
    record.extend_from_slice(&lz4_flex::compress_prepend_size(body));
    record
}

/// Appends one event to the body of a record (format 1 after its first byte).
fn append_to_record(
    record: &mut Vec<u8>,
    seq: u64,
    previous: &[u8; 32],
    hash: &[u8; 32],
    json: &[u8],
) {
    record.extend_from_slice(&seq.to_be_bytes());
    record.extend_from_slice(previous);
    record.extend_from_slice(hash);
    // An event is far below 4 GiB: the key store caps every field it records.
    let len = u32::try_from(json.len()).unwrap_or(u32::MAX);
    record.extend_from_slice(&len.to_be_bytes());
    record.extend_from_slice(json);
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
    /// The last sequence number written.
    pub seq: u64,
    /// Its chain hash.
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
}

/// Hex (de)serialisation of 32-byte hashes.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the hash as 64 lowercase hex digits.
    pub fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    /// Reads 64 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// Parses 64 hex digits.
fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// The chain head recorded in the store, `None` when there is none or it cannot be read.
fn stored_head(store: &dyn MetadataStore) -> Result<Option<Head>, StoreError> {
    Ok(store
        .get(Table::Meta, HEAD_KEY)?
        .and_then(|record| serde_json::from_slice(&record.payload).ok()))
}

/// Reads the chain head recorded in the store (zero when the log is empty).
pub fn read_head(store: &dyn MetadataStore) -> Result<Head, StoreError> {
    Ok(stored_head(store)?.unwrap_or(Head {
        seq: 0,
        hash: [0; 32],
    }))
}

/// Whether the trail holds no event after `seq`, as its chain head (written in the batch of
/// every record) says; false when the head is missing or unreadable, so that a reader then
/// looks at the records themselves.
pub fn nothing_after(store: &dyn MetadataStore, seq: u64) -> Result<bool, StoreError> {
    Ok(stored_head(store)?.is_some_and(|head| head.seq <= seq))
}

/// Reads up to `limit` events after sequence number `after`, in order.
pub fn read_events(
    store: &dyn MetadataStore,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events = Vec::new();
    // Readers that keep up (the alarms, paging readers) stop at the end of a round, so the
    // next event usually begins a record of its own: then one lookup finds it. Otherwise the
    // record holding it is keyed at most EVENTS_PER_RECORD_MAX - 1 below it, and a scan from
    // there decodes that many small records (one per durable call) to skip them.
    let Some(next) = after.checked_add(1) else {
        return Ok(events);
    };
    let take = |events: &mut Vec<StoredEvent>, payload: &[u8]| {
        let stored = StoredEvent::decode_record(payload).unwrap_or_default();
        let wanted = limit - events.len();
        events.extend(stored.into_iter().filter(|e| e.seq > after).take(wanted));
    };
    let mut scan_after = match store.get(Table::Audit, &next.to_be_bytes())? {
        Some(record) => {
            take(&mut events, &record.payload);
            Some(next.to_be_bytes().to_vec())
        }
        None => {
            let reach = EVENTS_PER_RECORD_MAX as u64;
            (next > reach).then(|| (next - reach).to_be_bytes().to_vec())
        }
    };
    while events.len() < limit {
        let records = limit.min(16);
        let page = store.scan(Table::Audit, b"", scan_after.as_deref(), records)?;
        let full = page.len() == records;
        for (key, record) in page {
            take(&mut events, &record.payload);
            scan_after = Some(key);
        }
        if !full {
            break;
        }
    }
    Ok(events)
}

/// The audit log's writer.
pub struct AuditLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The durable intent of a state-changing call, settled by [`AuditLog::complete`]. One
/// dropped unsettled (its call panicked) is left to the writer as an orphan at once, rather
/// than counted as a call still under way for as long as the process lives.
pub struct Intent {
    key: Vec<u8>,
    /// `None` once settled.
    shared: Option<Arc<Shared>>,
}

impl Intent {
    /// The intent's meta-table key, settling it: its call is completing.
    fn settle(mut self) -> Vec<u8> {
        self.shared = None;
        std::mem::take(&mut self.key)
    }
}

impl Drop for Intent {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut queue = shared.lock();
            queue.open_intents.remove(&self.key);
            queue.orphans_possible = true;
        }
    }
}

impl fmt::Debug for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intent")
            .field("key", &String::from_utf8_lossy(&self.key))
            .finish()
    }
}

struct Shared {
    store: Arc<dyn MetadataStore>,
    sealer: Option<Arc<dyn Sealer>>,
    clock: Arc<dyn Clock>,
    settings: AuditSettings,
    queue: Mutex<Queue>,
    wake: Condvar,
    committed: Condvar,
    /// Told after every commit of events (the alarm dispatcher).
    on_commit: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Buffers of committed events, emptied, for the next events' JSON or captured values.
    spare_buffers: Mutex<Vec<Vec<u8>>>,
}

/// One event waiting for the writer.
struct Queued {
    ticket: u64,
    /// The event's JSON, or until the writer takes the event, what it was captured as (see
    /// `captured`). Empty for a [`AuditLog::probe`]: nothing to chain, but the head is written.
    json: Vec<u8>,
    captured: Captured,
    durable: bool,
    /// The meta-table key of the intent this event completes, deleted in the same batch.
    intent: Option<Vec<u8>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Queued>,
    oldest: Option<Instant>,
    /// Durable events in `pending`: the writer commits them at once, or with
    /// [`AuditSettings::durable_wait`] set, once no other state-changing call is under way or
    /// that long after the first was queued.
    durable_pending: usize,
    /// When the first durable event in `pending` was queued.
    durable_since: Option<Instant>,
    next_ticket: u64,
    /// Every ticket up to this one has been committed or dropped.
    settled_ticket: u64,
    /// Durable tickets whose group was dropped, with the reason; each waiter takes its own.
    dropped: HashMap<u64, String>,
    /// Intents written (or being written) whose completion is not committed yet.
    open_intents: HashSet<Vec<u8>>,
    /// An intent may have been left behind: the writer looks for orphans.
    orphans_possible: bool,
    /// Why the last write failed; `None` once a write succeeds.
    failure: Option<String>,
    /// Dropped events not yet recorded in the chain.
    lost: Option<Lost>,
    /// Events dropped since start.
    lost_total: u64,
    shutdown: bool,
    /// The writer waits on [`Shared::wake`]: it sees the queue only when woken or when its
    /// deadline passes.
    writer_waiting: bool,
    /// The writer thread has exited: nothing more is committed.
    stopped: bool,
}

impl Queue {
    /// State-changing calls that have written their intent and not yet queued their event.
    fn calls_under_way(&self) -> usize {
        let queued = self.pending.iter().filter(|event| event.intent.is_some());
        self.open_intents.len().saturating_sub(queued.count())
    }
}

/// Events dropped by failed writes, recorded in the chain as one
/// [`EVENTS_LOST`](super::event::EVENTS_LOST) service event.
#[derive(Clone)]
struct Lost {
    count: u64,
    region: String,
    account: String,
    first_time: String,
    last_time: String,
    event_names: BTreeMap<String, u64>,
    request_ids: Vec<String>,
    reason: String,
}

impl Lost {
    /// Counts one dropped event (only its name, time and ids are kept).
    fn add(lost: &mut Option<Lost>, json: &[u8], reason: &str) {
        let event: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
        let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
        let entry = lost.get_or_insert_with(|| Lost {
            count: 0,
            region: text("awsRegion"),
            account: text("recipientAccountId"),
            first_time: text("eventTime"),
            last_time: String::new(),
            event_names: BTreeMap::new(),
            request_ids: Vec::new(),
            reason: String::new(),
        });
        entry.count += 1;
        entry.last_time = text("eventTime");
        *entry.event_names.entry(text("eventName")).or_default() += 1;
        if entry.request_ids.len() < LOST_IDS_MAX {
            entry.request_ids.push(text("requestID"));
        }
        reason.clone_into(&mut entry.reason);
    }

    /// The record of the loss, as event JSON.
    fn record(&self, time_millis: i64) -> Result<Vec<u8>, StoreError> {
        let event = super::event::service_event(
            &self.region,
            &self.account,
            time_millis,
            super::event::EVENTS_LOST,
            &[],
            serde_json::json!({
                "lostEvents": self.count,
                "firstEventTime": self.first_time,
                "lastEventTime": self.last_time,
                "eventNames": self.event_names,
                "requestIds": self.request_ids,
                "reason": self.reason,
            }),
        );
        serde_json::to_vec(&event).map_err(|e| StoreError::Backend(Box::new(e)))
    }
}

impl AuditLog {
    /// Starts the writer over `store`; `sealer` seals checkpoints with a key in the HSMs and
    /// `clock` dates them and paces time-based sealing. Intents left by an earlier process are
    /// chained first.
    pub fn start(
        store: Arc<dyn MetadataStore>,
        sealer: Option<Arc<dyn Sealer>>,
        settings: AuditSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<AuditLog, StoreError> {
        let head = read_head(store.as_ref())?;
        let shared = Arc::new(Shared {
            store,
            sealer,
            clock,
            settings,
            queue: Mutex::new(Queue {
                next_ticket: 1,
                orphans_possible: true,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            committed: Condvar::new(),
            on_commit: Mutex::new(None),
            spare_buffers: Mutex::new(Vec::new()),
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

    /// What the key store does when the trail cannot be written.
    pub fn on_failure(&self) -> OnFailure {
        self.shared.settings.on_failure
    }

    /// Whether the last write failed, and what has been lost.
    pub fn health(&self) -> AuditHealth {
        let queue = self.shared.lock();
        let failure = match &queue.failure {
            Some(failure) => Some(failure.clone()),
            None if queue.stopped => Some(AuditError::Stopped.to_string()),
            None => None,
        };
        AuditHealth {
            on_failure: self.shared.settings.on_failure,
            writable: failure.is_none(),
            failure,
            lost_events: queue.lost_total,
        }
    }

    /// Appends an event; with `durable`, returns only once its group is flushed, or with
    /// [`AuditError::Write`] if that group was dropped.
    pub fn append(
        &self,
        event: &(impl AuditEvent + ?Sized),
        durable: bool,
    ) -> Result<(), AuditError> {
        if !self.shared.settings.enabled {
            return Ok(());
        }
        let (captured, how) = self.shared.capture(event)?;
        self.enqueue(captured, how, durable, None)
    }

    /// Durably records the intent of a state-changing call before it changes anything:
    /// `intent_event` is the call's event with its outcome unknown, chained as it is should
    /// the call never be completed. On an error the call must not go ahead.
    pub fn begin(&self, intent_event: &(impl AuditEvent + ?Sized)) -> Result<Intent, AuditError> {
        let json = self.shared.encode(intent_event)?;
        let key = [INTENT_PREFIX, uuid::Uuid::new_v4().to_string().as_bytes()].concat();
        {
            let mut queue = self.shared.lock();
            if queue.shutdown || queue.stopped {
                return Err(AuditError::Stopped);
            }
            queue.open_intents.insert(key.clone());
        }
        let mut batch = Batch::new();
        batch.put(Table::Meta, &key, json);
        let failure = match self.shared.store.commit(batch) {
            Ok(Ok(())) => {
                return Ok(Intent {
                    key,
                    shared: Some(self.shared.clone()),
                });
            }
            Ok(Err(conflict)) => conflict.to_string(),
            Err(error) => error.to_string(),
        };
        let mut queue = self.shared.lock();
        queue.open_intents.remove(&key);
        // After a failed commit the intent may be on disk all the same.
        queue.orphans_possible = true;
        queue.failure = Some(failure.clone());
        Err(AuditError::Write(failure))
    }

    /// Appends the final event of a call begun with [`AuditLog::begin`], durably, deleting
    /// its intent in the same batch. If that group is dropped, the intent stays and is chained
    /// as an orphan, so the change remains on record.
    pub fn complete(
        &self,
        intent: Intent,
        event: &(impl AuditEvent + ?Sized),
    ) -> Result<(), AuditError> {
        // An event that cannot be encoded leaves its intent unsettled: dropped here, the
        // intent goes to the writer as an orphan.
        let (captured, how) = self.shared.capture(event)?;
        self.enqueue(captured, how, true, Some(intent.settle()))
    }

    /// Proves the trail writable now, for work that is about to change state without a call
    /// (scheduled deletions and rotations): durably rewrites the chain head, adding no event.
    pub fn probe(&self) -> Result<(), AuditError> {
        if !self.shared.settings.enabled {
            return Ok(());
        }
        self.enqueue(Vec::new(), Captured::Json, true, None)
    }

    fn enqueue(
        &self,
        json: Vec<u8>,
        captured: Captured,
        durable: bool,
        intent: Option<Vec<u8>>,
    ) -> Result<(), AuditError> {
        let mut queue = self.shared.lock();
        if queue.stopped {
            return Err(AuditError::Stopped);
        }
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.pending.push(Queued {
            ticket,
            json,
            captured,
            durable,
            intent,
        });
        queue.oldest.get_or_insert_with(Instant::now);
        if durable {
            queue.durable_pending += 1;
            queue.durable_since.get_or_insert_with(Instant::now);
        }
        // The writer sleeps without a deadline only while it has nothing to do; otherwise it
        // wakes by itself when the group-commit window closes. Wake it only when it must act,
        // and only while it waits: a notification is a system call even when nobody waits.
        let pending = queue.pending.len();
        let must_act =
            durable || pending == 1 || pending >= self.shared.settings.group_commit_events;
        if must_act && queue.writer_waiting {
            self.shared.wake.notify_one();
        }
        if !durable {
            return Ok(());
        }
        while queue.settled_ticket < ticket && !queue.stopped {
            queue = self
                .shared
                .committed
                .wait(queue)
                .unwrap_or_else(|p| p.into_inner());
        }
        if let Some(reason) = queue.dropped.remove(&ticket) {
            return Err(AuditError::Write(reason));
        }
        if queue.settled_ticket < ticket {
            return Err(AuditError::Stopped);
        }
        Ok(())
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

/// Room for a typical event's JSON (an Encrypt's is about 1.2 KiB). Grown step by step from
/// serde_json's small start, a fresh buffer costs several reallocations per call, the last
/// ones large, and every large allocation makes glibc's allocator consolidate its free lists
/// (together a fifth of a key store Encrypt's CPU in a profile); so buffers this size are
/// reused once their events are committed.
const EVENT_CAPACITY: usize = 2048;

/// The most committed events' buffers kept for reuse (2 MiB, at most 4). Enough for the
/// events of a round being committed and of those queued meanwhile: the writer takes every
/// event queued when it wakes, several groups' worth when a commit was slow. With room for
/// one group of 256, a call in 15 wrote its event into a fresh buffer after the pool ran dry
/// and the writer freed as many on its own thread, both dear with glibc's allocator; with
/// 1,024, none after the first thousand calls (docs/benchmarks.md).
const SPARE_BUFFERS: usize = 1024;

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `eventTime` of an event's JSON in epoch milliseconds; `None` when it has none.
fn event_time_millis(json: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Timed<'a> {
        #[serde(rename = "eventTime", borrow)]
        event_time: Cow<'a, str>,
    }
    let timed: Timed<'_> = serde_json::from_slice(json).ok()?;
    let time = humantime::parse_rfc3339_weak(&timed.event_time).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

/// An intent left on disk by a call that never completed it.
struct Orphan {
    key: Vec<u8>,
    json: Vec<u8>,
}

/// What the writer took from the queue for one commit.
struct Round {
    events: Vec<Queued>,
    lost: Option<Lost>,
    find_orphans: bool,
    /// The trail is failing: write the head even with nothing to chain, to see if it recovered.
    recheck: bool,
    stopping: bool,
}

impl Round {
    /// Whether the round writes the head even if it chains nothing.
    fn writes_head(&self) -> bool {
        self.recheck || self.events.iter().any(|event| event.json.is_empty())
    }
}

/// The writer's own state between rounds.
struct WriterState {
    head: Head,
    /// A write failed: the head on disk may have moved, read it again before the next one.
    head_uncertain: bool,
    /// When the writer last tried to record a loss or look for orphans.
    last_recovery: Option<Instant>,
    /// Events committed since the last sealed checkpoint.
    since_checkpoint: u64,
    /// Clock time of the last sealed checkpoint (or of the writer's start).
    last_seal: i64,
    /// After a failed seal: not before this instant again.
    seal_retry_at: Option<Instant>,
    /// When the youngest intent of another instance seen by the last look for orphans is
    /// [`FOREIGN_INTENT_GRACE`] old: the writer looks again then.
    foreign_intents_due: Option<Instant>,
    /// The buffer the next captured event's JSON is written into.
    scratch: Vec<u8>,
}

impl Shared {
    /// An event's JSON, written into a reused buffer when one is spare.
    fn encode(&self, event: &(impl AuditEvent + ?Sized)) -> Result<Vec<u8>, AuditError> {
        let mut json = self.spare_buffer();
        event
            .write_json(&mut json)
            .map_err(|e| AuditError::Encode(e.to_string()))?;
        Ok(json)
    }

    /// An event as captured for the writer, in a reused buffer when one is spare.
    fn capture(
        &self,
        event: &(impl AuditEvent + ?Sized),
    ) -> Result<(Vec<u8>, Captured), AuditError> {
        let mut captured = self.spare_buffer();
        let how = event
            .capture(&mut captured)
            .map_err(|e| AuditError::Encode(e.to_string()))?;
        Ok((captured, how))
    }

    /// A buffer of a committed event, emptied, or a new one when none is spare.
    fn spare_buffer(&self) -> Vec<u8> {
        let spare = self
            .spare_buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        spare.unwrap_or_else(|| Vec::with_capacity(EVENT_CAPACITY))
    }

    /// Writes the JSON of the events captured as values, each into `scratch`, which then
    /// trades places with the event's buffer of values (and is reused for the next).
    fn render(events: &mut [Queued], scratch: &mut Vec<u8>) {
        for event in events {
            if let Captured::Values(render) = event.captured {
                scratch.clear();
                render(&event.json, scratch);
                std::mem::swap(&mut event.json, scratch);
                event.captured = Captured::Json;
            }
        }
    }

    /// Keeps the buffers of a round's events, emptied, for [`Shared::spare_buffer`]; a buffer
    /// grown by an unusually large event is let go.
    fn recycle(&self, events: Vec<Queued>) {
        let mut spare = self.spare_buffers.lock().unwrap_or_else(|p| p.into_inner());
        for mut event in events {
            if spare.len() >= SPARE_BUFFERS {
                break;
            }
            if (EVENT_CAPACITY..=2 * EVENT_CAPACITY).contains(&event.json.capacity()) {
                event.json.clear();
                spare.push(event.json);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer thread: waits for events, commits them in groups (recording losses and
    /// orphaned intents first), seals checkpoints by count and by time.
    fn run(&self, head: Head) {
        let mut state = WriterState {
            head,
            head_uncertain: false,
            last_recovery: None,
            since_checkpoint: 0,
            last_seal: self.clock.now_millis(),
            seal_retry_at: None,
            foreign_intents_due: None,
            scratch: Vec::with_capacity(EVENT_CAPACITY),
        };
        loop {
            let mut round = self.next_round(&state);
            Self::render(&mut round.events, &mut state.scratch);
            if !round.events.is_empty()
                || round.lost.is_some()
                || round.find_orphans
                || round.recheck
            {
                self.write_round(&mut state, &round);
            }
            let now = self.clock.now_millis();
            let interval =
                i64::try_from(self.settings.checkpoint_interval.as_millis()).unwrap_or(i64::MAX);
            let due = state.since_checkpoint > 0
                && (round.stopping
                    || (state.seal_retry_at.is_none_or(|at| Instant::now() >= at)
                        && (state.since_checkpoint >= self.settings.checkpoint_every
                            || now.saturating_sub(state.last_seal) >= interval)));
            if due {
                match self.seal(state.head, now) {
                    Ok(()) => {
                        state.since_checkpoint = 0;
                        state.last_seal = now;
                        state.seal_retry_at = None;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "audit checkpoint not sealed; will retry");
                        state.seal_retry_at = Some(Instant::now() + RETRY_INTERVAL);
                    }
                }
            }
            if round.stopping {
                let mut queue = self.lock();
                if queue.pending.is_empty() {
                    if let Some(lost) = &queue.lost {
                        tracing::error!(
                            lost = lost.count,
                            "audit trail stopped before the loss of events could be recorded"
                        );
                    }
                    queue.stopped = true;
                    self.committed.notify_all();
                    return;
                }
            }
            self.recycle(round.events);
        }
    }

    /// Waits until there is something to do and takes it from the queue.
    fn next_round(&self, state: &WriterState) -> Round {
        let mut queue = self.lock();
        loop {
            if queue.shutdown || queue.pending.len() >= self.settings.group_commit_events {
                break;
            }
            let now = Instant::now();
            let mut deadline = queue
                .oldest
                .map(|oldest| oldest + self.settings.group_commit);
            if queue.durable_pending > 0 {
                // Each state-changing call under way would otherwise need a commit of its own
                // right after this one: on sled a transaction, which excludes every other and
                // writes its log twice more before its own write.
                if self.settings.durable_wait.is_zero() || queue.calls_under_way() == 0 {
                    break;
                }
                deadline = earliest(
                    deadline,
                    queue
                        .durable_since
                        .map(|since| since + self.settings.durable_wait),
                );
            }
            if queue.lost.is_some() || queue.orphans_possible || queue.failure.is_some() {
                let retry = state
                    .last_recovery
                    .map_or(now, |last| last + RETRY_INTERVAL);
                deadline = earliest(deadline, Some(retry));
            }
            if state.since_checkpoint > 0 {
                let seal_at = state.seal_retry_at.unwrap_or_else(|| {
                    let elapsed = self.clock.now_millis().saturating_sub(state.last_seal);
                    let elapsed = Duration::from_millis(u64::try_from(elapsed).unwrap_or(0));
                    now + self.settings.checkpoint_interval.saturating_sub(elapsed)
                });
                deadline = earliest(deadline, Some(seal_at));
            }
            deadline = earliest(deadline, state.foreign_intents_due);
            if deadline.is_some_and(|deadline| deadline <= now) {
                break;
            }
            queue.writer_waiting = true;
            queue = match deadline {
                Some(deadline) => {
                    self.wake
                        .wait_timeout(queue, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.wake.wait(queue).unwrap_or_else(|p| p.into_inner()),
            };
            queue.writer_waiting = false;
        }
        queue.oldest = None;
        queue.durable_pending = 0;
        queue.durable_since = None;
        let foreign_due = state
            .foreign_intents_due
            .is_some_and(|due| due <= Instant::now());
        let find_orphans = std::mem::take(&mut queue.orphans_possible) || foreign_due;
        Round {
            events: std::mem::take(&mut queue.pending),
            lost: queue.lost.clone(),
            find_orphans,
            recheck: queue.failure.is_some(),
            stopping: queue.shutdown,
        }
    }

    /// Commits one round and settles its callers: on success the loss is recorded and the
    /// failure cleared; on failure the round's events join the loss and their durable callers
    /// are told.
    fn write_round(&self, state: &mut WriterState, round: &Round) {
        if round.lost.is_some() || round.find_orphans || round.recheck {
            state.last_recovery = Some(Instant::now());
        }
        let outcome = self.commit(state, round);
        let mut queue = self.lock();
        match outcome {
            Ok(committed) => {
                // Only a write that happened proves the trail writable again.
                if committed > 0 || round.writes_head() {
                    queue.failure = None;
                    queue.lost = None;
                }
                for event in &round.events {
                    if let Some(key) = &event.intent {
                        queue.open_intents.remove(key);
                    }
                }
                state.since_checkpoint += committed;
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(
                    %reason,
                    events = round.events.len(),
                    "audit events could not be written; the chain will record the gap"
                );
                state.head_uncertain = true;
                for event in &round.events {
                    if !event.json.is_empty() {
                        Lost::add(&mut queue.lost, &event.json, &reason);
                        queue.lost_total += 1;
                    }
                    if event.durable {
                        queue.dropped.insert(event.ticket, reason.clone());
                    }
                    if let Some(key) = &event.intent {
                        queue.open_intents.remove(key);
                        queue.orphans_possible = true;
                    }
                }
                if round.find_orphans {
                    queue.orphans_possible = true;
                }
                queue.failure = Some(reason);
            }
        }
        if let Some(last) = round.events.last() {
            queue.settled_ticket = last.ticket;
        }
        self.committed.notify_all();
        let succeeded = queue.failure.is_none();
        drop(queue);
        if succeeded && state.since_checkpoint > 0 {
            let listener = self
                .on_commit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(listener) = listener {
                listener();
            }
        }
    }

    /// Intents on disk that no call in this process is still working on, and on a shared
    /// store none younger than [`FOREIGN_INTENT_GRACE`]; with the instant the youngest of
    /// those left alone comes of age.
    fn orphans(&self) -> Result<(Vec<Orphan>, Option<Instant>), StoreError> {
        let found = self
            .store
            .scan(Table::Meta, INTENT_PREFIX, None, usize::MAX)?;
        let shared = self.store.is_shared();
        let now = self.clock.now_millis();
        let grace = i64::try_from(FOREIGN_INTENT_GRACE.as_millis()).unwrap_or(i64::MAX);
        let queue = self.lock();
        let mut orphans = Vec::new();
        let mut wait_millis: Option<i64> = None;
        for (key, record) in found {
            if queue.open_intents.contains(&key) {
                continue;
            }
            if shared {
                let age = event_time_millis(&record.payload).map(|time| now - time);
                if let Some(age) = age.filter(|age| *age < grace) {
                    let left = grace - age;
                    wait_millis = Some(wait_millis.map_or(left, |wait| wait.min(left)));
                    continue;
                }
            }
            orphans.push(Orphan {
                key,
                json: record.payload,
            });
        }
        let due = wait_millis.map(|millis| {
            Instant::now() + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
        });
        Ok((orphans, due))
    }

    /// Chains the record of lost events, the orphaned intents and the round's events onto the
    /// head and writes them, the new head and the deletion of the intents they settle in one
    /// flushed batch; returns how many events were chained.
    ///
    /// The batch requires the sequence number after the head to be free, so on a store that
    /// several instances share the database orders the chain: when another instance's
    /// batch extended it first, this one conflicts, rereads the head and chains again on top.
    fn commit(&self, state: &mut WriterState, round: &Round) -> Result<u64, StoreError> {
        if state.head_uncertain {
            state.head = read_head(self.store.as_ref())?;
            state.head_uncertain = false;
        }
        let lost_record = match &round.lost {
            Some(lost) => Some(lost.record(self.clock.now_millis())?),
            None => None,
        };
        let mut orphans = if round.find_orphans {
            let (orphans, due) = self.orphans()?;
            state.foreign_intents_due = due;
            orphans
        } else {
            Vec::new()
        };
        let mut attempts = 0;
        loop {
            let chained = lost_record
                .iter()
                .chain(orphans.iter().map(|orphan| &orphan.json))
                .chain(round.events.iter().map(|event| &event.json))
                .filter(|json| !json.is_empty());
            let mut batch = Batch::new();
            batch.expect(
                Table::Audit,
                &(state.head.seq + 1).to_be_bytes(),
                Precondition::ExpectAbsent,
            );
            // Another instance may have chained (and deleted) the same orphan meanwhile.
            for orphan in &orphans {
                batch.expect(Table::Meta, &orphan.key, Precondition::ExpectPresent);
            }
            let mut next = state.head;
            let mut record = RecordBuilder::default();
            for json in chained {
                let seq = next.seq + 1;
                let hash = chain_hash(&next.hash, seq, json);
                record.add(&mut batch, seq, &next.hash, &hash, json);
                next = Head { seq, hash };
            }
            record.finish(&mut batch);
            let settled = orphans.iter().map(|orphan| &orphan.key).chain(
                round
                    .events
                    .iter()
                    .filter_map(|event| event.intent.as_ref()),
            );
            for key in settled {
                batch.delete(Table::Meta, key);
            }
            if next == state.head && !round.writes_head() {
                return Ok(0);
            }
            batch.put(
                Table::Meta,
                HEAD_KEY,
                serde_json::to_vec(&next).map_err(|e| StoreError::Backend(Box::new(e)))?,
            );
            match self.store.commit(batch)? {
                Ok(()) => {
                    let committed = next.seq - state.head.seq;
                    state.head = next;
                    return Ok(committed);
                }
                Err(conflict) if attempts < CHAIN_ATTEMPTS => {
                    attempts += 1;
                    if conflict.table == Table::Meta {
                        tracing::debug!(%conflict, "another instance chained an orphaned intent");
                        orphans.retain(|orphan| orphan.key != conflict.key);
                    } else {
                        tracing::debug!(%conflict, "another instance extended the audit chain");
                        state.head = read_head(self.store.as_ref())?;
                    }
                }
                Err(conflict) => return Err(StoreError::Backend(conflict.to_string().into())),
            }
        }
    }

    /// Seals the head in a checkpoint dated `time` and stores it.
    fn seal(&self, head: Head, time: i64) -> Result<(), AuditError> {
        let Some(sealer) = &self.sealer else {
            return Ok(());
        };
        let checkpoint = Checkpoint::seal(sealer.as_ref(), head, time)?;
        let mut batch = Batch::new();
        batch.put(
            Table::AuditCheckpoints,
            &head.seq.to_be_bytes(),
            serde_json::to_vec(&checkpoint).map_err(|e| AuditError::Encode(e.to_string()))?,
        );
        match self.store.commit(batch) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(conflict)) => Err(AuditError::Write(conflict.to_string())),
            Err(error) => Err(AuditError::Write(error.to_string())),
        }
    }
}

/// Packs a round's chained events into records of at most [`EVENTS_PER_RECORD_MAX`] events, and
/// no more once one's body reaches [`RECORD_BYTES_TARGET`] bytes, each compressed (format 2)
/// and put under its first event's sequence number.
#[derive(Default)]
struct RecordBuilder {
    first_seq: u64,
    events: usize,
    bytes: Vec<u8>,
}

impl RecordBuilder {
    fn add(
        &mut self,
        batch: &mut Batch,
        seq: u64,
        previous: &[u8; 32],
        hash: &[u8; 32],
        json: &[u8],
    ) {
        if self.events == EVENTS_PER_RECORD_MAX || self.bytes.len() >= RECORD_BYTES_TARGET {
            self.finish(batch);
        }
        if self.events == 0 {
            self.first_seq = seq;
        }
        append_to_record(&mut self.bytes, seq, previous, hash, json);
        self.events += 1;
    }

    fn finish(&mut self, batch: &mut Batch) {
        if self.events > 0 {
            batch.put(
                Table::Audit,
                &self.first_seq.to_be_bytes(),
                compressed_record(&self.bytes),
            );
            self.bytes.clear();
            self.events = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::clock::SystemClock;
    use crate::store::intercept::{Answer, Intercepted, Interceptor};
    use crate::store::{Record, SledStore};

    /// Commits that fail while `failing` is set, counted when they write to the trail.
    #[derive(Default)]
    struct Flaky {
        failing: AtomicBool,
        /// Says the store is shared by several instances (they are several logs in this
        /// process).
        shared: bool,
        /// Commits that wrote to the trail.
        trail_commits: AtomicUsize,
    }

    impl Interceptor for Flaky {
        fn commit(&self, store: &dyn MetadataStore, batch: Batch) -> Answer {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Io(std::io::Error::other("injected failure")));
            }
            if batch.writes().any(|(table, _, _)| table == Table::Audit) {
                self.trail_commits.fetch_add(1, Ordering::SeqCst);
            }
            store.commit(batch)
        }

        fn is_shared(&self, _: &dyn MetadataStore) -> bool {
            self.shared
        }
    }

    /// A sled store whose commits fail while its interceptor's `failing` is set.
    type FlakyStore = Intercepted<SledStore, Flaky>;

    fn flaky(dir: &tempfile::TempDir) -> Arc<FlakyStore> {
        flaky_with(dir, Flaky::default())
    }

    fn flaky_with(dir: &tempfile::TempDir, flaky: Flaky) -> Arc<FlakyStore> {
        let store = SledStore::open(dir.path().join("db")).unwrap();
        Arc::new(Intercepted::new(store, flaky))
    }

    /// The intents left in `store`'s meta table.
    fn intents(store: &dyn MetadataStore) -> Vec<(Vec<u8>, Record)> {
        store.scan(Table::Meta, INTENT_PREFIX, None, 10).unwrap()
    }

    fn start(store: &Arc<FlakyStore>) -> AuditLog {
        start_with(store, AuditSettings::default())
    }

    fn start_with(store: &Arc<FlakyStore>, settings: AuditSettings) -> AuditLog {
        AuditLog::start(store.clone(), None, settings, Arc::new(SystemClock)).unwrap()
    }

    /// Settings under which a durable event would wait a minute for the calls under way (and
    /// the group-commit window, which bounds that wait too, is a minute): a test that
    /// finishes did not wait for that minute.
    fn waiting_a_minute() -> AuditSettings {
        AuditSettings {
            durable_wait: Duration::from_secs(60),
            group_commit: Duration::from_secs(60),
            ..AuditSettings::default()
        }
    }

    /// Completes `intent` with `event` on another thread; the flag says when it returned.
    fn complete_aside(
        log: &Arc<AuditLog>,
        intent: Intent,
        event: Value,
    ) -> (std::thread::JoinHandle<()>, Arc<AtomicBool>) {
        let returned = Arc::new(AtomicBool::new(false));
        let (log, flag) = (log.clone(), returned.clone());
        let thread = std::thread::spawn(move || {
            log.complete(intent, &event).unwrap();
            flag.store(true, Ordering::SeqCst);
        });
        (thread, returned)
    }

    fn event(name: &str, request_id: &str) -> Value {
        serde_json::json!({
            "eventName": name,
            "eventTime": "2024-01-01T00:00:00Z",
            "awsRegion": "us-east-1",
            "recipientAccountId": "111122223333",
            "requestID": request_id,
        })
    }

    fn names(store: &dyn MetadataStore) -> Vec<String> {
        read_events(store, 0, usize::MAX)
            .unwrap()
            .iter()
            .map(|stored| stored.event()["eventName"].as_str().unwrap().to_owned())
            .collect()
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_dropped_group_is_recorded_and_the_failure_clears_at_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        let log = start(&store);
        log.append(&event("CreateKey", "r1"), true).unwrap();

        store.interceptor().failing.store(true, Ordering::SeqCst);
        log.append(&event("Encrypt", "r2"), false).unwrap();
        let error = log.append(&event("DisableKey", "r3"), true).unwrap_err();
        assert!(matches!(error, AuditError::Write(_)), "{error:?}");
        let health = log.health();
        assert!(!health.writable);
        assert_eq!(health.lost_events, 2);
        assert!(health.failure.unwrap().contains("injected failure"));

        // Writes work again: a durable append waits for its own commit (no latched failure).
        store.interceptor().failing.store(false, Ordering::SeqCst);
        log.append(&event("EnableKey", "r4"), true).unwrap();
        assert!(log.health().writable);
        assert_eq!(
            names(store.as_ref()),
            ["CreateKey", super::super::event::EVENTS_LOST, "EnableKey"]
        );
        let lost = read_events(store.as_ref(), 1, 1).unwrap()[0].event();
        let details = &lost["serviceEventDetails"];
        assert_eq!(details["lostEvents"], 2);
        assert_eq!(details["eventNames"]["Encrypt"], 1);
        assert_eq!(details["eventNames"]["DisableKey"], 1);
        assert_eq!(details["requestIds"], serde_json::json!(["r2", "r3"]));
        assert_eq!(lost["awsRegion"], "us-east-1");
        assert_eq!(lost["recipientAccountId"], "111122223333");

        // The chain is whole; the loss is the only problem verify reports.
        let report = super::super::verify::verify(store.as_ref(), None, None).unwrap();
        assert_eq!(report.events, 3);
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert_eq!(report.first_bad(), Some(2));
        assert!(report.problems[0].what.contains("failed to write"));
    }

    #[test]
    fn the_writer_records_a_loss_by_itself_once_writes_work_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        let log = start(&store);
        store.interceptor().failing.store(true, Ordering::SeqCst);
        log.append(&event("Encrypt", "r1"), false).unwrap();
        wait_until("the failed group", || !log.health().writable);
        store.interceptor().failing.store(false, Ordering::SeqCst);
        wait_until("the retry", || log.health().writable);
        assert_eq!(names(store.as_ref()), [super::super::event::EVENTS_LOST]);
    }

    #[test]
    fn an_intent_whose_completion_is_lost_is_chained_with_an_unknown_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        let log = start(&store);
        let intent = log.begin(&event("DisableKey", "r1")).unwrap();
        assert_eq!(
            store.count(Table::Meta).unwrap(),
            1,
            "the intent is on disk before the change"
        );
        store.interceptor().failing.store(true, Ordering::SeqCst);
        let mut done = event("DisableKey", "r1");
        done["done"] = Value::Bool(true);
        assert!(log.complete(intent, &done).is_err());
        // While the trail fails, a new intent cannot be written: the call must not go ahead.
        assert!(log.begin(&event("EnableKey", "r2")).is_err());
        store.interceptor().failing.store(false, Ordering::SeqCst);
        wait_until("recovery", || log.health().writable);
        let chained = read_events(store.as_ref(), 0, usize::MAX).unwrap();
        let events: Vec<Value> = chained.iter().map(StoredEvent::event).collect();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0]["eventName"], super::super::event::EVENTS_LOST);
        assert_eq!(events[0]["serviceEventDetails"]["lostEvents"], 1);
        assert_eq!(events[1], event("DisableKey", "r1"));
        assert!(intents(store.as_ref()).is_empty());

        // A completed intent leaves only its final event.
        let intent = log.begin(&event("EnableKey", "r3")).unwrap();
        log.complete(intent, &event("EnableKey", "r3")).unwrap();
        assert_eq!(read_events(store.as_ref(), 0, usize::MAX).unwrap().len(), 3);
        assert!(intents(store.as_ref()).is_empty());
    }

    #[test]
    fn a_durable_event_is_committed_with_those_of_the_calls_under_way_and_alone_without() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        let log = Arc::new(start_with(&store, waiting_a_minute()));

        // Alone, a call's event is committed at once.
        let alone = log.begin(&event("EnableKey", "r0")).unwrap();
        let (thread, returned) = complete_aside(&log, alone, event("EnableKey", "r0"));
        wait_until("the lone call's commit", || returned.load(Ordering::SeqCst));
        thread.join().unwrap();
        assert_eq!(store.interceptor().trail_commits.load(Ordering::SeqCst), 1);

        // With another call under way, the first event waits for the second's, and both go
        // in one commit.
        let first = log.begin(&event("DisableKey", "r1")).unwrap();
        let second = log.begin(&event("CreateAlias", "r2")).unwrap();
        let (thread, returned) = complete_aside(&log, first, event("DisableKey", "r1"));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !returned.load(Ordering::SeqCst),
            "committed before the call under way"
        );
        log.complete(second, &event("CreateAlias", "r2")).unwrap();
        thread.join().unwrap();
        assert_eq!(store.interceptor().trail_commits.load(Ordering::SeqCst), 2);
        assert_eq!(
            names(store.as_ref()),
            ["EnableKey", "DisableKey", "CreateAlias"]
        );
    }

    #[test]
    fn an_intent_dropped_unsettled_is_chained_and_holds_no_other_event_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        let log = Arc::new(start_with(&store, waiting_a_minute()));
        // The call that began it panicked, say.
        drop(log.begin(&event("DisableKey", "r1")).unwrap());

        let intent = log.begin(&event("EnableKey", "r2")).unwrap();
        let (thread, returned) = complete_aside(&log, intent, event("EnableKey", "r2"));
        wait_until("a commit that waits for no one", || {
            returned.load(Ordering::SeqCst)
        });
        thread.join().unwrap();
        wait_until("the orphan chained", || names(store.as_ref()).len() == 2);
        let mut chained = names(store.as_ref());
        chained.sort();
        assert_eq!(chained, ["DisableKey", "EnableKey"]);
        assert!(intents(store.as_ref()).is_empty());
    }

    #[test]
    fn on_a_shared_store_another_instances_call_in_progress_is_not_an_orphan() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky_with(
            &dir,
            Flaky {
                shared: true,
                ..Flaky::default()
            },
        );
        let clock = Arc::new(crate::clock::ManualClock::new());
        let instance = || {
            AuditLog::start(store.clone(), None, AuditSettings::default(), clock.clone()).unwrap()
        };
        let now = |name: &str, request_id: &str| {
            let mut event = event(name, request_id);
            event["eventTime"] = super::super::event::event_time(clock.now_millis()).into();
            event
        };
        let intents = || intents(store.as_ref()).len();

        let a = instance();
        let in_progress = a.begin(&now("DisableKey", "r1")).unwrap();
        // b starts while a's call is under way: its first look for orphans leaves it alone.
        let b = instance();
        b.append(&now("Encrypt", "r2"), true).unwrap();
        assert_eq!(names(store.as_ref()), ["Encrypt"]);
        assert_eq!(intents(), 1);
        a.complete(in_progress, &now("DisableKey", "r1")).unwrap();
        assert_eq!(names(store.as_ref()), ["Encrypt", "DisableKey"], "once");
        assert_eq!(intents(), 0);

        // a dies in the middle of a call; once its intent is old, another instance starting
        // (or recovering) chains it.
        let crashed = a.begin(&now("ScheduleKeyDeletion", "r3")).unwrap();
        std::mem::forget(crashed);
        a.shutdown();
        clock.advance(FOREIGN_INTENT_GRACE - Duration::from_secs(1));
        let c = instance();
        c.append(&now("Encrypt", "r4"), true).unwrap();
        assert_eq!(intents(), 1, "not old enough yet");
        clock.advance(Duration::from_secs(2));
        let d = instance();
        wait_until("the orphan", || intents() == 0);
        assert_eq!(
            names(store.as_ref()),
            ["Encrypt", "DisableKey", "Encrypt", "ScheduleKeyDeletion"]
        );
        for log in [b, c, d] {
            log.shutdown();
        }
    }

    #[test]
    fn intents_left_by_a_crash_are_chained_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        {
            let log = start(&store);
            let intent = log.begin(&event("ScheduleKeyDeletion", "r1")).unwrap();
            // The process dies before the call completes.
            std::mem::forget(intent);
            log.shutdown();
        }
        assert!(names(store.as_ref()).is_empty());
        let log = start(&store);
        wait_until("the orphan", || names(store.as_ref()).len() == 1);
        assert_eq!(names(store.as_ref()), ["ScheduleKeyDeletion"]);
        log.shutdown();
    }

    /// A call's record goes to the writer as its values, and what the writer chains is the
    /// record's JSON, exactly as the event writes it itself; in a group and durably alike.
    #[test]
    fn a_record_handed_over_as_values_is_chained_as_its_json() {
        use crate::audit::event::Call;
        use crate::caller::Caller;
        use crate::ids::Scope;

        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        let log = start(&store);
        let scope = Scope::new("eu-west-1", "111122223333").unwrap();
        let caller = Caller::local(&scope);
        let mut call = Call::new("Encrypt", true, false);
        call.param("keyId", "alias/q\"uoted");
        call.resource("arn:aws:kms:eu-west-1:111122223333:key/k".into());
        call.served_by("hsm-a");
        let event = call.event(&caller, "local", 1_700_000_000_000, None);
        let mut expected = Vec::new();
        event.write_json(&mut expected).unwrap();
        let mut captured = Vec::new();
        assert!(matches!(
            event.capture(&mut captured).unwrap(),
            Captured::Values(_)
        ));
        assert_ne!(captured, expected);

        log.append(&event, false).unwrap();
        log.append(&event, true).unwrap();
        log.shutdown();
        let chained = read_events(store.as_ref(), 0, usize::MAX).unwrap();
        assert_eq!(chained.len(), 2);
        for stored in chained {
            assert_eq!(
                String::from_utf8(stored.json).unwrap(),
                String::from_utf8(expected.clone()).unwrap()
            );
        }
    }

    #[test]
    fn appends_after_shutdown_are_refused_not_hung() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        let log = start(&store);
        log.shutdown();
        assert_eq!(
            log.append(&event("Encrypt", "r1"), true),
            Err(AuditError::Stopped)
        );
        assert_eq!(
            log.begin(&event("DisableKey", "r2")).unwrap_err(),
            AuditError::Stopped
        );
        assert!(!log.health().writable);
    }

    #[test]
    fn a_round_is_stored_in_records_of_at_most_the_cap_and_read_from_any_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        let log = start(&store);
        let count = 2 * EVENTS_PER_RECORD_MAX + 10;
        for i in 0..count {
            log.append(&event("Encrypt", &format!("r{i}")), false)
                .unwrap();
        }
        log.probe().unwrap();
        log.shutdown();
        let keys: Vec<u64> = store
            .scan(Table::Audit, b"", None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(key, _)| u64::from_be_bytes(key.try_into().unwrap()))
            .collect();
        assert!(keys.len() >= 3, "{keys:?}");
        assert_eq!(keys[0], 1);
        let most = EVENTS_PER_RECORD_MAX as u64;
        assert!(keys.windows(2).all(|w| w[1] - w[0] <= most), "{keys:?}");
        let all = read_events(store.as_ref(), 0, usize::MAX).unwrap();
        let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=count as u64).collect::<Vec<_>>());
        // From inside the second record, across into the third.
        let after = EVENTS_PER_RECORD_MAX as u64 + 5;
        let page = read_events(store.as_ref(), after, EVENTS_PER_RECORD_MAX).unwrap();
        assert_eq!(page.first().unwrap().seq, after + 1);
        assert_eq!(page.len(), EVENTS_PER_RECORD_MAX);
        assert_eq!(
            page.last().unwrap().seq,
            after + EVENTS_PER_RECORD_MAX as u64
        );
        let report = super::super::verify::verify(store.as_ref(), None, None).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.events, count as u64);
    }

    #[test]
    fn events_are_read_from_every_point_of_a_trail_of_small_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        let log = start(&store);
        // Durable calls commit one at a time: a record each, more of them than one record
        // can hold, so a reader looking back for the next event's record would pass many.
        let count = EVENTS_PER_RECORD_MAX as u64 + 6;
        for i in 0..count {
            log.append(&event("DisableKey", &format!("d{i}")), true)
                .unwrap();
        }
        log.shutdown();
        let records = store.scan(Table::Audit, b"", None, usize::MAX).unwrap();
        assert_eq!(records.len() as u64, count);
        for after in 0..=count {
            let seqs: Vec<u64> = read_events(store.as_ref(), after, 3)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            let expected: Vec<u64> = (after + 1..=count.min(after + 3)).collect();
            assert_eq!(seqs, expected, "after {after}");
        }
        assert!(read_events(store.as_ref(), u64::MAX, 3).unwrap().is_empty());
        assert!(nothing_after(store.as_ref(), count).unwrap());
        assert!(!nothing_after(store.as_ref(), count - 1).unwrap());
    }

    #[test]
    fn only_a_readable_head_says_there_is_nothing_to_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        assert!(!nothing_after(store.as_ref(), 0).unwrap());
        let mut batch = Batch::new();
        batch.put(Table::Meta, HEAD_KEY, b"not a head".to_vec());
        store.commit(batch).unwrap().unwrap();
        assert!(!nothing_after(store.as_ref(), u64::MAX).unwrap());
    }

    #[test]
    fn records_written_one_event_each_before_groups_are_read_and_continued() {
        let dir = tempfile::tempdir().unwrap();
        let store = flaky(&dir);
        // Three events in format 0, as earlier versions stored them.
        let mut head = Head {
            seq: 0,
            hash: [0; 32],
        };
        let mut batch = Batch::new();
        for i in 1..=3u64 {
            let json = serde_json::to_vec(&event("Encrypt", &format!("old{i}"))).unwrap();
            let hash = chain_hash(&head.hash, i, &json);
            let mut bytes = i.to_be_bytes().to_vec();
            bytes.extend_from_slice(&head.hash);
            bytes.extend_from_slice(&hash);
            bytes.extend_from_slice(&json);
            batch.put(Table::Audit, &i.to_be_bytes(), bytes);
            head = Head { seq: i, hash };
        }
        batch.put(Table::Meta, HEAD_KEY, serde_json::to_vec(&head).unwrap());
        store.commit(batch).unwrap().unwrap();

        let log = start(&store);
        log.append(&event("Encrypt", "new1"), false).unwrap();
        log.append(&event("Encrypt", "new2"), true).unwrap();
        log.shutdown();
        let ids: Vec<String> = read_events(store.as_ref(), 0, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.event()["requestID"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["old1", "old2", "old3", "new1", "new2"]);
        assert_eq!(read_events(store.as_ref(), 2, 2).unwrap()[1].seq, 4);
        let report = super::super::verify::verify(store.as_ref(), None, None).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.events, 5);
    }

    fn two_events() -> [StoredEvent; 2] {
        let event = |seq| StoredEvent {
            seq,
            previous: [1; 32],
            hash: [2; 32],
            json: br#"{"eventName":"Encrypt","eventSource":"kms.amazonaws.com"}"#.to_vec(),
        };
        [event(7), event(8)]
    }

    #[test]
    fn a_compressed_record_cut_short_or_altered_is_unreadable() {
        let events = two_events();
        let record = StoredEvent::encode_record(&events);
        assert_eq!(record[0], RECORD_FORMAT_COMPRESSED);
        assert_eq!(StoredEvent::decode_record(&record).unwrap(), events);
        for cut in 1..record.len() {
            assert!(
                StoredEvent::decode_record(&record[..cut]).is_none(),
                "cut at {cut}"
            );
        }
        // A length claimed beyond any group, and one that is merely wrong.
        let mut huge = record.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(StoredEvent::decode_record(&huge).is_none());
        let mut wrong = record.clone();
        let claimed = u32::from_le_bytes(wrong[1..5].try_into().unwrap());
        wrong[1..5].copy_from_slice(&(claimed - 1).to_le_bytes());
        assert!(StoredEvent::decode_record(&wrong).is_none());
        // Whatever a flipped byte makes of it, the reader does not panic.
        for at in 1..record.len() {
            let mut flipped = record.clone();
            flipped[at] ^= 0x5a;
            let _ = StoredEvent::decode_record(&flipped);
        }
    }

    #[test]
    fn an_uncompressed_group_record_cut_short_is_unreadable_unless_cut_between_events() {
        let events = two_events();
        let mut record = vec![RECORD_FORMAT_GROUP];
        for event in &events {
            append_to_record(
                &mut record,
                event.seq,
                &event.previous,
                &event.hash,
                &event.json,
            );
        }
        assert_eq!(StoredEvent::decode_record(&record).unwrap(), events);
        let first_ends = 1 + PREFIX_LEN + 4 + events[0].json.len();
        for cut in 1..record.len() {
            assert!(
                StoredEvent::decode_record(&record[..cut])
                    .is_none_or(|read| read.len() == 1 && cut == first_ends),
                "cut at {cut}"
            );
        }
    }
}
