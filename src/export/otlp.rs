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
use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry_otlp::{
    Compression, MetricExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

use super::ExportStats;
use super::catalog::{GPU_SCALARS, exposed_name};
use crate::model::{GpuDevice, GpuSample, HostSample};
use crate::store::{Snapshot, Store};

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
        register_instruments(
            &provider.meter("gpulse"),
            &store,
            &stats,
            identity.gpu_source,
        );
        register_job_instruments(&provider.meter("gpulse"), &store);
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

// ---------------------------------------------------------------- instruments

type Emit<'a> = &'a mut dyn FnMut(f64, &[KeyValue]);

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

/// Registers one observable instrument whose callback reads the latest snapshot.
fn observe(
    meter: &Meter,
    store: &Arc<Store>,
    kind: Kind,
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    emit: impl Fn(&Snapshot, Emit<'_>) + Send + Sync + 'static,
) {
    let store = Arc::clone(store);
    let callback = move |obs: &dyn AsyncInstrument<f64>| {
        let snap = store.snapshot();
        emit(&snap, &mut |v, attrs| obs.observe(v, attrs));
    };
    // Dropping the handle does not unregister the callback.
    match kind {
        Kind::Gauge => {
            meter
                .f64_observable_gauge(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(callback)
                .build();
        }
        Kind::Counter => {
            meter
                .f64_observable_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(callback)
                .build();
        }
    }
}

/// The attributes on every GPU data point: enough to tell GPUs apart and group by model.
/// The rest of the identity (vendor, driver, serial, VBIOS, PCI bus id) is on
/// `gpulse.gpu.info` only: repeating it on ~1000 points per push made each push several MiB
/// of attribute strings to build and encode.
fn gpu_attributes(d: &GpuDevice) -> Vec<KeyValue> {
    let id = &d.identity;
    vec![
        KeyValue::new("hw.id", id.uuid.clone()),
        KeyValue::new("hw.name", format!("gpu{}", id.index)),
        KeyValue::new("hw.type", "gpu"),
        KeyValue::new("hw.model", id.name.clone()),
        KeyValue::new("gpulse.gpu.index", i64::from(id.index)),
    ]
}

/// The full `hw.*` identity of a GPU, for `gpulse.gpu.info`.
fn gpu_identity_attributes(gpu: &GpuSample, d: &GpuDevice) -> Vec<KeyValue> {
    let id = &d.identity;
    let mut attrs = gpu_attributes(d);
    attrs.push(KeyValue::new("hw.vendor", "NVIDIA"));
    attrs.push(KeyValue::new(
        "gpulse.gpu.pci_bus_id",
        id.pci_bus_id.clone(),
    ));
    if let Some(v) = &gpu.driver_version {
        attrs.push(KeyValue::new("hw.driver_version", v.clone()));
    }
    if let Some(v) = &gpu.cuda_driver_version {
        attrs.push(KeyValue::new("gpulse.gpu.cuda_driver_version", v.clone()));
    }
    if let Some(v) = &id.serial {
        attrs.push(KeyValue::new("hw.serial_number", v.clone()));
    }
    if let Some(v) = &id.vbios_version {
        attrs.push(KeyValue::new("hw.firmware_version", v.clone()));
    }
    attrs
}

/// Emits `value(d)` for every GPU that is not lost.
fn per_gpu(snap: &Snapshot, emit: Emit<'_>, value: impl Fn(&GpuDevice) -> Option<f64>) {
    if let Some(gpu) = &snap.gpu {
        for d in gpu.devices.iter().filter(|d| !d.lost) {
            if let Some(v) = value(d) {
                emit(v, &gpu_attributes(d));
            }
        }
    }
}

/// Emits one value per labelled item of every GPU that is not lost.
fn per_gpu_items(
    snap: &Snapshot,
    emit: Emit<'_>,
    items: impl Fn(&GpuDevice) -> Vec<(Vec<KeyValue>, f64)>,
) {
    if let Some(gpu) = &snap.gpu {
        for d in gpu.devices.iter().filter(|d| !d.lost) {
            let base = gpu_attributes(d);
            for (extra, v) in items(d) {
                let mut attrs = base.clone();
                attrs.extend(extra);
                emit(v, &attrs);
            }
        }
    }
}

fn host(snap: &Snapshot, emit: Emit<'_>, value: impl Fn(&HostSample, Emit<'_>)) {
    if let Some(h) = &snap.host {
        value(h, emit);
    }
}

fn kv(k: &'static str, v: &str) -> KeyValue {
    KeyValue::new(k, v.to_owned())
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The Prometheus family (as exposed) each OTLP instrument carries, so tests can check that
/// every metric /metrics has is pushed too: the shared GPU scalars plus [`OTHER_MAPPINGS`].
pub fn prometheus_to_otlp() -> Vec<(String, &'static str)> {
    GPU_SCALARS
        .iter()
        .map(|row| (exposed_name(row), row.otlp))
        .chain(OTHER_MAPPINGS.iter().map(|(p, o)| ((*p).to_owned(), *o)))
        .collect()
}

/// Families outside the shared catalog, whose label shapes differ between the exporters.
const OTHER_MAPPINGS: &[(&str, &str)] = &[
    ("gpulse_collector_success", "gpulse.collector.success"),
    ("gpulse_collector_stale", "gpulse.collector.stale"),
    (
        "gpulse_collector_duration_seconds",
        "gpulse.collector.duration",
    ),
    (
        "gpulse_collector_interval_seconds",
        "gpulse.collector.interval",
    ),
    (
        "gpulse_collector_last_success_timestamp_seconds",
        "gpulse.collector.last_success.timestamp",
    ),
    ("gpulse_collector_runs_total", "gpulse.collector.runs"),
    (
        "gpulse_collector_failures_total",
        "gpulse.collector.failures",
    ),
    ("gpulse_export_failures_total", "gpulse.export.failures"),
    ("gpulse_exports_total", "gpulse.exports"),
    ("gpulse_build_info", "gpulse.build.info"),
    ("gpulse_node_health", "gpulse.node.health"),
    ("gpulse_probe_up", "gpulse.probe.up"),
    ("gpulse_probe_state", "gpulse.probe.state"),
    (
        "gpulse_probe_check_duration_seconds",
        "gpulse.probe.check.duration",
    ),
    ("gpulse_probe_outages_total", "gpulse.probe.outages"),
    (
        "gpulse_probe_last_recovery_seconds",
        "gpulse.probe.last_recovery",
    ),
    (
        "gpulse_probe_inference_requests_total",
        "gpulse.probe.inference.requests",
    ),
    (
        "gpulse_probe_inference_slo_violations_total",
        "gpulse.probe.inference.slo_violations",
    ),
    (
        "gpulse_probe_inference_slo_seconds",
        "gpulse.probe.inference.slo",
    ),
    (
        "gpulse_probe_inference_output_tokens_total",
        "gpulse.probe.inference.output_tokens",
    ),
    (
        "gpulse_probe_inference_success",
        "gpulse.probe.inference.success",
    ),
    (
        "gpulse_probe_inference_tokens_per_second",
        "gpulse.probe.inference.tokens_per_second",
    ),
    // Histograms in /metrics; OTLP observable instruments cannot be histograms, so the
    // push carries the last request's value (the counters above carry the rates).
    (
        "gpulse_probe_inference_time_to_first_token_seconds",
        "gpulse.probe.inference.time_to_first_token",
    ),
    (
        "gpulse_probe_inference_duration_seconds",
        "gpulse.probe.inference.duration",
    ),
    (
        "gpulse_probe_metrics_scrape_success",
        "gpulse.probe.metrics.scrape.success",
    ),
    (
        "gpulse_probe_metrics_scrape_failures_total",
        "gpulse.probe.metrics.scrape.failures",
    ),
    (
        "gpulse_server_requests_running",
        "gpulse.server.requests.running",
    ),
    (
        "gpulse_server_requests_waiting",
        "gpulse.server.requests.waiting",
    ),
    (
        "gpulse_server_requests_succeeded_total",
        "gpulse.server.requests.succeeded",
    ),
    (
        "gpulse_server_requests_failed_total",
        "gpulse.server.requests.failed",
    ),
    (
        "gpulse_server_prompt_tokens_total",
        "gpulse.server.tokens.prompt",
    ),
    (
        "gpulse_server_generation_tokens_total",
        "gpulse.server.tokens.generated",
    ),
    (
        "gpulse_server_kv_cache_usage_ratio",
        "gpulse.server.kv_cache.utilization",
    ),
    (
        "gpulse_server_preemptions_total",
        "gpulse.server.preemptions",
    ),
    // Server histograms travel as cumulative sum and count counters (`.sum`, `.count`), from
    // which a backend takes a windowed mean; the buckets stay on /metrics.
    (
        "gpulse_server_time_to_first_token_seconds",
        "gpulse.server.time_to_first_token.sum",
    ),
    (
        "gpulse_server_e2e_request_latency_seconds",
        "gpulse.server.e2e_request_latency.sum",
    ),
    (
        "gpulse_server_inter_token_latency_seconds",
        "gpulse.server.inter_token_latency.sum",
    ),
    ("gpulse_gpu_health", "gpulse.gpu.health"),
    ("gpulse_gpu_health_reason", "gpulse.gpu.health.reason"),
    ("gpulse_gpus", "gpulse.gpu.count"),
    ("gpulse_gpu_info", "gpulse.gpu.info"),
    ("gpulse_gpu_lost", "gpulse.gpu.lost"),
    ("gpulse_gpu_xid_errors_total", "gpulse.gpu.xid.errors"),
    (
        "gpulse_gpu_xid_last_seen_timestamp_seconds",
        "gpulse.gpu.xid.last_seen",
    ),
    ("gpulse_gpu_utilization_ratio", "hw.gpu.utilization"),
    ("gpulse_gpu_encoder_utilization_ratio", "hw.gpu.utilization"),
    ("gpulse_gpu_decoder_utilization_ratio", "hw.gpu.utilization"),
    ("gpulse_gpu_temperature_celsius", "gpulse.gpu.temperature"),
    (
        "gpulse_gpu_temperature_threshold_celsius",
        "gpulse.gpu.temperature.threshold",
    ),
    ("gpulse_gpu_clock_hertz", "gpulse.gpu.clock.frequency"),
    (
        "gpulse_gpu_clock_max_hertz",
        "gpulse.gpu.clock.max_frequency",
    ),
    ("gpulse_gpu_fan_speed_ratio", "gpulse.gpu.fan.speed"),
    ("gpulse_gpu_throttle_active", "gpulse.gpu.throttle.active"),
    (
        "gpulse_gpu_throttle_seconds_total",
        "gpulse.gpu.throttle.time",
    ),
    ("gpulse_gpu_ecc_errors_total", "hw.errors"),
    ("gpulse_gpu_retired_pages", "gpulse.gpu.retired_pages"),
    ("gpulse_gpu_remapped_rows", "gpulse.gpu.remapped_rows"),
    (
        "gpulse_gpu_pcie_throughput_bytes_per_second",
        "gpulse.gpu.pcie.throughput",
    ),
    ("gpulse_gpu_nvlink_active", "gpulse.gpu.nvlink.active"),
    ("gpulse_gpu_nvlink_errors_total", "gpulse.gpu.nvlink.errors"),
    (
        "gpulse_gpu_process_memory_used_bytes",
        "gpulse.gpu.process.memory.usage",
    ),
    (
        "gpulse_gpu_process_sm_utilization_ratio",
        "gpulse.gpu.process.sm.utilization",
    ),
    (
        "gpulse_gpu_process_memory_utilization_ratio",
        "gpulse.gpu.process.memory.utilization",
    ),
    (
        "gpulse_gpu_mig_memory_total_bytes",
        "gpulse.gpu.mig.memory.limit",
    ),
    (
        "gpulse_gpu_mig_memory_used_bytes",
        "gpulse.gpu.mig.memory.usage",
    ),
    (
        "gpulse_host_cpu_utilization_ratio",
        "system.cpu.utilization",
    ),
    (
        "gpulse_host_cpu_core_utilization_ratio",
        "system.cpu.utilization",
    ),
    ("gpulse_host_cpus", "system.cpu.logical.count"),
    ("gpulse_host_load_average", "gpulse.host.load_average"),
    ("gpulse_host_memory_total_bytes", "system.memory.limit"),
    (
        "gpulse_host_memory_available_bytes",
        "system.linux.memory.available",
    ),
    ("gpulse_host_memory_used_bytes", "system.memory.usage"),
    ("gpulse_host_swap_total_bytes", "gpulse.host.swap.limit"),
    ("gpulse_host_swap_used_bytes", "system.paging.usage"),
    (
        "gpulse_host_filesystem_size_bytes",
        "system.filesystem.limit",
    ),
    (
        "gpulse_host_filesystem_available_bytes",
        "system.filesystem.usage",
    ),
    (
        "gpulse_host_network_received_bytes_total",
        "system.network.io",
    ),
    (
        "gpulse_host_network_transmitted_bytes_total",
        "system.network.io",
    ),
    (
        "gpulse_host_network_received_packets_total",
        "system.network.packet.count",
    ),
    (
        "gpulse_host_network_transmitted_packets_total",
        "system.network.packet.count",
    ),
    (
        "gpulse_host_network_receive_errors_total",
        "system.network.errors",
    ),
    (
        "gpulse_host_network_transmit_errors_total",
        "system.network.errors",
    ),
    ("gpulse_host_uptime_seconds", "system.uptime"),
    ("gpulse_host_boot_time_seconds", "gpulse.host.boot_time"),
    // The wrapped job (`gpulse wrap`).
    ("gpulse_job_runs_total", "gpulse.job.runs"),
    ("gpulse_job_restarts_total", "gpulse.job.restarts"),
    ("gpulse_job_running", "gpulse.job.running"),
    ("gpulse_job_last_exit_code", "gpulse.job.last_exit_code"),
    ("gpulse_job_start_time_seconds", "gpulse.job.start_time"),
    ("gpulse_job_ready_seconds", "gpulse.job.ready"),
    ("gpulse_job_recovery_seconds", "gpulse.job.recovery"),
    ("gpulse_job_duration_seconds", "gpulse.job.duration"),
];

fn register_instruments(
    m: &Meter,
    s: &Arc<Store>,
    stats: &Arc<ExportStats>,
    gpu_source: &'static str,
) {
    register_agent_instruments(m, s, stats, gpu_source);
    register_gpu_instruments(m, s);
    register_host_instruments(m, s);
    register_health_instruments(m, s);
    register_probe_instruments(m, s);
    register_inference_instruments(m, s);
    register_server_instruments(m, s);
}

fn probe_attributes(p: &crate::model::ProbeStatus) -> Vec<KeyValue> {
    vec![
        KeyValue::new("gpulse.probe.name", p.name.clone()),
        KeyValue::new("gpulse.probe.kind", p.kind),
    ]
}

fn register_probe_instruments(m: &Meter, s: &Arc<Store>) {
    use crate::model::ProbeState;
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.probe.up",
        "1",
        "1 when the probe's last check found the server up.",
        |sn, e| {
            for p in sn.probes.iter() {
                if let Some(l) = &p.last {
                    e(flag(l.state == ProbeState::Up), &probe_attributes(p));
                }
            }
        },
    );
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.probe.state",
        "1",
        "1 for the probe's current state, 0 for the others (attribute gpulse.probe.state).",
        |sn, e| {
            for p in sn.probes.iter() {
                if let Some(l) = &p.last {
                    for state in ProbeState::ALL {
                        let mut attrs = probe_attributes(p);
                        attrs.push(kv("gpulse.probe.state", state.as_str()));
                        e(flag(state == l.state), &attrs);
                    }
                }
            }
        },
    );
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.probe.check.duration",
        "s",
        "How long the probe's last check took.",
        |sn, e| {
            for p in sn.probes.iter() {
                if let Some(l) = &p.last {
                    e(l.latency.as_secs_f64(), &probe_attributes(p));
                }
            }
        },
    );
    observe(
        m,
        s,
        Kind::Counter,
        "gpulse.probe.outages",
        "{outage}",
        "Outages (transitions to down) since the agent started.",
        |sn, e| {
            for p in sn.probes.iter() {
                e(p.outages_total as f64, &probe_attributes(p));
            }
        },
    );
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.probe.last_recovery",
        "s",
        "How long the probe's last finished outage lasted.",
        |sn, e| {
            for p in sn.probes.iter() {
                if let Some(d) = p.last_recovery {
                    e(d.as_secs_f64(), &probe_attributes(p));
                }
            }
        },
    );
}

