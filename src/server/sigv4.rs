//! AWS Signature Version 4 verification for the KMS endpoint: given one HTTP request as
//! received (method, raw path and query, headers, body) and the current time, decide who
//! sent it or why it is refused. It owns the access keys the endpoint accepts
//! ([`Credentials`]); it never logs, returns or formats a secret, and it knows nothing of
//! sockets, HTTP libraries or KMS operations.
//!
//! # What is checked, in AWS's order
//!
//! 1. An `Authorization` header starting `AWS4-`, else `MissingAuthenticationTokenException`.
//! 2. Its `Credential`, `SignedHeaders` and `Signature` parameters and an `X-Amz-Date` (or
//!    `Date`) header in ISO-8601 basic format, else `IncompleteSignatureException`.
//! 3. The request time within [`MAX_SKEW`] of now, else `InvalidSignatureException`
//!    ("Signature expired" / "Signature not yet current").
//! 4. `host` among the signed headers; the algorithm `AWS4-HMAC-SHA256`; a credential
//!    scope of five parts for a region this endpoint answers for, service [`SERVICE`],
//!    terminator `aws4_request` and the request's date.
//! 5. A known access key id, else `UnrecognizedClientException`.
//! 6. The signature, recomputed over the canonical request rebuilt from exactly the
//!    headers `SignedHeaders` names and the SHA-256 of the body as received, compared in
//!    constant time; a `x-amz-content-sha256` header must equal that hash. Derived
//!    signing keys are kept per access key, day and region.
//! 7. No `X-Amz-Security-Token`: this endpoint issues no temporary credentials.
//!
//! The codes and messages are those AWS's JSON-protocol services answer with (DynamoDB
//! emulators record the same texts), all with HTTP 400. A request without
//! any `Authorization` gets `MissingAuthenticationTokenException` "Request is missing
//! Authentication Token", as those services answer; query-string (presigned) signatures
//! are not accepted. Every failure is a [`KmsError`], so the endpoint keeps one error
//! enum and one wire mapping.
//!
//! # Why not the `aws-sigv4` crate
//!
//! The signing key derivation and the HMAC use the RustCrypto `hmac` and `sha2` crates;
//! the canonical request is built here. `aws-sigv4` signs requests and cannot rebuild the
//! canonical request of an arbitrary `SignedHeaders` list: it chooses the signed headers
//! itself (it always adds `x-amz-date`, drops `user-agent` and others it deems unstable),
//! form-decodes `+` in query strings as a space, and panics on a URI without authority.
//! Its exposed key derivation keeps `"AWS4" + secret` and the derived keys in memory that
//! is not cleared. The tests sign requests with `aws-sigv4` (and with botocore, in a
//! fixture) and check that they verify, next to the known answers of AWS's SigV4 suite.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::caller::PrincipalProfile;
use crate::config::{Config, ConfigError, CredentialConfig};
use crate::error::KmsError;
use crate::ids::Scope;

/// The service name a credential scope must carry.
pub const SERVICE: &str = "kms";

/// How far the request time may be from the server's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Derived signing keys kept at most; the cache starts over when full.
const MAX_SIGNING_KEYS: usize = 1024;
const TERMINATOR: &str = "aws4_request";
const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
    signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
    service documentation for details.";

type HmacSha256 = Hmac<Sha256>;

/// An access key the endpoint accepts, and who it acts as.
#[derive(Debug)]
pub struct Credential {
    /// The access key id requests name in their credential scope.
    pub access_key_id: String,
    /// The secret access key the signature is computed with.
    pub secret: SecretString,
    /// The 12-digit account the caller belongs to.
    pub account_id: String,
    /// The caller's IAM principal, as the audit trail records it.
    pub principal_arn: String,
}

/// The access keys the endpoint accepts, by access key id.
#[derive(Debug, Default)]
pub struct Credentials {
    by_id: HashMap<String, Credential>,
    /// What each access key's `[[credentials]]` entry declares (policies, tags, via service).
    profiles: HashMap<String, Arc<PrincipalProfile>>,
}

