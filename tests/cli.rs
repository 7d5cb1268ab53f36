//! The `hsm-kms` binary's key commands and `cluster status` against a real two-member
//! SoftHSM2 cluster and sled on disk: AWS CLI flags, output and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::TestCluster;
use common::cli_output::{json, ok, stderr};
use hsm_kms::cluster::{Cluster, MaterialId};
use serde_json::Value;

/// A fresh, initialised two-member cluster.
fn cluster() -> TestCluster {
    let tc = TestCluster::new(2);
    ok(&tc.cli(&["cluster", "init"]));
    tc
}

/// Asserts the AWS CLI v2's failure: exit 254 and `An error occurred (<code>) when calling
/// the <operation> operation: ...`; returns the message.
fn aws_error(output: &Output, code: &str, operation: &str) -> String {
    assert_eq!(output.status.code(), Some(254), "{}", stderr(output));
    let stderr = stderr(output);
    let prefix = format!("An error occurred ({code}) when calling the {operation} operation: ");
    let line = stderr
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {stderr:?}"));
    line[prefix.len()..].to_owned()
}

fn create_key(tc: &TestCluster) -> String {
    let created = json(&tc.cli(&["create-key"]));
    created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
}

fn base64(text: &str) -> Vec<u8> {
    STANDARD.decode(text.trim()).unwrap()
}

