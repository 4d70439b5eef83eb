//! The Grafana dashboards (`packaging/grafana/*.json`) are generated from the panel tables in
//! `dashboards/fleet.rs` and `dashboards/node.rs`, so the queries live in one place that the
//! tests walk: the committed JSON must equal what the tables generate (regenerate with
//! `GPULSE_BLESS=1 cargo test --test it dashboards`); it must be importable dashboard JSON (a
//! `datasource` variable every panel and variable uses, unique panel ids, a grid without
//! overlaps, every `$variable` defined and every variable used); every PromQL expression must
//! parse and name only series and labels gpulse exports (`crate::promql`), and every legend
//! only labels its query returns; and, end to end, a real Prometheus scraping a gpulse on the
//! fake NVML (with a probed inference server, an Akash lease, a price, failing OTLP pushes and
//! GPU faults, and the rules loaded) must answer every panel's query, variables substituted,
//! with data. The same run checks that every alerting and recording rule evaluates without
//! error and that the faults raise the alerts they should and no others.

mod e2e;
mod fleet;
mod node;

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::tidy::root;

/// How a panel shows its queries.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// A number.
    Stat,
    /// A count that is bad when above 0 (red from 1).
    StatBad,
    /// The legend of the (1-valued) series: a state, a version.
    StatName,
    /// Lines over time.
    Series,
    /// The current series, one per row, value included.
    Table,
    /// The current series' labels, one per row (the value is always 1).
    TableLabels,
    /// Horizontal bars of the current values.
    Bars,
}

/// The dashboards' template variables besides `datasource`.
#[derive(Clone, Copy, PartialEq)]
pub enum Var {
    Job,
    Instance,
    Gpu,
}

impl Var {
    fn name(self) -> &'static str {
        match self {
            Var::Job => "job",
            Var::Instance => "instance",
            Var::Gpu => "gpu",
        }
    }

    /// The `label_values(SELECTOR, LABEL)` query that lists its values.
    fn query(self) -> &'static str {
        match self {
            Var::Job => "label_values(gpulse_build_info, job)",
            Var::Instance => "label_values(gpulse_build_info{job=~\"$job\"}, instance)",
            Var::Gpu => "label_values(gpulse_gpu_info{job=~\"$job\",instance=\"$instance\"}, gpu)",
        }
    }

    /// `Some(all value)` for a multi-value variable with an "All" option.
    fn all(self) -> Option<&'static str> {
        match self {
            Var::Job => Some(".+"),
            Var::Instance => None,
            Var::Gpu => Some(".*"),
        }
    }
}

pub struct Panel {
    kind: Kind,
    w: u32,
    h: u32,
    title: &'static str,
    unit: &'static str,
    description: &'static str,
    /// (PromQL with `J` / `B` / `G` selector shorthands, legend).
    targets: &'static [(&'static str, &'static str)],
}

pub enum Item {
    Row(&'static str),
    Panel(Panel),
}

pub struct Board {
    file: &'static str,
    uid: &'static str,
    title: &'static str,
    description: &'static str,
    vars: &'static [Var],
    items: &'static [Item],
}

pub const fn row(title: &'static str) -> Item {
    Item::Row(title)
}

pub const fn panel(
    kind: Kind,
    w: u32,
    h: u32,
    title: &'static str,
    unit: &'static str,
    description: &'static str,
    targets: &'static [(&'static str, &'static str)],
) -> Item {
    Item::Panel(Panel {
        kind,
        w,
        h,
        title,
        unit,
        description,
        targets,
    })
}

const BOARDS: [&Board; 2] = [&fleet::BOARD, &node::BOARD];

const DATASOURCE: &str = "${datasource}";

/// Expands the selector shorthands of the panel tables: inside `{...}`, the item `J` is the
/// job matcher, `B` the job and instance matchers, `G` the GPU matcher.
pub fn expand(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..=open]);
        let items: Vec<&str> = rest[open + 1..close]
            .split(',')
            .map(|item| match item.trim() {
                "J" => "job=~\"$job\"",
                "B" => "job=~\"$job\",instance=\"$instance\"",
                "G" => "gpu=~\"$gpu\"",
                _ => item,
            })
            .collect();
        out.push_str(&items.join(","));
        out.push('}');
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

fn datasource() -> Value {
    json!({"type": "prometheus", "uid": DATASOURCE})
}

