//! Benchmark: one NVML sampling cycle over 8 GPUs (with and without NVML GPM) through the real
//! nvml-wrapper code and the fake `libnvidia-ml.so.1` (no latency, config polled once a
//! minute, so this measures gpulse's and nvml-wrapper's own cost rather than the fake's), the
//! host (sysinfo) cycle on this machine, and the demo simulator's cycle for comparison.

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
    // One session, as the agent runs: every cycle takes a GPM sample per GPU and reads the
    // metrics since the last one.
    let mut sampler = NvmlSampler::new(options.clone());
    sampler.session(|s| {
        s.cycle().expect("fake NVML loads");
        let second = s.cycle().unwrap();
        assert_eq!(second.devices.len(), 8);
        assert!(second.devices[0].profiling.sm_active.is_some());
        c.bench_function("nvml_cycle_8_gpus_fake", |b| {
            b.iter(|| std::hint::black_box(s.cycle().unwrap()))
        });
    });
    // The same without GPM (`gpu.gpm = false`, or GPUs before Hopper).
    let mut sampler = NvmlSampler::new(GpuOptions {
        gpm: false,
        ..options
    });
    sampler.session(|s| {
        s.cycle().expect("fake NVML loads");
        c.bench_function("nvml_cycle_8_gpus_fake_without_gpm", |b| {
            b.iter(|| std::hint::black_box(s.cycle().unwrap()))
        });
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
