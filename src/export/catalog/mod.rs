//! The metric catalog: every family gpulse exports is named here once, with both spellings.
//!
//! A [`Family`] holds the Prometheus name, the OpenTelemetry name (plus the constant
//! attributes that tell families sharing one OTel instrument apart), the unit, help text, kind,
//! the [`Scope`] that decides the identity labels each exporter adds, the label [`Dim`]s in both
//! spellings, and ONE function that emits its series from a snapshot. `export::prometheus`
//! walks [`families`] in order (that order is `/metrics`' order); `export::otlp` groups them by
//! OTel name and registers one observable instrument per name. Neither exporter names a metric.
//!
//! "Absent, never 0" and "lost GPUs are skipped" live in [`Series::gpu`]: a reading that is
//! `None`, or belongs to a lost GPU, produces no row.
//!
//! The explicit OTLP exceptions are [`OtlpHistogram`] variants on the histogram families:
//! OpenTelemetry has no observable histogram, so each histogram says how it travels over OTLP.

/// Declares `const fn $name(prom, otel, unit, help, kind, series) -> Family`: a family of
/// `$scope` without labels of its own or constant OTel attributes. Each domain file names its
/// own (`gpu::scalar`, `host::host`, …) and adds `dims` or `otel_const` with struct update.
macro_rules! plain_family {
    ($name:ident, $scope:expr) => {
        const fn $name(
            prom: &'static str,
            otel: &'static str,
            unit: &'static str,
            help: &'static str,
            kind: $crate::export::catalog::Kind,
            series: $crate::export::catalog::SeriesFn,
        ) -> $crate::export::catalog::Family {
            $crate::export::catalog::Family {
                prom,
                otel,
                otel_const: &[],
                unit,
                help,
                kind,
                scope: $scope,
                dims: &[],
                series,
            }
        }
    };
}

pub mod agent;
pub mod doc;
pub mod events;
pub mod gpu;
pub mod health;
pub mod host;
pub mod job;
pub mod k8s;
pub mod probe;
pub mod score;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::{
    GpuDevice, JobTotals, LatencyHistogram, ProbeStatus, ServerHistogram, XidCount,
};
use crate::store::Snapshot;

pub use doc::markdown;

/// Static facts about this agent, rendered as `gpulse_build_info` / `gpulse.build.info`.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: &'static str,
    /// `demo` when GPUs are simulated, otherwise `nvml`.
    pub gpu_source: &'static str,
}

/// One metric family, named once for both exporters.
#[derive(Debug)]
pub struct Family {
    /// Prometheus family name; for counters without `_total`, which the encoder appends.
    pub prom: &'static str,
    /// OpenTelemetry instrument name (several families may share one, told apart by
    /// `otel_const`; a [`OtlpHistogram::SumCount`] appends `.sum` and `.count`).
    pub otel: &'static str,
    /// Attributes every OTLP point of this family carries, e.g. `("hw.gpu.task", "encoder")`.
    pub otel_const: &'static [(&'static str, &'static str)],
    /// UCUM unit for OTLP (the Prometheus name carries its base unit as a suffix).
    pub unit: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub scope: Scope,
    /// Labels after the scope's identity labels, in order.
    pub dims: &'static [Dim],
    /// Emits the family's rows; none means the family is left out.
    pub series: SeriesFn,
}

/// How a family emits its rows from a snapshot.
pub type SeriesFn = for<'a> fn(&Ctx<'a>, &mut Series<'a>);

/// What a family is on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Gauge,
    /// Monotonic; Prometheus appends `_total`.
    Counter,
    /// A gauge on /metrics, a non-monotonic sum on OTLP.
    UpDownCounter,
    /// A histogram on /metrics; how it travels over OTLP is explicit.
    Histogram(OtlpHistogram),
}

