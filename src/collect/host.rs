//! The host collector: CPU, load, memory, swap, disk space, network counters and uptime via
//! sysinfo (the only module that imports it).
//!
//! sysinfo reads /proc and calls statfs, which can block on a hung network mount, so cycles
//! run on a dedicated thread under a deadline, exactly like the NVML collector.

use std::time::{Duration, SystemTime};

use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System};

use super::worker::DeadlineWorker;
use super::{CollectError, Collector, ErrorKind, run_on_worker};
use crate::config::HostConfig;
use crate::model::{DiskReadings, HostSample, NetworkReadings, Sample};

/// Pseudo filesystems whose "space" means nothing to an operator.
const IGNORED_FILESYSTEMS: [&str; 12] = [
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "overlay", "squashfs", "tmpfs",
    "nsfs", "tracefs", "autofs",
];

/// The async side of the host collector.
#[derive(Debug)]
pub struct HostCollector {
    worker: DeadlineWorker<Result<HostSample, CollectError>>,
    timeout: Duration,
}

impl HostCollector {
    pub fn start(config: &HostConfig) -> std::io::Result<Self> {
        let sampler = HostSampler::new(config.clone());
        let worker = DeadlineWorker::spawn("gpulse-host", sampler, HostSampler::cycle)?;
        Ok(Self {
            worker,
            timeout: config.timeout.0,
        })
    }
}

impl Collector for HostCollector {
    fn name(&self) -> &'static str {
        "host"
    }

    async fn collect(&mut self) -> Result<Sample, CollectError> {
        run_on_worker(&self.worker, "host", self.timeout)
            .await
            .map(Sample::Host)
    }
}

/// The blocking host sampler; [`HostCollector`] owns one on its thread, benches drive it
/// directly. sysinfo keeps previous readings to compute CPU usage.
pub struct HostSampler {
    config: HostConfig,
    system: Option<System>,
    disks: Option<Disks>,
    networks: Option<Networks>,
}

impl HostSampler {
    pub fn new(config: HostConfig) -> Self {
        Self {
            config,
            system: None,
            disks: None,
            networks: None,
        }
    }

    /// One host sampling cycle.
    pub fn cycle(&mut self) -> Result<HostSample, CollectError> {
        let system = match &mut self.system {
            Some(system) => system,
            slot @ None => slot.insert(
                System::new_with_specifics(
                    RefreshKind::nothing()
                        .with_cpu(CpuRefreshKind::nothing().with_usage())
                        .with_memory(MemoryRefreshKind::everything()),
                )
                .map_err(|error| {
                    CollectError::new(ErrorKind::Unavailable, format!("sysinfo: {error}"))
                })?,
            ),
        };
        system.refresh_cpu_usage();
        system.refresh_memory();
        let cpus = system.cpus();
        // The first refresh has no previous reading, so sysinfo reports 0 for every core.
        let cpu_utilization = (!cpus.is_empty())
            .then(|| f64::from(system.global_cpu_usage()) / 100.0)
            .map(|u| u.clamp(0.0, 1.0));
        let per_cpu_utilization = if self.config.per_cpu {
            cpus.iter()
                .enumerate()
                .map(|(i, cpu)| {
                    (
                        i.to_string(),
                        (f64::from(cpu.usage()) / 100.0).clamp(0.0, 1.0),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut sample = HostSample {
            taken_at: None,
            cpu_utilization,
            per_cpu_utilization,
            cpu_count: cpus.len(),
            load_average: System::load_average()
                .ok()
                .map(|l| [l.one, l.five, l.fifteen]),
            memory_total_bytes: system.total_memory(),
            memory_available_bytes: system.available_memory(),
            memory_used_bytes: system.used_memory(),
            swap_total_bytes: system.total_swap(),
            swap_used_bytes: system.used_swap(),
            disks: Vec::new(),
            networks: Vec::new(),
            uptime: System::uptime().ok().map(Duration::from_secs),
            boot_time_seconds: System::boot_time().ok(),
        };
        if self.config.disks {
            sample.disks = self.read_disks();
        }
        if self.config.networks {
            sample.networks = self.read_networks();
        }
        sample.taken_at = Some(SystemTime::now());
        Ok(sample)
    }

    fn read_disks(&mut self) -> Vec<DiskReadings> {
        let disks = match &mut self.disks {
            Some(disks) => {
                disks.refresh(true);
                disks
            }
            slot @ None => match Disks::new_with_refreshed_list() {
                Ok(disks) => slot.insert(disks),
                Err(_) => return Vec::new(),
            },
        };
        let mut out: Vec<DiskReadings> = disks
            .into_iter()
            .filter(|d| {
                let fs = d.file_system().to_string_lossy();
                !IGNORED_FILESYSTEMS.contains(&fs.as_ref()) && d.total_space() > 0
            })
            .map(|d| DiskReadings {
                mount_point: d.mount_point().display().to_string(),
                device: d.name().to_string_lossy().into_owned(),
                filesystem: d.file_system().to_string_lossy().into_owned(),
                total_bytes: d.total_space(),
                available_bytes: d.available_space(),
            })
            .collect();
        out.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
        out.dedup_by(|a, b| a.mount_point == b.mount_point);
        out.truncate(self.config.max_devices);
        out
    }

    fn read_networks(&mut self) -> Vec<NetworkReadings> {
        let networks = match &mut self.networks {
            Some(networks) => {
                networks.refresh(true);
                networks
            }
            slot @ None => match Networks::new_with_refreshed_list() {
                Ok(networks) => slot.insert(networks),
                Err(_) => return Vec::new(),
            },
        };
        let mut out: Vec<NetworkReadings> = networks
            .into_iter()
            .map(|(name, data)| NetworkReadings {
                interface: name.to_string_lossy().into_owned(),
                received_bytes: data.total_received(),
                transmitted_bytes: data.total_transmitted(),
                received_packets: data.total_packets_received(),
                transmitted_packets: data.total_packets_transmitted(),
                receive_errors: data.total_errors_on_received(),
                transmit_errors: data.total_errors_on_transmitted(),
            })
            .collect();
        out.sort_by(|a, b| a.interface.cmp(&b.interface));
        out.truncate(self.config.max_devices);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn samples_this_machine() {
        let mut c = HostCollector::start(&HostConfig::default()).unwrap();
        let Sample::Host(h) = c.collect().await.unwrap() else {
            panic!("not a host sample");
        };
        assert!(h.cpu_count > 0);
        assert!(h.memory_total_bytes > 0);
        assert!(h.memory_available_bytes <= h.memory_total_bytes);
        assert!(h.uptime.unwrap() > Duration::ZERO);
        assert!(h.networks.iter().any(|n| n.interface == "lo"));
        assert!(h.per_cpu_utilization.is_empty());
    }
}
