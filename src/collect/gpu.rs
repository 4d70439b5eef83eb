//! The NVML GPU collector: the only module that imports nvml-wrapper.
//!
//! NVML calls are blocking FFI and can hang (a wedged driver, a GPU falling off the bus), so
//! every cycle runs on one dedicated thread through a [`DeadlineWorker`]. Past the deadline
//! the cycle reports `deadline`, the store keeps serving the last good sample (marked stale),
//! and no new thread is started while the stuck call is still inside NVML.
//!
//! NVML missing (no driver, no library) is a normal state: the cycle reports `unavailable`
//! and loading is retried every `nvml_retry_interval`, so a driver installed later is picked
//! up without a restart. Each reading is optional: NotSupported, NoPermission, a symbol the
//! library lacks, or any other per-call error omits that reading, never reports it as 0.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nvml_wrapper::Device;
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, PerformancePolicy, RetirementCause,
    TemperatureSensor, TemperatureThreshold,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;

use super::worker::DeadlineWorker;
use super::{CollectError, Collector, ErrorKind, XidSink, run_on_worker};
use crate::config::GpuConfig;
use crate::model::{
    self, EccKind, EccScope, GpuDevice, GpuIdentity, GpuProcess, GpuSample, MemoryReadings,
    MigInstance, MigReadings, NvLinkReadings, PcieReadings, RemappedRows, RetiredCause, Sample,
    TempThreshold, ThrottlePolicy, ThrottleReasons, Utilization, XidEvent, XidSource,
};

/// NVML field ids (nvml.h `NVML_FI_DEV_*`) read in one `nvmlDeviceGetFieldValues` call.
const FI_MEMORY_TEMP: u32 = 82;
const FI_REMAPPED_COR: u32 = 142;
const FI_REMAPPED_UNC: u32 = 143;
const FI_REMAPPED_PENDING: u32 = 144;
const FI_REMAPPED_FAILURE: u32 = 145;
/// `NVML_FI_DEV_GET_GPU_RECOVERY_ACTION` (nvml.h; nvml-wrapper 0.13 has no wrapper for
/// `nvmlDeviceGetGpuRecoveryAction`).
const FI_RECOVERY_ACTION: u32 = 230;

/// The Xid recorded for a GPU that NVML reports lost (GPU_IS_LOST), that needs a reset
/// (RESET_REQUIRED), or that vanished from the device count: 79, "GPU has fallen off the
/// bus". RESET_REQUIRED has no Xid of its own; the driver logs it after a fatal Xid, and 79
/// is the nearest catalog entry whose action (reset or reboot) matches.
const XID_FALLEN_OFF_BUS: u64 = 79;

/// NVLink links probed per GPU (`NVML_NVLINK_MAX_LINKS`).
const MAX_NVLINKS: u32 = 18;

/// What the GPU collector needs from the config.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    pub library: Option<PathBuf>,
    pub timeout: Duration,
    pub retry_interval: Duration,
    pub processes: bool,
    pub max_processes: usize,
    pub mig: bool,
    pub nvlink: bool,
    pub pcie_throughput: bool,
}

impl GpuOptions {
    pub fn from_config(gpu: &GpuConfig, library: Option<PathBuf>) -> Self {
        Self {
            library,
            timeout: gpu.timeout.0,
            retry_interval: gpu.nvml_retry_interval.0,
            processes: gpu.processes,
            max_processes: gpu.max_processes,
            mig: gpu.mig,
            nvlink: gpu.nvlink,
            pcie_throughput: gpu.pcie_throughput,
        }
    }
}

/// The async side of the NVML collector.
#[derive(Debug)]
pub struct NvmlCollector {
    worker: DeadlineWorker<Result<GpuSample, CollectError>>,
    timeout: Duration,
    retry_interval: Duration,
}

impl NvmlCollector {
    /// Starts the NVML thread. NVML itself is loaded lazily by the first cycle.
    pub fn start(options: GpuOptions) -> std::io::Result<Self> {
        Self::start_with_xid_sink(options, None)
    }

    /// Like [`NvmlCollector::start`], handing Xids inferred from return codes to `sink`.
    pub fn start_with_xid_sink(
        options: GpuOptions,
        sink: Option<XidSink>,
    ) -> std::io::Result<Self> {
        let timeout = options.timeout;
        let retry_interval = options.retry_interval;
        let mut sampler = NvmlSampler::new(options);
        sampler.xid_sink = sink;
        let worker = DeadlineWorker::spawn("gpulse-nvml", sampler, NvmlSampler::cycle)?;
        Ok(Self {
            worker,
            timeout,
            retry_interval,
        })
    }
}

