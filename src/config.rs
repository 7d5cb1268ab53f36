//! The TOML configuration: the service identity (region, account, data directory) and the
//! HSM clusters it runs on. Secrets appear here only as references (`env:VAR`,
//! `file:PATH`); they are resolved on demand into [`SecretString`]s and never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "HSM_KMS_CONFIG";

/// A configuration problem, named precisely enough to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config file: pass --config FILE or set {CONFIG_ENV}")]
    NotGiven,
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("cannot resolve secret {reference}: {reason}")]
    Secret { reference: String, reason: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the cluster that serves keys of origin AWS_KMS.
    pub default_cluster: String,
    pub service: ServiceConfig,
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// How the audit trail commits and seals.
    #[serde(default)]
    pub audit: crate::audit::log::AuditSettings,
    /// Alarms on the audit trail; two built-in ones are on unless turned off.
    #[serde(default)]
    pub alarms: crate::audit::alarm::AlarmsConfig,
}

/// Who this service is in AWS terms and where it keeps its metadata.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub region: String,
    pub account_id: String,
    pub data_dir: PathBuf,
}

/// How the members of a cluster are kept in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Replication {
    /// Independent HSMs; hsm-kms copies key material between them inside the HSMs.
    #[serde(rename = "hsm-kms")]
    HsmKms,
    /// One PKCS#11 slot in front of HSMs the vendor synchronises (AWS CloudHSM).
    #[serde(rename = "vendor")]
    Vendor,
}

/// One named cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub replication: Replication,
    /// Members of an `hsm-kms` replicated cluster.
    #[serde(default)]
    pub members: Vec<MemberConfig>,
    /// The single slot of a `vendor` cluster.
    pub slot: Option<MemberConfig>,
    /// The HSMs behind a `vendor` cluster's slot, probed by address.
    #[serde(default)]
    pub hsms: Vec<HsmEndpoint>,
    /// Pause between reconnect attempts of a member that went down.
    #[serde(default = "default_reconnect_interval_ms")]
    pub reconnect_interval_ms: u64,
    /// Upper bound of open sessions per member (besides the anchor session).
    #[serde(default = "default_sessions_per_member")]
    pub sessions_per_member: usize,
}

fn default_reconnect_interval_ms() -> u64 {
    1000
}

fn default_sessions_per_member() -> usize {
    8
}

/// One PKCS#11 token: a module, a token on it, and how to log in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub name: String,
    /// Availability zone; required for members of a replicated cluster.
    pub zone: Option<String>,
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Token label or RFC 7512 `pkcs11:` URI.
    pub token: TokenSelector,
    pub user_pin: SecretRef,
    /// Security officer PIN, used only by ceremonies.
    pub so_pin: Option<SecretRef>,
    /// Environment the module reads at `C_Initialize` (e.g. `SOFTHSM2_CONF`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// One HSM of a vendor-synchronised cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmEndpoint {
    pub name: String,
    /// `host:port` the HSM answers on.
    pub address: String,
    pub zone: String,
}

