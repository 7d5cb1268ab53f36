//! The key store facade: one method per AWS KMS operation. Each call is audited, resolves
//! the key reference, is authorized by the key's policy and the caller's identity policies
//! and checks the key state against the effects table (one prologue, in `authorize.rs`),
//! does its AES work inside the HSM cluster, and persists metadata (flushed before it
//! returns). Plaintexts and data keys come and go as [`secrecy`] types and are never
//! written to the metadata store or a log.

mod aliases;
pub mod api;
mod authorize;
mod catch_up;
mod crypto_ops;
mod custom_key_stores;
mod data_key_pairs;
mod grants;
mod import;
mod key_counts;
mod key_policies;
mod lifecycle;
mod maintenance;
mod managed_keys;
mod material_pool;
mod multi_region;
mod regions;
mod rotation;
mod rsa_encryption;
mod signing;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::audit::alarm::Alarm;
use crate::audit::checkpoint::ClusterSealer;
use crate::audit::dispatcher::AlarmDispatcher;
use crate::audit::event::Call;
use crate::audit::log::{AuditHealth, AuditLog, AuditSettings, OnFailure};
use crate::clock::{Clock, SystemClock};
use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::error::KmsError;
use crate::ids::{KeyId, KeyRef, Scope};
use crate::keys::records::{AliasRecord, KeyRecord, into_store_key, store_key};
use crate::keys::state::{KeyState, Operation};
use crate::store::{Batch, Change, MetadataStore, Precondition, StoreError, Table, pages};

pub use crate::caller::Caller;
use authorize::{Access, Naming};
pub use catch_up::CaughtUp;
pub use custom_key_stores::ConnectionState;
pub use maintenance::{Inconsistency, MaintenanceReport};
pub use material_pool::{PoolReconciled, PoolStatus};
pub use regions::REOPEN_INTERVAL;

/// Why a key store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The default cluster could not be opened or does not pass its preflight.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The metadata store could not be opened (or another process holds it).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The config does not describe a usable key store.
    #[error("{0}")]
    Config(String),
    /// The stored metadata could not be read back.
    #[error("{}", .0.message())]
    Metadata(#[from] KmsError),
}

/// Cached key records by key id, each with the store revision it was read at.
type KeyCache = HashMap<String, (Arc<KeyRecord>, u64)>;

/// An open key store: an HSM cluster plus its metadata.
pub struct KeyStore {
    /// First, so its refiller is stopped before anything it uses goes.
    material_pool: material_pool::MaterialPool,
    scope: Scope,
    cluster: Arc<Cluster>,
    store: Arc<dyn MetadataStore>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditLog>,
    /// Declared after `audit`, so on drop the trail is flushed before the alarms' last pass.
    alarms: Option<AlarmDispatcher>,
    /// The clusters of regions that have their own (`[service.region_clusters]`).
    regions: regions::RegionClusters,
    /// The custom key stores and their open clusters.
    custom: Arc<custom_key_stores::CustomKeyStores>,
    /// Key records read since start, with their store revision; dropped on every write,
    /// ours or (told by the store's watch) another instance's.
    cache: Arc<RwLock<KeyCache>>,
    /// Counts key writes, bumped under the cache's write lock with each invalidation: a read
    /// that began before a write must not fill the cache after it (see [`KeyStore::key`]).
    cache_generation: Arc<AtomicU64>,
    /// Serialises read-modify-write cycles of metadata.
    writes: Mutex<()>,
    /// Material creations in progress in this process (their intents are not leftovers).
    creating: Mutex<std::collections::HashSet<String>>,
    startup: Vec<Inconsistency>,
    /// Keys by state, following every commit (for `/metrics`).
    key_counts: Arc<Mutex<key_counts::KeyCounts>>,
    /// The services whose AWS managed keys are made on first use (none unless configured).
    managed: managed_keys::ManagedKeys,
}

