//! Key states and AWS's key-state effects table, encoded as data.
//!
//! This module owns [`KeyState`], [`Operation`] (every key store operation,
//! by its AWS name) and [`check`]: for each (operation, state) either allowed
//! or the exact AWS exception and message. It decides only from the state;
//! key usage, origin, policy and existence are checked elsewhere, and it never
//! changes a state.
//!
//! The table follows AWS's "Key states of AWS KMS keys" page. Where that page
//! leaves a choice, or predates an operation, the choice is ours:
//! - cryptographic operations on a key pending deletion answer
//!   `KMSInvalidStateException` "... is pending deletion." (AWS allows either
//!   that or `DisabledException`; AWS's own CloudWatch alarm recipe matches
//!   this message);
//! - rotation: AWS forbids it for CloudHSM key stores, we allow it for our HSM
//!   keys. EnableKeyRotation, DisableKeyRotation and RotateKeyOnDemand answer
//!   `DisabledException` when disabled and `KMSInvalidStateException` when
//!   pending deletion; GetKeyRotationStatus and ListKeyRotations only read
//!   metadata and work when disabled or pending deletion (as AWS's table has
//!   GetKeyRotationStatus). On a key pending import all five answer AWS's
//!   `UnsupportedOperationException` "... origin is EXTERNAL which is not valid
//!   for this operation.". When the key is `Unavailable` (its HSMs cannot be
//!   reached) the settings and reads work, while RotateKeyOnDemand, which needs
//!   the HSMs, answers "... is unavailable.";
//! - the import operations: GetParametersForImport and ImportKeyMaterial work on a key
//!   that is Enabled, Disabled or PendingImport (re-importing the same material into a key
//!   that has it sets a new expiration, as AWS allows) and answer "... is pending
//!   deletion." when it is pending deletion; DeleteImportedKeyMaterial also works on a key
//!   pending deletion (AWS: "this operation does not change the KMS key's state"). All
//!   three need the HSMs and answer "... is unavailable." when they cannot be reached
//!   (AWS has no such cell: imported keys never live in custom key stores). That the key's
//!   origin is EXTERNAL is checked before the state, elsewhere;
//! - `Creating`, `Updating` and `PendingReplicaDeletion` belong to
//!   multi-Region keys. A replica is `Creating` while ReplicateKey copies its
//!   material; a primary whose deletion waits for its replicas is
//!   `PendingReplicaDeletion`; UpdatePrimaryRegion changes every copy in one
//!   atomic write, so `Updating` is never seen (it stays in the table for
//!   records that carry it). Every operation that depends on the state fails
//!   closed in them with `KMSInvalidStateException` "... is creating." /
//!   "... is updating." / "... is pending replica deletion.", except that
//!   CancelKeyDeletion cancels a `PendingReplicaDeletion` (the primary returns
//!   to Disabled, as from PendingDeletion);
//! - ReplicateKey and UpdatePrimaryRegion follow the metadata-update row (AWS:
//!   allowed when enabled, disabled or pending import; refused when pending
//!   deletion, creating, updating or pending replica deletion).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::KmsError;

/// The state of a KMS key, serialised with AWS's names (`PendingDeletion`, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum KeyState {
    /// A multi-Region replica being created.
    Creating,
    /// Usable.
    Enabled,
    /// Turned off by DisableKey (or by CancelKeyDeletion).
    Disabled,
    /// Scheduled for deletion by ScheduleKeyDeletion.
    PendingDeletion,
    /// An EXTERNAL-origin key waiting for its key material.
    PendingImport,
    /// A multi-Region replica being deleted.
    PendingReplicaDeletion,
    /// The key's key store is disconnected from its HSMs.
    Unavailable,
    /// A multi-Region key whose primary Region is changing.
    Updating,
}

impl KeyState {
    /// Every state, in the table's column order.
    pub const ALL: [KeyState; 8] = [
        KeyState::Enabled,
        KeyState::Disabled,
        KeyState::PendingDeletion,
        KeyState::PendingImport,
        KeyState::Unavailable,
        KeyState::Creating,
        KeyState::Updating,
        KeyState::PendingReplicaDeletion,
    ];

