//! GPU and node health states, as pure functions of the store's data.
//!
//! [`evaluate`] turns the previous [`NodeHealth`], the latest GPU sample, the GPU window and the
//! Xid log into the next [`NodeHealth`]. It does no I/O, reads no clock (`now` is a parameter)
//! and is not async, so every rule is testable with a table of inputs. The runtime
//! (`app.rs`) calls it every GPU interval; `gpulse scan` calls it once.
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

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::config::{ConfigError, HealthConfig};
use crate::model::{
    EccKind, EccScope, GpuDevice, GpuSample, GpuWindowPoint, LabelValue, TempThreshold, XidCount,
    XidLog,
};

/// Clock-event reason bits that count as hardware slowdown: hw_slowdown, hw_thermal_slowdown,
/// hw_power_brake_slowdown.
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

/// What an Xid means for the GPU's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Informational: recorded in the Xid log, no effect on the state.
    Ignore,
    Degraded,
    Unhealthy,
}

impl Severity {
    fn state(self) -> Option<State> {
        match self {
            Self::Ignore => None,
            Self::Degraded => Some(State::Degraded),
            Self::Unhealthy => Some(State::Unhealthy),
        }
    }
}

/// One row of the Xid policy: Xids `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XidRule {
    pub first: u64,
    pub last: u64,
    pub severity: Severity,
    pub action: Action,
    pub description: &'static str,
}

const fn rule(
    first: u64,
    last: u64,
    severity: Severity,
    action: Action,
    description: &'static str,
) -> XidRule {
    XidRule {
        first,
        last,
        severity,
        action,
        description,
    }
}

use Action::{HardwareInspection, Reboot, ResetGpu, RestartApp};
use Severity::{Degraded as D, Ignore as I, Unhealthy as U};

