//! Unit tests of signed reports: canonical bytes, signing, every way verification fails, the
//! chain checks. `snapshot` is the fixture the reporter's tests share.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::ScoreConfig;
use crate::demo::gpu_sim::SimGpuCollector;
use crate::export::json::{ReportParts, parse_nonce};
use crate::model::{Bucket, Evidence, ServerTally, ThrottleReason};
use crate::score::Reach;
use crate::store::{ScoreState, Snapshot};

/// A snapshot with two simulated GPUs and a score over ten minutes of evidence ending at
/// `end` (Unix seconds).
pub(crate) fn snapshot(end: u64) -> Snapshot {
    let gpu = SimGpuCollector::new(2, Duration::from_secs(1)).next_sample();
    let buckets: Vec<Bucket> = (0..10u64)
        .map(|m| {
            let mut b = Bucket::new(end - 600 + m * 60, 60);
            b.observed_seconds = 60;
            let p = b.probe("llm");
            p.checks = [4, 0, 0, 0, u64::from(m == 3)];
            (p.requests_ok, p.requests_within_slo, p.output_tokens) = (2, 1, 8);
            p.recovery_seconds_sum = 0.1 + 0.2;
            p.ttft[4] = 2;
            p.e2e[5] = 2;
            p.server = Some(ServerTally {
                requests_ok: Some(100),
                ttft_within_slo: Some(97.3),
                ..ServerTally::default()
            });
            for d in &gpu.devices {
                let g = b.gpu(&d.identity.uuid);
                (g.sampled_seconds, g.healthy_seconds, g.busy_seconds) = (60, 60, 50);
                g.throttled_busy_seconds = 2;
                g.throttle_reasons = vec![(ThrottleReason::HwSlowdown, 2)];
            }
            b
        })
        .collect();
    let config = ScoreConfig {
        price_per_hour: 2.5,
        ..ScoreConfig::default()
    };
    let reach = Reach {
        probes: 1,
        inference_probes: 1,
        metrics_probes: 1,
        gpus: true,
        ..Reach::default()
    };
    let evidence: Vec<Evidence> = ScoreWindow::ALL
        .iter()
        .map(|w| Evidence::over(&buckets, end, w.seconds()))
        .collect();
    let windows = ScoreWindow::ALL
        .iter()
        .zip(&evidence)
        .map(|(w, e)| crate::score::evaluate(*w, e, &reach, &config))
        .collect();
    Snapshot {
        gpu: Some(Arc::new(gpu)),
        score: Some(Arc::new(ScoreState {
            evaluated_at: end,
            windows,
            claims: Vec::new(),
            reach,
            evidence,
            ledger: Default::default(),
            config: Arc::new(config),
            leases: Vec::new(),
        })),
        ..Snapshot::default()
    }
}

pub(crate) fn key(n: u8) -> ReportKey {
    ReportKey::from_seed([n; 32], "2026-01-01T00:00:00Z".to_owned())
}

const END: u64 = 1_800_000_000;

fn parts<'a>(seq: u64, nonce: Option<&'a str>, prev: Option<&'a str>) -> ReportParts<'a> {
    ReportParts {
        kind: if seq == 0 {
            ReportKind::OnDemand
        } else {
            ReportKind::Hourly
        },
        seq,
        window: ScoreWindow::H1,
        created_at: "2027-01-15T08:00:00.000Z",
        node: "node-1",
        binary_sha256: Some("ab"),
        nonce,
        prev_report_sha256: prev,
    }
}

fn signed(seq: u64, nonce: Option<&str>, prev: Option<&str>, k: &ReportKey) -> Signed {
    let dto = ReportV1::build(&snapshot(END), &parts(seq, nonce, prev)).unwrap();
    sign(dto, k).unwrap()
}

#[test]
fn a_signed_report_is_canonical_and_verifies_against_its_key_only() {
    let nonce = parse_nonce(&"5a".repeat(32)).unwrap();
    let k = key(1);
    let s = signed(0, Some(&nonce), None, &k);
    // The bytes are their own canonical form, and the hash is theirs.
    let value: Value = serde_json::from_slice(&s.bytes).unwrap();
    assert_eq!(canonical(&value).unwrap(), s.bytes);
    assert_eq!(s.sha256, sha256_hex(&s.bytes));
    let v = verify(&s.bytes, Some(&k.public())).unwrap();
    assert_eq!(v.sha256, s.sha256);
    assert_eq!(v.fields.nonce.as_deref(), Some(nonce.as_str()));
    assert_eq!(v.fields.kind, "on_demand");
    assert!(verify(&s.bytes, None).is_ok());
    let e = verify(&s.bytes, Some(&key(2).public())).unwrap_err();
    assert!(e.contains("not by the expected key"), "{e}");
    // Pretty-printed, it still verifies, with the same hash.
    let pretty = serde_json::to_vec_pretty(&value).unwrap();
    assert_eq!(verify(&pretty, Some(&k.public())).unwrap().sha256, s.sha256);
    // The report carries what it must.
    for pointer in [
        "/score/components/0/effective_weight",
        "/evidence/components/availability/good",
        "/evidence/probes/0/checks/down",
        "/evidence/probes/0/server/ttft_within_slo",
        "/evidence/gpus/0/throttle_reasons/hw_slowdown",
        "/evidence/latency_bounds_seconds/13",
        "/identity/gpus/1/uuid",
        "/weights/availability",
        "/constants/availability_gate",
        "/cost/per_million_output_tokens",
        "/agent/binary_sha256",
        "/unmeasured",
        "/signature/public_key",
    ] {
        assert!(value.pointer(pointer).is_some(), "{pointer} missing");
    }
    assert_eq!(
        value["evidence"]["probes"][0]["ttft_bins"]
            .as_array()
            .unwrap()
            .len(),
        15
    );
}

