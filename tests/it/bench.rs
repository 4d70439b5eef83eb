//! `gpulse bench` end to end, the real binary: against `gpulse demo`'s simulated server (steps
//! 1 and 2 of 1 s), against a server that fails every request after the warm-up (early stop,
//! exit 1), a refused port, a SIGINT mid-step, usage errors (exit 2, one line), and against
//! the real llama-server (`GPULSE_LLAMA_SERVER`; steps 1, 2, 4 of 3 s, figures printed).

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::agent::free_port;
use crate::real_servers::LlamaServer;

/// `gpulse bench ARGS` with only `env` among the `GPULSE_*` variables.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpulse"));
    cmd.arg("bench").args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GPULSE_") {
            cmd.env_remove(name);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs it on a blocking thread, so an in-process server keeps serving meanwhile.
async fn bench(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command(args, env);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// What holds for every completed report: ordered percentiles, positive throughput, a best
/// step that met the objective (or none, with a reason), and the cost at the best step.
fn check_report(r: &Value, price: Option<f64>) {
    assert_eq!(r["schema"], "gpulse.bench/v1", "{r}");
    let steps = r["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "{r}");
    for s in steps {
        assert!(s["requests_ok"].as_u64().unwrap() > 0, "{s}");
        assert!(f(&s["output_tokens_per_second"]) > 0.0, "{s}");
        assert!(f(&s["requests_per_second"]) > 0.0, "{s}");
        for series in ["ttft_seconds", "inter_token_seconds", "e2e_seconds"] {
            let (p50, p99) = (f(&s[series]["p50"]), f(&s[series]["p99"]));
            assert!(p50 > 0.0 && p50 <= p99, "{series}: {s}");
        }
        assert!(
            f(&s["ttft_seconds"]["p50"]) <= f(&s["e2e_seconds"]["p50"]),
            "{s}"
        );
        let share = f(&s["slo_attainment"]);
        assert!((0.0..=1.0).contains(&share), "{s}");
    }
    let reason = r["best_concurrency_reason"].as_str().unwrap();
    assert!(!reason.is_empty());
    match r["best_concurrency"].as_u64() {
        Some(best) => {
            let step = steps
                .iter()
                .find(|s| s["concurrency"].as_u64() == Some(best))
                .unwrap_or_else(|| panic!("best {best} is not a step: {r}"));
            assert_eq!(step["meets_objective"], true, "{r}");
            assert!(
                steps
                    .iter()
                    .filter(|s| s["meets_objective"] == true)
                    .all(|s| s["concurrency"].as_u64().unwrap() <= best),
                "{r}"
            );
            match price {
                Some(price) => {
                    let want = price / (f(&step["output_tokens_per_second"]) * 3600.0) * 1e6;
                    let cost = f(&r["cost_per_million_output_tokens"]);
                    assert!((cost - want).abs() <= want * 1e-9, "{cost} vs {want}: {r}");
                    assert_eq!(f(&r["price_per_hour"]), price);
                }
                None => assert!(r["cost_per_million_output_tokens"].is_null(), "{r}"),
            }
        }
        None => {
            assert!(reason.starts_with("no step"), "{r}");
            assert!(r["cost_per_million_output_tokens"].is_null(), "{r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_the_demo_server() {
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let addr = gpulse::demo::server::start(stop).await.unwrap();
    let url = format!("http://{addr}");
    let started = Instant::now();
    let out = bench(
        &[
            "--url",
            &url,
            "--kind",
            "vllm",
            "--concurrency",
            "2,1",
            "--step-duration",
            "1s",
            "--max-tokens",
            "8",
            "--prompt-tokens",
            "16",
            "--json",
        ],
        &[
            ("GPULSE_SCORE_PRICE_PER_HOUR", "2.5"),
            ("GPULSE_SCORE_CURRENCY", "AKT"),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&out);
    check_report(&r, Some(2.5));
    assert_eq!(
        r["target"]["model"],
        gpulse::demo::server::DEMO_MODEL,
        "{r}"
    );
    assert_eq!(r["target"]["probe"], "bench");
    assert_eq!(r["settings"]["concurrency"], serde_json::json!([1, 2]));
    assert_eq!(r["settings"]["ignore_eos"], true);
    assert_eq!(r["settings"]["prompt_tokens_reported"], 2, "{r}");
    assert_eq!(r["currency"], "AKT");
    // The demo's first token takes 10–90 ms and each next one 5 ms: every request meets the
    // default SLOs (1 s, 2 s), so the highest step is the best.
    assert_eq!(r["best_concurrency"], 2, "{r}");
    assert!(r["stopped"].is_null() && r["interrupted"] == false, "{r}");
    for s in r["steps"].as_array().unwrap() {
        let ok = s["requests_ok"].as_u64().unwrap();
        assert_eq!(s["requests_failed"], 0, "{s}");
        assert_eq!(s["output_tokens"].as_u64(), Some(ok * 8), "{s}");
        assert_eq!(s["slo_attainment"], 1.0, "{s}");
        assert_eq!(
            s["inter_token_seconds"]["count"].as_u64(),
            Some(ok * 7),
            "{s}"
        );
        let itl = f(&s["inter_token_seconds"]["p50"]);
        assert!((0.004..0.1).contains(&itl), "{s}");
        let secs = f(&s["duration_seconds"]);
        assert!((1.0..3.0).contains(&secs), "{s}");
    }
    // Progress went to stderr while it ran, stdout is the document alone.
    let err = stderr(&out);
    assert!(err.contains("bench: step 1/2 concurrency 1"), "{err}");
    assert!(err.contains("bench: step 2/2 concurrency 2 done"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // The table: a row per step, the best step and the cost.
    let out = bench(
        &[
            "--url",
            &url,
            "--kind",
            "vllm",
            "--concurrency",
            "1",
            "--step-duration",
            "1s",
            "--max-tokens",
            "4",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("tokens/s") && table.contains("TTFT p50/p99 ms"),
        "{table}"
    );
    assert!(table.contains("best concurrency: 1"), "{table}");
    assert!(table.contains("set [score] price_per_hour"), "{table}");
}

/// Answers the model list and the health check; the first completion streams, every later
/// one is a 500.
async fn failing_server() -> String {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/models", get(|| async { r#"{"data":[{"id":"m"}]}"# }))
        .route(
            "/v1/completions",
            post(move || {
                let calls = Arc::clone(&calls);
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) > 0 {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "overloaded").into_response();
                    }
                    let body = "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: [DONE]\n\n";
                    Response::builder()
                        .header(header::CONTENT_TYPE, "text/event-stream")
                        .body(body.into())
                        .unwrap()
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_failing_stops_early_and_exits_1() {
    let url = failing_server().await;
    let started = Instant::now();
    let out = bench(
        &[
            "--url",
            &url,
            "--kind",
            "vllm",
            "--concurrency",
            "1,4",
            "--step-duration",
            "20s",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The step stopped after 10 failures, not after 20 s, and step 4 was skipped.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let r = json(&out);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{r}");
    let s = &steps[0];
    assert_eq!(
        (s["requests_ok"].as_u64(), s["requests_failed"].as_u64()),
        (Some(0), Some(10)),
        "{s}"
    );
    assert_eq!(s["failures"][0]["reason"], "http_status", "{s}");
    assert!(
        s["failures"][0]["example"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{s}"
    );
    assert!(
        s["stopped_early"]
            .as_str()
            .unwrap()
            .contains("10 requests all failed"),
        "{s}"
    );
    assert!(
        s["ttft_seconds"]["p50"].is_null() && s["slo_attainment"] == 0.0,
        "{s}"
    );
    assert!(
        r["stopped"]
            .as_str()
            .unwrap()
            .contains("higher steps were skipped"),
        "{r}"
    );
    assert!(r["best_concurrency"].is_null(), "{r}");
    assert!(stderr(&out).contains("bench stopped:"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_there_exits_1_with_the_reason() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = bench(&["--url", &url, "--kind", "llamacpp", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = json(&out);
    let stopped = r["stopped"].as_str().unwrap();
    assert!(stopped.contains("not ready: down (connect_refused)"), "{r}");
    assert_eq!(r["steps"], serde_json::json!([]));
    assert!(r["best_concurrency"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_the_bench_with_the_steps_so_far() {
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let addr = gpulse::demo::server::start(stop).await.unwrap();
    let url = format!("http://{addr}");
    let mut cmd = command(
        &[
            "--url",
            &url,
            "--kind",
            "vllm",
            "--concurrency",
            "1,2",
            "--step-duration",
            "30s",
            "--max-tokens",
            "4",
            "--json",
        ],
        &[],
    );
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["interrupted"], true, "{r}");
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{r}");
    assert!(steps[0]["requests_ok"].as_u64().unwrap() > 0, "{r}");
    assert!(f(&steps[0]["duration_seconds"]) < 5.0, "{r}");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let two = dir.path().join("two.toml");
    std::fs::write(
        &two,
        "[[probe]]\nname = \"a\"\nkind = \"vllm\"\nurl = \"http://127.0.0.1:1\"\n\n\
         [[probe]]\nname = \"mls\"\nkind = \"kserve\"\nurl = \"http://127.0.0.1:2\"\n",
    )
    .unwrap();
    let two = two.to_str().unwrap();
    let url = "http://127.0.0.1:1";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--url", url, "--kind", "vllm", "--concurrency", "1,300"],
            "--concurrency (flag): concurrency 300 is out of range; use 1 to 256",
        ),
        (
            vec!["--url", url, "--kind", "triton"],
            "--kind (flag): kind triton has no streaming text request",
        ),
        (
            vec!["--url", url, "--kind", "vllm", "--step-duration", "30m"],
            "over the limit of 1h",
        ),
        (vec!["--url", "ftp://x", "--kind", "vllm"], "--url (flag)"),
        (vec![], "no [[probe]] is configured"),
        (vec!["--config", two], "2 probes are configured (a, mls)"),
        (vec!["--config", two, "--probe", "mls"], "`probe[1].kind`"),
    ];
    for (args, want) in cases {
        let out = command(&args, &[]).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // A bad [score] from the environment is a config error like anywhere else.
    let out = command(
        &["--url", url, "--kind", "vllm"],
        &[("GPULSE_SCORE_PRICE_PER_HOUR", "-1")],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("GPULSE_SCORE_PRICE_PER_HOUR (environment)"),
        "{}",
        stderr(&out)
    );
}

/// The real llama-server (2 slots, one thread): steps 1, 2 and 4 of 3 s, 32 tokens each.
/// The figures are printed for the record (`--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_the_real_llama_server() {
    let Some(server) = LlamaServer::start(&[]).await else {
        return;
    };
    let client = crate::inproc::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = client.get(format!("{}/health", server.url)).send().await;
        if health.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "not ready:\n{}", server.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let price = std::env::var("GPULSE_SCORE_PRICE_PER_HOUR").unwrap_or_else(|_| "1.2".to_owned());
    let args = [
        "--url",
        &server.url,
        "--kind",
        "llamacpp",
        "--concurrency",
        "1,2,4",
        "--step-duration",
        "3s",
        "--max-tokens",
        "32",
        "--prompt-tokens",
        "32",
        "--json",
    ];
    let out = bench(&args, &[("GPULSE_SCORE_PRICE_PER_HOUR", &price)]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        server.output()
    );
    let r = json(&out);
    check_report(&r, Some(price.parse().unwrap()));
    assert_eq!(r["target"]["model"], LlamaServer::MODEL, "{r}");
    assert_eq!(r["settings"]["ignore_eos"], true);
    assert!(
        r["settings"]["prompt_tokens_reported"].as_u64().unwrap() > 32,
        "{r}"
    );
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{r}");
    eprintln!("gpulse bench {}", args.join(" "));
    eprintln!(
        "conc  ok  fail  req/s  tokens/s  TTFT p50/p99 ms  ITL p50/p99 ms  e2e p50/p99 ms  in SLO"
    );
    let ms = |v: &Value| f(v) * 1000.0;
    for s in steps {
        // ignore_eos: every answer is the 32 tokens asked for.
        let ok = s["requests_ok"].as_u64().unwrap();
        assert_eq!(s["output_tokens"].as_u64(), Some(ok * 32), "{s}");
        eprintln!(
            "{:>4} {:>3} {:>5} {:>6.2} {:>9.1} {:>7.1}/{:<7.1} {:>6.2}/{:<7.2} {:>6.1}/{:<7.1} {:.3}",
            s["concurrency"],
            ok,
            s["requests_failed"],
            f(&s["requests_per_second"]),
            f(&s["output_tokens_per_second"]),
            ms(&s["ttft_seconds"]["p50"]),
            ms(&s["ttft_seconds"]["p99"]),
            ms(&s["inter_token_seconds"]["p50"]),
            ms(&s["inter_token_seconds"]["p99"]),
            ms(&s["e2e_seconds"]["p50"]),
            ms(&s["e2e_seconds"]["p99"]),
            f(&s["slo_attainment"]),
        );
    }
    eprintln!(
        "best concurrency {} ({}); cost per 1M output tokens {} at {price}/h",
        r["best_concurrency"], r["best_concurrency_reason"], r["cost_per_million_output_tokens"]
    );
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
}