    /// The AWS name, as in `KeyMetadata.KeyState`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Creating => "Creating",
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::PendingImport => "PendingImport",
            KeyState::PendingReplicaDeletion => "PendingReplicaDeletion",
            KeyState::Unavailable => "Unavailable",
            KeyState::Updating => "Updating",
        }
    }

    /// This state's column in [`TABLE`] (the order of [`KeyState::ALL`]).
    fn column(self) -> usize {
        match self {
            KeyState::Enabled => 0,
            KeyState::Disabled => 1,
            KeyState::PendingDeletion => 2,
            KeyState::PendingImport => 3,
            KeyState::Unavailable => 4,
            KeyState::Creating => 5,
            KeyState::Updating => 6,
            KeyState::PendingReplicaDeletion => 7,
        }
    }
}

/// The prefix of every KMS policy action.
const ACTION_PREFIX: &str = "kms:";

/// Every operation of the key store, named as in the AWS KMS API.
#[non_exhaustive]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Operation {
    /// CancelKeyDeletion.
    CancelKeyDeletion,
    /// ConnectCustomKeyStore (no key: never restricted).
    ConnectCustomKeyStore,
    /// CreateCustomKeyStore (no key: never restricted).
    CreateCustomKeyStore,
    /// DeleteCustomKeyStore (no key: never restricted).
    DeleteCustomKeyStore,
    /// DescribeCustomKeyStores (no key: never restricted).
    DescribeCustomKeyStores,
    /// DisconnectCustomKeyStore (no key: never restricted).
    DisconnectCustomKeyStore,
    /// UpdateCustomKeyStore (no key: never restricted).
    UpdateCustomKeyStore,
    /// CreateAlias (checked against the target key).
    CreateAlias,
    /// CreateGrant.
    CreateGrant,
    /// CreateKey (no existing key: never restricted).
    CreateKey,
    /// Decrypt.
    Decrypt,
    /// DeleteAlias.
    DeleteAlias,
    /// DeleteImportedKeyMaterial (keys of origin EXTERNAL).
    DeleteImportedKeyMaterial,
    /// DescribeKey.
    DescribeKey,
    /// DeriveSharedSecret.
    DeriveSharedSecret,
    /// DisableKey.
    DisableKey,
    /// DisableKeyRotation.
    DisableKeyRotation,
    /// EnableKey.
    EnableKey,
    /// EnableKeyRotation.
    EnableKeyRotation,
    /// Encrypt.
    Encrypt,
    /// GenerateDataKey.
    GenerateDataKey,
    /// GenerateDataKeyWithoutPlaintext.
    GenerateDataKeyWithoutPlaintext,
    /// GenerateDataKeyPair.
    GenerateDataKeyPair,
    /// GenerateDataKeyPairWithoutPlaintext.
    GenerateDataKeyPairWithoutPlaintext,
    /// GenerateRandom (no key: never restricted).
    GenerateRandom,
    /// GenerateMac.
    GenerateMac,
    /// GetKeyPolicy.
    GetKeyPolicy,
    /// GetPublicKey.
    GetPublicKey,
    /// GetParametersForImport (keys of origin EXTERNAL).
    GetParametersForImport,
    /// GetKeyRotationStatus.
    GetKeyRotationStatus,
    /// ImportKeyMaterial (keys of origin EXTERNAL).
    ImportKeyMaterial,
    /// ListAliases.
    ListAliases,
    /// ListGrants.
    ListGrants,
    /// ListKeyPolicies.
    ListKeyPolicies,
    /// ListKeyRotations.
    ListKeyRotations,
    /// ListKeys (no single key: never restricted).
    ListKeys,
    /// ListResourceTags.
    ListResourceTags,
    /// ListRetirableGrants.
    ListRetirableGrants,
    /// PutKeyPolicy.
    PutKeyPolicy,
    /// ReEncrypt (checked against the source and the destination key).
    ReEncrypt,
    /// RetireGrant.
    RetireGrant,
    /// RevokeGrant.
    RevokeGrant,
    /// ReplicateKey (checked against the primary key).
    ReplicateKey,
    /// RotateKeyOnDemand.
    RotateKeyOnDemand,
    /// ScheduleKeyDeletion.
    ScheduleKeyDeletion,
    /// Sign.
    Sign,
    /// TagResource.
    TagResource,
    /// UntagResource.
    UntagResource,
    /// UpdateAlias (checked against the new target key only: the current
    /// target may be in any state).
    UpdateAlias,
    /// UpdateKeyDescription.
    UpdateKeyDescription,
    /// UpdatePrimaryRegion (checked against the primary and the new primary).
    UpdatePrimaryRegion,
    /// Verify.
    Verify,
    /// VerifyMac.
    VerifyMac,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 53] = [
        Operation::CancelKeyDeletion,
        Operation::ConnectCustomKeyStore,
        Operation::CreateCustomKeyStore,
        Operation::DeleteCustomKeyStore,
        Operation::DescribeCustomKeyStores,
        Operation::DisconnectCustomKeyStore,
        Operation::UpdateCustomKeyStore,
        Operation::CreateAlias,
        Operation::CreateGrant,
        Operation::CreateKey,
        Operation::Decrypt,
        Operation::DeleteAlias,
        Operation::DescribeKey,
        Operation::DisableKey,
        Operation::DisableKeyRotation,
        Operation::EnableKey,
        Operation::EnableKeyRotation,
        Operation::Encrypt,
        Operation::GenerateDataKey,
        Operation::GenerateDataKeyWithoutPlaintext,
        Operation::GenerateRandom,
        Operation::GetKeyPolicy,
        Operation::GetKeyRotationStatus,
        Operation::ListAliases,
        Operation::ListGrants,
        Operation::ListKeyPolicies,
        Operation::ListKeyRotations,
        Operation::ListKeys,
        Operation::ListResourceTags,
        Operation::ListRetirableGrants,
        Operation::PutKeyPolicy,
        Operation::ReEncrypt,
        Operation::RetireGrant,
        Operation::RevokeGrant,
        Operation::RotateKeyOnDemand,
        Operation::ScheduleKeyDeletion,
        Operation::TagResource,
        Operation::UntagResource,
        Operation::UpdateAlias,
        Operation::UpdateKeyDescription,
        Operation::Sign,
        Operation::Verify,
        Operation::GetPublicKey,
        Operation::GenerateMac,
        Operation::VerifyMac,
        Operation::DeriveSharedSecret,
        Operation::GenerateDataKeyPair,
        Operation::GenerateDataKeyPairWithoutPlaintext,
        Operation::GetParametersForImport,
        Operation::ImportKeyMaterial,
        Operation::DeleteImportedKeyMaterial,
        Operation::ReplicateKey,
        Operation::UpdatePrimaryRegion,
    ];

    /// The AWS operation name (`X-Amz-Target: TrentService.<name>`).
    pub fn as_str(self) -> &'static str {
        let action = self.policy_action();
        action.strip_prefix(ACTION_PREFIX).unwrap_or(action)
    }

    /// The policy action that authorizes the operation (`kms:Encrypt`): its name after the
    /// service's prefix, one string per operation, so naming it costs nothing. ReEncrypt is
    /// authorized as `kms:ReEncryptFrom` on its source key and `kms:ReEncryptTo` on its
    /// destination key, so it has no single action (`kms:ReEncrypt*` matches both).
    pub fn policy_action(self) -> &'static str {
        match self {
            Operation::CancelKeyDeletion => "kms:CancelKeyDeletion",
            Operation::ConnectCustomKeyStore => "kms:ConnectCustomKeyStore",
            Operation::CreateCustomKeyStore => "kms:CreateCustomKeyStore",
            Operation::DeleteCustomKeyStore => "kms:DeleteCustomKeyStore",
            Operation::DescribeCustomKeyStores => "kms:DescribeCustomKeyStores",
            Operation::DisconnectCustomKeyStore => "kms:DisconnectCustomKeyStore",
            Operation::UpdateCustomKeyStore => "kms:UpdateCustomKeyStore",
            Operation::CreateAlias => "kms:CreateAlias",
            Operation::CreateGrant => "kms:CreateGrant",
            Operation::CreateKey => "kms:CreateKey",
            Operation::Decrypt => "kms:Decrypt",
            Operation::DeleteAlias => "kms:DeleteAlias",
            Operation::DescribeKey => "kms:DescribeKey",
            Operation::DisableKey => "kms:DisableKey",
            Operation::DisableKeyRotation => "kms:DisableKeyRotation",
            Operation::EnableKey => "kms:EnableKey",
            Operation::EnableKeyRotation => "kms:EnableKeyRotation",
            Operation::Encrypt => "kms:Encrypt",
            Operation::GenerateDataKey => "kms:GenerateDataKey",
            Operation::GenerateDataKeyWithoutPlaintext => "kms:GenerateDataKeyWithoutPlaintext",
            Operation::GenerateRandom => "kms:GenerateRandom",
            Operation::GetKeyPolicy => "kms:GetKeyPolicy",
            Operation::GetKeyRotationStatus => "kms:GetKeyRotationStatus",
            Operation::ListAliases => "kms:ListAliases",
            Operation::ListGrants => "kms:ListGrants",
            Operation::ListKeyPolicies => "kms:ListKeyPolicies",
            Operation::ListKeyRotations => "kms:ListKeyRotations",
            Operation::ListKeys => "kms:ListKeys",
            Operation::ListResourceTags => "kms:ListResourceTags",
            Operation::ListRetirableGrants => "kms:ListRetirableGrants",
            Operation::PutKeyPolicy => "kms:PutKeyPolicy",
            Operation::ReEncrypt => "kms:ReEncrypt",
            Operation::RetireGrant => "kms:RetireGrant",
            Operation::RevokeGrant => "kms:RevokeGrant",
            Operation::RotateKeyOnDemand => "kms:RotateKeyOnDemand",
            Operation::ScheduleKeyDeletion => "kms:ScheduleKeyDeletion",
            Operation::TagResource => "kms:TagResource",
            Operation::UntagResource => "kms:UntagResource",
            Operation::UpdateAlias => "kms:UpdateAlias",
            Operation::UpdateKeyDescription => "kms:UpdateKeyDescription",
            Operation::Sign => "kms:Sign",
            Operation::Verify => "kms:Verify",
            Operation::GetPublicKey => "kms:GetPublicKey",
            Operation::GenerateMac => "kms:GenerateMac",
            Operation::VerifyMac => "kms:VerifyMac",
            Operation::DeriveSharedSecret => "kms:DeriveSharedSecret",
            Operation::GenerateDataKeyPair => "kms:GenerateDataKeyPair",
            Operation::GenerateDataKeyPairWithoutPlaintext => {
                "kms:GenerateDataKeyPairWithoutPlaintext"
            }
            Operation::GetParametersForImport => "kms:GetParametersForImport",
            Operation::ImportKeyMaterial => "kms:ImportKeyMaterial",
            Operation::DeleteImportedKeyMaterial => "kms:DeleteImportedKeyMaterial",
            Operation::ReplicateKey => "kms:ReplicateKey",
            Operation::UpdatePrimaryRegion => "kms:UpdatePrimaryRegion",
        }
    }

    /// The operation an AWS name (`Encrypt`) denotes, if the key store serves it.
    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Whether the operation only reads (CloudTrail's `readOnly`): it changes no metadata,
    /// so its audit event need not be durable before it returns.
    pub fn is_read_only(self) -> bool {
        use Operation::*;
        matches!(
            self,
            Encrypt
                | Decrypt
                | ReEncrypt
                | GenerateDataKey
                | GenerateDataKeyWithoutPlaintext
                | Sign
                | Verify
                | GetPublicKey
                | GenerateMac
                | VerifyMac
                | DeriveSharedSecret
                | GenerateDataKeyPair
                | GenerateDataKeyPairWithoutPlaintext
                | GenerateRandom
                | DescribeKey
                | DescribeCustomKeyStores
                | GetKeyPolicy
                | GetKeyRotationStatus
                | ListAliases
                | ListGrants
                | ListKeyPolicies
                | ListKeyRotations
                | ListKeys
                | ListResourceTags
                | ListRetirableGrants
        )
    }

    /// Whether a principal of another account may call the operation on a key, naming
    /// it by its key ARN (AWS's list: the cryptographic operations, DescribeKey,
    /// GetKeyRotationStatus and the grant operations).
    pub fn allows_cross_account(self) -> bool {
        use Operation::*;
        matches!(
            self,
            Encrypt
                | Decrypt
                | ReEncrypt
                | GenerateDataKey
                | GenerateDataKeyWithoutPlaintext
                | Sign
                | Verify
                | GetPublicKey
                | GenerateMac
                | VerifyMac
                | DeriveSharedSecret
                | GenerateDataKeyPair
                | GenerateDataKeyPairWithoutPlaintext
                | DescribeKey
                | GetKeyRotationStatus
                | CreateGrant
                | ListGrants
                | RetireGrant
                | RevokeGrant
        )
    }

    /// The row of [`TABLE`] that governs this operation.
    fn row(self) -> Row {
        use Operation::*;
        match self {
            CreateKey
            | ListKeys
            | GenerateRandom
            | DescribeKey
            | GetKeyPolicy
            | PutKeyPolicy
            | ListKeyPolicies
            | ListGrants
            | ListRetirableGrants
            | RetireGrant
            | RevokeGrant
            | DeleteAlias
            | ListAliases
            | ListResourceTags
            | ConnectCustomKeyStore
            | CreateCustomKeyStore
            | DeleteCustomKeyStore
            | DescribeCustomKeyStores
            | DisconnectCustomKeyStore
            | UpdateCustomKeyStore => Row::Unrestricted,
            Encrypt
            | Decrypt
            | ReEncrypt
            | GenerateDataKey
            | GenerateDataKeyWithoutPlaintext
            | Sign
            | Verify
            | GetPublicKey
            | GenerateMac
            | VerifyMac
            | DeriveSharedSecret
            | GenerateDataKeyPair
            | GenerateDataKeyPairWithoutPlaintext => Row::Cryptographic,
            CreateGrant => Row::CreateGrant,
            EnableKey | DisableKey => Row::EnableDisable,
            ScheduleKeyDeletion => Row::ScheduleDeletion,
            CancelKeyDeletion => Row::CancelDeletion,
            CreateAlias | UpdateAlias | TagResource | UntagResource | UpdateKeyDescription
            | ReplicateKey | UpdatePrimaryRegion => Row::MetadataUpdate,
            EnableKeyRotation | DisableKeyRotation => Row::RotationSettings,
            RotateKeyOnDemand => Row::RotateOnDemand,
            GetKeyRotationStatus | ListKeyRotations => Row::RotationRead,
            GetParametersForImport | ImportKeyMaterial => Row::Import,
            DeleteImportedKeyMaterial => Row::DeleteImportedMaterial,
        }
    }
}

