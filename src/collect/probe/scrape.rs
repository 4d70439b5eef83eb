//! Lifts an inference server's own `/metrics` into common names ([`ServerMetrics`]), per server dialect.
//!
//! [`lift`] parses the body with [`promtext::parse`], keeping only the families in [`FAMILIES`],
//! finds which servers' names are present, and maps each one's series onto the common fields
//! (`inference-servers.md` §4). [`histogram_quantile`] reads a quantile from a lifted histogram
//! for the JSON API. Pure functions: no I/O, no clock.
//!
//! **Detection** is by name prefix of the kept samples and `# TYPE` lines, not by the probe
//! kind, because servers nest: Triton's vLLM backend re-exports `vllm:*` beside Triton's own
//! `nv_inference_*`. Prefixes: `vllm:` vLLM, `sglang:` SGLang, `trtllm_` TensorRT-LLM serve,
//! `tgi_` TGI, `llamacpp:` llama.cpp, `nv_inference_`/`nv_trt_llm_` Triton,
//! `model_infer_request_`/`rest_server_` MLServer; unprefixed vLLM-style names are NVIDIA NIM
//! (`nim`), or `trtllm-serve` 1.x (`trtllm`) when they carry an `engine_type` label. When
//! several are present, the first in that
//! order names the dialect and fills each field it has; the others only fill fields it lacks
//! (so Triton's failure count completes its vLLM backend's series).
//!
//! **Mapping** (sums are over every label set, i.e. models and engines; KV use is the highest
//! engine's; histograms are summed bucket by bucket; absent series stay `None`):
//!
//! | field | vLLM | SGLang | TRT-LLM | TGI | Triton | llama.cpp | MLServer |
//! |---|---|---|---|---|---|---|---|
//! | running | `num_requests_running` | `num_running_reqs` | `num_requests_running` | `batch_current_size` | `nv_trt_llm_request_metrics{request_type="active"}` | `requests_processing` | `rest_server_requests_in_progress` |
//! | waiting | `num_requests_waiting` | `num_queue_reqs` | `num_requests_waiting` | `queue_size` | TRT-LLM `waiting` (else `pending_request_count`) | `requests_deferred` | — |
//! | succeeded | `request_success_total` (1) | `num_requests_total` − aborted | `request_success_total` (1) | `request_success` | `request_success` | — | `success_total` |
//! | failed | `request_success_total{finished_reason="error"}` | `num_aborted_requests_total` | `request_error_total` | Σ `request_failure{err}` but `validation` (2) | Σ `request_failure{reason}` | — | `failure_total` |
//! | prompt tokens | `prompt_tokens_total` | `prompt_tokens_total` | `prompt_tokens_total` | `request_input_length` sum | — | `prompt_tokens_total` | — |
//! | output tokens | `generation_tokens_total` | `generation_tokens_total` | `generation_tokens_total` | `request_generated_tokens` sum | — | `tokens_predicted_total` | — |
//! | KV use | `kv_cache_usage_perc` (old `gpu_cache_usage_perc`) | `token_usage` | `kv_cache_utilization` | — | `kv_cache_block_metrics` `fraction` (else used/max) | — | — |
//! | preemptions | `num_preemptions_total` | `num_retracted_requests_total` | — | — | — | — | — |
//! | TTFT | `time_to_first_token_seconds` | same | same | — | `first_response_histogram_ms` (ms → s) | — | — |
//! | e2e | `e2e_request_latency_seconds` | same | same | `request_duration` | `request_duration_us` / `request_success` (µs → s, no buckets) | — | `model_infer_request_duration` summary |
//! | inter-token | `inter_token_latency_seconds` (old `time_per_output_token_seconds`) | `inter_token_latency_seconds` (old `time_per_output_token_seconds`) | `time_per_output_token_seconds` | `request_mean_time_per_token_duration` | — | `tokens_predicted_seconds_total` / `tokens_predicted_total` (no buckets) | — |
//!
//! (1) Summed over `finished_reason` except `abort`, `cancelled`, `error` and `timeout`, which
//! are not successes (vLLM's `error` is its 500 path; `abort` is a client giving up).
//! (2) TGI's exporter publishes a counter only after its first increment, so with TGI's
//! request counters present and no failure series, failures are 0, not unknown.

use std::collections::HashMap;

use super::promtext::{self, Limits, Sample};
use crate::model::{ServerHistogram, ServerMetrics};

