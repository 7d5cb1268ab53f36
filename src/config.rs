//! The TOML configuration: the service identity (regions, account, data directory), the
//! HSM clusters it runs on and the access keys that may call the HTTP endpoint. Secrets
//! appear here only as references (`env:VAR`, `file:PATH`, or a profile of an AWS
//! shared-credentials file); they are resolved on demand into [`SecretString`]s and never
//! printed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::caller::PrincipalProfile;
use crate::keys::records::names_resource_aliases;
use crate::policy::parse_identity_policy;

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "HSM_KMS_CONFIG";

/// A configuration problem, named precisely enough to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `--config` nor `HSM_KMS_CONFIG` names a file.
    #[error("no config file: pass --config FILE or set {CONFIG_ENV}")]
    NotGiven,
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the TOML parser's position.
        message: String,
    },
    /// Config text that is not a valid config: bad TOML, an unknown field, or values that
    /// do not fit together (read from a file, this becomes [`ConfigError::Parse`]).
    #[error("invalid config: {0}")]
    Invalid(String),
    /// A secret reference could not be resolved.
    #[error("cannot resolve secret {reference}: {reason}")]
    Secret {
        /// The reference as written (`env:VAR`, `file:PATH`), never the secret.
        reference: String,
        /// Why it could not be resolved.
        reason: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the cluster that serves keys of origin AWS_KMS.
    pub default_cluster: String,
    /// `[service]`: who this service is and where it keeps its metadata.
    pub service: ServiceConfig,
    /// `[store]`: where the metadata lives: sled in `data_dir` (the default) or a shared
    /// PostgreSQL.
    #[serde(default)]
    pub store: crate::store::StoreSettings,
    /// `[clusters.NAME]`: the HSM clusters, by name.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// How the audit trail commits and seals.
    #[serde(default)]
    pub audit: crate::audit::log::AuditSettings,
    /// Alarms on the audit trail; two built-in ones are on unless turned off.
    #[serde(default)]
    pub alarms: crate::audit::alarm::AlarmsConfig,
    /// The HTTP endpoint of `hsm-kms serve`.
    #[serde(default)]
    pub server: ServerConfig,
    /// The access keys that may call the HTTP endpoint (`[[credentials]]`).
    #[serde(default)]
    pub credentials: Vec<CredentialConfig>,
    /// Thresholds of `hsm-kms compliance check`.
    #[serde(default)]
    pub compliance: crate::compliance::settings::ComplianceSettings,
}

/// The `[server]` section of the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on (overridden by `--listen`).
    pub listen: SocketAddr,
    /// PEM certificate chain and private key; without them only loopback is served.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Most requests worked on at once; more wait up to `queue_timeout_ms`, then are throttled.
    pub max_concurrency: usize,
    /// How long a request waits for one of the `max_concurrency` places before it is
    /// throttled.
    pub queue_timeout_ms: u64,
    /// Time a client has to send the request headers, from their first byte.
    pub header_timeout_ms: u64,
    /// Time a client has to send the request body, once its headers have arrived.
    pub body_timeout_ms: u64,
    /// Time a connection with no request in progress (a keep-alive connection between
    /// requests, or a new one) may stay silent before it is closed.
    pub idle_timeout_ms: u64,
    /// Most connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Pause between background maintenance runs (deletions, rotations).
    pub maintenance_interval_s: u64,
    /// Threads serving requests; 0 means one per CPU. Calls that only read state run their
    /// HSM work on the thread that read the request, which suits an HSM in the same host
    /// (SoftHSM2) whose calls compute; with an HSM reached over a network, whose calls wait,
    /// set it to the number of such calls that should be in flight at once.
    pub worker_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 64 * 1024,
            max_concurrency: 256,
            queue_timeout_ms: 2000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
            maintenance_interval_s: 60,
            worker_threads: 0,
        }
    }
}

/// Who this service is in AWS terms and where it keeps its metadata.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The default region: the one local callers (the CLI, embedded use) act in.
    pub region: String,
    /// Every region the HTTP endpoint answers for. After [`Config::parse`] it is never
    /// empty and always holds `region` (left out, it is `[region]`).
    #[serde(default)]
    pub regions: Vec<String>,
    /// The 12-digit account local callers act as, and that owns keys of the default scope.
    pub account_id: String,
    /// Where the metadata store (sled) and the default alarm file live.
    pub data_dir: PathBuf,
    /// `[service.region_clusters]`: the cluster that holds the keys of a region, by region
    /// (a site with its own HSMs). A region not named here uses `default_cluster`.
    #[serde(default)]
    pub region_clusters: BTreeMap<String, String>,
    /// The integrated services this site runs, each of which gets an AWS managed key
    /// (`alias/aws/<service>`) in an account on that account's first use of the alias.
    /// Left out: [`DEFAULT_MANAGED_KEY_SERVICES`]; `[]` serves none.
    #[serde(default = "default_managed_key_services")]
    pub managed_key_services: Vec<String>,
}

