//! dcgm-exporter compatibility against the real binary on the fake NVML: Grafana dashboard
//! 12239's queries find their series with dcgm's labels and units (its Tensor Core panel from
//! NVML GPM), every other DCGM family has the fake's value in dcgm's unit, what gpulse cannot
//! read is absent (the profiling fields on a GPU without GPM), the PCIe rates, MIG
//! instance series, the Xid's text and the host label's other spelling, and with
//! `dcgm_compat` off no `DCGM_` line is served.

use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::fake_nvml::FakeNvml;

/// The PromQL of dashboard 12239's panels (`grafana/dcgm-exporter-dashboard.json` in
/// dcgm-exporter), with its `$instance` and `$gpu` template variables.
const DASHBOARD_12239: [&str; 8] = [
    r#"DCGM_FI_DEV_GPU_TEMP{instance=~"$instance", gpu=~"$gpu"}"#,
    r#"avg(DCGM_FI_DEV_GPU_TEMP{instance=~"$instance", gpu=~"$gpu"})"#,
    r#"DCGM_FI_DEV_POWER_USAGE{instance=~"$instance", gpu=~"$gpu"}"#,
    r#"sum(DCGM_FI_DEV_POWER_USAGE{instance=~"$instance", gpu=~"$gpu"})"#,
    r#"DCGM_FI_DEV_SM_CLOCK{instance=~"$instance", gpu=~"$gpu"} * 1000000"#,
    r#"DCGM_FI_DEV_GPU_UTIL{instance=~"$instance", gpu=~"$gpu"}"#,
    r#"DCGM_FI_DEV_FB_USED{instance=~"$instance", gpu=~"$gpu"}"#,
    r#"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{instance=~"$instance", gpu=~"$gpu"}"#,
];

/// dcgm-exporter's label names, in its order.
const DCGM_LABELS: [&str; 7] = [
    "gpu",
    "UUID",
    "pci_bus_id",
    "device",
    "modelName",
    "Hostname",
    "DCGM_FI_DRIVER_VERSION",
];

const MIB_PER_GIB: f64 = 1024.0;

/// One parsed exposition line: name, labels in order, value.
#[derive(Debug)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Series {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the series lines of a Prometheus text exposition (label values here never hold `"`,
/// `,` or `\`).
fn parse(body: &str) -> Vec<Series> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (head, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').unwrap()),
                None => (head, ""),
            };
            let labels = labels
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Series {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
            }
        })
        .collect()
}

/// The metric names a PromQL expression selects: the identifiers starting with `DCGM_`.
fn metric_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("DCGM_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

fn uuid(i: usize) -> String {
    format!("GPU-00000000-fake-4000-8000-{i:012}")
}

fn start(fake: &FakeNvml, dcgm_compat: bool) -> Agent {
    start_with(fake, dcgm_compat, &[])
}

fn start_with(fake: &FakeNvml, dcgm_compat: bool, extra: &[(&'static str, &'static str)]) -> Agent {
    let lib = fake.lib_path();
    let mut env = vec![("GPULSE_AGENT_NODE_NAME", "node-7")];
    if dcgm_compat {
        env.push(("GPULSE_PROMETHEUS_DCGM_COMPAT", "true"));
    }
    env.extend_from_slice(extra);
    Agent::on_nvml(&lib, "200ms", env)
}

/// `/metrics` once the GPU collector has published a sample.
fn metrics_with_gpus(agent: &Agent) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = agent.get_ok("/metrics");
        if body.contains("gpulse_collector_success{collector=\"gpu\"} 1") {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no GPU sample in time\n--- /metrics ---\n{body}\n--- stderr ---\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks one GPU's series of `name`: dcgm's labels, in order, with the fake's identity.
fn dcgm_series<'a>(all: &'a [Series], name: &str, gpu: usize) -> &'a Series {
    let found: Vec<&Series> = all
        .iter()
        .filter(|s| s.name == name && s.label("gpu") == Some(&gpu.to_string()))
        .collect();
    assert_eq!(found.len(), 1, "{name} for gpu {gpu}: {found:?}");
    let s = found[0];
    let names: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, DCGM_LABELS, "{name} labels");
    let want = [
        gpu.to_string(),
        uuid(gpu),
        format!("00000000:{:02X}:00.0", 0x10 + gpu),
        format!("nvidia{gpu}"),
        "NVIDIA H100 80GB HBM3".to_owned(),
        "node-7".to_owned(),
        "550.163.01".to_owned(),
    ];
    let got: Vec<&str> = s.labels.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(got, want, "{name} label values");
    s
}

