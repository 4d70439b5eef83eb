//! Exporters: they read [`crate::store::Snapshot`]s and never call collectors.
//!
//! * `catalog`: every metric family, named once (Prometheus and OpenTelemetry spellings, unit,
//!   help, labels, and how its series are read from a snapshot); both exporters walk it.
//! * `prometheus`: renders `/metrics` (Prometheus text or OpenMetrics) from the catalog;
//!   `prometheus::dcgm` holds the dcgm-exporter-compatible `DCGM_FI_*` families it adds when
//!   `[prometheus] dcgm_compat` is on.
//! * `json`: the versioned JSON DTOs of `/v1/*` (model types are never serialized directly).
//! * `api`: the axum router and our hyper accept loop with their bounds (timeouts,
//!   concurrency, body size, connections); `api::tls` (rustls from PEM files), `api::auth`
//!   (bearer token) and `api::reload` (both reloaded on SIGHUP and file change).
//! * `otlp`: the OTLP push (gRPC or HTTP/protobuf), one observable per catalog OTel name.

pub mod api;
pub mod catalog;
pub mod json;
pub mod otlp;
pub mod prometheus;

pub use prometheus::dcgm;

use std::sync::Mutex;

/// Push counters per exporter, shared between the pushing exporter (writer) and /metrics and
/// OTLP (readers). Logging happens here, once per state change (failing ↔ ok).
#[derive(Debug, Default)]
pub struct ExportStats {
    exporters: Mutex<Vec<ExporterCounts>>,
}

#[derive(Debug)]
struct ExporterCounts {
    name: &'static str,
    pushes: u64,
    failures: u64,
    failing: bool,
}

impl ExportStats {
    /// Records one push of `exporter`.
    pub fn record(&self, exporter: &'static str, result: Result<(), String>) {
        let mut all = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        let index = match all.iter().position(|e| e.name == exporter) {
            Some(i) => i,
            None => {
                all.push(ExporterCounts {
                    name: exporter,
                    pushes: 0,
                    failures: 0,
                    failing: false,
                });
                all.len() - 1
            }
        };
        let counts = &mut all[index];
        counts.pushes += 1;
        match result {
            Ok(()) => {
                if counts.failing {
                    tracing::info!(exporter, "Export recovered.");
                }
                counts.failing = false;
            }
            Err(error) => {
                counts.failures += 1;
                if !counts.failing {
                    tracing::warn!(exporter, error = %error, "Export failing; data of failed pushes is dropped.");
                }
                counts.failing = true;
            }
        }
    }

    /// `(exporter, pushes, failures)` for every exporter that has pushed.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, u64)> {
        let all = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().map(|e| (e.name, e.pushes, e.failures)).collect()
    }
}
