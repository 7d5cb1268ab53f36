//! Custom key stores: the config's clusters other than the default one, registered as AWS
//! CloudHSM key stores (CreateCustomKeyStore, DescribeCustomKeyStores, Connect-, Disconnect-,
//! Update- and DeleteCustomKeyStore). A store's password is its cluster members' user PIN; it
//! is kept only sealed (AES-256-GCM) under an internal key inside the default cluster's HSMs,
//! unsealed only to log in when connecting, and never written, logged or recorded in plaintext.
//! Connecting runs in the background (CONNECTING, then CONNECTED or FAILED); the open clusters
//! live here, and keys of a store that is not connected are Unavailable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::api::*;
use super::{Caller, KeyStore, decode, encode, internal, limit, read, write};
use crate::audit::event::Call;
use crate::clock::{Clock, to_epoch_seconds};
use crate::cluster::{Cluster, ClusterError};
use crate::config::{ClusterConfig, SecretRef};
use crate::error::KmsError;
use crate::hsm::Failure;
use crate::ids::Scope;
use crate::keys::state::Operation;
use crate::store::{Batch, MetadataStore, Precondition, Table};

/// The internal HSM key (in the default cluster) that seals key store passwords.
const PASSWORD_KEY_ID: &str = "hsm-kms-cks-password";
const PASSWORD_AAD: &str = "hsm-kms custom key store password v1";
const NAME_MAX: usize = 256;
const TRUST_ANCHOR_MAX: usize = 5000;
const PASSWORD_MIN: usize = 7;
const PASSWORD_MAX: usize = 32;
/// The only custom key store type served.
const TYPE_CLOUDHSM: &str = "AWS_CLOUDHSM";
/// Connection attempts refused for a wrong password after which a store locks out until its
/// password is updated, as the CloudHSM user it logs in as would be locked.
const MAX_FAILED_LOGINS: u32 = 5;

/// AWS's ConnectionState of a custom key store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionState {
    /// Logged in to the cluster's members: its keys are usable.
    Connected,
    /// ConnectCustomKeyStore is logging in, in the background.
    Connecting,
    /// The last connection attempt failed (see its `ConnectionErrorCode`).
    Failed,
    /// Not connected: its keys are Unavailable.
    Disconnected,
    /// AWS's state while a disconnection is under way; this key store disconnects at once
    /// and never reports it, but accepts it in stored records.
    Disconnecting,
}

impl ConnectionState {
    /// AWS's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connected => "CONNECTED",
            ConnectionState::Connecting => "CONNECTING",
            ConnectionState::Failed => "FAILED",
            ConnectionState::Disconnected => "DISCONNECTED",
            ConnectionState::Disconnecting => "DISCONNECTING",
        }
    }
}

/// One custom key store as the metadata store keeps it (the password only sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoreRecord {
    id: String,
    account_id: String,
    region: String,
    name: String,
    /// The config's name of the store's cluster (AWS's CloudHsmClusterId).
    cluster: String,
    trust_anchor_certificate: String,
    creation_date: i64,
    state: ConnectionState,
    error_code: Option<String>,
    /// Base64 of the GCM IV and of ciphertext || tag.
    password_iv: String,
    password_sealed: String,
    /// Connection attempts refused for a wrong password since the password was last set.
    #[serde(default)]
    failed_logins: u32,
}

impl StoreRecord {
    fn in_scope(&self, scope: &Scope) -> bool {
        self.account_id == scope.account_id() && self.region == scope.region()
    }

    /// Whether wrong passwords have locked the store out until its password is updated.
    fn locked_out(&self) -> bool {
        self.failed_logins >= MAX_FAILED_LOGINS
    }

    fn entry(&self) -> CustomKeyStoresListEntry {
        CustomKeyStoresListEntry {
            custom_key_store_id: self.id.clone(),
            custom_key_store_name: self.name.clone(),
            cloud_hsm_cluster_id: self.cluster.clone(),
            trust_anchor_certificate: self.trust_anchor_certificate.clone(),
            connection_state: self.state.as_str().to_owned(),
            connection_error_code: self.error_code.clone(),
            creation_date: to_epoch_seconds(self.creation_date),
            custom_key_store_type: TYPE_CLOUDHSM.to_owned(),
        }
    }
}

