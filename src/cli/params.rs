//! Command-line values into request fields, the AWS CLI v2's way: `fileb://PATH` is a
//! file's raw bytes, `file://PATH` a file's text (read in place of the value), a plain blob
//! value is base64 (or its own UTF-8 bytes under `--cli-binary-format raw-in-base64-out`),
//! and maps and lists are the CLI's shorthand (`k=v,k2=v2`, `TagKey=k,TagValue=v`) or JSON.
//! Blob bytes go straight into zeroizing buffers, and an error names the parameter, never
//! the value of a blob.

use std::fs::File;
use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::ValueEnum;
use secrecy::SecretSlice;
use zeroize::Zeroizing;

use crate::keystore::api::{EncryptionContextMap, GrantConstraintsShape, Tag};

/// `--cli-binary-format`: how a blob given as a plain value (or `file://`) is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BinaryFormat {
    // The value is base64 (the AWS CLI v2 default).
    Base64,
    // The value's own UTF-8 bytes (the AWS CLI v1 behaviour).
    RawInBase64Out,
}

/// Most bytes read from a file for one parameter. Every blob the API takes is far smaller
/// (6144 bytes at most), so a longer file still gets the API's length error.
const FILE_MAX: u64 = 1 << 20;

/// AWS CLI's wording for a value it cannot turn into a parameter.
fn bad(param: &str, why: impl std::fmt::Display) -> String {
    format!("Error parsing parameter '--{param}': {why}")
}

/// Reads at most [`FILE_MAX`] + 1 bytes of `path` into a zeroizing buffer.
fn read_file(param: &str, prefix: &str, path: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let unable = |e: std::io::Error| {
        bad(
            param,
            format!("Unable to load paramfile {prefix}{path}: {e}"),
        )
    };
    let file = File::open(path).map_err(unable)?;
    let expected = file
        .metadata()
        .map(|m| m.len())
        .unwrap_or(0)
        .min(FILE_MAX + 1);
    let mut bytes = Zeroizing::new(Vec::with_capacity(expected as usize));
    file.take(FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(unable)?;
    Ok(bytes)
}

/// A blob parameter's bytes.
fn blob(param: &str, value: &str, format: BinaryFormat) -> Result<Zeroizing<Vec<u8>>, String> {
    if let Some(path) = value.strip_prefix("fileb://") {
        return read_file(param, "fileb://", path);
    }
    let text = match value.strip_prefix("file://") {
        Some(path) => {
            let bytes = read_file(param, "file://", path)?;
            Zeroizing::new(String::from_utf8(bytes.to_vec()).map_err(|_| {
                bad(
                    param,
                    format!("file://{path} is not UTF-8 text: use fileb://"),
                )
            })?)
        }
        None => Zeroizing::new(value.to_owned()),
    };
    match format {
        BinaryFormat::RawInBase64Out => Ok(Zeroizing::new(text.as_bytes().to_vec())),
        BinaryFormat::Base64 => {
            let compact: Zeroizing<Vec<u8>> =
                Zeroizing::new(text.bytes().filter(|b| !b.is_ascii_whitespace()).collect());
            STANDARD.decode(&*compact).map(Zeroizing::new).map_err(|_| {
                bad(
                    param,
                    "the value is not valid base64: give raw bytes as fileb://FILE, or text with --cli-binary-format raw-in-base64-out",
                )
            })
        }
    }
}

/// A secret blob (a plaintext); the command-line copy of the value is zeroized too.
pub fn secret(param: &str, value: String, format: BinaryFormat) -> Result<SecretSlice<u8>, String> {
    let value = Zeroizing::new(value);
    let bytes = blob(param, &value, format)?;
    Ok(SecretSlice::from(bytes.to_vec()))
}

/// A blob that is not secret (a ciphertext).
pub fn bytes(param: &str, value: &str, format: BinaryFormat) -> Result<Vec<u8>, String> {
    blob(param, value, format).map(|bytes| bytes.to_vec())
}

/// A string parameter: `file://PATH` and `fileb://PATH` read the file's text.
pub fn text(param: &str, value: String) -> Result<String, String> {
    let (prefix, path) = match (
        value.strip_prefix("file://"),
        value.strip_prefix("fileb://"),
    ) {
        (Some(path), _) => ("file://", path),
        (_, Some(path)) => ("fileb://", path),
        _ => return Ok(value),
    };
    let bytes = read_file(param, prefix, path)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| bad(param, format!("{prefix}{path} is not UTF-8 text")))
}

