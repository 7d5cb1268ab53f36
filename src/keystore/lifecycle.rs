//! Key lifecycle: CreateKey, DescribeKey, ListKeys, EnableKey, DisableKey,
//! ScheduleKeyDeletion, CancelKeyDeletion, UpdateKeyDescription and the tag operations.

use std::collections::BTreeMap;

use super::api::*;
use super::{Access, Caller, KeyStore, Naming, cluster_error, encode, internal, limit};
use crate::audit::event::Call;
use crate::clock::{DAY_MILLIS, to_epoch_seconds};
use crate::cluster::{Cluster, MaterialId};
use crate::error::KmsError;
use crate::ids::KeyId;
use crate::keys::records::store_key;
use crate::keys::records::{
    ImportRecord, IntentKind, IntentRecord, KeyManager, KeyRecord, MaterialRecord,
    MultiRegionRecord, ParsedPolicy,
};
use crate::keys::spec::{self, KeySpec};
use crate::keys::state::{self, KeyState, Operation};
use crate::policy::{RequestContext, default_key_policy, keys, parse_key_policy};
use crate::store::{Batch, Precondition, Table, pages};

const DESCRIPTION_MAX: usize = 8192;
const TAG_KEY_MAX: usize = 128;
const TAG_VALUE_MAX: usize = 256;
const TAGS_PER_KEY_MAX: usize = 50;

impl KeyStore {
    /// CreateKey: takes a ready object of the material pool (see `material_pool`) for a
    /// SYMMETRIC_DEFAULT key, or generates the material inside one HSM and replicates it to
    /// every healthy member; then records the key.
    ///
    /// Crash consistency: a pool object is claimed in the batch that writes the key record.
    /// Generated material has an intent flushed before the HSM work and removed in the same
    /// batch that writes the key record. A crash in between leaves material without a key,
    /// which no caller can see and which start-up and `cluster status` report.
    pub fn create_key(
        &self,
        caller: &Caller,
        request: CreateKeyRequest,
    ) -> Result<KeyMetadataResponse, KmsError> {
        let mut call = Call::of(Operation::CreateKey);
        call.param(
            "keyUsage",
            request
                .key_usage
                .clone()
                .unwrap_or_else(|| "ENCRYPT_DECRYPT".into()),
        );
        call.param(
            "keySpec",
            request
                .key_spec
                .clone()
                .unwrap_or_else(|| SYMMETRIC_DEFAULT.into()),
        );
        call.param(
            "description",
            request.description.clone().unwrap_or_default(),
        );
        call.param("origin", origin_of(&request));
        if let Some(id) = &request.custom_key_store_id {
            call.param("customKeyStoreId", id.as_str());
        }
        self.audited(caller, call, |call| {
            self.create_key_recorded(caller, request, call)
        })
    }

