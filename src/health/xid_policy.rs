//! The Xid policy: what each Xid means for a GPU's state and which action it suggests, as data
//! from NVIDIA's Xid catalog, plus `health.xid_overrides` parsed and checked at load.

use std::collections::BTreeMap;
use std::time::Duration;

use std::time::SystemTime;

use super::{Action, State};
use crate::config::{ConfigError, HealthConfig};
use crate::model::{NVLINK_SEVERITY_XIDS, XidCount, XidLog};

/// What an Xid means for the GPU's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Informational: recorded in the Xid log, no effect on the state.
    Ignore,
    Degraded,
    Unhealthy,
}

impl Severity {
    pub(super) fn state(self) -> Option<State> {
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

/// What `xid` is, in words: its [`XID_POLICY`] row's description (from NVIDIA's catalog),
/// else [`UNKNOWN_XID`]'s. `health.xid_overrides` change the policy, not the description.
pub fn xid_description(xid: u64) -> &'static str {
    XID_POLICY
        .iter()
        .find(|r| (r.first..=r.last).contains(&xid))
        .map_or(UNKNOWN_XID.2, |r| r.description)
}

/// The evaluation settings, from `[health]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub hold_time: Duration,
    pub throttle_window: Duration,
    pub hw_slowdown_ratio: f64,
    /// How long NVML may stay hung (every GPU cycle missing its deadline) before every GPU
    /// is Unhealthy with `nvml_hung`.
    pub nvml_stale_after: Duration,
    pub xid_overrides: BTreeMap<u64, (Severity, Action)>,
}

impl Default for Policy {
    fn default() -> Self {
        // The defaults are valid by construction.
        Self::from_config(&HealthConfig::default()).unwrap_or(Self {
            hold_time: Duration::from_secs(600),
            throttle_window: Duration::from_secs(300),
            hw_slowdown_ratio: 0.1,
            nvml_stale_after: Duration::from_secs(30),
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
            nvml_stale_after: c.nvml_stale_after.0,
            xid_overrides,
        })
    }

    /// What an Xid means: the override, else the catalog row, else [`UNKNOWN_XID`].
    /// The policy for the counted Xid `c` whose recent occurrences are in `log`: an NVLink5
    /// Xid (144–150) all of whose occurrences since `since` the driver printed as `Nonfatal`
    /// is degraded with no action — it must not drain a healthy GPU (NVIDIA's Xid catalog;
    /// leptonai/gpud PR #1174) — unless `health.xid_overrides` names it; a `Fatal` one, or one
    /// without text (an NVML event), keeps [`Policy::xid`].
    pub fn xid_count(
        &self,
        c: &XidCount,
        log: &XidLog,
        since: SystemTime,
    ) -> (Severity, Action, &'static str) {
        let nonfatal = NVLINK_SEVERITY_XIDS.contains(&c.xid)
            && !self.xid_overrides.contains_key(&c.xid)
            && log.all_nonfatal(c.gpu_index, &c.uuid, c.xid, since) == Some(true);
        if nonfatal {
            return (Severity::Degraded, Action::None, "NVLink5 error (Nonfatal)");
        }
        self.xid(c.xid)
    }

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
