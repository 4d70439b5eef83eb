//! dcgm-exporter compatibility (`[prometheus] dcgm_compat`): owns the `DCGM_FI_*` families, their
//! dcgm units and dcgm's per-GPU label set, computed from the same snapshot as the native ones.
//!
//! Names, units and help texts follow dcgm-exporter's `etc/default-counters.csv` (default
//! lines plus the commented-out ones gpulse has data for); labels follow its
//! `render_metrics.go` order (`gpu-exporters.md` §3.1, §3.2). Every family is declared a
//! `gauge`: prometheus-client appends `_total` to counters, which would change dcgm's exact
//! names. Readings gpulse does not have are omitted, never 0: `DCGM_FI_DEV_XID_ERRORS` until a
//! GPU had an Xid (then the last code, with dcgm's extra `err_code` label),
//! `DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL`, `DCGM_FI_DEV_VGPU_LICENSE_STATUS` and every
//! `DCGM_FI_PROF_*` (no NVML GPM sampling yet). Lost GPUs and MIG instances have no series.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::encode::gauge;
use crate::model::{
    Clock, EccKind, EccScope, GpuDevice, NvLinkCounter, RetiredCause, ThrottlePolicy,
};
use crate::store::Snapshot;

/// dcgm-exporter's label names on every GPU series, in its order.
pub const LABELS: [&str; 7] = [
    "gpu",
    "UUID",
    "pci_bus_id",
    "device",
    "modelName",
    "Hostname",
    "DCGM_FI_DRIVER_VERSION",
];

/// The label set of one GPU's series, in [`LABELS`] order.
pub type DcgmLabels<'a> = [(&'static str, &'a str); 7];

/// One dcgm-exporter metric family.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// dcgm-exporter's exact name.
    pub name: &'static str,
    /// HELP text, as dcgm-exporter's CSV words it (with the unit gpulse really reports).
    pub help: &'static str,
    /// The reading of one GPU in dcgm's unit; `None` leaves that GPU's series out.
    value: fn(&GpuDevice) -> Option<f64>,
}