    /// The work of [`KeyStore::create_key`] once its call is on record in `call`.
    fn create_key_recorded(
        &self,
        caller: &Caller,
        request: CreateKeyRequest,
        call: &mut Call,
    ) -> Result<KeyMetadataResponse, KmsError> {
        let (spec, usage) = spec::validate_create(
            request.key_spec.as_deref(),
            request.customer_master_key_spec.as_deref(),
            request.key_usage.as_deref(),
        )?;
        self.authorize_without_key(caller, Operation::CreateKey, |context| {
            create_key_conditions(context, &request)
        })?;
        let origin = origin_of(&request);
        let description = request.description.unwrap_or_default();
        check_description(&description)?;
        if spec != KeySpec::SymmetricDefault && request.custom_key_store_id.is_some() {
            return Err(KmsError::UnsupportedOperation(format!(
                "KeySpec {} is not valid in a custom key store: it holds symmetric encryption keys (SYMMETRIC_DEFAULT) only.",
                spec.as_str()
            )));
        }
        let (key_spec, key_usage) = (spec.as_str().to_owned(), usage.as_str().to_owned());
        check_origin(&origin, request.custom_key_store_id.is_some())?;
        let multi_region = request.multi_region == Some(true);
        if multi_region && request.custom_key_store_id.is_some() {
            return Err(KmsError::UnsupportedOperation(
                "Multi-Region keys cannot be created in a custom key store.".into(),
            ));
        }
        let cluster = match &request.custom_key_store_id {
            Some(id) => self.connected_store(caller, id)?.name().to_owned(),
            None => self.region_cluster_name(caller.scope.region()),
        };
        let tags = validate_tags(&request.tags, &BTreeMap::new())?;

        let key_id = if multi_region {
            KeyId::new_multi_region()
        } else {
            KeyId::new_random()
        };
        let account = caller.scope.account_id();
        let policy_text = request
            .policy
            .unwrap_or_else(|| default_key_policy(account));
        let policy = parse_key_policy(&policy_text)?;
        if request.bypass_policy_lockout_safety_check != Some(true) {
            let arn = format!(
                "arn:aws:kms:{}:{account}:key/{key_id}",
                caller.scope.region()
            );
            self.check_lockout(caller, &arn, account, &policy)?;
        }
        let external = origin == "EXTERNAL";
        let now = self.now();
        let mut record = KeyRecord {
            key_id: key_id.to_string(),
            account_id: caller.scope.account_id().to_owned(),
            region: caller.scope.region().to_owned(),
            cluster,
            custom_key_store_id: request.custom_key_store_id,
            creation_date: now,
            description,
            key_usage,
            key_spec,
            origin,
            state: if external {
                KeyState::PendingImport
            } else {
                KeyState::Enabled
            },
            deletion_date: None,
            pending_window_days: None,
            tags,
            materials: if external {
                Vec::new()
            } else {
                vec![MaterialRecord {
                    version: 1,
                    created: now,
                    rotation_type: None,
                    pool_object: None,
                }]
            },
            rotation: None,
            destruction_pending: Vec::new(),
            destruction_started: false,
            policy: Some(policy_text),
            public_key: None,
            import: external.then(ImportRecord::default),
            key_manager: KeyManager::Customer,
            parsed_policy: ParsedPolicy::default(),
            multi_region: multi_region.then(|| MultiRegionRecord {
                primary_region: caller.scope.region().to_owned(),
            }),
        };
        self.write_new_key(&mut record)?;
        call.resource(record.arn());
        let key_metadata = self.describe(&record)?;
        call.response_elements = Some(serde_json::json!({ "keyMetadata": key_metadata }));
        Ok(KeyMetadataResponse { key_metadata })
    }

    /// Writes the record of a new key with its first material: none for imported material,
    /// a pool object claimed in the same batch, or material generated and replicated now.
    fn write_new_key(&self, record: &mut KeyRecord) -> Result<(), KmsError> {
        if record.origin == "EXTERNAL" {
            // No material until ImportKeyMaterial brings it.
            let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
            let mut batch = Batch::new();
            batch.put_if(
                Table::Keys,
                record.store_key().as_bytes(),
                Precondition::ExpectAbsent,
                encode(&record)?,
            );
            self.commit(batch, &record.store_key())?;
        } else if let Some(object) = self.pooled_for(record) {
            // Material from the pool: the claim and the key record are one batch.
            let cluster = record.cluster.clone();
            if let Some(first) = record.materials.first_mut() {
                first.pool_object = Some(object.clone());
            }
            let mut batch = Batch::new();
            self.claim_in(&mut batch, &cluster, &object);
            let committed = encode(&record).and_then(|payload| {
                batch.put_if(
                    Table::Keys,
                    record.store_key().as_bytes(),
                    Precondition::ExpectAbsent,
                    payload,
                );
                self.commit(batch, &record.store_key())
            });
            self.claim_settled(&cluster, object, &committed);
            committed?;
            crash_point!("create-key:pool-object-claimed");
        } else {
            self.create_material(&record.clone(), 1, |batch| {
                // A pair's public key is read from the HSM once, here, and kept in the record.
                record.public_key = self.read_public_key(record)?;
                batch.put_if(
                    Table::Keys,
                    record.store_key().as_bytes(),
                    Precondition::ExpectAbsent,
                    encode(&record)?,
                );
                Ok(())
            })?;
        }
        Ok(())
    }

