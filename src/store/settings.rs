//! The `[store]` section of the configuration: which [`MetadataStore`] backs the key store,
//! and [`open`], the one place that opens it. It owns the choice of backend and the
//! resolution of the PostgreSQL URL, a secret (it holds a password): the URL is given only
//! as a reference (`env:VAR` or `file:PATH`, the file readable by its owner only), resolved
//! when the store opens, and never printed.

use std::path::Path;

use serde::Deserialize;

#[cfg(feature = "postgres")]
use super::PostgresStore;
use super::{MetadataStore, SledStore, StoreError};
use crate::config::SecretRef;

/// Connections a PostgreSQL store keeps at most when `pool_size` is not given.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// Where the metadata lives.
///
/// ```toml
/// [store]
/// backend = "postgres"              # or "sled", the default: a database in data_dir
/// url = "env:HSM_KMS_POSTGRES_URL"  # postgresql://user:password@host:port/database
/// pool_size = 16                    # optional
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreSettings {
    /// An embedded sled database in the service's `data_dir`, held by one process. (A
    /// struct variant, so that a stray field such as `url` is refused.)
    Sled {},
    /// A PostgreSQL database that several instances share.
    Postgres {
        /// The connection URL (or key=value connection string), as a secret reference.
        url: SecretRef,
        /// Most connections kept open to the database.
        #[serde(default = "default_pool_size")]
        pool_size: u32,
    },
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings::Sled {}
    }
}

fn default_pool_size() -> u32 {
    DEFAULT_POOL_SIZE
}

impl StoreSettings {
    /// The backend's name as the config spells it.
    pub fn backend(&self) -> &'static str {
        match self {
            StoreSettings::Sled {} => "sled",
            StoreSettings::Postgres { .. } => "postgres",
        }
    }
}

/// Opens the metadata store `settings` describe (a sled one in `data_dir`).
pub fn open(
    settings: &StoreSettings,
    data_dir: &Path,
) -> Result<Box<dyn MetadataStore>, StoreError> {
    match settings {
        StoreSettings::Sled {} => Ok(Box::new(SledStore::open(data_dir)?)),
        #[cfg(feature = "postgres")]
        StoreSettings::Postgres { url, pool_size } => {
            let url = url
                .resolve()
                .map_err(|error| StoreError::Config(error.to_string()))?;
            Ok(Box::new(PostgresStore::connect(&url, *pool_size)?))
        }
        #[cfg(not(feature = "postgres"))]
        StoreSettings::Postgres { .. } => Err(StoreError::Config(
            "[store] backend = \"postgres\" needs hsm-kms built with its cargo feature `postgres`"
                .to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Section {
        #[serde(default)]
        store: StoreSettings,
    }

    fn parse(text: &str) -> Result<StoreSettings, String> {
        toml::from_str::<Section>(text)
            .map(|section| section.store)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn sled_is_the_default_and_postgres_takes_a_secret_url() {
        assert_eq!(parse("").unwrap(), StoreSettings::Sled {});
        assert_eq!(
            parse("[store]\nbackend = \"sled\"").unwrap(),
            StoreSettings::Sled {}
        );
        assert_eq!(
            parse("[store]\nbackend = \"postgres\"\nurl = \"env:PG_URL\"").unwrap(),
            StoreSettings::Postgres {
                url: SecretRef::Env("PG_URL".into()),
                pool_size: DEFAULT_POOL_SIZE,
            }
        );
        assert_eq!(
            parse("[store]\nbackend = \"postgres\"\nurl = \"file:pg-url\"\npool_size = 4").unwrap(),
            StoreSettings::Postgres {
                url: SecretRef::File("pg-url".into()),
                pool_size: 4,
            }
        );
    }

    #[test]
    fn an_inline_url_a_missing_url_or_a_stray_field_is_refused() {
        let cases = [
            (
                "backend = \"postgres\"\nurl = \"postgresql://kms:hunter2@db/kms\"",
                "never inline",
            ),
            ("backend = \"postgres\"", "missing field `url`"),
            (
                "backend = \"sled\"\nurl = \"env:PG_URL\"",
                "unknown field `url`",
            ),
            ("backend = \"mysql\"", "unknown variant `mysql`"),
        ];
        for (section, expected) in cases {
            let error = parse(&format!("[store]\n{section}")).unwrap_err();
            assert!(error.contains(expected), "{section}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn an_unresolvable_url_names_the_reference_only() {
        let settings = StoreSettings::Postgres {
            url: SecretRef::Env("HSM_KMS_TEST_UNSET_POSTGRES_URL".into()),
            pool_size: 1,
        };
        let dir = tempfile::tempdir().unwrap();
        let error = open(&settings, dir.path()).err().unwrap().to_string();
        assert_eq!(
            error,
            "metadata store configuration: cannot resolve secret \
             env:HSM_KMS_TEST_UNSET_POSTGRES_URL: environment variable not set"
        );
    }
}
