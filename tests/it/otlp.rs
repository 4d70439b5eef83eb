//! OTLP push into in-process receivers built from `opentelemetry-proto` (gRPC and HTTP):
//! names, units, attributes, temporality and values from the fake NVML, completeness against
//! /metrics, and a dead collector that must not hurt the agent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use prost::Message;

use gpulse::app::GpuSource;
use gpulse::config::{Config, HumanDuration, ProbeConfig, ProbeKind};
use gpulse::export::catalog::{self, Kind, OtlpHistogram};
use gpulse::export::otlp::{OtlpProtocol, OtlpSettings};
use gpulse::model::JobLog;

use crate::fake_nvml::FakeNvml;

/// Everything a receiver got.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<ExportMetricsServiceRequest>>>);

impl Sink {
    fn requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

async fn grpc_receiver() -> (SocketAddr, Sink) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = Sink::default();
    let service = MetricsServiceServer::new(sink.clone());
    // Events go to the same collector as log records: taken, so they are acknowledged.
    let logs = LogsServiceServer::new(LogsSink::new());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .add_service(logs)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, sink)
}

async fn http_receiver() -> (SocketAddr, Sink) {
    async fn handle(State(sink): State<Sink>, body: Bytes) -> impl axum::response::IntoResponse {
        sink.0
            .lock()
            .unwrap()
            .push(ExportMetricsServiceRequest::decode(body).unwrap());
        (
            [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
            ExportMetricsServiceResponse {
                partial_success: None,
            }
            .encode_to_vec(),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = Sink::default();
    // Events go to the same collector as log records: taken, so they are acknowledged.
    let logs = axum::Router::new()
        .route("/v1/logs", axum::routing::post(handle_logs))
        .with_state(LogsSink::new());
    let app = axum::Router::new()
        .route("/v1/metrics", axum::routing::post(handle))
        .with_state(sink.clone())
        .merge(logs);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, sink)
}

use crate::inproc::Running;

async fn start_agent(fake: &FakeNvml, otlp: OtlpSettings, grace: Duration) -> Running {
    let mut config = Config::default();
    config.agent.node_name = "node-7".to_owned();
    config
        .agent
        .labels
        .insert("akash.provider".to_owned(), "akash1provider".to_owned());
    // An Akash lease as `Parts::load` reads it; `[agent] labels` (above) wins over it.
    config.agent.identity = gpulse::identity::Identity::from_env(|name| match name {
        "AKASH_PROVIDER" => Some("akash1fromenv".to_owned()),
        "AKASH_DEPLOYMENT_SEQUENCE" => Some("99".to_owned()),
        "AKASH_OWNER" => Some("akash1tenant".to_owned()),
        _ => None,
    });
    config.agent.shutdown_grace_period = HumanDuration(grace);
    config.gpu.interval = HumanDuration(Duration::from_millis(100));
    config.gpu.nvml_library = fake.lib_path().display().to_string();
    config.gpu.pcie_throughput = true;
    config.host.interval = HumanDuration(Duration::from_millis(100));
    config.host.per_cpu = true;
    config.health.kmsg_path = String::new();
    // The score every second, with a price and a claim, so the cost and claim families have
    // points.
    config.score.tick = HumanDuration(Duration::from_secs(1));
    config.score.price_per_hour = 1.5;
    config.score.expect.gpu_count = 2;
    // A TCP probe whose target listens, goes away and listens again: an outage and its
    // recovery, so every probe family has a point. (A target refused before it was ever up
    // is `starting`, not an outage.)
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap();
    let mut probe = ProbeConfig::new("flappy", ProbeKind::Tcp, &port.to_string());
    probe.interval = HumanDuration(Duration::from_millis(100));
    config.probe.push(probe);
    // The demo inference server, with synthetic requests: the inference families.
    // The sender is leaked: the demo server stops when it is dropped, and it must outlive
    // this set-up function (the test process ends it).
    let (keep, stop) = tokio::sync::watch::channel(false);
    std::mem::forget(keep);
    let demo = gpulse::demo::server::start(stop).await.unwrap();
    let mut llm = ProbeConfig::new("llm", ProbeKind::Vllm, &format!("http://{demo}"));
    llm.interval = HumanDuration(Duration::from_millis(100));
    llm.inference = true;
    llm.inference_interval = HumanDuration(Duration::from_millis(200));
    llm.metrics = true;
    llm.metrics_interval = HumanDuration(Duration::from_millis(200));
    config.probe.push(llm);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let listener = tokio::net::TcpListener::bind(port).await.unwrap();
        loop {
            let _ = listener.accept().await;
        }
    });
    // A kubelet that gave GPU 0 to one container whose process runs pid 1000: the
    // attribution families (k8s.* attributes). The directory is kept for the test process.
    let dir = tempfile::tempdir().unwrap().keep();
    let kubelet = crate::k8s::FakeKubelet {
        answer: Arc::new(Mutex::new(crate::k8s::Answer::List(
            crate::k8s::ListPodResourcesResponse {
                pod_resources: vec![crate::k8s::pod(
                    "serving",
                    "train-0",
                    "trainer",
                    &[crate::k8s::fake_uuid(0)],
                )],
            },
        ))),
    };
    let socket = crate::k8s::serve(&dir, kubelet).await;
    let proc_root = crate::k8s::fake_proc(&dir, &[1000]);
    config.kubernetes = crate::k8s::config(fake, &socket, &proc_root).kubernetes;
    // Its namespace is an Akash lease's, read from a fake Kubernetes API.
    let (api, token) = crate::k8s::serve_api(&dir).await;
    config.kubernetes.lease_labels = true;
    config.kubernetes.api_url = api;
    config.kubernetes.api_token_file = token.display().to_string();
    // A wrapped job (as `gpulse wrap` records it): run 1 ended, run 2 is ready, so every
    // job family has a point, the recorded duration histogram included.
    let store = Arc::new(gpulse::app::new_store(&config, true).with_job(JobLog::default(), 16));
    let running = crate::inproc::start_with_store(
        config,
        GpuSource::Nvml,
        Some(otlp),
        Some(Arc::clone(&store)),
    )
    .await;
    crate::wrap::record_two_runs(&store);
    running
}

