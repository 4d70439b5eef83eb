//! OTLP metrics push (gRPC or HTTP/protobuf) with OpenTelemetry `hw.gpu.*` / `system.*` names.
//!
//! Settings come from `[otlp]`, then the standard `OTEL_*` variables, then OpenTelemetry's
//! defaults ([`OtlpSettings::resolve`], a pure function). Instruments are observable: their
//! callbacks read the store's latest snapshot at export time, so the push never calls a
//! collector and holds no data of its own beyond the SDK's per-series state, which is bounded
//! by the series count whether or not the collector answers.
//!
//! Every push is bounded end to end by `timeout`, at two depths. The HTTP client
//! (`http.rs`) bounds each request, its answer's body included (the SDK's blocking client
//! bounded each read only, so a collector trickling its answer held a push forever), and the
//! counting exporter puts a deadline of `timeout` on the whole export (retries included), so
//! no transport can hold the SDK's one reader thread past it. A push past the deadline is a
//! failed push: counted in [`ExportStats`] (exported as
//! `gpulse_export_failures_total{exporter="otlp"}`), logged when the state changes, and the
//! data of that interval is dropped (no unbounded retry queue); the next push goes out on
//! schedule.
//!
//! A failed push says why: `failure.rs` classifies it (refused, DNS, TLS, timeout, an error
//! status with the start of the answer, …) into `gpulse_export_failures_total{reason}` and one
//! log line per change of state naming the endpoint and the cause. `https://` endpoints trust
//! the built-in Mozilla roots plus `otlp.ca_file` (`OTEL_EXPORTER_OTLP_CERTIFICATE`), over
//! either transport.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{
    Compression, MetricExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

use super::{ExportFailure, ExportStats, FailureReason};
use crate::config::files::{DevNull, read_small_file};
use crate::store::{Snapshot, Store};
use failure::Verdict;
use instruments::Source;

mod failure;
// The node condition's PATCH classifies its failures the same way.
pub(crate) use failure::{classify_error, status_cause};
mod http;
mod instruments;
pub mod logs;

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

/// A running OTLP push; [`OtlpPush::shutdown`] flushes and stops it.
pub struct OtlpPush {
    provider: SdkMeterProvider,
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
    /// Builds the exporter and registers the instruments. Must run inside a tokio runtime
    /// (the gRPC client needs one). The first push happens one `interval` later.
    pub fn start(
        settings: &OtlpSettings,
        identity: &AgentIdentity,
        store: Arc<Store>,
        stats: Arc<ExportStats>,
    ) -> Result<Self, OtlpStartError> {
        let verdict = Verdict::default();
        let exporter = build_exporter(settings, &verdict)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| OtlpStartError(format!("no tokio runtime: {e}")))?;
        let exporter = CountingExporter {
            inner: exporter,
            stats: Arc::clone(&stats),
            runtime,
            timeout: settings.timeout,
            endpoint: settings.endpoint.clone(),
            verdict,
        };
        let reader = PeriodicReader::builder(exporter)
            .with_interval(settings.interval)
            .build();
        let mode = store.snapshot().mode.mode.as_str();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource(identity, mode))
            .with_reader(reader)
            .build();
        let source: Source = Arc::new(move || store.snapshot());
        instruments::register(
            &provider.meter("gpulse"),
            &source,
            &stats,
            identity.gpu_source,
        );
        Ok(Self { provider })
    }

    /// Pushes now; blocking (call from a blocking thread). Errors are already counted.
    pub fn flush(&self) -> OTelSdkResult {
        self.provider.force_flush()
    }

    /// Flushes what is left and stops the reader thread; blocking.
    pub fn shutdown(self) -> OTelSdkResult {
        self.provider.shutdown()
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

/// The gRPC settings (endpoint, deadline, headers as metadata, gzip, TLS) on any signal's
/// exporter builder, so metrics and logs travel alike.
fn with_grpc<B: WithTonicConfig + WithExportConfig>(
    builder: B,
    settings: &OtlpSettings,
    endpoint: &str,
) -> Result<B, OtlpStartError> {
    let mut headers = axum::http::HeaderMap::new();
    for (k, v) in &settings.headers {
        let name = axum::http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| OtlpStartError(format!("header name {k:?}: {e}")))?;
        let value = axum::http::HeaderValue::from_str(v)
            .map_err(|e| OtlpStartError(format!("header {k:?}: {e}")))?;
        headers.insert(name, value);
    }
    let mut builder = builder
        .with_endpoint(endpoint.to_owned())
        .with_timeout(settings.timeout)
        .with_metadata(
            opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers),
        );
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