/// Synthetic inference requests (the same families as `/metrics`; histograms as last values).
fn register_inference_instruments(m: &Meter, s: &Arc<Store>) {
    fn each(
        sn: &crate::store::Snapshot,
        mut f: impl FnMut(&crate::model::ProbeStatus, &crate::model::InferenceStats),
    ) {
        for p in sn.probes.iter() {
            if let Some(i) = &p.inference {
                f(p, i);
            }
        }
    }
    observe(
        m,
        s,
        Kind::Counter,
        "gpulse.probe.inference.requests",
        "{request}",
        "Synthetic inference requests by outcome (attribute gpulse.probe.inference.outcome).",
        |sn, e| {
            each(sn, |p, i| {
                for (outcome, n) in [("success", i.succeeded), ("failure", i.failed)] {
                    let mut attrs = probe_attributes(p);
                    attrs.push(kv("gpulse.probe.inference.outcome", outcome));
                    e(n as f64, &attrs);
                }
            });
        },
    );
    observe(
        m,
        s,
        Kind::Counter,
        "gpulse.probe.inference.slo_violations",
        "{request}",
        "Synthetic requests that failed or missed the probe's ttft_slo or latency_slo.",
        |sn, e| each(sn, |p, i| e(i.slo_violations as f64, &probe_attributes(p))),
    );
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.probe.inference.slo",
        "s",
        "The probe's latency objectives (attribute gpulse.probe.inference.target: ttft, e2e).",
        |sn, e| {
            each(sn, |p, i| {
                for (target, slo) in [("ttft", i.ttft_slo), ("e2e", i.latency_slo)] {
                    let mut attrs = probe_attributes(p);
                    attrs.push(kv("gpulse.probe.inference.target", target));
                    e(slo.as_secs_f64(), &attrs);
                }
            });
        },
    );
    observe(
        m,
        s,
        Kind::Counter,
        "gpulse.probe.inference.output_tokens",
        "{token}",
        "Tokens generated by successful synthetic requests.",
        |sn, e| {
            each(sn, |p, i| {
                e(i.output_tokens_total as f64, &probe_attributes(p))
            })
        },
    );
    let last =
        |sn: &crate::store::Snapshot,
         f: &mut dyn FnMut(&crate::model::ProbeStatus, &crate::model::InferenceSample)| {
            each(sn, |p, i| {
                if let Some(l) = &i.last {
                    f(p, l);
                }
            });
        };
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.probe.inference.success",
        "1",
        "1 when the last synthetic request got a complete, well-formed answer.",
        move |sn, e| last(sn, &mut |p, l| e(flag(l.ok), &probe_attributes(p))),
    );
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.probe.inference.tokens_per_second",
        "{token}/s",
        "Output tokens per second of the last successful synthetic request.",
        move |sn, e| {
            last(sn, &mut |p, l| {
                if let Some(t) = l.tokens_per_second() {
                    e(t, &probe_attributes(p));
                }
            })
        },
    );
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.probe.inference.time_to_first_token",
        "s",
        "Time to first token of the last successful synthetic request.",
        move |sn, e| {
            last(sn, &mut |p, l| {
                if let (true, Some(t)) = (l.ok, l.ttft) {
                    e(t.as_secs_f64(), &probe_attributes(p));
                }
            })
        },
    );
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.probe.inference.duration",
        "s",
        "End-to-end latency of the last successful synthetic request.",
        move |sn, e| {
            last(sn, &mut |p, l| {
                if l.ok {
                    e(l.duration.as_secs_f64(), &probe_attributes(p));
                }
            })
        },
    );
}