/// How a /metrics histogram travels over OTLP, which has no observable histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OtlpHistogram {
    /// A gauge of the last observation (the agent's own synthetic requests: the counters carry
    /// the rates, the last value the current latency).
    LastValue,
    /// Two cumulative counters, `<otel>.sum` (in `unit`) and `<otel>.count` (in `count_unit`),
    /// from which a backend takes a windowed mean; the buckets stay on /metrics.
    SumCount { count_unit: &'static str },
    /// A real, recorded OTLP histogram on `bounds`: the callback of the observable `with`
    /// records the observations that arrived since the last push (the wrapped job's run
    /// durations, which only the job log knows).
    Recorded {
        with: &'static str,
        bounds: &'static [f64],
    },
}

/// Whose series a family holds: decides the identity labels each exporter adds first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The node or agent: no identity labels.
    Node,
    /// One GPU: `gpu`, `uuid` on /metrics; `hw.id`, `hw.name`, `hw.type`, `hw.model`,
    /// `gpulse.gpu.index` on OTLP.
    Gpu,
    /// The host: no identity labels (the OTLP resource names the host).
    Host,
    /// One probe: `probe`, `kind` / `gpulse.probe.name`, `gpulse.probe.kind`.
    Probe,
    /// One collector: `collector` / `gpulse.collector`.
    Collector,
    /// One exporter: `exporter` / `gpulse.exporter`.
    Exporter,
    /// One Xid on one GPU: `gpu`, `uuid`, `xid` / `hw.id`, `hw.type`, `gpulse.gpu.index`
    /// (when known), `gpulse.gpu.xid`.
    Xid,
    /// The wrapped job: no identity labels.
    Job,
}

impl Scope {
    /// The identity labels, Prometheus spelling.
    pub fn prom_labels(self) -> &'static [&'static str] {
        match self {
            Self::Node | Self::Host | Self::Job => &[],
            Self::Gpu => &["gpu", "uuid"],
            Self::Probe => &["probe", "kind"],
            Self::Collector => &["collector"],
            Self::Exporter => &["exporter"],
            Self::Xid => &["gpu", "uuid", "xid"],
        }
    }

    /// The identity attributes, OpenTelemetry spelling.
    pub fn otel_attributes(self) -> &'static [&'static str] {
        match self {
            Self::Node | Self::Host | Self::Job => &[],
            Self::Gpu => &[
                "hw.id",
                "hw.name",
                "hw.type",
                "hw.model",
                "gpulse.gpu.index",
            ],
            Self::Probe => &["gpulse.probe.name", "gpulse.probe.kind"],
            Self::Collector => &["gpulse.collector"],
            Self::Exporter => &["gpulse.exporter"],
            Self::Xid => &["hw.id", "hw.type", "gpulse.gpu.index", "gpulse.gpu.xid"],
        }
    }
}

/// One label, in both spellings. An empty spelling leaves the label out of that exporter
/// (e.g. `os` and `arch` on `gpulse_build_info`: the OTLP resource has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dim {
    pub prom: &'static str,
    pub otel: &'static str,
    /// Rows whose value of this label (Prometheus spelling) is listed here travel over OTLP
    /// under the instrument named beside it instead of the family's, or not at all (`None`):
    /// one /metrics family, two OTel meanings kept apart (see [`otel_instrument`]).
    pub otel_split: &'static [OtelSplit],
}

/// A label value whose rows travel over OTLP under another instrument (same kind and unit),
/// or not at all (`otel: None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtelSplit {
    /// The label's value, Prometheus spelling.
    pub value: &'static str,
    pub otel: Option<&'static str>,
}

/// Shorthand for the tables.
pub const fn dim(prom: &'static str, otel: &'static str) -> Dim {
    Dim {
        prom,
        otel,
        otel_split: &[],
    }
}

/// A label whose values listed in `otel_split` move their rows to another OTel instrument.
pub const fn dim_split(
    prom: &'static str,
    otel: &'static str,
    otel_split: &'static [OtelSplit],
) -> Dim {
    Dim {
        prom,
        otel,
        otel_split,
    }
}

