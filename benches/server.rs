//! Load benchmark of `hsm-kms serve` (issue 5): a SigV4-signing HTTP/1.1 load generator
//! drives the release server over loopback with Encrypt (32 bytes) and GenerateDataKey
//! (AES_256) at concurrency 1 and 8, and prints requests/s, p50 and p99 beside the
//! library's in-process rate for the same operation, measured in the same run on the same
//! 2-member SoftHSM2 cluster (the library first, then it is closed and the server opens
//! the same data directory: sled allows one process per directory). It prints figures and
//! asserts none of them.
//!
//! Run with `cargo bench --bench server`; `HSM_KMS_BENCH_SECS` sets the measured seconds
//! per case (default 5, after 1 s of warm-up).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use hsm_kms::caller::Caller;
use hsm_kms::config::Config;
use hsm_kms::keystore::KeyStore;
use hsm_kms::keystore::api::{CreateKeyRequest, EncryptRequest, GenerateDataKeyRequest};
use secrecy::SecretSlice;
use sha2::{Digest, Sha256};

const WARM_UP: Duration = Duration::from_secs(1);
const CONCURRENCY: [usize; 2] = [1, 8];
/// 32 bytes (0, 1, ..., 31), base64.
const PLAINTEXT_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const REGION: &str = "us-east-1";

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

/// Throughput and latency of one case.
struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `work` on `concurrency` threads for the warm-up and then `measured`; each thread
/// gets its own state from `setup`.
fn drive<S>(
    concurrency: usize,
    measured: Duration,
    setup: impl Fn() -> S + Sync,
    work: impl Fn(&mut S) + Sync,
) -> Figures {
    let started = Instant::now();
    let measure_from = started + WARM_UP;
    let end = measure_from + measured;
    let mut latencies: Vec<u32> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let mut state = setup();
                    let mut latencies = Vec::with_capacity(1 << 18);
                    loop {
                        let at = Instant::now();
                        if at >= end {
                            break;
                        }
                        work(&mut state);
                        if at >= measure_from {
                            latencies.push(at.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                        }
                    }
                    latencies
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        Duration::from_nanos(u64::from(latencies[index]))
    };
    Figures {
        per_second: latencies.len() as f64 / measured.as_secs_f64(),
        p50: percentile(0.50),
        p99: percentile(0.99),
    }
}

// ---- SigV4 signing (client side) ----

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
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

/// Signs KMS requests for one access key; the day's signing key is derived once.
struct Signer {
    access_key: String,
    secret: String,
    day: String,
    key: [u8; 32],
}

impl Signer {
    fn new(access_key: String, secret: String) -> Signer {
        Signer {
            access_key,
            secret,
            day: String::new(),
            key: [0; 32],
        }
    }

    /// The `X-Amz-Date` and `Authorization` values of a POST / with these headers and body.
    fn sign(&mut self, host: &str, target: &str, body: &[u8]) -> (String, String) {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let date = amz_date(unix.as_secs());
        let day = &date[..8];
        if day != self.day {
            let key = hmac(format!("AWS4{}", self.secret).as_bytes(), day.as_bytes());
            let key = hmac(&key, REGION.as_bytes());
            let key = hmac(&key, b"kms");
            self.key = hmac(&key, b"aws4_request");
            self.day = day.to_owned();
        }
        let signed = "content-type;host;x-amz-date;x-amz-target";
        let canonical = format!(
            "POST\n/\n\ncontent-type:application/x-amz-json-1.1\nhost:{host}\nx-amz-date:{date}\nx-amz-target:{target}\n\n{signed}\n{}",
            hex::encode(Sha256::digest(body))
        );
        let scope = format!("{day}/{REGION}/kms/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let signature = hex::encode(hmac(&self.key, to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            self.access_key
        );
        (date, authorization)
    }
}

// ---- HTTP/1.1 keep-alive client ----

/// One keep-alive connection to the server, sending signed KMS requests.
struct Client {
    host: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    signer: Signer,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

impl Client {
    fn connect(address: SocketAddr, signer: Signer) -> Client {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            host: address.to_string(),
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            signer,
            request: Vec::with_capacity(1024),
            line: String::new(),
            body: Vec::new(),
        }
    }

