//! Background work and reconciliation: carrying out scheduled deletions when their date has
//! passed (marking the key, then destroying the material on every HSM member, verified, then
//! the metadata and aliases), automatic rotations that are due, expiring imported key
//! material (see `import`), catching up members that lack material, and comparing the HSMs'
//! key objects with the metadata. Inconsistencies are reported, never silently deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::regions::region_member_name;
use super::{KeyStore, decode, encode, internal};
use crate::cluster::{Cluster, MaterialId, POOL_PREFIX};
use crate::error::KmsError;
use crate::hsm::{HsmError, KeyObject};
use crate::keys::records::{IntentRecord, KeyRecord, RotationType};
use crate::keys::state::KeyState;
use crate::store::{Batch, Precondition, Table};

/// On a store several instances share, how old another instance's key-material creation
/// intent must be before it is reported as interrupted: younger, it is a call in progress
/// there (the same ten minutes after which an unfinished replica is taken for abandoned).
const FOREIGN_CREATION_GRACE_MILLIS: i64 = 10 * 60 * 1000;

/// What one attempt at a due deletion came to.
pub(super) enum Deletion {
    /// The key is gone or no longer due (its deletion was cancelled first).
    NotDue,
    /// The material is destroyed everywhere; the record and aliases are removed.
    Done,
    /// The material still has to be destroyed on these members.
    Pending(Vec<String>),
}

/// Whether `key` is pending deletion and its date has come.
fn deletion_due(key: &KeyRecord, now: i64) -> bool {
    key.state == KeyState::PendingDeletion && key.deletion_date.is_some_and(|date| date <= now)
}

/// A mismatch between the HSMs and the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Inconsistency {
    /// Key material creation began but its key was never recorded (a crash in between):
    /// the material may exist in HSMs although no caller can see a key for it.
    InterruptedCreate {
        /// The material version (`<key id>/<version>`).
        material: String,
    },
    /// An HSM object that no key record names.
    OrphanMaterial {
        /// The member holding it.
        member: String,
        /// The object's `CKA_ID`, as text.
        material: String,
    },
    /// A key record whose material is missing on a healthy member.
    MissingMaterial {
        /// The member lacking it.
        member: String,
        /// The material version.
        material: String,
    },
    /// A deleted key whose material could not yet be destroyed on some members.
    DestructionPending {
        /// The deleted key.
        key_arn: String,
        /// Members still holding its material.
        members: Vec<String>,
    },
    /// A member whose key objects could not be listed.
    Unlisted {
        /// The member.
        member: String,
        /// Why listing failed.
        error: String,
    },
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inconsistency::InterruptedCreate { material } => {
                write!(
                    f,
                    "interrupted creation of key material {material}: HSM objects may exist without a key"
                )
            }
            Inconsistency::OrphanMaterial { member, material } => {
                write!(
                    f,
                    "HSM member {member} holds key material {material} that no key record names"
                )
            }
            Inconsistency::MissingMaterial { member, material } => {
                write!(
                    f,
                    "key material {material} is missing on HSM member {member}"
                )
            }
            Inconsistency::DestructionPending { key_arn, members } => {
                write!(
                    f,
                    "deletion of {key_arn} still has to destroy its material on {}",
                    members.join(", ")
                )
            }
            Inconsistency::Unlisted { member, error } => {
                write!(f, "HSM member {member} could not be listed: {error}")
            }
        }
    }
}

