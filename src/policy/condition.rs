//! The `Condition` element: operators, their compiled values, and AWS's evaluation rules.
//!
//! This module owns [`Condition`] (one operator applied to one condition key with its
//! values), its parsing from the JSON of one `"Operator": {"key": values}` entry, and its
//! evaluation against a [`RequestContext`]. The rules are AWS's:
//! - the keys under one operator, and the operators of one block, must all hold (AND);
//!   the values of one key are alternatives (OR);
//! - a key missing from the request fails every operator, except the negated ones
//!   (`StringNotEquals`, `StringNotLike`, `ArnNotEquals`, `ArnNotLike`, `NumericNotEquals`,
//!   `DateNotEquals`, `NotIpAddress`), which hold, `...IfExists`, which holds, and `Null`,
//!   which tests exactly that;
//! - `ForAllValues:` holds when every request value matches, and so on an empty or missing
//!   set; `ForAnyValue:` holds when at least one does, and so never on an empty set;
//!   without a set prefix a multi-valued key behaves as `ForAnyValue:` for positive
//!   operators, and a negated operator holds when no request value matches;
//! - `ArnEquals` and `ArnLike` are the same test: each of the six colon-separated parts
//!   compared on its own, with wildcards;
//! - policy variables (`${aws:PrincipalTag/team}`, and `${*}`, `${?}`, `${$}` for the
//!   characters themselves) are replaced in the values of the string and ARN operators of
//!   `2012-10-17` documents; a value whose variable the request lacks matches nothing.
//!
//! It never reads anything but the request context it is given.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::Value;

use super::context::{ContextValue, RequestContext};
use super::pattern::Pattern;

/// The test a condition operator makes, without its `IfExists` or set qualifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `StringEquals`: exact, case-sensitive match.
    StringEquals,
    /// `StringNotEquals`: no value matches exactly.
    StringNotEquals,
    /// `StringEqualsIgnoreCase`: match ignoring ASCII case.
    StringEqualsIgnoreCase,
    /// `StringNotEqualsIgnoreCase`: no value matches, ignoring ASCII case.
    StringNotEqualsIgnoreCase,
    /// `StringLike`: match with `*` and `?` wildcards.
    StringLike,
    /// `StringNotLike`: no value matches the wildcard pattern.
    StringNotLike,
    /// `ArnEquals`: the ARNs are equal, part by part.
    ArnEquals,
    /// `ArnNotEquals`: the ARNs differ.
    ArnNotEquals,
    /// `ArnLike`: the ARN matches, each part with `*` and `?` wildcards.
    ArnLike,
    /// `ArnNotLike`: the ARN does not match the wildcard pattern.
    ArnNotLike,
    /// `NumericEquals`: equal numbers.
    NumericEquals,
    /// `NumericNotEquals`: different numbers.
    NumericNotEquals,
    /// `NumericLessThan`: the request's number is smaller.
    NumericLessThan,
    /// `NumericLessThanEquals`: the request's number is smaller or equal.
    NumericLessThanEquals,
    /// `NumericGreaterThan`: the request's number is larger.
    NumericGreaterThan,
    /// `NumericGreaterThanEquals`: the request's number is larger or equal.
    NumericGreaterThanEquals,
    /// `DateEquals`: the same instant (ISO 8601 or epoch seconds).
    DateEquals,
    /// `DateNotEquals`: a different instant.
    DateNotEquals,
    /// `DateLessThan`: the request's instant is earlier.
    DateLessThan,
    /// `DateLessThanEquals`: the request's instant is earlier or the same.
    DateLessThanEquals,
    /// `DateGreaterThan`: the request's instant is later.
    DateGreaterThan,
    /// `DateGreaterThanEquals`: the request's instant is later or the same.
    DateGreaterThanEquals,
    /// `Bool`: the request's boolean equals `true` or `false` as written.
    Bool,
    /// `BinaryEquals`: the request's bytes equal the base64 value.
    BinaryEquals,
    /// `IpAddress`: the request's address is in one of the CIDR blocks.
    IpAddress,
    /// `NotIpAddress`: the request's address is in none of the CIDR blocks.
    NotIpAddress,
    /// `Null`: `true` if the key is absent from the request, `false` if present.
    Null,
}

