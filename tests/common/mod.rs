//! Shared fixtures for integration tests: real SoftHSM2 clusters made by
//! `scripts/softhsm-cluster.sh` in temporary directories.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cli_output;
pub mod kms;
pub mod openssl;
pub mod postgres_db;
pub mod server;
pub mod sites;
pub mod vendor;

use std::path::{Path, PathBuf};
use std::process::Command;

use hsm_kms::config::{ClusterConfig, Config};

/// A SoftHSM2 cluster on disk, removed when dropped.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub config_text: String,
}

impl TestCluster {
    /// Creates `members` SoftHSM2 tokens (hsm-a, hsm-b, ...) serving the cluster `local`: as
    /// independent members, or in vendor mode behind one vendor slot (see [`vendor`]).
    pub fn new(members: usize) -> TestCluster {
        let mut cluster = TestCluster::softhsm(members);
        if vendor::enabled() {
            cluster.config_text = vendor::in_test_mode(&cluster, &cluster.config_text);
            cluster.write_config("hsm-kms.toml", &cluster.config_text);
        }
        cluster
    }

    /// Creates `members` independent SoftHSM2 tokens (hsm-a, hsm-b, ...) serving the cluster
    /// `local` with hsm-kms replication, whatever the mode.
    pub fn softhsm(members: usize) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/softhsm-cluster.sh");
        let output = Command::new("bash")
            .arg(script)
            .arg(dir.path())
            .arg(members.to_string())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cluster script failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // No material pool unless a test asks for one: its background refills would change
        // the HSM object counts other tests look at.
        let config_text = std::fs::read_to_string(dir.path().join("hsm-kms.toml"))
            .unwrap()
            .replace("material_pool = 32", "material_pool = 0");
        std::fs::write(dir.path().join("hsm-kms.toml"), &config_text).unwrap();
        TestCluster { dir, config_text }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn config(&self) -> Config {
        Config::parse(&self.config_text).unwrap()
    }

    /// The default cluster's config.
    pub fn cluster_config(&self) -> ClusterConfig {
        self.config().default_cluster().unwrap().clone()
    }

    /// The cluster config with only the named members.
    pub fn subset(&self, names: &[&str]) -> ClusterConfig {
        let mut config = self.cluster_config();
        config.members.retain(|m| names.contains(&m.name.as_str()));
        config
    }

    /// Writes a config file and returns its path.
    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn user_pin(&self, member: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{member}/user.pin"))).unwrap()
    }

    /// Moves a member's token directory away (the token vanishes) or back.
    pub fn hide_token(&self, member: &str) {
        std::fs::rename(
            self.path(&format!("{member}/tokens")),
            self.path(&format!("{member}/tokens.away")),
        )
        .unwrap();
    }

    pub fn restore_token(&self, member: &str) {
        std::fs::rename(
            self.path(&format!("{member}/tokens.away")),
            self.path(&format!("{member}/tokens")),
        )
        .unwrap();
    }

    /// Runs `hsm-kms cluster init`, which must succeed.
    pub fn init(&self) {
        let init = self.cli(&["cluster", "init"]);
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
    }

    /// Runs the `hsm-kms` binary with this cluster's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
            .arg("--config")
            .arg(self.path("hsm-kms.toml"))
            .args(args)
            .output()
            .unwrap()
    }
}

/// A key store over a fresh, initialised two-member cluster, with sled on disk and a
/// manual clock.
pub struct TestStore {
    pub cluster: TestCluster,
    pub clock: std::sync::Arc<hsm_kms::clock::ManualClock>,
    pub store: hsm_kms::keystore::KeyStore,
    pub caller: hsm_kms::keystore::Caller,
}

impl TestStore {
    pub fn new() -> TestStore {
        let cluster = TestCluster::new(2);
        let config = cluster.cluster_config();
        hsm_kms::cluster::Cluster::init("local", &config).unwrap();
        let clock = std::sync::Arc::new(hsm_kms::clock::ManualClock::new());
        let store = open_store(&cluster, clock.clone());
        let caller = hsm_kms::keystore::Caller::local(store.scope());
        TestStore {
            cluster,
            clock,
            store,
            caller,
        }
    }

