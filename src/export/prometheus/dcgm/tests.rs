//! The dcgm table against a hand-made snapshot: units, labels, omissions, MIG, Xid text.

use std::sync::Arc;
use std::time::SystemTime;

use super::table::{mhz, mib, millijoules, nanoseconds, percent};
use super::*;
use crate::export::prometheus::{BuildInfo, RenderOptions, render_snapshot};
use crate::model::{
    Clock, EccKind, EccScope, GpuIdentity, GpuSample, MemoryReadings, MigInstance, MigReadings,
    NvLinkReadings, PcieReadings, RemappedRows, RetiredCause, ThrottlePolicy, Utilization,
    XidCount, XidLog,
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

/// GPU 0 with every reading (MIG on, two instances), GPU 1 with almost none, GPU 2 lost.
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
            tx_bytes_per_second: Some(1_024_000.0),
            rx_bytes_per_second: Some(2_048_000.0),
            ..PcieReadings::default()
        },
        mig: Some(MigReadings {
            enabled: true,
            pending_enabled: true,
            instances: vec![
                MigInstance {
                    index: 0,
                    uuid: "MIG-0".to_owned(),
                    memory_total_bytes: Some(10 * 1024 * MIB),
                    memory_used_bytes: Some(1024 * MIB),
                },
                MigInstance {
                    index: 1,
                    uuid: "MIG-1".to_owned(),
                    memory_total_bytes: Some(20 * 1024 * MIB),
                    memory_used_bytes: None,
                },
            ],
        }),
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
        ]
        .into(),
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
    render_with(snap, dcgm_compat, DcgmHostnameLabel::default())
}

fn render_with(snap: &Snapshot, dcgm_compat: bool, host: DcgmHostnameLabel) -> String {
    let build = BuildInfo {
        version: "t",
        gpu_source: "nvml",
    };
    let options = RenderOptions {
        dcgm_compat,
        hostname: "node-7".to_owned(),
        dcgm_hostname_label: host,
    };
    render_snapshot(snap, &build, &options).unwrap_or_default()
}

/// The label names of an exposition line, in order.
fn label_names(line: &str) -> Vec<&str> {
    line.split_once('{')
        .and_then(|(_, rest)| rest.rsplit_once('}'))
        .map(|(labels, _)| {
            labels
                .split("\",")
                .map(|kv| kv.split('=').next().unwrap_or(""))
                .collect()
        })
        .unwrap_or_default()
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
        ("DCGM_FI_DEV_FB_TOTAL", 81_920.0),
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
        // Bytes per second, as NVML's KB/s reading was converted.
        ("DCGM_FI_PROF_PCIE_TX_BYTES", 1_024_000.0),
        ("DCGM_FI_PROF_PCIE_RX_BYTES", 2_048_000.0),
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
    // Per-GPU series: dcgm's seven labels; a MIG instance's: GPU_I_ID before the host label.
    let mut mig_labels = LABELS.to_vec();
    mig_labels.insert(5, GPU_INSTANCE_LABEL);
    for l in text.lines().filter(|l| l.starts_with("DCGM_")) {
        let want = if l.contains("GPU_I_ID=") {
            &mig_labels[..]
        } else {
            &LABELS[..]
        };
        assert_eq!(label_names(l), want, "{l}");
    }
}

#[test]
fn the_host_label_is_spelt_as_configured() {
    let lower = render_with(&snapshot(), true, DcgmHostnameLabel::Lowercase);
    let upper = render(&snapshot(), true);
    let dcgm = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("DCGM_"))
            .map(str::to_owned)
            .collect()
    };
    assert!(!dcgm(&upper).is_empty());
    assert!(
        dcgm(&upper)
            .iter()
            .all(|l| l.contains(",Hostname=\"node-7\","))
    );
    assert!(
        dcgm(&lower)
            .iter()
            .all(|l| l.contains(",hostname=\"node-7\","))
    );
    // Only the label's name differs.
    assert_eq!(
        dcgm(&upper),
        dcgm(&lower.replace(",hostname=", ",Hostname="))
    );
    assert_eq!(DcgmHostnameLabel::default().as_str(), "Hostname");
}

