//! The alarm dispatcher: one thread per alarm reads the audit trail after that alarm's
//! persisted cursor (`alarm-cursor/<name>` in the meta table), evaluates each event, delivers
//! a notification when the alarm fires, and moves the cursor past the event only once every
//! action of the alarm has succeeded. Delivery is therefore at least once: a crash or a
//! failing action leaves the cursor before the event, and it is delivered again after a
//! restart or a retry. Failed attempts are retried with exponential backoff and reported
//! through `tracing`.
//!
//! The key store never waits for it: committed events only wake the threads (which also poll
//! every [`POLL`]), and actions run on the alarm's own thread, bounded by their timeouts.
//! A thread woken by new events reads them after [`GATHER`], so that the groups committed
//! meanwhile are read in one pass: under load the trail commits hundreds of groups a second,
//! and threads woken for each took turns on the cores with the calls being recorded.
//! Alarms that keep up read and parse each event once between them, only the top-level
//! fields their patterns select, and only events whose JSON holds the text some alarm's
//! pattern requires ([`FilterPattern::required_text`](super::filter::FilterPattern::required_text):
//! the built-in alarms parse DisableKey and failed calls, not every Encrypt). A cursor that
//! passed only events that fired nothing is saved at most every second (after a crash those
//! events are evaluated again, which delivers nothing twice because every delivery saves the
//! cursor at once).
//! At shutdown each thread makes one last pass over the events already committed, with one
//! attempt per notification; whatever is left is delivered at the next start.
//!
//! On a metadata store several instances share, only the leader's threads deliver (see
//! [`MetadataStore::is_leader`]); the others wait. A thread that becomes leader first
//! rereads its cursor, as the last leader saved it, so the hand-over keeps the promise:
//! the cursor is never saved past an undelivered notification, so the new leader
//! delivers anything the old one had not.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::alarm::{Alarm, AlarmCursor, parse_fields};
use super::delivery::{DeliveryError, deliver};
use super::filter::RequiredText;
use super::log::{nothing_after, read_events, read_head};
use crate::store::{Batch, MetadataStore, StoreError, Table};

/// Meta-table key prefix of the alarms' cursors.
pub const CURSOR_PREFIX: &str = "alarm-cursor/";
/// Longest an idle alarm thread sleeps before looking at the trail again.
pub const POLL: Duration = Duration::from_millis(200);
/// How long a thread woken by new events waits for more before reading them: an alarm
/// fires this much later at most, and a busy trail wakes each thread at most twice in this
/// time (the announcement, then the end of the wait) instead of once per commit.
pub const GATHER: Duration = Duration::from_millis(50);
/// Pause before the first retry of a failed delivery; it doubles up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest pause between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// Events read per step.
const PAGE: usize = 256;
/// Parsed events kept for the other alarms.
const PARSED_KEPT: usize = 4 * PAGE;
/// Longest a cursor that moved over events that fired nothing waits to be saved.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Reads an alarm's persisted cursor.
pub fn read_cursor(
    store: &dyn MetadataStore,
    name: &str,
) -> Result<Option<AlarmCursor>, StoreError> {
    match store.get(Table::Meta, cursor_key(name).as_bytes())? {
        Some(record) => serde_json::from_slice(&record.payload)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                table: Table::Meta,
                key: cursor_key(name),
                reason: e.to_string(),
            }),
        None => Ok(None),
    }
}

fn cursor_key(name: &str) -> String {
    format!("{CURSOR_PREFIX}{name}")
}

