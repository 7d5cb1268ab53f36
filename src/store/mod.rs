//! The metadata store: named tables of byte keys to opaque records, changed only in
//! atomic, flushed batches guarded by per-key preconditions. It owns durability and
//! integrity (every record is wrapped in a versioned, checksummed envelope that fails
//! closed) and nothing else: it never interprets payloads, and it must never be handed
//! key material, plaintext or PINs, because everything it is given ends up on disk.
//!
//! [`MetadataStore`] is backend-neutral; [`SledStore`] is the embedded sled implementation,
//! `PostgresStore` (cargo feature `postgres`) the one several instances share, and [`MemoryStore`]
//! an in-memory one for tests. [`open`] opens the one the configuration's `[store]` section names.

pub mod copy;
#[cfg(any(test, feature = "fault-injection"))]
pub mod intercept;
mod memory;
mod pages;
#[cfg(feature = "postgres")]
mod postgres_leader;
#[cfg(feature = "postgres")]
mod postgres_store;
#[cfg(feature = "postgres")]
mod postgres_watch;
mod record;
pub mod settings;
mod sled_store;

use std::fmt;
use std::path::PathBuf;

pub use memory::MemoryStore;
pub use pages::{PAGE, Pages, pages};
#[cfg(feature = "postgres")]
pub use postgres_store::PostgresStore;
pub use settings::{DEFAULT_POOL_SIZE, StoreSettings, open};
pub use sled_store::SledStore;

/// A named table: a map from byte keys to [`Record`]s, ordered by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Key metadata, one record per key id.
    Keys,
    /// Alias name to key id.
    Aliases,
    /// Pending HSM-plus-metadata changes, recorded before the HSM is touched.
    Intents,
    /// Store-wide settings and markers (e.g. alarm delivery cursors).
    Meta,
    /// The audit trail: events by sequence number, hash-chained.
    Audit,
    /// MACed checkpoints of the audit trail, by sequence number.
    AuditCheckpoints,
    /// Custom key stores by id (their passwords only sealed inside the HSMs).
    CustomKeyStores,
    /// Grants, by key id and grant id.
    Grants,
    /// Ready material pool objects, by cluster and `CKA_ID`.
    MaterialPool,
    /// The grants that name a retiring principal, by Region, principal and grant: the
    /// index ListRetirableGrants reads (empty payloads).
    RetiringGrants,
    /// Grants by key, grantee principal and grant: the index through which a call reads
    /// the grants that may allow it (empty payloads).
    GranteeGrants,
    /// Aliases by account, Region, target key and name: the index through which a key's
    /// aliases are read (empty payloads).
    KeyAliases,
}

impl Table {
    /// The table whose [`Table::name`] is `name`.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.name() == name)
    }

    /// Whether [`MetadataStore::watch`] reports changes to this table (records that
    /// something may cache; not the append-only audit trail or the meta table's markers).
    pub fn is_watched(self) -> bool {
        !matches!(
            self,
            Table::Audit
                | Table::AuditCheckpoints
                | Table::Meta
                | Table::RetiringGrants
                | Table::GranteeGrants
                | Table::KeyAliases
        )
    }

    /// Every table, in declaration order.
    pub const ALL: [Table; 12] = [
        Table::Keys,
        Table::Aliases,
        Table::Intents,
        Table::Meta,
        Table::Audit,
        Table::AuditCheckpoints,
        Table::CustomKeyStores,
        Table::Grants,
        Table::MaterialPool,
        Table::RetiringGrants,
        Table::GranteeGrants,
        Table::KeyAliases,
    ];

    /// The table's stable on-disk name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Keys => "keys",
            Table::Aliases => "aliases",
            Table::Intents => "intents",
            Table::Meta => "meta",
            Table::Audit => "audit",
            Table::AuditCheckpoints => "audit-checkpoints",
            Table::CustomKeyStores => "custom-key-stores",
            Table::Grants => "grants",
            Table::MaterialPool => "material-pool",
            Table::RetiringGrants => "retiring-grants",
            Table::GranteeGrants => "grantee-grants",
            Table::KeyAliases => "key-aliases",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stored value: the caller's payload and the revision of the commit that last wrote it.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// Opaque bytes, serialised by the caller.
    pub payload: Vec<u8>,
    /// Store-wide, strictly increasing: a later put of any record gets a greater
    /// revision, so a deleted and re-created record never repeats an old one.
    pub revision: u64,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("revision", &self.revision)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// What a [`Batch`] requires of one key before any of its writes apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The key holds no record (e.g. a new alias name).
    ExpectAbsent,
    /// The key holds a record, whatever its revision.
    ExpectPresent,
    /// The key holds a record with exactly this revision (optimistic concurrency).
    ExpectRevision(u64),
}

