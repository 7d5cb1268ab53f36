//! The key commands (`hsm-kms create-key`, `encrypt`, ...): `aws kms` verbs and flags. Each
//! command's values are parsed into its API request first (a bad value exits 252 before any
//! HSM is touched), then its calls go to an [`Endpoint`]: the key store in this process, the
//! running server through its admin socket (both as the account's root principal), or a KMS
//! endpoint given with `--endpoint-url`; the response prints like the AWS CLI's whichever
//! ran it. A failed operation prints the AWS CLI v2's line `An error occurred (<Code>) when
//! calling the <Operation> operation: <message>` to stderr and exits 254, as the AWS CLI v2
//! does; an endpoint that cannot be reached exits 255.

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use super::endpoint::{self, CallError, Endpoint};
use super::output::{Query, Response};
use super::params::{self, BinaryFormat};
use super::{EXIT_OTHER, EXIT_PARAM, EXIT_SERVICE, Globals};
use crate::config::Config;
use crate::keys::state::Operation;
use crate::keystore::api::*;
use crate::server::protocol;
use secrecy::SecretString;
use serde_json::Value;

/// One command, its request already parsed, waiting for an endpoint.
type Call = Box<dyn FnOnce(&dyn Endpoint) -> Result<Response, CallError>>;

#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Create a key in the HSM cluster (CreateKey): symmetric, RSA, elliptic-curve or HMAC.
    CreateKey {
        /// ENCRYPT_DECRYPT (the default for SYMMETRIC_DEFAULT), SIGN_VERIFY,
        /// GENERATE_VERIFY_MAC or KEY_AGREEMENT; required for every other key spec.
        #[arg(long)]
        key_usage: Option<String>,
        /// SYMMETRIC_DEFAULT (the default), RSA_2048/3072/4096, ECC_NIST_P256/P384/P521,
        /// ECC_SECG_P256K1, HMAC_224/256/384/512.
        #[arg(long)]
        key_spec: Option<String>,
        /// AWS_KMS (the default): the material is generated in the HSMs; EXTERNAL: no
        /// material until import-key-material brings it; AWS_CLOUDHSM with
        /// --custom-key-store-id.
        #[arg(long)]
        origin: Option<String>,
        /// Make the key in this custom key store's cluster (it must be CONNECTED).
        #[arg(long)]
        custom_key_store_id: Option<String>,
        #[command(flatten)]
        new_key: NewKeyArgs,
        /// Make a multi-Region primary key (`mrk-` id) that replicate-key can copy into
        /// other Regions.
        #[arg(long)]
        multi_region: bool,
    },
    /// Copy a multi-Region primary key into another Region's cluster (ReplicateKey).
    ReplicateKey {
        /// Key id or key ARN of the primary key.
        #[arg(long)]
        key_id: String,
        /// The Region of the new replica (one of [service] regions).
        #[arg(long)]
        replica_region: String,
        /// The replica's own description, tags and policy.
        #[command(flatten)]
        new_key: NewKeyArgs,
    },
    /// Make the replica in another Region the primary key of a multi-Region key
    /// (UpdatePrimaryRegion).
    UpdatePrimaryRegion {
        /// Key id or key ARN of the current primary key.
        #[arg(long)]
        key_id: String,
        /// The Region of the replica that becomes the primary.
        #[arg(long)]
        primary_region: String,
    },
    /// Show a key's policy (GetKeyPolicy). In-process commands act as the account root of
    /// [service]: the key policy must allow the root (AWS's default policy does).
    GetKeyPolicy {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// `default`, the one policy of every key.
        #[arg(long)]
        policy_name: Option<String>,
    },
    /// Replace a key's policy (PutKeyPolicy), as the account root of [service].
    PutKeyPolicy {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// `default`, the one policy of every key.
        #[arg(long)]
        policy_name: Option<String>,
        /// The policy's JSON (file://FILE reads it from a file), up to 32 KB.
        #[arg(long)]
        policy: String,
        /// Skip the check that the new policy lets the account root change it later.
        #[arg(long)]
        bypass_policy_lockout_safety_check: bool,
    },
    /// List the names of a key's policies (ListKeyPolicies): always `default`.
    ListKeyPolicies {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// Most entries in the one page asked for (1 to 1000).
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
        /// The marker of the previous page.
        #[arg(long)]
        marker: Option<String>,
    },
    /// Allow a principal some operations on a key (CreateGrant), as the account root of
    /// [service] for in-process commands.
    CreateGrant {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// The principal the grant allows: an account id or an IAM/STS principal ARN.
        #[arg(long)]
        grantee_principal: String,
        /// Operations the grant allows (e.g. Encrypt Decrypt), or one JSON list.
        #[arg(long, num_args = 1.., required = true)]
        operations: Vec<String>,
        /// The principal that may retire the grant.
        #[arg(long)]
        retiring_principal: Option<String>,
        /// `EncryptionContextSubset={k=v,...}` or `EncryptionContextEquals={k=v,...}`, or
        /// their JSON (file://FILE reads it from a file).
        #[arg(long)]
        constraints: Option<String>,
        /// Grant tokens.
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
        /// A name: repeating the request with the same name and parameters returns the
        /// same grant.
        #[arg(long)]
        name: Option<String>,
        /// Only check that the request would succeed (DryRunOperationException if so).
        #[arg(long)]
        dry_run: bool,
    },
    /// List a key's grants (ListGrants). Without --limit or --marker every page is fetched.
    ListGrants {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// Only this grant.
        #[arg(long)]
        grant_id: Option<String>,
        /// Only grants for this grantee.
        #[arg(long)]
        grantee_principal: Option<String>,
        /// Most entries in the one page asked for (1 to 100).
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
        /// NextMarker of the previous page.
        #[arg(long)]
        marker: Option<String>,
    },
    /// List the grants a principal of the account may retire (ListRetirableGrants).
    ListRetirableGrants {
        /// The retiring principal's ARN (of this account).
        #[arg(long)]
        retiring_principal: String,
        /// Most entries in the one page asked for (1 to 100).
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
        /// NextMarker of the previous page.
        #[arg(long)]
        marker: Option<String>,
    },
    /// Retire a grant (RetireGrant), named by its token or by --key-id and --grant-id.
    RetireGrant {
        /// The grant's token.
        #[arg(long)]
        grant_token: Option<String>,
        /// Key id or key ARN (with --grant-id).
        #[arg(long)]
        key_id: Option<String>,
        /// The grant's id (with --key-id).
        #[arg(long)]
        grant_id: Option<String>,
        /// Only check that the request would succeed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revoke a grant (RevokeGrant), as the account root of [service].
    RevokeGrant {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// The grant's id.
        #[arg(long)]
        grant_id: String,
        /// Only check that the request would succeed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Sign a message or digest with an asymmetric key (Sign).
    Sign {
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
        /// `fileb://FILE` (raw bytes), base64, or text with --cli-binary-format raw-in-base64-out.
        #[arg(long)]
        message: String,
        /// RAW (the default) or DIGEST.
        #[arg(long)]
        message_type: Option<String>,
        /// e.g. ECDSA_SHA_256, RSASSA_PSS_SHA_256.
        #[arg(long)]
        signing_algorithm: String,
        /// Grant tokens (each one a CreateGrant of this key store returned).
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
    },
    /// Verify a signature (Verify); exits 254 with KMSInvalidSignatureException when it does
    /// not verify.
    Verify {
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
        /// `fileb://FILE` (raw bytes), base64, or text with --cli-binary-format raw-in-base64-out.
        #[arg(long)]
        message: String,
        /// RAW (the default) or DIGEST.
        #[arg(long)]
        message_type: Option<String>,
        /// `fileb://FILE` or base64.
        #[arg(long)]
        signature: String,
        /// The algorithm the signature was made with.
        #[arg(long)]
        signing_algorithm: String,
        /// Grant tokens (each one a CreateGrant of this key store returned).
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
    },
    /// Show the public key of an asymmetric key (GetPublicKey), DER base64.
    GetPublicKey {
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
        /// Grant tokens (each one a CreateGrant of this key store returned).
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
    },
    /// Compute an HMAC with an HMAC key (GenerateMac).
    GenerateMac {
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
        /// `fileb://FILE` (raw bytes), base64, or text with --cli-binary-format raw-in-base64-out.
        #[arg(long)]
        message: String,
        /// HMAC_SHA_224, HMAC_SHA_256, HMAC_SHA_384 or HMAC_SHA_512 (the key spec's).
        #[arg(long)]
        mac_algorithm: String,
        /// Grant tokens (each one a CreateGrant of this key store returned).
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
    },
    /// Verify an HMAC (VerifyMac); exits 254 with KMSInvalidMacException when it does not.
    VerifyMac {
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
        /// `fileb://FILE` (raw bytes), base64, or text with --cli-binary-format raw-in-base64-out.
        #[arg(long)]
        message: String,
        /// The algorithm the MAC was made with.
        #[arg(long)]
        mac_algorithm: String,
        /// `fileb://FILE` or base64.
        #[arg(long)]
        mac: String,
        /// Grant tokens (each one a CreateGrant of this key store returned).
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
    },
    /// Agree on a secret with a KEY_AGREEMENT key and a peer's public key
    /// (DeriveSharedSecret, ECDH).
    DeriveSharedSecret {
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
        /// ECDH (the one key agreement algorithm).
        #[arg(long)]
        key_agreement_algorithm: String,
        /// The peer's DER SubjectPublicKeyInfo: `fileb://FILE` or base64.
        #[arg(long)]
        public_key: String,
        /// Grant tokens (each one a CreateGrant of this key store returned).
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
    },
    /// Make a data key pair whose private key is returned in the clear and encrypted under a
    /// symmetric key (GenerateDataKeyPair).
    GenerateDataKeyPair {
        #[command(flatten)]
        pair: DataKeyPairArgs,
    },
    /// The same without the plaintext private key (GenerateDataKeyPairWithoutPlaintext).
    GenerateDataKeyPairWithoutPlaintext {
        #[command(flatten)]
        pair: DataKeyPairArgs,
    },
    /// Show a key's metadata (DescribeKey).
    DescribeKey {
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
        /// Grant tokens (each one a CreateGrant of this key store returned).
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
    },
    /// List the keys of the account and region (ListKeys). Without --limit or --marker
    /// every page is fetched, as the AWS CLI does.
    ListKeys {
        /// Most entries in the one page asked for (1 to 1000).
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
        /// NextMarker of the previous page.
        #[arg(long)]
        marker: Option<String>,
    },
    /// Enable a key (EnableKey).
    EnableKey {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
    },
    /// Disable a key (DisableKey).
    DisableKey {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
    },
    /// Schedule a key's deletion (ScheduleKeyDeletion).
    ScheduleKeyDeletion {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// 7 to 30 days (default 30).
        #[arg(long, allow_negative_numbers = true)]
        pending_window_in_days: Option<i64>,
    },
    /// Cancel a scheduled deletion; the key becomes Disabled (CancelKeyDeletion).
    CancelKeyDeletion {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
    },
    /// Replace a key's description (UpdateKeyDescription).
    UpdateKeyDescription {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// Up to 8192 characters (file://FILE reads it from a file).
        #[arg(long)]
        description: String,
    },
    /// Add or overwrite tags on a key (TagResource).
    TagResource {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// Tags: `TagKey=k,TagValue=v` (one per value) or a JSON list.
        #[arg(long, required = true, num_args = 1.., value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Remove tags from a key (UntagResource).
    UntagResource {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// Tag keys, or one JSON list.
        #[arg(long, required = true, num_args = 1.., value_name = "TAG_KEY")]
        tag_keys: Vec<String>,
    },
    /// List a key's tags (ListResourceTags).
    ListResourceTags {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// Most entries in the one page asked for (1 to 1000).
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
        /// NextMarker of the previous page.
        #[arg(long)]
        marker: Option<String>,
    },
    /// Create an alias for a key (CreateAlias).
    CreateAlias {
        /// `alias/` followed by letters, digits and `:/_-`.
        #[arg(long)]
        alias_name: String,
        /// Key id or key ARN.
        #[arg(long)]
        target_key_id: String,
    },
    /// Point an existing alias at another key (UpdateAlias).
    UpdateAlias {
        /// `alias/` followed by letters, digits and `:/_-`.
        #[arg(long)]
        alias_name: String,
        /// Key id or key ARN.
        #[arg(long)]
        target_key_id: String,
    },
    /// Delete an alias (DeleteAlias).
    DeleteAlias {
        /// `alias/` followed by letters, digits and `:/_-`.
        #[arg(long)]
        alias_name: String,
    },
    /// List aliases, of the account or of one key (ListAliases).
    ListAliases {
        /// Only the aliases of this key (key id or key ARN).
        #[arg(long)]
        key_id: Option<String>,
        /// Most entries in the one page asked for (1 to 1000).
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
        /// NextMarker of the previous page.
        #[arg(long)]
        marker: Option<String>,
    },
    /// Encrypt up to 4096 bytes under a key (Encrypt).
    Encrypt {
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
        /// `fileb://FILE` (raw bytes), base64, or text with --cli-binary-format raw-in-base64-out.
        #[arg(long)]
        plaintext: String,
        /// `k=v,k2=v2` or a JSON object.
        #[arg(long)]
        encryption_context: Option<String>,
        /// Grant tokens (each one a CreateGrant of this key store returned).
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
        /// SYMMETRIC_DEFAULT (symmetric keys), RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256 (RSA keys).
        #[arg(long)]
        encryption_algorithm: Option<String>,
    },
    /// Decrypt a ciphertext blob (Decrypt).
    Decrypt {
        /// `fileb://FILE` (raw bytes) or base64.
        #[arg(long)]
        ciphertext_blob: String,
        /// `k=v,k2=v2` or a JSON object.
        #[arg(long)]
        encryption_context: Option<String>,
        /// Grant tokens (each one a CreateGrant of this key store returned).
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
        /// When given, must name the ciphertext's key.
        #[arg(long)]
        key_id: Option<String>,
        /// SYMMETRIC_DEFAULT (symmetric keys), RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256 (RSA keys).
        #[arg(long)]
        encryption_algorithm: Option<String>,
    },
    /// Decrypt and encrypt again under another key, inside this process (ReEncrypt).
    ReEncrypt {
        /// `fileb://FILE` (raw bytes) or base64.
        #[arg(long)]
        ciphertext_blob: String,
        /// The context the ciphertext was encrypted with.
        #[arg(long)]
        source_encryption_context: Option<String>,
        /// When given, must name the ciphertext's key.
        #[arg(long)]
        source_key_id: Option<String>,
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        destination_key_id: String,
        /// The context to bind the new ciphertext to.
        #[arg(long)]
        destination_encryption_context: Option<String>,
        /// SYMMETRIC_DEFAULT.
        #[arg(long)]
        source_encryption_algorithm: Option<String>,
        /// SYMMETRIC_DEFAULT.
        #[arg(long)]
        destination_encryption_algorithm: Option<String>,
        /// Grant tokens (each one a CreateGrant of this key store returned).
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
    },
    /// A fresh data key, in plaintext and encrypted (GenerateDataKey).
    GenerateDataKey(#[command(flatten)] DataKeyArgs),
    /// A fresh data key, encrypted only (GenerateDataKeyWithoutPlaintext).
    GenerateDataKeyWithoutPlaintext(#[command(flatten)] DataKeyArgs),
    /// Random bytes from the HSMs (GenerateRandom).
    GenerateRandom {
        /// 1 to 1024.
        #[arg(long, allow_negative_numbers = true)]
        number_of_bytes: Option<i64>,
        /// Random bytes from this custom key store's cluster.
        #[arg(long)]
        custom_key_store_id: Option<String>,
    },
    /// Register a configured cluster as a custom key store (CreateCustomKeyStore).
    CreateCustomKeyStore {
        /// A name unique in the account and region.
        #[arg(long)]
        custom_key_store_name: String,
        /// The cluster's name in the config (not the default cluster).
        #[arg(long)]
        cloud_hsm_cluster_id: Option<String>,
        /// The cluster's trust anchor certificate (file://FILE reads it from a file).
        #[arg(long)]
        trust_anchor_certificate: Option<String>,
        /// The cluster members' user PIN, 7 to 32 characters; give it as file://FILE to keep
        /// it off the command line.
        #[arg(long)]
        key_store_password: Option<String>,
        /// AWS_CLOUDHSM (the default and only type).
        #[arg(long)]
        custom_key_store_type: Option<String>,
    },
    /// Show custom key stores (DescribeCustomKeyStores): one by id or name, or all.
    DescribeCustomKeyStores {
        #[arg(long)]
        custom_key_store_id: Option<String>,
        #[arg(long)]
        custom_key_store_name: Option<String>,
        /// Most entries in the one page asked for (1 to 1000).
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
        /// NextMarker of the previous page.
        #[arg(long)]
        marker: Option<String>,
    },
    /// Connect a custom key store (ConnectCustomKeyStore); waits until it is CONNECTED or
    /// FAILED, since this process ends after the command.
    ConnectCustomKeyStore {
        #[arg(long)]
        custom_key_store_id: String,
    },
    /// Disconnect a custom key store; its keys become Unavailable (DisconnectCustomKeyStore).
    DisconnectCustomKeyStore {
        #[arg(long)]
        custom_key_store_id: String,
    },
    /// Rename a custom key store or change its password (UpdateCustomKeyStore).
    UpdateCustomKeyStore {
        #[arg(long)]
        custom_key_store_id: String,
        #[arg(long)]
        new_custom_key_store_name: Option<String>,
        /// The new user PIN (the store must be DISCONNECTED); file://FILE reads it.
        #[arg(long)]
        key_store_password: Option<String>,
        /// Must name the store's own cluster.
        #[arg(long)]
        cloud_hsm_cluster_id: Option<String>,
    },
    /// Delete a DISCONNECTED custom key store without keys (DeleteCustomKeyStore).
    DeleteCustomKeyStore {
        #[arg(long)]
        custom_key_store_id: String,
    },
    /// Rotate a key automatically (EnableKeyRotation).
    EnableKeyRotation {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// 90 to 2560 days (default 365).
        #[arg(long, allow_negative_numbers = true)]
        rotation_period_in_days: Option<i64>,
    },
    /// Stop rotating a key automatically (DisableKeyRotation).
    DisableKeyRotation {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
    },
    /// Whether and when a key rotates (GetKeyRotationStatus).
    GetKeyRotationStatus {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
    },
    /// Rotate a key now (RotateKeyOnDemand).
    RotateKeyOnDemand {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
    },
    /// A key's rotations, oldest first (ListKeyRotations).
    ListKeyRotations {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// Most entries in the one page asked for (1 to 1000).
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
        /// NextMarker of the previous page.
        #[arg(long)]
        marker: Option<String>,
    },
    /// Get a wrapping public key and an import token for a key of origin EXTERNAL
    /// (GetParametersForImport).
    GetParametersForImport {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, RSA_AES_KEY_WRAP_SHA_1 or
        /// RSA_AES_KEY_WRAP_SHA_256.
        #[arg(long)]
        wrapping_algorithm: String,
        /// RSA_2048, RSA_3072 or RSA_4096.
        #[arg(long)]
        wrapping_key_spec: String,
    },
    /// Import key material into a key of origin EXTERNAL (ImportKeyMaterial): wrapped
    /// material with its import token, as `aws kms import-key-material` takes it; or, with
    /// --key-material, the plaintext material: the parameters are fetched, the material
    /// wrapped here and imported in one command.
    ImportKeyMaterial {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        /// `fileb://FILE` or base64: the ImportToken of GetParametersForImport.
        #[arg(long, required_unless_present = "key_material")]
        import_token: Option<String>,
        /// `fileb://FILE` or base64: the material wrapped under its public key.
        #[arg(long, required_unless_present = "key_material")]
        encrypted_key_material: Option<String>,
        /// `fileb://FILE`: the plaintext material, for the one-command import.
        #[arg(long, conflicts_with_all = ["import_token", "encrypted_key_material"])]
        key_material: Option<String>,
        /// One-command import: the wrapping algorithm (default RSA_AES_KEY_WRAP_SHA_256,
        /// or RSA_AES_KEY_WRAP_SHA_1 when the HSMs do not take SHA-256).
        #[arg(long, requires = "key_material")]
        wrapping_algorithm: Option<String>,
        /// One-command import: the wrapping key spec.
        #[arg(long, requires = "key_material", default_value = "RSA_4096")]
        wrapping_key_spec: String,
        /// When the material expires (epoch seconds or RFC 3339); needed with
        /// KEY_MATERIAL_EXPIRES, the default model.
        #[arg(long)]
        valid_to: Option<String>,
        /// KEY_MATERIAL_EXPIRES (the default) or KEY_MATERIAL_DOES_NOT_EXPIRE.
        #[arg(long)]
        expiration_model: Option<String>,
    },
    /// Delete the imported material of a key of origin EXTERNAL (DeleteImportedKeyMaterial).
    DeleteImportedKeyMaterial {
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
    },
}

/// Runs one key command and returns its exit code; `config` may be `None` only with
/// `--endpoint-url`.
pub fn run(config: Option<&Config>, globals: &Globals, command: KmsCommand) -> ExitCode {
    let query = match globals.query.as_deref().map(Query::parse).transpose() {
        Ok(query) => query,
        Err(error) => {
            eprintln!("\nBad value for --query: {error}");
            return ExitCode::from(EXIT_PARAM);
        }
    };
    let (operation, call) = match prepare(command, globals.cli_binary_format) {
        Ok(prepared) => prepared,
        Err(message) => {
            eprintln!("\n{message}");
            return ExitCode::from(EXIT_PARAM);
        }
    };
    let endpoint = match endpoint::open(config, &globals.remote) {
        Ok(endpoint) => endpoint,
        Err(message) => {
            eprintln!("hsm-kms: {message}");
            return ExitCode::from(EXIT_OTHER);
        }
    };
    let outcome = call(endpoint.as_ref());
    // In-process, the call's audit event is on disk before the command reports anything.
    drop(endpoint);
    match outcome {
        Ok(response) => match super::print(&response, globals.output, query.as_ref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("hsm-kms: {message}");
                ExitCode::from(EXIT_OTHER)
            }
        },
        Err(CallError::Service { code, message }) => {
            eprintln!(
                "\nAn error occurred ({code}) when calling the {operation} operation: {message}"
            );
            ExitCode::from(EXIT_SERVICE)
        }
        Err(CallError::Unanswered(message)) => {
            eprintln!("hsm-kms: {message}");
            ExitCode::from(EXIT_OTHER)
        }
    }
}

/// The JSON body of `request` as the AWS CLI sends it: members without a value (null, or
/// an empty list) left out.
fn body<R: Serialize>(request: &R) -> Result<Value, CallError> {
    let mut body = serde_json::to_value(request)
        .map_err(|error| CallError::Unanswered(format!("the request does not encode: {error}")))?;
    if let Value::Object(members) = &mut body {
        members.retain(|_, value| {
            !(value.is_null() || value.as_array().is_some_and(|items| items.is_empty()))
        });
    }
    Ok(body)
}

/// Sends `request` as `operation`; its answer.
pub(super) fn send<R: Serialize>(
    kms: &dyn Endpoint,
    operation: Operation,
    request: &R,
) -> Result<Response, CallError> {
    let mut body = body(request)?;
    let answer = kms.call(operation, &body);
    protocol::scrub(&mut body);
    Ok(Response::from_value(answer?))
}

/// A command that is one call of `operation` with `request`.
fn one<R: Serialize + 'static>(operation: Operation, request: R) -> (&'static str, Call) {
    (
        operation.as_str(),
        Box::new(move |kms| send(kms, operation, &request)),
    )
}

/// A list operation: with `Limit` or `Marker` in `request`, the one page asked for
/// (Truncated, NextMarker); otherwise every page, printed as `{ key: [...] }` as the AWS
/// CLI does.
fn list<R: Serialize + 'static>(
    operation: Operation,
    key: &'static str,
    request: R,
) -> (&'static str, Call) {
    (
        operation.as_str(),
        Box::new(move |kms| {
            let first = body(&request)?;
            if first.get("Limit").is_some() || first.get("Marker").is_some() {
                return send(kms, operation, &first);
            }
            let mut items = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let mut page = first.clone();
                if let Some(marker) = &marker {
                    page["Marker"] = Value::String(marker.clone());
                }
                let mut answer = kms.call(operation, &page)?;
                if let Some(Value::Array(batch)) = answer.get_mut(key) {
                    items.append(batch);
                }
                let next = answer
                    .get("NextMarker")
                    .and_then(Value::as_str)
                    .filter(|_| answer.get("Truncated") == Some(&Value::Bool(true)))
                    .map(str::to_owned);
                match next {
                    Some(next) if marker.as_ref() != Some(&next) => marker = Some(next),
                    _ => break,
                }
            }
            let mut listing = serde_json::Map::new();
            listing.insert(key.to_owned(), Value::Array(items));
            Ok(Response::from_value(Value::Object(listing)))
        }),
    )
}