/// The OTel instrument a row of `family` travels under: the family's name, a [`Dim`]'s
/// [`OtelSplit`] target, or `None` when the row is not sent over OTLP.
pub fn otel_instrument(family: &Family, row: &Row<'_>) -> Option<&'static str> {
    for (dim, value) in family.dims.iter().zip(row.labels.iter()) {
        let prom = match *value {
            Val::Str(s) | Val::Pair(s, _) => s,
            _ => continue,
        };
        if let Some(split) = dim.otel_split.iter().find(|s| s.value == prom) {
            return split.otel;
        }
    }
    Some(family.otel)
}

impl Family {
    /// Every OTel instrument the family's rows may travel under: its own name first, then
    /// its [`OtelSplit`] targets.
    pub fn otel_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.otel).chain(
            self.dims
                .iter()
                .flat_map(|d| d.otel_split.iter().filter_map(|s| s.otel)),
        )
    }
}

/// What a family's series function reads.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub build: &'a BuildInfo,
    /// Every exporter's pushes and failures per reason; empty where nothing pushes.
    pub exports: &'a [crate::export::ExporterTotals],
}

/// A label value. Typed model values carry both spellings ([`LabelValue`]).
#[derive(Clone, Copy, Default)]
pub enum Val<'a> {
    #[default]
    Empty,
    /// The same text in both exporters.
    Str(&'a str),
    /// A typed value: Prometheus spelling, OTel spelling.
    Pair(&'static str, &'static str),
    /// A number: decimal on /metrics, an integer attribute on OTLP.
    Int(i64),
    /// A small index: decimal on /metrics without formatting, an integer attribute on OTLP.
    Index(u32),
    /// A decimal held as text (e.g. a CPU number): as is on /metrics, parsed on OTLP
    /// (`-1` when it is not a number).
    IntText(&'a str),
    /// Optional text: empty on /metrics, left out on OTLP when absent.
    Opt(Option<&'a str>),
    /// Text formatted when rendered (e.g. a health reason code, `xid_79`).
    Display(&'a (dyn std::fmt::Display + Sync)),
}

impl std::fmt::Debug for Val<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("Empty"),
            Self::Str(s) | Self::IntText(s) => write!(f, "{s:?}"),
            Self::Pair(p, o) => write!(f, "{p:?}/{o:?}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Index(i) => write!(f, "{i}"),
            Self::Opt(s) => write!(f, "{s:?}"),
            Self::Display(d) => write!(f, "{:?}", d.to_string()),
        }
    }
}

pub use crate::model::LabelValue;

/// A typed model value as a row's label value.
pub trait AsVal {
    fn val(self) -> Val<'static>;
}

impl<T: LabelValue> AsVal for T {
    fn val(self) -> Val<'static> {
        Val::Pair(self.prom(), self.otel())
    }
}