/// The server's own metrics, lifted (the same families as `/metrics`).
fn register_server_instruments(m: &Meter, s: &Arc<Store>) {
    use crate::model::{ServerHistogram, ServerMetrics};
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.probe.metrics.scrape.success",
        "1",
        "1 when the last scrape of the server's own /metrics succeeded.",
        |sn, e| {
            for p in sn.probes.iter() {
                if let Some(ok) = p.server.as_ref().and_then(|s| s.last_ok()) {
                    e(flag(ok), &probe_attributes(p));
                }
            }
        },
    );
    observe(
        m,
        s,
        Kind::Counter,
        "gpulse.probe.metrics.scrape.failures",
        "{scrape}",
        "Failed scrapes of the server's own /metrics.",
        |sn, e| {
            for p in sn.probes.iter() {
                if let Some(s) = &p.server {
                    e(s.failures as f64, &probe_attributes(p));
                }
            }
        },
    );
    type Field = fn(&ServerMetrics) -> Option<f64>;
    let scalars: [(Kind, &'static str, &'static str, &'static str, Field); 8] = [
        (
            Kind::Gauge,
            "gpulse.server.requests.running",
            "{request}",
            "Requests the server is processing now.",
            |m| m.requests_running,
        ),
        (
            Kind::Gauge,
            "gpulse.server.requests.waiting",
            "{request}",
            "Requests queued in the server.",
            |m| m.requests_waiting,
        ),
        (
            Kind::Counter,
            "gpulse.server.requests.succeeded",
            "{request}",
            "Requests the server finished successfully.",
            |m| m.requests_succeeded_total,
        ),
        (
            Kind::Counter,
            "gpulse.server.requests.failed",
            "{request}",
            "Requests that failed on the server's side.",
            |m| m.requests_failed_total,
        ),
        (
            Kind::Counter,
            "gpulse.server.tokens.prompt",
            "{token}",
            "Prompt tokens the server processed.",
            |m| m.prompt_tokens_total,
        ),
        (
            Kind::Counter,
            "gpulse.server.tokens.generated",
            "{token}",
            "Tokens the server generated.",
            |m| m.generation_tokens_total,
        ),
        (
            Kind::Gauge,
            "gpulse.server.kv_cache.utilization",
            "1",
            "KV-cache use of the server, 0 to 1.",
            |m| m.kv_cache_usage_ratio,
        ),
        (
            Kind::Counter,
            "gpulse.server.preemptions",
            "{request}",
            "Requests the server preempted.",
            |m| m.preemptions_total,
        ),
    ];
    for (kind, name, unit, help, field) in scalars {
        observe(m, s, kind, name, unit, help, move |sn, e| {
            for p in sn.probes.iter() {
                if let Some(v) = p
                    .server
                    .as_ref()
                    .and_then(|s| s.metrics.as_ref())
                    .and_then(field)
                {
                    e(v, &probe_attributes(p));
                }
            }
        });
    }
    type Hist = fn(&ServerMetrics) -> Option<&ServerHistogram>;
    // (sum instrument, its description, count instrument, its description, field)
    let histograms: [(&'static str, &'static str, &'static str, &'static str, Hist); 3] = [
        (
            "gpulse.server.time_to_first_token.sum",
            "Sum of the server's time-to-first-token observations.",
            "gpulse.server.time_to_first_token.count",
            "Count of the server's time-to-first-token observations.",
            |m| m.time_to_first_token.as_ref(),
        ),
        (
            "gpulse.server.e2e_request_latency.sum",
            "Sum of the server's end-to-end request latencies.",
            "gpulse.server.e2e_request_latency.count",
            "Count of the server's end-to-end request latency observations.",
            |m| m.e2e_latency.as_ref(),
        ),
        (
            "gpulse.server.inter_token_latency.sum",
            "Sum of the server's inter-token latency observations.",
            "gpulse.server.inter_token_latency.count",
            "Count of the server's inter-token latency observations.",
            |m| m.inter_token_latency.as_ref(),
        ),
    ];
    for (sum_name, sum_help, count_name, count_help, field) in histograms {
        let each = move |sn: &crate::store::Snapshot,
                         f: &mut dyn FnMut(&ServerHistogram, Vec<KeyValue>)| {
            for p in sn.probes.iter() {
                if let Some(h) = p
                    .server
                    .as_ref()
                    .and_then(|s| s.metrics.as_ref())
                    .and_then(field)
                {
                    f(h, probe_attributes(p));
                }
            }
        };
        observe(
            m,
            s,
            Kind::Counter,
            sum_name,
            "s",
            sum_help,
            move |sn, e| {
                each(sn, &mut |h, attrs| e(h.sum, &attrs));
            },
        );
        observe(
            m,
            s,
            Kind::Counter,
            count_name,
            "{request}",
            count_help,
            move |sn, e| each(sn, &mut |h, attrs| e(h.count, &attrs)),
        );
    }
}

