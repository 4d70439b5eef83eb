//! The fleet recording rules (`packaging/prometheus/gpulse-score.rules.yml`): `promtool check
//! rules` accepts them and `promtool test rules` passes their unit tests
//! (`gpulse-score.rules.test.yml`: ratios of summed counts, absent components, GPU-model joins,
//! the cost median); every gpulse family they read is one the agent exports, so a renamed
//! family breaks this test; and `docs/fleet.md` names every series they record.
//!
//! Needs `promtool` on PATH (Debian: `apt-get install prometheus`) for the first part; without
//! it that test skips loudly (fails under `GPULSE_CI=1`). The name checks always run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tidy::root;

const RULES: &str = "packaging/prometheus/gpulse-score.rules.yml";
const RULES_TEST: &str = "packaging/prometheus/gpulse-score.rules.test.yml";
const METRICS_MD: &str = "docs/metrics.md";
const FLEET_MD: &str = "docs/fleet.md";

/// The score and cost families the agent is about to export, which docs/metrics.md does not
/// list yet. Until the score catalog lands; then read docs/metrics.md only. (The identity
/// families the rules join, `gpulse_akash_info`, `gpulse_gpu_info` and `gpulse_build_info`,
/// are in docs/metrics.md already and are deliberately not repeated here.)
const SCORE_FAMILIES: &[&str] = &[
    "gpulse_score",
    "gpulse_score_measured",
    "gpulse_score_evidence",
    "gpulse_score_incidents",
    "gpulse_score_recovery_seconds",
    "gpulse_score_recoveries",
    "gpulse_score_gate_open",
    "gpulse_score_observed_seconds",
    "gpulse_cost_per_million_output_tokens",
    "gpulse_cost_per_request",
    "gpulse_price_per_hour",
];

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `program` on PATH (the same lookup as `exposition.rs`).
fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Runs `promtool ARGS` in the repository root: whether it succeeded, and what it said.
fn run(promtool: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn promtool_checks_and_tests_the_score_rules() {
    let Some(promtool) = find("promtool") else {
        crate::skip::not_installed(
            "`promtool` is not on PATH",
            "install Debian's `prometheus` package (`apt-get install prometheus`)",
        );
        return;
    };
    let (ok, said) = run(&promtool, &["check", "rules", RULES]);
    assert!(ok, "promtool check rules {RULES}:\n{said}");
    assert!(
        said.contains("SUCCESS"),
        "promtool check rules {RULES}:\n{said}"
    );
    let (ok, said) = run(&promtool, &["test", "rules", RULES_TEST]);
    assert!(ok, "promtool test rules {RULES_TEST}:\n{said}");
    assert!(
        said.contains("SUCCESS"),
        "promtool test rules {RULES_TEST}:\n{said}"
    );
}

/// The metric families `text` names: every `gpulse_[a-z0-9_]+` (the longest such run, starting
/// a word) that is not followed by `:`. A recorded name is `level:metric:operations`, so the
/// gpulse name inside one (`provider:gpulse_score_evidence:sum`) is followed by `:` and is not a
/// family read.
fn families_named(text: &str) -> BTreeSet<String> {
    let is_name = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_';
    let bytes = text.as_bytes();
    let mut found = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("gpulse_").map(|i| from + i) {
        let mut end = at + "gpulse_".len();
        while end < bytes.len() && is_name(bytes[end]) {
            end += 1;
        }
        from = end;
        let starts_word =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if starts_word && bytes.get(end) != Some(&b':') {
            found.insert(text[at..end].to_owned());
        }
    }
    found
}

/// The families docs/metrics.md lists: the first cell of each table row.
fn cataloged_families() -> BTreeSet<String> {
    read(METRICS_MD)
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.starts_with("gpulse_"))
        .map(str::to_owned)
        .collect()
}

/// The `record:` names of the rules file.
fn recorded_series() -> Vec<String> {
    read(RULES)
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- record:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn the_score_rules_read_only_exported_families() {
    let known: BTreeSet<String> = cataloged_families()
        .into_iter()
        .chain(SCORE_FAMILIES.iter().map(|s| (*s).to_owned()))
        .collect();
    assert!(
        known.contains("gpulse_akash_info") && known.contains("gpulse_gpu_info"),
        "{METRICS_MD} no longer lists the identity families the rules join: {known:?}"
    );
    let read_by_rules = families_named(&read(RULES));
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
    let unknown: Vec<&String> = read_by_rules.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "{RULES} names families neither {METRICS_MD} nor SCORE_FAMILIES lists (renamed?): \
         {unknown:?}"
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

#[test]
fn the_family_scan_skips_recorded_names() {
    let text = "# gpulse_score (0-100)\n\
                expr: sum(provider:gpulse_score_evidence:sum) / x:gpulse_agents:count\n\
                  * on (instance) gpulse_akash_info{provider!=\"\"} + gpulse_gpu_info\n\
                file: gpulse-score.rules.yml, not_gpulse_x";
    let found: Vec<String> = families_named(text).into_iter().collect();
    assert_eq!(
        found,
        ["gpulse_akash_info", "gpulse_gpu_info", "gpulse_score"]
    );
}