/// Whether `op` may run on a key in `state`; if not, the AWS exception with
/// its message naming `key_arn`.
pub fn check(op: Operation, state: KeyState, key_arn: impl fmt::Display) -> Result<(), KmsError> {
    match TABLE[op.row() as usize][state.column()] {
        Effect::Allow => Ok(()),
        Effect::Deny(exception, reason) => {
            let message = format!("{key_arn} {}", reason.text());
            Err(match exception {
                Exception::Disabled => KmsError::Disabled(message),
                Exception::InvalidState => KmsError::KmsInvalidState(message),
                Exception::Unsupported => KmsError::UnsupportedOperation(message),
            })
        }
    }
}

/// Groups of operations that share one row of the table.
#[derive(Clone, Copy)]
enum Row {
    Unrestricted,
    Cryptographic,
    CreateGrant,
    EnableDisable,
    ScheduleDeletion,
    CancelDeletion,
    MetadataUpdate,
    RotationSettings,
    RotateOnDemand,
    RotationRead,
    Import,
    DeleteImportedMaterial,
}

/// One cell: allowed, or the exception and the reason in its message.
#[derive(Clone, Copy)]
enum Effect {
    Allow,
    Deny(Exception, Reason),
}

#[derive(Clone, Copy)]
enum Exception {
    Disabled,
    InvalidState,
    Unsupported,
}

