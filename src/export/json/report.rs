//! `gpulse.report/v1` (a signed score report: `GET /v1/report`, `GET /v1/reports/SEQ`),
//! `gpulse.reports/v1` (the chain's index: `GET /v1/reports`) and `gpulse.identity/v1`
//! (`GET /v1/identity`: the signing key and what the reports identify).
//!
//! A report is one window's score with the evidence it was computed on, the agent and
//! hardware identity, the previous report's hash and a signature (`docs/evidence.md`). It is
//! built here from the store's [`ScoreState`]; `evidence::report` canonicalises (RFC 8785),
//! signs and verifies it. [`ReportFieldsV1`] is the part a verifier or the chain reads back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::score::{detail, time};
use super::{AkashLeaseV1, ClaimV1, ConstantsV1, CostV1, EvidenceV1, GateV1, LatencyV1};
use super::{IdentityV1, normalised_weights};
use crate::model::{
    Bins, Evidence, GpuSample, GpuTally, JobOutcome, JobTally, LATENCY_BUCKETS, ProbeState,
    ProbeTally, ServerTally,
};
use crate::score::{ScoreWindow, WindowScore};
use crate::store::{ScoreState, Snapshot};

/// Schema id of [`ReportV1`].
pub const REPORT_SCHEMA_V1: &str = "gpulse.report/v1";
/// Schema id of [`ReportsV1`].
pub const REPORTS_SCHEMA_V1: &str = "gpulse.reports/v1";
/// Schema id of [`NodeIdentityV1`].
pub const IDENTITY_SCHEMA_V1: &str = "gpulse.identity/v1";

/// Why a report was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// The agent's own, every `report.interval`, appended to the chain.
    Hourly,
    /// Asked for (`/v1/report`), maybe with a verifier's nonce; not appended.
    OnDemand,
}

impl ReportKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::OnDemand => "on_demand",
        }
    }
}

/// A signed score report. Serialised without `signature`, canonicalised, it is what the
/// signature covers.
#[derive(Debug, Serialize)]
pub struct ReportV1 {
    pub schema: &'static str,
    /// Position in the chain (1, 2, …); 0 for an on-demand report.
    pub seq: u64,
    /// `hourly` or `on_demand`.
    pub kind: &'static str,
    /// `5m`, `1h`, `24h` or `7d`.
    pub window: &'static str,
    pub start: String,
    pub end: String,
    pub created_at: String,
    pub node: String,
    pub mode: &'static str,
    pub agent: AgentV1,
    pub identity: ReportIdentityV1,
    pub score: ReportScoreV1,
    pub evidence: ReportEvidenceV1,
    /// The configured weights, normalised to sum to 1.
    pub weights: BTreeMap<&'static str, f64>,
    pub constants: ConstantsV1,
    /// The sub-scores left out of the total, and why.
    pub unmeasured: Vec<UnmeasuredV1>,
    /// `null` without `score.price_per_hour`.
    pub cost: Option<CostV1>,
    pub claims: Vec<ClaimV1>,
    /// The verifier's nonce, hex; `null` when none was given.
    pub nonce: Option<String>,
    /// SHA-256 (hex) of the previous chained report's bytes; `null` at a chain's start.
    pub prev_report_sha256: Option<String>,
    /// Absent while signing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureV1>,
}

#[derive(Debug, Serialize)]
pub struct AgentV1 {
    pub version: &'static str,
    /// SHA-256 of the running binary (`/proc/self/exe`); `null` when it could not be read.
    pub binary_sha256: Option<String>,
}

/// What the report is about: the GPUs NVML saw and the Akash lease.
#[derive(Debug, Serialize)]
pub struct ReportIdentityV1 {
    pub gpus: Vec<GpuIdentityV1>,
    pub akash: Option<AkashLeaseV1>,
}

