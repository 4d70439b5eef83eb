//! Signed score reports: their canonical bytes (RFC 8785 JCS), the ed25519 signature, the
//! hash chain, and verification. Pure functions (no I/O, no clock): the reporter signs with
//! them, `gpulse verify` checks with them.
//!
//! * Signing input: the JCS bytes of the report object without its `signature` field.
//! * A report's hash: SHA-256 of the JCS bytes of the whole signed object (what the agent
//!   serves and stores, so it is also the hash of the served bytes); the next chained report
//!   holds it in `prev_report_sha256`.
//! * Numbers: JCS writes every number as an IEEE 754 double (ES6 rendering), so only values a
//!   double holds exactly round-trip: floats are finite by construction (the score clamps, a
//!   non-finite value fails the canonicalisation) and integers must stay within ±(2^53 − 1),
//!   which [`verify`] checks. [`sign`] verifies its own output before returning it, so a report
//!   a verifier would reject is never served. `finite` walks a report for NaN and infinity
//!   first, which JCS would otherwise write as `null` inside a struct.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::keys::{ALG, ReportKey, fingerprint, hex, unhex};
use crate::export::json::{REPORT_SCHEMA_V1, ReportFieldsV1, ReportKind, ReportV1, SignatureV1};
use crate::score::ScoreWindow;

/// The largest integer a double holds exactly (JavaScript's `Number.MAX_SAFE_INTEGER`).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A signed report: its bytes (canonical JSON), their hash and the fields the chain reads.
#[derive(Debug, Clone)]
pub struct Signed {
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
    pub fields: ReportFieldsV1,
}

/// A report whose signature checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    pub fields: ReportFieldsV1,
    /// Hex SHA-256 of the report's canonical bytes.
    pub sha256: String,
    pub public_key: VerifyingKey,
}

impl Verified {
    /// `SHA256:…` of the signer's key.
    pub fn key_fingerprint(&self) -> String {
        fingerprint(self.public_key.as_bytes())
    }
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The RFC 8785 canonical bytes of `value`; an error for a non-finite float anywhere in it
/// (JCS, like serde_json, would write one inside a struct as `null`).
pub fn canonical<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    finite::check(value).map_err(|e| e.to_string())?;
    serde_json_canonicalizer::to_vec(value).map_err(|e| format!("cannot canonicalise: {e}"))
}

/// Signs `report` with `key`: the signature over its canonical bytes without `signature`,
/// then the canonical bytes with it, checked by [`verify`].
pub fn sign(mut report: ReportV1, key: &ReportKey) -> Result<Signed, String> {
    report.signature = None;
    let message = canonical(&report)?;
    let signature = key.sign(&message);
    report.signature = Some(SignatureV1 {
        alg: ALG.to_owned(),
        public_key: key.public_hex(),
        value: hex(&signature.to_bytes()),
    });
    let bytes = canonical(&report)?;
    let verified = verify(&bytes, Some(&key.public()))
        .map_err(|e| format!("a report just signed does not verify: {e}"))?;
    Ok(Signed {
        sha256: sha256_hex(&bytes),
        fields: verified.fields,
        bytes,
    })
}

/// Every number within what JCS renders exactly.
fn check_numbers(value: &Value) -> Result<(), String> {
    match value {
        Value::Number(n) => {
            let exact = match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => u <= MAX_SAFE_INTEGER,
                (None, Some(i), _) => i.unsigned_abs() <= MAX_SAFE_INTEGER,
                (None, None, Some(f)) => f.is_finite(),
                _ => false,
            };
            if exact {
                Ok(())
            } else {
                Err(format!(
                    "the number {n} is outside what JSON numbers hold exactly"
                ))
            }
        }
        Value::Array(items) => items.iter().try_for_each(check_numbers),
        Value::Object(map) => map.values().try_for_each(check_numbers),
        _ => Ok(()),
    }
}

fn is_hex_of(s: &str, bytes: std::ops::RangeInclusive<usize>) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        && unhex(s).is_some_and(|b| bytes.contains(&b.len()))
}

