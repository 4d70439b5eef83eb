//! GPU and node health states, as pure functions of the store's data.
//!
//! * `xid_policy`: what each Xid means (NVIDIA's catalog as data) and `[health]`'s overrides.
//! * `rules`: the causes one GPU shows now (lost, ECC, row remap, temperature, slowdown, Xids)
//!   and how causes merge into held reasons.
//!
//! [`evaluate`] turns the previous [`NodeHealth`], the latest GPU sample, the GPU window and the
//! Xid log into the next [`NodeHealth`]. It does no I/O, reads no clock (`now` is a parameter)
//! and is not async, so every rule is testable with a table of inputs. The runtime's health
//! task (`app::health_task`) calls it when its inputs change; `gpulse scan` calls it once.
//!
//! * States, least to most severe: `healthy`, `unknown` (no sample yet), `degraded`,
//!   `unhealthy`. A GPU's state is its most severe active reason; the node's is its worst GPU.
//! * Every reason has a bounded code (`xid_79`, `uncorrectable_ecc`, …) and a suggested action
//!   (`none` < `restart_app` < `reset_gpu` < `reboot` < `hardware_inspection`); a GPU suggests
//!   its most severe one.
//! * Stickiness: a reason stays active for `hold_time` after its cause was last seen, so a
//!   GPU does not flap back to healthy on the next clean sample.
//! * The Xid policy is data: [`XID_POLICY`], built from NVIDIA's Xid catalog (Ampere and
//!   newer), overridable per Xid with `health.xid_overrides`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::model::{GpuSample, GpuWindowPoint, LabelValue, XidLog};

/// Clock-event reason bits that count as hardware slowdown: hw_slowdown, hw_thermal_slowdown,
/// hw_power_brake_slowdown.
mod rules;
mod xid_policy;

pub use rules::hw_slowdown_share;
use rules::{device_causes, gpu_health, merge_reasons, xid_is_for};
pub use xid_policy::{Policy, Severity, UNKNOWN_XID, XID_POLICY, XidRule, xid_description};

pub const HW_SLOWDOWN_BITS: u64 = 0x8 | 0x40 | 0x80;

/// State transitions kept for /v1/health, newest last.
pub const MAX_TRANSITIONS: usize = 64;

/// Reasons kept per GPU (a bound on the label sets of `gpulse_gpu_health_reason`).
pub const MAX_REASONS: usize = 32;

/// A health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Healthy,
    /// Initializing: the GPU collector has not finished a cycle, or there is no GPU to judge.
    Unknown,
    Degraded,
    Unhealthy,
}

impl State {
    /// Every state, for exporters that render one series per state.
    pub const ALL: [State; 4] = [
        State::Healthy,
        State::Degraded,
        State::Unhealthy,
        State::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unknown => "unknown",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// The same spelling on both exporters.
impl LabelValue for State {
    fn prom(self) -> &'static str {
        self.as_str()
    }

    fn otel(self) -> &'static str {
        self.as_str()
    }
}

/// The same spelling on both exporters.
impl LabelValue for Action {
    fn prom(self) -> &'static str {
        self.as_str()
    }

    fn otel(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A suggested action, least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    None,
    RestartApp,
    ResetGpu,
    Reboot,
    HardwareInspection,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::RestartApp => "restart_app",
            Self::ResetGpu => "reset_gpu",
            Self::Reboot => "reboot",
            Self::HardwareInspection => "hardware_inspection",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "restart_app" => Self::RestartApp,
            "reset_gpu" => Self::ResetGpu,
            "reboot" => Self::Reboot,
            "hardware_inspection" => Self::HardwareInspection,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bounded reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    GpuLost,
    UncorrectableEcc,
    RowRemapFailure,
    RowRemapPending,
    RetiredPagesPending,
    RecoveryAction,
    HwSlowdown,
    OverSlowdownTemperature,
    /// An NVLink that was active went inactive.
    NvLinkDown,
    Xid(u64),
    /// NVML has not answered within `gpu.timeout` for `health.nvml_stale_after`: on every
    /// GPU of the last sample, or on the node when none was ever read.
    NvmlHung,
    /// Node only: no GPU could be read (NVML missing, or the GPU collector is off).
    NoGpu,
    /// Node only: the GPU collector has not finished a cycle.
    Initializing,
}

