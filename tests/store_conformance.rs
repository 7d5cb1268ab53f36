//! The `MetadataStore` conformance suite, written once against `&dyn MetadataStore`
//! and run against every backend (`SledStore` on a real directory, `PostgresStore` on a
//! fresh database of the test cluster, and `MemoryStore`), followed by the sled-specific
//! tests (reopening, corruption on disk, locking, 100k records) and the PostgreSQL-specific
//! ones (two stores on one database, migrations, corruption, secrets in errors).
//!
//! The PostgreSQL cases skip, saying so, when `HSM_KMS_TEST_POSTGRES_URL` is not set;
//! `scripts/test.sh` always sets it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is a test failure"
)]

mod common;

use std::time::Instant;

use hsm_kms::store::{
    Batch, Conflict, MemoryStore, MetadataStore, PostgresStore, Precondition, Record, SledStore,
    StoreError, Table,
};

/// Backend-neutral cases: each gets a fresh, empty store.
mod suite {
    use super::*;
    use Precondition::*;

    fn put(store: &dyn MetadataStore, table: Table, key: &[u8], payload: &[u8]) {
        let mut batch = Batch::new();
        batch.put(table, key, payload.to_vec());
        store.commit(batch).unwrap().unwrap();
    }

    fn revision(store: &dyn MetadataStore, table: Table, key: &[u8]) -> u64 {
        store.get(table, key).unwrap().unwrap().revision
    }

    fn payload(store: &dyn MetadataStore, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        store.get(table, key).unwrap().map(|r| r.payload)
    }

    fn keys(page: &[(Vec<u8>, Record)]) -> Vec<&[u8]> {
        page.iter().map(|(k, _)| &k[..]).collect()
    }

    pub fn put_get_delete(store: &dyn MetadataStore) {
        assert_eq!(store.get(Table::Keys, b"k1").unwrap(), None);
        put(store, Table::Keys, b"k1", b"one");
        assert_eq!(payload(store, Table::Keys, b"k1").unwrap(), b"one");
        put(store, Table::Keys, b"k1", b"uno");
        assert_eq!(payload(store, Table::Keys, b"k1").unwrap(), b"uno");
        put(store, Table::Keys, b"empty", b"");
        assert_eq!(payload(store, Table::Keys, b"empty").unwrap(), b"");

        let mut batch = Batch::new();
        batch
            .delete(Table::Keys, b"k1")
            .delete(Table::Keys, b"never-there");
        store.commit(batch).unwrap().unwrap();
        assert_eq!(store.get(Table::Keys, b"k1").unwrap(), None);
        assert_eq!(store.count(Table::Keys).unwrap(), 1);
        store.commit(Batch::new()).unwrap().unwrap();
    }

    pub fn tables_are_independent(store: &dyn MetadataStore) {
        put(store, Table::Keys, b"same", b"key");
        put(store, Table::Aliases, b"same", b"alias");
        assert_eq!(payload(store, Table::Keys, b"same").unwrap(), b"key");
        assert_eq!(payload(store, Table::Aliases, b"same").unwrap(), b"alias");
        assert_eq!(store.get(Table::Intents, b"same").unwrap(), None);
        assert_eq!(store.get(Table::Meta, b"same").unwrap(), None);
        let counts: Vec<u64> = Table::ALL
            .iter()
            .map(|t| store.count(*t).unwrap())
            .collect();
        let expected: Vec<u64> = Table::ALL
            .iter()
            .map(|t| u64::from(matches!(t, Table::Keys | Table::Aliases)))
            .collect();
        assert_eq!(counts, expected);
    }

