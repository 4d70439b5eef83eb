//! PromQL as the packaging files write it (the Grafana dashboards, the alert and recording
//! rules): parse an expression with GreptimeDB's `promql-parser`, and walk its AST to check that
//! every series it selects is one that exists (a gpulse family of the metric catalog, with its
//! `_total` / `_bucket` / `_sum` / `_count` names; Prometheus' own `up`; a series the fleet
//! recording rules record) and that every label it names (matchers, `by` / `without`, `on` /
//! `ignoring`, `group_left`) is on the series it applies to. A renamed family or label then
//! fails a test instead of leaving a panel or an alert silently empty.
//!
//! The label check infers the labels each sub-expression returns (an aggregation keeps its
//! `by` labels, a `group_left` join adds the labels it copies, `histogram_quantile` drops `le`,
//! ...), so `sum by (provider) (x * on (instance, job) group_left (provider) gpulse_akash_info)`
//! passes while `sum by (provider) (x)` does not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use gpulse::export::catalog::{self, Kind};
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, LabelModifier, VectorMatchCardinality};

use crate::tidy::root;

/// The labels Prometheus adds to every scraped series (the scrape job and target).
pub const TARGET_LABELS: &[&str] = &["instance", "job"];

/// The fleet recording rules, whose recorded series dashboards and alerts may read.
pub const SCORE_RULES: &str = "packaging/prometheus/gpulse-score.rules.yml";

/// Series name → the labels it carries.
pub type Known = BTreeMap<String, BTreeSet<String>>;

fn set(labels: &[&str]) -> BTreeSet<String> {
    labels.iter().map(|l| (*l).to_owned()).collect()
}

/// Every series a Prometheus scraping gpulse holds, from the catalog: counters with `_total`,
/// histograms as `_bucket` (with `le`), `_sum` and `_count`, each with its identity labels,
/// its own labels and the target labels; plus `up`.
pub fn exported() -> Known {
    let mut known = Known::new();
    for family in catalog::families() {
        let mut labels = set(TARGET_LABELS);
        labels.extend(family.scope.prom_labels().iter().map(|l| (*l).to_owned()));
        labels.extend(family.dims.iter().map(|d| d.prom.to_owned()));
        match family.kind {
            Kind::Counter => {
                known.insert(format!("{}_total", family.prom), labels);
            }
            Kind::Histogram(_) => {
                let mut bucket = labels.clone();
                bucket.insert("le".to_owned());
                known.insert(format!("{}_bucket", family.prom), bucket);
                known.insert(format!("{}_sum", family.prom), labels.clone());
                known.insert(format!("{}_count", family.prom), labels);
            }
            Kind::Gauge | Kind::UpDownCounter => {
                known.insert(family.prom.to_owned(), labels);
            }
        }
    }
    known.insert("up".to_owned(), set(TARGET_LABELS));
    known
}

/// [`exported`] plus the series the fleet recording rules record, with the labels their
/// expressions return (inferred in rule order, as Prometheus evaluates them).
pub fn exported_and_recorded() -> Known {
    let mut known = exported();
    for (record, expr) in records(SCORE_RULES) {
        let labels = labels_of(&expr, &known)
            .unwrap_or_else(|problems| panic!("{SCORE_RULES}: {record}: {problems:?}"));
        known.insert(record, labels);
    }
    known
}

/// The `(record, expr)` pairs of a rules file, in order.
pub fn records(rel: &str) -> Vec<(String, String)> {
    crate::alert_rules::rules(rel)
        .into_iter()
        .filter_map(|r| r.record.map(|name| (name, r.expr)))
        .collect()
}

/// Parses `expr` and checks its series and labels against `known`: the labels the whole
/// expression returns, or every problem found.
pub fn labels_of(expr: &str, known: &Known) -> Result<BTreeSet<String>, Vec<String>> {
    let ast = parser::parse(expr).map_err(|e| vec![format!("does not parse: {e}")])?;
    let mut walk = Walk {
        known,
        problems: Vec::new(),
        selected: BTreeSet::new(),
    };
    let labels = walk.labels(&ast);
    if walk.problems.is_empty() {
        Ok(labels)
    } else {
        Err(walk.problems)
    }
}

