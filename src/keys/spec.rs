//! Key specs and key usages: which combinations AWS KMS allows, which algorithms each
//! combination lists in `DescribeKey` and `GetPublicKey`, and the parameters of every
//! algorithm (digest, plaintext limits). Pure data, checked against AWS's tables in this
//! module's tests; the HSM layer maps a [`KeySpec`] to PKCS#11 objects and mechanisms.
//!
//! What CreateKey validates, in AWS's order: each enum member against the API model
//! (`ValidationException` "1 validation error detected: ..."), `KeySpec` and the
//! deprecated `CustomerMasterKeySpec` not together, a `KeyUsage` for every spec but
//! `SYMMETRIC_DEFAULT`, then the usage against the spec. Specs of the API model that this
//! key store does not hold (SM2, which AWS offers only in China; the post-quantum ML-DSA
//! and ML-KEM specs; Ed25519) are refused with `UnsupportedOperationException`.

use crate::error::KmsError;

/// A key spec this key store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// `SYMMETRIC_DEFAULT`: AES-256, used in AES-GCM inside the HSMs.
    SymmetricDefault,
    /// `RSA_2048`: a 2048-bit RSA key pair.
    Rsa2048,
    /// `RSA_3072`: a 3072-bit RSA key pair.
    Rsa3072,
    /// `RSA_4096`: a 4096-bit RSA key pair.
    Rsa4096,
    /// `ECC_NIST_P256`: an elliptic-curve key pair on NIST P-256.
    EccNistP256,
    /// `ECC_NIST_P384`: an elliptic-curve key pair on NIST P-384.
    EccNistP384,
    /// `ECC_NIST_P521`: an elliptic-curve key pair on NIST P-521.
    EccNistP521,
    /// `ECC_SECG_P256K1`: an elliptic-curve key pair on secp256k1 (signing only).
    EccSecgP256k1,
    /// `HMAC_224`: an HMAC key for HMAC-SHA-224.
    Hmac224,
    /// `HMAC_256`: an HMAC key for HMAC-SHA-256.
    Hmac256,
    /// `HMAC_384`: an HMAC key for HMAC-SHA-384.
    Hmac384,
    /// `HMAC_512`: an HMAC key for HMAC-SHA-512.
    Hmac512,
}

/// A key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUsage {
    /// `ENCRYPT_DECRYPT`: Encrypt, Decrypt, ReEncrypt and the data key operations.
    EncryptDecrypt,
    /// `SIGN_VERIFY`: Sign and Verify.
    SignVerify,
    /// `GENERATE_VERIFY_MAC`: GenerateMac and VerifyMac.
    GenerateVerifyMac,
    /// `KEY_AGREEMENT`: DeriveSharedSecret.
    KeyAgreement,
}

/// The `KeySpec` enum of the API model, in its order.
pub const MODEL_KEY_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
];

/// The `KeyUsageType` enum of the API model, in its order.
pub const MODEL_KEY_USAGES: &[&str] = &[
    "SIGN_VERIFY",
    "ENCRYPT_DECRYPT",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
    "ENCAPSULATE_DECAPSULATE",
];

