//! Reading one GPU: every metric group through nvml-wrapper, each failure only omitting that
//! reading (never 0), each call group timed through the cycle's [`Timer`].
//!
//! The readings that do not change while the driver runs (max clocks, temperature thresholds,
//! the supported clock-event reasons, the fan count) are kept in [`Statics`] once NVML gave a
//! definite answer, and read again when the GPU's UUID changes and every
//! `gpu.static_interval`: ten NVML calls per GPU and cycle fewer.
//!
//! One `nvmlDeviceGetFieldValues` call per GPU and cycle reads HBM temperature, row remapping,
//! the recovery action, ECC totals, retired pages, PCIe replays and the four NVLink error
//! totals; where a field does not answer, that reading's own call is made, so a driver
//! lacking a field reads as before. Each link's state and its four error counters (5 × links
//! calls) are kept in an [`NvLinkCache`] and read again only when a total moved or failed, an
//! Xid arrived, or every [`super::nvlink::NVLINK_RECHECK`] (see `nvlink.rs`). With 18 links
//! that is 98 calls per GPU and cycle fewer while nothing moves (18 link states, 72 NVLink
//! counters, 4 ECC, 2 retired-page counts, pending, replays), less the recheck's 90 calls
//! every 10 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nvml_wrapper::Device;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, PerformancePolicy, RetirementCause,
    TemperatureSensor, TemperatureThreshold,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::{FieldValueSample, Utilization as NvmlUtilization};
use nvml_wrapper::structs::device::FieldId;

use super::GpuOptions;
use super::gpm::GpmReadings;
use super::nvlink::{NvLinkCache, Totals, reread};
use super::timing::Timer;
use crate::model::{
    self, EccKind, EccScope, GpuDevice, GpuIdentity, GpuProcess, MemoryReadings, MigInstance,
    MigReadings, NvLinkReadings, PcieReadings, RemappedRows, RetiredCause, TempThreshold,
    ThrottlePolicy, ThrottleReasons, Utilization,
};

/// NVML field ids (nvml.h `NVML_FI_DEV_*`, values as in nvml-wrapper-sys 0.10's bindings) read
/// in one `nvmlDeviceGetFieldValues` call.
const FI_MEMORY_TEMP: u32 = 82;
const FI_REMAPPED_COR: u32 = 142;
const FI_REMAPPED_UNC: u32 = 143;
const FI_REMAPPED_PENDING: u32 = 144;
const FI_REMAPPED_FAILURE: u32 = 145;
/// `NVML_FI_DEV_GET_GPU_RECOVERY_ACTION` (nvml.h; nvml-wrapper 0.13 has no wrapper for
/// `nvmlDeviceGetGpuRecoveryAction`).
const FI_RECOVERY_ACTION: u32 = 230;
/// `NVML_FI_DEV_ECC_{SBE,DBE}_{VOL,AGG}_TOTAL`: single-bit (SBE) errors are NVML's corrected
/// ones, double-bit (DBE) its uncorrected ones (nvml.h: `NVML_SINGLE_BIT_ECC` =
/// `NVML_MEMORY_ERROR_TYPE_CORRECTED`), as `nvmlDeviceGetTotalEccErrors` counts them.
const FI_ECC_SBE_VOL_TOTAL: u32 = 3;
const FI_ECC_DBE_VOL_TOTAL: u32 = 4;
const FI_ECC_SBE_AGG_TOTAL: u32 = 5;
const FI_ECC_DBE_AGG_TOTAL: u32 = 6;
/// `NVML_FI_DEV_RETIRED_{SBE,DBE}`: the number of pages retired for multiple single-bit /
/// a double-bit ECC error (`nvmlDeviceGetRetiredPages`' count); `NVML_FI_DEV_RETIRED_PENDING`:
/// non-zero while a retirement waits for a reboot (`nvmlDeviceGetRetiredPagesPendingStatus`).
const FI_RETIRED_SBE: u32 = 29;
const FI_RETIRED_DBE: u32 = 30;
const FI_RETIRED_PENDING: u32 = 31;
/// `NVML_FI_DEV_PCIE_REPLAY_COUNTER` (`nvmlDeviceGetPcieReplayCounter`).
const FI_PCIE_REPLAY: u32 = 94;
/// `NVML_FI_DEV_NVLINK_*_ERROR_COUNT_TOTAL`: each per-link error counter summed over the
/// GPU's links; while they stand still, the per-link counters are not read again.
const FI_NVLINK_CRC_FLIT_TOTAL: u32 = 38;
const FI_NVLINK_CRC_DATA_TOTAL: u32 = 45;
const FI_NVLINK_REPLAY_TOTAL: u32 = 52;
const FI_NVLINK_RECOVERY_TOTAL: u32 = 59;
/// In the order of `model::NvLinkCounter::ALL` (as [`NVLINK_COUNTERS`]).
const FI_NVLINK_TOTALS: [u32; 4] = [
    FI_NVLINK_REPLAY_TOTAL,
    FI_NVLINK_RECOVERY_TOTAL,
    FI_NVLINK_CRC_FLIT_TOTAL,
    FI_NVLINK_CRC_DATA_TOTAL,
];