/// The attributes of a GPU's health points (the same GPU keys as [`gpu_attributes`]).
fn health_gpu_attributes(g: &crate::health::GpuHealth) -> Vec<KeyValue> {
    vec![
        KeyValue::new("hw.id", g.uuid.clone()),
        KeyValue::new("hw.name", format!("gpu{}", g.index)),
        KeyValue::new("hw.type", "gpu"),
        KeyValue::new("hw.model", g.name.clone()),
        KeyValue::new("gpulse.gpu.index", i64::from(g.index)),
    ]
}

fn register_health_instruments(m: &Meter, s: &Arc<Store>) {
    use crate::health::State;
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.node.health",
        "1",
        "1 for the node's current health state, 0 for the others (attribute gpulse.health.state).",
        |sn, e| {
            if let Some(h) = &sn.health {
                for state in State::ALL {
                    e(
                        flag(state == h.state),
                        &[kv("gpulse.health.state", state.as_str())],
                    );
                }
            }
        },
    );
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.gpu.health",
        "1",
        "1 for the GPU's current health state, 0 for the others (attribute gpulse.health.state).",
        |sn, e| {
            if let Some(h) = &sn.health {
                for g in &h.gpus {
                    let base = health_gpu_attributes(g);
                    for state in State::ALL {
                        let mut attrs = base.clone();
                        attrs.push(kv("gpulse.health.state", state.as_str()));
                        e(flag(state == g.state), &attrs);
                    }
                }
            }
        },
    );
    observe(
        m,
        s,
        Kind::Gauge,
        "gpulse.gpu.health.reason",
        "1",
        "1 per active health reason of a GPU, with the suggested action.",
        |sn, e| {
            if let Some(h) = &sn.health {
                for g in &h.gpus {
                    for r in &g.reasons {
                        let mut attrs = health_gpu_attributes(g);
                        attrs.push(KeyValue::new("gpulse.health.reason", r.code.label()));
                        attrs.push(kv("gpulse.health.action", r.action.as_str()));
                        e(1.0, &attrs);
                    }
                }
            }
        },
    );
}

