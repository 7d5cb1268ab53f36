//! Aliases: CreateAlias, UpdateAlias, DeleteAlias and ListAliases. An alias is unique per
//! account and region; uniqueness is enforced by the store's `ExpectAbsent` precondition in the
//! same atomic batch that writes it. The target key is re-read and its state checked under the
//! write lock, and the batch requires the key record at the revision checked, so an alias never
//! points at a key that was scheduled for deletion or deleted in between.
//!
//! An alias is a record of table `aliases` under `<account>/<Region>/<name>`. An index entry
//! in table `key-aliases` under `<account>/<Region>/<target key id>\0<name>`, written and
//! deleted in each alias's own batches, keeps the reads of one key's aliases (the 50-aliases
//! quota, `kms:ResourceAliases`, ListAliases for a key, the key's deletion) from reading the
//! account's other aliases.

use super::api::*;
use super::{
    Access, Caller, KeyStore, Naming, alias_key, alias_prefix, backfill_index, decode, encode,
    internal, limit,
};
use crate::audit::event::Call;
use crate::clock::to_epoch_seconds;
use crate::error::KmsError;
use crate::ids::{AliasName, Scope};
use crate::keys::records::{AliasRecord, KeyRecord, store_key};
use crate::keys::state::{self, Operation};
use crate::store::{Batch, Precondition, Table, pages};

/// Most aliases one key may have.
const ALIASES_PER_KEY_MAX: usize = 50;

