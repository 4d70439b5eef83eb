//! Loading: the TOML file, then `GPULSE_<SECTION>_<KEY>` variables, then flags, and where
//! each value came from ([`Origins`]), so every error names `file:line:col`, the variable or
//! the flag — including errors found after parsing (cross-key rules, files, policies).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::{Config, ENV_PREFIX};

/// A configuration error: which key, where it came from, and what is wrong, on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key (`gpu.interval`, `probe[0].url`) when known.
    pub key: Option<String>,
    /// `FILE:LINE:COLUMN`, `GPULSE_GPU_INTERVAL (environment)` or `--interval (flag)`.
    /// Empty when the check that found the error does not know it: [`Origins::place`] fills
    /// it in from the key.
    pub origin: String,
    pub message: String,
}

impl ConfigError {
    /// An error about `key` whose origin the loader fills in ([`Origins::place`]).
    pub fn at_key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            origin: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    /// One line, however long or odd its parts: echoed values are already cut
    /// ([`shown`]), but a key, an origin (a path, a variable's name) or a message from serde
    /// may still hold anything; each is bounded and loses its middle when too long.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = bounded(&self.message, MAX_MESSAGE);
        let origin = bounded(&self.origin, MAX_ORIGIN);
        match (&self.key, self.origin.is_empty()) {
            (Some(key), false) => {
                let key = bounded(key, MAX_KEY);
                write!(f, "config key `{key}` at {origin}: {message}")
            }
            (Some(key), true) => {
                write!(f, "config key `{}`: {message}", bounded(key, MAX_KEY))
            }
            (None, _) => write!(f, "config at {origin}: {message}"),
        }
    }
}

/// The longest key, origin and message an error line shows (in characters).
const MAX_KEY: usize = 120;
const MAX_ORIGIN: usize = 300;
const MAX_MESSAGE: usize = 600;

/// `text` on one line (control characters become spaces), at most about `max` characters: a
/// longer one keeps its head and tail (where a message's hint is) around ` … `.
fn bounded(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let count = line.chars().count();
    if count <= max {
        return line;
    }
    let half = max / 2;
    let head: String = line.chars().take(half).collect();
    let tail: String = line.chars().skip(count - half).collect();
    format!("{head} … {tail}")
}

impl std::error::Error for ConfigError {}

/// How many characters of a value an error echoes: a 100 KB value must not make a 100 KB
/// error line. Longer values are cut and end in `…`.
pub const MAX_SHOWN: usize = 80;

/// `text` cut to at most `max` characters, ending in `…` when cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A value as an error echoes it: quoted, escaped onto one line, at most [`MAX_SHOWN`]
/// characters.
pub fn shown(text: &str) -> String {
    format!("{:?}", clip(text, MAX_SHOWN))
}

/// One value set from outside the file: `section.key = raw`, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub section: String,
    pub key: String,
    pub raw: String,
    pub origin: String,
}

impl Override {
    /// A value given by a command-line flag.
    pub fn flag(section: &str, key: &str, raw: impl Into<String>, flag: &str) -> Self {
        Self {
            section: section.to_owned(),
            key: key.to_owned(),
            raw: raw.into(),
            origin: format!("{flag} (flag)"),
        }
    }
}

/// The config sections, used to split `GPULSE_<SECTION>_<KEY>`.
const SECTIONS: [&str; 14] = [
    "agent",
    "gpu",
    "host",
    "store",
    "http",
    "prometheus",
    "otlp",
    "health",
    "log",
    "wrap",
    "score",
    "report",
    "events",
    "kubernetes",
];

/// Prefixes of the variables gpulse reads: its own, and OpenTelemetry's (read by
/// [`super::OtlpSettings::resolve`] and by the OpenTelemetry SDK).
const READ_PREFIXES: [&str; 2] = [ENV_PREFIX, "OTEL_"];

/// The environment as text, read without panicking: `std::env::vars` panics on the first
/// variable that is not UTF-8, whatever its name, which aborted every command (and under
/// `wrap`, kept the workload from starting). A variable that is not UTF-8 is skipped, unless
/// gpulse reads it (`GPULSE_*`, `OTEL_*`): that one is refused, naming it, because skipping it
/// would run on another configuration than the one given. Pass `std::env::vars_os()`.
pub fn environment(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in vars {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => out.push((name, value)),
            (Ok(name), Err(_)) if is_read(name.as_bytes()) => {
                return Err(not_utf8(&name, "its value"));
            }
            (Err(name), _) if is_read(name.as_encoded_bytes()) => {
                return Err(not_utf8(&name.to_string_lossy(), "its name"));
            }
            // Not ours: another program's variable may hold any bytes.
            _ => {}
        }
    }
    Ok(out)
}

