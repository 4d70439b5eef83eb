//! `gpulse demo`'s simulated inference server: a tiny vLLM-like (OpenAI-compatible) HTTP
//! server on a loopback port, probed like a real one so the probe panels have data.
//!
//! It serves `GET /health` and `GET /v1/models` (model [`DEMO_MODEL`]) and fails `/health`
//! with 500 for [`DEMO_OUTAGE`] out of every [`DEMO_OUTAGE_EVERY`], so outages and recovery
//! times show up too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The model the demo server lists.
pub const DEMO_MODEL: &str = "gpulse-demo-model";
/// How often the demo server has an outage.
pub const DEMO_OUTAGE_EVERY: Duration = Duration::from_secs(300);
/// How long each outage lasts.
pub const DEMO_OUTAGE: Duration = Duration::from_secs(20);

/// Starts the demo server on `127.0.0.1:0` until `stop`; returns its address.
pub async fn start(mut stop: watch::Receiver<bool>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let app = Router::new()
        .route(
            "/health",
            get(move || async move {
                // The first outage starts one period in, at the end of the period.
                let phase = started.elapsed().as_secs() % DEMO_OUTAGE_EVERY.as_secs();
                if phase >= DEMO_OUTAGE_EVERY.as_secs() - DEMO_OUTAGE.as_secs() {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/v1/models",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    format!(
                        r#"{{"object":"list","data":[{{"id":"{DEMO_MODEL}","object":"model"}}]}}"#
                    ),
                )
                    .into_response()
            }),
        );
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        });
        if let Err(error) = serve.await {
            tracing::warn!(error = %error, "Demo inference server stopped.");
        }
    });
    Ok(addr)
}
