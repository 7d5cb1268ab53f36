//! Hostile input, property-based: the parsers that read what a caller sends (the ciphertext
//! blob, the JSON request of every operation, the SigV4 `Authorization` header and its
//! request, key ids, ARNs and alias names, CloudWatch Logs filter patterns) never panic
//! and answer each input with the AWS error of its class, decided here from the documented
//! rules rather than from the code. The blob and JSON properties run against a real key
//! store (SoftHSM2 cluster, sled on disk) and check that the hostile calls lost nothing.
//!
//! `HSM_KMS_PROPTEST_CASES` sets the number of cases of each property (default: a few
//! hundred for those that reach the key store, a few thousand for the pure parsers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::TestStore;
use common::kms::{create, create_alias, decrypt, describe, encrypt};
use common::server::{AccessKey, signature_headers};
use hsm_kms::audit::filter::{FilterPattern, MAX_PATTERN_CHARS};
use hsm_kms::crypto::blob::{CiphertextBlob, FORMAT_VERSION, MAGIC};
use hsm_kms::error::KmsError;
use hsm_kms::ids::{AliasName, KeyId, KeyRef, Scope};
use hsm_kms::keystore::api::DecryptRequest;
use hsm_kms::server::protocol::{TARGET_PREFIX, dispatch};
use hsm_kms::server::sigv4::{Credential, Credentials, HttpRequest, Verifier};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

const CASES_ENV: &str = "HSM_KMS_PROPTEST_CASES";
/// Default cases of a property that calls the key store.
const STORE_CASES: u32 = 300;
/// Default cases of a property over a pure parser.
const PARSER_CASES: u32 = 3000;

/// Runs `test` on `cases` inputs from `strategy` (or `HSM_KMS_PROPTEST_CASES`), shrinking a
/// failure to a small input; nothing is written to disk.
fn check<S: Strategy>(
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = std::env::var(CASES_ENV).ok().map_or(default_cases, |v| {
        v.parse().expect("HSM_KMS_PROPTEST_CASES is a number")
    });
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}

/// The error code of a result, or `"ok"`.
fn outcome<T>(result: &Result<T, KmsError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => error.code(),
    }
}

// ---------------------------------------------------------------- ciphertext blobs

/// Documented layout (docs/ciphertext-format.md): "HK", version 1, 16-byte key id, 4-byte
/// material version, 12-byte IV, 1 to 4096 bytes of ciphertext, 16-byte tag.
const HEADER: usize = 2 + 1 + 16 + 4;
const SHORTEST_BLOB: usize = HEADER + 12 + 1 + 16;
const LONGEST_BLOB: usize = HEADER + 12 + 4096 + 16;
/// The API model's CiphertextBlob length limits.
const CIPHERTEXT_BLOB_MAX: usize = 6144;

/// Arbitrary bytes, and bytes that start like a blob, at every interesting length.
fn blob_bytes() -> impl Strategy<Value = Vec<u8>> {
    let near = prop_oneof![
        0usize..80,
        (SHORTEST_BLOB - 2)..(SHORTEST_BLOB + 2),
        (LONGEST_BLOB - 2)..(LONGEST_BLOB + 2),
        0usize..7000,
    ];
    let bytes = near.prop_flat_map(|len| prop::collection::vec(any::<u8>(), len));
    (bytes, 0u8..4).prop_map(|(mut bytes, shape)| {
        if shape > 0 && bytes.len() >= 3 {
            bytes[..2].copy_from_slice(&MAGIC);
            if shape > 1 {
                bytes[2] = FORMAT_VERSION;
            }
        }
        bytes
    })
}

#[test]
fn blob_parser_accepts_exactly_the_documented_layout() {
    check(PARSER_CASES, blob_bytes(), |bytes| {
        let well_formed = (SHORTEST_BLOB..=LONGEST_BLOB).contains(&bytes.len())
            && bytes[..2] == *b"HK"
            && matches!(bytes[2], 1 | 2);
        match CiphertextBlob::parse(&bytes) {
            Ok(blob) => {
                prop_assert!(
                    well_formed,
                    "accepted a malformed blob of {} bytes",
                    bytes.len()
                );
                let key_id = blob.header().key_id();
                prop_assert_eq!(&key_id.as_bytes()[..], &bytes[3..19]);
                // Format version 2 names a multi-Region key id.
                prop_assert_eq!(key_id.is_multi_region(), bytes[2] == 2);
                let version = u32::from_be_bytes(bytes[19..23].try_into().unwrap());
                prop_assert_eq!(blob.header().material_version(), version);
                prop_assert_eq!(&blob.iv()[..], &bytes[23..35]);
                prop_assert_eq!(blob.ciphertext_and_tag(), &bytes[35..]);
            }
            Err(error) => {
                prop_assert!(!well_formed, "refused a well-formed blob: {error:?}");
                prop_assert_eq!(error.code(), "InvalidCiphertextException");
            }
        }
        Ok(())
    });
}

