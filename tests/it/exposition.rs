//! Golden-file checks of the /metrics exposition (native, and with dcgm_compat on) and
//! Prometheus naming rules.
//!
//! Regenerate with `UPDATE_GOLDEN=1 cargo test --test it exposition` after an intended change,
//! and review the diff of `tests/data/metrics.golden` and `tests/data/metrics_dcgm.golden`
//! like code.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gpulse::config::ModeSetting;
use gpulse::demo::gpu_sim::SimGpuCollector;
use gpulse::export::prometheus::{BuildInfo, RenderOptions, render_snapshot};
use gpulse::health;
use gpulse::mode::{Facts, ModeInfo};
use gpulse::model::{
    CollectorStatus, DiskReadings, GpuDevice, GpuWindowPoint, HostSample, InferenceSample, JobEnd,
    JobEvent, JobExit, JobLog, JobOutcome, JobReady, JobStart, MigInstance, MigReadings,
    NetworkReadings, ProbeReason, ProbeSample, ProbeState, ProbeStatus, XidCount, XidEvent, XidLog,
    XidSource,
};
use gpulse::store::Snapshot;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A fixed snapshot: two simulated GPUs at tick 100 (GPU 1 throttling), a lost GPU, a MIG
/// GPU, a host, a stale collector, and a wrapped job (embedded mode) after one restart.
pub(crate) fn fixed_snapshot() -> Snapshot {
    let mut sim = SimGpuCollector::new(3, Duration::from_secs(1));
    let mut gpu = sim.next_sample();
    for _ in 0..110 {
        gpu = sim.next_sample();
    }
    gpu.taken_at = at(1_700_000_000);
    let lost_identity = Arc::clone(&gpu.devices[2].identity);
    gpu.devices[2] = GpuDevice {
        identity: lost_identity,
        lost: true,
        ..GpuDevice::default()
    };
    gpu.devices[0].mig = Some(MigReadings {
        enabled: true,
        pending_enabled: true,
        instances: vec![MigInstance {
            index: 0,
            uuid: "MIG-demo-0".to_owned(),
            memory_total_bytes: Some(10 << 30),
            memory_used_bytes: Some(1 << 30),
        }],
    });
    // A GPU whose fan reading is unsupported must simply lack the series.
    gpu.devices[0].fan_speed_ratio = vec![(0, 0.35)];
    gpu.devices[1].recovery_action = Some(1);
    let gpu1 = &gpu.devices[1].identity;
    // Xid 79 on GPU 1 (twice, the last from both NVML and kmsg) and one the kernel log could
    // not map to a GPU.
    let xid = XidLog {
        counts: vec![
            XidCount {
                gpu_index: Some(1),
                uuid: gpu1.uuid.clone(),
                xid: 79,
                count: 2,
                first_seen: at(1_699_999_000),
                last_seen: at(1_699_999_900),
            },
            XidCount {
                gpu_index: None,
                uuid: String::new(),
                xid: 145,
                count: 1,
                first_seen: at(1_699_999_500),
                last_seen: at(1_699_999_500),
            },
        ],
        recent: vec![XidEvent {
            at: at(1_699_999_900),
            gpu_index: Some(1),
            uuid: gpu1.uuid.clone(),
            pci_bus_id: gpu1.pci_bus_id.clone(),
            xid: 79,
            sources: vec![XidSource::NvmlEvent, XidSource::Kmsg],
            detail: "pid=1234, GPU has fallen off the bus.".to_owned(),
        }],
    };
    let host = HostSample {
        taken_at: Some(at(1_700_000_000)),
        cpu_utilization: Some(0.25),
        per_cpu_utilization: vec![("0".to_owned(), 0.5), ("1".to_owned(), 0.0)],
        cpu_count: 2,
        load_average: Some([0.5, 0.25, 0.125]),
        memory_total_bytes: 16 << 30,
        memory_available_bytes: 8 << 30,
        memory_used_bytes: 7 << 30,
        swap_total_bytes: 0,
        swap_used_bytes: 0,
        disks: vec![DiskReadings {
            mount_point: "/".to_owned(),
            device: "/dev/vda1".to_owned(),
            filesystem: "ext4".to_owned(),
            total_bytes: 100 << 30,
            available_bytes: 40 << 30,
        }],
        networks: vec![NetworkReadings {
            interface: "eth0".to_owned(),
            received_bytes: 1000,
            transmitted_bytes: 2000,
            received_packets: 10,
            transmitted_packets: 20,
            receive_errors: 1,
            transmit_errors: 0,
        }],
        uptime: Some(Duration::from_secs(3600)),
        boot_time_seconds: Some(1_699_996_400),
    };
    let mut gpu_status = CollectorStatus::new("gpu", Duration::from_secs(1));
    gpu_status.runs = 10;
    gpu_status.failures = 2;
    gpu_status.last_success = false;
    gpu_status.last_duration = Duration::from_millis(2000);
    gpu_status.last_run_at = Some(at(1_700_000_010));
    gpu_status.last_success_at = Some(at(1_700_000_000));
    gpu_status.last_error = Some("deadline".to_owned());
    gpu_status.last_error_kind = Some("deadline");
    let mut host_status = CollectorStatus::new("host", Duration::from_secs(5));
    host_status.runs = 3;
    host_status.last_success = true;
    host_status.last_duration = Duration::from_micros(1500);
    host_status.last_run_at = Some(at(1_700_000_000));
    host_status.last_success_at = Some(at(1_700_000_000));
    // Health: GPU 0 with a recent application Xid, GPU 2 lost, as evaluated once.
    let xids = XidLog {
        counts: vec![XidCount {
            gpu_index: Some(0),
            uuid: gpu.devices[0].identity.uuid.clone(),
            xid: 13,
            count: 1,
            first_seen: at(1_700_000_000),
            last_seen: at(1_700_000_000),
        }],
        recent: Vec::new(),
    };
    let window = [GpuWindowPoint::from(&gpu)];
    let health = health::evaluate(
        &health::NodeHealth::initial(),
        &health::Input {
            status: health::GpuStatus::Sampled,
            sample: Some(&gpu),
            window: &window,
            xid: &xids,
            nvml_stuck: None,
            clears: &[],
        },
        &health::Policy::default(),
        at(1_700_000_000),
    );
    // A probe that was down for 30 s and is up again.
    let mut probe = ProbeStatus::new("llm", "vllm", Duration::from_secs(10));
    let check = |state, reason, secs| ProbeSample {
        state,
        reason,
        detail: String::new(),
        latency: Duration::from_millis(12),
        models: vec!["m".to_owned()],
        checked_at: at(secs),
    };
    probe.apply(
        check(ProbeState::Down, Some(ProbeReason::Timeout), 1_700_000_000),
        32,
    );
    probe.apply(check(ProbeState::Up, None, 1_700_000_030), 32);
    // Two synthetic requests (one within the SLOs, one failed) and one server scrape.
    let mut probe = probe
        .with_inference(Duration::from_secs(1), Duration::from_secs(2))
        .with_server_metrics();
    let request = |ok: bool, ms: u64| InferenceSample {
        ok,
        reason: (!ok).then_some(ProbeReason::Timeout),
        detail: String::new(),
        model: "m".to_owned(),
        ttft: ok.then(|| Duration::from_millis(ms)),
        duration: Duration::from_millis(ms * 2),
        output_tokens: ok.then_some(1),
        caused_load: false,
        at: at(1_700_000_031),
    };
    if let Some(stats) = probe.inference.as_mut() {
        stats.apply(request(true, 40));
        stats.apply(request(false, 10_000));
    }
    let lifted = gpulse::collect::probe::scrape::lift(
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 3\n\
         # TYPE vllm:request_success_total counter\nvllm:request_success_total{finished_reason=\"stop\"} 90\n\
         vllm:request_success_total{finished_reason=\"error\"} 2\n\
         # TYPE vllm:time_to_first_token_seconds histogram\n\
         vllm:time_to_first_token_seconds_bucket{le=\"0.1\"} 80\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 92\n\
         vllm:time_to_first_token_seconds_sum 6.5\nvllm:time_to_first_token_seconds_count 92\n",
        &gpulse::collect::probe::promtext::Limits::default(),
    );
    if let Some(scrapes) = probe.server.as_mut() {
        scrapes.apply(Ok(lifted), Duration::from_millis(3), at(1_700_000_031));
    }
    let gpu_for_claims = gpu.clone();
    Snapshot {
        mode: ModeInfo::new(
            ModeSetting::Auto,
            Facts {
                wrapped: true,
                in_container: true,
                kmsg_readable: false,
                gpu_devices_visible: true,
            },
        ),
        job: Some(Arc::new(job_log())),
        gpu: Some(Arc::new(gpu)),
        host: Some(Arc::new(host)),
        collectors: vec![gpu_status, host_status],
        xid: Arc::new(xid),
        health: Some(Arc::new(health)),
        probes: Arc::new(vec![probe]),
        // An Akash lease as the provider injects it (gseq and oseq left unset), so the
        // goldens show `gpulse_akash_info`.
        identity: Arc::new(gpulse::identity::Identity::from_env(|name| match name {
            "AKASH_OWNER" => Some("akash1owner".to_owned()),
            "AKASH_PROVIDER" => Some("akash1provider".to_owned()),
            "AKASH_DEPLOYMENT_SEQUENCE" => Some("1234567".to_owned()),
            "AKASH_CLUSTER_PUBLIC_HOSTNAME" => Some("provider.example.com".to_owned()),
            _ => None,
        })),
        score: Some(Arc::new(score_state(&gpu_for_claims))),
        latest_report: None,
        // An event log on disk whose OTLP export is 10 events behind, 2 dropped at its bound.
        events: Some(gpulse::model::EventLogStatus {
            persistent: true,
            first_seq: 101,
            last_seq: 340,
            events: 240,
            bytes: 98_304,
            recorded_total: 240,
            dropped_total: 2,
            write_failures: 0,
            outbox: true,
            acked_seq: 330,
            last_export_success: Some(at(1_700_000_030)),
        }),
        k8s: Some(Arc::new(k8s_attribution(&gpu_for_claims))),
        health_clears: Arc::default(),
    }
}

/// Kubernetes attribution: GPU 0 and its MIG device held by one container each, GPU 1 shared
/// by two pods (time-slicing), GPU 0's process attributed, one assignment dropped.
fn k8s_attribution(gpu: &gpulse::model::GpuSample) -> gpulse::model::K8sAttribution {
    use gpulse::model::{DeviceOwner, K8sAttribution, PodRef, ProcessOwner};
    let owner = |ns: &str, pod: &str, container: &str| PodRef {
        namespace: ns.to_owned(),
        pod: pod.to_owned(),
        container: container.to_owned(),
    };
    let gpu0 = &gpu.devices[0];
    let gpu1 = &gpu.devices[1];
    K8sAttribution {
        taken_at: Some(at(1_700_000_000)),
        devices: vec![
            DeviceOwner {
                device: gpu0.identity.uuid.clone(),
                owner: owner("ml", "train-0", "trainer"),
            },
            DeviceOwner {
                device: gpu1.identity.uuid.clone(),
                owner: owner("serving", "llm-a", "vllm"),
            },
            DeviceOwner {
                device: gpu1.identity.uuid.clone(),
                owner: owner("serving", "llm-b", "vllm"),
            },
            DeviceOwner {
                device: "MIG-demo-0".to_owned(),
                owner: owner("ml", "notebook", "jupyter"),
            },
        ],
        processes: gpu0
            .processes
            .iter()
            .flatten()
            .map(|p| ProcessOwner {
                gpu_uuid: gpu0.identity.uuid.clone(),
                pid: p.pid,
                owner: owner("ml", "train-0", "trainer"),
            })
            .collect(),
        dropped: 1,
        leases: vec![gpulse::model::NamespaceLease {
            namespace: "serving".to_owned(),
            owner: Some("akash1owner".to_owned()),
            dseq: Some("1234567".to_owned()),
            gseq: Some("1".to_owned()),
            oseq: Some("1".to_owned()),
            provider: Some("akash1provider".to_owned()),
        }],
    }
}

/// A score over a fixed ledger: an hour of minutes of one probe (with server counters and an
/// outage) and two GPUs (one throttling while busy, and an Akash lease's for the last 40
/// minutes), a price, and two claims (one fails).
fn score_state(gpu: &gpulse::model::GpuSample) -> gpulse::store::ScoreState {
    use gpulse::config::ScoreConfig;
    use gpulse::model::{Bucket, Evidence, LedgerStatus, ServerTally, ThrottleReason};
    use gpulse::score::{Reach, ScoreWindow};
    let end = 1_700_000_040u64;
    let buckets: Vec<Bucket> = (0..60u64)
        .map(|m| {
            let mut b = Bucket::new(end - 3600 + m * 60, 60);
            b.observed_seconds = 60;
            let p = b.probe("vllm");
            p.checks = if m == 30 {
                [3, 0, 0, 0, 1]
            } else {
                [4, 0, 0, 0, 0]
            };
            if m == 31 {
                (
                    p.outages_recovered,
                    p.recovery_seconds_sum,
                    p.recovery_seconds_max,
                ) = (1, 20.0, 20.0);
            }
            p.outages_started = u64::from(m == 30);
            (p.requests_ok, p.requests_within_slo, p.output_tokens) = (2, 2, 8);
            p.ttft[4] = 2;
            p.e2e[5] = 2;
            let mut ttft = [0; gpulse::model::LEDGER_BINS];
            (ttft[4], ttft[5], ttft[7]) = (50, 45, 5);
            p.server = Some(ServerTally {
                requests_ok: Some(100),
                requests_failed: Some(u64::from(m % 20 == 0)),
                output_tokens: Some(12_000),
                ttft: Some(ttft),
                e2e: None,
                ttft_within_slo: Some(99.0),
                e2e_within_slo: None,
                counter_resets: 0,
            });
            for (i, d) in gpu.devices.iter().enumerate() {
                let g = b.gpu(&d.identity.uuid);
                (g.sampled_seconds, g.healthy_seconds, g.busy_seconds) = (60, 60, 50);
                if i == 1 {
                    g.throttled_busy_seconds = 5;
                    g.throttle_reasons = vec![(ThrottleReason::HwThermalSlowdown, 5)];
                }
                // The second GPU is the Akash lease's for the last 40 minutes.
                if i == 1 && m >= 20 {
                    let g = g.clone();
                    let lease = b.lease("akash1tenant/4242/1/1/akash1provider");
                    lease.held_seconds = 60;
                    lease.gpu(&g.uuid).merge(&g);
                }
            }
            b
        })
        .collect();
    let mut config = ScoreConfig {
        price_per_hour: 2.5,
        ..ScoreConfig::default()
    };
    config.expect.gpu_count = 8;
    config.expect.gpu_model = "H100".to_owned();
    let reach = Reach {
        mode: gpulse::mode::Mode::Embedded,
        probes: 1,
        inference_probes: 1,
        metrics_probes: 1,
        gpus: true,
        job: false,
    };
    let evidence: Vec<Evidence> = ScoreWindow::ALL
        .iter()
        .map(|w| Evidence::over(&buckets, end, w.seconds()))
        .collect();
    let windows = ScoreWindow::ALL
        .iter()
        .zip(&evidence)
        .map(|(w, e)| gpulse::score::evaluate(*w, e, &reach, &config))
        .collect();
    let leases = gpulse::score::evaluate_leases(&evidence, reach.mode, &config, 64);
    gpulse::store::ScoreState {
        evaluated_at: end,
        windows,
        claims: gpulse::score::check_claims(&config, Some(gpu)),
        reach,
        evidence,
        ledger: LedgerStatus {
            persistent: true,
            minutes: 60,
            hours: 0,
            bytes: 9000,
            oldest: Some(end - 3600),
            write_failures: 0,
            undecodable: 0,
        },
        config: Arc::new(config),
        leases,
    }
}

/// `gpulse wrap`'s child: run 1 failed (exit 3 after 90 s), run 2 runs and became ready.
fn job_log() -> JobLog {
    let mut log = JobLog::default();
    let events = [
        JobEvent::Started(JobStart {
            run: 1,
            at: at(1_699_990_000),
            program: "vllm".to_owned(),
            pid: 41,
        }),
        JobEvent::Finished(JobEnd {
            run: 1,
            at: at(1_699_990_090),
            program: "vllm".to_owned(),
            pid: 41,
            started_at: at(1_699_990_000),
            outcome: JobOutcome::Failure,
            exit: Some(JobExit::Code(3)),
            duration: Some(Duration::from_secs(90)),
            oom_kills: Some(0),
            stop_signal: None,
            killed_after_grace: false,
        }),
        JobEvent::Started(JobStart {
            run: 2,
            at: at(1_699_990_100),
            program: "vllm".to_owned(),
            pid: 42,
        }),
        JobEvent::Ready(JobReady {
            run: 2,
            at: at(1_699_990_145),
            after_start: Duration::from_secs(45),
            recovery: Some(Duration::from_secs(55)),
        }),
    ];
    for event in events {
        log.apply(event, 16);
    }
    log
}

fn build() -> BuildInfo {
    BuildInfo {
        version: "0.0.0-test",
        gpu_source: "demo",
    }
}

/// Native families only (`dcgm_compat` off, the default).
fn native() -> String {
    render_snapshot(&fixed_snapshot(), &build(), &RenderOptions::default()).unwrap()
}

/// Native plus dcgm-exporter families, as `[prometheus] dcgm_compat = true` serves them.
fn with_dcgm() -> String {
    let options = RenderOptions {
        dcgm_compat: true,
        hostname: "node-7".to_owned(),
        ..RenderOptions::default()
    };
    render_snapshot(&fixed_snapshot(), &build(), &options).unwrap()
}

/// Compares `text` with `tests/data/<file>`; `UPDATE_GOLDEN=1` rewrites the file first.
fn check_golden(file: &str, text: &str) {
    let text = text.replace(std::env::consts::ARCH, "ARCH");
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    if text != golden {
        let first = text
            .lines()
            .zip(golden.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "/metrics differs from {path} at line {}: got {:?}, want {:?} (UPDATE_GOLDEN=1 to accept)",
            first + 1,
            text.lines().nth(first),
            golden.lines().nth(first)
        );
    }
}

#[test]
fn metrics_match_the_golden_file() {
    check_golden("metrics.golden", &native());
}

#[test]
fn metrics_with_dcgm_compat_match_their_golden_file() {
    let text = with_dcgm();
    // The native part is byte for byte what dcgm_compat off serves; dcgm families follow.
    assert!(text.starts_with(&native()));
    check_golden("metrics_dcgm.golden", &text);
}

#[test]
fn names_follow_prometheus_conventions() {
    let text = native();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(name.starts_with("gpulse_"), "{name}");
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}"
        );
        // Whole words: `million` (a count, as in cost per million tokens) is not `milli`.
        for bad in ["milli", "kilo", "mega", "percent", "celcius", "mhz", "kb"] {
            assert!(
                !name.split('_').any(|word| word == bad),
                "{name} is not in base units"
            );
        }
    }
}

