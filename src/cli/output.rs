//! How key commands print a response, the AWS CLI's way: `--query` first picks part of the
//! response, then `--output json` (the default) pretty-prints it with four-space indents in
//! the response's field order, or `--output text` prints the AWS CLI's tab-separated form.
//! A response may carry a plaintext or data key (in base64), so every buffer this module
//! fills is zeroized when dropped. It prints responses only, never errors.

use std::fmt;
use std::io::{self, Write};

use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

/// `--output`: the AWS CLI's formats this CLI speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Text,
}

/// A response in its JSON form, every string zeroized when dropped.
pub struct Response(Value);

impl Response {
    /// A response already in its JSON form (e.g. an endpoint's answer).
    pub fn from_value(value: Value) -> Response {
        Response(value)
    }

    /// The response of an operation that returns nothing (`{}`, which prints as nothing).
    pub fn empty() -> Response {
        Response(Value::Object(serde_json::Map::new()))
    }

    /// The part of the response `query` selects (a copy, zeroized in turn).
    fn select(&self, query: Option<&Query>) -> Response {
        match query {
            Some(query) => Response(query.apply(&self.0)),
            None => Response(self.0.clone()),
        }
    }

    /// Prints the response (or the part `query` selects) to stdout in `format`.
    pub fn print(&self, format: Format, query: Option<&Query>) -> io::Result<()> {
        let selected = self.select(query);
        let mut out = Zeroizing::new(Vec::with_capacity(8192));
        match format {
            // The AWS CLI prints nothing for an empty response.
            Format::Json if selected.0 == Value::Object(serde_json::Map::new()) => return Ok(()),
            Format::Json => {
                let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
                let mut serializer = serde_json::Serializer::with_formatter(&mut *out, formatter);
                selected.0.serialize(&mut serializer)?;
                out.push(b'\n');
            }
            Format::Text => {
                let mut text = Zeroizing::new(String::with_capacity(8192));
                text_item(&selected.0, &mut text, None, None);
                out.extend_from_slice(text.as_bytes());
            }
        }
        let mut stdout = io::stdout().lock();
        stdout.write_all(&out)?;
        stdout.flush()
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        crate::server::protocol::scrub(&mut self.0);
    }
}

/// A `--query` expression: the subset of JMESPath scripts use most, a dotted path of field
/// names (`KeyMetadata.Arn`), each optionally followed by `[N]` (an index, negative from
/// the end), `[*]` (a projection over a list) or `[]` (the same, flattening one level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query(Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(i64),
    Project { flatten: bool },
}

