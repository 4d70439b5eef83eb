//! Plain sample types that collectors produce and exporters read: no I/O, no serde, no clocks.
//!
//! Every optional reading is an `Option` (or an empty list): `None` means the device said
//! NotSupported / NoPermission or the call failed, and exporters omit it. A reading is never
//! replaced by 0.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One completed GPU sampling cycle over every visible GPU.
#[derive(Debug, Clone)]
pub struct GpuSample {
    /// Wall-clock time at which the cycle finished.
    pub taken_at: SystemTime,
    /// Driver version as NVML reports it (e.g. `550.163.01`).
    pub driver_version: Option<String>,
    /// CUDA driver API version as `major.minor` (e.g. `12.4`).
    pub cuda_driver_version: Option<String>,
    /// One entry per GPU, in index order.
    pub devices: Vec<GpuDevice>,
}

/// What identifies a GPU; it does not change while the driver stays loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuIdentity {
    pub index: u32,
    /// `index` as a string, kept so exporters do not format it on every scrape.
    pub index_label: String,
    pub uuid: String,
    pub name: String,
    pub pci_bus_id: String,
    pub serial: Option<String>,
    pub vbios_version: Option<String>,
}

/// The readings of one GPU in one cycle.
#[derive(Debug, Clone, Default)]
pub struct GpuDevice {
    pub identity: Arc<GpuIdentity>,
    /// The driver reported the GPU as lost (fallen off the bus); no other reading is valid.
    pub lost: bool,
    pub utilization: Utilization,
    pub memory: MemoryReadings,
    /// GPU core temperature in °C.
    pub temperature_gpu_celsius: Option<f64>,
    /// HBM / memory temperature in °C.
    pub temperature_memory_celsius: Option<f64>,
    /// Thresholds in °C, labelled `slowdown`, `shutdown`, `memory_max`, `gpu_max`.
    pub temperature_thresholds: Vec<(TempThreshold, f64)>,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    /// Energy used since the driver was loaded, in joules.
    pub energy_joules: Option<f64>,
    /// Current clocks in Hz, labelled `graphics`, `sm`, `memory`, `video`.
    pub clocks_hertz: Vec<(Clock, f64)>,
    /// Maximum clocks in Hz, same labels as `clocks_hertz`.
    pub max_clocks_hertz: Vec<(Clock, f64)>,
    /// Performance state 0 (fastest) to 15.
    pub performance_state: Option<u32>,
    /// Fan speed per fan index, 0–1 of the maximum.
    pub fan_speed_ratio: Vec<(u32, f64)>,
    pub throttle: Option<ThrottleReasons>,
    /// Cumulative time spent throttled per policy, in seconds (`power`, `thermal`, …).
    pub throttle_seconds: Vec<(ThrottlePolicy, f64)>,
    /// ECC error counts as `(kind, scope, count)`: kind `corrected|uncorrected`,
    /// scope `volatile|aggregate`.
    pub ecc_errors: Vec<(EccKind, EccScope, u64)>,
    /// Retired pages per cause (`single_bit_ecc`, `double_bit_ecc`).
    pub retired_pages: Vec<(RetiredCause, u64)>,
    pub retired_pages_pending: Option<bool>,
    pub remapped_rows: Option<RemappedRows>,
    pub pcie: PcieReadings,
    pub nvlinks: Vec<NvLinkReadings>,
    /// `None` when process listing is off or unsupported; `Some(vec![])` means "none running".
    pub processes: Option<Vec<GpuProcess>>,
    pub mig: Option<MigReadings>,
    /// The driver's recovery verdict (`nvmlDeviceGetGpuRecoveryAction`): 0 none, 1 GPU reset,
    /// 2 node reboot, 3 drain P2P, 4 drain and reset.
    pub recovery_action: Option<u32>,
}

impl GpuDevice {
    /// Temperatures by sensor, `None` where the sensor is missing.
    pub fn temperatures(&self) -> [(Sensor, Option<f64>); 2] {
        [
            (Sensor::Gpu, self.temperature_gpu_celsius),
            (Sensor::Memory, self.temperature_memory_celsius),
        ]
    }
}

/// Utilization ratios (0–1) over the driver's last sampling period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Utilization {
    pub gpu: Option<f64>,
    pub memory: Option<f64>,
    pub encoder: Option<f64>,
    pub decoder: Option<f64>,
}

/// Framebuffer memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryReadings {
    pub total_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub reserved_bytes: Option<u64>,
}

/// A typed label value: its Prometheus label value and its OpenTelemetry attribute value.
/// Readings are keyed by these enums, not by strings, so a misspelt key cannot compile (a
/// string key that matched nothing silently dropped the reading).
pub trait LabelValue: Copy {
    fn prom(self) -> &'static str;
    fn otel(self) -> &'static str;
}

/// Declares a label enum with both spellings, in one place per value.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $prom:literal / $otel:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in label order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The Prometheus spelling (also the JSON one).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $prom),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl LabelValue for $name {
            fn prom(self) -> &'static str {
                self.as_str()
            }

            fn otel(self) -> &'static str {
                match self {
                    $(Self::$variant => $otel),+
                }
            }
        }
    };
}

label_enum! {
    /// A temperature sensor.
    Sensor { Gpu => "gpu" / "gpu", Memory => "memory" / "memory" }
}

label_enum! {
    /// A temperature threshold the driver reports.
    TempThreshold {
        Slowdown => "slowdown" / "slowdown",
        Shutdown => "shutdown" / "shutdown",
        MemoryMax => "memory_max" / "memory_max",
        GpuMax => "gpu_max" / "gpu_max",
    }
}

label_enum! {
    /// A clock domain.
    Clock {
        Graphics => "graphics" / "graphics",
        Sm => "sm" / "sm",
        Memory => "memory" / "memory",
        Video => "video" / "video",
    }
}

label_enum! {
    /// A named clock-event (throttle) reason bit (`gpu-exporters.md` §7.3).
    ThrottleReason {
        GpuIdle => "gpu_idle" / "gpu_idle",
        ApplicationsClocksSetting => "applications_clocks_setting" / "applications_clocks_setting",
        SwPowerCap => "sw_power_cap" / "sw_power_cap",
        HwSlowdown => "hw_slowdown" / "hw_slowdown",
        SyncBoost => "sync_boost" / "sync_boost",
        SwThermalSlowdown => "sw_thermal_slowdown" / "sw_thermal_slowdown",
        HwThermalSlowdown => "hw_thermal_slowdown" / "hw_thermal_slowdown",
        HwPowerBrakeSlowdown => "hw_power_brake_slowdown" / "hw_power_brake_slowdown",
        DisplayClockSetting => "display_clock_setting" / "display_clock_setting",
    }
}

