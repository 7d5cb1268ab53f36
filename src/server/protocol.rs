//! The AWS KMS JSON 1.1 protocol: `X-Amz-Target: TrentService.<Operation>` picks the
//! operation, the JSON body becomes its request (required members checked as the API model
//! has them), and the result becomes a JSON body or an error in AWS's shape
//! (`{"__type": Code, "message": ...}` with `X-Amzn-ErrorType`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use std::fmt;
use zeroize::Zeroizing;

use crate::caller::Caller;
use crate::error::KmsError;
use crate::keys::state::Operation;
use crate::keystore::KeyStore;
use crate::keystore::api::*;

/// The `X-Amz-Target` prefix of AWS KMS.
pub const TARGET_PREFIX: &str = "TrentService.";

/// The operation an `X-Amz-Target` names, if any. The endpoint serves every
/// [`Operation`]: [`dispatch`] has one arm per variant.
pub fn operation(target: &str) -> Option<Operation> {
    Operation::from_name(target.strip_prefix(TARGET_PREFIX)?)
}

/// Overwrites every string of a JSON value: a request or an answer may carry a plaintext
/// or a data key in base64.
pub fn scrub(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(text) => zeroize::Zeroize::zeroize(text),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => map.values_mut().for_each(scrub),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A JSON response body; zeroized when dropped, since some carry a plaintext or data key.
pub type ResponseBody = Zeroizing<Vec<u8>>;

/// Runs the operation `target` names (`TrentService.<Operation>`) with the JSON `body`;
/// an unknown target is `UnknownOperationException`. See [`run`].
pub fn dispatch(
    store: &KeyStore,
    caller: &Caller,
    target: &str,
    body: &[u8],
) -> Result<ResponseBody, KmsError> {
    let operation =
        self::operation(target).ok_or_else(|| KmsError::UnknownOperation(String::new()))?;
    run(store, caller, operation, body)
}

/// Runs `operation` with the JSON `body`; returns the response body. A body that does not
/// parse is refused before the key store sees it, and recorded in the audit trail as a
/// refused call of the operation.
pub fn run(
    store: &KeyStore,
    caller: &Caller,
    operation: Operation,
    body: &[u8],
) -> Result<ResponseBody, KmsError> {
    let request = Request {
        store,
        caller,
        operation: operation.as_str(),
        body,
    };
    use Operation as Op;
    match operation {
        Op::CreateKey => request.call(&[], |r: CreateKeyRequest| store.create_key(caller, r)),
        Op::DescribeKey => {
            request.call(&["KeyId"], |r: KeyIdRequest| store.describe_key(caller, r))
        }
        Op::ListKeys => request.call(&[], |r: ListRequest| store.list_keys(caller, r)),
        Op::EnableKey => request.empty(&["KeyId"], |r: KeyIdRequest| store.enable_key(caller, r)),
        Op::DisableKey => request.empty(&["KeyId"], |r: KeyIdRequest| store.disable_key(caller, r)),
        Op::ScheduleKeyDeletion => {
            request.call(&["KeyId"], |r| store.schedule_key_deletion(caller, r))
        }
        Op::CancelKeyDeletion => request.call(&["KeyId"], |r| store.cancel_key_deletion(caller, r)),
        Op::UpdateKeyDescription => request.empty(&["KeyId", "Description"], |r| {
            store.update_key_description(caller, r)
        }),
        Op::TagResource => request.empty(&["KeyId", "Tags"], |r| store.tag_resource(caller, r)),
        Op::UntagResource => {
            request.empty(&["KeyId", "TagKeys"], |r| store.untag_resource(caller, r))
        }
        Op::ListResourceTags => request.call(&["KeyId"], |r| store.list_resource_tags(caller, r)),
        Op::CreateAlias => request.empty(&["AliasName", "TargetKeyId"], |r| {
            store.create_alias(caller, r)
        }),
        Op::UpdateAlias => request.empty(&["AliasName", "TargetKeyId"], |r| {
            store.update_alias(caller, r)
        }),
        Op::DeleteAlias => request.empty(&["AliasName"], |r: AliasRequest| {
            store.delete_alias(caller, &r.alias_name)
        }),
        Op::ListAliases => request.call(&[], |r| store.list_aliases(caller, r)),
        Op::Encrypt => request.call(&["KeyId", "Plaintext"], |r| store.encrypt(caller, r)),
        Op::Decrypt => request.call(&["CiphertextBlob"], |r| store.decrypt(caller, r)),
        Op::ReEncrypt => request.call(&["CiphertextBlob", "DestinationKeyId"], |r| {
            store.re_encrypt(caller, r)
        }),
        Op::GenerateDataKey => request.call(&["KeyId"], |r| store.generate_data_key(caller, r)),
        Op::GenerateDataKeyWithoutPlaintext => request.call(&["KeyId"], |r| {
            store.generate_data_key_without_plaintext(caller, r)
        }),
        Op::GenerateRandom => request.call(&[], |r| store.generate_random(caller, r)),
        Op::EnableKeyRotation => {
            request.empty(&["KeyId"], |r| store.enable_key_rotation(caller, r))
        }
        Op::DisableKeyRotation => {
            request.empty(&["KeyId"], |r| store.disable_key_rotation(caller, r))
        }
        Op::GetKeyRotationStatus => {
            request.call(&["KeyId"], |r| store.get_key_rotation_status(caller, r))
        }
        Op::RotateKeyOnDemand => {
            request.call(&["KeyId"], |r| store.rotate_key_on_demand(caller, r))
        }
        Op::ListKeyRotations => request.call(&["KeyId"], |r| store.list_key_rotations(caller, r)),
        Op::GetKeyPolicy => request.call(&["KeyId"], |r| store.get_key_policy(caller, r)),
        Op::PutKeyPolicy => {
            request.empty(&["KeyId", "Policy"], |r| store.put_key_policy(caller, r))
        }
        Op::ListKeyPolicies => request.call(&["KeyId"], |r| store.list_key_policies(caller, r)),
        Op::CreateGrant => request.call(&["KeyId", "GranteePrincipal", "Operations"], |r| {
            store.create_grant(caller, r)
        }),
        Op::ListGrants => request.call(&["KeyId"], |r| store.list_grants(caller, r)),
        Op::ListRetirableGrants => request.call(&["RetiringPrincipal"], |r| {
            store.list_retirable_grants(caller, r)
        }),
        Op::RetireGrant => request.empty(&[], |r| store.retire_grant(caller, r)),
        Op::RevokeGrant => request.empty(&["KeyId", "GrantId"], |r| store.revoke_grant(caller, r)),
        Op::Sign => request.call(&["KeyId", "Message", "SigningAlgorithm"], |r| {
            store.sign(caller, r)
        }),
        Op::Verify => request.call(
            &["KeyId", "Message", "Signature", "SigningAlgorithm"],
            |r| store.verify(caller, r),
        ),
        Op::GetPublicKey => request.call(&["KeyId"], |r| store.get_public_key(caller, r)),
        Op::GenerateDataKeyPair => request.call(&["KeyId", "KeyPairSpec"], |r| {
            store.generate_data_key_pair(caller, r)
        }),
        Op::GenerateDataKeyPairWithoutPlaintext => request.call(&["KeyId", "KeyPairSpec"], |r| {
            store.generate_data_key_pair_without_plaintext(caller, r)
        }),
        Op::DeriveSharedSecret => request
            .call(&["KeyId", "KeyAgreementAlgorithm", "PublicKey"], |r| {
                store.derive_shared_secret(caller, r)
            }),
        Op::GenerateMac => request.call(&["Message", "KeyId", "MacAlgorithm"], |r| {
            store.generate_mac(caller, r)
        }),
        Op::VerifyMac => request.call(&["Message", "KeyId", "MacAlgorithm", "Mac"], |r| {
            store.verify_mac(caller, r)
        }),
        Op::CreateCustomKeyStore => request.call(&["CustomKeyStoreName"], |r| {
            store.create_custom_key_store(caller, r)
        }),
        Op::DescribeCustomKeyStores => {
            request.call(&[], |r| store.describe_custom_key_stores(caller, r))
        }
        Op::ConnectCustomKeyStore => request.call(&["CustomKeyStoreId"], |r| {
            store.connect_custom_key_store(caller, r)
        }),
        Op::DisconnectCustomKeyStore => request.call(&["CustomKeyStoreId"], |r| {
            store.disconnect_custom_key_store(caller, r)
        }),
        Op::UpdateCustomKeyStore => request.call(&["CustomKeyStoreId"], |r| {
            store.update_custom_key_store(caller, r)
        }),
        Op::DeleteCustomKeyStore => request.call(&["CustomKeyStoreId"], |r| {
            store.delete_custom_key_store(caller, r)
        }),
        Op::GetParametersForImport => request
            .call(&["KeyId", "WrappingAlgorithm", "WrappingKeySpec"], |r| {
                store.get_parameters_for_import(caller, r)
            }),
        Op::ImportKeyMaterial => request
            .empty(&["KeyId", "ImportToken", "EncryptedKeyMaterial"], |r| {
                store.import_key_material(caller, r)
            }),
        Op::ReplicateKey => request.call(&["KeyId", "ReplicaRegion"], |r| {
            store.replicate_key(caller, r)
        }),
        Op::UpdatePrimaryRegion => request.empty(&["KeyId", "PrimaryRegion"], |r| {
            store.update_primary_region(caller, r)
        }),
        Op::DeleteImportedKeyMaterial => request.empty(&["KeyId"], |r: KeyIdRequest| {
            store.delete_imported_key_material(caller, r)
        }),
    }
}

/// One request on its way to the key store.
struct Request<'a> {
    store: &'a KeyStore,
    caller: &'a Caller,
    operation: &'static str,
    body: &'a [u8],
}

