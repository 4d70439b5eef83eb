//! OTLP metrics push (gRPC or HTTP/protobuf) with OpenTelemetry `hw.gpu.*` / `system.*` names.
//!
//! Settings come from `[otlp]`, then the standard `OTEL_*` variables, then OpenTelemetry's
//! defaults ([`OtlpSettings::resolve`], a pure function). Each push is one
//! `ExportMetricsServiceRequest` written straight from the metric catalog and the store's
//! latest snapshot (`batch.rs`), so the push never calls a collector and holds no data beyond
//! delta temporality's previous values; `push.rs` sends it on the agent's runtime with
//! opentelemetry-proto's gRPC client or the bounded HTTP client (`http.rs`).
//!
//! Every push is bounded end to end by `timeout`, retries included. A push past the deadline
//! is a failed push: counted in [`ExportStats`] (exported as
//! `gpulse_export_failures_total{exporter="otlp"}`), logged when the state changes, and the
//! data of that interval is dropped (no unbounded retry queue); the next push goes out on
//! schedule.
//!
//! A failed push says why: `failure.rs` classifies it (refused, DNS, TLS, timeout, an error
//! status with the start of the answer, …) into `gpulse_export_failures_total{reason}` and one
//! log line per change of state naming the endpoint and the cause. `https://` endpoints trust
//! the built-in Mozilla roots plus `otlp.ca_file` (`OTEL_EXPORTER_OTLP_CERTIFICATE`), over
//! either transport. The event log's OTLP logs (`logs.rs`) still go through
//! opentelemetry-otlp's exporters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    Compression, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;

use super::catalog::BuildInfo;
use super::{ExportFailure, ExportStats, FailureReason};
use crate::config::files::{DevNull, read_small_file};
use crate::store::{Snapshot, Store};
use failure::Verdict;

mod batch;
mod failure;
// The node condition's PATCH classifies its failures the same way.
pub(crate) use failure::{classify_error, status_cause};
mod http;
pub mod logs;
mod push;
mod wire;

pub use batch::{Batcher, request_for};

// The push settings moved to `config::otlp`; re-exported so callers keep their paths.
pub use crate::config::{OtlpProtocol, OtlpSettings};

/// Who this agent is, for the OTLP resource.
#[derive(Debug, Clone, Default)]
pub struct AgentIdentity {
    pub node_name: String,
    pub host_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `nvml` or `demo`.
    pub gpu_source: &'static str,
}

/// A running OTLP push; [`OtlpPush::shutdown`] pushes a last time and stops it.
pub struct OtlpPush {
    task: push::PushTask,
}

impl std::fmt::Debug for OtlpPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpPush")
    }
}

/// Why the push could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the OTLP exporter: {0}")]
pub struct OtlpStartError(pub(crate) String);

impl OtlpPush {
    /// Builds the transport and starts the push task. Must run inside a tokio runtime. The
    /// first push happens one `interval` later.
    pub fn start(
        settings: &OtlpSettings,
        identity: &AgentIdentity,
        store: Arc<Store>,
        stats: Arc<ExportStats>,
    ) -> Result<Self, OtlpStartError> {
        let transport = push::Transport::new(settings)?;
        let mode = store.snapshot().mode.mode.as_str();
        let build = BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            gpu_source: identity.gpu_source,
        };
        let batcher = batch::Batcher::new(
            batch::proto_resource(&resource(identity, mode)),
            build,
            settings.temporality,
            SystemTime::now(),
        );
        let task = push::PushTask::spawn(settings, batcher, transport, store, stats)?;
        Ok(Self { task })
    }

    /// Pushes now; blocking (call from a blocking thread). Errors are already counted.
    pub fn flush(&self) -> Result<(), String> {
        self.task.flush()
    }

    /// Pushes a last time and stops; blocking (call from a blocking thread).
    pub fn shutdown(self) -> Result<(), String> {
        self.task.shutdown()
    }
}

/// Checks `settings.ca_file` at load (a config error naming where it was set), so a bad CA
/// file stops `run` before the port is bound rather than turning the push off later.
pub fn check_ca_file(settings: &OtlpSettings) -> Result<(), crate::config::ConfigError> {
    if settings.ca_file.is_empty() {
        return Ok(());
    }
    crate::collect::probe::tls::install_crypto_provider();
    crate::collect::probe::tls::client_config(&settings.ca_file, false)
        .map(|_| ())
        .map_err(|message| crate::config::ConfigError {
            key: Some("otlp.ca_file".to_owned()),
            origin: settings.ca_file_origin.clone(),
            message,
        })
}