/// The services whose AWS managed keys a site serves unless `[service]
/// managed_key_services` says otherwise: storage, databases, functions, secrets and queues.
pub const DEFAULT_MANAGED_KEY_SERVICES: [&str; 8] = [
    "s3",
    "ebs",
    "rds",
    "lambda",
    "secretsmanager",
    "sns",
    "sqs",
    "dynamodb",
];

/// Longest service name in `managed_key_services`: a DNS label, as the service names the
/// endpoint `<service>.<region>.amazonaws.com` that `kms:ViaService` carries.
const MANAGED_KEY_SERVICE_MAX: usize = 63;

fn default_managed_key_services() -> Vec<String> {
    DEFAULT_MANAGED_KEY_SERVICES
        .iter()
        .map(|service| (*service).to_owned())
        .collect()
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
    /// How key material reaches every HSM of the cluster.
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
    /// The accounts that may attach this cluster as a custom key store (CreateCustomKeyStore).
    /// Absent: only the service's own account (`[service] account_id`). Other accounts are
    /// told the cluster does not exist.
    pub allowed_accounts: Option<Vec<String>>,
    /// Ready AES-256 key material objects kept for CreateKey (0: no pool): generated,
    /// replicated and proven ahead of time while the HSMs are idle. Used by the default
    /// cluster only.
    #[serde(default = "default_material_pool")]
    pub material_pool: usize,
}

impl ClusterConfig {
    /// Whether `account_id` may attach this cluster as a custom key store; `home_account` is
    /// the service's own account, the only one allowed when the config names none.
    pub fn allows_account(&self, account_id: &str, home_account: &str) -> bool {
        match &self.allowed_accounts {
            Some(accounts) => accounts.iter().any(|allowed| allowed == account_id),
            None => account_id == home_account,
        }
    }
}

fn default_reconnect_interval_ms() -> u64 {
    1000
}

fn default_sessions_per_member() -> usize {
    8
}

fn default_material_pool() -> usize {
    32
}

/// One PKCS#11 token: a module, a token on it, and how to log in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The member's name in logs, metrics and the audit trail.
    pub name: String,
    /// Availability zone; required for members of a replicated cluster.
    pub zone: Option<String>,
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Token label or RFC 7512 `pkcs11:` URI.
    pub token: TokenSelector,
    /// The PKCS#11 user PIN, by reference.
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
    /// The HSM's name in logs and `cluster status`.
    pub name: String,
    /// `host:port` the HSM answers on.
    pub address: String,
    /// Its availability zone.
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
        let mut config: Config =
            toml::from_str(text).map_err(|error| ConfigError::Invalid(error.to_string()))?;
        if config.service.regions.is_empty() {
            config.service.regions.push(config.service.region.clone());
        }
        config.validate()?;
        Ok(config)
    }

    /// The cluster that serves keys of origin AWS_KMS.
    pub fn default_cluster(&self) -> Result<&ClusterConfig, ConfigError> {
        self.cluster(&self.default_cluster)
    }

    /// The name of the cluster that holds the keys of `region`.
    pub fn region_cluster(&self, region: &str) -> &str {
        self.service
            .region_clusters
            .get(region)
            .map_or(self.default_cluster.as_str(), String::as_str)
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Result<&ClusterConfig, ConfigError> {
        self.clusters
            .get(name)
            .ok_or_else(|| ConfigError::Invalid(format!("no cluster named {name:?}")))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.service.validate()?;
        let mut access_keys = std::collections::BTreeSet::new();
        for credential in &self.credentials {
            crate::ids::Scope::new(&self.service.region, &credential.account_id)
                .map_err(|e| ConfigError::Invalid(format!("[[credentials]]: {}", e.message())))?;
            if let CredentialSource::Inline { access_key_id, .. } = &credential.source
                && !access_keys.insert(access_key_id.as_str())
            {
                return Err(ConfigError::Invalid(format!(
                    "[[credentials]]: access key {access_key_id:?} is listed twice"
                )));
            }
        }
        if !self.clusters.contains_key(&self.default_cluster) {
            return Err(ConfigError::Invalid(format!(
                "default_cluster {:?} is not defined under [clusters]",
                self.default_cluster
            )));
        }
        for (region, cluster) in &self.service.region_clusters {
            if !self.service.regions.contains(region) {
                return Err(ConfigError::Invalid(format!(
                    "[service.region_clusters] names region {region:?}, which [service] regions does not list"
                )));
            }
            if !self.clusters.contains_key(cluster) {
                return Err(ConfigError::Invalid(format!(
                    "[service.region_clusters] gives region {region:?} the cluster {cluster:?}, which is not defined under [clusters]"
                )));
            }
        }
        for (name, cluster) in &self.clusters {
            cluster
                .validate()
                .map_err(|reason| ConfigError::Invalid(format!("cluster {name:?}: {reason}")))?;
            for account in cluster.allowed_accounts.iter().flatten() {
                crate::ids::Scope::new(&self.service.region, account).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cluster {name:?}: allowed_accounts: {}",
                        e.message()
                    ))
                })?;
            }
        }
        self.alarms
            .alarms(&self.service.data_dir)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }
}

