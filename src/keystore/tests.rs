//! Unit tests of the key store's own logic: the deletion mark, the record cache and the
//! reservation and clean-up of new material. The metadata lives in a [`MemoryStore`] (the disk
//! is not the point here, and records can be set up directly); the cluster is a real
//! two-member SoftHSM2 one, because the material is.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::api::{KeyIdRequest, ScheduleKeyDeletionRequest};
use super::*;
use crate::audit::log::AuditSettings;
use crate::clock::ManualClock;
use crate::keys::records::RotationType;
use crate::store::MemoryStore;

/// Points `SOFTHSM2_CONF` at this process's switch before `main`, so before any test thread
/// exists: each fixture's members then read their own SoftHSM2 configuration without the
/// environment changing while threads run (see [`crate::hsm::prepare_switches`]; the
/// integration tests do the same in `tests/common`). `.init_array` is ELF's: Linux only.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static PREPARE_ENVIRONMENT: extern "C" fn() = prepare_environment;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
extern "C" fn prepare_environment() {
    // SAFETY: the ELF initialisers run before `main`, on the only thread of the process.
    unsafe { crate::hsm::prepare_switches(["SOFTHSM2_CONF"]) }
}

/// A key store over a fresh, initialised two-member SoftHSM2 cluster and a [`MemoryStore`].
struct Fixture {
    store: KeyStore,
    clock: Arc<ManualClock>,
    caller: Caller,
    /// Holds the cluster's tokens; removed when the fixture is dropped.
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/softhsm-cluster.sh");
    let made = Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .arg("2")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let config = Config::load(&dir.path().join("hsm-kms.toml")).unwrap();
    let cluster = Cluster::init("local", config.default_cluster().unwrap()).unwrap();
    let scope = Scope::new(&config.service.region, &config.service.account_id).unwrap();
    let clock = Arc::new(ManualClock::new());
    let store = KeyStore::with_parts(
        scope,
        cluster,
        Box::new(MemoryStore::new()),
        clock.clone(),
        AuditSettings::default(),
    )
    .unwrap();
    let caller = Caller::local(store.scope());
    Fixture {
        store,
        clock,
        caller,
        _dir: dir,
    }
}

impl Fixture {
    fn create(&self) -> String {
        self.store
            .create_key(&self.caller, Default::default())
            .unwrap()
            .key_metadata
            .key_id
    }

    fn request(key: &str) -> KeyIdRequest {
        KeyIdRequest {
            key_id: key.to_owned(),
            ..Default::default()
        }
    }

    fn schedule(&self, key: &str) {
        self.store
            .schedule_key_deletion(
                &self.caller,
                ScheduleKeyDeletionRequest {
                    key_id: key.to_owned(),
                    pending_window_in_days: Some(7),
                },
            )
            .unwrap();
    }

    /// The stored record.
    fn stored(&self, key: &str) -> KeyRecord {
        self.store.stored_key(key).unwrap().unwrap().0
    }

    /// Rewrites the stored record directly, as an earlier version or a crash left it.
    fn rewrite(&self, key: &str, change: impl FnOnce(&mut KeyRecord)) {
        let mut record = self.stored(key);
        change(&mut record);
        let mut batch = Batch::new();
        batch.put(Table::Keys, key.as_bytes(), encode(&record).unwrap());
        self.store.commit(batch, key).unwrap();
    }

    /// Material versions of `key` on each member.
    fn versions_on_members(&self, key: &str) -> Vec<Vec<u32>> {
        self.store
            .cluster()
            .key_objects()
            .into_iter()
            .map(|(_, objects)| {
                let mut versions: Vec<u32> = objects
                    .unwrap()
                    .iter()
                    .filter_map(|o| crate::cluster::MaterialId::from_cka_id(&o.id))
                    .filter(|m| m.key_id == key)
                    .map(|m| m.version)
                    .collect();
                versions.sort();
                versions
            })
            .collect()
    }
}

