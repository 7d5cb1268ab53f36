//! AWS managed keys against a real two-member SoftHSM2 cluster and sled on disk: made on the
//! first DescribeKey, Encrypt, GenerateDataKey or ReEncrypt naming `alias/aws/<service>`
//! (once, however many calls race), listed as AWS lists them, used only through their
//! service, rotated yearly, every change refused as AWS refuses it, and their creation
//! audited as the service's own call; through `hsm-kms serve`, the configured services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::kms::*;
use common::server::{AccessKey, Client, Reply, Server};
use common::{TestCluster, TestStore};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use hsm_kms::audit::log::read_events;
use hsm_kms::caller::PrincipalProfile;
use hsm_kms::error::KmsError;
use hsm_kms::keystore::Caller;
use hsm_kms::keystore::api::*;
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::{Value, json};

const ACCOUNT: &str = "111122223333";

/// A call that must be refused, made later.
type Refusal<'a> = Box<dyn Fn() -> Result<(), KmsError> + 'a>;
const REGION: &str = "us-east-1";

/// A test store serving the managed keys of S3 and EBS.
fn managed_store() -> TestStore {
    let TestStore {
        cluster,
        clock,
        store,
        caller,
    } = TestStore::new();
    let store = store.with_managed_key_services(&["s3".to_owned(), "ebs".to_owned()]);
    TestStore {
        cluster,
        clock,
        store,
        caller,
    }
}

/// A user of the account, calling through `via_service` when given.
fn user(ts: &TestStore, name: &str, via_service: Option<&str>) -> Caller {
    Caller {
        principal: format!("arn:aws:iam::{ACCOUNT}:user/{name}"),
        profile: Arc::new(PrincipalProfile {
            via_service: via_service.map(str::to_owned),
            ..Default::default()
        }),
        ..Caller::local(ts.store.scope())
    }
}

fn describe_as(ts: &TestStore, caller: &Caller, key: &str) -> Result<KeyMetadata, String> {
    ts.store
        .describe_key(caller, key_id(key))
        .map(|r| r.key_metadata)
        .map_err(|e| format!("{}: {}", e.code(), e.message()))
}

fn encrypt_as(ts: &TestStore, caller: &Caller, key: &str) -> Result<EncryptResponse, KmsError> {
    ts.store.encrypt(
        caller,
        EncryptRequest {
            key_id: key.into(),
            plaintext: SecretSlice::from(b"managed".to_vec()),
            ..Default::default()
        },
    )
}

fn denied(caller: &Caller, action: &str, arn: &str) -> (String, String) {
    (
        "AccessDeniedException".to_owned(),
        format!(
            "User: {} is not authorized to perform: kms:{action} on resource: {arn} because no resource-based policy allows the kms:{action} action",
            caller.principal
        ),
    )
}

fn alias_names(ts: &TestStore) -> Vec<(String, Option<String>)> {
    aliases(ts, None)
        .into_iter()
        .map(|a| (a.alias_name, a.target_key_id))
        .collect()
}

