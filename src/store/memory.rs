//! [`MemoryStore`]: the [`MetadataStore`] in process memory, for tests of the logic above
//! the store where the disk is not the point. It owns the exact semantics of the trait
//! (preconditions checked against the state before the batch, all-or-nothing writes,
//! store-wide growing revisions, prefix scans in key order) and nothing of durability:
//! everything is lost when it is dropped, so it must never back a real key store.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use super::{Batch, Conflict, MetadataStore, Record, StoreError, Table};

/// A metadata store held in memory; every commit is atomic and immediately visible.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

/// The tables and the last revision handed out.
#[derive(Default)]
struct State {
    /// One ordered map per table, indexed by `Table as usize`.
    tables: [BTreeMap<Vec<u8>, Record>; Table::ALL.len()],
    revision: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MetadataStore for MemoryStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StoreError> {
        Ok(self.state().tables[table as usize].get(key).cloned())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        Ok(self.state().tables[table as usize]
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect())
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        Ok(self.state().tables[table as usize].len() as u64)
    }

    /// Checks every precondition, then applies every write under one fresh revision, all
    /// under one lock, so no other commit or read sees half a batch.
    fn commit(&self, batch: Batch) -> Result<Result<(), Conflict>, StoreError> {
        if batch.is_empty() {
            return Ok(Ok(()));
        }
        let mut state = self.state();
        for check in &batch.checks {
            let found = state.tables[check.table as usize]
                .get(&check.key)
                .map(|record| record.revision);
            if !check.expect.holds(found) {
                return Ok(Err(Conflict {
                    table: check.table,
                    key: check.key.clone(),
                    expected: check.expect,
                    found,
                }));
            }
        }
        state.revision += 1;
        let revision = state.revision;
        for write in batch.writes {
            let table = &mut state.tables[write.table as usize];
            match write.payload {
                Some(payload) => {
                    table.insert(write.key, Record { payload, revision });
                }
                None => {
                    table.remove(&write.key);
                }
            }
        }
        Ok(Ok(()))
    }
}