/// The Xid policy, from NVIDIA's Xid catalog "Resolution Bucket (Immediate Action)"
/// (docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html; `gpu-exporters.md` §7.1).
///
/// * RESET_GPU → unhealthy / reset_gpu; RESTART_BM (79) and RESTART_VM (151) → reboot;
///   UPDATE_SWFW (78) → reboot (a driver or firmware update needs one).
/// * WORKFLOW_XID_48 (double-bit ECC): unhealthy / hardware_inspection. The workflow is a
///   reset (which remaps the row) followed by a check of the remapped-rows and retired-pages
///   counters; NVIDIA Health Validation lists it as `reset_gpu → service_required`. We suggest
///   the more severe step, since a reset alone hides a failing HBM stack.
/// * WORKFLOW_NVLINK_ERR / WORKFLOW_NVLINK5_ERR (74, 144–150): unhealthy / reset_gpu (the
///   workflows start with a GPU reset, then link inspection if it recurs).
/// * CHECK_MECHANICALS (54, auxiliary power): unhealthy / hardware_inspection.
/// * RESTART_APP → degraded / restart_app; IGNORE → informational.
///
/// Xids in no row (including 162–172, whose buckets the catalog leaves empty) are
/// [`UNKNOWN_XID`].
pub const XID_POLICY: &[XidRule] = &[
    rule(8, 8, D, RestartApp, "GPU stopped processing (app)"),
    rule(11, 11, D, RestartApp, "Invalid or corrupted push buffer"),
    rule(13, 13, D, RestartApp, "Graphics engine exception"),
    rule(14, 14, I, Action::None, "Unused / informational"),
    rule(25, 25, D, RestartApp, "Invalid or corrupted push buffer"),
    rule(31, 32, D, RestartApp, "GPU memory page fault / push stream"),
    rule(37, 38, I, Action::None, "Driver firmware informational"),
    rule(39, 41, D, RestartApp, "Application error"),
    rule(
        43,
        44,
        I,
        Action::None,
        "GPU stopped processing (app exited)",
    ),
    rule(46, 46, U, ResetGpu, "GPU stopped processing"),
    rule(48, 48, U, HardwareInspection, "Double bit ECC error"),
    rule(
        54,
        54,
        U,
        HardwareInspection,
        "Auxiliary power not connected",
    ),
    rule(60, 60, D, RestartApp, "Application error"),
    rule(62, 62, U, ResetGpu, "Internal micro-controller halt"),
    rule(63, 63, I, Action::None, "Memory remapping event"),
    rule(64, 64, U, ResetGpu, "GPU memory remapping failure"),
    rule(66, 67, I, Action::None, "Informational"),
    rule(68, 72, D, RestartApp, "Application error"),
    rule(74, 74, U, ResetGpu, "NVLink error"),
    rule(75, 77, D, RestartApp, "Application error"),
    rule(
        78,
        78,
        U,
        Reboot,
        "vGPU start error (update software/firmware)",
    ),
    rule(79, 79, U, Reboot, "GPU has fallen off the bus"),
    rule(80, 80, D, RestartApp, "Application error"),
    rule(82, 86, D, RestartApp, "Application error"),
    rule(88, 89, D, RestartApp, "Application error"),
    rule(
        92,
        93,
        I,
        Action::None,
        "High single-bit ECC rate / informational",
    ),
    rule(94, 94, D, RestartApp, "Contained memory error"),
    rule(95, 95, U, ResetGpu, "Uncontained memory error"),
    rule(96, 105, D, RestartApp, "Application error"),
    rule(106, 107, I, Action::None, "Informational"),
    rule(109, 109, U, ResetGpu, "Context switch timeout"),
    rule(110, 110, U, ResetGpu, "Security fault"),
    rule(119, 119, U, ResetGpu, "GSP RPC timeout"),
    rule(120, 120, U, ResetGpu, "GSP error"),
    rule(121, 121, I, Action::None, "Informational"),
    rule(126, 135, D, RestartApp, "Application error"),
    rule(136, 136, U, ResetGpu, "Link training failed"),
    rule(137, 137, I, Action::None, "Informational"),
    rule(139, 139, D, RestartApp, "Application error"),
    rule(140, 140, U, ResetGpu, "ECC unrecovered error"),
    rule(141, 141, I, Action::None, "Informational"),
    rule(143, 143, U, ResetGpu, "GPU initialization error"),
    rule(144, 150, U, ResetGpu, "NVLink5 error"),
    rule(151, 151, U, Reboot, "Key rotation error"),
    rule(152, 153, I, Action::None, "Informational"),
    rule(154, 154, I, Action::None, "GPU recovery action changed"),
    rule(155, 155, U, ResetGpu, "NVLink: SW defined error"),
    rule(156, 156, U, ResetGpu, "Resource retirement event"),
    rule(157, 157, I, Action::None, "Informational"),
    rule(158, 158, U, ResetGpu, "GPU fatal timeout"),
    rule(160, 161, I, Action::None, "Informational"),
];

/// Policy for an Xid in no row of [`XID_POLICY`]: degraded / restart_app. Visible and
/// alertable, but it does not drain a GPU on a code nobody has classified.
pub const UNKNOWN_XID: (Severity, Action, &str) = (D, RestartApp, "Not in the Xid catalog");

/// The evaluation settings, from `[health]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub hold_time: Duration,
    pub throttle_window: Duration,
    pub hw_slowdown_ratio: f64,
    pub xid_overrides: BTreeMap<u64, (Severity, Action)>,
}

impl Default for Policy {
    fn default() -> Self {
        // The defaults are valid by construction.
        Self::from_config(&HealthConfig::default()).unwrap_or(Self {
            hold_time: Duration::from_secs(600),
            throttle_window: Duration::from_secs(300),
            hw_slowdown_ratio: 0.1,
            xid_overrides: BTreeMap::new(),
        })
    }
}

