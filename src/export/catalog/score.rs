//! The provider-quality score's families: sub-scores and the total per window, the evidence
//! counts behind them (for fleet recording rules), gates, cost per inference, claims, and the
//! evidence ledger's own state.

use super::{Ctx, Family, Kind, Scope, Series, Val, dim, flag};
use crate::model::lease_key_parts;
use crate::score::{Component, Cost, Unmeasured, WindowScore};
use crate::store::ScoreState;

plain_family!(node, Scope::Node);

const COMPONENT: super::Dim = dim("component", "gpulse.score.component");
const WINDOW: super::Dim = dim("window", "gpulse.score.window");

/// Calls `f` for every window of the published score.
fn windows<'a>(c: &Ctx<'a>, mut f: impl FnMut(&'a ScoreState, &'a WindowScore)) {
    if let Some(state) = &c.snap.score {
        for w in &state.windows {
            f(state, w);
        }
    }
}

/// The lease-id labels of the per-lease families, in the order of
/// `gpulse_kubernetes_namespace_lease_info`'s.
const LEASE: [super::Dim; 5] = [
    dim("owner", "akash.owner"),
    dim("provider", "akash.provider"),
    dim("dseq", "akash.deployment.dseq"),
    dim("gseq", "akash.group.gseq"),
    dim("oseq", "akash.order.oseq"),
];

/// Calls `f` with every scored lease's id labels and each of its windows.
fn lease_windows<'a>(c: &Ctx<'a>, mut f: impl FnMut([Val<'a>; 5], &'a WindowScore)) {
    for lease in c.snap.score.iter().flat_map(|s| &s.leases) {
        let label = |p: &'a str| Val::Opt(Some(p).filter(|p| !p.is_empty()));
        let [owner, dseq, gseq, oseq, provider] = lease_key_parts(&lease.lease);
        let ids = [owner, provider, dseq, gseq, oseq].map(label);
        for w in &lease.windows {
            f(ids, w);
        }
    }
}

fn window_value<'a>(c: &Ctx<'a>, s: &mut Series<'a>, value: fn(&WindowScore) -> Option<f64>) {
    windows(c, |_, w| s.node([Val::Str(w.window.as_str())], value(w)));
}

/// A cost family: by window, currency and basis (`all` requests or only those in the SLOs).
const fn cost_family(
    prom: &'static str,
    otel: &'static str,
    help: &'static str,
    series: super::SeriesFn,
) -> Family {
    Family {
        dims: COST_DIMS,
        ..node(prom, otel, "{currency}", help, Kind::Gauge, series)
    }
}

const COST_DIMS: &[super::Dim] = &[
    WINDOW,
    dim("currency", "gpulse.cost.currency"),
    dim("basis", "gpulse.cost.basis"),
];

/// The rows of a cost family: `pick` gives the `all` and `slo` values of a window's cost.
fn cost_series<'a>(c: &Ctx<'a>, s: &mut Series<'a>, pick: fn(&Cost) -> (Option<f64>, Option<f64>)) {
    windows(c, |_, w| {
        if let Some(cost) = &w.cost {
            let (all, slo) = pick(cost);
            let (win, cur) = (Val::Str(w.window.as_str()), Val::Str(&cost.currency));
            s.node([win, cur, Val::Str("all")], all);
            s.node([win, cur, Val::Str("slo")], slo);
        }
    });
}

