//! The HSM cluster against real SoftHSM2 tokens: ceremonies, replication, preflight refusals,
//! failover and vendor-synchronised clusters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::TestCluster;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_kms::cluster::{Cluster, ClusterError, MaterialId};
use hsm_kms::config::{ClusterConfig, Config, HsmEndpoint, Replication};
use hsm_kms::hsm::{Gcm, GcmSeal, Portability, templates};

fn gcm<'a>(iv: &[u8], aad: &'a [u8]) -> Gcm<'a> {
    Gcm::new(iv, aad, 128).unwrap()
}

fn seal(aad: &[u8]) -> GcmSeal<'_> {
    GcmSeal::new(aad, 128).unwrap()
}

fn new_material() -> MaterialId {
    MaterialId::new(uuid::Uuid::new_v4().to_string(), 1)
}

/// A raw PKCS#11 session on a member's token, beside the cluster (same process, same login).
use common::raw_session;

fn find(session: &Session, id: &[u8]) -> ObjectHandle {
    session.find_objects(&[Attribute::Id(id.to_vec())]).unwrap()[0]
}

#[test]
fn two_members_init_replicate_and_decrypt_anywhere() {
    let tc = TestCluster::new(2);
    let config = tc.cluster_config();
    let cluster = Cluster::init("local", &config).unwrap();
    // init is idempotent.
    drop(cluster);
    let cluster = Cluster::init("local", &config).unwrap();

    let material = new_material();
    let label = format!("arn:aws:kms:us-east-1:111122223333:key/{}", material.key_id);
    cluster.create_key(&material, &label).unwrap();
    for (member, objects) in cluster.key_objects() {
        let objects = objects.unwrap();
        assert_eq!(objects.len(), 1, "{member}");
        assert_eq!(objects[0].id, material.cka_id());
        assert_eq!(objects[0].label, label);
    }
    // Ciphertext from each member decrypts on every member.
    let aad = b"context";
    for source in cluster.members() {
        let sealed = source
            .encrypt(&material.cka_id(), &seal(aad), b"secret data")
            .unwrap();
        let (iv, ciphertext) = (sealed.iv(), sealed.ciphertext_and_tag());
        for target in cluster.members() {
            let plaintext = target
                .decrypt(&material.cka_id(), &gcm(iv, aad), ciphertext)
                .unwrap();
            assert_eq!(plaintext.as_slice(), b"secret data");
            let wrong = target.decrypt(&material.cka_id(), &gcm(iv, b"other"), ciphertext);
            assert!(
                matches!(wrong, Err(e) if matches!(e.failure, hsm_kms::hsm::Failure::Rejected))
            );
        }
    }
    let rejected = cluster
        .decrypt(&material, &gcm(&[7; 12], aad), &[0; 32])
        .unwrap_err();
    assert!(rejected.is_rejected_ciphertext(), "{rejected}");

    let status = cluster.status();
    assert!(status.serving && !status.degraded);
    assert!(status.members.iter().all(|m| m.key_objects == Some(1)));

    // Destroy on every member, verified through PKCS#11.
    let report = cluster.destroy_key(&material);
    assert!(report.complete() && report.destroyed.len() == 2);
    for member in ["hsm-a", "hsm-b"] {
        let session = raw_session(&tc, member);
        assert!(
            session
                .find_objects(&[Attribute::Id(material.cka_id())])
                .unwrap()
                .is_empty()
        );
    }
}

