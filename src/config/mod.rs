//! The agent's configuration: [`Config`], one struct per TOML section, their defaults and
//! [`EXAMPLE`].
//!
//! Every field has a documented default (see [`EXAMPLE`], which `gpulse config example`
//! prints and a test keeps equal to [`Config::default`]). Unknown keys are errors. Values are
//! validated while they are parsed (durations must be positive, addresses must parse), so a
//! loaded [`Config`] is always usable and every error can name its key and where it came from.
//!
//! * `load`: file < `GPULSE_<SECTION>_<KEY>` environment < flags, and each value's origin.
//! * `probe`: `[[probe]]` and the one table of what each probe kind can do.
//! * `otlp`: the OTLP push settings, `[otlp]` over the `OTEL_*` variables.
//! * `score`: `[score]`, the provider-quality score's constants, price and claims.
//! * `report`: `[report]`, signed and hash-chained score reports.
//! * `events`: `[events]`, the event log's bounds and its OTLP log export.
//! * `kubernetes`: `[kubernetes]`, per-pod attribution from the kubelet's pod-resources socket.
//! * `files`: reading a file a setting names without waiting on it (regular files, ≤ 1 MiB).

mod events;
pub mod files;
mod kubernetes;
mod load;
mod otlp;
mod probe;
mod report;
mod score;

pub use events::EventsConfig;
pub use kubernetes::KubernetesConfig;
pub use load::{
    ConfigError, Loaded, MAX_SHOWN, Origins, Override, check_log_level, clip, env_overrides,
    environment, parse_listen, shown,
};
pub use otlp::{OtlpProtocol, OtlpSettings};
pub use probe::{
    Capabilities, LaunchAddress, LaunchCommand, LaunchMetrics, Launcher, ModelFrom, ModelList,
    ProbeConfig, ProbeKind, Readiness, Synthetic,
};
pub use report::ReportConfig;
pub use score::{ExpectConfig, ScoreConfig, ScoreWeights, parse_version};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The commented example configuration; every value in it is the default.
pub const EXAMPLE: &str = include_str!("../../packaging/gpulse.example.toml");

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
    pub score: ScoreConfig,
    pub report: ReportConfig,
    pub events: EventsConfig,
    pub kubernetes: KubernetesConfig,
    /// `[[probe]]`: inference servers and other endpoints to check; empty by default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probe: Vec<ProbeConfig>,
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
    /// Threads of the async runtime (HTTP, exporters, health, the event log). Blocking work
    /// (NVML, /proc, disk) has threads of its own; each idle worker costs wake-ups.
    pub worker_threads: NonZeroUsize,
    /// Not a key: the environment identity (the Akash lease), which `app::Parts::load` reads
    /// once, carried here so every consumer of the config sees the same one.
    #[serde(skip)]
    pub identity: crate::identity::Identity,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            shutdown_grace_period: HumanDuration::secs(5),
            labels: BTreeMap::new(),
            mode: ModeSetting::Auto,
            state_dir: String::new(),
            worker_threads: NonZeroUsize::MIN,
            identity: crate::identity::Identity::default(),
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
    /// The auto probe scrapes the server's own Prometheus metrics where it serves them
    /// (vllm, tgi, triton; sglang and llama-server when their metrics flag is on).
    pub auto_metrics: bool,
    /// The auto probe sends the synthetic request (vllm, tgi, sglang, llama-server, ollama;
    /// not triton or mlserver, whose request needs the model's `inference_input`).
    pub auto_inference: bool,
    /// Interval of that probe once ready (while starting it re-checks faster, so
    /// time-to-ready is precise whatever the interval).
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
            auto_metrics: true,
            auto_inference: true,
            probe_interval: HumanDuration::secs(10),
            max_events: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            state_max_bytes: 1 << 20,
        }
    }
}

impl WrapConfig {
    /// The smallest `state_max_bytes`: room for a few dozen job events.
    pub const MIN_STATE_BYTES: u64 = 16 * 1024;

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.state_max_bytes < Self::MIN_STATE_BYTES {
            return Err(ConfigError::at_key(
                "wrap.state_max_bytes",
                format!(
                    "{} is too small; use at least {}",
                    self.state_max_bytes,
                    Self::MIN_STATE_BYTES
                ),
            ));
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
    /// Sample NVML GPM (Hopper and newer) for profiling metrics: SM activity and occupancy,
    /// tensor and FP pipe activity, DRAM activity, PCIe and NVLink throughput, each averaged
    /// over the time between two cycles.
    pub gpm: bool,
    /// How long the readings that do not change while the driver runs (max clocks,
    /// temperature thresholds, supported clock-event reasons, fan count) are kept before they
    /// are read again; they are read again at once when a GPU's UUID changes.
    pub static_interval: HumanDuration,
    /// Where GPUs are expected (mode embedded or host), `/readyz` answers 503 once the GPU
    /// collector has gone this long since its start without reading a GPU.
    pub ready_grace: HumanDuration,
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
            gpm: true,
            static_interval: HumanDuration::secs(300),
            ready_grace: HumanDuration::secs(60),
        }
    }
}

