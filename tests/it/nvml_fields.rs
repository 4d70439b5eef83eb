//! The field-values path on the fake NVML: ECC, retired pages, PCIe replays and the NVLink
//! error totals read in the one `nvmlDeviceGetFieldValues` call per GPU, each reading the same
//! as through its own call when a field does not answer; the per-link NVLink states and
//! counters read again only when a total moved or an Xid arrived, counted through the fake's
//! own call counter.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gpulse::collect::gpu::{GpuOptions, NvmlSampler};
use gpulse::config::GpuConfig;
use gpulse::model::{GpuDevice, LabelValue, NvLinkReadings};

use crate::agent::Agent;
use crate::fake_nvml::FakeNvml;
use crate::nvml::{metric_value, wait_for};

const ERROR_COUNTER: &str = "nvmlDeviceGetNvLinkErrorCounter";
const LINK_STATE: &str = "nvmlDeviceGetNvLinkState";

fn sampler(lib: &Path) -> NvmlSampler {
    let mut options = GpuOptions::from_config(&GpuConfig::default(), Some(lib.to_owned()));
    options.retry_interval = Duration::from_millis(1);
    NvmlSampler::new(options)
}

/// `(link, active, [replay, recovery, crc_flit, crc_data])` per link of GPU `gpu`.
fn links(s: &mut NvmlSampler, gpu: usize) -> Vec<(u32, bool, [Option<u64>; 4])> {
    let sample = s.cycle().unwrap();
    sample.devices[gpu]
        .nvlinks
        .iter()
        .map(|l: &NvLinkReadings| (l.link, l.active, l.errors))
        .collect()
}

/// Per-link error-counter calls made by `run`.
fn counter_calls(fake: &FakeNvml, run: impl FnOnce()) -> u64 {
    let before = fake.calls(ERROR_COUNTER);
    run();
    fake.calls(ERROR_COUNTER) - before
}

#[test]
fn per_link_counters_are_read_again_only_when_a_total_moves() {
    let fake = FakeNvml::new("gpus=2\nnvlinks=4\n");
    let mut s = sampler(&fake.lib_path());
    let zero = [Some(0); 4];
    let up = |errors| (0..4).map(|l| (l, true, errors)).collect::<Vec<_>>();

    // 2 GPUs × 4 links × 4 counters on the first cycle, none while nothing moves.
    assert_eq!(
        counter_calls(&fake, || assert_eq!(links(&mut s, 1), up(zero))),
        32
    );
    let states = fake.calls(LINK_STATE);
    for _ in 0..3 {
        assert_eq!(
            counter_calls(&fake, || assert_eq!(links(&mut s, 1), up(zero))),
            0
        );
    }
    // Link states are kept with the counters: no state call either while nothing moves.
    assert_eq!(fake.calls(LINK_STATE) - states, 0);

    // GPU 1's counter moves mid-run: its links are read again, GPU 0's are not.
    fake.set_config("gpus=2\nnvlinks=4\ngpu1.nvlink_crc_flit=7\n");
    let seven = [Some(0), Some(0), Some(7), Some(0)];
    let states = fake.calls(LINK_STATE);
    assert_eq!(
        counter_calls(&fake, || assert_eq!(links(&mut s, 1), up(seven))),
        16
    );
    // 4 links and the one past the last.
    assert_eq!(fake.calls(LINK_STATE) - states, 5);
    assert_eq!(
        counter_calls(&fake, || assert_eq!(links(&mut s, 1), up(seven))),
        0
    );

    // Counters reset (the totals fall): read again.
    fake.set_config("gpus=2\nnvlinks=4\n");
    assert_eq!(
        counter_calls(&fake, || assert_eq!(links(&mut s, 1), up(zero))),
        16
    );
}

#[test]
fn an_xid_reads_every_link_of_every_gpu_in_the_next_cycle() {
    let fake = FakeNvml::new("gpus=2\nnvlinks=4\n");
    let mut s = sampler(&fake.lib_path());
    let xids = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&xids);
    s.set_xid_count(Arc::new(move || count.load(Ordering::Relaxed)));
    let zero = [Some(0); 4];
    assert_eq!(counter_calls(&fake, || drop(links(&mut s, 0))), 32);

    // A link goes down while the totals stand still: the cache holds until news comes.
    fake.set_config("gpus=2\nnvlinks=4\ngpu0.nvlink_down=2\n");
    assert_eq!(
        counter_calls(&fake, || assert_eq!(links(&mut s, 0)[2], (2, true, zero))),
        0
    );
    // An Xid (74 would come with a link going down): every GPU's links, states fresh.
    xids.fetch_add(1, Ordering::Relaxed);
    let states = fake.calls(LINK_STATE);
    assert_eq!(
        counter_calls(&fake, || assert_eq!(links(&mut s, 0)[2], (2, false, zero))),
        32
    );
    assert_eq!(fake.calls(LINK_STATE) - states, 2 * 5);
    // Once: the next cycle is served from the cache again.
    assert_eq!(
        counter_calls(&fake, || assert_eq!(links(&mut s, 0)[2], (2, false, zero))),
        0
    );
}