#[test]
fn changing_any_leaf_or_dropping_any_field_fails_verification() {
    let k = key(3);
    let nonce = "00".repeat(16);
    let s = signed(0, Some(&nonce), Some(&"cd".repeat(32)), &k);
    let value: Value = serde_json::from_slice(&s.bytes).unwrap();
    let mut leaves = Vec::new();
    collect_leaves(&value, String::new(), &mut leaves);
    assert!(leaves.len() > 100, "{}", leaves.len());
    for pointer in &leaves {
        let mut changed = value.clone();
        tamper(changed.pointer_mut(pointer).unwrap());
        let bytes = serde_json::to_vec(&changed).unwrap();
        assert!(
            verify(&bytes, Some(&k.public())).is_err(),
            "{pointer} changed, still valid"
        );
        assert!(
            verify(&bytes, None).is_err(),
            "{pointer} changed, still valid"
        );
    }
    for field in value.as_object().unwrap().keys() {
        let mut cut = value.clone();
        cut.as_object_mut().unwrap().remove(field);
        let bytes = serde_json::to_vec(&cut).unwrap();
        assert!(
            verify(&bytes, None).is_err(),
            "{field} removed, still valid"
        );
    }
    // A field added after signing is caught too.
    let mut added = value.clone();
    added["extra"] = Value::Bool(true);
    assert!(verify(&serde_json::to_vec(&added).unwrap(), None).is_err());
}