/// What one maintenance run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaintenanceReport {
    /// ARNs of keys whose deletion was carried out.
    pub deleted: Vec<String>,
    /// ARNs of keys rotated automatically.
    pub rotated: Vec<String>,
    /// ARNs of multi-Region primary keys whose last replica is gone: their waiting period
    /// (PendingDeletion) began.
    pub deletion_started: Vec<String>,
    /// ARNs of multi-Region replicas an interrupted ReplicateKey had left `Creating`, now
    /// finished.
    pub replicas_finished: Vec<String>,
    /// ARNs of EXTERNAL keys whose imported material expired and was deleted.
    pub expired_key_material: Vec<String>,
    /// Everything found inconsistent (including deletions still pending on members).
    pub inconsistencies: Vec<Inconsistency>,
    /// Keys whose maintenance failed, with the reason.
    pub failures: Vec<String>,
    /// Members that lacked material: what was copied onto them and what could not be.
    pub caught_up: Vec<super::CaughtUp>,
    /// What reconciling the material pool with the HSMs did.
    pub material_pool: super::PoolReconciled,
}

impl KeyStore {
    /// Runs due deletions and rotations once, then reconciles HSMs against metadata.
    pub fn run_maintenance(&self) -> Result<MaintenanceReport, KmsError> {
        self.trail_probe()?;
        let now = self.now();
        let mut report = MaintenanceReport::default();
        for (cluster, error) in self.reopen_waiting_clusters() {
            report.failures.push(format!(
                "the HSM cluster {cluster} of a Region still cannot be opened: {error}"
            ));
        }
        for key in self.all_keys()? {
            let due_deletion = key.destruction_started || deletion_due(&key, now);
            let due_rotation = key.state == KeyState::Enabled
                && !key.is_replica()
                && key
                    .rotation
                    .as_ref()
                    .is_some_and(|r| r.next_rotation <= now);
            if due_deletion {
                match self.delete_key_now(&key.store_key()) {
                    Ok(Deletion::NotDue) => {}
                    Ok(Deletion::Done) => {
                        self.service_event(
                            &key,
                            "DeleteKey",
                            serde_json::json!({
                                "keyId": key.key_id,
                                "backingKeysDeletionStatus": "DELETED",
                            }),
                        );
                        report.deleted.push(key.arn());
                    }
                    Ok(Deletion::Pending(pending)) => {
                        report
                            .inconsistencies
                            .push(Inconsistency::DestructionPending {
                                key_arn: key.arn(),
                                members: pending,
                            })
                    }
                    Err(error) => report.failures.push(format!("{}: {error}", key.arn())),
                }
            } else if due_rotation {
                match self.rotate(&key, RotationType::Automatic) {
                    Ok(version) => {
                        self.service_event(
                            &key,
                            "RotateKey",
                            serde_json::json!({
                                "keyId": key.key_id,
                                "rotationType": "AUTOMATIC",
                                "materialVersion": version,
                            }),
                        );
                        report.rotated.push(key.arn());
                    }
                    Err(error) => report.failures.push(format!("{}: {error}", key.arn())),
                }
            }
        }
        report.deletion_started = self.start_waiting_primary_deletions()?;
        let (finished, failures) = self.finish_abandoned_replicas()?;
        report.replicas_finished = finished;
        report.failures.extend(failures);
        let (expired, failures) = self.expire_imported_material()?;
        report.expired_key_material = expired;
        report.failures.extend(failures);
        report.material_pool = self.reconcile_material_pool(false)?;
        report.caught_up = self.catch_up_members()?;
        report.inconsistencies.extend(self.reconcile()?);
        Ok(report)
    }