    /// A proven material pool object for the first material of the new key `record`, if
    /// the key is one the pool serves (SYMMETRIC_DEFAULT, of origin AWS_KMS, single-Region,
    /// in the default cluster) and the pool has one ready.
    fn pooled_for(&self, record: &KeyRecord) -> Option<String> {
        let pooled_kind = record.key_spec == SYMMETRIC_DEFAULT
            && record.origin == "AWS_KMS"
            && record.custom_key_store_id.is_none()
            && record.multi_region.is_none()
            && record.cluster == self.cluster.name();
        if !pooled_kind {
            return None;
        }
        self.take_pooled(&self.cluster)
    }

    /// The base64 DER SubjectPublicKeyInfo of a pair just created (`None` for a secret).
    fn read_public_key(&self, record: &KeyRecord) -> Result<Option<String>, KmsError> {
        use base64::Engine as _;
        if !record.material_spec()?.is_pair() {
            return Ok(None);
        }
        let material = record.material(1);
        let public = self
            .cluster_of(record)?
            .with_material(&material, |member, id| member.public_key(id))
            .map_err(cluster_error)?;
        let der = crate::hsm::material::subject_public_key_info(&public.value);
        Ok(Some(base64::engine::general_purpose::STANDARD.encode(der)))
    }

    /// Creates material `version` of `record`'s key in the cluster between an intent and the
    /// batch `finish` fills (which also removes the intent).
    ///
    /// 1. Reserve the material in this process and check that no key record names that
    ///    version yet (so two rotations never make the same material).
    /// 2. Flush the intent, then generate and replicate the material, without the write lock.
    /// 3. Under the write lock, let `finish` re-read what it needs and fill the batch, and
    ///    commit it. When `finish` refuses or the batch conflicts, the material is destroyed
    ///    again and the intent removed (kept, and reported, while some copy is left).
    pub(super) fn create_material(
        &self,
        record: &KeyRecord,
        version: u32,
        finish: impl FnOnce(&mut Batch) -> Result<(), KmsError>,
    ) -> Result<(), KmsError> {
        let label = record.arn();
        let spec = record.material_spec()?;
        self.create_material_with(
            record,
            version,
            |cluster, material| cluster.create_material(material, &label, spec),
            finish,
        )
    }

    /// [`KeyStore::create_material`] with the HSM step given: `make` creates the material
    /// in the cluster (generates it, or opens imported material) and rolls back its copies
    /// when it fails, as [`Cluster::create_material`] does.
    pub(super) fn create_material_with(
        &self,
        record: &KeyRecord,
        version: u32,
        make: impl FnOnce(&Cluster, &MaterialId) -> Result<(), crate::cluster::ClusterError>,
        finish: impl FnOnce(&mut Batch) -> Result<(), KmsError>,
    ) -> Result<(), KmsError> {
        let material = record.material(version);
        let in_progress = || {
            KmsError::Conflict(format!(
                "A rotation of {} is already in progress",
                record.arn()
            ))
        };
        let in_flight = InFlight::new(self, material.to_string()).ok_or_else(in_progress)?;
        if let Some((stored, _)) = self.stored_key(&record.store_key())?
            && stored.materials.iter().any(|m| m.version >= version)
        {
            return Err(in_progress());
        }
        let intent_key = material.to_string().into_bytes();
        let cluster = self.cluster_of(record)?;
        let intent = IntentRecord {
            kind: IntentKind::CreateMaterial,
            key_id: record.key_id.clone(),
            version,
            cluster: cluster.name().to_owned(),
            created: self.now(),
        };
        let mut begin = Batch::new();
        begin.put(Table::Intents, &intent_key, encode(&intent)?);
        self.store
            .commit(begin)
            .map_err(internal)?
            .map_err(|c| KmsError::KmsInternal(c.to_string()))?;
        crash_point!("create-material:before-hsm");

        match make(&cluster, &material) {
            Ok(()) => {}
            Err(error) => {
                // The cluster rolled its copies back unless it says otherwise; only then is the
                // intent finished. Copies left behind keep the intent, for repair.
                let copies_left = matches!(
                    &error,
                    crate::cluster::ClusterError::Replication { left_behind, .. }
                        if !left_behind.is_empty()
                );
                if !copies_left {
                    let mut rollback = Batch::new();
                    rollback.delete(Table::Intents, &intent_key);
                    self.store.commit(rollback).map_err(internal)?.ok();
                }
                return Err(cluster_error(error));
            }
        }
        crash_point!("create-material:after-hsm");
        let _still_in_flight = &in_flight;
        let recorded = {
            let _serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
            let mut batch = Batch::new();
            finish(&mut batch).and_then(|()| {
                batch.delete(Table::Intents, &intent_key);
                self.commit(batch, &record.store_key())
            })
        };
        match recorded {
            // A store failure may have applied the batch: keep the material and the intent.
            Err(error @ KmsError::KmsInternal(_)) => Err(error),
            Err(refused) => {
                self.discard_material(&cluster, &material, &intent_key);
                Err(refused)
            }
            Ok(()) => Ok(()),
        }
    }