#[test]
fn encrypt_a_file_and_decrypt_it_back() {
    let tc = cluster();
    let output = tc.cli(&[
        "create-key",
        "--description",
        "for files",
        "--key-usage",
        "ENCRYPT_DECRYPT",
        "--key-spec",
        "SYMMETRIC_DEFAULT",
        "--origin",
        "AWS_KMS",
        "--tags",
        "TagKey=team,TagValue=blue",
        "TagKey=env,TagValue=test",
    ]);
    let text = ok(&output);
    // AWS CLI JSON: four-space indents, fields in the API's order.
    assert!(
        text.starts_with("{\n    \"KeyMetadata\": {\n        \"AWSAccountId\": \"111122223333\",\n        \"KeyId\": "),
        "{text}"
    );
    let metadata: Value = serde_json::from_str(&text).unwrap();
    let key_id = metadata["KeyMetadata"]["KeyId"].as_str().unwrap();
    assert_eq!(metadata["KeyMetadata"]["Description"], "for files");
    let tags = json(&tc.cli(&["list-resource-tags", "--key-id", key_id]));
    assert_eq!(
        tags,
        serde_json::json!({"Tags": [{"TagKey": "env", "TagValue": "test"},
                                    {"TagKey": "team", "TagValue": "blue"}]})
    );

    // An empty response prints nothing.
    let output = tc.cli(&[
        "create-alias",
        "--alias-name",
        "alias/files",
        "--target-key-id",
        key_id,
    ]);
    assert_eq!(ok(&output), "");

    let plaintext: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let plain_path = tc.path("secret.bin");
    std::fs::write(&plain_path, &plaintext).unwrap();
    let fileb = format!("fileb://{}", plain_path.display());
    let encrypted = json(&tc.cli(&[
        "encrypt",
        "--key-id",
        "alias/files",
        "--plaintext",
        &fileb,
        "--encryption-context",
        "purpose=backup,host=db1",
    ]));
    assert_eq!(
        encrypted["KeyId"], metadata["KeyMetadata"]["Arn"],
        "responses name the key by ARN"
    );
    assert_eq!(encrypted["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT");
    let ciphertext = base64(encrypted["CiphertextBlob"].as_str().unwrap());
    let cipher_path = tc.path("secret.enc");
    std::fs::write(&cipher_path, &ciphertext).unwrap();
    let cipher_arg = format!("fileb://{}", cipher_path.display());

    // The common AWS CLI idiom: the plaintext alone, in base64.
    let output = tc.cli(&[
        "decrypt",
        "--ciphertext-blob",
        &cipher_arg,
        "--encryption-context",
        r#"{"host": "db1", "purpose": "backup"}"#,
        "--output",
        "text",
        "--query",
        "Plaintext",
    ]);
    assert_eq!(base64(&ok(&output)), plaintext);

    // A bare blob value is base64, as in the AWS CLI v2; the key id must match.
    let blob = encrypted["CiphertextBlob"].as_str().unwrap();
    let output = tc.cli(&[
        "decrypt",
        "--ciphertext-blob",
        blob,
        "--encryption-context",
        "purpose=backup,host=db1",
        "--key-id",
        key_id,
        "--query",
        "KeyId",
    ]);
    assert_eq!(
        ok(&output).trim(),
        format!("\"{}\"", metadata["KeyMetadata"]["Arn"].as_str().unwrap())
    );

    // Another context: the AWS exception, and nothing on stdout.
    let output = tc.cli(&[
        "decrypt",
        "--ciphertext-blob",
        &cipher_arg,
        "--encryption-context",
        "purpose=backup",
    ]);
    aws_error(&output, "InvalidCiphertextException", "Decrypt");
    assert!(output.stdout.is_empty());

    // ReEncrypt under a second key, then decrypt with that key only.
    let other = create_key(&tc);
    let reencrypted = json(&tc.cli(&[
        "re-encrypt",
        "--ciphertext-blob",
        &cipher_arg,
        "--source-encryption-context",
        "purpose=backup,host=db1",
        "--destination-key-id",
        &other,
    ]));
    let output = tc.cli(&[
        "decrypt",
        "--ciphertext-blob",
        reencrypted["CiphertextBlob"].as_str().unwrap(),
        "--output",
        "text",
        "--query",
        "Plaintext",
    ]);
    assert_eq!(base64(&ok(&output)), plaintext);

    // Text given as text, as the AWS CLI v1 reads it.
    let output = tc.cli(&[
        "encrypt",
        "--key-id",
        "alias/files",
        "--plaintext",
        "hello",
        "--cli-binary-format",
        "raw-in-base64-out",
        "--query",
        "CiphertextBlob",
        "--output",
        "text",
    ]);
    let blob = ok(&output);
    let output = tc.cli(&[
        "decrypt",
        "--ciphertext-blob",
        blob.trim(),
        "--query",
        "Plaintext",
        "--output",
        "text",
    ]);
    assert_eq!(base64(&ok(&output)), b"hello");
}

#[test]
fn data_keys_and_random_bytes() {
    let tc = cluster();
    let key_id = create_key(&tc);
    let data_key = json(&tc.cli(&[
        "generate-data-key",
        "--key-id",
        &key_id,
        "--key-spec",
        "AES_256",
        "--encryption-context",
        "bucket=b1",
    ]));
    let plaintext = base64(data_key["Plaintext"].as_str().unwrap());
    assert_eq!(plaintext.len(), 32);
    let output = tc.cli(&[
        "decrypt",
        "--ciphertext-blob",
        data_key["CiphertextBlob"].as_str().unwrap(),
        "--encryption-context",
        "bucket=b1",
        "--output",
        "text",
        "--query",
        "Plaintext",
    ]);
    assert_eq!(base64(&ok(&output)), plaintext);

    let without = json(&tc.cli(&[
        "generate-data-key-without-plaintext",
        "--key-id",
        &key_id,
        "--number-of-bytes",
        "16",
    ]));
    assert!(without.get("Plaintext").is_none(), "{without}");
    assert!(without["CiphertextBlob"].is_string());

    let output = tc.cli(&[
        "generate-random",
        "--number-of-bytes",
        "24",
        "--output",
        "text",
    ]);
    assert_eq!(base64(&ok(&output)).len(), 24);
}

#[test]
fn a_key_pending_deletion_refuses_encrypt() {
    let tc = cluster();
    let key_id = create_key(&tc);
    let scheduled = json(&tc.cli(&[
        "schedule-key-deletion",
        "--key-id",
        &key_id,
        "--pending-window-in-days",
        "7",
    ]));
    assert_eq!(scheduled["KeyState"], "PendingDeletion");
    assert_eq!(scheduled["PendingWindowInDays"], 7);
    let arn = scheduled["KeyId"].as_str().unwrap();
    assert_eq!(
        arn,
        format!("arn:aws:kms:us-east-1:111122223333:key/{key_id}")
    );

    let output = tc.cli(&["encrypt", "--key-id", &key_id, "--plaintext", "aGk="]);
    assert_eq!(
        aws_error(&output, "KMSInvalidStateException", "Encrypt"),
        format!("{arn} is pending deletion.")
    );
    assert!(output.stdout.is_empty());

    ok(&tc.cli(&["cancel-key-deletion", "--key-id", &key_id]));
    let output = tc.cli(&[
        "describe-key",
        "--key-id",
        &key_id,
        "--output",
        "text",
        "--query",
        "KeyMetadata.KeyState",
    ]);
    assert_eq!(ok(&output), "Disabled\n");
    let output = tc.cli(&["encrypt", "--key-id", &key_id, "--plaintext", "aGk="]);
    assert_eq!(
        aws_error(&output, "DisabledException", "Encrypt"),
        format!("{arn} is disabled.")
    );
    assert_eq!(ok(&tc.cli(&["enable-key", "--key-id", &key_id])), "");
    ok(&tc.cli(&["encrypt", "--key-id", &key_id, "--plaintext", "aGk="]));

    // Every command's call, the refused one too, is in the audit trail when it exits.
    let store = hsm_kms::store::SledStore::open(&tc.config().service.data_dir).unwrap();
    let events: Vec<Value> = hsm_kms::audit::log::read_events(&store, 0, 1000)
        .unwrap()
        .iter()
        .map(|e| e.event())
        .collect();
    let refused = events
        .iter()
        .find(|e| e["eventName"] == "Encrypt" && e["errorCode"] == "KMSInvalidStateException")
        .unwrap_or_else(|| panic!("no refused Encrypt in {events:?}"));
    assert_eq!(
        refused["errorMessage"],
        format!("{arn} is pending deletion.")
    );
    for name in [
        "CreateKey",
        "ScheduleKeyDeletion",
        "CancelKeyDeletion",
        "EnableKey",
    ] {
        assert!(events.iter().any(|e| e["eventName"] == name), "{name}");
    }
    let report = hsm_kms::audit::verify::verify(&store, None, None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn bad_input_gets_the_aws_exception_or_a_parameter_error() {
    let tc = cluster();
    let key_id = create_key(&tc);

    // Zero bytes of plaintext: an empty base64 value and an empty file.
    let empty = tc.path("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    for plaintext in ["", &format!("fileb://{}", empty.display())] {
        let output = tc.cli(&["encrypt", "--key-id", &key_id, "--plaintext", plaintext]);
        let message = aws_error(&output, "ValidationException", "Encrypt");
        assert!(message.contains("'plaintext'"), "{message}");
    }
    let output = tc.cli(&[
        "create-alias",
        "--alias-name",
        "files",
        "--target-key-id",
        &key_id,
    ]);
    let message = aws_error(&output, "ValidationException", "CreateAlias");
    assert!(message.contains("alias/"), "{message}");
    let output = tc.cli(&[
        "create-alias",
        "--alias-name",
        "alias/aws/mine",
        "--target-key-id",
        &key_id,
    ]);
    aws_error(&output, "NotAuthorizedException", "CreateAlias");
    let output = tc.cli(&[
        "describe-key",
        "--key-id",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
    ]);
    aws_error(&output, "NotFoundException", "DescribeKey");
    let output = tc.cli(&[
        "generate-data-key",
        "--key-id",
        &key_id,
        "--key-spec",
        "AES_256",
        "--number-of-bytes",
        "32",
    ]);
    aws_error(&output, "ValidationException", "GenerateDataKey");
    let output = tc.cli(&["generate-random", "--number-of-bytes", "1025"]);
    aws_error(&output, "ValidationException", "GenerateRandom");
    let output = tc.cli(&[
        "schedule-key-deletion",
        "--key-id",
        &key_id,
        "--pending-window-in-days",
        "6",
    ]);
    aws_error(&output, "ValidationException", "ScheduleKeyDeletion");
    let output = tc.cli(&["list-keys", "--limit", "0"]);
    aws_error(&output, "ValidationException", "ListKeys");

    // Values the CLI cannot read exit 252 before any call, and never echo a plaintext.
    let output = tc.cli(&["encrypt", "--key-id", &key_id, "--plaintext", "not base64!"]);
    assert_eq!(output.status.code(), Some(252));
    assert!(stderr(&output).contains("Error parsing parameter '--plaintext'"));
    assert!(!stderr(&output).contains("not base64!"));
    let output = tc.cli(&["decrypt", "--ciphertext-blob", "fileb:///no/such/file"]);
    assert_eq!(output.status.code(), Some(252));
    assert!(stderr(&output).contains("Unable to load paramfile fileb:///no/such/file"));
    let output = tc.cli(&["create-key", "--tags", "TagKey=only"]);
    assert_eq!(output.status.code(), Some(252));
    let output = tc.cli(&["list-keys", "--query", "Keys[?KeyId=='x']"]);
    assert_eq!(output.status.code(), Some(252));
    assert!(stderr(&output).contains("--query"));
    // Nothing was created by the failed create-key.
    let keys = json(&tc.cli(&["list-keys"]));
    assert_eq!(keys["Keys"].as_array().unwrap().len(), 1);
}

#[test]
fn list_keys_pages_with_limit_and_marker() {
    let tc = cluster();
    let mut created: Vec<String> = (0..3).map(|_| create_key(&tc)).collect();
    created.sort();

    let first = json(&tc.cli(&["list-keys", "--limit", "2"]));
    assert_eq!(first["Truncated"], true);
    let marker = first["NextMarker"].as_str().unwrap();
    let second = json(&tc.cli(&["list-keys", "--limit", "2", "--marker", marker]));
    assert_eq!(second["Truncated"], false);
    assert!(second.get("NextMarker").is_none(), "{second}");
    let paged: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|page| page["Keys"].as_array().unwrap().clone())
        .map(|key| key["KeyId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paged, created);

    // Without --limit or --marker every page is fetched and only the list printed.
    let all = json(&tc.cli(&["list-keys"]));
    assert_eq!(all.as_object().unwrap().len(), 1, "{all}");
    assert_eq!(all["Keys"].as_array().unwrap().len(), 3);
    let output = tc.cli(&["list-keys", "--output", "text", "--query", "Keys[].KeyId"]);
    assert_eq!(ok(&output), format!("{}\n", created.join("\t")));

    // Aliases page the same way.
    for (i, key) in created.iter().enumerate() {
        ok(&tc.cli(&[
            "create-alias",
            "--alias-name",
            &format!("alias/k{i}"),
            "--target-key-id",
            key,
        ]));
    }
    let page = json(&tc.cli(&["list-aliases", "--limit", "1"]));
    assert_eq!(page["Aliases"].as_array().unwrap().len(), 1);
    assert_eq!(page["Truncated"], true);
    let output = tc.cli(&[
        "list-aliases",
        "--key-id",
        &created[1],
        "--query",
        "Aliases[0].AliasName",
        "--output",
        "text",
    ]);
    assert_eq!(ok(&output), "alias/k1\n");
}

#[test]
fn key_policy_commands_round_trip_policies_through_files() {
    let tc = cluster();
    let account = tc.config().service.account_id;
    let root = format!("arn:aws:iam::{account}:root");
    let text = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": root},
                       "Action": "kms:*", "Resource": "*"}]
    })
    .to_string();
    let file = tc.path("policy.json");
    std::fs::write(&file, &text).unwrap();
    let from_file = format!("file://{}", file.display());
    let created = json(&tc.cli(&["create-key", "--policy", &from_file]));
    let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let policy = json(&tc.cli(&["get-key-policy", "--key-id", &key_id]));
    assert_eq!(policy["Policy"], text.as_str());
    assert_eq!(policy["PolicyName"], "default");
    let listed = json(&tc.cli(&["list-key-policies", "--key-id", &key_id]));
    assert_eq!(listed["PolicyNames"], serde_json::json!(["default"]));
    // A policy that would lock the root (the CLI's caller) out is refused unless bypassed.
    let locking = text.replace(":root", ":user/someone-else");
    std::fs::write(&file, &locking).unwrap();
    let args = [
        "put-key-policy",
        "--key-id",
        &key_id,
        "--policy",
        &from_file,
    ];
    let message = aws_error(
        &tc.cli(&args),
        "MalformedPolicyDocumentException",
        "PutKeyPolicy",
    );
    assert!(
        message.contains("will not allow you to update the key policy"),
        "{message}"
    );
    std::fs::write(&file, "{\"Version\": \"2012-10-17\"").unwrap();
    aws_error(
        &tc.cli(&args),
        "MalformedPolicyDocumentException",
        "PutKeyPolicy",
    );
    let bypass = [&args[..], &["--bypass-policy-lockout-safety-check"]].concat();
    std::fs::write(&file, &locking).unwrap();
    assert_eq!(ok(&tc.cli(&bypass)), "");
    // Now the root may not even read the policy.
    aws_error(
        &tc.cli(&["get-key-policy", "--key-id", &key_id]),
        "AccessDeniedException",
        "GetKeyPolicy",
    );
}

