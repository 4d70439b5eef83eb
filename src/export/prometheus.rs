//! Renders the latest snapshot as Prometheus text (or OpenMetrics) for `/metrics`.
//!
//! Rendering goes through prometheus-client's [`Collector`] hook: on each scrape the snapshot
//! is read (never re-sampled) and turned into const metrics. Values are those of the last
//! completed collector cycle, so no timestamps are attached; HELP texts say so. A family with
//! no series (e.g. GPU metrics with no NVML) is left out entirely. With
//! [`RenderOptions::dcgm_compat`], the dcgm-exporter families of [`super::dcgm`] follow the
//! native `gpulse_*` ones in the same exposition.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::ExportStats;
use super::catalog::GPU_SCALARS;
use crate::health::{NodeHealth, State};
use crate::model::{
    GpuDevice, GpuProcess, GpuSample, HostSample, InferenceStats, JOB_DURATION_BUCKETS, JobLog,
    JobOutcome, LatencyHistogram, ProbeState, ProbeStatus, ServerHistogram, ServerMetrics,
    XidCount, XidLog, index_label,
};
use crate::store::{Snapshot, Store};

/// Content type of the classic Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics text, served when the scraper asks for it.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Static facts about this agent, rendered as `gpulse_build_info`.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: &'static str,
    /// `demo` when GPUs are simulated, otherwise `nvml`.
    pub gpu_source: &'static str,
}

/// What `/metrics` renders besides the native families.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Also render dcgm-exporter's default names, units and labels (`[prometheus] dcgm_compat`).
    pub dcgm_compat: bool,
    /// Value of the dcgm `Hostname` label: `agent.node_name` or the OS hostname.
    pub hostname: String,
}

/// The `/metrics` renderer. Cheap to clone; holds the store, build info and options.
#[derive(Debug, Clone)]
pub struct MetricsRenderer {
    registry: Arc<Registry>,
}

impl MetricsRenderer {
    pub fn new(
        store: Arc<Store>,
        build: BuildInfo,
        options: RenderOptions,
        exports: Arc<ExportStats>,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector {
            store,
            build,
            options,
            exports,
        }));
        Self {
            registry: Arc::new(registry),
        }
    }

    /// Renders the exposition; `openmetrics` picks the format.
    pub fn render(&self, openmetrics: bool) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(64 * 1024);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        }
        Ok(out)
    }
}

/// Renders one snapshot into any prometheus-client encoder, for tests and benches.
pub fn render_snapshot(
    snapshot: &Snapshot,
    build: &BuildInfo,
    options: &RenderOptions,
) -> Result<String, fmt::Error> {
    #[derive(Debug)]
    struct Fixed(Snapshot, BuildInfo, RenderOptions);
    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
            encode_snapshot(&self.0, &self.1, &self.2, encoder)
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Fixed(
        snapshot.clone(),
        build.clone(),
        options.clone(),
    )));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct SnapshotCollector {
    store: Arc<Store>,
    build: BuildInfo,
    options: RenderOptions,
    exports: Arc<ExportStats>,
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        encode_exports(&mut encoder, &self.exports)?;
        encode_snapshot(&self.store.snapshot(), &self.build, &self.options, encoder)
    }
}

/// Push counters of the exporters (OTLP); absent until an exporter has pushed.
fn encode_exports(e: &mut DescriptorEncoder, exports: &ExportStats) -> fmt::Result {
    let counts = exports.snapshot();
    counter(
        e,
        "gpulse_exports",
        "Pushes attempted per exporter.",
        counts
            .iter()
            .map(|(name, pushes, _)| ([("exporter", *name)], *pushes as f64)),
    )?;
    counter(
        e,
        "gpulse_export_failures",
        "Pushes that failed per exporter (their data is dropped, not queued).",
        counts
            .iter()
            .map(|(name, _, failures)| ([("exporter", *name)], *failures as f64)),
    )
}

/// Writes one metric family; skipped entirely when `series` is empty.
fn family<L, I>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: I,
) -> fmt::Result
where
    L: EncodeLabelSet,
    I: IntoIterator<Item = (L, f64)>,
{
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let encoder = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value).encode(encoder)?,
            _ => ConstGauge::new(value).encode(encoder)?,
        }
    }
    Ok(())
}

/// A gauge family; `dcgm` renders every DCGM family through it too.
pub(super) fn gauge<L: EncodeLabelSet, I: IntoIterator<Item = (L, f64)>>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: I,
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, series)
}

/// A counter; `name` is given without `_total`, which the encoder appends.
fn counter<L: EncodeLabelSet, I: IntoIterator<Item = (L, f64)>>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: I,
) -> fmt::Result {
    family(enc, name, help, MetricType::Counter, series)
}