    /// Closes and reopens the key store on the same cluster and data directory.
    pub fn reopen(self) -> TestStore {
        let TestStore {
            cluster,
            clock,
            store,
            caller,
        } = self;
        drop(store);
        let store = open_store(&cluster, clock.clone());
        TestStore {
            cluster,
            clock,
            store,
            caller,
        }
    }
}

fn open_store(
    cluster: &TestCluster,
    clock: std::sync::Arc<hsm_kms::clock::ManualClock>,
) -> hsm_kms::keystore::KeyStore {
    let config = cluster.config();
    let hsms = hsm_kms::cluster::Cluster::open("local", config.default_cluster().unwrap()).unwrap();
    let metadata = hsm_kms::store::SledStore::open(&config.service.data_dir).unwrap();
    let scope =
        hsm_kms::ids::Scope::new(&config.service.region, &config.service.account_id).unwrap();
    hsm_kms::keystore::KeyStore::with_parts(scope, hsms, Box::new(metadata), clock, config.audit)
        .unwrap()
}

/// The environment variable that tells a child test process the cluster's directory.
pub const CHILD_DIR_ENV: &str = "HSM_KMS_TEST_CLUSTER_DIR";

/// Runs the ignored test `child` of the current test binary in a child process, on
/// `cluster` (its directory in [`CHILD_DIR_ENV`]), crashing at `point`; returns whether the
/// child was killed.
pub fn crash_child(cluster: &TestCluster, child: &str, point: &str) -> bool {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture"])
        .env(CHILD_DIR_ENV, cluster.dir.path())
        .env(hsm_kms::fault::CRASH_AT_ENV, point)
        .status()
        .unwrap();
    !status.success()
}

/// Writes a file that holds a secret with mode 0600 (hsm-kms refuses looser ones).
pub fn write_secret_file(path: &Path, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Points `SOFTHSM2_CONF` and `PKCS11_VENDOR_SIM_CONF` (the vendor-like module's config) at
/// this process's switches before `main`, so before any test thread exists: each test
/// cluster's members then read their own SoftHSM2 configuration without
/// the environment ever changing while threads run (see `hsm_kms::hsm::prepare_switches`).
/// (`.init_array` is ELF's: the SoftHSM2 tests run on Linux.)
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static PREPARE_ENVIRONMENT: extern "C" fn() = prepare_environment;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
extern "C" fn prepare_environment() {
    // SAFETY: the ELF initialisers run before `main`, on the only thread of the process.
    unsafe { hsm_kms::hsm::prepare_switches(["SOFTHSM2_CONF", "PKCS11_VENDOR_SIM_CONF"]) }
}

/// A logged-in user session on one member's token through raw PKCS#11 (its own module
/// switch), for tests that look at or change what hsm-kms cannot.
pub fn raw_session(tc: &TestCluster, member: &str) -> cryptoki::session::Session {
    let pkcs11 =
        cryptoki::context::Pkcs11::new(tc.path(&format!("{member}/libsofthsm2-{member}.so")))
            .unwrap();
    match pkcs11.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    )) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(error) => panic!("{error}"),
    }
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == member)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    match session.login(
        cryptoki::session::UserType::User,
        Some(&tc.user_pin(member).into()),
    ) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(error) => panic!("{error}"),
    }
    session
}

/// Decrypts `blob` as `caller` (the key named by the blob); panics on any refusal.
pub fn decrypt(
    store: &hsm_kms::keystore::KeyStore,
    caller: &hsm_kms::caller::Caller,
    blob: &[u8],
) -> Vec<u8> {
    use secrecy::ExposeSecret;
    store
        .decrypt(
            caller,
            hsm_kms::keystore::api::DecryptRequest {
                ciphertext_blob: blob.to_vec(),
                ..Default::default()
            },
        )
        .unwrap()
        .plaintext
        .expose_secret()
        .to_vec()
}

/// Opens the sled database in `dir` directly, below the store's API, waiting (up to ten
/// seconds) for the file lock that a store dropped a moment ago still holds: sled releases
/// it only when its flusher thread has stopped, as `SledStore::open` knows.
pub fn open_raw_sled(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(error) if std::time::Instant::now() < deadline => {
                let _still_held = error;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(error) => panic!("cannot open {} with sled: {error}", dir.display()),
        }
    }
}
