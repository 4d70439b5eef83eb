//! Health families: the node's and each GPU's state, and the active reasons.

use super::{AsVal as _, Family, Kind, OtelSplit, Scope, Val, dim, dim_split, flag};
use crate::health::State;

/// A GPU's state as the semantic conventions' `hw.state` (`model/hardware/registry.yaml`):
/// healthy → ok, degraded → degraded, unhealthy → failed. `unknown` has no `hw.state`: its row
/// is not sent over OTLP ([`UNKNOWN_OFF_OTLP`]), so an initializing GPU has every `hw.status`
/// point at 0.
fn hw_state(state: State) -> Val<'static> {
    let otel = match state {
        State::Healthy => "ok",
        State::Degraded => "degraded",
        State::Unhealthy => "failed",
        State::Unknown => "unknown",
    };
    Val::Pair(state.as_str(), otel)
}

const UNKNOWN_OFF_OTLP: &[OtelSplit] = &[OtelSplit {
    value: "unknown",
    otel: None,
}];

pub const FAMILIES: &[Family] = &[
    Family {
        prom: "gpulse_node_health",
        otel: "gpulse.node.health",
        otel_const: &[],
        unit: "1",
        help: "1 for the node's current health state (healthy, degraded, unhealthy, unknown), 0 for the others.",
        kind: Kind::Gauge,
        scope: Scope::Node,
        dims: &[dim("state", "gpulse.health.state")],
        series: |c, s| {
            if let Some(h) = &c.snap.health {
                for state in State::ALL {
                    s.node([state.val()], Some(flag(state == h.state)));
                }
            }
        },
    },
    // OTel's `hw.status` (an up-down counter, one point per state; a gauge on /metrics).
    Family {
        prom: "gpulse_gpu_health",
        otel: "hw.status",
        otel_const: &[],
        unit: "1",
        help: "1 for the GPU's current health state (healthy, degraded, unhealthy, unknown), 0 for the others.",
        kind: Kind::UpDownCounter,
        scope: Scope::Gpu,
        dims: &[dim_split("state", "hw.state", UNKNOWN_OFF_OTLP)],
        series: |c, s| {
            for g in c.snap.health.iter().flat_map(|h| &h.gpus) {
                for state in State::ALL {
                    s.gpu_health(g, [hw_state(state)], flag(state == g.state));
                }
            }
        },
    },
    Family {
        prom: "gpulse_gpu_health_reason",
        otel: "gpulse.gpu.health.reason",
        otel_const: &[],
        unit: "1",
        help: "1 per active health reason of a GPU (held for health.hold_time after its cause), with the suggested action.",
        kind: Kind::Gauge,
        scope: Scope::Gpu,
        dims: &[
            dim("reason", "gpulse.health.reason"),
            dim("action", "gpulse.health.action"),
        ],
        series: |c, s| {
            for g in c.snap.health.iter().flat_map(|h| &h.gpus) {
                for r in &g.reasons {
                    s.gpu_health(g, [Val::Display(&r.code), r.action.val()], 1.0);
                }
            }
        },
    },
];
