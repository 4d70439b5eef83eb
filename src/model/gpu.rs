//! GPU readings: one sample per cycle, one device per GPU, and the typed label values
//! (clock, sensor, ECC kind and scope, throttle reason, …) each carrying both spellings.

use std::sync::Arc;
use std::time::SystemTime;

use super::*;

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
    /// NVML no longer lists the GPU (the device count fell): kept from the last cycle that
    /// saw it, with `lost` set, so its identity and `gpulse_gpu_lost` stay visible.
    pub missing: bool,
    pub utilization: Utilization,
    pub memory: MemoryReadings,
    /// GPU core temperature in °C.
    pub temperature_gpu_celsius: Option<f64>,
    /// HBM / memory temperature in °C.
    pub temperature_memory_celsius: Option<f64>,
    /// Thresholds in °C, labelled `slowdown`, `shutdown`, `memory_max`, `gpu_max`.
    pub temperature_thresholds: Arc<[(TempThreshold, f64)]>,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    /// Energy used since the driver was loaded, in joules.
    pub energy_joules: Option<f64>,
    /// Current clocks in Hz, labelled `graphics`, `sm`, `memory`, `video`.
    pub clocks_hertz: Vec<(Clock, f64)>,
    /// Maximum clocks in Hz, same labels as `clocks_hertz`.
    pub max_clocks_hertz: Arc<[(Clock, f64)]>,
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
    /// Per link; shared with the collector's cache, which serves it unchanged for most cycles.
    pub nvlinks: Arc<[NvLinkReadings]>,
    /// NVML GPM readings over the last cycle (Hopper and newer).
    pub profiling: Profiling,
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
    /// A PCIe or NVLink transfer direction: `tx`/`rx` on /metrics, OTel's
    /// `network.io.direction` values.
    Direction { Tx => "tx" / "transmit", Rx => "rx" / "receive" }
}

label_enum! {
    /// An SM pipe whose activity NVML GPM measures, in [`Profiling::pipes`] order: `tensor`
    /// (any tensor operation) and the non-tensor `fp64`, `fp32`, `fp16` math.
    Pipe {
        Tensor => "tensor" / "tensor",
        Fp64 => "fp64" / "fp64",
        Fp32 => "fp32" / "fp32",
        Fp16 => "fp16" / "fp16",
    }
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
    pub fn throughput(&self) -> [(Direction, Option<f64>); 2] {
        [
            (Direction::Tx, self.tx_bytes_per_second),
            (Direction::Rx, self.rx_bytes_per_second),
        ]
    }
}

/// Profiling readings from NVML GPM (GPU Performance Monitoring, Hopper and newer): averages
/// over the time between the previous cycle's GPM sample and this cycle's, so the first cycle
/// after NVML loads has none. Each is `None` where the GPU has no GPM or the metric failed.
/// (GPM's PCIe rates go into [`PcieReadings`].)
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Profiling {
    /// Fraction of the time the graphics or compute engine was active (0–1).
    pub graphics_engine_active: Option<f64>,
    /// Fraction of the SMs that were busy (at least one warp assigned), averaged (0–1).
    pub sm_active: Option<f64>,
    /// Resident warps over the SMs' theoretical maximum, averaged (0–1).
    pub sm_occupancy: Option<f64>,
    /// DRAM bandwidth used over its theoretical maximum (0–1).
    pub dram_active: Option<f64>,
    /// Fraction of the time the SMs used each pipe (0–1), in [`Pipe::ALL`] order.
    pub pipes: [Option<f64>; 4],
    /// NVLink throughput over all links, bytes per second.
    pub nvlink_tx_bytes_per_second: Option<f64>,
    pub nvlink_rx_bytes_per_second: Option<f64>,
}

impl Profiling {
    /// Pipe activity by pipe, `None` where not measured.
    pub fn pipes(&self) -> impl Iterator<Item = (Pipe, Option<f64>)> + '_ {
        Pipe::ALL.iter().copied().zip(self.pipes)
    }

    /// One pipe's activity.
    pub fn pipe(&self, pipe: Pipe) -> Option<f64> {
        self.pipes().find(|(p, _)| *p == pipe).and_then(|(_, v)| v)
    }

    /// NVLink throughput by direction, `None` where not measured.
    pub fn nvlink_throughput(&self) -> [(Direction, Option<f64>); 2] {
        [
            (Direction::Tx, self.nvlink_tx_bytes_per_second),
            (Direction::Rx, self.nvlink_rx_bytes_per_second),
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
