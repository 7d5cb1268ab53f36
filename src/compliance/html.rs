//! The report as one self-contained HTML page for auditors: a summary, the pictures (keys by
//! state, rotation age, audit events per day, copies per key) as inline SVG, and every control
//! with its findings and evidence. No script, no external asset (a Content-Security-Policy
//! forbids loading any); it renders what the report holds and nothing else.

use std::fmt::Write;

use super::junit::escape;
use super::report::{Bar, Report, Status};

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem;color:#1d2430;background:#fff}
h1{margin:0 0 .3rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de}
.meta{color:#57606a}.badge{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;font-weight:600;font-size:.85rem}
.PASS{background:#dafbe1;color:#116329}.FAIL{background:#ffebe9;color:#a40e26}
.WARN{background:#fff8c5;color:#7d4e00}.NOT_APPLICABLE{background:#eaeef2;color:#57606a}
table{border-collapse:collapse;width:100%;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}pre{white-space:pre-wrap;word-break:break-all;font-size:.8rem;margin:0}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.chart{border:1px solid #d0d7de;border-radius:.4rem;padding:.5rem}
section.control{margin-bottom:1.5rem}
";

fn badge(status: Status) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", status.as_str())
}

/// A horizontal bar chart as inline SVG.
fn chart(id: &str, title: &str, unit: &str, bars: &[Bar]) -> String {
    let width = 460.0;
    let label_width = 170.0;
    let row = 18.0;
    let height = 40.0 + row * bars.len().max(1) as f64;
    let max = bars
        .iter()
        .map(|b| b.value)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure class=\"chart\"><svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{}\"><title>{}</title><text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"600\">{}</text>",
        escape(title),
        escape(title),
        escape(title)
    );
    if bars.is_empty() {
        svg.push_str("<text x=\"4\" y=\"40\" font-size=\"12\" fill=\"#57606a\">no data</text>");
    }
    for (index, bar) in bars.iter().enumerate() {
        let y = 26.0 + row * index as f64;
        let length = (width - label_width - 60.0) * bar.value / max;
        let label: String = bar.label.chars().take(24).collect();
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.0}\" font-size=\"11\">{}</text><rect class=\"bar\" x=\"{label_width}\" y=\"{y:.0}\" width=\"{length:.1}\" height=\"{:.0}\" fill=\"#0969da\"><title>{}: {} {unit}</title></rect><text x=\"{:.1}\" y=\"{:.0}\" font-size=\"11\">{}</text>",
            y + 12.0,
            escape(&label),
            row - 4.0,
            escape(&bar.label),
            bar.value,
            label_width + length + 4.0,
            y + 12.0,
            bar.value
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The report as one HTML page.
pub fn render(report: &Report) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>hsm-kms compliance report</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        page,
        "<h1>hsm-kms compliance report {}</h1><p class=\"meta\">Generated {} by {} {} ({}) for cluster <b>{}</b> ({} replication), account {} in {}. Report schema {} {}.</p>",
        badge(report.summary.status),
        escape(&report.generated_at),
        report.origin.tool,
        report.origin.version,
        report.origin.mode,
        escape(&report.origin.cluster),
        report.origin.replication,
        escape(&report.origin.account_id),
        escape(&report.origin.region),
        report.schema,
        report.schema_version
    );
    page.push_str("<h2 id=\"summary\">Summary</h2><table><tr><th>Control</th><th>Title</th><th>Status</th><th>Summary</th></tr>");
    for control in &report.controls {
        let _ = write!(
            page,
            "<tr><td><a href=\"#{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td></tr>",
            control.id,
            escape(control.title),
            badge(control.status),
            escape(&control.summary)
        );
    }
    let counts = &report.summary.findings;
    let _ = write!(
        page,
        "</table><p>Findings: {} PASS, {} FAIL, {} WARN, {} NOT_APPLICABLE. Audit trail head: event {} ({} events read); newest sealed checkpoint: {}.</p>",
        counts.pass,
        counts.fail,
        counts.warn,
        counts.not_applicable,
        report.audit.head_seq,
        report.audit.events,
        report
            .audit
            .newest_checkpoint_seq
            .map_or("none".to_owned(), |seq| format!("event {seq}"))
    );
    let states: Vec<Bar> = report
        .charts
        .keys_by_state
        .iter()
        .map(|(label, count)| Bar {
            label: label.clone(),
            value: *count as f64,
        })
        .collect();
    page.push_str("<h2 id=\"pictures\">Pictures</h2><div class=\"charts\">");
    page.push_str(&chart(
        "chart-keys-by-state",
        "Keys by state",
        "keys",
        &states,
    ));
    page.push_str(&chart(
        "chart-rotation-age",
        "Rotation age (days since newest material, enabled keys)",
        "days",
        &report.charts.rotation_age_days,
    ));
    page.push_str(&chart(
        "chart-audit-events-per-day",
        "Audit events per day (UTC)",
        "events",
        &report.charts.audit_events_per_day,
    ));
    page.push_str(&chart(
        "chart-copies-per-key",
        "HSM copies per key material version",
        "copies",
        &report.charts.copies_per_key,
    ));
    page.push_str("</div><h2 id=\"controls\">Controls</h2>");
    for control in &report.controls {
        let _ = write!(
            page,
            "<section class=\"control\" id=\"{}\"><h3>{} {} {}</h3><p>{}</p><p class=\"meta\">References: {}</p><p>{}</p>",
            control.id,
            control.id,
            escape(control.title),
            badge(control.status),
            escape(control.description),
            escape(&control.references.join("; ")),
            escape(&control.summary)
        );
        if !control.evidence.is_null() {
            let _ = write!(
                page,
                "<details><summary>Control evidence</summary><pre>{}</pre></details>",
                escape(&serde_json::to_string_pretty(&control.evidence).unwrap_or_default())
            );
        }
        if !control.findings.is_empty() {
            page.push_str(
                "<table><tr><th>Subject</th><th>Status</th><th>Reason</th><th>Evidence</th></tr>",
            );
            for finding in &control.findings {
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td><details><summary>evidence</summary><pre>{}</pre></details></td></tr>",
                    escape(&finding.subject),
                    badge(finding.status),
                    escape(&finding.reason),
                    escape(&serde_json::to_string_pretty(&finding.evidence).unwrap_or_default())
                );
            }
            page.push_str("</table>");
        }
        page.push_str("</section>");
    }
    page.push_str("</body></html>\n");
    page
}
