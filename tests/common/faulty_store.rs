//! A sled store whose commits a test may answer in its place, to make the metadata store fail
//! or refuse one kind of write (fault injection): reads go straight through, and each batch
//! is shown to the test's hook before it is committed.

use std::path::Path;

use hsm_kms::store::{Batch, Conflict, MetadataStore, Record, SledStore, StoreError, Table};

/// What a commit answers: applied, refused by a precondition, or failed.
pub type Answer = Result<Result<(), Conflict>, StoreError>;

/// Sees each batch before it is committed; `Some` answers in the store's place (nothing is
/// applied), `None` lets the batch through.
pub type CommitHook = Box<dyn Fn(&Batch) -> Option<Answer> + Send + Sync>;

/// A [`SledStore`] with a [`CommitHook`].
pub struct FaultyStore {
    inner: SledStore,
    hook: CommitHook,
}

impl FaultyStore {
    /// The sled store in `dir`, its commits shown to `hook` first.
    pub fn open(
        dir: &Path,
        hook: impl Fn(&Batch) -> Option<Answer> + Send + Sync + 'static,
    ) -> FaultyStore {
        FaultyStore {
            inner: SledStore::open(dir).unwrap(),
            hook: Box::new(hook),
        }
    }
}

impl MetadataStore for FaultyStore {
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

    fn commit(&self, batch: Batch) -> Answer {
        match (self.hook)(&batch) {
            Some(answer) => answer,
            None => self.inner.commit(batch),
        }
    }
}
