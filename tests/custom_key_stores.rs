//! Custom key stores over a second SoftHSM2 cluster: hsm-a and hsm-b serve the default
//! cluster `local`, hsm-c and hsm-d (sharing one user PIN) the cluster `cloudhsm`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestCluster, decrypt};
use hsm_kms::cluster::{Cluster, MaterialId};
use hsm_kms::config::Config;
use hsm_kms::error::KmsError;
use hsm_kms::ids::Scope;
use hsm_kms::keystore::api::*;
use hsm_kms::keystore::{Caller, KeyStore};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

const TRUST_ANCHOR: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";

/// Four SoftHSM2 members split into two initialised clusters.
struct TwoClusters {
    hsms: TestCluster,
    config: Config,
    /// The user PIN of hsm-c and hsm-d.
    pin: String,
}

impl TwoClusters {
    fn new() -> TwoClusters {
        TwoClusters::with_cluster_settings("")
    }

    /// Two clusters, with `settings` (TOML lines) added to the `cloudhsm` cluster's table.
    fn with_cluster_settings(settings: &str) -> TwoClusters {
        let hsms = TestCluster::softhsm(4);
        let pin = hsms.user_pin("hsm-c");
        change_user_pin(&hsms, "hsm-d", &pin);
        let mut text = hsms.config_text.clone();
        let header = "[[clusters.local.members]]";
        let third = text.match_indices(header).nth(2).unwrap().0;
        let tail = text[third..].replace(header, "[[clusters.cloudhsm.members]]");
        text = format!(
            "{}[clusters.cloudhsm]\nreplication = \"hsm-kms\"\n{settings}\n\n{tail}",
            &text[..third]
        );
        let text = common::vendor::in_test_mode(&hsms, &text);
        std::fs::write(hsms.path("hsm-kms.toml"), &text).unwrap();
        let config = Config::parse(&text).unwrap();
        Cluster::init("local", config.cluster("local").unwrap()).unwrap();
        Cluster::init("cloudhsm", config.cluster("cloudhsm").unwrap()).unwrap();
        TwoClusters { hsms, config, pin }
    }

