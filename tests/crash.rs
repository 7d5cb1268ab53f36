//! Crash consistency: a process killed between the HSM write and the metadata write of a new
//! key leaves no key a caller can see, and start-up and reconciliation report what it left in
//! the HSMs — without deleting it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::TestCluster;
use hsm_kms::keystore::api::{CreateKeyRequest, ListRequest};
use hsm_kms::keystore::{Caller, Inconsistency, KeyStore};

const CHILD_DIR_ENV: &str = "HSM_KMS_TEST_CLUSTER_DIR";

/// Run by the parent test in a child process: creates one key (and crashes on the way).
#[test]
#[ignore = "run as a child process by the crash tests"]
fn child_creates_a_key() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("child only");
    let config =
        hsm_kms::config::Config::load(&std::path::Path::new(&dir).join("hsm-kms.toml")).unwrap();
    let store = KeyStore::open(&config).unwrap();
    let caller = Caller::local(store.scope());
    store
        .create_key(&caller, CreateKeyRequest::default())
        .unwrap();
}

/// Runs `child_creates_a_key` with a crash point; returns whether it was killed.
fn crash_child(cluster: &TestCluster, point: &str) -> bool {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_creates_a_key", "--ignored", "--nocapture"])
        .env(CHILD_DIR_ENV, cluster.dir.path())
        .env(hsm_kms::fault::CRASH_AT_ENV, point)
        .status()
        .unwrap();
    !status.success()
}

fn open(cluster: &TestCluster) -> KeyStore {
    KeyStore::open(&cluster.config()).unwrap()
}

#[test]
fn crash_after_hsm_write_leaves_reported_material_and_no_key() {
    let cluster = TestCluster::new(2);
    assert!(cluster.cli(&["cluster", "init"]).status.success());
    assert!(
        crash_child(&cluster, "create-material:after-hsm"),
        "the child did not crash"
    );

    let store = open(&cluster);
    let caller = Caller::local(store.scope());
    let keys = store.list_keys(&caller, ListRequest::default()).unwrap();
    assert!(keys.keys.is_empty(), "a half-created key is visible");
    let [Inconsistency::InterruptedCreate { material }] = store.startup_inconsistencies() else {
        panic!("start-up reported {:?}", store.startup_inconsistencies());
    };
    // The material is still in both HSMs: reported, never silently deleted.
    for (member, objects) in store.cluster().key_objects() {
        let objects = objects.unwrap();
        assert_eq!(objects.len(), 1, "{member}");
        assert_eq!(String::from_utf8_lossy(&objects[0].id), *material);
    }
    let found = store.reconcile().unwrap();
    assert_eq!(
        found,
        vec![Inconsistency::InterruptedCreate {
            material: material.clone()
        }]
    );

    // The store keeps working.
    let key = store
        .create_key(&caller, CreateKeyRequest::default())
        .unwrap();
    assert_eq!(
        store
            .list_keys(&caller, ListRequest::default())
            .unwrap()
            .keys
            .len(),
        1
    );
    assert_eq!(key.key_metadata.key_state, "Enabled");
}

#[test]
fn crash_before_hsm_write_leaves_only_a_reported_intent() {
    let cluster = TestCluster::new(2);
    assert!(cluster.cli(&["cluster", "init"]).status.success());
    assert!(
        crash_child(&cluster, "create-material:before-hsm"),
        "the child did not crash"
    );

    let store = open(&cluster);
    let caller = Caller::local(store.scope());
    assert!(
        store
            .list_keys(&caller, ListRequest::default())
            .unwrap()
            .keys
            .is_empty()
    );
    assert!(matches!(
        store.startup_inconsistencies(),
        [Inconsistency::InterruptedCreate { .. }]
    ));
    for (member, objects) in store.cluster().key_objects() {
        assert!(objects.unwrap().is_empty(), "{member}");
    }
}
