//! Per-pod attribution end to end: an in-process kubelet pod-resources gRPC server on a unix
//! socket, a fake `/proc` tree, the agent on the fake NVML; labels on /metrics, refresh, the
//! bound, and absence when the socket is missing, refuses, or answers garbage.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use gpulse::app::GpuSource;
pub use gpulse::collect::k8s::pod_resources::ListPodResourcesResponse;
use gpulse::collect::k8s::pod_resources::{
    ContainerDevices, ContainerResources, LIST_PATH, ListPodResourcesRequest, PodResources,
};
use gpulse::config::{Config, HumanDuration};
use tonic::codegen::http;

use crate::fake_nvml::FakeNvml;

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// What the fake kubelet answers to `List`.
#[derive(Clone)]
pub enum Answer {
    List(ListPodResourcesResponse),
    Status(tonic::Code),
}

/// The fake kubelet's `v1.PodResourcesLister`, answering what the test last set.
#[derive(Clone)]
pub struct FakeKubelet {
    pub answer: Arc<Mutex<Answer>>,
}

impl tonic::server::NamedService for FakeKubelet {
    const NAME: &'static str = "v1.PodResourcesLister";
}

struct ListSvc(Answer);

impl tonic::server::UnaryService<ListPodResourcesRequest> for ListSvc {
    type Response = ListPodResourcesResponse;
    type Future = BoxFuture<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, _: tonic::Request<ListPodResourcesRequest>) -> Self::Future {
        let answer = self.0.clone();
        Box::pin(async move {
            match answer {
                Answer::List(list) => Ok(tonic::Response::new(list)),
                Answer::Status(code) => Err(tonic::Status::new(code, "refused by the test")),
            }
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for FakeKubelet {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let answer = self.answer.lock().unwrap().clone();
        Box::pin(async move {
            if request.uri().path() != LIST_PATH {
                return Ok(tonic::Status::unimplemented("not in the fake").into_http());
            }
            let codec = tonic_prost::ProstCodec::<ListPodResourcesResponse, ListPodResourcesRequest>::default();
            Ok(tonic::server::Grpc::new(codec)
                .unary(ListSvc(answer), request)
                .await)
        })
    }
}

/// Serves `kubelet` on a unix socket in `dir`; returns the socket's path.
pub async fn serve(dir: &Path, kubelet: FakeKubelet) -> PathBuf {
    let path = dir.join("kubelet.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(kubelet)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    path
}

/// The fake NVML's UUID of GPU `index`.
pub fn fake_uuid(index: u32) -> String {
    format!("GPU-00000000-fake-4000-8000-{index:012}")
}

/// One pod with one container holding `ids` of `nvidia.com/gpu`.
pub fn pod(namespace: &str, name: &str, container: &str, ids: &[String]) -> PodResources {
    PodResources {
        name: name.into(),
        namespace: namespace.into(),
        containers: vec![ContainerResources {
            name: container.into(),
            devices: vec![ContainerDevices {
                resource_name: "nvidia.com/gpu".into(),
                device_ids: ids.to_vec(),
            }],
        }],
    }
}

pub const POD_UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
const CONTAINER_ID: &str = "4f2a9c0e1b7d3a5c6e8f0a1b2c3d4e5f67890abcdef0123456789abcdef01234";

/// A fake `/proc` in `dir` where every one of `pids` runs in [`POD_UID`] (systemd driver,
/// cgroup v2).
pub fn fake_proc(dir: &Path, pids: &[u32]) -> PathBuf {
    let root = dir.join("proc");
    let uid = POD_UID.replace('-', "_");
    for pid in pids {
        std::fs::create_dir_all(root.join(pid.to_string())).unwrap();
        std::fs::write(
            root.join(pid.to_string()).join("cgroup"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{CONTAINER_ID}.scope\n"
            ),
        )
        .unwrap();
    }
    root
}

/// The config of an in-process agent on `fake` with attribution from `socket` every 100 ms.
pub fn config(fake: &FakeNvml, socket: &Path, proc_root: &Path) -> Config {
    let mut config = Config::default();
    config.gpu.interval = HumanDuration(Duration::from_millis(100));
    config.gpu.nvml_library = fake.lib_path().display().to_string();
    config.host.enabled = false;
    config.health.kmsg_path = String::new();
    config.score.enabled = false;
    config.kubernetes.pod_resources_socket = socket.display().to_string();
    config.kubernetes.interval = HumanDuration(Duration::from_millis(100));
    config.kubernetes.timeout = HumanDuration(Duration::from_secs(2));
    config.kubernetes.proc_root = proc_root.display().to_string();
    config
}

fn lines<'a>(metrics: &'a str, family: &str) -> Vec<&'a str> {
    let prefix = format!("{family}{{");
    metrics.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[tokio::test]
async fn gpus_and_processes_carry_their_pod_and_follow_the_kubelet() {
    let fake = FakeNvml::new("gpus=2\n");
    let dir = tempfile::tempdir().unwrap();
    // GPU 0 held by one container; GPU 1 time-sliced between two pods.
    let answer = Arc::new(Mutex::new(Answer::List(ListPodResourcesResponse {
        pod_resources: vec![
            pod("ml", "train-0", "trainer", &[fake_uuid(0)]),
            pod(
                "serving",
                "llm-a",
                "vllm",
                &[format!("{}::0", fake_uuid(1))],
            ),
            pod(
                "serving",
                "llm-b",
                "vllm",
                &[format!("{}::1", fake_uuid(1))],
            ),
        ],
    })));
    let socket = serve(
        dir.path(),
        FakeKubelet {
            answer: Arc::clone(&answer),
        },
    )
    .await;
    // The fake NVML runs pid 1000 on GPU 0 and pid 1010 on GPU 1.
    let proc_root = fake_proc(dir.path(), &[1000, 1010]);
    let agent =
        crate::inproc::start(config(&fake, &socket, &proc_root), GpuSource::Nvml, None).await;

    let metrics = agent
        .wait_for("/metrics", "the process attribution", |m| {
            m.contains("gpulse_gpu_process_pod_info{")
        })
        .await;
    let gpu_rows = lines(&metrics, "gpulse_gpu_pod_info");
    assert_eq!(gpu_rows.len(), 3, "{gpu_rows:#?}");
    assert!(gpu_rows.iter().any(|l| l.contains(&format!(
        "gpu=\"0\",uuid=\"{}\",namespace=\"ml\",pod=\"train-0\",container=\"trainer\",mig_uuid=\"\"}} 1",
        fake_uuid(0)
    ))));
    assert!(
        gpu_rows
            .iter()
            .any(|l| l.contains("gpu=\"1\"") && l.contains("pod=\"llm-a\""))
    );
    assert!(
        gpu_rows
            .iter()
            .any(|l| l.contains("gpu=\"1\"") && l.contains("pod=\"llm-b\""))
    );
    // The process on the exclusive GPU is named; the one on the shared GPU is not guessed.
    let process_rows = lines(&metrics, "gpulse_gpu_process_pod_info");
    assert_eq!(
        process_rows,
        vec![format!(
            "gpulse_gpu_process_pod_info{{gpu=\"0\",uuid=\"{}\",pid=\"1000\",namespace=\"ml\",pod=\"train-0\",container=\"trainer\"}} 1.0",
            fake_uuid(0)
        )],
    );
    assert!(metrics.contains("gpulse_collector_success{collector=\"kubernetes\"} 1"));
    assert!(metrics.contains("gpulse_kubernetes_assignments_dropped 0"));

    // The kubelet's answer changes: the pod on GPU 0 is gone, another took GPU 1.
    *answer.lock().unwrap() = Answer::List(ListPodResourcesResponse {
        pod_resources: vec![pod("ml", "eval-1", "eval", &[fake_uuid(1)])],
    });
    let metrics = agent
        .wait_for("/metrics", "the new answer", |m| {
            m.contains("pod=\"eval-1\"")
        })
        .await;
    assert_eq!(lines(&metrics, "gpulse_gpu_pod_info").len(), 1);
    // GPU 1 now has one owner, so its process (same pod cgroup) is named.
    let process_rows = lines(&metrics, "gpulse_gpu_process_pod_info");
    assert_eq!(process_rows.len(), 1, "{process_rows:#?}");
    assert!(process_rows[0].contains("gpu=\"1\",") && process_rows[0].contains("pid=\"1010\""));
    assert!(process_rows[0].contains("pod=\"eval-1\""));

    // The kubelet refuses: everything it said is dropped, never served stale.
    *answer.lock().unwrap() = Answer::Status(tonic::Code::PermissionDenied);
    let metrics = agent
        .wait_for("/metrics", "the attribution to go", |m| {
            !m.contains("gpulse_gpu_pod_info{")
        })
        .await;
    assert!(!metrics.contains("gpulse_gpu_process_pod_info{"));
    assert!(!metrics.contains("gpulse_kubernetes_assignments_dropped"));
    assert!(metrics.contains("gpulse_collector_success{collector=\"kubernetes\"} 0"));
    let snapshot = agent.get_json("/v1/snapshot").await;
    let text = snapshot.to_string();
    assert!(text.contains("PermissionDenied"), "{text}");
    agent.shut_down().await;
}

#[tokio::test]
async fn the_bound_keeps_the_first_assignments_and_counts_the_rest() {
    let fake = FakeNvml::new("gpus=2\n");
    let dir = tempfile::tempdir().unwrap();
    let many: Vec<PodResources> = (0..50)
        .map(|i| {
            pod(
                "ns",
                &format!("p{i:02}"),
                "c",
                &[format!("{}::{i}", fake_uuid(0))],
            )
        })
        .collect();
    let answer = Arc::new(Mutex::new(Answer::List(ListPodResourcesResponse {
        pod_resources: many,
    })));
    let socket = serve(dir.path(), FakeKubelet { answer }).await;
    let mut config = config(&fake, &socket, dir.path());
    config.kubernetes.max_owners = 8;
    let agent = crate::inproc::start(config, GpuSource::Nvml, None).await;
    let metrics = agent
        .wait_for("/metrics", "the attribution", |m| {
            m.contains("gpulse_kubernetes_assignments_dropped")
        })
        .await;
    assert_eq!(lines(&metrics, "gpulse_gpu_pod_info").len(), 8);
    assert!(metrics.contains("gpulse_kubernetes_assignments_dropped 42"));
    agent.shut_down().await;
}

#[tokio::test]
async fn a_missing_socket_or_a_garbage_answer_leaves_attribution_absent() {
    let fake = FakeNvml::new("gpus=1\n");
    let dir = tempfile::tempdir().unwrap();
    // Not gRPC: a socket that answers junk and hangs up.
    let garbage = dir.path().join("garbage.sock");
    let listener = tokio::net::UnixListener::bind(&garbage).unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\n\r\nnot grpc at all")
                .await;
        }
    });
    for socket in [dir.path().join("missing.sock"), garbage] {
        let agent =
            crate::inproc::start(config(&fake, &socket, dir.path()), GpuSource::Nvml, None).await;
        let metrics = agent
            .wait_for(
                "/metrics",
                "a failed kubernetes cycle and a GPU sample",
                |m| {
                    m.contains("gpulse_collector_success{collector=\"kubernetes\"} 0")
                        && m.contains("gpulse_gpu_info{")
                },
            )
            .await;
        assert!(!metrics.contains("gpulse_gpu_pod_info"), "{socket:?}");
        assert!(
            !metrics.contains("gpulse_gpu_process_pod_info"),
            "{socket:?}"
        );
        // The GPUs are served as ever.
        assert!(metrics.contains("gpulse_gpu_info{"), "{socket:?}");
        agent.shut_down().await;
    }
}

