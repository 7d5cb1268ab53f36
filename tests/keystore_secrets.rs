//! Secrets stay out of what the key store writes and prints: after encrypting a marker
//! plaintext and generating data keys against a real two-member SoftHSM2 cluster, neither the
//! marker nor any data key appears in any file of the data directory (the sled database) or
//! the HSM token directories, nor in an error message or the `Debug` output of a request or
//! response.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::TestStore;
use common::kms::*;
use hsm_kms::keystore::api::*;
use secrecy::{ExposeSecret, SecretSlice};

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The ways a secret could be written out: its bytes, hex (both cases), base64, and `Debug`
/// of the byte vector.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode(secret).to_uppercase().into_bytes(),
        STANDARD.encode(secret).into_bytes(),
        format!("{secret:?}").into_bytes(),
    ]
}

/// Panics if `text` holds `secret` in any of its [`encodings`].
fn assert_hidden(text: &str, secret: &[u8], what: &str) {
    for form in encodings(secret) {
        assert!(
            !contains(text.as_bytes(), &form),
            "{what} shows a secret: {text}"
        );
    }
}

#[test]
fn plaintext_and_data_keys_never_reach_disk_errors_or_debug_output() {
    let ts = TestStore::new();
    let mut marker = b"PLAINTEXT-MARKER-".repeat(4);
    marker.truncate(64);
    let description = "DESCRIPTION-MARKER-visible-in-metadata";
    let key = ts
        .store
        .create_key(
            &ts.caller,
            CreateKeyRequest {
                description: Some(description.into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata;
    let k = key.key_id.as_str();
    let context = [("purpose", "secrets-test")];

    // The secrets: the marker, two data keys and random bytes.
    let request = EncryptRequest {
        key_id: k.into(),
        plaintext: SecretSlice::from(marker.clone()),
        encryption_context: ctx(&context),
        ..Default::default()
    };
    assert_hidden(&format!("{request:?}"), &marker, "EncryptRequest Debug");
    let sealed = ts.store.encrypt(&ts.caller, request).unwrap();
    assert_hidden(&format!("{sealed:?}"), &marker, "EncryptResponse Debug");
    let opened = ts
        .store
        .decrypt(
            &ts.caller,
            DecryptRequest {
                ciphertext_blob: sealed.ciphertext_blob.clone(),
                encryption_context: ctx(&context),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(opened.plaintext.expose_secret(), &marker[..]);
    assert_hidden(&format!("{opened:?}"), &marker, "DecryptResponse Debug");
    let moved = ts
        .store
        .re_encrypt(
            &ts.caller,
            ReEncryptRequest {
                ciphertext_blob: sealed.ciphertext_blob.clone(),
                source_encryption_context: ctx(&context),
                destination_key_id: k.into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_hidden(&format!("{moved:?}"), &marker, "ReEncryptResponse Debug");

    let mut secrets = vec![("marker", marker.clone())];
    for (spec, bytes) in [(Some("AES_256"), None), (None, Some(64))] {
        let data_key = ts
            .store
            .generate_data_key(
                &ts.caller,
                GenerateDataKeyRequest {
                    key_id: k.into(),
                    key_spec: spec.map(Into::into),
                    number_of_bytes: bytes,
                    encryption_context: ctx(&context),
                    ..Default::default()
                },
            )
            .unwrap();
        let plaintext = data_key.plaintext.expose_secret().to_vec();
        assert_hidden(
            &format!("{data_key:?}"),
            &plaintext,
            "GenerateDataKeyResponse Debug",
        );
        assert_eq!(
            decrypt(&ts, &data_key.ciphertext_blob, &context, None).unwrap(),
            plaintext
        );
        secrets.push(("data key", plaintext));
    }
    let random = ts
        .store
        .generate_random(
            &ts.caller,
            GenerateRandomRequest {
                number_of_bytes: Some(64),
                custom_key_store_id: None,
            },
        )
        .unwrap();
    let random_bytes = random.plaintext.expose_secret().to_vec();
    assert_hidden(
        &format!("{random:?}"),
        &random_bytes,
        "GenerateRandomResponse Debug",
    );
    secrets.push(("random bytes", random_bytes));

    // The secrets of the asymmetric and HMAC operations: a data key pair's private key, an
    // ECDH shared secret, and a message given to GenerateMac.
    let pair = ts
        .store
        .generate_data_key_pair(
            &ts.caller,
            GenerateDataKeyPairRequest {
                key_id: k.into(),
                key_pair_spec: "ECC_NIST_P256".into(),
                encryption_context: ctx(&context),
                ..Default::default()
            },
        )
        .unwrap();
    let private_key = pair.private_key_plaintext.expose_secret().to_vec();
    assert_hidden(
        &format!("{pair:?}"),
        &private_key,
        "GenerateDataKeyPairResponse Debug",
    );
    secrets.push(("data key pair private key", private_key));
    let agreeing = |usage: &str, spec: &str| {
        ts.store
            .create_key(
                &ts.caller,
                CreateKeyRequest {
                    key_spec: Some(spec.into()),
                    key_usage: Some(usage.into()),
                    ..Default::default()
                },
            )
            .unwrap()
            .key_metadata
            .key_id
    };
    let ours = agreeing("KEY_AGREEMENT", "ECC_NIST_P256");
    let theirs = agreeing("KEY_AGREEMENT", "ECC_NIST_P256");
    let their_public = ts
        .store
        .get_public_key(&ts.caller, key_id(&theirs))
        .unwrap()
        .public_key;
    let shared = ts
        .store
        .derive_shared_secret(
            &ts.caller,
            DeriveSharedSecretRequest {
                key_id: ours,
                key_agreement_algorithm: "ECDH".into(),
                public_key: their_public,
                ..Default::default()
            },
        )
        .unwrap();
    let shared_secret = shared.shared_secret.expose_secret().to_vec();
    assert_hidden(
        &format!("{shared:?}"),
        &shared_secret,
        "DeriveSharedSecretResponse Debug",
    );
    secrets.push(("shared secret", shared_secret));
    let mac_message = b"MAC-MESSAGE-MARKER-0123456789abcdef".to_vec();
    let mac_request = GenerateMacRequest {
        message: SecretSlice::from(mac_message.clone()),
        key_id: agreeing("GENERATE_VERIFY_MAC", "HMAC_256"),
        mac_algorithm: "HMAC_SHA_256".into(),
        ..Default::default()
    };
    assert_hidden(
        &format!("{mac_request:?}"),
        &mac_message,
        "GenerateMacRequest Debug",
    );
    ts.store.generate_mac(&ts.caller, mac_request).unwrap();
    secrets.push(("MAC message", mac_message));

    // Refusals around the secrets do not repeat them.
    let mut errors = vec![
        decrypt(&ts, &sealed.ciphertext_blob, &[("purpose", "other")], None).unwrap_err(),
        encrypt(&ts, k, &[&marker[..]; 65].concat(), &context).unwrap_err(),
        encrypt(&ts, "alias/missing", &marker, &context).unwrap_err(),
    ];
    let mut flipped = sealed.ciphertext_blob.clone();
    flipped[40] ^= 1;
    errors.push(decrypt(&ts, &flipped, &context, None).unwrap_err());
    ts.store.disable_key(&ts.caller, key_id(k)).unwrap();
    errors.push(encrypt(&ts, k, &marker, &context).unwrap_err());
    errors.push(decrypt(&ts, &sealed.ciphertext_blob, &context, None).unwrap_err());
    ts.store.enable_key(&ts.caller, key_id(k)).unwrap();
    for error in &errors {
        for (what, secret) in &secrets {
            assert_hidden(&format!("{error} {error:?}"), secret, what);
        }
    }

    // Close the store, then read every byte it and the HSMs left on disk.
    let TestStore { cluster, store, .. } = ts;
    drop(store);
    let data_dir = cluster.config().service.data_dir;
    let data_files = files(&data_dir);
    assert!(!data_files.is_empty());
    let data: Vec<(PathBuf, Vec<u8>)> = data_files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    // The search sees what the store wrote: the description and the key id are there.
    for visible in [description.as_bytes(), k.as_bytes()] {
        assert!(
            data.iter().any(|(_, bytes)| contains(bytes, visible)),
            "{} not found in the data directory",
            String::from_utf8_lossy(visible)
        );
    }
    for (path, bytes) in &data {
        for (what, secret) in &secrets {
            for form in encodings(secret) {
                assert!(
                    !contains(bytes, &form),
                    "{what} found in {}",
                    path.display()
                );
            }
        }
    }
    // The audit trail's records are compressed on disk, so its events are also searched as
    // the trail reads them back.
    let metadata = hsm_kms::store::SledStore::open(&data_dir).unwrap();
    let events = hsm_kms::audit::log::read_events(&metadata, 0, usize::MAX).unwrap();
    assert!(
        events
            .iter()
            .any(|event| contains(&event.json, k.as_bytes())),
        "the key's events are not in the audit trail"
    );
    for event in &events {
        for (what, secret) in &secrets {
            for form in encodings(secret) {
                assert!(
                    !contains(&event.json, &form),
                    "{what} found in audit event {}",
                    event.seq
                );
            }
        }
    }
    drop(metadata);
    // Nor anywhere else under the cluster directory (HSM tokens, configs).
    for path in files(cluster.dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        for (what, secret) in &secrets {
            assert!(
                !contains(&bytes, secret),
                "{what} found in {}",
                path.display()
            );
        }
    }
}
