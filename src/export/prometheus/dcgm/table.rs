//! The `DCGM_FI_*` table: each family's dcgm name, help text and the conversion of a
//! `GpuDevice` (and, for the per-instance fields, a `MigInstance`) reading into dcgm's unit.

use crate::model::{
    Clock, EccKind, EccScope, GpuDevice, MigInstance, NvLinkCounter, Pipe, RetiredCause,
    ThrottlePolicy,
};

/// One dcgm-exporter metric family.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// dcgm-exporter's exact name.
    pub name: &'static str,
    /// HELP text, as dcgm-exporter's CSV words it (with the unit gpulse really reports).
    pub help: &'static str,
    /// The reading of one GPU in dcgm's unit; `None` leaves that GPU's series out.
    pub(super) value: fn(&GpuDevice) -> Option<f64>,
    /// The reading of one MIG instance, for the fields dcgm-exporter reports per GPU instance
    /// (`super::mig`); `None` for the others.
    pub(super) mig: Option<fn(&MigInstance) -> Option<f64>>,
}

/// A family without per-instance series.
const fn gpu(
    name: &'static str,
    help: &'static str,
    value: fn(&GpuDevice) -> Option<f64>,
) -> Family {
    Family {
        name,
        help,
        value,
        mig: None,
    }
}

