//! [`PostgresStore`]: the [`MetadataStore`] on a PostgreSQL database that several hsm-kms
//! instances share. It owns the schema (versioned migrations applied when a store
//! connects), the mapping of a [`Batch`] onto one transaction, the store-wide revision
//! counter and the translation of driver errors. Like [`super::SledStore`] it stores only
//! checksummed envelopes and acknowledges a commit only once PostgreSQL has committed it;
//! it never logs or returns the connection URL (it holds a password) or payload bytes.
//!
//! # Driver
//!
//! The blocking `postgres` crate (the synchronous face of `tokio-postgres`) with an `r2d2`
//! pool: [`MetadataStore`] is synchronous and called from plain threads (and from the
//! server's handlers inside `block_in_place`), so an async driver would only add a runtime
//! to block on.
//!
//! # How a batch commits
//!
//! A batch is one READ COMMITTED transaction that first increments the single row of
//! `revision_counter` (`UPDATE ... RETURNING`). That row lock is held until the
//! transaction ends, so committing batches run one at a time across every instance, in
//! the order of their revisions:
//!
//! - the preconditions are read after the lock is granted, so they see every batch
//!   committed before and none after (an `ExpectAbsent` needs no row to lock, which is
//!   why row locks alone would not do);
//! - revisions grow in commit order, store-wide, and a rolled-back batch gives its
//!   number back;
//! - no batch can deadlock with another or fail serialisation (every writer takes the
//!   same lock first; readers take none), so nothing is retried: a precondition that does
//!   not hold is `Ok(Err(Conflict))`, anything else PostgreSQL reports is
//!   [`StoreError::Backend`], and a lost connection during `COMMIT` leaves the outcome
//!   unknown, exactly as the trait says.
//!
//! Statements are sent with their parameter types (`query_typed`), so each costs one
//! round trip, without a separate prepare.
//!
//! Reads (`get`, `scan`, `count`) take no lock and see the last committed state. The
//! price of the one lock is that commits do not run in parallel; sled's transactions
//! do not either, and the audit trail (the busiest writer) group-commits.

use std::collections::BTreeMap;
use std::time::Duration;

use postgres::NoTls;
use postgres::types::Type;
use r2d2_postgres::PostgresConnectionManager;
use secrecy::{ExposeSecret, SecretString};

use super::postgres_leader::Leadership;
use super::postgres_watch::{self, Watch};
use super::{Batch, ChangeListener, Conflict, MetadataStore, Record, StoreError, Table, record};

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// How long taking a connection from the pool (or opening the first ones) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Advisory lock key (`pg_advisory_xact_lock`) that serialises migrations of instances
/// starting together: "hsmkmsmg" as a big-endian integer.
const MIGRATION_LOCK: i64 = i64::from_be_bytes(*b"hsmkmsmg");

/// The schema, one step per version: step `n` (from 1) brings a database at version
/// `n - 1` to `n`. Steps are only ever appended; a released step never changes.
const MIGRATIONS: &[&str] = &[
    // 1: the records of every table, and the store-wide revision counter.
    "CREATE TABLE records (
         tbl text NOT NULL,
         key bytea NOT NULL,
         revision bigint NOT NULL,
         envelope bytea NOT NULL,
         PRIMARY KEY (tbl, key)
     );
     CREATE TABLE revision_counter (
         only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
         revision bigint NOT NULL
     );
     INSERT INTO revision_counter (revision) VALUES (0);",
];

/// A metadata store in a PostgreSQL database, shareable by several processes.
pub struct PostgresStore {
    pool: Pool,
    watch: Watch,
    leadership: Leadership,
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgresql://` URL or a key=value connection
    /// string) with up to `pool_size` connections, and brings its schema up to date.
    ///
    /// Fails closed on a database whose schema is newer than this build knows.
    pub fn connect(url: &SecretString, pool_size: u32) -> Result<Self, StoreError> {
        let mut config: postgres::Config = url.expose_secret().parse().map_err(backend)?;
        config.connect_timeout(CONNECT_TIMEOUT);
        // The first connection is made here rather than by the pool, so that a wrong
        // address or password fails at once and says why (the pool only retries until
        // its timeout).
        let mut first = config.connect(NoTls).map_err(backend)?;
        migrate(&mut first)?;
        let pool = r2d2::Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(CONNECT_TIMEOUT)
            .build_unchecked(PostgresConnectionManager::new(config.clone(), NoTls));
        Ok(PostgresStore {
            pool,
            watch: Watch::new(config.clone()),
            leadership: Leadership::new(config),
        })
    }

