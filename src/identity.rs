//! Who runs this node, read from the environment once at load ([`Identity::from_env`], a pure
//! function of an environment lookup), so every exporter labels the data the same way.
//!
//! Akash: the provider injects `AKASH_OWNER`, `AKASH_PROVIDER`, `AKASH_DEPLOYMENT_SEQUENCE`,
//! `AKASH_GROUP_SEQUENCE`, `AKASH_ORDER_SEQUENCE` and `AKASH_CLUSTER_PUBLIC_HOSTNAME` into every
//! container of a lease (akash-network/provider, `cluster/kube/builder`), so a tenant gets the
//! lease identity without configuring anything. It becomes OTLP resource attributes
//! (`akash.*`), the `identity` object of `/v1/snapshot` and `gpulse_akash_info`.
//!
//! Cloud instance identity is not read: no cloud injects a reliable variable into every
//! process (`AWS_REGION` and the like are set by users and SDK configs, not by the instance),
//! and the metadata servers are network calls this loader does not make.
//!
//! Depends on nothing else in the crate.

/// Longest value kept, in bytes: the variables are ids and a hostname; anything longer is not
/// one of them and would only inflate every series' labels.
pub const MAX_VALUE_BYTES: usize = 256;

/// The environment identity of this process; empty (`akash: None`) outside Akash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub akash: Option<AkashLease>,
}

/// The Akash lease this container belongs to; each field is `None` when its variable is unset
/// or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AkashLease {
    /// `AKASH_OWNER`: the tenant's account address.
    pub owner: Option<String>,
    /// `AKASH_PROVIDER`: the provider's account address.
    pub provider: Option<String>,
    /// `AKASH_DEPLOYMENT_SEQUENCE` (dseq).
    pub dseq: Option<String>,
    /// `AKASH_GROUP_SEQUENCE` (gseq).
    pub gseq: Option<String>,
    /// `AKASH_ORDER_SEQUENCE` (oseq).
    pub oseq: Option<String>,
    /// `AKASH_CLUSTER_PUBLIC_HOSTNAME`: the provider's public hostname.
    pub cluster_public_hostname: Option<String>,
}

/// One attribute of the identity: the OTLP resource attribute, the Prometheus label (of
/// `gpulse_akash_info`), the JSON field, and the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub otel: &'static str,
    pub prom: &'static str,
    pub value: &'a str,
}

impl Identity {
    /// Reads the identity through `env` (a variable's value, `None` when unset). Values are
    /// trimmed, control characters dropped and clipped to [`MAX_VALUE_BYTES`]; an empty value
    /// counts as unset. Akash counts as present when any of its variables is set.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        let read = |name: &str| env(name).and_then(|v| clean(&v));
        let lease = AkashLease {
            owner: read("AKASH_OWNER"),
            provider: read("AKASH_PROVIDER"),
            dseq: read("AKASH_DEPLOYMENT_SEQUENCE"),
            gseq: read("AKASH_GROUP_SEQUENCE"),
            oseq: read("AKASH_ORDER_SEQUENCE"),
            cluster_public_hostname: read("AKASH_CLUSTER_PUBLIC_HOSTNAME"),
        };
        Self {
            akash: (lease != AkashLease::default()).then_some(lease),
        }
    }

    /// Every attribute that is set, in a fixed order.
    pub fn attributes(&self) -> Vec<Attribute<'_>> {
        let Some(a) = &self.akash else {
            return Vec::new();
        };
        AkashLease::FIELDS
            .iter()
            .zip(a.values())
            .filter_map(|(&(otel, prom), value)| value.map(|value| Attribute { otel, prom, value }))
            .collect()
    }
}

impl AkashLease {
    /// `(OTLP resource attribute, Prometheus label)` per field, in [`Self::values`] order.
    pub const FIELDS: [(&'static str, &'static str); 6] = [
        ("akash.owner", "owner"),
        ("akash.provider", "provider"),
        ("akash.deployment.dseq", "dseq"),
        ("akash.group.gseq", "gseq"),
        ("akash.order.oseq", "oseq"),
        ("akash.cluster.public_hostname", "cluster_public_hostname"),
    ];

    /// The values in [`Self::FIELDS`] order.
    pub fn values(&self) -> [Option<&str>; 6] {
        [
            self.owner.as_deref(),
            self.provider.as_deref(),
            self.dseq.as_deref(),
            self.gseq.as_deref(),
            self.oseq.as_deref(),
            self.cluster_public_hostname.as_deref(),
        ]
    }
}

/// Trimmed, without control characters (a label value with a newline breaks nothing in the
/// encoders, but has no place in an id), clipped at a character boundary; `None` when empty.
fn clean(value: &str) -> Option<String> {
    let mut out: String = value.trim().chars().filter(|c| !c.is_control()).collect();
    if out.len() > MAX_VALUE_BYTES {
        let mut end = MAX_VALUE_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn outside_akash_the_identity_is_empty() {
        let id = Identity::from_env(env(&[("HOME", "/root"), ("AKASH_OWNER", "  ")]));
        assert_eq!(id, Identity::default());
        assert!(id.attributes().is_empty());
    }

    #[test]
    fn the_lease_variables_become_attributes() {
        let id = Identity::from_env(env(&[
            ("AKASH_OWNER", "akash1owner"),
            ("AKASH_PROVIDER", "akash1provider"),
            ("AKASH_DEPLOYMENT_SEQUENCE", "1234567"),
            ("AKASH_GROUP_SEQUENCE", "1"),
            ("AKASH_ORDER_SEQUENCE", "1"),
            ("AKASH_CLUSTER_PUBLIC_HOSTNAME", " provider.example.com\n"),
        ]));
        let attrs: Vec<(&str, &str)> = id.attributes().iter().map(|a| (a.otel, a.value)).collect();
        assert_eq!(
            attrs,
            [
                ("akash.owner", "akash1owner"),
                ("akash.provider", "akash1provider"),
                ("akash.deployment.dseq", "1234567"),
                ("akash.group.gseq", "1"),
                ("akash.order.oseq", "1"),
                ("akash.cluster.public_hostname", "provider.example.com"),
            ]
        );
    }

    #[test]
    fn a_partial_lease_keeps_what_is_set_and_long_values_are_clipped() {
        let long = "é".repeat(300);
        let id = Identity::from_env(env(&[
            ("AKASH_DEPLOYMENT_SEQUENCE", "42"),
            ("AKASH_PROVIDER", &long),
        ]));
        let lease = id.akash.clone().unwrap();
        assert_eq!(lease.dseq.as_deref(), Some("42"));
        assert_eq!(lease.owner, None);
        let provider = lease.provider.unwrap();
        assert!(provider.len() <= MAX_VALUE_BYTES && provider.starts_with('é'));
        assert_eq!(id.attributes().len(), 2);
    }
}