fn register_agent_instruments(
    m: &Meter,
    s: &Arc<Store>,
    stats: &Arc<ExportStats>,
    gpu_source: &'static str,
) {
    use Kind::{Counter, Gauge};
    observe(
        m,
        s,
        Gauge,
        "gpulse.build.info",
        "1",
        "Always 1; attributes carry the version, where GPU data comes from and where gpulse runs.",
        move |sn, e| {
            e(
                1.0,
                &[
                    kv("gpulse.version", env!("CARGO_PKG_VERSION")),
                    kv("gpulse.gpu_source", gpu_source),
                    kv("gpulse.mode", sn.mode.mode.as_str()),
                ],
            )
        },
    );
    let st = Arc::clone(stats);
    observe(
        m,
        s,
        Counter,
        "gpulse.exports",
        "{push}",
        "Pushes attempted per exporter.",
        move |_, e| {
            for (name, pushes, _) in st.snapshot() {
                e(pushes as f64, &[kv("gpulse.exporter", name)]);
            }
        },
    );
    let st = Arc::clone(stats);
    observe(
        m,
        s,
        Counter,
        "gpulse.export.failures",
        "{push}",
        "Pushes that failed per exporter.",
        move |_, e| {
            for (name, _, failures) in st.snapshot() {
                e(failures as f64, &[kv("gpulse.exporter", name)]);
            }
        },
    );
    fn each(snap: &Snapshot, emit: Emit<'_>, v: fn(&crate::model::CollectorStatus) -> Option<f64>) {
        for c in &snap.collectors {
            if let Some(x) = v(c) {
                emit(x, &[kv("gpulse.collector", c.name)]);
            }
        }
    }
    observe(
        m,
        s,
        Gauge,
        "gpulse.collector.success",
        "1",
        "1 if the collector's last cycle produced a fresh sample.",
        |sn, e| each(sn, e, |c| (c.runs > 0).then_some(flag(c.last_success))),
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.collector.stale",
        "1",
        "1 if the data served is from an earlier cycle because the last one failed.",
        |sn, e| each(sn, e, |c| Some(flag(c.is_stale()))),
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.collector.duration",
        "s",
        "Duration of the collector's last cycle.",
        |sn, e| {
            each(sn, e, |c| {
                (c.runs > 0).then_some(c.last_duration.as_secs_f64())
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.collector.interval",
        "s",
        "Configured time between the collector's cycles.",
        |sn, e| each(sn, e, |c| Some(c.interval.as_secs_f64())),
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.collector.last_success.timestamp",
        "s",
        "Unix time of the collector's last successful cycle.",
        |sn, e| {
            each(sn, e, |c| {
                c.last_success_at
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64())
            })
        },
    );
    observe(
        m,
        s,
        Counter,
        "gpulse.collector.runs",
        "{cycle}",
        "Collector cycles attempted.",
        |sn, e| each(sn, e, |c| Some(c.runs as f64)),
    );
    observe(
        m,
        s,
        Counter,
        "gpulse.collector.failures",
        "{cycle}",
        "Collector cycles that failed or missed their deadline.",
        |sn, e| each(sn, e, |c| Some(c.failures as f64)),
    );
}

/// `hw.id` (UUID, empty when the source could not name the GPU), the GPU index when known,
/// and the Xid code.
fn xid_attributes(c: &crate::model::XidCount) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("hw.id", c.uuid.clone()),
        KeyValue::new("hw.type", "gpu"),
    ];
    if let Some(index) = c.gpu_index {
        attrs.push(KeyValue::new("gpulse.gpu.index", i64::from(index)));
    }
    attrs.push(KeyValue::new(
        "gpulse.gpu.xid",
        i64::try_from(c.xid).unwrap_or(i64::MAX),
    ));
    attrs
}