#[test]
fn grant_commands() {
    let tc = cluster();
    let key_id = create_key(&tc);
    let grantee = "arn:aws:iam::111122223333:user/batch";
    let created = json(&tc.cli(&[
        "create-grant",
        "--key-id",
        &key_id,
        "--grantee-principal",
        grantee,
        "--operations",
        "Encrypt",
        "Decrypt",
        "--constraints",
        "EncryptionContextEquals={purpose=backup,day=1}",
    ]));
    let grant_id = created["GrantId"].as_str().unwrap().to_owned();
    let listed = json(&tc.cli(&["list-grants", "--key-id", &key_id]));
    assert_eq!(listed["Grants"][0]["GrantId"], grant_id.as_str());
    assert_eq!(
        listed["Grants"][0]["Constraints"]["EncryptionContextEquals"],
        serde_json::json!({"purpose": "backup", "day": "1"})
    );
    // The account root (the in-process caller) may retire any grant of its keys.
    ok(&tc.cli(&["retire-grant", "--key-id", &key_id, "--grant-id", &grant_id]));
    let listed = json(&tc.cli(&["list-grants", "--key-id", &key_id]));
    assert_eq!(listed["Grants"], serde_json::json!([]));
    let refused = tc.cli(&["revoke-grant", "--key-id", &key_id, "--grant-id", &grant_id]);
    aws_error(&refused, "NotFoundException", "RevokeGrant");
    let refused = tc.cli(&[
        "create-grant",
        "--key-id",
        &key_id,
        "--grantee-principal",
        grantee,
        "--operations",
        "Encrypt",
        "--constraints",
        "Bogus={a=b}",
    ]);
    assert_eq!(refused.status.code(), Some(252), "{}", stderr(&refused));
}

