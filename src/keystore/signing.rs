//! Sign, Verify, GetPublicKey, GenerateMac, VerifyMac and DeriveSharedSecret: the operations
//! of asymmetric keys and HMAC keys, with AWS's parameter checks, key-usage refusals and
//! answers.
//!
//! Messages are hashed here (they are at most 4 KiB) and the HSM signs the digest, so RAW
//! and DIGEST messages take one path; signatures are verified inside the HSM with the
//! pair's public key. A MAC is verified by computing it again inside the HSM and comparing
//! in constant time. The audit trail records key, algorithms and message type, never a
//! message, signature or MAC.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretSlice};
use subtle::ConstantTimeEq;

use super::api::*;
use super::{Access, Caller, KeyStore, Naming, cluster_error};
use crate::audit::event::Call;
use crate::cluster::ClusterError;
use crate::cluster::MaterialId;
use crate::error::KmsError;
use crate::hsm::material::subject_public_key_info;
use crate::hsm::{Failure, PublicKey};
use crate::keys::records::KeyRecord;
use crate::keys::spec::{Curve, KeySpec, KeyUsage, MacAlgorithm, SigningAlgorithm};
use crate::keys::state::Operation;

/// The most bytes Sign, Verify, GenerateMac and VerifyMac take as a message.
const MESSAGE_MAX: usize = 4096;
/// The `SigningAlgorithmSpec` enum of the API model.
const MODEL_SIGNING_ALGORITHMS: &[&str] = &[
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "ECDSA_SHA_256",
    "ECDSA_SHA_384",
    "ECDSA_SHA_512",
    "SM2DSA",
    "ML_DSA_SHAKE_256",
    "ED25519_SHA_512",
    "ED25519_PH_SHA_512",
];
/// The `MessageType` enum of the API model.
const MODEL_MESSAGE_TYPES: &[&str] = &["RAW", "DIGEST", "EXTERNAL_MU"];
/// The `MacAlgorithmSpec` enum of the API model.
const MODEL_MAC_ALGORITHMS: &[&str] = &[
    "HMAC_SHA_224",
    "HMAC_SHA_256",
    "HMAC_SHA_384",
    "HMAC_SHA_512",
];

/// A Sign or Verify ready for the HSM: the key, the algorithm, the digest, the curve.
type Prepared = (Arc<KeyRecord>, SigningAlgorithm, Vec<u8>, Option<Curve>);

/// The request members Sign and Verify share.
struct SigningParts<'a> {
    key_id: &'a str,
    algorithm: &'a str,
    message_type: Option<&'a str>,
    message: &'a [u8],
    grant_tokens: &'a [String],
    dry_run: Option<bool>,
}

/// The parts of Sign and Verify that are checked before the key is read.
struct Signing<'a> {
    algorithm_name: &'a str,
    message_type: &'a str,
    message: &'a [u8],
}

impl KeyStore {
    /// Sign: a signature of the message (or of the digest given) with the key's private key.
    pub fn sign(&self, caller: &Caller, request: SignRequest) -> Result<SignResponse, KmsError> {
        let mut call = Call::of(Operation::Sign);
        signing_call(
            &mut call,
            &request.key_id,
            &request.signing_algorithm,
            request.message_type.as_deref(),
        );
        self.audited(caller, call, |call| {
            let (key, algorithm, digest, curve) = self.signing_prologue(
                caller,
                call,
                Operation::Sign,
                SigningParts {
                    key_id: &request.key_id,
                    algorithm: &request.signing_algorithm,
                    message_type: request.message_type.as_deref(),
                    message: &request.message,
                    grant_tokens: &request.grant_tokens,
                    dry_run: request.dry_run,
                },
            )?;
            let signature = self
                .cluster_of(&key)?
                .with_material(&current_material(&key), |member, id| {
                    member.sign_digest(id, algorithm, curve, &digest)
                })
                .map_err(cluster_error)?;
            call.served_by(signature.member.name());
            Ok(SignResponse {
                key_id: key.arn(),
                signature: signature.value,
                signing_algorithm: algorithm.as_str().to_owned(),
            })
        })
    }