/// Parses `text` (a server's `/metrics` body) and lifts it into common names.
pub fn lift(text: &str, limits: &Limits) -> ServerMetrics {
    let exposition = promtext::parse(text, limits, keep);
    let index = Index::new(&exposition.samples);
    let names = exposition
        .samples
        .iter()
        .map(|s| s.name.as_str())
        .chain(exposition.types.keys().map(String::as_str));
    let mut present = [false; DIALECTS.len()];
    for name in names {
        if let Some(i) = DIALECTS.iter().position(|d| d.owns(name))
            && let Some(p) = present.get_mut(i)
        {
            *p = true;
        }
    }
    let mut out: Option<ServerMetrics> = None;
    for (dialect, _) in DIALECTS.iter().zip(present).filter(|(_, p)| *p) {
        let lifted = dialect.lift(&index);
        match &mut out {
            None => out = Some(lifted),
            Some(first) => fill(first, lifted),
        }
    }
    let mut out = out.unwrap_or_default();
    out.series = exposition.samples.len();
    out.invalid_lines = exposition.invalid_lines;
    out.truncated = exposition.truncated;
    out
}

/// The `q` quantile (0–1) of `h` in seconds, the way Prometheus' `histogram_quantile` computes
/// it: linear interpolation inside the bucket that holds the rank, the first bucket starting at
/// 0 (unless its bound is ≤ 0), and the highest finite bound when the rank falls in `+Inf`.
/// `None` without a `+Inf` bucket and at least one other, without observations, or for `q`
/// outside 0–1. Unlike Prometheus, an empty lowest bucket at `q` = 0 gives its lower bound
/// instead of NaN.
pub fn histogram_quantile(h: &ServerHistogram, q: f64) -> Option<f64> {
    h.quantile(q)
}

/// Every prefixed family [`lift`] reads (and [`UNPREFIXED`]); the parser stores nothing else.
pub const FAMILIES: &[&str] = &[
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:request_success_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:num_preemptions_total",
    "vllm:time_to_first_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:time_per_output_token_seconds",
    "sglang:num_running_reqs",
    "sglang:num_queue_reqs",
    "sglang:num_requests_total",
    "sglang:num_aborted_requests_total",
    "sglang:prompt_tokens_total",
    "sglang:generation_tokens_total",
    "sglang:token_usage",
    "sglang:num_retracted_requests_total",
    "sglang:time_to_first_token_seconds",
    "sglang:e2e_request_latency_seconds",
    "sglang:inter_token_latency_seconds",
    "sglang:time_per_output_token_seconds",
    "trtllm_num_requests_running",
    "trtllm_num_requests_waiting",
    "trtllm_request_success_total",
    "trtllm_request_error_total",
    "trtllm_prompt_tokens_total",
    "trtllm_generation_tokens_total",
    "trtllm_kv_cache_utilization",
    "trtllm_time_to_first_token_seconds",
    "trtllm_e2e_request_latency_seconds",
    "trtllm_time_per_output_token_seconds",
    "tgi_batch_current_size",
    "tgi_queue_size",
    "tgi_request_count",
    "tgi_request_success",
    "tgi_request_failure",
    "tgi_request_input_length",
    "tgi_request_generated_tokens",
    "tgi_request_duration",
    "tgi_request_mean_time_per_token_duration",
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_pending_request_count",
    "nv_inference_request_duration_us",
    "nv_inference_first_response_histogram_ms",
    "nv_trt_llm_request_metrics",
    "nv_trt_llm_kv_cache_block_metrics",
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
    "llamacpp:prompt_tokens_total",
    "llamacpp:tokens_predicted_total",
    "llamacpp:tokens_predicted_seconds_total",
    "model_infer_request_success_total",
    "model_infer_request_failure_total",
    "model_infer_request_duration",
    "rest_server_requests_in_progress",
];

/// The unprefixed families [`lift`] reads too: NVIDIA NIM for LLMs (vLLM's names without
/// `vllm:`) and `trtllm-serve` 1.x (with an `engine_type` label).
const UNPREFIXED: &[&str] = &[
    "num_requests_running",
    "num_requests_waiting",
    "gpu_cache_usage_perc",
    "prompt_tokens_total",
    "generation_tokens_total",
    "request_success_total",
    "request_finish_total",
    "time_to_first_token_seconds",
    "time_per_output_token_seconds",
    "e2e_request_latency_seconds",
];

/// The parser's filter: a family in [`FAMILIES`], or one of its samples. `_total` is allowed
/// after names that lack it (TGI, Triton) in case an OpenMetrics exporter adds it.
fn keep(name: &str) -> bool {
    FAMILIES
        .iter()
        .chain(UNPREFIXED)
        .any(|family| keep_one(family, name))
}

