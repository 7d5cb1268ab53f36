//! HSM loss under load, through `hsm-kms serve` over loopback with a SigV4-signing HTTP/1.1
//! client: eight client threads run Encrypt, Decrypt and GenerateDataKey while one member's
//! token is taken away and given back. With three members no request may fail, and a key
//! created while the member was away must be on it again within 30 s of its return, without
//! a restart. With two members the only errors allowed are the documented ones.
//!
//! `HSM_KMS_LOSS_SECS` sets how long the load runs (default 8 s; the member is away for the
//! middle half of it), for a longer soak.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::TestCluster;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const REGION: &str = "us-east-1";
const THREADS: usize = 8;
/// How long a returning member may take to hold every key again.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// How long the load runs.
fn load_duration() -> Duration {
    Duration::from_secs(
        std::env::var("HSM_KMS_LOSS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(8)
            .max(4),
    )
}

// ---- SigV4 and a keep-alive HTTP/1.1 client ----

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYYMMDD'T'HHMMSS'Z'` of a Unix time (days to civil date after H. Hinnant).
fn amz_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let seconds = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// One keep-alive connection sending SigV4-signed AWS KMS calls.
struct Client {
    address: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    access_key: String,
    secret: String,
}

impl Client {
    fn connect(address: SocketAddr, (access_key, secret): &(String, String)) -> Client {
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Client {
            address,
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            access_key: access_key.clone(),
            secret: secret.clone(),
        }
    }

    /// Calls operation `TrentService.<operation>`; returns the status and the JSON body.
    fn call(&mut self, operation: &str, body: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(body).unwrap();
        let target = format!("TrentService.{operation}");
        let host = self.address.to_string();
        let date = amz_date(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
        let day = &date[..8];
        let signed = "content-type;host;x-amz-date;x-amz-target";
        let canonical = format!(
            "POST\n/\n\ncontent-type:application/x-amz-json-1.1\nhost:{host}\nx-amz-date:{date}\nx-amz-target:{target}\n\n{signed}\n{}",
            hex(&Sha256::digest(&body))
        );
        let scope = format!("{day}/{REGION}/kms/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{}", self.secret).as_bytes(), day.as_bytes());
        for part in [REGION.as_bytes(), b"kms", b"aws4_request"] {
            key = hmac(&key, part);
        }
        let signature = hex(&hmac(&key, to_sign.as_bytes()));
        let mut request = format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: {target}\r\nX-Amz-Date: {date}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}\r\nContent-Length: {}\r\n\r\n",
            self.access_key,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        self.writer.write_all(&request).unwrap();
        self.read_response()
    }

    fn read_response(&mut self) -> (u16, Value) {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

// ---- the server ----

/// `hsm-kms serve` on a free loopback port; stopped with SIGTERM when dropped.
struct Server {
    child: Option<Child>,
    address: SocketAddr,
    credentials: (String, String),
}

impl Server {
    /// Initialises the cluster and starts serving it (members reconnect every 200 ms).
    fn start(tc: &TestCluster) -> Server {
        let text = tc.config_text.replacen(
            "[clusters.local]\n",
            "[clusters.local]\nreconnect_interval_ms = 200\n",
            1,
        );
        assert_ne!(text, tc.config_text, "cluster table not found");
        tc.write_config("hsm-kms.toml", &text);
        let init = tc.cli(&["cluster", "init"]);
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = std::fs::File::create(tc.path("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
            .arg("--config")
            .arg(tc.path("hsm-kms.toml"))
            .args(["serve", "--listen", &address.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Server {
            child: Some(child),
            address,
            credentials: credentials(tc),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.health().is_none() {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn client(&self) -> Client {
        Client::connect(self.address, &self.credentials)
    }

    /// `/healthz`: member name -> healthy, or `None` while the server does not answer.
    fn health(&self) -> Option<BTreeMap<String, bool>> {
        let mut stream = TcpStream::connect(self.address).ok()?;
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        let health: Value = serde_json::from_str(body).ok()?;
        Some(
            health["members"]
                .as_array()?
                .iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or_default().to_owned(),
                        m["healthy"].as_bool().unwrap_or(false),
                    )
                })
                .collect(),
        )
    }

    /// Waits until the server sees `member` as `healthy`.
    fn wait_for(&self, member: &str, healthy: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
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

    /// Stops the server with SIGTERM; it must exit 0.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let status = terminate(&mut child);
        assert!(status.success(), "serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap()
}

/// The access key and secret of profile hsm-kms in the cluster's credentials file.
fn credentials(tc: &TestCluster) -> (String, String) {
    let text = std::fs::read_to_string(tc.path("credentials")).unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| {
                let (key, value) = line.split_once('=')?;
                (key.trim() == name).then(|| value.trim().to_owned())
            })
            .unwrap()
    };
    (value("aws_access_key_id"), value("aws_secret_access_key"))
}

// ---- the load ----

/// Requests that succeeded and the ones that failed (operation, status, error type).
#[derive(Default)]
struct Tally {
    ok: usize,
    failed: Vec<(String, u16, String)>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed.extend(other.failed);
    }

    /// Counts a response; returns the body when it succeeded.
    fn check(&mut self, operation: &str, (status, body): (u16, Value)) -> Option<Value> {
        if status == 200 {
            self.ok += 1;
            Some(body)
        } else {
            self.failed.push((
                operation.to_owned(),
                status,
                format!("{} {}", body["__type"], body["message"]),
            ));
            None
        }
    }
}

/// Runs Encrypt + Decrypt and GenerateDataKey + Decrypt round trips over the `keys` from
/// one connection until `stop`, checking every plaintext.
fn load(
    server: &Server,
    keys: &Arc<Mutex<Vec<String>>>,
    stop: &Arc<AtomicBool>,
    thread: usize,
) -> std::thread::JoinHandle<Tally> {
    let mut client = server.client();
    let (keys, stop) = (keys.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut tally = Tally::default();
        let mut round = thread;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            let key = {
                let keys = keys.lock().unwrap();
                keys[round % keys.len()].clone()
            };
            let plaintext = STANDARD.encode(format!("thread {thread} round {round}"));
            let context = json!({ "thread": thread.to_string() });
            let encrypted = client.call(
                "Encrypt",
                &json!({ "KeyId": key, "Plaintext": plaintext, "EncryptionContext": context }),
            );
            if let Some(body) = tally.check("Encrypt", encrypted) {
                let decrypted = client.call(
                    "Decrypt",
                    &json!({ "CiphertextBlob": body["CiphertextBlob"], "EncryptionContext": context }),
                );
                if let Some(body) = tally.check("Decrypt", decrypted) {
                    assert_eq!(body["Plaintext"], json!(plaintext), "Decrypt round trip");
                    assert_eq!(
                        body["KeyId"].as_str().unwrap().rsplit('/').next(),
                        Some(key.as_str())
                    );
                }
            }
            let generated = client.call(
                "GenerateDataKey",
                &json!({ "KeyId": key, "KeySpec": "AES_256" }),
            );
            if let Some(data_key) = tally.check("GenerateDataKey", generated) {
                let decrypted = client.call(
                    "Decrypt",
                    &json!({ "CiphertextBlob": data_key["CiphertextBlob"] }),
                );
                if let Some(body) = tally.check("Decrypt", decrypted) {
                    assert_eq!(
                        body["Plaintext"], data_key["Plaintext"],
                        "data key round trip"
                    );
                }
            }
        }
        tally
    })
}

fn create_key(server: &Server) -> (u16, Value) {
    server.client().call("CreateKey", &json!({}))
}

fn key_id(body: &Value) -> String {
    body["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
}

/// How many members hold material version 1 of `key`, by `cluster status --json` (a second
/// process reading the HSMs beside the server).
fn copies_of(tc: &TestCluster, key: &str) -> usize {
    let output = tc.cli(&["cluster", "status", "--json"]);
    let Ok(status) = serde_json::from_slice::<Value>(&output.stdout) else {
        return 0;
    };
    let material = format!("{key}/1");
    status["key_copies"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["material"] == json!(material)))
        .and_then(|k| k["copies"].as_u64())
        .unwrap_or(0) as usize
}

#[test]
fn three_members_lose_one_under_load_and_fail_nothing() {
    let tc = TestCluster::new(3);
    let server = Server::start(&tc);
    let (status, created) = create_key(&server);
    assert_eq!(status, 200, "{created}");
    let keys = Arc::new(Mutex::new(vec![key_id(&created)]));
    let stop = Arc::new(AtomicBool::new(false));
    let quarter = load_duration() / 4;
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| load(&server, &keys, &stop, thread))
        .collect();

    std::thread::sleep(quarter);
    tc.hide_token("hsm-c");
    server.wait_for("hsm-c", false);
    // A key created while hsm-c is away exists only on hsm-a and hsm-b for now.
    let (status, created) = create_key(&server);
    assert_eq!(
        status, 200,
        "CreateKey with two of three members: {created}"
    );
    let away = key_id(&created);
    keys.lock().unwrap().push(away.clone());
    std::thread::sleep(quarter * 2);
    tc.restore_token("hsm-c");
    let returned = Instant::now();
    server.wait_for("hsm-c", true);
    std::thread::sleep(quarter);
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for thread in threads {
        tally.add(thread.join().unwrap());
    }
    eprintln!(
        "{} requests succeeded, {} failed",
        tally.ok,
        tally.failed.len()
    );
    assert!(tally.ok > 100, "too little load: {} requests", tally.ok);
    assert!(
        tally.failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        tally.failed.len(),
        tally.ok + tally.failed.len(),
        &tally.failed[..tally.failed.len().min(5)]
    );

    // hsm-c holds the key created while it was away, without a restart.
    while copies_of(&tc, &away) < 3 {
        assert!(
            returned.elapsed() < CATCH_UP_LIMIT,
            "{away} was not copied onto hsm-c within {CATCH_UP_LIMIT:?} of its return"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    server.stop();
    // The copy is in the audit trail.
    let events = tc.cli(&[
        "audit",
        "list",
        "--filter",
        r#"{ $.eventName = "HsmMaterialCopied" }"#,
    ]);
    let text = String::from_utf8_lossy(&events.stdout);
    assert!(
        text.contains(&away) && text.contains("hsm-c"),
        "no HsmMaterialCopied event for {away}: {text} {}",
        String::from_utf8_lossy(&events.stderr)
    );
}

#[test]
fn two_members_lose_one_under_load_with_documented_errors_only() {
    let tc = TestCluster::new(2);
    let server = Server::start(&tc);
    let (status, created) = create_key(&server);
    assert_eq!(status, 200, "{created}");
    let keys = Arc::new(Mutex::new(vec![key_id(&created)]));
    let stop = Arc::new(AtomicBool::new(false));
    let quarter = load_duration() / 4;
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| load(&server, &keys, &stop, thread))
        .collect();

    std::thread::sleep(quarter);
    tc.hide_token("hsm-b");
    server.wait_for("hsm-b", false);
    // One HSM left: no new key material (AWS: CreateKey needs two active HSMs).
    let (status, refused) = create_key(&server);
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["__type"], "CloudHsmClusterInvalidConfigurationException",
        "{refused}"
    );
    std::thread::sleep(quarter * 2);
    tc.restore_token("hsm-b");
    server.wait_for("hsm-b", true);
    std::thread::sleep(quarter);
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for thread in threads {
        tally.add(thread.join().unwrap());
    }
    eprintln!(
        "{} requests succeeded, {} failed",
        tally.ok,
        tally.failed.len()
    );
    assert!(tally.ok > 100, "too little load: {} requests", tally.ok);
    // Crypto needs one HSM: a call in flight on the member that vanished is retried on the
    // survivor. Anything that does fail must be an error AWS documents for it.
    let undocumented: Vec<_> = tally
        .failed
        .iter()
        .filter(|(_, _, error)| !error.contains("KeyUnavailableException"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "undocumented errors: {undocumented:?}"
    );
    let (status, created) = create_key(&server);
    assert_eq!(
        status, 200,
        "CreateKey after the member returned: {created}"
    );
    server.stop();
}