fn variable(var: Var) -> Value {
    let mut v = json!({
        "name": var.name(),
        "label": var.name(),
        "type": "query",
        "datasource": datasource(),
        "definition": var.query(),
        "query": {"qryType": 1, "query": var.query(), "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "sort": if var == Var::Gpu { 3 } else { 1 },
        "hide": 0,
        "multi": var.all().is_some(),
        "includeAll": var.all().is_some(),
        "current": {},
        "options": [],
        "skipUrlSync": false,
    });
    if let Some(all) = var.all() {
        v["allValue"] = json!(all);
    }
    v
}

fn panel_json(p: &Panel, id: u32, x: u32, y: u32) -> Value {
    let instant = !matches!(p.kind, Kind::Series);
    let table = matches!(p.kind, Kind::Table | Kind::TableLabels);
    let targets: Vec<Value> = p
        .targets
        .iter()
        .enumerate()
        .map(|(i, (expr, legend))| {
            json!({
                "refId": ((b'A' + i as u8) as char).to_string(),
                "datasource": datasource(),
                "expr": expand(expr),
                "legendFormat": legend,
                "range": !instant,
                "instant": instant,
                "format": if table { "table" } else { "time_series" },
            })
        })
        .collect();
    let (kind, options, mut defaults) = match p.kind {
        Kind::Stat | Kind::StatBad | Kind::StatName => {
            let steps = if p.kind == Kind::StatBad {
                json!([{"color": "green", "value": null}, {"color": "red", "value": 1}])
            } else {
                json!([{"color": "blue", "value": null}])
            };
            (
                "stat",
                json!({
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                    "colorMode": "value",
                    "graphMode": "none",
                    "justifyMode": "auto",
                    "orientation": "auto",
                    "textMode": if p.kind == Kind::StatName { "name" } else { "auto" },
                }),
                json!({"color": {"mode": "thresholds"}, "thresholds": {"mode": "absolute", "steps": steps}}),
            )
        }
        Kind::Series => (
            "timeseries",
            json!({
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }),
            json!({"custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": false}}),
        ),
        Kind::Table | Kind::TableLabels => (
            "table",
            json!({"showHeader": true, "cellHeight": "sm"}),
            json!({}),
        ),
        Kind::Bars => (
            "bargauge",
            json!({
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                "orientation": "horizontal",
                "displayMode": "basic",
                "showUnfilled": true,
            }),
            json!({"color": {"mode": "palette-classic"}}),
        ),
    };
    defaults["unit"] = json!(p.unit);
    let mut panel = json!({
        "id": id,
        "type": kind,
        "title": p.title,
        "description": p.description,
        "datasource": datasource(),
        "gridPos": {"h": p.h, "w": p.w, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": targets,
    });
    if table {
        let mut hidden = json!({"Time": true, "__name__": true, "job": true});
        if p.kind == Kind::TableLabels {
            hidden["Value"] = json!(true);
        }
        panel["transformations"] =
            json!([{"id": "organize", "options": {"excludeByName": hidden}}]);
    }
    panel
}

/// The dashboard JSON of `board`.
fn generate(board: &Board) -> Value {
    let mut panels = Vec::new();
    let (mut x, mut y, mut line_h) = (0, 0, 0);
    for (i, item) in board.items.iter().enumerate() {
        let id = i as u32 + 1;
        match item {
            Item::Row(title) => {
                y += line_h;
                (x, line_h) = (0, 0);
                panels.push(json!({
                    "id": id, "type": "row", "title": title, "collapsed": false,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": [],
                }));
                y += 1;
            }
            Item::Panel(p) => {
                if x + p.w > 24 {
                    y += line_h;
                    (x, line_h) = (0, 0);
                }
                panels.push(panel_json(p, id, x, y));
                x += p.w;
                line_h = line_h.max(p.h);
            }
        }
    }
    let mut variables = vec![json!({
        "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
        "current": {}, "hide": 0, "includeAll": false, "multi": false, "options": [],
        "refresh": 1, "regex": "", "skipUrlSync": false,
    })];
    variables.extend(board.vars.iter().map(|v| variable(*v)));
    let mut used_types: BTreeSet<&str> = BTreeSet::new();
    for p in &panels {
        used_types.insert(p["type"].as_str().unwrap_or_default());
    }
    let mut requires = vec![
        json!({"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"}),
        json!({"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}),
    ];
    for t in used_types.iter().filter(|t| **t != "row") {
        requires.push(json!({"type": "panel", "id": t, "name": t, "version": ""}));
    }
    json!({
        "__requires": requires,
        "uid": board.uid,
        "title": board.title,
        "description": board.description,
        "tags": ["gpulse", "gpu"],
        "editable": true,
        "graphTooltip": 1,
        "id": null,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": false,
        "weekStart": "",
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": true, "hide": true, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "links": [{
            "title": "gpulse dashboards", "type": "dashboards", "tags": ["gpulse"],
            "asDropdown": true, "includeVars": true, "keepTime": true, "targetBlank": false,
            "icon": "external link", "tooltip": "", "url": "",
        }],
        "templating": {"list": variables},
        "panels": panels,
    })
}

fn render(board: &Board) -> String {
    let mut text = serde_json::to_string_pretty(&generate(board)).unwrap();
    text.push('\n');
    text
}

fn committed(board: &Board) -> Value {
    let path = root().join(board.file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", board.file));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", board.file))
}

