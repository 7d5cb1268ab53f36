//! Delivery of one alarm notification by one [`Action`]: a command with the notification on
//! stdin, an HTTP POST (cargo feature `alarm-http`), a line appended to a file, or a warning
//! in the log. Every attempt is bounded in time (a command is killed at its timeout, an HTTP
//! request gives up at its timeout) and reports failure as a [`DeliveryError`]; retrying is
//! the dispatcher's business. Notifications hold audit events only, which never carry secrets.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::alarm::Action;

/// Environment variable naming the alarm, set for command actions.
pub const ALARM_NAME_ENV: &str = "HSM_KMS_ALARM";

/// Serialises appends to alarm files, so lines of alarms sharing a file never interleave.
static FILE_APPENDS: Mutex<()> = Mutex::new(());

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A command action with no program.
    #[error("empty command")]
    EmptyCommand,
    /// The command could not be started.
    #[error("cannot start {program}: {source}")]
    Start {
        /// The program.
        program: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// No thread could be started to write the notification to the command's stdin.
    #[error("cannot feed {program}: {source}")]
    Feed {
        /// The program.
        program: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The command ended with a failure status.
    #[error("{program} failed: {status}")]
    Failed {
        /// The program.
        program: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// The command ran past its timeout and was killed.
    #[error("{program} did not finish within {} s and was killed", .timeout.as_secs_f32())]
    TimedOut {
        /// The program.
        program: String,
        /// The action's timeout.
        timeout: Duration,
    },
    /// The command's end could not be waited for.
    #[error("cannot wait for {program}: {source}")]
    Wait {
        /// The program.
        program: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The POST failed: no connection, a timeout or a status other than 2xx.
    #[error("POST {url} failed: {reason}")]
    Post {
        /// The action's URL.
        url: String,
        /// The HTTP client's reason.
        reason: String,
    },
    /// This build has no HTTP client (the config refuses HTTP actions then, so only a
    /// hand-built [`Action`] gets here).
    #[error("POST {url}: this build has no HTTP client (cargo feature `alarm-http`)")]
    NoHttpClient {
        /// The action's URL.
        url: String,
    },
    /// The alarm file could not be opened or appended to.
    #[error("cannot append to {}: {source}", .path.display())]
    File {
        /// The alarm file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// Delivers `notification` (the JSON text of `parsed`) by `action`; `Ok` once it is done.
pub fn deliver(
    alarm: &str,
    action: &Action,
    notification: &[u8],
    parsed: &Value,
) -> Result<(), DeliveryError> {
    match action {
        Action::Command { argv, timeout } => run_command(alarm, argv, *timeout, notification),
        Action::Http { url, timeout } => post(alarm, url, *timeout, notification),
        Action::File { path } => {
            let _serialised = FILE_APPENDS.lock().unwrap_or_else(|p| p.into_inner());
            let mut line = Vec::with_capacity(notification.len() + 1);
            line.extend_from_slice(notification);
            line.push(b'\n');
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| {
                    file.write_all(&line)?;
                    file.sync_data()
                })
                .map_err(|source| DeliveryError::File {
                    path: path.clone(),
                    source,
                })
        }
        Action::Log => {
            let event = &parsed["event"];
            tracing::warn!(
                alarm,
                event = event["eventName"].as_str().unwrap_or_default(),
                key = event["resources"][0]["ARN"].as_str().unwrap_or_default(),
                error_code = event["errorCode"].as_str().unwrap_or_default(),
                seq = parsed["sequenceNumber"].as_u64().unwrap_or_default(),
                "alarm fired"
            );
            Ok(())
        }
    }
}

/// Runs `argv` with `input` on stdin; kills it when `timeout` passes.
fn run_command(
    alarm: &str,
    argv: &[String],
    timeout: Duration,
    input: &[u8],
) -> Result<(), DeliveryError> {
    let (program, args) = argv.split_first().ok_or(DeliveryError::EmptyCommand)?;
    let program_name = || program.clone();
    let mut child = Command::new(program)
        .args(args)
        .env(ALARM_NAME_ENV, alarm)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| DeliveryError::Start {
            program: program_name(),
            source,
        })?;
    // A child that does not read its stdin must not block us: write from a detached thread,
    // which ends when the pipe closes.
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_vec();
        let spawned = std::thread::Builder::new()
            .name("alarm-stdin".into())
            .spawn(move || {
                let _ = stdin.write_all(&input);
            });
        if let Err(error) = spawned {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DeliveryError::Feed {
                program: program_name(),
                source: error,
            });
        }
    }
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(DeliveryError::Failed {
                    program: program_name(),
                    status,
                });
            }
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DeliveryError::TimedOut {
                    program: program_name(),
                    timeout,
                });
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(25));
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DeliveryError::Wait {
                    program: program_name(),
                    source: error,
                });
            }
        }
    }
}