impl KeyStore {
    /// Opens the default cluster (running its preflight) and the metadata store in the
    /// config's data directory, starts the configured alarms and the cluster's material pool
    /// (`material_pool` objects, reconciled first).
    pub fn open(config: &Config) -> Result<KeyStore, OpenError> {
        let cluster_config = config
            .default_cluster()
            .map_err(|e| OpenError::Config(e.to_string()))?;
        let cluster = Cluster::open(&config.default_cluster, cluster_config)?;
        let keystore = KeyStore::open_with_cluster(config, cluster)?;
        keystore.start_material_pool(cluster_config.material_pool)?;
        Ok(keystore)
    }

    /// Opens the configured metadata store (`[store]`: sled in the data directory, or
    /// PostgreSQL) over an already open cluster (so a caller that needs the cluster anyway
    /// opens it only once).
    pub fn open_with_cluster(config: &Config, cluster: Cluster) -> Result<KeyStore, OpenError> {
        let store = crate::store::open(&config.store, &config.service.data_dir)?;
        let scope = Scope::new(&config.service.region, &config.service.account_id)
            .map_err(|e| OpenError::Config(e.message().to_owned()))?;
        let alarms = config
            .alarms
            .alarms(&config.service.data_dir)
            .map_err(|e| OpenError::Config(e.to_string()))?;
        let region_clusters = regions::RegionClusters::names(config);
        let custom_clusters = config
            .clusters
            .iter()
            .filter(|(name, _)| !region_clusters.contains(&name.as_str()))
            .map(|(name, cluster)| (name.clone(), cluster.clone()))
            .collect();
        let mut keystore = KeyStore::with_parts(
            scope,
            cluster,
            store,
            Arc::new(SystemClock),
            config.audit.clone(),
        )?
        .with_region_clusters(config)?
        .with_clusters(&custom_clusters)
        .with_managed_key_services(&config.service.managed_key_services);
        keystore.start_alarms(alarms)?;
        Ok(keystore)
    }

    /// Serves the AWS managed keys of `services` (`alias/aws/<service>`, made in an account
    /// on its first use); [`KeyStore::open`] passes `[service] managed_key_services`, while
    /// [`KeyStore::with_parts`] serves none until this is called.
    pub fn with_managed_key_services(mut self, services: &[String]) -> KeyStore {
        self.managed = managed_keys::ManagedKeys::new(services);
        self
    }

    /// Starts delivering `alarms` from the audit trail (replacing alarms started before).
    /// [`KeyStore::open`] and [`KeyStore::open_with_cluster`] do this with the config's
    /// alarms; [`KeyStore::with_parts`] starts none.
    pub fn start_alarms(&mut self, alarms: Vec<Alarm>) -> Result<(), StoreError> {
        if let Some(running) = self.alarms.take() {
            running.shutdown();
        }
        let dispatcher = AlarmDispatcher::start(self.store.clone(), alarms)?;
        self.audit.on_commit(dispatcher.notifier());
        self.alarms = Some(dispatcher);
        Ok(())
    }

    /// Assembles a key store from its parts (tests inject a manual clock here) and starts its
    /// audit trail.
    pub fn with_parts(
        scope: Scope,
        cluster: Cluster,
        store: Box<dyn MetadataStore>,
        clock: Arc<dyn Clock>,
        audit: AuditSettings,
    ) -> Result<KeyStore, OpenError> {
        let cluster = Arc::new(cluster);
        let (store, key_counts) = key_counts::CountingStore::wrap(Arc::from(store))?;
        let store: Arc<dyn MetadataStore> = Arc::new(store);
        let sealer = Arc::new(ClusterSealer::new(cluster.clone()));
        let audit = Arc::new(AuditLog::start(
            store.clone(),
            Some(sealer),
            audit,
            clock.clone(),
        )?);
        catch_up::watch_members(&cluster, false, &audit, &store, &scope);
        let custom = Arc::new(custom_key_stores::CustomKeyStores::new(
            cluster.clone(),
            store.clone(),
            clock.clone(),
            scope.account_id(),
        ));
        let mut keystore = KeyStore {
            material_pool: material_pool::MaterialPool::default(),
            scope,
            cluster,
            store,
            clock,
            audit,
            alarms: None,
            regions: regions::RegionClusters::default(),
            custom,
            cache: Arc::default(),
            cache_generation: Arc::default(),
            writes: Mutex::new(()),
            creating: Mutex::new(std::collections::HashSet::new()),
            startup: Vec::new(),
            key_counts,
            managed: managed_keys::ManagedKeys::default(),
        };
        keystore.watch_other_instances()?;
        keystore.index_grants()?;
        keystore.index_aliases()?;
        keystore.startup = keystore.interrupted_intents()?;
        for problem in &keystore.startup {
            tracing::warn!(%problem, "inconsistency found at start-up");
        }
        Ok(keystore)
    }

