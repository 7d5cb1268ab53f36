//! Crash consistency: a process killed between the HSM write and the metadata write of a new
//! key leaves no key a caller can see, and start-up and reconciliation report what it left in
//! the HSMs — without deleting it. A process killed while carrying out a deletion leaves a key
//! that can no longer be cancelled, and the next maintenance run finishes the deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestCluster;
use hsm_kms::keystore::api::{
    CreateKeyRequest, KeyIdRequest, ListRequest, ScheduleKeyDeletionRequest,
};
use hsm_kms::keystore::{Caller, Inconsistency, KeyStore};

/// Run by the parent test in a child process: creates one key (and crashes on the way).
#[test]
#[ignore = "run as a child process by the crash tests"]
fn child_creates_a_key() {
    let dir = std::env::var(common::CHILD_DIR_ENV).expect("child only");
    let config =
        hsm_kms::config::Config::load(&std::path::Path::new(&dir).join("hsm-kms.toml")).unwrap();
    let store = KeyStore::open(&config).unwrap();
    let caller = Caller::local(store.scope());
    store
        .create_key(&caller, CreateKeyRequest::default())
        .unwrap();
}

/// Run by the parent test in a child process: creates a key, schedules its deletion, moves
/// its clock past the date and runs maintenance (and crashes on the way).
#[test]
#[ignore = "run as a child process by the crash tests"]
fn child_deletes_a_key() {
    let dir = std::env::var(common::CHILD_DIR_ENV).expect("child only");
    let config =
        hsm_kms::config::Config::load(&std::path::Path::new(&dir).join("hsm-kms.toml")).unwrap();
    let cluster =
        hsm_kms::cluster::Cluster::open("local", config.default_cluster().unwrap()).unwrap();
    let metadata = hsm_kms::store::SledStore::open(&config.service.data_dir).unwrap();
    let scope =
        hsm_kms::ids::Scope::new(&config.service.region, &config.service.account_id).unwrap();
    let clock = std::sync::Arc::new(hsm_kms::clock::ManualClock::new());
    let store = KeyStore::with_parts(
        scope,
        cluster,
        Box::new(metadata),
        clock.clone(),
        config.audit,
    )
    .unwrap();
    let caller = Caller::local(store.scope());
    let key = store
        .create_key(&caller, CreateKeyRequest::default())
        .unwrap();
    store
        .schedule_key_deletion(
            &caller,
            ScheduleKeyDeletionRequest {
                key_id: key.key_metadata.key_id,
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    clock.advance(std::time::Duration::from_secs(8 * 24 * 3600));
    store.run_maintenance().unwrap();
}

/// Runs `child_creates_a_key` with a crash point; returns whether it was killed.
fn crash_child(cluster: &TestCluster, point: &str) -> bool {
    crash_child_running(cluster, "child_creates_a_key", point)
}

/// Runs the child test `child` with a crash point; returns whether it was killed.
fn crash_child_running(cluster: &TestCluster, child: &str, point: &str) -> bool {
    common::crash_child(cluster, child, point)
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

#[test]
fn crash_during_deletion_is_resumed_and_never_cancelled() {
    for point in ["delete-key:after-mark", "delete-key:after-hsm"] {
        let cluster = TestCluster::new(2);
        assert!(cluster.cli(&["cluster", "init"]).status.success());
        assert!(
            crash_child_running(&cluster, "child_deletes_a_key", point),
            "the child did not crash at {point}"
        );

        let store = open(&cluster);
        let caller = Caller::local(store.scope());
        let keys = store.list_keys(&caller, ListRequest::default()).unwrap();
        let [key] = &keys.keys[..] else {
            panic!(
                "{point}: expected the key being deleted, found {:?}",
                keys.keys
            );
        };
        let request = || KeyIdRequest {
            key_id: key.key_id.clone(),
            ..Default::default()
        };
        let described = store.describe_key(&caller, request()).unwrap();
        assert_eq!(
            described.key_metadata.key_state, "PendingDeletion",
            "{point}"
        );
        let refused = store.cancel_key_deletion(&caller, request()).unwrap_err();
        assert_eq!(refused.code(), "KMSInvalidStateException", "{point}");
        assert_eq!(
            refused.message(),
            format!(
                "{} is pending deletion and its deletion has already begun.",
                key.key_arn
            )
        );

        // The deletion date lies days ahead on this clock: the mark alone resumes it.
        let report = store.run_maintenance().unwrap();
        assert_eq!(report.deleted, vec![key.key_arn.clone()], "{point}");
        assert!(report.failures.is_empty(), "{point}: {:?}", report.failures);
        // Only this key's objects count: a checkpoint sealed meanwhile (the clock lies days
        // ahead) adds the audit trail's internal key.
        for (member, objects) in store.cluster().key_objects() {
            let left: Vec<_> = objects
                .unwrap()
                .into_iter()
                .filter(|object| object.label == key.key_arn)
                .collect();
            assert!(left.is_empty(), "{point}: material left on {member}");
        }
        let gone = store.describe_key(&caller, request()).unwrap_err();
        assert_eq!(gone.code(), "NotFoundException", "{point}");
    }
}
