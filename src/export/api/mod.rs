//! The HTTP server (axum router, our own hyper accept loop): the only module that knows HTTP.
//!
//! * here: the router, its bounds, the handlers and the credentials (TLS, bearer token);
//! * `serve`: the accept loop and per-connection deadlines; `tls`: rustls from PEM files;
//!   `auth`: the bearer-token check; `reload`: reloading both on SIGHUP and file change;
//!   `metrics`: `/metrics`'s content negotiation (format, gzip).
//!
//! * `GET /`: an index of these endpoints (HTML for a browser, plain text otherwise).
//! * `GET /metrics`: Prometheus text, or OpenMetrics when the `Accept` header asks for it;
//!   rendered once per snapshot, gzip-compressed for clients that accept it ([`metrics`]).
//! * `GET /healthz`: 200 while the process is alive.
//! * `GET /readyz`: 200 once every collector has finished its first cycle, else 503.
//! * `GET /v1/snapshot`: the latest snapshot as JSON (`gpulse.snapshot/v1`).
//! * `POST /v1/health/clear?gpu=INDEX|UUID|all`: clears sticky health reasons after a repair
//!   ([`clear`]; needs the bearer token, or a loopback client when none is configured).
//! * `GET /v1/probes`: every probe's state, reason and outages (`gpulse.probes/v1`).
//! * `GET /v1/events[?since=SEQ][&limit=N]`: a page of the event log and the wrapped job's
//!   summary (`gpulse.events/v2`; see [`events`]).
//! * `GET /v1/score`: the provider-quality score per window (`gpulse.score/v1`).
//! * `GET /v1/identity`, `/v1/report`, `/v1/reports`, `/v1/reports/SEQ`: the signing key and
//!   signed, hash-chained score reports ([`report`]).
//!
//! Every request is bounded: a timeout (503 past it), a cap on requests in flight (503 with
//! `Retry-After` beyond it: shedding load beats queueing it), and a body-size limit (413).
//! Unknown paths get 404, other methods 405. With a bearer token configured, everything but
//! `GET /healthz` and `GET /readyz` needs it (401 otherwise, see [`auth`]).
//!
//! Every connection is bounded too: at most `http.max_connections` are open; a new one must
//! finish its TLS handshake and first request head within `http.header_timeout`, and when all
//! are taken the oldest one that has not sent a request is closed for a newcomer (so liveness
//! probes get through a flood of silent connections; see [`serve`]); later heads and
//! keep-alive idleness are limited by `http.request_timeout`, and a peer that stops reading
//! our response for that long is disconnected. HTTP/1.1 only; with TLS configured
//! ([`tls`]), HTTPS only.

pub mod auth;
pub mod clear;
pub mod events;
mod metrics;
pub mod reload;
pub mod report;
mod serve;
pub mod tls;

pub use events::EventFeed;
pub use serve::{ServeOptions, bind, serve};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use self::auth::TokenSource;
use self::reload::LoadError;
use self::tls::TlsConfig;
use super::json::{HealthV1, ProbesV1, ScoreV1, SnapshotV1};
use super::prometheus::MetricsRenderer;
use crate::config::{ConfigError, HttpConfig};
use crate::store::Store;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub metrics: MetricsRenderer,
    pub node: Arc<str>,
    /// `score.enabled`: tells "off" (404) from "not yet" (503) on /v1/score.
    pub score_enabled: bool,
    /// `gpu.ready_grace`: how long `/readyz` waits for a first GPU sample where GPUs are expected.
    pub ready_grace: std::time::Duration,
    /// The signed reports; `None` with `report.enabled = false` (their endpoints answer 404).
    pub reports: Option<Arc<dyn report::ReportService>>,
    /// The event log /v1/events pages through; `None` serves an empty log.
    pub events: Option<Arc<dyn EventFeed>>,
    /// A bearer token is configured: `POST /v1/health/clear` is then open to whoever presents
    /// it, otherwise to loopback clients only.
    pub token_required: bool,
}