#[test]
fn grafana_dashboard_12239_finds_every_panel_metric() {
    let mut used: Vec<&str> = DASHBOARD_12239
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert_eq!(
        used,
        [
            "DCGM_FI_DEV_FB_USED",
            "DCGM_FI_DEV_GPU_TEMP",
            "DCGM_FI_DEV_GPU_UTIL",
            "DCGM_FI_DEV_POWER_USAGE",
            "DCGM_FI_DEV_SM_CLOCK",
            "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        ],
        "the dashboard uses exactly these six metrics"
    );

    let fake = FakeNvml::new("gpus=2\n");
    let agent = start(&fake, true);
    // GPM needs two cycles: wait for the tensor pipe series.
    let body = metrics_when(&agent, "the tensor pipe", |b| {
        b.matches("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{").count() == 2
    });
    let all = parse(&body);
    // The dashboard filters on `instance` (Prometheus adds it) and `gpu`; an exporter-side
    // `instance` or `job` label would clash with the scrape's.
    assert!(
        all.iter()
            .all(|s| s.label("instance").is_none() && s.label("job").is_none())
    );

    for name in used {
        for gpu in 0..2 {
            let f = gpu as f64;
            let want = match name {
                "DCGM_FI_DEV_GPU_TEMP" => 40.0 + f,
                // 300000 + 1000i mW.
                "DCGM_FI_DEV_POWER_USAGE" => 300.0 + f,
                "DCGM_FI_DEV_SM_CLOCK" => 1755.0,
                // 0-100 %, not a 0-1 ratio.
                "DCGM_FI_DEV_GPU_UTIL" => 50.0 + 5.0 * f,
                // MiB, not bytes.
                "DCGM_FI_DEV_FB_USED" => (10.0 + f) * MIB_PER_GIB,
                // NVML GPM's ANY_TENSOR_UTIL (40 + i %) as DCGM's 0-1 ratio, without DCGM:
                // the "Tensor Core Utilization" panel fills.
                "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE" => (40.0 + f) / 100.0,
                other => panic!("no expected value for {other}"),
            };
            let s = dcgm_series(&all, name, gpu);
            assert_eq!(s.value, want, "{name} on gpu {gpu}");
        }
    }
}

#[test]
fn every_dcgm_family_has_the_fakes_value_in_dcgm_units() {
    // GPU 1 cannot read power and has no GPM; GPU 2 fell off the bus.
    let fake = FakeNvml::new(
        "gpus=3\nlost=2\ngpu1.not_supported=nvmlDeviceGetPowerUsage\ngpu1.gpm=0\n\
         violation_thermal_ns=1500\nnvlink_replay=2\nremap_cor=4\nremap_failure=1\n",
    );
    let agent = start(&fake, true);
    // GPM needs two cycles.
    let all = parse(&metrics_when(&agent, "GPM series", |b| {
        b.contains("DCGM_FI_PROF_SM_ACTIVE{")
    }));
    for gpu in 0..2 {
        let f = gpu as f64;
        // MiB: total 81920, reserved 512, used (10+i) GiB, free the rest.
        let used = (10.0 + f) * MIB_PER_GIB;
        let expected = [
            ("DCGM_FI_DEV_SM_CLOCK", 1755.0),
            ("DCGM_FI_DEV_MEM_CLOCK", 2619.0),
            ("DCGM_FI_DEV_MEMORY_TEMP", 45.0 + f),
            ("DCGM_FI_DEV_GPU_TEMP", 40.0 + f),
            ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1e9 * (f + 1.0)),
            ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 0.0),
            ("DCGM_FI_DEV_GPU_UTIL", 50.0 + 5.0 * f),
            ("DCGM_FI_DEV_MEM_COPY_UTIL", 30.0 + f),
            ("DCGM_FI_DEV_ENC_UTIL", 0.0),
            ("DCGM_FI_DEV_DEC_UTIL", 0.0),
            ("DCGM_FI_DEV_POWER_VIOLATION", 2e9 * (f + 1.0)),
            ("DCGM_FI_DEV_THERMAL_VIOLATION", 1500.0),
            ("DCGM_FI_DEV_SYNC_BOOST_VIOLATION", 0.0),
            ("DCGM_FI_DEV_BOARD_LIMIT_VIOLATION", 0.0),
            ("DCGM_FI_DEV_LOW_UTIL_VIOLATION", 0.0),
            ("DCGM_FI_DEV_RELIABILITY_VIOLATION", 0.0),
            ("DCGM_FI_DEV_FB_FREE", 81920.0 - 512.0 - used),
            ("DCGM_FI_DEV_FB_USED", used),
            ("DCGM_FI_DEV_FB_RESERVED", 512.0),
            ("DCGM_FI_DEV_FB_TOTAL", 81920.0),
            ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", 0.0),
            ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", 0.0),
            ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", 5.0),
            ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", 0.0),
            ("DCGM_FI_DEV_RETIRED_SBE", 0.0),
            ("DCGM_FI_DEV_RETIRED_DBE", 0.0),
            ("DCGM_FI_DEV_RETIRED_PENDING", 0.0),
            // 18 links, each reporting the same counter value: summed over links.
            ("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", 36.0),
            ("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", 0.0),
            ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", 0.0),
            ("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", 0.0),
            ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", 0.0),
            ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", 4.0),
            ("DCGM_FI_DEV_ROW_REMAP_FAILURE", 1.0),
        ];
        for (name, want) in expected {
            assert_eq!(dcgm_series(&all, name, gpu).value, want, "{name} gpu {gpu}");
        }
    }
    // NVML GPM on GPU 0 only: the profiling fields as DCGM's ratios, throughput in bytes/s
    // (NVML's GPM reports MiB/s).
    let mib = 1024.0 * 1024.0;
    let gpm = [
        ("DCGM_FI_PROF_NVLINK_TX_BYTES", 100.0 * mib),
        ("DCGM_FI_PROF_NVLINK_RX_BYTES", 200.0 * mib),
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.6),
        ("DCGM_FI_PROF_SM_ACTIVE", 0.55),
        ("DCGM_FI_PROF_SM_OCCUPANCY", 0.3),
        ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 0.4),
        ("DCGM_FI_PROF_DRAM_ACTIVE", 0.25),
        ("DCGM_FI_PROF_PIPE_FP64_ACTIVE", 0.01),
        ("DCGM_FI_PROF_PIPE_FP32_ACTIVE", 0.12),
        ("DCGM_FI_PROF_PIPE_FP16_ACTIVE", 0.05),
        ("DCGM_FI_PROF_PCIE_TX_BYTES", 2.0 * mib),
        ("DCGM_FI_PROF_PCIE_RX_BYTES", 4.0 * mib),
    ];
    for (name, want) in gpm {
        assert_eq!(dcgm_series(&all, name, 0).value, want, "{name} gpu 0");
    }
    assert_eq!(dcgm_series(&all, "DCGM_FI_DEV_POWER_USAGE", 0).value, 300.0);
    let dcgm: Vec<&Series> = all.iter().filter(|s| s.name.starts_with("DCGM_")).collect();
    // The unsupported reading and the lost GPU are absent, not 0.
    assert!(
        !dcgm
            .iter()
            .any(|s| s.name == "DCGM_FI_DEV_POWER_USAGE" && s.label("gpu") == Some("1"))
    );
    assert!(!dcgm.iter().any(|s| s.label("gpu") == Some("2")));
    // 34 families on 2 GPUs, power and the 12 GPM ones on GPU 0: nothing else.
    assert_eq!(dcgm.len(), 34 * 2 + 1 + 12, "{dcgm:#?}");
    // GPU 1 has no GPM (and PCIe throughput is off): no profiling series, never a 0.
    assert!(
        !dcgm
            .iter()
            .any(|s| s.name.starts_with("DCGM_FI_PROF_") && s.label("gpu") == Some("1"))
    );
    // What gpulse cannot read (here: no Xid, MIG off) is never served as 0.
    for absent in [
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
    ] {
        assert!(!dcgm.iter().any(|s| s.name.starts_with(absent)), "{absent}");
    }
}