/// `[host]`: the sysinfo collector.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    pub enabled: bool,
    /// Time between host cycles (not `gpu.interval`: `--interval` sets only that one).
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
    /// Address and port to listen on: `IP:PORT`, `HOST:PORT` (resolved at load), `:PORT` or
    /// `PORT` (every interface), `[IPv6]:PORT`.
    #[serde(deserialize_with = "load::deserialize_listen")]
    pub listen: SocketAddr,
    /// Requests taking longer than this get 503. Also bounds reading a request's headers, the
    /// TLS handshake, and how long an idle keep-alive connection is kept open.
    pub request_timeout: HumanDuration,
    /// A new connection must complete its TLS handshake and first request head within this
    /// (at most `request_timeout`); a silent or slow one is closed then, and shed earlier when
    /// all `max_connections` are taken, so liveness probes get through a flood.
    pub header_timeout: HumanDuration,
    /// Requests handled at once; beyond it requests get 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Largest request body accepted (413 above it).
    pub max_request_body_bytes: usize,
    /// Open connections at once. When all are taken, the oldest one still waiting for its
    /// first request head is closed for a new one; failing that, new ones wait in the kernel's
    /// accept queue.
    pub max_connections: usize,
    /// PEM certificate chain; with `tls_key_file`, serve HTTPS. Reloaded on SIGHUP and when
    /// the files change.
    pub tls_cert_file: String,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: String,
    /// File holding a bearer token; when set, every path but /healthz and /readyz needs
    /// `Authorization: Bearer <token>`.
    pub bearer_token_file: String,
    /// Name of an environment variable holding the bearer token (read once at start; for
    /// platforms without secret files). Mutually exclusive with `bearer_token_file`.
    pub bearer_token_env: String,
    /// How often the TLS and token files are checked for changes (SIGHUP reloads at once).
    pub reload_interval: HumanDuration,
    /// Longest wait for reading the TLS and token files, at start and on reload (a hung
    /// network mount); past it the load fails and the previous certificate and token stay.
    pub reload_timeout: HumanDuration,
}

