//! The admin socket: a Unix domain socket in `data_dir` through which the `hsm-kms` command
//! line reaches the key store a running server holds (sled lets one process open it). It
//! owns the socket's life (created mode 0600, removed at shutdown), the peer check (only
//! the server's own uid or root, read with `SO_PEERCRED`; a refused peer is logged and
//! audited) and the protocol: one JSON request per line, each answered by one JSON line,
//! `{"ok": ...}` or `{"refused": {"code": ..., "message": ...}}`.
//!
//! A request is one of a few primitives the CLI composes, so its commands print exactly
//! what they print in-process: an API call run as the CLI runs it (the account root,
//! [`Caller::local`], through [`protocol::run`]), reads of the metadata store (for the audit
//! commands), a maintenance pass and a reconciliation. It never writes the metadata store
//! on a client's behalf except through those key store operations, and never answers with
//! anything the same uid could not read from the store's files.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::App;
use super::protocol::{self, scrub};
use crate::caller::Caller;
use crate::error::KmsError;
use crate::keys::state::Operation;
use crate::store::{Record, Table};

/// The socket's file name in `data_dir`.
pub const SOCKET_NAME: &str = "admin.sock";
/// Longest request line read (an API call's body is at most a few hundred KiB).
const MAX_REQUEST: u64 = 4 << 20;
/// The audit event name of a connection refused by the peer check.
const ADMIN_CONNECT: &str = "AdminSocketConnect";

/// The admin socket of the server whose data directory is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// One request on the admin socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum AdminRequest {
    /// An API operation with its JSON body, run as the account root.
    Call {
        /// The operation's name (`Encrypt`).
        operation: String,
        /// Its JSON 1.1 request body.
        body: Value,
    },
    /// One record of the metadata store: `null` or `{"payload", "revision"}`.
    Get {
        /// The table's name.
        table: String,
        /// The key, base64.
        key: String,
    },
    /// Records of a table in key order: a list of `{"key", "payload", "revision"}`.
    Scan {
        /// The table's name.
        table: String,
        /// Only keys starting with this (base64).
        prefix: String,
        /// Only keys after this one (base64).
        after: Option<String>,
        /// At most this many.
        limit: usize,
    },
    /// The number of records in a table.
    Count {
        /// The table's name.
        table: String,
    },
    /// One pass of the background work; answers the maintenance report.
    Maintenance,
    /// Reconciliation of the server's cluster against the metadata: answers
    /// `{"inconsistencies": [{"json", "text"}], "pool_ready": N}`.
    Reconcile {
        /// The cluster asked for; only the server's own can be reconciled here.
        cluster: String,
    },
}

/// One answer on the admin socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminReply {
    /// The request's result.
    Ok(Value),
    /// The request failed: an AWS exception name (or a short code) and its message.
    Refused {
        /// e.g. `NotFoundException`.
        code: String,
        /// What went wrong, as the in-process command would say it.
        message: String,
    },
}

impl Drop for AdminReply {
    fn drop(&mut self) {
        // A reply may carry a plaintext or data key (Decrypt, GenerateDataKey).
        if let AdminReply::Ok(value) = self {
            scrub(value);
        }
    }
}

/// Binds the admin socket in `data_dir` (replacing a stale one left by a killed server) and
/// makes it owner-only. The caller removes it with [`remove`] at shutdown.
pub fn bind(data_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data_dir)?;
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Removes the admin socket of `data_dir`.
pub fn remove(data_dir: &Path) {
    if let Err(error) = std::fs::remove_file(socket_path(data_dir))
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, "cannot remove the admin socket");
    }
}

