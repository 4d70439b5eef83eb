//! Xid capture end to end, in-process on the fake NVML: NVML critical-Xid events, a kernel log
//! (a regular file followed like `tail -f`) de-duplicated against them, and Xids inferred from
//! NVML return codes (a lost GPU, a drop in the device count).

use std::io::Write;
use std::time::Duration;

use gpulse::app::GpuSource;
use gpulse::config::{Config, HumanDuration};

use crate::fake_nvml::FakeNvml;

const GPU0: &str = "GPU-00000000-fake-4000-8000-000000000000";
const GPU1: &str = "GPU-00000000-fake-4000-8000-000000000001";

use crate::inproc::Running;

async fn start_agent(fake: &FakeNvml, kmsg_path: &str) -> Running {
    let mut config = Config::default();
    config.gpu.interval = HumanDuration(Duration::from_millis(100));
    config.gpu.nvml_library = fake.lib_path().display().to_string();
    config.host.enabled = false;
    config.health.kmsg_path = kmsg_path.to_owned();
    config.health.xid_dedup_window = HumanDuration(Duration::from_secs(60));
    config.agent.shutdown_grace_period = HumanDuration(Duration::from_secs(5));
    crate::inproc::start(config, GpuSource::Nvml, None).await
}

fn xid_line(gpu: u32, uuid: &str, xid: u64, count: u64) -> String {
    format!(
        "gpulse_gpu_xid_errors_total{{gpu=\"{gpu}\",uuid=\"{uuid}\",xid=\"{xid}\"}} {count}.0\n"
    )
}