fn is_read(name: &[u8]) -> bool {
    READ_PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()))
}

fn not_utf8(name: &str, what: &str) -> ConfigError {
    ConfigError {
        key: None,
        origin: format!("{} (environment)", clip(name, MAX_SHOWN)),
        message: format!(
            "{what} is not valid UTF-8; gpulse reads GPULSE_* and OTEL_* variables as text, \
             so fix or unset it"
        ),
    }
}

/// Picks the config overrides out of environment variables. Variables whose first word is
/// not a section (e.g. `GPULSE_REAL_GPU`) are not config and are left alone.
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let mut out: Vec<Override> = vars
        .into_iter()
        .filter_map(|(name, raw)| {
            let rest = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            let (section, key) = rest.split_once('_')?;
            SECTIONS.contains(&section).then(|| Override {
                section: section.to_owned(),
                key: key.to_owned(),
                raw,
                origin: format!("{name} (environment)"),
            })
        })
        .collect();
    // Environment order is arbitrary; sort so errors are reproducible.
    out.sort_by(|a, b| a.origin.cmp(&b.origin));
    out
}

/// Where each set key's value came from: `file:line:col`, `VAR (environment)` or
/// `--flag (flag)`. Keys are dotted (`http.listen`, `probe[0].url`,
/// `health.xid_overrides.94`); a key set nowhere has the default value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    keys: BTreeMap<String, String>,
}

/// What an unset key's origin reads as.
const DEFAULT_ORIGIN: &str = "built-in default";

impl Origins {
    /// Records that `key` was set at `origin` (a later setting wins).
    pub fn set(&mut self, key: impl Into<String>, origin: impl Into<String>) {
        self.keys.insert(key.into(), origin.into());
    }

    /// Where `key` was set; else where its nearest enclosing table was (`probe[0]` for a
    /// missing `probe[0].inference_model`); else the built-in default.
    pub fn of(&self, key: &str) -> String {
        let mut at = key;
        loop {
            if let Some(origin) = self.keys.get(at) {
                return origin.clone();
            }
            match at.rfind(['.', '[']) {
                Some(i) => at = &at[..i],
                None => return DEFAULT_ORIGIN.to_owned(),
            }
        }
    }

    /// Fills in an error's origin from its key when the check that found it left it empty.
    pub fn place(&self, mut error: ConfigError) -> ConfigError {
        if error.origin.is_empty() {
            error.origin = match &error.key {
                Some(key) => self.of(key),
                None => DEFAULT_ORIGIN.to_owned(),
            };
        }
        error
    }

    /// The `file:line:col` of every key (and array element) of a parsed document.
    fn of_document(text: &str, file: &str) -> Self {
        let mut origins = Self::default();
        // The document already deserialized, so this parse succeeds; if it did not, errors
        // would only lose their line numbers.
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            origins.walk_table(doc.get_ref(), "", text, file);
        }
        origins
    }

    fn walk_table(&mut self, table: &toml::de::DeTable<'_>, prefix: &str, text: &str, file: &str) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.set(path.clone(), file_origin(text, file, key.span().start));
            self.walk_value(value, &path, text, file);
        }
    }

    fn walk_value(
        &mut self,
        value: &toml::Spanned<toml::de::DeValue<'_>>,
        path: &str,
        text: &str,
        file: &str,
    ) {
        match value.get_ref() {
            toml::de::DeValue::Table(table) => self.walk_table(table, path, text, file),
            toml::de::DeValue::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let element = format!("{path}[{index}]");
                    self.set(element.clone(), file_origin(text, file, item.span().start));
                    self.walk_value(item, &element, text, file);
                }
            }
            _ => {}
        }
    }
}

/// `file:line:col` (1-based) of byte `offset` of `text`.
fn file_origin(text: &str, file: &str, offset: usize) -> String {
    let mut start = offset.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
    format!("{file}:{line}:{column}")
}

