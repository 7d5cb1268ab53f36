//! Benchmark of the deployments: Encrypt (32 bytes) and CreateKey over HTTP through one
//! `hsm-kms serve` on sled (the reference), one instance on PostgreSQL, and two instances on
//! the same PostgreSQL database with the connections split between them, all on the same
//! two-member SoftHSM2 cluster and measured in the same run: the three take turns, case by
//! case, in each of three rounds, and the figures are medians. Printed side by side with
//! the ratio to sled and a verdict per goal, never asserted.
//!
//! PostgreSQL is the one `HSM_KMS_TEST_POSTGRES_URL` names (`scripts/bench.sh` starts a
//! throw-away one, as `scripts/test.sh` does); each run makes a database of its own there.
//! Run with `cargo bench --bench instances`; `HSM_KMS_BENCH_SECS` sets the seconds per case
//! and round (default 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use common::http::{Client, Figures, Running, credentials, drive, serve, signed_request};
use common::{load_average, verdict};

const ROUNDS: usize = 3;
/// 32 bytes (0, 1, ..., 31), base64.
const PLAINTEXT_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Connections per case: Encrypt as benches/server.rs loads it; CreateKey waits on the
/// HSMs' object files, so a few callers are enough to keep them busy.
const ENCRYPT_CONNECTIONS: usize = 8;
const CREATE_KEY_CONNECTIONS: usize = 2;
/// Goals: the shared store costs reads (cached) at most half the throughput of sled, and a
/// second instance on the same machine costs nothing (it is there for availability; on one
/// machine both share its cores).
const POSTGRES_SLED_GOAL: f64 = 0.5;
const TWO_ONE_GOAL: f64 = 0.9;

#[derive(Clone, Copy, PartialEq)]
enum Operation {
    Encrypt,
    CreateKey,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Encrypt => "Encrypt 32 B",
            Operation::CreateKey => "CreateKey SYMMETRIC_DEFAULT",
        }
    }

    fn connections(self) -> usize {
        match self {
            Operation::Encrypt => ENCRYPT_CONNECTIONS,
            Operation::CreateKey => CREATE_KEY_CONNECTIONS,
        }
    }
}

/// The deployment measured.
#[derive(Clone, Copy, PartialEq)]
enum Deployment {
    Sled,
    PostgresOne,
    PostgresTwo,
}

impl Deployment {
    const ALL: [Deployment; 3] = [
        Deployment::Sled,
        Deployment::PostgresOne,
        Deployment::PostgresTwo,
    ];

    fn label(self) -> &'static str {
        match self {
            Deployment::Sled => "1 instance, sled",
            Deployment::PostgresOne => "1 instance, PostgreSQL",
            Deployment::PostgresTwo => "2 instances, PostgreSQL",
        }
    }
}

/// A running server (stopped when dropped).
struct Instance {
    _process: Running,
    address: SocketAddr,
}

