//! `gpulse verify REPORT.json [--pubkey KEY] [--chain DIR|FILE…] [--nonce HEX]`: checks a
//! signed score report offline (`docs/evidence.md`): schema, signature, signer, nonce, chain.
//!
//! Exit 0 with a one-line summary when valid; 1 with the reason on one line when not; 2 for
//! a usage error (a bad flag value, a file that cannot be read). Files are read bounded
//! (`config::files::read_small_file`: regular files, at most 1 MiB each).
//!
//! Without `--pubkey` the report is checked against the key it embeds, which proves only that
//! it was not altered after signing, not who signed it: said on stderr every time.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::{exit, out, say};
use crate::config::files::{DevNull, read_small_file};
use crate::evidence::keys::{fingerprint, parse_public_key};
use crate::evidence::report::{Verified, check_chain, verify};
use crate::export::json::parse_nonce;

/// Files read from `--chain` directories at most.
pub const MAX_CHAIN_FILES: usize = 20_000;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The report to check (`gpulse.report/v1`, as /v1/report or /v1/reports/SEQ serves it).
    #[arg(value_name = "REPORT.json")]
    pub report: PathBuf,
    /// The key the report must be signed with: 64 hex digits, base64, or a file holding
    /// either or a /v1/identity document. Without it the report's own key is used, which
    /// proves integrity only, not origin.
    #[arg(long, value_name = "KEY|FILE")]
    pub pubkey: Option<String>,
    /// Chained reports (files, or directories of *.json) the report must fit: sorted by seq,
    /// every prev_report_sha256 the hash of the report before. Give it after REPORT.json.
    #[arg(long, value_name = "DIR|FILE", num_args = 1..)]
    pub chain: Vec<PathBuf>,
    /// The nonce sent with the request (hex): the report must carry it.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
}

/// What the check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The summary line, and a warning for stderr (no `--pubkey`).
    Valid(String, Option<String>),
    Invalid(String),
    Usage(String),
}