/// Reads a config file through [`super::files::read_small_file`]: a regular file (or
/// `/dev/null`, no config) of at most 1 MiB, opened without blocking (so `--config /dev/zero`,
/// a FIFO or a terminal is refused instead of waited on), and UTF-8.
fn read_file(path: &Path, origin: &str) -> Result<String, ConfigError> {
    let (bytes, _) =
        super::files::read_small_file(path, super::files::DevNull::Allowed).map_err(|message| {
            ConfigError {
                key: None,
                origin: origin.to_owned(),
                message: format!(
                    "{message}; a config file must be a regular file (or /dev/null for none)"
                ),
            }
        })?;
    String::from_utf8(bytes).map_err(|error| {
        let valid = error.utf8_error().valid_up_to();
        let bytes = error.into_bytes();
        let before = String::from_utf8_lossy(&bytes[..valid]);
        ConfigError {
            key: None,
            origin: file_origin(&before, origin, before.len()),
            message: "not valid UTF-8 (TOML files are UTF-8)".to_owned(),
        }
    })
}

/// A loaded, validated configuration and where each of its values came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub origins: Origins,
}

impl Config {
    /// Parses a TOML document; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| toml_error(text, origin, &error))
    }

    /// Reads and parses a file ([`read_file`]), keeping the `file:line:col` of each key.
    pub fn from_file(path: &Path) -> Result<Loaded, ConfigError> {
        let origin = path.display().to_string();
        let text = read_file(path, &origin)?;
        let config = Self::from_toml(&text, &origin)?;
        let origins = Origins::of_document(&text, &origin);
        // Counts and sizes are bounded before any override is applied: applying one writes
        // the config back to TOML, which fails on an integer over i64::MAX, and that failure
        // was blamed on the override.
        config.check_limits().map_err(|e| origins.place(e))?;
        Ok(Loaded { config, origins })
    }

    /// Loads the file (if any), then applies overrides in order (later wins), then checks the
    /// rules that span keys; every error names its origin.
    pub fn load(file: Option<&Path>, overrides: &[Override]) -> Result<Loaded, ConfigError> {
        let Loaded {
            mut config,
            mut origins,
        } = match file {
            Some(path) => Self::from_file(path)?,
            None => Loaded {
                config: Self::default(),
                origins: Origins::default(),
            },
        };
        for o in overrides {
            config = config.with_override(o)?;
            origins.set(format!("{}.{}", o.section, o.key), o.origin.clone());
        }
        config.validate().map_err(|e| origins.place(e))?;
        Ok(Loaded { config, origins })
    }

    /// Rules that span several keys, checked once everything is applied (a file may set one
    /// key and the environment the other). Errors carry no origin: the loader places them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_limits()?;
        self.http.tls_files()?;
        check_log_level(&self.log.level).map_err(|m| ConfigError::at_key("log.level", m))?;
        self.wrap.check()?;
        self.score.check()?;
        self.report.check()?;
        self.events.check()?;
        self.kubernetes.check()?;
        let mut names = std::collections::BTreeSet::new();
        for (index, probe) in self.probe.iter().enumerate() {
            probe.check(index)?;
            if !names.insert(probe.name.as_str()) {
                return Err(ConfigError::at_key(
                    format!("probe[{index}].name"),
                    format!("duplicate probe name {}", shown(&probe.name)),
                ));
            }
        }
        Ok(())
    }

    /// Applies overrides one at a time, so an error names the variable or flag at fault.
    pub fn with_overrides(self, overrides: &[Override]) -> Result<Self, ConfigError> {
        let mut config = self;
        for o in overrides {
            config = config.with_override(o)?;
        }
        Ok(config)
    }

    fn with_override(self, o: &Override) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError {
            key: Some(format!("{}.{}", o.section, o.key)),
            origin: o.origin.clone(),
            message,
        };
        let mut root = toml::Table::try_from(&self).map_err(|e| fail(e.to_string()))?;
        let section = root
            .get_mut(&o.section)
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| fail(format!("unknown section `{}`", o.section)))?;
        let current = section.get(&o.key).ok_or_else(|| {
            fail(format!(
                "unknown key `{}` in section [{}]",
                o.key, o.section
            ))
        })?;
        let value = typed_value(current, &o.raw).map_err(fail)?;
        section.insert(o.key.clone(), value);
        Config::deserialize(toml::Value::Table(root)).map_err(|e| fail(e.message().to_owned()))
    }
}

