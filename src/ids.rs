//! Identifiers of keys and aliases, and the parsing of user input that names
//! a key, with AWS's exact exceptions and messages.
//!
//! This module owns [`KeyId`], [`AliasName`], the ARNs built from a [`Scope`]
//! (region and account from config), and [`KeyRef`]: what a caller passed as
//! `KeyId`. It checks syntax and scope only; it never looks anything up, so
//! "well-formed but unknown" is decided by the store (with the messages from
//! [`KeyRef::not_found`] and [`Scope::key_not_found`]).
//!
//! Choices where AWS is not documented (from AWS's observed answers, as
//! reproduced by moto and LocalStack):
//! - a key id that is neither a canonical lowercase UUID nor a multi-Region key id
//!   (`mrk-` and 32 lowercase hex digits) is `NotFoundException` "Invalid keyId X";
//! - an ARN for another region is `NotFoundException` "Invalid arn REGION";
//!   for another account it names a key or alias that does not exist here;
//!   an ARN that is not a KMS key or alias ARN is `InvalidArnException`;
//! - alias names break the rules with `ValidationException` (AWS's model
//!   checks, `Alias must start with the prefix "alias/"...`, and "... contains
//!   invalid characters for an alias" for `:`, which the model pattern allows
//!   but the service refuses); `InvalidAliasNameException` is left for
//!   `alias/` with nothing after it;
//! - where only a key id or key ARN is accepted, an alias name is
//!   `NotFoundException` "Invalid keyId alias/x" and an alias ARN is
//!   `InvalidArnException` "Key Aliases are not supported for this operation.".

use std::fmt;

use uuid::Uuid;

use crate::error::KmsError;

/// Longest `KeyId` parameter AWS accepts (`KeyIdType`).
const KEY_ID_PARAM_MAX: usize = 2048;
/// Longest alias name AWS accepts (`AliasNameType`).
const ALIAS_NAME_MAX: usize = 256;
/// The prefix every alias name starts with.
const ALIAS_PREFIX: &str = "alias/";
/// The alias namespace AWS keeps for AWS managed keys.
const RESERVED_ALIAS_PREFIX: &str = "alias/aws/";
/// AWS's documentation link in the "missing prefix" message.
const ALIAS_DOC_URL: &str = "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html";

/// The prefix of every multi-Region key id.
pub const MULTI_REGION_PREFIX: &str = "mrk-";

/// A key id: a UUID, always shown in canonical lowercase hyphenated form, or the id of a
/// multi-Region key, `mrk-` and the same 16 bytes as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct KeyId {
    bytes: [u8; 16],
    multi_region: bool,
}

impl KeyId {
    /// A fresh random (v4) key id.
    pub fn new_random() -> Self {
        KeyId::from_bytes(*Uuid::new_v4().as_bytes())
    }

    /// A fresh random multi-Region key id (`mrk-` and 32 hex digits).
    pub fn new_multi_region() -> Self {
        KeyId::multi_region_from_bytes(*Uuid::new_v4().as_bytes())
    }

    /// Parses the canonical form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lowercase hex) or
    /// `mrk-` and 32 lowercase hex digits; anything else is `NotFoundException`
    /// "Invalid keyId X".
    pub fn parse(s: &str) -> Result<Self, KmsError> {
        if let Some(hex_digits) = s.strip_prefix(MULTI_REGION_PREFIX) {
            return lowercase_hex_bytes(hex_digits.as_bytes(), &MULTI_REGION_DIGITS)
                .map(KeyId::multi_region_from_bytes)
                .ok_or_else(|| invalid_key_id(s));
        }
        let text = s.as_bytes();
        let hyphens_in_place = text.len() == 36 && UUID_HYPHENS.iter().all(|&at| text[at] == b'-');
        hyphens_in_place
            .then(|| lowercase_hex_bytes(text, &UUID_DIGITS))
            .flatten()
            .map(KeyId::from_bytes)
            .ok_or_else(|| invalid_key_id(s))
    }

