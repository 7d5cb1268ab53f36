//! Requests and responses of every key store operation, in the AWS KMS API model's shapes
//! and member names, so the library, the CLI's JSON output and the HTTP protocol share them.
//! Blobs travel as standard base64, timestamps as epoch seconds. Plaintexts and data keys are
//! [`SecretSlice`]s: their `Debug` is redacted and they serialise only into a body on the wire
//! (a response, or the request of a client such as the CLI with `--endpoint-url`).

use std::collections::BTreeMap;

use secrecy::{SecretSlice, SecretString};
use serde::{Deserialize, Serialize};

/// The one encryption algorithm of symmetric keys.
pub const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";

/// A tag on a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// The key of the tag.
    pub tag_key: String,
    /// The value of the tag.
    pub tag_value: String,
}

/// Encryption context: a string map bound to a ciphertext as authenticated data.
pub type EncryptionContextMap = BTreeMap<String, String>;

/// The parameters of CreateKey, which creates a customer managed key in the caller's
/// account and region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateKeyRequest {
    /// A description of the KMS key.
    pub description: Option<String>,
    /// Determines the cryptographic operations for which you can use the KMS key.
    pub key_usage: Option<String>,
    /// Specifies the type of KMS key to create.
    pub key_spec: Option<String>,
    /// Deprecated by AWS in favour of `KeySpec`; accepted as its synonym.
    pub customer_master_key_spec: Option<String>,
    /// The source of the key material for the KMS key.
    pub origin: Option<String>,
    /// Assigns one or more tags to the KMS key.
    pub tags: Vec<Tag>,
    /// Creates the KMS key in the specified custom key store. The `ConnectionState` of the
    /// custom key store must be `CONNECTED`.
    pub custom_key_store_id: Option<String>,
    /// Creates a multi-Region primary key (`mrk-` key id) that ReplicateKey can copy into
    /// other Regions.
    pub multi_region: Option<bool>,
    /// The key policy to attach to the KMS key.
    pub policy: Option<String>,
    /// Skips ("bypasses") the key policy lockout safety check.
    pub bypass_policy_lockout_safety_check: Option<bool>,
}

/// AWS's KeyMetadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    /// The twelve-digit account ID of the Amazon Web Services account that owns the KMS
    /// key.
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    /// The globally unique identifier for the KMS key.
    pub key_id: String,
    /// The Amazon Resource Name (ARN) of the KMS key.
    pub arn: String,
    /// The date and time when the KMS key was created.
    pub creation_date: f64,
    /// Specifies whether the KMS key is enabled.
    pub enabled: bool,
    /// The description of the KMS key.
    pub description: String,
    /// The cryptographic operations for which you can use the KMS key.
    pub key_usage: String,
    /// The current status of the KMS key.
    pub key_state: String,
    /// The date and time after which KMS deletes this KMS key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    /// The source of the key material for the KMS key.
    pub origin: String,
    /// A unique identifier for the custom key store that contains the KMS key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    /// The cluster that holds the key's material, for keys in a custom key store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_hsm_cluster_id: Option<String>,
    /// The manager of the KMS key.
    pub key_manager: String,
    /// The same value as `KeySpec`, under the name AWS deprecated.
    pub customer_master_key_spec: String,
    /// Describes the type of key material in the KMS key.
    pub key_spec: String,
    /// The encryption algorithms that the KMS key supports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encryption_algorithms: Vec<String>,
    /// The signing algorithms that the KMS key supports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_algorithms: Vec<String>,
    /// The message authentication code (MAC) algorithm that the HMAC KMS key supports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mac_algorithms: Vec<String>,
    /// The key agreement algorithm used to derive a shared secret.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_agreement_algorithms: Vec<String>,
    /// Indicates whether the KMS key is a multi-Region (`True`) or regional (`False`) key.
    pub multi_region: bool,
    /// Lists the primary and replica keys in the same multi-Region key (multi-Region keys
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_region_configuration: Option<MultiRegionConfiguration>,
    /// The waiting period before the primary key in a multi-Region key is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_deletion_window_in_days: Option<u32>,
    /// The material new ciphertexts or signatures use (absent while a key has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_key_material_id: Option<String>,
    /// For keys of origin EXTERNAL with imported material: whether it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<String>,
    /// For keys of origin EXTERNAL: when the imported material expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<f64>,
}

/// AWS's MultiRegionConfiguration: the type of a multi-Region key and its related keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MultiRegionConfiguration {
    /// Indicates whether the KMS key is a `PRIMARY` or `REPLICA` key.
    pub multi_region_key_type: String,
    /// Displays the key ARN and Region of the primary key (this key, if it is the primary).
    pub primary_key: MultiRegionKey,
    /// Displays the key ARNs and Regions of all replica keys (this key, if it is a replica).
    pub replica_keys: Vec<MultiRegionKey>,
}