    /// The highest material version of `key_id` that a leftover creation intent names (0 when
    /// none): material an interrupted creation may have left in the HSMs under that version.
    /// Intents of creations in flight in this process are not leftovers: a rotation racing one
    /// of them picks the same version and is refused as a conflict.
    pub(super) fn highest_intended_version(&self, key_id: &str) -> Result<u32, KmsError> {
        let prefix = format!("{key_id}/");
        let intents = self
            .store
            .scan(Table::Intents, prefix.as_bytes(), None, usize::MAX)
            .map_err(internal)?;
        let creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        Ok(intents
            .iter()
            .filter_map(|(key, _)| std::str::from_utf8(key).ok())
            .filter(|material| !creating.contains(*material))
            .filter_map(|material| material[prefix.len()..].parse().ok())
            .max()
            .unwrap_or(0))
    }

    /// Destroys material that will not be recorded, then its intent once no copy is left.
    fn discard_material(&self, cluster: &Cluster, material: &MaterialId, intent_key: &[u8]) {
        if !cluster.destroy_key(material).complete() {
            tracing::warn!(%material, "discarded key material is left on some member; its intent stays for repair");
            return;
        }
        let mut batch = Batch::new();
        batch.delete(Table::Intents, intent_key);
        if let Err(error) = self.store.commit(batch) {
            tracing::warn!(%material, %error, "the intent of discarded key material stays");
        }
    }

