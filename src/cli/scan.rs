//! `gpulse scan`: one GPU cycle and one host cycle, health evaluated once, a verdict and an
//! exit code.
//!
//! There is no history: the window is this one sample, so a hardware slowdown active right
//! now counts as 100 % of the throttle window (degraded), and no Xid is known (Xids need the
//! running agent's capture). Exit codes: 0 healthy, 1 degraded (or no GPU without
//! `--allow-no-gpu`), 3 unhealthy; 2 stays the usage/config error.
//!
//! An NVML cycle that misses `gpu.timeout` is not "no GPU": NVML is there and does not answer
//! (a wedged driver), so the node is unhealthy with reason `nvml_hung` and `--allow-no-gpu`
//! does not excuse it. A scan cannot wait `health.nvml_stale_after` like the agent does: its
//! one missed deadline is all the evidence it will get.

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crate::collect::gpu::{GpuOptions, NvmlSampler};
use crate::collect::host::HostSampler;
use crate::collect::{CollectError, ErrorKind};
use crate::config::Config;
use crate::health::{self, GpuStatus, NodeHealth, State};
use crate::model::{GpuWindowPoint, HostSample, XidLog};

use super::exit::{DEGRADED as EXIT_DEGRADED, OK, UNHEALTHY as EXIT_UNHEALTHY};

/// What one scan found.
#[derive(Debug)]
pub struct ScanReport {
    pub health: NodeHealth,
    /// Why no GPU could be read, when none could (NVML missing, no device, collection off).
    pub no_gpu: Option<String>,
    /// NVML did not answer within `gpu.timeout`: why, for people.
    pub nvml_hung: Option<String>,
    pub host: Option<HostSample>,
}

/// Runs one GPU cycle (on its own thread, bounded by `gpu.timeout`) and one host cycle, then
/// evaluates health once.
/// `policy` is the one [`crate::app::Parts::load`] built from `config.health`.
pub fn scan(config: &Config, policy: &health::Policy) -> ScanReport {
    let timeout = scan_timeout(config);
    let mut nvml_hung = None;
    let (sample, no_gpu) = if config.gpu.enabled {
        match gpu_cycle(config, timeout) {
            Ok(sample) if sample.devices.is_empty() => {
                (None, Some("NVML reports no GPU".to_owned()))
            }
            Ok(sample) => (Some(sample), None),
            Err(error) if error.kind == ErrorKind::Deadline => {
                nvml_hung = Some(error.message);
                (None, None)
            }
            Err(error) => (None, Some(error.to_string())),
        }
    } else {
        (
            None,
            Some("GPU collection is off (gpu.enabled = false)".to_owned()),
        )
    };
    // The scan's one missed deadline is the whole hang it can see (see the module docs).
    let mut policy = policy.clone();
    policy.nvml_stale_after = policy.nvml_stale_after.min(timeout);
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
        nvml_stuck: nvml_hung.is_some().then_some(timeout),
        clears: &[],
    };
    let health = health::evaluate(&NodeHealth::initial(), &input, &policy, now);
    ScanReport {
        health,
        no_gpu,
        nvml_hung,
        host,
    }
}

/// The scan's NVML deadline: `gpu.timeout`, at least 1 s (NVML's first init can be slow).
fn scan_timeout(config: &Config) -> Duration {
    config.gpu.timeout.0.max(Duration::from_secs(1))
}