/// Every family rendered, in dcgm-exporter's CSV order.
pub const FAMILIES: [Family; 34] = [
    Family {
        name: "DCGM_FI_DEV_SM_CLOCK",
        help: "SM clock frequency (in MHz).",
        value: |d| clock_mhz(d, Clock::Sm),
    },
    Family {
        name: "DCGM_FI_DEV_MEM_CLOCK",
        help: "Memory clock frequency (in MHz).",
        value: |d| clock_mhz(d, Clock::Memory),
    },
    Family {
        name: "DCGM_FI_DEV_MEMORY_TEMP",
        help: "Memory temperature (in C).",
        value: |d| d.temperature_memory_celsius,
    },
    Family {
        name: "DCGM_FI_DEV_GPU_TEMP",
        help: "GPU temperature (in C).",
        value: |d| d.temperature_gpu_celsius,
    },
    Family {
        name: "DCGM_FI_DEV_POWER_USAGE",
        help: "Power draw (in W).",
        value: |d| d.power_watts,
    },
    Family {
        name: "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        help: "Total energy consumption since boot (in mJ).",
        value: |d| d.energy_joules.map(millijoules),
    },
    Family {
        name: "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        help: "Total number of PCIe retries.",
        value: |d| d.pcie.replay_count.map(count),
    },
    Family {
        name: "DCGM_FI_DEV_GPU_UTIL",
        help: "GPU utilization (in %).",
        value: |d| d.utilization.gpu.map(percent),
    },
    Family {
        name: "DCGM_FI_DEV_MEM_COPY_UTIL",
        help: "Memory utilization (in %).",
        value: |d| d.utilization.memory.map(percent),
    },
    Family {
        name: "DCGM_FI_DEV_ENC_UTIL",
        help: "Encoder utilization (in %).",
        value: |d| d.utilization.encoder.map(percent),
    },
    Family {
        name: "DCGM_FI_DEV_DEC_UTIL",
        help: "Decoder utilization (in %).",
        value: |d| d.utilization.decoder.map(percent),
    },
    // The CSV's help says "(in us)", but DCGM's field (and NVML's violation time) is in ns.
    Family {
        name: "DCGM_FI_DEV_POWER_VIOLATION",
        help: "Throttling duration due to power constraints (in ns).",
        value: |d| violation_ns(d, ThrottlePolicy::Power),
    },
    Family {
        name: "DCGM_FI_DEV_THERMAL_VIOLATION",
        help: "Throttling duration due to thermal constraints (in ns).",
        value: |d| violation_ns(d, ThrottlePolicy::Thermal),
    },
    Family {
        name: "DCGM_FI_DEV_SYNC_BOOST_VIOLATION",
        help: "Throttling duration due to sync-boost constraints (in ns).",
        value: |d| violation_ns(d, ThrottlePolicy::SyncBoost),
    },
    Family {
        name: "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION",
        help: "Throttling duration due to board limit constraints (in ns).",
        value: |d| violation_ns(d, ThrottlePolicy::BoardLimit),
    },
    Family {
        name: "DCGM_FI_DEV_LOW_UTIL_VIOLATION",
        help: "Throttling duration due to low utilization (in ns).",
        value: |d| violation_ns(d, ThrottlePolicy::LowUtilization),
    },
    Family {
        name: "DCGM_FI_DEV_RELIABILITY_VIOLATION",
        help: "Throttling duration due to reliability constraints (in ns).",
        value: |d| violation_ns(d, ThrottlePolicy::Reliability),
    },
    Family {
        name: "DCGM_FI_DEV_FB_FREE",
        help: "Framebuffer memory free (in MiB).",
        value: |d| d.memory.free_bytes.map(mib),
    },
    Family {
        name: "DCGM_FI_DEV_FB_USED",
        help: "Framebuffer memory used (in MiB).",
        value: |d| d.memory.used_bytes.map(mib),
    },
    Family {
        name: "DCGM_FI_DEV_FB_RESERVED",
        help: "Framebuffer memory reserved (in MiB).",
        value: |d| d.memory.reserved_bytes.map(mib),
    },
    Family {
        name: "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        help: "Total number of single-bit volatile ECC errors.",
        value: |d| ecc(d, EccKind::Corrected, EccScope::Volatile),
    },
    Family {
        name: "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        help: "Total number of double-bit volatile ECC errors.",
        value: |d| ecc(d, EccKind::Uncorrected, EccScope::Volatile),
    },
    Family {
        name: "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        help: "Total number of single-bit persistent ECC errors.",
        value: |d| ecc(d, EccKind::Corrected, EccScope::Aggregate),
    },
    Family {
        name: "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        help: "Total number of double-bit persistent ECC errors.",
        value: |d| ecc(d, EccKind::Uncorrected, EccScope::Aggregate),
    },
    Family {
        name: "DCGM_FI_DEV_RETIRED_SBE",
        help: "Total number of retired pages due to single-bit errors.",
        value: |d| retired(d, RetiredCause::SingleBitEcc),
    },
    Family {
        name: "DCGM_FI_DEV_RETIRED_DBE",
        help: "Total number of retired pages due to double-bit errors.",
        value: |d| retired(d, RetiredCause::DoubleBitEcc),
    },
    // NVML (and so DCGM) only says whether any page is pending, not how many.
    Family {
        name: "DCGM_FI_DEV_RETIRED_PENDING",
        help: "Whether pages are pending retirement (1) or not (0).",
        value: |d| d.retired_pages_pending.map(flag),
    },
    Family {
        name: "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
        help: "Total number of NVLink flow-control CRC errors.",
        value: |d| nvlink_total(d, NvLinkCounter::CrcFlit),
    },
    Family {
        name: "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
        help: "Total number of NVLink data CRC errors.",
        value: |d| nvlink_total(d, NvLinkCounter::CrcData),
    },
    Family {
        name: "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
        help: "Total number of NVLink retries.",
        value: |d| nvlink_total(d, NvLinkCounter::Replay),
    },
    Family {
        name: "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
        help: "Total number of NVLink recovery errors.",
        value: |d| nvlink_total(d, NvLinkCounter::Recovery),
    },
    Family {
        name: "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        help: "Number of remapped rows for uncorrectable errors",
        value: |d| d.remapped_rows.map(|r| count(r.uncorrectable)),
    },
    Family {
        name: "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        help: "Number of remapped rows for correctable errors",
        value: |d| d.remapped_rows.map(|r| count(r.correctable)),
    },
    Family {
        name: "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        help: "Whether remapping of rows has failed",
        value: |d| d.remapped_rows.map(|r| flag(r.failure)),
    },
];

