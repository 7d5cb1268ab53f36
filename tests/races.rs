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
use hsm_kms::store::intercept::{Answer, Intercepted, Interceptor};
use hsm_kms::store::{Batch, MetadataStore, Record, SledStore, StoreError, Table};

/// Longest wait for a thread to reach a gate or finish a call before the test gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// A store call a [`Gatekeeper`] can hold a thread at.
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

/// Holds one named thread at one step of the store it stands around, once, for fault
/// injection.
struct Gatekeeper {
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

impl Gatekeeper {
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

impl Interceptor for Gatekeeper {
    fn get(
        &self,
        store: &dyn MetadataStore,
        table: Table,
        key: &[u8],
    ) -> Result<Option<Record>, StoreError> {
        let found = store.get(table, key);
        self.pass(Step::Get(table));
        found
    }

    fn scan(
        &self,
        store: &dyn MetadataStore,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        let page = store.scan(table, prefix, after, limit);
        self.pass(Step::Scan(table));
        page
    }

    fn commit(&self, store: &dyn MetadataStore, batch: Batch) -> Answer {
        let outcome = store.commit(batch);
        self.pass(Step::Commit);
        outcome
    }
}

/// A key store over a fresh two-member cluster whose sled store is gated.
fn gated_store() -> (Arc<TestStore>, Gates) {
    gated_store_with(hsm_kms::audit::log::AuditSettings::default())
}

/// [`gated_store`] with the given audit settings.
fn gated_store_with(audit: hsm_kms::audit::log::AuditSettings) -> (Arc<TestStore>, Gates) {
    let cluster = TestCluster::new(2);
    let config = cluster.config();
    let hsms = hsm_kms::cluster::Cluster::init("local", config.default_cluster().unwrap()).unwrap();
    let armed = Arc::new(Mutex::new(None));
    let metadata = Intercepted::new(
        SledStore::open(&config.service.data_dir).unwrap(),
        Gatekeeper {
            armed: armed.clone(),
        },
    );
    let scope =
        hsm_kms::ids::Scope::new(&config.service.region, &config.service.account_id).unwrap();
    let clock = Arc::new(ManualClock::new());
    let store =
        KeyStore::with_parts(scope, hsms, Box::new(metadata), clock.clone(), audit).unwrap();
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

/// Operations per thread of [`mixed_operations_keep_every_acknowledged_effect`]: the
/// `HSM_KMS_RACE_OPS` environment variable (the long run uses 10000), else a count that
/// keeps the test short on a small machine.
fn ops_per_thread() -> usize {
    std::env::var("HSM_KMS_RACE_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(250)
}

/// A small, seedable generator (xorshift64*), so each thread's mix is reproducible.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % below
    }
}

/// An acknowledged change of a key's state, between two ticks of the shared sequence.
#[derive(Clone, Debug)]
struct StateWrite {
    started: u64,
    ended: u64,
    state: &'static str,
}

/// What one thread of the mixed test saw acknowledged.
#[derive(Default)]
struct Acknowledged {
    created: Vec<String>,
    states: Vec<(String, StateWrite)>,
    /// Ciphertexts with their key and plaintext.
    ciphertexts: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// This thread's tag (key "t<thread>") on each key: the last value written.
    tags: std::collections::BTreeMap<String, String>,
    /// This thread's aliases and their targets.
    aliases: std::collections::BTreeMap<String, String>,
    /// On-demand rotations per key.
    rotations: std::collections::BTreeMap<String, usize>,
    calls: usize,
}

/// Codes a call of the mix may answer besides success: the key-state table's refusals, and
/// the documented limits. Anything else (KMSInternalException above all) is a defect.
fn allowed_refusal(operation: &str, code: &str) -> bool {
    matches!(
        (operation, code),
        (_, "DisabledException" | "KMSInvalidStateException")
            | (
                "RotateKeyOnDemand",
                "LimitExceededException" | "ConflictException"
            )
            | ("CreateAlias" | "UpdateAlias", "LimitExceededException")
    )
}

/// 16 threads of mixed calls on shared keys; afterwards every acknowledged write is there, no
/// key is in a state no call could have left it in, and every acknowledged ciphertext decrypts.
#[test]
fn mixed_operations_keep_every_acknowledged_effect() {
    const THREADS: usize = 16;
    let ts = Arc::new(TestStore::new());
    let keys: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new((0..6).map(|_| create(&ts).key_id).collect()));
    let initial = keys.lock().unwrap().clone();
    let sequence = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tick = {
        let sequence = sequence.clone();
        move || sequence.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    };
    let ops = ops_per_thread();
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (ts, keys, tick) = (ts.clone(), keys.clone(), tick.clone());
            on_thread(&format!("mix-{thread}"), move || {
                let mut dice = Dice(0x9e37_79b9_7f4a_7c15 ^ ((thread as u64 + 1) * 0x1000_0001));
                let mut seen = Acknowledged::default();
                let refuse = |operation: &str, error: hsm_kms::error::KmsError| {
                    assert!(
                        allowed_refusal(operation, error.code()),
                        "{operation}: {} {}",
                        error.code(),
                        error.message()
                    );
                };
                for op in 0..ops {
                    let key = {
                        let keys = keys.lock().unwrap();
                        keys[dice.roll(keys.len())].clone()
                    };
                    let started = tick();
                    let state_write = |state: &'static str, seen: &mut Acknowledged| {
                        let write = StateWrite {
                            started,
                            ended: tick(),
                            state,
                        };
                        seen.states.push((key.clone(), write));
                    };
                    match dice.roll(100) {
                        0..=39 => {
                            let plaintext = format!("{thread}/{op}").into_bytes();
                            match encrypt(&ts, &key, &plaintext, &[("op", "mix")]) {
                                Ok(out) => {
                                    seen.ciphertexts.push((key, out.ciphertext_blob, plaintext))
                                }
                                Err(error) => refuse("Encrypt", error),
                            }
                        }
                        40..=51 => {
                            if let Some((_, blob, plaintext)) = seen
                                .ciphertexts
                                .get(dice.roll(seen.ciphertexts.len().max(1)))
                            {
                                match decrypt(&ts, blob, &[("op", "mix")], None) {
                                    Ok(out) => assert_eq!(&out, plaintext),
                                    Err(error) => refuse("Decrypt", error),
                                }
                            }
                        }
                        52..=57 => {
                            describe(&ts, &key);
                        }
                        58..=63 => match ts.store.enable_key(&ts.caller, key_id(&key)) {
                            Ok(()) => state_write("Enabled", &mut seen),
                            Err(error) => refuse("EnableKey", error),
                        },
                        64..=68 => match ts.store.disable_key(&ts.caller, key_id(&key)) {
                            Ok(()) => state_write("Disabled", &mut seen),
                            Err(error) => refuse("DisableKey", error),
                        },
                        69..=70 => match ts.store.schedule_key_deletion(
                            &ts.caller,
                            ScheduleKeyDeletionRequest {
                                key_id: key.clone(),
                                pending_window_in_days: Some(7),
                            },
                        ) {
                            Ok(_) => state_write("PendingDeletion", &mut seen),
                            Err(error) => refuse("ScheduleKeyDeletion", error),
                        },
                        71..=74 => match ts.store.cancel_key_deletion(&ts.caller, key_id(&key)) {
                            Ok(_) => state_write("Disabled", &mut seen),
                            Err(error) => refuse("CancelKeyDeletion", error),
                        },
                        75..=82 => {
                            let value = op.to_string();
                            match ts.store.tag_resource(
                                &ts.caller,
                                TagResourceRequest {
                                    key_id: key.clone(),
                                    tags: vec![Tag {
                                        tag_key: format!("t{thread}"),
                                        tag_value: value.clone(),
                                    }],
                                },
                            ) {
                                Ok(()) => {
                                    seen.tags.insert(key, value);
                                }
                                Err(error) => refuse("TagResource", error),
                            }
                        }
                        83..=87 => {
                            let name = format!("alias/race-{thread}-{op}");
                            match create_alias(&ts, &name, &key) {
                                Ok(()) => {
                                    seen.aliases.insert(name, key);
                                }
                                Err(error) => refuse("CreateAlias", error),
                            }
                        }
                        88..=90 => {
                            let names: Vec<String> = seen.aliases.keys().cloned().collect();
                            if let Some(name) = names.get(dice.roll(names.len().max(1))) {
                                match update_alias(&ts, name, &key) {
                                    Ok(()) => {
                                        seen.aliases.insert(name.clone(), key);
                                    }
                                    Err(error) => refuse("UpdateAlias", error),
                                }
                            }
                        }
                        91..=92 => {
                            let names: Vec<String> = seen.aliases.keys().cloned().collect();
                            if let Some(name) = names.get(dice.roll(names.len().max(1))) {
                                ts.store.delete_alias(&ts.caller, name).unwrap();
                                seen.aliases.remove(name);
                            }
                        }
                        93..=95 => {
                            if let Some(name) = seen.aliases.keys().next().cloned() {
                                let plaintext = format!("{thread}/{op}/alias").into_bytes();
                                match encrypt(&ts, &name, &plaintext, &[("op", "mix")]) {
                                    Ok(out) => seen.ciphertexts.push((
                                        seen.aliases[&name].clone(),
                                        out.ciphertext_blob,
                                        plaintext,
                                    )),
                                    Err(error) => refuse("Encrypt", error),
                                }
                            }
                        }
                        96..=97 => match ts.store.rotate_key_on_demand(&ts.caller, key_id(&key)) {
                            Ok(_) => *seen.rotations.entry(key).or_default() += 1,
                            Err(error) => refuse("RotateKeyOnDemand", error),
                        },
                        _ => {
                            let created = create(&ts).key_id;
                            let write = StateWrite {
                                started,
                                ended: tick(),
                                state: "Enabled",
                            };
                            seen.states.push((created.clone(), write));
                            keys.lock().unwrap().push(created.clone());
                            seen.created.push(created);
                        }
                    }
                    seen.calls += 1;
                }
                seen
            })
        })
        .collect();
    let seen: Vec<Acknowledged> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(
        seen.iter().map(|s| s.calls).sum::<usize>(),
        THREADS * ops,
        "every call ran"
    );

    // Every acknowledged key is there, in a state the last acknowledged writes allow.
    let listed: std::collections::BTreeSet<String> = ts
        .store
        .list_keys(
            &ts.caller,
            ListRequest {
                limit: Some(1000),
                marker: None,
            },
        )
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    let keys = keys.lock().unwrap().clone();
    for key in seen.iter().flat_map(|s| &s.created).chain(&initial) {
        assert!(listed.contains(key), "acknowledged key {key} is missing");
    }
    for key in &keys {
        let writes: Vec<&StateWrite> = seen
            .iter()
            .flat_map(|s| &s.states)
            .filter(|(k, _)| k == key)
            .map(|(_, w)| w)
            .collect();
        let state = describe(&ts, key).key_state;
        // The last write in any valid order ended after every other write started.
        let possible: Vec<&str> = writes
            .iter()
            .enumerate()
            .filter(|(i, w)| {
                writes
                    .iter()
                    .enumerate()
                    .all(|(j, other)| *i == j || other.started < w.ended)
            })
            .map(|(_, w)| w.state)
            .collect();
        let possible = if writes.is_empty() {
            vec!["Enabled"]
        } else {
            possible
        };
        assert!(
            possible.contains(&state.as_str()),
            "{key} is {state}; the last acknowledged writes allow only {possible:?}"
        );
    }

    // Every acknowledged tag, alias and rotation is there.
    for (thread, acknowledged) in seen.iter().enumerate() {
        for (key, value) in &acknowledged.tags {
            let tags = ts
                .store
                .list_resource_tags(
                    &ts.caller,
                    ListResourceTagsRequest {
                        key_id: key.clone(),
                        ..Default::default()
                    },
                )
                .unwrap()
                .tags;
            let tag = tags.iter().find(|t| t.tag_key == format!("t{thread}"));
            assert_eq!(tag.map(|t| &t.tag_value), Some(value), "{key}");
        }
        let prefix = format!("alias/race-{thread}-");
        let found: std::collections::BTreeMap<String, String> = aliases(&ts, None)
            .into_iter()
            .filter(|a| a.alias_name.starts_with(&prefix))
            .map(|a| {
                (
                    a.alias_name,
                    a.target_key_id.expect("a stored alias has a target"),
                )
            })
            .collect();
        assert_eq!(found, acknowledged.aliases, "aliases of thread {thread}");
    }
    for key in &keys {
        let acknowledged: usize = seen.iter().filter_map(|s| s.rotations.get(key)).sum();
        let listed = ts
            .store
            .list_key_rotations(
                &ts.caller,
                ListKeyRotationsRequest {
                    key_id: key.clone(),
                    limit: Some(1000),
                    marker: None,
                },
            )
            .unwrap()
            .rotations
            .len();
        assert_eq!(listed, acknowledged, "rotations of {key}");
    }
    let inconsistencies = ts.store.reconcile().unwrap();
    assert!(inconsistencies.is_empty(), "{inconsistencies:?}");

    // Every acknowledged ciphertext decrypts once its key is usable again.
    for key in &keys {
        if describe(&ts, key).key_state == "PendingDeletion" {
            ts.store
                .cancel_key_deletion(&ts.caller, key_id(key))
                .unwrap();
        }
        ts.store.enable_key(&ts.caller, key_id(key)).unwrap();
    }
    for (key, blob, plaintext) in seen.iter().flat_map(|s| &s.ciphertexts) {
        assert_eq!(
            &decrypt(&ts, blob, &[("op", "mix")], Some(key)).unwrap(),
            plaintext
        );
    }
}

