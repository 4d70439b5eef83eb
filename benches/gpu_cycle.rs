//! Benchmark: one NVML sampling cycle over 8 GPUs through the real nvml-wrapper code and the
//! fake `libnvidia-ml.so.1` (no latency, config polled once a minute, so this measures
//! gpulse's and nvml-wrapper's own cost rather than the fake's), the host (sysinfo) cycle
//! on this machine, and the demo simulator's cycle for comparison.

// A benchmark that cannot set up should stop loudly; these are not runtime paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/fake_nvml.rs"]
mod fake_nvml;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gpulse::collect::gpu::{GpuOptions, NvmlSampler};
use gpulse::collect::host::HostSampler;
use gpulse::config::{GpuConfig, HostConfig};
use gpulse::demo::gpu_sim::SimGpuCollector;

fn bench(c: &mut Criterion) {
    let fake = fake_nvml::FakeNvml::new("gpus=8\nconfig_poll_ms=60000\n");
    let options = GpuOptions::from_config(&GpuConfig::default(), Some(fake.lib_path()));
    let mut sampler = NvmlSampler::new(options);
    let first = sampler.cycle().expect("fake NVML loads");
    assert_eq!(first.devices.len(), 8);
    c.bench_function("nvml_cycle_8_gpus_fake", |b| {
        b.iter(|| std::hint::black_box(sampler.cycle().unwrap()))
    });
    let mut host = HostSampler::new(HostConfig::default());
    host.cycle().unwrap();
    c.bench_function("host_cycle", |b| {
        b.iter(|| std::hint::black_box(host.cycle().unwrap()))
    });
    let mut sim = SimGpuCollector::new(8, Duration::from_secs(1));
    c.bench_function("sim_cycle_8_gpus", |b| {
        b.iter(|| std::hint::black_box(sim.next_sample()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