impl ReasonCode {
    /// The code as a label value (`xid_79`, `uncorrectable_ecc`, …).
    pub fn label(self) -> String {
        match self {
            Self::Xid(n) => format!("xid_{n}"),
            other => other.static_label().to_owned(),
        }
    }

    fn static_label(self) -> &'static str {
        match self {
            Self::GpuLost => "gpu_lost",
            Self::UncorrectableEcc => "uncorrectable_ecc",
            Self::RowRemapFailure => "row_remap_failure",
            Self::RowRemapPending => "row_remap_pending",
            Self::RetiredPagesPending => "retired_pages_pending",
            Self::RecoveryAction => "recovery_action",
            Self::HwSlowdown => "hw_slowdown",
            Self::OverSlowdownTemperature => "over_slowdown_temperature",
            Self::NvLinkDown => "nvlink_down",
            Self::Xid(_) => "xid",
            Self::NvmlHung => "nvml_hung",
            Self::NoGpu => "no_gpu",
            Self::Initializing => "initializing",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Xid(n) => write!(f, "xid_{n}"),
            other => f.write_str(other.static_label()),
        }
    }
}

/// One active reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub code: ReasonCode,
    pub state: State,
    pub action: Action,
    /// For people: what the cause is (never a metric label).
    pub detail: String,
    /// When this reason became active.
    pub since: SystemTime,
    /// When its cause was last observed; the reason is dropped `hold_time` after this.
    pub last_seen: SystemTime,
}

/// The health of one GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuHealth {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub state: State,
    /// The most severe action of the reasons.
    pub action: Action,
    /// When `state` was entered.
    pub since: SystemTime,
    /// Most severe first.
    pub reasons: Vec<Reason>,
    /// NVLinks (bit = link number) seen active since the agent started: a link that was
    /// active and is inactive now is a reason (`nvlink_down`); one never active is unused.
    pub nvlinks_seen_active: u64,
}

/// A change of state of a GPU (or of the node, `gpu: None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub at: SystemTime,
    pub gpu: Option<u32>,
    pub uuid: String,
    pub from: State,
    pub to: State,
    /// Reason codes of the new state.
    pub reasons: Vec<String>,
}

/// The health of the node and every GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    pub state: State,
    pub action: Action,
    pub since: Option<SystemTime>,
    /// Node-level reasons: `initializing`, `no_gpu`, and Xids that name no GPU.
    pub reasons: Vec<Reason>,
    pub gpus: Vec<GpuHealth>,
    /// When this was evaluated; `None` for the initial value.
    pub evaluated_at: Option<SystemTime>,
    /// Recent transitions, oldest first, at most [`MAX_TRANSITIONS`]. Shared: an evaluation
    /// without a change (nearly every one) passes the list on instead of copying it.
    pub transitions: Arc<Vec<Transition>>,
}

impl Default for NodeHealth {
    fn default() -> Self {
        Self::initial()
    }
}

impl NodeHealth {
    /// Before any evaluation: unknown, nothing known.
    pub fn initial() -> Self {
        Self {
            state: State::Unknown,
            action: Action::None,
            since: None,
            reasons: Vec::new(),
            gpus: Vec::new(),
            evaluated_at: None,
            transitions: Arc::default(),
        }
    }

    /// The GPU with this index.
    pub fn gpu(&self, index: u32) -> Option<&GpuHealth> {
        self.gpus.iter().find(|g| g.index == index)
    }
}

/// Where the GPU collector stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuStatus {
    /// The collector has not finished a cycle yet.
    Initializing,
    /// It ran but no GPU could be read (NVML missing), or it is turned off.
    NoGpu,
    /// A sample is at hand.
    Sampled,
}

/// What one evaluation reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub status: GpuStatus,
    /// The latest GPU sample (`None` unless `status` is `Sampled`).
    pub sample: Option<&'a GpuSample>,
    /// GPU window points, oldest first (may include the sample's own point).
    pub window: &'a [GpuWindowPoint],
    pub xid: &'a XidLog,
    /// How long every GPU cycle has missed its deadline (NVML hung), if it does now
    /// (`Snapshot::gpu_stuck_for`); `None` when the last cycle ended in time.
    pub nvml_stuck: Option<Duration>,
    /// Operator clears (`gpulse health clear`), oldest first: reasons whose cause was last
    /// seen at or before a clear are dropped; causes seen after it count again.
    pub clears: &'a [Clear],
}

