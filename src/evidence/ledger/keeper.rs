//! The ledger keeper: the task that accounts the store into the open minute every
//! `score.tick`, closes minutes into the ledger (and its file), scores the windows and
//! publishes the result in the store.
//!
//! The disk is optional: without `agent.state_dir`, or when the file cannot be opened or
//! written, the ledger lives in memory, one warning says so, and `gpulse_ledger_persistent`
//! is 0. A restart within a minute merges into that minute's record.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::account::{Accountant, JobCursor, Slo};
use super::disk::{self, Write, Writer};
use super::{Changes, Ledger};
use crate::config::{Config, ScoreConfig};
use crate::evidence::state::StateDb;
use crate::health::Policy;
use crate::model::{Bucket, Evidence, MINUTE_SECONDS};
use crate::score::{self, Reach, ScoreWindow};
use crate::store::{ScoreState, Snapshot, Store};

/// How late a tick may run when no store change wakes the keeper (see [`run`]).
const TICK_GRACE: Duration = Duration::from_millis(1500);

/// The fallback timer's longest wait: under 4.096 s, the reach of tokio's 1 ms and 64 ms
/// wheel levels, so a timer re-armed every second is never due (a farther one sits in the
/// 4 s level, whose slot boundaries wake the runtime to move it down).
const FALLBACK_MAX: Duration = Duration::from_millis(3500);

/// The meta key of the job cursor.
const JOB_CURSOR: &str = "job_cursor";

/// The ledger, its file, the accountant and the open minute.
pub struct Keeper {
    ledger: Ledger,
    writer: Option<Writer>,
    accountant: Accountant,
    open: Option<Bucket>,
    /// The windows' evidence of closed minutes, ending where the open minute ends.
    closed: Vec<Evidence>,
    config: Arc<ScoreConfig>,
    policy: Policy,
    reach: Reach,
    max_leases: usize,
    last_now: u64,
    /// The claims' verdicts last logged, so a mismatch is logged once per change.
    claims_logged: Vec<(&'static str, Option<bool>)>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Keeper {
    /// Reads the ledger back from the state store (blocking file I/O: call it off the async
    /// workers), or keeps it in memory without one, logging once which and why.
    pub fn open(config: &Config, policy: Policy, state: Option<StateDb>) -> Self {
        let score = &config.score;
        let minutes = score.minute_retention.0.as_secs();
        let hours = score.hour_retention.0.as_secs();
        let mut cursor = None;
        let restored = state.map(|state| (disk::restore(&state), state));
        let (ledger, writer) = match restored {
            None => (Ledger::new(minutes, hours), None),
            Some((Ok(restored), state)) => {
                cursor = restored
                    .meta
                    .iter()
                    .find(|(k, _)| k == JOB_CURSOR)
                    .and_then(|(_, v)| JobCursor::from_bytes(v));
                let ledger = Ledger::restored(
                    minutes,
                    hours,
                    restored.names,
                    restored.minutes,
                    restored.hours,
                );
                let status = ledger.status(true, 0);
                tracing::info!(file = %state.path().display(), minutes = status.minutes, hours = status.hours,
                    bytes = status.bytes, "Score ledger opened.");
                match Writer::start(state) {
                    Ok(writer) => (ledger, Some(writer)),
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot start the ledger writer; the score's evidence is kept in memory only.");
                        (ledger, None)
                    }
                }
            }
            Some((Err(e), _)) => {
                tracing::warn!(error = %e,
                    "Cannot read the score ledger; the score's evidence is kept in memory and starts over at each restart.");
                (Ledger::new(minutes, hours), None)
            }
        };
        let slos = config
            .probe
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Slo {
                        ttft: p.ttft_slo.0,
                        latency: p.latency_slo.0,
                    },
                )
            })
            .collect();
        let max_leases = usize::try_from(config.kubernetes.max_leases).unwrap_or(usize::MAX);
        let mut accountant = Accountant::new(slos, score.busy_utilization, max_leases);
        accountant.job = cursor;
        let reach = Reach {
            probes: config.probe.len(),
            inference_probes: config.probe.iter().filter(|p| p.inference).count(),
            metrics_probes: config.probe.iter().filter(|p| p.metrics).count(),
            ..Reach::default()
        };
        Self {
            ledger,
            writer,
            accountant,
            open: None,
            closed: Vec::new(),
            config: Arc::new(score.clone()),
            policy,
            reach,
            max_leases,
            last_now: 0,
            claims_logged: Vec::new(),
        }
    }

    /// Whether the ledger is kept on disk.
    pub fn persistent(&self) -> bool {
        self.writer.is_some()
    }

    fn write(&self, changes: Changes) {
        if let Some(writer) = &self.writer {
            let meta = self
                .accountant
                .job
                .map(|c| vec![(JOB_CURSOR.to_owned(), c.to_bytes())])
                .unwrap_or_default();
            writer.write(Write { changes, meta });
        }
    }

    fn recompute_closed(&mut self, open_start: u64) {
        let lens: Vec<u64> = ScoreWindow::ALL.iter().map(|w| w.seconds()).collect();
        self.closed = self
            .ledger
            .evidence(open_start + MINUTE_SECONDS, &lens, None);
    }

    /// One tick: accounts `snap` (taken at `now`, `dt` after the last tick) and returns the
    /// score to publish.
    pub fn tick(&mut self, snap: &Snapshot, now: SystemTime, dt: Duration) -> ScoreState {
        let now = unix(now);
        let minute = now - now % MINUTE_SECONDS;
        let stepped_back = self.last_now > now.saturating_add(1);
        self.last_now = now;
        let mut open = match self.open.take() {
            None => {
                self.recompute_closed(minute);
                let mut b = Bucket::new(minute, MINUTE_SECONDS);
                b.agent_starts = 1;
                b
            }
            Some(open) if minute > open.start => {
                let changes = self.ledger.push_minute(&open);
                self.write(changes);
                self.recompute_closed(minute);
                Bucket::new(minute, MINUTE_SECONDS)
            }
            // The same minute, or the clock stepped back: keep filling the open minute, so
            // no bucket is written out of order.
            Some(open) => open,
        };
        if stepped_back {
            open.clock_steps_back += 1;
        }
        let gpu_fresh = snap.gpu.is_some() && snap.collector("gpu").is_some_and(|c| c.last_success);
        self.accountant
            .account(snap, &mut open, dt, &self.policy, gpu_fresh);
        let state = self.evaluate(snap, &open, now);
        self.open = Some(open);
        state
    }

    fn evaluate(&mut self, snap: &Snapshot, open: &Bucket, now: u64) -> ScoreState {
        let reach = Reach {
            mode: snap.mode.mode,
            gpus: snap.gpu.is_some(),
            job: snap.job.is_some(),
            ..self.reach
        };
        let evidence: Vec<Evidence> = self
            .closed
            .iter()
            .map(|closed| {
                let mut evidence = closed.clone();
                evidence.add(open);
                evidence
            })
            .collect();
        let windows = ScoreWindow::ALL
            .iter()
            .zip(&evidence)
            .map(|(window, evidence)| score::evaluate(*window, evidence, &reach, &self.config))
            .collect();
        let leases = score::evaluate_leases(&evidence, reach.mode, &self.config, self.max_leases);
        let claims = score::check_claims(&self.config, snap.gpu.as_deref());
        let verdicts: Vec<(&'static str, Option<bool>)> =
            claims.iter().map(|c| (c.claim, c.ok)).collect();
        if verdicts != self.claims_logged {
            for c in &claims {
                match c.ok {
                    Some(false) => tracing::warn!(claim = c.claim, expected = %c.expected,
                        observed = c.observed.as_deref().unwrap_or(""),
                        "A claim of [score.expect] does not hold: NVML sees otherwise."),
                    Some(true) => tracing::debug!(claim = c.claim, "Claim holds."),
                    None => {}
                }
            }
            self.claims_logged = verdicts;
        }
        ScoreState {
            evaluated_at: now,
            windows,
            claims,
            reach,
            evidence,
            ledger: self.ledger.status(
                self.writer.is_some(),
                self.writer.as_ref().map_or(0, Writer::failures),
            ),
            config: Arc::clone(&self.config),
            leases,
        }
    }

    /// Writes the open minute and waits up to `timeout` for the file (at shutdown).
    pub fn flush(mut self, timeout: Duration) {
        if let Some(open) = self.open.take() {
            let changes = self.ledger.push_minute(&open);
            self.write(changes);
        }
        if let Some(writer) = self.writer.take()
            && !writer.finish(timeout)
        {
            tracing::warn!("The score ledger's last write did not finish in time.");
        }
    }
}

