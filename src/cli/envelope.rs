//! `hsm-kms encrypt-file` and `decrypt-file`: AWS Encryption SDK messages from files,
//! directories or standard streams, with the key store in this process or behind
//! `--endpoint-url` (SigV4 with an AWS credentials profile). Output goes to a hidden
//! partial file renamed into place only when the whole message succeeded, so a failed
//! decryption leaves no plaintext behind. Exits 0 on success, 1 on failure, 2 on usage.
//! They have a parser of their own (the top-level one lists them for `--help`).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::envelope::remote::AwsCredentials;
use crate::envelope::{
    AlgorithmSuite, CacheLimits, CachingMaterialsManager, DecryptOptions, Decryptor,
    DefaultMaterialsManager, DiscoveryFilter, EncryptOptions, EncryptionContext, Encryptor,
    EnvelopeError, HttpKms, KmsClient, KmsKeyring, LocalKms, MaterialsCache, MaterialsManager,
};

/// Files larger than this get a progress bar when stderr is a terminal.
const PROGRESS_THRESHOLD: u64 = 8 * 1024 * 1024;
/// Suffix of encrypted files written for a directory.
const ENCRYPTED_SUFFIX: &str = ".encrypted";
/// Entries of the data-key cache of one CLI run.
const CACHE_CAPACITY: usize = 64;

/// The envelope commands' own parser: the key commands' global `--output FORMAT` would
/// clash with their `--output PATH`.
#[derive(Debug, Parser)]
#[command(name = "hsm-kms", version)]
struct EnvelopeCli {
    /// Config file (default: $HSM_KMS_CONFIG); not needed with --endpoint-url.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: EnvelopeCommand,
}

/// Whether the command line names an envelope command (the first word that is not an
/// option or an option's value).
pub fn is_envelope_command(args: impl IntoIterator<Item = OsString>) -> bool {
    const WITH_VALUE: [&str; 4] = ["--config", "--output", "--query", "--cli-binary-format"];
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if WITH_VALUE.contains(&arg.as_ref()) {
            args.next();
        } else if !arg.starts_with('-') {
            return arg == "encrypt-file" || arg == "decrypt-file";
        }
    }
    false
}

