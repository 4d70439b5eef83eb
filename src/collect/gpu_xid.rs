//! NVML critical-Xid events: a dedicated OS thread that waits on an NVML event set.
//!
//! The thread owns its own `Nvml` handle (loaded from the same library as the GPU collector
//! and retried every `nvml_retry_interval` while absent), registers
//! `EventTypes::CRITICAL_XID_ERROR` on every device that accepts it, and loops on
//! `EventSet::wait` with a short timeout so it notices shutdown and a change in the device
//! count (which rebuilds the set). Each event goes straight to [`Store::record_xid`], whose
//! history is bounded. Failures are logged once per state change, never fatal.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::event::EventSet;
use tokio::sync::watch;

use super::gpu::GpuOptions;
use crate::model::{XidEvent, XidSource};
use crate::store::Store;

/// How long one `nvmlEventSetWait` may block: an event ends the wait at once, so this only
/// sets how often an idle thread wakes (and how late it sees `stop`; nothing joins it).
const WAIT_MS: u32 = 5000;
/// How often a sleeping thread (NVML absent, or nothing to register) looks at `stop`.
const STOP_POLL: Duration = Duration::from_secs(1);
/// How often the device count is checked for a change (which re-registers).
const RECHECK: Duration = Duration::from_secs(10);

/// A registered device, as known at registration (a lost GPU may not answer later).
#[derive(Debug, Clone)]
struct Registered {
    index: u32,
    uuid: String,
    pci_bus_id: String,
}

/// Starts the event thread. A thread that cannot start is logged once; Xids then come from
/// the other sources only.
pub fn start(options: &GpuOptions, store: Arc<Store>, stop: watch::Receiver<bool>) -> bool {
    let library = options.library.clone();
    let retry = options.retry_interval;
    let spawned = std::thread::Builder::new()
        .name("gpulse-xid".to_owned())
        .spawn(move || run(library, retry, &store, &stop));
    match spawned {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(error = %error, "Cannot start the NVML Xid event thread.");
            false
        }
    }
}

use super::stopped;

/// Sleeps `total` in short steps; returns true when asked to stop.
fn sleep_or_stop(total: Duration, stop: &watch::Receiver<bool>) -> bool {
    let until = Instant::now() + total;
    while Instant::now() < until {
        if stopped(stop) {
            return true;
        }
        std::thread::sleep(STOP_POLL.min(until.saturating_duration_since(Instant::now())));
    }
    stopped(stop)
}

fn run(
    library: Option<std::path::PathBuf>,
    retry: Duration,
    store: &Store,
    stop: &watch::Receiver<bool>,
) {
    let mut load_failed_logged = false;
    while !stopped(stop) {
        let loaded = match &library {
            Some(path) => Nvml::builder().lib_path(OsStr::new(path)).init(),
            None => Nvml::init(),
        };
        match loaded {
            Ok(nvml) => {
                load_failed_logged = false;
                watch_events(&nvml, store, stop);
            }
            Err(error) => {
                if !load_failed_logged {
                    load_failed_logged = true;
                    tracing::debug!(error = %error, "NVML Xid events unavailable; retrying.");
                }
            }
        }
        if sleep_or_stop(retry.max(Duration::from_secs(1)), stop) {
            return;
        }
    }
}

/// Registers and waits until stop, or until NVML fails (the caller reloads).
fn watch_events(nvml: &Nvml, store: &Store, stop: &watch::Receiver<bool>) {
    let mut logged_state: Option<usize> = None;
    while !stopped(stop) {
        let Ok(count) = nvml.device_count() else {
            return;
        };
        let (set, registered) = register_all(nvml, count);
        if logged_state != Some(registered.len()) {
            logged_state = Some(registered.len());
            tracing::info!(
                gpus = registered.len(),
                of = count,
                "NVML Xid events registered."
            );
        }
        let Some(set) = set else {
            if sleep_or_stop(RECHECK, stop) {
                return;
            }
            continue;
        };
        let since = Instant::now();
        loop {
            if stopped(stop) {
                return;
            }
            match set.wait(WAIT_MS) {
                Ok(data) => {
                    if let Some(event) = to_event(&data, &registered) {
                        tracing::warn!(
                            xid = event.xid,
                            gpu = ?event.gpu_index,
                            "NVML reported a critical Xid."
                        );
                        store.record_xid(event);
                    }
                }
                Err(NvmlError::Timeout) => {}
                Err(error) => {
                    tracing::debug!(error = %error, "NVML event wait failed; re-registering.");
                    if sleep_or_stop(Duration::from_secs(1), stop) {
                        return;
                    }
                    break;
                }
            }
            if since.elapsed() >= RECHECK && nvml.device_count().ok() != Some(count) {
                break;
            }
        }
    }
}

/// An event set with every device that accepts Xid events. A device that refuses is left
/// out; because a refused registration frees the set, the set is rebuilt with the others.
fn register_all(nvml: &Nvml, count: u32) -> (Option<EventSet<'_>>, Vec<Registered>) {
    let mut registered: Vec<Registered> = Vec::new();
    let mut set = nvml.create_event_set().ok();
    for index in 0..count {
        let Some(current) = set.take() else { break };
        let Ok(device) = nvml.device_by_index(index) else {
            set = Some(current);
            continue;
        };
        match device.register_events(EventTypes::CRITICAL_XID_ERROR, current) {
            Ok(next) => {
                set = Some(next);
                registered.push(Registered {
                    index,
                    uuid: device.uuid().unwrap_or_default(),
                    pci_bus_id: device.pci_info().map(|p| p.bus_id).unwrap_or_default(),
                });
            }
            Err(_) => {
                set = rebuild(nvml, &registered);
            }
        }
    }
    if registered.is_empty() {
        return (None, registered);
    }
    (set, registered)
}

fn rebuild<'n>(nvml: &'n Nvml, registered: &[Registered]) -> Option<EventSet<'n>> {
    let mut set = nvml.create_event_set().ok()?;
    for r in registered {
        let device = nvml.device_by_index(r.index).ok()?;
        set = device
            .register_events(EventTypes::CRITICAL_XID_ERROR, set)
            .ok()?;
    }
    Some(set)
}

fn to_event(
    data: &nvml_wrapper::struct_wrappers::event::EventData<'_>,
    registered: &[Registered],
) -> Option<XidEvent> {
    if !data.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
        return None;
    }
    let xid = match data.event_data {
        Some(XidError::Value(n)) => n,
        _ => return None,
    };
    let uuid = data.device.uuid().ok();
    let known = registered
        .iter()
        .find(|r| uuid.as_deref() == Some(r.uuid.as_str()))
        .or_else(|| {
            let index = data.device.index().ok()?;
            registered.iter().find(|r| r.index == index)
        });
    Some(XidEvent {
        at: SystemTime::now(),
        gpu_index: known.map(|r| r.index),
        uuid: known.map(|r| r.uuid.clone()).or(uuid).unwrap_or_default(),
        pci_bus_id: known.map(|r| r.pci_bus_id.clone()).unwrap_or_default(),
        xid,
        sources: vec![XidSource::NvmlEvent],
        detail: String::new(),
    })
}
