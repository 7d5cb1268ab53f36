//! Bad input to the key store against a real two-member SoftHSM2 cluster and sled on disk:
//! each gets the AWS exception (and message where AWS fixes one), and nothing a caller or an
//! HSM auditor can see changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestStore;
use common::kms::*;
use hsm_kms::error::KmsError;
use hsm_kms::keystore::api::*;
use secrecy::{ExposeSecret, SecretSlice};

const ARN_PREFIX: &str = "arn:aws:kms:us-east-1:111122223333:";
const UNKNOWN_ID: &str = "0badc0de-0000-4000-8000-000000000000";

/// An exception: (code, message).
type Answer = (String, String);

/// A call that names one key by `KeyId` (or the parameter in that role).
type KeyCall = fn(&TestStore, &str) -> Result<(), KmsError>;

/// Operations that accept a key id, key ARN, alias name or alias ARN.
fn any_reference_operations() -> Vec<(&'static str, KeyCall)> {
    vec![
        ("DescribeKey", |ts, k| {
            ts.store.describe_key(&ts.caller, key_id(k)).map(drop)
        }),
        ("Encrypt", |ts, k| encrypt(ts, k, b"x", &[]).map(drop)),
        ("GenerateDataKey", |ts, k| {
            ts.store
                .generate_data_key(&ts.caller, data_key_request(k, Some("AES_256"), None))
                .map(drop)
        }),
        ("GenerateDataKeyWithoutPlaintext", |ts, k| {
            ts.store
                .generate_data_key_without_plaintext(
                    &ts.caller,
                    data_key_request(k, None, Some(16)),
                )
                .map(drop)
        }),
    ]
}

/// Operations that accept only a key id or key ARN.
fn key_only_operations() -> Vec<(&'static str, KeyCall)> {
    vec![
        ("EnableKey", |ts, k| {
            ts.store.enable_key(&ts.caller, key_id(k))
        }),
        ("DisableKey", |ts, k| {
            ts.store.disable_key(&ts.caller, key_id(k))
        }),
        ("ScheduleKeyDeletion", |ts, k| {
            ts.store
                .schedule_key_deletion(
                    &ts.caller,
                    ScheduleKeyDeletionRequest {
                        key_id: k.into(),
                        pending_window_in_days: Some(7),
                    },
                )
                .map(drop)
        }),
        ("CancelKeyDeletion", |ts, k| {
            ts.store
                .cancel_key_deletion(&ts.caller, key_id(k))
                .map(drop)
        }),
        ("EnableKeyRotation", |ts, k| {
            ts.store.enable_key_rotation(
                &ts.caller,
                EnableKeyRotationRequest {
                    key_id: k.into(),
                    rotation_period_in_days: None,
                },
            )
        }),
        ("DisableKeyRotation", |ts, k| {
            ts.store.disable_key_rotation(&ts.caller, key_id(k))
        }),
        ("GetKeyRotationStatus", |ts, k| {
            ts.store
                .get_key_rotation_status(&ts.caller, key_id(k))
                .map(drop)
        }),
        ("RotateKeyOnDemand", |ts, k| {
            ts.store
                .rotate_key_on_demand(&ts.caller, key_id(k))
                .map(drop)
        }),
        ("ListKeyRotations", |ts, k| {
            ts.store
                .list_key_rotations(
                    &ts.caller,
                    ListKeyRotationsRequest {
                        key_id: k.into(),
                        ..Default::default()
                    },
                )
                .map(drop)
        }),
        ("TagResource", |ts, k| {
            ts.store.tag_resource(
                &ts.caller,
                TagResourceRequest {
                    key_id: k.into(),
                    tags: vec![Tag {
                        tag_key: "k".into(),
                        tag_value: "v".into(),
                    }],
                },
            )
        }),
        ("UntagResource", |ts, k| {
            ts.store.untag_resource(
                &ts.caller,
                UntagResourceRequest {
                    key_id: k.into(),
                    tag_keys: vec!["k".into()],
                },
            )
        }),
        ("ListResourceTags", |ts, k| {
            ts.store
                .list_resource_tags(
                    &ts.caller,
                    ListResourceTagsRequest {
                        key_id: k.into(),
                        ..Default::default()
                    },
                )
                .map(drop)
        }),
        ("UpdateKeyDescription", |ts, k| {
            ts.store.update_key_description(
                &ts.caller,
                UpdateKeyDescriptionRequest {
                    key_id: k.into(),
                    description: "d".into(),
                },
            )
        }),
        ("CreateAlias", |ts, k| create_alias(ts, "alias/fresh", k)),
        ("UpdateAlias", |ts, k| update_alias(ts, "alias/existing", k)),
        ("ListAliases", |ts, k| {
            ts.store
                .list_aliases(
                    &ts.caller,
                    ListAliasesRequest {
                        key_id: Some(k.into()),
                        ..Default::default()
                    },
                )
                .map(drop)
        }),
    ]
}

