//! Throw-away PostgreSQL databases for tests: each test gets a fresh database in the
//! cluster that `HSM_KMS_TEST_POSTGRES_URL` names (`scripts/test.sh` starts one and sets
//! it), dropped again when the test is done. Without the variable the tests that need
//! PostgreSQL skip and say why.

use postgres::NoTls;
use secrecy::SecretString;

use hsm_kms::store::PostgresStore;

/// The variable holding the URL of a PostgreSQL database whose user may create databases.
pub const URL_ENV: &str = "HSM_KMS_TEST_POSTGRES_URL";

/// A database of its own for one test, dropped with this guard.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database (holds the cluster's password).
    pub url: SecretString,
}

impl TestDatabase {
    /// Creates a fresh, empty database; `None`, after printing why, when no PostgreSQL
    /// cluster is configured.
    pub fn create() -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var(URL_ENV) else {
            eprintln!(
                "skipped: {URL_ENV} is not set (scripts/test.sh starts a throw-away \
                 PostgreSQL and sets it)"
            );
            return None;
        };
        let name = format!("hsmkms_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = postgres::Client::connect(&admin_url, NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let (base, _database) = admin_url
            .rsplit_once('/')
            .expect("the test URL ends in /DATABASE");
        let url = SecretString::from(format!("{base}/{name}"));
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// A store on this database with a small pool.
    pub fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.url, 4).unwrap()
    }

    /// A direct connection to this database, for looking under the store.
    pub fn client(&self) -> postgres::Client {
        use secrecy::ExposeSecret;
        postgres::Client::connect(self.url.expose_secret(), NoTls).unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match postgres::Client::connect(&self.admin_url, NoTls) {
            Ok(mut admin) => {
                let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
                if let Err(error) = admin.batch_execute(&drop) {
                    eprintln!("could not drop test database {}: {error}", self.name);
                }
            }
            Err(error) => eprintln!("could not drop test database {}: {error}", self.name),
        }
    }
}

impl TestDatabase {
    /// A key store over `cluster` (opened again: one process may open a cluster several
    /// times) with its metadata in this database, on the system clock: one instance of a
    /// multi-instance deployment.
    pub fn keystore(&self, cluster: &super::TestCluster) -> hsm_kms::keystore::KeyStore {
        let config = cluster.config();
        let hsms =
            hsm_kms::cluster::Cluster::open("local", config.default_cluster().unwrap()).unwrap();
        let scope =
            hsm_kms::ids::Scope::new(&config.service.region, &config.service.account_id).unwrap();
        hsm_kms::keystore::KeyStore::with_parts(
            scope,
            hsms,
            Box::new(self.store()),
            std::sync::Arc::new(hsm_kms::clock::SystemClock),
            config.audit,
        )
        .unwrap()
    }
}

/// How many times the cross-instance consistency tests repeat their trial:
/// `HSM_KMS_TEST_CONSISTENCY_TRIALS`, or `default` (the figure is 1,000).
pub fn consistency_trials(default: usize) -> usize {
    std::env::var("HSM_KMS_TEST_CONSISTENCY_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}