/// Every family rendered, in dcgm-exporter's CSV order (`DCGM_FI_DEV_FB_TOTAL`, which the
/// default CSV lacks, after the other framebuffer fields; the profiling fields last).
pub const FAMILIES: [Family; 47] = [
    gpu(
        "DCGM_FI_DEV_SM_CLOCK",
        "SM clock frequency (in MHz).",
        |d| clock_mhz(d, Clock::Sm),
    ),
    gpu(
        "DCGM_FI_DEV_MEM_CLOCK",
        "Memory clock frequency (in MHz).",
        |d| clock_mhz(d, Clock::Memory),
    ),
    gpu(
        "DCGM_FI_DEV_MEMORY_TEMP",
        "Memory temperature (in C).",
        |d| d.temperature_memory_celsius,
    ),
    gpu("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", |d| {
        d.temperature_gpu_celsius
    }),
    gpu("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", |d| {
        d.power_watts
    }),
    gpu(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "Total energy consumption since boot (in mJ).",
        |d| d.energy_joules.map(millijoules),
    ),
    gpu(
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "Total number of PCIe retries.",
        |d| d.pcie.replay_count.map(count),
    ),
    gpu("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", |d| {
        d.utilization.gpu.map(percent)
    }),
    gpu(
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "Memory utilization (in %).",
        |d| d.utilization.memory.map(percent),
    ),
    gpu("DCGM_FI_DEV_ENC_UTIL", "Encoder utilization (in %).", |d| {
        d.utilization.encoder.map(percent)
    }),
    gpu("DCGM_FI_DEV_DEC_UTIL", "Decoder utilization (in %).", |d| {
        d.utilization.decoder.map(percent)
    }),
    // The CSV's help says "(in us)", but DCGM's field (and NVML's violation time) is in ns.
    gpu(
        "DCGM_FI_DEV_POWER_VIOLATION",
        "Throttling duration due to power constraints (in ns).",
        |d| violation_ns(d, ThrottlePolicy::Power),
    ),
    gpu(
        "DCGM_FI_DEV_THERMAL_VIOLATION",
        "Throttling duration due to thermal constraints (in ns).",
        |d| violation_ns(d, ThrottlePolicy::Thermal),
    ),
    gpu(
        "DCGM_FI_DEV_SYNC_BOOST_VIOLATION",
        "Throttling duration due to sync-boost constraints (in ns).",
        |d| violation_ns(d, ThrottlePolicy::SyncBoost),
    ),
    gpu(
        "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION",
        "Throttling duration due to board limit constraints (in ns).",
        |d| violation_ns(d, ThrottlePolicy::BoardLimit),
    ),
    gpu(
        "DCGM_FI_DEV_LOW_UTIL_VIOLATION",
        "Throttling duration due to low utilization (in ns).",
        |d| violation_ns(d, ThrottlePolicy::LowUtilization),
    ),
    gpu(
        "DCGM_FI_DEV_RELIABILITY_VIOLATION",
        "Throttling duration due to reliability constraints (in ns).",
        |d| violation_ns(d, ThrottlePolicy::Reliability),
    ),
    Family {
        name: "DCGM_FI_DEV_FB_FREE",
        help: "Framebuffer memory free (in MiB).",
        value: |d| d.memory.free_bytes.map(mib),
        mig: Some(mig_free),
    },
    Family {
        name: "DCGM_FI_DEV_FB_USED",
        help: "Framebuffer memory used (in MiB).",
        value: |d| d.memory.used_bytes.map(mib),
        mig: Some(mig_used),
    },
    gpu(
        "DCGM_FI_DEV_FB_RESERVED",
        "Framebuffer memory reserved (in MiB).",
        |d| d.memory.reserved_bytes.map(mib),
    ),
    Family {
        name: "DCGM_FI_DEV_FB_TOTAL",
        help: "Total framebuffer memory (in MiB).",
        value: |d| d.memory.total_bytes.map(mib),
        mig: Some(mig_total),
    },
    gpu(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "Total number of single-bit volatile ECC errors.",
        |d| ecc(d, EccKind::Corrected, EccScope::Volatile),
    ),
    gpu(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "Total number of double-bit volatile ECC errors.",
        |d| ecc(d, EccKind::Uncorrected, EccScope::Volatile),
    ),
    gpu(
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "Total number of single-bit persistent ECC errors.",
        |d| ecc(d, EccKind::Corrected, EccScope::Aggregate),
    ),
    gpu(
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "Total number of double-bit persistent ECC errors.",
        |d| ecc(d, EccKind::Uncorrected, EccScope::Aggregate),
    ),
    gpu(
        "DCGM_FI_DEV_RETIRED_SBE",
        "Total number of retired pages due to single-bit errors.",
        |d| retired(d, RetiredCause::SingleBitEcc),
    ),
    gpu(
        "DCGM_FI_DEV_RETIRED_DBE",
        "Total number of retired pages due to double-bit errors.",
        |d| retired(d, RetiredCause::DoubleBitEcc),
    ),
    // NVML (and so DCGM) only says whether any page is pending, not how many.
    gpu(
        "DCGM_FI_DEV_RETIRED_PENDING",
        "Whether pages are pending retirement (1) or not (0).",
        |d| d.retired_pages_pending.map(flag),
    ),
    gpu(
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
        "Total number of NVLink flow-control CRC errors.",
        |d| nvlink_total(d, NvLinkCounter::CrcFlit),
    ),
    gpu(
        "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
        "Total number of NVLink data CRC errors.",
        |d| nvlink_total(d, NvLinkCounter::CrcData),
    ),
    gpu(
        "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
        "Total number of NVLink retries.",
        |d| nvlink_total(d, NvLinkCounter::Replay),
    ),
    gpu(
        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
        "Total number of NVLink recovery errors.",
        |d| nvlink_total(d, NvLinkCounter::Recovery),
    ),
    gpu(
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "Number of remapped rows for uncorrectable errors",
        |d| d.remapped_rows.map(|r| count(r.uncorrectable)),
    ),
    gpu(
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "Number of remapped rows for correctable errors",
        |d| d.remapped_rows.map(|r| count(r.correctable)),
    ),
    gpu(
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "Whether remapping of rows has failed",
        |d| d.remapped_rows.map(|r| flag(r.failure)),
    ),
    // NVML GPM's NVLink throughput over all links, bytes per second.
    gpu(
        "DCGM_FI_PROF_NVLINK_TX_BYTES",
        "The rate of data transmitted over NVLink, not including protocol headers, in bytes per second.",
        |d| d.profiling.nvlink_tx_bytes_per_second,
    ),
    gpu(
        "DCGM_FI_PROF_NVLINK_RX_BYTES",
        "The rate of data received over NVLink, not including protocol headers, in bytes per second.",
        |d| d.profiling.nvlink_rx_bytes_per_second,
    ),
    // The profiling (DCP) fields from NVML GPM, ratios (0-1) as DCGM reports them, averaged
    // over one GPU interval (DCGM averages over its own update period).
    gpu(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "Ratio of time the graphics engine is active.",
        |d| d.profiling.graphics_engine_active.map(tidy),
    ),
    gpu(
        "DCGM_FI_PROF_SM_ACTIVE",
        "The ratio of cycles an SM has at least 1 warp assigned.",
        |d| d.profiling.sm_active.map(tidy),
    ),
    gpu(
        "DCGM_FI_PROF_SM_OCCUPANCY",
        "The ratio of number of warps resident on an SM.",
        |d| d.profiling.sm_occupancy.map(tidy),
    ),
    gpu(
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "Ratio of cycles the tensor (HMMA) pipe is active.",
        |d| pipe(d, Pipe::Tensor),
    ),
    gpu(
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
        |d| d.profiling.dram_active.map(tidy),
    ),
    gpu(
        "DCGM_FI_PROF_PIPE_FP64_ACTIVE",
        "Ratio of cycles the fp64 pipes are active.",
        |d| pipe(d, Pipe::Fp64),
    ),
    gpu(
        "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
        "Ratio of cycles the fp32 pipes are active.",
        |d| pipe(d, Pipe::Fp32),
    ),
    gpu(
        "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
        "Ratio of cycles the fp16 pipes are active.",
        |d| pipe(d, Pipe::Fp16),
    ),
    // PCIe throughput in bytes per second: NVML GPM's average over the interval, else (with
    // `[gpu] pcie_throughput`) NVML's 20 ms sample.
    gpu(
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "The rate of data transmitted over the PCIe bus - including both protocol headers and data payloads - in bytes per second.",
        |d| d.pcie.tx_bytes_per_second,
    ),
    gpu(
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "The rate of data received over the PCIe bus - including both protocol headers and data payloads - in bytes per second.",
        |d| d.pcie.rx_bytes_per_second,
    ),
];

