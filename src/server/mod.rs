//! `hsm-kms serve` (cargo feature `server`): the AWS KMS JSON 1.1 endpoint, so unmodified
//! AWS SDKs, the AWS CLI and the AWS Encryption SDK use our HSMs. Requests are authenticated
//! with SigV4, dispatched to the key store on a blocking thread (HSM calls block), and
//! answered in AWS's wire shapes. It also serves `/healthz` and `/metrics`, runs scheduled
//! deletions and rotations in the background, and on SIGTERM/SIGINT stops accepting,
//! finishes what is in flight, flushes the audit trail and exits 0. Plain HTTP is refused on
//! anything but a loopback address. Its settings are [`crate::config::ServerConfig`]. The
//! command line reaches the running server through its [`admin`] socket.

pub mod admin;
mod body;
mod connection;
mod health;
mod metrics;
pub mod protocol;
pub mod sigv4;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::audit::log::OnFailure;
use crate::caller::Caller;
use crate::config::Config;
use crate::error::KmsError;
use crate::keys::state::Operation;
use crate::keystore::KeyStore;
use connection::ConnectionLimit;
use health::HealthProbe;
use metrics::Metrics;
use sigv4::{HttpRequest, Verifier};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config cannot be served as it is (plain HTTP off loopback, half a TLS pair, no
    /// credentials, a credential that does not resolve).
    #[error("{0}")]
    Config(String),
    /// The key store could not be opened.
    #[error(transparent)]
    Open(#[from] crate::keystore::OpenError),
    /// Listening, TLS set-up or serving failed.
    #[error("server I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

struct App {
    store: KeyStore,
    verifier: Verifier,
    metrics: Metrics,
    health: HealthProbe,
    permits: Semaphore,
    queue_timeout: Duration,
    body_limits: body::BodyLimits,
    /// Whether requests arrive over TLS (`aws:SecureTransport`).
    secure_transport: bool,
    /// Whether calls that only read may run on the worker that read the request: only on a
    /// store that never blocks on an async runtime of its own. The PostgreSQL client does
    /// (it drives its connection with a runtime of its own, which tokio refuses to start on
    /// a worker thread).
    reads_inline: bool,
}

/// Runs the server until SIGTERM or SIGINT.
pub fn serve(config: &Config, listen: Option<SocketAddr>) -> Result<(), ServeError> {
    let settings = config.server.clone();
    let listen = listen.unwrap_or(settings.listen);
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) if listen.ip().is_loopback() => None,
        (None, None) => {
            return Err(ServeError::Config(format!(
                "refusing plain HTTP on {listen}: plain HTTP is allowed only on a loopback address; set [server] tls_cert and tls_key"
            )));
        }
        _ => {
            return Err(ServeError::Config(
                "[server] needs both tls_cert and tls_key".into(),
            ));
        }
    };
    if config.credentials.is_empty() {
        return Err(ServeError::Config(
            "no [[credentials]] in the config: nobody could call the endpoint".into(),
        ));
    }
    let verifier = Verifier::from_config(config).map_err(|e| ServeError::Config(e.to_string()))?;
    let store = KeyStore::open(config)?;
    let metrics = Metrics::new();
    let connections = ConnectionLimit::new(
        settings.max_connections,
        connection::Timeouts {
            idle: Duration::from_millis(settings.idle_timeout_ms),
            header: Duration::from_millis(settings.header_timeout_ms),
        },
        metrics.connections_refused(),
    );
    let app = Arc::new(App {
        store,
        verifier,
        health: HealthProbe::new(metrics.health_probes()),
        metrics,
        permits: Semaphore::new(settings.max_concurrency.max(1)),
        queue_timeout: Duration::from_millis(settings.queue_timeout_ms),
        body_limits: body::BodyLimits {
            max_bytes: settings.max_body_bytes,
            timeout: Duration::from_millis(settings.body_timeout_ms),
        },
        secure_transport: tls.is_some(),
        reads_inline: matches!(config.store, crate::store::StoreSettings::Sled {}),
    });

    let stopping = Arc::new(AtomicBool::new(false));
    let maintenance = spawn_maintenance(
        app.clone(),
        stopping.clone(),
        settings.maintenance_interval_s,
    );

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if settings.worker_threads > 0 {
        runtime.worker_threads(settings.worker_threads);
    }
    let runtime = runtime.enable_all().build()?;
    let data_dir = config.service.data_dir.clone();
    let outcome = runtime.block_on(async {
        let admin_socket = match admin::bind(&data_dir) {
            Ok(listener) => Some(tokio::spawn(admin::accept(app.clone(), listener))),
            Err(error) => {
                tracing::warn!(%error, dir = %data_dir.display(), "no admin socket: the command line cannot reach this server");
                None
            }
        };
        let outcome = run(app.clone(), listen, tls, connections).await;
        if let Some(task) = admin_socket {
            task.abort();
            admin::remove(&data_dir);
        }
        outcome
    });
    stopping.store(true, Ordering::Release);
    if maintenance.join().is_err() {
        tracing::error!("maintenance thread panicked");
    }
    app.store.shutdown();
    outcome
}