fn settings(endpoint: String, protocol: OtlpProtocol) -> OtlpSettings {
    OtlpSettings {
        logs_endpoint: endpoint.replace("/v1/metrics", "/v1/logs"),
        endpoint,
        protocol,
        interval: Duration::from_millis(300),
        timeout: Duration::from_secs(2),
        headers: BTreeMap::from([("x-tenant".to_owned(), "t1".to_owned())]),
        gzip: false,
        temporality: opentelemetry_sdk::metrics::Temporality::Cumulative,
        ca_file: String::new(),
        ca_file_origin: String::new(),
    }
}

/// Waits until `ok` holds for the received requests.
async fn wait_for(sink: &Sink, what: &str, ok: impl Fn(&[ExportMetricsServiceRequest]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if ok(&sink.requests()) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

/// The metrics of the newest request that has `name`.
fn latest<'a>(requests: &'a [ExportMetricsServiceRequest], name: &str) -> Option<&'a Metric> {
    requests.iter().rev().find_map(|r| {
        r.resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .find(|m| m.name == name)
    })
}

/// `(attributes, value)` of every point of a gauge or sum.
fn points(m: &Metric) -> Vec<(BTreeMap<String, String>, f64)> {
    let number = |p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    };
    match &m.data {
        Some(metric::Data::Gauge(g)) => g
            .data_points
            .iter()
            .map(|p| (attrs(&p.attributes), number(p)))
            .collect(),
        Some(metric::Data::Sum(s)) => s
            .data_points
            .iter()
            .map(|p| (attrs(&p.attributes), number(p)))
            .collect(),
        _ => Vec::new(),
    }
}

fn names(requests: &[ExportMetricsServiceRequest]) -> std::collections::BTreeSet<String> {
    requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| m.name.clone())
        .collect()
}

