//! The probe collector against in-process fake inference servers: states and reasons per kind,
//! hostile targets (hangs, slowloris, huge bodies, redirect loops, bad JSON), isolation of a
//! hung target, and outage/recovery bookkeeping in the running agent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use gpulse::app::GpuSource;
use gpulse::collect::probe::Probe;
use gpulse::config::{Config, HumanDuration, ProbeConfig, ProbeKind};
use gpulse::model::{ProbeReason, ProbeSample, ProbeState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `app` on a free loopback port; returns `http://127.0.0.1:PORT`.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A raw TCP server: `handle` gets every accepted connection.
async fn raw<F, Fut>(handle: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // Read the request first, as a server would, so the client sees our answer.
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                handle(stream).await
            });
        }
    });
    format!("http://{addr}")
}

fn json(body: &'static str) -> impl IntoResponse + Clone {
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// A server that answers every kind's endpoints as ready, with model `m`.
fn healthy() -> Router {
    healthy_except("")
}

/// [`healthy`] without the route `skip` (for the test to add its own).
fn healthy_except(skip: &str) -> Router {
    let routes: [(&str, axum::routing::MethodRouter); 7] = [
        ("/health", get(|| async { "ok" })),
        (
            "/v1/models",
            get(|| async { json(r#"{"data":[{"id":"m"}]}"#) }),
        ),
        ("/info", get(|| async { json(r#"{"model_id":"m"}"#) })),
        (
            "/api/tags",
            get(|| async { json(r#"{"models":[{"name":"m:latest"}]}"#) }),
        ),
        ("/v2/health/live", get(|| async { "" })),
        ("/v2/health/ready", get(|| async { "" })),
        ("/v2/models/m/ready", get(|| async { "" })),
    ];
    let mut app = Router::new();
    for (path, route) in routes {
        if path != skip {
            app = app.route(path, route);
        }
    }
    app
}

fn probe(kind: ProbeKind, url: &str) -> ProbeConfig {
    let mut c = ProbeConfig::new("p", kind, url);
    c.timeout = HumanDuration(Duration::from_millis(800));
    c
}

async fn check(config: ProbeConfig) -> ProbeSample {
    Probe::new(config).check().await
}

fn assert_state(s: &ProbeSample, state: ProbeState, reason: Option<ProbeReason>) {
    assert_eq!((s.state, s.reason), (state, reason), "{s:?}");
}

#[tokio::test]
async fn every_kind_is_up_when_ready_and_its_model_is_listed() {
    let base = serve(healthy()).await;
    let addr = base.trim_start_matches("http://").to_owned();
    for kind in [
        ProbeKind::Vllm,
        ProbeKind::Tgi,
        ProbeKind::Triton,
        ProbeKind::Kserve,
        ProbeKind::Sglang,
        ProbeKind::Ollama,
        ProbeKind::Llamacpp,
        ProbeKind::Openai,
        ProbeKind::Http,
        ProbeKind::Tcp,
    ] {
        let mut c = match kind {
            ProbeKind::Tcp => probe(kind, &addr),
            ProbeKind::Http => probe(kind, &format!("{base}/health")),
            _ => probe(kind, &base),
        };
        if !matches!(kind, ProbeKind::Http | ProbeKind::Tcp) {
            c.expected_model = Some("m".to_owned());
        }
        let s = check(c).await;
        assert_state(&s, ProbeState::Up, None);
        if !matches!(kind, ProbeKind::Http | ProbeKind::Tcp) {
            assert!(
                s.models.iter().any(|m| m.starts_with('m')),
                "{kind:?}: {s:?}"
            );
        }
    }
}

#[tokio::test]
async fn llamacpp_is_loading_while_503_then_up() {
    let loading = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&loading);
    let app = healthy_except("/health").route(
        "/health",
        get(move || {
            let loading = flag.load(Ordering::SeqCst);
            async move {
                if loading {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"error":{"code":503,"message":"Loading model"}}"#,
                    )
                } else {
                    (StatusCode::OK, r#"{"status":"ok"}"#)
                }
            }
        }),
    );
    let base = serve(app).await;
    let p = Probe::new(probe(ProbeKind::Llamacpp, &base));
    assert_state(
        &p.check().await,
        ProbeState::Loading,
        Some(ProbeReason::NotReady),
    );
    loading.store(false, Ordering::SeqCst);
    assert_state(&p.check().await, ProbeState::Up, None);
}

#[tokio::test]
async fn triton_live_but_not_ready_is_loading() {
    let app = healthy_except("/v2/health/ready").route(
        "/v2/health/ready",
        get(|| async { StatusCode::BAD_REQUEST }),
    );
    let base = serve(app).await;
    let s = check(probe(ProbeKind::Triton, &base)).await;
    assert_state(&s, ProbeState::Loading, Some(ProbeReason::NotReady));
}

#[tokio::test]
async fn vllm_500_is_down_with_http_status() {
    let app = healthy_except("/health").route(
        "/health",
        get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
    );
    let base = serve(app).await;
    let s = check(probe(ProbeKind::Vllm, &base)).await;
    assert_state(&s, ProbeState::Down, Some(ProbeReason::HttpStatus));
}

#[tokio::test]
async fn a_missing_model_is_degraded() {
    let base = serve(healthy()).await;
    for kind in [ProbeKind::Vllm, ProbeKind::Ollama, ProbeKind::Triton] {
        let mut c = probe(kind, &base);
        c.expected_model = Some("other".to_owned());
        let s = check(c).await;
        assert_state(&s, ProbeState::Degraded, Some(ProbeReason::ModelMissing));
    }
}

#[tokio::test]
async fn connection_refused_is_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = check(probe(ProbeKind::Vllm, &format!("http://{port}"))).await;
    assert_state(&s, ProbeState::Down, Some(ProbeReason::ConnectRefused));
    let s = check(probe(ProbeKind::Tcp, &port.to_string())).await;
    assert_state(&s, ProbeState::Down, Some(ProbeReason::ConnectRefused));
}

/// The check ended near its 800 ms deadline, not when the hostile server gave up (60 s). The
/// slack absorbs a loaded CI machine.
fn assert_cut_by_deadline(started: Instant) {
    let took = started.elapsed();
    assert!(took < Duration::from_millis(800 + 1500), "{took:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_on_time() {
    let base = raw(|stream| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(stream);
    })
    .await;
    let started = Instant::now();
    let s = check(probe(ProbeKind::Vllm, &base)).await;
    assert_state(&s, ProbeState::Down, Some(ProbeReason::Timeout));
    assert_cut_by_deadline(started);
}

#[tokio::test]
async fn slowloris_headers_are_cut_by_the_deadline() {
    let base = raw(|mut stream| async move {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
        for _ in 0..600 {
            if stream.write_all(b"X-Slow: a\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let started = Instant::now();
    let s = check(probe(ProbeKind::Openai, &base)).await;
    assert_state(&s, ProbeState::Down, Some(ProbeReason::Timeout));
    assert_cut_by_deadline(started);
}

#[tokio::test]
async fn a_1_gb_streaming_body_is_cut_quickly() {
    let base = raw(|mut stream| async move {
        let _ = stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            )
            .await;
        let chunk = vec![b'['; 64 * 1024];
        // 1 GiB if nobody stops reading.
        for _ in 0..16 * 1024 {
            if stream.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let mut c = probe(ProbeKind::Openai, &base);
    c.timeout = HumanDuration(Duration::from_secs(10));
    let started = Instant::now();
    let s = check(c).await;
    assert_state(&s, ProbeState::Down, Some(ProbeReason::BodyTooLarge));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A declared length past the cap is refused before reading.
    let app = Router::new().route("/v1/models", get(|| async { vec![b' '; 2 << 20] }));
    let base = serve(app).await;
    let s = check(probe(ProbeKind::Openai, &base)).await;
    assert_state(&s, ProbeState::Down, Some(ProbeReason::BodyTooLarge));
}

#[tokio::test]
async fn a_redirect_loop_is_detected() {
    let app = Router::new().route(
        "/loop",
        get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
    );
    let base = serve(app).await;
    let s = check(probe(ProbeKind::Http, &format!("{base}/loop"))).await;
    assert_state(&s, ProbeState::Down, Some(ProbeReason::RedirectLoop));
}

#[tokio::test]
async fn invalid_json_is_a_bad_body() {
    let app = healthy_except("/v1/models").route("/v1/models", get(|| async { "<html>not json" }));
    let base = serve(app).await;
    for kind in [ProbeKind::Vllm, ProbeKind::Openai] {
        let s = check(probe(kind, &base)).await;
        assert_state(&s, ProbeState::Down, Some(ProbeReason::BadBody));
    }
}

/// A config running `probes`, with nothing else that could interfere (no kernel log).
pub(crate) fn agent_config(probes: Vec<ProbeConfig>) -> Config {
    let mut config = Config::default();
    config.health.kmsg_path = String::new();
    config.probe = probes;
    config
}

/// The probe `name` in a `/v1/probes` body.
pub(crate) fn probe_json(body: &str, name: &str) -> serde_json::Value {
    probe_entry(&serde_json::from_str(body).unwrap(), name)
}

/// The probe `name` in a parsed `/v1/probes` answer.
pub(crate) fn probe_entry(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_target_does_not_delay_another_probe() {
    let hung = raw(|stream| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(stream);
    })
    .await;
    let fast = serve(healthy()).await;
    let mut slow = ProbeConfig::new("hung", ProbeKind::Vllm, &hung);
    slow.interval = HumanDuration(Duration::from_millis(100));
    slow.timeout = HumanDuration(Duration::from_secs(5));
    let mut quick = ProbeConfig::new("fast", ProbeKind::Vllm, &fast);
    quick.interval = HumanDuration(Duration::from_millis(100));
    let agent = crate::inproc::start(
        agent_config(vec![slow, quick]),
        GpuSource::Demo { gpus: 1 },
        None,
    )
    .await;
    let body = agent
        .wait_for("/v1/probes", "fast up", |b| {
            probe_json(b, "fast")["state"] == "up"
        })
        .await;
    let first = probe_json(&body, "fast")["checked_at"].clone();
    assert_eq!(probe_json(&body, "hung")["state"], "unknown");
    // Well within the hung probe's 5 s deadline, the fast one checks again and again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let body = agent.get("/v1/probes").await;
    assert_ne!(probe_json(&body, "fast")["checked_at"], first);
    assert_eq!(probe_json(&body, "fast")["state"], "up");
    assert_eq!(probe_json(&body, "hung")["state"], "unknown");
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_then_recovery_is_counted_and_timed() {
    let failing = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&failing);
    let app = healthy_except("/health").route(
        "/health",
        get(move || {
            let failing = flag.load(Ordering::SeqCst);
            async move {
                if failing {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let base = serve(app).await;
    let mut c = ProbeConfig::new("llm", ProbeKind::Vllm, &base);
    c.interval = HumanDuration(Duration::from_millis(100));
    let agent =
        crate::inproc::start(agent_config(vec![c]), GpuSource::Demo { gpus: 1 }, None).await;
    agent
        .wait_for("/metrics", "probe up", |b| {
            b.contains(r#"gpulse_probe_up{probe="llm",kind="vllm"} 1"#)
        })
        .await;
    failing.store(true, Ordering::SeqCst);
    let body = agent
        .wait_for("/v1/probes", "an outage", |b| {
            probe_json(b, "llm")["state"] == "down"
        })
        .await;
    let p = probe_json(&body, "llm");
    assert_eq!(p["reason"], "http_status");
    assert_eq!(p["outages_total"], 1);
    assert_eq!(p["outages"][0]["cause"], "http_status");
    assert!(p["outages"][0]["end"].is_null());
    tokio::time::sleep(Duration::from_millis(300)).await;
    failing.store(false, Ordering::SeqCst);
    let metrics = agent
        .wait_for("/metrics", "recovery", |b| {
            b.contains("gpulse_probe_last_recovery_seconds{")
        })
        .await;
    assert!(
        metrics.contains(r#"gpulse_probe_outages_total{probe="llm",kind="vllm"} 1"#),
        "{metrics}"
    );
    let p = probe_json(&agent.get("/v1/probes").await, "llm");
    assert_eq!(p["state"], "up");
    assert!(p["outages"][0]["end"].is_string(), "{p}");
    assert!(p["last_recovery_seconds"].as_f64().unwrap() >= 0.3, "{p}");
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_probes_its_simulated_inference_server() {
    let agent =
        crate::inproc::start(agent_config(Vec::new()), GpuSource::Demo { gpus: 1 }, None).await;
    let body = agent
        .wait_for("/v1/probes", "the demo probe up", |b| {
            probe_json(b, "demo-llm")["state"] == "up"
        })
        .await;
    let p = probe_json(&body, "demo-llm");
    assert_eq!(p["kind"], "vllm");
    assert_eq!(p["models"][0], gpulse::demo::server::DEMO_MODEL);
    agent
        .wait_for("/metrics", "probe metrics", |b| {
            b.contains(r#"gpulse_probe_up{probe="demo-llm",kind="vllm"} 1"#)
        })
        .await;
    agent.shut_down().await;
}

#[tokio::test]
async fn an_unresolvable_host_is_a_dns_failure() {
    let s = check(probe(
        ProbeKind::Vllm,
        "http://gpulse-probe-test.invalid:8000",
    ))
    .await;
    assert_eq!(s.state, ProbeState::Down, "{s:?}");
    // Without a resolver at all the lookup may also run into the deadline.
    assert!(
        matches!(s.reason, Some(ProbeReason::Dns | ProbeReason::Timeout)),
        "{s:?}"
    );
}

#[tokio::test]
async fn the_bearer_token_and_headers_are_sent() {
    let app = healthy_except("/health").route(
        "/health",
        get(|headers: axum::http::HeaderMap| async move {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let extra = headers.get("x-probe").and_then(|v| v.to_str().ok());
            if auth == Some("Bearer s3cret") && extra == Some("gpulse") {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            }
        }),
    );
    let base = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let mut c = probe(ProbeKind::Vllm, &base);
    c.headers.insert("X-Probe".to_owned(), "gpulse".to_owned());
    c.bearer_token_file = token.display().to_string();
    assert_state(&check(c.clone()).await, ProbeState::Up, None);
    c.bearer_token_file.clear();
    let s = check(c).await;
    assert_state(&s, ProbeState::Down, Some(ProbeReason::HttpStatus));
    assert!(!s.detail.contains("s3cret"));
}
