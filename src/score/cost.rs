//! Cost per inference over a window, beside the score (never folded into it): what the
//! observed hours cost at `price_per_hour`, per request and per 1M output tokens.
//!
//! The requests are the server's organic ones when any server counted successes, else the
//! synthetic ones. Only observed hours are paid for here: an hour the agent did not see
//! produced no counted requests, and charging it would inflate the cost per request. The
//! at-SLO figures count only requests that met the SLOs (and their share of the tokens), so a
//! fast but unreliable provider does not look cheap.

use super::{Cost, amount};
use crate::config::ScoreConfig;
use crate::model::Evidence;

/// `latency_attainment`: the share of requests within the SLOs that L found (server
/// histograms, else synthetic requests), used for the server's organic requests.
pub(super) fn cost(
    evidence: &Evidence,
    config: &ScoreConfig,
    latency_attainment: Option<f64>,
) -> Option<Cost> {
    let price = config.price()?;
    let probes = &evidence.sum.probes;
    let hours = evidence.sum.observed_seconds as f64 / 3600.0;
    let servers: Vec<_> = probes.iter().filter_map(|p| p.server.as_ref()).collect();
    let organic = servers.iter().any(|s| s.requests_ok.is_some_and(|n| n > 0));
    let (source, requests, tokens, slo_share) = if organic {
        let requests: f64 = servers
            .iter()
            .map(|s| s.requests_ok.unwrap_or(0) as f64)
            .sum();
        let tokens: f64 = servers
            .iter()
            .map(|s| s.output_tokens.unwrap_or(0) as f64)
            .sum();
        ("server", requests, tokens, latency_attainment)
    } else {
        let requests: f64 = probes.iter().map(|p| p.requests_ok as f64).sum();
        let tokens: f64 = probes.iter().map(|p| p.output_tokens as f64).sum();
        let within: f64 = probes.iter().map(|p| p.requests_within_slo as f64).sum();
        let share = (requests > 0.0).then(|| (within / requests).clamp(0.0, 1.0));
        ("probe", requests, tokens, share)
    };
    let spent = price * hours;
    // A vanishing count (a server's SLO estimate near 0) would divide into infinity: no cost.
    let per = |count: f64, scale: f64| {
        Some(spent / amount(count) * scale).filter(|c| c.is_finite() && amount(count) > 0.0)
    };
    let at_slo = |count: f64, scale: f64| slo_share.and_then(|s| per(count * s, scale));
    Some(Cost {
        currency: config.currency.clone(),
        price_per_hour: price,
        hours,
        source,
        requests,
        output_tokens: tokens,
        per_request: per(requests, 1.0),
        per_million_output_tokens: per(tokens, 1e6),
        per_request_at_slo: at_slo(requests, 1.0),
        per_million_output_tokens_at_slo: at_slo(tokens, 1e6),
    })
}