label_enum! {
    /// A policy whose violation time NVML counts (the `reason` of the throttle time).
    ThrottlePolicy {
        Power => "power" / "power",
        Thermal => "thermal" / "thermal",
        SyncBoost => "sync_boost" / "sync_boost",
        BoardLimit => "board_limit" / "board_limit",
        LowUtilization => "low_utilization" / "low_utilization",
        Reliability => "reliability" / "reliability",
    }
}

label_enum! {
    /// Whether ECC corrected an error.
    EccKind { Corrected => "corrected" / "corrected", Uncorrected => "uncorrected" / "uncorrected" }
}

label_enum! {
    /// Since driver load (volatile) or over the board's life (aggregate).
    EccScope { Volatile => "volatile" / "volatile", Aggregate => "aggregate" / "aggregate" }
}

label_enum! {
    /// Why memory pages were retired.
    RetiredCause {
        SingleBitEcc => "single_bit_ecc" / "single_bit_ecc",
        DoubleBitEcc => "double_bit_ecc" / "double_bit_ecc",
    }
}

label_enum! {
    /// Why memory rows were remapped.
    RemapCause {
        Correctable => "correctable" / "correctable",
        Uncorrectable => "uncorrectable" / "uncorrectable",
    }
}

label_enum! {
    /// A PCIe transfer direction: `tx`/`rx` on /metrics, OTel's `network.io.direction` values.
    PcieDirection { Tx => "tx" / "transmit", Rx => "rx" / "receive" }
}

label_enum! {
    /// An NVLink data-link error counter, in [`NvLinkReadings::errors`] order.
    NvLinkCounter {
        Replay => "replay" / "replay",
        Recovery => "recovery" / "recovery",
        CrcFlit => "crc_flit" / "crc_flit",
        CrcData => "crc_data" / "crc_data",
    }
}

/// The clock-event (throttle) reason bitmasks NVML reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottleReasons {
    pub active: u64,
    pub supported: u64,
}

/// Named clock-event reason bits (`gpu-exporters.md` §7.3). Bits outside this table are
/// ignored rather than exported under a made-up name.
pub const THROTTLE_REASONS: [(u64, ThrottleReason); 9] = [
    (0x1, ThrottleReason::GpuIdle),
    (0x2, ThrottleReason::ApplicationsClocksSetting),
    (0x4, ThrottleReason::SwPowerCap),
    (0x8, ThrottleReason::HwSlowdown),
    (0x10, ThrottleReason::SyncBoost),
    (0x20, ThrottleReason::SwThermalSlowdown),
    (0x40, ThrottleReason::HwThermalSlowdown),
    (0x80, ThrottleReason::HwPowerBrakeSlowdown),
    (0x100, ThrottleReason::DisplayClockSetting),
];

impl ThrottleReasons {
    /// Every supported reason with whether it is active now, in table order.
    pub fn decoded(&self) -> impl Iterator<Item = (ThrottleReason, bool)> + '_ {
        THROTTLE_REASONS
            .iter()
            .filter(|(bit, _)| self.supported & bit != 0)
            .map(|(bit, name)| (*name, self.active & bit != 0))
    }
}

/// Row-remapping state (Ampere and newer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemappedRows {
    pub correctable: u64,
    pub uncorrectable: u64,
    pub pending: bool,
    pub failure: bool,
}

impl RemappedRows {
    /// The remapped row counts by cause.
    pub fn by_cause(&self) -> [(RemapCause, u64); 2] {
        [
            (RemapCause::Correctable, self.correctable),
            (RemapCause::Uncorrectable, self.uncorrectable),
        ]
    }
}

/// PCIe link readings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PcieReadings {
    pub link_generation: Option<u32>,
    pub link_width: Option<u32>,
    pub replay_count: Option<u64>,
    pub tx_bytes_per_second: Option<f64>,
    pub rx_bytes_per_second: Option<f64>,
}

impl PcieReadings {
    /// Throughput by direction, `None` where not measured.
    pub fn throughput(&self) -> [(PcieDirection, Option<f64>); 2] {
        [
            (PcieDirection::Tx, self.tx_bytes_per_second),
            (PcieDirection::Rx, self.rx_bytes_per_second),
        ]
    }
}

/// One NVLink link. Kept free of heap allocations: a GPU has up to 18 links and every
/// sample carries all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NvLinkReadings {
    pub link: u32,
    pub active: bool,
    /// Error counters in the order of [`NvLinkCounter::ALL`]; `None` where unsupported.
    pub errors: [Option<u64>; 4],
}

impl NvLinkReadings {
    /// The supported error counters as `(name, count)`.
    pub fn errors(&self) -> impl Iterator<Item = (NvLinkCounter, u64)> + '_ {
        NvLinkCounter::ALL
            .iter()
            .zip(self.errors)
            .filter_map(|(counter, n)| n.map(|n| (*counter, n)))
    }
}

/// Decimal label for small indices (links, fans, cores) without formatting on every scrape.
pub fn index_label(i: u32) -> &'static str {
    const LABELS: [&str; 32] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
        "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
    ];
    LABELS.get(i as usize).copied().unwrap_or("other")
}

/// A compute process using a GPU.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
    /// SM utilization ratio attributed to this process over the last sampling period.
    pub sm_utilization: Option<f64>,
    /// Memory-controller utilization ratio attributed to this process.
    pub memory_utilization: Option<f64>,
}

/// MIG mode and the MIG instances carved out of a GPU.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MigReadings {
    pub enabled: bool,
    pub pending_enabled: bool,
    pub instances: Vec<MigInstance>,
}

/// One MIG device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MigInstance {
    pub index: u32,
    pub uuid: String,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
}

/// One completed host sampling cycle.
#[derive(Debug, Clone, Default)]
pub struct HostSample {
    pub taken_at: Option<SystemTime>,
    /// Average CPU busy ratio (0–1) over all cores since the previous cycle.
    pub cpu_utilization: Option<f64>,
    /// Per-core busy ratio; empty unless `host.per_cpu` is on.
    pub per_cpu_utilization: Vec<(String, f64)>,
    pub cpu_count: usize,
    /// Load averages over 1, 5 and 15 minutes.
    pub load_average: Option<[f64; 3]>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub disks: Vec<DiskReadings>,
    pub networks: Vec<NetworkReadings>,
    pub uptime: Option<Duration>,
    pub boot_time_seconds: Option<u64>,
}

