//! CloudWatch Logs JSON filter patterns, evaluated against audit events.
//!
//! This module owns the pattern language of `audit --filter` and of alarms:
//! a hand-written tokenizer and recursive-descent parser that turn text such
//! as `{ ($.eventSource = kms.amazonaws.com) && ($.errorCode = "*Exception") }`
//! into a [`FilterPattern`], and the evaluation of that pattern against one
//! event held as a [`serde_json::Value`]. It is pure logic: it never reads the
//! audit log, and it never panics or recurses without bound on any input; a
//! pattern it cannot parse is refused with a [`FilterError`] that points at
//! the character at fault.
//!
//! # Syntax
//!
//! A pattern is `{ EXPR }`, with whitespace allowed between any two tokens.
//! `EXPR` combines comparisons with `&&` and `||` (`&&` binds tighter, both
//! associate left) and parentheses, nested at most [`MAX_NESTING`] deep. The
//! whole pattern is at most [`MAX_PATTERN_CHARS`] characters, as in
//! CloudWatch Logs. A comparison is `SELECTOR OP VALUE`, or one of
//! `SELECTOR IS NULL`, `SELECTOR IS TRUE`, `SELECTOR IS FALSE`,
//! `SELECTOR NOT EXISTS` (keywords in upper case).
//!
//! - `SELECTOR` is `$` followed by steps: `.field` or `[index]`, starting
//!   with a field: `$.eventName`, `$.userIdentity.type`,
//!   `$.resources[0].ARN`, `$.matrix[0][1]`. A field name is made of letters,
//!   digits, `_`, `-`, `:` and `@` (so encryption-context keys such as
//!   `$.requestParameters.encryptionContext.aws:s3:arn` can be named).
//! - `OP` is `=`, `!=`, `<`, `<=`, `>` or `>=`.
//! - `VALUE` is a number (`5`, `-2.5`, `1e3`), a quoted string
//!   (`"DisableKey"`, with escapes `\"`, `\\` and `\*`), or an unquoted word
//!   (`kms.amazonaws.com`, `192.0.2.*`): any run of characters other than
//!   whitespace and `{ } ( ) " & | = ! < > ~`. A word that is a number is a
//!   number; any other is a string. `<`, `<=`, `>`, `>=` take numbers only.
//!
//! # Matching
//!
//! - A string value matches by exact, case-sensitive equality, except that
//!   each unescaped `*` matches any run of characters (possibly empty), at
//!   the start, the end or the middle: `"*Exception"`, `"arn:aws:kms:*:key/*"`.
//!   `\*` in a quoted string is a literal asterisk.
//! - A string value is compared with a selected string, or with the JSON
//!   text of a selected number or boolean (`5`, `2.5`, `true`): so
//!   `{ $.readOnly = true }` matches the boolean, and `{ $.x = "*" }` (what
//!   the AWS CDK writes for "field exists") matches any string, number or
//!   boolean. It never matches `null`, an object or an array.
//! - A number value matches selected JSON numbers only, never a string that
//!   looks like one (CloudWatch's rule): `{ $.x = 5 }` matches `5` and `5.0`,
//!   not `"5"`. Integers are compared exactly, whatever their size; any
//!   other number as an `f64`.
//! - A selector that leads nowhere (a missing field, an index past the end,
//!   a field of a non-object, an index of a non-array) makes every
//!   comparison false, `!=` included — as in CloudWatch, where
//!   `{ $.errorCode != "X" }` does not match events without `errorCode` —
//!   except `NOT EXISTS`, which is true exactly then. A field that is
//!   present with value `null` exists: `IS NULL` is true, `NOT EXISTS` false.
//! - `IS TRUE` and `IS FALSE` match the JSON booleans only.
//!
//! # Text an event must contain
//!
//! [`FilterPattern::required_text`] derives from a pattern the literal text that the JSON of
//! any event it matches must contain, so that a reader of many events (the alarms) can pass
//! over most of them without parsing them. It is a necessary condition only, built from
//! string comparisons (`=`) alone: every literal piece of such a comparison's value (between
//! its wildcards) appears as it is in the JSON text of a string that matches it, provided
//! that piece holds no character a JSON writer may escape (`"`, `\`, `/`, control
//! characters) and the JSON holds no `\u` escape at all (then [`RequiredText::admits`] admits
//! the event unread). Pieces that could be a number's text are not used, since numbers are
//! compared in the form `serde_json` writes them, not as the event spelled them.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use memchr::memmem::Finder;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Longest pattern accepted, in characters (the limit of CloudWatch Logs).
pub const MAX_PATTERN_CHARS: usize = 1024;