/// How to spoil a real ciphertext.
#[derive(Clone, Debug)]
enum Spoil {
    FlipBit { at: usize, bit: u8 },
    Truncate { len: usize },
    Append { bytes: Vec<u8> },
    Replace { at: usize, bytes: Vec<u8> },
    Random { bytes: Vec<u8> },
}

impl Spoil {
    fn apply(&self, blob: &[u8]) -> Vec<u8> {
        let mut out = blob.to_vec();
        match self {
            Spoil::FlipBit { at, bit } => out[at % blob.len()] ^= 1 << bit,
            Spoil::Truncate { len } => out.truncate(len % blob.len()),
            Spoil::Append { bytes } => out.extend_from_slice(bytes),
            Spoil::Replace { at, bytes } => {
                for (i, byte) in bytes.iter().enumerate() {
                    if let Some(slot) = out.get_mut(at % blob.len() + i) {
                        *slot = *byte;
                    }
                }
            }
            Spoil::Random { bytes } => out = bytes.clone(),
        }
        out
    }
}

/// Every kind of spoiling, at any place.
fn spoil() -> impl Strategy<Value = Spoil> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Spoil::FlipBit { at, bit }),
        any::<usize>().prop_map(|len| Spoil::Truncate { len }),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 1..64),
            prop::collection::vec(any::<u8>(), 6000..6200),
        ]
        .prop_map(|bytes| Spoil::Append { bytes }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..24))
            .prop_map(|(at, bytes)| Spoil::Replace { at, bytes }),
        blob_bytes().prop_map(|bytes| Spoil::Random { bytes }),
    ]
}

#[test]
fn a_spoiled_ciphertext_never_decrypts_and_is_invalid_ciphertext() {
    let ts = TestStore::new();
    let key = create(&ts).key_id;
    let context = [("purpose", "hostile-input")];
    let blob = encrypt(&ts, &key, b"the witness plaintext", &context)
        .unwrap()
        .ciphertext_blob;
    check(STORE_CASES, spoil(), |spoil| {
        let spoiled = spoil.apply(&blob);
        if spoiled == blob {
            return Ok(());
        }
        let result = ts.store.decrypt(
            &ts.caller,
            DecryptRequest {
                ciphertext_blob: spoiled.clone(),
                encryption_context: common::kms::ctx(&context),
                ..Default::default()
            },
        );
        // The model's length limits come first, then everything is one answer.
        let expected = if spoiled.is_empty() || spoiled.len() > CIPHERTEXT_BLOB_MAX {
            "ValidationException"
        } else {
            "InvalidCiphertextException"
        };
        prop_assert_eq!(outcome(&result), expected, "{} bytes", spoiled.len());
        Ok(())
    });
    assert_eq!(
        decrypt(&ts, &blob, &context, None).unwrap(),
        b"the witness plaintext"
    );
}

// ---------------------------------------------------------------- JSON requests

/// Every operation the endpoint serves and its required members (AWS's API model).
const OPERATIONS: &[(&str, &[&str])] = &[
    ("CreateKey", &[]),
    ("DescribeKey", &["KeyId"]),
    ("ListKeys", &[]),
    ("EnableKey", &["KeyId"]),
    ("DisableKey", &["KeyId"]),
    ("ScheduleKeyDeletion", &["KeyId"]),
    ("CancelKeyDeletion", &["KeyId"]),
    ("UpdateKeyDescription", &["KeyId", "Description"]),
    ("TagResource", &["KeyId", "Tags"]),
    ("UntagResource", &["KeyId", "TagKeys"]),
    ("ListResourceTags", &["KeyId"]),
    ("CreateAlias", &["AliasName", "TargetKeyId"]),
    ("UpdateAlias", &["AliasName", "TargetKeyId"]),
    ("DeleteAlias", &["AliasName"]),
    ("ListAliases", &[]),
    ("Encrypt", &["KeyId", "Plaintext"]),
    ("Decrypt", &["CiphertextBlob"]),
    ("ReEncrypt", &["CiphertextBlob", "DestinationKeyId"]),
    ("GenerateDataKey", &["KeyId"]),
    ("GenerateDataKeyWithoutPlaintext", &["KeyId"]),
    ("GenerateRandom", &[]),
    ("EnableKeyRotation", &["KeyId"]),
    ("DisableKeyRotation", &["KeyId"]),
    ("GetKeyRotationStatus", &["KeyId"]),
    ("RotateKeyOnDemand", &["KeyId"]),
    ("ListKeyRotations", &["KeyId"]),
    ("CreateCustomKeyStore", &["CustomKeyStoreName"]),
    ("DescribeCustomKeyStores", &[]),
    ("ConnectCustomKeyStore", &["CustomKeyStoreId"]),
    ("DisconnectCustomKeyStore", &["CustomKeyStoreId"]),
    ("UpdateCustomKeyStore", &["CustomKeyStoreId"]),
    ("DeleteCustomKeyStore", &["CustomKeyStoreId"]),
    ("GetKeyPolicy", &["KeyId"]),
    ("PutKeyPolicy", &["KeyId", "Policy"]),
    ("ListKeyPolicies", &["KeyId"]),
    ("CreateGrant", &["KeyId", "GranteePrincipal", "Operations"]),
    ("ListGrants", &["KeyId"]),
    ("ListRetirableGrants", &["RetiringPrincipal"]),
    ("RetireGrant", &[]),
    ("RevokeGrant", &["KeyId", "GrantId"]),
    ("Sign", &["KeyId", "Message", "SigningAlgorithm"]),
    (
        "Verify",
        &["KeyId", "Message", "Signature", "SigningAlgorithm"],
    ),
    ("GetPublicKey", &["KeyId"]),
    ("GenerateDataKeyPair", &["KeyId", "KeyPairSpec"]),
    (
        "GenerateDataKeyPairWithoutPlaintext",
        &["KeyId", "KeyPairSpec"],
    ),
    (
        "DeriveSharedSecret",
        &["KeyId", "KeyAgreementAlgorithm", "PublicKey"],
    ),
    ("GenerateMac", &["Message", "KeyId", "MacAlgorithm"]),
    ("VerifyMac", &["Message", "KeyId", "MacAlgorithm", "Mac"]),
    (
        "GetParametersForImport",
        &["KeyId", "WrappingAlgorithm", "WrappingKeySpec"],
    ),
    (
        "ImportKeyMaterial",
        &["KeyId", "ImportToken", "EncryptedKeyMaterial"],
    ),
    ("DeleteImportedKeyMaterial", &["KeyId"]),
    ("ReplicateKey", &["KeyId", "ReplicaRegion"]),
    ("UpdatePrimaryRegion", &["KeyId", "PrimaryRegion"]),
];

