//! `[score]`: the provider-quality score's weights and constants, the price that gives cost
//! per inference, the evidence ledger's retention, and the claims (`[score.expect]`) checked
//! against what NVML sees.

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration, shown};

/// `[score]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreConfig {
    /// Keep the evidence ledger and compute the score.
    pub enabled: bool,
    /// How often the agent accounts what it sees into the ledger's current minute.
    pub tick: HumanDuration,
    /// Minute buckets kept (then rolled up into hours).
    pub minute_retention: HumanDuration,
    /// Hourly roll-ups kept.
    pub hour_retention: HumanDuration,
    /// Availability below this share closes the availability gate: the total is 0.
    pub availability_gate: f64,
    /// Latency objective: the share of requests that must meet the SLOs for a full L.
    pub latency_objective: f64,
    /// Share of busy time throttled (hardware reasons) at which T reaches 0.
    pub throttle_tolerance: f64,
    /// A GPU counts as busy above this utilization (0–1); throttling is judged only then.
    pub busy_utilization: f64,
    /// The health gate stays closed this long after a critical GPU condition clears.
    pub health_hold: HumanDuration,
    /// Warning Xids per day at which the soft health score reaches 0.
    pub warnings_per_day_limit: f64,
    /// Mean time to recover at which R falls to 1/e (R = exp(−MTTR / scale) · f).
    pub recovery_time_scale: HumanDuration,
    /// Below this many server-counted requests in a window, C uses the synthetic requests.
    pub completion_min_requests: u64,
    /// What the GPUs cost per hour (the lease price); 0 = unset: no cost is computed.
    pub price_per_hour: f64,
    /// Currency of `price_per_hour`: an ISO code (USD) or a token (AKT, ACT).
    pub currency: String,
    /// Weights of the sub-scores in the weighted geometric mean (normalised to sum to 1).
    pub weights: ScoreWeights,
    /// What the provider claims; each set claim is checked against NVML.
    pub expect: ExpectConfig,
}

/// `[score.weights]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreWeights {
    pub availability: f64,
    pub latency: f64,
    pub completion: f64,
    pub health: f64,
    pub throttle: f64,
    pub recovery: f64,
}

/// `[score.expect]`: the provider's claims. Empty or 0 = not claimed, not checked.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpectConfig {
    /// A substring of the GPU's NVML name, case-insensitive ("H100", "A100-SXM4-80GB").
    pub gpu_model: String,
    /// GPUs visible to gpulse.
    pub gpu_count: u32,
    /// Memory per GPU in GiB; a GPU with less than 95 % of it is a mismatch (NVML reports
    /// a little under the marketing size).
    pub memory_per_gpu_gib: f64,
    /// Lowest driver version, dotted ("550.54.15").
    pub driver_min: String,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        Self {
            availability: 0.30,
            latency: 0.25,
            completion: 0.20,
            health: 0.10,
            throttle: 0.10,
            recovery: 0.05,
        }
    }
}

impl ScoreWeights {
    /// `(key, weight)` in component order.
    pub fn entries(&self) -> [(&'static str, f64); 6] {
        [
            ("availability", self.availability),
            ("latency", self.latency),
            ("completion", self.completion),
            ("health", self.health),
            ("throttle", self.throttle),
            ("recovery", self.recovery),
        ]
    }
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick: HumanDuration::secs(5),
            minute_retention: HumanDuration::secs(7 * 86_400),
            hour_retention: HumanDuration::secs(90 * 86_400),
            availability_gate: 0.90,
            latency_objective: 0.99,
            throttle_tolerance: 0.20,
            busy_utilization: 0.10,
            health_hold: HumanDuration::secs(900),
            warnings_per_day_limit: 10.0,
            recovery_time_scale: HumanDuration::secs(600),
            completion_min_requests: 100,
            price_per_hour: 0.0,
            currency: "USD".to_owned(),
            weights: ScoreWeights::default(),
            expect: ExpectConfig::default(),
        }
    }
}