/// Deepest nesting of parentheses accepted.
pub const MAX_NESTING: usize = 64;

/// A parsed JSON filter pattern; see the [module documentation](self).
///
/// It keeps the text it was parsed from: [`Display`](fmt::Display) and
/// [`Serialize`] write that text back unchanged, and [`Deserialize`] parses a
/// string, so configuration files can hold patterns.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPattern {
    text: String,
    expr: Expr,
}

impl FilterPattern {
    /// Parses `text`, or says where and why it is not a valid pattern.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.chars().nth(MAX_PATTERN_CHARS).is_some() {
            return Err(FilterError::new(
                MAX_PATTERN_CHARS,
                format!("filter pattern is longer than {MAX_PATTERN_CHARS} characters"),
            ));
        }
        let expr = Parser::new(text).pattern()?;
        Ok(Self {
            text: text.to_owned(),
            expr,
        })
    }

    /// Whether `event` matches this pattern.
    pub fn matches(&self, event: &Value) -> bool {
        self.expr.matches(event)
    }

    /// The text every event this pattern matches has in its JSON (see the [module
    /// documentation](self)), or `None` when the pattern can match without any.
    pub fn required_text(&self) -> Option<RequiredText> {
        let clauses = self.expr.required()?;
        Some(RequiredText {
            clauses: clauses
                .iter()
                .map(|clause| {
                    clause
                        .iter()
                        .map(|text| Finder::new(text.as_bytes()).into_owned())
                        .collect()
                })
                .collect(),
        })
    }
}

/// Literal text the JSON of an event must contain to match a pattern: at least one string
/// of every clause, each searched for with a searcher built once.
#[derive(Debug, Clone)]
pub struct RequiredText {
    clauses: Vec<Vec<Finder<'static>>>,
}

impl RequiredText {
    /// False only if `json` (an event's JSON text) cannot match the pattern.
    pub fn admits(&self, json: &[u8]) -> bool {
        Self::any_admits(std::slice::from_ref(self), json)
    }

    /// False only if `json` can match none of the patterns whose texts are `required`; the
    /// JSON is looked at once for a `\u` escape, whatever their number.
    pub fn any_admits(required: &[RequiredText], json: &[u8]) -> bool {
        let unicode_escape =
            memchr::memchr_iter(b'\\', json).any(|at| json.get(at + 1) == Some(&b'u'));
        unicode_escape || required.iter().any(|text| text.holds(json))
    }

    /// Whether `json` holds a string of every clause.
    fn holds(&self, json: &[u8]) -> bool {
        self.clauses
            .iter()
            .all(|clause| clause.iter().any(|text| text.find(json).is_some()))
    }
}

impl FromStr for FilterPattern {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Self, FilterError> {
        Self::parse(text)
    }
}

impl fmt::Display for FilterPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for FilterPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for FilterPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a pattern was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter pattern error at position {position}: {message}")]
pub struct FilterError {
    /// The character at fault, as a 0-based offset in characters (not bytes);
    /// the pattern's length when the pattern ends too early.
    pub position: usize,
    /// What is wrong there.
    pub message: String,
}

