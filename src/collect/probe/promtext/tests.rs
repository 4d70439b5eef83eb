//! Tests of the exposition parser: one per syntax feature, limits, and two properties (no panic
//! within limits on any input; a generated valid exposition round-trips exactly).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn all(text: &str) -> Exposition {
    parse(text, &Limits::default(), |_| true)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sample(name: &str, pairs: &[(&str, &str)], value: f64) -> Sample {
    Sample {
        name: name.to_owned(),
        labels: labels(pairs),
        value,
    }
}

#[test]
fn help_type_unit_and_eof() {
    let e = all("# HELP x_seconds Time spent, in \"seconds\" \\ and more.\n\
         #HELP y Compact comment form.\n\
         # TYPE x_seconds counter\n\
         #TYPE y gauge\n\
         # UNIT x_seconds seconds\n\
         # just a comment\n\
         #\n\
         x_seconds_total 3\n\
         y 1\n\
         # EOF\n\
         after_eof 1\n");
    assert_eq!(
        e.samples,
        vec![sample("x_seconds_total", &[], 3.0), sample("y", &[], 1.0)]
    );
    assert_eq!(e.types.get("x_seconds"), Some(&MetricType::Counter));
    assert_eq!(e.types.get("y"), Some(&MetricType::Gauge));
    assert_eq!(e.invalid_lines, 0);
    assert!(!e.truncated);
}

#[test]
fn every_type_token_is_known_in_any_case() {
    for t in [
        "counter",
        "gauge",
        "histogram",
        "summary",
        "untyped",
        "info",
        "stateset",
        "gaugehistogram",
        "unknown",
    ] {
        let e = all(&format!("# TYPE f {}\n", t.to_uppercase()));
        let got = e.types.get("f").copied();
        assert_eq!(got.map(MetricType::as_str), Some(t));
    }
    let e = all("# TYPE f bogus\n# TYPE\n# TYPE g\n# HELP\n");
    assert!(e.types.is_empty());
    assert_eq!(e.invalid_lines, 4);
}

#[test]
fn colons_in_metric_names() {
    let e = all("vllm:num_requests_running{model_name=\"m\"} 2\n:leading:colon 1\n");
    assert_eq!(
        e.samples,
        vec![
            sample("vllm:num_requests_running", &[("model_name", "m")], 2.0),
            sample(":leading:colon", &[], 1.0),
        ]
    );
}