impl Credentials {
    /// A set of credentials; an access key id listed twice is a configuration error.
    pub fn new(credentials: impl IntoIterator<Item = Credential>) -> Result<Self, ConfigError> {
        let mut by_id = HashMap::new();
        for credential in credentials {
            let id = credential.access_key_id.clone();
            if by_id.insert(id.clone(), credential).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "[[credentials]]: access key {id:?} is listed twice"
                )));
            }
        }
        Ok(Credentials {
            by_id,
            profiles: HashMap::new(),
        })
    }

    /// Resolves the `[[credentials]]` of the config (reading secrets and shared-credentials
    /// files).
    pub fn from_config(configs: &[CredentialConfig]) -> Result<Self, ConfigError> {
        let mut credentials = Vec::with_capacity(configs.len());
        let mut profiles = HashMap::new();
        for config in configs {
            let (access_key_id, secret) = config.resolve()?;
            profiles.insert(access_key_id.clone(), Arc::new(config.profile()?));
            credentials.push(Credential {
                access_key_id,
                secret,
                account_id: config.account_id.clone(),
                principal_arn: config.principal_arn.clone(),
            });
        }
        let mut credentials = Credentials::new(credentials)?;
        credentials.profiles = profiles;
        Ok(credentials)
    }

    /// What the `[[credentials]]` entry of an access key declares (nothing for keys made
    /// without a config).
    pub fn profile(&self, access_key_id: &str) -> Arc<PrincipalProfile> {
        self.profiles
            .get(access_key_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The credential of an access key id, if it is known.
    pub fn credential(&self, access_key_id: &str) -> Option<&Credential> {
        self.by_id.get(access_key_id)
    }
}

/// One HTTP request as received, before its body is interpreted. Its `Debug` shows header
/// names and the body's length only: the body of an Encrypt request is plaintext.
#[derive(Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The method as sent, e.g. `POST`.
    pub method: &'a str,
    /// The path as sent, still percent-encoded, e.g. `/`.
    pub path: &'a str,
    /// The query string as sent, without the `?`; empty when there is none.
    pub query: &'a str,
    /// Every header as received: names in any case, repeated names in their order. Over
    /// HTTP/2 the server passes the `:authority` as `host`.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body as received, hashed into the canonical request.
    pub body: &'a [u8],
}

impl fmt::Debug for HttpRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Who sent an authenticated request, and where it acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The access key that signed.
    pub access_key_id: String,
    /// The IAM principal the credential acts as.
    pub principal_arn: String,
    /// The credential's account and the region of the signature's credential scope.
    pub scope: Scope,
    /// What the credential declares: identity policies, tags, via service.
    pub profile: Arc<PrincipalProfile>,
}

/// Verifies SigV4 signatures against a set of credentials for the regions served.
#[derive(Debug)]
pub struct Verifier {
    credentials: Credentials,
    regions: Vec<String>,
    service: &'static str,
    signing_keys: SigningKeys,
}

/// HMAC states keyed with derived signing keys, by `AKID/DATE/REGION`. A signing key is
/// good for a whole day and costs four HMACs to derive, most of a verification's work.
#[derive(Default)]
struct SigningKeys(Mutex<HashMap<String, HmacSha256>>);

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.0.lock().unwrap_or_else(PoisonError::into_inner).len();
        write!(f, "SigningKeys({len} cached)")
    }
}

