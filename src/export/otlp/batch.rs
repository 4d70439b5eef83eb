//! The OTLP metrics batch, built straight from the metric catalog: one
//! `ExportMetricsServiceRequest` (opentelemetry-proto's types) per push, from the latest
//! snapshot, with no SDK instruments, aggregation or per-series state in between.
//!
//! Why not the SDK's observable instruments: each push ran every callback, hashed every
//! attribute set into the SDK's aggregation maps, copied the result into the SDK's data model
//! and then again into the protocol's: one push cost ~26× a /metrics render of the same
//! snapshot, and the maps held memory of their own (issue 19). The catalog already says every
//! name, unit, kind and attribute, so the batch is written from it in one walk, each family's
//! rows computed once and sent to the metric their OTel name (or [`catalog::OtelSplit`]) picks.
//!
//! Temporality: gauges carry the value; sums are cumulative from the push's start, or with
//! `delta` the difference from the previous push of the same series (the first push sends the
//! whole value, a monotonic sum that went down — a reset — sends its new value). The only
//! state is that previous value per sum series, dropped as soon as a series is gone, and the
//! recorded histogram's counts ([`OtlpHistogram::Recorded`]: the wrapped job's run durations,
//! which only the job log knows).

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_sdk::metrics::Temporality;
use prost::Message as _;

use crate::export::catalog::{
    self, BuildInfo, Ctx, Family, Hist, Id, Kind, OtlpHistogram, Row, Series, Val, Value,
};
use crate::export::{ExportStats, ExporterTotals};
use crate::model::JobEvent;
use crate::store::Snapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricKind {
    Gauge,
    Counter,
    UpDownCounter,
}

/// Which number of a row a metric takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Number,
    /// A histogram's sum / count ([`OtlpHistogram::SumCount`]).
    Sum,
    Count,
    /// The last observation ([`OtlpHistogram::LastValue`]).
    Last,
}

/// One OTLP metric of the batch and the points it collects during one push.
struct Slot {
    name: Cow<'static, str>,
    unit: &'static str,
    description: &'static str,
    kind: MetricKind,
    points: Vec<NumberDataPoint>,
}

