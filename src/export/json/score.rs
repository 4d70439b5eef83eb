//! `gpulse.score/v1` (`GET /v1/score[?window=5m|1h|24h|7d]`): the provider-quality score per
//! window with its sub-scores, the evidence each used, gates, re-weighting, cost, the claims
//! check and the ledger's state.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::rfc3339;
use crate::config::ScoreConfig;
use crate::model::lease_key_parts;
use crate::score::{
    ClaimCheck, ComponentScore, Cost, Gate, LeaseScore, Percentiles, ScoreWindow, WindowScore,
};
use crate::store::{ScoreState, Snapshot};

/// Schema id of [`ScoreV1`].
pub const SCORE_SCHEMA_V1: &str = "gpulse.score/v1";

#[derive(Debug, Serialize)]
pub struct ScoreV1 {
    pub schema: &'static str,
    pub agent_version: &'static str,
    pub node: String,
    /// Where gpulse runs (embedded, sidecar, host): decides what can be measured.
    pub mode: &'static str,
    pub evaluated_at: String,
    /// Loud problems: claims NVML contradicts, a ledger that is not persistent.
    pub reasons: Vec<String>,
    pub claims: Vec<ClaimV1>,
    /// The configured weights, normalised to sum to 1.
    pub weights: BTreeMap<&'static str, f64>,
    pub constants: ConstantsV1,
    pub ledger: LedgerV1,
    pub windows: Vec<WindowV1>,
    /// The per-lease view (`[kubernetes] lease_labels`): each Akash lease's GPU health and
    /// throttling over the time it held its GPUs here; empty without leases.
    pub leases: Vec<LeaseV1>,
}

#[derive(Debug, Serialize)]
pub struct LeaseV1 {
    /// `owner/dseq/gseq/oseq/provider`.
    pub lease: String,
    pub owner: Option<String>,
    pub dseq: Option<String>,
    pub gseq: Option<String>,
    pub oseq: Option<String>,
    pub provider: Option<String>,
    /// The end of the newest ledger minute that held the lease.
    pub last_seen: String,
    /// The windows the lease was seen in; each ends at the lease's last minute in it.
    pub windows: Vec<WindowV1>,
}

