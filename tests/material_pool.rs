//! The material pool on real two-member SoftHSM2 clusters: CreateKey takes a ready pool
//! object instead of generating (no new HSM object per key), the material works on every
//! member, no object is handed out twice (under concurrent CreateKey, and across crashes
//! before and after the claim), objects a crash left unfinished are destroyed at start-up and
//! objects nothing names by maintenance, surplus objects go when the pool shrinks, an empty
//! pool falls back to generating, and `hsm-kms serve` fills its pool and shows it in
//! `/metrics`, as `cluster status` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{TestCluster, TestStore, crash_child};
use hsm_kms::cluster::POOL_PREFIX;
use hsm_kms::hsm::{Gcm, GcmSeal};
use hsm_kms::keys::records::KeyRecord;
use hsm_kms::keystore::api::{CreateKeyRequest, ListRequest};
use hsm_kms::keystore::{Caller, KeyStore};
use hsm_kms::store::Table;

/// Waits until the refiller has made the pool `ready` objects strong.
fn wait_warm(store: &KeyStore, ready: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.material_pool_status().ready < ready {
        assert!(
            Instant::now() < deadline,
            "the pool did not fill: {:?}",
            store.material_pool_status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The stored record of a key.
fn record(store: &KeyStore, key_id: &str) -> KeyRecord {
    let found = store
        .metadata()
        .get(Table::Keys, key_id.as_bytes())
        .unwrap()
        .unwrap();
    serde_json::from_slice(&found.payload).unwrap()
}

/// The pool object holding a key's first material version, if it came from the pool.
fn pool_object(store: &KeyStore, key_id: &str) -> Option<String> {
    record(store, key_id).materials[0].pool_object.clone()
}

/// The pool objects each member holds (claimed or not).
fn pool_objects_per_member(store: &KeyStore) -> Vec<(String, BTreeSet<String>)> {
    store
        .cluster()
        .key_objects()
        .into_iter()
        .map(|(member, objects)| {
            let ids = objects
                .unwrap()
                .into_iter()
                .map(|object| String::from_utf8(object.id).unwrap())
                .filter(|id| id.starts_with(POOL_PREFIX))
                .collect();
            (member, ids)
        })
        .collect()
}

/// The `CKA_ID`s every member holds.
fn objects_per_member(store: &KeyStore) -> Vec<BTreeSet<String>> {
    store
        .cluster()
        .key_objects()
        .into_iter()
        .map(|(_, objects)| {
            objects
                .unwrap()
                .into_iter()
                .map(|object| String::from_utf8(object.id).unwrap())
                .collect()
        })
        .collect()
}

fn ready_objects(store: &KeyStore) -> BTreeSet<String> {
    store
        .pooled_objects(store.cluster())
        .unwrap()
        .into_iter()
        .map(|id| String::from_utf8(id).unwrap())
        .collect()
}

fn create(store: &KeyStore, caller: &Caller) -> String {
    store
        .create_key(caller, CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id
}

#[test]
fn create_key_takes_a_pool_object_that_works_on_every_member() {
    let ts = TestStore::new();
    ts.store.start_material_pool(3).unwrap();
    wait_warm(&ts.store, 3);
    let pooled = ready_objects(&ts.store);
    assert_eq!(pooled.len(), 3);

    let key_id = create(&ts.store, &ts.caller);
    let object = pool_object(&ts.store, &key_id).expect("the key came from the pool");
    assert!(pooled.contains(&object), "{object} was not a ready object");
    assert!(!ready_objects(&ts.store).contains(&object), "still ready");
    let status = ts.store.material_pool_status();
    assert_eq!((status.claimed, status.fallbacks), (1, 0));
    // No object was made for the key: its material is the pool object's.
    for objects in objects_per_member(&ts.store) {
        assert!(objects.contains(&object));
        assert!(!objects.contains(&format!("{key_id}/1")), "{objects:?}");
    }

    // Sealed on one member, opened on the other.
    let members = ts.store.cluster().members();
    let aad = b"pool material on every member";
    let sealed = members[0]
        .encrypt(
            object.as_bytes(),
            &GcmSeal::new(aad, 128).unwrap(),
            b"secret",
        )
        .unwrap();
    let opened = members[1]
        .decrypt(
            object.as_bytes(),
            &Gcm::new(sealed.iv(), aad, 128).unwrap(),
            sealed.ciphertext_and_tag(),
        )
        .unwrap();
    assert_eq!(opened.as_slice(), b"secret");

    // Through the key store, which routes to either member.
    for _ in 0..4 {
        let ciphertext = common::kms::encrypt(&ts, &key_id, b"hello", &[]).unwrap();
        let plaintext = common::kms::decrypt(&ts, &ciphertext.ciphertext_blob, &[], None).unwrap();
        assert_eq!(plaintext, b"hello");
    }
    assert!(ts.store.reconcile().unwrap().is_empty());
}

#[test]
fn concurrent_create_keys_never_share_a_pool_object() {
    let ts = TestStore::new();
    ts.store.start_material_pool(16).unwrap();
    wait_warm(&ts.store, 16);
    let keys: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..3)
                        .map(|_| create(&ts.store, &ts.caller))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect()
    });
    assert_eq!(keys.len(), 24);
    let objects: Vec<String> = keys
        .iter()
        .filter_map(|key| pool_object(&ts.store, key))
        .collect();
    let distinct: BTreeSet<&String> = objects.iter().collect();
    assert_eq!(
        distinct.len(),
        objects.len(),
        "a pool object was handed out twice"
    );
    let status = ts.store.material_pool_status();
    assert_eq!(status.claimed as usize, objects.len());
    assert_eq!((status.claimed + status.fallbacks) as usize, keys.len());
    assert!(
        objects.len() >= 16,
        "only {} keys came from the pool",
        objects.len()
    );
    let ready = ready_objects(&ts.store);
    assert!(objects.iter().all(|object| !ready.contains(object)));
    assert!(ts.store.reconcile().unwrap().is_empty());
    // Every key works.
    for key in &keys {
        let ciphertext = common::kms::encrypt(&ts, key, b"x", &[]).unwrap();
        let plaintext = common::kms::decrypt(&ts, &ciphertext.ciphertext_blob, &[], None);
        assert_eq!(plaintext.unwrap(), b"x");
    }
}

#[test]
fn an_empty_pool_falls_back_to_generating() {
    let ts = TestStore::new();
    // Disabled: every key is generated.
    let key_id = create(&ts.store, &ts.caller);
    assert_eq!(pool_object(&ts.store, &key_id), None);
    assert!(
        objects_per_member(&ts.store)
            .iter()
            .all(|objects| objects.contains(&format!("{key_id}/1")))
    );

    // Drained: the key after the last ready object is generated.
    ts.store.start_material_pool(1).unwrap();
    wait_warm(&ts.store, 1);
    let pooled = create(&ts.store, &ts.caller);
    let generated = create(&ts.store, &ts.caller);
    assert!(pool_object(&ts.store, &pooled).is_some());
    assert_eq!(pool_object(&ts.store, &generated), None);
    let status = ts.store.material_pool_status();
    assert_eq!((status.claimed, status.fallbacks), (1, 1));
    let ciphertext = common::kms::encrypt(&ts, &generated, b"x", &[]).unwrap();
    let plaintext = common::kms::decrypt(&ts, &ciphertext.ciphertext_blob, &[], None);
    assert_eq!(plaintext.unwrap(), b"x");
}

#[test]
fn a_smaller_pool_destroys_its_surplus_on_every_member() {
    let ts = TestStore::new();
    ts.store.start_material_pool(5).unwrap();
    wait_warm(&ts.store, 5);
    let claimed = create(&ts.store, &ts.caller);
    let claimed = pool_object(&ts.store, &claimed).unwrap();
    let ts = ts.reopen();
    let reconciled = ts.store.start_material_pool(2).unwrap();
    // The refiller may have topped up to 5 again before the reopen.
    assert!(reconciled.surplus_destroyed.len() >= 2, "{reconciled:?}");
    assert!(reconciled.unrecorded_destroyed.is_empty());
    let ready = ready_objects(&ts.store);
    assert_eq!(ready.len(), 2);
    assert_eq!(ts.store.material_pool_status().ready, 2);
    for (member, objects) in pool_objects_per_member(&ts.store) {
        let expected: BTreeSet<String> = ready.iter().cloned().chain([claimed.clone()]).collect();
        assert_eq!(objects, expected, "{member}");
    }
    assert!(ts.store.reconcile().unwrap().is_empty());
}

/// Run by the parent tests in a child process: opens the key store with its configured
/// pool, waits for it to fill, creates one key (and crashes on the way, or while filling).
#[test]
#[ignore = "run as a child process by the crash tests"]
fn child_creates_a_pooled_key() {
    let dir = std::env::var(common::CHILD_DIR_ENV).expect("child only");
    let config =
        hsm_kms::config::Config::load(&std::path::Path::new(&dir).join("hsm-kms.toml")).unwrap();
    let store = KeyStore::open(&config).unwrap();
    wait_warm(&store, config.default_cluster().unwrap().material_pool);
    let caller = Caller::local(store.scope());
    create(&store, &caller);
}

/// A cluster initialised with a pool of `size` in its config.
fn pooled_cluster(size: usize) -> TestCluster {
    let mut cluster = TestCluster::new(2);
    cluster.config_text = cluster
        .config_text
        .replace("material_pool = 0", &format!("material_pool = {size}"));
    cluster.write_config("hsm-kms.toml", &cluster.config_text);
    cluster.init();
    cluster
}

fn keys(store: &KeyStore) -> Vec<String> {
    let caller = Caller::local(store.scope());
    store
        .list_keys(&caller, ListRequest::default())
        .unwrap()
        .keys
        .into_iter()
        .map(|key| key.key_id)
        .collect()
}

#[test]
fn a_crash_after_taking_before_recording_returns_the_object_to_the_pool() {
    let cluster = pooled_cluster(3);
    assert!(crash_child(
        &cluster,
        "child_creates_a_pooled_key",
        "create-key:pool-object-taken"
    ));
    let store = KeyStore::open(&cluster.config()).unwrap();
    assert!(keys(&store).is_empty(), "a half-created key is visible");
    // The taken object is still recorded as ready: back in the pool, nothing orphaned.
    assert_eq!(store.material_pool_status().ready, 3);
    assert!(store.startup_inconsistencies().is_empty());
    assert!(store.reconcile().unwrap().is_empty());
    for (member, objects) in pool_objects_per_member(&store) {
        assert_eq!(objects, ready_objects(&store), "{member}");
    }
    // All three go to three keys, each once.
    let caller = Caller::local(store.scope());
    let objects: BTreeSet<String> = (0..3)
        .map(|_| pool_object(&store, &create(&store, &caller)).unwrap())
        .collect();
    assert_eq!(objects.len(), 3);
}

#[test]
fn a_crash_after_the_claim_leaves_the_key_owning_its_object() {
    let cluster = pooled_cluster(3);
    assert!(crash_child(
        &cluster,
        "child_creates_a_pooled_key",
        "create-key:pool-object-claimed"
    ));
    let store = KeyStore::open(&cluster.config()).unwrap();
    let [key_id] = keys(&store).try_into().unwrap();
    let object = pool_object(&store, &key_id).unwrap();
    assert!(!ready_objects(&store).contains(&object));
    assert_eq!(store.material_pool_status().ready, 2);
    assert!(store.reconcile().unwrap().is_empty());
    let caller = Caller::local(store.scope());
    let others: BTreeSet<String> = (0..2)
        .map(|_| pool_object(&store, &create(&store, &caller)).unwrap())
        .collect();
    assert!(!others.contains(&object), "handed out twice");
    assert_eq!(others.len(), 2);
}

#[test]
fn an_object_made_but_never_recorded_is_destroyed_at_start_up() {
    let cluster = pooled_cluster(2);
    assert!(crash_child(
        &cluster,
        "child_creates_a_pooled_key",
        "material-pool:after-hsm"
    ));
    let config = cluster.config();
    let hsms = hsm_kms::cluster::Cluster::open("local", config.default_cluster().unwrap()).unwrap();
    // Opened without starting the pool, to look at what the crash left first.
    let store = KeyStore::open_with_cluster(&config, hsms).unwrap();
    let leftover = pool_objects_per_member(&store);
    assert!(
        leftover.iter().all(|(_, objects)| objects.len() == 1),
        "{leftover:?}"
    );
    assert!(ready_objects(&store).is_empty());
    let reconciled = store.start_material_pool(0).unwrap();
    assert_eq!(
        reconciled.unrecorded_destroyed,
        leftover[0].1.iter().cloned().collect::<Vec<_>>()
    );
    assert!(
        pool_objects_per_member(&store)
            .iter()
            .all(|(_, objects)| objects.is_empty())
    );
    assert!(store.reconcile().unwrap().is_empty());
}

#[test]
fn a_member_lacking_a_pool_object_gets_a_proven_copy_when_it_is_claimed() {
    let ts = TestStore::new();
    ts.store.start_material_pool(2).unwrap();
    wait_warm(&ts.store, 2);
    let members = ts.store.cluster().members();
    // As if member b had been away when the objects were pooled.
    for object in ready_objects(&ts.store) {
        members[1].destroy_key(object.as_bytes()).unwrap();
    }
    let key_id = create(&ts.store, &ts.caller);
    let object = pool_object(&ts.store, &key_id).unwrap();
    assert!(members[1].has_key(object.as_bytes()).unwrap());
    let aad = b"copied at claim";
    let sealed = members[0]
        .encrypt(object.as_bytes(), &GcmSeal::new(aad, 128).unwrap(), b"s")
        .unwrap();
    let opened = members[1]
        .decrypt(
            object.as_bytes(),
            &Gcm::new(sealed.iv(), aad, 128).unwrap(),
            sealed.ciphertext_and_tag(),
        )
        .unwrap();
    assert_eq!(opened.as_slice(), b"s");
}

#[test]
fn maintenance_catches_up_and_deletion_destroys_a_pooled_keys_object() {
    let ts = TestStore::new();
    ts.store.start_material_pool(1).unwrap();
    wait_warm(&ts.store, 1);
    let key_id = create(&ts.store, &ts.caller);
    let object = pool_object(&ts.store, &key_id).unwrap();
    let members = ts.store.cluster().members();

    // A member that lost the key's material gets it back from the key record's indirection.
    members[1].destroy_key(object.as_bytes()).unwrap();
    let report = ts.store.run_maintenance().unwrap();
    assert!(
        report
            .caught_up
            .iter()
            .any(|caught| caught.member == members[1].name() && caught.copied == [object.clone()]),
        "{report:?}"
    );
    assert!(members[1].has_key(object.as_bytes()).unwrap());

    ts.store
        .schedule_key_deletion(
            &ts.caller,
            hsm_kms::keystore::api::ScheduleKeyDeletionRequest {
                key_id: key_id.clone(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    ts.clock.advance(Duration::from_secs(8 * 24 * 3600));
    let report = ts.store.run_maintenance().unwrap();
    assert_eq!(report.deleted.len(), 1, "{report:?}");
    for member in members {
        assert!(
            !member.has_key(object.as_bytes()).unwrap(),
            "{}",
            member.name()
        );
    }
    assert!(ts.store.reconcile().unwrap().is_empty());
}

#[test]
fn maintenance_destroys_a_pool_object_nothing_names() {
    let ts = TestStore::new();
    ts.store.start_material_pool(1).unwrap();
    wait_warm(&ts.store, 1);
    let ready = ready_objects(&ts.store);
    // This store's pool objects are `hsm-kms-pool-s<owner>-<uuid>`.
    let made = ready.first().unwrap();
    let ours = &made[..made.len() - uuid::Uuid::nil().to_string().len()];
    // As if a member that was away kept a copy the others destroyed meanwhile.
    let stray = format!("{ours}stray");
    ts.store
        .cluster()
        .create_key(
            &hsm_kms::cluster::MaterialId::pool_object(stray.clone()),
            "stray",
        )
        .unwrap();
    let found = ts.store.reconcile().unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let report = ts.store.run_maintenance().unwrap();
    assert_eq!(report.material_pool.unrecorded_destroyed, vec![stray]);
    assert!(
        pool_objects_per_member(&ts.store)
            .iter()
            .all(|(_, objects)| *objects == ready)
    );
    assert!(ts.store.reconcile().unwrap().is_empty());
}

/// A second metadata store on the same cluster (a copy under test beside the original, or
/// a benchmark's sled and PostgreSQL instances): neither store's maintenance destroys the
/// other's pool objects, ready or claimed by a key.
#[test]
fn a_second_store_on_the_cluster_never_destroys_the_first_stores_pool_objects() {
    let ts = TestStore::new();
    ts.store.start_material_pool(2).unwrap();
    wait_warm(&ts.store, 2);
    let key_id = create(&ts.store, &ts.caller);
    let claimed = pool_object(&ts.store, &key_id).unwrap();
    let config = ts.cluster.config();
    let other = KeyStore::with_parts(
        ts.store.scope().clone(),
        hsm_kms::cluster::Cluster::open("local", config.default_cluster().unwrap()).unwrap(),
        Box::new(hsm_kms::store::SledStore::open(ts.cluster.path("other-store")).unwrap()),
        ts.clock.clone(),
        config.audit,
    )
    .unwrap();
    other.start_material_pool(1).unwrap();
    wait_warm(&other, 1);
    let first_ready = ready_objects(&ts.store);
    let other_ready = ready_objects(&other);

    for store in [&other, &ts.store] {
        let report = store.run_maintenance().unwrap();
        assert!(
            report.material_pool.unrecorded_destroyed.is_empty(),
            "{:?}",
            report.material_pool
        );
    }
    for (member, objects) in pool_objects_per_member(&ts.store) {
        let expected = first_ready
            .iter()
            .chain(&other_ready)
            .chain([&claimed])
            .all(|object| objects.contains(object));
        assert!(expected, "{member}: {objects:?}");
    }
    let sealed = ts
        .store
        .encrypt(
            &ts.caller,
            hsm_kms::keystore::api::EncryptRequest {
                key_id: key_id.clone(),
                plaintext: secrecy::SecretSlice::from(b"still here".to_vec()),
                ..Default::default()
            },
        )
        .unwrap();
    let opened = common::decrypt(&ts.store, &ts.caller, &sealed.ciphertext_blob);
    assert_eq!(opened, b"still here");
}

/// `/metrics` of a running server.
fn metrics(server: &common::server::Server) -> String {
    let mut response = common::server::agent()
        .get(format!("{}/metrics", server.endpoint))
        .call()
        .unwrap();
    response.body_mut().read_to_string().unwrap()
}

#[test]
fn the_server_fills_its_pool_shows_it_and_creates_keys_from_it() {
    let cluster = pooled_cluster(2);
    let mut server = common::server::Server::start(&cluster);
    let full = "hsm_kms_material_pool_ready{cluster=\"local\"} 2";
    let deadline = Instant::now() + Duration::from_secs(120);
    while !metrics(&server).contains(full) {
        assert!(Instant::now() < deadline, "{}", metrics(&server));
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = common::server::Client::new(&server, &common::server::AccessKey::of(&cluster));
    let key = client.must("CreateKey", &serde_json::json!({}));
    let key_id = key["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let sealed = client.must(
        "Encrypt",
        &serde_json::json!({ "KeyId": key_id, "Plaintext": "aGVsbG8=" }),
    );
    let opened = client.must(
        "Decrypt",
        &serde_json::json!({ "CiphertextBlob": sealed["CiphertextBlob"] }),
    );
    assert_eq!(opened["Plaintext"], "aGVsbG8=");
    server.stop();

    let status = cluster.cli(&["cluster", "status", "--json"]);
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["material_pool"]["size"], 2);
    let ready = status["material_pool"]["ready"].as_u64().unwrap();
    assert!((1..=2).contains(&ready), "{status}");
    assert_eq!(status["inconsistencies"], serde_json::json!([]), "{status}");
    // The key's material is a pool object, on both members.
    let store = KeyStore::open_with_cluster(
        &cluster.config(),
        hsm_kms::cluster::Cluster::open("local", cluster.config().default_cluster().unwrap())
            .unwrap(),
    )
    .unwrap();
    let object = pool_object(&store, &key_id).expect("the key came from the pool");
    let copies = status["key_copies"].as_array().unwrap();
    assert!(
        copies
            .iter()
            .any(|copy| copy["material"] == object.as_str() && copy["copies"] == 2),
        "{status}"
    );
}
