//! The health task: evaluates health when its inputs change and stores the result.
//!
//! It waits on the store's change counters ([`crate::store::Store::changes`]) instead of a
//! free-running timer: it evaluates after every GPU collector cycle (a sample, or a failure
//! that NVML stuck detection reads), at once on an Xid or an operator clear, and otherwise at
//! least every `health.idle_interval`, so reasons held for `hold_time` expire with no new input
//! (a node without the GPU collector). Each evaluation borrows the store's GPU window.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::health::{Input, NodeHealth, Policy, State, evaluate};
use crate::store::{Changes, Store};

/// The change counters health reads: GPU cycles, Xids and clears.
fn inputs(c: &Changes) -> (u64, u64, u64) {
    (c.gpu_cycles, c.xids, c.clears)
}

/// Evaluates health now and on each change of its inputs (at least every `idle`), storing
/// the result and logging each change of state once (per GPU and for the node), until `stop`.
pub async fn run(
    store: Arc<Store>,
    policy: Policy,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = store.changes();
    let mut current = Arc::new(NodeHealth::initial());
    loop {
        let seen = inputs(&changes.borrow_and_update());
        current = evaluate_once(&store, &policy, &current);
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            changed = changes.wait_for(|c| inputs(c) != seen) => {
                // The store outlives this task (it holds an Arc), so its sender never drops.
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(idle) => {}
        }
    }
}

/// One evaluation from the store's latest snapshot and window; returns the stored result.
fn evaluate_once(store: &Store, policy: &Policy, current: &NodeHealth) -> Arc<NodeHealth> {
    let snap = store.snapshot();
    let window = store.gpu_window();
    let now = SystemTime::now();
    let input = Input {
        status: snap.gpu_status(),
        sample: snap.gpu.as_deref(),
        window: window.points(),
        xid: &snap.xid,
        nvml_stuck: snap.gpu_stuck_for(now),
        clears: &snap.health_clears,
    };
    let next = Arc::new(evaluate(current, &input, policy, now));
    // Released before the next GPU sample arrives, so the store never copies the window.
    drop(window);
    log_changes(current, &next);
    store.set_health(Arc::clone(&next));
    next
}

fn log_changes(previous: &NodeHealth, next: &NodeHealth) {
    for gpu in &next.gpus {
        let from = previous.gpu(gpu.index).map_or(State::Unknown, |p| p.state);
        if from == gpu.state {
            continue;
        }
        let reasons: Vec<String> = gpu.reasons.iter().map(|r| r.code.label()).collect();
        let reasons = reasons.join(",");
        match gpu.state {
            State::Healthy | State::Unknown => tracing::info!(
                gpu = gpu.index, uuid = %gpu.uuid, from = %from, to = %gpu.state, "GPU health changed."
            ),
            _ => tracing::warn!(
                gpu = gpu.index, uuid = %gpu.uuid, from = %from, to = %gpu.state,
                reasons = %reasons, action = %gpu.action, "GPU health changed."
            ),
        }
    }
    if previous.state != next.state {
        tracing::info!(from = %previous.state, to = %next.state, action = %next.action, "Node health changed.");
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::time::Instant;

    use super::*;
    use crate::model::CollectorStatus;
    use crate::store::RunReport;

    fn evaluated_at(store: &Store) -> Option<SystemTime> {
        store
            .snapshot()
            .health
            .as_ref()
            .and_then(|h| h.evaluated_at)
    }

    /// Waits up to 5 s for health evaluated after `after`.
    async fn evaluated_since(store: &Store, after: Option<SystemTime>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if evaluated_at(store) > after {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// Health is evaluated at start, after a GPU cycle, and after the idle interval with no
    /// news; nothing else wakes it.
    #[tokio::test]
    async fn evaluates_at_start_on_each_gpu_cycle_and_when_idle() {
        let store = Arc::new(Store::new(
            NonZeroUsize::MIN,
            vec![CollectorStatus::new("gpu", Duration::from_secs(1))],
        ));
        let (stop_tx, stop) = watch::channel(false);
        let idle = Duration::from_millis(600);
        let task = tokio::spawn(run(Arc::clone(&store), Policy::default(), idle, stop));
        assert!(
            evaluated_since(&store, None).await,
            "no evaluation at start"
        );
        let first = evaluated_at(&store);
        // Another collector's cycle is no news for health.
        store.record_run("host", report());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(evaluated_at(&store), first);
        let cycle = Instant::now();
        store.record_run("gpu", report());
        assert!(
            evaluated_since(&store, first).await,
            "no evaluation after a GPU cycle"
        );
        assert!(
            cycle.elapsed() < idle,
            "the GPU cycle waited for the idle interval"
        );
        let second = evaluated_at(&store);
        assert!(
            evaluated_since(&store, second).await,
            "no evaluation when idle"
        );
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    fn report() -> RunReport {
        RunReport {
            duration: Duration::from_millis(1),
            finished_at: SystemTime::now(),
            outcome: Err(("unavailable", "no NVML".to_owned())),
        }
    }
}
