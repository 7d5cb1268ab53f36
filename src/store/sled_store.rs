//! [`SledStore`]: the [`MetadataStore`] on sled 0.34, one sled tree per [`Table`]. It
//! owns the mapping of batches onto sled (a compare-and-swap of one key, or a transaction
//! over several), the flush before a commit is acknowledged, and the translation of sled's
//! errors; it never writes a value that is not a checksummed envelope and never
//! acknowledges an unflushed write.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Batch, Check, Conflict, MetadataStore, Record, StoreError, Table, Write, record};

/// A metadata store in a sled database directory, held exclusively by this process.
pub struct SledStore {
    db: sled::Db,
    /// One tree per table, indexed by `Table as usize`.
    trees: Vec<sled::Tree>,
}

/// How long opening waits for another process's lock to go away.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl SledStore {
    /// Opens (creating if needed) the store in `dir`; [`StoreError::Locked`] if another
    /// process holds it.
    ///
    /// sled releases its file lock a moment after the last handle of a closing process is
    /// dropped, so a held store is retried for up to a second before giving up.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let started = std::time::Instant::now();
        let db = loop {
            match sled::open(dir).map_err(|err| open_error(dir, err)) {
                Err(StoreError::Locked { .. }) if started.elapsed() < LOCK_GRACE => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        let trees = Table::ALL
            .iter()
            .map(|table| db.open_tree(table.name()))
            .collect::<Result<_, _>>()?;
        Ok(Self { db, trees })
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        &self.trees[table as usize]
    }

    /// Runs the batch as one sled transaction over all tables (sled runs transactions one
    /// at a time anyway), so preconditions and writes see no other commit in between; every
    /// put gets the same fresh id from sled's monotonic, crash-safe generator, drawn inside
    /// the transaction so revisions only grow.
    fn commit_transaction(&self, batch: &Batch) -> Result<Result<(), Conflict>, StoreError> {
        let outcome = self.trees.as_slice().transaction(|view| {
            for check in &batch.checks {
                let found = match view[check.table as usize].get(&check.key)? {
                    Some(bytes) => Some(
                        record::decode(check.table, &check.key, &bytes)
                            .map_err(|err| ConflictableTransactionError::Abort(Abort::Store(err)))?
                            .revision,
                    ),
                    None => None,
                };
                if !check.expect.holds(found) {
                    return Err(ConflictableTransactionError::Abort(Abort::Conflict(
                        conflict(check, found),
                    )));
                }
            }
            // The transactional `generate_id`: `Db::generate_id` would wait for the
            // global lock this transaction holds.
            let revision = view[0].generate_id()? + 1;
            for write in &batch.writes {
                let tree = &view[write.table as usize];
                match &write.payload {
                    Some(payload) => {
                        tree.insert(
                            &write.key[..],
                            record::encode(write.table, &write.key, revision, payload),
                        )?;
                    }
                    None => {
                        tree.remove(&write.key[..])?;
                    }
                }
            }
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(Ok(())),
            Err(TransactionError::Abort(Abort::Conflict(conflict))) => Ok(Err(conflict)),
            Err(TransactionError::Abort(Abort::Store(err))) => Err(err),
            Err(TransactionError::Storage(err)) => Err(err.into()),
        }
    }

    /// Applies `write`, the batch's only write, whose key every precondition is about: reads
    /// the key, checks the preconditions against it, and swaps in the new record only if
    /// the key still holds what was read, reading again otherwise. The revision is drawn
    /// after the read, so it is larger than the one it replaces, as in a transaction.
    fn commit_one_key(
        &self,
        batch: &Batch,
        write: &Write,
    ) -> Result<Result<(), Conflict>, StoreError> {
        let tree = self.tree(write.table);
        loop {
            let current = tree.get(&write.key)?;
            let found = match &current {
                Some(bytes) => Some(record::decode(write.table, &write.key, bytes)?.revision),
                None => None,
            };
            if let Some(check) = batch.checks.iter().find(|check| !check.expect.holds(found)) {
                return Ok(Err(conflict(check, found)));
            }
            let new = match &write.payload {
                Some(payload) => Some(record::encode(
                    write.table,
                    &write.key,
                    self.db.generate_id()? + 1,
                    payload,
                )),
                None => None,
            };
            if tree.compare_and_swap(&write.key, current, new)?.is_ok() {
                return Ok(Ok(()));
            }
        }
    }
}

/// Why a transaction stopped before committing.
enum Abort {
    Conflict(Conflict),
    Store(StoreError),
}

impl MetadataStore for SledStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StoreError> {
        match self.tree(table).get(key)? {
            Some(bytes) => record::decode(table, key, &bytes).map(Some),
            None => Ok(None),
        }
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
        let mut page = Vec::new();
        for entry in self
            .tree(table)
            .range::<&[u8], _>((start, Bound::Unbounded))
        {
            if page.len() == limit {
                break;
            }
            let (key, bytes) = entry?;
            if !key.starts_with(prefix) {
                break;
            }
            let record = record::decode(table, &key, &bytes)?;
            page.push((key.to_vec(), record));
        }
        Ok(page)
    }

    /// O(n) on sled: it walks the table's keys.
    fn count(&self, table: Table) -> Result<u64, StoreError> {
        let mut count = 0;
        for key in self.tree(table).iter().keys() {
            key?;
            count += 1;
        }
        Ok(count)
    }

    /// Applies the batch, then flushes the database before returning. A batch that writes
    /// one key and checks no other is a compare-and-swap of that key; any other runs as one
    /// sled transaction over all tables.
    ///
    /// The distinction is for the disk: sled starts every transaction by writing out its log
    /// buffer and then a buffer holding only the transaction's marker, each write waited for
    /// with its own sync, before the flush writes the transaction itself. A single key
    /// changes atomically without that marker, so its commit costs one sync, not three. A
    /// durable call's audit intent is such a batch.
    fn commit(&self, batch: Batch) -> Result<Result<(), Conflict>, StoreError> {
        if batch.is_empty() {
            return Ok(Ok(()));
        }
        let outcome = match one_key_write(&batch) {
            Some(write) => self.commit_one_key(&batch, write)?,
            None => self.commit_transaction(&batch)?,
        };
        if outcome.is_ok() {
            self.db.flush()?;
        }
        Ok(outcome)
    }
}