impl Request<'_> {
    /// Parses the request, runs the operation and serialises its response.
    fn call<Input, Output>(
        &self,
        required: &[&str],
        operation: impl FnOnce(Input) -> Result<Output, KmsError>,
    ) -> Result<ResponseBody, KmsError>
    where
        Input: DeserializeOwned,
        Output: Serialize,
    {
        let response = operation(self.parse(required)?)?;
        encode(&response)
    }

    /// For operations whose response has no members: an empty JSON object.
    fn empty<Input: DeserializeOwned>(
        &self,
        required: &[&str],
        operation: impl FnOnce(Input) -> Result<(), KmsError>,
    ) -> Result<ResponseBody, KmsError> {
        operation(self.parse(required)?)?;
        Ok(Zeroizing::new(b"{}".to_vec()))
    }

    /// Parses the body; a refusal is recorded in the audit trail (the operation never ran).
    fn parse<Input: DeserializeOwned>(&self, required: &[&str]) -> Result<Input, KmsError> {
        parse(self.body, required).inspect_err(|refused| {
            self.store
                .record_refused(self.caller, self.operation, refused)
        })
    }
}

/// Serialises a response into a buffer allocated once at its final size, so no copy of a
/// plaintext or data key is left behind in a grown-and-freed buffer.
fn encode(response: &impl Serialize) -> Result<ResponseBody, KmsError> {
    let mut length = ByteCount(0);
    serde_json::to_writer(&mut length, response)
        .map_err(|e| KmsError::KmsInternal(format!("cannot encode the response: {e}")))?;
    let mut body = Zeroizing::new(Vec::with_capacity(length.0));
    serde_json::to_writer(&mut *body, response)
        .map_err(|e| KmsError::KmsInternal(format!("cannot encode the response: {e}")))?;
    Ok(body)
}

