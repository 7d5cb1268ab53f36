//! The policy module as a table of cases: one per operator, principal form, evaluation
//! path, message shape and parser refusal.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::condition::Condition;
use super::*;
use crate::error::KmsError;

const ACCOUNT: &str = "111122223333";
const OTHER: &str = "444455556666";
const KEY: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn caller(arn: &str) -> CallerIdentity {
    let account = arn.split(':').nth(4).unwrap_or_default();
    CallerIdentity::new(arn, account)
}

fn app() -> CallerIdentity {
    caller("arn:aws:iam::111122223333:user/app")
}

fn key_policy(statements: Value) -> PolicyDocument {
    parse_key_policy(&json!({"Version": "2012-10-17", "Statement": statements}).to_string())
        .unwrap()
}

fn identity_policy(statements: Value) -> Arc<PolicyDocument> {
    Arc::new(
        parse_identity_policy(
            &json!({"Version": "2012-10-17", "Statement": statements}).to_string(),
        )
        .unwrap(),
    )
}

fn allow(principal: Value) -> Value {
    json!({"Effect": "Allow", "Principal": principal, "Action": "kms:*", "Resource": "*"})
}

fn decide(
    policy: &PolicyDocument,
    identity: Option<&[Arc<PolicyDocument>]>,
    grants: &[Grant],
    request: &RequestContext,
) -> Decision {
    evaluate(
        &Policies {
            key_policy: policy,
            key_account: ACCOUNT,
            identity,
            grants,
        },
        request,
    )
}

fn encrypt_by(who: CallerIdentity) -> RequestContext {
    RequestContext::new("kms:Encrypt", KEY, who)
}

/// (Principal element, caller, identity policies, expected refusal).
type PrincipalCase<'a> = (
    Value,
    CallerIdentity,
    Option<&'a [Arc<PolicyDocument>]>,
    Option<DenialReason>,
);

/// (constraints, action, request encryption context, allowed).
type ConstraintCase<'a> = (
    &'a GrantConstraints,
    &'static str,
    Vec<(&'a str, &'a str)>,
    bool,
);

fn reason(decision: &Decision) -> Option<DenialReason> {
    match decision {
        Decision::Allow(_) => None,
        Decision::Deny(denial) => Some(denial.reason),
    }
}

// ---------------------------------------------------------------- conditions