/// Where a family's rows go: `(OTel name, part, slot)`; a number row goes to the entry its
/// [`catalog::otel_instrument`] names.
struct Route {
    family: &'static Family,
    targets: Vec<(Cow<'static, str>, Part, usize)>,
}

/// The wrapped job's run durations as a recorded histogram.
struct JobHistogram {
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    bounds: &'static [f64],
    /// Runs up to this number are recorded (or were restored before the push, and are not).
    recorded_through: Option<u64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
}

impl JobHistogram {
    fn new(family: &'static Family, bounds: &'static [f64]) -> Self {
        Self {
            name: family.otel,
            unit: family.unit,
            description: family.help,
            bounds,
            recorded_through: None,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Records the runs that ended since the last look. Runs before the push started
    /// (restored from the state file) are in `gpulse.job.runs`, not here.
    fn record(&mut self, snap: &Snapshot) {
        let Some(job) = &snap.job else { return };
        let last = self.recorded_through.get_or_insert(job.restored_through);
        for event in &job.recent {
            if let JobEvent::Finished(end) = event
                && end.run > *last
            {
                *last = end.run;
                if let Some(d) = end.duration {
                    let v = d.as_secs_f64();
                    let bucket = self
                        .bounds
                        .iter()
                        .position(|b| v <= *b)
                        .unwrap_or(self.bounds.len());
                    self.counts[bucket] += 1;
                    self.sum += v;
                    self.count += 1;
                    self.min = self.min.min(v);
                    self.max = self.max.max(v);
                }
            }
        }
    }

    fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        (self.sum, self.count) = (0.0, 0);
        (self.min, self.max) = (f64::INFINITY, f64::NEG_INFINITY);
    }
}

/// Builds one push's request from a snapshot; holds what delta temporality needs. Public for
/// the benchmark only.
#[doc(hidden)]
pub struct Batcher {
    slots: Vec<Slot>,
    routes: Vec<Route>,
    job: Option<JobHistogram>,
    resource: Resource,
    build: BuildInfo,
    temporality: Temporality,
    /// Unix nanoseconds: when the push started (cumulative start), and the previous push.
    start: u64,
    previous_at: u64,
    /// Delta only: each sum series' last value, by (slot, encoded attributes), with the push
    /// that last saw it; a series not seen in a push is forgotten.
    previous: HashMap<(usize, Vec<u8>), (f64, u64)>,
    pushes: u64,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

/// The SDK resource (its detectors read `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`)
/// in the protocol's terms.
pub(super) fn proto_resource(resource: &opentelemetry_sdk::Resource) -> Resource {
    use opentelemetry::Value as V;
    let attributes = resource
        .iter()
        .map(|(k, v)| {
            let value = match v {
                V::Bool(b) => any_value::Value::BoolValue(*b),
                V::I64(i) => any_value::Value::IntValue(*i),
                V::F64(f) => any_value::Value::DoubleValue(*f),
                other => any_value::Value::StringValue(other.as_str().into_owned()),
            };
            attribute(k.as_str(), value)
        })
        .collect();
    Resource {
        attributes,
        ..Resource::default()
    }
}

impl Batcher {
    /// A batcher for the whole catalog, starting at `now`.
    pub fn new(
        resource: Resource,
        build: BuildInfo,
        temporality: Temporality,
        now: SystemTime,
    ) -> Self {
        let mut slots: Vec<Slot> = Vec::new();
        let mut slot = |name: Cow<'static, str>, unit, kind, family: &'static Family| -> usize {
            if let Some(i) = slots.iter().position(|s| s.name == name) {
                return i;
            }
            slots.push(Slot {
                name,
                unit,
                description: family.help,
                kind,
                points: Vec::new(),
            });
            slots.len() - 1
        };
        let mut routes = Vec::new();
        let mut job = None;
        for family in catalog::families() {
            let mut targets = Vec::new();
            match family.kind {
                Kind::Gauge | Kind::Counter | Kind::UpDownCounter => {
                    let kind = match family.kind {
                        Kind::Counter => MetricKind::Counter,
                        Kind::UpDownCounter => MetricKind::UpDownCounter,
                        _ => MetricKind::Gauge,
                    };
                    for name in family.otel_names() {
                        let i = slot(Cow::Borrowed(name), family.unit, kind, family);
                        targets.push((Cow::Borrowed(name), Part::Number, i));
                    }
                }
                Kind::Histogram(OtlpHistogram::LastValue) => {
                    let name = Cow::Borrowed(family.otel);
                    let i = slot(name.clone(), family.unit, MetricKind::Gauge, family);
                    targets.push((name, Part::Last, i));
                }
                Kind::Histogram(OtlpHistogram::SumCount { count_unit }) => {
                    let sum: Cow<'static, str> = Cow::Owned(format!("{}.sum", family.otel));
                    let count: Cow<'static, str> = Cow::Owned(format!("{}.count", family.otel));
                    let i = slot(sum.clone(), family.unit, MetricKind::Counter, family);
                    targets.push((sum, Part::Sum, i));
                    let i = slot(count.clone(), count_unit, MetricKind::Counter, family);
                    targets.push((count, Part::Count, i));
                }
                Kind::Histogram(OtlpHistogram::Recorded { bounds, .. }) => {
                    job = Some(JobHistogram::new(family, bounds));
                }
            }
            if !targets.is_empty() {
                routes.push(Route { family, targets });
            }
        }
        let now = nanos(now);
        Self {
            slots,
            routes,
            job,
            resource,
            build,
            temporality,
            start: now,
            previous_at: now,
            previous: HashMap::new(),
            pushes: 0,
        }
    }

