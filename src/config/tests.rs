//! Unit tests of the configuration: the example, parsing, origins, overrides, checks.

use super::*;

#[test]
fn example_is_the_default_and_mentions_every_key() {
    let parsed = Config::from_toml(EXAMPLE, "example").unwrap();
    assert_eq!(parsed, Config::default());
    let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
    let default = toml::Table::try_from(Config::default()).unwrap();
    for (section, keys) in &default {
        let keys = keys.as_table().unwrap();
        for key in keys.keys() {
            assert!(
                example.get(section).and_then(|s| s.get(key)).is_some(),
                "{section}.{key} missing from the example"
            );
        }
    }
}

#[test]
fn example_probe_block_lists_every_probe_key_at_its_default() {
    // The commented `[[probe]]` block, uncommented: it must parse, show the defaults, and
    // name every key a probe has.
    let block: String = EXAMPLE
        .lines()
        .skip_while(|l| !l.starts_with("# [[probe]]"))
        .take_while(|l| l.starts_with("# "))
        .map(|l| format!("{}\n", &l[2..]))
        .collect();
    let parsed = Config::from_toml(&block, "example probe").unwrap();
    let mut expected = ProbeConfig::new("llm", ProbeKind::Vllm, "http://127.0.0.1:8000");
    expected.expected_model = Some("meta-llama/Llama-3.1-8B-Instruct".to_owned());
    assert_eq!(parsed.probe, vec![expected]);
    let mut full = ProbeConfig::new("x", ProbeKind::Vllm, "http://x:1");
    full.bearer_token_file = "f".to_owned();
    full.bearer_token_env = "V".to_owned();
    full.expected_model = Some("m".to_owned());
    full.tls_ca_file = "ca".to_owned();
    full.tls_insecure_skip_verify = true;
    full.inference = true;
    full.inference_model = "m".to_owned();
    full.inference_input = "{}".to_owned();
    full.metrics = true;
    full.metrics_url = "u".to_owned();
    let keys = toml::Table::try_from(&full).unwrap();
    for key in keys.keys() {
        assert!(
            block.lines().any(|l| l.starts_with(&format!("{key} ")))
                || block.contains(&format!("or {key} = ")),
            "probe key {key} missing from the example"
        );
    }
}

#[test]
fn unknown_key_names_key_file_and_line() {
    let err =
        Config::from_toml("[gpu]\ninterval = \"1s\"\nintervall = \"2s\"\n", "a.toml").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("gpu.intervall"));
    assert_eq!(err.origin, "a.toml:3:1");
    assert!(err.message.contains("unknown field"), "{}", err.message);
}

#[test]
fn bad_duration_names_key_and_line() {
    let err = Config::from_toml("[host]\n\n interval = \"soon\"\n", "b.toml").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("host.interval"));
    assert!(err.origin.starts_with("b.toml:3:"), "{}", err.origin);
    assert!(err.message.contains("invalid duration"), "{}", err.message);
    let zero = Config::from_toml("[gpu]\ninterval = \"0s\"\n", "c.toml").unwrap_err();
    assert!(
        zero.message.contains("greater than zero"),
        "{}",
        zero.message
    );
}

#[test]
fn bad_listen_address_is_rejected() {
    let err = Config::from_toml("[http]\nlisten = \"nowhere\"\n", "d.toml").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("http.listen"));
}

#[test]
fn the_dcgm_host_label_is_one_of_dcgm_exporters_two_spellings() {
    assert_eq!(
        Config::default().prometheus.dcgm_hostname_label,
        DcgmHostnameLabel::Capitalized
    );
    for (raw, want) in [
        ("Hostname", DcgmHostnameLabel::Capitalized),
        ("hostname", DcgmHostnameLabel::Lowercase),
    ] {
        let c = Config::from_toml(
            &format!("[prometheus]\ndcgm_hostname_label = \"{raw}\"\n"),
            "h.toml",
        )
        .unwrap();
        assert_eq!(c.prometheus.dcgm_hostname_label, want);
        assert_eq!(want.as_str(), raw);
        let env = env_overrides(vec![(
            "GPULSE_PROMETHEUS_DCGM_HOSTNAME_LABEL".to_owned(),
            raw.to_owned(),
        )]);
        let c = Config::default().with_overrides(&env).unwrap();
        assert_eq!(c.prometheus.dcgm_hostname_label, want);
    }
    for bad in ["HOSTNAME", "host", "node", ""] {
        let err = Config::from_toml(
            &format!("[prometheus]\ndcgm_hostname_label = \"{bad}\"\n"),
            "h.toml",
        )
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("prometheus.dcgm_hostname_label"));
        assert_eq!(err.origin, "h.toml:2:23");
        assert!(err.message.contains("`Hostname`"), "{err}");
        let env = env_overrides(vec![(
            "GPULSE_PROMETHEUS_DCGM_HOSTNAME_LABEL".to_owned(),
            bad.to_owned(),
        )]);
        let err = Config::default().with_overrides(&env).unwrap_err();
        assert_eq!(
            err.origin,
            "GPULSE_PROMETHEUS_DCGM_HOSTNAME_LABEL (environment)"
        );
    }
}

