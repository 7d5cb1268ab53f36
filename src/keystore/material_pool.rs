//! The material pool: AES-256 material generated, replicated and proven ahead of time, so
//! that CreateKey (a SYMMETRIC_DEFAULT key of origin AWS_KMS in the default cluster) needs no
//! key generation in the HSMs. It owns the pool's records (table `material-pool`, one per
//! ready object, keyed `<cluster>/<CKA_ID>`), the in-memory queue of ready objects, the
//! background refiller and the pool's reconciliation. It never hands one object to two
//! keys, and never leaves an object that neither the pool nor a key record names.
//!
//! **Where an object's identity lives.** A pool object is made once, under the `CKA_ID`
//! `hsm-kms-pool-s<owner>-<uuid>`, on every member, and keeps that id for life. `<owner>`
//! names the metadata store whose pool made it (16 hex digits, drawn once and kept in the
//! store's meta table), so a cluster that a second store also uses by mistake (a copy
//! under test beside the original, a benchmark's sled and PostgreSQL instances) never has
//! one store's reconciliation destroy the other's objects; objects of the format before the
//! owner (`hsm-kms-pool-<uuid>`) are handled through their records only. A key that claims it
//! records the id in its material version (`MaterialRecord::pool_object`), and every path
//! that finds a version's HSM objects asks the record (`KeyRecord::material`), which names
//! the pool object or, for material made for the key, `<key id>/<version>`. Relabelling
//! the objects at claim time would cost a `C_SetAttributeValue` per member (a rewrite of the
//! object file on SoftHSM2, the very cost the pool avoids) and would leave a window in which
//! members disagree on an object's name; the indirection costs no HSM write at all. The
//! objects' `CKA_LABEL` stays `hsm-kms material pool`: labels are descriptive only.
//!
//! **Claims are atomic.** A claim takes an object off the in-memory queue (so no two callers
//! of this process get it), proves it on every healthy member (members may have come and
//! gone since it was pooled: one that lacks it gets a copy, proven), and then commits one
//! batch that deletes the pool record, expecting it present, and writes the key record,
//! expecting it absent. A crash before that commit leaves the pool record, so the object is
//! back in the pool after a restart; after it, the key owns it. Since the pool table is read
//! before the key records whenever both are compared, every object is seen in one of them.
//!
//! **Reconciliation.** The refiller writes an object's record, marked unfinished, before it
//! generates the object, and marks it ready once the object is replicated and proven. At
//! start-up, unfinished records (a crash while making) have their objects destroyed and go,
//! and ready records past the configured size (the pool shrank) go, then their objects;
//! this reads the pool's records only, so opening a store with many keys stays cheap.
//! Maintenance also compares the pool objects members hold with the pool and key records:
//! objects of this store's pool that neither names (a destruction a member missed while
//! away) never held anyone's data and are destroyed; records whose object no member holds
//! are dropped.
//!
//! **Refilling when idle.** One background thread tops the pool up to its size. It wakes
//! every [`IDLE_TICK`] and works only after a whole tick in which the key store served no
//! call and no member had a call in flight; between objects it checks again, so a burst of
//! calls pauses it after at most one object (one generation and replication, some tens of
//! milliseconds on SoftHSM2). A failure (quorum lost) backs it off for [`FAILURE_BACKOFF`].
//! Each refill run is one `MaterialPoolRefilled` audit event, each reduction one
//! `MaterialPoolReduced` event, never one per object.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{KeyStore, decode, encode, internal};
use crate::audit::log::AuditLog;
use crate::clock::{Clock, SystemClock};
use crate::cluster::{Cluster, ClusterError, MaterialId, POOL_PREFIX};
use crate::error::KmsError;
use crate::hsm::MaterialSpec;
use crate::ids::Scope;
use crate::keys::records::KeyRecord;
use crate::store::{Batch, MetadataStore, Precondition, Table};

/// The `CKA_LABEL` of every pool object.
pub const POOL_LABEL: &str = "hsm-kms material pool";

/// How long the key store must have been idle before the refiller works.
pub const IDLE_TICK: Duration = Duration::from_millis(200);

/// How long the refiller waits after a failed refill.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(5);