    /// The request of one push of `snap` at `now`; `exports` are the exporters' totals.
    pub fn collect(
        &mut self,
        snap: &Snapshot,
        exports: &[ExporterTotals],
        now: SystemTime,
    ) -> ExportMetricsServiceRequest {
        self.pushes += 1;
        let now = nanos(now);
        let ctx = Ctx {
            snap,
            build: &self.build,
            exports,
        };
        let mut series = Series::new();
        for route in &self.routes {
            series.clear();
            (route.family.series)(&ctx, &mut series);
            for row in series.rows() {
                let wanted = catalog::otel_instrument(route.family, row);
                for (name, part, slot) in &route.targets {
                    if *part == Part::Number && wanted != Some(name.as_ref()) {
                        continue;
                    }
                    let Some(value) = value(*part, row) else {
                        continue;
                    };
                    let mut attributes = Vec::with_capacity(8);
                    attributes_of(route.family, row, &mut attributes);
                    self.slots[*slot].points.push(NumberDataPoint {
                        attributes,
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsDouble(value)),
                        ..NumberDataPoint::default()
                    });
                }
            }
        }
        let delta = self.temporality == Temporality::Delta;
        let (temporality, start) = if delta {
            (AggregationTemporality::Delta, self.previous_at)
        } else {
            (AggregationTemporality::Cumulative, self.start)
        };
        let mut metrics = Vec::with_capacity(self.slots.len() + 1);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.points.is_empty() {
                continue;
            }
            let mut points = std::mem::take(&mut slot.points);
            let data = match slot.kind {
                MetricKind::Gauge => metric::Data::Gauge(Gauge {
                    data_points: points,
                }),
                MetricKind::Counter | MetricKind::UpDownCounter => {
                    let monotonic = slot.kind == MetricKind::Counter;
                    for p in &mut points {
                        p.start_time_unix_nano = start;
                        if delta {
                            delta_of(&mut self.previous, i, p, monotonic, self.pushes);
                        }
                    }
                    metric::Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: temporality as i32,
                        is_monotonic: monotonic,
                    })
                }
            };
            metrics.push(Metric {
                name: slot.name.to_string(),
                description: slot.description.to_owned(),
                unit: slot.unit.to_owned(),
                data: Some(data),
                ..Metric::default()
            });
        }
        if delta {
            let pushes = self.pushes;
            self.previous.retain(|_, (_, seen)| *seen == pushes);
        }
        if let Some(job) = &mut self.job {
            job.record(snap);
            if job.count > 0 {
                metrics.push(Metric {
                    name: job.name.to_owned(),
                    description: job.description.to_owned(),
                    unit: job.unit.to_owned(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: vec![HistogramDataPoint {
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: job.count,
                            sum: Some(job.sum),
                            bucket_counts: job.counts.clone(),
                            explicit_bounds: job.bounds.to_vec(),
                            min: Some(job.min),
                            max: Some(job.max),
                            ..HistogramDataPoint::default()
                        }],
                        aggregation_temporality: temporality as i32,
                    })),
                    ..Metric::default()
                });
                if delta {
                    job.reset();
                }
            }
        }
        self.previous_at = now;
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "gpulse".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }
}

/// Turns a sum point's cumulative value into its change since the previous push of the same
/// series (the first push sends it whole; a monotonic sum that went down restarted, and its
/// new value is the change).
fn delta_of(
    previous: &mut HashMap<(usize, Vec<u8>), (f64, u64)>,
    slot: usize,
    point: &mut NumberDataPoint,
    monotonic: bool,
    push: u64,
) {
    let Some(number_data_point::Value::AsDouble(now)) = point.value else {
        return;
    };
    let mut key = Vec::new();
    for kv in &point.attributes {
        let _ = kv.encode(&mut key);
    }
    let before = previous.insert((slot, key), (now, push)).map(|(v, _)| v);
    let change = match before {
        Some(b) if monotonic && now < b => now,
        Some(b) => now - b,
        None => now,
    };
    point.value = Some(number_data_point::Value::AsDouble(change));
}

