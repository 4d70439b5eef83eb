//! Benchmark: rendering /metrics for 8 GPUs plus a host sample, through the same
//! store-backed renderer the HTTP handler uses, natively and with dcgm_compat on; and for a
//! large node (64 GPUs): a fresh render, the body served from the per-snapshot cache, plain
//! and gzipped, and the one compression per snapshot.

// A benchmark that cannot set up should stop loudly; these are not runtime paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gpulse::demo::gpu_sim::SimGpuCollector;
use gpulse::export::json::SnapshotV1;
use gpulse::export::prometheus::{BuildInfo, MetricsRenderer, RenderOptions, cache};
use gpulse::model::{CollectorStatus, HostSample, NetworkReadings, Sample};
use gpulse::store::Store;

fn store_with_gpus(gpus: u32) -> Arc<Store> {
    let store = Arc::new(Store::new(
        NonZeroUsize::new(300).unwrap(),
        vec![
            CollectorStatus::new("gpu", Duration::from_secs(1)),
            CollectorStatus::new("host", Duration::from_secs(5)),
        ],
    ));
    let mut sim = SimGpuCollector::new(gpus, Duration::from_secs(1));
    store.publish(Sample::Gpu(sim.next_sample()));
    store.publish(Sample::Host(HostSample {
        cpu_utilization: Some(0.3),
        cpu_count: 64,
        load_average: Some([1.0, 2.0, 3.0]),
        memory_total_bytes: 1 << 40,
        networks: (0..4)
            .map(|i| NetworkReadings {
                interface: format!("eth{i}"),
                received_bytes: 1 << 30,
                ..NetworkReadings::default()
            })
            .collect(),
        ..HostSample::default()
    }));
    store
}

/// The renderer the HTTP handler builds, over `store`, with `options`.
fn renderer(store: &Arc<Store>, options: RenderOptions) -> MetricsRenderer {
    MetricsRenderer::new(
        Arc::clone(store),
        BuildInfo {
            version: "bench",
            gpu_source: "demo",
        },
        options,
        Default::default(),
    )
}

/// dcgm-exporter's names on as well.
fn dcgm_compat() -> RenderOptions {
    RenderOptions {
        dcgm_compat: true,
        hostname: "bench-node".to_owned(),
        ..RenderOptions::default()
    }
}

fn bench(c: &mut Criterion) {
    let store = store_with_gpus(8);
    let renderer = renderer(&store, RenderOptions::default());
    let size = renderer.render(false).unwrap().len();
    println!("/metrics body for 8 GPUs: {size} bytes");
    c.bench_function("render_metrics_8_gpus", |b| {
        b.iter(|| std::hint::black_box(renderer.render(false).unwrap()))
    });
    let with_dcgm = self::renderer(&store, dcgm_compat());
    let size = with_dcgm.render(false).unwrap().len();
    println!("/metrics body for 8 GPUs with dcgm_compat: {size} bytes");
    c.bench_function("render_metrics_8_gpus_dcgm_compat", |b| {
        b.iter(|| std::hint::black_box(with_dcgm.render(false).unwrap()))
    });
    c.bench_function("render_snapshot_json_8_gpus", |b| {
        b.iter(|| {
            let snap = store.snapshot();
            std::hint::black_box(
                serde_json::to_vec(&SnapshotV1::from_snapshot(&snap, "n")).unwrap(),
            )
        })
    });
}

/// 64 GPUs, dcgm_compat on: what a scrape costs when the body must be rendered, and when it is served from the
/// cache (no new snapshot since the last scrape), plain and gzipped.
fn bench_large(c: &mut Criterion) {
    let store = store_with_gpus(64);
    // dcgm names on, as the figure (1.16 MB, 10,187 series) was measured.
    let renderer = renderer(&store, dcgm_compat());
    let plain = renderer.render(false).unwrap();
    let series = plain.lines().filter(|l| !l.starts_with('#')).count();
    let gzipped = cache::compress(plain.as_bytes()).unwrap();
    let best = {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(plain.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    println!(
        "/metrics body for 64 GPUs with dcgm_compat: {} bytes, {series} series; gzip level {}: {} bytes ({:.1}%); level 9: {} bytes",
        plain.len(),
        cache::GZIP_LEVEL,
        gzipped.len(),
        100.0 * gzipped.len() as f64 / plain.len() as f64,
        best.len()
    );
    c.bench_function("render_metrics_64_gpus_fresh", |b| {
        b.iter(|| std::hint::black_box(renderer.render(false).unwrap()))
    });
    renderer.serve(false, true).unwrap();
    c.bench_function("render_metrics_64_gpus_cached", |b| {
        b.iter(|| std::hint::black_box(renderer.serve(false, false).unwrap()))
    });
    c.bench_function("render_metrics_64_gpus_cached_gzip", |b| {
        b.iter(|| std::hint::black_box(renderer.serve(false, true).unwrap()))
    });
    c.bench_function("render_metrics_64_gpus_gzip_compress", |b| {
        b.iter(|| std::hint::black_box(cache::compress(plain.as_bytes()).unwrap()))
    });
    assert_eq!(renderer.renders(), 1, "every cached scrape rendered again");
}

criterion_group!(benches, bench, bench_large);
criterion_main!(benches);
