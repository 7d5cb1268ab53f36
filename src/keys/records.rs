//! The metadata records the key store keeps: one per key, one per alias, one per grant, one per
//! pending HSM change (an *intent*). They are plain serde types; the store wraps them in its
//! versioned, checksummed envelope. They hold identifiers, states and dates only — never key
//! material, plaintext or PINs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::state::KeyState;
use crate::error::KmsError;
use crate::ids::{KeyId, Scope};
use crate::policy::{PolicyDocument, default_key_policy, parse_key_policy};

/// Everything the store knows about one KMS key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key id (a UUID), without region or account.
    pub key_id: String,
    /// The owning account.
    pub account_id: String,
    /// The region the key lives in.
    pub region: String,
    /// Name of the HSM cluster that holds the key material.
    pub cluster: String,
    /// The custom key store of an AWS_CLOUDHSM key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    /// When the key was created, in milliseconds since the epoch.
    pub creation_date: i64,
    /// The description CreateKey or UpdateKeyDescription set.
    pub description: String,
    /// AWS's key usage name, e.g. `ENCRYPT_DECRYPT`.
    pub key_usage: String,
    /// AWS's key spec name, e.g. `SYMMETRIC_DEFAULT`.
    pub key_spec: String,
    /// Where the material came from: `AWS_KMS`, `EXTERNAL` or `AWS_CLOUDHSM`.
    pub origin: String,
    /// The key's state in AWS's key-state table.
    pub state: KeyState,
    /// When a scheduled deletion happens, in milliseconds since the epoch.
    pub deletion_date: Option<i64>,
    /// The waiting period of the scheduled deletion, in days.
    pub pending_window_days: Option<u32>,
    /// Tags, by tag key.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Material versions, oldest first; the last one encrypts.
    pub materials: Vec<MaterialRecord>,
    /// Automatic rotation, when enabled.
    pub rotation: Option<RotationSchedule>,
    /// Members on which scheduled deletion still has to destroy the material.
    #[serde(default)]
    pub destruction_pending: Vec<String>,
    /// Set, durably, before scheduled deletion touches any HSM: from then on the deletion is
    /// only ever finished (resumed after a crash), never cancelled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub destruction_started: bool,
    /// The key policy's text, as PutKeyPolicy or CreateKey stored it; `None` in records
    /// written before key policies, which have AWS's default key policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The DER SubjectPublicKeyInfo of an asymmetric key, base64: read from the HSM once,
    /// when the key was created (public, so kept here for GetPublicKey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The key policy parsed, once per record read (never stored).
    #[serde(skip)]
    pub parsed_policy: ParsedPolicy,
    /// What an EXTERNAL-origin key knows of its imported material (`None` for other keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportRecord>,
    /// The multi-Region key this record is one Region's copy of (`None`: a single-Region
    /// key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_region: Option<MultiRegionRecord>,
    /// Who manages the key: the customer, or (an `alias/aws/<service>` key) AWS.
    #[serde(default, skip_serializing_if = "KeyManager::is_customer")]
    pub key_manager: KeyManager,
}

/// AWS's `KeyManager`: a customer managed key, or an AWS managed key that a service created
/// on first use and that no caller may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyManager {
    /// Created by CreateKey (or imported); its owner manages it.
    #[default]
    Customer,
    /// Created for an account by an integrated service (`alias/aws/<service>`).
    Aws,
}

impl KeyManager {
    /// AWS's name: `CUSTOMER` or `AWS`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyManager::Customer => "CUSTOMER",
            KeyManager::Aws => "AWS",
        }
    }

    /// Whether the customer manages the key (the default, not stored).
    pub fn is_customer(&self) -> bool {
        *self == KeyManager::Customer
    }
}

/// One Region's copy of a multi-Region key (primary or replica): every copy has the same
/// key id and material, and its own record, stored under [`store_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiRegionRecord {
    /// The Region of the primary key (every copy names the same one).
    pub primary_region: String,
}

