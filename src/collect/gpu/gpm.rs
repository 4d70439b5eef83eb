//! NVML GPM (GPU Performance Monitoring, Hopper and newer): profiling metrics without DCGM.
//!
//! GPM metrics are computed from two samples: each cycle takes one sample per GPU and asks
//! NVML for the metrics between it and the previous cycle's, so every reading is an average
//! over one GPU interval (as DCGM's profiling fields average over their update period), and
//! the cycle never sleeps. The samples borrow the loaded `Nvml`, so [`GpmState`] lives beside
//! it for one NVML session (see `NvmlSampler::session`) and is dropped, samples freed, before
//! NVML is reloaded; the first cycle of a session has no readings.
//!
//! Whether a GPU supports GPM is asked once per session and GPU (and again when another GPU
//! shows up at that index). A GPU without GPM, a failed sample or a failed metric leaves its
//! readings `None`, never 0.

use std::collections::HashMap;

use nvml_wrapper::Device;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::{GpmSample, gpm_metrics_get};

use super::timing::Timer;
use crate::model::Profiling;

/// The metrics asked for, in one `nvmlGpmMetricsGet` call per GPU and cycle.
const METRICS: [GpmMetricId; 12] = [
    GpmMetricId::GraphicsUtil,
    GpmMetricId::SmUtil,
    GpmMetricId::SmOccupancy,
    GpmMetricId::DramBwUtil,
    // In `model::Pipe::ALL` order.
    GpmMetricId::AnyTensorUtil,
    GpmMetricId::Fp64Util,
    GpmMetricId::Fp32Util,
    GpmMetricId::Fp16Util,
    GpmMetricId::PcieTxPerSec,
    GpmMetricId::PcieRxPerSec,
    GpmMetricId::NvlinkTotalTxPerSec,
    GpmMetricId::NvlinkTotalRxPerSec,
];

/// NVML reports GPM throughput in MiB/s (nvml.h: "PCIe traffic from this GPU in MiB/sec").
const MIB: f64 = 1024.0 * 1024.0;

/// What GPM gave for one GPU in one cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct GpmReadings {
    pub(super) profiling: Profiling,
    /// PCIe throughput, bytes per second.
    pub(super) pcie_tx: Option<f64>,
    pub(super) pcie_rx: Option<f64>,
}

/// One GPU's GPM state: whether it has GPM, and its last sample.
struct Slot<'n> {
    /// The GPU this state belongs to; another UUID at the index starts over.
    uuid: String,
    /// `None` until NVML gave a definite answer.
    supported: Option<bool>,
    last: Option<GpmSample<'n>>,
}

/// The GPM samples of one NVML session, by GPU index. Bounded by the device count: indices
/// past it are dropped every cycle ([`GpmState::retain_below`]).
#[derive(Default)]
pub(super) struct GpmState<'n> {
    slots: HashMap<u32, Slot<'n>>,
}

impl<'n> GpmState<'n> {
    /// Takes this cycle's GPM sample of GPU `index` and returns the metrics between the last
    /// sample and it; all `None` on the first cycle, without GPM, or when NVML fails.
    pub(super) fn read(
        &mut self,
        index: u32,
        uuid: &str,
        device: &Device<'n>,
        t: &mut Timer,
    ) -> GpmReadings {
        let slot = self.slots.entry(index).or_insert_with(|| Slot {
            uuid: uuid.to_owned(),
            supported: None,
            last: None,
        });
        if slot.uuid != uuid {
            *slot = Slot {
                uuid: uuid.to_owned(),
                supported: None,
                last: None,
            };
        }
        if slot.supported.is_none() {
            slot.supported = match t.time("gpm", || device.gpm_support()) {
                Ok(supported) => Some(supported),
                // Older drivers lack the symbol; older GPUs say NOT_SUPPORTED.
                Err(NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_)) => Some(false),
                // Anything else (a busy or failing GPU) is asked again next cycle.
                Err(_) => None,
            };
            if let Some(supported) = slot.supported {
                tracing::debug!(gpu = index, supported, "NVML GPM support.");
            }
        }
        if slot.supported != Some(true) {
            slot.last = None;
            return GpmReadings::default();
        }
        let Ok(sample) = t.time("gpm", || device.gpm_sample()) else {
            // The next window starts at the next good sample.
            slot.last = None;
            return GpmReadings::default();
        };
        let readings = match &slot.last {
            Some(last) => t
                .time("gpm", || {
                    gpm_metrics_get(sample.nvml(), last, &sample, &METRICS)
                })
                .map(|results| readings(&results))
                .unwrap_or_default(),
            None => GpmReadings::default(),
        };
        // The previous sample is freed (GpmSample's Drop calls nvmlGpmSampleFree).
        let previous = slot.last.replace(sample);
        t.time("gpm", || drop(previous));
        readings
    }

    /// Forgets GPU `index` (lost, or its handle failed): its next window starts over.
    pub(super) fn forget(&mut self, index: u32) {
        self.slots.remove(&index);
    }

    /// Drops the GPUs at `count` and past it (they left the device list).
    pub(super) fn retain_below(&mut self, count: u32) {
        self.slots.retain(|index, _| *index < count);
    }
}