fn data_key_request(key: &str, spec: Option<&str>, bytes: Option<i64>) -> GenerateDataKeyRequest {
    GenerateDataKeyRequest {
        key_id: key.into(),
        key_spec: spec.map(Into::into),
        number_of_bytes: bytes,
        ..Default::default()
    }
}

fn pair(code: &str, message: impl Into<String>) -> Answer {
    (code.to_owned(), message.into())
}

/// AWS's message for one model-constraint violation of a parameter.
fn violation(value: Option<&str>, param: &str, constraint: &str) -> String {
    let subject = match value {
        Some(v) => format!("Value '{v}' at '{param}'"),
        None => format!("Value at '{param}'"),
    };
    format!("1 validation error detected: {subject} failed to satisfy constraint: {constraint}")
}

#[test]
fn unknown_and_malformed_key_references() {
    let ts = TestStore::new();
    let key = create(&ts);
    create_alias(&ts, "alias/existing", &key.key_id).unwrap();
    let not_found = |m: String| pair("NotFoundException", m);
    let unknown_key = not_found(format!("Key '{ARN_PREFIX}key/{UNKNOWN_ID}' does not exist"));
    let bad_arn = format!("arn:aws:s3:us-east-1:111122223333:key/{UNKNOWN_ID}");
    let upper = key.key_id.to_uppercase();
    // (input, answer where aliases are accepted, answer where only key id or ARN is)
    let cases: Vec<(String, Answer, Answer)> = vec![
        (UNKNOWN_ID.into(), unknown_key.clone(), unknown_key.clone()),
        (
            format!("{ARN_PREFIX}key/{UNKNOWN_ID}"),
            unknown_key.clone(),
            unknown_key,
        ),
        (
            "alias/nobody".into(),
            not_found(format!("Alias {ARN_PREFIX}alias/nobody is not found.")),
            not_found("Invalid keyId alias/nobody".into()),
        ),
        (
            format!("{ARN_PREFIX}alias/nobody"),
            not_found(format!("Alias {ARN_PREFIX}alias/nobody is not found.")),
            pair(
                "InvalidArnException",
                "Key Aliases are not supported for this operation.",
            ),
        ),
        (
            "not-a-key".into(),
            not_found("Invalid keyId not-a-key".into()),
            not_found("Invalid keyId not-a-key".into()),
        ),
        (
            upper.clone(),
            not_found(format!("Invalid keyId {upper}")),
            not_found(format!("Invalid keyId {upper}")),
        ),
        (
            format!("{ARN_PREFIX}key/not-a-uuid"),
            not_found("Invalid keyId not-a-uuid".into()),
            not_found("Invalid keyId not-a-uuid".into()),
        ),
        (
            format!("arn:aws:kms:eu-west-1:111122223333:key/{}", key.key_id),
            not_found("Invalid arn eu-west-1".into()),
            not_found("Invalid arn eu-west-1".into()),
        ),
        (
            format!("arn:aws:kms:us-east-1:444455556666:key/{}", key.key_id),
            not_found(format!(
                "Key 'arn:aws:kms:us-east-1:444455556666:key/{}' does not exist",
                key.key_id
            )),
            not_found(format!(
                "Key 'arn:aws:kms:us-east-1:444455556666:key/{}' does not exist",
                key.key_id
            )),
        ),
        (
            bad_arn.clone(),
            pair("InvalidArnException", format!("Invalid arn {bad_arn}")),
            pair("InvalidArnException", format!("Invalid arn {bad_arn}")),
        ),
    ];
    for (input, any_answer, key_only_answer) in &cases {
        for (name, call) in any_reference_operations() {
            assert_eq!(
                &refused(&ts, || call(&ts, input)),
                any_answer,
                "{name} {input}"
            );
        }
        for (name, call) in key_only_operations() {
            assert_eq!(
                &refused(&ts, || call(&ts, input)),
                key_only_answer,
                "{name} {input}"
            );
        }
    }

    // An empty KeyId breaks the model's length constraint.
    for (name, call) in any_reference_operations()
        .into_iter()
        .chain(key_only_operations())
    {
        let param = match name {
            "CreateAlias" | "UpdateAlias" => "targetKeyId",
            _ => "keyId",
        };
        assert_eq!(
            refused(&ts, || call(&ts, "")),
            pair(
                "ValidationException",
                violation(
                    Some(""),
                    param,
                    "Member must have length greater than or equal to 1"
                )
            ),
            "{name}"
        );
    }
    // Decrypt's and ReEncrypt's optional key parameters resolve the same way.
    let blob = encrypt(&ts, &key.key_id, b"x", &[])
        .unwrap()
        .ciphertext_blob;
    assert_eq!(
        refused(&ts, || decrypt(&ts, &blob, &[], Some(UNKNOWN_ID))),
        pair(
            "NotFoundException",
            format!("Key '{ARN_PREFIX}key/{UNKNOWN_ID}' does not exist")
        )
    );
    assert_eq!(
        refused(&ts, || decrypt(&ts, &blob, &[], Some("alias/nobody"))),
        pair(
            "NotFoundException",
            format!("Alias {ARN_PREFIX}alias/nobody is not found.")
        )
    );
    for (source, destination, answer) in [
        (
            Some(""),
            key.key_id.as_str(),
            violation(
                Some(""),
                "sourceKeyId",
                "Member must have length greater than or equal to 1",
            ),
        ),
        (
            None,
            "",
            violation(
                Some(""),
                "destinationKeyId",
                "Member must have length greater than or equal to 1",
            ),
        ),
    ] {
        let outcome = refused(&ts, || {
            ts.store.re_encrypt(
                &ts.caller,
                ReEncryptRequest {
                    ciphertext_blob: blob.clone(),
                    source_key_id: source.map(Into::into),
                    destination_key_id: destination.into(),
                    ..Default::default()
                },
            )
        });
        assert_eq!(outcome, pair("ValidationException", answer));
    }
    assert_eq!(
        refused(&ts, || {
            ts.store.re_encrypt(
                &ts.caller,
                ReEncryptRequest {
                    ciphertext_blob: blob.clone(),
                    destination_key_id: UNKNOWN_ID.into(),
                    ..Default::default()
                },
            )
        }),
        pair(
            "NotFoundException",
            format!("Key '{ARN_PREFIX}key/{UNKNOWN_ID}' does not exist")
        )
    );
}

