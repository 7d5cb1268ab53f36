//! `hsm-kms store migrate --from BACKEND --to BACKEND`: copies the whole metadata store
//! (keys, aliases, grants, policies, custom key stores, the audit trail with its chain and
//! checkpoints) into an empty store of the other backend, compares the two record by
//! record, and checks the copied audit chain. From sled to PostgreSQL to move onto
//! several instances; from PostgreSQL to sled for a backup. The source must not change
//! meanwhile: stop the server (sled is locked by it anyway) or every instance. Exits 1 on
//! any failure; the source is never written.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::config::{Config, SecretRef};
use crate::store::copy::copy_store;
use crate::store::{DEFAULT_POOL_SIZE, MetadataStore, StoreSettings};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the metadata store into an empty one of another backend and verify the copy.
    Migrate {
        /// The backend to copy from.
        #[arg(long, value_enum)]
        from: Backend,
        /// The backend to copy to (must be empty).
        #[arg(long, value_enum)]
        to: Backend,
        /// The sled store's directory (default: `[service] data_dir`).
        #[arg(long, value_name = "DIR")]
        sled_dir: Option<PathBuf>,
        /// The PostgreSQL URL as `env:VAR` or `file:PATH` (default: `[store] url`).
        #[arg(long, value_name = "SECRET_REF")]
        postgres_url: Option<String>,
    },
}

/// A metadata store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Sled,
    Postgres,
}

pub fn run(config: &Config, command: StoreCommand) -> Result<ExitCode, String> {
    let StoreCommand::Migrate {
        from,
        to,
        sled_dir,
        postgres_url,
    } = command;
    if from == to {
        return Err("--from and --to name the same backend".to_owned());
    }
    let sled_dir = sled_dir.unwrap_or_else(|| config.service.data_dir.clone());
    let postgres = match (postgres_url, &config.store) {
        (Some(text), _) => StoreSettings::Postgres {
            url: SecretRef::try_from(text).map_err(|e| format!("--postgres-url: {e}"))?,
            pool_size: DEFAULT_POOL_SIZE,
        },
        (None, settings @ StoreSettings::Postgres { .. }) => settings.clone(),
        (None, StoreSettings::Sled {}) => {
            return Err(
                "no PostgreSQL URL: pass --postgres-url env:VAR (or file:PATH), or set \
                 [store] backend = \"postgres\" with its url"
                    .to_owned(),
            );
        }
    };
    let open = |backend: Backend| -> Result<Box<dyn MetadataStore>, String> {
        let settings = match backend {
            Backend::Sled => StoreSettings::Sled {},
            Backend::Postgres => postgres.clone(),
        };
        crate::store::open(&settings, &sled_dir).map_err(|error| match error {
            crate::store::StoreError::Locked { .. } => super::STORE_IN_USE.to_owned(),
            other => format!("cannot open the {backend:?} store: {other}"),
        })
    };
    let source = open(from)?;
    let destination = open(to)?;
    let report = copy_store(source.as_ref(), destination.as_ref()).map_err(|e| e.to_string())?;
    let chain = crate::audit::verify::verify(destination.as_ref(), None, None)
        .map_err(|e| format!("cannot read the copied audit trail: {e}"))?;
    if let Some(seq) = chain.first_bad() {
        return Err(format!(
            "the copied audit chain does not verify from event {seq} (nor does the source's)"
        ));
    }
    print!("{report}");
    println!(
        "copied and verified: every record matches its source; the audit chain of {} events \
         verifies (its {} checkpoint seals are checked by `hsm-kms audit verify`)",
        chain.events, chain.checkpoints
    );
    Ok(ExitCode::SUCCESS)
}
