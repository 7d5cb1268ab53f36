//! [`Intercepted`]: a metadata store whose operations a test stands around, to make them fail,
//! pause, wait at a gate or be counted (fault injection and race tests). An [`Interceptor`]
//! says only what it changes; every other operation goes straight to the store. Like the
//! crash points of `crate::fault`, this exists in tests and with the `fault-injection` cargo
//! feature only.

use super::{Batch, ChangeListener, Conflict, MetadataStore, Record, StoreError, Table};

/// What a commit answers: applied, refused by a precondition, or failed.
pub type Answer = Result<Result<(), Conflict>, StoreError>;

/// Stands around a store's operations. Each method is given the store and does the operation
/// through it, or answers in its place; the defaults do the operation unchanged.
pub trait Interceptor: Send + Sync {
    /// Around [`MetadataStore::get`].
    fn get(
        &self,
        store: &dyn MetadataStore,
        table: Table,
        key: &[u8],
    ) -> Result<Option<Record>, StoreError> {
        store.get(table, key)
    }

    /// Around [`MetadataStore::scan`].
    fn scan(
        &self,
        store: &dyn MetadataStore,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        store.scan(table, prefix, after, limit)
    }

    /// Around [`MetadataStore::commit`].
    fn commit(&self, store: &dyn MetadataStore, batch: Batch) -> Answer {
        store.commit(batch)
    }

    /// What [`MetadataStore::is_shared`] says: the store's own answer unless overridden.
    fn is_shared(&self, store: &dyn MetadataStore) -> bool {
        store.is_shared()
    }
}

/// A hook shown each batch before it is committed: `Some` answers in the store's place
/// (nothing is applied), `None` lets the batch through.
pub struct BeforeCommit<F>(pub F);

impl<F> Interceptor for BeforeCommit<F>
where
    F: Fn(&Batch) -> Option<Answer> + Send + Sync,
{
    fn commit(&self, store: &dyn MetadataStore, batch: Batch) -> Answer {
        match (self.0)(&batch) {
            Some(answer) => answer,
            None => store.commit(batch),
        }
    }
}

/// `store` with `interceptor` standing around its operations.
pub struct Intercepted<S, I> {
    store: S,
    interceptor: I,
}

impl<S: MetadataStore, I: Interceptor> Intercepted<S, I> {
    /// `store`, its operations going through `interceptor`.
    pub fn new(store: S, interceptor: I) -> Self {
        Intercepted { store, interceptor }
    }

    /// The interceptor, for the test to steer or read.
    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }
}

impl<S: MetadataStore, I: Interceptor> MetadataStore for Intercepted<S, I> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StoreError> {
        self.interceptor.get(&self.store, table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        self.interceptor
            .scan(&self.store, table, prefix, after, limit)
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        self.store.count(table)
    }

    fn commit(&self, batch: Batch) -> Answer {
        self.interceptor.commit(&self.store, batch)
    }

    fn watch(&self, listener: ChangeListener) -> Result<(), StoreError> {
        self.store.watch(listener)
    }

    fn caches_are_current(&self) -> bool {
        self.store.caches_are_current()
    }

    fn is_leader(&self) -> bool {
        self.store.is_leader()
    }

    fn is_shared(&self) -> bool {
        self.interceptor.is_shared(&self.store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_hook_answers_in_the_stores_place_and_lets_the_rest_through() {
        let store = Intercepted::new(
            MemoryStore::new(),
            BeforeCommit(|batch: &Batch| {
                batch
                    .writes()
                    .any(|(table, _, _)| table == Table::Grants)
                    .then(|| Err(StoreError::Io(std::io::Error::other("injected"))))
            }),
        );
        let mut refused = Batch::new();
        refused
            .put(Table::Keys, b"k", b"with a grant".to_vec())
            .put(Table::Grants, b"g", b"grant".to_vec());
        assert!(store.commit(refused).is_err());
        assert_eq!(store.get(Table::Keys, b"k").unwrap(), None);

        let mut passed = Batch::new();
        passed.put(Table::Keys, b"k", b"alone".to_vec());
        store.commit(passed).unwrap().unwrap();
        let record = store.get(Table::Keys, b"k").unwrap().unwrap();
        assert_eq!(record.payload, b"alone");
        assert_eq!(store.count(Table::Keys).unwrap(), 1);
    }
}