/// An encryption context: JSON (`{"k":"v"}`) or shorthand (`k=v,k2=v2`; JSON for values
/// holding a comma).
pub fn context(param: &str, value: Option<String>) -> Result<Option<EncryptionContextMap>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = text(param, value)?;
    if value.trim_start().starts_with('{') {
        return serde_json::from_str(&value)
            .map(Some)
            .map_err(|e| bad(param, format!("expected a JSON object of strings: {e}")));
    }
    let mut map = EncryptionContextMap::new();
    for pair in value.split(',') {
        let (key, val) = pair
            .split_once('=')
            .ok_or_else(|| bad(param, format!("expected key=value, got {:?}", pair.trim())))?;
        map.insert(key.trim().to_owned(), val.trim().to_owned());
    }
    Ok(Some(map))
}

/// Tags: each value JSON (`[{"TagKey":"k","TagValue":"v"}]`) or shorthand
/// (`TagKey=k,TagValue=v`).
pub fn tags(param: &str, values: Vec<String>) -> Result<Vec<Tag>, String> {
    let mut tags = Vec::new();
    for value in values {
        let value = text(param, value)?;
        if value.trim_start().starts_with('[') {
            let list: Vec<Tag> = serde_json::from_str(&value).map_err(|e| {
                bad(
                    param,
                    format!("expected a JSON list of {{\"TagKey\": ..., \"TagValue\": ...}}: {e}"),
                )
            })?;
            tags.extend(list);
            continue;
        }
        let (mut key, mut val) = (None, None);
        for pair in value.split(',') {
            match pair.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("TagKey", k)) => key = Some(k.to_owned()),
                Some(("TagValue", v)) => val = Some(v.to_owned()),
                _ => {
                    return Err(bad(
                        param,
                        format!("expected TagKey=KEY,TagValue=VALUE, got {:?}", pair.trim()),
                    ));
                }
            }
        }
        match (key, val) {
            (Some(tag_key), Some(tag_value)) => tags.push(Tag { tag_key, tag_value }),
            _ => return Err(bad(param, "each tag needs both TagKey and TagValue")),
        }
    }
    Ok(tags)
}

/// A list of strings: the values as given, or one JSON list (`["a","b"]`).
pub fn strings(param: &str, values: Vec<String>) -> Result<Vec<String>, String> {
    match values.as_slice() {
        [one] if one.trim_start().starts_with('[') => serde_json::from_str(one)
            .map_err(|e| bad(param, format!("expected a JSON list of strings: {e}"))),
        _ => Ok(values),
    }
}