impl ServiceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |e: crate::error::KmsError| ConfigError::Invalid(e.message().to_owned());
        crate::ids::Scope::new(&self.region, &self.account_id).map_err(invalid)?;
        let mut seen = std::collections::BTreeSet::new();
        for region in &self.regions {
            crate::ids::Scope::new(region, &self.account_id).map_err(invalid)?;
            if !seen.insert(region.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "[service] regions lists {region:?} twice"
                )));
            }
        }
        if !seen.contains(self.region.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "[service] regions must include the default region {:?}",
                self.region
            )));
        }
        let mut services = std::collections::BTreeSet::new();
        for service in &self.managed_key_services {
            let label = service.len() <= MANAGED_KEY_SERVICE_MAX
                && service
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !service.starts_with('-')
                && !service.ends_with('-');
            if !label || service.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "[service] managed_key_services: {service:?} is not a service name \
                     (1 to {MANAGED_KEY_SERVICE_MAX} lowercase letters, digits and inner hyphens)"
                )));
            }
            if !services.insert(service.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "[service] managed_key_services lists {service:?} twice"
                )));
            }
        }
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
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub enum SecretRef {
    /// `env:VAR`: the value of an environment variable.
    Env(String),
    /// `file:PATH`: a file's contents without a trailing newline; group and others may not
    /// have access to the file.
    File(PathBuf),
    /// A secret handed over by the program itself (a custom key store's unsealed password);
    /// no config text can name it.
    Given(std::sync::Arc<SecretString>),
}