/// Whether a peer with user id `peer_uid` may use the admin socket of a server running as
/// `own_uid`: the same user, or root.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// Accepts connections until the task is dropped; each allowed one is served on its own
/// thread (key store calls block).
pub(super) async fn accept(app: Arc<App>, listener: tokio::net::UnixListener) {
    let own_uid = rustix::process::geteuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "admin socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let credentials = match stream.peer_cred() {
            Ok(credentials) => credentials,
            Err(error) => {
                tracing::warn!(%error, "admin socket: cannot read the peer's credentials");
                continue;
            }
        };
        if !peer_allowed(credentials.uid(), own_uid) {
            refuse(&app, credentials.uid(), credentials.pid());
            continue;
        }
        let stream = match stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "admin socket: cannot take the connection");
                continue;
            }
        };
        let app = app.clone();
        std::thread::spawn(move || serve_connection(&app, stream));
    }
}

/// Logs and audits a peer refused by the uid check; its connection is closed unanswered.
fn refuse(app: &App, uid: u32, pid: Option<i32>) {
    let pid = pid.map_or_else(|| "?".to_owned(), |pid| pid.to_string());
    tracing::warn!(uid, pid, "admin socket: refused a peer of another user");
    let caller = Caller {
        principal: super::ANONYMOUS.to_owned(),
        user_agent: Some(format!("admin socket peer uid {uid} pid {pid}")),
        ..Caller::local(app.store.scope())
    };
    let refused = KmsError::AccessDenied(format!(
        "the admin socket accepts only its server's user or root, not uid {uid}"
    ));
    app.store.record_refused(&caller, ADMIN_CONNECT, &refused);
}

