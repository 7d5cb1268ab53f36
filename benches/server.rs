//! Load benchmark of `hsm-kms serve`: Encrypt (32 bytes) and GenerateDataKey (AES_256) at 1
//! and 8 keep-alive connections over loopback, against the library called in-process on the
//! same two-member SoftHSM2 cluster and, for Encrypt, against `moto_server` (an in-memory
//! emulator with no HSM, the usual stand-in in tests) when `HSM_KMS_BENCH_MOTO` names its
//! executable (`scripts/bench.sh` installs it from PyPI).
//!
//! The three take turns, case by case, in every one of five rounds, so that load from
//! elsewhere hits them alike; the figures are medians of the rounds. The server and the
//! library each have a data directory of their own on the same tokens (sled allows one
//! process per directory). Requests are signed with the `aws-sigv4` crate: each connection
//! signs its request once per round and sends it again and again, so the load generator's
//! CPU, which shares the machine's cores with the server, goes to its socket only; the
//! server verifies every signature as it always does. The load generator's threads run in
//! Linux's `SCHED_BATCH` class ([`LoadClass::Batch`]): woken by a response, a thread waits for
//! the server's thread to yield instead of preempting it, as a client on another machine never
//! would. For reference, Encrypt is also measured with the load generator in the normal class
//! (the `server*` rows); the goals use the others. Figures are printed with their goals and
//! verdicts, never asserted.
//!
//! Run with `cargo bench --bench server`; `HSM_KMS_BENCH_SECS` sets the seconds per case and
//! round (default 1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use hsm_kms::caller::Caller;
use hsm_kms::keystore::KeyStore;
use hsm_kms::keystore::api::{CreateKeyRequest, EncryptRequest, GenerateDataKeyRequest};
use secrecy::SecretSlice;

use common::http::{
    Client, Figures, LoadClass, Running, credentials, drive, free_port, serve, signed_request,
};
use common::{load_average, verdict};

const ROUNDS: usize = 5;
const CONCURRENCY: [usize; 2] = [1, 8];
/// 32 bytes (0, 1, ..., 31), base64.
const PLAINTEXT_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Goals of issue 16, at 8 connections.
const SERVER_LIBRARY_GOAL: f64 = 0.5;
const SERVER_RATE_GOAL: f64 = 20_000.0;
const SERVER_P99_GOAL: Duration = Duration::from_millis(5);
const SERVER_MOTO_GOAL: f64 = 25.0;

#[derive(Clone, Copy, PartialEq)]
enum Operation {
    Encrypt,
    GenerateDataKey,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Encrypt => "Encrypt 32 B",
            Operation::GenerateDataKey => "GenerateDataKey AES_256",
        }
    }

    fn target(self) -> &'static str {
        match self {
            Operation::Encrypt => "TrentService.Encrypt",
            Operation::GenerateDataKey => "TrentService.GenerateDataKey",
        }
    }

    fn body(self, key_id: &str) -> String {
        match self {
            Operation::Encrypt => {
                format!(r#"{{"KeyId":"{key_id}","Plaintext":"{PLAINTEXT_B64}"}}"#)
            }
            Operation::GenerateDataKey => format!(r#"{{"KeyId":"{key_id}","KeySpec":"AES_256"}}"#),
        }
    }
}

/// What serves the calls of one measurement.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Library,
    Server,
    /// The server, loaded by threads in the normal scheduling class.
    ServerNormalClass,
    Moto,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Library => "library",
            Target::Server => "server",
            Target::ServerNormalClass => "server*",
            Target::Moto => "moto",
        }
    }
}

/// A KMS endpoint over loopback: `hsm-kms serve` or `moto_server`.
struct Endpoint {
    _process: Running,
    address: SocketAddr,
    credentials: Credentials,
    key_id: String,
}