/// The custom key stores of a key store: their configs, open clusters and records.
pub(super) struct CustomKeyStores {
    default_cluster: Arc<Cluster>,
    store: Arc<dyn MetadataStore>,
    clock: Arc<dyn Clock>,
    /// Every configured cluster but the default one, by name.
    configs: RwLock<BTreeMap<String, ClusterConfig>>,
    /// The service's own account: the only one that may attach a cluster whose config names
    /// no `allowed_accounts`.
    home_account: String,
    /// Open clusters of CONNECTED stores, by store id.
    open: RwLock<HashMap<String, Arc<Cluster>>>,
    /// Serialises read-modify-write cycles of store records.
    writes: Mutex<()>,
}

impl CustomKeyStores {
    pub(super) fn new(
        default_cluster: Arc<Cluster>,
        store: Arc<dyn MetadataStore>,
        clock: Arc<dyn Clock>,
        home_account: &str,
    ) -> CustomKeyStores {
        CustomKeyStores {
            default_cluster,
            store,
            clock,
            configs: RwLock::new(BTreeMap::new()),
            home_account: home_account.to_owned(),
            open: RwLock::new(HashMap::new()),
            writes: Mutex::new(()),
        }
    }

    /// The open cluster of a CONNECTED store.
    pub(super) fn connected(&self, id: &str) -> Option<Arc<Cluster>> {
        read(&self.open).get(id).cloned()
    }

    /// The open clusters of every CONNECTED store.
    pub(super) fn open_clusters(&self) -> Vec<Arc<Cluster>> {
        read(&self.open).values().cloned().collect()
    }

    fn record(&self, id: &str) -> Result<Option<(StoreRecord, u64)>, KmsError> {
        match self
            .store
            .get(Table::CustomKeyStores, id.as_bytes())
            .map_err(internal)?
        {
            Some(found) => Ok(Some((decode(&found.payload)?, found.revision))),
            None => Ok(None),
        }
    }

    fn all(&self) -> Result<Vec<StoreRecord>, KmsError> {
        self.store
            .scan(Table::CustomKeyStores, b"", None, usize::MAX)
            .map_err(internal)?
            .iter()
            .map(|(_, found)| decode(&found.payload))
            .collect()
    }

    /// A store of the caller's scope by id, or CustomKeyStoreNotFoundException.
    fn in_scope(&self, scope: &Scope, id: &str) -> Result<(StoreRecord, u64), KmsError> {
        match self.record(id)? {
            Some((record, revision)) if record.in_scope(scope) => Ok((record, revision)),
            _ => Err(KmsError::CustomKeyStoreNotFound(format!(
                "Custom key store '{id}' does not exist."
            ))),
        }
    }

    /// Whether a configured cluster may serve a custom key store of `account_id`. A cluster
    /// the account may not attach is, to that account, a cluster that does not exist.
    fn may_attach(&self, cluster: &str, account_id: &str) -> bool {
        read(&self.configs)
            .get(cluster)
            .is_some_and(|config| config.allows_account(account_id, &self.home_account))
    }

