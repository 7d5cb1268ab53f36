//! `hsm-kms serve` as a child process on a free loopback port, and an AWS KMS JSON 1.1
//! client that signs with `aws-sigv4` (the Rust SDK's signer) over `ureq`, keeping its
//! connections alive.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::{Value, json};

use super::TestCluster;

/// The region the cluster script configures.
const REGION: &str = "us-east-1";
/// No single HTTP call or server start may take longer than this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a member may take to change health as the server sees it.
const HEALTH_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `hsm-kms serve` child process on a free loopback port.
pub struct Server {
    pub child: Child,
    pub address: SocketAddr,
    pub endpoint: String,
    log: PathBuf,
}

impl Server {
    /// Starts the server and waits until `/healthz` answers 200.
    pub fn start(cluster: &TestCluster) -> Server {
        Server::start_crashing_at(cluster, None)
    }

    /// Starts the server, set to abort at the named crash point (see `hsm_kms::fault`).
    pub fn start_crashing_at(cluster: &TestCluster, crash_at: Option<&str>) -> Server {
        Server::start_with(
            cluster,
            &cluster.path("hsm-kms.toml"),
            "serve.log",
            crash_at,
        )
    }

    /// Starts a server of `cluster` with the config file `config`, logging to `log_name` in
    /// the cluster's directory (one instance of several, each with its own config).
    pub fn start_with(
        cluster: &TestCluster,
        config: &std::path::Path,
        log_name: &str,
        crash_at: Option<&str>,
    ) -> Server {
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = File::options()
            .create(true)
            .append(true)
            .open(cluster.path(log_name))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hsm-kms"));
        command
            .arg("--config")
            .arg(config)
            .args(["serve", "--listen", &address.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(point) = crash_at {
            command.env(hsm_kms::fault::CRASH_AT_ENV, point);
        }
        let child = command.spawn().unwrap();
        let mut server = Server {
            child,
            address,
            endpoint: format!("http://{address}"),
            log: cluster.path(log_name),
        };
        let agent = agent();
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("hsm-kms serve exited with {status}:\n{}", tail(&server.log));
            }
            let healthy = agent
                .get(format!("{}/healthz", server.endpoint))
                .call()
                .is_ok_and(|response| response.status() == 200);
            if healthy {
                return server;
            }
            if Instant::now() > deadline {
                server.kill();
                panic!(
                    "hsm-kms serve did not become healthy:\n{}",
                    tail(&server.log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and reap the process: a graceful stop, which must exit 0 within
    /// [`STOP_TIMEOUT`].
    pub fn stop(&mut self) {
        let signalled = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(signalled.success(), "kill -TERM failed: {signalled}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "hsm-kms serve did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                    tail(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "hsm-kms serve exited with {status}:\n{}",
            tail(&self.log)
        );
    }

    /// `/healthz` as member name -> healthy, or `None` while the server does not answer.
    pub fn health(&self) -> Option<BTreeMap<String, bool>> {
        let mut response = agent()
            .get(format!("{}/healthz", self.endpoint))
            .call()
            .ok()?;
        let body = response.body_mut().read_to_vec().ok()?;
        let health: Value = serde_json::from_slice(&body).ok()?;
        Some(
            health["members"]
                .as_array()?
                .iter()
                .map(|member| {
                    (
                        member["name"].as_str().unwrap_or_default().to_owned(),
                        member["healthy"].as_bool().unwrap_or(false),
                    )
                })
                .collect(),
        )
    }

    /// Waits until the server sees `member` as `healthy`.
    pub fn wait_for(&self, member: &str, healthy: bool) {
        let deadline = Instant::now() + HEALTH_CHANGE_TIMEOUT;
        while self
            .health()
            .and_then(|members| members.get(member).copied())
            != Some(healthy)
        {
            assert!(
                Instant::now() < deadline,
                "the server never saw {member} healthy={healthy}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    /// A failed test leaves no server behind (killing a reaped one is a no-op error).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last few thousand bytes of the cluster's server log.
pub fn log_tail(cluster: &TestCluster) -> String {
    tail(&cluster.path("serve.log"))
}

fn tail(log: &std::path::Path) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let start = log.len().saturating_sub(4000);
    String::from_utf8_lossy(&log.as_bytes()[start..]).into_owned()
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(CALL_TIMEOUT))
        .build()
        .into()
}

/// The development credential the cluster script wrote.
#[derive(Clone)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

impl AccessKey {
    pub fn of(cluster: &TestCluster) -> AccessKey {
        let text = std::fs::read_to_string(cluster.path("credentials")).unwrap();
        let value = |name: &str| {
            text.lines()
                .filter_map(|line| line.split_once('='))
                .find(|(key, _)| key.trim() == name)
                .map(|(_, value)| value.trim().to_owned())
                .unwrap()
        };
        AccessKey {
            id: value("aws_access_key_id"),
            secret: value("aws_secret_access_key"),
        }
    }
}

/// The headers `aws-sigv4` adds to sign a `POST /` to `url` with `headers` and `body` at
/// `time`, as the AWS SDKs sign it.
pub fn signature_headers(
    key: &AccessKey,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity =
        aws_credential_types::Credentials::new(&key.id, &key.secret, None, None, "hsm-kms-tests")
            .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("kms")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign: {e}"))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("cannot sign: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of a header, by its name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The `x-amzn-RequestId` the server gave this answer.
    pub fn request_id(&self) -> Option<&str> {
        self.header("x-amzn-requestid")
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What the server answered a KMS call.
#[derive(Debug)]
pub enum Reply {
    Ok(Value),
    Error { code: String, message: String },
}

/// An AWS KMS JSON 1.1 client that signs with `aws-sigv4`, as the Rust SDK does.
pub struct Client {
    agent: ureq::Agent,
    endpoint: String,
    key: AccessKey,
}

impl Client {
    pub fn new(server: &Server, key: &AccessKey) -> Client {
        Client::to(&server.endpoint, key)
    }

    /// A client of the endpoint `endpoint` (`http://ADDRESS`).
    pub fn to(endpoint: &str, key: &AccessKey) -> Client {
        Client {
            agent: agent(),
            endpoint: endpoint.to_owned(),
            key: key.clone(),
        }
    }

    /// One call; `Err` when no complete answer came back (the call is in flight).
    pub fn call(&self, operation: &str, body: &Value) -> Result<Reply, String> {
        self.call_with_id(operation, body).map(|(reply, _)| reply)
    }

    /// One call, with the `x-amzn-RequestId` of its answer.
    pub fn call_with_id(
        &self,
        operation: &str,
        body: &Value,
    ) -> Result<(Reply, Option<String>), String> {
        let answer = self.answer(operation, body)?;
        let value = answer.json();
        let request_id = answer.request_id().map(str::to_owned);
        if answer.status == 200 {
            return Ok((Reply::Ok(value), request_id));
        }
        let reply = Reply::Error {
            code: value["__type"]
                .as_str()
                .map_or_else(|| format!("HTTP {}", answer.status), str::to_owned),
            message: value["message"].as_str().map_or_else(
                || String::from_utf8_lossy(&answer.body).into_owned(),
                str::to_owned,
            ),
        };
        Ok((reply, request_id))
    }

    /// One signed call of `TrentService.<operation>`, answered as it came (status, headers,
    /// body); `Err` when no complete answer came back.
    pub fn answer(&self, operation: &str, body: &Value) -> Result<Answer, String> {
        let body = serde_json::to_vec(body).unwrap();
        let target = format!("TrentService.{operation}");
        self.send(
            &[
                ("X-Amz-Target", target.as_str()),
                ("Content-Type", "application/x-amz-json-1.1"),
            ],
            &body,
            true,
        )
    }

    /// POSTs `body` to `/` with `headers`, signed with `aws-sigv4` (signing every header
    /// given) when `signed`; `Err` when no complete answer came back.
    pub fn send(
        &self,
        headers: &[(&str, &str)],
        body: &[u8],
        signed: bool,
    ) -> Result<Answer, String> {
        let url = format!("{}/", self.endpoint);
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        if signed {
            all.extend(signature_headers(
                &self.key,
                &url,
                headers,
                body,
                SystemTime::now(),
            )?);
        }
        let mut request = self.agent.post(&url);
        for (name, value) in &all {
            request = request.header(name, value);
        }
        let mut response = request.send(body).map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .body_mut()
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// A call the checker needs to succeed.
    pub fn must(&self, operation: &str, body: &Value) -> Value {
        match self.call(operation, body) {
            Ok(Reply::Ok(value)) => value,
            other => panic!("checker call {operation} {body} failed: {other:?}"),
        }
    }

    /// Every page of a `List*` call, concatenated.
    pub fn list(&self, operation: &str, mut body: Value, member: &str) -> Vec<Value> {
        let mut items = Vec::new();
        loop {
            let page = self.must(operation, &body);
            items.extend(page[member].as_array().cloned().unwrap_or_default());
            match page["NextMarker"].as_str() {
                Some(marker) if page["Truncated"] == json!(true) => body["Marker"] = json!(marker),
                _ => return items,
            }
        }
    }
}
