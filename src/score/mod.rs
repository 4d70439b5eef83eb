//! The provider-quality score: pure functions of one window's ledger evidence and the
//! `[score]` config (no I/O, no clock, nothing asynchronous: the same tidy rule as `health`).
//!
//! `Q = gates × weighted geometric mean` of the measured sub-scores (`docs/scoring.md`).
//! A sub-score without evidence is *unmeasured*: it is left out and the remaining weights are
//! re-normalised, and the result says so. Cost per inference is computed beside the score,
//! never folded into it. The claims check compares `[score.expect]` with what NVML sees.
//!
//! One file per sub-score, each a pure function of the window's [`Evidence`] (and [`Reach`]):
//!
//! * `availability` (A, and the availability gate), `latency` (L, and the latency summary),
//!   `completion` (C), `health` (H, and the GPU-critical gate), `throttle` (T), `recovery` (R).
//! * `cost`: cost per request and per 1M output tokens, beside the score.
//! * `claims`: `[score.expect]` against the latest GPU sample.
//! * `lease`: the per-lease view, H and T over each Akash lease's GPUs while it held them.
//!
//! This file combines them: weights, re-weighting over the measured ones, gates, the total.

use crate::config::ScoreConfig;
use crate::mode::Mode;
use crate::model::Evidence;

mod availability;
mod claims;
mod completion;
mod cost;
mod health;
mod latency;
mod lease;
mod recovery;
#[cfg(test)]
mod tests;
mod throttle;

pub use claims::check_claims;
pub use lease::{LeaseScore, evaluate_leases};

/// A sub-score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Availability,
    Latency,
    Completion,
    Health,
    Throttle,
    Recovery,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::Availability,
        Component::Latency,
        Component::Completion,
        Component::Health,
        Component::Throttle,
        Component::Recovery,
    ];

    /// The label value (Prometheus, OTLP and JSON alike); also the `[score.weights]` key.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Availability => "availability",
            Self::Latency => "latency",
            Self::Completion => "completion",
            Self::Health => "health",
            Self::Throttle => "throttle",
            Self::Recovery => "recovery",
        }
    }

    /// The one-letter id used in `docs/scoring.md` (A, L, C, H, T, R).
    pub const fn letter(self) -> &'static str {
        match self {
            Self::Availability => "A",
            Self::Latency => "L",
            Self::Completion => "C",
            Self::Health => "H",
            Self::Throttle => "T",
            Self::Recovery => "R",
        }
    }

    /// This component's configured weight.
    pub fn weight(self, config: &ScoreConfig) -> f64 {
        let w = &config.weights;
        match self {
            Self::Availability => w.availability,
            Self::Latency => w.latency,
            Self::Completion => w.completion,
            Self::Health => w.health,
            Self::Throttle => w.throttle,
            Self::Recovery => w.recovery,
        }
    }
}

/// A score window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScoreWindow {
    M5,
    H1,
    H24,
    D7,
}

impl ScoreWindow {
    pub const ALL: [ScoreWindow; 4] = [Self::M5, Self::H1, Self::H24, Self::D7];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::M5 => "5m",
            Self::H1 => "1h",
            Self::H24 => "24h",
            Self::D7 => "7d",
        }
    }

    pub const fn seconds(self) -> u64 {
        match self {
            Self::M5 => 300,
            Self::H1 => 3600,
            Self::H24 => 86_400,
            Self::D7 => 7 * 86_400,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.as_str() == s)
    }
}

/// What the agent can measure at all where it runs (from the mode and the config): decides
/// whether an unmeasured sub-score is "cannot be measured here" or "no evidence yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reach {
    pub mode: Mode,
    /// Probes configured, and of those, ones sending synthetic requests / scraping metrics.
    pub probes: usize,
    pub inference_probes: usize,
    pub metrics_probes: usize,
    /// The GPU collector is on and NVML answered.
    pub gpus: bool,
    /// gpulse wraps the workload (job runs are seen).
    pub job: bool,
}

/// Why a sub-score has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmeasured {
    /// Nothing here could ever measure it (no probe, no GPU, sidecar mode…).
    NotMeasurable,
    /// It could be measured, but the window holds no evidence for it yet.
    NoEvidence,
    /// Its weight is 0.
    ZeroWeight,
}

impl Unmeasured {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotMeasurable => "not_measurable",
            Self::NoEvidence => "no_evidence",
            Self::ZeroWeight => "zero_weight",
        }
    }
}

