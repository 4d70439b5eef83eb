//! Integration tests for gpulse; one module per area (ripgrep style: add a test where it fits).

// Test helpers may panic freely: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The Akash SDL example: ACT pricing, a token on the public port, validated by .ci/run.
mod akash;
// The HTTP API in-process (demo GPUs): endpoints, codes, bounds, shutdown.
mod api;
// `gpulse bench`: the load test against the demo server, failing servers, the real llama-server.
mod bench;
// The binary's command line and config errors.
mod cli;
// The man pages and shell completions the .deb ships, generated from the CLI.
mod manpages;
// What is built to install gpulse: the image's Dockerfile and build context, the .deb's assets.
mod packaging;
// Hostile start-ups: environment bytes, a dead stderr, edge values, a fuzzed config loader.
mod faults_config;
// HTTPS and bearer tokens: serving, refusing, reloading on file change and SIGHUP.
mod tls;
// Hostile HTTP clients: silent and slowloris floods, FIFO credential files, fuzzed requests.
mod faults_http;
// The real nvml-wrapper path against the fake NVML (values, omission, hang, recovery).
mod nvml;
// The field-values path: ECC, retired pages, replays and NVLink totals, their fallbacks, the
// per-link NVLink counters read only when a total moves.
mod nvml_fields;
// OTLP push into in-process gRPC and HTTP receivers.
mod otlp;
// The Kubernetes node condition against a fake API server.
mod node_condition;
// `gpulse health clear` and POST /v1/health/clear: sticky reasons, tokens, the event.
mod health_clear;
// Per-pod attribution: an in-process kubelet pod-resources server, a fake /proc, the fake NVML.
mod k8s;
// The event log: OTLP log records through a receiver restart, kill -9, the bound, /v1/events paging.
mod events;
// OTLP push into a real third-party receiver (rotel from PyPI).
mod otlp_e2e;
// The OpenTelemetry semantic conventions the hw.* names follow: names, units, kinds, values.
mod semconv;
// Signed score reports: /v1/identity, /v1/report, /v1/reports and `gpulse verify` on them.
mod report;
// The score's evidence ledger on disk: kill -9 during writes, restarts, an unusable state dir.
mod ledger;
// The /metrics golden file and naming rules.
mod exposition;
// /metrics for large nodes: one render per snapshot shared by scrapers, gzip.
mod metrics_cache;
// docs/metrics.md, generated from the metric catalog.
mod metrics_doc;
// docs/scoring.md's worked example, computed by gpulse::score::evaluate.
mod scoring_doc;
// dcgm-exporter compatibility: Grafana dashboard 12239's metrics, dcgm units and labels.
mod dcgm;
// `gpulse scan` on the fake NVML: verdicts and exit codes.
mod scan;
// GPU faults end to end: a hung NVML as a health reason, lost and vanished GPUs, call timing.
mod faults_gpu;
// House rules: module docs, import boundaries, README vs CI.
mod tidy;
// The docs: the example config in docs/configuration.md, relative links, metric references.
mod docs;
// Loud skips of end-to-end tests whose server or tool is not installed.
mod skip;
// Probes of inference servers: states per kind, hostile targets, outages.
mod probe;
// Synthetic inference requests: streaming per kind, hostile generations, https, tokens.
mod inference;
// The systemd unit: systemd-analyze verify and security, its privileges, the sysusers snippet.
mod systemd_unit;
// Under systemd: READY/WATCHDOG/STOPPING on a fake notify socket, $STATE_DIRECTORY, the kmsg warning.
mod systemd_run;
// Xid capture: NVML events, the kernel log, return codes; de-duplication.
mod xid;
// `gpulse wrap -- CMD`: exit codes, signal forwarding, job events across restarts, auto probe.
mod wrap;
// Hostile state and input: a job state file with bad bytes; fuzzing the journal and Xid parsers.
mod faults_state;
// Shared helpers: the fake libnvidia-ml.so.1 and the real binary on a free port.
mod agent;
// Shared helper: the agent in-process on a free port.
#[path = "../common/fake_nvml.rs"]
mod fake_nvml;
mod faults_signal;
// The environment identity: the Akash lease in /v1/snapshot, /metrics and OTLP.
mod identity;
mod inproc;
mod layout;
// Real llama.cpp and MLServer processes probed end to end (built by .ci/llama-server.sh, .ci/mlserver.sh).
mod real_servers;
// A real Prometheus scraping the agent on the fake NVML; promtool on the live /metrics.
mod prometheus_e2e;
// The fleet recording rules: promtool check and unit tests, the families they read, docs/fleet.md.
mod score_rules;
// The alerting rules: promtool check and unit tests (a firing and a quiet case per alert), runbooks.
mod alert_rules;
// PromQL of the dashboards and rules: parsed, and checked against the catalog's series and labels.
mod promql;
// The Grafana dashboards: generated from a panel table, valid, and every query answered by Prometheus.
mod dashboards;