/// The series names `expr` selects (it must parse).
pub fn selected(expr: &str) -> BTreeSet<String> {
    let ast = parser::parse(expr).unwrap_or_else(|e| panic!("{expr}: does not parse: {e}"));
    let known = Known::new();
    let mut walk = Walk {
        known: &known,
        problems: Vec::new(),
        selected: BTreeSet::new(),
    };
    walk.labels(&ast);
    walk.selected
}

struct Walk<'a> {
    known: &'a Known,
    problems: Vec<String>,
    selected: BTreeSet<String>,
}

impl Walk<'_> {
    fn need(&mut self, what: &str, labels: &[String], have: &BTreeSet<String>) {
        for label in labels {
            if !have.contains(label) {
                self.problems.push(format!(
                    "{what} names `{label}`, which its input lacks ({have:?})"
                ));
            }
        }
    }

    fn labels(&mut self, expr: &Expr) -> BTreeSet<String> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs),
            Expr::Paren(p) => self.labels(&p.expr),
            Expr::Subquery(s) => self.labels(&s.expr),
            Expr::Unary(u) => self.labels(&u.expr),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => BTreeSet::new(),
            Expr::Aggregate(agg) => {
                if let Some(param) = &agg.param {
                    self.labels(param);
                }
                let input = self.labels(&agg.expr);
                // topk and bottomk select series: they keep every label, `by` or not.
                let selects = matches!(agg.op.to_string().as_str(), "topk" | "bottomk");
                match &agg.modifier {
                    Some(LabelModifier::Include(by)) => {
                        self.need(&format!("{} by", agg.op), &by.labels, &input);
                        if selects {
                            input
                        } else {
                            by.labels.iter().cloned().collect()
                        }
                    }
                    Some(LabelModifier::Exclude(without)) => {
                        self.need(&format!("{} without", agg.op), &without.labels, &input);
                        input
                            .into_iter()
                            .filter(|l| !without.labels.contains(l))
                            .collect()
                    }
                    None if selects => input,
                    None => BTreeSet::new(),
                }
            }
            Expr::Binary(bin) => {
                let lhs = self.labels(&bin.lhs);
                let rhs = self.labels(&bin.rhs);
                let lhs_scalar = lhs.is_empty() && is_scalar(&bin.lhs);
                let rhs_scalar = rhs.is_empty() && is_scalar(&bin.rhs);
                if lhs_scalar {
                    return rhs;
                }
                if rhs_scalar {
                    return lhs;
                }
                let Some(modifier) = &bin.modifier else {
                    return if bin.op.to_string() == "or" {
                        lhs.union(&rhs).cloned().collect()
                    } else {
                        lhs
                    };
                };
                match &modifier.matching {
                    Some(LabelModifier::Include(on)) => {
                        self.need("on (...)", &on.labels, &lhs);
                        self.need("on (...)", &on.labels, &rhs);
                    }
                    Some(LabelModifier::Exclude(ignoring)) => {
                        let either: BTreeSet<String> = lhs.union(&rhs).cloned().collect();
                        self.need("ignoring (...)", &ignoring.labels, &either);
                    }
                    None => {}
                }
                match &modifier.card {
                    VectorMatchCardinality::ManyToOne(copied) => {
                        self.need("group_left (...)", &copied.labels, &rhs);
                        lhs.into_iter()
                            .chain(copied.labels.iter().cloned())
                            .collect()
                    }
                    VectorMatchCardinality::OneToMany(copied) => {
                        self.need("group_right (...)", &copied.labels, &lhs);
                        rhs.into_iter()
                            .chain(copied.labels.iter().cloned())
                            .collect()
                    }
                    _ if bin.op.to_string() == "or" => lhs.union(&rhs).cloned().collect(),
                    _ => lhs,
                }
            }
            Expr::Call(call) => {
                let args: Vec<BTreeSet<String>> =
                    call.args.args.iter().map(|a| self.labels(a)).collect();
                match call.func.name {
                    "histogram_quantile" => {
                        let mut input = args.get(1).cloned().unwrap_or_default();
                        if !input.remove("le") {
                            self.problems
                                .push("histogram_quantile over series without `le`".to_owned());
                        }
                        input
                    }
                    "absent" | "absent_over_time" => absent_labels(&call.args.args[0]),
                    "vector" | "time" | "scalar" => BTreeSet::new(),
                    "label_replace" => {
                        let mut input = args.first().cloned().unwrap_or_default();
                        if let Some(Expr::StringLiteral(dst)) = call.args.args.get(2).map(|a| &**a)
                        {
                            input.insert(dst.val.clone());
                        }
                        input
                    }
                    _ => args.into_iter().find(|a| !a.is_empty()).unwrap_or_default(),
                }
            }
        }
    }

    fn selector(&mut self, vs: &parser::VectorSelector) -> BTreeSet<String> {
        let Some(name) = &vs.name else {
            self.problems
                .push(format!("a selector without a metric name: {vs}"));
            return BTreeSet::new();
        };
        self.selected.insert(name.clone());
        let Some(labels) = self.known.get(name) else {
            if !self.known.is_empty() {
                self.problems.push(format!(
                    "`{name}` is neither a gpulse series (catalog), `up`, nor a recorded series"
                ));
            }
            return BTreeSet::new();
        };
        let labels = labels.clone();
        let named: Vec<String> = vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten())
            .map(|m| m.name.clone())
            .filter(|n| n != "__name__")
            .collect();
        self.need(&format!("the selector of `{name}`"), &named, &labels);
        labels
    }
}