/// Why a `--query` expression was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Query {
    /// Parses an expression; anything beyond the supported subset is refused, not guessed.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let refuse = |why: &str| {
            QueryError(format!(
                "{why} (supported: field names joined by '.', each optionally followed by [N], [*] or [])"
            ))
        };
        let mut steps = Vec::new();
        for (position, segment) in text.split('.').enumerate() {
            let (name, mut brackets) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
            if !name.is_empty() {
                if !is_identifier(name) {
                    return Err(refuse(&format!("{name:?} is not a plain field name")));
                }
                steps.push(Step::Field(name.to_owned()));
            } else if position > 0 || brackets.is_empty() {
                // Only a leading `[...]` (on a response that is a list) may omit the name.
                return Err(refuse("empty field name"));
            }
            while !brackets.is_empty() {
                let close = brackets.find(']').ok_or_else(|| refuse("unclosed '['"))?;
                let inside = &brackets[1..close];
                steps.push(match inside {
                    "" => Step::Project { flatten: true },
                    "*" => Step::Project { flatten: false },
                    number => Step::Index(
                        number
                            .parse()
                            .map_err(|_| refuse(&format!("[{number}] is not an index")))?,
                    ),
                });
                brackets = &brackets[close + 1..];
                if !brackets.is_empty() && !brackets.starts_with('[') {
                    return Err(refuse(&format!("unexpected {brackets:?}")));
                }
            }
        }
        Ok(Query(steps))
    }

    /// Evaluates the expression; what does not exist is `null`, as in JMESPath.
    fn apply(&self, value: &Value) -> Value {
        evaluate(&self.0, value)
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn evaluate(steps: &[Step], value: &Value) -> Value {
    let Some((step, rest)) = steps.split_first() else {
        return value.clone();
    };
    match step {
        Step::Field(name) => match value.get(name) {
            Some(field) => evaluate(rest, field),
            None => Value::Null,
        },
        Step::Index(index) => {
            let Value::Array(items) = value else {
                return Value::Null;
            };
            let position = if *index < 0 {
                items.len().checked_sub(index.unsigned_abs() as usize)
            } else {
                Some(*index as usize)
            };
            match position.and_then(|p| items.get(p)) {
                Some(item) => evaluate(rest, item),
                None => Value::Null,
            }
        }
        Step::Project { flatten } => {
            let Value::Array(items) = value else {
                return Value::Null;
            };
            let mut elements = Vec::new();
            for item in items {
                match item {
                    Value::Array(inner) if *flatten => elements.extend(inner),
                    other => elements.push(other),
                }
            }
            Value::Array(
                elements
                    .into_iter()
                    .map(|element| evaluate(rest, element))
                    .filter(|result| !result.is_null())
                    .collect(),
            )
        }
    }
}

// The text format, ported from the AWS CLI's `awscli/text.py`: an object prints its scalar
// fields (sorted by name) on one tab-separated line, prefixed by its field name in upper
// case, then its nested objects and lists the same way; a list of objects prints one line
// per object with the same columns; a bare scalar prints alone.

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// A scalar as Python's `str()` shows it.
fn push_scalar(out: &mut String, value: &Value) {
    match value {
        Value::String(text) => out.push_str(text),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Null => out.push_str("None"),
        Value::Number(number) => out.push_str(&number.to_string()),
        nested => out.push_str(&nested.to_string()),
    }
}

fn text_item(item: &Value, out: &mut String, identifier: Option<&str>, columns: Option<&[&str]>) {
    match item {
        Value::Object(map) => text_object(map, out, identifier, columns),
        Value::Array(items) => text_list(items, out, identifier),
        scalar => {
            push_scalar(out, scalar);
            out.push('\n');
        }
    }
}

fn text_object(
    map: &serde_json::Map<String, Value>,
    out: &mut String,
    identifier: Option<&str>,
    columns: Option<&[&str]>,
) {
    let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
    names.sort_unstable();
    let (scalars, nested): (Vec<Option<&Value>>, Vec<&str>) = match columns {
        None => (
            names
                .iter()
                .filter(|name| is_scalar(&map[**name]))
                .map(|name| map.get(*name))
                .collect(),
            names
                .iter()
                .copied()
                .filter(|name| !is_scalar(&map[*name]))
                .collect(),
        ),
        Some(columns) => (
            columns.iter().map(|name| map.get(*name)).collect(),
            names
                .iter()
                .copied()
                .filter(|name| !columns.contains(name))
                .collect(),
        ),
    };
    if !scalars.is_empty() {
        let mut first = true;
        if let Some(identifier) = identifier {
            out.push_str(&identifier.to_uppercase());
            first = false;
        }
        for value in scalars {
            if !first {
                out.push('\t');
            }
            first = false;
            // A column missing from this object prints empty, as the AWS CLI does.
            if let Some(value) = value {
                push_scalar(out, value);
            }
        }
        out.push('\n');
    }
    for name in nested {
        text_item(&map[name], out, Some(name), None);
    }
}

fn text_list(items: &[Value], out: &mut String, identifier: Option<&str>) {
    if items.is_empty() {
        return;
    }
    if items.iter().any(Value::is_object) {
        let mut columns: Vec<&str> = items
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|map| map.iter())
            .filter(|(_, value)| is_scalar(value))
            .map(|(name, _)| name.as_str())
            .collect();
        columns.sort_unstable();
        columns.dedup();
        for item in items {
            text_item(item, out, identifier, Some(&columns));
        }
    } else if items.iter().any(Value::is_array) {
        let scalars: Vec<&Value> = items.iter().filter(|item| is_scalar(item)).collect();
        if !scalars.is_empty() {
            text_scalars(&scalars, out, identifier);
        }
        for nested in items.iter().filter(|item| !is_scalar(item)) {
            text_item(nested, out, identifier, None);
        }
    } else {
        let scalars: Vec<&Value> = items.iter().collect();
        text_scalars(&scalars, out, identifier);
    }
}