/// AWS's MultiRegionKey: one primary or replica key of a multi-Region key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MultiRegionKey {
    /// Displays the key ARN of a primary or replica key of a multi-Region key.
    pub arn: String,
    /// Displays the Amazon Web Services Region of a primary or replica key.
    pub region: String,
}

/// The parameters of ReplicateKey.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReplicateKeyRequest {
    /// Identifies the multi-Region primary key that is being replicated.
    pub key_id: String,
    /// The Region ID of the Amazon Web Services Region for this replica key.
    pub replica_region: String,
    /// The key policy to attach to the KMS key (default: the default key policy).
    pub policy: Option<String>,
    /// Skips ("bypasses") the key policy lockout safety check.
    pub bypass_policy_lockout_safety_check: Option<bool>,
    /// A description of the KMS key.
    pub description: Option<String>,
    /// Assigns one or more tags to the replica key.
    pub tags: Vec<Tag>,
}

/// ReplicateKey's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicateKeyResponse {
    /// Displays details about the new replica key.
    pub replica_key_metadata: KeyMetadata,
    /// The key policy of the new replica key.
    pub replica_policy: String,
    /// The tags on the new replica key.
    pub replica_tags: Vec<Tag>,
}

/// The parameters of UpdatePrimaryRegion.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdatePrimaryRegionRequest {
    /// Identifies the current primary key.
    pub key_id: String,
    /// The Amazon Web Services Region of the new primary key.
    pub primary_region: String,
}

/// A response holding one key's metadata (CreateKey, DescribeKey).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadataResponse {
    /// Metadata associated with the KMS key.
    pub key_metadata: KeyMetadata,
}

/// The parameters of the operations that name only a key (DescribeKey, EnableKey,
/// DisableKey, CancelKeyDeletion, GetPublicKey, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct KeyIdRequest {
    /// Identifies the KMS key for the grant.
    pub key_id: String,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
}

/// Paging parameters of the list operations that take no filter (ListKeys).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListRequest {
    /// Use this parameter to specify the maximum number of items to return.
    pub limit: Option<i64>,
    /// Use this parameter in a subsequent request after you receive a response with
    /// truncated results.
    pub marker: Option<String>,
}

/// One key in ListKeys' answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyListEntry {
    /// Unique identifier of the key.
    pub key_id: String,
    /// ARN of the key.
    pub key_arn: String,
}

/// What ListKeys returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    /// A list of KMS keys.
    pub keys: Vec<KeyListEntry>,
    /// A flag that indicates whether there are more items in the list.
    pub truncated: bool,
    /// When `Truncated` is true, this element is present and contains the value to use for
    /// the `Marker` parameter in a subsequent request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// The parameters of ScheduleKeyDeletion, which schedules the deletion of a KMS key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ScheduleKeyDeletionRequest {
    /// The unique identifier of the KMS key to delete.
    pub key_id: String,
    /// The waiting period, specified in number of days.
    pub pending_window_in_days: Option<i64>,
}

/// What ScheduleKeyDeletion returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionResponse {
    /// The key ARN of the KMS key whose deletion is scheduled.
    pub key_id: String,
    /// The date and time after which KMS deletes the KMS key (absent for a multi-Region
    /// primary key waiting for its replicas' deletion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    /// The current status of the KMS key.
    pub key_state: String,
    /// The waiting period before the KMS key is deleted.
    pub pending_window_in_days: u32,
}

/// A response that names only the key (by ARN).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdResponse {
    /// Identifies the KMS key whose deletion is being canceled.
    pub key_id: String,
}

/// The parameters of UpdateKeyDescription, which updates the description of a KMS key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateKeyDescriptionRequest {
    /// Updates the description of the specified KMS key.
    pub key_id: String,
    /// New description for the KMS key.
    pub description: String,
}

/// The parameters of TagResource, which adds or edits tags on a key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TagResourceRequest {
    /// Identifies a customer managed key in the account and Region.
    pub key_id: String,
    /// One or more tags.
    pub tags: Vec<Tag>,
}

/// The parameters of UntagResource, which removes tags, named by their keys, from a key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UntagResourceRequest {
    /// Identifies the KMS key from which you are removing tags.
    pub key_id: String,
    /// One or more tag keys.
    pub tag_keys: Vec<String>,
}

/// The parameters of ListResourceTags, which returns all tags on the specified KMS key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListResourceTagsRequest {
    /// Gets tags on the specified KMS key.
    pub key_id: String,
    /// Use this parameter to specify the maximum number of items to return.
    pub limit: Option<i64>,
    /// Use this parameter in a subsequent request after you receive a response with
    /// truncated results.
    pub marker: Option<String>,
}