    /// The service's own account and region.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The HSM cluster behind the store.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The HSM cluster behind the store, shared (for checks that outlive a borrow, such as
    /// `compliance`'s audit seal verification).
    pub fn shared_cluster(&self) -> Arc<Cluster> {
        self.cluster.clone()
    }

    /// Flushes the audit trail, seals a final checkpoint, and stops the alarms after a last
    /// delivery attempt for the events committed so far.
    pub fn shutdown(&self) {
        self.material_pool.stop();
        self.audit.shutdown();
        if let Some(alarms) = &self.alarms {
            alarms.shutdown();
        }
    }

    /// The number of keys in `state` (all accounts and regions), without reading the store.
    pub fn keys_in_state(&self, state: KeyState) -> u64 {
        let counts = self.key_counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.in_state(state)
    }

    /// Whether this instance runs the background work (maintenance) that must run once
    /// among the instances sharing the metadata store; always true on sled.
    pub fn is_leader(&self) -> bool {
        self.store.is_leader()
    }

    /// Inconsistencies between HSM and metadata found when the store opened.
    pub fn startup_inconsistencies(&self) -> &[Inconsistency] {
        &self.startup
    }

    fn now(&self) -> i64 {
        self.clock.now_millis()
    }

    /// The metadata store (the audit trail is read from it too).
    pub fn metadata(&self) -> &dyn MetadataStore {
        self.store.as_ref()
    }

    /// Whether the audit trail is being written, and what it lost (for `/healthz`, `/metrics`).
    pub fn audit_health(&self) -> AuditHealth {
        self.audit.health()
    }

    /// `KMSInternalException` while the audit trail cannot be written and the policy is
    /// `on_failure = "refuse"`.
    fn trail_writable(&self) -> Result<(), KmsError> {
        if !self.audit.enabled() || self.audit.on_failure() == OnFailure::Log {
            return Ok(());
        }
        match self.audit.health().failure {
            None => Ok(()),
            Some(failure) => {
                tracing::error!(%failure, "refused: the audit trail cannot be written");
                Err(trail_unwritable())
            }
        }
    }

    /// With `on_failure = "refuse"`, proves the audit trail writable before background work
    /// that changes state ([`AuditLog::probe`]); `KMSInternalException` when it is not.
    fn trail_probe(&self) -> Result<(), KmsError> {
        if self.audit.on_failure() == OnFailure::Log {
            return Ok(());
        }
        self.audit.probe().map_err(|error| {
            tracing::error!(%error, "background work refused: the audit trail cannot be written");
            trail_unwritable()
        })
    }