impl SigningKeys {
    /// An HMAC keyed with the signing key of `credential` for this scope and service.
    fn mac(
        &self,
        credential: &Credential,
        scope: &CredentialScope<'_>,
        service: &str,
    ) -> Result<HmacSha256, KmsError> {
        let id = format!(
            "{}/{}/{}",
            credential.access_key_id, scope.date, scope.region
        );
        if let Some(mac) = self.lock().get(&id) {
            return Ok(mac.clone());
        }
        let key = signing_key(&credential.secret, scope, service)?;
        let mac = HmacSha256::new_from_slice(&*key).map_err(|_| hmac_failed())?;
        let mut cache = self.lock();
        if cache.len() >= MAX_SIGNING_KEYS {
            cache.clear();
        }
        cache.insert(id, mac.clone());
        Ok(mac)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HmacSha256>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Verifier {
    /// A verifier for service [`SERVICE`] in the given regions.
    pub fn new(credentials: Credentials, regions: Vec<String>) -> Self {
        Verifier {
            credentials,
            regions,
            service: SERVICE,
            signing_keys: SigningKeys::default(),
        }
    }

    /// The verifier the config describes: its `[[credentials]]` and `[service] regions`.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Ok(Verifier::new(
            Credentials::from_config(&config.credentials)?,
            config.service.regions.clone(),
        ))
    }

    /// Authenticates a request received at `now`, or says why it is refused.
    pub fn verify(&self, request: &HttpRequest<'_>, now: SystemTime) -> Result<Identity, KmsError> {
        let authorization = authorization_header(request)?;
        let date = header_values(request, "x-amz-date")
            .next()
            .or_else(|| header_values(request, "date").next());
        let auth = Authorization::parse(authorization, date.is_some())?;
        let date = date.map(<[u8]>::trim_ascii).unwrap_or_default();
        let (date, time) = parse_amz_date(date)?;
        check_skew(date, time, now)?;
        if !auth
            .signed_headers
            .split(';')
            .any(|name| name.eq_ignore_ascii_case("host"))
        {
            return Err(KmsError::InvalidSignature(
                "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
            ));
        }
        if auth.algorithm != ALGORITHM {
            return Err(KmsError::IncompleteSignature(format!(
                "Unsupported AWS 'algorithm': '{}' (only {ALGORITHM} for now).",
                auth.algorithm
            )));
        }
        let scope = CredentialScope::parse(auth.credential)?;
        self.check_scope(&scope, date)?;
        let credential = self
            .credentials
            .credential(scope.access_key_id)
            .ok_or_else(invalid_token)?;

        let body_hash = hex::encode(Sha256::digest(request.body));
        if header_values(request, "x-amz-content-sha256")
            .any(|claimed| claimed.trim_ascii() != body_hash.as_bytes())
        {
            return Err(mismatch());
        }
        let canonical =
            canonical_request(request, auth.signed_headers, &body_hash).ok_or_else(mismatch)?;
        let provided = unhex(auth.signature).ok_or_else(mismatch)?;
        let mut mac = self.signing_keys.mac(credential, &scope, self.service)?;
        mac.update(string_to_sign(date, &scope, self.service, &canonical).as_bytes());
        mac.verify_slice(&provided).map_err(|_| mismatch())?;

        if header_values(request, "x-amz-security-token")
            .next()
            .is_some()
        {
            return Err(invalid_token());
        }
        Ok(Identity {
            access_key_id: credential.access_key_id.clone(),
            principal_arn: credential.principal_arn.clone(),
            scope: Scope::new(scope.region, &credential.account_id)?,
            profile: self.credentials.profile(&credential.access_key_id),
        })
    }

    /// The credential scope must name a served region, this service, the terminator and
    /// the request's date; every violation is reported at once, as AWS does.
    fn check_scope(&self, scope: &CredentialScope<'_>, date: &str) -> Result<(), KmsError> {
        let mut problems = Vec::new();
        if !self.regions.iter().any(|region| region == scope.region) {
            problems.push(format!(
                "Credential should be scoped to a valid region, not '{}'.",
                scope.region
            ));
        }
        if scope.service != self.service {
            problems.push(format!(
                "Credential should be scoped to correct service: '{}'.",
                self.service
            ));
        }
        if scope.terminator != TERMINATOR {
            problems.push(format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'.",
                scope.terminator
            ));
        }
        let day = &date[..8];
        if scope.date != day {
            problems.push(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{}' != '{day}', from '{date}'.",
                scope.date
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(KmsError::InvalidSignature(problems.join(" ")))
        }
    }
}

/// The parameters of an `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`
/// header.
struct Authorization<'a> {
    algorithm: &'a str,
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

impl<'a> Authorization<'a> {
    /// Parses the header; parameters may be separated by commas, spaces or both. Reports
    /// every missing parameter (and a missing date header) at once, as AWS does.
    fn parse(header: &'a str, has_date: bool) -> Result<Self, KmsError> {
        let (algorithm, parameters) = header.split_once([' ', '\t']).unwrap_or((header, ""));
        let (mut credential, mut signed_headers, mut signature) = ("", "", "");
        for pair in parameters
            .split([',', ' ', '\t'])
            .filter(|pair| !pair.is_empty())
        {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(KmsError::IncompleteSignature(format!(
                    "'{pair}' not a valid key=value pair (missing equal-sign) in Authorization \
                     header: '{header}'."
                )));
            };
            match name {
                "Credential" => credential = value,
                "SignedHeaders" => signed_headers = value,
                "Signature" => signature = value,
                _ => {}
            }
        }
        let mut missing = String::new();
        for (name, value) in [
            ("Credential", credential),
            ("Signature", signature),
            ("SignedHeaders", signed_headers),
        ] {
            if value.is_empty() {
                missing.push_str(&format!(
                    "Authorization header requires '{name}' parameter. "
                ));
            }
        }
        if !has_date {
            missing.push_str(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
                 header. ",
            );
        }
        if !missing.is_empty() {
            return Err(KmsError::IncompleteSignature(format!(
                "{missing}Authorization={header}"
            )));
        }
        Ok(Authorization {
            algorithm,
            credential,
            signed_headers,
            signature,
        })
    }
}

/// `AKID/YYYYMMDD/REGION/SERVICE/aws4_request`.
struct CredentialScope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
}

impl<'a> CredentialScope<'a> {
    /// Splits the `Credential` parameter; trailing slashes are ignored, as AWS does.
    fn parse(credential: &'a str) -> Result<Self, KmsError> {
        let parts: Vec<&str> = credential.trim_end_matches('/').split('/').collect();
        match parts[..] {
            [access_key_id, date, region, service, terminator] => Ok(CredentialScope {
                access_key_id,
                date,
                region,
                service,
                terminator,
            }),
            _ => Err(KmsError::IncompleteSignature(format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got '{credential}'"
            ))),
        }
    }
}

