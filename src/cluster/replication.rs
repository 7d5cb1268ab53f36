//! Key material across members: generating a CMK material version inside one HSM, copying it
//! to the others by wrapping it under the domain key inside the source HSM and unwrapping it
//! inside each target, proving every copy equal, destroying it everywhere, and bringing a new
//! or returning member up to date. Also the `cluster init` ceremony that these rest on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use zeroize::Zeroizing;

use super::internal::INTERNAL_PREFIX;
use super::{Cluster, ClusterError, preflight};
use crate::config::{ClusterConfig, Replication};
use crate::hsm::material::ec_point_octets;
use crate::hsm::{
    Disposition, Failure, GcmSeal, HsmError, KeyObject, MaterialSpec, Member, Portability,
    PublicKey, ceremony, gcm,
};
use crate::keys::spec::{EncryptionAlgorithm, KeyUsage, SigningAlgorithm};

/// One version of a CMK's key material. Its HSM objects' `CKA_ID` is `<key id>/<version>`,
/// or, for material claimed from the cluster's material pool, the pool object's own `CKA_ID`
/// (the key record names it: see `keystore::material_pool`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MaterialId {
    /// The key (for internal keys, their fixed name).
    pub key_id: String,
    /// The material version: 1 for the first, one more per rotation (0 for probes).
    pub version: u32,
    /// The `CKA_ID` of the pool object holding this version, when it came from the pool.
    pub object: Option<String>,
}

impl MaterialId {
    /// A material version of a key, held under its own `CKA_ID`.
    pub fn new(key_id: impl Into<String>, version: u32) -> MaterialId {
        MaterialId {
            key_id: key_id.into(),
            version,
            object: None,
        }
    }

    /// A material version of a key held by the pool object `object`.
    pub fn pooled(
        key_id: impl Into<String>,
        version: u32,
        object: impl Into<String>,
    ) -> MaterialId {
        MaterialId {
            key_id: key_id.into(),
            version,
            object: Some(object.into()),
        }
    }

    /// A pool object not (yet) claimed by any key.
    pub fn pool_object(object: impl Into<String>) -> MaterialId {
        let object = object.into();
        MaterialId {
            key_id: object.clone(),
            version: 0,
            object: Some(object),
        }
    }

    /// The `CKA_ID` of this material version in every HSM.
    pub fn cka_id(&self) -> Vec<u8> {
        match &self.object {
            Some(object) => object.clone().into_bytes(),
            // As `Display` writes it, without the formatting machinery: this is on every call.
            None => {
                let mut digits = itoa::Buffer::new();
                let version = digits.format(self.version);
                let mut id = Vec::with_capacity(self.key_id.len() + 1 + version.len());
                id.extend_from_slice(self.key_id.as_bytes());
                id.push(b'/');
                id.extend_from_slice(version.as_bytes());
                id
            }
        }
    }

    /// Parses a `CKA_ID` written by [`MaterialId::cka_id`] for a key's own material (pool
    /// objects are named by the key records instead).
    pub fn from_cka_id(id: &[u8]) -> Option<MaterialId> {
        let text = std::str::from_utf8(id).ok()?;
        let (key_id, version) = text.rsplit_once('/')?;
        Some(MaterialId::new(key_id, version.parse().ok()?))
    }
}

impl fmt::Display for MaterialId {
    /// `<key id>/<version>`, or an unclaimed pool object's `CKA_ID`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(object) if *object == self.key_id => f.write_str(object),
            _ => write!(f, "{}/{}", self.key_id, self.version),
        }
    }
}

/// What destroying a material version did on each member.
#[derive(Debug, Clone, Default)]
pub struct DestroyReport {
    /// Members on which the material is verified gone.
    pub destroyed: Vec<String>,
    /// Members that could not be reached; the destruction must be finished there later.
    pub pending: Vec<HsmError>,
}

impl DestroyReport {
    /// Whether the material is verified gone from every member.
    pub fn complete(&self) -> bool {
        self.pending.is_empty()
    }
}

/// What bringing one member up to date did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CatchUp {
    /// The member brought up to date.
    pub member: String,
    /// Material versions copied onto it (`<key id>/<version>`).
    pub copied: Vec<String>,
    /// Material versions it still lacks, with the reason.
    pub uncopied: Vec<(String, String)>,
}

const PROBE_PLAINTEXT: &[u8] = b"hsm-kms replication probe";