/// Every field id read per GPU and cycle.
const FIELD_IDS: [u32; 18] = [
    FI_MEMORY_TEMP,
    FI_REMAPPED_COR,
    FI_REMAPPED_UNC,
    FI_REMAPPED_PENDING,
    FI_REMAPPED_FAILURE,
    FI_RECOVERY_ACTION,
    FI_ECC_SBE_VOL_TOTAL,
    FI_ECC_DBE_VOL_TOTAL,
    FI_ECC_SBE_AGG_TOTAL,
    FI_ECC_DBE_AGG_TOTAL,
    FI_RETIRED_SBE,
    FI_RETIRED_DBE,
    FI_RETIRED_PENDING,
    FI_PCIE_REPLAY,
    FI_NVLINK_REPLAY_TOTAL,
    FI_NVLINK_RECOVERY_TOTAL,
    FI_NVLINK_CRC_FLIT_TOTAL,
    FI_NVLINK_CRC_DATA_TOTAL,
];

/// NVLink links probed per GPU (`NVML_NVLINK_MAX_LINKS`).
const MAX_NVLINKS: u32 = 18;

/// Percent (0–100) to ratio (0–1).
fn ratio(percent: u32) -> f64 {
    f64::from(percent) / 100.0
}

const MHZ: f64 = 1e6;

const CLOCKS: [(Clock, model::Clock); 4] = [
    (Clock::Graphics, model::Clock::Graphics),
    (Clock::SM, model::Clock::Sm),
    (Clock::Memory, model::Clock::Memory),
    (Clock::Video, model::Clock::Video),
];

const THRESHOLDS: [(TemperatureThreshold, TempThreshold); 4] = [
    (TemperatureThreshold::Slowdown, TempThreshold::Slowdown),
    (TemperatureThreshold::Shutdown, TempThreshold::Shutdown),
    (TemperatureThreshold::MemoryMax, TempThreshold::MemoryMax),
    (TemperatureThreshold::GpuMax, TempThreshold::GpuMax),
];

const VIOLATION_POLICIES: [(PerformancePolicy, ThrottlePolicy); 6] = [
    (PerformancePolicy::Power, ThrottlePolicy::Power),
    (PerformancePolicy::Thermal, ThrottlePolicy::Thermal),
    (PerformancePolicy::SyncBoost, ThrottlePolicy::SyncBoost),
    (PerformancePolicy::BoardLimit, ThrottlePolicy::BoardLimit),
    (
        PerformancePolicy::LowUtilization,
        ThrottlePolicy::LowUtilization,
    ),
    (PerformancePolicy::Reliability, ThrottlePolicy::Reliability),
];

/// In the order of `model::NvLinkCounter::ALL`.
const NVLINK_COUNTERS: [ErrorCounter; 4] = [
    ErrorCounter::DlReplay,
    ErrorCounter::DlRecovery,
    ErrorCounter::DlCrcFlit,
    ErrorCounter::DlCrcData,
];

/// One GPU's readings that do not change while the driver runs; `None` until NVML gave a
/// definite answer (a value, or "not supported"), so a transient failure is asked again next
/// cycle.
#[derive(Debug, Clone)]
pub(super) struct Statics {
    /// The GPU they belong to; another UUID at the index reads them again.
    uuid: String,
    read_at: Instant,
    max_clocks: Option<Arc<[(model::Clock, f64)]>>,
    thresholds: Option<Arc<[(TempThreshold, f64)]>>,
    /// `Some(None)`: NVML cannot tell (then no clock-event reasons are reported).
    supported_throttle: Option<Option<u64>>,
    fans: Option<u32>,
}