/// The single `Authorization` header, which must be a SigV4 one.
fn authorization_header<'r>(request: &HttpRequest<'r>) -> Result<&'r str, KmsError> {
    let mut values = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| *value);
    let Some(value) = values.next() else {
        return Err(missing_token());
    };
    if values.next().is_some() {
        return Err(KmsError::IncompleteSignature(
            "The request carries more than one Authorization header.".into(),
        ));
    }
    let value = std::str::from_utf8(value)
        .map_err(|_| missing_token())?
        .trim();
    if value.starts_with("AWS4-") {
        Ok(value)
    } else {
        Err(missing_token())
    }
}

/// The values of every header named `name` (any case), in the order received.
fn header_values<'r>(
    request: &HttpRequest<'r>,
    name: &'static str,
) -> impl Iterator<Item = &'r [u8]> {
    request
        .headers
        .iter()
        .filter(move |(header, _)| header.eq_ignore_ascii_case(name))
        .map(|(_, value)| *value)
}

/// Parses `YYYYMMDDTHHMMSSZ`, returning the text and the time it names.
fn parse_amz_date(date: &[u8]) -> Result<(&str, SystemTime), KmsError> {
    let text = std::str::from_utf8(date).unwrap_or_default();
    let shaped = date.len() == 16
        && date[8] == b'T'
        && date[15] == b'Z'
        && date[..8].iter().chain(&date[9..15]).all(u8::is_ascii_digit);
    let time = shaped
        .then(|| {
            humantime::parse_rfc3339(&format!(
                "{}-{}-{}T{}:{}:{}Z",
                &text[..4],
                &text[4..6],
                &text[6..8],
                &text[9..11],
                &text[11..13],
                &text[13..15]
            ))
            .ok()
        })
        .flatten();
    match time {
        Some(time) => Ok((text, time)),
        None => Err(KmsError::IncompleteSignature(format!(
            "Date must be in ISO-8601 'basic format'. Got '{}'. See \
             http://en.wikipedia.org/wiki/ISO_8601",
            String::from_utf8_lossy(date)
        ))),
    }
}

/// `YYYYMMDDTHHMMSSZ` for a time, clamped to the years 1970 to 9999 that the format (and
/// `humantime`, which would panic) can express.
fn format_amz_date(time: SystemTime) -> String {
    const LAST: Duration = Duration::from_secs(253_402_300_799);
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + since_epoch)
        .to_string()
        .replace(['-', ':'], "")
}

/// Refuses a request time more than [`MAX_SKEW`] away from `now`, in AWS's words.
fn check_skew(date: &str, time: SystemTime, now: SystemTime) -> Result<(), KmsError> {
    let earliest = now.checked_sub(MAX_SKEW).unwrap_or(UNIX_EPOCH);
    let latest = now.checked_add(MAX_SKEW).unwrap_or(now);
    let minutes = MAX_SKEW.as_secs() / 60;
    if time < earliest {
        Err(KmsError::InvalidSignature(format!(
            "Signature expired: {date} is now earlier than {} ({} - {minutes} min.)",
            format_amz_date(earliest),
            format_amz_date(now)
        )))
    } else if time > latest {
        Err(KmsError::InvalidSignature(format!(
            "Signature not yet current: {date} is still later than {} ({} + {minutes} min.)",
            format_amz_date(latest),
            format_amz_date(now)
        )))
    } else {
        Ok(())
    }
}

/// The canonical request: method, URI, query, the signed headers' canonical lines, the
/// `SignedHeaders` list as sent, and the payload hash. `None` when a signed header is
/// absent from the request.
fn canonical_request(
    request: &HttpRequest<'_>,
    signed_headers: &str,
    payload_hash: &str,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(256 + request.headers.len() * 48);
    out.extend_from_slice(request.method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(request.path).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(request.query).as_bytes());
    out.push(b'\n');
    for name in signed_headers.split(';') {
        let name = name.to_ascii_lowercase();
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut found = false;
        for (header, value) in request.headers {
            if header.eq_ignore_ascii_case(&name) {
                if found {
                    out.push(b',');
                }
                push_trimmed(&mut out, value);
                found = true;
            }
        }
        if !found {
            return None;
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    Some(out)
}

/// A header value with its ends trimmed and runs of spaces collapsed to one.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let mut after_space = false;
    for &byte in value.trim_ascii() {
        if byte != b' ' || !after_space {
            out.push(byte);
        }
        after_space = byte == b' ';
    }
}

/// The path without empty and `.` segments, `..` applied, a trailing slash kept, each byte
/// outside the unreserved set percent-encoded once more (AWS's rule for services other
/// than S3).
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        out.extend(percent_encode(segment.as_bytes(), SIGV4_ESCAPED));
    }
    if segments.is_empty() || path.ends_with('/') {
        out.push('/');
    }
    out
}

