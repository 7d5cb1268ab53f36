//! Cost of one authorization: evaluating AWS's default key policy versus a 20-statement key policy
//! with conditions plus an identity policy, in one run, and building the request context the wiring
//! makes per call (the same for both). Pure CPU, no HSM. It prints nanoseconds per evaluation,
//! their ratio, and what each costs next to one Encrypt (about 25 µs end to end through SoftHSM2),
//! which is the goal (Encrypt on the 20-statement policy / Encrypt on the default policy
//! ≥ 0.95, measured end to end once the evaluator is wired in). Figures are medians of five rounds
//! in interleaved 100 ms slices, printed, never asserted.
//!
//! Run: `cargo bench --bench policy` (`HSM_KMS_BENCH_SECS` sets seconds per case and round).

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use hsm_kms::policy::{
    CallerIdentity, Policies, PolicyDocument, RequestContext, default_key_policy, evaluate,
    parse_identity_policy, parse_key_policy,
};

use common::{Res, median, met};

const ROUNDS: usize = 5;
const SLICE: Duration = Duration::from_millis(100);
/// One Encrypt end to end through SoftHSM2, roughly (benches/keystore.rs).
const ENCRYPT_NS: f64 = 25_000.0;
const ACCOUNT: &str = "111122223333";
const KEY: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// Twenty statements with conditions; the one that allows the benchmark's caller is last,
/// so every statement is looked at.
fn twenty_statements() -> Value {
    let mut statements = vec![json!({
        "Sid": "Enable IAM User Permissions", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
        "Action": ["kms:Create*", "kms:Describe*", "kms:Put*", "kms:Get*"], "Resource": "*"
    })];
    for i in 0..9 {
        statements.push(json!({
            "Sid": format!("DenyOutsideNetwork{i}"), "Effect": "Deny", "Principal": "*",
            "Action": ["kms:Decrypt", "kms:ReEncrypt*"], "Resource": "*",
            "Condition": {
                "NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]},
                "Bool": {"aws:SecureTransport": "false"},
                "StringNotEquals": {"kms:EncryptionContext:tenant": format!("t{i}")}
            }
        }));
        statements.push(json!({
            "Sid": format!("AllowTenant{i}"), "Effect": "Allow",
            "Principal": {"AWS": [format!("arn:aws:iam::{ACCOUNT}:role/tenant-{i}"),
                                  format!("arn:aws:iam::{ACCOUNT}:user/tenant-{i}")]},
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
            "Condition": {
                "StringEquals": {"kms:EncryptionContext:tenant": format!("t{i}")},
                "ForAllValues:StringLike": {"kms:EncryptionContextKeys": ["tenant", "doc*"]},
                "DateLessThan": {"aws:CurrentTime": "2040-01-01T00:00:00Z"}
            }
        }));
    }
    statements.push(json!({
        "Sid": "AllowApp", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:user/app")},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
        "Condition": {
            "StringEquals": {"kms:EncryptionContext:tenant": "app", "kms:CallerAccount": ACCOUNT},
            "ForAllValues:StringLike": {"kms:EncryptionContextKeys": ["tenant", "doc*"]},
            "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
            "Bool": {"aws:SecureTransport": "true"}
        }
    }));
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The request as the wiring builds it per call.
fn request(now: SystemTime) -> RequestContext {
    let caller = CallerIdentity::new("arn:aws:iam::111122223333:user/app", ACCOUNT)
        .with_transport("10.1.2.3".parse().ok(), true);
    let context = BTreeMap::from([
        ("tenant".to_owned(), "app".to_owned()),
        ("doc-id".to_owned(), "42".to_owned()),
    ]);
    RequestContext::new("kms:Encrypt", KEY, caller)
        .with_current_time(now)
        .with_encryption_context(&context)
}

/// One evaluation.
fn authorize(
    policy: &PolicyDocument,
    identity: Option<&[Arc<PolicyDocument>]>,
    request: &RequestContext,
) -> bool {
    let policies = Policies {
        key_policy: policy,
        key_account: ACCOUNT,
        identity,
        grants: &[],
    };
    evaluate(&policies, request).is_allowed()
}

/// (name, key policy, identity policies) of one benchmark case.
type Case<'a> = (
    &'a str,
    &'a PolicyDocument,
    Option<&'a [Arc<PolicyDocument>]>,
);

fn main() -> Res<()> {
    let duration = common::seconds(1.0)?;
    let default_policy = parse_key_policy(&default_key_policy(ACCOUNT))?;
    let large_policy = parse_key_policy(&twenty_statements().to_string())?;
    let identity = [Arc::new(parse_identity_policy(
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": "*"},
            {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": KEY}
        ]})
        .to_string(),
    )?)];
    let now = SystemTime::now();
    let prepared = request(now);
    if !authorize(&default_policy, None, &prepared)
        || !authorize(&large_policy, Some(&identity), &prepared)
    {
        return Err("the benchmark's request must be allowed by both policies".into());
    }

    let cases: [Case; 2] = [
        ("default key policy", &default_policy, None),
        ("20 statements + identity", &large_policy, Some(&identity)),
    ];
    let mut ns = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        let mut spent = [Duration::ZERO; 3];
        let mut calls = [0u64; 3];
        let round = Instant::now();
        while round.elapsed() < duration * 2 {
            for (i, (_, policy, identity)) in cases.iter().enumerate() {
                let start = Instant::now();
                while start.elapsed() < SLICE {
                    for _ in 0..64 {
                        black_box(authorize(black_box(policy), *identity, &prepared));
                    }
                    calls[i] += 64;
                }
                spent[i] += start.elapsed();
            }
            let start = Instant::now();
            while start.elapsed() < SLICE {
                for _ in 0..64 {
                    black_box(request(black_box(now)));
                }
                calls[2] += 64;
            }
            spent[2] += start.elapsed();
        }
        for i in 0..3 {
            ns[i].push(spent[i].as_nanos() as f64 / calls[i] as f64);
        }
    }
    let default_ns = median(&ns[0]);
    let large_ns = median(&ns[1]);
    let context_ns = median(&ns[2]);
    println!("policy evaluation of one Encrypt request, median of {ROUNDS} rounds:");
    for ((name, _, _), cost) in cases.iter().zip([default_ns, large_ns]) {
        println!(
            "  {name:<26}: {cost:>8.0} ns/evaluation ({:.2}% of one ~25 µs Encrypt)",
            100.0 * cost / ENCRYPT_NS
        );
    }
    println!(
        "  20 statements / default   : {:>8.2}x the cost",
        large_ns / default_ns
    );
    println!(
        "  building the request context (both cases alike): {context_ns:.0} ns ({:.2}% of one Encrypt)",
        100.0 * context_ns / ENCRYPT_NS
    );
    let projected = (ENCRYPT_NS + context_ns + default_ns) / (ENCRYPT_NS + context_ns + large_ns);
    println!(
        "  projected Encrypt throughput, 20 statements / default: {projected:.3} (goal >= 0.95: {})",
        met(projected >= 0.95)
    );
    Ok(())
}