fn gpu_cycle(config: &Config, timeout: Duration) -> Result<crate::model::GpuSample, CollectError> {
    let options = GpuOptions::from_config(&config.gpu, config.nvml_library());
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("gpulse-scan-nvml".to_owned())
        .spawn(move || {
            let mut sampler = NvmlSampler::new(options);
            let _ = tx.send(sampler.cycle());
        })
        .map_err(|e| {
            CollectError::new(
                ErrorKind::Failed,
                format!("cannot start the NVML thread: {e}"),
            )
        })?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        // The thread stays blocked inside NVML; the process exits without waiting for it.
        Err(mpsc::RecvTimeoutError::Timeout) => Err(CollectError::new(
            ErrorKind::Deadline,
            format!("NVML did not answer within {timeout:?} (gpu.timeout): the driver is hung"),
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(CollectError::new(
            ErrorKind::Failed,
            "the NVML thread stopped without a result",
        )),
    }
}

/// The exit code for a report.
pub fn exit_code(report: &ScanReport, allow_no_gpu: bool) -> u8 {
    if report.nvml_hung.is_some() {
        // Health already says unhealthy (`nvml_hung`); never 0, whatever the policy says.
        return match report.health.state {
            State::Unhealthy => EXIT_UNHEALTHY,
            _ => EXIT_DEGRADED,
        };
    }
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
    if let Some(why) = &report.nvml_hung {
        let _ = writeln!(out, "NVML hung: {why}");
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

/// node-problem-detector's custom-plugin output limit (its `maxOutputLength` default): the
/// message is cut to it.
pub const NPD_MAX_OUTPUT: usize = 80;

/// The problems of a report, most severe GPU first: `GPU 3 unhealthy: xid_79,gpu_lost`.
fn problems(report: &ScanReport) -> Vec<String> {
    let mut gpus: Vec<&crate::health::GpuHealth> = report
        .health
        .gpus
        .iter()
        .filter(|g| matches!(g.state, State::Degraded | State::Unhealthy))
        .collect();
    gpus.sort_by(|a, b| b.state.cmp(&a.state).then(a.index.cmp(&b.index)));
    let mut out: Vec<String> = Vec::new();
    if let Some(why) = &report.nvml_hung {
        out.push(format!("NVML hung: {why}"));
    }
    for g in gpus {
        let reasons: Vec<String> = g.reasons.iter().map(|r| r.code.label()).collect();
        out.push(format!(
            "GPU {} {}: {}",
            g.index,
            g.state,
            reasons.join(",")
        ));
    }
    if out.is_empty() && matches!(report.health.state, State::Degraded | State::Unhealthy) {
        let reasons: Vec<String> = report
            .health
            .reasons
            .iter()
            .map(|r| r.code.label())
            .collect();
        out.push(format!(
            "node {}: {}",
            report.health.state,
            reasons.join(",")
        ));
    }
    out
}

/// `--format npd`: node-problem-detector's custom plugin protocol — exit 0 OK, 1 a problem,
/// 2 unknown (no GPU could be read, unless `--allow-no-gpu`), and one line of at most
/// [`NPD_MAX_OUTPUT`] bytes on stdout.
pub fn render_npd(report: &ScanReport, allow_no_gpu: bool) -> (String, u8) {
    let problems = problems(report);
    let (mut line, code) = if !problems.is_empty() {
        (problems.join("; "), 1)
    } else if let Some(why) = &report.no_gpu {
        (format!("no GPU: {why}"), if allow_no_gpu { 0 } else { 2 })
    } else {
        (format!("{} GPUs healthy", report.health.gpus.len()), 0)
    };
    if line.len() > NPD_MAX_OUTPUT {
        let mut cut = NPD_MAX_OUTPUT - 3;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    (format!("{line}\n"), code)
}

/// `--format nagios`: the Nagios plugin protocol — `GPULSE OK|WARNING|CRITICAL|UNKNOWN - text |
/// perfdata`, exit 0 OK, 1 WARNING (degraded), 2 CRITICAL (unhealthy, or NVML hung), 3 UNKNOWN
/// (no GPU could be read, unless `--allow-no-gpu`).
pub fn render_nagios(report: &ScanReport, allow_no_gpu: bool) -> (String, u8) {
    let count = |state: State| {
        report
            .health
            .gpus
            .iter()
            .filter(|g| g.state == state)
            .count()
    };
    let (healthy, degraded, unhealthy) = (
        count(State::Healthy),
        count(State::Degraded),
        count(State::Unhealthy),
    );
    let problems = problems(report);
    let (status, code, text) =
        if report.nvml_hung.is_some() || unhealthy > 0 || report.health.state == State::Unhealthy {
            ("CRITICAL", 2, problems.join("; "))
        } else if degraded > 0 || report.health.state == State::Degraded {
            ("WARNING", 1, problems.join("; "))
        } else if let Some(why) = &report.no_gpu {
            if allow_no_gpu {
                ("OK", 0, format!("no GPU: {why}"))
            } else {
                ("UNKNOWN", 3, format!("no GPU: {why}"))
            }
        } else {
            ("OK", 0, format!("{healthy} GPUs healthy"))
        };
    let gpus = report.health.gpus.len();
    // Text and perfdata are one line each: a `|` in a reason would break the protocol.
    let text = text.replace('|', "/").replace('\n', " ");
    (
        format!(
            "GPULSE {status} - {text} | gpus={gpus};;;0 healthy={healthy};;;0 degraded={degraded};1;;0 unhealthy={unhealthy};;1;0\n"
        ),
        code,
    )
}

#[cfg(test)]
mod format_tests {
    use super::*;
    use crate::health::{Action, GpuHealth, Reason, ReasonCode};

    fn report(states: &[State], no_gpu: bool) -> ScanReport {
        let at = SystemTime::UNIX_EPOCH;
        let gpus: Vec<GpuHealth> = states
            .iter()
            .enumerate()
            .map(|(i, s)| GpuHealth {
                index: i as u32,
                uuid: format!("GPU-{i}"),
                name: "H100".to_owned(),
                state: *s,
                action: Action::None,
                since: at,
                reasons: match s {
                    State::Unhealthy => vec![Reason {
                        code: ReasonCode::Xid(79),
                        state: *s,
                        action: Action::Reboot,
                        detail: String::new(),
                        since: at,
                        last_seen: at,
                    }],
                    State::Degraded => vec![Reason {
                        code: ReasonCode::HwSlowdown,
                        state: *s,
                        action: Action::None,
                        detail: String::new(),
                        since: at,
                        last_seen: at,
                    }],
                    _ => Vec::new(),
                },
                nvlinks_seen_active: 0,
            })
            .collect();
        let state = states.iter().copied().max().unwrap_or(State::Unknown);
        ScanReport {
            health: NodeHealth {
                state,
                gpus,
                ..NodeHealth::initial()
            },
            no_gpu: no_gpu.then(|| "NVML: libnvidia-ml.so.1 not found".to_owned()),
            nvml_hung: None,
            host: None,
        }
    }

    #[test]
    fn npd_follows_the_custom_plugin_protocol() {
        let (line, code) = render_npd(&report(&[State::Healthy, State::Healthy], false), false);
        assert_eq!((line.as_str(), code), ("2 GPUs healthy\n", 0));
        let (line, code) = render_npd(
            &report(&[State::Healthy, State::Degraded, State::Unhealthy], false),
            false,
        );
        assert_eq!(code, 1);
        assert_eq!(
            line,
            "GPU 2 unhealthy: xid_79; GPU 1 degraded: hw_slowdown\n"
        );
        assert_eq!(render_npd(&report(&[], true), false).1, 2);
        assert_eq!(render_npd(&report(&[], true), true).1, 0);
        // Many problems are cut to the plugin's output limit.
        let many = report(&[State::Unhealthy; 8], false);
        let (line, _) = render_npd(&many, false);
        assert!(line.trim_end().len() <= NPD_MAX_OUTPUT, "{line}");
        assert!(line.trim_end().ends_with("..."));
    }

    #[test]
    fn nagios_maps_states_and_carries_perfdata() {
        let (line, code) = render_nagios(&report(&[State::Healthy; 2], false), false);
        assert_eq!(code, 0);
        assert_eq!(
            line,
            "GPULSE OK - 2 GPUs healthy | gpus=2;;;0 healthy=2;;;0 degraded=0;1;;0 unhealthy=0;;1;0\n"
        );
        let (line, code) = render_nagios(&report(&[State::Healthy, State::Degraded], false), false);
        assert_eq!(code, 1);
        assert!(
            line.starts_with("GPULSE WARNING - GPU 1 degraded: hw_slowdown |"),
            "{line}"
        );
        let (line, code) =
            render_nagios(&report(&[State::Unhealthy, State::Degraded], false), false);
        assert_eq!(code, 2);
        assert!(
            line.starts_with("GPULSE CRITICAL - GPU 0 unhealthy: xid_79; GPU 1 degraded"),
            "{line}"
        );
        assert_eq!(render_nagios(&report(&[], true), false).1, 3);
        assert_eq!(render_nagios(&report(&[], true), true).1, 0);
        let mut hung = report(&[State::Healthy], false);
        hung.nvml_hung = Some("no answer in 2s".to_owned());
        assert_eq!(render_nagios(&hung, false).1, 2);
        assert_eq!(render_npd(&hung, false).1, 1);
    }
}