#[test]
fn a_total_that_does_not_answer_reads_every_link_every_cycle() {
    // One of the four totals missing is enough: it could hide its counter's moves.
    let fake = FakeNvml::new("gpus=1\nnvlinks=3\nnvlink_replay=2\nfield_not_supported=52\n");
    let mut s = sampler(&fake.lib_path());
    let want: Vec<_> = (0..3)
        .map(|l| (l, true, [Some(2), Some(0), Some(0), Some(0)]))
        .collect();
    for _ in 0..3 {
        assert_eq!(
            counter_calls(&fake, || assert_eq!(links(&mut s, 0), want)),
            12
        );
    }
}

/// A fake with every reading this path touches away from its default (and from 0).
const COUNTERS: &str = "gpus=2\nnvlinks=4\n\
    ecc_corrected_volatile=3\necc_corrected_aggregate=9\n\
    ecc_uncorrected_volatile=1\necc_uncorrected_aggregate=2\n\
    retired_sbe=2\nretired_dbe=1\nretired_pending=1\npcie_replay=11\n\
    nvlink_replay=1\nnvlink_recovery=2\nnvlink_crc_flit=3\nnvlink_crc_data=4\ngpu1.nvlink_down=1\n";

/// Every field id gpulse reads beside the older ones (HBM temperature, remapped rows, recovery).
const NEW_FIELDS: &str = "3,4,5,6,29,30,31,38,45,52,59,94";

