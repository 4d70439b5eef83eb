//! End to end: a real Prometheus, loaded with the alerting and recording rules, scrapes a
//! gpulse on the fake NVML that probes the demo inference server, runs in an Akash lease with a
//! price, pushes OTLP to a closed port, and has GPU faults (Xids 79 and 13, HW slowdown,
//! thermal and power-brake throttling, an uncorrectable ECC error, a failed and a pending row
//! remap). Every panel query and variable of both dashboards, variables substituted, must return
//! data; every rule must evaluate without error; the faults must raise exactly the alerts they
//! should (pending or firing).
//!
//! Needs `prometheus` on PATH (Debian's package); skips loudly without it (fails under
//! `GPULSE_CI=1`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::agent::{Agent, free_port};
use crate::fake_nvml::FakeNvml;
use crate::prometheus_e2e::{Prometheus, series, tool};
use crate::tidy::root;

/// Panels that cannot have data in this setup, with the reason. Every other panel must.
const NO_DATA_HERE: &[(&str, &str)] = &[];

/// GPU faults for the alerts and the health, Xid, throttle and memory-error panels.
const FAKE: &str = "gpus=2\n\
                    gpu0.throttle=0xC8\n\
                    gpu0.remap_failure=1\n\
                    gpu1.remap_pending=1\n\
                    gpu1.ecc_uncorrected_volatile=1\n\
                    xid=0:79,1:13\n";

/// The alerts those faults must raise (pending or firing) within the run.
const EXPECTED_ALERTS: &[&str] = &[
    "GpulseXidCritical",
    "GpulseXidWarning",
    "GpulseGpuUnhealthy",
    "GpulseNodeUnhealthy",
    "GpulseRowRemapFailure",
    "GpulseRowRemapPending",
    "GpulseUncorrectableEcc",
    "GpulseGpuHwSlowdown",
    "GpulseGpuThermalThrottle",
    "GpulseGpuPowerBrake",
    "GpulseExportFailing",
];

/// Alerts that must stay quiet: the agent, its collectors, GPUs and probe are fine.
const QUIET_ALERTS: &[&str] = &[
    "GpulseProbeDown",
    "GpulseAgentDown",
    "GpulseAgentAbsent",
    "GpulseGpuLost",
    "GpulseGpuCountDropped",
    "GpulseCollectorFailing",
    "GpulseEventsDropped",
];

/// The longest wait for every query to have data.
const DATA_TIMEOUT: Duration = Duration::from_secs(60);

/// The rate window the queries get: several 1 s scrapes (Grafana's `$__rate_interval` is at
/// least four scrape intervals).
const RATE_INTERVAL: &str = "10s";

/// URL query-component encoding.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn agent_config(server: std::net::SocketAddr, otlp_port: u16) -> String {
    format!(
        "[score]\n\
         tick = \"1s\"\n\
         price_per_hour = 2.0\n\
         [score.expect]\n\
         gpu_count = 2\n\
         [otlp]\n\
         endpoint = \"http://127.0.0.1:{otlp_port}\"\n\
         interval = \"1s\"\n\
         timeout = \"1s\"\n\
         [[probe]]\n\
         name = \"llm\"\n\
         kind = \"vllm\"\n\
         url = \"http://{server}\"\n\
         inference = true\n\
         inference_interval = \"2s\"\n\
         metrics = true\n\
         metrics_interval = \"2s\"\n"
    )
}

