//! Probe families: readiness checks, synthetic inference requests, and the server's own
//! metrics lifted into common names.

use super::{
    AsVal as _, Ctx, Family, Hist, Id, Kind, OtlpHistogram, Scope, Series, Val, dim, flag,
};
use crate::model::{ProbeState, ProbeStatus, ServerHistogram, ServerMetrics};

plain_family!(probe, Scope::Probe);

/// A series function over the probes that scrape their server and have a lifted reading.
macro_rules! server_value {
    ($value:expr) => {{
        fn series<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
            let value: fn(&ServerMetrics) -> Option<f64> = $value;
            for p in c.snap.probes.iter() {
                let m = p.server.as_ref().and_then(|s| s.metrics.as_ref());
                s.probe(p, [], m.and_then(value));
            }
        }
        series
    }};
}

/// A series function over the probes whose server has this histogram.
macro_rules! server_histogram {
    ($value:expr) => {{
        fn series<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
            let value: fn(&ServerMetrics) -> Option<&ServerHistogram> = $value;
            for p in c.snap.probes.iter() {
                let m = p.server.as_ref().and_then(|s| s.metrics.as_ref());
                if let Some(h) = m.and_then(value) {
                    s.histogram(Id::Probe(p), Hist::Server(h));
                }
            }
        }
        series
    }};
}

/// Probes that have been checked, with their last check.
fn checked<'a>(
    c: &Ctx<'a>,
) -> impl Iterator<Item = (&'a ProbeStatus, &'a crate::model::ProbeSample)> {
    c.snap
        .probes
        .iter()
        .filter_map(|p| p.last.as_ref().map(|l| (p, l)))
}

/// Probes that send synthetic requests.
fn sending<'a>(
    c: &Ctx<'a>,
) -> impl Iterator<Item = (&'a ProbeStatus, &'a crate::model::InferenceStats)> {
    c.snap
        .probes
        .iter()
        .filter_map(|p| p.inference.as_ref().map(|i| (p, i)))
}

/// Their last request.
fn last<'a>(
    c: &Ctx<'a>,
) -> impl Iterator<Item = (&'a ProbeStatus, &'a crate::model::InferenceSample)> {
    sending(c).filter_map(|(p, i)| i.last.as_ref().map(|l| (p, l)))
}

const SUM_COUNT: Kind = Kind::Histogram(OtlpHistogram::SumCount {
    count_unit: "{request}",
});

