//! SigV4 verification against requests signed by real AWS signers: `aws-sigv4` (the Rust
//! SDK's signer) signing the header sets botocore and the Rust SDK sign, and botocore
//! itself (a fixture it wrote), plus every way a request is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use hsm_kms::config::Config;
use hsm_kms::error::KmsError;
use hsm_kms::server::sigv4::{
    Credential, Credentials, HttpRequest, Identity, MAX_SKEW, SERVICE, Verifier,
};
use secrecy::SecretString;

const KEY: &str = "AKIAHSMKMSTEST000001";
const SECRET: &str = "test/secret+key/0123456789abcdefghijklmn";
const ACCOUNT: &str = "111122223333";
const PRINCIPAL: &str = "arn:aws:iam::111122223333:user/app";
const HOST: &str = "127.0.0.1:4599";
const BODY: &[u8] = br#"{"KeyId": "alias/app", "Plaintext": "AAFzZWNyZXT/"}"#;

/// 2026-01-15T10:30:00Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_768_473_000)
}

fn verifier() -> Verifier {
    let credential = Credential {
        access_key_id: KEY.into(),
        secret: SecretString::from(SECRET),
        account_id: ACCOUNT.into(),
        principal_arn: PRINCIPAL.into(),
    };
    Verifier::new(
        Credentials::new([credential]).unwrap(),
        vec!["us-east-1".into(), "eu-west-1".into()],
    )
}

/// A request as the server receives it.
#[derive(Clone)]
struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn verify_at(&self, verifier: &Verifier, now: SystemTime) -> Result<Identity, KmsError> {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        verifier.verify(
            &HttpRequest {
                method: &self.method,
                path: &self.path,
                query: &self.query,
                headers: &headers,
                body: &self.body,
            },
            now,
        )
    }

    fn verify(&self) -> Result<Identity, KmsError> {
        self.verify_at(&verifier(), t0())
    }

    fn header(&self, name: &str) -> &str {
        &self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .unwrap()
            .1
    }

    fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
    }

    fn without_header(mut self, name: &str) -> Request {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn with_authorization(mut self, value: &str) -> Request {
        self.set_header("Authorization", value);
        self
    }
}

/// What to sign and how.
struct Signing<'a> {
    headers: Vec<(&'a str, String)>,
    region: &'a str,
    service: &'a str,
    key: &'a str,
    secret: &'a str,
    time: SystemTime,
    settings: SigningSettings,
    /// Whether the signer sees the Host header (else it takes the URI's authority).
    host_header: bool,
}

impl Default for Signing<'_> {
    /// A KMS Encrypt request as botocore builds it before signing.
    fn default() -> Self {
        Signing {
            headers: vec![
                ("X-Amz-Target", "TrentService.Encrypt".into()),
                ("Content-Type", "application/x-amz-json-1.1".into()),
            ],
            region: "us-east-1",
            service: SERVICE,
            key: KEY,
            secret: SECRET,
            time: t0(),
            settings: SigningSettings::default(),
            host_header: false,
        }
    }
}

impl Signing<'_> {
    /// The request the Rust SDK sends for KMS Encrypt: it also signs content-length,
    /// x-amz-user-agent and the amz-sdk-* headers (user-agent is left unsigned).
    fn rust_sdk() -> Self {
        let mut signing = Signing::default();
        signing.headers.extend([
            ("content-length", BODY.len().to_string()),
            (
                "x-amz-user-agent",
                "aws-sdk-rust/1.3.9 api/kms/1.97.0 os/linux lang/rust/1.95.0".into(),
            ),
            (
                "user-agent",
                "aws-sdk-rust/1.3.9 os/linux lang/rust/1.95.0".into(),
            ),
            (
                "amz-sdk-invocation-id",
                "6d2ad4a0-3c7e-4a8f-9b1f-2c6a3f0c1d2e".into(),
            ),
            ("amz-sdk-request", "attempt=1; max=3".into()),
        ]);
        signing.host_header = true;
        signing
    }

    /// Signs with `aws-sigv4` and returns the request with the headers the signer added
    /// and the Host header the HTTP client sends.
    fn sign(self) -> Request {
        let identity =
            aws_credential_types::Credentials::new(self.key, self.secret, None, None, "sigv4-test")
                .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(self.time)
            .settings(self.settings)
            .build()
            .unwrap()
            .into();
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        if self.host_header {
            headers.push(("Host".into(), HOST.into()));
        }
        let signable = SignableRequest::new(
            "POST",
            format!("http://{HOST}/"),
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            SignableBody::Bytes(BODY),
        )
        .unwrap();
        let (instructions, _signature) = sign(signable, &params).unwrap().into_parts();
        for (name, value) in instructions.headers() {
            headers.push((name.into(), value.into()));
        }
        if !self.host_header {
            headers.push(("Host".into(), HOST.into()));
        }
        Request {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers,
            body: BODY.to_vec(),
        }
    }
}