    pub fn revisions_grow_and_are_never_reused(store: &dyn MetadataStore) {
        put(store, Table::Keys, b"a", b"1");
        let first = revision(store, Table::Keys, b"a");
        put(store, Table::Keys, b"a", b"2");
        let second = revision(store, Table::Keys, b"a");
        assert!(second > first, "{second} > {first}");
        put(store, Table::Keys, b"b", b"1");
        let other = revision(store, Table::Keys, b"b");
        assert!(other > second, "{other} > {second}");

        let mut batch = Batch::new();
        batch.delete(Table::Keys, b"a");
        store.commit(batch).unwrap().unwrap();
        put(store, Table::Keys, b"a", b"again");
        let recreated = revision(store, Table::Keys, b"a");
        assert!(recreated > other, "{recreated} > {other}");

        let mut batch = Batch::new();
        batch
            .put(Table::Keys, b"x", vec![])
            .put(Table::Meta, b"y", vec![]);
        store.commit(batch).unwrap().unwrap();
        let x = revision(store, Table::Keys, b"x");
        assert_eq!(
            x,
            revision(store, Table::Meta, b"y"),
            "one revision per commit"
        );
        assert!(x > recreated);
    }

    pub fn expect_absent_keeps_names_unique(store: &dyn MetadataStore) {
        let mut create = Batch::new();
        create
            .expect(Table::Aliases, b"alias/app", ExpectAbsent)
            .put(Table::Aliases, b"alias/app", b"key-1".to_vec());
        store.commit(create).unwrap().unwrap();
        let taken = revision(store, Table::Aliases, b"alias/app");

        let mut again = Batch::new();
        again
            .expect(Table::Aliases, b"alias/app", ExpectAbsent)
            .put(Table::Aliases, b"alias/app", b"key-2".to_vec());
        let conflict = store.commit(again).unwrap().unwrap_err();
        assert_eq!(
            conflict,
            Conflict {
                table: Table::Aliases,
                key: b"alias/app".to_vec(),
                expected: ExpectAbsent,
                found: Some(taken),
            }
        );
        assert_eq!(
            payload(store, Table::Aliases, b"alias/app").unwrap(),
            b"key-1"
        );
        assert_eq!(revision(store, Table::Aliases, b"alias/app"), taken);
    }

    pub fn expect_revision_and_present(store: &dyn MetadataStore) {
        put(store, Table::Keys, b"k", b"v1");
        let read = revision(store, Table::Keys, b"k");

        let mut update = Batch::new();
        update.expect(Table::Keys, b"k", ExpectRevision(read)).put(
            Table::Keys,
            b"k",
            b"v2".to_vec(),
        );
        store.commit(update).unwrap().unwrap();
        let now = revision(store, Table::Keys, b"k");

        let mut stale = Batch::new();
        stale.expect(Table::Keys, b"k", ExpectRevision(read)).put(
            Table::Keys,
            b"k",
            b"lost update".to_vec(),
        );
        let conflict = store.commit(stale).unwrap().unwrap_err();
        assert_eq!(
            (conflict.expected, conflict.found),
            (ExpectRevision(read), Some(now))
        );
        assert_eq!(payload(store, Table::Keys, b"k").unwrap(), b"v2");

        let cases = [
            (b"k".as_slice(), ExpectPresent, None),
            (b"k".as_slice(), ExpectAbsent, Some(Some(now))),
            (b"gone".as_slice(), ExpectPresent, Some(None)),
            (b"gone".as_slice(), ExpectRevision(now), Some(None)),
        ];
        for (key, expect, conflict_found) in cases {
            let mut batch = Batch::new();
            batch.expect(Table::Keys, key, expect);
            let outcome = store.commit(batch).unwrap();
            assert_eq!(outcome.err().map(|c| c.found), conflict_found, "{expect:?}");
        }
    }

    pub fn preconditions_see_the_state_before_the_batch(store: &dyn MetadataStore) {
        let mut batch = Batch::new();
        batch
            .put(Table::Keys, b"k", b"v".to_vec())
            .expect(Table::Keys, b"k", ExpectAbsent)
            .put(Table::Meta, b"gone", b"v".to_vec())
            .delete(Table::Meta, b"gone");
        store.commit(batch).unwrap().unwrap();
        assert_eq!(payload(store, Table::Keys, b"k").unwrap(), b"v");
        assert_eq!(store.get(Table::Meta, b"gone").unwrap(), None);
    }