/// What ListResourceTags returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTagsResponse {
    /// A list of tags.
    pub tags: Vec<Tag>,
    /// A flag that indicates whether there are more items in the list.
    pub truncated: bool,
    /// When `Truncated` is true, this element is present and contains the value to use for
    /// the `Marker` parameter in a subsequent request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// The parameters of CreateAlias and UpdateAlias: an alias and the key it names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AliasRequest {
    /// String that contains the alias.
    pub alias_name: String,
    /// String that contains the key identifier of the KMS key associated with the alias.
    pub target_key_id: String,
}

/// The parameters of ListAliases, which lists the aliases of the caller's account and
/// region, or of one key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListAliasesRequest {
    /// Lists only aliases that are associated with the specified KMS key.
    pub key_id: Option<String>,
    /// Use this parameter to specify the maximum number of items to return.
    pub limit: Option<i64>,
    /// Use this parameter in a subsequent request after you receive a response with
    /// truncated results.
    pub marker: Option<String>,
}

/// One alias in ListAliases' answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasListEntry {
    /// String that contains the alias.
    pub alias_name: String,
    /// String that contains the key ARN.
    pub alias_arn: String,
    /// String that contains the key identifier of the KMS key associated with the alias;
    /// `None` for a predefined AWS managed-key alias whose key does not exist yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_key_id: Option<String>,
    /// Date and time that the alias was most recently created in the account and Region
    /// (`None` for a predefined alias).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<f64>,
    /// Date and time that the alias was most recently associated with a KMS key in the
    /// account and Region (`None` for a predefined alias).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_date: Option<f64>,
}

/// What ListAliases returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    /// A list of aliases.
    pub aliases: Vec<AliasListEntry>,
    /// A flag that indicates whether there are more items in the list.
    pub truncated: bool,
    /// When `Truncated` is true, this element is present and contains the value to use for
    /// the `Marker` parameter in a subsequent request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// The parameters of Encrypt, which encrypts plaintext of up to 4,096 bytes using a KMS
/// key.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EncryptRequest {
    /// Identifies the KMS key to use in the encryption operation.
    pub key_id: String,
    /// Data to be encrypted.
    #[serde(with = "secret_base64")]
    pub plaintext: SecretSlice<u8>,
    /// Specifies the encryption context that will be used to encrypt the data.
    pub encryption_context: Option<EncryptionContextMap>,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
    /// Specifies the encryption algorithm that KMS will use to encrypt the plaintext
    /// message.
    pub encryption_algorithm: Option<String>,
}

/// What Encrypt returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    /// The encrypted plaintext.
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// The key ARN of the KMS key that was used to encrypt the
    /// plaintext.
    pub key_id: String,
    /// The encryption algorithm that was used to encrypt the plaintext.
    pub encryption_algorithm: String,
}

/// The parameters of Decrypt, which decrypts a ciphertext of Encrypt, GenerateDataKey or
/// GenerateDataKeyPair (and their WithoutPlaintext forms) or an RSA encryption key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DecryptRequest {
    /// Ciphertext to be decrypted.
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// Specifies the encryption context to use when decrypting the data.
    pub encryption_context: Option<EncryptionContextMap>,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
    /// Specifies the KMS key that KMS uses to decrypt the ciphertext.
    pub key_id: Option<String>,
    /// Specifies the encryption algorithm that will be used to decrypt the ciphertext.
    pub encryption_algorithm: Option<String>,
}

/// What Decrypt returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    /// The key ARN of the KMS key that was used to decrypt the
    /// ciphertext.
    pub key_id: String,
    /// Decrypted plaintext data.
    #[serde(with = "secret_base64")]
    pub plaintext: SecretSlice<u8>,
    /// The encryption algorithm that was used to decrypt the ciphertext.
    pub encryption_algorithm: String,
    /// The material that decrypted the ciphertext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_material_id: Option<String>,
}

/// The parameters of ReEncrypt, which decrypts a ciphertext and encrypts it again, under
/// the same or another key, without the plaintext leaving the key store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReEncryptRequest {
    /// Ciphertext of the data to reencrypt.
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// Specifies the encryption context to use to decrypt the ciphertext.
    pub source_encryption_context: Option<EncryptionContextMap>,
    /// Specifies the KMS key that KMS will use to decrypt the ciphertext before it is
    /// re-encrypted.
    pub source_key_id: Option<String>,
    /// A unique identifier for the KMS key that is used to reencrypt the data.
    pub destination_key_id: String,
    /// Specifies that encryption context to use when the reencrypting the data.
    pub destination_encryption_context: Option<EncryptionContextMap>,
    /// Specifies the encryption algorithm that KMS will use to decrypt the ciphertext
    /// before it is reencrypted.
    pub source_encryption_algorithm: Option<String>,
    /// Specifies the encryption algorithm that KMS will use to reecrypt the data after it
    /// has decrypted it.
    pub destination_encryption_algorithm: Option<String>,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
}

