//! The NVML GPU collector: the only module that imports nvml-wrapper.
//!
//! NVML calls are blocking FFI and can hang (a wedged driver, a GPU falling off the bus), so
//! every cycle runs on one dedicated thread, on its own schedule ([`Paced`]: the runtime wakes
//! once per cycle, to store it). Past the deadline the collector reports `deadline`, the store
//! keeps serving the last good sample (marked stale), and no new thread is started while the
//! stuck call is still inside NVML.
//!
//! NVML missing (no driver, no library) is a normal state: the cycle reports `unavailable`
//! and loading is retried every `nvml_retry_interval`, so a driver installed later is picked
//! up without a restart. Each reading is optional: NotSupported, NoPermission, a symbol the
//! library lacks, or any other per-call error omits that reading, never reports it as 0.
//!
//! A GPU that drops out of the device list (the count falls) stays in every later sample as
//! `lost` and `missing`, with the identity it last had, so `gpulse_gpu_info` and
//! `gpulse_gpu_lost 1` keep naming it until NVML lists that index again.
//!
//! With `GPULSE_NVML_TIMING=1` in the environment the sampler also times each NVML call group
//! of every cycle ([`CallTiming`]) and logs one line per cycle (target `gpulse::nvml_timing`):
//! how much of the cycle the calls themselves take, for a real-driver check. Off, it costs a
//! branch per call.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nvml_wrapper::Device;
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use super::paced::{Paced, Pacer};
use super::{CollectError, ErrorKind, PacedCollector, XidCount, XidSink};
use crate::config::GpuConfig;
use crate::model::{GpuDevice, GpuIdentity, GpuSample, Sample, XidEvent, XidSource};

mod gpm;
mod nvlink;
mod read;
mod timing;

use gpm::GpmState;
use nvlink::NvLinkCache;
use read::{Kept, Readings, Statics, read_device};
use timing::Timer;
pub use timing::{CALL_GROUPS, CallTiming, TIMING_ENV};

/// The Xid recorded for a GPU that NVML reports lost (GPU_IS_LOST), that needs a reset
/// (RESET_REQUIRED), or that vanished from the device count: 79, "GPU has fallen off the
/// bus". RESET_REQUIRED has no Xid of its own; the driver logs it after a fatal Xid, and 79
/// is the nearest catalog entry whose action (reset or reboot) matches.
const XID_FALLEN_OFF_BUS: u64 = 79;

/// GPUs kept as `missing` after they left the device list; NVML numbers at most 64 devices
/// per node today, so this bound is never reached in practice.
const MAX_VANISHED: usize = 64;

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
    pub gpm: bool,
    /// How long readings that do not change while the driver runs are kept (`gpu.static_interval`).
    pub static_interval: Duration,
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
            gpm: gpu.gpm,
            static_interval: gpu.static_interval.0,
        }
    }
}

/// Starts the NVML thread, sampling every `interval` from now on and handing Xids inferred
/// from return codes to `sink`; the collector's [`PacedCollector::run`] stores each cycle.
/// NVML itself is loaded by the first cycle.
pub fn start_collector(
    options: GpuOptions,
    interval: Duration,
    sink: Option<XidSink>,
    xid_count: Option<XidCount>,
) -> std::io::Result<PacedCollector> {
    let timeout = options.timeout;
    let retry_interval = options.retry_interval;
    let mut sampler = NvmlSampler::new(options);
    sampler.xid_sink = sink;
    sampler.xid_count = xid_count;
    // Read once at start: a bench or a real-GPU check turns it on for one run.
    sampler.timer.on = std::env::var_os(TIMING_ENV).is_some_and(|v| v == "1");
    if sampler.timer.on {
        tracing::info!("NVML per-call timing is on ({TIMING_ENV}=1).");
    }
    let paced = Paced::spawn_serving("gpulse-nvml", interval, move |pacer| {
        sampler.serve(pacer, retry_interval);
    })?;
    Ok(PacedCollector {
        name: "gpu",
        source: "NVML",
        paced,
        interval,
        timeout,
    })
}