impl Statics {
    fn new(uuid: &str) -> Self {
        Self {
            uuid: uuid.to_owned(),
            read_at: Instant::now(),
            max_clocks: None,
            thresholds: None,
            supported_throttle: None,
            fans: None,
        }
    }

    /// Those of GPU `uuid` in `slot`, started over when another GPU is there or they are
    /// older than `refresh`.
    pub(super) fn for_gpu<'a>(
        slot: &'a mut Option<Statics>,
        uuid: &str,
        refresh: Duration,
    ) -> &'a mut Statics {
        let stale = slot
            .as_ref()
            .is_none_or(|s| s.uuid != uuid || s.read_at.elapsed() >= refresh);
        if stale {
            *slot = Some(Self::new(uuid));
        }
        slot.get_or_insert_with(|| Self::new(uuid))
    }
}

/// Whether NVML's answer holds while the driver runs: a value, or a refusal that does not
/// change (not supported, no such symbol or argument, no permission).
fn definite<T>(result: &Result<T, NvmlError>) -> bool {
    matches!(
        result,
        Ok(_)
            | Err(NvmlError::NotSupported
                | NvmlError::FailedToLoadSymbol(_)
                | NvmlError::InvalidArg
                | NvmlError::NoPermission)
    )
}

/// The values of `calls` that answered, and whether every answer was definite.
fn read_all<K: Copy, L: Copy, V>(
    keys: &[(K, L)],
    call: impl Fn(K) -> Result<V, NvmlError>,
    value: impl Fn(V) -> f64,
) -> (Arc<[(L, f64)]>, bool) {
    let mut all_definite = true;
    let mut out = Vec::with_capacity(keys.len());
    for (key, label) in keys {
        let result = call(*key);
        all_definite &= definite(&result);
        if let Ok(v) = result {
            out.push((*label, value(v)));
        }
    }
    (out.into(), all_definite)
}

/// `cached` when NVML answered it definitely before; else `read` now, kept when definite.
/// The readings are `Arc`s shared with every sample, so serving them costs no copy.
fn cached<T: Clone>(cached: &mut Option<T>, read: impl FnOnce() -> (T, bool)) -> T {
    if let Some(value) = cached {
        return value.clone();
    }
    let (value, keep) = read();
    if keep {
        *cached = Some(value.clone());
    }
    value
}

/// What the sampler read before [`read_device`]: the utilization rates (they also tell
/// whether the GPU is lost) and this cycle's GPM readings.
pub(super) struct Readings {
    pub(super) rates: Option<NvmlUtilization>,
    pub(super) gpm: GpmReadings,
}

/// What the sampler keeps of one GPU from one cycle to the next.
pub(super) struct Kept<'a> {
    /// The timestamp of the newest process-utilization sample seen.
    pub(super) process_util_seen: &'a mut u64,
    pub(super) statics: &'a mut Statics,
    /// The last per-link NVLink read; `None` before the first.
    pub(super) nvlinks: &'a mut Option<NvLinkCache>,
    /// An Xid arrived since the last cycle: NVLink is read again whatever the cache says.
    pub(super) xid_news: bool,
}