impl Policy {
    /// Builds the policy, refusing a bad override or ratio as a config error.
    pub fn from_config(c: &HealthConfig) -> Result<Self, ConfigError> {
        // The loader fills in where the key was set (`config::Origins::place`).
        let fail = |key: &str, message: String| ConfigError::at_key(key, message);
        if !(c.hw_slowdown_ratio > 0.0 && c.hw_slowdown_ratio <= 1.0) {
            return Err(fail(
                "health.hw_slowdown_ratio",
                format!("must be in (0, 1], got {}", c.hw_slowdown_ratio),
            ));
        }
        let mut xid_overrides = BTreeMap::new();
        for (xid, value) in &c.xid_overrides {
            let parsed = xid
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("key {xid:?} is not an Xid number"))
                .and_then(|n| parse_override(value).map(|o| (n, o)));
            match parsed {
                Ok((n, o)) => {
                    xid_overrides.insert(n, o);
                }
                Err(message) => return Err(fail("health.xid_overrides", message)),
            }
        }
        Ok(Self {
            hold_time: c.hold_time.0,
            throttle_window: c.throttle_window.0,
            hw_slowdown_ratio: c.hw_slowdown_ratio,
            xid_overrides,
        })
    }

    /// What an Xid means: the override, else the catalog row, else [`UNKNOWN_XID`].
    pub fn xid(&self, xid: u64) -> (Severity, Action, &'static str) {
        if let Some((severity, action)) = self.xid_overrides.get(&xid) {
            return (*severity, *action, "health.xid_overrides");
        }
        XID_POLICY
            .iter()
            .find(|r| (r.first..=r.last).contains(&xid))
            .map_or(UNKNOWN_XID, |r| (r.severity, r.action, r.description))
    }
}

