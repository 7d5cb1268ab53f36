//! `hsm-kms serve` run as a process on a loopback port over a real SoftHSM2 cluster, driven
//! with raw HTTP/1.1 over TCP (requests signed with `aws-sigv4`): the audit trail names the
//! request id each response carried and records refused requests; server-side failures
//! reach the caller as AWS's generic text; and the connection limits (count, idle time,
//! body time) hold. Also the key counts `/metrics` reads: kept by commits, no key scans.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use common::TestCluster;
use common::server::{AccessKey, Answer, Server, signature_headers};
use serde_json::Value;

/// A running `hsm-kms serve` on its own initialised two-member cluster.
struct TestServer {
    cluster: TestCluster,
    server: Server,
    address: SocketAddr,
    key: AccessKey,
}

impl TestServer {
    /// Starts a server with these extra `[server]` settings (TOML lines).
    fn start(server_settings: &str) -> TestServer {
        let cluster = TestCluster::new(2);
        cluster.init();
        let config = format!("{}\n[server]\n{server_settings}\n", cluster.config_text);
        cluster.write_config("hsm-kms.toml", &config);
        let server = Server::start(&cluster);
        TestServer {
            address: server.address,
            key: AccessKey::of(&cluster),
            cluster,
            server,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.cluster.path("serve.log")).unwrap_or_default()
    }

    /// The headers of a `POST /` signed for `target` and `body`.
    fn signed_headers(&self, target: &str, body: &[u8]) -> Vec<(String, String)> {
        let mut headers = vec![
            (
                "Content-Type".to_owned(),
                "application/x-amz-json-1.1".to_owned(),
            ),
            ("X-Amz-Target".to_owned(), target.to_owned()),
            ("Host".to_owned(), self.address.to_string()),
        ];
        let unsigned: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let signature = signature_headers(
            &self.key,
            &format!("http://{}/", self.address),
            &unsigned,
            body,
            SystemTime::now(),
        )
        .unwrap();
        headers.extend(signature);
        headers
    }

    /// A signed call of `TrentService.<operation>` on a new connection.
    fn call(&self, operation: &str, body: &str) -> Answer {
        let headers = self.signed_headers(&format!("TrentService.{operation}"), body.as_bytes());
        self.post(&headers, body.as_bytes())
    }

    /// A `POST /` with exactly these headers, on a new connection.
    fn post(&self, headers: &[(String, String)], body: &[u8]) -> Answer {
        let mut request = String::from("POST / HTTP/1.1\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            request.push_str(&format!("Host: {}\r\n", self.address));
        }
        request.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        let mut stream = TcpStream::connect(self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        read_answer(&mut BufReader::new(stream)).unwrap()
    }
}

impl Drop for TestServer {
    /// A failed test shows the server's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("server log:\n{}", self.log());
        }
    }
}