/// Prefix of the throw-away keys that prove the domain keys equal (never copied).
pub(super) const PROBE_PREFIX: &str = "hsm-kms-probe-";

/// Prefix of the `CKA_ID` of every material pool object, claimed or not.
pub const POOL_PREFIX: &str = "hsm-kms-pool-";

/// Whether a `CKA_ID` names an internal key (which no key record lists). Import wrapping
/// keys are not: each lives on the one member that made it and never leaves it. Nor are pool
/// objects: the pool's records and the key records name them, and a copy of one that was
/// destroyed (claimed by a key since deleted) must never be brought back from a member that
/// was away.
fn is_internal(id: &[u8]) -> bool {
    id.starts_with(INTERNAL_PREFIX.as_bytes())
        && !id.starts_with(PROBE_PREFIX.as_bytes())
        && !id.starts_with(POOL_PREFIX.as_bytes())
        && !id.starts_with(crate::hsm::import::WRAPPING_KEY_PREFIX.as_bytes())
}

/// For each `CKA_ID`, the members holding it and the object as listed there.
type Holders = BTreeMap<Vec<u8>, Vec<(Arc<Member>, KeyObject)>>;

/// Indexes members' listings by `CKA_ID`.
fn holders(listings: impl Iterator<Item = (Arc<Member>, Vec<KeyObject>)>) -> Holders {
    let mut holders = Holders::new();
    for (member, objects) in listings {
        for object in objects {
            holders
                .entry(object.id.clone())
                .or_default()
                .push((member.clone(), object));
        }
    }
    holders
}

/// A `CKA_ID` as people read it.
fn display_id(id: &[u8]) -> String {
    String::from_utf8_lossy(id).into_owned()
}

impl Cluster {
    /// Generates a material version inside one healthy member and replicates it to every
    /// other healthy member, proving each copy equal. Needs the quorum (two healthy members
    /// in two zones). A target that goes away meanwhile is skipped (it is caught up when it
    /// returns) as long as the members holding the material still make a quorum. On any
    /// other failure, every copy written is destroyed again; copies that cannot be destroyed
    /// are named in the error for repair.
    pub fn create_key(&self, material: &MaterialId, label: &str) -> Result<(), ClusterError> {
        self.create_material(material, label, MaterialSpec::AES)
    }

    /// [`Cluster::create_key`] for material of any kind: a secret or a key pair, whose
    /// private half travels wrapped like a secret and whose public half is copied by value.
    pub fn create_material(
        &self,
        material: &MaterialId,
        label: &str,
        spec: MaterialSpec,
    ) -> Result<(), ClusterError> {
        self.check_quorum_for_writes()?;
        let healthy = self.healthy();
        let Some((source, targets)) = healthy.split_first() else {
            return Err(ClusterError::CannotWriteKeys {
                cluster: self.name.clone(),
                problems: vec!["no healthy member".into()],
            });
        };
        let id = material.cka_id();
        let _writing = self.writers.claim(&id);
        if self.replication == Replication::Vendor {
            return source
                .generate_key(&id, label, spec, Portability::NonExtractable)
                .map_err(ClusterError::Hsm);
        }
        source
            .generate_key(&id, label, spec, Portability::WrapWithTrusted)
            .map_err(|cause| self.replication_failed(material, cause, &[]))?;
        self.replicate_new(material, label, spec, source, targets)
    }

