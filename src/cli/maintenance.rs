//! `hsm-kms maintenance run`: one pass of the key store's background work (due deletions
//! and rotations, then reconciliation of the HSMs against the metadata), its report printed
//! as JSON. It exits 1 when some key's maintenance failed.

use std::process::ExitCode;

use clap::Subcommand;

use super::output::Response;
use super::{Globals, open_keystore};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Carry out due deletions and rotations once, then report HSM/metadata mismatches.
    Run,
}

pub fn run(
    config: &Config,
    globals: &Globals,
    command: MaintenanceCommand,
) -> Result<ExitCode, String> {
    let MaintenanceCommand::Run = command;
    let query = globals
        .query
        .as_deref()
        .map(super::output::Query::parse)
        .transpose()
        .map_err(|e| format!("bad value for --query: {e}"))?;
    let keystore = open_keystore(config)?;
    let outcome = keystore.run_maintenance();
    keystore.shutdown();
    let report = outcome.map_err(|e| format!("maintenance failed: {} ({})", e, e.code()))?;
    let response = Response::new(&report).map_err(|e| e.to_string())?;
    super::print(&response, globals.output, query.as_ref())?;
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