#[test]
fn cancel_is_refused_while_destruction_is_pending_on_some_member() {
    let f = fixture();
    let key = f.create();
    f.schedule(&key);
    // A record written before the mark existed, with one member still to be cleaned.
    f.rewrite(&key, |record| {
        record.destruction_pending = vec!["hsm-b".into()]
    });
    let refused = f
        .store
        .cancel_key_deletion(&f.caller, Fixture::request(&key))
        .unwrap_err();
    assert_eq!(refused.code(), "KMSInvalidStateException");
    assert!(
        refused
            .message()
            .ends_with("its deletion has already begun.")
    );
    assert_eq!(f.stored(&key).state, KeyState::PendingDeletion);
}

#[test]
fn a_marked_deletion_is_resumed_before_its_date_and_an_unmarked_one_waits() {
    let f = fixture();
    let marked = f.create();
    let waiting = f.create();
    f.schedule(&marked);
    f.schedule(&waiting);
    f.rewrite(&marked, |record| record.destruction_started = true);
    let marked_arn = f.stored(&marked).arn();

    let report = f.store.run_maintenance().unwrap();
    assert_eq!(report.deleted, vec![marked_arn]);
    assert!(f.store.stored_key(&marked).unwrap().is_none());
    assert_eq!(f.versions_on_members(&marked), vec![Vec::<u32>::new(); 2]);
    assert!(
        !f.stored(&waiting).destruction_started,
        "not due: not marked"
    );
    assert_eq!(f.versions_on_members(&waiting), vec![vec![1]; 2]);
}

#[test]
fn a_deletion_no_longer_due_is_skipped_without_a_mark() {
    let f = fixture();
    let key = f.create();
    f.schedule(&key);
    f.clock.advance(Duration::from_secs(8 * 24 * 3600));
    f.store
        .cancel_key_deletion(&f.caller, Fixture::request(&key))
        .unwrap();
    assert!(matches!(
        f.store.delete_key_now(&key),
        Ok(maintenance::Deletion::NotDue)
    ));
    assert!(!f.stored(&key).destruction_started);
    assert_eq!(f.versions_on_members(&key), vec![vec![1]; 2]);
}

#[test]
fn a_cached_record_never_outlives_a_write() {
    let f = fixture();
    let key = f.create();
    assert_eq!(f.store.key(&key).unwrap().unwrap().state, KeyState::Enabled);
    f.store
        .disable_key(&f.caller, Fixture::request(&key))
        .unwrap();
    assert_eq!(
        f.store.key(&key).unwrap().unwrap().state,
        KeyState::Disabled
    );
    // A read that began before a write does not fill the cache after it.
    let generation = f.store.cache_generation.load(Ordering::SeqCst);
    f.rewrite(&key, |record| record.description = "changed".into());
    assert!(f.store.cache_generation.load(Ordering::SeqCst) > generation);
    assert_eq!(f.store.key(&key).unwrap().unwrap().description, "changed");
}

#[test]
fn a_rotation_from_a_stale_snapshot_makes_no_material() {
    let f = fixture();
    let key = f.create();
    let snapshot = f.stored(&key);
    f.store.rotate(&snapshot, RotationType::OnDemand).unwrap();
    let refused = f
        .store
        .rotate(&snapshot, RotationType::OnDemand)
        .unwrap_err();
    assert_eq!(refused.code(), "ConflictException");
    assert_eq!(f.versions_on_members(&key), vec![vec![1, 2]; 2]);
    assert_eq!(f.store.store.count(Table::Intents).unwrap(), 0);
}

#[test]
fn a_rotation_refused_after_the_hsm_work_destroys_its_material() {
    let f = fixture();
    let key = f.create();
    let snapshot = f.stored(&key);
    f.store
        .disable_key(&f.caller, Fixture::request(&key))
        .unwrap();
    let refused = f
        .store
        .rotate(&snapshot, RotationType::OnDemand)
        .unwrap_err();
    assert_eq!(refused.code(), "DisabledException");
    assert_eq!(f.stored(&key).materials.len(), 1);
    assert_eq!(f.versions_on_members(&key), vec![vec![1]; 2]);
    assert_eq!(f.store.store.count(Table::Intents).unwrap(), 0);
    assert!(f.store.reconcile().unwrap().is_empty());
}

