//! The real nvml-wrapper code path against the fake `libnvidia-ml.so.1`: exact values, omitted
//! unsupported readings, lost GPUs, MIG, a hung call, a driver that appears later, recovery.
//! Real-GPU checks run only with `GPULSE_REAL_GPU=1`.

use std::path::Path;
use std::time::{Duration, Instant};

use gpulse::collect::ErrorKind;
use gpulse::collect::gpu::{GpuOptions, NvmlSampler};
use gpulse::config::GpuConfig;
use gpulse::model::{GpuDevice, GpuSample, LabelValue, Pipe, Profiling};

/// Typed readings by their label spelling, so the assertions read as /metrics does.
fn spelled<T: LabelValue, V: Copy>(items: &[(T, V)]) -> Vec<(&'static str, V)> {
    items.iter().map(|(k, v)| (k.prom(), *v)).collect()
}

use crate::agent::Agent;
use crate::fake_nvml::{FakeNvml, build_fake_nvml};

const GIB: u64 = 1 << 30;

fn options(lib: &Path) -> GpuOptions {
    let mut options = GpuOptions::from_config(&GpuConfig::default(), Some(lib.to_owned()));
    options.retry_interval = Duration::from_millis(1);
    options
}

fn sample(fake: &FakeNvml) -> GpuSample {
    NvmlSampler::new(options(&fake.lib_path())).cycle().unwrap()
}

fn uuid(i: u32) -> String {
    format!("GPU-00000000-fake-4000-8000-{i:012}")
}