/// Whether `name` is `family` or one of its samples.
fn keep_one(family: &str, name: &str) -> bool {
    name.strip_prefix(family)
        .is_some_and(|rest| matches!(rest, "" | "_bucket" | "_count" | "_sum" | "_total"))
}

/// `finished_reason` values that are not a success.
const NOT_SUCCESS: &[&str] = &["abort", "cancelled", "error", "timeout"];

fn succeeded(s: &Sample) -> bool {
    !s.label("finished_reason")
        .is_some_and(|r| NOT_SUCCESS.contains(&r))
}

/// Servers in precedence order: engines before the servers that wrap them; the unprefixed
/// names last (they only name the dialect when nothing prefixed is there).
const DIALECTS: [Dialect; 8] = [
    Dialect::Vllm,
    Dialect::Sglang,
    Dialect::Trtllm,
    Dialect::Tgi,
    Dialect::Llamacpp,
    Dialect::Triton,
    Dialect::Mlserver,
    Dialect::Unprefixed,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Vllm,
    Sglang,
    Trtllm,
    Tgi,
    Llamacpp,
    Triton,
    Mlserver,
    /// NVIDIA NIM (`nim`) or `trtllm-serve` 1.x (`trtllm`, told by its `engine_type` label).
    Unprefixed,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Vllm => "vllm",
            Dialect::Sglang => "sglang",
            Dialect::Trtllm => "trtllm",
            Dialect::Tgi => "tgi",
            Dialect::Llamacpp => "llamacpp",
            Dialect::Triton => "triton",
            Dialect::Mlserver => "mlserver",
            Dialect::Unprefixed => "nim",
        }
    }

    fn owns(self, name: &str) -> bool {
        let prefixes: &[&str] = match self {
            Dialect::Vllm => &["vllm:"],
            Dialect::Sglang => &["sglang:"],
            Dialect::Trtllm => &["trtllm_"],
            Dialect::Tgi => &["tgi_"],
            Dialect::Llamacpp => &["llamacpp:"],
            Dialect::Triton => &["nv_inference_", "nv_trt_llm_"],
            Dialect::Mlserver => &["model_infer_request_", "rest_server_"],
            Dialect::Unprefixed => return UNPREFIXED.iter().any(|f| keep_one(f, name)),
        };
        prefixes.iter().any(|p| name.starts_with(p))
    }

    fn lift(self, ix: &Index<'_>) -> ServerMetrics {
        let mut m = ServerMetrics {
            dialect: self.name(),
            ..ServerMetrics::default()
        };
        match self {
            Dialect::Vllm => {
                m.requests_running = ix.sum("vllm:num_requests_running");
                m.requests_waiting = ix.sum("vllm:num_requests_waiting");
                m.requests_succeeded_total = ix.sum_where("vllm:request_success_total", succeeded);
                m.requests_failed_total = ix.sum_where("vllm:request_success_total", |s| {
                    s.label("finished_reason") == Some("error")
                });
                m.prompt_tokens_total = ix.sum("vllm:prompt_tokens_total");
                m.generation_tokens_total = ix.sum("vllm:generation_tokens_total");
                m.kv_cache_usage_ratio = ix
                    .max("vllm:kv_cache_usage_perc")
                    .or_else(|| ix.max("vllm:gpu_cache_usage_perc"));
                m.preemptions_total = ix.sum("vllm:num_preemptions_total");
                m.time_to_first_token = ix.histogram("vllm:time_to_first_token_seconds", 1.0);
                m.e2e_latency = ix.histogram("vllm:e2e_request_latency_seconds", 1.0);
                m.inter_token_latency = ix
                    .histogram("vllm:inter_token_latency_seconds", 1.0)
                    .or_else(|| ix.histogram("vllm:time_per_output_token_seconds", 1.0));
            }
            Dialect::Sglang => {
                let total = ix.sum("sglang:num_requests_total");
                let aborted = ix.sum("sglang:num_aborted_requests_total");
                m.requests_running = ix.sum("sglang:num_running_reqs");
                m.requests_waiting = ix.sum("sglang:num_queue_reqs");
                m.requests_succeeded_total = total.map(|t| (t - aborted.unwrap_or(0.0)).max(0.0));
                m.requests_failed_total = aborted;
                m.prompt_tokens_total = ix.sum("sglang:prompt_tokens_total");
                m.generation_tokens_total = ix.sum("sglang:generation_tokens_total");
                m.kv_cache_usage_ratio = ix.max("sglang:token_usage");
                m.preemptions_total = ix.sum("sglang:num_retracted_requests_total");
                m.time_to_first_token = ix.histogram("sglang:time_to_first_token_seconds", 1.0);
                m.e2e_latency = ix.histogram("sglang:e2e_request_latency_seconds", 1.0);
                // Older SGLang observes `time_per_output_token_seconds` once per generated token
                // (its docs/references/production_metrics.md): inter-token latency when the
                // newer family is absent, as vLLM's fallback.
                m.inter_token_latency = ix
                    .histogram("sglang:inter_token_latency_seconds", 1.0)
                    .or_else(|| ix.histogram("sglang:time_per_output_token_seconds", 1.0));
            }
            Dialect::Trtllm => {
                m.requests_running = ix.sum("trtllm_num_requests_running");
                m.requests_waiting = ix.sum("trtllm_num_requests_waiting");
                m.requests_succeeded_total =
                    ix.sum_where("trtllm_request_success_total", succeeded);
                m.requests_failed_total = ix.sum("trtllm_request_error_total");
                m.prompt_tokens_total = ix.sum("trtllm_prompt_tokens_total");
                m.generation_tokens_total = ix.sum("trtllm_generation_tokens_total");
                m.kv_cache_usage_ratio = ix.max("trtllm_kv_cache_utilization");
                m.time_to_first_token = ix.histogram("trtllm_time_to_first_token_seconds", 1.0);
                m.e2e_latency = ix.histogram("trtllm_e2e_request_latency_seconds", 1.0);
                m.inter_token_latency = ix.histogram("trtllm_time_per_output_token_seconds", 1.0);
            }
            Dialect::Tgi => {
                let success = ix.counter("tgi_request_success");
                let seen = success.is_some() || ix.counter("tgi_request_count").is_some();
                m.requests_running = ix.sum("tgi_batch_current_size");
                m.requests_waiting = ix.sum("tgi_queue_size");
                m.requests_succeeded_total = success;
                // A request the router refused as invalid (`err="validation"`: a 422 for the
                // client's bad input) is the client's failure, not the server's.
                m.requests_failed_total = ix
                    .sum_where("tgi_request_failure", |s| {
                        s.label("err") != Some("validation")
                    })
                    .or_else(|| {
                        ix.sum_where("tgi_request_failure_total", |s| {
                            s.label("err") != Some("validation")
                        })
                    })
                    .or(seen.then_some(0.0));
                // Per-request token histograms: their sums are the token counters.
                m.prompt_tokens_total =
                    ix.histogram("tgi_request_input_length", 1.0).map(|h| h.sum);
                m.generation_tokens_total = ix
                    .histogram("tgi_request_generated_tokens", 1.0)
                    .map(|h| h.sum);
                m.e2e_latency = ix.histogram("tgi_request_duration", 1.0);
                m.inter_token_latency =
                    ix.histogram("tgi_request_mean_time_per_token_duration", 1.0);
            }
            Dialect::Triton => {
                m.requests_running = ix.sum_where("nv_trt_llm_request_metrics", |s| {
                    s.label("request_type") == Some("active")
                });
                // The TensorRT-LLM backend queues in its own scheduler: Triton's pending count
                // reads 0 while the engine's `waiting` holds the real queue (tensorrtllm_backend
                // README, "Triton Metrics"). The engine's queue when it reports one.
                m.requests_waiting = ix
                    .sum_where("nv_trt_llm_request_metrics", |s| {
                        s.label("request_type") == Some("waiting")
                    })
                    .or_else(|| ix.sum("nv_inference_pending_request_count"));
                let success = ix.counter("nv_inference_request_success");
                m.requests_succeeded_total = success;
                m.requests_failed_total = ix.counter("nv_inference_request_failure");
                m.kv_cache_usage_ratio = triton_kv_usage(ix);
                m.time_to_first_token =
                    ix.histogram("nv_inference_first_response_histogram_ms", 1e-3);
                // Cumulative microseconds over successful requests (failures add no duration).
                m.e2e_latency = ix
                    .counter("nv_inference_request_duration_us")
                    .zip(success)
                    .map(|(us, count)| ServerHistogram {
                        buckets: Vec::new(),
                        count,
                        sum: us * 1e-6,
                    });
            }
            Dialect::Llamacpp => {
                m.requests_running = ix.sum("llamacpp:requests_processing");
                m.requests_waiting = ix.sum("llamacpp:requests_deferred");
                m.prompt_tokens_total = ix.sum("llamacpp:prompt_tokens_total");
                let tokens = ix.sum("llamacpp:tokens_predicted_total");
                m.generation_tokens_total = tokens;
                m.inter_token_latency = ix
                    .sum("llamacpp:tokens_predicted_seconds_total")
                    .zip(tokens)
                    .map(|(sum, count)| ServerHistogram {
                        buckets: Vec::new(),
                        count,
                        sum,
                    });
            }
            Dialect::Unprefixed => {
                // `trtllm-serve` 1.x labels its series with `engine_type` (TensorRT-LLM PR
                // #5785); NIM's are vLLM's names without the `vllm:` prefix (NIM for LLMs
                // "Observability" docs).
                let trtllm = UNPREFIXED
                    .iter()
                    .flat_map(|f| ix.family(f))
                    .any(|s| s.label("engine_type").is_some());
                m.dialect = if trtllm { "trtllm" } else { "nim" };
                m.requests_running = ix.sum("num_requests_running");
                m.requests_waiting = ix.sum("num_requests_waiting");
                // As vLLM: successes are every finish reason but the failed and abandoned
                // ones, failures the `error` reason (absent when no error series exists).
                let name = if ix.get("request_success_total").is_empty() {
                    "request_finish_total"
                } else {
                    "request_success_total"
                };
                m.requests_succeeded_total = ix.sum_where(name, succeeded);
                m.requests_failed_total =
                    ix.sum_where(name, |s| s.label("finished_reason") == Some("error"));
                m.prompt_tokens_total = ix.sum("prompt_tokens_total");
                m.generation_tokens_total = ix.sum("generation_tokens_total");
                m.kv_cache_usage_ratio = ix.max("gpu_cache_usage_perc");
                m.time_to_first_token = ix.histogram("time_to_first_token_seconds", 1.0);
                m.e2e_latency = ix.histogram("e2e_request_latency_seconds", 1.0);
                m.inter_token_latency = ix.histogram("time_per_output_token_seconds", 1.0);
            }
            Dialect::Mlserver => {
                m.requests_running = ix.sum("rest_server_requests_in_progress");
                m.requests_succeeded_total = ix.sum("model_infer_request_success_total");
                m.requests_failed_total = ix.sum("model_infer_request_failure_total");
                m.e2e_latency = ix.histogram("model_infer_request_duration", 1.0);
            }
        }
        m
    }
}

