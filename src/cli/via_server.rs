//! The command line's side of the admin socket: when `hsm-kms serve` runs on this data
//! directory, the commands that need the metadata store send their requests to it (see
//! [`crate::server::admin`]) instead of opening the store, and print what they would print
//! in-process. [`ServerLink::connect`] finds the server; a command never needs to know
//! which way it ran. [`RemoteStore`] lets the audit commands read the server's store.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::config::Config;
use crate::server::admin::{AdminReply, AdminRequest, socket_path};
use crate::store::{Batch, Conflict, MetadataStore, Record, StoreError, Table};

/// The code of a [`Refused`] that means the connection was lost, not that the server
/// refused.
pub const LOST: &str = "AdminSocket";

/// A refused request: an AWS exception name (or short code) and its message.
#[derive(Debug, Clone)]
pub struct Refused {
    pub code: String,
    pub message: String,
}

/// A connection to the running server's admin socket.
pub struct ServerLink {
    connection: Mutex<(BufReader<UnixStream>, UnixStream)>,
}

impl ServerLink {
    /// The server running on `config`'s data directory, if one answers on its socket.
    pub fn connect(config: &Config) -> Option<ServerLink> {
        let stream = UnixStream::connect(socket_path(&config.service.data_dir)).ok()?;
        let writer = stream.try_clone().ok()?;
        Some(ServerLink {
            connection: Mutex::new((BufReader::new(stream), writer)),
        })
    }

    /// Sends `request` and waits for its answer. A lost connection is a `Refused` with code
    /// [`LOST`].
    pub fn request(&self, request: &AdminRequest) -> Result<Value, Refused> {
        let lost = |error: std::io::Error| Refused {
            code: LOST.to_owned(),
            message: format!("the connection to the running server failed: {error}"),
        };
        let mut line = zeroize::Zeroizing::new(
            serde_json::to_vec(request).map_err(|error| lost(error.into()))?,
        );
        line.push(b'\n');
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (reader, writer) = &mut *connection;
        writer.write_all(&line).map_err(lost)?;
        writer.flush().map_err(lost)?;
        let mut answer = zeroize::Zeroizing::new(String::new());
        if reader.read_line(&mut answer).map_err(lost)? == 0 {
            return Err(lost(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let mut reply: AdminReply =
            serde_json::from_str(&answer).map_err(|error| lost(error.into()))?;
        match &mut reply {
            AdminReply::Ok(value) => Ok(std::mem::take(value)),
            AdminReply::Refused { code, message } => Err(Refused {
                code: std::mem::take(code),
                message: std::mem::take(message),
            }),
        }
    }
}

/// The metadata store for reading: the running server's, through its admin socket, or
/// else the store opened in this process.
pub fn open_store(config: &Config) -> Result<Box<dyn MetadataStore>, StoreError> {
    match ServerLink::connect(config) {
        Some(server) => Ok(Box::new(RemoteStore(server))),
        None => crate::store::open(&config.store, &config.service.data_dir),
    }
}

/// The running server's metadata store, read through its admin socket; writes are refused
/// (the commands that use it only read).
struct RemoteStore(ServerLink);

impl RemoteStore {
    fn ask(&self, request: &AdminRequest) -> Result<Value, StoreError> {
        self.0
            .request(request)
            .map_err(|refused| StoreError::Backend(refused.message.into()))
    }
}

fn record(value: &Value) -> Result<Record, StoreError> {
    let payload = value["payload"]
        .as_str()
        .and_then(|text| STANDARD.decode(text).ok())
        .ok_or_else(|| StoreError::Backend("the server sent a record without payload".into()))?;
    let revision = value["revision"]
        .as_u64()
        .ok_or_else(|| StoreError::Backend("the server sent a record without revision".into()))?;
    Ok(Record { payload, revision })
}

impl MetadataStore for RemoteStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let value = self.ask(&AdminRequest::Get {
            table: table.name().to_owned(),
            key: STANDARD.encode(key),
        })?;
        match value {
            Value::Null => Ok(None),
            value => record(&value).map(Some),
        }
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        let value = self.ask(&AdminRequest::Scan {
            table: table.name().to_owned(),
            prefix: STANDARD.encode(prefix),
            after: after.map(|after| STANDARD.encode(after)),
            limit,
        })?;
        value
            .as_array()
            .ok_or_else(|| StoreError::Backend("the server sent no record list".into()))?
            .iter()
            .map(|item| {
                let key = item["key"]
                    .as_str()
                    .and_then(|text| STANDARD.decode(text).ok())
                    .ok_or_else(|| {
                        StoreError::Backend("the server sent a record without key".into())
                    })?;
                Ok((key, record(item)?))
            })
            .collect()
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        self.ask(&AdminRequest::Count {
            table: table.name().to_owned(),
        })?
        .as_u64()
        .ok_or_else(|| StoreError::Backend("the server sent no count".into()))
    }

    fn commit(&self, _batch: Batch) -> Result<Result<(), Conflict>, StoreError> {
        Err(StoreError::Backend(
            "the running server's store is read-only through its admin socket".into(),
        ))
    }
}
