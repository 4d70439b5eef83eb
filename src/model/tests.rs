//! Unit tests of the GPU and collector types.

use std::sync::Arc;

use super::*;

#[test]
fn throttle_decode_lists_only_supported_reasons() {
    let t = ThrottleReasons {
        active: 0x8 | 0x40,
        supported: 0x1 | 0x8 | 0x40,
    };
    let decoded: Vec<_> = t.decoded().map(|(r, on)| (r.prom(), on)).collect();
    assert_eq!(
        decoded,
        vec![
            ("gpu_idle", false),
            ("hw_slowdown", true),
            ("hw_thermal_slowdown", true)
        ]
    );
}

#[test]
fn window_points_keep_the_numbers_that_matter() {
    let device = GpuDevice {
        identity: Arc::new(GpuIdentity {
            index: 3,
            ..GpuIdentity::default()
        }),
        utilization: Utilization {
            gpu: Some(0.25),
            ..Utilization::default()
        },
        throttle: Some(ThrottleReasons {
            active: 0x40,
            supported: 0x1FF,
        }),
        ecc_errors: vec![
            (EccKind::Corrected, EccScope::Volatile, 9),
            (EccKind::Uncorrected, EccScope::Volatile, 2),
        ],
        remapped_rows: Some(RemappedRows {
            pending: true,
            ..RemappedRows::default()
        }),
        ..GpuDevice::default()
    };
    let p = GpuPoint::from(&device);
    assert_eq!(p.index, 3);
    assert_eq!(p.utilization, Some(0.25));
    assert_eq!(p.throttle_active, Some(0x40));
    assert_eq!(p.ecc_uncorrected_volatile, Some(2));
    assert!(p.row_remap_pending && !p.row_remap_failure);
    assert_eq!(p.power_watts, None);
    // The point is what keeps the window small: no heap, a few dozen bytes.
    assert!(std::mem::size_of::<GpuPoint>() <= 96);
}

#[test]
fn stale_only_after_an_earlier_success() {
    let mut s = CollectorStatus::new("gpu", Duration::from_secs(1));
    assert!(!s.is_stale());
    s.last_success_at = Some(SystemTime::UNIX_EPOCH);
    s.last_success = false;
    assert!(s.is_stale());
    s.last_success = true;
    assert!(!s.is_stale());
}
