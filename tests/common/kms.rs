//! Short calls into a [`TestStore`]'s key store, and a snapshot of everything a caller can see,
//! for checking that a refused call changed nothing.

use std::collections::BTreeMap;
use std::fmt::Debug;

use hsm_kms::error::KmsError;
use hsm_kms::key_import::{WrappingAlgorithm, wrap_key_material};
use hsm_kms::keystore::api::*;
use hsm_kms::keystore::{Caller, KeyStore};
use secrecy::{ExposeSecret, SecretSlice};

use super::TestStore;

/// A new key with default settings.
pub fn create(ts: &TestStore) -> KeyMetadata {
    ts.store
        .create_key(&ts.caller, CreateKeyRequest::default())
        .unwrap()
        .key_metadata
}

/// The key's metadata now.
pub fn describe(ts: &TestStore, key: &str) -> KeyMetadata {
    ts.store
        .describe_key(&ts.caller, key_id(key))
        .unwrap()
        .key_metadata
}

pub fn key_id(key: &str) -> KeyIdRequest {
    KeyIdRequest {
        key_id: key.into(),
        ..Default::default()
    }
}

/// An encryption context from pairs; no pairs is no context.
pub fn ctx(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

pub fn encrypt(
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

pub fn decrypt(
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

pub fn create_alias(ts: &TestStore, name: &str, target: &str) -> Result<(), KmsError> {
    ts.store.create_alias(
        &ts.caller,
        AliasRequest {
            alias_name: name.into(),
            target_key_id: target.into(),
        },
    )
}

pub fn update_alias(ts: &TestStore, name: &str, target: &str) -> Result<(), KmsError> {
    ts.store.update_alias(
        &ts.caller,
        AliasRequest {
            alias_name: name.into(),
            target_key_id: target.into(),
        },
    )
}

/// Every alias, optionally of one key.
pub fn aliases(ts: &TestStore, key: Option<&str>) -> Vec<AliasListEntry> {
    ts.store
        .list_aliases(
            &ts.caller,
            ListAliasesRequest {
                key_id: key.map(Into::into),
                limit: Some(1000),
                marker: None,
            },
        )
        .unwrap()
        .aliases
}

/// The (code, message) of a call that must fail.
#[track_caller]
pub fn failure<T: Debug>(result: Result<T, KmsError>) -> (String, String) {
    match result {
        Ok(value) => panic!("expected an exception, got Ok({value:?})"),
        Err(error) => (error.code().to_owned(), error.message().to_owned()),
    }
}

/// Everything a caller (and an HSM auditor) can see: every key's metadata, tags, rotation
/// settings, rotations and aliases, every alias, and the key objects on each HSM member.
pub fn snapshot(ts: &TestStore) -> String {
    let caller = &ts.caller;
    let store = &ts.store;
    let keys = store
        .list_keys(
            caller,
            ListRequest {
                limit: Some(1000),
                marker: None,
            },
        )
        .unwrap();
    let mut out = String::new();
    for key in &keys.keys {
        let id = key.key_id.as_str();
        let metadata = describe(ts, id);
        let tags = store
            .list_resource_tags(
                caller,
                ListResourceTagsRequest {
                    key_id: id.into(),
                    ..Default::default()
                },
            )
            .unwrap();
        // Keys of origin EXTERNAL have no rotation: the refusal is what a caller sees.
        let status = store
            .get_key_rotation_status(caller, key_id(id))
            .map(|status| format!("{status:?}"))
            .unwrap_or_else(|error| error.code().to_owned());
        let rotations = store
            .list_key_rotations(
                caller,
                ListKeyRotationsRequest {
                    key_id: id.into(),
                    ..Default::default()
                },
            )
            .map(|rotations| format!("{rotations:?}"))
            .unwrap_or_else(|error| error.code().to_owned());
        out.push_str(&format!(
            "{metadata:?}\n{tags:?}\n{status:?}\n{rotations:?}\n{:?}\n",
            aliases(ts, Some(id))
        ));
    }
    out.push_str(&format!("{:?}\n", aliases(ts, None)));
    for (member, objects) in store.cluster().key_objects() {
        // Internal objects (the audit checkpoint key appears on first use) are not key material.
        let mut ids: Vec<Vec<u8>> = objects
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .filter(|id| !id.starts_with(b"hsm-kms-"))
            .collect();
        ids.sort();
        out.push_str(&format!("{member}: {ids:?}\n"));
    }
    out
}

/// Runs a call that must be refused and checks that it changed nothing; returns its
/// (code, message).
#[track_caller]
pub fn refused<T: Debug>(
    ts: &TestStore,
    call: impl FnOnce() -> Result<T, KmsError>,
) -> (String, String) {
    let before = snapshot(ts);
    let outcome = failure(call());
    assert_eq!(
        snapshot(ts),
        before,
        "a refused call ({outcome:?}) changed something"
    );
    outcome
}

/// An import token for the copy of `key` in `caller`'s Region and `material` wrapped for it,
/// as a user does it: RSAES_OAEP_SHA_1 under a fresh RSA_2048 wrapping key.
pub fn wrapped_for_import(
    store: &KeyStore,
    caller: &Caller,
    key: &str,
    material: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let params = store
        .get_parameters_for_import(
            caller,
            GetParametersForImportRequest {
                key_id: key.into(),
                wrapping_algorithm: "RSAES_OAEP_SHA_1".into(),
                wrapping_key_spec: "RSA_2048".into(),
            },
        )
        .unwrap();
    let wrapped = wrap_key_material(
        &params.public_key,
        WrappingAlgorithm::RsaesOaepSha1,
        "SYMMETRIC_DEFAULT",
        &SecretSlice::from(material.to_vec()),
    )
    .unwrap();
    (params.import_token, wrapped)
}
