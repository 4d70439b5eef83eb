//! `gpulse scan`: one GPU cycle and one host cycle, health evaluated once, a verdict and an
//! exit code.
//!
//! There is no history: the window is this one sample, so a hardware slowdown active right
//! now counts as 100 % of the throttle window (degraded), and no Xid is known (Xids need the
//! running agent's capture). Exit codes: 0 healthy, 1 degraded (or no GPU without
//! `--allow-no-gpu`), 3 unhealthy; 2 stays the usage/config error.

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crate::collect::gpu::{GpuOptions, NvmlSampler};
use crate::collect::host::HostSampler;
use crate::config::Config;
use crate::health::{self, GpuStatus, NodeHealth, State};
use crate::model::{GpuWindowPoint, HostSample, XidLog};

use super::exit::{DEGRADED as EXIT_DEGRADED, OK, UNHEALTHY as EXIT_UNHEALTHY};

/// What one scan found.
#[derive(Debug)]
pub struct ScanReport {
    pub health: NodeHealth,
    /// Why no GPU could be read, when none could.
    pub no_gpu: Option<String>,
    pub host: Option<HostSample>,
}

/// Runs one GPU cycle (on its own thread, bounded by `gpu.timeout`) and one host cycle, then
/// evaluates health once.
/// `policy` is the one [`crate::app::Parts::load`] built from `config.health`.
pub fn scan(config: &Config, policy: &health::Policy) -> ScanReport {
    let (sample, no_gpu) = if config.gpu.enabled {
        match gpu_cycle(config) {
            Ok(sample) if sample.devices.is_empty() => {
                (None, Some("NVML reports no GPU".to_owned()))
            }
            Ok(sample) => (Some(sample), None),
            Err(why) => (None, Some(why)),
        }
    } else {
        (
            None,
            Some("GPU collection is off (gpu.enabled = false)".to_owned()),
        )
    };
    let host = config
        .host
        .enabled
        .then(|| HostSampler::new(config.host.clone()).cycle().ok())
        .flatten();
    let window: Vec<GpuWindowPoint> = sample.iter().map(GpuWindowPoint::from).collect();
    let xid = XidLog::default();
    let now = sample.as_ref().map_or_else(SystemTime::now, |s| s.taken_at);
    let input = health::Input {
        status: if sample.is_some() {
            GpuStatus::Sampled
        } else {
            GpuStatus::NoGpu
        },
        sample: sample.as_ref(),
        window: &window,
        xid: &xid,
    };
    let health = health::evaluate(&NodeHealth::initial(), &input, policy, now);
    ScanReport {
        health,
        no_gpu,
        host,
    }
}

fn gpu_cycle(config: &Config) -> Result<crate::model::GpuSample, String> {
    let options = GpuOptions::from_config(&config.gpu, config.nvml_library());
    let timeout = config.gpu.timeout.0.max(Duration::from_secs(1));
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("gpulse-scan-nvml".to_owned())
        .spawn(move || {
            let mut sampler = NvmlSampler::new(options);
            let _ = tx.send(sampler.cycle());
        })
        .map_err(|e| format!("cannot start the NVML thread: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(sample)) => Ok(sample),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("NVML did not answer within {timeout:?}")),
    }
}

/// The exit code for a report.
pub fn exit_code(report: &ScanReport, allow_no_gpu: bool) -> u8 {
    if report.no_gpu.is_some() {
        return if allow_no_gpu { OK } else { EXIT_DEGRADED };
    }
    match report.health.state {
        State::Healthy => OK,
        State::Degraded | State::Unknown => EXIT_DEGRADED,
        State::Unhealthy => EXIT_UNHEALTHY,
    }
}

/// The human table: one line per GPU, then the node.
pub fn render_table(report: &ScanReport) -> String {
    let mut out = String::new();
    if let Some(why) = &report.no_gpu {
        let _ = writeln!(out, "No GPU: {why}");
    }
    if !report.health.gpus.is_empty() {
        let _ = writeln!(
            out,
            "{:<4} {:<28} {:<10} {:<20} REASONS",
            "GPU", "NAME", "STATE", "ACTION"
        );
    }
    for g in &report.health.gpus {
        let reasons: Vec<String> = g.reasons.iter().map(|r| r.code.label()).collect();
        let reasons = if reasons.is_empty() {
            "-".to_owned()
        } else {
            reasons.join(",")
        };
        let _ = writeln!(
            out,
            "{:<4} {:<28} {:<10} {:<20} {reasons}",
            g.index,
            truncate(&g.name, 28),
            g.state.as_str(),
            g.action.as_str(),
        );
    }
    if let Some(h) = &report.host {
        let _ = writeln!(
            out,
            "host: {} CPUs, {:.1} GiB of {:.1} GiB memory available",
            h.cpu_count,
            h.memory_available_bytes as f64 / f64::from(1u32 << 30),
            h.memory_total_bytes as f64 / f64::from(1u32 << 30),
        );
    }
    let node_state = if report.no_gpu.is_some() {
        "no_gpu"
    } else {
        report.health.state.as_str()
    };
    let _ = writeln!(
        out,
        "node: {node_state} (action: {})",
        report.health.action.as_str()
    );
    out
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