impl PartialEq for SecretRef {
    /// Given secrets are equal only to themselves (their values are never compared).
    fn eq(&self, other: &SecretRef) -> bool {
        match (self, other) {
            (SecretRef::Env(a), SecretRef::Env(b)) => a == b,
            (SecretRef::File(a), SecretRef::File(b)) => a == b,
            (SecretRef::Given(a), SecretRef::Given(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for SecretRef {}

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
            SecretRef::Given(_) => f.write_str("given:[REDACTED]"),
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
            SecretRef::File(path) => std::mem::take(&mut *read_secret_file(path).map_err(fail)?),
            SecretRef::Given(secret) => return Ok(SecretString::clone(secret)),
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

/// One access key that may call the HTTP endpoint, and who it acts as.
///
/// In TOML, either an inline key with its secret by reference:
///
/// ```toml
/// [[credentials]]
/// access_key_id = "AKIAEXAMPLE"
/// secret = "env:HSM_KMS_SECRET"
/// account_id = "111122223333"
/// principal_arn = "arn:aws:iam::111122223333:user/app"
/// ```
///
/// or a profile of an AWS shared-credentials file (`profile` defaults to `default`):
///
/// ```toml
/// [[credentials]]
/// shared_credentials_file = "dev/credentials"
/// profile = "hsm-kms"
/// account_id = "111122223333"
/// principal_arn = "arn:aws:iam::111122223333:user/dev"
/// ```
///
/// Either form may attach IAM identity policies (`policies`: each `"file:PATH"` or the
/// policy's JSON inline), principal tags (`aws:PrincipalTag/<k>`) and `via_service` (the
/// `kms:ViaService` of a gateway or storage service calling on behalf of others). A
/// credential without `policies` is allowed by identity in its own account, as before key
/// policies existed: only key policies restrict it.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawCredentialConfig")]
pub struct CredentialConfig {
    /// Where its access key id and secret come from.
    pub source: CredentialSource,
    /// The 12-digit account the caller belongs to.
    pub account_id: String,
    /// The caller's IAM principal, as the audit trail records it.
    pub principal_arn: String,
    /// Identity policies: `"file:PATH"` or inline JSON, parsed when the server starts.
    pub policies: Vec<String>,
    /// The principal's tags (`aws:PrincipalTag/<k>`).
    pub tags: BTreeMap<String, String>,
    /// The service this credential calls on behalf of others (`kms:ViaService`).
    pub via_service: Option<String>,
}

/// Where an access key and its secret come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// An access key id in the config, its secret by reference.
    Inline {
        /// The access key id, e.g. `AKIA...`.
        access_key_id: String,
        /// The secret access key, by reference.
        secret: SecretRef,
    },
    /// `aws_access_key_id` and `aws_secret_access_key` of one profile of an AWS
    /// shared-credentials file.
    SharedFile {
        /// The shared-credentials file.
        path: PathBuf,
        /// The profile (section) to read.
        profile: String,
    },
}

/// `[[credentials]]` as written, before choosing its form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentialConfig {
    access_key_id: Option<String>,
    secret: Option<SecretRef>,
    shared_credentials_file: Option<PathBuf>,
    profile: Option<String>,
    account_id: String,
    principal_arn: String,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    via_service: Option<String>,
}

impl TryFrom<RawCredentialConfig> for CredentialConfig {
    type Error = String;

    fn try_from(raw: RawCredentialConfig) -> Result<Self, Self::Error> {
        let source = match (raw.access_key_id, raw.secret, raw.shared_credentials_file) {
            (Some(access_key_id), Some(secret), None) if raw.profile.is_none() => {
                if !is_access_key_id(&access_key_id) {
                    return Err(format!(
                        "access_key_id {access_key_id:?} must be 1 to 128 letters, digits or underscores"
                    ));
                }
                warn_if_short(&access_key_id);
                CredentialSource::Inline {
                    access_key_id,
                    secret,
                }
            }
            (None, None, Some(path)) => CredentialSource::SharedFile {
                path,
                profile: raw.profile.unwrap_or_else(|| "default".to_owned()),
            },
            _ => {
                return Err("give either access_key_id and secret, or \
                            shared_credentials_file (and profile)"
                    .into());
            }
        };
        let arn: Vec<&str> = raw.principal_arn.split(':').collect();
        let arn_ok = arn.len() >= 6
            && arn[0] == "arn"
            && !arn[1].is_empty()
            && matches!(arn[2], "iam" | "sts")
            && arn[4] == raw.account_id
            && !arn[5].is_empty();
        if !arn_ok {
            return Err(format!(
                "principal_arn {:?} must be an IAM or STS ARN in account {:?}, \
                 e.g. arn:aws:iam::{}:user/NAME",
                raw.principal_arn, raw.account_id, raw.account_id
            ));
        }
        Ok(CredentialConfig {
            source,
            account_id: raw.account_id,
            principal_arn: raw.principal_arn,
            policies: raw.policies,
            tags: raw.tags,
            via_service: raw.via_service,
        })
    }
}

impl CredentialConfig {
    /// Reads and parses the identity policies (with IAM's validation) and gathers the tags
    /// and via service: what authorization knows of this credential's principal.
    pub fn profile(&self) -> Result<PrincipalProfile, ConfigError> {
        let mut policies = Vec::with_capacity(self.policies.len());
        let mut names_aliases = false;
        for (index, policy) in self.policies.iter().enumerate() {
            let invalid = |reason: &str| {
                ConfigError::Invalid(format!(
                    "[[credentials]] of {}: policies[{index}]: {reason}",
                    self.principal_arn
                ))
            };
            let text = match policy.strip_prefix("file:") {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|error| invalid(&format!("cannot read {path}: {error}")))?,
                None => policy.clone(),
            };
            let parsed = parse_identity_policy(&text).map_err(|error| invalid(error.message()))?;
            names_aliases |= names_resource_aliases(&text);
            policies.push(Arc::new(parsed));
        }
        Ok(PrincipalProfile {
            policies: (!policies.is_empty()).then_some(policies),
            tags: self.tags.clone(),
            via_service: self.via_service.clone(),
            names_resource_aliases: names_aliases,
        })
    }

    /// Reads the access key id and its secret (from the environment, a file, or the
    /// shared-credentials file).
    pub fn resolve(&self) -> Result<(String, SecretString), ConfigError> {
        match &self.source {
            CredentialSource::Inline {
                access_key_id,
                secret,
            } => Ok((access_key_id.clone(), secret.resolve()?)),
            CredentialSource::SharedFile { path, profile } => {
                let fail = |reason: String| ConfigError::Secret {
                    reference: format!("{} [{profile}]", path.display()),
                    reason,
                };
                let text = read_secret_file(path).map_err(fail)?;
                let (access_key_id, secret) =
                    shared_credentials_profile(&text, profile).map_err(fail)?;
                if !is_access_key_id(&access_key_id) {
                    return Err(fail(
                        "aws_access_key_id must be 1 to 128 letters, digits or underscores".into(),
                    ));
                }
                warn_if_short(&access_key_id);
                Ok((access_key_id, secret))
            }
        }
    }
}

/// Reads a file that holds a secret, refusing it (as ssh refuses a private key) when its
/// group or others may read or write it: a PIN in a world-readable file is no longer secret.
fn read_secret_file(path: &Path) -> Result<zeroize::Zeroizing<String>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "permissions {:04o} for '{}' are too open: a file holding a secret must be \
             accessible by its owner only (chmod 600 '{}')",
            mode & 0o7777,
            path.display(),
            path.display()
        ));
    }
    std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| e.to_string())
}

