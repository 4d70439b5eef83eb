//! Inference-server metrics: what `collect::probe::scrape::lift` reads from a server's own
//! /metrics, under common names.

/// A latency histogram as the server exposes it, in seconds: cumulative counts per upper bound.
///
/// Summed over the server's label sets (models, engines). A summary, or a pair of cumulative
/// counters (Triton's `_us` duration and request count, llama.cpp's seconds and tokens), comes
/// as `buckets` empty with `sum` and `count`, which still give the mean.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerHistogram {
    /// `(upper bound in seconds, observations ≤ it)`, bounds ascending, the last `+Inf` when the
    /// server exposes buckets; only bounds every summed label set has.
    pub buckets: Vec<(f64, f64)>,
    /// Observations since the server started.
    pub count: f64,
    /// Sum of the observations, seconds.
    pub sum: f64,
}

/// The `q` quantile (0–1) of cumulative `(upper bound, count)` buckets ending in `+Inf`, as
/// PromQL's `histogram_quantile` computes it: linear within the bucket the rank falls in, the
/// highest finite bound when it falls in `+Inf`. `None` without a `+Inf` bucket and another,
/// without observations, or for `q` outside 0–1.
pub fn bucket_quantile(buckets: impl IntoIterator<Item = (f64, f64)>, q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut buckets: Vec<(f64, f64)> = buckets
        .into_iter()
        .filter(|(le, count)| !le.is_nan() && count.is_finite())
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets.last()?.0 != f64::INFINITY {
        return None;
    }
    // A scrape that races an update can show a bucket below its predecessor; Prometheus lifts
    // such counts to keep them cumulative, and so do we.
    let mut running = 0.0_f64;
    for (_, count) in &mut buckets {
        running = running.max(*count);
        *count = running;
    }
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|(_, count)| *count >= rank)?;
    if i + 1 == buckets.len() {
        return buckets.get(i.checked_sub(1)?).map(|(le, _)| *le);
    }
    let (end, count) = *buckets.get(i)?;
    let (start, below) = match i.checked_sub(1) {
        Some(prev) => *buckets.get(prev)?,
        None if end <= 0.0 => return Some(end),
        None => (0.0, 0.0),
    };
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(start);
    }
    Some(start + (end - start) * (rank - below) / in_bucket)
}

impl ServerHistogram {
    /// The `q` quantile (0–1) in seconds (see [`bucket_quantile`]); `None` without buckets,
    /// observations, or for `q` outside 0–1.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        bucket_quantile(self.buckets.iter().copied(), q)
    }

    /// Mean observation in seconds; `None` before the first observation.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

/// The quality-relevant series of an inference server's own /metrics, under common names;
/// `None` = the server does not expose it (or not yet: most exporters publish a labelled series
/// only once it has a value). Counters are cumulative since the server started, summed over
/// models and engines; the caller takes rates.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerMetrics {
    /// Which server's names were found: "vllm", "sglang", "tgi", "triton", "trtllm",
    /// "llamacpp", "mlserver", or "unknown".
    pub dialect: &'static str,
    /// Requests being processed now (in the running batch), count.
    pub requests_running: Option<f64>,
    /// Requests queued and not yet scheduled, count.
    pub requests_waiting: Option<f64>,
    /// Requests finished successfully, counter.
    pub requests_succeeded_total: Option<f64>,
    /// Requests that failed on the server's side, counter.
    pub requests_failed_total: Option<f64>,
    /// Prompt (input) tokens processed, counter.
    pub prompt_tokens_total: Option<f64>,
    /// Generated (output) tokens, counter.
    pub generation_tokens_total: Option<f64>,
    /// KV-cache use, ratio 0–1; the highest of the server's engines.
    pub kv_cache_usage_ratio: Option<f64>,
    /// Requests preempted (evicted from the running batch and requeued), counter.
    pub preemptions_total: Option<f64>,
    /// Time to first token, seconds.
    pub time_to_first_token: Option<ServerHistogram>,
    /// End-to-end request latency as the server measures it, seconds.
    pub e2e_latency: Option<ServerHistogram>,
    /// Time between output tokens, seconds (per-request means for TGI; the overall mean for
    /// llama.cpp).
    pub inter_token_latency: Option<ServerHistogram>,
    /// Samples parsed and kept (only the families the lift reads).
    pub series: usize,
    /// Lines of the body that were not valid exposition syntax (skipped).
    pub invalid_lines: usize,
    /// The body hit a parse limit, so the values may be partial.
    pub truncated: bool,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            dialect: "unknown",
            requests_running: None,
            requests_waiting: None,
            requests_succeeded_total: None,
            requests_failed_total: None,
            prompt_tokens_total: None,
            generation_tokens_total: None,
            kv_cache_usage_ratio: None,
            preemptions_total: None,
            time_to_first_token: None,
            e2e_latency: None,
            inter_token_latency: None,
            series: 0,
            invalid_lines: 0,
            truncated: false,
        }
    }
}
