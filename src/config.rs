//! The agent's configuration: TOML file < `GPULSE_<SECTION>_<KEY>` environment < flags.
//!
//! Every field has a documented default (see [`EXAMPLE`], which `gpulse config example`
//! prints and a test keeps equal to [`Config::default`]). Unknown keys are errors. Values are
//! validated while they are parsed (durations must be positive, addresses must parse), so a
//! loaded [`Config`] is always usable and every error can name its key and where it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The commented example configuration; every value in it is the default.
pub const EXAMPLE: &str = include_str!("../packaging/gpulse.example.toml");

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "GPULSE_";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub gpu: GpuConfig,
    pub host: HostConfig,
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub prometheus: PrometheusConfig,
    pub otlp: OtlpConfig,
    pub health: HealthConfig,
    pub log: LogConfig,
    pub wrap: WrapConfig,
    /// `[[probe]]`: inference servers and other endpoints to check; empty by default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probe: Vec<ProbeConfig>,
}

/// What a probe talks to; decides its liveness, readiness and model-list endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Vllm,
    Tgi,
    Triton,
    Kserve,
    Sglang,
    Ollama,
    Llamacpp,
    Openai,
    Http,
    Tcp,
}

impl ProbeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vllm => "vllm",
            Self::Tgi => "tgi",
            Self::Triton => "triton",
            Self::Kserve => "kserve",
            Self::Sglang => "sglang",
            Self::Ollama => "ollama",
            Self::Llamacpp => "llamacpp",
            Self::Openai => "openai",
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }
}

/// One `[[probe]]`: an endpoint checked on its own interval.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Unique; the `probe` label of its metrics.
    pub name: String,
    pub kind: ProbeKind,
    /// `http://host:port[/base]` for HTTP kinds; `host:port` or `tcp://host:port` for `tcp`.
    pub url: String,
    #[serde(default = "probe_default_interval")]
    pub interval: HumanDuration,
    /// Deadline of one whole check (connect, headers, body, every request of the check).
    #[serde(default = "probe_default_timeout")]
    pub timeout: HumanDuration,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// File holding a bearer token sent as `Authorization: Bearer` (never logged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bearer_token_file: String,
    /// Environment variable holding a bearer token (never logged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bearer_token_env: String,
    /// Largest response body read; past it the check is `down` / `body_too_large`.
    #[serde(default = "probe_default_max_body")]
    pub max_body_bytes: usize,
    /// A model that must be listed; when absent the probe is `degraded` / `model_missing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_model: Option<String>,
    /// PEM file of CA certificates trusted for an `https` URL, besides the built-in roots
    /// (for servers behind a private CA or a self-signed certificate).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_ca_file: String,
    /// Accept any certificate on an `https` URL (still encrypted, not authenticated).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_insecure_skip_verify: bool,
    /// Send a synthetic inference request (the cheapest real one for the kind) every
    /// `inference_interval`, timing the first token and the whole answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inference: bool,
    #[serde(default = "probe_default_inference_interval")]
    pub inference_interval: HumanDuration,
    /// Deadline of one synthetic request, from sending to the last byte.
    #[serde(default = "probe_default_inference_timeout")]
    pub inference_timeout: HumanDuration,
    /// Model named in the request; empty: `expected_model`, else the first listed model.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inference_model: String,
    #[serde(default = "probe_default_inference_prompt")]
    pub inference_prompt: String,
    /// Output tokens asked for (1 keeps the probe cheap; more measures decode speed).
    #[serde(default = "probe_default_inference_max_tokens")]
    pub inference_max_tokens: u32,
    /// `triton` / `kserve`: the JSON body of `POST /v2/models/{model}/infer` (the model's
    /// own input tensor); required there when `inference` is on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inference_input: String,
    /// Time to first token (first byte for `triton` / `kserve`) a synthetic request must meet.
    #[serde(default = "probe_default_ttft_slo")]
    pub ttft_slo: HumanDuration,
    /// End-to-end latency a synthetic request must meet.
    #[serde(default = "probe_default_latency_slo")]
    pub latency_slo: HumanDuration,
    /// Scrape the server's own Prometheus /metrics every `metrics_interval` and lift its
    /// queue, throughput, latency and KV-cache series.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metrics: bool,
    /// Where the server's metrics are; empty: `url` + `/metrics` (MLServer serves them on
    /// a port of their own, e.g. `http://127.0.0.1:8082/metrics`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metrics_url: String,
    #[serde(default = "probe_default_metrics_interval")]
    pub metrics_interval: HumanDuration,
    /// Largest /metrics body read; past it the scrape fails (`body_too_large`).
    #[serde(default = "probe_default_metrics_max_body")]
    pub metrics_max_body_bytes: usize,
}