/// Clears kept (in the store, for the evaluation and the event log).
pub const MAX_CLEARS: usize = 64;

/// An operator's clear of the sticky reasons of one GPU (or of every GPU and the node) after a
/// repair, recorded as the `health_cleared` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clear {
    pub at: SystemTime,
    /// The GPU's index and UUID; `None` clears every GPU and the node.
    pub gpu: Option<(u32, String)>,
    /// Who asked, for the record (the API client's address).
    pub by: String,
}

impl Input<'_> {
    /// The latest clear that applies to GPU `index` (`None`: the node's, i.e. an `all` clear).
    pub fn cleared_at(&self, index: Option<u32>) -> Option<SystemTime> {
        self.clears
            .iter()
            .filter(|c| match (&c.gpu, index) {
                (None, _) => true,
                (Some((gpu, _)), Some(index)) => *gpu == index,
                (Some(_), None) => false,
            })
            .map(|c| c.at)
            .max()
    }
}

/// `reasons` without those whose cause was last seen at or before `cleared`.
fn after_clear(reasons: &[Reason], cleared: Option<SystemTime>) -> Vec<Reason> {
    reasons
        .iter()
        .filter(|r| cleared.is_none_or(|c| r.last_seen > c))
        .cloned()
        .collect()
}

/// A cause observed now: (code, state, action, detail, last seen).
pub(crate) type Cause = (ReasonCode, State, Action, String, SystemTime);

