//! `/metrics` for large nodes over real HTTP: the body is rendered once per snapshot and
//! format and shared by every scraper; gzip for clients that accept it decodes to exactly the
//! plain body; a new snapshot or a moved export counter is never served stale.
//!
//! The router runs on a store only the test writes to (no collectors), so "no new snapshot"
//! is a fact, not a race.

use std::io::Read as _;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use gpulse::app::GpuSource;
use gpulse::config::{Config, HttpConfig, HumanDuration};
use gpulse::demo::gpu_sim::SimGpuCollector;
use gpulse::export::ExportStats;
use gpulse::export::api::{self, ApiState, Credentials, ServeOptions};
use gpulse::export::prometheus::{BuildInfo, MetricsRenderer, RenderOptions};
use gpulse::model::{CollectorStatus, Sample};
use gpulse::store::Store;

struct Served {
    base: String,
    store: Arc<Store>,
    metrics: MetricsRenderer,
    exports: Arc<ExportStats>,
    sim: SimGpuCollector,
}

/// A router on a free port over a store with 8 simulated GPUs, dcgm names on.
async fn serve() -> Served {
    let store = Arc::new(Store::new(
        NonZeroUsize::new(10).unwrap(),
        vec![CollectorStatus::new("gpu", Duration::from_secs(1))],
    ));
    let mut sim = SimGpuCollector::new(8, Duration::from_secs(1));
    store.publish(Sample::Gpu(sim.next_sample()));
    let exports = Arc::new(ExportStats::default());
    let metrics = MetricsRenderer::new(
        Arc::clone(&store),
        BuildInfo {
            version: "t",
            gpu_source: "demo",
        },
        RenderOptions {
            dcgm_compat: true,
            hostname: "node-a".to_owned(),
            ..RenderOptions::default()
        },
        Arc::clone(&exports),
    );
    let state = ApiState {
        store: Arc::clone(&store),
        metrics: metrics.clone(),
        node: Arc::from("node-a"),
        score_enabled: false,
        ready_grace: Duration::from_secs(60),
        reports: None,
        events: None,
        token_required: false,
    };
    let http = HttpConfig::default();
    let credentials = Credentials::none();
    let listener = api::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(
        listener,
        api::router(state, &http, &credentials),
        ServeOptions::new(&http, &credentials),
        std::future::pending(),
    ));
    Served {
        base,
        store,
        metrics,
        exports,
        sim,
    }
}

/// One scrape: status, `Content-Encoding`, `Vary` and the raw body bytes.
async fn scrape(base: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, String, Vec<u8>) {
    let mut request = crate::inproc::client().get(format!("{base}/metrics"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let r = request.send().await.unwrap();
    let header = |name| {
        r.headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let encoding = header("content-encoding");
    let vary = header("vary").unwrap_or_default();
    (
        r.status().as_u16(),
        encoding,
        vary,
        r.bytes().await.unwrap().to_vec(),
    )
}

fn gunzip(body: &[u8]) -> String {
    let mut plain = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut plain)
        .unwrap();
    plain
}

const GZIP: (&str, &str) = ("accept-encoding", "gzip");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapers_share_one_render_per_snapshot_and_gzip_decodes_to_the_plain_body() {
    let mut s = serve().await;

    let (status, encoding, vary, plain) = scrape(&s.base, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(encoding, None, "no Accept-Encoding, no gzip");
    assert!(
        vary.to_ascii_lowercase().contains("accept-encoding"),
        "{vary}"
    );
    let plain = String::from_utf8(plain).unwrap();
    assert!(
        plain.contains("DCGM_FI_DEV_GPU_UTIL{"),
        "both name sets in one body"
    );
    assert_eq!(s.metrics.renders(), 1);

    // An HA pair and a collector: three more scrapes, gzip or not, no new render.
    let (_, encoding, vary, zipped) = scrape(&s.base, &[GZIP]).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert!(
        vary.to_ascii_lowercase().contains("accept-encoding"),
        "{vary}"
    );
    assert!(
        zipped.len() * 5 < plain.len(),
        "gzip {} bytes of {}",
        zipped.len(),
        plain.len()
    );
    assert_eq!(
        gunzip(&zipped),
        plain,
        "gzip must decode to exactly the plain body"
    );
    let (_, _, _, again) = scrape(&s.base, &[GZIP]).await;
    assert_eq!(again, zipped);
    let (_, encoding, _, again) = scrape(&s.base, &[("accept-encoding", "gzip;q=0, br")]).await;
    assert_eq!(encoding, None);
    assert_eq!(again, plain.as_bytes());
    assert_eq!(s.metrics.renders(), 1, "served from the cache");

    // A new snapshot is never served stale: rendered again, equal to a fresh render.
    s.store.publish(Sample::Gpu(s.sim.next_sample()));
    let (_, encoding, _, zipped) = scrape(&s.base, &[GZIP]).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let next = gunzip(&zipped);
    assert_ne!(next, plain);
    assert_eq!(next, s.metrics.render(false).unwrap());
    assert_eq!(s.metrics.renders(), 2);
    let (_, _, _, same) = scrape(&s.base, &[]).await;
    assert_eq!(same, next.as_bytes());
    assert_eq!(s.metrics.renders(), 2);

    // Export counters change without a new snapshot: they invalidate the body too.
    s.exports.record("otlp", Ok(()));
    let (_, _, _, body) = scrape(&s.base, &[]).await;
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains("gpulse_exports_total{exporter=\"otlp\"} 1"),
        "{}",
        &body[..400.min(body.len())]
    );
    assert_eq!(s.metrics.renders(), 3);

    // A collector run alone (no sample) is a new snapshot as well.
    s.store.record_run(
        "gpu",
        gpulse::store::RunReport {
            duration: Duration::from_millis(5),
            finished_at: std::time::SystemTime::now(),
            outcome: Ok(()),
        },
    );
    let (_, _, _, body) = scrape(&s.base, &[]).await;
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("gpulse_collector_runs_total{collector=\"gpu\"} 1")
    );
    assert_eq!(s.metrics.renders(), 4);

    // OpenMetrics has its own cached body (and gzip).
    let om = [
        ("accept", "application/openmetrics-text; version=1.0.0"),
        GZIP,
    ];
    let (_, encoding, _, first) = scrape(&s.base, &om).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert!(gunzip(&first).ends_with("# EOF\n"));
    let (_, _, _, second) = scrape(&s.base, &om).await;
    assert_eq!(first, second);
    assert_eq!(s.metrics.renders(), 5);
    // ...and the text body is still the cached one.
    scrape(&s.base, &[]).await;
    assert_eq!(s.metrics.renders(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_the_headers_and_no_body() {
    let s = serve().await;
    let r = crate::inproc::client()
        .head(format!("{}/metrics", s.base))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(r.bytes().await.unwrap().is_empty());
}

/// The agent as `app` wires it: Prometheus's header gets gzip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_agent_serves_gzip_to_prometheus() {
    let mut config = Config::default();
    config.gpu.interval = HumanDuration(Duration::from_millis(100));
    config.host.interval = HumanDuration(Duration::from_millis(100));
    let agent = crate::inproc::start(config, GpuSource::Demo { gpus: 2 }, None).await;
    crate::api::wait_ready(&agent.base).await;
    let (status, encoding, _, zipped) = scrape(
        &agent.base,
        &[
            (
                "accept",
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
            ),
            ("accept-encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let body = gunzip(&zipped);
    assert!(body.contains("gpulse_build_info{"), "{body}");
    assert!(body.ends_with("# EOF\n"));
    agent.shut_down().await;
}