impl Endpoint {
    /// Waits until a signed CreateKey succeeds (the endpoint is up) and keeps its key.
    fn ready(process: Running, address: SocketAddr, credentials: Credentials) -> Endpoint {
        let deadline = Instant::now() + Duration::from_secs(60);
        let host = address.to_string();
        loop {
            let request = signed_request(&host, &credentials, "TrentService.CreateKey", "{}");
            if let Ok(stream) = TcpStream::connect(address) {
                drop(stream);
                let mut client = Client::connect(address, request);
                let (status, body) = client.call();
                assert_eq!(status, 200, "CreateKey: {}", String::from_utf8_lossy(body));
                let created: serde_json::Value = serde_json::from_slice(body).unwrap();
                let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
                return Endpoint {
                    _process: process,
                    address,
                    credentials,
                    key_id,
                };
            }
            assert!(Instant::now() < deadline, "{host} did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn measure(
        &self,
        operation: Operation,
        concurrency: usize,
        measured: Duration,
        class: LoadClass,
    ) -> Figures {
        let host = self.address.to_string();
        let body = operation.body(&self.key_id);
        drive(
            concurrency,
            measured,
            || {
                class.enter();
                let request = signed_request(&host, &self.credentials, operation.target(), &body);
                Client::connect(self.address, request)
            },
            |client| {
                let (status, response) = client.call();
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(response));
            },
        )
    }
}

/// The library's in-process rate: `KeyStore` calls on `concurrency` threads.
fn library(store: &KeyStore, key_id: &str, operation: Operation, c: usize, d: Duration) -> Figures {
    let caller = Caller::local(store.scope());
    drive(
        c,
        d,
        || (),
        |()| match operation {
            Operation::Encrypt => {
                let request = EncryptRequest {
                    key_id: key_id.to_owned(),
                    plaintext: SecretSlice::from((0..32u8).collect::<Vec<u8>>()),
                    ..Default::default()
                };
                store.encrypt(&caller, request).unwrap();
            }
            Operation::GenerateDataKey => {
                let request = GenerateDataKeyRequest {
                    key_id: key_id.to_owned(),
                    key_spec: Some("AES_256".into()),
                    ..Default::default()
                };
                store.generate_data_key(&caller, request).unwrap();
            }
        },
    )
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `moto_server` on a free port, if `HSM_KMS_BENCH_MOTO` names it; why not otherwise.
fn moto(log: &Path) -> Result<Endpoint, String> {
    let executable = std::env::var_os("HSM_KMS_BENCH_MOTO")
        .map(PathBuf::from)
        .ok_or("HSM_KMS_BENCH_MOTO is not set (scripts/bench.sh installs moto_server)")?;
    let address = free_port();
    let child = Command::new(&executable)
        .args(["-H", "127.0.0.1", "-p"])
        .arg(address.port().to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{}: {e}", executable.display()))?;
    let credentials = Credentials::new("testing", "testing", None, None, "bench");
    Ok(Endpoint::ready(Running(child), address, credentials))
}

fn row(target: Target, c: usize, rounds: &[Figures]) -> Figures {
    let figures = Figures::median(rounds);
    println!(
        "{:<8} {c:>3} {:>12.0} {:>10.1} {:>10.1}",
        target.label(),
        figures.per_second,
        figures.p50.as_secs_f64() * 1e6,
        figures.p99.as_secs_f64() * 1e6
    );
    figures
}

fn main() {
    // SAFETY: first thing in `main`, before any thread starts.
    #[allow(unsafe_code)]
    unsafe {
        hsm_kms::hsm::prepare_switches(["SOFTHSM2_CONF"])
    };
    let measured = common::seconds(1.0).unwrap();
    let binary = env!("CARGO_BIN_EXE_hsm-kms");
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("cluster");
    let mut config = common::make_cluster(&dir, 2).unwrap();
    let config_path = dir.join("hsm-kms.toml");
    run(
        Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .args(["cluster", "init"]),
        "hsm-kms cluster init",
    );
    let load_before = load_average();

    let (child, address) = serve(binary, &config_path, &temp.path().join("server.log"));
    let server = Endpoint::ready(child, address, credentials(&dir));
    let moto = moto(&temp.path().join("moto.log"));
    config.service.data_dir = temp.path().join("library-data");
    let store = KeyStore::open(&config).unwrap();
    let library_key = store
        .create_key(&Caller::local(store.scope()), CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;

    let operations = [Operation::Encrypt, Operation::GenerateDataKey];
    let mut figures: Vec<(Operation, usize, Target, Vec<Figures>)> = Vec::new();
    for operation in operations {
        for c in CONCURRENCY {
            figures.push((operation, c, Target::Library, Vec::new()));
            figures.push((operation, c, Target::Server, Vec::new()));
            if operation == Operation::Encrypt {
                figures.push((operation, c, Target::ServerNormalClass, Vec::new()));
                if moto.is_ok() {
                    figures.push((operation, c, Target::Moto, Vec::new()));
                }
            }
        }
    }
    for _ in 0..ROUNDS {
        for (operation, c, target, rounds) in &mut figures {
            rounds.push(match target {
                Target::Library => library(&store, &library_key, *operation, *c, measured),
                Target::Server => server.measure(*operation, *c, measured, LoadClass::Batch),
                Target::ServerNormalClass => {
                    server.measure(*operation, *c, measured, LoadClass::Normal)
                }
                Target::Moto => moto.as_ref().expect("measured only when running").measure(
                    *operation,
                    *c,
                    measured,
                    LoadClass::Batch,
                ),
            });
        }
    }

    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "hsm-kms serve over loopback (HTTP/1.1 keep-alive, SigV4 by aws-sigv4), 2-member SoftHSM2 cluster, {} cores, commit {commit}",
        common::cpus(),
    );
    println!(
        "{ROUNDS} interleaved rounds of {} s per case, medians; load average {load_before} before, {} after",
        measured.as_secs_f64(),
        load_average()
    );
    let mut at_eight = Vec::new();
    for operation in operations {
        println!("\n{}", operation.name());
        println!(
            "{:<8} {:>3} {:>12} {:>10} {:>10}",
            "", "c", "req/s", "p50 us", "p99 us"
        );
        for c in CONCURRENCY {
            for (o, fc, target, rounds) in &figures {
                if *o == operation && *fc == c {
                    let median = row(*target, c, rounds);
                    if operation == Operation::Encrypt && c == 8 {
                        at_eight.push((*target, median));
                    }
                }
            }
        }
    }
    let of = |target: Target| {
        at_eight
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, figures)| *figures)
    };
    let (in_process, served) = (of(Target::Library).unwrap(), of(Target::Server).unwrap());
    println!("\ngoals (Encrypt 32 B, 8 connections)");
    let ratio = served.per_second / in_process.per_second;
    println!(
        "  server / library in-process  {ratio:>8.2}   goal >= {SERVER_LIBRARY_GOAL}: {}",
        verdict(ratio >= SERVER_LIBRARY_GOAL)
    );
    if let Some(normal_class) = of(Target::ServerNormalClass) {
        println!(
            "  server* / library in-process {:>8.2}   (reference: load generator in the normal class)",
            normal_class.per_second / in_process.per_second
        );
    }
    println!(
        "  server req/s                 {:>8.0}   goal >= {SERVER_RATE_GOAL}: {}",
        served.per_second,
        verdict(served.per_second >= SERVER_RATE_GOAL)
    );
    println!(
        "  server p99 ms                {:>8.2}   goal <= {}: {}",
        served.p99.as_secs_f64() * 1e3,
        SERVER_P99_GOAL.as_secs_f64() * 1e3,
        verdict(served.p99 <= SERVER_P99_GOAL)
    );
    if let Some(moto_figures) = of(Target::Moto) {
        let ratio = served.per_second / moto_figures.per_second;
        println!(
            "  server / moto_server         {ratio:>8.1}   goal >= {SERVER_MOTO_GOAL}: {}",
            verdict(ratio >= SERVER_MOTO_GOAL)
        );
    } else if let Err(why) = &moto {
        println!("  server / moto_server         not measured: {why}");
    }
    store.shutdown();
    drop((server, moto));
}
