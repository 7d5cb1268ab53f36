//! The report as JUnit XML, so any CI system shows it: one `<testsuite>` per control and one
//! `<testcase>` per finding (a key, a key version, a member, ...), or one for the control
//! itself when it has no findings. FAIL is a `<failure>`, NOT_APPLICABLE a `<skipped>`, WARN a
//! passing case whose `<system-out>` starts with `WARN`. The evidence goes into
//! `<system-out>` as JSON. It renders what the report holds and nothing else.

use std::fmt::Write;

use super::report::{ControlResult, Finding, Report, Status};

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

struct Case<'a> {
    name: String,
    status: Status,
    reason: &'a str,
    evidence: String,
}

fn cases(control: &ControlResult) -> Vec<Case<'_>> {
    if control.findings.is_empty() {
        return vec![Case {
            name: control.id.to_owned(),
            status: control.status,
            reason: &control.summary,
            evidence: control.evidence.to_string(),
        }];
    }
    control
        .findings
        .iter()
        .map(|finding: &Finding| Case {
            name: format!("{} {}", control.id, finding.subject),
            status: finding.status,
            reason: &finding.reason,
            evidence: finding.evidence.to_string(),
        })
        .collect()
}

/// The report as a JUnit XML document.
pub fn render(report: &Report) -> String {
    let mut suites = String::new();
    let (mut total, mut failed, mut skipped) = (0, 0, 0);
    for control in &report.controls {
        let cases = cases(control);
        let failures = cases.iter().filter(|c| c.status == Status::Fail).count();
        let skips = cases
            .iter()
            .filter(|c| c.status == Status::NotApplicable)
            .count();
        total += cases.len();
        failed += failures;
        skipped += skips;
        let _ = writeln!(
            suites,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skips}\" time=\"0\" timestamp=\"{}\">",
            escape(&format!("{} {}", control.id, control.title)),
            cases.len(),
            escape(report.generated_at.trim_end_matches('Z')),
        );
        suites.push_str("    <properties>\n");
        let _ = writeln!(
            suites,
            "      <property name=\"status\" value=\"{}\"/>",
            control.status.as_str()
        );
        for reference in control.references {
            let _ = writeln!(
                suites,
                "      <property name=\"reference\" value=\"{}\"/>",
                escape(reference)
            );
        }
        suites.push_str("    </properties>\n");
        for case in cases {
            let _ = write!(
                suites,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"0\">",
                escape(&case.name),
                escape(control.id)
            );
            match case.status {
                Status::Fail => {
                    let _ = write!(
                        suites,
                        "\n      <failure message=\"{}\" type=\"FAIL\">{}</failure>",
                        escape(case.reason),
                        escape(&case.evidence)
                    );
                }
                Status::NotApplicable => {
                    let _ = write!(
                        suites,
                        "\n      <skipped message=\"{}\"/>",
                        escape(case.reason)
                    );
                }
                Status::Warn | Status::Pass => {}
            }
            let _ = writeln!(
                suites,
                "\n      <system-out>{}: {}\n{}</system-out>\n    </testcase>",
                case.status.as_str(),
                escape(case.reason),
                escape(&case.evidence)
            );
        }
        suites.push_str("  </testsuite>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"hsm-kms compliance check\" tests=\"{total}\" failures=\"{failed}\" errors=\"0\" skipped=\"{skipped}\" time=\"0\">\n{suites}</testsuites>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_control_characters() {
        assert_eq!(
            escape("a<b>&\"'\u{1}"),
            "a&lt;b&gt;&amp;&quot;&apos;\u{fffd}"
        );
    }
}
