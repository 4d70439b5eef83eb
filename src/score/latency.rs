//! L, latency SLO attainment: the share of requests that met the probe's TTFT and latency SLOs,
//! against the objective (`L = min(1, attainment / latency_objective)`), and the window's
//! latency percentiles.
//!
//! The server's own histograms are preferred (organic traffic, many more requests than the
//! probe sends). They are marginal: one histogram for TTFT, one for end-to-end latency, with
//! no way to tell whether the request that missed one target also missed the other. So the
//! server attainment is the worse of the two marginal attainments, an upper bound on the share
//! meeting both (provider-quality.md §4.2 asks for the joint share, which only the synthetic
//! requests give). Without server histograms the synthetic requests give the joint share
//! directly: a request within both SLOs of all sent (a failed request never meets them).

use super::{
    Figure, LatencySummary, Part, Percentiles, Reach, Tally, Unmeasured, amount, num, share,
};
use crate::config::ScoreConfig;
use crate::model::{Bins, Evidence, LEDGER_BINS, bins_quantile};

/// L, the latency summary, and the raw attainment (for the cost at SLO).
pub(super) struct Latency {
    pub(super) part: Part,
    pub(super) summary: LatencySummary,
    /// The share of requests within the SLOs, before the objective; `None` without requests.
    pub(super) attainment: Option<f64>,
}

/// One marginal of the server's histograms summed over probes: requests within the SLO and
/// requests observed.
#[derive(Default)]
struct Marginal {
    within: f64,
    total: f64,
}

impl Marginal {
    fn add(&mut self, bins: Option<&Bins>, within: Option<f64>) {
        if let (Some(bins), Some(within)) = (bins, within) {
            let total = bins.iter().map(|n| *n as f64).sum::<f64>();
            self.total += total;
            // Estimated on the server's buckets, so it can drift past the count: cap it.
            self.within += amount(within).min(total);
        }
    }

    fn attainment(&self) -> Option<f64> {
        if self.total >= 1.0 {
            share(self.within, self.total)
        } else {
            None
        }
    }
}

pub(super) fn score(evidence: &Evidence, reach: &Reach, config: &ScoreConfig) -> Latency {
    let probes = &evidence.sum.probes;
    let (mut ttft, mut e2e) = (Marginal::default(), Marginal::default());
    for server in probes.iter().filter_map(|p| p.server.as_ref()) {
        ttft.add(server.ttft.as_ref(), server.ttft_within_slo);
        e2e.add(server.e2e.as_ref(), server.e2e_within_slo);
    }
    let marginals = [ttft.attainment(), e2e.attainment()];
    let server_attainment = marginals.iter().flatten().copied().reduce(f64::min);
    let mut detail = Vec::new();
    let (attainment, evidence_tally) = match server_attainment {
        Some(att) => {
            detail.push(("source", Figure::Word("server")));
            for (key, m) in [
                ("ttft_attainment", marginals[0]),
                ("e2e_attainment", marginals[1]),
            ] {
                if let Some(m) = m {
                    detail.push((key, num(m)));
                }
            }
            let total = ttft.total.max(e2e.total);
            (Some(att), tally(att * total, total))
        }
        None => {
            detail.push(("source", Figure::Word("probe")));
            let within: f64 = probes.iter().map(|p| p.requests_within_slo as f64).sum();
            let sent: f64 = probes
                .iter()
                .map(|p| p.requests_ok as f64 + p.requests_failed as f64)
                .sum();
            (share(within, sent), tally(within.min(sent), sent))
        }
    };
    let value = if reach.inference_probes == 0 && reach.metrics_probes == 0 {
        Err(Unmeasured::NotMeasurable)
    } else {
        match attainment {
            // latency_objective is checked to be above 0; the max only keeps a hand-built
            // config from dividing by 0.
            Some(att) => Ok((att / config.latency_objective.max(f64::MIN_POSITIVE)).min(1.0)),
            None => Err(Unmeasured::NoEvidence),
        }
    };
    if let Some(att) = attainment {
        detail.push(("attainment", num(att)));
    }
    detail.push(("objective", num(config.latency_objective)));
    Latency {
        part: Part {
            value,
            evidence: evidence_tally,
            detail,
        },
        summary: summary(evidence),
        attainment,
    }
}

fn tally(good: f64, total: f64) -> Tally {
    Tally {
        good,
        total,
        unit: "requests",
    }
}

/// p50/p95/p99 of TTFT and end-to-end latency: from the server's histograms when they hold
/// observations, else from the synthetic requests.
fn summary(evidence: &Evidence) -> LatencySummary {
    let probes = &evidence.sum.probes;
    let mut server = ([0u64; LEDGER_BINS], [0u64; LEDGER_BINS]);
    let mut probe = ([0u64; LEDGER_BINS], [0u64; LEDGER_BINS]);
    for p in probes {
        if let Some(s) = &p.server {
            add(&mut server.0, s.ttft.as_ref());
            add(&mut server.1, s.e2e.as_ref());
        }
        add(&mut probe.0, Some(&p.ttft));
        add(&mut probe.1, Some(&p.e2e));
    }
    let observed = |b: &(Bins, Bins)| b.0.iter().chain(&b.1).any(|n| *n > 0);
    let (source, (ttft, e2e)) = if observed(&server) {
        ("server", server)
    } else if observed(&probe) {
        ("probe", probe)
    } else {
        return LatencySummary::default();
    };
    LatencySummary {
        source,
        ttft: percentiles(&ttft),
        e2e: percentiles(&e2e),
    }
}

fn add(into: &mut Bins, from: Option<&Bins>) {
    if let Some(from) = from {
        for (a, b) in into.iter_mut().zip(from) {
            *a = a.saturating_add(*b);
        }
    }
}

fn percentiles(bins: &Bins) -> Percentiles {
    Percentiles {
        p50: bins_quantile(bins, 0.50),
        p95: bins_quantile(bins, 0.95),
        p99: bins_quantile(bins, 0.99),
    }
}