impl Precondition {
    /// Whether the precondition holds for a key whose current revision is `found`.
    fn holds(self, found: Option<u64>) -> bool {
        match self {
            Precondition::ExpectAbsent => found.is_none(),
            Precondition::ExpectPresent => found.is_some(),
            Precondition::ExpectRevision(revision) => found == Some(revision),
        }
    }
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precondition::ExpectAbsent => f.write_str("absent"),
            Precondition::ExpectPresent => f.write_str("present"),
            Precondition::ExpectRevision(revision) => write!(f, "revision {revision}"),
        }
    }
}

/// A write to one key: a new payload, or `None` to delete.
struct Write {
    table: Table,
    key: Vec<u8>,
    payload: Option<Vec<u8>>,
}

/// One precondition on one key.
struct Check {
    table: Table,
    key: Vec<u8>,
    expect: Precondition,
}

/// An atomic change across tables: every precondition is checked against the state
/// before the batch, then all writes apply in order, or nothing does.
#[derive(Default)]
pub struct Batch {
    checks: Vec<Check>,
    writes: Vec<Write>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `expect` of `table`/`key` for the batch to apply.
    pub fn expect(&mut self, table: Table, key: &[u8], expect: Precondition) -> &mut Self {
        let key = key.to_vec();
        self.checks.push(Check { table, key, expect });
        self
    }

    /// Stores `payload` under `table`/`key`, with a new revision.
    pub fn put(&mut self, table: Table, key: &[u8], payload: Vec<u8>) -> &mut Self {
        let (key, payload) = (key.to_vec(), Some(payload));
        self.writes.push(Write {
            table,
            key,
            payload,
        });
        self
    }

    /// Stores `payload` under `table`/`key` only if `expect` holds of that key when the batch
    /// commits: [`Batch::expect`] and [`Batch::put`] of the same key in one call.
    pub fn put_if(
        &mut self,
        table: Table,
        key: &[u8],
        expect: Precondition,
        payload: Vec<u8>,
    ) -> &mut Self {
        self.expect(table, key, expect).put(table, key, payload)
    }

    /// Removes `table`/`key`; removing an absent key is not an error.
    pub fn delete(&mut self, table: Table, key: &[u8]) -> &mut Self {
        let (key, payload) = (key.to_vec(), None);
        self.writes.push(Write {
            table,
            key,
            payload,
        });
        self
    }

    /// The batch's writes in order: table, key and new payload (`None` removes the key).
    pub fn writes(&self) -> impl Iterator<Item = (Table, &[u8], Option<&[u8]>)> {
        self.writes
            .iter()
            .map(|write| (write.table, write.key.as_slice(), write.payload.as_deref()))
    }

    /// Whether the batch has neither preconditions nor writes.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty() && self.writes.is_empty()
    }
}

/// A precondition of a [`Batch`] that did not hold; nothing of the batch was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{table}/{} was expected {expected} but is {}", hex::encode(key), found_text(*found))]
pub struct Conflict {
    /// The table of the key that failed its precondition.
    pub table: Table,
    /// The key that failed its precondition.
    pub key: Vec<u8>,
    /// What the batch required.
    pub expected: Precondition,
    /// The key's current revision, `None` if absent.
    pub found: Option<u64>,
}

fn found_text(found: Option<u64>) -> String {
    match found {
        Some(revision) => format!("at revision {revision}"),
        None => "absent".to_owned(),
    }
}

/// The store could not do its job. Messages name tables and keys, never payload bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the store open.
    #[error("metadata store {} is in use by another process", dir.display())]
    Locked {
        /// The store's directory.
        dir: PathBuf,
    },
    /// A stored record failed its checksum or has an unknown format.
    #[error("metadata store record {table}/{key} is corrupt: {reason}")]
    Corrupt {
        /// The record's table.
        table: Table,
        /// The record's key, hex-encoded.
        key: String,
        /// What did not match.
        reason: String,
    },
    /// Reading or writing the store's files failed.
    #[error("metadata store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration does not say how to reach the store.
    #[error("metadata store configuration: {0}")]
    Config(String),
    /// The storage engine failed in some other way.
    #[error("metadata store backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A record that may have changed under a cache: told to the listener of