    /// Runs one API call and records it in the audit trail, failures included.
    ///
    /// With `on_failure = "refuse"`: a call that changes state first writes its intent
    /// durably ([`AuditLog::begin`]), before it changes anything, and is refused with
    /// `KMSInternalException` when that fails; its final event then replaces the intent in the
    /// chain ([`AuditLog::complete`]), and should that be lost the intent is chained instead.
    /// Any other call is refused while the trail cannot be written. Refusals are appended too:
    /// the first that commits shows the trail writable again. With `"log"`, every call runs
    /// and an event that cannot be written is only logged (and counted in the chain's gap).
    fn audited<T>(
        &self,
        caller: &Caller,
        mut call: Call,
        operation: impl FnOnce(&mut Call) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        self.material_pool.note_call();
        if !self.audit.enabled() {
            return operation(&mut call);
        }
        let durable = call.durable;
        let mut intent = None;
        let admitted = if durable && self.audit.on_failure() == OnFailure::Refuse {
            let event = call.intent_event(caller, self.cluster.name(), self.now());
            match self.audit.begin(&event) {
                Ok(begun) => {
                    intent = Some(begun);
                    Ok(())
                }
                Err(error) => {
                    tracing::error!(%error, call = call.event_name, "call refused: its audit intent cannot be written");
                    Err(trail_unwritable())
                }
            }
        } else {
            self.trail_writable()
        };
        let refused = admitted.is_err();
        let result = admitted.and_then(|()| operation(&mut call));
        let key_owner = call.key_owner.take();
        let error = result.as_ref().err();
        let mut event = call.event(caller, self.cluster.name(), self.now(), error);
        let owner_event = key_owner.as_deref().map(|owner| event.owner_copy(owner));
        let recorded = match intent {
            Some(intent) => self.audit.complete(intent, &event),
            None => self.audit.append(&event, durable && !refused),
        };
        if let Err(error) = recorded {
            tracing::error!(%error, "audit event lost");
        }
        if let Some(copy) = owner_event
            && let Err(error) = self.audit.append(&copy, durable && !refused)
        {
            tracing::error!(%error, "audit event of the key owner's account lost");
        }
        result
    }

    /// Records a request refused before any operation ran (authentication failed, unknown
    /// operation, malformed input) as a failed `event_name` call, without its body.
    pub fn record_refused(&self, caller: &Caller, event_name: &'static str, error: &KmsError) {
        let call = Call::new(event_name, true, false);
        let _refused: Result<(), KmsError> = self.audited(caller, call, |_| Err(error.clone()));
    }

    /// Records a background action of the service in the audit trail (durably).
    fn service_event(&self, record: &KeyRecord, event_name: &str, details: serde_json::Value) {
        let event = crate::audit::event::service_event(
            &record.region,
            &record.account_id,
            self.now(),
            event_name,
            &[record.arn()],
            details,
        );
        if let Err(error) = self.audit.append(&event, true) {
            tracing::error!(%error, "audit event lost");
        }
    }

    /// Keeps the key record cache current with other instances' commits on a shared store:
    /// each key record they write is dropped from the cache as a write of ours is (see
    /// [`KeyStore::commit`]), and everything when the store may have missed changes.
    fn watch_other_instances(&self) -> Result<(), StoreError> {
        let (cache, generation) = (self.cache.clone(), self.cache_generation.clone());
        self.store.watch(Arc::new(move |change| {
            let mut cache = write(&cache);
            match change {
                Change::Record {
                    table: Table::Keys,
                    key,
                } => {
                    generation.fetch_add(1, Ordering::SeqCst);
                    if let Ok(key_id) = std::str::from_utf8(key) {
                        cache.remove(key_id);
                    }
                }
                Change::Record { .. } => {}
                Change::Everything => {
                    generation.fetch_add(1, Ordering::SeqCst);
                    cache.clear();
                }
            }
        }))
    }

