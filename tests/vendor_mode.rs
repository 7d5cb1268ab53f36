//! Vendor mode (`replication = "vendor"`) against a vendor-like HSM: the workspace's
//! `pkcs11-vendor-sim` module, which like AWS CloudHSM shows one slot over several HSMs
//! (SoftHSM2 tokens here), keeps keys on all of them, chooses its own AES-GCM IVs and can
//! lose an HSM. Every ciphertext below decrypts only if hsm-kms stored the IV the HSM used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestCluster;
use common::vendor::built_module;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass};
use hsm_kms::audit::checkpoint::ClusterSealer;
use hsm_kms::audit::verify::verify;
use hsm_kms::clock::ManualClock;
use hsm_kms::cluster::{Cluster, MaterialId};
use hsm_kms::config::Config;
use hsm_kms::error::KmsError;
use hsm_kms::ids::Scope;
use hsm_kms::keystore::api::*;
use hsm_kms::keystore::{Caller, KeyStore};
use hsm_kms::store::SledStore;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

const TRUST_ANCHOR: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";

/// One simulated vendor cluster: a copy of the module over two SoftHSM2 tokens.
struct VendorCluster {
    name: &'static str,
    dir: PathBuf,
    backings: [&'static str; 2],
    /// Stand-ins for the HSMs' network endpoints, which hsm-kms probes.
    probes: [TcpListener; 2],
}

impl VendorCluster {
    /// Sets up `name` over `backings` (whose user PINs are made equal) in `hsms`.
    fn new(hsms: &TestCluster, name: &'static str, backings: [&'static str; 2]) -> VendorCluster {
        let pin = hsms.user_pin(backings[0]);
        change_user_pin(hsms, backings[1], &pin);
        let dir = hsms.path(&format!("sim-{name}"));
        std::fs::create_dir(&dir).unwrap();
        // Each cluster loads its own copy: one process initialises a module path once.
        std::fs::copy(built_module(), dir.join("libpkcs11_vendor_sim.so")).unwrap();
        let mut sim = format!("token_label = {name:?}\n");
        for backing in backings {
            let member = hsms.path(backing);
            sim += &format!(
                "\n[[backing]]\nname = {backing:?}\nmodule = {:?}\ntoken = {backing:?}\n\
                 env = {{ SOFTHSM2_CONF = {:?} }}\n",
                member.join(format!("libsofthsm2-{backing}.so")),
                member.join("softhsm2.conf"),
            );
        }
        std::fs::write(dir.join("sim.toml"), sim).unwrap();
        VendorCluster {
            name,
            dir,
            backings,
            probes: [
                TcpListener::bind("127.0.0.1:0").unwrap(),
                TcpListener::bind("127.0.0.1:0").unwrap(),
            ],
        }
    }

    /// The `[clusters.NAME]` tables of the hsm-kms configuration.
    fn config(&self, hsms: &TestCluster) -> String {
        let name = self.name;
        let mut text = format!(
            "[clusters.{name}]\nreplication = \"vendor\"\nreconnect_interval_ms = 100\n\n\
             [clusters.{name}.slot]\nname = \"{name}-slot\"\nmodule = {:?}\ntoken = {name:?}\n\
             user_pin = \"file:{}\"\nenv = {{ PKCS11_VENDOR_SIM_CONF = {:?} }}\n",
            self.dir.join("libpkcs11_vendor_sim.so"),
            hsms.path(&format!("{}/user.pin", self.backings[0]))
                .display(),
            self.dir.join("sim.toml"),
        );
        for (backing, (probe, zone)) in self
            .backings
            .iter()
            .zip(self.probes.iter().zip(["us-east-1a", "us-east-1b"]))
        {
            text += &format!(
                "\n[[clusters.{name}.hsms]]\nname = {backing:?}\naddress = \"{}\"\nzone = {zone:?}\n",
                probe.local_addr().unwrap()
            );
        }
        text
    }

    /// Takes backing token `backing` away (the module stops using it) or brings it back.
    fn set_away(&self, backing: &str, away: bool) {
        let control = self.dir.join(format!("{backing}.away"));
        if away {
            std::fs::write(control, b"").unwrap();
        } else {
            std::fs::remove_file(control).unwrap();
        }
    }
}

/// Sets a member's user PIN (and its user.pin file) to `pin`.
fn change_user_pin(hsms: &TestCluster, member: &str, pin: &str) {
    let old = hsms.user_pin(member);
    let dir = hsms.path(member);
    let output = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .arg("--module")
        .arg(dir.join(format!("libsofthsm2-{member}.so")))
        .args(["--token-label", member, "--login", "--pin", &old])
        .args(["--change-pin", "--new-pin", pin])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(dir.join("user.pin"), pin).unwrap();
}