/// Reads every metric of one device; each failure only omits that reading.
pub(super) fn read_device(
    device: &Device<'_>,
    identity: Arc<GpuIdentity>,
    readings: Readings,
    options: &GpuOptions,
    kept: Kept<'_>,
    t: &mut Timer,
) -> GpuDevice {
    let Readings { rates, gpm } = readings;
    let Kept {
        process_util_seen,
        statics,
        nvlinks: nvlink_cache,
        xid_news,
    } = kept;
    let memory = t.time("memory", || device.memory_info()).ok();
    let fields = t.time("field_values", || read_fields(device));
    let field = |id: u32| field_slot(id).and_then(|i| fields.get(i).copied().flatten());

    let remapped_rows = match (
        field(FI_REMAPPED_COR),
        field(FI_REMAPPED_UNC),
        field(FI_REMAPPED_PENDING),
        field(FI_REMAPPED_FAILURE),
    ) {
        (Some(cor), Some(unc), Some(pending), Some(failure)) => Some(RemappedRows {
            correctable: cor,
            uncorrectable: unc,
            pending: pending != 0,
            failure: failure != 0,
        }),
        _ => None,
    };

    // Each from its field where the field answered, else through its own call (as before
    // the fields were read), so a driver lacking a field gives the same reading.
    let mut ecc_errors = Vec::new();
    for (error, kind, [volatile, aggregate]) in [
        (
            MemoryError::Corrected,
            EccKind::Corrected,
            [FI_ECC_SBE_VOL_TOTAL, FI_ECC_SBE_AGG_TOTAL],
        ),
        (
            MemoryError::Uncorrected,
            EccKind::Uncorrected,
            [FI_ECC_DBE_VOL_TOTAL, FI_ECC_DBE_AGG_TOTAL],
        ),
    ] {
        for (counter, scope, id) in [
            (EccCounter::Volatile, EccScope::Volatile, volatile),
            (EccCounter::Aggregate, EccScope::Aggregate, aggregate),
        ] {
            let n = field(id).or_else(|| {
                t.time("ecc", || device.total_ecc_errors(error, counter))
                    .ok()
            });
            if let Some(n) = n {
                ecc_errors.push((kind, scope, n));
            }
        }
    }

    let retired_pages = [
        (
            RetirementCause::MultipleSingleBitEccErrors,
            RetiredCause::SingleBitEcc,
            FI_RETIRED_SBE,
        ),
        (
            RetirementCause::DoubleBitEccError,
            RetiredCause::DoubleBitEcc,
            FI_RETIRED_DBE,
        ),
    ]
    .into_iter()
    .filter_map(|(cause, label, id)| {
        field(id)
            .or_else(|| {
                t.time("retired_pages", || device.retired_pages(cause))
                    .ok()
                    .map(|pages| pages.len() as u64)
            })
            .map(|pages| (label, pages))
    })
    .collect();

    let mut pcie_rate = |counter| {
        if options.pcie_throughput {
            // NVML reports KB/s. Each call waits for a fresh 20 ms sample in the driver.
            t.time("pcie_throughput", || device.pcie_throughput(counter))
                .ok()
                .map(|kb| f64::from(kb) * 1024.0)
        } else {
            None
        }
    };
    // GPM's rates average the whole interval and cost nothing more; NVML's own call is the
    // fallback on GPUs without GPM (and on GPM's first cycle).
    let tx_bytes_per_second = gpm.pcie_tx.or_else(|| pcie_rate(PcieUtilCounter::Send));
    let rx_bytes_per_second = gpm.pcie_rx.or_else(|| pcie_rate(PcieUtilCounter::Receive));

    let nvlinks = if options.nvlink {
        let totals = FI_NVLINK_TOTALS.map(field);
        // All four or none: a missing total could hide its counter's moves.
        let totals = totals
            .iter()
            .all(Option::is_some)
            .then(|| totals.map(|n| n.unwrap_or_default()));
        t.time("nvlink", || {
            read_nvlinks(device, &identity.uuid, totals, xid_news, nvlink_cache)
        })
    } else {
        Arc::default()
    };
    let mut profiling = gpm.profiling;
    if nvlinks.is_empty() {
        // NVLink off, or a board without links: GPM's NVLink rates would be a made-up 0.
        profiling.nvlink_tx_bytes_per_second = None;
        profiling.nvlink_rx_bytes_per_second = None;
    }

    GpuDevice {
        identity,
        lost: false,
        missing: false,
        utilization: Utilization {
            gpu: rates.as_ref().map(|r| ratio(r.gpu)),
            memory: rates.as_ref().map(|r| ratio(r.memory)),
            encoder: t
                .time("encoder_decoder", || device.encoder_utilization())
                .ok()
                .map(|u| ratio(u.utilization)),
            decoder: t
                .time("encoder_decoder", || device.decoder_utilization())
                .ok()
                .map(|u| ratio(u.utilization)),
        },
        memory: MemoryReadings {
            total_bytes: memory.as_ref().map(|m| m.total),
            used_bytes: memory.as_ref().map(|m| m.used),
            free_bytes: memory.as_ref().map(|m| m.free),
            reserved_bytes: memory.as_ref().map(|m| m.reserved),
        },
        temperature_gpu_celsius: t
            .time("temperature", || device.temperature(TemperatureSensor::Gpu))
            .ok()
            .map(f64::from),
        temperature_memory_celsius: field(FI_MEMORY_TEMP)
            // Some boards report 0 for "no HBM sensor"; a real HBM reading is never 0 °C.
            .filter(|t| *t > 0)
            .map(|t| t as f64),
        temperature_thresholds: cached(&mut statics.thresholds, || {
            t.time("temperature_thresholds", || {
                read_all(
                    &THRESHOLDS,
                    |threshold| device.temperature_threshold(threshold),
                    f64::from,
                )
            })
        }),
        power_watts: t
            .time("power", || device.power_usage())
            .ok()
            .map(|mw| f64::from(mw) / 1000.0),
        power_limit_watts: t
            .time("power_limit", || device.enforced_power_limit())
            .ok()
            .map(|mw| f64::from(mw) / 1000.0),
        energy_joules: t
            .time("energy", || device.total_energy_consumption())
            .ok()
            .map(|mj| mj as f64 / 1000.0),
        clocks_hertz: t.time("clocks", || read_clocks(|c| device.clock_info(c))),
        max_clocks_hertz: cached(&mut statics.max_clocks, || {
            t.time("max_clocks", || {
                read_all(
                    &CLOCKS,
                    |c| device.max_clock_info(c),
                    |mhz| f64::from(mhz) * MHZ,
                )
            })
        }),
        performance_state: t
            .time("performance_state", || device.performance_state())
            .ok()
            .map(|p| p.as_c())
            .filter(|p| *p <= 15),
        fan_speed_ratio: t.time("fans", || {
            let fans = cached(&mut statics.fans, || {
                let count = device.num_fans();
                let keep = definite(&count);
                (count.unwrap_or(0), keep)
            })
            .min(16);
            (0..fans)
                .filter_map(|i| device.fan_speed(i).ok().map(|pct| (i, ratio(pct))))
                .collect()
        }),
        throttle: t.time("throttle_reasons", || {
            let supported = cached(&mut statics.supported_throttle, || {
                let supported = device.supported_throttle_reasons();
                let keep = definite(&supported);
                (supported.ok().map(|s| s.bits()), keep)
            })?;
            let active = device.current_throttle_reasons().ok()?;
            Some(ThrottleReasons {
                active: active.bits(),
                supported,
            })
        }),
        throttle_seconds: t.time("violations", || {
            VIOLATION_POLICIES
                .iter()
                .filter_map(|(policy, label)| {
                    device
                        .violation_status(*policy)
                        .ok()
                        .map(|v| (*label, v.violation_time as f64 / 1e9))
                })
                .collect()
        }),
        ecc_errors,
        retired_pages,
        retired_pages_pending: field(FI_RETIRED_PENDING).map(|v| v != 0).or_else(|| {
            t.time("retired_pages", || device.are_pages_pending_retired())
                .ok()
        }),
        remapped_rows,
        pcie: PcieReadings {
            link_generation: t.time("pcie", || device.current_pcie_link_gen()).ok(),
            link_width: t.time("pcie", || device.current_pcie_link_width()).ok(),
            replay_count: field(FI_PCIE_REPLAY).or_else(|| {
                t.time("pcie", || device.pcie_replay_counter())
                    .ok()
                    .map(u64::from)
            }),
            tx_bytes_per_second,
            rx_bytes_per_second,
        },
        profiling,
        nvlinks,
        processes: if options.processes {
            t.time("processes", || {
                read_processes(device, options.max_processes, process_util_seen)
            })
        } else {
            None
        },
        mig: if options.mig {
            t.time("mig", || read_mig(device))
        } else {
            None
        },
        recovery_action: field(FI_RECOVERY_ACTION).and_then(|v| u32::try_from(v).ok()),
    }
}