/// How a condition case fills the request.
enum Fill {
    Single(&'static str, &'static str),
    Multi(&'static str, &'static [&'static str]),
}

#[test]
fn every_condition_operator_follows_aws() {
    use Fill::{Multi, Single};
    let cases: Vec<(&str, &str, Value, Vec<Fill>, bool)> = vec![
        // (operator, key, policy values, request keys, holds)
        (
            "StringEquals",
            "kms:CallerAccount",
            json!(ACCOUNT),
            vec![],
            true,
        ),
        (
            "StringEquals",
            "kms:CallerAccount",
            json!(OTHER),
            vec![],
            false,
        ),
        (
            "StringEquals",
            "kms:CallerAccount",
            json!([OTHER, ACCOUNT]),
            vec![],
            true,
        ),
        (
            "StringEquals",
            "aws:PrincipalArn",
            json!("arn:aws:iam::111122223333:user/APP"),
            vec![],
            false,
        ),
        ("StringEquals", "kms:ViaService", json!("x"), vec![], false),
        (
            "StringNotEquals",
            "kms:CallerAccount",
            json!(ACCOUNT),
            vec![],
            false,
        ),
        (
            "StringNotEquals",
            "kms:CallerAccount",
            json!(OTHER),
            vec![],
            true,
        ),
        (
            "StringNotEquals",
            "kms:ViaService",
            json!("x"),
            vec![],
            true,
        ),
        (
            "StringEqualsIgnoreCase",
            "aws:PrincipalArn",
            json!("ARN:AWS:IAM::111122223333:USER/APP"),
            vec![],
            true,
        ),
        (
            "StringNotEqualsIgnoreCase",
            "aws:PrincipalArn",
            json!("ARN:AWS:IAM::111122223333:USER/APP"),
            vec![],
            false,
        ),
        (
            "StringLike",
            "aws:PrincipalArn",
            json!("arn:aws:iam::*:user/a?p"),
            vec![],
            true,
        ),
        (
            "StringLike",
            "aws:PrincipalArn",
            json!("arn:aws:iam::*:role/*"),
            vec![],
            false,
        ),
        (
            "StringNotLike",
            "aws:PrincipalArn",
            json!("arn:aws:iam::*:role/*"),
            vec![],
            true,
        ),
        (
            "StringNotLike",
            "aws:PrincipalArn",
            json!("*:user/*"),
            vec![],
            false,
        ),
        (
            "ArnEquals",
            "aws:PrincipalArn",
            json!("arn:aws:iam::111122223333:user/app"),
            vec![],
            true,
        ),
        (
            "ArnEquals",
            "aws:PrincipalArn",
            json!("arn:aws:iam::*:user/*"),
            vec![],
            true,
        ),
        (
            "ArnLike",
            "aws:PrincipalArn",
            json!("arn:aws:iam::111122223333:user/*"),
            vec![],
            true,
        ),
        (
            "ArnLike",
            "aws:PrincipalArn",
            json!("arn:aws:iam::111122223333"),
            vec![],
            false,
        ),
        (
            "ArnNotEquals",
            "aws:PrincipalArn",
            json!("arn:aws:iam::111122223333:user/other"),
            vec![],
            true,
        ),
        (
            "ArnNotLike",
            "aws:PrincipalArn",
            json!("arn:aws:iam::111122223333:*"),
            vec![],
            false,
        ),
        (
            "NumericEquals",
            "kms:ScheduleKeyDeletionPendingWindowInDays",
            json!(7),
            vec![Single("kms:ScheduleKeyDeletionPendingWindowInDays", "7")],
            true,
        ),
        (
            "NumericNotEquals",
            "kms:ScheduleKeyDeletionPendingWindowInDays",
            json!("7"),
            vec![Single("kms:ScheduleKeyDeletionPendingWindowInDays", "7")],
            false,
        ),
        (
            "NumericLessThan",
            "kms:ScheduleKeyDeletionPendingWindowInDays",
            json!(30),
            vec![Single("kms:ScheduleKeyDeletionPendingWindowInDays", "30")],
            false,
        ),
        (
            "NumericLessThanEquals",
            "kms:ScheduleKeyDeletionPendingWindowInDays",
            json!(30),
            vec![Single("kms:ScheduleKeyDeletionPendingWindowInDays", "30")],
            true,
        ),
        (
            "NumericGreaterThan",
            "kms:ScheduleKeyDeletionPendingWindowInDays",
            json!(20),
            vec![Single("kms:ScheduleKeyDeletionPendingWindowInDays", "30")],
            true,
        ),
        (
            "NumericGreaterThanEquals",
            "kms:ScheduleKeyDeletionPendingWindowInDays",
            json!(31),
            vec![Single("kms:ScheduleKeyDeletionPendingWindowInDays", "30")],
            false,
        ),
        (
            "NumericEquals",
            "kms:ScheduleKeyDeletionPendingWindowInDays",
            json!(7),
            vec![],
            false,
        ),
        (
            "DateEquals",
            "aws:CurrentTime",
            json!("2026-03-01T00:00:00Z"),
            vec![Single("aws:CurrentTime", "2026-03-01T00:00:00Z")],
            true,
        ),
        (
            "DateNotEquals",
            "aws:CurrentTime",
            json!("2026-03-01"),
            vec![Single("aws:CurrentTime", "2026-03-01T00:00:00Z")],
            false,
        ),
        (
            "DateLessThan",
            "aws:CurrentTime",
            json!("2026-03-02T00:00:00Z"),
            vec![Single("aws:CurrentTime", "2026-03-01T00:00:00Z")],
            true,
        ),
        (
            "DateLessThanEquals",
            "aws:CurrentTime",
            json!(1_772_323_200),
            vec![Single("aws:CurrentTime", "2026-03-01T00:00:00Z")],
            true,
        ),
        (
            "DateGreaterThan",
            "aws:CurrentTime",
            json!("2026-03-02T00:00:00Z"),
            vec![Single("aws:CurrentTime", "2026-03-01T00:00:00Z")],
            false,
        ),
        (
            "DateGreaterThanEquals",
            "kms:ValidTo",
            json!("2026-01-01T00:00:00Z"),
            vec![Single("kms:ValidTo", "1772323200")],
            true,
        ),
        ("Bool", "aws:SecureTransport", json!("true"), vec![], false),
        ("Bool", "aws:SecureTransport", json!(false), vec![], true),
        ("Bool", "kms:MultiRegion", json!(true), vec![], false),
        (
            "BinaryEquals",
            "kms:ResourceTag/blob",
            json!("QUJD"),
            vec![Single("aws:ResourceTag/blob", "QUJD")],
            false,
        ),
        (
            "BinaryEquals",
            "aws:ResourceTag/blob",
            json!("QUJD"),
            vec![Single("aws:ResourceTag/blob", "QUJD")],
            true,
        ),
        (
            "IpAddress",
            "aws:SourceIp",
            json!("10.0.0.0/8"),
            vec![Single("aws:SourceIp", "10.1.2.3")],
            true,
        ),
        (
            "IpAddress",
            "aws:SourceIp",
            json!(["192.168.0.0/16", "2001:db8::/32"]),
            vec![Single("aws:SourceIp", "2001:db8::1")],
            true,
        ),
        (
            "IpAddress",
            "aws:SourceIp",
            json!("10.0.0.0/8"),
            vec![Single("aws:SourceIp", "11.1.2.3")],
            false,
        ),
        (
            "IpAddress",
            "aws:SourceIp",
            json!("10.0.0.0/8"),
            vec![],
            false,
        ),
        (
            "NotIpAddress",
            "aws:SourceIp",
            json!("10.0.0.0/8"),
            vec![Single("aws:SourceIp", "10.1.2.3")],
            false,
        ),
        (
            "NotIpAddress",
            "aws:SourceIp",
            json!("127.0.0.1"),
            vec![Single("aws:SourceIp", "10.1.2.3")],
            true,
        ),
        ("Null", "kms:ViaService", json!("true"), vec![], true),
        ("Null", "kms:ViaService", json!(false), vec![], false),
        ("Null", "kms:CallerAccount", json!("false"), vec![], true),
        (
            "StringEqualsIfExists",
            "kms:ViaService",
            json!("gw"),
            vec![],
            true,
        ),
        (
            "StringEqualsIfExists",
            "kms:ViaService",
            json!("gw"),
            vec![Single("kms:ViaService", "other")],
            false,
        ),
        (
            "ForAnyValue:StringEquals",
            "kms:EncryptionContextKeys",
            json!("Dept"),
            vec![Multi("kms:EncryptionContextKeys", &["Dept", "Team"])],
            true,
        ),
        (
            "ForAnyValue:StringEquals",
            "kms:EncryptionContextKeys",
            json!("Dept"),
            vec![Multi("kms:EncryptionContextKeys", &[])],
            false,
        ),
        (
            "ForAnyValue:StringEquals",
            "kms:EncryptionContextKeys",
            json!("Dept"),
            vec![],
            false,
        ),
        (
            "ForAnyValue:StringNotEquals",
            "kms:EncryptionContextKeys",
            json!("Dept"),
            vec![Multi("kms:EncryptionContextKeys", &["Dept"])],
            false,
        ),
        (
            "ForAllValues:StringEquals",
            "kms:EncryptionContextKeys",
            json!(["Dept", "Team"]),
            vec![Multi("kms:EncryptionContextKeys", &["Dept", "Team"])],
            true,
        ),
        (
            "ForAllValues:StringEquals",
            "kms:EncryptionContextKeys",
            json!(["Dept"]),
            vec![Multi("kms:EncryptionContextKeys", &["Dept", "Team"])],
            false,
        ),
        (
            "ForAllValues:StringEquals",
            "kms:EncryptionContextKeys",
            json!("Dept"),
            vec![Multi("kms:EncryptionContextKeys", &[])],
            true,
        ),
        (
            "ForAllValues:StringEquals",
            "aws:TagKeys",
            json!("Dept"),
            vec![],
            true,
        ),
        (
            "ForAllValues:StringLike",
            "kms:GrantOperations",
            json!(["Encrypt", "Decrypt", "GenerateDataKey*"]),
            vec![Multi(
                "kms:GrantOperations",
                &["Decrypt", "GenerateDataKeyWithoutPlaintext"],
            )],
            true,
        ),
        (
            "StringEquals",
            "kms:EncryptionContextKeys",
            json!("Team"),
            vec![Multi("kms:EncryptionContextKeys", &["Dept", "Team"])],
            true,
        ),
        (
            "StringNotEquals",
            "kms:EncryptionContextKeys",
            json!("Team"),
            vec![Multi("kms:EncryptionContextKeys", &["Dept", "Team"])],
            false,
        ),
        // Condition key names are case-insensitive, the encryption context key part too.
        (
            "StringEquals",
            "KMS:ENCRYPTIONCONTEXT:dept",
            json!("IT"),
            vec![Single("kms:EncryptionContext:Dept", "IT")],
            true,
        ),
        (
            "StringEquals",
            "kms:EncryptionContext:Dept",
            json!("it"),
            vec![Single("kms:EncryptionContext:Dept", "IT")],
            false,
        ),
        // Policy variables.
        (
            "StringEquals",
            "kms:EncryptionContext:team",
            json!("${aws:PrincipalTag/team}"),
            vec![
                Single("aws:PrincipalTag/team", "blue"),
                Single("kms:EncryptionContext:team", "blue"),
            ],
            true,
        ),
        (
            "StringEquals",
            "kms:EncryptionContext:team",
            json!("${aws:PrincipalTag/team}"),
            vec![Single("kms:EncryptionContext:team", "blue")],
            false,
        ),
        (
            "StringLike",
            "kms:EncryptionContext:path",
            json!("${aws:PrincipalTag/team}/${*}"),
            vec![
                Single("aws:PrincipalTag/team", "blue"),
                Single("kms:EncryptionContext:path", "blue/*"),
            ],
            true,
        ),
        // Every documented key can be tested.
        (
            "StringEquals",
            "kms:EncryptionAlgorithm",
            json!("SYMMETRIC_DEFAULT"),
            vec![Single("kms:EncryptionAlgorithm", "SYMMETRIC_DEFAULT")],
            true,
        ),
        (
            "StringEquals",
            "kms:KeyOrigin",
            json!("AWS_CLOUDHSM"),
            vec![Single("kms:KeyOrigin", "AWS_KMS")],
            false,
        ),
        (
            "StringEquals",
            "kms:RequestAlias",
            json!("alias/app"),
            vec![Single("kms:RequestAlias", "alias/app")],
            true,
        ),
        (
            "ForAnyValue:StringLike",
            "kms:ResourceAliases",
            json!("alias/app-*"),
            vec![Multi("kms:ResourceAliases", &["alias/x", "alias/app-1"])],
            true,
        ),
        (
            "Bool",
            "kms:BypassPolicyLockoutSafetyCheck",
            json!(true),
            vec![Single("kms:BypassPolicyLockoutSafetyCheck", "false")],
            false,
        ),
        (
            "StringEquals",
            "aws:PrincipalAccount",
            json!(ACCOUNT),
            vec![],
            true,
        ),
    ];
    for (operator, key, values, fills, expected) in cases {
        let mut request = encrypt_by(app());
        for fill in &fills {
            match fill {
                Single(k, v) => request.set(k, v),
                Multi(k, vs) => request.set_multi(k, vs.iter().map(|v| (*v).to_owned()).collect()),
            }
        }
        let condition = Condition::parse(operator, key, &values, true).unwrap();
        assert_eq!(
            condition.holds(&request),
            expected,
            "{operator} {key} {values}"
        );
    }
}

#[test]
fn keys_of_one_operator_and_operators_of_one_block_must_all_hold() {
    let policy = key_policy(json!([{
        "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*",
        "Condition": {
            "StringEquals": {"kms:CallerAccount": ACCOUNT, "kms:EncryptionContext:Dept": "IT"},
            "Bool": {"aws:SecureTransport": "true"}
        }
    }]));
    let context = BTreeMap::from([("Dept".to_owned(), "IT".to_owned())]);
    let all = encrypt_by(app().with_transport(None, true)).with_encryption_context(&context);
    assert!(decide(&policy, None, &[], &all).is_allowed());
    let plain_http = encrypt_by(app()).with_encryption_context(&context);
    assert!(!decide(&policy, None, &[], &plain_http).is_allowed());
    let no_context = encrypt_by(app().with_transport(None, true));
    assert!(!decide(&policy, None, &[], &no_context).is_allowed());
}

#[test]
fn the_current_time_and_the_callers_helpers_fill_condition_keys() {
    let policy = key_policy(json!([{
        "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*",
        "Condition": {
            "DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"},
            "StringEquals": {"kms:ViaService": "gateway.example", "aws:PrincipalTag/team": "blue"}
        }
    }]));
    let tagged = app()
        .with_via_service(Some("gateway.example".to_owned()))
        .with_tags(BTreeMap::from([("team".to_owned(), "blue".to_owned())]));
    let before = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    let after = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000);
    let request = |at| encrypt_by(tagged.clone()).with_current_time(at);
    assert!(decide(&policy, None, &[], &request(before)).is_allowed());
    assert!(!decide(&policy, None, &[], &request(after)).is_allowed());
    let direct = encrypt_by(app()).with_current_time(before);
    assert!(!decide(&policy, None, &[], &direct).is_allowed());
}