impl Test {
    /// Every test, for parsing by name.
    const ALL: [Test; 27] = [
        Test::StringEquals,
        Test::StringNotEquals,
        Test::StringEqualsIgnoreCase,
        Test::StringNotEqualsIgnoreCase,
        Test::StringLike,
        Test::StringNotLike,
        Test::ArnEquals,
        Test::ArnNotEquals,
        Test::ArnLike,
        Test::ArnNotLike,
        Test::NumericEquals,
        Test::NumericNotEquals,
        Test::NumericLessThan,
        Test::NumericLessThanEquals,
        Test::NumericGreaterThan,
        Test::NumericGreaterThanEquals,
        Test::DateEquals,
        Test::DateNotEquals,
        Test::DateLessThan,
        Test::DateLessThanEquals,
        Test::DateGreaterThan,
        Test::DateGreaterThanEquals,
        Test::Bool,
        Test::BinaryEquals,
        Test::IpAddress,
        Test::NotIpAddress,
        Test::Null,
    ];

    /// The AWS name, e.g. `StringEquals`.
    pub fn name(self) -> &'static str {
        match self {
            Test::StringEquals => "StringEquals",
            Test::StringNotEquals => "StringNotEquals",
            Test::StringEqualsIgnoreCase => "StringEqualsIgnoreCase",
            Test::StringNotEqualsIgnoreCase => "StringNotEqualsIgnoreCase",
            Test::StringLike => "StringLike",
            Test::StringNotLike => "StringNotLike",
            Test::ArnEquals => "ArnEquals",
            Test::ArnNotEquals => "ArnNotEquals",
            Test::ArnLike => "ArnLike",
            Test::ArnNotLike => "ArnNotLike",
            Test::NumericEquals => "NumericEquals",
            Test::NumericNotEquals => "NumericNotEquals",
            Test::NumericLessThan => "NumericLessThan",
            Test::NumericLessThanEquals => "NumericLessThanEquals",
            Test::NumericGreaterThan => "NumericGreaterThan",
            Test::NumericGreaterThanEquals => "NumericGreaterThanEquals",
            Test::DateEquals => "DateEquals",
            Test::DateNotEquals => "DateNotEquals",
            Test::DateLessThan => "DateLessThan",
            Test::DateLessThanEquals => "DateLessThanEquals",
            Test::DateGreaterThan => "DateGreaterThan",
            Test::DateGreaterThanEquals => "DateGreaterThanEquals",
            Test::Bool => "Bool",
            Test::BinaryEquals => "BinaryEquals",
            Test::IpAddress => "IpAddress",
            Test::NotIpAddress => "NotIpAddress",
            Test::Null => "Null",
        }
    }

    /// Whether the test is a negation, which holds on a missing key.
    fn is_negated(self) -> bool {
        matches!(
            self,
            Test::StringNotEquals
                | Test::StringNotEqualsIgnoreCase
                | Test::StringNotLike
                | Test::ArnNotEquals
                | Test::ArnNotLike
                | Test::NumericNotEquals
                | Test::DateNotEquals
                | Test::NotIpAddress
        )
    }
}

/// How a condition treats a multi-valued request key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetQualifier {
    /// No prefix: single-valued semantics (see the module docs for multi-valued keys).
    Single,
    /// `ForAnyValue:`: at least one request value must match.
    ForAnyValue,
    /// `ForAllValues:`: every request value must match (true on an empty set).
    ForAllValues,
}

/// A full condition operator: set qualifier, test and `IfExists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator {
    /// How the test treats a multi-valued key.
    pub set: SetQualifier,
    /// The comparison.
    pub test: Test,
    /// Whether an absent key passes (`...IfExists`).
    pub if_exists: bool,
}