    /// The (single-Region) key id whose 16 UUID bytes are `bytes`.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        KeyId {
            bytes,
            multi_region: false,
        }
    }

    /// The multi-Region key id whose 16 bytes are `bytes`.
    pub fn multi_region_from_bytes(bytes: [u8; 16]) -> Self {
        KeyId {
            bytes,
            multi_region: true,
        }
    }

    /// The 16 bytes (big-endian, as written in ciphertext blobs).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.bytes
    }

    /// Whether this is a multi-Region key id (`mrk-...`).
    pub fn is_multi_region(&self) -> bool {
        self.multi_region
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.multi_region {
            write!(f, "{MULTI_REGION_PREFIX}{}", hex::encode(self.bytes))
        } else {
            fmt::Display::fmt(&Uuid::from_bytes(self.bytes).hyphenated(), f)
        }
    }
}

/// Where the canonical UUID form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`) has its hyphens.
const UUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];
/// Where each of a canonical UUID's 16 bytes starts, as two hex digits.
const UUID_DIGITS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
/// Where each byte of a multi-Region key id's 32 hex digits (after `mrk-`) starts.
const MULTI_REGION_DIGITS: [usize; 16] =
    [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];

/// The 16 bytes written as two lowercase hex digits each at `starts` of `text`, when every
/// digit is one and nothing else is left over (the separators at other positions are the
/// caller's to check). One pass: key ids are parsed on every call that names a key.
fn lowercase_hex_bytes(text: &[u8], starts: &[usize; 16]) -> Option<[u8; 16]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != starts[15] + 2 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (byte, &at) in bytes.iter_mut().zip(starts) {
        *byte = digit(text[at])? << 4 | digit(text[at + 1])?;
    }
    Some(bytes)
}

fn invalid_key_id(s: &str) -> KmsError {
    KmsError::NotFound(format!("Invalid keyId {s}"))
}

/// An alias name that satisfies AWS's rules: `alias/` and at least one more
/// character, at most 256 characters of `[a-zA-Z0-9/_-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct AliasName(String);

impl AliasName {
    /// Checks the name rules (not the reserved namespace; see
    /// [`AliasName::parse_for_create`]). Errors, in AWS's order:
    /// model constraints (length 1–256, pattern `^[a-zA-Z0-9:/_-]+$`) and the
    /// missing `alias/` prefix are `ValidationException`, a `:` is
    /// `ValidationException` "X contains invalid characters for an alias",
    /// and a bare `alias/` is `InvalidAliasNameException`.
    pub fn parse(s: &str) -> Result<Self, KmsError> {
        let len = s.chars().count();
        let mut violations = Vec::new();
        if len < 1 {
            violations.push("Member must have length greater than or equal to 1");
        } else if !s.bytes().all(is_alias_pattern_byte) {
            violations.push("Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$");
        }
        if len > ALIAS_NAME_MAX {
            violations.push("Member must have length less than or equal to 256");
        }
        if !violations.is_empty() {
            return Err(KmsError::constraint_violation(
                "aliasName",
                Some(s),
                &violations,
            ));
        }
        let Some(rest) = s.strip_prefix(ALIAS_PREFIX) else {
            return Err(KmsError::Validation(format!(
                "Alias must start with the prefix \"alias/\". Please see {ALIAS_DOC_URL}"
            )));
        };
        if s.contains(':') {
            return Err(KmsError::Validation(format!(
                "{s} contains invalid characters for an alias"
            )));
        }
        if rest.is_empty() {
            return Err(KmsError::InvalidAliasName(format!(
                "Alias name {s} is not valid: a name is needed after the prefix \"alias/\"."
            )));
        }
        Ok(AliasName(s.to_owned()))
    }