    pub fn a_conflict_applies_nothing_of_the_batch(store: &dyn MetadataStore) {
        put(store, Table::Aliases, b"alias/taken", b"key-0");
        put(store, Table::Meta, b"old", b"stays");
        let before: Vec<u64> = Table::ALL
            .iter()
            .map(|t| store.count(*t).unwrap())
            .collect();

        let mut batch = Batch::new();
        batch
            .put(Table::Keys, b"key-1", b"meta".to_vec())
            .put(Table::Intents, b"create/key-1", b"intent".to_vec())
            .put(Table::Aliases, b"alias/free", b"key-1".to_vec())
            .delete(Table::Meta, b"old")
            .put(Table::Aliases, b"alias/taken", b"key-1".to_vec())
            .expect(Table::Aliases, b"alias/free", ExpectAbsent)
            .expect(Table::Aliases, b"alias/taken", ExpectAbsent);
        let conflict = store.commit(batch).unwrap().unwrap_err();
        assert_eq!(conflict.key, b"alias/taken");

        let after: Vec<u64> = Table::ALL
            .iter()
            .map(|t| store.count(*t).unwrap())
            .collect();
        assert_eq!(after, before);
        assert_eq!(store.get(Table::Keys, b"key-1").unwrap(), None);
        assert_eq!(store.get(Table::Aliases, b"alias/free").unwrap(), None);
        assert_eq!(
            payload(store, Table::Aliases, b"alias/taken").unwrap(),
            b"key-0"
        );
        assert_eq!(payload(store, Table::Meta, b"old").unwrap(), b"stays");
    }

    pub fn a_batch_changes_several_tables_at_once(store: &dyn MetadataStore) {
        put(store, Table::Keys, b"key-1", b"meta");
        put(store, Table::Aliases, b"alias/a", b"key-1");
        put(store, Table::Aliases, b"alias/b", b"key-1");
        let key_revision = revision(store, Table::Keys, b"key-1");

        let mut delete_key = Batch::new();
        delete_key
            .expect(Table::Keys, b"key-1", ExpectRevision(key_revision))
            .delete(Table::Keys, b"key-1")
            .delete(Table::Aliases, b"alias/a")
            .delete(Table::Aliases, b"alias/b")
            .put(Table::Intents, b"destroyed/key-1", b"done".to_vec());
        store.commit(delete_key).unwrap().unwrap();
        assert_eq!(store.count(Table::Keys).unwrap(), 0);
        assert_eq!(store.count(Table::Aliases).unwrap(), 0);
        assert_eq!(
            payload(store, Table::Intents, b"destroyed/key-1").unwrap(),
            b"done"
        );
    }

