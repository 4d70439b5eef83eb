//! End to end with the real Prometheus: a real server scrapes the agent running on the fake
//! NVML and its query API must return our values; `promtool check metrics` must accept the
//! live `/metrics` without a single lint.
//!
//! Needs `prometheus` and `promtool` on PATH (Debian: `apt-get install prometheus`). Without
//! them the tests print a `SKIPPED (not installed)` line and pass, unless `GPULSE_CI=1`, where a
//! missing tool fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{Agent, free_port, http_get};
use crate::fake_nvml::FakeNvml;

/// Utilization percent the fake reports per GPU (distinct, so a mix-up cannot pass).
const UTILS: [u32; 3] = [11, 42, 97];

/// Longest wait for Prometheus to start and to hold the expected series.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of `name` on PATH. `None` (after a `SKIPPED` line on stderr) when it is missing, so
/// the caller skips; with `GPULSE_CI=1` a missing tool is a failure instead.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| is_executable(path))
    });
    if found.is_none() {
        crate::skip::not_installed(
            &format!("`{name}` is not on PATH"),
            "install Debian's `prometheus` package (`apt-get install prometheus`)",
        );
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn fake_config() -> String {
    let mut config = format!("gpus={}\n", UTILS.len());
    for (i, util) in UTILS.iter().enumerate() {
        config.push_str(&format!("gpu{i}.util={util}\n"));
    }
    config
}

fn fake_uuid(index: usize) -> String {
    format!("GPU-00000000-fake-4000-8000-{index:012}")
}

fn start_agent(fake: &FakeNvml) -> Agent {
    Agent::on_nvml(
        &fake.lib_path(),
        "500ms",
        std::iter::empty::<(&str, &str)>(),
    )
}

/// A Prometheus server in its own temp dir (config, TSDB, log); killed on drop.
pub(crate) struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second and waits for `/-/ready`.
    fn start(binary: &Path, target: SocketAddr) -> Prometheus {
        Prometheus::start_with_rules(binary, target, &[])
    }

    /// [`Prometheus::start`], also loading the rule files `rules` (evaluated every second).
    pub(crate) fn start_with_rules(
        binary: &Path,
        target: SocketAddr,
        rules: &[PathBuf],
    ) -> Prometheus {
        let mut last_log = String::new();
        // free_port() can race with another process; retry on a bind failure.
        for _ in 0..5 {
            let mut prometheus = Prometheus::spawn(binary, target, rules);
            match prometheus.wait_ready() {
                Ok(()) => return prometheus,
                Err(log) if log.contains("address already in use") => last_log = log,
                Err(log) => panic!(
                    "prometheus did not become ready on {} within {PROMETHEUS_TIMEOUT:?}.\n\
                     --- prometheus log ---\n{log}",
                    prometheus.addr
                ),
            }
        }
        panic!("prometheus could not bind a free port.\n--- last log ---\n{last_log}");
    }

    fn spawn(binary: &Path, target: SocketAddr, rules: &[PathBuf]) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("gpulse-prometheus-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for prometheus: {e}"));
        let config = dir.path().join("prometheus.yml");
        let rule_files: String = rules
            .iter()
            .map(|r| format!("  - '{}'\n", r.display()))
            .collect();
        let rule_files = if rule_files.is_empty() {
            String::new()
        } else {
            format!("rule_files:\n{rule_files}")
        };
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 {rule_files}scrape_configs:\n  - job_name: gpulse\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let log = std::fs::File::create(dir.path().join("prometheus.log"))
            .unwrap_or_else(|e| panic!("cannot create the prometheus log: {e}"));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the prometheus log handle: {e}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()));
        Prometheus { child, addr, dir }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{}\n(prometheus exited early: {status})",
                    self.log()
                ));
            }
            if http_get(self.addr, "/-/ready", Duration::from_secs(2))
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read(self.dir.path().join("prometheus.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(cannot read the prometheus log: {e})"))
    }

    /// `GET path` on the Prometheus HTTP API, parsed as JSON; checks `status == "success"`.
    pub(crate) fn api(&self, path: &str) -> Value {
        let response = http_get(self.addr, path, Duration::from_secs(10)).unwrap_or_else(|e| {
            panic!(
                "GET {path} from prometheus failed: {e}\n--- log ---\n{}",
                self.log()
            )
        });
        assert_eq!(
            response.status, 200,
            "GET {path} from prometheus answered {}: {}",
            response.status, response.body
        );
        let json: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", response.body));
        assert_eq!(json["status"], "success", "GET {path}: {json}");
        json
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series of an instant-query result: its labels and its value.
pub(crate) fn series(result: &Value) -> Vec<(BTreeMap<String, String>, f64)> {
    let Some(items) = result["data"]["result"].as_array() else {
        panic!("query result has no data.result array: {result}");
    };
    items
        .iter()
        .map(|item| {
            let labels = item["metric"]
                .as_object()
                .unwrap_or_else(|| panic!("series without labels: {item}"))
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let value = item["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("series without a numeric value: {item}"));
            (labels, value)
        })
        .collect()
}

#[test]
fn prometheus_scrapes_fake_gpu_utilization() {
    let Some(prometheus_bin) = tool("prometheus") else {
        return;
    };
    let fake = FakeNvml::new(&fake_config());
    let agent = start_agent(&fake);
    let prometheus = Prometheus::start(&prometheus_bin, agent.addr());

    let query = "/api/v1/query?query=gpulse_gpu_utilization_ratio";
    let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
    let found = loop {
        let found = series(&prometheus.api(query));
        if found.len() >= UTILS.len() {
            break found;
        }
        if Instant::now() >= deadline {
            panic!(
                "prometheus had {} gpulse_gpu_utilization_ratio series after {PROMETHEUS_TIMEOUT:?}, \
                 expected {}: {found:?}\ntargets: {}\n--- prometheus log ---\n{}\n\
                 --- agent stderr ---\n{}",
                found.len(),
                UTILS.len(),
                prometheus.api("/api/v1/targets"),
                prometheus.log(),
                agent.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };

    assert_eq!(found.len(), UTILS.len(), "series: {found:?}");
    let mut seen = Vec::new();
    for (labels, value) in &found {
        let gpu: usize = labels
            .get("gpu")
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("series without a numeric gpu label: {labels:?}"));
        assert!(gpu < UTILS.len(), "unexpected gpu label in {labels:?}");
        let expected = f64::from(UTILS[gpu]) / 100.0;
        assert!(
            (value - expected).abs() < 1e-9,
            "gpu {gpu}: utilization {value}, expected {expected} ({labels:?})"
        );
        assert_eq!(
            labels.get("uuid").map(String::as_str),
            Some(fake_uuid(gpu).as_str()),
            "uuid label of gpu {gpu}"
        );
        assert_eq!(labels.get("job").map(String::as_str), Some("gpulse"));
        assert_eq!(
            labels.get("instance").cloned(),
            Some(agent.addr().to_string())
        );
        seen.push(gpu);
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2], "each gpu exactly once");

    let targets = prometheus.api("/api/v1/targets");
    let Some(active) = targets["data"]["activeTargets"].as_array() else {
        panic!("no activeTargets: {targets}");
    };
    assert_eq!(active.len(), 1, "targets: {targets}");
    let target = &active[0];
    assert_eq!(target["health"], "up", "target: {target}");
    assert_eq!(target["lastError"], "", "target: {target}");
    assert_eq!(
        target["scrapeUrl"],
        format!("http://{}/metrics", agent.addr()),
        "target: {target}"
    );
}

#[test]
fn promtool_accepts_live_metrics() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let fake = FakeNvml::new(&fake_config());
    let agent = start_agent(&fake);
    let response = agent.get("/metrics");
    assert_eq!(response.status, 200, "{}", response.body);
    // The GPU metrics are really in what promtool checks.
    for (i, util) in UTILS.iter().enumerate() {
        let line = format!(
            "gpulse_gpu_utilization_ratio{{gpu=\"{i}\",uuid=\"{}\"}} {}",
            fake_uuid(i),
            f64::from(*util) / 100.0
        );
        assert!(
            response.body.lines().any(|l| l == line),
            "missing `{line}` in /metrics:\n{}",
            response.body
        );
    }

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", promtool.display()));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(response.body.as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.is_empty() && stderr.is_empty(),
        "promtool check metrics: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n\
         --- input ---\n{}",
        output.status,
        response.body
    );
}