    /// Carries out the deletion of key `key_id` if it is (still) due.
    ///
    /// 1. Under the write lock, re-read the key; unless it is marked already (a deletion
    ///    resumed after a crash or a member that was down), go on only if it is still pending
    ///    deletion and due, and durably mark it `destruction_started` at the revision read. A
    ///    CancelKeyDeletion that won before the mark stops the deletion here; one that comes
    ///    after is refused.
    /// 2. Destroy every material version on every member (outside the lock).
    /// 3. Under the lock, if some members were unreachable, record them in
    ///    `destruction_pending` (a later run resumes); otherwise delete the key record,
    ///    expecting the revision marked in step 1, its aliases and its grants in one batch
    ///    (CreateGrant holds the same lock, so no grant is added meanwhile).
    pub(super) fn delete_key_now(&self, key_id: &str) -> Result<Deletion, KmsError> {
        let Some((key, marked, cluster)) = self.mark_destruction(key_id)? else {
            return Ok(Deletion::NotDue);
        };
        crash_point!("delete-key:after-mark");
        let mut pending = BTreeSet::new();
        // Imported material deleted while a member was away is destroyed with the rest.
        let owed = key
            .import
            .iter()
            .flat_map(|import| import.destruction_owed.iter().copied());
        // Another Region's copy of a multi-Region key in the same cluster shares the objects.
        let shared = self
            .other_copies(&key)?
            .iter()
            .any(|(_, copy, _)| copy.cluster == key.cluster);
        for version in key.materials.iter().map(|m| m.version).chain(owed) {
            if shared {
                break;
            }
            let report = cluster.destroy_key(&key.material(version));
            pending.extend(report.pending.into_iter().map(|error| error.member));
        }
        crash_point!("delete-key:after-hsm");
        let pending: Vec<String> = pending.into_iter().collect();
        let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = Batch::new();
        batch.expect(
            Table::Keys,
            key.store_key().as_bytes(),
            Precondition::ExpectRevision(marked),
        );
        if !pending.is_empty() {
            let mut record = key.clone();
            record.destruction_pending = pending.clone();
            batch.put(Table::Keys, key.store_key().as_bytes(), encode(&record)?);
            self.commit(batch, &key.store_key())?;
            return Ok(Deletion::Pending(pending));
        }
        let scope = key.scope().ok_or_else(|| {
            KmsError::KmsInternal(format!("key {} has an invalid scope", key.key_id))
        })?;
        batch.delete(Table::Keys, key.store_key().as_bytes());
        for alias in self.aliases_of(&scope, &key.key_id)? {
            super::aliases::delete_alias_in(&mut batch, &scope, &alias);
        }
        self.delete_grants_of(&key.store_key(), &mut batch)?;
        self.commit(batch, &key.store_key())?;
        Ok(Deletion::Done)
    }

    /// Multi-Region primary keys in PendingReplicaDeletion whose replicas are all deleted:
    /// each becomes PendingDeletion, its waiting period (the `PendingWindowInDays` its
    /// ScheduleKeyDeletion gave) beginning now, as AWS's does. Returns their ARNs.
    fn start_waiting_primary_deletions(&self) -> Result<Vec<String>, KmsError> {
        let now = self.now();
        let mut started = Vec::new();
        for key in self.all_keys()? {
            if key.state != KeyState::PendingReplicaDeletion || !self.replicas_of(&key)?.is_empty()
            {
                continue;
            }
            let began = self.update_key(&key.store_key(), |record, _| {
                if record.state != KeyState::PendingReplicaDeletion {
                    return Ok(false);
                }
                let days = i64::from(record.pending_window_days.unwrap_or(30));
                record.state = KeyState::PendingDeletion;
                record.deletion_date = Some(now + days * crate::clock::DAY_MILLIS);
                Ok(true)
            })?;
            if began {
                started.push(key.arn());
            }
        }
        Ok(started)
    }

    /// Step 1 of [`KeyStore::delete_key_now`]: the key marked as being destroyed, the
    /// revision of that mark and the cluster holding its material, or `None` when it is gone
    /// or no longer due. A key whose cluster is out of reach (a disconnected custom key
    /// store) is not marked, so its deletion can still be cancelled meanwhile.
    fn mark_destruction(
        &self,
        key_id: &str,
    ) -> Result<Option<(KeyRecord, u64, Arc<Cluster>)>, KmsError> {
        let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let Some((mut key, revision)) = self.stored_key(key_id)? else {
            return Ok(None);
        };
        if !key.destruction_started && !deletion_due(&key, self.now()) {
            return Ok(None);
        }
        let cluster = self.cluster_of(&key)?;
        if key.destruction_started {
            return Ok(Some((key, revision, cluster)));
        }
        key.destruction_started = true;
        let mut batch = Batch::new();
        batch.put_if(
            Table::Keys,
            key_id.as_bytes(),
            Precondition::ExpectRevision(revision),
            encode(&key)?,
        );
        self.commit(batch, key_id)?;
        // Every key write takes the lock held here, so this reads the mark just written.
        match self.stored_key(key_id)? {
            Some((stored, marked)) if stored.destruction_started => {
                Ok(Some((stored, marked, cluster)))
            }
            _ => Err(KmsError::KmsInternal(format!(
                "the deletion mark of key {key_id} did not persist"
            ))),
        }
    }