#[test]
fn label_value_escapes() {
    let e = all(r#"m{a="back\\slash",b="quote\"d",c="new\nline",d="\\n literal"} 1"#);
    assert_eq!(
        e.samples[0].labels,
        labels(&[
            ("a", "back\\slash"),
            ("b", "quote\"d"),
            ("c", "new\nline"),
            ("d", "\\n literal"),
        ])
    );
    // Only \\, \" and \n are escapes.
    let e = all("m{a=\"\\t\"} 1\nm{a=\"ok\"} 2\n");
    assert_eq!(e.invalid_lines, 1);
    assert_eq!(e.samples, vec![sample("m", &[("a", "ok")], 2.0)]);
}

#[test]
fn separators_inside_quoted_values() {
    let e = all(r#"m{path="/a,b}c=d#e",x="} 1 # {y=\"z\"} 2"} 7"#);
    assert_eq!(
        e.samples,
        vec![sample(
            "m",
            &[("path", "/a,b}c=d#e"), ("x", "} 1 # {y=\"z\"} 2")],
            7.0
        )]
    );
}

#[test]
fn trailing_comma_and_empty_label_sets() {
    let e = all("a{x=\"1\",} 1\nb{} 2\nc{ x=\"1\" , y=\"2\" , } 3\n");
    assert_eq!(
        e.samples,
        vec![
            sample("a", &[("x", "1")], 1.0),
            sample("b", &[], 2.0),
            sample("c", &[("x", "1"), ("y", "2")], 3.0),
        ]
    );
    // A comma alone or two in a row is not a label set.
    let e = all("d{,} 1\ne{x=\"1\",,} 1\n");
    assert_eq!(e.invalid_lines, 2);
}

#[test]
fn whitespace_variations() {
    let e = all("  a 1\n\tb\t2\t\nc  {x = \"1\"}   3   \nd{x=\"1\"}4\n");
    assert_eq!(
        e.samples,
        vec![
            sample("a", &[], 1.0),
            sample("b", &[], 2.0),
            sample("c", &[("x", "1")], 3.0),
            sample("d", &[("x", "1")], 4.0),
        ]
    );
    // A bare name needs a blank before its value.
    let e = all("e-1\n");
    assert_eq!(e.invalid_lines, 1);
}

#[test]
fn special_and_exponent_floats() {
    let e = all("a NaN\nb +Inf\nc -Inf\nd Inf\ne 1.5e-3\nf -2E+2\ng 42\nh .5\n");
    let v: Vec<f64> = e.samples.iter().map(|s| s.value).collect();
    assert!(v[0].is_nan());
    assert_eq!(
        &v[1..],
        &[
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            0.0015,
            -200.0,
            42.0,
            0.5
        ]
    );
    let e = all("a 1,5\nb one\nc 0x10\nd\n");
    assert_eq!(e.invalid_lines, 4);
    assert!(e.samples.is_empty());
}

#[test]
fn optional_timestamps_are_dropped() {
    let e = all("a 1 1700000000000\nb{x=\"y\"} 2 1700000000.123\nc 3 -5\n");
    assert_eq!(
        e.samples,
        vec![
            sample("a", &[], 1.0),
            sample("b", &[("x", "y")], 2.0),
            sample("c", &[], 3.0),
        ]
    );
    let e = all("a 1 soon\nb 1 2 3\n");
    assert_eq!(e.invalid_lines, 2);
}

#[test]
fn openmetrics_exemplars_are_checked_and_dropped() {
    let e = all("# TYPE h histogram\n\
         h_bucket{le=\"0.1\"} 8 # {trace_id=\"KOO5S4vxi0o\"} 0.067 1.6e9\n\
         h_bucket{le=\"+Inf\"} 9 1700000000 # {trace_id=\"x\",span_id=\"y\"} 1.5\n\
         h_count 9 # {} 2\n\
         h_sum 1.2\n");
    assert_eq!(e.invalid_lines, 0);
    assert_eq!(
        e.samples,
        vec![
            sample("h_bucket", &[("le", "0.1")], 8.0),
            sample("h_bucket", &[("le", "+Inf")], 9.0),
            sample("h_count", &[], 9.0),
            sample("h_sum", &[], 1.2),
        ]
    );
    let e = all("a 1 # trace\nb 1 # {x=\"y\"}\nc 1 # {x=\"y\"} 1 2 3\nd 1 #{x=\"y\"} 1\n");
    assert_eq!(e.invalid_lines, 4);
}

#[test]
fn created_series_are_samples_of_their_family() {
    let text = "# TYPE req counter\n\
        req_total{code=\"200\"} 5\n\
        req_created{code=\"200\"} 1.7e9\n\
        # TYPE lat histogram\n\
        lat_bucket{le=\"+Inf\"} 1\n\
        lat_count 1\n\
        lat_sum 0.5\n\
        lat_created 1.7e9\n\
        other 1\n";
    let e = all(text);
    assert_eq!(e.samples.len(), 7);
    assert_eq!(
        e.samples[1],
        sample("req_created", &[("code", "200")], 1.7e9)
    );
    // Keeping a family by name keeps every sample it owns, `_created` included, and nothing else.
    let e = parse(text, &Limits::default(), |n| n == "req" || n == "lat");
    let names: Vec<&str> = e.samples.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "req_total",
            "req_created",
            "lat_bucket",
            "lat_count",
            "lat_sum",
            "lat_created"
        ]
    );
    assert_eq!(e.types.len(), 2);
}

