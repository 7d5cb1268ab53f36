//! Alarms over the audit trail: their configuration (`[alarms]` in the TOML config), the two
//! built-in alarms, and the evaluation of one event against an alarm's filter pattern and
//! threshold window. Evaluation is deterministic given the persisted [`AlarmCursor`], so an
//! alarm re-evaluated after a crash fires exactly where it would have fired before. This
//! module never runs an action and never touches the store: see [`super::dispatcher`] and
//! [`super::delivery`].

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::filter::{FilterError, FilterPattern};

/// Built-in alarm: a disabled or pending-deletion key was used.
pub const UNUSABLE_KEY_USED: &str = "unusable-key-used";
/// Built-in alarm: a key was disabled or scheduled for deletion.
pub const KEY_DISABLED_OR_DELETION_SCHEDULED: &str = "key-disabled-or-deletion-scheduled";
/// File (in the data directory) the built-in alarms append to.
pub const DEFAULT_ALARMS_FILE: &str = "alarms.jsonl";

const UNUSABLE_KEY_USED_PATTERN: &str = r#"{($.eventSource=kms.amazonaws.com) && (($.errorCode="KMSInvalidStateException") || ($.errorCode="DisabledException"))}"#;
const KEY_DISABLED_OR_DELETION_SCHEDULED_PATTERN: &str = r#"{($.eventSource=kms.amazonaws.com) && (($.eventName="DisableKey") || ($.eventName="ScheduleKeyDeletion"))}"#;

/// Default bound of a command action.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound of an HTTP action.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest threshold accepted (the window keeps one timestamp per counted event).
const MAX_THRESHOLD: u32 = 10_000;

/// The `[alarms]` section of the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmsConfig {
    /// Run the two built-in alarms (default: on).
    pub defaults: bool,
    /// Names of alarms, built-in or configured, that are turned off.
    pub disabled: Vec<String>,
    /// Configured alarms (`[[alarms.alarm]]`); one named like a built-in alarm replaces it.
    pub alarm: Vec<AlarmConfig>,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            defaults: true,
            disabled: Vec::new(),
            alarm: Vec::new(),
        }
    }
}

/// One `[[alarms.alarm]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmConfig {
    /// Letters, digits, `-`, `_` and `.`; names the alarm's delivery cursor.
    pub name: String,
    /// A CloudWatch Logs JSON filter pattern.
    pub pattern: FilterPattern,
    /// Matching events needed within `period_seconds` to fire (default 1: every match).
    #[serde(default = "one")]
    pub threshold: u32,
    /// Length of the threshold window, by the events' `eventTime`.
    #[serde(default = "sixty")]
    pub period_seconds: u64,
    /// Run this program (argv) with the notification JSON on stdin.
    pub command: Option<Vec<String>>,
    /// POST the notification JSON to this `http://` URL.
    pub http: Option<String>,
    /// Append the notification as one JSON line to this file.
    pub file: Option<PathBuf>,
    /// Log a warning through `tracing`.
    #[serde(default)]
    pub log: bool,
    /// Bound of each command or HTTP attempt (default 10 s for commands, 5 s for HTTP).
    pub timeout_seconds: Option<u64>,
}

fn one() -> u32 {
    1
}

fn sixty() -> u64 {
    60
}

/// What an alarm does when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Runs `argv` with the notification on stdin; killed after `timeout`.
    Command {
        /// The program and its arguments (no shell).
        argv: Vec<String>,
        /// When it is killed.
        timeout: Duration,
    },
    /// POSTs the notification to `url`.
    Http {
        /// An `http://` URL.
        url: String,
        /// When the request gives up.
        timeout: Duration,
    },
    /// Appends the notification as a line to `path`, flushed to disk.
    File {
        /// The file, created if missing.
        path: PathBuf,
    },
    /// Logs a warning.
    Log,
}

