//! The HTTP server (axum router, our own hyper accept loop): the only module that knows HTTP.
//!
//! * `GET /`: an index of these endpoints (HTML for a browser, plain text otherwise).
//! * `GET /metrics`: Prometheus text, or OpenMetrics when the `Accept` header asks for it.
//! * `GET /healthz`: 200 while the process is alive.
//! * `GET /readyz`: 200 once every collector has finished its first cycle, else 503.
//! * `GET /v1/snapshot`: the latest snapshot as JSON (`gpulse.snapshot/v1`).
//! * `GET /v1/probes`: every probe's state, reason and outages (`gpulse.probes/v1`).
//! * `GET /v1/events`: the wrapped job's runs and recent events (`gpulse.events/v1`).
//!
//! Every request is bounded: a timeout (503 past it), a cap on requests in flight (503 with
//! `Retry-After` beyond it: shedding load beats queueing it), and a body-size limit (413).
//! Unknown paths get 404, other methods 405. With a bearer token configured, everything but
//! `GET /healthz` and `GET /readyz` needs it (401 otherwise, see [`super::auth`]).
//!
//! Every connection is bounded too: at most `http.max_connections` are open (when full, the
//! loop stops accepting and further clients wait in the kernel's queue), headers must arrive
//! within `http.request_timeout` (so a slowloris client cannot hold a slot; this is also the
//! keep-alive idle limit), the TLS handshake has the same limit, and a peer that stops reading
//! our response for that long is disconnected. HTTP/1.1 only; with TLS configured
//! ([`super::tls`]), HTTPS only.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::auth::{self, BearerToken};
use super::json::{EventsV1, HealthV1, ProbesV1, SnapshotV1};
use super::prometheus::{MetricsRenderer, OPENMETRICS_TEXT, PROMETHEUS_TEXT};
use super::reload::LoadError;
use super::tls::{self, TlsConfig};
use crate::config::{ConfigError, HttpConfig};
use crate::store::Store;

/// Largest request head (request line and headers) accepted; larger ones get 431.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub metrics: MetricsRenderer,
    pub node: Arc<str>,
}

/// The TLS configuration and bearer token of the server, each optional and reloadable.
///
/// Loaded before the port is bound (a bad file is a config error, exit 2); reloaded by
/// [`Credentials::reload`] on SIGHUP and when a file changes.
#[derive(Debug, Default)]
pub struct Credentials {
    tls: Option<Arc<TlsConfig>>,
    token: Option<Arc<BearerToken>>,
}

impl Credentials {
    /// Plain HTTP, no authentication.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads the TLS and token files named in `http`; an error names the key and the file.
    pub fn load(http: &HttpConfig) -> Result<Self, ConfigError> {
        let tls = match http.tls_files()? {
            Some((cert, key)) => Some(Arc::new(tls::load(cert, key).map_err(config_error)?)),
            None => None,
        };
        let token = match http.bearer_token_file() {
            Some(file) => Some(Arc::new(auth::load(file).map_err(config_error)?)),
            None => None,
        };
        Ok(Self { tls, token })
    }

    /// Whether the server speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether requests need a bearer token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether there is anything to reload.
    pub fn is_reloadable(&self) -> bool {
        self.is_tls() || self.has_token()
    }

    /// Reloads what changed (everything when `force`, e.g. on SIGHUP). A failure is logged
    /// and the previous certificate or token stays in use. Blocking: reads files.
    pub fn reload(&self, force: bool) {
        if let Some(tls) = &self.tls {
            tls.reload(force);
        }
        if let Some(token) = &self.token {
            token.reload(force);
        }
    }

    /// Successful reloads so far (certificate and token together).
    pub fn reloads(&self) -> u64 {
        self.tls.as_ref().map_or(0, |t| t.reloads())
            + self.token.as_ref().map_or(0, |t| t.reloads())
    }

    /// Failed reloads so far (certificate and token together).
    pub fn reload_failures(&self) -> u64 {
        self.tls.as_ref().map_or(0, |t| t.failures())
            + self.token.as_ref().map_or(0, |t| t.failures())
    }
}

/// The key's origin is left to the loader (`config::Origins::place`); the file is named in
/// the message.
fn config_error(error: LoadError) -> ConfigError {
    ConfigError::at_key(
        error.key,
        format!("{}: {}", error.path.display(), error.message),
    )
}

/// The router with all routes, authentication (when configured) and bounds applied.
pub fn router(state: ApiState, http: &HttpConfig, credentials: &Credentials) -> Router {
    let routes = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/health", get(health))
        .route("/v1/probes", get(probes))
        .route("/v1/events", get(events))
        .with_state(state);
    // Inside the bounds, so unauthenticated requests are bounded too; applied with `layer`
    // (not `route_layer`), so unknown paths need the token as well.
    let routes = match &credentials.token {
        Some(token) => routes.layer(middleware::from_fn_with_state(
            Arc::clone(token),
            auth::require_bearer,
        )),
        None => routes,
    };
    with_bounds(routes, http)
}