/// What ReEncrypt returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptResponse {
    /// The reencrypted data.
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// Unique identifier of the KMS key used to originally encrypt the data.
    pub source_key_id: String,
    /// The key ARN of the KMS key that was used to reencrypt the
    /// data.
    pub key_id: String,
    /// The encryption algorithm that was used to decrypt the ciphertext before it was
    /// reencrypted.
    pub source_encryption_algorithm: String,
    /// The encryption algorithm that was used to reencrypt the data.
    pub destination_encryption_algorithm: String,
}

/// The parameters of GenerateDataKey, which returns a new data key in plaintext and
/// encrypted under a symmetric key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GenerateDataKeyRequest {
    /// Specifies the symmetric encryption KMS key that encrypts the data key.
    pub key_id: String,
    /// Specifies the encryption context that will be used when encrypting the data key.
    pub encryption_context: Option<EncryptionContextMap>,
    /// Specifies the length of the data key in bytes.
    pub number_of_bytes: Option<i64>,
    /// Specifies the length of the data key.
    pub key_spec: Option<String>,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
}

/// What GenerateDataKey returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    /// The encrypted copy of the data key.
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// The plaintext data key.
    #[serde(with = "secret_base64")]
    pub plaintext: SecretSlice<u8>,
    /// The key ARN of the KMS key that encrypted the data key.
    pub key_id: String,
}

/// What GenerateDataKeyWithoutPlaintext returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyWithoutPlaintextResponse {
    /// The encrypted data key.
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// The key ARN of the KMS key that encrypted the data key.
    pub key_id: String,
}

/// The parameters of GenerateRandom, which returns a random byte string that is
/// cryptographically secure.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GenerateRandomRequest {
    /// The length of the random byte string.
    pub number_of_bytes: Option<i64>,
    /// Generates the bytes in the HSMs of this custom key store's cluster instead of the
    /// default cluster.
    pub custom_key_store_id: Option<String>,
}

/// What GenerateRandom returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomResponse {
    /// The random byte string.
    #[serde(with = "secret_base64")]
    pub plaintext: SecretSlice<u8>,
}

/// The parameters of EnableKeyRotation, which enables automatic rotation of the key
/// material of the specified symmetric encryption KMS key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EnableKeyRotationRequest {
    /// Identifies a symmetric encryption KMS key.
    pub key_id: String,
    /// Use this parameter to specify a custom period of time between each rotation date.
    pub rotation_period_in_days: Option<i64>,
}

/// What GetKeyRotationStatus returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyRotationStatusResponse {
    /// A Boolean value that specifies whether key rotation is enabled.
    pub key_rotation_enabled: bool,
    /// Identifies the specified symmetric encryption KMS key.
    pub key_id: String,
    /// The number of days between each automatic rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period_in_days: Option<u32>,
    /// The next date that KMS will automatically rotate the key material.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<f64>,
    /// Identifies the date and time that an in progress on-demand rotation was initiated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_demand_rotation_start_date: Option<f64>,
}

/// The parameters of ListKeyRotations, which returns information about the key materials
/// associated with the specified KMS key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListKeyRotationsRequest {
    /// Gets the key rotations for the specified KMS key.
    pub key_id: String,
    /// Use this parameter to specify the maximum number of items to return.
    pub limit: Option<i64>,
    /// Use this parameter in a subsequent request after you receive a response with
    /// truncated results.
    pub marker: Option<String>,
}

/// One completed rotation in ListKeyRotations' answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEntry {
    /// Unique identifier of the key.
    pub key_id: String,
    /// Date and time that the key material rotation completed.
    pub rotation_date: f64,
    /// Identifies whether the key material rotation was a scheduled automatic rotation or
    /// an on-demand rotation. This field is not present for the first key material or an
    /// imported key material in `PENDING_ROTATION` state.
    pub rotation_type: String,
}

/// What ListKeyRotations returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsResponse {
    /// A list of completed key material rotations.
    pub rotations: Vec<RotationEntry>,
    /// A flag that indicates whether there are more items in the list.
    pub truncated: bool,
    /// When `Truncated` is true, this element is present and contains the value to use for
    /// the `Marker` parameter in a subsequent request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// CreateCustomKeyStore. The password is a [`SecretString`]: redacted in `Debug`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateCustomKeyStoreRequest {
    /// Specifies a friendly name for the custom key store.
    pub custom_key_store_name: String,
    /// The config's cluster the store stands for (AWS's CloudHSM cluster id).
    pub cloud_hsm_cluster_id: Option<String>,
    /// The trust anchor certificate AWS requires for a CloudHSM key store.
    pub trust_anchor_certificate: Option<String>,
    /// The user PIN of the cluster's members (AWS's `kmsuser` password).
    #[serde(
        deserialize_with = "optional_secret_string",
        serialize_with = "expose_optional_secret_string"
    )]
    pub key_store_password: Option<SecretString>,
    /// Specifies the type of custom key store.
    pub custom_key_store_type: Option<String>,
}

