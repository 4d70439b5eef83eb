//! Prometheus text exposition (0.0.4) and OpenMetrics 1.0 text parser: std only, bounded, lenient per line.
//!
//! [`parse`] turns a scraped `/metrics` body of another program into [`Sample`]s and the
//! declared family [`MetricType`]s. It runs inside the agent on text we do not control, so it
//! never fails as a whole: a malformed line is counted in [`Exposition::invalid_lines`] and
//! skipped, and parsing stops with [`Exposition::truncated`] set as soon as a [`Limits`] bound
//! would be exceeded. The caller's `keep` filter decides which samples are stored, so only the
//! families it reads cost memory; a sample that is not kept is checked for syntax and dropped
//! without allocating.
//!
//! Accepted syntax: `# HELP`, `# TYPE`, `# UNIT` and `# EOF` (with or without the space after
//! `#`), other comments, `:` in metric names, label sets with escapes (`\\`, `\"`, `\n`), any
//! UTF-8 in values, trailing commas, `{}`, spaces or tabs between tokens, `\r\n` line ends,
//! blank lines, `NaN`/`+Inf`/`-Inf`/`Inf` and exponent floats, an optional timestamp
//! (milliseconds or seconds, both parsed and dropped), OpenMetrics exemplars (`# {…} v [ts]`,
//! checked and dropped), and the UTF-8 name syntax (`{"my.metric", "a.b"="c"} 1`).

use std::borrow::Cow;
use std::collections::BTreeMap;

/// Bounds on what one [`parse`] call stores; reaching one stops the parse (`truncated`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Kept samples at most; also the most `# TYPE` entries kept in [`Exposition::types`].
    pub max_samples: usize,
    /// Labels at most on one kept sample.
    pub max_labels: usize,
    /// Bytes at most in one line (without its line end), kept or not.
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // A vLLM /metrics with a few models is a few thousand samples and its longest line (an
        // `_info` series with a few dozen labels) about 2 KB; these leave room without letting a
        // hostile or broken target cost more than a few MB.
        Limits {
            max_samples: 50_000,
            max_labels: 64,
            max_line_bytes: 64 * 1024,
        }
    }
}

/// A family's type, from its `# TYPE` line (0.0.4 names and OpenMetrics names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    /// 0.0.4 `untyped`.
    Untyped,
    Info,
    StateSet,
    GaugeHistogram,
    /// OpenMetrics `unknown`.
    Unknown,
}

impl MetricType {
    /// The name as a `# TYPE` line spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Unknown => "unknown",
        }
    }

    /// Reads a `# TYPE` token; case-insensitive, as Prometheus' own parser is.
    pub fn from_token(token: &str) -> Option<MetricType> {
        [
            MetricType::Counter,
            MetricType::Gauge,
            MetricType::Histogram,
            MetricType::Summary,
            MetricType::Untyped,
            MetricType::Info,
            MetricType::StateSet,
            MetricType::GaugeHistogram,
            MetricType::Unknown,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(token))
    }

    /// The suffixes a sample name may add to its family name for this type.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_count", "_sum", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gcount", "_gsum"],
            MetricType::Summary => &["_count", "_sum", "_created"],
            MetricType::Info => &["_info"],
            MetricType::Gauge
            | MetricType::Untyped
            | MetricType::StateSet
            | MetricType::Unknown => &[],
        }
    }
}

/// One sample line: its full name (with `_bucket`, `_total`, … as written), labels in the
/// order written, and value. Timestamps and exemplars are not kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What [`parse`] kept from one body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Kept samples, in the order written.
    pub samples: Vec<Sample>,
    /// Family name → type, from the kept `# TYPE` lines (the last one wins).
    pub types: BTreeMap<String, MetricType>,
    /// Lines that were neither blank, a comment, nor a valid sample (kept or not); skipped.
    pub invalid_lines: usize,
    /// A [`Limits`] bound was reached and the rest of the body was not read.
    pub truncated: bool,
}