/// The evidence a sub-score used, as counts a fleet can sum: `good` of `total` (checks,
/// requests or seconds, per `unit`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tally {
    pub good: f64,
    pub total: f64,
    /// "checks", "requests", "seconds", "incidents".
    pub unit: &'static str,
}

/// One sub-score in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentScore {
    pub component: Component,
    /// 0–100; `None` when unmeasured.
    pub value: Option<f64>,
    pub unmeasured: Option<Unmeasured>,
    /// The configured weight, normalised over all six.
    pub weight: f64,
    /// The weight actually used: re-normalised over the measured components (0 if unmeasured).
    pub effective_weight: f64,
    pub evidence: Tally,
    /// Where the evidence came from and supporting figures, for people:
    /// e.g. ("source", "server"), ("mttr_seconds", "42").
    pub detail: Vec<(&'static str, Figure)>,
}

/// A gate: when closed, the total is 0 whatever the sub-scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// "gpu_critical" or "availability".
    pub name: &'static str,
    /// `None` when the gate's input is unmeasured (it then does not close).
    pub open: Option<bool>,
    pub detail: String,
}

/// p50/p95/p99 in seconds (`None` without observations).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// Latency figures of a window: from the server's own histograms when it has them, else the
/// synthetic requests.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LatencySummary {
    /// "server", "probe", or "" when neither has observations.
    pub source: &'static str,
    pub ttft: Percentiles,
    pub e2e: Percentiles,
}

/// Cost per inference over a window (beside the score, not in it).
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub currency: String,
    pub price_per_hour: f64,
    /// Hours the agent observed in the window (the cost base).
    pub hours: f64,
    /// "server" (organic traffic) or "probe" (synthetic requests only).
    pub source: &'static str,
    pub requests: f64,
    pub output_tokens: f64,
    pub per_request: Option<f64>,
    pub per_million_output_tokens: Option<f64>,
    /// The same, counting only requests (and their tokens) that met the SLOs.
    pub per_request_at_slo: Option<f64>,
    pub per_million_output_tokens_at_slo: Option<f64>,
}

/// The score of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowScore {
    pub window: ScoreWindow,
    /// Unix seconds.
    pub start: u64,
    pub end: u64,
    /// Seconds the agent observed inside the window, and that share of the window.
    pub observed_seconds: u64,
    pub coverage: f64,
    /// Q, 0–100; `None` when no sub-score is measured.
    pub total: Option<f64>,
    /// All six, in [`Component::ALL`] order.
    pub components: Vec<ComponentScore>,
    pub gates: Vec<Gate>,
    /// Whether any weighted component was left out (its weight spread over the others).
    pub reweighted: bool,
    pub latency: LatencySummary,
    /// `None` without a price.
    pub cost: Option<Cost>,
    /// Incidents and recoveries in the window, as numbers (R's inputs).
    pub recovery: RecoveryFigures,
}

/// A window's incidents (outages begun, job runs that failed) and recoveries (outages ended,
/// restarts ready again), with their summed and longest time to recover in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RecoveryFigures {
    pub incidents: f64,
    pub recoveries: f64,
    pub recovery_seconds_sum: f64,
    pub recovery_seconds_max: f64,
}

/// One claim of `[score.expect]` against what NVML sees.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimCheck {
    /// "gpu_model", "gpu_count", "memory_per_gpu", "driver_min".
    pub claim: &'static str,
    pub expected: String,
    /// What was seen; `None` when NVML gave nothing to compare (no GPU sampled).
    pub observed: Option<String>,
    /// `None`: unchecked (nothing observed).
    pub ok: Option<bool>,
}

/// Per-day rates (warning Xids, incidents) divide by at least a day of observed time: counts
/// in a window shorter than a day are read as that day's count, never extrapolated (1 in
/// 5 minutes would otherwise read 288/day and zero the short windows' score for one event).
const RATE_FLOOR_SECONDS: f64 = 86_400.0;

const DAY_SECONDS: f64 = 86_400.0;

