//! The environment identity (issue 13): the Akash lease variables the provider injects become
//! `/v1/snapshot`'s `identity`, `gpulse_akash_info` and OTLP resource attributes, read once by
//! `Parts::load`; outside Akash there is no identity and no series.

use crate::agent::Agent;

/// The variables an Akash provider injects into every container of a lease.
const LEASE: [(&str, &str); 6] = [
    ("AKASH_OWNER", "akash1tenant"),
    ("AKASH_PROVIDER", "akash1provider"),
    ("AKASH_DEPLOYMENT_SEQUENCE", "4242"),
    ("AKASH_GROUP_SEQUENCE", "1"),
    ("AKASH_ORDER_SEQUENCE", "1"),
    ("AKASH_CLUSTER_PUBLIC_HOSTNAME", "provider.example.com"),
];

#[test]
fn an_akash_lease_is_served_in_the_snapshot_and_an_info_series() {
    let mut env: Vec<(&str, &str)> = LEASE.to_vec();
    env.push(("GPULSE_GPU_ENABLED", "false"));
    let agent = Agent::start(["run"], env);
    let snap: serde_json::Value = serde_json::from_str(&agent.get_ok("/v1/snapshot")).unwrap();
    let akash = &snap["identity"]["akash"];
    assert_eq!(akash["owner"], "akash1tenant");
    assert_eq!(akash["provider"], "akash1provider");
    assert_eq!(akash["dseq"], "4242");
    assert_eq!(akash["gseq"], "1");
    assert_eq!(akash["oseq"], "1");
    assert_eq!(akash["cluster_public_hostname"], "provider.example.com");
    let metrics = agent.get_ok("/metrics");
    assert!(
        metrics.contains(
            "gpulse_akash_info{owner=\"akash1tenant\",provider=\"akash1provider\",dseq=\"4242\",\
             gseq=\"1\",oseq=\"1\",cluster_public_hostname=\"provider.example.com\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn outside_akash_there_is_no_identity_and_no_series() {
    let agent = Agent::start(["run"], [("GPULSE_GPU_ENABLED", "false")]);
    let snap: serde_json::Value = serde_json::from_str(&agent.get_ok("/v1/snapshot")).unwrap();
    assert!(snap["identity"].is_object(), "{snap}");
    assert!(snap["identity"]["akash"].is_null(), "{snap}");
    assert!(!agent.get_ok("/metrics").contains("gpulse_akash_info"));
}

#[test]
fn the_lease_is_read_once_by_the_loader() {
    let env = |name: &str| {
        LEASE
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    };
    let parts = gpulse::app::Parts::load(None, &[], env).unwrap();
    let lease = parts.config.agent.identity.akash.clone().unwrap();
    assert_eq!(lease.dseq.as_deref(), Some("4242"));
    // The store built from that config serves the same identity.
    let store = gpulse::app::new_store(&parts.config, false);
    assert_eq!(store.snapshot().identity.akash, Some(lease));
}