#[test]
fn signing_and_mac_commands() {
    let tc = cluster();
    let created = json(&tc.cli(&[
        "create-key",
        "--key-spec",
        "ECC_NIST_P256",
        "--key-usage",
        "SIGN_VERIFY",
    ]));
    assert_eq!(
        created["KeyMetadata"]["SigningAlgorithms"],
        serde_json::json!(["ECDSA_SHA_256"])
    );
    let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let message = tc.path("message.txt");
    std::fs::write(&message, b"release 1.2.3").unwrap();
    let message_arg = format!("fileb://{}", message.display());
    let signature = ok(&tc.cli(&[
        "sign",
        "--key-id",
        &key_id,
        "--message",
        &message_arg,
        "--signing-algorithm",
        "ECDSA_SHA_256",
        "--output",
        "text",
        "--query",
        "Signature",
    ]));
    let verified = json(&tc.cli(&[
        "verify",
        "--key-id",
        &key_id,
        "--message",
        &message_arg,
        "--signature",
        signature.trim(),
        "--signing-algorithm",
        "ECDSA_SHA_256",
    ]));
    assert_eq!(verified["SignatureValid"], true);
    let refused = tc.cli(&[
        "verify",
        "--key-id",
        &key_id,
        "--message",
        "b3RoZXI=",
        "--signature",
        signature.trim(),
        "--signing-algorithm",
        "ECDSA_SHA_256",
    ]);
    aws_error(&refused, "KMSInvalidSignatureException", "Verify");
    let public = json(&tc.cli(&["get-public-key", "--key-id", &key_id]));
    assert_eq!(public["KeySpec"], "ECC_NIST_P256");
    assert_eq!(base64(public["PublicKey"].as_str().unwrap()).len(), 91);

    let mac_key = json(&tc.cli(&[
        "create-key",
        "--key-spec",
        "HMAC_256",
        "--key-usage",
        "GENERATE_VERIFY_MAC",
    ]))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mac = json(&tc.cli(&[
        "generate-mac",
        "--key-id",
        &mac_key,
        "--message",
        &message_arg,
        "--mac-algorithm",
        "HMAC_SHA_256",
    ]));
    let mac = mac["Mac"].as_str().unwrap().to_owned();
    let verified = json(&tc.cli(&[
        "verify-mac",
        "--key-id",
        &mac_key,
        "--message",
        &message_arg,
        "--mac-algorithm",
        "HMAC_SHA_256",
        "--mac",
        &mac,
    ]));
    assert_eq!(verified["MacValid"], true);
    let refused = tc.cli(&[
        "generate-mac",
        "--key-id",
        &key_id,
        "--message",
        &message_arg,
        "--mac-algorithm",
        "HMAC_SHA_256",
    ]);
    aws_error(&refused, "InvalidKeyUsageException", "GenerateMac");
}

