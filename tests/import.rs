//! Imported key material (origin EXTERNAL) against a real two-member SoftHSM2 cluster: the
//! whole flow with both wrapping algorithms SoftHSM2 can open, the material proven to be the
//! user's (an independent AES-GCM of the same plaintext under it gives the same bytes),
//! delete and re-import of the same material, every bad input the issue lists with AWS's
//! exception and the key and the HSMs unchanged (raw PKCS#11 searches), expiry with the
//! injectable clock, deletion with a member away, and the material never written anywhere.
//! HMAC material of every allowed length, and RSA and ECC private keys made by openssl: the
//! MAC is the material's, GetPublicKey is the original key's and openssl verifies the
//! signatures; material that does not fit the spec is refused and leaves nothing; imported
//! HMAC and EC material is caught up by a member that lost it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use cryptoki::object::{Attribute, ObjectClass};
use secrecy::SecretSlice;

use common::kms::*;
use common::{TestCluster, TestStore, raw_session};
use hsm_kms::clock::Clock;
use hsm_kms::error::KmsError;
use hsm_kms::key_import::{WrappingAlgorithm, wrap_key_material};
use hsm_kms::keystore::api::*;

const MEMBERS: [&str; 2] = ["hsm-a", "hsm-b"];
const HOUR: Duration = Duration::from_secs(3600);

/// Secret key objects of `key_id`'s material on each member (token objects, by CKA_ID).
fn material_objects(ts: &TestStore, key_id: &str) -> Vec<usize> {
    MEMBERS
        .iter()
        .map(|member| {
            raw_session(&ts.cluster, member)
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Id(format!("{key_id}/1").into_bytes()),
                ])
                .unwrap()
                .len()
        })
        .collect()
}

fn material_objects_on(ts: &TestStore, member: &str, key_id: &str) -> usize {
    raw_session(&ts.cluster, member)
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Id(format!("{key_id}/1").into_bytes()),
        ])
        .unwrap()
        .len()
}

/// Every secret key object on every member, session objects of a failed import included
/// (internal keys, such as the audit checkpoint key that appears on first use, aside).
fn secret_objects(ts: &TestStore) -> Vec<usize> {
    MEMBERS
        .iter()
        .map(|member| {
            let session = raw_session(&ts.cluster, member);
            session
                .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
                .unwrap()
                .into_iter()
                .filter(|handle| {
                    let id = session
                        .get_attributes(*handle, &[cryptoki::object::AttributeType::Id])
                        .unwrap()
                        .into_iter()
                        .find_map(|a| match a {
                            Attribute::Id(id) => Some(id),
                            _ => None,
                        })
                        .unwrap_or_default();
                    !id.starts_with(b"hsm-kms-") || id == b"hsm-kms-import-check"
                })
                .count()
        })
        .collect()
}

/// In vendor mode (HSM_KMS_TEST_REPLICATION=vendor) the module in front of the HSMs offers no
/// C_GenerateKeyPair or C_UnwrapKey: import is refused as unsupported, and the test ends.
fn import_unsupported(ts: &TestStore) -> bool {
    if !common::vendor::enabled() {
        return false;
    }
    let key = create_external(ts);
    let error = parameters(ts, &key.key_id, "RSAES_OAEP_SHA_1", "RSA_2048").unwrap_err();
    assert_eq!(error.code(), "UnsupportedOperationException", "{error:?}");
    true
}