#[test]
fn env_overrides_are_typed_and_attributed() {
    let vars = vec![
        ("GPULSE_GPU_INTERVAL".to_owned(), "500ms".to_owned()),
        ("GPULSE_GPU_PROCESSES".to_owned(), "false".to_owned()),
        ("GPULSE_AGENT_NODE_NAME".to_owned(), "42".to_owned()),
        ("GPULSE_REAL_GPU".to_owned(), "1".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
    ];
    let overrides = env_overrides(vars);
    assert_eq!(overrides.len(), 3);
    let c = Config::default().with_overrides(&overrides).unwrap();
    assert_eq!(c.gpu.interval, HumanDuration(Duration::from_millis(500)));
    assert!(!c.gpu.processes);
    assert_eq!(c.agent.node_name, "42");
}

#[test]
fn env_errors_name_the_variable() {
    let bad = env_overrides(vec![("GPULSE_GPU_INTERVAL".to_owned(), "x".to_owned())]);
    let err = Config::default().with_overrides(&bad).unwrap_err();
    assert_eq!(err.origin, "GPULSE_GPU_INTERVAL (environment)");
    assert_eq!(err.key.as_deref(), Some("gpu.interval"));
    let unknown = env_overrides(vec![("GPULSE_GPU_SPEED".to_owned(), "1".to_owned())]);
    let err = Config::default().with_overrides(&unknown).unwrap_err();
    assert!(
        err.message.contains("unknown key `speed`"),
        "{}",
        err.message
    );
}

#[test]
fn the_environment_is_read_without_panicking_on_bytes_that_are_not_utf8() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let bytes = |b: &[u8]| OsString::from_vec(b.to_vec());
    // Another program's variable, name or value, is skipped.
    let vars = environment(vec![
        (bytes(b"X"), bytes(b"caf\xe9")),
        (bytes(b"\xff"), bytes(b"1")),
        (bytes(b"GPULSE_GPU_INTERVAL"), bytes(b"2s")),
    ])
    .unwrap();
    assert_eq!(
        vars,
        vec![("GPULSE_GPU_INTERVAL".to_owned(), "2s".to_owned())]
    );
    // One that gpulse reads is refused, naming it.
    for (name, value) in [
        (&b"GPULSE_LOG_LEVEL"[..], &b"\xff"[..]),
        (b"OTEL_EXPORTER_OTLP_ENDPOINT", b"http://\xe9"),
        (b"GPULSE_GPU_\xff", b"1"),
    ] {
        let err = environment(vec![(bytes(name), bytes(value))]).unwrap_err();
        let shown = String::from_utf8_lossy(name).into_owned();
        assert_eq!(err.origin, format!("{shown} (environment)"));
        assert!(err.message.contains("not valid UTF-8"), "{err}");
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
    }
}

#[test]
fn flags_win_over_env() {
    let overrides = vec![
        env_overrides(vec![(
            "GPULSE_HTTP_LISTEN".to_owned(),
            "127.0.0.1:1".to_owned(),
        )])
        .remove(0),
        Override::flag("http", "listen", "127.0.0.1:2", "--listen"),
    ];
    let c = Config::default().with_overrides(&overrides).unwrap();
    assert_eq!(c.http.listen.port(), 2);
}

#[test]
fn display_is_one_line() {
    let err = Config::from_toml("[gpu]\nmig = 3\n", "e.toml").unwrap_err();
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.starts_with("config key `gpu.mig` at e.toml:2:"),
        "{line}"
    );
}

#[test]
fn tls_needs_both_files() {
    let mut c = Config::default();
    assert_eq!(c.http.tls_files().unwrap(), None);
    c.http.tls_cert_file = "c.pem".to_owned();
    let err = c.validate().unwrap_err();
    // The key that is set is named, so the error points where it was set.
    assert_eq!(err.key.as_deref(), Some("http.tls_cert_file"));
    assert!(
        err.message.contains("`http.tls_key_file` is empty"),
        "{err}"
    );
    c.http.tls_key_file = "k.pem".to_owned();
    assert_eq!(
        c.http.tls_files().unwrap(),
        Some((PathBuf::from("c.pem"), PathBuf::from("k.pem")))
    );
    c.http.tls_cert_file.clear();
    let err = c.validate().unwrap_err();
    assert_eq!(err.key.as_deref(), Some("http.tls_key_file"));
}