/// POSTs `body` as JSON; any status other than 2xx is a failure.
#[cfg(feature = "alarm-http")]
fn post(alarm: &str, url: &str, timeout: Duration, body: &[u8]) -> Result<(), DeliveryError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(true)
        .build()
        .into();
    agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Hsm-Kms-Alarm", alarm)
        .send(body)
        .map(|_| ())
        .map_err(|e| DeliveryError::Post {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}

/// Without the `alarm-http` feature the config refuses HTTP actions, so none reaches here.
#[cfg(not(feature = "alarm-http"))]
fn post(_alarm: &str, url: &str, _timeout: Duration, _body: &[u8]) -> Result<(), DeliveryError> {
    Err(DeliveryError::NoHttpClient {
        url: url.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;

    fn notification() -> (Vec<u8>, Value) {
        let value = serde_json::json!({ "alarmName": "a", "event": { "eventName": "DisableKey" } });
        (serde_json::to_vec(&value).unwrap(), value)
    }

    #[test]
    fn command_gets_the_notification_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let action = Action::Command {
            argv: vec![
                "sh".into(),
                "-c".into(),
                format!("cat > {} && test \"${ALARM_NAME_ENV}\" = a", out.display()),
            ],
            timeout: Duration::from_secs(10),
        };
        let (bytes, value) = notification();
        deliver("a", &action, &bytes, &value).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), bytes);
    }

    #[test]
    fn failing_missing_and_hanging_commands_fail_in_bounded_time() {
        let (bytes, value) = notification();
        let failing = Action::Command {
            argv: vec!["false".into()],
            timeout: Duration::from_secs(10),
        };
        assert!(matches!(
            deliver("a", &failing, &bytes, &value),
            Err(DeliveryError::Failed { .. })
        ));
        let missing = Action::Command {
            argv: vec!["/nonexistent/alarm-program".into()],
            timeout: Duration::from_secs(10),
        };
        let error = deliver("a", &missing, &bytes, &value).unwrap_err();
        assert!(matches!(error, DeliveryError::Start { .. }), "{error}");
        assert!(error.to_string().starts_with("cannot start"), "{error}");
        let hanging = Action::Command {
            argv: vec!["sleep".into(), "60".into()],
            timeout: Duration::from_millis(300),
        };
        let started = Instant::now();
        let error = deliver("a", &hanging, &bytes, &value).unwrap_err();
        assert!(matches!(error, DeliveryError::TimedOut { .. }), "{error}");
        assert!(error.to_string().ends_with("was killed"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn file_action_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alarms.jsonl");
        let action = Action::File { path: path.clone() };
        let (bytes, value) = notification();
        deliver("a", &action, &bytes, &value).unwrap();
        deliver("a", &action, &bytes, &value).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(serde_json::from_str::<Value>(lines[1]).unwrap(), value);
        let unwritable = Action::File {
            path: dir.path().join("missing-dir/alarms.jsonl"),
        };
        assert!(deliver("a", &unwritable, &bytes, &value).is_err());
    }

    /// Serves one request with `status`; returns the body it received.
    fn one_shot_server(status: u16) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/alarm", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
            body
        });
        (url, server)
    }

    #[test]
    fn http_action_posts_the_notification() {
        let (bytes, value) = notification();
        let (url, server) = one_shot_server(200);
        let action = Action::Http {
            url,
            timeout: Duration::from_secs(5),
        };
        deliver("a", &action, &bytes, &value).unwrap();
        assert_eq!(server.join().unwrap(), bytes);

        let (url, server) = one_shot_server(500);
        let action = Action::Http {
            url,
            timeout: Duration::from_secs(5),
        };
        assert!(deliver("a", &action, &bytes, &value).is_err());
        server.join().unwrap();
    }

    #[test]
    fn http_action_gives_up_at_its_timeout() {
        // Accepts the connection and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let action = Action::Http {
            url: format!("http://{}/alarm", listener.local_addr().unwrap()),
            timeout: Duration::from_millis(300),
        };
        let (bytes, value) = notification();
        let started = Instant::now();
        assert!(deliver("a", &action, &bytes, &value).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(listener);
    }
}