impl KeySpec {
    /// Every spec this key store holds.
    pub const ALL: [KeySpec; 12] = [
        KeySpec::SymmetricDefault,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
        KeySpec::EccNistP256,
        KeySpec::EccNistP384,
        KeySpec::EccNistP521,
        KeySpec::EccSecgP256k1,
        KeySpec::Hmac224,
        KeySpec::Hmac256,
        KeySpec::Hmac384,
        KeySpec::Hmac512,
    ];

    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::SymmetricDefault => "SYMMETRIC_DEFAULT",
            KeySpec::Rsa2048 => "RSA_2048",
            KeySpec::Rsa3072 => "RSA_3072",
            KeySpec::Rsa4096 => "RSA_4096",
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::EccNistP384 => "ECC_NIST_P384",
            KeySpec::EccNistP521 => "ECC_NIST_P521",
            KeySpec::EccSecgP256k1 => "ECC_SECG_P256K1",
            KeySpec::Hmac224 => "HMAC_224",
            KeySpec::Hmac256 => "HMAC_256",
            KeySpec::Hmac384 => "HMAC_384",
            KeySpec::Hmac512 => "HMAC_512",
        }
    }

    /// The spec of an AWS name, if this key store holds it.
    pub fn parse(name: &str) -> Option<KeySpec> {
        KeySpec::ALL.into_iter().find(|spec| spec.as_str() == name)
    }

    /// The usages AWS allows with the spec.
    pub fn usages(self) -> &'static [KeyUsage] {
        use KeyUsage::*;
        match self {
            KeySpec::SymmetricDefault => &[EncryptDecrypt],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => &[EncryptDecrypt, SignVerify],
            KeySpec::EccNistP256 | KeySpec::EccNistP384 | KeySpec::EccNistP521 => {
                &[SignVerify, KeyAgreement]
            }
            KeySpec::EccSecgP256k1 => &[SignVerify],
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512 => {
                &[GenerateVerifyMac]
            }
        }
    }

    /// RSA modulus bits.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeySpec::Rsa2048 => Some(2048),
            KeySpec::Rsa3072 => Some(3072),
            KeySpec::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The elliptic curve of an ECC spec.
    pub fn curve(self) -> Option<Curve> {
        match self {
            KeySpec::EccNistP256 => Some(Curve::P256),
            KeySpec::EccNistP384 => Some(Curve::P384),
            KeySpec::EccNistP521 => Some(Curve::P521),
            KeySpec::EccSecgP256k1 => Some(Curve::Secp256k1),
            _ => None,
        }
    }

    /// HMAC key length in bytes (AWS: as many bits as the spec names).
    pub fn hmac_key_bytes(self) -> Option<usize> {
        self.mac_algorithm().map(|mac| mac.digest().output_len())
    }

    /// The one MAC algorithm of an HMAC spec.
    pub fn mac_algorithm(self) -> Option<MacAlgorithm> {
        match self {
            KeySpec::Hmac224 => Some(MacAlgorithm::HmacSha224),
            KeySpec::Hmac256 => Some(MacAlgorithm::HmacSha256),
            KeySpec::Hmac384 => Some(MacAlgorithm::HmacSha384),
            KeySpec::Hmac512 => Some(MacAlgorithm::HmacSha512),
            _ => None,
        }
    }

    /// Whether the key is a key pair (has a public key).
    pub fn is_asymmetric(self) -> bool {
        self.rsa_bits().is_some() || self.curve().is_some()
    }

    /// `EncryptionAlgorithms` of a key with this spec and usage.
    pub fn encryption_algorithms(self, usage: KeyUsage) -> Vec<&'static str> {
        match (self, usage) {
            (KeySpec::SymmetricDefault, _) => vec!["SYMMETRIC_DEFAULT"],
            (spec, KeyUsage::EncryptDecrypt) if spec.rsa_bits().is_some() => {
                EncryptionAlgorithm::RSA
                    .iter()
                    .map(|a| a.as_str())
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// `SigningAlgorithms` of a key with this spec and usage.
    pub fn signing_algorithms(self, usage: KeyUsage) -> Vec<SigningAlgorithm> {
        if usage != KeyUsage::SignVerify {
            return Vec::new();
        }
        use SigningAlgorithm::*;
        match self {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => vec![
                RsassaPssSha256,
                RsassaPssSha384,
                RsassaPssSha512,
                RsassaPkcs1V15Sha256,
                RsassaPkcs1V15Sha384,
                RsassaPkcs1V15Sha512,
            ],
            KeySpec::EccNistP256 | KeySpec::EccSecgP256k1 => vec![EcdsaSha256],
            KeySpec::EccNistP384 => vec![EcdsaSha384],
            KeySpec::EccNistP521 => vec![EcdsaSha512],
            _ => Vec::new(),
        }
    }

    /// `KeyAgreementAlgorithms` of a key with this spec and usage (ECDH on KEY_AGREEMENT).
    pub fn key_agreement_algorithms(self, usage: KeyUsage) -> Vec<&'static str> {
        if usage == KeyUsage::KeyAgreement && self.curve().is_some() {
            vec!["ECDH"]
        } else {
            Vec::new()
        }
    }

    /// The largest plaintext RSAES-OAEP with `algorithm` encrypts under this spec (AWS's
    /// table: modulus bytes - 2 * hash bytes - 2).
    pub fn max_oaep_plaintext(self, algorithm: EncryptionAlgorithm) -> Option<usize> {
        let modulus = self.rsa_bits()? / 8;
        let hash = match algorithm {
            EncryptionAlgorithm::RsaesOaepSha1 => 20,
            EncryptionAlgorithm::RsaesOaepSha256 => 32,
        };
        Some(modulus - 2 * hash - 2)
    }
}