/// Converts a raw string from env or a flag into the TOML type the key already has, so that
/// `GPULSE_GPU_PROCESSES=false` is a bool and `GPULSE_AGENT_NODE_NAME=42` stays a string.
fn typed_value(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    use toml::Value;
    let raw_q = shown(raw);
    match current {
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw_q}")),
        },
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("expected an integer (at most {}), got {raw_q}", i64::MAX)),
        Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("expected a number, got {raw_q}")),
        _ => {
            let doc: toml::Table = toml::from_str(&format!("v = {raw}"))
                .map_err(|e| format!("expected a TOML value, got {raw_q}: {}", e.message()))?;
            doc.get("v")
                .cloned()
                .ok_or_else(|| format!("expected a TOML value, got {raw_q}"))
        }
    }
}

/// Turns a toml error into one line naming the key, `file:line:column` and the problem.
fn toml_error(text: &str, origin: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().replace('\n', " ");
    let Some(span) = error.span() else {
        return ConfigError {
            key: None,
            origin: origin.to_owned(),
            message,
        };
    };
    let start = span.start.min(text.len());
    ConfigError {
        key: key_at(text, start),
        origin: file_origin(text, origin, start),
        message,
    }
}

/// Best-effort dotted key for the line holding byte offset `at`: the nearest `[section]`
/// (or `[[array]]`) header above it plus the key left of `=` on that line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = (0..=at).rev().find(|i| text.is_char_boundary(*i))?;
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = text[line_start..line_end].trim();
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))?;
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_owned(),
    })
}

/// The forms `http.listen` and `--listen` accept, for error messages.
const LISTEN_FORMS: &str = "use IP:PORT, HOST:PORT, [IPv6]:PORT, :PORT or PORT \
     (e.g. 127.0.0.1:9412, localhost:9412, [::1]:9412, :9412, 9412)";

/// Parses a listen address: `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (resolved now, IPv4
/// preferred; `localhost` is 127.0.0.1 without a lookup), `:PORT` or a bare `PORT` (every
/// interface, 0.0.0.0).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let text_q = shown(text);
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid listen address {text_q}: bad port; {LISTEN_FORMS}"))
    };
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(SocketAddr::new(any, port(text)?));
    }
    let Some((host, p)) = text.rsplit_once(':') else {
        return Err(format!("invalid listen address {text_q}; {LISTEN_FORMS}"));
    };
    if host.is_empty() {
        return Ok(SocketAddr::new(any, port(p)?));
    }
    let is_hostname = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !is_hostname {
        return Err(format!("invalid listen address {text_q}; {LISTEN_FORMS}"));
    }
    let port = port(p)?;
    let host_q = shown(host);
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_q} in listen address {text_q}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{host_q} in listen address {text_q} resolves to no address"))
}

/// Serde adapter for `http.listen` ([`parse_listen`]).
pub(super) fn deserialize_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// The level words a log filter directive may end with.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `log.level` filter: comma-separated directives, each `LEVEL` or
/// `TARGET[span{field}]=LEVEL` with LEVEL one of trace, debug, info, warn, error, off (any
/// case). `tracing` itself reads an unknown word such as `warning` or `loud` as a target
/// name and then silences every other line, so a directive without a known level is refused
/// (`warning` gets a "did you mean warn" hint).
pub fn check_log_level(filter: &str) -> Result<(), String> {
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(format!(
            "empty log filter; use a level ({}) or TARGET=LEVEL",
            LEVELS.join(", ")
        ));
    }
    let filter_q = shown(filter);
    for directive in directives {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.is_empty() && !level.contains(['}', ']']) => level,
            Some(_) => directive,
            None => directive,
        };
        let level = level.trim().to_ascii_lowercase();
        if LEVELS.contains(&level.as_str()) {
            continue;
        }
        let hint = match level.as_str() {
            "warning" => " (did you mean warn?)",
            "err" => " (did you mean error?)",
            "information" => " (did you mean info?)",
            _ => "",
        };
        return Err(format!(
            "invalid log filter {filter_q}: {} has no level{hint}; each \
             comma-separated part is LEVEL or TARGET=LEVEL, LEVEL one of {}",
            shown(directive),
            LEVELS.join(", ")
        ));
    }
    Ok(())
}
