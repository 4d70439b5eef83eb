//! The OTLP metrics batch, built straight from the metric catalog: one encoded
//! `ExportMetricsServiceRequest` per push, from the latest snapshot, written field by field
//! ([`super::wire`]) into buffers kept from push to push, with no SDK instruments,
//! aggregation, per-series state or intermediate structs in between.
//!
//! Why not the SDK's observable instruments: each push ran every callback, hashed every
//! attribute set into the SDK's aggregation maps, copied the result into the SDK's data model
//! and then again into the protocol's: one push cost ~26× a /metrics render of the same
//! snapshot, and the maps held memory of their own (issue 19). Why not opentelemetry-proto's
//! structs either: they own every attribute key and value as a `String`, and allocating and
//! freeing those cost ~10× the render. The catalog already says every name, unit, kind and
//! attribute, so the batch is written from it in one walk, each family's rows computed once
//! and sent to the metric their OTel name (or [`catalog::OtelSplit`]) picks; the tests decode
//! the bytes with opentelemetry-proto's generated types.
//!
//! Temporality: gauges carry the value; sums are cumulative from the push's start, or with
//! `delta` the difference from the previous push of the same series (the first push sends the
//! whole value, a monotonic sum that went down — a reset — sends its new value). The only
//! state is that previous value per sum series (keyed by its encoded attributes), dropped as
//! soon as a series is gone, and the recorded histogram's counts ([`OtlpHistogram::Recorded`]:
//! the wrapped job's run durations, which only the job log knows).

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint, metric,
    number_data_point,
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

use super::wire;

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

/// One OTLP metric of the batch and the points it collects during one push, already encoded.
struct Slot {
    name: Cow<'static, str>,
    kind: MetricKind,
    /// `Metric`'s name, description and unit fields, encoded once.
    header: Vec<u8>,
    /// This push's data points, each as field 1 (`data_points`) of the Gauge or Sum; the
    /// buffer is kept from push to push.
    points: Vec<u8>,
    /// Delta only: each series' last value by its encoded attributes, with the push that last
    /// saw it; a series not seen in a push is forgotten.
    previous: HashMap<Box<[u8]>, (f64, u64)>,
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

    /// The histogram as an encoded `Metric` (rare: one point, so through the generated type).
    fn metric(&self, temporality: AggregationTemporality, start: u64, now: u64) -> Vec<u8> {
        Metric {
            name: self.name.to_owned(),
            description: self.description.to_owned(),
            unit: self.unit.to_owned(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: self.count,
                    sum: Some(self.sum),
                    bucket_counts: self.counts.clone(),
                    explicit_bounds: self.bounds.to_vec(),
                    min: Some(self.min),
                    max: Some(self.max),
                    ..HistogramDataPoint::default()
                }],
                aggregation_temporality: temporality as i32,
            })),
            ..Metric::default()
        }
        .encode_to_vec()
    }
}

/// Field numbers of opentelemetry-proto's metrics messages (`opentelemetry.proto.metrics.v1`
/// and the collector's request), as its generated code declares them.
mod field {
    pub const REQUEST_RESOURCE_METRICS: u32 = 1;
    pub const RESOURCE_METRICS_RESOURCE: u32 = 1;
    pub const RESOURCE_METRICS_SCOPE_METRICS: u32 = 2;
    pub const SCOPE_METRICS_SCOPE: u32 = 1;
    pub const SCOPE_METRICS_METRICS: u32 = 2;
    pub const METRIC_NAME: u32 = 1;
    pub const METRIC_DESCRIPTION: u32 = 2;
    pub const METRIC_UNIT: u32 = 3;
    pub const METRIC_GAUGE: u32 = 5;
    pub const METRIC_SUM: u32 = 7;
    /// `data_points` of Gauge and Sum alike.
    pub const DATA_POINTS: u32 = 1;
    pub const SUM_TEMPORALITY: u32 = 2;
    pub const SUM_IS_MONOTONIC: u32 = 3;
    pub const POINT_START_TIME: u32 = 2;
    pub const POINT_TIME: u32 = 3;
    pub const POINT_AS_DOUBLE: u32 = 4;
    pub const POINT_ATTRIBUTES: u32 = 7;
}