fn probe_default_interval() -> HumanDuration {
    HumanDuration::secs(10)
}

fn probe_default_timeout() -> HumanDuration {
    HumanDuration::secs(2)
}

fn probe_default_max_body() -> usize {
    1 << 20
}

fn probe_default_inference_interval() -> HumanDuration {
    HumanDuration::secs(30)
}

fn probe_default_inference_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

fn probe_default_inference_prompt() -> String {
    "hi".to_owned()
}

fn probe_default_inference_max_tokens() -> u32 {
    1
}

fn probe_default_ttft_slo() -> HumanDuration {
    HumanDuration::secs(1)
}

fn probe_default_latency_slo() -> HumanDuration {
    HumanDuration::secs(2)
}

fn probe_default_metrics_interval() -> HumanDuration {
    HumanDuration::secs(15)
}

fn probe_default_metrics_max_body() -> usize {
    4 << 20
}

impl ProbeConfig {
    /// A probe with every optional key at its default.
    pub fn new(name: &str, kind: ProbeKind, url: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            url: url.to_owned(),
            interval: probe_default_interval(),
            timeout: probe_default_timeout(),
            headers: BTreeMap::new(),
            bearer_token_file: String::new(),
            bearer_token_env: String::new(),
            max_body_bytes: probe_default_max_body(),
            expected_model: None,
            tls_ca_file: String::new(),
            tls_insecure_skip_verify: false,
            inference: false,
            inference_interval: probe_default_inference_interval(),
            inference_timeout: probe_default_inference_timeout(),
            inference_model: String::new(),
            inference_prompt: probe_default_inference_prompt(),
            inference_max_tokens: probe_default_inference_max_tokens(),
            inference_input: String::new(),
            ttft_slo: probe_default_ttft_slo(),
            latency_slo: probe_default_latency_slo(),
            metrics: false,
            metrics_url: String::new(),
            metrics_interval: probe_default_metrics_interval(),
            metrics_max_body_bytes: probe_default_metrics_max_body(),
        }
    }

    /// The URL of the server's own Prometheus metrics.
    pub fn metrics_url(&self) -> String {
        if self.metrics_url.is_empty() {
            format!("{}/metrics", self.base_url())
        } else {
            self.metrics_url.clone()
        }
    }

    /// Whether the kind has a synthetic inference request.
    pub const fn has_inference(kind: ProbeKind) -> bool {
        !matches!(kind, ProbeKind::Http | ProbeKind::Tcp)
    }

    /// The `host:port` a `tcp` probe connects to.
    pub fn tcp_address(&self) -> &str {
        self.url.strip_prefix("tcp://").unwrap_or(&self.url)
    }

    /// The base URL of an HTTP probe, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    fn check(&self, index: usize) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| ConfigError {
            key: Some(format!("probe[{index}].{key}")),
            origin: "configuration".to_owned(),
            message,
        };
        if self.name.is_empty() {
            return Err(fail("name", "must not be empty".to_owned()));
        }
        if self.max_body_bytes == 0 {
            return Err(fail(
                "max_body_bytes",
                "must be greater than zero".to_owned(),
            ));
        }
        if self.inference {
            if !Self::has_inference(self.kind) {
                return Err(fail(
                    "inference",
                    format!(
                        "kind {} has no synthetic inference request (use an inference server kind)",
                        self.kind.as_str()
                    ),
                ));
            }
            if self.inference_max_tokens == 0 {
                return Err(fail(
                    "inference_max_tokens",
                    "must be at least 1".to_owned(),
                ));
            }
            if matches!(self.kind, ProbeKind::Triton | ProbeKind::Kserve) {
                if self.inference_model.is_empty() && self.expected_model.is_none() {
                    return Err(fail(
                        "inference_model",
                        "triton/kserve inference needs a model (inference_model or expected_model)"
                            .to_owned(),
                    ));
                }
                // Checked here so a typo exits 2 at start instead of failing every request.
                let input = serde_json::from_str::<serde_json::Value>(&self.inference_input);
                if !input.is_ok_and(|v| v.get("inputs").is_some_and(|i| i.is_array())) {
                    return Err(fail(
                        "inference_input",
                        "must be a KServe v2 infer body: JSON with an \"inputs\" array".to_owned(),
                    ));
                }
            }
        }
        if self.metrics && matches!(self.kind, ProbeKind::Tcp | ProbeKind::Ollama) {
            return Err(fail(
                "metrics",
                format!(
                    "kind {} has no Prometheus /metrics to scrape",
                    self.kind.as_str()
                ),
            ));
        }
        if self.kind == ProbeKind::Tcp {
            let addr = self.tcp_address();
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(fail(
                    "url",
                    format!("{:?} is not host:port or tcp://host:port", self.url),
                ));
            }
            return Ok(());
        }
        check_http_url(&self.url).map_err(|message| fail("url", message))?;
        if !self.metrics_url.is_empty() {
            check_http_url(&self.metrics_url).map_err(|message| fail("metrics_url", message))?;
        }
        if self.metrics_max_body_bytes == 0 {
            return Err(fail(
                "metrics_max_body_bytes",
                "must be greater than zero".to_owned(),
            ));
        }
        if self.tls_insecure_skip_verify && !self.tls_ca_file.is_empty() {
            return Err(fail(
                "tls_insecure_skip_verify",
                "is set together with tls_ca_file; choose one".to_owned(),
            ));
        }
        for (name, value) in &self.headers {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
            if !valid_name || value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                return Err(fail(
                    &format!("headers.{name}"),
                    "is not a valid HTTP header".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

/// `[agent]`: identity of this node and process-wide settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Node name reported in JSON and used as `Hostname` later; empty means the OS hostname.
    pub node_name: String,
    /// How long shutdown waits for in-flight work before exiting.
    pub shutdown_grace_period: HumanDuration,
    /// Extra identity labels of this node (e.g. Akash provider and lease ids), exported as
    /// OTLP resource attributes.
    pub labels: BTreeMap<String, String>,
    /// Where gpulse runs (`auto`, `embedded`, `sidecar`, `host`); see [`crate::mode`].
    pub mode: ModeSetting,
    /// Directory for state that must survive a restart (`gpulse wrap`'s job runs); empty
    /// keeps nothing on disk.
    pub state_dir: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            shutdown_grace_period: HumanDuration::secs(5),
            labels: BTreeMap::new(),
            mode: ModeSetting::Auto,
            state_dir: String::new(),
        }
    }
}