/// What the message says after the key ARN.
#[derive(Clone, Copy)]
enum Reason {
    IsDisabled,
    IsPendingDeletion,
    IsNotPendingDeletion,
    IsPendingImport,
    IsUnavailable,
    OriginExternal,
    IsCreating,
    IsUpdating,
    IsPendingReplicaDeletion,
}

impl Reason {
    fn text(self) -> &'static str {
        match self {
            Reason::IsDisabled => "is disabled.",
            Reason::IsPendingDeletion => "is pending deletion.",
            Reason::IsNotPendingDeletion => "is not pending deletion.",
            Reason::IsPendingImport => "is pending import.",
            Reason::IsUnavailable => "is unavailable.",
            Reason::OriginExternal => "origin is EXTERNAL which is not valid for this operation.",
            Reason::IsCreating => "is creating.",
            Reason::IsUpdating => "is updating.",
            Reason::IsPendingReplicaDeletion => "is pending replica deletion.",
        }
    }
}

const OK: Effect = Effect::Allow;
const DISABLED: Effect = Effect::Deny(Exception::Disabled, Reason::IsDisabled);
const PENDING_DELETION: Effect = Effect::Deny(Exception::InvalidState, Reason::IsPendingDeletion);
const NOT_PENDING: Effect = Effect::Deny(Exception::InvalidState, Reason::IsNotPendingDeletion);
const PENDING_IMPORT: Effect = Effect::Deny(Exception::InvalidState, Reason::IsPendingImport);
const UNAVAILABLE: Effect = Effect::Deny(Exception::InvalidState, Reason::IsUnavailable);
const EXTERNAL: Effect = Effect::Deny(Exception::Unsupported, Reason::OriginExternal);
const CREATING: Effect = Effect::Deny(Exception::InvalidState, Reason::IsCreating);
const UPDATING: Effect = Effect::Deny(Exception::InvalidState, Reason::IsUpdating);
const REPLICA: Effect = Effect::Deny(Exception::InvalidState, Reason::IsPendingReplicaDeletion);

