//! `POST /v1/health/clear?gpu=INDEX|UUID|all`: an operator clears sticky health reasons after
//! a repair (`gpulse health clear`).
//!
//! The clear is an input to the (pure) health evaluation, kept in the store
//! (`Store::clear_health`): reasons whose cause was last seen before it are dropped at the
//! next evaluation, causes seen after it count again. It is recorded as a `health_cleared`
//! event. Who may clear: with a bearer token configured, whoever presents it (the router's
//! auth layer); without one, only a client on the loopback interface (403 otherwise), so an
//! open port never lets a stranger hide a failing GPU.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::health::Clear;

/// Largest `gpu` value accepted (a UUID is 40 characters).
const MAX_TARGET: usize = 128;

/// What a clear names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Index(u32),
    Uuid(String),
}

/// Parses `gpu=…` out of a query string.
pub fn target(query: &str) -> Result<Target, String> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("gpu", value)) if found.is_none() => found = Some(value),
            Some(("gpu", _)) => return Err("`gpu` is given twice".to_owned()),
            _ => {
                return Err("unknown parameter; use ?gpu=INDEX|UUID|all".to_owned());
            }
        }
    }
    let value = found.ok_or("missing ?gpu=INDEX|UUID|all")?;
    if value.is_empty() || value.len() > MAX_TARGET {
        return Err("`gpu` must be a GPU index, a GPU UUID or `all`".to_owned());
    }
    if value == "all" {
        return Ok(Target::All);
    }
    if let Ok(index) = value.parse::<u32>() {
        return Ok(Target::Index(index));
    }
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Ok(Target::Uuid(value.to_owned()));
    }
    Err("`gpu` must be a GPU index, a GPU UUID or `all`".to_owned())
}

fn answer(status: StatusCode, text: String) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// The handler.
pub async fn clear(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
) -> Response {
    if !state.token_required && !peer.ip().is_loopback() {
        return answer(
            StatusCode::FORBIDDEN,
            "clearing health needs a bearer token (http.bearer_token_file) or a client on loopback"
                .to_owned(),
        );
    }
    let target = match target(uri.query().unwrap_or("")) {
        Ok(target) => target,
        Err(message) => return answer(StatusCode::BAD_REQUEST, message),
    };
    let snap = state.store.snapshot();
    let gpu = match &target {
        Target::All => None,
        Target::Index(_) | Target::Uuid(_) => {
            let found = snap
                .gpu
                .iter()
                .flat_map(|g| &g.devices)
                .find(|d| match &target {
                    Target::Index(i) => d.identity.index == *i,
                    Target::Uuid(u) => d.identity.uuid.eq_ignore_ascii_case(u),
                    Target::All => false,
                });
            match found {
                Some(d) => Some((d.identity.index, d.identity.uuid.clone())),
                None => {
                    return answer(
                        StatusCode::NOT_FOUND,
                        "no such GPU in the latest sample".to_owned(),
                    );
                }
            }
        }
    };
    let what = match &gpu {
        Some((index, uuid)) => format!("GPU {index} ({uuid})"),
        None => "every GPU and the node".to_owned(),
    };
    let by = if state.token_required {
        format!("{} (bearer token)", peer.ip())
    } else {
        format!("{} (loopback)", peer.ip())
    };
    tracing::warn!(target = %what, by = %by, "Health reasons cleared by an operator.");
    state.store.clear_health(Clear {
        at: SystemTime::now(),
        gpu,
        by,
    });
    answer(
        StatusCode::OK,
        format!("cleared the health reasons of {what}; the next evaluation applies it"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_anything_else_is_refused() {
        assert_eq!(target("gpu=all"), Ok(Target::All));
        assert_eq!(target("gpu=3"), Ok(Target::Index(3)));
        assert_eq!(
            target("gpu=GPU-00000000-fake-4000-8000-000000000000"),
            Ok(Target::Uuid(
                "GPU-00000000-fake-4000-8000-000000000000".into()
            ))
        );
        for bad in ["", "gpu=", "gpu=a%20b", "gpu=1&gpu=2", "x=1", "gpu=1&x=2"] {
            assert!(target(bad).is_err(), "{bad}");
        }
        assert!(target(&format!("gpu={}", "a".repeat(200))).is_err());
    }
}