impl KeyStore {
    /// CreateAlias: a new alias for a key (key id or key ARN).
    pub fn create_alias(&self, caller: &Caller, request: AliasRequest) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::CreateAlias);
        call.param("aliasName", request.alias_name.as_str());
        call.param("targetKeyId", request.target_key_id.as_str());
        self.audited(caller, call, |call| {
            let write = self.alias_write(caller, call, Operation::CreateAlias, &request)?;
            self.check_alias_quota(&caller.scope, &write.target)?;
            let now = self.now();
            let record = AliasRecord {
                name: write.name.as_str().to_owned(),
                target_key_id: write.target.key_id.clone(),
                creation_date: now,
                last_updated_date: now,
            };
            let exists = || {
                KmsError::AlreadyExists(format!(
                    "An alias with the name {} already exists",
                    caller.scope.alias_arn(&write.name)
                ))
            };
            self.commit_alias(
                caller,
                &write,
                &record,
                None,
                Precondition::ExpectAbsent,
                exists,
            )
        })
    }

    /// UpdateAlias: points an existing alias at another key.
    pub fn update_alias(&self, caller: &Caller, request: AliasRequest) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::UpdateAlias);
        call.param("aliasName", request.alias_name.as_str());
        call.param("targetKeyId", request.target_key_id.as_str());
        self.audited(caller, call, |call| {
            let write = self.alias_write(caller, call, Operation::UpdateAlias, &request)?;
            let (mut record, revision) = self
                .alias(&caller.scope, write.name.as_str())?
                .ok_or_else(|| caller.scope.alias_not_found(&write.name))?;
            // AWS authorizes UpdateAlias on the key the alias leaves too.
            if let Some(current) =
                self.key(&store_key(&record.target_key_id, caller.scope.region()))?
            {
                self.authorize(caller, &current, None, Access::of(Operation::UpdateAlias))?;
            }
            if record.target_key_id != write.target.key_id {
                self.check_alias_quota(&caller.scope, &write.target)?;
            }
            let previous_target =
                std::mem::replace(&mut record.target_key_id, write.target.key_id.clone());
            record.last_updated_date = self.now();
            let changed =
                || KmsError::Conflict("the alias changed meanwhile: retry the request".into());
            self.commit_alias(
                caller,
                &write,
                &record,
                Some(&previous_target),
                Precondition::ExpectRevision(revision),
                changed,
            )
        })
    }

    /// What CreateAlias and UpdateAlias share before they write: the alias name checked and
    /// the call authorized on it, the target key resolved and authorized, then, under the
    /// write lock (held until the returned write is dropped), the target as stored now.
    fn alias_write(
        &self,
        caller: &Caller,
        call: &mut Call,
        operation: Operation,
        request: &AliasRequest,
    ) -> Result<AliasWrite<'_>, KmsError> {
        let name = AliasName::parse_for_create(&request.alias_name)?;
        self.authorize_alias(caller, operation, caller.scope.alias_arn(&name).as_str())?;
        let target = self.key_for(
            caller,
            call,
            Access::of(operation),
            "targetKeyId",
            &request.target_key_id,
            Naming::KeyIdOrArn,
        )?;
        let serialised = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let (target, target_revision) = self.alias_target_now(&target, operation)?;
        Ok(AliasWrite {
            name,
            target,
            target_revision,
            _serialised: serialised,
        })
    }

    /// `LimitExceededException` when `target` has as many aliases in `scope` as a key may.
    fn check_alias_quota(&self, scope: &Scope, target: &KeyRecord) -> Result<(), KmsError> {
        if self.aliases_of(scope, &target.key_id)?.len() >= ALIASES_PER_KEY_MAX {
            return Err(KmsError::LimitExceeded(format!(
                "Key {} already has {ALIASES_PER_KEY_MAX} aliases",
                target.arn()
            )));
        }
        Ok(())
    }

    /// Writes `record` under the alias of `write` if the alias is as `expected` and the target
    /// is still at the revision read, moving its index entry from the key it pointed at
    /// before, if any; `on_alias_conflict` when the alias is not as expected.
    fn commit_alias(
        &self,
        caller: &Caller,
        write: &AliasWrite<'_>,
        record: &AliasRecord,
        previous_target: Option<&str>,
        expected: Precondition,
        on_alias_conflict: impl FnOnce() -> KmsError,
    ) -> Result<(), KmsError> {
        let mut batch = Batch::new();
        batch
            .expect(
                Table::Keys,
                write.target.store_key().as_bytes(),
                Precondition::ExpectRevision(write.target_revision),
            )
            .put_if(
                Table::Aliases,
                &alias_key(&caller.scope, write.name.as_str()),
                expected,
                encode(record)?,
            );
        if let Some(previous) = previous_target {
            batch.delete(
                Table::KeyAliases,
                &key_alias_entry(&alias_prefix(&caller.scope), previous, &record.name),
            );
        }
        index_alias(&mut batch, &caller.scope, record);
        match self.store.commit(batch).map_err(internal)? {
            Ok(()) => Ok(()),
            Err(conflict) if conflict.table == Table::Aliases => Err(on_alias_conflict()),
            Err(_) => Err(target_changed()),
        }
    }

    /// DeleteAlias.
    pub fn delete_alias(&self, caller: &Caller, alias_name: &str) -> Result<(), KmsError> {
        let mut call = Call::of(Operation::DeleteAlias);
        call.param("aliasName", alias_name);
        self.audited(caller, call, |_call| {
            let name = AliasName::parse_for_create(alias_name)?;
            self.authorize_alias(
                caller,
                Operation::DeleteAlias,
                caller.scope.alias_arn(&name).as_str(),
            )?;
            let Some((alias, revision)) = self.alias(&caller.scope, name.as_str())? else {
                return Err(caller.scope.alias_not_found(&name));
            };
            // AWS authorizes DeleteAlias on the alias's key: its policy must allow it.
            if let Some(target) =
                self.key(&store_key(&alias.target_key_id, caller.scope.region()))?
            {
                self.authorize(caller, &target, None, Access::of(Operation::DeleteAlias))?;
            }
            let key = alias_key(&caller.scope, name.as_str());
            let mut batch = Batch::new();
            batch.expect(Table::Aliases, &key, Precondition::ExpectRevision(revision));
            delete_alias_in(&mut batch, &caller.scope, &alias);
            self.store
                .commit(batch)
                .map_err(internal)?
                .map_err(|_| caller.scope.alias_not_found(&name))
        })
    }

    /// ListAliases of the caller's account and region, optionally for one key, by name.
    pub fn list_aliases(
        &self,
        caller: &Caller,
        request: ListAliasesRequest,
    ) -> Result<ListAliasesResponse, KmsError> {
        let mut call = Call::of(Operation::ListAliases);
        if let Some(key_id) = &request.key_id {
            call.param("keyId", key_id.as_str());
        }
        self.audited(caller, call, |call| {
            self.authorize_without_key(caller, Operation::ListAliases, |c| c)?;
            let limit = limit(request.limit, 50)?;
            let target = match &request.key_id {
                Some(key) => Some(
                    self.resolve_reference(
                        caller,
                        call,
                        Operation::ListAliases,
                        ("keyId", key),
                        Naming::KeyIdOrArn,
                    )?
                    .0
                    .key_id
                    .clone(),
                ),
                None => None,
            };
            let prefix = alias_prefix(&caller.scope);
            let after = match &request.marker {
                Some(marker) => {
                    AliasName::parse(marker).map_err(|_| {
                        KmsError::InvalidMarker(format!("Invalid marker: {marker}"))
                    })?;
                    Some(alias_key(&caller.scope, marker))
                }
                None => None,
            };
            // The predefined aliases of AWS managed keys not made yet are listed (without a
            // target) among the stored ones, in name order, as AWS lists them.
            let mut predefined: std::collections::VecDeque<String> = match &target {
                Some(_) => Default::default(),
                None => self
                    .managed
                    .predefined_aliases()
                    .into_iter()
                    .filter(|name| request.marker.as_ref().is_none_or(|marker| name > marker))
                    .collect(),
            };
            let mut aliases = Vec::new();
            let mut truncated = false;
            let mut listed = |entry: AliasListEntry| {
                if aliases.len() == limit {
                    truncated = true;
                    return false;
                }
                aliases.push(entry);
                true
            };
            match &target {
                // A key has at most 50 aliases: all of them, read through the index.
                Some(key_id) => {
                    for record in self.aliases_of(&caller.scope, key_id)? {
                        let after_marker = request
                            .marker
                            .as_ref()
                            .is_none_or(|marker| record.name > *marker);
                        if after_marker && !listed(entry(caller, record)) {
                            break;
                        }
                    }
                }
                None => {
                    'pages: for page in
                        pages(self.store.as_ref(), Table::Aliases, &prefix).after(after)
                    {
                        for (_, found) in page.map_err(internal)? {
                            let record: AliasRecord = decode(&found.payload)?;
                            while let Some(name) =
                                predefined.front().filter(|name| **name <= record.name)
                            {
                                let name = name.clone();
                                predefined.pop_front();
                                if name != record.name && !listed(predefined_entry(caller, name)) {
                                    break 'pages;
                                }
                            }
                            if !listed(entry(caller, record)) {
                                break 'pages;
                            }
                        }
                    }
                }
            }
            while let Some(name) = predefined.pop_front() {
                if !listed(predefined_entry(caller, name)) {
                    break;
                }
            }
            Ok(ListAliasesResponse {
                next_marker: truncated
                    .then(|| {
                        aliases
                            .last()
                            .map(|a: &AliasListEntry| a.alias_name.clone())
                    })
                    .flatten(),
                aliases,
                truncated,
            })
        })
    }

    /// The alias target `resolved` as stored now, with its revision, if `operation` is still
    /// allowed in its state. Called under the write lock, which deletions take too.
    fn alias_target_now(
        &self,
        resolved: &KeyRecord,
        operation: Operation,
    ) -> Result<(KeyRecord, u64), KmsError> {
        let (target, revision) = self.stored_key(&resolved.store_key())?.ok_or_else(|| {
            KmsError::NotFound(format!("Key '{}' does not exist", resolved.arn()))
        })?;
        state::check(operation, target.state, target.arn_display())?;
        Ok((target, revision))
    }

    /// Every alias in `scope` pointing at `key_id`, by name, read through the key's entries
    /// in table `key-aliases` (an entry whose alias was removed or moved meanwhile is
    /// skipped).
    pub(super) fn aliases_of(
        &self,
        scope: &Scope,
        key_id: &str,
    ) -> Result<Vec<AliasRecord>, KmsError> {
        let scope_prefix = alias_prefix(scope);
        let prefix = key_aliases_prefix(&scope_prefix, key_id);
        let mut found = Vec::new();
        for page in pages(self.store.as_ref(), Table::KeyAliases, &prefix) {
            for (entry, _) in page.map_err(internal)? {
                // The alias's store key: its scope's prefix and the name the entry ends with.
                let key = [&scope_prefix, &entry[prefix.len()..]].concat();
                let Some(stored) = self.store.get(Table::Aliases, &key).map_err(internal)? else {
                    continue;
                };
                let record: AliasRecord = decode(&stored.payload)?;
                if record.target_key_id == key_id {
                    found.push(record);
                }
            }
        }
        Ok(found)
    }

    /// Writes the `key-aliases` entries that aliases written before the index existed lack
    /// (see [`backfill_index`]).
    pub(super) fn index_aliases(&self) -> Result<(), KmsError> {
        backfill_index(
            self.store.as_ref(),
            Table::Aliases,
            ALIASES_INDEXED,
            |key, payload| {
                let record: AliasRecord = decode(payload)?;
                // `<account>/<Region>/<name>`: the scope's prefix is what precedes the name.
                let scope_prefix = &key[..key.len() - record.name.len()];
                let entry = key_alias_entry(scope_prefix, &record.target_key_id, &record.name);
                Ok(vec![(Table::KeyAliases, entry)])
            },
        )
    }
}

