//! The kubelet's pod-resources API (`v1.PodResourcesLister/List`) over its unix socket.
//!
//! The messages are written by hand with their tags from the kubelet's
//! `k8s.io/kubelet/pkg/apis/podresources/v1/api.proto` (no protoc at build time); fields gpulse
//! does not read (CPU ids, memory, topology, dynamic resources) are left out, and prost skips
//! them on the wire. The tests' in-process server uses the same messages.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Endpoint, Uri};

/// `rpc List`'s full path.
pub const LIST_PATH: &str = "/v1.PodResourcesLister/List";

/// `ListPodResourcesRequest {}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodResourcesRequest {}

/// `ListPodResourcesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodResourcesResponse {
    #[prost(message, repeated, tag = "1")]
    pub pod_resources: Vec<PodResources>,
}

/// `PodResources`: one pod.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(message, repeated, tag = "3")]
    pub containers: Vec<ContainerResources>,
}

/// `ContainerResources`: one container of the pod.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub devices: Vec<ContainerDevices>,
}

/// `ContainerDevices`: the devices of one resource assigned to the container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerDevices {
    #[prost(string, tag = "1")]
    pub resource_name: String,
    #[prost(string, repeated, tag = "2")]
    pub device_ids: Vec<String>,
}

/// Why a `List` failed (the message is for people; the collector reports it as data).
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot connect to the pod-resources socket {path}: {error}")]
    Connect { path: String, error: String },
    #[error("pod-resources List failed: {0}")]
    Status(String),
    #[error("pod-resources List did not answer within {0:?}")]
    Timeout(Duration),
}

/// Calls `List` on the kubelet socket at `socket`: connect and answer within `timeout`, an
/// answer of at most `max_bytes`.
pub async fn list(
    socket: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<ListPodResourcesResponse, ListError> {
    match tokio::time::timeout(timeout, list_inner(socket, timeout, max_bytes)).await {
        Ok(result) => result,
        Err(_) => Err(ListError::Timeout(timeout)),
    }
}

async fn list_inner(
    socket: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<ListPodResourcesResponse, ListError> {
    let path = PathBuf::from(socket);
    let connect_error = |error: String| ListError::Connect {
        path: socket.to_owned(),
        error,
    };
    // The URI is required by the API but unused: the connector dials the socket.
    let endpoint = Endpoint::from_static("http://kubelet.invalid")
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .map_err(|e| connect_error(crate::collect::error_chain(&e)))?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_bytes);
    grpc.ready()
        .await
        .map_err(|e| connect_error(crate::collect::error_chain(&e)))?;
    let codec =
        tonic_prost::ProstCodec::<ListPodResourcesRequest, ListPodResourcesResponse>::default();
    let response = grpc
        .unary(
            tonic::Request::new(ListPodResourcesRequest {}),
            PathAndQuery::from_static(LIST_PATH),
            codec,
        )
        .await
        .map_err(|status| {
            ListError::Status(format!("{:?}: {}", status.code(), status.message()))
        })?;
    Ok(response.into_inner())
}

/// The GPU or MIG UUID a device plugin's id names, or `None` for a device that is not an
/// NVIDIA GPU. The NVIDIA device plugin uses the UUID itself (`GPU-…`, `MIG-…`), and with
/// time-slicing or MPS a replica suffix (`GPU-…::3`), stripped here: every replica is the GPU.
pub fn gpu_device_id(resource_name: &str, id: &str) -> Option<String> {
    if !resource_name.starts_with("nvidia.com/") {
        return None;
    }
    let id = id.split("::").next().unwrap_or(id).trim();
    let uuid_like = (id.starts_with("GPU-") || id.starts_with("MIG-"))
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/' || b == b'_');
    uuid_like.then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_gpu_or_mig_uuids_with_the_replica_suffix_stripped() {
        let gpu = "GPU-00000000-fake-4000-8000-000000000000";
        assert_eq!(gpu_device_id("nvidia.com/gpu", gpu).as_deref(), Some(gpu));
        assert_eq!(
            gpu_device_id("nvidia.com/gpu", &format!("{gpu}::3")).as_deref(),
            Some(gpu)
        );
        assert_eq!(
            gpu_device_id("nvidia.com/mig-1g.10gb", "MIG-abc-def").as_deref(),
            Some("MIG-abc-def")
        );
        assert_eq!(gpu_device_id("nvidia.com/gpu", "0"), None);
        assert_eq!(gpu_device_id("amd.com/gpu", gpu), None);
        assert_eq!(gpu_device_id("nvidia.com/gpu", "GPU-a b"), None);
    }
}
