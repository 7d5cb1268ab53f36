//! Several hsm-kms instances on one PostgreSQL database and one HSM cluster: two key stores
//! in one process, each with its own store connection pool and its own HSM sessions, as
//! two servers would have. What one instance does, the other sees; races between them have
//! one winner; their audit events form one chain.
//!
//! Every test skips, saying so, when `HSM_KMS_TEST_POSTGRES_URL` is not set;
//! `scripts/test.sh` always sets it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::postgres_db::TestDatabase;
use common::{TestCluster, decrypt};
use hsm_kms::audit::checkpoint::ClusterSealer;
use hsm_kms::audit::verify::verify;
use hsm_kms::keystore::api::*;
use hsm_kms::keystore::{Caller, KeyStore};
use secrecy::SecretSlice;

/// Two instances on one fresh database and one initialised two-member cluster.
struct TwoInstances {
    a: KeyStore,
    b: KeyStore,
    caller: Caller,
    cluster: TestCluster,
    database: TestDatabase,
}

impl TwoInstances {
    fn new() -> Option<TwoInstances> {
        let database = TestDatabase::create()?;
        let cluster = TestCluster::new(2);
        hsm_kms::cluster::Cluster::init("local", &cluster.cluster_config()).unwrap();
        let a = database.keystore(&cluster);
        let b = database.keystore(&cluster);
        let caller = Caller::local(a.scope());
        Some(TwoInstances {
            a,
            b,
            caller,
            cluster,
            database,
        })
    }
}