/// Reads one value per clock domain (MHz from NVML), as Hz; unsupported domains are left out.
fn read_clocks(read: impl Fn(Clock) -> Result<u32, NvmlError>) -> Vec<(model::Clock, f64)> {
    CLOCKS
        .iter()
        .filter_map(|(clock, label)| read(*clock).ok().map(|mhz| (*label, f64::from(mhz) * MHZ)))
        .collect()
}

/// Where field `id` stands in [`FIELD_IDS`] (and in what [`read_fields`] returns).
fn field_slot(id: u32) -> Option<usize> {
    FIELD_IDS.iter().position(|f| *f == id)
}

/// Reads every [`FIELD_IDS`] value in one NVML call, in that order; a field that failed is
/// `None`. (An array, not a map: 18 fields, each looked up once per cycle.)
fn read_fields(device: &Device<'_>) -> [Option<u64>; FIELD_IDS.len()] {
    let mut out = [None; FIELD_IDS.len()];
    let Ok(values) = device.field_values_for(&FIELD_IDS.map(FieldId)) else {
        return out;
    };
    for sample in values.into_iter().flatten() {
        let FieldValueSample { field, value, .. } = sample;
        let value = match value {
            Ok(SampleValue::U32(v)) => Some(u64::from(v)),
            Ok(SampleValue::U64(v)) => Some(v),
            Ok(SampleValue::I64(v)) => u64::try_from(v).ok(),
            Ok(SampleValue::F64(v)) if v >= 0.0 => Some(v as u64),
            Ok(SampleValue::F64(_)) | Err(_) => None,
        };
        if let Some(slot) = field_slot(field.0).and_then(|i| out.get_mut(i)) {
            *slot = value;
        }
    }
    out
}