#[test]
fn every_reading_has_the_fakes_value() {
    let fake = FakeNvml::new("gpus=2\n");
    let mut opts = options(&fake.lib_path());
    opts.pcie_throughput = true;
    let s = NvmlSampler::new(opts).cycle().unwrap();
    assert_eq!(s.driver_version.as_deref(), Some("550.163.01"));
    assert_eq!(s.cuda_driver_version.as_deref(), Some("12.4"));
    assert_eq!(s.devices.len(), 2);
    for (i, d) in s.devices.iter().enumerate() {
        let n = i as u64;
        let f = i as f64;
        let id = &d.identity;
        assert_eq!(id.index, i as u32);
        assert_eq!(id.uuid, uuid(i as u32));
        assert_eq!(id.name, "NVIDIA H100 80GB HBM3");
        assert_eq!(id.pci_bus_id, format!("00000000:{:02X}:00.0", 0x10 + i));
        assert_eq!(
            id.serial.as_deref(),
            Some(format!("16543210{i:05}").as_str())
        );
        assert_eq!(id.vbios_version.as_deref(), Some("96.00.99.00.01"));
        assert!(!d.lost);
        assert_eq!(d.utilization.gpu, Some((50.0 + 5.0 * f) / 100.0));
        assert_eq!(d.utilization.memory, Some((30.0 + f) / 100.0));
        assert_eq!(d.utilization.encoder, Some(0.0));
        assert_eq!(d.utilization.decoder, Some(0.0));
        let total = 85_899_345_920u64;
        let reserved = 536_870_912u64;
        let used = (10 + n) * GIB;
        assert_eq!(d.memory.total_bytes, Some(total));
        assert_eq!(d.memory.used_bytes, Some(used));
        assert_eq!(d.memory.reserved_bytes, Some(reserved));
        assert_eq!(d.memory.free_bytes, Some(total - reserved - used));
        assert_eq!(d.temperature_gpu_celsius, Some(40.0 + f));
        assert_eq!(d.temperature_memory_celsius, Some(45.0 + f));
        assert_eq!(
            spelled(&d.temperature_thresholds),
            vec![
                ("slowdown", 87.0),
                ("shutdown", 92.0),
                ("memory_max", 95.0),
                ("gpu_max", 85.0)
            ]
        );
        assert_eq!(d.power_watts, Some(300.0 + f));
        assert_eq!(d.power_limit_watts, Some(700.0));
        assert_eq!(d.energy_joules, Some(1e6 * (f + 1.0)));
        assert_eq!(
            spelled(&d.clocks_hertz),
            vec![
                ("graphics", 1755e6),
                ("sm", 1755e6),
                ("memory", 2619e6),
                ("video", 1545e6)
            ]
        );
        assert_eq!(
            spelled(&d.max_clocks_hertz),
            vec![
                ("graphics", 1980e6),
                ("sm", 1980e6),
                ("memory", 2619e6),
                ("video", 1755e6)
            ]
        );
        assert_eq!(d.performance_state, Some(0));
        assert_eq!(d.fan_speed_ratio, vec![(0, 0.35)]);
        let throttle = d.throttle.unwrap();
        assert_eq!((throttle.active, throttle.supported), (0x1, 0x1FF));
        assert_eq!(
            spelled(&d.throttle_seconds),
            vec![
                ("power", 2.0 * (f + 1.0)),
                ("thermal", 0.0),
                ("sync_boost", 0.0),
                ("board_limit", 0.0),
                ("low_utilization", 0.0),
                ("reliability", 0.0)
            ]
        );
        assert_eq!(
            d.ecc_errors
                .iter()
                .map(|(k, s, n)| (k.prom(), s.prom(), *n))
                .collect::<Vec<_>>(),
            vec![
                ("corrected", "volatile", 0),
                ("corrected", "aggregate", 5),
                ("uncorrected", "volatile", 0),
                ("uncorrected", "aggregate", 0)
            ]
        );
        assert_eq!(
            spelled(&d.retired_pages),
            vec![("single_bit_ecc", 0), ("double_bit_ecc", 0)]
        );
        assert_eq!(d.retired_pages_pending, Some(false));
        let rows = d.remapped_rows.unwrap();
        assert_eq!(
            (
                rows.correctable,
                rows.uncorrectable,
                rows.pending,
                rows.failure
            ),
            (0, 0, false, false)
        );
        assert_eq!(d.pcie.link_generation, Some(5));
        assert_eq!(d.pcie.link_width, Some(16));
        assert_eq!(d.pcie.replay_count, Some(0));
        assert_eq!(d.pcie.tx_bytes_per_second, Some(1000.0 * 1024.0));
        assert_eq!(d.pcie.rx_bytes_per_second, Some(2000.0 * 1024.0));
        assert_eq!(d.nvlinks.len(), 18);
        assert!(
            d.nvlinks
                .iter()
                .all(|l| l.active && l.errors().count() == 4)
        );
        let procs = d.processes.as_ref().unwrap();
        assert_eq!(procs.len(), 1);
        assert_eq!(procs[0].pid, 1000 + 10 * i as u32);
        assert_eq!(procs[0].used_memory_bytes, Some(8 * GIB));
        assert_eq!(procs[0].sm_utilization, Some(0.4));
        assert_eq!(procs[0].memory_utilization, Some(0.2));
        let mig = d.mig.as_ref().unwrap();
        assert!(!mig.enabled && mig.instances.is_empty());
    }
}