impl LeaseV1 {
    fn new(l: &LeaseScore, window: Option<ScoreWindow>) -> Self {
        let part = |p: &str| (!p.is_empty()).then(|| p.to_owned());
        let [owner, dseq, gseq, oseq, provider] = lease_key_parts(&l.lease);
        Self {
            lease: l.lease.clone(),
            owner: part(owner),
            dseq: part(dseq),
            gseq: part(gseq),
            oseq: part(oseq),
            provider: part(provider),
            last_seen: time(l.last_seen),
            windows: l
                .windows
                .iter()
                .filter(|w| window.is_none_or(|only| w.window == only))
                .map(WindowV1::from)
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ConstantsV1 {
    pub availability_gate: f64,
    pub latency_objective: f64,
    pub throttle_tolerance: f64,
    pub busy_utilization: f64,
    pub health_hold_seconds: u64,
    pub warnings_per_day_limit: f64,
    pub recovery_time_scale_seconds: u64,
    pub completion_min_requests: u64,
}

#[derive(Debug, Serialize)]
pub struct ClaimV1 {
    pub claim: &'static str,
    pub expected: String,
    /// `null` when nothing was seen to compare.
    pub observed: Option<String>,
    /// `null` when unchecked.
    pub ok: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct LedgerV1 {
    pub persistent: bool,
    pub minute_records: u64,
    pub hour_records: u64,
    pub bytes: u64,
    pub oldest: Option<String>,
    pub write_failures: u64,
    pub undecodable_records: u64,
}

#[derive(Debug, Serialize)]
pub struct WindowV1 {
    pub window: &'static str,
    pub start: String,
    pub end: String,
    pub observed_seconds: u64,
    /// Share of the window the agent observed (0-1).
    pub coverage: f64,
    /// Q, 0-100; `null` when nothing is measured.
    pub total: Option<f64>,
    /// Sub-scores left out of the total (their weight spread over the measured ones).
    pub unmeasured: Vec<&'static str>,
    pub reweighted: bool,
    pub components: Vec<ComponentV1>,
    pub gates: Vec<GateV1>,
    pub latency: LatencyV1,
    /// `null` without `score.price_per_hour`.
    pub cost: Option<CostV1>,
}

#[derive(Debug, Serialize)]
pub struct ComponentV1 {
    pub component: &'static str,
    pub letter: &'static str,
    /// 0-100; `null` when unmeasured.
    pub value: Option<f64>,
    /// `not_measurable`, `no_evidence` or `zero_weight` when unmeasured.
    pub unmeasured: Option<&'static str>,
    pub weight: f64,
    pub effective_weight: f64,
    pub evidence: EvidenceV1,
    pub detail: BTreeMap<&'static str, String>,
}

#[derive(Debug, Serialize)]
pub struct EvidenceV1 {
    pub good: f64,
    pub total: f64,
    pub unit: &'static str,
}

#[derive(Debug, Serialize)]
pub struct GateV1 {
    pub gate: &'static str,
    /// `null` when its input is unmeasured (it then does not close).
    pub open: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct PercentilesV1 {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct LatencyV1 {
    /// `server`, `probe`, or empty without observations.
    pub source: &'static str,
    pub ttft_seconds: PercentilesV1,
    pub e2e_seconds: PercentilesV1,
}

#[derive(Debug, Serialize)]
pub struct CostV1 {
    pub currency: String,
    pub price_per_hour: f64,
    pub hours: f64,
    pub source: &'static str,
    pub requests: f64,
    pub output_tokens: f64,
    pub per_request: Option<f64>,
    pub per_million_output_tokens: Option<f64>,
    pub per_request_at_slo: Option<f64>,
    pub per_million_output_tokens_at_slo: Option<f64>,
}

/// Unix seconds as RFC 3339.
pub(super) fn time(unix: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(unix))
}

/// The configured weights, normalised to sum to 1.
pub fn normalised_weights(c: &ScoreConfig) -> BTreeMap<&'static str, f64> {
    let total: f64 = c.weights.entries().iter().map(|(_, w)| w).sum();
    c.weights
        .entries()
        .iter()
        .map(|(k, w)| (*k, if total > 0.0 { w / total } else { 0.0 }))
        .collect()
}

impl From<&ScoreConfig> for ConstantsV1 {
    fn from(c: &ScoreConfig) -> Self {
        Self {
            availability_gate: c.availability_gate,
            latency_objective: c.latency_objective,
            throttle_tolerance: c.throttle_tolerance,
            busy_utilization: c.busy_utilization,
            health_hold_seconds: c.health_hold.0.as_secs(),
            warnings_per_day_limit: c.warnings_per_day_limit,
            recovery_time_scale_seconds: c.recovery_time_scale.0.as_secs(),
            completion_min_requests: c.completion_min_requests,
        }
    }
}

impl From<&ClaimCheck> for ClaimV1 {
    fn from(c: &ClaimCheck) -> Self {
        Self {
            claim: c.claim,
            expected: c.expected.clone(),
            observed: c.observed.clone(),
            ok: c.ok,
        }
    }
}

impl From<&crate::score::LatencySummary> for LatencyV1 {
    fn from(l: &crate::score::LatencySummary) -> Self {
        Self {
            source: l.source,
            ttft_seconds: percentiles(&l.ttft),
            e2e_seconds: percentiles(&l.e2e),
        }
    }
}

fn percentiles(p: &Percentiles) -> PercentilesV1 {
    PercentilesV1 {
        p50: p.p50,
        p95: p.p95,
        p99: p.p99,
    }
}

impl From<&ComponentScore> for ComponentV1 {
    fn from(c: &ComponentScore) -> Self {
        Self {
            component: c.component.as_str(),
            letter: c.component.letter(),
            value: c.value,
            unmeasured: c.unmeasured.map(|u| u.as_str()),
            weight: c.weight,
            effective_weight: c.effective_weight,
            evidence: EvidenceV1 {
                good: c.evidence.good,
                total: c.evidence.total,
                unit: c.evidence.unit,
            },
            detail: detail(c),
        }
    }
}

/// A component's detail figures as the strings the API and the signed reports show.
pub(super) fn detail(c: &ComponentScore) -> BTreeMap<&'static str, String> {
    c.detail.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl From<&Gate> for GateV1 {
    fn from(g: &Gate) -> Self {
        Self {
            gate: g.name,
            open: g.open,
            detail: g.detail.clone(),
        }
    }
}

impl From<&Cost> for CostV1 {
    fn from(c: &Cost) -> Self {
        Self {
            currency: c.currency.clone(),
            price_per_hour: c.price_per_hour,
            hours: c.hours,
            source: c.source,
            requests: c.requests,
            output_tokens: c.output_tokens,
            per_request: c.per_request,
            per_million_output_tokens: c.per_million_output_tokens,
            per_request_at_slo: c.per_request_at_slo,
            per_million_output_tokens_at_slo: c.per_million_output_tokens_at_slo,
        }
    }
}

impl From<&WindowScore> for WindowV1 {
    fn from(w: &WindowScore) -> Self {
        Self {
            window: w.window.as_str(),
            start: time(w.start),
            end: time(w.end),
            observed_seconds: w.observed_seconds,
            coverage: w.coverage,
            total: w.total,
            unmeasured: w
                .components
                .iter()
                .filter(|c| c.value.is_none())
                .map(|c| c.component.as_str())
                .collect(),
            reweighted: w.reweighted,
            components: w.components.iter().map(ComponentV1::from).collect(),
            gates: w.gates.iter().map(GateV1::from).collect(),
            latency: LatencyV1::from(&w.latency),
            cost: w.cost.as_ref().map(CostV1::from),
        }
    }
}

/// The reasons a person must see: contradicted claims and a ledger that forgets.
pub fn score_reasons(state: &ScoreState) -> Vec<String> {
    let mut out: Vec<String> = state
        .claims
        .iter()
        .filter(|c| c.ok == Some(false))
        .map(|c| {
            format!(
                "claim {} does not hold: expected {}, NVML sees {}",
                c.claim,
                c.expected,
                c.observed.as_deref().unwrap_or("nothing")
            )
        })
        .collect();
    if !state.ledger.persistent {
        out.push(
            "the evidence ledger is in memory only (agent.state_dir unset or not writable): it starts over at each restart"
                .to_owned(),
        );
    }
    out
}

impl ScoreV1 {
    /// The DTO of `snap`'s score, only `window` when given; `None` before the first
    /// evaluation.
    pub fn from_snapshot(snap: &Snapshot, node: &str, window: Option<ScoreWindow>) -> Option<Self> {
        let state = snap.score.as_ref()?;
        let c = &state.config;
        Some(Self {
            schema: SCORE_SCHEMA_V1,
            agent_version: env!("CARGO_PKG_VERSION"),
            node: node.to_owned(),
            mode: state.reach.mode.as_str(),
            evaluated_at: time(state.evaluated_at),
            reasons: score_reasons(state),
            claims: state.claims.iter().map(ClaimV1::from).collect(),
            weights: normalised_weights(c),
            constants: ConstantsV1::from(c.as_ref()),
            ledger: LedgerV1 {
                persistent: state.ledger.persistent,
                minute_records: state.ledger.minutes,
                hour_records: state.ledger.hours,
                bytes: state.ledger.bytes,
                oldest: state.ledger.oldest.map(time),
                write_failures: state.ledger.write_failures,
                undecodable_records: state.ledger.undecodable,
            },
            windows: state
                .windows
                .iter()
                .filter(|w| window.is_none_or(|only| w.window == only))
                .map(WindowV1::from)
                .collect(),
            leases: state
                .leases
                .iter()
                .map(|l| LeaseV1::new(l, window))
                .collect(),
        })
    }
}