/// One GPU that has series, with the label values that are not stored in the snapshot.
struct LabelledGpu<'a> {
    device: &'a GpuDevice,
    /// `nvidia<index>`, dcgm's `device` label.
    node: String,
}

/// Writes every [`FAMILIES`] entry that at least one GPU has a reading for. `hostname` is the
/// value of the `Hostname` label. Without a GPU sample nothing is written.
pub fn encode_dcgm(enc: &mut DescriptorEncoder, snap: &Snapshot, hostname: &str) -> fmt::Result {
    let Some(sample) = snap.gpu.as_deref() else {
        return Ok(());
    };
    let driver = sample.driver_version.as_deref().unwrap_or("");
    let gpus: Vec<LabelledGpu<'_>> = sample
        .devices
        .iter()
        .filter(|d| !d.lost)
        .map(|device| LabelledGpu {
            device,
            node: device_label(device.identity.index),
        })
        .collect();
    for family in &FAMILIES {
        gauge(
            enc,
            family.name,
            family.help,
            gpus.iter().filter_map(|g| {
                (family.value)(g.device).map(|v| (labels(g.device, &g.node, hostname, driver), v))
            }),
        )?;
    }
    // The last Xid per GPU, as dcgm reports it; only for GPUs that had one.
    let last_xid: Vec<(&LabelledGpu<'_>, String, f64)> = gpus
        .iter()
        .filter_map(|g| {
            snap.xid
                .counts
                .iter()
                .filter(|c| c.gpu_index == Some(g.device.identity.index))
                .max_by_key(|c| c.last_seen)
                .map(|c| (g, c.xid.to_string(), c.xid as f64))
        })
        .collect();
    gauge(
        enc,
        "DCGM_FI_DEV_XID_ERRORS",
        "Value of the last XID error encountered.",
        last_xid.iter().map(|(g, code, v)| {
            let [a, b, c, d, e, f, h] = labels(g.device, &g.node, hostname, driver);
            ([a, b, c, d, e, f, h, ("err_code", code.as_str())], *v)
        }),
    )?;
    Ok(())
}

/// dcgm's `device` label of GPU `index`.
fn device_label(index: u32) -> String {
    format!("nvidia{index}")
}

/// The labels of one GPU's series, in [`LABELS`] order.
fn labels<'a>(
    d: &'a GpuDevice,
    node: &'a str,
    hostname: &'a str,
    driver: &'a str,
) -> DcgmLabels<'a> {
    let id = &d.identity;
    [
        (LABELS[0], id.index_label.as_str()),
        (LABELS[1], id.uuid.as_str()),
        (LABELS[2], id.pci_bus_id.as_str()),
        (LABELS[3], node),
        (LABELS[4], id.name.as_str()),
        (LABELS[5], hostname),
        (LABELS[6], driver),
    ]
}