/// Eight threads create the same alias at once: exactly one wins, the others get
/// `AlreadyExistsException`, and the alias names the winner's key.
#[test]
fn one_of_eight_racing_creators_gets_the_alias() {
    const THREADS: usize = 8;
    let ts = Arc::new(TestStore::new());
    let targets: Vec<String> = (0..THREADS).map(|_| create(&ts).key_id).collect();
    for round in 0..5 {
        let name = format!("alias/contested-{round}");
        let start = Arc::new(std::sync::Barrier::new(THREADS));
        let racers: Vec<_> = targets
            .iter()
            .map(|target| {
                let (ts, start, name, target) =
                    (ts.clone(), start.clone(), name.clone(), target.clone());
                on_thread("alias-racer", move || {
                    start.wait();
                    create_alias(&ts, &name, &target).map(|()| target)
                })
            })
            .collect();
        let outcomes: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let winners: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let arn = format!("arn:aws:kms:us-east-1:111122223333:{name}");
        for outcome in &outcomes {
            if let Err(error) = outcome {
                assert_eq!(error.code(), "AlreadyExistsException");
                assert_eq!(
                    error.message(),
                    format!("An alias with the name {arn} already exists")
                );
            }
        }
        let listed: Vec<_> = aliases(&ts, None)
            .into_iter()
            .filter(|a| a.alias_name == name)
            .collect();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].target_key_id.as_ref(), Some(winners[0]));
    }
}