    /// Verify: whether the signature is the key's over the message (or digest);
    /// `KMSInvalidSignatureException` when it is not.
    pub fn verify(
        &self,
        caller: &Caller,
        request: VerifyRequest,
    ) -> Result<VerifyResponse, KmsError> {
        let mut call = Call::of(Operation::Verify);
        signing_call(
            &mut call,
            &request.key_id,
            &request.signing_algorithm,
            request.message_type.as_deref(),
        );
        self.audited(caller, call, |call| {
            if request.signature.is_empty() || request.signature.len() > 6144 {
                return Err(KmsError::constraint_violation(
                    "signature",
                    None,
                    &[if request.signature.is_empty() {
                        "Member must have length greater than or equal to 1"
                    } else {
                        "Member must have length less than or equal to 6144"
                    }],
                ));
            }
            let (key, algorithm, digest, curve) = self.signing_prologue(
                caller,
                call,
                Operation::Verify,
                SigningParts {
                    key_id: &request.key_id,
                    algorithm: &request.signing_algorithm,
                    message_type: request.message_type.as_deref(),
                    message: &request.message,
                    grant_tokens: &request.grant_tokens,
                    dry_run: request.dry_run,
                },
            )?;
            let valid = self
                .cluster_of(&key)?
                .with_material(&current_material(&key), |member, id| {
                    member.verify_digest(id, algorithm, curve, &digest, &request.signature)
                })
                .map_err(cluster_error)?;
            call.served_by(valid.member.name());
            if !valid.value {
                return Err(KmsError::KmsInvalidSignature(String::new()));
            }
            Ok(VerifyResponse {
                key_id: key.arn(),
                signature_valid: true,
                signing_algorithm: algorithm.as_str().to_owned(),
            })
        })
    }

    /// GetPublicKey: the DER SubjectPublicKeyInfo of an asymmetric key, with its spec,
    /// usage and algorithms.
    pub fn get_public_key(
        &self,
        caller: &Caller,
        request: KeyIdRequest,
    ) -> Result<GetPublicKeyResponse, KmsError> {
        let mut call = Call::of(Operation::GetPublicKey);
        call.param("keyId", request.key_id.as_str());
        self.audited(caller, call, |call| {
            let key = self.key_for(
                caller,
                call,
                Access::of(Operation::GetPublicKey).with_grant_tokens(&request.grant_tokens),
                "keyId",
                &request.key_id,
                Naming::AnyReference,
            )?;
            let public_key = key.public_key_der()?.ok_or_else(|| {
                KmsError::UnsupportedOperation(format!(
                    "{} has key spec {}, which has no public key.",
                    key.arn(),
                    key.key_spec
                ))
            })?;
            let spec = key.material_spec()?;
            Ok(GetPublicKeyResponse {
                key_id: key.arn(),
                public_key,
                customer_master_key_spec: key.key_spec.clone(),
                key_spec: key.key_spec.clone(),
                key_usage: key.key_usage.clone(),
                encryption_algorithms: spec
                    .spec
                    .encryption_algorithms(spec.usage)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                signing_algorithms: spec
                    .spec
                    .signing_algorithms(spec.usage)
                    .into_iter()
                    .map(|a| a.as_str().to_owned())
                    .collect(),
                key_agreement_algorithms: spec
                    .spec
                    .key_agreement_algorithms(spec.usage)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            })
        })
    }

    /// GenerateMac: the HMAC of the message with the key, computed inside the HSM.
    pub fn generate_mac(
        &self,
        caller: &Caller,
        request: GenerateMacRequest,
    ) -> Result<GenerateMacResponse, KmsError> {
        let mut call = Call::of(Operation::GenerateMac);
        call.param("keyId", request.key_id.as_str())
            .param("macAlgorithm", request.mac_algorithm.as_str());
        self.audited(caller, call, |call| {
            let message = request.message.expose_secret();
            let algorithm = check_mac_request(&request.mac_algorithm, message)?;
            let key = self.mac_key(
                caller,
                call,
                Operation::GenerateMac,
                &request.key_id,
                algorithm,
                &request.grant_tokens,
            )?;
            dry_run(request.dry_run)?;
            let mac = self.compute_mac(&key, algorithm, message)?;
            call.served_by(mac.1.as_str());
            Ok(GenerateMacResponse {
                mac: mac.0,
                mac_algorithm: algorithm.as_str().to_owned(),
                key_id: key.arn(),
            })
        })
    }

