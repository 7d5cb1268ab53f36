use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const KEY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// The three patterns issue 4 requires to work exactly as written.
const USE_OF_UNUSABLE_KEY: &str = r#"{($.eventSource=kms.amazonaws.com) && (($.errorCode="KMSInvalidStateException") || ($.errorCode="DisabledException"))}"#;
const ANY_KMS_EXCEPTION: &str =
    r#"{($.eventSource=kms.amazonaws.com) && (($.errorCode="*Exception"))}"#;
const DISABLE_OR_DELETE: &str = r#"{($.eventSource=kms.amazonaws.com) && (($.eventName="DisableKey") || ($.eventName="ScheduleKeyDeletion"))}"#;

/// A CloudTrail record of a KMS call, with the fields every record has.
fn record(event_name: &str, read_only: bool) -> Value {
    json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLEPRINCIPAL",
            "arn": "arn:aws:iam::111122223333:user/alice",
            "accountId": "111122223333",
            "userName": "alice"
        },
        "eventTime": "2024-05-01T12:00:00Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": event_name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "192.0.2.10",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": { "keyId": KEY_ARN },
        "responseElements": null,
        "requestID": "7e4c5b4e-5d3a-4f4b-9c61-0a2a4f0f5c11",
        "eventID": "0b5f3c2e-8d51-4c1e-a3d0-9b8e7f6a5d4c",
        "readOnly": read_only,
        "resources": [
            { "accountId": "111122223333", "type": "AWS::KMS::Key", "ARN": KEY_ARN }
        ],
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": "111122223333",
        "eventCategory": "Management",
        "additionalEventData": { "cluster": "prod", "members": ["hsm-a", "hsm-b"] }
    })
}

fn failed(mut event: Value, code: &str, message: &str) -> Value {
    event["errorCode"] = json!(code);
    event["errorMessage"] = json!(message);
    event
}

/// Encrypt with a disabled key.
fn encrypt_with_disabled_key() -> Value {
    let mut event = record("Encrypt", true);
    event["requestParameters"]["encryptionAlgorithm"] = json!("SYMMETRIC_DEFAULT");
    event["requestParameters"]["encryptionContext"] =
        json!({ "aws:s3:arn": "arn:aws:s3:::bucket/object" });
    failed(
        event,
        "DisabledException",
        &format!("{KEY_ARN} is disabled."),
    )
}

/// Decrypt with a key pending deletion.
fn decrypt_with_pending_deletion_key() -> Value {
    failed(
        record("Decrypt", true),
        "KMSInvalidStateException",
        &format!("{KEY_ARN} is pending deletion."),
    )
}

/// GenerateDataKey of a key that does not exist.
fn generate_data_key_not_found() -> Value {
    let mut event = record("GenerateDataKey", true);
    event["requestParameters"]["numberOfBytes"] = json!(32);
    failed(event, "NotFoundException", "Invalid keyId alias/missing")
}

/// A successful DisableKey.
fn disable_key() -> Value {
    record("DisableKey", false)
}

/// A successful ScheduleKeyDeletion.
fn schedule_key_deletion() -> Value {
    let mut event = record("ScheduleKeyDeletion", false);
    event["requestParameters"]["pendingWindowInDays"] = json!(7);
    event["responseElements"] = json!({
        "keyId": KEY_ARN,
        "keyState": "PendingDeletion",
        "deletionDate": "May 8, 2024, 12:00:00 AM",
        "pendingWindowInDays": 7
    });
    event
}

/// A successful DisableKeyRotation: its name starts like DisableKey's.
fn disable_key_rotation() -> Value {
    record("DisableKeyRotation", false)
}

/// A failed call to another service, with a KMS-like error code.
fn other_service_failure() -> Value {
    let mut event = failed(record("GetObject", true), "DisabledException", "nope");
    event["eventSource"] = json!("s3.amazonaws.com");
    event
}

fn pattern(text: &str) -> FilterPattern {
    FilterPattern::parse(text).unwrap_or_else(|e| panic!("{e}\n{}", e.diagnostic(text)))
}

fn matches(text: &str, event: &Value) -> bool {
    pattern(text).matches(event)
}

#[test]
fn use_of_a_disabled_or_pending_deletion_key() {
    let p = pattern(USE_OF_UNUSABLE_KEY);
    assert!(p.matches(&encrypt_with_disabled_key()));
    assert!(p.matches(&decrypt_with_pending_deletion_key()));
    assert!(!p.matches(&generate_data_key_not_found()));
    assert!(!p.matches(&disable_key()));
    assert!(!p.matches(&schedule_key_deletion()));
    assert!(!p.matches(&other_service_failure()));
}

#[test]
fn any_kms_exception() {
    let p = pattern(ANY_KMS_EXCEPTION);
    assert!(p.matches(&encrypt_with_disabled_key()));
    assert!(p.matches(&decrypt_with_pending_deletion_key()));
    assert!(p.matches(&generate_data_key_not_found()));
    assert!(!p.matches(&disable_key()));
    assert!(!p.matches(&other_service_failure()));
    let access_denied = failed(record("Encrypt", true), "AccessDenied", "denied");
    assert!(!p.matches(&access_denied));
}

#[test]
fn disable_key_or_schedule_key_deletion() {
    let p = pattern(DISABLE_OR_DELETE);
    assert!(p.matches(&disable_key()));
    assert!(p.matches(&schedule_key_deletion()));
    assert!(!p.matches(&disable_key_rotation()));
    assert!(!p.matches(&encrypt_with_disabled_key()));
    let failed_disable = failed(disable_key(), "NotFoundException", "Invalid keyId x");
    assert!(p.matches(&failed_disable));
    let mut elsewhere = disable_key();
    elsewhere["eventSource"] = json!("kms.example.com");
    assert!(!p.matches(&elsewhere));
}

