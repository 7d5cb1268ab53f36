//! PKCS#11 attribute templates for the objects hsm-kms keeps in an HSM: customer master key
//! material, the cluster domain key and the link keys two clusters share. The templates are
//! the security boundary: a CMK is sensitive and can leave an HSM only wrapped under a
//! *trusted* key (the domain key, or a link key), which only a security officer can create.

use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};

/// CKA_ID of the cluster domain key.
pub const DOMAIN_KEY_ID: &[u8] = b"hsm-kms/domain-key/1";
/// CKA_LABEL of the cluster domain key.
pub const DOMAIN_KEY_LABEL: &str = "hsm-kms domain key";
/// Start of the CKA_ID of every link key (`hsm-kms/link-key/<cluster>/<cluster>`).
pub const LINK_KEY_PREFIX: &str = "hsm-kms/link-key/";

/// A trusted wrapping key a ceremony establishes: the domain key of one cluster, or the link
/// key two clusters share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// Its CKA_ID.
    pub id: Vec<u8>,
    /// Its CKA_LABEL.
    pub label: String,
}

impl TrustedKey {
    /// The cluster domain key.
    pub fn domain() -> TrustedKey {
        TrustedKey {
            id: DOMAIN_KEY_ID.to_vec(),
            label: DOMAIN_KEY_LABEL.to_owned(),
        }
    }

    /// The link key of clusters `a` and `b` (the same whichever is named first).
    pub fn link(a: &str, b: &str) -> TrustedKey {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        TrustedKey {
            id: format!("{LINK_KEY_PREFIX}{first}/{second}").into_bytes(),
            label: format!("hsm-kms link key {first} {second}"),
        }
    }

    /// The two clusters a link key's CKA_ID names (`None` for any other id).
    pub fn linked_clusters(id: &[u8]) -> Option<(String, String)> {
        let text = std::str::from_utf8(id)
            .ok()?
            .strip_prefix(LINK_KEY_PREFIX)?;
        let (first, second) = text.split_once('/')?;
        Some((first.to_owned(), second.to_owned()))
    }
}

/// Whether a CKA_ID names a trusted wrapping key (the domain key or a link key), which is no
/// key material.
pub fn is_trusted_key_id(id: &[u8]) -> bool {
    id == DOMAIN_KEY_ID || id.starts_with(LINK_KEY_PREFIX.as_bytes())
}

const CKA_WRAP_TEMPLATE: u64 = 0x4000_0211;
const CKA_UNWRAP_TEMPLATE: u64 = 0x4000_0212;
const CKA_SENSITIVE: u64 = 0x103;
const CKA_WRAP_WITH_TRUSTED: u64 = 0x210;

/// `CK_TRUE`, pointed at by the raw attribute arrays below.
static CK_TRUE: u8 = 1;

/// How a CMK may leave the HSM that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Portability {
    /// Only wrapped under a trusted key (the domain key), for hsm-kms replication.
    WrapWithTrusted,
    /// Never: the vendor synchronises its HSMs (CloudHSM).
    NonExtractable,
}

/// Attributes of a CMK material version generated inside an HSM (without its value length,
/// which key generation adds and unwrapping takes from the wrapped bytes).
pub fn cmk(id: &[u8], label: &str, portability: Portability) -> Vec<Attribute> {
    let replicable = portability == Portability::WrapWithTrusted;
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(replicable),
        Attribute::WrapWithTrusted(replicable),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// Template for `C_GenerateKey` of a 256-bit CMK material version. The generated original is
/// also non-modifiable (SoftHSM2 refuses `CKA_MODIFIABLE` in an unwrap template, so copies
/// cannot be).
pub fn cmk_generate(id: &[u8], label: &str, portability: Portability) -> Vec<Attribute> {
    let mut template = cmk(id, label, portability);
    template.push(Attribute::ValueLen(32.into()));
    template.push(Attribute::Modifiable(false));
    template
}

/// The domain key as the security officer creates it: a public session object, trusted, able
/// only to wrap and unwrap with AES key wrap (with padding), and only keys that are themselves
/// sensitive and wrappable only under trusted keys.
pub fn domain_key_session() -> Vec<Attribute> {
    trusted_key_session(&TrustedKey::domain())
}

/// A trusted wrapping key (domain or link key) as the security officer creates it: see
/// [`domain_key_session`].
pub fn trusted_key_session(key: &TrustedKey) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Trusted(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::AllowedMechanisms(vec![MechanismType::AES_KEY_WRAP_PAD]),
        Attribute::Id(key.id.clone()),
        Attribute::Label(key.label.as_bytes().to_vec()),
        guard_template(CKA_WRAP_TEMPLATE),
        guard_template(CKA_UNWRAP_TEMPLATE),
    ]
}

/// Template for `C_GenerateKey` of a fresh trusted wrapping key (a session object of the SO).
pub fn trusted_key_generate(key: &TrustedKey) -> Vec<Attribute> {
    let mut template = trusted_key_session(key);
    template.push(Attribute::ValueLen(32.into()));
    template
}

/// Changes made when the user copies the SO's session domain key (or link key) into a
/// private token object.
pub fn domain_key_persist() -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(false),
    ]
}

/// Finds the persisted domain key.
pub fn domain_key_search() -> Vec<Attribute> {
    trusted_key_search(&TrustedKey::domain())
}

/// Finds a persisted trusted wrapping key.
pub fn trusted_key_search(key: &TrustedKey) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Id(key.id.clone()),
    ]
}

/// A `CKA_WRAP_TEMPLATE` / `CKA_UNWRAP_TEMPLATE` requiring `CKA_SENSITIVE` and
/// `CKA_WRAP_WITH_TRUSTED`. cryptoki has no typed array attribute, so this builds the raw
/// `CK_ATTRIBUTE[2]` bytes; the values point at a `static` and stay valid for every call.
fn guard_template(kind: u64) -> Attribute {
    let value = std::ptr::addr_of!(CK_TRUE) as usize;
    let mut raw = Vec::new();
    for attribute in [CKA_SENSITIVE, CKA_WRAP_WITH_TRUSTED] {
        raw.extend_from_slice(&(attribute as std::ffi::c_ulong).to_ne_bytes());
        raw.extend_from_slice(&value.to_ne_bytes());
        raw.extend_from_slice(&(1 as std::ffi::c_ulong).to_ne_bytes());
    }
    Attribute::VendorDefined((AttributeType::VendorDefined(kind), raw))
}

/// RSA-3072 key pair a target member's SO generates to receive the domain key (session
/// objects, public so that they survive the SO logging out and the user logging in).
pub fn transport_key_pair() -> (Vec<Attribute>, Vec<Attribute>) {
    let public = vec![
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Wrap(true),
        Attribute::Encrypt(false),
        Attribute::Verify(false),
        Attribute::ModulusBits(3072.into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
    ];
    let private = vec![
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
    ];
    (public, private)
}

/// The target's transport public key imported on the source member by its SO, trusted so
/// that it may wrap the domain key.
pub fn trusted_transport_public_key(modulus: Vec<u8>, exponent: Vec<u8>) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Trusted(true),
        Attribute::Wrap(true),
        Attribute::Encrypt(false),
        Attribute::Verify(false),
        Attribute::Modulus(modulus),
        Attribute::PublicExponent(exponent),
    ]
}
