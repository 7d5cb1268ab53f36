//! The AWS KMS wire protocol as a [`KmsClient`]: JSON 1.1 requests (`TrentService.*`)
//! signed with SigV4 over `ureq` (HTTPS with rustls), so the envelope keyring works
//! against `hsm-kms serve` and AWS KMS alike.
//! Credentials come from the environment or an AWS shared-credentials file profile. It
//! never logs or returns a secret key or data key outside a secret type.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::EnvelopeError;
use super::format::EncryptionContext;
use super::keyring::{GeneratedDataKey, KmsCallError, KmsClient, data_key};

/// Largest response body read (KMS responses are a few KiB).
const MAX_RESPONSE: u64 = 1 << 20;

/// An AWS access key.
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
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
    host: String,
    region: String,
    credentials: AwsCredentials,
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
        let host = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .filter(|host| !host.is_empty() && !host.contains('/'))
            .ok_or_else(|| {
                EnvelopeError::InvalidInput(format!(
                    "the endpoint URL {endpoint:?} is not http(s)://HOST[:PORT]"
                ))
            })?
            .to_owned();
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
        Ok(HttpKms {
            endpoint,
            host,
            region: region.to_owned(),
            credentials,
            agent,
        })
    }

    /// Sends one signed KMS request and returns its JSON answer or the KMS error.
    fn call(&self, operation: &str, body: &Value) -> Result<Value, KmsCallError> {
        let body = Zeroizing::new(serde_json::to_vec(body).map_err(|error| internal(&error))?);
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let amz_date: String = now.chars().filter(|c| *c != '-' && *c != ':').collect();
        let target = format!("TrentService.{operation}");
        let authorization = self
            .authorization(&amz_date, &target, &body)
            .map_err(|error| internal(&error))?;
        let mut request = self
            .agent
            .post(format!("{}/", self.endpoint))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Target", &target)
            .header("X-Amz-Date", &amz_date)
            .header("Authorization", &authorization);
        if let Some(token) = &self.credentials.session_token {
            request = request.header("X-Amz-Security-Token", token.expose_secret());
        }
        let mut response = request.send(&body[..]).map_err(|error| KmsCallError {
            exception: "KMSInternalException".to_owned(),
            message: format!("cannot reach {}: {error}", self.endpoint),
        })?;
        let status = response.status().as_u16();
        let bytes = Zeroizing::new(
            response
                .body_mut()
                .with_config()
                .limit(MAX_RESPONSE)
                .read_to_vec()
                .map_err(|error| internal(&error))?,
        );
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == 200 {
            return Ok(value);
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
        Err(KmsCallError { exception, message })
    }

    /// The SigV4 `Authorization` header of a POST / with these headers and body.
    fn authorization(&self, amz_date: &str, target: &str, body: &[u8]) -> Result<String, String> {
        let date = amz_date.get(..8).ok_or("bad date")?;
        let mut headers = vec![
            ("content-type", "application/x-amz-json-1.1".to_owned()),
            ("host", self.host.clone()),
            ("x-amz-date", amz_date.to_owned()),
            ("x-amz-target", target.to_owned()),
        ];
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token", token.expose_secret().to_owned()));
        }
        headers.sort_by(|a, b| a.0.cmp(b.0));
        let signed_headers: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        let signed_headers = signed_headers.join(";");
        let mut canonical = String::from("POST\n/\n\n");
        for (name, value) in &headers {
            canonical.push_str(&format!("{name}:{value}\n"));
        }
        canonical.push_str(&format!(
            "\n{signed_headers}\n{}",
            hex(&Sha256::digest(body))
        ));
        let scope = format!("{date}/{}/kms/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let secret = self
            .credentials
            .secret_access_key
            .expose_secret()
            .as_bytes();
        let mut key = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
        key.extend_from_slice(b"AWS4");
        key.extend_from_slice(secret);
        let key = hmac(&key, date.as_bytes())?;
        let key = hmac(&*key, self.region.as_bytes())?;
        let key = hmac(&*key, b"kms")?;
        let key = hmac(&*key, b"aws4_request")?;
        let signature = hmac(&*key, to_sign.as_bytes())?;
        Ok(format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={}",
            self.credentials.access_key_id,
            hex(&*signature)
        ))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| "HMAC key refused")?;
    mac.update(data);
    Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
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
