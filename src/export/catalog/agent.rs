//! The agent's own families: export counters, build info, the Akash lease, collector health.

use super::{Ctx, Dim, Family, Kind, Scope, Series, Val, dim, flag, unix_seconds};
use crate::model::CollectorStatus;

const NONE: &[Dim] = &[];

/// A per-collector family. The reading goes through the series function's only free input,
/// so each row is its own `fn` item (a const table cannot hold closures over data).
macro_rules! collector_series {
    ($value:expr) => {{
        fn series<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
            let value: fn(&CollectorStatus) -> Option<f64> = $value;
            for status in &c.snap.collectors {
                s.named(status.name, value(status));
            }
        }
        series
    }};
}

/// Exports first: /metrics has always rendered them before the snapshot's families.
pub const FAMILIES: &[Family] = &[
    Family {
        prom: "gpulse_exports",
        otel: "gpulse.exports",
        otel_const: &[],
        unit: "{push}",
        help: "Pushes attempted per exporter.",
        kind: Kind::Counter,
        scope: Scope::Exporter,
        dims: NONE,
        series: |c, s| {
            for t in c.exports {
                s.named(t.name, Some(t.pushes as f64));
            }
        },
    },
    Family {
        prom: "gpulse_export_failures",
        otel: "gpulse.export.failures",
        otel_const: &[],
        unit: "{push}",
        help: "Pushes that failed per exporter and reason (refused, dns, tls, timeout, status, connection, other); otlp's data is dropped, not queued; otlp_logs' events wait in the event log and are sent again.",
        kind: Kind::Counter,
        scope: Scope::Exporter,
        // `error.type` is OpenTelemetry's attribute for a failure's class.
        dims: &[dim("reason", "error.type")],
        series: |c, s| {
            for t in c.exports {
                for (reason, n) in &t.failures {
                    s.named_with(t.name, [Val::Str(reason.as_str())], Some(*n as f64));
                }
            }
        },
    },
    Family {
        prom: "gpulse_build_info",
        otel: "gpulse.build.info",
        otel_const: &[],
        unit: "1",
        help: "Always 1; labels carry the gpulse version, where GPU data comes from and where gpulse runs (mode: embedded, sidecar, host).",
        kind: Kind::Gauge,
        scope: Scope::Node,
        // os and arch are on /metrics only: the OTLP resource describes the host.
        dims: &[
            dim("version", "gpulse.version"),
            dim("gpu_source", "gpulse.gpu_source"),
            dim("os", ""),
            dim("arch", ""),
            dim("mode", "gpulse.mode"),
        ],
        series: |c, s| {
            s.node(
                [
                    Val::Str(c.build.version),
                    Val::Str(c.build.gpu_source),
                    Val::Str(std::env::consts::OS),
                    Val::Str(std::env::consts::ARCH),
                    Val::Str(c.snap.mode.mode.as_str()),
                ],
                Some(1.0),
            )
        },
    },
    Family {
        prom: "gpulse_akash_info",
        otel: "gpulse.akash.info",
        otel_const: &[],
        unit: "1",
        help: "Always 1 inside an Akash lease (absent elsewhere); labels carry the lease from the variables the provider injects (an unset one is empty).",
        kind: Kind::Gauge,
        scope: Scope::Node,
        dims: &[
            dim("owner", "akash.owner"),
            dim("provider", "akash.provider"),
            dim("dseq", "akash.deployment.dseq"),
            dim("gseq", "akash.group.gseq"),
            dim("oseq", "akash.order.oseq"),
            dim("cluster_public_hostname", "akash.cluster.public_hostname"),
        ],
        series: |c, s| {
            if let Some(a) = &c.snap.identity.akash {
                s.node(a.values().map(Val::Opt), Some(1.0));
            }
        },
    },
    collector(
        "gpulse_collector_success",
        "gpulse.collector.success",
        "1",
        "1 if the collector's last cycle produced a fresh sample, 0 if it failed or missed its deadline.",
        Kind::Gauge,
        collector_series!(|c| (c.runs > 0).then_some(flag(c.last_success))),
    ),
    collector(
        "gpulse_collector_stale",
        "gpulse.collector.stale",
        "1",
        "1 if the data served for this collector is from an earlier cycle because the last one failed.",
        Kind::Gauge,
        collector_series!(|c| Some(flag(c.is_stale()))),
    ),
    collector(
        "gpulse_collector_duration_seconds",
        "gpulse.collector.duration",
        "s",
        "How long the collector's last cycle took (capped at its deadline).",
        Kind::Gauge,
        collector_series!(|c| (c.runs > 0).then_some(c.last_duration.as_secs_f64())),
    ),
    collector(
        "gpulse_collector_interval_seconds",
        "gpulse.collector.interval",
        "s",
        "Configured time between the collector's cycles; metric values are as of its last cycle.",
        Kind::Gauge,
        collector_series!(|c| Some(c.interval.as_secs_f64())),
    ),
    collector(
        "gpulse_collector_last_success_timestamp_seconds",
        "gpulse.collector.last_success.timestamp",
        "s",
        "Unix time of the collector's last successful cycle.",
        Kind::Gauge,
        collector_series!(|c| c.last_success_at.map(unix_seconds)),
    ),
    collector(
        "gpulse_collector_runs",
        "gpulse.collector.runs",
        "{cycle}",
        "Collector cycles attempted.",
        Kind::Counter,
        collector_series!(|c| Some(c.runs as f64)),
    ),
    collector(
        "gpulse_collector_failures",
        "gpulse.collector.failures",
        "{cycle}",
        "Collector cycles that failed or missed their deadline.",
        Kind::Counter,
        collector_series!(|c| Some(c.failures as f64)),
    ),
];

plain_family!(collector, Scope::Collector);
