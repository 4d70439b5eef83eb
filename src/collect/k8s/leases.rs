//! Akash leases from namespace labels: the Akash provider runs each lease in a namespace
//! labelled `akash.network/lease.id.{owner,dseq,gseq,oseq,provider}`; with
//! `kubernetes.lease_labels` on (and RBAC to `get` namespaces), each owner's namespace is read
//! from the Kubernetes API. A namespace that cannot be read, or is no lease, has no lease.

use std::time::Duration;

use crate::config::KubernetesConfig;
use crate::model::NamespaceLease;

/// Largest namespace object read (one is a few KiB).
const MAX_BODY: usize = 256 << 10;

/// In-cluster service-account files.
const IN_CLUSTER_ENV: (&str, &str) = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT");

/// The API's base URL: `kubernetes.api_url`, or the in-cluster address from the environment.
pub fn api_base(config: &KubernetesConfig) -> Option<String> {
    let url = config.api_url.trim().trim_end_matches('/');
    if !url.is_empty() {
        return Some(url.to_owned());
    }
    let host = std::env::var(IN_CLUSTER_ENV.0).ok()?;
    let port = std::env::var(IN_CLUSTER_ENV.1).unwrap_or_else(|_| "443".to_owned());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!("https://{host}:{port}"))
}

/// Whether `name` is a valid namespace name (an RFC 1123 label), so it is safe in a URL path.
pub fn valid_namespace(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The lease a namespace object's labels name, if any (pure: the object's JSON in).
pub fn parse_namespace(namespace: &str, body: &[u8]) -> Option<NamespaceLease> {
    let object: serde_json::Value = serde_json::from_slice(body).ok()?;
    let labels = object.get("metadata")?.get("labels")?.as_object()?;
    let label = |key: &str| {
        labels
            .get(&format!("akash.network/lease.id.{key}"))
            .and_then(|v| v.as_str())
            .map(|v| {
                v.chars()
                    .filter(|c| !c.is_control())
                    .take(128)
                    .collect::<String>()
            })
    };
    let lease = NamespaceLease {
        namespace: namespace.to_owned(),
        owner: label("owner"),
        dseq: label("dseq"),
        gseq: label("gseq"),
        oseq: label("oseq"),
        provider: label("provider"),
    };
    (lease.owner.is_some() || lease.dseq.is_some()).then_some(lease)
}

/// Reads the leases of `namespaces` within `timeout`; a namespace that fails is left out.
/// `Err` when the client cannot be set up (no API address, unreadable token or CA file).
pub async fn read(
    config: &KubernetesConfig,
    namespaces: &[String],
    timeout: Duration,
) -> Result<Vec<NamespaceLease>, String> {
    let base = api_base(config).ok_or(
        "no Kubernetes API: set kubernetes.api_url, or run in a pod (KUBERNETES_SERVICE_HOST)",
    )?;
    let token = if config.api_token_file.trim().is_empty() {
        None
    } else {
        let (bytes, _) = crate::config::files::read_small_file(
            std::path::Path::new(config.api_token_file.trim()),
            crate::config::files::DevNull::Refused,
        )
        .map_err(|e| format!("kubernetes.api_token_file {}: {e}", config.api_token_file))?;
        Some(String::from_utf8_lossy(&bytes).trim().to_owned())
    };
    let ca = if base.starts_with("https://") {
        config.api_ca_file.trim()
    } else {
        ""
    };
    let tls = crate::collect::probe::tls::client_config(ca, false)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build the Kubernetes API client: {e}"))?;
    let mut out = Vec::new();
    let all = async {
        for namespace in namespaces.iter().filter(|n| valid_namespace(n)) {
            let url = format!("{base}/api/v1/namespaces/{namespace}");
            let mut request = client.get(&url);
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let Ok(response) = request.send().await else {
                continue;
            };
            if !response.status().is_success() {
                continue;
            }
            let Ok(body) = response.bytes().await else {
                continue;
            };
            if body.len() <= MAX_BODY
                && let Some(lease) = parse_namespace(namespace, &body)
            {
                out.push(lease);
            }
        }
    };
    // What was read before the deadline is kept.
    let _ = tokio::time::timeout(timeout, all).await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_namespace_names_its_lease_and_others_none() {
        let body = br#"{"metadata":{"name":"abc","labels":{"akash.network":"true",
            "akash.network/lease.id.owner":"akash1owner","akash.network/lease.id.dseq":"123",
            "akash.network/lease.id.gseq":"1","akash.network/lease.id.oseq":"1",
            "akash.network/lease.id.provider":"akash1prov"}}}"#;
        let lease = parse_namespace("abc", body).unwrap();
        assert_eq!(lease.owner.as_deref(), Some("akash1owner"));
        assert_eq!(lease.dseq.as_deref(), Some("123"));
        assert_eq!(lease.provider.as_deref(), Some("akash1prov"));
        assert_eq!(
            parse_namespace("x", br#"{"metadata":{"labels":{"a":"b"}}}"#),
            None
        );
        assert_eq!(parse_namespace("x", b"garbage"), None);
        assert!(valid_namespace("akash-abc123"));
        for bad in ["", "a/b", "../x", "A", "-a", "a?b=c", &"a".repeat(64)] {
            assert!(!valid_namespace(bad), "{bad}");
        }
    }
}