#[test]
fn dates_compare_across_forms_and_zones() {
    let at = |value: &str| {
        let mut request = encrypt_by(app());
        request.set("aws:CurrentTime", value);
        Condition::parse(
            "DateEquals",
            "aws:CurrentTime",
            &json!("2026-03-01T01:00:00+01:00"),
            true,
        )
        .unwrap()
        .holds(&request)
    };
    assert!(at("2026-03-01T00:00:00Z"));
    assert!(at("2026-03-01"));
    assert!(at("2026-02-28T23:00:00-01:00"));
    assert!(at("1772323200"));
    assert!(!at("2026-03-01T00:00:01Z"));
    assert!(!at("garbage"));
}

#[test]
fn a_parsed_document_is_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<PolicyDocument>();
    shareable::<Grant>();
    shareable::<RequestContext>();
}

// ---------------------------------------------------------------- principals and paths

#[test]
fn every_principal_form_matches_as_aws_does() {
    let session = "arn:aws:sts::111122223333:assumed-role/dev/alice";
    let cases: Vec<PrincipalCase> = vec![
        // (Principal, caller, identity policies, expected refusal)
        (json!("*"), app(), Some(&[]), None),
        (
            json!({"AWS": "*"}),
            caller("arn:aws:iam::111122223333:user/x"),
            Some(&[]),
            None,
        ),
        (json!({"AWS": ACCOUNT}), app(), None, None),
        (
            json!({"AWS": ACCOUNT}),
            app(),
            Some(&[]),
            Some(DenialReason::NoIdentityPolicyAllows),
        ),
        (
            json!({"AWS": "arn:aws:iam::111122223333:root"}),
            app(),
            None,
            None,
        ),
        (
            json!({"AWS": "arn:aws:iam::111122223333:root"}),
            app(),
            Some(&[]),
            Some(DenialReason::NoIdentityPolicyAllows),
        ),
        (
            json!({"AWS": "arn:aws:iam::111122223333:user/app"}),
            app(),
            Some(&[]),
            None,
        ),
        (
            json!({"AWS": "arn:aws:iam::111122223333:user/app"}),
            caller("arn:aws:iam::111122223333:user/other"),
            None,
            Some(DenialReason::NoKeyPolicyAllows),
        ),
        (
            json!({"AWS": "arn:aws:iam::111122223333:role/dev"}),
            caller(session),
            Some(&[]),
            None,
        ),
        (
            json!({"AWS": "arn:aws:iam::111122223333:role/ops"}),
            caller(session),
            None,
            Some(DenialReason::NoKeyPolicyAllows),
        ),
        (json!({"AWS": session}), caller(session), Some(&[]), None),
        (
            json!({"AWS": ["arn:aws:iam::111122223333:user/x", "arn:aws:iam::111122223333:user/app"]}),
            app(),
            Some(&[]),
            None,
        ),
        (
            json!({"Service": "s3.amazonaws.com"}),
            app(),
            None,
            Some(DenialReason::NoKeyPolicyAllows),
        ),
        (
            json!({"AWS": "arn:aws:iam::111122223333:root"}),
            caller("arn:aws:iam::111122223333:root"),
            Some(&[]),
            None,
        ),
    ];
    for (principal, who, identity, expected) in cases {
        let policy = key_policy(json!([allow(principal.clone())]));
        let decision = decide(&policy, identity, &[], &encrypt_by(who.clone()));
        assert_eq!(
            reason(&decision),
            expected,
            "{principal} for {}",
            who.principal_arn()
        );
    }
}