/// Builds one push's request from a snapshot, as protobuf bytes; holds what delta temporality
/// needs and the buffers it reuses. Public for the benchmark only.
#[doc(hidden)]
pub struct Batcher {
    slots: Vec<Slot>,
    routes: Vec<Route>,
    job: Option<JobHistogram>,
    /// The `Resource` and `InstrumentationScope` messages, encoded once.
    resource: Vec<u8>,
    scope: Vec<u8>,
    build: BuildInfo,
    temporality: Temporality,
    /// Unix nanoseconds: when the push started (cumulative start), and the previous push.
    start: u64,
    previous_at: u64,
    pushes: u64,
    /// Reused for attribute values that are formatted (`gpu3`, a reason code).
    scratch: String,
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
        let mut slot = |name: Cow<'static, str>, unit: &str, kind, family: &'static Family| {
            if let Some(i) = slots.iter().position(|s| s.name == name) {
                return i;
            }
            let mut header = Vec::new();
            for (field, text) in [
                (field::METRIC_NAME, name.as_ref()),
                (field::METRIC_DESCRIPTION, family.help),
                (field::METRIC_UNIT, unit),
            ] {
                if !text.is_empty() {
                    wire::put_bytes(&mut header, field, text.as_bytes());
                }
            }
            slots.push(Slot {
                name,
                kind,
                header,
                points: Vec::new(),
                previous: HashMap::new(),
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
        let scope = InstrumentationScope {
            name: "gpulse".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..InstrumentationScope::default()
        };
        let now = nanos(now);
        Self {
            slots,
            routes,
            job,
            resource: resource.encode_to_vec(),
            scope: scope.encode_to_vec(),
            build,
            temporality,
            start: now,
            previous_at: now,
            pushes: 0,
            scratch: String::new(),
        }
    }

    /// One push of `snap` at `now` as an encoded `ExportMetricsServiceRequest`; `exports`
    /// are the exporters' totals.
    pub fn encode(
        &mut self,
        snap: &Snapshot,
        exports: &[ExporterTotals],
        now: SystemTime,
    ) -> Vec<u8> {
        self.pushes += 1;
        let now = nanos(now);
        let delta = self.temporality == Temporality::Delta;
        let (temporality, start) = if delta {
            (AggregationTemporality::Delta, self.previous_at)
        } else {
            (AggregationTemporality::Cumulative, self.start)
        };
        let ctx = Ctx {
            snap,
            build: &self.build,
            exports,
        };
        let push = self.pushes;
        let scratch = &mut self.scratch;
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
                    let slot = &mut self.slots[*slot];
                    let kind = slot.kind;
                    let previous = &mut slot.previous;
                    // In field-number order, as prost writes it; the value is fixed-width,
                    // so a delta (known once the attributes are written) is patched in.
                    wire::put_message(&mut slot.points, field::DATA_POINTS, |buf| {
                        if kind != MetricKind::Gauge {
                            wire::put_fixed64(buf, field::POINT_START_TIME, start);
                        }
                        wire::put_fixed64(buf, field::POINT_TIME, now);
                        wire::put_double(buf, field::POINT_AS_DOUBLE, value);
                        let at = buf.len() - 8;
                        put_attributes(buf, route.family, row, scratch);
                        if delta && kind != MetricKind::Gauge {
                            let monotonic = kind == MetricKind::Counter;
                            let change = delta_of(previous, &buf[at + 8..], value, monotonic, push);
                            buf[at..at + 8].copy_from_slice(&change.to_bits().to_le_bytes());
                        }
                    });
                }
            }
        }
        if delta {
            for slot in &mut self.slots {
                slot.previous.retain(|_, (_, seen)| *seen == push);
            }
        }
        let job = self.job.as_mut().and_then(|job| {
            job.record(snap);
            let metric = (job.count > 0).then(|| job.metric(temporality, start, now));
            if delta && metric.is_some() {
                job.reset();
            }
            metric
        });
        self.previous_at = now;
        self.assemble(temporality, job)
    }

    /// The request around this push's points: every length is known, so each prefix is
    /// written exactly and the points are copied once. Empties the slots' point buffers.
    fn assemble(&mut self, temporality: AggregationTemporality, job: Option<Vec<u8>>) -> Vec<u8> {
        let temporality = temporality as u64;
        // Per metric: (body length, data length) of the non-empty slots.
        // A sum's fields after its points: the temporality (key, varint) and, when monotonic,
        // `is_monotonic = true` (key, one byte).
        let temporality_field = 1 + wire::varint_len(temporality);
        let data_len = |slot: &Slot| match slot.kind {
            MetricKind::Gauge => slot.points.len(),
            MetricKind::Counter => slot.points.len() + temporality_field + 2,
            MetricKind::UpDownCounter => slot.points.len() + temporality_field,
        };
        let metric_len = |slot: &Slot| slot.header.len() + wire::len_field(data_len(slot));
        let mut scope_len = wire::len_field(self.scope.len());
        for slot in self.slots.iter().filter(|s| !s.points.is_empty()) {
            scope_len += wire::len_field(metric_len(slot));
        }
        if let Some(job) = &job {
            scope_len += wire::len_field(job.len());
        }
        let resource_len = wire::len_field(self.resource.len()) + wire::len_field(scope_len);
        let total = wire::len_field(resource_len);
        let mut out = Vec::with_capacity(total);
        wire::put_key(&mut out, field::REQUEST_RESOURCE_METRICS, wire::LEN);
        wire::put_varint(&mut out, resource_len as u64);
        wire::put_bytes(&mut out, field::RESOURCE_METRICS_RESOURCE, &self.resource);
        wire::put_key(&mut out, field::RESOURCE_METRICS_SCOPE_METRICS, wire::LEN);
        wire::put_varint(&mut out, scope_len as u64);
        wire::put_bytes(&mut out, field::SCOPE_METRICS_SCOPE, &self.scope);
        for slot in self.slots.iter_mut().filter(|s| !s.points.is_empty()) {
            wire::put_key(&mut out, field::SCOPE_METRICS_METRICS, wire::LEN);
            wire::put_varint(&mut out, metric_len(slot) as u64);
            out.extend_from_slice(&slot.header);
            let data = if slot.kind == MetricKind::Gauge {
                field::METRIC_GAUGE
            } else {
                field::METRIC_SUM
            };
            wire::put_key(&mut out, data, wire::LEN);
            wire::put_varint(&mut out, data_len(slot) as u64);
            out.extend_from_slice(&slot.points);
            if slot.kind != MetricKind::Gauge {
                wire::put_uint(&mut out, field::SUM_TEMPORALITY, temporality);
            }
            if slot.kind == MetricKind::Counter {
                wire::put_uint(&mut out, field::SUM_IS_MONOTONIC, 1);
            }
            slot.points.clear();
        }
        if let Some(job) = &job {
            wire::put_bytes(&mut out, field::SCOPE_METRICS_METRICS, job);
        }
        debug_assert_eq!(out.len(), total);
        out
    }

    /// One push as opentelemetry-proto's request: [`Self::encode`], decoded again (tests,
    /// the golden file and the benchmark's size line).
    pub fn collect(
        &mut self,
        snap: &Snapshot,
        exports: &[ExporterTotals],
        now: SystemTime,
    ) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest::decode(self.encode(snap, exports, now).as_slice())
            .unwrap_or_default()
    }
}