    /// A key record by its store key ([`store_key`]: the key id, and for a multi-Region key
    /// the Region too) (cached), in its effective state: a key of a custom key store that
    /// is not connected reads as Unavailable (its record keeps its own state).
    ///
    /// A record read from the store enters the cache only if no key write committed since
    /// the read began: [`KeyStore::commit`] bumps the generation and drops the entry under
    /// the cache's write lock, and the insert checks the generation under the same lock, so a
    /// slow read can never put back a record older than a write that has returned. Another
    /// instance's writes invalidate the same way (see [`KeyStore::watch_other_instances`]);
    /// while the store cannot vouch that they were all seen, the cache is not served.
    fn key(&self, key: &str) -> Result<Option<Arc<KeyRecord>>, KmsError> {
        let key_id = key;
        let cached = if self.store.caches_are_current() {
            read(&self.cache)
                .get(key_id)
                .map(|(record, _)| record.clone())
        } else {
            None
        };
        let record = match cached {
            Some(record) => record,
            None => {
                let generation = self.cache_generation.load(Ordering::SeqCst);
                let Some(found) = self
                    .store
                    .get(Table::Keys, key_id.as_bytes())
                    .map_err(internal)?
                else {
                    return Ok(None);
                };
                let record: Arc<KeyRecord> = Arc::new(decode(&found.payload)?);
                let mut cache = write(&self.cache);
                if self.cache_generation.load(Ordering::SeqCst) == generation {
                    cache.insert(key_id.to_owned(), (record.clone(), found.revision));
                }
                record
            }
        };
        Ok(Some(self.effective(record)))
    }

    fn effective(&self, record: Arc<KeyRecord>) -> Arc<KeyRecord> {
        let unavailable = matches!(record.state, KeyState::Enabled | KeyState::Disabled)
            && record
                .custom_key_store_id
                .as_ref()
                .is_some_and(|id| self.custom.connected(id).is_none());
        if !unavailable {
            return record;
        }
        let mut record = KeyRecord::clone(&record);
        record.state = KeyState::Unavailable;
        Arc::new(record)
    }

    /// The cluster that holds a key's material: the one its record names (the default one
    /// or its region's), or its custom key store's while that is connected.
    fn cluster_of(&self, record: &KeyRecord) -> Result<Arc<Cluster>, KmsError> {
        match &record.custom_key_store_id {
            None => self.cluster_named(&record.cluster),
            Some(id) => self.custom.connected(id).ok_or_else(|| {
                KmsError::KmsInvalidState(format!("{} is unavailable.", record.arn()))
            }),
        }
    }

    /// Resolves a key reference in the caller's scope (aliases only if `naming` allows),
    /// with the alias name the request used, if any (`kms:RequestAlias`). A key ARN of
    /// another account of the caller's region resolves in that account when `operation`
    /// may be called across accounts (authorization then decides); aliases never do.
    fn resolve_reference(
        &self,
        caller: &Caller,
        call: &mut Call,
        operation: Operation,
        reference: (&str, &str),
        naming: Naming,
    ) -> Result<(Arc<KeyRecord>, Option<String>), KmsError> {
        let (param, input) = reference;
        if let Some(owner) = foreign_key_owner(input, &caller.scope)
            && operation.allows_cross_account()
        {
            let reference = KeyRef::parse_param(param, input, &owner)?;
            let record = match reference.require_key_id_or_arn() {
                Ok(key_id) => self.key(&store_key(&key_id.to_string(), owner.region()))?,
                Err(_) => None,
            };
            let record = record
                .filter(|record| record.in_scope(&owner))
                .ok_or_else(|| reference.not_found(&owner))?;
            call.resource(record.arn());
            call.key_owner = Some(owner.account_id().to_owned());
            return Ok((record, None));
        }
        let reference = KeyRef::parse_param(param, input, &caller.scope)?;
        let (key_id, alias) = match (&reference, naming) {
            (KeyRef::KeyId(id), _) => (Some(*id), None),
            (KeyRef::KeyArn(arn), _) => (Some(arn.key_id()), None),
            (_, Naming::KeyIdOrArn) => (Some(reference.require_key_id_or_arn()?), None),
            (KeyRef::AliasName(name), Naming::AnyReference) => (
                self.alias_target_or_managed(caller, operation, param, name.as_str())?,
                Some(name.as_str().to_owned()),
            ),
            (KeyRef::AliasArn(arn), Naming::AnyReference) => (
                self.alias_target_or_managed(caller, operation, param, arn.alias_name().as_str())?,
                Some(arn.alias_name().as_str().to_owned()),
            ),
        };
        let record = self
            .key_in_scope(caller, key_id)
            .ok_or_else(|| reference.not_found(&caller.scope))??;
        call.resource(record.arn());
        Ok((record, alias))
    }

