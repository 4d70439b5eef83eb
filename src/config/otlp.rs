//! The OTLP push settings: `[otlp]` over the standard `OTEL_*` variables over
//! OpenTelemetry's defaults ([`OtlpSettings::resolve`], a pure function). Errors name the
//! variable at fault; an `[otlp]` key's error has no origin yet, the loader places it.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_sdk::metrics::Temporality;

use super::{ConfigError, HumanDuration, OtlpConfig, shown};

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Fully resolved push settings. `Debug` shows header names only: their values are secrets.
#[derive(Clone, PartialEq)]
pub struct OtlpSettings {
    /// Exactly what the exporter is given (for HTTP, including `/v1/metrics`).
    pub endpoint: String,
    /// Where the event log's OTLP log records go (for HTTP, including `/v1/logs`): the same
    /// collector, unless `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` names another.
    pub logs_endpoint: String,
    pub protocol: OtlpProtocol,
    pub interval: Duration,
    pub timeout: Duration,
    pub headers: BTreeMap<String, String>,
    pub gzip: bool,
    pub temporality: Temporality,
    /// PEM CA file trusted besides the built-in roots; empty: none.
    pub ca_file: String,
    /// Where `ca_file` was set (`VAR (environment)`); empty when it came from `[otlp]`, whose
    /// origin the loader places.
    pub ca_file_origin: String,
}