    /// DescribeKey (any key reference, any state).
    pub fn describe_key(
        &self,
        caller: &Caller,
        request: KeyIdRequest,
    ) -> Result<KeyMetadataResponse, KmsError> {
        let mut call = Call::of(Operation::DescribeKey);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            let record = self.key_for(
                caller,
                call,
                Access::of(Operation::DescribeKey).with_grant_tokens(&request.grant_tokens),
                "keyId",
                &request.key_id,
                Naming::AnyReference,
            )?;
            Ok(KeyMetadataResponse {
                key_metadata: self.describe(&record)?,
            })
        })
    }

    /// ListKeys of the caller's account and region, in key-id order.
    pub fn list_keys(
        &self,
        caller: &Caller,
        request: ListRequest,
    ) -> Result<ListKeysResponse, KmsError> {
        let mut call = Call::of(Operation::ListKeys);
        if let Some(limit) = request.limit {
            call.param("limit", limit);
        }
        self.audited(caller, call, |_call| {
            self.authorize_without_key(caller, Operation::ListKeys, |c| c)?;
            let limit = limit(request.limit, 100)?;
            // The marker is the store key of the last key listed: its key id, and for a
            // multi-Region key its Region too (whose copies share the key id).
            let after = match &request.marker {
                Some(marker) => {
                    let key_id = marker.split_once('/').map_or(marker.as_str(), |(id, _)| id);
                    KeyId::parse(key_id).map_err(|_| {
                        KmsError::InvalidMarker(format!("Invalid marker: {marker}"))
                    })?;
                    Some(marker.clone())
                }
                None => None,
            };
            let mut keys = Vec::new();
            let mut truncated = false;
            let after = after.map(String::into_bytes);
            'pages: for page in pages(self.store.as_ref(), Table::Keys, b"").after(after) {
                for (_, found) in page.map_err(internal)? {
                    let record: KeyRecord = super::decode(&found.payload)?;
                    if !record.in_scope(&caller.scope) {
                        continue;
                    }
                    if keys.len() == limit {
                        truncated = true;
                        break 'pages;
                    }
                    keys.push(KeyListEntry {
                        key_arn: record.arn(),
                        key_id: record.key_id,
                    });
                }
            }
            let next_marker = truncated
                .then(|| {
                    keys.last()
                        .map(|k| store_key(&k.key_id, caller.scope.region()))
                })
                .flatten();
            Ok(ListKeysResponse {
                keys,
                truncated,
                next_marker,
            })
        })
    }

    /// EnableKey.
    pub fn enable_key(&self, caller: &Caller, request: KeyIdRequest) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::EnableKey);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            self.set_enabled(
                caller,
                call,
                &request.key_id,
                Operation::EnableKey,
                KeyState::Enabled,
            )
        })
    }

    /// DisableKey.
    pub fn disable_key(&self, caller: &Caller, request: KeyIdRequest) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::DisableKey);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            self.set_enabled(
                caller,
                call,
                &request.key_id,
                Operation::DisableKey,
                KeyState::Disabled,
            )
        })
    }

    fn set_enabled(
        &self,
        caller: &Caller,
        call: &mut Call,
        key: &str,
        operation: Operation,
        target: KeyState,
    ) -> Result<(), KmsError> {
        let record = self.key_for(
            caller,
            call,
            Access::of(operation),
            "keyId",
            key,
            Naming::KeyIdOrArn,
        )?;
        self.update_key(&record.store_key(), |record, _| {
            state::check(operation, record.state, record.arn_display())?;
            record.state = target;
            Ok(())
        })
    }

    /// ScheduleKeyDeletion: PendingWindowInDays 7–30, default 30.
    pub fn schedule_key_deletion(
        &self,
        caller: &Caller,
        request: ScheduleKeyDeletionRequest,
    ) -> Result<ScheduleKeyDeletionResponse, KmsError> {
        let mut call = Call::of(Operation::ScheduleKeyDeletion);
        call.param("keyId", request.key_id.as_str());
        if let Some(days) = request.pending_window_in_days {
            call.param("pendingWindowInDays", days);
        }
        self.audited(caller, call, |call| {
            let days = request.pending_window_in_days.unwrap_or(30);
            if !(7..=30).contains(&days) {
                return Err(KmsError::constraint_violation(
                    "pendingWindowInDays",
                    Some(&days.to_string()),
                    &[if days < 7 {
                        "Member must have value greater than or equal to 7"
                    } else {
                        "Member must have value less than or equal to 30"
                    }],
                ));
            }
            let record = self.key_for(
                caller,
                call,
                Access::of(Operation::ScheduleKeyDeletion).with(|mut context| {
                    context.set(
                        keys::SCHEDULE_KEY_DELETION_PENDING_WINDOW_IN_DAYS,
                        &days.to_string(),
                    );
                    context
                }),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            let now = self.now();
            // A multi-Region primary key waits for its replicas' deletion, as AWS's does: its
            // waiting period begins once the last replica is gone (see `maintenance`).
            let waits_for_replicas = record.is_primary() && !self.replicas_of(&record)?.is_empty();
            let response = self.update_key(&record.store_key(), |record, _| {
                state::check(
                    Operation::ScheduleKeyDeletion,
                    record.state,
                    record.arn_display(),
                )?;
                let (state, deletion_date) = if waits_for_replicas {
                    (KeyState::PendingReplicaDeletion, None)
                } else {
                    (KeyState::PendingDeletion, Some(now + days * DAY_MILLIS))
                };
                record.state = state;
                record.deletion_date = deletion_date;
                record.pending_window_days = Some(days as u32);
                Ok(ScheduleKeyDeletionResponse {
                    key_id: record.arn(),
                    deletion_date: deletion_date.map(to_epoch_seconds),
                    key_state: state.as_str().to_owned(),
                    pending_window_in_days: days as u32,
                })
            })?;
            call.response_elements = Some(serde_json::json!({
                "keyId": response.key_id,
                "deletionDate": response.deletion_date,
                "keyState": response.key_state,
                "pendingWindowInDays": response.pending_window_in_days,
            }));
            Ok(response)
        })
    }

    /// CancelKeyDeletion: the key returns to Disabled (PendingImport for a key of origin
    /// EXTERNAL whose material was deleted meanwhile), unless maintenance has begun destroying
    /// its material (then `KMSInvalidStateException`, as AWS answers once deletion began).
    pub fn cancel_key_deletion(
        &self,
        caller: &Caller,
        request: KeyIdRequest,
    ) -> Result<KeyIdResponse, KmsError> {
        let mut call = Call::of(Operation::CancelKeyDeletion);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            let record = self.key_for(
                caller,
                call,
                Access::of(Operation::CancelKeyDeletion),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            self.update_key(&record.store_key(), |record, _| {
                state::check(
                    Operation::CancelKeyDeletion,
                    record.state,
                    record.arn_display(),
                )?;
                if record.destruction_begun() {
                    return Err(KmsError::KmsInvalidState(format!(
                        "{} is pending deletion and its deletion has already begun.",
                        record.arn()
                    )));
                }
                // A key of origin EXTERNAL whose material was deleted meanwhile waits for it.
                record.state = if record.import.is_some() && record.materials.is_empty() {
                    KeyState::PendingImport
                } else {
                    KeyState::Disabled
                };
                record.deletion_date = None;
                record.pending_window_days = None;
                Ok(KeyIdResponse {
                    key_id: record.arn(),
                })
            })
        })
    }

    /// UpdateKeyDescription.
    pub fn update_key_description(
        &self,
        caller: &Caller,
        request: UpdateKeyDescriptionRequest,
    ) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::UpdateKeyDescription);
        call.param("keyId", request.key_id.as_str());
        call.param("description", request.description.as_str());
        self.audited(caller, call, |call| {
            check_description(&request.description)?;
            let record = self.key_for(
                caller,
                call,
                Access::of(Operation::UpdateKeyDescription),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            self.update_key(&record.store_key(), |record, _| {
                state::check(
                    Operation::UpdateKeyDescription,
                    record.state,
                    record.arn_display(),
                )?;
                record.description = request.description;
                Ok(())
            })
        })
    }

    /// TagResource: adds or overwrites tags.
    pub fn tag_resource(
        &self,
        caller: &Caller,
        request: TagResourceRequest,
    ) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::TagResource);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            let record = self.key_for(
                caller,
                call,
                Access::of(Operation::TagResource).with(|context| {
                    let tags: BTreeMap<String, String> = request
                        .tags
                        .iter()
                        .map(|tag| (tag.tag_key.clone(), tag.tag_value.clone()))
                        .collect();
                    context.with_request_tags(&tags)
                }),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            self.update_key(&record.store_key(), |record, _| {
                state::check(Operation::TagResource, record.state, record.arn_display())?;
                record.tags = validate_tags(&request.tags, &record.tags)?;
                Ok(())
            })
        })
    }

    /// UntagResource.
    pub fn untag_resource(
        &self,
        caller: &Caller,
        request: UntagResourceRequest,
    ) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::UntagResource);
        call.param("keyId", request.key_id.as_str());
        call.param("tagKeys", request.tag_keys.clone());
        self.audited(caller, call, |call| {
            let record = self.key_for(
                caller,
                call,
                Access::of(Operation::UntagResource).with(|mut context| {
                    context.set_multi(keys::TAG_KEYS, request.tag_keys.clone());
                    context
                }),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            self.update_key(&record.store_key(), |record, _| {
                state::check(Operation::UntagResource, record.state, record.arn_display())?;
                for key in &request.tag_keys {
                    record.tags.remove(key);
                }
                Ok(())
            })
        })
    }

    /// ListResourceTags, in tag-key order.
    pub fn list_resource_tags(
        &self,
        caller: &Caller,
        request: ListResourceTagsRequest,
    ) -> Result<ListResourceTagsResponse, KmsError> {
        let mut call = Call::of(Operation::ListResourceTags);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            let limit = limit(request.limit, 50)?;
            let record = self.key_for(
                caller,
                call,
                Access::of(Operation::ListResourceTags),
                "keyId",
                &request.key_id,
                Naming::KeyIdOrArn,
            )?;
            let mut tags: Vec<Tag> = record
                .tags
                .iter()
                .filter(|(key, _)| request.marker.as_ref().is_none_or(|marker| *key > marker))
                .map(|(key, value)| Tag {
                    tag_key: key.clone(),
                    tag_value: value.clone(),
                })
                .collect();
            let truncated = tags.len() > limit;
            tags.truncate(limit);
            Ok(ListResourceTagsResponse {
                next_marker: truncated
                    .then(|| tags.last().map(|t| t.tag_key.clone()))
                    .flatten(),
                tags,
                truncated,
            })
        })
    }
}