impl KeyUsage {
    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            KeyUsage::SignVerify => "SIGN_VERIFY",
            KeyUsage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
            KeyUsage::KeyAgreement => "KEY_AGREEMENT",
        }
    }

    /// The usage of an AWS name, if this key store serves it.
    pub fn parse(name: &str) -> Option<KeyUsage> {
        [
            KeyUsage::EncryptDecrypt,
            KeyUsage::SignVerify,
            KeyUsage::GenerateVerifyMac,
            KeyUsage::KeyAgreement,
        ]
        .into_iter()
        .find(|usage| usage.as_str() == name)
    }
}

/// An elliptic curve of the ECC specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1).
    P521,
    /// secp256k1, the SECG curve of `ECC_SECG_P256K1`.
    Secp256k1,
}

impl Curve {
    /// The DER encoding of the curve's named-curve OID (`CKA_EC_PARAMS`, and the algorithm
    /// parameters of a SubjectPublicKeyInfo).
    pub fn oid_der(self) -> &'static [u8] {
        match self {
            // 1.2.840.10045.3.1.7
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            // 1.3.132.0.34
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            // 1.3.132.0.35
            Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
            // 1.3.132.0.10
            Curve::Secp256k1 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
        }
    }

    /// Bytes of one coordinate (and of `r` and `s` in a raw ECDSA signature).
    pub fn field_bytes(self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

/// A hash function of the signing and MAC algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Digest {
    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Digest::Sha224 => 28,
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
            Digest::Sha512 => 64,
        }
    }

    /// Hashes `message`.
    pub fn hash(self, message: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        match self {
            Digest::Sha224 => sha2::Sha224::digest(message).to_vec(),
            Digest::Sha256 => sha2::Sha256::digest(message).to_vec(),
            Digest::Sha384 => sha2::Sha384::digest(message).to_vec(),
            Digest::Sha512 => sha2::Sha512::digest(message).to_vec(),
        }
    }

    /// The DER `DigestInfo` prefix RSASSA-PKCS1-v1_5 puts before the hash (RFC 8017,
    /// section 9.2, note 1).
    pub fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Digest::Sha224 => &[
                0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x04, 0x05, 0x00, 0x04, 0x1c,
            ],
            Digest::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Digest::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Digest::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// A signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// `RSASSA_PSS_SHA_256`: RSA-PSS with SHA-256.
    RsassaPssSha256,
    /// `RSASSA_PSS_SHA_384`: RSA-PSS with SHA-384.
    RsassaPssSha384,
    /// `RSASSA_PSS_SHA_512`: RSA-PSS with SHA-512.
    RsassaPssSha512,
    /// `RSASSA_PKCS1_V1_5_SHA_256`: RSA PKCS #1 v1.5 with SHA-256.
    RsassaPkcs1V15Sha256,
    /// `RSASSA_PKCS1_V1_5_SHA_384`: RSA PKCS #1 v1.5 with SHA-384.
    RsassaPkcs1V15Sha384,
    /// `RSASSA_PKCS1_V1_5_SHA_512`: RSA PKCS #1 v1.5 with SHA-512.
    RsassaPkcs1V15Sha512,
    /// `ECDSA_SHA_256`: ECDSA with SHA-256.
    EcdsaSha256,
    /// `ECDSA_SHA_384`: ECDSA with SHA-384.
    EcdsaSha384,
    /// `ECDSA_SHA_512`: ECDSA with SHA-512.
    EcdsaSha512,
}

/// How a signing algorithm pads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// RSASSA-PSS, MGF1 with the same hash, salt as long as the hash.
    Pss,
    /// RSASSA-PKCS1-v1_5.
    Pkcs1V15,
    /// ECDSA, the signature DER-encoded.
    Ecdsa,
}