fn signed() -> Request {
    Signing::default().sign()
}

fn mismatch() -> KmsError {
    KmsError::InvalidSignature(
        "The request signature we calculated does not match the signature you provided. Check \
         your AWS Secret Access Key and signing method. Consult the service documentation for \
         details."
            .into(),
    )
}

fn incomplete(message: &str) -> KmsError {
    KmsError::IncompleteSignature(message.into())
}

fn invalid(message: &str) -> KmsError {
    KmsError::InvalidSignature(message.into())
}

// ---------------------------------------------------------------- accepted requests

#[test]
fn a_botocore_style_request_verifies_and_names_the_caller() {
    let request = signed();
    assert!(
        request
            .header("authorization")
            .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target,"),
        "{}",
        request.header("authorization")
    );
    let identity = request.verify().unwrap();
    assert_eq!(identity.access_key_id, KEY);
    assert_eq!(identity.principal_arn, PRINCIPAL);
    assert_eq!(identity.scope.account_id(), ACCOUNT);
    assert_eq!(identity.scope.region(), "us-east-1");
}

#[test]
fn a_rust_sdk_style_request_verifies() {
    let request = Signing::rust_sdk().sign();
    assert!(
        request.header("authorization").contains(
            "SignedHeaders=amz-sdk-invocation-id;amz-sdk-request;content-length;content-type;\
             host;x-amz-date;x-amz-target;x-amz-user-agent,"
        ),
        "{}",
        request.header("authorization")
    );
    request.verify().unwrap();
}