#[test]
fn rotation_commands() {
    let tc = cluster();
    let key_id = create_key(&tc);
    let encrypted = json(&tc.cli(&["encrypt", "--key-id", &key_id, "--plaintext", "b2xk"]));
    assert_eq!(
        ok(&tc.cli(&[
            "enable-key-rotation",
            "--key-id",
            &key_id,
            "--rotation-period-in-days",
            "90"
        ])),
        ""
    );
    let status = json(&tc.cli(&["get-key-rotation-status", "--key-id", &key_id]));
    assert_eq!(status["KeyRotationEnabled"], true);
    assert_eq!(status["RotationPeriodInDays"], 90);
    ok(&tc.cli(&["rotate-key-on-demand", "--key-id", &key_id]));
    let rotations = json(&tc.cli(&["list-key-rotations", "--key-id", &key_id]));
    let rotations = rotations["Rotations"].as_array().unwrap();
    assert_eq!(rotations.len(), 1);
    assert_eq!(rotations[0]["RotationType"], "ON_DEMAND");
    // The old ciphertext still decrypts.
    let output = tc.cli(&[
        "decrypt",
        "--ciphertext-blob",
        encrypted["CiphertextBlob"].as_str().unwrap(),
        "--query",
        "Plaintext",
        "--output",
        "text",
    ]);
    assert_eq!(base64(&ok(&output)), b"old");
    ok(&tc.cli(&["disable-key-rotation", "--key-id", &key_id]));
    let output = tc.cli(&[
        "get-key-rotation-status",
        "--key-id",
        &key_id,
        "--query",
        "KeyRotationEnabled",
        "--output",
        "text",
    ]);
    assert_eq!(ok(&output), "False\n");
}