/// The only write of a batch that writes one key and has no precondition on another.
fn one_key_write(batch: &Batch) -> Option<&Write> {
    let [write] = batch.writes.as_slice() else {
        return None;
    };
    let same_key = |check: &Check| check.table == write.table && check.key == write.key;
    batch.checks.iter().all(same_key).then_some(write)
}

fn conflict(check: &Check, found: Option<u64>) -> Conflict {
    Conflict {
        table: check.table,
        key: check.key.clone(),
        expected: check.expect,
        found,
    }
}

impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        match err {
            sled::Error::Io(err) => StoreError::Io(err),
            other => StoreError::Backend(Box::new(other)),
        }
    }
}

/// Maps a failed `sled::open`. sled 0.34 reports a database held by another process
/// only as an I/O error whose message it formats itself ("could not acquire lock on …"),
/// so that message is what says `Locked`. Probing the lock afterwards would race: sled
/// may let go of it between its own attempt and the probe, and a held store would then
/// be reported as a plain I/O error and not retried.
fn open_error(dir: &Path, err: sled::Error) -> StoreError {
    match &err {
        sled::Error::Io(io) if io.to_string().starts_with(SLED_LOCK_FAILURE) => {
            StoreError::Locked {
                dir: PathBuf::from(dir),
            }
        }
        _ => err.into(),
    }
}

/// How sled 0.34 begins the message of a failed `flock` on its database file.
const SLED_LOCK_FAILURE: &str = "could not acquire lock on ";

#[cfg(test)]
mod tests {
    use super::*;

    /// sled's own error, taken while the store is held, says `Locked` also once the
    /// holder is gone: the classification does not depend on when it runs.
    #[test]
    fn a_lock_failure_is_locked_whenever_it_is_classified() {
        let dir = tempfile::tempdir().unwrap();
        let held = SledStore::open(dir.path()).unwrap();
        let err = sled::open(dir.path()).err().unwrap();
        drop(held);
        // The lock is gone once this process can take it itself.
        let db_file = std::fs::File::open(dir.path().join("db")).unwrap();
        let started = std::time::Instant::now();
        while db_file.try_lock().is_err() {
            assert!(started.elapsed() < LOCK_GRACE, "sled kept its lock");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(db_file);

        let classified = open_error(dir.path(), err);
        assert!(
            matches!(classified, StoreError::Locked { .. }),
            "{classified:?}"
        );
    }
}