/// Whether a key of `origin` may be created where the request asks: `AWS_CLOUDHSM` in a
/// custom key store and only there, `AWS_KMS` and `EXTERNAL` outside one.
fn check_origin(origin: &str, in_custom_key_store: bool) -> Result<(), KmsError> {
    match (origin, in_custom_key_store) {
        ("AWS_KMS" | "EXTERNAL", false) | ("AWS_CLOUDHSM", true) => Ok(()),
        ("AWS_CLOUDHSM", false) => Err(KmsError::Validation(
            "A key of origin AWS_CLOUDHSM needs a CustomKeyStoreId.".into(),
        )),
        (_, true) => Err(KmsError::UnsupportedOperation(format!(
            "Origin {origin} cannot be used with a custom key store; use AWS_CLOUDHSM."
        ))),
        _ => Err(KmsError::UnsupportedOperation(format!(
            "Origin {origin} is not supported: use AWS_KMS, EXTERNAL or AWS_CLOUDHSM."
        ))),
    }
}

/// The request's `Origin`, or the default: `AWS_CLOUDHSM` in a custom key store, `AWS_KMS`
/// elsewhere.
fn origin_of(request: &CreateKeyRequest) -> String {
    request.origin.clone().unwrap_or_else(|| {
        if request.custom_key_store_id.is_some() {
            "AWS_CLOUDHSM"
        } else {
            "AWS_KMS"
        }
        .into()
    })
}

