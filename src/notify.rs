//! systemd's service notifications (`Type=notify`, sd_notify(3)): `READY=1` once the HTTP
//! listener is bound, `STOPPING=1` at shutdown, and `WATCHDOG=1` while the agent's own loops
//! make progress. Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing.
//!
//! What the watchdog guards is gpulse itself, not the GPU. A hung NVML call is already
//! tolerated: the GPU cycle gives up at `gpu.timeout`, the last sample is served as stale and
//! health reports the hang, so the collector loop keeps finishing cycles and the pings go on
//! (a restart would only hang in the same call again). A restart does fix gpulse wedged: the
//! async runtime no longer scheduling (the pinger is one of its tasks), the store's lock held
//! forever, or a collector loop that stopped finishing cycles. The pinger therefore pings
//! every half `WATCHDOG_USEC` only while each collector loop (`gpu`, `host`) has finished a
//! cycle within its interval + its timeout + one ping period ([`Progress`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::config::Config;
use crate::store::Store;

/// Whether a failed notification was logged already: one warning per process, not per ping.
static WARNED: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(error = %error, "Cannot notify systemd (NOTIFY_SOCKET); readiness and watchdog pings are lost.");
    }
}

/// `READY=1`: the listener on `listen` is bound, so a client that connects now is served.
pub fn ready(listen: Option<SocketAddr>) {
    let status = match listen {
        Some(addr) => format!("Serving on {addr}"),
        None => "Serving".to_owned(),
    };
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// `STOPPING=1`: shutdown began (the drain takes up to `agent.shutdown_grace_period`).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("Shutting down")]);
}

/// The collector loops the watchdog follows, each with the longest a healthy loop goes
/// between two finished cycles: its interval plus its cycle's deadline.
pub fn loops(config: &Config) -> Vec<(&'static str, Duration)> {
    let mut out = Vec::new();
    if config.gpu.enabled {
        out.push(("gpu", config.gpu.interval.0 + config.gpu.timeout.0));
    }
    if config.host.enabled {
        out.push(("host", config.host.interval.0 + config.host.timeout.0));
    }
    out
}

/// Pings `WATCHDOG=1` every half `WATCHDOG_USEC` while every loop of `loops` progresses, until
/// `stop`. Returns at once when systemd asked for no watchdog (or for another process's).
pub async fn watchdog(
    store: Arc<Store>,
    loops: Vec<(&'static str, Duration)>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    // Half the timeout, as sd_watchdog_enabled(3) advises; never a busy loop.
    let period = (timeout / 2).max(Duration::from_millis(10));
    tracing::info!(timeout = ?timeout, period = ?period, "systemd watchdog on.");
    let loops: Vec<_> = loops.into_iter().map(|(n, a)| (n, a + period)).collect();
    let mut progress = Progress::new(&loops, Instant::now());
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        let snap = store.snapshot();
        let runs = |name: &str| {
            snap.collectors
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.runs)
        };
        match progress.observe(runs, Instant::now()) {
            None => {
                if stalled {
                    tracing::info!("Collector loops progress again; watchdog pings resumed.");
                    send(&[NotifyState::Status("Serving")]);
                    stalled = false;
                }
                send(&[NotifyState::Watchdog]);
            }
            Some((name, idle)) => {
                if !stalled {
                    let status = format!("The {name} collector loop is stalled");
                    tracing::warn!(collector = name, idle = ?idle,
                        "Collector loop stalled: no cycle finished; withholding the watchdog ping, so systemd restarts gpulse.");
                    send(&[NotifyState::Status(&status)]);
                    stalled = true;
                }
            }
        }
    }
}

/// What the watchdog knows of each followed loop: its allowance, the last cycle count seen and
/// when that count last changed (a monotonic clock: a wall-clock step is not a stall).
#[derive(Debug)]
pub struct Progress {
    loops: Vec<Tracked>,
}

#[derive(Debug)]
struct Tracked {
    name: &'static str,
    allowance: Duration,
    runs: Option<u64>,
    since: Instant,
}

