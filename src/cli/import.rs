//! The import commands' own parts: `hsm-kms wrap-key-material` (the user's side of the
//! import, done locally instead of AWS's openssl recipe) and the all-in-one
//! `import-key-material --key-material fileb://…`, which fetches the parameters, wraps the
//! material here and imports it. The `aws kms` verbs themselves (get-parameters-for-import,
//! import-key-material with a token, delete-imported-key-material) live with the other key
//! commands in `kms`.
//!
//! Material is read into a zeroized buffer, checked for its length before anything is sent
//! or written, and never printed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use secrecy::SecretSlice;

use super::params::{self, BinaryFormat};
use super::{EXIT_OTHER, EXIT_PARAM};
use crate::error::KmsError;
use crate::key_import::{WrappingAlgorithm, check_material, wrap_key_material};
use crate::keystore::api::*;
use crate::keystore::{Caller, KeyStore};

/// `hsm-kms wrap-key-material`: wraps key material for ImportKeyMaterial, locally.
#[derive(Debug, Args)]
pub struct WrapKeyMaterial {
    /// The PublicKey GetParametersForImport returned: `fileb://FILE` (DER) or base64.
    #[arg(long)]
    public_key: String,
    /// The WrappingAlgorithm given to GetParametersForImport.
    #[arg(long, visible_alias = "wrapping-algorithm")]
    algorithm: String,
    /// The plaintext key material: `fileb://FILE` (raw bytes).
    #[arg(long)]
    key_material: String,
    /// The key spec of the key the material is for.
    #[arg(long, default_value = SYMMETRIC_DEFAULT)]
    key_spec: String,
    /// Where to write the wrapped material (raw bytes, for `fileb://` of ImportKeyMaterial).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `wrap-key-material` (no key store is opened).
pub fn wrap(command: WrapKeyMaterial, binary: BinaryFormat) -> ExitCode {
    let prepared = (|| {
        let algorithm = algorithm(&command.algorithm)?;
        let material = params::secret("key-material", command.key_material, binary)?;
        check_material(
            &command.key_spec,
            secrecy::ExposeSecret::expose_secret(&material),
        )
        .map_err(|e| format!("Bad value for --key-material: {e}"))?;
        let public_key = params::bytes("public-key", &command.public_key, binary)?;
        Ok::<_, String>((algorithm, material, public_key))
    })();
    let (algorithm, material, public_key) = match prepared {
        Ok(prepared) => prepared,
        Err(message) => {
            eprintln!("\n{message}");
            return ExitCode::from(EXIT_PARAM);
        }
    };
    match wrap_key_material(&public_key, algorithm, &command.key_spec, &material) {
        Ok(wrapped) => match std::fs::write(&command.out, wrapped) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("hsm-kms: cannot write {}: {error}", command.out.display());
                ExitCode::from(EXIT_OTHER)
            }
        },
        Err(error) => {
            eprintln!("\nBad value for --public-key: {error}");
            ExitCode::from(EXIT_PARAM)
        }
    }
}

/// The wrapping algorithm a flag names.
pub fn algorithm(name: &str) -> Result<WrappingAlgorithm, String> {
    WrappingAlgorithm::from_name(name).ok_or_else(|| {
        format!(
            "Bad value for --algorithm: {name} is none of RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, RSA_AES_KEY_WRAP_SHA_1, RSA_AES_KEY_WRAP_SHA_256"
        )
    })
}

/// The all-in-one import, parsed: everything but the key store.
pub struct OneCommandImport {
    pub key_id: String,
    /// `None`: RSA_AES_KEY_WRAP_SHA_256, or RSA_AES_KEY_WRAP_SHA_1 when the HSMs refuse it.
    pub algorithm: Option<WrappingAlgorithm>,
    pub wrapping_key_spec: String,
    pub material: SecretSlice<u8>,
    pub valid_to: Option<f64>,
    pub expiration_model: Option<String>,
}

impl OneCommandImport {
    /// Checks, before the key store is reached, that the material is what some key spec
    /// imports; [`OneCommandImport::run`] checks it against the key's own spec before anything
    /// is sent.
    pub fn check(&self) -> Result<(), String> {
        let material = secrecy::ExposeSecret::expose_secret(&self.material);
        let fits_some = crate::keys::spec::KeySpec::ALL
            .into_iter()
            .any(|spec| check_material(spec.as_str(), material).is_ok());
        if fits_some {
            Ok(())
        } else {
            Err(format!(
                "Bad value for --key-material: {} bytes are key material of no key spec (32 bytes for SYMMETRIC_DEFAULT, 28 to 128 for HMAC, a DER PKCS #8 private key for RSA and ECC)",
                material.len()
            ))
        }
    }

    /// GetParametersForImport, the wrap here, then ImportKeyMaterial.
    pub fn run(self, store: &KeyStore, caller: &Caller) -> Result<(), KmsError> {
        let mut algorithm = self
            .algorithm
            .unwrap_or(WrappingAlgorithm::RsaAesKeyWrapSha256);
        let parameters = |algorithm: WrappingAlgorithm| {
            store.get_parameters_for_import(
                caller,
                GetParametersForImportRequest {
                    key_id: self.key_id.clone(),
                    wrapping_algorithm: algorithm.as_str().to_owned(),
                    wrapping_key_spec: self.wrapping_key_spec.clone(),
                },
            )
        };
        let key = store.describe_key(
            caller,
            KeyIdRequest {
                key_id: self.key_id.clone(),
                ..Default::default()
            },
        )?;
        check_material(
            &key.key_metadata.key_spec,
            secrecy::ExposeSecret::expose_secret(&self.material),
        )
        .map_err(|e| KmsError::Validation(e.to_string()))?;
        let params = match parameters(algorithm) {
            Err(KmsError::UnsupportedOperation(_)) if self.algorithm.is_none() => {
                eprintln!(
                    "note: the HSMs refuse RSA_AES_KEY_WRAP_SHA_256; wrapping with RSA_AES_KEY_WRAP_SHA_1"
                );
                algorithm = WrappingAlgorithm::RsaAesKeyWrapSha1;
                parameters(algorithm)?
            }
            other => other?,
        };
        let wrapped = wrap_key_material(
            &params.public_key,
            algorithm,
            &key.key_metadata.key_spec,
            &self.material,
        )
        .map_err(|e| KmsError::Validation(e.to_string()))?;
        store.import_key_material(
            caller,
            ImportKeyMaterialRequest {
                key_id: self.key_id,
                import_token: params.import_token,
                encrypted_key_material: wrapped,
                valid_to: self.valid_to,
                expiration_model: self.expiration_model,
            },
        )
    }
}

/// `--valid-to`: epoch seconds or an RFC 3339 timestamp, as the AWS CLI takes timestamps.
pub fn timestamp(param: &str, value: &str) -> Result<f64, String> {
    if let Ok(seconds) = value.parse::<f64>() {
        return Ok(seconds);
    }
    humantime::parse_rfc3339_weak(value.trim_end_matches('Z'))
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_secs_f64())
        .ok_or_else(|| {
            format!(
                "Bad value for --{param}: {value} is no timestamp (epoch seconds or YYYY-MM-DDThh:mm:ssZ)"
            )
        })
}
