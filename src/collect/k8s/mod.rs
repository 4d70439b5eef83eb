//! Per-pod attribution (`[kubernetes]`): which pod and container holds each GPU, and runs
//! each GPU process.
//!
//! * `pod_resources`: the kubelet's pod-resources `List` over its unix socket (gRPC, tonic).
//! * `cgroup`: a process's pod UID and container id from `/proc/<pid>/cgroup`.
//! * `leases`: the Akash lease of a namespace, from its labels (Kubernetes API, opt-in).
//! * `api`: where the Kubernetes API is, its token and client (leases, the node condition).
//!
//! Devices come from the kubelet, which knows them exactly. Processes are harder: the kubelet
//! names pods but not their UIDs, and a process's cgroup names a pod UID but not the pod. So a
//! process is attributed only where that cannot be wrong: its GPU has exactly one owner
//! (container) in the kubelet's answer, and every GPU process in a pod cgroup on that GPU is in
//! the same pod. On a GPU shared by several pods (time-slicing, MPS) processes stay
//! unattributed; the per-GPU rows still list every owner. Anything unknown is absent: a failed
//! cycle drops the whole attribution (the store never serves it stale).

pub mod api;
pub mod cgroup;
pub mod leases;
pub mod pod_resources;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::config::KubernetesConfig;
use crate::model::{
    DeviceOwner, GpuSample, K8S_COLLECTOR, K8sAttribution, PodRef, ProcessOwner, Sample,
};
use crate::store::Store;

use super::{CollectError, Collector, ErrorKind};
use cgroup::PodCgroup;
use pod_resources::{ListError, ListPodResourcesResponse};

/// Longest namespace, pod or container name kept (Kubernetes allows 253 for a namespace).
const MAX_NAME: usize = 253;

/// Asks the kubelet every `kubernetes.interval` and matches the GPU processes of the store's
/// latest GPU sample to pods.
pub struct KubernetesCollector {
    config: KubernetesConfig,
    store: Arc<Store>,
    /// Set while a `/proc` read runs on the blocking pool; a read still stuck from an earlier
    /// cycle makes the next cycles skip processes instead of piling up threads.
    proc_busy: Arc<AtomicBool>,
    /// A lease lookup that cannot be set up is logged once.
    lease_error_logged: bool,
}

impl KubernetesCollector {
    pub fn new(config: KubernetesConfig, store: Arc<Store>) -> Self {
        Self {
            config,
            store,
            proc_busy: Arc::new(AtomicBool::new(false)),
            lease_error_logged: false,
        }
    }