#[test]
fn management_operations_refuse_an_existing_alias() {
    let ts = TestStore::new();
    let key = create(&ts);
    create_alias(&ts, "alias/x", &key.key_id).unwrap();
    create_alias(&ts, "alias/existing", &key.key_id).unwrap();
    for (name, call) in key_only_operations() {
        assert_eq!(
            refused(&ts, || call(&ts, "alias/x")),
            pair("NotFoundException", "Invalid keyId alias/x"),
            "{name}"
        );
        assert_eq!(
            refused(&ts, || call(&ts, &format!("{ARN_PREFIX}alias/x"))),
            pair(
                "InvalidArnException",
                "Key Aliases are not supported for this operation."
            ),
            "{name}"
        );
    }
    // The same key by id and by ARN works.
    ts.store
        .disable_key(&ts.caller, key_id(&key.key_id))
        .unwrap();
    ts.store.enable_key(&ts.caller, key_id(&key.arn)).unwrap();
    assert_eq!(describe(&ts, "alias/x").key_state, "Enabled");
}

#[test]
fn plaintext_data_key_and_random_sizes() {
    let ts = TestStore::new();
    let key = create(&ts).key_id;
    let k = key.as_str();

    for (length, constraint) in [
        (0, "Member must have length greater than or equal to 1"),
        (4097, "Member must have length less than or equal to 4096"),
    ] {
        assert_eq!(
            refused(&ts, || encrypt(&ts, k, &vec![7u8; length], &[])),
            pair(
                "ValidationException",
                violation(None, "plaintext", constraint)
            ),
            "{length} bytes"
        );
    }
    for length in [1, 4096] {
        let sealed = encrypt(&ts, k, &vec![7u8; length], &[]).unwrap();
        assert_eq!(sealed.ciphertext_blob.len(), 35 + length + 16);
        assert_eq!(
            decrypt(&ts, &sealed.ciphertext_blob, &[], None).unwrap(),
            vec![7u8; length]
        );
    }

    let either = pair(
        "ValidationException",
        "Please specify either number of bytes or key spec.",
    );
    for (spec, bytes, answer) in [
        (
            None,
            Some(0),
            pair(
                "ValidationException",
                violation(
                    Some("0"),
                    "numberOfBytes",
                    "Member must have value greater than or equal to 1",
                ),
            ),
        ),
        (
            None,
            Some(1025),
            pair(
                "ValidationException",
                violation(
                    Some("1025"),
                    "numberOfBytes",
                    "Member must have value less than or equal to 1024",
                ),
            ),
        ),
        (Some("AES_256"), Some(32), either.clone()),
        (Some("AES_128"), Some(1025), either.clone()),
        (None, None, either),
        (
            Some("AES_512"),
            None,
            pair(
                "ValidationException",
                violation(
                    Some("AES_512"),
                    "keySpec",
                    "Member must satisfy enum value set: [AES_256, AES_128]",
                ),
            ),
        ),
    ] {
        let request = || data_key_request(k, spec, bytes);
        assert_eq!(
            refused(&ts, || ts.store.generate_data_key(&ts.caller, request())),
            answer,
            "GenerateDataKey {spec:?} {bytes:?}"
        );
        assert_eq!(
            refused(&ts, || ts
                .store
                .generate_data_key_without_plaintext(&ts.caller, request())),
            answer,
            "GenerateDataKeyWithoutPlaintext {spec:?} {bytes:?}"
        );
    }
    for (spec, bytes, length) in [
        (None, Some(1), 1),
        (None, Some(1024), 1024),
        (Some("AES_128"), None, 16),
        (Some("AES_256"), None, 32),
    ] {
        let data_key = ts
            .store
            .generate_data_key(&ts.caller, data_key_request(k, spec, bytes))
            .unwrap();
        assert_eq!(data_key.plaintext.expose_secret().len(), length);
        assert_eq!(
            decrypt(&ts, &data_key.ciphertext_blob, &[], None).unwrap(),
            data_key.plaintext.expose_secret()
        );
        let sealed = ts
            .store
            .generate_data_key_without_plaintext(&ts.caller, data_key_request(k, spec, bytes))
            .unwrap();
        assert_eq!(
            decrypt(&ts, &sealed.ciphertext_blob, &[], None)
                .unwrap()
                .len(),
            length
        );
    }

    let random = |n: Option<i64>| {
        ts.store.generate_random(
            &ts.caller,
            GenerateRandomRequest {
                number_of_bytes: n,
                custom_key_store_id: None,
            },
        )
    };
    for (n, constraint) in [
        (0, "Member must have value greater than or equal to 1"),
        (1025, "Member must have value less than or equal to 1024"),
    ] {
        assert_eq!(
            refused(&ts, || random(Some(n))),
            pair(
                "ValidationException",
                violation(Some(&n.to_string()), "numberOfBytes", constraint)
            )
        );
    }
    assert_eq!(refused(&ts, || random(None)).0, "ValidationException");
    for n in [1, 1024] {
        assert_eq!(
            random(Some(n)).unwrap().plaintext.expose_secret().len(),
            n as usize
        );
    }
}