/// A writer that only counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parses a JSON body: malformed JSON or wrong member types are SerializationException, missing
/// required members ValidationException, as AWS answers. The body is read twice (members present,
/// then the request) rather than through a [`serde_json::Value`], which would keep an unzeroized
/// copy of a base64 plaintext.
fn parse<Input: DeserializeOwned>(body: &[u8], required: &[&str]) -> Result<Input, KmsError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    // Checked whole, once: skipping a member the operation ignores does not check its bytes.
    if let Err(error) = std::str::from_utf8(body) {
        return Err(KmsError::Serialization(format!(
            "Malformed JSON request body: invalid UTF-8 at byte {}",
            error.valid_up_to()
        )));
    }
    let members: BTreeMap<String, Option<CheckedJson>> =
        serde_json::from_slice(body).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => {
                KmsError::Serialization("Start of list found where not expected".into())
            }
            _ => KmsError::Serialization(format!(
                "Malformed JSON request body at line {} column {}",
                error.line(),
                error.column()
            )),
        })?;
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|name| members.get(*name).is_none_or(Option::is_none))
        .collect();
    if !missing.is_empty() {
        let details: Vec<String> = missing
            .iter()
            .map(|name| {
                format!(
                    "Value null at '{}' failed to satisfy constraint: Member must not be null",
                    lower_first(name)
                )
            })
            .collect();
        return Err(KmsError::Validation(format!(
            "{} validation error{} detected: {}",
            details.len(),
            if details.len() == 1 { "" } else { "s" },
            details.join("; ")
        )));
    }
    serde_json::from_slice(body).map_err(|error| {
        let what = match error.classify() {
            serde_json::error::Category::Data => "a member has the wrong type or an invalid value",
            _ => "the body cannot be read",
        };
        KmsError::Serialization(format!("Malformed request: {what}"))
    })
}

/// Any JSON value, read in full and dropped: unlike [`IgnoredAny`], which skips numbers and
/// strings without checking them, it parses every number (one out of range is malformed, as
/// for any member) and keeps no copy of a string (a plaintext is borrowed, not copied).
struct CheckedJson;

impl<'de> serde::Deserialize<'de> for CheckedJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedJsonVisitor)
    }
}