fn create_external(ts: &TestStore) -> KeyMetadata {
    ts.store
        .create_key(
            &ts.caller,
            CreateKeyRequest {
                origin: Some("EXTERNAL".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata
}

fn parameters(
    ts: &TestStore,
    key: &str,
    algorithm: &str,
    spec: &str,
) -> Result<GetParametersForImportResponse, KmsError> {
    ts.store.get_parameters_for_import(
        &ts.caller,
        GetParametersForImportRequest {
            key_id: key.into(),
            wrapping_algorithm: algorithm.into(),
            wrapping_key_spec: spec.into(),
        },
    )
}

fn import(
    ts: &TestStore,
    key: &str,
    token: &[u8],
    wrapped: &[u8],
    model: Option<&str>,
    valid_to: Option<f64>,
) -> Result<(), KmsError> {
    ts.store.import_key_material(
        &ts.caller,
        ImportKeyMaterialRequest {
            key_id: key.into(),
            import_token: token.to_vec(),
            encrypted_key_material: wrapped.to_vec(),
            valid_to,
            expiration_model: model.map(str::to_owned),
        },
    )
}

/// Imports `material` into `key` with `algorithm`, without expiry.
fn import_material(ts: &TestStore, key: &str, material: &[u8; 32], algorithm: WrappingAlgorithm) {
    let params = parameters(ts, key, algorithm.as_str(), "RSA_3072").unwrap();
    let wrapped = wrap(&params.public_key, algorithm, material);
    import(
        ts,
        key,
        &params.import_token,
        &wrapped,
        Some("KEY_MATERIAL_DOES_NOT_EXPIRE"),
        None,
    )
    .unwrap();
}

fn wrap(public_key: &[u8], algorithm: WrappingAlgorithm, material: &[u8]) -> Vec<u8> {
    wrap_key_material(
        public_key,
        algorithm,
        "SYMMETRIC_DEFAULT",
        &SecretSlice::from(material.to_vec()),
    )
    .unwrap()
}

fn material(byte: u8) -> [u8; 32] {
    let mut material = [0u8; 32];
    getrandom::fill(&mut material).unwrap();
    material[0] = byte;
    material
}

fn decrypt_blob(ts: &TestStore, blob: &[u8]) -> Result<Vec<u8>, KmsError> {
    decrypt(ts, blob, &[("purpose", "import test")], None).map(|plaintext| plaintext.to_vec())
}

/// What Decrypt's ciphertext must be if the key's material is `material`: AES-256-GCM with
/// the blob's IV and AAD (header, then the canonical context), computed here without the
/// key store.
fn independent_ciphertext(material: &[u8; 32], blob: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let header = &blob[..23];
    let iv = &blob[23..35];
    let mut aad = header.to_vec();
    let context = hsm_kms::crypto::context::EncryptionContext::new(
        [("purpose".to_owned(), "import test".to_owned())].into(),
    )
    .unwrap();
    aad.extend_from_slice(&context.canonical_bytes());
    let cipher = Aes256Gcm::new_from_slice(material).unwrap();
    let sealed = cipher
        .encrypt(
            &Nonce::try_from(iv).unwrap(),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap();
    [header, iv, &sealed].concat()
}

#[test]
fn external_keys_import_delete_and_reimport_the_same_material() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    for algorithm in [
        WrappingAlgorithm::RsaesOaepSha1,
        WrappingAlgorithm::RsaAesKeyWrapSha1,
    ] {
        let key = create_external(&ts);
        let id = key.key_id.as_str();
        assert_eq!(key.key_state, "PendingImport");
        assert_eq!(key.origin, "EXTERNAL");
        assert!(!key.enabled);
        assert_eq!(material_objects(&ts, id), [0, 0]);
        let refused = encrypt(&ts, id, b"x", &[]).unwrap_err();
        assert_eq!(
            (refused.code(), refused.message().to_owned()),
            (
                "KMSInvalidStateException",
                format!("{} is pending import.", key.arn)
            )
        );

        let ours = material(1);
        let params = parameters(&ts, id, algorithm.as_str(), "RSA_2048").unwrap();
        assert_eq!(params.key_id, key.arn);
        let now = ts.clock.now_millis() as f64 / 1000.0;
        assert!((params.parameters_valid_to - now - 86400.0).abs() < 1.0);
        let wrapped = wrap(&params.public_key, algorithm, &ours);
        let valid_to = now + 30.0 * 86400.0;
        import(
            &ts,
            id,
            &params.import_token,
            &wrapped,
            Some("KEY_MATERIAL_EXPIRES"),
            Some(valid_to.trunc()),
        )
        .unwrap();
        let described = describe(&ts, id);
        assert_eq!(described.key_state, "Enabled");
        assert_eq!(
            described.expiration_model.as_deref(),
            Some("KEY_MATERIAL_EXPIRES")
        );
        assert_eq!(described.valid_to, Some(valid_to.trunc()));
        assert_eq!(
            material_objects(&ts, id),
            [1, 1],
            "replicated to both members"
        );

        // The material in the HSMs is the user's: an independent AES-GCM agrees.
        let plaintext = b"imported material really is ours";
        let blob = encrypt(&ts, id, plaintext, &[("purpose", "import test")])
            .unwrap()
            .ciphertext_blob;
        assert_eq!(
            blob,
            independent_ciphertext(&ours, &blob, plaintext),
            "{algorithm:?}"
        );

        // Deleted: unusable, gone from both members, pending import again.
        ts.store
            .delete_imported_key_material(&ts.caller, key_id(id))
            .unwrap();
        let deleted = describe(&ts, id);
        assert_eq!(deleted.key_state, "PendingImport");
        assert_eq!(deleted.valid_to, None);
        assert_eq!(material_objects(&ts, id), [0, 0]);
        assert_eq!(
            decrypt_blob(&ts, &blob).unwrap_err().code(),
            "KMSInvalidStateException"
        );

        // Other material is refused, and nothing stays behind.
        let before = secret_objects(&ts);
        let params = parameters(&ts, id, algorithm.as_str(), "RSA_4096").unwrap();
        let other = wrap(&params.public_key, algorithm, &material(2));
        let refused = import(
            &ts,
            id,
            &params.import_token,
            &other,
            Some("KEY_MATERIAL_DOES_NOT_EXPIRE"),
            None,
        )
        .unwrap_err();
        assert_eq!(refused.code(), "IncorrectKeyMaterialException");
        assert_eq!(describe(&ts, id).key_state, "PendingImport");
        assert_eq!(secret_objects(&ts), before);

        // The same material again: the old ciphertext decrypts.
        import_material(&ts, id, &ours, algorithm);
        let reimported = describe(&ts, id);
        assert_eq!(reimported.key_state, "Enabled");
        assert_eq!(
            reimported.expiration_model.as_deref(),
            Some("KEY_MATERIAL_DOES_NOT_EXPIRE")
        );
        assert_eq!(reimported.valid_to, None);
        assert_eq!(decrypt_blob(&ts, &blob).unwrap(), plaintext);
        assert_eq!(material_objects(&ts, id), [1, 1]);

        // Re-importing into a key that has its material checks it and sets the expiration.
        let params = parameters(&ts, id, algorithm.as_str(), "RSA_2048").unwrap();
        let same = wrap(&params.public_key, algorithm, &ours);
        let valid_to = (ts.clock.now_millis() / 1000 + 3600) as f64;
        import(&ts, id, &params.import_token, &same, None, Some(valid_to)).unwrap();
        assert_eq!(describe(&ts, id).valid_to, Some(valid_to));
        let params = parameters(&ts, id, algorithm.as_str(), "RSA_2048").unwrap();
        let other = wrap(&params.public_key, algorithm, &material(3));
        assert_eq!(
            import(&ts, id, &params.import_token, &other, None, Some(valid_to))
                .unwrap_err()
                .code(),
            "IncorrectKeyMaterialException"
        );
        assert_eq!(decrypt_blob(&ts, &blob).unwrap(), plaintext);
    }
}

#[test]
fn the_wrapping_key_is_sensitive_and_never_extractable() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let key = create_external(&ts);
    parameters(&ts, &key.key_id, "RSAES_OAEP_SHA_1", "RSA_2048").unwrap();
    let mut found = 0;
    for member in MEMBERS {
        let session = raw_session(&ts.cluster, member);
        for handle in session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .unwrap()
        {
            let attributes = session
                .get_attributes(
                    handle,
                    &[
                        cryptoki::object::AttributeType::Sensitive,
                        cryptoki::object::AttributeType::Extractable,
                        cryptoki::object::AttributeType::Unwrap,
                        cryptoki::object::AttributeType::Decrypt,
                        cryptoki::object::AttributeType::Sign,
                    ],
                )
                .unwrap();
            assert_eq!(
                attributes,
                vec![
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Unwrap(true),
                    Attribute::Decrypt(false),
                    Attribute::Sign(false),
                ]
            );
            found += 1;
        }
        // The public half is never kept.
        assert!(
            session
                .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(found, 1, "one wrapping key, on one member");
}

#[test]
fn sha_256_wrapping_is_refused_when_the_hsm_cannot_do_it() {
    // SoftHSM2 takes only SHA-1 for RSA-OAEP: the algorithm is refused before anyone wraps
    // material for it, and no wrapping key is left.
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let key = create_external(&ts);
    for algorithm in ["RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256"] {
        match parameters(&ts, &key.key_id, algorithm, "RSA_2048") {
            Ok(_) => {} // an HSM that does SHA-256 OAEP
            Err(error) => {
                assert_eq!(error.code(), "UnsupportedOperationException", "{error:?}");
                assert!(error.message().contains(algorithm), "{error:?}");
            }
        }
    }
    for member in ts.store.cluster().members() {
        assert!(member.wrapping_keys().unwrap().is_empty());
    }
}

/// Asserts `result` is `code` with `message` (when given) and that the key and the HSMs are
/// unchanged.
fn refused(
    ts: &TestStore,
    key: &KeyMetadata,
    before: &(KeyMetadata, Vec<usize>),
    result: Result<(), KmsError>,
    code: &str,
    message: Option<&str>,
    what: &str,
) {
    let error = result.expect_err(what);
    assert_eq!(error.code(), code, "{what}: {error:?}");
    if let Some(message) = message {
        assert_eq!(error.message(), message, "{what}");
    }
    assert_eq!(
        describe(ts, &key.key_id),
        before.0,
        "{what}: the key changed"
    );
    assert_eq!(
        secret_objects(ts),
        before.1,
        "{what}: an HSM object was left"
    );
}

#[test]
fn bad_imports_are_refused_with_aws_exceptions_and_leave_nothing() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let key = create_external(&ts);
    let id = key.key_id.as_str();
    let other_key = create_external(&ts);
    let ours = material(9);
    let oaep = parameters(&ts, id, "RSAES_OAEP_SHA_1", "RSA_2048").unwrap();
    let kwp = parameters(&ts, id, "RSA_AES_KEY_WRAP_SHA_1", "RSA_3072").unwrap();
    let foreign = parameters(&ts, &other_key.key_id, "RSAES_OAEP_SHA_1", "RSA_2048").unwrap();
    let good = wrap(&oaep.public_key, WrappingAlgorithm::RsaesOaepSha1, &ours);
    let no_expiry = Some("KEY_MATERIAL_DOES_NOT_EXPIRE");
    let before = (describe(&ts, id), secret_objects(&ts));
    let check = |result, code, message, what: &str| {
        refused(&ts, &key, &before, result, code, message, what)
    };

    let mut forged = oaep.import_token.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    check(
        import(&ts, id, &forged, &good, no_expiry, None),
        "InvalidImportTokenException",
        None,
        "a forged token",
    );
    check(
        import(&ts, id, b"not a token at all", &good, no_expiry, None),
        "InvalidImportTokenException",
        None,
        "garbage as a token",
    );
    check(
        import(&ts, id, &foreign.import_token, &good, no_expiry, None),
        "InvalidImportTokenException",
        None,
        "another key's token",
    );
    let other_public = wrap(&foreign.public_key, WrappingAlgorithm::RsaesOaepSha1, &ours);
    check(
        import(&ts, id, &oaep.import_token, &other_public, no_expiry, None),
        "InvalidCiphertextException",
        None,
        "material wrapped under another public key",
    );
    let two_step = wrap(&kwp.public_key, WrappingAlgorithm::RsaAesKeyWrapSha1, &ours);
    check(
        import(&ts, id, &oaep.import_token, &two_step, no_expiry, None),
        "InvalidCiphertextException",
        None,
        "material wrapped with another algorithm (two-step for OAEP)",
    );
    let one_step = wrap(&kwp.public_key, WrappingAlgorithm::RsaesOaepSha1, &ours);
    check(
        import(&ts, id, &kwp.import_token, &one_step, no_expiry, None),
        "InvalidCiphertextException",
        None,
        "material wrapped with another algorithm (OAEP for two-step)",
    );
    check(
        import(
            &ts,
            id,
            &oaep.import_token,
            &good[..good.len() - 1],
            no_expiry,
            None,
        ),
        "InvalidCiphertextException",
        None,
        "truncated",
    );
    let mut extended = good.clone();
    extended.push(0);
    check(
        import(&ts, id, &oaep.import_token, &extended, no_expiry, None),
        "InvalidCiphertextException",
        None,
        "extended",
    );
    let mut truncated_kwp = two_step.clone();
    truncated_kwp.truncate(two_step.len() - 8);
    check(
        import(&ts, id, &kwp.import_token, &truncated_kwp, no_expiry, None),
        "InvalidCiphertextException",
        None,
        "two-step, truncated",
    );
    // Material of the wrong size, wrapped without our length check.
    let public =
        <rsa::PublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(&oaep.public_key)
            .unwrap();
    for size in [16usize, 24, 31, 48] {
        let short = public
            .encrypt(
                &mut getrandom::SysRng,
                rsa::Oaep::<sha1::Sha1>::new(),
                &vec![5u8; size],
            )
            .unwrap();
        check(
            import(&ts, id, &oaep.import_token, &short, no_expiry, None),
            "IncorrectKeyMaterialException",
            None,
            &format!("{size}-byte material"),
        );
    }
    let now = ts.clock.now_millis() as f64 / 1000.0;
    check(
        import(
            &ts,
            id,
            &oaep.import_token,
            &good,
            Some("KEY_MATERIAL_EXPIRES"),
            Some(now - 60.0),
        ),
        "ValidationException",
        None,
        "ValidTo in the past",
    );
    check(
        import(
            &ts,
            id,
            &oaep.import_token,
            &good,
            Some("KEY_MATERIAL_EXPIRES"),
            None,
        ),
        "ValidationException",
        Some("A ValidTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES"),
        "KEY_MATERIAL_EXPIRES without ValidTo",
    );
    check(
        import(&ts, id, &oaep.import_token, &good, None, None),
        "ValidationException",
        None,
        "the default model (expires) without ValidTo",
    );
    check(
        import(
            &ts,
            id,
            &oaep.import_token,
            &good,
            no_expiry,
            Some(now + 3600.0),
        ),
        "ValidationException",
        None,
        "ValidTo with KEY_MATERIAL_DOES_NOT_EXPIRE",
    );
    check(
        import(&ts, id, &oaep.import_token, &good, Some("SOMETIMES"), None),
        "ValidationException",
        None,
        "an unknown expiration model",
    );
    check(
        import(&ts, id, &oaep.import_token, &[], no_expiry, None),
        "ValidationException",
        None,
        "empty material",
    );
    // An expired token.
    ts.clock.advance(25 * HOUR);
    check(
        import(&ts, id, &oaep.import_token, &good, no_expiry, None),
        "ExpiredImportTokenException",
        None,
        "an expired token",
    );

    // Keys of origin AWS_KMS take none of the import operations.
    let generated = create(&ts);
    let not_external = format!(
        "{} origin is AWS_KMS which is not valid for this operation.",
        generated.arn
    );
    let error = parameters(&ts, &generated.key_id, "RSAES_OAEP_SHA_1", "RSA_2048").unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        ("UnsupportedOperationException", not_external.as_str())
    );
    let error = import(
        &ts,
        &generated.key_id,
        &oaep.import_token,
        &good,
        no_expiry,
        None,
    )
    .unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        ("UnsupportedOperationException", not_external.as_str())
    );
    let error = ts
        .store
        .delete_imported_key_material(&ts.caller, key_id(&generated.key_id))
        .unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        ("UnsupportedOperationException", not_external.as_str())
    );
    // Bad parameters.
    for (algorithm, spec, code) in [
        ("RSAES_OAEP_SHA_512", "RSA_2048", "ValidationException"),
        ("RSAES_OAEP_SHA_1", "RSA_1024", "ValidationException"),
        (
            "RSAES_PKCS1_V1_5",
            "RSA_2048",
            "UnsupportedOperationException",
        ),
    ] {
        assert_eq!(
            parameters(&ts, id, algorithm, spec).unwrap_err().code(),
            code,
            "{algorithm} {spec}"
        );
    }

    // After all that, the right material still imports.
    let fresh = parameters(&ts, id, "RSAES_OAEP_SHA_1", "RSA_2048").unwrap();
    let good = wrap(&fresh.public_key, WrappingAlgorithm::RsaesOaepSha1, &ours);
    import(&ts, id, &fresh.import_token, &good, no_expiry, None).unwrap();
    assert_eq!(describe(&ts, id).key_state, "Enabled");
}

