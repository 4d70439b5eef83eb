//! Akash leases from namespace labels: the Akash provider runs each lease in a namespace
//! labelled `akash.network/lease.id.{owner,dseq,gseq,oseq,provider}`; with
//! `kubernetes.lease_labels` on (and RBAC to `get` namespaces), each owner's namespace is read
//! from the Kubernetes API. A namespace that cannot be read, or is no lease, has no lease.

use std::time::Duration;

use super::api;
use crate::config::KubernetesConfig;
use crate::model::NamespaceLease;

/// Largest namespace object read (one is a few KiB).
const MAX_BODY: usize = 256 << 10;

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
    let base = api::base_url(&config.api_url, |name| std::env::var(name).ok()).ok_or(
        "no Kubernetes API: set kubernetes.api_url, or run in a pod (KUBERNETES_SERVICE_HOST)",
    )?;
    let token = api::token(&config.api_token_file)?;
    let client = api::client(&config.api_ca_file, &base, timeout)?;
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