#[test]
fn a_signed_x_amz_content_sha256_verifies_and_must_be_the_body_hash() {
    let mut signing = Signing::rust_sdk();
    signing.settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let request = signing.sign();
    assert!(
        request
            .header("authorization")
            .contains(";x-amz-content-sha256;"),
        "{}",
        request.header("authorization")
    );
    request.verify().unwrap();

    // A hash of another body, even one the signature covers, is refused.
    let mut other = request.clone();
    other.set_header(
        "x-amz-content-sha256",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    assert_eq!(other.verify(), Err(mismatch()));
    // So is a body that no longer matches the signed hash.
    let mut other = request;
    other.body = b"{}".to_vec();
    assert_eq!(other.verify(), Err(mismatch()));
}

#[test]
fn an_unsigned_but_wrong_x_amz_content_sha256_is_refused() {
    let mut request = signed();
    request.set_header("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD");
    assert_eq!(request.verify(), Err(mismatch()));
}

#[test]
fn the_region_of_the_credential_scope_is_the_callers_region() {
    let identity = Signing {
        region: "eu-west-1",
        ..Signing::default()
    }
    .sign()
    .verify()
    .unwrap();
    assert_eq!(identity.scope.region(), "eu-west-1");
    assert_eq!(identity.scope.account_id(), ACCOUNT);
}

#[test]
fn the_host_may_be_given_to_the_signer_or_taken_from_the_uri() {
    Signing {
        host_header: true,
        ..Signing::default()
    }
    .sign()
    .verify()
    .unwrap();
    // The port is part of the signed host: a request that arrives with another Host fails.
    let mut request = signed();
    request.set_header("Host", "127.0.0.1");
    assert_eq!(request.verify(), Err(mismatch()));
}

#[test]
fn header_names_may_arrive_in_any_case() {
    let mut request = Signing::rust_sdk().sign();
    for (name, _) in &mut request.headers {
        *name = name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
    }
    assert!(request.headers.iter().any(|(n, _)| n == "AuThOrIzAtIoN"));
    request.verify().unwrap();
}

#[test]
fn unsigned_headers_may_change_and_be_added() {
    let mut request = Signing::rust_sdk().sign();
    request.set_header("user-agent", "something else");
    request.set_header("X-Forwarded-For", "10.0.0.1");
    request.verify().unwrap();
}

#[test]
fn authorization_parameters_may_be_separated_by_commas_or_spaces() {
    let request = signed();
    let authorization = request.header("authorization").to_owned();
    for variant in [
        authorization.replace(", ", ","),
        authorization.replace(", ", " "),
        authorization.replace(", ", " ,  "),
        format!("  {authorization}  "),
    ] {
        request
            .clone()
            .with_authorization(&variant)
            .verify()
            .unwrap_or_else(|e| panic!("{variant}: {e:?}"));
    }
}

#[test]
fn signing_keys_are_told_apart_by_key_day_and_region() {
    let verifier = verifier();
    let day = Duration::from_secs(24 * 3600);
    let us = signed();
    let eu = Signing {
        region: "eu-west-1",
        ..Signing::default()
    }
    .sign();
    let next_day = Signing {
        time: t0() + day,
        ..Signing::default()
    }
    .sign();
    for _ in 0..2 {
        us.verify_at(&verifier, t0()).unwrap();
        eu.verify_at(&verifier, t0()).unwrap();
        next_day.verify_at(&verifier, t0() + day).unwrap();
    }
    // The eu-west-1 signature under a us-east-1 scope (whose key is cached) does not verify.
    let scope = eu
        .header("authorization")
        .replace("/eu-west-1/", "/us-east-1/");
    assert_eq!(
        eu.with_authorization(&scope).verify_at(&verifier, t0()),
        Err(mismatch())
    );
}

#[test]
fn a_request_time_up_to_five_minutes_off_is_accepted() {
    let request = signed();
    let verifier = verifier();
    for now in [
        t0() - MAX_SKEW,
        t0() + MAX_SKEW,
        t0() + Duration::from_secs(1),
    ] {
        request.verify_at(&verifier, now).unwrap();
    }
}

// ---------------------------------------------------------------- botocore fixture

#[derive(serde::Deserialize)]
struct Fixture {
    now: String,
    access_key_id: String,
    secret: String,
    requests: Vec<FixtureRequest>,
}

#[derive(serde::Deserialize)]
struct FixtureRequest {
    region: String,
    operation: String,
    method: String,
    path: String,
    query: String,
    host: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// Requests botocore 1.44.5 signed and sent (tests/fixtures/sigv4/make_botocore_json.py).
#[test]
fn requests_signed_by_botocore_verify() {
    let fixture: Fixture =
        serde_json::from_str(include_str!("fixtures/sigv4/botocore.json")).expect("fixture parses");
    let now = humantime::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        &fixture.now[..4],
        &fixture.now[4..6],
        &fixture.now[6..8],
        &fixture.now[9..11],
        &fixture.now[11..13],
        &fixture.now[13..15]
    ))
    .unwrap();
    let verifier = Verifier::new(
        Credentials::new([Credential {
            access_key_id: fixture.access_key_id.clone(),
            secret: SecretString::from(fixture.secret.as_str()),
            account_id: ACCOUNT.into(),
            principal_arn: PRINCIPAL.into(),
        }])
        .unwrap(),
        vec!["us-east-1".into(), "eu-west-1".into()],
    );
    assert_eq!(fixture.requests.len(), 3);
    for sent in fixture.requests {
        let mut request = Request {
            method: sent.method,
            path: sent.path,
            query: sent.query,
            headers: sent.headers,
            body: sent.body.into_bytes(),
        };
        request.headers.push(("Host".into(), sent.host));
        let identity = request
            .verify_at(&verifier, now)
            .unwrap_or_else(|e| panic!("{}: {e:?}", sent.operation));
        assert_eq!(identity.scope.region(), sent.region, "{}", sent.operation);
        assert_eq!(identity.access_key_id, fixture.access_key_id);

        let mut tampered = request.clone();
        tampered.body.push(b' ');
        assert_eq!(
            tampered.verify_at(&verifier, now),
            Err(mismatch()),
            "{}",
            sent.operation
        );
        let mut tampered = request;
        tampered.set_header("X-Amz-Target", "TrentService.Decrypt");
        assert_eq!(
            tampered.verify_at(&verifier, now),
            Err(mismatch()),
            "{}",
            sent.operation
        );
    }
}

// ---------------------------------------------------------------- refused requests

