//! A, availability: the share of the probes' checks that found the server serving, and the
//! availability gate.
//!
//! Good checks are `up` and `degraded` (ready, maybe missing a model: it answers). Bad ones are
//! `down`, and `loading` outside start-up: a server reloading its weights is not serving, even
//! though nothing is broken. `starting` checks are left out: the probe only reports `starting`
//! until the first ready check after a (re)start, and start-up is never an outage. Unobserved
//! time (the agent was down) has no checks, so it is neither good nor bad: nothing is imputed.

use super::{Gate, Part, Reach, Tally, Unmeasured, num, share};
use crate::config::ScoreConfig;
use crate::model::{Evidence, ProbeState};

/// A, and the gate it drives.
pub(super) fn score(evidence: &Evidence, reach: &Reach, config: &ScoreConfig) -> (Part, Gate) {
    let count = |state: ProbeState| -> f64 {
        evidence
            .sum
            .probes
            .iter()
            .map(|p| p.checks_in(state) as f64)
            .sum()
    };
    let (up, degraded, loading, down, starting) = (
        count(ProbeState::Up),
        count(ProbeState::Degraded),
        count(ProbeState::Loading),
        count(ProbeState::Down),
        count(ProbeState::Starting),
    );
    let good = up + degraded;
    let total = good + loading + down;
    let value = if reach.probes == 0 {
        Err(Unmeasured::NotMeasurable)
    } else {
        share(good, total).ok_or(Unmeasured::NoEvidence)
    };
    let gate = match value {
        Ok(a) => Gate {
            name: "availability",
            open: Some(a >= config.availability_gate),
            detail: format!(
                "availability {} {} the gate {}",
                num(a),
                if a >= config.availability_gate {
                    "meets"
                } else {
                    "is below"
                },
                num(config.availability_gate)
            ),
        },
        Err(why) => Gate {
            name: "availability",
            open: None,
            detail: format!("availability unmeasured ({})", why.as_str()),
        },
    };
    let detail = vec![
        ("up", num(up)),
        ("degraded", num(degraded)),
        ("loading", num(loading)),
        ("down", num(down)),
        ("starting_excluded", num(starting)),
    ];
    let part = Part {
        value,
        evidence: Tally {
            good,
            total,
            unit: "checks",
        },
        detail,
    };
    (part, gate)
}
