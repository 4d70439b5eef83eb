//! `[kubernetes]`: per-pod attribution from the kubelet's pod-resources socket.

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
    /// The Kubernetes API's base URL; empty: in-cluster (`KUBERNETES_SERVICE_HOST`/`_PORT`).
    pub api_url: String,
    /// The bearer token for the API (the pod's service-account token); empty sends none.
    pub api_token_file: String,
    /// The CA that signs the API's certificate (https), besides the built-in roots.
    pub api_ca_file: String,
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
            api_url: String::new(),
            api_token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".to_owned(),
            api_ca_file: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".to_owned(),
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
