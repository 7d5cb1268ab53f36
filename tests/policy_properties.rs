//! Property tests of the policy evaluator: a Deny statement added to any policy never turns
//! a refusal into an allow, and parsing and evaluation never panic, whatever the JSON.
//! Pure: no HSM, no store.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use hsm_kms::policy::condition::Condition;
use hsm_kms::policy::parse::parse_value;
use hsm_kms::policy::{
    CallerIdentity, Decision, Grant, GrantConstraints, GrantRequest, Policies, PolicyDocument,
    PolicyKind, RequestContext, evaluate, parse_identity_policy, parse_key_policy,
};

const ACCOUNT: &str = "111122223333";
const KEY: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

const CALLERS: [&str; 6] = [
    "arn:aws:iam::111122223333:root",
    "arn:aws:iam::111122223333:user/app",
    "arn:aws:iam::111122223333:user/admin",
    "arn:aws:sts::111122223333:assumed-role/dev/s1",
    "arn:aws:iam::444455556666:user/bob",
    "arn:aws:iam::444455556666:root",
];
const ACTIONS: [&str; 6] = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "kms:PutKeyPolicy",
    "kms:CreateGrant",
    "kms:DescribeKey",
];

fn principal() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("*")),
        Just(json!({"AWS": ACCOUNT})),
        Just(json!({"AWS": "arn:aws:iam::111122223333:root"})),
        Just(json!({"AWS": "444455556666"})),
        Just(json!({"AWS": "arn:aws:iam::111122223333:user/app"})),
        Just(json!({"AWS": "arn:aws:iam::111122223333:role/dev"})),
        Just(
            json!({"AWS": ["arn:aws:iam::444455556666:user/bob", "arn:aws:iam::111122223333:user/admin"]})
        ),
        Just(json!({"Service": "s3.amazonaws.com"})),
    ]
}

fn action() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("kms:*")),
        Just(json!("*")),
        Just(json!("kms:Encrypt")),
        Just(json!(["kms:Decrypt", "kms:Generate*"])),
        Just(json!("kms:Put*")),
        Just(json!("kms:?reateGrant")),
    ]
}

fn resource() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("*")),
        Just(json!(KEY)),
        Just(json!("arn:aws:kms:*:111122223333:key/*")),
        Just(json!("arn:aws:kms:*:*:key/other")),
    ]
}

fn condition() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(
            json!({"StringEquals": {"kms:CallerAccount": ACCOUNT}})
        )),
        Just(Some(
            json!({"StringNotEquals": {"kms:EncryptionContext:dept": "IT"}})
        )),
        Just(Some(
            json!({"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "d*"}})
        )),
        Just(Some(
            json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["dept"]}})
        )),
        Just(Some(json!({"Bool": {"aws:SecureTransport": "true"}}))),
        Just(Some(json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))),
        Just(Some(json!({"Null": {"kms:ViaService": "false"}}))),
        Just(Some(
            json!({"StringEqualsIfExists": {"kms:ViaService": "gw"}})
        )),
        Just(Some(
            json!({"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}})
        )),
    ]
}

fn statement(key_policy: bool, effect: &'static str) -> impl Strategy<Value = Value> {
    (
        principal(),
        action(),
        resource(),
        condition(),
        any::<bool>(),
    )
        .prop_map(
            move |(principal, action, resource, condition, negate_action)| {
                let mut s = Map::new();
                s.insert("Effect".into(), json!(effect));
                if key_policy {
                    s.insert("Principal".into(), principal);
                }
                let action_field = if negate_action { "NotAction" } else { "Action" };
                s.insert(action_field.into(), action);
                s.insert("Resource".into(), resource);
                if let Some(condition) = condition {
                    s.insert("Condition".into(), condition);
                }
                Value::Object(s)
            },
        )
}

fn any_effect_statement(key_policy: bool) -> impl Strategy<Value = Value> {
    prop_oneof![
        statement(key_policy, "Allow"),
        statement(key_policy, "Deny")
    ]
}

/// A request: caller, action, encryption context, transport, via service.
fn request() -> impl Strategy<Value = RequestContext> {
    (
        0..CALLERS.len(),
        0..ACTIONS.len(),
        proptest::option::of(btree_map("[a-zA-Z]{1,4}", "[a-zA-Z]{0,3}", 0..3)),
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some("10.1.2.3")),
            Just(Some("192.168.1.1"))
        ],
        prop_oneof![Just(None), Just(Some("gw"))],
    )
        .prop_map(|(who, action, context, secure, ip, via)| {
            let arn = CALLERS[who];
            let account = arn.split(':').nth(4).unwrap_or_default();
            let caller = CallerIdentity::new(arn, account)
                .with_transport(ip.and_then(|ip| ip.parse().ok()), secure)
                .with_via_service(via.map(str::to_owned));
            let mut request = RequestContext::new(ACTIONS[action], KEY, caller).with_current_time(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            );
            if let Some(context) = context {
                request = request.with_encryption_context(&context);
            }
            if ACTIONS[action] == "kms:CreateGrant" {
                request = request.with_grant_request(
                    &["Decrypt"],
                    "arn:aws:iam::111122223333:user/x",
                    None,
                );
            }
            request
        })
}