impl std::fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSettings")
            .field("endpoint", &self.endpoint)
            .field("logs_endpoint", &self.logs_endpoint)
            .field("protocol", &self.protocol)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("gzip", &self.gzip)
            .field("temporality", &self.temporality)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtlpSettings {
    /// Resolves `[otlp]` over the `OTEL_*` variables (read through `env`). `Ok(None)` when no
    /// endpoint is configured anywhere: push is off. Errors name the key or variable at fault.
    pub fn resolve(
        config: &OtlpConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let fail = |key: &str, origin: String, message: String| ConfigError {
            key: Some(key.to_owned()),
            origin,
            message,
        };
        // An `[otlp]` key's origin (file line, GPULSE_OTLP_* variable) is known to the
        // loader, which fills it in ([`super::Origins::place`]).
        let from_config = |_key: &str| String::new();

        let protocol_text = non_empty(&config.protocol)
            .map(|p| (p, from_config("protocol")))
            .or_else(|| {
                [
                    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                ]
                .iter()
                .find_map(|v| env(v).map(|p| (p, format!("{v} (environment)"))))
            });
        let protocol = match &protocol_text {
            None => OtlpProtocol::HttpProtobuf,
            Some((p, origin)) => match p.trim() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                other => {
                    return Err(fail(
                        "otlp.protocol",
                        origin.clone(),
                        format!(
                            "unsupported protocol {}; use \"grpc\" or \"http/protobuf\"",
                            shown(other)
                        ),
                    ));
                }
            },
        };

        // A signal-specific endpoint is used as is; a base endpoint gets the signal path.
        let endpoint = if let Some(e) = non_empty(&config.endpoint) {
            Some((e, true, from_config("endpoint")))
        } else if let Some(e) = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            let origin = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (environment)".to_owned();
            Some((e, false, origin))
        } else {
            env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| {
                (
                    e,
                    true,
                    "OTEL_EXPORTER_OTLP_ENDPOINT (environment)".to_owned(),
                )
            })
        };
        let Some((endpoint, is_base, endpoint_origin)) = endpoint else {
            return Ok(None);
        };
        let endpoint = endpoint.trim().to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(fail(
                "otlp.endpoint",
                endpoint_origin,
                format!(
                    "endpoint {} must start with http:// or https://",
                    shown(&endpoint)
                ),
            ));
        }
        let endpoint = match protocol {
            OtlpProtocol::HttpProtobuf if is_base && !endpoint.ends_with("/v1/metrics") => {
                format!("{}/v1/metrics", endpoint.trim_end_matches('/'))
            }
            _ => endpoint,
        };
        let logs_endpoint = logs_endpoint(config, &env, protocol, &endpoint)?;

        let duration = |key: &str, configured: &str, vars: [&str; 1], default: Duration| {
            if let Some(text) = non_empty(configured) {
                return HumanDuration::parse(&text)
                    .map(|d| d.0)
                    .map_err(|m| fail(key, from_config(&key[5..]), m));
            }
            match vars.iter().find_map(|v| env(v).map(|t| (*v, t))) {
                Some((var, text)) => text
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_millis)
                    // The same bounds as a duration written in `[otlp]`.
                    .filter(|d| !d.is_zero() && *d <= HumanDuration::MAX.0)
                    .ok_or_else(|| {
                        fail(
                            key,
                            format!("{var} (environment)"),
                            format!(
                                "expected a positive number of milliseconds up to {}, got {}",
                                HumanDuration::MAX.0.as_millis(),
                                shown(&text)
                            ),
                        )
                    }),
                None => Ok(default),
            }
        };
        let interval = duration(
            "otlp.interval",
            &config.interval,
            ["OTEL_METRIC_EXPORT_INTERVAL"],
            DEFAULT_INTERVAL,
        )?;
        let timeout = duration(
            "otlp.timeout",
            &config.timeout,
            ["OTEL_EXPORTER_OTLP_TIMEOUT"],
            DEFAULT_TIMEOUT,
        )?;

        let mut headers = BTreeMap::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        ] {
            if let Some(text) = env(var) {
                for (n, pair) in text.split(',').filter(|p| !p.trim().is_empty()).enumerate() {
                    // The text is a secret (an API key, Basic credentials): the error says
                    // which pair is wrong, never what it holds.
                    let Some((k, v)) = pair.split_once('=') else {
                        return Err(fail(
                            "otlp.headers",
                            format!("{var} (environment)"),
                            format!(
                                "expected key=value pairs separated by commas; pair {} has no `=`",
                                n + 1
                            ),
                        ));
                    };
                    headers.insert(percent_decode(k.trim()), percent_decode(v.trim()));
                }
            }
        }
        headers.extend(config.headers.clone());

        let compression = non_empty(&config.compression)
            .map(|c| (c, from_config("compression")))
            .or_else(|| {
                [
                    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
                    "OTEL_EXPORTER_OTLP_COMPRESSION",
                ]
                .iter()
                .find_map(|v| env(v).map(|c| (c, format!("{v} (environment)"))))
            });
        let gzip = match compression {
            None => false,
            Some((c, origin)) => match c.trim() {
                "gzip" => true,
                "none" => false,
                other => {
                    return Err(fail(
                        "otlp.compression",
                        origin,
                        format!(
                            "unsupported compression {}; use \"gzip\" or \"none\"",
                            shown(other)
                        ),
                    ));
                }
            },
        };

        let temporality = non_empty(&config.temporality)
            .map(|t| (t, from_config("temporality")))
            .or_else(|| {
                env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE").map(|t| {
                    (
                        t,
                        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE (environment)"
                            .to_owned(),
                    )
                })
            });
        let temporality = match temporality {
            None => Temporality::Cumulative,
            Some((t, origin)) => match t.trim().to_ascii_lowercase().as_str() {
                "cumulative" => Temporality::Cumulative,
                "delta" => Temporality::Delta,
                "lowmemory" => Temporality::LowMemory,
                other => {
                    return Err(fail(
                        "otlp.temporality",
                        origin,
                        format!(
                            "unsupported temporality {}; use \"cumulative\" or \"delta\"",
                            shown(other)
                        ),
                    ));
                }
            },
        };

        let (ca_file, ca_file_origin) = match non_empty(&config.ca_file) {
            Some(file) => (file, from_config("ca_file")),
            None => [
                "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ]
            .iter()
            .find_map(|v| env(v).map(|f| (f.trim().to_owned(), format!("{v} (environment)"))))
            .unwrap_or_default(),
        };

        Ok(Some(Self {
            endpoint,
            logs_endpoint,
            protocol,
            interval,
            timeout,
            headers,
            gzip,
            temporality,
            ca_file,
            ca_file_origin,
        }))
    }
}