    /// [`AliasName::parse`], then refuses the reserved `alias/aws/` namespace
    /// with `NotAuthorizedException` (AWS sends it without a message).
    /// For CreateAlias, UpdateAlias and DeleteAlias.
    pub fn parse_for_create(s: &str) -> Result<Self, KmsError> {
        let name = Self::parse(s)?;
        if name.is_reserved() {
            return Err(KmsError::NotAuthorized(String::new()));
        }
        Ok(name)
    }

    /// True under `alias/aws/`, the namespace of AWS managed keys.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(RESERVED_ALIAS_PREFIX)
    }

    /// The name, `alias/...`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AliasName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_alias_pattern_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-')
}

/// The region and account this key store answers for; every ARN it builds or
/// accepts is in this scope.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Scope {
    region: String,
    account_id: String,
}

impl Scope {
    /// A scope; the region is lowercase letters, digits and single hyphens
    /// (e.g. `eu-west-1`), the account id 12 digits. Otherwise `ValidationException`.
    pub fn new(region: &str, account_id: &str) -> Result<Self, KmsError> {
        if !is_region(region) {
            return Err(KmsError::Validation(format!(
                "Region '{region}' is not valid: use lowercase letters, digits and hyphens, \
                 e.g. us-east-1."
            )));
        }
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(KmsError::Validation(format!(
                "Account id '{account_id}' is not valid: it must be 12 digits."
            )));
        }
        Ok(Scope {
            region: region.to_owned(),
            account_id: account_id.to_owned(),
        })
    }

    /// The region, e.g. `us-east-1`.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The 12-digit account id.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// `arn:aws:kms:REGION:ACCOUNT:key/ID`.
    pub fn key_arn(&self, key_id: KeyId) -> KeyArn {
        KeyArn {
            arn: format!("{}key/{key_id}", self.arn_prefix()),
            key_id,
        }
    }

    /// `arn:aws:kms:REGION:ACCOUNT:alias/NAME`.
    pub fn alias_arn(&self, name: &AliasName) -> AliasArn {
        AliasArn {
            arn: format!("{}{name}", self.arn_prefix()),
            name: name.clone(),
        }
    }

    /// `NotFoundException` "Key 'ARN' does not exist", as AWS says for an
    /// unknown key id.
    pub fn key_not_found(&self, key_id: KeyId) -> KmsError {
        key_does_not_exist(self.key_arn(key_id).as_str())
    }

    /// `NotFoundException` "Alias ARN is not found.", as AWS says for an
    /// unknown alias.
    pub fn alias_not_found(&self, name: &AliasName) -> KmsError {
        alias_is_not_found(self.alias_arn(name).as_str())
    }

    fn arn_prefix(&self) -> String {
        format!("arn:aws:kms:{}:{}:", self.region, self.account_id)
    }
}

fn is_region(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn key_does_not_exist(arn: &str) -> KmsError {
    KmsError::NotFound(format!("Key '{arn}' does not exist"))
}

fn alias_is_not_found(arn: &str) -> KmsError {
    KmsError::NotFound(format!("Alias {arn} is not found."))
}

/// A key ARN in the store's [`Scope`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct KeyArn {
    arn: String,
    key_id: KeyId,
}

impl KeyArn {
    /// The key id the ARN ends with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The full ARN.
    pub fn as_str(&self) -> &str {
        &self.arn
    }
}

impl fmt::Display for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// An alias ARN in the store's [`Scope`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AliasArn {
    arn: String,
    name: AliasName,
}

impl AliasArn {
    /// The alias name, `alias/...`.
    pub fn alias_name(&self) -> &AliasName {
        &self.name
    }

    /// The full ARN.
    pub fn as_str(&self) -> &str {
        &self.arn
    }
}

impl fmt::Display for AliasArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// A key as the caller named it: key id, key ARN, alias name or alias ARN,
/// already checked to be well-formed and in the store's [`Scope`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KeyRef {
    /// `1234abcd-12ab-34cd-56ef-1234567890ab`.
    KeyId(KeyId),
    /// `arn:aws:kms:REGION:ACCOUNT:key/ID`.
    KeyArn(KeyArn),
    /// `alias/NAME`.
    AliasName(AliasName),
    /// `arn:aws:kms:REGION:ACCOUNT:alias/NAME`.
    AliasArn(AliasArn),
}

