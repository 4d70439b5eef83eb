//! `gpulse.probes/v1` (`GET /v1/probes`): every probe's state, outages, synthetic requests and
//! the server's lifted metrics.

use serde::Serialize;

use super::*;
use crate::model::{InferenceStats, LatencyHistogram, ServerHistogram, ServerScrapes};
use crate::store::Snapshot;

/// Schema id of [`ProbesV1`].
pub const PROBES_SCHEMA_V1: &str = "gpulse.probes/v1";

/// `/v1/probes`: every configured probe's last check and its outages.
#[derive(Debug, Serialize)]
pub struct ProbesV1 {
    pub schema: &'static str,
    pub agent_version: &'static str,
    pub node: String,
    pub probes: Vec<ProbeV1>,
}

#[derive(Debug, Serialize)]
pub struct ProbeV1 {
    pub name: String,
    pub kind: &'static str,
    pub interval_seconds: f64,
    /// `up`, `loading`, `starting`, `degraded`, `down`, or `unknown` before the first check.
    pub state: &'static str,
    /// Bounded: `connect_refused`, `timeout`, `http_status`, `bad_body`, `model_missing`,
    /// `tls`, `redirect_loop`, `body_too_large`, `dns`, `not_ready`; absent when up.
    pub reason: Option<&'static str>,
    pub detail: String,
    pub checked_at: Option<String>,
    pub check_duration_seconds: Option<f64>,
    pub models: Vec<String>,
    pub outages_total: u64,
    pub last_recovery_seconds: Option<f64>,
    /// When the start-up in progress began (the target's start); absent when not starting.
    pub starting_since: Option<String>,
    /// From the last start to the first ready check; absent before one.
    pub last_ready_seconds: Option<f64>,
    /// Recent outages, oldest first; `end` absent while it goes on.
    pub outages: Vec<OutageV1>,
    /// Synthetic inference requests; absent when the probe does not send them.
    pub inference: Option<InferenceV1>,
    /// The server's own metrics, lifted into common names; absent when not scraped.
    pub server_metrics: Option<ServerMetricsV1>,
}

/// A probe's scrapes of the server's /metrics and what the last good one lifted.
#[derive(Debug, Serialize)]
pub struct ServerMetricsV1 {
    pub scrapes: u64,
    pub failures: u64,
    /// Absent before the first scrape.
    pub last_ok: Option<bool>,
    pub last_at: Option<String>,
    pub last_duration_seconds: f64,
    /// Bounded reason (as a check's) and detail of the last failure; absent when it worked.
    pub last_error_reason: Option<&'static str>,
    pub last_error: Option<String>,
    /// From the last successful scrape; absent before one.
    pub lifted: Option<LiftedV1>,
}

/// Counters are cumulative since the server started; `null` = the server has no such series.
#[derive(Debug, Serialize)]
pub struct LiftedV1 {
    /// Whose names were found: vllm, sglang, tgi, triton, trtllm, llamacpp, mlserver, unknown.
    pub dialect: &'static str,
    pub series: usize,
    pub invalid_lines: usize,
    pub truncated: bool,
    pub requests_running: Option<f64>,
    pub requests_waiting: Option<f64>,
    pub requests_succeeded_total: Option<f64>,
    pub requests_failed_total: Option<f64>,
    pub prompt_tokens_total: Option<f64>,
    pub generation_tokens_total: Option<f64>,
    pub kv_cache_usage_ratio: Option<f64>,
    pub preemptions_total: Option<f64>,
    pub time_to_first_token_seconds: Option<ServerHistogramV1>,
    pub e2e_request_latency_seconds: Option<ServerHistogramV1>,
    pub inter_token_latency_seconds: Option<ServerHistogramV1>,
}

