//! Kubernetes attribution: which pod and container holds each GPU, and runs each GPU process.

use std::time::SystemTime;

/// The collector's name (`collector` label); the store drops the attribution when a cycle of
/// this collector fails, so an attribution is never served stale.
pub const K8S_COLLECTOR: &str = "kubernetes";

/// A container of a pod, as the kubelet names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// One device the kubelet assigned to a container: a GPU UUID (`GPU-…`) or a MIG device UUID
/// (`MIG-…`), with any time-slicing replica suffix (`::N`) stripped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceOwner {
    pub device: String,
    pub owner: PodRef,
}

/// A GPU process attributed to a container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessOwner {
    /// The GPU (its UUID) NVML listed the process on.
    pub gpu_uuid: String,
    pub pid: u32,
    pub owner: PodRef,
}

/// What the `kubernetes` collector last learnt; `Snapshot.k8s` is `None` while it is unknown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct K8sAttribution {
    pub taken_at: Option<SystemTime>,
    /// Sorted by device, then owner; at most `kubernetes.max_owners`.
    pub devices: Vec<DeviceOwner>,
    /// Sorted by GPU, then pid.
    pub processes: Vec<ProcessOwner>,
    /// Device assignments left out past `kubernetes.max_owners`.
    pub dropped: u64,
    /// The Akash lease of each owner's namespace that is one (`kubernetes.lease_labels`).
    pub leases: Vec<NamespaceLease>,
}

/// The Akash lease a namespace's labels name (`akash.network/lease.id.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceLease {
    pub namespace: String,
    pub owner: Option<String>,
    pub dseq: Option<String>,
    pub gseq: Option<String>,
    pub oseq: Option<String>,
    pub provider: Option<String>,
}

impl K8sAttribution {
    /// The owners of `device` (a GPU or MIG UUID).
    pub fn owners_of<'a>(&'a self, device: &'a str) -> impl Iterator<Item = &'a PodRef> + 'a {
        self.devices
            .iter()
            .filter(move |d| d.device == device)
            .map(|d| &d.owner)
    }

    /// The container that runs `pid` on the GPU `gpu_uuid`, when known.
    pub fn process(&self, gpu_uuid: &str, pid: u32) -> Option<&PodRef> {
        self.processes
            .binary_search_by(|p| (p.gpu_uuid.as_str(), p.pid).cmp(&(gpu_uuid, pid)))
            .ok()
            .map(|i| &self.processes[i].owner)
    }
}

/// The parts of an Akash lease id, in Akash's own order (`owner/dseq/gseq/oseq/provider`).
pub const LEASE_PARTS: [&str; 5] = ["owner", "dseq", "gseq", "oseq", "provider"];

impl NamespaceLease {
    /// The lease id as one string, `owner/dseq/gseq/oseq/provider` (a part the labels did not
    /// give is empty): the ledger's per-lease key. Label values cannot hold `/`; one that does
    /// (a hand-built value) has it dropped, so the key always splits back into five parts.
    pub fn key(&self) -> String {
        [
            &self.owner,
            &self.dseq,
            &self.gseq,
            &self.oseq,
            &self.provider,
        ]
        .map(|p| p.as_deref().unwrap_or("").replace('/', ""))
        .join("/")
    }
}

/// The five parts of a lease key ([`NamespaceLease::key`]), in [`LEASE_PARTS`] order; a key
/// of another shape gives empty parts past what it has.
pub fn lease_key_parts(key: &str) -> [&str; 5] {
    let mut parts = [""; 5];
    for (slot, part) in parts.iter_mut().zip(key.splitn(5, '/')) {
        *slot = part;
    }
    parts
}

impl K8sAttribution {
    /// The lease keys of the leases holding `device` (a GPU UUID) or one of `mig` (its MIG
    /// device UUIDs) now, sorted and without repeats.
    pub fn leases_of<'a>(
        &self,
        device: &str,
        mig: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut namespaces: Vec<&str> = self
            .owners_of(device)
            .map(|o| o.namespace.as_str())
            .collect();
        for m in mig {
            namespaces.extend(self.owners_of(m).map(|o| o.namespace.as_str()));
        }
        let mut keys: Vec<String> = self
            .leases
            .iter()
            .filter(|l| namespaces.contains(&l.namespace.as_str()))
            .map(NamespaceLease::key)
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}
