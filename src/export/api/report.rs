//! The signed-report endpoints: `GET /v1/identity`, `GET /v1/report`, `GET /v1/reports` and
//! `GET /v1/reports/SEQ`, served from a [`ReportService`] (`evidence::reporter` implements it;
//! `app` hands it over, so `export` never imports `evidence`).
//!
//! Query strings are parsed by hand (axum is built without its `query` feature): an unknown,
//! repeated or malformed parameter is a 400.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::export::json::{NodeIdentityV1, ReportsV1, parse_nonce};
use crate::score::ScoreWindow;

/// Reports listed per page of `/v1/reports` at most.
pub const MAX_PAGE: usize = 200;

/// What the report endpoints are served from.
pub trait ReportService: Send + Sync + std::fmt::Debug {
    /// `gpulse.identity/v1` as of now.
    fn identity(&self) -> NodeIdentityV1;
    /// A fresh signed on-demand report of `window` carrying `nonce` (lower-case hex), bound
    /// to the chain's head; the error says why none can be made now (503).
    fn on_demand(&self, window: ScoreWindow, nonce: Option<&str>) -> Result<Vec<u8>, String>;
    /// Kept chained reports with a seq above `since`, oldest first, at most `limit`.
    fn list(&self, since: u64, limit: usize) -> ReportsV1;
    /// The exact bytes of the chained report `seq`; `Ok(None)` when it is not kept. Blocking
    /// (may read the state store).
    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, String>;
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

fn unavailable(message: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n")).into_response()
}

fn json_bytes(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// The query's `key=value` pairs; an error for a repeated or unknown key (`allowed` lists
/// the known ones).
fn query_pairs<'a>(uri: &'a Uri, allowed: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&key) {
            return Err(format!(
                "unknown query parameter; this endpoint takes only {}",
                allowed.join(", ")
            ));
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(format!("{key} is given twice"));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// The service; `None` (answer [`off`]) with `report.enabled = false`.
fn service(state: &ApiState) -> Option<&Arc<dyn ReportService>> {
    state.reports.as_ref()
}

fn off() -> Response {
    (
        StatusCode::NOT_FOUND,
        "signed reports are off (report.enabled = false)\n",
    )
        .into_response()
}

/// `GET /v1/identity`.
pub async fn identity(State(state): State<ApiState>) -> Response {
    match service(&state) {
        Some(reports) => axum::Json(reports.identity()).into_response(),
        None => off(),
    }
}

/// The `window` and `nonce` of a `/v1/report` query.
fn report_query(uri: &Uri) -> Result<(ScoreWindow, Option<String>), String> {
    let mut window = ScoreWindow::H1;
    let mut nonce = None;
    for (key, value) in query_pairs(uri, &["window", "nonce"])? {
        match key {
            "window" => {
                window =
                    ScoreWindow::parse(value).ok_or("window must be one of 5m, 1h, 24h, 7d")?;
            }
            _ => {
                nonce = Some(
                    parse_nonce(value)
                        .ok_or("nonce must be 16 to 64 bytes as hex (32-128 digits)")?,
                );
            }
        }
    }
    Ok((window, nonce))
}

/// `GET /v1/report[?window=5m|1h|24h|7d][&nonce=HEX]`: a fresh signed report (400 for a bad
/// query, 503 before the first score or without a usable key, 404 with reports or the score
/// off).
pub async fn report(State(state): State<ApiState>, uri: Uri) -> Response {
    let Some(reports) = service(&state) else {
        return off();
    };
    let (window, nonce) = match report_query(&uri) {
        Ok(query) => query,
        Err(message) => return bad_request(&message),
    };
    if !state.score_enabled {
        return (
            StatusCode::NOT_FOUND,
            "the score is off (score.enabled = false): there is nothing to report\n",
        )
            .into_response();
    }
    // Signing and the self-check take a few milliseconds: off the async workers.
    let reports = Arc::clone(reports);
    match tokio::task::spawn_blocking(move || reports.on_demand(window, nonce.as_deref())).await {
        Ok(Ok(bytes)) => json_bytes(bytes),
        Ok(Err(message)) => unavailable(&message),
        Err(_) => unavailable("cannot sign the report"),
    }
}

/// The `since` and `limit` of a `/v1/reports` query.
fn list_query(uri: &Uri) -> Result<(u64, usize), String> {
    let mut since = 0;
    let mut limit = MAX_PAGE;
    for (key, value) in query_pairs(uri, &["since", "limit"])? {
        match key {
            "since" => {
                since = value
                    .parse()
                    .map_err(|_| "since must be a seq (a number)")?
            }
            _ => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or(format!("limit must be 1 to {MAX_PAGE}"))?;
            }
        }
    }
    Ok((since, limit))
}

/// `GET /v1/reports[?since=SEQ][&limit=N]`: the kept chain, oldest first, a page at a time.
pub async fn list(State(state): State<ApiState>, uri: Uri) -> Response {
    let Some(reports) = service(&state) else {
        return off();
    };
    match list_query(&uri) {
        Ok((since, limit)) => axum::Json(reports.list(since, limit)).into_response(),
        Err(message) => bad_request(&message),
    }
}

/// `GET /v1/reports/SEQ`: the chained report's exact bytes (404 when not kept).
pub async fn one(State(state): State<ApiState>, Path(seq): Path<String>, uri: Uri) -> Response {
    let Some(reports) = service(&state).map(Arc::clone) else {
        return off();
    };
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return bad_request("/v1/reports/SEQ takes no query parameters");
    }
    let Ok(seq) = seq.parse::<u64>() else {
        return bad_request("SEQ must be a report's seq (a number)");
    };
    match tokio::task::spawn_blocking(move || reports.get(seq)).await {
        Ok(Ok(Some(bytes))) => json_bytes(bytes),
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            format!("report {seq} is not kept (see /v1/reports)\n"),
        )
            .into_response(),
        Ok(Err(message)) => unavailable(&format!("cannot read report {seq}: {message}")),
        Err(_) => unavailable("cannot read the report"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(q: &str) -> Uri {
        format!("/v1/report{q}").parse().unwrap()
    }

    #[test]
    fn report_queries_parse_or_say_what_is_wrong() {
        assert_eq!(report_query(&uri("")).unwrap(), (ScoreWindow::H1, None));
        let nonce = "AB".repeat(16);
        let (w, n) = report_query(&uri(&format!("?window=24h&nonce={nonce}"))).unwrap();
        assert_eq!(
            (w, n.as_deref()),
            (ScoreWindow::H24, Some("ab".repeat(16).as_str()))
        );
        for bad in [
            "?window=2h",
            "?nonce=abc",
            &format!("?nonce={}", "ab".repeat(15)),
            &format!("?nonce={}", "ab".repeat(65)),
            &format!("?nonce={}", "zz".repeat(16)),
            "?window=1h&window=1h",
            "?seq=1",
            "?window",
        ] {
            assert!(report_query(&uri(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_queries_are_bounded() {
        assert_eq!(list_query(&uri("")).unwrap(), (0, MAX_PAGE));
        assert_eq!(list_query(&uri("?since=7&limit=3")).unwrap(), (7, 3));
        for bad in ["?since=-1", "?since=x", "?limit=0", "?limit=201", "?page=2"] {
            assert!(list_query(&uri(bad)).is_err(), "{bad}");
        }
    }
}
