//! R, recovery: how fast the service comes back, and how often it has to.
//!
//! Incidents are the probes' outages that began in the window and the wrapped job's runs that
//! ended badly (`failure`, `signal`, `oom`, `unknown`; `success` and `stopped` are not
//! incidents). Recoveries are the outages that ended and the job restarts that became ready.
//! `MTTR = recovery seconds / recoveries`, and
//! `R = exp(−MTTR / recovery_time_scale) × f`, with f = 1, 0.7 or 0.3 for fewer than 3, 3 to 9,
//! or 10 and more incidents a day (Console's flapping thresholds; per day of observed time with
//! the 1 day floor of [`super::RATE_FLOOR_SECONDS`]).
//!
//! No incident over observed time is evidence too: R is 1. An incident still open at the
//! window's end counts as an incident, but has no recovery time yet, so MTTR covers only the
//! recoveries that completed (the open one already costs availability).

use super::{Part, Reach, RecoveryFigures, Tally, Unmeasured, amount, num, per_day, unit};
use crate::config::ScoreConfig;
use crate::model::{Evidence, JobOutcome};

/// Incidents a day from which the rate factor drops to 0.7, and to 0.3.
const FLAPPING_PER_DAY: f64 = 3.0;
const OFFLINE_PER_DAY: f64 = 10.0;

/// The window's incidents and recoveries as numbers (what R is computed from, and what the
/// catalog exports).
pub(super) fn figures(evidence: &Evidence) -> RecoveryFigures {
    let probes = &evidence.sum.probes;
    let job = &evidence.sum.job;
    let failed_runs: f64 = JobOutcome::ALL
        .iter()
        .zip(job.outcomes)
        .filter(|(o, _)| !matches!(o, JobOutcome::Success | JobOutcome::Stopped))
        .map(|(_, n)| n as f64)
        .sum();
    let outages: f64 = probes.iter().map(|p| p.outages_started as f64).sum();
    let incidents = outages + failed_runs;
    let recoveries = probes
        .iter()
        .map(|p| p.outages_recovered as f64)
        .sum::<f64>()
        + job.recoveries as f64;
    let recovery_seconds = probes
        .iter()
        .map(|p| amount(p.recovery_seconds_sum))
        .sum::<f64>()
        + amount(job.recovery_seconds_sum);
    let longest = probes
        .iter()
        .map(|p| amount(p.recovery_seconds_max))
        .fold(amount(job.recovery_seconds_max), f64::max);
    RecoveryFigures {
        incidents,
        recoveries,
        recovery_seconds_sum: recovery_seconds,
        recovery_seconds_max: longest,
    }
}

pub(super) fn score(evidence: &Evidence, reach: &Reach, config: &ScoreConfig) -> Part {
    let RecoveryFigures {
        incidents,
        recoveries,
        recovery_seconds_sum: recovery_seconds,
        recovery_seconds_max: longest,
    } = figures(evidence);
    let mttr = (recoveries > 0.0).then(|| recovery_seconds / recoveries);
    let observed = evidence.sum.observed_seconds as f64;
    let incidents_per_day = per_day(incidents, observed);
    let factor = if incidents_per_day < FLAPPING_PER_DAY {
        1.0
    } else if incidents_per_day < OFFLINE_PER_DAY {
        0.7
    } else {
        0.3
    };
    let value = if reach.probes == 0 && !reach.job {
        Err(Unmeasured::NotMeasurable)
    } else if observed <= 0.0 {
        Err(Unmeasured::NoEvidence)
    } else {
        let scale = config
            .recovery_time_scale
            .0
            .as_secs_f64()
            .max(f64::MIN_POSITIVE);
        Ok(unit((-mttr.unwrap_or(0.0) / scale).exp() * factor))
    };
    let mut detail = Vec::new();
    if let Some(mttr) = mttr {
        detail.push(("mttr_seconds", num(mttr)));
    }
    detail.extend([
        ("max_recovery_seconds", num(longest)),
        ("incidents", num(incidents)),
        ("recoveries", num(recoveries)),
        ("recovery_seconds_sum", num(recovery_seconds)),
        ("incidents_per_day", num(incidents_per_day)),
        ("rate_factor", num(factor)),
    ]);
    let open = (incidents - recoveries).max(0.0);
    if open > 0.0 {
        detail.push(("open_incidents", num(open)));
    }
    Part {
        value,
        evidence: Tally {
            good: recoveries.min(incidents),
            total: incidents,
            unit: "incidents",
        },
        detail,
    }
}