impl KeyRef {
    /// Parses the `KeyId` request parameter (see [`KeyRef::parse_param`]).
    pub fn parse(input: &str, scope: &Scope) -> Result<Self, KmsError> {
        Self::parse_param("keyId", input, scope)
    }

    /// Parses a key-naming parameter called `param` on the wire (`keyId`,
    /// `targetKeyId`, `destinationKeyId`, ...). Empty or over 2048 characters
    /// is `ValidationException`; anything that cannot name a key or alias in
    /// `scope` is the `NotFoundException` or `InvalidArnException` AWS gives
    /// (see the module documentation).
    pub fn parse_param(param: &str, input: &str, scope: &Scope) -> Result<Self, KmsError> {
        let len = input.chars().count();
        if len < 1 {
            return Err(KmsError::constraint_violation(
                param,
                Some(input),
                &["Member must have length greater than or equal to 1"],
            ));
        }
        if len > KEY_ID_PARAM_MAX {
            return Err(KmsError::constraint_violation(
                param,
                Some(input),
                &["Member must have length less than or equal to 2048"],
            ));
        }
        if input.starts_with("arn:") {
            return parse_arn(input, scope);
        }
        if input.starts_with(ALIAS_PREFIX) {
            return AliasName::parse(input)
                .map(KeyRef::AliasName)
                .map_err(|_| alias_is_not_found(&format!("{}{input}", scope.arn_prefix())));
        }
        KeyId::parse(input).map(KeyRef::KeyId)
    }

    /// The key id, for operations that take only a key id or key ARN
    /// (EnableKey, DisableKey, Schedule/CancelKeyDeletion, rotation, tags,
    /// CreateAlias's target, ...). An alias name is `NotFoundException`
    /// "Invalid keyId alias/x"; an alias ARN is `InvalidArnException`
    /// "Key Aliases are not supported for this operation.".
    pub fn require_key_id_or_arn(&self) -> Result<KeyId, KmsError> {
        match self {
            KeyRef::KeyId(id) => Ok(*id),
            KeyRef::KeyArn(arn) => Ok(arn.key_id()),
            KeyRef::AliasName(name) => Err(invalid_key_id(name.as_str())),
            KeyRef::AliasArn(_) => Err(KmsError::InvalidArn(
                "Key Aliases are not supported for this operation.".to_owned(),
            )),
        }
    }

    /// The `NotFoundException` AWS gives when this reference names nothing:
    /// "Key 'ARN' does not exist" or "Alias ARN is not found.".
    pub fn not_found(&self, scope: &Scope) -> KmsError {
        match self {
            KeyRef::KeyId(id) => scope.key_not_found(*id),
            KeyRef::KeyArn(arn) => key_does_not_exist(arn.as_str()),
            KeyRef::AliasName(name) => scope.alias_not_found(name),
            KeyRef::AliasArn(arn) => alias_is_not_found(arn.as_str()),
        }
    }
}