/// Parses a text exposition (0.0.4 or OpenMetrics 1.0), storing the samples `keep` accepts.
///
/// `keep` is asked about each sample's name (`foo_bucket`, `foo_total`, …) and about each
/// `# TYPE` family name; a sample is kept when `keep` accepts its own name or the family that
/// the preceding `# TYPE` line declared and that the sample belongs to (by name and type
/// suffix). Parsing stops at `# EOF`.
pub fn parse(text: &str, limits: &Limits, keep: impl Fn(&str) -> bool) -> Exposition {
    let mut parser = Parser {
        limits,
        keep: &keep,
        family: None,
        out: Exposition::default(),
    };
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.len() > limits.max_line_bytes {
            parser.out.truncated = true;
            break;
        }
        match parser.line(line) {
            Ok(Flow::Next) => {}
            Ok(Flow::Eof) => break,
            Err(Stop::Invalid) => parser.out.invalid_lines += 1,
            Err(Stop::Limit) => {
                parser.out.truncated = true;
                break;
            }
        }
    }
    parser.out
}

/// Why a line ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The line is malformed: count it and go on.
    Invalid,
    /// Storing it would break a [`Limits`] bound: stop reading.
    Limit,
}

enum Flow {
    Next,
    Eof,
}

/// The family declared by the latest `# TYPE` line, so its samples can be kept by family name.
struct Family<'a> {
    name: Cow<'a, str>,
    mtype: MetricType,
    keep: bool,
}

impl Family<'_> {
    fn owns(&self, sample: &str) -> bool {
        match sample.strip_prefix(&*self.name) {
            Some("") => true,
            Some(rest) => self.mtype.suffixes().contains(&rest),
            None => false,
        }
    }
}

struct Parser<'a, 'k, K: Fn(&str) -> bool> {
    limits: &'k Limits,
    keep: &'k K,
    family: Option<Family<'a>>,
    out: Exposition,
}

/// One item inside `{…}`: a quoted metric name (UTF-8 syntax, first item only) or a label.
/// Both carry raw, still escaped text.
enum Item<'a> {
    Name(&'a str),
    Label(&'a str, &'a str),
}

