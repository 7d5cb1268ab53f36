//! The key store against a real two-member SoftHSM2 cluster and sled on disk: lifecycle,
//! aliases, cryptographic operations, rotation and deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestStore;
use hsm_kms::error::KmsError;
use hsm_kms::keystore::api::*;
use secrecy::{ExposeSecret, SecretSlice};

fn create(ts: &TestStore) -> KeyMetadata {
    ts.store
        .create_key(&ts.caller, CreateKeyRequest::default())
        .unwrap()
        .key_metadata
}

fn encrypt(
    ts: &TestStore,
    key: &str,
    plaintext: &[u8],
    context: &[(&str, &str)],
) -> Result<EncryptResponse, KmsError> {
    ts.store.encrypt(
        &ts.caller,
        EncryptRequest {
            key_id: key.into(),
            plaintext: SecretSlice::from(plaintext.to_vec()),
            encryption_context: ctx(context),
            ..Default::default()
        },
    )
}

fn decrypt(
    ts: &TestStore,
    blob: &[u8],
    context: &[(&str, &str)],
    key: Option<&str>,
) -> Result<Vec<u8>, KmsError> {
    ts.store
        .decrypt(
            &ts.caller,
            DecryptRequest {
                ciphertext_blob: blob.to_vec(),
                encryption_context: ctx(context),
                key_id: key.map(Into::into),
                ..Default::default()
            },
        )
        .map(|r| r.plaintext.expose_secret().to_vec())
}

fn ctx(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

fn key_id(key: &str) -> KeyIdRequest {
    KeyIdRequest {
        key_id: key.into(),
        ..Default::default()
    }
}

#[test]
fn create_describe_encrypt_decrypt_roundtrip() {
    let ts = TestStore::new();
    let key = create(&ts);
    assert_eq!(key.key_state, "Enabled");
    assert!(key.enabled);
    assert_eq!(
        key.arn,
        format!("arn:aws:kms:us-east-1:111122223333:key/{}", key.key_id)
    );
    assert_eq!(key.origin, "AWS_KMS");
    assert_eq!(key.encryption_algorithms, vec!["SYMMETRIC_DEFAULT"]);

    let sealed = encrypt(
        &ts,
        &key.key_id,
        b"hello hsm",
        &[("purpose", "test"), ("a", "b")],
    )
    .unwrap();
    assert_eq!(sealed.key_id, key.arn);
    // Order-insensitive context; KeyId optional; key ARN accepted.
    let opened = decrypt(
        &ts,
        &sealed.ciphertext_blob,
        &[("a", "b"), ("purpose", "test")],
        None,
    )
    .unwrap();
    assert_eq!(opened, b"hello hsm");
    let opened = decrypt(
        &ts,
        &sealed.ciphertext_blob,
        &[("a", "b"), ("purpose", "test")],
        Some(&key.arn),
    )
    .unwrap();
    assert_eq!(opened, b"hello hsm");

    // Alias works for crypto and DescribeKey.
    ts.store
        .create_alias(
            &ts.caller,
            AliasRequest {
                alias_name: "alias/app".into(),
                target_key_id: key.key_id.clone(),
            },
        )
        .unwrap();
    let described = ts
        .store
        .describe_key(&ts.caller, key_id("alias/app"))
        .unwrap();
    assert_eq!(described.key_metadata.key_id, key.key_id);
    let sealed = encrypt(&ts, "alias/app", b"via alias", &[]).unwrap();
    assert_eq!(
        decrypt(&ts, &sealed.ciphertext_blob, &[], None).unwrap(),
        b"via alias"
    );

    // Data keys.
    let data_key = ts
        .store
        .generate_data_key(
            &ts.caller,
            GenerateDataKeyRequest {
                key_id: "alias/app".into(),
                key_spec: Some("AES_256".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(data_key.plaintext.expose_secret().len(), 32);
    assert_eq!(
        decrypt(&ts, &data_key.ciphertext_blob, &[], None).unwrap(),
        data_key.plaintext.expose_secret()
    );
    assert!(
        !format!("{data_key:?}").contains(&format!("{:?}", data_key.plaintext.expose_secret()))
    );
}

#[test]
fn rotation_keeps_old_ciphertexts_and_deletion_destroys_material() {
    let ts = TestStore::new();
    let key = create(&ts);
    let old = encrypt(&ts, &key.key_id, b"before rotation", &[]).unwrap();
    ts.store
        .rotate_key_on_demand(&ts.caller, key_id(&key.key_id))
        .unwrap();
    let new = encrypt(&ts, &key.key_id, b"after rotation", &[]).unwrap();
    assert_ne!(
        old.ciphertext_blob[19..23],
        new.ciphertext_blob[19..23],
        "new ciphertexts name the new version"
    );
    assert_eq!(
        decrypt(&ts, &old.ciphertext_blob, &[], None).unwrap(),
        b"before rotation"
    );
    assert_eq!(
        decrypt(&ts, &new.ciphertext_blob, &[], None).unwrap(),
        b"after rotation"
    );
    let rotations = ts
        .store
        .list_key_rotations(
            &ts.caller,
            ListKeyRotationsRequest {
                key_id: key.key_id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(rotations.rotations.len(), 1);
    assert_eq!(rotations.rotations[0].rotation_type, "ON_DEMAND");

    ts.store
        .create_alias(
            &ts.caller,
            AliasRequest {
                alias_name: "alias/doomed".into(),
                target_key_id: key.key_id.clone(),
            },
        )
        .unwrap();
    let scheduled = ts
        .store
        .schedule_key_deletion(
            &ts.caller,
            ScheduleKeyDeletionRequest {
                key_id: key.key_id.clone(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    assert_eq!(scheduled.key_state, "PendingDeletion");
    let report = ts.store.run_maintenance().unwrap();
    assert!(report.deleted.is_empty(), "not due yet");
    ts.clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    let report = ts.store.run_maintenance().unwrap();
    assert_eq!(report.deleted, vec![key.arn.clone()]);
    assert!(
        report.inconsistencies.is_empty(),
        "{:?}",
        report.inconsistencies
    );
    // Only this key's objects: a checkpoint sealed meanwhile adds the audit trail's own key.
    for (member, objects) in ts.store.cluster().key_objects() {
        let mut material = objects.unwrap().into_iter().filter(|o| o.label == key.arn);
        assert!(material.next().is_none(), "material left on {member}");
    }
    let gone = ts
        .store
        .describe_key(&ts.caller, key_id(&key.key_id))
        .unwrap_err();
    assert_eq!(gone.code(), "NotFoundException");
    let aliases = ts
        .store
        .list_aliases(&ts.caller, ListAliasesRequest::default())
        .unwrap();
    assert!(aliases.aliases.is_empty());
}