impl Operator {
    /// Parses an operator name such as `ForAnyValue:StringLikeIfExists`; `None` when
    /// unknown. Names compare case-insensitively.
    pub fn parse(name: &str) -> Option<Operator> {
        let lower = name.to_ascii_lowercase();
        let (set, rest) = if let Some(rest) = lower.strip_prefix("foranyvalue:") {
            (SetQualifier::ForAnyValue, rest)
        } else if let Some(rest) = lower.strip_prefix("forallvalues:") {
            (SetQualifier::ForAllValues, rest)
        } else {
            (SetQualifier::Single, lower.as_str())
        };
        let (base, if_exists) = match rest.strip_suffix("ifexists") {
            Some(base) => (base, true),
            None => (rest, false),
        };
        let test = Test::ALL
            .into_iter()
            .find(|test| test.name().eq_ignore_ascii_case(base))?;
        if test == Test::Null && (if_exists || set != SetQualifier::Single) {
            return None;
        }
        Some(Operator {
            set,
            test,
            if_exists,
        })
    }
}

/// An IP network of `IpAddress` / `NotIpAddress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128).
    fn parse(text: &str) -> Option<Cidr> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    /// Whether `ip` lies in the network.
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A string or ARN value compiled for its test.
#[derive(Debug, Clone, PartialEq)]
enum StringMatcher {
    /// `StringEquals`: exact.
    Exact(String),
    /// `StringEqualsIgnoreCase`: the value in lower case.
    Folded(String),
    /// `StringLike`: a wildcard pattern.
    Like(Pattern),
    /// `ArnEquals` / `ArnLike`: one pattern per colon-separated part (at most six).
    Arn(Vec<Pattern>),
}

impl StringMatcher {
    fn compile(test: Test, value: &str) -> StringMatcher {
        match test {
            Test::StringEqualsIgnoreCase | Test::StringNotEqualsIgnoreCase => {
                StringMatcher::Folded(value.to_lowercase())
            }
            Test::StringLike | Test::StringNotLike => StringMatcher::Like(Pattern::new(value)),
            Test::ArnEquals | Test::ArnNotEquals | Test::ArnLike | Test::ArnNotLike => {
                StringMatcher::Arn(value.splitn(6, ':').map(Pattern::new).collect())
            }
            _ => StringMatcher::Exact(value.to_owned()),
        }
    }

    fn matches(&self, input: &str) -> bool {
        match self {
            StringMatcher::Exact(value) => value == input,
            StringMatcher::Folded(value) => *value == input.to_lowercase(),
            StringMatcher::Like(pattern) => pattern.matches(input),
            StringMatcher::Arn(parts) => {
                let input_parts: Vec<&str> = input.splitn(6, ':').collect();
                input_parts.len() == parts.len()
                    && parts
                        .iter()
                        .zip(input_parts)
                        .all(|(pattern, part)| pattern.matches(part))
            }
        }
    }
}

/// One value of a string or ARN condition: compiled now, or holding policy variables
/// that are filled in per request.
#[derive(Debug, Clone, PartialEq)]
enum StringValue {
    Fixed(StringMatcher),
    WithVariables(String),
}

/// The values of a condition, parsed for its test.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    Strings(Vec<StringValue>),
    Numbers(Vec<f64>),
    /// Epoch seconds.
    Dates(Vec<i64>),
    Bools(Vec<bool>),
    Networks(Vec<Cidr>),
    /// `Null`: `true` asks that the key be absent, `false` that it be present.
    Absent(Vec<bool>),
}

/// One condition: an operator applied to one condition key with its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    operator: Operator,
    /// The condition key in ASCII lower case (names are case-insensitive).
    key: String,
    values: Values,
}

/// Why a condition entry is not valid; the parser turns it into AWS's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionError {
    /// The operator name is not one AWS knows.
    UnknownOperator(String),
    /// A value is not a string, number or boolean, or does not parse for the operator.
    BadValue,
}

impl Condition {
    /// The condition key, in ASCII lower case.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Adds the condition keys this condition reads, in ASCII lower case: its own key and
    /// those its values name as policy variables (`${aws:PrincipalTag/team}`).
    pub(crate) fn add_keys_read(&self, names: &mut BTreeSet<String>) {
        names.insert(self.key.clone());
        if let Values::Strings(values) = &self.values {
            for value in values {
                if let StringValue::WithVariables(template) = value {
                    names.extend(variable_names(template).map(|name| name.to_ascii_lowercase()));
                }
            }
        }
    }