/// `[agent] mode`: where gpulse runs, or `auto` to infer it (see [`crate::mode::infer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeSetting {
    Auto,
    /// Inside the workload's container (`gpulse wrap`): its own GPUs, its own process tree.
    Embedded,
    /// Beside the workload without its GPU: probes and host metrics only.
    Sidecar,
    /// On the host (systemd, privileged DaemonSet): every GPU and the kernel log.
    Host,
}

impl ModeSetting {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Embedded => "embedded",
            Self::Sidecar => "sidecar",
            Self::Host => "host",
        }
    }
}

/// `[wrap]`: `gpulse wrap -- CMD`, the agent beside a child it supervises.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WrapConfig {
    /// Configure a probe for the wrapped server when its kind and port can be told from the
    /// command line (`vllm serve --port 8000` → a vllm probe on 127.0.0.1:8000).
    pub auto_probe: bool,
    /// Interval of that probe; it also sets how precisely time-to-ready is measured.
    pub probe_interval: HumanDuration,
    /// Job events (starts, readiness, ends) kept in memory for /v1/events.
    pub max_events: NonZeroUsize,
    /// Largest size of `jobs.jsonl` in `agent.state_dir`; past it the oldest half is dropped
    /// (rewritten to a temporary file and renamed, so it is never half-written).
    pub state_max_bytes: u64,
}

impl Default for WrapConfig {
    fn default() -> Self {
        Self {
            auto_probe: true,
            probe_interval: HumanDuration::secs(10),
            max_events: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            state_max_bytes: 1 << 20,
        }
    }
}

impl WrapConfig {
    /// The smallest `state_max_bytes`: room for a few dozen job events.
    pub const MIN_STATE_BYTES: u64 = 16 * 1024;

    fn check(&self) -> Result<(), ConfigError> {
        if self.state_max_bytes < Self::MIN_STATE_BYTES {
            return Err(ConfigError {
                key: Some("wrap.state_max_bytes".to_owned()),
                origin: "configuration".to_owned(),
                message: format!(
                    "{} is too small; use at least {}",
                    self.state_max_bytes,
                    Self::MIN_STATE_BYTES
                ),
            });
        }
        Ok(())
    }
}