/// What CreateCustomKeyStore returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateCustomKeyStoreResponse {
    /// A unique identifier for the new custom key store.
    pub custom_key_store_id: String,
}

/// The parameters of DescribeCustomKeyStores, which gets information about custom key
/// stores in the account and Region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeCustomKeyStoresRequest {
    /// Gets only information about the specified custom key store.
    pub custom_key_store_id: Option<String>,
    /// Gets only information about the specified custom key store.
    pub custom_key_store_name: Option<String>,
    /// Use this parameter to specify the maximum number of items to return.
    pub limit: Option<i64>,
    /// Use this parameter in a subsequent request after you receive a response with
    /// truncated results.
    pub marker: Option<String>,
}

/// AWS's CustomKeyStoresListEntry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomKeyStoresListEntry {
    /// A unique identifier for the custom key store.
    pub custom_key_store_id: String,
    /// The user-specified friendly name for the custom key store.
    pub custom_key_store_name: String,
    /// The config's cluster the store stands for (AWS's CloudHSM cluster id).
    pub cloud_hsm_cluster_id: String,
    /// The trust anchor certificate given when the store was created.
    pub trust_anchor_certificate: String,
    /// Indicates whether the custom key store is connected to its backing key store.
    pub connection_state: String,
    /// Describes the connection error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_error_code: Option<String>,
    /// The date and time when the custom key store was created.
    pub creation_date: f64,
    /// Indicates the type of the custom key store.
    pub custom_key_store_type: String,
}

/// What DescribeCustomKeyStores returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeCustomKeyStoresResponse {
    /// Contains metadata about each custom key store.
    pub custom_key_stores: Vec<CustomKeyStoresListEntry>,
    /// A flag that indicates whether there are more items in the list.
    pub truncated: bool,
    /// When `Truncated` is true, this element is present and contains the value to use for
    /// the `Marker` parameter in a subsequent request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// Connect-, Disconnect- and DeleteCustomKeyStore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CustomKeyStoreIdRequest {
    /// Enter the key store ID of the custom key store that you want to connect.
    pub custom_key_store_id: String,
}

/// UpdateCustomKeyStore.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateCustomKeyStoreRequest {
    /// Identifies the custom key store that you want to update.
    pub custom_key_store_id: String,
    /// Changes the friendly name of the custom key store to the value that you specify.
    pub new_custom_key_store_name: Option<String>,
    /// The new user PIN of the cluster's members (AWS's `kmsuser` password).
    #[serde(
        deserialize_with = "optional_secret_string",
        serialize_with = "expose_optional_secret_string"
    )]
    pub key_store_password: Option<SecretString>,
    /// The store's cluster; a store cannot move to another one, so only its own is accepted.
    pub cloud_hsm_cluster_id: Option<String>,
}

/// Reads an optional string straight into a [`SecretString`].
fn optional_secret_string<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.map(SecretString::from))
}

/// Writes an optional [`SecretString`] as a string: only a client sending the request does.
fn expose_optional_secret_string<S: serde::Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    secret
        .as_ref()
        .map(|secret| secret.expose_secret())
        .serialize(serializer)
}

/// A response without members (`{}`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmptyResponse {}

/// Standard padded base64 for blobs.
pub mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the bytes as base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    /// Reads base64; anything else is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("invalid base64"))
    }
}

/// Standard padded base64 for secrets; the decoded bytes go straight into a [`SecretSlice`].
pub mod secret_base64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use secrecy::{ExposeSecret, SecretSlice};
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    /// Writes the secret as base64, through a buffer zeroized on drop.
    pub fn serialize<S: Serializer>(
        secret: &SecretSlice<u8>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let encoded = Zeroizing::new(STANDARD.encode(secret.expose_secret()));
        serializer.serialize_str(&encoded)
    }

    /// Reads base64 into a secret; the base64 text is zeroized after decoding.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SecretSlice<u8>, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        STANDARD
            .decode(text.as_bytes())
            .map(SecretSlice::from)
            .map_err(|_| serde::de::Error::custom("invalid base64"))
    }
}

/// The parameters of GetKeyPolicy, which gets a key policy attached to the specified KMS
/// key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GetKeyPolicyRequest {
    /// Identifies the KMS key whose key policy you want to get.
    pub key_id: String,
    /// Only `default` exists; AWS makes the member optional with that default.
    pub policy_name: Option<String>,
}

/// What GetKeyPolicy returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyPolicyResponse {
    /// A key policy document in JSON format.
    pub policy: String,
    /// The name of the key policy.
    pub policy_name: String,
}

/// The parameters of PutKeyPolicy, which attaches a key policy to the specified KMS key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PutKeyPolicyRequest {
    /// Sets the key policy on the specified KMS key.
    pub key_id: String,
    /// The name of the key policy.
    pub policy_name: Option<String>,
    /// The key policy to attach to the KMS key.
    pub policy: String,
    /// Skips ("bypasses") the key policy lockout safety check.
    pub bypass_policy_lockout_safety_check: Option<bool>,
}