/// Runs the check and prints its verdict.
pub fn main(args: &VerifyArgs) -> ExitCode {
    match check(args, &read) {
        Verdict::Valid(line, warning) => {
            if let Some(warning) = warning {
                say(warning);
            }
            if out(&format!("valid: {line}\n")) {
                ExitCode::from(exit::OK)
            } else {
                ExitCode::from(exit::FAILURE)
            }
        }
        Verdict::Invalid(line) => {
            let _ = out(&format!("invalid: {line}\n"));
            ExitCode::from(exit::INVALID)
        }
        Verdict::Usage(line) => {
            say(line);
            ExitCode::from(exit::USAGE)
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    read_small_file(path, DevNull::Refused)
        .map(|(bytes, _)| bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The files `--chain` names: each file, and each directory's `*.json` files (sorted).
fn chain_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries =
                std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
                .take(MAX_CHAIN_FILES + 1)
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
        if files.len() > MAX_CHAIN_FILES {
            return Err(format!("--chain names more than {MAX_CHAIN_FILES} files"));
        }
    }
    if files.is_empty() {
        return Err("--chain names no report files".to_owned());
    }
    Ok(files)
}

fn short(fp: &str) -> &str {
    fp.get(..23).unwrap_or(fp)
}

/// The whole check, with files read through `read`.
pub fn check(args: &VerifyArgs, read: &dyn Fn(&Path) -> Result<Vec<u8>, String>) -> Verdict {
    let nonce = match args.nonce.as_deref().map(parse_nonce) {
        None => None,
        Some(Some(nonce)) => Some(nonce),
        Some(None) => {
            return Verdict::Usage("--nonce must be 16 to 64 bytes as hex".to_owned());
        }
    };
    let expected = match &args.pubkey {
        None => None,
        Some(given) => {
            let text = if Path::new(given).exists() {
                match read(Path::new(given)) {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Err(e) => return Verdict::Usage(format!("--pubkey: {e}")),
                }
            } else {
                given.clone()
            };
            match parse_public_key(&text) {
                Ok(key) => Some(key),
                Err(e) => return Verdict::Usage(format!("--pubkey: {e}")),
            }
        }
    };
    let bytes = match read(&args.report) {
        Ok(bytes) => bytes,
        Err(e) => return Verdict::Usage(e),
    };
    let report = match verify(&bytes, expected.as_ref()) {
        Ok(report) => report,
        Err(e) => return Verdict::Invalid(e),
    };
    let f = &report.fields;
    let signer = report.key_fingerprint();
    let mut line = format!(
        "{} seq {} ({}, window {} {} to {}), node {}, signed by {}",
        f.schema,
        f.seq,
        f.kind,
        f.window,
        f.start,
        f.end,
        f.node,
        short(&signer)
    );
    match (&nonce, &f.nonce) {
        (None, _) => {}
        (Some(sent), Some(carried)) if sent == carried => line.push_str("; nonce matches"),
        (Some(_), Some(_)) => {
            return Verdict::Invalid(
                "the report carries another nonce: it answers another request (replayed)"
                    .to_owned(),
            );
        }
        (Some(_), None) => {
            return Verdict::Invalid(
                "the report carries no nonce: it does not answer this request".to_owned(),
            );
        }
    }
    if !args.chain.is_empty() {
        match check_against_chain(&report, &args.chain, read) {
            Ok(summary) => line.push_str(&summary),
            Err(verdict) => return verdict,
        }
    }
    let warning = expected.is_none().then(|| {
        format!(
            "WARNING: no --pubkey given: checked against the key inside the report ({}). That proves the report was not altered after signing, NOT who signed it; pass the signer's key (--pubkey, e.g. its /v1/identity) to check its origin.",
            fingerprint(report.public_key.as_bytes())
        )
    });
    Verdict::Valid(line, warning)
}

/// Checks `report` against the chain in `paths` (every member signed by the same key);
/// returns the summary's tail.
fn check_against_chain(
    report: &Verified,
    paths: &[PathBuf],
    read: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
) -> Result<String, Verdict> {
    let files = chain_files(paths).map_err(Verdict::Usage)?;
    let mut members: Vec<Verified> = Vec::with_capacity(files.len());
    for file in &files {
        let bytes = read(file).map_err(Verdict::Usage)?;
        let member = verify(&bytes, Some(&report.public_key))
            .map_err(|e| Verdict::Invalid(format!("{}: {e}", file.display())))?;
        if member.sha256 != report.sha256 {
            members.push(member);
        }
    }
    let on_demand = report.fields.seq == 0;
    if !on_demand {
        members.push(report.clone());
    }
    let chain = check_chain(&members).map_err(Verdict::Invalid)?;
    let mut tail = format!(
        "; chain seq {} to {} ({} reports) unbroken",
        chain.first, chain.last, chain.reports
    );
    if on_demand {
        let Some(prev) = &report.fields.prev_report_sha256 else {
            return Err(Verdict::Invalid(
                "the on-demand report is bound to no chain (prev_report_sha256 null)".to_owned(),
            ));
        };
        match members.iter().find(|m| m.sha256 == *prev) {
            Some(m) => tail.push_str(&format!(", the report is bound to seq {}", m.fields.seq)),
            None => {
                return Err(Verdict::Invalid(format!(
                    "the on-demand report's prev_report_sha256 is the hash of no report in the chain given (seq {} to {})",
                    chain.first, chain.last
                )));
            }
        }
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::keys::hex;
    use crate::evidence::report::sign;
    use crate::evidence::report::tests::{key, snapshot};
    use crate::export::json::{ReportKind, ReportParts, ReportV1};
    use crate::score::ScoreWindow;
    use std::collections::HashMap;

    fn report(seq: u64, nonce: Option<&str>, prev: Option<&str>, k: u8) -> (Vec<u8>, String) {
        let parts = ReportParts {
            kind: if seq == 0 {
                ReportKind::OnDemand
            } else {
                ReportKind::Hourly
            },
            seq,
            window: ScoreWindow::H1,
            created_at: "2027-01-15T08:00:00.000Z",
            node: "n",
            binary_sha256: None,
            nonce,
            prev_report_sha256: prev,
        };
        let s = sign(
            ReportV1::build(&snapshot(1_800_000_000), &parts).unwrap(),
            &key(k),
        )
        .unwrap();
        (s.bytes, s.sha256)
    }

    fn args(report: &str, pubkey: Option<&str>, chain: &[&str], nonce: Option<&str>) -> VerifyArgs {
        VerifyArgs {
            report: PathBuf::from(report),
            pubkey: pubkey.map(str::to_owned),
            chain: chain.iter().map(PathBuf::from).collect(),
            nonce: nonce.map(str::to_owned),
        }
    }

    #[test]
    fn verdicts_for_signer_nonce_and_chain() {
        let nonce = "11".repeat(32);
        let (r1, h1) = report(1, None, None, 1);
        let (r2, h2) = report(2, None, Some(&h1), 1);
        let (r3, _) = report(3, None, Some(&h2), 1);
        let (od, _) = report(0, Some(&nonce), Some(&h2), 1);
        let files: HashMap<&str, Vec<u8>> = [("r1", r1), ("r2", r2), ("r3", r3), ("od", od)]
            .into_iter()
            .collect();
        let read = |p: &Path| -> Result<Vec<u8>, String> {
            files
                .get(p.to_str().unwrap_or(""))
                .cloned()
                .ok_or_else(|| format!("{}: no such file", p.display()))
        };
        let pk = hex(key(1).public().as_bytes());
        let other = hex(key(2).public().as_bytes());
        let valid = |a: VerifyArgs| match check(&a, &read) {
            Verdict::Valid(line, warning) => (line, warning),
            other => panic!("{other:?}"),
        };
        let (line, warning) = valid(args("od", Some(&pk), &["r1", "r2", "r3"], Some(&nonce)));
        assert!(
            line.contains("nonce matches") && line.contains("bound to seq 2"),
            "{line}"
        );
        assert!(line.contains("chain seq 1 to 3"), "{line}");
        assert_eq!(warning, None);
        let (_, warning) = valid(args("r3", None, &["r2", "r1"], None));
        assert!(warning.unwrap().contains("NOT who signed it"));
        let invalid = |a: VerifyArgs, expected: &str| match check(&a, &read) {
            Verdict::Invalid(line) => assert!(line.contains(expected), "{expected:?}: {line}"),
            other => panic!("{other:?}"),
        };
        invalid(
            args("od", Some(&other), &[], None),
            "not by the expected key",
        );
        invalid(
            args("od", None, &[], Some(&"22".repeat(32))),
            "another nonce",
        );
        invalid(args("r1", None, &[], Some(&nonce)), "no nonce");
        invalid(args("r3", Some(&pk), &["r1"], None), "seq 2 is missing");
        invalid(args("od", Some(&pk), &["r1"], None), "hash of no report");
        let usage = |a: VerifyArgs| assert!(matches!(check(&a, &read), Verdict::Usage(_)));
        usage(args("missing", None, &[], None));
        usage(args("od", Some("zz"), &[], None));
        usage(args("od", None, &[], Some("abc")));
        usage(args("od", None, &["missing"], None));
    }
}