/// The metrics of one `nvmlGpmMetricsGet` call, in [`METRICS`] order; a failed metric stays
/// `None`.
fn readings<T>(results: &[Result<T, NvmlError>]) -> GpmReadings
where
    T: Value,
{
    let value = |i: usize| {
        results
            .get(i)
            .and_then(|r| r.as_ref().ok())
            .map(Value::value)
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let ratio = |i: usize| value(i).map(|percent| percent / 100.0);
    let rate = |i: usize| value(i).map(|mib| mib * MIB);
    GpmReadings {
        profiling: Profiling {
            graphics_engine_active: ratio(0),
            sm_active: ratio(1),
            sm_occupancy: ratio(2),
            dram_active: ratio(3),
            pipes: [ratio(4), ratio(5), ratio(6), ratio(7)],
            nvlink_tx_bytes_per_second: rate(10),
            nvlink_rx_bytes_per_second: rate(11),
        },
        pcie_tx: rate(8),
        pcie_rx: rate(9),
    }
}

/// A metric result's value (a trait so the conversion is tested without NVML).
trait Value {
    fn value(&self) -> f64;
}

impl Value for nvml_wrapper::struct_wrappers::gpm::GpmMetricResult {
    fn value(&self) -> f64 {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Pipe;

    impl Value for f64 {
        fn value(&self) -> f64 {
            *self
        }
    }

    #[test]
    fn percents_become_ratios_and_mib_per_second_bytes_per_second() {
        let mut results: Vec<Result<f64, NvmlError>> = vec![
            Ok(60.0),
            Ok(55.5),
            Ok(30.0),
            Ok(25.0),
            Ok(40.0),
            Ok(1.0),
            Ok(12.0),
            Ok(5.0),
            Ok(2.0),
            Ok(4.0),
            Ok(100.0),
            Ok(200.0),
        ];
        let r = readings(&results);
        let p = r.profiling;
        assert_eq!(p.graphics_engine_active, Some(0.6));
        assert_eq!(p.sm_active, Some(0.555));
        assert_eq!(p.sm_occupancy, Some(0.3));
        assert_eq!(p.dram_active, Some(0.25));
        assert_eq!(p.pipe(Pipe::Tensor), Some(0.4));
        assert_eq!(p.pipe(Pipe::Fp64), Some(0.01));
        assert_eq!(p.pipe(Pipe::Fp32), Some(0.12));
        assert_eq!(p.pipe(Pipe::Fp16), Some(0.05));
        assert_eq!(r.pcie_tx, Some(2.0 * MIB));
        assert_eq!(r.pcie_rx, Some(4.0 * MIB));
        assert_eq!(p.nvlink_tx_bytes_per_second, Some(100.0 * MIB));
        assert_eq!(p.nvlink_rx_bytes_per_second, Some(200.0 * MIB));

        // A failed metric, a NaN and a negative value are absent; the others stay.
        results[4] = Err(NvmlError::NotSupported);
        results[1] = Ok(f64::NAN);
        results[2] = Ok(-1.0);
        let r = readings(&results);
        assert_eq!(r.profiling.pipe(Pipe::Tensor), None);
        assert_eq!(r.profiling.sm_active, None);
        assert_eq!(r.profiling.sm_occupancy, None);
        assert_eq!(r.profiling.pipe(Pipe::Fp32), Some(0.12));
        assert_eq!(r.pcie_tx, Some(2.0 * MIB));
        // Fewer results than asked for: the missing ones are absent.
        assert_eq!(readings(&results[..3]).profiling.dram_active, None);
    }
}
