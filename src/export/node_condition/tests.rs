//! The node condition's pure parts: the condition for each health state, and the patch.

use std::time::{Duration, SystemTime};

use super::*;
use crate::config::Config;
use crate::health::{Action, GpuHealth, Reason, ReasonCode};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn gpu(index: u32, state: State, reasons: &[(ReasonCode, Action)]) -> GpuHealth {
    GpuHealth {
        index,
        uuid: format!("GPU-{index}"),
        name: "NVIDIA H100 80GB HBM3".to_owned(),
        state,
        action: reasons.iter().map(|r| r.1).max().unwrap_or(Action::None),
        since: at(0),
        reasons: reasons
            .iter()
            .map(|&(code, action)| Reason {
                code,
                state,
                action,
                detail: String::new(),
                since: at(0),
                last_seen: at(0),
            })
            .collect(),
        nvlinks_seen_active: 0,
    }
}

fn node(state: State, gpus: Vec<GpuHealth>) -> NodeHealth {
    NodeHealth {
        state,
        gpus,
        evaluated_at: Some(at(10)),
        ..NodeHealth::initial()
    }
}

#[test]
fn each_state_has_its_status_and_reason() {
    let healthy = condition(&node(State::Healthy, vec![gpu(0, State::Healthy, &[])]));
    assert_eq!(
        healthy,
        Condition {
            status: "True",
            reason: "GPUsHealthy",
            message: "gpulse: 1 GPUs healthy".to_owned()
        }
    );
    let degraded = condition(&node(
        State::Degraded,
        vec![
            gpu(0, State::Healthy, &[]),
            gpu(
                1,
                State::Degraded,
                &[(ReasonCode::HwSlowdown, Action::None)],
            ),
        ],
    ));
    assert_eq!((degraded.status, degraded.reason), ("True", "GPUsDegraded"));
    assert_eq!(
        degraded.message,
        "gpulse: GPU 1 GPU-1 degraded: hw_slowdown (none)"
    );
    let unhealthy = condition(&node(
        State::Unhealthy,
        vec![gpu(
            3,
            State::Unhealthy,
            &[
                (ReasonCode::Xid(79), Action::Reboot),
                (ReasonCode::GpuLost, Action::Reboot),
            ],
        )],
    ));
    assert_eq!(
        (unhealthy.status, unhealthy.reason),
        ("False", "GPUUnhealthy")
    );
    assert_eq!(
        unhealthy.message,
        "gpulse: GPU 3 GPU-3 unhealthy: xid_79 (reboot), gpu_lost (reboot)"
    );
    let unknown = condition(&node(State::Unknown, Vec::new()));
    assert_eq!(
        (unknown.status, unknown.reason),
        ("Unknown", "GPUHealthUnknown")
    );
}

#[test]
fn a_long_message_is_clipped() {
    let many: Vec<GpuHealth> = (0..64)
        .map(|i| {
            gpu(
                i,
                State::Unhealthy,
                &[(ReasonCode::UncorrectableEcc, Action::ResetGpu)],
            )
        })
        .collect();
    let c = condition(&node(State::Unhealthy, many));
    assert_eq!(c.message.chars().count(), MAX_MESSAGE_CHARS + 1);
    assert!(c.message.ends_with('…'));
}

#[test]
fn the_patch_sets_one_condition_with_rfc3339_times() {
    let c = Condition {
        status: "False",
        reason: "GPUUnhealthy",
        message: "m".to_owned(),
    };
    let body = patch_body("GpulseGPUHealthy", &c, at(1_800_000_000), at(1_799_999_000));
    assert_eq!(
        body,
        serde_json::json!({"status": {"conditions": [{
            "type": "GpulseGPUHealthy",
            "status": "False",
            "reason": "GPUUnhealthy",
            "message": "m",
            "lastHeartbeatTime": "2027-01-15T08:00:00Z",
            "lastTransitionTime": "2027-01-15T07:43:20Z",
        }]}})
    );
}

fn config_with(node: &str, api_server: &str, token_file: &str) -> Config {
    let mut config = Config::default();
    config.agent.node_name = node.to_owned();
    config.kubernetes.node_condition = true;
    config.kubernetes.api_url = api_server.to_owned();
    config.kubernetes.api_token_file = token_file.to_owned();
    config.kubernetes.api_ca_file = String::new();
    config
}

#[test]
fn settings_come_from_kubernetes_and_name_the_key_they_miss() {
    let no_env = |_: &str| None;
    assert_eq!(Settings::from_config(&Config::default(), no_env), Ok(None));
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "t\n").unwrap();
    let token = token_path.display().to_string();
    let e = Settings::from_config(&config_with("", "https://k:6443", &token), no_env).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("kubernetes.node_condition"));
    let e = Settings::from_config(&config_with("n1", "", &token), no_env).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("kubernetes.api_url"));
    let e = Settings::from_config(
        &config_with("n1", "https://k", "/nonexistent/token"),
        no_env,
    )
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("kubernetes.api_token_file"));
    // In a pod: the service's address, IPv6 in brackets.
    for (host, url) in [
        ("10.96.0.1", "https://10.96.0.1:443"),
        ("fd00::1", "https://[fd00::1]:443"),
    ] {
        let env = |name: &str| (name == "KUBERNETES_SERVICE_HOST").then(|| host.to_owned());
        let settings = Settings::from_config(&config_with("n1", "", &token), env)
            .unwrap()
            .unwrap();
        assert_eq!(settings.api_server, url);
        assert_eq!(settings.node, "n1");
        assert_eq!(settings.condition_type, "GpulseGPUHealthy");
    }
}