impl Action {
    /// A short description for logs (never the notification itself).
    pub fn describe(&self) -> String {
        match self {
            Action::Command { argv, .. } => {
                format!("command {}", argv.first().map_or("", String::as_str))
            }
            Action::Http { url, .. } => format!("http {url}"),
            Action::File { path } => format!("file {}", path.display()),
            Action::Log => "log".to_owned(),
        }
    }
}

/// A resolved, validated alarm.
#[derive(Debug, Clone)]
pub struct Alarm {
    /// Its name, unique among alarms; notifications and the cursor's key carry it.
    pub name: String,
    /// The CloudWatch Logs filter pattern an event must match to count.
    pub pattern: FilterPattern,
    /// Matches within `period` that fire it.
    pub threshold: u32,
    /// The window over which matches count.
    pub period: Duration,
    /// What firing does, each action delivered at least once.
    pub actions: Vec<Action>,
}

/// Why the `[alarms]` section of a config is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AlarmConfigError {
    /// An `[[alarms.alarm]]` entry is invalid.
    #[error("alarm {name:?}: {reason}")]
    Invalid {
        /// The entry's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two alarms have one name.
    #[error("alarm {0:?} is defined twice")]
    DefinedTwice(String),
    /// A built-in alarm's pattern does not parse (a defect of this build).
    #[error("built-in alarm {name}: {source}")]
    BuiltIn {
        /// The built-in alarm.
        name: &'static str,
        /// Why its pattern does not parse.
        source: FilterError,
    },
    /// `alarms.disabled` names an alarm that does not exist.
    #[error("alarms.disabled names no alarm {0:?}")]
    UnknownDisabled(String),
}

impl AlarmsConfig {
    /// The alarms to run: the built-in ones (unless turned off or replaced) and the
    /// configured ones, with the built-in alarms' file in `data_dir`.
    pub fn alarms(&self, data_dir: &Path) -> Result<Vec<Alarm>, AlarmConfigError> {
        let mut alarms = Vec::new();
        let mut names = BTreeSet::new();
        for config in &self.alarm {
            let alarm = config.resolve()?;
            if !names.insert(alarm.name.clone()) {
                return Err(AlarmConfigError::DefinedTwice(alarm.name));
            }
            alarms.push(alarm);
        }
        let builtin = [
            (UNUSABLE_KEY_USED, UNUSABLE_KEY_USED_PATTERN),
            (
                KEY_DISABLED_OR_DELETION_SCHEDULED,
                KEY_DISABLED_OR_DELETION_SCHEDULED_PATTERN,
            ),
        ];
        for (name, pattern) in builtin {
            if !self.defaults || names.contains(name) {
                continue;
            }
            let pattern = FilterPattern::parse(pattern)
                .map_err(|source| AlarmConfigError::BuiltIn { name, source })?;
            names.insert(name.to_owned());
            alarms.push(Alarm {
                name: name.to_owned(),
                pattern,
                threshold: 1,
                period: Duration::from_secs(60),
                actions: vec![
                    Action::File {
                        path: data_dir.join(DEFAULT_ALARMS_FILE),
                    },
                    Action::Log,
                ],
            });
        }
        for name in &self.disabled {
            let builtin_name =
                name == UNUSABLE_KEY_USED || name == KEY_DISABLED_OR_DELETION_SCHEDULED;
            if !names.contains(name) && !builtin_name {
                return Err(AlarmConfigError::UnknownDisabled(name.clone()));
            }
        }
        alarms.retain(|alarm| !self.disabled.contains(&alarm.name));
        Ok(alarms)
    }
}

