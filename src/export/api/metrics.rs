//! `GET /metrics`: the format from `Accept`, the encoding from `Accept-Encoding`, the body
//! from the renderer's per-snapshot cache (`export::prometheus::cache`).
//!
//! Prometheus sends `Accept-Encoding: gzip`; a 64-GPU body is about a megabyte of text, so it
//! is sent compressed (`Content-Encoding: gzip`) to whoever accepts gzip, and plain to the
//! rest. `Vary` names both negotiated headers, so a cache in between keeps them apart.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::export::prometheus::{OPENMETRICS_TEXT, PROMETHEUS_TEXT};

pub(super) async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    match state.metrics.serve(openmetrics, accepts_gzip(&headers)) {
        Ok(served) => {
            let content_type = if openmetrics {
                OPENMETRICS_TEXT
            } else {
                PROMETHEUS_TEXT
            };
            let mut response = (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::VARY, "Accept, Accept-Encoding"),
                ],
                served.body,
            )
                .into_response();
            if served.gzip {
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            response
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to render metrics\n",
        )
            .into_response(),
    }
}

/// Whether the client takes gzip (RFC 9110 §12.5.3): `gzip` or `x-gzip` listed with a
/// non-zero weight, or else `*` with one. No header, or an unreadable one, means plain.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut named = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let weight = parts
                .find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then_some(v.trim())
                })
                // A weight that does not parse is not a yes.
                .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                named = Some(weight > 0.0);
            } else if coding == "*" {
                any = Some(weight > 0.0);
            }
        }
    }
    named.or(any).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn gzip_is_taken_only_when_the_client_accepts_it() {
        assert!(!with(&[]));
        assert!(with(&["gzip"]), "what Prometheus sends");
        assert!(with(&["deflate, gzip, br, zstd"]), "curl --compressed");
        assert!(with(&["GZIP;q=0.5"]));
        assert!(with(&["x-gzip"]));
        assert!(with(&["br", "gzip"]), "several headers");
        assert!(!with(&["identity"]));
        assert!(!with(&["br, deflate"]));
        assert!(!with(&["gzip;q=0"]));
        assert!(!with(&["gzip; q=0.000"]));
        assert!(!with(&["gzip;q=nope"]));
        assert!(with(&["*"]));
        assert!(!with(&["*;q=0"]));
        assert!(
            !with(&["*, gzip;q=0"]),
            "gzip refused by name beats the wildcard"
        );
    }
}