    /// Intents left by a crash between HSM work and its metadata. On a store other instances
    /// share, an intent this process did not write is another instance's creation in
    /// progress until it is [`FOREIGN_CREATION_GRACE_MILLIS`] old (a creation takes seconds).
    pub(super) fn interrupted_intents(&self) -> Result<Vec<Inconsistency>, KmsError> {
        Ok(interrupted(&self.creation_intents()?))
    }

    /// The material every key-material creation intent on record names, each with whether
    /// it counts as interrupted (see [`KeyStore::interrupted_intents`]).
    fn creation_intents(&self) -> Result<Vec<(String, bool)>, KmsError> {
        let intents = self
            .store
            .scan(Table::Intents, b"", None, usize::MAX)
            .map_err(internal)?;
        let creating = self
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let shared = self.store.is_shared();
        let now = self.now();
        let mut found = Vec::new();
        for (_, record) in intents {
            let intent: IntentRecord = decode(&record.payload)?;
            let elsewhere_in_progress =
                shared && now - intent.created < FOREIGN_CREATION_GRACE_MILLIS;
            let material = MaterialId::new(intent.key_id, intent.version).to_string();
            let interrupted = !creating.contains(&material) && !elsewhere_in_progress;
            found.push((material, interrupted));
        }
        Ok(found)
    }

