//! Multi-Region keys: ReplicateKey, UpdatePrimaryRegion, and keeping the copies of a
//! multi-Region key in step. Every copy (the primary and each replica) has its own record,
//! stored under `<mrk id>/<region>` (see [`store_key`]), with the same key id, key spec,
//! usage, origin, material versions and rotation schedule (the shared properties, always
//! written from the primary); state, policy, aliases, tags, description and grants are each
//! copy's own. Material reaches a Region served by another cluster only through
//! [`Cluster::copy_from_linked`] (wrapped under the clusters' link key inside the HSMs);
//! Regions served by one cluster share its HSM objects, which are destroyed only with the
//! last copy there.

use std::sync::Arc;

use super::api::*;
use super::lifecycle::{InFlight, check_description, metadata, validate_tags};
use super::{Access, Caller, KeyStore, Naming, cluster_error, decode, encode, internal};
use crate::audit::event::Call;
use crate::cluster::Cluster;
use crate::error::KmsError;
use crate::keys::records::{ImportRecord, KeyRecord, multi_region_prefix, store_key};
use crate::keys::state::{self, KeyState, Operation};
use crate::policy::{default_key_policy, keys, parse_key_policy};
use crate::store::{Batch, Precondition, Table};

/// How long a replica may stay `Creating` before maintenance takes it for the leftover of an
/// interrupted ReplicateKey and finishes it.
const CREATING_ABANDONED_AFTER_MILLIS: i64 = 10 * 60 * 1000;

/// The in-flight marker of the replica stored under `key` (see [`InFlight`]).
fn creating_marker(key: &str) -> String {
    format!("replica:{key}")
}

/// AWS's `RegionType` pattern: `^([a-z]+-){2,3}\d+$`.
fn is_region_id(region: &str) -> bool {
    let Some((words, number)) = region.rsplit_once('-') else {
        return false;
    };
    let words: Vec<&str> = words.split('-').collect();
    (2..=3).contains(&words.len())
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && region.len() <= 32
}

/// Checks a Region parameter (`replicaRegion`, `primaryRegion`) against AWS's model.
fn check_region_param(param: &str, region: &str) -> Result<(), KmsError> {
    if is_region_id(region) {
        return Ok(());
    }
    Err(KmsError::constraint_violation(
        param,
        Some(region),
        &[if region.is_empty() {
            "Member must have length greater than or equal to 1"
        } else if region.len() > 32 {
            "Member must have length less than or equal to 32"
        } else {
            "Member must satisfy regular expression pattern: ^([a-z]+-){2,3}\\d+$"
        }],
    ))
}

/// `UnsupportedOperationException` unless `key` is a multi-Region primary key.
fn require_primary(key: &KeyRecord) -> Result<(), KmsError> {
    if key.multi_region.is_none() {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} is not a multi-Region key.",
            key.arn()
        )));
    }
    if !key.is_primary() {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} is not a multi-Region primary key.",
            key.arn()
        )));
    }
    Ok(())
}