#[test]
fn crlf_line_ends_and_blank_lines() {
    let e = all("# TYPE a gauge\r\n\r\na{x=\"1\"} 1\r\n   \r\n\n\tb 2\r\n");
    assert_eq!(
        e.samples,
        vec![sample("a", &[("x", "1")], 1.0), sample("b", &[], 2.0)]
    );
    assert_eq!(e.types.get("a"), Some(&MetricType::Gauge));
    assert_eq!(e.invalid_lines, 0);
}

#[test]
fn utf8_label_values() {
    let e = all("m{model=\"Qwen/通义千问-7B\",emoji=\"🚀 ünïcödé\"} 1\n");
    assert_eq!(
        e.samples[0].labels,
        labels(&[("model", "Qwen/通义千问-7B"), ("emoji", "🚀 ünïcödé")])
    );
    // Non-ASCII is not a name character.
    let e = all("mé 1\nm{é=\"x\"} 1\n");
    assert_eq!(e.invalid_lines, 2);
}

#[test]
fn quoted_utf8_metric_and_label_names() {
    let e = all("# TYPE \"my.metric\" gauge\n\
         {\"my.metric\", a=\"b\", \"label.with\\\"quote\"=\"v\"} 1\n\
         {\"only.name\"} 2\n\
         {\"with.comma\",} 3\n");
    assert_eq!(
        e.samples,
        vec![
            sample("my.metric", &[("a", "b"), ("label.with\"quote", "v")], 1.0),
            sample("only.name", &[], 2.0),
            sample("with.comma", &[], 3.0),
        ]
    );
    assert_eq!(e.types.get("my.metric"), Some(&MetricType::Gauge));
    // The name comes first, once, and never in addition to a bare name.
    let e = all("{a=\"b\", \"late.name\"} 1\n{\"x\", \"y\"} 1\nm{\"x\"} 1\n{} 1\n");
    assert_eq!(e.invalid_lines, 4);
}

#[test]
fn invalid_lines_are_counted_and_skipped() {
    let e = all("good 1\n\
         unterminated{a=\"x} 1\n\
         missing_value{a=\"x\"}\n\
         noquote{a=x} 1\n\
         dup{a=\"1\",a=\"2\"} 1\n\
         9starts_with_digit 1\n\
         {a=\"no name\"} 1\n\
         unclosed{a=\"x\" 1\n\
         also_good{a=\"y\"} 2\n");
    assert_eq!(e.invalid_lines, 7);
    assert_eq!(
        e.samples,
        vec![
            sample("good", &[], 1.0),
            sample("also_good", &[("a", "y")], 2.0)
        ]
    );
    assert!(!e.truncated);
}

#[test]
fn keep_filters_samples_and_types() {
    let text = "# TYPE a_seconds histogram\n\
        a_seconds_bucket{le=\"1\"} 1\n\
        a_seconds_sum 1\n\
        # TYPE b gauge\n\
        b 2\n\
        c 3\n";
    let e = parse(text, &Limits::default(), |n| n.starts_with('c'));
    assert_eq!(e.samples, vec![sample("c", &[], 3.0)]);
    assert!(e.types.is_empty());
    let e = parse(text, &Limits::default(), |n| n == "a_seconds");
    assert_eq!(e.samples.len(), 2);
    assert_eq!(e.types.get("a_seconds"), Some(&MetricType::Histogram));
}

#[test]
fn sample_limit_stops_and_counts_only_kept_samples() {
    let text = "skip 0\na 1\nskip 0\nb 2\nc 3\nd 4\n";
    let limits = Limits {
        max_samples: 2,
        ..Limits::default()
    };
    let e = parse(text, &limits, |n| n != "skip");
    assert_eq!(
        e.samples,
        vec![sample("a", &[], 1.0), sample("b", &[], 2.0)]
    );
    assert!(e.truncated);
    let e = parse("a 1\nb 2\n", &limits, |_| true);
    assert!(!e.truncated);
}

#[test]
fn label_limit_applies_to_kept_samples() {
    let limits = Limits {
        max_labels: 2,
        ..Limits::default()
    };
    let text = "wide{a=\"1\",b=\"2\",c=\"3\"} 1\nok{a=\"1\",b=\"2\"} 2\n";
    let e = parse(text, &limits, |n| n == "ok");
    assert_eq!(e.samples.len(), 1);
    assert!(!e.truncated);
    let e = parse(text, &limits, |_| true);
    assert!(e.samples.is_empty());
    assert!(e.truncated);
}