/// What the fields (or their fallback calls) feed, for comparing two fakes' readings.
type Projection = (
    Vec<(&'static str, &'static str, u64)>,
    Vec<(&'static str, u64)>,
    Option<bool>,
    Option<u64>,
    Vec<NvLinkReadings>,
);

fn project(d: &GpuDevice) -> Projection {
    (
        d.ecc_errors
            .iter()
            .map(|(k, s, n)| (k.prom(), s.prom(), *n))
            .collect(),
        d.retired_pages
            .iter()
            .map(|(c, n)| (c.prom(), *n))
            .collect(),
        d.retired_pages_pending,
        d.pcie.replay_count,
        d.nvlinks.to_vec(),
    )
}

/// Two cycles' readings of every GPU, and the direct calls they took.
fn read_twice(config: &str) -> (Vec<Vec<Projection>>, [u64; 5]) {
    let fake = FakeNvml::new(config);
    let mut s = sampler(&fake.lib_path());
    let readings = (0..2)
        .map(|_| s.cycle().unwrap().devices.iter().map(project).collect())
        .collect();
    let calls = [
        "nvmlDeviceGetTotalEccErrors",
        "nvmlDeviceGetRetiredPages",
        "nvmlDeviceGetRetiredPagesPendingStatus",
        "nvmlDeviceGetPcieReplayCounter",
        ERROR_COUNTER,
    ]
    .map(|sym| fake.calls(sym));
    (readings, calls)
}

#[test]
fn readings_are_the_same_whether_fields_or_their_own_calls_answer() {
    let (fields, field_calls) = read_twice(COUNTERS);
    let (fallback, fallback_calls) =
        read_twice(&format!("{COUNTERS}field_not_supported={NEW_FIELDS}\n"));
    let (no_fields, no_fields_calls) = read_twice(&format!(
        "{COUNTERS}not_supported=nvmlDeviceGetFieldValues\n"
    ));
    assert_eq!(fields, fallback);
    assert_eq!(fields, no_fields);

    // And they are the configured values, not two empty lists agreeing.
    let gpu1 = &fields[1][1];
    assert_eq!(
        gpu1.0,
        [
            ("corrected", "volatile", 3),
            ("corrected", "aggregate", 9),
            ("uncorrected", "volatile", 1),
            ("uncorrected", "aggregate", 2),
        ]
    );
    assert_eq!(gpu1.1, [("single_bit_ecc", 2), ("double_bit_ecc", 1)]);
    assert_eq!((gpu1.2, gpu1.3), (Some(true), Some(11)));
    let errors = [Some(1), Some(2), Some(3), Some(4)];
    let want: Vec<_> = (0..4)
        .map(|link| NvLinkReadings {
            link,
            active: link != 1,
            errors,
        })
        .collect();
    assert_eq!(gpu1.4, want);

    // The fields spared every direct call but the first cycle's per-link counters
    // (2 GPUs × 4 links × 4); without them, each cycle makes all of them: 2 cycles × 2 GPUs ×
    // (4 ECC, 2 retired-page counts, 1 pending, 1 replay, 16 per-link counters).
    assert_eq!(field_calls, [0, 0, 0, 0, 32]);
    assert_eq!(fallback_calls, [16, 8, 4, 4, 64]);
    assert_eq!(no_fields_calls, fallback_calls);
}

#[test]
fn a_refused_reading_is_omitted_whichever_way_it_is_read() {
    // The fake refuses a field as its reading's own call is refused (as a driver does).
    let (readings, _) = read_twice(&format!(
        "{COUNTERS}no_permission=nvmlDeviceGetTotalEccErrors,{ERROR_COUNTER}\n\
         gpu1.not_supported=nvmlDeviceGetPcieReplayCounter,nvmlDeviceGetRetiredPages\n"
    ));
    for gpu in &readings[1] {
        assert!(gpu.0.is_empty(), "{:?}", gpu.0);
        assert_eq!(gpu.4.len(), 4);
        assert!(gpu.4.iter().all(|l| l.errors == [None; 4]), "{:?}", gpu.4);
        assert_eq!(gpu.2, Some(true));
    }
    let (gpu0, gpu1) = (&readings[1][0], &readings[1][1]);
    assert_eq!((gpu0.1.len(), gpu0.3), (2, Some(11)));
    assert_eq!((gpu1.1.len(), gpu1.3), (0, None));
}

/// End to end: a per-link counter that moves while the agent runs shows on /metrics.
#[test]
fn per_link_counters_follow_the_driver_mid_run() {
    let fake = FakeNvml::new("gpus=1\nnvlinks=2\n");
    let lib = fake.lib_path();
    let agent = Agent::on_nvml(&lib, "100ms", std::iter::empty::<(&str, &str)>());
    // crc_data of link `link`, as /metrics shows it.
    let crc_data = |b: &str, link: u32| -> Option<f64> {
        let link = format!("link=\"{link}\"");
        let labels = ["gpu=\"0\"", &link, "counter=\"crc_data\""];
        metric_value(b, "gpulse_gpu_nvlink_errors_total", &labels)
    };
    let has = |n: f64| move |b: &str| (0..2).all(|l| crc_data(b, l) == Some(n));
    wait_for(&agent, "crc_data 0 on both links", has(0.0));
    for n in [5, 6] {
        fake.set_config(&format!("gpus=1\nnvlinks=2\nnvlink_crc_data={n}\n"));
        let set_at = Instant::now();
        wait_for(
            &agent,
            &format!("crc_data {n} on both links"),
            has(f64::from(n)),
        );
        // Within a few 100 ms cycles, not only at the 10 s recheck.
        let took = set_at.elapsed();
        assert!(took < Duration::from_secs(5), "crc_data {n} took {took:?}");
    }
}

/// End to end: a link that goes down with an Xid 74 (as a driver reports it) shows on /metrics
/// within a few cycles, not only at the 10 s recheck of the cached link states.
#[test]
fn a_link_down_with_an_xid_shows_at_once() {
    let fake = FakeNvml::new("gpus=1\nnvlinks=2\n");
    let lib = fake.lib_path();
    let agent = Agent::on_nvml(&lib, "100ms", std::iter::empty::<(&str, &str)>());
    // gpulse_gpu_nvlink_active of link 1, as /metrics shows it.
    let link1 = |b: &str| metric_value(b, "gpulse_gpu_nvlink_active", &["gpu=\"0\"", "link=\"1\""]);
    wait_for(&agent, "link 1 active", |b| link1(b) == Some(1.0));
    fake.set_config("gpus=1\nnvlinks=2\ngpu0.nvlink_down=1\nxid=0:74\n");
    let set_at = Instant::now();
    wait_for(&agent, "link 1 down", |b| link1(b) == Some(0.0));
    let took = set_at.elapsed();
    assert!(took < Duration::from_secs(5), "link down took {took:?}");
}