    /// VerifyMac: whether the MAC is the key's over the message; `KMSInvalidMacException`
    /// when it is not.
    pub fn verify_mac(
        &self,
        caller: &Caller,
        request: VerifyMacRequest,
    ) -> Result<VerifyMacResponse, KmsError> {
        let mut call = Call::of(Operation::VerifyMac);
        call.param("keyId", request.key_id.as_str())
            .param("macAlgorithm", request.mac_algorithm.as_str());
        self.audited(caller, call, |call| {
            let message = request.message.expose_secret();
            let algorithm = check_mac_request(&request.mac_algorithm, message)?;
            if request.mac.is_empty() || request.mac.len() > 6144 {
                return Err(KmsError::constraint_violation(
                    "mac",
                    None,
                    &["Member must have length greater than or equal to 1"],
                ));
            }
            let key = self.mac_key(
                caller,
                call,
                Operation::VerifyMac,
                &request.key_id,
                algorithm,
                &request.grant_tokens,
            )?;
            dry_run(request.dry_run)?;
            let (mac, member) = self.compute_mac(&key, algorithm, message)?;
            call.served_by(&member);
            if !bool::from(mac.ct_eq(&request.mac)) {
                return Err(KmsError::KmsInvalidMac(String::new()));
            }
            Ok(VerifyMacResponse {
                key_id: key.arn(),
                mac_valid: true,
                mac_algorithm: algorithm.as_str().to_owned(),
            })
        })
    }

    /// DeriveSharedSecret: ECDH inside the HSM of a KEY_AGREEMENT key with the caller's public
    /// key, which must be a point of the key's curve (DER SubjectPublicKeyInfo). The shared
    /// secret is returned, never logged or audited.
    pub fn derive_shared_secret(
        &self,
        caller: &Caller,
        request: DeriveSharedSecretRequest,
    ) -> Result<DeriveSharedSecretResponse, KmsError> {
        let mut call = Call::of(Operation::DeriveSharedSecret);
        call.param("keyId", request.key_id.as_str()).param(
            "keyAgreementAlgorithm",
            request.key_agreement_algorithm.as_str(),
        );
        self.audited(caller, call, |call| {
            if let Some(violation) =
                enum_violation("keyAgreementAlgorithm", &request.key_agreement_algorithm, &["ECDH"])
            {
                return Err(validation_errors(vec![violation]));
            }
            if request.public_key.is_empty() || request.public_key.len() > 8192 {
                return Err(KmsError::constraint_violation(
                    "publicKey",
                    None,
                    &["Member must have length greater than or equal to 1"],
                ));
            }
            if request.recipient.is_some() {
                return Err(KmsError::UnsupportedOperation(
                    "Recipient (Nitro Enclaves attestation) is not supported: there is no enclave on premises.".into(),
                ));
            }
            let access = Access::of(Operation::DeriveSharedSecret)
                .with_grant_tokens(&request.grant_tokens)
                .with(|mut context| {
                    context.set("kms:KeyAgreementAlgorithm", "ECDH");
                    context
                });
            let key = self.key_for(caller, call, access, "keyId", &request.key_id, Naming::AnyReference)?;
            require_usage(&key, KeyUsage::KeyAgreement, Operation::DeriveSharedSecret)?;
            let curve = key.material_spec()?.spec.curve().ok_or_else(|| {
                KmsError::InvalidKeyUsage(format!("{} is not an elliptic-curve key.", key.arn()))
            })?;
            let point = peer_point(&request.public_key, curve).ok_or_else(|| {
                KmsError::Validation(format!(
                    "PublicKey is not a DER SubjectPublicKeyInfo of a {} key.",
                    key.key_spec
                ))
            })?;
            dry_run(request.dry_run)?;
            let secret = self
                .cluster_of(&key)?
                .with_material(&current_material(&key), |member, id| {
                    member.derive_shared_secret(id, curve, &point)
                })
                .map_err(derivation_error)?;
            call.served_by(secret.member.name());
            Ok(DeriveSharedSecretResponse {
                key_id: key.arn(),
                shared_secret: SecretSlice::from(secret.value.to_vec()),
                key_agreement_algorithm: "ECDH".into(),
                key_origin: key.origin.clone(),
            })
        })
    }

    /// What Sign and Verify share before the HSM: the parameters checked (the message's
    /// signature, for Verify, is checked by the caller first), the key authorized and of
    /// usage SIGN_VERIFY, the algorithm it offers, the digest to sign or verify, DryRun.
    fn signing_prologue(
        &self,
        caller: &Caller,
        call: &mut Call,
        operation: Operation,
        parts: SigningParts<'_>,
    ) -> Result<Prepared, KmsError> {
        let signing = Signing::checked(parts.algorithm, parts.message_type, parts.message)?;
        let key = self.signing_key(
            caller,
            call,
            operation,
            parts.key_id,
            &signing,
            parts.grant_tokens,
        )?;
        let (algorithm, digest) = signing.digest_for(&key)?;
        dry_run(parts.dry_run)?;
        let curve = key.material_spec()?.spec.curve();
        Ok((key, algorithm, digest, curve))
    }