/// tonic's TLS settings for an `https://` gRPC endpoint: the Mozilla roots and the CA file.
fn grpc_tls(
    ca_file: &str,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, OtlpStartError> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let config = ClientTlsConfig::new().with_webpki_roots();
    if ca_file.is_empty() {
        return Ok(config);
    }
    let (pem, _) = read_small_file(std::path::Path::new(ca_file), DevNull::Refused)
        .map_err(|e| OtlpStartError(format!("{ca_file}: {e}")))?;
    Ok(config.ca_certificate(Certificate::from_pem(pem)))
}

/// `otlp.headers` as gRPC metadata (the metrics push and the log exporter send the same).
fn grpc_metadata(settings: &OtlpSettings) -> Result<tonic::metadata::MetadataMap, OtlpStartError> {
    let mut headers = axum::http::HeaderMap::new();
    for (k, v) in &settings.headers {
        let name = axum::http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| OtlpStartError(format!("header name {k:?}: {e}")))?;
        let value = axum::http::HeaderValue::from_str(v)
            .map_err(|e| OtlpStartError(format!("header {k:?}: {e}")))?;
        headers.insert(name, value);
    }
    Ok(tonic::metadata::MetadataMap::from_headers(headers))
}

/// The gRPC settings (endpoint, deadline, headers as metadata, gzip, TLS) on any signal's
/// exporter builder, so metrics and logs travel alike.
fn with_grpc<B: WithTonicConfig + WithExportConfig>(
    builder: B,
    settings: &OtlpSettings,
    endpoint: &str,
) -> Result<B, OtlpStartError> {
    let mut builder = builder
        .with_endpoint(endpoint.to_owned())
        .with_timeout(settings.timeout)
        .with_metadata(grpc_metadata(settings)?);
    if settings.gzip {
        builder = builder.with_compression(Compression::Gzip);
    }
    if endpoint.starts_with("https://") {
        builder = builder.with_tls_config(grpc_tls(&settings.ca_file)?);
    }
    Ok(builder)
}

/// The HTTP/protobuf settings (the bounded client, endpoint, deadline, headers, gzip) on any
/// signal's exporter builder.
fn with_http<B: WithHttpConfig + WithExportConfig>(
    builder: B,
    settings: &OtlpSettings,
    endpoint: &str,
    verdict: &Verdict,
) -> Result<B, OtlpStartError> {
    let client = http::BoundedHttpClient::new(settings.timeout, &settings.ca_file, verdict.clone())
        .map_err(OtlpStartError)?;
    let mut builder = builder
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.to_owned())
        .with_timeout(settings.timeout)
        .with_headers(
            settings
                .headers
                .clone()
                .into_iter()
                .collect::<HashMap<_, _>>(),
        );
    if settings.gzip {
        builder = builder.with_compression(Compression::Gzip);
    }
    Ok(builder)
}

fn resource(identity: &AgentIdentity, mode: &'static str) -> Resource {
    // The default detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; attributes
    // added here override them, so `service.name` is only defaulted when the user set none.
    let user_named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let mut builder = Resource::builder();
    if !user_named {
        builder = builder.with_service_name("gpulse");
    }
    let mut attributes = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("host.name", identity.node_name.clone()),
        KeyValue::new("gpulse.gpu_source", identity.gpu_source),
        KeyValue::new("gpulse.mode", mode),
    ];
    if let Some(id) = &identity.host_id {
        attributes.push(KeyValue::new("host.id", id.clone()));
    }
    for (k, v) in &identity.labels {
        attributes.push(KeyValue::new(k.clone(), v.clone()));
    }
    builder.with_attributes(attributes).build()
}

/// Reads the machine id (systemd / dbus), the `host.id` OpenTelemetry suggests on Linux.
pub fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Why `error` happened: the HTTP client's verdict when it left one (typed, with the answer's
/// status and body), else the SDK's text (gRPC, the deadline).
fn failure_of(error: &OTelSdkError, verdict: &Verdict, endpoint: &str) -> ExportFailure {
    let (reason, cause) = match (error, verdict.take()) {
        (OTelSdkError::Timeout(limit), _) => (
            FailureReason::Timeout,
            format!("no complete answer within {limit:?}"),
        ),
        (_, Some(verdict)) => verdict,
        (error, None) => {
            let text = error.to_string();
            (failure::classify_text(&text), text)
        }
    };
    ExportFailure {
        reason,
        endpoint: endpoint.to_owned(),
        cause,
    }
}

// ---------------------------------------------------------------- a push, as text, for tests

/// What one push of `snapshot` carries, one sorted line per data point (name, unit, kind,
/// attributes, value; descriptions left out): `tests/data/otlp.golden` holds it, so a change
/// to any OTLP name, unit, attribute or value shows up as a diff. Not a runtime path.
#[doc(hidden)]
pub fn render_for_tests(
    snapshot: Snapshot,
    stats: Arc<ExportStats>,
    gpu_source: &'static str,
) -> String {
    batch::render_text(&batch::request_for(&snapshot, &stats, gpu_source))
}