/// The number `part` takes from `row`; `None` leaves the point out.
fn value(part: Part, row: &Row<'_>) -> Option<f64> {
    match (part, row.value) {
        (Part::Number, Value::Number(v)) => Some(v),
        (Part::Sum, Value::Histogram(Hist::Server(h))) => Some(h.sum),
        (Part::Count, Value::Histogram(Hist::Server(h))) => Some(h.count),
        (Part::Sum, Value::Histogram(Hist::Latency(h, _))) => Some(h.sum),
        (Part::Count, Value::Histogram(Hist::Latency(h, _))) => Some(h.count as f64),
        (Part::Last, Value::Histogram(Hist::Latency(_, last))) => last,
        _ => None,
    }
}

/// A row's attributes in OTel spelling: the scope's identity, the family's constant
/// attributes, then its labels.
fn attributes_of(family: &Family, row: &Row<'_>, out: &mut Vec<KeyValue>) {
    match row.id {
        Id::None => {}
        // Enough to tell GPUs apart and group by model. The rest of the identity (vendor,
        // driver, serial, VBIOS, PCI bus id) is on `gpulse.gpu.info` only: repeating it on
        // ~1000 points per push made each push several MiB of attribute strings.
        Id::Gpu { index, uuid, model } => {
            out.push(text("hw.id", uuid));
            out.push(text("hw.name", format!("gpu{index}")));
            out.push(text("hw.type", "gpu"));
            out.push(text("hw.model", model));
            out.push(int("gpulse.gpu.index", i64::from(index)));
        }
        Id::Probe(p) => {
            out.push(text("gpulse.probe.name", p.name.as_str()));
            out.push(text("gpulse.probe.kind", p.kind));
        }
        Id::Name(name) => {
            if let Some(key) = family.scope.otel_attributes().first() {
                out.push(text(key, name));
            }
        }
        // `hw.id` is empty when the source could not name the GPU.
        Id::Xid(c) => {
            out.push(text("hw.id", c.uuid.as_str()));
            out.push(text("hw.type", "gpu"));
            if let Some(index) = c.gpu_index {
                out.push(int("gpulse.gpu.index", i64::from(index)));
            }
            out.push(int(
                "gpulse.gpu.xid",
                i64::try_from(c.xid).unwrap_or(i64::MAX),
            ));
        }
    }
    for (k, v) in family.otel_const {
        out.push(text(k, *v));
    }
    for (dim, value) in family.dims.iter().zip(row.labels.iter()) {
        if dim.otel.is_empty() {
            continue;
        }
        let key = dim.otel;
        match *value {
            Val::Empty => out.push(text(key, "")),
            Val::Str(s) => out.push(text(key, s)),
            Val::Pair(_, otel) => out.push(text(key, otel)),
            Val::Int(i) => out.push(int(key, i)),
            Val::Index(i) => out.push(int(key, i64::from(i))),
            Val::IntText(s) => out.push(int(key, s.parse::<i64>().unwrap_or(-1))),
            Val::Opt(Some(s)) => out.push(text(key, s)),
            Val::Opt(None) => {}
            Val::Display(d) => out.push(text(key, d.to_string())),
        }
    }
}

