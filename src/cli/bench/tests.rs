//! Unit tests of `gpulse bench`'s plan: flags, bounds, the probe chosen, the one-line errors.

use super::*;
use crate::config::Origins;

fn args() -> BenchArgs {
    BenchArgs {
        config: None,
        probe: None,
        url: Some("http://127.0.0.1:8080".to_owned()),
        kind: Some(ProbeKind::Llamacpp),
        model: None,
        concurrency: "1,4,16,64".to_owned(),
        step_duration: "10s".to_owned(),
        max_tokens: 64,
        prompt_tokens: None,
        prompt: None,
        ttft_slo: None,
        latency_slo: None,
        max_requests: None,
        timeout: None,
        no_ignore_eos: false,
        json: false,
    }
}

fn plan_of(args: &BenchArgs, config: &Config) -> Result<Plan, String> {
    plan(args, config, &Origins::default()).map_err(|e| e.to_string())
}

#[test]
fn defaults_come_from_the_probe_and_score() {
    let mut config = Config::default();
    config.score.price_per_hour = 2.5;
    config.score.currency = "AKT".to_owned();
    config.score.latency_objective = 0.95;
    let p = plan_of(&args(), &config).unwrap();
    let s = &p.settings;
    assert_eq!(s.concurrency, [1, 4, 16, 64]);
    assert_eq!(s.step_duration, Duration::from_secs(10));
    assert_eq!(
        (s.kind, s.url.as_str()),
        ("llamacpp", "http://127.0.0.1:8080")
    );
    assert_eq!(
        s.slo,
        Slo {
            ttft: Duration::from_secs(1),
            e2e: Duration::from_secs(2)
        }
    );
    assert_eq!(s.timeout, Duration::from_secs(10));
    assert_eq!(s.objective, 0.95);
    assert_eq!(
        s.price,
        Some(Price {
            per_hour: 2.5,
            currency: "AKT".to_owned()
        })
    );
    assert_eq!(s.prompt_words, Some(128));
    assert_eq!(p.prompt.split(' ').count(), 128);
    assert!(s.ignore_eos && s.model.is_empty());
    assert_eq!(
        plan_of(&args(), &Config::default()).unwrap().settings.price,
        None
    );
}

#[test]
fn flags_override_and_are_checked() {
    let mut a = args();
    a.concurrency = "4, 1,4".to_owned();
    a.step_duration = "1500ms".to_owned();
    a.ttft_slo = Some("250ms".to_owned());
    a.latency_slo = Some("3s".to_owned());
    a.timeout = Some("30s".to_owned());
    a.prompt = Some("Say hi.".to_owned());
    a.model = Some("m".to_owned());
    a.no_ignore_eos = true;
    let p = plan_of(&a, &Config::default()).unwrap();
    assert_eq!(p.settings.concurrency, [1, 4]);
    assert_eq!(p.settings.step_duration, Duration::from_millis(1500));
    assert_eq!(p.settings.slo.ttft, Duration::from_millis(250));
    assert_eq!(p.settings.timeout, Duration::from_secs(30));
    assert_eq!(
        (p.prompt.as_str(), p.settings.prompt_words),
        ("Say hi.", None)
    );
    assert_eq!(p.settings.model, "m");
    assert!(!p.settings.ignore_eos);
    // The OpenAI API refuses ignore_eos: never sent there.
    a.kind = Some(ProbeKind::Openai);
    a.no_ignore_eos = false;
    assert!(!plan_of(&a, &Config::default()).unwrap().settings.ignore_eos);
}

/// A change to the flags and the error it must give.
type Case = (&'static str, fn(&mut BenchArgs));

#[test]
fn bounds_are_usage_errors_naming_the_flag() {
    let cases: [Case; 9] = [
        (
            "--concurrency (flag): concurrency 257 is out of range",
            |a| a.concurrency = "1,257".to_owned(),
        ),
        ("--concurrency (flag): concurrency 0", |a| {
            a.concurrency = "0".to_owned()
        }),
        ("--concurrency (flag): \"1,x\" is not a list", |a| {
            a.concurrency = "1,x".to_owned()
        }),
        ("--concurrency (flag): 17 steps", |a| {
            a.concurrency = (1..=17)
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }),
        ("--step-duration (flag): 4 steps of 20m take 1h 20m", |a| {
            a.step_duration = "20m".to_owned()
        }),
        ("--step-duration (flag): invalid duration", |a| {
            a.step_duration = "soon".to_owned()
        }),
        ("--max-tokens (flag): 5000 is out of range", |a| {
            a.max_tokens = 5000
        }),
        ("--timeout (flag): 11m is over the limit", |a| {
            a.timeout = Some("11m".to_owned())
        }),
        ("--prompt-tokens (flag): 0 is out of range", |a| {
            a.prompt_tokens = Some(0)
        }),
    ];
    for (want, change) in cases {
        let mut a = args();
        change(&mut a);
        let error = plan_of(&a, &Config::default()).unwrap_err();
        assert!(error.contains(want), "{want}: {error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
}

#[test]
fn the_probe_is_the_flagged_or_only_one_and_must_stream_text() {
    let mut a = args();
    a.url = None;
    a.kind = None;
    let none = plan_of(&a, &Config::default()).unwrap_err();
    assert!(
        none.contains("`probe`") && none.contains("--url URL --kind KIND"),
        "{none}"
    );
    let mut config = Config::default();
    let mut one = ProbeConfig::new("llm", ProbeKind::Vllm, "http://10.0.0.1:8000/");
    one.ttft_slo = HumanDuration(Duration::from_millis(300));
    one.inference_model = "served".to_owned();
    config.probe.push(one);
    let p = plan_of(&a, &config).unwrap();
    assert_eq!(p.settings.probe, "llm");
    assert_eq!(p.settings.url, "http://10.0.0.1:8000");
    assert_eq!(p.settings.slo.ttft, Duration::from_millis(300));
    assert_eq!(p.settings.model, "served");
    config.probe.push(ProbeConfig::new(
        "mls",
        ProbeKind::Kserve,
        "http://10.0.0.2:8080",
    ));
    let two = plan_of(&a, &config).unwrap_err();
    assert!(
        two.contains("2 probes are configured (llm, mls); choose one with --probe NAME"),
        "{two}"
    );
    a.probe = Some("mls".to_owned());
    let kserve = plan_of(&a, &config).unwrap_err();
    assert!(
        kserve.contains("`probe[1].kind`")
            && kserve.contains("kind kserve has no streaming text request"),
        "{kserve}"
    );
    assert!(
        kserve.contains("vllm, tgi, sglang, ollama, llamacpp, openai"),
        "{kserve}"
    );
    a.probe = Some("nope".to_owned());
    let missing = plan_of(&a, &config).unwrap_err();
    assert!(
        missing.contains("--probe (flag): no [[probe]] named \"nope\" (configured: llm, mls)"),
        "{missing}"
    );
    let mut u = args();
    u.kind = Some(ProbeKind::Tcp);
    assert!(
        plan_of(&u, &Config::default())
            .unwrap_err()
            .contains("--kind (flag): kind tcp")
    );
    u.kind = Some(ProbeKind::Vllm);
    u.url = Some("ftp://x".to_owned());
    let url = plan_of(&u, &Config::default()).unwrap_err();
    assert!(
        url.contains("--url (flag)") && url.contains("http://"),
        "{url}"
    );
}

#[test]
fn the_builtin_prompt_has_the_words_asked_for() {
    assert_eq!(builtin_prompt(3), "the old lighthouse");
    let long = builtin_prompt(1000);
    assert_eq!(long.split(' ').count(), 1000);
}
