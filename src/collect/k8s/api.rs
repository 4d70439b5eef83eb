//! Access to the Kubernetes API, shared by the lease reader (`leases`) and the node condition
//! (`export::node_condition`): where the API is (`kubernetes.api_url`, or in a pod the
//! address the kubelet puts in its environment), the bearer token (re-read each time: projected
//! service-account tokens rotate), and a client that trusts the cluster's CA.

use std::time::Duration;

use crate::config::files::{DevNull, read_small_file};

/// The variables the kubelet sets in every pod: the API service's address and port.
const IN_CLUSTER_ENV: (&str, &str) = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT");

/// The API's base URL (no trailing `/`): `api_url` (`kubernetes.api_url`), or
/// `https://HOST:PORT` from the in-cluster variables `env` reads (port 443 when unset; an IPv6
/// host in brackets). `None` when neither names one.
pub fn base_url(api_url: &str, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let url = api_url.trim().trim_end_matches('/');
    if !url.is_empty() {
        return Some(url.to_owned());
    }
    let host = env(IN_CLUSTER_ENV.0).filter(|h| !h.trim().is_empty())?;
    let port = env(IN_CLUSTER_ENV.1).unwrap_or_else(|| "443".to_owned());
    let host = host.trim();
    Some(if host.contains(':') {
        format!("https://[{host}]:{}", port.trim())
    } else {
        format!("https://{host}:{}", port.trim())
    })
}

/// The bearer token in `token_file` (`kubernetes.api_token_file`), trimmed, or `None` when
/// it is empty. Read with the same bounds as every credential file gpulse reads.
pub fn token(token_file: &str) -> Result<Option<String>, String> {
    let file = token_file.trim();
    if file.is_empty() {
        return Ok(None);
    }
    let (bytes, _) = read_small_file(std::path::Path::new(file), DevNull::Refused)
        .map_err(|e| format!("kubernetes.api_token_file {file}: {e}"))?;
    Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned()))
}

/// A client for the API at `base`: the built-in roots plus `ca_file`
/// (`kubernetes.api_ca_file`) for `https://`, no redirects followed, no proxy, every request
/// within `timeout`.
pub fn client(ca_file: &str, base: &str, timeout: Duration) -> Result<reqwest::Client, String> {
    let ca = if base.starts_with("https://") {
        ca_file.trim()
    } else {
        ""
    };
    crate::collect::probe::tls::install_crypto_provider();
    let tls = crate::collect::probe::tls::client_config(ca, false)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build the Kubernetes API client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_is_the_configured_one_else_the_pods_service_address() {
        let none = |_: &str| None;
        assert_eq!(base_url("", none), None);
        for (host, url) in [
            ("10.96.0.1", "https://10.96.0.1:443"),
            ("fd00::1", "https://[fd00::1]:443"),
        ] {
            let env = |name: &str| (name == IN_CLUSTER_ENV.0).then(|| host.to_owned());
            assert_eq!(base_url("", env).as_deref(), Some(url));
        }
        let blank = |name: &str| (name == IN_CLUSTER_ENV.0).then(|| " ".to_owned());
        assert_eq!(base_url("", blank), None);
        assert_eq!(
            base_url("https://k8s.example:6443/", none).as_deref(),
            Some("https://k8s.example:6443")
        );
    }
}
