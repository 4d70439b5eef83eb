//! OTLP metrics push (gRPC or HTTP/protobuf) with OpenTelemetry `hw.gpu.*` / `system.*` names.
//!
//! Settings come from `[otlp]`, then the standard `OTEL_*` variables, then OpenTelemetry's
//! defaults ([`OtlpSettings::resolve`], a pure function). Instruments are observable: their
//! callbacks read the store's latest snapshot at export time, so the push never calls a
//! collector and holds no data of its own beyond the SDK's per-series state, which is bounded
//! by the series count whether or not the collector answers.
//!
//! Every push is bounded by `timeout`; a failed push is counted in [`ExportStats`] (exported as
//! `gpulse_export_failures_total{exporter="otlp"}`), logged when the state changes, and the
//! data of that interval is dropped (no unbounded retry queue).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{
    Compression, MetricExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

use super::ExportStats;
use crate::config::{ConfigError, HumanDuration, OtlpConfig};
use crate::store::{Snapshot, Store};
use instruments::Source;

mod instruments;

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Fully resolved push settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// Exactly what the exporter is given (for HTTP, including `/v1/metrics`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub interval: Duration,
    pub timeout: Duration,
    pub headers: BTreeMap<String, String>,
    pub gzip: bool,
    pub temporality: Temporality,
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtlpSettings {
    /// Resolves `[otlp]` over the `OTEL_*` variables (read through `env`). `Ok(None)` when no
    /// endpoint is configured anywhere: push is off. Errors name the key or variable at fault.
    pub fn resolve(
        config: &OtlpConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let fail = |key: &str, origin: String, message: String| ConfigError {
            key: Some(key.to_owned()),
            origin,
            message,
        };
        let from_config = |key: &str| format!("[otlp] {key} (configuration)");

        let protocol_text = non_empty(&config.protocol)
            .map(|p| (p, from_config("protocol")))
            .or_else(|| {
                [
                    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                ]
                .iter()
                .find_map(|v| env(v).map(|p| (p, format!("{v} (environment)"))))
            });
        let protocol = match &protocol_text {
            None => OtlpProtocol::HttpProtobuf,
            Some((p, origin)) => match p.trim() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                other => {
                    return Err(fail(
                        "otlp.protocol",
                        origin.clone(),
                        format!(
                            "unsupported protocol {other:?}; use \"grpc\" or \"http/protobuf\""
                        ),
                    ));
                }
            },
        };

        // A signal-specific endpoint is used as is; a base endpoint gets the signal path.
        let endpoint = if let Some(e) = non_empty(&config.endpoint) {
            Some((e, true))
        } else if let Some(e) = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            Some((e, false))
        } else {
            env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| (e, true))
        };
        let Some((endpoint, is_base)) = endpoint else {
            return Ok(None);
        };
        let endpoint = endpoint.trim().to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(fail(
                "otlp.endpoint",
                from_config("endpoint"),
                format!("endpoint {endpoint:?} must start with http:// or https://"),
            ));
        }
        let endpoint = match protocol {
            OtlpProtocol::HttpProtobuf if is_base && !endpoint.ends_with("/v1/metrics") => {
                format!("{}/v1/metrics", endpoint.trim_end_matches('/'))
            }
            _ => endpoint,
        };

        let duration = |key: &str, configured: &str, vars: [&str; 1], default: Duration| {
            if let Some(text) = non_empty(configured) {
                return HumanDuration::parse(&text)
                    .map(|d| d.0)
                    .map_err(|m| fail(key, from_config(&key[5..]), m));
            }
            match vars.iter().find_map(|v| env(v).map(|t| (*v, t))) {
                Some((var, text)) => text
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        fail(
                            key,
                            format!("{var} (environment)"),
                            format!("expected a positive number of milliseconds, got {text:?}"),
                        )
                    }),
                None => Ok(default),
            }
        };
        let interval = duration(
            "otlp.interval",
            &config.interval,
            ["OTEL_METRIC_EXPORT_INTERVAL"],
            DEFAULT_INTERVAL,
        )?;
        let timeout = duration(
            "otlp.timeout",
            &config.timeout,
            ["OTEL_EXPORTER_OTLP_TIMEOUT"],
            DEFAULT_TIMEOUT,
        )?;

        let mut headers = BTreeMap::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        ] {
            if let Some(text) = env(var) {
                for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
                    let Some((k, v)) = pair.split_once('=') else {
                        return Err(fail(
                            "otlp.headers",
                            format!("{var} (environment)"),
                            format!("expected key=value pairs separated by commas, got {pair:?}"),
                        ));
                    };
                    headers.insert(percent_decode(k.trim()), percent_decode(v.trim()));
                }
            }
        }
        headers.extend(config.headers.clone());

        let compression = non_empty(&config.compression)
            .map(|c| (c, from_config("compression")))
            .or_else(|| {
                [
                    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
                    "OTEL_EXPORTER_OTLP_COMPRESSION",
                ]
                .iter()
                .find_map(|v| env(v).map(|c| (c, format!("{v} (environment)"))))
            });
        let gzip = match compression {
            None => false,
            Some((c, origin)) => match c.trim() {
                "gzip" => true,
                "none" => false,
                other => {
                    return Err(fail(
                        "otlp.compression",
                        origin,
                        format!("unsupported compression {other:?}; use \"gzip\" or \"none\""),
                    ));
                }
            },
        };

        let temporality = non_empty(&config.temporality)
            .map(|t| (t, from_config("temporality")))
            .or_else(|| {
                env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE").map(|t| {
                    (
                        t,
                        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE (environment)"
                            .to_owned(),
                    )
                })
            });
        let temporality = match temporality {
            None => Temporality::Cumulative,
            Some((t, origin)) => match t.trim().to_ascii_lowercase().as_str() {
                "cumulative" => Temporality::Cumulative,
                "delta" => Temporality::Delta,
                "lowmemory" => Temporality::LowMemory,
                other => {
                    return Err(fail(
                        "otlp.temporality",
                        origin,
                        format!(
                            "unsupported temporality {other:?}; use \"cumulative\" or \"delta\""
                        ),
                    ));
                }
            },
        };

        Ok(Some(Self {
            endpoint,
            protocol,
            interval,
            timeout,
            headers,
            gzip,
            temporality,
        }))
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Decodes `%XX` escapes, as the OTLP spec allows in `OTEL_EXPORTER_OTLP_HEADERS`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
pub struct OtlpStartError(String);