/// The TLS configuration and bearer token of the server, each optional and reloadable.
///
/// Loaded before the port is bound (a bad file is a config error, exit 2); reloaded by
/// [`Credentials::reload`] on SIGHUP and when a file changes.
#[derive(Debug, Default)]
pub struct Credentials {
    tls: Option<Arc<TlsConfig>>,
    token: Option<Arc<TokenSource>>,
}

impl Credentials {
    /// Plain HTTP, no authentication.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads the TLS and token files named in `http`, the token variable from the process
    /// environment; an error names the key and the file or variable.
    pub fn load(http: &HttpConfig) -> Result<Self, ConfigError> {
        Self::load_with_env(http, |name| std::env::var(name).ok())
    }

    /// [`Credentials::load`], reading `http.bearer_token_env`'s variable through `env`.
    pub fn load_with_env(
        http: &HttpConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let deadline = http.reload_timeout.0;
        let tls = match http.tls_files()? {
            Some((cert, key)) => Some(Arc::new(
                tls::load(cert, key, deadline).map_err(config_error)?,
            )),
            None => None,
        };
        let token = match (http.bearer_token_file(), http.bearer_token_env.trim()) {
            (Some(_), var) if !var.is_empty() => {
                return Err(ConfigError::at_key(
                    auth::TOKEN_ENV_KEY,
                    "is set and so is `http.bearer_token_file`; set one of the two",
                ));
            }
            (Some(file), _) => Some(Arc::new(TokenSource::File(
                auth::load(file, deadline).map_err(config_error)?,
            ))),
            (None, "") => None,
            (None, var) => Some(Arc::new(TokenSource::Env(Arc::new(
                auth::from_env(var, env)
                    .map_err(|message| ConfigError::at_key(auth::TOKEN_ENV_KEY, message))?,
            )))),
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

    /// Whether there is anything to reload (a token from the environment is not).
    pub fn is_reloadable(&self) -> bool {
        self.is_tls() || self.token_file().is_some()
    }

    fn token_file(&self) -> Option<&auth::BearerToken> {
        self.token.as_deref().and_then(TokenSource::file)
    }

    /// Reloads what changed (everything when `force`, e.g. on SIGHUP). A failure is logged
    /// and the previous certificate or token stays in use. Blocking: reads files.
    pub fn reload(&self, force: bool) {
        if let Some(tls) = &self.tls {
            tls.reload(force);
        }
        if let Some(token) = self.token_file() {
            token.reload(force);
        }
    }

    /// What the first load found worth a warning (an expired certificate, a secret file
    /// others can read); empty the second time. Logged by [`serve`] when the server starts,
    /// because the files are read before logging is set up.
    pub fn take_startup_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(tls) = &self.tls {
            warnings.extend(tls.take_startup_warnings());
        }
        if let Some(token) = self.token_file() {
            warnings.extend(token.take_startup_warnings());
        }
        warnings
    }

    /// Successful reloads so far (certificate and token together).
    pub fn reloads(&self) -> u64 {
        self.tls.as_ref().map_or(0, |t| t.reloads()) + self.token_file().map_or(0, |t| t.reloads())
    }

    /// Failed reloads so far (certificate and token together).
    pub fn reload_failures(&self) -> u64 {
        self.tls.as_ref().map_or(0, |t| t.failures())
            + self.token_file().map_or(0, |t| t.failures())
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
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/health", get(health))
        .route("/v1/health/clear", axum::routing::post(clear::clear))
        .route("/v1/probes", get(probes))
        .route("/v1/events", get(events::events))
        .route("/v1/score", get(score))
        .route("/v1/identity", get(report::identity))
        .route("/v1/report", get(report::report))
        .route("/v1/reports", get(report::list))
        .route("/v1/reports/{seq}", get(report::one))
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

/// The URL to open for an agent listening on `addr`: an unspecified address (all interfaces)
/// becomes `localhost`, IPv6 gets its brackets, TLS gives `https`.
pub fn open_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let port = addr.port();
    match addr.ip() {
        ip if ip.is_unspecified() => format!("{scheme}://localhost:{port}/"),
        IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{port}/"),
        IpAddr::V4(ip) => format!("{scheme}://{ip}:{port}/"),
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
    (
        "/v1/events",
        "the event log: health, Xids, outages, job runs (JSON; ?since=SEQ&limit=N)",
    ),
    (
        "/v1/score",
        "provider-quality score, evidence and cost per window (JSON; ?window=5m|1h|24h|7d)",
    ),
    (
        "/v1/identity",
        "the report signing key, binary hash, GPUs and lease (JSON)",
    ),
    (
        "/v1/report",
        "a fresh signed score report (JSON; ?window=5m|1h|24h|7d&nonce=HEX)",
    ),
    (
        "/v1/reports",
        "the hash chain of hourly signed reports (JSON; ?since=SEQ; /v1/reports/SEQ for one)",
    ),
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
    let now = std::time::SystemTime::now();
    match state.store.snapshot().readiness(now, state.ready_grace) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
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

/// `GET /v1/score[?window=5m|1h|24h|7d]`: 400 for another window or parameter, 503 before
/// the first evaluation, 404 with `score.enabled = false`.
async fn score(State(state): State<ApiState>, uri: axum::http::Uri) -> Response {
    let mut window = None;
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, crate::score::ScoreWindow::parse(value)) {
            ("window", Some(w)) => window = Some(w),
            ("window", None) => {
                return (
                    StatusCode::BAD_REQUEST,
                    "window must be one of 5m, 1h, 24h, 7d\n",
                )
                    .into_response();
            }
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    "unknown query parameter; /v1/score takes only window=5m|1h|24h|7d\n",
                )
                    .into_response();
            }
        }
    }
    let snap = state.store.snapshot();
    match ScoreV1::from_snapshot(&snap, &state.node, window) {
        Some(dto) => axum::Json(dto).into_response(),
        None if !state.score_enabled => (
            StatusCode::NOT_FOUND,
            "the score is off (score.enabled = false)\n",
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the score is computed after the first accounting tick\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_to_open_names_a_host_a_browser_can_reach() {
        let url = |a: &str, tls| open_url(a.parse().unwrap(), tls);
        assert_eq!(url("0.0.0.0:9412", false), "http://localhost:9412/");
        assert_eq!(url("[::]:9412", true), "https://localhost:9412/");
        assert_eq!(url("127.0.0.1:80", false), "http://127.0.0.1:80/");
        assert_eq!(url("[::1]:9412", false), "http://[::1]:9412/");
    }

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
            score_enabled: true,
            ready_grace: Duration::from_secs(60),
            reports: None,
            events: None,
            token_required: false,
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

    #[tokio::test]
    async fn clearing_health_without_a_token_is_for_loopback_only() {
        use axum::extract::ConnectInfo;
        let store = Arc::new(Store::new(std::num::NonZeroUsize::MIN, Vec::new()));
        let mut state = ApiState {
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
            score_enabled: true,
            ready_grace: Duration::from_secs(60),
            reports: None,
            events: None,
            token_required: false,
        };
        let uri: axum::http::Uri = "/v1/health/clear?gpu=all".parse().unwrap();
        let remote: SocketAddr = "10.0.0.7:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let r = clear::clear(State(state.clone()), ConnectInfo(remote), uri.clone()).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(store.snapshot().health_clears.is_empty());
        let r = clear::clear(State(state.clone()), ConnectInfo(local), uri.clone()).await;
        assert_eq!(r.status(), StatusCode::OK);
        // With a token (checked by the auth layer before the handler), any address may clear.
        state.token_required = true;
        let r = clear::clear(State(state), ConnectInfo(remote), uri).await;
        assert_eq!(r.status(), StatusCode::OK);
        let clears = store.snapshot().health_clears.clone();
        assert_eq!(clears.len(), 2);
        assert_eq!(clears[1].by, "10.0.0.7 (bearer token)");
        assert_eq!(clears[1].gpu, None);
    }
}