/// One histogram series: sum, count, and per-bucket (not cumulative) counts ending in `+Inf`.
pub(super) struct HistogramSeries {
    pub sum: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

/// Buckets kept from a server's histogram (vLLM has about 20; more is a hostile server).
const MAX_SERVER_BUCKETS: usize = 64;

impl HistogramSeries {
    /// A server's histogram (cumulative `f64` counts) re-exposed: per-bucket counts, always
    /// ending in `+Inf` so a summary or a counter pair becomes a bucket-less histogram.
    pub fn from_server(h: &ServerHistogram) -> Self {
        let count = h.count.max(0.0) as u64;
        let mut buckets = Vec::new();
        let mut below = 0u64;
        for &(bound, cumulative) in h
            .buckets
            .iter()
            .filter(|(bound, _)| bound.is_finite())
            .take(MAX_SERVER_BUCKETS)
        {
            let cumulative = (cumulative.max(0.0) as u64).clamp(below, count);
            buckets.push((bound, cumulative - below));
            below = cumulative;
        }
        buckets.push((f64::INFINITY, count - below));
        Self {
            sum: h.sum,
            count,
            buckets,
        }
    }

    /// The agent's own fixed-bucket histogram.
    pub fn from_latency(h: &LatencyHistogram) -> Self {
        let mut buckets: Vec<(f64, u64)> = crate::model::LATENCY_BUCKETS
            .iter()
            .copied()
            .zip(h.per_bucket.iter().copied())
            .collect();
        let below: u64 = h.per_bucket.iter().sum();
        buckets.push((f64::INFINITY, h.count.saturating_sub(below)));
        Self {
            sum: h.sum,
            count: h.count,
            buckets,
        }
    }
}

/// A histogram family; skipped entirely when `series` is empty.
fn histogram<L, I>(enc: &mut DescriptorEncoder, name: &str, help: &str, series: I) -> fmt::Result
where
    L: EncodeLabelSet,
    I: IntoIterator<Item = (L, HistogramSeries)>,
{
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
    }
    Ok(())
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn encode_snapshot(
    snap: &Snapshot,
    build: &BuildInfo,
    options: &RenderOptions,
    mut enc: DescriptorEncoder,
) -> fmt::Result {
    let e = &mut enc;
    gauge(
        e,
        "gpulse_build_info",
        "Always 1; labels carry the gpulse version, where GPU data comes from and where gpulse runs (mode: embedded, sidecar, host).",
        [(
            [
                ("version", build.version),
                ("gpu_source", build.gpu_source),
                ("os", std::env::consts::OS),
                ("arch", std::env::consts::ARCH),
                ("mode", snap.mode.mode.as_str()),
            ],
            1.0,
        )],
    )?;
    encode_collectors(e, snap)?;
    if let Some(gpu) = &snap.gpu {
        encode_gpus(e, gpu)?;
    }
    encode_xid(e, &snap.xid)?;
    if let Some(host) = &snap.host {
        encode_host(e, host)?;
    }
    if let Some(health) = &snap.health {
        encode_health(e, health)?;
    }
    encode_probes(e, &snap.probes)?;
    if let Some(job) = &snap.job {
        encode_job(e, job)?;
    }
    if options.dcgm_compat {
        super::dcgm::encode_dcgm(e, snap, &options.hostname)?;
    }
    Ok(())
}

fn encode_collectors(e: &mut DescriptorEncoder, snap: &Snapshot) -> fmt::Result {
    let by_name = |value: fn(&crate::model::CollectorStatus) -> Option<f64>| {
        snap.collectors
            .iter()
            .filter_map(move |c| value(c).map(|v| ([("collector", c.name)], v)))
    };
    gauge(
        e,
        "gpulse_collector_success",
        "1 if the collector's last cycle produced a fresh sample, 0 if it failed or missed its deadline.",
        by_name(|c| (c.runs > 0).then_some(flag(c.last_success))),
    )?;
    gauge(
        e,
        "gpulse_collector_stale",
        "1 if the data served for this collector is from an earlier cycle because the last one failed.",
        by_name(|c| Some(flag(c.is_stale()))),
    )?;
    gauge(
        e,
        "gpulse_collector_duration_seconds",
        "How long the collector's last cycle took (capped at its deadline).",
        by_name(|c| (c.runs > 0).then_some(c.last_duration.as_secs_f64())),
    )?;
    gauge(
        e,
        "gpulse_collector_interval_seconds",
        "Configured time between the collector's cycles; metric values are as of its last cycle.",
        by_name(|c| Some(c.interval.as_secs_f64())),
    )?;
    gauge(
        e,
        "gpulse_collector_last_success_timestamp_seconds",
        "Unix time of the collector's last successful cycle.",
        by_name(|c| c.last_success_at.map(unix_seconds)),
    )?;
    counter(
        e,
        "gpulse_collector_runs",
        "Collector cycles attempted.",
        by_name(|c| Some(c.runs as f64)),
    )?;
    counter(
        e,
        "gpulse_collector_failures",
        "Collector cycles that failed or missed their deadline.",
        by_name(|c| Some(c.failures as f64)),
    )
}

/// Health states: one series per state, 1 for the current one; one series per active reason.
fn encode_health(e: &mut DescriptorEncoder, health: &NodeHealth) -> fmt::Result {
    let indices: Vec<String> = health.gpus.iter().map(|g| g.index.to_string()).collect();
    gauge(
        e,
        "gpulse_node_health",
        "1 for the node's current health state (healthy, degraded, unhealthy, unknown), 0 for the others.",
        State::ALL
            .iter()
            .map(|s| ([("state", s.as_str())], flag(*s == health.state))),
    )?;
    gauge(
        e,
        "gpulse_gpu_health",
        "1 for the GPU's current health state (healthy, degraded, unhealthy, unknown), 0 for the others.",
        health.gpus.iter().zip(&indices).flat_map(|(g, index)| {
            State::ALL.iter().map(move |s| {
                (
                    [
                        ("gpu", index.as_str()),
                        ("uuid", g.uuid.as_str()),
                        ("state", s.as_str()),
                    ],
                    flag(*s == g.state),
                )
            })
        }),
    )?;
    let reasons: Vec<(&str, &str, String, &str)> = health
        .gpus
        .iter()
        .zip(&indices)
        .flat_map(|(g, index)| {
            g.reasons.iter().map(move |r| {
                (
                    index.as_str(),
                    g.uuid.as_str(),
                    r.code.label(),
                    r.action.as_str(),
                )
            })
        })
        .collect();
    gauge(
        e,
        "gpulse_gpu_health_reason",
        "1 per active health reason of a GPU (held for health.hold_time after its cause), with the suggested action.",
        reasons.iter().map(|(gpu, uuid, reason, action)| {
            (
                [
                    ("gpu", *gpu),
                    ("uuid", *uuid),
                    ("reason", reason.as_str()),
                    ("action", *action),
                ],
                1.0,
            )
        }),
    )
}

/// Xid counts per (GPU, Xid); a GPU the source could not name has `gpu=""` and `uuid=""`.
fn encode_probes(e: &mut DescriptorEncoder, probes: &[ProbeStatus]) -> fmt::Result {
    let checked = || {
        probes
            .iter()
            .filter_map(|p| p.last.as_ref().map(|l| (p, l)))
    };
    gauge(
        e,
        "gpulse_probe_up",
        "1 when the probe's last check found the server up (ready, expected model listed).",
        checked().map(|(p, l)| (probe_labels(p), flag(l.state == ProbeState::Up))),
    )?;
    gauge(
        e,
        "gpulse_probe_state",
        "1 for the probe's current state (up, loading, degraded, down), 0 for the others.",
        checked().flat_map(|(p, l)| {
            ProbeState::ALL.into_iter().map(move |state| {
                (
                    probe_labels_and(p, "state", state.as_str().to_owned()),
                    flag(state == l.state),
                )
            })
        }),
    )?;
    gauge(
        e,
        "gpulse_probe_check_duration_seconds",
        "How long the probe's last check took.",
        checked().map(|(p, l)| (probe_labels(p), l.latency.as_secs_f64())),
    )?;
    counter(
        e,
        "gpulse_probe_outages",
        "Outages (transitions to down) since the agent started.",
        probes
            .iter()
            .map(|p| (probe_labels(p), p.outages_total as f64)),
    )?;
    gauge(
        e,
        "gpulse_probe_last_recovery_seconds",
        "How long the probe's last finished outage lasted.",
        probes
            .iter()
            .filter_map(|p| p.last_recovery.map(|d| (probe_labels(p), d.as_secs_f64()))),
    )?;
    encode_inference(e, probes)?;
    encode_server_metrics(e, probes)
}

/// The server's own metrics, lifted into common names (only probes that scrape them).
fn encode_server_metrics(e: &mut DescriptorEncoder, probes: &[ProbeStatus]) -> fmt::Result {
    let scraping = || {
        probes
            .iter()
            .filter_map(|p| p.server.as_ref().map(|s| (p, s)))
    };
    gauge(
        e,
        "gpulse_probe_metrics_scrape_success",
        "1 when the last scrape of the server's own /metrics succeeded.",
        scraping().filter_map(|(p, s)| s.last_ok().map(|ok| (probe_labels(p), flag(ok)))),
    )?;
    counter(
        e,
        "gpulse_probe_metrics_scrape_failures",
        "Failed scrapes of the server's own /metrics.",
        scraping().map(|(p, s)| (probe_labels(p), s.failures as f64)),
    )?;
    let lifted = || scraping().filter_map(|(p, s)| s.metrics.as_ref().map(|m| (p, m)));
    type Field = fn(&ServerMetrics) -> Option<f64>;
    let scalars: [(&str, &str, bool, Field); 8] = [
        (
            "gpulse_server_requests_running",
            "Requests the server is processing now (its own metric, e.g. vllm:num_requests_running).",
            false,
            |m| m.requests_running,
        ),
        (
            "gpulse_server_requests_waiting",
            "Requests queued in the server, not yet scheduled (e.g. vllm:num_requests_waiting, llamacpp:requests_deferred).",
            false,
            |m| m.requests_waiting,
        ),
        (
            "gpulse_server_requests_succeeded",
            "Requests the server finished successfully, as it counts them.",
            true,
            |m| m.requests_succeeded_total,
        ),
        (
            "gpulse_server_requests_failed",
            "Requests that failed on the server's side, as it counts them.",
            true,
            |m| m.requests_failed_total,
        ),
        (
            "gpulse_server_prompt_tokens",
            "Prompt tokens the server processed.",
            true,
            |m| m.prompt_tokens_total,
        ),
        (
            "gpulse_server_generation_tokens",
            "Tokens the server generated.",
            true,
            |m| m.generation_tokens_total,
        ),
        (
            "gpulse_server_kv_cache_usage_ratio",
            "KV-cache use of the server, 0 to 1 (the fullest engine).",
            false,
            |m| m.kv_cache_usage_ratio,
        ),
        (
            "gpulse_server_preemptions",
            "Requests the server preempted (evicted from the batch and requeued).",
            true,
            |m| m.preemptions_total,
        ),
    ];
    for (name, help, is_counter, field) in scalars {
        let series = lifted().filter_map(|(p, m)| field(m).map(|v| (probe_labels(p), v)));
        if is_counter {
            counter(e, name, help, series)?;
        } else {
            gauge(e, name, help, series)?;
        }
    }
    type Hist = fn(&ServerMetrics) -> Option<&ServerHistogram>;
    let histograms: [(&str, &str, Hist); 3] = [
        (
            "gpulse_server_time_to_first_token_seconds",
            "Time to first token as the server measures it.",
            |m| m.time_to_first_token.as_ref(),
        ),
        (
            "gpulse_server_e2e_request_latency_seconds",
            "End-to-end request latency as the server measures it (bucket-less when the server only has a sum and count).",
            |m| m.e2e_latency.as_ref(),
        ),
        (
            "gpulse_server_inter_token_latency_seconds",
            "Time between output tokens as the server measures it.",
            |m| m.inter_token_latency.as_ref(),
        ),
    ];
    for (name, help, field) in histograms {
        histogram(
            e,
            name,
            help,
            lifted().filter_map(|(p, m)| {
                field(m).map(|h| (probe_labels(p), HistogramSeries::from_server(h)))
            }),
        )?;
    }
    Ok(())
}

/// The labels of every probe series.
fn probe_labels(p: &ProbeStatus) -> [(&'static str, String); 2] {
    [("probe", p.name.clone()), ("kind", p.kind.to_owned())]
}

/// [`probe_labels`] and one more.
fn probe_labels_and(
    p: &ProbeStatus,
    key: &'static str,
    value: String,
) -> [(&'static str, String); 3] {
    let [probe, kind] = probe_labels(p);
    [probe, kind, (key, value)]
}

/// Synthetic inference requests: only probes that send them have these series.
fn encode_inference(e: &mut DescriptorEncoder, probes: &[ProbeStatus]) -> fmt::Result {
    let sending = || {
        probes
            .iter()
            .filter_map(|p| p.inference.as_ref().map(|i| (p, i)))
    };
    let last = || {
        sending()
            .filter_map(|(p, i): (&ProbeStatus, &InferenceStats)| i.last.as_ref().map(|l| (p, l)))
    };
    counter(
        e,
        "gpulse_probe_inference_requests",
        "Synthetic inference requests by outcome (success: a complete, well-formed answer).",
        sending().flat_map(|(p, i)| {
            [("success", i.succeeded), ("failure", i.failed)]
                .map(|(outcome, n)| (probe_labels_and(p, "outcome", outcome.to_owned()), n as f64))
        }),
    )?;
    counter(
        e,
        "gpulse_probe_inference_slo_violations",
        "Synthetic requests that failed or missed the probe's ttft_slo or latency_slo.",
        sending().map(|(p, i)| (probe_labels(p), i.slo_violations as f64)),
    )?;
    gauge(
        e,
        "gpulse_probe_inference_slo_seconds",
        "The probe's latency objectives: target=ttft (first token) and target=e2e (whole answer).",
        sending().flat_map(|(p, i)| {
            [("ttft", i.ttft_slo), ("e2e", i.latency_slo)].map(|(target, slo)| {
                (
                    probe_labels_and(p, "target", target.to_owned()),
                    slo.as_secs_f64(),
                )
            })
        }),
    )?;
    counter(
        e,
        "gpulse_probe_inference_output_tokens",
        "Tokens generated by successful synthetic requests.",
        sending().map(|(p, i)| (probe_labels(p), i.output_tokens_total as f64)),
    )?;
    gauge(
        e,
        "gpulse_probe_inference_success",
        "1 when the last synthetic request got a complete, well-formed answer.",
        last().map(|(p, l)| (probe_labels(p), flag(l.ok))),
    )?;
    gauge(
        e,
        "gpulse_probe_inference_tokens_per_second",
        "Output tokens per second of the last successful synthetic request (tokens / whole duration).",
        last().filter_map(|(p, l)| l.tokens_per_second().map(|t| (probe_labels(p), t))),
    )?;
    histogram(
        e,
        "gpulse_probe_inference_time_to_first_token_seconds",
        "Time to the first streamed token (first response byte for KServe v2) of successful synthetic requests.",
        sending().map(|(p, i)| (probe_labels(p), HistogramSeries::from_latency(&i.ttft))),
    )?;
    histogram(
        e,
        "gpulse_probe_inference_duration_seconds",
        "End-to-end latency of successful synthetic requests.",
        sending().map(|(p, i)| (probe_labels(p), HistogramSeries::from_latency(&i.duration))),
    )
}

fn encode_xid(e: &mut DescriptorEncoder, xid: &XidLog) -> fmt::Result {
    let labels = |c: &XidCount| {
        [
            (
                "gpu",
                c.gpu_index.map(|i| i.to_string()).unwrap_or_default(),
            ),
            ("uuid", c.uuid.clone()),
            ("xid", c.xid.to_string()),
        ]
    };
    counter(
        e,
        "gpulse_gpu_xid_errors",
        "Xid errors seen since the agent started (NVML events, kernel log, NVML return codes; one occurrence seen by several sources counts once).",
        xid.counts.iter().map(|c| (labels(c), c.count as f64)),
    )?;
    gauge(
        e,
        "gpulse_gpu_xid_last_seen_timestamp_seconds",
        "Unix time this Xid was last seen on this GPU.",
        xid.counts
            .iter()
            .map(|c| (labels(c), unix_seconds(c.last_seen))),
    )
}

type GpuLabels<'a> = [(&'static str, &'a str); 2];

fn gpu_labels(d: &GpuDevice) -> GpuLabels<'_> {
    [("gpu", &d.identity.index_label), ("uuid", &d.identity.uuid)]
}

/// One series per GPU that has the reading.
fn per_gpu<'a>(
    gpu: &'a GpuSample,
    value: impl Fn(&GpuDevice) -> Option<f64> + 'a,
) -> impl Iterator<Item = (GpuLabels<'a>, f64)> + 'a {
    gpu.devices
        .iter()
        .filter(|d| !d.lost)
        .filter_map(move |d| value(d).map(|v| (gpu_labels(d), v)))
}

/// One series per GPU and per labelled item of a list reading, with one extra label.
fn per_gpu_item<'a, T: 'a>(
    gpu: &'a GpuSample,
    label: &'static str,
    items: impl Fn(&'a GpuDevice) -> &'a [T] + 'a,
    item: impl Fn(&'a T) -> (&'a str, f64) + Copy + 'a,
) -> impl Iterator<Item = ([(&'static str, &'a str); 3], f64)> + 'a {
    gpu.devices.iter().filter(|d| !d.lost).flat_map(move |d| {
        let [g, u] = gpu_labels(d);
        items(d).iter().map(move |x| {
            let (value_label, v) = item(x);
            ([g, u, (label, value_label)], v)
        })
    })
}

fn bytes(v: Option<u64>) -> Option<f64> {
    v.map(|b| b as f64)
}

fn encode_gpus(e: &mut DescriptorEncoder, gpu: &GpuSample) -> fmt::Result {
    let driver = gpu.driver_version.as_deref().unwrap_or("");
    let cuda = gpu.cuda_driver_version.as_deref().unwrap_or("");
    gauge(
        e,
        "gpulse_gpus",
        "Number of GPUs NVML reports on this node.",
        [([("source", "nvml")], gpu.devices.len() as f64)],
    )?;
    gauge(
        e,
        "gpulse_gpu_info",
        "Always 1; identity labels of each GPU, joined to other series by uuid.",
        gpu.devices.iter().map(|d| {
            let id = &d.identity;
            (
                [
                    ("gpu", id.index_label.as_str()),
                    ("uuid", id.uuid.as_str()),
                    ("name", id.name.as_str()),
                    ("pci_bus_id", id.pci_bus_id.as_str()),
                    ("serial", id.serial.as_deref().unwrap_or("")),
                    ("vbios_version", id.vbios_version.as_deref().unwrap_or("")),
                    ("driver_version", driver),
                    ("cuda_driver_version", cuda),
                ],
                1.0,
            )
        }),
    )?;
    gauge(
        e,
        "gpulse_gpu_lost",
        "1 if the driver reports the GPU as lost (fallen off the bus); its other metrics are then absent.",
        gpu.devices.iter().map(|d| (gpu_labels(d), flag(d.lost))),
    )?;
    gauge(
        e,
        "gpulse_gpu_utilization_ratio",
        "Fraction of the last sample period in which a kernel ran on the GPU (0-1).",
        per_gpu(gpu, |d| d.utilization.gpu),
    )?;
    for row in GPU_SCALARS {
        let kind = if row.counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        family(e, row.prometheus, row.help, kind, per_gpu(gpu, row.value))?;
    }
    gauge(
        e,
        "gpulse_gpu_encoder_utilization_ratio",
        "Video encoder utilization (0-1).",
        per_gpu(gpu, |d| d.utilization.encoder),
    )?;
    gauge(
        e,
        "gpulse_gpu_decoder_utilization_ratio",
        "Video decoder utilization (0-1).",
        per_gpu(gpu, |d| d.utilization.decoder),
    )?;
    gauge(
        e,
        "gpulse_gpu_temperature_celsius",
        "Temperature by sensor: gpu (core) or memory (HBM).",
        gpu.devices.iter().filter(|d| !d.lost).flat_map(|d| {
            let [g, u] = gpu_labels(d);
            [
                ("gpu", d.temperature_gpu_celsius),
                ("memory", d.temperature_memory_celsius),
            ]
            .into_iter()
            .filter_map(move |(sensor, t)| t.map(|t| ([g, u, ("sensor", sensor)], t)))
        }),
    )?;
    gauge(
        e,
        "gpulse_gpu_temperature_threshold_celsius",
        "Temperature thresholds: slowdown, shutdown, memory_max, gpu_max.",
        per_gpu_item(
            gpu,
            "threshold",
            |d| &d.temperature_thresholds,
            |(n, v)| (n, *v),
        ),
    )?;
    gauge(
        e,
        "gpulse_gpu_clock_hertz",
        "Current clock frequency: graphics, sm, memory, video.",
        per_gpu_item(gpu, "clock", |d| &d.clocks_hertz, |(n, v)| (n, *v)),
    )?;
    gauge(
        e,
        "gpulse_gpu_clock_max_hertz",
        "Maximum clock frequency: graphics, sm, memory, video.",
        per_gpu_item(gpu, "clock", |d| &d.max_clocks_hertz, |(n, v)| (n, *v)),
    )?;
    gauge(
        e,
        "gpulse_gpu_fan_speed_ratio",
        "Fan speed as a fraction of its maximum, per fan.",
        gpu.devices.iter().filter(|d| !d.lost).flat_map(|d| {
            let [g, u] = gpu_labels(d);
            d.fan_speed_ratio
                .iter()
                .map(move |(fan, v)| ([g, u, ("fan", index_label(*fan))], *v))
        }),
    )?;
    gauge(
        e,
        "gpulse_gpu_throttle_active",
        "1 if this clock-event (throttle) reason is limiting clocks now; one series per reason the GPU supports.",
        gpu.devices.iter().filter(|d| !d.lost).flat_map(|d| {
            let [g, u] = gpu_labels(d);
            d.throttle
                .iter()
                .flat_map(|t| t.decoded().collect::<Vec<_>>())
                .map(move |(reason, on)| ([g, u, ("reason", reason)], flag(on)))
        }),
    )?;
    counter(
        e,
        "gpulse_gpu_throttle_seconds",
        "Cumulative time clocks were held down by each policy (power, thermal, sync_boost, board_limit, low_utilization, reliability).",
        per_gpu_item(gpu, "reason", |d| &d.throttle_seconds, |(n, v)| (n, *v)),
    )?;
    counter(
        e,
        "gpulse_gpu_ecc_errors",
        "ECC errors by kind (corrected, uncorrected) and scope (volatile: since driver load; aggregate: lifetime).",
        gpu.devices.iter().filter(|d| !d.lost).flat_map(|d| {
            let [g, u] = gpu_labels(d);
            d.ecc_errors
                .iter()
                .map(move |(kind, scope, n)| ([g, u, ("kind", kind), ("scope", scope)], *n as f64))
        }),
    )?;
    gauge(
        e,
        "gpulse_gpu_retired_pages",
        "Memory pages retired, by cause (single_bit_ecc, double_bit_ecc).",
        per_gpu_item(gpu, "cause", |d| &d.retired_pages, |(n, v)| (n, *v as f64)),
    )?;
    gauge(
        e,
        "gpulse_gpu_remapped_rows",
        "Memory rows remapped, by cause (correctable, uncorrectable).",
        gpu.devices.iter().filter(|d| !d.lost).flat_map(|d| {
            let [g, u] = gpu_labels(d);
            d.remapped_rows.iter().flat_map(move |r| {
                [
                    ([g, u, ("cause", "correctable")], r.correctable as f64),
                    ([g, u, ("cause", "uncorrectable")], r.uncorrectable as f64),
                ]
            })
        }),
    )?;
    gauge(
        e,
        "gpulse_gpu_pcie_throughput_bytes_per_second",
        "PCIe throughput by direction (tx, rx), when enabled.",
        gpu.devices.iter().filter(|d| !d.lost).flat_map(|d| {
            let [g, u] = gpu_labels(d);
            [
                ("tx", d.pcie.tx_bytes_per_second),
                ("rx", d.pcie.rx_bytes_per_second),
            ]
            .into_iter()
            .filter_map(move |(dir, v)| v.map(|v| ([g, u, ("direction", dir)], v)))
        }),
    )?;
    gauge(
        e,
        "gpulse_gpu_nvlink_active",
        "1 if the NVLink link is up.",
        per_gpu_item(
            gpu,
            "link",
            |d| &d.nvlinks,
            |l| (index_label(l.link), flag(l.active)),
        ),
    )?;
    counter(
        e,
        "gpulse_gpu_nvlink_errors",
        "NVLink data-link errors by link and counter (replay, recovery, crc_flit, crc_data).",
        gpu.devices.iter().filter(|d| !d.lost).flat_map(|d| {
            let [g, u] = gpu_labels(d);
            d.nvlinks.iter().flat_map(move |l| {
                l.errors().map(move |(counter, n)| {
                    (
                        [g, u, ("link", index_label(l.link)), ("counter", counter)],
                        n as f64,
                    )
                })
            })
        }),
    )?;
    let processes: Vec<(GpuLabels<'_>, String, &GpuProcess)> = gpu
        .devices
        .iter()
        .filter(|d| !d.lost)
        .flat_map(|d| {
            d.processes
                .iter()
                .flatten()
                .map(move |p| (gpu_labels(d), p.pid.to_string(), p))
        })
        .collect();
    let process_series = |value: fn(&GpuProcess) -> Option<f64>| {
        processes.iter().filter_map(move |(l, pid, p)| {
            value(p).map(|v| ([l[0], l[1], ("pid", pid.as_str())], v))
        })
    };
    gauge(
        e,
        "gpulse_gpu_process_memory_used_bytes",
        "GPU memory used by each compute process.",
        process_series(|p| bytes(p.used_memory_bytes)),
    )?;
    gauge(
        e,
        "gpulse_gpu_process_sm_utilization_ratio",
        "SM utilization attributed to each compute process over the last sample period (0-1).",
        process_series(|p| p.sm_utilization),
    )?;
    gauge(
        e,
        "gpulse_gpu_process_memory_utilization_ratio",
        "Memory-controller utilization attributed to each compute process (0-1).",
        process_series(|p| p.memory_utilization),
    )?;
    let mig_series = |value: fn(&crate::model::MigInstance) -> Option<u64>| {
        gpu.devices.iter().filter(|d| !d.lost).flat_map(move |d| {
            let [g, u] = gpu_labels(d);
            d.mig
                .iter()
                .flat_map(|m| m.instances.iter())
                .filter_map(move |i| {
                    value(i).map(|b| ([g, u, ("mig_uuid", i.uuid.as_str())], b as f64))
                })
        })
    };
    gauge(
        e,
        "gpulse_gpu_mig_memory_total_bytes",
        "Memory of each MIG instance.",
        mig_series(|i| i.memory_total_bytes),
    )?;
    gauge(
        e,
        "gpulse_gpu_mig_memory_used_bytes",
        "Memory used in each MIG instance.",
        mig_series(|i| i.memory_used_bytes),
    )
}

fn encode_host<'a>(e: &mut DescriptorEncoder, host: &'a HostSample) -> fmt::Result {
    const NONE: [(&str, &str); 0] = [];
    let one = |v: Option<f64>| v.map(|v| (NONE, v));
    gauge(
        e,
        "gpulse_host_cpu_utilization_ratio",
        "Fraction of CPU time busy across all cores since the previous host cycle (0-1).",
        one(host.cpu_utilization),
    )?;
    gauge(
        e,
        "gpulse_host_cpu_core_utilization_ratio",
        "Fraction of CPU time busy per core since the previous host cycle (0-1).",
        host.per_cpu_utilization
            .iter()
            .map(|(cpu, v)| ([("cpu", cpu.as_str())], *v)),
    )?;
    gauge(
        e,
        "gpulse_host_cpus",
        "Logical CPUs.",
        one(Some(host.cpu_count as f64)),
    )?;
    gauge(
        e,
        "gpulse_host_load_average",
        "System load average over 1, 5 and 15 minutes.",
        host.load_average.iter().flat_map(|l| {
            [
                ([("window", "1m")], l[0]),
                ([("window", "5m")], l[1]),
                ([("window", "15m")], l[2]),
            ]
        }),
    )?;
    gauge(
        e,
        "gpulse_host_memory_total_bytes",
        "Physical memory.",
        one(Some(host.memory_total_bytes as f64)),
    )?;
    gauge(
        e,
        "gpulse_host_memory_available_bytes",
        "Memory available to new processes without swapping.",
        one(Some(host.memory_available_bytes as f64)),
    )?;
    gauge(
        e,
        "gpulse_host_memory_used_bytes",
        "Memory in use.",
        one(Some(host.memory_used_bytes as f64)),
    )?;
    gauge(
        e,
        "gpulse_host_swap_total_bytes",
        "Swap space.",
        one(Some(host.swap_total_bytes as f64)),
    )?;
    gauge(
        e,
        "gpulse_host_swap_used_bytes",
        "Swap space in use.",
        one(Some(host.swap_used_bytes as f64)),
    )?;
    let disk_labels = |d: &'a crate::model::DiskReadings| {
        [
            ("mountpoint", d.mount_point.as_str()),
            ("device", d.device.as_str()),
            ("fstype", d.filesystem.as_str()),
        ]
    };
    gauge(
        e,
        "gpulse_host_filesystem_size_bytes",
        "Size of each mounted filesystem.",
        host.disks
            .iter()
            .map(|d| (disk_labels(d), d.total_bytes as f64)),
    )?;
    gauge(
        e,
        "gpulse_host_filesystem_available_bytes",
        "Space available to unprivileged users on each mounted filesystem.",
        host.disks
            .iter()
            .map(|d| (disk_labels(d), d.available_bytes as f64)),
    )?;
    let net = |value: fn(&crate::model::NetworkReadings) -> u64| {
        host.networks
            .iter()
            .map(move |n| ([("interface", n.interface.as_str())], value(n) as f64))
    };
    counter(
        e,
        "gpulse_host_network_received_bytes",
        "Bytes received per interface.",
        net(|n| n.received_bytes),
    )?;
    counter(
        e,
        "gpulse_host_network_transmitted_bytes",
        "Bytes sent per interface.",
        net(|n| n.transmitted_bytes),
    )?;
    counter(
        e,
        "gpulse_host_network_received_packets",
        "Packets received per interface.",
        net(|n| n.received_packets),
    )?;
    counter(
        e,
        "gpulse_host_network_transmitted_packets",
        "Packets sent per interface.",
        net(|n| n.transmitted_packets),
    )?;
    counter(
        e,
        "gpulse_host_network_receive_errors",
        "Receive errors per interface.",
        net(|n| n.receive_errors),
    )?;
    counter(
        e,
        "gpulse_host_network_transmit_errors",
        "Transmit errors per interface.",
        net(|n| n.transmit_errors),
    )?;
    gauge(
        e,
        "gpulse_host_uptime_seconds",
        "Time since the host booted.",
        one(host.uptime.map(|u| u.as_secs_f64())),
    )?;
    gauge(
        e,
        "gpulse_host_boot_time_seconds",
        "Unix time the host booted.",
        one(host.boot_time_seconds.map(|b| b as f64)),
    )
}

// ------------------------------------------------------------------ the wrapped job

/// A histogram from per-bucket counts (not cumulative; the last bucket is `+Inf`).
#[derive(Debug)]
struct ConstHistogram<'a> {
    sum: f64,
    count: u64,
    buckets: &'a [(f64, u64)],
}