pub const FAMILIES: &[Family] = &[
    Family {
        dims: &[COMPONENT, WINDOW],
        ..node(
            "gpulse_score",
            "gpulse.score",
            "1",
            "Provider-quality score 0-100 per window: each sub-score (availability, latency, completion, health, throttle, recovery) and the total (gates times the weighted geometric mean); absent while unmeasured (docs/scoring.md).",
            Kind::Gauge,
            |c, s| {
                windows(c, |_, w| {
                    let window = Val::Str(w.window.as_str());
                    for comp in &w.components {
                        s.node([Val::Str(comp.component.as_str()), window], comp.value);
                    }
                    s.node([Val::Str("total"), window], w.total);
                });
            },
        )
    },
    Family {
        dims: &[COMPONENT],
        ..node(
            "gpulse_score_measured",
            "gpulse.score.measured",
            "1",
            "1 if this agent can measure the sub-score where it runs (mode, probes, GPUs, wrapped job), 0 if it cannot.",
            Kind::Gauge,
            |c, s| {
                if let Some(w) = c.snap.score.as_ref().and_then(|s| s.windows.first()) {
                    for comp in &w.components {
                        let measurable = comp.unmeasured != Some(Unmeasured::NotMeasurable);
                        s.node([Val::Str(comp.component.as_str())], Some(flag(measurable)));
                    }
                }
            },
        )
    },
    Family {
        dims: &[COMPONENT, WINDOW, dim("outcome", "gpulse.score.outcome")],
        ..node(
            "gpulse_score_evidence",
            "gpulse.score.evidence",
            "1",
            "The counts a sub-score used in the window, good and bad (checks, requests or GPU-seconds): sum them across agents, then divide.",
            Kind::Gauge,
            |c, s| {
                windows(c, |_, w| {
                    let window = Val::Str(w.window.as_str());
                    for comp in &w.components {
                        let e = comp.evidence;
                        if e.total <= 0.0 || comp.component == Component::Recovery {
                            continue;
                        }
                        let name = Val::Str(comp.component.as_str());
                        s.node([name, window, Val::Str("good")], Some(e.good));
                        s.node(
                            [name, window, Val::Str("bad")],
                            Some((e.total - e.good).max(0.0)),
                        );
                    }
                });
            },
        )
    },
    Family {
        dims: &[WINDOW],
        ..node(
            "gpulse_score_incidents",
            "gpulse.score.incidents",
            "{incident}",
            "Outages and failed runs of the wrapped job in the window.",
            Kind::Gauge,
            |c, s| window_value(c, s, |w| Some(w.recovery.incidents)),
        )
    },
    Family {
        dims: &[WINDOW],
        ..node(
            "gpulse_score_recoveries",
            "gpulse.score.recoveries",
            "{recovery}",
            "Outages that ended and restarts that became ready again in the window.",
            Kind::Gauge,
            |c, s| window_value(c, s, |w| Some(w.recovery.recoveries)),
        )
    },
    Family {
        dims: &[WINDOW, dim("stat", "gpulse.score.stat")],
        ..node(
            "gpulse_score_recovery_seconds",
            "gpulse.score.recovery",
            "s",
            "Time to recover in the window: the sum over recoveries (stat=sum) and the longest (stat=max).",
            Kind::Gauge,
            |c, s| {
                windows(c, |_, w| {
                    let window = Val::Str(w.window.as_str());
                    let sum = Some(w.recovery.recovery_seconds_sum);
                    let max = Some(w.recovery.recovery_seconds_max);
                    s.node([window, Val::Str("sum")], sum);
                    s.node([window, Val::Str("max")], max);
                });
            },
        )
    },
    Family {
        dims: &[dim("gate", "gpulse.score.gate"), WINDOW],
        ..node(
            "gpulse_score_gate_open",
            "gpulse.score.gate.open",
            "1",
            "1 if the gate is open, 0 if closed (the total is then 0): gpu_critical (a critical GPU condition, held for score.health_hold) and availability (below score.availability_gate).",
            Kind::Gauge,
            |c, s| {
                windows(c, |_, w| {
                    for g in &w.gates {
                        s.node(
                            [Val::Str(g.name), Val::Str(w.window.as_str())],
                            g.open.map(flag),
                        );
                    }
                });
            },
        )
    },
    Family {
        dims: &[WINDOW],
        ..node(
            "gpulse_score_observed_seconds",
            "gpulse.score.observed",
            "s",
            "Seconds of the window the agent was running and accounting evidence (the rest is unobserved, never counted as up or down).",
            Kind::Gauge,
            |c, s| window_value(c, s, |w| Some(w.observed_seconds as f64)),
        )
    },
    Family {
        dims: &[
            LEASE[0], LEASE[1], LEASE[2], LEASE[3], LEASE[4], COMPONENT, WINDOW,
        ],
        ..node(
            "gpulse_lease_score",
            "gpulse.lease.score",
            "1",
            "The per-lease view (kubernetes.lease_labels): each Akash lease's health and throttle sub-scores and total 0-100 per window, over its GPUs while the lease held them; the sub-scores a node cannot see of a lease are absent (docs/scoring.md).",
            Kind::Gauge,
            |c, s| {
                lease_windows(c, |[o, d, g, r, p], w| {
                    let window = Val::Str(w.window.as_str());
                    for comp in w.components.iter().filter(|c| c.value.is_some()) {
                        let name = Val::Str(comp.component.as_str());
                        s.node([o, d, g, r, p, name, window], comp.value);
                    }
                    s.node([o, d, g, r, p, Val::Str("total"), window], w.total);
                });
            },
        )
    },
    Family {
        dims: &[LEASE[0], LEASE[1], LEASE[2], LEASE[3], LEASE[4], WINDOW],
        ..node(
            "gpulse_lease_observed_seconds",
            "gpulse.lease.observed",
            "s",
            "Seconds of the window the lease held at least one sampled GPU on this node: the time its score covers.",
            Kind::Gauge,
            |c, s| {
                lease_windows(c, |[o, d, g, r, p], w| {
                    let window = Val::Str(w.window.as_str());
                    s.node([o, d, g, r, p, window], Some(w.observed_seconds as f64));
                });
            },
        )
    },
    Family {
        dims: &[dim("currency", "gpulse.cost.currency")],
        ..node(
            "gpulse_price_per_hour",
            "gpulse.cost.price_per_hour",
            "{currency}/h",
            "What the GPUs cost per hour, as configured (score.price_per_hour, the lease price).",
            Kind::Gauge,
            |c, s| {
                if let Some(state) = &c.snap.score
                    && let Some(price) = state.config.price()
                {
                    s.node([Val::Str(&state.config.currency)], Some(price));
                }
            },
        )
    },
    cost_family(
        "gpulse_cost_per_request",
        "gpulse.cost.per_request",
        "Price of the observed time divided by the requests served in the window (basis=all), or by those that met the SLOs (basis=slo).",
        |c, s| cost_series(c, s, |cost| (cost.per_request, cost.per_request_at_slo)),
    ),
    cost_family(
        "gpulse_cost_per_million_output_tokens",
        "gpulse.cost.per_million_output_tokens",
        "Price of the observed time per million output tokens generated in the window (basis=all), or generated by requests that met the SLOs (basis=slo).",
        |c, s| {
            cost_series(c, s, |cost| {
                (
                    cost.per_million_output_tokens,
                    cost.per_million_output_tokens_at_slo,
                )
            })
        },
    ),
    Family {
        dims: &[dim("claim", "gpulse.claim")],
        ..node(
            "gpulse_claim_mismatch",
            "gpulse.claim.mismatch",
            "1",
            "1 when what NVML sees contradicts a claim of [score.expect] (gpu_model, gpu_count, memory_per_gpu, driver_min), 0 when it matches; absent when unclaimed or nothing was seen.",
            Kind::Gauge,
            |c, s| {
                for claim in c.snap.score.iter().flat_map(|s| &s.claims) {
                    s.node([Val::Str(claim.claim)], claim.ok.map(|ok| flag(!ok)));
                }
            },
        )
    },
    node(
        "gpulse_ledger_persistent",
        "gpulse.ledger.persistent",
        "1",
        "1 if the score's evidence ledger is kept in agent.state_dir (survives restarts), 0 if only in memory.",
        Kind::Gauge,
        |c, s| {
            if let Some(state) = &c.snap.score {
                s.node([], Some(flag(state.ledger.persistent)));
            }
        },
    ),
    Family {
        dims: &[dim("resolution", "gpulse.ledger.resolution")],
        ..node(
            "gpulse_ledger_records",
            "gpulse.ledger.records",
            "{record}",
            "Buckets the evidence ledger holds: minutes (score.minute_retention) and hourly roll-ups (score.hour_retention).",
            Kind::Gauge,
            |c, s| {
                if let Some(state) = &c.snap.score {
                    s.node([Val::Str("minute")], Some(state.ledger.minutes as f64));
                    s.node([Val::Str("hour")], Some(state.ledger.hours as f64));
                }
            },
        )
    },
    node(
        "gpulse_ledger_bytes",
        "gpulse.ledger.size",
        "By",
        "Bytes of the evidence ledger's records in memory (the file holds the same plus the store's pages).",
        Kind::Gauge,
        |c, s| {
            if let Some(state) = &c.snap.score {
                s.node([], Some(state.ledger.bytes as f64));
            }
        },
    ),
    node(
        "gpulse_ledger_write_failures",
        "gpulse.ledger.write_failures",
        "{write}",
        "Minutes the ledger could not write to agent.state_dir (a disk error, or the writer was behind); they stay in memory.",
        Kind::Counter,
        |c, s| {
            if let Some(state) = &c.snap.score {
                s.node([], Some(state.ledger.write_failures as f64));
            }
        },
    ),
];
