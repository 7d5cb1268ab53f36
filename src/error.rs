//! The one error type of the key store: every failure a caller can see is an
//! AWS KMS exception, named and numbered exactly as AWS puts it on the wire.
//!
//! This module owns the variant list and its single mapping to wire codes and
//! HTTP statuses ([`KmsError::code`], [`KmsError::http_status`]), plus AWS's
//! generic "validation error detected" message. Every other message is written
//! by the module that detects the failure. Messages must never carry secrets
//! (PINs, key bytes, plaintext, data keys).

use std::borrow::Cow;
use std::fmt;

/// An AWS KMS exception with its AWS message.
///
/// Each variant is one exception of the AWS KMS API model (or one of the
/// protocol-level codes AWS uses outside the model, such as
/// `ValidationException`); the `String` is the message sent as `message`.
/// The message may be empty where AWS sends none (e.g.
/// `InvalidCiphertextException`); [`Display`](fmt::Display) then shows the code.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsError {
    /// `AccessDeniedException`: the caller may not perform the operation.
    AccessDenied(String),
    /// `AlreadyExistsException`: the resource (e.g. an alias) already exists.
    AlreadyExists(String),
    /// `CloudHsmClusterInvalidConfigurationException`: too few HSMs or zones.
    CloudHsmClusterInvalidConfiguration(String),
    /// `CloudHsmClusterInUseException`: another custom key store uses the cluster.
    CloudHsmClusterInUse(String),
    /// `CloudHsmClusterNotFoundException`: no cluster of that name in the config.
    CloudHsmClusterNotFound(String),
    /// `ConflictException`: a rotation of the key is already in progress.
    Conflict(String),
    /// `CustomKeyStoreHasCMKsException`: the key store still holds keys.
    CustomKeyStoreHasCmks(String),
    /// `CustomKeyStoreInvalidStateException`: wrong connection state.
    CustomKeyStoreInvalidState(String),
    /// `CustomKeyStoreNameInUseException`: the key store name is taken.
    CustomKeyStoreNameInUse(String),
    /// `CustomKeyStoreNotFoundException`: no such key store.
    CustomKeyStoreNotFound(String),
    /// `DependencyTimeoutException`: a dependency (an HSM) timed out; retryable.
    DependencyTimeout(String),
    /// `DryRunOperationException` (HTTP 412): the request would have succeeded, but it
    /// asked only for that check (`DryRun`).
    DryRunOperation(String),
    /// `DisabledException`: the key is disabled.
    Disabled(String),
    /// `ExpiredImportTokenException`: the import token's 24 hours are over.
    ExpiredImportToken(String),
    /// `IncompleteSignatureException`: the SigV4 Authorization header is malformed.
    IncompleteSignature(String),
    /// `IncorrectKeyException`: the named key is not the ciphertext's key.
    IncorrectKey(String),
    /// `IncorrectKeyMaterialException`: imported key material is invalid or not the material
    /// imported into the key before.
    IncorrectKeyMaterial(String),
    /// `InvalidAliasNameException`: the alias name is not valid.
    InvalidAliasName(String),
    /// `InvalidArnException`: an ARN is not valid for this request.
    InvalidArn(String),
    /// `InvalidCiphertextException`: the ciphertext or its context does not verify.
    InvalidCiphertext(String),
    /// `InvalidGrantIdException`: no such grant id.
    InvalidGrantId(String),
    /// `InvalidGrantTokenException`: the grant token is not valid.
    InvalidGrantToken(String),
    /// `InvalidImportTokenException`: the import token is not valid or is another key's.
    InvalidImportToken(String),
    /// `InvalidKeyUsageException`: key usage or algorithm does not fit the operation.
    InvalidKeyUsage(String),
    /// `InvalidMarkerException`: the pagination marker is not valid.
    InvalidMarker(String),
    /// `InvalidSignatureException`: the SigV4 signature does not match, has expired, or is
    /// scoped to another region or service.
    InvalidSignature(String),
    /// `KeyUnavailableException`: the key's material cannot be reached; retryable.
    KeyUnavailable(String),
    /// `KMSInternalException`: an internal failure; retryable.
    KmsInternal(String),
    /// `KMSInvalidStateException`: the key state does not allow the operation.
    KmsInvalidState(String),
    /// `KMSInvalidSignatureException`: Verify found the signature invalid.
    KmsInvalidSignature(String),
    /// `KMSInvalidMacException`: VerifyMac found the MAC invalid.
    KmsInvalidMac(String),
    /// `LimitExceededException`: a length constraint or quota was exceeded.
    LimitExceeded(String),
    /// `MalformedPolicyDocumentException`: the key policy is not valid.
    MalformedPolicyDocument(String),
    /// `MissingAuthenticationTokenException`: the request carries no SigV4 Authorization.
    MissingAuthenticationToken(String),
    /// `NotAuthorizedException`: e.g. an alias under the reserved `alias/aws/`.
    NotAuthorized(String),
    /// `NotFoundException`: the key, alias or other entity does not exist.
    NotFound(String),
    /// `RequestEntityTooLargeException` (HTTP 413): the request body exceeds the endpoint's
    /// limit; AWS's frontends answer oversized requests with 413.
    RequestEntityTooLarge(String),
    /// `RequestTimeoutException` (HTTP 408): the request body did not arrive in time.
    RequestTimeout(String),
    /// `SerializationException`: the request body is not valid JSON for its shape.
    Serialization(String),
    /// `TagException`: a tag is not valid.
    Tag(String),
    /// `ThrottlingException`: the request rate is too high.
    Throttling(String),
    /// `UnknownOperationException`: the `X-Amz-Target` names no operation.
    UnknownOperation(String),
    /// `UnrecognizedClientException`: the access key id is not known.
    UnrecognizedClient(String),
    /// `UnsupportedOperationException`: the operation does not apply to this key.
    UnsupportedOperation(String),
    /// `ValidationException`: a parameter violates its constraints.
    Validation(String),
}

