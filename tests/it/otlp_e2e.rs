//! End to end with a real third-party OTLP receiver: rotel (a Rust OpenTelemetry collector
//! from PyPI, installed by `.ci/run`) must receive the GPU metrics over gRPC and HTTP.
//!
//! The binary is found through `GPULSE_ROTEL_AGENT` (set by `.ci/run`) or on PATH. Without it
//! the test prints a `SKIPPED (not installed)` line and passes, unless `GPULSE_CI=1`, where a
//! missing receiver fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent::{Agent, free_port};
use crate::fake_nvml::FakeNvml;

fn rotel_agent() -> Option<PathBuf> {
    let from_env = std::env::var_os("GPULSE_ROTEL_AGENT").map(PathBuf::from);
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("rotel-agent"))
                .find(|p| p.is_file())
        })
    };
    let found = from_env.filter(|p| p.is_file()).or_else(on_path);
    if found.is_none() {
        crate::skip::not_installed(
            "rotel-agent not found (GPULSE_ROTEL_AGENT, PATH)",
            "`pip install rotel` and set GPULSE_ROTEL_AGENT",
        );
    }
    found
}

/// A running rotel collector that prints every metric it receives; killed on drop.
struct Rotel {
    child: Child,
    out: tempfile::NamedTempFile,
    grpc: u16,
    http: u16,
}

impl Rotel {
    fn start(binary: &PathBuf) -> Rotel {
        let out = tempfile::NamedTempFile::new().unwrap();
        let (grpc, http) = (free_port(), free_port());
        let child = Command::new(binary)
            .args(["start", "--exporter", "blackhole", "--debug-log", "metrics"])
            .args(["--debug-log-verbosity", "detailed"])
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{grpc}"))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{http}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.reopen().unwrap()))
            .stderr(Stdio::from(out.reopen().unwrap()))
            .spawn()
            .unwrap();
        let rotel = Rotel {
            child,
            out,
            grpc,
            http,
        };
        rotel.wait_for("Starting Rotel", Duration::from_secs(20));
        rotel
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.out.path()).unwrap()).into_owned()
    }

    fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "rotel never printed {needle:?}; its output ends with:\n{}",
                &out[out.len().saturating_sub(3000)..]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pushes_gpu_metrics_to_rotel(protocol: &str) {
    let Some(binary) = rotel_agent() else { return };
    let rotel = Rotel::start(&binary);
    let fake = FakeNvml::new("gpus=2\n");
    let lib = fake.lib_path();
    let port = if protocol == "grpc" {
        rotel.grpc
    } else {
        rotel.http
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let _agent = Agent::on_nvml(
        &lib,
        "200ms",
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.node.name=node-e2e"),
        ],
    );
    let out = rotel.wait_for(
        "GPU-00000000-fake-4000-8000-000000000001",
        Duration::from_secs(30),
    );
    for needle in [
        "hw.gpu.utilization",
        "hw.gpu.memory.usage",
        "hw.energy",
        "system.memory.usage",
        "GPU-00000000-fake-4000-8000-000000000000",
        "service.name: Str(gpulse)",
        "k8s.node.name: Str(node-e2e)",
    ] {
        assert!(
            out.contains(needle),
            "rotel did not receive {needle:?} over {protocol}"
        );
    }
}

#[test]
fn rotel_receives_gpu_metrics_over_grpc() {
    pushes_gpu_metrics_to_rotel("grpc");
}

#[test]
fn rotel_receives_gpu_metrics_over_http() {
    pushes_gpu_metrics_to_rotel("http/protobuf");
}