    pub fn concurrent_writers_on_one_revision_exactly_one_wins(store: &dyn MetadataStore) {
        put(store, Table::Keys, b"k", b"v0");
        let read = revision(store, Table::Keys, b"k");
        let winners: usize = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..8u8)
                .map(|n| {
                    scope.spawn(move || {
                        let mut batch = Batch::new();
                        batch.expect(Table::Keys, b"k", ExpectRevision(read)).put(
                            Table::Keys,
                            b"k",
                            vec![n],
                        );
                        store.commit(batch).unwrap().is_ok()
                    })
                })
                .collect();
            writers
                .into_iter()
                .map(|w| usize::from(w.join().unwrap()))
                .sum()
        });
        assert_eq!(winners, 1);
        assert!(revision(store, Table::Keys, b"k") > read);
    }

    /// Read-modify-write increments of one counter from several threads, half of them
    /// changing only the counter and half changing another table in the same batch (on sled
    /// the first kind is a compare-and-swap, the second a transaction): every increment that
    /// committed is counted, and each thread sees the counter's revision only grow.
    pub fn read_modify_writes_of_one_key_lose_no_update(store: &dyn MetadataStore) {
        const THREADS: u8 = 6;
        const INCREMENTS: u64 = 25;
        put(store, Table::Keys, b"counter", &0u64.to_be_bytes());
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                scope.spawn(move || {
                    let mut last_seen = 0;
                    for _ in 0..INCREMENTS {
                        loop {
                            let record = store.get(Table::Keys, b"counter").unwrap().unwrap();
                            assert!(record.revision > last_seen, "a revision went back");
                            last_seen = record.revision;
                            let count = u64::from_be_bytes(record.payload.try_into().unwrap());
                            let mut batch = Batch::new();
                            batch.put_if(
                                Table::Keys,
                                b"counter",
                                ExpectRevision(record.revision),
                                (count + 1).to_be_bytes().to_vec(),
                            );
                            if thread % 2 == 1 {
                                batch.put(Table::Meta, &[thread], count.to_be_bytes().to_vec());
                            }
                            if store.commit(batch).unwrap().is_ok() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        let total = u64::from(THREADS) * INCREMENTS;
        assert_eq!(
            payload(store, Table::Keys, b"counter"),
            Some(total.to_be_bytes().to_vec())
        );
    }

    pub fn scan_pages_by_prefix_in_key_order(store: &dyn MetadataStore) {
        for key in [
            "alias/c", "alias/a", "alias/e", "alias0", "alias", "alias/d", "alias/b", "b",
        ] {
            put(store, Table::Aliases, key.as_bytes(), key.as_bytes());
        }
        put(store, Table::Keys, b"alias/zz", b"other table");

        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store
                .scan(Table::Aliases, b"alias/", after.as_deref(), 2)
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            for (key, record) in &page {
                assert_eq!(&record.payload, key);
                seen.push(String::from_utf8(key.clone()).unwrap());
            }
            after = page.last().map(|(key, _)| key.clone());
        }
        assert_eq!(
            seen,
            ["alias/a", "alias/b", "alias/c", "alias/d", "alias/e"]
        );

        let scan = |prefix: &[u8], after: Option<&[u8]>, limit| {
            store.scan(Table::Aliases, prefix, after, limit).unwrap()
        };
        assert_eq!(keys(&scan(b"alias/", Some(b"a"), 1)), [b"alias/a"]);
        assert_eq!(keys(&scan(b"alias/", Some(b"alias/bb"), 1)), [b"alias/c"]);
        assert_eq!(
            keys(&scan(b"alias/", Some(b"alias0"), 9)),
            Vec::<&[u8]>::new()
        );
        assert_eq!(keys(&scan(b"alias/", None, 0)), Vec::<&[u8]>::new());
        assert_eq!(keys(&scan(b"nothing", None, 9)), Vec::<&[u8]>::new());
        let everything = scan(b"", None, 100);
        let expected: [&[u8]; 8] = [
            b"alias", b"alias/a", b"alias/b", b"alias/c", b"alias/d", b"alias/e", b"alias0", b"b",
        ];
        assert_eq!(keys(&everything), expected);
    }
}

/// Declares one `#[test]` per conformance case, each on a fresh store from `$open`,
/// which returns the store and a guard that must outlive it, or `None` when the backend
/// is not available here (the test then passes without running, having said why).
macro_rules! conformance_tests {
    ($open:path) => {
        conformance_tests!(@cases $open;
            put_get_delete,
            tables_are_independent,
            revisions_grow_and_are_never_reused,
            expect_absent_keeps_names_unique,
            expect_revision_and_present,
            preconditions_see_the_state_before_the_batch,
            a_conflict_applies_nothing_of_the_batch,
            a_batch_changes_several_tables_at_once,
            concurrent_writers_on_one_revision_exactly_one_wins,
            read_modify_writes_of_one_key_lose_no_update,
            scan_pages_by_prefix_in_key_order,
        );
    };
    (@cases $open:path; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                let Some((store, _guard)) = $open() else { return };
                crate::suite::$case(&store);
            }
        )+
    };
}

mod memory_backend {
    use super::*;

    /// A fresh, empty `MemoryStore` (nothing to clean up).
    pub fn open() -> Option<(MemoryStore, ())> {
        Some((MemoryStore::new(), ()))
    }

    conformance_tests!(open);
}

mod sled_backend {
    use super::*;

    /// A fresh `SledStore` in its own temporary directory.
    pub fn open() -> Option<(SledStore, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        Some((SledStore::open(dir.path()).unwrap(), dir))
    }