impl FilterError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }

    /// Two lines: `pattern` itself, then a caret under the character at fault.
    ///
    /// Control characters other than tab are shown as spaces so the pattern
    /// stays on one line; a pattern longer than [`MAX_PATTERN_CHARS`] is cut
    /// there and ends with `...`.
    pub fn diagnostic(&self, pattern: &str) -> String {
        let mut line = String::new();
        let mut caret = String::new();
        for (index, c) in pattern.chars().take(MAX_PATTERN_CHARS).enumerate() {
            let shown = match c {
                '\t' => '\t',
                c if c.is_control() => ' ',
                c => c,
            };
            line.push(shown);
            if index < self.position {
                caret.push(if shown == '\t' { '\t' } else { ' ' });
            }
        }
        if pattern.chars().nth(MAX_PATTERN_CHARS).is_some() {
            line.push_str("...");
        }
        caret.push('^');
        format!("{line}\n{caret}")
    }
}

/// A boolean combination of tests; `And` and `Or` hold two or more terms.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Test { selector: Selector, test: Test },
}

impl Expr {
    fn matches(&self, event: &Value) -> bool {
        match self {
            Expr::Or(terms) => terms.iter().any(|term| term.matches(event)),
            Expr::And(terms) => terms.iter().all(|term| term.matches(event)),
            Expr::Test { selector, test } => test.holds(selector.resolve(event)),
        }
    }

    /// Clauses of text a matching event's JSON holds, one string of each at least; `None`
    /// when nothing is required. A conjunction requires what each of its terms does; a
    /// disjunction one string of the fewest-string clause of each of its terms.
    fn required(&self) -> Option<Vec<Vec<String>>> {
        match self {
            Expr::And(terms) => {
                let clauses: Vec<Vec<String>> =
                    terms.iter().filter_map(Expr::required).flatten().collect();
                (!clauses.is_empty()).then_some(clauses)
            }
            Expr::Or(terms) => {
                let mut clause = Vec::new();
                for term in terms {
                    let fewest = term.required()?.into_iter().min_by_key(Vec::len)?;
                    clause.extend(fewest);
                }
                Some(vec![clause])
            }
            Expr::Test {
                test: Test::StrEq(glob),
                ..
            } => glob
                .literal_piece()
                .map(|piece| vec![vec![piece.to_owned()]]),
            Expr::Test { .. } => None,
        }
    }
}

/// What a comparison checks of the value its selector leads to.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    StrEq(Glob),
    StrNe(Glob),
    Num { op: CmpOp, value: Number },
    IsNull,
    IsTrue,
    IsFalse,
    NotExists,
}

impl Test {
    /// Whether the test holds of `value`, `None` when the selector led nowhere.
    fn holds(&self, value: Option<&Value>) -> bool {
        match self {
            Test::StrEq(glob) => scalar_text(value).is_some_and(|text| glob.matches(&text)),
            Test::StrNe(glob) => scalar_text(value).is_some_and(|text| !glob.matches(&text)),
            Test::Num { op, value: wanted } => match value {
                Some(Value::Number(n)) => wanted.compare(n).is_some_and(|o| op.accepts(o)),
                _ => false,
            },
            Test::IsNull => matches!(value, Some(Value::Null)),
            Test::IsTrue => matches!(value, Some(Value::Bool(true))),
            Test::IsFalse => matches!(value, Some(Value::Bool(false))),
            Test::NotExists => value.is_none(),
        }
    }
}

/// The text a string value is compared with: strings as they are, numbers
/// and booleans as JSON writes them, nothing for null, objects and arrays.
fn scalar_text(value: Option<&Value>) -> Option<Cow<'_, str>> {
    match value? {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// Whether `event_value.cmp(pattern_value) == ordering` satisfies the operator.
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            CmpOp::Eq => ordering.is_eq(),
            CmpOp::Ne => ordering.is_ne(),
            CmpOp::Lt => ordering.is_lt(),
            CmpOp::Le => ordering.is_le(),
            CmpOp::Gt => ordering.is_gt(),
            CmpOp::Ge => ordering.is_ge(),
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        })
    }
}

/// A path into an event: field names and array indexes, in order.
#[derive(Debug, Clone, PartialEq)]
struct Selector(Vec<Step>);

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
}

