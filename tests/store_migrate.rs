//! `hsm-kms store migrate`: a sled store with keys, an alias and an audit trail copied to
//! PostgreSQL by the real binary, used there by a key store (a ciphertext made before the
//! move decrypts, the alias resolves, the trail verifies with its sealed checkpoints), and
//! copied back to a new sled directory as a backup that matches record by record.
//!
//! Skips, saying so, when `HSM_KMS_TEST_POSTGRES_URL` is not set; `scripts/test.sh`
//! always sets it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};
use std::sync::Arc;

use common::kms::*;
use common::postgres_db::TestDatabase;
use common::{TestCluster, TestStore};
use hsm_kms::audit::checkpoint::ClusterSealer;
use hsm_kms::keystore::api::*;
use hsm_kms::store::SledStore;
use hsm_kms::store::copy::verify_copy;
use secrecy::{ExposeSecret, SecretSlice};

/// The variable the migrate commands read the URL from.
const URL_VAR: &str = "HSM_KMS_MIGRATE_TEST_URL";

fn migrate(cluster: &TestCluster, database: &TestDatabase, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
        .arg("--config")
        .arg(cluster.path("hsm-kms.toml"))
        .args(["store", "migrate"])
        .args(args)
        .args(["--postgres-url", &format!("env:{URL_VAR}")])
        .env(URL_VAR, database.url.expose_secret())
        .output()
        .unwrap()
}

#[test]
fn a_sled_store_moves_to_postgres_and_back_intact() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let ts = TestStore::new();
    let key = create(&ts).key_id;
    create_alias(&ts, "alias/moved", &key).unwrap();
    let blob = encrypt(&ts, &key, b"made on sled", &[])
        .unwrap()
        .ciphertext_blob;
    let TestStore { cluster, store, .. } = ts;
    store.shutdown();
    drop(store);

    let moved = migrate(&cluster, &database, &["--from", "sled", "--to", "postgres"]);
    let stdout = String::from_utf8_lossy(&moved.stdout);
    assert!(
        moved.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert!(stdout.contains("keys: 1 records"), "{stdout}");
    assert!(stdout.contains("aliases: 1 records"), "{stdout}");
    assert!(stdout.contains("copied and verified"), "{stdout}");
    assert!(!stdout.contains(database.url.expose_secret()), "{stdout}");

    let again = migrate(&cluster, &database, &["--from", "sled", "--to", "postgres"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("the destination is not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let on_postgres = database.keystore(&cluster);
    let caller = hsm_kms::keystore::Caller::local(on_postgres.scope());
    let plaintext = on_postgres
        .decrypt(
            &caller,
            DecryptRequest {
                ciphertext_blob: blob,
                ..Default::default()
            },
        )
        .unwrap()
        .plaintext;
    assert_eq!(plaintext.expose_secret(), b"made on sled");
    on_postgres
        .encrypt(
            &caller,
            EncryptRequest {
                key_id: "alias/moved".into(),
                plaintext: SecretSlice::from(b"by the alias".to_vec()),
                ..Default::default()
            },
        )
        .unwrap();
    on_postgres.shutdown();
    drop(on_postgres);

    let store = database.store();
    let config = cluster.config();
    let hsms = hsm_kms::cluster::Cluster::open("local", config.default_cluster().unwrap()).unwrap();
    let report =
        hsm_kms::audit::verify::verify(&store, Some(&ClusterSealer::new(Arc::new(hsms))), None)
            .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(
        report.checkpoints >= 2,
        "sled's checkpoint and postgres' own"
    );

    let backup = tempfile::tempdir().unwrap();
    let back = migrate(
        &cluster,
        &database,
        &[
            "--from",
            "postgres",
            "--to",
            "sled",
            "--sled-dir",
            backup.path().to_str().unwrap(),
        ],
    );
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    let backup = SledStore::open(backup.path()).unwrap();
    let report = verify_copy(&store, &backup).unwrap();
    let total: u64 = report.records.iter().map(|(_, n)| n).sum();
    assert!(total > 4, "{report}");
}