    /// The schema version this build writes and reads.
    pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

    fn connection(
        &self,
    ) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, StoreError> {
        self.pool.get().map_err(pool_error)
    }
}

/// Applies the missing migration steps in one transaction, under an advisory lock so
/// that instances starting together apply each step once.
fn migrate(client: &mut postgres::Client) -> Result<(), StoreError> {
    let mut transaction = client.transaction().map_err(backend)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(backend)?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(backend)?;
    let current: i32 = transaction
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .map_err(backend)?
        .get(0);
    if current > PostgresStore::SCHEMA_VERSION {
        return Err(StoreError::Backend(
            format!(
                "the database's schema is at version {current}, newer than this build's \
                 version {}: upgrade hsm-kms",
                PostgresStore::SCHEMA_VERSION
            )
            .into(),
        ));
    }
    for (version, step) in (1..).zip(MIGRATIONS).skip(current as usize) {
        transaction.batch_execute(step).map_err(backend)?;
        transaction
            .execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&version],
            )
            .map_err(backend)?;
        tracing::info!(version, "metadata store schema migrated");
    }
    transaction.commit().map_err(backend)
}

/// The smallest key greater than every key that starts with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A stored revision as the trait's `u64` (the column is a `bigint`; revisions start at 1).
fn revision_of(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

impl MetadataStore for PostgresStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let row = self
            .connection()?
            .query_typed_opt(
                "SELECT envelope FROM records WHERE tbl = $1 AND key = $2",
                &[(&table.name(), Type::TEXT), (&key, Type::BYTEA)],
            )
            .map_err(backend)?;
        match row {
            Some(row) => record::decode(table, key, row.get(0)).map(Some),
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
        if limit == 0 {
            return Ok(Vec::new());
        }
        let end = prefix_end(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .connection()?
            .query_typed(
                "SELECT key, envelope FROM records
                 WHERE tbl = $1 AND key >= $2
                   AND ($3::bytea IS NULL OR key > $3)
                   AND ($4::bytea IS NULL OR key < $4)
                 ORDER BY key LIMIT $5",
                &[
                    (&table.name(), Type::TEXT),
                    (&prefix, Type::BYTEA),
                    (&after, Type::BYTEA),
                    (&end, Type::BYTEA),
                    (&limit, Type::INT8),
                ],
            )
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let key: Vec<u8> = row.get(0);
                let record = record::decode(table, &key, row.get(1))?;
                Ok((key, record))
            })
            .collect()
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        let count: i64 = self
            .connection()?
            .query_typed_one(
                "SELECT count(*) FROM records WHERE tbl = $1",
                &[(&table.name(), Type::TEXT)],
            )
            .map_err(backend)?
            .get(0);
        Ok(revision_of(count))
    }

    /// One transaction: take the revision counter's lock (see the module documentation),
    /// read every checked key in one query, then delete and upsert the batch's final
    /// state of each written key (its last write wins, as when the writes apply in order).
    fn commit(&self, batch: Batch) -> Result<Result<(), Conflict>, StoreError> {
        if batch.is_empty() {
            return Ok(Ok(()));
        }
        let mut connection = self.connection()?;
        let mut transaction = connection.transaction().map_err(backend)?;
        let revision: i64 = transaction
            .query_typed_one(
                "UPDATE revision_counter SET revision = revision + 1 RETURNING revision",
                &[],
            )
            .map_err(backend)?
            .get(0);

        if !batch.checks.is_empty() {
            let tables: Vec<&str> = batch.checks.iter().map(|c| c.table.name()).collect();
            let keys: Vec<&[u8]> = batch.checks.iter().map(|c| c.key.as_slice()).collect();
            let rows = transaction
                .query_typed(
                    "SELECT r.tbl, r.key, r.envelope FROM records r
                     JOIN unnest($1::text[], $2::bytea[]) AS c(tbl, key)
                       ON r.tbl = c.tbl AND r.key = c.key",
                    &[(&tables, Type::TEXT_ARRAY), (&keys, Type::BYTEA_ARRAY)],
                )
                .map_err(backend)?;
            let mut found = BTreeMap::new();
            for row in &rows {
                let (name, key): (&str, Vec<u8>) = (row.get(0), row.get(1));
                found.insert((name.to_owned(), key), row.get::<_, Vec<u8>>(2));
            }
            for check in &batch.checks {
                let revision = match found.get(&(check.table.name().to_owned(), check.key.clone()))
                {
                    Some(envelope) => {
                        Some(record::decode(check.table, &check.key, envelope)?.revision)
                    }
                    None => None,
                };
                if !check.expect.holds(revision) {
                    // Dropping the transaction rolls it back.
                    return Ok(Err(Conflict {
                        table: check.table,
                        key: check.key.clone(),
                        expected: check.expect,
                        found: revision,
                    }));
                }
            }
        }

        let mut last_writes = BTreeMap::new();
        for write in &batch.writes {
            last_writes.insert((write.table, write.key.as_slice()), write.payload.as_ref());
        }
        let (mut put_tables, mut put_keys, mut put_envelopes) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut deleted_tables, mut deleted_keys) = (Vec::new(), Vec::new());
        let mut notifications = Vec::new();
        for ((table, key), payload) in last_writes {
            if table.is_watched() {
                notifications.push(postgres_watch::payload(table, key));
            }
            match payload {
                Some(payload) => {
                    put_tables.push(table.name());
                    put_keys.push(key);
                    put_envelopes.push(record::encode(table, key, revision_of(revision), payload));
                }
                None => {
                    deleted_tables.push(table.name());
                    deleted_keys.push(key);
                }
            }
        }
        if !deleted_keys.is_empty() {
            transaction
                .execute_typed(
                    "DELETE FROM records r USING unnest($1::text[], $2::bytea[]) AS d(tbl, key)
                     WHERE r.tbl = d.tbl AND r.key = d.key",
                    &[
                        (&deleted_tables, Type::TEXT_ARRAY),
                        (&deleted_keys, Type::BYTEA_ARRAY),
                    ],
                )
                .map_err(backend)?;
        }
        if !put_keys.is_empty() {
            transaction
                .execute_typed(
                    "INSERT INTO records (tbl, key, revision, envelope)
                     SELECT tbl, key, $3, envelope
                     FROM unnest($1::text[], $2::bytea[], $4::bytea[]) AS p(tbl, key, envelope)
                     ON CONFLICT (tbl, key)
                     DO UPDATE SET revision = excluded.revision, envelope = excluded.envelope",
                    &[
                        (&put_tables, Type::TEXT_ARRAY),
                        (&put_keys, Type::BYTEA_ARRAY),
                        (&revision, Type::INT8),
                        (&put_envelopes, Type::BYTEA_ARRAY),
                    ],
                )
                .map_err(backend)?;
        }
        if !notifications.is_empty() {
            transaction
                .execute_typed(
                    "SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n",
                    &[
                        (&postgres_watch::CHANNEL, Type::TEXT),
                        (&notifications, Type::TEXT_ARRAY),
                    ],
                )
                .map_err(backend)?;
        }
        transaction.commit().map_err(backend)?;
        Ok(Ok(()))
    }

    /// Starts (once) a thread on a connection of its own that `LISTEN`s for the changes
    /// every instance's commits announce (`postgres_watch.rs` says why a cache can trust
    /// it).
    fn watch(&self, listener: ChangeListener) -> Result<(), StoreError> {
        self.watch.add(listener).map_err(StoreError::Io)
    }

    fn caches_are_current(&self) -> bool {
        self.watch.caches_are_current()
    }

    /// Whether this instance holds the leader lock (see `postgres_leader.rs`).
    fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    fn is_shared(&self) -> bool {
        true
    }
}

/// A driver error as a [`StoreError`]. A server error keeps only its SQLSTATE and message:
/// its detail may quote a row, and rows hold payloads.
fn backend(error: postgres::Error) -> StoreError {
    StoreError::Backend(error_text(&error).into())
}

/// A driver error as text, the way [`backend`] words it.
pub(super) fn error_text(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("PostgreSQL error {}: {}", db.code().code(), db.message()),
        None => error_chain(error),
    }
}

/// An error and its sources, joined: the driver's own message is often only a category
/// ("db error", "error connecting to server") with the reason in its source.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn pool_error(error: r2d2::Error) -> StoreError {
    StoreError::Backend(format!("PostgreSQL connection pool: {error}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        let cases: [(&[u8], Option<&[u8]>); 5] = [
            (b"alias/", Some(b"alias0")),
            (b"a\xff", Some(b"b")),
            (b"\xff\xff", None),
            (b"", None),
            (b"k\x00", Some(b"k\x01")),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix).as_deref(), end, "{prefix:?}");
        }
    }
}