fn register_gpu_instruments(m: &Meter, s: &Arc<Store>) {
    use Kind::{Counter, Gauge};
    observe(
        m,
        s,
        Counter,
        "gpulse.gpu.xid.errors",
        "{error}",
        "Xid errors seen since the agent started, one per occurrence across sources.",
        |sn, e| {
            for c in &sn.xid.counts {
                e(c.count as f64, &xid_attributes(c));
            }
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.xid.last_seen",
        "s",
        "Unix time this Xid was last seen on this GPU.",
        |sn, e| {
            for c in &sn.xid.counts {
                let at = c
                    .last_seen
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                e(at, &xid_attributes(c));
            }
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.count",
        "{gpu}",
        "GPUs NVML reports on this node.",
        |sn, e| {
            if let Some(g) = &sn.gpu {
                e(g.devices.len() as f64, &[]);
            }
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.info",
        "1",
        "Always 1 per GPU; attributes carry its identity.",
        |sn, e| {
            if let Some(g) = &sn.gpu {
                for d in &g.devices {
                    e(1.0, &gpu_identity_attributes(g, d));
                }
            }
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.lost",
        "1",
        "1 if the driver reports the GPU as lost (fallen off the bus).",
        |sn, e| {
            if let Some(g) = &sn.gpu {
                for d in &g.devices {
                    e(flag(d.lost), &gpu_attributes(d));
                }
            }
        },
    );
    observe(
        m,
        s,
        Gauge,
        "hw.gpu.utilization",
        "1",
        "Fraction of time the GPU engine was busy, by task (general, encoder, decoder).",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                [
                    ("general", d.utilization.gpu),
                    ("encoder", d.utilization.encoder),
                    ("decoder", d.utilization.decoder),
                ]
                .into_iter()
                .filter_map(|(task, v)| v.map(|v| (vec![kv("hw.gpu.task", task)], v)))
                .collect()
            })
        },
    );
    for row in GPU_SCALARS {
        let kind = if row.counter { Counter } else { Gauge };
        let value = row.value;
        observe(m, s, kind, row.otlp, row.unit, row.help, move |sn, e| {
            per_gpu(sn, e, value)
        });
    }
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.temperature",
        "Cel",
        "Temperature by sensor (gpu, memory).",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                [
                    ("gpu", d.temperature_gpu_celsius),
                    ("memory", d.temperature_memory_celsius),
                ]
                .into_iter()
                .filter_map(|(sensor, v)| v.map(|v| (vec![kv("gpulse.sensor", sensor)], v)))
                .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.temperature.threshold",
        "Cel",
        "Temperature thresholds (slowdown, shutdown, memory_max, gpu_max).",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.temperature_thresholds
                    .iter()
                    .map(|(t, v)| (vec![kv("gpulse.threshold", t)], *v))
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.clock.frequency",
        "Hz",
        "Current clock frequency (graphics, sm, memory, video).",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.clocks_hertz
                    .iter()
                    .map(|(c, v)| (vec![kv("gpulse.clock", c)], *v))
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.clock.max_frequency",
        "Hz",
        "Maximum clock frequency (graphics, sm, memory, video).",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.max_clocks_hertz
                    .iter()
                    .map(|(c, v)| (vec![kv("gpulse.clock", c)], *v))
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.fan.speed",
        "1",
        "Fan speed as a fraction of its maximum.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.fan_speed_ratio
                    .iter()
                    .map(|(f, v)| (vec![KeyValue::new("gpulse.fan", i64::from(*f))], *v))
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.throttle.active",
        "1",
        "1 if this clock-event reason is limiting clocks now.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.throttle
                    .iter()
                    .flat_map(|t| t.decoded().collect::<Vec<_>>())
                    .map(|(r, on)| (vec![kv("gpulse.reason", r)], flag(on)))
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Counter,
        "gpulse.gpu.throttle.time",
        "s",
        "Cumulative time clocks were held down, by policy.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.throttle_seconds
                    .iter()
                    .map(|(r, v)| (vec![kv("gpulse.reason", r)], *v))
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Counter,
        "hw.errors",
        "{error}",
        "ECC errors by error.type (corrected, uncorrected) and scope (volatile, aggregate).",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.ecc_errors
                    .iter()
                    .map(|(kind, scope, n)| {
                        (
                            vec![kv("error.type", kind), kv("gpulse.ecc.scope", scope)],
                            *n as f64,
                        )
                    })
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.retired_pages",
        "{page}",
        "Memory pages retired, by cause.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.retired_pages
                    .iter()
                    .map(|(c, n)| (vec![kv("gpulse.cause", c)], *n as f64))
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.remapped_rows",
        "{row}",
        "Memory rows remapped, by cause.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.remapped_rows
                    .iter()
                    .flat_map(|r| {
                        [
                            (
                                vec![kv("gpulse.cause", "correctable")],
                                r.correctable as f64,
                            ),
                            (
                                vec![kv("gpulse.cause", "uncorrectable")],
                                r.uncorrectable as f64,
                            ),
                        ]
                    })
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.pcie.throughput",
        "By/s",
        "PCIe throughput by direction.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                [
                    ("transmit", d.pcie.tx_bytes_per_second),
                    ("receive", d.pcie.rx_bytes_per_second),
                ]
                .into_iter()
                .filter_map(|(dir, v)| v.map(|v| (vec![kv("network.io.direction", dir)], v)))
                .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.nvlink.active",
        "1",
        "1 if the NVLink link is up.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.nvlinks
                    .iter()
                    .map(|l| {
                        (
                            vec![KeyValue::new("gpulse.nvlink", i64::from(l.link))],
                            flag(l.active),
                        )
                    })
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Counter,
        "gpulse.gpu.nvlink.errors",
        "{error}",
        "NVLink data-link errors by link and counter.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.nvlinks
                    .iter()
                    .flat_map(|l| {
                        l.errors().map(move |(c, n)| {
                            (
                                vec![
                                    KeyValue::new("gpulse.nvlink", i64::from(l.link)),
                                    kv("error.type", c),
                                ],
                                n as f64,
                            )
                        })
                    })
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.process.memory.usage",
        "By",
        "GPU memory used by each compute process.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.processes
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        p.used_memory_bytes.map(|b| {
                            (
                                vec![KeyValue::new("process.pid", i64::from(p.pid))],
                                b as f64,
                            )
                        })
                    })
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.process.sm.utilization",
        "1",
        "SM utilization attributed to each compute process.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.processes
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        p.sm_utilization
                            .map(|v| (vec![KeyValue::new("process.pid", i64::from(p.pid))], v))
                    })
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.process.memory.utilization",
        "1",
        "Memory-controller utilization attributed to each compute process.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.processes
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        p.memory_utilization
                            .map(|v| (vec![KeyValue::new("process.pid", i64::from(p.pid))], v))
                    })
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.mig.memory.limit",
        "By",
        "Memory of each MIG instance.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.mig
                    .iter()
                    .flat_map(|m| &m.instances)
                    .filter_map(|i| {
                        i.memory_total_bytes.map(|b| {
                            (
                                vec![KeyValue::new("gpulse.mig.id", i.uuid.clone())],
                                b as f64,
                            )
                        })
                    })
                    .collect()
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.gpu.mig.memory.usage",
        "By",
        "Memory used in each MIG instance.",
        |sn, e| {
            per_gpu_items(sn, e, |d| {
                d.mig
                    .iter()
                    .flat_map(|m| &m.instances)
                    .filter_map(|i| {
                        i.memory_used_bytes.map(|b| {
                            (
                                vec![KeyValue::new("gpulse.mig.id", i.uuid.clone())],
                                b as f64,
                            )
                        })
                    })
                    .collect()
            })
        },
    );
}