/// Whether `text` has the shape of an access key id the AWS SDKs sign with: 1 to 128 letters,
/// digits or underscores. IAM's own ids are 16 or more; test harnesses written for LocalStack
/// and moto use short ones such as `test`, which are accepted with a warning.
fn is_access_key_id(text: &str) -> bool {
    (1..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Warns about an access key id shorter than IAM's 16 characters (a test harness's, most
/// likely): it works, but is easy to guess.
fn warn_if_short(access_key_id: &str) {
    if access_key_id.len() < 16 {
        tracing::warn!(
            access_key_id,
            "access key id shorter than IAM's 16 characters: accepted (test harnesses use such ids), but easy to guess"
        );
    }
}

/// The access key id and secret of one `[profile]` section of an AWS shared-credentials
/// file (INI: `key = value` lines, `#` and `;` comments). Errors never quote the file.
fn shared_credentials_profile(text: &str, profile: &str) -> Result<(String, SecretString), String> {
    let mut in_profile = false;
    let mut found = false;
    let mut access_key_id = None;
    let mut secret = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            found |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "aws_access_key_id" => access_key_id = Some(value.trim().to_owned()),
            "aws_secret_access_key" => secret = Some(SecretString::from(value.trim())),
            _ => {}
        }
    }
    if !found {
        return Err(format!("no profile [{profile}]"));
    }
    match (access_key_id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.expose_secret().is_empty() => {
            Ok((id, secret))
        }
        _ => Err(format!(
            "profile [{profile}] needs aws_access_key_id and aws_secret_access_key"
        )),
    }
}

/// A token, chosen by label or by an RFC 7512 `pkcs11:` URI (`token`, `serial`,
/// `manufacturer` and `model` path attributes; a `pin-value` is refused).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TokenSelector {
    /// The token label (`token=`).
    pub label: Option<String>,
    /// The token's serial number (`serial=`).
    pub serial: Option<String>,
    /// The token's manufacturer id (`manufacturer=`).
    pub manufacturer: Option<String>,
    /// The token's model (`model=`).
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