/// Every link's state and error counters: from `cache` while nothing says they changed (see
/// `nvlink.rs`), else read per link and kept in `cache`.
fn read_nvlinks(
    device: &Device<'_>,
    uuid: &str,
    totals: Option<Totals>,
    xid_news: bool,
    cache: &mut Option<NvLinkCache>,
) -> Arc<[NvLinkReadings]> {
    let now = Instant::now();
    if let Some(kept) = cache.as_ref()
        && reread(Some(kept), uuid, totals, xid_news, now).is_none()
    {
        return kept.shared_links();
    }
    let mut all_definite = true;
    let mut links = Vec::with_capacity(MAX_NVLINKS as usize);
    for link in 0..MAX_NVLINKS {
        let wrapper = device.link_wrapper_for(link);
        let active = match wrapper.is_active() {
            Ok(active) => active,
            // InvalidArg past the last link; NotSupported on boards without NVLink.
            Err(_) => break,
        };
        links.push(NvLinkReadings {
            link,
            active,
            errors: NVLINK_COUNTERS.map(|counter| {
                let count = wrapper.error_counter(counter);
                all_definite &= definite(&count);
                count.ok()
            }),
        });
    }
    let links: Arc<[NvLinkReadings]> = links.into();
    *cache = Some(NvLinkCache::new(
        uuid,
        now,
        totals,
        all_definite,
        Arc::clone(&links),
    ));
    links
}

fn read_processes(device: &Device<'_>, max: usize, seen: &mut u64) -> Option<Vec<GpuProcess>> {
    let running = device.running_compute_processes().ok()?;
    if running.is_empty() {
        // Samples of exited processes would be dropped below; `seen` stays, so the next ask
        // covers the time since.
        return Some(Vec::new());
    }
    // NotFound means no new samples since `seen`.
    let utilization = device.process_utilization_stats(*seen).unwrap_or_default();
    if let Some(newest) = utilization.iter().map(|s| s.timestamp).max() {
        *seen = newest;
    }
    let mut processes: Vec<GpuProcess> = running
        .into_iter()
        .map(|p| {
            let util = utilization
                .iter()
                .filter(|s| s.pid == p.pid)
                .max_by_key(|s| s.timestamp);
            GpuProcess {
                pid: p.pid,
                used_memory_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => Some(bytes),
                    UsedGpuMemory::Unavailable => None,
                },
                sm_utilization: util.map(|s| ratio(s.sm_util)),
                memory_utilization: util.map(|s| ratio(s.mem_util)),
            }
        })
        .collect();
    // Keep the biggest users when there are more than the bound allows.
    processes.sort_by(|a, b| {
        b.used_memory_bytes
            .cmp(&a.used_memory_bytes)
            .then(a.pid.cmp(&b.pid))
    });
    processes.truncate(max);
    processes.sort_by_key(|p| p.pid);
    Some(processes)
}

fn read_mig(device: &Device<'_>) -> Option<MigReadings> {
    let mode = device.mig_mode().ok()?;
    let enabled = mode.current == 1;
    let mut instances = Vec::new();
    if enabled {
        let max = device.mig_device_count().unwrap_or(0).min(8);
        for index in 0..max {
            let Ok(mig) = device.mig_device_by_index(index) else {
                continue;
            };
            let memory = mig.memory_info().ok();
            instances.push(MigInstance {
                index,
                uuid: mig.uuid().unwrap_or_default(),
                memory_total_bytes: memory.as_ref().map(|m| m.total),
                memory_used_bytes: memory.as_ref().map(|m| m.used),
            });
        }
    }
    Some(MigReadings {
        enabled,
        pending_enabled: mode.pending == 1,
        instances,
    })
}