#[test]
fn deletion_window_rotation_period_and_list_limits() {
    let ts = TestStore::new();
    let key = create(&ts);
    let k = key.key_id.as_str();
    let schedule = |days: i64| {
        ts.store.schedule_key_deletion(
            &ts.caller,
            ScheduleKeyDeletionRequest {
                key_id: k.into(),
                pending_window_in_days: Some(days),
            },
        )
    };
    for (days, constraint) in [
        (6, "Member must have value greater than or equal to 7"),
        (31, "Member must have value less than or equal to 30"),
        (0, "Member must have value greater than or equal to 7"),
        (-1, "Member must have value greater than or equal to 7"),
    ] {
        assert_eq!(
            refused(&ts, || schedule(days)),
            pair(
                "ValidationException",
                violation(Some(&days.to_string()), "pendingWindowInDays", constraint)
            )
        );
    }
    assert_eq!(describe(&ts, k).key_state, "Enabled");

    let rotate_every = |days: i64| {
        ts.store.enable_key_rotation(
            &ts.caller,
            EnableKeyRotationRequest {
                key_id: k.into(),
                rotation_period_in_days: Some(days),
            },
        )
    };
    for (days, constraint) in [
        (89, "Member must have value greater than or equal to 90"),
        (2561, "Member must have value less than or equal to 2560"),
    ] {
        assert_eq!(
            refused(&ts, || rotate_every(days)),
            pair(
                "ValidationException",
                violation(Some(&days.to_string()), "rotationPeriodInDays", constraint)
            )
        );
    }
    for days in [90, 2560] {
        rotate_every(days).unwrap();
        let status = ts
            .store
            .get_key_rotation_status(&ts.caller, key_id(k))
            .unwrap();
        assert_eq!(status.rotation_period_in_days, Some(days as u32));
    }
    for days in [7, 30] {
        assert_eq!(schedule(days).unwrap().pending_window_in_days, days as u32);
        ts.store.cancel_key_deletion(&ts.caller, key_id(k)).unwrap();
    }

    for (limit, constraint) in [
        (0, "Member must have value greater than or equal to 1"),
        (1001, "Member must have value less than or equal to 1000"),
    ] {
        let answer = pair(
            "ValidationException",
            violation(Some(&limit.to_string()), "limit", constraint),
        );
        assert_eq!(
            refused(&ts, || ts.store.list_keys(
                &ts.caller,
                ListRequest {
                    limit: Some(limit),
                    marker: None
                }
            )),
            answer,
            "ListKeys"
        );
        assert_eq!(
            refused(&ts, || ts.store.list_aliases(
                &ts.caller,
                ListAliasesRequest {
                    limit: Some(limit),
                    ..Default::default()
                }
            )),
            answer,
            "ListAliases"
        );
    }
    for (limit, constraint) in [
        (0, "Member must have value greater than or equal to 1"),
        (1001, "Member must have value less than or equal to 1000"),
    ] {
        let answer = pair(
            "ValidationException",
            violation(Some(&limit.to_string()), "limit", constraint),
        );
        assert_eq!(
            refused(&ts, || ts.store.list_key_rotations(
                &ts.caller,
                ListKeyRotationsRequest {
                    key_id: k.into(),
                    limit: Some(limit),
                    marker: None,
                }
            )),
            answer,
            "ListKeyRotations"
        );
        assert_eq!(
            refused(&ts, || ts.store.list_resource_tags(
                &ts.caller,
                ListResourceTagsRequest {
                    key_id: k.into(),
                    limit: Some(limit),
                    marker: None,
                }
            )),
            answer,
            "ListResourceTags"
        );
    }
    let bad_marker = || Some("not a marker!".to_owned());
    let marker_answers = [
        failure(ts.store.list_keys(
            &ts.caller,
            ListRequest {
                limit: None,
                marker: bad_marker(),
            },
        )),
        failure(ts.store.list_aliases(
            &ts.caller,
            ListAliasesRequest {
                marker: bad_marker(),
                ..Default::default()
            },
        )),
        failure(ts.store.list_key_rotations(
            &ts.caller,
            ListKeyRotationsRequest {
                key_id: k.into(),
                limit: None,
                marker: bad_marker(),
            },
        )),
    ];
    for answer in marker_answers {
        assert_eq!(
            answer,
            pair("InvalidMarkerException", "Invalid marker: not a marker!")
        );
    }
    for limit in [1, 1000] {
        let page = ts
            .store
            .list_keys(
                &ts.caller,
                ListRequest {
                    limit: Some(limit),
                    marker: None,
                },
            )
            .unwrap();
        assert_eq!(page.keys.len(), 1);
    }
}

