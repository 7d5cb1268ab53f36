//! `hsm-kms audit ...`: list, follow and export the audit trail, verify its chain and
//! checkpoints, and export the newest sealed checkpoint. They read the metadata store the
//! running server holds through its admin socket, or else open it themselves; they never
//! write to the trail.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use super::STORE_IN_USE;
use crate::audit::alarm::event_millis;
use crate::audit::checkpoint::{Checkpoint, ClusterSealer, Sealer};
use crate::audit::filter::FilterPattern;
use crate::audit::log::{StoredEvent, read_events};
use crate::audit::verify::verify;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::store::{MetadataStore, StoreError, Table};

/// Pause between two looks at the trail in `tail -f`.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Events read per page.
const PAGE: usize = 1000;
/// Exit code of `audit verify` when the chain is sound but no seal could be checked.
const SEALS_NOT_VERIFIED: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the events, oldest first.
    List(Query),
    /// Print the newest events; with -f, keep printing new ones as they are committed.
    Tail {
        #[command(flatten)]
        query: Query,
        /// How many of the newest matching events to print first.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Keep looking for new events (every second; without a running server, opening
        /// the store only for each look and waiting while another process holds it).
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Write the events as a CloudTrail log file: {"Records": [...]}.
    Export {
        #[command(flatten)]
        selection: Selection,
        /// File to write (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check the hash chain and the sealed checkpoints; exit 0 only when nothing is wrong and
    /// every seal was checked, 1 on problems, 3 when the HSMs could not check the seals.
    Verify {
        /// A checkpoint exported earlier with `audit checkpoint`: detects a truncated tail.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Export the newest sealed checkpoint, to check the trail against it later.
    Checkpoint {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// Which events: a time range and a filter pattern.
#[derive(Debug, Args)]
pub struct Selection {
    /// Only events at or after T: RFC 3339 (2024-05-01T12:00:00Z) or a duration ago (1h, 30m).
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Only events at or before T (same forms as --since).
    #[arg(long, value_name = "T")]
    until: Option<String>,
    /// A CloudWatch Logs JSON filter pattern, e.g. '{ $.eventName = "DisableKey" }'.
    #[arg(long, value_name = "PATTERN")]
    filter: Option<String>,
}

/// A selection and how to print it.
#[derive(Debug, Args)]
pub struct Query {
    #[command(flatten)]
    selection: Selection,
    /// json: one event per line, as stored; table: time, event, key, error, user.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

/// A parsed selection.
struct Matcher {
    since: Option<i64>,
    until: Option<i64>,
    filter: Option<FilterPattern>,
}

impl Matcher {
    fn matches(&self, event: &Value) -> bool {
        let time = event_millis(event);
        self.since.is_none_or(|since| time >= since)
            && self.until.is_none_or(|until| time <= until)
            && self.filter.as_ref().is_none_or(|f| f.matches(event))
    }
}

/// Why a command stopped.
enum Failure {
    /// A usage error: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Failed(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Failed(message)
    }
}

pub fn run(config: &Config, command: AuditCommand) -> Result<ExitCode, String> {
    match execute(config, command) {
        Ok(code) => Ok(code),
        Err(Failure::Failed(message)) => Err(message),
        Err(Failure::Usage(message)) => {
            eprintln!("hsm-kms: {message}");
            Ok(ExitCode::from(2))
        }
    }
}

fn execute(config: &Config, command: AuditCommand) -> Result<ExitCode, Failure> {
    match command {
        AuditCommand::List(query) => {
            let matcher = matcher(&query.selection)?;
            let store = open_store(config)?;
            let mut out = Printer::new(query.format);
            each_event(store.as_ref(), 0, |stored, event| {
                if matcher.matches(event) {
                    out.print(stored, event);
                }
            })?;
            out.finish()?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail {
            query,
            lines,
            follow,
        } => tail(config, query, lines, follow),
        AuditCommand::Export { selection, out } => {
            let matcher = matcher(&selection)?;
            let store = open_store(config)?;
            let mut records = Vec::new();
            each_event(store.as_ref(), 0, |_, event| {
                if matcher.matches(event) {
                    records.push(event.clone());
                }
            })?;
            let count = records.len();
            let file = serde_json::json!({ "Records": records });
            let text = serde_json::to_string(&file).map_err(|e| e.to_string())?;
            match out {
                Some(path) => {
                    write_file(&path, text.as_bytes())?;
                    eprintln!("{count} event(s) written to {}", path.display());
                }
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { checkpoint } => verify_trail(config, checkpoint.as_deref()),
        AuditCommand::Checkpoint { out } => {
            let store = open_store(config)?;
            let newest = store
                .scan(Table::AuditCheckpoints, b"", None, usize::MAX)
                .map_err(store_error)?
                .pop()
                .ok_or_else(|| Failure::Failed("no checkpoint has been sealed yet".into()))?;
            let checkpoint: Checkpoint = serde_json::from_slice(&newest.1.payload)
                .map_err(|e| format!("the newest checkpoint record is unreadable: {e}"))?;
            let text = serde_json::to_string_pretty(&checkpoint).map_err(|e| e.to_string())?;
            write_file(&out, text.as_bytes())?;
            println!(
                "checkpoint at event {} written to {}",
                checkpoint.seq,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn tail(config: &Config, query: Query, lines: usize, follow: bool) -> Result<ExitCode, Failure> {
    let matcher = matcher(&query.selection)?;
    let mut out = Printer::new(query.format);
    let mut newest: VecDeque<(StoredEvent, Value)> = VecDeque::new();
    let mut last_seq = 0;
    // sled lets one process hold the store: a follower waits for it (saying so once), and
    // then opens it only for each look.
    let mut waiting = false;
    {
        let store = loop {
            match open_for_look(config, follow, &mut waiting)? {
                Some(store) => break store,
                None => std::thread::sleep(FOLLOW_INTERVAL),
            }
        };
        each_event(store.as_ref(), 0, |stored, event| {
            last_seq = stored.seq;
            if lines > 0 && matcher.matches(event) {
                if newest.len() == lines {
                    newest.pop_front();
                }
                newest.push_back((stored.clone(), event.clone()));
            }
        })?;
    }
    for (stored, event) in &newest {
        out.print(stored, event);
    }
    out.finish()?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(FOLLOW_INTERVAL);
        let Some(store) = open_for_look(config, true, &mut waiting)? else {
            continue;
        };
        each_event(store.as_ref(), last_seq, |stored, event| {
            last_seq = stored.seq;
            if matcher.matches(event) {
                out.print(stored, event);
            }
        })?;
        drop(store);
        out.finish()?;
    }
}

fn verify_trail(config: &Config, checkpoint: Option<&Path>) -> Result<ExitCode, Failure> {
    let exported = match checkpoint {
        Some(path) => {
            let text = std::fs::read(path)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
            Some(serde_json::from_slice::<Checkpoint>(&text).map_err(|e| {
                Failure::Usage(format!(
                    "{} is not an exported checkpoint: {e}",
                    path.display()
                ))
            })?)
        }
        None => None,
    };
    let store = open_store(config)?;
    let cluster = config
        .default_cluster()
        .map_err(|e| e.to_string())
        .and_then(|cluster| {
            Cluster::open(&config.default_cluster, cluster).map_err(|e| e.to_string())
        });
    let sealer = match cluster {
        Ok(cluster) => Some(ClusterSealer::new(Arc::new(cluster))),
        Err(error) => {
            eprintln!(
                "hsm-kms: the HSM cluster cannot be opened ({error}); checkpoint seals were not checked"
            );
            None
        }
    };
    let report = verify(
        store.as_ref(),
        sealer.as_ref().map(|s| s as &dyn Sealer),
        exported.as_ref(),
    )
    .map_err(store_error)?;
    println!(
        "checked {} event(s) and {} checkpoint(s){}",
        report.events,
        report.checkpoints,
        if exported.is_some() {
            " and the exported checkpoint"
        } else {
            ""
        }
    );
    for problem in &report.problems {
        println!("problem: {}", problem.what);
    }
    match report.first_bad() {
        Some(seq) => {
            println!("first bad sequence number {seq}");
            Ok(ExitCode::FAILURE)
        }
        None if !report.seals_verified => {
            println!(
                "the hash chain has no problem, but the checkpoint seals were not verified (no HSM): the trail is not proven intact"
            );
            Ok(ExitCode::from(SEALS_NOT_VERIFIED))
        }
        None => {
            println!("the audit trail is intact");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn matcher(selection: &Selection) -> Result<Matcher, Failure> {
    let now = SystemTime::now();
    let time = |text: &Option<String>, flag: &str| {
        text.as_deref()
            .map(|text| parse_time(text, now).map_err(|e| Failure::Usage(format!("{flag}: {e}"))))
            .transpose()
    };
    let filter = match &selection.filter {
        Some(text) => Some(
            FilterPattern::parse(text)
                .map_err(|error| Failure::Usage(format!("{error}\n{}", error.diagnostic(text))))?,
        ),
        None => None,
    };
    Ok(Matcher {
        since: time(&selection.since, "--since")?,
        until: time(&selection.until, "--until")?,
        filter,
    })
}

/// RFC 3339, or a duration (`1h`, `30m`) before `now`; in ms since the epoch.
fn parse_time(text: &str, now: SystemTime) -> Result<i64, String> {
    let time = match humantime::parse_rfc3339_weak(text) {
        Ok(time) => time,
        Err(_) => {
            let ago = humantime::parse_duration(text).map_err(|_| {
                format!("{text:?} is neither an RFC 3339 time nor a duration like 1h or 30m")
            })?;
            now.checked_sub(ago)
                .ok_or_else(|| format!("{text:?} reaches too far back"))?
        }
    };
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("{text:?} is before 1970"))
}

/// Opens the store for one look; `None` while another process holds it and `wait` is set
/// (said once on stderr until the store is free again).
fn open_for_look(
    config: &Config,
    wait: bool,
    waiting: &mut bool,
) -> Result<Option<Box<dyn MetadataStore>>, Failure> {
    match super::via_server::open_store(config) {
        Ok(store) => {
            *waiting = false;
            Ok(Some(store))
        }
        Err(StoreError::Locked { .. }) if wait => {
            if !*waiting {
                eprintln!("hsm-kms: {STORE_IN_USE}; waiting for it to be released");
                *waiting = true;
            }
            Ok(None)
        }
        Err(other) => Err(Failure::Failed(store_error(other))),
    }
}

fn open_store(config: &Config) -> Result<Box<dyn MetadataStore>, Failure> {
    super::via_server::open_store(config).map_err(|e| Failure::Failed(store_error(e)))
}

fn store_error(error: StoreError) -> String {
    match error {
        StoreError::Locked { .. } => STORE_IN_USE.to_owned(),
        other => other.to_string(),
    }
}

/// Calls `visit` with every event after `after`, in order.
fn each_event(
    store: &dyn MetadataStore,
    after: u64,
    mut visit: impl FnMut(&StoredEvent, &Value),
) -> Result<(), Failure> {
    let mut after = after;
    loop {
        let page = read_events(store, after, PAGE).map_err(store_error)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.seq;
        for stored in &page {
            visit(stored, &stored.event());
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Prints events as JSON lines or table rows.
struct Printer {
    format: Format,
    header: bool,
    out: io::BufWriter<io::Stdout>,
    failed: Option<io::Error>,
}

impl Printer {
    fn new(format: Format) -> Printer {
        Printer {
            format,
            header: false,
            out: io::BufWriter::new(io::stdout()),
            failed: None,
        }
    }

    fn print(&mut self, stored: &StoredEvent, event: &Value) {
        if self.failed.is_some() {
            return;
        }
        let written = match self.format {
            Format::Json => self
                .out
                .write_all(&stored.json)
                .and_then(|()| self.out.write_all(b"\n")),
            Format::Table => {
                let header = if self.header {
                    Ok(())
                } else {
                    self.header = true;
                    writeln!(
                        self.out,
                        "{:<20}  {:<32}  {:<36}  {:<26}  USER",
                        "TIME", "EVENT", "KEY", "ERROR"
                    )
                };
                header.and_then(|()| writeln!(self.out, "{}", table_row(event)))
            }
        };
        if let Err(error) = written {
            self.failed = Some(error);
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        if let Some(error) = self.failed.take() {
            return Err(format!("cannot write to standard output: {error}"));
        }
        self.out
            .flush()
            .map_err(|e| format!("cannot write to standard output: {e}"))
    }
}

/// Time, event name, key id, error code and user of one event.
fn table_row(event: &Value) -> String {
    let text = |value: &Value| value.as_str().unwrap_or("-").to_owned();
    let key = event["resources"][0]["ARN"]
        .as_str()
        .or_else(|| event["requestParameters"]["keyId"].as_str())
        .map(|key| {
            key.rsplit_once(":key/")
                .map_or(key, |(_, id)| id)
                .to_owned()
        })
        .unwrap_or_else(|| "-".to_owned());
    let user = event["userIdentity"]["arn"]
        .as_str()
        .or_else(|| event["userIdentity"]["invokedBy"].as_str())
        .unwrap_or("-");
    format!(
        "{:<20}  {:<32}  {:<36}  {:<26}  {}",
        text(&event["eventTime"]),
        text(&event["eventName"]),
        key,
        text(&event["errorCode"]),
        user
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_relative() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_time("1970-01-01T00:00:10Z", now).unwrap(), 10_000);
        assert_eq!(parse_time("1h", now).unwrap(), (10_000 - 3600) * 1000);
        assert_eq!(parse_time("30m", now).unwrap(), (10_000 - 1800) * 1000);
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("100000h", now).is_err());
    }

    #[test]
    fn table_rows_show_key_id_error_and_user() {
        let event = serde_json::json!({
            "eventTime": "2024-01-01T00:00:00Z",
            "eventName": "Encrypt",
            "errorCode": "DisabledException",
            "resources": [{ "ARN": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab" }],
            "userIdentity": { "arn": "arn:aws:iam::111122223333:root" },
        });
        let row = table_row(&event);
        for part in [
            "2024-01-01T00:00:00Z",
            "Encrypt",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "DisabledException",
            "arn:aws:iam::111122223333:root",
        ] {
            assert!(row.contains(part), "{row}");
        }
        assert!(!row.contains("arn:aws:kms"), "{row}");
        let service = serde_json::json!({ "eventName": "HsmMemberDown", "userIdentity": { "invokedBy": "kms.amazonaws.com" } });
        assert!(table_row(&service).contains("kms.amazonaws.com"));
    }

    #[test]
    fn selections_combine_time_and_pattern() {
        let matcher = Matcher {
            since: Some(parse_time("2024-01-01T00:00:00Z", SystemTime::now()).unwrap()),
            until: Some(parse_time("2024-01-02T00:00:00Z", SystemTime::now()).unwrap()),
            filter: Some(FilterPattern::parse(r#"{$.eventName = "DisableKey"}"#).unwrap()),
        };
        let event =
            |name: &str, time: &str| serde_json::json!({ "eventName": name, "eventTime": time });
        assert!(matcher.matches(&event("DisableKey", "2024-01-01T12:00:00Z")));
        assert!(!matcher.matches(&event("EnableKey", "2024-01-01T12:00:00Z")));
        assert!(!matcher.matches(&event("DisableKey", "2023-12-31T23:59:59Z")));
        assert!(!matcher.matches(&event("DisableKey", "2024-01-02T00:00:01Z")));
    }
}
