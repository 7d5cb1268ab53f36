//! Races in the key store, on a real two-member SoftHSM2 cluster and sled on disk: calls
//! that interleave at the worst moment (held there by a store wrapper that stops one named
//! thread at one store call), and many threads of mixed calls whose acknowledged effects are
//! checked at the end. Every test stops by itself: a held thread is released when its gate
//! is dropped, and waits are bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::kms::*;
use common::{TestCluster, TestStore};
use hsm_kms::clock::ManualClock;
use hsm_kms::keystore::api::*;
use hsm_kms::keystore::{Caller, KeyStore};
use hsm_kms::store::{Batch, Conflict, MetadataStore, Record, SledStore, StoreError, Table};

/// Longest wait for a thread to reach a gate or finish a call before the test gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// A store call a [`GatedStore`] can hold a thread at.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    /// Right after a `get` of this table returned from the store.
    Get(Table),
    /// Right after a `scan` of this table returned from the store.
    Scan(Table),
    /// Right after any commit (it is already applied).
    Commit,
}

/// A thread waiting at a gate, and the way to let it go.
struct Gate {
    reached: Receiver<()>,
    release: Option<SyncSender<()>>,
}

impl Gate {
    /// Waits until the gated thread stands at the gate.
    #[track_caller]
    fn wait_reached(&self) {
        self.reached
            .recv_timeout(PATIENCE)
            .expect("the gated thread never reached its gate");
    }

    /// Lets the gated thread go on.
    fn release(mut self) {
        self.release.take();
    }
}

/// The armed gate inside the store: which thread, which step, and its two signals.
struct Armed {
    thread: String,
    step: Step,
    reached: SyncSender<()>,
    release: Receiver<()>,
}

/// A [`SledStore`] that holds one named thread at one step, once, for fault injection.
struct GatedStore {
    inner: SledStore,
    armed: Arc<Mutex<Option<Armed>>>,
}

/// The test's handle to arm the store's gate.
#[derive(Clone)]
struct Gates(Arc<Mutex<Option<Armed>>>);

impl Gates {
    /// Holds the thread named `thread` the next time it passes `step`.
    fn arm(&self, thread: &str, step: Step) -> Gate {
        let (reached_tx, reached) = mpsc::sync_channel(1);
        let (release_tx, release) = mpsc::sync_channel(1);
        *self.0.lock().unwrap() = Some(Armed {
            thread: thread.to_owned(),
            step,
            reached: reached_tx,
            release,
        });
        Gate {
            reached,
            release: Some(release_tx),
        }
    }
}

impl GatedStore {
    fn pass(&self, step: Step) {
        let name = std::thread::current().name().map(str::to_owned);
        let armed = {
            let mut armed = self.armed.lock().unwrap();
            match armed.as_ref() {
                Some(a) if a.step == step && name.as_deref() == Some(a.thread.as_str()) => {
                    armed.take()
                }
                _ => None,
            }
        };
        if let Some(armed) = armed {
            armed.reached.send(()).ok();
            // Released by `Gate::release` or by the gate being dropped.
            armed.release.recv().ok();
        }
    }
}

impl MetadataStore for GatedStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let found = self.inner.get(table, key);
        self.pass(Step::Get(table));
        found
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        let page = self.inner.scan(table, prefix, after, limit);
        self.pass(Step::Scan(table));
        page
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        self.inner.count(table)
    }

    fn commit(&self, batch: Batch) -> Result<Result<(), Conflict>, StoreError> {
        let outcome = self.inner.commit(batch);
        self.pass(Step::Commit);
        outcome
    }
}

/// A key store over a fresh two-member cluster whose sled store is gated.
fn gated_store() -> (Arc<TestStore>, Gates) {
    let cluster = TestCluster::new(2);
    let config = cluster.config();
    let hsms = hsm_kms::cluster::Cluster::init("local", config.default_cluster().unwrap()).unwrap();
    let armed = Arc::new(Mutex::new(None));
    let metadata = GatedStore {
        inner: SledStore::open(&config.service.data_dir).unwrap(),
        armed: armed.clone(),
    };
    let scope =
        hsm_kms::ids::Scope::new(&config.service.region, &config.service.account_id).unwrap();
    let clock = Arc::new(ManualClock::new());
    let store =
        KeyStore::with_parts(scope, hsms, Box::new(metadata), clock.clone(), config.audit).unwrap();
    let caller = Caller::local(store.scope());
    let ts = TestStore {
        cluster,
        clock,
        store,
        caller,
    };
    (Arc::new(ts), Gates(armed))
}

/// Runs `call` on a thread named `name`.
fn on_thread<T: Send + 'static>(
    name: &str,
    call: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(call)
        .unwrap()
}