/// Drops the binary noise of a unit conversion (`0.55 * 100` is `55.00000000000001`), keeping
/// six decimals, far below what NVML resolves.
pub(super) fn tidy(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// A 0–1 ratio as dcgm's 0–100 %.
pub(super) fn percent(ratio: f64) -> f64 {
    tidy(ratio * 100.0)
}

/// Bytes as whole MiB, truncated like DCGM's integer fields.
pub(super) fn mib(bytes: u64) -> f64 {
    (bytes >> 20) as f64
}

/// Hz as MHz.
pub(super) fn mhz(hertz: f64) -> f64 {
    tidy(hertz / 1e6)
}

/// Joules as whole mJ (NVML counts energy in mJ).
pub(super) fn millijoules(joules: f64) -> f64 {
    (joules * 1e3).round()
}

/// Seconds as whole ns (NVML counts violation time in ns).
pub(super) fn nanoseconds(seconds: f64) -> f64 {
    (seconds * 1e9).round()
}

fn count(n: u64) -> f64 {
    n as f64
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn pipe(d: &GpuDevice, pipe: Pipe) -> Option<f64> {
    d.profiling.pipe(pipe).map(tidy)
}

fn clock_mhz(d: &GpuDevice, clock: Clock) -> Option<f64> {
    d.clocks_hertz
        .iter()
        .find(|(name, _)| *name == clock)
        .map(|(_, hz)| mhz(*hz))
}

fn violation_ns(d: &GpuDevice, policy: ThrottlePolicy) -> Option<f64> {
    d.throttle_seconds
        .iter()
        .find(|(name, _)| *name == policy)
        .map(|(_, s)| nanoseconds(*s))
}

fn ecc(d: &GpuDevice, kind: EccKind, scope: EccScope) -> Option<f64> {
    d.ecc_errors
        .iter()
        .find(|(k, s, _)| *k == kind && *s == scope)
        .map(|(_, _, n)| count(*n))
}

fn retired(d: &GpuDevice, cause: RetiredCause) -> Option<f64> {
    d.retired_pages
        .iter()
        .find(|(c, _)| *c == cause)
        .map(|(_, n)| count(*n))
}

/// One NVLink error counter summed over the links that report it; `None` when none does.
fn nvlink_total(d: &GpuDevice, counter: NvLinkCounter) -> Option<f64> {
    let slot = NvLinkCounter::ALL.iter().position(|c| *c == counter)?;
    d.nvlinks
        .iter()
        .filter_map(|l| l.errors.get(slot).copied().flatten())
        .fold(None, |sum: Option<u64>, n| {
            Some(sum.unwrap_or(0).saturating_add(n))
        })
        .map(count)
}

/// A MIG instance's used memory, whole MiB.
fn mig_used(i: &MigInstance) -> Option<f64> {
    i.memory_used_bytes.map(mib)
}

/// A MIG instance's memory, whole MiB.
fn mig_total(i: &MigInstance) -> Option<f64> {
    i.memory_total_bytes.map(mib)
}

/// A MIG instance's free memory: total − used (NVML's free figure is not kept), whole MiB.
fn mig_free(i: &MigInstance) -> Option<f64> {
    let total = i.memory_total_bytes?;
    let used = i.memory_used_bytes?;
    Some(mib(total.saturating_sub(used)))
}