/// Space on one mounted filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskReadings {
    pub mount_point: String,
    pub device: String,
    pub filesystem: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Cumulative counters of one network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkReadings {
    pub interface: String,
    pub received_bytes: u64,
    pub transmitted_bytes: u64,
    pub received_packets: u64,
    pub transmitted_packets: u64,
    pub receive_errors: u64,
    pub transmit_errors: u64,
}

/// The numbers of one GPU in one cycle that trends and the score read. Fixed size and free of
/// heap allocations, so the store's window costs tens of bytes per GPU per cycle, not the
/// kilobytes of a full [`GpuDevice`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuPoint {
    pub index: u32,
    pub lost: bool,
    pub utilization: Option<f32>,
    pub memory_used_bytes: Option<u64>,
    pub power_watts: Option<f32>,
    pub temperature_celsius: Option<f32>,
    /// Active clock-event reason bits (see [`THROTTLE_REASONS`]).
    pub throttle_active: Option<u64>,
    pub ecc_uncorrected_volatile: Option<u64>,
    pub row_remap_pending: bool,
    pub row_remap_failure: bool,
    pub retired_pages_pending: bool,
}

impl From<&GpuDevice> for GpuPoint {
    fn from(d: &GpuDevice) -> Self {
        Self {
            index: d.identity.index,
            lost: d.lost,
            utilization: d.utilization.gpu.map(|u| u as f32),
            memory_used_bytes: d.memory.used_bytes,
            power_watts: d.power_watts.map(|w| w as f32),
            temperature_celsius: d.temperature_gpu_celsius.map(|t| t as f32),
            throttle_active: d.throttle.map(|t| t.active),
            ecc_uncorrected_volatile: d
                .ecc_errors
                .iter()
                .find(|(kind, scope, _)| {
                    *kind == EccKind::Uncorrected && *scope == EccScope::Volatile
                })
                .map(|(_, _, n)| *n),
            row_remap_pending: d.remapped_rows.is_some_and(|r| r.pending),
            row_remap_failure: d.remapped_rows.is_some_and(|r| r.failure),
            retired_pages_pending: d.retired_pages_pending == Some(true),
        }
    }
}

/// One GPU cycle in the store's window.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuWindowPoint {
    pub taken_at: SystemTime,
    pub gpus: Box<[GpuPoint]>,
}

impl From<&GpuSample> for GpuWindowPoint {
    fn from(s: &GpuSample) -> Self {
        Self {
            taken_at: s.taken_at,
            gpus: s.devices.iter().map(GpuPoint::from).collect(),
        }
    }
}

/// One host cycle in the store's window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostWindowPoint {
    pub taken_at: Option<SystemTime>,
    pub cpu_utilization: Option<f32>,
    pub memory_available_bytes: u64,
    pub load1: Option<f32>,
}

impl From<&HostSample> for HostWindowPoint {
    fn from(h: &HostSample) -> Self {
        Self {
            taken_at: h.taken_at,
            cpu_utilization: h.cpu_utilization.map(|u| u as f32),
            memory_available_bytes: h.memory_available_bytes,
            load1: h.load_average.map(|l| l[0] as f32),
        }
    }
}

/// Where an Xid was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XidSource {
    /// An NVML critical-Xid event (`nvmlEventSetWait`).
    NvmlEvent,
    /// A `NVRM: Xid (PCI:...): N, ...` line in the kernel log (`/dev/kmsg`).
    Kmsg,
    /// Inferred from an NVML return code (GPU_IS_LOST, RESET_REQUIRED) or a drop in the
    /// device count.
    ReturnCode,
}

impl XidSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NvmlEvent => "nvml_event",
            Self::Kmsg => "kmsg",
            Self::ReturnCode => "nvml_return_code",
        }
    }
}

/// One Xid occurrence, after de-duplication across sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidEvent {
    pub at: SystemTime,
    /// The GPU, when the source could tell (kmsg gives a PCI bus id, mapped to an index).
    pub gpu_index: Option<u32>,
    /// Empty when unknown.
    pub uuid: String,
    /// Empty when unknown.
    pub pci_bus_id: String,
    pub xid: u64,
    /// Every source that reported this occurrence (the first one first).
    pub sources: Vec<XidSource>,
    /// Free text from the source (kmsg message, pid), for people; never a metric label.
    pub detail: String,
}

/// How often one Xid was seen on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidCount {
    pub gpu_index: Option<u32>,
    pub uuid: String,
    pub xid: u64,
    pub count: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

/// The Xid history the store keeps: counts per (GPU, Xid) since start, and the most recent
/// occurrences (bounded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XidLog {
    pub counts: Vec<XidCount>,
    pub recent: Vec<XidEvent>,
}

/// What a probe found, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeState {
    /// Live, ready, and the expected model (if any) is listed.
    Up,
    /// Live but not ready yet (weights loading, Triton live-not-ready, 503 while starting).
    Loading,
    /// Ready, but the expected model is missing or readiness is partial.
    Degraded,
    /// Not reachable or answering wrong; see the reason.
    Down,
}

/// The same spelling on both exporters.
impl LabelValue for ProbeState {
    fn prom(self) -> &'static str {
        self.as_str()
    }

    fn otel(self) -> &'static str {
        self.as_str()
    }
}

impl ProbeState {
    pub const ALL: [Self; 4] = [Self::Up, Self::Loading, Self::Degraded, Self::Down];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Loading => "loading",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

/// Why a probe is not `up`: a bounded set, safe as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeReason {
    ConnectRefused,
    Timeout,
    HttpStatus,
    BadBody,
    ModelMissing,
    Tls,
    RedirectLoop,
    BodyTooLarge,
    Dns,
    /// Up but not ready (only with `loading`).
    NotReady,
}

impl ProbeReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::Timeout => "timeout",
            Self::HttpStatus => "http_status",
            Self::BadBody => "bad_body",
            Self::ModelMissing => "model_missing",
            Self::Tls => "tls",
            Self::RedirectLoop => "redirect_loop",
            Self::BodyTooLarge => "body_too_large",
            Self::Dns => "dns",
            Self::NotReady => "not_ready",
        }
    }
}

/// One check of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSample {
    pub state: ProbeState,
    pub reason: Option<ProbeReason>,
    /// For people (JSON API, logs): e.g. the HTTP status; never a label, never a secret.
    pub detail: String,
    /// How long the whole check took (readiness, and the model list when asked).
    pub latency: Duration,
    /// Models the server listed (bounded), when it has a model list.
    pub models: Vec<String>,
    pub checked_at: SystemTime,
}

