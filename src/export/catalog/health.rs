//! Health families: the node's and each GPU's state, and the active reasons.

use super::{AsVal as _, Family, Kind, Scope, Val, dim, flag};
use crate::health::State;

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
    Family {
        prom: "gpulse_gpu_health",
        otel: "gpulse.gpu.health",
        otel_const: &[],
        unit: "1",
        help: "1 for the GPU's current health state (healthy, degraded, unhealthy, unknown), 0 for the others.",
        kind: Kind::Gauge,
        scope: Scope::Gpu,
        dims: &[dim("state", "gpulse.health.state")],
        series: |c, s| {
            for g in c.snap.health.iter().flat_map(|h| &h.gpus) {
                for state in State::ALL {
                    s.gpu_health(g, [state.val()], flag(state == g.state));
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