    /// Copies a material version that `source` just made (generated or imported) to every
    /// `target`, proving each copy equal, under the claim of its creator. A target that goes
    /// away meanwhile is skipped as long as the members holding the material still make a
    /// quorum; on any other failure every copy, the source's included, is destroyed again.
    pub(super) fn replicate_new(
        &self,
        material: &MaterialId,
        label: &str,
        spec: MaterialSpec,
        source: &Arc<Member>,
        targets: &[Arc<Member>],
    ) -> Result<(), ClusterError> {
        let id = material.cka_id();
        let mut written = vec![source.clone()];
        let mut proven = vec![source.clone()];
        let copied = (|| {
            let wrapped = Zeroizing::new(source.wrap_key(&id)?);
            let public = spec.is_pair().then(|| source.public_key(&id)).transpose()?;
            for target in targets {
                let copy = target
                    .unwrap_key(&id, label, spec, &wrapped, public.as_ref())
                    .inspect(|()| {
                        written.push(target.clone());
                    });
                match copy.and_then(|()| prove_equal(source, target, &id, spec)) {
                    Ok(()) => proven.push(target.clone()),
                    Err(error) if went_away(target, &error) => {
                        tracing::warn!(member = target.name(), %material, %error,
                            "member went away while key material was replicated; it is caught up when it returns");
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(())
        })();
        copied.map_err(|cause| self.replication_failed(material, cause, &written))?;
        let problems =
            preflight::quorum_problems(proven.iter().map(|member| (member.name(), member.zone())));
        if problems.is_empty() {
            return Ok(());
        }
        for member in &written {
            if let Err(error) = member.destroy_key(&id) {
                tracing::warn!(member = member.name(), %material, %error, "copy left behind");
            }
        }
        Err(ClusterError::CannotWriteKeys {
            cluster: self.name.clone(),
            problems,
        })
    }

    /// Rolls back the copies in `written` and builds the error naming any left behind.
    pub(super) fn replication_failed(
        &self,
        material: &MaterialId,
        cause: HsmError,
        written: &[Arc<Member>],
    ) -> ClusterError {
        let id = material.cka_id();
        let left_behind = written
            .iter()
            .filter(|member| member.destroy_key(&id).is_err())
            .map(|member| member.name().to_owned())
            .collect();
        ClusterError::Replication {
            material: material.to_string(),
            cause,
            left_behind,
        }
    }

    /// Destroys a material version on every member and verifies it gone. Members that are
    /// down are reported in [`DestroyReport::pending`]; run it again when they are back.
    pub fn destroy_key(&self, material: &MaterialId) -> DestroyReport {
        let id = material.cka_id();
        let _writing = self.writers.claim(&id);
        let mut report = DestroyReport::default();
        for member in &self.members {
            match member.destroy_key(&id) {
                Ok(()) => report.destroyed.push(member.name().to_owned()),
                Err(error) => report.pending.push(error),
            }
        }
        report
    }

    /// Proves that every healthy member holds `material`, equal, as a creation proves its
    /// copies, and that those members make the quorum: used when material made earlier (a
    /// pool object) is given to a key, since members may have come and gone meanwhile. A
    /// healthy member that lacks it gets a copy from one that holds it, proven; a member that
    /// goes away meanwhile is skipped while the quorum holds. Vendor clusters replicate by
    /// themselves: there, one member holding it is proof enough.
    pub fn prove_on_every_member(
        &self,
        material: &MaterialId,
        label: &str,
        spec: MaterialSpec,
    ) -> Result<(), ClusterError> {
        self.check_quorum_for_writes()?;
        let id = material.cka_id();
        let mut holders = Vec::new();
        let mut lacking = Vec::new();
        for member in self.healthy() {
            // Pool objects' handles are cached since they were made: no token search.
            match member.holds_key(&id) {
                Ok(true) => holders.push(member),
                Ok(false) => lacking.push(member),
                Err(error) if went_away(&member, &error) => {}
                Err(error) => return Err(ClusterError::Hsm(error)),
            }
        }
        let Some(source) = holders.first().cloned() else {
            return Err(ClusterError::Hsm(HsmError::new(
                &self.name,
                Failure::Other(format!("no healthy member holds key material {material}")),
            )));
        };
        if self.replication == Replication::Vendor {
            return Ok(());
        }
        let mut proven = vec![source.clone()];
        for target in &holders[1..] {
            match prove_equal(&source, target, &id, spec) {
                Ok(()) => proven.push(target.clone()),
                Err(error) if went_away(target, &error) => {}
                Err(error) => return Err(ClusterError::Hsm(error)),
            }
        }
        let object = KeyObject {
            id: id.clone(),
            label: label.to_owned(),
            material: spec,
        };
        for target in &lacking {
            match self.copy_key(&source, target, &object) {
                Ok(_) => proven.push(target.clone()),
                Err(ClusterError::Hsm(error)) if went_away(target, &error) => {}
                Err(error) => return Err(error),
            }
        }
        let problems =
            preflight::quorum_problems(proven.iter().map(|member| (member.name(), member.zone())));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::CannotWriteKeys {
                cluster: self.name.clone(),
                problems,
            })
        }
    }

    /// Copies every key object that healthy members hold and `target` lacks onto `target`,
    /// proving each copy. `progress(done, total)` is called after each key. Returns the number
    /// of keys copied.
    pub fn sync_member(
        &self,
        target: &str,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<usize, ClusterError> {
        let target = self.known_member(target)?;
        let source = self
            .healthy()
            .into_iter()
            .find(|member| member.name() != target.name())
            .ok_or_else(|| ClusterError::CannotWriteKeys {
                cluster: self.name.clone(),
                problems: vec!["no other healthy member to copy keys from".into()],
            })?;
        let have: BTreeSet<Vec<u8>> = target
            .list_keys()
            .map_err(ClusterError::Hsm)?
            .into_iter()
            .map(|object| object.id)
            .collect();
        let missing: Vec<_> = source
            .list_keys()
            .map_err(ClusterError::Hsm)?
            .into_iter()
            .filter(|object| !have.contains(&object.id))
            .collect();
        for (done, object) in missing.iter().enumerate() {
            self.copy_key(&source, &target, object)?;
            progress(done + 1, missing.len());
        }
        Ok(missing.len())
    }

    /// Brings a member that was away up to date: copies onto `member` every material version
    /// in `versions` (the ones the metadata says exist) and every internal key that a healthy
    /// member holds and `member` lacks, each from a healthy member holding it, wrapped under
    /// the domain key and proven equal. Versions no healthy member holds are reported, not
    /// created. Safe to run at any time and concurrently with creations and destructions
    /// (one writer per material version at a time).
    pub fn catch_up(&self, member: &str, versions: &[MaterialId]) -> Result<CatchUp, ClusterError> {
        let target = self.known_member(member)?;
        if self.replication == Replication::Vendor {
            return Ok(CatchUp {
                member: member.to_owned(),
                ..CatchUp::default()
            });
        }
        let have = target.list_keys().map_err(ClusterError::Hsm)?;
        let sources = self
            .healthy()
            .into_iter()
            .filter(|source| source.name() != target.name())
            .filter_map(|source| Some((source.clone(), source.list_keys().ok()?)));
        let holders = holders(sources);
        Ok(self.copy_missing(&target, &have, &holders, versions))
    }

    /// [`Cluster::catch_up`] for every healthy member, listing each member's objects once; a
    /// member that cannot be listed is reported with its error.
    pub fn catch_up_all(&self, versions: &[MaterialId]) -> Vec<Result<CatchUp, HsmError>> {
        if self.replication == Replication::Vendor {
            return Vec::new();
        }
        let listed: Vec<_> = self
            .healthy()
            .into_iter()
            .map(|member| {
                let objects = member.list_keys();
                (member, objects)
            })
            .collect();
        let holders = holders(listed.iter().filter_map(|(member, objects)| {
            Some((member.clone(), objects.as_ref().ok()?.clone()))
        }));
        listed
            .iter()
            .map(|(target, objects)| match objects {
                Ok(have) => Ok(self.copy_missing(target, have, &holders, versions)),
                Err(error) => Err(error.clone()),
            })
            .collect()
    }

    /// Copies onto `target`, which holds `have`, the `versions` and internal keys it lacks,
    /// each from one of its `holders`.
    fn copy_missing(
        &self,
        target: &Arc<Member>,
        have: &[KeyObject],
        holders: &Holders,
        versions: &[MaterialId],
    ) -> CatchUp {
        let mut report = CatchUp {
            member: target.name().to_owned(),
            ..CatchUp::default()
        };
        let have: BTreeSet<&[u8]> = have.iter().map(|object| object.id.as_slice()).collect();
        let wanted: BTreeSet<Vec<u8>> = versions
            .iter()
            .map(MaterialId::cka_id)
            .chain(holders.keys().filter(|id| is_internal(id)).cloned())
            .filter(|id| !have.contains(id.as_slice()))
            .collect();
        for id in wanted {
            let material = display_id(&id);
            let Some(copies) = holders.get(&id) else {
                report
                    .uncopied
                    .push((material, "no healthy member holds it".into()));
                continue;
            };
            let mut last_error = None;
            for (source, object) in copies {
                match self.copy_key(source, target, object) {
                    Ok(copied) => {
                        if copied {
                            report.copied.push(material.clone());
                        }
                        last_error = None;
                        break;
                    }
                    Err(error) => last_error = Some(error.to_string()),
                }
                if !target.is_up() {
                    break;
                }
            }
            if let Some(error) = last_error {
                report.uncopied.push((material, error));
            }
        }
        report
    }

    fn known_member(&self, name: &str) -> Result<Arc<Member>, ClusterError> {
        self.member(name)
            .cloned()
            .ok_or_else(|| ClusterError::UnknownMember {
                cluster: self.name.clone(),
                member: name.to_owned(),
            })
    }

    /// Copies one key object from `source` onto `target` under the domain key and proves the
    /// copy, as the only writer of that material; returns `false` when `target` turned out to
    /// hold it already. A copy that fails its proof is destroyed again.
    fn copy_key(
        &self,
        source: &Arc<Member>,
        target: &Arc<Member>,
        object: &KeyObject,
    ) -> Result<bool, ClusterError> {
        let _writing = self.writers.claim(&object.id);
        if target.has_key(&object.id).map_err(ClusterError::Hsm)? {
            return Ok(false);
        }
        let spec = object.material;
        let wrapped = Zeroizing::new(source.wrap_key(&object.id).map_err(ClusterError::Hsm)?);
        let public = spec
            .is_pair()
            .then(|| source.public_key(&object.id))
            .transpose()
            .map_err(ClusterError::Hsm)?;
        target
            .unwrap_key(&object.id, &object.label, spec, &wrapped, public.as_ref())
            .map_err(ClusterError::Hsm)?;
        if let Err(cause) = prove_equal(source, target, &object.id, spec) {
            let left_behind = match target.destroy_key(&object.id) {
                Ok(()) => Vec::new(),
                Err(_) => vec![target.name().to_owned()],
            };
            return Err(ClusterError::Replication {
                material: display_id(&object.id),
                cause,
                left_behind,
            });
        }
        Ok(true)
    }

    /// `cluster init`: establishes the domain key on every member (idempotently), then opens
    /// the cluster and proves the members hold the same domain key by replicating a probe key.
    pub fn init(name: &str, config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        if config.replication == Replication::Vendor {
            return Cluster::open(name, config);
        }
        let members = Cluster::members_from_config(config);
        let mut holders = Vec::new();
        let mut lacking = Vec::new();
        let mut unreachable = Vec::new();
        let mut causes = Vec::new();
        for member in &members {
            match ceremony::has_domain_key(member) {
                Ok(true) => holders.push(member.clone()),
                Ok(false) => lacking.push(member.clone()),
                Err(error) => {
                    unreachable.push((member.name().to_owned(), error.failure.to_string()));
                    causes.push(error);
                }
            }
        }
        if !unreachable.is_empty() {
            return Err(preflight::PreflightFailure {
                cluster: name.to_owned(),
                members: unreachable,
                problems: vec!["every member must be reachable for the ceremony".into()],
                causes,
            }
            .into());
        }
        if !lacking.is_empty() {
            let (source, receivers) = match holders.first() {
                Some(source) => (source.clone(), lacking),
                None => {
                    let (source, rest) = lacking.split_first().ok_or_else(|| {
                        ClusterError::Hsm(HsmError::new(name, Failure::Other("no members".into())))
                    })?;
                    (source.clone(), rest.to_vec())
                }
            };
            ceremony::distribute_domain_key(&source, &receivers).map_err(ClusterError::Hsm)?;
        }
        drop(members);
        let cluster = Cluster::open(name, config)?;
        cluster.prove_domain_keys_equal()?;
        Ok(cluster)
    }

    /// Replicates a throw-away key to every member and destroys it again: succeeds only if
    /// every member unwraps what another wrapped, i.e. they share one domain key.
    pub fn prove_domain_keys_equal(&self) -> Result<(), ClusterError> {
        let probe = MaterialId::new(format!("{PROBE_PREFIX}{}", uuid::Uuid::new_v4()), 0);
        self.create_key(&probe, "hsm-kms domain key probe")?;
        let report = self.destroy_key(&probe);
        match report.pending.into_iter().next() {
            None => Ok(()),
            Some(error) => Err(ClusterError::Hsm(error)),
        }
    }
}

/// Whether `target` itself became unreachable, rather than refused: said by `error`, or,
/// since a vanished token also answers with refusals (`CKR_UNWRAPPING_KEY_HANDLE_INVALID`),
/// by a failed probe, which marks it down.
fn went_away(target: &Arc<Member>, error: &HsmError) -> bool {
    if error.member != target.name() {
        return false;
    }
    if error.disposition() == Disposition::Unavailable {
        return true;
    }
    match target.probe() {
        Ok(()) => false,
        Err(probe) => {
            target.mark_down(probe);
            true
        }
    }
}

/// Proves the copy of the material `id` on `target` equal to the one on `source`: an AES key
/// decrypts on `target` what `source` encrypted; an HMAC key computes the same MAC; a signing
/// pair's signature made on `target` verifies with the public key on `source`; a decrypting
/// pair opens on `target` what `source`'s public key encrypted.
pub(super) fn prove_equal(
    source: &Arc<Member>,
    target: &Arc<Member>,
    id: &[u8],
    spec: MaterialSpec,
) -> Result<(), HsmError> {
    let differs = |what: &str| {
        Err(HsmError::new(
            target.name(),
            Failure::Other(format!("copy {what}")),
        ))
    };
    if let Some(mac) = spec.spec.mac_algorithm() {
        let digest = mac.digest();
        let theirs = target.hmac(id, digest, PROBE_PLAINTEXT)?;
        return if source.hmac(id, digest, PROBE_PLAINTEXT)? == theirs {
            Ok(())
        } else {
            differs("computes another MAC")
        };
    }
    if spec.is_pair() {
        return match spec.usage {
            KeyUsage::SignVerify => {
                let algorithm = if spec.spec.curve().is_some() {
                    SigningAlgorithm::EcdsaSha256
                } else {
                    SigningAlgorithm::RsassaPkcs1V15Sha256
                };
                let digest = algorithm.digest().hash(PROBE_PLAINTEXT);
                let curve = spec.spec.curve();
                let signature = target.sign_digest(id, algorithm, curve, &digest)?;
                if source.verify_digest(id, algorithm, curve, &digest, &signature)? {
                    Ok(())
                } else {
                    differs("signs with another private key")
                }
            }
            KeyUsage::EncryptDecrypt => {
                // SHA-1: the OAEP hash every PKCS#11 module offers (SoftHSM2 2.6 no other).
                let algorithm = EncryptionAlgorithm::RsaesOaepSha1;
                let sealed = source.oaep_encrypt(id, algorithm, PROBE_PLAINTEXT)?;
                if target.oaep_decrypt(id, algorithm, &sealed)?.as_slice() == PROBE_PLAINTEXT {
                    Ok(())
                } else {
                    differs("decrypts with another private key")
                }
            }
            KeyUsage::KeyAgreement => {
                // Both copies agree with the pair's own public point: the same private key
                // gives the same secret.
                let (Some(curve), PublicKey::Ec { point, .. }) =
                    (spec.spec.curve(), source.public_key(id)?)
                else {
                    return differs("cannot be proven: a key agreement key that is not EC");
                };
                let point = ec_point_octets(&point);
                let theirs = target.derive_shared_secret(id, curve, point)?;
                if source.derive_shared_secret(id, curve, point)?.as_slice() == theirs.as_slice() {
                    Ok(())
                } else {
                    differs("agrees on another secret")
                }
            }
            KeyUsage::GenerateVerifyMac => differs("cannot be proven: a MAC key that is a pair"),
        };
    }
    let mut aad = b"hsm-kms replication probe:".to_vec();
    aad.extend_from_slice(id);
    let seal = GcmSeal::new(&aad, gcm::TAG_LEN * 8).map_err(|f| HsmError::new(source.name(), f))?;
    let sealed = source.encrypt(id, &seal, PROBE_PLAINTEXT)?;
    let plaintext = target.decrypt(id, &sealed.gcm(&seal), sealed.ciphertext_and_tag())?;
    if plaintext.as_slice() == PROBE_PLAINTEXT {
        Ok(())
    } else {
        Err(HsmError::new(
            target.name(),
            Failure::Other("copy decrypts the probe differently".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::MaterialId;

    #[test]
    fn a_versions_cka_id_is_its_display_form_and_parses_back() {
        for version in [1, 9, 10, 4_294_967_295] {
            let material = MaterialId::new("1234abcd-12ab-34cd-56ef-1234567890ab", version);
            assert_eq!(material.cka_id(), material.to_string().into_bytes());
            let parsed = MaterialId::from_cka_id(&material.cka_id()).expect("parses");
            assert_eq!(parsed.to_string(), material.to_string());
        }
    }
}
