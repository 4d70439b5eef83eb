//! Host readings (sysinfo): CPU, memory, swap, filesystems, network, uptime.

use std::time::{Duration, SystemTime};

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