#[derive(Debug, Serialize)]
pub struct GpuIdentityV1 {
    pub index: u32,
    pub uuid: String,
    pub serial: Option<String>,
    pub name: String,
    pub pci_bus_id: String,
    pub driver_version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ReportScoreV1 {
    /// Q, 0-100; `null` when nothing is measured.
    pub total: Option<f64>,
    pub observed_seconds: u64,
    pub coverage: f64,
    pub reweighted: bool,
    pub components: Vec<ReportComponentV1>,
    pub gates: Vec<GateV1>,
    pub latency: LatencyV1,
}

#[derive(Debug, Serialize)]
pub struct ReportComponentV1 {
    pub component: &'static str,
    pub letter: &'static str,
    pub value: Option<f64>,
    pub unmeasured: Option<&'static str>,
    pub weight: f64,
    pub effective_weight: f64,
    pub detail: BTreeMap<&'static str, String>,
}

#[derive(Debug, Serialize)]
pub struct UnmeasuredV1 {
    pub component: &'static str,
    /// `not_measurable`, `no_evidence` or `zero_weight`.
    pub reason: &'static str,
}

/// The window's evidence: each sub-score's tally, and the raw sums of the ledger's buckets.
#[derive(Debug, Serialize)]
pub struct ReportEvidenceV1 {
    /// Per sub-score: good of total, in its unit.
    pub components: BTreeMap<&'static str, EvidenceV1>,
    pub span_seconds: u64,
    pub observed_seconds: u64,
    pub buckets: u64,
    pub agent_starts: u64,
    pub clock_steps_back: u64,
    /// Just past the last bucket with a critical GPU condition; `null` when none.
    pub last_critical_end: Option<String>,
    /// Upper bounds of the latency bins; every `*_bins` list has one more bin (above all).
    pub latency_bounds_seconds: Vec<f64>,
    pub probes: Vec<ProbeEvidenceV1>,
    pub gpus: Vec<GpuEvidenceV1>,
    pub job: JobEvidenceV1,
}

#[derive(Debug, Serialize)]
pub struct ProbeEvidenceV1 {
    pub probe: String,
    /// Checks by state: up, loading, starting, degraded, down.
    pub checks: BTreeMap<&'static str, u64>,
    pub outages_started: u64,
    pub outages_recovered: u64,
    pub recovery_seconds_sum: f64,
    pub recovery_seconds_max: f64,
    /// Synthetic requests.
    pub requests: RequestsV1,
    pub output_tokens: u64,
    pub ttft_bins: Vec<u64>,
    pub e2e_bins: Vec<u64>,
    /// The server's own counters; `null` when they are not scraped.
    pub server: Option<ServerEvidenceV1>,
}

#[derive(Debug, Serialize)]
pub struct RequestsV1 {
    pub ok: u64,
    pub failed: u64,
    pub within_slo: u64,
}

#[derive(Debug, Serialize)]
pub struct ServerEvidenceV1 {
    pub requests_ok: Option<u64>,
    pub requests_failed: Option<u64>,
    pub output_tokens: Option<u64>,
    pub ttft_bins: Option<Vec<u64>>,
    pub e2e_bins: Option<Vec<u64>>,
    pub ttft_within_slo: Option<f64>,
    pub e2e_within_slo: Option<f64>,
    pub counter_resets: u64,
}

#[derive(Debug, Serialize)]
pub struct GpuEvidenceV1 {
    pub uuid: String,
    pub sampled_seconds: u64,
    /// Seconds per health state: healthy, degraded, unhealthy.
    pub seconds_by_state: BTreeMap<&'static str, u64>,
    pub critical_seconds: u64,
    pub busy_seconds: u64,
    pub throttled_busy_seconds: u64,
    /// Busy seconds per active clock-event reason.
    pub throttle_reasons: BTreeMap<&'static str, u64>,
    /// Xid occurrences: critical, warning.
    pub xids: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct JobEvidenceV1 {
    pub starts: u64,
    /// Runs ended, per outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    pub recoveries: u64,
    pub recovery_seconds_sum: f64,
    pub recovery_seconds_max: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureV1 {
    /// `ed25519`.
    pub alg: String,
    /// The signer's public key, hex.
    pub public_key: String,
    /// The signature, hex.
    pub value: String,
}

/// The fields of a report a verifier and the chain read back (the rest is ignored here).
#[derive(Debug, Clone, Deserialize)]
pub struct ReportFieldsV1 {
    pub schema: String,
    pub seq: u64,
    pub kind: String,
    pub window: String,
    pub start: String,
    pub end: String,
    pub created_at: String,
    pub node: String,
    pub nonce: Option<String>,
    pub prev_report_sha256: Option<String>,
    pub signature: Option<SignatureV1>,
}

/// What a report is built from besides the score.
#[derive(Debug, Clone, Copy)]
pub struct ReportParts<'a> {
    pub kind: ReportKind,
    pub seq: u64,
    pub window: ScoreWindow,
    /// RFC 3339.
    pub created_at: &'a str,
    pub node: &'a str,
    pub binary_sha256: Option<&'a str>,
    /// Hex.
    pub nonce: Option<&'a str>,
    pub prev_report_sha256: Option<&'a str>,
}

/// The GPUs of a sample, with its driver.
pub fn gpu_identities(gpu: Option<&GpuSample>) -> Vec<GpuIdentityV1> {
    let Some(gpu) = gpu else {
        return Vec::new();
    };
    gpu.devices
        .iter()
        .map(|d| GpuIdentityV1 {
            index: d.identity.index,
            uuid: d.identity.uuid.clone(),
            serial: d.identity.serial.clone(),
            name: d.identity.name.clone(),
            pci_bus_id: d.identity.pci_bus_id.clone(),
            driver_version: gpu.driver_version.clone(),
        })
        .collect()
}

fn bins(b: &Bins) -> Vec<u64> {
    b.to_vec()
}

impl From<&ProbeTally> for ProbeEvidenceV1 {
    fn from(p: &ProbeTally) -> Self {
        Self {
            probe: p.probe.clone(),
            checks: ProbeState::ALL
                .iter()
                .map(|s| (s.as_str(), p.checks_in(*s)))
                .collect(),
            outages_started: p.outages_started,
            outages_recovered: p.outages_recovered,
            recovery_seconds_sum: p.recovery_seconds_sum,
            recovery_seconds_max: p.recovery_seconds_max,
            requests: RequestsV1 {
                ok: p.requests_ok,
                failed: p.requests_failed,
                within_slo: p.requests_within_slo,
            },
            output_tokens: p.output_tokens,
            ttft_bins: bins(&p.ttft),
            e2e_bins: bins(&p.e2e),
            server: p.server.as_ref().map(ServerEvidenceV1::from),
        }
    }
}

impl From<&ServerTally> for ServerEvidenceV1 {
    fn from(s: &ServerTally) -> Self {
        Self {
            requests_ok: s.requests_ok,
            requests_failed: s.requests_failed,
            output_tokens: s.output_tokens,
            ttft_bins: s.ttft.as_ref().map(bins),
            e2e_bins: s.e2e.as_ref().map(bins),
            ttft_within_slo: s.ttft_within_slo,
            e2e_within_slo: s.e2e_within_slo,
            counter_resets: s.counter_resets,
        }
    }
}

impl From<&GpuTally> for GpuEvidenceV1 {
    fn from(g: &GpuTally) -> Self {
        Self {
            uuid: g.uuid.clone(),
            sampled_seconds: g.sampled_seconds,
            seconds_by_state: [
                ("healthy", g.healthy_seconds),
                ("degraded", g.degraded_seconds),
                ("unhealthy", g.unhealthy_seconds),
            ]
            .into_iter()
            .collect(),
            critical_seconds: g.critical_seconds,
            busy_seconds: g.busy_seconds,
            throttled_busy_seconds: g.throttled_busy_seconds,
            throttle_reasons: g
                .throttle_reasons
                .iter()
                .map(|(r, s)| (r.as_str(), *s))
                .collect(),
            xids: [("critical", g.critical_xids), ("warning", g.warning_xids)]
                .into_iter()
                .collect(),
        }
    }
}

impl From<&JobTally> for JobEvidenceV1 {
    fn from(j: &JobTally) -> Self {
        Self {
            starts: j.starts,
            outcomes: JobOutcome::ALL
                .iter()
                .zip(j.outcomes)
                .map(|(o, n)| (o.as_str(), n))
                .collect(),
            recoveries: j.recoveries,
            recovery_seconds_sum: j.recovery_seconds_sum,
            recovery_seconds_max: j.recovery_seconds_max,
        }
    }
}

impl ReportEvidenceV1 {
    fn new(w: &WindowScore, e: &Evidence) -> Self {
        let sum = &e.sum;
        Self {
            components: w
                .components
                .iter()
                .map(|c| {
                    let t = &c.evidence;
                    let tally = EvidenceV1 {
                        good: t.good,
                        total: t.total,
                        unit: t.unit,
                    };
                    (c.component.as_str(), tally)
                })
                .collect(),
            span_seconds: sum.span,
            observed_seconds: sum.observed_seconds,
            buckets: e.buckets,
            agent_starts: sum.agent_starts,
            clock_steps_back: sum.clock_steps_back,
            last_critical_end: e.last_critical_end.map(time),
            latency_bounds_seconds: LATENCY_BUCKETS.to_vec(),
            probes: sum.probes.iter().map(ProbeEvidenceV1::from).collect(),
            gpus: sum.gpus.iter().map(GpuEvidenceV1::from).collect(),
            job: JobEvidenceV1::from(&sum.job),
        }
    }
}

impl ReportV1 {
    /// The unsigned report of `parts.window` from `snap`'s score; `None` before the first
    /// evaluation.
    pub fn build(snap: &Snapshot, parts: &ReportParts<'_>) -> Option<Self> {
        let state: &ScoreState = snap.score.as_deref()?;
        let at = ScoreWindow::ALL.iter().position(|w| *w == parts.window)?;
        let w = state.windows.get(at).filter(|w| w.window == parts.window)?;
        let e = state.evidence.get(at)?;
        Some(Self {
            schema: REPORT_SCHEMA_V1,
            seq: parts.seq,
            kind: parts.kind.as_str(),
            window: parts.window.as_str(),
            start: time(w.start),
            end: time(w.end),
            created_at: parts.created_at.to_owned(),
            node: parts.node.to_owned(),
            mode: state.reach.mode.as_str(),
            agent: AgentV1 {
                version: env!("CARGO_PKG_VERSION"),
                binary_sha256: parts.binary_sha256.map(str::to_owned),
            },
            identity: ReportIdentityV1 {
                gpus: gpu_identities(snap.gpu.as_deref()),
                akash: IdentityV1::from(snap.identity.as_ref()).akash,
            },
            score: ReportScoreV1 {
                total: w.total,
                observed_seconds: w.observed_seconds,
                coverage: w.coverage,
                reweighted: w.reweighted,
                components: w
                    .components
                    .iter()
                    .map(|c| ReportComponentV1 {
                        component: c.component.as_str(),
                        letter: c.component.letter(),
                        value: c.value,
                        unmeasured: c.unmeasured.map(|u| u.as_str()),
                        weight: c.weight,
                        effective_weight: c.effective_weight,
                        detail: detail(c),
                    })
                    .collect(),
                gates: w.gates.iter().map(GateV1::from).collect(),
                latency: LatencyV1::from(&w.latency),
            },
            evidence: ReportEvidenceV1::new(w, e),
            weights: normalised_weights(&state.config),
            constants: ConstantsV1::from(state.config.as_ref()),
            unmeasured: w
                .components
                .iter()
                .filter_map(|c| {
                    c.unmeasured.map(|u| UnmeasuredV1 {
                        component: c.component.as_str(),
                        reason: u.as_str(),
                    })
                })
                .collect(),
            cost: w.cost.as_ref().map(CostV1::from),
            claims: state.claims.iter().map(ClaimV1::from).collect(),
            nonce: parts.nonce.map(str::to_owned),
            prev_report_sha256: parts.prev_report_sha256.map(str::to_owned),
            signature: None,
        })
    }
}

/// `gpulse.reports/v1`: the kept chain, oldest first, one page.
#[derive(Debug, Serialize)]
pub struct ReportsV1 {
    pub schema: &'static str,
    pub node: String,
    /// Kept in `state.redb` (else in memory: lost on restart).
    pub persistent: bool,
    pub max_reports: usize,
    /// The newest chained report; `null` before the first.
    pub head: Option<ChainHeadV1>,
    /// Reports that were signed but could not be kept (the disk failed); the chain skips them.
    pub write_failures: u64,
    pub reports: Vec<ReportEntryV1>,
    /// Pass as `?since=` for the next page; `null` on the last.
    pub next_since: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHeadV1 {
    pub seq: u64,
    pub sha256: String,
}

/// One kept report, as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportEntryV1 {
    pub seq: u64,
    pub window: String,
    pub start: String,
    pub end: String,
    pub created_at: String,
    /// SHA-256 of the report's bytes, as `GET /v1/reports/SEQ` serves them.
    pub sha256: String,
    pub prev_report_sha256: Option<String>,
    /// `SHA256:…` of the key that signed it.
    pub key_fingerprint: String,
    pub bytes: u64,
}

/// `gpulse.identity/v1`: who signs the reports and what they identify.
#[derive(Debug, Serialize)]
pub struct NodeIdentityV1 {
    pub schema: &'static str,
    pub node: String,
    pub mode: &'static str,
    pub agent_version: &'static str,
    /// `null` until hashed (at start) or when the binary could not be read.
    pub binary_sha256: Option<String>,
    /// `null` when reports cannot be signed (see `signing_error`).
    pub public_key: Option<PublicKeyV1>,
    pub signing_error: Option<String>,
    pub gpus: Vec<GpuIdentityV1>,
    pub akash: Option<AkashLeaseV1>,
    pub chain: ChainV1,
}

#[derive(Debug, Serialize)]
pub struct PublicKeyV1 {
    pub alg: &'static str,
    pub hex: String,
    pub base64: String,
    /// `SHA256:` and the hex SHA-256 of the key's 32 bytes.
    pub fingerprint: String,
    pub created_at: String,
    /// Kept in `agent.state_dir/report.key` (else made for this process only).
    pub persistent: bool,
}

#[derive(Debug, Serialize)]
pub struct ChainV1 {
    pub persistent: bool,
    pub reports: u64,
    pub head: Option<ChainHeadV1>,
}

/// Bytes a verifier's nonce may have.
pub const NONCE_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// A verifier's nonce as a report carries it: 16-64 bytes as hex (either case in, lower-case
/// out); `None` otherwise.
pub fn parse_nonce(hex: &str) -> Option<String> {
    let even = hex.len().is_multiple_of(2);
    let bytes = hex.len() / 2;
    (even && NONCE_BYTES.contains(&bytes) && hex.bytes().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}
