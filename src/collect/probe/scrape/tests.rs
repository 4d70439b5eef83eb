//! Tests of the lift: one realistic exposition per server (written from the names in
//! `inference-servers.md` §3–§5), nesting, filtering, and `histogram_quantile`.

use super::*;

fn lifted(text: &str) -> ServerMetrics {
    lift(text, &Limits::default())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[track_caller]
fn assert_close(got: Option<f64>, want: f64) {
    let got = got.unwrap_or(f64::NAN);
    assert!(close(got, want), "got {got}, want {want}");
}

/// vLLM 0.1x (prometheus_client 0.0.4 text): two engines of one model, `_created` gauges, and
/// families the lift does not read.
const VLLM: &str = r#"# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12873.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
vllm:num_requests_waiting{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.75
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
vllm:num_preemptions_total{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
# HELP vllm:num_preemptions_created Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_created gauge
vllm:num_preemptions_created{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.7636e+09
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1000.0
vllm:prompt_tokens_total{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2000.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 500.0
vllm:generation_tokens_total{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 700.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="meta-llama/Llama-3.1-8B-Instruct"} 40.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="meta-llama/Llama-3.1-8B-Instruct"} 10.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
vllm:request_success_total{engine="0",finished_reason="error",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
vllm:request_success_total{engine="0",finished_reason="repetition",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:request_success_total{engine="1",finished_reason="stop",model_name="meta-llama/Llama-3.1-8B-Instruct"} 20.0
vllm:request_success_total{engine="1",finished_reason="length",model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
vllm:request_success_total{engine="1",finished_reason="abort",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:request_success_total{engine="1",finished_reason="error",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
vllm:request_success_total{engine="1",finished_reason="repetition",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.01",model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 30.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 50.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 54.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 54.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 9.5
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.01",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 10.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 26.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 28.0
vllm:time_to_first_token_seconds_count{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 28.0
vllm:time_to_first_token_seconds_sum{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.5
# HELP vllm:time_to_first_token_seconds_created Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds_created gauge
vllm:time_to_first_token_seconds_created{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.7636e+09
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 20.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="10.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 50.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 54.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 54.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 180.0
# HELP vllm:inter_token_latency_seconds Histogram of inter-token latency in seconds.
# TYPE vllm:inter_token_latency_seconds histogram
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.01",model_name="meta-llama/Llama-3.1-8B-Instruct"} 400.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.05",model_name="meta-llama/Llama-3.1-8B-Instruct"} 480.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 500.0
vllm:inter_token_latency_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 500.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.0
# HELP vllm:request_queue_time_seconds Histogram of time spent in WAITING phase for request.
# TYPE vllm:request_queue_time_seconds histogram
vllm:request_queue_time_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 54.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",engine="0",gpu_memory_utilization="0.9",num_gpu_blocks="27000"} 1.0
"#;

#[test]
fn vllm() {
    let m = lifted(VLLM);
    assert_eq!(m.dialect, "vllm");
    assert_close(m.requests_running, 5.0);
    assert_close(m.requests_waiting, 5.0);
    assert_close(m.kv_cache_usage_ratio, 0.75);
    assert_close(m.preemptions_total, 3.0);
    assert_close(m.prompt_tokens_total, 3000.0);
    assert_close(m.generation_tokens_total, 1200.0);
    // stop + length + repetition; abort is the client's doing, error is vLLM's 500.
    assert_close(m.requests_succeeded_total, 76.0);
    assert_close(m.requests_failed_total, 3.0);
    let ttft = m.time_to_first_token.clone().unwrap_or_default();
    assert_eq!(
        ttft.buckets,
        vec![(0.01, 6.0), (0.1, 40.0), (1.0, 76.0), (f64::INFINITY, 82.0)]
    );
    assert_eq!((ttft.count, ttft.sum), (82.0, 16.0));
    let e2e = m.e2e_latency.clone().unwrap_or_default();
    assert_eq!((e2e.count, e2e.sum, e2e.buckets.len()), (54.0, 180.0, 3));
    assert_eq!(m.inter_token_latency.map(|h| h.count), Some(500.0));
    // Only the lifted families are stored: 2+2+2+2+2+2+10 gauges and counters, 12 + 5 + 5
    // histogram lines; not `_created`, queue time, info or python_gc.
    assert_eq!(m.series, 12 + 10 + 12 + 5 + 5);
    assert_eq!((m.invalid_lines, m.truncated), (0, false));
}

#[test]
fn vllm_old_names() {
    let m = lifted(
        "# TYPE vllm:gpu_cache_usage_perc gauge\n\
         vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n\
         # TYPE vllm:time_per_output_token_seconds histogram\n\
         vllm:time_per_output_token_seconds_bucket{model_name=\"m\",le=\"0.1\"} 3\n\
         vllm:time_per_output_token_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 4\n\
         vllm:time_per_output_token_seconds_count{model_name=\"m\"} 4\n\
         vllm:time_per_output_token_seconds_sum{model_name=\"m\"} 0.3\n\
         # TYPE vllm:request_success_total counter\n\
         vllm:request_success_total{model_name=\"m\",finished_reason=\"stop\"} 9\n",
    );
    assert_eq!(m.dialect, "vllm");
    assert_close(m.kv_cache_usage_ratio, 0.5);
    assert_eq!(m.inter_token_latency.map(|h| h.count), Some(4.0));
    assert_close(m.requests_succeeded_total, 9.0);
    // Before vLLM had an `error` finish reason it had no failure count at all.
    assert_eq!(m.requests_failed_total, None);
}

/// SGLang 0.5 in OpenMetrics form (counter families without `_total`, `# EOF`).
const SGLANG: &str = r#"# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{engine_type="unified",model_name="Qwen/Qwen2.5-7B-Instruct",pp_rank="0",tp_rank="0"} 7.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{engine_type="unified",model_name="Qwen/Qwen2.5-7B-Instruct",pp_rank="0",tp_rank="0"} 3.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{engine_type="unified",model_name="Qwen/Qwen2.5-7B-Instruct",pp_rank="0",tp_rank="0"} 0.42
# HELP sglang:gen_throughput The generation throughput (token/s).
# TYPE sglang:gen_throughput gauge
sglang:gen_throughput{engine_type="unified",model_name="Qwen/Qwen2.5-7B-Instruct",pp_rank="0",tp_rank="0"} 512.3
# HELP sglang:prompt_tokens Number of prefill tokens processed.
# TYPE sglang:prompt_tokens counter
sglang:prompt_tokens_total{model_name="Qwen/Qwen2.5-7B-Instruct"} 12345.0
sglang:prompt_tokens_created{model_name="Qwen/Qwen2.5-7B-Instruct"} 1.7636e+09
# HELP sglang:generation_tokens Number of generation tokens processed.
# TYPE sglang:generation_tokens counter
sglang:generation_tokens_total{model_name="Qwen/Qwen2.5-7B-Instruct"} 6789.0
# HELP sglang:num_requests Number of requests processed.
# TYPE sglang:num_requests counter
sglang:num_requests_total{model_name="Qwen/Qwen2.5-7B-Instruct"} 100.0
# HELP sglang:num_aborted_requests Number of requests aborted.
# TYPE sglang:num_aborted_requests counter
sglang:num_aborted_requests_total{model_name="Qwen/Qwen2.5-7B-Instruct"} 4.0
# HELP sglang:num_retracted_requests Number of retracted requests.
# TYPE sglang:num_retracted_requests counter
sglang:num_retracted_requests_total{model_name="Qwen/Qwen2.5-7B-Instruct"} 2.0
# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_bucket{le="0.1",model_name="Qwen/Qwen2.5-7B-Instruct"} 60.0 # {trace_id="7f3a"} 0.08 1.7636e+09
sglang:time_to_first_token_seconds_bucket{le="0.5",model_name="Qwen/Qwen2.5-7B-Instruct"} 90.0
sglang:time_to_first_token_seconds_bucket{le="+Inf",model_name="Qwen/Qwen2.5-7B-Instruct"} 96.0
sglang:time_to_first_token_seconds_count{model_name="Qwen/Qwen2.5-7B-Instruct"} 96.0
sglang:time_to_first_token_seconds_sum{model_name="Qwen/Qwen2.5-7B-Instruct"} 11.0
sglang:time_to_first_token_seconds_created{model_name="Qwen/Qwen2.5-7B-Instruct"} 1.7636e+09
# HELP sglang:inter_token_latency_seconds Histogram of inter-token latency in seconds.
# TYPE sglang:inter_token_latency_seconds histogram
sglang:inter_token_latency_seconds_bucket{le="0.02",model_name="Qwen/Qwen2.5-7B-Instruct"} 6000.0
sglang:inter_token_latency_seconds_bucket{le="+Inf",model_name="Qwen/Qwen2.5-7B-Instruct"} 6693.0
sglang:inter_token_latency_seconds_count{model_name="Qwen/Qwen2.5-7B-Instruct"} 6693.0
sglang:inter_token_latency_seconds_sum{model_name="Qwen/Qwen2.5-7B-Instruct"} 100.4
# HELP sglang:e2e_request_latency_seconds Histogram of End-to-end request latency in seconds
# TYPE sglang:e2e_request_latency_seconds histogram
sglang:e2e_request_latency_seconds_bucket{le="5.0",model_name="Qwen/Qwen2.5-7B-Instruct"} 80.0
sglang:e2e_request_latency_seconds_bucket{le="+Inf",model_name="Qwen/Qwen2.5-7B-Instruct"} 96.0
sglang:e2e_request_latency_seconds_count{model_name="Qwen/Qwen2.5-7B-Instruct"} 96.0
sglang:e2e_request_latency_seconds_sum{model_name="Qwen/Qwen2.5-7B-Instruct"} 300.0
# EOF
"#;

#[test]
fn sglang() {
    let m = lifted(SGLANG);
    assert_eq!(m.dialect, "sglang");
    assert_close(m.requests_running, 7.0);
    assert_close(m.requests_waiting, 3.0);
    assert_close(m.kv_cache_usage_ratio, 0.42);
    assert_close(m.prompt_tokens_total, 12345.0);
    assert_close(m.generation_tokens_total, 6789.0);
    assert_close(m.requests_succeeded_total, 96.0);
    assert_close(m.requests_failed_total, 4.0);
    assert_close(m.preemptions_total, 2.0);
    let ttft = m.time_to_first_token.unwrap_or_default();
    assert_eq!(
        ttft.buckets,
        vec![(0.1, 60.0), (0.5, 90.0), (f64::INFINITY, 96.0)]
    );
    assert_eq!(m.e2e_latency.map(|h| h.sum), Some(300.0));
    assert_eq!(m.inter_token_latency.map(|h| h.count), Some(6693.0));
    assert_eq!(m.invalid_lines, 0);
}

/// TGI 3 (metrics-exporter-prometheus: no HELP, counters without `_total`).
const TGI: &str = r#"# TYPE tgi_request_count counter
tgi_request_count 12
# TYPE tgi_request_success counter
tgi_request_success 9
# TYPE tgi_request_failure counter
tgi_request_failure{err="validation"} 2
tgi_request_failure{err="overloaded"} 1
# TYPE tgi_queue_size gauge
tgi_queue_size 4
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 6
# TYPE tgi_batch_current_max_tokens gauge
tgi_batch_current_max_tokens 8192
# TYPE tgi_request_duration histogram
tgi_request_duration_bucket{le="0.1"} 1
tgi_request_duration_bucket{le="1"} 5
tgi_request_duration_bucket{le="10"} 9
tgi_request_duration_bucket{le="+Inf"} 9
tgi_request_duration_sum 12.5
tgi_request_duration_count 9
# TYPE tgi_request_input_length histogram
tgi_request_input_length_bucket{le="100"} 3
tgi_request_input_length_bucket{le="+Inf"} 9
tgi_request_input_length_sum 900
tgi_request_input_length_count 9
# TYPE tgi_request_generated_tokens histogram
tgi_request_generated_tokens_bucket{le="100"} 9
tgi_request_generated_tokens_bucket{le="+Inf"} 9
tgi_request_generated_tokens_sum 450
tgi_request_generated_tokens_count 9
# TYPE tgi_request_mean_time_per_token_duration histogram
tgi_request_mean_time_per_token_duration_bucket{le="0.01"} 2
tgi_request_mean_time_per_token_duration_bucket{le="0.1"} 9
tgi_request_mean_time_per_token_duration_bucket{le="+Inf"} 9
tgi_request_mean_time_per_token_duration_sum 0.36
tgi_request_mean_time_per_token_duration_count 9
"#;

#[test]
fn tgi() {
    let m = lifted(TGI);
    assert_eq!(m.dialect, "tgi");
    assert_close(m.requests_running, 6.0);
    assert_close(m.requests_waiting, 4.0);
    assert_close(m.requests_succeeded_total, 9.0);
    // `validation` (2) is the client's bad input, not a server failure; `overloaded` is.
    assert_close(m.requests_failed_total, 1.0);
    assert_close(m.prompt_tokens_total, 900.0);
    assert_close(m.generation_tokens_total, 450.0);
    assert_eq!(m.time_to_first_token, None);
    assert_eq!(m.kv_cache_usage_ratio, None);
    assert_eq!(m.preemptions_total, None);
    assert_eq!(m.e2e_latency.map(|h| (h.count, h.sum)), Some((9.0, 12.5)));
    assert_eq!(
        m.inter_token_latency.map(|h| h.buckets),
        Some(vec![(0.01, 2.0), (0.1, 9.0), (f64::INFINITY, 9.0)])
    );
}

#[test]
fn tgi_without_failures_yet_counts_zero() {
    let m = lifted("# TYPE tgi_request_success counter\ntgi_request_success 3\n");
    assert_close(m.requests_failed_total, 0.0);
    let m = lifted("# TYPE tgi_queue_size gauge\ntgi_queue_size 0\n");
    assert_eq!(m.requests_failed_total, None);
}

/// Triton 2.5x with the TensorRT-LLM backend (prometheus-cpp text), an ensemble of models.
const TRITON: &str = r#"# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="ensemble",version="1"} 40
nv_inference_request_success{model="tensorrt_llm",version="1"} 40
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="ensemble",reason="REJECTED",version="1"} 1
nv_inference_request_failure{model="ensemble",reason="CANCELED",version="1"} 0
nv_inference_request_failure{model="ensemble",reason="BACKEND",version="1"} 2
nv_inference_request_failure{model="ensemble",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="tensorrt_llm",reason="BACKEND",version="1"} 2
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="ensemble",version="1"} 40
# HELP nv_inference_request_duration_us Cumulative inference request duration in microseconds (includes cached requests)
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="ensemble",version="1"} 60000000
nv_inference_request_duration_us{model="tensorrt_llm",version="1"} 52000000
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds (includes cached requests)
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="ensemble",version="1"} 1200
# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution per-model.
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="ensemble",version="1"} 2
nv_inference_pending_request_count{model="tensorrt_llm",version="1"} 3
# HELP nv_inference_first_response_histogram_ms Duration from request to first response in milliseconds
# TYPE nv_inference_first_response_histogram_ms histogram
nv_inference_first_response_histogram_ms_count{model="tensorrt_llm",version="1"} 40
nv_inference_first_response_histogram_ms_sum{model="tensorrt_llm",version="1"} 6000
nv_inference_first_response_histogram_ms_bucket{model="tensorrt_llm",version="1",le="100"} 10
nv_inference_first_response_histogram_ms_bucket{model="tensorrt_llm",version="1",le="500"} 38
nv_inference_first_response_histogram_ms_bucket{model="tensorrt_llm",version="1",le="+Inf"} 40
# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="context",version="1"} 1
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="scheduled",version="1"} 4
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 64
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 4
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 3
# HELP nv_trt_llm_kv_cache_block_metrics TRT LLM KV cache block metrics
# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per",model="tensorrt_llm",version="1"} 64
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="tensorrt_llm",version="1"} 300
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="free",model="tensorrt_llm",version="1"} 1700
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="tensorrt_llm",version="1"} 2000
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="tensorrt_llm",version="1"} 0.15
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-0c8c6f1e-5a4b-4f11-9e2e-1a2b3c4d5e6f"} 0.93
"#;

#[test]
fn triton() {
    let m = lifted(TRITON);
    assert_eq!(m.dialect, "triton");
    assert_close(m.requests_running, 4.0);
    // The TensorRT-LLM engine's own queue, not Triton's pending count (5 here; 0 in practice,
    // as the engine queues in its own scheduler).
    assert_close(m.requests_waiting, 3.0);
    assert_close(m.requests_succeeded_total, 80.0);
    assert_close(m.requests_failed_total, 5.0);
    assert_close(m.kv_cache_usage_ratio, 0.15);
    assert_eq!(m.prompt_tokens_total, None);
    // µs → s; the count is successful requests, the only ones that add duration.
    let e2e = m.e2e_latency.unwrap_or_default();
    assert!(e2e.buckets.is_empty());
    assert_eq!(e2e.count, 80.0);
    assert!(close(e2e.sum, 112.0));
    // ms → s.
    let ttft = m.time_to_first_token.unwrap_or_default();
    assert_eq!(
        ttft.buckets,
        vec![(0.1, 10.0), (0.5, 38.0), (f64::INFINITY, 40.0)]
    );
    assert!(close(ttft.sum, 6.0));
}

#[test]
fn triton_kv_from_used_and_max_blocks() {
    let m = lifted(
        "nv_inference_request_success{model=\"a\",version=\"1\"} 1\n\
         nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"used\",model=\"a\",version=\"1\"} 100\n\
         nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\",model=\"a\",version=\"1\"} 400\n\
         nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"used\",model=\"b\",version=\"1\"} 300\n\
         nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\",model=\"b\",version=\"1\"} 600\n\
         nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"used\",model=\"c\",version=\"1\"} 9\n",
    );
    assert_close(m.kv_cache_usage_ratio, 0.5);
    // Without the duration counter there is no e2e; without TRT-LLM no running count.
    assert_eq!(m.e2e_latency, None);
    let m = lifted("nv_inference_request_success{model=\"a\",version=\"1\"} 1\n");
    assert_eq!((m.dialect, m.requests_running), ("triton", None));
}

/// `trtllm-serve` `/prometheus/metrics` (prometheus_client 0.0.4 text).
const TRTLLM: &str = r#"# HELP trtllm_request_success_total Count of successfully processed requests.
# TYPE trtllm_request_success_total counter
trtllm_request_success_total{engine_type="trtllm",finished_reason="stop",model_name="nemotron-nano-3"} 50.0
trtllm_request_success_total{engine_type="trtllm",finished_reason="length",model_name="nemotron-nano-3"} 5.0
trtllm_request_success_total{engine_type="trtllm",finished_reason="cancelled",model_name="nemotron-nano-3"} 2.0
# HELP trtllm_request_error_total Count of failed requests.
# TYPE trtllm_request_error_total counter
trtllm_request_error_total{engine_type="trtllm",model_name="nemotron-nano-3"} 3.0
# HELP trtllm_num_requests_running Number of active requests
# TYPE trtllm_num_requests_running gauge
trtllm_num_requests_running{engine_type="trtllm",model_name="nemotron-nano-3"} 4.0
# HELP trtllm_num_requests_waiting Number of queued requests
# TYPE trtllm_num_requests_waiting gauge
trtllm_num_requests_waiting{engine_type="trtllm",model_name="nemotron-nano-3"} 2.0
# HELP trtllm_kv_cache_utilization KV cache utilization
# TYPE trtllm_kv_cache_utilization gauge
trtllm_kv_cache_utilization{engine_type="trtllm",model_name="nemotron-nano-3"} 0.6
# HELP trtllm_kv_cache_hit_rate KV cache hit rate
# TYPE trtllm_kv_cache_hit_rate gauge
trtllm_kv_cache_hit_rate{engine_type="trtllm",model_name="nemotron-nano-3"} 0.3
# HELP trtllm_prompt_tokens_total Cumulative number of prompt (input) tokens processed.
# TYPE trtllm_prompt_tokens_total counter
trtllm_prompt_tokens_total{engine_type="trtllm",model_name="nemotron-nano-3"} 5000.0
# HELP trtllm_generation_tokens_total Cumulative number of generation (output) tokens produced.
# TYPE trtllm_generation_tokens_total counter
trtllm_generation_tokens_total{engine_type="trtllm",model_name="nemotron-nano-3"} 2500.0
# HELP trtllm_time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE trtllm_time_to_first_token_seconds histogram
trtllm_time_to_first_token_seconds_bucket{engine_type="trtllm",le="0.1",model_name="nemotron-nano-3"} 40.0
trtllm_time_to_first_token_seconds_bucket{engine_type="trtllm",le="+Inf",model_name="nemotron-nano-3"} 57.0
trtllm_time_to_first_token_seconds_count{engine_type="trtllm",model_name="nemotron-nano-3"} 57.0
trtllm_time_to_first_token_seconds_sum{engine_type="trtllm",model_name="nemotron-nano-3"} 5.7
# HELP trtllm_e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE trtllm_e2e_request_latency_seconds histogram
trtllm_e2e_request_latency_seconds_bucket{engine_type="trtllm",le="1.0",model_name="nemotron-nano-3"} 30.0
trtllm_e2e_request_latency_seconds_bucket{engine_type="trtllm",le="+Inf",model_name="nemotron-nano-3"} 57.0
trtllm_e2e_request_latency_seconds_count{engine_type="trtllm",model_name="nemotron-nano-3"} 57.0
trtllm_e2e_request_latency_seconds_sum{engine_type="trtllm",model_name="nemotron-nano-3"} 70.0
# HELP trtllm_time_per_output_token_seconds Histogram of time per output token in seconds.
# TYPE trtllm_time_per_output_token_seconds histogram
trtllm_time_per_output_token_seconds_bucket{engine_type="trtllm",le="0.025",model_name="nemotron-nano-3"} 50.0
trtllm_time_per_output_token_seconds_bucket{engine_type="trtllm",le="+Inf",model_name="nemotron-nano-3"} 57.0
trtllm_time_per_output_token_seconds_count{engine_type="trtllm",model_name="nemotron-nano-3"} 57.0
trtllm_time_per_output_token_seconds_sum{engine_type="trtllm",model_name="nemotron-nano-3"} 1.2
"#;

#[test]
fn trtllm() {
    let m = lifted(TRTLLM);
    assert_eq!(m.dialect, "trtllm");
    assert_close(m.requests_running, 4.0);
    assert_close(m.requests_waiting, 2.0);
    assert_close(m.requests_succeeded_total, 55.0);
    assert_close(m.requests_failed_total, 3.0);
    assert_close(m.kv_cache_usage_ratio, 0.6);
    assert_close(m.prompt_tokens_total, 5000.0);
    assert_close(m.generation_tokens_total, 2500.0);
    assert_eq!(m.preemptions_total, None);
    assert_eq!(m.time_to_first_token.map(|h| h.count), Some(57.0));
    assert_eq!(m.e2e_latency.map(|h| h.sum), Some(70.0));
    assert_eq!(m.inter_token_latency.map(|h| h.buckets.len()), Some(2));
}

/// `llama-server --metrics` (§3.6/§5.3 names; values from the §5.3 run): no labels, no histograms.
const LLAMACPP: &str = r#"# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 33
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 0.012
# HELP llamacpp:prompt_tokens_cached_total Number of prompt tokens served from the cache.
# TYPE llamacpp:prompt_tokens_cached_total counter
llamacpp:prompt_tokens_cached_total 0
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 6
# HELP llamacpp:tokens_predicted_seconds_total Predict process time
# TYPE llamacpp:tokens_predicted_seconds_total counter
llamacpp:tokens_predicted_seconds_total 0.00176
# HELP llamacpp:n_decode_total Total number of llama_decode() calls
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 8
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode counter
llamacpp:n_busy_slots_per_decode 1
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s.
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 2750
# HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s.
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds 3401.36
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 4
"#;

#[test]
fn llamacpp() {
    let m = lifted(LLAMACPP);
    assert_eq!(m.dialect, "llamacpp");
    assert_close(m.requests_running, 2.0);
    assert_close(m.requests_waiting, 4.0);
    assert_close(m.prompt_tokens_total, 33.0);
    assert_close(m.generation_tokens_total, 6.0);
    let itl = m.inter_token_latency.unwrap_or_default();
    assert!(itl.buckets.is_empty());
    assert_eq!((itl.count, itl.sum), (6.0, 0.00176));
    assert!(close(itl.mean().unwrap_or_default(), 0.00176 / 6.0));
    assert_eq!(m.requests_succeeded_total, None);
    assert_eq!(m.requests_failed_total, None);
    assert_eq!(m.time_to_first_token, None);
    assert_eq!(m.kv_cache_usage_ratio, None);
    assert_eq!(m.series, 5);
}

/// MLServer 1.7 on :8082 (§5.2 names): per-model counters, a summary, REST middleware series.
const MLSERVER: &str = r#"# HELP model_infer_request_success_total Model infer request success count
# TYPE model_infer_request_success_total counter
model_infer_request_success_total{model="iris",version="v1"} 12.0
model_infer_request_success_total{model="echo",version=""} 3.0
# HELP model_infer_request_success_created Model infer request success count
# TYPE model_infer_request_success_created gauge
model_infer_request_success_created{model="iris",version="v1"} 1.7636e+09
# HELP model_infer_request_failure_total Model infer request failure count
# TYPE model_infer_request_failure_total counter
model_infer_request_failure_total{model="iris",version="v1"} 2.0
# HELP model_infer_request_duration Model infer request duration
# TYPE model_infer_request_duration summary
model_infer_request_duration_count{model="iris",version="v1"} 14.0
model_infer_request_duration_sum{model="iris",version="v1"} 0.126
model_infer_request_duration_count{model="echo",version=""} 3.0
model_infer_request_duration_sum{model="echo",version=""} 0.006
# HELP parallel_request_queue Queue size of parallel requests
# TYPE parallel_request_queue histogram
parallel_request_queue_bucket{le="1.0"} 17.0
parallel_request_queue_bucket{le="+Inf"} 17.0
parallel_request_queue_count 17.0
parallel_request_queue_sum 0.0
# HELP rest_server_requests_total Total number of requests
# TYPE rest_server_requests_total counter
rest_server_requests_total{method="POST",path="/v2/models/{model_name}/infer",status_code="200"} 15.0
rest_server_requests_total{method="POST",path="/v2/models/{model_name}/infer",status_code="500"} 1.0
# HELP rest_server_requests_in_progress Number of requests in progress
# TYPE rest_server_requests_in_progress gauge
rest_server_requests_in_progress{method="POST"} 1.0
rest_server_requests_in_progress{method="GET"} 0.0
"#;

#[test]
fn mlserver() {
    let m = lifted(MLSERVER);
    assert_eq!(m.dialect, "mlserver");
    assert_close(m.requests_succeeded_total, 15.0);
    assert_close(m.requests_failed_total, 2.0);
    assert_close(m.requests_running, 1.0);
    assert_eq!(m.requests_waiting, None);
    let e2e = m.e2e_latency.unwrap_or_default();
    assert!(e2e.buckets.is_empty());
    assert_eq!(e2e.count, 17.0);
    assert!(close(e2e.sum, 0.132));
}

#[test]
fn vllm_inside_triton_names_vllm_and_takes_failures_from_triton() {
    let text = "# TYPE nv_inference_request_success counter\n\
        nv_inference_request_success{model=\"vllm_model\",version=\"1\"} 20\n\
        # TYPE nv_inference_request_failure counter\n\
        nv_inference_request_failure{model=\"vllm_model\",reason=\"BACKEND\",version=\"1\"} 2\n\
        # TYPE nv_inference_pending_request_count gauge\n\
        nv_inference_pending_request_count{model=\"vllm_model\",version=\"1\"} 9\n\
        # TYPE vllm:num_requests_waiting gauge\n\
        vllm:num_requests_waiting{model=\"vllm_model\",version=\"1\"} 1\n\
        # TYPE vllm:request_success_total counter\n\
        vllm:request_success_total{finished_reason=\"stop\",model=\"vllm_model\",version=\"1\"} 18\n\
        # TYPE vllm:generation_tokens_total counter\n\
        vllm:generation_tokens_total{model=\"vllm_model\",version=\"1\"} 900\n";
    let m = lifted(text);
    assert_eq!(m.dialect, "vllm");
    assert_close(m.requests_succeeded_total, 18.0);
    assert_close(m.requests_waiting, 1.0);
    assert_close(m.generation_tokens_total, 900.0);
    assert_close(m.requests_failed_total, 2.0);
}

#[test]
fn detection_uses_type_lines_before_any_sample() {
    // A fresh vLLM has its labelled histograms declared but without series yet.
    let m = lifted(
        "# HELP vllm:e2e_request_latency_seconds x\n# TYPE vllm:e2e_request_latency_seconds histogram\n",
    );
    assert_eq!(m.dialect, "vllm");
    assert_eq!(m.e2e_latency, None);
    assert_eq!(m.series, 0);
}

#[test]
fn unknown_servers_lift_nothing() {
    let m = lifted(
        "# TYPE node_load1 gauge\nnode_load1 0.5\n# TYPE up gauge\nup 1\nnot a valid line\n",
    );
    assert_eq!(
        m,
        ServerMetrics {
            invalid_lines: 1,
            ..ServerMetrics::default()
        }
    );
    assert_eq!(m.dialect, "unknown");
}

#[test]
fn histograms_sum_only_bounds_every_label_set_has() {
    let m = lifted(
        "vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"1\"} 1\n\
         vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"2\"} 2\n\
         vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"+Inf\"} 3\n\
         vllm:e2e_request_latency_seconds_bucket{engine=\"1\",le=\"1\"} 10\n\
         vllm:e2e_request_latency_seconds_bucket{engine=\"1\",le=\"5\"} 20\n\
         vllm:e2e_request_latency_seconds_bucket{engine=\"1\",le=\"+Inf\"} 30\n\
         vllm:e2e_request_latency_seconds_bucket{engine=\"1\",le=\"bogus\"} 30\n",
    );
    let h = m.e2e_latency.unwrap_or_default();
    assert_eq!(h.buckets, vec![(1.0, 11.0), (f64::INFINITY, 33.0)]);
    // No `_count` series: the +Inf bucket is the count.
    assert_eq!((h.count, h.sum), (33.0, 0.0));
}

#[test]
fn nan_gauges_do_not_poison_sums_or_maxima() {
    let m = lifted(
        "vllm:num_requests_running{engine=\"0\"} NaN\n\
         vllm:num_requests_running{engine=\"1\"} 2\n\
         vllm:kv_cache_usage_perc{engine=\"0\"} NaN\n",
    );
    assert_close(m.requests_running, 2.0);
    assert_eq!(m.kv_cache_usage_ratio, None);
}

#[test]
fn truncation_is_reported() {
    let limits = Limits {
        max_samples: 3,
        ..Limits::default()
    };
    let m = lift(VLLM, &limits);
    assert!(m.truncated);
    assert_eq!(m.series, 3);
    assert_close(m.requests_running, 5.0);
    assert_eq!(m.requests_waiting.map(|w| w > 0.0), Some(true));
}

#[test]
fn keep_reads_only_lifted_families() {
    assert!(keep("vllm:e2e_request_latency_seconds"));
    assert!(keep("vllm:e2e_request_latency_seconds_bucket"));
    assert!(keep("tgi_request_success_total"));
    assert!(!keep("vllm:e2e_request_latency_seconds_created"));
    assert!(!keep("vllm:request_queue_time_seconds_bucket"));
    assert!(!keep("python_gc_objects_collected_total"));
}

fn h(buckets: &[(f64, f64)]) -> ServerHistogram {
    ServerHistogram {
        buckets: buckets.to_vec(),
        count: buckets.last().map_or(0.0, |b| b.1),
        sum: 0.0,
    }
}

#[test]
fn quantiles_interpolate_like_prometheus() {
    let inf = f64::INFINITY;
    let x = h(&[(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (inf, 40.0)]);
    let q = |q| histogram_quantile(&x, q).unwrap_or(f64::NAN);
    assert!(close(q(0.5), 0.3));
    assert!(close(q(0.99), 0.98));
    assert!(close(q(0.05), 0.02));
    assert!(close(q(1.0), 1.0));
    assert!(close(q(0.0), 0.0));
    assert!(close(q(0.25), 0.1));
    // Rank in +Inf: the highest finite bound.
    let y = h(&[(0.1, 10.0), (inf, 20.0)]);
    assert_eq!(histogram_quantile(&y, 0.9), Some(0.1));
    // A first bound ≤ 0 is returned as is.
    let z = h(&[(-1.0, 5.0), (inf, 10.0)]);
    assert_eq!(histogram_quantile(&z, 0.1), Some(-1.0));
    // Unsorted and non-monotonic input is sorted and lifted first.
    let w = h(&[(inf, 40.0), (1.0, 40.0), (0.1, 10.0), (0.5, 8.0)]);
    assert!(close(
        histogram_quantile(&w, 0.5).unwrap_or(f64::NAN),
        0.5 + 0.5 * 10.0 / 30.0
    ));
}

#[test]
fn quantiles_refuse_what_has_no_answer() {
    let inf = f64::INFINITY;
    assert_eq!(histogram_quantile(&h(&[]), 0.5), None);
    assert_eq!(histogram_quantile(&h(&[(inf, 3.0)]), 0.5), None);
    assert_eq!(histogram_quantile(&h(&[(0.1, 1.0), (1.0, 3.0)]), 0.5), None);
    assert_eq!(histogram_quantile(&h(&[(0.1, 0.0), (inf, 0.0)]), 0.5), None);
    let ok = h(&[(0.1, 1.0), (inf, 3.0)]);
    for q in [-0.1, 1.1, f64::NAN] {
        assert_eq!(histogram_quantile(&ok, q), None);
    }
    // A summary or counter pair has no buckets: a mean, no quantile.
    let mean_only = ServerHistogram {
        buckets: Vec::new(),
        count: 4.0,
        sum: 2.0,
    };
    assert_eq!(histogram_quantile(&mean_only, 0.5), None);
    assert_eq!(mean_only.mean(), Some(0.5));
    assert_eq!(ServerHistogram::default().mean(), None);
}

/// A vLLM-like body of about `bytes`: the HTTP instrumentator's per-handler histograms (which
/// the lift skips), then engines of two models with every vLLM histogram, as many as fit.
fn vllm_like(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 8192);
    let les = [
        "0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5", "0.75",
        "1.0", "2.5", "5.0", "7.5", "10.0", "20.0", "40.0", "80.0", "+Inf",
    ];
    let families = [
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
    ];
    for handler in 0..20 {
        for le in les {
            out += &format!(
                "http_request_duration_seconds_bucket{{handler=\"/v1/h{handler}\",le=\"{le}\",method=\"POST\"}} 1.0\n"
            );
        }
    }
    let mut engine = 0;
    while out.len() < bytes {
        for model in [
            "meta-llama/Llama-3.1-8B-Instruct",
            "Qwen/Qwen2.5-7B-Instruct",
        ] {
            let l = format!("engine=\"{engine}\",model_name=\"{model}\"");
            out += &format!("vllm:num_requests_running{{{l}}} 1.0\n");
            out += &format!("vllm:request_success_total{{{l},finished_reason=\"stop\"}} 1.0\n");
            for f in families {
                for (i, le) in les.iter().enumerate() {
                    out += &format!("{f}_bucket{{{l},le=\"{le}\"}} {}.0\n", i + 1);
                }
                out += &format!("{f}_count{{{l}}} 20.0\n{f}_sum{{{l}}} 3.5\n");
            }
        }
        engine += 1;
    }
    out
}

#[test]
fn a_large_body_lifts_within_bounds() {
    let text = vllm_like(200 * 1024);
    let m = lifted(&text);
    assert_eq!(m.dialect, "vllm");
    assert!(!m.truncated);
    let ttft = m.time_to_first_token.unwrap_or_default();
    assert_eq!(ttft.buckets.len(), 20);
    // Every round repeats each series; the sum is over label sets as exposed.
    assert_eq!(ttft.buckets.last().map(|b| b.1), Some(ttft.count));
}

/// Older SGLang: `sglang:time_per_output_token_seconds`, observed once per generated token
/// (SGLang's docs/references/production_metrics.md), without the newer
/// `sglang:inter_token_latency_seconds`: it is the inter-token latency.
#[test]
fn sglang_old_inter_token_name() {
    let m = lifted(
        "# HELP sglang:time_per_output_token_seconds Histogram of time per output token in seconds.
# TYPE sglang:time_per_output_token_seconds histogram
sglang:time_per_output_token_seconds_bucket{le=\"0.005\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 120.0
sglang:time_per_output_token_seconds_bucket{le=\"0.01\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 3400.0
sglang:time_per_output_token_seconds_bucket{le=\"+Inf\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 3500.0
sglang:time_per_output_token_seconds_sum{model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 26.3
sglang:time_per_output_token_seconds_count{model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 3500.0
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 5.0
",
    );
    assert_eq!(m.dialect, "sglang");
    assert_eq!(m.inter_token_latency.map(|h| h.count), Some(3500.0));
}

/// NVIDIA NIM for LLMs: vLLM's names without the `vllm:` prefix, at `/v1/metrics` (NIM for
/// LLMs "Observability" docs: `num_requests_running`, `num_requests_waiting`,
/// `gpu_cache_usage_perc`, `prompt_tokens_total`, `generation_tokens_total`,
/// `time_to_first_token_seconds`, `time_per_output_token_seconds`,
/// `e2e_request_latency_seconds`, `request_success_total` by `finished_reason`), in
/// prometheus_client's text format.
const NIM: &str = r#"# HELP num_requests_running Number of requests currently running on GPU.
# TYPE num_requests_running gauge
num_requests_running{model_name="meta/llama-3.1-8b-instruct"} 3.0
# HELP num_requests_waiting Number of requests waiting to be processed.
# TYPE num_requests_waiting gauge
num_requests_waiting{model_name="meta/llama-3.1-8b-instruct"} 2.0
# HELP num_request_max Max number of concurrently running requests.
# TYPE num_request_max gauge
num_request_max{model_name="meta/llama-3.1-8b-instruct"} 256.0
# HELP gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE gpu_cache_usage_perc gauge
gpu_cache_usage_perc{model_name="meta/llama-3.1-8b-instruct"} 0.27
# HELP prompt_tokens_total Number of prefill tokens processed.
# TYPE prompt_tokens_total counter
prompt_tokens_total{model_name="meta/llama-3.1-8b-instruct"} 52110.0
# HELP generation_tokens_total Number of generation tokens processed.
# TYPE generation_tokens_total counter
generation_tokens_total{model_name="meta/llama-3.1-8b-instruct"} 18900.0
# HELP time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE time_to_first_token_seconds histogram
time_to_first_token_seconds_bucket{le="0.04",model_name="meta/llama-3.1-8b-instruct"} 80.0
time_to_first_token_seconds_bucket{le="0.1",model_name="meta/llama-3.1-8b-instruct"} 140.0
time_to_first_token_seconds_bucket{le="+Inf",model_name="meta/llama-3.1-8b-instruct"} 150.0
time_to_first_token_seconds_count{model_name="meta/llama-3.1-8b-instruct"} 150.0
time_to_first_token_seconds_sum{model_name="meta/llama-3.1-8b-instruct"} 9.1
# HELP time_per_output_token_seconds Histogram of time per output token in seconds.
# TYPE time_per_output_token_seconds histogram
time_per_output_token_seconds_bucket{le="0.01",model_name="meta/llama-3.1-8b-instruct"} 17000.0
time_per_output_token_seconds_bucket{le="+Inf",model_name="meta/llama-3.1-8b-instruct"} 18750.0
time_per_output_token_seconds_count{model_name="meta/llama-3.1-8b-instruct"} 18750.0
time_per_output_token_seconds_sum{model_name="meta/llama-3.1-8b-instruct"} 150.2
# HELP e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE e2e_request_latency_seconds histogram
e2e_request_latency_seconds_bucket{le="1.0",model_name="meta/llama-3.1-8b-instruct"} 100.0
e2e_request_latency_seconds_bucket{le="+Inf",model_name="meta/llama-3.1-8b-instruct"} 150.0
e2e_request_latency_seconds_count{model_name="meta/llama-3.1-8b-instruct"} 150.0
e2e_request_latency_seconds_sum{model_name="meta/llama-3.1-8b-instruct"} 180.0
# HELP request_success_total Count of successfully processed requests.
# TYPE request_success_total counter
request_success_total{finished_reason="stop",model_name="meta/llama-3.1-8b-instruct"} 140.0
request_success_total{finished_reason="length",model_name="meta/llama-3.1-8b-instruct"} 10.0
request_success_total{finished_reason="error",model_name="meta/llama-3.1-8b-instruct"} 1.0
"#;

#[test]
fn nim() {
    let m = lifted(NIM);
    assert_eq!(m.dialect, "nim");
    assert_close(m.requests_running, 3.0);
    assert_close(m.requests_waiting, 2.0);
    assert_close(m.kv_cache_usage_ratio, 0.27);
    assert_close(m.prompt_tokens_total, 52110.0);
    assert_close(m.generation_tokens_total, 18900.0);
    assert_close(m.requests_succeeded_total, 150.0);
    assert_close(m.requests_failed_total, 1.0);
    assert_eq!(m.time_to_first_token.map(|h| h.count), Some(150.0));
    assert_eq!(m.inter_token_latency.map(|h| h.count), Some(18750.0));
    assert_eq!(m.e2e_latency.map(|h| h.sum), Some(180.0));
}

/// `trtllm-serve` 1.x at `/prometheus/metrics`: unprefixed names labelled `model_name` and
/// `engine_type`, successes by `finished_reason` (TensorRT-LLM PR #5785's MetricsCollector; the
/// same series Dynamo re-exports with a `trtllm_` prefix, in its TensorRT-LLM Prometheus page).
const TRTLLM_SERVE_1X: &str = r#"# HELP request_success_total Count of successfully processed requests.
# TYPE request_success_total counter
request_success_total{engine_type="trtllm",finished_reason="stop",model_name="Qwen/Qwen3-0.6B"} 150.0
request_success_total{engine_type="trtllm",finished_reason="length",model_name="Qwen/Qwen3-0.6B"} 5.0
# HELP e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE e2e_request_latency_seconds histogram
e2e_request_latency_seconds_bucket{engine_type="trtllm",le="0.5",model_name="Qwen/Qwen3-0.6B"} 25.0
e2e_request_latency_seconds_bucket{engine_type="trtllm",le="+Inf",model_name="Qwen/Qwen3-0.6B"} 155.0
e2e_request_latency_seconds_count{engine_type="trtllm",model_name="Qwen/Qwen3-0.6B"} 155.0
e2e_request_latency_seconds_sum{engine_type="trtllm",model_name="Qwen/Qwen3-0.6B"} 45.2
# HELP time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE time_to_first_token_seconds histogram
time_to_first_token_seconds_bucket{engine_type="trtllm",le="0.01",model_name="Qwen/Qwen3-0.6B"} 0.0
time_to_first_token_seconds_bucket{engine_type="trtllm",le="0.05",model_name="Qwen/Qwen3-0.6B"} 12.0
time_to_first_token_seconds_bucket{engine_type="trtllm",le="+Inf",model_name="Qwen/Qwen3-0.6B"} 155.0
time_to_first_token_seconds_count{engine_type="trtllm",model_name="Qwen/Qwen3-0.6B"} 155.0
time_to_first_token_seconds_sum{engine_type="trtllm",model_name="Qwen/Qwen3-0.6B"} 8.75
# HELP time_per_output_token_seconds Histogram of time per output token in seconds.
# TYPE time_per_output_token_seconds histogram
time_per_output_token_seconds_bucket{engine_type="trtllm",le="0.1",model_name="Qwen/Qwen3-0.6B"} 120.0
time_per_output_token_seconds_bucket{engine_type="trtllm",le="+Inf",model_name="Qwen/Qwen3-0.6B"} 155.0
time_per_output_token_seconds_count{engine_type="trtllm",model_name="Qwen/Qwen3-0.6B"} 155.0
time_per_output_token_seconds_sum{engine_type="trtllm",model_name="Qwen/Qwen3-0.6B"} 12.5
# HELP request_queue_time_seconds Histogram of time spent in WAITING phase for request.
# TYPE request_queue_time_seconds histogram
request_queue_time_seconds_bucket{engine_type="trtllm",le="1.0",model_name="Qwen/Qwen3-0.6B"} 140.0
request_queue_time_seconds_bucket{engine_type="trtllm",le="+Inf",model_name="Qwen/Qwen3-0.6B"} 155.0
request_queue_time_seconds_count{engine_type="trtllm",model_name="Qwen/Qwen3-0.6B"} 155.0
request_queue_time_seconds_sum{engine_type="trtllm",model_name="Qwen/Qwen3-0.6B"} 32.1
"#;

#[test]
fn trtllm_serve_1x_unprefixed() {
    let m = lifted(TRTLLM_SERVE_1X);
    assert_eq!(m.dialect, "trtllm");
    assert_close(m.requests_succeeded_total, 155.0);
    // No error series: failures are not counted by this version (unknown, not 0).
    assert_eq!(m.requests_failed_total, None);
    assert_eq!(
        m.time_to_first_token.map(|h| h.buckets),
        Some(vec![(0.01, 0.0), (0.05, 12.0), (f64::INFINITY, 155.0)])
    );
    assert_eq!(m.e2e_latency.map(|h| h.count), Some(155.0));
    assert_eq!(m.inter_token_latency.map(|h| h.sum), Some(12.5));
    assert_eq!(m.requests_waiting, None);
}

/// A vLLM exposition is never read as NIM: prefixed names win.
#[test]
fn prefixed_names_win_over_unprefixed() {
    let m = lifted(&format!(
        "{NIM}# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 9\n"
    ));
    assert_eq!(m.dialect, "vllm");
    assert_close(m.requests_running, 9.0);
}