/// Upper bounds (seconds) of the agent's own latency histograms: from a 5 ms first token on a
/// warm small model to a 2-minute answer under heavy load.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A latency histogram on [`LATENCY_BUCKETS`]: fixed size, whatever the request count.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    /// Observations at or below each bound (not cumulative; `+Inf` is `count`).
    pub per_bucket: [u64; LATENCY_BUCKETS.len()],
    pub count: u64,
    /// Sum of observations, seconds.
    pub sum: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            per_bucket: [0; LATENCY_BUCKETS.len()],
            count: 0,
            sum: 0.0,
        }
    }
}

impl LatencyHistogram {
    pub fn observe(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&bound| secs <= bound) {
            self.per_bucket[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    /// Estimates the `q` quantile (0..=1) like PromQL's `histogram_quantile` (see
    /// [`bucket_quantile`]). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let buckets = self
            .cumulative()
            .map(|(bound, n)| (bound, n as f64))
            .chain([(f64::INFINITY, self.count as f64)]);
        bucket_quantile(buckets, q)
    }

    /// `(upper bound, cumulative count)` per bucket, as Prometheus exposes them.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        LATENCY_BUCKETS
            .iter()
            .zip(self.per_bucket.iter())
            .scan(0u64, |total, (&bound, &n)| {
                *total += n;
                Some((bound, *total))
            })
    }
}

/// One synthetic inference request (the cheapest real request for the server's kind).
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceSample {
    /// A complete, well-formed answer arrived (2xx, parseable, at least one token or output).
    pub ok: bool,
    /// Why it failed; `None` when `ok`.
    pub reason: Option<ProbeReason>,
    /// For people (JSON API, logs): HTTP status, server error text (bounded); never a label.
    pub detail: String,
    /// The model named in the request; empty when the server picks.
    pub model: String,
    /// Time to the first token (streaming kinds) or first response byte (KServe v2).
    pub ttft: Option<Duration>,
    /// Sending the request to the last byte of the answer.
    pub duration: Duration,
    /// Tokens generated: the server's own count when it sends one, else streamed chunks.
    pub output_tokens: Option<u64>,
    /// Ollama only: the request (re)loaded the model, so the timing includes a load.
    pub caused_load: bool,
    pub at: SystemTime,
}

impl InferenceSample {
    /// Output tokens per second of the whole request (`output_tokens / duration`).
    pub fn tokens_per_second(&self) -> Option<f64> {
        let tokens = self.output_tokens?;
        let secs = self.duration.as_secs_f64();
        (self.ok && secs > 0.0).then(|| tokens as f64 / secs)
    }
}

/// A probe's synthetic-request history: counters and latency histograms since start.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceStats {
    pub ttft_slo: Duration,
    pub latency_slo: Duration,
    pub last: Option<InferenceSample>,
    pub succeeded: u64,
    pub failed: u64,
    /// Requests that succeeded within both SLOs.
    pub within_slo: u64,
    /// Requests that failed or missed an SLO.
    pub slo_violations: u64,
    pub output_tokens_total: u64,
    /// Successful requests only: a timeout is counted as a failure, not as a latency.
    pub ttft: LatencyHistogram,
    pub duration: LatencyHistogram,
}

impl InferenceStats {
    pub fn new(ttft_slo: Duration, latency_slo: Duration) -> Self {
        Self {
            ttft_slo,
            latency_slo,
            last: None,
            succeeded: 0,
            failed: 0,
            within_slo: 0,
            slo_violations: 0,
            output_tokens_total: 0,
            ttft: LatencyHistogram::default(),
            duration: LatencyHistogram::default(),
        }
    }

    /// Whether a request met both SLOs (a failed request never does).
    pub fn meets_slo(&self, sample: &InferenceSample) -> bool {
        sample.ok
            && sample.duration <= self.latency_slo
            && sample.ttft.is_none_or(|t| t <= self.ttft_slo)
    }

    pub fn apply(&mut self, sample: InferenceSample) {
        if sample.ok {
            self.succeeded += 1;
            if let Some(ttft) = sample.ttft {
                self.ttft.observe(ttft);
            }
            self.duration.observe(sample.duration);
            self.output_tokens_total += sample.output_tokens.unwrap_or(0);
        } else {
            self.failed += 1;
        }
        if self.meets_slo(&sample) {
            self.within_slo += 1;
        } else {
            self.slo_violations += 1;
        }
        self.last = Some(sample);
    }
}

/// A probe's scrapes of the server's own /metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerScrapes {
    pub attempts: u64,
    pub failures: u64,
    /// The last scrape's failure (`None` when it succeeded): reason and detail.
    pub last_error: Option<(ProbeReason, String)>,
    pub last_at: Option<SystemTime>,
    pub last_duration: Duration,
    /// What the last successful scrape lifted (kept while later scrapes fail).
    pub metrics: Option<ServerMetrics>,
}

impl ServerScrapes {
    pub fn apply(
        &mut self,
        result: Result<ServerMetrics, (ProbeReason, String)>,
        took: Duration,
        at: SystemTime,
    ) {
        self.attempts += 1;
        self.last_at = Some(at);
        self.last_duration = took;
        match result {
            Ok(metrics) => {
                self.last_error = None;
                self.metrics = Some(metrics);
            }
            Err(error) => {
                self.failures += 1;
                self.last_error = Some(error);
            }
        }
    }

    /// Whether the last scrape succeeded (`None` before the first).
    pub fn last_ok(&self) -> Option<bool> {
        self.last_at.map(|_| self.last_error.is_none())
    }
}

/// A span of time a probe was `down`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutage {
    pub start: SystemTime,
    /// `None` while the outage goes on.
    pub end: Option<SystemTime>,
    pub cause: ProbeReason,
}

/// A probe's latest check and outage history, as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStatus {
    pub name: String,
    pub kind: &'static str,
    pub interval: Duration,
    /// `None` until the first check finished.
    pub last: Option<ProbeSample>,
    /// The most recent outages, oldest first (bounded).
    pub outages: Vec<ProbeOutage>,
    /// Outages started since the agent started.
    pub outages_total: u64,
    /// How long the last finished outage lasted.
    pub last_recovery: Option<Duration>,
    /// Synthetic requests, when the probe sends them.
    pub inference: Option<InferenceStats>,
    /// Scrapes of the server's own metrics, when the probe reads them.
    pub server: Option<ServerScrapes>,
}