pub const FAMILIES: &[Family] = &[
    probe(
        "gpulse_probe_up",
        "gpulse.probe.up",
        "1",
        "1 when the probe's last check found the server up (ready, expected model listed).",
        Kind::Gauge,
        |c, s| {
            for (p, l) in checked(c) {
                s.probe(p, [], Some(flag(l.state == ProbeState::Up)));
            }
        },
    ),
    Family {
        dims: &[dim("state", "gpulse.probe.state")],
        ..probe(
            "gpulse_probe_state",
            "gpulse.probe.state",
            "1",
            "1 for the probe's current state (up, loading, starting, degraded, down), 0 for the others.",
            Kind::Gauge,
            |c, s| {
                for (p, l) in checked(c) {
                    for state in ProbeState::ALL {
                        s.probe(p, [state.val()], Some(flag(state == l.state)));
                    }
                }
            },
        )
    },
    probe(
        "gpulse_probe_check_duration_seconds",
        "gpulse.probe.check.duration",
        "s",
        "How long the probe's last check took.",
        Kind::Gauge,
        |c, s| {
            for (p, l) in checked(c) {
                s.probe(p, [], Some(l.latency.as_secs_f64()));
            }
        },
    ),
    probe(
        "gpulse_probe_outages",
        "gpulse.probe.outages",
        "{outage}",
        "Outages (transitions to down) since the agent started.",
        Kind::Counter,
        |c, s| {
            for p in c.snap.probes.iter() {
                s.probe(p, [], Some(p.outages_total as f64));
            }
        },
    ),
    probe(
        "gpulse_probe_last_recovery_seconds",
        "gpulse.probe.last_recovery",
        "s",
        "How long the probe's last finished outage lasted.",
        Kind::Gauge,
        |c, s| {
            for p in c.snap.probes.iter() {
                s.probe(p, [], p.last_recovery.map(|d| d.as_secs_f64()));
            }
        },
    ),
    // Synthetic inference requests: only probes that send them have these series.
    Family {
        dims: &[dim("outcome", "gpulse.probe.inference.outcome")],
        ..probe(
            "gpulse_probe_inference_requests",
            "gpulse.probe.inference.requests",
            "{request}",
            "Synthetic inference requests by outcome (success: a complete, well-formed answer).",
            Kind::Counter,
            |c, s| {
                for (p, i) in sending(c) {
                    s.probe(p, [Val::Str("success")], Some(i.succeeded as f64));
                    s.probe(p, [Val::Str("failure")], Some(i.failed as f64));
                }
            },
        )
    },
    probe(
        "gpulse_probe_inference_slo_violations",
        "gpulse.probe.inference.slo_violations",
        "{request}",
        "Synthetic requests that failed or missed the probe's ttft_slo or latency_slo.",
        Kind::Counter,
        |c, s| {
            for (p, i) in sending(c) {
                s.probe(p, [], Some(i.slo_violations as f64));
            }
        },
    ),
    Family {
        dims: &[dim("target", "gpulse.probe.inference.target")],
        ..probe(
            "gpulse_probe_inference_slo_seconds",
            "gpulse.probe.inference.slo",
            "s",
            "The probe's latency objectives: target=ttft (first token) and target=e2e (whole answer).",
            Kind::Gauge,
            |c, s| {
                for (p, i) in sending(c) {
                    s.probe(p, [Val::Str("ttft")], Some(i.ttft_slo.as_secs_f64()));
                    s.probe(p, [Val::Str("e2e")], Some(i.latency_slo.as_secs_f64()));
                }
            },
        )
    },
    probe(
        "gpulse_probe_inference_output_tokens",
        "gpulse.probe.inference.output_tokens",
        "{token}",
        "Tokens generated by successful synthetic requests.",
        Kind::Counter,
        |c, s| {
            for (p, i) in sending(c) {
                s.probe(p, [], Some(i.output_tokens_total as f64));
            }
        },
    ),
    probe(
        "gpulse_probe_inference_success",
        "gpulse.probe.inference.success",
        "1",
        "1 when the last synthetic request got a complete, well-formed answer.",
        Kind::Gauge,
        |c, s| {
            for (p, l) in last(c) {
                s.probe(p, [], Some(flag(l.ok)));
            }
        },
    ),
    probe(
        "gpulse_probe_inference_tokens_per_second",
        "gpulse.probe.inference.tokens_per_second",
        "{token}/s",
        "Output tokens per second of the last successful synthetic request (tokens / whole duration).",
        Kind::Gauge,
        |c, s| {
            for (p, l) in last(c) {
                s.probe(p, [], l.tokens_per_second());
            }
        },
    ),
    probe(
        "gpulse_probe_inference_time_to_first_token_seconds",
        "gpulse.probe.inference.time_to_first_token",
        "s",
        "Time to the first streamed token (first response byte for KServe v2) of successful synthetic requests.",
        Kind::Histogram(OtlpHistogram::LastValue),
        |c, s| {
            for (p, i) in sending(c) {
                let last = i.last.as_ref().filter(|l| l.ok).and_then(|l| l.ttft);
                let last = last.map(|t| t.as_secs_f64());
                s.histogram(Id::Probe(p), Hist::Latency(&i.ttft, last));
            }
        },
    ),
    probe(
        "gpulse_probe_inference_duration_seconds",
        "gpulse.probe.inference.duration",
        "s",
        "End-to-end latency of successful synthetic requests.",
        Kind::Histogram(OtlpHistogram::LastValue),
        |c, s| {
            for (p, i) in sending(c) {
                let last = i.last.as_ref().filter(|l| l.ok);
                let last = last.map(|l| l.duration.as_secs_f64());
                s.histogram(Id::Probe(p), Hist::Latency(&i.duration, last));
            }
        },
    ),
    // The server's own metrics (only probes that scrape them).
    probe(
        "gpulse_probe_metrics_scrape_success",
        "gpulse.probe.metrics.scrape.success",
        "1",
        "1 when the last scrape of the server's own /metrics succeeded.",
        Kind::Gauge,
        |c, s| {
            for p in c.snap.probes.iter() {
                let ok = p.server.as_ref().and_then(|s| s.last_ok());
                s.probe(p, [], ok.map(flag));
            }
        },
    ),
    probe(
        "gpulse_probe_metrics_scrape_failures",
        "gpulse.probe.metrics.scrape.failures",
        "{scrape}",
        "Failed scrapes of the server's own /metrics.",
        Kind::Counter,
        |c, s| {
            for p in c.snap.probes.iter() {
                s.probe(p, [], p.server.as_ref().map(|s| s.failures as f64));
            }
        },
    ),
    probe(
        "gpulse_server_requests_running",
        "gpulse.server.requests.running",
        "{request}",
        "Requests the server is processing now (its own metric, e.g. vllm:num_requests_running).",
        Kind::Gauge,
        server_value!(|m| m.requests_running),
    ),
    probe(
        "gpulse_server_requests_waiting",
        "gpulse.server.requests.waiting",
        "{request}",
        "Requests queued in the server, not yet scheduled (e.g. vllm:num_requests_waiting, llamacpp:requests_deferred).",
        Kind::Gauge,
        server_value!(|m| m.requests_waiting),
    ),
    probe(
        "gpulse_server_requests_succeeded",
        "gpulse.server.requests.succeeded",
        "{request}",
        "Requests the server finished successfully, as it counts them.",
        Kind::Counter,
        server_value!(|m| m.requests_succeeded_total),
    ),
    probe(
        "gpulse_server_requests_failed",
        "gpulse.server.requests.failed",
        "{request}",
        "Requests that failed on the server's side, as it counts them.",
        Kind::Counter,
        server_value!(|m| m.requests_failed_total),
    ),
    probe(
        "gpulse_server_prompt_tokens",
        "gpulse.server.tokens.prompt",
        "{token}",
        "Prompt tokens the server processed.",
        Kind::Counter,
        server_value!(|m| m.prompt_tokens_total),
    ),
    probe(
        "gpulse_server_generation_tokens",
        "gpulse.server.tokens.generated",
        "{token}",
        "Tokens the server generated.",
        Kind::Counter,
        server_value!(|m| m.generation_tokens_total),
    ),
    probe(
        "gpulse_server_kv_cache_usage_ratio",
        "gpulse.server.kv_cache.utilization",
        "1",
        "KV-cache use of the server, 0 to 1 (the fullest engine).",
        Kind::Gauge,
        server_value!(|m| m.kv_cache_usage_ratio),
    ),
    probe(
        "gpulse_server_preemptions",
        "gpulse.server.preemptions",
        "{request}",
        "Requests the server preempted (evicted from the batch and requeued).",
        Kind::Counter,
        server_value!(|m| m.preemptions_total),
    ),
    probe(
        "gpulse_server_time_to_first_token_seconds",
        "gpulse.server.time_to_first_token",
        "s",
        "Time to first token as the server measures it.",
        SUM_COUNT,
        server_histogram!(|m| m.time_to_first_token.as_ref()),
    ),
    probe(
        "gpulse_server_e2e_request_latency_seconds",
        "gpulse.server.e2e_request_latency",
        "s",
        "End-to-end request latency as the server measures it (bucket-less when the server only has a sum and count).",
        SUM_COUNT,
        server_histogram!(|m| m.e2e_latency.as_ref()),
    ),
    probe(
        "gpulse_server_inter_token_latency_seconds",
        "gpulse.server.inter_token_latency",
        "s",
        "Time between output tokens as the server measures it.",
        SUM_COUNT,
        server_histogram!(|m| m.inter_token_latency.as_ref()),
    ),
];
