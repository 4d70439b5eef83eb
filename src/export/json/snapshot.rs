//! `gpulse.snapshot/v1` (`GET /v1/snapshot`): every source's latest sample, collectors, Xids.

use serde::Serialize;

use super::*;
use crate::model::{CollectorStatus, GpuDevice, GpuSample, HostSample, XidEvent, XidLog};
use crate::store::Snapshot;

/// Schema id of [`SnapshotV1`].
pub const SNAPSHOT_SCHEMA_V1: &str = "gpulse.snapshot/v1";

#[derive(Debug, Serialize)]
pub struct SnapshotV1 {
    pub schema: &'static str,
    pub agent_version: &'static str,
    pub node: String,
    /// True once every collector has finished one cycle.
    pub ready: bool,
    pub collectors: Vec<CollectorV1>,
    /// Absent when no GPU sample was ever taken (no NVML).
    pub gpu: Option<GpuSectionV1>,
    pub host: Option<HostV1>,
    /// Xid counts since start and the most recent occurrences (always present, maybe empty).
    pub xid: XidLogV1,
    /// Where gpulse runs: `embedded`, `sidecar` or `host` (see `cannot_measure`).
    pub mode: &'static str,
    /// `agent.mode` as configured: `auto` or one of the modes.
    pub mode_setting: &'static str,
    /// What this agent cannot measure where it runs: `gpu`, `xid_kernel_log`,
    /// `other_containers_gpus`, `job_runs`.
    pub cannot_measure: Vec<&'static str>,
    /// Who runs this node, from the environment (always present; `akash` is null outside an
    /// Akash lease).
    pub identity: IdentityV1,
}

/// The environment identity ([`crate::identity::Identity`]).
#[derive(Debug, Serialize)]
pub struct IdentityV1 {
    pub akash: Option<AkashLeaseV1>,
}

/// The Akash lease, from the variables the provider injects; a field is null when its
/// variable is unset.
#[derive(Debug, Serialize)]
pub struct AkashLeaseV1 {
    pub owner: Option<String>,
    pub provider: Option<String>,
    pub dseq: Option<String>,
    pub gseq: Option<String>,
    pub oseq: Option<String>,
    pub cluster_public_hostname: Option<String>,
}