    /// The prologue of Sign and Verify: the key, authorized with `kms:SigningAlgorithm` and
    /// `kms:MessageType`, of usage SIGN_VERIFY, offering the algorithm.
    fn signing_key(
        &self,
        caller: &Caller,
        call: &mut Call,
        operation: Operation,
        key_id: &str,
        signing: &Signing<'_>,
        grant_tokens: &[String],
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let access = Access::of(operation)
            .with_grant_tokens(grant_tokens)
            .with(|mut context| {
                context.set("kms:SigningAlgorithm", signing.algorithm_name);
                context.set("kms:MessageType", signing.message_type);
                context
            });
        let key = self.key_for(caller, call, access, "keyId", key_id, Naming::AnyReference)?;
        require_usage(&key, KeyUsage::SignVerify, operation)?;
        Ok(key)
    }

    /// The prologue of GenerateMac and VerifyMac: the key, authorized with
    /// `kms:MacAlgorithm`, of usage GENERATE_VERIFY_MAC and of the algorithm's spec.
    fn mac_key(
        &self,
        caller: &Caller,
        call: &mut Call,
        operation: Operation,
        key_id: &str,
        algorithm: MacAlgorithm,
        grant_tokens: &[String],
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let access = Access::of(operation)
            .with_grant_tokens(grant_tokens)
            .with(|mut context| {
                context.set("kms:MacAlgorithm", algorithm.as_str());
                context
            });
        let key = self.key_for(caller, call, access, "keyId", key_id, Naming::AnyReference)?;
        require_usage(&key, KeyUsage::GenerateVerifyMac, operation)?;
        let spec = key.material_spec()?.spec;
        if spec.mac_algorithm() != Some(algorithm) {
            return Err(KmsError::InvalidKeyUsage(format!(
                "The MAC algorithm {} is not valid for {}, whose key spec {} takes {}.",
                algorithm.as_str(),
                key.arn(),
                spec.as_str(),
                spec.mac_algorithm().map_or("none", MacAlgorithm::as_str)
            )));
        }
        Ok(key)
    }

    /// The HMAC inside a member holding the key, and that member's name.
    fn compute_mac(
        &self,
        key: &KeyRecord,
        algorithm: MacAlgorithm,
        message: &[u8],
    ) -> Result<(Vec<u8>, String), KmsError> {
        let served = self
            .cluster_of(key)?
            .with_material(&current_material(key), |member, id| {
                member.hmac(id, algorithm.digest(), message)
            })
            .map_err(cluster_error)?;
        Ok((served.value, served.member.name().to_owned()))
    }
}

impl<'a> Signing<'a> {
    /// Checks the algorithm and message type against the API model and the message's size.
    fn checked(
        algorithm_name: &'a str,
        message_type: Option<&'a str>,
        message: &'a [u8],
    ) -> Result<Signing<'a>, KmsError> {
        let message_type = message_type.unwrap_or("RAW");
        let violations: Vec<String> = [
            enum_violation("signingAlgorithm", algorithm_name, MODEL_SIGNING_ALGORITHMS),
            enum_violation("messageType", message_type, MODEL_MESSAGE_TYPES),
            message_violation(message),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !violations.is_empty() {
            return Err(validation_errors(violations));
        }
        if message_type == "EXTERNAL_MU" {
            return Err(KmsError::InvalidKeyUsage(
                "MessageType EXTERNAL_MU is only valid with ML-DSA keys.".to_owned(),
            ));
        }
        Ok(Signing {
            algorithm_name,
            message_type,
            message,
        })
    }

    /// The algorithm, which the key must offer, and the digest the HSM signs: the hash of a
    /// RAW message, or a DIGEST message of the algorithm's hash length.
    fn digest_for(&self, key: &KeyRecord) -> Result<(SigningAlgorithm, Vec<u8>), KmsError> {
        let spec = key.material_spec()?;
        let algorithm = SigningAlgorithm::parse(self.algorithm_name)
            .filter(|algorithm| spec.spec.signing_algorithms(spec.usage).contains(algorithm))
            .ok_or_else(|| {
                KmsError::InvalidKeyUsage(format!(
                    "The signing algorithm {} is not valid for {}, whose key spec is {}.",
                    self.algorithm_name,
                    key.arn(),
                    spec.spec.as_str()
                ))
            })?;
        let hash = algorithm.digest();
        if self.message_type == "DIGEST" {
            if self.message.len() != hash.output_len() {
                return Err(KmsError::Validation(format!(
                    "Digest is invalid length for algorithm {}.",
                    algorithm.as_str()
                )));
            }
            return Ok((algorithm, self.message.to_vec()));
        }
        Ok((algorithm, hash.hash(self.message)))
    }
}