impl AlarmConfig {
    fn resolve(&self) -> Result<Alarm, AlarmConfigError> {
        let invalid = |reason: String| AlarmConfigError::Invalid {
            name: self.name.clone(),
            reason,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 128
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(invalid(
                "a name is 1 to 128 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if !(1..=MAX_THRESHOLD).contains(&self.threshold) {
            return Err(invalid(format!("threshold must be 1 to {MAX_THRESHOLD}")));
        }
        if self.period_seconds == 0 {
            return Err(invalid("period_seconds must be at least 1".into()));
        }
        let timeout = |default: Duration| match self.timeout_seconds {
            Some(seconds) => Duration::from_secs(seconds),
            None => default,
        };
        if self.timeout_seconds == Some(0) {
            return Err(invalid("timeout_seconds must be at least 1".into()));
        }
        let mut actions = Vec::new();
        if let Some(argv) = &self.command {
            if argv.first().is_none_or(|program| program.is_empty()) {
                return Err(invalid(
                    "command needs a program: command = [\"/path/prog\", \"arg\"]".into(),
                ));
            }
            actions.push(Action::Command {
                argv: argv.clone(),
                timeout: timeout(COMMAND_TIMEOUT),
            });
        }
        if let Some(url) = &self.http {
            if !cfg!(feature = "alarm-http") {
                return Err(invalid(
                    "http actions need hsm-kms built with the `alarm-http` feature".into(),
                ));
            }
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                return Err(invalid(format!("http must be an http:// URL, not {url:?}")));
            }
            actions.push(Action::Http {
                url: url.clone(),
                timeout: timeout(HTTP_TIMEOUT),
            });
        }
        if let Some(path) = &self.file {
            actions.push(Action::File { path: path.clone() });
        }
        if self.log {
            actions.push(Action::Log);
        }
        if actions.is_empty() {
            return Err(invalid("no action: give command, http, file or log".into()));
        }
        Ok(Alarm {
            name: self.name.clone(),
            pattern: self.pattern.clone(),
            threshold: self.threshold,
            period: Duration::from_secs(self.period_seconds),
            actions,
        })
    }
}

/// Where an alarm stands in the trail: the last sequence number evaluated and the times of
/// the matching events still counting toward its threshold. Persisted after every step, so a
/// restart resumes exactly here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmCursor {
    /// The sequence number of the last event evaluated.
    pub seq: u64,
    /// `eventTime`s (ms since the epoch) of counted matches, oldest first.
    #[serde(default)]
    pub window: VecDeque<i64>,
}

impl Alarm {
    /// Evaluates the event at `seq` and moves `cursor` past it; when the alarm fires,
    /// returns how many matching events made it fire (see [`Alarm::notification`]).
    pub fn evaluate(&self, cursor: &mut AlarmCursor, seq: u64, event: &Value) -> Option<usize> {
        cursor.seq = seq;
        if !self.pattern.matches(event) {
            return None;
        }
        let time = event_millis(event);
        let period = self.period.as_millis() as i64;
        while cursor
            .window
            .front()
            .is_some_and(|&first| first <= time - period)
        {
            cursor.window.pop_front();
        }
        cursor.window.push_back(time);
        let count = cursor.window.len();
        if count < self.threshold as usize {
            return None;
        }
        cursor.window.clear();
        Some(count)
    }

    /// What the actions get when the event at `seq` made the alarm fire after `count`
    /// matching events.
    pub fn notification(&self, seq: u64, count: usize, event: Value) -> Value {
        json!({
            "alarmName": self.name,
            "sequenceNumber": seq,
            "matchingEvents": count,
            "threshold": self.threshold,
            "periodSeconds": self.period.as_secs(),
            "event": event,
        })
    }

    /// The top-level event fields this alarm can look at: those its pattern selects (a
    /// superset: a `$.name` inside a quoted value counts too) and `eventTime`.
    pub fn fields(&self) -> BTreeSet<String> {
        let text: Vec<char> = self.pattern.to_string().chars().collect();
        let mut fields = BTreeSet::from(["eventTime".to_owned()]);
        for (at, pair) in text.windows(2).enumerate() {
            if pair == ['$', '.'] {
                let name: String = text[at + 2..]
                    .iter()
                    .take_while(|&&c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '@'))
                    .collect();
                fields.insert(name);
            }
        }
        fields
    }
}