/// The meta-table marker of a store whose aliases all have their `key-aliases` entries.
const ALIASES_INDEXED: &[u8] = b"alias-index-written";

/// Adds `record`'s entry in table `key-aliases` to `batch`.
pub(super) fn index_alias(batch: &mut Batch, scope: &Scope, record: &AliasRecord) {
    batch.put(
        Table::KeyAliases,
        &key_alias_entry(&alias_prefix(scope), &record.target_key_id, &record.name),
        Vec::new(),
    );
}

/// Adds the deletion of alias `record` of `scope`, and of its index entry, to `batch`.
pub(super) fn delete_alias_in(batch: &mut Batch, scope: &Scope, record: &AliasRecord) {
    batch
        .delete(Table::Aliases, &alias_key(scope, &record.name))
        .delete(
            Table::KeyAliases,
            &key_alias_entry(&alias_prefix(scope), &record.target_key_id, &record.name),
        );
}

/// The `key-aliases` entry of alias `name` pointing at `key_id`, in the scope whose alias
/// prefix ([`alias_prefix`]) is `scope_prefix`.
fn key_alias_entry(scope_prefix: &[u8], key_id: &str, name: &str) -> Vec<u8> {
    [&key_aliases_prefix(scope_prefix, key_id), name.as_bytes()].concat()
}

