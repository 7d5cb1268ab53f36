//! Grants on the request path, against a real two-member SoftHSM2 cluster and sled on disk:
//! a grant lets its grantee do what the key policy does not, within its operations and
//! constraints; an explicit Deny still wins; CreateGrant through a grant only narrows;
//! tokens, names, paging, RetireGrant's and RevokeGrant's rules, DryRun, another account's
//! grantee, and grants going with their key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::TestStore;
use common::kms::*;
use hsm_kms::caller::PrincipalProfile;
use hsm_kms::error::KmsError;
use hsm_kms::ids::Scope;
use hsm_kms::keystore::Caller;
use hsm_kms::keystore::api::*;
use hsm_kms::policy::parse_identity_policy;
use hsm_kms::store::Table;
use secrecy::SecretSlice;
use serde_json::{Value, json};

fn account(ts: &TestStore) -> String {
    ts.store.scope().account_id().to_owned()
}

fn root(ts: &TestStore) -> String {
    format!("arn:aws:iam::{}:root", account(ts))
}

/// A caller `user/<name>` of the service's account with an identity policy that allows
/// nothing, so only key policies and grants can let it in.
fn user(ts: &TestStore, name: &str) -> Caller {
    let mut caller = ts.caller.clone();
    caller.principal = format!("arn:aws:iam::{}:user/{name}", account(ts));
    caller.profile = Arc::new(PrincipalProfile {
        policies: Some(vec![Arc::new(
            parse_identity_policy(
                &json!({"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "kms:ListAliases", "Resource": "*"}
                ]})
                .to_string(),
            )
            .unwrap(),
        )]),
        ..Default::default()
    });
    caller
}

