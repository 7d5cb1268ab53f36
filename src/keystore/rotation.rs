//! Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
//! RotateKeyOnDemand and ListKeyRotations. A rotation generates and replicates a new material
//! version inside the HSMs; new ciphertexts name it, old ones keep naming theirs, and every
//! version stays until the key is deleted. (AWS forbids rotation in CloudHSM key stores; our
//! HSM keys rotate.)

use std::cell::Cell;

use super::api::*;
use super::{Access, Caller, KeyStore, Naming, encode, limit};
use crate::audit::event::Call;
use crate::clock::{DAY_MILLIS, to_epoch_seconds};
use crate::error::KmsError;
use crate::keys::records::{KeyRecord, MaterialRecord, RotationSchedule, RotationType};
use crate::keys::state::{self, Operation};
use crate::store::{Precondition, Table};

/// Most on-demand rotations one key may have.
const ON_DEMAND_ROTATIONS_MAX: usize = 25;

impl KeyStore {
    /// EnableKeyRotation: RotationPeriodInDays 90–2560, default 365.
    pub fn enable_key_rotation(
        &self,
        caller: &Caller,
        request: EnableKeyRotationRequest,
    ) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::EnableKeyRotation);
        call.param("keyId", request.key_id.as_str());
        if let Some(days) = request.rotation_period_in_days {
            call.param("rotationPeriodInDays", days);
        }
        self.audited(caller, call, |call| {
            let days = request.rotation_period_in_days.unwrap_or(365);
            if !(90..=2560).contains(&days) {
                return Err(KmsError::constraint_violation(
                    "rotationPeriodInDays",
                    Some(&days.to_string()),
                    &[if days < 90 {
                        "Member must have value greater than or equal to 90"
                    } else {
                        "Member must have value less than or equal to 2560"
                    }],
                ));
            }
            let key = self.key_for(
                caller,
                call,
                Access::of(Operation::EnableKeyRotation),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            rotatable(&key)?;
            let now = self.now();
            self.update_key(&key.store_key(), |record, batch| {
                state::check(
                    Operation::EnableKeyRotation,
                    record.state,
                    record.arn_display(),
                )?;
                record.rotation = Some(RotationSchedule {
                    period_days: days as u32,
                    next_rotation: now + days * DAY_MILLIS,
                });
                self.sync_replicas_in(record, batch)
            })
        })
    }

    /// DisableKeyRotation.
    pub fn disable_key_rotation(
        &self,
        caller: &Caller,
        request: KeyIdRequest,
    ) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::DisableKeyRotation);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            let key = self.key_for(
                caller,
                call,
                Access::of(Operation::DisableKeyRotation),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            not_a_replica(&key)?;
            self.update_key(&key.store_key(), |record, batch| {
                state::check(
                    Operation::DisableKeyRotation,
                    record.state,
                    record.arn_display(),
                )?;
                record.rotation = None;
                self.sync_replicas_in(record, batch)
            })
        })
    }

    /// GetKeyRotationStatus.
    pub fn get_key_rotation_status(
        &self,
        caller: &Caller,
        request: KeyIdRequest,
    ) -> Result<GetKeyRotationStatusResponse, KmsError> {
        let mut call = Call::of(Operation::GetKeyRotationStatus);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            let key = self.key_for(
                caller,
                call,
                Access::of(Operation::GetKeyRotationStatus),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            Ok(GetKeyRotationStatusResponse {
                key_rotation_enabled: key.rotation.is_some(),
                key_id: key.arn(),
                rotation_period_in_days: key.rotation.as_ref().map(|r| r.period_days),
                next_rotation_date: key
                    .rotation
                    .as_ref()
                    .map(|r| to_epoch_seconds(r.next_rotation)),
                // AWS shows this only while an on-demand rotation is in progress; ours finish
                // before RotateKeyOnDemand returns (ListKeyRotations lists them).
                on_demand_rotation_start_date: None,
            })
        })
    }

    /// RotateKeyOnDemand: a new material version now (at most 25 per key).
    pub fn rotate_key_on_demand(
        &self,
        caller: &Caller,
        request: KeyIdRequest,
    ) -> Result<KeyIdResponse, KmsError> {
        let mut call = Call::of(Operation::RotateKeyOnDemand);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            let key = self.key_for(
                caller,
                call,
                Access::of(Operation::RotateKeyOnDemand),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            rotatable(&key)?;
            check_on_demand_limit(&key)?;
            self.rotate(&key, RotationType::OnDemand)?;
            Ok(KeyIdResponse { key_id: key.arn() })
        })
    }

    /// ListKeyRotations, oldest first.
    pub fn list_key_rotations(
        &self,
        caller: &Caller,
        request: ListKeyRotationsRequest,
    ) -> Result<ListKeyRotationsResponse, KmsError> {
        let mut call = Call::of(Operation::ListKeyRotations);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            let limit = limit(request.limit, 100)?;
            let key = self.key_for(
                caller,
                call,
                Access::of(Operation::ListKeyRotations),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            let after: u32 = match &request.marker {
                Some(marker) => marker
                    .parse()
                    .map_err(|_| KmsError::InvalidMarker(format!("Invalid marker: {marker}")))?,
                None => 0,
            };
            let mut rotated: Vec<&MaterialRecord> = key
                .materials
                .iter()
                .filter(|m| m.rotation_type.is_some() && m.version > after)
                .collect();
            let truncated = rotated.len() > limit;
            rotated.truncate(limit);
            Ok(ListKeyRotationsResponse {
                next_marker: truncated
                    .then(|| rotated.last().map(|m| m.version.to_string()))
                    .flatten(),
                rotations: rotated
                    .iter()
                    .map(|m| RotationEntry {
                        key_id: key.arn(),
                        rotation_date: to_epoch_seconds(m.created),
                        rotation_type: m
                            .rotation_type
                            .map(RotationType::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    })
                    .collect(),
                truncated,
            })
        })
    }

    /// Adds a new material version to `key`. The material is generated and replicated in the
    /// HSMs without the write lock, so other writes go on meanwhile; then, under the lock, the
    /// key is re-read and the version is recorded at the revision read only if the key may
    /// still rotate and has no newer version. Otherwise the new material is destroyed again
    /// (see [`KeyStore::create_material`]), a multi-Region primary's in its replicas'
    /// clusters too.
    ///
    /// The new version is past every recorded one and past every version an interrupted
    /// creation may have left in the HSMs (its intent is still stored): a version number is
    /// never used for two HSM objects, so versions may skip numbers.
    pub(super) fn rotate(&self, key: &KeyRecord, kind: RotationType) -> Result<u32, KmsError> {
        let version = key
            .current_version()
            .max(self.highest_intended_version(&key.key_id)?)
            + 1;
        let label = key.arn();
        let spec = key.material_spec()?;
        let copied_to_replicas = Cell::new(false);
        let make = |cluster: &crate::cluster::Cluster, material: &crate::cluster::MaterialId| {
            cluster.create_material(material, &label, spec)?;
            // A multi-Region primary's new version reaches every replica's cluster before
            // any record names it.
            if let Err(error) = self.copy_to_replicas(key, version) {
                cluster.destroy_key(material);
                return Err(crate::cluster::ClusterError::Link(
                    error.message().to_owned(),
                ));
            }
            copied_to_replicas.set(true);
            Ok(())
        };
        let recorded = self.create_material_with(key, version, make, |batch| {
            let (mut record, revision) = self
                .stored_key(&key.store_key())?
                .ok_or_else(|| KmsError::NotFound(format!("Key '{}' does not exist", key.arn())))?;
            state::check(
                Operation::RotateKeyOnDemand,
                record.state,
                record.arn_display(),
            )?;
            if record.current_version() >= version {
                return Err(KmsError::Conflict(format!(
                    "A rotation of {} is already in progress",
                    key.arn()
                )));
            }
            if kind == RotationType::OnDemand {
                check_on_demand_limit(&record)?;
            }
            let now = self.now();
            record.materials.push(MaterialRecord {
                version,
                created: now,
                rotation_type: Some(kind),
                pool_object: None,
            });
            // An on-demand rotation leaves the automatic schedule where it was (as AWS does).
            if kind == RotationType::Automatic
                && let Some(schedule) = record.rotation.as_mut()
            {
                schedule.next_rotation = now + i64::from(schedule.period_days) * DAY_MILLIS;
            }
            batch.put_if(
                Table::Keys,
                record.store_key().as_bytes(),
                Precondition::ExpectRevision(revision),
                encode(&record)?,
            );
            self.sync_replicas_in(&record, batch)
        });
        // Refused after the HSM work, the version is recorded nowhere: the primary's cluster
        // has discarded it, and so must the replicas'. After a store failure the batch may
        // have been applied, so every copy stays, as in the primary's cluster.
        if let Err(refused) = &recorded
            && copied_to_replicas.get()
            && !matches!(refused, KmsError::KmsInternal(_))
        {
            self.discard_replica_copies(key, version);
        }
        recorded.map(|()| version)
    }
}

/// `LimitExceededException` once `key` has had its 25 on-demand rotations.
fn check_on_demand_limit(key: &KeyRecord) -> Result<(), KmsError> {
    if key.on_demand_rotations() >= ON_DEMAND_ROTATIONS_MAX {
        return Err(KmsError::LimitExceeded(format!(
            "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {}",
            key.arn()
        )));
    }
    Ok(())
}

/// `UnsupportedOperationException` for a multi-Region replica key: rotation is a shared
/// property, set on the primary key only.
fn not_a_replica(key: &KeyRecord) -> Result<(), KmsError> {
    if key.is_replica() {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} is a multi-Region replica key: its rotation follows its primary key's.",
            key.arn()
        )));
    }
    Ok(())
}

/// `UnsupportedOperationException` for keys AWS never rotates: asymmetric and HMAC keys,
/// and multi-Region replica keys (which rotate with their primary).
fn rotatable(key: &KeyRecord) -> Result<(), KmsError> {
    not_a_replica(key)?;
    if super::signing::is_symmetric_encryption(key) {
        Ok(())
    } else {
        Err(KmsError::UnsupportedOperation(format!(
            "{} has key spec {}: only symmetric encryption keys support key rotation.",
            key.arn(),
            key.key_spec
        )))
    }
}