impl SigningAlgorithm {
    /// Every signing algorithm this key store serves.
    pub const ALL: [SigningAlgorithm; 9] = [
        SigningAlgorithm::RsassaPssSha256,
        SigningAlgorithm::RsassaPssSha384,
        SigningAlgorithm::RsassaPssSha512,
        SigningAlgorithm::RsassaPkcs1V15Sha256,
        SigningAlgorithm::RsassaPkcs1V15Sha384,
        SigningAlgorithm::RsassaPkcs1V15Sha512,
        SigningAlgorithm::EcdsaSha256,
        SigningAlgorithm::EcdsaSha384,
        SigningAlgorithm::EcdsaSha512,
    ];

    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::RsassaPssSha256 => "RSASSA_PSS_SHA_256",
            SigningAlgorithm::RsassaPssSha384 => "RSASSA_PSS_SHA_384",
            SigningAlgorithm::RsassaPssSha512 => "RSASSA_PSS_SHA_512",
            SigningAlgorithm::RsassaPkcs1V15Sha256 => "RSASSA_PKCS1_V1_5_SHA_256",
            SigningAlgorithm::RsassaPkcs1V15Sha384 => "RSASSA_PKCS1_V1_5_SHA_384",
            SigningAlgorithm::RsassaPkcs1V15Sha512 => "RSASSA_PKCS1_V1_5_SHA_512",
            SigningAlgorithm::EcdsaSha256 => "ECDSA_SHA_256",
            SigningAlgorithm::EcdsaSha384 => "ECDSA_SHA_384",
            SigningAlgorithm::EcdsaSha512 => "ECDSA_SHA_512",
        }
    }

    /// The algorithm of an AWS name, if served.
    pub fn parse(name: &str) -> Option<SigningAlgorithm> {
        SigningAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == name)
    }

    /// The hash the algorithm signs.
    pub fn digest(self) -> Digest {
        use SigningAlgorithm::*;
        match self {
            RsassaPssSha256 | RsassaPkcs1V15Sha256 | EcdsaSha256 => Digest::Sha256,
            RsassaPssSha384 | RsassaPkcs1V15Sha384 | EcdsaSha384 => Digest::Sha384,
            RsassaPssSha512 | RsassaPkcs1V15Sha512 | EcdsaSha512 => Digest::Sha512,
        }
    }

    /// The padding scheme.
    pub fn scheme(self) -> SignatureScheme {
        use SigningAlgorithm::*;
        match self {
            RsassaPssSha256 | RsassaPssSha384 | RsassaPssSha512 => SignatureScheme::Pss,
            RsassaPkcs1V15Sha256 | RsassaPkcs1V15Sha384 | RsassaPkcs1V15Sha512 => {
                SignatureScheme::Pkcs1V15
            }
            EcdsaSha256 | EcdsaSha384 | EcdsaSha512 => SignatureScheme::Ecdsa,
        }
    }
}

/// An asymmetric encryption algorithm (RSA keys of usage ENCRYPT_DECRYPT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionAlgorithm {
    /// `RSAES_OAEP_SHA_1`: RSA-OAEP with SHA-1 (hash and MGF1).
    RsaesOaepSha1,
    /// `RSAES_OAEP_SHA_256`: RSA-OAEP with SHA-256 (hash and MGF1).
    RsaesOaepSha256,
}

impl EncryptionAlgorithm {
    /// The RSA encryption algorithms, in AWS's order.
    pub const RSA: [EncryptionAlgorithm; 2] = [
        EncryptionAlgorithm::RsaesOaepSha1,
        EncryptionAlgorithm::RsaesOaepSha256,
    ];

    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionAlgorithm::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            EncryptionAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
        }
    }

    /// The algorithm of an AWS name, if it is an RSA one.
    pub fn parse(name: &str) -> Option<EncryptionAlgorithm> {
        EncryptionAlgorithm::RSA
            .into_iter()
            .find(|algorithm| algorithm.as_str() == name)
    }
}

/// A MAC algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacAlgorithm {
    /// `HMAC_SHA_224`: HMAC with SHA-224.
    HmacSha224,
    /// `HMAC_SHA_256`: HMAC with SHA-256.
    HmacSha256,
    /// `HMAC_SHA_384`: HMAC with SHA-384.
    HmacSha384,
    /// `HMAC_SHA_512`: HMAC with SHA-512.
    HmacSha512,
}

