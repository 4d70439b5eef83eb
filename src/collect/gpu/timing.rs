//! Opt-in per-call timing of the NVML cycle (`GPULSE_NVML_TIMING=1`): where a cycle's time
//! goes, call group by call group, so a real-driver check can compare the calls' own time with
//! the whole cycle. Off, a timed call costs one branch.

use std::time::{Duration, Instant};

/// The environment variable that turns per-call timing on (`1`).
pub const TIMING_ENV: &str = "GPULSE_NVML_TIMING";

/// The NVML call groups timed by [`CallTiming`], in cycle order.
pub const CALL_GROUPS: [&str; 27] = [
    "device_count",
    "handle",
    "uuid",
    "identity",
    "utilization",
    "gpm",
    "memory",
    "field_values",
    "ecc",
    "retired_pages",
    "encoder_decoder",
    "temperature",
    "temperature_thresholds",
    "power",
    "power_limit",
    "energy",
    "clocks",
    "max_clocks",
    "performance_state",
    "fans",
    "throttle_reasons",
    "violations",
    "pcie",
    "pcie_throughput",
    "nvlink",
    "processes",
    "mig",
];

/// Per-call-group time of one cycle: where the cycle's time goes, summed over every GPU.
/// Fixed-size (one slot per [`CALL_GROUPS`] entry), so timing allocates nothing per call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallTiming {
    /// The whole cycle, from the device count to the last GPU (NVML loading excluded).
    pub cycle: Duration,
    /// `(time, runs)` per group, in [`CALL_GROUPS`] order: a run is one timed call or one
    /// timed group of calls (all NVLinks of a GPU, say).
    pub groups: [(Duration, u32); CALL_GROUPS.len()],
}

impl CallTiming {
    /// The sum of every timed call; `cycle` minus this is gpulse's own work.
    pub fn calls(&self) -> Duration {
        self.groups.iter().map(|(d, _)| *d).sum()
    }

    /// `group=µs/calls` pairs, slowest first, for the log line.
    pub fn summary(&self) -> String {
        let mut groups: Vec<(&str, Duration, u32)> = CALL_GROUPS
            .iter()
            .zip(&self.groups)
            .filter(|(_, (_, n))| *n > 0)
            .map(|(name, (d, n))| (*name, *d, *n))
            .collect();
        groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        groups
            .iter()
            .map(|(name, d, n)| format!("{name}={}us/{n}", d.as_micros()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Times NVML calls into a [`CallTiming`] when on; otherwise just runs them.
pub(super) struct Timer {
    pub(super) on: bool,
    pub(super) timing: CallTiming,
}

impl Timer {
    pub(super) fn time<T>(&mut self, group: &'static str, call: impl FnOnce() -> T) -> T {
        if !self.on {
            return call();
        }
        let started = Instant::now();
        let result = call();
        let spent = started.elapsed();
        // A linear scan of 27 static names is cheaper than hashing and needs no allocation.
        if let Some(slot) = CALL_GROUPS
            .iter()
            .position(|g| *g == group)
            .and_then(|i| self.timing.groups.get_mut(i))
        {
            slot.0 += spent;
            slot.1 += 1;
        }
        result
    }
}
