//! GPU families (NVML or the simulator) and the Xid families.

use super::{
    AsVal as _, Ctx, Dim, Family, Kind, OtelSplit, Scope, Series, SeriesFn, Val, bytes, dim,
    dim_split, flag, unix_seconds,
};
use crate::model::GpuDevice;

const NONE: &[Dim] = &[];

fn devices<'a>(c: &Ctx<'a>) -> &'a [GpuDevice] {
    c.snap.gpu.as_ref().map_or(&[], |g| g.devices.as_slice())
}

/// A series function emitting one reading per GPU (`$value: fn(&GpuDevice) -> Option<f64>`).
macro_rules! per_gpu {
    ($value:expr) => {{
        fn series<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
            let value: fn(&GpuDevice) -> Option<f64> = $value;
            for d in devices(c) {
                s.gpu(d, [], value(d));
            }
        }
        series
    }};
}

plain_family!(scalar, Scope::Gpu);

/// [`scalar`] with constant OTel attributes (several families, one OTel instrument).
const fn scalar_const(
    prom: &'static str,
    otel: &'static str,
    otel_const: &'static [(&'static str, &'static str)],
    help: &'static str,
    series: SeriesFn,
) -> Family {
    Family {
        otel_const,
        ..scalar(prom, otel, "1", help, Kind::Gauge, series)
    }
}

/// A per-GPU family with labels.
const fn labelled(
    prom: &'static str,
    otel: &'static str,
    unit: &'static str,
    help: &'static str,
    kind: Kind,
    dims: &'static [Dim],
    series: SeriesFn,
) -> Family {
    Family {
        dims,
        ..scalar(prom, otel, unit, help, kind, series)
    }
}

const PID: &[Dim] = &[dim("pid", "process.pid")];
const MIG: &[Dim] = &[dim("mig_uuid", "gpulse.mig.id")];

/// Aggregate (lifetime) ECC counts over OTLP: not `hw.errors`, whose points must add up.
const ECC_AGGREGATE: &[OtelSplit] = &[OtelSplit {
    value: "aggregate",
    otel: Some("gpulse.gpu.ecc.errors.aggregate"),
}];

/// Used / total memory; `None` without both readings or with a zero total.
fn used_ratio(d: &GpuDevice) -> Option<f64> {
    let total = d.memory.total_bytes.filter(|t| *t > 0)?;
    let used = d.memory.used_bytes?;
    Some(used as f64 / total as f64)
}