fn key_id(key_id: String) -> KeyIdRequest {
    KeyIdRequest {
        key_id,
        ..Default::default()
    }
}

fn store_id(custom_key_store_id: String) -> CustomKeyStoreIdRequest {
    CustomKeyStoreIdRequest {
        custom_key_store_id,
    }
}

/// A key store password given inline or as file://FILE (losing one trailing newline).
fn password(value: Option<String>) -> Result<Option<SecretString>, String> {
    Ok(value
        .map(|v| params::text("key-store-password", v))
        .transpose()?
        .map(|mut text| {
            if text.ends_with('\n') {
                text.pop();
            }
            SecretString::from(text)
        }))
}

/// Waits until a store being connected is CONNECTED or FAILED (in-process, the background
/// connection ends with this process); prints `{}` as the AWS CLI does.
fn wait_connected(kms: &dyn Endpoint, id: &str) -> Result<Response, CallError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let described = kms.call(
            Operation::DescribeCustomKeyStores,
            &serde_json::json!({ "CustomKeyStoreId": id }),
        )?;
        let connecting = described["CustomKeyStores"]
            .as_array()
            .is_some_and(|stores| {
                stores
                    .iter()
                    .any(|store| store["ConnectionState"] == "CONNECTING")
            });
        if !connecting || std::time::Instant::now() > deadline {
            return Ok(Response::empty());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Parses a command's values into its request; returns the operation's name and the call.
fn prepare(command: KmsCommand, binary: BinaryFormat) -> Result<(&'static str, Call), String> {
    use KmsCommand::*;
    Ok(match command {
        CreateKey {
            key_usage,
            key_spec,
            origin,
            custom_key_store_id,
            new_key,
            multi_region,
        } => {
            let new_key = new_key.parse()?;
            let request = CreateKeyRequest {
                multi_region: multi_region.then_some(true),
                policy: new_key.policy,
                bypass_policy_lockout_safety_check: new_key.bypass_policy_lockout_safety_check,
                custom_key_store_id,
                description: new_key.description,
                key_usage,
                key_spec,
                origin,
                tags: new_key.tags,
                ..Default::default()
            };
            one(Operation::CreateKey, request)
        }
        ReplicateKey {
            key_id,
            replica_region,
            new_key,
        } => {
            let new_key = new_key.parse()?;
            let request = ReplicateKeyRequest {
                key_id,
                replica_region,
                policy: new_key.policy,
                bypass_policy_lockout_safety_check: new_key.bypass_policy_lockout_safety_check,
                description: new_key.description,
                tags: new_key.tags,
            };
            one(Operation::ReplicateKey, request)
        }
        UpdatePrimaryRegion {
            key_id,
            primary_region,
        } => {
            let request = UpdatePrimaryRegionRequest {
                key_id,
                primary_region,
            };
            one(Operation::UpdatePrimaryRegion, request)
        }
        GetKeyPolicy {
            key_id,
            policy_name,
        } => {
            let request = GetKeyPolicyRequest {
                key_id,
                policy_name,
            };
            one(Operation::GetKeyPolicy, request)
        }
        PutKeyPolicy {
            key_id,
            policy_name,
            policy,
            bypass_policy_lockout_safety_check,
        } => {
            let request = PutKeyPolicyRequest {
                key_id,
                policy_name,
                policy: params::text("policy", policy)?,
                bypass_policy_lockout_safety_check: bypass_policy_lockout_safety_check
                    .then_some(true),
            };
            one(Operation::PutKeyPolicy, request)
        }
        ListKeyPolicies {
            key_id,
            limit,
            marker,
        } => {
            let request = ListKeyPoliciesRequest {
                key_id,
                limit,
                marker,
            };
            one(Operation::ListKeyPolicies, request)
        }
        CreateGrant {
            key_id,
            grantee_principal,
            operations,
            retiring_principal,
            constraints,
            grant_tokens,
            name,
            dry_run,
        } => {
            let request = CreateGrantRequest {
                key_id,
                grantee_principal,
                retiring_principal,
                operations: params::strings("operations", operations)?,
                constraints: params::grant_constraints("constraints", constraints)?,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
                name,
                dry_run: dry_run.then_some(true),
            };
            one(Operation::CreateGrant, request)
        }
        ListGrants {
            key_id,
            grant_id,
            grantee_principal,
            limit,
            marker,
        } => list(
            Operation::ListGrants,
            "Grants",
            ListGrantsRequest {
                key_id,
                limit,
                marker,
                grant_id,
                grantee_principal,
            },
        ),
        ListRetirableGrants {
            retiring_principal,
            limit,
            marker,
        } => list(
            Operation::ListRetirableGrants,
            "Grants",
            ListRetirableGrantsRequest {
                retiring_principal,
                limit,
                marker,
            },
        ),
        RetireGrant {
            grant_token,
            key_id,
            grant_id,
            dry_run,
        } => {
            let request = RetireGrantRequest {
                grant_token,
                key_id,
                grant_id,
                dry_run: dry_run.then_some(true),
            };
            one(Operation::RetireGrant, request)
        }
        RevokeGrant {
            key_id,
            grant_id,
            dry_run,
        } => {
            let request = RevokeGrantRequest {
                key_id,
                grant_id,
                dry_run: dry_run.then_some(true),
            };
            one(Operation::RevokeGrant, request)
        }
        Sign {
            key_id,
            message,
            message_type,
            signing_algorithm,
            grant_tokens,
        } => {
            let request = SignRequest {
                key_id,
                message: params::bytes("message", &message, binary)?,
                message_type,
                signing_algorithm,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
                dry_run: None,
            };
            one(Operation::Sign, request)
        }
        Verify {
            key_id,
            message,
            message_type,
            signature,
            signing_algorithm,
            grant_tokens,
        } => {
            let request = VerifyRequest {
                key_id,
                message: params::bytes("message", &message, binary)?,
                message_type,
                signature: params::bytes("signature", &signature, binary)?,
                signing_algorithm,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
                dry_run: None,
            };
            one(Operation::Verify, request)
        }
        GetPublicKey {
            key_id,
            grant_tokens,
        } => {
            let request = KeyIdRequest {
                key_id,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
            };
            one(Operation::GetPublicKey, request)
        }
        GenerateMac {
            key_id,
            message,
            mac_algorithm,
            grant_tokens,
        } => {
            let request = GenerateMacRequest {
                message: params::secret("message", message, binary)?,
                key_id,
                mac_algorithm,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
                dry_run: None,
            };
            one(Operation::GenerateMac, request)
        }
        VerifyMac {
            key_id,
            message,
            mac_algorithm,
            mac,
            grant_tokens,
        } => {
            let request = VerifyMacRequest {
                message: params::secret("message", message, binary)?,
                key_id,
                mac_algorithm,
                mac: params::bytes("mac", &mac, binary)?,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
                dry_run: None,
            };
            one(Operation::VerifyMac, request)
        }
        DeriveSharedSecret {
            key_id,
            key_agreement_algorithm,
            public_key,
            grant_tokens,
        } => {
            let request = DeriveSharedSecretRequest {
                key_id,
                key_agreement_algorithm,
                public_key: params::bytes("public-key", &public_key, binary)?,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
                dry_run: None,
                recipient: None,
            };
            one(Operation::DeriveSharedSecret, request)
        }
        GenerateDataKeyPair { pair } => {
            let request = pair.request()?;
            one(Operation::GenerateDataKeyPair, request)
        }
        GenerateDataKeyPairWithoutPlaintext { pair } => {
            let request = pair.request()?;
            one(Operation::GenerateDataKeyPairWithoutPlaintext, request)
        }
        DescribeKey {
            key_id,
            grant_tokens,
        } => {
            let request = KeyIdRequest {
                key_id,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
            };
            one(Operation::DescribeKey, request)
        }
        ListKeys { limit, marker } => {
            list(Operation::ListKeys, "Keys", ListRequest { limit, marker })
        }
        EnableKey { key_id: id } => one(Operation::EnableKey, key_id(id)),
        DisableKey { key_id: id } => one(Operation::DisableKey, key_id(id)),
        ScheduleKeyDeletion {
            key_id,
            pending_window_in_days,
        } => {
            let request = ScheduleKeyDeletionRequest {
                key_id,
                pending_window_in_days,
            };
            one(Operation::ScheduleKeyDeletion, request)
        }
        CancelKeyDeletion { key_id: id } => one(Operation::CancelKeyDeletion, key_id(id)),
        UpdateKeyDescription {
            key_id,
            description,
        } => {
            let request = UpdateKeyDescriptionRequest {
                key_id,
                description: params::text("description", description)?,
            };
            one(Operation::UpdateKeyDescription, request)
        }
        TagResource { key_id, tags } => {
            let request = TagResourceRequest {
                key_id,
                tags: params::tags("tags", tags)?,
            };
            one(Operation::TagResource, request)
        }
        UntagResource { key_id, tag_keys } => {
            let request = UntagResourceRequest {
                key_id,
                tag_keys: params::strings("tag-keys", tag_keys)?,
            };
            one(Operation::UntagResource, request)
        }
        ListResourceTags {
            key_id,
            limit,
            marker,
        } => list(
            Operation::ListResourceTags,
            "Tags",
            ListResourceTagsRequest {
                key_id,
                limit,
                marker,
            },
        ),
        CreateAlias {
            alias_name,
            target_key_id,
        } => {
            let request = AliasRequest {
                alias_name,
                target_key_id,
            };
            one(Operation::CreateAlias, request)
        }
        UpdateAlias {
            alias_name,
            target_key_id,
        } => {
            let request = AliasRequest {
                alias_name,
                target_key_id,
            };
            one(Operation::UpdateAlias, request)
        }
        DeleteAlias { alias_name } => one(
            Operation::DeleteAlias,
            serde_json::json!({ "AliasName": alias_name }),
        ),
        ListAliases {
            key_id,
            limit,
            marker,
        } => list(
            Operation::ListAliases,
            "Aliases",
            ListAliasesRequest {
                key_id,
                limit,
                marker,
            },
        ),
        Encrypt {
            key_id,
            plaintext,
            encryption_context,
            grant_tokens,
            encryption_algorithm,
        } => {
            let request = EncryptRequest {
                key_id,
                plaintext: params::secret("plaintext", plaintext, binary)?,
                encryption_context: params::context("encryption-context", encryption_context)?,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
                encryption_algorithm,
            };
            one(Operation::Encrypt, request)
        }
        GetParametersForImport {
            key_id,
            wrapping_algorithm,
            wrapping_key_spec,
        } => {
            let request = GetParametersForImportRequest {
                key_id,
                wrapping_algorithm,
                wrapping_key_spec,
            };
            one(Operation::GetParametersForImport, request)
        }
        ImportKeyMaterial {
            key_id,
            import_token,
            encrypted_key_material,
            key_material,
            wrapping_algorithm,
            wrapping_key_spec,
            valid_to,
            expiration_model,
        } => {
            let valid_to = valid_to
                .map(|value| super::import::timestamp("valid-to", &value))
                .transpose()?;
            match (key_material, import_token, encrypted_key_material) {
                (Some(material), _, _) => {
                    let import = super::import::OneCommandImport {
                        key_id,
                        algorithm: wrapping_algorithm
                            .map(|name| super::import::algorithm(&name))
                            .transpose()?,
                        wrapping_key_spec,
                        material: params::secret("key-material", material, binary)?,
                        valid_to,
                        expiration_model,
                    };
                    import.check()?;
                    (
                        Operation::ImportKeyMaterial.as_str(),
                        Box::new(move |kms| import.run(kms).map(|()| Response::empty())),
                    )
                }
                (None, Some(token), Some(wrapped)) => {
                    let request = ImportKeyMaterialRequest {
                        key_id,
                        import_token: params::bytes("import-token", &token, binary)?,
                        encrypted_key_material: params::bytes(
                            "encrypted-key-material",
                            &wrapped,
                            binary,
                        )?,
                        valid_to,
                        expiration_model,
                    };
                    one(Operation::ImportKeyMaterial, request)
                }
                _ => {
                    return Err(
                        "Give --import-token and --encrypted-key-material, or --key-material"
                            .into(),
                    );
                }
            }
        }
        DeleteImportedKeyMaterial { key_id } => {
            let request = KeyIdRequest {
                key_id,
                ..Default::default()
            };
            one(Operation::DeleteImportedKeyMaterial, request)
        }
        Decrypt {
            ciphertext_blob,
            encryption_context,
            grant_tokens,
            key_id,
            encryption_algorithm,
        } => {
            let request = DecryptRequest {
                ciphertext_blob: params::bytes("ciphertext-blob", &ciphertext_blob, binary)?,
                encryption_context: params::context("encryption-context", encryption_context)?,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
                key_id,
                encryption_algorithm,
            };
            one(Operation::Decrypt, request)
        }
        ReEncrypt {
            ciphertext_blob,
            source_encryption_context,
            source_key_id,
            destination_key_id,
            destination_encryption_context,
            source_encryption_algorithm,
            destination_encryption_algorithm,
            grant_tokens,
        } => {
            let request = ReEncryptRequest {
                ciphertext_blob: params::bytes("ciphertext-blob", &ciphertext_blob, binary)?,
                source_encryption_context: params::context(
                    "source-encryption-context",
                    source_encryption_context,
                )?,
                source_key_id,
                destination_key_id,
                destination_encryption_context: params::context(
                    "destination-encryption-context",
                    destination_encryption_context,
                )?,
                source_encryption_algorithm,
                destination_encryption_algorithm,
                grant_tokens: params::strings("grant-tokens", grant_tokens)?,
            };
            one(Operation::ReEncrypt, request)
        }
        GenerateDataKey(args) => {
            let request = args.request()?;
            one(Operation::GenerateDataKey, request)
        }
        GenerateDataKeyWithoutPlaintext(args) => {
            let request = args.request()?;
            one(Operation::GenerateDataKeyWithoutPlaintext, request)
        }
        GenerateRandom {
            number_of_bytes,
            custom_key_store_id,
        } => {
            let request = GenerateRandomRequest {
                number_of_bytes,
                custom_key_store_id,
            };
            one(Operation::GenerateRandom, request)
        }
        CreateCustomKeyStore {
            custom_key_store_name,
            cloud_hsm_cluster_id,
            trust_anchor_certificate,
            key_store_password,
            custom_key_store_type,
        } => {
            let request = CreateCustomKeyStoreRequest {
                custom_key_store_name,
                cloud_hsm_cluster_id,
                trust_anchor_certificate: trust_anchor_certificate
                    .map(|t| params::text("trust-anchor-certificate", t))
                    .transpose()?,
                key_store_password: password(key_store_password)?,
                custom_key_store_type,
            };
            one(Operation::CreateCustomKeyStore, request)
        }
        DescribeCustomKeyStores {
            custom_key_store_id,
            custom_key_store_name,
            limit,
            marker,
        } => list(
            Operation::DescribeCustomKeyStores,
            "CustomKeyStores",
            DescribeCustomKeyStoresRequest {
                custom_key_store_id,
                custom_key_store_name,
                limit,
                marker,
            },
        ),
        ConnectCustomKeyStore {
            custom_key_store_id: id,
        } => (
            Operation::ConnectCustomKeyStore.as_str(),
            Box::new(move |kms| {
                send(kms, Operation::ConnectCustomKeyStore, &store_id(id.clone()))?;
                wait_connected(kms, &id)
            }),
        ),
        DisconnectCustomKeyStore {
            custom_key_store_id: id,
        } => one(Operation::DisconnectCustomKeyStore, store_id(id)),
        UpdateCustomKeyStore {
            custom_key_store_id,
            new_custom_key_store_name,
            key_store_password,
            cloud_hsm_cluster_id,
        } => {
            let request = UpdateCustomKeyStoreRequest {
                custom_key_store_id,
                new_custom_key_store_name,
                key_store_password: password(key_store_password)?,
                cloud_hsm_cluster_id,
            };
            one(Operation::UpdateCustomKeyStore, request)
        }
        DeleteCustomKeyStore {
            custom_key_store_id: id,
        } => one(Operation::DeleteCustomKeyStore, store_id(id)),
        EnableKeyRotation {
            key_id,
            rotation_period_in_days,
        } => {
            let request = EnableKeyRotationRequest {
                key_id,
                rotation_period_in_days,
            };
            one(Operation::EnableKeyRotation, request)
        }
        DisableKeyRotation { key_id: id } => one(Operation::DisableKeyRotation, key_id(id)),
        GetKeyRotationStatus { key_id: id } => one(Operation::GetKeyRotationStatus, key_id(id)),
        RotateKeyOnDemand { key_id: id } => one(Operation::RotateKeyOnDemand, key_id(id)),
        ListKeyRotations {
            key_id,
            limit,
            marker,
        } => list(
            Operation::ListKeyRotations,
            "Rotations",
            ListKeyRotationsRequest {
                key_id,
                limit,
                marker,
            },
        ),
    })
}

/// The flags of a new key's own settings, which create-key and replicate-key share.
#[derive(Debug, clap::Args)]
pub struct NewKeyArgs {
    /// Up to 8192 characters (file://FILE reads it from a file).
    #[arg(long)]
    description: Option<String>,
    /// Tags: `TagKey=k,TagValue=v` (one per value) or a JSON list.
    #[arg(long, num_args = 1.., value_name = "TAG")]
    tags: Vec<String>,
    /// The key policy's JSON (file://FILE reads it from a file); AWS's default key policy
    /// when omitted.
    #[arg(long)]
    policy: Option<String>,
    /// Skip the check that the new policy lets this caller (the account root, for
    /// in-process commands) change it later.
    #[arg(long)]
    bypass_policy_lockout_safety_check: bool,
}

/// [`NewKeyArgs`] parsed into the request members they fill.
struct NewKey {
    description: Option<String>,
    tags: Vec<Tag>,
    policy: Option<String>,
    bypass_policy_lockout_safety_check: Option<bool>,
}

impl NewKeyArgs {
    fn parse(self) -> Result<NewKey, String> {
        Ok(NewKey {
            description: self
                .description
                .map(|d| params::text("description", d))
                .transpose()?,
            tags: params::tags("tags", self.tags)?,
            policy: self.policy.map(|p| params::text("policy", p)).transpose()?,
            bypass_policy_lockout_safety_check: self
                .bypass_policy_lockout_safety_check
                .then_some(true),
        })
    }
}

/// The flags GenerateDataKey and GenerateDataKeyWithoutPlaintext share.
#[derive(Debug, clap::Args)]
pub struct DataKeyArgs {
    /// Key id, key ARN, alias name or alias ARN.
    #[arg(long)]
    key_id: String,
    /// `k=v,k2=v2` or a JSON object.
    #[arg(long)]
    encryption_context: Option<String>,
    /// 1 to 1024 (or give --key-spec).
    #[arg(long, allow_negative_numbers = true)]
    number_of_bytes: Option<i64>,
    /// AES_128 or AES_256 (or give --number-of-bytes).
    #[arg(long)]
    key_spec: Option<String>,
    /// Grant tokens (each one a CreateGrant of this key store returned).
    #[arg(long, num_args = 1..)]
    grant_tokens: Vec<String>,
}

impl DataKeyArgs {
    fn request(self) -> Result<GenerateDataKeyRequest, String> {
        Ok(GenerateDataKeyRequest {
            key_id: self.key_id,
            encryption_context: params::context("encryption-context", self.encryption_context)?,
            number_of_bytes: self.number_of_bytes,
            key_spec: self.key_spec,
            grant_tokens: params::strings("grant-tokens", self.grant_tokens)?,
        })
    }
}

/// The flags of generate-data-key-pair and generate-data-key-pair-without-plaintext.
#[derive(Debug, clap::Args)]
pub struct DataKeyPairArgs {
    /// The symmetric key that encrypts the private key: key id, key ARN, alias name or ARN.
    #[arg(long)]
    key_id: String,
    /// RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521 or
    /// ECC_SECG_P256K1.
    #[arg(long)]
    key_pair_spec: String,
    /// `k=v,k2=v2` or a JSON object.
    #[arg(long)]
    encryption_context: Option<String>,
    /// Grant tokens (each one a CreateGrant of this key store returned).
    #[arg(long, num_args = 1..)]
    grant_tokens: Vec<String>,
}

impl DataKeyPairArgs {
    fn request(self) -> Result<GenerateDataKeyPairRequest, String> {
        Ok(GenerateDataKeyPairRequest {
            encryption_context: params::context("encryption-context", self.encryption_context)?,
            key_id: self.key_id,
            key_pair_spec: self.key_pair_spec,
            grant_tokens: params::strings("grant-tokens", self.grant_tokens)?,
            dry_run: None,
            recipient: None,
        })
    }
}