/// `[gpu]`: the NVML collector.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    pub enabled: bool,
    /// Time between sampling cycles.
    pub interval: HumanDuration,
    /// Deadline for one cycle of NVML calls; past it the last good sample is served as stale.
    pub timeout: HumanDuration,
    /// Path of the NVML library; empty means the system `libnvidia-ml.so.1`.
    pub nvml_library: String,
    /// How often to retry loading NVML when it is absent or failed to initialize.
    pub nvml_retry_interval: HumanDuration,
    /// List compute processes (pid, memory, utilization) per GPU.
    pub processes: bool,
    /// At most this many processes are reported per GPU (bounds label cardinality).
    pub max_processes: usize,
    /// Report MIG mode and MIG instances.
    pub mig: bool,
    /// Report per-link NVLink state and error counters.
    pub nvlink: bool,
    /// Read PCIe TX/RX throughput (NVML waits about 20 ms per GPU and direction for it).
    pub pcie_throughput: bool,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: HumanDuration::secs(1),
            timeout: HumanDuration::secs(2),
            nvml_library: String::new(),
            nvml_retry_interval: HumanDuration::secs(30),
            processes: true,
            max_processes: 64,
            mig: true,
            nvlink: true,
            pcie_throughput: false,
        }
    }
}

/// `[host]`: the sysinfo collector.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    pub enabled: bool,
    pub interval: HumanDuration,
    /// Deadline for one host cycle (a hung network filesystem can block disk queries).
    pub timeout: HumanDuration,
    /// Also report utilization per CPU core.
    pub per_cpu: bool,
    /// Report space per mounted filesystem.
    pub disks: bool,
    /// Report counters per network interface.
    pub networks: bool,
    /// At most this many disks and this many interfaces are reported.
    pub max_devices: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: HumanDuration::secs(5),
            timeout: HumanDuration::secs(2),
            per_cpu: false,
            disks: true,
            networks: true,
            max_devices: 64,
        }
    }
}

/// `[store]`: how much history is kept in memory.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Cycles of history kept per source, as compact points for trends and the score.
    pub window_samples: NonZeroUsize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            window_samples: NonZeroUsize::new(300).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// `[http]`: the server for /metrics, /healthz, /readyz and /v1/*.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Requests taking longer than this get 503. Also bounds reading a request's headers, the
    /// TLS handshake, and how long an idle keep-alive connection is kept open.
    pub request_timeout: HumanDuration,
    /// Requests handled at once; beyond it requests get 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Largest request body accepted (413 above it).
    pub max_request_body_bytes: usize,
    /// Open connections at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// PEM certificate chain; with `tls_key_file`, serve HTTPS. Reloaded on SIGHUP and when
    /// the files change.
    pub tls_cert_file: String,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: String,
    /// File holding a bearer token; when set, every path but /healthz and /readyz needs
    /// `Authorization: Bearer <token>`.
    pub bearer_token_file: String,
    /// How often the TLS and token files are checked for changes (SIGHUP reloads at once).
    pub reload_interval: HumanDuration,
}

impl HttpConfig {
    /// The certificate and key files when HTTPS is configured; an error when only one of the
    /// two is set.
    pub fn tls_files(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        let one_missing = |missing: &str, set: &str| ConfigError {
            key: Some(format!("http.{missing}")),
            origin: "configuration".to_owned(),
            message: format!(
                "is empty but `http.{set}` is set; set both to serve HTTPS, or neither"
            ),
        };
        match (self.tls_cert_file.is_empty(), self.tls_key_file.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Ok(Some((
                PathBuf::from(&self.tls_cert_file),
                PathBuf::from(&self.tls_key_file),
            ))),
            (false, true) => Err(one_missing("tls_key_file", "tls_cert_file")),
            (true, false) => Err(one_missing("tls_cert_file", "tls_key_file")),
        }
    }

    /// The bearer token file, when authentication is configured.
    pub fn bearer_token_file(&self) -> Option<PathBuf> {
        (!self.bearer_token_file.is_empty()).then(|| PathBuf::from(&self.bearer_token_file))
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9412)),
            request_timeout: HumanDuration::secs(10),
            max_concurrent_requests: 64,
            max_request_body_bytes: 65536,
            max_connections: 256,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            bearer_token_file: String::new(),
            reload_interval: HumanDuration::secs(5),
        }
    }
}