impl ProbeStatus {
    pub fn new(name: &str, kind: &'static str, interval: Duration) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            interval,
            last: None,
            outages: Vec::new(),
            outages_total: 0,
            last_recovery: None,
            inference: None,
            server: None,
        }
    }

    /// The same probe, scraping the server's own metrics.
    pub fn with_server_metrics(mut self) -> Self {
        self.server = Some(ServerScrapes::default());
        self
    }

    /// The same probe, sending synthetic requests judged against these SLOs.
    pub fn with_inference(mut self, ttft_slo: Duration, latency_slo: Duration) -> Self {
        self.inference = Some(InferenceStats::new(ttft_slo, latency_slo));
        self
    }

    /// Takes in a check: an outage starts when the probe goes `down`, and ends (recording
    /// the recovery time) at the first check that is not `down`. Keeps `max_outages`.
    pub fn apply(&mut self, sample: ProbeSample, max_outages: usize) {
        let at = sample.checked_at;
        let open = self.outages.last_mut().filter(|o| o.end.is_none());
        match (sample.state, sample.reason, open) {
            (ProbeState::Down, _, Some(_)) => {}
            (ProbeState::Down, reason, None) => {
                self.outages_total += 1;
                if max_outages > 0 {
                    if self.outages.len() >= max_outages {
                        self.outages.remove(0);
                    }
                    self.outages.push(ProbeOutage {
                        start: at,
                        end: None,
                        cause: reason.unwrap_or(ProbeReason::HttpStatus),
                    });
                }
            }
            (_, _, Some(open)) => {
                open.end = Some(at);
                self.last_recovery = Some(at.duration_since(open.start).unwrap_or_default());
            }
            (_, _, None) => {}
        }
        self.last = Some(sample);
    }
}

/// A sample from any collector, as handed to the store.
#[derive(Debug, Clone)]
pub enum Sample {
    Gpu(GpuSample),
    Host(HostSample),
}

/// The health of one collector as of its last cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorStatus {
    pub name: &'static str,
    pub interval: Duration,
    /// Cycles attempted.
    pub runs: u64,
    /// Cycles that failed or missed their deadline.
    pub failures: u64,
    /// Whether the last cycle produced a fresh sample.
    pub last_success: bool,
    pub last_duration: Duration,
    pub last_run_at: Option<SystemTime>,
    pub last_success_at: Option<SystemTime>,
    /// Why the last cycle failed, for the JSON API and logs (never a metric label).
    pub last_error: Option<String>,
    /// The failure class of the last cycle (`unavailable`, `deadline`, `failed`), bounded.
    pub last_error_kind: Option<&'static str>,
}

impl CollectorStatus {
    /// A collector that has not run yet.
    pub fn new(name: &'static str, interval: Duration) -> Self {
        Self {
            name,
            interval,
            runs: 0,
            failures: 0,
            last_success: false,
            last_duration: Duration::ZERO,
            last_run_at: None,
            last_success_at: None,
            last_error: None,
            last_error_kind: None,
        }
    }

