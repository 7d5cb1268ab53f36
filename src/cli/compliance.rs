//! `hsm-kms compliance check|verify-bundle`: runs the compliance controls in this process over
//! the configured cluster and metadata store, prints or writes the report, and optionally
//! writes a sealed evidence bundle. While `hsm-kms serve` holds the store, the controls read it
//! through the server's admin socket (they only read), so the report is the same either way.
//! Exits 0 when no control FAILs, 1 when one does or the check could not run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};

use crate::clock::{Clock, SystemClock};
use crate::cluster::Cluster;
use crate::compliance::{self, Sources, bundle, html, junit};
use crate::config::Config;
use crate::store::StoreError;

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Junit,
    Html,
}

impl Format {
    fn file_name(self) -> &'static str {
        match self {
            Format::Json => "compliance-report.json",
            Format::Junit => "compliance-report.junit.xml",
            Format::Html => "compliance-report.html",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ComplianceCommand {
    /// Prove the key controls from primary evidence (HSM attributes, metadata, audit chain)
    /// and report PASS / FAIL / WARN / NOT_APPLICABLE per control and per key.
    Check {
        /// Only these controls (e.g. KMS-HSM-1); repeatable. Default: every control.
        #[arg(long = "control", value_name = "ID")]
        controls: Vec<String>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Write the report into DIR (as compliance-report.json|.junit.xml|.html) instead of
        /// printing it.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Also write an evidence bundle into DIR: the report, the audit events, the newest
        /// sealed checkpoint and a manifest sealed inside the HSMs.
        #[arg(long, value_name = "DIR")]
        evidence: Option<PathBuf>,
    },
    /// Check an evidence bundle: its manifest's seal opens in the HSMs and every file matches.
    VerifyBundle {
        /// The bundle's directory.
        dir: PathBuf,
    },
}

pub fn run(config: &Config, command: ComplianceCommand) -> Result<ExitCode, String> {
    match command {
        ComplianceCommand::Check {
            controls,
            format,
            out,
            evidence,
        } => check(
            config,
            &controls,
            format,
            out.as_deref(),
            evidence.as_deref(),
        ),
        ComplianceCommand::VerifyBundle { dir } => {
            let cluster = open_cluster(config)?;
            let manifest = bundle::verify(&dir, &cluster).map_err(|e| e.to_string())?;
            println!(
                "the bundle is intact: {} file(s), manifest sealed inside the HSMs of cluster {}",
                manifest.files.len(),
                manifest.cluster
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_cluster(config: &Config) -> Result<Arc<Cluster>, String> {
    let cluster_config = config.default_cluster().map_err(|e| e.to_string())?;
    Cluster::open(&config.default_cluster, cluster_config)
        .map(Arc::new)
        .map_err(|e| format!("cannot open the cluster: {e}"))
}

fn check(
    config: &Config,
    controls: &[String],
    format: Format,
    out: Option<&Path>,
    evidence: Option<&Path>,
) -> Result<ExitCode, String> {
    let selected = compliance::select(controls).map_err(|e| e.to_string())?;
    let cluster = open_cluster(config)?;
    let store = super::via_server::open_store(config).map_err(|error| match error {
        StoreError::Locked { .. } => format!(
            "{} (held by a process without an admin socket)",
            super::STORE_IN_USE
        ),
        other => format!("cannot open the metadata store: {other}"),
    })?;
    let sources = Sources {
        config,
        cluster: &cluster,
        store: store.as_ref(),
        now_millis: SystemClock.now_millis(),
    };
    let report = compliance::check(&sources, &selected).map_err(|e| e.to_string())?;
    let text = match format {
        Format::Json => report.to_json(),
        Format::Junit => junit::render(&report),
        Format::Html => html::render(&report),
    };
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let path = dir.join(format.file_name());
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("report written to {}", path.display());
        }
        None => println!("{}", text.trim_end()),
    }
    if let Some(dir) = evidence {
        let checkpoint = match report.audit.newest_checkpoint_seq {
            Some(seq) => {
                compliance::trail::checkpoint_at(store.as_ref(), seq).map_err(|e| e.to_string())?
            }
            None => None,
        };
        bundle::write(dir, &report, store.as_ref(), checkpoint.as_ref(), &cluster)
            .map_err(|e| e.to_string())?;
        eprintln!("evidence bundle written to {}", dir.display());
    }
    let summary = &report.summary;
    eprintln!(
        "compliance: {} ({} control(s) PASS, {} FAIL, {} WARN, {} NOT_APPLICABLE)",
        summary.status.as_str(),
        summary.controls.pass,
        summary.controls.fail,
        summary.controls.warn,
        summary.controls.not_applicable
    );
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
