//! `[report]`: signed, hash-chained score reports (`docs/evidence.md`): whether they are made,
//! how often, and how many the chain keeps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration};

/// `[report]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Sign reports (a key in `agent.state_dir/report.key`) and serve `/v1/identity`,
    /// `/v1/report` and `/v1/reports`.
    pub enabled: bool,
    /// How often a report of the last hour is signed and appended to the chain, on multiples
    /// of it in Unix time (full UTC hours for `1h`).
    pub interval: HumanDuration,
    /// Chained reports kept (in `state.redb`, else in memory); the oldest are dropped.
    pub max_reports: usize,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: HumanDuration::secs(3600),
            // 90 days of hours.
            max_reports: 2160,
        }
    }
}

impl ReportConfig {
    /// The shortest interval: below a minute only tests want it, and they need a few seconds.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
    /// The longest interval: a day.
    pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);
    /// The most reports kept: over a year of hours.
    pub const MAX_REPORTS: usize = 10_000;

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let interval = self.interval.0;
        if !(Self::MIN_INTERVAL..=Self::MAX_INTERVAL).contains(&interval) {
            return Err(ConfigError::at_key(
                "report.interval",
                format!(
                    "{} is out of range; use 5s to 24h (1h in production: below 1m is for tests)",
                    self.interval
                ),
            ));
        }
        if !(1..=Self::MAX_REPORTS).contains(&self.max_reports) {
            return Err(ConfigError::at_key(
                "report.max_reports",
                format!(
                    "{} is out of range; use 1 to {}",
                    self.max_reports,
                    Self::MAX_REPORTS
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bounds_are_refused_naming_the_key() {
        assert!(ReportConfig::default().check().is_ok());
        let short = ReportConfig {
            interval: HumanDuration(Duration::from_secs(4)),
            ..ReportConfig::default()
        };
        let e = short.check().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("report.interval"));
        let long = ReportConfig {
            interval: HumanDuration::secs(86_401),
            ..ReportConfig::default()
        };
        assert!(long.check().is_err());
        for max_reports in [0, ReportConfig::MAX_REPORTS + 1] {
            let c = ReportConfig {
                max_reports,
                ..ReportConfig::default()
            };
            assert_eq!(
                c.check().unwrap_err().key.as_deref(),
                Some("report.max_reports")
            );
        }
        let tests = ReportConfig {
            interval: HumanDuration::secs(5),
            max_reports: 1,
            ..ReportConfig::default()
        };
        assert!(tests.check().is_ok());
    }
}