/// In `/metrics` order.
pub const FAMILIES: &[Family] = &[
    Family {
        prom: "gpulse_gpus",
        otel: "gpulse.gpu.count",
        otel_const: &[],
        unit: "{gpu}",
        help: "Number of GPUs NVML reports on this node.",
        kind: Kind::Gauge,
        scope: Scope::Node,
        dims: &[dim("source", "")],
        series: |c, s| {
            if let Some(g) = &c.snap.gpu {
                // GPUs kept after they left the device list are not NVML's count.
                let listed = g.devices.iter().filter(|d| !d.missing).count();
                s.node([Val::Str("nvml")], Some(listed as f64));
            }
        },
    },
    Family {
        prom: "gpulse_gpu_info",
        otel: "gpulse.gpu.info",
        otel_const: &[("hw.vendor", "NVIDIA")],
        unit: "1",
        help: "Always 1; identity labels of each GPU, joined to other series by uuid.",
        kind: Kind::Gauge,
        scope: Scope::Gpu,
        // `name` is the scope's `hw.model` on OTLP.
        dims: &[
            dim("name", ""),
            dim("pci_bus_id", "gpulse.gpu.pci_bus_id"),
            dim("serial", "hw.serial_number"),
            dim("vbios_version", "hw.firmware_version"),
            dim("driver_version", "hw.driver_version"),
            dim("cuda_driver_version", "gpulse.gpu.cuda_driver_version"),
        ],
        series: |c, s| {
            let Some(g) = &c.snap.gpu else { return };
            for d in &g.devices {
                let id = &d.identity;
                s.gpu_even_lost(
                    d,
                    [
                        Val::Str(&id.name),
                        Val::Str(&id.pci_bus_id),
                        Val::Opt(id.serial.as_deref()),
                        Val::Opt(id.vbios_version.as_deref()),
                        Val::Opt(g.driver_version.as_deref()),
                        Val::Opt(g.cuda_driver_version.as_deref()),
                    ],
                    Some(1.0),
                );
            }
        },
    },
    scalar(
        "gpulse_gpu_lost",
        "gpulse.gpu.lost",
        "1",
        "1 if the driver reports the GPU as lost (fallen off the bus); its other metrics are then absent.",
        Kind::Gauge,
        |c, s| {
            for d in devices(c) {
                s.gpu_even_lost(d, [], Some(flag(d.lost)));
            }
        },
    ),
    scalar_const(
        "gpulse_gpu_utilization_ratio",
        "hw.gpu.utilization",
        &[("hw.gpu.task", "general")],
        "Fraction of the last sample period in which a kernel ran on the GPU (0-1).",
        per_gpu!(|d| d.utilization.gpu),
    ),
    // NVML's memory-controller busy time. OTel's `hw.gpu.memory.utilization` is the fraction
    // of memory *used* (semantic-conventions `model/hardware/gpu-metrics.yaml`), which is
    // `gpulse_gpu_memory_used_ratio` below.
    scalar(
        "gpulse_gpu_memory_utilization_ratio",
        "gpulse.gpu.memory.busy",
        "1",
        "Fraction of the last sample period in which device memory was read or written (0-1).",
        Kind::Gauge,
        per_gpu!(|d| d.utilization.memory),
    ),
    scalar(
        "gpulse_gpu_memory_used_ratio",
        "hw.gpu.memory.utilization",
        "1",
        "Fraction of framebuffer memory used: used / total (0-1).",
        Kind::Gauge,
        per_gpu!(used_ratio),
    ),
    // Up-down counters in the semantic conventions (a gauge on /metrics).
    scalar(
        "gpulse_gpu_memory_total_bytes",
        "hw.gpu.memory.limit",
        "By",
        "Total framebuffer memory.",
        Kind::UpDownCounter,
        per_gpu!(|d| bytes(d.memory.total_bytes)),
    ),
    scalar(
        "gpulse_gpu_memory_used_bytes",
        "hw.gpu.memory.usage",
        "By",
        "Framebuffer memory allocated by processes.",
        Kind::UpDownCounter,
        per_gpu!(|d| bytes(d.memory.used_bytes)),
    ),
    scalar(
        "gpulse_gpu_memory_free_bytes",
        "gpulse.gpu.memory.free",
        "By",
        "Framebuffer memory free for allocation.",
        Kind::Gauge,
        per_gpu!(|d| bytes(d.memory.free_bytes)),
    ),
    scalar(
        "gpulse_gpu_memory_reserved_bytes",
        "gpulse.gpu.memory.reserved",
        "By",
        "Framebuffer memory reserved by the driver and firmware.",
        Kind::Gauge,
        per_gpu!(|d| bytes(d.memory.reserved_bytes)),
    ),
    scalar(
        "gpulse_gpu_power_watts",
        "hw.power",
        "W",
        "Power draw of the board.",
        Kind::Gauge,
        per_gpu!(|d| d.power_watts),
    ),
    scalar(
        "gpulse_gpu_power_limit_watts",
        "gpulse.gpu.power.limit",
        "W",
        "Power limit the driver enforces.",
        Kind::Gauge,
        per_gpu!(|d| d.power_limit_watts),
    ),
    scalar(
        "gpulse_gpu_energy_joules",
        "hw.energy",
        "J",
        "Energy used since the driver was loaded.",
        Kind::Counter,
        per_gpu!(|d| d.energy_joules),
    ),
    scalar(
        "gpulse_gpu_performance_state",
        "gpulse.gpu.performance_state",
        "1",
        "Performance state, 0 (maximum performance) to 15 (minimum).",
        Kind::Gauge,
        per_gpu!(|d| d.performance_state.map(f64::from)),
    ),
    scalar(
        "gpulse_gpu_retired_pages_pending",
        "gpulse.gpu.retired_pages.pending",
        "1",
        "1 if pages are waiting to be retired at the next driver reload.",
        Kind::Gauge,
        per_gpu!(|d| d.retired_pages_pending.map(flag)),
    ),
    scalar(
        "gpulse_gpu_row_remap_pending",
        "gpulse.gpu.row_remap.pending",
        "1",
        "1 if a row remap is pending (the GPU needs a reset to apply it).",
        Kind::Gauge,
        per_gpu!(|d| d.remapped_rows.map(|r| flag(r.pending))),
    ),
    scalar(
        "gpulse_gpu_row_remap_failure",
        "gpulse.gpu.row_remap.failure",
        "1",
        "1 if a row remap failed (the GPU needs inspection).",
        Kind::Gauge,
        per_gpu!(|d| d.remapped_rows.map(|r| flag(r.failure))),
    ),
    scalar(
        "gpulse_gpu_pcie_link_generation",
        "gpulse.gpu.pcie.link.generation",
        "1",
        "Current PCIe link generation.",
        Kind::Gauge,
        per_gpu!(|d| d.pcie.link_generation.map(f64::from)),
    ),
    scalar(
        "gpulse_gpu_pcie_link_width",
        "gpulse.gpu.pcie.link.width",
        "{lane}",
        "Current PCIe link width (lanes).",
        Kind::Gauge,
        per_gpu!(|d| d.pcie.link_width.map(f64::from)),
    ),
    scalar(
        "gpulse_gpu_pcie_replays",
        "gpulse.gpu.pcie.replays",
        "{replay}",
        "PCIe replay (retry) events since the driver was loaded.",
        Kind::Counter,
        per_gpu!(|d| d.pcie.replay_count.map(|n| n as f64)),
    ),
    scalar(
        "gpulse_gpu_processes",
        "gpulse.gpu.processes",
        "{process}",
        "Compute processes running on the GPU.",
        Kind::Gauge,
        per_gpu!(|d| d.processes.as_ref().map(|p| p.len() as f64)),
    ),
    scalar(
        "gpulse_gpu_mig_enabled",
        "gpulse.gpu.mig.enabled",
        "1",
        "1 if MIG mode is enabled on the GPU.",
        Kind::Gauge,
        per_gpu!(|d| d.mig.as_ref().map(|m| flag(m.enabled))),
    ),
    scalar(
        "gpulse_gpu_recovery_action",
        "gpulse.gpu.recovery_action",
        "1",
        "The driver's recovery verdict: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset.",
        Kind::Gauge,
        per_gpu!(|d| d.recovery_action.map(f64::from)),
    ),
    scalar_const(
        "gpulse_gpu_encoder_utilization_ratio",
        "hw.gpu.utilization",
        &[("hw.gpu.task", "encoder")],
        "Video encoder utilization (0-1).",
        per_gpu!(|d| d.utilization.encoder),
    ),
    scalar_const(
        "gpulse_gpu_decoder_utilization_ratio",
        "hw.gpu.utilization",
        &[("hw.gpu.task", "decoder")],
        "Video decoder utilization (0-1).",
        per_gpu!(|d| d.utilization.decoder),
    ),
    // NVML GPM (Hopper and newer): averages between two cycles, absent without GPM.
    scalar(
        "gpulse_gpu_graphics_engine_active_ratio",
        "gpulse.gpu.graphics_engine.active",
        "1",
        "Fraction of the last interval in which the graphics or compute engine was active (NVML GPM, 0-1).",
        Kind::Gauge,
        per_gpu!(|d| d.profiling.graphics_engine_active),
    ),
    scalar(
        "gpulse_gpu_sm_active_ratio",
        "gpulse.gpu.sm.active",
        "1",
        "Fraction of the SMs busy (at least one warp assigned), averaged over the last interval (NVML GPM, 0-1).",
        Kind::Gauge,
        per_gpu!(|d| d.profiling.sm_active),
    ),
    scalar(
        "gpulse_gpu_sm_occupancy_ratio",
        "gpulse.gpu.sm.occupancy",
        "1",
        "Resident warps over the SMs' maximum, averaged over the last interval (NVML GPM, 0-1).",
        Kind::Gauge,
        per_gpu!(|d| d.profiling.sm_occupancy),
    ),
    labelled(
        "gpulse_gpu_pipe_active_ratio",
        "gpulse.gpu.pipe.active",
        "1",
        "Fraction of the last interval in which the SMs used each pipe: tensor (any tensor op), fp64, fp32, fp16 (non-tensor math) (NVML GPM, 0-1).",
        Kind::Gauge,
        &[dim("pipe", "gpulse.gpu.pipe")],
        |c, s| {
            for d in devices(c) {
                for (pipe, v) in d.profiling.pipes() {
                    s.gpu(d, [pipe.val()], v);
                }
            }
        },
    ),
    scalar(
        "gpulse_gpu_dram_active_ratio",
        "gpulse.gpu.dram.active",
        "1",
        "DRAM bandwidth used over its peak, averaged over the last interval (NVML GPM, 0-1).",
        Kind::Gauge,
        per_gpu!(|d| d.profiling.dram_active),
    ),
    // `hw.temperature` describes a sensor; gpulse's points carry the GPU's identity (`hw.id`
    // is the GPU UUID, `hw.type=gpu`) with the sensor as `hw.sensor_location`, not a separate
    // `hw.type=temperature` component with `hw.parent`.
    labelled(
        "gpulse_gpu_temperature_celsius",
        "hw.temperature",
        "Cel",
        "Temperature by sensor: gpu (core) or memory (HBM).",
        Kind::Gauge,
        &[dim("sensor", "hw.sensor_location")],
        |c, s| {
            for d in devices(c) {
                for (sensor, t) in d.temperatures() {
                    s.gpu(d, [sensor.val()], t);
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_temperature_threshold_celsius",
        "gpulse.gpu.temperature.threshold",
        "Cel",
        "Temperature thresholds: slowdown, shutdown, memory_max, gpu_max.",
        Kind::Gauge,
        &[dim("threshold", "gpulse.threshold")],
        |c, s| {
            for d in devices(c) {
                for (threshold, t) in d.temperature_thresholds.iter() {
                    s.gpu(d, [threshold.val()], Some(*t));
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_clock_hertz",
        "gpulse.gpu.clock.frequency",
        "Hz",
        "Current clock frequency: graphics, sm, memory, video.",
        Kind::Gauge,
        &[dim("clock", "gpulse.clock")],
        |c, s| {
            for d in devices(c) {
                for (clock, hz) in &d.clocks_hertz {
                    s.gpu(d, [clock.val()], Some(*hz));
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_clock_max_hertz",
        "gpulse.gpu.clock.max_frequency",
        "Hz",
        "Maximum clock frequency: graphics, sm, memory, video.",
        Kind::Gauge,
        &[dim("clock", "gpulse.clock")],
        |c, s| {
            for d in devices(c) {
                for (clock, hz) in d.max_clocks_hertz.iter() {
                    s.gpu(d, [clock.val()], Some(*hz));
                }
            }
        },
    ),
    // Like `hw.temperature`: the GPU's identity, the fan told apart by `gpulse.fan`.
    labelled(
        "gpulse_gpu_fan_speed_ratio",
        "hw.fan.speed_ratio",
        "1",
        "Fan speed as a fraction of its maximum, per fan.",
        Kind::Gauge,
        &[dim("fan", "gpulse.fan")],
        |c, s| {
            for d in devices(c) {
                for (fan, v) in &d.fan_speed_ratio {
                    s.gpu(d, [Val::Index(*fan)], Some(*v));
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_throttle_active",
        "gpulse.gpu.throttle.active",
        "1",
        "1 if this clock-event (throttle) reason is limiting clocks now; one series per reason the GPU supports.",
        Kind::Gauge,
        &[dim("reason", "gpulse.reason")],
        |c, s| {
            for d in devices(c) {
                for (reason, on) in d.throttle.iter().flat_map(|t| t.decoded()) {
                    s.gpu(d, [reason.val()], Some(flag(on)));
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_throttle_seconds",
        "gpulse.gpu.throttle.time",
        "s",
        "Cumulative time clocks were held down by each policy (power, thermal, sync_boost, board_limit, low_utilization, reliability).",
        Kind::Counter,
        &[dim("reason", "gpulse.reason")],
        |c, s| {
            for d in devices(c) {
                for (reason, secs) in &d.throttle_seconds {
                    s.gpu(d, [reason.val()], Some(*secs));
                }
            }
        },
    ),
    // One meaning per OTel instrument: `hw.errors` counts since driver load (volatile, what a
    // backend rates); the lifetime (aggregate) counts travel as their own instrument.
    labelled(
        "gpulse_gpu_ecc_errors",
        "hw.errors",
        "{error}",
        "ECC errors by kind (corrected, uncorrected) and scope (volatile: since driver load; aggregate: lifetime).",
        Kind::Counter,
        &[
            dim("kind", "error.type"),
            dim_split("scope", "", ECC_AGGREGATE),
        ],
        |c, s| {
            for d in devices(c) {
                for (kind, scope, n) in &d.ecc_errors {
                    s.gpu(d, [kind.val(), scope.val()], Some(*n as f64));
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_retired_pages",
        "gpulse.gpu.retired_pages",
        "{page}",
        "Memory pages retired, by cause (single_bit_ecc, double_bit_ecc).",
        Kind::Gauge,
        &[dim("cause", "gpulse.cause")],
        |c, s| {
            for d in devices(c) {
                for (cause, n) in &d.retired_pages {
                    s.gpu(d, [cause.val()], Some(*n as f64));
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_remapped_rows",
        "gpulse.gpu.remapped_rows",
        "{row}",
        "Memory rows remapped, by cause (correctable, uncorrectable).",
        Kind::Gauge,
        &[dim("cause", "gpulse.cause")],
        |c, s| {
            for d in devices(c) {
                for (cause, n) in d.remapped_rows.iter().flat_map(|r| r.by_cause()) {
                    s.gpu(d, [cause.val()], Some(n as f64));
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_pcie_throughput_bytes_per_second",
        "gpulse.gpu.pcie.throughput",
        "By/s",
        "PCIe throughput by direction (tx, rx): NVML GPM's average over the last interval, else (with gpu.pcie_throughput) NVML's 20 ms sample.",
        Kind::Gauge,
        &[dim("direction", "network.io.direction")],
        |c, s| {
            for d in devices(c) {
                for (direction, v) in d.pcie.throughput() {
                    s.gpu(d, [direction.val()], v);
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_nvlink_throughput_bytes_per_second",
        "gpulse.gpu.nvlink.throughput",
        "By/s",
        "NVLink throughput over all links by direction (tx, rx), averaged over the last interval (NVML GPM).",
        Kind::Gauge,
        &[dim("direction", "network.io.direction")],
        |c, s| {
            for d in devices(c) {
                for (direction, v) in d.profiling.nvlink_throughput() {
                    s.gpu(d, [direction.val()], v);
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_nvlink_active",
        "gpulse.gpu.nvlink.active",
        "1",
        "1 if the NVLink link is up.",
        Kind::Gauge,
        &[dim("link", "gpulse.nvlink")],
        |c, s| {
            for d in devices(c) {
                for l in d.nvlinks.iter() {
                    s.gpu(d, [Val::Index(l.link)], Some(flag(l.active)));
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_nvlink_errors",
        "gpulse.gpu.nvlink.errors",
        "{error}",
        "NVLink data-link errors by link and counter (replay, recovery, crc_flit, crc_data).",
        Kind::Counter,
        &[dim("link", "gpulse.nvlink"), dim("counter", "error.type")],
        |c, s| {
            for d in devices(c) {
                for l in d.nvlinks.iter() {
                    for (counter, n) in l.errors() {
                        s.gpu(d, [Val::Index(l.link), counter.val()], Some(n as f64));
                    }
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_process_memory_used_bytes",
        "gpulse.gpu.process.memory.usage",
        "By",
        "GPU memory used by each compute process.",
        Kind::Gauge,
        PID,
        |c, s| {
            for d in devices(c) {
                for p in d.processes.iter().flatten() {
                    s.gpu(d, [Val::Int(p.pid.into())], bytes(p.used_memory_bytes));
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_process_sm_utilization_ratio",
        "gpulse.gpu.process.sm.utilization",
        "1",
        "SM utilization attributed to each compute process over the last sample period (0-1).",
        Kind::Gauge,
        PID,
        |c, s| {
            for d in devices(c) {
                for p in d.processes.iter().flatten() {
                    s.gpu(d, [Val::Int(p.pid.into())], p.sm_utilization);
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_process_memory_utilization_ratio",
        "gpulse.gpu.process.memory.utilization",
        "1",
        "Memory-controller utilization attributed to each compute process (0-1).",
        Kind::Gauge,
        PID,
        |c, s| {
            for d in devices(c) {
                for p in d.processes.iter().flatten() {
                    s.gpu(d, [Val::Int(p.pid.into())], p.memory_utilization);
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_mig_memory_total_bytes",
        "gpulse.gpu.mig.memory.limit",
        "By",
        "Memory of each MIG instance.",
        Kind::Gauge,
        MIG,
        |c, s| {
            for d in devices(c) {
                for i in d.mig.iter().flat_map(|m| &m.instances) {
                    s.gpu(d, [Val::Str(&i.uuid)], bytes(i.memory_total_bytes));
                }
            }
        },
    ),
    labelled(
        "gpulse_gpu_mig_memory_used_bytes",
        "gpulse.gpu.mig.memory.usage",
        "By",
        "Memory used in each MIG instance.",
        Kind::Gauge,
        MIG,
        |c, s| {
            for d in devices(c) {
                for i in d.mig.iter().flat_map(|m| &m.instances) {
                    s.gpu(d, [Val::Str(&i.uuid)], bytes(i.memory_used_bytes));
                }
            }
        },
    ),
];

/// Xid counts per (GPU, Xid); a GPU the source could not name has `gpu=""` and `uuid=""`.
pub const XID: &[Family] = &[
    Family {
        prom: "gpulse_gpu_xid_errors",
        otel: "gpulse.gpu.xid.errors",
        otel_const: &[],
        unit: "{error}",
        help: "Xid errors seen since the agent started (NVML events, kernel log, NVML return codes; one occurrence seen by several sources counts once).",
        kind: Kind::Counter,
        scope: Scope::Xid,
        dims: NONE,
        series: |c, s| {
            for x in &c.snap.xid.counts {
                s.xid(x, x.count as f64);
            }
        },
    },
    Family {
        prom: "gpulse_gpu_xid_last_seen_timestamp_seconds",
        otel: "gpulse.gpu.xid.last_seen",
        otel_const: &[],
        unit: "s",
        help: "Unix time this Xid was last seen on this GPU.",
        kind: Kind::Gauge,
        scope: Scope::Xid,
        dims: NONE,
        series: |c, s| {
            for x in &c.snap.xid.counts {
                s.xid(x, unix_seconds(x.last_seen));
            }
        },
    },
];
