//! KMS-PLT-1 (TLS on non-loopback listeners), KMS-PLT-2 (owner-only secret files) and
//! KMS-PLT-3 (imported material expiry), from the configuration, the files it names and the
//! key records. It reads file metadata only: never a file's content, so never a PIN or
//! secret. (A key record that does not decode is reported by the controls that read keys.)

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::{Value, json};

use super::catalogue;
use super::report::{ControlResult, Finding, Status, SubjectKind};
use crate::audit::event::event_time;
use crate::config::{Config, CredentialSource, SecretRef};
use crate::keys::records::KeyRecord;

/// KMS-PLT-1.
pub fn tls(config: &Config) -> ControlResult {
    let server = &config.server;
    let listen = server.listen;
    let loopback = listen.ip().is_loopback();
    let mut problems = Vec::new();
    let files = [("tls_cert", &server.tls_cert), ("tls_key", &server.tls_key)];
    let mut evidence = serde_json::Map::new();
    evidence.insert("listen".into(), json!(listen.to_string()));
    evidence.insert("loopback".into(), json!(loopback));
    for (name, path) in files {
        match path {
            None => {
                evidence.insert(name.into(), Value::Null);
                if !loopback {
                    problems.push(format!("{name} is not configured"));
                }
            }
            Some(path) => {
                match std::fs::metadata(path) {
                    Ok(meta) => {
                        evidence.insert(
                        name.into(),
                        json!({ "path": path.display().to_string(), "mode": format!("{:04o}", meta.mode() & 0o7777) }),
                    );
                    }
                    Err(error) => {
                        evidence.insert(name.into(), json!({ "path": path.display().to_string(), "error": error.to_string() }));
                        problems.push(format!("{name} {} cannot be read: {error}", path.display()));
                    }
                }
            }
        }
    }
    let tls_on = server.tls_cert.is_some() && server.tls_key.is_some();
    let finding = if !problems.is_empty() && (!loopback || tls_on) {
        Finding::new(
            SubjectKind::Listener,
            listen.to_string(),
            Status::Fail,
            format!(
                "non-loopback listener without usable TLS: {}",
                problems.join("; ")
            ),
            Value::Object(evidence),
        )
    } else {
        Finding::new(
            SubjectKind::Listener,
            listen.to_string(),
            Status::Pass,
            if tls_on {
                "TLS configured (certificate and key present)"
            } else {
                "loopback only: no TLS needed"
            },
            Value::Object(evidence),
        )
    };
    ControlResult::from_findings(&catalogue::TLS, Value::Null, vec![finding], "")
}

/// Every file the config reads a secret from: `(what, path)`.
fn secret_files(config: &Config) -> Vec<(String, &Path)> {
    let mut files = Vec::new();
    for (cluster_name, cluster) in &config.clusters {
        for member in cluster.members.iter().chain(cluster.slot.iter()) {
            for (which, pin) in [
                ("user_pin", Some(&member.user_pin)),
                ("so_pin", member.so_pin.as_ref()),
            ] {
                if let Some(SecretRef::File(path)) = pin {
                    files.push((
                        format!("cluster {cluster_name} member {} {which}", member.name),
                        path.as_path(),
                    ));
                }
            }
        }
    }
    for credential in &config.credentials {
        match &credential.source {
            CredentialSource::Inline {
                secret: SecretRef::File(path),
                ..
            } => files.push((
                format!("credential {} secret", credential.principal_arn),
                path.as_path(),
            )),
            CredentialSource::SharedFile { path, .. } => files.push((
                format!(
                    "credential {} shared_credentials_file",
                    credential.principal_arn
                ),
                path.as_path(),
            )),
            CredentialSource::Inline { .. } => {}
        }
    }
    if let Some(key) = &config.server.tls_key {
        files.push(("server tls_key".to_owned(), key.as_path()));
    }
    files
}

/// KMS-PLT-2.
pub fn secret_files_control(config: &Config) -> ControlResult {
    let findings = secret_files(config)
        .into_iter()
        .map(|(what, path)| match std::fs::metadata(path) {
            Err(error) => Finding::new(
                SubjectKind::File,
                path.display().to_string(),
                Status::Fail,
                format!("{what}: cannot be read: {error}"),
                json!({ "secret_of": what }),
            ),
            Ok(meta) => {
                let mode = meta.mode() & 0o7777;
                let evidence = json!({
                    "secret_of": what,
                    "mode": format!("{mode:04o}"),
                    "owner_uid": meta.uid(),
                    "regular_file": meta.is_file(),
                });
                if mode & 0o077 != 0 || !meta.is_file() {
                    Finding::new(
                        SubjectKind::File,
                        path.display().to_string(),
                        Status::Fail,
                        format!(
                            "{what}: mode {mode:04o} lets group or others in (chmod 600 {})",
                            path.display()
                        ),
                        evidence,
                    )
                } else {
                    Finding::new(
                        SubjectKind::File,
                        path.display().to_string(),
                        Status::Pass,
                        format!("{what}: owner-only (mode {mode:04o})"),
                        evidence,
                    )
                }
            }
        })
        .collect();
    ControlResult::from_findings(
        &catalogue::SECRET_FILES,
        Value::Null,
        findings,
        "no secret is read from a file (all from the environment)",
    )
}

/// KMS-PLT-3: per key of origin EXTERNAL with material, a WARN when the material expires
/// within `warn_days`, a PASS otherwise (or when it never expires); a key waiting for its
/// material is a WARN too (it encrypts nothing until someone imports it).
pub fn imported_material(records: &[KeyRecord], now: i64, warn_days: u64) -> ControlResult {
    let horizon = i64::try_from(warn_days)
        .unwrap_or(i64::MAX / 86_400_001)
        .saturating_mul(86_400_000);
    let findings = records
        .iter()
        .filter_map(|record| Some((record, record.import.as_ref()?)))
        .map(|(record, import)| {
            let evidence = json!({
                "key_state": record.state.as_str(),
                "expiration_model": import.expiration_model,
                "valid_to": import.valid_to.map(event_time),
            });
            let (status, reason) = match (import.valid_to, record.materials.is_empty()) {
                (_, true) => (
                    Status::Warn,
                    "no key material: the key waits for an import".to_owned(),
                ),
                (None, false) => (Status::Pass, "the material does not expire".to_owned()),
                (Some(valid_to), false) if valid_to - now <= horizon => (
                    Status::Warn,
                    format!(
                        "the material expires in {} day(s), within {warn_days}",
                        super::days(valid_to - now)
                    ),
                ),
                (Some(valid_to), false) => (
                    Status::Pass,
                    format!(
                        "the material expires in {} day(s)",
                        super::days(valid_to - now)
                    ),
                ),
            };
            Finding::new(SubjectKind::Key, &record.key_id, status, reason, evidence)
        })
        .collect();
    ControlResult::from_findings(
        &catalogue::IMPORTED_MATERIAL,
        json!({ "imported_expiry_warn_days": warn_days }),
        findings,
        "no key of origin EXTERNAL",
    )
}
