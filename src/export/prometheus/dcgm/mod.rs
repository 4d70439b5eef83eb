//! dcgm-exporter compatibility (`[prometheus] dcgm_compat`): owns the `DCGM_FI_*` families, their
//! dcgm units and dcgm's per-GPU label set, computed from the same snapshot as the native ones.
//!
//! Names, units and help texts follow dcgm-exporter's `etc/default-counters.csv` (default
//! lines plus the commented-out ones gpulse has data for, and `DCGM_FI_DEV_FB_TOTAL`); labels
//! follow its `render_metrics.go` order (`gpu-exporters.md` §3.1, §3.2): `gpu`, `UUID`,
//! `pci_bus_id`, `device`, `modelName`, the MIG instance's `GPU_I_ID` ([`mig`]), the host
//! label (`Hostname`, or `hostname` with `[prometheus] dcgm_hostname_label`), then
//! `DCGM_FI_DRIVER_VERSION`, then the Xid's `err_code` and `err_msg`. Every family is declared
//! a `gauge`: prometheus-client appends `_total` to counters, which would change dcgm's exact
//! names. Readings gpulse does not have are omitted, never 0: `DCGM_FI_DEV_XID_ERRORS` until a
//! GPU had an Xid (then the last code), the `DCGM_FI_PROF_*` profiling fields on GPUs without
//! NVML GPM (before Hopper; `DCGM_FI_PROF_PCIE_*_BYTES` there only with
//! `[gpu] pcie_throughput`), `DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL` and
//! `DCGM_FI_DEV_VGPU_LICENSE_STATUS`. Lost GPUs have no series.

mod mig;
mod table;
#[cfg(test)]
mod tests;

use std::fmt;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, LabelSetEncoder,
};

use super::encode::gauge;
use crate::config::DcgmHostnameLabel;
use crate::health::xid_description;
use crate::model::{GpuDevice, MigInstance};
use crate::store::Snapshot;
pub use table::{FAMILIES, Family};

/// dcgm-exporter's label names on every per-GPU series, in its order, with the default host
/// label spelling (`Hostname`).
pub const LABELS: [&str; 7] = [
    "gpu",
    "UUID",
    "pci_bus_id",
    "device",
    "modelName",
    "Hostname",
    "DCGM_FI_DRIVER_VERSION",
];

/// The MIG instance label gpulse fills (`GPU_I_PROFILE` is left out: [`mig`]).
pub const GPU_INSTANCE_LABEL: &str = "GPU_I_ID";

/// The extra labels of `DCGM_FI_DEV_XID_ERRORS`, after the driver version.
pub const XID_LABELS: [&str; 2] = ["err_code", "err_msg"];

/// One GPU that has series, with the label values that are not stored in the snapshot.
struct LabelledGpu<'a> {
    device: &'a GpuDevice,
    /// `nvidia<index>`, dcgm's `device` label.
    node: String,
    /// Its MIG instances, each with its `GPU_I_ID` value.
    instances: Vec<(String, &'a MigInstance)>,
}

/// What every series of a scrape shares.
#[derive(Clone, Copy)]
struct Shared<'a> {
    /// The host label's name and value.
    host: (&'static str, &'a str),
    driver: &'a str,
}

/// One series' labels, written in dcgm-exporter's order.
#[derive(Clone, Copy)]
struct Labels<'a> {
    gpu: &'a LabelledGpu<'a>,
    /// `GPU_I_ID` of a MIG instance's series.
    instance: Option<&'a str>,
    shared: Shared<'a>,
    /// `err_code`, `err_msg` of the Xid series.
    xid: Option<(&'a str, &'a str)>,
}

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, enc: &mut LabelSetEncoder) -> fmt::Result {
        let id = &self.gpu.device.identity;
        label(enc, LABELS[0], &id.index_label)?;
        label(enc, LABELS[1], &id.uuid)?;
        label(enc, LABELS[2], &id.pci_bus_id)?;
        label(enc, LABELS[3], &self.gpu.node)?;
        label(enc, LABELS[4], &id.name)?;
        if let Some(instance) = self.instance {
            label(enc, GPU_INSTANCE_LABEL, instance)?;
        }
        let (host, hostname) = self.shared.host;
        label(enc, host, hostname)?;
        label(enc, LABELS[6], self.shared.driver)?;
        if let Some((code, message)) = self.xid {
            label(enc, XID_LABELS[0], code)?;
            label(enc, XID_LABELS[1], message)?;
        }
        Ok(())
    }
}

fn label(enc: &mut LabelSetEncoder, key: &str, value: &str) -> fmt::Result {
    (key, value).encode(enc.encode_label())
}

/// Writes every [`FAMILIES`] entry that at least one GPU has a reading for, then
/// `DCGM_FI_DEV_XID_ERRORS`. `hostname` is the host label's value, `host_label` its name.
/// Without a GPU sample nothing is written.
pub fn encode_dcgm(
    enc: &mut DescriptorEncoder,
    snap: &Snapshot,
    hostname: &str,
    host_label: DcgmHostnameLabel,
) -> fmt::Result {
    let Some(sample) = snap.gpu.as_deref() else {
        return Ok(());
    };
    let shared = Shared {
        host: (host_label.as_str(), hostname),
        driver: sample.driver_version.as_deref().unwrap_or(""),
    };
    let gpus: Vec<LabelledGpu<'_>> = sample
        .devices
        .iter()
        .filter(|d| !d.lost)
        .map(|device| LabelledGpu {
            device,
            node: device_label(device.identity.index),
            instances: mig::instances(device),
        })
        .collect();
    for family in &FAMILIES {
        gauge(
            enc,
            family.name,
            family.help,
            gpus.iter().flat_map(|g| rows(family, g, shared)),
        )?;
    }
    // The last Xid per GPU, as dcgm reports it; only for GPUs that had one.
    let last_xid: Vec<(&LabelledGpu<'_>, String, u64)> = gpus
        .iter()
        .filter_map(|g| {
            snap.xid
                .counts
                .iter()
                .filter(|c| c.gpu_index == Some(g.device.identity.index))
                .max_by_key(|c| c.last_seen)
                .map(|c| (g, c.xid.to_string(), c.xid))
        })
        .collect();
    gauge(
        enc,
        "DCGM_FI_DEV_XID_ERRORS",
        "Value of the last XID error encountered.",
        last_xid.iter().map(|(g, code, xid)| {
            let labels = Labels {
                gpu: g,
                instance: None,
                shared,
                xid: Some((code.as_str(), xid_description(*xid))),
            };
            (labels, *xid as f64)
        }),
    )?;
    Ok(())
}

/// The series of `family` for one GPU: the GPU's, then its MIG instances' where the family
/// has per-instance values.
fn rows<'a>(
    family: &'a Family,
    g: &'a LabelledGpu<'a>,
    shared: Shared<'a>,
) -> impl Iterator<Item = (Labels<'a>, f64)> + 'a {
    let labels = move |instance| Labels {
        gpu: g,
        instance,
        shared,
        xid: None,
    };
    let own = (family.value)(g.device).map(|v| (labels(None), v));
    let instances = g.instances.iter().filter_map(move |(id, i)| {
        let value = family.mig?;
        value(i).map(|v| (labels(Some(id.as_str())), v))
    });
    own.into_iter().chain(instances)
}

/// dcgm's `device` label of GPU `index`.
fn device_label(index: u32) -> String {
    format!("nvidia{index}")
}