    /// True when the data served is older than the last attempt: the last cycle failed
    /// but an earlier one succeeded.
    pub fn is_stale(&self) -> bool {
        !self.last_success && self.last_success_at.is_some()
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn latency_histogram_buckets_and_quantiles() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in [3, 40, 60, 70, 200_000] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.count, 5);
        assert!((h.sum - 200.173).abs() < 1e-9);
        let cumulative: Vec<_> = h.cumulative().collect();
        assert_eq!(cumulative[0], (0.005, 1));
        assert_eq!(cumulative[3], (0.05, 2));
        assert_eq!(cumulative[4], (0.1, 4));
        // The 200 s one is past every bound: only in +Inf.
        assert_eq!(cumulative.last(), Some(&(120.0, 4)));
        // Rank 2.5 falls in (0.05, 0.1] holding ranks 3..4: a quarter of the way in.
        assert!((h.quantile(0.5).unwrap() - 0.0625).abs() < 1e-9);
        assert_eq!(h.quantile(1.0), Some(120.0));
        assert_eq!(h.quantile(0.0), Some(0.0));
    }

    fn inference(ok: bool, ttft_ms: u64, total_ms: u64) -> InferenceSample {
        InferenceSample {
            ok,
            reason: (!ok).then_some(ProbeReason::Timeout),
            detail: String::new(),
            model: "m".to_owned(),
            ttft: ok.then(|| Duration::from_millis(ttft_ms)),
            duration: Duration::from_millis(total_ms),
            output_tokens: ok.then_some(4),
            caused_load: false,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn inference_stats_count_outcomes_slo_and_tokens() {
        let mut s = InferenceStats::new(Duration::from_millis(100), Duration::from_millis(500));
        s.apply(inference(true, 50, 200));
        s.apply(inference(true, 150, 200)); // first token too slow
        s.apply(inference(true, 50, 900)); // whole answer too slow
        s.apply(inference(false, 0, 10_000));
        assert_eq!((s.succeeded, s.failed), (3, 1));
        assert_eq!((s.within_slo, s.slo_violations), (1, 3));
        assert_eq!(s.output_tokens_total, 12);
        // Failures are not latencies.
        assert_eq!(s.duration.count, 3);
        assert_eq!(s.ttft.count, 3);
        assert_eq!(s.last.as_ref().map(|l| l.ok), Some(false));
        let fast = inference(true, 50, 200);
        assert_eq!(fast.tokens_per_second(), Some(20.0));
    }

    fn check(state: ProbeState, secs: u64) -> ProbeSample {
        ProbeSample {
            state,
            reason: (state == ProbeState::Down).then_some(ProbeReason::Timeout),
            detail: String::new(),
            latency: Duration::ZERO,
            models: Vec::new(),
            checked_at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn an_outage_opens_on_down_and_closes_with_its_recovery_time() {
        let mut s = ProbeStatus::new("p", "vllm", Duration::from_secs(1));
        s.apply(check(ProbeState::Up, 1), 4);
        assert_eq!((s.outages_total, s.outages.len()), (0, 0));
        s.apply(check(ProbeState::Down, 2), 4);
        s.apply(check(ProbeState::Down, 3), 4);
        assert_eq!(s.outages_total, 1);
        assert_eq!(s.outages[0].end, None);
        assert_eq!(s.outages[0].cause, ProbeReason::Timeout);
        assert_eq!(s.last_recovery, None);
        s.apply(check(ProbeState::Loading, 7), 4);
        assert_eq!(
            s.outages[0].end,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(7))
        );
        assert_eq!(s.last_recovery, Some(Duration::from_secs(5)));
        s.apply(check(ProbeState::Up, 8), 4);
        assert_eq!(s.outages_total, 1);
        assert_eq!(s.last.as_ref().map(|l| l.state), Some(ProbeState::Up));
    }

    #[test]
    fn the_outage_log_is_bounded_but_the_count_is_not() {
        let mut s = ProbeStatus::new("p", "tcp", Duration::from_secs(1));
        for i in 0..10 {
            s.apply(check(ProbeState::Down, i * 2), 3);
            s.apply(check(ProbeState::Up, i * 2 + 1), 3);
        }
        assert_eq!(s.outages_total, 10);
        assert_eq!(s.outages.len(), 3);
        assert_eq!(
            s.outages[2].start,
            SystemTime::UNIX_EPOCH + Duration::from_secs(18)
        );
        let mut none = ProbeStatus::new("p", "tcp", Duration::from_secs(1));
        none.apply(check(ProbeState::Down, 1), 0);
        none.apply(check(ProbeState::Up, 2), 0);
        assert_eq!((none.outages_total, none.outages.len()), (1, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_decode_lists_only_supported_reasons() {
        let t = ThrottleReasons {
            active: 0x8 | 0x40,
            supported: 0x1 | 0x8 | 0x40,
        };
        let decoded: Vec<_> = t.decoded().map(|(r, on)| (r.prom(), on)).collect();
        assert_eq!(
            decoded,
            vec![
                ("gpu_idle", false),
                ("hw_slowdown", true),
                ("hw_thermal_slowdown", true)
            ]
        );
    }

    #[test]
    fn window_points_keep_the_numbers_that_matter() {
        let device = GpuDevice {
            identity: Arc::new(GpuIdentity {
                index: 3,
                ..GpuIdentity::default()
            }),
            utilization: Utilization {
                gpu: Some(0.25),
                ..Utilization::default()
            },
            throttle: Some(ThrottleReasons {
                active: 0x40,
                supported: 0x1FF,
            }),
            ecc_errors: vec![
                (EccKind::Corrected, EccScope::Volatile, 9),
                (EccKind::Uncorrected, EccScope::Volatile, 2),
            ],
            remapped_rows: Some(RemappedRows {
                pending: true,
                ..RemappedRows::default()
            }),
            ..GpuDevice::default()
        };
        let p = GpuPoint::from(&device);
        assert_eq!(p.index, 3);
        assert_eq!(p.utilization, Some(0.25));
        assert_eq!(p.throttle_active, Some(0x40));
        assert_eq!(p.ecc_uncorrected_volatile, Some(2));
        assert!(p.row_remap_pending && !p.row_remap_failure);
        assert_eq!(p.power_watts, None);
        // The point is what keeps the window small: no heap, a few dozen bytes.
        assert!(std::mem::size_of::<GpuPoint>() <= 96);
    }

    #[test]
    fn stale_only_after_an_earlier_success() {
        let mut s = CollectorStatus::new("gpu", Duration::from_secs(1));
        assert!(!s.is_stale());
        s.last_success_at = Some(SystemTime::UNIX_EPOCH);
        s.last_success = false;
        assert!(s.is_stale());
        s.last_success = true;
        assert!(!s.is_stale());
    }
}

// ---- Inference-server metrics: what `collect::server_metrics::lift` reads from a server's own
// /metrics, under common names. Kept in one block at the end of the file. ----

/// A latency histogram as the server exposes it, in seconds: cumulative counts per upper bound.
///
/// Summed over the server's label sets (models, engines). A summary, or a pair of cumulative
/// counters (Triton's `_us` duration and request count, llama.cpp's seconds and tokens), comes
/// as `buckets` empty with `sum` and `count`, which still give the mean.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerHistogram {
    /// `(upper bound in seconds, observations ≤ it)`, bounds ascending, the last `+Inf` when the
    /// server exposes buckets; only bounds every summed label set has.
    pub buckets: Vec<(f64, f64)>,
    /// Observations since the server started.
    pub count: f64,
    /// Sum of the observations, seconds.
    pub sum: f64,
}

/// The `q` quantile (0–1) of cumulative `(upper bound, count)` buckets ending in `+Inf`, as
/// PromQL's `histogram_quantile` computes it: linear within the bucket the rank falls in, the
/// highest finite bound when it falls in `+Inf`. `None` without a `+Inf` bucket and another,
/// without observations, or for `q` outside 0–1.
pub fn bucket_quantile(buckets: impl IntoIterator<Item = (f64, f64)>, q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut buckets: Vec<(f64, f64)> = buckets
        .into_iter()
        .filter(|(le, count)| !le.is_nan() && count.is_finite())
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets.last()?.0 != f64::INFINITY {
        return None;
    }
    // A scrape that races an update can show a bucket below its predecessor; Prometheus lifts
    // such counts to keep them cumulative, and so do we.
    let mut running = 0.0_f64;
    for (_, count) in &mut buckets {
        running = running.max(*count);
        *count = running;
    }
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|(_, count)| *count >= rank)?;
    if i + 1 == buckets.len() {
        return buckets.get(i.checked_sub(1)?).map(|(le, _)| *le);
    }
    let (end, count) = *buckets.get(i)?;
    let (start, below) = match i.checked_sub(1) {
        Some(prev) => *buckets.get(prev)?,
        None if end <= 0.0 => return Some(end),
        None => (0.0, 0.0),
    };
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(start);
    }
    Some(start + (end - start) * (rank - below) / in_bucket)
}

impl ServerHistogram {
    /// The `q` quantile (0–1) in seconds (see [`bucket_quantile`]); `None` without buckets,
    /// observations, or for `q` outside 0–1.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        bucket_quantile(self.buckets.iter().copied(), q)
    }

    /// Mean observation in seconds; `None` before the first observation.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

/// The quality-relevant series of an inference server's own /metrics, under common names;
/// `None` = the server does not expose it (or not yet: most exporters publish a labelled series
/// only once it has a value). Counters are cumulative since the server started, summed over
/// models and engines; the caller takes rates.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerMetrics {
    /// Which server's names were found: "vllm", "sglang", "tgi", "triton", "trtllm",
    /// "llamacpp", "mlserver", or "unknown".
    pub dialect: &'static str,
    /// Requests being processed now (in the running batch), count.
    pub requests_running: Option<f64>,
    /// Requests queued and not yet scheduled, count.
    pub requests_waiting: Option<f64>,
    /// Requests finished successfully, counter.
    pub requests_succeeded_total: Option<f64>,
    /// Requests that failed on the server's side, counter.
    pub requests_failed_total: Option<f64>,
    /// Prompt (input) tokens processed, counter.
    pub prompt_tokens_total: Option<f64>,
    /// Generated (output) tokens, counter.
    pub generation_tokens_total: Option<f64>,
    /// KV-cache use, ratio 0–1; the highest of the server's engines.
    pub kv_cache_usage_ratio: Option<f64>,
    /// Requests preempted (evicted from the running batch and requeued), counter.
    pub preemptions_total: Option<f64>,
    /// Time to first token, seconds.
    pub time_to_first_token: Option<ServerHistogram>,
    /// End-to-end request latency as the server measures it, seconds.
    pub e2e_latency: Option<ServerHistogram>,
    /// Time between output tokens, seconds (per-request means for TGI; the overall mean for
    /// llama.cpp).
    pub inter_token_latency: Option<ServerHistogram>,
    /// Samples parsed and kept (only the families the lift reads).
    pub series: usize,
    /// Lines of the body that were not valid exposition syntax (skipped).
    pub invalid_lines: usize,
    /// The body hit a parse limit, so the values may be partial.
    pub truncated: bool,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            dialect: "unknown",
            requests_running: None,
            requests_waiting: None,
            requests_succeeded_total: None,
            requests_failed_total: None,
            prompt_tokens_total: None,
            generation_tokens_total: None,
            kv_cache_usage_ratio: None,
            preemptions_total: None,
            time_to_first_token: None,
            e2e_latency: None,
            inter_token_latency: None,
            series: 0,
            invalid_lines: 0,
            truncated: false,
        }
    }
}

