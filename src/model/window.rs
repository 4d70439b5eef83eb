//! The compact, fixed-size points the store keeps per cycle for trends and the score.

use std::time::SystemTime;

use super::*;

/// The numbers of one GPU in one cycle that trends and the score read. Fixed size and free of
/// heap allocations, so the store's window costs tens of bytes per GPU per cycle, not the
/// kilobytes of a full [`GpuDevice`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuPoint {
    pub index: u32,
    pub lost: bool,
    pub utilization: Option<f32>,
    pub memory_used_bytes: Option<u64>,
    pub power_watts: Option<f32>,
    pub temperature_celsius: Option<f32>,
    /// Active clock-event reason bits (see [`THROTTLE_REASONS`]).
    pub throttle_active: Option<u64>,
    pub ecc_uncorrected_volatile: Option<u64>,
    pub row_remap_pending: bool,
    pub row_remap_failure: bool,
    pub retired_pages_pending: bool,
}

impl From<&GpuDevice> for GpuPoint {
    fn from(d: &GpuDevice) -> Self {
        Self {
            index: d.identity.index,
            lost: d.lost,
            utilization: d.utilization.gpu.map(|u| u as f32),
            memory_used_bytes: d.memory.used_bytes,
            power_watts: d.power_watts.map(|w| w as f32),
            temperature_celsius: d.temperature_gpu_celsius.map(|t| t as f32),
            throttle_active: d.throttle.map(|t| t.active),
            ecc_uncorrected_volatile: d
                .ecc_errors
                .iter()
                .find(|(kind, scope, _)| {
                    *kind == EccKind::Uncorrected && *scope == EccScope::Volatile
                })
                .map(|(_, _, n)| *n),
            row_remap_pending: d.remapped_rows.is_some_and(|r| r.pending),
            row_remap_failure: d.remapped_rows.is_some_and(|r| r.failure),
            retired_pages_pending: d.retired_pages_pending == Some(true),
        }
    }
}

/// One GPU cycle in the store's window.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuWindowPoint {
    pub taken_at: SystemTime,
    pub gpus: Box<[GpuPoint]>,
}

impl From<&GpuSample> for GpuWindowPoint {
    fn from(s: &GpuSample) -> Self {
        Self {
            taken_at: s.taken_at,
            gpus: s.devices.iter().map(GpuPoint::from).collect(),
        }
    }
}

/// One host cycle in the store's window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostWindowPoint {
    pub taken_at: Option<SystemTime>,
    pub cpu_utilization: Option<f32>,
    pub memory_available_bytes: u64,
    pub load1: Option<f32>,
}

impl From<&HostSample> for HostWindowPoint {
    fn from(h: &HostSample) -> Self {
        Self {
            taken_at: h.taken_at,
            cpu_utilization: h.cpu_utilization.map(|u| u as f32),
            memory_available_bytes: h.memory_available_bytes,
            load1: h.load_average.map(|l| l[0] as f32),
        }
    }
}
