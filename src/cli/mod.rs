//! The `hsm-kms` command line (cargo feature `cli`): parsing, logging set-up and exit codes.
//! Each command group lives in its own module; errors are printed once, plainly, and never
//! contain a secret.
//!
//! Key commands (`create-key`, `encrypt`, ...) exit as the AWS CLI v2 does: 0 on success,
//! 252 for a parameter value that cannot be read, 254 when the operation fails, 255 when
//! the key store cannot be opened. Operator commands (`cluster`, `maintenance`) exit 1 on
//! failure. Usage errors exit 2.

mod audit;
mod cluster;
mod compliance;
mod endpoint;
mod envelope;
mod import;
mod kms;
mod maintenance;
mod output;
mod params;
mod store;
mod via_server;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::keystore::{KeyStore, OpenError};
use crate::store::StoreError;

/// A parameter value could not be read (the AWS CLI v2's code).
const EXIT_PARAM: u8 = 252;
/// The operation failed with a KMS exception (the AWS CLI v2's code; v1 uses 255).
const EXIT_SERVICE: u8 = 254;
/// Any other failure, e.g. the key store cannot be opened (the AWS CLI's code).
const EXIT_OTHER: u8 = 255;

/// What a command says when another process (normally the server) holds the metadata store.
const STORE_IN_USE: &str = "the metadata store is in use (is `hsm-kms serve` running?)";

/// hsm-kms: an HSM-backed key management service modelled on AWS KMS.
#[derive(Debug, Parser)]
#[command(name = "hsm-kms", version)]
struct Cli {
    /// Config file (default: $HSM_KMS_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// Options of the key commands, named as the AWS CLI's global options.
#[derive(Debug, Args)]
#[command(next_help_heading = "AWS CLI options")]
struct Globals {
    /// Output format of key commands: json (AWS CLI JSON) or text (AWS CLI text).
    #[arg(long, global = true, value_enum, default_value_t = output::Format::Json)]
    output: output::Format,
    /// Print only part of the response: a field or dotted path (`KeyMetadata.Arn`), each
    /// step optionally followed by [N], [*] or [] (`Aliases[].AliasName`).
    #[arg(long, global = true, value_name = "PATH")]
    query: Option<String>,
    /// How a blob given as a plain value or file:// is read: base64 (as the AWS CLI v2) or
    /// raw-in-base64-out (the text's own bytes, as the AWS CLI v1). fileb:// is always raw.
    #[arg(long, global = true, value_enum, default_value_t = params::BinaryFormat::Base64)]
    cli_binary_format: params::BinaryFormat,
    #[command(flatten)]
    remote: endpoint::Remote,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operate the HSM cluster: ceremonies, preflight and health.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Query, export and verify the audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Run the key store's background work by hand.
    #[command(subcommand)]
    Maintenance(maintenance::MaintenanceCommand),
    /// Prove the key controls from primary evidence (HSMs, metadata, audit chain).
    #[command(subcommand)]
    Compliance(compliance::ComplianceCommand),
    /// Metadata store administration: copy between sled and PostgreSQL.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Serve the AWS KMS API over HTTP(S) until SIGTERM or SIGINT.
    Serve {
        /// Address to listen on (default: [server] listen, or 127.0.0.1:8443).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
    },
    #[command(flatten)]
    Envelope(envelope::EnvelopeCommand),
    /// Wrap key material for ImportKeyMaterial under the public key of
    /// GetParametersForImport, locally (RSA-OAEP; RFC 5649 for RSA_AES_KEY_WRAP_*).
    WrapKeyMaterial(import::WrapKeyMaterial),
    #[command(flatten)]
    Kms(kms::KmsCommand),
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
    // Parsed on their own: their --output is a path, not the key commands' format.
    if envelope::is_envelope_command(std::env::args_os()) {
        return envelope::main();
    }
    let mut cli = Cli::parse();
    // Runs on the user's machine, with no key store and no config.
    cli.command = match cli.command {
        Command::WrapKeyMaterial(command) => {
            return import::wrap(command, cli.globals.cli_binary_format);
        }
        other => other,
    };
    let config = match (Config::load_from(cli.config.as_deref()), cli.command) {
        (Ok(config), command) => {
            cli.command = command;
            config
        }
        // A key command sent to an endpoint needs no config of this machine.
        (Err(_), Command::Kms(command)) if cli.globals.remote.endpoint_url.is_some() => {
            return kms::run(None, &cli.globals, command);
        }
        (Err(error), _) => {
            eprintln!("hsm-kms: {error}");
            return ExitCode::from(2);
        }
    };
    prepare_environment(&config);
    let outcome = match cli.command {
        Command::Cluster(command) => cluster::run(&config, command),
        Command::Audit(command) => audit::run(&config, command),
        Command::Maintenance(command) => maintenance::run(&config, &cli.globals, command),
        Command::Compliance(command) => compliance::run(&config, command),
        Command::Store(command) => store::run(&config, command),
        Command::Kms(command) => Ok(kms::run(Some(&config), &cli.globals, command)),
        Command::WrapKeyMaterial(command) => {
            Ok(import::wrap(command, cli.globals.cli_binary_format))
        }
        Command::Envelope(command) => Ok(envelope::run(cli.config.as_deref(), command)),
        Command::Serve { listen } => crate::server::serve(&config, listen)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|error| error.to_string()),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("hsm-kms: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Sets the environment the members' modules read, once, before any thread starts.
#[allow(unsafe_code)]
fn prepare_environment(config: &Config) {
    // SAFETY: called from `main` before anything starts a thread: the tracing subscriber,
    // argument parsing and config loading run on this one thread only.
    unsafe { crate::hsm::prepare_environment(config) }
}

/// Opens the key store, saying plainly when another process holds its metadata.
fn open_keystore(config: &Config) -> Result<KeyStore, String> {
    let keystore = KeyStore::open(config).map_err(|error| open_failure(&error))?;
    // Custom key stores reconnect in the background; this process is short-lived.
    keystore.settle_custom_key_stores(std::time::Duration::from_secs(120));
    Ok(keystore)
}

/// Why the key store could not be opened, in words for an operator.
fn open_failure(error: &OpenError) -> String {
    match error {
        OpenError::Store(StoreError::Locked { .. }) => STORE_IN_USE.to_owned(),
        other => format!("cannot open the key store: {other}"),
    }
}

/// Prints a response; a closed stdout (`| head`) is not a failure, as for the AWS CLI.
fn print(
    response: &output::Response,
    format: output::Format,
    query: Option<&output::Query>,
) -> Result<(), String> {
    match response.print(format, query) {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write the response: {error}"))
        }
        _ => Ok(()),
    }
}