/// Running alarm threads; stopped (after a last pass) by [`AlarmDispatcher::shutdown`] or
/// on drop.
pub struct AlarmDispatcher {
    signal: Arc<Signal>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Wakes the alarm threads: new events, or time to stop.
struct Signal {
    state: Mutex<SignalState>,
    changed: Condvar,
}

#[derive(Default)]
struct SignalState {
    generation: u64,
    stopping: bool,
    /// Threads waiting for new events: a commit wakes nobody while none is.
    watching: usize,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, SignalState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Waits until new events are announced (since `seen`), stopping begins, or `timeout`
    /// passes; with `events` false, only stopping ends the wait early.
    fn wait(&self, seen: &mut u64, timeout: Duration, events: bool) {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        if events {
            state.watching += 1;
        }
        loop {
            if state.stopping || (events && state.generation != *seen) {
                break;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if events {
            state.watching -= 1;
        }
        *seen = state.generation;
    }

    /// Announces newly committed events, waking the threads that wait for them.
    fn announce(&self) {
        let mut state = self.lock();
        state.generation += 1;
        if state.watching > 0 {
            self.changed.notify_all();
        }
    }

    /// Waits for new events (or [`POLL`]); when events came, then [`GATHER`] more, in which
    /// only stopping wakes it.
    fn wait_for_events(&self, seen: &mut u64) {
        let before = *seen;
        self.wait(seen, POLL, true);
        if *seen != before {
            self.wait(seen, GATHER, false);
        }
    }
}

impl AlarmDispatcher {
    /// Starts one thread per alarm. An alarm seen for the first time starts at the current
    /// end of the trail; cursors of alarms no longer configured are forgotten, so an alarm
    /// turned off and on again does not replay what happened meanwhile.
    pub fn start(
        store: Arc<dyn MetadataStore>,
        alarms: Vec<Alarm>,
    ) -> Result<AlarmDispatcher, StoreError> {
        let head = read_head(store.as_ref())?.seq;
        let mut batch = Batch::new();
        for (key, _) in store.scan(Table::Meta, CURSOR_PREFIX.as_bytes(), None, usize::MAX)? {
            let name = String::from_utf8_lossy(&key[CURSOR_PREFIX.len()..]).into_owned();
            if !alarms.iter().any(|alarm| alarm.name == name) {
                tracing::info!(alarm = %name, "alarm no longer configured; its cursor is forgotten");
                batch.delete(Table::Meta, &key);
            }
        }
        let mut workers = Vec::new();
        let events = Arc::new(Events {
            fields: alarms.iter().flat_map(Alarm::fields).collect(),
            required: alarms
                .iter()
                .map(|alarm| alarm.pattern.required_text())
                .collect(),
            recent: Mutex::new(BTreeMap::new()),
        });
        let signal = Arc::new(Signal {
            state: Mutex::new(SignalState::default()),
            changed: Condvar::new(),
        });
        for alarm in alarms {
            let cursor = match read_cursor(store.as_ref(), &alarm.name)? {
                Some(cursor) => cursor,
                None => {
                    let cursor = AlarmCursor {
                        seq: head,
                        window: Default::default(),
                    };
                    batch.put(
                        Table::Meta,
                        cursor_key(&alarm.name).as_bytes(),
                        encode(&cursor)?,
                    );
                    cursor
                }
            };
            workers.push(Worker {
                alarm,
                store: store.clone(),
                signal: signal.clone(),
                events: events.clone(),
                saved: cursor.clone(),
                cursor,
                saved_at: Instant::now(),
                following: false,
            });
        }
        if let Err(conflict) = store.commit(batch)? {
            return Err(StoreError::Backend(conflict.to_string().into()));
        }
        let mut threads = Vec::new();
        let dispatcher = AlarmDispatcher {
            signal,
            threads: Mutex::new(Vec::new()),
        };
        for worker in workers {
            let spawned = std::thread::Builder::new()
                .name(format!("alarm-{}", worker.alarm.name))
                .spawn(move || worker.run());
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    *dispatcher.threads.lock().unwrap_or_else(|p| p.into_inner()) = threads;
                    dispatcher.shutdown();
                    return Err(StoreError::Io(error));
                }
            }
        }
        *dispatcher.threads.lock().unwrap_or_else(|p| p.into_inner()) = threads;
        Ok(dispatcher)
    }

