//! Reopening a key store that holds 100,000 keys: it opens, lists every key page by page and
//! finds any of them. (Open time and memory are measured by the key store benchmark; here
//! they are only printed.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::TestCluster;
use hsm_kms::keys::records::{KeyRecord, MaterialRecord};
use hsm_kms::keys::state::KeyState;
use hsm_kms::keystore::api::{KeyIdRequest, ListRequest};
use hsm_kms::keystore::{Caller, KeyStore};
use hsm_kms::store::{Batch, MetadataStore, SledStore, Table};

const KEYS: usize = 100_000;

fn record(key_id: String, now: i64) -> KeyRecord {
    KeyRecord {
        key_id,
        account_id: "111122223333".into(),
        region: "us-east-1".into(),
        cluster: "local".into(),
        custom_key_store_id: None,
        creation_date: now,
        description: "scale".into(),
        key_usage: "ENCRYPT_DECRYPT".into(),
        key_spec: "SYMMETRIC_DEFAULT".into(),
        origin: "AWS_KMS".into(),
        state: KeyState::Enabled,
        deletion_date: None,
        pending_window_days: None,
        tags: Default::default(),
        materials: vec![MaterialRecord {
            version: 1,
            created: now,
            rotation_type: None,
            pool_object: None,
        }],
        rotation: None,
        destruction_pending: Vec::new(),
        destruction_started: false,
        policy: None,
        public_key: None,
        parsed_policy: Default::default(),
        import: None,
        multi_region: None,
        key_manager: Default::default(),
    }
}

#[test]
fn reopen_with_100k_keys() {
    let cluster = TestCluster::new(2);
    assert!(cluster.cli(&["cluster", "init"]).status.success());
    let config = cluster.config();
    let mut ids = Vec::with_capacity(KEYS);
    {
        let store = SledStore::open(&config.service.data_dir).unwrap();
        for chunk in 0..KEYS / 1000 {
            let mut batch = Batch::new();
            for _ in 0..1000 {
                let id = uuid::Uuid::new_v4().to_string();
                batch.put(
                    Table::Keys,
                    id.as_bytes(),
                    serde_json::to_vec(&record(id.clone(), 0)).unwrap(),
                );
                ids.push(id);
            }
            store.commit(batch).unwrap().unwrap();
            let _ = chunk;
        }
    }
    let started = Instant::now();
    let store = KeyStore::open(&config).unwrap();
    eprintln!(
        "opened a key store with {KEYS} keys in {:?}",
        started.elapsed()
    );
    let caller = Caller::local(store.scope());

    let mut listed = 0;
    let mut marker = None;
    loop {
        let page = store
            .list_keys(
                &caller,
                ListRequest {
                    limit: Some(1000),
                    marker: marker.take(),
                },
            )
            .unwrap();
        listed += page.keys.len();
        if !page.truncated {
            break;
        }
        marker = page.next_marker;
    }
    assert_eq!(listed, KEYS);
    for id in [&ids[0], &ids[KEYS / 2], &ids[KEYS - 1]] {
        let described = store
            .describe_key(
                &caller,
                KeyIdRequest {
                    key_id: id.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(&described.key_metadata.key_id, id);
    }
}