/// The prefix of the `key-aliases` entries of the aliases pointing at `key_id`, in the scope
/// whose alias prefix is `scope_prefix`. No key id holds a NUL byte, so no key's prefix
/// extends another's.
fn key_aliases_prefix(scope_prefix: &[u8], key_id: &str) -> Vec<u8> {
    [scope_prefix, key_id.as_bytes(), b"\0"].concat()
}

/// An alias write under way: its checked name and its target as stored, read under the
/// write lock, which it holds.
struct AliasWrite<'a> {
    name: AliasName,
    target: KeyRecord,
    target_revision: u64,
    _serialised: std::sync::MutexGuard<'a, ()>,
}

/// The target key changed between its check and the alias write (another process's write).
fn target_changed() -> KmsError {
    KmsError::Conflict("the target key changed meanwhile: retry the request".into())
}

fn entry(caller: &Caller, record: AliasRecord) -> AliasListEntry {
    AliasListEntry {
        alias_arn: alias_arn(caller, &record.name),
        alias_name: record.name,
        target_key_id: Some(record.target_key_id),
        creation_date: Some(to_epoch_seconds(record.creation_date)),
        last_updated_date: Some(to_epoch_seconds(record.last_updated_date)),
    }
}

/// A predefined alias of an AWS managed key not made yet: a name and ARN only.
fn predefined_entry(caller: &Caller, name: String) -> AliasListEntry {
    AliasListEntry {
        alias_arn: alias_arn(caller, &name),
        alias_name: name,
        target_key_id: None,
        creation_date: None,
        last_updated_date: None,
    }
}

fn alias_arn(caller: &Caller, name: &str) -> String {
    format!(
        "arn:aws:kms:{}:{}:{}",
        caller.scope.region(),
        caller.scope.account_id(),
        name
    )
}