async fn run(
    app: Arc<App>,
    listen: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
    connections: ConnectionLimit,
) -> Result<(), ServeError> {
    let router = Router::new()
        .route("/", post(api))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(unknown_path)
        .method_not_allowed_fallback(unknown_path)
        .with_state(app);
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%listen, scheme, "hsm-kms serving");
    eprintln!("hsm-kms: serving the AWS KMS API on {scheme}://{listen}");
    match tls {
        Some((cert, key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(connections);
            let server = axum_server::bind(listen).acceptor(acceptor).handle(handle);
            server.serve(service).await?;
        }
        None => {
            let server = axum_server::bind(listen)
                .acceptor(connections)
                .handle(handle);
            server.serve(service).await?;
        }
    }
    eprintln!("hsm-kms: stopped");
    Ok(())
}

async fn shutdown_on_signal(handle: axum_server::Handle<SocketAddr>) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    eprintln!("hsm-kms: shutting down: finishing requests in flight");
    handle.graceful_shutdown(Some(Duration::from_secs(30)));
}

fn spawn_maintenance(
    app: Arc<App>,
    stopping: Arc<AtomicBool>,
    interval_s: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let interval = Duration::from_secs(interval_s.max(1));
        let mut last = Instant::now() - interval;
        while !stopping.load(Ordering::Acquire) {
            // On a shared metadata store only the leader runs it.
            if last.elapsed() >= interval && app.store.is_leader() {
                last = Instant::now();
                match app.store.run_maintenance() {
                    Ok(report) => {
                        for problem in &report.inconsistencies {
                            tracing::warn!(%problem, "maintenance");
                        }
                        for failure in &report.failures {
                            tracing::error!(%failure, "maintenance");
                        }
                    }
                    Err(error) => tracing::error!(%error, "maintenance run failed"),
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// `POST /`: one AWS KMS API call. Its request id is made here, sent back as
/// `x-amzn-RequestId` and recorded as the audit event's `requestID`.
async fn api(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let operation = protocol::operation(target);
    let operation_name = operation.map(Operation::as_str);
    let caller = Caller {
        scope: app.store.scope().clone(),
        principal: ANONYMOUS.to_owned(),
        source_ip: Some(peer.ip().to_string()),
        user_agent: headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        request_id: Some(request_id.clone()),
        secure_transport: app.secure_transport,
        profile: Default::default(),
    };
    let outcome = match body::read(body, &headers, &app.body_limits).await {
        Ok(body) => handle(&app, caller, &method, &uri, &headers, &body, operation).await,
        Err(refused) => {
            // Refused before it was read in full: recorded without its body.
            let event_name = operation_name.unwrap_or(UNKNOWN_OPERATION);
            app.store.record_refused(&caller, event_name, &refused);
            Err(refused)
        }
    };
    let outcome_label = match &outcome {
        Ok(_) => "ok",
        Err(error) => error.code(),
    };
    app.metrics.observe(
        operation_name.unwrap_or(UNKNOWN_OPERATION_LABEL),
        outcome_label,
        started.elapsed(),
    );
    respond(outcome, &request_id)
}

/// The principal recorded for a request whose signature was not (or not yet) verified.
const ANONYMOUS: &str = "anonymous";
/// The audit event name of a request that names no served operation.
const UNKNOWN_OPERATION: &str = "UnknownOperation";
/// The metrics label of a request that names no served operation.
const UNKNOWN_OPERATION_LABEL: &str = "unknown";

/// Authenticates the request and runs its operation. A request refused here (signature,
/// unknown operation, malformed body) is recorded in the audit trail by the refusal's
/// caller; the key store records the calls it runs itself.
async fn handle(
    app: &Arc<App>,
    mut caller: Caller,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    operation: Option<Operation>,
) -> Result<protocol::ResponseBody, KmsError> {
    let event_name = operation.map_or(UNKNOWN_OPERATION, Operation::as_str);
    let mut header_list: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    // HTTP/2 carries the host as the `:authority` pseudo-header, which SigV4 signs as `host`.
    let authority = uri.authority().map(|a| a.as_str().to_owned());
    if !headers.contains_key("host")
        && let Some(authority) = &authority
    {
        header_list.push(("host", authority.as_bytes()));
    }
    let request = HttpRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &header_list,
        body,
    };
    let identity = match app.verifier.verify(&request, SystemTime::now()) {
        Ok(identity) => identity,
        Err(refused) => {
            app.store.record_refused(&caller, event_name, &refused);
            return Err(refused);
        }
    };
    caller.scope = identity.scope;
    caller.principal = identity.principal_arn;
    caller.profile = identity.profile;
    let Some(operation) = operation else {
        let refused = KmsError::UnknownOperation(String::new());
        app.store.record_refused(&caller, event_name, &refused);
        return Err(refused);
    };
    // Most requests find a free permit at once: only wait (with a timer) when none is free.
    let _permit = match app.permits.try_acquire() {
        Ok(permit) => permit,
        Err(_) => tokio::time::timeout(app.queue_timeout, app.permits.acquire())
            .await
            .map_err(|_| KmsError::Throttling("Rate exceeded".into()))?
            .map_err(|_| KmsError::KmsInternal("the server is shutting down".into()))?,
    };
    if app.reads_inline && runs_inline(operation) {
        protocol::run(&app.store, &caller, operation, body)
    } else {
        tokio::task::block_in_place(|| protocol::run(&app.store, &caller, operation, body))
    }
}

/// Whether a call runs on the worker that read its request. A call that only reads state
/// computes for tens of microseconds: handing the worker's other tasks to another thread
/// first would cost more than the call (those hand-offs were the largest item in the server's
/// profile). A call that changes state waits for a durable write (a flush to disk), and a data
/// key pair may be an RSA key generated on the spot (up to seconds): those hand them over.
fn runs_inline(operation: Operation) -> bool {
    operation.is_read_only()
        && !matches!(
            operation,
            Operation::GenerateDataKeyPair | Operation::GenerateDataKeyPairWithoutPlaintext
        )
}

/// The HTTP response of a call: its JSON body, or AWS's error shape. Server-side failures
/// are logged in full under the request id and answered with AWS's generic text.
fn respond(outcome: Result<protocol::ResponseBody, KmsError>, request_id: &str) -> Response {
    let (status, body, error_type) = match outcome {
        Ok(body) => (StatusCode::OK, zeroized_bytes(body), None),
        Err(error) => {
            if error.is_internal() {
                tracing::error!(request_id, code = error.code(), detail = %error, "request failed");
            }
            let message = error.wire_message(request_id);
            (
                StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                Bytes::from(protocol::error_body(&error, &message)),
                Some(error.code()),
            )
        }
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    if let Some(code) = error_type.and_then(|code| HeaderValue::from_str(code).ok()) {
        headers.insert("x-amzn-errortype", code);
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body was not read: the connection cannot carry another request.
        headers.insert("connection", HeaderValue::from_static("close"));
    }
    response
}

/// A response body that is zeroized when the HTTP layer drops it (it may hold a plaintext
/// or a data key).
fn zeroized_bytes(body: protocol::ResponseBody) -> Bytes {
    Bytes::from_owner(ZeroizedOwner(body))
}

/// Owns a response buffer for [`Bytes::from_owner`]; its [`Zeroizing`] wipes it on drop.
struct ZeroizedOwner(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizedOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Any other path or method: AWS's `UnknownOperationException` shape with 404, so clients
/// see a JSON error rather than an empty body.
async fn unknown_path(method: Method, uri: Uri) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(request_id, %method, path = uri.path(), "unknown path or method");
    let error = KmsError::UnknownOperation(format!(
        "No operation is served at {method} {}.",
        uri.path().chars().take(64).collect::<String>()
    ));
    let mut response = respond(Err(error), &request_id);
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// `GET /healthz`: cluster and audit trail health; 200 while the quorum holds and calls are
/// not being refused for an unwritable audit trail, 503 otherwise. Probed at most once a
/// second, whatever the number of callers.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let worker = app.clone();
    let probe = move || {
        let cluster = worker.store.cluster().health();
        let audit = worker.store.audit_health();
        let refusing = !audit.writable && audit.on_failure == OnFailure::Refuse;
        let mut body = serde_json::to_value(&cluster).unwrap_or_default();
        body["audit"] = serde_json::to_value(&audit).unwrap_or_default();
        health::HealthAnswer {
            serving: cluster.serving && !refusing,
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    };
    match app.health.answer(probe).await {
        Some(answer) => {
            let status = if answer.serving {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (
                status,
                [("content-type", "application/json")],
                answer.body.clone(),
            )
                .into_response()
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(&app.store);
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
