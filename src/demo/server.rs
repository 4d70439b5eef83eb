//! `gpulse demo`'s simulated inference server: a tiny vLLM-like (OpenAI-compatible) HTTP
//! server on a loopback port, probed like a real one so the probe panels have data.
//!
//! It serves `GET /health`, `GET /v1/models` (model [`DEMO_MODEL`]), a streaming
//! `POST /v1/completions` (a token every few milliseconds, slower under the simulated load)
//! and `GET /metrics` in vLLM's names (`vllm:*`: queue, running requests, KV cache, tokens,
//! a TTFT histogram), so the synthetic-request and server-metrics panels have data. It fails
//! with 500 for [`DEMO_OUTAGE`] out of every [`DEMO_OUTAGE_EVERY`], so outages and recovery
//! times show up too; each simulated outage is logged (WARN) as it starts.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

/// The model the demo server lists.
pub const DEMO_MODEL: &str = "gpulse-demo-model";
/// How often the demo server has an outage.
pub const DEMO_OUTAGE_EVERY: Duration = Duration::from_secs(300);
/// How long each outage lasts.
pub const DEMO_OUTAGE: Duration = Duration::from_secs(20);

/// Served requests, for the demo's `/metrics`.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    /// Time to first token of every request, per `vllm:time_to_first_token_seconds` bucket.
    ttft_buckets: [AtomicU64; TTFT_BOUNDS.len()],
    ttft_micros: AtomicU64,
}

/// Bucket bounds of the demo's TTFT histogram (a subset of vLLM's).
const TTFT_BOUNDS: [f64; 6] = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32];

struct Demo {
    started: Instant,
    counters: Counters,
}

impl Demo {
    /// Seconds into the current outage period.
    fn phase(&self) -> u64 {
        self.started.elapsed().as_secs() % DEMO_OUTAGE_EVERY.as_secs()
    }

    /// The first outage starts one period in, at the end of the period.
    fn in_outage(&self) -> bool {
        self.phase() >= DEMO_OUTAGE_EVERY.as_secs() - DEMO_OUTAGE.as_secs()
    }

    /// A load wave: 0..=1 over a minute, so the queue and latency move.
    fn load(&self) -> f64 {
        let t = self.started.elapsed().as_secs_f64();
        0.5 + 0.5 * (t / 60.0 * std::f64::consts::TAU).sin()
    }
}

