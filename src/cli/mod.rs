//! The `hsm-kms` command line: parsing, logging set-up and exit codes. Each command group
//! lives in its own module; errors are printed once, plainly, and never contain a secret.

mod audit;
mod cluster;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// hsm-kms: an HSM-backed key management service modelled on AWS KMS.
#[derive(Debug, Parser)]
#[command(name = "hsm-kms", version)]
struct Cli {
    /// Config file (default: $HSM_KMS_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operate the HSM cluster: ceremonies, preflight and health.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Query, export and verify the audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HSM_KMS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match Config::load_from(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hsm-kms: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Cluster(command) => cluster::run(&config, command),
        Command::Audit(command) => audit::run(&config, command),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("hsm-kms: {message}");
            ExitCode::FAILURE
        }
    }
}