    /// Re-reads a store record, lets `change` modify it and writes it back unless it changed.
    fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut StoreRecord) -> Result<(), KmsError>,
    ) -> Result<StoreRecord, KmsError> {
        let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let (mut record, revision) = self.record(id)?.ok_or_else(|| {
            KmsError::CustomKeyStoreNotFound(format!("Custom key store '{id}' does not exist."))
        })?;
        change(&mut record)?;
        let mut batch = Batch::new();
        batch.put_if(
            Table::CustomKeyStores,
            id.as_bytes(),
            Precondition::ExpectRevision(revision),
            encode(&record)?,
        );
        commit(self.store.as_ref(), batch)?;
        Ok(record)
    }

    /// Seals a password under the default cluster's password key (created on first use).
    fn seal(&self, id: &str, password: &SecretString) -> Result<(String, String), KmsError> {
        let aad = format!("{PASSWORD_AAD}:{id}");
        let sealed = self
            .default_cluster
            .seal_internal(
                PASSWORD_KEY_ID,
                "hsm-kms custom key store password key",
                aad.as_bytes(),
                password.expose_secret().as_bytes(),
            )
            .map_err(super::cluster_error)?;
        Ok((
            STANDARD.encode(sealed.iv()),
            STANDARD.encode(sealed.ciphertext_and_tag()),
        ))
    }

    /// Unseals a store's password inside the default cluster's HSMs.
    fn unseal(&self, record: &StoreRecord) -> Result<SecretString, String> {
        let iv = STANDARD
            .decode(&record.password_iv)
            .map_err(|_| "sealed password IV is not base64")?;
        let sealed = STANDARD
            .decode(&record.password_sealed)
            .map_err(|_| "sealed password is not base64")?;
        let aad = format!("{PASSWORD_AAD}:{}", record.id);
        let opened = self
            .default_cluster
            .open_internal(PASSWORD_KEY_ID, aad.as_bytes(), &iv, &sealed)
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8(opened.to_vec())
            .map_err(|_| "sealed password is not UTF-8".to_owned())?;
        Ok(SecretString::from(text))
    }

    /// Opens the store's cluster with its unsealed password as every member's user PIN.
    fn open_cluster(&self, record: &StoreRecord) -> Result<Cluster, &'static str> {
        let Some(mut config) = read(&self.configs).get(&record.cluster).cloned() else {
            return Err("CLUSTER_NOT_FOUND");
        };
        let password = match self.unseal(record) {
            Ok(password) => Arc::new(password),
            Err(error) => {
                tracing::error!(store = %record.id, %error, "cannot unseal the key store password");
                return Err("INTERNAL_ERROR");
            }
        };
        for member in config.members.iter_mut().chain(config.slot.iter_mut()) {
            member.user_pin = SecretRef::Given(password.clone());
        }
        let member_count = config.members.len() + config.slot.iter().count();
        Cluster::open(&record.cluster, &config).map_err(|error| {
            tracing::warn!(store = %record.id, %error, "custom key store failed to connect");
            connection_error_code(&error, member_count)
        })
    }

    /// Starts connecting a store in the background.
    fn spawn_connect(self: &Arc<Self>, id: String) {
        let stores = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("connect-{id}"))
            .spawn(move || stores.connect_now(&id));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start a custom key store connection");
        }
    }

    /// Connects a CONNECTING store and records the outcome, unless it was disconnected meanwhile.
    fn connect_now(&self, id: &str) {
        let Ok(Some((record, _))) = self.record(id) else {
            return;
        };
        let outcome = self.open_cluster(&record).map(Arc::new);
        // The cluster is usable before the store reads CONNECTED, so nobody who sees that
        // state finds its keys unavailable; it is taken back if the state cannot be written.
        if let Ok(cluster) = &outcome {
            write(&self.open).insert(id.to_owned(), cluster.clone());
        }
        let written = self.update(id, |record| {
            if record.state != ConnectionState::Connecting {
                return Err(KmsError::CustomKeyStoreInvalidState(String::new()));
            }
            match &outcome {
                Ok(_) => {
                    record.state = ConnectionState::Connected;
                    record.error_code = None;
                    record.failed_logins = 0;
                }
                Err(code) => {
                    if *code == "INVALID_CREDENTIALS" {
                        record.failed_logins += 1;
                    }
                    record.state = ConnectionState::Failed;
                    record.error_code = Some(if record.locked_out() {
                        "USER_LOCKED_OUT".to_owned()
                    } else {
                        (*code).to_owned()
                    });
                }
            }
            Ok(())
        });
        if written.is_err() && outcome.is_ok() {
            write(&self.open).remove(id);
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_millis()
    }
}

/// Maps why a cluster did not open to AWS's ConnectionErrorCode.
fn connection_error_code(error: &ClusterError, member_count: usize) -> &'static str {
    let ClusterError::Preflight(preflight) = error else {
        return "INTERNAL_ERROR";
    };
    let failures: Vec<&Failure> = preflight.causes.iter().map(|c| &c.failure).collect();
    if failures.iter().any(|f| matches!(f, Failure::PinLocked)) {
        "USER_LOCKED_OUT"
    } else if failures.iter().any(|f| matches!(f, Failure::WrongPin)) {
        "INVALID_CREDENTIALS"
    } else if failures.len() == member_count
        && failures
            .iter()
            .all(|f| matches!(f, Failure::ModuleMissing(_) | Failure::TokenMissing(_)))
    {
        "CLUSTER_NOT_FOUND"
    } else {
        "INSUFFICIENT_CLOUDHSM_HSMS"
    }
}