/// Member names of the model, with their JSON type: `s` string (blobs too), `n` number,
/// `b` boolean, `m` map of strings, `l` list.
const MEMBERS: &[(&str, char)] = &[
    ("KeyId", 's'),
    ("ReplicaRegion", 's'),
    ("PrimaryRegion", 's'),
    ("AliasName", 's'),
    ("TargetKeyId", 's'),
    ("DestinationKeyId", 's'),
    ("SourceKeyId", 's'),
    ("Description", 's'),
    ("Plaintext", 's'),
    ("CiphertextBlob", 's'),
    ("KeySpec", 's'),
    ("KeyUsage", 's'),
    ("Origin", 's'),
    ("Marker", 's'),
    ("EncryptionAlgorithm", 's'),
    ("CustomKeyStoreId", 's'),
    ("CustomKeyStoreName", 's'),
    ("CloudHsmClusterId", 's'),
    ("KeyStorePassword", 's'),
    ("TrustAnchorCertificate", 's'),
    ("Limit", 'n'),
    ("NumberOfBytes", 'n'),
    ("PendingWindowInDays", 'n'),
    ("RotationPeriodInDays", 'n'),
    ("BypassPolicyLockoutSafetyCheck", 'b'),
    ("EncryptionContext", 'm'),
    ("SourceEncryptionContext", 'm'),
    ("DestinationEncryptionContext", 'm'),
    ("Tags", 'l'),
    ("TagKeys", 'l'),
    ("GrantTokens", 'l'),
    ("Policy", 's'),
    ("PolicyName", 's'),
    ("GranteePrincipal", 's'),
    ("RetiringPrincipal", 's'),
    ("GrantId", 's'),
    ("GrantToken", 's'),
    ("Name", 's'),
    ("DryRun", 'b'),
    ("Operations", 'l'),
    ("Message", 's'),
    ("MessageType", 's'),
    ("Signature", 's'),
    ("SigningAlgorithm", 's'),
    ("MacAlgorithm", 's'),
    ("Mac", 's'),
    ("KeyAgreementAlgorithm", 's'),
    ("KeyPairSpec", 's'),
    ("PublicKey", 's'),
    ("WrappingAlgorithm", 's'),
    ("WrappingKeySpec", 's'),
    ("ImportToken", 's'),
    ("EncryptedKeyMaterial", 's'),
    ("ValidTo", 'n'),
    ("ExpirationModel", 's'),
];

/// Error codes no input may cause on a healthy cluster: they say the service broke.
const SERVICE_FAILURES: &[&str] = &[
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "ConflictException",
];

/// Strings a hostile caller tries as a key id, alias or other string member.
fn hostile_string(pool: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(pool),
        2 => any::<String>(),
        1 => "(arn:aws:kms:[a-z0-9-]{0,12}:[0-9]{0,13}:(key|alias)/)?[a-zA-Z0-9:/_-]{0,40}",
        1 => "alias/[a-zA-Z0-9:/_.-]{0,300}",
        1 => "[0-9a-f-]{30,40}",
        1 => "[A-Za-z0-9+/=]{0,80}",
        1 => Just(String::new()),
        1 => (0usize..3000).prop_map(|n| "a".repeat(n)),
    ]
}