/// Applies the request bounds of `http` to `routes`.
fn with_bounds(routes: Router, http: &HttpConfig) -> Router {
    routes
        .layer(RequestBodyLimitLayer::new(http.max_request_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            http.request_timeout.0,
        ))
        // Outermost, and one semaphore for all routes (a per-route tower limit would
        // multiply the bound by the number of routes).
        .layer(middleware::from_fn_with_state(
            Arc::new(Semaphore::new(http.max_concurrent_requests.max(1))),
            limit_in_flight,
        ))
}

async fn limit_in_flight(
    State(slots): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    match slots.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many requests in flight\n",
        )
            .into_response(),
    }
}

/// Binds `addr`; separate from [`serve`] so callers learn bind errors (and the real port
/// when asked for port 0) before anything else starts.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// How [`serve`] accepts and serves connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections open at once (at least 1).
    pub max_connections: usize,
    /// Limit for reading a request head, for the TLS handshake, for an idle keep-alive
    /// connection and for a peer that stops reading.
    pub timeout: Duration,
    /// HTTPS with this (reloadable) configuration; `None` for plain HTTP.
    pub tls: Option<Arc<TlsConfig>>,
}

impl ServeOptions {
    pub fn new(http: &HttpConfig, credentials: &Credentials) -> Self {
        Self {
            max_connections: http.max_connections,
            timeout: http.request_timeout.0,
            tls: credentials.tls.clone(),
        }
    }
}

/// What every connection task shares.
struct Connections {
    app: Router,
    http1: http1::Builder,
    timeout: Duration,
    tls: Option<Arc<TlsConfig>>,
}

/// Serves until `shutdown` completes, then stops accepting, closes idle connections and
/// lets the requests in flight finish (the caller bounds how long it waits).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = u32::try_from(options.max_connections.max(1)).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(slots as usize));
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(options.timeout)
        .max_header_size(MAX_REQUEST_HEAD_BYTES);
    let connections = Arc::new(Connections {
        app,
        http1,
        timeout: options.timeout,
        tls: options.tls,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: when all are taken, stop accepting until a connection closes.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            stream,
            peer,
            permit,
            Arc::clone(&connections),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends: all permits back means all drained.
    let _ = permits.acquire_many(slots).await;
    Ok(())
}

/// Per-connection accept errors are the peer's business; others (out of file descriptors)
/// are logged and slowed down so the loop does not spin.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %error, "Cannot accept connections; retrying in 1s.");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection, from the TLS handshake (if any) to close; holds its slot throughout.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
    connections: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let stream = WriteDeadline::new(stream, connections.timeout);
    let Some(tls) = &connections.tls else {
        return serve_http(stream, peer, &connections, stop).await;
    };
    let acceptor = TlsAcceptor::from(tls.current());
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(connections.timeout, acceptor.accept(stream)) => handshake,
        () = stopped(&mut stop) => return,
    };
    match handshake {
        Ok(Ok(stream)) => serve_http(stream, peer, &connections, stop).await,
        Ok(Err(error)) => tracing::debug!(%peer, error = %error, "TLS handshake failed."),
        Err(_elapsed) => tracing::debug!(%peer, "TLS handshake timed out."),
    }
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    connections: &Connections,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(connections.app.clone());
    let conn = connections
        .http1
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(&mut stop) => {
            // Closes the connection now if idle, else after the response in flight.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        // Header timeouts, resets, malformed requests: the peer's problem, not ours.
        tracing::debug!(%peer, error = %error, "HTTP connection ended with an error.");
    }
}

/// Completes once the server stops (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// An I/O stream whose writes fail with `TimedOut` after making no progress for `limit`:
/// a peer that stops reading our response cannot hold its connection slot forever.
struct WriteDeadline<I> {
    io: I,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteDeadline<I> {
    fn new(io: I, limit: Duration) -> Self {
        Self {
            io,
            limit,
            stalled: None,
        }
    }

    /// Passes progress through; times a stall (`Pending`) and fails it past the limit.
    fn bound<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer stopped reading",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.bound(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.bound(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.bound(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.bound(cx, poll)
    }
}

async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    match state.metrics.render(openmetrics) {
        Ok(body) => {
            let content_type = if openmetrics {
                OPENMETRICS_TEXT
            } else {
                PROMETHEUS_TEXT
            };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to render metrics\n",
        )
            .into_response(),
    }
}

/// The endpoints `GET /` lists, in its order: path and what it serves. A test checks that each
/// one is routed.
pub const ENDPOINTS: &[(&str, &str)] = &[
    (
        "/metrics",
        "Prometheus metrics (OpenMetrics when asked for)",
    ),
    ("/v1/snapshot", "the latest sample of every source (JSON)"),
    (
        "/v1/health",
        "GPU and node health with reasons and Xids (JSON)",
    ),
    ("/v1/probes", "inference-server probes (JSON)"),
    ("/v1/events", "the wrapped job's runs and events (JSON)"),
    ("/healthz", "liveness: 200 while the process runs"),
    ("/readyz", "readiness: 200 after the first collector cycle"),
];