#[test]
fn explicit_deny_wins_wherever_it_is() {
    let deny_encrypt =
        json!({"Effect": "Deny", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*"});
    let policy = key_policy(json!([allow(json!("*")), deny_encrypt]));
    let decision = decide(&policy, None, &[], &encrypt_by(app()));
    assert_eq!(
        reason(&decision),
        Some(DenialReason::ExplicitDenyInKeyPolicy)
    );
    let decrypt = RequestContext::new("kms:Decrypt", KEY, app());
    assert!(decide(&policy, None, &[], &decrypt).is_allowed());

    let direct = key_policy(json!([allow(
        json!({"AWS": "arn:aws:iam::111122223333:user/app"})
    )]));
    let denying = [identity_policy(json!([
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:Enc*", "Resource": "*"}
    ]))];
    let decision = decide(&direct, Some(&denying), &[], &encrypt_by(app()));
    assert_eq!(
        reason(&decision),
        Some(DenialReason::ExplicitDenyInIdentityPolicy)
    );

    let grant = grant_for("arn:aws:iam::111122223333:user/app", &["Encrypt"], None);
    let policy = key_policy(json!([
        {"Effect": "Deny", "Principal": {"AWS": ACCOUNT}, "Action": "kms:*", "Resource": "*"}
    ]));
    let decision = decide(&policy, None, &[grant], &encrypt_by(app()));
    assert_eq!(
        reason(&decision),
        Some(DenialReason::ExplicitDenyInKeyPolicy)
    );
}

#[test]
fn not_action_not_resource_and_not_principal_invert_their_element() {
    let policy = key_policy(json!([{
        "Effect": "Allow", "Principal": "*", "NotAction": ["kms:ScheduleKeyDeletion", "kms:Put*"],
        "Resource": "*"
    }]));
    assert!(decide(&policy, None, &[], &encrypt_by(app())).is_allowed());
    let schedule = RequestContext::new("kms:ScheduleKeyDeletion", KEY, app());
    assert!(!decide(&policy, None, &[], &schedule).is_allowed());
    let put = RequestContext::new("kms:putkeypolicy", KEY, app());
    assert!(!decide(&policy, None, &[], &put).is_allowed());

    let policy = key_policy(json!([{
        "Effect": "Allow", "Principal": "*", "Action": "kms:*",
        "NotResource": "arn:aws:kms:*:111122223333:key/1234abcd-*"
    }]));
    assert!(!decide(&policy, None, &[], &encrypt_by(app())).is_allowed());

    let policy = key_policy(json!([
        allow(json!("*")),
        {"Effect": "Deny", "NotPrincipal": {"AWS": "arn:aws:iam::111122223333:user/app"},
         "Action": "kms:*", "Resource": "*"}
    ]));
    assert!(decide(&policy, None, &[], &encrypt_by(app())).is_allowed());
    let other = encrypt_by(caller("arn:aws:iam::111122223333:user/other"));
    assert_eq!(
        reason(&decide(&policy, None, &[], &other)),
        Some(DenialReason::ExplicitDenyInKeyPolicy)
    );
}

#[test]
fn identity_policies_complete_a_delegation_to_the_account() {
    let policy = key_policy(json!([allow(json!({"AWS": ACCOUNT}))]));
    let encrypt_only = [identity_policy(json!({
        "Effect": "Allow", "Action": ["kms:Encrypt", "kms:GenerateDataKey*"], "Resource": KEY
    }))];
    assert_eq!(
        decide(&policy, Some(&encrypt_only), &[], &encrypt_by(app())),
        Decision::Allow(Allowance::KeyPolicyAndIdentity)
    );
    let decrypt = RequestContext::new("kms:Decrypt", KEY, app());
    assert_eq!(
        reason(&decide(&policy, Some(&encrypt_only), &[], &decrypt)),
        Some(DenialReason::NoIdentityPolicyAllows)
    );
    let other_key = [identity_policy(json!({
        "Effect": "Allow", "Action": "kms:*", "Resource": "arn:aws:kms:*:*:key/other"
    }))];
    assert!(!decide(&policy, Some(&other_key), &[], &encrypt_by(app())).is_allowed());
}

#[test]
fn another_account_needs_the_key_policy_and_its_own_identity_policy() {
    let bob = || caller("arn:aws:iam::444455556666:user/bob");
    let allows_all = [identity_policy(
        json!({"Effect": "Allow", "Action": "kms:*", "Resource": "*"}),
    )];
    let default_policy = parse_key_policy(&default_key_policy(ACCOUNT)).unwrap();
    assert_eq!(
        reason(&decide(
            &default_policy,
            Some(&allows_all),
            &[],
            &encrypt_by(bob())
        )),
        Some(DenialReason::NoKeyPolicyAllows)
    );
    for principal in [
        json!({"AWS": OTHER}),
        json!({"AWS": "arn:aws:iam::444455556666:user/bob"}),
    ] {
        let policy = key_policy(json!([
            allow(json!({"AWS": ACCOUNT})),
            allow(principal.clone())
        ]));
        assert!(
            decide(&policy, Some(&allows_all), &[], &encrypt_by(bob())).is_allowed(),
            "{principal}"
        );
        assert_eq!(
            reason(&decide(&policy, None, &[], &encrypt_by(bob()))),
            Some(DenialReason::NoIdentityPolicyAllows),
            "{principal}: a credential without identity policies has nothing in another account"
        );
        assert_eq!(
            reason(&decide(&policy, Some(&[]), &[], &encrypt_by(bob()))),
            Some(DenialReason::NoIdentityPolicyAllows),
            "{principal}"
        );
    }
    let policy = key_policy(json!([allow(json!({"AWS": OTHER}))]));
    let root_b = caller("arn:aws:iam::444455556666:root");
    assert!(decide(&policy, None, &[], &encrypt_by(root_b)).is_allowed());
}

#[test]
fn denial_messages_have_aws_shapes() {
    let head = format!(
        "User: arn:aws:iam::111122223333:user/app is not authorized to perform: kms:Encrypt on resource: {KEY}"
    );
    let cases = [
        (
            DenialReason::ExplicitDenyInKeyPolicy,
            format!("{head} with an explicit deny in a resource-based policy"),
        ),
        (
            DenialReason::ExplicitDenyInIdentityPolicy,
            format!("{head} with an explicit deny in an identity-based policy"),
        ),
        (
            DenialReason::NoKeyPolicyAllows,
            format!("{head} because no resource-based policy allows the kms:Encrypt action"),
        ),
        (
            DenialReason::NoIdentityPolicyAllows,
            format!("{head} because no identity-based policy allows the kms:Encrypt action"),
        ),
    ];
    for (reason, message) in cases {
        let denial = Denial {
            reason,
            principal_arn: "arn:aws:iam::111122223333:user/app".to_owned(),
            action: "kms:Encrypt".to_owned(),
            resource: KEY.to_owned(),
        };
        assert_eq!(denial.message(), message);
        assert_eq!(denial.to_error(), KmsError::AccessDenied(message));
        assert_eq!(denial.to_error().code(), "AccessDeniedException");
    }
    let policy = key_policy(json!([allow(
        json!({"AWS": "arn:aws:iam::111122223333:user/x"})
    )]));
    let error = decide(&policy, None, &[], &encrypt_by(app()))
        .into_result()
        .unwrap_err();
    assert_eq!(
        error.message(),
        format!("{head} because no resource-based policy allows the kms:Encrypt action")
    );
}

#[test]
fn operations_on_no_key_are_decided_by_identity_alone() {
    let create_by = |who: CallerIdentity| RequestContext::new("kms:CreateKey", "*", who);
    let decide_create = |identity: Option<&[Arc<PolicyDocument>]>, who| {
        reason(&evaluate_without_key(identity, ACCOUNT, &create_by(who)))
    };
    assert_eq!(decide_create(None, app()), None);
    assert_eq!(
        decide_create(Some(&[]), caller("arn:aws:iam::111122223333:root")),
        None
    );
    assert_eq!(
        decide_create(Some(&[]), app()),
        Some(DenialReason::NoIdentityPolicyAllows)
    );
    assert_eq!(
        decide_create(None, caller("arn:aws:iam::444455556666:user/bob")),
        Some(DenialReason::NoIdentityPolicyAllows)
    );
    let create_only = [identity_policy(json!([
        {"Effect": "Allow", "Action": "kms:Create*", "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:CreateKey", "Resource": "*",
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    ]))];
    assert_eq!(
        decide_create(Some(&create_only), app().with_transport(None, true)),
        None
    );
    let decision = evaluate_without_key(Some(&create_only), ACCOUNT, &create_by(app()));
    assert_eq!(
        decision.into_result().unwrap_err().message(),
        "User: arn:aws:iam::111122223333:user/app is not authorized to perform: kms:CreateKey on resource: * with an explicit deny in an identity-based policy"
    );
}

// ---------------------------------------------------------------- default policy, lockout

#[test]
fn the_default_policy_delegates_to_the_account() {
    let text = default_key_policy(ACCOUNT);
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["Statement"][0]["Sid"], "Enable IAM User Permissions");
    assert_eq!(
        value["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::111122223333:root"
    );
    assert_eq!(value["Statement"][0]["Action"], "kms:*");
    let policy = parse_key_policy(&text).unwrap();
    assert!(decide(&policy, None, &[], &encrypt_by(app())).is_allowed());
    assert_eq!(
        reason(&decide(&policy, Some(&[]), &[], &encrypt_by(app()))),
        Some(DenialReason::NoIdentityPolicyAllows)
    );
}

#[test]
fn the_lockout_check_refuses_a_policy_that_shuts_the_caller_out() {
    let request = RequestContext::new("kms:CreateKey", KEY, app());
    let default = parse_key_policy(&default_key_policy(ACCOUNT)).unwrap();
    assert_eq!(check_lockout(&default, ACCOUNT, None, &request), Ok(()));
    let others_only = key_policy(json!([allow(
        json!({"AWS": "arn:aws:iam::111122223333:user/admin"})
    )]));
    assert_eq!(
        check_lockout(&others_only, ACCOUNT, None, &request),
        Err(KmsError::MalformedPolicyDocument(
            "The new key policy will not allow you to update the key policy in the future."
                .to_owned()
        ))
    );
    let no_put = key_policy(json!([{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:user/app"},
        "NotAction": "kms:PutKeyPolicy", "Resource": "*"
    }]));
    assert!(check_lockout(&no_put, ACCOUNT, None, &request).is_err());
    let identity_denies = [identity_policy(json!([
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:PutKeyPolicy", "Resource": "*"}
    ]))];
    assert!(check_lockout(&default, ACCOUNT, Some(&identity_denies), &request).is_err());
}

// ---------------------------------------------------------------- parser refusals

#[test]
fn the_parser_refuses_what_aws_refuses_with_its_messages() {
    let statement = |extra: Value| {
        let mut base =
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        json!({"Version": "2012-10-17", "Statement": [base]}).to_string()
    };
    let malformed = |m: &str| Err(KmsError::MalformedPolicyDocument(m.to_owned()));
    let invalid_principals = "Policy contains a statement with one or more invalid principals.";
    let cases: Vec<(String, Result<(), KmsError>)> = vec![
        ("{not json".to_owned(), malformed("Syntax errors in policy.")),
        ("[]".to_owned(), malformed("Syntax errors in policy.")),
        (r#"{"Version":"2012-10-18","Statement":[]}"#.to_owned(), malformed("The policy failed legacy parsing")),
        (r#"{"Version":"2012-10-17"}"#.to_owned(), malformed("Missing required field Statement.")),
        (r#"{"Version":"2012-10-17","Statement":[],"Extra":1}"#.to_owned(), malformed("Syntax errors in policy.")),
        (statement(json!({"Effect": null})), malformed("Missing required field Effect.")),
        (statement(json!({"Effect": "Permit"})), malformed("Invalid effect: Permit")),
        (statement(json!({"Action": null})), malformed("Policy statement must contain actions.")),
        (statement(json!({"NotAction": "kms:Decrypt"})), malformed("Syntax errors in policy.")),
        (statement(json!({"Action": "Encrypt"})), malformed("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")),
        (statement(json!({"Action": []})), malformed("Syntax errors in policy.")),
        (statement(json!({"Resource": null})), malformed("Policy statement must contain resources.")),
        (statement(json!({"Resource": "key/1"})), malformed("Resource key/1 must be in ARN format or \"*\".")),
        (statement(json!({"Principal": null})), malformed("Missing required field Principal.")),
        (statement(json!({"Principal": {"AWS": "bob"}})), malformed(invalid_principals)),
        (statement(json!({"Principal": {"AWS": "arn:aws:iam::111122223333:user/*"}})), malformed(invalid_principals)),
        (statement(json!({"Principal": {"AWS": "arn:aws:iam::1111:user/x"}})), malformed(invalid_principals)),
        (statement(json!({"Principal": {"AWS": "arn:aws:s3:::bucket"}})), malformed(invalid_principals)),
        (statement(json!({"Principal": {"AWS": "AIDACKCEVSQ6C2EXAMPLE"}})), malformed(invalid_principals)),
        (statement(json!({"Principal": {"Robot": "r2d2"}})), malformed(invalid_principals)),
        (statement(json!({"Principal": "bob"})), malformed(invalid_principals)),
        (statement(json!({"Principal": {"AWS": []}})), malformed(invalid_principals)),
        (statement(json!({"Condition": {"StringEqualz": {"kms:CallerAccount": "1"}}})), malformed("Invalid Condition type : StringEqualz.")),
        (statement(json!({"Condition": {"NullIfExists": {"kms:ViaService": "true"}}})), malformed("Invalid Condition type : NullIfExists.")),
        (statement(json!({"Condition": {"NumericEquals": {"kms:X": "seven"}}})), malformed("Syntax errors in policy.")),
        (statement(json!({"Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}})), malformed("Syntax errors in policy.")),
        (statement(json!({"Condition": {"DateLessThan": {"aws:CurrentTime": "tomorrow"}}})), malformed("Syntax errors in policy.")),
        (statement(json!({"Condition": {"Bool": {"aws:SecureTransport": "yes"}}})), malformed("Syntax errors in policy.")),
        (statement(json!({"Condition": {"StringEquals": {"kms:X": {"a": 1}}}})), malformed("Syntax errors in policy.")),
        (statement(json!({"Condition": {"StringEquals": {}}})), malformed("Syntax errors in policy.")),
        (
            json!({"Statement": [
                {"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
                {"Sid": "A", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}
            ]}).to_string(),
            malformed("Statement IDs (SID) in a single policy must be unique."),
        ),
        (
            format!(r#"{{"Statement":[],"Id":"{}"}}"#, "x".repeat(32_768)),
            Err(KmsError::Validation(
                "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to 32768".to_owned(),
            )),
        ),
        // Accepted: the forms AWS accepts.
        (statement(json!({})), Ok(())),
        (json!({"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}}).to_string(), Ok(())),
        (statement(json!({"Principal": {"AWS": ["*", ACCOUNT, "arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/a/b", "arn:aws:iam::111122223333:role/r", "arn:aws:sts::111122223333:assumed-role/r/s"], "Service": ["s3.amazonaws.com"]}})), Ok(())),
        (statement(json!({"Condition": {"ForAllValues:StringLikeIfExists": {"aws:TagKeys": ["a*", 1, true]}}})), Ok(())),
        (statement(json!({"Action": ["kms:Encrypt", "kms:Generate*", "*"], "Resource": ["*", "arn:aws:kms:*:111122223333:key/*"]})), Ok(())),
    ];
    for (text, expected) in cases {
        let got = parse_key_policy(&text).map(|_| ());
        assert_eq!(got, expected, "{}", &text[..text.len().min(200)]);
    }
}

#[test]
fn identity_policies_refuse_principals_and_have_their_own_size_limit() {
    let with_principal = json!({"Statement": [allow(json!("*"))]}).to_string();
    assert_eq!(
        parse_identity_policy(&with_principal).map(|_| ()),
        Err(KmsError::MalformedPolicyDocument(
            "Policy document should not specify a principal.".to_owned()
        ))
    );
    let large = format!(
        r#"{{"Statement":{{"Effect":"Allow","Action":"kms:*","Resource":"*"}},"Id":"{}"}}"#,
        "x".repeat(6_144)
    );
    assert_eq!(
        parse_identity_policy(&large).map(|_| ()),
        Err(KmsError::LimitExceeded(
            "Cannot exceed quota for PolicySize: 6144".to_owned()
        ))
    );
    let spaced = format!(
        r#"{{"Statement":{{"Effect":"Allow","Action":"kms:*","Resource":"*"}}{}}}"#,
        " ".repeat(10_000)
    );
    assert!(
        parse_identity_policy(&spaced).is_ok(),
        "whitespace does not count"
    );
}

#[test]
fn policy_variables_are_literal_in_2008_documents() {
    let doc = |version: &str| {
        parse_key_policy(&json!({"Version": version, "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*",
            "Condition": {"StringEquals": {"kms:EncryptionContext:team": "${aws:PrincipalTag/team}"}}
        }]}).to_string())
        .unwrap()
    };
    let tagged = app().with_tags(BTreeMap::from([("team".to_owned(), "blue".to_owned())]));
    let context = BTreeMap::from([("team".to_owned(), "blue".to_owned())]);
    let request = encrypt_by(tagged).with_encryption_context(&context);
    assert!(decide(&doc("2012-10-17"), None, &[], &request).is_allowed());
    assert!(!decide(&doc("2008-10-17"), None, &[], &request).is_allowed());
}

// ---------------------------------------------------------------- grants

fn grant_for(grantee: &str, operations: &[&str], constraints: Option<GrantConstraints>) -> Grant {
    let operations: Vec<String> = operations.iter().map(|op| (*op).to_owned()).collect();
    Grant {
        grant_id: "g-1".to_owned(),
        key_arn: KEY.to_owned(),
        key_account: ACCOUNT.to_owned(),
        request: GrantRequest::validate(
            grantee,
            Some("arn:aws:iam::111122223333:user/retirer"),
            &operations,
            constraints,
            Some("n"),
        )
        .unwrap(),
    }
}

fn pairs(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn grants_allow_their_operations_to_their_grantee_only() {
    let nobody = key_policy(json!([allow(
        json!({"AWS": "arn:aws:iam::111122223333:user/admin"})
    )]));
    let bob = caller("arn:aws:iam::444455556666:user/bob");
    let grant = grant_for(bob.principal_arn(), &["Encrypt", "DescribeKey"], None);
    assert_eq!(
        decide(
            &nobody,
            None,
            std::slice::from_ref(&grant),
            &encrypt_by(bob.clone())
        ),
        Decision::Allow(Allowance::Grant {
            grant_id: "g-1".to_owned()
        })
    );
    let decrypt = RequestContext::new("kms:Decrypt", KEY, bob);
    assert!(!decide(&nobody, None, std::slice::from_ref(&grant), &decrypt).is_allowed());
    assert!(!decide(&nobody, None, &[grant], &encrypt_by(app())).is_allowed());

    let role_grant = grant_for("arn:aws:iam::111122223333:role/dev", &["Decrypt"], None);
    let session = caller("arn:aws:sts::111122223333:assumed-role/dev/s");
    assert!(role_grant.allows(&RequestContext::new("kms:Decrypt", KEY, session)));
}

#[test]
fn grant_constraints_match_the_encryption_context_as_aws_documents() {
    let equals = GrantConstraints {
        encryption_context_equals: Some(pairs(&[("Dept", "IT")])),
        encryption_context_subset: None,
    };
    let subset = GrantConstraints {
        encryption_context_equals: None,
        encryption_context_subset: Some(pairs(&[("Dept", "IT")])),
    };
    let cases: Vec<ConstraintCase> = vec![
        (&equals, "kms:Decrypt", vec![("Dept", "IT")], true),
        (&equals, "kms:Decrypt", vec![("dept", "IT")], true),
        (&equals, "kms:Decrypt", vec![("Dept", "it")], false),
        (
            &equals,
            "kms:Decrypt",
            vec![("Dept", "IT"), ("Team", "x")],
            false,
        ),
        (&equals, "kms:Decrypt", vec![], false),
        (
            &subset,
            "kms:GenerateDataKey",
            vec![("Dept", "IT"), ("Team", "x")],
            true,
        ),
        (&subset, "kms:GenerateDataKey", vec![("Team", "x")], false),
        (&subset, "kms:DescribeKey", vec![], true),
        (&subset, "kms:RetireGrant", vec![], true),
    ];
    for (constraints, action, context, expected) in cases {
        let grant = grant_for(
            "arn:aws:iam::111122223333:user/app",
            &["Decrypt", "GenerateDataKey", "DescribeKey", "RetireGrant"],
            Some(constraints.clone()),
        );
        let request =
            RequestContext::new(action, KEY, app()).with_encryption_context(&pairs(&context));
        assert_eq!(
            grant.allows(&request),
            expected,
            "{action} {context:?} {constraints:?}"
        );
    }
}

#[test]
fn a_grant_with_create_grant_delegates_no_more_than_it_has() {
    let subset = GrantConstraints {
        encryption_context_equals: None,
        encryption_context_subset: Some(pairs(&[("Dept", "IT")])),
    };
    let parent = grant_for(
        "arn:aws:iam::111122223333:user/app",
        &["CreateGrant", "Decrypt"],
        Some(subset.clone()),
    );
    let asking = |ops: &[&str], constraints: Option<GrantConstraints>| {
        RequestContext::new("kms:CreateGrant", KEY, app())
            .with_grant_request(ops, "arn:aws:iam::111122223333:user/x", None)
            .with_requested_constraints(constraints)
    };
    let stricter = GrantConstraints {
        encryption_context_equals: Some(pairs(&[("Dept", "IT"), ("Team", "a")])),
        encryption_context_subset: None,
    };
    assert!(parent.allows(&asking(&["Decrypt"], Some(subset))));
    assert!(parent.allows(&asking(&["Decrypt"], Some(stricter))));
    assert!(!parent.allows(&asking(&["Decrypt"], None)));
    assert!(!parent.allows(&asking(
        &["Decrypt", "Encrypt"],
        Some(GrantConstraints {
            encryption_context_equals: None,
            encryption_context_subset: Some(pairs(&[("Dept", "IT")])),
        })
    )));
}

#[test]
fn who_may_retire_a_grant_follows_aws() {
    let grantee = "arn:aws:iam::444455556666:user/bob";
    let without_retire = grant_for(grantee, &["Encrypt"], None);
    let with_retire = grant_for(grantee, &["Encrypt", "RetireGrant"], None);
    let retirer = caller("arn:aws:iam::111122223333:user/retirer");
    let owner_root = caller("arn:aws:iam::111122223333:root");
    let other_root = caller("arn:aws:iam::444455556666:root");
    assert!(without_retire.may_retire(&retirer));
    assert!(without_retire.may_retire(&owner_root));
    assert!(!without_retire.may_retire(&caller(grantee)));
    assert!(with_retire.may_retire(&caller(grantee)));
    assert!(!with_retire.may_retire(&other_root));
    assert!(!with_retire.may_retire(&app()));
}

#[test]
fn create_grant_parameters_are_validated_as_aws_does() {
    let grantee = "arn:aws:iam::111122223333:user/app";
    let ops = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let validate = |grantee: &str, operations: &[String], constraints, name| {
        GrantRequest::validate(grantee, None, operations, constraints, name).map(|_| ())
    };
    assert_eq!(
        validate(
            grantee,
            &ops(&["Encrypt", "Decrypt"]),
            None,
            Some("my-grant")
        ),
        Ok(())
    );
    assert_eq!(validate(ACCOUNT, &ops(&["Encrypt"]), None, None), Ok(()));
    assert_eq!(
        validate("s3.amazonaws.com", &ops(&["Encrypt"]), None, None),
        Ok(())
    );
    let error = validate(grantee, &ops(&["Encrypt", "Explode"]), None, None).unwrap_err();
    assert!(error.message().starts_with(
        "1 validation error detected: Value '[Encrypt, Explode]' at 'operations' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [Decrypt, Encrypt,"
    ), "{error:?}");
    assert_eq!(
        validate(grantee, &[], None, None).unwrap_err().code(),
        "ValidationException"
    );
    assert_eq!(
        validate("bob", &ops(&["Encrypt"]), None, None),
        Err(KmsError::Validation("Invalid principal: bob".to_owned()))
    );
    assert_eq!(
        validate("*", &ops(&["Encrypt"]), None, None)
            .unwrap_err()
            .code(),
        "ValidationException"
    );
    assert_eq!(
        validate("a b", &ops(&["Encrypt"]), None, None)
            .unwrap_err()
            .code(),
        "ValidationException"
    );
    assert_eq!(
        validate(grantee, &ops(&["Encrypt"]), None, Some("bad name"))
            .unwrap_err()
            .code(),
        "ValidationException"
    );
    let constraint = |n: usize, value_len: usize| GrantConstraints {
        encryption_context_equals: None,
        encryption_context_subset: Some(
            (0..n)
                .map(|i| (format!("k{i}"), "v".repeat(value_len)))
                .collect(),
        ),
    };
    assert_eq!(
        validate(
            grantee,
            &ops(&["Decrypt", "DescribeKey"]),
            Some(constraint(8, 384)),
            None
        ),
        Ok(())
    );
    assert!(validate(grantee, &ops(&["Decrypt"]), Some(constraint(9, 1)), None).is_err());
    assert!(validate(grantee, &ops(&["Decrypt"]), Some(constraint(1, 385)), None).is_err());
    assert_eq!(
        validate(grantee, &ops(&["Decrypt", "Sign", "GenerateMac"]), Some(constraint(1, 1)), None),
        Err(KmsError::Validation(
            "Encryption context grant constraints cannot be used with the operations: Sign, GenerateMac.".to_owned()
        ))
    );
    let tokens = |n: usize| vec!["t".to_owned(); n];
    assert_eq!(grant::validate_grant_tokens(&tokens(10)), Ok(()));
    assert!(grant::validate_grant_tokens(&tokens(11)).is_err());
    assert!(grant::validate_grant_tokens(&[String::new()]).is_err());
    assert!(grant::check_grant_quota(49_999, KEY).is_ok());
    assert_eq!(
        grant::check_grant_quota(50_000, KEY).unwrap_err().code(),
        "LimitExceededException"
    );
}

#[test]
fn a_named_grant_with_the_same_parameters_is_a_repeat() {
    let grant = grant_for(
        "arn:aws:iam::111122223333:user/app",
        &["Encrypt", "Decrypt"],
        None,
    );
    let same = GrantRequest::validate(
        "arn:aws:iam::111122223333:user/app",
        Some("arn:aws:iam::111122223333:user/retirer"),
        &[
            "Decrypt".to_owned(),
            "Encrypt".to_owned(),
            "Decrypt".to_owned(),
        ],
        None,
        Some("n"),
    )
    .unwrap();
    assert!(grant.is_repeated_by(&same));
    let more = GrantRequest {
        operations: vec![GrantOperation::Encrypt],
        ..same
    };
    assert!(!grant.is_repeated_by(&more));
}

#[test]
fn filling_only_the_condition_keys_policies_read_decides_alike() {
    let app_arn = "arn:aws:iam::111122223333:user/app";
    let policies = [
        key_policy(json!([allow(
            json!({"AWS": format!("arn:aws:iam::{ACCOUNT}:root")})
        )])),
        key_policy(json!([allow(json!({"AWS": app_arn}))])),
        key_policy(json!([allow(json!({"AWS": OTHER}))])),
        key_policy(json!([
            allow(json!("*")),
            {"Effect": "Deny", "Principal": {"AWS": app_arn}, "Action": "kms:Decrypt",
             "Resource": "*"}
        ])),
        key_policy(json!([{
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*",
            "Condition": {
                "StringEquals": {"kms:CallerAccount": ACCOUNT,
                                 "kms:EncryptionContext:Purpose": "test"},
                "Bool": {"aws:SecureTransport": "true"}
            }
        }])),
        key_policy(json!([{
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*",
            "Condition": {"StringEquals": {
                "kms:EncryptionContext:team": "${aws:PrincipalTag/team}"
            }}
        }])),
        key_policy(json!([{
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*",
            "Condition": {"DateLessThan": {"aws:CurrentTime": "2000-01-01T00:00:00Z"}}
        }])),
    ];
    let identities = [
        None,
        Some(vec![identity_policy(
            json!([{"Effect": "Allow", "Action": "kms:Encrypt", "Resource": KEY}]),
        )]),
        Some(vec![identity_policy(json!([{
            "Effect": "Deny", "Action": "kms:*", "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:ResourceTag/stage": "prod"}}
        }]))]),
    ];
    let callers = [
        caller(&format!("arn:aws:iam::{ACCOUNT}:root")),
        app().with_tags([("team".to_owned(), "blue".to_owned())].into()),
        caller("arn:aws:iam::111122223333:role/ops")
            .with_transport(Some("10.0.0.1".parse().unwrap()), true),
        caller("arn:aws:sts::111122223333:assumed-role/ops/session"),
        caller(&format!("arn:aws:iam::{OTHER}:user/partner")),
    ];
    let contexts: [BTreeMap<String, String>; 2] = [
        [("purpose".to_owned(), "test".to_owned())].into(),
        [("team".to_owned(), "blue".to_owned())].into(),
    ];
    let tags: BTreeMap<String, String> = [("Stage".to_owned(), "prod".to_owned())].into();
    let (mut compared, mut allowed) = (0, 0);
    for policy in &policies {
        for identity in &identities {
            let mut names = policy.condition_keys().as_ref().clone();
            for document in identity.iter().flatten() {
                names.extend(document.condition_keys().iter().cloned());
            }
            let names = Arc::new(names);
            for who in &callers {
                for context in &contexts {
                    for action in ["kms:Encrypt", "kms:Decrypt", "kms:ScheduleKeyDeletion"] {
                        let build = |request: RequestContext| {
                            let mut request = request
                                .with_current_time(std::time::SystemTime::now())
                                .with_resource_tags(&tags)
                                .with_encryption_context(context);
                            request.set(keys::KEY_SPEC, "SYMMETRIC_DEFAULT");
                            request
                        };
                        let full = build(RequestContext::new(action, KEY, who.clone()));
                        let only = build(RequestContext::naming_only(
                            action,
                            KEY,
                            who.clone(),
                            names.clone(),
                        ));
                        let identity = identity.as_deref();
                        let decision = decide(policy, identity, &[], &full);
                        assert_eq!(
                            format!("{decision:?}"),
                            format!("{:?}", decide(policy, identity, &[], &only)),
                            "{action} by {who:?} with {context:?}"
                        );
                        compared += 1;
                        allowed += usize::from(matches!(decision, Decision::Allow(_)));
                    }
                }
            }
        }
    }
    assert_eq!(compared, 7 * 3 * 5 * 2 * 3);
    // Both outcomes occur, so the comparison is not of refusals alone.
    assert!(
        allowed > 0 && allowed < compared,
        "{allowed} of {compared} allowed"
    );
    assert!(!policies[0].has_conditions());
    assert_eq!(
        policies[5].condition_keys().iter().collect::<Vec<_>>(),
        ["aws:principaltag/team", "kms:encryptioncontext:team"]
    );
}
