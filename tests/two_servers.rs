//! Two `hsm-kms serve` processes on one PostgreSQL database and one two-member SoftHSM2
//! cluster, driven over HTTP with SigV4 by clients that alternate between them: a key made
//! on one is used on the other, a key disabled on one is refused by the other within a
//! second, an alias raced on both has one winner, a SIGKILLed instance costs clients that
//! retry on the other endpoint no request, and the background work's leadership moves to
//! the survivor.
//!
//! Every test skips, saying so, when `HSM_KMS_TEST_POSTGRES_URL` is not set;
//! `scripts/test.sh` always sets it. `HSM_KMS_TEST_CONSISTENCY_TRIALS` sets the DisableKey
//! trials (25 by default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::postgres_db::TestDatabase;
use common::server::{AccessKey, Client, Reply, Server};
use common::{TestCluster, write_secret_file};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// The longest a change on one instance may take to be seen by the other.
const CONSISTENCY_BOUND: Duration = Duration::from_secs(1);
/// The longest the survivor may take to become leader after the leader dies.
const HAND_OVER_BOUND: Duration = Duration::from_secs(10);

/// Two servers on one fresh database and one initialised cluster.
struct TwoServers {
    a: Server,
    b: Server,
    key: AccessKey,
    cluster: TestCluster,
    _database: TestDatabase,
}

impl TwoServers {
    fn start() -> Option<TwoServers> {
        let database = TestDatabase::create()?;
        let cluster = TestCluster::new(2);
        cluster.init();
        let url_file = cluster.path("postgres-url");
        write_secret_file(&url_file, database.url.expose_secret());
        let base = std::fs::read_to_string(cluster.path("hsm-kms.toml")).unwrap();
        let config = |instance: &str| {
            // Each instance has its own data directory (admin socket, alarm file) and
            // shares the metadata store.
            let data_dir = cluster.path(&format!("data-{instance}"));
            let text: String = base
                .lines()
                .map(|line| {
                    if line.starts_with("data_dir = ") {
                        format!("data_dir = {:?}\n", data_dir.display().to_string())
                    } else {
                        format!("{line}\n")
                    }
                })
                .collect();
            let text = format!(
                "{text}\n[store]\nbackend = \"postgres\"\nurl = \"file:{}\"\n",
                url_file.display()
            );
            cluster.write_config(&format!("instance-{instance}.toml"), &text)
        };
        let (config_a, config_b) = (config("a"), config("b"));
        let a = Server::start_with(&cluster, &config_a, "serve-a.log", None);
        let b = Server::start_with(&cluster, &config_b, "serve-b.log", None);
        Some(TwoServers {
            a,
            b,
            key: AccessKey::of(&cluster),
            cluster,
            _database: database,
        })
    }

    fn clients(&self) -> (Client, Client) {
        (
            Client::new(&self.a, &self.key),
            Client::new(&self.b, &self.key),
        )
    }
}

fn error_code(reply: Result<Reply, String>) -> String {
    match reply {
        Ok(Reply::Error { code, .. }) => code,
        other => panic!("expected a KMS error, got {other:?}"),
    }
}

/// Whether `server` says it is the leader in `/metrics`; `None` when it does not answer.
fn leads(server: &Server) -> Option<bool> {
    let text = common::server::agent()
        .get(format!("{}/metrics", server.endpoint))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    let line = text
        .lines()
        .find(|line| line.starts_with("hsm_kms_leader "))?;
    Some(line.ends_with(" 1"))
}