impl Collector for NvmlCollector {
    fn name(&self) -> &'static str {
        "gpu"
    }

    async fn collect(&mut self) -> Result<Sample, CollectError> {
        run_on_worker(&self.worker, "NVML", self.timeout)
            .await
            .map(Sample::Gpu)
            .map_err(|mut error| {
                // What the agent does about it; `scan` reports the bare cause instead.
                if error.kind == ErrorKind::Unavailable {
                    error.message = format!(
                        "{}; serving host metrics without GPUs; retrying every {:?}",
                        error.message, self.retry_interval
                    );
                }
                error
            })
    }
}

/// The blocking NVML sampler. [`NvmlCollector`] owns one on its dedicated thread; benches
/// and tests may drive it directly.
pub struct NvmlSampler {
    options: GpuOptions,
    nvml: Option<Nvml>,
    /// When loading NVML last failed, and why; retried after `retry_interval`.
    last_init_failure: Option<(Instant, CollectError)>,
    identities: HashMap<u32, Arc<GpuIdentity>>,
    driver_version: Option<String>,
    cuda_driver_version: Option<String>,
    /// Per GPU, the timestamp of the newest process-utilization sample seen, so each cycle
    /// asks NVML only for newer samples.
    process_util_seen: HashMap<u32, u64>,
    /// Where Xids inferred from return codes go; `None` drops them.
    xid_sink: Option<XidSink>,
    /// GPUs last seen lost or needing a reset, so each transition is reported once.
    failed_gpus: HashMap<u32, &'static str>,
    /// The device count of the last cycle.
    last_count: Option<u32>,
}

impl NvmlSampler {
    pub fn new(options: GpuOptions) -> Self {
        Self {
            options,
            nvml: None,
            last_init_failure: None,
            identities: HashMap::new(),
            driver_version: None,
            cuda_driver_version: None,
            process_util_seen: HashMap::new(),
            xid_sink: None,
            failed_gpus: HashMap::new(),
            last_count: None,
        }
    }

    /// Hands Xids inferred from NVML return codes to `sink`.
    pub fn set_xid_sink(&mut self, sink: XidSink) {
        self.xid_sink = Some(sink);
    }

    fn emit_xid(&self, identity: &GpuIdentity, detail: String) {
        if let Some(sink) = &self.xid_sink {
            tracing::warn!(gpu = identity.index, detail = %detail, "GPU failure inferred from NVML.");
            sink(XidEvent {
                at: SystemTime::now(),
                gpu_index: Some(identity.index),
                uuid: identity.uuid.clone(),
                pci_bus_id: identity.pci_bus_id.clone(),
                xid: XID_FALLEN_OFF_BUS,
                sources: vec![XidSource::ReturnCode],
                detail,
            });
        }
    }

