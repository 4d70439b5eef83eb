//! H, GPU health: the GPU-critical gate and the soft health score.
//!
//! * The gate closes while the window holds a critical GPU condition (a critical Xid, a lost
//!   GPU, a recovery action, a failed row remap: an `unhealthy` second or a critical Xid in the
//!   ledger) and for `health_hold` after the last minute that held one, so a GPU that just
//!   came back is not trusted at once. It only sees the window: a condition that cleared
//!   before the window started does not hold it closed.
//! * The soft score falls with warning Xids per day (0 at `warnings_per_day_limit`) and with
//!   the share of sampled time a GPU was unhealthy:
//!   `H = (1 − min(1, warnings_per_day / limit)) × (1 − unhealthy_seconds / sampled_seconds)`.
//!   Warnings are counted for the node (all GPUs together), per day of observed time with the
//!   1 day floor of [`super::RATE_FLOOR_SECONDS`].

use super::{Gate, Part, Reach, Tally, Unmeasured, num, per_day, unit};
use crate::config::ScoreConfig;
use crate::model::{Evidence, GpuTally};

pub(super) fn score(evidence: &Evidence, reach: &Reach, config: &ScoreConfig) -> (Part, Gate) {
    let gpus = &evidence.sum.gpus;
    let sum = |f: fn(&GpuTally) -> u64| -> f64 { gpus.iter().map(|g| f(g) as f64).sum() };
    let sampled = sum(|g| g.sampled_seconds);
    let good = sum(|g| g.healthy_seconds) + sum(|g| g.degraded_seconds);
    let unhealthy = sum(|g| g.unhealthy_seconds);
    let critical_seconds = sum(|g| g.critical_seconds);
    let critical_xids = sum(|g| g.critical_xids);
    let warnings = sum(|g| g.warning_xids);
    let gate = gate(
        evidence,
        reach,
        config,
        sampled,
        critical_seconds + critical_xids > 0.0,
    );

    // The per-day base is the observed time, at least the longest any GPU was sampled: the
    // two are counted apart, and a rate must not grow because observed time fell short.
    let longest_sampled = gpus.iter().map(|g| g.sampled_seconds).max().unwrap_or(0);
    let base = evidence.sum.observed_seconds.max(longest_sampled) as f64;
    let warnings_per_day = per_day(warnings, base);
    let value = if !reach.gpus {
        Err(Unmeasured::NotMeasurable)
    } else if sampled <= 0.0 {
        Err(Unmeasured::NoEvidence)
    } else {
        let soft = if warnings > 0.0 {
            1.0 - (warnings_per_day / config.warnings_per_day_limit).min(1.0)
        } else {
            1.0
        };
        Ok(unit(unit(soft) * (1.0 - unit(unhealthy / sampled))))
    };
    let detail = vec![
        ("warning_xids", num(warnings)),
        ("warnings_per_day", num(warnings_per_day)),
        ("unhealthy_seconds", num(unhealthy)),
        ("critical_seconds", num(critical_seconds)),
        ("critical_xids", num(critical_xids)),
    ];
    let part = Part {
        value,
        evidence: Tally {
            good: good.min(sampled),
            total: sampled,
            unit: "seconds",
        },
        detail,
    };
    (part, gate)
}

fn gate(
    evidence: &Evidence,
    reach: &Reach,
    config: &ScoreConfig,
    sampled: f64,
    critical: bool,
) -> Gate {
    let gate = |open: Option<bool>, detail: String| Gate {
        name: "gpu_critical",
        open,
        detail,
    };
    if !reach.gpus {
        return gate(None, "no GPU is sampled here".to_owned());
    }
    if critical {
        let end = evidence.end();
        // Evidence::add always sets it with a critical bucket; a hand-built one without it is
        // read as critical up to the end.
        let last = evidence.last_critical_end.unwrap_or(end);
        let hold = config.health_hold.0.as_secs();
        let until = last.saturating_add(hold);
        return if until > end {
            gate(
                Some(false),
                format!("critical GPU condition until {last}, held {hold}s: closed until {until}"),
            )
        } else {
            gate(
                Some(true),
                format!(
                    "critical GPU condition until {last}, cleared more than {hold}s before the window's end"
                ),
            )
        };
    }
    if sampled <= 0.0 {
        return gate(None, "no GPU sampled in the window".to_owned());
    }
    gate(
        Some(true),
        "no critical GPU condition in the window".to_owned(),
    )
}
