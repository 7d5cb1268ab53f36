//! [`SledStore`]: the [`MetadataStore`] on sled 0.34, one sled tree per [`Table`]. It
//! owns the mapping of batches onto sled multi-tree transactions, the flush before a
//! commit is acknowledged, and the translation of sled's errors; it never writes a
//! value that is not a checksummed envelope and never acknowledges an unflushed write.

use std::fs::{File, TryLockError};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Batch, Conflict, MetadataStore, Record, StoreError, Table, record};

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

    /// Runs the batch as one sled transaction over all tables (sled runs transactions
    /// one at a time anyway), so preconditions and writes see no other commit in
    /// between; every put gets the same fresh id from sled's monotonic, crash-safe
    /// generator, drawn inside the transaction so revisions only grow. Then flushes the
    /// database before returning.
    fn commit(&self, batch: Batch) -> Result<Result<(), Conflict>, StoreError> {
        if batch.is_empty() {
            return Ok(Ok(()));
        }
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
                        Conflict {
                            table: check.table,
                            key: check.key.clone(),
                            expected: check.expect,
                            found,
                        },
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
                        let record = Record {
                            payload: payload.clone(),
                            revision,
                        };
                        tree.insert(
                            &write.key[..],
                            record::encode(write.table, &write.key, &record),
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
            Ok(()) => {
                self.db.flush()?;
                Ok(Ok(()))
            }
            Err(TransactionError::Abort(Abort::Conflict(conflict))) => Ok(Err(conflict)),
            Err(TransactionError::Abort(Abort::Store(err))) => Err(err),
            Err(TransactionError::Storage(err)) => Err(err.into()),
        }
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

/// Maps a failed `sled::open`. sled reports a database held by another process only as
/// an I/O error with a formatted message, so on an I/O error this probes the lock sled
/// takes (an exclusive `flock` on `DIR/db`) and says `Locked` if it is held.
fn open_error(dir: &Path, err: sled::Error) -> StoreError {
    if matches!(err, sled::Error::Io(_)) && lock_is_held(&dir.join("db")) {
        return StoreError::Locked {
            dir: PathBuf::from(dir),
        };
    }
    err.into()
}

fn lock_is_held(db_file: &Path) -> bool {
    File::open(db_file).is_ok_and(|file| matches!(file.try_lock(), Err(TryLockError::WouldBlock)))
}