#[test]
fn alias_names_duplicates_and_the_per_key_limit() {
    let ts = TestStore::new();
    let key = create(&ts);
    let other = create(&ts);
    let k = key.key_id.as_str();
    let long = format!("alias/{}", "a".repeat(251));
    let pattern = "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$";
    let no_prefix = pair(
        "ValidationException",
        "Alias must start with the prefix \"alias/\". Please see \
         https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html",
    );
    let cases = vec![
        ("my-alias".to_owned(), no_prefix.clone()),
        ("Alias/x".to_owned(), no_prefix),
        (
            "alias/a b".to_owned(),
            pair(
                "ValidationException",
                violation(Some("alias/a b"), "aliasName", pattern),
            ),
        ),
        (
            "alias/a!b".to_owned(),
            pair(
                "ValidationException",
                violation(Some("alias/a!b"), "aliasName", pattern),
            ),
        ),
        (
            "alias/a:b".to_owned(),
            pair(
                "ValidationException",
                "alias/a:b contains invalid characters for an alias",
            ),
        ),
        (
            long.clone(),
            pair(
                "ValidationException",
                violation(
                    Some(&long),
                    "aliasName",
                    "Member must have length less than or equal to 256",
                ),
            ),
        ),
        (
            "alias/aws/mine".to_owned(),
            pair("NotAuthorizedException", ""),
        ),
        ("alias/aws/".to_owned(), pair("NotAuthorizedException", "")),
    ];
    for (name, answer) in &cases {
        assert_eq!(
            &refused(&ts, || create_alias(&ts, name, k)),
            answer,
            "CreateAlias {name}"
        );
    }
    assert_eq!(
        refused(&ts, || create_alias(&ts, "alias/", k)).0,
        "InvalidAliasNameException"
    );
    // 256 characters is the most.
    let longest = format!("alias/{}", "a".repeat(250));
    create_alias(&ts, &longest, k).unwrap();

    create_alias(&ts, "alias/taken", k).unwrap();
    let taken = pair(
        "AlreadyExistsException",
        format!("An alias with the name {ARN_PREFIX}alias/taken already exists"),
    );
    assert_eq!(refused(&ts, || create_alias(&ts, "alias/taken", k)), taken);
    assert_eq!(
        refused(&ts, || create_alias(&ts, "alias/taken", &other.key_id)),
        taken
    );
    // UpdateAlias needs an existing alias and refuses reserved names.
    assert_eq!(
        refused(&ts, || update_alias(&ts, "alias/missing", k)),
        pair(
            "NotFoundException",
            format!("Alias {ARN_PREFIX}alias/missing is not found.")
        )
    );
    assert_eq!(
        refused(&ts, || update_alias(&ts, "alias/aws/x", k)),
        pair("NotAuthorizedException", "")
    );
    assert_eq!(
        refused(&ts, || ts.store.delete_alias(&ts.caller, "alias/missing")),
        pair(
            "NotFoundException",
            format!("Alias {ARN_PREFIX}alias/missing is not found.")
        )
    );

    // Fill the key to 50 aliases: the 51st (created or moved onto it) is refused.
    for n in aliases(&ts, Some(k)).len()..50 {
        create_alias(&ts, &format!("alias/many-{n:02}"), k).unwrap();
    }
    assert_eq!(aliases(&ts, Some(k)).len(), 50);
    let (code, message) = refused(&ts, || create_alias(&ts, "alias/one-more", k));
    assert_eq!(code, "LimitExceededException");
    assert!(message.contains(&key.arn), "{message}");
    create_alias(&ts, "alias/elsewhere", &other.key_id).unwrap();
    assert_eq!(
        refused(&ts, || update_alias(&ts, "alias/elsewhere", k)).0,
        "LimitExceededException"
    );
    // Moving one of its own aliases onto it again is not a new alias.
    update_alias(&ts, "alias/taken", k).unwrap();
    // With one gone, there is room again.
    ts.store.delete_alias(&ts.caller, "alias/taken").unwrap();
    update_alias(&ts, "alias/elsewhere", k).unwrap();
    assert_eq!(aliases(&ts, Some(k)).len(), 50);
}