impl From<&crate::identity::Identity> for IdentityV1 {
    fn from(id: &crate::identity::Identity) -> Self {
        Self {
            akash: id.akash.as_ref().map(|a| AkashLeaseV1 {
                owner: a.owner.clone(),
                provider: a.provider.clone(),
                dseq: a.dseq.clone(),
                gseq: a.gseq.clone(),
                oseq: a.oseq.clone(),
                cluster_public_hostname: a.cluster_public_hostname.clone(),
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct XidLogV1 {
    pub counts: Vec<XidCountV1>,
    pub recent: Vec<XidEventV1>,
}

#[derive(Debug, Serialize)]
pub struct XidCountV1 {
    /// Absent when the source could not tell which GPU.
    pub gpu: Option<u32>,
    pub uuid: String,
    pub xid: u64,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
pub struct XidEventV1 {
    pub at: String,
    pub gpu: Option<u32>,
    pub uuid: String,
    pub pci_bus_id: String,
    pub xid: u64,
    /// `nvml_event`, `kmsg`, `nvml_return_code`; the first source first.
    pub sources: Vec<&'static str>,
    pub detail: String,
}

impl From<&XidEvent> for XidEventV1 {
    fn from(e: &XidEvent) -> Self {
        Self {
            at: rfc3339(e.at),
            gpu: e.gpu_index,
            uuid: e.uuid.clone(),
            pci_bus_id: e.pci_bus_id.clone(),
            xid: e.xid,
            sources: e.sources.iter().map(|s| s.as_str()).collect(),
            detail: e.detail.clone(),
        }
    }
}

impl From<&XidLog> for XidLogV1 {
    fn from(x: &XidLog) -> Self {
        Self {
            counts: x
                .counts
                .iter()
                .map(|c| XidCountV1 {
                    gpu: c.gpu_index,
                    uuid: c.uuid.clone(),
                    xid: c.xid,
                    count: c.count,
                    first_seen: rfc3339(c.first_seen),
                    last_seen: rfc3339(c.last_seen),
                })
                .collect(),
            recent: x.recent.iter().map(XidEventV1::from).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CollectorV1 {
    pub name: &'static str,
    pub interval_seconds: f64,
    pub runs: u64,
    pub failures: u64,
    pub last_success: bool,
    pub stale: bool,
    pub last_duration_seconds: f64,
    pub last_run_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct GpuSectionV1 {
    pub sampled_at: String,
    pub driver_version: Option<String>,
    pub cuda_driver_version: Option<String>,
    pub devices: Vec<GpuV1>,
}

#[derive(Debug, Serialize)]
pub struct GpuV1 {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub pci_bus_id: String,
    pub serial: Option<String>,
    pub vbios_version: Option<String>,
    pub lost: bool,
    pub utilization: UtilizationV1,
    pub memory: MemoryV1,
    pub temperature_celsius: TemperatureV1,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    pub energy_joules: Option<f64>,
    pub clocks_hertz: Vec<NamedValueV1>,
    pub max_clocks_hertz: Vec<NamedValueV1>,
    pub performance_state: Option<u32>,
    pub fan_speed_ratio: Vec<NamedValueV1>,
    /// Reasons the GPU supports, each with whether it is limiting clocks now.
    pub throttle_reasons: Vec<ThrottleReasonV1>,
    pub throttle_seconds: Vec<NamedValueV1>,
    pub ecc_errors: Vec<EccV1>,
    pub retired_pages: Vec<NamedValueV1>,
    pub retired_pages_pending: Option<bool>,
    pub remapped_rows: Option<RemappedRowsV1>,
    pub pcie: PcieV1,
    /// NVML GPM readings over the last interval (Hopper and newer; all absent without GPM).
    pub profiling: ProfilingV1,
    pub nvlinks: Vec<NvLinkV1>,
    pub processes: Option<Vec<ProcessV1>>,
    pub mig: Option<MigV1>,
    /// The driver's recovery verdict: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P,
    /// 4 drain and reset; absent when unsupported.
    pub recovery_action: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct UtilizationV1 {
    pub gpu_ratio: Option<f64>,
    pub memory_ratio: Option<f64>,
    pub encoder_ratio: Option<f64>,
    pub decoder_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct MemoryV1 {
    pub total_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub reserved_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct TemperatureV1 {
    pub gpu: Option<f64>,
    pub memory: Option<f64>,
    pub thresholds: Vec<NamedValueV1>,
}

#[derive(Debug, Serialize)]
pub struct NamedValueV1 {
    pub name: String,
    pub value: f64,
}

#[derive(Debug, Serialize)]
pub struct ThrottleReasonV1 {
    pub reason: &'static str,
    pub active: bool,
}

#[derive(Debug, Serialize)]
pub struct EccV1 {
    pub kind: &'static str,
    pub scope: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct RemappedRowsV1 {
    pub correctable: u64,
    pub uncorrectable: u64,
    pub pending: bool,
    pub failure: bool,
}

#[derive(Debug, Serialize)]
pub struct PcieV1 {
    pub link_generation: Option<u32>,
    pub link_width: Option<u32>,
    pub replay_count: Option<u64>,
    pub tx_bytes_per_second: Option<f64>,
    pub rx_bytes_per_second: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ProfilingV1 {
    pub graphics_engine_active_ratio: Option<f64>,
    pub sm_active_ratio: Option<f64>,
    pub sm_occupancy_ratio: Option<f64>,
    pub dram_active_ratio: Option<f64>,
    /// The measured pipes (`tensor`, `fp64`, `fp32`, `fp16`) with their activity ratio.
    pub pipe_active_ratio: Vec<NamedValueV1>,
    pub nvlink_tx_bytes_per_second: Option<f64>,
    pub nvlink_rx_bytes_per_second: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct NvLinkV1 {
    pub link: u32,
    pub active: bool,
    pub errors: Vec<NamedValueV1>,
}

#[derive(Debug, Serialize)]
pub struct ProcessV1 {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
    pub sm_utilization_ratio: Option<f64>,
    pub memory_utilization_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct MigV1 {
    pub enabled: bool,
    pub pending_enabled: bool,
    pub instances: Vec<MigInstanceV1>,
}

#[derive(Debug, Serialize)]
pub struct MigInstanceV1 {
    pub index: u32,
    pub uuid: String,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct HostV1 {
    pub sampled_at: Option<String>,
    pub cpu_count: usize,
    pub cpu_utilization_ratio: Option<f64>,
    pub per_cpu_utilization_ratio: Vec<NamedValueV1>,
    pub load_average: Option<[f64; 3]>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub filesystems: Vec<FilesystemV1>,
    pub networks: Vec<NetworkV1>,
    pub uptime_seconds: Option<u64>,
    pub boot_time_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct FilesystemV1 {
    pub mount_point: String,
    pub device: String,
    pub filesystem: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct NetworkV1 {
    pub interface: String,
    pub received_bytes: u64,
    pub transmitted_bytes: u64,
    pub received_packets: u64,
    pub transmitted_packets: u64,
    pub receive_errors: u64,
    pub transmit_errors: u64,
}

impl SnapshotV1 {
    pub fn from_snapshot(snap: &Snapshot, node: &str) -> Self {
        Self {
            schema: SNAPSHOT_SCHEMA_V1,
            agent_version: env!("CARGO_PKG_VERSION"),
            node: node.to_owned(),
            ready: snap.first_cycle_done(),
            collectors: snap.collectors.iter().map(CollectorV1::from).collect(),
            gpu: snap.gpu.as_deref().map(GpuSectionV1::from),
            host: snap.host.as_deref().map(HostV1::from),
            xid: XidLogV1::from(snap.xid.as_ref()),
            mode: snap.mode.mode.as_str(),
            mode_setting: snap.mode.setting_str(),
            cannot_measure: crate::mode::cannot_measure(&snap.mode, snap.gpu.is_some()),
            identity: IdentityV1::from(snap.identity.as_ref()),
        }
    }
}

impl From<&CollectorStatus> for CollectorV1 {
    fn from(c: &CollectorStatus) -> Self {
        Self {
            name: c.name,
            interval_seconds: c.interval.as_secs_f64(),
            runs: c.runs,
            failures: c.failures,
            last_success: c.last_success,
            stale: c.is_stale(),
            last_duration_seconds: c.last_duration.as_secs_f64(),
            last_run_at: c.last_run_at.map(rfc3339),
            last_success_at: c.last_success_at.map(rfc3339),
            last_error: c.last_error.clone(),
            last_error_kind: c.last_error_kind,
        }
    }
}

impl From<&GpuSample> for GpuSectionV1 {
    fn from(g: &GpuSample) -> Self {
        Self {
            sampled_at: rfc3339(g.taken_at),
            driver_version: g.driver_version.clone(),
            cuda_driver_version: g.cuda_driver_version.clone(),
            devices: g.devices.iter().map(GpuV1::from).collect(),
        }
    }
}

impl From<&GpuDevice> for GpuV1 {
    fn from(d: &GpuDevice) -> Self {
        let id = &d.identity;
        Self {
            index: id.index,
            uuid: id.uuid.clone(),
            name: id.name.clone(),
            pci_bus_id: id.pci_bus_id.clone(),
            serial: id.serial.clone(),
            vbios_version: id.vbios_version.clone(),
            lost: d.lost,
            utilization: UtilizationV1 {
                gpu_ratio: d.utilization.gpu,
                memory_ratio: d.utilization.memory,
                encoder_ratio: d.utilization.encoder,
                decoder_ratio: d.utilization.decoder,
            },
            memory: MemoryV1 {
                total_bytes: d.memory.total_bytes,
                used_bytes: d.memory.used_bytes,
                free_bytes: d.memory.free_bytes,
                reserved_bytes: d.memory.reserved_bytes,
            },
            temperature_celsius: TemperatureV1 {
                gpu: d.temperature_gpu_celsius,
                memory: d.temperature_memory_celsius,
                thresholds: named(&d.temperature_thresholds),
            },
            power_watts: d.power_watts,
            power_limit_watts: d.power_limit_watts,
            energy_joules: d.energy_joules,
            clocks_hertz: named(&d.clocks_hertz),
            max_clocks_hertz: named(&d.max_clocks_hertz),
            performance_state: d.performance_state,
            fan_speed_ratio: named(&d.fan_speed_ratio),
            throttle_reasons: d
                .throttle
                .iter()
                .flat_map(|t| t.decoded().collect::<Vec<_>>())
                .map(|(reason, active)| ThrottleReasonV1 {
                    reason: reason.as_str(),
                    active,
                })
                .collect(),
            throttle_seconds: named(&d.throttle_seconds),
            ecc_errors: d
                .ecc_errors
                .iter()
                .map(|(kind, scope, count)| EccV1 {
                    kind: kind.as_str(),
                    scope: scope.as_str(),
                    count: *count,
                })
                .collect(),
            retired_pages: d
                .retired_pages
                .iter()
                .map(|(cause, n)| NamedValueV1 {
                    name: cause.as_str().to_owned(),
                    value: *n as f64,
                })
                .collect(),
            retired_pages_pending: d.retired_pages_pending,
            remapped_rows: d.remapped_rows.map(|r| RemappedRowsV1 {
                correctable: r.correctable,
                uncorrectable: r.uncorrectable,
                pending: r.pending,
                failure: r.failure,
            }),
            pcie: PcieV1 {
                link_generation: d.pcie.link_generation,
                link_width: d.pcie.link_width,
                replay_count: d.pcie.replay_count,
                tx_bytes_per_second: d.pcie.tx_bytes_per_second,
                rx_bytes_per_second: d.pcie.rx_bytes_per_second,
            },
            profiling: ProfilingV1 {
                graphics_engine_active_ratio: d.profiling.graphics_engine_active,
                sm_active_ratio: d.profiling.sm_active,
                sm_occupancy_ratio: d.profiling.sm_occupancy,
                dram_active_ratio: d.profiling.dram_active,
                pipe_active_ratio: d
                    .profiling
                    .pipes()
                    .filter_map(|(pipe, v)| {
                        v.map(|value| NamedValueV1 {
                            name: pipe.as_str().to_owned(),
                            value,
                        })
                    })
                    .collect(),
                nvlink_tx_bytes_per_second: d.profiling.nvlink_tx_bytes_per_second,
                nvlink_rx_bytes_per_second: d.profiling.nvlink_rx_bytes_per_second,
            },
            nvlinks: d
                .nvlinks
                .iter()
                .map(|l| NvLinkV1 {
                    link: l.link,
                    active: l.active,
                    errors: l
                        .errors()
                        .map(|(n, v)| NamedValueV1 {
                            name: n.as_str().to_owned(),
                            value: v as f64,
                        })
                        .collect(),
                })
                .collect(),
            processes: d.processes.as_ref().map(|ps| {
                ps.iter()
                    .map(|p| ProcessV1 {
                        pid: p.pid,
                        used_memory_bytes: p.used_memory_bytes,
                        sm_utilization_ratio: p.sm_utilization,
                        memory_utilization_ratio: p.memory_utilization,
                    })
                    .collect()
            }),
            recovery_action: d.recovery_action,
            mig: d.mig.as_ref().map(|m| MigV1 {
                enabled: m.enabled,
                pending_enabled: m.pending_enabled,
                instances: m
                    .instances
                    .iter()
                    .map(|i| MigInstanceV1 {
                        index: i.index,
                        uuid: i.uuid.clone(),
                        memory_total_bytes: i.memory_total_bytes,
                        memory_used_bytes: i.memory_used_bytes,
                    })
                    .collect(),
            }),
        }
    }
}

impl From<&HostSample> for HostV1 {
    fn from(h: &HostSample) -> Self {
        Self {
            sampled_at: h.taken_at.map(rfc3339),
            cpu_count: h.cpu_count,
            cpu_utilization_ratio: h.cpu_utilization,
            per_cpu_utilization_ratio: named(&h.per_cpu_utilization),
            load_average: h.load_average,
            memory_total_bytes: h.memory_total_bytes,
            memory_available_bytes: h.memory_available_bytes,
            memory_used_bytes: h.memory_used_bytes,
            swap_total_bytes: h.swap_total_bytes,
            swap_used_bytes: h.swap_used_bytes,
            filesystems: h
                .disks
                .iter()
                .map(|d| FilesystemV1 {
                    mount_point: d.mount_point.clone(),
                    device: d.device.clone(),
                    filesystem: d.filesystem.clone(),
                    total_bytes: d.total_bytes,
                    available_bytes: d.available_bytes,
                })
                .collect(),
            networks: h
                .networks
                .iter()
                .map(|n| NetworkV1 {
                    interface: n.interface.clone(),
                    received_bytes: n.received_bytes,
                    transmitted_bytes: n.transmitted_bytes,
                    received_packets: n.received_packets,
                    transmitted_packets: n.transmitted_packets,
                    receive_errors: n.receive_errors,
                    transmit_errors: n.transmit_errors,
                })
                .collect(),
            uptime_seconds: h.uptime.map(|u| u.as_secs()),
            boot_time_seconds: h.boot_time_seconds,
        }
    }
}