/// The key-state effects table: one row per [`Row`] (in declaration order),
/// one column per state in the order of [`KeyState::ALL`].
#[rustfmt::skip]
const TABLE: [[Effect; 8]; 12] = [
    // Enabled,   Disabled,    PendingDeletion,  PendingImport,  Unavailable, Creating, Updating, PendingReplicaDeletion
    [OK,          OK,          OK,               OK,             OK,          OK,       OK,       OK],          // Unrestricted
    [OK,          DISABLED,    PENDING_DELETION, PENDING_IMPORT, UNAVAILABLE, CREATING, UPDATING, REPLICA],     // Cryptographic
    [OK,          DISABLED,    PENDING_DELETION, PENDING_IMPORT, OK,          CREATING, UPDATING, REPLICA],     // CreateGrant
    [OK,          OK,          PENDING_DELETION, PENDING_IMPORT, OK,          CREATING, UPDATING, REPLICA],     // EnableDisable
    [OK,          OK,          PENDING_DELETION, OK,             OK,          CREATING, UPDATING, REPLICA],     // ScheduleDeletion
    [NOT_PENDING, NOT_PENDING, OK,               NOT_PENDING,    NOT_PENDING, NOT_PENDING, NOT_PENDING, OK],  // CancelDeletion
    [OK,          OK,          PENDING_DELETION, OK,             OK,          CREATING, UPDATING, REPLICA],     // MetadataUpdate
    [OK,          DISABLED,    PENDING_DELETION, EXTERNAL,       OK,          CREATING, UPDATING, REPLICA],     // RotationSettings
    [OK,          DISABLED,    PENDING_DELETION, EXTERNAL,       UNAVAILABLE, CREATING, UPDATING, REPLICA],     // RotateOnDemand
    [OK,          OK,          OK,               EXTERNAL,       OK,          CREATING, UPDATING, REPLICA],     // RotationRead
    [OK,          OK,          PENDING_DELETION, OK,             UNAVAILABLE, CREATING, UPDATING, REPLICA],     // Import
    [OK,          OK,          OK,               OK,             UNAVAILABLE, CREATING, UPDATING, REPLICA],     // DeleteImportedMaterial
];