/// A JSON value of any shape, strings drawn from `strings`.
fn hostile_value(strings: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0i64), Just(1), Just(7), Just(30), Just(1024), Just(-1)]
            .prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        strings.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(strings.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value of the member's own type.
fn typed_value(kind: char, strings: BoxedStrategy<String>) -> BoxedStrategy<Value> {
    match kind {
        's' => strings.clone().prop_map(Value::String).boxed(),
        'n' => prop_oneof![any::<i64>(), -2i64..2000]
            .prop_map(Value::from)
            .boxed(),
        'b' => any::<bool>().prop_map(Value::Bool).boxed(),
        'm' => prop::collection::btree_map(strings.clone(), strings.clone(), 0..4)
            .prop_map(|m| json!(m))
            .boxed(),
        _ => prop::collection::vec(
            prop_oneof![
                strings.clone().prop_map(Value::String),
                (strings.clone(), strings.clone())
                    .prop_map(|(k, v)| json!({"TagKey": k, "TagValue": v})),
            ],
            0..4,
        )
        .prop_map(Value::Array)
        .boxed(),
    }
}

/// A value of the member's own type, or of any other.
fn member_value(kind: char, strings: BoxedStrategy<String>) -> BoxedStrategy<Value> {
    prop_oneof![3 => typed_value(kind, strings.clone()), 1 => hostile_value(strings)].boxed()
}

/// A request of a served operation with its required members and a few others, every
/// member of its own type (the values may still be hostile).
fn typed_request(pool: Vec<String>) -> impl Strategy<Value = (String, Vec<u8>)> {
    let strings = hostile_string(pool).boxed();
    let extras = prop::collection::vec(prop::sample::select(MEMBERS), 0..4);
    (prop::sample::select(OPERATIONS), extras)
        .prop_flat_map(move |((name, required), extras)| {
            let members: Vec<_> = MEMBERS
                .iter()
                .filter(|(member, _)| required.contains(member))
                .chain(&extras)
                .map(|(member, kind)| {
                    (
                        Just(member.to_string()),
                        typed_value(*kind, strings.clone()),
                    )
                })
                .collect();
            (Just(format!("{TARGET_PREFIX}{name}")), members)
        })
        .prop_map(|(target, pairs)| {
            let object: Map<String, Value> = pairs.into_iter().collect();
            (target, serde_json::to_vec(&Value::Object(object)).unwrap())
        })
}

/// A request body: arbitrary bytes, broken JSON, JSON of the wrong shape, or an object of
/// model members with right or wrong values.
fn hostile_body(pool: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let strings = hostile_string(pool).boxed();
    let members = prop::collection::vec((prop::sample::select(MEMBERS), any::<u64>()), 0..6);
    let object = members
        .prop_flat_map(move |chosen| {
            chosen
                .iter()
                .map(|((name, kind), _)| {
                    (Just(name.to_string()), member_value(*kind, strings.clone()))
                })
                .collect::<Vec<_>>()
        })
        .prop_map(|pairs| {
            let object: Map<String, Value> = pairs.into_iter().collect();
            serde_json::to_vec(&Value::Object(object)).unwrap()
        });
    let broken = (object.clone(), any::<usize>(), any::<u8>(), 0u8..3).prop_map(
        |(mut body, at, byte, how)| {
            if !body.is_empty() {
                let at = at % body.len();
                match how {
                    0 => body.truncate(at),
                    1 => body[at] = byte,
                    _ => body.insert(at, byte),
                }
            }
            body
        },
    );
    prop_oneof![
        4 => object,
        2 => broken,
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => hostile_value(hostile_string(vec!["alias/x".into()]).boxed())
            .prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => (1usize..100_000, prop::bool::ANY).prop_map(|(depth, close)| {
            let mut body = "[".repeat(depth).into_bytes();
            if close {
                body.extend(std::iter::repeat_n(b']', depth));
            }
            body
        }),
        1 => prop_oneof![Just(b"".to_vec()), Just(b"  \n".to_vec()), Just(b"null".to_vec()), Just(b"{}".to_vec())],
    ]
}

/// The answer AWS's JSON protocol documents for a body, when the body alone decides it.
fn protocol_answer(required: &[&str], body: &[u8]) -> Option<&'static str> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return required.first().map(|_| "ValidationException");
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Some("SerializationException");
    };
    let Value::Object(members) = value else {
        return Some("SerializationException");
    };
    if required
        .iter()
        .any(|name| members.get(*name).is_none_or(Value::is_null))
    {
        return Some("ValidationException");
    }
    let wrong_type = required.iter().any(|name| {
        let kind = MEMBERS
            .iter()
            .find(|(n, _)| n == name)
            .map_or('s', |(_, k)| *k);
        match (kind, &members[*name]) {
            ('s', value) => !value.is_string(),
            ('l', value) => !value.is_array(),
            _ => false,
        }
    });
    wrong_type.then_some("SerializationException")
}