#[test]
fn probes_parse_with_defaults_and_are_validated() {
    let c = Config::from_toml(
        "[[probe]]\nname = \"a\"\nkind = \"vllm\"\nurl = \"http://127.0.0.1:8000\"\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(c.probe.len(), 1);
    assert_eq!(c.probe[0].interval, HumanDuration::secs(10));
    assert_eq!(c.probe[0].timeout, HumanDuration::secs(2));
    assert_eq!(c.probe[0].max_body_bytes, 1 << 20);
    c.validate().unwrap();
    // Overrides round-trip a config with probes.
    let o = Override::flag("http", "listen", "127.0.0.1:2", "--listen");
    assert_eq!(c.clone().with_overrides(&[o]).unwrap().probe, c.probe);

    let err = Config::from_toml(
        "[[probe]]\nname = \"a\"\nkind = \"nope\"\nurl = \"http://x:1\"\n",
        "p.toml",
    )
    .unwrap_err();
    assert!(err.message.contains("unknown variant"), "{err}");

    let mut dup = c.clone();
    dup.probe.push(c.probe[0].clone());
    let err = dup.validate().unwrap_err();
    assert_eq!(err.key.as_deref(), Some("probe[1].name"));

    let mut bad = c.clone();
    bad.probe[0].url = "ftp://x".to_owned();
    assert_eq!(
        bad.validate().unwrap_err().key.as_deref(),
        Some("probe[0].url")
    );
    bad.probe[0] = ProbeConfig::new("t", ProbeKind::Tcp, "tcp://db:5432");
    bad.validate().unwrap();
    bad.probe[0].url = "db".to_owned();
    assert_eq!(
        bad.validate().unwrap_err().key.as_deref(),
        Some("probe[0].url")
    );
}

proptest::proptest! {
    #[test]
    fn durations_round_trip(ms in 1u64..10_000_000) {
        let d = HumanDuration(Duration::from_millis(ms));
        proptest::prop_assert_eq!(HumanDuration::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn arbitrary_documents_never_panic(doc in "\\PC{0,200}") {
        let _ = Config::from_toml(&doc, "fuzz.toml");
    }
}

#[test]
fn errors_after_parsing_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.toml");
    let file = path.display().to_string();
    let cases = [
        (
            "[[probe]]\nname = \"a\"\nkind = \"vllm\"\nurl = \"ftp://x\"\n",
            "probe[0].url",
            "4:1",
        ),
        (
            "[wrap]\n  state_max_bytes = 1\n",
            "wrap.state_max_bytes",
            "2:3",
        ),
        ("[log]\nlevel = \"warning\"\n", "log.level", "2:1"),
        (
            "[http]\ntls_cert_file = \"c.pem\"\n",
            "http.tls_cert_file",
            "2:1",
        ),
        // A missing key points at its table.
        (
            "[[probe]]\nname = \"a\"\nkind = \"kserve\"\nurl = \"http://x:1\"\ninference = true\n",
            "probe[0].inference_model",
            "1:",
        ),
        (
            "[[probe]]\nname = \"a\"\nkind = \"tcp\"\nurl = \"x:1\"\n[[probe]]\nname = \"a\"\nkind = \"tcp\"\nurl = \"x:1\"\n",
            "probe[1].name",
            "6:1",
        ),
    ];
    for (text, key, at) in cases {
        std::fs::write(&path, text).unwrap();
        let err = Config::load(Some(&path), &[]).unwrap_err();
        assert_eq!(err.key.as_deref(), Some(key), "{text}");
        assert!(
            err.origin.starts_with(&format!("{file}:{at}")),
            "{key}: {} (want {file}:{at})",
            err.origin
        );
    }
}

#[test]
fn origins_follow_the_last_setting_and_place_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.toml");
    std::fs::write(
        &path,
        "[health]\nxid_overrides = { \"94\" = \"bad\" }\n\n[log]\nlevel = \"debug\"\n",
    )
    .unwrap();
    let file = path.display().to_string();
    let flag = Override::flag("log", "level", "info", "--log-level");
    let loaded = Config::load(Some(&path), &[flag]).unwrap();
    assert_eq!(loaded.origins.of("log.level"), "--log-level (flag)");
    assert_eq!(
        loaded.origins.of("health.xid_overrides"),
        format!("{file}:2:1")
    );
    assert_eq!(loaded.origins.of("gpu.interval"), "built-in default");
    let placed = loaded
        .origins
        .place(ConfigError::at_key("health.xid_overrides", "bad"));
    assert_eq!(
        placed.to_string(),
        format!("config key `health.xid_overrides` at {file}:2:1: bad")
    );
}

#[test]
fn listen_accepts_hosts_ports_and_ipv6() {
    let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
    for (text, want) in [
        ("127.0.0.1:9412", SocketAddr::from(([127, 0, 0, 1], 9412))),
        ("localhost:9412", SocketAddr::from(([127, 0, 0, 1], 9412))),
        (":9412", any(9412)),
        ("9412", any(9412)),
        ("0.0.0.0:0", any(0)),
        ("[::1]:9412", "[::1]:9412".parse().unwrap()),
    ] {
        assert_eq!(parse_listen(text), Ok(want), "{text}");
    }
    for bad in [
        "nowhere",
        "::1",
        "localhost:http",
        ":",
        "1.2.3.4:99999",
        "a b:1",
        "",
    ] {
        let err = parse_listen(bad).unwrap_err();
        assert!(err.contains(":PORT or PORT"), "{bad}: {err}");
    }
    // The file, the environment and flags take the same forms.
    let c = Config::from_toml("[http]\nlisten = \":9500\"\n", "l.toml").unwrap();
    assert_eq!(c.http.listen, any(9500));
    let o = Override::flag("http", "listen", "localhost:9413", "--listen");
    let c = Config::default().with_overrides(&[o]).unwrap();
    assert_eq!(c.http.listen, SocketAddr::from(([127, 0, 0, 1], 9413)));
    let o = env_overrides(vec![(
        "GPULSE_HTTP_LISTEN".to_owned(),
        "nowhere".to_owned(),
    )]);
    let err = Config::default().with_overrides(&o).unwrap_err();
    assert_eq!(err.origin, "GPULSE_HTTP_LISTEN (environment)");
    assert!(err.message.contains("localhost:9412"), "{err}");
}

#[test]
fn log_levels_are_level_words_or_target_directives() {
    for good in [
        "info",
        "WARN",
        "off",
        "gpulse=debug,info",
        "gpulse::collect=trace, warn",
        "hyper[conn{peer=x}]=debug",
    ] {
        assert_eq!(check_log_level(good), Ok(()), "{good}");
    }
    for bad in [
        "warning",
        "loud",
        "",
        "gpulse",
        "gpulse=loud",
        "info,verbose",
    ] {
        assert!(check_log_level(bad).is_err(), "{bad}");
    }
    assert!(
        check_log_level("warning")
            .unwrap_err()
            .contains("did you mean warn"),
    );
}

#[test]
fn the_kinds_table_spells_each_kind_as_the_config_does() {
    let mut names = std::collections::BTreeSet::new();
    for kind in ProbeKind::ALL {
        let parsed: ProbeKind = toml::Value::String(kind.as_str().to_owned())
            .try_into()
            .unwrap();
        assert_eq!(parsed, kind);
        assert!(names.insert(kind.as_str()), "{} twice", kind.as_str());
        let caps = kind.caps();
        // A kind with a synthetic request knows its models or takes them from config.
        if caps.synthetic == Synthetic::V2Infer {
            assert_eq!(caps.models, Some(ModelList::V2), "{}", caps.name);
        }
    }
    assert_eq!(ProbeKind::names().split(", ").count(), ProbeKind::ALL.len());
}

#[test]
fn echoed_values_and_error_lines_are_bounded() {
    assert_eq!(clip("héllo", 2), "hé…");
    assert_eq!(clip("abc", 3), "abc");
    assert_eq!(
        shown(&"x".repeat(200)),
        format!("\"{}…\"", "x".repeat(MAX_SHOWN))
    );
    let err = ConfigError {
        key: Some("k".repeat(1000)),
        origin: "o\n".repeat(1000),
        message: format!("{}; the hint", "m".repeat(100_000)),
    };
    let line = err.to_string();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.len() < 1200, "{}", line.len());
    assert!(line.ends_with("; the hint"), "{line}");
}

#[test]
fn durations_and_counts_are_bounded_at_load() {
    assert!(HumanDuration::parse("365d").is_ok());
    let err = HumanDuration::parse("366d").unwrap_err();
    assert!(err.contains("longer than 365 days"), "{err}");
    let err =
        Config::from_toml("[http]\nrequest_timeout = \"300000000000y\"\n", "f.toml").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("http.request_timeout"));
    assert!(err.origin.starts_with("f.toml:2:"), "{err}");
    let mut config = Config::default();
    config.http.max_concurrent_requests = usize::MAX;
    let err = config.validate().unwrap_err();
    assert_eq!(err.key.as_deref(), Some("http.max_concurrent_requests"));
}