#[test]
fn material_expires_in_the_maintenance_run_and_comes_back_with_a_reimport() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let key = create_external(&ts);
    let id = key.key_id.as_str();
    let ours = material(4);
    let params = parameters(&ts, id, "RSA_AES_KEY_WRAP_SHA_1", "RSA_2048").unwrap();
    let wrapped = wrap(
        &params.public_key,
        WrappingAlgorithm::RsaAesKeyWrapSha1,
        &ours,
    );
    let valid_to = (ts.clock.now_millis() / 1000 + 2 * 3600) as f64;
    import(
        &ts,
        id,
        &params.import_token,
        &wrapped,
        Some("KEY_MATERIAL_EXPIRES"),
        Some(valid_to),
    )
    .unwrap();
    let blob = encrypt(&ts, id, b"before expiry", &[("purpose", "import test")])
        .unwrap()
        .ciphertext_blob;

    ts.clock.advance(HOUR);
    let report = ts.store.run_maintenance().unwrap();
    assert!(report.expired_key_material.is_empty());
    assert_eq!(describe(&ts, id).key_state, "Enabled");

    ts.clock.advance(2 * HOUR);
    let report = ts.store.run_maintenance().unwrap();
    assert_eq!(report.expired_key_material, vec![key.arn.clone()]);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        report.inconsistencies.is_empty(),
        "{:?}",
        report.inconsistencies
    );
    assert_eq!(describe(&ts, id).key_state, "PendingImport");
    assert_eq!(material_objects(&ts, id), [0, 0]);
    // The wrapping key of the import (24 hours) is gone by the next day's run.
    ts.clock.advance(24 * HOUR);
    ts.store.run_maintenance().unwrap();
    for member in ts.store.cluster().members() {
        assert!(member.wrapping_keys().unwrap().is_empty());
    }

    import_material(&ts, id, &ours, WrappingAlgorithm::RsaesOaepSha1);
    assert_eq!(decrypt_blob(&ts, &blob).unwrap(), b"before expiry");

    // The audit trail has AWS's service event, and no key material.
    ts.store.shutdown();
    let events = hsm_kms::audit::log::read_events(ts.store.metadata(), 0, usize::MAX).unwrap();
    let expired: Vec<serde_json::Value> = events
        .iter()
        .map(|e| e.event())
        .filter(|e| e["eventName"] == "DeleteExpiredKeyMaterial")
        .collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["eventType"], "AwsServiceEvent");
    assert_eq!(expired[0]["resources"][0]["ARN"], key.arn.as_str());
    for event in &events {
        assert!(!contains(&event.json, &ours), "material in the audit trail");
        assert!(!contains(&event.json, hex::encode(ours).as_bytes()));
    }
}