#[test]
fn a_request_without_authorization_is_missing_its_token() {
    let missing =
        KmsError::MissingAuthenticationToken("Request is missing Authentication Token".into());
    assert_eq!(
        signed().without_header("Authorization").verify(),
        Err(missing.clone())
    );
    for other in ["Basic dXNlcjpwYXNz", "Bearer abc", "", "AWS AKIA:sig"] {
        assert_eq!(
            signed().with_authorization(other).verify(),
            Err(missing.clone()),
            "{other:?}"
        );
    }
    let error = signed()
        .without_header("Authorization")
        .verify()
        .unwrap_err();
    assert_eq!(error.code(), "MissingAuthenticationTokenException");
    assert_eq!(error.http_status(), 400);
}

#[test]
fn a_tampered_body_is_refused() {
    let mut request = signed();
    request.body = br#"{"KeyId": "alias/other", "Plaintext": "AAFzZWNyZXT/"}"#.to_vec();
    assert_eq!(request.verify(), Err(mismatch()));
    let mut request = signed();
    request.body.clear();
    assert_eq!(request.verify(), Err(mismatch()));
}

#[test]
fn a_tampered_signed_header_is_refused() {
    for (name, value) in [
        ("X-Amz-Target", "TrentService.Decrypt"),
        ("Content-Type", "application/x-amz-json-1.0"),
        ("Host", "127.0.0.1:4600"),
    ] {
        let mut request = signed();
        request.set_header(name, value);
        assert_eq!(request.verify(), Err(mismatch()), "{name}");
    }
    // A second value for a signed header changes its canonical form.
    let mut request = signed();
    request
        .headers
        .push(("x-amz-target".into(), "TrentService.Decrypt".into()));
    assert_eq!(request.verify(), Err(mismatch()));
    // A signed header that is gone.
    assert_eq!(
        signed().without_header("X-Amz-Target").verify(),
        Err(mismatch())
    );
}

#[test]
fn a_tampered_date_is_refused() {
    let mut request = signed();
    request.set_header("X-Amz-Date", "20260115T103001Z");
    assert_eq!(request.verify(), Err(mismatch()));

    let mut request = signed();
    request.set_header("X-Amz-Date", "20260116T103000Z");
    let now = t0() + Duration::from_secs(24 * 3600);
    assert_eq!(
        request.verify_at(&verifier(), now),
        Err(invalid(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
             from HTTP: '20260115' != '20260116', from '20260116T103000Z'."
        ))
    );
}

#[test]
fn a_request_more_than_five_minutes_old_has_expired() {
    let late = t0() + MAX_SKEW + Duration::from_secs(60);
    assert_eq!(
        signed().verify_at(&verifier(), late),
        Err(invalid(
            "Signature expired: 20260115T103000Z is now earlier than 20260115T103100Z \
             (20260115T103600Z - 5 min.)"
        ))
    );
    let error = signed()
        .verify_at(&verifier(), t0() + MAX_SKEW + Duration::from_secs(1))
        .unwrap_err();
    assert!(
        error.message().starts_with("Signature expired:"),
        "{error:?}"
    );
}

#[test]
fn a_request_more_than_five_minutes_ahead_is_not_yet_current() {
    let early = t0() - MAX_SKEW - Duration::from_secs(60);
    assert_eq!(
        signed().verify_at(&verifier(), early),
        Err(invalid(
            "Signature not yet current: 20260115T103000Z is still later than 20260115T102900Z \
             (20260115T102400Z + 5 min.)"
        ))
    );
}

#[test]
fn a_region_this_endpoint_does_not_serve_is_refused() {
    let request = Signing {
        region: "ap-south-1",
        ..Signing::default()
    }
    .sign();
    assert_eq!(
        request.verify(),
        Err(invalid(
            "Credential should be scoped to a valid region, not 'ap-south-1'."
        ))
    );
}

#[test]
fn another_service_is_refused() {
    let request = Signing {
        service: "dynamodb",
        ..Signing::default()
    }
    .sign();
    assert_eq!(
        request.verify(),
        Err(invalid(
            "Credential should be scoped to correct service: 'kms'."
        ))
    );
}

#[test]
fn every_scope_problem_is_reported_at_once() {
    let request = signed();
    let authorization = request.header("authorization").replace(
        "/20260115/us-east-1/kms/aws4_request",
        "/20260114/mars-1/s3/aws5_request",
    );
    assert_eq!(
        request.with_authorization(&authorization).verify(),
        Err(invalid(
            "Credential should be scoped to a valid region, not 'mars-1'. Credential should be \
             scoped to correct service: 'kms'. Credential should be scoped with a valid \
             terminator: 'aws4_request', not 'aws5_request'. Date in Credential scope does not \
             match YYYYMMDD from ISO-8601 version of date from HTTP: '20260114' != '20260115', \
             from '20260115T103000Z'."
        ))
    );
}

