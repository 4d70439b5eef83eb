//! `GET /v1/events[?since=SEQ][&limit=N]`: a page of the event log (`gpulse.events/v2`) with
//! the wrapped job's summary. The log itself lives in `evidence`; the server reads it through
//! [`EventFeed`], which `app` hands over, so `export` never depends on `evidence`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::export::json::{EventPage, EventsV2};

/// Events served when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;

/// The most bytes of events one page holds (score reports are large); at least one event is
/// served, and `more` says the rest follows.
pub const MAX_PAGE_BYTES: u64 = 4 << 20;

/// Where pages of events come from (the event log).
pub trait EventFeed: Send + Sync + std::fmt::Debug {
    /// Events after `since` (oldest first, at most `limit` and about [`MAX_PAGE_BYTES`],
    /// `more` when others follow), or the newest ones with `None`. Blocking: may read the
    /// state store.
    fn page(&self, since: Option<u64>, limit: usize) -> Result<EventPage, String>;
}

/// A parsed query: `since` (absent: the newest page) and `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub since: Option<u64>,
    pub limit: usize,
}

/// Parses `since=SEQ&limit=N`; the error is the 400's text.
pub fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let mut out = Query {
        since: None,
        limit: DEFAULT_LIMIT,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "since" => {
                out.since = Some(value.parse::<u64>().map_err(|_| {
                    "since must be a sequence number (0 pages from the oldest event kept)"
                        .to_owned()
                })?);
            }
            "limit" => {
                out.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("limit must be a number from 1 to {MAX_LIMIT}"))?;
            }
            _ => {
                return Err(
                    "unknown query parameter; /v1/events takes since=SEQ and limit=N".to_owned(),
                );
            }
        }
    }
    Ok(out)
}

/// The handler.
pub(super) async fn events(State(state): State<ApiState>, uri: Uri) -> Response {
    let query = match parse_query(uri.query()) {
        Ok(query) => query,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let page = match state.events.clone() {
        None => Ok(EventPage::default()),
        Some(feed) => read(feed, query).await,
    };
    match page {
        Ok(page) => {
            let snap = state.store.snapshot();
            axum::Json(EventsV2::new(
                &snap,
                &state.node,
                query.since,
                query.limit,
                page,
            ))
            .into_response()
        }
        Err(error) => {
            tracing::debug!(error = %error, "Cannot read the event log.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot read the event log now\n",
            )
                .into_response()
        }
    }
}

/// Reads the page on a blocking thread (the state store is a file).
async fn read(feed: Arc<dyn EventFeed>, query: Query) -> Result<EventPage, String> {
    tokio::task::spawn_blocking(move || feed.page(query.since, query.limit))
        .await
        .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_query(None),
            Ok(Query {
                since: None,
                limit: DEFAULT_LIMIT
            })
        );
        assert_eq!(
            parse_query(Some("since=42&limit=7")),
            Ok(Query {
                since: Some(42),
                limit: 7
            })
        );
        assert_eq!(parse_query(Some("since=0")).unwrap().since, Some(0));
        for bad in [
            "since=-1",
            "since=x",
            "since=",
            "limit=0",
            "limit=1001",
            "limit=ten",
            "kind=xid",
            "since",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