/// CloudHsmClusterNotFoundException for a cluster that is not configured or that the caller's
/// account may not attach (the two read the same, so the refusal reveals nothing).
/// A member an AWS_CLOUDHSM key store cannot be created without.
fn required<T>(value: Option<T>, member: &str) -> Result<T, KmsError> {
    value.ok_or_else(|| {
        KmsError::Validation(format!(
            "{member} is required for an AWS_CLOUDHSM key store"
        ))
    })
}

fn cluster_not_found(cluster: &str) -> KmsError {
    KmsError::CloudHsmClusterNotFound(format!(
        "No cluster named '{cluster}' can serve a custom key store."
    ))
}

fn commit(store: &dyn MetadataStore, batch: Batch) -> Result<(), KmsError> {
    match store.commit(batch).map_err(internal)? {
        Ok(()) => Ok(()),
        Err(conflict) => Err(KmsError::Conflict(format!(
            "a concurrent change to {} won: retry the request",
            conflict.table
        ))),
    }
}

fn check_name(param: &str, name: &str) -> Result<(), KmsError> {
    let length = name.chars().count();
    if !(1..=NAME_MAX).contains(&length) {
        return Err(KmsError::constraint_violation(
            param,
            Some(name),
            &[if length == 0 {
                "Member must have length greater than or equal to 1"
            } else {
                "Member must have length less than or equal to 256"
            }],
        ));
    }
    Ok(())
}

fn check_password(password: &SecretString) -> Result<(), KmsError> {
    let length = password.expose_secret().chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&length) {
        return Err(KmsError::constraint_violation(
            "keyStorePassword",
            None,
            &[if length < PASSWORD_MIN {
                "Member must have length greater than or equal to 7"
            } else {
                "Member must have length less than or equal to 32"
            }],
        ));
    }
    Ok(())
}

fn new_store_id() -> Result<String, KmsError> {
    let mut bytes = [0u8; 9];
    getrandom::fill(&mut bytes)
        .map_err(|e| KmsError::KmsInternal(format!("no randomness for an id: {e}")))?;
    let hex = hex::encode(bytes);
    Ok(format!("cks-{}", &hex[..17]))
}

impl KeyStore {
    /// Makes the config's clusters other than the default one available as custom key
    /// stores, and reconnects (in the background) the stores that were connected.
    pub fn with_clusters(self, clusters: &BTreeMap<String, ClusterConfig>) -> KeyStore {
        let default = self.cluster.name().to_owned();
        *write(&self.custom.configs) = clusters
            .iter()
            .filter(|(name, _)| **name != default)
            .map(|(name, config)| (name.clone(), config.clone()))
            .collect();
        match self.custom.all() {
            Ok(records) => {
                for record in records {
                    if matches!(
                        record.state,
                        ConnectionState::Connected | ConnectionState::Connecting
                    ) {
                        let resumed = self.custom.update(&record.id, |record| {
                            record.state = ConnectionState::Connecting;
                            Ok(())
                        });
                        if resumed.is_ok() {
                            self.custom.spawn_connect(record.id);
                        }
                    }
                }
            }
            Err(error) => tracing::error!(%error, "cannot read the custom key stores"),
        }
        self
    }