/// SoftHSM2 tokens, the vendor cluster `vendor` (the default) over hsm-a and hsm-b and,
/// when asked, the vendor cluster `cloudhsm` over hsm-c and hsm-d for a custom key store.
struct Fixture {
    hsms: TestCluster,
    vendor: VendorCluster,
    cloudhsm: Option<VendorCluster>,
    config_path: PathBuf,
    config: Config,
}

impl Fixture {
    fn new(with_custom_key_store_cluster: bool) -> Fixture {
        let hsms = TestCluster::softhsm(if with_custom_key_store_cluster { 4 } else { 2 });
        let vendor = VendorCluster::new(&hsms, "vendor", ["hsm-a", "hsm-b"]);
        let cloudhsm = with_custom_key_store_cluster
            .then(|| VendorCluster::new(&hsms, "cloudhsm", ["hsm-c", "hsm-d"]));
        let mut text = format!(
            "default_cluster = \"vendor\"\n\n[service]\nregion = \"us-east-1\"\n\
             account_id = \"111122223333\"\ndata_dir = {:?}\n\n[alarms]\ndefaults = false\n\n{}",
            hsms.path("data"),
            vendor.config(&hsms)
        );
        if let Some(cloudhsm) = &cloudhsm {
            text += &format!("\n{}", cloudhsm.config(&hsms));
        }
        let config_path = hsms.write_config("vendor.toml", &text);
        let config = Config::parse(&text).unwrap();
        Fixture {
            hsms,
            vendor,
            cloudhsm,
            config_path,
            config,
        }
    }

    /// A key store over the vendor cluster with a manual clock.
    fn open(&self, clock: Arc<ManualClock>) -> (KeyStore, Caller) {
        let cluster = Cluster::open("vendor", self.config.default_cluster().unwrap()).unwrap();
        let metadata = self.metadata();
        let scope = Scope::new("us-east-1", "111122223333").unwrap();
        let store = KeyStore::with_parts(
            scope,
            cluster,
            Box::new(metadata),
            clock,
            self.config.audit.clone(),
        )
        .unwrap()
        .with_clusters(&self.config.clusters);
        let caller = Caller::local(store.scope());
        (store, caller)
    }

    /// The metadata store, once a key store closed before has let go of it.
    fn metadata(&self) -> SledStore {
        eventually("the store's lock", Duration::from_secs(10), || {
            SledStore::open(&self.config.service.data_dir).ok()
        })
    }

    /// Runs the `hsm-kms` binary with the vendor configuration.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap()
    }
}

fn create_key(store: &KeyStore, caller: &Caller) -> Result<KeyMetadata, KmsError> {
    store
        .create_key(caller, CreateKeyRequest::default())
        .map(|response| response.key_metadata)
}

fn encrypt(store: &KeyStore, caller: &Caller, key: &str, plaintext: &[u8]) -> Vec<u8> {
    store
        .encrypt(
            caller,
            EncryptRequest {
                key_id: key.into(),
                plaintext: SecretSlice::from(plaintext.to_vec()),
                encryption_context: Some([("purpose".into(), "vendor".into())].into()),
                ..Default::default()
            },
        )
        .unwrap()
        .ciphertext_blob
}

fn decrypt(store: &KeyStore, caller: &Caller, blob: &[u8]) -> Result<Vec<u8>, KmsError> {
    store
        .decrypt(
            caller,
            DecryptRequest {
                ciphertext_blob: blob.to_vec(),
                encryption_context: Some([("purpose".into(), "vendor".into())].into()),
                ..Default::default()
            },
        )
        .map(|response| response.plaintext.expose_secret().to_vec())
}

fn generate_data_key(store: &KeyStore, caller: &Caller, key: &str) -> (Vec<u8>, Vec<u8>) {
    let response = store
        .generate_data_key(
            caller,
            GenerateDataKeyRequest {
                key_id: key.into(),
                key_spec: Some("AES_256".into()),
                encryption_context: Some([("purpose".into(), "vendor".into())].into()),
                ..Default::default()
            },
        )
        .unwrap();
    (
        response.plaintext.expose_secret().to_vec(),
        response.ciphertext_blob,
    )
}

fn key_request(key: &str) -> KeyIdRequest {
    KeyIdRequest {
        key_id: key.into(),
        ..Default::default()
    }
}