#[test]
fn status_and_maintenance_report_an_orphan_hsm_object() {
    let tc = cluster();
    let key_id = create_key(&tc);
    let output = tc.cli(&["cluster", "status", "--json"]);
    assert_eq!(json(&output)["inconsistencies"], serde_json::json!([]));
    assert!(ok(&tc.cli(&["cluster", "status"])).contains("problems: none"));

    // Key material no key record names, made directly while no store is open.
    let orphan = MaterialId::new(uuid::Uuid::new_v4().to_string(), 1);
    let hsms = Cluster::open("local", &tc.cluster_config()).unwrap();
    hsms.create_key(&orphan, "x").unwrap();
    drop(hsms);

    let status = json(&tc.cli(&["cluster", "status", "--json"]));
    assert_eq!(status["serving"], true);
    let mut found: Vec<(String, String, String)> = status["inconsistencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["member"].as_str().unwrap().to_owned(),
                i["material"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    let expected: Vec<(String, String, String)> = ["hsm-a", "hsm-b"]
        .iter()
        .map(|m| ("orphan_material".into(), m.to_string(), orphan.to_string()))
        .collect();
    assert_eq!(found, expected);
    let text = ok(&tc.cli(&["cluster", "status"]));
    assert!(text.contains("problems:\n"), "{text}");
    assert!(
        text.contains(&format!(
            "HSM member hsm-a holds key material {orphan} that no key record names"
        )),
        "{text}"
    );

    let report = json(&tc.cli(&["maintenance", "run"]));
    assert_eq!(report["deleted"], serde_json::json!([]));
    assert_eq!(report["failures"], serde_json::json!([]));
    assert_eq!(report["inconsistencies"].as_array().unwrap().len(), 2);
    // Reported, never deleted: the orphan and the real key are both still there.
    let status = json(&tc.cli(&["cluster", "status", "--json"]));
    assert_eq!(status["inconsistencies"].as_array().unwrap().len(), 2);
    ok(&tc.cli(&["encrypt", "--key-id", &key_id, "--plaintext", "aGk="]));
}

#[test]
fn a_store_held_by_another_process_is_named_plainly() {
    let tc = cluster();
    let key_id = create_key(&tc);
    let config = tc.config();
    let held = hsm_kms::store::SledStore::open(&config.service.data_dir).unwrap();

    let in_use = "the metadata store is in use (is `hsm-kms serve` running?)";
    let output = tc.cli(&["describe-key", "--key-id", &key_id]);
    assert_eq!(output.status.code(), Some(255));
    assert!(stderr(&output).contains(in_use), "{}", stderr(&output));
    let output = tc.cli(&["maintenance", "run"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains(in_use), "{}", stderr(&output));

    // The cluster part of the status still shows.
    let status = json(&tc.cli(&["cluster", "status", "--json"]));
    assert_eq!(status["serving"], true);
    assert_eq!(status["inconsistencies"], Value::Null);
    assert!(
        status["metadata_unavailable"]
            .as_str()
            .unwrap()
            .contains(in_use)
    );
    let text = ok(&tc.cli(&["cluster", "status"]));
    assert!(text.contains("hsm-a"), "{text}");
    assert!(
        text.contains(&format!("metadata not checked: {in_use}")),
        "{text}"
    );

    drop(held);
    ok(&tc.cli(&["describe-key", "--key-id", &key_id]));
}