/// The key of a key record in the store: the key id of a single-Region key (as records
/// have always been stored), `<key id>/<region>` for a copy of a multi-Region key, whose
/// copies share the key id. All copies of one multi-Region key are found under the prefix
/// [`multi_region_prefix`].
pub fn store_key(key_id: &str, region: &str) -> String {
    into_store_key(key_id.to_owned(), region)
}

/// [`store_key`] of a key id the caller no longer needs, reused for a single-Region key.
pub fn into_store_key(key_id: String, region: &str) -> String {
    if key_id.starts_with(crate::ids::MULTI_REGION_PREFIX) {
        format!("{key_id}/{region}")
    } else {
        key_id
    }
}

/// The store-key prefix of every copy of the multi-Region key `key_id`.
pub fn multi_region_prefix(key_id: &str) -> String {
    format!("{key_id}/")
}

/// The imported material of an EXTERNAL-origin key: its expiry and a key check value. The
/// check value names the material (an encryption of a fixed block under it, made inside the
/// HSM, truncated); it is not secret and reveals nothing of the material.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImportRecord {
    /// `KEY_MATERIAL_EXPIRES` or `KEY_MATERIAL_DOES_NOT_EXPIRE`, once material was imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<String>,
    /// When the current material expires (epoch milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<i64>,
    /// Hex key check value of the first material imported: every re-import must match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_value: Option<String>,
    /// Material versions deleted (or expired) whose destruction some member still owes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destruction_owed: Vec<u32>,
}

/// A key policy parsed at most once per record read: the record cache keeps it until the
/// key is written again, so a policy is parsed once per key revision, not per call.
#[derive(Clone, Default)]
pub struct ParsedPolicy(OnceLock<(Arc<PolicyDocument>, bool)>);

impl PartialEq for ParsedPolicy {
    /// Always equal: the parse follows from the record's policy text, which is compared.
    fn eq(&self, _other: &ParsedPolicy) -> bool {
        true
    }
}

impl std::fmt::Debug for ParsedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "parsed"
        } else {
            "not parsed"
        })
    }
}

/// One version of a key's material, as created or rotated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterialRecord {
    /// 1 for the first material, one more for each rotation; names the HSM objects.
    pub version: u32,
    /// When the version was made, in milliseconds since the epoch.
    pub created: i64,
    /// How this version came to be: `None` for the first, else AUTOMATIC or ON_DEMAND.
    pub rotation_type: Option<RotationType>,
    /// The `CKA_ID` of the material pool object that holds this version, when it was
    /// claimed from the pool (`None`: the objects are named `<key id>/<version>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_object: Option<String>,
}

/// Why a key was rotated, with AWS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RotationType {
    /// A scheduled rotation (EnableKeyRotation's period).
    Automatic,
    /// RotateKeyOnDemand.
    OnDemand,
}

impl RotationType {
    /// AWS's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationType::Automatic => "AUTOMATIC",
            RotationType::OnDemand => "ON_DEMAND",
        }
    }
}

/// Automatic rotation settings of a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationSchedule {
    /// Days between automatic rotations (90 to 2560).
    pub period_days: u32,
    /// When the next rotation is due, in milliseconds since the epoch.
    pub next_rotation: i64,
}

impl KeyRecord {
    /// The key's spec and usage; `KMSInternalException` for a record naming neither a spec
    /// nor a usage this version knows.
    pub fn material_spec(&self) -> Result<crate::hsm::MaterialSpec, KmsError> {
        use super::spec::{KeySpec, KeyUsage};
        match (
            KeySpec::parse(&self.key_spec),
            KeyUsage::parse(&self.key_usage),
        ) {
            (Some(spec), Some(usage)) => Ok(crate::hsm::MaterialSpec { spec, usage }),
            _ => Err(KmsError::KmsInternal(format!(
                "key {} has key spec {} and usage {}, which this version does not know",
                self.key_id, self.key_spec, self.key_usage
            ))),
        }
    }