/// The logs endpoint: `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` as is when `[otlp] endpoint` is
/// empty; `OTEL_EXPORTER_OTLP_ENDPOINT` (with `/v1/logs` for HTTP) when the metrics have a
/// signal-specific endpoint; else the metrics endpoint with `/v1/logs` for `/v1/metrics`
/// (HTTP) or unchanged (gRPC, where the signal is in the method, not the path).
fn logs_endpoint(
    config: &OtlpConfig,
    env: &impl Fn(&str) -> Option<String>,
    protocol: OtlpProtocol,
    metrics: &str,
) -> Result<String, ConfigError> {
    const VAR: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
    if non_empty(&config.endpoint).is_none()
        && let Some(e) = env(VAR)
    {
        let e = e.trim().to_owned();
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(ConfigError {
                key: Some("otlp.endpoint".to_owned()),
                origin: format!("{VAR} (environment)"),
                message: format!("endpoint {} must start with http:// or https://", shown(&e)),
            });
        }
        return Ok(e);
    }
    // The base endpoint, when the metrics have their own: the logs take the base.
    if non_empty(&config.endpoint).is_none()
        && env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some()
        && let Some(base) = env("OTEL_EXPORTER_OTLP_ENDPOINT")
    {
        let base = base.trim();
        if base.starts_with("http://") || base.starts_with("https://") {
            return Ok(match protocol {
                OtlpProtocol::HttpProtobuf => format!("{}/v1/logs", base.trim_end_matches('/')),
                OtlpProtocol::Grpc => base.to_owned(),
            });
        }
    }
    Ok(match protocol {
        OtlpProtocol::HttpProtobuf => match metrics.strip_suffix("/v1/metrics") {
            Some(base) => format!("{base}/v1/logs"),
            None => metrics.to_owned(),
        },
        OtlpProtocol::Grpc => metrics.to_owned(),
    })
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Decodes `%XX` escapes, as the OTLP spec allows in `OTEL_EXPORTER_OTLP_HEADERS`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(
        config: &OtlpConfig,
        vars: &[(&str, &str)],
    ) -> Result<Option<OtlpSettings>, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtlpSettings::resolve(config, |k| vars.get(k).cloned())
    }

    #[test]
    fn off_without_any_endpoint() {
        assert_eq!(resolve(&OtlpConfig::default(), &[]).unwrap(), None);
        assert_eq!(
            resolve(
                &OtlpConfig::default(),
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn the_standard_endpoint_variable_alone_turns_push_on_with_otel_defaults() {
        let s = resolve(
            &OtlpConfig::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/metrics");
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!((s.interval, s.timeout), (DEFAULT_INTERVAL, DEFAULT_TIMEOUT));
        assert_eq!(s.temporality, Temporality::Cumulative);
        assert!(!s.gzip && s.headers.is_empty());
    }

    #[test]
    fn logs_go_to_the_same_collector_unless_their_own_variable_says_otherwise() {
        let logs = |config: &OtlpConfig, vars: &[(&str, &str)]| {
            resolve(config, vars).unwrap().unwrap().logs_endpoint
        };
        let base = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")];
        assert_eq!(logs(&OtlpConfig::default(), &base), "http://c:4318/v1/logs");
        let grpc = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ];
        assert_eq!(logs(&OtlpConfig::default(), &grpc), "http://c:4317");
        let own = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:4318/logs"),
        ];
        assert_eq!(logs(&OtlpConfig::default(), &own), "http://l:4318/logs");
        let configured = OtlpConfig {
            endpoint: "http://k:4318".to_owned(),
            ..OtlpConfig::default()
        };
        assert_eq!(
            logs(&configured, &own),
            "http://k:4318/v1/logs",
            "[otlp] wins"
        );
        let split = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://m:9090/otlp/v1/metrics",
            ),
        ];
        assert_eq!(
            logs(&OtlpConfig::default(), &split),
            "http://c:4318/v1/logs"
        );
        let metrics_only = [(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://m:4318/v1/metrics",
        )];
        assert_eq!(
            logs(&OtlpConfig::default(), &metrics_only),
            "http://m:4318/v1/logs"
        );
        let bad = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "l:4318"),
        ];
        let e = resolve(&OtlpConfig::default(), &bad).unwrap_err();
        assert!(
            e.origin.contains("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
            "{e:?}"
        );
    }

    #[test]
    fn headers_from_the_environment_carry_basic_auth_and_are_never_shown() {
        // Grafana Cloud's recipe: `Authorization=Basic%20<base64(instance:token)>`.
        let vars = [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://otlp.example.net/otlp",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Basic%20czNjcmV0,x-a=1",
            ),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-a=2"),
        ];
        let s = resolve(&OtlpConfig::default(), &vars).unwrap().unwrap();
        assert_eq!(s.endpoint, "https://otlp.example.net/otlp/v1/metrics");
        assert_eq!(s.headers["Authorization"], "Basic czNjcmV0");
        assert_eq!(s.headers["x-a"], "2", "the metrics-specific variable wins");
        assert!(!format!("{s:?}").contains("czNjcmV0"), "{s:?}");
        // A malformed pair is refused without echoing it.
        let bad = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-a=1,Authorization Basic czNjcmV0",
            ),
        ];
        let err = resolve(&OtlpConfig::default(), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pair 2") && !err.contains("czNjcmV0"), "{err}");
    }

    #[test]
    fn environment_fills_what_the_file_leaves_empty() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "2500"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret,x-tenant=t1"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
        ];
        let s = resolve(&OtlpConfig::default(), &vars).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://base:4317", "gRPC endpoints get no path");
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.interval, Duration::from_millis(2500));
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert_eq!(s.headers["api-key"], "s=cret");
        assert_eq!(s.headers["x-tenant"], "t1");
        assert!(s.gzip);
        assert_eq!(s.temporality, Temporality::Delta);

        let mut config = OtlpConfig {
            endpoint: "http://file:4318".to_owned(),
            protocol: "http/protobuf".to_owned(),
            interval: "1s".to_owned(),
            compression: "none".to_owned(),
            temporality: "cumulative".to_owned(),
            ..OtlpConfig::default()
        };
        config
            .headers
            .insert("x-tenant".to_owned(), "from-file".to_owned());
        let s = resolve(&config, &vars).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://file:4318/v1/metrics");
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.headers["x-tenant"], "from-file");
        assert!(!s.gzip);
        assert_eq!(s.temporality, Temporality::Cumulative);
    }

    #[test]
    fn a_metrics_specific_endpoint_is_used_verbatim() {
        let s = resolve(
            &OtlpConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "http://m:9999/custom",
                ),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://m:9999/custom");
    }

    #[test]
    fn bad_values_name_their_origin() {
        let err = resolve(
            &OtlpConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.origin, "OTEL_EXPORTER_OTLP_PROTOCOL (environment)");
        assert!(err.message.contains("http/json"));
        let config = OtlpConfig {
            endpoint: "collector:4317".to_owned(),
            ..OtlpConfig::default()
        };
        let err = resolve(&config, &[]).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("otlp.endpoint"));
        assert_eq!(err.origin, "", "the loader places an [otlp] key");
        let err = resolve(
            &OtlpConfig::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
        )
        .unwrap_err();
        assert_eq!(err.origin, "OTEL_EXPORTER_OTLP_ENDPOINT (environment)");
        let config = OtlpConfig {
            endpoint: "http://c".to_owned(),
            interval: "0s".to_owned(),
            ..OtlpConfig::default()
        };
        assert_eq!(
            resolve(&config, &[]).unwrap_err().key.as_deref(),
            Some("otlp.interval")
        );
        let err = resolve(
            &OtlpConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.origin, "OTEL_METRIC_EXPORT_INTERVAL (environment)");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Cc"), "a b,c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