/// The parameters of ListKeyPolicies, which gets the names of the key policies that are
/// attached to a KMS key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListKeyPoliciesRequest {
    /// Gets the names of key policies for the specified KMS key.
    pub key_id: String,
    /// Use this parameter to specify the maximum number of items to return.
    pub limit: Option<i64>,
    /// Use this parameter in a subsequent request after you receive a response with
    /// truncated results.
    pub marker: Option<String>,
}

/// What ListKeyPolicies returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPoliciesResponse {
    /// A list of key policy names.
    pub policy_names: Vec<String>,
    /// A flag that indicates whether there are more items in the list.
    pub truncated: bool,
}

/// A grant's encryption context constraints, as the API spells them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantConstraintsShape {
    /// A list of key-value pairs that must be included in the encryption context of the
    /// cryptographic operation request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<BTreeMap<String, String>>,
    /// A list of key-value pairs that must match the encryption context in the
    /// cryptographic operation request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<BTreeMap<String, String>>,
}

/// The parameters of CreateGrant, which adds a grant to a KMS key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateGrantRequest {
    /// Identifies the KMS key for the grant.
    pub key_id: String,
    /// The identity that gets the permissions specified in the grant.
    pub grantee_principal: String,
    /// The principal that has permission to use the RetireGrant operation to retire the
    /// grant.
    pub retiring_principal: Option<String>,
    /// A list of operations that the grant permits.
    pub operations: Vec<String>,
    /// Specifies a grant constraint.
    pub constraints: Option<GrantConstraintsShape>,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
    /// A friendly name for the grant.
    pub name: Option<String>,
    /// Checks if your request will succeed.
    pub dry_run: Option<bool>,
}

/// What CreateGrant returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGrantResponse {
    /// The grant token.
    pub grant_token: String,
    /// The unique identifier for the grant.
    pub grant_id: String,
}

/// The parameters of ListGrants, which gets a list of all grants for the specified KMS key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListGrantsRequest {
    /// Returns only grants for the specified KMS key.
    pub key_id: String,
    /// Use this parameter to specify the maximum number of items to return.
    pub limit: Option<i64>,
    /// Use this parameter in a subsequent request after you receive a response with
    /// truncated results.
    pub marker: Option<String>,
    /// Returns only the grant with the specified grant ID. The grant ID uniquely identifies
    /// the grant.
    pub grant_id: Option<String>,
    /// Returns only grants where the specified principal is the grantee principal for the
    /// grant.
    pub grantee_principal: Option<String>,
}

/// The parameters of ListRetirableGrants, which lists the grants of the account and
/// region that a given principal may retire.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListRetirableGrantsRequest {
    /// The retiring principal for which to list grants.
    pub retiring_principal: String,
    /// Use this parameter to specify the maximum number of items to return.
    pub limit: Option<i64>,
    /// Use this parameter in a subsequent request after you receive a response with
    /// truncated results.
    pub marker: Option<String>,
}

/// One grant in ListGrants' and ListRetirableGrants' answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantListEntry {
    /// The key's ARN.
    pub key_id: String,
    /// The unique identifier for the grant.
    pub grant_id: String,
    /// The friendly name that identifies the grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The date and time when the grant was created.
    pub creation_date: f64,
    /// The identity that gets the permissions in the grant.
    pub grantee_principal: String,
    /// The principal that can retire the grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retiring_principal: Option<String>,
    /// The Amazon Web Services account under which the grant was issued.
    pub issuing_account: String,
    /// The list of operations permitted by the grant.
    pub operations: Vec<String>,
    /// The constraints on the grant, such as encryption context pairs or a SourceArn, that
    /// restrict the subsequent operations the grant allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<GrantConstraintsShape>,
}

/// What ListGrants returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsResponse {
    /// A list of grants.
    pub grants: Vec<GrantListEntry>,
    /// When `Truncated` is true, this element is present and contains the value to use for
    /// the `Marker` parameter in a subsequent request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    /// A flag that indicates whether there are more items in the list.
    pub truncated: bool,
}

/// The parameters of RetireGrant, which deletes a grant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RetireGrantRequest {
    /// Identifies the grant to be retired.
    pub grant_token: Option<String>,
    /// The key ARN KMS key associated with the grant.
    pub key_id: Option<String>,
    /// Identifies the grant to retire.
    pub grant_id: Option<String>,
    /// Checks if your request will succeed.
    pub dry_run: Option<bool>,
}

/// The parameters of RevokeGrant, which deletes the specified grant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RevokeGrantRequest {
    /// A unique identifier for the KMS key associated with the grant.
    pub key_id: String,
    /// Identifies the grant to revoke.
    pub grant_id: String,
    /// Checks if your request will succeed.
    pub dry_run: Option<bool>,
}

