//! `hsm-kms compliance check` against real SoftHSM2 clusters and a real sled store: a clean
//! cluster passes every control; then each control is broken for real (raw PKCS#11 on a test
//! token through `pkcs11-tool`, a store record rewritten, a file's mode changed) and must FAIL
//! with the evidence that shows it. The reports are checked against their schemas (JSON Schema
//! in docs/, the JUnit XSD in tests/) and the HTML report is rendered by headless Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestCluster;
use hsm_kms::audit::dispatcher::read_cursor;
use hsm_kms::audit::log::{StoredEvent, read_head};
use hsm_kms::clock::{Clock, ManualClock};
use hsm_kms::cluster::{Cluster, MaterialId};
use hsm_kms::compliance::{self, Report, Sources, Status, bundle, html, junit};
use hsm_kms::config::Config;
use hsm_kms::keystore::api::*;
use hsm_kms::keystore::{Caller, KeyStore};
use hsm_kms::store::{Batch, SledStore, Table};
use serde_json::Value;

/// The development credential's identity policy: decryption only with keys tagged for it.
const IDENTITY_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:GenerateDataKey"],"Resource":"arn:aws:kms:us-east-1:111122223333:key/*","Condition":{"StringEquals":{"aws:ResourceTag/team":"dev"}}}]}"#;

/// A cluster, its config (checkpoints every 3 events; the dev credential with an identity
/// policy), an open key store with the configured alarms running, and a manual clock.
struct Fixture {
    cluster: TestCluster,
    config: Config,
    clock: Arc<ManualClock>,
    store: KeyStore,
    caller: Caller,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_members(2)
    }

    fn with_members(members: usize) -> Fixture {
        let mut cluster = TestCluster::softhsm(members);
        let text = cluster
            .config_text
            .replace(
                "user/hsm-kms-dev\"\n",
                &format!(
                    "user/hsm-kms-dev\"\npolicies = [{}]\n",
                    toml_string(IDENTITY_POLICY)
                ),
            )
            .replace(
                "[clusters.local]\n",
                "[audit]\ncheckpoint_every = 3\n\n[clusters.local]\n",
            );
        assert_ne!(text, cluster.config_text);
        cluster.config_text = text.clone();
        cluster.write_config("hsm-kms.toml", &text);
        let config = cluster.config();
        assert!(!config.credentials[0].policies.is_empty());
        Cluster::init("local", config.default_cluster().unwrap()).unwrap();
        let clock = Arc::new(ManualClock::new());
        let store = open(&config, clock.clone());
        let caller = Caller::local(store.scope());
        Fixture {
            cluster,
            config,
            clock,
            store,
            caller,
        }
    }

    /// A key with automatic rotation on, used once.
    fn rotated_key(&self) -> String {
        let key = self.create(None);
        self.store
            .enable_key_rotation(
                &self.caller,
                EnableKeyRotationRequest {
                    key_id: key.clone(),
                    rotation_period_in_days: Some(90),
                },
            )
            .unwrap();
        self.store
            .encrypt(
                &self.caller,
                EncryptRequest {
                    key_id: key.clone(),
                    plaintext: secrecy::SecretSlice::from(b"evidence".to_vec()),
                    ..Default::default()
                },
            )
            .unwrap();
        key
    }

    fn create(&self, policy: Option<&str>) -> String {
        self.store
            .create_key(
                &self.caller,
                CreateKeyRequest {
                    policy: policy.map(str::to_owned),
                    ..Default::default()
                },
            )
            .unwrap()
            .key_metadata
            .key_id
    }

    /// Waits until every configured alarm has delivered the trail up to its head.
    fn settle_alarms(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let alarms = self
            .config
            .alarms
            .alarms(&self.config.service.data_dir)
            .unwrap();
        loop {
            let head = read_head(self.store.metadata()).unwrap().seq;
            let behind: Vec<&str> = alarms
                .iter()
                .filter(|alarm| {
                    read_cursor(self.store.metadata(), &alarm.name)
                        .unwrap()
                        .is_none_or(|cursor| cursor.seq < head)
                })
                .map(|alarm| alarm.name.as_str())
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "alarms {behind:?} did not reach event {head}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn check(&self) -> Report {
        self.settle_alarms();
        let cluster = self.store.shared_cluster();
        let sources = Sources {
            config: &self.config,
            cluster: &cluster,
            store: self.store.metadata(),
            now_millis: self.clock.now_millis(),
        };
        let report = compliance::check(&sources, &compliance::select(&[]).unwrap()).unwrap();
        validate_json(&report);
        report
    }

    /// Runs `pkcs11-tool` as the crypto user on `member`'s token (raw PKCS#11).
    fn pkcs11_tool(&self, member: &str, args: &[&str]) {
        let member_config = self
            .config
            .default_cluster()
            .unwrap()
            .members
            .iter()
            .find(|m| m.name == member)
            .unwrap()
            .clone();
        let pin = self.cluster.user_pin(member);
        let output = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &member_config.env["SOFTHSM2_CONF"])
            .arg("--module")
            .arg(&member_config.module)
            .args(["--token-label", member, "--login", "--pin", pin.trim()])
            .args(args)
            .output()
            .expect("pkcs11-tool (Debian package opensc) runs");
        assert!(
            output.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn open(config: &Config, clock: Arc<ManualClock>) -> KeyStore {
    let cluster = Cluster::open("local", config.default_cluster().unwrap()).unwrap();
    let metadata = SledStore::open(&config.service.data_dir).unwrap();
    let scope =
        hsm_kms::ids::Scope::new(&config.service.region, &config.service.account_id).unwrap();
    let mut store = KeyStore::with_parts(
        scope,
        cluster,
        Box::new(metadata),
        clock,
        config.audit.clone(),
    )
    .unwrap();
    store
        .start_alarms(config.alarms.alarms(&config.service.data_dir).unwrap())
        .unwrap();
    store
}

fn toml_string(text: &str) -> String {
    format!("'''{text}'''")
}

fn control<'a>(report: &'a Report, id: &str) -> &'a compliance::ControlResult {
    report.controls.iter().find(|c| c.id == id).unwrap()
}

fn finding<'a>(report: &'a Report, id: &str, subject: &str) -> &'a compliance::Finding {
    control(report, id)
        .findings
        .iter()
        .find(|f| f.subject == subject)
        .unwrap_or_else(|| panic!("{id} has no finding about {subject}: {report:#?}"))
}

/// Every control PASSes except the two that cannot apply yet.
fn assert_clean(report: &Report) {
    for control in &report.controls {
        match control.id {
            "KMS-ACC-3" => {
                assert_eq!(control.status, Status::NotApplicable);
                assert_eq!(control.summary, "no grants");
            }
            "KMS-PLT-3" => assert_eq!(control.status, Status::NotApplicable),
            _ => assert_eq!(
                control.status,
                Status::Pass,
                "{} {}: {:#?}",
                control.id,
                control.summary,
                control.findings
            ),
        }
    }
    assert!(!report.failed());
}

/// The report against docs/compliance-report.schema.json.
fn validate_json(report: &Report) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_slice(
        &std::fs::read(root.join("docs/compliance-report.schema.json")).unwrap(),
    )
    .unwrap();
    let instance: Value = serde_json::from_str(&report.to_json()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "report does not match its schema: {errors:#?}"
    );
}

/// Whether a tool the test needs is missing; outside CI that skips the check loudly.
fn missing(tool: &str, package: &str) -> bool {
    if Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is missing in CI: scripts/test.sh installs the Debian package {package}"
    );
    eprintln!(
        "\n!!!!!!!! SKIPPED: {tool} is not installed (Debian package {package}; scripts/test.sh installs it) !!!!!!!!\n"
    );
    true
}

/// The JUnit rendering against tests/junit.xsd, with xmllint.
fn validate_junit(report: &Report, dir: &Path) {
    let xml = junit::render(report);
    let path = dir.join("report.junit.xml");
    std::fs::write(&path, &xml).unwrap();
    let cases = xml.matches("<testcase ").count();
    let expected: usize = report
        .controls
        .iter()
        .map(|c| c.findings.len().max(1))
        .sum();
    assert_eq!(cases, expected, "one test case per control and subject");
    if missing("xmllint", "libxml2-utils") {
        return;
    }
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/junit.xsd");
    let output = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(xsd)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "JUnit XML does not validate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Where test artifacts are kept: `target/compliance/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compliance");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The HTML report rendered by headless Chromium: no console error, every control and the
/// four pictures in the rendered DOM; a screenshot is kept under target/compliance/.
fn render_html(report: &Report, dir: &Path) {
    let page = html::render(report);
    assert!(!page.contains("<script"), "no script");
    for external in ["src=\"http", "href=\"http", "url(", "@import"] {
        assert!(!page.contains(external), "external asset: {external}");
    }
    let path = dir.join("compliance-report.html");
    std::fs::write(&path, &page).unwrap();
    std::fs::copy(&path, artifacts().join("compliance-report.html")).unwrap();
    if missing("chromium", "chromium") {
        return;
    }
    let url = format!("file://{}", path.display());
    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--enable-logging=stderr", "--v=0"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let dumped = chromium(&["--dump-dom"]);
    assert!(dumped.status.success(), "{dumped:?}");
    let dom = String::from_utf8_lossy(&dumped.stdout);
    let log = String::from_utf8_lossy(&dumped.stderr);
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| {
            line.contains("CONSOLE") || line.contains("Uncaught") || line.contains("Refused to")
        })
        .collect();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    for control in &report.controls {
        assert!(
            dom.contains(&format!("id=\"{}\"", control.id)),
            "{} is not on the page",
            control.id
        );
    }
    for chart in [
        "chart-keys-by-state",
        "chart-rotation-age",
        "chart-audit-events-per-day",
        "chart-copies-per-key",
    ] {
        assert!(
            dom.contains(&format!("<svg id=\"{chart}\"")),
            "{chart} missing"
        );
    }
    assert!(dom.contains("class=\"bar\""), "the pictures have bars");
    let screenshot = artifacts().join("compliance-report.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = chromium(&[
        "--hide-scrollbars",
        "--window-size=1280,2400",
        &format!("--screenshot={}", screenshot.display()),
    ]);
    assert!(shot.status.success(), "{shot:?}");
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}

#[test]
fn a_clean_cluster_passes_every_control_in_every_format() {
    let f = Fixture::new();
    let first = f.rotated_key();
    let second = f.rotated_key();
    f.store
        .rotate_key_on_demand(&f.caller, key_id(&second))
        .unwrap();
    let report = f.check();
    assert_clean(&report);

    // Per key and version, with the attributes read back from both members.
    for version in [
        format!("{first}/1"),
        format!("{second}/1"),
        format!("{second}/2"),
    ] {
        let held = finding(&report, "KMS-HSM-1", &version);
        assert_eq!(held.status, Status::Pass, "{held:#?}");
        let members = held.evidence["members"].as_array().unwrap();
        assert_eq!(members.len(), 2);
        let mut probes = Vec::new();
        for member in members {
            let object = &member["objects"][0];
            assert_eq!(object["CKA_SENSITIVE"], true);
            assert_eq!(object["CKA_WRAP_WITH_TRUSTED"], true);
            let probe = object["key_check_values"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["method"] == "GCM_PROBE")
                .unwrap()["hex"]
                .clone();
            probes.push(probe);
        }
        assert_eq!(probes[0], probes[1], "same key on both members");
        let copies = finding(&report, "KMS-HSM-2", &version);
        assert_eq!(copies.evidence["copies"], 2);
    }
    assert_eq!(finding(&report, "KMS-ROT-1", &first).status, Status::Pass);
    assert!(
        report.audit.newest_checkpoint_seq.is_some(),
        "checkpoints every 3 events"
    );
    assert_eq!(report.charts.keys_by_state["Enabled"], 2);
    // hsm-kms's own audit seal key is checked like any key material.
    let audit_key = finding(&report, "KMS-HSM-1", "hsm-kms-audit/1");
    assert_eq!(audit_key.status, Status::Pass, "{audit_key:#?}");
    assert_eq!(audit_key.evidence["key_state"], "internal");
    let labels: Vec<&str> = report
        .charts
        .copies_per_key
        .iter()
        .map(|bar| bar.label.as_str())
        .collect();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert!(labels.contains(&"hsm-kms-audit/1"), "{labels:?}");
    // Nothing secret in any rendering.
    let json = report.to_json();
    for member in ["hsm-a", "hsm-b"] {
        let pin = f.cluster.user_pin(member);
        assert!(!json.contains(pin.trim()), "a PIN in the report");
    }

    let dir = tempfile::tempdir().unwrap();
    validate_junit(&report, dir.path());
    render_html(&report, dir.path());

    // The evidence bundle: written, sealed in the HSMs, verified, and a change is caught.
    let cluster = f.store.shared_cluster();
    let trail = {
        let sources = Sources {
            config: &f.config,
            cluster: &cluster,
            store: f.store.metadata(),
            now_millis: f.clock.now_millis(),
        };
        compliance::trail::TrailView::read(&sources).unwrap()
    };
    let bundle_dir = dir.path().join("bundle");
    let manifest = bundle::write(
        &bundle_dir,
        &report,
        f.store.metadata(),
        trail.newest_checkpoint(),
        &cluster,
    )
    .unwrap();
    let names: Vec<&str> = manifest.files.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["report.json", "audit-events.jsonl", "checkpoint.json"]
    );
    bundle::verify(&bundle_dir, &cluster).unwrap();
    // An auditor checks the manifest's signature with openssl alone, from the public key the
    // bundle carries.
    let openssl_verifies = || {
        std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(bundle_dir.join("signing-key.pem"))
            .arg("-signature")
            .arg(bundle_dir.join("manifest.sig"))
            .arg(bundle_dir.join("manifest.json"))
            .output()
            .unwrap()
    };
    let checked = openssl_verifies();
    assert!(
        checked.status.success()
            && String::from_utf8_lossy(&checked.stdout).contains("Verified OK"),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let events = std::fs::read_to_string(bundle_dir.join("audit-events.jsonl")).unwrap();
    assert!(events.lines().count() as u64 >= report.audit.head_seq);
    std::fs::write(
        bundle_dir.join("audit-events.jsonl"),
        events.replace("Encrypt", "Decrypt"),
    )
    .unwrap();
    let error = bundle::verify(&bundle_dir, &cluster)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("audit-events.jsonl does not match"),
        "{error}"
    );
    let manifest_text = std::fs::read_to_string(bundle_dir.join("manifest.json")).unwrap();
    std::fs::write(
        bundle_dir.join("manifest.json"),
        manifest_text.replace("audit-events", "audit-evenst"),
    )
    .unwrap();
    let error = bundle::verify(&bundle_dir, &cluster)
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not match its seal"), "{error}");
    assert!(
        !openssl_verifies().status.success(),
        "openssl accepted an edited manifest"
    );

    // The command line: refused while a process without an admin socket (this test's key
    // store) holds the store, then run once it has let go of it. Through a running server's
    // socket: tests/cli_with_server.rs.
    let held = f.cluster.cli(&["compliance", "check"]);
    assert!(!held.status.success());
    let said = String::from_utf8_lossy(&held.stderr);
    assert!(said.contains("the metadata store is in use"), "{said}");
    assert!(said.contains("without an admin socket"), "{said}");
    f.store.shutdown();
    let Fixture {
        cluster: tc, store, ..
    } = f;
    drop(store);
    let out = tc.path("cli-report");
    let output = tc.cli(&[
        "compliance",
        "check",
        "--format",
        "junit",
        "--out",
        out.to_str().unwrap(),
        "--evidence",
        tc.path("cli-bundle").to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.join("compliance-report.junit.xml").exists());
    let verified = tc.cli(&[
        "compliance",
        "verify-bundle",
        tc.path("cli-bundle").to_str().unwrap(),
    ]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let unknown = tc.cli(&["compliance", "check", "--control", "KMS-NOPE-9"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown control"));
}

#[test]
fn key_material_broken_through_raw_pkcs11_fails_with_the_attributes_read() {
    let f = Fixture::new();
    let replaced = f.rotated_key();
    let missing_key = f.rotated_key();
    let untouched = f.rotated_key();
    assert_clean(&f.check());

    let hex_id = |key: &str| hex::encode(MaterialId::new(key, 1).cka_id());
    // On hsm-b: the copy of `replaced` swapped for a key made outside the HSM, not sensitive,
    // extractable without a trusted wrapping key; the copy of `missing_key` deleted.
    f.pkcs11_tool(
        "hsm-b",
        &[
            "--delete-object",
            "--type",
            "secrkey",
            "--id",
            &hex_id(&replaced),
        ],
    );
    let value = f.cluster.path("outside-key.bin");
    std::fs::write(&value, [7u8; 32]).unwrap();
    f.pkcs11_tool(
        "hsm-b",
        &[
            "--write-object",
            value.to_str().unwrap(),
            "--type",
            "secrkey",
            "--key-type",
            "AES:32",
            "--id",
            &hex_id(&replaced),
            "--label",
            "planted",
            "--extractable",
        ],
    );
    f.pkcs11_tool(
        "hsm-b",
        &[
            "--delete-object",
            "--type",
            "secrkey",
            "--id",
            &hex_id(&missing_key),
        ],
    );

    let report = f.check();
    assert!(report.failed());
    let planted = finding(&report, "KMS-HSM-1", &format!("{replaced}/1"));
    assert_eq!(planted.status, Status::Fail);
    assert!(
        planted
            .reason
            .contains("CKA_SENSITIVE is false on member hsm-b"),
        "{}",
        planted.reason
    );
    assert!(
        planted
            .reason
            .contains("extractable without CKA_WRAP_WITH_TRUSTED on member hsm-b"),
        "{}",
        planted.reason
    );
    assert!(planted.reason.contains("differ"), "{}", planted.reason);
    let on_b = planted.evidence["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["member"] == "hsm-b")
        .unwrap();
    assert_eq!(on_b["objects"][0]["CKA_SENSITIVE"], false);
    assert_eq!(on_b["objects"][0]["CKA_EXTRACTABLE"], true);
    assert_eq!(on_b["objects"][0]["CKA_WRAP_WITH_TRUSTED"], false);

    let lacking = finding(&report, "KMS-HSM-1", &format!("{missing_key}/1"));
    assert_eq!(lacking.status, Status::Fail);
    assert!(
        lacking.reason.contains("member hsm-b does not hold it"),
        "{}",
        lacking.reason
    );
    let redundancy = finding(&report, "KMS-HSM-2", &format!("{missing_key}/1"));
    assert_eq!(redundancy.status, Status::Fail);
    assert_eq!(redundancy.evidence["copies"], 1);

    assert_eq!(
        finding(&report, "KMS-HSM-1", &format!("{untouched}/1")).status,
        Status::Pass
    );
    let dir = tempfile::tempdir().unwrap();
    validate_junit(&report, dir.path());
    let xml = junit::render(&report);
    assert!(xml.contains(&format!("name=\"KMS-HSM-1 {missing_key}/1\"")));
    assert!(
        xml.contains("<failure message=\"member hsm-b does not hold it"),
        "{xml}"
    );
}

#[test]
fn metadata_audit_and_file_breaks_fail_their_controls_with_evidence() {
    let f = Fixture::new();
    let rotated = f.rotated_key();
    assert_clean(&f.check());

    // A key with rotation off.
    let unrotated = f.create(None);
    let report = f.check();
    let rotation = finding(&report, "KMS-ROT-1", &unrotated);
    assert_eq!(rotation.status, Status::Fail);
    assert!(rotation.reason.contains("automatic rotation is off"));
    assert_eq!(rotation.evidence["rotation_enabled"], false);
    assert_eq!(finding(&report, "KMS-ROT-1", &rotated).status, Status::Pass);
    f.store
        .enable_key_rotation(
            &f.caller,
            EnableKeyRotationRequest {
                key_id: unrotated.clone(),
                rotation_period_in_days: None,
            },
        )
        .unwrap();

    // A rotation period that ran out without a rotation.
    f.clock.advance(Duration::from_secs(400 * 86_400));
    let report = f.check();
    let overdue = finding(&report, "KMS-ROT-1", &rotated);
    assert_eq!(overdue.status, Status::Fail, "{overdue:#?}");

    // The events before the jump have waited 400 days without a sealed checkpoint.
    let late = control(&report, "KMS-AUD-2")
        .findings
        .iter()
        .find(|f| f.evidence["waited_ms"].as_i64().unwrap_or(0) >= 400 * 86_400_000)
        .expect("a checkpoint 400 days late");
    assert_eq!(late.status, Status::Fail);
    f.store.run_maintenance().unwrap();
    let report = f.check();
    assert_eq!(control(&report, "KMS-ROT-1").status, Status::Pass);

    // A key policy with "Principal": "*".
    let public = f.create(Some(
        r#"{"Version":"2012-10-17","Statement":[
            {"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
            {"Sid":"everyone","Effect":"Allow","Principal":"*","Action":["kms:Decrypt","kms:ReEncrypt*"],"Resource":"*"}]}"#,
    ));
    f.store
        .enable_key_rotation(
            &f.caller,
            EnableKeyRotationRequest {
                key_id: public.clone(),
                rotation_period_in_days: None,
            },
        )
        .unwrap();
    let report = f.check();
    let access = finding(&report, "KMS-ACC-1", &public);
    assert_eq!(access.status, Status::Fail);
    let open = &access.evidence["open_statements"][0];
    assert_eq!(open["statement"], "statement 1 (Sid everyone)");
    assert_eq!(open["principal"], "*");
    assert_eq!(
        open["actions_allowed"],
        serde_json::json!(["kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo"])
    );
    assert_eq!(finding(&report, "KMS-ACC-1", &rotated).status, Status::Pass);

    // A deletion: a finding (WARN) with its alarm delivered, its window in range.
    f.store
        .schedule_key_deletion(
            &f.caller,
            ScheduleKeyDeletionRequest {
                key_id: public.clone(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    let report = f.check();
    let deletion = finding(&report, "KMS-DEL-1", &public);
    assert_eq!(deletion.status, Status::Warn, "{deletion:#?}");
    assert_eq!(deletion.evidence["pending_window_days"], 7);
    let alarm = &deletion.evidence["alarms"][0];
    assert_eq!(alarm["alarm"], "key-disabled-or-deletion-scheduled");
    assert_eq!(alarm["delivered"], true);
    assert!(alarm["cursor_seq"].as_u64() >= deletion.evidence["schedule_event_seq"].as_u64());
    assert_eq!(
        control(&report, "KMS-DEL-1").status,
        Status::Warn,
        "a deletion alone is a finding, not a failure"
    );

    // An edited audit event, in the record that holds it.
    let seq = 2u64;
    let (key, raw) = f
        .store
        .metadata()
        .scan(Table::Audit, b"", None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(key, record)| (key, record.payload))
        .find(|(_, raw)| {
            let events = StoredEvent::decode_record(raw).unwrap();
            events.iter().any(|event| event.seq == seq)
        })
        .unwrap();
    let mut events = StoredEvent::decode_record(&raw).unwrap();
    let stored = events.iter_mut().find(|event| event.seq == seq).unwrap();
    let original = stored.json.clone();
    let text = String::from_utf8(stored.json.clone()).unwrap();
    stored.json = text
        .replacen("kms.amazonaws.com", "kms.amazonaws.con", 1)
        .into_bytes();
    assert_ne!(stored.json, original);
    let mut batch = Batch::new();
    batch.put(Table::Audit, &key, StoredEvent::encode_record(&events));
    f.store.metadata().commit(batch).unwrap().unwrap();
    let report = f.check();
    let chain = finding(&report, "KMS-AUD-1", "event 2");
    assert_eq!(chain.status, Status::Fail);
    assert_eq!(chain.reason, "event 2 was edited");
    assert_eq!(control(&report, "KMS-AUD-1").evidence["first_bad_seq"], 2);
    let mut batch = Batch::new();
    batch.put(Table::Audit, &key, raw);
    f.store.metadata().commit(batch).unwrap().unwrap();
    assert_eq!(control(&f.check(), "KMS-AUD-1").status, Status::Pass);

    // A group-readable PIN file.
    use std::os::unix::fs::PermissionsExt;
    let pin_file = f.cluster.path("hsm-b/user.pin");
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let report = f.check();
    let file = finding(&report, "KMS-PLT-2", pin_file.to_str().unwrap());
    assert_eq!(file.status, Status::Fail);
    assert_eq!(file.evidence["mode"], "0640");
    assert!(
        file.reason.contains("member hsm-b user_pin"),
        "{}",
        file.reason
    );
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Once fixed, what remains: the deletion finding, the public key's policy, and the
    // checkpoint that sealed the events of before the jump 400 days late.
    let report = f.check();
    for control in &report.controls {
        let allowed = match control.id {
            "KMS-DEL-1" => Status::Warn,
            "KMS-ACC-1" | "KMS-AUD-2" => Status::Fail,
            "KMS-ACC-3" | "KMS-PLT-3" => Status::NotApplicable,
            _ => Status::Pass,
        };
        assert_eq!(
            control.status, allowed,
            "{}: {:#?}",
            control.id, control.findings
        );
    }
    let dir = tempfile::tempdir().unwrap();
    validate_junit(&report, dir.path());
}

#[test]
fn configuration_breaks_fail_access_alarm_and_tls_controls() {
    let f = Fixture::new();
    f.rotated_key();
    let mut config = f.config.clone();
    // A credential without identity policy, one whose policy decrypts with every key, a
    // built-in alarm turned off, a public listener without TLS.
    config.credentials[0].policies.clear();
    let mut broad = config.credentials[0].clone();
    broad.principal_arn = "arn:aws:iam::111122223333:user/broad".into();
    broad.policies = vec![
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#
            .into(),
    ];
    config.credentials.push(broad);
    config.alarms.disabled = vec!["unusable-key-used".into()];
    config.server.listen = "0.0.0.0:8443".parse().unwrap();
    f.settle_alarms();
    let cluster = f.store.shared_cluster();
    let sources = Sources {
        config: &config,
        cluster: &cluster,
        store: f.store.metadata(),
        now_millis: f.clock.now_millis(),
    };
    let report = compliance::check(&sources, &compliance::select(&[]).unwrap()).unwrap();
    validate_json(&report);
    let none = finding(
        &report,
        "KMS-ACC-2",
        "arn:aws:iam::111122223333:user/hsm-kms-dev",
    );
    assert_eq!(none.status, Status::Fail);
    assert!(none.reason.contains("no identity policy"));
    let broad = finding(&report, "KMS-ACC-2", "arn:aws:iam::111122223333:user/broad");
    assert_eq!(broad.status, Status::Fail);
    assert_eq!(
        broad.evidence["broad_statements"][0]["actions_allowed"][0],
        "kms:Decrypt"
    );
    let alarm = finding(&report, "KMS-AUD-3", "unusable-key-used");
    assert_eq!(alarm.status, Status::Fail);
    let listener = finding(&report, "KMS-PLT-1", "0.0.0.0:8443");
    assert_eq!(listener.status, Status::Fail);
    assert!(listener.reason.contains("tls_cert is not configured"));

    // --control selects.
    let only = compliance::check(
        &sources,
        &compliance::select(&["kms-plt-1".into()]).unwrap(),
    )
    .unwrap();
    assert_eq!(only.controls.len(), 1);
    assert!(only.failed());
}

#[test]
fn a_member_down_is_named_with_how_long_and_copies_elsewhere_still_count() {
    let mut f = Fixture::with_members(3);
    // The manual clock jumps 2 h below, which no timed checkpoint follows: this test is about
    // the member, so events may wait a day for their seal here.
    f.config.compliance.checkpoint_max_gap_s = Some(86_400);
    let key = f.rotated_key();
    assert_clean(&f.check());

    f.cluster.hide_token("hsm-c");
    let member = f.store.cluster().member("hsm-c").unwrap().clone();
    let cause = member.probe().expect_err("the token is gone");
    member.mark_down(cause);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hsm_kms::audit::log::read_events(f.store.metadata(), 0, 10_000)
        .unwrap()
        .iter()
        .any(|e| e.event()["eventName"] == "HsmMemberDown")
    {
        assert!(Instant::now() < deadline, "no HsmMemberDown event recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
    f.clock.advance(Duration::from_secs(2 * 3600));

    let report = f.check();
    let down = finding(&report, "KMS-HSM-2", "hsm-c");
    assert_eq!(down.status, Status::Warn, "{down:#?}");
    assert!(down.reason.starts_with("down since"), "{}", down.reason);
    // (HsmMemberDown is dated by the system clock, the check by the test's manual clock, which
    // started a few seconds earlier.)
    let down_for = down.evidence["down"]["down_for_ms"].as_i64().unwrap();
    assert!(
        ((2 * 3600 - 60) * 1000..=2 * 3600 * 1000).contains(&down_for),
        "{down_for}"
    );
    assert!(down.evidence["down"]["down_event_seq"].as_u64().is_some());
    // Two copies in two zones remain: redundancy holds; hsm-c's copy was not read.
    assert_eq!(finding(&report, "KMS-HSM-2", "local").status, Status::Pass);
    assert_eq!(
        finding(&report, "KMS-HSM-2", &format!("{key}/1")).status,
        Status::Pass
    );
    let unread = finding(&report, "KMS-HSM-1", &format!("{key}/1"));
    assert_eq!(unread.status, Status::Warn);
    assert!(
        unread.reason.contains("member hsm-c could not be read"),
        "{}",
        unread.reason
    );
    let failed: Vec<(&str, &str)> = report
        .controls
        .iter()
        .filter(|c| c.status == Status::Fail)
        .flat_map(|c| {
            c.findings
                .iter()
                .filter(|f| f.status == Status::Fail)
                .map(move |f| (c.id, f.reason.as_str()))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "a member down is a warning while the quorum holds: {failed:#?}"
    );
    f.cluster.restore_token("hsm-c");
}

fn key_id(key: &str) -> KeyIdRequest {
    KeyIdRequest {
        key_id: key.into(),
        ..Default::default()
    }
}

#[test]
fn a_grant_older_than_the_configured_age_fails() {
    let f = Fixture::new();
    let key = f.create(None);
    let grant = f
        .store
        .create_grant(
            &f.caller,
            CreateGrantRequest {
                key_id: key.clone(),
                grantee_principal: "arn:aws:iam::111122223333:user/batch".into(),
                operations: vec!["Encrypt".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let young = finding(&f.check(), "KMS-ACC-3", &grant.grant_id).clone();
    assert_eq!(young.status, Status::Pass, "{young:#?}");
    assert_eq!(young.evidence["key_id"], key.as_str());
    f.clock.advance(Duration::from_secs(91 * 86_400));
    let report = f.check();
    let old = finding(&report, "KMS-ACC-3", &grant.grant_id);
    assert_eq!(old.status, Status::Fail, "{old:#?}");
    assert!(old.reason.contains("older than 90"), "{}", old.reason);
    assert_eq!(old.evidence["age_days"].as_f64(), Some(91.0));
}

#[test]
fn imported_material_expiring_soon_is_a_warning() {
    let f = Fixture::new();
    let external = |name: &str| {
        f.store
            .create_key(
                &f.caller,
                CreateKeyRequest {
                    origin: Some("EXTERNAL".into()),
                    description: Some(name.into()),
                    ..Default::default()
                },
            )
            .unwrap()
            .key_metadata
            .key_id
    };
    let waiting = external("waits");
    let expiring = external("expires");
    let (import_token, wrapped) =
        common::kms::wrapped_for_import(&f.store, &f.caller, &expiring, &[0x42u8; 32]);
    let valid_to = (f.clock.now_millis() + 10 * 86_400_000) as f64 / 1000.0;
    f.store
        .import_key_material(
            &f.caller,
            ImportKeyMaterialRequest {
                key_id: expiring.clone(),
                import_token,
                encrypted_key_material: wrapped,
                valid_to: Some(valid_to),
                expiration_model: Some("KEY_MATERIAL_EXPIRES".into()),
            },
        )
        .unwrap();
    let report = f.check();
    let soon = finding(&report, "KMS-PLT-3", &expiring);
    assert_eq!(soon.status, Status::Warn, "{soon:#?}");
    assert!(
        soon.reason.contains("expires in 10 day(s), within 30"),
        "{}",
        soon.reason
    );
    assert_eq!(soon.evidence["expiration_model"], "KEY_MATERIAL_EXPIRES");
    let waits = finding(&report, "KMS-PLT-3", &waiting);
    assert_eq!(waits.status, Status::Warn);
    assert!(waits.reason.contains("waits for an import"));
}
