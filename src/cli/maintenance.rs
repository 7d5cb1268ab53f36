//! `hsm-kms maintenance run`: one pass of the key store's background work (due deletions
//! and rotations, then reconciliation of the HSMs against the metadata), its report printed
//! as JSON. It exits 1 when some key's maintenance failed. While `hsm-kms serve` runs, the
//! server runs the pass (through its admin socket) and this prints its report.

use std::process::ExitCode;

use clap::Subcommand;

use super::output::Response;
use super::via_server::ServerLink;
use super::{Globals, open_keystore};
use crate::config::Config;
use crate::server::admin::AdminRequest;

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
    let report = match ServerLink::connect(config) {
        Some(server) => server
            .request(&AdminRequest::Maintenance)
            .map_err(|refused| {
                format!("maintenance failed: {} ({})", refused.message, refused.code)
            })?,
        None => {
            let keystore = open_keystore(config)?;
            let outcome = keystore.run_maintenance();
            keystore.shutdown();
            let report =
                outcome.map_err(|e| format!("maintenance failed: {} ({})", e, e.code()))?;
            serde_json::to_value(&report).map_err(|e| e.to_string())?
        }
    };
    let failed = report["failures"]
        .as_array()
        .is_some_and(|failures| !failures.is_empty());
    let response = Response::from_value(report);
    super::print(&response, globals.output, query.as_ref())?;
    Ok(if !failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