/// Answers the requests of one connection until the client closes it.
fn serve_connection(app: &App, stream: std::os::unix::net::UnixStream) {
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(error) => {
            tracing::warn!(%error, "admin socket: cannot use the connection");
            return;
        }
    };
    let mut reader = BufReader::new(std::io::Read::take(stream, MAX_REQUEST));
    let mut line = zeroize::Zeroizing::new(String::new());
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Each request may use the whole allowance again.
        reader.get_mut().set_limit(MAX_REQUEST);
        let reply = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(request) => answer(app, request),
            Err(error) => AdminReply::Refused {
                code: "ValidationException".to_owned(),
                message: format!("not an admin request: {error}"),
            },
        };
        let mut text = match serde_json::to_vec(&reply) {
            Ok(text) => zeroize::Zeroizing::new(text),
            Err(error) => {
                tracing::error!(%error, "admin socket: reply does not encode");
                return;
            }
        };
        text.push(b'\n');
        if writer
            .write_all(&text)
            .and_then(|()| writer.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Runs one request.
fn answer(app: &App, request: AdminRequest) -> AdminReply {
    let outcome = match request {
        AdminRequest::Call {
            operation,
            mut body,
        } => {
            let outcome = call(app, &operation, &body);
            scrub(&mut body);
            outcome
        }
        AdminRequest::Get { table, key } => get(app, &table, &key),
        AdminRequest::Scan {
            table,
            prefix,
            after,
            limit,
        } => scan(app, &table, &prefix, after.as_deref(), limit),
        AdminRequest::Count { table } => count(app, &table),
        AdminRequest::Maintenance => match app.store.run_maintenance() {
            Ok(report) => serde_json::to_value(&report).map_err(|error| Refusal {
                code: "KMSInternalException".to_owned(),
                message: error.to_string(),
            }),
            Err(error) => Err(Refusal {
                code: error.code().to_owned(),
                message: error.to_string(),
            }),
        },
        AdminRequest::Reconcile { cluster } => reconcile(app, &cluster),
    };
    match outcome {
        Ok(value) => AdminReply::Ok(value),
        Err(Refusal { code, message }) => AdminReply::Refused { code, message },
    }
}

/// A failed request's code and message.
struct Refusal {
    code: String,
    message: String,
}

/// A store read's failure, as the CLI's direct read would report it.
impl From<crate::store::StoreError> for Refusal {
    fn from(error: crate::store::StoreError) -> Self {
        Refusal {
            code: "StoreError".to_owned(),
            message: error.to_string(),
        }
    }
}

fn get(app: &App, table: &str, key: &str) -> Result<Value, Refusal> {
    let record = app
        .store
        .metadata()
        .get(table_named(table)?, &decode(key)?)?;
    Ok(record.map_or(Value::Null, |record| record_json(None, &record)))
}

fn count(app: &App, table: &str) -> Result<Value, Refusal> {
    Ok(json!(app.store.metadata().count(table_named(table)?)?))
}

fn scan(
    app: &App,
    table: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Value, Refusal> {
    let after = after.map(decode).transpose()?;
    let records = app.store.metadata().scan(
        table_named(table)?,
        &decode(prefix)?,
        after.as_deref(),
        limit,
    )?;
    Ok(Value::Array(
        records
            .iter()
            .map(|(key, record)| record_json(Some(key), record))
            .collect(),
    ))
}

fn bad_request(message: String) -> Refusal {
    Refusal {
        code: "ValidationException".to_owned(),
        message,
    }
}

fn table_named(name: &str) -> Result<Table, Refusal> {
    Table::from_name(name).ok_or_else(|| bad_request(format!("no table {name:?}")))
}

fn decode(text: &str) -> Result<Vec<u8>, Refusal> {
    STANDARD
        .decode(text)
        .map_err(|_| bad_request("a store key is not base64".to_owned()))
}

fn record_json(key: Option<&[u8]>, record: &Record) -> Value {
    let mut value = json!({
        "payload": STANDARD.encode(&record.payload),
        "revision": record.revision,
    });
    if let Some(key) = key {
        value["key"] = json!(STANDARD.encode(key));
    }
    value
}

/// An API call as the CLI makes it in-process: the account root, through the protocol.
fn call(app: &App, operation: &str, body: &Value) -> Result<Value, Refusal> {
    let refusal = |error: KmsError| Refusal {
        code: error.code().to_owned(),
        message: error.message().to_owned(),
    };
    let operation = Operation::from_name(operation)
        .ok_or_else(|| refusal(KmsError::UnknownOperation(String::new())))?;
    let body = zeroize::Zeroizing::new(serde_json::to_vec(body).map_err(|error| Refusal {
        code: "ValidationException".to_owned(),
        message: error.to_string(),
    })?);
    let caller = Caller::local(app.store.scope());
    let response = protocol::run(&app.store, &caller, operation, &body).map_err(refusal)?;
    serde_json::from_slice(&response).map_err(|error| Refusal {
        code: "KMSInternalException".to_owned(),
        message: error.to_string(),
    })
}

/// `cluster status`'s reconciliation, for the server's own cluster.
fn reconcile(app: &App, cluster: &str) -> Result<Value, Refusal> {
    let keystore = &app.store;
    if keystore.cluster().name() != cluster {
        return Err(bad_request(format!(
            "the running server reconciles only its own cluster {}",
            keystore.cluster().name()
        )));
    }
    let found = keystore.reconcile().map_err(|error| Refusal {
        code: error.code().to_owned(),
        message: format!("reconciliation failed: {error}"),
    })?;
    let ready = keystore
        .pooled_objects(keystore.cluster())
        .map_err(|error| Refusal {
            code: error.code().to_owned(),
            message: format!("reading the material pool failed: {error}"),
        })?
        .len();
    let inconsistencies: Vec<Value> = found
        .iter()
        .map(|found| json!({ "json": found, "text": found.to_string() }))
        .collect();
    Ok(json!({ "inconsistencies": inconsistencies, "pool_ready": ready }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_user_or_root_is_allowed() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(65534, 0));
    }

    #[test]
    fn requests_and_replies_are_one_json_line_each() {
        let request = AdminRequest::Call {
            operation: "Encrypt".to_owned(),
            body: json!({ "KeyId": "alias/a" }),
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            text,
            r#"{"request":"call","operation":"Encrypt","body":{"KeyId":"alias/a"}}"#
        );
        let reply: AdminReply =
            serde_json::from_str(r#"{"refused":{"code":"NotFoundException","message":"m"}}"#)
                .unwrap();
        assert!(
            matches!(reply, AdminReply::Refused { ref code, .. } if code == "NotFoundException")
        );
    }
}