    /// Reports GPUs that vanished from the device count, newly lost GPUs and GPUs newly
    /// needing a reset, once per transition.
    fn track_failures(&mut self, count: u32, devices: &[(GpuDevice, Option<&'static str>)]) {
        if let Some(last) = self.last_count
            && count < last
        {
            for index in count..last {
                let identity = self
                    .identities
                    .get(&index)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(unknown_identity(index)));
                self.emit_xid(
                    &identity,
                    format!("device count dropped from {last} to {count}: GPU {index} is gone"),
                );
                self.failed_gpus.remove(&index);
            }
        }
        self.last_count = Some(count);
        for (device, failure) in devices {
            let index = device.identity.index;
            match failure {
                Some(code) if self.failed_gpus.get(&index) != Some(code) => {
                    self.failed_gpus.insert(index, code);
                    self.emit_xid(&device.identity, format!("NVML returned {code}"));
                }
                Some(_) => {}
                None => {
                    self.failed_gpus.remove(&index);
                }
            }
        }
    }

    /// One sampling cycle over every GPU; loads NVML first if needed (rate-limited).
    pub fn cycle(&mut self) -> Result<GpuSample, CollectError> {
        self.ensure_loaded()?;
        let Some(nvml) = self.nvml.as_ref() else {
            return Err(CollectError::new(ErrorKind::Unavailable, "NVML not loaded"));
        };
        let count = match nvml.device_count() {
            Ok(count) => count,
            Err(error) => {
                // The driver may have been unloaded or reset: start over on the next cycle.
                self.unload();
                return Err(CollectError::new(
                    ErrorKind::Failed,
                    format!("nvmlDeviceGetCount failed: {error}; NVML will be reloaded"),
                ));
            }
        };
        let mut sampled = Vec::with_capacity(count as usize);
        for index in 0..count {
            sampled.push(self.sample_device(index));
        }
        self.track_failures(count, &sampled);
        if self.identities.len() > count as usize {
            self.identities.clear();
        }
        let devices = sampled.into_iter().map(|(device, _)| device).collect();
        Ok(GpuSample {
            taken_at: SystemTime::now(),
            driver_version: self.driver_version.clone(),
            cuda_driver_version: self.cuda_driver_version.clone(),
            devices,
        })
    }

    fn ensure_loaded(&mut self) -> Result<(), CollectError> {
        if self.nvml.is_some() {
            return Ok(());
        }
        if let Some((at, error)) = &self.last_init_failure
            && at.elapsed() < self.options.retry_interval
        {
            return Err(error.clone());
        }
        let loaded = match &self.options.library {
            Some(path) => Nvml::builder().lib_path(OsStr::new(path)).init(),
            None => Nvml::init(),
        };
        match loaded {
            Ok(nvml) => {
                self.driver_version = nvml.sys_driver_version().ok();
                self.cuda_driver_version = nvml.sys_cuda_driver_version().ok().map(|v| {
                    // NVML encodes 12.4 as 12040.
                    format!("{}.{}", v / 1000, (v % 1000) / 10)
                });
                self.nvml = Some(nvml);
                self.last_init_failure = None;
                tracing::info!(
                    driver = self.driver_version.as_deref().unwrap_or("unknown"),
                    "NVML loaded."
                );
                Ok(())
            }
            Err(error) => {
                let error = init_error(&self.options.library, &error);
                self.last_init_failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    fn unload(&mut self) {
        self.nvml = None;
        self.identities.clear();
        self.process_util_seen.clear();
        self.last_init_failure = None;
    }

    /// One device's readings, and the failure return code (GPU_IS_LOST, RESET_REQUIRED)
    /// when it gave one.
    fn sample_device(&mut self, index: u32) -> (GpuDevice, Option<&'static str>) {
        let Some(nvml) = self.nvml.as_ref() else {
            return (GpuDevice::default(), None);
        };
        let device = match nvml.device_by_index(index) {
            Ok(device) => device,
            Err(error) => {
                let identity = self
                    .identities
                    .get(&index)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(unknown_identity(index)));
                let failure = failure_code(&error);
                return (
                    GpuDevice {
                        identity,
                        lost: matches!(error, NvmlError::GpuLost),
                        ..GpuDevice::default()
                    },
                    failure,
                );
            }
        };
        // The UUID is read every cycle: it is cheap, shows whether the GPU still answers, and
        // catches a different GPU at this index after a hot-plug or driver reload.
        let uuid = device.uuid();
        let cached = self.identities.get(&index).cloned();
        let identity = match (cached, &uuid) {
            (Some(cached), Ok(uuid)) if cached.uuid == *uuid => cached,
            (Some(cached), Err(_)) => cached,
            _ => {
                let identity = read_identity(&device, index);
                // A GPU that answers no identity call gets no cache entry.
                if !identity.uuid.is_empty() {
                    self.identities.insert(index, Arc::clone(&identity));
                }
                identity
            }
        };
        let rates = device.utilization_rates();
        let failure = [uuid.as_ref().err(), rates.as_ref().err()]
            .into_iter()
            .flatten()
            .find_map(failure_code);
        if matches!(uuid, Err(NvmlError::GpuLost)) || matches!(rates, Err(NvmlError::GpuLost)) {
            return (
                GpuDevice {
                    identity,
                    lost: true,
                    ..GpuDevice::default()
                },
                failure,
            );
        }
        let seen = self.process_util_seen.entry(index).or_insert(0);
        (
            read_device(&device, identity, rates.ok(), &self.options, seen),
            failure,
        )
    }
}

/// The return codes that mean the GPU itself failed.
fn failure_code(error: &NvmlError) -> Option<&'static str> {
    match error {
        NvmlError::GpuLost => Some("GPU_IS_LOST"),
        NvmlError::ResetRequired => Some("RESET_REQUIRED"),
        _ => None,
    }
}

/// Maps a failed `Nvml::init` to a collector error. A missing library or driver is
/// `unavailable` (a normal state), anything else is `failed`.
fn init_error(library: &Option<PathBuf>, error: &NvmlError) -> CollectError {
    let lib = library.as_ref().map_or_else(
        || "libnvidia-ml.so.1".to_owned(),
        |p| p.display().to_string(),
    );
    match error {
        NvmlError::LibloadingError(_) => CollectError::new(
            ErrorKind::Unavailable,
            format!("no NVIDIA GPU found: cannot load {lib} ({error})"),
        ),
        NvmlError::DriverNotLoaded | NvmlError::LibraryNotFound => CollectError::new(
            ErrorKind::Unavailable,
            format!("no NVIDIA GPU found: the driver is not loaded ({error})"),
        ),
        NvmlError::NoPermission => CollectError::new(
            ErrorKind::Unavailable,
            format!("no permission to open the NVIDIA devices ({error})"),
        ),
        _ => CollectError::new(ErrorKind::Failed, format!("NVML init failed: {error}")),
    }
}

fn unknown_identity(index: u32) -> GpuIdentity {
    GpuIdentity {
        index,
        index_label: index.to_string(),
        uuid: String::new(),
        name: String::new(),
        pci_bus_id: String::new(),
        serial: None,
        vbios_version: None,
    }
}

fn read_identity(device: &Device<'_>, index: u32) -> Arc<GpuIdentity> {
    Arc::new(GpuIdentity {
        index,
        index_label: index.to_string(),
        uuid: device.uuid().unwrap_or_default(),
        name: device.name().unwrap_or_default(),
        pci_bus_id: device.pci_info().map(|p| p.bus_id).unwrap_or_default(),
        serial: device.serial().ok(),
        vbios_version: device.vbios_version().ok(),
    })
}

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

/// Reads every metric of one device; each failure only omits that reading.
fn read_device(
    device: &Device<'_>,
    identity: Arc<GpuIdentity>,
    rates: Option<nvml_wrapper::struct_wrappers::device::Utilization>,
    options: &GpuOptions,
    process_util_seen: &mut u64,
) -> GpuDevice {
    let memory = device.memory_info().ok();
    let fields = read_fields(device);
    let field = |id: u32| fields.get(&id).copied();

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

    let mut ecc_errors = Vec::new();
    for (error, kind) in [
        (MemoryError::Corrected, EccKind::Corrected),
        (MemoryError::Uncorrected, EccKind::Uncorrected),
    ] {
        for (counter, scope) in [
            (EccCounter::Volatile, EccScope::Volatile),
            (EccCounter::Aggregate, EccScope::Aggregate),
        ] {
            if let Ok(n) = device.total_ecc_errors(error, counter) {
                ecc_errors.push((kind, scope, n));
            }
        }
    }

    let retired_pages = [
        (
            RetirementCause::MultipleSingleBitEccErrors,
            RetiredCause::SingleBitEcc,
        ),
        (
            RetirementCause::DoubleBitEccError,
            RetiredCause::DoubleBitEcc,
        ),
    ]
    .into_iter()
    .filter_map(|(cause, label)| {
        device
            .retired_pages(cause)
            .ok()
            .map(|pages| (label, pages.len() as u64))
    })
    .collect();

    let pcie_rate = |counter| {
        if options.pcie_throughput {
            // NVML reports KB/s.
            device
                .pcie_throughput(counter)
                .ok()
                .map(|kb| f64::from(kb) * 1024.0)
        } else {
            None
        }
    };

    GpuDevice {
        identity,
        lost: false,
        utilization: Utilization {
            gpu: rates.as_ref().map(|r| ratio(r.gpu)),
            memory: rates.as_ref().map(|r| ratio(r.memory)),
            encoder: device
                .encoder_utilization()
                .ok()
                .map(|u| ratio(u.utilization)),
            decoder: device
                .decoder_utilization()
                .ok()
                .map(|u| ratio(u.utilization)),
        },
        memory: MemoryReadings {
            total_bytes: memory.as_ref().map(|m| m.total),
            used_bytes: memory.as_ref().map(|m| m.used),
            free_bytes: memory.as_ref().map(|m| m.free),
            reserved_bytes: memory.as_ref().map(|m| m.reserved),
        },
        temperature_gpu_celsius: device
            .temperature(TemperatureSensor::Gpu)
            .ok()
            .map(f64::from),
        temperature_memory_celsius: field(FI_MEMORY_TEMP)
            // Some boards report 0 for "no HBM sensor"; a real HBM reading is never 0 °C.
            .filter(|t| *t > 0)
            .map(|t| t as f64),
        temperature_thresholds: THRESHOLDS
            .iter()
            .filter_map(|(t, label)| {
                device
                    .temperature_threshold(*t)
                    .ok()
                    .map(|c| (*label, f64::from(c)))
            })
            .collect(),
        power_watts: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
        power_limit_watts: device
            .enforced_power_limit()
            .ok()
            .map(|mw| f64::from(mw) / 1000.0),
        energy_joules: device
            .total_energy_consumption()
            .ok()
            .map(|mj| mj as f64 / 1000.0),
        clocks_hertz: read_clocks(|c| device.clock_info(c)),
        max_clocks_hertz: read_clocks(|c| device.max_clock_info(c)),
        performance_state: device
            .performance_state()
            .ok()
            .map(|p| p.as_c())
            .filter(|p| *p <= 15),
        fan_speed_ratio: {
            let fans = device.num_fans().unwrap_or(0).min(16);
            (0..fans)
                .filter_map(|i| device.fan_speed(i).ok().map(|pct| (i, ratio(pct))))
                .collect()
        },
        throttle: match (
            device.current_throttle_reasons(),
            device.supported_throttle_reasons(),
        ) {
            (Ok(active), Ok(supported)) => Some(ThrottleReasons {
                active: active.bits(),
                supported: supported.bits(),
            }),
            _ => None,
        },
        throttle_seconds: VIOLATION_POLICIES
            .iter()
            .filter_map(|(policy, label)| {
                device
                    .violation_status(*policy)
                    .ok()
                    .map(|v| (*label, v.violation_time as f64 / 1e9))
            })
            .collect(),
        ecc_errors,
        retired_pages,
        retired_pages_pending: device.are_pages_pending_retired().ok(),
        remapped_rows,
        pcie: PcieReadings {
            link_generation: device.current_pcie_link_gen().ok(),
            link_width: device.current_pcie_link_width().ok(),
            replay_count: device.pcie_replay_counter().ok().map(u64::from),
            tx_bytes_per_second: pcie_rate(PcieUtilCounter::Send),
            rx_bytes_per_second: pcie_rate(PcieUtilCounter::Receive),
        },
        nvlinks: if options.nvlink {
            read_nvlinks(device)
        } else {
            Vec::new()
        },
        processes: if options.processes {
            read_processes(device, options.max_processes, process_util_seen)
        } else {
            None
        },
        mig: if options.mig { read_mig(device) } else { None },
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

/// Reads HBM temperature and row-remapping counters in one NVML call.
fn read_fields(device: &Device<'_>) -> HashMap<u32, u64> {
    let ids = [
        FI_MEMORY_TEMP,
        FI_REMAPPED_COR,
        FI_REMAPPED_UNC,
        FI_REMAPPED_PENDING,
        FI_REMAPPED_FAILURE,
        FI_RECOVERY_ACTION,
    ]
    .map(FieldId);
    let Ok(values) = device.field_values_for(&ids) else {
        return HashMap::new();
    };
    values
        .into_iter()
        .filter_map(|v| v.ok())
        .filter_map(|FieldValueSample { field, value, .. }| {
            let value = match value.ok()? {
                SampleValue::U32(v) => u64::from(v),
                SampleValue::U64(v) => v,
                SampleValue::I64(v) => u64::try_from(v).ok()?,
                SampleValue::F64(v) if v >= 0.0 => v as u64,
                SampleValue::F64(_) => return None,
            };
            Some((field.0, value))
        })
        .collect()
}

fn read_nvlinks(device: &Device<'_>) -> Vec<NvLinkReadings> {
    let mut links = Vec::new();
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
            errors: NVLINK_COUNTERS.map(|counter| wrapper.error_counter(counter).ok()),
        });
    }
    links
}

fn read_processes(device: &Device<'_>, max: usize, seen: &mut u64) -> Option<Vec<GpuProcess>> {
    let running = device.running_compute_processes().ok()?;
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