/// Grant constraints: JSON (`{"EncryptionContextSubset": {"k": "v"}}`) or shorthand
/// (`EncryptionContextSubset={k=v,k2=v2}`, `EncryptionContextEquals={...}`, or both
/// separated by a comma).
pub fn grant_constraints(
    param: &str,
    value: Option<String>,
) -> Result<Option<GrantConstraintsShape>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = text(param, value)?;
    if value.trim_start().starts_with('{') {
        return serde_json::from_str(&value).map(Some).map_err(|e| {
            bad(
                param,
                format!("expected {{\"EncryptionContextSubset\"|\"EncryptionContextEquals\": {{...}}}}: {e}"),
            )
        });
    }
    let mut constraints = GrantConstraintsShape::default();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("={")
            .ok_or_else(|| bad(param, format!("expected NAME={{k=v,...}}, got {rest:?}")))?;
        let (pairs, after) = after
            .split_once('}')
            .ok_or_else(|| bad(param, format!("missing '}}' after {name}")))?;
        let map = context(param, Some(pairs.to_owned()))?.unwrap_or_default();
        match name.trim() {
            "EncryptionContextSubset" => constraints.encryption_context_subset = Some(map),
            "EncryptionContextEquals" => constraints.encryption_context_equals = Some(map),
            other => {
                return Err(bad(
                    param,
                    format!(
                        "unknown constraint {other:?}: EncryptionContextSubset or EncryptionContextEquals"
                    ),
                ));
            }
        }
        rest = after.trim_start_matches(',').trim();
    }
    Ok(Some(constraints))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn blobs_read_files_base64_and_raw_text() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.bin");
        std::fs::write(&raw, [0u8, 159, 146, 150, b'\n']).unwrap();
        let encoded = dir.path().join("b64.txt");
        std::fs::write(&encoded, "aGVs\nbG8=\n").unwrap();
        let fileb = format!("fileb://{}", raw.display());
        let file = format!("file://{}", encoded.display());
        use BinaryFormat::*;
        let cases: [(&str, BinaryFormat, &[u8]); 6] = [
            (&fileb, Base64, &[0, 159, 146, 150, b'\n']),
            (&fileb, RawInBase64Out, &[0, 159, 146, 150, b'\n']),
            (&file, Base64, b"hello"),
            (&file, RawInBase64Out, b"aGVs\nbG8=\n"),
            ("aGVsbG8=", Base64, b"hello"),
            ("hello", RawInBase64Out, b"hello"),
        ];
        for (value, format, expected) in cases {
            let secret = secret("plaintext", value.to_owned(), format).unwrap();
            assert_eq!(secret.expose_secret(), expected, "{value} {format:?}");
            assert_eq!(bytes("ciphertext-blob", value, format).unwrap(), expected);
        }
    }

    #[test]
    fn blob_errors_name_the_parameter_not_the_value() {
        let error = secret("plaintext", "not base64!".into(), BinaryFormat::Base64).unwrap_err();
        assert!(
            error.starts_with("Error parsing parameter '--plaintext':"),
            "{error}"
        );
        assert!(!error.contains("not base64!"), "{error}");
        let error = bytes(
            "ciphertext-blob",
            "fileb:///no/such/file",
            BinaryFormat::Base64,
        )
        .unwrap_err();
        assert!(
            error.contains("Unable to load paramfile fileb:///no/such/file"),
            "{error}"
        );
    }

    #[test]
    fn long_files_are_cut_after_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![7u8; FILE_MAX as usize + 100]).unwrap();
        let read = bytes(
            "plaintext",
            &format!("fileb://{}", path.display()),
            BinaryFormat::Base64,
        )
        .unwrap();
        assert_eq!(read.len() as u64, FILE_MAX + 1);
    }

    #[test]
    fn contexts_parse_shorthand_and_json() {
        let expected: EncryptionContextMap =
            [("a".into(), "b".into()), ("c".into(), "d=e".into())].into();
        assert_eq!(
            context("ec", Some("a=b,c=d=e".into())).unwrap(),
            Some(expected.clone())
        );
        assert_eq!(
            context("ec", Some(r#"{"a": "b", "c": "d=e"}"#.into())).unwrap(),
            Some(expected)
        );
        assert_eq!(context("ec", None).unwrap(), None);
        assert!(context("ec", Some("novalue".into())).is_err());
        assert!(context("ec", Some(r#"{"a": 1}"#.into())).is_err());
    }

    #[test]
    fn tags_parse_shorthand_and_json() {
        let tag = |k: &str, v: &str| Tag {
            tag_key: k.into(),
            tag_value: v.into(),
        };
        assert_eq!(
            tags(
                "tags",
                vec![
                    "TagKey=k,TagValue=v".into(),
                    r#"[{"TagKey": "k2", "TagValue": ""}]"#.into()
                ]
            )
            .unwrap(),
            vec![tag("k", "v"), tag("k2", "")]
        );
        assert!(tags("tags", vec!["TagKey=k".into()]).is_err());
        assert!(tags("tags", vec!["Key=k,Value=v".into()]).is_err());
    }

    #[test]
    fn string_lists_are_values_or_json() {
        assert_eq!(
            strings("tag-keys", vec!["a".into(), "b".into()]).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            strings("tag-keys", vec![r#"["a", "b"]"#.into()]).unwrap(),
            vec!["a", "b"]
        );
    }
}