/// A cycle's result as the agent stores it. "Unavailable" says what the agent does about it;
/// `scan` reports the bare cause instead.
fn agent_result(
    result: Result<GpuSample, CollectError>,
    retry_interval: Duration,
) -> Result<Sample, CollectError> {
    result.map(Sample::Gpu).map_err(|mut error| {
        if error.kind == ErrorKind::Unavailable {
            error.message = format!(
                "{}; serving host metrics without GPUs; retrying every {retry_interval:?}",
                error.message
            );
        }
        error
    })
}

/// The blocking NVML sampler. [`start_collector`]'s thread owns one; benches
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
    /// Per GPU, the readings that do not change while the driver runs.
    statics: HashMap<u32, Option<Statics>>,
    /// Per GPU, the last per-link NVLink read, states and error counters (kept while the
    /// totals stand, no Xid arrived and it is younger than `NVLINK_RECHECK`).
    nvlinks: HashMap<u32, Option<NvLinkCache>>,
    /// Where Xids inferred from return codes go; `None` drops them.
    xid_sink: Option<XidSink>,
    /// The agent's Xid count, read each cycle; `None`: no Xid news (NVLink at its recheck).
    xid_count: Option<XidCount>,
    /// `xid_count` at the last cycle.
    xids_seen: Option<u64>,
    /// GPUs last seen lost or needing a reset, so each transition is reported once.
    failed_gpus: HashMap<u32, &'static str>,
    /// The device count of the last cycle.
    last_count: Option<u32>,
    /// GPUs that left the device list, by index, with the identity they last had.
    vanished: BTreeMap<u32, Arc<GpuIdentity>>,
    /// Per-call timing (off unless asked for).
    timer: Timer,
    last_timing: Option<CallTiming>,
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
            statics: HashMap::new(),
            nvlinks: HashMap::new(),
            xid_sink: None,
            xid_count: None,
            xids_seen: None,
            failed_gpus: HashMap::new(),
            last_count: None,
            vanished: BTreeMap::new(),
            timer: Timer {
                on: false,
                timing: CallTiming::default(),
            },
            last_timing: None,
        }
    }

    /// Times every NVML call group of each cycle from now on ([`NvmlSampler::last_timing`]).
    pub fn set_call_timing(&mut self, on: bool) {
        self.timer.on = on;
    }

    /// The per-call timing of the last finished cycle, when timing is on.
    pub fn last_timing(&self) -> Option<&CallTiming> {
        self.last_timing.as_ref()
    }

    /// Reads every NVLink's state and counters again in the cycle after `count` moves.
    pub fn set_xid_count(&mut self, count: XidCount) {
        self.xid_count = Some(count);
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
                    .remove(&index)
                    .or_else(|| self.vanished.get(&index).cloned())
                    .unwrap_or_else(|| Arc::new(unknown_identity(index)));
                self.emit_xid(
                    &identity,
                    format!("device count dropped from {last} to {count}: GPU {index} is gone"),
                );
                self.failed_gpus.remove(&index);
                self.vanished.insert(index, identity);
            }
            while self.vanished.len() > MAX_VANISHED {
                self.vanished.pop_last();
            }
        }
        // Listed again: sampled as any other GPU from now on.
        self.vanished.retain(|index, _| *index >= count);
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

    /// Samples on `pacer`'s schedule until the collector is dropped: one NVML session for as
    /// long as NVML answers, so GPM readings span whole intervals.
    fn serve(mut self, mut pacer: Pacer<Result<Sample, CollectError>>, retry_interval: Duration) {
        let mut due = pacer.wait();
        while due {
            due = self.session(|session| {
                loop {
                    pacer.run(|| agent_result(session.cycle(), retry_interval));
                    if !pacer.wait() {
                        return false;
                    }
                    if !session.is_open() {
                        // NVML is reloaded for the next cycle, in a new session.
                        return true;
                    }
                }
            });
        }
    }

    /// One sampling cycle over every GPU; loads NVML first if needed (rate-limited). A
    /// one-shot cycle has no GPM readings (they need the previous cycle's sample, which only a
    /// [`NvmlSampler::session`] keeps) and takes no GPM samples.
    pub fn cycle(&mut self) -> Result<GpuSample, CollectError> {
        self.open_session(false, |session| session.cycle())
    }

    /// Runs `f` with an NVML session: NVML loaded (or the load error, rate-limited, which the
    /// session's first cycle returns) and the GPM samples that cycles of the session carry
    /// from one to the next. A cycle that finds the driver gone closes the session
    /// ([`Session::is_open`]); the next session loads NVML again. NVML stays loaded across
    /// sessions otherwise, so one-shot [`NvmlSampler::cycle`] calls reuse it.
    pub fn session<T>(&mut self, f: impl FnOnce(&mut Session<'_, '_>) -> T) -> T {
        self.open_session(self.options.gpm, f)
    }

    fn open_session<T>(&mut self, gpm: bool, f: impl FnOnce(&mut Session<'_, '_>) -> T) -> T {
        let loaded = match self.nvml.take() {
            Some(nvml) => Ok(nvml),
            None => self.load(),
        };
        let mut session = Session {
            nvml: loaded.as_ref().ok(),
            pending_error: loaded.as_ref().err().cloned(),
            gpm: gpm.then(GpmState::default),
            sampler: self,
        };
        let result = f(&mut session);
        let keep = session.nvml.is_some();
        // The GPM samples go (freed through NVML) before NVML itself may.
        drop(session);
        if keep && let Ok(nvml) = loaded {
            self.nvml = Some(nvml);
        }
        result
    }

    /// One cycle on a loaded NVML. The flag is false when the driver is gone (NVML must be
    /// reloaded): the caches tied to this NVML are cleared then.
    fn cycle_on<'n>(
        &mut self,
        nvml: &'n Nvml,
        mut gpm: Option<&mut GpmState<'n>>,
    ) -> (Result<GpuSample, CollectError>, bool) {
        let started = Instant::now();
        self.timer.timing = CallTiming::default();
        let count = match self.timer.time("device_count", || nvml.device_count()) {
            Ok(count) => count,
            Err(error) => {
                // The driver may have been unloaded or reset: start over on the next cycle.
                self.identities.clear();
                self.process_util_seen.clear();
                self.statics.clear();
                self.nvlinks.clear();
                self.last_init_failure = None;
                return (
                    Err(CollectError::new(
                        ErrorKind::Failed,
                        format!("nvmlDeviceGetCount failed: {error}; NVML will be reloaded"),
                    )),
                    false,
                );
            }
        };
        // An Xid since the last cycle (on any GPU) may be a link going down: read links anew.
        let xids = self.xid_count.as_ref().map(|count| count());
        let xid_news = xids != self.xids_seen && self.xids_seen.is_some();
        self.xids_seen = xids;
        let mut sampled = Vec::with_capacity(count as usize);
        for index in 0..count {
            sampled.push(self.sample_device(nvml, gpm.as_deref_mut(), index, xid_news));
        }
        if let Some(gpm) = gpm {
            gpm.retain_below(count);
        }
        self.track_failures(count, &sampled);
        // Identities past the count moved to `vanished`; this keeps the cache bounded too.
        self.identities.retain(|index, _| *index < count);
        self.statics.retain(|index, _| *index < count);
        self.nvlinks.retain(|index, _| *index < count);
        let mut devices: Vec<GpuDevice> = sampled.into_iter().map(|(device, _)| device).collect();
        devices.extend(self.vanished.values().map(|identity| GpuDevice {
            identity: Arc::clone(identity),
            lost: true,
            missing: true,
            ..GpuDevice::default()
        }));
        if self.timer.on {
            let mut timing = std::mem::take(&mut self.timer.timing);
            timing.cycle = started.elapsed();
            tracing::info!(
                target: "gpulse::nvml_timing",
                gpus = count,
                cycle_us = timing.cycle.as_micros() as u64,
                calls_us = timing.calls().as_micros() as u64,
                groups = %timing.summary(),
                "NVML cycle timing."
            );
            self.last_timing = Some(timing);
        }
        let sample = GpuSample {
            taken_at: SystemTime::now(),
            driver_version: self.driver_version.clone(),
            cuda_driver_version: self.cuda_driver_version.clone(),
            devices,
        };
        (Ok(sample), true)
    }

    /// Loads NVML, at most once per `retry_interval` after a failure.
    fn load(&mut self) -> Result<Nvml, CollectError> {
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
                self.last_init_failure = None;
                tracing::info!(
                    driver = self.driver_version.as_deref().unwrap_or("unknown"),
                    "NVML loaded."
                );
                Ok(nvml)
            }
            Err(error) => {
                let error = init_error(&self.options.library, &error);
                self.last_init_failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// One device's readings, and the failure return code (GPU_IS_LOST, RESET_REQUIRED)
    /// when it gave one.
    fn sample_device<'n>(
        &mut self,
        nvml: &'n Nvml,
        gpm: Option<&mut GpmState<'n>>,
        index: u32,
        xid_news: bool,
    ) -> (GpuDevice, Option<&'static str>) {
        let timer = &mut self.timer;
        let device = match timer.time("handle", || nvml.device_by_index(index)) {
            Ok(device) => device,
            Err(error) => {
                if let Some(gpm) = gpm {
                    gpm.forget(index);
                }
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
        let uuid = timer.time("uuid", || device.uuid());
        let cached = self.identities.get(&index).cloned();
        let identity = match (cached, &uuid) {
            (Some(cached), Ok(uuid)) if cached.uuid == *uuid => cached,
            (Some(cached), Err(_)) => cached,
            _ => {
                let identity = timer.time("identity", || read_identity(&device, index));
                // A GPU that answers no identity call gets no cache entry.
                if !identity.uuid.is_empty() {
                    self.identities.insert(index, Arc::clone(&identity));
                }
                identity
            }
        };
        let rates = timer.time("utilization", || device.utilization_rates());
        let failure = [uuid.as_ref().err(), rates.as_ref().err()]
            .into_iter()
            .flatten()
            .find_map(failure_code);
        if matches!(uuid, Err(NvmlError::GpuLost)) || matches!(rates, Err(NvmlError::GpuLost)) {
            if let Some(gpm) = gpm {
                gpm.forget(index);
            }
            return (
                GpuDevice {
                    identity,
                    lost: true,
                    ..GpuDevice::default()
                },
                failure,
            );
        }
        // Before the other readings: GPM's PCIe rates spare the slow PCIe throughput calls.
        let gpm = gpm.map(|gpm| gpm.read(index, &identity.uuid, &device, timer));
        let seen = self.process_util_seen.entry(index).or_insert(0);
        let statics = Statics::for_gpu(
            self.statics.entry(index).or_default(),
            &identity.uuid,
            self.options.static_interval,
        );
        let readings = Readings {
            rates: rates.ok(),
            gpm: gpm.unwrap_or_default(),
        };
        let kept = Kept {
            process_util_seen: seen,
            statics,
            nvlinks: self.nvlinks.entry(index).or_default(),
            xid_news,
        };
        let device = read_device(&device, identity, readings, &self.options, kept, timer);
        (device, failure)
    }
}

/// One NVML session of an [`NvmlSampler`] (see [`NvmlSampler::session`]): cycles on one
/// loaded NVML, carrying the GPM samples from one cycle to the next.
pub struct Session<'s, 'n> {
    sampler: &'s mut NvmlSampler,
    /// `None` once the driver is gone, or when loading failed.
    nvml: Option<&'n Nvml>,
    /// The load error, returned by the first cycle.
    pending_error: Option<CollectError>,
    /// `None` with `gpu.gpm` off, and for one-shot cycles.
    gpm: Option<GpmState<'n>>,
}

impl Session<'_, '_> {
    /// One sampling cycle over every GPU, with GPM readings from the second cycle on.
    pub fn cycle(&mut self) -> Result<GpuSample, CollectError> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        let Some(nvml) = self.nvml else {
            return Err(CollectError::new(
                ErrorKind::Unavailable,
                "NVML must be reloaded: this NVML session is closed",
            ));
        };
        let (result, open) = self.sampler.cycle_on(nvml, self.gpm.as_mut());
        if !open {
            self.nvml = None;
            self.gpm = None;
        }
        result
    }

    /// Whether NVML is loaded and answering; once false, a new session is needed.
    pub fn is_open(&self) -> bool {
        self.nvml.is_some() && self.pending_error.is_none()
    }

    /// The per-call timing of the last finished cycle, when timing is on.
    pub fn last_timing(&self) -> Option<&CallTiming> {
        self.sampler.last_timing()
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
