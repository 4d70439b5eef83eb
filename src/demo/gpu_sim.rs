//! Simulated GPUs for `gpulse demo`: deterministic load waves, a recurring thermal throttle
//! episode and memory that fills and drains, so /metrics and /v1/snapshot look real without
//! a GPU.
//!
//! The simulation is a pure function of the cycle number (`tick`), not of wall-clock time,
//! so the same tick always yields the same readings. `simulated_xid` gives the Xid that the
//! demo injects every [`DEMO_XID_EVERY`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::collect::{CollectError, Collector};
use crate::model::{
    Clock, EccKind, EccScope, GpuDevice, GpuIdentity, GpuProcess, GpuSample, MemoryReadings,
    MigReadings, NvLinkReadings, PcieReadings, Profiling, RemappedRows, RetiredCause, Sample,
    TempThreshold, ThrottlePolicy, ThrottleReasons, Utilization, XidEvent, XidSource,
};

const GIB: u64 = 1 << 30;
const MEMORY_TOTAL: u64 = 80 * GIB;
const MEMORY_RESERVED: u64 = GIB / 2;
/// A simulated thermal throttle episode of `THROTTLE_LENGTH_S` starts every this many seconds
/// on GPU 1.
pub const THROTTLE_PERIOD_S: f64 = 120.0;
/// How long each simulated throttle episode lasts, in seconds.
pub const THROTTLE_LENGTH_S: f64 = 20.0;
const HW_THERMAL_SLOWDOWN: u64 = 0x40;
const SW_THERMAL_SLOWDOWN: u64 = 0x20;
const GPU_IDLE: u64 = 0x1;

/// A collector that invents `gpus` H100-like GPUs.
#[derive(Debug)]
pub struct SimGpuCollector {
    identities: Vec<Arc<GpuIdentity>>,
    interval: Duration,
    tick: u64,
    /// Integrated energy per GPU, in joules.
    energy: Vec<f64>,
    /// Accumulated throttle time per GPU, in seconds.
    throttled: Vec<f64>,
    /// Whether each GPU throttled at the last tick (to log each simulated episode once).
    throttling: Vec<bool>,
}

impl SimGpuCollector {
    pub fn new(gpus: u32, interval: Duration) -> Self {
        let identities = (0..gpus)
            .map(|i| {
                Arc::new(GpuIdentity {
                    index: i,
                    index_label: i.to_string(),
                    uuid: format!("GPU-5e1f0000-demo-4000-8000-{i:012}"),
                    name: "NVIDIA H100 80GB HBM3 (simulated)".to_owned(),
                    pci_bus_id: format!("00000000:{:02X}:00.0", 0x18 + i),
                    serial: Some(format!("DEMO{i:08}")),
                    vbios_version: Some("96.00.99.00.01".to_owned()),
                })
            })
            .collect();
        Self {
            identities,
            interval,
            tick: 0,
            energy: vec![0.0; gpus as usize],
            throttled: vec![0.0; gpus as usize],
            throttling: vec![false; gpus as usize],
        }
    }

    /// The sample for the next tick.
    pub fn next_sample(&mut self) -> GpuSample {
        let dt = self.interval.as_secs_f64();
        let t = self.tick as f64 * dt;
        self.tick += 1;
        let devices = self
            .identities
            .iter()
            .enumerate()
            .map(|(i, identity)| {
                let device = simulate(identity, t);
                let power = device.power_watts.unwrap_or(0.0);
                self.energy[i] += power * dt;
                let throttling = device
                    .throttle
                    .is_some_and(|r| r.active & HW_THERMAL_SLOWDOWN != 0);
                if throttling {
                    self.throttled[i] += dt;
                    if !self.throttling[i] {
                        tracing::info!(
                            gpu = identity.index,
                            seconds = THROTTLE_LENGTH_S,
                            "Demo mode: simulated thermal throttle starts."
                        );
                    }
                }
                self.throttling[i] = throttling;
                GpuDevice {
                    energy_joules: Some(1.0e6 + self.energy[i]),
                    throttle_seconds: vec![
                        (ThrottlePolicy::Power, 0.0),
                        (ThrottlePolicy::Thermal, self.throttled[i]),
                    ],
                    ..device
                }
            })
            .collect();
        GpuSample {
            taken_at: SystemTime::now(),
            driver_version: Some("550.163.01".to_owned()),
            cuda_driver_version: Some("12.4".to_owned()),
            devices,
        }
    }
}