#[test]
fn without_dcgm_compat_no_dcgm_line_is_served() {
    let fake = FakeNvml::new("gpus=2\n");
    let agent = start(&fake, false);
    let body = metrics_with_gpus(&agent);
    assert!(body.contains("gpulse_gpu_utilization_ratio{gpu=\"1\""));
    let dcgm: Vec<&str> = body.lines().filter(|l| l.contains("DCGM_")).collect();
    assert!(dcgm.is_empty(), "{dcgm:?}");
}

/// `/metrics` once `ready` holds for it.
fn metrics_when(agent: &Agent, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = metrics_with_gpus(agent);
        if ready(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in time\n--- /metrics ---\n{body}\n--- stderr ---\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pcie_rates_mig_instances_xid_text_and_the_lowercase_host_label() {
    // GPU 0 in MIG mode (two instances of 10 GiB, (i+1) GiB used), an Xid 79 on GPU 1, PCIe
    // throughput on (the fake reports 1000 KB/s out, 2000 KB/s in). No GPM here, whose PCIe
    // rates would replace NVML's.
    let fake = FakeNvml::new("gpus=2\ngpm=0\ngpu0.mig=1\nxid=1:79\n");
    let agent = start_with(
        &fake,
        true,
        &[
            ("GPULSE_GPU_PCIE_THROUGHPUT", "true"),
            ("GPULSE_PROMETHEUS_DCGM_HOSTNAME_LABEL", "hostname"),
        ],
    );
    let body = metrics_when(&agent, "Xid series", |b| {
        b.contains("DCGM_FI_DEV_XID_ERRORS{") && b.contains("GPU_I_ID=")
    });
    let all = parse(&body);
    let dcgm: Vec<&Series> = all.iter().filter(|s| s.name.starts_with("DCGM_")).collect();
    // Every DCGM series spells the host label as configured, with the node name.
    assert!(dcgm.iter().all(|s| s.label("hostname") == Some("node-7")));
    assert!(dcgm.iter().all(|s| s.label("Hostname").is_none()));

    // PCIe rates in bytes per second, per GPU.
    let one = |name: &str, gpu: &str| -> Vec<&Series> {
        dcgm.iter()
            .copied()
            .filter(|s| s.name == name && s.label("gpu") == Some(gpu))
            .collect()
    };
    for gpu in ["0", "1"] {
        assert_eq!(one("DCGM_FI_PROF_PCIE_TX_BYTES", gpu)[0].value, 1_024_000.0);
        assert_eq!(one("DCGM_FI_PROF_PCIE_RX_BYTES", gpu)[0].value, 2_048_000.0);
    }

    // MIG: GPU 0's framebuffer families have one series per instance after the GPU's own,
    // with the parent's labels and GPU_I_ID before the host label.
    for (name, per_instance) in [
        ("DCGM_FI_DEV_FB_USED", [1024.0, 2048.0]),
        ("DCGM_FI_DEV_FB_FREE", [9216.0, 8192.0]),
        ("DCGM_FI_DEV_FB_TOTAL", [10240.0, 10240.0]),
    ] {
        let series = one(name, "0");
        assert_eq!(series.len(), 3, "{name}: {series:#?}");
        assert_eq!(series[0].label("GPU_I_ID"), None);
        for (i, want) in per_instance.iter().enumerate() {
            let s = series[i + 1];
            assert_eq!(s.label("GPU_I_ID"), Some(i.to_string().as_str()), "{name}");
            assert_eq!(s.value, *want, "{name} instance {i}");
            let names: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                names,
                [
                    "gpu",
                    "UUID",
                    "pci_bus_id",
                    "device",
                    "modelName",
                    "GPU_I_ID",
                    "hostname",
                    "DCGM_FI_DRIVER_VERSION"
                ]
            );
            assert_eq!(s.label("UUID"), Some(uuid(0).as_str()));
        }
        // GPU 1 is not in MIG mode.
        assert_eq!(one(name, "1").len(), 1, "{name}");
    }
    // Only the framebuffer families have instance series.
    assert!(
        dcgm.iter()
            .filter(|s| s.label("GPU_I_ID").is_some())
            .all(|s| s.name.starts_with("DCGM_FI_DEV_FB_"))
    );

    // The last Xid with its code and NVIDIA's catalog text, after the driver version.
    let xid = one("DCGM_FI_DEV_XID_ERRORS", "1");
    assert_eq!(xid.len(), 1, "{xid:#?}");
    assert_eq!(xid[0].value, 79.0);
    assert_eq!(xid[0].label("err_code"), Some("79"));
    assert_eq!(xid[0].label("err_msg"), Some("GPU has fallen off the bus"));
    let tail: Vec<&str> = xid[0].labels[5..].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        tail,
        ["hostname", "DCGM_FI_DRIVER_VERSION", "err_code", "err_msg"]
    );
    assert!(one("DCGM_FI_DEV_XID_ERRORS", "0").is_empty());
}
