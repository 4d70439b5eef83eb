//! The OpenTelemetry semantic conventions gpulse's OTLP names follow, as a table of the facts
//! read from `open-telemetry/semantic-conventions` (`model/hardware/`: `gpu-metrics.yaml`,
//! `common-metrics.yaml`, `temperature-metrics.yaml`, `fan-metrics.yaml`, `registry.yaml`,
//! `common.yaml`; the v1.3x model): every catalog family with an `hw.*` name must be in the
//! table and use exactly its unit and instrument kind, carry its required attributes, and
//! spell enumerated values as the registry does; `tests/data/otlp.golden` shows the same on the
//! wire.
//!
//! Not confirmed against a tagged release: the direction attribute of `hw.gpu.io` changed
//! between model versions (`hw.gpu.direction`, `hw.direction`, `network.io.direction`); the
//! table has the one in the brief and in the newest model read. gpulse does not emit
//! `hw.gpu.io` (NVML gives a PCIe rate, not a byte count), so no assertion depends on it.

use std::collections::{BTreeMap, BTreeSet};

use gpulse::export::catalog::{self, Family, Kind};

/// An instrument kind as the conventions name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Instrument {
    Counter,
    UpDownCounter,
    Gauge,
}

/// One metric of the conventions.
struct Convention {
    name: &'static str,
    instrument: Instrument,
    unit: &'static str,
    /// Attributes the conventions require (`hw.id` from `hardware.attributes.common` on
    /// every one), or that gpulse relies on to tell points apart (`hw.gpu.task`, `error.type`,
    /// `hw.sensor_location`).
    attributes: &'static [&'static str],
}

const fn c(
    name: &'static str,
    instrument: Instrument,
    unit: &'static str,
    attributes: &'static [&'static str],
) -> Convention {
    Convention {
        name,
        instrument,
        unit,
        attributes,
    }
}

use Instrument::{Counter, Gauge, UpDownCounter};

/// The hardware metrics, from the model's YAML.
const HARDWARE: &[Convention] = &[
    c(
        "hw.gpu.io",
        Counter,
        "By",
        &["hw.id", "network.io.direction"],
    ),
    c("hw.gpu.memory.limit", UpDownCounter, "By", &["hw.id"]),
    c("hw.gpu.memory.usage", UpDownCounter, "By", &["hw.id"]),
    // "Fraction of GPU memory used".
    c("hw.gpu.memory.utilization", Gauge, "1", &["hw.id"]),
    // "Fraction of time spent in a specific task".
    c("hw.gpu.utilization", Gauge, "1", &["hw.id", "hw.gpu.task"]),
    c(
        "hw.errors",
        Counter,
        "{error}",
        &["hw.id", "hw.type", "error.type"],
    ),
    c(
        "hw.status",
        UpDownCounter,
        "1",
        &["hw.id", "hw.type", "hw.state"],
    ),
    c("hw.power", Gauge, "W", &["hw.id", "hw.type"]),
    c("hw.energy", Counter, "J", &["hw.id", "hw.type"]),
    c(
        "hw.temperature",
        Gauge,
        "Cel",
        &["hw.id", "hw.sensor_location"],
    ),
    c("hw.fan.speed", Gauge, "rpm", &["hw.id"]),
    c("hw.fan.speed_ratio", Gauge, "1", &["hw.id"]),
];

/// Enumerated attribute values (`registry.yaml`).
const ENUMS: &[(&str, &[&str])] = &[
    (
        "hw.state",
        &[
            "ok",
            "degraded",
            "failed",
            "needs_cleaning",
            "predicted_failure",
            "charging",
            "discharging",
        ],
    ),
    ("hw.gpu.task", &["decoder", "encoder", "general"]),
    ("hw.type", &["gpu"]),
];

fn convention(name: &str) -> Option<&'static Convention> {
    HARDWARE.iter().find(|c| c.name == name)
}

/// Every OTel attribute a family's points can carry.
fn attributes(f: &Family) -> BTreeSet<&'static str> {
    f.scope
        .otel_attributes()
        .iter()
        .copied()
        .chain(f.otel_const.iter().map(|(k, _)| *k))
        .chain(f.dims.iter().map(|d| d.otel))
        .filter(|a| !a.is_empty())
        .collect()
}