impl MacAlgorithm {
    /// Every MAC algorithm.
    pub const ALL: [MacAlgorithm; 4] = [
        MacAlgorithm::HmacSha224,
        MacAlgorithm::HmacSha256,
        MacAlgorithm::HmacSha384,
        MacAlgorithm::HmacSha512,
    ];

    /// The AWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            MacAlgorithm::HmacSha224 => "HMAC_SHA_224",
            MacAlgorithm::HmacSha256 => "HMAC_SHA_256",
            MacAlgorithm::HmacSha384 => "HMAC_SHA_384",
            MacAlgorithm::HmacSha512 => "HMAC_SHA_512",
        }
    }

    /// The algorithm of an AWS name.
    pub fn parse(name: &str) -> Option<MacAlgorithm> {
        MacAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == name)
    }

    /// The hash of the HMAC.
    pub fn digest(self) -> Digest {
        match self {
            MacAlgorithm::HmacSha224 => Digest::Sha224,
            MacAlgorithm::HmacSha256 => Digest::Sha256,
            MacAlgorithm::HmacSha384 => Digest::Sha384,
            MacAlgorithm::HmacSha512 => Digest::Sha512,
        }
    }
}

/// What CreateKey's `KeySpec`, `CustomerMasterKeySpec` and `KeyUsage` ask for, validated in
/// AWS's order (see the module docs).
pub fn validate_create(
    key_spec: Option<&str>,
    customer_master_key_spec: Option<&str>,
    key_usage: Option<&str>,
) -> Result<(KeySpec, KeyUsage), KmsError> {
    let enum_check = |param: &str, value: Option<&str>, allowed: &[&str]| match value {
        Some(value) if !allowed.contains(&value) => Some(format!(
            "Value '{value}' at '{param}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        )),
        _ => None,
    };
    let violations: Vec<String> = [
        enum_check("keySpec", key_spec, MODEL_KEY_SPECS),
        enum_check(
            "customerMasterKeySpec",
            customer_master_key_spec,
            MODEL_KEY_SPECS,
        ),
        enum_check("keyUsage", key_usage, MODEL_KEY_USAGES),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !violations.is_empty() {
        let count = match violations.len() {
            1 => "1 validation error".to_owned(),
            n => format!("{n} validation errors"),
        };
        return Err(KmsError::Validation(format!(
            "{count} detected: {}",
            violations.join("; ")
        )));
    }
    if key_spec.is_some() && customer_master_key_spec.is_some() {
        return Err(KmsError::Validation(
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated."
                .to_owned(),
        ));
    }
    let spec_name = key_spec
        .or(customer_master_key_spec)
        .unwrap_or("SYMMETRIC_DEFAULT");
    let spec = KeySpec::parse(spec_name).ok_or_else(|| {
        KmsError::UnsupportedOperation(format!(
            "KeySpec {spec_name} is not supported by this key store."
        ))
    })?;
    let usage = match key_usage {
        None if spec == KeySpec::SymmetricDefault => KeyUsage::EncryptDecrypt,
        None => {
            return Err(KmsError::Validation(
                "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."
                    .to_owned(),
            ));
        }
        Some(name) => KeyUsage::parse(name).ok_or_else(|| {
            KmsError::UnsupportedOperation(format!(
                "KeyUsage {name} is not supported by this key store."
            ))
        })?,
    };
    if !spec.usages().contains(&usage) {
        return Err(KmsError::Validation(format!(
            "KeyUsage {} is not compatible with KeySpec {}",
            usage.as_str(),
            spec.as_str()
        )));
    }
    Ok((spec, usage))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// AWS's table of specs and usages ("Key spec reference", restated here independently).
    const AWS_USAGES: &[(&str, &[&str])] = &[
        ("SYMMETRIC_DEFAULT", &["ENCRYPT_DECRYPT"]),
        ("RSA_2048", &["ENCRYPT_DECRYPT", "SIGN_VERIFY"]),
        ("RSA_3072", &["ENCRYPT_DECRYPT", "SIGN_VERIFY"]),
        ("RSA_4096", &["ENCRYPT_DECRYPT", "SIGN_VERIFY"]),
        ("ECC_NIST_P256", &["SIGN_VERIFY", "KEY_AGREEMENT"]),
        ("ECC_NIST_P384", &["SIGN_VERIFY", "KEY_AGREEMENT"]),
        ("ECC_NIST_P521", &["SIGN_VERIFY", "KEY_AGREEMENT"]),
        ("ECC_SECG_P256K1", &["SIGN_VERIFY"]),
        ("HMAC_224", &["GENERATE_VERIFY_MAC"]),
        ("HMAC_256", &["GENERATE_VERIFY_MAC"]),
        ("HMAC_384", &["GENERATE_VERIFY_MAC"]),
        ("HMAC_512", &["GENERATE_VERIFY_MAC"]),
    ];

    #[test]
    fn every_spec_and_usage_is_allowed_exactly_as_aws_allows() {
        for spec in KeySpec::ALL {
            for usage in [
                "ENCRYPT_DECRYPT",
                "SIGN_VERIFY",
                "GENERATE_VERIFY_MAC",
                "KEY_AGREEMENT",
            ] {
                let allowed = AWS_USAGES
                    .iter()
                    .find(|(name, _)| *name == spec.as_str())
                    .unwrap()
                    .1
                    .contains(&usage);
                let result = validate_create(Some(spec.as_str()), None, Some(usage));
                assert_eq!(
                    result.is_ok(),
                    allowed,
                    "{} {usage}: {result:?}",
                    spec.as_str()
                );
                if !allowed {
                    assert_eq!(
                        result.unwrap_err().message(),
                        format!(
                            "KeyUsage {usage} is not compatible with KeySpec {}",
                            spec.as_str()
                        )
                    );
                }
            }
        }
    }

    #[test]
    fn create_key_parameters_are_checked_in_aws_order() {
        let message = |k, c, u| validate_create(k, c, u).unwrap_err().message().to_owned();
        assert!(
            message(Some("RSA_1024"), None, Some("BOGUS"))
                .starts_with("2 validation errors detected: Value 'RSA_1024' at 'keySpec'")
        );
        assert_eq!(
            message(Some("RSA_2048"), Some("RSA_2048"), Some("SIGN_VERIFY")),
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated."
        );
        assert_eq!(
            message(Some("ECC_NIST_P256"), None, None),
            "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."
        );
        assert_eq!(
            validate_create(None, Some("HMAC_256"), Some("GENERATE_VERIFY_MAC")).unwrap(),
            (KeySpec::Hmac256, KeyUsage::GenerateVerifyMac)
        );
        assert_eq!(
            validate_create(None, None, None).unwrap(),
            (KeySpec::SymmetricDefault, KeyUsage::EncryptDecrypt)
        );
        let error = validate_create(Some("SM2"), None, Some("SIGN_VERIFY")).unwrap_err();
        assert_eq!(error.code(), "UnsupportedOperationException");
    }

    #[test]
    fn algorithms_and_limits_follow_aws_tables() {
        assert_eq!(
            KeySpec::Rsa2048.max_oaep_plaintext(EncryptionAlgorithm::RsaesOaepSha1),
            Some(214)
        );
        assert_eq!(
            KeySpec::Rsa2048.max_oaep_plaintext(EncryptionAlgorithm::RsaesOaepSha256),
            Some(190)
        );
        assert_eq!(
            KeySpec::Rsa3072.max_oaep_plaintext(EncryptionAlgorithm::RsaesOaepSha256),
            Some(318)
        );
        assert_eq!(
            KeySpec::Rsa4096.max_oaep_plaintext(EncryptionAlgorithm::RsaesOaepSha256),
            Some(446)
        );
        assert_eq!(
            KeySpec::EccNistP521.signing_algorithms(KeyUsage::SignVerify),
            [SigningAlgorithm::EcdsaSha512]
        );
        assert_eq!(KeySpec::Hmac384.hmac_key_bytes(), Some(48));
        for digest in [
            Digest::Sha224,
            Digest::Sha256,
            Digest::Sha384,
            Digest::Sha512,
        ] {
            let prefix = digest.digest_info_prefix();
            // The DigestInfo's outer length covers the prefix after it plus the hash.
            assert_eq!(
                usize::from(prefix[1]),
                prefix.len() - 2 + digest.output_len()
            );
            assert_eq!(usize::from(prefix[prefix.len() - 1]), digest.output_len());
        }
    }
}
