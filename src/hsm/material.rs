//! What kind of key material an object with a material `CKA_ID` is, and the PKCS#11
//! templates of each kind: AES-256 (symmetric encryption), a generic secret (HMAC), and RSA
//! or EC key pairs. A pair is two objects under one `CKA_ID`: the private key, sensitive and
//! leaving the HSM only wrapped under the trusted domain key like every secret, and the
//! public key, which is not secret and is copied to other members by value.
//!
//! The kind is also read back from a token's objects ([`MaterialSpec::of_object`]), so that
//! a member catching up copies a version as the kind it is, without asking the metadata.
//! The templates here are part of the security boundary: each private or secret object can
//! do exactly what its key usage allows and nothing else.

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};

use super::templates::Portability;
use crate::keys::spec::{Curve, Digest, KeySpec, KeyUsage};

/// The material of one key version: its spec and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaterialSpec {
    /// The key spec the objects were made for.
    pub spec: KeySpec,
    /// What the objects may be used for.
    pub usage: KeyUsage,
}

/// A public key as the HSM holds it.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An RSA public key.
    Rsa {
        /// `CKA_MODULUS`, big-endian.
        modulus: Vec<u8>,
        /// `CKA_PUBLIC_EXPONENT`, big-endian.
        exponent: Vec<u8>,
    },
    /// An elliptic-curve public key.
    Ec {
        /// The curve of `CKA_EC_PARAMS`.
        curve: Curve,
        /// The uncompressed point (`04 || x || y`), unwrapped from `CKA_EC_POINT`.
        point: Vec<u8>,
    },
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicKey::Rsa { modulus, .. } => {
                write!(f, "PublicKey::Rsa({} bits)", modulus.len() * 8)
            }
            PublicKey::Ec { curve, .. } => write!(f, "PublicKey::Ec({curve:?})"),
        }
    }
}

impl MaterialSpec {
    /// AES-256 for symmetric encryption (CMKs and internal keys).
    pub const AES: MaterialSpec = MaterialSpec {
        spec: KeySpec::SymmetricDefault,
        usage: KeyUsage::EncryptDecrypt,
    };

    /// Whether the material is a key pair.
    pub fn is_pair(self) -> bool {
        self.spec.is_asymmetric()
    }

    /// The class of the object that holds the secret part.
    pub fn secret_class(self) -> ObjectClass {
        if self.is_pair() {
            ObjectClass::PRIVATE_KEY
        } else {
            ObjectClass::SECRET_KEY
        }
    }

    fn key_type(self) -> KeyType {
        if self.spec.rsa_bits().is_some() {
            KeyType::RSA
        } else if self.spec.curve().is_some() {
            KeyType::EC
        } else if self.spec.mac_algorithm().is_some() {
            KeyType::GENERIC_SECRET
        } else {
            KeyType::AES
        }
    }

    /// The capabilities of the secret or private object: exactly the key usage. A private key
    /// has no `CKA_ENCRYPT`, `CKA_VERIFY` or `CKA_WRAP` (those belong to its public half).
    fn capabilities(self) -> Vec<Attribute> {
        let pair = self.is_pair();
        let (encrypt, decrypt, sign, derive) = match self.usage {
            KeyUsage::EncryptDecrypt => (!pair, true, false, false),
            KeyUsage::SignVerify => (false, false, true, false),
            KeyUsage::GenerateVerifyMac => (false, false, true, false),
            KeyUsage::KeyAgreement => (false, false, false, true),
        };
        let mut capabilities = vec![
            Attribute::Decrypt(decrypt),
            Attribute::Sign(sign),
            Attribute::Derive(derive),
            Attribute::Unwrap(false),
        ];
        if !pair {
            capabilities.extend([
                Attribute::Encrypt(encrypt),
                // An HMAC key verifies by signing again.
                Attribute::Verify(self.usage == KeyUsage::GenerateVerifyMac),
                Attribute::Wrap(false),
            ]);
        }
        capabilities
    }

