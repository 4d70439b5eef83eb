//! Synthetic inference requests against in-process fake servers: streamed completions per
//! kind (first token, token counts, a stream left open after `[DONE]`), Ollama NDJSON,
//! KServe v2 infer, hostile generations (trickling, endless, errors), https trust settings,
//! token rotation, and the running agent's scheduling (ready servers only, never blocking
//! the checks).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use gpulse::app::GpuSource;
use gpulse::collect::probe::Probe;
use gpulse::collect::probe::infer::infer;
use gpulse::config::{Config, HumanDuration, ProbeConfig, ProbeKind};
use gpulse::model::{InferenceSample, ProbeReason, ProbeState};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

use crate::probe::probe_entry;

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A streamed body: each `(delay, chunk)` in turn, then (when `hold`) the stream stays open.
fn stream(parts: Vec<(Duration, String)>, hold: bool, content_type: &'static str) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(1);
    tokio::spawn(async move {
        for (delay, chunk) in parts {
            tokio::time::sleep(delay).await;
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        if hold {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap()
}

fn sse(events: &[&str]) -> Vec<(Duration, String)> {
    events
        .iter()
        .map(|e| (Duration::ZERO, format!("data: {e}\n\n")))
        .collect()
}

fn config(kind: ProbeKind, base: &str) -> ProbeConfig {
    let mut c = ProbeConfig::new("p", kind, base);
    c.inference = true;
    c.inference_timeout = HumanDuration(Duration::from_secs(3));
    c
}

async fn run(c: ProbeConfig, model: &str) -> InferenceSample {
    infer(&Probe::new(c), model).await
}

/// An OpenAI-compatible server: first token after 150 ms, a second, a usage chunk, `[DONE]`,
/// then the connection is held open. Records the request bodies.
fn openai_server(bodies: Arc<Mutex<Vec<serde_json::Value>>>) -> Router {
    Router::new().route(
        "/v1/completions",
        post(move |body: String| {
            let bodies = Arc::clone(&bodies);
            async move {
                bodies
                    .lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                let mut parts = vec![(
                    Duration::from_millis(150),
                    "data: {\"choices\":[{\"text\":\" tienen\",\"index\":0}]}\n\n".to_owned(),
                )];
                parts.extend(sse(&[
                    r#"{"choices":[{"text":"!","index":0}]}"#,
                    r#"{"choices":[],"usage":{"completion_tokens":2,"prompt_tokens":2}}"#,
                    "[DONE]",
                ]));
                stream(parts, true, "text/event-stream")
            }
        }),
    )
}

#[tokio::test]
async fn openai_kinds_stream_a_completion_timing_the_first_token() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let base = serve(openai_server(Arc::clone(&bodies))).await;
    for kind in [
        ProbeKind::Vllm,
        ProbeKind::Sglang,
        ProbeKind::Tgi,
        ProbeKind::Llamacpp,
        ProbeKind::Openai,
    ] {
        let s = run(config(kind, &base), "tiny").await;
        assert!(s.ok, "{kind:?}: {s:?}");
        let ttft = s.ttft.unwrap();
        assert!(ttft >= Duration::from_millis(150), "{kind:?}: {ttft:?}");
        // Done at `[DONE]`, not when the server closes the stream 30 s later.
        assert!(s.duration < Duration::from_secs(2), "{kind:?}: {s:?}");
        assert!(s.duration >= ttft);
        assert_eq!(s.output_tokens, Some(2), "{kind:?}");
        assert_eq!(s.model, "tiny");
        assert!(s.tokens_per_second().unwrap() > 0.0);
    }
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 5);
    for body in bodies.iter() {
        assert_eq!(body["model"], "tiny");
        assert_eq!(body["max_tokens"], 1);
        assert_eq!(body["stream"], true);
        assert_eq!(body["prompt"], "hi");
    }
    // usage is asked for only where the option is known to be accepted.
    assert_eq!(bodies[0]["stream_options"]["include_usage"], true);
    assert!(bodies[2].get("stream_options").is_none());
}

#[tokio::test]
async fn a_server_that_does_not_stream_still_answers() {
    let base = serve(Router::new().route(
        "/v1/completions",
        post(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"choices":[{"text":"hello","index":0}],"usage":{"completion_tokens":1}}"#,
            )
        }),
    ))
    .await;
    let s = run(config(ProbeKind::Openai, &base), "").await;
    assert!(s.ok, "{s:?}");
    assert_eq!(s.output_tokens, Some(1));
    assert!(s.ttft.is_some());
}