#[test]
fn key_material_attributes_protect_it() {
    let tc = TestCluster::new(2);
    let cluster = Cluster::init("local", &tc.cluster_config()).unwrap();
    let material = new_material();
    cluster.create_key(&material, "label").unwrap();
    for member in cluster.members() {
        let attributes = member.key_attributes(&material.cka_id()).unwrap();
        // The original never left its HSM; unwrapped copies are, by PKCS#11's rules, not
        // "always sensitive" — they arrived wrapped, never in the clear.
        let original = member.name() == "hsm-a";
        assert_eq!(attributes.always_sensitive, original, "{}", member.name());
        assert!(attributes.sensitive, "{}", member.name());
        assert!(attributes.wrap_with_trusted && attributes.token && attributes.private);
        assert!(attributes.encrypt && attributes.decrypt);
        assert!(!attributes.sign && !attributes.verify && !attributes.derive);
        assert!(!attributes.wrap && !attributes.unwrap && !attributes.trusted);
        let domain = member.key_attributes(templates::DOMAIN_KEY_ID).unwrap();
        assert!(domain.trusted && domain.wrap_with_trusted && domain.sensitive && domain.private);
        assert!(!domain.encrypt && !domain.decrypt);
    }

    let session = raw_session(&tc, "hsm-a");
    // A key the user imports can wrap, but it is not trusted: the CMK refuses to be wrapped.
    let imported = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Wrap(true),
            Attribute::Value(vec![0x42; 32]),
        ])
        .unwrap();
    let cmk = find(&session, &material.cka_id());
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, imported, cmk);
    assert!(
        matches!(
            wrapped,
            Err(CryptokiError::Pkcs11(RvError::KeyNotWrappable, _))
        ),
        "{wrapped:?}"
    );
    // Nor can the CMK's value be read.
    let value = session
        .get_attributes(cmk, &[cryptoki::object::AttributeType::Value])
        .unwrap();
    assert!(
        value.is_empty(),
        "CKA_VALUE of a sensitive key must be unavailable"
    );

    // The domain key cannot encrypt data.
    let domain = find(&session, templates::DOMAIN_KEY_ID);
    let mut iv = [0u8; 12];
    let params = GcmParams::new(&mut iv, b"aad", 128.into()).unwrap();
    let encrypted = session.encrypt(&Mechanism::AesGcm(params), domain, b"data");
    assert!(encrypted.is_err(), "the domain key encrypted data");
    // Nor can it unwrap a blob into a key that is not sensitive (its unwrap template).
    let wrapped = session
        .wrap_key(&Mechanism::AesKeyWrapPad, domain, cmk)
        .unwrap();
    let mut loose = templates::cmk(
        b"loose",
        "loose",
        hsm_kms::hsm::Portability::WrapWithTrusted,
    );
    loose.retain(|a| !matches!(a, Attribute::Sensitive(_) | Attribute::Token(_)));
    loose.push(Attribute::Sensitive(false));
    let unwrapped = session.unwrap_key(&Mechanism::AesKeyWrapPad, domain, &wrapped, &loose);
    assert!(
        unwrapped.is_err(),
        "the domain key unwrapped a non-sensitive copy"
    );
}

#[test]
fn three_members_replicate_everywhere() {
    let tc = TestCluster::new(3);
    let cluster = Cluster::init("local", &tc.cluster_config()).unwrap();
    let materials: Vec<MaterialId> = (0..3).map(|_| new_material()).collect();
    for material in &materials {
        cluster.create_key(material, "three").unwrap();
    }
    let status = cluster.status();
    assert_eq!(status.members.len(), 3);
    assert!(
        status
            .members
            .iter()
            .all(|m| m.healthy && m.key_objects == Some(3)),
        "{status:?}"
    );
    let sealed = cluster
        .encrypt(&materials[1], &seal(b"x"), b"payload")
        .unwrap()
        .value;
    for member in cluster.members() {
        let plaintext = member
            .decrypt(
                &materials[1].cka_id(),
                &sealed.gcm(&seal(b"x")),
                sealed.ciphertext_and_tag(),
            )
            .unwrap();
        assert_eq!(plaintext.as_slice(), b"payload", "{}", member.name());
    }
}