#[test]
fn every_operation_answers_hostile_json_with_the_protocol_error_and_loses_nothing() {
    let ts = TestStore::new();
    // The witness: no hostile call can name it (its id is not in the pool).
    let witness = create(&ts);
    create_alias(&ts, "alias/hostile-witness", &witness.key_id).unwrap();
    let sealed = encrypt(&ts, &witness.key_id, b"witness", &[])
        .unwrap()
        .ciphertext_blob;
    // A target the hostile calls may change.
    let target = create(&ts);
    create_alias(&ts, "alias/hostile-target", &target.key_id).unwrap();
    let target_blob = encrypt(&ts, &target.key_id, b"target", &[])
        .unwrap()
        .ciphertext_blob;
    let scope = ts.store.scope();
    let pool = vec![
        target.key_id.clone(),
        target.arn.clone(),
        "alias/hostile-target".into(),
        scope
            .alias_arn(&AliasName::parse("alias/hostile-target").unwrap())
            .to_string(),
        "alias/aws/reserved".into(),
        format!("arn:aws:kms:eu-west-9:111122223333:key/{}", target.key_id),
        format!("arn:aws:kms:us-east-1:999999999999:key/{}", target.key_id),
        BASE64.encode(&target_blob),
        "AES_256".into(),
        "SYMMETRIC_DEFAULT".into(),
        "RSAES_OAEP_SHA_256".into(),
    ];
    let target_names = prop_oneof![
        8 => prop::sample::select(OPERATIONS).prop_map(|(name, _)| format!("{TARGET_PREFIX}{name}")),
        1 => any::<String>(),
        1 => "TrentService\\.[A-Za-z]{0,30}",
    ];
    let before = describe(&ts, &witness.key_id);
    // How often each answer came, printed so a run shows it reached past the decoder.
    let answers: Mutex<BTreeMap<&'static str, usize>> = Mutex::default();
    check(
        STORE_CASES,
        prop_oneof![
            3 => (target_names, hostile_body(pool.clone())),
            2 => typed_request(pool),
        ],
        |(target_name, body)| {
            let result = dispatch(&ts.store, &ts.caller, &target_name, &body);
            let code = outcome(&result);
            *answers.lock().unwrap().entry(code).or_default() += 1;
            let Some((_, required)) = OPERATIONS
                .iter()
                .find(|(name, _)| target_name.strip_prefix(TARGET_PREFIX) == Some(name))
            else {
                prop_assert_eq!(code, "UnknownOperationException");
                return Ok(());
            };
            if let Some(expected) = protocol_answer(required, &body) {
                prop_assert_eq!(code, expected, "body {}", String::from_utf8_lossy(&body));
            } else {
                prop_assert!(
                    !SERVICE_FAILURES.contains(&code),
                    "{code} for body {}: {:?}",
                    String::from_utf8_lossy(&body),
                    result.err().map(|e| e.message().to_owned())
                );
            }
            if let Err(error) = &result {
                prop_assert!(!error.code().is_empty());
                prop_assert!(error.message().len() < 4096 || error.code() == "ValidationException");
            }
            Ok(())
        },
    );
    println!("hostile JSON answers: {:?}", answers.lock().unwrap());
    assert_eq!(
        describe(&ts, &witness.key_id),
        before,
        "a hostile call changed the witness"
    );
    assert_eq!(decrypt(&ts, &sealed, &[], None).unwrap(), b"witness");
    let aliases = common::kms::aliases(&ts, Some(&witness.key_id));
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0].alias_name, "alias/hostile-witness");
}

// ---------------------------------------------------------------- SigV4

const ACCESS_KEY: &str = "AKIAHSMKMSHOSTILE001";
const SECRET: &str = "hostile/secret+key/0123456789abcdefghijk";
const HOST: &str = "127.0.0.1:4599";
const SIGNED_BODY: &[u8] = br#"{"KeyId":"alias/app","Plaintext":"AAFzZWNyZXT/"}"#;

/// 2026-01-15T10:30:00Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_768_473_000)
}

fn verifier() -> Verifier {
    let credential = Credential {
        access_key_id: ACCESS_KEY.into(),
        secret: SecretString::from(SECRET),
        account_id: "111122223333".into(),
        principal_arn: "arn:aws:iam::111122223333:user/app".into(),
    };
    Verifier::new(
        Credentials::new([credential]).unwrap(),
        vec!["us-east-1".into()],
    )
}

type Headers = Vec<(String, String)>;

/// A KMS Encrypt request signed by `aws-sigv4` at `t0`, as botocore sends it.
fn signed_request() -> Headers {
    let key = AccessKey {
        id: ACCESS_KEY.into(),
        secret: SECRET.into(),
    };
    let mut headers: Headers = vec![
        ("X-Amz-Target".into(), "TrentService.Encrypt".into()),
        ("Content-Type".into(), "application/x-amz-json-1.1".into()),
    ];
    let unsigned: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let signature = signature_headers(
        &key,
        &format!("http://{HOST}/"),
        &unsigned,
        SIGNED_BODY,
        t0(),
    )
    .unwrap();
    headers.extend(signature);
    headers.push(("Host".into(), HOST.into()));
    headers
}

fn verify(headers: &Headers, body: &[u8], method: &str, path: &str) -> Result<(), KmsError> {
    let raw: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    verifier()
        .verify(
            &HttpRequest {
                method,
                path,
                query: "",
                headers: &raw,
                body,
            },
            t0(),
        )
        .map(|_| ())
}