fn schedule_deletion(ts: &TestStore, key: &str) {
    ts.store
        .schedule_key_deletion(
            &ts.caller,
            ScheduleKeyDeletionRequest {
                key_id: key.into(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
}

/// The number of members holding material `version` of `key`.
fn copies(ts: &TestStore, key: &str, version: u32) -> usize {
    let material = hsm_kms::cluster::MaterialId::new(key.to_owned(), version).cka_id();
    ts.store
        .cluster()
        .key_objects()
        .into_iter()
        .filter(|(_, objects)| objects.as_ref().unwrap().iter().any(|o| o.id == material))
        .count()
}

const EIGHT_DAYS: Duration = Duration::from_secs(8 * 24 * 3600);

/// Defect: maintenance decided from a snapshot taken before a CancelKeyDeletion and destroyed
/// the key although the cancellation had returned OK.
#[test]
fn a_cancelled_deletion_never_destroys_the_key() {
    let (ts, gates) = gated_store();
    let key = create(&ts).key_id;
    let blob = encrypt(&ts, &key, b"keep me", &[]).unwrap().ciphertext_blob;
    schedule_deletion(&ts, &key);
    ts.clock.advance(EIGHT_DAYS);

    let gate = gates.arm("maintenance", Step::Scan(Table::Keys));
    let maintenance = on_thread("maintenance", {
        let ts = ts.clone();
        move || ts.store.run_maintenance()
    });
    gate.wait_reached();
    ts.store
        .cancel_key_deletion(&ts.caller, key_id(&key))
        .unwrap();
    gate.release();
    let report = maintenance.join().unwrap().unwrap();

    assert!(report.deleted.is_empty(), "{report:?}");
    assert_eq!(describe(&ts, &key).key_state, "Disabled");
    assert_eq!(copies(&ts, &key, 1), 2, "material destroyed");
    ts.store.enable_key(&ts.caller, key_id(&key)).unwrap();
    assert_eq!(decrypt(&ts, &blob, &[], None).unwrap(), b"keep me");
}

/// Defect: a read that started before DisableKey committed put the old, enabled record into
/// the cache after DisableKey had invalidated it, and Encrypt kept working for good.
#[test]
fn a_slow_read_never_brings_back_a_disabled_key() {
    let (ts, gates) = gated_store();
    let key = create(&ts).key_id;

    let gate = gates.arm("encrypter", Step::Get(Table::Keys));
    let encrypter = on_thread("encrypter", {
        let (ts, key) = (ts.clone(), key.clone());
        move || encrypt(&ts, &key, b"racing", &[]).map(|_| ())
    });
    gate.wait_reached();
    ts.store.disable_key(&ts.caller, key_id(&key)).unwrap();
    gate.release();
    // It began before DisableKey returned, so either outcome is fine for it.
    let _ = encrypter.join().unwrap();

    for _ in 0..3 {
        let (code, _) = failure(encrypt(&ts, &key, b"after disable", &[]));
        assert_eq!(code, "DisabledException");
    }
    assert_eq!(describe(&ts, &key).key_state, "Disabled");
}

/// Defect: CreateAlias checked its target before taking the lock, so an alias could be made
/// for a key that ScheduleKeyDeletion had moved to PendingDeletion meanwhile.
#[test]
fn create_alias_checks_its_target_atomically() {
    let (ts, gates) = gated_store();
    // From CreateKey's answer: a DescribeKey would put the key in the cache.
    let KeyMetadata {
        key_id: key, arn, ..
    } = create(&ts);

    let gate = gates.arm("aliaser", Step::Get(Table::Keys));
    let aliaser = on_thread("aliaser", {
        let (ts, key) = (ts.clone(), key.clone());
        move || create_alias(&ts, "alias/late", &key)
    });
    gate.wait_reached();
    schedule_deletion(&ts, &key);
    gate.release();

    assert_eq!(
        failure(aliaser.join().unwrap()),
        (
            "KMSInvalidStateException".to_owned(),
            format!("{arn} is pending deletion.")
        )
    );
    assert!(aliases(&ts, None).is_empty());
}

/// Defect: RotateKeyOnDemand held the key store's write lock through HSM key generation and
/// replication, so every other write (any key, any account) waited for the HSMs.
#[test]
fn rotation_does_not_hold_up_other_writes() {
    let (ts, gates) = gated_store();
    let rotated = create(&ts).key_id;
    let other = create(&ts).key_id;

    // The rotating thread's first commit is its intent, just before the HSM work.
    let gate = gates.arm("rotator", Step::Commit);
    let rotator = on_thread("rotator", {
        let (ts, key) = (ts.clone(), rotated.clone());
        move || ts.store.rotate_key_on_demand(&ts.caller, key_id(&key))
    });
    gate.wait_reached();
    let (done_tx, done) = mpsc::channel();
    let writer = on_thread("writer", {
        let (ts, rotated, other) = (ts.clone(), rotated.clone(), other.clone());
        move || {
            ts.store.disable_key(&ts.caller, key_id(&other)).unwrap();
            ts.store
                .tag_resource(
                    &ts.caller,
                    TagResourceRequest {
                        key_id: rotated,
                        tags: vec![Tag {
                            tag_key: "team".into(),
                            tag_value: "ops".into(),
                        }],
                    },
                )
                .unwrap();
            done_tx.send(()).unwrap();
        }
    });
    let finished_while_rotating = done.recv_timeout(PATIENCE).is_ok();
    gate.release();
    writer.join().unwrap();
    rotator.join().unwrap().unwrap();

    assert!(
        finished_while_rotating,
        "writes to other keys waited for a rotation's HSM work"
    );
    assert_eq!(describe(&ts, &other).key_state, "Disabled");
    let tags = ts
        .store
        .list_resource_tags(
            &ts.caller,
            ListResourceTagsRequest {
                key_id: rotated.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(tags.tags.len(), 1, "the tag written during the rotation");
    let rotations = ts
        .store
        .list_key_rotations(
            &ts.caller,
            ListKeyRotationsRequest {
                key_id: rotated.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(rotations.rotations.len(), 1);
    assert_eq!(copies(&ts, &rotated, 2), 2);
    let blob = encrypt(&ts, &rotated, b"new version", &[])
        .unwrap()
        .ciphertext_blob;
    assert_eq!(decrypt(&ts, &blob, &[], None).unwrap(), b"new version");
}
