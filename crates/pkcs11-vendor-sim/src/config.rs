//! The module's own configuration: a TOML file named by the `PKCS11_VENDOR_SIM_CONF`
//! environment variable, read at `C_Initialize`. It lists the SoftHSM2 tokens that stand in
//! for the HSMs of the vendor cluster; the file's directory is the control directory where a
//! file `NAME.away` takes backing token `NAME` away until it is removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The environment variable naming the configuration file.
pub const CONFIG_VAR: &str = "PKCS11_VENDOR_SIM_CONF";

/// The parsed configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Label of the one token the module's one slot shows.
    pub token_label: String,
    /// The backing tokens, at least one.
    pub backing: Vec<BackingConfig>,
    /// Directory of the configuration file: where `NAME.away` control files go.
    #[serde(skip)]
    pub control_dir: PathBuf,
}

/// One backing SoftHSM2 token (one HSM of the simulated cluster).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackingConfig {
    /// Name of the backing token, also the stem of its control file `NAME.away`.
    pub name: String,
    /// Path of the backing PKCS#11 module (its own copy of `libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the backing token.
    pub token: String,
    /// Environment variables set around the backing module's `C_Initialize`
    /// (`SOFTHSM2_CONF`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl Config {
    /// Reads the file named by [`CONFIG_VAR`].
    pub fn from_env() -> Result<Config, String> {
        let path = std::env::var_os(CONFIG_VAR).ok_or(format!("{CONFIG_VAR} is not set"))?;
        Config::load(Path::new(&path))
    }

    fn load(path: &Path) -> Result<Config, String> {
        // The variable may name a link that lives only while the module initialises (hsm-kms
        // points it at a per-process switch): the control files are next to the real file.
        let path = &std::fs::canonicalize(path)
            .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if config.backing.is_empty() {
            return Err(format!("{}: no [[backing]] token", path.display()));
        }
        config.control_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(config)
    }
}