fn register_host_instruments(m: &Meter, s: &Arc<Store>) {
    use Kind::{Counter, Gauge};
    observe(
        m,
        s,
        Gauge,
        "system.cpu.utilization",
        "1",
        "CPU busy fraction since the previous host cycle; per core with cpu.logical_number.",
        |sn, e| {
            host(sn, e, |h, e| {
                if let Some(u) = h.cpu_utilization {
                    e(u, &[]);
                }
                for (cpu, u) in &h.per_cpu_utilization {
                    e(
                        *u,
                        &[KeyValue::new(
                            "cpu.logical_number",
                            cpu.parse::<i64>().unwrap_or(-1),
                        )],
                    );
                }
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "system.cpu.logical.count",
        "{cpu}",
        "Logical CPUs.",
        |sn, e| host(sn, e, |h, e| e(h.cpu_count as f64, &[])),
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.host.load_average",
        "{thread}",
        "System load average (1m, 5m, 15m).",
        |sn, e| {
            host(sn, e, |h, e| {
                if let Some(l) = h.load_average {
                    for (w, v) in [("1m", l[0]), ("5m", l[1]), ("15m", l[2])] {
                        e(v, &[kv("gpulse.window", w)]);
                    }
                }
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "system.memory.limit",
        "By",
        "Physical memory.",
        |sn, e| host(sn, e, |h, e| e(h.memory_total_bytes as f64, &[])),
    );
    observe(
        m,
        s,
        Gauge,
        "system.memory.usage",
        "By",
        "Memory in use.",
        |sn, e| {
            host(sn, e, |h, e| {
                e(
                    h.memory_used_bytes as f64,
                    &[kv("system.memory.state", "used")],
                )
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "system.linux.memory.available",
        "By",
        "Memory available without swapping.",
        |sn, e| host(sn, e, |h, e| e(h.memory_available_bytes as f64, &[])),
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.host.swap.limit",
        "By",
        "Swap space.",
        |sn, e| host(sn, e, |h, e| e(h.swap_total_bytes as f64, &[])),
    );
    observe(
        m,
        s,
        Gauge,
        "system.paging.usage",
        "By",
        "Swap in use.",
        |sn, e| {
            host(sn, e, |h, e| {
                e(
                    h.swap_used_bytes as f64,
                    &[kv("system.paging.state", "used")],
                )
            })
        },
    );
    let fs_attrs = |d: &crate::model::DiskReadings| {
        vec![
            KeyValue::new("system.device", d.device.clone()),
            KeyValue::new("system.filesystem.mountpoint", d.mount_point.clone()),
            KeyValue::new("system.filesystem.type", d.filesystem.clone()),
        ]
    };
    observe(
        m,
        s,
        Gauge,
        "system.filesystem.limit",
        "By",
        "Size of each mounted filesystem.",
        move |sn, e| {
            host(sn, e, |h, e| {
                for d in &h.disks {
                    e(d.total_bytes as f64, &fs_attrs(d));
                }
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "system.filesystem.usage",
        "By",
        "Space available to unprivileged users on each filesystem (state=free).",
        move |sn, e| {
            host(sn, e, |h, e| {
                for d in &h.disks {
                    let mut attrs = fs_attrs(d);
                    attrs.push(kv("system.filesystem.state", "free"));
                    e(d.available_bytes as f64, &attrs);
                }
            })
        },
    );
    fn net(h: &HostSample, e: Emit<'_>, v: fn(&crate::model::NetworkReadings) -> [u64; 2]) {
        for n in &h.networks {
            let [rx, tx] = v(n);
            for (dir, x) in [("receive", rx), ("transmit", tx)] {
                e(
                    x as f64,
                    &[
                        KeyValue::new("network.interface.name", n.interface.clone()),
                        kv("network.io.direction", dir),
                    ],
                );
            }
        }
    }
    observe(
        m,
        s,
        Counter,
        "system.network.io",
        "By",
        "Bytes received and sent per interface.",
        |sn, e| {
            host(sn, e, |h, e| {
                net(h, e, |n| [n.received_bytes, n.transmitted_bytes])
            })
        },
    );
    observe(
        m,
        s,
        Counter,
        "system.network.packet.count",
        "{packet}",
        "Packets received and sent per interface.",
        |sn, e| {
            host(sn, e, |h, e| {
                net(h, e, |n| [n.received_packets, n.transmitted_packets])
            })
        },
    );
    observe(
        m,
        s,
        Counter,
        "system.network.errors",
        "{error}",
        "Receive and transmit errors per interface.",
        |sn, e| {
            host(sn, e, |h, e| {
                net(h, e, |n| [n.receive_errors, n.transmit_errors])
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "system.uptime",
        "s",
        "Time since the host booted.",
        |sn, e| {
            host(sn, e, |h, e| {
                if let Some(u) = h.uptime {
                    e(u.as_secs_f64(), &[]);
                }
            })
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.host.boot_time",
        "s",
        "Unix time the host booted.",
        |sn, e| {
            host(sn, e, |h, e| {
                if let Some(b) = h.boot_time_seconds {
                    e(b as f64, &[]);
                }
            })
        },
    );
}

// ---------------------------------------------------------------- the wrapped job

/// `gpulse wrap`'s job. Counters and gauges are observed from the snapshot like everything
/// else. OpenTelemetry has no observable histogram, so `gpulse.job.duration` is a recorded one:
/// the `gpulse.job.runs` callback (callbacks run before each collection) records the runs
/// that ended since the push started. Runs before this wrapper (restored from the state file)
/// are in `gpulse.job.runs`, not in this histogram; /metrics' histogram has them.
fn register_job_instruments(m: &Meter, s: &Arc<Store>) {
    use crate::model::{JOB_DURATION_BUCKETS, JobOutcome};
    use Kind::{Counter, Gauge};
    let durations = m
        .f64_histogram("gpulse.job.duration")
        .with_unit("s")
        .with_description(
            "Duration of the wrapped command's runs that ended while this wrapper ran.",
        )
        .with_boundaries(JOB_DURATION_BUCKETS.to_vec())
        .build();
    // Runs up to this number are recorded (or were restored, and are not).
    let recorded = std::sync::Mutex::new(None::<u64>);
    observe(
        m,
        s,
        Counter,
        "gpulse.job.runs",
        "{run}",
        "Runs of the wrapped command that ended, by outcome (attribute gpulse.job.outcome).",
        move |sn, e| {
            let Some(job) = &sn.job else { return };
            for o in JobOutcome::ALL {
                e(
                    job.totals.outcome(o) as f64,
                    &[kv("gpulse.job.outcome", o.as_str())],
                );
            }
            let mut last = recorded.lock().unwrap_or_else(|p| p.into_inner());
            let last = last.get_or_insert(job.restored_through);
            for event in &job.recent {
                if let crate::model::JobEvent::Finished(end) = event
                    && end.run > *last
                {
                    *last = end.run;
                    if let Some(d) = end.duration {
                        durations.record(d.as_secs_f64(), &[]);
                    }
                }
            }
        },
    );
    observe(
        m,
        s,
        Counter,
        "gpulse.job.restarts",
        "{restart}",
        "Runs of the wrapped command started after an earlier one.",
        |sn, e| {
            if let Some(job) = &sn.job {
                e(job.totals.restarts() as f64, &[]);
            }
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.job.running",
        "1",
        "1 while the wrapped command runs.",
        |sn, e| {
            if let Some(job) = &sn.job {
                let program = job
                    .running
                    .as_ref()
                    .map(|r| r.program.clone())
                    .or(job.last_end.as_ref().map(|l| l.program.clone()))
                    .unwrap_or_default();
                e(
                    flag(job.running.is_some()),
                    &[KeyValue::new("gpulse.job.program", program)],
                );
            }
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.job.last_exit_code",
        "1",
        "Exit code of the last run that ended (128 + the signal number when killed by one).",
        |sn, e| {
            if let Some(code) = sn.job.as_ref().and_then(|j| j.last_exit_code()) {
                e(f64::from(code), &[]);
            }
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.job.start_time",
        "s",
        "Unix time the current run of the wrapped command started.",
        |sn, e| {
            let start = sn.job.as_ref().and_then(|j| j.running.as_ref());
            if let Some(d) = start.and_then(|r| r.at.duration_since(std::time::UNIX_EPOCH).ok()) {
                e(d.as_secs_f64(), &[]);
            }
        },
    );
    fn ready(sn: &Snapshot) -> Option<&crate::model::JobReady> {
        sn.job
            .as_ref()
            .filter(|j| j.running.is_some())
            .and_then(|j| j.ready.as_ref())
    }
    observe(
        m,
        s,
        Gauge,
        "gpulse.job.ready",
        "s",
        "Time from the current run's start until its readiness probe was first up.",
        |sn, e| {
            if let Some(r) = ready(sn) {
                e(r.after_start.as_secs_f64(), &[]);
            }
        },
    );
    observe(
        m,
        s,
        Gauge,
        "gpulse.job.recovery",
        "s",
        "Time from the previous run's end until the current run was ready.",
        |sn, e| {
            if let Some(d) = ready(sn).and_then(|r| r.recovery) {
                e(d.as_secs_f64(), &[]);
            }
        },
    );
}