#[test]
fn every_single_bit_flip_truncation_and_extension_is_invalid_ciphertext() {
    let ts = TestStore::new();
    let key = create(&ts);
    let context = [("purpose", "bit-flips")];
    let blob = encrypt(&ts, &key.key_id, b"8 bytes!", &context)
        .unwrap()
        .ciphertext_blob;
    assert_eq!(blob.len(), 35 + 8 + 16);
    let invalid = pair("InvalidCiphertextException", "");
    let before = snapshot(&ts);

    let mut flips = 0;
    for byte in 0..blob.len() {
        for bit in 0..8 {
            let mut flipped = blob.clone();
            flipped[byte] ^= 1 << bit;
            assert_eq!(
                failure(decrypt(&ts, &flipped, &context, None)),
                invalid,
                "bit {bit} of byte {byte}"
            );
            flips += 1;
        }
    }
    assert_eq!(flips, 59 * 8);

    for length in 1..blob.len() {
        assert_eq!(
            failure(decrypt(&ts, &blob[..length], &context, None)),
            invalid,
            "truncated to {length} bytes"
        );
    }
    assert_eq!(
        failure(decrypt(&ts, &[], &context, None)),
        pair(
            "ValidationException",
            violation(
                None,
                "ciphertextBlob",
                "Member must have length greater than or equal to 1"
            )
        )
    );
    for extra in [1, 15, 16, 17, 4096, 6144 - blob.len()] {
        let mut extended = blob.clone();
        extended.extend(std::iter::repeat_n(0u8, extra));
        assert_eq!(
            failure(decrypt(&ts, &extended, &context, None)),
            invalid,
            "extended by {extra} bytes"
        );
        let mut extended = blob.clone();
        extended.extend(&blob[blob.len() - extra.min(blob.len())..]);
        assert_eq!(
            failure(decrypt(&ts, &extended, &context, None)),
            invalid,
            "extended by a copy of its last {extra} bytes"
        );
    }
    let mut too_long = blob.clone();
    too_long.resize(6145, 0);
    assert_eq!(
        failure(decrypt(&ts, &too_long, &context, None)),
        pair(
            "ValidationException",
            violation(
                None,
                "ciphertextBlob",
                "Member must have length less than or equal to 6144"
            )
        )
    );

    // ReEncrypt refuses a flipped blob the same way.
    let mut flipped = blob.clone();
    flipped[40] ^= 0x80;
    assert_eq!(
        failure(ts.store.re_encrypt(
            &ts.caller,
            ReEncryptRequest {
                ciphertext_blob: flipped,
                source_encryption_context: ctx(&context),
                destination_key_id: key.key_id.clone(),
                ..Default::default()
            },
        )),
        invalid
    );

    // Hundreds of rejected tags leave both members healthy, and nothing changed.
    let status = ts.store.cluster().status();
    assert!(
        status.members.iter().all(|m| m.healthy),
        "{:?}",
        status.members
    );
    assert_eq!(snapshot(&ts), before);
    assert_eq!(
        decrypt(&ts, &blob, &context, Some(&key.arn)).unwrap(),
        b"8 bytes!"
    );
}