#[test]
fn mig_instances_have_framebuffer_series() {
    let text = render(&snapshot(), true);
    let mig: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("DCGM_") && l.contains("GPU_I_ID="))
        .collect();
    let instance = |name: &str, id: u32| {
        let prefix = format!(
            "{name}{{gpu=\"0\",UUID=\"GPU-0\",pci_bus_id=\"00000000:10:00.0\",device=\"nvidia0\",\
             modelName=\"NVIDIA H100 80GB HBM3\",GPU_I_ID=\"{id}\",Hostname=\"node-7\",\
             DCGM_FI_DRIVER_VERSION=\"550.163.01\"}} "
        );
        mig.iter()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse::<f64>().ok())
    };
    // Instance 0: 10 GiB, 1 GiB used. Instance 1: 20 GiB, used unknown (so no used or free).
    assert_eq!(instance("DCGM_FI_DEV_FB_USED", 0), Some(1024.0));
    assert_eq!(instance("DCGM_FI_DEV_FB_FREE", 0), Some(9216.0));
    assert_eq!(instance("DCGM_FI_DEV_FB_TOTAL", 0), Some(10_240.0));
    assert_eq!(instance("DCGM_FI_DEV_FB_TOTAL", 1), Some(20_480.0));
    assert_eq!(mig.len(), 4, "{mig:#?}");
    // Each instance series follows its GPU's in the family.
    let used: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("DCGM_FI_DEV_FB_USED{"))
        .collect();
    assert!(used[0].contains("gpu=\"0\"") && !used[0].contains("GPU_I_ID"));
    assert!(used[1].contains("GPU_I_ID=\"0\""), "{used:#?}");
    // The instance profile is not read, so no series claims one.
    assert!(!text.contains("GPU_I_PROFILE"));
    // MIG off: no instance series, even with instances in the sample.
    let mut off = snapshot();
    if let Some(gpu) = off.gpu.as_mut()
        && let Some(m) = Arc::make_mut(gpu).devices[0].mig.as_mut()
    {
        m.enabled = false;
    }
    assert!(!render(&off, true).contains("GPU_I_ID"));
}

#[test]
fn the_last_xid_carries_its_code_and_catalog_text() {
    let at = |s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
    let count = |gpu: u32, xid: u64, last: u64| XidCount {
        gpu_index: Some(gpu),
        uuid: format!("GPU-{gpu}"),
        xid,
        count: 1,
        first_seen: at(last),
        last_seen: at(last),
    };
    let snap = Snapshot {
        xid: Arc::new(XidLog {
            // GPU 0: 13 then 79 (the last); GPU 1: an Xid in no catalog row.
            counts: vec![count(0, 79, 20), count(0, 13, 10), count(1, 999, 5)],
            recent: Vec::new(),
        }),
        ..snapshot()
    };
    let text = render(&snap, true);
    let xid: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("DCGM_FI_DEV_XID_ERRORS{"))
        .collect();
    assert_eq!(
        xid,
        [
            "DCGM_FI_DEV_XID_ERRORS{gpu=\"0\",UUID=\"GPU-0\",pci_bus_id=\"00000000:10:00.0\",\
             device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"node-7\",\
             DCGM_FI_DRIVER_VERSION=\"550.163.01\",err_code=\"79\",\
             err_msg=\"GPU has fallen off the bus\"} 79.0",
            "DCGM_FI_DEV_XID_ERRORS{gpu=\"1\",UUID=\"GPU-1\",pci_bus_id=\"00000000:11:00.0\",\
             device=\"nvidia1\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"node-7\",\
             DCGM_FI_DRIVER_VERSION=\"550.163.01\",err_code=\"999\",\
             err_msg=\"Not in the Xid catalog\"} 999.0",
        ]
    );
    let mut want = LABELS.to_vec();
    want.extend(XID_LABELS);
    assert_eq!(label_names(xid[0]), want);
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
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "DCGM_FI_PROF_DRAM_ACTIVE",
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
    // 29 families before FB_TOTAL and the PCIe rates; no Xid in this snapshot.
    assert_eq!(types.len(), 32, "{types:?}");
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
            ..RenderOptions::default()
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
