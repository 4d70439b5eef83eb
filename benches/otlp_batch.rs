//! Benchmark: one OTLP push's request (written from the metric catalog as protobuf bytes)
//! against one /metrics render of the same snapshot, for 8 and 64 GPUs: the push must cost at
//! most ~2× the render (issue 19). `otlp_structs_*` prices the route through
//! opentelemetry-proto's owned structs for comparison.

// A benchmark that cannot set up should stop loudly; these are not runtime paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use gpulse::demo::gpu_sim::SimGpuCollector;
use gpulse::export::ExportStats;
use gpulse::export::otlp::Batcher;
use gpulse::export::prometheus::{BuildInfo, MetricsRenderer, RenderOptions};
use gpulse::model::{CollectorStatus, Sample};
use gpulse::store::Store;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_sdk::metrics::Temporality;
use prost::Message as _;

fn store_with(gpus: u32) -> Arc<Store> {
    let store = Arc::new(Store::new(
        NonZeroUsize::new(300).unwrap(),
        vec![CollectorStatus::new("gpu", Duration::from_secs(1))],
    ));
    let mut sim = SimGpuCollector::new(gpus, Duration::from_secs(1));
    store.publish(Sample::Gpu(sim.next_sample()));
    store
}

fn build() -> BuildInfo {
    BuildInfo {
        version: "bench",
        gpu_source: "demo",
    }
}

fn bench(c: &mut Criterion) {
    let stats = ExportStats::default();
    stats.record("otlp", Ok(()));
    for gpus in [8, 64] {
        let store = store_with(gpus);
        let renderer = MetricsRenderer::new(
            Arc::clone(&store),
            build(),
            RenderOptions::default(),
            Default::default(),
        );
        let mut batcher = Batcher::new(
            Resource::default(),
            build(),
            Temporality::Cumulative,
            SystemTime::now(),
        );
        let snap = store.snapshot();
        let request = batcher.collect(&snap, &stats.totals(), SystemTime::now());
        let points: usize = request.resource_metrics[0].scope_metrics[0].metrics.len();
        println!(
            "{gpus} GPUs: /metrics {} bytes; OTLP request {} bytes in {points} metrics",
            renderer.render(false).unwrap().len(),
            request.encoded_len()
        );
        c.bench_function(&format!("render_metrics_{gpus}_gpus"), |b| {
            b.iter(|| std::hint::black_box(renderer.render(false).unwrap()))
        });
        c.bench_function(&format!("otlp_batch_{gpus}_gpus"), |b| {
            b.iter(|| {
                let snap = store.snapshot();
                std::hint::black_box(batcher.encode(&snap, &stats.totals(), SystemTime::now()))
            })
        });
        // The route through opentelemetry-proto's structs, for comparison: the same request
        // as owned structs (every attribute a `String`), cloned and encoded. It costs what
        // building them did before the batch was written field by field.
        c.bench_function(&format!("otlp_structs_{gpus}_gpus"), |b| {
            b.iter(|| std::hint::black_box(request.clone().encode_to_vec()))
        });
        let mut delta = Batcher::new(
            Resource::default(),
            build(),
            Temporality::Delta,
            SystemTime::now(),
        );
        c.bench_function(&format!("otlp_batch_{gpus}_gpus_delta"), |b| {
            b.iter(|| {
                let snap = store.snapshot();
                std::hint::black_box(delta.encode(&snap, &stats.totals(), SystemTime::now()))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
