//! The HTTP server (axum): the only module that knows HTTP.
//!
//! * `GET /metrics`: Prometheus text, or OpenMetrics when the `Accept` header asks for it.
//! * `GET /healthz`: 200 while the process is alive.
//! * `GET /readyz`: 200 once every collector has finished its first cycle, else 503.
//! * `GET /v1/snapshot`: the latest snapshot as JSON (`gpulse.snapshot/v1`).
//!
//! Every request is bounded: a timeout (503 past it), a cap on requests in flight (503 with
//! `Retry-After` beyond it: shedding load beats queueing it), and a body-size limit (413).
//! Unknown paths get 404, other methods 405.

use std::future::Future;
use std::net::SocketAddr;
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
    let routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/snapshot", get(snapshot))
        .with_state(state);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Serves `routes` with the bounds of `http` on a free port; returns its base URL.
    async fn serve_bounded(routes: Router, http: &HttpConfig) -> String {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            with_bounds(routes, http),
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
        let first = tokio::spawn(reqwest::get(format!("{base}/slow")));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = reqwest::get(format!("{base}/slow")).await.unwrap();
        assert_eq!(second.status(), 503);
        assert_eq!(second.headers()["retry-after"], "1");
        assert_eq!(first.await.unwrap().unwrap().status(), 200);
        let third = reqwest::get(format!("{base}/slow")).await.unwrap();
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
        let r = reqwest::get(format!("{base}/slow")).await.unwrap();
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