/// The codes a refused SigV4 request gets.
const SIGV4_REFUSALS: &[&str] = &[
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
    "InvalidSignatureException",
    "UnrecognizedClientException",
];

/// `Authorization` values: free text, and the right shape with hostile parts.
fn hostile_authorization() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        any::<String>(),
        "[A-Za-z0-9/=,; _-]{0,40}",
        Just(format!("{ACCESS_KEY}/20260115/us-east-1/kms/aws4_request")),
        Just("content-type;host;x-amz-date;x-amz-target".to_owned()),
        "[0-9a-f]{64}",
    ];
    prop_oneof![
        any::<String>(),
        "AWS4-[A-Z0-9-]{0,20}( [A-Za-z]{0,12}=[^,]{0,40},?){0,4}",
        (part.clone(), part.clone(), part).prop_map(|(c, h, s)| {
            format!("AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={h}, Signature={s}")
        }),
    ]
}

#[test]
fn a_hostile_authorization_header_is_refused_with_a_sigv4_error() {
    let date = prop_oneof![
        Just(Some("20260115T103000Z".to_owned())),
        Just(None),
        any::<String>().prop_map(Some),
        "[0-9]{8}T[0-9]{6}Z?".prop_map(Some),
    ];
    check(
        PARSER_CASES,
        (hostile_authorization(), date),
        |(authorization, date)| {
            let mut headers = signed_request();
            headers.retain(|(n, _)| {
                !n.eq_ignore_ascii_case("authorization") && !n.eq_ignore_ascii_case("x-amz-date")
            });
            headers.push(("Authorization".into(), authorization.clone()));
            if let Some(date) = date {
                headers.push(("X-Amz-Date".into(), date));
            }
            let code = outcome(&verify(&headers, SIGNED_BODY, "POST", "/"));
            prop_assert!(
                SIGV4_REFUSALS.contains(&code),
                "{code} for {authorization:?}"
            );
            if !authorization.starts_with("AWS4-") {
                prop_assert_eq!(code, "MissingAuthenticationTokenException");
            }
            Ok(())
        },
    );
}

/// A change to a signed request.
#[derive(Clone, Debug)]
enum Tamper {
    Body {
        at: usize,
        byte: u8,
    },
    Header {
        which: usize,
        value: String,
    },
    Drop {
        which: usize,
    },
    Method(String),
    Path(String),
    /// An extra header nobody signed: the request must still verify.
    Unsigned {
        name: String,
        value: String,
    },
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Tamper::Body { at, byte }),
        (any::<usize>(), any::<String>())
            .prop_map(|(which, value)| Tamper::Header { which, value }),
        any::<usize>().prop_map(|which| Tamper::Drop { which }),
        "[A-Z]{0,8}".prop_map(Tamper::Method),
        // Segments that no path normalisation turns back into "/".
        "/[a-z%]{1,10}".prop_map(Tamper::Path),
        ("x-unsigned-[a-z]{1,8}", "[ -~]{0,30}")
            .prop_map(|(name, value)| Tamper::Unsigned { name, value }),
    ]
}

#[test]
fn a_tampered_signed_request_is_refused_and_an_unsigned_extra_is_not() {
    let original = signed_request();
    assert!(
        verify(&original, SIGNED_BODY, "POST", "/").is_ok(),
        "the untouched request must verify"
    );
    check(PARSER_CASES, tamper(), |tamper| {
        let mut headers = original.clone();
        let mut body = SIGNED_BODY.to_vec();
        let (mut method, mut path) = ("POST".to_owned(), "/".to_owned());
        match &tamper {
            Tamper::Body { at, byte } => body[at % SIGNED_BODY.len()] = *byte,
            Tamper::Header { which, value } => headers[which % original.len()].1 = value.clone(),
            Tamper::Drop { which } => {
                headers.remove(which % original.len());
            }
            Tamper::Method(m) => method = m.clone(),
            Tamper::Path(p) => path = p.clone(),
            Tamper::Unsigned { name, value } => headers.push((name.clone(), value.clone())),
        }
        let unchanged =
            headers == original && body == SIGNED_BODY && method == "POST" && path == "/";
        let result = verify(&headers, &body, &method, &path);
        if unchanged || matches!(tamper, Tamper::Unsigned { .. }) {
            prop_assert!(result.is_ok(), "{:?}", result.err());
        } else {
            let code = outcome(&result);
            prop_assert!(SIGV4_REFUSALS.contains(&code), "{code} for {tamper:?}");
        }
        Ok(())
    });
}

// ---------------------------------------------------------------- over the HTTP wire

/// Default cases of the property that sends requests to a real server.
const WIRE_CASES: u32 = 200;
/// Bodies of the wire property stay below `[server] max_body_bytes` (default 65536): a
/// server may close the connection on a larger one before the client has sent it all.
const WIRE_BODY_MAX: usize = 60_000;

