//! `[kubernetes]`: per-pod attribution from the kubelet's pod-resources socket, and the node
//! condition gpulse writes through the Kubernetes API (`export::node_condition`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration};

/// `[kubernetes]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// The kubelet's pod-resources socket (usually
    /// `/var/lib/kubelet/pod-resources/kubelet.sock`, mounted into the pod); empty turns
    /// attribution off. Not auto-detected: reading it is a grant the operator makes.
    pub pod_resources_socket: String,
    /// How often the kubelet is asked which pod holds which device.
    pub interval: HumanDuration,
    /// Deadline of one whole cycle (connect, `List`, the `/proc` reads).
    pub timeout: HumanDuration,
    /// Most (device, container) assignments kept; the rest are dropped and counted.
    pub max_owners: u64,
    /// Largest `List` answer accepted, in bytes.
    pub max_message_bytes: u64,
    /// Where `/proc` is (a host's, in a container with `hostPID`); GPU processes are matched
    /// to their pod through `<proc_root>/<pid>/cgroup`.
    pub proc_root: String,
    /// Read each owner's namespace from the Kubernetes API for its Akash lease labels
    /// (`akash.network/lease.id.*`); needs RBAC to `get` namespaces.
    pub lease_labels: bool,
    /// Most Akash leases with a score of their own (the most recently seen; the score's
    /// per-lease view), and most leases one ledger minute accounts.
    pub max_leases: u64,
    /// Write the node's GPU health as a condition on its Node object (needs `agent.node_name`
    /// and RBAC: `patch` on `nodes/status`).
    pub node_condition: bool,
    /// The condition's `type`.
    pub node_condition_type: String,
    /// How often health is compared with the condition written.
    pub node_condition_interval: HumanDuration,
    /// The condition is written again after this long even when unchanged.
    pub node_condition_resync: HumanDuration,
    /// The Kubernetes API's base URL (lease labels, node condition); empty: in-cluster, from
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`.
    pub api_url: String,
    /// The bearer token for the API (the pod's service-account token, re-read before every
    /// request: projected tokens rotate); empty sends none.
    pub api_token_file: String,
    /// The CA that signs the API's certificate (https), besides the built-in roots.
    pub api_ca_file: String,
    /// Deadline of one node-condition request, answer included.
    pub api_timeout: HumanDuration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            pod_resources_socket: String::new(),
            interval: HumanDuration::secs(30),
            timeout: HumanDuration::secs(5),
            max_owners: 256,
            max_message_bytes: 4 << 20,
            proc_root: "/proc".to_owned(),
            lease_labels: false,
            max_leases: 64,
            node_condition: false,
            node_condition_type: "GpulseGPUHealthy".to_owned(),
            node_condition_interval: HumanDuration::secs(30),
            node_condition_resync: HumanDuration::secs(300),
            api_url: String::new(),
            api_token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".to_owned(),
            api_ca_file: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".to_owned(),
            api_timeout: HumanDuration::secs(5),
        }
    }
}

impl KubernetesConfig {
    /// Whether attribution is on.
    pub fn enabled(&self) -> bool {
        !self.pod_resources_socket.trim().is_empty()
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let bounds = [
            ("kubernetes.max_owners", self.max_owners, 1, 100_000),
            ("kubernetes.max_leases", self.max_leases, 1, 1024),
            (
                "kubernetes.max_message_bytes",
                self.max_message_bytes,
                1024,
                256 << 20,
            ),
        ];
        for (key, value, min, max) in bounds {
            if value < min || value > max {
                return Err(ConfigError::at_key(
                    key,
                    format!("{value} is out of range; use {min} to {max}"),
                ));
            }
        }
        let ty = &self.node_condition_type;
        // A condition type is a CamelCase word (NodeReady, GpulseGPUHealthy) or a qualified
        // name; anything else the API server refuses on every PATCH.
        let type_ok = !ty.is_empty()
            && ty.len() <= 316
            && ty
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'));
        if !type_ok {
            return Err(ConfigError::at_key(
                "kubernetes.node_condition_type",
                format!(
                    "{ty:?} is not a condition type; use letters and digits, e.g. GpulseGPUHealthy"
                ),
            ));
        }
        let (interval, resync) = (self.node_condition_interval.0, self.node_condition_resync.0);
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&interval) {
            return Err(ConfigError::at_key(
                "kubernetes.node_condition_interval",
                format!(
                    "{} is out of range; use 1s to 1h",
                    self.node_condition_interval
                ),
            ));
        }
        if resync < interval || resync > Duration::from_secs(86_400) {
            return Err(ConfigError::at_key(
                "kubernetes.node_condition_resync",
                format!(
                    "{} is out of range; use node_condition_interval ({}) to 24h",
                    self.node_condition_resync, self.node_condition_interval
                ),
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&self.api_timeout.0) {
            return Err(ConfigError::at_key(
                "kubernetes.api_timeout",
                format!("{} is out of range; use 100ms to 60s", self.api_timeout),
            ));
        }
        let server = self.api_url.trim();
        if !(server.is_empty() || server.starts_with("https://") || server.starts_with("http://")) {
            return Err(ConfigError::at_key(
                "kubernetes.api_url",
                format!("{server:?} is not a URL; use https://HOST:PORT (or empty: in-cluster)"),
            ));
        }
        if self.enabled() && self.proc_root.trim().is_empty() {
            return Err(ConfigError::at_key(
                "kubernetes.proc_root",
                "must name a directory (usually /proc) when pod_resources_socket is set",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_bounds_name_their_key() {
        let config = KubernetesConfig::default();
        assert!(!config.enabled());
        assert!(config.check().is_ok());
        let zero = KubernetesConfig {
            max_owners: 0,
            ..KubernetesConfig::default()
        };
        assert_eq!(
            zero.check().unwrap_err().key.as_deref(),
            Some("kubernetes.max_owners")
        );
        let no_proc = KubernetesConfig {
            pod_resources_socket: "/run/k.sock".into(),
            proc_root: " ".into(),
            ..KubernetesConfig::default()
        };
        assert_eq!(
            no_proc.check().unwrap_err().key.as_deref(),
            Some("kubernetes.proc_root")
        );
    }
}
