//! The AWS KMS wire protocol as a light [`KmsClient`] (cargo feature `envelope-http`, on by
//! default): JSON 1.1 requests (`TrentService.*`) signed with SigV4 by the `aws-sigv4` crate
//! and sent over `ureq` (HTTPS with rustls), so the envelope keyring works against `hsm-kms
//! serve` and AWS KMS alike without the AWS SDK (the `hsm-kms` CLI uses it; see `aws_sdk` for
//! the SDK one).
//! Credentials come from the environment or an AWS shared-credentials file profile. It
//! never logs or returns a secret key or data key outside a secret type.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::EnvelopeError;
use super::format::EncryptionContext;
use super::keyring::{GeneratedDataKey, KmsCallError, KmsClient, data_key};

/// Largest response body read (KMS responses are a few KiB).
const MAX_RESPONSE: u64 = 1 << 20;

/// An AWS access key.
pub struct AwsCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key, which signs requests.
    pub secret_access_key: SecretString,
    /// The session token of temporary credentials, sent as `X-Amz-Security-Token`.
    pub session_token: Option<SecretString>,
}

impl AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` when `profile` is `None` and they are
    /// set; otherwise the profile (`profile`, `AWS_PROFILE` or `default`) of the shared
    /// credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`).
    pub fn load(profile: Option<&str>) -> Result<AwsCredentials, EnvelopeError> {
        if profile.is_none()
            && let (Ok(access_key_id), Ok(secret)) = (
                std::env::var("AWS_ACCESS_KEY_ID"),
                std::env::var("AWS_SECRET_ACCESS_KEY"),
            )
        {
            return Ok(AwsCredentials {
                access_key_id,
                secret_access_key: SecretString::from(secret),
                session_token: std::env::var("AWS_SESSION_TOKEN")
                    .ok()
                    .map(SecretString::from),
            });
        }
        let profile = profile
            .map(str::to_owned)
            .or_else(|| std::env::var("AWS_PROFILE").ok())
            .unwrap_or_else(|| "default".to_owned());
        let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".aws/credentials"))
            })
            .ok_or_else(|| {
                EnvelopeError::InvalidInput("no AWS shared credentials file".to_owned())
            })?;
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|error| {
            EnvelopeError::InvalidInput(format!("cannot read {}: {error}", path.display()))
        })?);
        let values = profile_values(&text, &profile);
        match (
            values.get("aws_access_key_id"),
            values.get("aws_secret_access_key"),
        ) {
            (Some(access_key_id), Some(secret)) => Ok(AwsCredentials {
                access_key_id: access_key_id.clone(),
                secret_access_key: SecretString::from(secret.clone()),
                session_token: values
                    .get("aws_session_token")
                    .map(|token| SecretString::from(token.clone())),
            }),
            _ => Err(EnvelopeError::InvalidInput(format!(
                "the profile {profile:?} of {} has no access key",
                path.display()
            ))),
        }
    }
}

/// The `key = value` pairs of one `[profile]` section of an INI file.
fn profile_values(text: &str, profile: &str) -> HashMap<String, String> {
    let mut values = HashMap::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            inside = section.trim() == profile;
        } else if inside && let Some((key, value)) = line.split_once('=') {
            values.insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    values
}

/// A KMS endpoint reached over HTTP(S) with SigV4.
pub struct HttpKms {
    endpoint: String,
    region: String,
    /// The signing identity; `aws-credential-types` zeroizes its secrets on drop.
    credentials: aws_credential_types::Credentials,
    agent: ureq::Agent,
}