fn create_key(store: &KeyStore, caller: &Caller) -> String {
    store
        .create_key(caller, CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id
}

fn encrypt(store: &KeyStore, caller: &Caller, key: &str, plaintext: &[u8]) -> Vec<u8> {
    store
        .encrypt(
            caller,
            EncryptRequest {
                key_id: key.into(),
                plaintext: SecretSlice::from(plaintext.to_vec()),
                ..Default::default()
            },
        )
        .unwrap()
        .ciphertext_blob
}

#[test]
fn a_key_created_on_one_instance_is_usable_on_the_other() {
    let Some(two) = TwoInstances::new() else {
        return;
    };
    let (a, b, caller) = (&two.a, &two.b, &two.caller);
    let key = create_key(a, caller);

    let blob = encrypt(b, caller, &key, b"made on a, used on b");
    assert_eq!(decrypt(a, caller, &blob), b"made on a, used on b");
    let described = b
        .describe_key(
            caller,
            KeyIdRequest {
                key_id: key.clone(),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata;
    assert_eq!(described.key_id, key);

    b.create_alias(
        caller,
        AliasRequest {
            alias_name: "alias/shared".into(),
            target_key_id: key.clone(),
        },
    )
    .unwrap();
    let blob = encrypt(a, caller, "alias/shared", b"by alias");
    assert_eq!(decrypt(b, caller, &blob), b"by alias");
}

/// The CreateKey material pool keeps its ready objects in one process's memory and takes an
/// unfinished pool record for its own crash leftover, so on a shared store it stays off
/// whatever size is asked for: no pool object is made, and CreateKey still works.
#[test]
fn the_material_pool_stays_off_on_a_shared_store() {
    let Some(two) = TwoInstances::new() else {
        return;
    };
    for instance in [&two.a, &two.b] {
        instance.start_material_pool(8).unwrap();
        let status = instance.material_pool_status();
        assert_eq!((status.size, status.ready), (0, 0), "{status:?}");
    }
    std::thread::sleep(Duration::from_millis(600));
    let key = create_key(&two.b, &two.caller);
    let blob = encrypt(&two.a, &two.caller, &key, b"no pool");
    assert_eq!(decrypt(&two.b, &two.caller, &blob), b"no pool");
    assert_eq!(two.a.material_pool_status().claimed, 0);
    assert_eq!(two.b.material_pool_status().claimed, 0);
}

/// Four threads on each instance create the same alias name at once, ten times over:
/// exactly one call succeeds each time, every other one is AlreadyExistsException.
#[test]
fn an_alias_race_across_two_instances_has_exactly_one_winner() {
    let Some(two) = TwoInstances::new() else {
        return;
    };
    let key = create_key(&two.a, &two.caller);
    for round in 0..10 {
        let name = format!("alias/race-{round}");
        let start = Barrier::new(8);
        let outcomes: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|n| {
                    let store = if n % 2 == 0 { &two.a } else { &two.b };
                    let (caller, name, key, start) = (&two.caller, &name, &key, &start);
                    scope.spawn(move || {
                        let request = AliasRequest {
                            alias_name: name.clone(),
                            target_key_id: key.clone(),
                        };
                        start.wait();
                        store
                            .create_alias(caller, request)
                            .map_err(|error| error.code().to_owned())
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let winners = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {outcomes:?}");
        for outcome in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            assert_eq!(outcome, "AlreadyExistsException", "round {round}");
        }
    }
}

/// Both instances call at once; after both shut down, the trail is one chain with every
/// event of both, verified with its HSM-sealed checkpoints as `audit verify` does.
#[test]
fn the_audit_events_of_two_instances_form_one_verified_chain() {
    let Some(two) = TwoInstances::new() else {
        return;
    };
    let key = create_key(&two.a, &two.caller);
    const CALLS: usize = 40;
    std::thread::scope(|scope| {
        for store in [&two.a, &two.b] {
            let (caller, key) = (&two.caller, &key);
            scope.spawn(move || {
                for n in 0..CALLS {
                    let blob = encrypt(store, caller, key, format!("call {n}").as_bytes());
                    assert_eq!(
                        decrypt(store, caller, &blob),
                        format!("call {n}").as_bytes()
                    );
                }
            });
        }
    });
    two.a.shutdown();
    two.b.shutdown();

    let store = two.database.store();
    let config = two.cluster.config();
    let cluster =
        hsm_kms::cluster::Cluster::open("local", config.default_cluster().unwrap()).unwrap();
    let sealer = ClusterSealer::new(Arc::new(cluster));
    let report = verify(&store, Some(&sealer), None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // CreateKey, then an Encrypt and a Decrypt per call on each instance.
    assert!(
        report.events >= (1 + 2 * 2 * CALLS) as u64,
        "{} events",
        report.events
    );
    assert!(report.checkpoints >= 2, "each instance sealed its head");
}

/// Trials of [`a_key_disabled_on_one_instance_is_refused_on_the_other_within_a_second`]:
/// 100 unless `HSM_KMS_TEST_CONSISTENCY_TRIALS` says otherwise.
fn consistency_trials() -> usize {
    common::postgres_db::consistency_trials(100)
}

/// After DisableKey returns on instance A, instance B, whose cache holds the key enabled,
/// refuses Encrypt within one second, every time. Each trial warms B's cache, disables
/// on A, then encrypts on B until it is refused (DisabledException) and takes the time;
/// then enables on A and waits until B encrypts again. Prints the worst case and median.
#[test]
fn a_key_disabled_on_one_instance_is_refused_on_the_other_within_a_second() {
    // The instances' warnings and errors are printed with a failure: an unexpected refusal
    // (a KMSInternalException once, on a loaded machine) says its cause there.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::WARN)
        .try_init();
    let Some(two) = TwoInstances::new() else {
        return;
    };
    let (a, b, caller) = (&two.a, &two.b, &two.caller);
    let key = create_key(a, caller);
    let key_request = || KeyIdRequest {
        key_id: key.clone(),
        ..Default::default()
    };
    let try_encrypt = || {
        b.encrypt(
            caller,
            EncryptRequest {
                key_id: key.clone(),
                plaintext: SecretSlice::from(b"probe".to_vec()),
                ..Default::default()
            },
        )
    };
    let trials = consistency_trials();
    let mut delays = Vec::with_capacity(trials);
    for trial in 0..trials {
        encrypt(b, caller, &key, b"warms the cache of b");
        a.disable_key(caller, key_request()).unwrap();
        let disabled = Instant::now();
        loop {
            match try_encrypt() {
                Ok(_) => assert!(
                    disabled.elapsed() < Duration::from_secs(1),
                    "trial {trial}: b still encrypts {:?} after the disable returned",
                    disabled.elapsed()
                ),
                Err(error) => {
                    assert_eq!(error.code(), "DisabledException", "trial {trial}: {error}");
                    delays.push(disabled.elapsed());
                    break;
                }
            }
        }
        a.enable_key(caller, key_request()).unwrap();
        let enabled = Instant::now();
        while try_encrypt().is_err() {
            assert!(enabled.elapsed() < Duration::from_secs(5), "trial {trial}");
        }
    }
    delays.sort();
    let worst = delays.last().copied().unwrap_or_default();
    println!(
        "{trials} trials: b refused Encrypt at worst {worst:?}, median {:?}, after DisableKey \
         returned on a",
        delays[delays.len() / 2]
    );
    assert!(worst < Duration::from_secs(1));
}

/// Samples the instances every 20 ms until `wanted` leads and `other` (if any) does not
/// (panicking if both ever lead at once, or after 10 s); returns how long it took.
fn wait_until_leads_alone(wanted: &KeyStore, other: Option<&KeyStore>) -> Duration {
    let started = Instant::now();
    loop {
        let wanted_leads = wanted.is_leader();
        let other_leads = other.is_some_and(KeyStore::is_leader);
        assert!(!(wanted_leads && other_leads), "two leaders at once");
        if wanted_leads && !other_leads {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no hand-over within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One instance leads the background work; when its leader session is terminated (as
/// when its connection is cut) the other takes over within 10 s; when that one is
/// dropped (as when its process dies) the first takes over again; never both at once.
#[test]
fn leadership_passes_to_the_other_instance_within_ten_seconds() {
    let Some(TwoInstances { a, b, database, .. }) = TwoInstances::new() else {
        return;
    };
    let (mut leader, mut follower) = (a, b);
    leader.is_leader();
    follower.is_leader();
    let started = Instant::now();
    while !leader.is_leader() && !follower.is_leader() {
        assert!(started.elapsed() < Duration::from_secs(10), "nobody leads");
        std::thread::sleep(Duration::from_millis(20));
    }
    if follower.is_leader() {
        std::mem::swap(&mut leader, &mut follower);
    }
    assert!(!follower.is_leader());

    let terminated = database
        .client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
             WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(
        terminated, 1,
        "the leader's session holds the one advisory lock"
    );
    let after_cut = wait_until_leads_alone(&follower, Some(&leader));

    let (leader, follower) = (follower, leader);
    drop(leader);
    let after_drop = wait_until_leads_alone(&follower, None);
    println!(
        "hand-over after the leader's session was cut: {after_cut:?}; after the leader was \
         dropped: {after_drop:?}"
    );
}

/// The lines an alarm's file action wrote so far.
fn delivered(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits up to 15 s for the alarm file to hold `count` lines.
fn wait_for_deliveries(path: &std::path::Path, count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let lines = delivered(path);
        if lines.len() >= count || started.elapsed() > Duration::from_secs(15) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Both instances run the same alarm; only the leader delivers, so a DisableKey made on
/// either is delivered once. When the leader is gone, the other takes the lead and
/// delivers what follows, from the cursor the first one saved: nothing is lost.
#[test]
fn only_the_leader_delivers_alarms_and_the_next_leader_goes_on_from_its_cursor() {
    let Some(TwoInstances {
        mut a,
        mut b,
        caller,
        cluster,
        database: _database,
    }) = TwoInstances::new()
    else {
        return;
    };
    let path = cluster.path("disabled.jsonl");
    let alarms_text = format!(
        "[alarms]\ndefaults = false\n\n[[alarms.alarm]]\nname = \"disabled\"\n\
         pattern = '{{$.eventName=\"DisableKey\"}}'\nfile = {:?}\n",
        path.display().to_string()
    );
    let config =
        hsm_kms::config::Config::parse(&format!("{}\n{alarms_text}", cluster.config_text)).unwrap();
    let alarms = config.alarms.alarms(&config.service.data_dir).unwrap();
    a.start_alarms(alarms.clone()).unwrap();
    b.start_alarms(alarms).unwrap();
    let started = Instant::now();
    while !a.is_leader() && !b.is_leader() {
        assert!(started.elapsed() < Duration::from_secs(10), "nobody leads");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };

    let first = create_key(&follower, &caller);
    let disable = |store: &KeyStore, key: &str| {
        store
            .disable_key(
                &caller,
                KeyIdRequest {
                    key_id: key.to_owned(),
                    ..Default::default()
                },
            )
            .unwrap();
    };
    disable(&follower, &first);
    assert_eq!(wait_for_deliveries(&path, 1).len(), 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(delivered(&path).len(), 1, "delivered by one instance only");

    leader.shutdown();
    drop(leader);
    let second = create_key(&follower, &caller);
    disable(&follower, &second);
    let lines = wait_for_deliveries(&path, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains(&first) && lines[1].contains(&second),
        "{lines:?}"
    );
    assert!(follower.is_leader());
}

/// A key-material creation in progress on another instance is not what start-up reports as
/// an interrupted one: its intent (written before the HSMs are touched) is another
/// instance's until it is ten minutes old; an intent that old is reported as interrupted.
#[test]
fn another_instances_creation_in_progress_is_not_reported_as_interrupted() {
    use hsm_kms::cluster::MaterialId;
    use hsm_kms::keys::records::{IntentKind, IntentRecord};
    use hsm_kms::keystore::Inconsistency;
    use hsm_kms::store::{Batch, MetadataStore, Table};

    let Some(two) = TwoInstances::new() else {
        return;
    };
    let material = MaterialId::new("1234abcd-12ab-34cd-56ef-1234567890ab", 1);
    let write_intent = |age: Duration| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let intent = IntentRecord {
            kind: IntentKind::CreateMaterial,
            key_id: material.key_id.clone(),
            version: 1,
            cluster: "local".into(),
            created: i64::try_from((now - age).as_millis()).unwrap(),
        };
        let mut batch = Batch::new();
        batch.put(
            Table::Intents,
            material.to_string().as_bytes(),
            serde_json::to_vec(&intent).unwrap(),
        );
        two.database.store().commit(batch).unwrap().unwrap();
    };

    // As instance a writes it just before its HSM work, the call still running there.
    write_intent(Duration::from_secs(1));
    let starting = two.database.keystore(&two.cluster);
    assert!(
        starting.startup_inconsistencies().is_empty(),
        "{:?}",
        starting.startup_inconsistencies()
    );
    let reconciled = starting.reconcile().unwrap();
    assert!(reconciled.is_empty(), "{reconciled:?}");
    drop(starting);

    // No creation takes eleven minutes: that one was interrupted.
    write_intent(Duration::from_secs(11 * 60));
    let starting = two.database.keystore(&two.cluster);
    let interrupted = [Inconsistency::InterruptedCreate {
        material: material.to_string(),
    }];
    assert_eq!(starting.startup_inconsistencies(), interrupted);
    assert_eq!(starting.reconcile().unwrap(), interrupted);
}