/// Parses and runs an envelope command line.
pub fn main() -> ExitCode {
    let cli = EnvelopeCli::parse();
    let keys = match &cli.command {
        EnvelopeCommand::EncryptFile(args) => &args.keys,
        EnvelopeCommand::DecryptFile(args) => &args.keys,
    };
    if keys.endpoint_url.is_none() {
        // In-process, the members' PKCS#11 modules read the environment set from the
        // config, before any thread starts.
        match Config::load_from(cli.config.as_deref()) {
            Ok(config) => super::prepare_environment(&config),
            Err(error) => {
                eprintln!("hsm-kms: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    run(cli.config.as_deref(), cli.command)
}

#[derive(Debug, Subcommand)]
pub enum EnvelopeCommand {
    /// Encrypt a file, a directory of files or stdin into AWS Encryption SDK messages.
    EncryptFile(EncryptFileArgs),
    /// Decrypt AWS Encryption SDK messages from a file, a directory of files or stdin.
    DecryptFile(DecryptFileArgs),
}

/// Where the data keys come from, and the data-key cache.
#[derive(Debug, Args)]
pub struct KeySource {
    /// A KMS key (key id, key ARN; alias for encryption only). Repeat for several: the
    /// first generates the data key, each wraps a copy, and any one can decrypt.
    #[arg(long = "key-id", value_name = "KEY")]
    key_ids: Vec<String>,
    /// Encryption context pairs. When encrypting: bound to the message. When decrypting:
    /// pairs the message's context must contain.
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
    encryption_context: Vec<String>,
    /// Input file, directory, or - for stdin.
    #[arg(long, value_name = "PATH")]
    input: PathBuf,
    /// Output file, directory (when the input is one), or - for stdout.
    #[arg(long, value_name = "PATH")]
    output: PathBuf,
    /// Reuse data keys for this long (e.g. 5m); enables the data-key cache.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    cache_max_age: Option<Duration>,
    /// With the cache: at most this many messages per data key.
    #[arg(long, value_name = "N")]
    cache_max_messages: Option<u64>,
    /// With the cache: at most this many plaintext bytes per data key.
    #[arg(long, value_name = "BYTES")]
    cache_max_bytes: Option<u64>,
    /// Talk to this AWS KMS endpoint (e.g. a running `hsm-kms serve`) instead of opening
    /// the key store in this process.
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// Credentials profile for --endpoint-url (default: the environment, then AWS_PROFILE).
    #[arg(long, value_name = "NAME", requires = "endpoint_url")]
    profile: Option<String>,
    /// PEM certificates to trust for an https:// --endpoint-url instead of Mozilla's roots
    /// (default: AWS_CA_BUNDLE).
    #[arg(long, value_name = "FILE", requires = "endpoint_url")]
    ca_bundle: Option<PathBuf>,
    /// Region for --endpoint-url (default: AWS_REGION, AWS_DEFAULT_REGION).
    #[arg(long, value_name = "REGION", requires = "endpoint_url")]
    region: Option<String>,
}

#[derive(Debug, Args)]
pub struct EncryptFileArgs {
    #[command(flatten)]
    keys: KeySource,
    /// Frame length in bytes.
    #[arg(long, default_value_t = crate::envelope::format::DEFAULT_FRAME_LENGTH)]
    frame_length: u32,
    /// AES_256_GCM_HKDF_SHA512_COMMIT_KEY (default) or
    /// AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384.
    #[arg(long, default_value = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY")]
    suite: String,
}

#[derive(Debug, Args)]
pub struct DecryptFileArgs {
    #[command(flatten)]
    keys: KeySource,
    /// Decrypt with any KMS key the message names (no --key-id), limited by
    /// --discovery-account and --discovery-partition.
    #[arg(long, conflicts_with = "key_ids")]
    discovery: bool,
    /// With --discovery: only keys of these accounts.
    #[arg(long, value_name = "ACCOUNT", requires = "discovery")]
    discovery_account: Vec<String>,
    /// With --discovery-account: the partition of the keys.
    #[arg(long, default_value = "aws", value_name = "PARTITION")]
    discovery_partition: String,
    /// Refuse messages with more encrypted data keys than this.
    #[arg(long, value_name = "N")]
    max_encrypted_data_keys: Option<u16>,
}

/// Runs an envelope command; `config` is needed only without `--endpoint-url`.
pub fn run(config: Option<&Path>, command: EnvelopeCommand) -> ExitCode {
    let outcome = match command {
        EnvelopeCommand::EncryptFile(args) => encrypt_files(config, &args),
        EnvelopeCommand::DecryptFile(args) => decrypt_files(config, &args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hsm-kms: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The key store client the arguments ask for.
fn client(config: Option<&Path>, keys: &KeySource) -> Result<Arc<dyn KmsClient>, String> {
    if let Some(endpoint) = &keys.endpoint_url {
        let region = keys
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .ok_or("--endpoint-url needs a region: --region or AWS_REGION")?;
        let credentials =
            AwsCredentials::load(keys.profile.as_deref()).map_err(|error| error.to_string())?;
        let ca_bundle = match keys
            .ca_bundle
            .clone()
            .or_else(|| std::env::var_os("AWS_CA_BUNDLE").map(PathBuf::from))
        {
            Some(path) => Some(
                fs::read(&path)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
            ),
            None => None,
        };
        return Ok(Arc::new(
            HttpKms::new(endpoint, &region, credentials, ca_bundle.as_deref())
                .map_err(|error| error.to_string())?,
        ));
    }
    let config = Config::load_from(config).map_err(|error| error.to_string())?;
    let store = super::open_keystore(&config)?;
    Ok(Arc::new(LocalKms::new(Arc::new(store))))
}

/// The materials manager over `keyring`, behind the data-key cache when asked for.
fn manager(keyring: KmsKeyring, keys: &KeySource) -> Result<Arc<dyn MaterialsManager>, String> {
    let direct: Arc<dyn MaterialsManager> =
        Arc::new(DefaultMaterialsManager::new(Arc::new(keyring)));
    let Some(max_age) = keys.cache_max_age else {
        if keys.cache_max_messages.is_some() || keys.cache_max_bytes.is_some() {
            return Err("--cache-max-messages and --cache-max-bytes need --cache-max-age".into());
        }
        return Ok(direct);
    };
    let mut limits = CacheLimits::with_max_age(max_age);
    limits.max_messages = keys.cache_max_messages.unwrap_or(limits.max_messages);
    limits.max_bytes = keys.cache_max_bytes.unwrap_or(limits.max_bytes);
    let cache = Arc::new(MaterialsCache::new(CACHE_CAPACITY));
    Ok(Arc::new(
        CachingMaterialsManager::new(direct, cache, limits, None)
            .map_err(|error| error.to_string())?,
    ))
}

/// `KEY=VALUE` pairs as an encryption context.
fn context(pairs: &[String]) -> Result<EncryptionContext, String> {
    let mut context = EncryptionContext::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--encryption-context {pair:?} is not KEY=VALUE"))?;
        if key.is_empty() {
            return Err(format!("--encryption-context {pair:?} has an empty key"));
        }
        if context.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("--encryption-context repeats the key {key:?}"));
        }
    }
    Ok(context)
}

/// The (input, output) pairs of a run: one, or one per regular file of a directory.
fn jobs(
    input: &Path,
    output: &Path,
    name_for: impl Fn(&str) -> String,
) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    if !input.is_dir() {
        return Ok(vec![(input.to_owned(), output.to_owned())]);
    }
    if output == Path::new("-") {
        return Err("a directory input needs a directory --output".into());
    }
    fs::create_dir_all(output)
        .map_err(|error| format!("cannot create {}: {error}", output.display()))?;
    let mut names = Vec::new();
    for entry in
        fs::read_dir(input).map_err(|error| format!("cannot read {}: {error}", input.display()))?
    {
        let entry = entry.map_err(|error| format!("cannot read {}: {error}", input.display()))?;
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| (input.join(&name), output.join(name_for(&name))))
        .collect())
}

fn encrypt_files(config: Option<&Path>, args: &EncryptFileArgs) -> Result<(), String> {
    let suite = AlgorithmSuite::from_name(&args.suite).ok_or_else(|| {
        format!(
            "--suite {:?} is not a supported algorithm suite",
            args.suite
        )
    })?;
    if args.keys.key_ids.is_empty() {
        return Err("encrypt-file needs at least one --key-id".into());
    }
    crate::envelope::format::check_frame_length(args.frame_length)
        .map_err(|error| format!("--frame-length: {error}"))?;
    let context = context(&args.keys.encryption_context)?;
    let jobs = jobs(&args.keys.input, &args.keys.output, |name| {
        format!("{name}{ENCRYPTED_SUFFIX}")
    })?;
    let keyring = KmsKeyring::strict(client(config, &args.keys)?, args.keys.key_ids.clone())
        .map_err(|error| error.to_string())?;
    let manager = manager(keyring, &args.keys)?;
    for (input, output) in jobs {
        let (reader, length) = open_input(&input)?;
        let options = EncryptOptions {
            suite,
            frame_length: args.frame_length,
            context: context.clone(),
            plaintext_length: length,
        };
        write_output(&output, |writer| {
            let mut encryptor = Encryptor::new(writer, manager.as_ref(), &options)?;
            copy(reader, &mut encryptor)?;
            encryptor.finish()?;
            Ok(())
        })
        .map_err(|error| format!("cannot encrypt {}: {error}", input.display()))?;
    }
    Ok(())
}

fn decrypt_files(config: Option<&Path>, args: &DecryptFileArgs) -> Result<(), String> {
    let required = context(&args.keys.encryption_context)?;
    let jobs = jobs(&args.keys.input, &args.keys.output, |name| {
        name.strip_suffix(ENCRYPTED_SUFFIX)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{name}.decrypted"))
    })?;
    let client = client(config, &args.keys)?;
    let keyring = if args.discovery {
        let filter = (!args.discovery_account.is_empty()).then(|| DiscoveryFilter {
            partition: args.discovery_partition.clone(),
            accounts: args.discovery_account.clone(),
        });
        KmsKeyring::discovery(client, filter)
    } else if args.keys.key_ids.is_empty() {
        return Err("decrypt-file needs --key-id, or --discovery".into());
    } else {
        KmsKeyring::strict(client, args.keys.key_ids.clone()).map_err(|error| error.to_string())?
    };
    let manager = manager(keyring, &args.keys)?;
    let options = DecryptOptions {
        max_encrypted_data_keys: args.max_encrypted_data_keys,
    };
    for (input, output) in jobs {
        let (reader, _) = open_input(&input)?;
        write_output(&output, |writer| {
            let mut decryptor = Decryptor::new(reader, manager.as_ref(), &options)?;
            check_required_context(&decryptor.header().context, &required)?;
            copy(&mut decryptor, writer)?;
            Ok(())
        })
        .map_err(|error| format!("cannot decrypt {}: {error}", input.display()))?;
    }
    Ok(())
}

/// Refuses a message whose encryption context lacks one of the required pairs.
fn check_required_context(
    context: &EncryptionContext,
    required: &EncryptionContext,
) -> Result<(), EnvelopeError> {
    for (key, value) in required {
        if context.get(key) != Some(value) {
            return Err(EnvelopeError::Policy(format!(
                "the message's encryption context lacks the pair {key:?}={value:?}"
            )));
        }
    }
    Ok(())
}

/// The input stream and its length when it is a regular file, with a progress bar for
/// large files when stderr is a terminal.
fn open_input(path: &Path) -> Result<(Box<dyn Read>, Option<u64>), String> {
    if path == Path::new("-") {
        return Ok((Box::new(io::stdin().lock()), None));
    }
    let file =
        File::open(path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let length = file
        .metadata()
        .ok()
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len());
    match length {
        Some(length) if length > PROGRESS_THRESHOLD && io::stderr().is_terminal() => {
            let bar = indicatif::ProgressBar::new(length);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bytes}/{total_bytes} [{bar:40}] {bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            Ok((Box::new(bar.wrap_read(file)), Some(length)))
        }
        _ => Ok((Box::new(file), length)),
    }
}

/// Copies `reader` into `writer`, turning stream errors back into envelope errors.
fn copy(mut reader: impl Read, mut writer: impl Write) -> Result<(), EnvelopeError> {
    io::copy(&mut reader, &mut writer).map_err(EnvelopeError::from_io)?;
    Ok(())
}

/// Runs `work` on the output: stdout, or a hidden partial file next to `path` that is
/// renamed to `path` on success and removed on failure.
fn write_output(
    path: &Path,
    work: impl FnOnce(&mut dyn Write) -> Result<(), EnvelopeError>,
) -> Result<(), EnvelopeError> {
    if path == Path::new("-") {
        let mut stdout = io::stdout().lock();
        work(&mut stdout)?;
        stdout.flush()?;
        return Ok(());
    }
    let name = path.file_name().ok_or_else(|| {
        EnvelopeError::InvalidInput(format!("{} is not a file name", path.display()))
    })?;
    let partial = path.with_file_name(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let outcome = File::create_new(&partial)
        .map_err(EnvelopeError::Io)
        .and_then(|file| {
            let mut writer = io::BufWriter::new(file);
            work(&mut writer)?;
            let file = writer.into_inner().map_err(|error| error.into_error())?;
            file.sync_all()?;
            fs::rename(&partial, path)?;
            Ok(())
        });
    if outcome.is_err() {
        let _ = fs::remove_file(&partial);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn envelope_commands_are_recognised_after_global_options() {
        assert!(is_envelope_command(args("hsm-kms encrypt-file --input a")));
        assert!(is_envelope_command(args(
            "hsm-kms --config c.toml decrypt-file"
        )));
        assert!(!is_envelope_command(args(
            "hsm-kms --output text encrypt --key-id k"
        )));
        assert!(!is_envelope_command(args(
            "hsm-kms --config encrypt-file list-keys"
        )));
        assert!(!is_envelope_command(args("hsm-kms")));
    }

    #[test]
    fn context_pairs_are_parsed_and_bad_ones_refused() {
        let parsed = context(&["a=b=c".to_owned(), "ü=".to_owned()]).unwrap();
        assert_eq!(parsed["a"], "b=c");
        assert_eq!(parsed["ü"], "");
        assert!(context(&["novalue".to_owned()]).is_err());
        assert!(context(&["=v".to_owned()]).is_err());
        assert!(context(&["k=1".to_owned(), "k=2".to_owned()]).is_err());
    }
}