/// TRT-LLM backend KV use: its `fraction` gauge, or else used / max blocks, per model; the highest.
fn triton_kv_usage(ix: &Index<'_>) -> Option<f64> {
    const FAMILY: &str = "nv_trt_llm_kv_cache_block_metrics";
    fn block(s: &Sample) -> Option<&str> {
        s.label("kv_cache_block_type")
    }
    let fraction = ix.max_where(FAMILY, |s| block(s) == Some("fraction"));
    if fraction.is_some() {
        return fraction;
    }
    let mut best: Option<f64> = None;
    for used in ix.get(FAMILY).iter().filter(|s| block(s) == Some("used")) {
        let same_series = |s: &&&Sample| {
            block(s) == Some("max")
                && s.labels.len() == used.labels.len()
                && s.labels
                    .iter()
                    .all(|(k, v)| k == "kv_cache_block_type" || used.label(k) == Some(v))
        };
        let Some(max) = ix.get(FAMILY).iter().find(same_series) else {
            continue;
        };
        if max.value > 0.0 && used.value.is_finite() {
            let ratio = used.value / max.value;
            best = Some(best.map_or(ratio, |b| b.max(ratio)));
        }
    }
    best
}

/// Fills the fields `into` lacks from `from` (a dialect further down the precedence order).
fn fill(into: &mut ServerMetrics, from: ServerMetrics) {
    into.requests_running = into.requests_running.or(from.requests_running);
    into.requests_waiting = into.requests_waiting.or(from.requests_waiting);
    into.requests_succeeded_total = into
        .requests_succeeded_total
        .or(from.requests_succeeded_total);
    into.requests_failed_total = into.requests_failed_total.or(from.requests_failed_total);
    into.prompt_tokens_total = into.prompt_tokens_total.or(from.prompt_tokens_total);
    into.generation_tokens_total = into
        .generation_tokens_total
        .or(from.generation_tokens_total);
    into.kv_cache_usage_ratio = into.kv_cache_usage_ratio.or(from.kv_cache_usage_ratio);
    into.preemptions_total = into.preemptions_total.or(from.preemptions_total);
    into.time_to_first_token = into.time_to_first_token.take().or(from.time_to_first_token);
    into.e2e_latency = into.e2e_latency.take().or(from.e2e_latency);
    into.inter_token_latency = into.inter_token_latency.take().or(from.inter_token_latency);
}