/// Drops the binary noise of a unit conversion (`0.55 * 100` is `55.00000000000001`), keeping
/// six decimals, far below what NVML resolves.
fn tidy(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// A 0–1 ratio as dcgm's 0–100 %.
fn percent(ratio: f64) -> f64 {
    tidy(ratio * 100.0)
}

/// Bytes as whole MiB, truncated like DCGM's integer fields.
fn mib(bytes: u64) -> f64 {
    (bytes >> 20) as f64
}

/// Hz as MHz.
fn mhz(hertz: f64) -> f64 {
    tidy(hertz / 1e6)
}

/// Joules as whole mJ (NVML counts energy in mJ).
fn millijoules(joules: f64) -> f64 {
    (joules * 1e3).round()
}

/// Seconds as whole ns (NVML counts violation time in ns).
fn nanoseconds(seconds: f64) -> f64 {
    (seconds * 1e9).round()
}

fn count(n: u64) -> f64 {
    n as f64
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::export::prometheus::{BuildInfo, RenderOptions, render_snapshot};
    use crate::model::{
        GpuIdentity, GpuSample, MemoryReadings, NvLinkReadings, PcieReadings, RemappedRows,
        Utilization,
    };

    const MIB: u64 = 1 << 20;

    #[test]
    fn units_are_dcgms() {
        assert_eq!(mib(10 * 1024 * MIB), 10_240.0);
        assert_eq!(mib(MIB - 1), 0.0, "whole MiB, truncated");
        assert_eq!(mib(512 * MIB + MIB / 2), 512.0);
        assert_eq!(mhz(1_755e6), 1_755.0);
        assert_eq!(mhz(2_619e6), 2_619.0);
        assert_eq!(millijoules(1e6), 1e9);
        assert_eq!(millijoules(1_234.567_8), 1_234_568.0);
        assert_eq!(nanoseconds(2.0), 2e9);
        assert_eq!(nanoseconds(1.5e-9), 2.0);
        assert_eq!(percent(0.55), 55.0, "no 55.00000000000001");
        assert_eq!(percent(0.07), 7.0);
        assert_eq!(percent(0.456), 45.6);
        assert_eq!(percent(1.0), 100.0);
        assert_eq!(percent(0.0), 0.0);
        assert_eq!(device_label(3), "nvidia3");
    }

    fn identity(index: u32) -> Arc<GpuIdentity> {
        Arc::new(GpuIdentity {
            index,
            index_label: index.to_string(),
            uuid: format!("GPU-{index}"),
            name: "NVIDIA H100 80GB HBM3".to_owned(),
            pci_bus_id: format!("00000000:{:02X}:00.0", 0x10 + index),
            serial: None,
            vbios_version: None,
        })
    }

    /// GPU 0 with every reading, GPU 1 with almost none, GPU 2 lost.
    fn snapshot() -> Snapshot {
        let full = GpuDevice {
            identity: identity(0),
            utilization: Utilization {
                gpu: Some(0.55),
                memory: Some(0.31),
                encoder: Some(0.0),
                decoder: Some(0.02),
            },
            memory: MemoryReadings {
                total_bytes: Some(80 * 1024 * MIB),
                used_bytes: Some(10 * 1024 * MIB),
                free_bytes: Some(69 * 1024 * MIB + 512 * MIB),
                reserved_bytes: Some(512 * MIB),
            },
            temperature_gpu_celsius: Some(41.0),
            temperature_memory_celsius: Some(46.0),
            power_watts: Some(301.5),
            energy_joules: Some(2e6),
            clocks_hertz: vec![
                (Clock::Graphics, 1_980e6),
                (Clock::Sm, 1_755e6),
                (Clock::Memory, 2_619e6),
            ],
            throttle_seconds: vec![
                (ThrottlePolicy::Power, 4.0),
                (ThrottlePolicy::LowUtilization, 0.25),
            ],
            ecc_errors: vec![
                (EccKind::Corrected, EccScope::Volatile, 1),
                (EccKind::Corrected, EccScope::Aggregate, 5),
                (EccKind::Uncorrected, EccScope::Volatile, 0),
                (EccKind::Uncorrected, EccScope::Aggregate, 2),
            ],
            retired_pages: vec![
                (RetiredCause::SingleBitEcc, 3),
                (RetiredCause::DoubleBitEcc, 1),
            ],
            retired_pages_pending: Some(true),
            remapped_rows: Some(RemappedRows {
                correctable: 7,
                uncorrectable: 1,
                pending: false,
                failure: true,
            }),
            pcie: PcieReadings {
                replay_count: Some(9),
                ..PcieReadings::default()
            },
            nvlinks: vec![
                NvLinkReadings {
                    link: 0,
                    active: true,
                    errors: [Some(1), Some(2), Some(3), None],
                },
                NvLinkReadings {
                    link: 1,
                    active: true,
                    errors: [Some(10), Some(20), Some(30), None],
                },
            ],
            ..GpuDevice::default()
        };
        let sparse = GpuDevice {
            identity: identity(1),
            utilization: Utilization {
                gpu: Some(0.5),
                ..Utilization::default()
            },
            ..GpuDevice::default()
        };
        let lost = GpuDevice {
            identity: identity(2),
            lost: true,
            temperature_gpu_celsius: Some(99.0),
            ..GpuDevice::default()
        };
        Snapshot {
            gpu: Some(Arc::new(GpuSample {
                taken_at: SystemTime::UNIX_EPOCH,
                driver_version: Some("550.163.01".to_owned()),
                cuda_driver_version: Some("12.4".to_owned()),
                devices: vec![full, sparse, lost],
            })),
            xid: Default::default(),
            health: None,
            host: None,
            collectors: Vec::new(),
            probes: Default::default(),
            ..Snapshot::default()
        }
    }

    fn render(snap: &Snapshot, dcgm_compat: bool) -> String {
        let build = BuildInfo {
            version: "t",
            gpu_source: "nvml",
        };
        let options = RenderOptions {
            dcgm_compat,
            hostname: "node-7".to_owned(),
        };
        render_snapshot(snap, &build, &options).unwrap_or_default()
    }

    /// The value of `name` on GPU `gpu`, if that series exists.
    fn value(text: &str, name: &str, gpu: u32) -> Option<f64> {
        let prefix = format!("{name}{{gpu=\"{gpu}\",");
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn values_are_in_dcgm_units() {
        let text = render(&snapshot(), true);
        let expect = [
            ("DCGM_FI_DEV_SM_CLOCK", 1_755.0),
            ("DCGM_FI_DEV_MEM_CLOCK", 2_619.0),
            ("DCGM_FI_DEV_MEMORY_TEMP", 46.0),
            ("DCGM_FI_DEV_GPU_TEMP", 41.0),
            ("DCGM_FI_DEV_POWER_USAGE", 301.5),
            ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 2e9),
            ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 9.0),
            ("DCGM_FI_DEV_GPU_UTIL", 55.0),
            ("DCGM_FI_DEV_MEM_COPY_UTIL", 31.0),
            ("DCGM_FI_DEV_ENC_UTIL", 0.0),
            ("DCGM_FI_DEV_DEC_UTIL", 2.0),
            ("DCGM_FI_DEV_POWER_VIOLATION", 4e9),
            ("DCGM_FI_DEV_LOW_UTIL_VIOLATION", 2.5e8),
            ("DCGM_FI_DEV_FB_FREE", 71_168.0),
            ("DCGM_FI_DEV_FB_USED", 10_240.0),
            ("DCGM_FI_DEV_FB_RESERVED", 512.0),
            ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", 1.0),
            ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", 0.0),
            ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", 5.0),
            ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", 2.0),
            ("DCGM_FI_DEV_RETIRED_SBE", 3.0),
            ("DCGM_FI_DEV_RETIRED_DBE", 1.0),
            ("DCGM_FI_DEV_RETIRED_PENDING", 1.0),
            ("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", 11.0),
            ("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", 22.0),
            ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", 33.0),
            ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", 1.0),
            ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", 7.0),
            ("DCGM_FI_DEV_ROW_REMAP_FAILURE", 1.0),
        ];
        for (name, want) in expect {
            assert_eq!(value(&text, name, 0), Some(want), "{name}\n{text}");
        }
    }

    #[test]
    fn labels_are_dcgms_in_its_order() {
        let text = render(&snapshot(), true);
        let line = text
            .lines()
            .find(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{gpu=\"1\""))
            .unwrap_or_default();
        assert_eq!(
            line,
            "DCGM_FI_DEV_GPU_UTIL{gpu=\"1\",UUID=\"GPU-1\",pci_bus_id=\"00000000:11:00.0\",\
             device=\"nvidia1\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"node-7\",\
             DCGM_FI_DRIVER_VERSION=\"550.163.01\"} 50.0"
        );
        for l in text.lines().filter(|l| l.starts_with("DCGM_")) {
            let names: Vec<&str> = l
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(labels, _)| {
                    labels
                        .split("\",")
                        .map(|kv| kv.split('=').next().unwrap_or(""))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(names, LABELS, "{l}");
        }
    }

    #[test]
    fn missing_readings_and_lost_gpus_are_omitted_not_zero() {
        let text = render(&snapshot(), true);
        // GPU 1 has only GPU utilization; GPU 2 is lost.
        let gpu1: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("DCGM_") && l.contains("{gpu=\"1\""))
            .collect();
        assert_eq!(gpu1.len(), 1, "{gpu1:?}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("DCGM_") && l.contains("{gpu=\"2\""))
        );
        // No GPU reports these, so the whole family is absent, HELP and TYPE included.
        for name in [
            "DCGM_FI_DEV_THERMAL_VIOLATION",
            "DCGM_FI_DEV_SYNC_BOOST_VIOLATION",
            "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION",
            "DCGM_FI_DEV_RELIABILITY_VIOLATION",
            "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
            "DCGM_FI_DEV_XID_ERRORS",
            "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
            "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
            "DCGM_FI_PROF_",
        ] {
            assert!(!text.contains(name), "{name} must be absent\n{text}");
        }
        // Nothing at all without a GPU sample.
        let no_gpu = Snapshot {
            gpu: None,
            ..snapshot()
        };
        assert!(!render(&no_gpu, true).contains("DCGM_"));
    }

    #[test]
    fn every_family_is_a_gauge_and_only_with_dcgm_compat() {
        let text = render(&snapshot(), true);
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE DCGM_"))
            .collect();
        assert_eq!(types.len(), 29, "{types:?}");
        assert!(types.iter().all(|t| t.ends_with(" gauge")), "{types:?}");
        let native = render(&snapshot(), false);
        assert!(!native.contains("DCGM_"));
        assert!(
            text.starts_with(&native),
            "dcgm families come after the native ones"
        );
    }

    #[test]
    fn openmetrics_keeps_the_exact_names() {
        use crate::export::prometheus::MetricsRenderer;
        use crate::model::Sample;
        use crate::store::Store;

        let store = Arc::new(Store::new(std::num::NonZeroUsize::MIN, Vec::new()));
        if let Some(gpu) = snapshot().gpu {
            store.publish(Sample::Gpu((*gpu).clone()));
        }
        let renderer = MetricsRenderer::new(
            store,
            BuildInfo {
                version: "t",
                gpu_source: "nvml",
            },
            RenderOptions {
                dcgm_compat: true,
                hostname: "node-7".to_owned(),
            },
            Default::default(),
        );
        let text = renderer.render(true).unwrap_or_default();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION gauge\n"));
        assert!(text.contains(
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu=\"0\",UUID=\"GPU-0\",pci_bus_id=\"00000000:10:00.0\",\
             device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"node-7\",\
             DCGM_FI_DRIVER_VERSION=\"550.163.01\"} 2000000000.0\n"
        ));
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("DCGM_") && l.contains("_total")),
            "no suffix appended to a DCGM name"
        );
    }
}
