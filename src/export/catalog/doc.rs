//! `docs/metrics.md`, rendered from the catalog (a test in `tests/it/metrics_doc.rs` keeps the
//! file equal to [`markdown`]).

use std::fmt::Write as _;

use super::{DOMAINS, Family, Kind, OtlpHistogram};

/// The metrics reference: one table per domain, in `/metrics` order.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Metrics\n\n\
         <!-- Generated from src/export/catalog/ by export::catalog::markdown(); do not edit.\n     \
         Regenerate: GPULSE_BLESS=1 cargo test --test it metrics_doc -->\n\n\
         Every family gpulse exports, named once in `src/export/catalog/`. Prometheus names \
         are as `/metrics` shows them (counters end in `_total`; a histogram has `_bucket`, \
         `_sum` and `_count` series). GPU series carry `gpu` and `uuid` on /metrics, and \
         `hw.id`, `hw.name`, `hw.type`, `hw.model` and `gpulse.gpu.index` on OTLP; join \
         `gpulse_gpu_info` by `uuid` for the rest of a GPU's identity. A reading the device \
         does not support is absent, never 0. The dcgm-exporter names (`[prometheus] \
         dcgm_compat`) are listed in `src/export/prometheus/dcgm/table.rs` and docs/dcgm.md.\n",
    );
    for (domain, families) in DOMAINS {
        let _ = write!(
            out,
            "\n## {domain}\n\n\
             | Prometheus | Type | Labels | OpenTelemetry | OTel attributes | Unit | Help |\n\
             |---|---|---|---|---|---|---|\n"
        );
        for f in *families {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | `{}` | {} |",
                prom_name(f),
                kind(f),
                code_list(
                    f.scope
                        .prom_labels()
                        .iter()
                        .copied()
                        .chain(f.dims.iter().map(|d| d.prom))
                ),
                otel_name(f),
                code_list(
                    f.scope
                        .otel_attributes()
                        .iter()
                        .copied()
                        .chain(f.dims.iter().map(|d| d.otel))
                ),
                f.unit,
                f.help.replace('|', "\\|"),
            );
        }
    }
    out
}

fn prom_name(f: &Family) -> String {
    match f.kind {
        Kind::Counter => format!("{}_total", f.prom),
        _ => f.prom.to_owned(),
    }
}

fn kind(f: &Family) -> &'static str {
    match f.kind {
        Kind::Gauge => "gauge",
        Kind::Counter => "counter",
        Kind::UpDownCounter => "gauge (OTLP: up-down counter)",
        Kind::Histogram(_) => "histogram",
    }
}

fn otel_name(f: &Family) -> String {
    let name = match f.kind {
        Kind::Histogram(OtlpHistogram::SumCount { .. }) => {
            format!("`{0}.sum`, `{0}.count` (counters)", f.otel)
        }
        Kind::Histogram(OtlpHistogram::LastValue) => {
            format!("`{}` (gauge: the last observation)", f.otel)
        }
        Kind::Histogram(OtlpHistogram::Recorded { .. }) => {
            format!(
                "`{}` (histogram of the runs that ended while this agent ran)",
                f.otel
            )
        }
        _ => format!("`{}`", f.otel),
    };
    let consts: Vec<String> = f
        .otel_const
        .iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect();
    let mut out = if consts.is_empty() {
        name
    } else {
        format!("{name} with {}", consts.join(", "))
    };
    for d in f.dims {
        for split in d.otel_split {
            let to = split
                .otel
                .map_or_else(|| "not sent".to_owned(), |n| format!("`{n}`"));
            let _ = write!(out, "; `{}=\"{}\"`: {to}", d.prom, split.value);
        }
    }
    out
}

fn code_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names
        .filter(|n| !n.is_empty())
        .map(|n| format!("`{n}`"))
        .collect();
    if names.is_empty() {
        "—".to_owned()
    } else {
        names.join(", ")
    }
}