// Every row has its line in the table (indexing by `Row as usize` stays in bounds).
const _: () = assert!(TABLE.len() == Row::DeleteImportedMaterial as usize + 1);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    /// The expected outcome of every cell, written out independently of
    /// [`TABLE`]: `"ok"` or `"<code>: <text after the ARN>"`.
    /// Columns: Enabled, Disabled, PendingDeletion, PendingImport, Unavailable,
    /// Creating, Updating, PendingReplicaDeletion.
    fn expected(op: Operation) -> [&'static str; 8] {
        const D: &str = "DisabledException: is disabled.";
        const PD: &str = "KMSInvalidStateException: is pending deletion.";
        const NPD: &str = "KMSInvalidStateException: is not pending deletion.";
        const PI: &str = "KMSInvalidStateException: is pending import.";
        const UN: &str = "KMSInvalidStateException: is unavailable.";
        const EXT: &str = "UnsupportedOperationException: origin is EXTERNAL which is not valid for this operation.";
        const CR: &str = "KMSInvalidStateException: is creating.";
        const UP: &str = "KMSInvalidStateException: is updating.";
        const PRD: &str = "KMSInvalidStateException: is pending replica deletion.";
        use Operation::*;
        match op {
            Encrypt
            | Decrypt
            | ReEncrypt
            | GenerateDataKey
            | GenerateDataKeyWithoutPlaintext
            | Sign
            | Verify
            | GetPublicKey
            | GenerateMac
            | VerifyMac
            | DeriveSharedSecret
            | GenerateDataKeyPair
            | GenerateDataKeyPairWithoutPlaintext => ["ok", D, PD, PI, UN, CR, UP, PRD],
            CreateGrant => ["ok", D, PD, PI, "ok", CR, UP, PRD],
            EnableKey | DisableKey => ["ok", "ok", PD, PI, "ok", CR, UP, PRD],
            ScheduleKeyDeletion => ["ok", "ok", PD, "ok", "ok", CR, UP, PRD],
            CancelKeyDeletion => [NPD, NPD, "ok", NPD, NPD, NPD, NPD, "ok"],
            CreateAlias | UpdateAlias | TagResource | UntagResource | UpdateKeyDescription
            | ReplicateKey | UpdatePrimaryRegion => ["ok", "ok", PD, "ok", "ok", CR, UP, PRD],
            EnableKeyRotation | DisableKeyRotation => ["ok", D, PD, EXT, "ok", CR, UP, PRD],
            RotateKeyOnDemand => ["ok", D, PD, EXT, UN, CR, UP, PRD],
            GetKeyRotationStatus | ListKeyRotations => ["ok", "ok", "ok", EXT, "ok", CR, UP, PRD],
            GetParametersForImport | ImportKeyMaterial => ["ok", "ok", PD, "ok", UN, CR, UP, PRD],
            DeleteImportedKeyMaterial => ["ok", "ok", "ok", "ok", UN, CR, UP, PRD],
            CreateKey
            | ListKeys
            | GenerateRandom
            | DescribeKey
            | GetKeyPolicy
            | PutKeyPolicy
            | ListKeyPolicies
            | ListGrants
            | ListRetirableGrants
            | RetireGrant
            | RevokeGrant
            | DeleteAlias
            | ListAliases
            | ListResourceTags
            | ConnectCustomKeyStore
            | CreateCustomKeyStore
            | DeleteCustomKeyStore
            | DescribeCustomKeyStores
            | DisconnectCustomKeyStore
            | UpdateCustomKeyStore => ["ok"; 8],
        }
    }

    fn outcome(op: Operation, state: KeyState) -> String {
        match check(op, state, ARN) {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                let text = e
                    .message()
                    .strip_prefix(&format!("{ARN} "))
                    .unwrap_or_else(|| panic!("message must start with the ARN: {e:?}"));
                format!("{}: {text}", e.code())
            }
        }
    }

    #[test]
    fn every_cell_of_the_state_table() {
        let mut cells = 0;
        for op in Operation::ALL {
            for (state, want) in KeyState::ALL.into_iter().zip(expected(op)) {
                assert_eq!(
                    outcome(op, state),
                    want,
                    "{} in {}",
                    op.as_str(),
                    state.as_str()
                );
                cells += 1;
            }
        }
        assert_eq!(cells, 53 * 8);
    }

    #[test]
    fn messages_are_exactly_the_aws_messages() {
        let e = check(Operation::Encrypt, KeyState::Disabled, ARN).unwrap_err();
        assert_eq!(e.code(), "DisabledException");
        assert_eq!(e.message(), format!("{ARN} is disabled."));
        let e = check(Operation::Decrypt, KeyState::PendingDeletion, ARN).unwrap_err();
        assert_eq!(e.code(), "KMSInvalidStateException");
        assert_eq!(e.message(), format!("{ARN} is pending deletion."));
        let e = check(Operation::CancelKeyDeletion, KeyState::Enabled, ARN).unwrap_err();
        assert_eq!(e.code(), "KMSInvalidStateException");
        assert_eq!(e.message(), format!("{ARN} is not pending deletion."));
    }

    /// One arm per operation, no wildcard: adding an operation without adding
    /// it to `ALL` makes this test fail.
    fn ordinal(op: Operation) -> usize {
        use Operation::*;
        match op {
            CancelKeyDeletion => 0,
            CreateAlias => 1,
            CreateGrant => 2,
            CreateKey => 3,
            Decrypt => 4,
            DeleteAlias => 5,
            DescribeKey => 6,
            DisableKey => 7,
            DisableKeyRotation => 8,
            EnableKey => 9,
            EnableKeyRotation => 10,
            Encrypt => 11,
            GenerateDataKey => 12,
            GenerateDataKeyWithoutPlaintext => 13,
            GenerateRandom => 14,
            GetKeyPolicy => 15,
            GetKeyRotationStatus => 16,
            ListAliases => 17,
            ListGrants => 18,
            ListKeyPolicies => 19,
            ListKeyRotations => 20,
            ListKeys => 21,
            ListResourceTags => 22,
            ListRetirableGrants => 23,
            PutKeyPolicy => 24,
            ReEncrypt => 25,
            RetireGrant => 26,
            RevokeGrant => 27,
            RotateKeyOnDemand => 28,
            ScheduleKeyDeletion => 29,
            TagResource => 30,
            UntagResource => 31,
            UpdateAlias => 32,
            UpdateKeyDescription => 33,
            ConnectCustomKeyStore => 34,
            CreateCustomKeyStore => 35,
            DeleteCustomKeyStore => 36,
            DescribeCustomKeyStores => 37,
            DisconnectCustomKeyStore => 38,
            UpdateCustomKeyStore => 39,
            Sign => 40,
            Verify => 41,
            GetPublicKey => 42,
            GenerateMac => 43,
            VerifyMac => 44,
            GetParametersForImport => 45,
            ImportKeyMaterial => 46,
            DeleteImportedKeyMaterial => 47,
            DeriveSharedSecret => 48,
            GenerateDataKeyPair => 49,
            GenerateDataKeyPairWithoutPlaintext => 50,
            ReplicateKey => 51,
            UpdatePrimaryRegion => 52,
        }
    }

    #[test]
    fn all_lists_every_operation_once() {
        let mut seen = [false; Operation::ALL.len()];
        for op in Operation::ALL {
            let i = ordinal(op);
            assert!(!seen[i], "{op:?} listed twice");
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn operation_names_are_aws_operation_names() {
        // Operation names of the AWS KMS API model (service-2.json, 2014-11-01).
        const MODEL: &[&str] = &[
            "CancelKeyDeletion",
            "ConnectCustomKeyStore",
            "CreateAlias",
            "CreateCustomKeyStore",
            "CreateGrant",
            "CreateKey",
            "Decrypt",
            "DeleteAlias",
            "DeleteCustomKeyStore",
            "DeleteImportedKeyMaterial",
            "DeriveSharedSecret",
            "DescribeCustomKeyStores",
            "DescribeKey",
            "DisableKey",
            "DisableKeyRotation",
            "DisconnectCustomKeyStore",
            "EnableKey",
            "EnableKeyRotation",
            "Encrypt",
            "GenerateDataKey",
            "GenerateDataKeyPair",
            "GenerateDataKeyPairWithoutPlaintext",
            "GenerateDataKeyWithoutPlaintext",
            "GenerateMac",
            "GenerateRandom",
            "GetKeyPolicy",
            "GetKeyRotationStatus",
            "GetParametersForImport",
            "GetPublicKey",
            "ImportKeyMaterial",
            "ListAliases",
            "ListGrants",
            "ListKeyPolicies",
            "ListKeyRotations",
            "ListKeys",
            "ListResourceTags",
            "ListRetirableGrants",
            "PutKeyPolicy",
            "ReEncrypt",
            "ReplicateKey",
            "RetireGrant",
            "RevokeGrant",
            "RotateKeyOnDemand",
            "ScheduleKeyDeletion",
            "Sign",
            "TagResource",
            "UntagResource",
            "UpdateAlias",
            "UpdateCustomKeyStore",
            "UpdateKeyDescription",
            "UpdatePrimaryRegion",
            "Verify",
            "VerifyMac",
        ];
        for op in Operation::ALL {
            assert!(MODEL.contains(&op.as_str()), "{op:?}");
            assert_eq!(format!("{op:?}"), op.as_str());
        }
    }

    #[test]
    fn key_states_serialise_with_aws_names() {
        for state in KeyState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(format!("{state:?}"), state.as_str());
            assert_eq!(serde_json::from_str::<KeyState>(&json).unwrap(), state);
        }
        assert!(serde_json::from_str::<KeyState>("\"pendingdeletion\"").is_err());
        let columns: Vec<usize> = KeyState::ALL.iter().map(|s| s.column()).collect();
        assert_eq!(columns, (0..8).collect::<Vec<_>>());
    }
}