impl OtlpPush {
    /// Builds the exporter and registers the instruments. Must run inside a tokio runtime
    /// (the gRPC client needs one). The first push happens one `interval` later.
    pub fn start(
        settings: &OtlpSettings,
        identity: &AgentIdentity,
        store: Arc<Store>,
        stats: Arc<ExportStats>,
    ) -> Result<Self, OtlpStartError> {
        let exporter = build_exporter(settings)?;
        let exporter = CountingExporter {
            inner: exporter,
            stats: Arc::clone(&stats),
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

fn build_exporter(settings: &OtlpSettings) -> Result<MetricExporter, OtlpStartError> {
    let built = match settings.protocol {
        OtlpProtocol::Grpc => {
            let mut headers = axum::http::HeaderMap::new();
            for (k, v) in &settings.headers {
                let name = axum::http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| OtlpStartError(format!("header name {k:?}: {e}")))?;
                let value = axum::http::HeaderValue::from_str(v)
                    .map_err(|e| OtlpStartError(format!("header {k:?}: {e}")))?;
                headers.insert(name, value);
            }
            let mut builder = MetricExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(settings.timeout)
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers),
                )
                .with_temporality(settings.temporality);
            if settings.gzip {
                builder = builder.with_compression(Compression::Gzip);
            }
            builder.build()
        }
        OtlpProtocol::HttpProtobuf => {
            let mut builder = MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(settings.timeout)
                .with_headers(
                    settings
                        .headers
                        .clone()
                        .into_iter()
                        .collect::<HashMap<_, _>>(),
                )
                .with_temporality(settings.temporality);
            if settings.gzip {
                builder = builder.with_compression(Compression::Gzip);
            }
            builder.build()
        }
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

/// Wraps the real exporter to count pushes and failures and log state changes.
#[derive(Debug)]
struct CountingExporter {
    inner: MetricExporter,
    stats: Arc<ExportStats>,
}

impl PushMetricExporter for CountingExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.stats.record(
            "otlp",
            result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        );
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

    fn resolve(
        config: &OtlpConfig,
        vars: &[(&str, &str)],
    ) -> Result<Option<OtlpSettings>, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtlpSettings::resolve(config, |k| vars.get(k).cloned())
    }

    #[test]
    fn off_without_any_endpoint() {
        assert_eq!(resolve(&OtlpConfig::default(), &[]).unwrap(), None);
        assert_eq!(
            resolve(
                &OtlpConfig::default(),
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn the_standard_endpoint_variable_alone_turns_push_on_with_otel_defaults() {
        let s = resolve(
            &OtlpConfig::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/metrics");
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!((s.interval, s.timeout), (DEFAULT_INTERVAL, DEFAULT_TIMEOUT));
        assert_eq!(s.temporality, Temporality::Cumulative);
        assert!(!s.gzip && s.headers.is_empty());
    }

    #[test]
    fn environment_fills_what_the_file_leaves_empty() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "2500"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret,x-tenant=t1"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
        ];
        let s = resolve(&OtlpConfig::default(), &vars).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://base:4317", "gRPC endpoints get no path");
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.interval, Duration::from_millis(2500));
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert_eq!(s.headers["api-key"], "s=cret");
        assert_eq!(s.headers["x-tenant"], "t1");
        assert!(s.gzip);
        assert_eq!(s.temporality, Temporality::Delta);

        let mut config = OtlpConfig {
            endpoint: "http://file:4318".to_owned(),
            protocol: "http/protobuf".to_owned(),
            interval: "1s".to_owned(),
            compression: "none".to_owned(),
            temporality: "cumulative".to_owned(),
            ..OtlpConfig::default()
        };
        config
            .headers
            .insert("x-tenant".to_owned(), "from-file".to_owned());
        let s = resolve(&config, &vars).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://file:4318/v1/metrics");
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.headers["x-tenant"], "from-file");
        assert!(!s.gzip);
        assert_eq!(s.temporality, Temporality::Cumulative);
    }

    #[test]
    fn a_metrics_specific_endpoint_is_used_verbatim() {
        let s = resolve(
            &OtlpConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "http://m:9999/custom",
                ),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://m:9999/custom");
    }

    #[test]
    fn bad_values_name_their_origin() {
        let err = resolve(
            &OtlpConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.origin, "OTEL_EXPORTER_OTLP_PROTOCOL (environment)");
        assert!(err.message.contains("http/json"));
        let config = OtlpConfig {
            endpoint: "collector:4317".to_owned(),
            ..OtlpConfig::default()
        };
        let err = resolve(&config, &[]).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("otlp.endpoint"));
        let config = OtlpConfig {
            endpoint: "http://c".to_owned(),
            interval: "0s".to_owned(),
            ..OtlpConfig::default()
        };
        assert_eq!(
            resolve(&config, &[]).unwrap_err().key.as_deref(),
            Some("otlp.interval")
        );
        let err = resolve(
            &OtlpConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.origin, "OTEL_METRIC_EXPORT_INTERVAL (environment)");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Cc"), "a b,c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