    /// The DER SubjectPublicKeyInfo of an asymmetric key (`None` for other keys).
    pub fn public_key_der(&self) -> Result<Option<Vec<u8>>, KmsError> {
        use base64::Engine as _;
        self.public_key
            .as_deref()
            .map(|text| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| {
                        KmsError::KmsInternal(format!(
                            "key {} has a public key that does not decode",
                            self.key_id
                        ))
                    })
            })
            .transpose()
    }

    /// The parsed key id.
    pub fn id(&self) -> KeyId {
        KeyId::parse(&self.key_id).unwrap_or_else(|_| KeyId::from_bytes([0; 16]))
    }

    /// The key of this record in the store (see [`store_key`]).
    pub fn store_key(&self) -> String {
        store_key(&self.key_id, &self.region)
    }

    /// Whether this is the primary key of a multi-Region key.
    pub fn is_primary(&self) -> bool {
        self.multi_region
            .as_ref()
            .is_some_and(|mrk| mrk.primary_region == self.region)
    }

    /// Whether this is a replica key of a multi-Region key.
    pub fn is_replica(&self) -> bool {
        self.multi_region
            .as_ref()
            .is_some_and(|mrk| mrk.primary_region != self.region)
    }

    /// The key's scope (account and region).
    pub fn scope(&self) -> Option<Scope> {
        Scope::new(&self.region, &self.account_id).ok()
    }

    /// The key ARN.
    pub fn arn(&self) -> String {
        let parts = self.arn_parts();
        let mut arn = String::with_capacity(parts.iter().map(|part| part.len()).sum());
        for part in parts {
            arn.push_str(part);
        }
        arn
    }

    /// The key ARN, written only if it is displayed: for messages most calls never make.
    pub fn arn_display(&self) -> impl fmt::Display + '_ {
        struct Arn<'a>([&'a str; 6]);
        impl fmt::Display for Arn<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.iter().try_for_each(|part| f.write_str(part))
            }
        }
        Arn(self.arn_parts())
    }

    fn arn_parts(&self) -> [&str; 6] {
        [
            "arn:aws:kms:",
            &self.region,
            ":",
            &self.account_id,
            ":key/",
            &self.key_id,
        ]
    }

    /// AWS's `KeyMaterialId` of material `version`: 64 hex digits, SHA-256 of the key id and
    /// the version, so it is stable, names one material of one key, and changes with every
    /// rotation (a re-import of the same material keeps it).
    pub fn key_material_id(&self, version: u32) -> String {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"hsm-kms key material ");
        hasher.update(self.key_id.as_bytes());
        hasher.update(b"/");
        hasher.update(version.to_be_bytes());
        hex::encode(hasher.finalize())
    }

    /// Material `version` as the HSMs hold it: under its own `CKA_ID`, or under the pool
    /// object this record names for it.
    pub fn material(&self, version: u32) -> crate::cluster::MaterialId {
        use crate::cluster::MaterialId;
        match self
            .materials
            .iter()
            .find(|material| material.version == version)
            .and_then(|material| material.pool_object.as_ref())
        {
            Some(object) => MaterialId::pooled(self.key_id.clone(), version, object.clone()),
            None => MaterialId::new(self.key_id.clone(), version),
        }
    }

    /// The material version new ciphertexts use.
    pub fn current_version(&self) -> u32 {
        self.materials.last().map_or(1, |m| m.version)
    }

    /// Whether the key belongs to `scope`.
    pub fn in_scope(&self, scope: &Scope) -> bool {
        self.account_id == scope.account_id() && self.region == scope.region()
    }

    /// Whether scheduled deletion has begun destroying the material, so it can no longer be
    /// cancelled.
    pub fn destruction_begun(&self) -> bool {
        self.destruction_started || !self.destruction_pending.is_empty()
    }

    /// The key policy's text: the stored one, or AWS's default key policy for a record
    /// written before key policies.
    pub fn policy_text(&self) -> String {
        self.policy
            .clone()
            .unwrap_or_else(|| default_key_policy(&self.account_id))
    }

    /// The key policy, parsed on first use and kept with the record.
    pub fn key_policy(&self) -> Result<Arc<PolicyDocument>, KmsError> {
        Ok(self.parsed()?.0.clone())
    }

    /// Whether the key policy names the condition key `kms:ResourceAliases` (whose value
    /// costs a scan of the account's aliases, so it is filled only when some policy asks).
    pub fn policy_names_resource_aliases(&self) -> Result<bool, KmsError> {
        Ok(self.parsed()?.1)
    }

    fn parsed(&self) -> Result<&(Arc<PolicyDocument>, bool), KmsError> {
        if let Some(parsed) = self.parsed_policy.0.get() {
            return Ok(parsed);
        }
        let text = self.policy_text();
        let document = Arc::new(parse_key_policy(&text).map_err(|error| {
            KmsError::KmsInternal(format!(
                "the stored key policy of {} does not parse: {}",
                self.arn(),
                error.message()
            ))
        })?);
        let names_aliases = names_resource_aliases(&text);
        Ok(self
            .parsed_policy
            .0
            .get_or_init(|| (document, names_aliases)))
    }

    /// Number of on-demand rotations so far.
    pub fn on_demand_rotations(&self) -> usize {
        self.materials
            .iter()
            .filter(|m| m.rotation_type == Some(RotationType::OnDemand))
            .count()
    }
}