/// Opens `config` and returns the preflight message.
fn refusal(config: &ClusterConfig) -> String {
    match Cluster::open("local", config) {
        Ok(_) => panic!("the cluster opened"),
        Err(ClusterError::Preflight(failure)) => failure.to_string(),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[test]
fn preflight_refuses_and_says_why() {
    let tc = TestCluster::new(3);
    Cluster::init("local", &tc.subset(&["hsm-a", "hsm-b"])).unwrap();
    let pins: Vec<String> = ["hsm-a", "hsm-b", "hsm-c"]
        .iter()
        .map(|m| tc.user_pin(m))
        .collect();
    let no_pin = |message: &str| {
        for pin in &pins {
            assert!(!message.contains(pin.as_str()), "a PIN leaked: {message}");
        }
    };

    // One member.
    let message = refusal(&tc.subset(&["hsm-a"]));
    assert!(
        message.contains("1 healthy HSM(s), at least 2 are required"),
        "{message}"
    );

    // Two members in one zone.
    let mut same_zone = tc.subset(&["hsm-a", "hsm-b"]);
    same_zone.members[1].zone = Some("zone-a".into());
    let message = refusal(&same_zone);
    assert!(
        message.contains("hsm-a, hsm-b are all in zone zone-a"),
        "{message}"
    );

    // A wrong PIN.
    let mut wrong_pin = tc.subset(&["hsm-a", "hsm-b"]);
    common::write_secret_file(&tc.path("wrong.pin"), "not-the-pin");
    wrong_pin.members[1].user_pin = format!("file:{}", tc.path("wrong.pin").display())
        .try_into()
        .unwrap();
    let message = refusal(&wrong_pin);
    assert!(
        message.contains("member hsm-b: login failed: wrong PIN"),
        "{message}"
    );
    assert!(!message.contains("not-the-pin"));
    no_pin(&message);

    // A missing token.
    let mut missing_token = tc.subset(&["hsm-a", "hsm-b"]);
    missing_token.members[0].token =
        hsm_kms::config::TokenSelector::parse("pkcs11:token=nope").unwrap();
    let message = refusal(&missing_token);
    assert!(
        message.contains("member hsm-a: no initialised token matches pkcs11:token=nope"),
        "{message}"
    );

    // A missing module.
    let mut missing_module = tc.subset(&["hsm-a", "hsm-b"]);
    missing_module.members[1].module = tc.path("hsm-b/gone.so");
    let message = refusal(&missing_module);
    assert!(
        message.contains("member hsm-b: PKCS#11 module") && message.contains("not found"),
        "{message}"
    );

    // A member without the domain key.
    let message = refusal(&tc.subset(&["hsm-a", "hsm-c"]));
    assert!(
        message.contains("member hsm-c: the cluster domain key is missing"),
        "{message}"
    );
    no_pin(&message);

    // The same through the CLI: `cluster check` exits non-zero and names the member.
    let config_text = tc
        .config_text
        .replace("zone = \"zone-b\"", "zone = \"zone-a\"")
        .replace("zone = \"zone-c\"", "zone = \"zone-a\"");
    let path = tc.write_config("one-zone.toml", &config_text);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
        .args(["--config", path.to_str().unwrap(), "cluster", "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("member hsm-c: the cluster domain key is missing"),
        "{stderr}"
    );
    assert!(stderr.contains("are all in zone zone-a"), "{stderr}");
    no_pin(&stderr);
}

#[test]
fn cli_init_check_status_and_add_member() {
    let tc = TestCluster::new(3);
    // Initialise only hsm-a and hsm-b and give them keys.
    let cluster = Cluster::init("local", &tc.subset(&["hsm-a", "hsm-b"])).unwrap();
    for _ in 0..5 {
        cluster.create_key(&new_material(), "existing").unwrap();
    }
    drop(cluster);
    // Before it joins, every key is on two of three members.
    let output = tc.cli(&["cluster", "status"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(table.matches(" 2/3  hsm-a, hsm-b").count(), 5, "{table}");
    let below = table
        .split("below full redundancy:\n")
        .nth(1)
        .unwrap_or_default();
    assert_eq!(
        below.lines().take_while(|l| l.starts_with("  - ")).count(),
        5,
        "{table}"
    );

    let output = tc.cli(&["cluster", "add-member", "hsm-c"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("5 key object(s) copied"));

    let output = tc.cli(&["cluster", "check"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = tc.cli(&["cluster", "status", "--json"]);
    assert!(output.status.success());
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["serving"], true);
    assert_eq!(status["degraded"], false);
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for member in members {
        assert_eq!(member["healthy"], true);
        assert_eq!(member["key_objects"], 5, "{member}");
    }
    let copies = status["key_copies"].as_array().unwrap();
    assert_eq!(copies.len(), 5);
    assert!(copies.iter().all(|k| k["copies"] == 3), "{status}");
    assert!(status.get("below_full_redundancy").is_none(), "{status}");
    // Every copy on hsm-c works: replicate-and-prove passes over all three.
    let cluster = Cluster::open("local", &tc.cluster_config()).unwrap();
    cluster.prove_domain_keys_equal().unwrap();
    let output = tc.cli(&["cluster", "init"]);
    assert!(
        output.status.success(),
        "init is idempotent: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until `condition` holds or `limit` passes.
fn eventually(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    condition()
}

/// Encrypts and decrypts from several threads until stopped; returns (ok, failed) counts.
fn load(
    cluster: &Arc<Cluster>,
    material: &MaterialId,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(usize, usize)>> {
    (0..4)
        .map(|_| {
            let (cluster, material, stop) = (cluster.clone(), material.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let result = cluster
                        .encrypt(&material, &seal(b"load"), b"under load")
                        .and_then(|ct| {
                            let gcm = ct.value.gcm(&seal(b"load"));
                            cluster.decrypt(&material, &gcm, ct.value.ciphertext_and_tag())
                        });
                    match result {
                        Ok(plaintext) if plaintext.value.as_slice() == b"under load" => ok += 1,
                        Ok(_) => failed += 1,
                        Err(error) => {
                            eprintln!("call failed: {error}");
                            failed += 1;
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

fn finish(threads: Vec<std::thread::JoinHandle<(usize, usize)>>) -> (usize, usize) {
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

#[test]
fn failover_with_three_members_loses_no_call() {
    let tc = TestCluster::new(3);
    let mut config = tc.cluster_config();
    config.reconnect_interval_ms = 200;
    let cluster = Arc::new(Cluster::init("local", &config).unwrap());
    let material = new_material();
    cluster.create_key(&material, "failover").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(&cluster, &material, &stop);
    std::thread::sleep(Duration::from_millis(500));
    tc.hide_token("hsm-b");
    assert!(eventually(Duration::from_secs(10), || !cluster
        .member("hsm-b")
        .unwrap()
        .is_up()));
    std::thread::sleep(Duration::from_millis(500));
    // With two members left in two zones, new keys still work.
    cluster
        .create_key(&new_material(), "while degraded")
        .unwrap();
    assert!(cluster.status().degraded);
    tc.restore_token("hsm-b");
    assert!(
        eventually(Duration::from_secs(20), || cluster
            .member("hsm-b")
            .unwrap()
            .is_up()),
        "hsm-b did not come back on its own"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = finish(threads);
    assert!(ok > 100, "too little load: {ok}");
    assert_eq!(failed, 0, "{failed} of {} calls failed", ok + failed);
    // The key created while hsm-b was away is copied onto it by a sync.
    assert_eq!(cluster.sync_member("hsm-b", |_, _| {}).unwrap(), 1);
    assert!(!cluster.status().degraded);
}

#[test]
fn failover_with_two_members_keeps_crypto_and_refuses_new_keys() {
    let tc = TestCluster::new(2);
    let mut config = tc.cluster_config();
    config.reconnect_interval_ms = 200;
    let cluster = Arc::new(Cluster::init("local", &config).unwrap());
    let material = new_material();
    cluster.create_key(&material, "failover").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let failures_after_down = Arc::new(AtomicUsize::new(0));
    let threads = load(&cluster, &material, &stop);
    std::thread::sleep(Duration::from_millis(300));
    tc.hide_token("hsm-a");
    assert!(eventually(Duration::from_secs(10), || !cluster
        .member("hsm-a")
        .unwrap()
        .is_up()));
    // Crypto keeps working on the survivor.
    for _ in 0..50 {
        let ct = cluster
            .encrypt(&material, &seal(b"x"), b"survivor")
            .unwrap()
            .value;
        assert_eq!(
            cluster
                .decrypt(&material, &ct.gcm(&seal(b"x")), ct.ciphertext_and_tag())
                .unwrap()
                .value
                .as_slice(),
            b"survivor"
        );
    }
    // New keys are refused with a clear error.
    let refused = cluster.create_key(&new_material(), "refused").unwrap_err();
    assert!(
        matches!(refused, ClusterError::CannotWriteKeys { .. }),
        "{refused}"
    );
    assert!(
        refused
            .to_string()
            .contains("1 healthy HSM(s), at least 2 are required"),
        "{refused}"
    );
    let status = cluster.status();
    assert!(status.degraded && !status.serving);
    assert!(
        !status
            .members
            .iter()
            .find(|m| m.name == "hsm-a")
            .unwrap()
            .healthy
    );

    tc.restore_token("hsm-a");
    assert!(eventually(Duration::from_secs(20), || cluster
        .member("hsm-a")
        .unwrap()
        .is_up()));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = finish(threads);
    failures_after_down.fetch_add(failed, Ordering::Relaxed);
    assert!(ok > 100);
    // Calls in flight on the member at the moment it vanished may fail; none after.
    assert!(failed <= 4, "{failed} calls failed");
    cluster
        .create_key(&new_material(), "after recovery")
        .unwrap();
    assert!(!cluster.status().degraded);
}

#[test]
fn vendor_cluster_counts_live_hsms() {
    let tc = TestCluster::new(1);
    let live_a = TcpListener::bind("127.0.0.1:0").unwrap();
    let live_b = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let base = tc.cluster_config();
    let hsm = |name: &str, address: String, zone: &str| HsmEndpoint {
        name: name.into(),
        address,
        zone: zone.into(),
    };
    let vendor = |hsms: Vec<HsmEndpoint>| ClusterConfig {
        replication: Replication::Vendor,
        members: Vec::new(),
        slot: Some(base.members[0].clone()),
        hsms,
        ..base.clone()
    };

    let config = vendor(vec![
        hsm(
            "hsm-1",
            live_a.local_addr().unwrap().to_string(),
            "us-east-1a",
        ),
        hsm(
            "hsm-2",
            live_b.local_addr().unwrap().to_string(),
            "us-east-1b",
        ),
        hsm("hsm-3", dead.clone(), "us-east-1c"),
    ]);
    let cluster = Cluster::open("prod", &config).unwrap();
    let status = cluster.status();
    assert!(status.serving && status.degraded, "{status:?}");
    assert_eq!(status.hsms.iter().filter(|h| h.reachable).count(), 2);
    // Keys are generated once, non-extractable: the vendor replicates them.
    let material = new_material();
    cluster.create_key(&material, "vendor key").unwrap();
    let attributes = cluster.members()[0]
        .key_attributes(&material.cka_id())
        .unwrap();
    assert!(!attributes.extractable && attributes.sensitive);
    let ct = cluster
        .encrypt(&material, &seal(b"v"), b"vendor")
        .unwrap()
        .value;
    assert_eq!(
        cluster
            .decrypt(&material, &ct.gcm(&seal(b"v")), ct.ciphertext_and_tag())
            .unwrap()
            .value
            .as_slice(),
        b"vendor"
    );
    drop(cluster);

    let one_live = vendor(vec![
        hsm(
            "hsm-1",
            live_a.local_addr().unwrap().to_string(),
            "us-east-1a",
        ),
        hsm("hsm-3", dead, "us-east-1c"),
    ]);
    let message = refusal_named(&one_live, "prod");
    assert!(
        message.contains("1 healthy HSM(s), at least 2 are required"),
        "{message}"
    );

    let same_zone = vendor(vec![
        hsm(
            "hsm-1",
            live_a.local_addr().unwrap().to_string(),
            "us-east-1a",
        ),
        hsm(
            "hsm-2",
            live_b.local_addr().unwrap().to_string(),
            "us-east-1a",
        ),
    ]);
    assert!(refusal_named(&same_zone, "prod").contains("all in zone us-east-1a"));
}

fn refusal_named(config: &ClusterConfig, name: &str) -> String {
    match Cluster::open(name, config) {
        Ok(_) => panic!("the cluster opened"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn example_configs_parse() {
    for example in ["softhsm-two-member.toml", "cloudhsm.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("hsm-config")
            .join(example);
        Config::load(&path).unwrap_or_else(|e| panic!("{example}: {e}"));
    }
}

/// How many key objects carry `id` on a member's token.
fn objects_with_id(tc: &TestCluster, member: &str, id: &[u8]) -> usize {
    raw_session(tc, member)
        .find_objects(&[Attribute::Id(id.to_vec())])
        .unwrap()
        .len()
}

#[test]
fn internal_key_first_used_by_many_threads_is_created_once() {
    let tc = TestCluster::new(2);
    let cluster = Arc::new(Cluster::init("local", &tc.cluster_config()).unwrap());
    let start = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let (cluster, start) = (cluster.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let aad = format!("thread {n}");
                let (iv, sealed) = cluster
                    .seal_internal("hsm-kms-race", "race", aad.as_bytes(), b"secret")
                    .unwrap()
                    .into_parts();
                (aad, iv, sealed)
            })
        })
        .collect();
    let sealed: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for member in ["hsm-a", "hsm-b"] {
        assert_eq!(
            objects_with_id(&tc, member, b"hsm-kms-race/1"),
            1,
            "internal key objects on {member}"
        );
    }
    // Every seal opens, on every member.
    for (aad, iv, ciphertext) in &sealed {
        let opened = cluster
            .open_internal("hsm-kms-race", aad.as_bytes(), iv, ciphertext)
            .unwrap();
        assert_eq!(opened.as_slice(), b"secret");
        for member in cluster.members() {
            let plaintext = member
                .decrypt(b"hsm-kms-race/1", &gcm(iv, aad.as_bytes()), ciphertext)
                .unwrap();
            assert_eq!(plaintext.as_slice(), b"secret", "{}", member.name());
        }
    }
}

#[test]
fn internal_key_is_not_created_while_a_member_cannot_prove_it_absent() {
    let tc = TestCluster::new(3);
    let mut config = tc.cluster_config();
    config.reconnect_interval_ms = 200;
    let cluster = Cluster::init("local", &config).unwrap();
    // hsm-c's token vanishes: it finds no objects, and its probe fails. That is no "absent".
    tc.hide_token("hsm-c");
    let refused = cluster
        .seal_internal("hsm-kms-unproven", "unproven", b"aad", b"secret")
        .unwrap_err();
    assert!(
        matches!(refused, ClusterError::Unavailable { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("hsm-c"), "{refused}");
    for member in ["hsm-a", "hsm-b"] {
        assert_eq!(objects_with_id(&tc, member, b"hsm-kms-unproven/1"), 0);
    }
    tc.restore_token("hsm-c");
    assert!(eventually(Duration::from_secs(20), || cluster
        .member("hsm-c")
        .unwrap()
        .is_up()));
    let (iv, sealed) = cluster
        .seal_internal("hsm-kms-unproven", "unproven", b"aad", b"secret")
        .unwrap()
        .into_parts();
    for member in ["hsm-a", "hsm-b", "hsm-c"] {
        assert_eq!(objects_with_id(&tc, member, b"hsm-kms-unproven/1"), 1);
    }
    let opened = cluster
        .open_internal("hsm-kms-unproven", b"aad", &iv, &sealed)
        .unwrap();
    assert_eq!(opened.as_slice(), b"secret");
}

#[test]
fn calls_reach_any_member_that_holds_the_key() {
    let tc = TestCluster::new(3);
    let cluster = Cluster::init("local", &tc.cluster_config()).unwrap();
    // A key only the third member holds (as when the others lost it): every call must find it.
    let material = new_material();
    cluster
        .member("hsm-c")
        .unwrap()
        .generate_key(
            &material.cka_id(),
            "only on c",
            hsm_kms::hsm::MaterialSpec::AES,
            Portability::WrapWithTrusted,
        )
        .unwrap();
    let seal = GcmSeal::new(b"x", 128).unwrap();
    for _ in 0..12 {
        let served = cluster.encrypt(&material, &seal, b"anywhere").unwrap();
        assert_eq!(served.member.name(), "hsm-c");
        let plaintext = cluster
            .decrypt(
                &material,
                &served.value.gcm(&seal),
                served.value.ciphertext_and_tag(),
            )
            .unwrap();
        assert_eq!(plaintext.value.as_slice(), b"anywhere");
    }
    // Members lacking a key are not taken for broken.
    assert!(cluster.members().iter().all(|m| m.is_up()));
}

#[test]
fn catch_up_copies_what_a_returning_member_lacks() {
    let tc = TestCluster::new(3);
    let mut config = tc.cluster_config();
    config.reconnect_interval_ms = 200;
    let cluster = Cluster::init("local", &config).unwrap();
    let before = new_material();
    cluster.create_key(&before, "before").unwrap();
    cluster
        .seal_internal("hsm-kms-test", "internal", b"aad", b"x")
        .unwrap();
    tc.hide_token("hsm-c");
    let c = cluster.member("hsm-c").unwrap().clone();
    assert!(c.has_key(&before.cka_id()).is_err());
    assert!(eventually(Duration::from_secs(10), || !c.is_up()));
    let away = new_material();
    cluster
        .create_key(&away, "created while c was away")
        .unwrap();
    let never = new_material();
    tc.restore_token("hsm-c");
    assert!(eventually(Duration::from_secs(20), || c.is_up()));

    let status = cluster.status();
    let copies = status
        .key_copies
        .iter()
        .find(|k| k.material == away.to_string())
        .unwrap();
    assert_eq!(copies.copies, 2, "{status:?}");
    assert_eq!(status.below_full_redundancy, vec![away.to_string()]);
    assert!(status.degraded);

    let wanted = [before.clone(), away.clone(), never.clone()];
    let report = cluster.catch_up("hsm-c", &wanted).unwrap();
    assert_eq!(report.copied, vec![away.to_string()], "{report:?}");
    assert_eq!(report.uncopied.len(), 1, "{report:?}");
    assert_eq!(report.uncopied[0].0, never.to_string());
    assert!(!c.has_key(&never.cka_id()).unwrap(), "nothing is invented");
    // The copy is the same key: what hsm-a encrypts, hsm-c decrypts.
    let seal = GcmSeal::new(b"x", 128).unwrap();
    let sealed = cluster
        .member("hsm-a")
        .unwrap()
        .encrypt(&away.cka_id(), &seal, b"copied")
        .unwrap();
    assert_eq!(
        c.decrypt(
            &away.cka_id(),
            &sealed.gcm(&seal),
            sealed.ciphertext_and_tag()
        )
        .unwrap()
        .as_slice(),
        b"copied"
    );
    assert_eq!(objects_with_id(&tc, "hsm-c", &away.cka_id()), 1);
    // A second run has nothing left to do; the cluster is at full redundancy again.
    let again = cluster.catch_up("hsm-c", &[before, away]).unwrap();
    assert!(
        again.copied.is_empty() && again.uncopied.is_empty(),
        "{again:?}"
    );
    let status = cluster.status();
    assert!(status.below_full_redundancy.is_empty(), "{status:?}");
    assert!(status.key_copies.iter().all(|k| k.copies == 3));
    assert!(!status.degraded);
}

#[test]
fn members_initialise_without_changing_the_environment() {
    let before = std::env::var_os("SOFTHSM2_CONF");
    let tc = TestCluster::new(3);
    let mut config = tc.cluster_config();
    config.reconnect_interval_ms = 100;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                seen.insert(std::env::var_os("SOFTHSM2_CONF"));
                std::thread::yield_now();
            }
            seen
        })
    };
    // Ceremonies, opening and a reconnect (finalize + initialise) of every member's module.
    let cluster = Cluster::init("local", &config).unwrap();
    let material = new_material();
    cluster.create_key(&material, "environment").unwrap();
    let b = cluster.member("hsm-b").unwrap().clone();
    tc.hide_token("hsm-b");
    assert!(b.has_key(&material.cka_id()).is_err());
    assert!(eventually(Duration::from_secs(10), || !b.is_up()));
    tc.restore_token("hsm-b");
    assert!(eventually(Duration::from_secs(20), || b.is_up()));
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    assert_eq!(
        seen,
        std::collections::BTreeSet::from([before]),
        "the environment changed while threads ran"
    );
    // Each member still read its own configuration: its own token holds the key.
    let seal = GcmSeal::new(b"x", 128).unwrap();
    for member in cluster.members() {
        let ciphertext = member
            .encrypt(&material.cka_id(), &seal, b"own token")
            .unwrap();
        assert_eq!(
            cluster
                .decrypt(
                    &material,
                    &ciphertext.gcm(&seal),
                    ciphertext.ciphertext_and_tag()
                )
                .unwrap()
                .value
                .as_slice(),
            b"own token"
        );
    }
    // Nothing is left behind where the switches live.
    let switches = std::env::temp_dir().join(format!("hsm-kms-env-{}", std::process::id()));
    assert!(!switches.exists(), "{} left behind", switches.display());

    // A variable nothing prepared is refused, never set.
    let mut unprepared = config.members[0].clone();
    unprepared
        .env
        .insert("HSM_KMS_TEST_UNPREPARED".into(), "value".into());
    let member = hsm_kms::hsm::Member::new(
        unprepared,
        "zone-a".into(),
        1,
        Duration::from_secs(1),
        hsm_kms::hsm::DomainKey::Required,
    );
    let refused = member.connect().unwrap_err().to_string();
    assert!(
        refused.contains("HSM_KMS_TEST_UNPREPARED is not prepared"),
        "{refused}"
    );
    assert_eq!(std::env::var_os("HSM_KMS_TEST_UNPREPARED"), None);
}

#[test]
fn create_key_survives_a_member_vanishing_unnoticed() {
    let tc = TestCluster::new(3);
    let mut config = tc.cluster_config();
    config.reconnect_interval_ms = 200;
    let cluster = Cluster::init("local", &config).unwrap();
    // Nothing has noticed yet that hsm-c's token is gone: creation still counts it in.
    tc.hide_token("hsm-c");
    let material = new_material();
    cluster.create_key(&material, "vanishing target").unwrap();
    let c = cluster.member("hsm-c").unwrap().clone();
    assert!(!c.is_up(), "the failed copy marks hsm-c down");
    let seal = GcmSeal::new(b"x", 128).unwrap();
    for member in ["hsm-a", "hsm-b"] {
        let member = cluster.member(member).unwrap();
        let ciphertext = member
            .encrypt(&material.cka_id(), &seal, b"on two")
            .unwrap();
        assert_eq!(
            cluster
                .decrypt(
                    &material,
                    &ciphertext.gcm(&seal),
                    ciphertext.ciphertext_and_tag()
                )
                .unwrap()
                .value
                .as_slice(),
            b"on two"
        );
    }
    tc.restore_token("hsm-c");
    assert!(eventually(Duration::from_secs(20), || c.is_up()));
    let report = cluster
        .catch_up("hsm-c", std::slice::from_ref(&material))
        .unwrap();
    assert_eq!(report.copied, vec![material.to_string()], "{report:?}");
    assert_eq!(objects_with_id(&tc, "hsm-c", &material.cka_id()), 1);
}

#[test]
fn maintenance_copies_material_a_member_lacks() {
    let ts = common::TestStore::new();
    let key = common::kms::create(&ts).key_id;
    let material = MaterialId::new(key.clone(), 1);
    let b = ts.store.cluster().member("hsm-b").unwrap().clone();
    // As if hsm-b had been away when the key was created.
    b.destroy_key(&material.cka_id()).unwrap();
    let report = ts.store.run_maintenance().unwrap();
    let on_b = report
        .caught_up
        .iter()
        .find(|c| c.member == "hsm-b")
        .unwrap();
    assert_eq!(on_b.copied, vec![material.to_string()], "{report:?}");
    assert!(on_b.uncopied.is_empty(), "{report:?}");
    assert!(report.inconsistencies.is_empty(), "{report:?}");
    assert!(b.has_key(&material.cka_id()).unwrap());
    // The copy works: hsm-b decrypts what the key store encrypted.
    let blob = common::kms::encrypt(&ts, &key, b"caught up", &[])
        .unwrap()
        .ciphertext_blob;
    assert_eq!(
        common::kms::decrypt(&ts, &blob, &[], None).unwrap(),
        b"caught up"
    );
    // A second run copies nothing; the copy is in the audit trail.
    let again = ts.store.run_maintenance().unwrap();
    assert!(
        again.caught_up.iter().all(|c| c.copied.is_empty()),
        "{again:?}"
    );
    ts.store.shutdown();
    let events = hsm_kms::audit::log::read_events(ts.store.metadata(), 0, usize::MAX).unwrap();
    let copied: Vec<serde_json::Value> = events
        .iter()
        .map(|e| e.event())
        .filter(|e| e["eventName"] == "HsmMaterialCopied")
        .collect();
    assert_eq!(copied.len(), 1, "{copied:?}");
    assert_eq!(copied[0]["serviceEventDetails"]["member"], "hsm-b");
    assert_eq!(
        copied[0]["serviceEventDetails"]["materials"],
        serde_json::json!([material.to_string()])
    );
}