/// Encrypt calls racing DisableKey and ScheduleKeyDeletion: no Encrypt that started after
/// the change returned succeeds (until the key is enabled again), and each is refused with
/// the key-state table's exception. Start and end of every call are ticks of one sequence.
#[test]
fn no_encrypt_succeeds_after_disable_or_schedule_returned() {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
    const ENCRYPTERS: usize = 4;
    // Without the audit trail: free-running encrypters outpace its writer (it has no
    // back-pressure), and each DisableKey would wait for the whole backlog to be flushed.
    let audit = hsm_kms::audit::log::AuditSettings {
        enabled: false,
        ..Default::default()
    };
    let (ts, _) = gated_store_with(audit);
    let KeyMetadata {
        key_id: key, arn, ..
    } = create(&ts);
    let sequence = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<Vec<AtomicUsize>> = Arc::new((0..ENCRYPTERS).map(|_| 0.into()).collect());
    let encrypters: Vec<_> = (0..ENCRYPTERS)
        .map(|n| {
            let (ts, key, sequence, stop, done) = (
                ts.clone(),
                key.clone(),
                sequence.clone(),
                stop.clone(),
                done.clone(),
            );
            on_thread("encrypter", move || {
                let mut calls = Vec::new();
                while !stop.load(SeqCst) {
                    let started = sequence.fetch_add(1, SeqCst);
                    let outcome = encrypt(&ts, &key, b"race", &[]);
                    let ended = sequence.fetch_add(1, SeqCst);
                    calls.push((started, ended, outcome.map(|_| ()).map_err(|e| e.code())));
                    done[n].fetch_add(1, SeqCst);
                }
                calls
            })
        })
        .collect();
    // Waits until every encrypter has finished `more` further calls.
    let progress = |more: usize| {
        let targets: Vec<usize> = done.iter().map(|d| d.load(SeqCst) + more).collect();
        let deadline = std::time::Instant::now() + PATIENCE;
        while done.iter().zip(&targets).any(|(d, t)| d.load(SeqCst) < *t) {
            assert!(
                std::time::Instant::now() < deadline,
                "the encrypters stalled"
            );
            std::thread::yield_now();
        }
    };
    // (closed when this tick was drawn, open again from this tick, expected refusal)
    let mut windows = Vec::new();
    for round in 0..6 {
        progress(5);
        let expected = if round % 2 == 0 {
            ts.store.disable_key(&ts.caller, key_id(&key)).unwrap();
            "DisabledException"
        } else {
            schedule_deletion(&ts, &key);
            "KMSInvalidStateException"
        };
        let closed = sequence.fetch_add(1, SeqCst);
        progress(5);
        let reopened = sequence.fetch_add(1, SeqCst);
        if expected == "KMSInvalidStateException" {
            ts.store
                .cancel_key_deletion(&ts.caller, key_id(&key))
                .unwrap();
        }
        ts.store.enable_key(&ts.caller, key_id(&key)).unwrap();
        windows.push((closed, reopened, expected));
    }
    stop.store(true, SeqCst);
    let calls: Vec<_> = encrypters
        .into_iter()
        .flat_map(|e| e.join().unwrap())
        .collect();
    let mut checked = 0;
    for (closed, reopened, expected) in windows {
        for (started, ended, outcome) in &calls {
            if *started > closed && *ended < reopened {
                assert_eq!(*outcome, Err(expected), "{arn}: call {started}..{ended}");
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 6 * 5,
        "only {checked} calls fell inside the windows"
    );
    assert!(calls.iter().any(|(_, _, outcome)| outcome.is_ok()));
}

/// CancelKeyDeletion racing maintenance on keys whose deletion is due: every key whose
/// cancellation returned OK is still there with its material and decrypts; every refused one
/// was deleted, with its material destroyed on every member.
#[test]
fn cancel_racing_maintenance_loses_no_cancelled_key() {
    const KEYS: usize = 8;
    let ts = Arc::new(TestStore::new());
    let keys: Vec<(String, Vec<u8>)> = (0..KEYS)
        .map(|_| {
            let key = create(&ts).key_id;
            let blob = encrypt(&ts, &key, b"still mine", &[])
                .unwrap()
                .ciphertext_blob;
            schedule_deletion(&ts, &key);
            (key, blob)
        })
        .collect();
    ts.clock.advance(EIGHT_DAYS);
    let start = Arc::new(std::sync::Barrier::new(2));
    let maintenance = on_thread("maintenance", {
        let (ts, start) = (ts.clone(), start.clone());
        move || {
            start.wait();
            ts.store.run_maintenance().unwrap()
        }
    });
    let canceller = on_thread("canceller", {
        let (ts, start, keys) = (ts.clone(), start.clone(), keys.clone());
        move || {
            start.wait();
            // From the last key, so the two threads meet in the middle.
            keys.iter()
                .rev()
                .map(|(key, _)| {
                    let outcome = ts.store.cancel_key_deletion(&ts.caller, key_id(key));
                    (key.clone(), outcome.map(|_| ()).map_err(|e| e.code()))
                })
                .collect::<Vec<_>>()
        }
    });
    let report = maintenance.join().unwrap();
    let outcomes = canceller.join().unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);

    for (key, outcome) in outcomes {
        let blob = &keys.iter().find(|(k, _)| *k == key).unwrap().1;
        match outcome {
            Ok(()) => {
                assert_eq!(describe(&ts, &key).key_state, "Disabled");
                assert_eq!(copies(&ts, &key, 1), 2, "cancelled key {key} lost material");
                ts.store.enable_key(&ts.caller, key_id(&key)).unwrap();
                assert_eq!(decrypt(&ts, blob, &[], None).unwrap(), b"still mine");
            }
            Err(code) => {
                assert!(
                    matches!(code, "KMSInvalidStateException" | "NotFoundException"),
                    "{key}: {code}"
                );
                let gone = failure(ts.store.describe_key(&ts.caller, key_id(&key)));
                assert_eq!(
                    gone.0, "NotFoundException",
                    "refused cancel, key {key} kept"
                );
                assert_eq!(copies(&ts, &key, 1), 0);
            }
        }
    }
}

/// Eight threads rotate one key at once while another thread tags it: each rotation either
/// lands or answers `ConflictException`, every landed one is a distinct version present on
/// every member, and no material is left over from the refused ones.
#[test]
fn racing_rotations_of_one_key_leave_no_stray_material() {
    const THREADS: usize = 8;
    let ts = Arc::new(TestStore::new());
    let key = create(&ts).key_id;
    let start = Arc::new(std::sync::Barrier::new(THREADS + 1));
    let rotators: Vec<_> = (0..THREADS)
        .map(|_| {
            let (ts, start, key) = (ts.clone(), start.clone(), key.clone());
            on_thread("rotator", move || {
                start.wait();
                (0..3)
                    .map(|_| {
                        ts.store
                            .rotate_key_on_demand(&ts.caller, key_id(&key))
                            .map(|_| ())
                            .map_err(|e| e.code())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let tagger = on_thread("tagger", {
        let (ts, start, key) = (ts.clone(), start.clone(), key.clone());
        move || {
            start.wait();
            for n in 0..10 {
                ts.store
                    .tag_resource(
                        &ts.caller,
                        TagResourceRequest {
                            key_id: key.clone(),
                            tags: vec![Tag {
                                tag_key: "n".into(),
                                tag_value: n.to_string(),
                            }],
                        },
                    )
                    .unwrap();
            }
        }
    });
    let outcomes: Vec<_> = rotators
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    tagger.join().unwrap();

    let landed = outcomes.iter().filter(|o| o.is_ok()).count();
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Ok(()) | Err("ConflictException")),
            "{outcome:?}"
        );
    }
    assert!(landed >= 1, "{outcomes:?}");
    let rotations = ts
        .store
        .list_key_rotations(
            &ts.caller,
            ListKeyRotationsRequest {
                key_id: key.clone(),
                ..Default::default()
            },
        )
        .unwrap()
        .rotations;
    assert_eq!(rotations.len(), landed);
    for version in 1..=landed as u32 + 1 {
        assert_eq!(copies(&ts, &key, version), 2, "version {version}");
    }
    assert_eq!(copies(&ts, &key, landed as u32 + 2), 0);
    let inconsistencies = ts.store.reconcile().unwrap();
    assert!(inconsistencies.is_empty(), "{inconsistencies:?}");
    let tags = ts
        .store
        .list_resource_tags(
            &ts.caller,
            ListResourceTagsRequest {
                key_id: key,
                ..Default::default()
            },
        )
        .unwrap()
        .tags;
    assert_eq!(tags[0].tag_value, "9", "the last tag write");
}