/// The key ids whose material the vendor cluster's slot shows.
fn materials(store: &KeyStore) -> Vec<String> {
    let (_, objects) = store.cluster().key_objects().pop().unwrap();
    objects
        .unwrap()
        .into_iter()
        .filter_map(|object| MaterialId::from_cka_id(&object.id))
        .map(|material| material.key_id)
        .collect()
}

/// Polls `attempt` until it returns `Some`, for at most `limit`.
fn eventually<T>(what: &str, limit: Duration, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn key_store_calls_round_trip_through_a_vendor_cluster() {
    let fixture = Fixture::new(false);
    let clock = Arc::new(ManualClock::new());
    let (store, caller) = fixture.open(clock.clone());
    let key = create_key(&store, &caller).unwrap();
    let other = create_key(&store, &caller).unwrap();

    let blobs: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            encrypt(
                &store,
                &caller,
                &key.key_id,
                format!("secret {i}").as_bytes(),
            )
        })
        .collect();
    for (i, blob) in blobs.iter().enumerate() {
        let plaintext = decrypt(&store, &caller, blob).unwrap();
        assert_eq!(plaintext, format!("secret {i}").as_bytes());
    }

    let (data_key, wrapped) = generate_data_key(&store, &caller, &key.key_id);
    assert_eq!(data_key.len(), 32);
    assert_eq!(decrypt(&store, &caller, &wrapped).unwrap(), data_key);
    let without = store
        .generate_data_key_without_plaintext(
            &caller,
            GenerateDataKeyRequest {
                key_id: key.key_id.clone(),
                number_of_bytes: Some(64),
                encryption_context: Some([("purpose".into(), "vendor".into())].into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        decrypt(&store, &caller, &without.ciphertext_blob)
            .unwrap()
            .len(),
        64
    );

    let re_encrypted = store
        .re_encrypt(
            &caller,
            ReEncryptRequest {
                ciphertext_blob: blobs[0].clone(),
                source_encryption_context: Some([("purpose".into(), "vendor".into())].into()),
                destination_key_id: other.key_id.clone(),
                destination_encryption_context: Some([("purpose".into(), "vendor".into())].into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(re_encrypted.key_id, other.arn);
    assert_eq!(
        decrypt(&store, &caller, &re_encrypted.ciphertext_blob).unwrap(),
        b"secret 0"
    );

    // Rotation: new ciphertexts use the new material, old ones still decrypt.
    store
        .rotate_key_on_demand(&caller, key_request(&key.key_id))
        .unwrap();
    let rotated = encrypt(&store, &caller, &key.key_id, b"after rotation");
    assert_ne!(
        rotated[19..23],
        blobs[0][19..23],
        "material version unchanged"
    );
    assert_eq!(
        decrypt(&store, &caller, &rotated).unwrap(),
        b"after rotation"
    );
    assert_eq!(decrypt(&store, &caller, &blobs[7]).unwrap(), b"secret 7");

    // Scheduled deletion, carried out by maintenance on every backing token.
    store
        .schedule_key_deletion(
            &caller,
            ScheduleKeyDeletionRequest {
                key_id: other.key_id.clone(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    clock.advance(Duration::from_secs(8 * 24 * 3600));
    let report = store.run_maintenance().unwrap();
    assert_eq!(report.deleted, vec![other.arn.clone()], "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    for backing in fixture.vendor.backings {
        // Seen through the module with only the other backing token there.
        let other_backing = fixture
            .vendor
            .backings
            .iter()
            .find(|b| **b != backing)
            .unwrap();
        fixture.vendor.set_away(other_backing, true);
        let held = materials(&store);
        fixture.vendor.set_away(other_backing, false);
        assert!(!held.contains(&other.key_id), "{backing} kept {held:?}");
        assert_eq!(
            held.iter().filter(|id| **id == key.key_id).count(),
            2,
            "{backing} lacks a material version of the key: {held:?}"
        );
    }
    let gone = decrypt(&store, &caller, &re_encrypted.ciphertext_blob).unwrap_err();
    assert_eq!(gone.code(), "InvalidCiphertextException", "{gone:?}");
}

#[test]
fn audit_checkpoints_are_sealed_and_verify_on_a_vendor_cluster() {
    let fixture = Fixture::new(false);
    let (store, caller) = fixture.open(Arc::new(ManualClock::new()));
    let key = create_key(&store, &caller).unwrap();
    for i in 0..5 {
        encrypt(&store, &caller, &key.key_id, format!("m{i}").as_bytes());
        store
            .describe_key(&caller, key_request(&key.key_id))
            .unwrap();
    }
    store.shutdown();
    drop(store);

    let metadata = fixture.metadata();
    let cluster = Cluster::open("vendor", fixture.config.default_cluster().unwrap()).unwrap();
    let sealer = ClusterSealer::new(Arc::new(cluster));
    let report = verify(&metadata, Some(&sealer), None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.checkpoints >= 1, "{report:?}");
    assert!(report.events >= 11, "{report:?}");
    drop(sealer);
    drop(metadata);

    let output = eventually("audit verify", Duration::from_secs(10), || {
        let output = fixture.cli(&["audit", "verify"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        (!stderr.contains("in use")).then_some(output)
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("intact"), "{stdout}");
}

#[test]
fn custom_key_store_on_a_vendor_cluster_unseals_its_password_and_serves_keys() {
    let fixture = Fixture::new(true);
    let cloudhsm = fixture.cloudhsm.as_ref().unwrap();
    let password = fixture.hsms.user_pin(cloudhsm.backings[0]);
    let clock = Arc::new(ManualClock::new());
    let (store, caller) = fixture.open(clock.clone());
    let id = store
        .create_custom_key_store(
            &caller,
            CreateCustomKeyStoreRequest {
                custom_key_store_name: "vendor-store".into(),
                cloud_hsm_cluster_id: Some("cloudhsm".into()),
                trust_anchor_certificate: Some(TRUST_ANCHOR.into()),
                key_store_password: Some(SecretString::from(password.as_str())),
                custom_key_store_type: None,
            },
        )
        .unwrap()
        .custom_key_store_id;
    let settled = |store: &KeyStore, caller: &Caller| {
        eventually("the store to connect", Duration::from_secs(60), || {
            let entry = store
                .describe_custom_key_stores(
                    caller,
                    DescribeCustomKeyStoresRequest {
                        custom_key_store_id: Some(id.clone()),
                        ..Default::default()
                    },
                )
                .unwrap()
                .custom_key_stores
                .remove(0);
            (entry.connection_state != "CONNECTING").then_some(entry)
        })
    };
    // Connecting unseals the password the default (vendor) cluster sealed.
    store
        .connect_custom_key_store(
            &caller,
            CustomKeyStoreIdRequest {
                custom_key_store_id: id.clone(),
            },
        )
        .unwrap();
    let entry = settled(&store, &caller);
    assert_eq!(entry.connection_state, "CONNECTED", "{entry:?}");
    let key = store
        .create_key(
            &caller,
            CreateKeyRequest {
                custom_key_store_id: Some(id.clone()),
                origin: Some("AWS_CLOUDHSM".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata;
    assert_eq!(key.origin, "AWS_CLOUDHSM");
    let blob = encrypt(&store, &caller, &key.key_id, b"in the custom key store");
    assert_eq!(
        decrypt(&store, &caller, &blob).unwrap(),
        b"in the custom key store"
    );
    let (data_key, wrapped) = generate_data_key(&store, &caller, &key.key_id);
    assert_eq!(decrypt(&store, &caller, &wrapped).unwrap(), data_key);

    // After a restart, the connected store reconnects from its sealed password alone.
    store.shutdown();
    drop(store);
    let (store, caller) = fixture.open(clock);
    let entry = settled(&store, &caller);
    assert_eq!(entry.connection_state, "CONNECTED", "{entry:?}");
    assert_eq!(
        decrypt(&store, &caller, &blob).unwrap(),
        b"in the custom key store"
    );
}

#[test]
fn calls_keep_succeeding_while_a_backing_hsm_is_away_and_after_it_returns() {
    let fixture = Fixture::new(false);
    let (store, caller) = fixture.open(Arc::new(ManualClock::new()));
    let key = create_key(&store, &caller).unwrap();
    let before = encrypt(&store, &caller, &key.key_id, b"before");
    let [a, b] = fixture.vendor.backings;

    // Under load, each backing token in turn goes away and comes back: no call fails.
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let mut rounds = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || rounds < 20 {
                let plaintext = format!("under load {rounds}");
                let blob = encrypt(&store, &caller, &key.key_id, plaintext.as_bytes());
                assert_eq!(
                    decrypt(&store, &caller, &blob).unwrap(),
                    plaintext.as_bytes()
                );
                rounds += 1;
            }
        });
        // Each token is back for a moment before the next goes, as with real HSMs: the
        // module reads the tokens' presence one by one, and an instantaneous hand-over
        // between its reads would show both away.
        for backing in [a, b, a, b] {
            fixture.vendor.set_away(backing, true);
            std::thread::sleep(Duration::from_millis(100));
            fixture.vendor.set_away(backing, false);
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        worker.join().unwrap();
    });

    // hsm-a away: everything runs on hsm-b; new keys are refused (they could not reach
    // every HSM) and nothing is left behind.
    fixture.vendor.set_away(a, true);
    let mut made_on_b = Vec::new();
    for i in 0..6 {
        let plaintext = format!("while {a} is away {i}");
        let blob = encrypt(&store, &caller, &key.key_id, plaintext.as_bytes());
        assert_eq!(
            decrypt(&store, &caller, &blob).unwrap(),
            plaintext.as_bytes()
        );
        made_on_b.push((plaintext, blob));
    }
    assert_eq!(decrypt(&store, &caller, &before).unwrap(), b"before");
    let (data_key, wrapped) = generate_data_key(&store, &caller, &key.key_id);
    let refused = create_key(&store, &caller).unwrap_err();
    assert_eq!(refused.code(), "KMSInternalException", "{refused:?}");

    // hsm-a back, hsm-b away: what hsm-b encrypted decrypts on hsm-a.
    fixture.vendor.set_away(a, false);
    fixture.vendor.set_away(b, true);
    for (plaintext, blob) in &made_on_b {
        assert_eq!(
            decrypt(&store, &caller, blob).unwrap(),
            plaintext.as_bytes()
        );
    }
    assert_eq!(decrypt(&store, &caller, &wrapped).unwrap(), data_key);
    fixture.vendor.set_away(b, false);

    // Both away: calls fail; both back: the slot is reconnected and calls succeed again.
    fixture.vendor.set_away(a, true);
    fixture.vendor.set_away(b, true);
    assert!(decrypt(&store, &caller, &before).is_err());
    fixture.vendor.set_away(a, false);
    fixture.vendor.set_away(b, false);
    let plaintext = eventually("the slot to reconnect", Duration::from_secs(30), || {
        decrypt(&store, &caller, &before).ok()
    });
    assert_eq!(plaintext, b"before");
    let later = create_key(&store, &caller).unwrap();
    let blob = encrypt(&store, &caller, &later.key_id, b"after");
    assert_eq!(decrypt(&store, &caller, &blob).unwrap(), b"after");
}

#[test]
fn the_module_replaces_the_callers_gcm_iv_and_supports_only_what_hsm_kms_calls() {
    let fixture = Fixture::new(false);
    // Opening the cluster initialises the module with its configuration; the raw context
    // below shares that initialised module (same file) and its login.
    let cluster = Cluster::open("vendor", fixture.config.default_cluster().unwrap()).unwrap();
    let material = MaterialId::new(uuid::Uuid::new_v4().to_string(), 1);
    cluster
        .create_key(&material, "vendor module probe")
        .unwrap();
    let pkcs11 = Pkcs11::new(fixture.vendor.dir.join("libpkcs11_vendor_sim.so")).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(error) => panic!("{error}"),
    }
    let slot = pkcs11.get_all_slots().unwrap()[0];
    let session = pkcs11.open_rw_session(slot).unwrap();
    let [key] = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Id(material.cka_id()),
        ])
        .unwrap()[..]
    else {
        panic!("the key is not on the slot exactly once");
    };

    let requested = [0u8; 12];
    let mut iv = requested;
    let params = GcmParams::new(&mut iv, b"aad", 128.into()).unwrap();
    let ciphertext = session
        .encrypt(&Mechanism::AesGcm(params), key, b"probe")
        .unwrap();
    assert_ne!(iv, requested, "the module kept the caller's IV");
    let mut used = iv;
    let params = GcmParams::new(&mut used, b"aad", 128.into()).unwrap();
    let plaintext = session
        .decrypt(&Mechanism::AesGcm(params), key, &ciphertext)
        .unwrap();
    assert_eq!(plaintext, b"probe");
    let mut stale = requested;
    let params = GcmParams::new(&mut stale, b"aad", 128.into()).unwrap();
    assert!(
        session
            .decrypt(&Mechanism::AesGcm(params), key, &ciphertext)
            .is_err(),
        "the requested IV decrypted"
    );
    // A GCM IV of another length is refused, as CloudHSM accepts only 12 bytes.
    let mut short = [0u8; 8];
    let params = GcmParams::new(&mut short, b"aad", 128.into()).unwrap();
    let refused = session.encrypt(&Mechanism::AesGcm(params), key, b"probe");
    assert!(
        matches!(
            refused,
            Err(CryptokiError::Pkcs11(RvError::MechanismParamInvalid, _))
        ),
        "{refused:?}"
    );
    // Functions hsm-kms never calls in vendor mode are not supported.
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, key, key);
    assert!(
        matches!(
            wrapped,
            Err(CryptokiError::Pkcs11(RvError::FunctionNotSupported, _))
        ),
        "{wrapped:?}"
    );
}