impl<'a, K: Fn(&str) -> bool> Parser<'a, '_, K> {
    fn line(&mut self, line: &'a str) -> Result<Flow, Stop> {
        let mut c = Cursor { text: line, pos: 0 };
        c.skip_ws();
        match c.peek() {
            None => Ok(Flow::Next),
            Some(b'#') => self.comment(&mut c),
            Some(_) => self.sample(&mut c).map(|()| Flow::Next),
        }
    }

    fn comment(&mut self, c: &mut Cursor<'a>) -> Result<Flow, Stop> {
        c.bump();
        c.skip_ws();
        match c.token() {
            "HELP" | "UNIT" => {
                // The text after the name is free-form; only the name must be there.
                if !c.skip_ws() {
                    return Err(Stop::Invalid);
                }
                family_name(c).ok_or(Stop::Invalid)?;
                Ok(Flow::Next)
            }
            "TYPE" => {
                if !c.skip_ws() {
                    return Err(Stop::Invalid);
                }
                let name = family_name(c).ok_or(Stop::Invalid)?;
                if !c.skip_ws() {
                    return Err(Stop::Invalid);
                }
                let mtype = MetricType::from_token(c.token()).ok_or(Stop::Invalid)?;
                c.skip_ws();
                if !c.at_end() {
                    return Err(Stop::Invalid);
                }
                let keep = (self.keep)(&name);
                if keep {
                    let types = &mut self.out.types;
                    if types.len() >= self.limits.max_samples && !types.contains_key(&*name) {
                        return Err(Stop::Limit);
                    }
                    types.insert(name.to_string(), mtype);
                }
                self.family = Some(Family { name, mtype, keep });
                Ok(Flow::Next)
            }
            "EOF" => {
                c.skip_ws();
                if c.at_end() {
                    Ok(Flow::Eof)
                } else {
                    Ok(Flow::Next)
                }
            }
            // Any other comment is allowed and means nothing.
            _ => Ok(Flow::Next),
        }
    }

    fn kept(&self, name: &str) -> bool {
        self.family.as_ref().is_some_and(|f| f.keep && f.owns(name)) || (self.keep)(name)
    }

    fn sample(&mut self, c: &mut Cursor<'a>) -> Result<(), Stop> {
        let mut name: Option<Cow<'a, str>> = None;
        let mut kept = false;
        let mut spaced = false;
        if c.peek() != Some(b'{') {
            let n = c.metric_name().ok_or(Stop::Invalid)?;
            kept = self.kept(n);
            name = Some(Cow::Borrowed(n));
            spaced = c.skip_ws();
        }
        let mut labels: Vec<(String, String)> = Vec::new();
        if c.peek() == Some(b'{') {
            let max_labels = self.limits.max_labels;
            label_set(c, |item, first| match item {
                Item::Name(raw) if first && name.is_none() => {
                    let n = unescape(raw);
                    kept = self.kept(&n);
                    name = Some(n);
                    Ok(())
                }
                Item::Name(_) => Err(Stop::Invalid),
                // In the braced syntax the metric name comes first.
                Item::Label(..) if name.is_none() => Err(Stop::Invalid),
                Item::Label(k, v) => {
                    if kept {
                        if labels.len() >= max_labels {
                            return Err(Stop::Limit);
                        }
                        labels.push((unescape(k).into_owned(), unescape(v).into_owned()));
                    }
                    Ok(())
                }
            })?;
            spaced = true;
            c.skip_ws();
        }
        let name = name.ok_or(Stop::Invalid)?;
        if !spaced {
            // `foo-1` or `foo"x" 1`: the name ran into something that is not a separator.
            return Err(Stop::Invalid);
        }
        let value = parse_float(c.token()).ok_or(Stop::Invalid)?;
        trailer(c)?;
        if !kept {
            return Ok(());
        }
        // Duplicate label names make the series ambiguous; Prometheus refuses them too.
        for (i, (k, _)) in labels.iter().enumerate() {
            if labels.iter().skip(i + 1).any(|(other, _)| other == k) {
                return Err(Stop::Invalid);
            }
        }
        if self.out.samples.len() >= self.limits.max_samples {
            return Err(Stop::Limit);
        }
        self.out.samples.push(Sample {
            name: name.into_owned(),
            labels,
            value,
        });
        Ok(())
    }
}

/// What may follow a sample's value: a timestamp, an exemplar, both (in that order), or nothing.
fn trailer(c: &mut Cursor<'_>) -> Result<(), Stop> {
    if !c.skip_ws() {
        return if c.at_end() {
            Ok(())
        } else {
            Err(Stop::Invalid)
        };
    }
    if c.at_end() {
        return Ok(());
    }
    if c.peek() != Some(b'#') {
        parse_float(c.token()).ok_or(Stop::Invalid)?;
        if !c.skip_ws() {
            return if c.at_end() {
                Ok(())
            } else {
                Err(Stop::Invalid)
            };
        }
        if c.at_end() {
            return Ok(());
        }
    }
    exemplar(c)
}

/// An OpenMetrics exemplar, `# {labels} value [timestamp]`: checked, then dropped.
fn exemplar(c: &mut Cursor<'_>) -> Result<(), Stop> {
    if !c.eat(b'#') || !c.skip_ws() || c.peek() != Some(b'{') {
        return Err(Stop::Invalid);
    }
    label_set(c, |item, _| match item {
        Item::Label(..) => Ok(()),
        Item::Name(_) => Err(Stop::Invalid),
    })?;
    if !c.skip_ws() {
        return Err(Stop::Invalid);
    }
    parse_float(c.token()).ok_or(Stop::Invalid)?;
    if c.skip_ws() && !c.at_end() {
        parse_float(c.token()).ok_or(Stop::Invalid)?;
        c.skip_ws();
    }
    if c.at_end() {
        Ok(())
    } else {
        Err(Stop::Invalid)
    }
}