/// `GET /`: a small index, so the URL logged at start leads somewhere.
async fn index(headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let version = env!("CARGO_PKG_VERSION");
    if wants_html {
        let mut body = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>gpulse</title></head>\n<body><h1>gpulse {version}</h1>\n<ul>\n"
        );
        for (path, what) in ENDPOINTS {
            body.push_str(&format!("<li><a href=\"{path}\">{path}</a>: {what}</li>\n"));
        }
        body.push_str("</ul>\n</body></html>\n");
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
    } else {
        let mut body = format!("gpulse {version}\n\n");
        for (path, what) in ENDPOINTS {
            body.push_str(&format!("{path:<14} {what}\n"));
        }
        body.into_response()
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.store.snapshot().first_cycle_done() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the first collector cycle\n",
        )
            .into_response()
    }
}

async fn snapshot(State(state): State<ApiState>) -> Response {
    let snap = state.store.snapshot();
    axum::Json(SnapshotV1::from_snapshot(&snap, &state.node)).into_response()
}

async fn health(State(state): State<ApiState>) -> Response {
    let snap = state.store.snapshot();
    axum::Json(HealthV1::from_snapshot(&snap, &state.node)).into_response()
}

async fn probes(State(state): State<ApiState>) -> Response {
    let snap = state.store.snapshot();
    axum::Json(ProbesV1::from_snapshot(&snap, &state.node)).into_response()
}

async fn events(State(state): State<ApiState>) -> Response {
    let snap = state.store.snapshot();
    axum::Json(EventsV1::from_snapshot(&snap, &state.node)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// reqwest has no crypto provider of its own; the process installs ring first.
    async fn test_get(url: String) -> reqwest::Result<reqwest::Response> {
        crate::collect::probe::tls::install_crypto_provider();
        reqwest::Client::new().get(url).send().await
    }
    use std::time::Duration;

    /// Serves `routes` with the bounds of `http` on a free port; returns its base URL.
    async fn serve_bounded(routes: Router, http: &HttpConfig) -> String {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            with_bounds(routes, http),
            ServeOptions::new(http, &Credentials::none()),
            std::future::pending(),
        ));
        base
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_beyond_the_in_flight_limit_are_shed_then_served() {
        let http = HttpConfig {
            max_concurrent_requests: 1,
            ..HttpConfig::default()
        };
        let routes = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "done"
            }),
        );
        let base = serve_bounded(routes, &http).await;
        let first = tokio::spawn(test_get(format!("{base}/slow")));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = test_get(format!("{base}/slow")).await.unwrap();
        assert_eq!(second.status(), 503);
        assert_eq!(second.headers()["retry-after"], "1");
        assert_eq!(first.await.unwrap().unwrap().status(), 200);
        let third = test_get(format!("{base}/slow")).await.unwrap();
        assert_eq!(third.status(), 200, "the slot was not released");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_requests_time_out_with_503() {
        let http = HttpConfig {
            request_timeout: crate::config::HumanDuration(Duration::from_millis(100)),
            ..HttpConfig::default()
        };
        let routes = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "done"
            }),
        );
        let base = serve_bounded(routes, &http).await;
        let started = std::time::Instant::now();
        let r = test_get(format!("{base}/slow")).await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_cut_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limit = Duration::from_millis(400);
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut bounded = WriteDeadline::new(ours, limit);
        // A slow reader that keeps making progress is served, however long it takes in total.
        let reader = tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                theirs.read_exact(&mut [0; 64]).await.unwrap();
            }
            theirs
        });
        bounded.write_all(&[b'x'; 6 * 64]).await.unwrap();
        let _theirs = reader.await.unwrap();
        // No progress for the limit: the write fails.
        let started = std::time::Instant::now();
        let err = bounded.write_all(&[b'x'; 256]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn not_ready_before_the_first_cycle() {
        use crate::model::CollectorStatus;
        let store = Arc::new(Store::new(
            std::num::NonZeroUsize::MIN,
            vec![CollectorStatus::new("gpu", Duration::from_secs(1))],
        ));
        let state = ApiState {
            metrics: MetricsRenderer::new(
                Arc::clone(&store),
                super::super::prometheus::BuildInfo {
                    version: "t",
                    gpu_source: "demo",
                },
                super::super::prometheus::RenderOptions::default(),
                Default::default(),
            ),
            store: Arc::clone(&store),
            node: Arc::from("n"),
        };
        let r = readyz(State(state.clone())).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        store.record_run(
            "gpu",
            crate::store::RunReport {
                duration: Duration::ZERO,
                finished_at: std::time::SystemTime::now(),
                outcome: Err(("unavailable", "no NVML".to_owned())),
            },
        );
        // A failed first cycle still counts: the agent is serving what it can.
        assert_eq!(readyz(State(state)).await.status(), StatusCode::OK);
    }
}