/// [`MetadataStore::watch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// The record under `table`/`key` was written (put or deleted) by some commit.
    Record {
        /// The record's table.
        table: Table,
        /// The record's key.
        key: &'a [u8],
    },
    /// Changes may have gone unseen (the watch started or reconnected): forget everything.
    Everything,
}

/// A callback for [`MetadataStore::watch`]; called from the store's own thread.
pub type ChangeListener = std::sync::Arc<dyn Fn(Change<'_>) + Send + Sync>;

/// Durable, atomic storage of metadata records, shared by all threads of a process.
///
/// A store that other processes write too (`PostgresStore`) says so to caches above it
/// through [`MetadataStore::watch`] and [`MetadataStore::caches_are_current`]; the defaults
/// fit a store only this process writes, whose every change its caches see at commit.
pub trait MetadataStore: Send + Sync {
    /// The record under `table`/`key`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StoreError>;

    /// Up to `limit` records of `table` whose keys start with `prefix` and sort after
    /// `after` (when given), in key order: pass the last key seen to read the next page.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError>;

    /// The number of records in `table`, without decoding them.
    fn count(&self, table: Table) -> Result<u64, StoreError>;

    /// Applies `batch` atomically and durably: `Ok(Ok(()))` only once it is on disk,
    /// `Ok(Err(conflict))` when a precondition failed and nothing was written. After an
    /// `Err`, the batch may or may not have been applied: read back before retrying.
    fn commit(&self, batch: Batch) -> Result<Result<(), Conflict>, StoreError>;

    /// Calls `listener` for records committed by other processes (and possibly this one),
    /// from now on, until the store is dropped. Only the keys, aliases, grants, intents and
    /// custom key store tables are watched; the audit tables and the meta table are not.
    fn watch(&self, listener: ChangeListener) -> Result<(), StoreError> {
        let _ = listener;
        Ok(())
    }

    /// Whether a cache kept current by [`MetadataStore::watch`] may be served now: false
    /// while changes by other processes may be going unseen (the watch's connection is
    /// down or late). Cheap: called on every cached read.
    fn caches_are_current(&self) -> bool {
        true
    }

    /// Whether this process should run the background work that must run once among
    /// all processes sharing the store (due deletions, rotations). A store only this
    /// process writes always says yes.
    fn is_leader(&self) -> bool {
        true
    }

    /// Whether other processes may write this store too (several instances on one
    /// database), so that state kept in this process's memory alone can be out of date.
    fn is_shared(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_hold_exactly_when_expected() {
        use Precondition::*;
        let cases = [
            (ExpectAbsent, None, true),
            (ExpectAbsent, Some(3), false),
            (ExpectPresent, None, false),
            (ExpectPresent, Some(3), true),
            (ExpectRevision(3), Some(3), true),
            (ExpectRevision(3), Some(4), false),
            (ExpectRevision(3), None, false),
        ];
        for (expect, found, holds) in cases {
            assert_eq!(expect.holds(found), holds, "{expect:?} with {found:?}");
        }
    }

    #[test]
    fn table_names_are_distinct_and_all_is_in_discriminant_order() {
        for (index, table) in Table::ALL.iter().enumerate() {
            assert_eq!(*table as usize, index);
            let same_name = Table::ALL.iter().filter(|t| t.name() == table.name());
            assert_eq!(same_name.count(), 1);
            assert_eq!(Table::from_name(table.name()), Some(*table));
        }
    }

    #[test]
    fn conflict_names_table_key_and_states() {
        let conflict = Conflict {
            table: Table::Aliases,
            key: b"al".to_vec(),
            expected: Precondition::ExpectAbsent,
            found: Some(7),
        };
        assert_eq!(
            conflict.to_string(),
            "aliases/616c was expected absent but is at revision 7"
        );
    }

    #[test]
    fn record_debug_hides_payload() {
        let record = Record {
            payload: b"secret-ish".to_vec(),
            revision: 2,
        };
        let debug = format!("{record:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("payload_len: 10"), "{debug}");
    }
}