/// A number, or a function returning a scalar.
fn is_scalar(expr: &Expr) -> bool {
    match expr {
        Expr::NumberLiteral(_) => true,
        Expr::Paren(p) => is_scalar(&p.expr),
        Expr::Unary(u) => is_scalar(&u.expr),
        Expr::Binary(b) => is_scalar(&b.lhs) && is_scalar(&b.rhs),
        Expr::Call(c) => matches!(c.func.name, "scalar" | "time"),
        _ => false,
    }
}

/// `absent(sel{a="x"})` returns `{a="x"}`: its equality matchers.
fn absent_labels(arg: &Expr) -> BTreeSet<String> {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return BTreeSet::new(),
    };
    vs.matchers
        .matchers
        .iter()
        .filter(|m| matches!(m.op, MatchOp::Equal))
        .map(|m| m.name.clone())
        .collect()
}

/// `promtool` on PATH, or `None` after a loud skip line (a failure under `GPULSE_CI=1`).
pub fn promtool() -> Option<std::path::PathBuf> {
    let found = crate::skip::on_path("promtool");
    if found.is_none() {
        crate::skip::not_installed(
            "`promtool` is not on PATH",
            "install Debian's `prometheus` package (`apt-get install prometheus`)",
        );
    }
    found
}

/// Runs `promtool ARGS` in the repository root: whether it succeeded, and what it said.
pub fn run_promtool(promtool: &Path, args: &[&str]) -> (bool, String) {
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
fn the_checker_infers_labels_and_catches_unknown_names() {
    let known = exported_and_recorded();
    let ok = |e: &str| labels_of(e, &known).unwrap_or_else(|p| panic!("{e}: {p:?}"));
    assert_eq!(
        ok("sum by (provider) (gpulse_score{window=\"24h\"} \
            * on (instance, job) group_left (provider) gpulse_akash_info)"),
        set(&["provider"])
    );
    assert_eq!(
        ok("histogram_quantile(0.9, sum by (le, probe) \
            (rate(gpulse_probe_inference_duration_seconds_bucket[5m])))"),
        set(&["probe"])
    );
    assert_eq!(ok("absent(up{job=\"gpulse\"})"), set(&["job"]));
    assert_eq!(
        ok("topk by (job) (1, up)"),
        set(&["instance", "job"]),
        "topk keeps the labels of the series it picks"
    );
    assert_eq!(
        ok("provider:gpulse_score_evidence_good:ratio{window=\"7d\"}"),
        set(&["provider", "component", "window"])
    );
    for bad in [
        "gpulse_no_such_family",
        "gpulse_gpu_utilization_ratio{provider=\"x\"}",
        "sum by (provider) (gpulse_score)",
        "gpulse_score * on (instance) group_left (owner) gpulse_build_info",
        "rate(gpulse_exports[5m])",
        "{__name__=~\"gpulse_.*\"}",
        "sum(",
    ] {
        assert!(labels_of(bad, &known).is_err(), "{bad} passed");
    }
}