#[test]
fn overrides_and_counters_are_reported_as_configured() {
    let fake = FakeNvml::new(
        "gpus=1\ngpu0.util=97\ngpu0.throttle=0xC8\ngpu0.ecc_uncorrected_volatile=2\n\
         gpu0.remap_unc=3\ngpu0.remap_pending=1\ngpu0.retired_dbe=2\ngpu0.retired_pending=1\n\
         gpu0.nvlink_down=3\ngpu0.nvlink_crc_flit=7\ngpu0.pcie_replay=11\ngpu0.processes=3\n",
    );
    let s = sample(&fake);
    let d = &s.devices[0];
    assert_eq!(d.utilization.gpu, Some(0.97));
    let active: Vec<&str> = d
        .throttle
        .unwrap()
        .decoded()
        .filter(|(_, on)| *on)
        .map(|(r, _)| r.prom())
        .collect();
    assert_eq!(
        active,
        [
            "hw_slowdown",
            "hw_thermal_slowdown",
            "hw_power_brake_slowdown"
        ]
    );
    assert!(
        d.ecc_errors
            .iter()
            .any(|(k, s, n)| (k.prom(), s.prom(), *n) == ("uncorrected", "volatile", 2))
    );
    let rows = d.remapped_rows.unwrap();
    assert_eq!((rows.uncorrectable, rows.pending), (3, true));
    assert_eq!(
        spelled(&d.retired_pages),
        vec![("single_bit_ecc", 0), ("double_bit_ecc", 2)]
    );
    assert_eq!(d.retired_pages_pending, Some(true));
    assert!(!d.nvlinks[3].active && d.nvlinks[2].active);
    assert!(
        d.nvlinks[0]
            .errors()
            .any(|(c, n)| (c.prom(), n) == ("crc_flit", 7))
    );
    assert_eq!(d.pcie.replay_count, Some(11));
    assert_eq!(d.processes.as_ref().unwrap().len(), 3);
}

#[test]
fn unsupported_and_forbidden_readings_are_omitted_not_zero() {
    let fake = FakeNvml::new(
        "gpus=2\n\
         not_supported=nvmlDeviceGetPowerUsage,nvmlDeviceGetFanSpeed_v2,nvmlDeviceGetNumFans,nvmlDeviceGetFieldValues,nvmlDeviceGetNvLinkState,nvmlDeviceGetMigMode\n\
         no_permission=nvmlDeviceGetTotalEccErrors\n\
         gpu1.not_supported=nvmlDeviceGetUtilizationRates,nvmlDeviceGetComputeRunningProcesses_v3\n",
    );
    let s = sample(&fake);
    for d in &s.devices {
        assert_eq!(d.power_watts, None);
        assert!(d.fan_speed_ratio.is_empty());
        assert_eq!(d.temperature_memory_celsius, None);
        assert_eq!(d.remapped_rows, None);
        assert!(d.ecc_errors.is_empty());
        assert!(d.nvlinks.is_empty());
        assert!(d.mig.is_none());
        // Unaffected readings are still there.
        assert!(d.memory.total_bytes.is_some());
        assert!(d.power_limit_watts.is_some());
    }
    assert_eq!(s.devices[0].utilization.gpu, Some(0.5));
    assert_eq!(s.devices[1].utilization.gpu, None);
    assert!(s.devices[0].processes.is_some());
    assert!(s.devices[1].processes.is_none());
}

#[test]
fn a_lost_gpu_is_flagged_and_the_others_keep_reporting() {
    let fake = FakeNvml::new("gpus=3\n");
    let mut sampler = NvmlSampler::new(options(&fake.lib_path()));
    let healthy = sampler.cycle().unwrap();
    assert!(healthy.devices.iter().all(|d| !d.lost));
    fake.set_config("gpus=3\nlost=1\n");
    let s = sampler.cycle().unwrap();
    let lost: Vec<&GpuDevice> = s.devices.iter().filter(|d| d.lost).collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].identity.index, 1);
    // Identity survives from the earlier cycle, so alerts can name the GPU.
    assert_eq!(lost[0].identity.uuid, uuid(1));
    assert_eq!(lost[0].utilization.gpu, None);
    assert_eq!(s.devices[2].utilization.gpu, Some(0.6));
    fake.set_config("gpus=3\n");
    let back = sampler.cycle().unwrap();
    assert!(back.devices.iter().all(|d| !d.lost));
}

const MIB: f64 = 1024.0 * 1024.0;

