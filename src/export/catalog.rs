//! The per-GPU scalar metrics that both `/metrics` and OTLP publish: one row per reading, with
//! its Prometheus name, its OpenTelemetry name and unit, its help text and how to read it.
//!
//! Keeping these in one table means a reading added here reaches both exporters, and neither
//! can drift from the other. Readings with extra labels (per sensor, per link, per process)
//! stay in each exporter, because their label shapes differ between the two.

use crate::model::GpuDevice;

/// One GPU reading published under both names.
#[derive(Debug, Clone, Copy)]
pub struct GpuScalar {
    /// Prometheus family name; for counters without `_total`, which the encoder appends.
    pub prometheus: &'static str,
    /// OpenTelemetry instrument name.
    pub otlp: &'static str,
    /// UCUM unit for OTLP (the Prometheus name carries its base unit as a suffix).
    pub unit: &'static str,
    pub help: &'static str,
    /// Monotonic counter (else gauge).
    pub counter: bool,
    /// The reading; `None` omits the series for that GPU.
    pub value: fn(&GpuDevice) -> Option<f64>,
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn bytes(b: Option<u64>) -> Option<f64> {
    b.map(|b| b as f64)
}

/// In `/metrics` order.
pub const GPU_SCALARS: &[GpuScalar] = &[
    GpuScalar {
        prometheus: "gpulse_gpu_memory_utilization_ratio",
        otlp: "hw.gpu.memory.utilization",
        unit: "1",
        help: "Fraction of the last sample period in which device memory was read or written (0-1).",
        counter: false,
        value: |d| d.utilization.memory,
    },
    GpuScalar {
        prometheus: "gpulse_gpu_memory_total_bytes",
        otlp: "hw.gpu.memory.limit",
        unit: "By",
        help: "Total framebuffer memory.",
        counter: false,
        value: |d| bytes(d.memory.total_bytes),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_memory_used_bytes",
        otlp: "hw.gpu.memory.usage",
        unit: "By",
        help: "Framebuffer memory allocated by processes.",
        counter: false,
        value: |d| bytes(d.memory.used_bytes),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_memory_free_bytes",
        otlp: "gpulse.gpu.memory.free",
        unit: "By",
        help: "Framebuffer memory free for allocation.",
        counter: false,
        value: |d| bytes(d.memory.free_bytes),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_memory_reserved_bytes",
        otlp: "gpulse.gpu.memory.reserved",
        unit: "By",
        help: "Framebuffer memory reserved by the driver and firmware.",
        counter: false,
        value: |d| bytes(d.memory.reserved_bytes),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_power_watts",
        otlp: "hw.power",
        unit: "W",
        help: "Power draw of the board.",
        counter: false,
        value: |d| d.power_watts,
    },
    GpuScalar {
        prometheus: "gpulse_gpu_power_limit_watts",
        otlp: "gpulse.gpu.power.limit",
        unit: "W",
        help: "Power limit the driver enforces.",
        counter: false,
        value: |d| d.power_limit_watts,
    },
    GpuScalar {
        prometheus: "gpulse_gpu_energy_joules",
        otlp: "hw.energy",
        unit: "J",
        help: "Energy used since the driver was loaded.",
        counter: true,
        value: |d| d.energy_joules,
    },
    GpuScalar {
        prometheus: "gpulse_gpu_performance_state",
        otlp: "gpulse.gpu.performance_state",
        unit: "1",
        help: "Performance state, 0 (maximum performance) to 15 (minimum).",
        counter: false,
        value: |d| d.performance_state.map(f64::from),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_retired_pages_pending",
        otlp: "gpulse.gpu.retired_pages.pending",
        unit: "1",
        help: "1 if pages are waiting to be retired at the next driver reload.",
        counter: false,
        value: |d| d.retired_pages_pending.map(flag),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_row_remap_pending",
        otlp: "gpulse.gpu.row_remap.pending",
        unit: "1",
        help: "1 if a row remap is pending (the GPU needs a reset to apply it).",
        counter: false,
        value: |d| d.remapped_rows.map(|r| flag(r.pending)),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_row_remap_failure",
        otlp: "gpulse.gpu.row_remap.failure",
        unit: "1",
        help: "1 if a row remap failed (the GPU needs inspection).",
        counter: false,
        value: |d| d.remapped_rows.map(|r| flag(r.failure)),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_pcie_link_generation",
        otlp: "gpulse.gpu.pcie.link.generation",
        unit: "1",
        help: "Current PCIe link generation.",
        counter: false,
        value: |d| d.pcie.link_generation.map(f64::from),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_pcie_link_width",
        otlp: "gpulse.gpu.pcie.link.width",
        unit: "{lane}",
        help: "Current PCIe link width (lanes).",
        counter: false,
        value: |d| d.pcie.link_width.map(f64::from),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_pcie_replays",
        otlp: "gpulse.gpu.pcie.replays",
        unit: "{replay}",
        help: "PCIe replay (retry) events since the driver was loaded.",
        counter: true,
        value: |d| d.pcie.replay_count.map(|n| n as f64),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_processes",
        otlp: "gpulse.gpu.processes",
        unit: "{process}",
        help: "Compute processes running on the GPU.",
        counter: false,
        value: |d| d.processes.as_ref().map(|p| p.len() as f64),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_mig_enabled",
        otlp: "gpulse.gpu.mig.enabled",
        unit: "1",
        help: "1 if MIG mode is enabled on the GPU.",
        counter: false,
        value: |d| d.mig.as_ref().map(|m| flag(m.enabled)),
    },
    GpuScalar {
        prometheus: "gpulse_gpu_recovery_action",
        otlp: "gpulse.gpu.recovery_action",
        unit: "1",
        help: "The driver's recovery verdict: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset.",
        counter: false,
        value: |d| d.recovery_action.map(f64::from),
    },
];

/// The Prometheus series name of a row as it appears on `/metrics`.
pub fn exposed_name(row: &GpuScalar) -> String {
    if row.counter {
        format!("{}_total", row.prometheus)
    } else {
        row.prometheus.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_each_convention() {
        let mut seen = std::collections::BTreeSet::new();
        for row in GPU_SCALARS {
            assert!(seen.insert(row.prometheus), "{} twice", row.prometheus);
            assert!(seen.insert(row.otlp), "{} twice", row.otlp);
            assert!(row.prometheus.starts_with("gpulse_gpu_"));
            assert!(
                !row.prometheus.ends_with("_total"),
                "the encoder adds _total"
            );
            assert!(row.otlp.starts_with("hw.") || row.otlp.starts_with("gpulse.gpu."));
            assert!(row.help.ends_with('.'));
        }
    }
}