impl KmsError {
    /// The wire name and message of this error, in one place.
    fn parts(&self) -> (&'static str, &str) {
        use KmsError::*;
        match self {
            AccessDenied(m) => ("AccessDeniedException", m),
            AlreadyExists(m) => ("AlreadyExistsException", m),
            CloudHsmClusterInvalidConfiguration(m) => {
                ("CloudHsmClusterInvalidConfigurationException", m)
            }
            CloudHsmClusterInUse(m) => ("CloudHsmClusterInUseException", m),
            CloudHsmClusterNotFound(m) => ("CloudHsmClusterNotFoundException", m),
            Conflict(m) => ("ConflictException", m),
            CustomKeyStoreHasCmks(m) => ("CustomKeyStoreHasCMKsException", m),
            CustomKeyStoreInvalidState(m) => ("CustomKeyStoreInvalidStateException", m),
            CustomKeyStoreNameInUse(m) => ("CustomKeyStoreNameInUseException", m),
            CustomKeyStoreNotFound(m) => ("CustomKeyStoreNotFoundException", m),
            DependencyTimeout(m) => ("DependencyTimeoutException", m),
            Disabled(m) => ("DisabledException", m),
            DryRunOperation(m) => ("DryRunOperationException", m),
            ExpiredImportToken(m) => ("ExpiredImportTokenException", m),
            IncorrectKeyMaterial(m) => ("IncorrectKeyMaterialException", m),
            InvalidImportToken(m) => ("InvalidImportTokenException", m),
            IncompleteSignature(m) => ("IncompleteSignatureException", m),
            IncorrectKey(m) => ("IncorrectKeyException", m),
            InvalidAliasName(m) => ("InvalidAliasNameException", m),
            InvalidArn(m) => ("InvalidArnException", m),
            InvalidCiphertext(m) => ("InvalidCiphertextException", m),
            InvalidGrantId(m) => ("InvalidGrantIdException", m),
            InvalidGrantToken(m) => ("InvalidGrantTokenException", m),
            InvalidKeyUsage(m) => ("InvalidKeyUsageException", m),
            InvalidMarker(m) => ("InvalidMarkerException", m),
            InvalidSignature(m) => ("InvalidSignatureException", m),
            KeyUnavailable(m) => ("KeyUnavailableException", m),
            KmsInternal(m) => ("KMSInternalException", m),
            KmsInvalidState(m) => ("KMSInvalidStateException", m),
            KmsInvalidSignature(m) => ("KMSInvalidSignatureException", m),
            KmsInvalidMac(m) => ("KMSInvalidMacException", m),
            LimitExceeded(m) => ("LimitExceededException", m),
            MalformedPolicyDocument(m) => ("MalformedPolicyDocumentException", m),
            MissingAuthenticationToken(m) => ("MissingAuthenticationTokenException", m),
            NotAuthorized(m) => ("NotAuthorizedException", m),
            NotFound(m) => ("NotFoundException", m),
            RequestEntityTooLarge(m) => ("RequestEntityTooLargeException", m),
            RequestTimeout(m) => ("RequestTimeoutException", m),
            Serialization(m) => ("SerializationException", m),
            Tag(m) => ("TagException", m),
            Throttling(m) => ("ThrottlingException", m),
            UnknownOperation(m) => ("UnknownOperationException", m),
            UnrecognizedClient(m) => ("UnrecognizedClientException", m),
            UnsupportedOperation(m) => ("UnsupportedOperationException", m),
            Validation(m) => ("ValidationException", m),
        }
    }

