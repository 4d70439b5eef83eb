//! Tests of the attribution rules (the gRPC client and the agent are tested in `tests/it/k8s.rs`).

use super::pod_resources::{ContainerDevices, ContainerResources, PodResources};
use super::*;

const GPU0: &str = "GPU-00000000-fake-4000-8000-000000000000";
const GPU1: &str = "GPU-00000000-fake-4000-8000-000000000001";

fn pod(ns: &str, name: &str, container: &str, resource: &str, ids: &[&str]) -> PodResources {
    PodResources {
        name: name.into(),
        namespace: ns.into(),
        containers: vec![ContainerResources {
            name: container.into(),
            devices: vec![ContainerDevices {
                resource_name: resource.into(),
                device_ids: ids.iter().map(|s| s.to_string()).collect(),
            }],
        }],
    }
}

fn owner(ns: &str, name: &str, container: &str) -> PodRef {
    PodRef {
        namespace: ns.into(),
        pod: name.into(),
        container: container.into(),
    }
}

fn cg(uid: &str) -> PodCgroup {
    PodCgroup {
        pod_uid: uid.into(),
        container_id: None,
    }
}

#[test]
fn owners_keep_nvidia_devices_only_dedup_replicas_and_are_bounded() {
    let answer = ListPodResourcesResponse {
        pod_resources: vec![
            pod("ml", "train", "main", "nvidia.com/gpu", &[GPU0]),
            pod(
                "ml",
                "infer",
                "srv",
                "nvidia.com/gpu",
                &[&format!("{GPU1}::0"), &format!("{GPU1}::1")],
            ),
            pod("ml", "web", "nginx", "example.com/fpga", &["GPU-nope"]),
            pod("ml", "web", "nginx", "cpu", &[]),
        ],
    };
    let (devices, dropped) = device_owners(&answer, 10);
    assert_eq!(dropped, 0);
    assert_eq!(
        devices,
        vec![
            DeviceOwner {
                device: GPU0.into(),
                owner: owner("ml", "train", "main")
            },
            DeviceOwner {
                device: GPU1.into(),
                owner: owner("ml", "infer", "srv")
            },
        ]
    );
    let (bounded, dropped) = device_owners(&answer, 1);
    assert_eq!((bounded.len(), dropped), (1, 1));
}

#[test]
fn processes_are_attributed_only_on_an_exclusive_gpu_with_one_pod() {
    let devices = vec![
        DeviceOwner {
            device: GPU0.into(),
            owner: owner("ml", "train", "main"),
        },
        DeviceOwner {
            device: GPU1.into(),
            owner: owner("ml", "a", "c"),
        },
        DeviceOwner {
            device: GPU1.into(),
            owner: owner("ml", "b", "c"),
        },
    ];
    let gpus = vec![
        GpuProcesses {
            uuid: GPU0.into(),
            mig: vec![],
            pids: vec![10, 11, 12],
        },
        GpuProcesses {
            uuid: GPU1.into(),
            mig: vec![],
            pids: vec![20],
        },
    ];
    // 10 and 11 in one pod, 12 a host process: 10 and 11 attributed. GPU1 is shared: none.
    let cgroups: HashMap<u32, PodCgroup> = [(10, cg("u1")), (11, cg("u1")), (20, cg("u2"))].into();
    let got = attribute_processes(&gpus, &devices, &cgroups);
    let pids: Vec<(String, u32)> = got.iter().map(|p| (p.gpu_uuid.clone(), p.pid)).collect();
    assert_eq!(pids, vec![(GPU0.into(), 10), (GPU0.into(), 11)]);
    assert!(got.iter().all(|p| p.owner == owner("ml", "train", "main")));
    let attribution = K8sAttribution {
        processes: got,
        ..K8sAttribution::default()
    };
    assert_eq!(
        attribution.process(GPU0, 11).map(|o| o.pod.as_str()),
        Some("train")
    );
    assert_eq!(attribution.process(GPU0, 12), None);

    // Two pods' processes on one exclusive GPU: something is off, so nobody is named.
    let two: HashMap<u32, PodCgroup> = [(10, cg("u1")), (11, cg("u9"))].into();
    assert!(attribute_processes(&gpus, &devices, &two).is_empty());
    // No owner at all: nothing.
    assert!(attribute_processes(&gpus, &[], &cgroups).is_empty());
}

#[test]
fn a_mig_device_owner_owns_its_gpu_processes() {
    let devices = vec![DeviceOwner {
        device: "MIG-1".into(),
        owner: owner("ml", "m", "c"),
    }];
    let gpus = vec![GpuProcesses {
        uuid: GPU0.into(),
        mig: vec!["MIG-1".into(), "MIG-2".into()],
        pids: vec![5],
    }];
    let cgroups: HashMap<u32, PodCgroup> = [(5, cg("u"))].into();
    assert_eq!(attribute_processes(&gpus, &devices, &cgroups).len(), 1);
}