/// The kept samples by name. Non-finite values (a NaN gauge before its first update) are left
/// out of sums and maxima rather than poisoning them.
struct Index<'a> {
    by_name: HashMap<&'a str, Vec<&'a Sample>>,
}

impl<'a> Index<'a> {
    fn new(samples: &'a [Sample]) -> Self {
        let mut by_name: HashMap<&str, Vec<&Sample>> = HashMap::new();
        for s in samples {
            by_name.entry(s.name.as_str()).or_default().push(s);
        }
        Index { by_name }
    }

    fn get(&self, name: &str) -> &[&'a Sample] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// Every sample of `family` (its `_bucket`, `_count`, `_sum` and `_total` too).
    fn family(&self, family: &str) -> Vec<&'a Sample> {
        ["", "_bucket", "_count", "_sum", "_total"]
            .into_iter()
            .flat_map(|suffix| self.get(&format!("{family}{suffix}")).iter().copied())
            .collect()
    }

    /// Sum over the samples that pass `pred`; `None` if none does.
    fn sum_where(&self, name: &str, pred: impl Fn(&Sample) -> bool) -> Option<f64> {
        let mut values = self
            .get(name)
            .iter()
            .filter(|s| pred(s))
            .map(|s| s.value)
            .peekable();
        values.peek()?;
        Some(values.filter(|v| v.is_finite()).sum())
    }