impl HttpConfig {
    /// The certificate and key files when HTTPS is configured; an error when only one of the
    /// two is set. The error names the key that is set, so its origin is where to look.
    pub fn tls_files(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        let one_missing = |missing: &str, set: &str| {
            ConfigError::at_key(
                format!("http.{set}"),
                format!(
                    "is set but `http.{missing}` is empty; set both to serve HTTPS, or neither"
                ),
            )
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
            header_timeout: HumanDuration::secs(3),
            max_concurrent_requests: 64,
            max_request_body_bytes: 65536,
            max_connections: 256,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            bearer_token_file: String::new(),
            bearer_token_env: String::new(),
            reload_interval: HumanDuration::secs(5),
            reload_timeout: HumanDuration::secs(2),
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
    /// The spelling of the DCGM families' host label: `Hostname` (released dcgm-exporter) or
    /// `hostname` (dcgm-exporter's main branch since its PR #655).
    pub dcgm_hostname_label: DcgmHostnameLabel,
}

/// `[prometheus] dcgm_hostname_label`: exactly `Hostname` or `hostname` (checked by serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum DcgmHostnameLabel {
    /// `Hostname`, as every released dcgm-exporter (up to 4.8.2) spells it.
    #[default]
    #[serde(rename = "Hostname")]
    Capitalized,
    /// `hostname`, as dcgm-exporter's main branch spells it since PR #655.
    #[serde(rename = "hostname")]
    Lowercase,
}

impl DcgmHostnameLabel {
    /// The label name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Capitalized => "Hostname",
            Self::Lowercase => "hostname",
        }
    }
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
    /// PEM CA file trusted for an `https://` endpoint besides the built-in Mozilla roots;
    /// empty: `OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE` / `OTEL_EXPORTER_OTLP_CERTIFICATE`.
    pub ca_file: String,
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
    /// How long the GPU collector may miss `gpu.timeout` on every cycle (NVML hung: the
    /// served GPU data is stale) before every GPU is Unhealthy with reason `nvml_hung`.
    pub nvml_stale_after: HumanDuration,
    /// Longest time between two health evaluations when nothing new arrives. Health is
    /// evaluated after every GPU collector cycle and at once on an Xid or an operator clear;
    /// this clock only lets held reasons expire on a node where none of those happen. (The
    /// default stays under 4 s, the reach of tokio's finer timer wheel: re-armed after each
    /// GPU cycle, such a timer never wakes the agent while cycles come every second.)
    pub idle_interval: HumanDuration,
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
            // 15 missed 2 s deadlines: longer than any slow cycle seen on a healthy driver
            // (60 ms on an H200), short enough to drain a wedged node within a minute.
            nvml_stale_after: HumanDuration::secs(30),
            idle_interval: HumanDuration::secs(3),
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
    /// The longest duration accepted anywhere: 365 days. Every duration is an interval or a
    /// deadline, and one near `u64::MAX` seconds passed the check and then overflowed the
    /// first `Instant + duration` (an abort on the first connection for
    /// `http.request_timeout`).
    pub const MAX: Self = Self::secs(365 * 24 * 3600);

    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// Parses `500ms`, `1s`, `1m 30s`; zero is refused because every duration here is an
    /// interval or a deadline.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text_q = shown(text);
        let d = humantime::parse_duration(text.trim()).map_err(|error| {
            format!("invalid duration {text_q} ({error}); use e.g. \"500ms\", \"1s\", \"2m\"")
        })?;
        if d.is_zero() {
            return Err(format!("duration {text_q} must be greater than zero"));
        }
        if d > Self::MAX.0 {
            return Err(format!(
                "duration {text_q} is longer than {} days, the longest accepted",
                Self::MAX.0.as_secs() / 86_400
            ));
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

/// An unsigned count or size as `u64` (a `usize` always fits on the targets gpulse builds for).
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Config {
    /// Bounds every count and size key, far above any real use but low enough that no count
    /// overflows what it sizes (a semaphore of `http.max_concurrent_requests` permits panicked
    /// above 2^61) or keeps the config from being written back as TOML (integers up to
    /// i64::MAX). Errors carry no origin: the loader places them.
    pub(crate) fn check_limits(&self) -> Result<(), ConfigError> {
        const MILLION: u64 = 1_000_000;
        const GIB: u64 = 1 << 30;
        let mut limits: Vec<(String, u64, u64)> = vec![
            (
                "gpu.max_processes".into(),
                count(self.gpu.max_processes),
                100_000,
            ),
            (
                "host.max_devices".into(),
                count(self.host.max_devices),
                100_000,
            ),
            (
                "agent.worker_threads".into(),
                count(self.agent.worker_threads.get()),
                1024,
            ),
            (
                "store.window_samples".into(),
                count(self.store.window_samples.get()),
                MILLION,
            ),
            (
                "http.max_concurrent_requests".into(),
                count(self.http.max_concurrent_requests),
                MILLION,
            ),
            (
                "http.max_request_body_bytes".into(),
                count(self.http.max_request_body_bytes),
                GIB,
            ),
            (
                "http.max_connections".into(),
                count(self.http.max_connections),
                MILLION,
            ),
            (
                "health.max_events".into(),
                count(self.health.max_events),
                MILLION,
            ),
            (
                "wrap.max_events".into(),
                count(self.wrap.max_events.get()),
                MILLION,
            ),
            (
                "wrap.state_max_bytes".into(),
                self.wrap.state_max_bytes,
                GIB,
            ),
        ];
        limits.extend(
            self.events
                .bounds()
                .into_iter()
                .map(|(key, value, _, max)| (key.to_owned(), value, max)),
        );
        for (index, probe) in self.probe.iter().enumerate() {
            let key = |name: &str| format!("probe[{index}].{name}");
            limits.extend([
                (key("max_body_bytes"), count(probe.max_body_bytes), GIB),
                (
                    key("metrics_max_body_bytes"),
                    count(probe.metrics_max_body_bytes),
                    GIB,
                ),
                (
                    key("inference_max_tokens"),
                    u64::from(probe.inference_max_tokens),
                    MILLION,
                ),
            ]);
        }
        match limits.into_iter().find(|(_, value, max)| value > max) {
            Some((key, value, max)) => Err(ConfigError::at_key(
                key,
                format!("{value} is too large; at most {max}"),
            )),
            None => Ok(()),
        }
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

#[cfg(test)]
mod tests;