/// Reads one response (status line, headers, `Content-Length` body); `None` when the server
/// closed the connection before sending anything. Panics when the read times out.
fn read_answer(reader: &mut impl BufRead) -> Option<Answer> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return None,
        Ok(_) => {}
        Err(error) if closed(&error) => return None,
        Err(error) => panic!("neither an answer nor a closed connection: {error}"),
    }
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').unwrap();
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// Whether a read or write failed because the server closed the connection.
fn closed(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Every audit event, oldest first, read with `hsm-kms audit list` (the server stopped).
fn audit_events(cluster: &TestCluster) -> Vec<Value> {
    let output = cluster.cli(&["audit", "list", "--format", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn audit_events_carry_the_request_id_of_the_response_and_refusals_are_recorded() {
    let mut server = TestServer::start("");
    let served = server.call("ListKeys", "{}");
    assert_eq!(served.status, 200);

    let mut tampered = server.signed_headers("TrentService.GenerateRandom", b"{}");
    let signature = tampered
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .unwrap();
    signature.1 = signature.1.replace("Signature=", "Signature=0");
    let bad_signature = server.post(&tampered, b"{}");
    assert_eq!(bad_signature.status, 400);

    let mut stranger = server.signed_headers("TrentService.ListKeys", b"{}");
    for (name, value) in &mut stranger {
        if name.eq_ignore_ascii_case("authorization") {
            *value = value.replace(&server.key.id, "AKIANOTKNOWNATALL000");
        }
    }
    let unknown_key = server.post(&stranger, b"{}");
    assert_eq!(unknown_key.status, 400);

    let unknown_operation = server.call("NoSuchOperation", "{}");
    assert_eq!(unknown_operation.status, 400);

    let secret_body = r#"{"KeyId": "alias/x", "Plaintext": "c2VjcmV0LWlu-"#;
    let malformed = server.call("Encrypt", secret_body);
    assert_eq!(malformed.status, 400);

    let no_target = server.post(&[], b"{}");
    assert_eq!(no_target.status, 400);
    server.server.stop();

    let events = audit_events(&server.cluster);
    let by_request = |answer: &Answer| -> Value {
        let id = answer.request_id().expect("every answer has a request id");
        let found: Vec<&Value> = events.iter().filter(|e| e["requestID"] == id).collect();
        assert_eq!(found.len(), 1, "one event for request {id}: {events:#?}");
        found[0].clone()
    };
    let event = by_request(&served);
    assert_eq!(event["eventName"], "ListKeys");
    assert!(event.get("errorCode").is_none());
    for (answer, event_name, code) in [
        (
            &bad_signature,
            "GenerateRandom",
            "InvalidSignatureException",
        ),
        (&unknown_key, "ListKeys", "UnrecognizedClientException"),
        (
            &unknown_operation,
            "UnknownOperation",
            "UnknownOperationException",
        ),
        (&malformed, "Encrypt", "SerializationException"),
        (
            &no_target,
            "UnknownOperation",
            "MissingAuthenticationTokenException",
        ),
    ] {
        assert_eq!(answer.json()["__type"], code);
        let event = by_request(answer);
        assert_eq!(event["eventName"], event_name, "{event:#}");
        assert_eq!(event["errorCode"], code, "{event:#}");
        assert_eq!(
            event["requestParameters"],
            serde_json::json!({}),
            "{event:#}"
        );
        assert!(
            !event.to_string().contains("c2VjcmV0"),
            "body recorded: {event:#}"
        );
    }
}

#[test]
fn server_side_failures_reach_the_caller_as_generic_text_and_the_log_in_full() {
    let server = TestServer::start("");
    let created = server.call("CreateKey", "{}");
    assert_eq!(created.status, 200);
    let key_id = created.json()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    server.cluster.hide_token("hsm-a");
    server.cluster.hide_token("hsm-b");
    let body = format!(r#"{{"KeyId": "{key_id}", "Plaintext": "AAECAw=="}}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let answer = server.call("Encrypt", &body);
        if answer.status == 500 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        failed.status,
        500,
        "{:?}",
        String::from_utf8_lossy(&failed.body)
    );
    let request_id = failed.request_id().expect("every answer has a request id");
    let error = failed.json();
    let message = error["message"].as_str().unwrap();
    for detail in ["hsm-a", "hsm-b", "CKR_", "member", "store"] {
        assert!(!message.contains(detail), "{detail} in {message}");
    }
    assert!(
        message.ends_with(&format!("(Request ID: {request_id})")),
        "{message}"
    );
    assert!(
        message.starts_with("The request was rejected because")
            || message.starts_with("The system timed out"),
        "{message}"
    );
    let log = server.log();
    let logged = log
        .lines()
        .find(|line| line.contains(request_id))
        .unwrap_or_else(|| panic!("request {request_id} not in the log:\n{log}"));
    assert!(
        logged.contains("hsm-"),
        "the log names the members: {logged}"
    );
}

#[test]
fn surplus_silent_and_slow_connections_are_cut_off() {
    let server = TestServer::start(
        "max_connections = 2\nidle_timeout_ms = 1000\nheader_timeout_ms = 4000\nbody_timeout_ms = 300",
    );
    let healthz = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.address);
    // Reads give up after 3.5 s: a close seen before that came from the idle clock (1 s),
    // not from the header clock (4 s).
    let open = || {
        let stream = TcpStream::connect(server.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(3500)))
            .unwrap();
        stream
    };

    // A keep-alive connection that was served (retried while the start-up health check's
    // connection may still hold its slot).
    let served = || {
        for _ in 0..20 {
            let mut stream = open();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            stream.write_all(healthz.as_bytes()).unwrap();
            if let Some(answer) = read_answer(&mut reader) {
                assert_eq!(answer.status, 200);
                return (stream, reader);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no connection was served");
    };

    // Two keep-alive connections are served; a third is closed without an answer.
    let (first, mut first_reader) = served();
    let (second, mut second_reader) = served();
    let mut third = open();
    let _ = third.write_all(healthz.as_bytes());
    assert!(
        read_answer(&mut BufReader::new(third)).is_none(),
        "a connection over max_connections was served"
    );

    // Silent between requests for longer than idle_timeout_ms: the server closes both.
    assert!(read_answer(&mut first_reader).is_none());
    assert!(read_answer(&mut second_reader).is_none());
    drop((first, second));

    // With the slots free again, a new connection is served.
    let mut fourth = open();
    fourth.write_all(healthz.as_bytes()).unwrap();
    assert_eq!(
        read_answer(&mut BufReader::new(fourth.try_clone().unwrap()))
            .unwrap()
            .status,
        200
    );
    drop(fourth);

    // A request head trickled a byte at a time never goes idle, but the header clock
    // (4 s from its first byte) closes it: 25 bytes 200 ms apart outlast it.
    let mut trickle = open();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let mut cut_off = false;
    for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa".iter().take(25) {
        std::thread::sleep(Duration::from_millis(200));
        if let Err(error) = trickle.write_all(&[*byte]) {
            assert!(closed(&error), "{error}");
            cut_off = true;
            break;
        }
    }
    if !cut_off {
        assert!(
            read_answer(&mut BufReader::new(trickle)).is_none(),
            "a request head trickled past header_timeout_ms was answered"
        );
    }

    // A body that stops arriving gets RequestTimeoutException once body_timeout_ms passed.
    let mut slow = open();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: TrentService.ListKeys\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 100\r\n\r\n{{\"Limit\"",
        server.address
    );
    slow.write_all(request.as_bytes()).unwrap();
    let answer = read_answer(&mut BufReader::new(slow)).expect("an answer, not a closed socket");
    assert_eq!(answer.status, 408);
    assert_eq!(answer.json()["__type"], "RequestTimeoutException");
    assert_eq!(
        answer.header("x-amzn-errortype"),
        Some("RequestTimeoutException")
    );
}

/// Counts the scans of the keys table made through the store it stands around.
struct ScanCounting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl hsm_kms::store::intercept::Interceptor for ScanCounting {
    fn scan(
        &self,
        store: &dyn hsm_kms::store::MetadataStore,
        table: hsm_kms::store::Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, hsm_kms::store::Record)>, hsm_kms::store::StoreError> {
        if table == hsm_kms::store::Table::Keys {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        store.scan(table, prefix, after, limit)
    }
}

/// What `/metrics` reads for keys pending deletion: counted when the store opens and kept by
/// each commit, never a scan of the keys per read.
#[test]
fn key_counts_follow_commits_without_reading_the_keys() {
    use hsm_kms::keys::state::KeyState;
    use hsm_kms::keystore::api::{CreateKeyRequest, KeyIdRequest, ScheduleKeyDeletionRequest};
    use std::sync::atomic::Ordering;

    let cluster = TestCluster::new(2);
    let config = cluster.config();
    hsm_kms::cluster::Cluster::init("local", config.default_cluster().unwrap()).unwrap();
    let key_scans = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let open = || {
        let hsms =
            hsm_kms::cluster::Cluster::open("local", config.default_cluster().unwrap()).unwrap();
        let metadata = hsm_kms::store::intercept::Intercepted::new(
            hsm_kms::store::SledStore::open(&config.service.data_dir).unwrap(),
            ScanCounting(key_scans.clone()),
        );
        let scope =
            hsm_kms::ids::Scope::new(&config.service.region, &config.service.account_id).unwrap();
        hsm_kms::keystore::KeyStore::with_parts(
            scope,
            hsms,
            Box::new(metadata),
            std::sync::Arc::new(hsm_kms::clock::ManualClock::new()),
            config.audit.clone(),
        )
        .unwrap()
    };
    let store = open();
    let caller = hsm_kms::keystore::Caller::local(store.scope());
    let mut keys = Vec::new();
    for _ in 0..3 {
        let created = store
            .create_key(&caller, CreateKeyRequest::default())
            .unwrap();
        keys.push(created.key_metadata.key_id);
    }
    for key in &keys[..2] {
        store
            .schedule_key_deletion(
                &caller,
                ScheduleKeyDeletionRequest {
                    key_id: key.clone(),
                    pending_window_in_days: Some(7),
                },
            )
            .unwrap();
    }
    store
        .cancel_key_deletion(
            &caller,
            KeyIdRequest {
                key_id: keys[0].clone(),
                ..Default::default()
            },
        )
        .unwrap();
    let scans_before = key_scans.load(Ordering::SeqCst);
    for _ in 0..100 {
        assert_eq!(store.keys_in_state(KeyState::PendingDeletion), 1);
        assert_eq!(store.keys_in_state(KeyState::Enabled), 1);
        assert_eq!(store.keys_in_state(KeyState::Disabled), 1);
    }
    assert_eq!(
        key_scans.load(Ordering::SeqCst),
        scans_before,
        "a read of the counts scanned the keys"
    );
    store.shutdown();
    drop(store);

    let reopened = open();
    assert_eq!(reopened.keys_in_state(KeyState::PendingDeletion), 1);
    assert_eq!(reopened.keys_in_state(KeyState::Disabled), 1);
    assert_eq!(reopened.keys_in_state(KeyState::Enabled), 1);
}