/// GPM readings need two samples: none in a session's first cycle, the fake's percentages as
/// ratios from the second; a GPU without GPM has none of them, and GPM's PCIe rates replace
/// NVML's 20 ms reading.
#[test]
fn gpm_readings_are_ratios_from_a_sessions_second_cycle_and_absent_without_gpm() {
    let fake = FakeNvml::new("gpus=2\ngpu1.gpm=0\n");
    let mut opts = options(&fake.lib_path());
    opts.pcie_throughput = true;
    let mut sampler = NvmlSampler::new(opts);
    let (first, second) = sampler.session(|s| (s.cycle().unwrap(), s.cycle().unwrap()));
    for d in first.devices.iter().chain(&second.devices[1..]) {
        assert_eq!(d.profiling, Profiling::default(), "{d:?}");
        // NVML's own PCIe reading (1000 / 2000 KB/s), as without GPM.
        assert_eq!(d.pcie.tx_bytes_per_second, Some(1_024_000.0));
        assert_eq!(d.pcie.rx_bytes_per_second, Some(2_048_000.0));
    }
    let p = &second.devices[0].profiling;
    assert_eq!(p.graphics_engine_active, Some(0.6));
    assert_eq!(p.sm_active, Some(0.55));
    assert_eq!(p.sm_occupancy, Some(0.3));
    assert_eq!(p.dram_active, Some(0.25));
    assert_eq!(
        spelled(&p.pipes().collect::<Vec<_>>()),
        [
            ("tensor", Some(0.4)),
            ("fp64", Some(0.01)),
            ("fp32", Some(0.12)),
            ("fp16", Some(0.05))
        ]
    );
    assert_eq!(p.nvlink_tx_bytes_per_second, Some(100.0 * MIB));
    assert_eq!(p.nvlink_rx_bytes_per_second, Some(200.0 * MIB));
    // GPM's PCIe rates (2 / 4 MiB/s) over NVML's.
    let pcie = &second.devices[0].pcie;
    assert_eq!(pcie.tx_bytes_per_second, Some(2.0 * MIB));
    assert_eq!(pcie.rx_bytes_per_second, Some(4.0 * MIB));

    // A one-shot cycle takes no GPM sample and has no GPM reading.
    let one_shot = sampler.cycle().unwrap();
    assert!(
        one_shot
            .devices
            .iter()
            .all(|d| d.profiling == Profiling::default())
    );
    // With `gpu.gpm` off a session has none either, and PCIe comes from NVML's call.
    let mut opts = options(&fake.lib_path());
    opts.gpm = false;
    let off = NvmlSampler::new(opts).session(|s| {
        s.cycle().unwrap();
        s.cycle().unwrap()
    });
    assert_eq!(off.devices[0].profiling, Profiling::default());
    assert_eq!(off.devices[0].pcie.tx_bytes_per_second, None);
}

#[test]
fn one_failing_gpm_metric_leaves_only_that_one_absent() {
    // Metric 5 is ANY_TENSOR_UTIL; GPU 1's whole metrics call fails; GPU 2 has no NVLink.
    let fake = FakeNvml::new(
        "gpus=3\ngpu0.gpm_not_supported=5\ngpu1.not_supported=nvmlGpmMetricsGet\n\
         gpu2.nvlinks=0\n",
    );
    let mut sampler = NvmlSampler::new(options(&fake.lib_path()));
    let s = sampler.session(|s| {
        s.cycle().unwrap();
        s.cycle().unwrap()
    });
    let p = &s.devices[0].profiling;
    assert_eq!(p.pipe(Pipe::Tensor), None);
    assert_eq!(p.pipe(Pipe::Fp32), Some(0.12));
    assert_eq!(p.sm_active, Some(0.55));
    assert_eq!(s.devices[1].profiling, Profiling::default());
    // Everything else on GPU 1 is still read.
    assert_eq!(s.devices[1].utilization.gpu, Some(0.55));
    // Without NVLink links, GPM's NVLink rates are left out, not served as a made-up 0.
    let p = &s.devices[2].profiling;
    assert_eq!(p.sm_active, Some(0.57));
    assert_eq!(p.nvlink_tx_bytes_per_second, None);
    assert_eq!(p.nvlink_rx_bytes_per_second, None);
}

