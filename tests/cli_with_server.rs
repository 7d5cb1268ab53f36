//! The `hsm-kms` command line while `hsm-kms serve` holds the sled store (real binary, real
//! two-member SoftHSM2 cluster): key commands, `audit`, `maintenance run`, `cluster status`
//! and `compliance check` go through the server's admin socket and print what they print
//! in-process; the socket is owner-only and refuses peers of another user; `--endpoint-url`
//! drives the server over HTTP with SigV4 and reports its AWS errors as the AWS CLI does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TestCluster;
use common::cli_output::{json, ok, stderr, stdout};
use common::server::Server;
use serde_json::Value;

/// A fresh, initialised two-member cluster.
fn cluster() -> TestCluster {
    let tc = TestCluster::new(2);
    tc.init();
    tc
}

/// What a command printed and how it exited.
fn outcome(output: &Output) -> (Option<i32>, String, String) {
    (output.status.code(), stdout(output), stderr(output))
}

/// The admin socket of the cluster's config.
fn socket(tc: &TestCluster) -> std::path::PathBuf {
    tc.config().service.data_dir.join("admin.sock")
}

/// The audit events whose `eventName` is `name`, as `audit list` prints them.
fn events(tc: &TestCluster, name: &str) -> Vec<Value> {
    let filter = format!("{{ $.eventName = \"{name}\" }}");
    ok(&tc.cli(&["audit", "list", "--filter", &filter]))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn commands_print_the_same_while_the_server_holds_the_store() {
    let tc = cluster();
    let created = json(&tc.cli(&[
        "create-key",
        "--description",
        "socket",
        "--tags",
        "TagKey=team,TagValue=ops",
    ]));
    let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    ok(&tc.cli(&[
        "create-alias",
        "--alias-name",
        "alias/socket",
        "--target-key-id",
        &key_id,
    ]));
    let commands: Vec<Vec<&str>> = vec![
        vec!["describe-key", "--key-id", "alias/socket"],
        vec!["describe-key", "--key-id", &key_id, "--output", "text"],
        vec![
            "describe-key",
            "--key-id",
            &key_id,
            "--query",
            "KeyMetadata.Arn",
        ],
        vec!["list-aliases", "--key-id", &key_id],
        vec!["list-keys"],
        vec!["list-resource-tags", "--key-id", &key_id],
        vec![
            "get-key-policy",
            "--key-id",
            &key_id,
            "--policy-name",
            "default",
        ],
        vec!["get-key-rotation-status", "--key-id", &key_id],
        // A KMS exception: exit 254 and the AWS CLI's line.
        vec!["describe-key", "--key-id", "alias/missing"],
        // A bad parameter: exit 252 before anything is sent.
        vec!["encrypt", "--key-id", &key_id, "--plaintext", "not base64!"],
    ];
    let alone: Vec<_> = commands.iter().map(|args| outcome(&tc.cli(args))).collect();
    assert_eq!(alone[8].0, Some(254), "{:?}", alone[8]);
    assert_eq!(alone[9].0, Some(252), "{:?}", alone[9]);

    let mut server = Server::start(&tc);
    let mode = std::fs::metadata(socket(&tc)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the admin socket is owner-only");
    for (args, expected) in commands.iter().zip(&alone) {
        assert_eq!(&outcome(&tc.cli(args)), expected, "{args:?}");
    }

    // Key material changes through the server; what it encrypted decrypts later in-process.
    let plaintext = tc.path("plaintext.bin");
    std::fs::write(&plaintext, b"through the admin socket").unwrap();
    let encrypted = json(&tc.cli(&[
        "encrypt",
        "--key-id",
        "alias/socket",
        "--plaintext",
        &format!("fileb://{}", plaintext.display()),
        "--encryption-context",
        "purpose=test",
    ]));
    ok(&tc.cli(&["disable-key", "--key-id", &key_id]));
    let disabled = tc.cli(&["encrypt", "--key-id", &key_id, "--plaintext", "aGk="]);
    assert_eq!(disabled.status.code(), Some(254));
    assert!(
        stderr(&disabled)
            .contains("An error occurred (DisabledException) when calling the Encrypt operation")
    );
    ok(&tc.cli(&["enable-key", "--key-id", &key_id]));

    // The calls through the socket are the account root's, audited as in-process ones.
    let described = events(&tc, "DescribeKey");
    assert!(described.len() >= 2 * 3, "{described:?}");
    let identities: std::collections::BTreeSet<String> = described
        .iter()
        .map(|event| event["userIdentity"].to_string())
        .collect();
    assert_eq!(identities.len(), 1, "{identities:?}");
    assert!(identities.iter().next().unwrap().contains(":root"));

    // Maintenance and the status report's reconciliation run in the server.
    let report = json(&tc.cli(&["maintenance", "run"]));
    assert!(
        report["failures"].as_array().unwrap().is_empty(),
        "{report}"
    );
    let status = json(&tc.cli(&["cluster", "status", "--json"]));
    assert_eq!(status["inconsistencies"], Value::Array(vec![]), "{status}");
    assert!(status.get("metadata_unavailable").is_none(), "{status}");
    assert!(ok(&tc.cli(&["cluster", "status"])).contains("problems: none"));
    let verified = tc.cli(&["audit", "verify"]);
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
    assert!(stdout(&verified).contains("the audit trail is intact"));
    assert!(ok(&tc.cli(&["audit", "export"])).contains("\"Records\""));

    // The compliance check reads the server's store through the socket: its report and
    // exit status match the check run in-process once the server is gone, and its evidence
    // bundle verifies.
    let bundle = tc.path("served-bundle");
    let served = tc.cli(&[
        "compliance",
        "check",
        "--evidence",
        bundle.to_str().unwrap(),
    ]);
    let served_report: Value = serde_json::from_slice(&served.stdout).unwrap();
    assert!(
        stderr(&served).contains("evidence bundle written"),
        "{}",
        stderr(&served)
    );
    let verified = tc.cli(&["compliance", "verify-bundle", bundle.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", stderr(&verified));

    server.stop();
    assert!(!socket(&tc).exists(), "the socket is removed at shutdown");
    let alone = tc.cli(&["compliance", "check"]);
    let alone_report: Value = serde_json::from_slice(&alone.stdout).unwrap();
    let statuses = |report: &Value| -> Vec<(String, String)> {
        report["controls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|control| {
                (
                    control["id"].as_str().unwrap().to_owned(),
                    control["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert!(!statuses(&served_report).is_empty());
    assert_eq!(statuses(&served_report), statuses(&alone_report));
    assert_eq!(served.status.code(), alone.status.code());
    let ciphertext = tc.path("ciphertext.bin");
    std::fs::write(
        &ciphertext,
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            encrypted["CiphertextBlob"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let decrypted = json(&tc.cli(&[
        "decrypt",
        "--ciphertext-blob",
        &format!("fileb://{}", ciphertext.display()),
        "--encryption-context",
        "purpose=test",
    ]));
    assert_eq!(
        decrypted["Plaintext"].as_str().unwrap(),
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            b"through the admin socket"
        )
    );
}

#[test]
fn audit_tail_follows_live_events_through_the_server() {
    let tc = cluster();
    let key_id = json(&tc.cli(&["create-key"]))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut server = Server::start(&tc);
    let mut tail = Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
        .arg("--config")
        .arg(tc.path("hsm-kms.toml"))
        .args([
            "audit",
            "tail",
            "-n",
            "0",
            "-f",
            "--filter",
            "{ $.eventName = \"DisableKey\" }",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    let sender = lines.0;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if sender.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // Give the follower its first look before the event exists.
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    ok(&tc.cli(&["disable-key", "--key-id", &key_id]));
    let line = lines.1.recv_timeout(Duration::from_secs(10));
    tail.kill().unwrap();
    tail.wait().unwrap();
    let mut errors = String::new();
    tail.stderr
        .take()
        .unwrap()
        .read_to_string(&mut errors)
        .unwrap();
    let line = line.unwrap_or_else(|_| panic!("no live event; tail said: {errors}"));
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["eventName"], "DisableKey");
    assert!(line.contains(&key_id));
    assert!(!errors.contains("in use"), "{errors}");
    assert!(started.elapsed() < Duration::from_secs(10));
    server.stop();
}

#[test]
fn the_admin_socket_refuses_a_peer_of_another_user() {
    let tc = cluster();
    let mut server = Server::start(&tc);
    let path = socket(&tc);
    let own_uid = std::fs::metadata(&path).unwrap();
    let own_uid = std::os::unix::fs::MetadataExt::uid(&own_uid);
    if own_uid != 0 {
        // Only root can run a peer as another user; the uid rule is unit-tested in
        // hsm_kms::server::admin.
        eprintln!("skipped: needs root to connect as another user");
        server.stop();
        return;
    }
    // nobody's client: at mode 0600 the socket itself keeps it out.
    let request = r#"{"request":"call","operation":"ListKeys","body":{}}"#;
    let client = |socket: &std::path::Path| {
        Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
            ])
            .arg(
                "import socket,sys\n\
                 s=socket.socket(socket.AF_UNIX)\n\
                 try:\n  s.connect(sys.argv[1])\n\
                 except OSError as e:\n  print('connect', e.errno); sys.exit(0)\n\
                 try:\n  s.sendall(sys.argv[2].encode()+b'\\n'); data=s.recv(65536)\n\
                 except OSError:\n  data=b''\n\
                 print('answer', repr(data))\n",
            )
            .arg(socket)
            .arg(request)
            .output()
            .unwrap()
    };
    // The data directory may itself be closed to nobody: give it a way in for this test.
    let data_dir = tc.config().service.data_dir;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(tc.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let denied = ok(&client(&path));
    assert_eq!(denied.trim(), "connect 13", "EACCES at mode 0600");

    // With the file opened to everyone, the SO_PEERCRED check refuses the peer unanswered.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = ok(&client(&path));
    assert_eq!(refused.trim(), "answer b''", "{refused}");
    // The server's own user (root here) is still served.
    let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    assert!(answer.starts_with(r#"{"ok":{"Keys":"#), "{answer}");

    // Refusals are audited without waiting for the disk; the stop flushes the trail.
    server.stop();
    let refusals = events(&tc, "AdminSocketConnect");
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["errorCode"], "AccessDenied");
    assert!(
        refusals[0].to_string().contains("uid 65534"),
        "{}",
        refusals[0]
    );
    assert!(common::server::log_tail(&tc).contains("refused a peer of another user"));
}

#[test]
fn endpoint_url_signs_with_sigv4_and_reports_aws_errors() {
    let tc = cluster();
    let mut server = Server::start(&tc);
    let key = common::server::AccessKey::of(&tc);
    let endpoint = server.endpoint.clone();
    // No config: everything comes from the options and the AWS environment.
    let remote = |args: &[&str], secret: &str| {
        Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
            .args(["--endpoint-url", &endpoint, "--region", "us-east-1"])
            .args(args)
            .env_remove("HSM_KMS_CONFIG")
            .env("AWS_ACCESS_KEY_ID", &key.id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap()
    };
    let created = json(&remote(
        &["create-key", "--description", "remote"],
        &key.secret,
    ));
    let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap();
    let remote_view = outcome(&remote(&["describe-key", "--key-id", key_id], &key.secret));
    let socket_view = outcome(&tc.cli(&["describe-key", "--key-id", key_id]));
    assert_eq!(remote_view, socket_view);
    let listed = json(&remote(&["list-keys"], &key.secret));
    assert!(listed["Keys"].to_string().contains(key_id));

    // The profile of a shared credentials file, as the AWS CLI reads it.
    let by_profile = Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
        .args(["--endpoint-url", &server.endpoint, "--profile", "hsm-kms"])
        .args(["encrypt", "--key-id", key_id, "--plaintext", "aGVsbG8="])
        .env_remove("HSM_KMS_CONFIG")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", tc.path("credentials"))
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert_eq!(json(&by_profile)["KeyId"], created["KeyMetadata"]["Arn"]);

    // A wrong secret: the server's AWS exception, printed and exited as the AWS CLI does.
    let wrong = remote(
        &["describe-key", "--key-id", key_id],
        "wrong-secret-wrong-secret-wrong",
    );
    assert_eq!(wrong.status.code(), Some(254), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains(
            "An error occurred (InvalidSignatureException) when calling the DescribeKey operation: "
        ),
        "{}",
        stderr(&wrong)
    );
    let missing = remote(&["describe-key", "--key-id", "alias/none"], &key.secret);
    assert_eq!(missing.status.code(), Some(254));
    assert!(
        stderr(&missing).contains("(NotFoundException)"),
        "{}",
        stderr(&missing)
    );

    server.stop();
    let unreachable = remote(&["list-keys"], &key.secret);
    assert_eq!(
        unreachable.status.code(),
        Some(255),
        "{}",
        stderr(&unreachable)
    );
    assert!(
        stderr(&unreachable).contains("cannot reach"),
        "{}",
        stderr(&unreachable)
    );
}