    /// Waits (at most `timeout`) until no custom key store is CONNECTING.
    pub fn settle_custom_key_stores(&self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let connecting = self.custom.all().is_ok_and(|stores| {
                stores
                    .iter()
                    .any(|s| s.state == ConnectionState::Connecting)
            });
            if !connecting {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The open cluster of a CONNECTED custom key store in the caller's scope, for
    /// CreateKey and GenerateRandom; returns the store's cluster name too.
    pub(super) fn connected_store(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Arc<Cluster>, KmsError> {
        let (record, _) = self.custom.in_scope(&caller.scope, id)?;
        self.custom
            .connected(&record.id)
            .filter(|_| record.state == ConnectionState::Connected)
            .ok_or_else(|| {
                KmsError::CustomKeyStoreInvalidState(format!(
                    "Custom key store '{id}' is not connected (it is {}).",
                    record.state.as_str()
                ))
            })
    }

    /// CreateCustomKeyStore: registers a configured cluster (not the default one) as an AWS
    /// CloudHSM key store; the password is sealed inside the default cluster's HSMs.
    pub fn create_custom_key_store(
        &self,
        caller: &Caller,
        request: CreateCustomKeyStoreRequest,
    ) -> Result<CreateCustomKeyStoreResponse, KmsError> {
        let mut call = Call::of(Operation::CreateCustomKeyStore);
        call.param("customKeyStoreName", request.custom_key_store_name.as_str());
        if let Some(cluster) = &request.cloud_hsm_cluster_id {
            call.param("cloudHsmClusterId", cluster.as_str());
        }
        self.audited(caller, call, |call| {
            self.authorize_without_key(caller, Operation::CreateCustomKeyStore, |c| c)?;
            check_name("customKeyStoreName", &request.custom_key_store_name)?;
            let store_type = request
                .custom_key_store_type
                .as_deref()
                .unwrap_or(TYPE_CLOUDHSM);
            if store_type != TYPE_CLOUDHSM {
                return Err(KmsError::UnsupportedOperation(format!(
                    "CustomKeyStoreType {store_type} is not supported; custom key stores are \
                     {TYPE_CLOUDHSM}."
                )));
            }
            let cluster = required(request.cloud_hsm_cluster_id, "CloudHsmClusterId")?;
            let trust_anchor =
                required(request.trust_anchor_certificate, "TrustAnchorCertificate")?;
            let length = trust_anchor.chars().count();
            if !(1..=TRUST_ANCHOR_MAX).contains(&length) {
                return Err(KmsError::constraint_violation(
                    "trustAnchorCertificate",
                    None,
                    &[if length == 0 {
                        "Member must have length greater than or equal to 1"
                    } else {
                        "Member must have length less than or equal to 5000"
                    }],
                ));
            }
            let password = required(request.key_store_password, "KeyStorePassword")?;
            check_password(&password)?;
            if !self.custom.may_attach(&cluster, caller.scope.account_id()) {
                return Err(cluster_not_found(&cluster));
            }
            let id = new_store_id()?;
            let (password_iv, password_sealed) = self.custom.seal(&id, &password)?;
            drop(password);
            let _serialised = self.custom.writes.lock().unwrap_or_else(|p| p.into_inner());
            for other in self.custom.all()? {
                if other.cluster == cluster {
                    // Never name the other store: it may belong to another account.
                    return Err(KmsError::CloudHsmClusterInUse(format!(
                        "Cluster '{cluster}' is already associated with a custom key store."
                    )));
                }
                if other.in_scope(&caller.scope) && other.name == request.custom_key_store_name {
                    return Err(KmsError::CustomKeyStoreNameInUse(format!(
                        "Custom key store name '{}' is already in use.",
                        other.name
                    )));
                }
            }
            let record = StoreRecord {
                id: id.clone(),
                account_id: caller.scope.account_id().to_owned(),
                region: caller.scope.region().to_owned(),
                name: request.custom_key_store_name,
                cluster,
                trust_anchor_certificate: trust_anchor,
                creation_date: self.custom.now(),
                state: ConnectionState::Disconnected,
                error_code: None,
                password_iv,
                password_sealed,
                failed_logins: 0,
            };
            let mut batch = Batch::new();
            batch.put_if(
                Table::CustomKeyStores,
                id.as_bytes(),
                Precondition::ExpectAbsent,
                encode(&record)?,
            );
            commit(self.store.as_ref(), batch)?;
            call.response_elements = Some(serde_json::json!({ "customKeyStoreId": id }));
            Ok(CreateCustomKeyStoreResponse {
                custom_key_store_id: id,
            })
        })
    }

    /// DescribeCustomKeyStores: by id, by name, or all of the caller's, in id order.
    pub fn describe_custom_key_stores(
        &self,
        caller: &Caller,
        request: DescribeCustomKeyStoresRequest,
    ) -> Result<DescribeCustomKeyStoresResponse, KmsError> {
        let mut call = Call::of(Operation::DescribeCustomKeyStores);
        if let Some(id) = &request.custom_key_store_id {
            call.param("customKeyStoreId", id.as_str());
        }
        if let Some(name) = &request.custom_key_store_name {
            call.param("customKeyStoreName", name.as_str());
        }
        self.audited(caller, call, |_call| {
            self.authorize_without_key(caller, Operation::DescribeCustomKeyStores, |c| c)?;
            let limit = limit(request.limit, 1000)?;
            if request.custom_key_store_id.is_some() && request.custom_key_store_name.is_some() {
                return Err(KmsError::Validation(
                    "Specify either CustomKeyStoreId or CustomKeyStoreName, not both.".into(),
                ));
            }
            let mut stores: Vec<StoreRecord> = self
                .custom
                .all()?
                .into_iter()
                .filter(|s| s.in_scope(&caller.scope))
                .filter(|s| {
                    request
                        .custom_key_store_id
                        .as_ref()
                        .is_none_or(|id| *id == s.id)
                })
                .filter(|s| {
                    request
                        .custom_key_store_name
                        .as_ref()
                        .is_none_or(|name| *name == s.name)
                })
                .collect();
            if stores.is_empty()
                && let Some(wanted) = request
                    .custom_key_store_id
                    .as_ref()
                    .or(request.custom_key_store_name.as_ref())
            {
                return Err(KmsError::CustomKeyStoreNotFound(format!(
                    "Custom key store '{wanted}' does not exist."
                )));
            }
            if let Some(marker) = &request.marker {
                if !marker.starts_with("cks-") {
                    return Err(KmsError::InvalidMarker(format!("Invalid marker: {marker}")));
                }
                stores.retain(|s| s.id > *marker);
            }
            let truncated = stores.len() > limit;
            stores.truncate(limit);
            Ok(DescribeCustomKeyStoresResponse {
                next_marker: truncated
                    .then(|| stores.last().map(|s| s.id.clone()))
                    .flatten(),
                custom_key_stores: stores.iter().map(StoreRecord::entry).collect(),
                truncated,
            })
        })
    }

    /// ConnectCustomKeyStore: starts connecting a DISCONNECTED store (poll Describe for the
    /// outcome); a store already connected or connecting is left as it is.
    pub fn connect_custom_key_store(
        &self,
        caller: &Caller,
        request: CustomKeyStoreIdRequest,
    ) -> Result<EmptyResponse, KmsError> {
        let mut call = Call::of(Operation::ConnectCustomKeyStore);
        call.param("customKeyStoreId", request.custom_key_store_id.as_str());
        self.audited(caller, call, |_call| {
            self.authorize_without_key(caller, Operation::ConnectCustomKeyStore, |c| c)?;
            let id = &request.custom_key_store_id;
            self.custom.in_scope(&caller.scope, id)?;
            let mut start = false;
            self.custom.update(id, |record| match record.state {
                ConnectionState::Connected | ConnectionState::Connecting => Ok(()),
                ConnectionState::Disconnected if record.locked_out() => {
                    // No more guesses: the store fails at once until its password is updated.
                    record.state = ConnectionState::Failed;
                    record.error_code = Some("USER_LOCKED_OUT".to_owned());
                    Ok(())
                }
                ConnectionState::Disconnected => {
                    record.state = ConnectionState::Connecting;
                    record.error_code = None;
                    start = true;
                    Ok(())
                }
                ConnectionState::Failed | ConnectionState::Disconnecting => {
                    Err(KmsError::CustomKeyStoreInvalidState(format!(
                        "Custom key store '{id}' is {}; disconnect it before connecting it again.",
                        record.state.as_str()
                    )))
                }
            })?;
            if start {
                self.custom.spawn_connect(id.clone());
            }
            Ok(EmptyResponse {})
        })
    }

    /// DisconnectCustomKeyStore: closes the store's cluster; its keys become Unavailable.
    pub fn disconnect_custom_key_store(
        &self,
        caller: &Caller,
        request: CustomKeyStoreIdRequest,
    ) -> Result<EmptyResponse, KmsError> {
        let mut call = Call::of(Operation::DisconnectCustomKeyStore);
        call.param("customKeyStoreId", request.custom_key_store_id.as_str());
        self.audited(caller, call, |_call| {
            self.authorize_without_key(caller, Operation::DisconnectCustomKeyStore, |c| c)?;
            let id = &request.custom_key_store_id;
            self.custom.in_scope(&caller.scope, id)?;
            self.custom.update(id, |record| match record.state {
                ConnectionState::Disconnected | ConnectionState::Disconnecting => {
                    Err(KmsError::CustomKeyStoreInvalidState(format!(
                        "Custom key store '{id}' is already {}.",
                        record.state.as_str()
                    )))
                }
                _ => {
                    record.state = ConnectionState::Disconnected;
                    record.error_code = None;
                    Ok(())
                }
            })?;
            write(&self.custom.open).remove(id);
            Ok(EmptyResponse {})
        })
    }

    /// UpdateCustomKeyStore: a new name, or (while DISCONNECTED) a new password; the cluster
    /// stays the same.
    pub fn update_custom_key_store(
        &self,
        caller: &Caller,
        request: UpdateCustomKeyStoreRequest,
    ) -> Result<EmptyResponse, KmsError> {
        let mut call = Call::of(Operation::UpdateCustomKeyStore);
        call.param("customKeyStoreId", request.custom_key_store_id.as_str());
        if let Some(name) = &request.new_custom_key_store_name {
            call.param("newCustomKeyStoreName", name.as_str());
        }
        if let Some(cluster) = &request.cloud_hsm_cluster_id {
            call.param("cloudHsmClusterId", cluster.as_str());
        }
        self.audited(caller, call, |_call| {
            self.authorize_without_key(caller, Operation::UpdateCustomKeyStore, |c| c)?;
            let id = &request.custom_key_store_id;
            if let Some(name) = &request.new_custom_key_store_name {
                check_name("newCustomKeyStoreName", name)?;
            }
            if let Some(password) = &request.key_store_password {
                check_password(password)?;
            }
            let (current, _) = self.custom.in_scope(&caller.scope, id)?;
            if let Some(cluster) = &request.cloud_hsm_cluster_id
                && *cluster != current.cluster
            {
                if !self.custom.may_attach(cluster, caller.scope.account_id()) {
                    return Err(cluster_not_found(cluster));
                }
                return Err(KmsError::Validation(format!(
                    "Custom key store '{id}' is associated with cluster '{}'; it cannot move to '{cluster}'.",
                    current.cluster
                )));
            }
            let needs_disconnected =
                request.key_store_password.is_some() || request.cloud_hsm_cluster_id.is_some();
            let sealed = match &request.key_store_password {
                Some(password) => Some(self.custom.seal(id, password)?),
                None => None,
            };
            let names = self.custom.all()?;
            self.custom.update(id, |record| {
                if needs_disconnected && record.state != ConnectionState::Disconnected {
                    return Err(KmsError::CustomKeyStoreInvalidState(format!(
                        "Custom key store '{id}' must be DISCONNECTED to change its password or cluster; it is {}.",
                        record.state.as_str()
                    )));
                }
                if let Some(name) = request.new_custom_key_store_name {
                    if names.iter().any(|other| {
                        other.id != record.id
                            && other.account_id == record.account_id
                            && other.region == record.region
                            && other.name == name
                    }) {
                        return Err(KmsError::CustomKeyStoreNameInUse(format!(
                            "Custom key store name '{name}' is already in use."
                        )));
                    }
                    record.name = name;
                }
                if let Some((iv, sealed)) = sealed {
                    record.password_iv = iv;
                    record.password_sealed = sealed;
                    record.failed_logins = 0;
                }
                Ok(())
            })?;
            Ok(EmptyResponse {})
        })
    }

    /// DeleteCustomKeyStore: only a DISCONNECTED store without keys.
    pub fn delete_custom_key_store(
        &self,
        caller: &Caller,
        request: CustomKeyStoreIdRequest,
    ) -> Result<EmptyResponse, KmsError> {
        let mut call = Call::of(Operation::DeleteCustomKeyStore);
        call.param("customKeyStoreId", request.custom_key_store_id.as_str());
        self.audited(caller, call, |_call| {
            self.authorize_without_key(caller, Operation::DeleteCustomKeyStore, |c| c)?;
            let id = &request.custom_key_store_id;
            let (record, revision) = self.custom.in_scope(&caller.scope, id)?;
            if record.state != ConnectionState::Disconnected {
                return Err(KmsError::CustomKeyStoreInvalidState(format!(
                    "Custom key store '{id}' must be DISCONNECTED to be deleted; it is {}.",
                    record.state.as_str()
                )));
            }
            if self
                .all_keys()?
                .iter()
                .any(|key| key.custom_key_store_id.as_deref() == Some(id.as_str()))
            {
                return Err(KmsError::CustomKeyStoreHasCmks(format!(
                    "Custom key store '{id}' still holds KMS keys; delete them first."
                )));
            }
            let _serialised = self.custom.writes.lock().unwrap_or_else(|p| p.into_inner());
            let mut batch = Batch::new();
            batch
                .expect(
                    Table::CustomKeyStores,
                    id.as_bytes(),
                    Precondition::ExpectRevision(revision),
                )
                .delete(Table::CustomKeyStores, id.as_bytes());
            commit(self.store.as_ref(), batch)?;
            Ok(EmptyResponse {})
        })
    }
}
