//! Key policies on the request path, against a real two-member SoftHSM2 cluster and sled on
//! disk: the default key policy, Get/Put/ListKeyPolicies, a policy naming one principal
//! refusing another, an explicit Deny beating an Allow, condition keys filled from the
//! request and the key, the lockout safety check, malformed documents, and refusals in the
//! audit trail as `AccessDenied`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::TestStore;
use common::kms::*;
use hsm_kms::caller::PrincipalProfile;
use hsm_kms::keystore::Caller;
use hsm_kms::keystore::api::*;
use hsm_kms::policy::{default_key_policy, parse_identity_policy};
use secrecy::SecretSlice;
use serde_json::{Value, json};

const LOCKOUT: &str =
    "The new key policy will not allow you to update the key policy in the future.";

/// A caller of the service's account with the principal `user/<name>`.
fn user(ts: &TestStore, name: &str) -> Caller {
    let mut caller = ts.caller.clone();
    caller.principal = format!("arn:aws:iam::{}:user/{name}", account(ts));
    caller
}

fn account(ts: &TestStore) -> String {
    ts.store.scope().account_id().to_owned()
}

/// A policy of `statements`, as AWS writes one.
fn policy(statements: Value) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// A statement allowing `actions` to the principal ARNs `principals`.
fn allow(principals: &[&str], actions: Value) -> Value {
    json!({"Effect": "Allow", "Principal": {"AWS": principals}, "Action": actions, "Resource": "*"})
}

/// What the tests let the account root do on a key whose policy restricts other principals:
/// change the policy, read, tag and alias the key (delegated to every principal of the account).
fn admin(ts: &TestStore) -> Value {
    allow(
        &[root(ts).as_str()],
        json!([
            "kms:PutKeyPolicy",
            "kms:Describe*",
            "kms:List*",
            "kms:Get*",
            "kms:TagResource",
            "kms:CreateAlias"
        ]),
    )
}

fn root(ts: &TestStore) -> String {
    format!("arn:aws:iam::{}:root", account(ts))
}