impl Selector {
    /// The value the path leads to in `event`, if it leads anywhere.
    fn resolve<'v>(&self, event: &'v Value) -> Option<&'v Value> {
        self.0.iter().try_fold(event, |value, step| match step {
            Step::Field(name) => value.get(name.as_str()),
            Step::Index(index) => value.get(*index),
        })
    }
}

/// A string value: literal segments, with a `*` wildcard between each two.
#[derive(Debug, Clone, PartialEq)]
struct Glob {
    segments: Vec<String>,
}

impl Glob {
    /// The longest piece between wildcards that any text this glob matches contains, and that
    /// a JSON writer writes as it is (no character it may escape) and no number's text could
    /// hold (a number is compared in the form `serde_json` writes it).
    fn literal_piece(&self) -> Option<&str> {
        let number_like = |piece: &str| {
            piece
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        };
        self.segments
            .iter()
            .map(String::as_str)
            .filter(|piece| {
                !piece.is_empty()
                    && !number_like(piece)
                    && !piece
                        .chars()
                        .any(|c| c.is_control() || matches!(c, '"' | '\\' | '/'))
            })
            .max_by_key(|piece| piece.len())
    }

    /// The glob of an unquoted word, where every `*` is a wildcard.
    fn from_word(word: &str) -> Self {
        Self {
            segments: word.split('*').map(str::to_owned).collect(),
        }
    }

    /// Whether `text` matches: leftmost-first matching of the inner segments
    /// is exact for `*`-only globs and takes linear time.
    fn matches(&self, text: &str) -> bool {
        let Some((first, rest)) = self.segments.split_first() else {
            return text.is_empty();
        };
        let Some(mut text) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return text.is_empty();
        };
        for segment in middle {
            match text.find(segment.as_str()) {
                Some(at) => text = &text[at + segment.len()..],
                None => return false,
            }
        }
        text.ends_with(last.as_str())
    }
}

/// A number value: the `f64` it denotes, and the exact integer when it was
/// written as one (no `.`, no exponent) and fits.
#[derive(Debug, Clone, PartialEq)]
struct Number {
    value: f64,
    integer: Option<i128>,
}

impl Number {
    /// The number `literal` denotes (see [`is_number_literal`]), unless it
    /// does not fit in an `f64`.
    fn from_literal(literal: &str) -> Option<Self> {
        let value = literal.parse::<f64>().ok().filter(|v| v.is_finite())?;
        let integer = if literal.contains(['.', 'e', 'E']) {
            None
        } else {
            literal.parse::<i128>().ok()
        };
        Some(Self { value, integer })
    }

    /// How the event's number `n` compares with this one.
    fn compare(&self, n: &serde_json::Number) -> Option<Ordering> {
        let event_integer = n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from));
        match (event_integer, self.integer) {
            (Some(event), Some(wanted)) => Some(event.cmp(&wanted)),
            _ => n.as_f64()?.partial_cmp(&self.value),
        }
    }
}

/// Whether `word` is written as a number: `-?digits(.digits)?([eE][+-]?digits)?`.
fn is_number_literal(word: &str) -> bool {
    let bytes = word.as_bytes();
    let mut at = 0;
    let digits = |at: &mut usize| {
        let start = *at;
        while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at > start
    };
    if bytes.first() == Some(&b'-') {
        at += 1;
    }
    if !digits(&mut at) {
        return false;
    }
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        if !digits(&mut at) {
            return false;
        }
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        if !digits(&mut at) {
            return false;
        }
    }
    at == bytes.len()
}

/// One token of a pattern.
#[derive(Debug)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    And,
    Or,
    Op(CmpOp),
    Selector(Selector),
    Quoted(Glob),
    Word(String),
    End,
}

impl Tok {
    /// How error messages name the token.
    fn describe(&self) -> String {
        match self {
            Tok::LBrace => "'{'".to_owned(),
            Tok::RBrace => "'}'".to_owned(),
            Tok::LParen => "'('".to_owned(),
            Tok::RParen => "')'".to_owned(),
            Tok::And => "'&&'".to_owned(),
            Tok::Or => "'||'".to_owned(),
            Tok::Op(op) => format!("'{op}'"),
            Tok::Selector(_) => "a selector".to_owned(),
            Tok::Quoted(_) => "a quoted string".to_owned(),
            Tok::Word(word) => format!("'{word}'"),
            Tok::End => "the end of the pattern".to_owned(),
        }
    }
}