#[test]
fn encryption_context_must_match_exactly() {
    let ts = TestStore::new();
    let key = create(&ts);
    let context = [("tenant", "acme"), ("purpose", "backup")];
    let blob = encrypt(&ts, &key.key_id, b"context bound", &context)
        .unwrap()
        .ciphertext_blob;
    let invalid = pair("InvalidCiphertextException", "");
    let before = snapshot(&ts);
    for wrong in [
        &[][..],
        &[("tenant", "acme")],
        &[("purpose", "backup")],
        &[("tenant", "acme"), ("purpose", "backup"), ("extra", "pair")],
        &[("tenant", "acme"), ("purpose", "restore")],
        &[("tenant", "ACME"), ("purpose", "backup")],
        &[("Tenant", "acme"), ("purpose", "backup")],
        &[("tenant", "acme "), ("purpose", "backup")],
        &[("tenant", "acme"), ("purpose", "")],
        &[("tenantacme", ""), ("purpose", "backup")],
        &[("tenant", "backup"), ("purpose", "acme")],
    ] {
        assert_eq!(
            failure(decrypt(&ts, &blob, wrong, None)),
            invalid,
            "{wrong:?}"
        );
        assert_eq!(
            failure(ts.store.re_encrypt(
                &ts.caller,
                ReEncryptRequest {
                    ciphertext_blob: blob.clone(),
                    source_encryption_context: ctx(wrong),
                    destination_key_id: key.key_id.clone(),
                    ..Default::default()
                },
            )),
            invalid,
            "ReEncrypt {wrong:?}"
        );
    }
    assert_eq!(snapshot(&ts), before);
    // Order does not matter; an empty map is no context.
    assert_eq!(
        decrypt(
            &ts,
            &blob,
            &[("purpose", "backup"), ("tenant", "acme")],
            None
        )
        .unwrap(),
        b"context bound"
    );
    let plain = encrypt(&ts, &key.key_id, b"no context", &[])
        .unwrap()
        .ciphertext_blob;
    let empty = ts
        .store
        .decrypt(
            &ts.caller,
            DecryptRequest {
                ciphertext_blob: plain.clone(),
                encryption_context: Some(Default::default()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(empty.plaintext.expose_secret(), b"no context");
    assert_eq!(failure(decrypt(&ts, &plain, &[("a", "b")], None)), invalid);

    // Length-prefixed canonical form: characters do not move between key and value.
    let ab_c = encrypt(&ts, &key.key_id, b"ab:c", &[("ab", "c")])
        .unwrap()
        .ciphertext_blob;
    let a_bc = encrypt(&ts, &key.key_id, b"a:bc", &[("a", "bc")])
        .unwrap()
        .ciphertext_blob;
    assert_eq!(failure(decrypt(&ts, &ab_c, &[("a", "bc")], None)), invalid);
    assert_eq!(failure(decrypt(&ts, &a_bc, &[("ab", "c")], None)), invalid);
    assert_eq!(decrypt(&ts, &ab_c, &[("ab", "c")], None).unwrap(), b"ab:c");
    assert_eq!(decrypt(&ts, &a_bc, &[("a", "bc")], None).unwrap(), b"a:bc");

    // ReEncrypt binds the destination context.
    let moved = ts
        .store
        .re_encrypt(
            &ts.caller,
            ReEncryptRequest {
                ciphertext_blob: blob,
                source_encryption_context: ctx(&context),
                destination_key_id: key.key_id.clone(),
                destination_encryption_context: ctx(&[("stage", "2")]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        failure(decrypt(&ts, &moved.ciphertext_blob, &context, None)),
        invalid
    );
    assert_eq!(
        decrypt(&ts, &moved.ciphertext_blob, &[("stage", "2")], None).unwrap(),
        b"context bound"
    );
}

#[test]
fn decrypt_with_another_keys_id_is_incorrect_key() {
    let ts = TestStore::new();
    let key = create(&ts);
    let other = create(&ts);
    create_alias(&ts, "alias/other", &other.key_id).unwrap();
    create_alias(&ts, "alias/right", &key.key_id).unwrap();
    let blob = encrypt(&ts, &key.key_id, b"mine", &[])
        .unwrap()
        .ciphertext_blob;
    let incorrect = pair(
        "IncorrectKeyException",
        "The key ID in the request does not identify a CMK that can perform this operation.",
    );
    let other_alias_arn = format!("{ARN_PREFIX}alias/other");
    for wrong in [
        other.key_id.as_str(),
        other.arn.as_str(),
        "alias/other",
        other_alias_arn.as_str(),
    ] {
        assert_eq!(
            refused(&ts, || decrypt(&ts, &blob, &[], Some(wrong))),
            incorrect,
            "Decrypt {wrong}"
        );
        assert_eq!(
            refused(&ts, || ts.store.re_encrypt(
                &ts.caller,
                ReEncryptRequest {
                    ciphertext_blob: blob.clone(),
                    source_key_id: Some(wrong.into()),
                    destination_key_id: other.key_id.clone(),
                    ..Default::default()
                },
            )),
            incorrect,
            "ReEncrypt {wrong}"
        );
    }
    let right_alias_arn = format!("{ARN_PREFIX}alias/right");
    for right in [
        key.key_id.as_str(),
        key.arn.as_str(),
        "alias/right",
        right_alias_arn.as_str(),
    ] {
        let opened = ts
            .store
            .decrypt(
                &ts.caller,
                DecryptRequest {
                    ciphertext_blob: blob.clone(),
                    key_id: Some(right.into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(opened.key_id, key.arn);
        assert_eq!(opened.plaintext.expose_secret(), b"mine");
    }
    // A blob encrypted under the other key is not this key's either.
    let theirs = encrypt(&ts, &other.key_id, b"theirs", &[]).unwrap();
    assert_eq!(
        refused(&ts, || decrypt(
            &ts,
            &theirs.ciphertext_blob,
            &[],
            Some(&key.key_id)
        )),
        incorrect
    );
    // Asymmetric algorithms do not apply to these keys.
    assert_eq!(
        refused(&ts, || ts.store.encrypt(
            &ts.caller,
            EncryptRequest {
                key_id: key.key_id.clone(),
                plaintext: SecretSlice::from(b"x".to_vec()),
                encryption_algorithm: Some("RSAES_OAEP_SHA_256".into()),
                ..Default::default()
            },
        ))
        .0,
        "InvalidKeyUsageException"
    );
}

#[test]
fn descriptions_and_tags_out_of_bounds() {
    let ts = TestStore::new();
    let key = create(&ts);
    let k = key.key_id.as_str();
    let too_long = "d".repeat(8193);
    assert_eq!(
        refused(&ts, || ts.store.update_key_description(
            &ts.caller,
            UpdateKeyDescriptionRequest {
                key_id: k.into(),
                description: too_long.clone(),
            },
        )),
        pair(
            "ValidationException",
            violation(
                None,
                "description",
                "Member must have length less than or equal to 8192"
            )
        )
    );
    let keys_before = snapshot(&ts);
    let refused_create = ts.store.create_key(
        &ts.caller,
        CreateKeyRequest {
            description: Some(too_long),
            ..Default::default()
        },
    );
    assert_eq!(failure(refused_create).0, "ValidationException");
    assert_eq!(snapshot(&ts), keys_before, "no key was created");

    let tag = |key: &str, value: &str| Tag {
        tag_key: key.into(),
        tag_value: value.into(),
    };
    let tag_resource = |tags: Vec<Tag>| {
        ts.store.tag_resource(
            &ts.caller,
            TagResourceRequest {
                key_id: k.into(),
                tags,
            },
        )
    };
    // AWS's answers: TagException for the service's rules, ValidationException naming the
    // tag's position for the API model's lengths.
    for (tags, code, message) in [
        (vec![tag("aws:reserved", "x")], "TagException", "Tags beginning with aws: are reserved".to_owned()),
        (vec![tag("AWS:Upper", "x")], "TagException", "Tags beginning with aws: are reserved".to_owned()),
        (
            vec![tag("ok", "x"), tag("", "x")],
            "ValidationException",
            "1 validation error detected: Value '' at 'tags.2.member.tagKey' failed to satisfy constraint: Member must have length greater than or equal to 1".to_owned(),
        ),
        (
            vec![tag(&"k".repeat(129), "x")],
            "ValidationException",
            format!("1 validation error detected: Value '{}' at 'tags.1.member.tagKey' failed to satisfy constraint: Member must have length less than or equal to 128", "k".repeat(129)),
        ),
        (
            vec![tag("k", &"v".repeat(257))],
            "ValidationException",
            format!("1 validation error detected: Value '{}' at 'tags.1.member.tagValue' failed to satisfy constraint: Member must have length less than or equal to 256", "v".repeat(257)),
        ),
        (vec![tag("same", "1"), tag("same", "2")], "TagException", "Duplicate tag keys".to_owned()),
        ((0..51).map(|n| tag(&format!("t{n}"), "x")).collect(), "TagException", "Too many tags".to_owned()),
        // A bad tag after good ones: none of the good ones is applied.
        (vec![tag("good", "1"), tag("aws:bad", "2")], "TagException", "Tags beginning with aws: are reserved".to_owned()),
    ] {
        assert_eq!(
            refused(&ts, || tag_resource(tags.clone())),
            (code.to_owned(), message),
            "{tags:?}"
        );
    }
    tag_resource((0..50).map(|n| tag(&format!("t{n}"), "x")).collect()).unwrap();
    assert_eq!(
        refused(&ts, || tag_resource(vec![tag("one-more", "x")])).0,
        "TagException"
    );
}
