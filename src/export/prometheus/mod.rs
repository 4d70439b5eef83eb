//! Renders the latest snapshot as Prometheus text (or OpenMetrics) for `/metrics`.
//!
//! Rendering goes through prometheus-client's [`Collector`] hook: the snapshot is read (never
//! re-sampled) and the metric catalog ([`crate::export::catalog`]) is walked in order, each
//! family's rows becoming const metrics. A body is rendered once per snapshot and format and
//! served from [`cache`] (with its gzip) until the store publishes a new snapshot. Values are those of the last completed
//! collector cycle, so no timestamps are attached; HELP texts say so. A family with no series
//! (e.g. GPU metrics with no NVML) is left out entirely. With [`RenderOptions::dcgm_compat`],
//! the dcgm-exporter families of [`dcgm`] follow the native `gpulse_*` ones.

pub mod cache;
pub mod dcgm;
pub mod encode;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use super::catalog::BuildInfo;
use super::catalog::{self, Ctx, Family, Hist, Id, Kind, Row, Series, Val, Value};
use super::{ExportStats, ExporterTotals};
use crate::config::DcgmHostnameLabel;
use crate::model::index_label;
use crate::store::{Snapshot, Store};
use cache::{RenderCache, Served};
use encode::HistogramSeries;

/// Content type of the classic Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics text, served when the scraper asks for it.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/metrics` renders besides the native families.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Also render dcgm-exporter's default names, units and labels (`[prometheus] dcgm_compat`).
    pub dcgm_compat: bool,
    /// Value of the dcgm host label: `agent.node_name` or the OS hostname.
    pub hostname: String,
    /// Name of the dcgm host label (`[prometheus] dcgm_hostname_label`).
    pub dcgm_hostname_label: DcgmHostnameLabel,
}

/// The `/metrics` renderer. Cheap to clone; holds the store, build info, options and the
/// body cache ([`cache`]).
#[derive(Debug, Clone)]
pub struct MetricsRenderer {
    store: Arc<Store>,
    build: BuildInfo,
    options: RenderOptions,
    exports: Arc<ExportStats>,
    cache: Arc<RenderCache>,
    /// The last body's length: the next one starts at about that size instead of doubling up
    /// from 64 KiB (a 64-GPU body took five reallocations and kept 2 MiB for 1.2).
    last_len: Arc<AtomicUsize>,
}

impl MetricsRenderer {
    pub fn new(
        store: Arc<Store>,
        build: BuildInfo,
        options: RenderOptions,
        exports: Arc<ExportStats>,
    ) -> Self {
        Self {
            store,
            build,
            options,
            exports,
            cache: Arc::default(),
            last_len: Arc::default(),
        }
    }

    /// Renders the exposition afresh (no cache); `openmetrics` picks the format.
    pub fn render(&self, openmetrics: bool) -> Result<String, fmt::Error> {
        self.render_from(self.store.snapshot(), openmetrics)
    }

    /// The exposition as `/metrics` serves it: from the cache while neither the snapshot nor
    /// the export counters changed, gzip-compressed when `gzip` (see [`cache`]).
    pub fn serve(&self, openmetrics: bool, gzip: bool) -> Result<Served, fmt::Error> {
        // The generation is read before the snapshot and the counters, so a body is never
        // keyed newer than what it shows (at worst it is rendered once more).
        let generation = self.exports.generation();
        let snapshot = self.store.snapshot();
        self.cache
            .get_or_render(openmetrics, &snapshot, generation, gzip, || {
                self.render_from(Arc::clone(&snapshot), openmetrics)
            })
    }

    /// Bodies rendered by [`MetricsRenderer::serve`] so far (cache misses), for tests.
    pub fn renders(&self) -> u64 {
        self.cache.renders()
    }

    fn render_from(
        &self,
        snapshot: Arc<Snapshot>,
        openmetrics: bool,
    ) -> Result<String, fmt::Error> {
        let frozen = Frozen {
            snapshot,
            build: self.build.clone(),
            options: self.options.clone(),
            exports: self.exports.totals(),
        };
        let hint = self.last_len.load(Ordering::Relaxed);
        let body = encode(frozen, openmetrics, hint + hint / 16)?;
        self.last_len.store(body.len(), Ordering::Relaxed);
        Ok(body)
    }
}

/// Renders one snapshot (no export counters), for tests and benches.
pub fn render_snapshot(
    snapshot: &Snapshot,
    build: &BuildInfo,
    options: &RenderOptions,
) -> Result<String, fmt::Error> {
    let frozen = Frozen {
        snapshot: Arc::new(snapshot.clone()),
        build: build.clone(),
        options: options.clone(),
        exports: Vec::new(),
    };
    encode(frozen, false, 0)
}