    conformance_tests!(open);

    fn put(store: &SledStore, table: Table, key: &[u8], payload: &[u8]) {
        let mut batch = Batch::new();
        batch.put(table, key, payload.to_vec());
        store.commit(batch).unwrap().unwrap();
    }

    #[test]
    fn reopening_keeps_records_and_revisions_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        put(&store, Table::Keys, b"k", b"kept");
        put(&store, Table::Aliases, b"alias/k", b"k");
        let before = store.get(Table::Keys, b"k").unwrap().unwrap();
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.get(Table::Keys, b"k").unwrap().unwrap(), before);
        assert_eq!(store.count(Table::Aliases).unwrap(), 1);
        put(&store, Table::Meta, b"next", b"");
        let next = store.get(Table::Meta, b"next").unwrap().unwrap().revision;
        assert!(next > before.revision, "{next} > {}", before.revision);
    }

    #[test]
    fn a_flipped_byte_on_disk_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        put(&store, Table::Keys, b"key-1", b"Description: payroll");
        put(&store, Table::Keys, b"key-2", b"fine");
        drop(store);

        let raw = common::open_raw_sled(dir.path());
        let tree = raw.open_tree(Table::Keys.name()).unwrap();
        let mut value = tree.get(b"key-1").unwrap().unwrap().to_vec();
        value[14] ^= 0x01;
        tree.insert(b"key-1", value).unwrap();
        raw.flush().unwrap();
        drop((tree, raw));

        let store = SledStore::open(dir.path()).unwrap();
        let expect_corrupt = |err: StoreError| {
            let message = err.to_string();
            assert_eq!(
                message,
                "metadata store record keys/6b65792d31 is corrupt: checksum mismatch"
            );
            assert!(!message.contains("payroll"));
        };
        expect_corrupt(store.get(Table::Keys, b"key-1").unwrap_err());
        expect_corrupt(store.scan(Table::Keys, b"", None, 10).unwrap_err());
        let mut guarded = Batch::new();
        guarded
            .expect(Table::Keys, b"key-1", Precondition::ExpectPresent)
            .put(Table::Keys, b"key-2", b"changed".to_vec());
        expect_corrupt(store.commit(guarded).unwrap_err());

        let untouched = store.get(Table::Keys, b"key-2").unwrap().unwrap();
        assert_eq!(untouched.payload, b"fine");
        let after_it = store.scan(Table::Keys, b"", Some(b"key-1"), 10).unwrap();
        assert_eq!(after_it.len(), 1);
    }

    #[test]
    fn a_held_store_is_locked_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "metadata store {} is in use by another process",
                dir.path().display()
            )
        );
        drop(store);

        let raw = common::open_raw_sled(dir.path());
        let err = SledStore::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        drop(raw);

        SledStore::open(dir.path()).unwrap();
    }

    #[test]
    fn a_hundred_thousand_records_reopen_and_scan() {
        const RECORDS: usize = 100_000;
        const PAGE: usize = 1_000;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let started = Instant::now();
        for chunk in 0..RECORDS / PAGE {
            let mut batch = Batch::new();
            for n in chunk * PAGE..(chunk + 1) * PAGE {
                let key = format!("{n:08x}-0000-4000-8000-000000000000");
                let payload = format!(
                    r#"{{"KeyId":"{key}","KeyState":"Enabled","Description":"record {n}"}}"#
                );
                batch.put(Table::Keys, key.as_bytes(), payload.into_bytes());
            }
            store.commit(batch).unwrap().unwrap();
        }
        let write_time = started.elapsed();
        drop(store);

        let started = Instant::now();
        let store = SledStore::open(dir.path()).unwrap();
        let open_time = started.elapsed();

        let started = Instant::now();
        let count = store.count(Table::Keys).unwrap();
        let count_time = started.elapsed();

        let started = Instant::now();
        let mut scanned = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store
                .scan(Table::Keys, b"", after.as_deref(), PAGE)
                .unwrap();
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            scanned += page.len();
        }
        let scan_time = started.elapsed();

        assert_eq!(count, RECORDS as u64);
        assert_eq!(scanned, RECORDS);
        let rss = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM"))
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        println!(
            "{RECORDS} records: write in {PAGE}-record commits {write_time:?}, reopen {open_time:?}, \
             count {count_time:?}, scan (pages of {PAGE}) {scan_time:?}; peak {rss}"
        );
    }
}

