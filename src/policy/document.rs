//! The parsed policy document: statements with precompiled patterns, ready to evaluate.
//!
//! This module owns the model ([`PolicyDocument`], [`Statement`], [`Principals`],
//! [`PatternList`]) and the per-statement test "does this statement apply to this request,
//! and through which principal form". It is built only by [`super::parse`], which checks
//! AWS's rules; it holds no policy text and does no I/O. A document is immutable once
//! parsed, so the wiring shares it as `Arc<PolicyDocument>` for the key revision it came
//! from.
//!
//! Principals: `"*"` (everyone), an account id or account root ARN (the account: every
//! principal of it, through its identity policies), user and role ARNs, and assumed-role
//! session ARNs. A role ARN also matches every session of the role (a session ARN carries
//! no role path, so this holds for roles named without a path). Other principal types
//! (`Service`, `Federated`, `CanonicalUser`) are accepted, as AWS accepts them, and never
//! match: no on-premises caller is an AWS service or a federated web identity.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::condition::Condition;
use super::context::{CallerIdentity, PrincipalKind, RequestContext};
use super::pattern::Pattern;

/// Whether a policy is a key policy (resource-based) or an identity policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// A key policy: `Principal` required, at most 32 KB.
    Key,
    /// An IAM-style identity policy attached to a credential: no `Principal`, at most
    /// 6,144 non-whitespace characters (IAM's managed-policy quota).
    Identity,
}

/// The policy language version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyVersion {
    /// `2012-10-17`: the current language, with policy variables.
    V2012,
    /// `2008-10-17` (also what a document without `Version` gets): no policy variables.
    V2008,
}

/// A statement's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// `"Allow"`: the statement allows what it matches.
    Allow,
    /// `"Deny"`: the statement refuses what it matches, whatever else allows it.
    Deny,
}

/// One entry of a `Principal` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalEntry {
    /// `"*"` or `{"AWS": "*"}`: everyone.
    Everyone,
    /// An account id or `arn:aws:iam::<account>:root`: the account, delegating to its
    /// identity policies.
    Account(String),
    /// A user, role or assumed-role ARN.
    Arn(String),
    /// A `Service`, `Federated` or `CanonicalUser` principal: never matches here.
    NeverMatches,
}

/// How a statement's principal matched the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PrincipalMatch {
    /// Through the caller's account: identity policies must allow the call too.
    Account,
    /// By the caller's own ARN (or its role), or `"*"`.
    Direct,
}

impl PrincipalEntry {
    /// How this entry matches the caller, if it does.
    fn matches(&self, caller: &CallerIdentity) -> Option<PrincipalMatch> {
        match self {
            PrincipalEntry::Everyone => Some(PrincipalMatch::Direct),
            PrincipalEntry::Account(account) => {
                (caller.account() == account).then_some(PrincipalMatch::Account)
            }
            PrincipalEntry::Arn(arn) => {
                let by_role = match caller.kind() {
                    PrincipalKind::AssumedRole { role_arn } => role_arn == arn,
                    _ => false,
                };
                (caller.principal_arn() == arn || by_role).then_some(PrincipalMatch::Direct)
            }
            PrincipalEntry::NeverMatches => None,
        }
    }
}

/// A `Principal` or `NotPrincipal` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principals {
    pub(crate) entries: Vec<PrincipalEntry>,
    /// `NotPrincipal`: the statement applies to everyone the entries do not match.
    pub(crate) negated: bool,
}

impl Principals {
    /// How the element matches the caller: the strongest form among the entries.
    pub fn matches(&self, caller: &CallerIdentity) -> Option<PrincipalMatch> {
        let best = self
            .entries
            .iter()
            .filter_map(|entry| entry.matches(caller))
            .max();
        if self.negated {
            best.is_none().then_some(PrincipalMatch::Direct)
        } else {
            best
        }
    }

    /// The entries, in document order.
    pub fn entries(&self) -> &[PrincipalEntry] {
        &self.entries
    }
}

/// An `Action`/`NotAction` or `Resource`/`NotResource` element, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternList {
    pub(crate) patterns: Vec<Pattern>,
    /// `NotAction` / `NotResource`: matches what none of the patterns match.
    pub(crate) negated: bool,
}

impl PatternList {
    /// Whether the element covers `input`.
    pub fn covers(&self, input: &str) -> bool {
        self.patterns.iter().any(|pattern| pattern.matches(input)) != self.negated
    }
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub(crate) sid: Option<String>,
    pub(crate) effect: Effect,
    /// `None` in identity policies (the caller is the principal).
    pub(crate) principals: Option<Principals>,
    pub(crate) actions: PatternList,
    pub(crate) resources: PatternList,
    pub(crate) conditions: Vec<Condition>,
}

impl Statement {
    /// The `Sid`, if any.
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// The effect.
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// Whether the statement applies to the request, and through which principal form
    /// (always [`PrincipalMatch::Direct`] in identity policies). Conditions are tested
    /// last, as they cost the most.
    pub fn applies(&self, request: &RequestContext) -> Option<PrincipalMatch> {
        let principal = match &self.principals {
            Some(principals) => principals.matches(request.caller())?,
            None => PrincipalMatch::Direct,
        };
        let applies = self.actions.covers(request.action())
            && self.resources.covers(request.resource())
            && self
                .conditions
                .iter()
                .all(|condition| condition.holds(request));
        applies.then_some(principal)
    }
}

/// A parsed, validated policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    pub(crate) kind: PolicyKind,
    pub(crate) version: PolicyVersion,
    pub(crate) statements: Vec<Statement>,
    /// The condition keys its statements read, in ASCII lower case (see
    /// [`PolicyDocument::condition_keys`]).
    pub(crate) condition_keys: Arc<BTreeSet<String>>,
}

impl PolicyDocument {
    /// Key or identity policy.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// The language version.
    pub fn version(&self) -> PolicyVersion {
        self.version
    }

    /// Whether any statement has a `Condition`: only then does a decision read condition keys.
    pub fn has_conditions(&self) -> bool {
        !self.condition_keys.is_empty()
    }

    /// The condition keys a decision under this policy may read, in ASCII lower case: the keys
    /// of its conditions and the policy variables in their values. A request need fill no
    /// other ([`RequestContext::naming_only`](super::RequestContext::naming_only)).
    pub fn condition_keys(&self) -> &Arc<BTreeSet<String>> {
        &self.condition_keys
    }

    /// The statements, in document order.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }
}