    /// A callback announcing newly committed events; it holds the dispatcher weakly.
    pub fn notifier(&self) -> Arc<dyn Fn() + Send + Sync> {
        let signal: Weak<Signal> = Arc::downgrade(&self.signal);
        Arc::new(move || {
            if let Some(signal) = signal.upgrade() {
                signal.announce();
            }
        })
    }

    /// Lets every thread make its last pass over committed events, then stops them.
    pub fn shutdown(&self) {
        self.signal.lock().stopping = true;
        self.signal.changed.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("an alarm thread panicked");
            }
        }
    }
}

impl Drop for AlarmDispatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn encode(cursor: &AlarmCursor) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(cursor).map_err(|e| StoreError::Backend(Box::new(e)))
}

/// A notification that is not yet delivered by every action.
struct Pending {
    notification: Vec<u8>,
    parsed: Value,
    /// Which actions have succeeded already.
    done: Vec<bool>,
    /// The cursor once it is delivered.
    after: AlarmCursor,
    attempts: u32,
}

/// What one step over the trail found.
enum Step {
    /// No event after the cursor.
    Idle,
    /// Evaluated a page of events; none fired.
    Advanced,
    /// The alarm fired.
    Fired(Box<Pending>),
}

/// One event as the alarms see it.
struct Parsed {
    /// Only the top-level fields some alarm can look at (see [`parse_fields`]); `None` when
    /// the event's JSON lacks text every alarm's pattern requires, so none can match it.
    fields: Option<Value>,
    /// The whole event's JSON, parsed in full only when an alarm fires.
    json: Vec<u8>,
}

/// Recently parsed events, shared by the alarm threads: alarms that keep up with the trail
/// parse each event once between them, and only the fields they look at.
struct Events {
    fields: BTreeSet<String>,
    /// The text each alarm's pattern requires of a matching event's JSON; `None` if some
    /// alarm's requires none, so every event is parsed.
    required: Option<Vec<RequiredText>>,
    recent: Mutex<BTreeMap<u64, Arc<Parsed>>>,
}

impl Events {
    /// Up to [`PAGE`] events after `after`, parsed; read from the store only when the next
    /// event is not among the recent ones.
    fn after(
        &self,
        store: &dyn MetadataStore,
        after: u64,
    ) -> Result<Vec<(u64, Arc<Parsed>)>, StoreError> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let cached: Vec<(u64, Arc<Parsed>)> = recent
            .range(after + 1..)
            .zip(after + 1..)
            .take_while(|((seq, _), expected)| *seq == expected)
            .take(PAGE)
            .map(|((seq, parsed), _)| (*seq, parsed.clone()))
            .collect();
        if !cached.is_empty() {
            return Ok(cached);
        }
        // Most looks find nothing new (every commit wakes every alarm): the chain head says so
        // without reading back through the records.
        if nothing_after(store, after)? {
            return Ok(Vec::new());
        }
        let page = read_events(store, after, PAGE)?;
        let events = page
            .into_iter()
            .map(|stored| {
                let parsed = Arc::new(Parsed {
                    fields: self
                        .may_match(&stored.json)
                        .then(|| parse_fields(&stored.json, &self.fields)),
                    json: stored.json,
                });
                recent.insert(stored.seq, parsed.clone());
                (stored.seq, parsed)
            })
            .collect();
        while recent.len() > PARSED_KEPT {
            recent.pop_first();
        }
        Ok(events)
    }

    /// Whether some alarm's pattern may match the event `json`: most events (Encrypt, Decrypt…)
    /// lack the names the patterns compare with, and are then never parsed.
    fn may_match(&self, json: &[u8]) -> bool {
        self.required
            .as_ref()
            .is_none_or(|required| RequiredText::any_admits(required, json))
    }
}