/// The query parameters decoded, encoded again strictly, and sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            // A `%` not followed by two hex digits stays as it is, `+` too.
            let encode = |text: &str| {
                let decoded: Vec<u8> = percent_decode_str(text).collect();
                percent_encode(&decoded, SIGV4_ESCAPED).to_string()
            };
            (encode(name), encode(value))
        })
        .collect();
    pairs.sort_unstable();
    let mut out = String::with_capacity(query.len() + 8);
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// What SigV4 leaves unescaped: `A-Z a-z 0-9 - . _ ~`; every other byte becomes `%XX`.
const SIGV4_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `AWS4-HMAC-SHA256`, the request time, the credential scope and the hash of the
/// canonical request, one per line.
fn string_to_sign(
    date: &str,
    scope: &CredentialScope<'_>,
    service: &str,
    canonical: &[u8],
) -> String {
    format!(
        "{ALGORITHM}\n{date}\n{}/{}/{service}/{TERMINATOR}\n{}",
        scope.date,
        scope.region,
        hex::encode(Sha256::digest(canonical))
    )
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
fn signing_key(
    secret: &SecretString,
    scope: &CredentialScope<'_>,
    service: &str,
) -> Result<Zeroizing<[u8; 32]>, KmsError> {
    let secret = secret.expose_secret().as_bytes();
    let mut key = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
    key.extend_from_slice(b"AWS4");
    key.extend_from_slice(secret);
    let key = hmac(&key, scope.date.as_bytes())?;
    let key = hmac(&*key, scope.region.as_bytes())?;
    let key = hmac(&*key, service.as_bytes())?;
    hmac(&*key, TERMINATOR.as_bytes())
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Zeroizing<[u8; 32]>, KmsError> {
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| hmac_failed())?;
    mac.update(data);
    Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
}

/// The 32 bytes of a 64-digit lowercase hex signature (SigV4 signatures are lowercase).
fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn missing_token() -> KmsError {
    KmsError::MissingAuthenticationToken("Request is missing Authentication Token".into())
}

fn invalid_token() -> KmsError {
    KmsError::UnrecognizedClient("The security token included in the request is invalid.".into())
}

fn mismatch() -> KmsError {
    KmsError::InvalidSignature(SIGNATURE_MISMATCH.into())
}

fn hmac_failed() -> KmsError {
    KmsError::KmsInternal("HMAC-SHA256 refused its key.".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    /// The credentials, date and scope of AWS's SigV4 test suite.
    const SUITE_KEY: &str = "AKIDEXAMPLE";
    const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SUITE_DATE: &str = "20150830T123600Z";

    fn suite_verifier() -> Verifier {
        let credential = Credential {
            access_key_id: SUITE_KEY.into(),
            secret: SecretString::from(SUITE_SECRET),
            account_id: "111122223333".into(),
            principal_arn: "arn:aws:iam::111122223333:user/example".into(),
        };
        Verifier {
            credentials: Credentials::new([credential]).unwrap(),
            regions: vec!["us-east-1".into()],
            service: "service",
            signing_keys: SigningKeys::default(),
        }
    }

    fn suite_now() -> SystemTime {
        parse_amz_date(SUITE_DATE.as_bytes()).unwrap().1
    }

    /// A request in the suite's `.req` form: request line, `Name:value` header lines, a
    /// blank line and the body.
    struct RawRequest {
        method: String,
        path: String,
        query: String,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    }

    impl RawRequest {
        fn parse(text: &str) -> RawRequest {
            let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
            let mut lines = head.lines();
            let request_line = lines.next().unwrap();
            let (method, rest) = request_line.split_once(' ').unwrap();
            let target = rest.strip_suffix(" HTTP/1.1").unwrap();
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let headers = lines
                .map(|line| {
                    let (name, value) = line.split_once(':').unwrap();
                    (name.to_owned(), value.as_bytes().to_vec())
                })
                .collect();
            RawRequest {
                method: method.into(),
                path: path.into(),
                query: query.into(),
                headers,
                body: body.as_bytes().to_vec(),
            }
        }

        fn signed(mut self, signed_headers: &str, signature: &str) -> RawRequest {
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential={SUITE_KEY}/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders={signed_headers}, Signature={signature}"
            );
            self.headers
                .push(("Authorization".into(), authorization.into_bytes()));
            self
        }

        fn verify(&self, verifier: &Verifier) -> Result<Identity, KmsError> {
            let headers: Vec<(&str, &[u8])> = self
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice()))
                .collect();
            let request = HttpRequest {
                method: &self.method,
                path: &self.path,
                query: &self.query,
                headers: &headers,
                body: &self.body,
            };
            verifier.verify(&request, suite_now())
        }

        fn canonical(&self, signed_headers: &str) -> String {
            let headers: Vec<(&str, &[u8])> = self
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice()))
                .collect();
            let request = HttpRequest {
                method: &self.method,
                path: &self.path,
                query: &self.query,
                headers: &headers,
                body: &self.body,
            };
            let hash = hex::encode(Sha256::digest(&self.body));
            String::from_utf8(canonical_request(&request, signed_headers, &hash).unwrap()).unwrap()
        }
    }

    const PLAIN: &str = "Host:example.amazonaws.com\nX-Amz-Date:20150830T123600Z";

    /// (suite test name, request, SignedHeaders, signature) from AWS's SigV4 test suite.
    fn suite() -> Vec<(&'static str, String, &'static str, &'static str)> {
        let get = |target: &str| format!("GET {target} HTTP/1.1\n{PLAIN}");
        let post = |target: &str| format!("POST {target} HTTP/1.1\n{PLAIN}");
        let with = |extra: &str| format!("GET / HTTP/1.1\n{PLAIN}\n{extra}");
        let hd = "host;x-amz-date";
        let h1d = "host;my-header1;x-amz-date";
        vec![
            (
                "get-vanilla",
                get("/"),
                hd,
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "get-vanilla-empty-query-key",
                get("/?Param1=value1"),
                hd,
                "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
            ),
            (
                "get-vanilla-query-order-key",
                get("/?Param1=value2&Param1=Value1"),
                hd,
                "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1",
            ),
            (
                "get-vanilla-query-order-key-case",
                get("/?Param2=value2&Param1=value1"),
                hd,
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "get-vanilla-query-order-value",
                get("/?Param1=value2&Param1=value1"),
                hd,
                "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
            ),
            (
                "get-vanilla-query-unreserved",
                get(
                    "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=\
                     -._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                ),
                hd,
                "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
            ),
            (
                "get-unreserved",
                get("/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
                hd,
                "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
            ),
            (
                "get-header-key-duplicate",
                with("My-Header1:value2\nMy-Header1:value2\nMy-Header1:value1"),
                h1d,
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            ),
            (
                "get-header-value-order",
                with("My-Header1:value4\nMy-Header1:value1\nMy-Header1:value3\nMy-Header1:value2"),
                h1d,
                "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
            ),
            (
                "get-header-value-trim",
                with("My-Header1: value1\nMy-Header2: \"a   b   c\""),
                "host;my-header1;my-header2;x-amz-date",
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            ),
            (
                "post-vanilla",
                post("/"),
                hd,
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            (
                "post-vanilla-query",
                post("/?Param1=value1"),
                hd,
                "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
            ),
            (
                "post-header-key-case",
                "POST / HTTP/1.1\nhOsT:example.amazonaws.com\nx-AMZ-date:20150830T123600Z".into(),
                hd,
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            (
                "post-header-key-sort",
                format!("POST / HTTP/1.1\n{PLAIN}\nMy-Header1:value1"),
                h1d,
                "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
            ),
            (
                "post-header-value-case",
                format!("POST / HTTP/1.1\n{PLAIN}\nMy-Header1:VALUE1"),
                h1d,
                "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
            ),
            (
                "post-x-www-form-urlencoded",
                format!(
                    "POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded\n{PLAIN}\
                     \n\nParam1=value1"
                ),
                "content-type;host;x-amz-date",
                "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            ),
            (
                "normalize-path/get-relative",
                get("/example/.."),
                hd,
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "normalize-path/get-relative-relative",
                get("/example1/example2/../.."),
                hd,
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "normalize-path/get-slash",
                get("//"),
                hd,
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "normalize-path/get-slash-dot-slash",
                get("/./"),
                hd,
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "normalize-path/get-slash-pointless-dot",
                get("/./example"),
                hd,
                "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
            ),
            (
                "normalize-path/get-slashes",
                get("//example//"),
                hd,
                "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
            ),
            (
                "normalize-path/get-space",
                get("/example space/"),
                hd,
                "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
            ),
        ]
    }

    #[test]
    fn every_suite_request_verifies() {
        let verifier = suite_verifier();
        for (name, raw, signed_headers, signature) in suite() {
            let request = RawRequest::parse(&raw).signed(signed_headers, signature);
            let identity = request
                .verify(&verifier)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(identity.access_key_id, SUITE_KEY, "{name}");
            assert_eq!(identity.scope.region(), "us-east-1", "{name}");
            assert_eq!(identity.scope.account_id(), "111122223333", "{name}");
            assert_eq!(
                identity.principal_arn, "arn:aws:iam::111122223333:user/example",
                "{name}"
            );
        }
    }

    #[test]
    fn every_suite_request_fails_with_a_changed_signature_or_secret() {
        let verifier = suite_verifier();
        let wrong_secret = Verifier {
            credentials: Credentials::new([Credential {
                access_key_id: SUITE_KEY.into(),
                secret: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ"),
                account_id: "111122223333".into(),
                principal_arn: "arn:aws:iam::111122223333:user/example".into(),
            }])
            .unwrap(),
            regions: vec!["us-east-1".into()],
            service: "service",
            signing_keys: SigningKeys::default(),
        };
        for (name, raw, signed_headers, signature) in suite() {
            let mut flipped = signature.to_owned();
            let last = if flipped.ends_with('0') { "1" } else { "0" };
            flipped.replace_range(63.., last);
            let request = RawRequest::parse(&raw).signed(signed_headers, &flipped);
            assert_eq!(request.verify(&verifier), Err(mismatch()), "{name}");
            let request = RawRequest::parse(&raw).signed(signed_headers, signature);
            assert_eq!(request.verify(&wrong_secret), Err(mismatch()), "{name}");
        }
    }

    #[test]
    fn canonical_requests_match_the_suite() {
        let request = RawRequest::parse(&format!(
            "GET /?Param1=value2&Param1=Value1 HTTP/1.1\n{PLAIN}"
        ));
        assert_eq!(
            request.canonical("host;x-amz-date"),
            "GET\n/\nParam1=Value1&Param1=value2\nhost:example.amazonaws.com\n\
             x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let request = RawRequest::parse(&format!(
            "GET / HTTP/1.1\n{PLAIN}\nMy-Header1: value1\nMy-Header2: \"a   b   c\""
        ));
        assert_eq!(
            request.canonical("host;my-header1;my-header2;x-amz-date"),
            "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\n\
             x-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_string_to_sign_matches_the_suite() {
        let request = RawRequest::parse(&format!("GET / HTTP/1.1\n{PLAIN}"));
        let scope =
            CredentialScope::parse("AKIDEXAMPLE/20150830/us-east-1/service/aws4_request").unwrap();
        let canonical = request.canonical("host;x-amz-date");
        assert_eq!(
            string_to_sign(SUITE_DATE, &scope, "service", canonical.as_bytes()),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
    }

    /// `post-sts-token/post-sts-header-before`: the signature is right, but this endpoint
    /// issues no session tokens.
    #[test]
    fn a_signed_session_token_is_refused_after_the_signature_checks() {
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqw\
                     AeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE\
                     8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0r\
                     KwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlT\
                     JabIQwj2ICCR/oLxBA==";
        let raw = format!("POST / HTTP/1.1\n{PLAIN}\nX-Amz-Security-Token:{token}");
        let verifier = suite_verifier();
        let request = RawRequest::parse(&raw).signed(
            "host;x-amz-date;x-amz-security-token",
            "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
        );
        assert_eq!(request.verify(&verifier), Err(invalid_token()));
        let request = RawRequest::parse(&raw).signed(
            "host;x-amz-date;x-amz-security-token",
            "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05eae",
        );
        assert_eq!(request.verify(&verifier), Err(mismatch()));
    }

    /// A request dated by `Date` instead of `X-Amz-Date` (signature computed independently
    /// from the suite's credentials); `X-Amz-Date` wins when both are present.
    #[test]
    fn the_date_header_stands_in_for_x_amz_date() {
        let verifier = suite_verifier();
        let signature = "b9498f120b174820093a3c726637a11f74f6c8f7c033c4407ddc702fef3705bb";
        let raw = "GET / HTTP/1.1\nHost:example.amazonaws.com\nDate:20150830T123600Z";
        let request = RawRequest::parse(raw).signed("date;host", signature);
        assert!(request.verify(&verifier).is_ok());
        let raw = format!("{raw}\nX-Amz-Date:20150830T123601Z");
        let request = RawRequest::parse(&raw).signed("date;host", signature);
        assert_eq!(request.verify(&verifier), Err(mismatch()));
        let raw = "GET / HTTP/1.1\nHost:example.amazonaws.com\nDate:Sun, 30 Aug 2015 12:36:00 GMT";
        let error = RawRequest::parse(raw)
            .signed("date;host", signature)
            .verify(&verifier)
            .unwrap_err();
        assert_eq!(
            error,
            KmsError::IncompleteSignature(
                "Date must be in ISO-8601 'basic format'. Got 'Sun, 30 Aug 2015 12:36:00 GMT'. \
                 See http://en.wikipedia.org/wiki/ISO_8601"
                    .into()
            )
        );
    }

    #[test]
    fn paths_are_normalised_and_encoded_once_more() {
        for (path, canonical) in [
            ("", "/"),
            ("/", "/"),
            ("/a/b/", "/a/b/"),
            ("/a/./b/../c", "/a/c"),
            ("/../..", "/"),
            ("/a/.", "/a"),
            ("/model/a%3Ab/invoke", "/model/a%253Ab/invoke"),
            ("/ሴ", "/%E1%88%B4"),
        ] {
            assert_eq!(canonical_uri(path), canonical, "{path:?}");
        }
    }

    #[test]
    fn queries_are_decoded_encoded_strictly_and_sorted() {
        for (query, canonical) in [
            ("", ""),
            ("b=2&a=x%20y&a=1", "a=1&a=x%20y&b=2"),
            ("flag&x=", "flag=&x="),
            ("a=b+c", "a=b%2Bc"),
            ("a=%7e%2a", "a=~%2A"),
            ("a=100%", "a=100%25"),
            ("ሴ=bar", "%E1%88%B4=bar"),
            ("&&a=1&", "a=1"),
        ] {
            assert_eq!(canonical_query(query), canonical, "{query:?}");
        }
    }

    #[test]
    fn header_values_are_trimmed_and_spaces_collapsed() {
        for (value, canonical) in [
            (&b"  a   b  "[..], &b"a b"[..]),
            (b"\ta\t", b"a"),
            (b"a\tb", b"a\tb"),
            (b"", b""),
        ] {
            let mut out = Vec::new();
            push_trimmed(&mut out, value);
            assert_eq!(out, canonical);
        }
    }

    #[test]
    fn dates_are_iso_8601_basic_format() {
        let (text, time) = parse_amz_date(b"20150830T123600Z").unwrap();
        assert_eq!(text, "20150830T123600Z");
        assert_eq!(
            time.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_440_938_160
        );
        assert_eq!(format_amz_date(time), "20150830T123600Z");
        assert_eq!(
            format_amz_date(UNIX_EPOCH - Duration::from_secs(1)),
            "19700101T000000Z"
        );
        assert_eq!(
            format_amz_date(UNIX_EPOCH + Duration::from_secs(300_000_000_000)),
            "99991231T235959Z"
        );
        for bad in [
            &b"2015-08-30T12:36:00Z"[..],
            b"20150830T123600",
            b"20151330T123600Z",
            b"20150830 123600Z",
            b"Sun, 30 Aug 2015 12:36:00 GMT",
            b"2015083\xffT123600Z",
            b"",
        ] {
            let error = parse_amz_date(bad).unwrap_err();
            assert_eq!(error.code(), "IncompleteSignatureException");
            assert!(
                error
                    .message()
                    .starts_with("Date must be in ISO-8601 'basic format'."),
                "{error:?}"
            );
        }
    }

    #[test]
    fn signatures_are_64_lowercase_hex_digits() {
        let digits = "00ff".repeat(16);
        assert_eq!(unhex(&digits).unwrap()[..2], [0x00, 0xff]);
        assert!(unhex(&digits.to_uppercase()).is_none());
        assert!(unhex(&digits[..62]).is_none());
        assert!(unhex(&format!("{}zz", &digits[..62])).is_none());
        assert_eq!(hex::encode([0x00, 0xab, 0x10]), "00ab10");
    }

    #[test]
    fn debug_output_shows_no_secret_header_value_or_body() {
        let verifier = suite_verifier();
        let text = format!("{verifier:?}");
        assert!(text.contains(SUITE_KEY), "{text}");
        assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
        let headers = [("X-Secret-Header", &b"header-value"[..])];
        let request = HttpRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"plaintext-body",
        };
        let text = format!("{request:?}");
        assert!(
            text.contains("X-Secret-Header") && text.contains("14"),
            "{text}"
        );
        assert!(
            !text.contains("header-value") && !text.contains("plaintext"),
            "{text}"
        );
    }

    #[test]
    fn a_key_listed_twice_is_refused() {
        let credential = || Credential {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret: SecretString::from("s"),
            account_id: "111122223333".into(),
            principal_arn: "arn:aws:iam::111122223333:root".into(),
        };
        let error = Credentials::new([credential(), credential()]).unwrap_err();
        assert!(error.to_string().contains("listed twice"), "{error}");
    }
}
