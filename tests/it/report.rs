//! Signed score reports end to end: `gpulse demo` with a state dir serves `/v1/identity`,
//! `/v1/report` and `/v1/reports`; the built binary's `gpulse verify` accepts them and
//! refuses every tampered field, a dropped, replaced or reordered chain report, a replayed
//! nonce and another key; the key file is 0600 and survives a restart (same fingerprint, the
//! chain goes on). Also prints a report's size and signing time.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gpulse::evidence::keys::{ReportKey, hex};
use gpulse::evidence::report::{Signed, sign};
use gpulse::export::json::{ReportKind, ReportParts, ReportV1};
use gpulse::score::ScoreWindow;
use serde_json::Value;

use crate::agent::Agent;

/// Runs `gpulse verify ARGS`: exit code, stdout, stderr.
fn verify<S: AsRef<OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpulse"))
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn random_hex(bytes: usize) -> String {
    hex(&(0..bytes).map(|_| fastrand::u8(..)).collect::<Vec<_>>())
}

/// GETs `path` until it answers 200 and `ok` holds (at most `limit`); the body.
fn poll(agent: &Agent, path: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let r = agent.get(path);
        if r.status == 200 && ok(&r.body) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path}: {} {}\n--- agent stderr ---\n{}",
            r.status,
            r.body,
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Downloads every kept chained report into `dir` (`SEQ.json`); their seqs.
fn download_chain(agent: &Agent, dir: &Path) -> Vec<u64> {
    let list = json(&agent.get_ok("/v1/reports?limit=200"));
    assert_eq!(list["schema"], "gpulse.reports/v1");
    let mut seqs = Vec::new();
    for entry in list["reports"].as_array().unwrap() {
        let seq = entry["seq"].as_u64().unwrap();
        let body = agent.get_ok(&format!("/v1/reports/{seq}"));
        // The listing's hash is the hash of the bytes served.
        assert_eq!(
            entry["sha256"].as_str().unwrap(),
            gpulse::evidence::report::sha256_hex(body.as_bytes())
        );
        std::fs::write(dir.join(format!("{seq}.json")), body).unwrap();
        seqs.push(seq);
    }
    seqs
}

fn start(state: &Path) -> Agent {
    Agent::start(
        ["demo", "--gpus", "2"],
        [
            ("GPULSE_AGENT_STATE_DIR", state.as_os_str()),
            ("GPULSE_SCORE_TICK", OsStr::new("1s")),
            ("GPULSE_REPORT_INTERVAL", OsStr::new("5s")),
        ],
    )
}