/// A token and the position of its first character.
#[derive(Debug)]
struct Token {
    tok: Tok,
    pos: usize,
}

/// Characters that end an unquoted word (besides whitespace).
const WORD_STOP: &[char] = &['{', '}', '(', ')', '"', '&', '|', '=', '!', '<', '>', '~'];

/// Characters that make up comparison operators (and unknown ones like `=~`).
const OPERATOR_CHARS: &[char] = &['=', '!', '<', '>', '~'];

fn is_field_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '@')
}

/// Splits a pattern into tokens on demand, so that the first error by
/// position is the one reported.
struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

impl Lexer {
    fn peek_char(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next_token(&mut self) -> Result<Token, FilterError> {
        while self.peek_char().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(c) = self.peek_char() else {
            return Ok(Token {
                tok: Tok::End,
                pos: start,
            });
        };
        let tok = match c {
            '{' | '}' | '(' | ')' => {
                self.pos += 1;
                match c {
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    '(' => Tok::LParen,
                    _ => Tok::RParen,
                }
            }
            '&' | '|' => self.logical(c)?,
            '"' => Tok::Quoted(self.quoted()?),
            '$' => Tok::Selector(self.selector()?),
            c if OPERATOR_CHARS.contains(&c) => Tok::Op(self.operator()?),
            _ => Tok::Word(self.take_while(|c| !c.is_whitespace() && !WORD_STOP.contains(&c))),
        };
        Ok(Token { tok, pos: start })
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek_char().is_some_and(&keep) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// `&&` or `||`; `c` is the character at the current position.
    fn logical(&mut self, c: char) -> Result<Tok, FilterError> {
        let start = self.pos;
        self.pos += 1;
        if self.peek_char() != Some(c) {
            return Err(FilterError::new(
                start,
                format!("unknown operator '{c}': use '{c}{c}'"),
            ));
        }
        self.pos += 1;
        Ok(if c == '&' { Tok::And } else { Tok::Or })
    }

    fn operator(&mut self) -> Result<CmpOp, FilterError> {
        let start = self.pos;
        let text = self.take_while(|c| OPERATOR_CHARS.contains(&c));
        match text.as_str() {
            "=" => Ok(CmpOp::Eq),
            "!=" => Ok(CmpOp::Ne),
            "<" => Ok(CmpOp::Lt),
            "<=" => Ok(CmpOp::Le),
            ">" => Ok(CmpOp::Gt),
            ">=" => Ok(CmpOp::Ge),
            _ => {
                let hint = match text.as_str() {
                    "==" => " (use '=')",
                    "<>" => " (use '!=')",
                    _ => "",
                };
                Err(FilterError::new(
                    start,
                    format!(
                        "unknown operator '{text}'{hint}: expected =, !=, <, <=, >, >=, IS or NOT EXISTS"
                    ),
                ))
            }
        }
    }

    /// A quoted string, the current character being its opening quote.
    fn quoted(&mut self) -> Result<Glob, FilterError> {
        let open = self.pos;
        self.pos += 1;
        let mut segments = Vec::new();
        let mut current = String::new();
        loop {
            let Some(c) = self.peek_char() else {
                return Err(FilterError::new(
                    open,
                    "unterminated string: no closing '\"'",
                ));
            };
            self.pos += 1;
            match c {
                '"' => break,
                '*' => segments.push(std::mem::take(&mut current)),
                '\\' => match self.peek_char() {
                    Some(escaped @ ('"' | '\\' | '*')) => {
                        self.pos += 1;
                        current.push(escaped);
                    }
                    Some(other) => {
                        return Err(FilterError::new(
                            self.pos - 1,
                            format!(
                                "unknown escape '\\{other}': only \\\", \\\\ and \\* are allowed"
                            ),
                        ));
                    }
                    None => {
                        return Err(FilterError::new(
                            open,
                            "unterminated string: no closing '\"'",
                        ));
                    }
                },
                c => current.push(c),
            }
        }
        segments.push(current);
        Ok(Glob { segments })
    }

    /// A selector, the current character being its `$`.
    fn selector(&mut self) -> Result<Selector, FilterError> {
        self.pos += 1;
        let mut steps = Vec::new();
        loop {
            match self.peek_char() {
                Some('.') => {
                    self.pos += 1;
                    let name = self.take_while(is_field_char);
                    if name.is_empty() {
                        return Err(FilterError::new(
                            self.pos,
                            "expected a field name after '.'",
                        ));
                    }
                    steps.push(Step::Field(name));
                }
                Some('[') if !steps.is_empty() => {
                    let open = self.pos;
                    self.pos += 1;
                    let digits_at = self.pos;
                    let digits = self.take_while(|c| c.is_ascii_digit());
                    if digits.is_empty() {
                        return Err(FilterError::new(
                            digits_at,
                            "expected an array index (digits) after '['",
                        ));
                    }
                    let index = digits.parse::<usize>().map_err(|_| {
                        FilterError::new(digits_at, format!("array index {digits} is too large"))
                    })?;
                    if self.peek_char() != Some(']') {
                        return Err(FilterError::new(
                            self.pos,
                            format!("expected ']' to close '[' at position {open}"),
                        ));
                    }
                    self.pos += 1;
                    steps.push(Step::Index(index));
                }
                _ => break,
            }
        }
        if steps.is_empty() {
            return Err(FilterError::new(
                self.pos,
                "expected '.' after '$': a selector looks like $.field",
            ));
        }
        Ok(Selector(steps))
    }
}

/// Recursive descent over the grammar:
///
/// ```text
/// pattern    = "{" or_expr "}"
/// or_expr    = and_expr { "||" and_expr }
/// and_expr   = primary { "&&" primary }
/// primary    = "(" or_expr ")" | SELECTOR test
/// test       = OP VALUE | "IS" ("NULL" | "TRUE" | "FALSE") | "NOT" "EXISTS"
/// ```
///
/// Recursion happens only through parentheses, whose depth is capped.
struct Parser {
    lexer: Lexer,
    peeked: Option<Token>,
    depth: usize,
}

impl Parser {
    fn new(text: &str) -> Self {
        Self {
            lexer: Lexer {
                chars: text.chars().collect(),
                pos: 0,
            },
            peeked: None,
            depth: 0,
        }
    }

    fn peek(&mut self) -> Result<&Token, FilterError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token()?,
        };
        Ok(self.peeked.insert(token))
    }