mod postgres_backend {
    use std::sync::Barrier;

    use super::*;
    use common::postgres_db::TestDatabase;
    use secrecy::{ExposeSecret, SecretString};

    /// A `PostgresStore` on a fresh database of its own.
    pub fn open() -> Option<(PostgresStore, TestDatabase)> {
        let database = TestDatabase::create()?;
        Some((database.store(), database))
    }

    conformance_tests!(open);

    fn put(store: &dyn MetadataStore, table: Table, key: &[u8], payload: &[u8]) {
        let mut batch = Batch::new();
        batch.put(table, key, payload.to_vec());
        store.commit(batch).unwrap().unwrap();
    }

    #[test]
    fn two_stores_on_one_database_see_each_others_commits() {
        let Some(database) = TestDatabase::create() else {
            return;
        };
        let (a, b) = (database.store(), database.store());
        put(&a, Table::Keys, b"key-1", b"made on a");
        let on_b = b.get(Table::Keys, b"key-1").unwrap().unwrap();
        assert_eq!(on_b.payload, b"made on a");

        let mut update = Batch::new();
        update
            .expect(
                Table::Keys,
                b"key-1",
                Precondition::ExpectRevision(on_b.revision),
            )
            .put(Table::Keys, b"key-1", b"changed on b".to_vec());
        b.commit(update).unwrap().unwrap();
        let on_a = a.get(Table::Keys, b"key-1").unwrap().unwrap();
        assert_eq!(on_a.payload, b"changed on b");
        assert!(on_a.revision > on_b.revision);

        put(&b, Table::Meta, b"later", b"");
        let later = a.get(Table::Meta, b"later").unwrap().unwrap().revision;
        assert!(later > on_a.revision, "revisions grow across stores");
        assert_eq!(a.count(Table::Keys).unwrap(), 1);
        assert_eq!(
            a.scan(Table::Keys, b"", None, 10).unwrap(),
            b.scan(Table::Keys, b"", None, 10).unwrap()
        );
    }

