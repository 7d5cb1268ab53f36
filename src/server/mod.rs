//! `hsm-kms serve`: the AWS KMS JSON 1.1 endpoint, so unmodified AWS SDKs, the AWS CLI and
//! the AWS Encryption SDK use our HSMs. Requests are authenticated with SigV4, dispatched to
//! the key store on a blocking thread (HSM calls block), and answered in AWS's wire shapes.
//! It also serves `/healthz` and `/metrics`, runs scheduled deletions and rotations in the
//! background, and on SIGTERM/SIGINT stops accepting, finishes what is in flight, flushes
//! the audit trail and exits 0. Plain HTTP is refused on anything but a loopback address.

mod metrics;
pub mod protocol;
pub mod sigv4;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::audit::log::OnFailure;
use crate::caller::Caller;
use crate::config::Config;
use crate::error::KmsError;
use crate::keystore::KeyStore;
use metrics::Metrics;
use sigv4::{HttpRequest, Verifier};

/// The `[server]` section of the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on (overridden by `--listen`).
    pub listen: SocketAddr,
    /// PEM certificate chain and private key; without them only loopback is served.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Most requests worked on at once; more wait up to `queue_timeout_ms`, then are throttled.
    pub max_concurrency: usize,
    pub queue_timeout_ms: u64,
    /// Time a client has to send the request headers.
    pub header_timeout_ms: u64,
    /// Pause between background maintenance runs (deletions, rotations).
    pub maintenance_interval_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 64 * 1024,
            max_concurrency: 256,
            queue_timeout_ms: 2000,
            header_timeout_ms: 10_000,
            maintenance_interval_s: 60,
        }
    }
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Open(#[from] crate::keystore::OpenError),
    #[error("server I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

struct App {
    store: KeyStore,
    verifier: Verifier,
    metrics: Metrics,
    permits: Semaphore,
    queue_timeout: Duration,
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
    let app = Arc::new(App {
        store,
        verifier,
        metrics: Metrics::new(),
        permits: Semaphore::new(settings.max_concurrency.max(1)),
        queue_timeout: Duration::from_millis(settings.queue_timeout_ms),
    });

    let stopping = Arc::new(AtomicBool::new(false));
    let maintenance = spawn_maintenance(
        app.clone(),
        stopping.clone(),
        settings.maintenance_interval_s,
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run(app.clone(), listen, tls, &settings));
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
    settings: &ServerConfig,
) -> Result<(), ServeError> {
    let router = Router::new()
        .route("/", post(api))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .with_state(app);
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    let header_timeout = Duration::from_millis(settings.header_timeout_ms);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%listen, scheme, "hsm-kms serving");
    eprintln!("hsm-kms: serving the AWS KMS API on {scheme}://{listen}");
    match tls {
        Some((cert, key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
            let mut server = axum_server::bind_rustls(listen, tls).handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(header_timeout);
            server.serve(service).await?;
        }
        None => {
            let mut server = axum_server::bind(listen).handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(header_timeout);
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
            if last.elapsed() >= interval {
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

/// `POST /`: one AWS KMS API call.
async fn api(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let operation = target
        .strip_prefix(protocol::TARGET_PREFIX)
        .unwrap_or("Unknown")
        .to_owned();
    let outcome = handle(&app, peer, &method, &uri, &headers, body, &target).await;
    let outcome_label = match &outcome {
        Ok(_) => "ok",
        Err(error) => error.code(),
    };
    app.metrics
        .observe(&operation, outcome_label, started.elapsed());
    respond(outcome, &request_id)
}

async fn handle(
    app: &Arc<App>,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    target: &str,
) -> Result<Vec<u8>, KmsError> {
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
        body: &body,
    };
    let identity = app.verifier.verify(&request, SystemTime::now())?;
    let caller = Caller {
        scope: identity.scope,
        principal: identity.principal_arn,
        source_ip: Some(peer.ip().to_string()),
        user_agent: headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    // Most requests find a free permit at once: only wait (with a timer) when none is free.
    let _permit = match app.permits.try_acquire() {
        Ok(permit) => permit,
        Err(_) => tokio::time::timeout(app.queue_timeout, app.permits.acquire())
            .await
            .map_err(|_| KmsError::Throttling("Rate exceeded".into()))?
            .map_err(|_| KmsError::KmsInternal("the server is shutting down".into()))?,
    };
    // HSM calls block for tens of microseconds: run them on this worker rather than handing
    // each one to another thread.
    tokio::task::block_in_place(|| protocol::dispatch(&app.store, &caller, target, &body))
}

fn respond(outcome: Result<Vec<u8>, KmsError>, request_id: &str) -> Response {
    let (status, body, error_type) = match outcome {
        Ok(body) => (StatusCode::OK, body, None),
        Err(error) => (
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            protocol::error_body(&error),
            Some(error.code()),
        ),
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
    response
}

/// `GET /healthz`: cluster and audit trail health; 200 while the quorum holds and calls are
/// not being refused for an unwritable audit trail, 503 otherwise.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let worker = app.clone();
    let health = tokio::task::spawn_blocking(move || {
        (worker.store.cluster().health(), worker.store.audit_health())
    })
    .await;
    match health {
        Ok((health, audit)) => {
            let refusing = !audit.writable && audit.on_failure == OnFailure::Refuse;
            let status = if health.serving && !refusing {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut body = serde_json::to_value(&health).unwrap_or_default();
            body["audit"] = serde_json::to_value(&audit).unwrap_or_default();
            let body = serde_json::to_vec(&body).unwrap_or_default();
            (status, [("content-type", "application/json")], body).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let worker = app.clone();
    match tokio::task::spawn_blocking(move || worker.metrics.render(&worker.store)).await {
        Ok(text) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