fn snapshot_json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvml_events_and_kmsg_count_one_occurrence_once() {
    let fake = FakeNvml::new("gpus=2\nxid=0:79,1:48\n");
    let kmsg = fake.dir().join("kmsg.log");
    // Old lines are history: the reader starts at the end and must not count this one.
    std::fs::write(
        &kmsg,
        "6,1,1,-;NVRM: Xid (PCI:0000:11:00): 13, pid=1, old boot message\n",
    )
    .unwrap();
    let agent = start_agent(&fake, &kmsg.display().to_string()).await;
    let metrics = agent
        .wait_for("/metrics", "both NVML Xid events and a GPU sample", |m| {
            m.contains(&xid_line(0, GPU0, 79, 1))
                && m.contains(&xid_line(1, GPU1, 48, 1))
                && m.contains("gpulse_gpus{source=\"nvml\"} 2")
        })
        .await;
    assert!(
        metrics.contains(&format!(
            "gpulse_gpu_xid_last_seen_timestamp_seconds{{gpu=\"0\",uuid=\"{GPU0}\",xid=\"79\"}} "
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("xid=\"13\""), "{metrics}");
    // The fake's recovery action (0, none) comes through the field-values API.
    assert!(
        metrics.contains(&format!(
            "gpulse_gpu_recovery_action{{gpu=\"0\",uuid=\"{GPU0}\"}} 0.0\n"
        )),
        "{metrics}"
    );

    // The same occurrence in the kernel log (GPU 0 is PCI 00000000:10:00.0 on the fake).
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&kmsg)
        .unwrap();
    writeln!(
        file,
        "3,1234,5678901,-;NVRM: Xid (PCI:0000:10:00): 79, pid=1234, name=python, GPU has fallen off the bus."
    )
    .unwrap();
    writeln!(
        file,
        "6,1235,5678902,-;amdgpu 0000:03:00.0: amdgpu: GPU fault detected: 79"
    )
    .unwrap();
    drop(file);
    let snap = agent
        .wait_for("/v1/snapshot", "the kmsg source merged in", |b| {
            snapshot_json(b)["xid"]["recent"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["xid"] == 79 && e["sources"].as_array().unwrap().len() == 2)
        })
        .await;
    let snap = snapshot_json(&snap);
    let merged = snap["xid"]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["xid"] == 79)
        .unwrap()
        .clone();
    assert_eq!(merged["gpu"], 0);
    assert_eq!(merged["uuid"], GPU0);
    assert_eq!(merged["sources"], serde_json::json!(["nvml_event", "kmsg"]));
    assert!(
        merged["detail"]
            .as_str()
            .unwrap()
            .contains("GPU has fallen off the bus")
    );
    let counts = snap["xid"]["counts"].as_array().unwrap();
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.iter().all(|c| c["count"] == 1), "{counts:?}");

    let metrics = agent.get("/metrics").await;
    assert!(metrics.contains(&xid_line(0, GPU0, 79, 1)), "{metrics}");
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_gpu_is_one_return_code_xid() {
    let fake = FakeNvml::new("gpus=2\n");
    let agent = start_agent(&fake, "").await;
    agent
        .wait_for("/metrics", "GPU 1 sampled", |m| {
            m.contains(&format!("gpulse_gpu_lost{{gpu=\"1\",uuid=\"{GPU1}\"}} 0"))
        })
        .await;
    assert!(
        !agent
            .get("/metrics")
            .await
            .contains("gpulse_gpu_xid_errors")
    );
    fake.set_config("gpus=2\nlost=1\n");
    agent
        .wait_for("/metrics", "the lost GPU's Xid", |m| {
            m.contains(&xid_line(1, GPU1, 79, 1))
        })
        .await;
    // Still lost over several cycles: still one occurrence.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let metrics = agent.get("/metrics").await;
    assert!(metrics.contains(&xid_line(1, GPU1, 79, 1)), "{metrics}");
    assert!(!metrics.contains("gpu=\"0\",uuid=\"GPU-00000000-fake-4000-8000-000000000000\",xid"));
    let snap = agent.get_json("/v1/snapshot").await;
    let recent = snap["xid"]["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert_eq!(
        recent[0]["sources"],
        serde_json::json!(["nvml_return_code"])
    );
    assert!(
        recent[0]["detail"]
            .as_str()
            .unwrap()
            .contains("GPU_IS_LOST")
    );
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_in_device_count_is_an_xid_79() {
    let fake = FakeNvml::new("gpus=2\n");
    let agent = start_agent(&fake, "").await;
    agent
        .wait_for("/metrics", "two GPUs", |m| {
            m.contains("gpulse_gpus{source=\"nvml\"} 2")
        })
        .await;
    fake.set_config("gpus=1\n");
    agent
        .wait_for("/metrics", "the vanished GPU's Xid", |m| {
            m.contains(&xid_line(1, GPU1, 79, 1))
        })
        .await;
    let snap = agent.get_json("/v1/snapshot").await;
    let recent = snap["xid"]["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert!(
        recent[0]["detail"]
            .as_str()
            .unwrap()
            .contains("device count dropped from 2 to 1"),
        "{recent:?}"
    );
    agent.shut_down().await;
}

/// Xid capture feeds the health evaluation in the running agent: an NVML Xid 79 makes that GPU
/// Unhealthy with "reboot", another Xid class leaves the other GPU at its own state, and
/// /v1/health lists the occurrence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_xids_drive_gpu_health() {
    let fake = FakeNvml::new("gpus=2\nxid=0:79,1:13\n");
    let agent = start_agent(&fake, "").await;
    let metrics = agent
        .wait_for("/metrics", "GPU 0 unhealthy from Xid 79", |m| {
            m.contains(&format!(
                "gpulse_gpu_health{{gpu=\"0\",uuid=\"{GPU0}\",state=\"unhealthy\"}} 1"
            ))
        })
        .await;
    assert!(
        metrics.contains(&format!(
            "gpulse_gpu_health_reason{{gpu=\"0\",uuid=\"{GPU0}\",reason=\"xid_79\",action=\"reboot\"}} 1"
        )),
        "{metrics}"
    );
    // Xid 13 is an application error (restart_app): GPU 1 is degraded, not unhealthy.
    assert!(
        metrics.contains(&format!(
            "gpulse_gpu_health{{gpu=\"1\",uuid=\"{GPU1}\",state=\"degraded\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("gpulse_node_health{state=\"unhealthy\"} 1"),
        "{metrics}"
    );
    let health = agent.get_json("/v1/health").await;
    let xids: Vec<u64> = health["xid_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["xid"].as_u64().unwrap())
        .collect();
    assert!(xids.contains(&79) && xids.contains(&13), "{health}");
    agent.shut_down().await;
}