    fn sum(&self, name: &str) -> Option<f64> {
        self.sum_where(name, |_| true)
    }

    /// A counter that some exporters write without `_total` and OpenMetrics ones with it.
    fn counter(&self, name: &str) -> Option<f64> {
        self.sum(name)
            .or_else(|| self.sum(&format!("{name}_total")))
    }

    fn max_where(&self, name: &str, pred: impl Fn(&Sample) -> bool) -> Option<f64> {
        self.get(name)
            .iter()
            .filter(|s| pred(s))
            .map(|s| s.value)
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    }

    fn max(&self, name: &str) -> Option<f64> {
        self.max_where(name, |_| true)
    }

    /// A histogram or summary family summed over its label sets, bounds and sum times `scale`
    /// (to seconds). Buckets are summed per bound over the bounds every label set has, which is
    /// exact for those bounds even if the sets were configured differently.
    fn histogram(&self, family: &str, scale: f64) -> Option<ServerHistogram> {
        let bucket_samples = self.get(&format!("{family}_bucket"));
        let count = self.sum(&format!("{family}_count"));
        let sum = self.sum(&format!("{family}_sum"));
        if bucket_samples.is_empty() && count.is_none() && sum.is_none() {
            return None;
        }
        // One entry per label set (labels other than `le`): its (bound, count) pairs.
        type LabelSet<'s> = Vec<(&'s str, &'s str)>;
        let mut series: Vec<(LabelSet<'_>, Vec<(f64, f64)>)> = Vec::new();
        for s in bucket_samples {
            let Some(le) = s.label("le").and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            if le.is_nan() || !s.value.is_finite() {
                continue;
            }
            let key: Vec<(&str, &str)> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match series.iter_mut().find(|(k, _)| *k == key) {
                Some((_, b)) => b.push((le, s.value)),
                None => series.push((key, vec![(le, s.value)])),
            }
        }
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        if let Some(((_, first), rest)) = series.split_first() {
            for &(le, c) in first {
                let mut total = c;
                let mut everywhere = true;
                for (_, b) in rest {
                    match b.iter().find(|(other, _)| *other == le) {
                        Some((_, c)) => total += c,
                        None => everywhere = false,
                    }
                }
                if everywhere && !buckets.iter().any(|(seen, _)| *seen == le) {
                    buckets.push((le, total));
                }
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (le, _) in &mut buckets {
            *le *= scale;
        }
        let inf = buckets
            .last()
            .filter(|(le, _)| *le == f64::INFINITY)
            .map(|(_, c)| *c);
        Some(ServerHistogram {
            count: count.or(inf).unwrap_or(0.0),
            sum: sum.unwrap_or(0.0) * scale,
            buckets,
        })
    }
}

#[cfg(test)]
mod tests;
