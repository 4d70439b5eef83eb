//! `gpulse.bench/v1` (`gpulse bench --json`): a load test's settings, its steps (throughput,
//! TTFT, inter-token and end-to-end percentiles, SLO attainment), the best concurrency under
//! the SLOs and the cost per million output tokens there.

use serde::Serialize;

use super::rfc3339;
use crate::model::{BenchReport, Quantiles, StepStats};

/// Schema id of [`BenchV1`].
pub const BENCH_SCHEMA_V1: &str = "gpulse.bench/v1";

/// The whole report of one `gpulse bench`.
#[derive(Debug, Serialize)]
pub struct BenchV1 {
    pub schema: &'static str,
    pub agent_version: &'static str,
    pub started_at: String,
    pub finished_at: String,
    pub target: BenchTargetV1,
    pub settings: BenchSettingsV1,
    /// One per step that ran, in ascending concurrency.
    pub steps: Vec<BenchStepV1>,
    /// The highest concurrency whose SLO attainment reached `settings.latency_objective`;
    /// `null` when none did (`best_concurrency_reason` says why).
    pub best_concurrency: Option<u32>,
    pub best_concurrency_reason: String,
    /// `price_per_hour / (output tokens/s × 3600) × 1e6` at the best concurrency; `null`
    /// without a price or a best step.
    pub cost_per_million_output_tokens: Option<f64>,
    /// `[score] price_per_hour`; `null` when unset (0).
    pub price_per_hour: Option<f64>,
    pub currency: Option<String>,
    /// Why the bench ended before every step ran (server not ready, warm-up failed, a step
    /// that failed every request); `null` when it ran them all.
    pub stopped: Option<String>,
    /// Ended by SIGINT/SIGTERM; the steps that finished are listed.
    pub interrupted: bool,
}

#[derive(Debug, Serialize)]
pub struct BenchTargetV1 {
    /// The configured probe's name, or `bench` for `--url`.
    pub probe: String,
    pub kind: &'static str,
    pub url: String,
    /// The model named in the requests; empty: the server picked.
    pub model: String,
}

#[derive(Debug, Serialize)]
pub struct BenchSettingsV1 {
    pub concurrency: Vec<u32>,
    pub step_duration_seconds: f64,
    pub max_tokens: u32,
    /// Words of the built-in prompt; `null` for `--prompt`.
    pub prompt_words: Option<u32>,
    pub prompt_chars: usize,
    /// Prompt tokens the server counted for the warm-up request, random prefix included.
    pub prompt_tokens_reported: Option<u64>,
    /// What precedes the fixed prompt in each request.
    pub prompt_prefix: &'static str,
    pub ignore_eos: bool,
    pub request_timeout_seconds: f64,
    pub max_requests_per_step: Option<u64>,
    pub ttft_slo_seconds: f64,
    pub latency_slo_seconds: f64,
    /// The share of requests that must meet both SLOs (`[score] latency_objective`).
    pub latency_objective: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchStepV1 {
    pub concurrency: u32,
    /// From the step's start to the end of its last request.
    pub duration_seconds: f64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub failures: Vec<BenchFailureV1>,
    pub requests_per_second: f64,
    pub output_tokens: u64,
    pub output_tokens_per_second: f64,
    pub ttft_seconds: BenchQuantilesV1,
    /// Gaps between stream chunks that carried tokens.
    pub inter_token_seconds: BenchQuantilesV1,
    pub e2e_seconds: BenchQuantilesV1,
    /// Requests that met both SLOs.
    pub slo_met: u64,
    /// `slo_met / (requests_ok + requests_failed)`; `null` without requests.
    pub slo_attainment: Option<f64>,
    pub meets_objective: bool,
    /// Why the step ended before its duration (every request failing).
    pub stopped_early: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct BenchFailureV1 {
    /// The probe reason: `timeout`, `connect_refused`, `http_status`, `bad_body`, …
    pub reason: &'static str,
    pub count: u64,
    /// The first such request's detail (bounded).
    pub example: String,
}

/// Nearest-rank percentiles (`null` without samples) over at most 100 000 kept samples.
#[derive(Debug, Serialize)]
pub struct BenchQuantilesV1 {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub count: u64,
}

impl From<&Quantiles> for BenchQuantilesV1 {
    fn from(q: &Quantiles) -> Self {
        Self {
            p50: q.p50,
            p99: q.p99,
            count: q.count,
        }
    }
}

impl BenchStepV1 {
    fn from_stats(s: &StepStats, objective: f64) -> Self {
        Self {
            concurrency: s.concurrency,
            duration_seconds: s.elapsed.as_secs_f64(),
            requests_ok: s.ok,
            requests_failed: s.failed,
            failures: s
                .failures
                .iter()
                .map(|f| BenchFailureV1 {
                    reason: f.reason.as_str(),
                    count: f.count,
                    example: f.example.clone(),
                })
                .collect(),
            requests_per_second: s.requests_per_second,
            output_tokens: s.output_tokens,
            output_tokens_per_second: s.output_tokens_per_second,
            ttft_seconds: (&s.ttft).into(),
            inter_token_seconds: (&s.inter_token).into(),
            e2e_seconds: (&s.e2e).into(),
            slo_met: s.slo_met,
            slo_attainment: s.slo_attainment,
            meets_objective: s.meets(objective),
            stopped_early: s.stopped_early.clone(),
        }
    }
}

impl BenchV1 {
    pub fn from_report(r: &BenchReport) -> Self {
        let s = &r.settings;
        Self {
            schema: BENCH_SCHEMA_V1,
            agent_version: env!("CARGO_PKG_VERSION"),
            started_at: rfc3339(r.started_at),
            finished_at: rfc3339(r.finished_at),
            target: BenchTargetV1 {
                probe: s.probe.clone(),
                kind: s.kind,
                url: s.url.clone(),
                model: s.model.clone(),
            },
            settings: BenchSettingsV1 {
                concurrency: s.concurrency.clone(),
                step_duration_seconds: s.step_duration.as_secs_f64(),
                max_tokens: s.max_tokens,
                prompt_words: s.prompt_words,
                prompt_chars: s.prompt_chars,
                prompt_tokens_reported: s.prompt_tokens_reported,
                prompt_prefix: "8 random hex digits and a space, new per request",
                ignore_eos: s.ignore_eos,
                request_timeout_seconds: s.timeout.as_secs_f64(),
                max_requests_per_step: s.max_requests,
                ttft_slo_seconds: s.slo.ttft.as_secs_f64(),
                latency_slo_seconds: s.slo.e2e.as_secs_f64(),
                latency_objective: s.objective,
            },
            steps: r
                .steps
                .iter()
                .map(|step| BenchStepV1::from_stats(step, s.objective))
                .collect(),
            best_concurrency: r.best.concurrency,
            best_concurrency_reason: r.best.reason.clone(),
            cost_per_million_output_tokens: r.cost_per_million_output_tokens,
            price_per_hour: s.price.as_ref().map(|p| p.per_hour),
            currency: s.price.as_ref().map(|p| p.currency.clone()),
            stopped: r.stopped.clone(),
            interrupted: r.interrupted,
        }
    }

    pub fn to_json_pretty(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map_err(|e| e.to_string())
    }
}