/// A sub-score before weighting: its value in 0–1, or why it has none, and its evidence.
struct Part {
    value: Result<f64, Unmeasured>,
    evidence: Tally,
    detail: Vec<(&'static str, Figure)>,
}

/// `count` events over `seconds` of observation, per day, with [`RATE_FLOOR_SECONDS`].
fn per_day(count: f64, seconds: f64) -> f64 {
    count * DAY_SECONDS / seconds.max(RATE_FLOOR_SECONDS)
}

/// `good / total` in 0–1; `None` without a total.
fn share(good: f64, total: f64) -> Option<f64> {
    (total > 0.0).then(|| unit(good / total))
}

/// Clamped to 0–1; NaN reads 0 (a score must never be NaN, whatever the tallies hold).
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// A finite, non-negative amount; anything else (a corrupt tally) reads 0.
fn amount(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

/// One value of a component's `detail`: a word, or a number shown with at most 4 decimals and
/// trailing zeros dropped. Kept as the number and formatted only when shown: the keeper
/// scores every window each tick, and the detail is read far less often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Figure {
    Word(&'static str),
    Num(f64),
    Count(u64),
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Word(word) => f.write_str(word),
            Self::Count(n) => write!(f, "{n}"),
            Self::Num(x) => {
                let s = format!("{x:.4}");
                let s = s.trim_end_matches('0').trim_end_matches('.');
                f.write_str(if s == "-0" { "0" } else { s })
            }
        }
    }
}

/// A number for `detail` (and for gate details, through its `Display`).
fn num(x: f64) -> Figure {
    Figure::Num(x)
}

/// Scores one window of evidence. Pure: the same evidence, reach and config give the same
/// result.
pub fn evaluate(
    window: ScoreWindow,
    evidence: &Evidence,
    reach: &Reach,
    config: &ScoreConfig,
) -> WindowScore {
    let (a, availability_gate) = availability::score(evidence, reach, config);
    let latency = latency::score(evidence, reach, config);
    let c = completion::score(evidence, reach, config);
    let (h, critical_gate) = health::score(evidence, reach, config);
    let t = throttle::score(evidence, reach, config);
    let r = recovery::score(evidence, reach, config);
    let components = combine([a, latency.part, c, h, t, r], config);
    let gates = vec![critical_gate, availability_gate];
    let total = total(&components, &gates);
    let reweighted = components
        .iter()
        .any(|c| c.weight > 0.0 && c.unmeasured.is_some());
    let span = match evidence.sum.span {
        0 => window.seconds(),
        span => span,
    };
    let observed_seconds = evidence.sum.observed_seconds;
    WindowScore {
        window,
        start: evidence.start(),
        end: evidence.end(),
        observed_seconds,
        coverage: unit(observed_seconds as f64 / span as f64),
        total,
        components,
        gates,
        reweighted,
        latency: latency.summary,
        cost: cost::cost(evidence, config, latency.attainment),
        recovery: recovery::figures(evidence),
    }
}

/// Weights the six parts (in [`Component::ALL`] order): each configured weight normalised
/// over all six, and the effective weight re-normalised over the measured ones.
fn combine(parts: [Part; 6], config: &ScoreConfig) -> Vec<ComponentScore> {
    let weights = Component::ALL.map(|c| amount(c.weight(config)));
    let all: f64 = weights.iter().sum();
    let measured: f64 = parts
        .iter()
        .zip(weights)
        .filter(|(p, w)| p.value.is_ok() && *w > 0.0)
        .map(|(_, w)| w)
        .sum();
    Component::ALL
        .into_iter()
        .zip(parts)
        .zip(weights)
        .map(|((component, part), w)| {
            // A weight-0 component says so even when it had evidence: its value is not part
            // of the total, and showing one would suggest it was.
            let unmeasured = if w > 0.0 {
                part.value.err()
            } else {
                Some(Unmeasured::ZeroWeight)
            };
            let value = match (unmeasured, part.value) {
                (None, Ok(v)) => Some(100.0 * unit(v)),
                _ => None,
            };
            ComponentScore {
                component,
                value,
                unmeasured,
                weight: if all > 0.0 { w / all } else { 0.0 },
                effective_weight: match value {
                    Some(_) if measured > 0.0 => w / measured,
                    _ => 0.0,
                },
                evidence: part.evidence,
                detail: part.detail,
            }
        })
        .collect()
}

/// `Q = gates × Π s_i^{w_i}` on 0–100: 0 when a gate is closed (whatever else was measured),
/// `None` when no weighted component was measured.
fn total(components: &[ComponentScore], gates: &[Gate]) -> Option<f64> {
    if gates.iter().any(|g| g.open == Some(false)) {
        return Some(0.0);
    }
    let weighted: Vec<(f64, f64)> = components
        .iter()
        .filter(|c| c.effective_weight > 0.0)
        .filter_map(|c| Some((c.value? / 100.0, c.effective_weight)))
        .collect();
    if weighted.is_empty() {
        return None;
    }
    let q: f64 = weighted.iter().map(|(s, w)| unit(*s).powf(*w)).product();
    Some(100.0 * unit(q))
}