/// Whether a policy's text names the condition key `kms:ResourceAliases` (condition key
/// names are case-insensitive).
pub fn names_resource_aliases(policy_text: &str) -> bool {
    policy_text
        .to_ascii_lowercase()
        .contains("kms:resourcealiases")
}

/// An alias: a name in an account and region pointing at one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// The alias name, `alias/...`.
    pub name: String,
    /// The key id it points at.
    pub target_key_id: String,
    /// When it was created, in milliseconds since the epoch.
    pub creation_date: i64,
    /// When it last changed target (UpdateAlias), in milliseconds since the epoch.
    pub last_updated_date: i64,
}

/// An HSM change recorded before it is made, so a crash between the HSM and the metadata
/// leaves a trace that start-up finds and reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentRecord {
    /// What the HSM change is.
    pub kind: IntentKind,
    /// The key it is for.
    pub key_id: String,
    /// The material version it creates.
    pub version: u32,
    /// The cluster whose HSMs it touches.
    pub cluster: String,
    /// When it was recorded, in milliseconds since the epoch.
    pub created: i64,
}

/// What an intent was about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntentKind {
    /// Create a key's material (CreateKey or a rotation).
    CreateMaterial,
}

/// One grant on one key, as stored (table `grants`, key `<key id>/<grant id>`). The grant
/// token is not stored: tokens are handles derived from the key and grant ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// The grant id (64 hex digits).
    pub grant_id: String,
    /// The key id the grant is on.
    pub key_id: String,
    /// The account and region of the key (so also of the grant).
    pub account_id: String,
    /// The key's region.
    pub region: String,
    /// The optional name given at CreateGrant (retrying with the same name returns the same
    /// grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When it was created, in milliseconds since the epoch.
    pub creation_date: i64,
    /// The principal the grant allows, as an ARN.
    pub grantee_principal: String,
    /// The principal that may also retire the grant, as an ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring_principal: Option<String>,
    /// The account of the principal that created the grant.
    pub issuing_account: String,
    /// AWS operation names, sorted.
    pub operations: Vec<String>,
    /// The encryption context a call must have exactly (grant constraint
    /// `EncryptionContextEquals`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<BTreeMap<String, String>>,
    /// Pairs a call's encryption context must include (grant constraint
    /// `EncryptionContextSubset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<BTreeMap<String, String>>,
}