    fn open(&self) -> (KeyStore, Caller) {
        let store = KeyStore::open(&self.config).unwrap();
        let caller = Caller::local(store.scope());
        (store, caller)
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

fn create_store(store: &KeyStore, caller: &Caller, name: &str, password: &str) -> String {
    store
        .create_custom_key_store(
            caller,
            CreateCustomKeyStoreRequest {
                custom_key_store_name: name.into(),
                cloud_hsm_cluster_id: Some("cloudhsm".into()),
                trust_anchor_certificate: Some(TRUST_ANCHOR.into()),
                key_store_password: Some(SecretString::from(password)),
                custom_key_store_type: None,
            },
        )
        .unwrap()
        .custom_key_store_id
}

fn describe(store: &KeyStore, caller: &Caller, id: &str) -> CustomKeyStoresListEntry {
    let mut found = store
        .describe_custom_key_stores(
            caller,
            DescribeCustomKeyStoresRequest {
                custom_key_store_id: Some(id.into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(found.custom_key_stores.len(), 1);
    found.custom_key_stores.remove(0)
}

/// Polls Describe until the store is no longer CONNECTING.
fn settled(store: &KeyStore, caller: &Caller, id: &str) -> CustomKeyStoresListEntry {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let entry = describe(store, caller, id);
        if entry.connection_state != "CONNECTING" {
            return entry;
        }
        assert!(Instant::now() < deadline, "still connecting");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn id_request(id: &str) -> CustomKeyStoreIdRequest {
    CustomKeyStoreIdRequest {
        custom_key_store_id: id.into(),
    }
}

fn connect(store: &KeyStore, caller: &Caller, id: &str) -> CustomKeyStoresListEntry {
    store
        .connect_custom_key_store(caller, id_request(id))
        .unwrap();
    settled(store, caller, id)
}

fn encrypt(store: &KeyStore, caller: &Caller, key: &str) -> Result<Vec<u8>, KmsError> {
    store
        .encrypt(
            caller,
            EncryptRequest {
                key_id: key.into(),
                plaintext: SecretSlice::from(b"custom key store".to_vec()),
                ..Default::default()
            },
        )
        .map(|r| r.ciphertext_blob)
}

fn create_key_in(store: &KeyStore, caller: &Caller, id: &str) -> Result<KeyMetadata, KmsError> {
    store
        .create_key(
            caller,
            CreateKeyRequest {
                custom_key_store_id: Some(id.into()),
                origin: Some("AWS_CLOUDHSM".into()),
                ..Default::default()
            },
        )
        .map(|r| r.key_metadata)
}

/// Whether any file under `dir` contains `needle`.
fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            any_file_contains(&path, needle)
        } else {
            let bytes = std::fs::read(&path).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        }
    })
}

/// The key ids whose material a cluster's members hold.
fn material_on(config: &Config, cluster: &str) -> Vec<(String, String)> {
    let open = Cluster::open(cluster, config.cluster(cluster).unwrap()).unwrap();
    open.key_objects()
        .into_iter()
        .flat_map(|(member, objects)| {
            objects
                .unwrap()
                .into_iter()
                .filter_map(|o| MaterialId::from_cka_id(&o.id))
                .map(move |m| (member.clone(), m.key_id))
        })
        .collect()
}

#[test]
fn keys_live_in_the_store_cluster_and_are_unavailable_while_disconnected() {
    let clusters = TwoClusters::new();
    let (store, caller) = clusters.open();
    let id = create_store(&store, &caller, "store-one", &clusters.pin);
    assert!(id.starts_with("cks-") && id.len() == 21, "{id}");
    let entry = describe(&store, &caller, &id);
    assert_eq!(entry.connection_state, "DISCONNECTED");
    assert_eq!(entry.cloud_hsm_cluster_id, "cloudhsm");
    assert_eq!(entry.trust_anchor_certificate, TRUST_ANCHOR);
    assert_eq!(entry.custom_key_store_type, "AWS_CLOUDHSM");

    // Names, clusters and states are checked.
    let again = store.create_custom_key_store(
        &caller,
        CreateCustomKeyStoreRequest {
            custom_key_store_name: "store-two".into(),
            cloud_hsm_cluster_id: Some("cloudhsm".into()),
            trust_anchor_certificate: Some(TRUST_ANCHOR.into()),
            key_store_password: Some(SecretString::from(clusters.pin.as_str())),
            custom_key_store_type: None,
        },
    );
    assert_eq!(again.unwrap_err().code(), "CloudHsmClusterInUseException");
    for cluster in ["local", "nowhere"] {
        let error = store
            .create_custom_key_store(
                &caller,
                CreateCustomKeyStoreRequest {
                    custom_key_store_name: "store-one".into(),
                    cloud_hsm_cluster_id: Some(cluster.into()),
                    trust_anchor_certificate: Some(TRUST_ANCHOR.into()),
                    key_store_password: Some(SecretString::from("password")),
                    custom_key_store_type: None,
                },
            )
            .unwrap_err();
        assert_eq!(
            error.code(),
            "CloudHsmClusterNotFoundException",
            "{cluster}"
        );
    }
    let error = create_key_in(&store, &caller, &id).unwrap_err();
    assert_eq!(error.code(), "CustomKeyStoreInvalidStateException");
    let error = store
        .connect_custom_key_store(&caller, id_request("cks-0123456789abcdef0"))
        .unwrap_err();
    assert_eq!(error.code(), "CustomKeyStoreNotFoundException");

    // Connected: keys are made in the store's cluster only.
    let entry = connect(&store, &caller, &id);
    assert_eq!(entry.connection_state, "CONNECTED", "{entry:?}");
    assert_eq!(entry.connection_error_code, None);
    let key = create_key_in(&store, &caller, &id).unwrap();
    assert_eq!(key.custom_key_store_id.as_deref(), Some(id.as_str()));
    assert_eq!(key.cloud_hsm_cluster_id.as_deref(), Some("cloudhsm"));
    assert_eq!(key.origin, "AWS_CLOUDHSM");
    let json = serde_json::to_value(&key).unwrap();
    assert_eq!(json["CustomKeyStoreId"], id.as_str());
    let blob = encrypt(&store, &caller, &key.arn).unwrap();
    assert_eq!(decrypt(&store, &caller, &blob), b"custom key store");
    let on_store_cluster = material_on(&clusters.config, "cloudhsm");
    let mut holders: Vec<&str> = on_store_cluster
        .iter()
        .filter(|(_, k)| *k == key.key_id)
        .map(|(m, _)| m.as_str())
        .collect();
    holders.sort_unstable();
    if common::vendor::enabled() {
        // One slot in front of hsm-c and hsm-d, which the module keeps equal.
        assert_eq!(holders, ["cloudhsm-slot"]);
    } else {
        assert_eq!(holders, ["hsm-c", "hsm-d"]);
    }
    assert!(
        store
            .cluster()
            .key_objects()
            .into_iter()
            .flat_map(|(_, objects)| objects.unwrap())
            .all(|o| MaterialId::from_cka_id(&o.id).is_none_or(|m| m.key_id != key.key_id))
    );
    let random = store
        .generate_random(
            &caller,
            GenerateRandomRequest {
                number_of_bytes: Some(16),
                custom_key_store_id: Some(id.clone()),
            },
        )
        .unwrap();
    assert_eq!(random.plaintext.expose_secret().len(), 16);
    let default_key = store
        .create_key(&caller, CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    assert_eq!(default_key.custom_key_store_id, None);
    assert!(
        serde_json::to_value(&default_key).unwrap()["CustomKeyStoreId"].is_null(),
        "absent, not null"
    );
    let error = store
        .delete_custom_key_store(&caller, id_request(&id))
        .unwrap_err();
    assert_eq!(error.code(), "CustomKeyStoreInvalidStateException");

    // Disconnected: its keys are Unavailable, the default cluster's are not.
    store
        .disconnect_custom_key_store(&caller, id_request(&id))
        .unwrap();
    assert_eq!(
        describe(&store, &caller, &id).connection_state,
        "DISCONNECTED"
    );
    let error = encrypt(&store, &caller, &key.arn).unwrap_err();
    assert_eq!(error.code(), "KMSInvalidStateException");
    assert_eq!(error.message(), format!("{} is unavailable.", key.arn));
    let described = store
        .describe_key(
            &caller,
            KeyIdRequest {
                key_id: key.key_id.clone(),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata;
    assert_eq!(described.key_state, "Unavailable");
    assert!(!described.enabled);
    encrypt(&store, &caller, &default_key.arn).unwrap();
    let error = store
        .generate_random(
            &caller,
            GenerateRandomRequest {
                number_of_bytes: Some(16),
                custom_key_store_id: Some(id.clone()),
            },
        )
        .unwrap_err();
    assert_eq!(error.code(), "CustomKeyStoreInvalidStateException");
    let error = store
        .disconnect_custom_key_store(&caller, id_request(&id))
        .unwrap_err();
    assert_eq!(error.code(), "CustomKeyStoreInvalidStateException");
    let error = store
        .delete_custom_key_store(&caller, id_request(&id))
        .unwrap_err();
    assert_eq!(error.code(), "CustomKeyStoreHasCMKsException");

    // Reconnected: the old ciphertext decrypts again, and a reopened key store reconnects.
    assert_eq!(connect(&store, &caller, &id).connection_state, "CONNECTED");
    assert_eq!(decrypt(&store, &caller, &blob), b"custom key store");
    store.shutdown();
    drop(store);
    let (store, caller) = clusters.open();
    assert_eq!(settled(&store, &caller, &id).connection_state, "CONNECTED");
    assert_eq!(decrypt(&store, &caller, &blob), b"custom key store");
    store.shutdown();
    drop(store);

    // The password is nowhere in the metadata or the audit trail (both live in sled).
    let data = clusters.hsms.path("data");
    assert!(any_file_contains(&data, b"CreateCustomKeyStore"));
    assert!(!any_file_contains(&data, clusters.pin.as_bytes()));
}

#[test]
fn a_wrong_password_fails_with_invalid_credentials_until_updated() {
    let clusters = TwoClusters::new();
    let (store, caller) = clusters.open();
    let id = create_store(&store, &caller, "store", "not-the-pin");
    let entry = connect(&store, &caller, &id);
    assert_eq!(entry.connection_state, "FAILED");
    assert_eq!(
        entry.connection_error_code.as_deref(),
        Some("INVALID_CREDENTIALS")
    );
    let error = store
        .connect_custom_key_store(&caller, id_request(&id))
        .unwrap_err();
    assert_eq!(error.code(), "CustomKeyStoreInvalidStateException");
    let error = create_key_in(&store, &caller, &id).unwrap_err();
    assert_eq!(error.code(), "CustomKeyStoreInvalidStateException");
    let update = |password: &str| UpdateCustomKeyStoreRequest {
        custom_key_store_id: id.clone(),
        key_store_password: Some(SecretString::from(password)),
        new_custom_key_store_name: Some("renamed".into()),
        cloud_hsm_cluster_id: Some("cloudhsm".into()),
    };
    let error = store
        .update_custom_key_store(&caller, update(&clusters.pin))
        .unwrap_err();
    assert_eq!(error.code(), "CustomKeyStoreInvalidStateException");
    store
        .disconnect_custom_key_store(&caller, id_request(&id))
        .unwrap();
    let error = store
        .update_custom_key_store(&caller, update("short"))
        .unwrap_err();
    assert_eq!(error.code(), "ValidationException");
    store
        .update_custom_key_store(&caller, update(&clusters.pin))
        .unwrap();
    let entry = connect(&store, &caller, &id);
    assert_eq!(entry.connection_state, "CONNECTED", "{entry:?}");
    assert_eq!(entry.custom_key_store_name, "renamed");
    let by_name = store
        .describe_custom_key_stores(
            &caller,
            DescribeCustomKeyStoresRequest {
                custom_key_store_name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(by_name.custom_key_stores[0].custom_key_store_id, id);
    let error = store
        .describe_custom_key_stores(
            &caller,
            DescribeCustomKeyStoresRequest {
                custom_key_store_name: Some("store".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(error.code(), "CustomKeyStoreNotFoundException");
    // Over the wire: the same operations in AWS's JSON shapes.
    let wire = |target: &str, body: serde_json::Value| {
        hsm_kms::server::protocol::dispatch(
            &store,
            &caller,
            &format!("TrentService.{target}"),
            body.to_string().as_bytes(),
        )
        .map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap())
    };
    let listed = wire("DescribeCustomKeyStores", serde_json::json!({})).unwrap();
    assert_eq!(listed["CustomKeyStores"][0]["ConnectionState"], "CONNECTED");
    assert_eq!(
        listed["CustomKeyStores"][0]["CloudHsmClusterId"],
        "cloudhsm"
    );
    assert_eq!(listed["Truncated"], false);
    let missing = wire("CreateCustomKeyStore", serde_json::json!({})).unwrap_err();
    assert_eq!(missing.code(), "ValidationException");
    let short = wire(
        "CreateCustomKeyStore",
        serde_json::json!({"CustomKeyStoreName": "x", "CloudHsmClusterId": "cloudhsm",
            "TrustAnchorCertificate": TRUST_ANCHOR, "KeyStorePassword": "short"}),
    )
    .unwrap_err();
    assert_eq!(short.code(), "ValidationException");
    assert!(!short.message().contains("short"), "{}", short.message());
    wire(
        "DisconnectCustomKeyStore",
        serde_json::json!({ "CustomKeyStoreId": id }),
    )
    .unwrap();
    let deleted = wire(
        "DeleteCustomKeyStore",
        serde_json::json!({ "CustomKeyStoreId": id }),
    );
    assert_eq!(deleted.unwrap(), serde_json::json!({}));
    let all = store
        .describe_custom_key_stores(&caller, DescribeCustomKeyStoresRequest::default())
        .unwrap();
    assert!(all.custom_key_stores.is_empty());
    store.shutdown();
    drop(store);
    let data = clusters.hsms.path("data");
    assert!(!any_file_contains(&data, clusters.pin.as_bytes()));
    assert!(!any_file_contains(&data, b"not-the-pin"));
}

#[test]
fn only_allowed_accounts_attach_a_cluster_and_no_refusal_names_another_accounts_store() {
    let other_account = Caller::local(&Scope::new("us-east-1", "444455556666").unwrap());
    let third_account = Caller::local(&Scope::new("us-east-1", "777788889999").unwrap());
    let create = |store: &KeyStore, caller: &Caller, cluster: &str| {
        store.create_custom_key_store(
            caller,
            CreateCustomKeyStoreRequest {
                custom_key_store_name: "squat".into(),
                cloud_hsm_cluster_id: Some(cluster.into()),
                trust_anchor_certificate: Some(TRUST_ANCHOR.into()),
                key_store_password: Some(SecretString::from("wrong-password")),
                ..Default::default()
            },
        )
    };

    // Without allowed_accounts only the service's own account may attach the cluster; to any
    // other it reads exactly as a cluster that does not exist.
    let clusters = TwoClusters::new();
    let (store, home) = clusters.open();
    let refused = create(&store, &other_account, "cloudhsm").unwrap_err();
    let unknown = create(&store, &other_account, "cloudhsm-nope").unwrap_err();
    assert_eq!(refused.code(), "CloudHsmClusterNotFoundException");
    assert_eq!(
        refused.message(),
        unknown.message().replace("cloudhsm-nope", "cloudhsm")
    );
    let id = create_store(&store, &home, "home", &clusters.pin);
    assert_eq!(connect(&store, &home, &id).connection_state, "CONNECTED");
    store.shutdown();
    drop(store);

    // allowed_accounts names who may; an allowed account finds the cluster taken, without
    // learning the id of the store that holds it.
    let clusters = TwoClusters::with_cluster_settings(
        r#"allowed_accounts = ["444455556666", "777788889999"]"#,
    );
    let (store, home) = clusters.open();
    let refused = create(&store, &home, "cloudhsm").unwrap_err();
    assert_eq!(refused.code(), "CloudHsmClusterNotFoundException");
    let id = create_store(&store, &other_account, "owner", &clusters.pin);
    let taken = create(&store, &third_account, "cloudhsm").unwrap_err();
    assert_eq!(taken.code(), "CloudHsmClusterInUseException");
    assert!(!taken.message().contains(&id), "{}", taken.message());
    assert!(!taken.message().contains("cks-"), "{}", taken.message());
    let listed = store
        .describe_custom_key_stores(&third_account, DescribeCustomKeyStoresRequest::default())
        .unwrap();
    assert!(listed.custom_key_stores.is_empty());
    store.shutdown();
}

#[test]
fn five_wrong_passwords_lock_a_store_out_until_its_password_is_updated() {
    let clusters = TwoClusters::new();
    let (store, caller) = clusters.open();
    let id = create_store(&store, &caller, "store", "not-the-pin");
    for attempt in 1..=5 {
        let entry = connect(&store, &caller, &id);
        assert_eq!(entry.connection_state, "FAILED");
        let expected = if attempt < 5 {
            "INVALID_CREDENTIALS"
        } else {
            "USER_LOCKED_OUT"
        };
        assert_eq!(
            entry.connection_error_code.as_deref(),
            Some(expected),
            "attempt {attempt}"
        );
        store
            .disconnect_custom_key_store(&caller, id_request(&id))
            .unwrap();
    }
    // Locked out: a connection fails at once, without trying the password again.
    store
        .connect_custom_key_store(&caller, id_request(&id))
        .unwrap();
    let entry = describe(&store, &caller, &id);
    assert_eq!(entry.connection_state, "FAILED");
    assert_eq!(
        entry.connection_error_code.as_deref(),
        Some("USER_LOCKED_OUT")
    );
    // Renaming does not unlock; a new password does.
    store
        .disconnect_custom_key_store(&caller, id_request(&id))
        .unwrap();
    store
        .update_custom_key_store(
            &caller,
            UpdateCustomKeyStoreRequest {
                custom_key_store_id: id.clone(),
                new_custom_key_store_name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        connect(&store, &caller, &id)
            .connection_error_code
            .as_deref(),
        Some("USER_LOCKED_OUT")
    );
    store
        .disconnect_custom_key_store(&caller, id_request(&id))
        .unwrap();
    store
        .update_custom_key_store(
            &caller,
            UpdateCustomKeyStoreRequest {
                custom_key_store_id: id.clone(),
                key_store_password: Some(SecretString::from(clusters.pin.as_str())),
                ..Default::default()
            },
        )
        .unwrap();
    let entry = connect(&store, &caller, &id);
    assert_eq!(entry.connection_state, "CONNECTED", "{entry:?}");
    store.shutdown();
}

#[test]
fn a_missing_token_fails_with_insufficient_hsms() {
    if common::vendor::skipped(
        "a vendor cluster counts its HSMs by probing their addresses, not its tokens \
         (tests/vendor_mode.rs takes a vendor HSM away)",
    ) {
        return;
    }
    let clusters = TwoClusters::new();
    clusters.hsms.hide_token("hsm-d");
    let (store, caller) = clusters.open();
    let id = create_store(&store, &caller, "store", &clusters.pin);
    let entry = connect(&store, &caller, &id);
    assert_eq!(entry.connection_state, "FAILED");
    assert_eq!(
        entry.connection_error_code.as_deref(),
        Some("INSUFFICIENT_CLOUDHSM_HSMS")
    );
    store
        .disconnect_custom_key_store(&caller, id_request(&id))
        .unwrap();
    clusters.hsms.restore_token("hsm-d");
    assert_eq!(connect(&store, &caller, &id).connection_state, "CONNECTED");
}