    fn key_in_scope(
        &self,
        caller: &Caller,
        key_id: Option<KeyId>,
    ) -> Option<Result<Arc<KeyRecord>, KmsError>> {
        let key_id = key_id?;
        match self.key(&into_store_key(key_id.to_string(), caller.scope.region())) {
            Ok(Some(record)) if record.in_scope(&caller.scope) => Some(Ok(record)),
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        }
    }

    fn alias_target(&self, scope: &Scope, name: &str) -> Result<Option<KeyId>, KmsError> {
        Ok(self
            .alias(scope, name)?
            .and_then(|(alias, _)| KeyId::parse(&alias.target_key_id).ok()))
    }

    fn alias(&self, scope: &Scope, name: &str) -> Result<Option<(AliasRecord, u64)>, KmsError> {
        let key = alias_key(scope, name);
        match self.store.get(Table::Aliases, &key).map_err(internal)? {
            Some(found) => Ok(Some((decode(&found.payload)?, found.revision))),
            None => Ok(None),
        }
    }

    /// The key record stored under `key_id` (a [`store_key`]) as stored now (never the
    /// cache), with its revision.
    fn stored_key(&self, key_id: &str) -> Result<Option<(KeyRecord, u64)>, KmsError> {
        match self
            .store
            .get(Table::Keys, key_id.as_bytes())
            .map_err(internal)?
        {
            Some(found) => Ok(Some((decode(&found.payload)?, found.revision))),
            None => Ok(None),
        }
    }

    /// Re-reads the key stored under `key_id` (a [`store_key`]), lets `change` modify it, and
    /// writes it back (with `extra` changes in the same atomic batch) only if nobody changed it
    /// meanwhile.
    fn update_key<T>(
        &self,
        key_id: &str,
        change: impl FnOnce(&mut KeyRecord, &mut Batch) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let found = self
            .store
            .get(Table::Keys, key_id.as_bytes())
            .map_err(internal)?
            .ok_or_else(|| KmsError::NotFound(format!("Key '{key_id}' does not exist")))?;
        let mut record: KeyRecord = decode(&found.payload)?;
        let mut batch = Batch::new();
        let outcome = change(&mut record, &mut batch)?;
        batch.put_if(
            Table::Keys,
            key_id.as_bytes(),
            Precondition::ExpectRevision(found.revision),
            encode(&record)?,
        );
        self.commit(batch, key_id)?;
        Ok(outcome)
    }

    /// Commits a batch and forgets the cached record stored under `key_id` (whatever the
    /// outcome: after a store error the batch may have been applied).
    ///
    /// For a copy of a multi-Region key, every copy's cached record is forgotten: a write of
    /// one copy may carry the shared properties into the others in the same batch.
    fn commit(&self, batch: Batch, key_id: &str) -> Result<(), KmsError> {
        let outcome = self.store.commit(batch);
        {
            let mut cache = write(&self.cache);
            self.cache_generation.fetch_add(1, Ordering::SeqCst);
            match key_id.split_once('/') {
                Some((mrk, _)) if mrk.starts_with(crate::ids::MULTI_REGION_PREFIX) => {
                    let prefix = crate::keys::records::multi_region_prefix(mrk);
                    cache.retain(|cached, _| !cached.starts_with(&prefix));
                }
                _ => {
                    cache.remove(key_id);
                }
            }
        }
        match outcome.map_err(internal)? {
            Ok(()) => Ok(()),
            Err(conflict) => Err(KmsError::Conflict(format!(
                "a concurrent change to {} won: retry the request",
                conflict.table
            ))),
        }
    }

    /// Every key record in the store (all scopes).
    fn all_keys(&self) -> Result<Vec<KeyRecord>, KmsError> {
        let mut keys = Vec::new();
        for page in pages(self.store.as_ref(), Table::Keys, b"") {
            for (_, record) in page.map_err(internal)? {
                keys.push(decode(&record.payload)?);
            }
        }
        Ok(keys)
    }
}