#[test]
fn deletion_with_a_member_away_finishes_when_it_returns() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let key = create_external(&ts);
    let id = key.key_id.as_str();
    import_material(&ts, id, &material(6), WrappingAlgorithm::RsaesOaepSha1);
    assert_eq!(material_objects(&ts, id), [1, 1]);
    ts.cluster.hide_token("hsm-b");
    ts.store
        .delete_imported_key_material(&ts.caller, key_id(id))
        .unwrap();
    assert_eq!(describe(&ts, id).key_state, "PendingImport");
    assert_eq!(material_objects_on(&ts, "hsm-a", id), 0);
    let report = ts.store.run_maintenance().unwrap();
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.contains(&key.arn) && f.contains("hsm-b")),
        "the destruction owed by hsm-b is reported: {:?}",
        report.failures
    );
    let member = ts.store.cluster().member("hsm-b").unwrap().clone();
    ts.cluster.restore_token("hsm-b");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !member.is_up() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(member.is_up(), "hsm-b did not come back");
    let report = ts.store.run_maintenance().unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(material_objects(&ts, id), [0, 0]);
    assert!(
        !report
            .inconsistencies
            .iter()
            .any(|i| i.to_string().contains(id)),
        "{:?}",
        report.inconsistencies
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn the_material_is_never_written_to_the_data_directory() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let key = create_external(&ts);
    let ours = material(7);
    import_material(
        &ts,
        &key.key_id,
        &ours,
        WrappingAlgorithm::RsaAesKeyWrapSha1,
    );
    ts.store
        .delete_imported_key_material(&ts.caller, key_id(&key.key_id))
        .unwrap();
    import_material(&ts, &key.key_id, &ours, WrappingAlgorithm::RsaesOaepSha1);
    let data_dir = ts.cluster.config().service.data_dir.clone();
    let ts = ts.reopen();
    use base64::Engine;
    let forms = [
        ours.to_vec(),
        hex::encode(ours).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(ours)
            .into_bytes(),
    ];
    let mut files = 0;
    let mut stack = vec![data_dir];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files += 1;
                for form in &forms {
                    assert!(!contains(&bytes, form), "material in {}", path.display());
                }
            }
        }
    }
    assert!(files > 0);
    drop(ts);
}