fn build_exporter(
    settings: &OtlpSettings,
    verdict: &Verdict,
) -> Result<MetricExporter, OtlpStartError> {
    let endpoint = settings.endpoint.as_str();
    let built = match settings.protocol {
        OtlpProtocol::Grpc => {
            with_grpc(MetricExporter::builder().with_tonic(), settings, endpoint)?
                .with_temporality(settings.temporality)
                .build()
        }
        OtlpProtocol::HttpProtobuf => with_http(
            MetricExporter::builder().with_http(),
            settings,
            endpoint,
            verdict,
        )?
        .with_temporality(settings.temporality)
        .build(),
    };
    built.map_err(|e| OtlpStartError(e.to_string()))
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

/// Wraps the real exporter to count pushes and failures, log state changes, and bound each
/// export by `timeout`.
#[derive(Debug)]
struct CountingExporter {
    inner: MetricExporter,
    stats: Arc<ExportStats>,
    /// Runs the deadline's timer: the SDK polls `export` on its own thread, outside tokio.
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    /// For the log line: where the pushes go.
    endpoint: String,
    /// The HTTP client's verdict on its last request (unused over gRPC).
    verdict: Verdict,
}

impl PushMetricExporter for CountingExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        // A verdict left by a request of an earlier export is not this export's.
        let _ = self.verdict.take();
        // The SDK's reader waits for each export on its only thread and enforces no timeout
        // itself: an export that never ends stops every later push. Past the deadline the
        // export is dropped (its request cancelled) and counted as a failure.
        let result = within(&self.runtime, self.timeout, self.inner.export(metrics))
            .await
            .unwrap_or(Err(OTelSdkError::Timeout(self.timeout)));
        let recorded = match &result {
            Ok(()) => Ok(()),
            Err(error) => Err(self.failure(error)),
        };
        self.stats.record("otlp", recorded);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

impl CountingExporter {
    fn failure(&self, error: &OTelSdkError) -> ExportFailure {
        failure_of(error, &self.verdict, &self.endpoint)
    }
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

/// `work`'s output, or `None` when `limit` passed first. The timer is a task on `runtime`, so
/// this works from any executor (the SDK's reader uses `futures_executor::block_on`); a
/// runtime that is gone counts as the deadline passed. `work` must not block in `poll`
/// (a blocking call could not be cut short), which is why the HTTP client is async.
async fn within<F: Future>(
    runtime: &tokio::runtime::Handle,
    limit: Duration,
    work: F,
) -> Option<F::Output> {
    // The sleep is made inside the task: a tokio timer needs the runtime's context to exist.
    let mut timer = runtime.spawn(async move { tokio::time::sleep(limit).await });
    let mut work = std::pin::pin!(work);
    let out = std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match Pin::new(&mut timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    timer.abort();
    out
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
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let exporter = TextExporter(Arc::clone(&lines));
    let provider = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();
    let snapshot = Arc::new(snapshot);
    let source: Source = Arc::new(move || Arc::clone(&snapshot));
    instruments::register(&provider.meter("gpulse"), &source, &stats, gpu_source);
    if let Err(e) = provider.force_flush() {
        return format!("flush failed: {e}");
    }
    let _ = provider.shutdown();
    let mut lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|p| p.into_inner()));
    lines.sort();
    lines.dedup();
    lines.join("\n") + "\n"
}

#[derive(Debug)]
struct TextExporter(Arc<std::sync::Mutex<Vec<String>>>);

impl PushMetricExporter for TextExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        fn attrs<'a>(kvs: impl Iterator<Item = &'a KeyValue>) -> String {
            // Values as text: the wire does not tell owned from static strings.
            let mut kvs: Vec<String> = kvs
                .map(|kv| match &kv.value {
                    opentelemetry::Value::String(s) => format!("{}={:?}", kv.key, s.as_str()),
                    opentelemetry::Value::I64(i) => format!("{}={i}", kv.key),
                    other => format!("{}={other:?}", kv.key),
                })
                .collect();
            kvs.sort();
            kvs.join(",")
        }
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for scope in metrics.scope_metrics() {
            for m in scope.metrics() {
                let head = format!("{} [{}]", m.name(), m.unit());
                match m.data() {
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                        for p in g.data_points() {
                            out.push(format!(
                                "{head} gauge {{{}}} {:?}",
                                attrs(p.attributes()),
                                p.value()
                            ));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Sum(s)) => {
                        let kind = if s.is_monotonic() {
                            "counter"
                        } else {
                            "updown"
                        };
                        for p in s.data_points() {
                            out.push(format!(
                                "{head} {kind} {{{}}} {:?}",
                                attrs(p.attributes()),
                                p.value()
                            ));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            let bounds: Vec<f64> = p.bounds().collect();
                            let counts: Vec<u64> = p.bucket_counts().collect();
                            out.push(format!(
                                "{head} histogram {{{}}} count={} sum={:?} bounds={bounds:?} counts={counts:?}",
                                attrs(p.attributes()),
                                p.count(),
                                p.sum()
                            ));
                        }
                    }
                    _ => out.push(format!("{head} unexpected data type")),
                }
            }
        }
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_export_that_never_ends_is_given_up_at_the_deadline() {
        let runtime = tokio::runtime::Handle::current();
        let started = std::time::Instant::now();
        let out = within(
            &runtime,
            Duration::from_millis(100),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(out, None);
        assert!(started.elapsed() < Duration::from_secs(5));
        let out = within(&runtime, Duration::from_secs(60), async { 7 }).await;
        assert_eq!(out, Some(7));
    }

    #[test]
    fn the_deadline_holds_for_a_caller_outside_tokio() {
        // The SDK's reader polls `export` on a plain thread (`futures_executor::block_on`);
        // here a plain thread parks until woken, as that executor does.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let fut = within(
                &handle,
                Duration::from_millis(100),
                std::future::pending::<()>(),
            );
            let mut fut = std::pin::pin!(fut);
            let thread = std::thread::current();
            let waker = std::task::Waker::from(Arc::new(Unpark(thread)));
            let mut cx = std::task::Context::from_waker(&waker);
            loop {
                if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    let _ = tx.send(out);
                    return;
                }
                std::thread::park();
            }
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(None));
    }

    struct Unpark(std::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
}