    /// Parses the values of `key` under `operator_name`; `variables` says whether policy
    /// variables are replaced (documents of version `2012-10-17`).
    pub fn parse(
        operator_name: &str,
        key: &str,
        values: &Value,
        variables: bool,
    ) -> Result<Condition, ConditionError> {
        let operator = Operator::parse(operator_name)
            .ok_or_else(|| ConditionError::UnknownOperator(operator_name.to_owned()))?;
        let texts = scalar_texts(values).ok_or(ConditionError::BadValue)?;
        let values = match operator.test {
            Test::StringEquals
            | Test::StringNotEquals
            | Test::StringEqualsIgnoreCase
            | Test::StringNotEqualsIgnoreCase
            | Test::StringLike
            | Test::StringNotLike
            | Test::ArnEquals
            | Test::ArnNotEquals
            | Test::ArnLike
            | Test::ArnNotLike
            | Test::BinaryEquals => Values::Strings(
                texts
                    .iter()
                    .map(|text| {
                        if variables && text.contains("${") {
                            StringValue::WithVariables(text.clone())
                        } else {
                            StringValue::Fixed(StringMatcher::compile(operator.test, text))
                        }
                    })
                    .collect(),
            ),
            Test::NumericEquals
            | Test::NumericNotEquals
            | Test::NumericLessThan
            | Test::NumericLessThanEquals
            | Test::NumericGreaterThan
            | Test::NumericGreaterThanEquals => Values::Numbers(
                texts
                    .iter()
                    .map(|text| parse_number(text).ok_or(ConditionError::BadValue))
                    .collect::<Result<_, _>>()?,
            ),
            Test::DateEquals
            | Test::DateNotEquals
            | Test::DateLessThan
            | Test::DateLessThanEquals
            | Test::DateGreaterThan
            | Test::DateGreaterThanEquals => Values::Dates(
                texts
                    .iter()
                    .map(|text| parse_date(text).ok_or(ConditionError::BadValue))
                    .collect::<Result<_, _>>()?,
            ),
            Test::Bool | Test::Null => {
                let bools = texts
                    .iter()
                    .map(|text| parse_bool(text).ok_or(ConditionError::BadValue))
                    .collect::<Result<_, _>>()?;
                if operator.test == Test::Bool {
                    Values::Bools(bools)
                } else {
                    Values::Absent(bools)
                }
            }
            Test::IpAddress | Test::NotIpAddress => Values::Networks(
                texts
                    .iter()
                    .map(|text| Cidr::parse(text).ok_or(ConditionError::BadValue))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Condition {
            operator,
            key: key.to_ascii_lowercase(),
            values,
        })
    }

    /// Whether the condition holds for the request.
    pub fn holds(&self, request: &RequestContext) -> bool {
        let value = request.lookup_lowercase(&self.key);
        let found = value
            .as_deref()
            .map(ContextValue::values)
            .filter(|values| !values.is_empty());
        if let Values::Absent(wanted) = &self.values {
            return wanted.iter().any(|absent| *absent == found.is_none());
        }
        let negated = self.operator.test.is_negated();
        match (self.operator.set, found) {
            (SetQualifier::ForAllValues, None) => true,
            (SetQualifier::ForAllValues, Some(values)) => values
                .iter()
                .all(|value| self.matches_one(value, request) != negated),
            (_, None) => {
                self.operator.if_exists || (negated && self.operator.set == SetQualifier::Single)
            }
            (SetQualifier::ForAnyValue, Some(values)) => values
                .iter()
                .any(|value| self.matches_one(value, request) != negated),
            (SetQualifier::Single, Some(values)) => {
                let any = values.iter().any(|value| self.matches_one(value, request));
                any != negated
            }
        }
    }

    /// Whether one request value matches one of the condition's values, in the positive
    /// sense of the test (`StringNotEquals` asks `StringEquals` here).
    fn matches_one(&self, input: &str, request: &RequestContext) -> bool {
        let test = self.operator.test;
        match &self.values {
            Values::Strings(values) => values.iter().any(|value| match value {
                StringValue::Fixed(matcher) => matcher.matches(input),
                StringValue::WithVariables(template) => substitute(template, request)
                    .is_some_and(|text| StringMatcher::compile(test, &text).matches(input)),
            }),
            Values::Numbers(numbers) => parse_number(input)
                .is_some_and(|have| numbers.iter().any(|want| compare(test, have, *want))),
            Values::Dates(dates) => parse_date(input).is_some_and(|have| {
                dates
                    .iter()
                    .any(|want| compare(test, have as f64, *want as f64))
            }),
            Values::Bools(bools) => parse_bool(input).is_some_and(|have| bools.contains(&have)),
            Values::Networks(networks) => input
                .parse::<IpAddr>()
                .is_ok_and(|ip| networks.iter().any(|network| network.contains(ip))),
            Values::Absent(_) => false,
        }
    }
}

/// Compares for the numeric and date tests (`NotEquals` compares as `Equals`: the caller
/// negates).
fn compare(test: Test, have: f64, want: f64) -> bool {
    match test {
        Test::NumericLessThan | Test::DateLessThan => have < want,
        Test::NumericLessThanEquals | Test::DateLessThanEquals => have <= want,
        Test::NumericGreaterThan | Test::DateGreaterThan => have > want,
        Test::NumericGreaterThanEquals | Test::DateGreaterThanEquals => have >= want,
        _ => have == want,
    }
}

/// The texts of a condition value: a string, number or boolean, or an array of them.
fn scalar_texts(value: &Value) -> Option<Vec<String>> {
    let scalar = |value: &Value| match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    };
    match value {
        Value::Array(items) if !items.is_empty() => items.iter().map(scalar).collect(),
        Value::Array(_) => None,
        other => scalar(other).map(|text| vec![text]),
    }
}