// ------------------------------------------------------------------ jobs (`gpulse wrap`)

/// Upper bounds (seconds) of `gpulse_job_duration_seconds`: a crash loop (seconds), a batch
/// job (minutes to hours), a server (days, a week). Runs beyond the last go to `+Inf`.
pub const JOB_DURATION_BUCKETS: [f64; 9] = [
    1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0, 604800.0,
];

/// How a run of the wrapped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Exit code 0, no stop signal forwarded.
    Success,
    /// A non-zero exit code.
    Failure,
    /// Killed by a signal gpulse did not forward (and not the OOM killer).
    Signal,
    /// Did not succeed, and the container's cgroup counted an OOM kill during the run.
    Oom,
    /// Ended (any way but OOM) after gpulse forwarded SIGTERM or SIGINT: `docker stop`, an
    /// eviction, a redeploy.
    Stopped,
    /// The end was never recorded: the wrapper itself died with the child (a cgroup-wide OOM
    /// kill, SIGKILL of the container, a node failure). Found by the next wrapper.
    Unknown,
}

/// The same spelling on both exporters.
impl LabelValue for JobOutcome {
    fn prom(self) -> &'static str {
        self.as_str()
    }

    fn otel(self) -> &'static str {
        self.as_str()
    }
}

impl JobOutcome {
    pub const ALL: [Self; 6] = [
        Self::Success,
        Self::Failure,
        Self::Signal,
        Self::Oom,
        Self::Stopped,
        Self::Unknown,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Signal => "signal",
            Self::Oom => "oom",
            Self::Stopped => "stopped",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The outcome of a run that ended with `exit`: OOM first (a run that did not succeed
    /// while the cgroup counted an OOM kill), then stopped (gpulse forwarded a stop signal),
    /// then the exit itself.
    pub fn classify(exit: JobExit, stop_forwarded: bool, oom_kills: Option<u64>) -> Self {
        let succeeded = exit == JobExit::Code(0);
        if !succeeded && oom_kills.is_some_and(|n| n > 0) {
            return Self::Oom;
        }
        if stop_forwarded {
            return Self::Stopped;
        }
        match exit {
            JobExit::Code(0) => Self::Success,
            JobExit::Code(_) => Self::Failure,
            JobExit::Signal(_) => Self::Signal,
        }
    }
}

/// How the child process ended, as `waitpid` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobExit {
    Code(i32),
    Signal(i32),
}

impl JobExit {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => 128 + signal,
        }
    }
}

/// The child started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStart {
    /// Run number, counted from 1 across restarts when `agent.state_dir` is set.
    pub run: u64,
    pub at: SystemTime,
    /// The basename of the command (`vllm`, `python3`); arguments are never recorded, they
    /// may hold secrets (`--api-key`).
    pub program: String,
    pub pid: u32,
}

/// The child's readiness probe answered `up` for the first time in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReady {
    pub run: u64,
    pub at: SystemTime,
    /// From the child's start to ready.
    pub after_start: Duration,
    /// From the previous run's end to ready: the recovery time after a restart.
    pub recovery: Option<Duration>,
}

/// The child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    pub run: u64,
    pub at: SystemTime,
    pub program: String,
    pub pid: u32,
    pub started_at: SystemTime,
    pub outcome: JobOutcome,
    /// `None` for [`JobOutcome::Unknown`].
    pub exit: Option<JobExit>,
    /// `None` for [`JobOutcome::Unknown`].
    pub duration: Option<Duration>,
    /// OOM kills the container's cgroup counted during the run; `None` when unreadable.
    pub oom_kills: Option<u64>,
    /// The first stop signal (SIGTERM, SIGINT) gpulse forwarded, if any.
    pub stop_signal: Option<i32>,
    /// gpulse sent SIGKILL because the child outlived `agent.shutdown_grace_period` after a
    /// forwarded stop signal.
    pub killed_after_grace: bool,
}

/// One entry of the job's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    Started(JobStart),
    Ready(JobReady),
    Finished(JobEnd),
}

impl JobEvent {
    pub fn run(&self) -> u64 {
        match self {
            Self::Started(e) => e.run,
            Self::Ready(e) => e.run,
            Self::Finished(e) => e.run,
        }
    }

    pub fn at(&self) -> SystemTime {
        match self {
            Self::Started(e) => e.at,
            Self::Ready(e) => e.at,
            Self::Finished(e) => e.at,
        }
    }
}

/// Counts over every run recorded (restored from the state file across restarts).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobTotals {
    /// Runs started.
    pub starts: u64,
    /// Runs ended, per [`JobOutcome`] (in [`JobOutcome::ALL`] order).
    pub outcomes: [u64; 6],
    /// Runs whose duration is known, per bucket of [`JOB_DURATION_BUCKETS`] (not cumulative;
    /// the last is `+Inf`).
    pub duration_buckets: [u64; JOB_DURATION_BUCKETS.len() + 1],
    pub duration_sum_seconds: f64,
}

impl JobTotals {
    pub fn outcome(&self, outcome: JobOutcome) -> u64 {
        self.outcomes[outcome.index()]
    }

    /// Restarts: runs started after an earlier one.
    pub fn restarts(&self) -> u64 {
        self.starts.saturating_sub(1)
    }

    /// Runs whose duration is known (the histogram's count).
    pub fn duration_count(&self) -> u64 {
        self.duration_buckets.iter().sum()
    }