/// `[prometheus]`: what /metrics renders.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Also render dcgm-exporter's default metric names, units and labels, so dashboards
    /// built for it (Grafana 12239) work unchanged.
    pub dcgm_compat: bool,
}

/// `[otlp]`: pushing metrics to an OpenTelemetry collector. Empty values fall back to the
/// standard `OTEL_EXPORTER_OTLP_*` variables, then to the OpenTelemetry defaults.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Collector URL, e.g. `http://otel-collector:4317` (gRPC) or `http://host:4318` (HTTP).
    /// Empty: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`; with
    /// neither set, OTLP push is off.
    pub endpoint: String,
    /// `grpc` or `http/protobuf`; empty: `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`.
    pub protocol: String,
    /// Time between pushes; empty: `OTEL_METRIC_EXPORT_INTERVAL` (ms), else 10s.
    pub interval: String,
    /// Deadline of one push; empty: `OTEL_EXPORTER_OTLP_TIMEOUT` (ms), else 10s.
    pub timeout: String,
    /// Extra request headers (e.g. an API key), merged over `OTEL_EXPORTER_OTLP_HEADERS`.
    pub headers: BTreeMap<String, String>,
    /// `gzip` or `none`; empty: `OTEL_EXPORTER_OTLP_COMPRESSION`, else none.
    pub compression: String,
    /// `cumulative` or `delta`; empty: `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`,
    /// else cumulative.
    pub temporality: String,
}

/// `[health]`: Xid capture and GPU health states.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Kernel log to read `NVRM: Xid` lines from when it is readable (systemd or privileged
    /// mode); empty turns kmsg capture off.
    pub kmsg_path: String,
    /// The same Xid on the same GPU seen by two sources within this window counts once.
    pub xid_dedup_window: HumanDuration,
    /// Recent Xid occurrences kept for /v1/health.
    pub max_events: usize,
    /// How long a GPU keeps a Degraded or Unhealthy state after its cause is gone.
    pub hold_time: HumanDuration,
    /// Window over which the share of time in hardware slowdown is measured.
    pub throttle_window: HumanDuration,
    /// Share of `throttle_window` with a hardware slowdown reason active (hw_slowdown,
    /// hw_thermal_slowdown, hw_power_brake_slowdown) that makes a GPU Degraded.
    pub hw_slowdown_ratio: f64,
    /// Per-Xid policy overrides, e.g. { "94" = "degraded:restart_app", "13" = "ignore" }:
    /// `ignore` or `degraded|unhealthy:ACTION`, checked at load (`health::Policy`).
    pub xid_overrides: BTreeMap<String, String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            kmsg_path: "/dev/kmsg".to_owned(),
            xid_dedup_window: HumanDuration::secs(10),
            max_events: 256,
            hold_time: HumanDuration::secs(600),
            throttle_window: HumanDuration::secs(300),
            hw_slowdown_ratio: 0.1,
            xid_overrides: BTreeMap::new(),
        }
    }
}

