//! The host collector: CPU, load, memory, swap, disk space, network counters and uptime via
//! sysinfo (the only module that imports it) and, for network counters, `/proc/net/dev`.
//!
//! sysinfo reads /proc and calls statfs, which can block on a hung network mount, so cycles
//! run on a dedicated thread on its own schedule, under a deadline, exactly like the NVML
//! collector.
//!
//! A cycle reads only what the host families report: `/proc/stat` (CPU usage), `/proc/meminfo`,
//! `/proc/loadavg`, `/proc/uptime`, one `statvfs` per listed filesystem and `/proc/net/dev`
//! (every interface's counters in one read; sysinfo would open nine sysfs files per interface
//! and ask for every address). The filesystem list (`/proc/mounts`, `/dev/disk/by-id`) is read
//! again only when the mount table changed (a poll on `/proc/self/mounts` says so) or
//! [`LIST_REFRESH`] has passed; the boot time is read once.

use std::fs::File;
use std::time::{Duration, Instant, SystemTime};

use sysinfo::{
    CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System,
};

use super::paced::Paced;
use super::{CollectError, ErrorKind, PacedCollector};
use crate::config::HostConfig;
use crate::model::{DiskReadings, HostSample, NetworkReadings, Sample};

/// The longest the filesystem list goes without being read again, in case a mount change
/// was not signalled (a poll that failed, a file system that changed its device).
const LIST_REFRESH: Duration = Duration::from_secs(600);

/// Pseudo filesystems whose "space" means nothing to an operator.
const IGNORED_FILESYSTEMS: [&str; 12] = [
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "overlay", "squashfs", "tmpfs",
    "nsfs", "tracefs", "autofs",
];

/// Starts the host thread, sampling every `host.interval` from now on; the collector's
/// [`PacedCollector::run`] stores each cycle.
pub fn start_collector(config: &HostConfig) -> std::io::Result<PacedCollector> {
    let sampler = HostSampler::new(config.clone());
    let interval = config.interval.0;
    let paced = Paced::spawn("gpulse-host", interval, sampler, |sampler| {
        sampler.cycle().map(Sample::Host)
    })?;
    Ok(PacedCollector {
        name: "host",
        source: "host",
        paced,
        interval,
        timeout: config.timeout.0,
    })
}

/// The blocking host sampler; [`start_collector`]'s thread owns one, benches drive it
/// directly. sysinfo keeps previous readings to compute CPU usage.
pub struct HostSampler {
    config: HostConfig,
    system: Option<System>,
    disks: Option<Disks>,
    /// When the filesystem list was last read.
    disks_listed: Option<Instant>,
    mounts: MountWatch,
    /// sysinfo's interfaces, where `/proc/net/dev` cannot be read.
    networks: Option<Networks>,
    /// Seconds since the epoch; constant, so read once.
    boot_time: Option<u64>,
}

impl HostSampler {
    pub fn new(config: HostConfig) -> Self {
        Self {
            config,
            system: None,
            disks: None,
            disks_listed: None,
            mounts: MountWatch::open(),
            networks: None,
            boot_time: None,
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
            boot_time_seconds: match self.boot_time {
                Some(at) => Some(at),
                None => {
                    self.boot_time = System::boot_time().ok();
                    self.boot_time
                }
            },
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
        // statvfs only: no I/O counters (/proc/diskstats), no disk kind (sysfs).
        let storage = DiskRefreshKind::nothing().with_storage();
        let relist = self.mounts.changed()
            || self
                .disks_listed
                .is_none_or(|at| at.elapsed() >= LIST_REFRESH);
        let disks = match &mut self.disks {
            Some(disks) if relist => {
                disks.refresh_specifics(true, storage);
                disks
            }
            Some(disks) => {
                for disk in disks.iter_mut() {
                    disk.refresh_specifics(storage);
                }
                disks
            }
            slot @ None => match Disks::new_with_refreshed_list_specifics(storage) {
                Ok(disks) => slot.insert(disks),
                Err(_) => return Vec::new(),
            },
        };
        if relist {
            self.disks_listed = Some(Instant::now());
        }
        let mut out: Vec<DiskReadings> = disks
            .iter()
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
        let mut out = match std::fs::read_to_string("/proc/net/dev") {
            Ok(text) if self.networks.is_none() => parse_net_dev(&text),
            _ => self.read_networks_sysinfo(),
        };
        out.sort_by(|a, b| a.interface.cmp(&b.interface));
        out.truncate(self.config.max_devices);
        out
    }

    /// Where there is no `/proc/net/dev` (not Linux): sysinfo's interfaces.
    fn read_networks_sysinfo(&mut self) -> Vec<NetworkReadings> {
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
        networks
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
            .collect()
    }
}

/// Every interface's counters from `/proc/net/dev` (the kernel's `dev_seq_show`: two header
/// lines, then `name: rx_bytes rx_packets rx_errs drop fifo frame compressed multicast
/// tx_bytes tx_packets tx_errs ...`; a name holds no `:`). The same counters as the
/// `statistics/` files under `/sys/class/net/<name>/`. A line that does not parse is skipped.
pub fn parse_net_dev(text: &str) -> Vec<NetworkReadings> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let mut fields = [0u64; 11];
            let mut values = counters.split_ascii_whitespace();
            for field in &mut fields {
                *field = values.next()?.parse().ok()?;
            }
            (!name.is_empty()).then(|| NetworkReadings {
                interface: name.to_owned(),
                received_bytes: fields[0],
                received_packets: fields[1],
                receive_errors: fields[2],
                transmitted_bytes: fields[8],
                transmitted_packets: fields[9],
                transmit_errors: fields[10],
            })
        })
        .collect()
}