/// A sum point's change since the previous push of the same series (its encoded
/// `attributes`): the first push sends the value whole; a monotonic sum that went down
/// restarted, and its new value is the change.
fn delta_of(
    previous: &mut HashMap<Box<[u8]>, (f64, u64)>,
    attributes: &[u8],
    now: f64,
    monotonic: bool,
    push: u64,
) -> f64 {
    let before = match previous.get_mut(attributes) {
        Some(entry) => Some(std::mem::replace(entry, (now, push)).0),
        None => {
            previous.insert(attributes.into(), (now, push));
            None
        }
    };
    match before {
        Some(b) if monotonic && now < b => now,
        Some(b) => now - b,
        None => now,
    }
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

/// A row's attributes in OTel spelling, as the point's `attributes` fields: the scope's
/// identity, the family's constant attributes, then its labels.
fn put_attributes(buf: &mut Vec<u8>, family: &Family, row: &Row<'_>, scratch: &mut String) {
    use std::fmt::Write as _;
    const F: u32 = field::POINT_ATTRIBUTES;
    let text = |buf: &mut Vec<u8>, key: &str, value: &str| {
        wire::put_text_attribute(buf, F, key, value);
    };
    let int = |buf: &mut Vec<u8>, key: &str, value: i64| {
        wire::put_int_attribute(buf, F, key, value);
    };
    match row.id {
        Id::None => {}
        // Enough to tell GPUs apart and group by model. The rest of the identity (vendor,
        // driver, serial, VBIOS, PCI bus id) is on `gpulse.gpu.info` only: repeating it on
        // ~1000 points per push made each push several MiB of attribute strings.
        Id::Gpu { index, uuid, model } => {
            text(buf, "hw.id", uuid);
            scratch.clear();
            let _ = write!(scratch, "gpu{index}");
            text(buf, "hw.name", scratch);
            text(buf, "hw.type", "gpu");
            text(buf, "hw.model", model);
            int(buf, "gpulse.gpu.index", i64::from(index));
        }
        Id::Probe(p) => {
            text(buf, "gpulse.probe.name", p.name.as_str());
            text(buf, "gpulse.probe.kind", p.kind);
        }
        Id::Name(name) => {
            if let Some(key) = family.scope.otel_attributes().first() {
                text(buf, key, name);
            }
        }
        // `hw.id` is empty when the source could not name the GPU.
        Id::Xid(c) => {
            text(buf, "hw.id", c.uuid.as_str());
            text(buf, "hw.type", "gpu");
            if let Some(index) = c.gpu_index {
                int(buf, "gpulse.gpu.index", i64::from(index));
            }
            int(
                buf,
                "gpulse.gpu.xid",
                i64::try_from(c.xid).unwrap_or(i64::MAX),
            );
        }
    }
    for (k, v) in family.otel_const {
        text(buf, k, v);
    }
    for (dim, value) in family.dims.iter().zip(row.labels.iter()) {
        if dim.otel.is_empty() {
            continue;
        }
        let key = dim.otel;
        match *value {
            Val::Empty => text(buf, key, ""),
            Val::Str(s) => text(buf, key, s),
            Val::Pair(_, otel) => text(buf, key, otel),
            Val::Int(i) => int(buf, key, i),
            Val::Index(i) => int(buf, key, i64::from(i)),
            Val::IntText(s) => int(buf, key, s.parse::<i64>().unwrap_or(-1)),
            Val::Opt(Some(s)) => text(buf, key, s),
            Val::Opt(None) => {}
            Val::Display(d) => {
                scratch.clear();
                let _ = write!(scratch, "{d}");
                text(buf, key, scratch);
            }
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
        let (kind, points) = match &m.data {
            Some(metric::Data::Gauge(g)) => ("gauge", &g.data_points),
            Some(metric::Data::Sum(s)) if s.is_monotonic => ("counter", &s.data_points),
            Some(metric::Data::Sum(s)) => ("updown", &s.data_points),
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
                continue;
            }
            _ => {
                out.push(format!("{head} unexpected data type"));
                continue;
            }
        };
        for p in points {
            out.push(format!(
                "{head} {kind} {{{}}} {:?}",
                attrs(&p.attributes),
                number(p)
            ));
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
        let remembered = |b: &Batcher| b.slots.iter().map(|s| s.previous.len()).sum::<usize>();
        let seen = remembered(&b);
        let _ = b.collect(&snap, &[], UNIX_EPOCH);
        assert!(remembered(&b) < seen, "{} {seen}", remembered(&b));
    }

    /// The bytes written field by field are exactly what opentelemetry-proto's generated
    /// types encode for the same request: same fields, order, lengths and values.
    #[test]
    fn the_written_request_is_what_the_generated_types_encode() {
        use crate::demo::gpu_sim::SimGpuCollector;
        use crate::model::{CollectorStatus, Sample};
        use crate::store::Store;
        use std::num::NonZeroUsize;
        use std::time::Duration;

        let store = Store::new(
            NonZeroUsize::new(10).unwrap(),
            vec![CollectorStatus::new("gpu", Duration::from_secs(1))],
        );
        let mut sim = SimGpuCollector::new(8, Duration::from_secs(1));
        let stats = ExportStats::default();
        stats.record("otlp", Ok(()));
        for temporality in [Temporality::Cumulative, Temporality::Delta] {
            let build = BuildInfo {
                version: "t",
                gpu_source: "demo",
            };
            let resource = Resource {
                attributes: vec![attribute(
                    "service.name",
                    any_value::Value::StringValue("gpulse".into()),
                )],
                ..Resource::default()
            };
            let mut b = Batcher::new(resource, build, temporality, SystemTime::now());
            for _ in 0..3 {
                store.publish(Sample::Gpu(sim.next_sample()));
                let bytes = b.encode(&store.snapshot(), &stats.totals(), SystemTime::now());
                let decoded = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
                let metrics = &decoded.resource_metrics[0].scope_metrics[0].metrics;
                assert!(metrics.len() > 50, "{}", metrics.len());
                assert!(bytes == decoded.encode_to_vec(), "{temporality:?}");
            }
        }
    }

    #[test]
    fn a_monotonic_reset_sends_the_new_value() {
        let mut previous = HashMap::new();
        let mut point = |v: f64, push| delta_of(&mut previous, b"a=b", v, true, push);
        assert_eq!(point(10.0, 1), 10.0);
        assert_eq!(point(15.0, 2), 5.0);
        assert_eq!(point(3.0, 3), 3.0);
    }
}
