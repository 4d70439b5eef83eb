//! MIG instance series. dcgm-exporter renders the fields DCGM reports per GPU instance once
//! more per instance, with the parent GPU's labels plus `GPU_I_PROFILE` and `GPU_I_ID`
//! (`render_metrics.go`). gpulse has one per-instance reading, memory (`MigReadings`), so the
//! framebuffer families (`DCGM_FI_DEV_FB_USED`, `_FREE`, `_TOTAL`) get instance series; the
//! rest stay per GPU.
//!
//! What differs from dcgm-exporter, and why:
//!
//! * `GPU_I_ID` is NVML's MIG device index (`nvmlDeviceGetMigDeviceHandleByIndex`, "Device N"
//!   in `nvidia-smi -L`), not the GPU instance ID DCGM reports (`nvmlDeviceGetGpuInstanceId`,
//!   which nvml-wrapper 0.13 does not wrap; gpulse has no `unsafe` to call it). Both tell a
//!   GPU's instances apart; the numbers differ.
//! * `GPU_I_PROFILE` (e.g. `1g.10gb`) is left out: gpulse does not read the instance's profile.
//!   A series with an empty label is the same series without it in Prometheus.
//! * `DCGM_FI_DEV_FB_FREE` of an instance is its total minus its used memory (NVML's free
//!   figure for the instance is not kept in the sample).
//! * Every other per-instance field (`DCGM_FI_PROF_*` per instance above all) is absent:
//!   gpulse has no per-instance reading of it.

use crate::model::{GpuDevice, MigInstance};

/// The MIG instances of `d` with their `GPU_I_ID` value; none when MIG is off.
pub(super) fn instances(d: &GpuDevice) -> Vec<(String, &MigInstance)> {
    d.mig
        .iter()
        .filter(|m| m.enabled)
        .flat_map(|m| &m.instances)
        .map(|i| (i.index.to_string(), i))
        .collect()
}