/// Runs the keeper every `score.tick` until `stop`, then writes the open minute.
pub async fn run(
    config: Config,
    store: Arc<Store>,
    policy: Policy,
    state: Option<StateDb>,
    mut stop: watch::Receiver<bool>,
) {
    let grace = config.agent.shutdown_grace_period.0;
    let tick_every = config.score.tick.0;
    let Ok(mut keeper) =
        tokio::task::spawn_blocking(move || Keeper::open(&config, policy, state)).await
    else {
        return;
    };
    // Ticks ride on the wake-ups the store's changes cause anyway (a GPU cycle every second):
    // a tick runs at the first change at least `tick_every` after the last one. Without
    // changes, a fallback timer runs it at most TICK_GRACE late; re-armed at every change and
    // never farther than FALLBACK_MAX, it does not fire while changes come, so it costs no
    // wake-up of its own.
    let mut changes = store.changes();
    let mut last: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if last.is_none_or(|last| now.duration_since(last) >= tick_every) {
            // A long pause (suspend, a stalled runtime) is not observed time.
            let dt = last.map_or(tick_every, |last| {
                now.duration_since(last).min(tick_every * 2)
            });
            last = Some(now);
            let snap = store.snapshot();
            let state = keeper.tick(&snap, SystemTime::now(), dt);
            store.set_score(state);
        }
        let due = last.map_or(now, |last| last + tick_every);
        let fallback = (due.saturating_duration_since(now) + TICK_GRACE).min(FALLBACK_MAX);
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            changed = changes.changed() => {
                // The store outlives this task (it holds an Arc): never an error.
                if changed.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep(fallback) => {}
        }
    }
    let _ = tokio::task::spawn_blocking(move || keeper.flush(grace / 2)).await;
}