/// Reads `{…}` (the cursor is on `{`), handing each item to `on` with whether it is the first.
fn label_set<'a>(
    c: &mut Cursor<'a>,
    mut on: impl FnMut(Item<'a>, bool) -> Result<(), Stop>,
) -> Result<(), Stop> {
    if !c.eat(b'{') {
        return Err(Stop::Invalid);
    }
    let mut first = true;
    loop {
        c.skip_ws();
        if c.eat(b'}') {
            return Ok(());
        }
        let (key, quoted) = if c.peek() == Some(b'"') {
            (c.quoted().ok_or(Stop::Invalid)?, true)
        } else {
            (c.label_name().ok_or(Stop::Invalid)?, false)
        };
        c.skip_ws();
        if c.eat(b'=') {
            c.skip_ws();
            if c.peek() != Some(b'"') {
                return Err(Stop::Invalid);
            }
            let value = c.quoted().ok_or(Stop::Invalid)?;
            on(Item::Label(key, value), first)?;
        } else if quoted {
            on(Item::Name(key), first)?;
        } else {
            return Err(Stop::Invalid);
        }
        first = false;
        c.skip_ws();
        if c.eat(b',') {
            continue;
        }
        if c.eat(b'}') {
            return Ok(());
        }
        return Err(Stop::Invalid);
    }
}

/// A family name in a `# HELP`/`# TYPE`/`# UNIT` line: plain, or quoted (UTF-8 syntax).
fn family_name<'a>(c: &mut Cursor<'a>) -> Option<Cow<'a, str>> {
    if c.peek() == Some(b'"') {
        c.quoted().map(unescape)
    } else {
        c.metric_name().map(Cow::Borrowed)
    }
}

/// A sample value or timestamp. Rust's parser takes every spelling the formats use (`NaN`,
/// `+Inf`, `-Inf`, `Inf`, `1.5e-3`) and, beyond them, `inf`/`infinity`/`nan` in any case,
/// which only widens what we accept. Go's hex floats are refused (no exporter we read uses them).
fn parse_float(token: &str) -> Option<f64> {
    token.parse::<f64>().ok()
}

/// Undoes the escapes of a quoted string that [`Cursor::quoted`] already checked.
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(ch);
        }
    }
    Cow::Owned(out)
}

/// A position in one line. Every stop is at an ASCII byte, so slices are char boundaries.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// Skips spaces and tabs; true if there was at least one.
    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.bump();
        }
        self.pos > start
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        self.text.get(start..self.pos).unwrap_or("")
    }

    /// Everything up to the next space, tab or line end.
    fn token(&mut self) -> &'a str {
        self.take_while(|b| b != b' ' && b != b'\t')
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    fn metric_name(&mut self) -> Option<&'a str> {
        if !self
            .peek()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        {
            return None;
        }
        Some(self.take_while(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'))
    }

    /// `[a-zA-Z_][a-zA-Z0-9_]*`
    fn label_name(&mut self) -> Option<&'a str> {
        if !self
            .peek()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            return None;
        }
        Some(self.take_while(|b| b.is_ascii_alphanumeric() || b == b'_'))
    }

    /// A `"…"` string (the cursor is on the opening quote): its raw contents, escapes still in.
    /// `None` for an unknown escape or a missing closing quote.
    fn quoted(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.pos;
        loop {
            match self.peek()? {
                b'"' => {
                    let raw = self.text.get(start..self.pos);
                    self.bump();
                    return raw;
                }
                b'\\' => {
                    self.bump();
                    if !matches!(self.peek()?, b'\\' | b'"' | b'n') {
                        return None;
                    }
                    self.bump();
                }
                _ => self.bump(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