/// One push of `snapshot` as text, one sorted line per data point (name, unit, kind,
/// attributes, value; descriptions left out): `tests/data/otlp.golden` holds it.
pub(super) fn render_text(request: &ExportMetricsServiceRequest) -> String {
    fn attrs(kvs: &[KeyValue]) -> String {
        let mut kvs: Vec<String> = kvs
            .iter()
            .map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => {
                        format!("{}={:?}", kv.key, s.as_str())
                    }
                    Some(any_value::Value::IntValue(i)) => format!("{}={i}", kv.key),
                    other => format!("{}={other:?}", kv.key),
                },
            )
            .collect();
        kvs.sort();
        kvs.join(",")
    }
    let number = |p: &NumberDataPoint| match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    };
    let mut out = Vec::new();
    let metrics = request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics);
    for m in metrics {
        let head = format!("{} [{}]", m.name, m.unit);
        match &m.data {
            Some(metric::Data::Gauge(g)) => {
                for p in &g.data_points {
                    out.push(format!(
                        "{head} gauge {{{}}} {:?}",
                        attrs(&p.attributes),
                        number(p)
                    ));
                }
            }
            Some(metric::Data::Sum(s)) => {
                let kind = if s.is_monotonic { "counter" } else { "updown" };
                for p in &s.data_points {
                    out.push(format!(
                        "{head} {kind} {{{}}} {:?}",
                        attrs(&p.attributes),
                        number(p)
                    ));
                }
            }
            Some(metric::Data::Histogram(h)) => {
                for p in &h.data_points {
                    out.push(format!(
                        "{head} histogram {{{}}} count={} sum={:?} bounds={:?} counts={:?}",
                        attrs(&p.attributes),
                        p.count,
                        p.sum.unwrap_or(0.0),
                        p.explicit_bounds,
                        p.bucket_counts
                    ));
                }
            }
            _ => out.push(format!("{head} unexpected data type")),
        }
    }
    out.sort();
    out.dedup();
    out.join("\n") + "\n"
}

/// The request of one push of `snapshot` (a fresh batcher: cumulative), for tests and the
/// benchmark; `stats` gives the export families their values.
#[doc(hidden)]
pub fn request_for(
    snapshot: &Snapshot,
    stats: &ExportStats,
    gpu_source: &'static str,
) -> ExportMetricsServiceRequest {
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        gpu_source,
    };
    let mut batcher = Batcher::new(
        Resource::default(),
        build,
        Temporality::Cumulative,
        SystemTime::now(),
    );
    batcher.collect(snapshot, &stats.totals(), SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;

    fn sum_points(request: &ExportMetricsServiceRequest, name: &str) -> Vec<f64> {
        let m = request.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap();
        let Some(Data::Sum(s)) = &m.data else {
            panic!("{name} is not a sum")
        };
        s.data_points
            .iter()
            .map(|p| match p.value {
                Some(number_data_point::Value::AsDouble(v)) => v,
                _ => f64::NAN,
            })
            .collect()
    }

    #[test]
    fn delta_sends_the_change_and_forgets_gone_series() {
        let build = BuildInfo {
            version: "t",
            gpu_source: "demo",
        };
        let mut b = Batcher::new(Resource::default(), build, Temporality::Delta, UNIX_EPOCH);
        let stats = ExportStats::default();
        let snap = Snapshot::default();
        stats.record("otlp", Ok(()));
        let first = b.collect(&snap, &stats.totals(), UNIX_EPOCH);
        // gpulse.exports: one push so far, sent whole.
        assert_eq!(sum_points(&first, "gpulse.exports"), [1.0]);
        stats.record("otlp", Ok(()));
        stats.record("otlp", Ok(()));
        let second = b.collect(&snap, &stats.totals(), UNIX_EPOCH);
        assert_eq!(sum_points(&second, "gpulse.exports"), [2.0]);
        // A series that is gone is forgotten: the state is bounded by the series of one push.
        let seen = b.previous.len();
        let _ = b.collect(&snap, &[], UNIX_EPOCH);
        assert!(b.previous.len() < seen, "{} {seen}", b.previous.len());
    }

    #[test]
    fn a_monotonic_reset_sends_the_new_value() {
        let mut previous = HashMap::new();
        let mut point = |v: f64, push| {
            let mut p = NumberDataPoint {
                attributes: vec![text("a", "b")],
                value: Some(number_data_point::Value::AsDouble(v)),
                ..NumberDataPoint::default()
            };
            delta_of(&mut previous, 0, &mut p, true, push);
            match p.value {
                Some(number_data_point::Value::AsDouble(v)) => v,
                _ => f64::NAN,
            }
        };
        assert_eq!(point(10.0, 1), 10.0);
        assert_eq!(point(15.0, 2), 5.0);
        assert_eq!(point(3.0, 3), 3.0);
    }
}