/// JSON pointers of every leaf.
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                leaves(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// Another value of the same kind where there is one (a hex string stays hex-shaped).
fn tampered(v: &Value) -> Value {
    match v {
        Value::Null => Value::from(0),
        Value::Bool(b) => Value::Bool(!b),
        Value::Number(n) => match n.as_u64() {
            Some(u) => Value::from(u + 1),
            None => Value::from(n.as_f64().unwrap() + 1.0),
        },
        Value::String(s) if s.is_empty() => Value::from("x"),
        Value::String(s) => {
            let mut chars: Vec<char> = s.chars().collect();
            chars[0] = if chars[0] == '1' { '2' } else { '1' };
            Value::from(chars.into_iter().collect::<String>())
        }
        other => other.clone(),
    }
}

#[test]
fn demo_reports_verify_and_every_tampered_field_is_caught() {
    let state = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let agent = start(state.path());
    let identity_text = poll(&agent, "/v1/identity", Duration::from_secs(30), |b| {
        !json(b)["binary_sha256"].is_null()
    });
    let identity = json(&identity_text);
    assert_eq!(identity["schema"], "gpulse.identity/v1");
    assert_eq!(identity["public_key"]["alg"], "ed25519");
    assert_eq!(identity["public_key"]["persistent"], true);
    assert_eq!(identity["gpus"].as_array().unwrap().len(), 2);
    let fingerprint = identity["public_key"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_file = state.path().join("report.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let id_file = files.path().join("identity.json");
    std::fs::write(&id_file, &identity_text).unwrap();

    // Bad queries are 400s.
    for bad in ["?nonce=zz", "?window=2h", "?nonce=00", "?x=1"] {
        assert_eq!(agent.get(&format!("/v1/report{bad}")).status, 400, "{bad}");
    }
    assert_eq!(agent.get("/v1/reports?since=x").status, 400);
    assert_eq!(agent.get("/v1/reports/x").status, 400);
    assert_eq!(agent.get("/v1/reports/999999").status, 404);

    // An on-demand report answering a nonce.
    let nonce = random_hex(32);
    let path = format!("/v1/report?window=1h&nonce={nonce}");
    let body = poll(&agent, &path, Duration::from_secs(30), |_| true);
    eprintln!(
        "on-demand report of the demo (2 GPUs, 1 probe): {} bytes",
        body.len()
    );
    let report_file = files.path().join("report.json");
    std::fs::write(&report_file, &body).unwrap();
    let report = json(&body);
    assert_eq!(report["kind"], "on_demand");
    assert_eq!(report["nonce"], nonce.as_str());
    let r = report_file.as_os_str();
    let (code, out, err) = verify(&[
        r,
        "--pubkey".as_ref(),
        id_file.as_os_str(),
        "--nonce".as_ref(),
        nonce.as_ref(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("valid: ") && out.contains("nonce matches"),
        "{out}"
    );
    assert!(!err.contains("WARNING"), "{err}");
    // The key as hex and base64 works too.
    for key in ["hex", "base64"] {
        let k = identity["public_key"][key].as_str().unwrap();
        assert_eq!(verify(&[r, "--pubkey".as_ref(), k.as_ref()]).0, 0, "{key}");
    }
    // Without --pubkey: valid, and loudly only about integrity.
    let (code, out, err) = verify(&[r]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("WARNING") && err.contains("NOT who signed it"),
        "{err}"
    );
    // A replayed report: another request's nonce.
    let (code, out, _) = verify(&[r, "--nonce".as_ref(), random_hex(32).as_ref()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("invalid: ") && out.contains("another nonce"),
        "{out}"
    );
    // Another key.
    let other = ReportKey::from_seed([9; 32], "2026-01-01T00:00:00Z".to_owned());
    let (code, out, _) = verify(&[r, "--pubkey".as_ref(), other.public_hex().as_ref()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not by the expected key"), "{out}");
    // Usage errors: 2.
    assert_eq!(verify(&[files.path().join("none.json").as_os_str()]).0, 2);
    assert_eq!(verify(&[r, "--nonce".as_ref(), "xyz".as_ref()]).0, 2);
    assert_eq!(verify(&[r, "--pubkey".as_ref(), "nokey".as_ref()]).0, 2);

    // Every leaf changed, one at a time: exit 1 each time.
    let mut pointers = Vec::new();
    leaves(&report, String::new(), &mut pointers);
    let started = Instant::now();
    let tampered_file = files.path().join("tampered.json");
    for pointer in &pointers {
        let mut changed = report.clone();
        let leaf = changed.pointer_mut(pointer).unwrap();
        *leaf = tampered(leaf);
        std::fs::write(&tampered_file, serde_json::to_vec(&changed).unwrap()).unwrap();
        let (code, out, err) = verify(&[
            tampered_file.as_os_str(),
            "--pubkey".as_ref(),
            id_file.as_os_str(),
            "--nonce".as_ref(),
            nonce.as_ref(),
        ]);
        assert_eq!(code, 1, "{pointer} changed: {out}{err}");
        assert!(out.starts_with("invalid: "), "{pointer}: {out}");
    }
    eprintln!(
        "{} fields tampered, each refused, in {:?}",
        pointers.len(),
        started.elapsed()
    );

    // The chain: hourly reports every 5 s here.
    poll(&agent, "/v1/reports", Duration::from_secs(40), |b| {
        json(b)["reports"].as_array().is_some_and(|r| r.len() >= 2)
    });
    // Fetched before the chain, so the report's head is among the reports downloaded.
    let bound = agent.get_ok("/v1/report");
    let bound_file = files.path().join("bound.json");
    std::fs::write(&bound_file, &bound).unwrap();
    let chain_dir = files.path().join("chain");
    std::fs::create_dir(&chain_dir).unwrap();
    let seqs = download_chain(&agent, &chain_dir);
    let (code, out, err) = verify(&[
        bound_file.as_os_str(),
        "--pubkey".as_ref(),
        id_file.as_os_str(),
        "--chain".as_ref(),
        chain_dir.as_os_str(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("bound to seq"), "{out}");
    let last = chain_dir.join(format!("{}.json", seqs.last().unwrap()));
    let (code, out, err) = verify(&[
        last.as_os_str(),
        "--pubkey".as_ref(),
        id_file.as_os_str(),
        "--chain".as_ref(),
        chain_dir.as_os_str(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // The newest chained report is in the snapshot for the event log.
    let latest = json(&agent.get_ok(&format!("/v1/reports/{}", seqs.last().unwrap())));
    assert_eq!(latest["kind"], "hourly");
    assert_eq!(latest["window"], "1h");
    let head_before = *seqs.last().unwrap();

    // Restart: the same key, and the chain goes on from the head.
    drop(agent);
    let agent = start(state.path());
    let again = json(&poll(
        &agent,
        "/v1/identity",
        Duration::from_secs(30),
        |_| true,
    ));
    assert_eq!(again["public_key"]["fingerprint"], fingerprint.as_str());
    assert_eq!(
        again["public_key"]["created_at"],
        identity["public_key"]["created_at"]
    );
    poll(&agent, "/v1/reports", Duration::from_secs(40), |b| {
        json(b)["head"]["seq"]
            .as_u64()
            .is_some_and(|s| s > head_before)
    });
    let after_dir = files.path().join("after");
    std::fs::create_dir(&after_dir).unwrap();
    let seqs = download_chain(&agent, &after_dir);
    assert!(
        seqs.first() == Some(&1) && *seqs.last().unwrap() > head_before,
        "{seqs:?}"
    );
    let last = after_dir.join(format!("{}.json", seqs.last().unwrap()));
    let (code, out, err) = verify(&[
        last.as_os_str(),
        "--pubkey".as_ref(),
        id_file.as_os_str(),
        "--chain".as_ref(),
        after_dir.as_os_str(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("chain seq 1 to {}", seqs.last().unwrap())),
        "{out}"
    );
}

/// A chain of `n` reports of the fixed snapshot signed with `key`, in process.
fn chain(n: u64, key: &ReportKey) -> Vec<Signed> {
    let snap = crate::exposition::fixed_snapshot();
    let mut out: Vec<Signed> = Vec::new();
    for seq in 1..=n {
        let prev = out.last().map(|s| s.sha256.clone());
        out.push(signed(&snap, seq, prev.as_deref(), key));
    }
    out
}

fn signed(snap: &gpulse::store::Snapshot, seq: u64, prev: Option<&str>, key: &ReportKey) -> Signed {
    let parts = ReportParts {
        kind: ReportKind::Hourly,
        seq,
        window: ScoreWindow::H1,
        created_at: "2027-01-15T08:00:00.000Z",
        node: "node-1",
        binary_sha256: Some("00"),
        nonce: None,
        prev_report_sha256: prev,
    };
    sign(ReportV1::build(snap, &parts).unwrap(), key).unwrap()
}

fn write_all(dir: &Path, reports: &[&Signed]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    reports
        .iter()
        .map(|s| {
            let path = dir.join(format!("{}.json", s.fields.seq));
            std::fs::write(&path, &s.bytes).unwrap();
            path
        })
        .collect()
}

#[test]
fn a_dropped_replaced_or_reordered_chain_report_is_named() {
    let key = ReportKey::from_seed([3; 32], "2026-01-01T00:00:00Z".to_owned());
    let pk = key.public_hex();
    let reports = chain(4, &key);
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, members: &[&Signed]| {
        let dir = tmp.path().join(name);
        let files = write_all(&dir, members);
        let mut args: Vec<&OsStr> = vec![
            files.last().unwrap().as_os_str(),
            "--pubkey".as_ref(),
            pk.as_ref(),
            "--chain".as_ref(),
        ];
        args.extend(files.iter().map(|f| f.as_os_str()));
        verify(&args)
    };
    let all: Vec<&Signed> = reports.iter().collect();
    let (code, out, err) = run("all", &all);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("chain seq 1 to 4 (4 reports) unbroken"),
        "{out}"
    );
    // Files given in any order are sorted by seq.
    let dir = tmp.path().join("all");
    let shuffled: Vec<PathBuf> = [3, 1, 4, 2]
        .iter()
        .map(|s| dir.join(format!("{s}.json")))
        .collect();
    let mut args: Vec<&OsStr> = vec![shuffled[0].as_os_str(), "--chain".as_ref()];
    args.extend(shuffled.iter().map(|f| f.as_os_str()));
    assert_eq!(verify(&args).0, 0);

    // Dropped: seq 2.
    let (code, out, _) = run("dropped", &[&reports[0], &reports[2], &reports[3]]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 2 is missing (dropped)"), "{out}");
    // Replaced: another seq 2, validly signed, linking to seq 1.
    let mut snap = crate::exposition::fixed_snapshot();
    snap.identity = std::sync::Arc::new(gpulse::identity::Identity::default());
    let other = signed(&snap, 2, Some(&reports[0].sha256), &key);
    let (code, out, _) = run("replaced", &[&reports[0], &other, &reports[2], &reports[3]]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("seq 3's prev_report_sha256 is not the hash of seq 2"),
        "{out}"
    );
    // Reordered: signed as 1, 3, 2 (seq 3 links to seq 1, seq 2 to seq 3).
    let snap = crate::exposition::fixed_snapshot();
    let s3 = signed(&snap, 3, Some(&reports[0].sha256), &key);
    let s2 = signed(&snap, 2, Some(&s3.sha256), &key);
    let (code, out, _) = run("reordered", &[&reports[0], &s2, &s3]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("seq 2's prev_report_sha256 is not the hash of seq 1"),
        "{out}"
    );
    // A member signed by another key.
    let stranger = ReportKey::from_seed([4; 32], "2026-01-01T00:00:00Z".to_owned());
    let foreign = signed(&snap, 5, Some(&reports[3].sha256), &stranger);
    let (code, out, _) = run(
        "foreign",
        &[&reports[0], &reports[1], &reports[2], &reports[3], &foreign],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not by the expected key"), "{out}");
}

/// The figures the issue asks for: a report's size and the time to build, sign and check it
/// (the fixed snapshot: 3 GPUs, 1 probe with server counters, an hour of minute buckets).
/// Debug build with the crypto crates optimised; a release build is faster.
#[test]
fn report_size_and_signing_time() {
    let key = ReportKey::from_seed([5; 32], "2026-01-01T00:00:00Z".to_owned());
    let snap = crate::exposition::fixed_snapshot();
    let first = signed(&snap, 1, None, &key);
    let runs = 50u32;
    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(signed(&snap, 1, None, &key));
    }
    let each = started.elapsed() / runs;
    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(
            gpulse::evidence::report::verify(&first.bytes, Some(&key.public())).unwrap(),
        );
    }
    let check = started.elapsed() / runs;
    eprintln!(
        "report (3 GPUs, 1 probe): {} bytes; build + canonicalise + sign + self-check: {each:?}; verify: {check:?}",
        first.bytes.len()
    );
    assert!(first.bytes.len() < 64 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reports_off_their_endpoints_answer_404() {
    let mut config = gpulse::config::Config::default();
    config.report.enabled = false;
    let agent = crate::api::start(config).await;
    crate::api::wait_ready(&agent.base).await;
    for path in ["/v1/identity", "/v1/report", "/v1/reports", "/v1/reports/1"] {
        let r = crate::inproc::http_get(format!("{}{path}", agent.base))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(
            r.text().await.unwrap().contains("report.enabled = false"),
            "{path}"
        );
    }
    // Without a state dir the key is made for the process: identity says so.
    let agent_on = crate::api::start(gpulse::config::Config::default()).await;
    crate::api::wait_ready(&agent_on.base).await;
    let mut identity = serde_json::Value::Null;
    for _ in 0..100 {
        let r = crate::inproc::http_get(format!("{}/v1/identity", agent_on.base))
            .await
            .unwrap();
        identity = r.json().await.unwrap();
        if !identity["binary_sha256"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(identity["public_key"]["persistent"], false);
    assert_eq!(identity["chain"]["persistent"], false);
    agent.shut_down().await;
    agent_on.shut_down().await;
}