/// Verifies one report: it is a `gpulse.report/v1` object with well-formed fields, signed
/// with ed25519 by `expected` (or, without one, by the key it embeds: that proves integrity
/// only), and the signature covers its content. The error is one line saying what is wrong.
pub fn verify(bytes: &[u8], expected: Option<&VerifyingKey>) -> Result<Verified, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    check_numbers(&value)?;
    let Value::Object(mut object) = value else {
        return Err("not a JSON object".to_owned());
    };
    match object.get("schema").and_then(Value::as_str) {
        Some(REPORT_SCHEMA_V1) => {}
        Some(other) => return Err(format!("schema is {other:?}, not {REPORT_SCHEMA_V1:?}")),
        None => return Err(format!("no schema: not a {REPORT_SCHEMA_V1} report")),
    }
    let sha256 = sha256_hex(&canonical(&object)?);
    let fields: ReportFieldsV1 = serde_json::from_value(Value::Object(object.clone()))
        .map_err(|e| format!("not a {REPORT_SCHEMA_V1} report: {e}"))?;
    let on_demand = match fields.kind.as_str() {
        k if k == ReportKind::Hourly.as_str() => false,
        k if k == ReportKind::OnDemand.as_str() => true,
        k => return Err(format!("kind {k:?} is neither hourly nor on_demand")),
    };
    if on_demand != (fields.seq == 0) {
        return Err(format!(
            "seq {} does not fit kind {} (on-demand reports have seq 0, chained ones 1 and up)",
            fields.seq, fields.kind
        ));
    }
    if ScoreWindow::parse(&fields.window).is_none() {
        return Err(format!(
            "window {:?} is not 5m, 1h, 24h or 7d",
            fields.window
        ));
    }
    for (name, at) in [
        ("start", &fields.start),
        ("end", &fields.end),
        ("created_at", &fields.created_at),
    ] {
        if humantime::parse_rfc3339(at).is_err() {
            return Err(format!("{name} {at:?} is not an RFC 3339 time"));
        }
    }
    if let Some(nonce) = &fields.nonce
        && !is_hex_of(nonce, 16..=64)
    {
        return Err("nonce is not 16-64 bytes of lower-case hex".to_owned());
    }
    if let Some(prev) = &fields.prev_report_sha256
        && !is_hex_of(prev, 32..=32)
    {
        return Err("prev_report_sha256 is not a lower-case hex SHA-256".to_owned());
    }
    let Some(signature) = &fields.signature else {
        return Err("unsigned: the report has no signature".to_owned());
    };
    if signature.alg != ALG {
        return Err(format!(
            "signature algorithm {:?} is not {ALG}",
            signature.alg
        ));
    }
    let public_key = unhex(&signature.public_key)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or("signature.public_key is not an ed25519 public key in hex")?;
    if let Some(expected) = expected
        && *expected != public_key
    {
        return Err(format!(
            "signed by key {}, not by the expected key {}",
            fingerprint(public_key.as_bytes()),
            fingerprint(expected.as_bytes())
        ));
    }
    let value = unhex(&signature.value)
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or("signature.value is not a 64-byte ed25519 signature in hex")?;
    object.remove("signature");
    let message = canonical(&object)?;
    public_key.verify_strict(&message, &value).map_err(|_| {
        "the signature does not match the content: the report was altered after signing".to_owned()
    })?;
    Ok(Verified {
        fields,
        sha256,
        public_key,
    })
}

/// An unbroken chain: its first and last seq, and what the first one links back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub first: u64,
    pub last: u64,
    pub reports: usize,
    /// The first report's `prev_report_sha256` (the report before the ones given).
    pub first_prev: Option<String>,
    /// The last report's hash.
    pub head_sha256: String,
}

/// Checks that `reports` (chained ones, any order, copies allowed) form one unbroken chain:
/// sorted by seq, consecutive, each `prev_report_sha256` the hash of the one before. The
/// error names the seq where the chain breaks and how (dropped, replaced or reordered).
pub fn check_chain(reports: &[Verified]) -> Result<Chain, String> {
    let mut sorted: Vec<&Verified> = reports.iter().collect();
    if let Some(r) = sorted.iter().find(|r| r.fields.seq == 0) {
        return Err(format!(
            "the chain holds an on-demand report ({}): only chained reports (seq 1 and up) belong in it",
            r.sha256
        ));
    }
    sorted.sort_by_key(|r| r.fields.seq);
    sorted.dedup_by(|b, a| a.sha256 == b.sha256);
    let (Some(first), Some(last)) = (sorted.first(), sorted.last()) else {
        return Err("the chain is empty".to_owned());
    };
    for pair in sorted.windows(2) {
        let (a, b) = (&pair[0].fields, &pair[1].fields);
        if a.seq == b.seq {
            return Err(format!(
                "two different reports claim seq {}: one was replaced",
                a.seq
            ));
        }
        if b.seq != a.seq + 1 {
            let missing = if b.seq == a.seq + 2 {
                format!("seq {} is missing", a.seq + 1)
            } else {
                format!("seqs {} to {} are missing", a.seq + 1, b.seq - 1)
            };
            return Err(format!(
                "{missing} (dropped): the chain goes from seq {} to seq {}",
                a.seq, b.seq
            ));
        }
        match &b.prev_report_sha256 {
            None => {
                return Err(format!(
                    "seq {} starts a new chain (prev_report_sha256 null) after seq {}: the reports before it were cut off",
                    b.seq, a.seq
                ));
            }
            Some(prev) if *prev != pair[0].sha256 => {
                return Err(format!(
                    "seq {}'s prev_report_sha256 is not the hash of seq {}: a report was replaced or reordered",
                    b.seq, a.seq
                ));
            }
            Some(_) => {}
        }
    }
    Ok(Chain {
        first: first.fields.seq,
        last: last.fields.seq,
        reports: sorted.len(),
        first_prev: first.fields.prev_report_sha256.clone(),
        head_sha256: last.sha256.clone(),
    })
}

mod finite;
#[cfg(test)]
pub(crate) mod tests;