    /// The secret or private object as it is unwrapped on a member (and, with the
    /// generation attributes added, generated).
    pub fn secret_template(
        self,
        id: &[u8],
        label: &str,
        portability: Portability,
    ) -> Vec<Attribute> {
        let replicable = portability == Portability::WrapWithTrusted;
        let mut template = vec![
            Attribute::Class(self.secret_class()),
            Attribute::KeyType(self.key_type()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(replicable),
            Attribute::WrapWithTrusted(replicable),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        template.extend(self.capabilities());
        if let Some(mac) = self.spec.mac_algorithm() {
            // An HMAC key does its one HMAC and nothing else; this also names its spec when
            // the HSM does not report its length (SoftHSM2 leaves `CKA_VALUE_LEN` at 0 on
            // unwrapped keys, and imported HMAC material has any length AWS allows).
            template.push(Attribute::AllowedMechanisms(vec![hmac_mechanism(
                mac.digest(),
            )]));
        }
        template
    }

    /// The public object of a pair, without its key values.
    fn public_template(self, id: &[u8], label: &str) -> Vec<Attribute> {
        let (encrypt, verify, derive) = match self.usage {
            KeyUsage::EncryptDecrypt => (true, false, false),
            KeyUsage::SignVerify => (false, true, false),
            _ => (false, false, false),
        };
        vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(self.key_type()),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Encrypt(encrypt),
            Attribute::Verify(verify),
            Attribute::Derive(derive),
            Attribute::Wrap(false),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ]
    }

    /// The public object of a pair, created on a member from `public` by value.
    pub fn public_object(self, id: &[u8], label: &str, public: &PublicKey) -> Vec<Attribute> {
        let mut template = self.public_template(id, label);
        match public {
            PublicKey::Rsa { modulus, exponent } => {
                template.push(Attribute::Modulus(modulus.clone()));
                template.push(Attribute::PublicExponent(exponent.clone()));
            }
            PublicKey::Ec { curve, point } => {
                template.push(Attribute::EcParams(curve.oid_der().to_vec()));
                template.push(Attribute::EcPoint(point.clone()));
            }
        }
        template
    }

    /// How a member generates a secret (`C_GenerateKey`): mechanism and template. `None`
    /// for pairs.
    pub fn secret_generation(
        self,
        id: &[u8],
        label: &str,
        portability: Portability,
    ) -> Option<(Mechanism<'static>, Vec<Attribute>)> {
        if self.is_pair() {
            return None;
        }
        let mut template = self.secret_template(id, label, portability);
        template.push(Attribute::Modifiable(false));
        match self.spec.hmac_key_bytes() {
            Some(bytes) => {
                template.push(Attribute::ValueLen((bytes as u64).into()));
                Some((Mechanism::GenericSecretKeyGen, template))
            }
            None => {
                template.push(Attribute::ValueLen(32.into()));
                Some((Mechanism::AesKeyGen, template))
            }
        }
    }

    /// How a member generates a pair (`C_GenerateKeyPair`): mechanism, public template,
    /// private template. `None` for secrets.
    pub fn pair_generation(
        self,
        id: &[u8],
        label: &str,
        portability: Portability,
    ) -> Option<(Mechanism<'static>, Vec<Attribute>, Vec<Attribute>)> {
        let mut public = self.public_template(id, label);
        let mut private = self.secret_template(id, label, portability);
        private.push(Attribute::Modifiable(false));
        if let Some(bits) = self.spec.rsa_bits() {
            public.push(Attribute::ModulusBits((bits as u64).into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            return Some((Mechanism::RsaPkcsKeyPairGen, public, private));
        }
        let curve = self.spec.curve()?;
        public.push(Attribute::EcParams(curve.oid_der().to_vec()));
        Some((Mechanism::EccKeyPairGen, public, private))
    }

    /// The attributes [`MaterialSpec::of_object`] reads.
    pub const DESCRIBING: [AttributeType; 9] = [
        AttributeType::Class,
        AttributeType::AllowedMechanisms,
        AttributeType::KeyType,
        AttributeType::ValueLen,
        AttributeType::Modulus,
        AttributeType::EcParams,
        AttributeType::Decrypt,
        AttributeType::Sign,
        AttributeType::Derive,
    ];

    /// The material a secret or private object holds, from its [`MaterialSpec::DESCRIBING`]
    /// attributes; `None` for objects hsm-kms does not make.
    pub fn of_object(attributes: &[Attribute]) -> Option<MaterialSpec> {
        let mut class = None;
        let mut key_type = None;
        let (mut value_len, mut modulus_bits, mut curve) = (None, None, None);
        let (mut decrypt, mut sign, mut derive) = (false, false, false);
        let mut allowed: &[MechanismType] = &[];
        for attribute in attributes {
            match attribute {
                Attribute::AllowedMechanisms(mechanisms) => allowed = mechanisms,
                Attribute::Class(c) => class = Some(*c),
                Attribute::KeyType(t) => key_type = Some(*t),
                Attribute::ValueLen(len) => value_len = Some(usize::from(*len)),
                Attribute::Modulus(modulus) => modulus_bits = Some(modulus.len() * 8),
                Attribute::EcParams(params) => {
                    curve = [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1]
                        .into_iter()
                        .find(|curve| curve.oid_der() == params.as_slice());
                }
                Attribute::Decrypt(value) => decrypt = *value,
                Attribute::Sign(value) => sign = *value,
                Attribute::Derive(value) => derive = *value,
                _ => {}
            }
        }
        let key_type = key_type?;
        let spec = if key_type == KeyType::AES {
            KeySpec::SymmetricDefault
        } else if key_type == KeyType::GENERIC_SECRET {
            let by_mechanism = |spec: &KeySpec| {
                spec.mac_algorithm()
                    .is_some_and(|mac| allowed == [hmac_mechanism(mac.digest())])
            };
            let by_length = |spec: &KeySpec| {
                spec.hmac_key_bytes().is_some() && spec.hmac_key_bytes() == value_len
            };
            KeySpec::ALL
                .into_iter()
                .find(by_mechanism)
                .or_else(|| KeySpec::ALL.into_iter().find(by_length))?
        } else if key_type == KeyType::RSA {
            KeySpec::ALL
                .into_iter()
                .find(|spec| spec.rsa_bits().is_some() && spec.rsa_bits() == modulus_bits)?
        } else if key_type == KeyType::EC {
            let curve = curve?;
            KeySpec::ALL
                .into_iter()
                .find(|spec| spec.curve() == Some(curve))?
        } else {
            return None;
        };
        let usage = match spec {
            KeySpec::SymmetricDefault => KeyUsage::EncryptDecrypt,
            spec if spec.mac_algorithm().is_some() => KeyUsage::GenerateVerifyMac,
            _ if sign => KeyUsage::SignVerify,
            _ if decrypt => KeyUsage::EncryptDecrypt,
            _ if derive => KeyUsage::KeyAgreement,
            _ => return None,
        };
        let material = MaterialSpec { spec, usage };
        (class? == material.secret_class()).then_some(material)
    }
}

/// The PKCS#11 HMAC mechanism of a digest.
pub fn hmac_mechanism(digest: Digest) -> MechanismType {
    match digest {
        Digest::Sha224 => MechanismType::SHA224_HMAC,
        Digest::Sha256 => MechanismType::SHA256_HMAC,
        Digest::Sha384 => MechanismType::SHA384_HMAC,
        Digest::Sha512 => MechanismType::SHA512_HMAC,
    }
}

/// The DER SubjectPublicKeyInfo of a public key (what GetPublicKey returns).
pub fn subject_public_key_info(public: &PublicKey) -> Vec<u8> {
    match public {
        PublicKey::Rsa { modulus, exponent } => {
            // rsaEncryption, NULL parameters; the key is SEQUENCE { modulus, exponent }.
            let algorithm = der_sequence(&[
                &[
                    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                ],
                &[0x05, 0x00],
            ]);
            let key = der_sequence(&[&der_integer(modulus), &der_integer(exponent)]);
            der_sequence(&[&algorithm, &der_bit_string(&key)])
        }
        PublicKey::Ec { curve, point } => {
            // id-ecPublicKey with the named curve; the key is the uncompressed point.
            let algorithm = der_sequence(&[
                &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
                curve.oid_der(),
            ]);
            der_sequence(&[&algorithm, &der_bit_string(ec_point_octets(point))])
        }
    }
}

/// The uncompressed point inside `CKA_EC_POINT`, which PKCS#11 wraps in a DER OCTET STRING
/// (SoftHSM2 does); a module that answers the bare point is accepted too.
pub fn ec_point_octets(point: &[u8]) -> &[u8] {
    let inner = match point {
        [0x04, len, rest @ ..] if *len < 0x80 && usize::from(*len) == rest.len() => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => return point,
    };
    // An uncompressed point is 0x04 || X || Y: odd length, starting with 0x04.
    if inner.first() == Some(&0x04) && inner.len() % 2 == 1 {
        inner
    } else {
        point
    }
}

/// DER length octets.
fn der_length(length: usize) -> Vec<u8> {
    if length < 0x80 {
        return vec![length as u8];
    }
    let bytes: Vec<u8> = length
        .to_be_bytes()
        .into_iter()
        .skip_while(|byte| *byte == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

pub(super) fn der_tagged(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_length(content.len()));
    out.extend_from_slice(content);
    out
}

pub(super) fn der_sequence(parts: &[&[u8]]) -> Vec<u8> {
    der_tagged(0x30, &parts.concat())
}

/// A DER INTEGER of the unsigned big-endian `value`.
pub fn der_integer(value: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = match value.iter().position(|byte| *byte != 0) {
        Some(start) => &value[start..],
        None => &[0],
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der_tagged(0x02, &content)
}

pub(super) fn der_bit_string(content: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(content);
    der_tagged(0x03, &bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_are_unwrapped_from_their_octet_string() {
        for field in [32usize, 48, 66] {
            let mut raw = vec![0x04u8];
            raw.extend(std::iter::repeat_n(0x11, 2 * field));
            let mut wrapped = vec![0x04];
            if raw.len() >= 0x80 {
                wrapped.push(0x81);
            }
            wrapped.push(raw.len() as u8);
            wrapped.extend(&raw);
            assert_eq!(ec_point_octets(&wrapped), raw.as_slice(), "{field}");
            assert_eq!(ec_point_octets(&raw), raw.as_slice(), "{field} bare");
        }
    }
}
