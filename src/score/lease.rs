//! The per-lease view: each Akash lease's GPU health (H), throttling (T) and GPU-critical gate
//! over the time it held its GPUs, from the ledger's per-lease tallies.
//!
//! A lease is scored only on what the node's agent sees of it: its GPUs. Its server's
//! availability, latency and completions are the tenant's (a DaemonSet cannot probe them), and
//! recovery counts the node's outages and job runs, so those four are `not_measurable` here
//! and the lease's total is the weighted geometric mean of H and T under the gate. A previous
//! tenant's Xid on the same GPU is not the lease's: the tallies only count while the kubelet
//! had the GPU assigned to the lease's namespace.

use super::{Reach, ScoreWindow, WindowScore, evaluate};
use crate::config::ScoreConfig;
use crate::mode::Mode;
use crate::model::Evidence;

/// One lease's score, per window it was seen in.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseScore {
    /// `owner/dseq/gseq/oseq/provider` (`NamespaceLease::key`).
    pub lease: String,
    /// Unix seconds just past the newest ledger minute that held the lease.
    pub last_seen: u64,
    /// The windows (in [`ScoreWindow::ALL`] order) whose evidence holds the lease.
    pub windows: Vec<WindowScore>,
}

/// Scores every lease of `evidence` (one per window, in [`ScoreWindow::ALL`] order), at most
/// `max` of them: the most recently seen, ties by key. Sorted by key.
pub fn evaluate_leases(
    evidence: &[Evidence],
    mode: Mode,
    config: &ScoreConfig,
    max: usize,
) -> Vec<LeaseScore> {
    let mut seen: Vec<(u64, &str)> = Vec::new();
    for e in evidence {
        for mark in &e.lease_marks {
            match seen.iter_mut().find(|(_, key)| *key == mark.lease) {
                Some((last, _)) => *last = (*last).max(mark.last_end),
                None => seen.push((mark.last_end, &mark.lease)),
            }
        }
    }
    seen.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    seen.truncate(max);
    seen.sort_by(|a, b| a.1.cmp(b.1));
    // What the node sees of a lease: its GPUs, nothing else.
    let reach = Reach {
        mode,
        gpus: true,
        ..Reach::default()
    };
    seen.into_iter()
        .map(|(last_seen, key)| LeaseScore {
            lease: key.to_owned(),
            last_seen,
            windows: ScoreWindow::ALL
                .iter()
                .zip(evidence)
                .filter_map(|(window, e)| {
                    let lease = e.of_lease(key)?;
                    let mut score = evaluate(*window, &lease, &reach, config);
                    // The node's price is not the lease's.
                    score.cost = None;
                    Some(score)
                })
                .collect(),
        })
        .collect()
}