/// Since the server started: count, mean, and quantiles when it has buckets.
#[derive(Debug, Serialize)]
pub struct ServerHistogramV1 {
    pub count: f64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl ServerHistogramV1 {
    fn of(h: &ServerHistogram) -> Self {
        Self {
            count: h.count,
            mean: h.mean(),
            p50: h.quantile(0.5),
            p90: h.quantile(0.9),
            p99: h.quantile(0.99),
        }
    }
}

impl ServerMetricsV1 {
    fn from_scrapes(s: &ServerScrapes) -> Self {
        Self {
            scrapes: s.attempts,
            failures: s.failures,
            last_ok: s.last_ok(),
            last_at: s.last_at.map(rfc3339),
            last_duration_seconds: s.last_duration.as_secs_f64(),
            last_error_reason: s.last_error.as_ref().map(|(r, _)| r.as_str()),
            last_error: s.last_error.as_ref().map(|(_, d)| d.clone()),
            lifted: s.metrics.as_ref().map(|m| LiftedV1 {
                dialect: m.dialect,
                series: m.series,
                invalid_lines: m.invalid_lines,
                truncated: m.truncated,
                requests_running: m.requests_running,
                requests_waiting: m.requests_waiting,
                requests_succeeded_total: m.requests_succeeded_total,
                requests_failed_total: m.requests_failed_total,
                prompt_tokens_total: m.prompt_tokens_total,
                generation_tokens_total: m.generation_tokens_total,
                kv_cache_usage_ratio: m.kv_cache_usage_ratio,
                preemptions_total: m.preemptions_total,
                time_to_first_token_seconds: m
                    .time_to_first_token
                    .as_ref()
                    .map(ServerHistogramV1::of),
                e2e_request_latency_seconds: m.e2e_latency.as_ref().map(ServerHistogramV1::of),
                inter_token_latency_seconds: m
                    .inter_token_latency
                    .as_ref()
                    .map(ServerHistogramV1::of),
            }),
        }
    }
}

/// A probe's synthetic requests since the agent started.
#[derive(Debug, Serialize)]
pub struct InferenceV1 {
    pub ttft_slo_seconds: f64,
    pub latency_slo_seconds: f64,
    pub requests_succeeded: u64,
    pub requests_failed: u64,
    /// Requests that failed or missed an SLO.
    pub slo_violations: u64,
    pub output_tokens_total: u64,
    /// Estimated from the histogram of successful requests (PromQL-style interpolation).
    pub ttft_seconds: QuantilesV1,
    pub duration_seconds: QuantilesV1,
    /// Absent until the first request.
    pub last: Option<InferenceRequestV1>,
}

#[derive(Debug, Serialize)]
pub struct QuantilesV1 {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl QuantilesV1 {
    fn of(h: &LatencyHistogram) -> Self {
        Self {
            p50: h.quantile(0.5),
            p90: h.quantile(0.9),
            p99: h.quantile(0.99),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InferenceRequestV1 {
    pub at: String,
    pub ok: bool,
    /// Same set as a check's reason; absent when ok.
    pub reason: Option<&'static str>,
    pub detail: String,
    /// The model named in the request; empty when the server picked.
    pub model: String,
    pub ttft_seconds: Option<f64>,
    pub duration_seconds: f64,
    pub output_tokens: Option<u64>,
    pub tokens_per_second: Option<f64>,
    /// Ollama: the request (re)loaded the model, so its timing includes the load.
    pub caused_load: bool,
}

impl InferenceV1 {
    fn from_stats(i: &InferenceStats) -> Self {
        Self {
            ttft_slo_seconds: i.ttft_slo.as_secs_f64(),
            latency_slo_seconds: i.latency_slo.as_secs_f64(),
            requests_succeeded: i.succeeded,
            requests_failed: i.failed,
            slo_violations: i.slo_violations,
            output_tokens_total: i.output_tokens_total,
            ttft_seconds: QuantilesV1::of(&i.ttft),
            duration_seconds: QuantilesV1::of(&i.duration),
            last: i.last.as_ref().map(|l| InferenceRequestV1 {
                at: rfc3339(l.at),
                ok: l.ok,
                reason: l.reason.map(|r| r.as_str()),
                detail: l.detail.clone(),
                model: l.model.clone(),
                ttft_seconds: l.ttft.map(|d| d.as_secs_f64()),
                duration_seconds: l.duration.as_secs_f64(),
                output_tokens: l.output_tokens,
                tokens_per_second: l.tokens_per_second(),
                caused_load: l.caused_load,
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct OutageV1 {
    pub start: String,
    pub end: Option<String>,
    pub cause: &'static str,
}

impl ProbesV1 {
    pub fn from_snapshot(snap: &Snapshot, node: &str) -> Self {
        Self {
            schema: PROBES_SCHEMA_V1,
            agent_version: env!("CARGO_PKG_VERSION"),
            node: node.to_owned(),
            probes: snap
                .probes
                .iter()
                .map(|p| ProbeV1 {
                    name: p.name.clone(),
                    kind: p.kind,
                    interval_seconds: p.interval.as_secs_f64(),
                    state: p.last.as_ref().map_or("unknown", |l| l.state.as_str()),
                    reason: p.last.as_ref().and_then(|l| l.reason).map(|r| r.as_str()),
                    detail: p
                        .last
                        .as_ref()
                        .map(|l| l.detail.clone())
                        .unwrap_or_default(),
                    checked_at: p.last.as_ref().map(|l| rfc3339(l.checked_at)),
                    check_duration_seconds: p.last.as_ref().map(|l| l.latency.as_secs_f64()),
                    models: p
                        .last
                        .as_ref()
                        .map(|l| l.models.clone())
                        .unwrap_or_default(),
                    outages_total: p.outages_total,
                    last_recovery_seconds: p.last_recovery.map(|d| d.as_secs_f64()),
                    starting_since: p.starting_since().map(rfc3339),
                    last_ready_seconds: p.last_ready_after.map(|d| d.as_secs_f64()),
                    outages: p
                        .outages
                        .iter()
                        .map(|o| OutageV1 {
                            start: rfc3339(o.start),
                            end: o.end.map(rfc3339),
                            cause: o.cause.as_str(),
                        })
                        .collect(),
                    inference: p.inference.as_ref().map(InferenceV1::from_stats),
                    server_metrics: p.server.as_ref().map(ServerMetricsV1::from_scrapes),
                })
                .collect(),
        }
    }
}
