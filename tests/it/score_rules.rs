//! The fleet recording rules (`packaging/prometheus/gpulse-score.rules.yml`): `promtool check
//! rules` accepts them and `promtool test rules` passes their unit tests
//! (`gpulse-score.rules.test.yml`: ratios of summed counts, absent components, GPU-model joins,
//! the cost median); every series they read is one the agent exports (the metric catalog), with
//! the labels they name (`crate::promql`), so a renamed family or label breaks this test; and
//! `docs/fleet.md` names every series they record.
//!
//! Needs `promtool` on PATH (Debian: `apt-get install prometheus`) for the first part; without
//! it that test skips loudly (fails under `GPULSE_CI=1`). The name checks always run.

use std::collections::BTreeSet;

use crate::promql;
use crate::tidy::root;

const RULES: &str = promql::SCORE_RULES;
const RULES_TEST: &str = "packaging/prometheus/gpulse-score.rules.test.yml";
const FLEET_MD: &str = "docs/fleet.md";

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn promtool_checks_and_tests_the_score_rules() {
    let Some(promtool) = promql::promtool() else {
        return;
    };
    let (ok, said) = promql::run_promtool(&promtool, &["check", "rules", RULES]);
    assert!(ok, "promtool check rules {RULES}:\n{said}");
    assert!(
        said.contains("SUCCESS"),
        "promtool check rules {RULES}:\n{said}"
    );
    let (ok, said) = promql::run_promtool(&promtool, &["test", "rules", RULES_TEST]);
    assert!(ok, "promtool test rules {RULES_TEST}:\n{said}");
    assert!(
        said.contains("SUCCESS"),
        "promtool test rules {RULES_TEST}:\n{said}"
    );
}

/// The `record:` names of the rules file.
fn recorded_series() -> Vec<String> {
    promql::records(RULES)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn the_score_rules_read_only_exported_families() {
    // Series the rules read: the agent's, checked with their labels (the walk also panics on a
    // rule whose series or labels are unknown), and earlier rules' records.
    let known = promql::exported_and_recorded();
    let exported = promql::exported();
    let mut read_by_rules = BTreeSet::new();
    for (record, expr) in promql::records(RULES) {
        promql::labels_of(&expr, &known).unwrap_or_else(|p| panic!("{record}: {p:?}"));
        read_by_rules.extend(
            promql::selected(&expr)
                .into_iter()
                .filter(|name| !name.contains(':')),
        );
    }
    // Not vacuous: the rules do read the evidence and the identity they join.
    for core in [
        "gpulse_score_evidence",
        "gpulse_akash_info",
        "gpulse_gpu_info",
    ] {
        assert!(
            read_by_rules.contains(core),
            "{RULES} no longer reads {core}"
        );
    }
    let unknown: Vec<&String> = read_by_rules
        .iter()
        .filter(|name| !exported.contains_key(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "{RULES} reads series the agent does not export (renamed?): {unknown:?}"
    );
}

#[test]
fn fleet_md_names_every_recorded_series() {
    let recorded = recorded_series();
    assert!(
        recorded.len() >= 10,
        "few record: lines in {RULES}: {recorded:?}"
    );
    let doc = read(FLEET_MD);
    let missing: Vec<&String> = recorded
        .iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "{FLEET_MD} does not name {missing:?}");
}
