//! The AWS KMS JSON 1.1 protocol: `X-Amz-Target: TrentService.<Operation>` picks the
//! operation, the JSON body becomes its request (required members checked as the API model
//! has them), and the result becomes a JSON body or an error in AWS's shape
//! (`{"__type": Code, "message": ...}` with `X-Amzn-ErrorType`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::caller::Caller;
use crate::error::KmsError;
use crate::keystore::KeyStore;
use crate::keystore::api::*;

/// The `X-Amz-Target` prefix of AWS KMS.
pub const TARGET_PREFIX: &str = "TrentService.";

/// Runs the operation named by `target` with the JSON `body`; returns the response body.
pub fn dispatch(
    store: &KeyStore,
    caller: &Caller,
    target: &str,
    body: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or("");
    match operation {
        "CreateKey" => call(body, &[], |r: CreateKeyRequest| store.create_key(caller, r)),
        "DescribeKey" => call(body, &["KeyId"], |r: KeyIdRequest| {
            store.describe_key(caller, r)
        }),
        "ListKeys" => call(body, &[], |r: ListRequest| store.list_keys(caller, r)),
        "EnableKey" => empty(body, &["KeyId"], |r: KeyIdRequest| {
            store.enable_key(caller, r)
        }),
        "DisableKey" => empty(body, &["KeyId"], |r: KeyIdRequest| {
            store.disable_key(caller, r)
        }),
        "ScheduleKeyDeletion" => call(body, &["KeyId"], |r| store.schedule_key_deletion(caller, r)),
        "CancelKeyDeletion" => call(body, &["KeyId"], |r| store.cancel_key_deletion(caller, r)),
        "UpdateKeyDescription" => empty(body, &["KeyId", "Description"], |r| {
            store.update_key_description(caller, r)
        }),
        "TagResource" => empty(body, &["KeyId", "Tags"], |r| store.tag_resource(caller, r)),
        "UntagResource" => empty(body, &["KeyId", "TagKeys"], |r| {
            store.untag_resource(caller, r)
        }),
        "ListResourceTags" => call(body, &["KeyId"], |r| store.list_resource_tags(caller, r)),
        "CreateAlias" => empty(body, &["AliasName", "TargetKeyId"], |r| {
            store.create_alias(caller, r)
        }),
        "UpdateAlias" => empty(body, &["AliasName", "TargetKeyId"], |r| {
            store.update_alias(caller, r)
        }),
        "DeleteAlias" => empty(body, &["AliasName"], |r: AliasRequest| {
            store.delete_alias(caller, &r.alias_name)
        }),
        "ListAliases" => call(body, &[], |r| store.list_aliases(caller, r)),
        "Encrypt" => call(body, &["KeyId", "Plaintext"], |r| store.encrypt(caller, r)),
        "Decrypt" => call(body, &["CiphertextBlob"], |r| store.decrypt(caller, r)),
        "ReEncrypt" => call(body, &["CiphertextBlob", "DestinationKeyId"], |r| {
            store.re_encrypt(caller, r)
        }),
        "GenerateDataKey" => call(body, &["KeyId"], |r| store.generate_data_key(caller, r)),
        "GenerateDataKeyWithoutPlaintext" => call(body, &["KeyId"], |r| {
            store.generate_data_key_without_plaintext(caller, r)
        }),
        "GenerateRandom" => call(body, &[], |r| store.generate_random(caller, r)),
        "EnableKeyRotation" => empty(body, &["KeyId"], |r| store.enable_key_rotation(caller, r)),
        "DisableKeyRotation" => empty(body, &["KeyId"], |r| store.disable_key_rotation(caller, r)),
        "GetKeyRotationStatus" => call(body, &["KeyId"], |r| {
            store.get_key_rotation_status(caller, r)
        }),
        "RotateKeyOnDemand" => call(body, &["KeyId"], |r| store.rotate_key_on_demand(caller, r)),
        "ListKeyRotations" => call(body, &["KeyId"], |r| store.list_key_rotations(caller, r)),
        "CreateCustomKeyStore" => call(body, &["CustomKeyStoreName"], |r| {
            store.create_custom_key_store(caller, r)
        }),
        "DescribeCustomKeyStores" => {
            call(body, &[], |r| store.describe_custom_key_stores(caller, r))
        }
        "ConnectCustomKeyStore" => call(body, &["CustomKeyStoreId"], |r| {
            store.connect_custom_key_store(caller, r)
        }),
        "DisconnectCustomKeyStore" => call(body, &["CustomKeyStoreId"], |r| {
            store.disconnect_custom_key_store(caller, r)
        }),
        "UpdateCustomKeyStore" => call(body, &["CustomKeyStoreId"], |r| {
            store.update_custom_key_store(caller, r)
        }),
        "DeleteCustomKeyStore" => call(body, &["CustomKeyStoreId"], |r| {
            store.delete_custom_key_store(caller, r)
        }),
        _ => Err(KmsError::UnknownOperation(String::new())),
    }
}

/// Parses the request, runs the operation and serialises its response.
fn call<Request, Response>(
    body: &[u8],
    required: &[&str],
    operation: impl FnOnce(Request) -> Result<Response, KmsError>,
) -> Result<Vec<u8>, KmsError>
where
    Request: DeserializeOwned,
    Response: Serialize,
{
    let response = operation(parse(body, required)?)?;
    serde_json::to_vec(&response)
        .map_err(|e| KmsError::KmsInternal(format!("cannot encode the response: {e}")))
}

/// For operations whose response has no members: an empty JSON object.
fn empty<Request: DeserializeOwned>(
    body: &[u8],
    required: &[&str],
    operation: impl FnOnce(Request) -> Result<(), KmsError>,
) -> Result<Vec<u8>, KmsError> {
    operation(parse(body, required)?)?;
    Ok(b"{}".to_vec())
}

/// Parses a JSON body: malformed JSON or wrong member types are SerializationException,
/// missing required members ValidationException, as AWS answers.
fn parse<Request: DeserializeOwned>(body: &[u8], required: &[&str]) -> Result<Request, KmsError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        KmsError::Serialization(format!(
            "Malformed JSON request body at line {} column {}",
            error.line(),
            error.column()
        ))
    })?;
    let Value::Object(members) = &value else {
        return Err(KmsError::Serialization(
            "Start of list found where not expected".into(),
        ));
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|name| members.get(*name).is_none_or(Value::is_null))
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
    serde_json::from_value(value).map_err(|error| {
        let what = match error.classify() {
            serde_json::error::Category::Data => "a member has the wrong type or an invalid value",
            _ => "the body cannot be read",
        };
        KmsError::Serialization(format!("Malformed request: {what}"))
    })
}

/// `KeyId` → `keyId`, the way AWS names members in validation messages.
fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The JSON error body AWS sends.
pub fn error_body(error: &KmsError) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "__type": error.code(), "message": error.message() }))
        .unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