/// One alarm's thread.
struct Worker {
    alarm: Alarm,
    store: Arc<dyn MetadataStore>,
    signal: Arc<Signal>,
    events: Arc<Events>,
    /// How far evaluation has got (never past an undelivered notification).
    cursor: AlarmCursor,
    /// The cursor as last persisted.
    saved: AlarmCursor,
    saved_at: Instant,
    /// Another instance led (and may have moved the cursor) since this one last delivered.
    following: bool,
}

impl Worker {
    fn run(mut self) {
        let mut seen = 0;
        let mut pending: Option<Box<Pending>> = None;
        let mut retry = FIRST_RETRY;
        loop {
            let stopping = self.signal.stopping();
            if let Some(notification) = pending.as_mut() {
                match self.attempt(notification) {
                    Ok(()) => {
                        pending = None;
                        retry = FIRST_RETRY;
                        continue;
                    }
                    Err(error) => {
                        if stopping {
                            tracing::warn!(alarm = %self.alarm.name, %error, "alarm not delivered before shutdown; it will be at the next start");
                            return;
                        }
                        tracing::warn!(
                            alarm = %self.alarm.name,
                            attempt = notification.attempts,
                            retry_in_ms = retry.as_millis() as u64,
                            %error,
                            "alarm delivery failed; will retry"
                        );
                        self.signal.wait(&mut seen, retry, false);
                        retry = (retry * 2).min(MAX_RETRY);
                        continue;
                    }
                }
            }
            if !self.store.is_leader() {
                if stopping {
                    return;
                }
                self.following = true;
                self.signal.wait_for_events(&mut seen);
                continue;
            }
            if self.following {
                match read_cursor(self.store.as_ref(), &self.alarm.name) {
                    Ok(Some(cursor)) => {
                        self.saved = cursor.clone();
                        self.cursor = cursor;
                        self.following = false;
                    }
                    Ok(None) => self.following = false,
                    Err(error) => {
                        tracing::warn!(alarm = %self.alarm.name, %error, "alarm cannot read its cursor after taking the lead; will retry");
                        self.signal.wait(&mut seen, retry, false);
                        continue;
                    }
                }
            }
            let outcome = self.step().and_then(|step| {
                if !matches!(step, Step::Fired(_)) {
                    self.save(stopping || self.saved_at.elapsed() >= SAVE_INTERVAL)?;
                }
                Ok(step)
            });
            match outcome {
                Ok(Step::Fired(fired)) => pending = Some(fired),
                Ok(Step::Advanced) => retry = FIRST_RETRY,
                Ok(Step::Idle) if stopping => return,
                Ok(Step::Idle) => self.signal.wait_for_events(&mut seen),
                Err(error) => {
                    tracing::warn!(alarm = %self.alarm.name, %error, "alarm cannot read the audit trail or save its cursor; will retry");
                    if stopping {
                        return;
                    }
                    self.signal.wait(&mut seen, retry, false);
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Evaluates the events after the cursor until one fires or the page ends.
    fn step(&mut self) -> Result<Step, StoreError> {
        let events = self.events.after(self.store.as_ref(), self.cursor.seq)?;
        if events.is_empty() {
            return Ok(Step::Idle);
        }
        for (seq, event) in &events {
            let Some(fields) = &event.fields else {
                // No alarm can match it: passed over as a match that failed would be.
                self.cursor.seq = *seq;
                continue;
            };
            let mut after = self.cursor.clone();
            if let Some(count) = self.alarm.evaluate(&mut after, *seq, fields) {
                let whole = serde_json::from_slice(&event.json).unwrap_or(Value::Null);
                let parsed = self.alarm.notification(*seq, count, whole);
                let notification =
                    serde_json::to_vec(&parsed).map_err(|e| StoreError::Backend(Box::new(e)))?;
                return Ok(Step::Fired(Box::new(Pending {
                    notification,
                    parsed,
                    done: vec![false; self.alarm.actions.len()],
                    after,
                    attempts: 0,
                })));
            }
            self.cursor = after;
        }
        Ok(Step::Advanced)
    }

    /// Runs every action not yet done; on success moves the cursor past the notification.
    fn attempt(&mut self, pending: &mut Pending) -> Result<(), AttemptError> {
        pending.attempts += 1;
        let mut failures = Vec::new();
        for (action, done) in self.alarm.actions.iter().zip(pending.done.iter_mut()) {
            if *done {
                continue;
            }
            match deliver(
                &self.alarm.name,
                action,
                &pending.notification,
                &pending.parsed,
            ) {
                Ok(()) => *done = true,
                Err(error) => failures.push((action.describe(), error)),
            }
        }
        if !failures.is_empty() {
            return Err(AttemptError::Undelivered(failures));
        }
        if pending.attempts > 1 {
            tracing::info!(alarm = %self.alarm.name, attempts = pending.attempts, "alarm delivered after retries");
        }
        self.cursor = pending.after.clone();
        self.save(true).map_err(AttemptError::CursorNotSaved)
    }

    /// Persists the cursor if it moved and `now` (else it waits for [`SAVE_INTERVAL`]: a
    /// cursor saved late only means re-evaluating, never re-delivering, after a crash, since
    /// every delivery saves it at once).
    fn save(&mut self, now: bool) -> Result<(), StoreError> {
        if !now || self.cursor == self.saved {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.put(
            Table::Meta,
            cursor_key(&self.alarm.name).as_bytes(),
            encode(&self.cursor)?,
        );
        if let Err(conflict) = self.store.commit(batch)? {
            return Err(StoreError::Backend(conflict.to_string().into()));
        }
        self.saved = self.cursor.clone();
        self.saved_at = Instant::now();
        Ok(())
    }
}

/// Why an attempt to deliver a notification did not finish: the dispatcher retries it.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    /// These actions (described, with why each failed) are not done; the others are and are
    /// not repeated.
    #[error("{}", undelivered(.0))]
    Undelivered(Vec<(String, DeliveryError)>),
    /// Every action is done, but the cursor could not be saved past the notification.
    #[error("delivered, but the cursor was not saved (it will be delivered again): {0}")]
    CursorNotSaved(StoreError),
}

fn undelivered(failures: &[(String, DeliveryError)]) -> String {
    let described: Vec<String> = failures
        .iter()
        .map(|(action, error)| format!("{action}: {error}"))
        .collect();
    described.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::alarm::Action;
    use crate::audit::filter::FilterPattern;
    use crate::audit::log::{AuditLog, AuditSettings};
    use crate::clock::SystemClock;
    use crate::store::SledStore;
    use serde_json::json;

    fn alarm(name: &str, actions: Vec<Action>) -> Alarm {
        Alarm {
            name: name.into(),
            pattern: FilterPattern::parse(r#"{$.eventName = "DisableKey"}"#).unwrap(),
            threshold: 1,
            period: Duration::from_secs(60),
            actions,
        }
    }

    fn event(name: &str) -> Value {
        json!({ "eventName": name, "eventTime": "2024-01-01T00:00:00Z" })
    }

    fn lines(path: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
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
    fn delivers_matches_after_the_cursor_and_persists_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetadataStore> =
            Arc::new(SledStore::open(dir.path().join("db")).unwrap());
        let log = AuditLog::start(
            store.clone(),
            None,
            AuditSettings::default(),
            Arc::new(SystemClock),
        )
        .unwrap();
        // Before the alarm exists: not delivered.
        log.append(&event("DisableKey"), true).unwrap();
        let out = dir.path().join("alarms.jsonl");
        let dispatcher = AlarmDispatcher::start(
            store.clone(),
            vec![alarm("a", vec![Action::File { path: out.clone() }])],
        )
        .unwrap();
        log.on_commit(dispatcher.notifier());
        assert_eq!(read_cursor(store.as_ref(), "a").unwrap().unwrap().seq, 1);
        log.append(&event("CreateKey"), true).unwrap();
        log.append(&event("DisableKey"), false).unwrap();
        wait_for("delivery", || lines(&out).len() == 1);
        let delivered = &lines(&out)[0];
        assert_eq!(delivered["alarmName"], "a");
        assert_eq!(delivered["sequenceNumber"], 3);
        assert_eq!(delivered["event"]["eventName"], "DisableKey");
        wait_for("cursor", || {
            read_cursor(store.as_ref(), "a").unwrap().unwrap().seq == 3
        });
        dispatcher.shutdown();

        // An alarm no longer configured loses its cursor.
        let other =
            AlarmDispatcher::start(store.clone(), vec![alarm("b", vec![Action::Log])]).unwrap();
        assert!(read_cursor(store.as_ref(), "a").unwrap().is_none());
        other.shutdown();
    }

    #[test]
    fn failed_actions_are_retried_and_the_cursor_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetadataStore> =
            Arc::new(SledStore::open(dir.path().join("db")).unwrap());
        let log = AuditLog::start(
            store.clone(),
            None,
            AuditSettings::default(),
            Arc::new(SystemClock),
        )
        .unwrap();
        let out = dir.path().join("good.jsonl");
        let marker = dir.path().join("marker");
        let flaky = Action::Command {
            argv: vec!["test".into(), "-e".into(), marker.display().to_string()],
            timeout: Duration::from_secs(5),
        };
        let dispatcher = AlarmDispatcher::start(
            store.clone(),
            vec![alarm("a", vec![Action::File { path: out.clone() }, flaky])],
        )
        .unwrap();
        log.on_commit(dispatcher.notifier());
        log.append(&event("DisableKey"), true).unwrap();
        // The file action succeeds once; the command keeps failing; the cursor stays.
        wait_for("file action", || lines(&out).len() == 1);
        std::thread::sleep(FIRST_RETRY * 3);
        assert_eq!(read_cursor(store.as_ref(), "a").unwrap().unwrap().seq, 0);
        assert_eq!(
            lines(&out).len(),
            1,
            "a succeeded action is not repeated on retry"
        );
        std::fs::write(&marker, b"").unwrap();
        wait_for("retry", || {
            read_cursor(store.as_ref(), "a").unwrap().unwrap().seq == 1
        });
        dispatcher.shutdown();
    }

    #[test]
    fn shutdown_makes_a_last_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetadataStore> =
            Arc::new(SledStore::open(dir.path().join("db")).unwrap());
        let log = AuditLog::start(
            store.clone(),
            None,
            AuditSettings::default(),
            Arc::new(SystemClock),
        )
        .unwrap();
        let out = dir.path().join("alarms.jsonl");
        let dispatcher = AlarmDispatcher::start(
            store.clone(),
            vec![alarm("a", vec![Action::File { path: out.clone() }])],
        )
        .unwrap();
        // No notifier: only the poll or the last pass can see these.
        for _ in 0..3 {
            log.append(&event("DisableKey"), false).unwrap();
        }
        log.shutdown();
        dispatcher.shutdown();
        assert_eq!(lines(&out).len(), 3);
        assert_eq!(read_cursor(store.as_ref(), "a").unwrap().unwrap().seq, 3);
    }

    #[test]
    fn a_woken_thread_gathers_the_commits_that_follow_before_it_reads() {
        let signal = Arc::new(Signal {
            state: Mutex::new(SignalState::default()),
            changed: Condvar::new(),
        });
        let waiter = {
            let signal = signal.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                let start = Instant::now();
                signal.wait_for_events(&mut seen);
                (seen, start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        signal.announce();
        std::thread::sleep(Duration::from_millis(10));
        signal.announce();
        let (seen, waited) = waiter.join().unwrap();
        assert_eq!(seen, 2, "the second commit is read in the same pass");
        assert!(
            waited >= GATHER,
            "read after {waited:?}, before the gathering ended"
        );
        assert_eq!(signal.lock().watching, 0);
    }
}
