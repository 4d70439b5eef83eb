//! C, completion: the share of requests that finished successfully.
//!
//! The server's own counters (organic traffic) when they counted at least
//! `completion_min_requests` in the window: below that a handful of requests would swing C,
//! so the synthetic requests are used instead. A server counts only when it exposes both its
//! successes and its failures (one without the other would read as 100 % or 0 %). When there
//! are no synthetic requests at all, the few server-counted ones are still better than
//! nothing. The wrapped job's runs are not requests: a crashed run is an incident for R.

use super::{Figure, Part, Reach, Tally, Unmeasured, num, share};
use crate::config::ScoreConfig;
use crate::model::Evidence;

pub(super) fn score(evidence: &Evidence, reach: &Reach, config: &ScoreConfig) -> Part {
    let probes = &evidence.sum.probes;
    let (mut server_ok, mut server_failed, mut resets) = (0.0, 0.0, 0u64);
    for server in probes.iter().filter_map(|p| p.server.as_ref()) {
        if let (Some(ok), Some(failed)) = (server.requests_ok, server.requests_failed) {
            server_ok += ok as f64;
            server_failed += failed as f64;
            resets = resets.saturating_add(server.counter_resets);
        }
    }
    let probe_ok: f64 = probes.iter().map(|p| p.requests_ok as f64).sum();
    let probe_failed: f64 = probes.iter().map(|p| p.requests_failed as f64).sum();
    let server_total = server_ok + server_failed;
    let use_server = server_total >= config.completion_min_requests as f64
        || (probe_ok + probe_failed == 0.0 && server_total > 0.0);
    let (source, ok, total) = if use_server {
        ("server", server_ok, server_total)
    } else {
        ("probe", probe_ok, probe_ok + probe_failed)
    };
    let value = if reach.inference_probes == 0 && reach.metrics_probes == 0 {
        Err(Unmeasured::NotMeasurable)
    } else {
        share(ok, total).ok_or(Unmeasured::NoEvidence)
    };
    let mut detail = vec![
        ("source", Figure::Word(source)),
        ("ok", num(ok)),
        ("failed", num(total - ok)),
    ];
    if use_server && resets > 0 {
        // The server restarted: its counters began again, and the value after the reset
        // counted as the delta, so nothing was lost; worth knowing when reading C.
        detail.push(("counter_resets", Figure::Count(resets)));
    }
    Part {
        value,
        evidence: Tally {
            good: ok,
            total,
            unit: "requests",
        },
        detail,
    }
}