fn parse_number(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Parses a date as IAM does: epoch seconds, `YYYY-MM-DD`, or ISO 8601 with `Z` or a
/// `+HH:MM`/`-HH:MM` offset (`2026-01-31T12:00:00Z`, fractions allowed). Returns epoch
/// seconds.
fn parse_date(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Some(seconds);
    }
    let (utc_text, offset_seconds) = split_offset(text)?;
    let full = if utc_text.len() == 10 {
        format!("{utc_text}T00:00:00Z")
    } else {
        format!("{utc_text}Z")
    };
    let time = humantime::parse_rfc3339_weak(&full).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_secs())
        .ok()?
        .checked_sub(offset_seconds)
}

/// Splits the zone off an ISO 8601 time: the local part and its offset from UTC in seconds.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(utc) = text.strip_suffix('Z') {
        return Some((utc, 0));
    }
    if text.len() == 10 {
        return Some((text, 0));
    }
    let at = text.len().checked_sub(6)?;
    let (local, zone) = (text.get(..at)?, text.get(at..)?);
    let sign = match zone.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return None,
    };
    let (hours, minutes) = zone.get(1..)?.split_once(':')?;
    let hours: i64 = hours.parse().ok()?;
    let minutes: i64 = minutes.parse().ok()?;
    Some((local, sign * (hours * 3600 + minutes * 60)))
}

/// The condition keys the policy variables of `template` name (not the `${*}`, `${?}` and
/// `${$}` escapes), as [`substitute`] reads them.
fn variable_names(template: &str) -> impl Iterator<Item = &str> {
    template.split("${").skip(1).filter_map(|after| {
        let name = after.split_once('}')?.0.trim();
        (!matches!(name, "*" | "?" | "$")).then_some(name)
    })
}

/// Replaces the policy variables of `template` from the request; `None` when a variable
/// names a key the request does not have (or a multi-valued one).
fn substitute(template: &str, request: &RequestContext) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let name = after[..end].trim();
        match name {
            "*" | "?" | "$" => out.push_str(name),
            _ => match request
                .lookup_lowercase(&name.to_ascii_lowercase())?
                .values()
            {
                [single] => out.push_str(single),
                _ => return None,
            },
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}