/// CreateKey's condition keys: the new key's properties, the lockout-check bypass and the
/// request's tags.
fn create_key_conditions(
    mut context: RequestContext,
    request: &CreateKeyRequest,
) -> RequestContext {
    let spec = request
        .key_spec
        .as_deref()
        .or(request.customer_master_key_spec.as_deref())
        .unwrap_or(SYMMETRIC_DEFAULT);
    let origin = match (&request.origin, &request.custom_key_store_id) {
        (Some(origin), _) => origin.as_str(),
        (None, Some(_)) => "AWS_CLOUDHSM",
        (None, None) => "AWS_KMS",
    };
    context.set(keys::KEY_SPEC, spec);
    context.set(
        keys::KEY_USAGE,
        request.key_usage.as_deref().unwrap_or("ENCRYPT_DECRYPT"),
    );
    context.set(keys::KEY_ORIGIN, origin);
    context.set(
        keys::MULTI_REGION,
        &request.multi_region.unwrap_or(false).to_string(),
    );
    context.set(
        keys::BYPASS_POLICY_LOCKOUT_SAFETY_CHECK,
        &(request.bypass_policy_lockout_safety_check == Some(true)).to_string(),
    );
    let tags: BTreeMap<String, String> = request
        .tags
        .iter()
        .map(|tag| (tag.tag_key.clone(), tag.tag_value.clone()))
        .collect();
    context.with_request_tags(&tags)
}