/// Samples are freed as they are replaced (the fake has a pool of 64: a leak runs it dry), a
/// lost GPU starts its window over, and a driver that goes away closes the session.
#[test]
fn gpm_samples_are_freed_a_lost_gpu_starts_over_and_a_reload_closes_the_session() {
    let fake = FakeNvml::new("gpus=2\n");
    let mut sampler = NvmlSampler::new(options(&fake.lib_path()));
    let tensor = |s: &GpuSample, gpu: usize| s.devices[gpu].profiling.pipe(Pipe::Tensor);
    sampler.session(|s| {
        s.cycle().unwrap();
        for _ in 0..80 {
            let sample = s.cycle().unwrap();
            assert_eq!(tensor(&sample, 0), Some(0.4));
            assert_eq!(tensor(&sample, 1), Some(0.41));
        }
        fake.set_config("gpus=2\nlost=1\n");
        let lost = s.cycle().unwrap();
        assert!(lost.devices[1].lost);
        assert_eq!(lost.devices[1].profiling, Profiling::default());
        assert_eq!(tensor(&lost, 0), Some(0.4));
        fake.set_config("gpus=2\n");
        // Back: a first sample again, then readings.
        assert_eq!(tensor(&s.cycle().unwrap(), 1), None);
        assert_eq!(tensor(&s.cycle().unwrap(), 1), Some(0.41));
        assert!(s.is_open());
        fake.set_config("gpus=2\nnot_supported=nvmlDeviceGetCount_v2\n");
        let err = s.cycle().unwrap_err();
        assert!(err.message.contains("reloaded"), "{}", err.message);
        assert!(!s.is_open());
    });
    fake.set_config("gpus=2\n");
    // A new session loads NVML again, with new samples.
    let (first, second) = sampler.session(|s| (s.cycle().unwrap(), s.cycle().unwrap()));
    assert_eq!(tensor(&first, 0), None);
    assert_eq!(tensor(&second, 0), Some(0.4));
}

#[test]
fn mig_instances_are_listed_with_their_memory() {
    let fake = FakeNvml::new("gpus=1\ngpu0.mig=1\ngpu0.mig_devices=2\n");
    let s = sample(&fake);
    let mig = s.devices[0].mig.as_ref().unwrap();
    assert!(mig.enabled);
    assert_eq!(mig.instances.len(), 2);
    assert_eq!(mig.instances[1].memory_total_bytes, Some(10 * GIB));
    assert_eq!(mig.instances[1].memory_used_bytes, Some(2 * GIB));
    assert!(mig.instances[0].uuid.starts_with("MIG-"));
}

#[test]
fn init_failures_are_unavailable_and_retried() {
    let fake = FakeNvml::new("init_error=9\n");
    let mut sampler = NvmlSampler::new(options(&fake.lib_path()));
    let err = sampler.cycle().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(
        err.message.contains("driver is not loaded"),
        "{}",
        err.message
    );
    fake.set_config("gpus=1\n");
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(sampler.cycle().unwrap().devices.len(), 1);
}

#[test]
fn a_library_that_appears_later_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libnvidia-ml.so.1");
    let mut sampler = NvmlSampler::new(options(&lib));
    let err = sampler.cycle().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(
        err.message.contains("no NVIDIA GPU found"),
        "{}",
        err.message
    );
    std::fs::copy(build_fake_nvml(), &lib).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(sampler.cycle().unwrap().devices.len(), 2);
}

#[test]
fn retries_wait_for_the_retry_interval() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libnvidia-ml.so.1");
    let mut opts = options(&lib);
    opts.retry_interval = Duration::from_secs(3600);
    let mut sampler = NvmlSampler::new(opts);
    assert!(sampler.cycle().is_err());
    std::fs::copy(build_fake_nvml(), &lib).unwrap();
    // Within the retry interval the earlier failure is reported without reloading.
    assert_eq!(sampler.cycle().unwrap_err().kind, ErrorKind::Unavailable);
}

/// Lines of one family (exact name, so `gpulse_gpu_info` does not match `_information`).
pub(crate) fn metric_lines<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .collect()
}