    /// Eight writers, four on each of two stores, race for one alias name, twenty times
    /// over: each time exactly one batch applies and the others see it as a conflict.
    #[test]
    fn conflicting_batches_from_two_stores_have_exactly_one_winner() {
        let Some(database) = TestDatabase::create() else {
            return;
        };
        let stores = [database.store(), database.store()];
        for round in 0..20u8 {
            let alias = format!("alias/race-{round}");
            let start = Barrier::new(8);
            let outcomes: Vec<Result<(), Conflict>> = std::thread::scope(|scope| {
                let writers: Vec<_> = (0..8u8)
                    .map(|writer| {
                        let (store, alias, start) =
                            (&stores[usize::from(writer % 2)], &alias, &start);
                        scope.spawn(move || {
                            let mut batch = Batch::new();
                            batch
                                .expect(
                                    Table::Aliases,
                                    alias.as_bytes(),
                                    Precondition::ExpectAbsent,
                                )
                                .put(Table::Aliases, alias.as_bytes(), vec![writer])
                                .put(Table::Keys, &[b'k', round, writer], vec![writer]);
                            start.wait();
                            store.commit(batch).unwrap()
                        })
                    })
                    .collect();
                writers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            let winners: Vec<usize> = (0..8).filter(|n| outcomes[*n].is_ok()).collect();
            assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
            let winner = u8::try_from(winners[0]).unwrap();
            let stored = stores[1]
                .get(Table::Aliases, alias.as_bytes())
                .unwrap()
                .unwrap();
            assert_eq!(stored.payload, [winner]);
            for conflict in outcomes.iter().filter_map(|o| o.as_ref().err()) {
                assert_eq!(conflict.found, Some(stored.revision), "round {round}");
            }
            let made = stores[0]
                .scan(Table::Keys, &[b'k', round], None, 10)
                .unwrap();
            assert_eq!(made.len(), 1, "only the winner's other writes applied");
        }
    }

    #[test]
    fn migrations_apply_once_and_a_newer_schema_is_refused() {
        let Some(database) = TestDatabase::create() else {
            return;
        };
        let first = database.store();
        put(&first, Table::Keys, b"kept", b"1");
        drop(first);
        let again = database.store();
        assert_eq!(
            again.get(Table::Keys, b"kept").unwrap().unwrap().payload,
            b"1"
        );
        let mut client = database.client();
        let versions: Vec<i32> = client
            .query("SELECT version FROM schema_version ORDER BY version", &[])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let expected: Vec<i32> = (1..=PostgresStore::SCHEMA_VERSION).collect();
        assert_eq!(versions, expected);

        let future = PostgresStore::SCHEMA_VERSION + 1;
        client
            .execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&future],
            )
            .unwrap();
        let error = PostgresStore::connect(&database.url, 1).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "metadata store backend failed: the database's schema is at version {future}, \
                 newer than this build's version {}: upgrade hsm-kms",
                PostgresStore::SCHEMA_VERSION
            )
        );
    }

    #[test]
    fn a_flipped_byte_in_the_database_fails_closed() {
        let Some(database) = TestDatabase::create() else {
            return;
        };
        let store = database.store();
        put(&store, Table::Keys, b"key-1", b"Description: payroll");
        put(&store, Table::Keys, b"key-2", b"fine");
        database
            .client()
            .execute(
                "UPDATE records SET envelope = overlay(envelope placing '\\x00'::bytea from 15)
                 WHERE tbl = 'keys' AND key = 'key-1'::bytea",
                &[],
            )
            .unwrap();
        let expect_corrupt = |err: StoreError| {
            let message = err.to_string();
            assert_eq!(
                message,
                "metadata store record keys/6b65792d31 is corrupt: checksum mismatch"
            );
        };
        expect_corrupt(store.get(Table::Keys, b"key-1").unwrap_err());
        expect_corrupt(store.scan(Table::Keys, b"", None, 10).unwrap_err());
        let mut guarded = Batch::new();
        guarded
            .expect(Table::Keys, b"key-1", Precondition::ExpectPresent)
            .put(Table::Keys, b"key-2", b"changed".to_vec());
        expect_corrupt(store.commit(guarded).unwrap_err());
        assert_eq!(
            store.get(Table::Keys, b"key-2").unwrap().unwrap().payload,
            b"fine"
        );
    }

    #[test]
    fn a_wrong_password_fails_without_showing_the_url() {
        let Some(database) = TestDatabase::create() else {
            return;
        };
        let url = database.url.expose_secret();
        let (scheme_user, rest) = url
            .split_once(':')
            .and_then(|(scheme, rest)| {
                let (user, rest) = rest.trim_start_matches("//").split_once(':')?;
                Some((format!("{scheme}://{user}"), rest))
            })
            .unwrap();
        let (_, host_and_database) = rest.split_once('@').unwrap();
        let wrong = "wrong-password-4f1c";
        let url = SecretString::from(format!("{scheme_user}:{wrong}@{host_and_database}"));
        let error = PostgresStore::connect(&url, 1).err().unwrap().to_string();
        assert!(error.contains("password authentication failed"), "{error}");
        assert!(!error.contains(wrong), "{error}");
        assert!(!error.contains(host_and_database), "{error}");
    }

    /// hsm-kms does not speak TLS to PostgreSQL yet: a URL that demands it is refused,
    /// never downgraded to a connection in the clear.
    #[test]
    fn a_url_that_requires_tls_is_refused() {
        let Some(database) = TestDatabase::create() else {
            return;
        };
        let url = SecretString::from(format!("{}?sslmode=require", database.url.expose_secret()));
        let error = PostgresStore::connect(&url, 1).err().unwrap().to_string();
        assert!(error.contains("TLS"), "{error}");
    }
}
