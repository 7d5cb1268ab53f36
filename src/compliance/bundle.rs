//! The evidence bundle (`--evidence DIR`): the report, the audit events it relied on (every
//! stored event, exactly as hashed, with its chain links), the newest sealed checkpoint, and a
//! manifest of the files' SHA-256 digests. The manifest is signed inside the HSMs with an
//! internal ECC_NIST_P256 key (ECDSA over SHA-256 of `manifest.json`, DER in `manifest.sig`)
//! whose public key the bundle carries (`signing-key.pem`), so an auditor verifies it with
//! `openssl dgst -sha256 -verify signing-key.pem -signature manifest.sig manifest.json`
//! without hsm-kms; the public key's fingerprint is what to compare with the cluster's. The
//! manifest's digest is also sealed the way audit checkpoints are (AES-256-GCM under an
//! internal key, a MAC only the HSMs make and check). [`verify`] checks both against the HSMs.
//!
//! It writes only inside the directory it is given, and refuses to write over a bundle.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::report::Report;
use crate::audit::checkpoint::Checkpoint;
use crate::audit::log::read_events;
use crate::cluster::{Cluster, MaterialId};
use crate::keys::spec::{Curve, SigningAlgorithm};
use crate::store::MetadataStore;

/// The internal key that seals manifests (created in the HSMs on first use).
pub const MANIFEST_KEY_ID: &str = "hsm-kms-compliance";
/// AAD of manifest seals: a seal made for anything else does not open as one.
const MANIFEST_AAD: &[u8] = b"hsm-kms compliance evidence manifest v1";

/// The bundle's copy of the compliance report (JSON).
pub const REPORT_FILE: &str = "report.json";
/// The audit events the report relied on, one JSON object a line.
pub const EVENTS_FILE: &str = "audit-events.jsonl";
/// The newest sealed checkpoint of the audit chain.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// The list of files with their sizes and SHA-256 digests.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest's seal made in the HSMs ([`ManifestSeal`]).
pub const SEAL_FILE: &str = "manifest.seal.json";
/// The manifest's signature by the HSM-held signing key.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// The public key that verifies `manifest.sig`, as PEM.
pub const PUBLIC_KEY_FILE: &str = "signing-key.pem";
/// The internal key pair that signs manifests (created in the HSMs on first use).
pub const SIGNING_KEY_ID: &str = "hsm-kms-compliance-signing";

/// One file listed by the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The file's name inside the bundle.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256 digest, in hex.
    pub sha256: String,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format's name and version.
    pub schema: String,
    /// When the report was generated (RFC 3339, UTC).
    pub created: String,
    /// The cluster the report is about.
    pub cluster: String,
    /// Sequence number of the audit chain's head the report read up to.
    pub audit_head_seq: u64,
    /// Sequence number of the bundled checkpoint, if the chain has one.
    pub checkpoint_seq: Option<u64>,
    /// Every other file of the bundle.
    pub files: Vec<ManifestEntry>,
    /// How the manifest is sealed, in words (no signature exists yet).
    pub sealing: String,
}

/// The seal of `manifest.json`: AES-256-GCM of its SHA-256 digest inside the HSMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSeal {
    /// The internal key that sealed it ([`MANIFEST_KEY_ID`]).
    pub key: String,
    /// The AAD, as text.
    pub aad: String,
    /// The GCM IV, in hex.
    pub iv: String,
    /// Ciphertext and tag, in hex.
    pub seal: String,
}

/// Why a bundle could not be written or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be written or read (the message names it).
    #[error("{0}")]
    Io(String),
    /// The HSMs could not seal or open the manifest.
    #[error("the HSMs could not seal or open the manifest: {0}")]
    Seal(String),
    /// A file is missing or altered, or the seal or signature does not match.
    #[error("the bundle does not verify: {0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |error| BundleError::Io(format!("{}: {error}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn manifest_digest(manifest_bytes: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(MANIFEST_AAD);
    hasher.update(manifest_bytes);
    hasher.finalize().into()
}