/// Meta-table key of the store's pool owner tag (see the module doc).
const OWNER_KEY: &[u8] = b"material-pool-owner";

/// One pool object, as stored (identifiers only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PoolRecord {
    cluster: String,
    object: String,
    created: i64,
    /// `false` from before the object is generated until it is replicated and proven: a
    /// record found so after a crash names an object to destroy, never one to hand out.
    ready: bool,
}

/// The material pool of a cluster as `cluster status` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// The cluster whose material the pool holds.
    pub cluster: String,
    /// The configured size (0: disabled).
    pub size: usize,
    /// Objects ready to be claimed.
    pub ready: usize,
    /// Keys created from the pool since the key store opened.
    pub claimed: u64,
    /// CreateKey calls since the key store opened that found the pool empty and generated.
    pub fallbacks: u64,
}

/// What one reconciliation of the pool did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolReconciled {
    /// Objects no record named, destroyed.
    pub unrecorded_destroyed: Vec<String>,
    /// Records whose object no member holds, dropped.
    pub lost_records: Vec<String>,
    /// Ready objects past the configured size, destroyed.
    pub surplus_destroyed: Vec<String>,
}

impl PoolReconciled {
    fn is_empty(&self) -> bool {
        self.unrecorded_destroyed.is_empty()
            && self.lost_records.is_empty()
            && self.surplus_destroyed.is_empty()
    }
}

/// The pool's shared state (the key store's side and the refiller's).
#[derive(Default)]
struct PoolState {
    /// The cluster served; empty until the pool starts.
    cluster: Mutex<String>,
    size: AtomicUsize,
    ready: Mutex<VecDeque<String>>,
    /// Held by every step that makes or destroys pool objects, and while the HSMs are
    /// compared with the records, so neither sees the other half done.
    hsm_work: Mutex<()>,
    stopped: Mutex<bool>,
    wake: Condvar,
    /// Calls the key store began (the refiller's idleness test).
    calls: AtomicU64,
    claimed: AtomicU64,
    fallbacks: AtomicU64,
}

impl PoolState {
    /// Waits `timeout` or until stopped; `true` when stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let stopped = lock(&self.stopped);
        if *stopped {
            return true;
        }
        let (stopped, _) = self
            .wake
            .wait_timeout(stopped, timeout)
            .unwrap_or_else(|p| p.into_inner());
        *stopped
    }

    fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }
}

/// A key store's material pool and its refiller (stopped and joined when dropped).
#[derive(Default)]
pub(super) struct MaterialPool {
    state: Arc<PoolState>,
    refiller: Mutex<Option<JoinHandle<()>>>,
}

impl MaterialPool {
    /// Counts a call the key store began (calls pause the refiller).
    pub(super) fn note_call(&self) {
        self.state.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Excludes pool object creation and destruction while held.
    pub(super) fn hsm_work(&self) -> MutexGuard<'_, ()> {
        lock(&self.state.hsm_work)
    }

    /// Stops the refiller and waits for it.
    pub(super) fn stop(&self) {
        *lock(&self.state.stopped) = true;
        self.state.wake.notify_all();
        if let Some(refiller) = lock(&self.refiller).take()
            && refiller.join().is_err()
        {
            tracing::error!("the material pool refiller panicked");
        }
    }
}

impl Drop for MaterialPool {
    fn drop(&mut self) {
        self.stop();
    }
}