fn create_with_policy(ts: &TestStore, text: &str) -> KeyMetadata {
    ts.store
        .create_key(
            &ts.caller,
            CreateKeyRequest {
                policy: Some(text.to_owned()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata
}

fn encrypt_as(caller: &Caller, ts: &TestStore, key: &str) -> Result<EncryptResponse, KmsErr> {
    encrypt_with(caller, ts, key, &[])
}

type KmsErr = hsm_kms::error::KmsError;

fn encrypt_with(
    caller: &Caller,
    ts: &TestStore,
    key: &str,
    context: &[(&str, &str)],
) -> Result<EncryptResponse, KmsErr> {
    ts.store.encrypt(
        caller,
        EncryptRequest {
            key_id: key.into(),
            plaintext: SecretSlice::from(b"secret".to_vec()),
            encryption_context: ctx(context),
            ..Default::default()
        },
    )
}

fn put_policy(
    ts: &TestStore,
    caller: &Caller,
    key: &str,
    text: &str,
    bypass: bool,
) -> Result<(), KmsErr> {
    ts.store.put_key_policy(
        caller,
        PutKeyPolicyRequest {
            key_id: key.into(),
            policy: text.to_owned(),
            bypass_policy_lockout_safety_check: bypass.then_some(true),
            ..Default::default()
        },
    )
}

fn get_policy(ts: &TestStore, key: &str) -> String {
    ts.store
        .get_key_policy(
            &ts.caller,
            GetKeyPolicyRequest {
                key_id: key.into(),
                policy_name: None,
            },
        )
        .unwrap()
        .policy
}

fn denied(principal: &str, action: &str, key_arn: &str, because: &str) -> (String, String) {
    (
        "AccessDeniedException".into(),
        format!(
            "User: {principal} is not authorized to perform: {action} on resource: {key_arn} {because}"
        ),
    )
}

#[test]
fn a_new_key_has_the_default_policy_named_default() {
    let ts = TestStore::new();
    let key = create(&ts);
    assert_eq!(
        get_policy(&ts, &key.key_id),
        default_key_policy(&account(&ts))
    );
    let listed = ts
        .store
        .list_key_policies(
            &ts.caller,
            ListKeyPoliciesRequest {
                key_id: key.arn.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(listed.policy_names, ["default"]);
    assert!(!listed.truncated);
    let other_name = ts.store.get_key_policy(
        &ts.caller,
        GetKeyPolicyRequest {
            key_id: key.key_id.clone(),
            policy_name: Some("other".into()),
        },
    );
    assert_eq!(failure(other_name).0, "NotFoundException");
    // The default policy delegates to the account: any principal of it may use the key.
    encrypt_as(&user(&ts, "app"), &ts, &key.key_id).unwrap();
}

#[test]
fn a_policy_given_at_creation_refuses_principals_it_does_not_name() {
    let ts = TestStore::new();
    let app = user(&ts, "app");
    let text = policy(json!([
        admin(&ts),
        allow(
            &[app.principal.as_str()],
            json!(["kms:Encrypt", "kms:DescribeKey"])
        )
    ]));
    let key = create_with_policy(&ts, &text);
    encrypt_as(&app, &ts, &key.key_id).unwrap();
    let other = user(&ts, "other");
    let outcome = refused(&ts, || encrypt_as(&other, &ts, &key.key_id));
    assert_eq!(
        outcome,
        denied(
            &other.principal,
            "kms:Encrypt",
            &key.arn,
            "because no resource-based policy allows the kms:Encrypt action"
        )
    );
    // The account root is not named for Encrypt either: naming principals does not delegate.
    assert_eq!(
        failure(encrypt_as(&ts.caller, &ts, &key.key_id)).0,
        "AccessDeniedException"
    );
    // Every key operation is authorized, not only the cryptographic ones.
    let deletion = ts.store.schedule_key_deletion(
        &app,
        ScheduleKeyDeletionRequest {
            key_id: key.key_id.clone(),
            pending_window_in_days: Some(7),
        },
    );
    assert_eq!(failure(deletion).0, "AccessDeniedException");
    assert_eq!(describe(&ts, &key.key_id).key_state, "Enabled");
}

#[test]
fn an_explicit_deny_beats_an_allow() {
    let ts = TestStore::new();
    let key = create(&ts);
    let app = user(&ts, "app");
    let text = policy(json!([
        {"Effect": "Allow", "Principal": {"AWS": root(&ts)}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": app.principal}, "Action": "kms:Decrypt", "Resource": "*"},
    ]));
    put_policy(&ts, &ts.caller, &key.key_id, &text, false).unwrap();
    let sealed = encrypt_as(&app, &ts, &key.key_id).unwrap();
    let decrypt = |caller: &Caller| {
        ts.store.decrypt(
            caller,
            DecryptRequest {
                ciphertext_blob: sealed.ciphertext_blob.clone(),
                ..Default::default()
            },
        )
    };
    assert_eq!(
        failure(decrypt(&app)),
        denied(
            &app.principal,
            "kms:Decrypt",
            &key.arn,
            "with an explicit deny in a resource-based policy"
        )
    );
    decrypt(&user(&ts, "other")).unwrap();
}

#[test]
fn conditions_see_the_request_and_the_key() {
    let ts = TestStore::new();
    let key = create(&ts);
    let app = user(&ts, "app");
    create_alias(&ts, "alias/app", &key.key_id).unwrap();
    ts.store
        .tag_resource(
            &ts.caller,
            TagResourceRequest {
                key_id: key.key_id.clone(),
                tags: vec![Tag {
                    tag_key: "team".into(),
                    tag_value: "blue".into(),
                }],
            },
        )
        .unwrap();
    let text = policy(json!([
        admin(&ts),
        {"Effect": "Allow", "Principal": {"AWS": app.principal}, "Action": "kms:Encrypt", "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "backup",
                                        "kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                                        "kms:KeySpec": "SYMMETRIC_DEFAULT",
                                        "kms:KeyOrigin": "AWS_KMS",
                                        "aws:ResourceTag/team": "blue",
                                        "kms:CallerAccount": account(&ts)}}},
        {"Effect": "Allow", "Principal": {"AWS": app.principal}, "Action": "kms:GenerateDataKey", "Resource": "*",
         "Condition": {"StringEquals": {"kms:RequestAlias": "alias/app"}}},
    ]));
    put_policy(&ts, &ts.caller, &key.key_id, &text, false).unwrap();
    encrypt_with(&app, &ts, &key.key_id, &[("purpose", "backup")]).unwrap();
    for context in [&[][..], &[("purpose", "other")][..]] {
        let outcome = refused(&ts, || encrypt_with(&app, &ts, &key.key_id, context));
        assert_eq!(outcome.0, "AccessDeniedException", "{context:?}");
    }
    let data_key = |reference: &str| {
        ts.store.generate_data_key(
            &app,
            GenerateDataKeyRequest {
                key_id: reference.into(),
                key_spec: Some("AES_256".into()),
                ..Default::default()
            },
        )
    };
    data_key("alias/app").unwrap();
    assert_eq!(failure(data_key(&key.key_id)).0, "AccessDeniedException");
    // kms:ResourceAliases: the key's aliases, whatever the request named.
    let finance = create(&ts);
    let text = policy(json!([
        admin(&ts),
        {"Effect": "Allow", "Principal": {"AWS": app.principal}, "Action": "kms:Encrypt", "Resource": "*",
         "Condition": {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/finance-*"}}},
    ]));
    put_policy(&ts, &ts.caller, &finance.key_id, &text, false).unwrap();
    assert_eq!(
        failure(encrypt_as(&app, &ts, &finance.key_id)).0,
        "AccessDeniedException"
    );
    create_alias(&ts, "alias/finance-ledger", &finance.key_id).unwrap();
    encrypt_as(&app, &ts, &finance.key_id).unwrap();
    // Once the tag changes, aws:ResourceTag/team no longer matches.
    ts.store
        .tag_resource(
            &ts.caller,
            TagResourceRequest {
                key_id: key.key_id.clone(),
                tags: vec![Tag {
                    tag_key: "team".into(),
                    tag_value: "red".into(),
                }],
            },
        )
        .unwrap();
    assert_eq!(
        failure(encrypt_with(
            &app,
            &ts,
            &key.key_id,
            &[("purpose", "backup")]
        ))
        .0,
        "AccessDeniedException"
    );
}

#[test]
fn the_lockout_check_refuses_a_policy_that_locks_the_caller_out() {
    let ts = TestStore::new();
    let key = create(&ts);
    let app = user(&ts, "app");
    let locking = policy(json!([allow(&[app.principal.as_str()], json!("kms:*"))]));
    let outcome = refused(&ts, || {
        put_policy(&ts, &ts.caller, &key.key_id, &locking, false)
    });
    assert_eq!(
        outcome,
        ("MalformedPolicyDocumentException".into(), LOCKOUT.into())
    );
    let outcome = refused(&ts, || {
        ts.store.create_key(
            &ts.caller,
            CreateKeyRequest {
                policy: Some(locking.clone()),
                ..Default::default()
            },
        )
    });
    assert_eq!(
        outcome,
        ("MalformedPolicyDocumentException".into(), LOCKOUT.into())
    );
    // Bypassed, the policy is stored, and then the root can no longer change it.
    put_policy(&ts, &ts.caller, &key.key_id, &locking, true).unwrap();
    assert_eq!(get_policy_as(&ts, &app, &key.key_id), locking);
    let back = default_key_policy(&account(&ts));
    assert_eq!(
        failure(put_policy(&ts, &ts.caller, &key.key_id, &back, false)).0,
        "AccessDeniedException"
    );
    put_policy(&ts, &app, &key.key_id, &back, false).unwrap();
}

fn get_policy_as(ts: &TestStore, caller: &Caller, key: &str) -> String {
    ts.store
        .get_key_policy(
            caller,
            GetKeyPolicyRequest {
                key_id: key.into(),
                policy_name: Some("default".into()),
            },
        )
        .unwrap()
        .policy
}

#[test]
fn malformed_policies_are_refused_and_change_nothing() {
    let ts = TestStore::new();
    let key = create(&ts);
    let cases = [
        "{not json".to_owned(),
        json!({"Version": "2001-01-01", "Statement": []}).to_string(),
        policy(json!([{"Principal": {"AWS": root(&ts)}, "Action": "kms:*", "Resource": "*"}])),
        policy(
            json!([{"Effect": "Allow", "Principal": {"AWS": "app-user"}, "Action": "kms:*", "Resource": "*"}]),
        ),
        policy(
            json!([{"Effect": "Allow", "Principal": {"AWS": root(&ts)}, "Action": "kms:*", "Resource": "*",
                       "Condition": {"StringSortOf": {"kms:KeySpec": "x"}}}]),
        ),
    ];
    for text in &cases {
        let outcome = refused(&ts, || {
            put_policy(&ts, &ts.caller, &key.key_id, text, false)
        });
        assert_eq!(outcome.0, "MalformedPolicyDocumentException", "{text:.80}");
    }
    // Over 32768 characters: the API model's length constraint, as AWS answers it.
    let oversized = format!(
        "{}{}",
        default_key_policy(&account(&ts)),
        " ".repeat(32 * 1024)
    );
    let outcome = refused(&ts, || {
        put_policy(&ts, &ts.caller, &key.key_id, &oversized, false)
    });
    assert_eq!(
        outcome.1,
        "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to 32768"
    );
    assert_eq!(
        get_policy(&ts, &key.key_id),
        default_key_policy(&account(&ts))
    );
}

#[test]
fn a_stored_policy_survives_a_restart_and_refusals_are_audited_as_access_denied() {
    let ts = TestStore::new();
    let app = user(&ts, "app");
    let text = policy(json!([admin(&ts)]));
    let key = create_with_policy(&ts, &text);
    let ts = ts.reopen();
    assert_eq!(get_policy_as(&ts, &ts.caller, &key.key_id), text);
    assert_eq!(
        failure(encrypt_as(&app, &ts, &key.key_id)).0,
        "AccessDeniedException"
    );
    ts.store.shutdown();
    let events = hsm_kms::audit::log::read_events(ts.store.metadata(), 0, usize::MAX).unwrap();
    let refusal = events
        .iter()
        .map(|e| e.event())
        .find(|e| e["eventName"] == "Encrypt")
        .expect("the refused Encrypt is in the trail");
    assert_eq!(refusal["errorCode"], "AccessDenied");
    assert_eq!(refusal["userIdentity"]["arn"], app.principal);
    assert_eq!(refusal["resources"][0]["ARN"], key.arn);
}

/// A caller of `user/<name>` whose credential declares `policies`, `tags` and `via_service`.
fn user_with(
    ts: &TestStore,
    name: &str,
    policies: &[Value],
    tags: &[(&str, &str)],
    via_service: Option<&str>,
) -> Caller {
    let mut caller = user(ts, name);
    let parsed = policies
        .iter()
        .map(|p| Arc::new(parse_identity_policy(&p.to_string()).unwrap()))
        .collect();
    caller.profile = Arc::new(PrincipalProfile {
        policies: Some(parsed),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        via_service: via_service.map(str::to_owned),
        names_resource_aliases: false,
    });
    caller
}

fn identity(statements: Value) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

#[test]
fn identity_policies_decide_what_the_default_key_policy_delegates() {
    let ts = TestStore::new();
    let key = create(&ts);
    let app = user_with(
        &ts,
        "app",
        &[identity(json!([
            {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": key.arn},
            {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringNotEquals": {"kms:EncryptionContext:purpose": "backup"}}},
        ]))],
        &[],
        None,
    );
    let sealed = encrypt_with(&app, &ts, &key.key_id, &[("purpose", "backup")]).unwrap();
    encrypt_with(&app, &ts, &key.key_id, &[]).unwrap();
    let outcome = refused(&ts, || {
        ts.store.schedule_key_deletion(
            &app,
            ScheduleKeyDeletionRequest {
                key_id: key.key_id.clone(),
                pending_window_in_days: None,
            },
        )
    });
    assert_eq!(
        outcome,
        denied(
            &app.principal,
            "kms:ScheduleKeyDeletion",
            &key.arn,
            "because no identity-based policy allows the kms:ScheduleKeyDeletion action"
        )
    );
    let decrypt = |context: &[(&str, &str)]| {
        ts.store.decrypt(
            &app,
            DecryptRequest {
                ciphertext_blob: sealed.ciphertext_blob.clone(),
                encryption_context: ctx(context),
                ..Default::default()
            },
        )
    };
    decrypt(&[("purpose", "backup")]).unwrap();
    let other = ts
        .store
        .encrypt(
            &ts.caller,
            EncryptRequest {
                key_id: key.key_id.clone(),
                plaintext: SecretSlice::from(b"x".to_vec()),
                encryption_context: ctx(&[("purpose", "other")]),
                ..Default::default()
            },
        )
        .unwrap();
    let refusal = ts.store.decrypt(
        &app,
        DecryptRequest {
            ciphertext_blob: other.ciphertext_blob,
            encryption_context: ctx(&[("purpose", "other")]),
            ..Default::default()
        },
    );
    assert_eq!(
        failure(refusal),
        denied(
            &app.principal,
            "kms:Decrypt",
            &key.arn,
            "with an explicit deny in an identity-based policy"
        )
    );
    // Operations on no key are decided by the identity policies alone.
    let outcome = refused(&ts, || {
        ts.store.create_key(&app, CreateKeyRequest::default())
    });
    assert_eq!(
        outcome,
        denied(
            &app.principal,
            "kms:CreateKey",
            "*",
            "because no identity-based policy allows the kms:CreateKey action"
        )
    );
    // A credential without identity policies keeps the account's full use of the key.
    ts.store
        .schedule_key_deletion(
            &user(&ts, "admin"),
            ScheduleKeyDeletionRequest {
                key_id: key.key_id.clone(),
                pending_window_in_days: None,
            },
        )
        .unwrap();
}

#[test]
fn principal_tags_and_via_service_are_condition_keys() {
    let ts = TestStore::new();
    let key = create(&ts);
    let text = policy(json!([
        admin(&ts),
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Encrypt", "Resource": "*",
         "Condition": {"StringEquals": {"aws:PrincipalTag/team": "blue", "kms:ViaService": "gateway",
                                        "kms:CallerAccount": account(&ts)}}},
    ]));
    put_policy(&ts, &ts.caller, &key.key_id, &text, false).unwrap();
    let allow_all = identity(json!([{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]));
    let tagged = user_with(
        &ts,
        "app",
        std::slice::from_ref(&allow_all),
        &[("team", "blue")],
        Some("gateway"),
    );
    encrypt_as(&tagged, &ts, &key.key_id).unwrap();
    for (tags, via) in [
        (&[("team", "red")][..], Some("gateway")),
        (&[("team", "blue")][..], None),
        (&[][..], Some("gateway")),
    ] {
        let caller = user_with(&ts, "app", std::slice::from_ref(&allow_all), tags, via);
        let outcome = refused(&ts, || encrypt_as(&caller, &ts, &key.key_id));
        assert_eq!(outcome.0, "AccessDeniedException", "{tags:?} {via:?}");
    }
}

#[test]
fn credentials_attach_identity_policies_from_files_and_inline() {
    let ts = TestStore::new();
    let account = account(&ts);
    let file = ts.cluster.path("app-policy.json");
    std::fs::write(
        &file,
        identity(json!([{"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}]))
            .to_string(),
    )
    .unwrap();
    let inline = identity(json!([{"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}]));
    let entry = |policies: &str| {
        format!(
            "{}\n[[credentials]]\naccess_key_id = \"AKIAPOLICYTEST000001\"\nsecret = \"env:UNUSED\"\n\
             account_id = \"{account}\"\nprincipal_arn = \"arn:aws:iam::{account}:user/app\"\n\
             policies = {policies}\ntags = {{ team = \"blue\" }}\nvia_service = \"gateway\"\n",
            ts.cluster.config_text
        )
    };
    let text = entry(&format!(
        "[{:?}, {:?}]",
        format!("file:{}", file.display()),
        inline.to_string()
    ));
    let config = hsm_kms::config::Config::parse(&text).unwrap();
    let credential = config.credentials.last().unwrap();
    let profile = credential.profile().unwrap();
    assert_eq!(profile.policies.as_ref().map(Vec::len), Some(2));
    assert_eq!(profile.tags["team"], "blue");
    assert_eq!(profile.via_service.as_deref(), Some("gateway"));
    let mut app = user(&ts, "app");
    app.profile = Arc::new(profile);
    let key = create(&ts);
    let sealed = encrypt_as(&app, &ts, &key.key_id).unwrap();
    let refusal = ts.store.decrypt(
        &app,
        DecryptRequest {
            ciphertext_blob: sealed.ciphertext_blob,
            ..Default::default()
        },
    );
    assert_eq!(failure(refusal).0, "AccessDeniedException");
    // A policy that does not parse is a configuration error naming the credential.
    let bad = hsm_kms::config::Config::parse(&entry("[\"{not json\"]")).unwrap();
    let error = bad.credentials.last().unwrap().profile().unwrap_err();
    assert!(error.to_string().contains("policies[0]"), "{error}");
}

#[test]
fn another_account_uses_a_key_through_its_arn_only() {
    let ts = TestStore::new();
    let key = create(&ts);
    create_alias(&ts, "alias/shared", &key.key_id).unwrap();
    let region = ts.store.scope().region().to_owned();
    let other = "444455556666";
    let stranger = |policies: &[Value]| {
        let mut caller = Caller::local(&hsm_kms::ids::Scope::new(&region, other).unwrap());
        caller.principal = format!("arn:aws:iam::{other}:user/partner");
        let parsed: Vec<_> = policies
            .iter()
            .map(|p| Arc::new(parse_identity_policy(&p.to_string()).unwrap()))
            .collect();
        caller.profile = Arc::new(PrincipalProfile {
            policies: (!parsed.is_empty()).then_some(parsed),
            ..Default::default()
        });
        caller
    };
    let partner = stranger(&[identity(json!([
        {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ScheduleKeyDeletion"], "Resource": key.arn}
    ]))]);
    // The default key policy does not let another account in.
    assert_eq!(
        failure(encrypt_as(&partner, &ts, &key.arn)),
        denied(
            &partner.principal,
            "kms:Encrypt",
            &key.arn,
            "because no resource-based policy allows the kms:Encrypt action"
        )
    );
    let text = policy(json!([
        {"Effect": "Allow", "Principal": {"AWS": root(&ts)}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{other}:root")},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ScheduleKeyDeletion"], "Resource": "*"},
    ]));
    put_policy(&ts, &ts.caller, &key.key_id, &text, false).unwrap();
    let sealed = encrypt_as(&partner, &ts, &key.arn).unwrap();
    assert_eq!(sealed.key_id, key.arn);
    ts.store
        .decrypt(
            &partner,
            DecryptRequest {
                ciphertext_blob: sealed.ciphertext_blob.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    // Aliases and bare key ids never resolve across accounts.
    let alias_arn = format!("arn:aws:kms:{region}:{}:alias/shared", account(&ts));
    for reference in [alias_arn.as_str(), "alias/shared", key.key_id.as_str()] {
        let outcome = refused(&ts, || encrypt_as(&partner, &ts, reference));
        assert_eq!(outcome.0, "NotFoundException", "{reference}");
    }
    // Only the operations AWS allows across accounts, whatever the policies say.
    let deletion = ts.store.schedule_key_deletion(
        &partner,
        ScheduleKeyDeletionRequest {
            key_id: key.arn.clone(),
            pending_window_in_days: None,
        },
    );
    assert_eq!(failure(deletion).0, "NotFoundException");
    // Across accounts, the caller's own identity policies must allow the call too.
    let without_policies = stranger(&[]);
    assert_eq!(
        failure(encrypt_as(&without_policies, &ts, &key.arn)),
        denied(
            &without_policies.principal,
            "kms:Encrypt",
            &key.arn,
            "because no identity-based policy allows the kms:Encrypt action"
        )
    );
    // Each cross-account call is recorded for both accounts, as CloudTrail does.
    ts.store.shutdown();
    let events = hsm_kms::audit::log::read_events(ts.store.metadata(), 0, usize::MAX).unwrap();
    let decrypts: Vec<Value> = events
        .iter()
        .map(|e| e.event())
        .filter(|e| e["eventName"] == "Decrypt" && e["userIdentity"]["arn"] == partner.principal)
        .collect();
    assert_eq!(decrypts.len(), 2, "{decrypts:?}");
    let recipients: Vec<&Value> = decrypts.iter().map(|e| &e["recipientAccountId"]).collect();
    assert!(recipients.contains(&&json!(other)), "{recipients:?}");
    assert!(recipients.contains(&&json!(account(&ts))), "{recipients:?}");
    assert_eq!(decrypts[0]["sharedEventID"], decrypts[1]["sharedEventID"]);
    assert!(decrypts[0]["sharedEventID"].is_string());
    assert_ne!(decrypts[0]["eventID"], decrypts[1]["eventID"]);
    for event in &decrypts {
        assert_eq!(event["resources"][0]["accountId"], account(&ts));
    }
}

/// The CIS benchmark's CloudWatch filter for unauthorized API calls, as AWS documents it.
const UNAUTHORIZED_CALLS: &str =
    r#"{($.errorCode="*UnauthorizedOperation") || ($.errorCode="AccessDenied*")}"#;

#[test]
fn a_refusal_fires_an_alarm_on_unauthorized_calls() {
    let ts = TestStore::new();
    let delivered = ts.cluster.path("unauthorized.jsonl");
    let alarms_text = format!(
        "[alarms]\ndefaults = false\n\n[[alarms.alarm]]\nname = \"unauthorized\"\npattern = '{UNAUTHORIZED_CALLS}'\nfile = {:?}\n",
        delivered.display().to_string()
    );
    let config =
        hsm_kms::config::Config::parse(&format!("{}\n{alarms_text}", ts.cluster.config_text))
            .unwrap();
    let mut ts = ts;
    ts.store
        .start_alarms(config.alarms.alarms(&config.service.data_dir).unwrap())
        .unwrap();
    let text = policy(json!([admin(&ts)]));
    let key = create_with_policy(&ts, &text);
    let app = user(&ts, "app");
    encrypt_as(&ts.caller, &ts, &key.key_id).unwrap_err();
    assert_eq!(
        failure(encrypt_as(&app, &ts, &key.key_id)).0,
        "AccessDeniedException"
    );
    ts.store.shutdown();
    let lines: Vec<Value> = std::fs::read_to_string(&delivered)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let principals: Vec<&Value> = lines
        .iter()
        .map(|line| &line["event"]["userIdentity"]["arn"])
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        principals.contains(&&json!(app.principal)),
        "{principals:?}"
    );
    assert!(
        lines
            .iter()
            .all(|line| line["event"]["errorCode"] == "AccessDenied"
                && line["alarmName"] == "unauthorized")
    );
}

#[test]
fn alias_operations_need_permission_on_the_alias_too() {
    let ts = TestStore::new();
    let key = create(&ts);
    let region = ts.store.scope().region().to_owned();
    let alias_arn = |name: &str| format!("arn:aws:kms:{region}:{}:alias/{name}", account(&ts));
    let ops = json!(["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"]);
    let app = user_with(
        &ts,
        "app",
        &[identity(json!([
            {"Effect": "Allow", "Action": ops, "Resource": [key.arn, alias_arn("app-*")]}
        ]))],
        &[],
        None,
    );
    let create_as = |name: &str| {
        ts.store.create_alias(
            &app,
            AliasRequest {
                alias_name: name.to_owned(),
                target_key_id: key.key_id.clone(),
            },
        )
    };
    create_as("alias/app-one").unwrap();
    let (code, message) = failure(create_as("alias/other"));
    assert_eq!(code, "AccessDeniedException");
    assert_eq!(
        message,
        format!(
            "User: {} is not authorized to perform: kms:CreateAlias on resource: {} because no identity-based policy allows the kms:CreateAlias action",
            app.principal,
            alias_arn("other")
        )
    );
    ts.store.delete_alias(&app, "alias/app-one").unwrap();
    create_alias(&ts, "alias/other", &key.key_id).unwrap();
    assert_eq!(
        failure(ts.store.delete_alias(&app, "alias/other")).0,
        "AccessDeniedException"
    );
}
