//! The event log as OTLP log records: one record per `gpulse.event/v1` event, sent with the
//! same transport, endpoint rules, headers, compression, TLS, deadline and resource as the
//! metrics push, and handed back acknowledged or not (the outbox in `evidence` moves its
//! cursor only on `Ok`).
//!
//! Mapping: `time_unix_nano` is the event's own time, `observed_time_unix_nano` when gpulse
//! recorded it, `severity_number`/`severity_text` from its severity (INFO 9, WARN 13,
//! ERROR 17), `event_name` `gpulse.<kind>`, the body its sentence (a score report's JSON as
//! text), and the attributes `gpulse.event.seq`, `gpulse.event.kind` plus the event's own.
//!
//! The SDK builds log records only through a logger: a logger provider without processors
//! hands out the records, which are exported directly with `LogBatch` (the SDK's own simple
//! processor does the same), so the export's result is ours to see.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry_otlp::{LogExporter, RetryPolicy, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::logs::{
    LogBatch, LogExporter as _, SdkLogRecord, SdkLogger, SdkLoggerProvider,
};

use super::failure::Verdict;
use super::{
    AgentIdentity, OtlpProtocol, OtlpSettings, OtlpStartError, failure_of, resource, with_grpc,
    with_http,
};
use crate::export::json::{AttrV1, EventV1};
use crate::export::{ExportFailure, ExportStats};
use crate::model::{EventKind, EventSeverity};

/// The exporter's name in `gpulse_exports_total` and `gpulse_export_failures_total`.
pub const EXPORTER: &str = "otlp_logs";

/// Sends batches of events as log records.
pub struct OtlpLogs {
    exporter: LogExporter,
    logger: SdkLogger,
    /// Keeps the logger's provider alive; it has no processor: nothing is emitted through it.
    _provider: SdkLoggerProvider,
    scope: InstrumentationScope,
    stats: Arc<ExportStats>,
    timeout: Duration,
    endpoint: String,
    verdict: Verdict,
}

impl std::fmt::Debug for OtlpLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpLogs")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl OtlpLogs {
    /// Builds the exporter for `settings.logs_endpoint`. Must run inside a tokio runtime.
    pub fn start(
        settings: &OtlpSettings,
        identity: &AgentIdentity,
        mode: &'static str,
        stats: Arc<ExportStats>,
    ) -> Result<Self, OtlpStartError> {
        let verdict = Verdict::default();
        let endpoint = settings.logs_endpoint.as_str();
        let built = match settings.protocol {
            // The outbox retries, with its own bounded backoff, and counts every attempt: the
            // SDK's own retries (3, up to 1.6 s apart) would hide failures inside one export.
            OtlpProtocol::Grpc => {
                with_grpc(LogExporter::builder().with_tonic(), settings, endpoint)?
                    .with_retry_policy(RetryPolicy::disabled())
                    .build()
            }
            OtlpProtocol::HttpProtobuf => with_http(
                LogExporter::builder().with_http(),
                settings,
                endpoint,
                &verdict,
            )?
            .with_retry_policy(RetryPolicy::disabled())
            .build(),
        };
        let mut exporter = built.map_err(|e| OtlpStartError(e.to_string()))?;
        let resource = resource(identity, mode);
        exporter.set_resource(&resource);
        let provider = SdkLoggerProvider::builder().with_resource(resource).build();
        let scope = InstrumentationScope::builder("gpulse")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let logger = provider.logger_with_scope(scope.clone());
        Ok(Self {
            exporter,
            logger,
            _provider: provider,
            scope,
            stats,
            timeout: settings.timeout,
            endpoint: settings.logs_endpoint.clone(),
            verdict,
        })
    }

    /// Exports `events` as one request; `Ok` once the collector acknowledged it. Bounded by
    /// `otlp.timeout`; every attempt is counted, a failure logged once per change of state.
    pub async fn export(&self, events: &[EventV1]) -> Result<(), ExportFailure> {
        let records: Vec<SdkLogRecord> = events.iter().map(|e| self.record(e)).collect();
        let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            records.iter().map(|r| (r, &self.scope)).collect();
        // A verdict left by an earlier request is not this one's.
        let _ = self.verdict.take();
        let sent = tokio::time::timeout(self.timeout, self.exporter.export(LogBatch::new(&pairs)))
            .await
            .unwrap_or(Err(OTelSdkError::Timeout(self.timeout)));
        let result = sent.map_err(|e| failure_of(&e, &self.verdict, &self.endpoint));
        self.stats.record_with(
            EXPORTER,
            result.clone(),
            "Event export failing; the events wait in the outbox and are sent again.",
        );
        result
    }

    /// One event as a log record.
    fn record(&self, event: &EventV1) -> SdkLogRecord {
        let mut record = self.logger.create_log_record();
        let time = |text: &str| humantime::parse_rfc3339(text).ok();
        let observed = time(&event.observed_time);
        if let Some(t) = time(&event.time).or(observed) {
            record.set_timestamp(t);
        }
        record.set_observed_timestamp(observed.unwrap_or_else(SystemTime::now));
        let severity = EventSeverity::parse(&event.severity).unwrap_or(EventSeverity::Info);
        record.set_severity_number(match severity {
            EventSeverity::Info => Severity::Info,
            EventSeverity::Warn => Severity::Warn,
            EventSeverity::Error => Severity::Error,
        });
        record.set_severity_text(severity.otel_text());
        if let Some(kind) = EventKind::parse(&event.kind) {
            record.set_event_name(kind.event_name());
        }
        record.set_body(AnyValue::from(event.body_text()));
        record.add_attribute(
            "gpulse.event.seq",
            i64::try_from(event.seq).unwrap_or(i64::MAX),
        );
        record.add_attribute("gpulse.event.kind", event.kind.clone());
        for (key, value) in &event.attributes {
            record.add_attribute(key.clone(), any(value));
        }
        record
    }
}

fn any(value: &AttrV1) -> AnyValue {
    match value {
        AttrV1::Bool(b) => AnyValue::Boolean(*b),
        AttrV1::Int(i) => AnyValue::Int(*i),
        AttrV1::Double(d) => AnyValue::Double(*d),
        AttrV1::Str(s) => AnyValue::from(s.clone()),
        AttrV1::List(items) => AnyValue::ListAny(Box::new(
            items.iter().map(|s| AnyValue::from(s.clone())).collect(),
        )),
    }
}
