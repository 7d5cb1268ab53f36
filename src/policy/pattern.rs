//! Wildcard patterns of policy documents, compiled once when a policy is parsed.
//!
//! This module owns [`Pattern`]: a string where `*` matches any run of characters
//! (including none) and `?` matches exactly one, as IAM matches `Action`, `Resource`,
//! `StringLike` and `ArnLike` values. Patterns without wildcards compare as plain strings,
//! and `*` alone matches without looking at the input, so the common cases cost nothing.
//! Case folding, where asked for, is ASCII-only: AWS action names and ARNs are ASCII.

/// One piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Characters that must appear as they are.
    Literal(char),
    /// `?`: exactly one character.
    One,
    /// `*`: any run of characters.
    Any,
}

/// How a pattern was compiled, chosen so that the usual patterns match cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// `*`: everything matches.
    Everything,
    /// No wildcard: plain comparison.
    Exact(String),
    /// `prefix*` with no other wildcard (e.g. `kms:Generate*`).
    Prefix(String),
    /// Anything else: matched token by token.
    Glob(Vec<Token>),
}

/// A compiled wildcard pattern (`*`, `?`), case-sensitive or ASCII case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    shape: Shape,
    ignore_case: bool,
}

impl Pattern {
    /// A case-sensitive pattern (resources, `StringLike`, `ArnLike`).
    pub fn new(source: &str) -> Pattern {
        Pattern::compile(source, false)
    }

    /// An ASCII case-insensitive pattern (actions: `kms:encrypt` is `kms:Encrypt`).
    pub fn ignoring_case(source: &str) -> Pattern {
        Pattern::compile(source, true)
    }

    /// A pattern that matches only `literal`, with `*` and `?` taken as themselves.
    pub fn literal(literal: &str) -> Pattern {
        Pattern {
            shape: Shape::Exact(literal.to_owned()),
            ignore_case: false,
        }
    }

    fn compile(source: &str, ignore_case: bool) -> Pattern {
        let folded = if ignore_case {
            source.to_ascii_lowercase()
        } else {
            source.to_owned()
        };
        let shape = if folded == "*" {
            Shape::Everything
        } else if !folded.contains(['*', '?']) {
            Shape::Exact(folded)
        } else if let Some(prefix) = folded.strip_suffix('*').filter(|p| !p.contains(['*', '?'])) {
            Shape::Prefix(prefix.to_owned())
        } else {
            Shape::Glob(
                folded
                    .chars()
                    .map(|c| match c {
                        '*' => Token::Any,
                        '?' => Token::One,
                        other => Token::Literal(other),
                    })
                    .collect(),
            )
        };
        Pattern { shape, ignore_case }
    }

    /// Whether `input` matches the whole pattern.
    pub fn matches(&self, input: &str) -> bool {
        let same = |a: &str, b: &str| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match &self.shape {
            Shape::Everything => true,
            Shape::Exact(text) => same(text, input),
            Shape::Prefix(prefix) => input
                .get(..prefix.len())
                .is_some_and(|head| same(prefix, head)),
            Shape::Glob(tokens) => {
                let chars: Vec<char> = if self.ignore_case {
                    input.chars().map(|c| c.to_ascii_lowercase()).collect()
                } else {
                    input.chars().collect()
                };
                glob_matches(tokens, &chars)
            }
        }
    }
}

/// Wildcard matching with one backtracking point (the last `*`): linear in practice,
/// never worse than `tokens × input`.
fn glob_matches(tokens: &[Token], input: &[char]) -> bool {
    let (mut t, mut i) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while i < input.len() {
        match tokens.get(t) {
            Some(Token::Any) => {
                resume = Some((t, i));
                t += 1;
            }
            Some(Token::One) => {
                t += 1;
                i += 1;
            }
            Some(Token::Literal(c)) if *c == input[i] => {
                t += 1;
                i += 1;
            }
            _ => match resume {
                Some((star, from)) => {
                    t = star + 1;
                    i = from + 1;
                    resume = Some((star, from + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|token| *token == Token::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_iam_does() {
        let cases: &[(&str, &str, bool, bool)] = &[
            // (pattern, input, ignore case, expected)
            ("*", "", false, true),
            ("*", "anything", false, true),
            ("kms:Encrypt", "kms:Encrypt", false, true),
            ("kms:Encrypt", "kms:encrypt", false, false),
            ("kms:Encrypt", "kms:encrypt", true, true),
            ("kms:Generate*", "kms:GenerateDataKey", true, true),
            ("kms:generate*", "KMS:GENERATEMAC", true, true),
            ("kms:Generate*", "kms:Gen", true, false),
            ("kms:*", "kms:Decrypt", true, true),
            ("kms:*", "iam:PassRole", true, false),
            ("kms:?ecrypt", "kms:Decrypt", true, true),
            ("kms:?ecrypt", "kms:Encrypt", true, false),
            ("a*b*c", "aXXbYYc", false, true),
            ("a*b*c", "aXXbYY", false, false),
            ("*-prod", "app-prod", false, true),
            ("*-prod", "app-prod-2", false, false),
            ("a?", "a", false, false),
            ("a*", "a", false, true),
            ("*a*a*a*", "aaa", false, true),
            ("*a*a*a*", "aa", false, false),
        ];
        for (pattern, input, ignore_case, expected) in cases {
            let compiled = if *ignore_case {
                Pattern::ignoring_case(pattern)
            } else {
                Pattern::new(pattern)
            };
            assert_eq!(
                compiled.matches(input),
                *expected,
                "{pattern:?} against {input:?}"
            );
        }
    }

    #[test]
    fn a_literal_takes_wildcards_as_characters() {
        assert!(Pattern::literal("a*").matches("a*"));
        assert!(!Pattern::literal("a*").matches("ab"));
    }
}
