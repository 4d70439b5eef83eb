//! Writing families through prometheus-client's `DescriptorEncoder`: shared by the catalog
//! walk (`mod.rs`) and the dcgm table (`dcgm.rs`), so neither imports the other.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::model::{
    JOB_DURATION_BUCKETS, JobTotals, LATENCY_BUCKETS, LatencyHistogram, ServerHistogram,
};

/// Writes one metric family; skipped entirely when `series` is empty.
pub fn family<L, I>(
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

/// A gauge family; `dcgm` renders every DCGM family through it (the encoder appends `_total`
/// to counters, and dcgm's names must stay exact).
pub fn gauge<L: EncodeLabelSet, I: IntoIterator<Item = (L, f64)>>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: I,
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, series)
}

/// One histogram series: sum, count, and per-bucket (not cumulative) counts ending in `+Inf`.
#[derive(Debug)]
pub struct HistogramSeries {
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
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
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

    /// The wrapped job's run durations, from the stored per-bucket counts.
    pub fn from_job(t: &JobTotals) -> Self {
        Self {
            sum: t.duration_sum_seconds,
            count: t.duration_count(),
            buckets: JOB_DURATION_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(t.duration_buckets.iter().copied())
                .collect(),
        }
    }
}

/// A histogram family; skipped entirely when `series` is empty.
pub fn histogram<L, I>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: I,
) -> fmt::Result
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