#[test]
fn retirable_grants_are_read_through_their_index_which_a_store_without_it_gets_at_start() {
    let f = fixture();
    let key = f.create();
    let principal =
        |name: &str| format!("arn:aws:iam::{}:role/{name}", f.caller.scope.account_id());
    let grant = |retiring: Option<&str>| {
        f.store
            .create_grant(
                &f.caller,
                super::api::CreateGrantRequest {
                    key_id: key.clone(),
                    grantee_principal: principal("app"),
                    retiring_principal: retiring.map(principal),
                    operations: vec!["Encrypt".into()],
                    ..Default::default()
                },
            )
            .unwrap()
            .grant_id
    };
    let retired_by_ops: Vec<String> = (0..3).map(|_| grant(Some("ops"))).collect();
    grant(Some("auditor"));
    grant(None);
    let list = |name: &str, limit: Option<i64>, marker: Option<String>| {
        f.store
            .list_retirable_grants(
                &f.caller,
                super::api::ListRetirableGrantsRequest {
                    retiring_principal: principal(name),
                    limit,
                    marker,
                },
            )
            .unwrap()
    };
    let ids = |page: &super::api::ListGrantsResponse| -> Vec<String> {
        page.grants.iter().map(|g| g.grant_id.clone()).collect()
    };
    let entries = || f.store.store.count(Table::RetiringGrants).unwrap();
    let mut sorted = retired_by_ops.clone();
    sorted.sort();

    let first = list("ops", Some(2), None);
    assert!(first.truncated);
    let rest = list("ops", None, first.next_marker.clone());
    assert!(!rest.truncated);
    assert_eq!([ids(&first), ids(&rest)].concat(), sorted);
    assert_eq!(list("auditor", None, None).grants.len(), 1);
    assert_eq!(
        entries(),
        4,
        "one entry per grant with a retiring principal"
    );

    // A store written before the index: no entries, no marker. ListRetirableGrants reads
    // only the index, so it finds nothing until the start-up step writes the entries.
    let mut batch = Batch::new();
    for (entry, _) in f
        .store
        .store
        .scan(Table::RetiringGrants, b"", None, usize::MAX)
        .unwrap()
    {
        batch.delete(Table::RetiringGrants, &entry);
    }
    batch.delete(Table::Meta, b"grant-indexes-written");
    f.store.store.commit(batch).unwrap().unwrap();
    assert!(list("ops", None, None).grants.is_empty());
    f.store.index_grants().unwrap();
    assert_eq!(ids(&list("ops", None, None)), sorted);
    assert_eq!(entries(), 4);

    // Revoking a grant removes its entry; deleting the key removes the rest.
    f.store
        .revoke_grant(
            &f.caller,
            super::api::RevokeGrantRequest {
                key_id: key.clone(),
                grant_id: sorted[0].clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&list("ops", None, None)), sorted[1..].to_vec());
    assert_eq!(entries(), 3);
    f.schedule(&key);
    f.clock.advance(Duration::from_secs(8 * 86_400));
    f.store.run_maintenance().unwrap();
    assert_eq!(entries(), 0);
    assert!(list("ops", None, None).grants.is_empty());
}