    fn apply(&mut self, event: &JobEvent) {
        match event {
            JobEvent::Started(_) => self.starts += 1,
            JobEvent::Ready(_) => {}
            JobEvent::Finished(end) => {
                self.outcomes[end.outcome.index()] += 1;
                if let Some(d) = end.duration {
                    let secs = d.as_secs_f64();
                    let bucket = JOB_DURATION_BUCKETS
                        .iter()
                        .position(|le| secs <= *le)
                        .unwrap_or(JOB_DURATION_BUCKETS.len());
                    self.duration_buckets[bucket] += 1;
                    self.duration_sum_seconds += secs;
                }
            }
        }
    }
}

/// The wrapped job as the store keeps it: totals, the current run, the last end, and the
/// most recent events (bounded).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobLog {
    pub totals: JobTotals,
    /// The run in progress.
    pub running: Option<JobStart>,
    /// Readiness of the run in progress, once its probe was up.
    pub ready: Option<JobReady>,
    /// The last run that ended (possibly before a restart).
    pub last_end: Option<JobEnd>,
    /// Oldest first.
    pub recent: Vec<JobEvent>,
    /// Runs up to this number were read back from the state file (started by earlier
    /// wrappers); 0 when nothing was.
    pub restored_through: u64,
}

impl JobLog {
    /// Takes in one event, keeping at most `max_events` of them.
    pub fn apply(&mut self, event: JobEvent, max_events: usize) {
        self.totals.apply(&event);
        match &event {
            JobEvent::Started(start) => {
                self.running = Some(start.clone());
                self.ready = None;
            }
            JobEvent::Ready(ready) => {
                if self.running.as_ref().is_some_and(|r| r.run == ready.run) {
                    self.ready = Some(ready.clone());
                }
            }
            JobEvent::Finished(end) => {
                if self.running.as_ref().is_some_and(|r| r.run == end.run) {
                    self.running = None;
                }
                self.last_end = Some(end.clone());
            }
        }
        if max_events == 0 {
            return;
        }
        while self.recent.len() >= max_events {
            self.recent.remove(0);
        }
        self.recent.push(event);
    }

    /// The exit code (shell convention) of the last run that ended with a known exit.
    pub fn last_exit_code(&self) -> Option<i32> {
        self.last_end
            .as_ref()
            .and_then(|e| e.exit)
            .map(JobExit::exit_code)
    }
}

#[cfg(test)]
mod job_tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn start(run: u64, secs: u64) -> JobEvent {
        JobEvent::Started(JobStart {
            run,
            at: at(secs),
            program: "vllm".to_owned(),
            pid: 7,
        })
    }

    fn end(run: u64, secs: u64, outcome: JobOutcome, exit: JobExit, took: u64) -> JobEvent {
        JobEvent::Finished(JobEnd {
            run,
            at: at(secs),
            program: "vllm".to_owned(),
            pid: 7,
            started_at: at(secs - took),
            outcome,
            exit: Some(exit),
            duration: Some(Duration::from_secs(took)),
            oom_kills: Some(0),
            stop_signal: None,
            killed_after_grace: false,
        })
    }

    #[test]
    fn outcomes_are_classified_oom_then_stopped_then_exit() {
        use JobExit::{Code, Signal as Killed};
        use JobOutcome::*;
        assert_eq!(JobOutcome::classify(Code(0), false, Some(0)), Success);
        assert_eq!(JobOutcome::classify(Code(3), false, None), Failure);
        assert_eq!(JobOutcome::classify(Killed(9), false, Some(0)), Signal);
        assert_eq!(JobOutcome::classify(Killed(9), false, None), Signal);
        assert_eq!(JobOutcome::classify(Killed(9), false, Some(1)), Oom);
        // A shell exiting 137 after its own child was OOM-killed.
        assert_eq!(JobOutcome::classify(Code(137), false, Some(2)), Oom);
        // A worker was OOM-killed but the job still succeeded.
        assert_eq!(JobOutcome::classify(Code(0), false, Some(1)), Success);
        assert_eq!(JobOutcome::classify(Code(0), true, Some(0)), Stopped);
        assert_eq!(JobOutcome::classify(Killed(9), true, Some(0)), Stopped);
        assert_eq!(JobOutcome::classify(Killed(9), true, Some(1)), Oom);
        assert_eq!(Killed(9).exit_code(), 137);
        assert_eq!(Code(3).exit_code(), 3);
        for o in JobOutcome::ALL {
            assert_eq!(JobOutcome::parse(o.as_str()), Some(o));
        }
    }

    #[test]
    fn the_log_counts_runs_restarts_and_durations_and_stays_bounded() {
        let mut log = JobLog::default();
        log.apply(start(1, 100), 3);
        assert_eq!(log.running.as_ref().map(|r| r.run), Some(1));
        log.apply(end(1, 105, JobOutcome::Failure, JobExit::Code(3), 5), 3);
        assert!(log.running.is_none());
        assert_eq!(log.last_exit_code(), Some(3));
        log.apply(start(2, 110), 3);
        log.apply(
            JobEvent::Ready(JobReady {
                run: 2,
                at: at(150),
                after_start: Duration::from_secs(40),
                recovery: Some(Duration::from_secs(45)),
            }),
            3,
        );
        assert_eq!(log.ready.as_ref().map(|r| r.run), Some(2));
        log.apply(
            end(2, 7310, JobOutcome::Signal, JobExit::Signal(9), 7200),
            3,
        );
        let t = &log.totals;
        assert_eq!(t.starts, 2);
        assert_eq!(t.restarts(), 1);
        assert_eq!(t.outcome(JobOutcome::Failure), 1);
        assert_eq!(t.outcome(JobOutcome::Signal), 1);
        assert_eq!(t.duration_count(), 2);
        assert_eq!(t.duration_buckets[1], 1, "5 s is in the le=10 bucket");
        assert_eq!(t.duration_buckets[6], 1, "2 h is in the le=14400 bucket");
        assert_eq!(t.duration_sum_seconds, 7205.0);
        assert_eq!(log.last_exit_code(), Some(137));
        assert_eq!(log.recent.len(), 3);
        assert_eq!(log.recent[0].run(), 2);
        // An unknown end has no duration and no exit code.
        log.apply(start(3, 8000), 3);
        log.apply(
            JobEvent::Finished(JobEnd {
                outcome: JobOutcome::Unknown,
                exit: None,
                duration: None,
                ..match end(3, 8001, JobOutcome::Unknown, JobExit::Code(0), 1) {
                    JobEvent::Finished(e) => e,
                    _ => unreachable!(),
                }
            }),
            3,
        );
        assert_eq!(log.totals.duration_count(), 2);
        assert_eq!(log.totals.outcome(JobOutcome::Unknown), 1);
        assert_eq!(log.last_exit_code(), None);
    }
}