/// Parses only the top-level `fields` of an event object, skipping the others without
/// building them (much cheaper than a full parse); `Null` if it is not a JSON object.
/// Evaluating a pattern on the result is the same as on the whole event as long as `fields`
/// holds every top-level field the pattern selects.
pub fn parse_fields(json: &[u8], fields: &BTreeSet<String>) -> Value {
    use serde::Deserializer as _;
    use serde::de::{IgnoredAny, MapAccess, Visitor};
    use std::borrow::Cow;

    /// An object key, borrowed from the input when it has no escapes.
    struct Key<'de>(Cow<'de, str>);

    impl<'de> Deserialize<'de> for Key<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct KeyVisitor;
            impl<'de> Visitor<'de> for KeyVisitor {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(text)))
                }
                fn visit_str<E>(self, text: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(text.to_owned())))
                }
            }
            deserializer.deserialize_str(KeyVisitor)
        }
    }

    struct Fields<'a>(&'a BTreeSet<String>);

    impl<'de> Visitor<'de> for Fields<'_> {
        type Value = serde_json::Map<String, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an event object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                if self.0.contains(key.as_ref()) {
                    out.insert(key.into_owned(), map.next_value::<Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(out)
        }
    }

    serde_json::Deserializer::from_slice(json)
        .deserialize_map(Fields(fields))
        .map_or(Value::Null, Value::Object)
}