#[test]
fn keys_with_imported_material_are_never_rotated() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let key = create_external(&ts);
    import_material(
        &ts,
        &key.key_id,
        &material(8),
        WrappingAlgorithm::RsaesOaepSha1,
    );
    let message = format!(
        "{} origin is EXTERNAL which is not valid for this operation.",
        key.arn
    );
    let outcomes = [
        ts.store
            .enable_key_rotation(
                &ts.caller,
                EnableKeyRotationRequest {
                    key_id: key.key_id.clone(),
                    rotation_period_in_days: None,
                },
            )
            .map(drop),
        ts.store
            .rotate_key_on_demand(&ts.caller, key_id(&key.key_id))
            .map(drop),
        ts.store
            .get_key_rotation_status(&ts.caller, key_id(&key.key_id))
            .map(drop),
    ];
    for outcome in outcomes {
        let error = outcome.unwrap_err();
        assert_eq!(
            (error.code(), error.message()),
            ("UnsupportedOperationException", message.as_str())
        );
    }
    assert_eq!(material_objects(&ts, &key.key_id), [1, 1]);
}

#[test]
fn the_cli_wraps_locally_and_imports_in_one_command() {
    let tc = TestCluster::new(2);
    tc.init();
    if common::vendor::enabled() {
        return;
    }
    let run = |args: &[&str]| {
        let output = tc.cli(args);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, key, _) = run(&[
        "create-key",
        "--origin",
        "EXTERNAL",
        "--query",
        "KeyMetadata.KeyId",
        "--output",
        "text",
    ]);
    assert_eq!(code, Some(0));
    let key = key.trim().to_owned();
    let material = material(5);
    let short = tc.path("short.bin");
    std::fs::write(&short, &material[..16]).unwrap();
    let good = tc.path("key.bin");
    std::fs::write(&good, material).unwrap();

    // Wrong length: refused before anything is sent (exit 252), by both commands.
    let (code, _, stderr) = run(&[
        "import-key-material",
        "--key-id",
        &key,
        "--key-material",
        &format!("fileb://{}", short.display()),
        "--expiration-model",
        "KEY_MATERIAL_DOES_NOT_EXPIRE",
    ]);
    assert_eq!(code, Some(252), "{stderr}");
    assert!(
        stderr.contains("16 bytes are key material of no key spec"),
        "{stderr}"
    );
    let (code, params, _) = run(&[
        "get-parameters-for-import",
        "--key-id",
        &key,
        "--wrapping-algorithm",
        "RSAES_OAEP_SHA_1",
        "--wrapping-key-spec",
        "RSA_2048",
    ]);
    assert_eq!(code, Some(0));
    let params: serde_json::Value = serde_json::from_str(&params).unwrap();
    use base64::Engine;
    let decode = |field: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(params[field].as_str().unwrap())
            .unwrap()
    };
    std::fs::write(tc.path("public.der"), decode("PublicKey")).unwrap();
    std::fs::write(tc.path("token.bin"), decode("ImportToken")).unwrap();
    let wrap = |material: &std::path::Path| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
            .args([
                "wrap-key-material",
                "--public-key",
                &format!("fileb://{}", tc.path("public.der").display()),
                "--algorithm",
                "RSAES_OAEP_SHA_1",
                "--key-material",
                &format!("fileb://{}", material.display()),
                "--out",
                &tc.path("wrapped.bin").display().to_string(),
            ])
            .env_remove("HSM_KMS_CONFIG")
            .output()
            .unwrap();
        output.status.code()
    };
    assert_eq!(wrap(&short), Some(252));
    assert!(!tc.path("wrapped.bin").exists(), "nothing written");
    assert_eq!(wrap(&good), Some(0));
    let (code, _, stderr) = run(&[
        "import-key-material",
        "--key-id",
        &key,
        "--import-token",
        &format!("fileb://{}", tc.path("token.bin").display()),
        "--encrypted-key-material",
        &format!("fileb://{}", tc.path("wrapped.bin").display()),
        "--expiration-model",
        "KEY_MATERIAL_DOES_NOT_EXPIRE",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, _) = run(&["delete-imported-key-material", "--key-id", &key]);
    assert_eq!(code, Some(0));
    // The one-command import brings the same material back.
    let (code, _, stderr) = run(&[
        "import-key-material",
        "--key-id",
        &key,
        "--key-material",
        &format!("fileb://{}", good.display()),
        "--valid-to",
        "2099-01-01T00:00:00Z",
    ]);
    // ValidTo is more than 365 days ahead: AWS's rule.
    assert_eq!(code, Some(254), "{stderr}");
    assert!(stderr.contains("ValidationException"), "{stderr}");
    let (code, _, stderr) = run(&[
        "import-key-material",
        "--key-id",
        &key,
        "--key-material",
        &format!("fileb://{}", good.display()),
        "--wrapping-algorithm",
        "RSA_AES_KEY_WRAP_SHA_1",
        "--expiration-model",
        "KEY_MATERIAL_DOES_NOT_EXPIRE",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let (_, state, _) = run(&[
        "describe-key",
        "--key-id",
        &key,
        "--query",
        "KeyMetadata.KeyState",
        "--output",
        "text",
    ]);
    assert_eq!(state.trim(), "Enabled");
}

#[test]
fn a_forged_token_on_a_store_that_never_issued_one_is_invalid() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let key = create_external(&ts);
    let mut forged = b"hkit\x01".to_vec();
    forged.extend_from_slice(&[7u8; 80]);
    let error = import(
        &ts,
        &key.key_id,
        &forged,
        &[1u8; 256],
        Some("KEY_MATERIAL_DOES_NOT_EXPIRE"),
        None,
    )
    .unwrap_err();
    assert_eq!(error.code(), "InvalidImportTokenException", "{error:?}");
}

#[test]
fn cancelling_deletion_of_a_key_without_material_leaves_it_pending_import() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let key = create_external(&ts);
    let ours = material(10);
    import_material(&ts, &key.key_id, &ours, WrappingAlgorithm::RsaesOaepSha1);
    ts.store
        .schedule_key_deletion(
            &ts.caller,
            ScheduleKeyDeletionRequest {
                key_id: key.key_id.clone(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    ts.store
        .delete_imported_key_material(&ts.caller, key_id(&key.key_id))
        .unwrap();
    assert_eq!(describe(&ts, &key.key_id).key_state, "PendingDeletion");
    assert_eq!(material_objects(&ts, &key.key_id), [0, 0]);
    ts.store
        .cancel_key_deletion(&ts.caller, key_id(&key.key_id))
        .unwrap();
    assert_eq!(describe(&ts, &key.key_id).key_state, "PendingImport");
    import_material(&ts, &key.key_id, &ours, WrappingAlgorithm::RsaesOaepSha1);
    assert_eq!(describe(&ts, &key.key_id).key_state, "Enabled");
}

#[test]
fn the_key_check_value_is_a_hash_of_a_fixed_block_never_gcms_hash_key() {
    use aes_kw::aes::Aes256;
    use aes_kw::cipher::{BlockCipherEncrypt, KeyInit as _};
    use sha2::Digest;
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let key = create_external(&ts);
    let ours = material(11);
    import_material(&ts, &key.key_id, &ours, WrappingAlgorithm::RsaesOaepSha1);
    let stored = ts
        .store
        .metadata()
        .get(hsm_kms::store::Table::Keys, key.key_id.as_bytes())
        .unwrap()
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&stored.payload).unwrap();
    let kept = record["import"]["check_value"].as_str().unwrap().to_owned();
    let aes = Aes256::new_from_slice(&ours).unwrap();
    let encrypt = |block: [u8; 16]| {
        let mut block = block.into();
        aes.encrypt_block(&mut block);
        block
    };
    let expected = sha2::Sha256::digest(encrypt(*b"hsm-kms kcv v1\x00\x01"));
    assert_eq!(kept, hex::encode(&expected[..8]));
    let h = encrypt([0u8; 16]);
    assert!(!kept.contains(&hex::encode(&h[..4])), "GCM's H leaks");
}

fn create_external_spec(ts: &TestStore, spec: &str, usage: &str) -> KeyMetadata {
    ts.store
        .create_key(
            &ts.caller,
            CreateKeyRequest {
                origin: Some("EXTERNAL".into()),
                key_spec: Some(spec.into()),
                key_usage: Some(usage.into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata
}

/// A fresh private key made by `openssl genpkey`, as DER PKCS #8 (`openssl pkcs8 -topk8`,
/// AWS's recipe: OpenSSL 3 writes RSA keys as PKCS #1 otherwise), what AWS imports for RSA
/// and ECC key specs.
fn openssl_private_key(dir: &std::path::Path, spec: &str) -> Vec<u8> {
    let options: Vec<String> = match spec {
        "RSA_2048" | "RSA_3072" | "RSA_4096" => vec![
            "-algorithm".into(),
            "RSA".into(),
            "-pkeyopt".into(),
            format!("rsa_keygen_bits:{}", &spec[4..]),
        ],
        curve => {
            let name = match curve {
                "ECC_NIST_P256" => "prime256v1",
                "ECC_NIST_P384" => "secp384r1",
                "ECC_NIST_P521" => "secp521r1",
                _ => "secp256k1",
            };
            vec![
                "-algorithm".into(),
                "EC".into(),
                "-pkeyopt".into(),
                format!("ec_paramgen_curve:{name}"),
            ]
        }
    };
    let pem = dir.join(format!("{spec}.pem"));
    let path = dir.join(format!("{spec}.der"));
    for command in [
        [vec!["genpkey".to_owned()], options, vec!["-out".to_owned()]].concat(),
        ["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-out"]
            .map(str::to_owned)
            .to_vec(),
    ] {
        let mut openssl = std::process::Command::new("openssl");
        openssl.args(&command);
        if command[0] == "genpkey" {
            openssl.arg(&pem);
        } else {
            openssl.arg(&path).arg("-in").arg(&pem);
        }
        let out = openssl.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::read(path).unwrap()
}

/// The DER SubjectPublicKeyInfo openssl derives from a DER PKCS #8 private key.
fn openssl_public_key(dir: &std::path::Path, private: &[u8]) -> Vec<u8> {
    let path = dir.join("private.der");
    std::fs::write(&path, private).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "pkey", "-inform", "DER", "-pubout", "-outform", "DER", "-in",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Private or secret key objects of `key_id`'s material on each member.
fn key_objects(ts: &TestStore, key_id: &str, class: ObjectClass) -> Vec<usize> {
    MEMBERS
        .iter()
        .map(|member| {
            raw_session(&ts.cluster, member)
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::Id(format!("{key_id}/1").into_bytes()),
                ])
                .unwrap()
                .len()
        })
        .collect()
}

/// Wraps `material` for a key of `spec` and imports it, without expiry.
fn import_for_spec(
    ts: &TestStore,
    key: &str,
    spec: &str,
    algorithm: WrappingAlgorithm,
    material: &[u8],
) -> Result<(), KmsError> {
    let params = parameters(ts, key, algorithm.as_str(), "RSA_3072").unwrap();
    let wrapped = wrap_key_material(
        &params.public_key,
        algorithm,
        spec,
        &SecretSlice::from(material.to_vec()),
    )
    .unwrap();
    import(
        ts,
        key,
        &params.import_token,
        &wrapped,
        Some("KEY_MATERIAL_DOES_NOT_EXPIRE"),
        None,
    )
}

fn sign_with(ts: &TestStore, key: &str, algorithm: &str, message: &[u8]) -> Vec<u8> {
    ts.store
        .sign(
            &ts.caller,
            SignRequest {
                key_id: key.into(),
                message: message.to_vec(),
                message_type: Some("RAW".into()),
                signing_algorithm: algorithm.into(),
                ..Default::default()
            },
        )
        .unwrap()
        .signature
}

fn public_key_of(ts: &TestStore, key: &str) -> Vec<u8> {
    ts.store
        .get_public_key(&ts.caller, key_id(key))
        .unwrap()
        .public_key
}

#[test]
fn rsa_and_ecc_private_keys_import_and_sign_as_the_original_key() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "RSA_2048",
            "SIGN_VERIFY",
            WrappingAlgorithm::RsaAesKeyWrapSha1,
            Some("RSASSA_PSS_SHA_256"),
        ),
        (
            "RSA_3072",
            "ENCRYPT_DECRYPT",
            WrappingAlgorithm::RsaAesKeyWrapSha1,
            None,
        ),
        (
            "ECC_NIST_P256",
            "SIGN_VERIFY",
            WrappingAlgorithm::RsaesOaepSha1,
            Some("ECDSA_SHA_256"),
        ),
        (
            "ECC_NIST_P384",
            "SIGN_VERIFY",
            WrappingAlgorithm::RsaAesKeyWrapSha1,
            Some("ECDSA_SHA_384"),
        ),
        (
            "ECC_NIST_P521",
            "SIGN_VERIFY",
            WrappingAlgorithm::RsaesOaepSha1,
            Some("ECDSA_SHA_512"),
        ),
        (
            "ECC_SECG_P256K1",
            "SIGN_VERIFY",
            WrappingAlgorithm::RsaAesKeyWrapSha1,
            Some("ECDSA_SHA_256"),
        ),
        (
            "ECC_NIST_P256",
            "KEY_AGREEMENT",
            WrappingAlgorithm::RsaAesKeyWrapSha1,
            None,
        ),
    ];
    for (spec, usage, algorithm, signing) in cases {
        let case = format!("{spec} {usage} {}", algorithm.as_str());
        let key = create_external_spec(&ts, spec, usage);
        let id = key.key_id.as_str();
        assert_eq!(key.key_state, "PendingImport", "{case}");
        let private = openssl_private_key(dir.path(), spec);
        let expected_public = openssl_public_key(dir.path(), &private);
        import_for_spec(&ts, id, spec, algorithm, &private).unwrap();
        assert_eq!(describe(&ts, id).key_state, "Enabled", "{case}");
        assert_eq!(
            key_objects(&ts, id, ObjectClass::PRIVATE_KEY),
            [1, 1],
            "{case}: replicated to both members"
        );
        assert_eq!(
            key_objects(&ts, id, ObjectClass::PUBLIC_KEY),
            [1, 1],
            "{case}: public key on both members"
        );
        assert_eq!(
            public_key_of(&ts, id),
            expected_public,
            "{case}: GetPublicKey is the imported key's"
        );
        if let Some(signing) = signing {
            let algorithm = hsm_kms::keys::spec::SigningAlgorithm::parse(signing).unwrap();
            let pem = common::openssl::write_public_pem(dir.path(), &expected_public);
            let message = format!("signed by imported {case}").into_bytes();
            let signature = sign_with(&ts, id, signing, &message);
            assert!(
                common::openssl::openssl_verifies(
                    dir.path(),
                    &pem,
                    algorithm,
                    &message,
                    &signature
                ),
                "{case}: openssl verifies the signature with the original key's public key"
            );
        }

        // Delete and re-import: the same private key comes back, another one is refused.
        ts.store
            .delete_imported_key_material(&ts.caller, key_id(id))
            .unwrap();
        assert_eq!(
            key_objects(&ts, id, ObjectClass::PRIVATE_KEY),
            [0, 0],
            "{case}"
        );
        assert_eq!(
            key_objects(&ts, id, ObjectClass::PUBLIC_KEY),
            [0, 0],
            "{case}"
        );
        let other = openssl_private_key(dir.path(), spec);
        let refused = import_for_spec(&ts, id, spec, algorithm, &other).unwrap_err();
        assert_eq!(
            refused.code(),
            "IncorrectKeyMaterialException",
            "{case}: {refused:?}"
        );
        assert_eq!(
            key_objects(&ts, id, ObjectClass::PRIVATE_KEY),
            [0, 0],
            "{case}"
        );
        import_for_spec(&ts, id, spec, algorithm, &private).unwrap();
        assert_eq!(public_key_of(&ts, id), expected_public, "{case}");
        // Into the key that holds it: checked only, nothing new kept.
        import_for_spec(&ts, id, spec, algorithm, &private).unwrap();
        let refused = import_for_spec(&ts, id, spec, algorithm, &other).unwrap_err();
        assert_eq!(
            refused.code(),
            "IncorrectKeyMaterialException",
            "{case}: {refused:?}"
        );
        assert_eq!(
            key_objects(&ts, id, ObjectClass::PRIVATE_KEY),
            [1, 1],
            "{case}"
        );
        assert_eq!(
            key_objects(&ts, id, ObjectClass::PUBLIC_KEY),
            [1, 1],
            "{case}"
        );
    }
}

#[test]
fn hmac_material_of_any_allowed_length_imports_and_macs_as_the_original_key() {
    use hmac::{KeyInit as _, Mac};
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let message = b"a message to MAC with imported material";
    for (spec, length, algorithm) in [
        ("HMAC_224", 28, WrappingAlgorithm::RsaesOaepSha1),
        ("HMAC_256", 40, WrappingAlgorithm::RsaAesKeyWrapSha1),
        ("HMAC_384", 48, WrappingAlgorithm::RsaesOaepSha1),
        ("HMAC_512", 100, WrappingAlgorithm::RsaAesKeyWrapSha1),
    ] {
        let case = format!("{spec} {length} bytes {}", algorithm.as_str());
        let key = create_external_spec(&ts, spec, "GENERATE_VERIFY_MAC");
        let id = key.key_id.as_str();
        let mut material = vec![0u8; length];
        getrandom::fill(&mut material).unwrap();
        import_for_spec(&ts, id, spec, algorithm, &material).unwrap();
        assert_eq!(
            key_objects(&ts, id, ObjectClass::SECRET_KEY),
            [1, 1],
            "{case}"
        );
        let mac_algorithm = format!("HMAC_SHA_{}", &spec[5..]);
        let ours = ts
            .store
            .generate_mac(
                &ts.caller,
                GenerateMacRequest {
                    key_id: id.into(),
                    message: SecretSlice::from(message.to_vec()),
                    mac_algorithm: mac_algorithm.clone(),
                    ..Default::default()
                },
            )
            .unwrap()
            .mac;
        let independent = match spec {
            "HMAC_224" => hmac::Hmac::<sha2::Sha224>::new_from_slice(&material)
                .unwrap()
                .chain_update(message)
                .finalize()
                .into_bytes()
                .to_vec(),
            "HMAC_256" => hmac::Hmac::<sha2::Sha256>::new_from_slice(&material)
                .unwrap()
                .chain_update(message)
                .finalize()
                .into_bytes()
                .to_vec(),
            "HMAC_384" => hmac::Hmac::<sha2::Sha384>::new_from_slice(&material)
                .unwrap()
                .chain_update(message)
                .finalize()
                .into_bytes()
                .to_vec(),
            _ => hmac::Hmac::<sha2::Sha512>::new_from_slice(&material)
                .unwrap()
                .chain_update(message)
                .finalize()
                .into_bytes()
                .to_vec(),
        };
        assert_eq!(ours, independent, "{case}: the MAC is the material's");

        ts.store
            .delete_imported_key_material(&ts.caller, key_id(id))
            .unwrap();
        let mut other = material.clone();
        other[0] ^= 1;
        let refused = import_for_spec(&ts, id, spec, algorithm, &other).unwrap_err();
        assert_eq!(
            refused.code(),
            "IncorrectKeyMaterialException",
            "{case}: {refused:?}"
        );
        import_for_spec(&ts, id, spec, algorithm, &material).unwrap();
        assert_eq!(describe(&ts, id).key_state, "Enabled", "{case}");
    }
}

#[test]
fn material_that_does_not_fit_the_key_spec_is_refused_and_leaves_nothing() {
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // AWS's rules on wrapping algorithms, answered by GetParametersForImport.
    let rsa = create_external_spec(&ts, "RSA_2048", "SIGN_VERIFY");
    for algorithm in ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"] {
        let refused = parameters(&ts, &rsa.key_id, algorithm, "RSA_4096").unwrap_err();
        assert_eq!(refused.code(), "ValidationException", "{refused:?}");
    }
    let p521 = create_external_spec(&ts, "ECC_NIST_P521", "SIGN_VERIFY");
    let refused = parameters(&ts, &p521.key_id, "RSAES_OAEP_SHA_1", "RSA_2048").unwrap_err();
    assert_eq!(refused.code(), "ValidationException", "{refused:?}");
    parameters(&ts, &p521.key_id, "RSAES_OAEP_SHA_1", "RSA_3072").unwrap();

    let before = secret_objects(&ts);
    // A private key of another curve, another modulus size, another type; HMAC material
    // shorter than the spec takes. Wrapped as their own spec, so the client lets them pass.
    let p256 = create_external_spec(&ts, "ECC_NIST_P256", "SIGN_VERIFY");
    let p384_material = openssl_private_key(dir.path(), "ECC_NIST_P384");
    let rsa_3072_material = openssl_private_key(dir.path(), "RSA_3072");
    let hmac_512 = create_external_spec(&ts, "HMAC_512", "GENERATE_VERIFY_MAC");
    for (key, spec, material_spec, material) in [
        (
            &p256,
            "ECC_NIST_P256",
            "ECC_NIST_P384",
            p384_material.clone(),
        ),
        (&rsa, "RSA_2048", "RSA_3072", rsa_3072_material.clone()),
        (&p256, "ECC_NIST_P256", "RSA_3072", rsa_3072_material),
        (&hmac_512, "HMAC_512", "HMAC_256", vec![7u8; 32]),
    ] {
        let refused = import_for_spec(
            &ts,
            &key.key_id,
            material_spec,
            WrappingAlgorithm::RsaAesKeyWrapSha1,
            &material,
        )
        .unwrap_err();
        assert_eq!(
            refused.code(),
            "IncorrectKeyMaterialException",
            "{spec} given {material_spec}: {refused:?}"
        );
        assert!(
            refused.message().contains(spec),
            "the message names the key spec: {refused:?}"
        );
        assert_eq!(describe(&ts, &key.key_id).key_state, "PendingImport");
        assert_eq!(
            key_objects(&ts, &key.key_id, ObjectClass::PRIVATE_KEY),
            [0, 0]
        );
        assert_eq!(
            key_objects(&ts, &key.key_id, ObjectClass::PUBLIC_KEY),
            [0, 0]
        );
    }
    assert_eq!(secret_objects(&ts), before, "no secret left on any member");

    // The client refuses an RSA private key for the one-step algorithms before anything.
    let params = parameters(&ts, &p256.key_id, "RSAES_OAEP_SHA_1", "RSA_3072").unwrap();
    let rsa_material = openssl_private_key(dir.path(), "RSA_2048");
    assert!(matches!(
        wrap_key_material(
            &params.public_key,
            WrappingAlgorithm::RsaesOaepSha1,
            "RSA_2048",
            &SecretSlice::from(rsa_material)
        ),
        Err(hsm_kms::key_import::WrapError::Algorithm { .. })
    ));
    assert!(matches!(
        wrap_key_material(
            &params.public_key,
            WrappingAlgorithm::RsaesOaepSha1,
            "ECC_NIST_P256",
            &SecretSlice::from(p384_material)
        ),
        Err(hsm_kms::key_import::WrapError::NotAPrivateKey(
            "ECC_NIST_P256"
        ))
    ));
}

#[test]
fn imported_hmac_and_ec_material_is_caught_up_by_a_member_that_lost_it() {
    use hsm_kms::cluster::MaterialId;
    use hsm_kms::keys::spec::{Digest, SigningAlgorithm};
    let ts = TestStore::new();
    if import_unsupported(&ts) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // HMAC material of a length no generated key has: the HSM reports no length for it, its
    // allowed mechanism names its spec.
    let hmac = create_external_spec(&ts, "HMAC_256", "GENERATE_VERIFY_MAC");
    import_for_spec(
        &ts,
        &hmac.key_id,
        "HMAC_256",
        WrappingAlgorithm::RsaAesKeyWrapSha1,
        &[9u8; 40],
    )
    .unwrap();
    let ec = create_external_spec(&ts, "ECC_NIST_P384", "SIGN_VERIFY");
    let private = openssl_private_key(dir.path(), "ECC_NIST_P384");
    import_for_spec(
        &ts,
        &ec.key_id,
        "ECC_NIST_P384",
        WrappingAlgorithm::RsaesOaepSha1,
        &private,
    )
    .unwrap();
    let cluster = ts.store.cluster();
    let (a, b) = (
        cluster.member("hsm-a").unwrap().clone(),
        cluster.member("hsm-b").unwrap().clone(),
    );
    let materials = [
        MaterialId::new(hmac.key_id.clone(), 1),
        MaterialId::new(ec.key_id.clone(), 1),
    ];
    for material in &materials {
        b.destroy_key(&material.cka_id()).unwrap();
    }
    let report = cluster.catch_up("hsm-b", &materials).unwrap();
    let mut copied = report.copied.clone();
    copied.sort();
    let mut expected: Vec<String> = materials.iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(copied, expected, "{report:?}");
    let hmac_id = materials[0].cka_id();
    assert_eq!(
        b.hmac(&hmac_id, Digest::Sha256, b"m").unwrap(),
        a.hmac(&hmac_id, Digest::Sha256, b"m").unwrap()
    );
    let ec_id = materials[1].cka_id();
    let digest = Digest::Sha384.hash(b"m");
    let curve = hsm_kms::keys::spec::KeySpec::EccNistP384.curve();
    let signature = b
        .sign_digest(&ec_id, SigningAlgorithm::EcdsaSha384, curve, &digest)
        .unwrap();
    assert!(
        a.verify_digest(
            &ec_id,
            SigningAlgorithm::EcdsaSha384,
            curve,
            &digest,
            &signature
        )
        .unwrap()
    );
    assert_eq!(b.public_key(&ec_id).unwrap(), a.public_key(&ec_id).unwrap());
}