/// The AWS KeyMetadata of a record.
pub(super) fn metadata(record: &KeyRecord) -> KeyMetadata {
    let algorithms = match record.material_spec() {
        Ok(material) => (
            material
                .spec
                .encryption_algorithms(material.usage)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            material
                .spec
                .signing_algorithms(material.usage)
                .into_iter()
                .map(|algorithm| algorithm.as_str().to_owned())
                .collect(),
            material
                .spec
                .mac_algorithm()
                .map(|mac| vec![mac.as_str().to_owned()])
                .unwrap_or_default(),
            material
                .spec
                .key_agreement_algorithms(material.usage)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        ),
        Err(_) => (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
    };
    KeyMetadata {
        aws_account_id: record.account_id.clone(),
        key_id: record.key_id.clone(),
        arn: record.arn(),
        creation_date: to_epoch_seconds(record.creation_date),
        enabled: record.state == KeyState::Enabled,
        description: record.description.clone(),
        key_usage: record.key_usage.clone(),
        key_state: record.state.as_str().to_owned(),
        deletion_date: record.deletion_date.map(to_epoch_seconds),
        origin: record.origin.clone(),
        custom_key_store_id: record.custom_key_store_id.clone(),
        cloud_hsm_cluster_id: record
            .custom_key_store_id
            .as_ref()
            .map(|_| record.cluster.clone()),
        key_manager: record.key_manager.as_str().to_owned(),
        customer_master_key_spec: record.key_spec.clone(),
        key_spec: record.key_spec.clone(),
        encryption_algorithms: algorithms.0,
        signing_algorithms: algorithms.1,
        mac_algorithms: algorithms.2,
        key_agreement_algorithms: algorithms.3,
        multi_region: record.multi_region.is_some(),
        multi_region_configuration: None,
        pending_deletion_window_in_days: record.pending_window_days,
        current_key_material_id: (!record.materials.is_empty())
            .then(|| record.key_material_id(record.current_version())),
        expiration_model: record
            .import
            .as_ref()
            .and_then(|import| import.expiration_model.clone()),
        valid_to: record
            .import
            .as_ref()
            .and_then(|import| import.valid_to)
            .map(to_epoch_seconds),
    }
}

pub(super) fn check_description(description: &str) -> Result<(), KmsError> {
    if description.chars().count() > DESCRIPTION_MAX {
        return Err(KmsError::constraint_violation(
            "description",
            None,
            &["Member must have length less than or equal to 8192"],
        ));
    }
    Ok(())
}

/// Merges `new` tags into `existing`, checking AWS's tag rules.
pub(super) fn validate_tags(
    new: &[Tag],
    existing: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, KmsError> {
    // The API model's length constraints first, named by the tag's position (from 1).
    for (index, tag) in new.iter().enumerate() {
        let position = index + 1;
        let key_len = tag.tag_key.chars().count();
        if key_len == 0 || key_len > TAG_KEY_MAX {
            return Err(KmsError::constraint_violation(
                &format!("tags.{position}.member.tagKey"),
                Some(&tag.tag_key),
                &[if key_len == 0 {
                    "Member must have length greater than or equal to 1"
                } else {
                    "Member must have length less than or equal to 128"
                }],
            ));
        }
        if tag.tag_value.chars().count() > TAG_VALUE_MAX {
            return Err(KmsError::constraint_violation(
                &format!("tags.{position}.member.tagValue"),
                Some(&tag.tag_value),
                &["Member must have length less than or equal to 256"],
            ));
        }
    }
    let mut tags = existing.clone();
    let mut seen = std::collections::BTreeSet::new();
    for tag in new {
        if tag
            .tag_key
            .get(..4)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("aws:"))
        {
            return Err(KmsError::Tag(
                "Tags beginning with aws: are reserved".into(),
            ));
        }
        if !seen.insert(tag.tag_key.clone()) {
            return Err(KmsError::Tag("Duplicate tag keys".into()));
        }
        tags.insert(tag.tag_key.clone(), tag.tag_value.clone());
    }
    if tags.len() > TAGS_PER_KEY_MAX {
        return Err(KmsError::Tag("Too many tags".into()));
    }
    Ok(tags)
}

/// Marks a material creation (or a replica's) as in progress for as long as it lives.
pub(super) struct InFlight<'a> {
    store: &'a KeyStore,
    material: String,
}

impl<'a> InFlight<'a> {
    /// Reserves `material`, or `None` if its creation is in progress already.
    pub(super) fn new(store: &'a KeyStore, material: String) -> Option<InFlight<'a>> {
        let reserved = store
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(material.clone());
        // Built only once the lock is released: dropping an unused one takes the lock.
        reserved.then(|| InFlight { store, material })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.store
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.material);
    }
}
