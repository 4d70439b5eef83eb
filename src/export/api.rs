//! The HTTP server (axum): the only module that knows HTTP.
//!
//! * `GET /metrics`: Prometheus text, or OpenMetrics when the `Accept` header asks for it.
//! * `GET /healthz`: 200 while the process is alive.
//! * `GET /readyz`: 200 once every collector has finished its first cycle, else 503.
//! * `GET /v1/snapshot`: the latest snapshot as JSON (`gpulse.snapshot/v1`).
//!
//! Every request is bounded: a timeout (503 past it), a cap on requests in flight, and a
//! body-size limit (413). Unknown paths get 404, other methods 405.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::json::SnapshotV1;
use super::prometheus::{MetricsRenderer, OPENMETRICS_TEXT, PROMETHEUS_TEXT};
use crate::config::HttpConfig;
use crate::store::Store;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub metrics: MetricsRenderer,
    pub node: Arc<str>,
}

/// The router with all routes and bounds applied.
pub fn router(state: ApiState, http: &HttpConfig) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/snapshot", get(snapshot))
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(http.max_request_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            http.request_timeout.0,
        ))
        .layer(ConcurrencyLimitLayer::new(
            http.max_concurrent_requests.max(1),
        ))
}

/// Binds `addr`; separate from [`serve`] so callers learn bind errors (and the real port
/// when asked for port 0) before anything else starts.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves until `shutdown` completes, then stops accepting and drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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
