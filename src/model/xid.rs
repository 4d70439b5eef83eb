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
    /// The kernel log's "fallen off the bus" message without an `Xid (` prefix (newer
    /// drivers: `NVRM: GPU 0000:29:00.0: GPU has fallen off the bus.`, or the multi-line
    /// `NVRM: The NVIDIA GPU … has fallen off the bus and is not responding to commands.`):
    /// Xid 79. A source of its own, so the Xid 79 line beside it merges into one occurrence.
    KmsgBusLoss,
}

impl XidSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NvmlEvent => "nvml_event",
            Self::Kmsg => "kmsg",
            Self::ReturnCode => "nvml_return_code",
            Self::KmsgBusLoss => "kmsg_fallen_off_bus",
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

/// NVLink5 Xids (144–150): the driver prints the error's own severity in the line
/// (`RLW_REMAP Nonfatal XC0 i0 Link 05`, `NETIR_LINK_DOWN Fatal XC1 i0 Link 09`).
pub const NVLINK_SEVERITY_XIDS: std::ops::RangeInclusive<u64> = 144..=150;

/// Whether an Xid occurrence's text says the driver judged it non-fatal (a `Nonfatal` word,
/// as NVLink5 Xids print it). Text without a severity (NVML events carry none) is not.
pub fn says_nonfatal(detail: &str) -> bool {
    detail
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .any(|w| w.eq_ignore_ascii_case("nonfatal") || w.eq_ignore_ascii_case("non-fatal"))
}

impl XidLog {
    /// For an Xid whose severity the driver prints (see [`NVLINK_SEVERITY_XIDS`]): among the
    /// recent occurrences of `xid` on the GPU (`gpu_index` or `uuid`) at or after `since`,
    /// `Some(true)` when every one said `Nonfatal`, `Some(false)` when one did not, `None`
    /// when none is in the recent log (then the Xid policy's default applies).
    pub fn all_nonfatal(
        &self,
        gpu_index: Option<u32>,
        uuid: &str,
        xid: u64,
        since: SystemTime,
    ) -> Option<bool> {
        let mut seen = false;
        for e in self.recent.iter().filter(|e| {
            e.xid == xid
                && e.at >= since
                && (e.gpu_index == gpu_index && gpu_index.is_some()
                    || !uuid.is_empty() && e.uuid == uuid)
        }) {
            if !says_nonfatal(&e.detail) {
                return Some(false);
            }
            seen = true;
        }
        seen.then_some(true)
    }
}