struct CheckedJsonVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedJsonVisitor {
    type Value = CheckedJson;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_i64<E>(self, _: i64) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_u64<E>(self, _: u64) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_f64<E>(self, _: f64) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_str<E>(self, _: &str) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_unit<E>(self) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<CheckedJson, A::Error> {
        while seq.next_element::<CheckedJson>()?.is_some() {}
        Ok(CheckedJson)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<CheckedJson, A::Error> {
        while map.next_entry::<IgnoredAny, CheckedJson>()?.is_some() {}
        Ok(CheckedJson)
    }
}

/// `KeyId` → `keyId`, the way AWS names members in validation messages.
fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The JSON error body AWS sends, with the message the caller may see.
/// The error body `{"__type": Code, "message": ...}`; without `message` when the message is
/// empty, as AWS sends `InvalidCiphertextException`.
pub fn error_body(error: &KmsError, message: &str) -> Vec<u8> {
    let body = if message.is_empty() {
        serde_json::json!({ "__type": error.code() })
    } else {
        serde_json::json!({ "__type": error.code(), "message": message })
    };
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_message_is_left_out_of_the_error_body() {
        let body = error_body(&KmsError::InvalidCiphertext(String::new()), "");
        assert_eq!(body, br#"{"__type":"InvalidCiphertextException"}"#);
        let body = error_body(&KmsError::NotFound("gone".into()), "gone");
        assert_eq!(body, br#"{"__type":"NotFoundException","message":"gone"}"#);
    }

    #[test]
    fn invalid_utf8_anywhere_is_a_serialization_error() {
        for body in [
            b"{\"KeyId\":\"a\xddb\"}".as_slice(),
            b"{\"Ignored\":\"\xff\"}",
            b"{\"Description\":\"ok\",\"X\":[\"\xc3\"]}",
        ] {
            let error = parse::<BTreeMap<String, IgnoredAny>>(body, &[]).unwrap_err();
            assert_eq!(error.code(), "SerializationException", "{body:?}");
        }
    }

    #[test]
    fn a_number_out_of_range_anywhere_is_a_serialization_error() {
        for body in [
            b"{\"Ignored\":1e400}".as_slice(),
            b"{\"Ignored\":{\"a\":[10000000000E0000299]}}",
        ] {
            let error = parse::<BTreeMap<String, IgnoredAny>>(body, &[]).unwrap_err();
            assert_eq!(error.code(), "SerializationException", "{body:?}");
        }
    }

    #[test]
    fn parse_errors_are_the_ones_aws_gives() {
        let malformed = parse::<KeyIdRequest>(b"{not json", &["KeyId"]).unwrap_err();
        assert_eq!(malformed.code(), "SerializationException");
        let missing = parse::<KeyIdRequest>(b"{}", &["KeyId"]).unwrap_err();
        assert_eq!(missing.code(), "ValidationException");
        assert_eq!(
            missing.message(),
            "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null"
        );
        let wrong_type = parse::<KeyIdRequest>(br#"{"KeyId": 5}"#, &["KeyId"]).unwrap_err();
        assert_eq!(wrong_type.code(), "SerializationException");
        let not_object = parse::<KeyIdRequest>(b"[]", &[]).unwrap_err();
        assert_eq!(not_object.code(), "SerializationException");
        let ok: KeyIdRequest = parse(b"", &[]).unwrap();
        assert!(ok.key_id.is_empty());
        let null = parse::<KeyIdRequest>(br#"{"KeyId": null}"#, &["KeyId"]).unwrap_err();
        assert_eq!(null.code(), "ValidationException");
    }

    #[test]
    fn a_response_is_encoded_into_one_buffer_of_its_final_size() {
        let response = serde_json::json!({
            "KeyId": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "Plaintext": "c2VjcmV0IGJ5dGVzIHRoYXQgbXVzdCBub3QgYmUgY29waWVkIGFyb3VuZA==",
            "CiphertextBlob": "A".repeat(300),
        });
        let body = encode(&response).unwrap();
        assert_eq!(body.as_slice(), serde_json::to_vec(&response).unwrap());
        assert_eq!(
            body.capacity(),
            body.len(),
            "the buffer grew: a freed copy remains"
        );
    }

    #[test]
    fn only_served_operations_are_named() {
        assert_eq!(operation("TrentService.Encrypt"), Some(Operation::Encrypt));
        assert_eq!(
            operation("TrentService.RetireGrant"),
            Some(Operation::RetireGrant)
        );
        assert_eq!(operation("TrentService.NoSuchThing"), None);
        assert_eq!(operation("Encrypt"), None);
        assert_eq!(operation(""), None);
    }
}
