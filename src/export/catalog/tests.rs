//! The catalog's own rules: names unique and well-formed in both spellings.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

fn snake(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with('_')
        && !s.ends_with('_')
}

fn dotted(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(snake)
}

#[test]
fn prometheus_names_are_unique_and_follow_the_conventions() {
    let mut seen = BTreeSet::new();
    for f in families() {
        let name = f.prom;
        assert!(seen.insert(name), "{name} twice");
        assert!(name.starts_with("gpulse_"), "{name}: gpulse_ prefix");
        assert!(snake(name), "{name}: snake_case");
        assert!(
            !name.ends_with("_total"),
            "{name}: the encoder appends _total"
        );
        for not_base in [
            "_milliseconds",
            "_ms",
            "_kb",
            "_mb",
            "_mib",
            "_percent",
            "_mhz",
        ] {
            assert!(!name.contains(not_base), "{name}: base units only");
        }
        if f.help.contains("(0-1)") || f.help.contains("0 to 1") {
            assert!(
                name.ends_with("_ratio"),
                "{name}: a 0-1 value ends in _ratio"
            );
        }
        if name.ends_with("_ratio") {
            assert_eq!(f.unit, "1", "{name}: a ratio has unit 1");
        }
        if matches!(f.kind, Kind::Histogram(_)) {
            assert!(
                name.ends_with("_seconds"),
                "{name}: histograms are of seconds"
            );
        }
        assert!(f.help.ends_with('.'), "{name}: help ends with '.'");
        assert!(
            f.dims.len() <= MAX_DIMS,
            "{name}: at most {MAX_DIMS} labels"
        );
    }
    // Nothing collides with a counter's exposed name either.
    for f in families().filter(|f| f.kind == Kind::Counter) {
        assert!(!seen.contains(format!("{}_total", f.prom).as_str()));
    }
}

#[test]
fn otel_names_are_unique_and_follow_the_conventions() {
    let mut seen = BTreeSet::new();
    // Families sharing an instrument must agree on what it is.
    let mut instruments: BTreeMap<&str, (&str, Kind)> = BTreeMap::new();
    for f in families() {
        for name in f.otel_names() {
            assert!(dotted(name), "{name}: dotted lowercase");
            assert!(
                ["hw.", "gpulse.", "system."]
                    .iter()
                    .any(|p| name.starts_with(p)),
                "{name}: hw., gpulse. or system. prefix"
            );
            let dims: Vec<&str> = f.dims.iter().map(|d| d.otel).collect();
            assert!(
                seen.insert((name, f.otel_const, dims)),
                "{name} {:?} twice with the same attributes",
                f.otel_const
            );
            let (unit, kind) = *instruments.entry(name).or_insert((f.unit, f.kind));
            assert_eq!((unit, kind), (f.unit, f.kind), "{name}: one unit and kind");
        }
        let name = f.otel;
        for (k, v) in f.otel_const {
            assert!(
                dotted(k) && !v.is_empty(),
                "{name}: constant attribute {k}={v}"
            );
        }
        if let Kind::Histogram(OtlpHistogram::Recorded { with, .. }) = f.kind {
            assert!(
                families().any(|g| g.otel == with && !matches!(g.kind, Kind::Histogram(_))),
                "{name}: recorded by {with}, which must be an observable of the catalog"
            );
        }
    }
}

#[test]
fn label_spellings_are_valid() {
    for f in families() {
        for d in f.dims {
            assert!(
                !d.prom.is_empty() || !d.otel.is_empty(),
                "{}: a label with no spelling",
                f.prom
            );
            assert!(d.prom.is_empty() || snake(d.prom), "{}: {}", f.prom, d.prom);
            assert!(
                d.otel.is_empty() || dotted(d.otel),
                "{}: {}",
                f.prom,
                d.otel
            );
            assert!(
                !f.scope.prom_labels().contains(&d.prom),
                "{}: {} twice",
                f.prom,
                d.prom
            );
            assert!(
                !f.scope.otel_attributes().contains(&d.otel),
                "{}: {} twice",
                f.prom,
                d.otel
            );
        }
    }
}

#[test]
fn otel_splits_are_on_number_families_and_route_their_rows() {
    for f in families() {
        for d in f.dims.iter().filter(|d| !d.otel_split.is_empty()) {
            assert!(
                !matches!(f.kind, Kind::Histogram(_)),
                "{}: a histogram cannot split its rows",
                f.prom
            );
            for split in d.otel_split {
                assert!(!split.value.is_empty(), "{}: empty split value", f.prom);
                assert_ne!(split.otel, Some(f.otel), "{}: a split to itself", f.prom);
            }
        }
    }
    // The ECC family: volatile rows are hw.errors, aggregate ones their own instrument.
    let Some(ecc) = families().find(|f| f.prom == "gpulse_gpu_ecc_errors") else {
        panic!("no ECC family")
    };
    let row = |scope| Row {
        id: Id::None,
        labels: labels([Val::Pair("corrected", "corrected"), Val::Pair(scope, scope)]),
        value: Value::Number(1.0),
    };
    assert_eq!(otel_instrument(ecc, &row("volatile")), Some("hw.errors"));
    assert_eq!(
        otel_instrument(ecc, &row("aggregate")),
        Some("gpulse.gpu.ecc.errors.aggregate")
    );
    assert_eq!(
        ecc.otel_names().collect::<Vec<_>>(),
        ["hw.errors", "gpulse.gpu.ecc.errors.aggregate"]
    );
}
