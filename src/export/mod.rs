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
//! * `node_condition`: the node's GPU health as a Kubernetes Node condition (PATCH
//!   `nodes/NODE/status`), off by default.

pub mod api;
pub mod catalog;
pub mod json;
pub mod node_condition;
pub mod otlp;
pub mod prometheus;

pub use prometheus::dcgm;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a push failed: a bounded label value (`reason` on /metrics, `error.type` on OTLP), so
/// a dashboard can tell a wrong address from a wrong credential without reading logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Nothing listens at the endpoint (connection refused).
    Refused,
    /// The host name does not resolve.
    Dns,
    /// The TLS handshake failed (unknown CA, wrong name, expired certificate).
    Tls,
    /// No complete answer within `otlp.timeout`.
    Timeout,
    /// The collector answered with an error status (HTTP 4xx/5xx, a gRPC error code).
    Status,
    /// Another connection failure (reset, unreachable network).
    Connection,
    /// Anything else (the exporter's own errors).
    Other,
}

impl FailureReason {
    /// Every reason, in the order /metrics lists them.
    pub const ALL: [Self; 7] = [
        Self::Refused,
        Self::Dns,
        Self::Tls,
        Self::Timeout,
        Self::Status,
        Self::Connection,
        Self::Other,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Status => "status",
            Self::Connection => "connection",
            Self::Other => "other",
        }
    }
}

/// One failed push: why (bounded), where to, and the cause in words (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFailure {
    pub reason: FailureReason,
    pub endpoint: String,
    pub cause: String,
}

/// Push counters per exporter, shared between the pushing exporter (writer) and /metrics and
/// OTLP (readers). Logging happens here, once per state change: ok → failing, a different
/// reason while failing, failing → ok.
#[derive(Debug, Default)]
pub struct ExportStats {
    exporters: Mutex<Vec<ExporterCounts>>,
    /// Bumped on every recorded push (under the lock, after the counts): /metrics keys its
    /// cached body on it, since the counters change without a new snapshot.
    generation: AtomicU64,
}

#[derive(Debug)]
struct ExporterCounts {
    name: &'static str,
    pushes: u64,
    /// Failures per [`FailureReason::ALL`] index.
    failures: [u64; FailureReason::ALL.len()],
    /// The reason of the current run of failures; `None` while pushes succeed.
    failing: Option<FailureReason>,
    last_failure: Option<ExportFailure>,
}

/// What an exporter has done so far, as /metrics and OTLP read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterTotals {
    pub name: &'static str,
    pub pushes: u64,
    /// Failures per reason, every reason listed (zeros too, so a rate has a series to start
    /// from), in [`FailureReason::ALL`] order.
    pub failures: Vec<(FailureReason, u64)>,
}

impl ExporterTotals {
    /// Failures of every reason together.
    pub fn failures_total(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }
}

impl ExportStats {
    /// Records one push of `exporter`.
    pub fn record(&self, exporter: &'static str, result: Result<(), ExportFailure>) {
        self.record_with(
            exporter,
            result,
            "Export failing; data of failed pushes is dropped.",
        );
    }

    /// Records one push of `exporter`; `failing` is the log line of a new failure state (what
    /// happens to the data).
    pub fn record_with(
        &self,
        exporter: &'static str,
        result: Result<(), ExportFailure>,
        failing: &'static str,
    ) {
        let mut all = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        let index = match all.iter().position(|e| e.name == exporter) {
            Some(i) => i,
            None => {
                all.push(ExporterCounts {
                    name: exporter,
                    pushes: 0,
                    failures: [0; FailureReason::ALL.len()],
                    failing: None,
                    last_failure: None,
                });
                all.len() - 1
            }
        };
        let counts = &mut all[index];
        counts.pushes += 1;
        match result {
            Ok(()) => {
                if counts.failing.take().is_some() {
                    tracing::info!(exporter, "Export recovered.");
                }
            }
            Err(failure) => {
                let slot = FailureReason::ALL
                    .iter()
                    .position(|r| *r == failure.reason)
                    .unwrap_or(FailureReason::ALL.len() - 1);
                counts.failures[slot] += 1;
                // A new cause is a new state: a refused connection that becomes a TLS error
                // (the collector came up with the wrong certificate) is worth a line.
                if counts.failing != Some(failure.reason) {
                    tracing::warn!(
                        exporter,
                        endpoint = %failure.endpoint,
                        reason = failure.reason.as_str(),
                        cause = %failure.cause,
                        "{failing}"
                    );
                }
                counts.failing = Some(failure.reason);
                counts.last_failure = Some(failure);
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes with every recorded push; read it before [`ExportStats::totals`], so what
    /// the totals show is at least as new as the generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// `(exporter, pushes, failures)` for every exporter that has pushed.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, u64)> {
        self.totals()
            .iter()
            .map(|t| (t.name, t.pushes, t.failures_total()))
            .collect()
    }

    /// Every exporter that has pushed, with its failures per reason.
    pub fn totals(&self) -> Vec<ExporterTotals> {
        let all = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .map(|e| ExporterTotals {
                name: e.name,
                pushes: e.pushes,
                failures: FailureReason::ALL.into_iter().zip(e.failures).collect(),
            })
            .collect()
    }

    /// The latest failure of `exporter` (kept after it recovers).
    pub fn last_failure(&self, exporter: &str) -> Option<ExportFailure> {
        let all = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .find(|e| e.name == exporter)
            .and_then(|e| e.last_failure.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn failure(reason: FailureReason, cause: &str) -> Result<(), ExportFailure> {
        Err(ExportFailure {
            reason,
            endpoint: "https://collector:4318/v1/metrics".to_owned(),
            cause: cause.to_owned(),
        })
    }

    #[test]
    fn failures_log_once_per_state_change_with_endpoint_and_cause() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let stats = ExportStats::default();
        tracing::subscriber::with_default(subscriber, || {
            stats.record(
                "otlp",
                failure(FailureReason::Refused, "connection refused"),
            );
            stats.record(
                "otlp",
                failure(FailureReason::Refused, "connection refused"),
            );
            stats.record("otlp", failure(FailureReason::Tls, "UnknownIssuer"));
            stats.record("otlp", Ok(()));
            stats.record("otlp", Ok(()));
        });
        let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert!(
            lines[0].contains("reason=\"refused\"")
                && lines[0].contains("connection refused")
                && lines[0].contains("https://collector:4318/v1/metrics"),
            "{log}"
        );
        assert!(
            lines[1].contains("reason=\"tls\"") && lines[1].contains("UnknownIssuer"),
            "{log}"
        );
        assert!(lines[2].contains("recovered"), "{log}");
        let totals = stats.totals();
        assert_eq!(totals[0].pushes, 5);
        assert_eq!(totals[0].failures_total(), 3);
        assert_eq!(totals[0].failures[0], (FailureReason::Refused, 2));
        assert_eq!(totals[0].failures[2], (FailureReason::Tls, 1));
        assert_eq!(stats.snapshot(), [("otlp", 5, 3)]);
    }
}