impl KeyStore {
    /// The prologue of ReplicateKey and UpdatePrimaryRegion on `key_id`: the key resolved
    /// and authorized with the Region the request names as its condition key
    /// (`kms:ReplicaRegion`, `kms:PrimaryRegion`), its state checked, and required to be a
    /// multi-Region primary key.
    fn primary_for(
        &self,
        caller: &Caller,
        call: &mut Call,
        operation: Operation,
        (condition_key, region): (&'static str, &str),
        key_id: &str,
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let access = Access::of(operation).with(|mut context| {
            context.set(condition_key, region);
            context
        });
        let primary = self.key_for(caller, call, access, "keyId", key_id, Naming::KeyIdOrArn)?;
        require_primary(&primary)?;
        Ok(primary)
    }

    /// Every copy of the multi-Region key `key_id` (primary and replicas), by Region.
    pub(super) fn copies_of(&self, key_id: &str) -> Result<Vec<KeyRecord>, KmsError> {
        Ok(self
            .copies_with_revisions(key_id)?
            .into_iter()
            .map(|(_, copy, _)| copy)
            .collect())
    }

    /// Every copy of the multi-Region key `key_id`, with its store key and revision.
    fn copies_with_revisions(
        &self,
        key_id: &str,
    ) -> Result<Vec<(String, KeyRecord, u64)>, KmsError> {
        let prefix = multi_region_prefix(key_id);
        self.store
            .scan(Table::Keys, prefix.as_bytes(), None, usize::MAX)
            .map_err(internal)?
            .into_iter()
            .map(|(_, found)| {
                let copy: KeyRecord = decode(&found.payload)?;
                Ok((copy.store_key(), copy, found.revision))
            })
            .collect()
    }

    /// The other Regions' copies of the multi-Region key `key` is a copy of, with their store
    /// keys and revisions (none for a single-Region key).
    pub(super) fn other_copies(
        &self,
        key: &KeyRecord,
    ) -> Result<Vec<(String, KeyRecord, u64)>, KmsError> {
        if key.multi_region.is_none() {
            return Ok(Vec::new());
        }
        let mut copies = self.copies_with_revisions(&key.key_id)?;
        copies.retain(|(_, copy, _)| copy.region != key.region);
        Ok(copies)
    }

    /// The replicas of the multi-Region key `key` is a copy of (none for a single-Region
    /// key).
    pub(super) fn replicas_of(&self, key: &KeyRecord) -> Result<Vec<KeyRecord>, KmsError> {
        if key.multi_region.is_none() {
            return Ok(Vec::new());
        }
        Ok(self
            .copies_of(&key.key_id)?
            .into_iter()
            .filter(KeyRecord::is_replica)
            .collect())
    }

    /// AWS's KeyMetadata of `record`, with its MultiRegionConfiguration for a multi-Region
    /// key.
    pub(super) fn describe(&self, record: &KeyRecord) -> Result<KeyMetadata, KmsError> {
        let mut described = metadata(record);
        let Some(multi_region) = &record.multi_region else {
            return Ok(described);
        };
        let copies = self.copies_of(&record.key_id)?;
        let entry = |copy: &KeyRecord| MultiRegionKey {
            arn: copy.arn(),
            region: copy.region.clone(),
        };
        let primary = copies
            .iter()
            .find(|copy| copy.region == multi_region.primary_region)
            .map(entry)
            .unwrap_or_else(|| MultiRegionKey {
                arn: format!(
                    "arn:aws:kms:{}:{}:key/{}",
                    multi_region.primary_region, record.account_id, record.key_id
                ),
                region: multi_region.primary_region.clone(),
            });
        described.multi_region_configuration = Some(MultiRegionConfiguration {
            multi_region_key_type: if record.is_primary() {
                "PRIMARY"
            } else {
                "REPLICA"
            }
            .to_owned(),
            primary_key: primary,
            replica_keys: copies
                .iter()
                .filter(|c| c.is_replica())
                .map(entry)
                .collect(),
        });
        Ok(described)
    }

    /// Copies material versions `versions` of `from` into the cluster of `to` (another
    /// Region's copy of the same key), under the link key of the two clusters; nothing to do
    /// when one cluster serves both Regions. On failure the versions copied so far are
    /// destroyed again.
    fn copy_versions(
        &self,
        from: &KeyRecord,
        to: &KeyRecord,
        versions: &[u32],
    ) -> Result<(), KmsError> {
        let (source, target) = (self.cluster_of(from)?, self.cluster_of(to)?);
        if source.name() == target.name() {
            return Ok(());
        }
        let spec = to.material_spec()?;
        let label = to.arn();
        for (done, version) in versions.iter().enumerate() {
            let material = from.material(*version);
            if let Err(error) = target.copy_from_linked(&source, &material, &label, spec) {
                for copied in &versions[..done] {
                    target.destroy_key(&from.material(*copied));
                }
                return Err(link_error(error));
            }
        }
        Ok(())
    }

    /// Copies material version `version` of the primary `primary` (just made in its cluster)
    /// into the cluster of each of its replicas, for a rotation; undone everywhere on failure.
    pub(super) fn copy_to_replicas(
        &self,
        primary: &KeyRecord,
        version: u32,
    ) -> Result<(), KmsError> {
        let replicas = self.replicas_of(primary)?;
        let mut done: Vec<Arc<Cluster>> = Vec::new();
        for replica in &replicas {
            let target = self.cluster_of(replica)?;
            if done.iter().any(|cluster| cluster.name() == target.name()) {
                continue;
            }
            if let Err(error) = self.copy_versions(primary, replica, &[version]) {
                for cluster in &done {
                    cluster.destroy_key(&primary.material(version));
                }
                return Err(error);
            }
            done.push(target);
        }
        Ok(())
    }

    /// Destroys version `version` of the primary `primary` in its replicas' clusters again,
    /// after [`KeyStore::copy_to_replicas`] put it there and the rotation was then refused,
    /// so that the version is recorded nowhere (the primary's own cluster discards its copy
    /// itself). A copy that a member cannot destroy is logged and left.
    pub(super) fn discard_replica_copies(&self, primary: &KeyRecord, version: u32) {
        let material = primary.material(version);
        let discarded = self.cluster_of(primary).and_then(|own| {
            let mut visited = vec![own.name().to_owned()];
            for replica in self.replicas_of(primary)? {
                let target = self.cluster_of(&replica)?;
                if visited.iter().any(|name| name == target.name()) {
                    continue;
                }
                if !target.destroy_key(&material).complete() {
                    tracing::warn!(%material, cluster = target.name(), "a refused rotation's copy is left on some member of a replica's cluster");
                }
                visited.push(target.name().to_owned());
            }
            Ok(())
        });
        if let Err(error) = discarded {
            tracing::warn!(%material, %error, "a refused rotation's copies in the replicas' clusters are left");
        }
    }

    /// Writes the shared properties of the primary `primary` (material versions, rotation
    /// schedule) into every replica's record, in `batch`, expecting each at the revision read
    /// (committing the batch under the primary's store key forgets every copy's cached
    /// record).
    pub(super) fn sync_replicas_in(
        &self,
        primary: &KeyRecord,
        batch: &mut Batch,
    ) -> Result<(), KmsError> {
        for (key, mut replica, revision) in self.copies_with_revisions(&primary.key_id)? {
            if !replica.is_replica() {
                continue;
            }
            replica.materials = primary.materials.clone();
            replica.rotation = primary.rotation.clone();
            batch.put_if(
                Table::Keys,
                key.as_bytes(),
                Precondition::ExpectRevision(revision),
                encode(&replica)?,
            );
        }
        Ok(())
    }

    /// ReplicateKey: makes a replica of a multi-Region primary key in `ReplicaRegion`, in
    /// the cluster serving that Region, with the same key id and every material version.
    ///
    /// 1. The replica's record is written first, in state `Creating` (so a crash leaves a
    ///    visible trace, never unrecorded material).
    /// 2. Every material version is copied into the replica's cluster under the link key
    ///    (versions a rotation adds meanwhile too).
    /// 3. The record becomes `Enabled`. On failure the copies and the record are removed.
    pub fn replicate_key(
        &self,
        caller: &Caller,
        request: ReplicateKeyRequest,
    ) -> Result<ReplicateKeyResponse, KmsError> {
        let mut call = Call::of(Operation::ReplicateKey);
        call.param("keyId", request.key_id.as_str());
        call.param("replicaRegion", request.replica_region.as_str());
        self.audited(caller, call, |call| {
            check_region_param("replicaRegion", &request.replica_region)?;
            let description = request.description.clone().unwrap_or_default();
            check_description(&description)?;
            let primary = self.primary_for(
                caller,
                call,
                Operation::ReplicateKey,
                (keys::REPLICA_REGION, &request.replica_region),
                &request.key_id,
            )?;
            let region = request.replica_region.as_str();
            let replica_arn = format!(
                "arn:aws:kms:{region}:{}:key/{}",
                primary.account_id, primary.key_id
            );
            if region == primary.region
                || self
                    .stored_key(&store_key(&primary.key_id, region))?
                    .is_some()
            {
                return Err(KmsError::AlreadyExists(format!(
                    "{replica_arn} already exists"
                )));
            }
            if !self.serves_region(region) {
                return Err(KmsError::UnsupportedOperation(format!(
                    "{region} is not a Region this key store serves: it is not in [service] \
                     regions."
                )));
            }
            let imported = primary.origin == "EXTERNAL";
            if imported {
                self.check_own_cluster_for_imported(&primary, region)?;
            }
            self.authorize_without_key(caller, Operation::CreateKey, |context| context)?;
            let policy_text = request
                .policy
                .clone()
                .unwrap_or_else(|| default_key_policy(&primary.account_id));
            let policy = parse_key_policy(&policy_text)?;
            if request.bypass_policy_lockout_safety_check != Some(true) {
                self.check_lockout(caller, &replica_arn, &primary.account_id, &policy)?;
            }
            let tags = validate_tags(&request.tags, &Default::default())?;
            let mut replica = KeyRecord::clone(&primary);
            replica.region = region.to_owned();
            replica.cluster = self.region_cluster_name(region);
            replica.creation_date = self.now();
            replica.description = description;
            replica.state = KeyState::Creating;
            replica.deletion_date = None;
            replica.pending_window_days = None;
            replica.tags = tags;
            replica.destruction_pending = Vec::new();
            replica.destruction_started = false;
            replica.policy = Some(policy_text.clone());
            replica.parsed_policy = Default::default();
            replica.materials = Vec::new();
            if imported {
                // AWS copies no imported material: the replica waits for its own import of
                // the same material (the check value it keeps says which).
                replica.state = KeyState::PendingImport;
                replica.import = primary.import.as_ref().map(|import| ImportRecord {
                    check_value: import.check_value.clone(),
                    ..ImportRecord::default()
                });
            }
            let key = replica.store_key();
            let _in_flight = InFlight::new(self, creating_marker(&key))
                .ok_or_else(|| KmsError::AlreadyExists(format!("{replica_arn} already exists")))?;
            {
                let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
                let mut batch = Batch::new();
                batch.put_if(
                    Table::Keys,
                    key.as_bytes(),
                    Precondition::ExpectAbsent,
                    encode(&replica)?,
                );
                self.commit(batch, &key)?;
            }
            crash_point!("replicate-key:creating");
            let copied = if imported {
                Ok(replica)
            } else {
                self.fill_replica(&replica)
            };
            let replica = match copied {
                Ok(replica) => replica,
                Err(error) => {
                    let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
                    let mut batch = Batch::new();
                    batch.delete(Table::Keys, key.as_bytes());
                    if let Err(cleanup) = self.commit(batch, &key) {
                        // It stays in state Creating.
                        tracing::warn!(%cleanup, key, "a failed replica's record not removed");
                    }
                    return Err(error);
                }
            };
            let metadata = self.describe(&replica)?;
            call.response_elements = Some(serde_json::json!({
                "replicaKeyMetadata": metadata,
            }));
            Ok(ReplicateKeyResponse {
                replica_key_metadata: metadata,
                replica_policy: policy_text,
                replica_tags: replica
                    .tags
                    .iter()
                    .map(|(key, value)| Tag {
                        tag_key: key.clone(),
                        tag_value: value.clone(),
                    })
                    .collect(),
            })
        })
    }

    /// Refuses a replica of a key with imported material in `region` when that Region's
    /// cluster already holds another copy of the key: copies in one cluster share their HSM
    /// objects (see [`KeyStore::copy_versions`]), but each copy of an imported key imports,
    /// expires and deletes its material on its own, so each needs its own cluster.
    fn check_own_cluster_for_imported(
        &self,
        primary: &KeyRecord,
        region: &str,
    ) -> Result<(), KmsError> {
        let cluster = self.region_cluster_name(region);
        match self
            .copies_of(&primary.key_id)?
            .into_iter()
            .find(|copy| copy.cluster == cluster)
        {
            Some(copy) => Err(KmsError::UnsupportedOperation(format!(
                "{} has imported key material, which each Region's copy imports on its own: \
                 {region} is served by cluster {cluster}, which already holds the copy in {}.",
                primary.arn(),
                copy.region
            ))),
            None => Ok(()),
        }
    }

    /// Finishes the replicas an interrupted ReplicateKey left `Creating` (written more than
    /// ten minutes ago and not being created by this process): copies their material and
    /// enables them. Returns the ARNs finished and the failures.
    pub(super) fn finish_abandoned_replicas(&self) -> Result<(Vec<String>, Vec<String>), KmsError> {
        let now = self.now();
        let (mut finished, mut failures) = (Vec::new(), Vec::new());
        for key in self.all_keys()? {
            let abandoned = key.state == KeyState::Creating
                && key.is_replica()
                && now - key.creation_date > CREATING_ABANDONED_AFTER_MILLIS;
            if !abandoned {
                continue;
            }
            let Some(_in_flight) = InFlight::new(self, creating_marker(&key.store_key())) else {
                continue;
            };
            match self.fill_replica(&key) {
                Ok(_) => finished.push(key.arn()),
                Err(error) => failures.push(format!("{}: {}", key.arn(), error.message())),
            }
        }
        Ok((finished, failures))
    }

    /// Steps 2 and 3 of [`KeyStore::replicate_key`]: copies the primary's material versions
    /// into the replica's cluster until the replica holds every one the primary has, then
    /// records them and enables the replica in one write, expecting the primary unchanged.
    fn fill_replica(&self, creating: &KeyRecord) -> Result<KeyRecord, KmsError> {
        let primary_key = store_key(&creating.key_id, &primary_region(creating));
        let mut copied: Vec<u32> = Vec::new();
        loop {
            let (primary, primary_revision) = self
                .stored_key(&primary_key)?
                .ok_or_else(|| KmsError::NotFound(format!("Key '{primary_key}' does not exist")))?;
            let missing: Vec<u32> = primary
                .materials
                .iter()
                .map(|m| m.version)
                .filter(|v| !copied.contains(v))
                .collect();
            if let Err(error) = self.copy_versions(&primary, creating, &missing) {
                let target = self.cluster_of(creating)?;
                if target.name() != self.cluster_of(&primary)?.name() {
                    for version in &copied {
                        target.destroy_key(&primary.material(*version));
                    }
                }
                return Err(error);
            }
            copied.extend(missing);
            let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
            let Some((mut replica, revision)) = self.stored_key(&creating.store_key())? else {
                return Err(KmsError::KmsInternal(format!(
                    "the record of replica {} vanished while it was created",
                    creating.arn()
                )));
            };
            replica.materials = primary.materials.clone();
            replica.rotation = primary.rotation.clone();
            replica.state = KeyState::Enabled;
            let key = replica.store_key();
            let mut batch = Batch::new();
            batch
                .expect(
                    Table::Keys,
                    primary_key.as_bytes(),
                    Precondition::ExpectRevision(primary_revision),
                )
                .put_if(
                    Table::Keys,
                    key.as_bytes(),
                    Precondition::ExpectRevision(revision),
                    encode(&replica)?,
                );
            match self.commit(batch, &key) {
                Ok(()) => return Ok(replica),
                // The primary rotated meanwhile: copy the new version too.
                Err(KmsError::Conflict(_)) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// UpdatePrimaryRegion: makes the replica in `PrimaryRegion` the primary key and the
    /// current primary a replica, in one atomic write of every copy's record (so no copy is
    /// ever seen `Updating`, and no two primaries ever exist).
    pub fn update_primary_region(
        &self,
        caller: &Caller,
        request: UpdatePrimaryRegionRequest,
    ) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::UpdatePrimaryRegion);
        call.param("keyId", request.key_id.as_str());
        call.param("primaryRegion", request.primary_region.as_str());
        self.audited(caller, call, |call| {
            check_region_param("primaryRegion", &request.primary_region)?;
            let primary = self.primary_for(
                caller,
                call,
                Operation::UpdatePrimaryRegion,
                (keys::PRIMARY_REGION, &request.primary_region),
                &request.key_id,
            )?;
            let region = request.primary_region.as_str();
            if region == primary.region {
                return Ok(());
            }
            let new_primary_arn = format!(
                "arn:aws:kms:{region}:{}:key/{}",
                primary.account_id, primary.key_id
            );
            let Some((new_primary, _)) = self.stored_key(&store_key(&primary.key_id, region))?
            else {
                return Err(KmsError::NotFound(format!(
                    "Key '{new_primary_arn}' does not exist"
                )));
            };
            self.authorize(
                caller,
                &new_primary,
                None,
                Access::of(Operation::UpdatePrimaryRegion),
            )?;
            state::check(
                Operation::UpdatePrimaryRegion,
                new_primary.state,
                new_primary.arn_display(),
            )?;
            let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
            let mut batch = Batch::new();
            for (key, found) in self
                .store
                .scan(
                    Table::Keys,
                    multi_region_prefix(&primary.key_id).as_bytes(),
                    None,
                    usize::MAX,
                )
                .map_err(internal)?
            {
                let mut copy: KeyRecord = decode(&found.payload)?;
                if let Some(multi_region) = copy.multi_region.as_mut() {
                    multi_region.primary_region = region.to_owned();
                }
                batch.put_if(
                    Table::Keys,
                    &key,
                    Precondition::ExpectRevision(found.revision),
                    encode(&copy)?,
                );
            }
            self.commit(batch, &primary.store_key())
        })
    }
}

/// The primary Region a copy of a multi-Region key names.
fn primary_region(copy: &KeyRecord) -> String {
    copy.multi_region
        .as_ref()
        .map_or_else(|| copy.region.clone(), |mrk| mrk.primary_region.clone())
}

/// The KMS exception for a failed copy between clusters: clusters that are not linked are
/// `UnsupportedOperationException` (the replica Region cannot hold the key), anything else
/// as every cluster failure.
fn link_error(error: crate::cluster::ClusterError) -> KmsError {
    match error {
        crate::cluster::ClusterError::Link(reason) => KmsError::UnsupportedOperation(reason),
        other => cluster_error(other),
    }
}

#[cfg(test)]
mod tests {
    use super::is_region_id;

    #[test]
    fn region_ids_follow_aws_pattern() {
        for good in ["us-east-1", "eu-west-2", "us-gov-east-1", "ap-southeast-12"] {
            assert!(is_region_id(good), "{good}");
        }
        for bad in [
            "",
            "moon",
            "moon-1",
            "us-east",
            "US-east-1",
            "us-east-1a",
            "a-b-c-d-1",
            "us--1",
            "-us-east-1",
        ] {
            assert!(!is_region_id(bad), "{bad}");
        }
    }
}