/// Sign's and Verify's message: at most 4096 bytes, not secret (AWS logs neither).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SignRequest {
    /// Identifies an asymmetric KMS key.
    pub key_id: String,
    /// Specifies the message or message digest to sign.
    #[serde(with = "base64_bytes")]
    pub message: Vec<u8>,
    /// Tells KMS whether the value of the `Message` parameter should be hashed as part of
    /// the signing algorithm.
    pub message_type: Option<String>,
    /// Specifies the signing algorithm to use when signing the message.
    pub signing_algorithm: String,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
    /// Checks if your request will succeed.
    pub dry_run: Option<bool>,
}

/// What Sign returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignResponse {
    /// The key ARN of the asymmetric KMS key that was used to sign
    /// the message.
    pub key_id: String,
    /// The cryptographic signature that was generated for the message.
    #[serde(with = "base64_bytes")]
    pub signature: Vec<u8>,
    /// The signing algorithm that was used to sign the message.
    pub signing_algorithm: String,
}

/// The parameters of Verify, which verifies a digital signature that was generated by the
/// Sign operation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VerifyRequest {
    /// Identifies the asymmetric KMS key that will be used to verify the signature.
    pub key_id: String,
    /// Specifies the message that was signed.
    #[serde(with = "base64_bytes")]
    pub message: Vec<u8>,
    /// Tells KMS whether the value of the `Message` parameter should be hashed as part of
    /// the signing algorithm.
    pub message_type: Option<String>,
    /// The signature that the `Sign` operation generated.
    #[serde(with = "base64_bytes")]
    pub signature: Vec<u8>,
    /// The signing algorithm that was used to sign the message.
    pub signing_algorithm: String,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
    /// Checks if your request will succeed.
    pub dry_run: Option<bool>,
}

/// What Verify returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyResponse {
    /// The key ARN of the asymmetric KMS key that was used to
    /// verify the signature.
    pub key_id: String,
    /// A Boolean value that indicates whether the signature was verified.
    pub signature_valid: bool,
    /// The signing algorithm that was used to verify the signature.
    pub signing_algorithm: String,
}

/// What GetPublicKey returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyResponse {
    /// The key ARN of the asymmetric KMS key from which the public
    /// key was downloaded.
    pub key_id: String,
    /// The exported public key.
    #[serde(with = "base64_bytes")]
    pub public_key: Vec<u8>,
    /// The same value as `KeySpec`, under the name AWS deprecated.
    pub customer_master_key_spec: String,
    /// The type of the of the public key that was downloaded.
    pub key_spec: String,
    /// The permitted use of the public key.
    pub key_usage: String,
    /// The encryption algorithms that KMS supports for this key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encryption_algorithms: Vec<String>,
    /// The signing algorithms that KMS supports for this key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_algorithms: Vec<String>,
    /// The key agreement algorithm used to derive a shared secret.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_agreement_algorithms: Vec<String>,
}

/// DeriveSharedSecret: ECDH of a KEY_AGREEMENT key with the caller's public key (DER
/// SubjectPublicKeyInfo).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeriveSharedSecretRequest {
    /// Identifies the KEY_AGREEMENT key (NIST elliptic curve) whose private key is used.
    pub key_id: String,
    /// Specifies the key agreement algorithm used to derive the shared secret.
    pub key_agreement_algorithm: String,
    /// The peer's public key on the same curve, as DER SubjectPublicKeyInfo.
    #[serde(with = "base64_bytes")]
    pub public_key: Vec<u8>,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
    /// Checks if your request will succeed.
    pub dry_run: Option<bool>,
    /// Nitro Enclaves attestation; there is no enclave on premises.
    pub recipient: Option<serde_json::Value>,
}

/// What DeriveSharedSecret returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretResponse {
    /// Identifies the KMS key used to derive the shared secret.
    pub key_id: String,
    /// The raw secret derived from the specified key agreement algorithm, private key in
    /// the asymmetric KMS key, and your peer's public key.
    #[serde(with = "secret_base64")]
    pub shared_secret: SecretSlice<u8>,
    /// Identifies the key agreement algorithm used to derive the shared secret.
    pub key_agreement_algorithm: String,
    /// The source of the key material for the specified KMS key.
    pub key_origin: String,
}

/// GenerateMac's message may be secret: it is a [`SecretSlice`] and never logged.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GenerateMacRequest {
    /// The message to be hashed.
    #[serde(with = "secret_base64")]
    pub message: SecretSlice<u8>,
    /// The HMAC KMS key to use in the operation.
    pub key_id: String,
    /// The MAC algorithm used in the operation.
    pub mac_algorithm: String,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
    /// Checks if your request will succeed.
    pub dry_run: Option<bool>,
}