    /// The AWS wire name, sent as `__type` and `X-Amzn-ErrorType`.
    pub fn code(&self) -> &'static str {
        self.parts().0
    }

    /// The AWS message (possibly empty, as AWS sends for some exceptions).
    pub fn message(&self) -> &str {
        self.parts().1
    }

    /// AWS's `ValidationException` for model-constraint violations of one
    /// parameter, e.g. `1 validation error detected: Value 'x' at 'aliasName'
    /// failed to satisfy constraint: Member must have length less than or equal
    /// to 256`. Pass `value: None` for sensitive parameters: AWS then leaves the
    /// value out (`Value at 'plaintext' failed ...`).
    pub fn constraint_violation(param: &str, value: Option<&str>, constraints: &[&str]) -> Self {
        let subject = match value {
            Some(v) => format!("Value '{v}' at '{param}'"),
            None => format!("Value at '{param}'"),
        };
        let details: Vec<String> = constraints
            .iter()
            .map(|c| format!("{subject} failed to satisfy constraint: {c}"))
            .collect();
        let count = match details.len() {
            1 => "1 validation error".to_string(),
            n => format!("{n} validation errors"),
        };
        KmsError::Validation(format!("{count} detected: {}", details.join("; ")))
    }

    /// The message a remote caller is sent. The server-side exceptions carry internal
    /// details (member names, PKCS#11 return codes, store errors) that belong in the
    /// operator's log and the audit trail only: their callers get AWS's generic text and the
    /// request id to quote instead.
    pub fn wire_message(&self, request_id: &str) -> Cow<'_, str> {
        match self.generic_text() {
            Some(generic) => Cow::Owned(format!("{generic} (Request ID: {request_id})")),
            None => Cow::Borrowed(self.message()),
        }
    }

    /// Whether [`KmsError::wire_message`] hides this error's own message from the caller.
    pub fn is_internal(&self) -> bool {
        self.generic_text().is_some()
    }

    /// AWS's documented text for the server-side exceptions.
    fn generic_text(&self) -> Option<&'static str> {
        match self {
            KmsError::KmsInternal(_) => Some(
                "The request was rejected because an internal exception occurred. The request can be retried.",
            ),
            KmsError::KeyUnavailable(_) => Some(
                "The request was rejected because the specified KMS key was not available. You can retry the request.",
            ),
            KmsError::DependencyTimeout(_) => Some(
                "The system timed out while trying to fulfill the request. You can retry the request.",
            ),
            _ => None,
        }
    }

    /// The HTTP status AWS answers with: 500 for the three server-side
    /// (retryable) exceptions, 413 and 408 for a body too large or too slow, 400 for
    /// everything else.
    pub fn http_status(&self) -> u16 {
        match self {
            KmsError::KmsInternal(_)
            | KmsError::DependencyTimeout(_)
            | KmsError::KeyUnavailable(_) => 500,
            KmsError::RequestEntityTooLarge(_) => 413,
            KmsError::RequestTimeout(_) => 408,
            KmsError::DryRunOperation(_) => 412,
            _ => 400,
        }
    }
}

impl fmt::Display for KmsError {
    /// The message, or the code when AWS sends no message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, message) = self.parts();
        if message.is_empty() {
            f.write_str(code)
        } else {
            f.write_str(message)
        }
    }
}