/// Everything one body shows, read once before rendering (so the cache key names it exactly).
#[derive(Debug)]
struct Frozen {
    snapshot: Arc<Snapshot>,
    build: BuildInfo,
    options: RenderOptions,
    exports: Vec<ExporterTotals>,
}

impl Collector for Frozen {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        encode_snapshot(
            &self.snapshot,
            &self.build,
            &self.options,
            &self.exports,
            encoder,
        )
    }
}

/// Renders `frozen` through a registry of its own, in the chosen format, into a body of at
/// least `capacity` bytes.
fn encode(frozen: Frozen, openmetrics: bool, capacity: usize) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(frozen));
    let mut out = String::with_capacity(capacity.max(64 * 1024));
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    }
    Ok(out)
}

fn encode_snapshot(
    snap: &Snapshot,
    build: &BuildInfo,
    options: &RenderOptions,
    exports: &[ExporterTotals],
    mut enc: DescriptorEncoder,
) -> fmt::Result {
    let ctx = Ctx {
        snap,
        build,
        exports,
    };
    // One row buffer for the whole scrape.
    let mut series = Series::new();
    for family in catalog::families() {
        series.clear();
        (family.series)(&ctx, &mut series);
        encode_family(&mut enc, family, series.rows())?;
    }
    if options.dcgm_compat {
        dcgm::encode_dcgm(
            &mut enc,
            snap,
            &options.hostname,
            options.dcgm_hostname_label,
        )?;
    }
    Ok(())
}

fn encode_family(enc: &mut DescriptorEncoder, family: &Family, rows: &[Row<'_>]) -> fmt::Result {
    let labels = |row| PromLabels { family, row };
    match family.kind {
        Kind::Histogram(_) => encode::histogram(
            enc,
            family.prom,
            family.help,
            rows.iter().filter_map(|row| match row.value {
                Value::Histogram(h) => Some((labels(row), histogram(h))),
                Value::Number(_) => None,
            }),
        ),
        kind => encode::family(
            enc,
            family.prom,
            family.help,
            if kind == Kind::Counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            },
            rows.iter().filter_map(|row| match row.value {
                Value::Number(v) => Some((labels(row), v)),
                Value::Histogram(_) => None,
            }),
        ),
    }
}

fn histogram(h: Hist<'_>) -> HistogramSeries {
    match h {
        Hist::Server(h) => HistogramSeries::from_server(h),
        Hist::Latency(h, _) => HistogramSeries::from_latency(h),
        Hist::Job(t) => HistogramSeries::from_job(t),
    }
}

/// A row's labels in Prometheus spelling: the scope's identity labels, then the family's.
struct PromLabels<'r, 'a> {
    family: &'r Family,
    row: &'r Row<'a>,
}

fn label(
    enc: &mut LabelSetEncoder,
    key: &str,
    value: impl prometheus_client::encoding::EncodeLabelValue,
) -> fmt::Result {
    (key, value).encode(enc.encode_label())
}

impl EncodeLabelSet for PromLabels<'_, '_> {
    fn encode(&self, enc: &mut LabelSetEncoder) -> fmt::Result {
        match self.row.id {
            Id::None => {}
            Id::Gpu { index, uuid, .. } => {
                label(enc, "gpu", index)?;
                label(enc, "uuid", uuid)?;
            }
            Id::Probe(p) => {
                label(enc, "probe", p.name.as_str())?;
                label(enc, "kind", p.kind)?;
            }
            Id::Name(name) => {
                if let Some(key) = self.family.scope.prom_labels().first() {
                    label(enc, key, name)?;
                }
            }
            Id::Xid(c) => {
                match c.gpu_index {
                    Some(i) => label(enc, "gpu", i)?,
                    None => label(enc, "gpu", "")?,
                }
                label(enc, "uuid", c.uuid.as_str())?;
                label(enc, "xid", c.xid)?;
            }
        }
        for (dim, value) in self.family.dims.iter().zip(self.row.labels.iter()) {
            if dim.prom.is_empty() {
                continue;
            }
            match *value {
                Val::Empty => label(enc, dim.prom, "")?,
                Val::Str(s) | Val::IntText(s) | Val::Pair(s, _) => label(enc, dim.prom, s)?,
                Val::Int(i) => label(enc, dim.prom, i)?,
                Val::Index(i) => label(enc, dim.prom, index_label(i))?,
                Val::Opt(s) => label(enc, dim.prom, s.unwrap_or(""))?,
                Val::Display(d) => label(enc, dim.prom, d.to_string())?,
            }
        }
        Ok(())
    }
}