fn text_scalars(items: &[&Value], out: &mut String, identifier: Option<&str>) {
    match identifier {
        Some(identifier) => {
            let identifier = identifier.to_uppercase();
            for item in items {
                out.push_str(&identifier);
                out.push('\t');
                push_scalar(out, item);
                out.push('\n');
            }
        }
        None => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push('\t');
                }
                push_scalar(out, item);
            }
            out.push('\n');
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use serde_json::json;

    use super::*;

    fn text(value: Value) -> String {
        let mut out = String::new();
        text_item(&value, &mut out, None, None);
        out
    }

    fn query(expression: &str, value: Value) -> Value {
        Query::parse(expression).unwrap().apply(&value)
    }

    /// Expected strings are what `awscli.text.format_text` (AWS CLI 1.45) prints.
    #[test]
    fn text_matches_the_aws_cli() {
        assert_eq!(
            text(json!({"KeyMetadata": {"KeyId": "k", "Enabled": true,
                "CreationDate": 1700000000.123, "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
                "MultiRegion": false}})),
            "KEYMETADATA\t1700000000.123\tTrue\tk\tFalse\nENCRYPTIONALGORITHMS\tSYMMETRIC_DEFAULT\n"
        );
        assert_eq!(
            text(
                json!({"Keys": [{"KeyId": "1", "KeyArn": "a1"}, {"KeyId": "2", "KeyArn": "a2"}],
                "Truncated": true, "NextMarker": "m"})
            ),
            "m\tTrue\nKEYS\ta1\t1\nKEYS\ta2\t2\n"
        );
        assert_eq!(text(json!({"Tags": []})), "");
        assert_eq!(text(json!({})), "");
        assert_eq!(text(json!("aGk=")), "aGk=\n");
        assert_eq!(text(json!(["a", "b", 3])), "a\tb\t3\n");
        assert_eq!(text(json!(null)), "None\n");
        // Objects in one list share columns; one without a column prints it empty.
        assert_eq!(
            text(json!({"L": [{"A": 1, "B": 2}, {"A": 3}]})),
            "L\t1\t2\nL\t3\t\n"
        );
        assert_eq!(
            text(json!({"Deleted": ["x", "y"], "Failures": []})),
            "DELETED\tx\nDELETED\ty\n"
        );
    }

    #[test]
    fn queries_select_paths_indexes_and_projections() {
        let response = json!({
            "KeyMetadata": {"KeyId": "k", "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"]},
            "Aliases": [{"AliasName": "alias/a"}, {"AliasName": "alias/b"}, {"Other": 1}],
        });
        assert_eq!(query("KeyMetadata.KeyId", response.clone()), json!("k"));
        assert_eq!(query("KeyMetadata", response.clone())["KeyId"], json!("k"));
        assert_eq!(query("Missing", response.clone()), Value::Null);
        assert_eq!(
            query("KeyMetadata.KeyId.Deeper", response.clone()),
            Value::Null
        );
        assert_eq!(
            query("KeyMetadata.EncryptionAlgorithms[0]", response.clone()),
            json!("SYMMETRIC_DEFAULT")
        );
        assert_eq!(
            query("Aliases[].AliasName", response.clone()),
            json!(["alias/a", "alias/b"])
        );
        assert_eq!(
            query("Aliases[*].AliasName", response.clone()),
            json!(["alias/a", "alias/b"])
        );
        assert_eq!(
            query("Aliases[-2].AliasName", response.clone()),
            json!("alias/b")
        );
        assert_eq!(query("Aliases[9]", response.clone()), Value::Null);
        assert_eq!(query("[]", json!([[1, 2], [3]])), json!([1, 2, 3]));
        assert_eq!(query("[*]", json!([[1, 2], [3]])), json!([[1, 2], [3]]));
    }

    #[test]
    fn unsupported_queries_are_refused() {
        for expression in [
            "",
            "a..b",
            "a.",
            ".a",
            "a[?x=='y']",
            "a[0",
            "a[0]b",
            "length(a)",
            "a || b",
            "\"quoted\"",
        ] {
            assert!(Query::parse(expression).is_err(), "{expression:?}");
        }
    }

    #[test]
    fn responses_scrub_their_strings() {
        let mut value = json!({"Plaintext": "c2VjcmV0", "List": ["c2VjcmV0"]});
        crate::server::protocol::scrub(&mut value);
        assert_eq!(value, json!({"Plaintext": "", "List": [""]}));
    }
}