/// The uncompressed point of a DER SubjectPublicKeyInfo of `curve`: the SPKI must be exactly
/// the one hsm-kms would write for a point of that curve (algorithm, curve, lengths).
fn peer_point(spki: &[u8], curve: Curve) -> Option<Vec<u8>> {
    let point_len = 1 + 2 * curve.field_bytes();
    let template = subject_public_key_info(&PublicKey::Ec {
        curve,
        point: vec![0x04; point_len],
    });
    let prefix = &template[..template.len() - point_len];
    let point = spki.strip_prefix(prefix)?;
    (point.len() == point_len && point[0] == 0x04).then(|| point.to_vec())
}

/// Records Sign's and Verify's parameters: never the message or the signature.
fn signing_call(call: &mut Call, key_id: &str, algorithm: &str, message_type: Option<&str>) {
    call.param("keyId", key_id)
        .param("signingAlgorithm", algorithm)
        .param("messageType", message_type.unwrap_or("RAW"));
}

/// The API model's complaint about an enum member that is not one of `allowed`.
fn enum_violation(param: &str, value: &str, allowed: &[&str]) -> Option<String> {
    (!allowed.contains(&value)).then(|| {
        format!(
            "Value '{value}' at '{param}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        )
    })
}

/// The API model's complaint about a `Message` of 0 or more than 4096 bytes (its value is
/// left out, as AWS leaves out sensitive values).
fn message_violation(message: &[u8]) -> Option<String> {
    let bound = if message.is_empty() {
        "greater than or equal to 1"
    } else if message.len() > MESSAGE_MAX {
        "less than or equal to 4096"
    } else {
        return None;
    };
    Some(format!(
        "Value at 'message' failed to satisfy constraint: Member must have length {bound}"
    ))
}

/// Checks GenerateMac's and VerifyMac's algorithm and message.
fn check_mac_request(name: &str, message: &[u8]) -> Result<MacAlgorithm, KmsError> {
    let violations: Vec<String> = [
        enum_violation("macAlgorithm", name, MODEL_MAC_ALGORITHMS),
        message_violation(message),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !violations.is_empty() {
        return Err(validation_errors(violations));
    }
    MacAlgorithm::parse(name)
        .ok_or_else(|| KmsError::Validation(format!("Unknown MAC algorithm {name}")))
}

/// `InvalidKeyUsageException` unless the key's usage is `usage`, in AWS's words.
pub(super) fn require_usage(
    key: &KeyRecord,
    usage: KeyUsage,
    operation: Operation,
) -> Result<(), KmsError> {
    if key.key_usage == usage.as_str() {
        return Ok(());
    }
    Err(KmsError::InvalidKeyUsage(format!(
        "{} key usage is {} which is not valid for {}.",
        key.arn(),
        key.key_usage,
        operation.as_str()
    )))
}

/// AWS's "N validation errors detected: ..." of several constraint violations.
fn validation_errors(violations: Vec<String>) -> KmsError {
    let count = match violations.len() {
        1 => "1 validation error".to_owned(),
        n => format!("{n} validation errors"),
    };
    KmsError::Validation(format!("{count} detected: {}", violations.join("; ")))
}

/// `DryRunOperationException` when the request only asked whether it would succeed.
pub(super) fn dry_run(dry_run: Option<bool>) -> Result<(), KmsError> {
    if dry_run == Some(true) {
        Err(KmsError::DryRunOperation(
            "The request would have succeeded, but the DryRun option is set.".to_owned(),
        ))
    } else {
        Ok(())
    }
}

/// Whether the key is a symmetric encryption key (asymmetric and HMAC keys have neither
/// rotation nor data keys).
pub(super) fn is_symmetric_encryption(key: &KeyRecord) -> bool {
    KeySpec::parse(&key.key_spec) == Some(KeySpec::SymmetricDefault)
}

/// The material version a key signs, MACs or decrypts with (asymmetric and HMAC keys have
/// exactly one).
fn current_material(key: &KeyRecord) -> MaterialId {
    key.material(key.current_version())
}

/// DeriveSharedSecret's answer to a failed derivation: a peer key the HSM refuses is the
/// caller's (a `ValidationException`); anything else is the cluster's.
fn derivation_error(error: ClusterError) -> KmsError {
    match &error {
        ClusterError::Hsm(cause) if matches!(cause.failure, Failure::InvalidInput(_)) => {
            KmsError::Validation(format!("PublicKey is not valid: {}.", cause.failure))
        }
        _ => cluster_error(error),
    }
}