/// Writes the bundle for `report` into `dir` (created if missing; must hold no bundle yet).
pub fn write(
    dir: &Path,
    report: &Report,
    store: &dyn MetadataStore,
    checkpoint: Option<&Checkpoint>,
    cluster: &Cluster,
) -> Result<Manifest, BundleError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if dir.join(MANIFEST_FILE).exists() {
        return Err(BundleError::Io(format!(
            "{} already holds an evidence bundle",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<(), BundleError> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io(&path))?;
        files.push(ManifestEntry {
            name: name.to_owned(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        });
        Ok(())
    };
    put(REPORT_FILE, report.to_json().as_bytes())?;
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = read_events(store, after, 1000).map_err(|e| BundleError::Io(e.to_string()))?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        for stored in page {
            let line = serde_json::json!({
                "seq": stored.seq,
                "previous": hex::encode(stored.previous),
                "hash": hex::encode(stored.hash),
                "json": String::from_utf8_lossy(&stored.json),
            });
            events.extend_from_slice(line.to_string().as_bytes());
            events.push(b'\n');
        }
    }
    put(EVENTS_FILE, &events)?;
    if let Some(checkpoint) = checkpoint {
        let text =
            serde_json::to_vec_pretty(checkpoint).map_err(|e| BundleError::Io(e.to_string()))?;
        put(CHECKPOINT_FILE, &text)?;
    }
    let manifest = Manifest {
        schema: "hsm-kms/compliance-evidence-manifest/1".into(),
        created: report.generated_at.clone(),
        cluster: report.origin.cluster.clone(),
        audit_head_seq: report.audit.head_seq,
        checkpoint_seq: checkpoint.map(|c| c.seq),
        files,
        sealing: format!(
            "ECDSA P-256 with SHA-256 of manifest.json inside the HSMs under the internal key {SIGNING_KEY_ID} ({SIGNATURE_FILE}, DER; public key in {PUBLIC_KEY_FILE}; openssl dgst -sha256 -verify {PUBLIC_KEY_FILE} -signature {SIGNATURE_FILE} {MANIFEST_FILE}); also SHA-256 of \"{}\" followed by manifest.json, sealed with AES-256-GCM inside the HSMs under the internal key {MANIFEST_KEY_ID} ({SEAL_FILE})",
            String::from_utf8_lossy(MANIFEST_AAD)
        ),
    };
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Io(e.to_string()))?;
    let sealed = cluster
        .seal_internal(
            MANIFEST_KEY_ID,
            "hsm-kms compliance evidence key",
            MANIFEST_AAD,
            &manifest_digest(&manifest_bytes),
        )
        .map_err(|e| BundleError::Seal(e.to_string()))?;
    let (iv, seal) = sealed.into_parts();
    let seal = ManifestSeal {
        key: MANIFEST_KEY_ID.into(),
        aad: String::from_utf8_lossy(MANIFEST_AAD).into_owned(),
        iv: hex::encode(iv),
        seal: hex::encode(&seal),
    };
    let (signature, public_key) = cluster
        .sign_internal(
            SIGNING_KEY_ID,
            "hsm-kms compliance signing key",
            &Sha256::digest(&manifest_bytes),
        )
        .map_err(|e| BundleError::Seal(e.to_string()))?;
    let path = dir.join(SIGNATURE_FILE);
    std::fs::write(&path, &signature).map_err(io(&path))?;
    let path = dir.join(PUBLIC_KEY_FILE);
    std::fs::write(&path, public_key_pem(&public_key)).map_err(io(&path))?;
    let path = dir.join(MANIFEST_FILE);
    std::fs::write(&path, &manifest_bytes).map_err(io(&path))?;
    let path = dir.join(SEAL_FILE);
    let seal_bytes =
        serde_json::to_vec_pretty(&seal).map_err(|e| BundleError::Io(e.to_string()))?;
    std::fs::write(&path, seal_bytes).map_err(io(&path))?;
    Ok(manifest)
}

/// A DER SubjectPublicKeyInfo as PEM (`-----BEGIN PUBLIC KEY-----`), for openssl.
fn public_key_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// Checks a bundle: the manifest's seal opens inside the HSMs of `cluster` and matches the
/// manifest, and every listed file has its listed digest.
pub fn verify(dir: &Path, cluster: &Cluster) -> Result<Manifest, BundleError> {
    let path = dir.join(MANIFEST_FILE);
    let manifest_bytes = std::fs::read(&path).map_err(io(&path))?;
    let path = dir.join(SEAL_FILE);
    let seal: ManifestSeal = serde_json::from_slice(&std::fs::read(&path).map_err(io(&path))?)
        .map_err(|e| BundleError::Invalid(format!("{SEAL_FILE}: {e}")))?;
    let iv = hex::decode(&seal.iv)
        .ok()
        .ok_or_else(|| BundleError::Invalid("seal IV is not hex".into()))?;
    let sealed = hex::decode(&seal.seal)
        .ok()
        .ok_or_else(|| BundleError::Invalid("seal is not hex".into()))?;
    let opened = cluster
        .open_internal(MANIFEST_KEY_ID, MANIFEST_AAD, &iv, &sealed)
        .map_err(|e| {
            if e.is_rejected_ciphertext() {
                BundleError::Invalid("the HSMs rejected the manifest seal".into())
            } else {
                BundleError::Seal(e.to_string())
            }
        })?;
    if opened.as_slice() != manifest_digest(&manifest_bytes) {
        return Err(BundleError::Invalid(
            "manifest.json does not match its seal".into(),
        ));
    }
    let path = dir.join(SIGNATURE_FILE);
    let signature = std::fs::read(&path).map_err(io(&path))?;
    let digest = Sha256::digest(&manifest_bytes);
    let valid = cluster
        .with_material(&MaterialId::new(SIGNING_KEY_ID, 1), |member, id| {
            member.verify_digest(
                id,
                SigningAlgorithm::EcdsaSha256,
                Some(Curve::P256),
                &digest,
                &signature,
            )
        })
        .map_err(|e| BundleError::Seal(e.to_string()))?;
    if !valid.value {
        return Err(BundleError::Invalid(
            "manifest.json does not match its signature".into(),
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| BundleError::Invalid(format!("{MANIFEST_FILE}: {e}")))?;
    for entry in &manifest.files {
        if entry.name.contains('/') || entry.name.contains("..") {
            return Err(BundleError::Invalid(format!(
                "bad file name {:?}",
                entry.name
            )));
        }
        let path = dir.join(&entry.name);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if sha256_hex(&bytes) != entry.sha256 {
            return Err(BundleError::Invalid(format!(
                "{} does not match its digest in the manifest",
                entry.name
            )));
        }
    }
    Ok(manifest)
}