    /// Compares every member's key objects with the key records, in the default cluster and
    /// in each open Region's cluster (a member of a Region's cluster is named
    /// `<cluster>/<member>`). The HSMs are listed first: an object created meanwhile then has
    /// either its intent or its key record in place by the time those are read, so
    /// concurrent creations are never reported as orphans.
    pub fn reconcile(&self) -> Result<Vec<Inconsistency>, KmsError> {
        // No pool object is made or put back while the HSMs are compared with the records.
        let _pool_quiet = self.material_pool.hsm_work();
        let mut clusters = vec![self.cluster.clone()];
        clusters.extend(self.region_clusters());
        let listed: Vec<_> = clusters
            .iter()
            .map(|cluster| cluster.key_objects())
            .collect();
        let intents = self.creation_intents()?;
        let mut found = interrupted(&intents);
        // Material named by an intent (interrupted, or being created right now here or by
        // another instance) is accounted for.
        let mut accounted: BTreeSet<String> =
            intents.into_iter().map(|(material, _)| material).collect();
        accounted.extend(
            self.creating
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        // The pools before the keys: a claim moves an object from the pool to a key record
        // in one batch, so read in this order every claimed object is in one of them.
        let pools = clusters
            .iter()
            .map(|cluster| self.pooled_objects(cluster))
            .collect::<Result<Vec<_>, _>>()?;
        let all_keys = self.all_keys()?;
        for ((cluster, listed), pooled) in clusters.iter().zip(listed).zip(pools) {
            let keys: BTreeMap<&str, &KeyRecord> = all_keys
                .iter()
                .filter(|k| k.cluster == cluster.name())
                .map(|k| (k.key_id.as_str(), k))
                .collect();
            let qualified = |member: &str| {
                if cluster.name() == self.cluster.name() {
                    member.to_owned()
                } else {
                    region_member_name(cluster.name(), member)
                }
            };
            KeyStore::reconcile_cluster(listed, &pooled, &keys, &accounted, &qualified, &mut found);
            for key in keys.values().filter(|k| !k.destruction_pending.is_empty()) {
                found.push(Inconsistency::DestructionPending {
                    key_arn: key.arn(),
                    members: key
                        .destruction_pending
                        .iter()
                        .map(|m| qualified(m))
                        .collect(),
                });
            }
        }
        Ok(found)
    }

    /// One cluster's part of [`KeyStore::reconcile`]: its members' objects (`listed`) against
    /// its ready pool objects and the records of its keys.
    fn reconcile_cluster(
        listed: Vec<(String, Result<Vec<KeyObject>, HsmError>)>,
        pooled: &BTreeSet<Vec<u8>>,
        keys: &BTreeMap<&str, &KeyRecord>,
        accounted: &BTreeSet<String>,
        qualified: &dyn Fn(&str) -> String,
        found: &mut Vec<Inconsistency>,
    ) {
        // Material held under a pool object's `CKA_ID`, by that id.
        let claimed: BTreeMap<Vec<u8>, String> = keys
            .values()
            .flat_map(|key| key.materials.iter().map(|m| key.material(m.version)))
            .filter(|material| material.object.is_some())
            .map(|material| (material.cka_id(), material.to_string()))
            .collect();
        for (member, objects) in listed {
            let objects = match objects {
                Ok(objects) => objects,
                Err(error) => {
                    found.push(Inconsistency::Unlisted {
                        member: qualified(&member),
                        error: error.failure.to_string(),
                    });
                    continue;
                }
            };
            let mut present = BTreeSet::new();
            for object in objects {
                // Import wrapping keys are no key material (maintenance destroys expired ones).
                if object
                    .id
                    .starts_with(crate::hsm::import::WRAPPING_KEY_PREFIX.as_bytes())
                {
                    continue;
                }
                if object.id.starts_with(POOL_PREFIX.as_bytes()) {
                    if let Some(name) = claimed.get(&object.id) {
                        present.insert(name.clone());
                    } else if !pooled.contains(&object.id) {
                        found.push(Inconsistency::OrphanMaterial {
                            member: qualified(&member),
                            material: String::from_utf8_lossy(&object.id).into_owned(),
                        });
                    }
                    continue;
                }
                let material = MaterialId::from_cka_id(&object.id);
                let known = material.as_ref().is_some_and(|m| {
                    keys.get(m.key_id.as_str()).is_some_and(|k| {
                        k.materials.iter().any(|v| v.version == m.version)
                            || k.import
                                .as_ref()
                                .is_some_and(|import| import.destruction_owed.contains(&m.version))
                    })
                });
                let name = material
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&object.id).into_owned());
                let internal = material.as_ref().is_some_and(|m| {
                    m.key_id
                        .starts_with(crate::cluster::internal::INTERNAL_PREFIX)
                });
                if known {
                    present.insert(name);
                } else if internal {
                    continue;
                } else if !accounted.contains(&name) {
                    found.push(Inconsistency::OrphanMaterial {
                        member: qualified(&member),
                        material: name,
                    });
                }
            }
            for key in keys.values() {
                for version in &key.materials {
                    let name = key.material(version.version).to_string();
                    if !present.contains(&name) && !key.destruction_pending.contains(&member) {
                        found.push(Inconsistency::MissingMaterial {
                            member: qualified(&member),
                            material: name,
                        });
                    }
                }
            }
        }
    }
}

/// The interrupted creations among `intents` (from [`KeyStore::creation_intents`]).
fn interrupted(intents: &[(String, bool)]) -> Vec<Inconsistency> {
    intents
        .iter()
        .filter(|(_, interrupted)| *interrupted)
        .map(|(material, _)| Inconsistency::InterruptedCreate {
            material: material.clone(),
        })
        .collect()
}