/// The value of the one series of `name` whose labels contain every `label`.
pub(crate) fn metric_value(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metric_lines(body, name)
        .into_iter()
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Polls the agent's `/metrics` until `ok` holds (20 s at most; the failure shows both
/// `/metrics` and the agent's stderr).
pub(crate) fn wait_for(agent: &Agent, what: &str, mut ok: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = agent.get_ok("/metrics");
        if ok(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n--- /metrics ---\n{body}\n--- stderr ---\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_agent_exports_fake_values_and_omits_unsupported_ones() {
    let fake = FakeNvml::new("gpus=2\ngpu1.util=42\nnot_supported=nvmlDeviceGetPowerUsage\n");
    let lib = fake.lib_path();
    let agent = Agent::on_nvml(&lib, "200ms", [("GPULSE_LOG_LEVEL", "info")]);
    let body = wait_for(&agent, "both GPUs", |b| {
        metric_lines(b, "gpulse_gpu_utilization_ratio").len() == 2
    });
    assert!(body.contains(&format!(
        "gpulse_gpu_utilization_ratio{{gpu=\"0\",uuid=\"{}\"}} 0.5\n",
        uuid(0)
    )));
    assert!(body.contains(&format!(
        "gpulse_gpu_utilization_ratio{{gpu=\"1\",uuid=\"{}\"}} 0.42\n",
        uuid(1)
    )));
    assert!(body.contains("gpulse_gpu_memory_total_bytes{gpu=\"0\""));
    assert!(
        metric_lines(&body, "gpulse_gpu_power_watts").is_empty(),
        "{body}"
    );
    assert_eq!(metric_lines(&body, "gpulse_gpu_power_limit_watts").len(), 2);
    assert!(body.contains("gpulse_collector_success{collector=\"gpu\"} 1"));
    assert!(body.contains("driver_version=\"550.163.01\""));
}

#[test]
fn a_hung_nvml_call_serves_stale_data_without_blocking_or_piling_up_threads() {
    let fake = FakeNvml::new("gpus=2\n");
    let lib = fake.lib_path();
    let agent = Agent::on_nvml(&lib, "100ms", [("GPULSE_GPU_TIMEOUT", "300ms")]);
    wait_for(&agent, "a first GPU sample", |b| {
        b.contains("gpulse_collector_success{collector=\"gpu\"} 1")
    });
    let threads_before = threads(agent.pid());

    fake.set_config("gpus=2\nhang=nvmlDeviceGetPowerUsage\n");
    let body = wait_for(&agent, "the gpu collector to go stale", |b| {
        b.contains("gpulse_collector_stale{collector=\"gpu\"} 1")
    });
    assert!(body.contains("gpulse_collector_success{collector=\"gpu\"} 0"));
    // The last good sample is still served.
    assert_eq!(metric_lines(&body, "gpulse_gpu_utilization_ratio").len(), 2);
    assert!(body.contains("gpulse_collector_success{collector=\"host\"} 1"));

    // While NVML stays hung, scrapes stay fast and no threads pile up.
    for _ in 0..20 {
        let started = Instant::now();
        agent.get_ok("/metrics");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "/metrics blocked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(threads(agent.pid()), threads_before, "threads piled up");
    let failures_while_hung = agent.get_ok("/metrics");
    assert!(
        failures_while_hung.lines().any(|l| l
            .starts_with("gpulse_collector_failures_total{collector=\"gpu\"}")
            && !l.ends_with(" 0")),
        "{failures_while_hung}"
    );

    fake.set_config("gpus=2\n");
    wait_for(&agent, "recovery", |b| {
        b.contains("gpulse_collector_success{collector=\"gpu\"} 1")
            && b.contains("gpulse_collector_stale{collector=\"gpu\"} 0")
    });
    let log = agent.stderr();
    assert_eq!(log.matches("Collector failing").count(), 1, "{log}");
    assert_eq!(log.matches("Collector recovered").count(), 1, "{log}");
}

#[test]
fn without_nvml_the_agent_serves_host_metrics_says_so_once_and_picks_nvml_up_later() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libnvidia-ml.so.1");
    let agent = Agent::on_nvml(&lib, "100ms", [("GPULSE_GPU_NVML_RETRY_INTERVAL", "200ms")]);
    let body = wait_for(&agent, "several failed gpu cycles", |b| {
        b.lines().any(|l| {
            l.strip_prefix("gpulse_collector_runs_total{collector=\"gpu\"} ")
                .is_some_and(|n| n.parse::<f64>().unwrap_or(0.0) >= 5.0)
        })
    });
    assert!(body.contains("gpulse_collector_success{collector=\"gpu\"} 0"));
    assert!(body.contains("gpulse_collector_stale{collector=\"gpu\"} 0"));
    assert!(
        !body.contains("gpulse_gpu_"),
        "GPU series without NVML:\n{body}"
    );
    assert!(body.contains("gpulse_host_memory_total_bytes"));
    assert_eq!(
        agent.stderr().matches("no NVIDIA GPU found").count(),
        1,
        "{}",
        agent.stderr()
    );

    std::fs::copy(build_fake_nvml(), &lib).unwrap();
    let body = wait_for(&agent, "the GPUs to appear", |b| {
        b.contains("gpulse_gpus{source=\"nvml\"} 2")
    });
    assert!(body.contains("gpulse_collector_success{collector=\"gpu\"} 1"));
}

/// Whether the real-GPU tests run (`GPULSE_REAL_GPU=1`); says SKIPPED when they do not.
fn real_gpu_enabled() -> bool {
    let enabled = std::env::var("GPULSE_REAL_GPU").as_deref() == Ok("1");
    if !enabled {
        crate::skip::not_enabled(
            "GPULSE_REAL_GPU is not 1",
            "run `GPULSE_REAL_GPU=1 cargo test --test it nvml` on a machine with an NVIDIA driver",
        );
    }
    enabled
}

/// Runs only on a machine with an NVIDIA driver, when `GPULSE_REAL_GPU=1`.
#[test]
fn real_gpu_sample_is_plausible() {
    if !real_gpu_enabled() {
        return;
    }
    let mut sampler = NvmlSampler::new(GpuOptions::from_config(&GpuConfig::default(), None));
    let started = Instant::now();
    let s = sampler.cycle().expect("NVML loads on a GPU machine");
    let first = started.elapsed();
    assert!(!s.devices.is_empty());
    for d in &s.devices {
        eprintln!("{:?}", d);
        assert!(!d.lost);
        assert!(d.identity.uuid.starts_with("GPU-") || d.identity.uuid.starts_with("MIG-"));
        assert!(!d.identity.name.is_empty());
        assert!(d.memory.total_bytes.unwrap_or(0) > 0);
        assert!(d.utilization.gpu.is_some_and(|u| (0.0..=1.0).contains(&u)));
        assert!(d.power_watts.is_some_and(|w| w > 0.0));
        assert!(
            d.temperature_gpu_celsius
                .is_some_and(|t| t > 0.0 && t < 120.0)
        );
    }
    let started = Instant::now();
    let n = 20;
    for _ in 0..n {
        sampler.cycle().unwrap();
    }
    eprintln!(
        "real GPU cycle: first {:?}, steady {:?} per cycle over {} GPUs",
        first,
        started.elapsed() / n,
        s.devices.len()
    );
}

/// Each NVML call's own time against the whole cycle, on a real driver (`GPULSE_REAL_GPU=1`):
/// the cycle should be at most 1.1× the sum of its calls, i.e. gpulse's own work between the
/// calls is noise next to NVML. `benches/gpu-check.sh` runs it and keeps the printout.
#[test]
fn real_gpu_cycle_time_is_mostly_nvml_calls() {
    if !real_gpu_enabled() {
        return;
    }
    let mut sampler = NvmlSampler::new(GpuOptions::from_config(&GpuConfig::default(), None));
    sampler.set_call_timing(true);
    // One session, as the agent runs, so GPM's sample and metrics calls are in every cycle.
    let ratios = sampler.session(|s| {
        // The first cycle loads NVML and reads identities; it is not the steady state.
        s.cycle().expect("NVML loads on a GPU machine");
        let mut ratios = Vec::new();
        for _ in 0..10 {
            s.cycle().unwrap();
            let timing = s.last_timing().unwrap();
            let ratio = timing.cycle.as_secs_f64() / timing.calls().as_secs_f64();
            eprintln!(
                "cycle {:?}, calls {:?}, ratio {ratio:.3}: {}",
                timing.cycle,
                timing.calls(),
                timing.summary()
            );
            ratios.push(ratio);
        }
        ratios
    });
    let mut ratios = ratios;
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    assert!(
        median <= 1.1,
        "median cycle / sum of calls {median:.3} > 1.1: {ratios:?}"
    );
}

/// NVML GPM on a real driver (`GPULSE_REAL_GPU=1`): on a Hopper or newer data-center GPU
/// (H100, H200, GH200, B200, ...) every GPM reading is there after a session's second cycle
/// and in range; on older GPUs they are all absent. `benches/gpu-check.sh` keeps the printout.
#[test]
fn real_gpu_gpm_readings_on_hopper_and_newer() {
    if !real_gpu_enabled() {
        return;
    }
    let mut sampler = NvmlSampler::new(GpuOptions::from_config(&GpuConfig::default(), None));
    let s = sampler.session(|s| {
        s.cycle().expect("NVML loads on a GPU machine");
        std::thread::sleep(Duration::from_millis(500));
        s.cycle().unwrap()
    });
    for d in &s.devices {
        let p = &d.profiling;
        eprintln!("gpm gpu {} ({}): {p:?}", d.identity.index, d.identity.name);
        let hopper_or_newer = ["H100", "H200", "H800", "H20", "B200", "B100", "GB200"]
            .iter()
            .any(|m| d.identity.name.contains(m));
        if !hopper_or_newer {
            continue;
        }
        let ratios = [
            p.graphics_engine_active,
            p.sm_active,
            p.sm_occupancy,
            p.dram_active,
        ]
        .into_iter()
        .chain(p.pipes.iter().copied());
        for (i, r) in ratios.enumerate() {
            let r = r.unwrap_or_else(|| panic!("GPM reading {i} missing on {}", d.identity.name));
            assert!((0.0..=1.0).contains(&r), "GPM reading {i} = {r}");
        }
        assert!(
            d.pcie.tx_bytes_per_second.is_some(),
            "GPM PCIe rate missing"
        );
    }
}

/// Readings that do not change while the driver runs (max clocks, temperature thresholds,
/// supported clock-event reasons, fan count) are read once and kept for `gpu.static_interval`:
/// a max clock changed under a running sampler shows only once they are read again.
#[test]
fn static_readings_are_kept_for_the_static_interval() {
    let fake = FakeNvml::new("gpus=1\n");
    let sm = |s: &GpuSample| {
        let clocks = spelled(&s.devices[0].max_clocks_hertz);
        clocks.iter().find(|(c, _)| *c == "sm").map(|(_, hz)| *hz)
    };
    for (interval, after) in [
        (Duration::from_secs(3600), 1980e6),
        (Duration::from_millis(1), 1000e6),
    ] {
        fake.set_config("gpus=1\n");
        let mut opts = options(&fake.lib_path());
        opts.static_interval = interval;
        let mut sampler = NvmlSampler::new(opts);
        assert_eq!(sm(&sampler.cycle().unwrap()), Some(1980e6));
        fake.set_config("gpus=1\ngpu0.max_clock_sm=1000\n");
        std::thread::sleep(Duration::from_millis(5));
        let second = sampler.cycle().unwrap();
        assert_eq!(sm(&second), Some(after), "static_interval {interval:?}");
        assert_eq!(second.devices[0].temperature_thresholds.len(), 4);
        assert!(second.devices[0].throttle.is_some());
    }
}