/// What GenerateMac returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMacResponse {
    /// The hash-based message authentication code (HMAC) that was generated for the
    /// specified message, HMAC KMS key, and MAC algorithm.
    #[serde(with = "base64_bytes")]
    pub mac: Vec<u8>,
    /// The MAC algorithm that was used to generate the HMAC.
    pub mac_algorithm: String,
    /// The HMAC KMS key used in the operation.
    pub key_id: String,
}

/// The parameters of VerifyMac, which verifies the hash-based message authentication code
/// (HMAC) for a specified message, HMAC KMS key, and MAC algorithm.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VerifyMacRequest {
    /// The message that will be used in the verification.
    #[serde(with = "secret_base64")]
    pub message: SecretSlice<u8>,
    /// The KMS key that will be used in the verification.
    pub key_id: String,
    /// The MAC algorithm that will be used in the verification.
    pub mac_algorithm: String,
    /// The HMAC to verify.
    #[serde(with = "base64_bytes")]
    pub mac: Vec<u8>,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
    /// Checks if your request will succeed.
    pub dry_run: Option<bool>,
}

/// What VerifyMac returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMacResponse {
    /// The HMAC KMS key used in the verification.
    pub key_id: String,
    /// A Boolean value that indicates whether the HMAC was verified.
    pub mac_valid: bool,
    /// The MAC algorithm used in the verification.
    pub mac_algorithm: String,
}

/// GetParametersForImport.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GetParametersForImportRequest {
    /// The identifier of the KMS key that will be associated with the imported key
    /// material.
    pub key_id: String,
    /// The algorithm you will use with the RSA public key (`PublicKey`) in the response to
    /// protect your key material during import.
    pub wrapping_algorithm: String,
    /// The type of RSA public key to return in the response.
    pub wrapping_key_spec: String,
}

/// What GetParametersForImport returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportResponse {
    /// The key ARN of the KMS key to use in a subsequent
    /// ImportKeyMaterial request.
    pub key_id: String,
    /// The import token to send in a subsequent ImportKeyMaterial request.
    #[serde(with = "base64_bytes")]
    pub import_token: Vec<u8>,
    /// The public key to use to encrypt the key material before importing it with
    /// ImportKeyMaterial.
    #[serde(with = "base64_bytes")]
    pub public_key: Vec<u8>,
    /// The time at which the import token and public key are no longer valid.
    pub parameters_valid_to: f64,
}

/// ImportKeyMaterial. The wrapped material is not secret (only an HSM opens it), but it is
/// never logged or stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImportKeyMaterialRequest {
    /// The identifier of the KMS key that will be associated with the imported key
    /// material.
    pub key_id: String,
    /// The import token that you received in the response to a previous
    /// GetParametersForImport request.
    #[serde(with = "base64_bytes")]
    pub import_token: Vec<u8>,
    /// The encrypted key material to import.
    #[serde(with = "base64_bytes")]
    pub encrypted_key_material: Vec<u8>,
    /// Epoch seconds.
    pub valid_to: Option<f64>,
    /// Specifies whether the key material expires.
    pub expiration_model: Option<String>,
}

/// GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GenerateDataKeyPairRequest {
    /// Specifies the encryption context that will be used when encrypting the private key
    /// in the data key pair.
    pub encryption_context: Option<EncryptionContextMap>,
    /// Specifies the symmetric encryption KMS key that encrypts the private key in the data
    /// key pair.
    pub key_id: String,
    /// Determines the type of data key pair that is generated.
    pub key_pair_spec: String,
    /// A list of grant tokens.
    pub grant_tokens: Vec<String>,
    /// Checks if your request will succeed.
    pub dry_run: Option<bool>,
    /// Nitro Enclaves attestation; there is no enclave on premises.
    pub recipient: Option<serde_json::Value>,
}

/// What GenerateDataKeyPair returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairResponse {
    /// The encrypted copy of the private key.
    #[serde(with = "base64_bytes")]
    pub private_key_ciphertext_blob: Vec<u8>,
    /// The plaintext copy of the private key.
    #[serde(with = "secret_base64")]
    pub private_key_plaintext: SecretSlice<u8>,
    /// The public key (in plaintext).
    #[serde(with = "base64_bytes")]
    pub public_key: Vec<u8>,
    /// The key ARN of the KMS key that encrypted the private key.
    pub key_id: String,
    /// The type of data key pair that was generated.
    pub key_pair_spec: String,
}

/// What GenerateDataKeyPairWithoutPlaintext returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairWithoutPlaintextResponse {
    /// The encrypted copy of the private key.
    #[serde(with = "base64_bytes")]
    pub private_key_ciphertext_blob: Vec<u8>,
    /// The public key (in plaintext).
    #[serde(with = "base64_bytes")]
    pub public_key: Vec<u8>,
    /// The key ARN of the KMS key that encrypted the private key.
    pub key_id: String,
    /// The type of data key pair that was generated.
    pub key_pair_spec: String,
}