#[test]
fn lost_and_unsupported_readings_are_omitted_not_zero() {
    let text = native();
    assert!(text.contains("gpulse_gpu_lost{gpu=\"2\","));
    let lost_util = text
        .lines()
        .any(|l| l.starts_with("gpulse_gpu_utilization_ratio{gpu=\"2\""));
    assert!(!lost_util, "a lost GPU must not report utilization");
    // Only GPU 0 has a fan reading.
    let fans: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gpulse_gpu_fan_speed_ratio{"))
        .collect();
    assert_eq!(fans.len(), 1, "{fans:?}");
    // PCIe throughput is off: the family is absent, not 0.
    assert!(!text.contains("gpulse_gpu_pcie_throughput_bytes_per_second"));
}

/// `promtool check metrics` on `text`: whether it passed and what it said (stdout then
/// stderr). `None` when promtool is not installed (a failure under `GPULSE_CI`).
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let Some(promtool) = crate::skip::on_path("promtool") else {
        crate::skip::not_installed(
            "`promtool` is not on PATH",
            "install Debian's `prometheus` package (`apt-get install prometheus`)",
        );
        return None;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

/// The native exposition (dcgm_compat off) passes promtool's lints without a single message.
#[test]
fn promtool_accepts_the_exposition() {
    let Some((ok, said)) = promtool_check(&native()) else {
        return;
    };
    assert!(ok && said.trim().is_empty(), "promtool: {said}");
}

/// With dcgm_compat on, promtool's lints hit only dcgm-exporter's own naming, which must stay
/// as it is for dashboards and alert rules: the `modelName` label (camelCase, on every DCGM
/// family) and the word "COUNTER" in `DCGM_FI_DEV_PCIE_REPLAY_COUNTER`. These are exactly the
/// messages docs/dcgm.md's "promtool" section lists; nothing is said about a
/// `gpulse_*` family.
#[test]
fn promtool_lints_only_dcgm_names_with_dcgm_compat() {
    let text = with_dcgm();
    let Some((ok, said)) = promtool_check(&text) else {
        return;
    };
    assert!(!ok, "promtool exits non-zero on lint problems: {said}");
    let said: std::collections::BTreeSet<&str> = said.lines().collect();
    let mut expected: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("DCGM_"))
        .map(|name| format!("{name} label names should be written in 'snake_case' not 'camelCase'"))
        .collect();
    expected.insert(
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'".to_owned(),
    );
    let expected: std::collections::BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(said, expected);
}

proptest::proptest! {
    /// Label values come from the machine (mount points, interface and GPU names); whatever
    /// they hold, each series stays on one line with its value, so a scrape cannot be broken.
    #[test]
    fn hostile_label_values_cannot_break_the_exposition(
        names in proptest::collection::vec("\\PC*|[\"\\\\\n{}=,]{0,8}", 1..6)
    ) {
        let mut snap = fixed_snapshot();
        let mut host = (*snap.host.clone().unwrap()).clone();
        host.disks = names
            .iter()
            .map(|n| DiskReadings {
                mount_point: n.clone(),
                device: n.clone(),
                filesystem: "ext4".to_owned(),
                total_bytes: 1,
                available_bytes: 1,
            })
            .collect();
        snap.host = Some(Arc::new(host));
        let text = render_snapshot(&snap, &build(), &RenderOptions::default()).unwrap();
        let sizes: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("gpulse_host_filesystem_size_bytes{"))
            .collect();
        proptest::prop_assert_eq!(sizes.len(), names.len());
        for line in sizes {
            proptest::prop_assert!(line.ends_with("} 1.0"), "{}", line);
        }
    }
}

