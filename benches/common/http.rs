//! HTTP load against KMS endpoints over loopback: signed requests (SigV4 by the `aws-sigv4`
//! crate, as the AWS SDKs sign), keep-alive connections that send one request again and
//! again, and the throughput and latency of `concurrency` threads doing so. A failed call
//! ends the benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::median;

/// The region the cluster script configures.
pub const REGION: &str = "us-east-1";

/// Throughput and latency of one measurement.
#[derive(Clone, Copy)]
pub struct Figures {
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl Figures {
    /// The medians of several rounds' figures.
    pub fn median(rounds: &[Figures]) -> Figures {
        let of = |pick: fn(&Figures) -> f64| median(&rounds.iter().map(pick).collect::<Vec<_>>());
        Figures {
            per_second: of(|f| f.per_second),
            p50: Duration::from_secs_f64(of(|f| f.p50.as_secs_f64())),
            p99: Duration::from_secs_f64(of(|f| f.p99.as_secs_f64())),
        }
    }
}

/// Runs `work` on `concurrency` threads for `measured` after a tenth of it as warm-up; each
/// thread gets its own state from `setup`, made before the clock starts.
pub fn drive<S>(
    concurrency: usize,
    measured: Duration,
    setup: impl Fn() -> S + Sync,
    work: impl Fn(&mut S) + Sync,
) -> Figures {
    let barrier = std::sync::Barrier::new(concurrency);
    let mut latencies: Vec<u32> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let mut state = setup();
                    barrier.wait();
                    let measure_from = Instant::now() + measured / 10;
                    let end = measure_from + measured;
                    let mut latencies = Vec::with_capacity(1 << 16);
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

/// How a load-generating thread shares the machine's cores with the server it loads.
#[derive(Clone, Copy, PartialEq)]
pub enum LoadClass {
    /// Linux's `SCHED_BATCH`: a thread woken by a response waits for the server's thread to
    /// yield or for the scheduler's tick instead of preempting it, as a client on another
    /// machine would never preempt the server. It still gets its share of the cores.
    Batch,
    /// The normal class (`SCHED_OTHER`), as the thread was started: each response wakes its
    /// thread, which then usually preempts the server's thread that sent it.
    Normal,
}

impl LoadClass {
    /// Puts the calling thread in this class (a thread's class ends with the thread).
    pub fn enter(self) {
        if self == LoadClass::Normal {
            return;
        }
        let parameters = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` reads `parameters` only during the call; pid 0 is the
        // calling thread, and SCHED_BATCH needs no privilege.
        #[allow(unsafe_code)]
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &parameters) };
        assert_eq!(result, 0, "{}", std::io::Error::last_os_error());
    }
}

/// The bytes of one HTTP/1.1 POST of a KMS call, signed with SigV4 now.
pub fn signed_request(host: &str, credentials: &Credentials, target: &str, body: &str) -> Vec<u8> {
    let url = format!("http://{host}/");
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target),
        ("host", host),
    ];
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("kms")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = String::from("POST / HTTP/1.1\r\n");
    for (name, value) in headers.into_iter().chain(instructions.headers()) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    request.into_bytes()
}

/// One keep-alive connection sending the same signed request again and again (a new
/// connection after a response that closes it, as moto_server's do).
pub struct Client {
    address: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    closed: bool,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

/// Longest wait for a response: a stuck endpoint fails the benchmark instead of hanging it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

pub fn open(address: SocketAddr) -> (BufReader<TcpStream>, TcpStream) {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(RESPONSE_TIMEOUT)).unwrap();
    (BufReader::new(stream.try_clone().unwrap()), stream)
}

impl Client {
    pub fn connect(address: SocketAddr, request: Vec<u8>) -> Client {
        let (reader, writer) = open(address);
        Client {
            address,
            reader,
            writer,
            closed: false,
            request,
            line: String::new(),
            body: Vec::new(),
        }
    }

    /// Sends the request; returns the status and the response body.
    pub fn call(&mut self) -> (u16, &[u8]) {
        if self.closed {
            (self.reader, self.writer) = open(self.address);
            self.closed = false;
        }
        self.writer.write_all(&self.request).unwrap();
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
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                } else if name.eq_ignore_ascii_case("connection") {
                    self.closed |= value.trim().eq_ignore_ascii_case("close");
                }
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body).unwrap();
        (status, &self.body)
    }
}

/// The credentials of profile hsm-kms in the cluster's credentials file.
pub fn credentials(dir: &Path) -> Credentials {
    let text = std::fs::read_to_string(dir.join("credentials")).unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| {
                let (key, value) = line.split_once('=')?;
                (key.trim() == name).then(|| value.trim().to_owned())
            })
            .unwrap()
    };
    Credentials::new(
        value("aws_access_key_id"),
        value("aws_secret_access_key"),
        None,
        None,
        "bench",
    )
}

pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A server process, stopped with SIGTERM (graceful shutdown) and waited for when dropped,
/// also when the benchmark panics: a server left running would load every later benchmark.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

pub fn serve(binary: &str, config_path: &Path, log: &Path) -> (Running, SocketAddr) {
    let address = free_port();
    let child = Command::new(binary)
        .arg("--config")
        .arg(config_path)
        .arg("serve")
        .arg("--listen")
        .arg(address.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    (Running(child), address)
}