/// Parses `arn:aws:kms:REGION:ACCOUNT:key/ID` or `...:alias/NAME` in `scope`.
fn parse_arn(input: &str, scope: &Scope) -> Result<KeyRef, KmsError> {
    let invalid = || KmsError::InvalidArn(format!("Invalid arn {input}"));
    let mut parts = input.splitn(6, ':');
    let (Some("arn"), Some("aws"), Some("kms"), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid());
    };
    if region.is_empty() || account.is_empty() {
        return Err(invalid());
    }
    if region != scope.region() {
        return Err(KmsError::NotFound(format!("Invalid arn {region}")));
    }
    if let Some(id) = resource.strip_prefix("key/") {
        let key_id = KeyId::parse(id)?;
        if account != scope.account_id() {
            return Err(key_does_not_exist(input));
        }
        return Ok(KeyRef::KeyArn(scope.key_arn(key_id)));
    }
    if resource.starts_with(ALIAS_PREFIX) {
        let name = AliasName::parse(resource).map_err(|_| alias_is_not_found(input))?;
        if account != scope.account_id() {
            return Err(alias_is_not_found(input));
        }
        return Ok(KeyRef::AliasArn(scope.alias_arn(&name)));
    }
    Err(invalid())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    fn scope() -> Scope {
        Scope::new("us-east-1", "111122223333").unwrap()
    }

    fn err<T: fmt::Debug>(r: Result<T, KmsError>) -> (&'static str, String) {
        let e = r.unwrap_err();
        (e.code(), e.message().to_owned())
    }

    #[test]
    fn key_id_round_trips_canonical_form_and_bytes() {
        let id = KeyId::parse(ID).unwrap();
        assert_eq!(id.to_string(), ID);
        assert_eq!(KeyId::from_bytes(*id.as_bytes()), id);
        assert_eq!(
            id.as_bytes(),
            &[
                0x12, 0x34, 0xab, 0xcd, 0x12, 0xab, 0x34, 0xcd, 0x56, 0xef, 0x12, 0x34, 0x56, 0x78,
                0x90, 0xab
            ]
        );
        let fresh = KeyId::new_random();
        assert_eq!(KeyId::parse(&fresh.to_string()).unwrap(), fresh);
        assert_ne!(KeyId::new_random(), fresh);
    }

    #[test]
    fn multi_region_key_ids_round_trip_and_differ_from_uuids_with_the_same_bytes() {
        let mrk = KeyId::parse("mrk-1234abcd12ab34cd56ef1234567890ab").unwrap();
        assert!(mrk.is_multi_region());
        assert_eq!(mrk.to_string(), "mrk-1234abcd12ab34cd56ef1234567890ab");
        assert_eq!(mrk.as_bytes(), KeyId::parse(ID).unwrap().as_bytes());
        assert_ne!(mrk, KeyId::parse(ID).unwrap());
        assert!(!KeyId::parse(ID).unwrap().is_multi_region());
        let fresh = KeyId::new_multi_region();
        assert_eq!(KeyId::parse(&fresh.to_string()).unwrap(), fresh);
        assert_eq!(fresh.to_string().len(), 36);
    }

    #[test]
    fn key_ids_parse_to_the_bytes_the_uuid_crate_reads() {
        for _ in 0..1000 {
            let uuid = Uuid::new_v4();
            let text = uuid.hyphenated().to_string();
            assert_eq!(KeyId::parse(&text).unwrap().as_bytes(), uuid.as_bytes());
            let mrk = format!("{MULTI_REGION_PREFIX}{}", uuid.simple());
            assert_eq!(KeyId::parse(&mrk).unwrap().as_bytes(), uuid.as_bytes());
        }
    }

    #[test]
    fn key_id_rejects_every_non_canonical_form() {
        for bad in [
            "",
            "x",
            "1234ABCD-12AB-34CD-56EF-1234567890AB",
            "1234abcd12ab34cd56ef1234567890ab",
            "{1234abcd-12ab-34cd-56ef-1234567890ab}",
            "urn:uuid:1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234ABCD12AB34CD56EF1234567890AB",
            "mrk-1234abcd12ab34cd56ef1234567890a",
            "mrk-1234abcd-12ab-34cd-56ef-1234567890ab",
            "MRK-1234abcd12ab34cd56ef1234567890ab",
            "1234abcd-12ab-34cd-56ef-1234567890a",
            "1234abcd-12ab-34cd-56ef-1234567890abc",
            "1234abcd_12ab-34cd-56ef-1234567890ab",
            "1234abcg-12ab-34cd-56ef-1234567890ab",
            " 1234abcd-12ab-34cd-56ef-1234567890a",
            "1234abcd-12ab-34cd-56ef-12345678-0ab",
            "1234abcd-12ab-34cd-56eé-1234567890a",
            "mrk-1234abcd12ab34cd56ef1234567890-b",
            "mrk-1234abcd12ab34cd56ef1234567890é",
        ] {
            assert_eq!(
                err(KeyId::parse(bad)),
                ("NotFoundException", format!("Invalid keyId {bad}")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn alias_names_that_follow_the_rules_are_accepted() {
        for ok in [
            "alias/a",
            "alias/my-alias_/",
            "alias/Example/Key-1_2",
            "alias/aws",
            "alias/awsome",
        ] {
            assert_eq!(AliasName::parse_for_create(ok).unwrap().as_str(), ok);
        }
        let longest = format!("alias/{}", "a".repeat(250));
        assert_eq!(longest.len(), 256);
        assert!(AliasName::parse(&longest).is_ok());
    }

    #[test]
    fn alias_name_errors_match_aws() {
        let pattern = "^[a-zA-Z0-9:/_-]+$";
        let cases: Vec<(String, &str, String)> = vec![
            (
                String::new(),
                "ValidationException",
                "1 validation error detected: Value '' at 'aliasName' failed to satisfy \
                 constraint: Member must have length greater than or equal to 1"
                    .into(),
            ),
            (
                "alias/a b".into(),
                "ValidationException",
                format!(
                    "1 validation error detected: Value 'alias/a b' at 'aliasName' failed to \
                     satisfy constraint: Member must satisfy regular expression pattern: {pattern}"
                ),
            ),
            (
                "alias/é".into(),
                "ValidationException",
                format!(
                    "1 validation error detected: Value 'alias/é' at 'aliasName' failed to \
                     satisfy constraint: Member must satisfy regular expression pattern: {pattern}"
                ),
            ),
            (
                "my-alias".into(),
                "ValidationException",
                "Alias must start with the prefix \"alias/\". Please see \
                 https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
                    .into(),
            ),
            (
                "Alias/x".into(),
                "ValidationException",
                "Alias must start with the prefix \"alias/\". Please see \
                 https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
                    .into(),
            ),
            (
                "alias/my:alias".into(),
                "ValidationException",
                "alias/my:alias contains invalid characters for an alias".into(),
            ),
            (
                "alias/".into(),
                "InvalidAliasNameException",
                "Alias name alias/ is not valid: a name is needed after the prefix \"alias/\"."
                    .into(),
            ),
        ];
        for (name, code, message) in cases {
            assert_eq!(err(AliasName::parse(&name)), (code, message), "{name:?}");
        }
    }

    #[test]
    fn alias_name_over_256_characters_is_a_length_violation() {
        let long = format!("alias/{}", "a".repeat(251));
        assert_eq!(
            err(AliasName::parse(&long)),
            (
                "ValidationException",
                format!(
                    "1 validation error detected: Value '{long}' at 'aliasName' failed to \
                     satisfy constraint: Member must have length less than or equal to 256"
                )
            )
        );
        let long_and_bad = format!("alias/{}.", "a".repeat(251));
        let (code, message) = err(AliasName::parse(&long_and_bad));
        assert_eq!(code, "ValidationException");
        assert!(
            message.starts_with("2 validation errors detected: "),
            "{message}"
        );
    }

    #[test]
    fn reserved_alias_namespace_is_not_authorized_on_create_only() {
        let name = "alias/aws/ebs";
        assert!(AliasName::parse(name).unwrap().is_reserved());
        assert_eq!(
            err(AliasName::parse_for_create(name)),
            ("NotAuthorizedException", String::new())
        );
        assert!(!AliasName::parse("alias/aws").unwrap().is_reserved());
    }

    #[test]
    fn scope_validates_region_and_account() {
        let s = scope();
        assert_eq!((s.region(), s.account_id()), ("us-east-1", "111122223333"));
        for (region, account) in [
            ("", "111122223333"),
            ("US-EAST-1", "111122223333"),
            ("us:east-1", "111122223333"),
            ("-us-east-1", "111122223333"),
            ("us-east-1-", "111122223333"),
            ("us--east-1", "111122223333"),
            ("us-east-1", "11112222333"),
            ("us-east-1", "1111222233334"),
            ("us-east-1", "11112222333a"),
        ] {
            assert_eq!(
                Scope::new(region, account).unwrap_err().code(),
                "ValidationException",
                "{region} {account}"
            );
        }
    }

    #[test]
    fn scope_builds_arns() {
        let s = scope();
        let id = KeyId::parse(ID).unwrap();
        let arn = s.key_arn(id);
        assert_eq!(
            arn.as_str(),
            format!("arn:aws:kms:us-east-1:111122223333:key/{ID}")
        );
        assert_eq!(arn.to_string(), arn.as_str());
        assert_eq!(arn.key_id(), id);
        let name = AliasName::parse("alias/app").unwrap();
        let alias_arn = s.alias_arn(&name);
        assert_eq!(
            alias_arn.as_str(),
            "arn:aws:kms:us-east-1:111122223333:alias/app"
        );
        assert_eq!(alias_arn.alias_name(), &name);
        assert_eq!(
            err::<()>(Err(s.key_not_found(id))),
            (
                "NotFoundException",
                format!("Key 'arn:aws:kms:us-east-1:111122223333:key/{ID}' does not exist")
            )
        );
        assert_eq!(
            err::<()>(Err(s.alias_not_found(&name))),
            (
                "NotFoundException",
                "Alias arn:aws:kms:us-east-1:111122223333:alias/app is not found.".into()
            )
        );
    }

    #[test]
    fn key_ref_parses_the_four_forms() {
        let s = scope();
        let id = KeyId::parse(ID).unwrap();
        let name = AliasName::parse("alias/app").unwrap();
        assert_eq!(KeyRef::parse(ID, &s).unwrap(), KeyRef::KeyId(id));
        assert_eq!(
            KeyRef::parse(&format!("arn:aws:kms:us-east-1:111122223333:key/{ID}"), &s).unwrap(),
            KeyRef::KeyArn(s.key_arn(id))
        );
        assert_eq!(
            KeyRef::parse("alias/app", &s).unwrap(),
            KeyRef::AliasName(name.clone())
        );
        assert_eq!(
            KeyRef::parse("arn:aws:kms:us-east-1:111122223333:alias/app", &s).unwrap(),
            KeyRef::AliasArn(s.alias_arn(&name))
        );
        // Lookups may name the reserved namespace; only creation refuses it.
        assert!(matches!(
            KeyRef::parse("alias/aws/ebs", &s).unwrap(),
            KeyRef::AliasName(_)
        ));
    }

    #[test]
    fn key_ref_errors_match_aws() {
        let s = scope();
        let p = "arn:aws:kms:us-east-1:111122223333:";
        let cases: Vec<(String, &str, String)> =
            vec![
            (
                String::new(),
                "ValidationException",
                "1 validation error detected: Value '' at 'keyId' failed to satisfy constraint: \
                 Member must have length greater than or equal to 1"
                    .into(),
            ),
            ("foo".into(), "NotFoundException", "Invalid keyId foo".into()),
            (
                ID.to_uppercase(),
                "NotFoundException",
                format!("Invalid keyId {}", ID.to_uppercase()),
            ),
            (
                "alias/no such".into(),
                "NotFoundException",
                format!("Alias {p}alias/no such is not found."),
            ),
            (
                "alias/".into(),
                "NotFoundException",
                format!("Alias {p}alias/ is not found."),
            ),
            (
                format!("{p}key/not-a-uuid"),
                "NotFoundException",
                "Invalid keyId not-a-uuid".into(),
            ),
            (
                format!("{p}alias/a:b"),
                "NotFoundException",
                format!("Alias {p}alias/a:b is not found."),
            ),
            (
                format!("arn:aws:kms:us-west-2:111122223333:key/{ID}"),
                "NotFoundException",
                "Invalid arn us-west-2".into(),
            ),
            (
                "arn:aws:kms:us-west-2:111122223333:alias/app".into(),
                "NotFoundException",
                "Invalid arn us-west-2".into(),
            ),
            (
                format!("arn:aws:kms:us-east-1:444455556666:key/{ID}"),
                "NotFoundException",
                format!("Key 'arn:aws:kms:us-east-1:444455556666:key/{ID}' does not exist"),
            ),
            (
                "arn:aws:kms:us-east-1:444455556666:alias/app".into(),
                "NotFoundException",
                "Alias arn:aws:kms:us-east-1:444455556666:alias/app is not found.".into(),
            ),
        ];
        for (input, code, message) in cases {
            assert_eq!(err(KeyRef::parse(&input, &s)), (code, message), "{input:?}");
        }
        for malformed in [
            "arn:".to_string(),
            "arn:aws:kms".into(),
            "arn:aws:kms:us-east-1:111122223333".into(),
            format!("arn:aws-cn:kms:us-east-1:111122223333:key/{ID}"),
            format!("arn:aws:s3:us-east-1:111122223333:key/{ID}"),
            format!("arn:aws:kms::111122223333:key/{ID}"),
            format!("arn:aws:kms:us-east-1::key/{ID}"),
            format!("arn:aws:kms:us-east-1:111122223333:grant/{ID}"),
            format!("arn:aws:kms:us-east-1:111122223333:{ID}"),
        ] {
            assert_eq!(
                err(KeyRef::parse(&malformed, &s)),
                ("InvalidArnException", format!("Invalid arn {malformed}")),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn key_ref_length_limit_is_2048_characters() {
        let s = scope();
        let at_limit = "x".repeat(2048);
        assert_eq!(err(KeyRef::parse(&at_limit, &s)).0, "NotFoundException");
        let over = "x".repeat(2049);
        assert_eq!(
            err(KeyRef::parse_param("targetKeyId", &over, &s)),
            (
                "ValidationException",
                format!(
                    "1 validation error detected: Value '{over}' at 'targetKeyId' failed to \
                     satisfy constraint: Member must have length less than or equal to 2048"
                )
            )
        );
    }

    #[test]
    fn management_operations_take_only_key_id_or_key_arn() {
        let s = scope();
        let id = KeyId::parse(ID).unwrap();
        let by_id = KeyRef::parse(ID, &s).unwrap();
        let by_arn = KeyRef::parse(s.key_arn(id).as_str(), &s).unwrap();
        assert_eq!(by_id.require_key_id_or_arn().unwrap(), id);
        assert_eq!(by_arn.require_key_id_or_arn().unwrap(), id);
        assert_eq!(
            err(KeyRef::parse("alias/app", &s)
                .unwrap()
                .require_key_id_or_arn()),
            ("NotFoundException", "Invalid keyId alias/app".into())
        );
        assert_eq!(
            err(
                KeyRef::parse("arn:aws:kms:us-east-1:111122223333:alias/app", &s)
                    .unwrap()
                    .require_key_id_or_arn()
            ),
            (
                "InvalidArnException",
                "Key Aliases are not supported for this operation.".into()
            )
        );
    }

    #[test]
    fn not_found_names_the_full_arn() {
        let s = scope();
        let p = "arn:aws:kms:us-east-1:111122223333:";
        let key_msg = format!("Key '{p}key/{ID}' does not exist");
        let alias_msg = format!("Alias {p}alias/app is not found.");
        for (input, message) in [
            (ID.to_string(), &key_msg),
            (format!("{p}key/{ID}"), &key_msg),
            ("alias/app".to_string(), &alias_msg),
            (format!("{p}alias/app"), &alias_msg),
        ] {
            let e = KeyRef::parse(&input, &s).unwrap().not_found(&s);
            assert_eq!(
                (e.code(), e.message()),
                ("NotFoundException", message.as_str())
            );
        }
    }
}