#[test]
fn every_panel_query_returns_data_and_the_rules_evaluate() {
    let Some(prometheus_bin) = tool("prometheus") else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = runtime
        .block_on(gpulse::demo::server::start(stopped))
        .unwrap();
    let fake = FakeNvml::new(FAKE);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gpulse.toml");
    std::fs::write(&config, agent_config(server, free_port())).unwrap();
    let agent = Agent::start(
        [
            "--config".as_ref(),
            config.as_os_str(),
            "--nvml-lib".as_ref(),
            fake.lib_path().as_os_str(),
            "--interval".as_ref(),
            "500ms".as_ref(),
        ],
        [
            ("AKASH_OWNER", "akash1owner"),
            ("AKASH_PROVIDER", "akash1provider"),
            ("AKASH_DEPLOYMENT_SEQUENCE", "100"),
            ("AKASH_GROUP_SEQUENCE", "1"),
            ("AKASH_ORDER_SEQUENCE", "1"),
        ],
    );
    let rules = [
        root().join("packaging/prometheus/gpulse-rules.yaml"),
        root().join(crate::promql::SCORE_RULES),
    ];
    let prometheus = Prometheus::start_with_rules(&prometheus_bin, agent.addr(), &rules);
    let instance = agent.addr().to_string();
    let values = [
        ("job", "gpulse"),
        ("instance", instance.as_str()),
        ("gpu", ".*"),
    ];
    let no_data: BTreeSet<&str> = NO_DATA_HERE.iter().map(|(title, _)| *title).collect();

    let queries = super::all_queries();
    let variables = super::all_variables();
    let query =
        |expr: &str| series(&prometheus.api(&format!("/api/v1/query?query={}", encode(expr))));
    let started = Instant::now();
    let empty = loop {
        let mut empty = Vec::new();
        for (file, title, expr) in &queries {
            if no_data.contains(title.as_str()) {
                continue;
            }
            let expr = super::substitute(expr, &values, RATE_INTERVAL);
            if query(&expr).is_empty() {
                empty.push(format!("{file}: {title}: {expr}"));
            }
        }
        for (file, name, definition) in &variables {
            let (selector, label) = super::label_values(definition);
            let selector = super::substitute(selector, &values, RATE_INTERVAL);
            // Grafana's label_values: the values of `label` on the selected series.
            if query(&format!("count by ({label}) ({selector})")).is_empty() {
                empty.push(format!("{file}: variable {name}: {definition}"));
            }
        }
        // The faults' alerts turn pending at the first evaluation that sees their series.
        let active = active_alerts(&prometheus);
        empty.extend(
            EXPECTED_ALERTS
                .iter()
                .filter(|a| !active.contains(**a))
                .map(|a| format!("alert {a} is not pending or firing")),
        );
        if empty.is_empty() || started.elapsed() > DATA_TIMEOUT {
            break empty;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        empty.is_empty(),
        "after {:?}, these queries returned no data (or alerts were not raised):\n{}\n--- /metrics ---\n{}\n\
         --- agent stderr ---\n{}",
        started.elapsed(),
        empty.join("\n"),
        agent.get("/metrics").body,
        agent.stderr()
    );
    eprintln!(
        "{} panel queries and {} variables answered, {} alerts raised, after {:?}",
        queries.len(),
        variables.len(),
        EXPECTED_ALERTS.len(),
        started.elapsed()
    );

    // Every rule has been evaluated by now (every second): none may fail (a many-to-many join,
    // a bad template).
    let rules = prometheus.api("/api/v1/rules");
    let mut bad = Vec::new();
    let mut count = 0;
    for group in rules["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            count += 1;
            if rule["health"] != "ok" {
                bad.push(format!(
                    "{}: {} {}",
                    rule["name"], rule["health"], rule["lastError"]
                ));
            }
        }
    }
    assert!(count > 30, "only {count} rules loaded: {rules}");
    assert!(bad.is_empty(), "rules failing:\n{}", bad.join("\n"));

    let active = active_alerts(&prometheus);
    let noisy: Vec<&&str> = QUIET_ALERTS
        .iter()
        .filter(|a| active.contains(**a))
        .collect();
    assert!(
        noisy.is_empty(),
        "raised but should be quiet: {noisy:?}\n{}",
        prometheus.api("/api/v1/alerts")
    );
    let _ = stop.send(true);
}

/// The names of the alerts pending or firing now.
fn active_alerts(prometheus: &Prometheus) -> BTreeSet<String> {
    let alerts = prometheus.api("/api/v1/alerts");
    alerts["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .collect()
}
