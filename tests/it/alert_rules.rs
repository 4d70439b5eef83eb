//! The alerting rules (`packaging/prometheus/gpulse-rules.yaml`): `promtool check rules`
//! accepts them and `promtool test rules` passes `gpulse-rules.test.yaml`; every alert has a
//! unit test in which it fires and one in which it does not; every alert has a severity, a
//! summary, a description and a `runbook_url` whose anchor is a heading of docs/alerts.md;
//! every expression parses, reads only series gpulse exports (or `up`) with labels they carry,
//! and the annotations name only labels the alert has.
//!
//! Needs `promtool` on PATH (Debian: `apt-get install prometheus`) for the first test; without
//! it that test skips loudly (fails under `GPULSE_CI=1`). The other checks always run.

use std::collections::{BTreeMap, BTreeSet};

use yaml_rust2::{Yaml, YamlLoader};

use crate::promql;
use crate::tidy::root;

const RULES: &str = "packaging/prometheus/gpulse-rules.yaml";
const RULES_TEST: &str = "packaging/prometheus/gpulse-rules.test.yaml";
const ALERTS_MD: &str = "docs/alerts.md";
const RUNBOOK: &str = "https://github.com/gpulse/gpulse/blob/main/docs/alerts.md#";

/// One rule of a rules file.
#[derive(Debug)]
pub struct Rule {
    pub alert: Option<String>,
    pub record: Option<String>,
    pub expr: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    let mut docs =
        YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: bad YAML: {e}"));
    assert_eq!(docs.len(), 1, "{rel}: one YAML document");
    docs.remove(0)
}

fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let value = match v {
                        Yaml::String(s) | Yaml::Real(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("not a string: {other:?}"),
                    };
                    (k.as_str().unwrap_or_default().to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text(y: &Yaml) -> Option<String> {
    y.as_str().map(str::to_owned)
}

/// The rules of a Prometheus rules file (`groups[].rules[]`), in order.
pub fn rules(rel: &str) -> Vec<Rule> {
    let doc = yaml(rel);
    let groups = doc["groups"]
        .as_vec()
        .unwrap_or_else(|| panic!("{rel}: no groups"));
    groups
        .iter()
        .flat_map(|g| g["rules"].as_vec().cloned().unwrap_or_default())
        .map(|r| Rule {
            alert: text(&r["alert"]),
            record: text(&r["record"]),
            expr: text(&r["expr"]).unwrap_or_else(|| panic!("{rel}: a rule without expr: {r:?}")),
            labels: string_map(&r["labels"]),
            annotations: string_map(&r["annotations"]),
        })
        .collect()
}

fn alerts() -> Vec<Rule> {
    let alerts: Vec<Rule> = rules(RULES)
        .into_iter()
        .filter(|r| r.alert.is_some())
        .collect();
    assert!(alerts.len() >= 15, "few alerts in {RULES}: {alerts:?}");
    alerts
}

fn name(rule: &Rule) -> &str {
    rule.alert.as_deref().unwrap_or_default()
}

#[test]
fn promtool_checks_and_tests_the_alert_rules() {
    let Some(promtool) = promql::promtool() else {
        return;
    };
    let (ok, said) = promql::run_promtool(&promtool, &["check", "rules", RULES]);
    assert!(
        ok && said.contains("SUCCESS"),
        "promtool check rules {RULES}:\n{said}"
    );
    let (ok, said) = promql::run_promtool(&promtool, &["test", "rules", RULES_TEST]);
    assert!(
        ok && said.contains("SUCCESS"),
        "promtool test rules {RULES_TEST}:\n{said}"
    );
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let doc = yaml(RULES_TEST);
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in doc["tests"].as_vec().unwrap_or_else(|| panic!("no tests")) {
        for case in test["alert_rule_test"]
            .as_vec()
            .cloned()
            .unwrap_or_default()
        {
            let alert = text(&case["alertname"]).unwrap_or_default();
            match case["exp_alerts"].as_vec() {
                Some(expected) if !expected.is_empty() => fires.insert(alert),
                _ => quiet.insert(alert),
            };
        }
    }
    let alerts: BTreeSet<String> = alerts().iter().map(|a| name(a).to_owned()).collect();
    let never_fires: Vec<&String> = alerts.difference(&fires).collect();
    let never_quiet: Vec<&String> = alerts.difference(&quiet).collect();
    assert!(
        never_fires.is_empty() && never_quiet.is_empty(),
        "{RULES_TEST}: alerts without a test where they fire: {never_fires:?}; \
         without one where they do not: {never_quiet:?}"
    );
    let unknown: Vec<&String> = fires
        .union(&quiet)
        .filter(|a| !alerts.contains(*a))
        .collect();
    assert!(
        unknown.is_empty(),
        "{RULES_TEST} tests unknown alerts {unknown:?}"
    );
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_section() {
    let anchors: BTreeSet<String> = crate::docs::anchors(&read(ALERTS_MD)).into_iter().collect();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for alert in alerts() {
        let name = name(&alert);
        if !seen.insert(name.to_owned()) {
            problems.push(format!("{name}: defined twice"));
        }
        let severity = alert.labels.get("severity").map(String::as_str);
        if !matches!(severity, Some("critical" | "warning")) {
            problems.push(format!(
                "{name}: severity {severity:?}, not critical or warning"
            ));
        }
        for key in ["summary", "description"] {
            if alert
                .annotations
                .get(key)
                .is_none_or(|s| s.trim().is_empty())
            {
                problems.push(format!("{name}: no {key} annotation"));
            }
        }
        let expected = format!("{RUNBOOK}{}", name.to_lowercase());
        match alert.annotations.get("runbook_url") {
            Some(url) if *url == expected => {
                if !anchors.contains(&name.to_lowercase()) {
                    problems.push(format!("{name}: {ALERTS_MD} has no `### {name}` section"));
                }
            }
            other => problems.push(format!(
                "{name}: runbook_url {other:?}, expected {expected}"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `$labels.NAME` an annotation template uses.
fn template_labels(template: &str) -> Vec<String> {
    template
        .split("$labels.")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn alert_expressions_read_exported_series_and_annotate_with_their_labels() {
    let known = promql::exported_and_recorded();
    let mut problems = Vec::new();
    let mut read_families = BTreeSet::new();
    for alert in alerts() {
        let name = name(&alert);
        read_families.extend(promql::selected(&alert.expr));
        match promql::labels_of(&alert.expr, &known) {
            Err(found) => problems.extend(found.into_iter().map(|p| format!("{name}: {p}"))),
            Ok(mut labels) => {
                labels.extend(alert.labels.keys().cloned());
                for (key, template) in &alert.annotations {
                    for label in template_labels(template) {
                        if !labels.contains(&label) {
                            problems.push(format!(
                                "{name}: annotation {key} uses $labels.{label}, which the \
                                 alert does not have ({labels:?})"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{RULES}:\n{}", problems.join("\n"));
    // Not vacuous: the rules read the health, probe and agent families.
    for core in [
        "gpulse_gpu_health_reason",
        "gpulse_probe_state",
        "gpulse_probe_inference_slo_violations_total",
        "gpulse_export_failures_total",
        "up",
    ] {
        assert!(
            read_families.contains(core),
            "{RULES} no longer reads {core}"
        );
    }
}

#[test]
fn the_template_scan_finds_labels() {
    assert_eq!(
        template_labels("GPU {{ $labels.gpu }} of {{$labels.instance}}: {{ $value }}"),
        ["gpu", "instance"]
    );
}
