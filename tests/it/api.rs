//! The HTTP API in-process: every endpoint, status codes, bounds and shutdown, on demo GPUs.
//!
//! [`start`] and [`wait_ready`] are shared with the TLS and authentication tests.

use std::time::{Duration, Instant};

use gpulse::app::GpuSource;
use gpulse::config::{Config, HumanDuration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::inproc::Running;

/// Starts the agent in-process on 2 demo GPUs with 100 ms intervals.
pub async fn start(mut config: Config) -> Running {
    config.gpu.interval = HumanDuration(Duration::from_millis(100));
    config.host.interval = HumanDuration(Duration::from_millis(100));
    crate::inproc::start(config, GpuSource::Demo { gpus: 2 }, None).await
}

/// Polls plain-HTTP `/readyz` until 200.
pub async fn wait_ready(base: &str) {
    for _ in 0..100 {
        if let Ok(r) = crate::inproc::http_get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{base} never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_with_data_and_right_codes() {
    let agent = start(Config::default()).await;
    let base = agent.base.clone();
    wait_ready(&base).await;

    let health = crate::inproc::http_get(format!("{base}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let metrics = crate::inproc::http_get(format!("{base}/metrics"))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert_eq!(
        metrics.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = metrics.text().await.unwrap();
    for gpu in ["0", "1"] {
        assert!(
            body.lines().any(|l| l.starts_with(&format!(
                "gpulse_gpu_utilization_ratio{{gpu=\"{gpu}\",uuid=\"GPU-5e1f0000-demo"
            ))),
            "no utilization for gpu {gpu}:\n{body}"
        );
    }
    assert!(body.contains("gpulse_collector_success{collector=\"gpu\"} 1"));
    assert!(body.contains("gpulse_collector_success{collector=\"host\"} 1"));
    assert!(body.contains("gpulse_build_info{version=\""));
    assert!(body.contains("gpu_source=\"demo\""));

    let om = crate::inproc::client()
        .get(format!("{base}/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));

    let snap = agent.get_json("/v1/snapshot").await;
    assert_eq!(snap["schema"], "gpulse.snapshot/v1");
    assert_eq!(snap["ready"], true);
    let devices = snap["gpu"]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[1]["index"], 1);
    assert_eq!(devices[0]["memory"]["total_bytes"], 80u64 << 30);
    assert!(snap["host"]["memory_total_bytes"].as_u64().unwrap() > 0);
    let names: Vec<&str> = snap["collectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gpu", "host"]);

    // Health is evaluated every GPU interval; wait for an evaluation that saw both GPUs.
    let mut health = serde_json::Value::Null;
    for _ in 0..100 {
        health = agent.get_json("/v1/health").await;
        if health["gpus"].as_array().is_some_and(|g| g.len() == 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(health["schema"], "gpulse.health/v1");
    assert_eq!(health["gpus"].as_array().unwrap().len(), 2, "{health}");
    for gpu in health["gpus"].as_array().unwrap() {
        let state = gpu["state"].as_str().unwrap();
        assert!(
            ["healthy", "degraded", "unhealthy"].contains(&state),
            "{gpu}"
        );
    }
    assert_ne!(health["state"], "unknown", "{health}");
    assert!(
        health["transitions"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );
    let metrics = agent.get("/metrics").await;
    assert!(
        metrics.contains("gpulse_node_health{state=\"unknown\"} 0"),
        "{metrics}"
    );

    let missing = crate::inproc::http_get(format!("{base}/nope"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let client = crate::inproc::client();
    let post = client.post(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);

    agent.shut_down().await;
}

/// Sends a keep-alive `GET /healthz` on `stream` and reads its 200 answer (`ok\n`).
async fn keep_alive_healthz(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\nok\n") {
        assert_ne!(stream.read(&mut byte).await.unwrap(), 0, "closed early");
        raw.push(byte[0]);
    }
    assert!(raw.starts_with(b"HTTP/1.1 200 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let mut config = Config::default();
    config.http.max_connections = 2;
    // Long enough that the kept-alive connections below are not closed by the idle limit.
    config.http.request_timeout = HumanDuration(Duration::from_secs(60));
    let agent = start(config).await;
    wait_ready(&agent.base).await;

    // Two kept-alive clients that have made a request take both slots. Unlike silent
    // connections (see `faults_http`), they are real clients and are never shed.
    let mut busy_a = TcpStream::connect(agent.addr).await.unwrap();
    keep_alive_healthz(&mut busy_a).await;
    let mut busy_b = TcpStream::connect(agent.addr).await.unwrap();
    keep_alive_healthz(&mut busy_b).await;
    // The kernel completes the third handshake, but gpulse has no slot for it yet.
    let mut third = TcpStream::connect(agent.addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_secs(1), third.read_to_end(&mut response)).await;
    assert!(
        early.is_err() && response.is_empty(),
        "answered while both slots were held: {early:?} {:?}",
        String::from_utf8_lossy(&response)
    );

    // Closing one kept-alive connection frees a slot; the waiting request is then served.
    drop(busy_a);
    tokio::time::timeout(Duration::from_secs(20), third.read_to_end(&mut response))
        .await
        .expect("the third connection was not served after a slot was freed")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.0 200 "), "{text}");
    assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
    // The other kept-alive client was left alone throughout.
    keep_alive_healthz(&mut busy_b).await;
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_at_the_header_timeout() {
    let mut config = Config::default();
    config.http.max_connections = 1;
    // A connection's first request head is due within the header timeout.
    let timeout = Duration::from_millis(1000);
    config.http.header_timeout = HumanDuration(timeout);
    let agent = start(config).await;
    wait_ready(&agent.base).await;

    // Taken before connecting: the server's header timer starts at accept, which can come
    // before `connect` returns here, so a clock started after it would read short.
    let started = Instant::now();
    let (mut read, mut write) = TcpStream::connect(agent.addr).await.unwrap().into_split();
    // One header byte every 100 ms, forever: headers never complete.
    let dribble = tokio::spawn(async move {
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut response = Vec::new();
    // EOF or a reset: either way the server closed it.
    let closed =
        tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut response)).await;
    let elapsed = started.elapsed();
    dribble.abort();
    assert!(
        closed.is_ok(),
        "the slowloris connection was still open after 20s"
    );
    assert!(
        elapsed >= timeout,
        "closed after {elapsed:?}, before the header timeout"
    );
    assert!(
        !String::from_utf8_lossy(&response).contains(" 200 "),
        "{:?}",
        String::from_utf8_lossy(&response)
    );

    // Its slot (the only one) is free again.
    let health = crate::inproc::http_get(format!("{}/healthz", agent.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused() {
    let mut config = Config::default();
    config.http.max_request_body_bytes = 1024;
    let agent = start(config).await;
    wait_ready(&agent.base).await;
    let client = crate::inproc::client();
    let big = client
        .get(format!("{}/v1/snapshot", agent.base))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let small = client
        .get(format!("{}/v1/snapshot", agent.base))
        .body(vec![b'x'; 16])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    let huge_head = client
        .get(format!("{}/v1/snapshot", agent.base))
        .header("x-filler", "x".repeat(100 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(huge_head.status(), 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_disabled_serves_host_only() {
    let mut config = Config::default();
    config.gpu.enabled = false;
    let agent = start(config).await;
    wait_ready(&agent.base).await;
    let snap = agent.get_json("/v1/snapshot").await;
    assert!(snap["gpu"].is_null());
    assert_eq!(snap["collectors"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_lists_every_endpoint_and_each_one_is_routed() {
    let agent = start(Config::default()).await;
    let base = agent.base.clone();
    wait_ready(&base).await;

    let text = crate::inproc::http_get(format!("{base}/")).await.unwrap();
    assert_eq!(text.status(), 200);
    let text = text.text().await.unwrap();
    let html = crate::inproc::client()
        .get(format!("{base}/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert!(
        html.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = html.text().await.unwrap();
    assert!(text.starts_with("gpulse "), "{text}");
    for (path, _) in gpulse::export::api::ENDPOINTS {
        assert!(text.contains(path), "{path} missing from:\n{text}");
        assert!(html.contains(&format!("href=\"{path}\"")), "{html}");
        let status = crate::inproc::http_get(format!("{base}{path}"))
            .await
            .unwrap()
            .status();
        assert_ne!(status, 404, "{path} is listed but not routed");
    }
}