/// JSON pointers of every leaf (numbers, strings, booleans, nulls).
pub(crate) fn collect_leaves(v: &Value, at: String, out: &mut Vec<String>) {
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                collect_leaves(v, format!("{at}/{}", escape(k)), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_leaves(v, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// Changes a leaf to another value of the same kind where there is one.
pub(crate) fn tamper(v: &mut Value) {
    let changed = match &*v {
        Value::Null => Value::from(0),
        Value::Bool(b) => Value::Bool(!*b),
        Value::Number(n) => match n.as_u64() {
            Some(u) => Value::from(u + 1),
            None => Value::from(n.as_f64().unwrap_or(0.0) + 1.0),
        },
        Value::String(s) if s.is_empty() => Value::from("x"),
        // Same length, another character: a hex field stays hex-shaped.
        Value::String(s) => {
            let mut chars: Vec<char> = s.chars().collect();
            chars[0] = if chars[0] == '1' { '2' } else { '1' };
            Value::from(chars.into_iter().collect::<String>())
        }
        other => other.clone(),
    };
    *v = changed;
}

#[test]
fn malformed_reports_say_what_is_wrong() {
    let k = key(4);
    let s = signed(1, None, None, &k);
    let value: Value = serde_json::from_slice(&s.bytes).unwrap();
    let check = |change: &dyn Fn(&mut Value), expected: &str| {
        let mut v = value.clone();
        change(&mut v);
        let e = verify(&serde_json::to_vec(&v).unwrap(), None).unwrap_err();
        assert!(e.contains(expected), "{expected:?} not in {e:?}");
    };
    check(&|v| v["schema"] = "gpulse.score/v1".into(), "schema is");
    check(&|v| v["kind"] = "weekly".into(), "kind");
    check(&|v| v["seq"] = 0.into(), "does not fit kind");
    check(&|v| v["window"] = "2h".into(), "window");
    check(&|v| v["end"] = "yesterday".into(), "RFC 3339");
    check(&|v| v["nonce"] = "AB".repeat(16).into(), "nonce");
    check(
        &|v| v["prev_report_sha256"] = "ab".into(),
        "prev_report_sha256",
    );
    check(&|v| v["signature"]["alg"] = "rsa".into(), "algorithm");
    check(
        &|v| v["signature"]["public_key"] = "00".into(),
        "public_key",
    );
    check(&|v| v["signature"]["value"] = "00".into(), "64-byte");
    check(
        &|v| drop(v.as_object_mut().unwrap().remove("signature")),
        "unsigned",
    );
    check(
        &|v| v["score"]["total"] = 1.5.into(),
        "altered after signing",
    );
    check(
        &|v| v["evidence"]["buckets"] = (1u64 << 60).into(),
        "exactly",
    );
    assert!(
        verify(b"[1]", None)
            .unwrap_err()
            .contains("not a JSON object")
    );
    assert!(verify(b"{", None).unwrap_err().contains("not JSON"));
    assert!(verify(b"{}", None).unwrap_err().contains("no schema"));
}

#[test]
fn non_finite_numbers_are_refused_before_signing() {
    #[derive(serde::Serialize)]
    struct F {
        x: f64,
    }
    assert!(canonical(&F { x: f64::NAN }).is_err());
    assert!(canonical(&F { x: f64::INFINITY }).is_err());
    assert!(
        canonical(&vec![Some(F {
            x: f64::NEG_INFINITY
        })])
        .is_err()
    );
    let mut map = std::collections::BTreeMap::new();
    map.insert("k", (1u8, f64::NAN));
    assert!(canonical(&map).is_err());
    // A report with a NaN deep inside is not signed.
    let mut dto = ReportV1::build(&snapshot(END), &parts(1, None, None)).unwrap();
    dto.score.coverage = f64::NAN;
    assert!(sign(dto, &key(1)).unwrap_err().contains("non-finite"));
    // JCS numbers: shortest round-trip form, integers without a fraction.
    assert_eq!(
        canonical(&F { x: 0.1 + 0.2 }).unwrap(),
        br#"{"x":0.30000000000000004}"#
    );
    assert_eq!(canonical(&F { x: 100.0 }).unwrap(), br#"{"x":100}"#);
    assert_eq!(canonical(&F { x: 1e21 }).unwrap(), br#"{"x":1e+21}"#);
}

fn verified_chain(n: u64, k: &ReportKey) -> Vec<Verified> {
    let mut out: Vec<Verified> = Vec::new();
    for seq in 1..=n {
        let prev = out.last().map(|v| v.sha256.clone());
        let s = signed(seq, None, prev.as_deref(), k);
        out.push(verify(&s.bytes, Some(&k.public())).unwrap());
    }
    out
}

#[test]
fn the_chain_check_names_dropped_replaced_and_reordered_reports() {
    let k = key(5);
    let chain = verified_chain(4, &k);
    let ok = check_chain(&chain).unwrap();
    assert_eq!((ok.first, ok.last, ok.reports), (1, 4, 4));
    assert_eq!(ok.first_prev, None);
    assert_eq!(ok.head_sha256, chain[3].sha256);
    // Any order and copies: sorted and de-duplicated.
    let mut shuffled = vec![
        chain[2].clone(),
        chain[0].clone(),
        chain[3].clone(),
        chain[1].clone(),
    ];
    shuffled.push(chain[1].clone());
    assert_eq!(check_chain(&shuffled).unwrap(), ok);
    // Dropped.
    let dropped = [chain[0].clone(), chain[2].clone(), chain[3].clone()];
    let e = check_chain(&dropped).unwrap_err();
    assert!(e.contains("seq 2 is missing"), "{e}");
    let e = check_chain(&[chain[0].clone(), chain[3].clone()]).unwrap_err();
    assert!(e.contains("seqs 2 to 3 are missing"), "{e}");
    // Replaced: another, validly signed seq 2.
    let other = signed(2, None, Some(&chain[0].sha256), &key(5));
    let mut other = verify(&other.bytes, None).unwrap();
    other.sha256 = "ff".repeat(32);
    let replaced = [
        chain[0].clone(),
        other.clone(),
        chain[2].clone(),
        chain[3].clone(),
    ];
    let e = check_chain(&replaced).unwrap_err();
    assert!(
        e.contains("seq 3's prev_report_sha256 is not the hash of seq 2"),
        "{e}"
    );
    let e = check_chain(&[chain[0].clone(), chain[1].clone(), other]).unwrap_err();
    assert!(e.contains("two different reports claim seq 2"), "{e}");
    // Reordered: signed as 1, 3, 2 (seq 3 links to seq 1, seq 2 to seq 3).
    let s3 = verify(&signed(3, None, Some(&chain[0].sha256), &k).bytes, None).unwrap();
    let s2 = verify(&signed(2, None, Some(&s3.sha256), &k).bytes, None).unwrap();
    let e = check_chain(&[chain[0].clone(), s2, s3]).unwrap_err();
    assert!(
        e.contains("seq 2's prev_report_sha256 is not the hash of seq 1"),
        "{e}"
    );
    // A chain cut and restarted.
    let restarted = [
        chain[0].clone(),
        verify(&signed(2, None, None, &k).bytes, None).unwrap(),
    ];
    assert!(
        check_chain(&restarted)
            .unwrap_err()
            .contains("starts a new chain")
    );
    // On-demand reports are not chain members; an empty chain is no chain.
    let od = verify(&signed(0, None, None, &k).bytes, None).unwrap();
    assert!(check_chain(&[od]).unwrap_err().contains("on-demand"));
    assert!(check_chain(&[]).is_err());
}

#[test]
fn reports_build_for_every_window_and_not_before_a_score() {
    let snap = snapshot(END);
    for w in ScoreWindow::ALL {
        let p = ReportParts {
            window: w,
            ..parts(0, None, None)
        };
        let dto = ReportV1::build(&snap, &p).unwrap();
        assert_eq!(dto.window, w.as_str());
        assert!(sign(dto, &key(6)).is_ok());
    }
    assert!(ReportV1::build(&Snapshot::default(), &parts(0, None, None)).is_none());
}
