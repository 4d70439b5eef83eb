//! `gpulse health clear` and `POST /v1/health/clear`: an Xid keeps a GPU unhealthy (held for
//! `health.hold_time`) until an operator clears it; the clear is an event; without a token only
//! loopback may clear, with one the token is needed.

use std::process::Command;
use std::time::Duration;

use gpulse::app::GpuSource;
use gpulse::config::{Config, HumanDuration};

use crate::fake_nvml::FakeNvml;

fn config(fake: &FakeNvml) -> Config {
    let mut config = Config::default();
    config.gpu.interval = HumanDuration(Duration::from_millis(100));
    config.gpu.nvml_library = fake.lib_path().display().to_string();
    config.host.enabled = false;
    config.health.kmsg_path = String::new();
    config.score.enabled = false;
    config.events.interval = HumanDuration(Duration::from_millis(100));
    config
}

fn gpulse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gpulse"))
        .args(args)
        .output()
        .unwrap()
}

fn gpu1_state(health: &serde_json::Value) -> String {
    health["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["index"] == 1)
        .map(|g| g["state"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleared_xid_stops_counting_and_the_clear_is_an_event() {
    let fake = FakeNvml::new("gpus=2\nxid=1:79\n");
    let agent = crate::inproc::start(config(&fake), GpuSource::Nvml, None).await;
    agent
        .wait_for("/v1/health", "GPU 1 unhealthy from Xid 79", |h| {
            let v: serde_json::Value = serde_json::from_str(h).unwrap();
            gpu1_state(&v) == "unhealthy"
        })
        .await;

    // Usage errors are refused before anything is sent.
    let bad = gpulse(&["health", "clear", "gpu one", "--url", &agent.base]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    // A GPU that does not exist: the agent answers 404, exit 1.
    let missing = gpulse(&["health", "clear", "7", "--url", &agent.base]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{missing:?}"
    );

    let cleared = gpulse(&["health", "clear", "1", "--url", &agent.base]);
    assert_eq!(cleared.status.code(), Some(0), "{cleared:?}");
    assert!(String::from_utf8_lossy(&cleared.stdout).contains("GPU 1"));
    agent
        .wait_for("/v1/health", "GPU 1 healthy after the clear", |h| {
            let v: serde_json::Value = serde_json::from_str(h).unwrap();
            gpu1_state(&v) == "healthy"
        })
        .await;
    let events = agent
        .wait_for("/v1/events", "the health_cleared event", |e| {
            e.contains("\"health_cleared\"")
        })
        .await;
    assert!(events.contains("gpulse.health.cleared_by"), "{events}");
    assert!(events.contains("127.0.0.1 (loopback)"), "{events}");

    // A new Xid after the clear counts again.
    fake.set_config("gpus=2\nxid=1:79\nxid_seq=1\n");
    agent
        .wait_for("/v1/health", "GPU 1 unhealthy from a new Xid", |h| {
            let v: serde_json::Value = serde_json::from_str(h).unwrap();
            gpu1_state(&v) == "unhealthy"
        })
        .await;
    let all = gpulse(&["health", "clear", "all", "--url", &agent.base]);
    assert_eq!(all.status.code(), Some(0), "{all:?}");
    agent
        .wait_for("/v1/health", "healthy after clearing all", |h| {
            let v: serde_json::Value = serde_json::from_str(h).unwrap();
            v["state"] == "healthy"
        })
        .await;
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_clear_needs_it() {
    let fake = FakeNvml::new("gpus=1\n");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let mut config = config(&fake);
    config.http.bearer_token_file = token.display().to_string();
    let agent = crate::inproc::start(config, GpuSource::Nvml, None).await;
    let refused = gpulse(&["health", "clear", "all", "--url", &agent.base]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );
    let token = token.display().to_string();
    let ok = gpulse(&[
        "health",
        "clear",
        "0",
        "--url",
        &agent.base,
        "--token-file",
        &token,
    ]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    // GET is not the way to clear.
    let get = crate::inproc::http_get(format!("{}/v1/health/clear?gpu=all", agent.base))
        .await
        .unwrap();
    assert_ne!(get.status().as_u16(), 200);
    agent.shut_down().await;
}