    /// Sends one signed call; returns the status and the response body.
    fn call(&mut self, target: &str, body: &[u8]) -> (u16, &[u8]) {
        let (date, authorization) = self.signer.sign(&self.host, target, body);
        self.request.clear();
        write!(
            self.request,
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: {target}\r\nX-Amz-Date: {date}\r\nAuthorization: {authorization}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .unwrap();
        self.request.extend_from_slice(body);
        self.writer.write_all(&self.request).unwrap();
        self.read_response()
    }

    fn read_response(&mut self) -> (u16, &[u8]) {
        self.line.clear();
        self.reader.read_line(&mut self.line).unwrap();
        let status: u16 = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {:?}", self.line));
        let mut length = 0;
        loop {
            self.line.clear();
            self.reader.read_line(&mut self.line).unwrap();
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body).unwrap();
        (status, &self.body)
    }
}

/// `GET /healthz` on a fresh connection; true on 200.
fn healthy(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

// ---- set-up ----

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The access key and secret of profile hsm-kms in the cluster's credentials file.
fn credentials(dir: &Path) -> (String, String) {
    let text = std::fs::read_to_string(dir.join("credentials")).unwrap();
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

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn print_row(label: &str, concurrency: usize, figures: &Figures) {
    println!(
        "{label:<8} {concurrency:>3} {:>12.0} {:>10.1} {:>10.1}",
        figures.per_second,
        figures.p50.as_secs_f64() * 1e6,
        figures.p99.as_secs_f64() * 1e6
    );
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

/// Stops the server with SIGTERM (graceful shutdown) and waits for it.
fn stop(mut server: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();
}

fn main() {
    // SAFETY: first thing in `main`, before any thread starts.
    #[allow(unsafe_code)]
    unsafe {
        hsm_kms::hsm::prepare_switches(["SOFTHSM2_CONF"])
    };
    let measured = Duration::from_secs(
        std::env::var("HSM_KMS_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let binary = env!("CARGO_BIN_EXE_hsm-kms");
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("cluster");
    let config_path = dir.join("hsm-kms.toml");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/softhsm-cluster.sh");
    run(
        Command::new("bash").arg(script).arg(&dir).arg("2"),
        "scripts/softhsm-cluster.sh",
    );
    run(
        Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .args(["cluster", "init"]),
        "hsm-kms cluster init",
    );
    let operations = [Operation::Encrypt, Operation::GenerateDataKey];

    // The library first, on the same cluster and data directory; closed before serving.
    let config = Config::load(&config_path).unwrap();
    let mut library_figures = Vec::new();
    {
        let store = KeyStore::open(&config).unwrap();
        let caller = Caller::local(store.scope());
        let key = store
            .create_key(&caller, CreateKeyRequest::default())
            .unwrap()
            .key_metadata
            .key_id;
        for operation in operations {
            for c in CONCURRENCY {
                library_figures.push(library(&store, &key, operation, c, measured));
            }
        }
        store.shutdown();
    }

    let address = free_port();
    let log = std::fs::File::create(temp.path().join("server.log")).unwrap();
    let server = Command::new(binary)
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .arg("--listen")
        .arg(address.to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(address) {
        assert!(
            Instant::now() < deadline,
            "the server did not become healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (access_key, secret) = credentials(&dir);
    let signer = || Signer::new(access_key.clone(), secret.clone());
    let mut client = Client::connect(address, signer());
    let (status, body) = client.call("TrentService.CreateKey", b"{}");
    assert_eq!(status, 200, "CreateKey: {}", String::from_utf8_lossy(body));
    let created: serde_json::Value = serde_json::from_slice(body).unwrap();
    let key = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    drop(client);

    println!(
        "hsm-kms serve over loopback (HTTP/1.1 keep-alive, SigV4), 2-member SoftHSM2 cluster, {} cores; {} s per case after {} s warm-up",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        measured.as_secs(),
        WARM_UP.as_secs()
    );
    let mut library_rows = library_figures.iter();
    for operation in operations {
        println!("\n{}", operation.name());
        println!(
            "{:<8} {:>3} {:>12} {:>10} {:>10}",
            "", "c", "req/s", "p50 us", "p99 us"
        );
        let body = operation.body(&key);
        for c in CONCURRENCY {
            let figures = drive(
                c,
                measured,
                || Client::connect(address, signer()),
                |client| {
                    let (status, response) = client.call(operation.target(), body.as_bytes());
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(response));
                },
            );
            let in_process = library_rows.next().unwrap();
            print_row("server", c, &figures);
            print_row("library", c, in_process);
            println!(
                "{:<8} {c:>3} {:>12.2}",
                "ratio",
                figures.per_second / in_process.per_second
            );
        }
    }
    stop(server);
}