#[tokio::test]
async fn hostile_generations_are_bounded_and_classified() {
    let app = Router::new()
        // A token every 100 ms, forever.
        .route(
            "/trickle/v1/completions",
            post(|| async {
                let parts = (0..1000)
                    .map(|_| {
                        (
                            Duration::from_millis(100),
                            "data: {\"choices\":[{\"text\":\"a\"}]}\n\n".to_owned(),
                        )
                    })
                    .collect();
                stream(parts, true, "text/event-stream")
            }),
        )
        // 64 KiB chunks without a newline, endlessly.
        .route(
            "/endless/v1/completions",
            post(|| async {
                let parts = (0..10_000)
                    .map(|_| (Duration::ZERO, "x".repeat(64 * 1024)))
                    .collect();
                stream(parts, false, "text/event-stream")
            }),
        )
        .route(
            "/overloaded/v1/completions",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"error":{"message":"overloaded"}}"#,
                )
            }),
        )
        .route(
            "/error/v1/completions",
            post(|| async {
                stream(
                    sse(&[r#"{"error":{"message":"CUDA out of memory"}}"#]),
                    true,
                    "text/event-stream",
                )
            }),
        )
        .route(
            "/garbage/v1/completions",
            post(|| async { stream(sse(&["{nope", "[DONE]"]), false, "text/event-stream") }),
        );
    let base = serve(app).await;
    let mut c = config(ProbeKind::Vllm, &format!("{base}/trickle"));
    c.inference_timeout = HumanDuration(Duration::from_millis(500));
    let started = Instant::now();
    let s = run(c, "").await;
    assert_eq!(
        (s.ok, s.reason),
        (false, Some(ProbeReason::Timeout)),
        "{s:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));

    let mut c = config(ProbeKind::Vllm, &format!("{base}/endless"));
    c.max_body_bytes = 256 * 1024;
    let s = run(c, "").await;
    assert_eq!(s.reason, Some(ProbeReason::BodyTooLarge), "{s:?}");

    let s = run(config(ProbeKind::Vllm, &format!("{base}/overloaded")), "").await;
    assert_eq!(s.reason, Some(ProbeReason::HttpStatus), "{s:?}");
    assert_eq!(s.detail, "HTTP 503: overloaded");

    let s = run(config(ProbeKind::Vllm, &format!("{base}/error")), "").await;
    assert_eq!(s.reason, Some(ProbeReason::BadBody), "{s:?}");
    assert!(s.detail.contains("CUDA out of memory"), "{s:?}");

    let s = run(config(ProbeKind::Vllm, &format!("{base}/garbage")), "").await;
    assert_eq!(s.reason, Some(ProbeReason::BadBody), "{s:?}");

    let s = run(config(ProbeKind::Vllm, "http://127.0.0.1:1"), "").await;
    assert_eq!(s.reason, Some(ProbeReason::ConnectRefused), "{s:?}");
}

#[tokio::test]
async fn ollama_streams_ndjson_and_reports_loads() {
    let base = serve(Router::new().route(
        "/api/generate",
        post(|body: String| async move {
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["options"]["num_predict"], 1);
            assert_eq!(body["model"], "llama3");
            stream(
                vec![
                    (
                        Duration::from_millis(100),
                        "{\"model\":\"llama3\",\"response\":\"Hi\",\"done\":false}\n".to_owned(),
                    ),
                    (
                        Duration::ZERO,
                        "{\"model\":\"llama3\",\"response\":\"\",\"done\":true,\"eval_count\":1,\"load_duration\":1500000000}\n"
                            .to_owned(),
                    ),
                ],
                true,
                "application/x-ndjson",
            )
        }),
    ))
    .await;
    let s = run(config(ProbeKind::Ollama, &base), "llama3").await;
    assert!(s.ok, "{s:?}");
    assert!(s.ttft.unwrap() >= Duration::from_millis(100));
    assert_eq!(s.output_tokens, Some(1));
    assert!(s.caused_load);
}

#[tokio::test]
async fn kserve_v2_infer_sends_the_configured_input() {
    let seen = Arc::new(Mutex::new(String::new()));
    let record = Arc::clone(&seen);
    let base = serve(Router::new().route(
        "/v2/models/{model}/infer",
        post(
            move |axum::extract::Path(model): axum::extract::Path<String>, body: String| {
                let record = Arc::clone(&record);
                async move {
                    *record.lock().unwrap() = body;
                    if model == "iris" {
                        (
                            StatusCode::OK,
                            r#"{"model_name":"iris","outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","data":[0]}]}"#,
                        )
                    } else {
                        (StatusCode::NOT_FOUND, r#"{"error":"Model nosuch not found"}"#)
                    }
                }
            },
        ),
    ))
    .await;
    let input = r#"{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;
    for kind in [ProbeKind::Kserve, ProbeKind::Triton] {
        let mut c = config(kind, &base);
        c.inference_input = input.to_owned();
        let s = run(c.clone(), "iris").await;
        assert!(s.ok, "{s:?}");
        assert!(s.ttft.is_some());
        assert_eq!(s.output_tokens, None);
        assert_eq!(*seen.lock().unwrap(), input);
        let s = run(c, "nosuch").await;
        assert_eq!(s.reason, Some(ProbeReason::HttpStatus), "{s:?}");
        assert_eq!(s.detail, "HTTP 404: Model nosuch not found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_probes_trust_their_ca_file_and_refuse_unknown_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pair = crate::tls::self_signed("probe-target", 1);
    let (server, cert, _key) = crate::tls::tls_config(dir.path(), &pair);
    let agent = crate::inproc::start(server, GpuSource::Demo { gpus: 1 }, None).await;
    let url = format!("https://127.0.0.1:{}/healthz", agent.addr.port());
    let mut c = ProbeConfig::new("tls", ProbeKind::Http, &url);
    c.tls_ca_file = cert.display().to_string();
    let trusted = Probe::try_new(c.clone()).unwrap().check().await;
    assert_eq!(trusted.state, ProbeState::Up, "{trusted:?}");

    c.tls_ca_file.clear();
    let unknown = Probe::new(c.clone()).check().await;
    assert_eq!(
        (unknown.state, unknown.reason),
        (ProbeState::Down, Some(ProbeReason::Tls)),
        "{unknown:?}"
    );

    // A CA file gone bad after start: the probe runs on the built-in roots, which do not
    // know this self-signed certificate.
    let mut gone = c.clone();
    gone.tls_ca_file = dir.path().join("missing.pem").display().to_string();
    let fallback = Probe::new(gone).check().await;
    assert_eq!(
        (fallback.state, fallback.reason),
        (ProbeState::Down, Some(ProbeReason::Tls)),
        "{fallback:?}"
    );

    c.tls_insecure_skip_verify = true;
    let insecure = Probe::new(c).check().await;
    assert_eq!(insecure.state, ProbeState::Up, "{insecure:?}");
    agent.shut_down().await;
}

#[tokio::test]
async fn a_rotated_token_file_is_used_without_a_restart() {
    let expected = Arc::new(Mutex::new("first".to_owned()));
    let want = Arc::clone(&expected);
    let base = serve(Router::new().route(
        "/health",
        get(move |headers: HeaderMap| {
            let want = Arc::clone(&want);
            async move {
                let got = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if got == format!("Bearer {}", want.lock().unwrap()) {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }
        }),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first\n").unwrap();
    let mut c = ProbeConfig::new("auth", ProbeKind::Http, &format!("{base}/health"));
    c.bearer_token_file = token.display().to_string();
    let probe = Probe::new(c);
    assert_eq!(probe.check().await.state, ProbeState::Up);
    *expected.lock().unwrap() = "second-longer".to_owned();
    assert_eq!(probe.check().await.state, ProbeState::Down);
    // Rotated as a secret mount does: a new file renamed over the old one.
    std::fs::write(dir.path().join("token.new"), "second-longer\n").unwrap();
    std::fs::rename(dir.path().join("token.new"), &token).unwrap();
    assert_eq!(probe.check().await.state, ProbeState::Up);
    // A token file that disappears keeps the last token read.
    std::fs::remove_file(&token).unwrap();
    assert_eq!(probe.check().await.state, ProbeState::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_asks_only_ready_servers_and_a_hung_generation_never_delays_checks() {
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    let app = Router::new()
        // Ready, but every generation hangs.
        .route("/hung/health", get(|| async { "ok" }))
        .route(
            "/hung/v1/models",
            get(|| async { r#"{"data":[{"id":"m"}]}"# }),
        )
        .route(
            "/hung/v1/completions",
            post(|| async { stream(Vec::new(), true, "text/event-stream") }),
        )
        // Loading: it must never be asked to generate.
        .route(
            "/loading/health",
            get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route(
            "/loading/v1/completions",
            post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::SERVICE_UNAVAILABLE }
            }),
        );
    let base = serve(app).await;
    let mut config = Config::default();
    config.gpu.enabled = false;
    config.host.enabled = false;
    for name in ["hung", "loading"] {
        let mut p = ProbeConfig::new(name, ProbeKind::Vllm, &format!("{base}/{name}"));
        p.interval = HumanDuration(Duration::from_millis(100));
        p.inference = true;
        p.inference_interval = HumanDuration(Duration::from_millis(100));
        p.inference_timeout = HumanDuration(Duration::from_millis(1500));
        config.probe.push(p);
    }
    let agent = crate::inproc::start(config, GpuSource::Nvml, None).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let first = probe_entry(&agent.get_json("/v1/probes").await, "hung");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = probe_entry(&agent.get_json("/v1/probes").await, "hung");
    // Checks go on every 100 ms while the first generation hangs.
    assert_eq!(second["state"], "up");
    assert_ne!(first["checked_at"], second["checked_at"]);
    assert_eq!(second["inference"]["requests_failed"], 0, "{second}");
    // Then the generation times out: a failure with its reason.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let v = agent.get_json("/v1/probes").await;
    let hung = probe_entry(&v, "hung");
    assert!(
        hung["inference"]["requests_failed"].as_u64().unwrap() >= 1,
        "{hung}"
    );
    assert_eq!(hung["inference"]["last"]["reason"], "timeout");
    assert_eq!(hung["inference"]["last"]["model"], "m");
    let loading = probe_entry(&v, "loading");
    // Never ready since gpulse started: start-up, not yet `loading` (see docs/probes.md).
    assert_eq!(loading["state"], "starting");
    assert_eq!(loading["reason"], "not_ready");
    assert_eq!(loading["inference"]["requests_succeeded"], 0);
    assert_eq!(loading["inference"]["requests_failed"], 0);
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    let metrics = agent.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"gpulse_probe_inference_requests_total{probe="hung",kind="vllm",outcome="failure"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"gpulse_probe_inference_slo_violations_total{probe="hung",kind="vllm"} 1"#)
    );
    agent.shut_down().await;
}

const VLLM_METRICS: &str = "# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 4.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.75
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine=\"0\",model_name=\"m\"} 1234.0
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine=\"0\",model_name=\"m\"} 3.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.1\",model_name=\"m\"} 6.0
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.5\",model_name=\"m\"} 9.0
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 10.0
vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"m\"} 10.0
vllm:time_to_first_token_seconds_sum{engine=\"0\",model_name=\"m\"} 2.5
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_metrics_are_scraped_lifted_and_exported() {
    let base = serve(
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/v1/models", get(|| async { r#"{"data":[{"id":"m"}]}"# }))
            .route("/metrics", get(|| async { VLLM_METRICS })),
    )
    .await;
    let mut config = Config::default();
    config.gpu.enabled = false;
    config.host.enabled = false;
    let mut p = ProbeConfig::new("llm", ProbeKind::Vllm, &base);
    p.metrics = true;
    p.metrics_interval = HumanDuration(Duration::from_millis(100));
    config.probe.push(p);
    let agent = crate::inproc::start(config, GpuSource::Nvml, None).await;
    let metrics = agent
        .wait_for("/metrics", "lifted server metrics", |m| {
            m.contains("gpulse_server_requests_waiting")
        })
        .await;
    for line in [
        r#"gpulse_probe_metrics_scrape_success{probe="llm",kind="vllm"} 1"#,
        r#"gpulse_server_requests_waiting{probe="llm",kind="vllm"} 4"#,
        r#"gpulse_server_requests_running{probe="llm",kind="vllm"} 2"#,
        r#"gpulse_server_kv_cache_usage_ratio{probe="llm",kind="vllm"} 0.75"#,
        r#"gpulse_server_generation_tokens_total{probe="llm",kind="vllm"} 1234"#,
        r#"gpulse_server_preemptions_total{probe="llm",kind="vllm"} 3"#,
        r#"gpulse_server_time_to_first_token_seconds_bucket{probe="llm",kind="vllm",le="0.1"} 6"#,
        r#"gpulse_server_time_to_first_token_seconds_bucket{probe="llm",kind="vllm",le="0.5"} 9"#,
        r#"gpulse_server_time_to_first_token_seconds_bucket{probe="llm",kind="vllm",le="+Inf"} 10"#,
        r#"gpulse_server_time_to_first_token_seconds_sum{probe="llm",kind="vllm"} 2.5"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    // Families the server does not expose are absent, not zero.
    assert!(!metrics.contains("gpulse_server_requests_failed_total"));
    let v = agent.get_json("/v1/probes").await;
    let lifted = &v["probes"][0]["server_metrics"]["lifted"];
    assert_eq!(lifted["dialect"], "vllm");
    assert_eq!(lifted["requests_waiting"], 4.0);
    assert_eq!(lifted["time_to_first_token_seconds"]["mean"], 0.25);
    // Rank 5 of 10 falls in (0, 0.1] holding ranks 1..6.
    let p50 = lifted["time_to_first_token_seconds"]["p50"]
        .as_f64()
        .unwrap();
    assert!((p50 - 5.0 / 6.0 * 0.1).abs() < 1e-9, "{p50}");
    agent.shut_down().await;
}

#[tokio::test]
async fn hostile_metrics_endpoints_are_bounded_and_classified() {
    let app = Router::new()
        .route("/ok/metrics", get(|| async { VLLM_METRICS }))
        .route(
            "/json/metrics",
            get(|| async { r#"[{"iter": 1, "numActiveRequests": 2}]"# }),
        )
        .route(
            "/broken/metrics",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/huge/metrics",
            get(|| async {
                let line = "vllm:num_requests_waiting{model_name=\"m\"} 1\n".repeat(1000);
                let parts = (0..1000).map(|_| (Duration::ZERO, line.clone())).collect();
                stream(parts, false, "text/plain")
            }),
        )
        .route(
            "/hang/metrics",
            get(|| async { stream(Vec::new(), true, "text/plain") }),
        );
    let base = serve(app).await;
    let probe = |path: &str| {
        let mut c = ProbeConfig::new("m", ProbeKind::Vllm, "http://127.0.0.1:1");
        c.metrics = true;
        // The metrics live elsewhere than the API (as MLServer's do).
        c.metrics_url = format!("{base}/{path}/metrics");
        c.metrics_max_body_bytes = 512 * 1024;
        c.timeout = HumanDuration(Duration::from_millis(500));
        Probe::new(c)
    };
    let ok = probe("ok");
    let lifted = ok.scrape(&ok.config().metrics_url()).await.unwrap();
    assert_eq!(lifted.requests_waiting, Some(4.0));
    for (path, reason) in [
        ("json", ProbeReason::BadBody),
        ("broken", ProbeReason::HttpStatus),
        ("huge", ProbeReason::BodyTooLarge),
        ("hang", ProbeReason::Timeout),
    ] {
        let p = probe(path);
        let started = Instant::now();
        let err = p.scrape(&p.config().metrics_url()).await.unwrap_err();
        assert_eq!(err.0, reason, "{path}: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path}");
    }
}