/// Parses a dotted version ("550.54.15") into its numbers.
pub fn parse_version(s: &str) -> Option<Vec<u64>> {
    let parts: Option<Vec<u64>> = s.trim().split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| !p.is_empty())
}

impl ScoreConfig {
    /// The price, when one is set.
    pub fn price(&self) -> Option<f64> {
        (self.price_per_hour > 0.0).then_some(self.price_per_hour)
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let fail =
            |key: &str, message: String| ConfigError::at_key(format!("score.{key}"), message);
        let ratios = [
            ("availability_gate", self.availability_gate, true),
            ("latency_objective", self.latency_objective, false),
            ("throttle_tolerance", self.throttle_tolerance, false),
            ("busy_utilization", self.busy_utilization, true),
        ];
        for (key, value, zero_ok) in ratios {
            let low_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
            if !(low_ok && value <= 1.0) {
                let range = if zero_ok {
                    "0 to 1"
                } else {
                    "above 0, at most 1"
                };
                return Err(fail(key, format!("{value} is out of range; use {range}")));
            }
        }
        if !(self.warnings_per_day_limit > 0.0 && self.warnings_per_day_limit.is_finite()) {
            return Err(fail(
                "warnings_per_day_limit",
                format!("{} must be a positive number", self.warnings_per_day_limit),
            ));
        }
        if !(self.price_per_hour >= 0.0 && self.price_per_hour.is_finite()) {
            return Err(fail(
                "price_per_hour",
                format!(
                    "{} must be 0 (unset) or a positive price",
                    self.price_per_hour
                ),
            ));
        }
        let currency_ok = (1..=16).contains(&self.currency.len())
            && self.currency.chars().all(|c| c.is_ascii_alphanumeric());
        if !currency_ok {
            return Err(fail(
                "currency",
                format!(
                    "{} must be 1-16 letters or digits (USD, AKT)",
                    shown(&self.currency)
                ),
            ));
        }
        let weights = self.weights.entries();
        if let Some((key, w)) = weights.iter().find(|(_, w)| !(*w >= 0.0 && w.is_finite())) {
            return Err(fail(
                &format!("weights.{key}"),
                format!("{w} must be 0 or more"),
            ));
        }
        if weights.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
            return Err(fail(
                "weights",
                "at least one weight must be above 0".to_owned(),
            ));
        }
        if self.minute_retention.0 < std::time::Duration::from_secs(3600) {
            return Err(fail(
                "minute_retention",
                "keep at least 1h of minute buckets".to_owned(),
            ));
        }
        if self.minute_retention.0 > std::time::Duration::from_secs(31 * 86_400) {
            return Err(fail(
                "minute_retention",
                "at most 31d of minute buckets (hourly roll-ups keep the rest)".to_owned(),
            ));
        }
        if self.hour_retention.0 > std::time::Duration::from_secs(400 * 86_400) {
            return Err(fail("hour_retention", "at most 400d".to_owned()));
        }
        if self.tick.0 > std::time::Duration::from_secs(60) {
            return Err(fail(
                "tick",
                "at most 60s (a minute bucket needs a tick)".to_owned(),
            ));
        }
        let e = &self.expect;
        if !(e.memory_per_gpu_gib >= 0.0 && e.memory_per_gpu_gib.is_finite()) {
            return Err(fail(
                "expect.memory_per_gpu_gib",
                format!(
                    "{} must be 0 (unchecked) or a size in GiB",
                    e.memory_per_gpu_gib
                ),
            ));
        }
        if !e.driver_min.is_empty() && parse_version(&e.driver_min).is_none() {
            return Err(fail(
                "expect.driver_min",
                format!(
                    "{} is not a dotted version like 550.54.15",
                    shown(&e.driver_min)
                ),
            ));
        }
        Ok(())
    }
}