#[test]
fn describe_key_makes_the_managed_key_on_first_use_as_aws_describes_it() {
    let ts = managed_store();
    // Before first use the predefined aliases are listed with no target.
    assert_eq!(
        alias_names(&ts),
        [
            ("alias/aws/ebs".to_owned(), None),
            ("alias/aws/s3".to_owned(), None)
        ]
    );
    let listed = aliases(&ts, None);
    assert_eq!(
        listed[1].alias_arn,
        format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/aws/s3")
    );
    assert!(listed[1].creation_date.is_none() && listed[1].last_updated_date.is_none());

    let key = describe(&ts, "alias/aws/s3");
    assert_eq!(key.key_manager, "AWS");
    assert_eq!(
        key.description,
        "Default key that protects my S3 objects when no other key is defined"
    );
    assert_eq!(key.key_state, "Enabled");
    assert_eq!(key.key_spec, "SYMMETRIC_DEFAULT");
    assert_eq!(key.key_usage, "ENCRYPT_DECRYPT");
    assert_eq!(key.origin, "AWS_KMS");
    assert!(key.enabled);

    // The alias now points at it; a second use finds the same key.
    assert_eq!(
        alias_names(&ts),
        [
            ("alias/aws/ebs".to_owned(), None),
            ("alias/aws/s3".to_owned(), Some(key.key_id.clone()))
        ]
    );
    assert_eq!(describe(&ts, "alias/aws/s3").key_id, key.key_id);
    assert_eq!(
        describe(&ts, &format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/aws/s3")).key_id,
        key.key_id
    );
    let only_its_alias = aliases(&ts, Some(&key.key_id));
    assert_eq!(only_its_alias.len(), 1);
    assert_eq!(only_its_alias[0].alias_name, "alias/aws/s3");
    assert!(only_its_alias[0].creation_date.is_some());

    // Paging walks stored and predefined aliases in name order.
    let first = ts
        .store
        .list_aliases(
            &ts.caller,
            ListAliasesRequest {
                limit: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(first.truncated);
    assert_eq!(first.aliases[0].alias_name, "alias/aws/ebs");
    let second = ts
        .store
        .list_aliases(
            &ts.caller,
            ListAliasesRequest {
                limit: Some(1),
                marker: first.next_marker,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!second.truncated);
    assert_eq!(second.aliases[0].alias_name, "alias/aws/s3");

    // Automatic yearly rotation, on.
    let rotation = ts
        .store
        .get_key_rotation_status(&ts.caller, key_id(&key.key_id))
        .unwrap();
    assert!(rotation.key_rotation_enabled);
    assert_eq!(rotation.rotation_period_in_days, Some(365));
    assert_eq!(
        rotation.next_rotation_date,
        Some(key.creation_date + 365.0 * 86_400.0)
    );

    // Its policy is AWS's managed-key policy for S3.
    let policy: Value = serde_json::from_str(
        &ts.store
            .get_key_policy(
                &ts.caller,
                GetKeyPolicyRequest {
                    key_id: key.key_id.clone(),
                    policy_name: None,
                },
            )
            .unwrap()
            .policy,
    )
    .unwrap();
    assert_eq!(policy["Id"], "auto-s3-2");
    assert_eq!(
        policy["Statement"][0]["Sid"],
        "Allow access through S3 for all principals in the account that are authorized to use S3"
    );
    assert_eq!(
        policy["Statement"][0]["Condition"]["StringEquals"],
        serde_json::json!({
            "kms:CallerAccount": ACCOUNT,
            "kms:ViaService": "s3.us-east-1.amazonaws.com"
        })
    );
    assert_eq!(
        policy["Statement"][1]["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:root")
    );

    // The record keeps its manager across a restart.
    let ts = ts.reopen();
    assert_eq!(describe(&ts, &key.key_id).key_manager, "AWS");
}

#[test]
fn only_served_aliases_and_creating_calls_make_a_key() {
    let ts = managed_store();
    let (code, message) = failure(ts.store.describe_key(&ts.caller, key_id("alias/aws/rds")));
    assert_eq!(code, "NotFoundException");
    assert_eq!(
        message,
        format!("Alias arn:aws:kms:{REGION}:{ACCOUNT}:alias/aws/rds is not found.")
    );
    // GetPublicKey does not create on first use.
    let (code, _) = refused(&ts, || {
        ts.store.get_public_key(&ts.caller, key_id("alias/aws/ebs"))
    });
    assert_eq!(code, "NotFoundException");
    assert_eq!(alias_names(&ts)[0], ("alias/aws/ebs".to_owned(), None));
    // A store that serves no managed keys knows none of the aliases.
    let plain = TestStore::new();
    assert!(aliases(&plain, None).is_empty());
    let (code, _) = failure(
        plain
            .store
            .describe_key(&plain.caller, key_id("alias/aws/s3")),
    );
    assert_eq!(code, "NotFoundException");
}

#[test]
fn eight_racing_first_uses_make_one_key() {
    let ts = managed_store();
    let gateway = user(&ts, "ebs-gateway", Some("ec2.us-east-1.amazonaws.com"));
    let store = &ts.store;
    let gateway = &gateway;
    let start = std::sync::Barrier::new(8);
    let start = &start;
    let arns: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(move || {
                    start.wait();
                    store
                        .encrypt(
                            gateway,
                            EncryptRequest {
                                key_id: "alias/aws/ebs".into(),
                                plaintext: SecretSlice::from(b"racing".to_vec()),
                                ..Default::default()
                            },
                        )
                        .unwrap()
                        .key_id
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(arns.iter().all(|arn| *arn == arns[0]), "{arns:?}");
    let keys = ts
        .store
        .list_keys(&ts.caller, ListRequest::default())
        .unwrap()
        .keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key_arn, arns[0]);
    // One key's material on each member: no loser of the race left any behind.
    let key_label_prefix = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/");
    for member in ["hsm-a", "hsm-b"] {
        let session = common::raw_session(&ts.cluster, member);
        let labels: Vec<String> = session
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
            .unwrap()
            .into_iter()
            .filter_map(|object| {
                session
                    .get_attributes(object, &[AttributeType::Label])
                    .unwrap()
                    .into_iter()
                    .find_map(|attribute| match attribute {
                        Attribute::Label(label) => String::from_utf8(label).ok(),
                        _ => None,
                    })
            })
            .filter(|label| label.starts_with(&key_label_prefix))
            .collect();
        assert_eq!(labels, [arns[0].clone()], "{member}");
    }
}

#[test]
fn a_via_service_credential_uses_the_key_and_a_plain_one_only_describes_it() {
    let ts = managed_store();
    let gateway = user(&ts, "s3-gateway", Some("s3.us-east-1.amazonaws.com"));
    let plain = user(&ts, "alice", None);
    let other_service = user(&ts, "lambda-runner", Some("lambda.us-east-1.amazonaws.com"));

    // A plain credential's first use makes the key, then is refused its use.
    let (code, message) = failure(encrypt_as(&ts, &plain, "alias/aws/s3"));
    let key = describe_as(&ts, &plain, "alias/aws/s3").unwrap();
    assert_eq!((code, message), denied(&plain, "Encrypt", &key.arn));

    let sealed = encrypt_as(&ts, &gateway, "alias/aws/s3").unwrap();
    assert_eq!(sealed.key_id, key.arn);
    let opened = ts
        .store
        .decrypt(
            &gateway,
            DecryptRequest {
                ciphertext_blob: sealed.ciphertext_blob.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(opened.plaintext.expose_secret(), b"managed");
    let data_key = ts
        .store
        .generate_data_key(
            &gateway,
            GenerateDataKeyRequest {
                key_id: "alias/aws/s3".into(),
                key_spec: Some("AES_256".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(data_key.key_id, key.arn);

    for caller in [&plain, &other_service] {
        let (code, message) = failure(ts.store.decrypt(
            caller,
            DecryptRequest {
                ciphertext_blob: sealed.ciphertext_blob.clone(),
                ..Default::default()
            },
        ));
        assert_eq!((code, message), denied(caller, "Decrypt", &key.arn));
        assert_eq!(
            describe_as(&ts, caller, &key.key_id).unwrap().key_id,
            key.key_id
        );
    }
    // S3's policy has no CreateGrant; EBS's has.
    let grant = |caller: &Caller, key: &str| {
        ts.store.create_grant(
            caller,
            CreateGrantRequest {
                key_id: key.into(),
                grantee_principal: format!("arn:aws:iam::{ACCOUNT}:user/bob"),
                operations: vec!["Decrypt".into()],
                ..Default::default()
            },
        )
    };
    assert_eq!(
        failure(grant(&gateway, &key.key_id)),
        denied(&gateway, "CreateGrant", &key.arn)
    );
    let ebs_gateway = user(&ts, "ebs-gateway", Some("ec2.us-east-1.amazonaws.com"));
    let ebs = describe(&ts, "alias/aws/ebs");
    grant(&ebs_gateway, &ebs.key_id).unwrap();
}

#[test]
fn every_change_to_a_managed_key_is_refused_as_aws_refuses_it() {
    let ts = managed_store();
    let key = describe(&ts, "alias/aws/s3");
    let arn = key.arn.clone();
    let id = key.key_id.clone();
    let customer = create(&ts);
    create_alias(&ts, "alias/mine", &customer.key_id).unwrap();
    let gateway = user(&ts, "s3-gateway", Some("s3.us-east-1.amazonaws.com"));
    for caller in [ts.caller.clone(), gateway] {
        let store = &ts.store;
        let c = &caller;
        let cases: Vec<(&str, Refusal<'_>)> = vec![
            ("DisableKey", Box::new(|| store.disable_key(c, key_id(&id)))),
            ("EnableKey", Box::new(|| store.enable_key(c, key_id(&id)))),
            (
                "ScheduleKeyDeletion",
                Box::new(|| {
                    store
                        .schedule_key_deletion(
                            c,
                            ScheduleKeyDeletionRequest {
                                key_id: id.clone(),
                                pending_window_in_days: Some(7),
                            },
                        )
                        .map(drop)
                }),
            ),
            (
                "CancelKeyDeletion",
                Box::new(|| store.cancel_key_deletion(c, key_id(&id)).map(drop)),
            ),
            (
                "PutKeyPolicy",
                Box::new(|| {
                    store.put_key_policy(
                        c,
                        PutKeyPolicyRequest {
                            key_id: id.clone(),
                            policy: hsm_kms::policy::default_key_policy(ACCOUNT),
                            ..Default::default()
                        },
                    )
                }),
            ),
            (
                "TagResource",
                Box::new(|| {
                    store.tag_resource(
                        c,
                        TagResourceRequest {
                            key_id: id.clone(),
                            tags: vec![Tag {
                                tag_key: "team".into(),
                                tag_value: "storage".into(),
                            }],
                        },
                    )
                }),
            ),
            (
                "UntagResource",
                Box::new(|| {
                    store.untag_resource(
                        c,
                        UntagResourceRequest {
                            key_id: id.clone(),
                            tag_keys: vec!["team".into()],
                        },
                    )
                }),
            ),
            (
                "EnableKeyRotation",
                Box::new(|| {
                    store.enable_key_rotation(
                        c,
                        EnableKeyRotationRequest {
                            key_id: id.clone(),
                            rotation_period_in_days: Some(90),
                        },
                    )
                }),
            ),
            (
                "DisableKeyRotation",
                Box::new(|| store.disable_key_rotation(c, key_id(&id))),
            ),
            (
                "RotateKeyOnDemand",
                Box::new(|| store.rotate_key_on_demand(c, key_id(&id)).map(drop)),
            ),
            (
                "UpdateKeyDescription",
                Box::new(|| {
                    store.update_key_description(
                        c,
                        UpdateKeyDescriptionRequest {
                            key_id: id.clone(),
                            description: "mine now".into(),
                        },
                    )
                }),
            ),
            (
                "CreateAlias",
                Box::new(|| {
                    store.create_alias(
                        c,
                        AliasRequest {
                            alias_name: "alias/s3-default".into(),
                            target_key_id: id.clone(),
                        },
                    )
                }),
            ),
            (
                "UpdateAlias",
                Box::new(|| {
                    store.update_alias(
                        c,
                        AliasRequest {
                            alias_name: "alias/mine".into(),
                            target_key_id: id.clone(),
                        },
                    )
                }),
            ),
        ];
        for (action, call) in cases {
            assert_eq!(
                refused(&ts, call),
                denied(c, action, &arn),
                "{action} by {}",
                c.principal
            );
        }
        // The reserved names themselves are not the caller's to use.
        for (action, outcome) in [
            (
                "UpdateAlias",
                refused(&ts, || {
                    store.update_alias(
                        c,
                        AliasRequest {
                            alias_name: "alias/aws/s3".into(),
                            target_key_id: customer.key_id.clone(),
                        },
                    )
                }),
            ),
            (
                "DeleteAlias",
                refused(&ts, || store.delete_alias(c, "alias/aws/s3")),
            ),
            (
                "CreateAlias",
                refused(&ts, || {
                    store.create_alias(
                        c,
                        AliasRequest {
                            alias_name: "alias/aws/ebs".into(),
                            target_key_id: customer.key_id.clone(),
                        },
                    )
                }),
            ),
        ] {
            assert_eq!(
                outcome,
                ("NotAuthorizedException".to_owned(), String::new()),
                "{action}"
            );
        }
    }
    let after = describe(&ts, &id);
    assert_eq!(after.key_state, "Enabled");
    assert_eq!(after.description, key.description);
    assert!(
        ts.store
            .get_key_rotation_status(&ts.caller, key_id(&id))
            .unwrap()
            .key_rotation_enabled
    );
}

#[test]
fn the_creation_is_audited_as_the_services_own_call() {
    let ts = managed_store();
    let gateway = user(&ts, "ebs-gateway", Some("ec2.us-east-1.amazonaws.com"));
    let sealed = encrypt_as(&ts, &gateway, "alias/aws/ebs").unwrap();
    // Read-only calls are recorded in batches: shutting down flushes the trail.
    ts.store.shutdown();
    let events: Vec<Value> = read_events(ts.store.metadata(), 0, usize::MAX)
        .unwrap()
        .iter()
        .map(|stored| stored.event())
        .collect();
    let created: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventName"] == "CreateKey")
        .collect();
    assert_eq!(created.len(), 1, "{events:#?}");
    let event = created[0];
    assert_eq!(
        event["userIdentity"],
        serde_json::json!({"type": "AWSService", "invokedBy": "ec2.amazonaws.com"})
    );
    assert_eq!(event["sourceIPAddress"], "ec2.amazonaws.com");
    assert_eq!(event["eventType"], "AwsApiCall");
    assert_eq!(event["eventSource"], "kms.amazonaws.com");
    assert_eq!(event["recipientAccountId"], ACCOUNT);
    assert_eq!(event["readOnly"], false);
    assert_eq!(event["resources"][0]["ARN"], sealed.key_id.as_str());
    assert_eq!(
        event["requestParameters"]["description"],
        "Default key that protects my EBS volumes when no other key is defined"
    );
    assert_eq!(
        event["responseElements"]["keyMetadata"]["KeyManager"],
        "AWS"
    );
    // The creation comes before the call that caused it, which is recorded as the caller's.
    let position = |name: &str| events.iter().position(|e| e["eventName"] == name).unwrap();
    assert!(position("CreateKey") < position("Encrypt"));
    let encrypt = &events[position("Encrypt")];
    assert_eq!(
        encrypt["userIdentity"]["arn"],
        format!("arn:aws:iam::{ACCOUNT}:user/ebs-gateway")
    );
}

#[test]
fn the_managed_key_rotates_every_year_and_old_ciphertexts_still_decrypt() {
    let ts = managed_store();
    let gateway = user(&ts, "s3-gateway", Some("s3.us-east-1.amazonaws.com"));
    let before = encrypt_as(&ts, &gateway, "alias/aws/s3").unwrap();
    let key = describe(&ts, "alias/aws/s3");
    ts.clock
        .advance(std::time::Duration::from_secs(366 * 24 * 60 * 60));
    ts.store.run_maintenance().unwrap();
    let rotations = ts
        .store
        .list_key_rotations(
            &ts.caller,
            ListKeyRotationsRequest {
                key_id: key.key_id.clone(),
                ..Default::default()
            },
        )
        .unwrap()
        .rotations;
    assert_eq!(rotations.len(), 1);
    assert_eq!(rotations[0].rotation_type, "AUTOMATIC");
    let rotated = describe(&ts, &key.key_id);
    assert_ne!(rotated.current_key_material_id, key.current_key_material_id);
    let status = ts
        .store
        .get_key_rotation_status(&ts.caller, key_id(&key.key_id))
        .unwrap();
    assert!(status.key_rotation_enabled);
    assert_eq!(status.rotation_period_in_days, Some(365));
    let after = encrypt_as(&ts, &gateway, "alias/aws/s3").unwrap();
    for sealed in [before, after] {
        let opened = ts
            .store
            .decrypt(
                &gateway,
                DecryptRequest {
                    ciphertext_blob: sealed.ciphertext_blob,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(opened.plaintext.expose_secret(), b"managed");
    }
}

#[test]
fn the_server_serves_the_configured_services_and_audits_the_creation() {
    let cluster = TestCluster::new(2);
    let config = cluster.config_text.replace(
        "[service]\n",
        "[service]\nmanaged_key_services = [\"rds\", \"object-gateway\"]\n",
    );
    assert_ne!(config, cluster.config_text);
    cluster.write_config("hsm-kms.toml", &config);
    cluster.init();
    let mut server = Server::start(&cluster);
    let client = Client::new(&server, &AccessKey::of(&cluster));
    let listed = client.list("ListAliases", json!({"Limit": 1}), "Aliases");
    assert_eq!(
        listed,
        [
            json!({"AliasName": "alias/aws/object-gateway",
                   "AliasArn": format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/aws/object-gateway")}),
            json!({"AliasName": "alias/aws/rds",
                   "AliasArn": format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/aws/rds")}),
        ]
    );
    let key =
        client.must("DescribeKey", &json!({"KeyId": "alias/aws/object-gateway"}))["KeyMetadata"]
            .clone();
    assert_eq!(key["KeyManager"], "AWS");
    assert_eq!(
        key["Description"],
        "Default key that protects my object-gateway data when no other key is defined"
    );
    let policy: Value = serde_json::from_str(
        client.must("GetKeyPolicy", &json!({"KeyId": key["KeyId"]}))["Policy"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(policy["Id"], "auto-object-gateway");
    assert_eq!(
        policy["Statement"][0]["Condition"]["StringEquals"]["kms:ViaService"],
        "object-gateway.us-east-1.amazonaws.com"
    );
    match client.call("DescribeKey", &json!({"KeyId": "alias/aws/s3"})) {
        Ok(Reply::Error { code, .. }) => assert_eq!(code, "NotFoundException"),
        other => panic!("alias/aws/s3 is not served here: {other:?}"),
    }
    server.stop();

    let output = cluster.cli(&["audit", "list", "--format", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["eventName"] == "CreateKey")
        .collect();
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(
        created[0]["userIdentity"],
        json!({"type": "AWSService", "invokedBy": "object-gateway.amazonaws.com"})
    );
    assert_eq!(created[0]["resources"][0]["ARN"], key["Arn"]);
}

#[test]
fn re_encrypt_makes_the_key_as_its_destination_not_as_its_source() {
    let ts = managed_store();
    let gateway = user(&ts, "ebs-gateway", Some("ec2.us-east-1.amazonaws.com"));
    let customer = create(&ts);
    let sealed = encrypt(&ts, &customer.key_id, b"volume key", &[]).unwrap();
    // Naming the alias as ReEncrypt's source key does not make the key.
    let (code, _) = refused(&ts, || {
        ts.store.re_encrypt(
            &gateway,
            ReEncryptRequest {
                ciphertext_blob: sealed.ciphertext_blob.clone(),
                source_key_id: Some("alias/aws/ebs".into()),
                destination_key_id: customer.key_id.clone(),
                ..Default::default()
            },
        )
    });
    assert_eq!(code, "NotFoundException");
    let moved = ts
        .store
        .re_encrypt(
            &gateway,
            ReEncryptRequest {
                ciphertext_blob: sealed.ciphertext_blob,
                destination_key_id: "alias/aws/ebs".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let managed = describe(&ts, "alias/aws/ebs");
    assert_eq!(moved.key_id, managed.arn);
    assert_eq!(managed.key_manager, "AWS");
    let opened = ts
        .store
        .decrypt(
            &gateway,
            DecryptRequest {
                ciphertext_blob: moved.ciphertext_blob,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(opened.plaintext.expose_secret(), b"volume key");
}