/// Tells whether the mount table changed since the last call: `/proc/self/mounts` signals
/// `POLLPRI` once per change (proc(5)). Where it cannot be opened or polled, every call
/// says "changed", which re-reads the list each cycle as before.
struct MountWatch {
    file: Option<File>,
}

impl MountWatch {
    fn open() -> Self {
        Self {
            file: File::open("/proc/self/mounts").ok(),
        }
    }

    fn changed(&mut self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let Some(file) = &self.file else {
            return true;
        };
        let mut fds = [PollFd::new(file, PollFlags::PRI)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&zero)) {
            Ok(0) => false,
            Ok(_) => true,
            Err(_) => {
                self.file = None;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn samples_this_machine() {
        let config = HostConfig {
            interval: crate::config::HumanDuration(Duration::from_millis(20)),
            ..HostConfig::default()
        };
        let c = start_collector(&config).unwrap();
        let Sample::Host(h) = c.paced.next().await.result.unwrap() else {
            panic!("not a host sample");
        };
        assert!(h.cpu_count > 0);
        assert!(h.memory_total_bytes > 0);
        assert!(h.memory_available_bytes <= h.memory_total_bytes);
        assert!(h.uptime.unwrap() > Duration::ZERO);
        assert!(h.networks.iter().any(|n| n.interface == "lo"));
        assert!(h.per_cpu_utilization.is_empty());
        // A second cycle (the lists are not read again) gives the same filesystems.
        let Sample::Host(again) = c.paced.next().await.result.unwrap() else {
            panic!("not a host sample");
        };
        let mounts = |h: &HostSample| -> Vec<String> {
            h.disks.iter().map(|d| d.mount_point.clone()).collect()
        };
        assert_eq!(mounts(&h), mounts(&again));
        assert_eq!(h.boot_time_seconds, again.boot_time_seconds);
    }

    #[test]
    fn proc_net_dev_parses_as_the_sysfs_counters() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9145466   91204    0    0    0     0          0         0  9145466   91204    0    0    0     0       0          0
  eth0:123456789012 4567 3 1 0 0 0 12 98765 432 7 0 0 0 0 0
veth-with-a-long-name: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16
broken: 1 2
";
        let got = parse_net_dev(text);
        assert_eq!(got.len(), 3, "{got:?}");
        let eth0 = &got[1];
        assert_eq!(eth0.interface, "eth0");
        assert_eq!(
            (
                eth0.received_bytes,
                eth0.received_packets,
                eth0.receive_errors,
                eth0.transmitted_bytes,
                eth0.transmitted_packets,
                eth0.transmit_errors
            ),
            (123_456_789_012, 4567, 3, 98765, 432, 7)
        );
        assert_eq!(got[2].interface, "veth-with-a-long-name");
        assert_eq!((got[2].transmitted_bytes, got[2].transmit_errors), (9, 11));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn proc_net_dev_agrees_with_sysinfo_on_the_interfaces() {
        let text = std::fs::read_to_string("/proc/net/dev").unwrap();
        let mut ours: Vec<String> = parse_net_dev(&text)
            .into_iter()
            .map(|n| n.interface)
            .collect();
        let mut theirs: Vec<String> = Networks::new_with_refreshed_list()
            .unwrap()
            .keys()
            .map(|k| k.to_string_lossy().into_owned())
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
    }
}