impl EncodeMetric for ConstHistogram<'_> {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `gpulse wrap`'s child: runs per outcome, restarts, exit code, duration histogram,
/// readiness and recovery (totals restored from the state file across restarts).
fn encode_job(e: &mut DescriptorEncoder, job: &JobLog) -> fmt::Result {
    const NONE: [(&str, &str); 0] = [];
    let t = &job.totals;
    counter(
        e,
        "gpulse_job_runs",
        "Runs of the wrapped command that ended, by outcome (success, failure, signal, oom, stopped, unknown); across restarts when agent.state_dir is set.",
        JobOutcome::ALL
            .iter()
            .map(|o| ([("outcome", o.as_str())], t.outcome(*o) as f64)),
    )?;
    counter(
        e,
        "gpulse_job_restarts",
        "Runs of the wrapped command started after an earlier one (container restarts), from agent.state_dir.",
        [(NONE, t.restarts() as f64)],
    )?;
    let program = job
        .running
        .as_ref()
        .map(|r| r.program.as_str())
        .or(job.last_end.as_ref().map(|e| e.program.as_str()))
        .unwrap_or("");
    gauge(
        e,
        "gpulse_job_running",
        "1 while the wrapped command runs.",
        [([("program", program)], flag(job.running.is_some()))],
    )?;
    gauge(
        e,
        "gpulse_job_last_exit_code",
        "Exit code of the last run that ended (128 + the signal number when killed by one).",
        job.last_exit_code().map(|c| (NONE, f64::from(c))),
    )?;
    gauge(
        e,
        "gpulse_job_start_time_seconds",
        "Unix time the current run of the wrapped command started.",
        job.running.as_ref().map(|r| (NONE, unix_seconds(r.at))),
    )?;
    let ready = job.ready.as_ref().filter(|_| job.running.is_some());
    gauge(
        e,
        "gpulse_job_ready_seconds",
        "Time from the current run's start until its readiness probe was first up.",
        ready.map(|r| (NONE, r.after_start.as_secs_f64())),
    )?;
    gauge(
        e,
        "gpulse_job_recovery_seconds",
        "Time from the previous run's end until the current run was ready (recovery after a restart).",
        ready
            .and_then(|r| r.recovery)
            .map(|d| (NONE, d.as_secs_f64())),
    )?;
    let buckets: Vec<(f64, u64)> = JOB_DURATION_BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(t.duration_buckets.iter().copied())
        .collect();
    let mut metric = e.encode_descriptor(
        "gpulse_job_duration_seconds",
        "Duration of the wrapped command's runs whose end was recorded.",
        None,
        MetricType::Histogram,
    )?;
    ConstHistogram {
        sum: t.duration_sum_seconds,
        count: t.duration_count(),
        buckets: &buckets,
    }
    .encode(metric.encode_family(&NONE)?)
}