/// An event's `eventTime` in ms since the epoch (0 when it has none).
pub fn event_millis(event: &Value) -> i64 {
    event["eventTime"]
        .as_str()
        .and_then(|text| humantime::parse_rfc3339_weak(text).ok())
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Alarm>, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            #[serde(default)]
            alarms: AlarmsConfig,
        }
        let wrapper: Wrapper = toml::from_str(text).map_err(|e| e.to_string())?;
        wrapper
            .alarms
            .alarms(Path::new("data"))
            .map_err(|e| e.to_string())
    }

    fn event(name: &str, error: Option<&str>, time: &str) -> Value {
        let mut event = json!({
            "eventSource": "kms.amazonaws.com",
            "eventName": name,
            "eventTime": time,
        });
        if let Some(error) = error {
            event["errorCode"] = Value::String(error.into());
        }
        event
    }

    #[test]
    fn builtin_alarms_are_on_by_default_and_write_to_the_data_dir() {
        let alarms = parse("").unwrap();
        let names: Vec<_> = alarms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [UNUSABLE_KEY_USED, KEY_DISABLED_OR_DELETION_SCHEDULED]
        );
        for alarm in &alarms {
            assert_eq!(
                alarm.actions,
                [
                    Action::File {
                        path: Path::new("data").join(DEFAULT_ALARMS_FILE)
                    },
                    Action::Log
                ]
            );
        }
        let used = event("Encrypt", Some("DisabledException"), "2024-01-01T00:00:00Z");
        let pending = event(
            "Decrypt",
            Some("KMSInvalidStateException"),
            "2024-01-01T00:00:00Z",
        );
        let disabled = event("DisableKey", None, "2024-01-01T00:00:00Z");
        let scheduled = event("ScheduleKeyDeletion", None, "2024-01-01T00:00:00Z");
        let other = event("Encrypt", Some("NotFoundException"), "2024-01-01T00:00:00Z");
        assert!(alarms[0].pattern.matches(&used));
        assert!(alarms[0].pattern.matches(&pending));
        assert!(!alarms[0].pattern.matches(&disabled));
        assert!(!alarms[0].pattern.matches(&other));
        assert!(alarms[1].pattern.matches(&disabled));
        assert!(alarms[1].pattern.matches(&scheduled));
        assert!(!alarms[1].pattern.matches(&used));
    }

    #[test]
    fn builtin_alarms_can_be_turned_off_or_replaced() {
        assert!(parse("[alarms]\ndefaults = false\n").unwrap().is_empty());
        let one_off = parse(&format!("[alarms]\ndisabled = [\"{UNUSABLE_KEY_USED}\"]\n")).unwrap();
        assert_eq!(one_off.len(), 1);
        assert_eq!(one_off[0].name, KEY_DISABLED_OR_DELETION_SCHEDULED);
        let replaced = parse(&format!(
            "[[alarms.alarm]]\nname = \"{UNUSABLE_KEY_USED}\"\npattern = '{{$.errorCode = \"*\"}}'\nhttp = \"http://127.0.0.1:9/x\"\n"
        ))
        .unwrap();
        assert_eq!(replaced.len(), 2);
        assert_eq!(replaced[0].name, UNUSABLE_KEY_USED);
        assert_eq!(
            replaced[0].actions,
            [Action::Http {
                url: "http://127.0.0.1:9/x".into(),
                timeout: HTTP_TIMEOUT
            }]
        );
    }

    #[test]
    fn configured_alarms_are_validated() {
        let alarm = |body: &str| parse(&format!("[[alarms.alarm]]\n{body}\n"));
        let ok = alarm(
            "name = \"n\"\npattern = '{$.eventName = \"CreateKey\"}'\nthreshold = 3\nperiod_seconds = 10\ncommand = [\"/bin/true\"]\nfile = \"/tmp/x\"\nlog = true\ntimeout_seconds = 2",
        )
        .unwrap();
        assert_eq!(ok[0].threshold, 3);
        assert_eq!(ok[0].period, Duration::from_secs(10));
        assert_eq!(
            ok[0].actions,
            [
                Action::Command {
                    argv: vec!["/bin/true".into()],
                    timeout: Duration::from_secs(2)
                },
                Action::File {
                    path: "/tmp/x".into()
                },
                Action::Log
            ]
        );
        let cases = [
            ("name = \"n\"\npattern = '{$.a = 1}'", "no action"),
            (
                "name = \"a b\"\npattern = '{$.a = 1}'\nlog = true",
                "a name is",
            ),
            (
                "name = \"n\"\npattern = '{$.a = 1}'\nlog = true\nthreshold = 0",
                "threshold",
            ),
            (
                "name = \"n\"\npattern = '{$.a = 1}'\ncommand = []",
                "command needs",
            ),
            (
                "name = \"n\"\npattern = '{$.a = 1}'\nhttp = \"https://x\"",
                "http://",
            ),
            (
                "name = \"n\"\npattern = '{$.a = }'\nlog = true",
                "filter pattern",
            ),
            (
                "name = \"n\"\npattern = '{$.a = 1}'\nlog = true\nmail = 1",
                "unknown field",
            ),
        ];
        for (body, expected) in cases {
            let error = alarm(body).unwrap_err();
            assert!(error.contains(expected), "{body}: {error}");
        }
        let twice = parse(
            "[[alarms.alarm]]\nname = \"n\"\npattern = '{$.a = 1}'\nlog = true\n[[alarms.alarm]]\nname = \"n\"\npattern = '{$.a = 1}'\nlog = true\n",
        );
        assert!(twice.unwrap_err().contains("twice"));
        let unknown = parse("[alarms]\ndisabled = [\"nope\"]\n");
        assert!(unknown.unwrap_err().contains("nope"));
    }

    #[test]
    fn threshold_counts_matches_within_the_period() {
        let alarm = Alarm {
            name: "burst".into(),
            pattern: FilterPattern::parse(r#"{$.errorCode = "*Exception"}"#).unwrap(),
            threshold: 3,
            period: Duration::from_secs(60),
            actions: vec![Action::Log],
        };
        let mut cursor = AlarmCursor::default();
        let failing = |time: &str| event("Encrypt", Some("DisabledException"), time);
        assert!(
            alarm
                .evaluate(&mut cursor, 1, &failing("2024-01-01T00:00:00Z"))
                .is_none()
        );
        assert!(
            alarm
                .evaluate(&mut cursor, 2, &failing("2024-01-01T00:00:30Z"))
                .is_none()
        );
        // A non-matching event moves the cursor and counts nothing.
        let ok = event("Encrypt", None, "2024-01-01T00:00:40Z");
        assert!(alarm.evaluate(&mut cursor, 3, &ok).is_none());
        assert_eq!(cursor.seq, 3);
        // The first match has left the window by now: still two in it.
        assert!(
            alarm
                .evaluate(&mut cursor, 4, &failing("2024-01-01T00:01:00Z"))
                .is_none()
        );
        assert_eq!(cursor.window.len(), 2);
        let last = failing("2024-01-01T00:01:10Z");
        let count = alarm.evaluate(&mut cursor, 5, &last).unwrap();
        let fired = alarm.notification(5, count, last);
        assert_eq!(fired["alarmName"], "burst");
        assert_eq!(fired["sequenceNumber"], 5);
        assert_eq!(fired["matchingEvents"], 3);
        assert_eq!(fired["event"]["eventTime"], "2024-01-01T00:01:10Z");
        // Firing starts a new window.
        assert!(cursor.window.is_empty());
        assert!(
            alarm
                .evaluate(&mut cursor, 6, &failing("2024-01-01T00:01:11Z"))
                .is_none()
        );
    }

    #[test]
    fn partial_parse_matches_like_the_whole_event() {
        // The last key is escaped in the input: it cannot be borrowed.
        let json = br#"{
            "eventVersion": "1.08",
            "eventTime": "2024-01-01T00:00:00Z",
            "eventSource": "kms.amazonaws.com",
            "eventName": "Encrypt",
            "errorCode": "DisabledException",
            "readOnly": true,
            "requestParameters": { "keyId": "k", "encryptionContext": { "aws:s3:arn": "x\"y" } },
            "resources": [{ "ARN": "arn:aws:kms:us-east-1:111122223333:key/k" }],
            "userIdentity": { "type": "Root" },
            "escaped\u0041key": 1
        }"#;
        let event: Value = serde_json::from_slice(json).unwrap();
        let patterns = [
            UNUSABLE_KEY_USED_PATTERN,
            KEY_DISABLED_OR_DELETION_SCHEDULED_PATTERN,
            r#"{($.eventSource=kms.amazonaws.com) && (($.errorCode="*Exception"))}"#,
            r#"{ $.resources[0].ARN = "arn:aws:kms:*:key/k" }"#,
            r#"{ $.requestParameters.encryptionContext.aws:s3:arn = "x\"y" }"#,
            r#"{ $.readOnly IS TRUE && $.userIdentity.type = Root }"#,
            r#"{ $.errorMessage NOT EXISTS }"#,
            r#"{ $.eventVersion = "1.08" }"#,
            r#"{ $.escapedAkey = 1 }"#,
        ];
        let mut matched = 0;
        for text in patterns {
            let alarm = Alarm {
                name: "a".into(),
                pattern: FilterPattern::parse(text).unwrap(),
                threshold: 1,
                period: Duration::from_secs(60),
                actions: vec![Action::Log],
            };
            let partial = parse_fields(json, &alarm.fields());
            assert_eq!(
                alarm.pattern.matches(&partial),
                alarm.pattern.matches(&event),
                "{text}: {partial}"
            );
            matched += usize::from(alarm.pattern.matches(&event));
            assert!(partial.get("eventTime").is_some());
            assert!(partial.as_object().unwrap().len() < event.as_object().unwrap().len());
        }
        assert_eq!(
            matched,
            patterns.len() - 1,
            "only the DisableKey pattern fails"
        );
        assert_eq!(parse_fields(b"[1]", &BTreeSet::new()), Value::Null);
        assert_eq!(parse_fields(b"{", &BTreeSet::new()), Value::Null);
    }

    #[test]
    fn cursor_round_trips_through_json() {
        let cursor = AlarmCursor {
            seq: 42,
            window: VecDeque::from([1, 2]),
        };
        let text = serde_json::to_vec(&cursor).unwrap();
        assert_eq!(
            serde_json::from_slice::<AlarmCursor>(&text).unwrap(),
            cursor
        );
    }
}