    fn bump(&mut self) -> Result<Token, FilterError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(),
        }
    }

    fn pattern(&mut self) -> Result<Expr, FilterError> {
        let open = self.bump()?;
        match open.tok {
            Tok::LBrace => {}
            Tok::End => return Err(FilterError::new(open.pos, "empty filter pattern")),
            _ => {
                return Err(FilterError::new(
                    open.pos,
                    "expected '{': a JSON filter pattern looks like { $.field = value }",
                ));
            }
        }
        let expr = self.or_expr()?;
        let close = self.bump()?;
        let message = match close.tok {
            Tok::RBrace => {
                let trailing = self.bump()?;
                if matches!(trailing.tok, Tok::End) {
                    return Ok(expr);
                }
                return Err(FilterError::new(
                    trailing.pos,
                    format!(
                        "unexpected {} after the closing '}}'",
                        trailing.tok.describe()
                    ),
                ));
            }
            Tok::End => format!("expected '}}' to close '{{' at position {}", open.pos),
            Tok::RParen => "unexpected ')' without a matching '('".to_owned(),
            other => format!("expected '&&', '||' or '}}', found {}", other.describe()),
        };
        Err(FilterError::new(close.pos, message))
    }

    fn or_expr(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.and_expr()?];
        while matches!(self.peek()?.tok, Tok::Or) {
            self.bump()?;
            terms.push(self.and_expr()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and_expr(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.primary()?];
        while matches!(self.peek()?.tok, Tok::And) {
            self.bump()?;
            terms.push(self.primary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let token = self.bump()?;
        match token.tok {
            Tok::LParen => {
                self.depth += 1;
                if self.depth > MAX_NESTING {
                    return Err(FilterError::new(
                        token.pos,
                        format!("parentheses nested deeper than {MAX_NESTING} levels"),
                    ));
                }
                let inner = self.or_expr()?;
                let close = self.bump()?;
                match close.tok {
                    Tok::RParen => {
                        self.depth -= 1;
                        Ok(inner)
                    }
                    Tok::RBrace | Tok::End => Err(FilterError::new(
                        close.pos,
                        format!("expected ')' to close '(' at position {}", token.pos),
                    )),
                    other => Err(FilterError::new(
                        close.pos,
                        format!("expected '&&', '||' or ')', found {}", other.describe()),
                    )),
                }
            }
            Tok::Selector(selector) => Ok(Expr::Test {
                selector,
                test: self.test()?,
            }),
            Tok::Word(word) => Err(FilterError::new(
                token.pos,
                format!("expected a selector starting with '$.', found '{word}'"),
            )),
            other => Err(FilterError::new(
                token.pos,
                format!("expected a comparison or '(', found {}", other.describe()),
            )),
        }
    }

    /// What follows a selector.
    fn test(&mut self) -> Result<Test, FilterError> {
        let token = self.bump()?;
        match token.tok {
            Tok::Op(op) => self.value(op),
            Tok::Word(word) if word == "IS" => {
                let keyword = self.bump()?;
                match &keyword.tok {
                    Tok::Word(k) if k == "NULL" => Ok(Test::IsNull),
                    Tok::Word(k) if k == "TRUE" => Ok(Test::IsTrue),
                    Tok::Word(k) if k == "FALSE" => Ok(Test::IsFalse),
                    other => Err(FilterError::new(
                        keyword.pos,
                        format!(
                            "expected NULL, TRUE or FALSE after IS, found {}",
                            other.describe()
                        ),
                    )),
                }
            }
            Tok::Word(word) if word == "NOT" => {
                let keyword = self.bump()?;
                match &keyword.tok {
                    Tok::Word(k) if k == "EXISTS" => Ok(Test::NotExists),
                    other => Err(FilterError::new(
                        keyword.pos,
                        format!("expected EXISTS after NOT, found {}", other.describe()),
                    )),
                }
            }
            Tok::Word(word)
                if word.eq_ignore_ascii_case("IS") || word.eq_ignore_ascii_case("NOT") =>
            {
                Err(FilterError::new(
                    token.pos,
                    format!(
                        "unknown operator '{word}': keywords are upper case (IS NULL, IS TRUE, IS FALSE, NOT EXISTS)"
                    ),
                ))
            }
            other => Err(FilterError::new(
                token.pos,
                format!(
                    "expected an operator (=, !=, <, <=, >, >=, IS, NOT EXISTS), found {}",
                    other.describe()
                ),
            )),
        }
    }

    /// The value after operator `op`.
    fn value(&mut self, op: CmpOp) -> Result<Test, FilterError> {
        let token = self.bump()?;
        let glob = match token.tok {
            Tok::Word(word) if is_number_literal(&word) => {
                let value = Number::from_literal(&word).ok_or_else(|| {
                    FilterError::new(token.pos, format!("number {word} is out of range"))
                })?;
                return Ok(Test::Num { op, value });
            }
            Tok::Word(word) => Glob::from_word(&word),
            Tok::Quoted(glob) => glob,
            other => {
                return Err(FilterError::new(
                    token.pos,
                    format!("expected a value after '{op}', found {}", other.describe()),
                ));
            }
        };
        match op {
            CmpOp::Eq => Ok(Test::StrEq(glob)),
            CmpOp::Ne => Ok(Test::StrNe(glob)),
            CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => Err(FilterError::new(
                token.pos,
                format!("'{op}' compares numbers: expected a number after it"),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
