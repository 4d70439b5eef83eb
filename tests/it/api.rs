//! The HTTP API in-process: every endpoint, status codes, bounds and shutdown, on demo GPUs.

use std::time::Duration;

use gpulse::app::{self, GpuSource};
use gpulse::config::{Config, HumanDuration};
use tokio::sync::oneshot;

struct Running {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), app::AppError>>,
}

async fn start(mut config: Config) -> Running {
    config.gpu.interval = HumanDuration(Duration::from_millis(100));
    config.host.interval = HumanDuration(Duration::from_millis(100));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app::run(
        config,
        GpuSource::Demo { gpus: 2 },
        None,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    Running {
        base,
        stop: Some(stop),
        task,
    }
}

async fn wait_ready(base: &str) {
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
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
    let mut agent = start(Config::default()).await;
    let base = agent.base.clone();
    wait_ready(&base).await;

    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);

    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
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

    let om = reqwest::Client::new()
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

    let snap: serde_json::Value = reqwest::get(format!("{base}/v1/snapshot"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

    let missing = reqwest::get(format!("{base}/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let client = reqwest::Client::new();
    let post = client.post(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);

    agent.stop.take().unwrap().send(()).unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(6), agent.task).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused() {
    let mut config = Config::default();
    config.http.max_request_body_bytes = 1024;
    let agent = start(config).await;
    wait_ready(&agent.base).await;
    let client = reqwest::Client::new();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_disabled_serves_host_only() {
    let mut config = Config::default();
    config.gpu.enabled = false;
    let agent = start(config).await;
    wait_ready(&agent.base).await;
    let snap: serde_json::Value = reqwest::get(format!("{}/v1/snapshot", agent.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(snap["gpu"].is_null());
    assert_eq!(snap["collectors"].as_array().unwrap().len(), 1);
}
