//! Where a key command's API calls run. Every key command becomes AWS KMS JSON 1.1 calls
//! (operation name plus JSON body) made through an [`Endpoint`], so it prints the same
//! whichever one ran them:
//!
//! - with `--endpoint-url`, a KMS endpoint over HTTP(S), signed with SigV4 as the caller
//!   the AWS credentials name ([`HttpKms`]);
//! - when `hsm-kms serve` runs on the config's data directory, that server, through its
//!   admin socket ([`ServerLink`]);
//! - otherwise the key store opened in this process ([`InProcess`]).
//!
//! The last two act as the account root of `[service]` ([`Caller::local`]) and run the
//! server's own protocol code ([`protocol::run`]). Request bodies may hold a plaintext, and
//! answers a data key: both are zeroized once used.

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use super::via_server::ServerLink;
use crate::caller::Caller;
use crate::config::Config;
use crate::envelope::HttpKms;
use crate::envelope::remote::AwsCredentials;
use crate::keys::state::Operation;
use crate::keystore::KeyStore;
use crate::server::admin::AdminRequest;
use crate::server::protocol::{self, scrub};

/// The AWS CLI's options that send key commands to a KMS endpoint.
#[derive(Debug, Args)]
pub struct Remote {
    /// Send key commands to this AWS KMS endpoint (e.g. a running `hsm-kms serve`),
    /// signed with SigV4, instead of running them on this machine's key store.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Credentials profile for --endpoint-url (default: AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY, then AWS_PROFILE, then `default`, in
    /// AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials).
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Region for --endpoint-url (default: AWS_REGION, AWS_DEFAULT_REGION, then the
    /// config's [service] region).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// PEM certificates to trust for an https:// --endpoint-url instead of Mozilla's roots
    /// (default: AWS_CA_BUNDLE).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
}

/// Why a call failed.
pub enum CallError {
    /// The endpoint answered with a KMS exception: its name and message.
    Service { code: String, message: String },
    /// No answer came (the endpoint cannot be reached, the server went away).
    Unanswered(String),
}

/// A place that runs KMS API calls.
pub trait Endpoint {
    /// Runs `operation` with the JSON `body`; its JSON answer, or why it failed.
    fn call(&self, operation: Operation, body: &Value) -> Result<Value, CallError>;
}

/// Opens the endpoint the options and the environment name: `--endpoint-url`, else the
/// running server, else the key store in this process. `config` may be `None` only with
/// `--endpoint-url`.
pub fn open(config: Option<&Config>, remote: &Remote) -> Result<Box<dyn Endpoint>, String> {
    if let Some(url) = &remote.endpoint_url {
        return Ok(Box::new(http(config, remote, url)?));
    }
    let config = config.ok_or("no config (give --config or set HSM_KMS_CONFIG)")?;
    if let Some(server) = ServerLink::connect(config) {
        return Ok(Box::new(server));
    }
    let keystore = super::open_keystore(config)?;
    Ok(Box::new(InProcess {
        caller: Caller::local(keystore.scope()),
        keystore,
    }))
}

/// The `--endpoint-url` client with its region and credentials.
fn http(config: Option<&Config>, remote: &Remote, url: &str) -> Result<HttpKms, String> {
    let region = remote
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .or_else(|| config.map(|config| config.service.region.clone()))
        .ok_or("--endpoint-url needs a region: --region or AWS_REGION")?;
    let credentials =
        AwsCredentials::load(remote.profile.as_deref()).map_err(|error| error.to_string())?;
    let ca_bundle = match remote
        .ca_bundle
        .clone()
        .or_else(|| std::env::var_os("AWS_CA_BUNDLE").map(PathBuf::from))
    {
        Some(path) => Some(
            std::fs::read(&path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
        ),
        None => None,
    };
    HttpKms::new(url, &region, credentials, ca_bundle.as_deref()).map_err(|e| e.to_string())
}

/// The key store opened in this process; its audit trail is flushed when it is dropped,
/// so a call's event is on disk before the command reports anything.
struct InProcess {
    keystore: KeyStore,
    caller: Caller,
}

impl Endpoint for InProcess {
    fn call(&self, operation: Operation, body: &Value) -> Result<Value, CallError> {
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(body).map_err(|error| CallError::Unanswered(error.to_string()))?,
        );
        let answer =
            protocol::run(&self.keystore, &self.caller, operation, &body).map_err(|error| {
                CallError::Service {
                    code: error.code().to_owned(),
                    message: error.message().to_owned(),
                }
            })?;
        serde_json::from_slice(&answer).map_err(|error| CallError::Unanswered(error.to_string()))
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.keystore.shutdown();
    }
}

impl Endpoint for ServerLink {
    fn call(&self, operation: Operation, body: &Value) -> Result<Value, CallError> {
        let mut request = AdminRequest::Call {
            operation: operation.as_str().to_owned(),
            body: body.clone(),
        };
        let answer = self.request(&request);
        if let AdminRequest::Call { body, .. } = &mut request {
            scrub(body);
        }
        answer.map_err(|refused| match refused.code.as_str() {
            super::via_server::LOST => CallError::Unanswered(refused.message),
            _ => CallError::Service {
                code: refused.code,
                message: refused.message,
            },
        })
    }
}

impl Endpoint for HttpKms {
    fn call(&self, operation: Operation, body: &Value) -> Result<Value, CallError> {
        match self.request(operation.as_str(), body) {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(CallError::Service {
                code: error.exception,
                message: error.message,
            }),
            Err(unanswered) => Err(CallError::Unanswered(unanswered)),
        }
    }
}
