//! Xid occurrences and the per-(GPU, Xid) counts the store keeps.

use std::time::SystemTime;

/// Where an Xid was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XidSource {
    /// An NVML critical-Xid event (`nvmlEventSetWait`).
    NvmlEvent,
    /// A `NVRM: Xid (PCI:...): N, ...` line in the kernel log (`/dev/kmsg`).
    Kmsg,
    /// Inferred from an NVML return code (GPU_IS_LOST, RESET_REQUIRED) or a drop in the
    /// device count.
    ReturnCode,
}

impl XidSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NvmlEvent => "nvml_event",
            Self::Kmsg => "kmsg",
            Self::ReturnCode => "nvml_return_code",
        }
    }
}

/// One Xid occurrence, after de-duplication across sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidEvent {
    pub at: SystemTime,
    /// The GPU, when the source could tell (kmsg gives a PCI bus id, mapped to an index).
    pub gpu_index: Option<u32>,
    /// Empty when unknown.
    pub uuid: String,
    /// Empty when unknown.
    pub pci_bus_id: String,
    pub xid: u64,
    /// Every source that reported this occurrence (the first one first).
    pub sources: Vec<XidSource>,
    /// Free text from the source (kmsg message, pid), for people; never a metric label.
    pub detail: String,
}

/// How often one Xid was seen on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidCount {
    pub gpu_index: Option<u32>,
    pub uuid: String,
    pub xid: u64,
    pub count: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

/// The Xid history the store keeps: counts per (GPU, Xid) since start, and the most recent
/// occurrences (bounded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XidLog {
    pub counts: Vec<XidCount>,
    pub recent: Vec<XidEvent>,
}