/// A request as a hostile client sends it: target and content type (absent, right or
/// wrong), a hostile body, signed or not.
fn hostile_http_request() -> impl Strategy<Value = (Option<String>, Option<String>, Vec<u8>, bool)>
{
    let target = prop_oneof![
        6 => prop::sample::select(OPERATIONS).prop_map(|(name, _)| Some(format!("{TARGET_PREFIX}{name}"))),
        1 => Just(None),
        1 => "[ -~]{0,40}".prop_map(Some),
    ];
    let content_type = prop_oneof![
        6 => Just(Some("application/x-amz-json-1.1".to_owned())),
        1 => Just(None),
        1 => "[ -~]{0,40}".prop_map(Some),
    ];
    let pool = vec!["alias/hostile-wire".to_owned(), "AES_256".to_owned()];
    let body = prop_oneof![
        3 => hostile_body(pool.clone()),
        1 => typed_request(pool).prop_map(|(_, body)| body),
    ];
    (target, content_type, body, prop::bool::weighted(0.9)).prop_filter(
        "within the default body limit (checked on its own below)",
        |request| request.2.len() <= WIRE_BODY_MAX,
    )
}

#[test]
fn hostile_requests_over_http_get_aws_error_shapes_and_the_server_keeps_serving() {
    use common::server::{Client, Server, log_tail};

    let cluster = common::TestCluster::new(2);
    cluster.init();
    let mut server = Server::start(&cluster);
    let client = Client::new(&server, &AccessKey::of(&cluster));
    let witness = client.must(
        "CreateKey",
        &json!({ "Description": "hostile wire witness" }),
    );
    let witness = witness["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let sealed = client.must(
        "Encrypt",
        &json!({ "KeyId": witness, "Plaintext": "d2l0bmVzcw==" }),
    );

    check(
        WIRE_CASES,
        hostile_http_request(),
        |(target, content_type, body, signed)| {
            let mut headers: Vec<(&str, &str)> = Vec::new();
            if let Some(target) = &target {
                headers.push(("X-Amz-Target", target));
            }
            if let Some(content_type) = &content_type {
                headers.push(("Content-Type", content_type));
            }
            let answer = client.send(&headers, &body, signed);
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) => return Err(TestCaseError::fail(format!("no answer: {error}"))),
            };
            prop_assert!(
                answer.status == 200 || (400..500).contains(&answer.status),
                "HTTP {}",
                answer.status
            );
            if answer.status == 200 {
                return Ok(());
            }
            let error: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            let code = error["__type"].as_str().unwrap_or_default();
            prop_assert!(
                !code.is_empty(),
                "HTTP {} without an AWS error body: {:?}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
            prop_assert!(error["message"].is_string() || error["message"].is_null());
            let header = answer.header("x-amzn-errortype").unwrap_or_default();
            prop_assert!(
                header.starts_with(code),
                "X-Amzn-ErrorType {header:?} for {code}"
            );
            prop_assert!(!SERVICE_FAILURES.contains(&code), "{code}");
            if !signed {
                prop_assert!(
                    SIGV4_REFUSALS.contains(&code),
                    "{code} for an unsigned request"
                );
            }
            Ok(())
        },
    );

    // One byte over the default limit: refused with an AWS error, not plain text.
    let oversized = format!(r#"{{"Description":"{}"}}"#, "x".repeat(65_537));
    let answer = client
        .send(
            &[
                ("X-Amz-Target", "TrentService.CreateKey"),
                ("Content-Type", "application/x-amz-json-1.1"),
            ],
            oversized.as_bytes(),
            true,
        )
        .unwrap();
    let error: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    assert!(
        (400..500).contains(&answer.status) && error["__type"].is_string(),
        "an oversized body got HTTP {} {:?}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );

    let decrypted = client.must(
        "Decrypt",
        &json!({ "CiphertextBlob": sealed["CiphertextBlob"] }),
    );
    assert_eq!(
        decrypted["Plaintext"],
        json!("d2l0bmVzcw=="),
        "{}",
        log_tail(&cluster)
    );
    let described = client.must("DescribeKey", &json!({ "KeyId": witness }));
    assert_eq!(described["KeyMetadata"]["KeyState"], json!("Enabled"));
    server.kill();
}

// ---------------------------------------------------------------- key ids, ARNs, aliases

/// The documented alias rule: `alias/`, then 1 or more of `[a-zA-Z0-9/_-]`, 256 at most.
fn is_valid_alias(s: &str) -> bool {
    s.len() <= 256
        && s.strip_prefix("alias/").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
        })
}

fn key_ref_input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "arn(:[a-z0-9-]{0,10}){0,7}(:(key|alias)/[a-zA-Z0-9:/_-]{0,40})?",
        "arn:aws:kms:(us-east-1|eu-west-1|):(111122223333|123|):(key/[0-9a-f-]{36}|alias/[a-zA-Z0-9:/_-]{0,20}|[a-z]{0,5})",
        "alias/[a-zA-Z0-9:/_.-]{0,260}",
        "[0-9a-fA-F-]{34,38}",
        Just(String::new()),
        (2040usize..2060).prop_map(|n| "k".repeat(n)),
    ]
}

