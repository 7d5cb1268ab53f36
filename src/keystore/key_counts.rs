//! Keys counted by state, kept current as key records are committed, so `/metrics` reads
//! them in constant time instead of decoding every key per scrape. The counts are taken
//! once when the key store opens and then follow every committed batch: a
//! [`MetadataStore`] wrapper sees each write to the keys table, whichever code path made it.
//! It counts only what this process commits (the server holds the store alone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::keys::state::KeyState;
use crate::store::{
    Batch, ChangeListener, Conflict, MetadataStore, Record, StoreError, Table, pages,
};

/// The number of keys in each state (all accounts and regions).
#[derive(Default)]
pub struct KeyCounts {
    /// Each key's state, so a write knows which count it leaves.
    states: HashMap<Vec<u8>, KeyState>,
    by_state: HashMap<KeyState, u64>,
}

impl KeyCounts {
    /// The number of keys in `state`.
    pub fn in_state(&self, state: KeyState) -> u64 {
        self.by_state.get(&state).copied().unwrap_or(0)
    }

    /// Records that the key stored under `key` is now in `state` (`None`: removed).
    fn set(&mut self, key: &[u8], state: Option<KeyState>) {
        let previous = match state {
            Some(state) => self.states.insert(key.to_vec(), state),
            None => self.states.remove(key),
        };
        if let Some(previous) = previous
            && let Some(count) = self.by_state.get_mut(&previous)
        {
            *count = count.saturating_sub(1);
        }
        if let Some(state) = state {
            *self.by_state.entry(state).or_default() += 1;
        }
    }
}

/// The only part of a key record the counts need.
#[derive(Deserialize)]
struct StateOnly {
    state: KeyState,
}

/// The state of a stored key record, if it decodes.
fn state_of(payload: &[u8]) -> Option<KeyState> {
    serde_json::from_slice::<StateOnly>(payload)
        .ok()
        .map(|record| record.state)
}

/// A [`MetadataStore`] that keeps [`KeyCounts`] current with every committed batch.
pub struct CountingStore {
    inner: Arc<dyn MetadataStore>,
    counts: Arc<Mutex<KeyCounts>>,
}

impl CountingStore {
    /// Counts the keys in `inner` (one scan) and wraps it.
    pub fn wrap(
        inner: Arc<dyn MetadataStore>,
    ) -> Result<(CountingStore, Arc<Mutex<KeyCounts>>), StoreError> {
        let mut counts = KeyCounts::default();
        for page in pages(inner.as_ref(), Table::Keys, b"") {
            for (key, record) in &page? {
                if let Some(state) = state_of(&record.payload) {
                    counts.set(key, Some(state));
                }
            }
        }
        let counts = Arc::new(Mutex::new(counts));
        Ok((
            CountingStore {
                inner,
                counts: counts.clone(),
            },
            counts,
        ))
    }
}

impl MetadataStore for CountingStore {
    fn watch(&self, listener: ChangeListener) -> Result<(), StoreError> {
        self.inner.watch(listener)
    }

    fn caches_are_current(&self) -> bool {
        self.inner.caches_are_current()
    }

    fn is_leader(&self) -> bool {
        self.inner.is_leader()
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StoreError> {
        self.inner.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        self.inner.scan(table, prefix, after, limit)
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        self.inner.count(table)
    }

    /// Commits; when the batch writes key records, the counts follow them. Each written key
    /// is read back after the commit, under the counts' lock: of concurrent commits to one
    /// key, the last to take the lock reads what the last to commit left, so the counts end
    /// where the store does, in whatever order the commits took the lock. The lock is not
    /// held across the commit itself, which would make key records' commits (and their
    /// flushes) wait for each other.
    fn commit(&self, batch: Batch) -> Result<Result<(), Conflict>, StoreError> {
        let written: Vec<Vec<u8>> = batch
            .writes()
            .filter(|(table, _, _)| *table == Table::Keys)
            .map(|(_, key, _)| key.to_vec())
            .collect();
        let outcome = self.inner.commit(batch);
        // A conflict applied nothing; after a store error the batch may have applied.
        if !written.is_empty() && !matches!(outcome, Ok(Err(_))) {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            for key in &written {
                if let Ok(found) = self.inner.get(Table::Keys, key) {
                    counts.set(key, found.and_then(|record| state_of(&record.payload)));
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::intercept::{Answer, Intercepted, Interceptor};

    #[test]
    fn a_key_moves_between_counts_and_leaves_them_when_removed() {
        let mut counts = KeyCounts::default();
        counts.set(b"k1", Some(KeyState::Enabled));
        counts.set(b"k2", Some(KeyState::Enabled));
        counts.set(b"k1", Some(KeyState::PendingDeletion));
        assert_eq!(counts.in_state(KeyState::Enabled), 1);
        assert_eq!(counts.in_state(KeyState::PendingDeletion), 1);
        counts.set(b"k1", None);
        counts.set(b"k3", None);
        assert_eq!(counts.in_state(KeyState::PendingDeletion), 0);
        assert_eq!(counts.in_state(KeyState::Enabled), 1);
    }

    /// Commits that return after a pause of 0 to 200 µs, so that commits made in one order
    /// reach the counts in another.
    #[derive(Default)]
    struct Unhurried {
        commits: std::sync::atomic::AtomicU64,
    }

    impl Interceptor for Unhurried {
        fn commit(&self, store: &dyn MetadataStore, batch: Batch) -> Answer {
            let outcome = store.commit(batch);
            let n = self
                .commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_micros(n * 37 % 5 * 50));
            outcome
        }
    }

    #[test]
    fn concurrent_commits_to_the_same_keys_leave_the_counts_where_the_store_is() {
        const THREADS: usize = 4;
        let inner: Arc<dyn MetadataStore> = Arc::new(Intercepted::new(
            crate::store::MemoryStore::new(),
            Unhurried::default(),
        ));
        let (store, counts) = CountingStore::wrap(inner.clone()).unwrap();
        let states = [
            KeyState::Enabled,
            KeyState::Disabled,
            KeyState::PendingDeletion,
        ];
        let barrier = std::sync::Barrier::new(THREADS);
        // Thread 0 compares after each round; a panic there would leave the others at the
        // barrier.
        let mismatches = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (store, inner, counts) = (&store, &inner, &counts);
                let (barrier, mismatches) = (&barrier, &mismatches);
                scope.spawn(move || {
                    for round in 0..50 {
                        // Every thread changes the same key at once: deletes it, or puts it
                        // in a state of its own.
                        let mut batch = Batch::new();
                        match (thread + round) % 4 {
                            3 => batch.delete(Table::Keys, b"k"),
                            which => batch.put(
                                Table::Keys,
                                b"k",
                                serde_json::to_vec(&serde_json::json!({ "state": states[which] }))
                                    .unwrap(),
                            ),
                        };
                        barrier.wait();
                        store.commit(batch).unwrap().unwrap();
                        barrier.wait();
                        if thread == 0 {
                            let (_, recounted) = CountingStore::wrap(inner.clone()).unwrap();
                            let recounted = recounted.lock().unwrap();
                            let counts = counts.lock().unwrap();
                            for state in states {
                                let (counted, there) =
                                    (counts.in_state(state), recounted.in_state(state));
                                if counted != there {
                                    mismatches.lock().unwrap().push(format!(
                                        "round {round}: {counted} {state:?} counted, {there} there"
                                    ));
                                }
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(mismatches.into_inner().unwrap(), Vec::<String>::new());
    }
}
