//! Kubernetes attribution families: which pod and container holds each GPU and runs each GPU
//! process (`[kubernetes]`), as info series to join on.
//!
//! Info series, not extra labels on every GPU family: a GPU shared by several pods
//! (time-slicing, MPS) has several owners, and one reading copied under each owner would be
//! summed several times; a GPU family's labels are also fixed in the catalog. Join with
//! `* on(uuid) group_left(namespace, pod, container) gpulse_gpu_pod_info` (per GPU) or
//! `* on(uuid, pid) group_left(namespace, pod, container) gpulse_gpu_process_pod_info`; and a
//! namespace's Akash lease with `* on(namespace) group_left(owner, dseq, …)
//! gpulse_kubernetes_namespace_lease_info`.

use super::{Ctx, Dim, Family, Kind, Scope, Series, Val, dim};
use crate::model::{GpuDevice, K8sAttribution};

plain_family!(gpu_family, Scope::Gpu);
plain_family!(node_family, Scope::Node);

const OWNER: &[Dim] = &[
    dim("namespace", "k8s.namespace.name"),
    dim("pod", "k8s.pod.name"),
    dim("container", "k8s.container.name"),
    dim("mig_uuid", "gpulse.mig.id"),
];

const PROCESS_OWNER: &[Dim] = &[
    dim("pid", "process.pid"),
    dim("namespace", "k8s.namespace.name"),
    dim("pod", "k8s.pod.name"),
    dim("container", "k8s.container.name"),
];

const LEASE: &[Dim] = &[
    dim("namespace", "k8s.namespace.name"),
    dim("owner", "akash.owner"),
    dim("provider", "akash.provider"),
    dim("dseq", "akash.deployment.dseq"),
    dim("gseq", "akash.group.gseq"),
    dim("oseq", "akash.order.oseq"),
];

fn attribution<'a>(c: &Ctx<'a>) -> Option<(&'a K8sAttribution, &'a [GpuDevice])> {
    let k8s = c.snap.k8s.as_deref()?;
    let devices = c
        .snap
        .gpu
        .as_ref()
        .map_or(&[][..], |g| g.devices.as_slice());
    Some((k8s, devices))
}

fn gpu_owners<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
    let Some((k8s, devices)) = attribution(c) else {
        return;
    };
    for d in devices {
        for o in k8s.owners_of(&d.identity.uuid) {
            s.gpu(
                d,
                [
                    Val::Str(&o.namespace),
                    Val::Str(&o.pod),
                    Val::Str(&o.container),
                    Val::Opt(None),
                ],
                Some(1.0),
            );
        }
        for i in d.mig.iter().flat_map(|m| &m.instances) {
            for o in k8s.owners_of(&i.uuid) {
                s.gpu(
                    d,
                    [
                        Val::Str(&o.namespace),
                        Val::Str(&o.pod),
                        Val::Str(&o.container),
                        Val::Opt(Some(&i.uuid)),
                    ],
                    Some(1.0),
                );
            }
        }
    }
}

fn process_owners<'a>(c: &Ctx<'a>, s: &mut Series<'a>) {
    let Some((k8s, devices)) = attribution(c) else {
        return;
    };
    for d in devices {
        for p in d.processes.iter().flatten() {
            if let Some(o) = k8s.process(&d.identity.uuid, p.pid) {
                s.gpu(
                    d,
                    [
                        Val::Int(p.pid.into()),
                        Val::Str(&o.namespace),
                        Val::Str(&o.pod),
                        Val::Str(&o.container),
                    ],
                    Some(1.0),
                );
            }
        }
    }
}

/// In `/metrics` order.
pub const FAMILIES: &[Family] = &[
    Family {
        dims: OWNER,
        ..gpu_family(
            "gpulse_gpu_pod_info",
            "gpulse.gpu.pod.info",
            "1",
            "Always 1: a container the kubelet assigned this GPU (or, with mig_uuid, one of its MIG devices) to; one row per owner, several on a shared GPU.",
            Kind::Gauge,
            gpu_owners,
        )
    },
    Family {
        dims: PROCESS_OWNER,
        ..gpu_family(
            "gpulse_gpu_process_pod_info",
            "gpulse.gpu.process.pod.info",
            "1",
            "Always 1: the container running this GPU process, where it is certain (the GPU has one owner and its processes one pod).",
            Kind::Gauge,
            process_owners,
        )
    },
    Family {
        dims: LEASE,
        ..node_family(
            "gpulse_kubernetes_namespace_lease_info",
            "gpulse.kubernetes.namespace.lease.info",
            "1",
            "Always 1: the Akash lease an owner's namespace runs (its akash.network/lease.id.* labels; kubernetes.lease_labels).",
            Kind::Gauge,
            |c, s| {
                for l in c.snap.k8s.iter().flat_map(|k| &k.leases) {
                    s.node(
                        [
                            Val::Str(&l.namespace),
                            Val::Opt(l.owner.as_deref()),
                            Val::Opt(l.provider.as_deref()),
                            Val::Opt(l.dseq.as_deref()),
                            Val::Opt(l.gseq.as_deref()),
                            Val::Opt(l.oseq.as_deref()),
                        ],
                        Some(1.0),
                    );
                }
            },
        )
    },
    node_family(
        "gpulse_kubernetes_assignments_dropped",
        "gpulse.kubernetes.assignments.dropped",
        "{assignment}",
        "Device assignments of the kubelet's last answer left out past kubernetes.max_owners.",
        Kind::Gauge,
        |c, s| {
            if let Some(k8s) = c.snap.k8s.as_deref() {
                s.node([], Some(k8s.dropped as f64));
            }
        },
    ),
];
