//! The provider's claims (`[score.expect]`) against what NVML sees: GPU model, GPU count,
//! memory per GPU, lowest driver version.
//!
//! Only set claims are listed. A GPU that NVML no longer lists (`missing`) is not there for a
//! tenant either, so it counts for none of them. Without a sample there is nothing to compare:
//! the claim is listed unchecked (`ok: None`), never passed or failed on no evidence.

use super::ClaimCheck;
use crate::config::{ScoreConfig, parse_version};
use crate::model::{GpuDevice, GpuSample};

/// NVML reports a little under the marketing size (80 GiB boards show about 79.6 GiB).
const MEMORY_SLACK: f64 = 0.95;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Checks every set claim of `config.expect` against the latest GPU sample.
pub fn check_claims(config: &ScoreConfig, gpu: Option<&GpuSample>) -> Vec<ClaimCheck> {
    let expect = &config.expect;
    let devices: Vec<&GpuDevice> = gpu
        .map(|s| s.devices.iter().filter(|d| !d.missing).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    if !expect.gpu_model.trim().is_empty() {
        let claim = expect.gpu_model.trim();
        let names: Vec<&str> = devices.iter().map(|d| d.identity.name.as_str()).collect();
        let wanted = claim.to_lowercase();
        let ok =
            (!names.is_empty()).then(|| names.iter().all(|n| n.to_lowercase().contains(&wanted)));
        out.push(ClaimCheck {
            claim: "gpu_model",
            expected: claim.to_owned(),
            observed: (!names.is_empty()).then(|| distinct(names.iter().map(|n| n.to_string()))),
            ok,
        });
    }
    if expect.gpu_count > 0 {
        let count = gpu.map(|_| devices.len());
        out.push(ClaimCheck {
            claim: "gpu_count",
            expected: expect.gpu_count.to_string(),
            observed: count.map(|n| n.to_string()),
            ok: count.map(|n| n == expect.gpu_count as usize),
        });
    }
    if expect.memory_per_gpu_gib > 0.0 {
        let need = expect.memory_per_gpu_gib * GIB * MEMORY_SLACK;
        let sizes: Vec<Option<u64>> = devices.iter().map(|d| d.memory.total_bytes).collect();
        let known: Vec<u64> = sizes.iter().flatten().copied().collect();
        // A GPU below the claim fails it; otherwise it holds only when every GPU was read.
        let ok = if known.iter().any(|b| (*b as f64) < need) {
            Some(false)
        } else if !sizes.is_empty() && known.len() == sizes.len() {
            Some(true)
        } else {
            None
        };
        out.push(ClaimCheck {
            claim: "memory_per_gpu",
            expected: format!("{} GiB", gib(expect.memory_per_gpu_gib)),
            observed: (!known.is_empty()).then(|| {
                distinct(
                    known
                        .iter()
                        .map(|b| format!("{} GiB", gib(*b as f64 / GIB))),
                )
            }),
            ok,
        });
    }
    if !expect.driver_min.trim().is_empty() {
        let claim = expect.driver_min.trim();
        let seen = gpu.and_then(|s| s.driver_version.as_deref()).map(str::trim);
        let ok = match (seen.and_then(parse_version), parse_version(claim)) {
            (Some(seen), Some(min)) => Some(version_at_least(&seen, &min)),
            _ => None,
        };
        out.push(ClaimCheck {
            claim: "driver_min",
            expected: claim.to_owned(),
            observed: seen.map(str::to_owned),
            ok,
        });
    }
    out
}

/// `seen ≥ min`, part by part, a missing part reading 0 (550.54 is 550.54.0).
fn version_at_least(seen: &[u64], min: &[u64]) -> bool {
    let len = seen.len().max(min.len());
    let part = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    for i in 0..len {
        match part(seen, i).cmp(&part(min, i)) {
            std::cmp::Ordering::Greater => return true,
            std::cmp::Ordering::Less => return false,
            std::cmp::Ordering::Equal => {}
        }
    }
    true
}

/// A size in GiB with at most one decimal.
fn gib(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// The values once each, in first-seen order, comma-separated.
fn distinct(values: impl Iterator<Item = String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join(", ")
}