/// Parses `ignore` or `<degraded|unhealthy>:<action>`.
fn parse_override(value: &str) -> Result<(Severity, Action), String> {
    let bad = || {
        format!(
            "invalid value {value:?}: expected \"ignore\" or \"degraded|unhealthy:ACTION\" \
             with ACTION one of none, restart_app, reset_gpu, reboot, hardware_inspection"
        )
    };
    let value = value.trim();
    if value == "ignore" {
        return Ok((Severity::Ignore, Action::None));
    }
    let (severity, action) = value.split_once(':').ok_or_else(bad)?;
    let severity = match severity {
        "degraded" => Severity::Degraded,
        "unhealthy" => Severity::Unhealthy,
        _ => return Err(bad()),
    };
    let action = Action::parse(action).ok_or_else(bad)?;
    Ok((severity, action))
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
    Xid(u64),
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
            Self::Xid(_) => "xid",
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
    /// Recent transitions, oldest first, at most [`MAX_TRANSITIONS`].
    pub transitions: Vec<Transition>,
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
            transitions: Vec::new(),
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

impl GpuStatus {
    /// Where the `gpu` collector of a snapshot stands.
    pub fn of(snap: &crate::store::Snapshot) -> Self {
        match (snap.collector("gpu"), &snap.gpu) {
            (_, Some(_)) => Self::Sampled,
            (Some(c), None) if c.runs == 0 => Self::Initializing,
            _ => Self::NoGpu,
        }
    }
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
}

/// A cause observed now: (code, state, action, detail, last seen).
type Cause = (ReasonCode, State, Action, String, SystemTime);

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
    let mut gpus: Vec<GpuHealth> = Vec::new();
    let mut node_causes: Vec<Cause> = Vec::new();
    match (input.status, input.sample) {
        (GpuStatus::Sampled, Some(sample)) => {
            for device in &sample.devices {
                let causes = device_causes(device, input, policy, now, hold_from);
                let prev = previous.gpu(device.identity.index);
                gpus.push(gpu_health(
                    device.identity.index,
                    &device.identity.uuid,
                    &device.identity.name,
                    prev,
                    causes,
                    policy,
                    now,
                ));
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
            // Xids that name no GPU of this sample count for the node.
            for c in &input.xid.counts {
                let known = sample.devices.iter().any(|d| xid_is_for(c, d));
                if known || c.last_seen <= hold_from {
                    continue;
                }
                let (severity, action, description) = policy.xid(c.xid);
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
    let node_reasons = merge_reasons(&previous.reasons, node_causes, policy.hold_time, now, true);
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

    let mut transitions = previous.transitions.clone();
    for g in &gpus {
        let from = previous.gpu(g.index).map_or(State::Unknown, |p| p.state);
        if from != g.state {
            transitions.push(Transition {
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
        transitions.push(Transition {
            at: now,
            gpu: None,
            uuid: String::new(),
            from: previous.state,
            to: state,
            reasons: node_reasons.iter().map(|r| r.code.label()).collect(),
        });
    }
    if transitions.len() > MAX_TRANSITIONS {
        let excess = transitions.len() - MAX_TRANSITIONS;
        transitions.drain(..excess);
    }
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

fn device_causes(
    d: &GpuDevice,
    input: &Input<'_>,
    policy: &Policy,
    now: SystemTime,
    hold_from: SystemTime,
) -> Vec<Cause> {
    let mut out: Vec<Cause> = Vec::new();
    let mut push =
        |code, state, action, detail: String| out.push((code, state, action, detail, now));
    if d.lost {
        // Xid 79's catalog action: RESTART_BM.
        push(
            ReasonCode::GpuLost,
            State::Unhealthy,
            Action::Reboot,
            "the driver reports the GPU lost".to_owned(),
        );
    } else {
        if let Some((_, _, n)) = d.ecc_errors.iter().find(|(kind, scope, n)| {
            *kind == EccKind::Uncorrected && *scope == EccScope::Volatile && *n > 0
        }) {
            // Volatile counts clear on reset; a reset also applies a pending row remap.
            push(
                ReasonCode::UncorrectableEcc,
                State::Unhealthy,
                Action::ResetGpu,
                format!("{n} uncorrectable ECC errors since the driver loaded"),
            );
        }
        if let Some(rows) = d.remapped_rows {
            if rows.failure {
                push(
                    ReasonCode::RowRemapFailure,
                    State::Unhealthy,
                    Action::HardwareInspection,
                    "row remapping failed: no spare rows left".to_owned(),
                );
            }
            if rows.pending {
                push(
                    ReasonCode::RowRemapPending,
                    State::Degraded,
                    Action::ResetGpu,
                    "a row remap waits for a GPU reset".to_owned(),
                );
            }
        }
        if d.retired_pages_pending == Some(true) {
            push(
                ReasonCode::RetiredPagesPending,
                State::Degraded,
                Action::ResetGpu,
                "a page retirement waits for a GPU reset".to_owned(),
            );
        }
        let slowdown = d
            .temperature_thresholds
            .iter()
            .find(|(name, _)| *name == TempThreshold::Slowdown)
            .map(|(_, t)| *t);
        if let (Some(t), Some(limit)) = (d.temperature_gpu_celsius, slowdown)
            && t >= limit
        {
            push(
                ReasonCode::OverSlowdownTemperature,
                State::Degraded,
                Action::None,
                format!("{t} °C at or above the slowdown threshold of {limit} °C"),
            );
        }
        match d.recovery_action {
            Some(1) => push(
                ReasonCode::RecoveryAction,
                State::Unhealthy,
                Action::ResetGpu,
                "driver: GPU reset required".to_owned(),
            ),
            Some(2) => push(
                ReasonCode::RecoveryAction,
                State::Unhealthy,
                Action::Reboot,
                "driver: node reboot required".to_owned(),
            ),
            // Drain P2P: stop the workloads using peer-to-peer; the GPU itself needs no reset.
            Some(3) => push(
                ReasonCode::RecoveryAction,
                State::Degraded,
                Action::RestartApp,
                "driver: drain peer-to-peer traffic".to_owned(),
            ),
            // Drain and reset: stop the workloads, then reset the GPU.
            Some(4) => push(
                ReasonCode::RecoveryAction,
                State::Unhealthy,
                Action::ResetGpu,
                "driver: drain, then reset the GPU".to_owned(),
            ),
            _ => {}
        }
        if let Some(share) =
            hw_slowdown_share(d.identity.index, input.window, policy.throttle_window, now)
            && share >= policy.hw_slowdown_ratio
        {
            push(
                ReasonCode::HwSlowdown,
                State::Degraded,
                Action::None,
                format!(
                    "hardware slowdown active {:.0}% of the throttle window",
                    share * 100.0
                ),
            );
        }
    }
    for c in &input.xid.counts {
        if !xid_is_for(c, d) || c.last_seen <= hold_from {
            continue;
        }
        let (severity, action, description) = policy.xid(c.xid);
        if let Some(state) = severity.state() {
            out.push((
                ReasonCode::Xid(c.xid),
                state,
                action,
                description.to_owned(),
                c.last_seen,
            ));
        }
    }
    out
}

/// Whether an Xid count belongs to this GPU (by index, or by UUID when it has one).
fn xid_is_for(c: &XidCount, d: &GpuDevice) -> bool {
    c.gpu_index == Some(d.identity.index) || (!c.uuid.is_empty() && c.uuid == d.identity.uuid)
}

/// Share of the GPU's points in `[now - window, now]` with a hardware slowdown bit set;
/// `None` without any point that reports clock-event reasons.
pub fn hw_slowdown_share(
    index: u32,
    points: &[GpuWindowPoint],
    window: Duration,
    now: SystemTime,
) -> Option<f64> {
    let from = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut total = 0u32;
    let mut slowed = 0u32;
    for p in points
        .iter()
        .filter(|p| p.taken_at >= from && p.taken_at <= now)
    {
        if let Some(active) = p
            .gpus
            .iter()
            .find(|g| g.index == index)
            .and_then(|g| g.throttle_active)
        {
            total += 1;
            if active & HW_SLOWDOWN_BITS != 0 {
                slowed += 1;
            }
        }
    }
    (total > 0).then(|| f64::from(slowed) / f64::from(total))
}

fn gpu_health(
    index: u32,
    uuid: &str,
    name: &str,
    prev: Option<&GpuHealth>,
    causes: Vec<Cause>,
    policy: &Policy,
    now: SystemTime,
) -> GpuHealth {
    let empty = Vec::new();
    let reasons = merge_reasons(
        prev.map_or(&empty, |p| &p.reasons),
        causes,
        policy.hold_time,
        now,
        false,
    );
    let state = reasons
        .iter()
        .map(|r| r.state)
        .max()
        .unwrap_or(State::Healthy);
    let action = reasons
        .iter()
        .map(|r| r.action)
        .max()
        .unwrap_or(Action::None);
    let since = match prev {
        Some(p) if p.state == state => p.since,
        _ => now,
    };
    GpuHealth {
        index,
        uuid: uuid.to_owned(),
        name: name.to_owned(),
        state,
        action,
        since,
        reasons,
    }
}

/// Current causes, plus previous reasons whose cause was seen within `hold_time`.
/// `node` reasons (`initializing`, `no_gpu`) are never held: they describe the present.
fn merge_reasons(
    previous: &[Reason],
    causes: Vec<Cause>,
    hold: Duration,
    now: SystemTime,
    node: bool,
) -> Vec<Reason> {
    let mut out: Vec<Reason> = Vec::new();
    for (code, state, action, detail, last_seen) in causes {
        if let Some(existing) = out.iter_mut().find(|r| r.code == code) {
            // Two causes, one code (cannot happen today): keep the worst.
            if (state, action) > (existing.state, existing.action) {
                existing.state = state;
                existing.action = action;
                existing.detail = detail;
            }
            existing.last_seen = existing.last_seen.max(last_seen);
            continue;
        }
        let since = previous
            .iter()
            .find(|r| r.code == code)
            .map_or(last_seen.min(now), |r| r.since);
        out.push(Reason {
            code,
            state,
            action,
            detail,
            since,
            last_seen,
        });
    }
    for r in previous {
        let transient = node && matches!(r.code, ReasonCode::Initializing | ReasonCode::NoGpu);
        if transient || out.iter().any(|o| o.code == r.code) {
            continue;
        }
        let held = r
            .last_seen
            .checked_add(hold)
            .is_some_and(|until| until > now);
        if held {
            out.push(r.clone());
        }
    }
    out.sort_by(|a, b| (b.state, b.action, a.code).cmp(&(a.state, a.action, b.code)));
    out.truncate(MAX_REASONS);
    out
}

#[cfg(test)]
mod tests;