/// A fake Kubernetes API on loopback serving `GET /api/v1/namespaces/{ns}`: `serving` is an
/// Akash lease's namespace, any other is a plain one; the bearer token `k8s-token` is needed
/// (401 otherwise). Returns the base URL and a token file in `dir`.
pub async fn serve_api(dir: &Path) -> (String, PathBuf) {
    use axum::extract::Path as UrlPath;
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/api/v1/namespaces/{ns}",
        axum::routing::get(|UrlPath(ns): UrlPath<String>, headers: HeaderMap| async move {
            let authorized = headers
                .get("authorization")
                .is_some_and(|v| v == "Bearer k8s-token");
            if !authorized {
                return (StatusCode::UNAUTHORIZED, String::new());
            }
            let labels = if ns == "serving" {
                r#""akash.network":"true","akash.network/lease.id.owner":"akash1tenant","akash.network/lease.id.dseq":"4242","akash.network/lease.id.gseq":"1","akash.network/lease.id.oseq":"1","akash.network/lease.id.provider":"akash1provider""#
            } else {
                r#""kubernetes.io/metadata.name":"x""#
            };
            (
                StatusCode::OK,
                format!(r#"{{"kind":"Namespace","metadata":{{"name":"{ns}","labels":{{{labels}}}}}}}"#),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let token = dir.join("k8s-token");
    std::fs::write(&token, "k8s-token\n").unwrap();
    (format!("http://{addr}"), token)
}

#[tokio::test]
async fn lease_namespaces_name_their_akash_lease() {
    let fake = FakeNvml::new("gpus=2\n");
    let dir = tempfile::tempdir().unwrap();
    let answer = Arc::new(Mutex::new(Answer::List(ListPodResourcesResponse {
        pod_resources: vec![
            pod("serving", "llm", "vllm", &[fake_uuid(0)]),
            pod("ml", "train", "t", &[fake_uuid(1)]),
        ],
    })));
    let socket = serve(dir.path(), FakeKubelet { answer }).await;
    let (api, token) = serve_api(dir.path()).await;
    let mut config = config(&fake, &socket, dir.path());
    config.kubernetes.lease_labels = true;
    config.score.enabled = true;
    config.score.tick = HumanDuration(Duration::from_secs(1));
    config.kubernetes.api_url = api;
    config.kubernetes.api_token_file = token.display().to_string();
    let agent = crate::inproc::start(config, GpuSource::Nvml, None).await;
    let metrics = agent
        .wait_for("/metrics", "the lease", |m| {
            m.contains("gpulse_kubernetes_namespace_lease_info{")
        })
        .await;
    // Only the lease's namespace; `ml` has no lease labels.
    assert_eq!(
        lines(&metrics, "gpulse_kubernetes_namespace_lease_info"),
        vec![
            "gpulse_kubernetes_namespace_lease_info{namespace=\"serving\",owner=\"akash1tenant\",provider=\"akash1provider\",dseq=\"4242\",gseq=\"1\",oseq=\"1\"} 1.0"
        ]
    );
    // The score's per-lease view: the lease's GPU (GPU 0, not `ml`'s GPU 1) while it held it.
    let ids =
        "owner=\"akash1tenant\",provider=\"akash1provider\",dseq=\"4242\",gseq=\"1\",oseq=\"1\"";
    let metrics = agent
        .wait_for("/metrics", "the lease's score", |m| {
            m.contains(&format!(
                "gpulse_lease_score{{{ids},component=\"health\",window=\"5m\"}}"
            ))
        })
        .await;
    assert!(
        metrics.contains(&format!(
            "gpulse_lease_score{{{ids},component=\"health\",window=\"5m\"}} 100.0"
        )),
        "{:?}",
        lines(&metrics, "gpulse_lease_score")
    );
    // Not measurable of a lease from the node: absent, never 100.
    for absent in ["availability", "latency", "completion", "recovery"] {
        assert!(!metrics.contains(&format!("component=\"{absent}\",window=\"5m\"}} 100")));
        assert!(
            !lines(&metrics, "gpulse_lease_score")
                .iter()
                .any(|l| l.contains(&format!("component=\"{absent}\""))),
            "{absent}"
        );
    }
    assert_eq!(
        lines(&metrics, "gpulse_lease_observed_seconds")
            .iter()
            .filter(|l| l.contains("window=\"5m\""))
            .count(),
        1
    );
    let score = agent.get_json("/v1/score?window=5m").await;
    let leases = score["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 1, "{score}");
    let lease = &leases[0];
    assert_eq!(lease["lease"], "akash1tenant/4242/1/1/akash1provider");
    assert_eq!(lease["dseq"], "4242");
    assert_eq!(lease["windows"].as_array().unwrap().len(), 1);
    let window = &lease["windows"][0];
    assert_eq!(window["window"], "5m");
    assert!(
        window["observed_seconds"].as_u64().unwrap() >= 1,
        "{window}"
    );
    let health = &window["components"][3];
    assert_eq!(health["component"], "health");
    // One GPU's seconds: GPU 1 (the plain namespace's) is not the lease's.
    let sampled = health["evidence"]["total"].as_f64().unwrap();
    let observed = window["observed_seconds"].as_f64().unwrap();
    assert!(sampled <= observed, "{window}");
    assert_eq!(window["components"][0]["unmeasured"], "not_measurable");
    agent.shut_down().await;
}