#[test]
fn string_equality_is_exact_and_case_sensitive() {
    let event = disable_key();
    assert!(matches(r#"{ $.eventName = "DisableKey" }"#, &event));
    assert!(matches("{ $.eventName = DisableKey }", &event));
    assert!(!matches(r#"{ $.eventName = "disablekey" }"#, &event));
    assert!(!matches(r#"{ $.eventName = "DisableKe" }"#, &event));
    assert!(!matches(r#"{ $.eventName = "DisableKey " }"#, &event));
    assert!(!matches(r#"{ $.eventName = "" }"#, &event));
    assert!(matches(r#"{ $.eventName != "EnableKey" }"#, &event));
    assert!(!matches(r#"{ $.eventName != "DisableKey" }"#, &event));
    assert!(matches(r#"{ $.empty = "" }"#, &json!({ "empty": "" })));
}

#[test]
fn quoted_strings_take_escapes() {
    let event = json!({ "m": "say \"hi\" \\ *now*", "star": "a*b", "other": "axb" });
    assert!(matches(r#"{ $.m = "say \"hi\" \\ \*now\*" }"#, &event));
    assert!(matches(r#"{ $.m = "say \"hi\"*" }"#, &event));
    assert!(matches(r#"{ $.star = "a\*b" }"#, &event));
    assert!(!matches(r#"{ $.other = "a\*b" }"#, &event));
    assert!(matches(r#"{ $.other = "a*b" }"#, &event));
    assert!(matches(
        r#"{ $.x = "( ) && || { } = != $.y" }"#,
        &json!({ "x": "( ) && || { } = != $.y" })
    ));
}

#[test]
fn wildcards_match_anywhere() {
    let event = encrypt_with_disabled_key();
    for (text, expected) in [
        (r#"{ $.errorCode = "*Exception" }"#, true),
        (r#"{ $.errorCode = "Disabled*" }"#, true),
        (r#"{ $.errorCode = "Dis*Exc*ion" }"#, true),
        (r#"{ $.errorCode = "*abled*" }"#, true),
        (r#"{ $.errorCode = "*" }"#, true),
        (r#"{ $.errorCode = "**" }"#, true),
        (r#"{ $.errorCode = "DisabledException*" }"#, true),
        (r#"{ $.errorCode = "*DisabledException" }"#, true),
        (r#"{ $.errorCode = "*exception" }"#, false),
        (r#"{ $.errorCode = "Exception*" }"#, false),
        (r#"{ $.errorCode = "Disabled*Disabled*" }"#, false),
        (r#"{ $.errorCode = "DisabledExceptio*nException" }"#, false),
        (r#"{ $.resources[0].ARN = "arn:aws:kms:*:key/*" }"#, true),
        (r#"{ $.resources[0].ARN = "arn:aws:kms:*:alias/*" }"#, false),
        (
            "{ $.resources[0].ARN = arn:aws:kms:us-east-1:*:key/1234abcd-* }",
            true,
        ),
        ("{ $.sourceIPAddress = 192.0.2.* }", true),
        ("{ $.sourceIPAddress != 192.0.2.* }", false),
        ("{ $.sourceIPAddress != 198.51.100.* }", true),
    ] {
        assert_eq!(matches(text, &event), expected, "{text}");
    }
}

#[test]
fn glob_segments_do_not_overlap() {
    // Prefix and suffix must not share characters: "ab*ba" needs 4 characters.
    let p = pattern(r#"{ $.x = "ab*ba" }"#);
    assert!(!p.matches(&json!({ "x": "aba" })));
    assert!(p.matches(&json!({ "x": "abba" })));
    assert!(p.matches(&json!({ "x": "ab--ba" })));
    let p = pattern(r#"{ $.x = "a*a*a" }"#);
    assert!(!p.matches(&json!({ "x": "aa" })));
    assert!(p.matches(&json!({ "x": "aaa" })));
}

#[test]
fn nested_fields_and_array_indexes() {
    let event = encrypt_with_disabled_key();
    for (text, expected) in [
        ("{ $.userIdentity.userName = alice }", true),
        ("{ $.userIdentity.type = IAMUser }", true),
        ("{ $.userIdentity.userName = bob }", false),
        (
            "{ $.requestParameters.encryptionContext.aws:s3:arn = \"arn:aws:s3:::*\" }",
            true,
        ),
        ("{ $.additionalEventData.members[0] = hsm-a }", true),
        ("{ $.additionalEventData.members[1] = hsm-b }", true),
        ("{ $.additionalEventData.members[2] NOT EXISTS }", true),
        ("{ $.resources[0].type = \"AWS::KMS::Key\" }", true),
        ("{ $.resources[1].type NOT EXISTS }", true),
        // An index of an object, or a field of an array, leads nowhere.
        ("{ $.userIdentity[0] NOT EXISTS }", true),
        ("{ $.resources.ARN NOT EXISTS }", true),
        ("{ $.resources.ARN = \"*\" }", false),
        // A field of a string leads nowhere.
        ("{ $.eventName.length NOT EXISTS }", true),
    ] {
        assert_eq!(matches(text, &event), expected, "{text}");
    }
    let matrix = json!({ "m": [[1, 2], [3, { "k": "v" }]] });
    assert!(matches("{ $.m[0][1] = 2 }", &matrix));
    assert!(matches("{ $.m[1][1].k = v }", &matrix));
    assert!(matches("{ $.m[1][2] NOT EXISTS }", &matrix));
    let unicode = json!({ "ключ": "значение" });
    assert!(matches("{ $.ключ = значение }", &unicode));
}

#[test]
fn numeric_comparisons() {
    let event = generate_data_key_not_found();
    let field = "$.requestParameters.numberOfBytes";
    for (op, value, expected) in [
        ("=", "32", true),
        ("=", "32.0", true),
        ("=", "3.2e1", true),
        ("=", "33", false),
        ("!=", "33", true),
        ("!=", "32", false),
        ("<", "33", true),
        ("<", "32", false),
        ("<=", "32", true),
        ("<=", "31.5", false),
        (">", "31", true),
        (">", "32", false),
        (">=", "32", true),
        (">=", "1e3", false),
        (">", "-1", true),
        (">", "-1E+2", true),
    ] {
        let text = format!("{{ {field} {op} {value} }}");
        assert_eq!(matches(&text, &event), expected, "{text}");
    }
}

#[test]
fn numbers_compare_by_value_integers_exactly() {
    assert!(matches("{ $.x = 5 }", &json!({ "x": 5 })));
    assert!(matches("{ $.x = 5 }", &json!({ "x": 5.0 })));
    assert!(matches("{ $.x = 5.0 }", &json!({ "x": 5 })));
    assert!(matches("{ $.x = -0.5 }", &json!({ "x": -0.5 })));
    assert!(matches("{ $.x < 0 }", &json!({ "x": -3 })));
    assert!(matches("{ $.x = 0.001 }", &json!({ "x": 1e-3 })));
    // Past 2^53 an f64 comparison would call these two equal.
    let big = json!({ "x": u64::MAX });
    assert!(matches("{ $.x = 18446744073709551615 }", &big));
    assert!(!matches("{ $.x = 18446744073709551614 }", &big));
    assert!(matches("{ $.x > 18446744073709551614 }", &big));
    assert!(matches(
        "{ $.x = -9223372036854775808 }",
        &json!({ "x": i64::MIN })
    ));
    assert!(matches("{ $.x < 100000000000000000000000 }", &big));
}

#[test]
fn a_numeric_comparison_matches_numbers_only() {
    for event in [
        json!({ "x": "5" }),
        json!({ "x": true }),
        json!({ "x": null }),
        json!({ "x": [5] }),
        json!({ "x": { "y": 5 } }),
        json!({}),
    ] {
        for op in ["=", "!=", "<", "<=", ">", ">="] {
            let text = format!("{{ $.x {op} 5 }}");
            assert!(!matches(&text, &event), "{text} on {event}");
        }
    }
}

#[test]
fn a_string_comparison_reads_numbers_and_booleans_as_json_text() {
    assert!(matches(r#"{ $.x = "5" }"#, &json!({ "x": 5 })));
    assert!(matches(r#"{ $.x = "2.5" }"#, &json!({ "x": 2.5 })));
    assert!(!matches(r#"{ $.x = "5.0" }"#, &json!({ "x": 5 })));
    let mut read_only = disable_key();
    read_only["readOnly"] = json!(true);
    assert!(matches("{ $.readOnly = true }", &read_only));
    assert!(matches("{ $.readOnly = false }", &disable_key()));
    assert!(matches(r#"{ $.readOnly != "true" }"#, &disable_key()));
    assert!(matches(r#"{ $.x = "*" }"#, &json!({ "x": 0 })));
    for event in [
        json!({ "x": null }),
        json!({ "x": [] }),
        json!({ "x": {} }),
        json!({}),
    ] {
        assert!(!matches(r#"{ $.x = "*" }"#, &event), "{event}");
        assert!(!matches(r#"{ $.x != "y" }"#, &event), "{event}");
        assert!(!matches("{ $.x = null }", &event), "{event}");
    }
}

#[test]
fn missing_fields_fail_every_comparison_but_not_exists() {
    let event = disable_key();
    assert!(!matches(r#"{ $.errorCode = "*" }"#, &event));
    assert!(!matches(
        r#"{ $.errorCode != "DisabledException" }"#,
        &event
    ));
    assert!(!matches("{ $.errorCode > 0 }", &event));
    assert!(!matches("{ $.errorCode != 0 }", &event));
    assert!(!matches("{ $.errorCode IS NULL }", &event));
    assert!(!matches("{ $.errorCode IS TRUE }", &event));
    assert!(!matches("{ $.errorCode IS FALSE }", &event));
    assert!(matches("{ $.errorCode NOT EXISTS }", &event));
    assert!(matches("{ $.userIdentity.invokedBy NOT EXISTS }", &event));
    assert!(!matches("{ $.userIdentity.userName NOT EXISTS }", &event));
    assert!(!matches(
        "{ $.errorCode NOT EXISTS }",
        &encrypt_with_disabled_key()
    ));
}

#[test]
fn null_true_and_false() {
    let event = disable_key();
    assert!(matches("{ $.responseElements IS NULL }", &event));
    assert!(!matches("{ $.responseElements NOT EXISTS }", &event));
    assert!(!matches("{ $.eventName IS NULL }", &event));
    assert!(!matches(
        "{ $.responseElements IS NULL }",
        &schedule_key_deletion()
    ));
    assert!(matches("{ $.managementEvent IS TRUE }", &event));
    assert!(!matches("{ $.managementEvent IS FALSE }", &event));
    assert!(matches("{ $.readOnly IS FALSE }", &event));
    assert!(!matches("{ $.readOnly IS TRUE }", &event));
    assert!(!matches("{ $.x IS TRUE }", &json!({ "x": "true" })));
    assert!(!matches("{ $.x IS FALSE }", &json!({ "x": 0 })));
    assert!(!matches("{ $.x IS NULL }", &json!({ "x": "" })));
}

#[test]
fn and_binds_tighter_than_or() {
    let p = pattern("{ $.a = 1 || $.b = 1 && $.c = 1 }");
    assert!(p.matches(&json!({ "a": 1, "b": 0, "c": 0 })));
    assert!(!p.matches(&json!({ "a": 0, "b": 1, "c": 0 })));
    assert!(p.matches(&json!({ "a": 0, "b": 1, "c": 1 })));
    let p = pattern("{ $.a = 1 && $.b = 1 || $.c = 1 }");
    assert!(p.matches(&json!({ "a": 0, "b": 0, "c": 1 })));
    assert!(!p.matches(&json!({ "a": 1, "b": 0, "c": 0 })));
    let p = pattern("{ ($.a = 1 || $.b = 1) && $.c = 1 }");
    assert!(!p.matches(&json!({ "a": 1, "b": 0, "c": 0 })));
    assert!(p.matches(&json!({ "a": 0, "b": 1, "c": 1 })));
}

#[test]
fn parentheses_nest() {
    let p = pattern("{ ((($.a = 1)) && (($.b = 2) || ($.c = 3 && ($.d = 4)))) }");
    assert!(p.matches(&json!({ "a": 1, "b": 2 })));
    assert!(p.matches(&json!({ "a": 1, "c": 3, "d": 4 })));
    assert!(!p.matches(&json!({ "a": 1, "c": 3 })));
    assert!(!p.matches(&json!({ "b": 2 })));
}

#[test]
fn whitespace_is_allowed_anywhere_between_tokens() {
    let event = json!({ "a": "x", "b": 2 });
    for text in [
        "{$.a=x&&$.b>=2}",
        "{($.a=x)&&($.b>=2)}",
        "\n{\t$.a\n=\r\nx\n&&\t$.b  >=  2 }\n",
        "   {   (  $.a   =   \"x\"  )   &&   $.b>=2}   ",
    ] {
        assert!(matches(text, &event), "{text:?}");
    }
}

#[test]
fn the_nesting_limit_is_inclusive() {
    let nested = |depth: usize| format!("{{{}$.a = 1{}}}", "(".repeat(depth), ")".repeat(depth));
    assert!(matches(&nested(MAX_NESTING), &json!({ "a": 1 })));
    let err = FilterPattern::parse(&nested(MAX_NESTING + 1)).unwrap_err();
    // '{' is at 0, so the (MAX_NESTING + 1)th '(' is at MAX_NESTING + 1.
    assert_eq!(err.position, MAX_NESTING + 1);
    assert!(err.message.contains("nested deeper than 64"), "{err}");
    // Far deeper input fails the same way, without exhausting the stack.
    let deep = format!("{{{}", "(".repeat(MAX_PATTERN_CHARS - 1));
    assert_eq!(
        FilterPattern::parse(&deep).unwrap_err().position,
        MAX_NESTING + 1
    );
}

#[test]
fn the_length_limit_is_inclusive() {
    let fill = |len: usize| format!("{{ $.a = \"{}\" }}", "x".repeat(len - 12));
    assert_eq!(fill(MAX_PATTERN_CHARS).chars().count(), MAX_PATTERN_CHARS);
    assert!(FilterPattern::parse(&fill(MAX_PATTERN_CHARS)).is_ok());
    let err = FilterPattern::parse(&fill(MAX_PATTERN_CHARS + 1)).unwrap_err();
    assert_eq!(err.position, MAX_PATTERN_CHARS);
    assert!(err.message.contains("longer than 1024"), "{err}");
    // Characters, not bytes: 1024 two-byte characters are within the limit.
    let wide = format!("{{ $.a = \"{}\" }}", "é".repeat(MAX_PATTERN_CHARS - 12));
    assert!(FilterPattern::parse(&wide).is_ok());
}

#[test]
fn malformed_patterns_are_refused_at_the_fault() {
    let deep_index = "{ $.a[99999999999999999999999] = 1 }";
    for (text, position, message) in [
        ("", 0, "empty filter pattern"),
        ("   ", 3, "empty filter pattern"),
        ("$.a = 1", 0, "expected '{'"),
        ("( $.a = 1 )", 0, "expected '{'"),
        ("{ $.a = 1", 9, "expected '}' to close '{' at position 0"),
        ("{ $.a = 1 }}", 11, "unexpected '}' after the closing '}'"),
        ("{ $.a = 1 } x", 12, "unexpected 'x' after the closing '}'"),
        (
            "{ $.a = 1 } && $.b = 2",
            12,
            "unexpected '&&' after the closing '}'",
        ),
        (
            "{ ($.a = 1 }",
            11,
            "expected ')' to close '(' at position 2",
        ),
        (
            "{ (($.a = 1) }",
            13,
            "expected ')' to close '(' at position 2",
        ),
        ("{ ($.a = 1", 10, "expected ')' to close '(' at position 2"),
        ("{ $.a = 1) }", 9, "unexpected ')' without a matching '('"),
        (
            "{ ($.a = 1)) }",
            11,
            "unexpected ')' without a matching '('",
        ),
        (
            "{ ($.a = 1 $.b = 2) }",
            11,
            "expected '&&', '||' or ')', found a selector",
        ),
        (
            "{ $.a = 1 $.b = 2 }",
            10,
            "expected '&&', '||' or '}', found a selector",
        ),
        (
            "{ { $.a = 1 } }",
            2,
            "expected a comparison or '(', found '{'",
        ),
        ("{}", 1, "expected a comparison or '(', found '}'"),
        ("{ () }", 3, "expected a comparison or '(', found ')'"),
        (
            "{ $.a = 1 && }",
            13,
            "expected a comparison or '(', found '}'",
        ),
        (
            "{ $.a = 1 || || $.b = 1 }",
            13,
            "expected a comparison or '(', found '||'",
        ),
        (
            "{ && $.a = 1 }",
            2,
            "expected a comparison or '(', found '&&'",
        ),
        (
            "{ $.a = 1 & $.b = 2 }",
            10,
            "unknown operator '&': use '&&'",
        ),
        (
            "{ $.a = 1 | $.b = 2 }",
            10,
            "unknown operator '|': use '||'",
        ),
        ("{ $.a =~ \"x\" }", 6, "unknown operator '=~'"),
        ("{ $.a <> 1 }", 6, "unknown operator '<>' (use '!=')"),
        ("{ $.a == 1 }", 6, "unknown operator '==' (use '=')"),
        ("{ $.a ! 1 }", 6, "unknown operator '!'"),
        ("{ $.a => 1 }", 6, "unknown operator '=>'"),
        ("{ $.a ~ 1 }", 6, "unknown operator '~'"),
        (
            "{ $.a LIKE 1 }",
            6,
            "expected an operator (=, !=, <, <=, >, >=, IS, NOT EXISTS), found 'LIKE'",
        ),
        ("{ $.a }", 6, "expected an operator"),
        ("{ $.a = }", 8, "expected a value after '=', found '}'"),
        (
            "{ $.a != && $.b = 1 }",
            9,
            "expected a value after '!=', found '&&'",
        ),
        (
            "{ $.a = $.b }",
            8,
            "expected a value after '=', found a selector",
        ),
        (
            "{ $.a =",
            7,
            "expected a value after '=', found the end of the pattern",
        ),
        ("{ $ = 1 }", 3, "expected '.' after '$'"),
        ("{ $[0] = 1 }", 3, "expected '.' after '$'"),
        ("{ $. = 1 }", 4, "expected a field name after '.'"),
        ("{ $..a = 1 }", 4, "expected a field name after '.'"),
        ("{ $.a. = 1 }", 6, "expected a field name after '.'"),
        (
            "{ x.y = 1 }",
            2,
            "expected a selector starting with '$.', found 'x.y'",
        ),
        (
            "{ \"$.a\" = 1 }",
            2,
            "expected a comparison or '(', found a quoted string",
        ),
        (
            "{ $.a[ = 1 }",
            6,
            "expected an array index (digits) after '['",
        ),
        (
            "{ $.a[x] = 1 }",
            6,
            "expected an array index (digits) after '['",
        ),
        (
            "{ $.a[-1] = 1 }",
            6,
            "expected an array index (digits) after '['",
        ),
        (
            "{ $.a[1 = 1 }",
            7,
            "expected ']' to close '[' at position 5",
        ),
        (
            deep_index,
            6,
            "array index 99999999999999999999999 is too large",
        ),
        ("{ $.a = \"abc }", 8, "unterminated string"),
        ("{ $.a = \"abc\\", 8, "unterminated string"),
        ("{ $.a = \"a\\nb\" }", 10, "unknown escape '\\n'"),
        ("{ $.a < abc }", 8, "'<' compares numbers"),
        ("{ $.a >= \"5\" }", 9, "'>=' compares numbers"),
        ("{ $.a > 5x }", 8, "'>' compares numbers"),
        ("{ $.a = 1e999 }", 8, "number 1e999 is out of range"),
        (
            "{ $.a is null }",
            6,
            "unknown operator 'is': keywords are upper case",
        ),
        ("{ $.a not EXISTS }", 6, "unknown operator 'not'"),
        (
            "{ $.a IS MAYBE }",
            9,
            "expected NULL, TRUE or FALSE after IS, found 'MAYBE'",
        ),
        (
            "{ $.a IS null }",
            9,
            "expected NULL, TRUE or FALSE after IS, found 'null'",
        ),
        (
            "{ $.a IS }",
            9,
            "expected NULL, TRUE or FALSE after IS, found '}'",
        ),
        (
            "{ $.a NOT THERE }",
            10,
            "expected EXISTS after NOT, found 'THERE'",
        ),
        ("{ $.a NOT }", 10, "expected EXISTS after NOT, found '}'"),
        // Positions count characters, not bytes.
        (
            "{ $.ключ = 1 } é",
            15,
            "unexpected 'é' after the closing '}'",
        ),
    ] {
        let err = FilterPattern::parse(text).expect_err(text);
        assert_eq!(
            (err.position, err.message.contains(message)),
            (position, true),
            "{text:?}: {err}\n{}",
            err.diagnostic(text)
        );
    }
}

#[test]
fn the_first_error_by_position_is_reported() {
    // The bad operator comes before the unterminated string.
    let err = FilterPattern::parse("{ $.a LIKE \"x }").unwrap_err();
    assert_eq!(err.position, 6);
}

#[test]
fn errors_display_their_position() {
    let err = FilterPattern::parse("{ ($.a = \"x\" || $.b = 2 }").unwrap_err();
    assert_eq!(
        err.to_string(),
        "filter pattern error at position 24: expected ')' to close '(' at position 2"
    );
}

#[test]
fn diagnostics_put_a_caret_under_the_fault() {
    let text = "{ $.a =~ 1 }";
    let err = FilterPattern::parse(text).unwrap_err();
    assert_eq!(err.diagnostic(text), "{ $.a =~ 1 }\n      ^");
    // At the end of the pattern the caret stands just past it.
    let text = "{ $.a = 1";
    let err = FilterPattern::parse(text).unwrap_err();
    assert_eq!(err.diagnostic(text), "{ $.a = 1\n         ^");
    // Tabs are kept so the caret lines up; newlines become spaces.
    let text = "{\t$.a\n=~ 1 }";
    let err = FilterPattern::parse(text).unwrap_err();
    assert_eq!(err.position, 6);
    assert_eq!(err.diagnostic(text), "{\t$.a =~ 1 }\n \t    ^");
    // Multi-byte characters take one column each.
    let text = "{ $.é =~ 1 }";
    let err = FilterPattern::parse(text).unwrap_err();
    assert_eq!(err.diagnostic(text), "{ $.é =~ 1 }\n      ^");
    // Overlong patterns are cut at the limit.
    let text = "x".repeat(MAX_PATTERN_CHARS + 10);
    let err = FilterPattern::parse(&text).unwrap_err();
    let diagnostic = err.diagnostic(&text);
    let (line, caret) = diagnostic.split_once('\n').unwrap();
    assert_eq!(line, format!("{}...", "x".repeat(MAX_PATTERN_CHARS)));
    assert_eq!(caret, format!("{}^", " ".repeat(MAX_PATTERN_CHARS)));
}

#[test]
fn display_and_from_str_keep_the_text() {
    for text in [
        USE_OF_UNUSABLE_KEY,
        ANY_KMS_EXCEPTION,
        DISABLE_OR_DELETE,
        "  {$.a=1}\n",
    ] {
        let p: FilterPattern = text.parse().unwrap();
        assert_eq!(p.to_string(), text);
        assert_eq!(FilterPattern::parse(&p.to_string()).unwrap(), p);
    }
    assert_eq!(
        "{ $.a = }".parse::<FilterPattern>().unwrap_err().position,
        8
    );
}

#[test]
fn patterns_live_in_config_files() {
    #[derive(Debug, Deserialize, Serialize)]
    struct Alarm {
        name: String,
        pattern: FilterPattern,
    }
    let toml_text = format!("name = \"disable\"\npattern = '{DISABLE_OR_DELETE}'\n");
    let alarm: Alarm = toml::from_str(&toml_text).unwrap();
    assert_eq!(alarm.pattern.to_string(), DISABLE_OR_DELETE);
    assert!(alarm.pattern.matches(&disable_key()));
    let back: Alarm = toml::from_str(&toml::to_string(&alarm).unwrap()).unwrap();
    assert_eq!(back.pattern, alarm.pattern);

    let json_text = serde_json::to_string(&alarm).unwrap();
    let back: Alarm = serde_json::from_str(&json_text).unwrap();
    assert_eq!(back.pattern, alarm.pattern);

    let err = toml::from_str::<Alarm>("name = \"x\"\npattern = '{ $.a <> 1 }'\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("filter pattern error at position 6: unknown operator '<>'"),
        "{err}"
    );
}

#[test]
fn parsing_builds_the_expected_tree() {
    let field = |name: &str| Selector(vec![Step::Field(name.to_owned())]);
    let eq = |name: &str, value: &str| Expr::Test {
        selector: field(name),
        test: Test::StrEq(Glob::from_word(value)),
    };
    assert_eq!(
        pattern("{ $.a = x || $.b = y && $.c = z || $.d = w }").expr,
        Expr::Or(vec![
            eq("a", "x"),
            Expr::And(vec![eq("b", "y"), eq("c", "z")]),
            eq("d", "w"),
        ])
    );
    assert_eq!(
        pattern("{ $.r[0].ARN[12] != 7 }").expr,
        Expr::Test {
            selector: Selector(vec![
                Step::Field("r".to_owned()),
                Step::Index(0),
                Step::Field("ARN".to_owned()),
                Step::Index(12),
            ]),
            test: Test::Num {
                op: CmpOp::Ne,
                value: Number {
                    value: 7.0,
                    integer: Some(7)
                }
            },
        }
    );
    assert_eq!(
        Glob::from_word("*a**b*").segments,
        ["", "a", "", "b", ""].map(str::to_owned)
    );
}

#[test]
fn number_literals() {
    for word in [
        "0", "5", "-5", "007", "2.5", "-0.5", "1e3", "1E3", "1e+3", "1.5e-3",
    ] {
        assert!(is_number_literal(word), "{word}");
    }
    for word in [
        "", "-", "+5", ".5", "5.", "1e", "1e+", "1.2.3", "0x10", "5a", "--5", "inf", "NaN",
    ] {
        assert!(!is_number_literal(word), "{word}");
    }
}

/// Whether the text `text`'s pattern requires is in `event`'s JSON (true when it requires none).
fn admitted(text: &str, event: &Value) -> bool {
    pattern(text)
        .required_text()
        .is_none_or(|required| required.admits(&serde_json::to_vec(event).unwrap()))
}

#[test]
fn the_built_in_patterns_pass_over_events_that_lack_their_names() {
    let encrypt = record("Encrypt", true);
    assert!(!admitted(USE_OF_UNUSABLE_KEY, &encrypt));
    assert!(!admitted(DISABLE_OR_DELETE, &encrypt));
    assert!(!admitted(
        USE_OF_UNUSABLE_KEY,
        &generate_data_key_not_found()
    ));
    assert!(admitted(USE_OF_UNUSABLE_KEY, &encrypt_with_disabled_key()));
    assert!(admitted(
        USE_OF_UNUSABLE_KEY,
        &decrypt_with_pending_deletion_key()
    ));
    assert!(admitted(DISABLE_OR_DELETE, &disable_key()));
    assert!(admitted(DISABLE_OR_DELETE, &schedule_key_deletion()));
    // Admitted, then refused by the pattern itself: the text is necessary, not sufficient.
    assert!(admitted(DISABLE_OR_DELETE, &disable_key_rotation()));
    assert!(!matches(DISABLE_OR_DELETE, &disable_key_rotation()));
}

#[test]
fn what_a_pattern_requires_follows_its_string_comparisons() {
    let required = |text: &str| {
        let clauses = pattern(text).required_text()?.clauses;
        Some(
            clauses
                .iter()
                .map(|clause| {
                    clause
                        .iter()
                        .map(|finder| String::from_utf8(finder.needle().to_vec()).unwrap())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>(),
        )
    };
    let strings = |clauses: &[&[&str]]| {
        Some(
            clauses
                .iter()
                .map(|clause| clause.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        required(DISABLE_OR_DELETE),
        strings(&[
            &["kms.amazonaws.com"],
            &["DisableKey", "ScheduleKeyDeletion"]
        ])
    );
    // The longest piece between wildcards; none that holds '/' or could be a number's text.
    assert_eq!(
        required(r#"{ $.resources[0].ARN = "arn:aws:kms:*:key/*" }"#),
        strings(&[&["arn:aws:kms:"]])
    );
    assert_eq!(required(r#"{ $.errorCode = "*" }"#), None);
    assert_eq!(required(r#"{ $.x = "2.5*" }"#), None);
    assert_eq!(required(r#"{ $.x = "a\"b" }"#), None);
    assert_eq!(required("{ $.readOnly = true }"), strings(&[&["true"]]));
    // What other tests ask for is not text: a disjunction with one of them requires nothing.
    assert_eq!(required("{ $.a = x || $.b NOT EXISTS }"), None);
    assert_eq!(required("{ $.a != x }"), None);
    assert_eq!(required("{ $.a > 5 }"), None);
    assert_eq!(
        required("{ $.a = xyz && $.b IS NULL }"),
        strings(&[&["xyz"]])
    );
    // A disjunction takes the fewest-string clause of each term.
    assert_eq!(
        required("{ ($.a = aa && ($.b = b1 || $.b = b2)) || $.c = cc }"),
        strings(&[&["aa", "cc"]])
    );
}

#[test]
fn every_event_a_pattern_matches_is_admitted() {
    let events = [
        record("Encrypt", true),
        encrypt_with_disabled_key(),
        decrypt_with_pending_deletion_key(),
        generate_data_key_not_found(),
        disable_key(),
        schedule_key_deletion(),
        disable_key_rotation(),
        other_service_failure(),
    ];
    let patterns = [
        USE_OF_UNUSABLE_KEY,
        ANY_KMS_EXCEPTION,
        DISABLE_OR_DELETE,
        r#"{ $.resources[0].ARN = "arn:aws:kms:*:key/*" }"#,
        r#"{ $.userIdentity.arn = "*user/alice" }"#,
        r#"{ $.requestParameters.encryptionContext.aws:s3:arn = "arn:aws:s3:::bucket/*" }"#,
        r#"{ $.readOnly = true && $.eventName = "*crypt" }"#,
        "{ $.requestParameters.numberOfBytes = 32 || $.eventName = Disable* }",
        "{ $.errorMessage = *pending* }",
        r#"{ $.responseElements.keyState = "PendingDeletion" }"#,
    ];
    for text in patterns {
        for event in &events {
            if matches(text, event) {
                assert!(admitted(text, event), "{text} matches {event}");
            }
        }
    }
}

/// Reference matcher for `*` globs: plain backtracking over characters.
fn glob_reference(pattern: &[Option<char>], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((None, rest)) => (0..=text.len()).any(|skip| glob_reference(rest, &text[skip..])),
        Some((Some(c), rest)) => text.first() == Some(c) && glob_reference(rest, &text[1..]),
    }
}

fn arb_field() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_:@-]{0,8}"
}

fn arb_selector() -> impl Strategy<Value = (Selector, String)> {
    let step = prop_oneof![
        arb_field().prop_map(Step::Field),
        (0usize..1000).prop_map(Step::Index),
    ];
    (arb_field(), prop::collection::vec(step, 0..3)).prop_map(|(first, rest)| {
        let steps: Vec<Step> = std::iter::once(Step::Field(first)).chain(rest).collect();
        let text = steps.iter().fold("$".to_owned(), |text, step| match step {
            Step::Field(name) => format!("{text}.{name}"),
            Step::Index(index) => format!("{text}[{index}]"),
        });
        (Selector(steps), text)
    })
}

/// A value after `=` or `!=`: a quoted string or a word (both globs), or a number.
fn arb_value() -> impl Strategy<Value = (Test, String)> {
    let quoted = prop::collection::vec(".{0,6}", 1..4).prop_map(|segments| {
        let escaped: Vec<String> = segments
            .iter()
            .map(|s| {
                s.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('*', "\\*")
            })
            .collect();
        (Glob { segments }, format!("\"{}\"", escaped.join("*")))
    });
    let word = "[a-zA-Z][a-zA-Z0-9._:/*@-]{0,10}".prop_map(|w| (Glob::from_word(&w), w));
    let string = (prop_oneof![quoted, word], any::<bool>()).prop_map(|((glob, text), equal)| {
        if equal {
            (Test::StrEq(glob), format!("= {text}"))
        } else {
            (Test::StrNe(glob), format!("!= {text}"))
        }
    });
    let op = prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge),
    ];
    let integer = (-1_000_000_000i64..1_000_000_000).prop_map(|n| {
        let value = Number {
            value: n as f64,
            integer: Some(i128::from(n)),
        };
        (value, n.to_string())
    });
    let float = (-1e9f64..1e9, any::<bool>()).prop_map(|(v, exponent)| {
        let text = if exponent {
            format!("{v:e}")
        } else {
            format!("{v:?}")
        };
        let value = Number {
            value: v,
            integer: None,
        };
        (value, text)
    });
    let number = (op, prop_oneof![integer, float])
        .prop_map(|(op, (value, text))| (Test::Num { op, value }, format!("{op} {text}")));
    let keyword = prop_oneof![
        Just((Test::IsNull, "IS NULL".to_owned())),
        Just((Test::IsTrue, "IS TRUE".to_owned())),
        Just((Test::IsFalse, "IS FALSE".to_owned())),
        Just((Test::NotExists, "NOT EXISTS".to_owned())),
    ];
    prop_oneof![string, number, keyword]
}

fn arb_space() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(""), Just(" "), Just("\n\t ")]
}

/// An expression and a text that parses to it, with random spacing and
/// optional parentheses around comparisons.
fn arb_expr() -> impl Strategy<Value = (Expr, String)> {
    let leaf = (arb_selector(), arb_value(), arb_space(), any::<bool>()).prop_map(
        |((selector, selector_text), (test, test_text), space, parenthesised)| {
            let text = format!("{selector_text} {test_text}");
            let text = if parenthesised {
                format!("({space}{text}{space})")
            } else {
                text
            };
            (Expr::Test { selector, test }, text)
        },
    );
    leaf.prop_recursive(3, 16, 3, |inner| {
        (
            prop::collection::vec(inner, 2..4),
            any::<bool>(),
            arb_space(),
        )
            .prop_map(|(terms, is_and, space)| {
                let texts: Vec<String> = terms
                    .iter()
                    .map(|(expr, text)| match expr {
                        Expr::And(_) | Expr::Or(_) => format!("({text})"),
                        Expr::Test { .. } => text.clone(),
                    })
                    .collect();
                let joiner = if is_and { "&&" } else { "||" };
                let text = texts.join(&format!("{space}{joiner}{space}"));
                let exprs = terms.into_iter().map(|(expr, _)| expr).collect();
                let expr = if is_and {
                    Expr::And(exprs)
                } else {
                    Expr::Or(exprs)
                };
                (expr, text)
            })
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        if let Err(err) = FilterPattern::parse(&text) {
            prop_assert!(err.position <= text.chars().count());
            let _ = err.diagnostic(&text);
        }
    }

    #[test]
    fn parse_never_panics_on_pattern_like_text(
        text in r#"[{}()$.\[\]0-9a-zA-Z"\\=!<>~&|* \n-]{0,80}"#
    ) {
        match FilterPattern::parse(&text) {
            Ok(p) => {
                let _ = p.matches(&json!({ "a": [1, "x", null], "b": { "c": true } }));
            }
            Err(err) => prop_assert!(err.position <= text.chars().count()),
        }
    }

    #[test]
    fn generated_patterns_round_trip((expr, text) in arb_expr(), space in arb_space()) {
        let text = format!("{{{space}{text}{space}}}");
        prop_assume!(text.chars().count() <= MAX_PATTERN_CHARS);
        let parsed = FilterPattern::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", e.diagnostic(&text))))?;
        prop_assert_eq!(&parsed.expr, &expr);
        prop_assert_eq!(parsed.to_string(), text.clone());
        prop_assert_eq!(FilterPattern::parse(&parsed.to_string())?, parsed);
    }

    #[test]
    fn a_string_that_matches_a_glob_is_admitted_however_its_json_is_escaped(
        segments in prop::collection::vec(prop_oneof![".{0,5}", "[ab/\"\\\\\t\u{e9}]{0,5}"], 1..4),
        fillers in prop::collection::vec(".{0,3}", 3),
    ) {
        let glob = Glob { segments: segments.clone() };
        let quoted: Vec<String> = segments
            .iter()
            .map(|s| s.replace('\\', "\\\\").replace('"', "\\\"").replace('*', "\\*"))
            .collect();
        let text = format!("{{ $.f = \"{}\" }}", quoted.join("*"));
        let pattern = FilterPattern::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", e.diagnostic(&text))))?;
        prop_assert_eq!(&pattern.expr, &Expr::Test {
            selector: Selector(vec![Step::Field("f".into())]),
            test: Test::StrEq(glob),
        });
        // A value the glob matches: its pieces with anything between them.
        let mut value = String::new();
        for (i, segment) in segments.iter().enumerate() {
            if i > 0 {
                value.push_str(&fillers[i - 1]);
            }
            value.push_str(segment);
        }
        let event = json!({ "f": value });
        prop_assert!(pattern.matches(&event));
        let Some(required) = pattern.required_text() else {
            return Ok(());
        };
        let written = serde_json::to_string(&event).unwrap();
        // Other writers may escape '/', or any character as \uXXXX.
        let slashes = written.replace('/', "\\/");
        let mut unicode = String::new();
        for c in written.chars() {
            if c.is_ascii() {
                unicode.push(c);
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    unicode.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        for json in [written, slashes, unicode] {
            let parsed: Value = serde_json::from_str(&json).unwrap();
            prop_assert!(pattern.matches(&parsed));
            prop_assert!(required.admits(json.as_bytes()), "{} not admitted by {}", json, text);
        }
    }

    #[test]
    fn globs_agree_with_a_reference_matcher(
        segments in prop::collection::vec("[ab]{0,3}", 1..4),
        text in "[ab]{0,8}",
    ) {
        let glob = Glob { segments: segments.clone() };
        let mut reference = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            if i > 0 {
                reference.push(None);
            }
            reference.extend(segment.chars().map(Some));
        }
        let chars: Vec<char> = text.chars().collect();
        prop_assert_eq!(glob.matches(&text), glob_reference(&reference, &chars));
    }
}