/// A key whose policy lets only the account root in (every action), plus `extra`
/// statements.
fn restricted_key(ts: &TestStore, extra: &[Value]) -> KeyMetadata {
    let mut statements = vec![json!({
        "Effect": "Allow", "Principal": {"AWS": root(ts)}, "Action": "kms:*", "Resource": "*"
    })];
    statements.extend_from_slice(extra);
    let policy = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
    ts.store
        .create_key(
            &ts.caller,
            CreateKeyRequest {
                policy: Some(policy),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata
}

fn grant(
    ts: &TestStore,
    caller: &Caller,
    key: &str,
    grantee: &str,
    operations: &[&str],
) -> Result<CreateGrantResponse, KmsError> {
    ts.store.create_grant(
        caller,
        CreateGrantRequest {
            key_id: key.to_owned(),
            grantee_principal: grantee.to_owned(),
            operations: operations.iter().map(|op| op.to_string()).collect(),
            ..Default::default()
        },
    )
}

fn encrypt_as(
    ts: &TestStore,
    caller: &Caller,
    key: &str,
    context: &[(&str, &str)],
    tokens: &[String],
) -> Result<EncryptResponse, KmsError> {
    ts.store.encrypt(
        caller,
        EncryptRequest {
            key_id: key.into(),
            plaintext: SecretSlice::from(b"secret".to_vec()),
            encryption_context: ctx(context),
            grant_tokens: tokens.to_vec(),
            ..Default::default()
        },
    )
}

fn list(ts: &TestStore, key: &str) -> Vec<GrantListEntry> {
    ts.store
        .list_grants(
            &ts.caller,
            ListGrantsRequest {
                key_id: key.to_owned(),
                ..Default::default()
            },
        )
        .unwrap()
        .grants
}

fn pairs(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_grant_allows_its_grantee_its_operations_until_revoked() {
    let ts = TestStore::new();
    let key = restricted_key(&ts, &[]);
    let app = user(&ts, "app");
    let (code, message) = failure(encrypt_as(&ts, &app, &key.key_id, &[], &[]));
    assert_eq!(code, "AccessDeniedException");
    assert!(
        // The key policy delegates to the account, whose identity policy does not allow it.
        message.ends_with("because no identity-based policy allows the kms:Encrypt action"),
        "{message}"
    );

    let created = grant(
        &ts,
        &ts.caller,
        &key.key_id,
        &app.principal,
        &["Encrypt", "Decrypt"],
    )
    .unwrap();
    assert_eq!(created.grant_id.len(), 64);
    let sealed = encrypt_as(&ts, &app, &key.key_id, &[], &[]).unwrap();
    let opened = ts
        .store
        .decrypt(
            &app,
            DecryptRequest {
                ciphertext_blob: sealed.ciphertext_blob,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(opened.key_id, key.arn);
    // Not an operation of the grant.
    let (code, _) = failure(ts.store.generate_data_key(
        &app,
        GenerateDataKeyRequest {
            key_id: key.key_id.clone(),
            key_spec: Some("AES_256".into()),
            ..Default::default()
        },
    ));
    assert_eq!(code, "AccessDeniedException");
    // Another principal is not the grantee.
    let (code, _) = failure(encrypt_as(&ts, &user(&ts, "other"), &key.key_id, &[], &[]));
    assert_eq!(code, "AccessDeniedException");

    let listed = list(&ts, &key.key_id);
    assert_eq!(listed.len(), 1);
    let entry = &listed[0];
    assert_eq!(entry.key_id, key.arn);
    assert_eq!(entry.grant_id, created.grant_id);
    assert_eq!(entry.grantee_principal, app.principal);
    assert_eq!(entry.issuing_account, root(&ts));
    assert_eq!(entry.operations, ["Decrypt", "Encrypt"]);
    assert!(entry.constraints.is_none() && entry.retiring_principal.is_none());

    ts.store
        .revoke_grant(
            &ts.caller,
            RevokeGrantRequest {
                key_id: key.arn.clone(),
                grant_id: created.grant_id.clone(),
                dry_run: None,
            },
        )
        .unwrap();
    let (code, _) = failure(encrypt_as(&ts, &app, &key.key_id, &[], &[]));
    assert_eq!(code, "AccessDeniedException");
    assert!(list(&ts, &key.key_id).is_empty());
    let (code, _) = failure(ts.store.revoke_grant(
        &ts.caller,
        RevokeGrantRequest {
            key_id: key.key_id.clone(),
            grant_id: created.grant_id,
            dry_run: None,
        },
    ));
    assert_eq!(code, "NotFoundException");
}

#[test]
fn constraints_tokens_deny_names_paging_and_dry_run() {
    let ts = TestStore::new();
    let app = user(&ts, "app");
    let key = restricted_key(
        &ts,
        &[
            json!({"Effect": "Deny", "Principal": {"AWS": app.principal}, "Action": "kms:Decrypt",
                 "Resource": "*"}),
        ],
    );
    let with_constraints = |constraints: GrantConstraintsShape, operations: &[&str]| {
        ts.store.create_grant(
            &ts.caller,
            CreateGrantRequest {
                key_id: key.key_id.clone(),
                grantee_principal: app.principal.clone(),
                operations: operations.iter().map(|op| op.to_string()).collect(),
                constraints: Some(constraints),
                ..Default::default()
            },
        )
    };
    // EncryptionContextSubset: the request's context must include the pairs.
    let subset = with_constraints(
        GrantConstraintsShape {
            encryption_context_subset: Some(pairs(&[("dept", "it")])),
            ..Default::default()
        },
        &["Encrypt", "Decrypt"],
    )
    .unwrap();
    encrypt_as(&ts, &app, &key.key_id, &[("dept", "it"), ("x", "y")], &[]).unwrap();
    let (code, _) = failure(encrypt_as(&ts, &app, &key.key_id, &[("dept", "hr")], &[]));
    assert_eq!(code, "AccessDeniedException");
    let (code, _) = failure(encrypt_as(&ts, &app, &key.key_id, &[], &[]));
    assert_eq!(code, "AccessDeniedException");
    // The key policy's explicit Deny beats the grant.
    let sealed = encrypt_as(&ts, &app, &key.key_id, &[("dept", "it")], &[]).unwrap();
    let (code, message) = failure(ts.store.decrypt(
        &app,
        DecryptRequest {
            ciphertext_blob: sealed.ciphertext_blob,
            encryption_context: ctx(&[("dept", "it")]),
            ..Default::default()
        },
    ));
    assert_eq!(code, "AccessDeniedException");
    assert!(message.ends_with("with an explicit deny in a resource-based policy"));
    // Constraints only with operations that take an encryption context.
    let (code, message) = failure(with_constraints(
        GrantConstraintsShape {
            encryption_context_equals: Some(pairs(&[("a", "b")])),
            ..Default::default()
        },
        &["Encrypt", "Sign"],
    ));
    assert_eq!(code, "ValidationException");
    assert!(message.contains("Sign"), "{message}");
    // A symmetric key takes no signing operation in a grant at all.
    let (code, _) = failure(grant(
        &ts,
        &ts.caller,
        &key.key_id,
        &app.principal,
        &["Sign"],
    ));
    assert_eq!(code, "ValidationException");

    // Tokens: each must be one this store issued; at most 10.
    encrypt_as(
        &ts,
        &app,
        &key.key_id,
        &[("dept", "it")],
        std::slice::from_ref(&subset.grant_token),
    )
    .unwrap();
    let (code, _) = failure(encrypt_as(
        &ts,
        &app,
        &key.key_id,
        &[("dept", "it")],
        &["forged".to_owned()],
    ));
    assert_eq!(code, "InvalidGrantTokenException");
    let eleven = vec![subset.grant_token.clone(); 11];
    let (code, _) = failure(encrypt_as(
        &ts,
        &app,
        &key.key_id,
        &[("dept", "it")],
        &eleven,
    ));
    assert_eq!(code, "ValidationException");

    // Names: the same name and parameters give the same grant, with a new token.
    let named = |operations: &[&str]| {
        ts.store.create_grant(
            &ts.caller,
            CreateGrantRequest {
                key_id: key.key_id.clone(),
                grantee_principal: app.principal.clone(),
                operations: operations.iter().map(|op| op.to_string()).collect(),
                name: Some("batch-job".into()),
                ..Default::default()
            },
        )
    };
    let first = named(&["Encrypt"]).unwrap();
    let again = named(&["Encrypt"]).unwrap();
    assert_eq!(first.grant_id, again.grant_id);
    assert_ne!(first.grant_token, again.grant_token);
    let changed = named(&["Encrypt", "DescribeKey"]).unwrap();
    assert_ne!(first.grant_id, changed.grant_id);

    // DryRun: DryRunOperationException, and nothing stored.
    let before = list(&ts, &key.key_id).len();
    let (code, _) = failure(ts.store.create_grant(
        &ts.caller,
        CreateGrantRequest {
            key_id: key.key_id.clone(),
            grantee_principal: app.principal.clone(),
            operations: vec!["Encrypt".into()],
            dry_run: Some(true),
            ..Default::default()
        },
    ));
    assert_eq!(code, "DryRunOperationException");
    assert_eq!(list(&ts, &key.key_id).len(), before);

    // Paging: two at a time, every grant once.
    for n in 0..3 {
        grant(
            &ts,
            &ts.caller,
            &key.key_id,
            &format!("{}{n}", app.principal),
            &["Encrypt"],
        )
        .unwrap();
    }
    let all: Vec<String> = list(&ts, &key.key_id)
        .into_iter()
        .map(|g| g.grant_id)
        .collect();
    assert_eq!(all.len(), before + 3);
    let mut paged = Vec::new();
    let mut marker = None;
    loop {
        let page = ts
            .store
            .list_grants(
                &ts.caller,
                ListGrantsRequest {
                    key_id: key.key_id.clone(),
                    limit: Some(2),
                    marker: marker.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(page.grants.len() <= 2);
        paged.extend(page.grants.into_iter().map(|g| g.grant_id));
        if !page.truncated {
            break;
        }
        marker = page.next_marker;
    }
    assert_eq!(paged, all);
    let (code, _) = failure(ts.store.list_grants(
        &ts.caller,
        ListGrantsRequest {
            key_id: key.key_id.clone(),
            marker: Some("bogus".into()),
            ..Default::default()
        },
    ));
    assert_eq!(code, "InvalidMarkerException");
    // Filtered by grantee and by grant id.
    let only = ts
        .store
        .list_grants(
            &ts.caller,
            ListGrantsRequest {
                key_id: key.key_id.clone(),
                grant_id: Some(subset.grant_id.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(only.grants.len(), 1);
    assert_eq!(
        only.grants[0]
            .constraints
            .as_ref()
            .unwrap()
            .encryption_context_subset,
        Some(pairs(&[("dept", "it")]))
    );
}

#[test]
fn create_grant_through_a_grant_only_narrows() {
    let ts = TestStore::new();
    let key = restricted_key(&ts, &[]);
    let delegate = user(&ts, "delegate");
    let worker = user(&ts, "worker");
    grant(
        &ts,
        &ts.caller,
        &key.key_id,
        &delegate.principal,
        &["Encrypt", "Decrypt", "CreateGrant"],
    )
    .unwrap();
    grant(&ts, &delegate, &key.key_id, &worker.principal, &["Encrypt"]).unwrap();
    encrypt_as(&ts, &worker, &key.key_id, &[], &[]).unwrap();
    let (code, _) = failure(grant(
        &ts,
        &delegate,
        &key.key_id,
        &worker.principal,
        &["Encrypt", "GenerateDataKey"],
    ));
    assert_eq!(code, "AccessDeniedException");
    // The worker's grant does not include CreateGrant.
    let (code, _) = failure(grant(
        &ts,
        &worker,
        &key.key_id,
        &worker.principal,
        &["Encrypt"],
    ));
    assert_eq!(code, "AccessDeniedException");
}

#[test]
fn retiring_follows_the_grant_and_revoking_the_key_policy() {
    let ts = TestStore::new();
    let key = restricted_key(&ts, &[]);
    let app = user(&ts, "app");
    let janitor = user(&ts, "janitor");
    let stranger = user(&ts, "stranger");
    let create = |operations: &[&str]| {
        ts.store
            .create_grant(
                &ts.caller,
                CreateGrantRequest {
                    key_id: key.key_id.clone(),
                    grantee_principal: app.principal.clone(),
                    retiring_principal: Some(janitor.principal.clone()),
                    operations: operations.iter().map(|op| op.to_string()).collect(),
                    ..Default::default()
                },
            )
            .unwrap()
    };
    let retire_by_token = |caller: &Caller, token: &str| {
        ts.store.retire_grant(
            caller,
            RetireGrantRequest {
                grant_token: Some(token.to_owned()),
                ..Default::default()
            },
        )
    };
    let retire_by_id = |caller: &Caller, grant_id: &str| {
        ts.store.retire_grant(
            caller,
            RetireGrantRequest {
                key_id: Some(key.arn.clone()),
                grant_id: Some(grant_id.to_owned()),
                ..Default::default()
            },
        )
    };
    // The retiring principal, by token.
    let first = create(&["Encrypt"]);
    let listed = ts
        .store
        .list_retirable_grants(
            &ts.caller,
            ListRetirableGrantsRequest {
                retiring_principal: janitor.principal.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(listed.grants.len(), 1);
    assert_eq!(listed.grants[0].grant_id, first.grant_id);
    assert_eq!(
        failure(retire_by_token(&stranger, &first.grant_token)).0,
        "AccessDeniedException"
    );
    assert_eq!(
        failure(retire_by_token(&app, &first.grant_token)).0,
        "AccessDeniedException"
    );
    let (code, _) = failure(ts.store.retire_grant(
        &janitor,
        RetireGrantRequest {
            grant_token: Some(first.grant_token.clone()),
            dry_run: Some(true),
            ..Default::default()
        },
    ));
    assert_eq!(code, "DryRunOperationException");
    retire_by_token(&janitor, &first.grant_token).unwrap();
    assert_eq!(
        failure(retire_by_token(&janitor, &first.grant_token)).0,
        "NotFoundException"
    );
    // The grantee, when the grant includes RetireGrant, by key and grant id.
    let second = create(&["Encrypt", "RetireGrant"]);
    retire_by_id(&app, &second.grant_id).unwrap();
    // The key's account root, always.
    let third = create(&["Encrypt"]);
    retire_by_id(&ts.caller, &third.grant_id).unwrap();
    assert!(list(&ts, &key.key_id).is_empty());
    // Bad names of grants.
    assert_eq!(
        failure(retire_by_token(&ts.caller, "garbage")).0,
        "InvalidGrantTokenException"
    );
    assert_eq!(
        failure(retire_by_id(&ts.caller, "not-a-grant")).0,
        "InvalidGrantIdException"
    );
    assert_eq!(
        failure(
            ts.store
                .retire_grant(&ts.caller, RetireGrantRequest::default())
        )
        .0,
        "ValidationException"
    );
    // RevokeGrant is a key policy decision: a principal it does not name is refused.
    let fourth = create(&["Encrypt"]);
    let (code, message) = failure(ts.store.revoke_grant(
        &janitor,
        RevokeGrantRequest {
            key_id: key.key_id.clone(),
            grant_id: fourth.grant_id.clone(),
            dry_run: None,
        },
    ));
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("kms:RevokeGrant"), "{message}");
}

#[test]
fn another_accounts_grantee_uses_the_key_through_its_arn() {
    let ts = TestStore::new();
    let key = restricted_key(&ts, &[]);
    let region = ts.store.scope().region().to_owned();
    let other = "444455556666";
    let mut partner = Caller::local(&Scope::new(&region, other).unwrap());
    partner.principal = format!("arn:aws:iam::{other}:role/partner");
    let created = grant(
        &ts,
        &ts.caller,
        &key.key_id,
        &partner.principal,
        &["Encrypt", "RetireGrant"],
    )
    .unwrap();
    // Through the key ARN, with no key policy statement and no identity policy for it.
    let sealed = encrypt_as(&ts, &partner, &key.arn, &[], &[]).unwrap();
    assert_eq!(sealed.key_id, key.arn);
    // A bare key id names a key of the partner's own account: not this one.
    assert_eq!(
        failure(encrypt_as(&ts, &partner, &key.key_id, &[], &[])).0,
        "NotFoundException"
    );
    // A session of the grantee role is the grantee too.
    let mut session = partner.clone();
    session.principal = format!("arn:aws:sts::{other}:assumed-role/partner/job-1");
    encrypt_as(&ts, &session, &key.arn, &[], &[]).unwrap();
    // The partner retires its grant by token.
    ts.store
        .retire_grant(
            &partner,
            RetireGrantRequest {
                grant_token: Some(created.grant_token),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        failure(encrypt_as(&ts, &partner, &key.arn, &[], &[])).0,
        "AccessDeniedException"
    );
}

#[test]
fn grants_survive_a_restart_and_go_with_their_key() {
    let ts = TestStore::new();
    let key = restricted_key(&ts, &[]);
    let app = user(&ts, "app");
    grant(&ts, &ts.caller, &key.key_id, &app.principal, &["Encrypt"]).unwrap();
    let other = restricted_key(&ts, &[]);
    grant(&ts, &ts.caller, &other.key_id, &app.principal, &["Encrypt"]).unwrap();
    let ts = ts.reopen();
    encrypt_as(&ts, &app, &key.key_id, &[], &[]).unwrap();
    ts.store
        .schedule_key_deletion(
            &ts.caller,
            ScheduleKeyDeletionRequest {
                key_id: key.key_id.clone(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    // Pending deletion: ListGrants still answers, the grant allows nothing.
    assert_eq!(list(&ts, &key.key_id).len(), 1);
    assert_eq!(
        failure(encrypt_as(&ts, &app, &key.key_id, &[], &[])).0,
        "KMSInvalidStateException"
    );
    ts.clock.advance(Duration::from_secs(8 * 24 * 60 * 60));
    ts.store.run_maintenance().unwrap();
    let left: Vec<String> = ts
        .store
        .metadata()
        .scan(Table::Grants, b"", None, 100)
        .unwrap()
        .into_iter()
        .map(|(store_key, _)| String::from_utf8(store_key).unwrap())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(&other.key_id), "{left:?}");
}

#[test]
fn the_trail_records_grant_ids_and_never_tokens() {
    let ts = TestStore::new();
    let key = create(&ts);
    let created = grant(
        &ts,
        &ts.caller,
        &key.key_id,
        "arn:aws:iam::111122223333:user/x",
        &["Encrypt"],
    )
    .unwrap();
    ts.store
        .retire_grant(
            &ts.caller,
            RetireGrantRequest {
                grant_token: Some(created.grant_token.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    ts.store.shutdown();
    let events: Vec<Value> = hsm_kms::audit::log::read_events(ts.store.metadata(), 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.event())
        .collect();
    let created_event = events
        .iter()
        .find(|e| e["eventName"] == "CreateGrant")
        .unwrap();
    assert_eq!(
        created_event["responseElements"]["grantId"],
        created.grant_id
    );
    assert_eq!(created_event["resources"][0]["ARN"], key.arn);
    let retired = events
        .iter()
        .find(|e| e["eventName"] == "RetireGrant")
        .unwrap();
    assert_eq!(retired["requestParameters"]["grantId"], created.grant_id);
    let trail = serde_json::to_string(&events).unwrap();
    assert!(!trail.contains(&created.grant_token));
}

#[test]
fn key_policies_condition_create_grant_on_its_parameters() {
    let ts = TestStore::new();
    let delegate = user(&ts, "delegate");
    let account = account(&ts);
    let key = restricted_key(
        &ts,
        &[json!({
            "Effect": "Allow", "Principal": {"AWS": delegate.principal}, "Action": "kms:CreateGrant",
            "Resource": "*",
            "Condition": {
                "ForAllValues:StringEquals": {"kms:GrantOperations": ["Encrypt", "Decrypt"]},
                "StringLike": {"kms:GranteePrincipal": format!("arn:aws:iam::{account}:user/app-*")},
                "Bool": {"kms:GrantIsForAWSResource": "false"},
                "StringEqualsIfExists": {"kms:RetiringPrincipal": format!("arn:aws:iam::{account}:user/janitor")},
            }
        })],
    );
    let app = format!("arn:aws:iam::{account}:user/app-1");
    let create = |grantee: &str, operations: &[&str], retiring: Option<&str>| {
        ts.store.create_grant(
            &delegate,
            CreateGrantRequest {
                key_id: key.key_id.clone(),
                grantee_principal: grantee.to_owned(),
                retiring_principal: retiring.map(str::to_owned),
                operations: operations.iter().map(|op| op.to_string()).collect(),
                ..Default::default()
            },
        )
    };
    create(&app, &["Encrypt"], None).unwrap();
    create(
        &app,
        &["Encrypt", "Decrypt"],
        Some(&format!("arn:aws:iam::{account}:user/janitor")),
    )
    .unwrap();
    // kms:GrantOperations: an operation outside the list.
    assert_eq!(
        failure(create(&app, &["Encrypt", "ReEncryptFrom"], None)).0,
        "AccessDeniedException"
    );
    // kms:GranteePrincipal: another grantee.
    assert_eq!(
        failure(create(
            &format!("arn:aws:iam::{account}:user/other"),
            &["Encrypt"],
            None
        ))
        .0,
        "AccessDeniedException"
    );
    // kms:RetiringPrincipal: another retiring principal.
    assert_eq!(
        failure(create(
            &app,
            &["Encrypt"],
            Some(&format!("arn:aws:iam::{account}:user/x"))
        ))
        .0,
        "AccessDeniedException"
    );
}