#[test]
fn an_unknown_access_key_is_unrecognized() {
    let request = Signing {
        key: "AKIAUNKNOWN000000001",
        ..Signing::default()
    }
    .sign();
    let error = request.verify().unwrap_err();
    assert_eq!(
        error,
        KmsError::UnrecognizedClient(
            "The security token included in the request is invalid.".into()
        )
    );
    assert_eq!(error.code(), "UnrecognizedClientException");
}

#[test]
fn a_wrong_secret_is_a_signature_mismatch() {
    let request = Signing {
        secret: "test/secret+key/0123456789abcdefghijklmX",
        ..Signing::default()
    }
    .sign();
    assert_eq!(request.verify(), Err(mismatch()));
}

#[test]
fn malformed_signatures_are_mismatches() {
    let request = signed();
    let authorization = request.header("authorization").to_owned();
    let (head, signature) = authorization.split_once("Signature=").unwrap();
    for bad in [
        signature.to_uppercase(),
        signature[..62].to_owned(),
        format!("{signature}00"),
        format!("{}zz", &signature[..62]),
        "0".repeat(64),
    ] {
        let variant = format!("{head}Signature={bad}");
        assert_eq!(
            request.clone().with_authorization(&variant).verify(),
            Err(mismatch()),
            "{variant}"
        );
    }
}

#[test]
fn a_missing_parameter_or_date_is_an_incomplete_signature() {
    let request = signed();
    let authorization = request.header("authorization").to_owned();
    let without = |name: &str| {
        authorization
            .split([',', ' '])
            .filter(|part| !part.is_empty() && !part.starts_with(name))
            .collect::<Vec<_>>()
            .join(", ")
            .replacen(", ", " ", 1)
    };
    for name in ["Credential", "Signature", "SignedHeaders"] {
        let variant = without(name);
        assert_eq!(
            request.clone().with_authorization(&variant).verify(),
            Err(incomplete(&format!(
                "Authorization header requires '{name}' parameter. Authorization={variant}"
            ))),
            "{variant}"
        );
    }
    let variant = "AWS4-HMAC-SHA256";
    assert_eq!(
        request
            .clone()
            .with_authorization(variant)
            .without_header("X-Amz-Date")
            .verify(),
        Err(incomplete(
            "Authorization header requires 'Credential' parameter. Authorization header \
             requires 'Signature' parameter. Authorization header requires 'SignedHeaders' \
             parameter. Authorization header requires existence of either a 'X-Amz-Date' or a \
             'Date' header. Authorization=AWS4-HMAC-SHA256"
        ))
    );
    let error = request.without_header("X-Amz-Date").verify().unwrap_err();
    assert_eq!(error.code(), "IncompleteSignatureException");
    assert!(
        error.message().starts_with(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
             header. Authorization=AWS4-HMAC-SHA256 Credential="
        ),
        "{error:?}"
    );
    assert_eq!(error.http_status(), 400);
}

#[test]
fn other_malformed_authorizations_are_incomplete_or_invalid() {
    let request = signed();
    let authorization = request.header("authorization").to_owned();
    let credential = authorization.split(['=', ',']).nth(1).unwrap().to_owned();
    let cases: Vec<(String, KmsError)> = vec![
        (
            authorization.replace("Credential=", "Credential "),
            incomplete(&format!(
                "'Credential' not a valid key=value pair (missing equal-sign) in Authorization \
                 header: '{}'.",
                authorization.replace("Credential=", "Credential ")
            )),
        ),
        (
            authorization.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
            incomplete(
                "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512' (only AWS4-HMAC-SHA256 for now).",
            ),
        ),
        (
            authorization.replace("/kms/aws4_request", "/aws4_request"),
            incomplete(&format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got '{}'",
                credential.replace("/kms/aws4_request", "/aws4_request")
            )),
        ),
        (
            authorization.replace("aws4_request", "aws4_request/extra"),
            incomplete(&format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got '{}'",
                credential.replace("aws4_request", "aws4_request/extra")
            )),
        ),
        (
            authorization.replace(
                "SignedHeaders=content-type;host;x-amz-date;x-amz-target",
                "SignedHeaders=content-type;x-amz-date;x-amz-target",
            ),
            invalid("'Host' must be a 'SignedHeader' in the AWS Authorization."),
        ),
    ];
    for (variant, error) in cases {
        assert_eq!(
            request.clone().with_authorization(&variant).verify(),
            Err(error),
            "{variant}"
        );
    }
    // Trailing slashes of the credential are ignored, as AWS does.
    request
        .clone()
        .with_authorization(&authorization.replace("aws4_request", "aws4_request//"))
        .verify()
        .unwrap();
    // A second Authorization header is not accepted.
    let mut twice = request;
    twice
        .headers
        .push(("authorization".into(), authorization.clone()));
    assert_eq!(
        twice.verify().unwrap_err().code(),
        "IncompleteSignatureException"
    );
}