/// What one OTLP push of the same snapshot carries (names, units, kinds, attributes, values),
/// so a change to the OTLP side shows up as a diff too.
#[test]
fn otlp_push_matches_its_golden_file() {
    let stats = std::sync::Arc::new(gpulse::export::ExportStats::default());
    stats.record("otlp", Ok(()));
    let text = gpulse::export::otlp::render_for_tests(fixed_snapshot(), stats, "demo");
    check_golden("otlp.golden", &text);
}

/// `/v1/score` of the fixed snapshot (`gpulse.score/v1`), pretty-printed: the public shape of
/// the score is a golden file too (the agent version is masked).
#[test]
fn score_json_matches_its_golden_file() {
    let snap = fixed_snapshot();
    let dto = gpulse::export::json::ScoreV1::from_snapshot(&snap, "node-1", None).unwrap();
    let text = serde_json::to_string_pretty(&dto).unwrap() + "\n";
    let text = text.replace(env!("CARGO_PKG_VERSION"), "VERSION");
    check_golden("score.golden.json", &text);
    // One window only with ?window=1h.
    let one = gpulse::export::json::ScoreV1::from_snapshot(
        &snap,
        "node-1",
        Some(gpulse::score::ScoreWindow::H1),
    )
    .unwrap();
    assert_eq!(one.windows.len(), 1);
    assert!(
        dto.reasons.iter().any(|r| r.contains("gpu_count")),
        "{:?}",
        dto.reasons
    );
}