/// The account of a key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`) in the caller's region
/// but another account, as a scope; `None` for anything else.
fn foreign_key_owner(input: &str, scope: &Scope) -> Option<Scope> {
    if !input.starts_with("arn:") {
        return None;
    }
    let mut parts = input.splitn(6, ':');
    let (Some("arn"), Some("aws"), Some("kms"), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (region == scope.region() && account != scope.account_id() && resource.starts_with("key/"))
        .then(|| Scope::new(region, account).ok())
        .flatten()
}

/// The store key of an alias: account, region and name.
fn alias_key(scope: &Scope, name: &str) -> Vec<u8> {
    format!("{}/{}/{}", scope.account_id(), scope.region(), name).into_bytes()
}

fn alias_prefix(scope: &Scope) -> Vec<u8> {
    format!("{}/{}/", scope.account_id(), scope.region()).into_bytes()
}

/// Writes, once per store, the index entries that the records of `table` written before an
/// index existed lack: `entries` gives a record's (from its store key and payload), added one
/// batch per page, then the meta-table `marker` that says it was done. Entries are
/// idempotent, so instances sharing a store may do it at once.
fn backfill_index(
    store: &dyn MetadataStore,
    table: Table,
    marker: &[u8],
    entries: impl Fn(&[u8], &[u8]) -> Result<Vec<(Table, Vec<u8>)>, KmsError>,
) -> Result<(), KmsError> {
    let commit = |batch: Batch| {
        store
            .commit(batch)
            .map_err(internal)?
            .map_err(|conflict| KmsError::KmsInternal(conflict.to_string()))
    };
    if store.get(Table::Meta, marker).map_err(internal)?.is_some() {
        return Ok(());
    }
    for page in pages(store, table, b"") {
        let mut batch = Batch::new();
        for (key, record) in &page.map_err(internal)? {
            for (index, entry) in entries(key, &record.payload)? {
                batch.put(index, &entry, Vec::new());
            }
        }
        commit(batch)?;
    }
    let mut marked = Batch::new();
    marked.put(Table::Meta, marker, Vec::new());
    commit(marked)
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, KmsError> {
    serde_json::to_vec(record)
        .map_err(|e| KmsError::KmsInternal(format!("cannot encode metadata: {e}")))
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, KmsError> {
    serde_json::from_slice(payload)
        .map_err(|e| KmsError::KmsInternal(format!("metadata record does not decode: {e}")))
}

/// What a caller is told when the audit trail cannot record its call.
fn trail_unwritable() -> KmsError {
    KmsError::KmsInternal(
        "The request was rejected because the audit trail cannot be written; nothing was changed. The request can be retried."
            .into(),
    )
}

fn internal(error: StoreError) -> KmsError {
    KmsError::KmsInternal(format!("metadata store: {error}"))
}

/// Maps a cluster failure to the KMS exception a caller sees.
fn cluster_error(error: ClusterError) -> KmsError {
    match error {
        ClusterError::CannotWriteKeys { .. } | ClusterError::Preflight(_) => {
            KmsError::CloudHsmClusterInvalidConfiguration(error.to_string())
        }
        ClusterError::Unavailable { .. } => KmsError::KeyUnavailable(error.to_string()),
        other => KmsError::KmsInternal(other.to_string()),
    }
}

/// Checks an optional `Limit` (1..=1000, default `default`).
fn limit(value: Option<i64>, default: usize) -> Result<usize, KmsError> {
    match value {
        None => Ok(default),
        Some(n) if (1..=1000).contains(&n) => Ok(n as usize),
        Some(n) => Err(KmsError::constraint_violation(
            "limit",
            Some(&n.to_string()),
            &[if n < 1 {
                "Member must have value greater than or equal to 1"
            } else {
                "Member must have value less than or equal to 1000"
            }],
        )),
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