impl Collector for SimGpuCollector {
    fn name(&self) -> &'static str {
        "gpu"
    }

    async fn collect(&mut self) -> Result<Sample, CollectError> {
        Ok(Sample::Gpu(self.next_sample()))
    }
}

/// The readings of GPU `identity.index` at simulated time `t` seconds.
fn simulate(identity: &Arc<GpuIdentity>, t: f64) -> GpuDevice {
    let i = f64::from(identity.index);
    // A slow wave per GPU, phase-shifted so the GPUs do not move in lockstep.
    let wave = 0.5 + 0.45 * ((t / 40.0) + i * 0.9).sin();
    let in_episode =
        identity.index == 1 && (t % THROTTLE_PERIOD_S) >= THROTTLE_PERIOD_S - THROTTLE_LENGTH_S;
    let util = if in_episode {
        0.98
    } else {
        wave.clamp(0.0, 1.0)
    };
    let temperature = if in_episode { 89.0 } else { 35.0 + 45.0 * util };
    let sm_mhz = if in_episode {
        990.0
    } else {
        1980.0 - 225.0 * (1.0 - util)
    };
    // Memory fills over ten minutes, then the "job" restarts and it drains.
    let fill = ((t + i * 60.0) % 600.0) / 600.0;
    let used = (MEMORY_TOTAL - MEMORY_RESERVED) as f64 * (0.15 + 0.75 * fill);
    let used = used as u64;
    let active = if in_episode {
        HW_THERMAL_SLOWDOWN | SW_THERMAL_SLOWDOWN
    } else if util < 0.1 {
        GPU_IDLE
    } else {
        0
    };
    GpuDevice {
        identity: Arc::clone(identity),
        lost: false,
        missing: false,
        utilization: Utilization {
            gpu: Some(round3(util)),
            memory: Some(round3(util * 0.6)),
            encoder: Some(0.0),
            decoder: Some(0.0),
        },
        memory: MemoryReadings {
            total_bytes: Some(MEMORY_TOTAL),
            used_bytes: Some(used),
            free_bytes: Some(MEMORY_TOTAL - MEMORY_RESERVED - used),
            reserved_bytes: Some(MEMORY_RESERVED),
        },
        temperature_gpu_celsius: Some(temperature.round()),
        temperature_memory_celsius: Some((temperature + 6.0).round()),
        temperature_thresholds: vec![
            (TempThreshold::Slowdown, 87.0),
            (TempThreshold::Shutdown, 92.0),
            (TempThreshold::MemoryMax, 95.0),
            (TempThreshold::GpuMax, 85.0),
        ]
        .into(),
        power_watts: Some((90.0 + 600.0 * util).round()),
        power_limit_watts: Some(700.0),
        energy_joules: None,
        clocks_hertz: vec![
            (Clock::Graphics, sm_mhz.round() * 1e6),
            (Clock::Sm, sm_mhz.round() * 1e6),
            (Clock::Memory, 2619e6),
            (Clock::Video, 1545e6),
        ],
        max_clocks_hertz: vec![
            (Clock::Graphics, 1980e6),
            (Clock::Sm, 1980e6),
            (Clock::Memory, 2619e6),
            (Clock::Video, 1755e6),
        ]
        .into(),
        performance_state: Some(0),
        fan_speed_ratio: Vec::new(),
        throttle: Some(ThrottleReasons {
            active,
            supported: 0x1FF,
        }),
        throttle_seconds: Vec::new(),
        ecc_errors: vec![
            (EccKind::Corrected, EccScope::Volatile, 0),
            (EccKind::Corrected, EccScope::Aggregate, 3),
            (EccKind::Uncorrected, EccScope::Volatile, 0),
            (EccKind::Uncorrected, EccScope::Aggregate, 0),
        ],
        retired_pages: vec![
            (RetiredCause::SingleBitEcc, 0),
            (RetiredCause::DoubleBitEcc, 0),
        ],
        retired_pages_pending: Some(false),
        remapped_rows: Some(RemappedRows::default()),
        pcie: PcieReadings {
            link_generation: Some(5),
            link_width: Some(16),
            replay_count: Some(0),
            tx_bytes_per_second: None,
            rx_bytes_per_second: None,
        },
        // As NVML GPM would report a training job: tensor-heavy, little FP64.
        profiling: Profiling {
            graphics_engine_active: Some(round3(util)),
            sm_active: Some(round3(util * 0.85)),
            sm_occupancy: Some(round3(util * 0.45)),
            dram_active: Some(round3(util * 0.55)),
            pipes: [
                Some(round3(util * 0.7)),
                Some(0.0),
                Some(round3(util * 0.15)),
                Some(round3(util * 0.05)),
            ],
            nvlink_tx_bytes_per_second: Some((util * 2.0e10).round()),
            nvlink_rx_bytes_per_second: Some((util * 1.8e10).round()),
        },
        nvlinks: (0..4)
            .map(|link| NvLinkReadings {
                link,
                active: true,
                errors: [Some(0); 4],
            })
            .collect(),
        processes: Some(vec![GpuProcess {
            pid: 4242 + identity.index,
            used_memory_bytes: Some(used.saturating_sub(GIB)),
            sm_utilization: Some(round3(util)),
            memory_utilization: Some(round3(util * 0.6)),
        }]),
        mig: Some(MigReadings::default()),
        recovery_action: Some(0),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How often `gpulse demo` injects a simulated Xid, so the Xid panels are not empty.
pub const DEMO_XID_EVERY: Duration = Duration::from_secs(180);

/// The `n`-th simulated Xid of `gpulse demo`: GPUs and codes taken in turn (a page fault, an
/// MMU fault, a contained ECC error, an NVLink error). A function of `n` only.
pub fn simulated_xid(n: u64, gpu: &GpuSample) -> Option<XidEvent> {
    const CODES: [u64; 4] = [13, 31, 94, 145];
    let count = gpu.devices.len() as u64;
    if count == 0 {
        return None;
    }
    let device = gpu.devices.get(usize::try_from(n % count).ok()?)?;
    let xid = CODES[usize::try_from(n % CODES.len() as u64).ok()?];
    Some(XidEvent {
        at: SystemTime::now(),
        gpu_index: Some(device.identity.index),
        uuid: device.identity.uuid.clone(),
        pci_bus_id: device.identity.pci_bus_id.clone(),
        xid,
        sources: vec![XidSource::NvmlEvent],
        detail: "simulated (gpulse demo)".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_xids_rotate_over_gpus_and_codes() {
        let mut sim = SimGpuCollector::new(2, Duration::from_secs(1));
        let gpu = sim.next_sample();
        let a = simulated_xid(0, &gpu).unwrap();
        let b = simulated_xid(1, &gpu).unwrap();
        assert_eq!((a.gpu_index, a.xid), (Some(0), 13));
        assert_eq!((b.gpu_index, b.xid), (Some(1), 31));
        assert!(
            simulated_xid(
                0,
                &GpuSample {
                    devices: vec![],
                    ..gpu
                }
            )
            .is_none()
        );
    }

    #[test]
    fn same_tick_same_readings() {
        let mut a = SimGpuCollector::new(2, Duration::from_secs(1));
        let mut b = SimGpuCollector::new(2, Duration::from_secs(1));
        for _ in 0..50 {
            let (x, y) = (a.next_sample(), b.next_sample());
            assert_eq!(x.devices[0].utilization, y.devices[0].utilization);
            assert_eq!(x.devices[1].memory, y.devices[1].memory);
        }
    }

    #[test]
    fn gpu1_throttles_once_per_period_and_its_counter_grows() {
        let mut sim = SimGpuCollector::new(2, Duration::from_secs(1));
        let samples: Vec<GpuSample> = (0..130).map(|_| sim.next_sample()).collect();
        let throttled = |s: &GpuSample, gpu: usize| {
            s.devices[gpu]
                .throttle
                .is_some_and(|r| r.active & HW_THERMAL_SLOWDOWN != 0)
        };
        assert!(!throttled(&samples[50], 1));
        assert!(throttled(&samples[110], 1));
        assert!(!throttled(&samples[125], 1));
        assert!(samples.iter().all(|s| !throttled(s, 0)));
        let thermal = |s: &GpuSample| s.devices[1].throttle_seconds[1].1;
        assert_eq!(thermal(&samples[99]), 0.0);
        assert_eq!(thermal(&samples[129]), 20.0);
    }

    #[test]
    fn readings_stay_in_range() {
        let mut sim = SimGpuCollector::new(4, Duration::from_millis(500));
        for _ in 0..2000 {
            for d in sim.next_sample().devices {
                let u = d.utilization.gpu.unwrap();
                assert!((0.0..=1.0).contains(&u));
                let m = d.memory;
                assert_eq!(
                    m.used_bytes.unwrap() + m.free_bytes.unwrap() + m.reserved_bytes.unwrap(),
                    m.total_bytes.unwrap()
                );
            }
        }
    }
}