impl std::error::Error for KmsError {}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    /// Every variant with the code and status AWS uses for it. The exhaustive
    /// `match` in `covers` fails to compile when a variant is added without a row.
    fn table() -> Vec<(KmsError, &'static str, u16)> {
        let m = || "m".to_string();
        use KmsError::*;
        vec![
            (AccessDenied(m()), "AccessDeniedException", 400),
            (AlreadyExists(m()), "AlreadyExistsException", 400),
            (
                CloudHsmClusterInvalidConfiguration(m()),
                "CloudHsmClusterInvalidConfigurationException",
                400,
            ),
            (
                CloudHsmClusterInUse(m()),
                "CloudHsmClusterInUseException",
                400,
            ),
            (
                CloudHsmClusterNotFound(m()),
                "CloudHsmClusterNotFoundException",
                400,
            ),
            (Conflict(m()), "ConflictException", 400),
            (
                CustomKeyStoreHasCmks(m()),
                "CustomKeyStoreHasCMKsException",
                400,
            ),
            (
                CustomKeyStoreInvalidState(m()),
                "CustomKeyStoreInvalidStateException",
                400,
            ),
            (
                CustomKeyStoreNameInUse(m()),
                "CustomKeyStoreNameInUseException",
                400,
            ),
            (
                CustomKeyStoreNotFound(m()),
                "CustomKeyStoreNotFoundException",
                400,
            ),
            (DependencyTimeout(m()), "DependencyTimeoutException", 500),
            (Disabled(m()), "DisabledException", 400),
            (DryRunOperation(m()), "DryRunOperationException", 412),
            (ExpiredImportToken(m()), "ExpiredImportTokenException", 400),
            (
                IncorrectKeyMaterial(m()),
                "IncorrectKeyMaterialException",
                400,
            ),
            (InvalidImportToken(m()), "InvalidImportTokenException", 400),
            (
                IncompleteSignature(m()),
                "IncompleteSignatureException",
                400,
            ),
            (IncorrectKey(m()), "IncorrectKeyException", 400),
            (InvalidAliasName(m()), "InvalidAliasNameException", 400),
            (InvalidArn(m()), "InvalidArnException", 400),
            (InvalidCiphertext(m()), "InvalidCiphertextException", 400),
            (InvalidGrantId(m()), "InvalidGrantIdException", 400),
            (InvalidGrantToken(m()), "InvalidGrantTokenException", 400),
            (InvalidKeyUsage(m()), "InvalidKeyUsageException", 400),
            (InvalidMarker(m()), "InvalidMarkerException", 400),
            (InvalidSignature(m()), "InvalidSignatureException", 400),
            (KeyUnavailable(m()), "KeyUnavailableException", 500),
            (KmsInternal(m()), "KMSInternalException", 500),
            (KmsInvalidState(m()), "KMSInvalidStateException", 400),
            (
                KmsInvalidSignature(m()),
                "KMSInvalidSignatureException",
                400,
            ),
            (KmsInvalidMac(m()), "KMSInvalidMacException", 400),
            (LimitExceeded(m()), "LimitExceededException", 400),
            (
                MalformedPolicyDocument(m()),
                "MalformedPolicyDocumentException",
                400,
            ),
            (
                MissingAuthenticationToken(m()),
                "MissingAuthenticationTokenException",
                400,
            ),
            (NotAuthorized(m()), "NotAuthorizedException", 400),
            (NotFound(m()), "NotFoundException", 400),
            (
                RequestEntityTooLarge(m()),
                "RequestEntityTooLargeException",
                413,
            ),
            (RequestTimeout(m()), "RequestTimeoutException", 408),
            (Serialization(m()), "SerializationException", 400),
            (Tag(m()), "TagException", 400),
            (Throttling(m()), "ThrottlingException", 400),
            (UnknownOperation(m()), "UnknownOperationException", 400),
            (UnrecognizedClient(m()), "UnrecognizedClientException", 400),
            (
                UnsupportedOperation(m()),
                "UnsupportedOperationException",
                400,
            ),
            (Validation(m()), "ValidationException", 400),
        ]
    }

    /// Compile-time completeness check for [`table`]: one arm per variant, no wildcard.
    fn covers(e: &KmsError) -> usize {
        use KmsError::*;
        match e {
            AccessDenied(_) => 0,
            AlreadyExists(_) => 1,
            CloudHsmClusterInvalidConfiguration(_) => 2,
            Conflict(_) => 3,
            CustomKeyStoreHasCmks(_) => 4,
            CustomKeyStoreInvalidState(_) => 5,
            CustomKeyStoreNameInUse(_) => 6,
            CustomKeyStoreNotFound(_) => 7,
            DependencyTimeout(_) => 8,
            Disabled(_) => 9,
            IncorrectKey(_) => 10,
            InvalidAliasName(_) => 11,
            InvalidArn(_) => 12,
            InvalidCiphertext(_) => 13,
            InvalidGrantId(_) => 14,
            InvalidGrantToken(_) => 15,
            InvalidKeyUsage(_) => 16,
            InvalidMarker(_) => 17,
            InvalidSignature(_) => 18,
            KeyUnavailable(_) => 19,
            KmsInternal(_) => 20,
            KmsInvalidState(_) => 21,
            LimitExceeded(_) => 22,
            MalformedPolicyDocument(_) => 23,
            NotAuthorized(_) => 24,
            NotFound(_) => 25,
            Serialization(_) => 26,
            Tag(_) => 27,
            Throttling(_) => 28,
            UnknownOperation(_) => 29,
            UnrecognizedClient(_) => 30,
            UnsupportedOperation(_) => 31,
            Validation(_) => 32,
            IncompleteSignature(_) => 33,
            MissingAuthenticationToken(_) => 34,
            CloudHsmClusterInUse(_) => 35,
            CloudHsmClusterNotFound(_) => 36,
            RequestEntityTooLarge(_) => 37,
            RequestTimeout(_) => 38,
            DryRunOperation(_) => 39,
            KmsInvalidSignature(_) => 40,
            KmsInvalidMac(_) => 41,
            ExpiredImportToken(_) => 42,
            IncorrectKeyMaterial(_) => 43,
            InvalidImportToken(_) => 44,
        }
    }

    #[test]
    fn every_variant_maps_to_its_aws_code_and_status() {
        let rows = table();
        let mut seen = vec![false; rows.len()];
        for (err, code, status) in &rows {
            assert_eq!(err.code(), *code, "{err:?}");
            assert_eq!(err.http_status(), *status, "{err:?}");
            assert_eq!(err.message(), "m");
            let i = covers(err);
            assert!(!seen[i], "variant listed twice: {err:?}");
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s), "a variant has no row");
    }

    #[test]
    fn codes_are_unique_and_match_the_aws_spelling() {
        let rows = table();
        let mut codes: Vec<_> = rows.iter().map(|(e, _, _)| e.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), rows.len());
        for code in codes {
            assert!(code.ends_with("Exception"), "{code}");
        }
    }

    #[test]
    fn constraint_violations_use_the_aws_wording() {
        let e = KmsError::constraint_violation(
            "aliasName",
            Some("x"),
            &["Member must have length less than or equal to 256"],
        );
        assert_eq!(e.code(), "ValidationException");
        assert_eq!(
            e.message(),
            "1 validation error detected: Value 'x' at 'aliasName' failed to satisfy \
             constraint: Member must have length less than or equal to 256"
        );
        let e = KmsError::constraint_violation("plaintext", None, &["A", "B"]);
        assert_eq!(
            e.message(),
            "2 validation errors detected: Value at 'plaintext' failed to satisfy \
             constraint: A; Value at 'plaintext' failed to satisfy constraint: B"
        );
    }

    #[test]
    fn callers_of_server_side_failures_get_the_generic_text_and_the_request_id() {
        let detail = "member hsm-a: C_EncryptInit failed: CKR_DEVICE_ERROR; store: io error";
        for error in [
            KmsError::KmsInternal(detail.into()),
            KmsError::KeyUnavailable(detail.into()),
            KmsError::DependencyTimeout(detail.into()),
        ] {
            let message = error.wire_message("req-1");
            assert!(error.is_internal());
            assert!(!message.contains("hsm-a"), "{message}");
            assert!(!message.contains("CKR_"), "{message}");
            assert!(!message.contains("store"), "{message}");
            assert!(message.ends_with("(Request ID: req-1)"), "{message}");
        }
        let client = KmsError::Disabled("arn:aws:kms:r:1:key/k is disabled.".into());
        assert!(!client.is_internal());
        assert_eq!(client.wire_message("req-1"), client.message());
    }

    #[test]
    fn display_is_the_message_or_the_code_when_empty() {
        let e = KmsError::Disabled("arn:aws:kms:r:1:key/k is disabled.".into());
        assert_eq!(e.to_string(), "arn:aws:kms:r:1:key/k is disabled.");
        let e = KmsError::InvalidCiphertext(String::new());
        assert_eq!(e.to_string(), "InvalidCiphertextException");
        assert_eq!(e.message(), "");
    }
}
