//! The OTLP instruments: one observable per OpenTelemetry name of the metric catalog.
//!
//! Families are grouped by their OTel name (several /metrics families may share one
//! instrument, told apart by their constant attributes); each group's callback reads the latest
//! snapshot at push time and emits every member's rows that travel under its name (a label
//! value may send a family's rows to another instrument, or keep them off OTLP:
//! [`catalog::OtelSplit`]). The only instrument that is not
//! observable is the catalog's [`OtlpHistogram::Recorded`] exception: OpenTelemetry has no
//! observable histogram, so the wrapped job's run durations are recorded by the callback of
//! the instrument the catalog names (`gpulse.job.runs`).

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Histogram, Meter};

use crate::export::ExportStats;
use crate::export::catalog::{
    self, BuildInfo, Ctx, Family, Hist, Id, Kind, OtlpHistogram, Row, Scope, Series, Val, Value,
};
use crate::model::JobEvent;
use crate::store::Snapshot;

/// Where callbacks read the snapshot: the store's latest in the agent, a fixed one in tests.
pub(super) type Source = Arc<dyn Fn() -> Arc<Snapshot> + Send + Sync>;

/// Runs before a group's rows are observed (the recorded histogram's recording).
type Hook = Arc<dyn Fn(&Snapshot) + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InstrumentKind {
    Gauge,
    Counter,
    UpDownCounter,
}

/// Which number of a row an instrument takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Number,
    /// A histogram's sum / count ([`OtlpHistogram::SumCount`]).
    Sum,
    Count,
    /// The last observation ([`OtlpHistogram::LastValue`]).
    Last,
}

/// One observable instrument and the families it carries.
struct Group {
    name: Cow<'static, str>,
    unit: &'static str,
    description: &'static str,
    kind: InstrumentKind,
    members: Vec<(&'static Family, Part)>,
    hook: Option<Hook>,
}

/// The instruments, by OTel name, in catalog order; and the recorded histograms.
fn groups() -> (Vec<Group>, Vec<&'static Family>) {
    let mut groups: Vec<Group> = Vec::new();
    let mut recorded = Vec::new();
    let mut add = |name: Cow<'static, str>, unit, kind, family: &'static Family, part| match groups
        .iter_mut()
        .find(|g| g.name == name)
    {
        Some(g) => g.members.push((family, part)),
        None => groups.push(Group {
            name,
            unit,
            description: family.help,
            kind,
            members: vec![(family, part)],
            hook: None,
        }),
    };
    for family in catalog::families() {
        let otel = Cow::Borrowed(family.otel);
        match family.kind {
            // A number family joins its own instrument and those its split rows go to; each
            // callback keeps the rows that belong to it (`catalog::otel_instrument`).
            Kind::Gauge | Kind::Counter | Kind::UpDownCounter => {
                let kind = match family.kind {
                    Kind::Counter => InstrumentKind::Counter,
                    Kind::UpDownCounter => InstrumentKind::UpDownCounter,
                    _ => InstrumentKind::Gauge,
                };
                for name in family.otel_names() {
                    add(Cow::Borrowed(name), family.unit, kind, family, Part::Number);
                }
            }
            Kind::Histogram(OtlpHistogram::LastValue) => {
                add(otel, family.unit, InstrumentKind::Gauge, family, Part::Last)
            }
            Kind::Histogram(OtlpHistogram::SumCount { count_unit }) => {
                let sum = Cow::Owned(format!("{}.sum", family.otel));
                let count = Cow::Owned(format!("{}.count", family.otel));
                add(sum, family.unit, InstrumentKind::Counter, family, Part::Sum);
                add(
                    count,
                    count_unit,
                    InstrumentKind::Counter,
                    family,
                    Part::Count,
                );
            }
            Kind::Histogram(OtlpHistogram::Recorded { .. }) => recorded.push(family),
        }
    }
    (groups, recorded)
}

/// Registers every instrument of the catalog on `meter`.
pub(super) fn register(
    meter: &Meter,
    source: &Source,
    stats: &Arc<ExportStats>,
    gpu_source: &'static str,
) {
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        gpu_source,
    };
    let (mut groups, recorded) = groups();
    for family in recorded {
        let Kind::Histogram(OtlpHistogram::Recorded { with, bounds }) = family.kind else {
            continue;
        };
        let histogram = meter
            .f64_histogram(family.otel)
            .with_unit(family.unit)
            .with_description(family.help)
            .with_boundaries(bounds.to_vec())
            .build();
        if let Some(group) = groups.iter_mut().find(|g| g.name == with) {
            group.hook = Some(job_duration_recorder(histogram));
        }
    }
    for group in groups {
        observe(meter, source, stats, &build, group);
    }
}