impl KeyStore {
    /// Starts the material pool of the key store's cluster with `size` objects (0: none):
    /// clears what a crash left unfinished, destroys the ready objects past `size`, loads
    /// the others, and starts the refiller. Reads the pool's records only, not every key.
    /// On a store several instances share the pool is off (size 0, with a warning): its
    /// queue and its crash recovery assume that this process alone makes pool objects.
    pub fn start_material_pool(&self, size: usize) -> Result<PoolReconciled, KmsError> {
        let size = if size > 0 && self.store.is_shared() {
            tracing::warn!(
                configured = size,
                "material_pool is not used on a metadata store several instances share: \
                 each instance's queue of ready objects would be out of date and reconciliation \
                 would take another instance's object in the making for a crash leftover"
            );
            0
        } else {
            size
        };
        let state = &self.material_pool.state;
        *lock(&state.cluster) = self.cluster.name().to_owned();
        state.size.store(size, Ordering::SeqCst);
        let reconciled = self.reconcile_material_pool(true)?;
        if size == 0 || lock(&self.material_pool.refiller).is_some() {
            return Ok(reconciled);
        }
        let refiller = Refiller {
            state: state.clone(),
            cluster: self.cluster.clone(),
            store: self.store.clone(),
            audit: self.audit.clone(),
            scope: self.scope.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("material-pool".into())
            .spawn(move || refiller.run())
            .map_err(|e| KmsError::KmsInternal(format!("cannot start the pool refiller: {e}")))?;
        *lock(&self.material_pool.refiller) = Some(handle);
        Ok(reconciled)
    }

    /// The material pool of the key store's cluster now.
    pub fn material_pool_status(&self) -> PoolStatus {
        let state = &self.material_pool.state;
        PoolStatus {
            cluster: self.cluster.name().to_owned(),
            size: state.size.load(Ordering::SeqCst),
            ready: lock(&state.ready).len(),
            claimed: state.claimed.load(Ordering::Relaxed),
            fallbacks: state.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// The ready pool objects of `cluster` its records list (read from the store, so also
    /// right in a process that did not start the pool, such as `cluster status`).
    pub fn pooled_objects(&self, cluster: &Cluster) -> Result<BTreeSet<Vec<u8>>, KmsError> {
        Ok(pool_records(self.store.as_ref(), cluster.name())?
            .into_iter()
            .filter(|record| record.ready)
            .map(|record| record.object.into_bytes())
            .collect())
    }

    /// Finishes what the pool left unfinished: objects whose record says they were being
    /// made are destroyed and their records dropped. With `load` (start-up), also drops what
    /// exceeds the size and fills the ready queue from the records. Without it
    /// (maintenance), also compares the pool objects members hold with the pool and key
    /// records (see the module doc), which lists every member and reads every key record.
    pub(super) fn reconcile_material_pool(&self, load: bool) -> Result<PoolReconciled, KmsError> {
        let state = &self.material_pool.state;
        let _work = lock(&state.hsm_work);
        let cluster = &self.cluster;
        // Members first, then the pool, then the keys: see the module doc.
        let listed = (!load).then(|| cluster.key_objects());
        let records = pool_records(self.store.as_ref(), cluster.name())?;
        // Without an owner tag this store's pool never made an object.
        let ours = pool_owner(self.store.as_ref(), false)?.map(|owner| owner_prefix(&owner));
        let mut reconciled = PoolReconciled::default();
        let mut ready = Vec::new();
        for record in records {
            if record.ready {
                ready.push(record.object);
            } else {
                self.drop_record(cluster.name(), &record.object)?;
                destroy(cluster, &record.object);
                reconciled.unrecorded_destroyed.push(record.object);
            }
        }
        if let Some(listed) = listed {
            let claimed: BTreeSet<String> = self
                .all_keys()?
                .iter()
                .filter(|key| key.cluster == cluster.name())
                .flat_map(claimed_objects)
                .collect();
            let mut held: BTreeSet<String> = BTreeSet::new();
            let mut every_member_listed = true;
            for (_, objects) in &listed {
                match objects {
                    Ok(objects) => held.extend(
                        objects
                            .iter()
                            .filter(|object| {
                                ours.as_ref()
                                    .is_some_and(|ours| object.id.starts_with(ours.as_bytes()))
                            })
                            .map(|object| String::from_utf8_lossy(&object.id).into_owned()),
                    ),
                    Err(_) => every_member_listed = false,
                }
            }
            let pooled: BTreeSet<&String> = ready.iter().collect();
            for object in &held {
                if !pooled.contains(object) && !claimed.contains(object) {
                    destroy(cluster, object);
                    reconciled.unrecorded_destroyed.push(object.clone());
                }
            }
            for object in &ready {
                // A claim removes the record in the batch that names the object in a key:
                // both at once never happens, but if it did the key keeps it.
                let lost = every_member_listed && !held.contains(object);
                if lost || claimed.contains(object) {
                    self.drop_record(cluster.name(), object)?;
                    reconciled.lost_records.push(object.clone());
                }
            }
        }
        if load {
            let size = state.size.load(Ordering::SeqCst);
            while ready.len() > size {
                let Some(object) = ready.pop() else { break };
                self.drop_record(cluster.name(), &object)?;
                destroy(cluster, &object);
                reconciled.surplus_destroyed.push(object);
            }
            *lock(&state.ready) = ready.into_iter().collect();
        }
        if !reconciled.is_empty() {
            tracing::info!(
                unrecorded = reconciled.unrecorded_destroyed.len(),
                lost = reconciled.lost_records.len(),
                surplus = reconciled.surplus_destroyed.len(),
                "material pool reconciled"
            );
            pool_event(
                &self.audit,
                &self.scope,
                self.now(),
                "MaterialPoolReduced",
                serde_json::json!({
                    "cluster": cluster.name(),
                    "unrecordedDestroyed": reconciled.unrecorded_destroyed.len(),
                    "lostRecords": reconciled.lost_records.len(),
                    "surplusDestroyed": reconciled.surplus_destroyed.len(),
                }),
            );
        }
        Ok(reconciled)
    }

    /// Takes a ready pool object for new material in `cluster`, proven on every healthy
    /// member; `None` when the pool is empty or serves another cluster (the caller then
    /// generates). Objects that fail their proof for another reason than a lost quorum are
    /// dropped from the pool and the next one is tried.
    pub(super) fn take_pooled(&self, cluster: &Cluster) -> Option<String> {
        let state = &self.material_pool.state;
        if state.size.load(Ordering::SeqCst) == 0 || *lock(&state.cluster) != cluster.name() {
            return None;
        }
        loop {
            let Some(object) = lock(&state.ready).pop_front() else {
                state.fallbacks.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            let material = MaterialId::pool_object(object.clone());
            match cluster.prove_on_every_member(&material, POOL_LABEL, MaterialSpec::AES) {
                Ok(()) => {
                    crash_point!("create-key:pool-object-taken");
                    return Some(object);
                }
                Err(error @ ClusterError::CannotWriteKeys { .. }) => {
                    tracing::debug!(%error, "pool object not claimable now");
                    lock(&state.ready).push_front(object);
                    return None;
                }
                Err(error) => {
                    tracing::warn!(%material, %error, "pool object failed its proof; dropped");
                    let _work = lock(&state.hsm_work);
                    if self.drop_record(cluster.name(), &object).is_ok() {
                        destroy(cluster, &object);
                    }
                }
            }
        }
    }

    /// Adds to `batch` the claim of `object`: its pool record must still be there, and goes.
    pub(super) fn claim_in(&self, batch: &mut Batch, cluster: &str, object: &str) {
        let key = pool_key(cluster, object);
        batch
            .expect(Table::MaterialPool, &key, Precondition::ExpectPresent)
            .delete(Table::MaterialPool, &key);
    }

    /// After a claim's batch: counts it, or, when the batch did not apply, puts `object`
    /// back if its record is still there (a store failure may have applied the batch: then
    /// the object stays out of the queue until start-up reconciliation settles it).
    pub(super) fn claim_settled(
        &self,
        cluster: &str,
        object: String,
        outcome: &Result<(), KmsError>,
    ) {
        let state = &self.material_pool.state;
        match outcome {
            Ok(()) => {
                state.claimed.fetch_add(1, Ordering::Relaxed);
            }
            Err(KmsError::KmsInternal(_)) => {}
            Err(_) => {
                if let Ok(Some(_)) = self
                    .store
                    .get(Table::MaterialPool, &pool_key(cluster, &object))
                {
                    lock(&state.ready).push_front(object);
                }
            }
        }
    }

    /// Removes the pool record of `object` (before its objects are destroyed: an object
    /// without a record is destroyed by reconciliation, never handed out).
    fn drop_record(&self, cluster: &str, object: &str) -> Result<(), KmsError> {
        let mut batch = Batch::new();
        batch.delete(Table::MaterialPool, &pool_key(cluster, object));
        self.store
            .commit(batch)
            .map_err(internal)?
            .map_err(|c| KmsError::KmsInternal(c.to_string()))
    }
}

/// The pool objects a key's material versions are held by.
fn claimed_objects(key: &KeyRecord) -> impl Iterator<Item = String> + '_ {
    key.materials
        .iter()
        .filter_map(|material| material.pool_object.clone())
}

/// The pool records of `cluster`, in key order.
fn pool_records(store: &dyn MetadataStore, cluster: &str) -> Result<Vec<PoolRecord>, KmsError> {
    let prefix = pool_key(cluster, "");
    store
        .scan(Table::MaterialPool, &prefix, None, usize::MAX)
        .map_err(internal)?
        .iter()
        .map(|(_, found)| decode(&found.payload))
        .collect()
}

/// The ready pool objects of `cluster` as material versions, for catching up members.
pub(super) fn pooled_materials(
    store: &dyn MetadataStore,
    cluster: &str,
) -> Result<Vec<MaterialId>, KmsError> {
    Ok(pool_records(store, cluster)?
        .into_iter()
        .filter(|record| record.ready)
        .map(|record| MaterialId::pool_object(record.object))
        .collect())
}

/// The store key of a pool record.
fn pool_key(cluster: &str, object: &str) -> Vec<u8> {
    format!("{cluster}/{object}").into_bytes()
}

/// Destroys a pool object on every member; a member that is down keeps its copy until a
/// later reconciliation (no record names it, so it is never handed out or copied back).
/// The store's pool owner tag; drawn and kept when `create` and there is none yet (two
/// instances drawing at once keep the first one committed).
fn pool_owner(store: &dyn MetadataStore, create: bool) -> Result<Option<String>, KmsError> {
    loop {
        if let Some(found) = store.get(Table::Meta, OWNER_KEY).map_err(internal)? {
            let owner = String::from_utf8(found.payload)
                .map_err(|_| KmsError::KmsInternal("the pool owner tag is not text".into()))?;
            return Ok(Some(owner));
        }
        if !create {
            return Ok(None);
        }
        let owner = format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0);
        let mut batch = Batch::new();
        batch.expect(Table::Meta, OWNER_KEY, Precondition::ExpectAbsent);
        batch.put(Table::Meta, OWNER_KEY, owner.clone().into_bytes());
        if store.commit(batch).map_err(internal)?.is_ok() {
            return Ok(Some(owner));
        }
    }
}

/// The `CKA_ID` prefix of the pool objects of the store whose owner tag is `owner`.
fn owner_prefix(owner: &str) -> String {
    format!("{POOL_PREFIX}s{owner}-")
}

fn destroy(cluster: &Cluster, object: &str) {
    let report = cluster.destroy_key(&MaterialId::pool_object(object));
    for error in report.pending {
        tracing::warn!(object, %error, "pool object left on a member; a later reconciliation destroys it");
    }
}

fn pool_event(
    audit: &AuditLog,
    scope: &Scope,
    now_millis: i64,
    event_name: &str,
    details: serde_json::Value,
) {
    let event = crate::audit::event::service_event(
        scope.region(),
        scope.account_id(),
        now_millis,
        event_name,
        &[],
        details,
    );
    if let Err(error) = audit.append(&event, true) {
        tracing::error!(%error, "audit event lost");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The background refiller: what it needs of the key store.
struct Refiller {
    state: Arc<PoolState>,
    cluster: Arc<Cluster>,
    store: Arc<dyn MetadataStore>,
    audit: Arc<AuditLog>,
    scope: Scope,
}

impl Refiller {
    fn run(self) {
        let mut calls = self.state.calls.load(Ordering::Relaxed);
        let mut pause = IDLE_TICK;
        while !self.state.wait(pause) {
            pause = IDLE_TICK;
            let (idle, now) = self.idle_since(calls);
            calls = now;
            let size = self.state.size.load(Ordering::SeqCst);
            if !idle || lock(&self.state.ready).len() >= size {
                continue;
            }
            let mut made = 0usize;
            let failure = loop {
                if lock(&self.state.ready).len() >= size || self.state.is_stopped() {
                    break None;
                }
                match self.make_one() {
                    Ok(()) => made += 1,
                    Err(error) => break Some(error),
                }
                let (idle, now) = self.idle_since(calls);
                calls = now;
                if !idle {
                    break None;
                }
            };
            if let Some(error) = failure {
                tracing::warn!(%error, "material pool refill failed; retrying later");
                pause = FAILURE_BACKOFF;
            }
            if made > 0 {
                pool_event(
                    &self.audit,
                    &self.scope,
                    SystemClock.now_millis(),
                    "MaterialPoolRefilled",
                    serde_json::json!({
                        "cluster": self.cluster.name(),
                        "added": made,
                        "ready": lock(&self.state.ready).len(),
                        "size": size,
                    }),
                );
            }
        }
    }

    /// Whether no call began since the count `calls` and no member has a call in flight;
    /// with the count now.
    fn idle_since(&self, calls: u64) -> (bool, u64) {
        let now = self.state.calls.load(Ordering::Relaxed);
        let quiet = self
            .cluster
            .members()
            .iter()
            .all(|member| member.in_flight() == 0);
        (now == calls && quiet, now)
    }

    /// Records one object as being made, generates, replicates and proves it, then records
    /// it as ready. When generation fails, or the record cannot be finished, the objects and
    /// the record go again (a crash leaves the record unfinished, for start-up to clear).
    fn make_one(&self) -> Result<(), String> {
        let _work = lock(&self.state.hsm_work);
        let owner = pool_owner(self.store.as_ref(), true)
            .map_err(|error| error.to_string())?
            .ok_or("the pool's owner tag was not kept")?;
        let object = format!("{}{}", owner_prefix(&owner), uuid::Uuid::new_v4());
        let mut record = PoolRecord {
            cluster: self.cluster.name().to_owned(),
            object: object.clone(),
            created: SystemClock.now_millis(),
            ready: false,
        };
        self.put(&record).map_err(|error| error.to_string())?;
        let material = MaterialId::pool_object(object.clone());
        let made = self
            .cluster
            .create_key(&material, POOL_LABEL)
            .map_err(|error| error.to_string());
        crash_point!("material-pool:after-hsm");
        record.ready = true;
        let recorded = made.and_then(|()| self.put(&record).map_err(|error| error.to_string()));
        match recorded {
            Ok(()) => {
                lock(&self.state.ready).push_back(object);
                Ok(())
            }
            Err(error) => {
                destroy(&self.cluster, &object);
                let mut batch = Batch::new();
                batch.delete(Table::MaterialPool, &pool_key(self.cluster.name(), &object));
                if let Err(failure) = self.store.commit(batch) {
                    tracing::warn!(%failure, "unfinished pool record left for start-up to clear");
                }
                Err(error)
            }
        }
    }

    fn put(&self, record: &PoolRecord) -> Result<(), KmsError> {
        let mut batch = Batch::new();
        batch.put(
            Table::MaterialPool,
            &pool_key(&record.cluster, &record.object),
            encode(record)?,
        );
        self.store
            .commit(batch)
            .map_err(internal)?
            .map_err(|c| KmsError::KmsInternal(c.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_keys_group_by_cluster_without_prefix_collisions() {
        let key = pool_key("local", "hsm-kms-pool-1");
        assert_eq!(key, b"local/hsm-kms-pool-1");
        // `local2`'s records do not start with `local/`.
        assert!(!pool_key("local2", "x").starts_with(&pool_key("local", "")));
    }

    #[test]
    fn pool_object_ids_are_their_own_names() {
        let material = MaterialId::pool_object("hsm-kms-pool-abc");
        assert_eq!(material.cka_id(), b"hsm-kms-pool-abc");
        assert_eq!(material.to_string(), "hsm-kms-pool-abc");
        let claimed = MaterialId::pooled("k1", 3, "hsm-kms-pool-abc");
        assert_eq!(claimed.cka_id(), b"hsm-kms-pool-abc");
        assert_eq!(claimed.to_string(), "k1/3");
        // A pool object's id is never read as some key's material version.
        assert_eq!(MaterialId::from_cka_id(b"hsm-kms-pool-abc"), None);
    }

    #[test]
    fn reconciled_is_empty_only_without_changes() {
        assert!(PoolReconciled::default().is_empty());
        let changed = PoolReconciled {
            surplus_destroyed: vec!["x".into()],
            ..PoolReconciled::default()
        };
        assert!(!changed.is_empty());
    }
}