#[test]
fn a_call_reads_only_the_grants_of_its_caller_through_their_index() {
    let f = fixture();
    let key = f.create();
    let account = f.caller.scope.account_id().to_owned();
    let mut app = f.caller.clone();
    app.principal = format!("arn:aws:iam::{account}:user/app");
    app.profile = Arc::new(crate::caller::PrincipalProfile {
        policies: Some(vec![Arc::new(
            crate::policy::parse_identity_policy(
                r#"{"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "kms:ListAliases", "Resource": "*"}]}"#,
            )
            .unwrap(),
        )]),
        ..Default::default()
    });
    let grant_to = |grantee: &str| {
        f.store
            .create_grant(
                &f.caller,
                super::api::CreateGrantRequest {
                    key_id: key.clone(),
                    grantee_principal: format!("arn:aws:iam::{account}:{grantee}"),
                    operations: vec!["Encrypt".into()],
                    ..Default::default()
                },
            )
            .unwrap()
            .grant_id
    };
    let encrypt = || {
        f.store.encrypt(
            &app,
            super::api::EncryptRequest {
                key_id: key.clone(),
                plaintext: secrecy::SecretSlice::from(b"granted".to_vec()),
                ..Default::default()
            },
        )
    };
    let entries = || f.store.store.count(Table::GranteeGrants).unwrap();
    assert_eq!(encrypt().unwrap_err().code(), "AccessDeniedException");
    for other in ["user/someone-else", "role/batch", "user/third"] {
        grant_to(other);
    }
    assert_eq!(encrypt().unwrap_err().code(), "AccessDeniedException");
    let granted = grant_to("user/app");
    encrypt().unwrap();
    assert_eq!(entries(), 4, "one entry per grant");
    let mut other_grantees = Batch::new();
    let prefix = format!("{key}\0arn:aws:iam::{account}:user/app\0");
    for (entry, _) in f
        .store
        .store
        .scan(Table::GranteeGrants, b"", None, usize::MAX)
        .unwrap()
    {
        assert!(entry.starts_with(key.as_bytes()));
        if !entry.starts_with(prefix.as_bytes()) {
            other_grantees.delete(Table::GranteeGrants, &entry);
        }
    }
    // The other grantees' entries gone, the caller's grant still allows it; its own gone
    // (as in a store made before the index), nothing does until the start-up step.
    f.store.store.commit(other_grantees).unwrap().unwrap();
    encrypt().unwrap();
    let mut batch = Batch::new();
    batch
        .delete(
            Table::GranteeGrants,
            &[prefix.as_bytes(), format!("{key}/{granted}").as_bytes()].concat(),
        )
        .delete(Table::Meta, b"grant-indexes-written");
    f.store.store.commit(batch).unwrap().unwrap();
    assert_eq!(encrypt().unwrap_err().code(), "AccessDeniedException");
    f.store.index_grants().unwrap();
    encrypt().unwrap();
    assert_eq!(entries(), 4);

    // Revoked, the grant and its entry go in one batch.
    f.store
        .revoke_grant(
            &f.caller,
            super::api::RevokeGrantRequest {
                key_id: key.clone(),
                grant_id: granted,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(encrypt().unwrap_err().code(), "AccessDeniedException");
    assert_eq!(entries(), 3);
}

#[test]
fn create_grant_finds_a_repeat_among_the_grantees_grants_and_counts_the_keys_index_entries() {
    let f = fixture();
    let key = f.create();
    let account = f.caller.scope.account_id().to_owned();
    let grant = |grantee: &str| {
        f.store.create_grant(
            &f.caller,
            super::api::CreateGrantRequest {
                key_id: key.clone(),
                grantee_principal: format!("arn:aws:iam::{account}:{grantee}"),
                operations: vec!["Encrypt".into()],
                name: Some("nightly".into()),
                ..Default::default()
            },
        )
    };
    let first = grant("user/app").unwrap().grant_id;
    let other = grant("user/other").unwrap().grant_id;
    assert_ne!(first, other, "another grantee's request is not a repeat");
    assert_eq!(grant("user/app").unwrap().grant_id, first, "a repeat");
    assert_eq!(f.store.store.count(Table::Grants).unwrap(), 2);

    // The quota counts the key's index entries, over more than one page of them: stand-ins
    // up to one below the limit let one more grant in, and refuse the next.
    let mut stand_ins = Batch::new();
    for i in 2..crate::policy::grant::MAX_GRANTS_PER_KEY - 1 {
        let grantee = format!("arn:aws:iam::{account}:user/stand-in");
        stand_ins.put(
            Table::GranteeGrants,
            format!("{key}\0{grantee}\0{key}/{i:064x}").as_bytes(),
            Vec::new(),
        );
    }
    f.store.store.commit(stand_ins).unwrap().unwrap();
    grant("user/last").unwrap();
    let refused = grant("user/one-too-many").unwrap_err();
    assert_eq!(refused.code(), "LimitExceededException");
    assert_eq!(
        grant("user/app").unwrap().grant_id,
        first,
        "a repeat is not a new grant"
    );
}

#[test]
fn a_keys_aliases_are_read_through_their_index_which_a_store_without_it_gets_at_start() {
    let f = fixture();
    let (key, other) = (f.create(), f.create());
    let alias = |name: &str, target: &str| super::api::AliasRequest {
        alias_name: name.to_owned(),
        target_key_id: target.to_owned(),
    };
    let names_of = |target: &str| -> Vec<String> {
        let listed = f
            .store
            .list_aliases(
                &f.caller,
                super::api::ListAliasesRequest {
                    key_id: Some(target.to_owned()),
                    ..Default::default()
                },
            )
            .unwrap();
        let through_index: Vec<String> = f
            .store
            .aliases_of(&f.caller.scope, target)
            .unwrap()
            .into_iter()
            .map(|record| record.name)
            .collect();
        let names: Vec<String> = listed.aliases.into_iter().map(|a| a.alias_name).collect();
        assert_eq!(
            names, through_index,
            "ListAliases for a key reads the index"
        );
        names
    };
    let entries = || f.store.store.count(Table::KeyAliases).unwrap();
    for name in ["alias/b", "alias/a", "alias/c"] {
        f.store.create_alias(&f.caller, alias(name, &key)).unwrap();
    }
    f.store
        .create_alias(&f.caller, alias("alias/other", &other))
        .unwrap();
    assert_eq!(names_of(&key), ["alias/a", "alias/b", "alias/c"]);
    assert_eq!(names_of(&other), ["alias/other"]);
    assert_eq!(entries(), 4, "one entry per alias");

    // Moved, the entry moves with it; deleted, it goes with it.
    f.store
        .update_alias(&f.caller, alias("alias/b", &other))
        .unwrap();
    assert_eq!(names_of(&key), ["alias/a", "alias/c"]);
    assert_eq!(names_of(&other), ["alias/b", "alias/other"]);
    f.store.delete_alias(&f.caller, "alias/a").unwrap();
    assert_eq!(names_of(&key), ["alias/c"]);
    assert_eq!(entries(), 3);

    // The entries are what is read: without them (as in a store made before the index), a
    // key has no aliases until the start-up step writes them.
    let mut batch = Batch::new();
    for (entry, _) in f
        .store
        .store
        .scan(Table::KeyAliases, b"", None, usize::MAX)
        .unwrap()
    {
        batch.delete(Table::KeyAliases, &entry);
    }
    batch.delete(Table::Meta, b"alias-index-written");
    f.store.store.commit(batch).unwrap().unwrap();
    assert!(names_of(&other).is_empty());
    f.store.index_aliases().unwrap();
    assert_eq!(names_of(&other), ["alias/b", "alias/other"]);
    assert_eq!(names_of(&key), ["alias/c"]);
    assert_eq!(entries(), 3);

    // A deleted key's aliases go with it, entries and all.
    f.schedule(&other);
    f.clock.advance(Duration::from_secs(8 * 86_400));
    f.store.run_maintenance().unwrap();
    assert_eq!(entries(), 1);
    assert!(f.store.alias(&f.caller.scope, "alias/b").unwrap().is_none());
    assert_eq!(names_of(&key), ["alias/c"]);
}