#[test]
fn line_limit_stops_on_any_long_line() {
    let limits = Limits {
        max_line_bytes: 16,
        ..Limits::default()
    };
    // The line end (\r\n) does not count.
    let e = parse("a 1\r\nexactly_sixteen1 1\nb 2\n", &limits, |_| true);
    assert_eq!(e.samples.len(), 1);
    assert!(e.truncated);
    let e = parse("a 123456789012 1\r\n", &limits, |_| true);
    assert_eq!(e.samples.len(), 1);
    assert!(!e.truncated);
}

#[test]
fn type_limit_shares_the_sample_bound() {
    let limits = Limits {
        max_samples: 1,
        ..Limits::default()
    };
    let e = parse(
        "# TYPE a gauge\n# TYPE a gauge\n# TYPE b gauge\n",
        &limits,
        |_| true,
    );
    assert_eq!(e.types.len(), 1);
    assert!(e.truncated);
}

#[test]
fn label_lookup() {
    let s = sample("m", &[("a", "1"), ("b", "2")], 0.0);
    assert_eq!(s.label("b"), Some("2"));
    assert_eq!(s.label("c"), None);
}

// ---- Properties ----

/// Fragments that reach the parser's deeper states far more often than random characters.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("=".to_owned()),
        Just(",".to_owned()),
        Just("#".to_owned()),
        Just(" ".to_owned()),
        Just("\t".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("# TYPE ".to_owned()),
        Just("# HELP ".to_owned()),
        Just("# EOF".to_owned()),
        Just(" # {".to_owned()),
        Just("NaN".to_owned()),
        Just("+Inf".to_owned()),
        Just("1.5e3".to_owned()),
        Just("le=\"0.1\"".to_owned()),
        "[a-z_:]{1,8}",
        "counter|gauge|histogram|summary|untyped",
        "\\PC{0,4}",
    ]
}

fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,200}",
        proptest::collection::vec(fragment(), 0..80).prop_map(|f| f.concat()),
    ]
}

proptest! {
    #[test]
    fn any_input_is_parsed_within_limits(
        text in arbitrary_text(),
        max_samples in 0usize..6,
        max_labels in 0usize..4,
        max_line_bytes in 0usize..120,
        odd in any::<bool>(),
    ) {
        let limits = Limits { max_samples, max_labels, max_line_bytes };
        let e = parse(&text, &limits, |n| odd == (n.len() % 2 == 1));
        prop_assert!(e.samples.len() <= max_samples);
        prop_assert!(e.types.len() <= max_samples);
        prop_assert!(e.samples.iter().all(|s| s.labels.len() <= max_labels));
        prop_assert!(e.invalid_lines <= text.split('\n').count());
        // With generous limits nothing truncates a body this small.
        let e = all(&text);
        prop_assert!(!e.truncated);
    }
}

/// One generated sample and how to write it.
#[derive(Debug, Clone)]
struct Gen {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    mtype: Option<MetricType>,
    timestamp: Option<String>,
    exemplar: bool,
    trailing_comma: bool,
    spaced: bool,
    crlf: bool,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn is_plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_plain_label(s: &str) -> bool {
    !s.contains(':') && is_plain_name(s)
}

fn write_value(v: f64, alt: bool) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        if alt { "Inf" } else { "+Inf" }.to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if alt {
        format!("{v:e}")
    } else {
        format!("{v:?}")
    }
}