/// Records the durations of the runs that ended since the push started. Runs before this
/// wrapper (restored from the state file) are in `gpulse.job.runs`, not in this histogram;
/// /metrics' histogram has them.
fn job_duration_recorder(histogram: Histogram<f64>) -> Hook {
    // Runs up to this number are recorded (or were restored, and are not).
    let recorded = Mutex::new(None::<u64>);
    Arc::new(move |snap: &Snapshot| {
        let Some(job) = &snap.job else { return };
        let mut last = recorded.lock().unwrap_or_else(|p| p.into_inner());
        let last = last.get_or_insert(job.restored_through);
        for event in &job.recent {
            if let JobEvent::Finished(end) = event
                && end.run > *last
            {
                *last = end.run;
                if let Some(d) = end.duration {
                    histogram.record(d.as_secs_f64(), &[]);
                }
            }
        }
    })
}

/// Registers one observable instrument whose callback reads the latest snapshot.
fn observe(
    meter: &Meter,
    source: &Source,
    stats: &Arc<ExportStats>,
    build: &BuildInfo,
    group: Group,
) {
    let Group {
        name,
        unit,
        description,
        kind,
        members,
        hook,
    } = group;
    let source = Arc::clone(source);
    let stats = Arc::clone(stats);
    let build = build.clone();
    let instrument = name.clone();
    let reads_exports = members.iter().any(|(f, _)| f.scope == Scope::Exporter);
    let callback = move |obs: &dyn AsyncInstrument<f64>| {
        let snap = source();
        if let Some(hook) = &hook {
            hook(&snap);
        }
        let exports = if reads_exports {
            stats.totals()
        } else {
            Vec::new()
        };
        let ctx = Ctx {
            snap: &snap,
            build: &build,
            exports: &exports,
        };
        let mut series = Series::new();
        let mut attrs = Vec::new();
        for (family, part) in &members {
            series.clear();
            (family.series)(&ctx, &mut series);
            for row in series.rows() {
                if *part == Part::Number
                    && catalog::otel_instrument(family, row) != Some(instrument.as_ref())
                {
                    continue;
                }
                let Some(value) = value(*part, row) else {
                    continue;
                };
                attrs.clear();
                attributes(family, row, &mut attrs);
                obs.observe(value, &attrs);
            }
        }
    };
    // Dropping the handle does not unregister the callback.
    match kind {
        InstrumentKind::Gauge => {
            meter
                .f64_observable_gauge(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(callback)
                .build();
        }
        InstrumentKind::Counter => {
            meter
                .f64_observable_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(callback)
                .build();
        }
        InstrumentKind::UpDownCounter => {
            meter
                .f64_observable_up_down_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(callback)
                .build();
        }
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

/// A row's attributes in OTel spelling: the scope's identity, the family's constant
/// attributes, then its labels.
fn attributes(family: &Family, row: &Row<'_>, out: &mut Vec<KeyValue>) {
    match row.id {
        Id::None => {}
        // Enough to tell GPUs apart and group by model. The rest of the identity (vendor,
        // driver, serial, VBIOS, PCI bus id) is on `gpulse.gpu.info` only: repeating it on
        // ~1000 points per push made each push several MiB of attribute strings.
        Id::Gpu { index, uuid, model } => {
            out.push(KeyValue::new("hw.id", uuid.to_owned()));
            out.push(KeyValue::new("hw.name", format!("gpu{index}")));
            out.push(KeyValue::new("hw.type", "gpu"));
            out.push(KeyValue::new("hw.model", model.to_owned()));
            out.push(KeyValue::new("gpulse.gpu.index", i64::from(index)));
        }
        Id::Probe(p) => {
            out.push(KeyValue::new("gpulse.probe.name", p.name.clone()));
            out.push(KeyValue::new("gpulse.probe.kind", p.kind));
        }
        Id::Name(name) => {
            if let Some(key) = family.scope.otel_attributes().first() {
                out.push(KeyValue::new(*key, name));
            }
        }
        // `hw.id` is empty when the source could not name the GPU.
        Id::Xid(c) => {
            out.push(KeyValue::new("hw.id", c.uuid.clone()));
            out.push(KeyValue::new("hw.type", "gpu"));
            if let Some(index) = c.gpu_index {
                out.push(KeyValue::new("gpulse.gpu.index", i64::from(index)));
            }
            out.push(KeyValue::new(
                "gpulse.gpu.xid",
                i64::try_from(c.xid).unwrap_or(i64::MAX),
            ));
        }
    }
    for (k, v) in family.otel_const {
        out.push(KeyValue::new(*k, *v));
    }
    for (dim, value) in family.dims.iter().zip(row.labels.iter()) {
        if dim.otel.is_empty() {
            continue;
        }
        let key = dim.otel;
        match *value {
            Val::Empty => out.push(KeyValue::new(key, "")),
            Val::Str(s) => out.push(KeyValue::new(key, s.to_owned())),
            Val::Pair(_, otel) => out.push(KeyValue::new(key, otel)),
            Val::Int(i) => out.push(KeyValue::new(key, i)),
            Val::Index(i) => out.push(KeyValue::new(key, i64::from(i))),
            Val::IntText(s) => out.push(KeyValue::new(key, s.parse::<i64>().unwrap_or(-1))),
            Val::Opt(Some(s)) => out.push(KeyValue::new(key, s.to_owned())),
            Val::Opt(None) => {}
            Val::Display(d) => out.push(KeyValue::new(key, d.to_string())),
        }
    }
}