#[test]
fn a_key_made_on_one_instance_is_used_and_disabled_through_the_other() {
    let Some(servers) = TwoServers::start() else {
        return;
    };
    let (a, b) = servers.clients();
    let key_id = a.must("CreateKey", &json!({}))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let encrypted = b.must(
        "Encrypt",
        &json!({ "KeyId": key_id, "Plaintext": "aGVsbG8=" }),
    );
    let decrypted = a.must(
        "Decrypt",
        &json!({ "CiphertextBlob": encrypted["CiphertextBlob"] }),
    );
    assert_eq!(decrypted["Plaintext"], "aGVsbG8=");

    // DisableKey on one, Encrypt refused on the other within a second, every time.
    let mut worst = Duration::ZERO;
    let trials = common::postgres_db::consistency_trials(25);
    for trial in 0..trials {
        let (changer, reader) = if trial % 2 == 0 { (&a, &b) } else { (&b, &a) };
        // Warm the reader's cache with the enabled key first.
        reader.must("Encrypt", &json!({ "KeyId": key_id, "Plaintext": "aGk=" }));
        changer.must("DisableKey", &json!({ "KeyId": key_id }));
        let disabled = Instant::now();
        loop {
            let reply = reader.call("Encrypt", &json!({ "KeyId": key_id, "Plaintext": "aGk=" }));
            match reply {
                Ok(Reply::Error { code, .. }) if code == "DisabledException" => break,
                Ok(Reply::Ok(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
            assert!(
                disabled.elapsed() < CONSISTENCY_BOUND,
                "trial {trial}: still encrypting {:?} after DisableKey on the other instance",
                disabled.elapsed()
            );
        }
        worst = worst.max(disabled.elapsed());
        changer.must("EnableKey", &json!({ "KeyId": key_id }));
        // Enabled again on both before the next trial.
        let enabled = Instant::now();
        while !matches!(
            reader.call("Encrypt", &json!({ "KeyId": key_id, "Plaintext": "aGk=" })),
            Ok(Reply::Ok(_))
        ) {
            assert!(enabled.elapsed() < CONSISTENCY_BOUND);
        }
    }
    println!(
        "DisableKey on one instance refused on the other: worst {worst:?} over {trials} trials"
    );
}

#[test]
fn an_alias_raced_on_both_instances_has_one_winner() {
    let Some(servers) = TwoServers::start() else {
        return;
    };
    let (a, b) = servers.clients();
    let key_id = a.must("CreateKey", &json!({}))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    for round in 0..10 {
        let name = format!("alias/race-{round}");
        let barrier = Barrier::new(2);
        let create = |client: &Client| {
            barrier.wait();
            client
                .call(
                    "CreateAlias",
                    &json!({ "AliasName": name, "TargetKeyId": key_id }),
                )
                .unwrap()
        };
        let (from_a, from_b) = std::thread::scope(|scope| {
            let from_a = scope.spawn(|| create(&a));
            let from_b = scope.spawn(|| create(&b));
            (from_a.join().unwrap(), from_b.join().unwrap())
        });
        let winners = [&from_a, &from_b]
            .iter()
            .filter(|reply| matches!(reply, Reply::Ok(_)))
            .count();
        assert_eq!(winners, 1, "round {round}: {from_a:?} {from_b:?}");
        let loser = if matches!(from_a, Reply::Ok(_)) {
            from_b
        } else {
            from_a
        };
        assert_eq!(
            error_code(Ok(loser)),
            "AlreadyExistsException",
            "round {round}"
        );
    }
    let aliases = b.list("ListAliases", json!({ "KeyId": key_id }), "Aliases");
    assert_eq!(aliases.len(), 10);
}

#[test]
fn a_killed_instance_costs_retrying_clients_nothing_and_hands_over_leadership() {
    let Some(mut servers) = TwoServers::start() else {
        return;
    };
    let (a, _) = servers.clients();
    let key_id = a.must("CreateKey", &json!({}))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();

    // One leader between them.
    let deadline = Instant::now() + HAND_OVER_BOUND;
    let leader_is_a = loop {
        match (leads(&servers.a), leads(&servers.b)) {
            (Some(true), Some(false)) => break true,
            (Some(false), Some(true)) => break false,
            (Some(true), Some(true)) => panic!("two leaders"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "no leader was elected");
        std::thread::sleep(Duration::from_millis(100));
    };

    // Clients alternate between the endpoints and retry a call that got no answer (or a
    // server error) on the other one.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let endpoints = [servers.a.endpoint.clone(), servers.b.endpoint.clone()];
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            let key = servers.key.clone();
            let (endpoints, key_id) = (endpoints.clone(), key_id.clone());
            std::thread::spawn(move || {
                let clients: Vec<Client> = endpoints
                    .iter()
                    .map(|endpoint| Client::to(endpoint, &key))
                    .collect();
                let mut turn = worker;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({ "KeyId": key_id, "Plaintext": "bG9hZA==" });
                    let first = turn % 2;
                    turn += 1;
                    let answered = [first, 1 - first]
                        .iter()
                        .any(|&i| matches!(clients[i].call("Encrypt", &body), Ok(Reply::Ok(_))));
                    if answered {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let before = done.load(Ordering::Relaxed);
    let (killed, survivor) = if leader_is_a {
        (&mut servers.a, &servers.b)
    } else {
        (&mut servers.b, &servers.a)
    };
    killed.kill();
    let killed_at = Instant::now();
    let took_over = loop {
        if leads(survivor) == Some(true) {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < HAND_OVER_BOUND,
            "the survivor did not take over within {HAND_OVER_BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let after = done.load(Ordering::Relaxed);
    println!(
        "{after} Encrypt calls ({} after the SIGKILL), {} failed; leadership taken over in {took_over:?}",
        after - before,
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(after > before, "the survivor kept serving");
}

#[test]
fn the_cli_reaches_each_instance_through_its_admin_socket() {
    let Some(servers) = TwoServers::start() else {
        return;
    };
    let cli = |instance: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
            .arg("--config")
            .arg(servers.cluster.path(&format!("instance-{instance}.toml")))
            .args(args)
            .output()
            .unwrap()
    };
    let created = cli(
        "a",
        &[
            "create-key",
            "--query",
            "KeyMetadata.KeyId",
            "--output",
            "text",
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let key_id = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let described = cli("b", &["describe-key", "--key-id", &key_id]);
    assert!(described.status.success());
    let described: Value = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!(described["KeyMetadata"]["KeyState"], "Enabled");
    assert!(servers.cluster.path("data-a/admin.sock").exists());
    assert!(servers.cluster.path("data-b/admin.sock").exists());
    // One audit chain for both.
    let verified = cli("b", &["audit", "verify"]);
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("intact"),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}