#[test]
fn a_malformed_date_is_an_incomplete_signature() {
    for date in [
        "2026-01-15T10:30:00Z",
        "Thu, 15 Jan 2026 10:30:00 GMT",
        "20260115",
    ] {
        let mut request = signed();
        request.set_header("X-Amz-Date", date);
        assert_eq!(
            request.verify(),
            Err(incomplete(&format!(
                "Date must be in ISO-8601 'basic format'. Got '{date}'. See \
                 http://en.wikipedia.org/wiki/ISO_8601"
            )))
        );
    }
}

#[test]
fn a_session_token_is_unrecognized() {
    let mut request = signed();
    request.set_header("X-Amz-Security-Token", "FwoGZXIvYXdzEXAMPLE");
    assert_eq!(
        request.verify().unwrap_err().code(),
        "UnrecognizedClientException"
    );
}

// ---------------------------------------------------------------- configuration

#[test]
fn the_verifier_reads_credentials_and_regions_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("credentials");
    write_owner_only(
        &shared,
        format!(
            "[default]\naws_access_key_id = AKIAOTHERPROFILE0001\naws_secret_access_key = x\n\n\
             # written by the dev cluster script\n[hsm-kms]\naws_access_key_id = {KEY}\n\
             aws_secret_access_key = {SECRET}\n"
        ),
    );
    let secret_file = dir.path().join("secret");
    write_owner_only(&secret_file, "second/secret\n".into());
    let config = Config::parse(&format!(
        r#"
default_cluster = "main"

[service]
region = "us-east-1"
regions = ["us-east-1", "eu-west-1"]
account_id = "{ACCOUNT}"
data_dir = "data"

[clusters.main]
replication = "vendor"
hsms = [{{ name = "h1", address = "10.0.0.1:2223", zone = "a" }}]

[clusters.main.slot]
name = "slot"
module = "/usr/lib/pkcs11.so"
token = "t"
user_pin = "env:PIN"

[[credentials]]
shared_credentials_file = "{}"
profile = "hsm-kms"
account_id = "{ACCOUNT}"
principal_arn = "{PRINCIPAL}"

[[credentials]]
access_key_id = "AKIASECONDKEY0000001"
secret = "file:{}"
account_id = "444455556666"
principal_arn = "arn:aws:iam::444455556666:role/other"
"#,
        shared.display(),
        secret_file.display()
    ))
    .unwrap();
    let verifier = Verifier::from_config(&config).unwrap();

    let identity = Signing {
        region: "eu-west-1",
        ..Signing::default()
    }
    .sign()
    .verify_at(&verifier, t0())
    .unwrap();
    assert_eq!(identity.principal_arn, PRINCIPAL);
    assert_eq!(identity.scope.region(), "eu-west-1");

    let identity = Signing {
        key: "AKIASECONDKEY0000001",
        secret: "second/secret",
        ..Signing::default()
    }
    .sign()
    .verify_at(&verifier, t0())
    .unwrap();
    assert_eq!(identity.scope.account_id(), "444455556666");
    assert_eq!(
        identity.principal_arn,
        "arn:aws:iam::444455556666:role/other"
    );

    // The default profile of the same file is not configured.
    let request = Signing {
        key: "AKIAOTHERPROFILE0001",
        secret: "x",
        ..Signing::default()
    }
    .sign();
    assert_eq!(
        request.verify_at(&verifier, t0()).unwrap_err().code(),
        "UnrecognizedClientException"
    );
}

/// Writes a file holding a secret with mode 0600 (hsm-kms refuses looser ones).
fn write_owner_only(path: &std::path::Path, contents: String) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
