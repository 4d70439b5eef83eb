//! The health rules of one GPU: the causes it shows now (lost, uncorrectable ECC, row remap,
//! temperature thresholds, hardware slowdown share, Xids by policy) and how causes and held
//! reasons merge into its next [`GpuHealth`]. Pure, like the rest of `health`.

use std::time::{Duration, SystemTime};

use super::{
    Action, Cause, GpuHealth, HW_SLOWDOWN_BITS, Input, MAX_REASONS, Policy, Reason, ReasonCode,
    State,
};
use crate::model::{EccKind, EccScope, GpuDevice, GpuWindowPoint, TempThreshold, XidCount};

pub(super) fn device_causes(
    d: &GpuDevice,
    input: &Input<'_>,
    policy: &Policy,
    now: SystemTime,
    hold_from: SystemTime,
    hw_slowdown: Option<f64>,
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
            if d.missing {
                "missing from the device list".to_owned()
            } else {
                "the driver reports the GPU lost".to_owned()
            },
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
        if let Some(share) = hw_slowdown
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
        let (severity, action, description) = policy.xid_count(c, input.xid, hold_from);
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
pub(super) fn xid_is_for(c: &XidCount, d: &GpuDevice) -> bool {
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
    share_of(&hw_slowdown_shares(points, window, now), index)
}

/// [`hw_slowdown_share`] of every GPU in the window, by index (in order of first appearance),
/// in one pass over the points: this runs every second over a window of hundreds of points,
/// so each point is visited once for all GPUs, not once per GPU.
pub(super) fn hw_slowdown_shares(
    points: &[GpuWindowPoint],
    window: Duration,
    now: SystemTime,
) -> Vec<(u32, f64)> {
    let from = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    // (GPU index, points with clock-event reasons, points with a hardware slowdown).
    let mut counts: Vec<(u32, u32, u32)> = Vec::new();
    for p in points
        .iter()
        .filter(|p| p.taken_at >= from && p.taken_at <= now)
    {
        for (position, gpu) in p.gpus.iter().enumerate() {
            let Some(active) = gpu.throttle_active else {
                continue;
            };
            // GPUs are listed by index, so the slot at the same position is nearly always the
            // one; a scan only when it is not (a GPU missing from a cycle, out of order).
            let slot = match counts.get(position) {
                Some(c) if c.0 == gpu.index => position,
                _ => match counts.iter().position(|c| c.0 == gpu.index) {
                    Some(slot) => slot,
                    None => {
                        counts.push((gpu.index, 0, 0));
                        counts.len() - 1
                    }
                },
            };
            if let Some(c) = counts.get_mut(slot) {
                c.1 += 1;
                if active & HW_SLOWDOWN_BITS != 0 {
                    c.2 += 1;
                }
            }
        }
    }
    counts
        .into_iter()
        .filter(|c| c.1 > 0)
        .map(|(index, total, slowed)| (index, f64::from(slowed) / f64::from(total)))
        .collect()
}

/// The share of GPU `index` in [`hw_slowdown_shares`]'s answer.
pub(super) fn share_of(shares: &[(u32, f64)], index: u32) -> Option<f64> {
    shares.iter().find(|(i, _)| *i == index).map(|(_, s)| *s)
}

pub(super) fn gpu_health(
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
        nvlinks_seen_active: prev.map_or(0, |p| p.nvlinks_seen_active),
    }
}

/// NVLinks that were active (bits of `seen`) and are inactive in this sample: unhealthy /
/// reset_gpu, as NVIDIA Health Validation treats an inactive link (CRITICAL) — but only a link
/// seen active before, so links a board never trains (unused ports) are not reasons
/// (leptonai/gpud #1085). Returns the cause and the links seen active from now on. Without
/// NVLink readings (none supported, or `gpu.nvlink` off) nothing changes.
pub(super) fn nvlinks_down(d: &GpuDevice, seen: u64, now: SystemTime) -> (Option<Cause>, u64) {
    let bit = |link: u32| 1u64.checked_shl(link).unwrap_or(0);
    let active = d
        .nvlinks
        .iter()
        .filter(|l| l.active)
        .fold(0u64, |m, l| m | bit(l.link));
    let down: Vec<u32> = d
        .nvlinks
        .iter()
        .filter(|l| !l.active && seen & bit(l.link) != 0)
        .map(|l| l.link)
        .collect();
    let cause = (!down.is_empty()).then(|| {
        let links: Vec<String> = down.iter().map(u32::to_string).collect();
        (
            ReasonCode::NvLinkDown,
            State::Unhealthy,
            Action::ResetGpu,
            format!("NVLink {} went inactive", links.join(", ")),
            now,
        )
    });
    (cause, seen | active)
}

/// Current causes, plus previous reasons whose cause was seen within `hold_time`.
/// `node` reasons (`initializing`, `no_gpu`) are never held: they describe the present.
pub(super) fn merge_reasons(
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