fn grants() -> impl Strategy<Value = Vec<Grant>> {
    vec((0..CALLERS.len(), any::<bool>(), any::<bool>()), 0..3).prop_map(|specs| {
        specs
            .into_iter()
            .filter_map(|(who, constrained, wide)| {
                let operations: Vec<String> = if wide {
                    vec![
                        "Encrypt".into(),
                        "Decrypt".into(),
                        "CreateGrant".into(),
                        "GenerateDataKey".into(),
                    ]
                } else {
                    vec!["DescribeKey".into()]
                };
                let constraints = constrained.then(|| GrantConstraints {
                    encryption_context_equals: None,
                    encryption_context_subset: Some(BTreeMap::from([(
                        "dept".to_owned(),
                        "IT".to_owned(),
                    )])),
                });
                let grantee = CALLERS[who]
                    .replace("sts", "iam")
                    .replace("assumed-role/dev/s1", "role/dev");
                let request =
                    GrantRequest::validate(&grantee, None, &operations, constraints, None).ok()?;
                Some(Grant {
                    grant_id: format!("g{who}"),
                    key_arn: KEY.to_owned(),
                    key_account: ACCOUNT.to_owned(),
                    request,
                })
            })
            .collect()
    })
}

fn document(statements: Vec<Value>) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