/// Every (panel title, target) of a dashboard's JSON, rows left out.
fn targets(dashboard: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                target.clone(),
            ));
        }
    }
    out
}

/// `expr` with the dashboard variables replaced by `values` (name → value) and Grafana's
/// `$__rate_interval` by `rate_interval`.
fn substitute(expr: &str, values: &[(&str, &str)], rate_interval: &str) -> String {
    let mut out = expr.replace("$__rate_interval", rate_interval);
    for (name, value) in values {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

/// The values the static checks give the variables: one job and node, all GPUs.
const CHECK_VALUES: &[(&str, &str)] = &[("job", "gpulse"), ("instance", "n1:9412"), ("gpu", ".*")];

/// `label_values(SELECTOR, LABEL)` split.
fn label_values(query: &str) -> (&str, &str) {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(...): {query}"));
    let comma = inner.rfind(',').unwrap_or_else(|| panic!("{query}"));
    (inner[..comma].trim(), inner[comma + 1..].trim())
}

/// The `{{label}}` names of a legend.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split("}}").next())
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn dashboards_match_their_panel_tables() {
    for board in BOARDS {
        let text = render(board);
        let path = root().join(board.file);
        if std::env::var_os("GPULSE_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            current == text,
            "{} differs from its panel table (tests/it/dashboards/); regenerate it with \
             `GPULSE_BLESS=1 cargo test --test it dashboards` and review the diff",
            board.file
        );
    }
}

#[test]
fn dashboards_are_importable_dashboard_json() {
    for board in BOARDS {
        let d = committed(board);
        let file = board.file;
        assert_eq!(d["uid"], board.uid, "{file}: uid");
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        assert_eq!(d["schemaVersion"], 39, "{file}: schemaVersion");
        assert!(
            d["id"].is_null(),
            "{file}: id must be null to import as a new dashboard"
        );
        assert!(
            d.get("__inputs").is_none(),
            "{file}: the datasource is a variable, not an input"
        );
        let vars = d["templating"]["list"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: templating"));
        assert_eq!(vars[0]["name"], "datasource", "{file}: the first variable");
        assert_eq!(vars[0]["type"], "datasource", "{file}");
        assert_eq!(vars[0]["query"], "prometheus", "{file}");
        let defined: BTreeSet<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
        let mut used = BTreeSet::new();
        for v in &vars[1..] {
            assert_eq!(
                v["datasource"],
                datasource(),
                "{file}: variable {}",
                v["name"]
            );
            assert_eq!(v["type"], "query", "{file}: variable {}", v["name"]);
            used.extend(dollar_names(v["definition"].as_str().unwrap_or_default()));
        }
        let panels = d["panels"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: panels"));
        let mut ids = BTreeSet::new();
        let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
        for p in panels {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            assert!(!title.is_empty(), "{file}: a panel without a title: {p}");
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: {title}: id"));
            assert!(ids.insert(id), "{file}: {title}: id {id} used twice");
            let g = &p["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
                g[k].as_u64()
                    .unwrap_or_else(|| panic!("{file}: {title}: gridPos.{k}"))
            });
            assert!(
                w > 0 && h > 0 && x + w <= 24,
                "{file}: {title}: gridPos {g}"
            );
            for (ox, oy, ow, oh, other) in &boxes {
                let apart = x + w <= *ox || *ox + ow <= x || y + h <= *oy || *oy + oh <= y;
                assert!(apart, "{file}: {title} overlaps {other}");
            }
            boxes.push((x, y, w, h, title.clone()));
            let kind = p["type"].as_str().unwrap_or_default();
            if kind == "row" {
                continue;
            }
            assert!(
                ["stat", "timeseries", "table", "bargauge"].contains(&kind),
                "{file}: {title}: panel type {kind}"
            );
            assert_eq!(p["datasource"], datasource(), "{file}: {title}: datasource");
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: {title}"));
            assert!(!targets.is_empty(), "{file}: {title}: no targets");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert_eq!(
                    t["datasource"],
                    datasource(),
                    "{file}: {title}: target datasource"
                );
                assert!(
                    refs.insert(t["refId"].as_str().unwrap_or_default()),
                    "{file}: {title}: refId"
                );
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "{file}: {title}: empty expr");
                assert!(
                    !expr.contains("DCGM_"),
                    "{file}: {title}: a dcgm-exporter name"
                );
                used.extend(dollar_names(expr));
            }
        }
        used.remove("__rate_interval");
        used.insert("datasource".to_owned());
        assert_eq!(
            used,
            defined
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<BTreeSet<String>>(),
            "{file}: variables used (left) and defined (right) differ"
        );
    }
}

/// The `$name` / `${name}` variables a query uses.
fn dollar_names(text: &str) -> Vec<String> {
    text.split('$')
        .skip(1)
        .map(|rest| {
            rest.trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn dashboard_queries_parse_and_name_exported_series_and_labels() {
    let known = crate::promql::exported_and_recorded();
    let mut problems = Vec::new();
    let mut count = 0;
    for board in BOARDS {
        let d = committed(board);
        for (title, target) in targets(&d) {
            count += 1;
            let expr = substitute(
                target["expr"].as_str().unwrap_or_default(),
                CHECK_VALUES,
                "5m",
            );
            match crate::promql::labels_of(&expr, &known) {
                Err(found) => problems.extend(
                    found
                        .into_iter()
                        .map(|p| format!("{}: {title}: {p}\n    {expr}", board.file)),
                ),
                Ok(labels) => {
                    let legend = target["legendFormat"].as_str().unwrap_or_default();
                    for label in legend_labels(legend) {
                        if !labels.contains(&label) {
                            problems.push(format!(
                                "{}: {title}: legend {{{{{label}}}}} is not a label of {expr} \
                                 ({labels:?})",
                                board.file
                            ));
                        }
                    }
                }
            }
        }
        for v in d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .skip(1)
        {
            let (selector, label) = label_values(v["definition"].as_str().unwrap_or_default());
            let selector = substitute(selector, CHECK_VALUES, "5m");
            match crate::promql::labels_of(&selector, &known) {
                Ok(labels) if labels.contains(label) => {}
                other => problems.push(format!(
                    "{}: variable {}: {label} on {selector}: {other:?}",
                    board.file, v["name"]
                )),
            }
        }
    }
    assert!(count > 60, "only {count} queries");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_shorthands_expand_inside_selectors_only() {
    assert_eq!(
        expand("sum by (gpu) (x{B,G,reason=\"a\"}) / y{J}"),
        "sum by (gpu) (x{job=~\"$job\",instance=\"$instance\",gpu=~\"$gpu\",reason=\"a\"}) \
         / y{job=~\"$job\"}"
    );
    assert_eq!(legend_labels("GPU {{gpu}} {{ reason }}"), ["gpu", "reason"]);
    assert_eq!(
        substitute(
            "rate(x{gpu=~\"$gpu\"}[$__rate_interval])",
            &[("gpu", ".*")],
            "1m"
        ),
        "rate(x{gpu=~\".*\"}[1m])"
    );
}

/// The panels of both dashboards with their expanded queries: (file, panel, expr).
fn all_queries() -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    for board in BOARDS {
        for (title, target) in targets(&committed(board)) {
            out.push((
                board.file,
                title,
                target["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    out
}

/// The `label_values` queries of both dashboards' variables: (file, variable, definition).
fn all_variables() -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    for board in BOARDS {
        let d = committed(board);
        for v in d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .skip(1)
        {
            out.push((
                board.file,
                v["name"].as_str().unwrap_or_default().to_owned(),
                v["definition"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    out
}