#[test]
fn key_references_get_validation_not_found_or_invalid_arn() {
    let scope = Scope::new("us-east-1", "111122223333").unwrap();
    check(PARSER_CASES, key_ref_input(), |input| {
        let result = KeyRef::parse(&input, &scope);
        let chars = input.chars().count();
        match &result {
            Ok(KeyRef::KeyId(id)) => prop_assert_eq!(id.to_string(), input.clone()),
            Ok(KeyRef::KeyArn(arn)) => prop_assert_eq!(arn.as_str(), input.as_str()),
            Ok(KeyRef::AliasName(name)) => {
                prop_assert!(is_valid_alias(&input));
                prop_assert_eq!(name.as_str(), input.as_str());
            }
            Ok(KeyRef::AliasArn(arn)) => prop_assert_eq!(arn.as_str(), input.as_str()),
            Err(error) => {
                let code = error.code();
                if chars == 0 || chars > 2048 {
                    prop_assert_eq!(code, "ValidationException");
                } else if input.starts_with("arn:") {
                    prop_assert!(
                        ["NotFoundException", "InvalidArnException"].contains(&code),
                        "{code}"
                    );
                } else {
                    prop_assert_eq!(code, "NotFoundException");
                }
                prop_assert!(!error.message().is_empty() || code == "ValidationException");
            }
        }
        // Only the canonical lowercase UUID is a key id.
        let canonical = input.len() == 36
            && input.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        match KeyId::parse(&input) {
            Ok(_) => prop_assert!(canonical),
            Err(error) => {
                prop_assert!(!canonical);
                prop_assert_eq!(error.code(), "NotFoundException");
            }
        }
        match AliasName::parse_for_create(&input) {
            Ok(name) => {
                prop_assert!(is_valid_alias(&input) && !input.starts_with("alias/aws/"));
                prop_assert_eq!(name.as_str(), input.as_str());
            }
            Err(error) => {
                let code = error.code();
                if is_valid_alias(&input) {
                    prop_assert!(input.starts_with("alias/aws/"));
                    prop_assert_eq!(code, "NotAuthorizedException");
                } else {
                    prop_assert!(
                        ["ValidationException", "InvalidAliasNameException"].contains(&code),
                        "{code} for {input:?}"
                    );
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------- filter patterns

/// Pieces of the CloudWatch Logs filter grammar, to build patterns that get past the
/// first character.
const FILTER_PIECES: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "$.",
    "$.eventName",
    "$.errorCode",
    "$.userIdentity.arn",
    "$.resources[0].ARN",
    "[",
    "]",
    "=",
    "!=",
    "<",
    ">=",
    "&&",
    "||",
    "NOT EXISTS",
    "IS NULL",
    "IS TRUE",
    "\"",
    "\"Disable*\"",
    "*",
    "%[a-z]+%",
    "-",
    "?",
    " ",
    "w1",
    ",",
    "...",
    "1e3",
    "-7",
    "\\",
    "\u{0}",
    "é",
];

fn filter_input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(prop::sample::select(FILTER_PIECES), 0..24).prop_map(|p| p.concat()),
        (1020usize..1030).prop_map(|n| "x".repeat(n)),
        (1usize..400).prop_map(|n| format!("{}$.a = 1{}", "{ (".repeat(n), ") }".repeat(n))),
    ]
}

/// A CloudTrail-shaped event with hostile values.
fn filter_event() -> impl Strategy<Value = Value> {
    hostile_value(any::<String>().boxed()).prop_map(|extra| {
        json!({
            "eventName": "DisableKey",
            "errorCode": null,
            "userIdentity": {"arn": "arn:aws:iam::111122223333:user/app"},
            "resources": [{"ARN": extra.clone()}],
            "requestParameters": extra,
        })
    })
}

#[test]
fn filter_patterns_parse_or_say_where_and_never_panic_when_matching() {
    check(
        PARSER_CASES,
        (filter_input(), filter_event()),
        |(pattern, event)| {
            match FilterPattern::parse(&pattern) {
                Ok(filter) => {
                    prop_assert!(pattern.chars().count() <= MAX_PATTERN_CHARS);
                    let _ = filter.matches(&event);
                    // What parses once parses again the same way.
                    prop_assert!(FilterPattern::parse(&pattern).is_ok());
                }
                Err(error) => {
                    prop_assert!(!error.message.is_empty());
                    prop_assert!(error.position <= pattern.chars().count());
                    let diagnostic = error.diagnostic(&pattern);
                    prop_assert_eq!(diagnostic.lines().count(), 2, "{:?}", diagnostic);
                }
            }
            Ok(())
        },
    );
}

/// The hostile requests above reach every operation the endpoint serves.
#[test]
fn every_served_operation_is_tried() {
    let tried: BTreeSet<&str> = OPERATIONS.iter().map(|(name, _)| *name).collect();
    let served: BTreeSet<&str> = hsm_kms::keys::state::Operation::ALL
        .iter()
        .map(|op| op.as_str())
        .collect();
    assert_eq!(tried, served);
}