/// Evaluates the next health from the previous one. Pure: `now` is the evaluation time.
pub fn evaluate(
    previous: &NodeHealth,
    input: &Input<'_>,
    policy: &Policy,
    now: SystemTime,
) -> NodeHealth {
    let hold_from = now
        .checked_sub(policy.hold_time)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut gpus: Vec<GpuHealth> =
        Vec::with_capacity(input.sample.map_or(0, |s| s.devices.len()) + previous.gpus.len());
    let mut node_causes: Vec<Cause> = Vec::new();
    let hung = nvml_hung(input.nvml_stuck, policy, now);
    let node_cleared = input.cleared_at(None);
    let node_hold_from = hold_from.max(node_cleared.unwrap_or(SystemTime::UNIX_EPOCH));
    match (input.status, input.sample) {
        (GpuStatus::Sampled, Some(sample)) => {
            let hw_slowdown = rules::hw_slowdown_shares(input.window, policy.throttle_window, now);
            for device in &sample.devices {
                // After a clear, only what was seen after it counts: Xids from the log after
                // the clear, held reasons last seen after it, and every cause observed now.
                let cleared = input.cleared_at(Some(device.identity.index));
                let gpu_hold_from = hold_from.max(cleared.unwrap_or(SystemTime::UNIX_EPOCH));
                let share = rules::share_of(&hw_slowdown, device.identity.index);
                let mut causes = device_causes(device, input, policy, now, gpu_hold_from, share);
                // The sample is the last one NVML gave: its own causes still stand (held), and
                // the hang says nothing newer about this GPU can be known.
                causes.extend(hung.clone());
                let cleaned;
                let prev = match (previous.gpu(device.identity.index), cleared) {
                    (Some(p), Some(_)) => {
                        cleaned = GpuHealth {
                            reasons: after_clear(&p.reasons, cleared),
                            ..p.clone()
                        };
                        Some(&cleaned)
                    }
                    (p, None) => p,
                    (None, Some(_)) => None,
                };
                let seen = prev.map_or(0, |p| p.nvlinks_seen_active);
                let (down_cause, seen) = rules::nvlinks_down(device, seen, now);
                causes.extend(down_cause);
                let mut health = gpu_health(
                    device.identity.index,
                    &device.identity.uuid,
                    &device.identity.name,
                    prev,
                    causes,
                    policy,
                    now,
                );
                health.nvlinks_seen_active = seen;
                gpus.push(health);
            }
            // A GPU seen before and missing now has fallen off the bus (device count drop).
            for prev in &previous.gpus {
                if gpus.iter().any(|g| g.index == prev.index) {
                    continue;
                }
                let causes = vec![(
                    ReasonCode::GpuLost,
                    State::Unhealthy,
                    Action::Reboot,
                    "missing from the device list".to_owned(),
                    now,
                )];
                gpus.push(gpu_health(
                    prev.index,
                    &prev.uuid,
                    &prev.name,
                    Some(prev),
                    causes,
                    policy,
                    now,
                ));
            }
            gpus.sort_by_key(|g| g.index);
            if gpus.is_empty() {
                node_causes.extend(hung.clone());
            }
            // Xids that name no GPU of this sample count for the node.
            for c in &input.xid.counts {
                let known = sample.devices.iter().any(|d| xid_is_for(c, d));
                if known || c.last_seen <= node_hold_from {
                    continue;
                }
                let (severity, action, description) =
                    policy.xid_count(c, input.xid, node_hold_from);
                if let Some(state) = severity.state() {
                    node_causes.push((
                        ReasonCode::Xid(c.xid),
                        state,
                        action,
                        description.to_owned(),
                        c.last_seen,
                    ));
                }
            }
        }
        // Hung before any GPU was read: no GPU to carry the reason, so the node does.
        _ if hung.is_some() => node_causes.extend(hung.clone()),
        (GpuStatus::Initializing, _) => node_causes.push((
            ReasonCode::Initializing,
            State::Unknown,
            Action::None,
            "the GPU collector has not finished a cycle".to_owned(),
            now,
        )),
        _ => node_causes.push((
            ReasonCode::NoGpu,
            State::Unknown,
            Action::None,
            "no GPU could be read (NVML missing or GPU collection off)".to_owned(),
            now,
        )),
    }
    let node_previous = after_clear(&previous.reasons, node_cleared);
    let node_reasons = merge_reasons(&node_previous, node_causes, policy.hold_time, now, true);
    let mut state = node_reasons.iter().map(|r| r.state).max();
    for g in &gpus {
        state = state.max(Some(g.state));
    }
    // No reason and no GPU with a state worse than healthy: healthy.
    let state = state.unwrap_or(State::Healthy);
    let action = node_reasons
        .iter()
        .map(|r| r.action)
        .chain(gpus.iter().map(|g| g.action))
        .max()
        .unwrap_or(Action::None);

    let mut new_transitions = Vec::new();
    for g in &gpus {
        let from = previous.gpu(g.index).map_or(State::Unknown, |p| p.state);
        if from != g.state {
            new_transitions.push(Transition {
                at: now,
                gpu: Some(g.index),
                uuid: g.uuid.clone(),
                from,
                to: g.state,
                reasons: g.reasons.iter().map(|r| r.code.label()).collect(),
            });
        }
    }
    if previous.state != state || previous.evaluated_at.is_none() {
        new_transitions.push(Transition {
            at: now,
            gpu: None,
            uuid: String::new(),
            from: previous.state,
            to: state,
            reasons: node_reasons.iter().map(|r| r.code.label()).collect(),
        });
    }
    let transitions = if new_transitions.is_empty() {
        Arc::clone(&previous.transitions)
    } else {
        let mut all = Vec::clone(&previous.transitions);
        all.append(&mut new_transitions);
        if all.len() > MAX_TRANSITIONS {
            let excess = all.len() - MAX_TRANSITIONS;
            all.drain(..excess);
        }
        Arc::new(all)
    };
    let since = match previous.since {
        Some(since) if previous.state == state => Some(since),
        _ => Some(now),
    };
    NodeHealth {
        state,
        action,
        since,
        reasons: node_reasons,
        gpus,
        evaluated_at: Some(now),
        transitions,
    }
}

/// The `nvml_hung` cause once NVML has been stuck for `policy.nvml_stale_after`.
///
/// Unhealthy, not unknown: a driver that stops answering NVML usually blocks CUDA too, and
/// a wedged driver needs a node reboot to recover (the Kubernetes device plugin and DCGM
/// also take a failing NVML as an unhealthy device). `unknown` ranks below `degraded` and
/// would keep a node that runs nothing in the schedulable pool.
fn nvml_hung(stuck: Option<Duration>, policy: &Policy, now: SystemTime) -> Option<Cause> {
    let stuck = stuck.filter(|s| *s >= policy.nvml_stale_after)?;
    Some((
        ReasonCode::NvmlHung,
        State::Unhealthy,
        Action::Reboot,
        format!(
            "NVML has not answered within gpu.timeout for {}s; GPU readings are stale and the driver is likely wedged",
            stuck.as_secs()
        ),
        now,
    ))
}

#[cfg(test)]
mod tests;