impl Instance {
    fn start(binary: &str, config: &Path, log: &Path) -> Instance {
        let (process, address) = serve(binary, config, log);
        let instance = Instance {
            _process: process,
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(address).is_err() {
            assert!(Instant::now() < deadline, "{address} did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        instance
    }
}

/// One signed call, which must succeed; its JSON answer.
fn call(address: SocketAddr, credentials: &Credentials, target: &str, body: &str) -> String {
    let request = signed_request(&address.to_string(), credentials, target, body);
    let mut client = Client::connect(address, request);
    let (status, answer) = client.call();
    let answer = String::from_utf8_lossy(answer).into_owned();
    assert_eq!(status, 200, "{target}: {answer}");
    answer
}

/// `connections` threads, spread over `instances` in turn, sending `target` with `body`.
fn measure(
    instances: &[SocketAddr],
    credentials: &Credentials,
    target: &str,
    body: &str,
    connections: usize,
    measured: Duration,
) -> Figures {
    let next = std::sync::atomic::AtomicUsize::new(0);
    drive(
        connections,
        measured,
        || {
            let turn = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let address = instances[turn % instances.len()];
            let request = signed_request(&address.to_string(), credentials, target, body);
            Client::connect(address, request)
        },
        |client| {
            let (status, answer) = client.call();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(answer));
        },
    )
}

/// Makes a database of its own in the PostgreSQL `admin_url` names; its URL.
fn create_database(admin_url: &str) -> String {
    let name = format!("hsmkms_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = postgres::Client::connect(admin_url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// The cluster's config with its own data directory and, for PostgreSQL, the shared store.
fn instance_config(dir: &Path, name: &str, postgres_url_file: Option<&Path>) -> std::path::PathBuf {
    let base = std::fs::read_to_string(dir.join("hsm-kms.toml")).unwrap();
    let data_dir = dir.join(format!("data-{name}"));
    let mut text: String = base
        .lines()
        .map(|line| {
            if line.starts_with("data_dir = ") {
                format!("data_dir = {:?}\n", data_dir.display().to_string())
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    if let Some(url_file) = postgres_url_file {
        text.push_str(&format!(
            "\n[store]\nbackend = \"postgres\"\nurl = \"file:{}\"\n",
            url_file.display()
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn main() {
    let Ok(admin_url) = std::env::var("HSM_KMS_TEST_POSTGRES_URL") else {
        println!(
            "not run: HSM_KMS_TEST_POSTGRES_URL is not set (scripts/bench.sh starts a throw-away PostgreSQL and sets it)"
        );
        return;
    };
    let measured = common::seconds(2.0).unwrap();
    let binary = env!("CARGO_BIN_EXE_hsm-kms");
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("cluster");
    common::make_cluster(&dir, 2).unwrap();
    let status = Command::new(binary)
        .arg("--config")
        .arg(dir.join("hsm-kms.toml"))
        .args(["cluster", "init"])
        .output()
        .unwrap();
    assert!(status.status.success(), "cluster init failed");
    let url_file = dir.join("postgres-url");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&url_file)
            .unwrap();
        std::io::Write::write_all(&mut file, create_database(&admin_url).as_bytes()).unwrap();
    }
    let load_before = load_average();
    let sled = Instance::start(
        binary,
        &instance_config(&dir, "sled", None),
        &temp.path().join("sled.log"),
    );
    let postgres_a = Instance::start(
        binary,
        &instance_config(&dir, "postgres-a", Some(&url_file)),
        &temp.path().join("postgres-a.log"),
    );
    let postgres_b = Instance::start(
        binary,
        &instance_config(&dir, "postgres-b", Some(&url_file)),
        &temp.path().join("postgres-b.log"),
    );
    let credentials = credentials(&dir);
    let key_of = |address: SocketAddr| {
        let created = call(address, &credentials, "TrentService.CreateKey", "{}");
        let created: serde_json::Value = serde_json::from_str(&created).unwrap();
        created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
    };
    let sled_key = key_of(sled.address);
    let postgres_key = key_of(postgres_a.address);

    let operations = [Operation::Encrypt, Operation::CreateKey];
    let mut rounds: Vec<(Operation, Deployment, Vec<Figures>)> = operations
        .iter()
        .flat_map(|&operation| {
            Deployment::ALL
                .iter()
                .map(move |&deployment| (operation, deployment, Vec::new()))
        })
        .collect();
    for _ in 0..ROUNDS {
        for (operation, deployment, figures) in &mut rounds {
            let (instances, key) = match deployment {
                Deployment::Sled => (vec![sled.address], &sled_key),
                Deployment::PostgresOne => (vec![postgres_a.address], &postgres_key),
                Deployment::PostgresTwo => {
                    (vec![postgres_a.address, postgres_b.address], &postgres_key)
                }
            };
            let (target, body) = match operation {
                Operation::Encrypt => (
                    "TrentService.Encrypt",
                    format!(r#"{{"KeyId":"{key}","Plaintext":"{PLAINTEXT_B64}"}}"#),
                ),
                Operation::CreateKey => ("TrentService.CreateKey", "{}".to_owned()),
            };
            figures.push(measure(
                &instances,
                &credentials,
                target,
                &body,
                operation.connections(),
                measured,
            ));
        }
    }

    println!(
        "hsm-kms serve over loopback (HTTP/1.1 keep-alive, SigV4), one 2-member SoftHSM2 cluster, {} cores",
        common::cpus(),
    );
    println!(
        "{ROUNDS} interleaved rounds of {} s per case, medians; load average {load_before} before, {} after",
        measured.as_secs_f64(),
        load_average()
    );
    for operation in operations {
        println!(
            "\n{} ({} connections)",
            operation.name(),
            operation.connections()
        );
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>9}",
            "", "req/s", "p50 ms", "p99 ms", "/ sled"
        );
        let of = |deployment: Deployment| {
            rounds
                .iter()
                .find(|(o, d, _)| *o == operation && *d == deployment)
                .map(|(_, _, figures)| Figures::median(figures))
                .unwrap()
        };
        let reference = of(Deployment::Sled).per_second;
        for deployment in Deployment::ALL {
            let figures = of(deployment);
            println!(
                "{:<24} {:>10.1} {:>10.2} {:>10.2} {:>9.2}",
                deployment.label(),
                figures.per_second,
                figures.p50.as_secs_f64() * 1e3,
                figures.p99.as_secs_f64() * 1e3,
                figures.per_second / reference
            );
        }
        let postgres_one = of(Deployment::PostgresOne).per_second;
        let postgres_two = of(Deployment::PostgresTwo).per_second;
        let ratio = postgres_one / reference;
        println!(
            "  1 on PostgreSQL / 1 on sled   {ratio:>6.2}   goal >= {POSTGRES_SLED_GOAL}: {}",
            verdict(ratio >= POSTGRES_SLED_GOAL)
        );
        let ratio = postgres_two / postgres_one;
        println!(
            "  2 on PostgreSQL / 1           {ratio:>6.2}   goal >= {TWO_ONE_GOAL}: {}",
            verdict(ratio >= TWO_ONE_GOAL)
        );
    }
    drop((sled, postgres_a, postgres_b));
}