impl HttpKms {
    /// A client of the KMS endpoint `endpoint` (`http://` on loopback, or `https://`) in
    /// `region`. HTTPS trusts Mozilla's root certificates, or only the PEM certificates of
    /// `ca_bundle` when given.
    pub fn new(
        endpoint: &str,
        region: &str,
        credentials: AwsCredentials,
        ca_bundle: Option<&[u8]>,
    ) -> Result<HttpKms, EnvelopeError> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .filter(|host| !host.is_empty() && !host.contains('/'))
            .ok_or_else(|| {
                EnvelopeError::InvalidInput(format!(
                    "the endpoint URL {endpoint:?} is not http(s)://HOST[:PORT]"
                ))
            })?;
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(pem) = ca_bundle {
            let mut certificates = Vec::new();
            for item in ureq::tls::parse_pem(pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(certificate)) => {
                        certificates.push(certificate)
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(EnvelopeError::InvalidInput(
                            "the CA bundle is not PEM".to_owned(),
                        ));
                    }
                }
            }
            if certificates.is_empty() {
                return Err(EnvelopeError::InvalidInput(
                    "the CA bundle holds no certificate".to_owned(),
                ));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::from(certificates));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into();
        let credentials = aws_credential_types::Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key.expose_secret(),
            credentials
                .session_token
                .map(|token| token.expose_secret().to_owned()),
            None,
            "hsm-kms envelope",
        );
        Ok(HttpKms {
            endpoint,
            region: region.to_owned(),
            credentials,
            agent,
        })
    }

    /// Sends one signed KMS request and returns its JSON answer or the KMS error; a request
    /// that got no answer is a `KMSInternalException` here.
    fn call(&self, operation: &str, body: &Value) -> Result<Value, KmsCallError> {
        self.request(operation, body)
            .unwrap_or_else(|unanswered| Err(internal(&unanswered)))
    }

    /// Sends one signed KMS request (`TrentService.<operation>` with the JSON `body`): the
    /// endpoint's answer inside, its JSON body or the KMS error it returned; outside, why
    /// no answer came (unreachable endpoint, request that cannot be signed).
    pub fn request(
        &self,
        operation: &str,
        body: &Value,
    ) -> Result<Result<Value, KmsCallError>, String> {
        let body = Zeroizing::new(serde_json::to_vec(body).map_err(|error| error.to_string())?);
        let url = format!("{}/", self.endpoint);
        let target = format!("TrentService.{operation}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let mut request = self.agent.post(&url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        for (name, value) in self
            .signature_headers(&url, &headers, &body)
            .map_err(|error| format!("cannot sign the request: {error}"))?
        {
            request = request.header(name, value);
        }
        let mut response = request
            .send(&body[..])
            .map_err(|error| format!("cannot reach {}: {error}", self.endpoint))?;
        let status = response.status().as_u16();
        let bytes = Zeroizing::new(
            response
                .body_mut()
                .with_config()
                .limit(MAX_RESPONSE)
                .read_to_vec()
                .map_err(|error| format!("cannot read the answer of {}: {error}", self.endpoint))?,
        );
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == 200 {
            return Ok(Ok(value));
        }
        let exception = value
            .get("__type")
            .and_then(Value::as_str)
            .map(|name| name.rsplit('#').next().unwrap_or(name).to_owned())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = value
            .get("message")
            .or_else(|| value.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Ok(Err(KmsCallError { exception, message }))
    }

    /// The headers SigV4 adds to a POST of `body` to `url` with `headers` (all signed):
    /// `Authorization`, `X-Amz-Date` and, with a session token, `X-Amz-Security-Token`.
    fn signature_headers(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, Box<dyn std::error::Error + Send + Sync>> {
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kms")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }
}

fn internal(error: &dyn std::fmt::Display) -> KmsCallError {
    KmsCallError {
        exception: "KMSInternalException".to_owned(),
        message: error.to_string(),
    }
}

/// The base64 blob field `name` of a response.
fn blob(value: &Value, name: &str) -> Result<Zeroizing<Vec<u8>>, KmsCallError> {
    value
        .get(name)
        .and_then(Value::as_str)
        .and_then(|text| STANDARD.decode(text).ok())
        .map(Zeroizing::new)
        .ok_or_else(|| internal(&format!("the response has no valid {name}")))
}

fn string(value: &Value, name: &str) -> Result<String, KmsCallError> {
    value
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| internal(&format!("the response has no {name}")))
}

fn with_context(mut body: Value, context: &EncryptionContext) -> Value {
    if !context.is_empty() {
        body["EncryptionContext"] = json!(context);
    }
    body
}

impl KmsClient for HttpKms {
    fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsCallError> {
        let body = with_context(json!({ "KeyId": key_id, "KeySpec": "AES_256" }), context);
        let mut answer = self.call("GenerateDataKey", &body)?;
        let plaintext = blob(&answer, "Plaintext")?;
        if let Some(field) = answer.get_mut("Plaintext") {
            zeroize_value(field);
        }
        Ok(GeneratedDataKey {
            plaintext: data_key(&plaintext).map_err(|error| internal(&error))?,
            ciphertext_blob: blob(&answer, "CiphertextBlob")?.to_vec(),
            key_arn: string(&answer, "KeyId")?,
        })
    }

    fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, String), KmsCallError> {
        let mut encoded = Value::String(STANDARD.encode(plaintext));
        let body = with_context(
            json!({ "KeyId": key_id, "Plaintext": encoded.take() }),
            context,
        );
        let mut body = body;
        let answer = self.call("Encrypt", &body);
        if let Some(field) = body.get_mut("Plaintext") {
            zeroize_value(field);
        }
        let answer = answer?;
        Ok((
            blob(&answer, "CiphertextBlob")?.to_vec(),
            string(&answer, "KeyId")?,
        ))
    }

    fn decrypt(
        &self,
        key_id: &str,
        ciphertext_blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<(SecretSlice<u8>, String), KmsCallError> {
        let body = with_context(
            json!({ "KeyId": key_id, "CiphertextBlob": STANDARD.encode(ciphertext_blob) }),
            context,
        );
        let mut answer = self.call("Decrypt", &body)?;
        let plaintext = blob(&answer, "Plaintext")?;
        if let Some(field) = answer.get_mut("Plaintext") {
            zeroize_value(field);
        }
        Ok((
            SecretSlice::from(plaintext.to_vec()),
            string(&answer, "KeyId")?,
        ))
    }
}

/// Overwrites a JSON string holding a secret before it is dropped.
fn zeroize_value(value: &mut Value) {
    if let Value::String(text) = value {
        zeroize::Zeroize::zeroize(text);
    }
}