impl Progress {
    /// Starts following `loops` (name, allowance) at `now`: each has its allowance from now to
    /// finish a first cycle.
    pub fn new(loops: &[(&'static str, Duration)], now: Instant) -> Self {
        Self {
            loops: loops
                .iter()
                .map(|&(name, allowance)| Tracked {
                    name,
                    allowance,
                    runs: None,
                    since: now,
                })
                .collect(),
        }
    }

    /// Records each loop's finished-cycle count (`runs`; `None` for a loop the store does not
    /// know) at `now`, and returns the first loop that has not progressed within its allowance,
    /// with how long it has not: `None` when all progress.
    pub fn observe(
        &mut self,
        runs: impl Fn(&str) -> Option<u64>,
        now: Instant,
    ) -> Option<(&'static str, Duration)> {
        let mut first = None;
        for tracked in &mut self.loops {
            let count = runs(tracked.name);
            if count != tracked.runs {
                // The first observation only sets the baseline when it is still zero cycles.
                if tracked.runs.is_some() || count.unwrap_or(0) > 0 {
                    tracked.since = now;
                }
                tracked.runs = count;
            }
            let idle = now.saturating_duration_since(tracked.since);
            if first.is_none() && idle > tracked.allowance {
                first = Some((tracked.name, idle));
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn loops_that_finish_cycles_are_not_stalled() {
        let t0 = Instant::now();
        let mut p = Progress::new(&[("gpu", 3 * S), ("host", 10 * S)], t0);
        assert_eq!(p.observe(|_| Some(0), t0), None);
        // Each loop finished cycles within its allowance: fine however long the run.
        for i in 1..100u64 {
            let at = t0 + 2 * S * u32::try_from(i).unwrap();
            assert_eq!(p.observe(|_| Some(i), at), None, "at {i}");
        }
    }

    #[test]
    fn a_loop_without_a_new_cycle_past_its_allowance_is_stalled() {
        let t0 = Instant::now();
        let mut p = Progress::new(&[("gpu", 3 * S), ("host", 10 * S)], t0);
        assert_eq!(p.observe(|_| Some(1), t0 + S), None);
        // gpu stops at 5 cycles; host keeps going.
        assert_eq!(
            p.observe(|n| Some(if n == "gpu" { 5 } else { 2 }), t0 + 2 * S),
            None
        );
        assert_eq!(
            p.observe(|n| Some(if n == "gpu" { 5 } else { 3 }), t0 + 5 * S),
            None
        );
        assert_eq!(
            p.observe(|n| Some(if n == "gpu" { 5 } else { 4 }), t0 + 6 * S),
            Some(("gpu", 4 * S))
        );
        // It finishes a cycle again: no longer stalled.
        assert_eq!(
            p.observe(|n| Some(if n == "gpu" { 6 } else { 5 }), t0 + 7 * S),
            None
        );
    }

    #[test]
    fn a_loop_that_never_finishes_its_first_cycle_is_stalled() {
        let t0 = Instant::now();
        let mut p = Progress::new(&[("gpu", 3 * S)], t0);
        assert_eq!(p.observe(|_| Some(0), t0 + 2 * S), None);
        assert_eq!(p.observe(|_| Some(0), t0 + 4 * S), Some(("gpu", 4 * S)));
        // A loop the store does not list counts as no cycle at all.
        let mut p = Progress::new(&[("host", 3 * S)], t0);
        assert_eq!(p.observe(|_| None, t0 + 4 * S), Some(("host", 4 * S)));
    }

    #[test]
    fn the_allowance_is_interval_plus_timeout_of_enabled_collectors() {
        let mut config = Config::default();
        let want = vec![
            ("gpu", config.gpu.interval.0 + config.gpu.timeout.0),
            ("host", config.host.interval.0 + config.host.timeout.0),
        ];
        assert_eq!(loops(&config), want);
        config.gpu.enabled = false;
        assert_eq!(loops(&config), want[1..]);
        config.host.enabled = false;
        assert!(loops(&config).is_empty());
    }
}