    async fn cycle(&mut self) -> Result<K8sAttribution, CollectError> {
        let timeout = self.config.timeout.0;
        let started = tokio::time::Instant::now();
        let max_bytes = usize::try_from(self.config.max_message_bytes).unwrap_or(usize::MAX);
        let answer = pod_resources::list(&self.config.pod_resources_socket, timeout, max_bytes)
            .await
            .map_err(|e| {
                let kind = match e {
                    ListError::Connect { .. } => ErrorKind::Unavailable,
                    ListError::Timeout(_) => ErrorKind::Deadline,
                    ListError::Status(_) => ErrorKind::Failed,
                };
                CollectError::new(kind, e.to_string())
            })?;
        let max_owners = usize::try_from(self.config.max_owners).unwrap_or(usize::MAX);
        let (devices, dropped) = device_owners(&answer, max_owners);
        let gpus = self
            .store
            .snapshot()
            .gpu
            .as_deref()
            .map(gpu_processes)
            .unwrap_or_default();
        let left = timeout.saturating_sub(started.elapsed());
        let cgroups = self.read_cgroups(&gpus, left).await;
        let processes = attribute_processes(&gpus, &devices, &cgroups);
        let leases = if self.config.lease_labels {
            let namespaces: BTreeSet<String> =
                devices.iter().map(|d| d.owner.namespace.clone()).collect();
            let namespaces: Vec<String> = namespaces.into_iter().collect();
            let left = timeout.saturating_sub(started.elapsed());
            match leases::read(&self.config, &namespaces, left).await {
                Ok(leases) => leases,
                Err(message) => {
                    if !self.lease_error_logged {
                        self.lease_error_logged = true;
                        tracing::warn!(error = %message, "Cannot read Akash leases from namespace labels; leaving them out.");
                    }
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        Ok(K8sAttribution {
            taken_at: Some(SystemTime::now()),
            devices,
            processes,
            dropped,
            leases,
        })
    }

    /// The cgroups of every GPU process, read on the blocking pool within `left`; empty when
    /// there is no time left or an earlier read is still stuck.
    async fn read_cgroups(&self, gpus: &[GpuProcesses], left: Duration) -> HashMap<u32, PodCgroup> {
        let pids: Vec<u32> = gpus.iter().flat_map(|g| g.pids.iter().copied()).collect();
        if pids.is_empty() || left.is_zero() || self.proc_busy.swap(true, Ordering::AcqRel) {
            return HashMap::new();
        }
        let root = PathBuf::from(&self.config.proc_root);
        let busy = Arc::clone(&self.proc_busy);
        let read = tokio::task::spawn_blocking(move || {
            let found = pids
                .into_iter()
                .filter_map(|pid| cgroup::read(&root, pid).map(|c| (pid, c)))
                .collect::<HashMap<_, _>>();
            busy.store(false, Ordering::Release);
            found
        });
        match tokio::time::timeout(left, read).await {
            Ok(Ok(found)) => found,
            _ => HashMap::new(),
        }
    }
}

impl Collector for KubernetesCollector {
    fn name(&self) -> &'static str {
        K8S_COLLECTOR
    }

    async fn collect(&mut self) -> Result<Sample, CollectError> {
        self.cycle().await.map(Sample::K8s)
    }
}

/// One GPU's UUID, its MIG devices' UUIDs and its processes, as the GPU sample lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuProcesses {
    pub uuid: String,
    pub mig: Vec<String>,
    pub pids: Vec<u32>,
}

/// The GPUs of a sample that are not lost.
pub fn gpu_processes(sample: &GpuSample) -> Vec<GpuProcesses> {
    sample
        .devices
        .iter()
        .filter(|d| !d.lost)
        .map(|d| GpuProcesses {
            uuid: d.identity.uuid.clone(),
            mig: d
                .mig
                .iter()
                .flat_map(|m| m.instances.iter().map(|i| i.uuid.clone()))
                .collect(),
            pids: d.processes.iter().flatten().map(|p| p.pid).collect(),
        })
        .collect()
}

/// Every (NVIDIA device, container) assignment of a `List` answer, sorted and de-duplicated,
/// at most `max`; the second value counts the ones left out.
pub fn device_owners(answer: &ListPodResourcesResponse, max: usize) -> (Vec<DeviceOwner>, u64) {
    let mut all = BTreeSet::new();
    for pod in &answer.pod_resources {
        for container in &pod.containers {
            for devices in &container.devices {
                for id in &devices.device_ids {
                    if let Some(device) = pod_resources::gpu_device_id(&devices.resource_name, id) {
                        all.insert(DeviceOwner {
                            device,
                            owner: PodRef {
                                namespace: clip(&pod.namespace),
                                pod: clip(&pod.name),
                                container: clip(&container.name),
                            },
                        });
                    }
                }
            }
        }
    }
    let dropped = all.len().saturating_sub(max) as u64;
    (all.into_iter().take(max).collect(), dropped)
}

fn clip(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect()
}

/// The processes that can be attributed without guessing (see the module docs): on a GPU
/// with exactly one owning container (across the GPU and its MIG devices), the processes in a
/// pod cgroup, when they all share one pod UID. Sorted by GPU, then pid.
pub fn attribute_processes(
    gpus: &[GpuProcesses],
    devices: &[DeviceOwner],
    cgroups: &HashMap<u32, PodCgroup>,
) -> Vec<ProcessOwner> {
    let mut out = Vec::new();
    for gpu in gpus {
        let owners: BTreeSet<&PodRef> = devices
            .iter()
            .filter(|d| d.device == gpu.uuid || gpu.mig.contains(&d.device))
            .map(|d| &d.owner)
            .collect();
        let [owner] = owners.into_iter().collect::<Vec<_>>()[..] else {
            continue;
        };
        let in_pods: Vec<(u32, &PodCgroup)> = gpu
            .pids
            .iter()
            .filter_map(|pid| cgroups.get(pid).map(|c| (*pid, c)))
            .collect();
        let uids: BTreeSet<&str> = in_pods.iter().map(|(_, c)| c.pod_uid.as_str()).collect();
        if uids.len() != 1 {
            continue;
        }
        out.extend(in_pods.iter().map(|(pid, _)| ProcessOwner {
            gpu_uuid: gpu.uuid.clone(),
            pid: *pid,
            owner: owner.clone(),
        }));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