impl Config {
    /// Loads the file given on the command line, or else the one named by `HSM_KMS_CONFIG`.
    pub fn load_from(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Config::load(path),
            None => match std::env::var_os(CONFIG_ENV) {
                Some(path) => Config::load(Path::new(&path)),
                None => Err(ConfigError::NotGiven),
            },
        }
    }

    /// Loads and validates one config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|error| match error {
            ConfigError::Invalid(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|error| ConfigError::Invalid(error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The cluster that serves keys of origin AWS_KMS.
    pub fn default_cluster(&self) -> Result<&ClusterConfig, ConfigError> {
        self.cluster(&self.default_cluster)
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Result<&ClusterConfig, ConfigError> {
        self.clusters
            .get(name)
            .ok_or_else(|| ConfigError::Invalid(format!("no cluster named {name:?}")))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.clusters.contains_key(&self.default_cluster) {
            return Err(ConfigError::Invalid(format!(
                "default_cluster {:?} is not defined under [clusters]",
                self.default_cluster
            )));
        }
        for (name, cluster) in &self.clusters {
            cluster
                .validate()
                .map_err(|reason| ConfigError::Invalid(format!("cluster {name:?}: {reason}")))?;
        }
        self.alarms
            .alarms(&self.service.data_dir)
            .map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), String> {
        if self.sessions_per_member == 0 {
            return Err("sessions_per_member must be at least 1".into());
        }
        match self.replication {
            Replication::HsmKms => {
                if self.slot.is_some() || !self.hsms.is_empty() {
                    return Err("`slot` and `hsms` belong to replication = \"vendor\"".into());
                }
                if self.members.is_empty() {
                    return Err("no [[members]]".into());
                }
                let mut names = std::collections::BTreeSet::new();
                for member in &self.members {
                    if !names.insert(member.name.as_str()) {
                        return Err(format!("member {:?} is listed twice", member.name));
                    }
                    if member.zone.is_none() {
                        return Err(format!("member {:?} has no zone", member.name));
                    }
                }
            }
            Replication::Vendor => {
                if !self.members.is_empty() {
                    return Err("`members` belong to replication = \"hsm-kms\"; a vendor cluster has one `slot`".into());
                }
                if self.slot.is_none() {
                    return Err("a vendor cluster needs a [slot]".into());
                }
                if self.hsms.is_empty() {
                    return Err("a vendor cluster needs its [[hsms]] listed".into());
                }
            }
        }
        Ok(())
    }
}

/// Where a secret comes from: `env:VAR` or `file:PATH`. Printing it shows the reference only.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl TryFrom<String> for SecretRef {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if let Some(var) = text.strip_prefix("env:").filter(|var| !var.is_empty()) {
            Ok(SecretRef::Env(var.to_owned()))
        } else if let Some(path) = text.strip_prefix("file:").filter(|path| !path.is_empty()) {
            Ok(SecretRef::File(PathBuf::from(path)))
        } else {
            Err("a secret must be given as env:VAR or file:PATH, never inline".into())
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(var) => write!(f, "env:{var}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl SecretRef {
    /// Reads the secret. A file's content loses one trailing newline.
    pub fn resolve(&self) -> Result<SecretString, ConfigError> {
        let fail = |reason: String| ConfigError::Secret {
            reference: self.to_string(),
            reason,
        };
        let mut value = match self {
            SecretRef::Env(var) => {
                std::env::var(var).map_err(|_| fail("environment variable not set".into()))?
            }
            SecretRef::File(path) => {
                std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?
            }
        };
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        if value.is_empty() {
            return Err(fail("empty".into()));
        }
        Ok(SecretString::from(value))
    }
}

/// A token, chosen by label or by an RFC 7512 `pkcs11:` URI (`token`, `serial`,
/// `manufacturer` and `model` path attributes; a `pin-value` is refused).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TokenSelector {
    pub label: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
}

impl TryFrom<String> for TokenSelector {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        TokenSelector::parse(&text)
    }
}

impl TokenSelector {
    /// Parses a bare label or a `pkcs11:` URI.
    pub fn parse(text: &str) -> Result<TokenSelector, String> {
        let mut selector = TokenSelector {
            label: None,
            serial: None,
            manufacturer: None,
            model: None,
        };
        let Some(uri) = text.strip_prefix("pkcs11:") else {
            if text.is_empty() {
                return Err("empty token label".into());
            }
            selector.label = Some(text.to_owned());
            return Ok(selector);
        };
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        if query
            .split('&')
            .any(|attr| attr.starts_with("pin-value=") || attr.starts_with("pin-source="))
        {
            return Err("a PIN may not be given in the token URI; use user_pin".into());
        }
        for attribute in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or_else(|| format!("malformed pkcs11 URI attribute {attribute:?}"))?;
            let value = percent_decode(value)?;
            let slot = match name {
                "token" => &mut selector.label,
                "serial" => &mut selector.serial,
                "manufacturer" => &mut selector.manufacturer,
                "model" => &mut selector.model,
                // Object-level attributes do not select a token.
                "object"
                | "id"
                | "type"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-id"
                | "slot-description"
                | "slot-manufacturer" => continue,
                other => return Err(format!("unknown pkcs11 URI attribute {other:?}")),
            };
            *slot = Some(value);
        }
        if selector == TokenSelector::empty() {
            return Err("the pkcs11 URI selects no token (give token=LABEL)".into());
        }
        Ok(selector)
    }

    fn empty() -> TokenSelector {
        TokenSelector {
            label: None,
            serial: None,
            manufacturer: None,
            model: None,
        }
    }

    /// Whether a token with these (space-padded, as PKCS#11 reports them) fields matches.
    pub fn matches(&self, label: &str, serial: &str, manufacturer: &str, model: &str) -> bool {
        let same = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|want| want == have.trim_end())
        };
        same(&self.label, label)
            && same(&self.serial, serial)
            && same(&self.manufacturer, manufacturer)
            && same(&self.model, model)
    }
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("token", &self.label),
            ("serial", &self.serial),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
        ]
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
        .collect();
        write!(f, "pkcs11:{}", parts.join(";"))
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("percent-encoding in {text:?} is not UTF-8"))
}