/// Starts the demo server on `127.0.0.1:0` until `stop`; returns its address.
pub async fn start(mut stop: watch::Receiver<bool>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let demo = Arc::new(Demo {
        started,
        counters: Counters::default(),
    });
    let app = Router::new()
        .route(
            "/health",
            get(|State(demo): State<Arc<Demo>>| async move {
                if demo.in_outage() {
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
        )
        .route("/v1/completions", post(completions))
        .route("/metrics", get(metrics))
        .with_state(demo);
    tokio::spawn(announce_outages(started, stop.clone()));
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

/// Logs a WARN as each simulated outage starts (the first one period in, like
/// [`Demo::in_outage`]), so nobody mistakes the demo's 500s for a real failure.
async fn announce_outages(started: Instant, mut stop: watch::Receiver<bool>) {
    let first = tokio::time::Instant::from_std(started) + DEMO_OUTAGE_EVERY - DEMO_OUTAGE;
    let mut ticker = tokio::time::interval_at(first, DEMO_OUTAGE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        tracing::warn!(
            seconds = DEMO_OUTAGE.as_secs(),
            "Demo mode: simulated outage starts: the demo inference server answers 500 (not a real failure)."
        );
    }
}

/// Streams `max_tokens` (at most 16) tokens as OpenAI completion chunks, then usage and
/// `[DONE]`; the first token takes 10–90 ms depending on the simulated load.
async fn completions(State(demo): State<Arc<Demo>>, body: String) -> Response {
    if demo.in_outage() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let max_tokens = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|request| request.get("max_tokens")?.as_u64())
        .unwrap_or(1)
        .clamp(1, 16);
    let ttft = Duration::from_millis(10 + (80.0 * demo.load()) as u64);
    let c = &demo.counters;
    c.requests.fetch_add(1, Ordering::Relaxed);
    c.prompt_tokens.fetch_add(2, Ordering::Relaxed);
    c.generation_tokens.fetch_add(max_tokens, Ordering::Relaxed);
    c.ttft_micros
        .fetch_add(ttft.as_micros() as u64, Ordering::Relaxed);
    if let Some(i) = TTFT_BOUNDS.iter().position(|&b| ttft.as_secs_f64() <= b) {
        c.ttft_buckets[i].fetch_add(1, Ordering::Relaxed);
    }
    let stream = token_stream(ttft, max_tokens);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The SSE body: one chunk per token, a usage chunk, `[DONE]`.
fn token_stream(
    ttft: Duration,
    tokens: u64,
) -> ReceiverStream<Result<String, std::convert::Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(4);
    tokio::spawn(async move {
        tokio::time::sleep(ttft).await;
        for i in 0..tokens {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let chunk = format!(
                "data: {{\"object\":\"text_completion\",\"model\":\"{DEMO_MODEL}\",\"choices\":[{{\"index\":0,\"text\":\" tok{i}\",\"finish_reason\":null}}]}}\n\n"
            );
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        let usage = format!(
            "data: {{\"object\":\"text_completion\",\"choices\":[],\"usage\":{{\"prompt_tokens\":2,\"completion_tokens\":{tokens}}}}}\n\ndata: [DONE]\n\n"
        );
        let _ = tx.send(Ok(usage)).await;
    });
    ReceiverStream::new(rx)
}

/// `GET /metrics` in vLLM's names.
async fn metrics(State(demo): State<Arc<Demo>>) -> Response {
    if demo.in_outage() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let load = demo.load();
    let c = &demo.counters;
    let label = format!("model_name=\"{DEMO_MODEL}\",engine=\"0\"");
    let mut text = String::new();
    let gauges = [
        ("vllm:num_requests_running", (8.0 * load).round()),
        ("vllm:num_requests_waiting", (6.0 * load * load).round()),
        ("vllm:kv_cache_usage_perc", 0.2 + 0.7 * load),
    ];
    for (name, value) in gauges {
        let _ = write!(text, "# TYPE {name} gauge\n{name}{{{label}}} {value}\n");
    }
    let counters = [
        (
            "vllm:prompt_tokens",
            c.prompt_tokens.load(Ordering::Relaxed),
        ),
        (
            "vllm:generation_tokens",
            c.generation_tokens.load(Ordering::Relaxed),
        ),
        ("vllm:num_preemptions", 0),
    ];
    for (name, value) in counters {
        let _ = write!(
            text,
            "# TYPE {name} counter\n{name}_total{{{label}}} {value}\n"
        );
    }
    let requests = c.requests.load(Ordering::Relaxed);
    let _ = write!(
        text,
        "# TYPE vllm:request_success counter\nvllm:request_success_total{{{label},finished_reason=\"length\"}} {requests}\nvllm:request_success_total{{{label},finished_reason=\"error\"}} 0\n"
    );
    let mut cumulative = 0;
    let ttft: Vec<(f64, u64)> = TTFT_BOUNDS
        .iter()
        .zip(&c.ttft_buckets)
        .map(|(bound, n)| {
            cumulative += n.load(Ordering::Relaxed);
            (*bound, cumulative)
        })
        .collect();
    let ttft_sum = c.ttft_micros.load(Ordering::Relaxed) as f64 / 1e6;
    histogram(
        &mut text,
        "vllm:time_to_first_token_seconds",
        &label,
        &ttft,
        requests,
        ttft_sum,
    );
    // Tokens follow the first one every 5 ms: the end-to-end time is the first-token time
    // plus that, and every request falls in the same inter-token bucket.
    let generated = c.generation_tokens.load(Ordering::Relaxed);
    let decode = generated.saturating_sub(requests) as f64 * 0.005;
    let e2e: Vec<(f64, u64)> = [0.1, 0.3, 1.0]
        .iter()
        .map(|&b| {
            (
                b,
                ttft.iter()
                    .filter(|(t, _)| *t + 0.08 <= b)
                    .map(|(_, n)| *n)
                    .max()
                    .unwrap_or(0),
            )
        })
        .collect();
    histogram(
        &mut text,
        "vllm:e2e_request_latency_seconds",
        &label,
        &e2e,
        requests,
        ttft_sum + decode,
    );
    let itl_count = generated.saturating_sub(requests);
    histogram(
        &mut text,
        "vllm:inter_token_latency_seconds",
        &label,
        &[(0.01, itl_count)],
        itl_count,
        decode,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Writes one histogram in Prometheus text: cumulative `buckets`, then `+Inf`, sum, count.
fn histogram(
    text: &mut String,
    name: &str,
    label: &str,
    buckets: &[(f64, u64)],
    count: u64,
    sum: f64,
) {
    let _ = writeln!(text, "# TYPE {name} histogram");
    for (bound, cumulative) in buckets {
        let _ = writeln!(text, "{name}_bucket{{{label},le=\"{bound}\"}} {cumulative}");
    }
    let _ = write!(
        text,
        "{name}_bucket{{{label},le=\"+Inf\"}} {count}\n{name}_sum{{{label}}} {sum}\n{name}_count{{{label}}} {count}\n"
    );
}
