//! The Kubernetes node condition against an in-process fake API server: the PATCH a real
//! API server gets (path, bearer token, strategic-merge content type, the condition), written
//! when health changes and not otherwise, `lastTransitionTime` moving only with the status,
//! a refused PATCH counted as an export failure and retried, and the loop ending on stop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::patch;

use gpulse::config::Config;
use gpulse::export::ExportStats;
use gpulse::export::node_condition::{self, Settings};
use gpulse::health::{Action, GpuHealth, NodeHealth, Reason, ReasonCode, State};

/// What the fake API server received, and whether it refuses (403) the next PATCHes.
#[derive(Default)]
struct Api {
    patches: Mutex<Vec<(String, String, String, serde_json::Value)>>,
    refuse: Mutex<bool>,
}

async fn patch_status(
    AxState(api): AxState<Arc<Api>>,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if *api.refuse.lock().unwrap() {
        return (
            StatusCode::FORBIDDEN,
            r#"{"kind":"Status","reason":"Forbidden","message":"nodes \"n\" is forbidden"}"#
                .to_owned(),
        );
    }
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    api.patches
        .lock()
        .unwrap()
        .push((node, header("authorization"), header("content-type"), json));
    (StatusCode::OK, "{}".to_owned())
}

fn health(state: State) -> NodeHealth {
    let reasons = match state {
        State::Unhealthy => vec![Reason {
            code: ReasonCode::Xid(79),
            state,
            action: Action::Reboot,
            detail: "fallen off the bus".to_owned(),
            since: SystemTime::now(),
            last_seen: SystemTime::now(),
        }],
        _ => Vec::new(),
    };
    NodeHealth {
        state,
        action: Action::None,
        gpus: vec![GpuHealth {
            index: 0,
            uuid: "GPU-0".to_owned(),
            name: "NVIDIA H100".to_owned(),
            state,
            action: Action::None,
            since: SystemTime::now(),
            reasons,
            nvlinks_seen_active: 0,
        }],
        evaluated_at: Some(SystemTime::now()),
        ..NodeHealth::initial()
    }
}

/// Waits until the fake has `n` PATCHes, then returns them.
async fn patches(api: &Api, n: usize) -> Vec<(String, String, String, serde_json::Value)> {
    for _ in 0..200 {
        let got = api.patches.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} PATCHes: {:?}", api.patches.lock().unwrap());
}

fn condition(patch: &serde_json::Value) -> &serde_json::Value {
    &patch["status"]["conditions"][0]
}

#[tokio::test]
async fn the_condition_follows_health_and_failures_are_counted() {
    let api = Arc::new(Api::default());
    let app = axum::Router::new()
        .route("/api/v1/nodes/{node}/status", patch(patch_status))
        .with_state(Arc::clone(&api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "sa-token\n").unwrap();
    let store = Arc::new(gpulse::app::new_store(&Config::default(), false));
    let stats = Arc::new(ExportStats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let settings = Settings {
        api_server: format!("http://{addr}/"),
        token_file: token.display().to_string(),
        ca_file: String::new(),
        node: "gpu-node-7".to_owned(),
        condition_type: "GpulseGPUHealthy".to_owned(),
        interval: Duration::from_millis(50),
        resync: Duration::from_secs(3600),
        timeout: Duration::from_secs(2),
    };
    store.set_health(health(State::Healthy));
    let task = tokio::spawn(node_condition::run(
        settings,
        Arc::clone(&store),
        Arc::clone(&stats),
        stop_rx,
    ));

    let first = patches(&api, 1).await;
    let (node, auth, content_type, body) = &first[0];
    assert_eq!(node, "gpu-node-7");
    assert_eq!(auth, "Bearer sa-token", "the token file's content, trimmed");
    assert_eq!(content_type, "application/strategic-merge-patch+json");
    let c = condition(body);
    assert_eq!(c["type"], "GpulseGPUHealthy");
    assert_eq!(c["status"], "True");
    assert_eq!(c["reason"], "GPUsHealthy");
    let healthy_since = c["lastTransitionTime"].clone();

    // Unchanged health: nothing more is written (resync is an hour).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        api.patches.lock().unwrap().len(),
        1,
        "written again without a change"
    );

    // A GPU falls off the bus: False, with the GPU and the action in the message.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store.set_health(health(State::Unhealthy));
    let second = patches(&api, 2).await;
    let c = condition(&second[1].3);
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "GPUUnhealthy");
    assert_eq!(
        c["message"],
        "gpulse: GPU 0 GPU-0 unhealthy: xid_79 (reboot)"
    );
    assert_ne!(c["lastTransitionTime"], healthy_since, "the status changed");

    // The API server refuses (RBAC missing): counted per exporter and reason, and retried.
    *api.refuse.lock().unwrap() = true;
    store.set_health(health(State::Healthy));
    let mut failures = 0;
    for _ in 0..100 {
        failures = stats
            .totals()
            .iter()
            .find(|t| t.name == "node_condition")
            .map_or(0, |t| t.failures_total());
        if failures >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failures >= 2,
        "refused PATCHes are counted and retried: {failures}"
    );
    let last = stats.last_failure("node_condition").unwrap();
    assert!(last.cause.contains("HTTP 403"), "{last:?}");
    *api.refuse.lock().unwrap() = false;
    let third = patches(&api, 3).await;
    assert_eq!(condition(&third[2].3)["status"], "True");

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the loop ends on stop")
        .unwrap();
}