/// Who a row belongs to (see [`Scope`]).
#[derive(Debug, Clone, Copy)]
pub enum Id<'a> {
    None,
    Gpu {
        index: u32,
        uuid: &'a str,
        model: &'a str,
    },
    Probe(&'a ProbeStatus),
    Name(&'static str),
    Xid(&'a XidCount),
}

/// A row's value.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Number(f64),
    Histogram(Hist<'a>),
}

/// The histograms gpulse renders, as stored.
#[derive(Debug, Clone, Copy)]
pub enum Hist<'a> {
    /// A server's own histogram (cumulative `f64` counts).
    Server(&'a ServerHistogram),
    /// The agent's fixed-bucket histogram, and the last observation for OTLP.
    Latency(&'a LatencyHistogram, Option<f64>),
    /// The wrapped job's run durations.
    Job(&'a JobTotals),
}

/// Most labels a family has after its scope's (`gpulse_gpu_info` has 7).
pub const MAX_DIMS: usize = 8;

/// One series.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub id: Id<'a>,
    pub labels: [Val<'a>; MAX_DIMS],
    pub value: Value<'a>,
}

/// Where a family's series function writes its rows; reused across families.
#[derive(Debug, Default)]
pub struct Series<'a> {
    rows: Vec<Row<'a>>,
}

fn labels<'a, const N: usize>(values: [Val<'a>; N]) -> [Val<'a>; MAX_DIMS] {
    let mut out = [Val::Empty; MAX_DIMS];
    for (slot, v) in out.iter_mut().zip(values) {
        *slot = v;
    }
    out
}

impl<'a> Series<'a> {
    pub fn new() -> Self {
        Self { rows: Vec::new() }
    }

    pub fn clear(&mut self) {
        self.rows.clear();
    }

    pub fn rows(&self) -> &[Row<'a>] {
        &self.rows
    }

    fn push<const N: usize>(&mut self, id: Id<'a>, values: [Val<'a>; N], value: Option<f64>) {
        if let Some(v) = value {
            self.rows.push(Row {
                id,
                labels: labels(values),
                value: Value::Number(v),
            });
        }
    }

    /// A node, host or job series; `None` emits nothing.
    pub fn node<const N: usize>(&mut self, values: [Val<'a>; N], value: Option<f64>) {
        self.push(Id::None, values, value);
    }

    /// A GPU series; nothing for a lost GPU or a `None` reading ("absent, never 0").
    pub fn gpu<const N: usize>(
        &mut self,
        d: &'a GpuDevice,
        values: [Val<'a>; N],
        value: Option<f64>,
    ) {
        if !d.lost {
            self.gpu_even_lost(d, values, value);
        }
    }

    /// A GPU series that exists for lost GPUs too (`gpulse_gpu_lost`, `gpulse_gpu_info`).
    pub fn gpu_even_lost<const N: usize>(
        &mut self,
        d: &'a GpuDevice,
        values: [Val<'a>; N],
        value: Option<f64>,
    ) {
        let id = &d.identity;
        self.push(
            Id::Gpu {
                index: id.index,
                uuid: &id.uuid,
                model: &id.name,
            },
            values,
            value,
        );
    }

    /// A GPU series from the health evaluation (which keeps its own GPU identity).
    pub fn gpu_health<const N: usize>(
        &mut self,
        g: &'a crate::health::GpuHealth,
        values: [Val<'a>; N],
        value: f64,
    ) {
        self.push(
            Id::Gpu {
                index: g.index,
                uuid: &g.uuid,
                model: &g.name,
            },
            values,
            Some(value),
        );
    }

    pub fn probe<const N: usize>(
        &mut self,
        p: &'a ProbeStatus,
        values: [Val<'a>; N],
        value: Option<f64>,
    ) {
        self.push(Id::Probe(p), values, value);
    }

    /// A collector or exporter series, by name.
    pub fn named(&mut self, name: &'static str, value: Option<f64>) {
        self.push(Id::Name(name), [], value);
    }

    /// A named series with labels of its own (an exporter's failures per reason).
    pub fn named_with<const N: usize>(
        &mut self,
        name: &'static str,
        values: [Val<'a>; N],
        value: Option<f64>,
    ) {
        self.push(Id::Name(name), values, value);
    }

    pub fn xid(&mut self, c: &'a XidCount, value: f64) {
        self.push(Id::Xid(c), [], Some(value));
    }

    /// A histogram series of a probe (`Id::Probe`) or of the node (`Id::None`).
    pub fn histogram(&mut self, id: Id<'a>, h: Hist<'a>) {
        self.rows.push(Row {
            id,
            labels: [Val::Empty; MAX_DIMS],
            value: Value::Histogram(h),
        });
    }
}

/// The domains in `/metrics` order, each with its families in order.
pub const DOMAINS: &[(&str, &[Family])] = &[
    ("Agent", agent::FAMILIES),
    ("GPU", gpu::FAMILIES),
    ("Xid", gpu::XID),
    ("Host", host::FAMILIES),
    ("Health", health::FAMILIES),
    ("Probes", probe::FAMILIES),
    ("Wrapped job", job::FAMILIES),
    ("Score", score::FAMILIES),
    ("Events", events::FAMILIES),
    ("Kubernetes", k8s::FAMILIES),
];

/// Every family, in `/metrics` order.
pub fn families() -> impl Iterator<Item = &'static Family> {
    DOMAINS.iter().flat_map(|(_, f)| f.iter())
}

/// 1 or 0.
pub fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A byte count as a reading.
pub fn bytes(b: Option<u64>) -> Option<f64> {
    b.map(|b| b as f64)
}

#[cfg(test)]
mod tests;