#[test]
fn every_hw_family_uses_the_conventions_unit_kind_and_attributes() {
    let mut used = BTreeSet::new();
    for f in catalog::families() {
        for name in f.otel_names().filter(|n| n.starts_with("hw.")) {
            let Some(conv) = convention(name) else {
                panic!(
                    "{} is OTel {name}, which is not in the conventions' table",
                    f.prom
                );
            };
            used.insert(name);
            assert_eq!(f.unit, conv.unit, "{name} ({}): unit", f.prom);
            let kind = match f.kind {
                Kind::Gauge => Gauge,
                Kind::Counter => Counter,
                Kind::UpDownCounter => UpDownCounter,
                Kind::Histogram(_) => panic!("{name}: a histogram under an hw.* name"),
            };
            assert_eq!(kind, conv.instrument, "{name} ({}): instrument", f.prom);
            let have = attributes(f);
            for a in conv.attributes {
                assert!(have.contains(a), "{name} ({}): no {a} in {have:?}", f.prom);
            }
        }
    }
    // The names this change relies on are really used (a rename away would pass silently).
    for name in [
        "hw.gpu.memory.limit",
        "hw.gpu.memory.usage",
        "hw.gpu.memory.utilization",
        "hw.gpu.utilization",
        "hw.errors",
        "hw.status",
        "hw.power",
        "hw.energy",
        "hw.temperature",
        "hw.fan.speed_ratio",
    ] {
        assert!(used.contains(name), "no family is {name}");
    }
}

#[test]
fn memory_utilization_is_the_used_fraction_and_controller_busy_time_is_gpulses() {
    let otel = |prom: &str| {
        catalog::families()
            .find(|f| f.prom == prom)
            .map(|f| f.otel)
            .unwrap()
    };
    assert_eq!(
        otel("gpulse_gpu_memory_used_ratio"),
        "hw.gpu.memory.utilization"
    );
    assert_eq!(
        otel("gpulse_gpu_memory_utilization_ratio"),
        "gpulse.gpu.memory.busy"
    );
}

/// The points of `name` in the OTLP golden file: attributes and value.
fn golden_points(name: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let golden = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/otlp.golden"
    ))
    .unwrap();
    golden
        .lines()
        .filter(|l| l.starts_with(&format!("{name} [")))
        .map(|l| {
            let kind = l.split(' ').nth(2).unwrap().to_owned();
            let (attrs, value) = l
                .split_once(" {")
                .and_then(|(_, rest)| rest.rsplit_once("} "))
                .unwrap();
            let attrs = attrs
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            (kind, attrs, value.parse().unwrap())
        })
        .collect()
}

#[test]
fn the_pushed_points_follow_the_conventions() {
    for conv in HARDWARE {
        let points = golden_points(conv.name);
        let want = match conv.instrument {
            Counter => "counter",
            UpDownCounter => "updown",
            Gauge => "gauge",
        };
        for (kind, attrs, _) in &points {
            assert_eq!(kind, want, "{}: instrument on the wire", conv.name);
            for (key, values) in ENUMS {
                if let Some(v) = attrs.get(*key) {
                    assert!(values.contains(&v.as_str()), "{}: {key}={v}", conv.name);
                }
            }
        }
    }
    // hw.status: one point per state and GPU, exactly one of them 1 (a GPU whose state is
    // unknown has none at 1).
    let mut per_gpu: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for (_, attrs, v) in golden_points("hw.status") {
        per_gpu
            .entry(attrs["hw.id"].clone())
            .or_default()
            .push((attrs["hw.state"].clone(), v));
    }
    assert!(!per_gpu.is_empty());
    for (gpu, states) in &per_gpu {
        let names: BTreeSet<&str> = states.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, BTreeSet::from(["degraded", "failed", "ok"]), "{gpu}");
        assert!(states.iter().map(|(_, v)| v).sum::<f64>() <= 1.0, "{gpu}");
    }
    // hw.errors is additive: one point per GPU and error type (no volatile and aggregate
    // points of the same type side by side).
    let errors = golden_points("hw.errors");
    assert!(!errors.is_empty());
    let keys: BTreeSet<(String, String)> = errors
        .iter()
        .map(|(_, a, _)| (a["hw.id"].clone(), a["error.type"].clone()))
        .collect();
    assert_eq!(keys.len(), errors.len(), "{errors:?}");
    assert!(!golden_points("gpulse.gpu.ecc.errors.aggregate").is_empty());
}
