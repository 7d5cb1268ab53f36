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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::TestCluster;
use common::server::{AccessKey, Client, Server};
use serde_json::{Value, json};

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

/// Initialises the cluster and starts serving it (members reconnect every 200 ms).
fn start(tc: &TestCluster) -> Server {
    let text = tc.config_text.replacen(
        "[clusters.local]\n",
        "[clusters.local]\nreconnect_interval_ms = 200\n",
        1,
    );
    assert_ne!(text, tc.config_text, "cluster table not found");
    tc.write_config("hsm-kms.toml", &text);
    tc.init();
    Server::start(tc)
}

/// Calls `TrentService.<operation>`; returns the status and the JSON body.
fn call(client: &Client, operation: &str, body: &Value) -> (u16, Value) {
    let answer = client.answer(operation, body).unwrap();
    (answer.status, answer.json())
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
/// one keep-alive connection until `stop`, checking every plaintext.
fn load(
    server: &Server,
    key: &AccessKey,
    keys: &Arc<Mutex<Vec<String>>>,
    stop: &Arc<AtomicBool>,
    thread: usize,
) -> std::thread::JoinHandle<Tally> {
    let client = Client::new(server, key);
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
            let encrypted = call(
                &client,
                "Encrypt",
                &json!({ "KeyId": key, "Plaintext": plaintext, "EncryptionContext": context }),
            );
            if let Some(body) = tally.check("Encrypt", encrypted) {
                let decrypted = call(
                    &client,
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
            let generated = call(
                &client,
                "GenerateDataKey",
                &json!({ "KeyId": key, "KeySpec": "AES_256" }),
            );
            if let Some(data_key) = tally.check("GenerateDataKey", generated) {
                let decrypted = call(
                    &client,
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

fn create_key(client: &Client) -> (u16, Value) {
    call(client, "CreateKey", &json!({}))
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
    let mut server = start(&tc);
    let key = AccessKey::of(&tc);
    let client = Client::new(&server, &key);
    let (status, created) = create_key(&client);
    assert_eq!(status, 200, "{created}");
    let keys = Arc::new(Mutex::new(vec![key_id(&created)]));
    let stop = Arc::new(AtomicBool::new(false));
    let quarter = load_duration() / 4;
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| load(&server, &key, &keys, &stop, thread))
        .collect();

    std::thread::sleep(quarter);
    tc.hide_token("hsm-c");
    server.wait_for("hsm-c", false);
    // A key created while hsm-c is away exists only on hsm-a and hsm-b for now.
    let (status, created) = create_key(&client);
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
    let mut server = start(&tc);
    let key = AccessKey::of(&tc);
    let client = Client::new(&server, &key);
    let (status, created) = create_key(&client);
    assert_eq!(status, 200, "{created}");
    let keys = Arc::new(Mutex::new(vec![key_id(&created)]));
    let stop = Arc::new(AtomicBool::new(false));
    let quarter = load_duration() / 4;
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| load(&server, &key, &keys, &stop, thread))
        .collect();

    std::thread::sleep(quarter);
    tc.hide_token("hsm-b");
    server.wait_for("hsm-b", false);
    // One HSM left: no new key material (AWS: CreateKey needs two active HSMs).
    let (status, refused) = create_key(&client);
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
    let (status, created) = create_key(&client);
    assert_eq!(
        status, 200,
        "CreateKey after the member returned: {created}"
    );
    server.stop();
}