fn write(gens: &[Gen]) -> String {
    let mut out = String::new();
    for g in gens {
        let end = if g.crlf { "\r\n" } else { "\n" };
        let sp = if g.spaced { " \t " } else { " " };
        let quoted_name = !is_plain_name(&g.name);
        let family = if quoted_name {
            format!("\"{}\"", escape(&g.name))
        } else {
            g.name.clone()
        };
        if let Some(t) = g.mtype {
            out += &format!("# HELP {family} Help with \\\\ and \\n and \"quotes\".{end}");
            out += &format!("# TYPE {family} {}{end}", t.as_str());
        }
        let mut items: Vec<String> = Vec::new();
        if quoted_name {
            items.push(family.clone());
        }
        for (k, v) in &g.labels {
            let key = if is_plain_label(k) {
                k.clone()
            } else {
                format!("\"{}\"", escape(k))
            };
            items.push(format!(
                "{key}{}=\"{}\"",
                if g.spaced { " " } else { "" },
                escape(v)
            ));
        }
        let mut line = if quoted_name {
            String::new()
        } else {
            g.name.clone()
        };
        if quoted_name || !g.labels.is_empty() || g.trailing_comma {
            let sep = if g.spaced { " , " } else { "," };
            line += "{";
            line += &items.join(sep);
            if g.trailing_comma && !items.is_empty() {
                line += sep;
            }
            line += "}";
        }
        line += sp;
        line += &write_value(g.value, g.spaced);
        if let Some(ts) = &g.timestamp {
            line += sp;
            line += ts;
        }
        if g.exemplar {
            line += &format!("{sp}# {{trace_id=\"{}\"}} 0.5", escape(&g.name));
        }
        out += &line;
        out += end;
    }
    out
}

fn metric_type() -> impl Strategy<Value = MetricType> {
    prop_oneof![
        Just(MetricType::Counter),
        Just(MetricType::Gauge),
        Just(MetricType::Histogram),
        Just(MetricType::Summary),
        Just(MetricType::Untyped),
        Just(MetricType::Info),
        Just(MetricType::StateSet),
        Just(MetricType::GaugeHistogram),
        Just(MetricType::Unknown),
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof!["\\PC{0,10}", "[a-zé中🚀\"\\\\\n\r{}=,# \t]{0,12}"]
}

fn gen_sample() -> impl Strategy<Value = Gen> {
    let name = prop_oneof![
        4 => "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
        1 => "[a-z.é\"\\\\ -]{1,10}",
    ];
    let label_name = prop_oneof![
        4 => "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
        1 => "[a-z.é\"\\\\ :-]{1,6}",
    ];
    let value = prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        -1e6f64..1e6,
    ];
    let timestamp = proptest::option::of(prop_oneof![
        (0u64..2_000_000_000_000).prop_map(|t| t.to_string()),
        (0.0f64..2e9).prop_map(|t| format!("{t}")),
    ]);
    (
        name,
        proptest::collection::btree_map(label_name, label_value(), 0..5),
        value,
        proptest::option::of(metric_type()),
        timestamp,
        any::<(bool, bool, bool, bool)>(),
    )
        .prop_map(
            |(name, labels, value, mtype, timestamp, (exemplar, trailing_comma, spaced, crlf))| {
                Gen {
                    name,
                    labels: labels.into_iter().collect(),
                    value,
                    mtype,
                    timestamp,
                    exemplar,
                    trailing_comma,
                    spaced,
                    crlf,
                }
            },
        )
}

proptest! {
    #[test]
    fn a_valid_exposition_round_trips(gens in proptest::collection::vec(gen_sample(), 0..12)) {
        let text = write(&gens);
        let e = all(&text);
        prop_assert_eq!(e.invalid_lines, 0, "{}", text);
        prop_assert!(!e.truncated);
        prop_assert_eq!(e.samples.len(), gens.len(), "{}", text);
        for (s, g) in e.samples.iter().zip(&gens) {
            prop_assert_eq!(&s.name, &g.name);
            prop_assert_eq!(&s.labels, &g.labels);
            prop_assert!(
                s.value.to_bits() == g.value.to_bits() || (s.value.is_nan() && g.value.is_nan()),
                "{} != {}", s.value, g.value
            );
        }
        let mut types = BTreeMap::new();
        for g in &gens {
            if let Some(t) = g.mtype {
                types.insert(g.name.clone(), t);
            }
        }
        prop_assert_eq!(e.types, types);
    }
}
