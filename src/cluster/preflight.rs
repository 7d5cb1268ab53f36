//! The preflight a cluster passes before it serves: at least two members reachable, logged in
//! and holding the domain key (for vendor clusters: the slot logged in and two HSMs
//! answering), spanning at least two zones. There is deliberately no way to serve with one.

use std::collections::BTreeSet;
use std::fmt;

/// Fewest healthy HSMs a cluster serves with.
pub const MIN_HSMS: usize = 2;
/// Fewest distinct zones the healthy HSMs must span.
pub const MIN_ZONES: usize = 2;

/// Why a cluster refuses to serve, naming each member that failed and why.
#[derive(Debug, Clone)]
pub struct PreflightFailure {
    /// The cluster's name.
    pub cluster: String,
    /// One line per failed member: `(member, reason)`.
    pub members: Vec<(String, String)>,
    /// Cluster-wide problems (too few members, one zone).
    pub problems: Vec<String>,
    /// The member failures behind `members`, for callers that classify them.
    pub causes: Vec<crate::hsm::HsmError>,
}

impl fmt::Display for PreflightFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {} cannot serve:", self.cluster)?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        for (member, reason) in &self.members {
            write!(f, "\n  - member {member}: {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PreflightFailure {}

/// Checks the quorum rule over the healthy HSMs, given as `(name, zone)`.
pub fn quorum_problems<'a>(healthy: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let healthy: Vec<(&str, &str)> = healthy.into_iter().collect();
    let zones: BTreeSet<&str> = healthy.iter().map(|(_, zone)| *zone).collect();
    let mut problems = Vec::new();
    if healthy.len() < MIN_HSMS {
        problems.push(format!(
            "{} healthy HSM(s), at least {MIN_HSMS} are required",
            healthy.len()
        ));
    } else if zones.len() < MIN_ZONES {
        let names: Vec<&str> = healthy.iter().map(|(name, _)| *name).collect();
        problems.push(format!(
            "healthy members {} are all in zone {}; at least {MIN_ZONES} zones are required",
            names.join(", "),
            zones.iter().next().copied().unwrap_or_default()
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_rule() {
        assert!(quorum_problems([("a", "z1"), ("b", "z2")]).is_empty());
        assert!(quorum_problems([("a", "z1"), ("b", "z2"), ("c", "z2")]).is_empty());
        let one = quorum_problems([("a", "z1")]);
        assert_eq!(
            one,
            vec!["1 healthy HSM(s), at least 2 are required".to_string()]
        );
        let same_zone = quorum_problems([("a", "z1"), ("b", "z1")]);
        assert!(same_zone[0].contains("all in zone z1"), "{same_zone:?}");
        assert_eq!(quorum_problems([]).len(), 1);
    }
}
