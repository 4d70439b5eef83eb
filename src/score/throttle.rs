//! T, throttle: the share of busy GPU time spent throttled for hardware reasons.
//!
//! `s = throttled_busy_seconds / busy_seconds` over all GPUs and `T = max(0, 1 − s /
//! throttle_tolerance)`. Only busy time counts: an idle GPU drops its clocks on purpose and
//! cannot show throttling, so a window without busy seconds has no evidence. The software power
//! cap is the operator's choice, not a fault: it is reported per reason but was never counted
//! into `throttled_busy_seconds`.

use super::{Figure, Part, Reach, Tally, Unmeasured, num, share};
use crate::config::ScoreConfig;
use crate::model::Evidence;

pub(super) fn score(evidence: &Evidence, reach: &Reach, config: &ScoreConfig) -> Part {
    let gpus = &evidence.sum.gpus;
    let busy: f64 = gpus.iter().map(|g| g.busy_seconds as f64).sum();
    let throttled: f64 = gpus
        .iter()
        .map(|g| g.throttled_busy_seconds as f64)
        .sum::<f64>()
        .min(busy);
    let throttled_share = share(throttled, busy);
    let value = if !reach.gpus {
        Err(Unmeasured::NotMeasurable)
    } else {
        match throttled_share {
            // throttle_tolerance is checked to be above 0; the max keeps a hand-built config
            // from dividing by 0.
            Some(s) => Ok((1.0 - s / config.throttle_tolerance.max(f64::MIN_POSITIVE)).max(0.0)),
            None => Err(Unmeasured::NoEvidence),
        }
    };
    let mut detail = vec![
        ("busy_seconds", num(busy)),
        ("throttled_busy_seconds", num(throttled)),
    ];
    if let Some(s) = throttled_share {
        detail.push(("throttled_share", num(s)));
    } else if reach.gpus {
        detail.push((
            "note",
            Figure::Word("no busy GPU seconds: an idle GPU cannot show throttling"),
        ));
    }
    // Busy seconds per active reason, summed over GPUs, the software power cap included.
    let mut reasons: Vec<(&'static str, u64)> = Vec::new();
    for (reason, secs) in gpus.iter().flat_map(|g| &g.throttle_reasons) {
        match reasons.iter_mut().find(|(r, _)| *r == reason.as_str()) {
            Some((_, total)) => *total = total.saturating_add(*secs),
            None => reasons.push((reason.as_str(), *secs)),
        }
    }
    reasons.sort();
    detail.extend(
        reasons
            .into_iter()
            .map(|(r, secs)| (r, Figure::Count(secs))),
    );
    Part {
        value,
        evidence: Tally {
            good: busy - throttled,
            total: busy,
            unit: "seconds",
        },
        detail,
    }
}