async fn check_round_trip(protocol: OtlpProtocol) {
    let fake = FakeNvml::new(
        "gpus=2\ngpu1.util=42\ngpu0.mig=1\nxid=1:79\n# A health reason, so gpulse.gpu.health.reason has a point.\ngpu1.remap_pending=1\n",
    );
    let (addr, sink) = match protocol {
        OtlpProtocol::Grpc => grpc_receiver().await,
        OtlpProtocol::HttpProtobuf => http_receiver().await,
    };
    let endpoint = match protocol {
        OtlpProtocol::Grpc => format!("http://{addr}"),
        OtlpProtocol::HttpProtobuf => format!("http://{addr}/v1/metrics"),
    };
    let agent = start_agent(&fake, settings(endpoint, protocol), Duration::from_secs(5)).await;
    // Two pushes after the first GPU sample, so the export counters have data too.
    wait_for(&sink, "GPU metrics and export counters", |r| {
        latest(r, "hw.gpu.utilization").is_some()
            && latest(r, "gpulse.exports").is_some()
            && latest(r, "gpulse.job.duration").is_some()
            && latest(r, "gpulse.gpu.xid.errors").is_some()
            && latest(r, "gpulse.cost.per_request").is_some()
            && latest(r, "gpulse.probe.last_recovery").is_some()
            && latest(r, "gpulse.probe.inference.duration").is_some()
            && latest(r, "gpulse.server.time_to_first_token.sum").is_some()
    })
    .await;
    let requests = sink.requests();

    let resource = attrs(
        &requests.last().unwrap().resource_metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes,
    );
    assert_eq!(resource["service.name"], "gpulse");
    assert_eq!(resource["service.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(resource["host.name"], "node-7");
    assert_eq!(resource["akash.provider"], "akash1provider");
    assert_eq!(resource["akash.deployment.dseq"], "99");
    assert_eq!(resource["akash.owner"], "akash1tenant");
    assert_eq!(resource["gpulse.gpu_source"], "nvml");
    assert_eq!(resource["gpulse.mode"], "embedded");
    let runs: BTreeMap<String, f64> = points(latest(&requests, "gpulse.job.runs").unwrap())
        .into_iter()
        .map(|(a, v)| (a["gpulse.job.outcome"].clone(), v))
        .collect();
    assert_eq!(runs["failure"], 1.0);
    assert_eq!(runs["success"], 0.0);
    match &latest(&requests, "gpulse.job.duration").unwrap().data {
        Some(metric::Data::Histogram(h)) => {
            assert_eq!(h.data_points[0].count, 1);
            assert_eq!(h.data_points[0].sum, Some(90.0));
        }
        other => panic!("gpulse.job.duration is not a histogram: {other:?}"),
    }

    let util = latest(&requests, "hw.gpu.utilization").unwrap();
    assert_eq!(util.unit, "1");
    assert!(matches!(util.data, Some(metric::Data::Gauge(_))));
    let general: BTreeMap<String, f64> = points(util)
        .into_iter()
        .filter(|(a, _)| a["hw.gpu.task"] == "general")
        .map(|(a, v)| (a["hw.id"].clone(), v))
        .collect();
    assert_eq!(general["GPU-00000000-fake-4000-8000-000000000000"], 0.5);
    assert_eq!(general["GPU-00000000-fake-4000-8000-000000000001"], 0.42);
    let (a, _) = &points(util)[0];
    assert_eq!(a["hw.type"], "gpu");
    assert_eq!(a["hw.model"], "NVIDIA H100 80GB HBM3");
    assert!(a["hw.name"].starts_with("gpu"));
    // The full identity is on gpulse.gpu.info, joined by hw.id.
    let info = latest(&requests, "gpulse.gpu.info").unwrap();
    let by_id: BTreeMap<String, BTreeMap<String, String>> = points(info)
        .into_iter()
        .map(|(a, _)| (a["hw.id"].clone(), a))
        .collect();
    let gpu1 = &by_id["GPU-00000000-fake-4000-8000-000000000001"];
    assert_eq!(gpu1["hw.vendor"], "NVIDIA");
    assert_eq!(gpu1["hw.driver_version"], "550.163.01");
    assert_eq!(gpu1["hw.firmware_version"], "96.00.99.00.01");
    assert_eq!(gpu1["hw.serial_number"], "1654321000001");
    assert_eq!(gpu1["gpulse.gpu.pci_bus_id"], "00000000:11:00.0");
    assert_eq!(gpu1["gpulse.gpu.cuda_driver_version"], "12.4");

    let energy = latest(&requests, "hw.energy").unwrap();
    assert_eq!(energy.unit, "J");
    match &energy.data {
        Some(metric::Data::Sum(sum)) => {
            assert!(sum.is_monotonic);
            assert_eq!(sum.aggregation_temporality, 2, "cumulative");
        }
        other => panic!("hw.energy is not a sum: {other:?}"),
    }
    // The SDK does not order data points; key them by GPU.
    let by_gpu = |m: &Metric| -> Vec<f64> {
        let keyed: BTreeMap<String, f64> = points(m)
            .into_iter()
            .map(|(a, v)| (a["hw.id"].clone(), v))
            .collect();
        keyed.into_values().collect()
    };
    assert_eq!(by_gpu(energy), vec![1e6, 2e6]);

    let memory = latest(&requests, "hw.gpu.memory.usage").unwrap();
    assert_eq!(memory.unit, "By");
    assert_eq!(
        by_gpu(memory),
        vec![(10u64 << 30) as f64, (11u64 << 30) as f64]
    );
    // The semantic conventions' up-down counters (`tests/it/semconv.rs` has the table).
    match &memory.data {
        Some(metric::Data::Sum(sum)) => assert!(!sum.is_monotonic, "an up-down counter"),
        other => panic!("hw.gpu.memory.usage is not a sum: {other:?}"),
    }
    assert_eq!(latest(&requests, "hw.power").unwrap().unit, "W");
    // hw.errors holds the volatile ECC counts only: one point per GPU and error type.
    let errors = points(latest(&requests, "hw.errors").unwrap());
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|(a, _)| !a.contains_key("gpulse.ecc.scope"))
    );
    let aggregate = points(latest(&requests, "gpulse.gpu.ecc.errors.aggregate").unwrap());
    // The fake's aggregate single-bit count.
    assert!(
        aggregate
            .iter()
            .any(|(a, v)| a["error.type"] == "corrected" && *v == 5.0)
    );
    // GPU health as hw.status: one point per state of ok / degraded / failed; GPU 0 is
    // healthy, GPU 1 is not (a pending remap, then the Xid).
    let status: BTreeMap<(String, String), f64> = points(latest(&requests, "hw.status").unwrap())
        .into_iter()
        .map(|(a, v)| ((a["gpulse.gpu.index"].clone(), a["hw.state"].clone()), v))
        .collect();
    let key = |gpu: &str, state: &str| (gpu.to_owned(), state.to_owned());
    assert_eq!(status.len(), 6, "{status:?}");
    assert_eq!(status[&key("0", "ok")], 1.0, "{status:?}");
    assert_eq!(status[&key("1", "ok")], 0.0, "{status:?}");
    assert_eq!(
        status[&key("1", "degraded")] + status[&key("1", "failed")],
        1.0,
        "{status:?}"
    );

    let xid = latest(&requests, "gpulse.gpu.xid.errors").unwrap();
    let xid_points = points(xid);
    assert_eq!(xid_points.len(), 1, "{xid_points:?}");
    assert_eq!(xid_points[0].0["gpulse.gpu.xid"], "79");
    assert_eq!(xid_points[0].0["gpulse.gpu.index"], "1");
    assert_eq!(xid_points[0].1, 1.0);
    assert_eq!(
        latest(&requests, "gpulse.gpu.xid.last_seen").unwrap().unit,
        "s"
    );

    // Every family of the catalog (which /metrics walks too) is pushed: every OTel name
    // arrived here.
    let received = names(&requests);
    let missing: Vec<String> = catalog::families()
        .flat_map(|f| match f.kind {
            Kind::Histogram(OtlpHistogram::SumCount { .. }) => {
                vec![format!("{}.sum", f.otel), format!("{}.count", f.otel)]
            }
            _ => f.otel_names().map(str::to_owned).collect(),
        })
        .filter(|otlp| !received.contains(otlp))
        .collect();
    assert!(
        missing.is_empty(),
        "OTLP metrics never received: {missing:?}"
    );

    // The push does not disturb /metrics.
    let metrics = crate::inproc::http_get(format!("{}/metrics", agent.base))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    agent.shut_down_within(Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_round_trip_has_names_units_attributes_and_values() {
    check_round_trip(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_round_trip_has_names_units_attributes_and_values() {
    check_round_trip(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_temporality_reports_increments() {
    let fake = FakeNvml::new("gpus=1\n");
    let (addr, sink) = grpc_receiver().await;
    let mut s = settings(format!("http://{addr}"), OtlpProtocol::Grpc);
    s.temporality = opentelemetry_sdk::metrics::Temporality::Delta;
    let agent = start_agent(&fake, s, Duration::from_secs(5)).await;
    wait_for(&sink, "two energy points", |r| {
        r.iter()
            .filter(|r| latest(std::slice::from_ref(*r), "hw.energy").is_some())
            .count()
            >= 2
    })
    .await;
    let requests = sink.requests();
    let energy = latest(&requests, "hw.energy").unwrap();
    match &energy.data {
        Some(metric::Data::Sum(sum)) => assert_eq!(sum.aggregation_temporality, 1, "delta"),
        other => panic!("not a sum: {other:?}"),
    }
    // The fake's energy counter is constant, so every delta after the first is 0.
    assert_eq!(points(energy)[0].1, 0.0);
    agent.shut_down_within(Duration::from_secs(6)).await;
}

#[test]
fn the_catalog_covers_every_prometheus_family() {
    let golden = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/metrics.golden"
    ))
    .unwrap();
    let exposed: Vec<String> = catalog::families()
        .map(|f| match f.kind {
            Kind::Counter => format!("{}_total", f.prom),
            _ => f.prom.to_owned(),
        })
        .collect();
    let missing: Vec<&str> = golden
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !exposed.iter().any(|m| m == name))
        .collect();
    assert!(
        missing.is_empty(),
        "Prometheus families outside the catalog: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_nothing_but_counted_failures() {
    let fake = FakeNvml::new("gpus=2\n");
    // A port with nothing listening: every push fails fast with a connection error.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut s = settings(
        format!("http://{dead}/v1/metrics"),
        OtlpProtocol::HttpProtobuf,
    );
    s.interval = Duration::from_millis(100);
    let agent = start_agent(&fake, s, Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = Instant::now();
        let body = agent.get("/metrics").await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "/metrics slowed down"
        );
        // Summed over `reason` (as `sum by (exporter)` does): every failure here is refused.
        let per_reason = |reason: &str| {
            body.lines()
                .filter(|l| l.starts_with("gpulse_export_failures_total{exporter=\"otlp\","))
                .filter(|l| reason.is_empty() || l.contains(&format!("reason=\"{reason}\"")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        let failures = per_reason("");
        assert_eq!(failures, per_reason("refused"), "{body}");
        if failures >= 3.0 && body.contains("gpulse_gpu_utilization_ratio{gpu=\"1\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failures were not counted:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Shutdown stays within the grace period even though the last push cannot succeed.
    agent.shut_down_within(Duration::from_secs(5)).await;
}

// ------------------------------------------------------- collectors that hang (issue 12 #6)

/// How [`Front`] treats a connection, decided when it is accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FrontMode {
    /// Reads the request, answers `200` with a long body and sends it one byte a second.
    Trickle,
    /// Accepts and never sends a byte (not even the HTTP/2 handshake).
    Silent,
    /// Passes the connection through to a good receiver.
    Proxy,
}

/// A TCP front for a receiver that misbehaves until told to pass connections through (a hung
/// collector restarted: its connections close, new ones reach a good one).
struct Front {
    addr: SocketAddr,
    mode: tokio::sync::watch::Sender<FrontMode>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Front {
    async fn start(mode: FrontMode, upstream: SocketAddr) -> Front {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(mode);
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut rx = rx.clone();
                let mode = *rx.borrow_and_update();
                tokio::spawn(async move {
                    let misbehave = async {
                        match mode {
                            FrontMode::Proxy => {
                                let mut up =
                                    tokio::net::TcpStream::connect(upstream).await.unwrap();
                                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                            }
                            FrontMode::Silent => {
                                let mut sink = vec![0u8; 4096];
                                while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
                                std::future::pending::<()>().await;
                            }
                            FrontMode::Trickle => {
                                let mut buf = vec![0u8; 65536];
                                let _ = conn.read(&mut buf).await;
                                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 100000\r\n\r\n";
                                if conn.write_all(head.as_bytes()).await.is_err() {
                                    return;
                                }
                                loop {
                                    if conn.write_all(&[0]).await.is_err() {
                                        return;
                                    }
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = misbehave => {}
                        // Told to behave: a misbehaving connection closes (the hung
                        // collector restarts); a passed-through one carries on.
                        _ = rx.wait_for(|m| *m == FrontMode::Proxy), if mode != FrontMode::Proxy => {}
                    }
                });
            }
        });
        Front {
            addr,
            mode: tx,
            accepted,
        }
    }
}

/// `(pushes, failures)` of the OTLP exporter.
fn otlp_counts(stats: &gpulse::export::ExportStats) -> (u64, u64) {
    stats
        .snapshot()
        .iter()
        .find(|(name, _, _)| *name == "otlp")
        .map_or((0, 0), |(_, pushes, failures)| (*pushes, *failures))
}

/// Waits up to `within` until `ok` holds for the OTLP exporter's `(pushes, failures)`.
async fn wait_counts(
    stats: &gpulse::export::ExportStats,
    what: &str,
    within: Duration,
    ok: impl Fn((u64, u64)) -> bool,
) {
    let deadline = Instant::now() + within;
    while !ok(otlp_counts(stats)) {
        assert!(
            Instant::now() < deadline,
            "{what} not within {within:?}: (pushes, failures) = {:?}",
            otlp_counts(stats)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pushes into `front` (timeout 2 s, longer than the trickle's gaps, every 300 ms) until every push is counted as a failure
/// within about the timeout and pushes keep being attempted; then the front passes through to
/// `sink`'s receiver and pushes succeed again.
async fn check_hung_collector(protocol: OtlpProtocol, mode: FrontMode) {
    let (upstream, sink) = match protocol {
        OtlpProtocol::Grpc => grpc_receiver().await,
        OtlpProtocol::HttpProtobuf => http_receiver().await,
    };
    let front = Front::start(mode, upstream).await;
    let endpoint = match protocol {
        OtlpProtocol::Grpc => format!("http://{}", front.addr),
        OtlpProtocol::HttpProtobuf => format!("http://{}/v1/metrics", front.addr),
    };
    let mut s = settings(endpoint, protocol);
    s.interval = Duration::from_millis(300);
    s.timeout = Duration::from_secs(2);
    gpulse::collect::probe::tls::install_crypto_provider();
    let store = Arc::new(gpulse::app::new_store(&Config::default(), false));
    let stats = Arc::new(gpulse::export::ExportStats::default());
    let push = gpulse::export::otlp::OtlpPush::start(
        &s,
        &gpulse::export::otlp::AgentIdentity::default(),
        store,
        Arc::clone(&stats),
    )
    .unwrap();
    let counts = || otlp_counts(&stats);
    let started = Instant::now();
    // The first push goes out one interval after the start and must fail within the timeout
    // (plus slack for a loaded machine), not hang.
    wait_counts(
        &stats,
        "the first failure",
        Duration::from_millis(300 + 2000 + 1500),
        |(_, f)| f >= 1,
    )
    .await;
    // Later pushes are still attempted, each one bounded.
    wait_counts(
        &stats,
        "three failures",
        Duration::from_secs(12),
        |(_, f)| f >= 3,
    )
    .await;
    let (pushes, failures) = counts();
    assert_eq!(pushes, failures, "no push into a hung collector succeeds");
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "pushes are not bounded by the timeout"
    );
    if protocol == OtlpProtocol::HttpProtobuf {
        assert!(
            front.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2,
            "later pushes did not reach the collector"
        );
    }
    assert!(sink.requests().is_empty());

    // The collector recovers: pushes succeed again, on schedule.
    front.mode.send(FrontMode::Proxy).unwrap();
    wait_for(&sink, "a push after recovery", |r| r.len() >= 2).await;
    let (p1, f1) = counts();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (p2, f2) = counts();
    assert!(p2 > p1, "pushes stopped after recovery");
    assert_eq!(f2, f1, "pushes still fail after recovery");
    tokio::task::spawn_blocking(move || push.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_collector_that_trickles_its_answer_costs_one_timeout_per_push() {
    check_hung_collector(OtlpProtocol::HttpProtobuf, FrontMode::Trickle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_collector_that_never_answers_costs_one_timeout_per_push() {
    check_hung_collector(OtlpProtocol::HttpProtobuf, FrontMode::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_collector_that_never_answers_costs_one_timeout_per_push() {
    check_hung_collector(OtlpProtocol::Grpc, FrontMode::Silent).await;
}

// ------------------------------------------------- failures that say why (issue 13 item 5)

/// One flush of a push to `settings` from a fresh store; the stats it left.
async fn push_once(settings: OtlpSettings) -> Arc<gpulse::export::ExportStats> {
    let store = Arc::new(gpulse::app::new_store(&Config::default(), false));
    let stats = Arc::new(gpulse::export::ExportStats::default());
    let push = gpulse::export::otlp::OtlpPush::start(
        &settings,
        &gpulse::export::otlp::AgentIdentity::default(),
        store,
        Arc::clone(&stats),
    )
    .unwrap();
    tokio::task::spawn_blocking(move || {
        let _ = push.flush();
        let _ = push.shutdown();
    })
    .await
    .unwrap();
    stats
}

/// Pushes once to `endpoint` and returns the failure's reason and cause, checking that the
/// failure was counted under that reason and that the cause names the endpoint's push.
async fn failure_of(mut settings: OtlpSettings) -> (String, String) {
    settings.timeout = settings.timeout.min(Duration::from_secs(3));
    let stats = push_once(settings.clone()).await;
    let failure = stats
        .last_failure("otlp")
        .unwrap_or_else(|| panic!("no failure recorded for {}", settings.endpoint));
    assert_eq!(failure.endpoint, settings.endpoint);
    let totals = stats.totals();
    let counted: u64 = totals[0]
        .failures
        .iter()
        .filter(|(r, _)| *r == failure.reason)
        .map(|(_, n)| n)
        .sum();
    assert!(counted >= 1, "{totals:?}");
    assert_eq!(
        counted,
        totals[0].failures_total(),
        "one reason only: {totals:?}"
    );
    (failure.reason.as_str().to_owned(), failure.cause)
}

fn http_settings(endpoint: String) -> OtlpSettings {
    settings(endpoint, OtlpProtocol::HttpProtobuf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_counted_as_refused() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (reason, cause) = failure_of(http_settings(format!("http://{dead}/v1/metrics"))).await;
    assert_eq!(reason, "refused", "{cause}");
    assert!(cause.to_lowercase().contains("refused"), "{cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_counted_as_dns() {
    // `.invalid` never resolves (RFC 6761): NXDOMAIN, or no resolver at all in a sandbox.
    let (reason, cause) = failure_of(http_settings(
        "http://collector.gpulse-test.invalid:4318/v1/metrics".to_owned(),
    ))
    .await;
    assert_eq!(reason, "dns", "{cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_status_is_counted_with_the_start_of_its_body() {
    async fn refuse() -> impl axum::response::IntoResponse {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            "invalid API key for instance 123\n",
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/v1/metrics", axum::routing::post(refuse));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (reason, cause) = failure_of(http_settings(format!("http://{addr}/v1/metrics"))).await;
    assert_eq!(reason, "status", "{cause}");
    assert!(
        cause.contains("401") && cause.contains("invalid API key for instance 123"),
        "{cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_is_counted_as_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut s = http_settings(format!("http://{addr}/v1/metrics"));
    s.timeout = Duration::from_millis(500);
    let (reason, cause) = failure_of(s).await;
    assert_eq!(reason, "timeout", "{cause}");
}

/// An OTLP/HTTP receiver over https with `pair`'s certificate; what it received.
async fn https_receiver(pair: &crate::tls::Pair) -> (SocketAddr, Sink) {
    use rustls_pki_types::pem::PemObject;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (plain, sink) = http_receiver().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // TLS ends here; the request goes on in clear to the plain receiver.
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(plain).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                }
            });
        }
    });
    (addr, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_needs_the_ca_file_and_an_unknown_ca_is_counted_as_tls() {
    let pair = crate::tls::self_signed("otlp-receiver", 7);
    let (addr, sink) = https_receiver(&pair).await;
    let endpoint = format!("https://localhost:{}/v1/metrics", addr.port());

    // Without the CA: the handshake fails, and the cause says it is the certificate.
    let (reason, cause) = failure_of(http_settings(endpoint.clone())).await;
    assert_eq!(reason, "tls", "{cause}");
    assert!(cause.to_lowercase().contains("certificate"), "{cause}");
    assert!(sink.requests().is_empty());

    // With the CA file (as `otlp.ca_file` or OTEL_EXPORTER_OTLP_CERTIFICATE sets it): pushed.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pair.cert_pem).unwrap();
    let mut s = http_settings(endpoint);
    s.ca_file = ca.display().to_string();
    let stats = push_once(s).await;
    assert_eq!(stats.last_failure("otlp"), None);
    assert!(!sink.requests().is_empty(), "nothing arrived over https");
}

#[test]
fn a_bad_ca_file_is_a_config_error_naming_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let ca_text = ca.display().to_string();
    let env = |name: &str| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("https://collector:4318".to_owned()),
        "OTEL_EXPORTER_OTLP_CERTIFICATE" => Some(ca_text.clone()),
        _ => None,
    };
    let error = gpulse::app::Parts::load(None, &[], env)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("otlp.ca_file")
            && error.contains("OTEL_EXPORTER_OTLP_CERTIFICATE (environment)")
            && error.contains("not-a-ca.pem"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_failures_are_classified_from_their_text() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (reason, cause) = failure_of(settings(format!("http://{dead}"), OtlpProtocol::Grpc)).await;
    assert_eq!(reason, "refused", "{cause}");
    // An https gRPC endpoint whose certificate no root vouches for.
    let pair = crate::tls::self_signed("otlp-grpc", 8);
    let (addr, _sink) = https_receiver(&pair).await;
    let (reason, cause) = failure_of(settings(
        format!("https://localhost:{}", addr.port()),
        OtlpProtocol::Grpc,
    ))
    .await;
    assert_eq!(reason, "tls", "{cause}");
}

// ------------------------------------------------------- log receivers (issue 15: events)

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};

/// What a log receiver does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogsMode {
    /// Keeps the request and acknowledges it.
    Up,
    /// Keeps the request but answers with an error (the acknowledgement is lost), then goes
    /// `Down`: the one case where the exporter sends a batch the receiver already has.
    LoseAck,
    /// Keeps nothing and answers with an error (a stopped receiver's open connections).
    Down,
}

/// One request a log receiver kept, and whether it acknowledged it.
#[derive(Debug, Clone)]
pub(crate) struct LogsBatch {
    pub request: ExportLogsServiceRequest,
    pub acked: bool,
}

#[derive(Debug)]
struct LogsState {
    mode: LogsMode,
    batches: Vec<LogsBatch>,
}

/// Everything a log receiver got.
#[derive(Clone)]
pub(crate) struct LogsSink(Arc<Mutex<LogsState>>);

impl LogsSink {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(LogsState {
            mode: LogsMode::Up,
            batches: Vec::new(),
        })))
    }

    /// Keeps (or not) one request; whether to acknowledge it.
    fn handle(&self, request: ExportLogsServiceRequest) -> bool {
        let mut state = self.0.lock().unwrap();
        match state.mode {
            LogsMode::Up => {
                state.batches.push(LogsBatch {
                    request,
                    acked: true,
                });
                true
            }
            LogsMode::LoseAck => {
                state.batches.push(LogsBatch {
                    request,
                    acked: false,
                });
                state.mode = LogsMode::Down;
                false
            }
            LogsMode::Down => false,
        }
    }

    pub(crate) fn set_mode(&self, mode: LogsMode) {
        self.0.lock().unwrap().mode = mode;
    }

    pub(crate) fn mode(&self) -> LogsMode {
        self.0.lock().unwrap().mode
    }

    pub(crate) fn batches(&self) -> Vec<LogsBatch> {
        self.0.lock().unwrap().batches.clone()
    }
}

#[tonic::async_trait]
impl LogsService for LogsSink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        if self.handle(request.into_inner()) {
            Ok(tonic::Response::new(ExportLogsServiceResponse {
                partial_success: None,
            }))
        } else {
            Err(tonic::Status::unavailable("receiver stopped"))
        }
    }
}

/// `POST /v1/logs` of an HTTP log receiver.
async fn handle_logs(State(sink): State<LogsSink>, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let request = ExportLogsServiceRequest::decode(body).unwrap();
    if sink.handle(request) {
        (
            [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
            ExportLogsServiceResponse {
                partial_success: None,
            }
            .encode_to_vec(),
        )
            .into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "receiver stopped",
        )
            .into_response()
    }
}

/// An OTLP log receiver on a fixed port (gRPC, or HTTP/protobuf at `/v1/logs`) that can be
/// stopped (new connections refused, open ones answered with errors) and started again.
pub(crate) struct LogsReceiver {
    pub addr: SocketAddr,
    pub sink: LogsSink,
    protocol: OtlpProtocol,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl LogsReceiver {
    /// Starts on `addr` (a free port when `None`).
    pub(crate) async fn start(protocol: OtlpProtocol, addr: Option<SocketAddr>) -> Self {
        let mut receiver = Self {
            addr: addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            sink: LogsSink::new(),
            protocol,
            server: None,
        };
        receiver.serve().await;
        receiver
    }

    async fn serve(&mut self) {
        let mut listener = None;
        // The port of a receiver just stopped may take a moment to be free again.
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.expect("cannot bind the log receiver's port again");
        self.addr = listener.local_addr().unwrap();
        let sink = self.sink.clone();
        self.server = Some(match self.protocol {
            OtlpProtocol::Grpc => tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(LogsServiceServer::new(sink))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await;
            }),
            OtlpProtocol::HttpProtobuf => {
                let app = axum::Router::new()
                    .route("/v1/logs", axum::routing::post(handle_logs))
                    .with_state(sink);
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                })
            }
        });
        self.sink.set_mode(LogsMode::Up);
    }

    /// Stops accepting connections; open ones get errors and nothing is kept.
    pub(crate) fn stop(&mut self) {
        if self.sink.mode() != LogsMode::LoseAck {
            self.sink.set_mode(LogsMode::Down);
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Starts again on the same port.
    pub(crate) async fn restart(&mut self) {
        self.serve().await;
    }

    /// The settings of an agent that exports to this receiver (metrics rarely: the receiver
    /// takes logs only).
    pub(crate) fn settings(&self) -> OtlpSettings {
        let base = format!("http://{}", self.addr);
        let mut s = settings(format!("{base}/v1/metrics"), self.protocol);
        if self.protocol == OtlpProtocol::Grpc {
            s.endpoint = base.clone();
            s.logs_endpoint = base;
        }
        s.interval = Duration::from_secs(3600);
        s
    }
}

/// A log record's attributes as text.
pub(crate) fn log_attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    attrs(kvs)
}

/// The text of an `AnyValue` (strings, numbers, booleans).
pub(crate) fn any_text(v: &Option<AnyValue>) -> String {
    text(v)
}