/// `[log]`: the agent's own logs (stderr).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `gpulse=debug,info`, …
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A positive duration written the human way (`500ms`, `1s`, `2m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// Parses `500ms`, `1s`, `1m 30s`; zero is refused because every duration here is an
    /// interval or a deadline.
    pub fn parse(text: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(text.trim()).map_err(|error| {
            format!("invalid duration {text:?} ({error}); use e.g. \"500ms\", \"1s\", \"2m\"")
        })?;
        if d.is_zero() {
            return Err(format!("duration {text:?} must be greater than zero"));
        }
        Ok(Self(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A configuration error: which key, where it came from, and what is wrong, on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key (`gpu.interval`) when known.
    pub key: Option<String>,
    /// `FILE:LINE:COLUMN`, `GPULSE_GPU_INTERVAL (environment)` or `--interval (flag)`.
    pub origin: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "config key `{key}` at {}: {}", self.origin, self.message),
            None => write!(f, "config at {}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One value set from outside the file: `section.key = raw`, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub section: String,
    pub key: String,
    pub raw: String,
    pub origin: String,
}

impl Override {
    /// A value given by a command-line flag.
    pub fn flag(section: &str, key: &str, raw: impl Into<String>, flag: &str) -> Self {
        Self {
            section: section.to_owned(),
            key: key.to_owned(),
            raw: raw.into(),
            origin: format!("{flag} (flag)"),
        }
    }
}

/// The config sections, used to split `GPULSE_<SECTION>_<KEY>`.
const SECTIONS: [&str; 10] = [
    "agent",
    "gpu",
    "host",
    "store",
    "http",
    "prometheus",
    "otlp",
    "health",
    "log",
    "wrap",
];

/// Picks the config overrides out of environment variables. Variables whose first word is
/// not a section (e.g. `GPULSE_REAL_GPU`) are not config and are left alone.
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let mut out: Vec<Override> = vars
        .into_iter()
        .filter_map(|(name, raw)| {
            let rest = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            let (section, key) = rest.split_once('_')?;
            SECTIONS.contains(&section).then(|| Override {
                section: section.to_owned(),
                key: key.to_owned(),
                raw,
                origin: format!("{name} (environment)"),
            })
        })
        .collect();
    // Environment order is arbitrary; sort so errors are reproducible.
    out.sort_by(|a, b| a.origin.cmp(&b.origin));
    out
}

impl Config {
    /// Parses a TOML document; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| toml_error(text, origin, &error))
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            key: None,
            origin: origin.clone(),
            message: format!("cannot read file: {error}"),
        })?;
        Self::from_toml(&text, &origin)
    }

    /// Loads the file (if any), then applies overrides in order (later wins).
    pub fn load(file: Option<&Path>, overrides: &[Override]) -> Result<Self, ConfigError> {
        let base = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let config = base.with_overrides(overrides)?;
        config.validate()?;
        Ok(config)
    }

    /// Rules that span several keys, checked once everything is applied (a file may set one
    /// key and the environment the other).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http.tls_files()?;
        crate::health::Policy::from_config(&self.health)?;
        self.wrap.check()?;
        let mut names = std::collections::BTreeSet::new();
        for (index, probe) in self.probe.iter().enumerate() {
            probe.check(index)?;
            if !names.insert(probe.name.as_str()) {
                return Err(ConfigError {
                    key: Some(format!("probe[{index}].name")),
                    origin: "configuration".to_owned(),
                    message: format!("duplicate probe name {:?}", probe.name),
                });
            }
        }
        Ok(())
    }

    /// Applies overrides one at a time, so an error names the variable or flag at fault.
    pub fn with_overrides(self, overrides: &[Override]) -> Result<Self, ConfigError> {
        let mut config = self;
        for o in overrides {
            config = config.with_override(o)?;
        }
        Ok(config)
    }

    fn with_override(self, o: &Override) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError {
            key: Some(format!("{}.{}", o.section, o.key)),
            origin: o.origin.clone(),
            message,
        };
        let mut root = toml::Table::try_from(&self).map_err(|e| fail(e.to_string()))?;
        let section = root
            .get_mut(&o.section)
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| fail(format!("unknown section `{}`", o.section)))?;
        let current = section.get(&o.key).ok_or_else(|| {
            fail(format!(
                "unknown key `{}` in section [{}]",
                o.key, o.section
            ))
        })?;
        let value = typed_value(current, &o.raw).map_err(fail)?;
        section.insert(o.key.clone(), value);
        Config::deserialize(toml::Value::Table(root)).map_err(|e| fail(e.message().to_owned()))
    }

    /// The node name to report: the configured one, else the OS hostname, else `unknown`.
    pub fn node_name(&self) -> String {
        if !self.agent.node_name.is_empty() {
            return self.agent.node_name.clone();
        }
        sysinfo_free_hostname().unwrap_or_else(|| "unknown".to_owned())
    }

    /// The NVML library to load, `None` for the system default.
    pub fn nvml_library(&self) -> Option<PathBuf> {
        (!self.gpu.nvml_library.is_empty()).then(|| PathBuf::from(&self.gpu.nvml_library))
    }
}

/// Reads the hostname from the kernel without pulling sysinfo into config.
fn sysinfo_free_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Converts a raw string from env or a flag into the TOML type the key already has, so that
/// `GPULSE_GPU_PROCESSES=false` is a bool and `GPULSE_AGENT_NODE_NAME=42` stays a string.
fn typed_value(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    use toml::Value;
    match current {
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("expected an integer, got {raw:?}")),
        Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("expected a number, got {raw:?}")),
        _ => {
            let doc: toml::Table = toml::from_str(&format!("v = {raw}"))
                .map_err(|e| format!("expected a TOML value, got {raw:?}: {}", e.message()))?;
            doc.get("v")
                .cloned()
                .ok_or_else(|| format!("expected a TOML value, got {raw:?}"))
        }
    }
}

/// Turns a toml error into one line naming the key, `file:line:column` and the problem.
fn toml_error(text: &str, origin: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().replace('\n', " ");
    let Some(span) = error.span() else {
        return ConfigError {
            key: None,
            origin: origin.to_owned(),
            message,
        };
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    ConfigError {
        key: key_at(text, start),
        origin: format!("{origin}:{line}:{column}"),
        message,
    }
}

/// Best-effort dotted key for the line holding byte offset `at`: the nearest `[section]`
/// (or `[[array]]`) header above it plus the key left of `=` on that line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = text[line_start..line_end].trim();
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))?;
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_owned(),
    })
}

/// Checks an `http://` or `https://` URL with a host: the only URLs probes fetch.
fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(['?', '#', ' ', '@']) {
        return Err(format!("{url:?} is not http(s)://host:port[/path]"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_the_default_and_mentions_every_key() {
        let parsed = Config::from_toml(EXAMPLE, "example").unwrap();
        assert_eq!(parsed, Config::default());
        let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let default = toml::Table::try_from(Config::default()).unwrap();
        for (section, keys) in &default {
            let keys = keys.as_table().unwrap();
            for key in keys.keys() {
                assert!(
                    example.get(section).and_then(|s| s.get(key)).is_some(),
                    "{section}.{key} missing from the example"
                );
            }
        }
    }

    #[test]
    fn example_probe_block_lists_every_probe_key_at_its_default() {
        // The commented `[[probe]]` block, uncommented: it must parse, show the defaults, and
        // name every key a probe has.
        let block: String = EXAMPLE
            .lines()
            .skip_while(|l| !l.starts_with("# [[probe]]"))
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let parsed = Config::from_toml(&block, "example probe").unwrap();
        let mut expected = ProbeConfig::new("llm", ProbeKind::Vllm, "http://127.0.0.1:8000");
        expected.expected_model = Some("meta-llama/Llama-3.1-8B-Instruct".to_owned());
        assert_eq!(parsed.probe, vec![expected]);
        let mut full = ProbeConfig::new("x", ProbeKind::Vllm, "http://x:1");
        full.bearer_token_file = "f".to_owned();
        full.bearer_token_env = "V".to_owned();
        full.expected_model = Some("m".to_owned());
        full.tls_ca_file = "ca".to_owned();
        full.tls_insecure_skip_verify = true;
        full.inference = true;
        full.inference_model = "m".to_owned();
        full.inference_input = "{}".to_owned();
        full.metrics = true;
        full.metrics_url = "u".to_owned();
        let keys = toml::Table::try_from(&full).unwrap();
        for key in keys.keys() {
            assert!(
                block.lines().any(|l| l.starts_with(&format!("{key} ")))
                    || block.contains(&format!("or {key} = ")),
                "probe key {key} missing from the example"
            );
        }
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let err = Config::from_toml("[gpu]\ninterval = \"1s\"\nintervall = \"2s\"\n", "a.toml")
            .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("gpu.intervall"));
        assert_eq!(err.origin, "a.toml:3:1");
        assert!(err.message.contains("unknown field"), "{}", err.message);
    }

    #[test]
    fn bad_duration_names_key_and_line() {
        let err = Config::from_toml("[host]\n\n interval = \"soon\"\n", "b.toml").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("host.interval"));
        assert!(err.origin.starts_with("b.toml:3:"), "{}", err.origin);
        assert!(err.message.contains("invalid duration"), "{}", err.message);
        let zero = Config::from_toml("[gpu]\ninterval = \"0s\"\n", "c.toml").unwrap_err();
        assert!(
            zero.message.contains("greater than zero"),
            "{}",
            zero.message
        );
    }

    #[test]
    fn bad_listen_address_is_rejected() {
        let err = Config::from_toml("[http]\nlisten = \"nowhere\"\n", "d.toml").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("http.listen"));
    }

    #[test]
    fn env_overrides_are_typed_and_attributed() {
        let vars = vec![
            ("GPULSE_GPU_INTERVAL".to_owned(), "500ms".to_owned()),
            ("GPULSE_GPU_PROCESSES".to_owned(), "false".to_owned()),
            ("GPULSE_AGENT_NODE_NAME".to_owned(), "42".to_owned()),
            ("GPULSE_REAL_GPU".to_owned(), "1".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let overrides = env_overrides(vars);
        assert_eq!(overrides.len(), 3);
        let c = Config::default().with_overrides(&overrides).unwrap();
        assert_eq!(c.gpu.interval, HumanDuration(Duration::from_millis(500)));
        assert!(!c.gpu.processes);
        assert_eq!(c.agent.node_name, "42");
    }

    #[test]
    fn env_errors_name_the_variable() {
        let bad = env_overrides(vec![("GPULSE_GPU_INTERVAL".to_owned(), "x".to_owned())]);
        let err = Config::default().with_overrides(&bad).unwrap_err();
        assert_eq!(err.origin, "GPULSE_GPU_INTERVAL (environment)");
        assert_eq!(err.key.as_deref(), Some("gpu.interval"));
        let unknown = env_overrides(vec![("GPULSE_GPU_SPEED".to_owned(), "1".to_owned())]);
        let err = Config::default().with_overrides(&unknown).unwrap_err();
        assert!(
            err.message.contains("unknown key `speed`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn flags_win_over_env() {
        let overrides = vec![
            env_overrides(vec![(
                "GPULSE_HTTP_LISTEN".to_owned(),
                "127.0.0.1:1".to_owned(),
            )])
            .remove(0),
            Override::flag("http", "listen", "127.0.0.1:2", "--listen"),
        ];
        let c = Config::default().with_overrides(&overrides).unwrap();
        assert_eq!(c.http.listen.port(), 2);
    }

    #[test]
    fn display_is_one_line() {
        let err = Config::from_toml("[gpu]\nmig = 3\n", "e.toml").unwrap_err();
        let line = err.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("config key `gpu.mig` at e.toml:2:"),
            "{line}"
        );
    }

    #[test]
    fn tls_needs_both_files() {
        let mut c = Config::default();
        assert_eq!(c.http.tls_files().unwrap(), None);
        c.http.tls_cert_file = "c.pem".to_owned();
        let err = c.validate().unwrap_err();
        assert_eq!(err.key.as_deref(), Some("http.tls_key_file"));
        assert!(err.message.contains("`http.tls_cert_file` is set"), "{err}");
        c.http.tls_key_file = "k.pem".to_owned();
        assert_eq!(
            c.http.tls_files().unwrap(),
            Some((PathBuf::from("c.pem"), PathBuf::from("k.pem")))
        );
        c.http.tls_cert_file.clear();
        let err = c.validate().unwrap_err();
        assert_eq!(err.key.as_deref(), Some("http.tls_cert_file"));
    }

    #[test]
    fn probes_parse_with_defaults_and_are_validated() {
        let c = Config::from_toml(
            "[[probe]]\nname = \"a\"\nkind = \"vllm\"\nurl = \"http://127.0.0.1:8000\"\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(c.probe.len(), 1);
        assert_eq!(c.probe[0].interval, HumanDuration::secs(10));
        assert_eq!(c.probe[0].timeout, HumanDuration::secs(2));
        assert_eq!(c.probe[0].max_body_bytes, 1 << 20);
        c.validate().unwrap();
        // Overrides round-trip a config with probes.
        let o = Override::flag("http", "listen", "127.0.0.1:2", "--listen");
        assert_eq!(c.clone().with_overrides(&[o]).unwrap().probe, c.probe);

        let err = Config::from_toml(
            "[[probe]]\nname = \"a\"\nkind = \"nope\"\nurl = \"http://x:1\"\n",
            "p.toml",
        )
        .unwrap_err();
        assert!(err.message.contains("unknown variant"), "{err}");

        let mut dup = c.clone();
        dup.probe.push(c.probe[0].clone());
        let err = dup.validate().unwrap_err();
        assert_eq!(err.key.as_deref(), Some("probe[1].name"));

        let mut bad = c.clone();
        bad.probe[0].url = "ftp://x".to_owned();
        assert_eq!(
            bad.validate().unwrap_err().key.as_deref(),
            Some("probe[0].url")
        );
        bad.probe[0] = ProbeConfig::new("t", ProbeKind::Tcp, "tcp://db:5432");
        bad.validate().unwrap();
        bad.probe[0].url = "db".to_owned();
        assert_eq!(
            bad.validate().unwrap_err().key.as_deref(),
            Some("probe[0].url")
        );
    }

    proptest::proptest! {
        #[test]
        fn durations_round_trip(ms in 1u64..10_000_000) {
            let d = HumanDuration(Duration::from_millis(ms));
            proptest::prop_assert_eq!(HumanDuration::parse(&d.to_string()).unwrap(), d);
        }

        #[test]
        fn arbitrary_documents_never_panic(doc in "\\PC{0,200}") {
            let _ = Config::from_toml(&doc, "fuzz.toml");
        }
    }
}