/// Decodes the `%XX` escapes of a pkcs11 URI attribute value (RFC 7512); a `%` not followed
/// by two hex digits is an error, as is a result that is not UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let well_formed = text.split('%').skip(1).all(|after| {
        after
            .as_bytes()
            .get(..2)
            .is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(format!("bad percent-encoding in {text:?}"));
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(String::from)
        .map_err(|_| format!("percent-encoding in {text:?} is not UTF-8"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use crate::audit::log::OnFailure;
    use std::time::Duration;

    /// A valid config with `service` and `extra` spliced in.
    fn config(service: &str, extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!(
            r#"
default_cluster = "main"
{extra}
[service]
account_id = "111122223333"
data_dir = "data"
{service}

[clusters.main]
replication = "vendor"
hsms = [{{ name = "h1", address = "10.0.0.1:2223", zone = "a" }}]

[clusters.main.slot]
name = "slot"
module = "/usr/lib/pkcs11.so"
token = "t"
user_pin = "env:PIN"
"#
        ))
    }

    fn invalid(result: Result<Config, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid(message)) => message,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn access_key_ids_are_what_the_sdks_sign_with() {
        // LocalStack and moto harnesses sign with ids like these: accepted (with a warning).
        for id in [
            "test",
            "FOOBARKEY",
            "a",
            "AKIAIOSFODNN7EXAMPLE",
            &"k".repeat(128),
        ] {
            assert!(is_access_key_id(id), "{id}");
        }
        for id in ["", "AKIA-SHORT", "has space", &"k".repeat(129)] {
            assert!(!is_access_key_id(id), "{id}");
        }
    }

    #[test]
    fn managed_key_services_default_to_the_documented_list_and_are_checked() {
        let parsed = config(r#"region = "eu-west-1""#, "").unwrap();
        assert_eq!(
            parsed.service.managed_key_services,
            DEFAULT_MANAGED_KEY_SERVICES
        );
        let parsed = config(
            "region = \"eu-west-1\"\nmanaged_key_services = [\"s3\", \"object-gateway\"]",
            "",
        )
        .unwrap();
        assert_eq!(
            parsed.service.managed_key_services,
            ["s3", "object-gateway"]
        );
        let none = config("region = \"eu-west-1\"\nmanaged_key_services = []", "").unwrap();
        assert!(none.service.managed_key_services.is_empty());
        for bad in ["", "S3", "s3/x", "-s3", "s3-", "a.b", &"s".repeat(64)] {
            let message = invalid(config(
                &format!("region = \"eu-west-1\"\nmanaged_key_services = [{bad:?}]"),
                "",
            ));
            assert!(
                message.contains("is not a service name"),
                "{bad}: {message}"
            );
        }
        let message = invalid(config(
            "region = \"eu-west-1\"\nmanaged_key_services = [\"s3\", \"s3\"]",
            "",
        ));
        assert!(message.contains("lists \"s3\" twice"), "{message}");
    }

    #[test]
    fn regions_default_to_the_region() {
        let parsed = config(r#"region = "eu-west-1""#, "").unwrap();
        assert_eq!(parsed.service.region, "eu-west-1");
        assert_eq!(parsed.service.regions, ["eu-west-1"]);
        assert!(parsed.credentials.is_empty());
    }

    #[test]
    fn regions_are_listed_valid_unique_and_include_the_region() {
        let parsed = config(
            "region = \"us-east-1\"\nregions = [\"eu-west-1\", \"us-east-1\"]",
            "",
        )
        .unwrap();
        assert_eq!(parsed.service.regions, ["eu-west-1", "us-east-1"]);
        let message = invalid(config(
            "region = \"us-east-1\"\nregions = [\"eu-west-1\"]",
            "",
        ));
        assert!(
            message.contains("must include the default region"),
            "{message}"
        );
        let message = invalid(config(
            "region = \"us-east-1\"\nregions = [\"us-east-1\", \"us-east-1\"]",
            "",
        ));
        assert!(message.contains("twice"), "{message}");
        let message = invalid(config(
            "region = \"us-east-1\"\nregions = [\"us-east-1\", \"EU West\"]",
            "",
        ));
        assert!(
            message.contains("Region 'EU West' is not valid"),
            "{message}"
        );
        let message = invalid(config(r#"region = "US""#, ""));
        assert!(message.contains("Region 'US' is not valid"), "{message}");
    }

    #[test]
    fn region_clusters_name_listed_regions_and_defined_clusters() {
        let service = |map: &str| {
            format!(
                "region = \"us-east-1\"\nregions = [\"us-east-1\", \"eu-west-1\"]\n[service.region_clusters]\n{map}"
            )
        };
        let parsed = config(&service("eu-west-1 = \"main\""), "").unwrap();
        assert_eq!(parsed.region_cluster("eu-west-1"), "main");
        assert_eq!(
            parsed.region_cluster("us-east-1"),
            "main",
            "the default cluster"
        );
        let message = invalid(config(&service("ap-south-1 = \"main\""), ""));
        assert!(
            message.contains("names region \"ap-south-1\", which [service] regions does not list"),
            "{message}"
        );
        let message = invalid(config(&service("eu-west-1 = \"site-b\""), ""));
        assert!(
            message.contains("the cluster \"site-b\", which is not defined under [clusters]"),
            "{message}"
        );
    }

    #[test]
    fn audit_failure_policy_and_seal_interval_default_and_parse() {
        let region = r#"region = "us-east-1""#;
        let defaults = config(region, "").unwrap().audit;
        assert_eq!(defaults.on_failure, OnFailure::Refuse);
        assert_eq!(defaults.checkpoint_interval, Duration::from_secs(60));
        let parsed = config(
            region,
            "[audit]\non_failure = \"log\"\ncheckpoint_interval_s = 5",
        )
        .unwrap()
        .audit;
        assert_eq!(parsed.on_failure, OnFailure::Log);
        assert_eq!(parsed.checkpoint_interval, Duration::from_secs(5));
        let error = config(region, "[audit]\non_failure = \"ignore\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown variant `ignore`"), "{error}");
    }

    const INLINE: &str = r#"
[[credentials]]
access_key_id = "AKIAIOSFODNN7EXAMPLE"
secret = "file:secret.txt"
account_id = "111122223333"
principal_arn = "arn:aws:iam::111122223333:user/app"
"#;

    #[test]
    fn credentials_come_inline_or_from_a_shared_file() {
        let shared = r#"
[[credentials]]
shared_credentials_file = "dev/credentials"
account_id = "444455556666"
principal_arn = "arn:aws:sts::444455556666:assumed-role/dev/session"
"#;
        let parsed = config(r#"region = "us-east-1""#, &format!("{INLINE}{shared}")).unwrap();
        assert_eq!(parsed.credentials.len(), 2);
        assert_eq!(
            parsed.credentials[0].source,
            CredentialSource::Inline {
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret: SecretRef::File("secret.txt".into()),
            }
        );
        assert_eq!(
            parsed.credentials[1].source,
            CredentialSource::SharedFile {
                path: "dev/credentials".into(),
                profile: "default".into(),
            }
        );
        assert_eq!(parsed.credentials[1].account_id, "444455556666");
    }

    #[test]
    fn malformed_credentials_are_refused() {
        let region = r#"region = "us-east-1""#;
        let cases = [
            (
                INLINE.replace("secret = \"file:secret.txt\"\n", ""),
                "either",
            ),
            (
                INLINE.replace("account_id", "shared_credentials_file = \"f\"\naccount_id"),
                "either",
            ),
            (
                INLINE.replace("account_id", "profile = \"p\"\naccount_id"),
                "either",
            ),
            (INLINE.replace("file:secret.txt", "hunter2"), "never inline"),
            (
                INLINE.replace("AKIAIOSFODNN7EXAMPLE", "AKIA-SHORT"),
                "access_key_id",
            ),
            (
                INLINE.replace("user/app", "user/app\"\nextra = \"x"),
                "unknown field",
            ),
            (
                INLINE.replace("arn:aws:iam::111122223333", "arn:aws:iam::999999999999"),
                "principal_arn",
            ),
            (
                INLINE.replace("arn:aws:iam::", "arn:aws:kms:us-east-1:"),
                "principal_arn",
            ),
            (INLINE.replace("111122223333", "1234"), "Account id '1234'"),
            (format!("{INLINE}{INLINE}"), "listed twice"),
        ];
        for (credentials, expected) in cases {
            let message = invalid(config(region, &credentials));
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }

    #[test]
    fn inline_secrets_resolve_by_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.txt");
        write_owner_only(&path, "the secret\n");
        let text = INLINE.replace("secret.txt", &path.display().to_string());
        let parsed = config(r#"region = "us-east-1""#, &text).unwrap();
        let (id, secret) = parsed.credentials[0].resolve().unwrap();
        assert_eq!(id, "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(secret.expose_secret(), "the secret");
    }

    /// Writes a file with mode 0600, as a secret file must have.
    fn write_owner_only(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn secret_files_open_to_group_or_others_are_refused_naming_file_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("user.pin");
        let shared = dir.path().join("credentials");
        write_owner_only(&pin, "1234-5678\n");
        write_owner_only(&shared, SHARED);
        let shared_config = format!(
            "[[credentials]]\nshared_credentials_file = \"{}\"\nprofile = \"hsm-kms\"\n\
             account_id = \"111122223333\"\nprincipal_arn = \"arn:aws:iam::111122223333:root\"\n",
            shared.display()
        );
        let parsed = config(r#"region = "us-east-1""#, &shared_config).unwrap();
        let pin_ref = SecretRef::File(pin.clone());
        for mode in [0o640, 0o604, 0o660, 0o644, 0o620, 0o602] {
            for path in [&pin, &shared] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            let errors = [
                pin_ref.resolve().unwrap_err().to_string(),
                parsed.credentials[0].resolve().unwrap_err().to_string(),
            ];
            for (error, path) in errors.iter().zip([&pin, &shared]) {
                assert!(
                    error.contains(&format!("permissions {mode:04o}")),
                    "{error}"
                );
                assert!(error.contains(&path.display().to_string()), "{error}");
                assert!(error.contains("chmod 600"), "{error}");
                assert!(
                    !error.contains("1234") && !error.contains("dev/secret"),
                    "{error}"
                );
            }
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(pin_ref.resolve().unwrap().expose_secret(), "1234-5678");
        }
    }

    const SHARED: &str = "\
# comment
[default]
aws_access_key_id = AKIADEFAULT000000001
aws_secret_access_key = default-secret

[hsm-kms]
; another comment
aws_access_key_id=AKIAHSMKMSDEV0000001
aws_secret_access_key =  dev/secret+key
region = us-east-1
";

    #[test]
    fn shared_credentials_files_are_read_by_profile() {
        let (id, secret) = shared_credentials_profile(SHARED, "hsm-kms").unwrap();
        assert_eq!(id, "AKIAHSMKMSDEV0000001");
        assert_eq!(secret.expose_secret(), "dev/secret+key");
        let (id, secret) = shared_credentials_profile(SHARED, "default").unwrap();
        assert_eq!(id, "AKIADEFAULT000000001");
        assert_eq!(secret.expose_secret(), "default-secret");
    }

    #[test]
    fn a_missing_profile_or_key_is_named_without_quoting_the_file() {
        let error = shared_credentials_profile(SHARED, "other").unwrap_err();
        assert_eq!(error, "no profile [other]");
        let text = "[p]\naws_access_key_id = AKIAHSMKMSDEV0000001\n";
        let error = shared_credentials_profile(text, "p").unwrap_err();
        assert!(error.contains("needs aws_access_key_id and aws_secret_access_key"));
        let text = "[p]\naws_secret_access_key = s3cr3t-value\n";
        let error = shared_credentials_profile(text, "p").unwrap_err();
        assert!(!error.contains("s3cr3t"), "{error}");
    }

    #[test]
    fn a_shared_credentials_file_resolves_through_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        write_owner_only(&path, SHARED);
        let text = format!(
            "[[credentials]]\nshared_credentials_file = \"{}\"\nprofile = \"hsm-kms\"\n\
             account_id = \"111122223333\"\nprincipal_arn = \"arn:aws:iam::111122223333:root\"\n",
            path.display()
        );
        let parsed = config(r#"region = "us-east-1""#, &text).unwrap();
        let (id, secret) = parsed.credentials[0].resolve().unwrap();
        assert_eq!(id, "AKIAHSMKMSDEV0000001");
        assert_eq!(secret.expose_secret(), "dev/secret+key");

        let missing = text.replace("\"hsm-kms\"", "\"nope\"");
        let parsed = config(r#"region = "us-east-1""#, &missing).unwrap();
        let error = parsed.credentials[0].resolve().unwrap_err().to_string();
        assert!(
            error.contains("[nope]") && error.contains("no profile"),
            "{error}"
        );
        assert!(!error.contains("dev/secret"), "{error}");
    }

    #[test]
    fn pkcs11_uri_values_are_percent_decoded_and_bad_escapes_refused() {
        let selector = TokenSelector::parse("pkcs11:token=my%20token;serial=00%2f1").unwrap();
        assert_eq!(selector.label.as_deref(), Some("my token"));
        assert_eq!(selector.serial.as_deref(), Some("00/1"));
        for (uri, error) in [
            ("pkcs11:token=a%2", "bad percent-encoding"),
            ("pkcs11:token=%zz", "bad percent-encoding"),
            ("pkcs11:token=100%", "bad percent-encoding"),
            ("pkcs11:token=%FF", "not UTF-8"),
        ] {
            let message = TokenSelector::parse(uri).unwrap_err();
            assert!(message.contains(error), "{uri}: {message}");
        }
    }
}