fn decide(
    key_policy: &PolicyDocument,
    identity: Option<&[Arc<PolicyDocument>]>,
    grants: &[Grant],
    request: &RequestContext,
) -> Decision {
    evaluate(
        &Policies {
            key_policy,
            key_account: ACCOUNT,
            identity,
            grants,
        },
        request,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_deny_never_turns_a_refusal_into_an_allow(
        key_statements in vec(any_effect_statement(true), 0..5),
        identity_statements in proptest::option::of(vec(any_effect_statement(false), 0..4)),
        grants in grants(),
        extra_key_deny in statement(true, "Deny"),
        extra_identity_deny in statement(false, "Deny"),
        deny_in_key_policy in any::<bool>(),
        request in request(),
    ) {
        let key_policy = parse_key_policy(&document(key_statements.clone())).unwrap();
        let identity: Option<Vec<Arc<PolicyDocument>>> = identity_statements.clone().map(|statements| {
            vec![Arc::new(parse_identity_policy(&document(statements)).unwrap())]
        });
        let before = decide(&key_policy, identity.as_deref(), &grants, &request);

        let (key_after, identity_after) = if deny_in_key_policy {
            let mut statements = key_statements;
            statements.push(extra_key_deny);
            (parse_key_policy(&document(statements)).unwrap(), identity)
        } else {
            let mut statements = identity_statements.unwrap_or_default();
            statements.push(extra_identity_deny);
            let denying = Arc::new(parse_identity_policy(&document(statements)).unwrap());
            (key_policy, Some(vec![denying]))
        };
        let after = decide(&key_after, identity_after.as_deref(), &grants, &request);
        prop_assert!(
            before.is_allowed() || !after.is_allowed(),
            "refused before, allowed after: {:?}",
            after
        );
    }

    #[test]
    fn parsing_and_evaluation_never_panic_on_any_json(
        value in json_value(),
        key_kind in any::<bool>(),
        request in request(),
    ) {
        let kind = if key_kind { PolicyKind::Key } else { PolicyKind::Identity };
        if let Ok(document) = parse_value(&value, kind) {
            let _ = decide(&document, None, &[], &request);
            let _ = decide(
                &parse_key_policy(&document_text_star()).unwrap(),
                Some(&[Arc::new(document)]),
                &[],
                &request,
            );
        }
        let _ = parse_key_policy(&value.to_string());
    }

    #[test]
    fn any_json_in_a_statement_never_panics(
        overrides in statement_overrides(),
        key_kind in any::<bool>(),
        request in request(),
    ) {
        let kind = if key_kind { PolicyKind::Key } else { PolicyKind::Identity };
        if let Ok(document) = parse_value(&overridden_policy(overrides), kind) {
            let _ = decide(&document, None, &[], &request);
        }
    }

    #[test]
    fn any_json_as_a_condition_never_panics(
        operator in operator_name(),
        key in prop_oneof![Just("kms:CallerAccount".to_owned()), Just("kms:EncryptionContextKeys".to_owned()), "[a-zA-Z:/]{0,12}"],
        values in json_value(),
        request in request(),
    ) {
        if let Ok(condition) = Condition::parse(&operator, &key, &values, true) {
            let _ = condition.holds(&request);
        }
        let statement = json!({"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*",
            "Condition": {operator: {key: values}}});
        if let Ok(policy) = parse_key_policy(&document(vec![statement])) {
            let _ = decide(&policy, None, &[], &request);
        }
    }

    #[test]
    fn any_text_is_refused_or_parsed_without_panic(text in ".{0,200}") {
        let _ = parse_key_policy(&text);
        let _ = parse_identity_policy(&text);
    }
}

/// Elements of a statement replaced by arbitrary JSON (`null` removes the element).
fn statement_overrides() -> impl Strategy<Value = Vec<(String, Value)>> {
    let element = proptest::sample::select(
        &[
            "Sid",
            "Effect",
            "Principal",
            "NotPrincipal",
            "Action",
            "NotAction",
            "Resource",
            "NotResource",
            "Condition",
        ][..],
    );
    vec((element.prop_map(str::to_owned), json_value()), 0..4)
}

/// A valid statement (principal only in key policies is the parser's business) with some
/// elements replaced.
fn overridden_policy(overrides: Vec<(String, Value)>) -> Value {
    let mut statement =
        json!({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"});
    if let Some(fields) = statement.as_object_mut() {
        for (element, value) in overrides {
            if value.is_null() {
                fields.remove(&element);
            } else {
                fields.insert(element, value);
            }
        }
    }
    json!({"Version": "2012-10-17", "Statement": [statement]})
}

/// The generators are not vacuous: some of their documents parse and reach the evaluator,
/// some are refused.
#[test]
fn the_json_generators_reach_the_evaluator_and_the_refusals() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = statement_overrides();
    let (mut parsed, mut refused) = (0, 0);
    for _ in 0..500 {
        let overrides = strategy.new_tree(&mut runner).unwrap().current();
        match parse_value(&overridden_policy(overrides), PolicyKind::Key) {
            Ok(_) => parsed += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(
        parsed >= 25 && refused >= 25,
        "parsed {parsed}, refused {refused}"
    );
}

fn document_text_star() -> String {
    document(vec![
        json!({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}),
    ])
}

fn operator_name() -> impl Strategy<Value = String> {
    const TESTS: [&str; 28] = [
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
        "ArnEquals",
        "ArnNotEquals",
        "ArnLike",
        "ArnNotLike",
        "NumericEquals",
        "NumericNotEquals",
        "NumericLessThan",
        "NumericLessThanEquals",
        "NumericGreaterThan",
        "NumericGreaterThanEquals",
        "DateEquals",
        "DateNotEquals",
        "DateLessThan",
        "DateLessThanEquals",
        "DateGreaterThan",
        "DateGreaterThanEquals",
        "Bool",
        "BinaryEquals",
        "IpAddress",
        "NotIpAddress",
        "Null",
        "Bogus",
    ];
    (
        proptest::sample::select(&TESTS[..]),
        prop_oneof![Just(""), Just("ForAnyValue:"), Just("ForAllValues:")],
        any::<bool>(),
    )
        .prop_map(|(test, set, if_exists)| {
            format!("{set}{test}{}", if if_exists { "IfExists" } else { "" })
        })
}

/// Arbitrary JSON, biased towards the names and values of policy documents so that many
/// cases get past the first checks of the parser.
fn json_value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        Just("2012-10-17".to_owned()),
        Just("Allow".to_owned()),
        Just("Deny".to_owned()),
        Just("*".to_owned()),
        Just("kms:*".to_owned()),
        Just("kms:Encrypt".to_owned()),
        Just(ACCOUNT.to_owned()),
        Just(KEY.to_owned()),
        Just("arn:aws:iam::111122223333:user/app".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("true".to_owned()),
        Just("${aws:PrincipalArn}".to_owned()),
        Just("${".to_owned()),
        ".{0,10}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        text.clone().prop_map(Value::String),
    ];
    let name = prop_oneof![
        Just("Version".to_owned()),
        Just("Statement".to_owned()),
        Just("Sid".to_owned()),
        Just("Effect".to_owned()),
        Just("Principal".to_owned()),
        Just("NotPrincipal".to_owned()),
        Just("AWS".to_owned()),
        Just("Service".to_owned()),
        Just("Action".to_owned()),
        Just("NotAction".to_owned()),
        Just("Resource".to_owned()),
        Just("NotResource".to_owned()),
        Just("Condition".to_owned()),
        Just("StringEquals".to_owned()),
        Just("ForAllValues:StringLike".to_owned()),
        Just("NumericLessThan".to_owned()),
        Just("IpAddress".to_owned()),
        Just("Null".to_owned()),
        Just("kms:CallerAccount".to_owned()),
        Just("aws:SourceIp".to_owned()),
        text,
    ];
    leaf.prop_recursive(5, 96, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(name.clone(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}
