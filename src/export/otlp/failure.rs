//! Why a push failed, in a bounded [`FailureReason`] and a cause in words, so the log line
//! and `gpulse_export_failures_total{reason}` say what to fix (the address, DNS, the CA, the
//! credentials, the collector's load) instead of "export failed".
//!
//! The HTTP client sees typed errors (`reqwest`, `io::Error`, `rustls::Error` in the source
//! chain) and the answer's status and body, and leaves its verdict in a [`Verdict`] slot that
//! the counting exporter reads; the gRPC exporter only hands back text, which
//! [`classify_text`] reads (tonic's messages are stable enough for a label, and an unknown one
//! is `other`, never a wrong class).

use std::sync::{Arc, Mutex};

use crate::export::FailureReason;

/// Longest cause kept for the log (the body of an error answer is the collector's to fill).
pub(super) const MAX_CAUSE_CHARS: usize = 300;

/// First bytes of an error answer's body kept in the cause.
pub(super) const BODY_PREVIEW_BYTES: usize = 200;

/// The HTTP client's verdict on its last request, read (and cleared) by the exporter after each
/// export. The SDK's reader runs one export at a time, so one slot is enough.
#[derive(Debug, Clone, Default)]
pub(super) struct Verdict(Arc<Mutex<Option<(FailureReason, String)>>>);

impl Verdict {
    pub(super) fn set(&self, reason: FailureReason, cause: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((reason, clip(&cause)));
    }

    pub(super) fn take(&self) -> Option<(FailureReason, String)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A failed request's class from its error and the errors it wraps.
pub(crate) fn classify_error(error: &(dyn std::error::Error + 'static)) -> (FailureReason, String) {
    let mut texts = Vec::new();
    let mut typed = None;
    let mut current = Some(error);
    while let Some(e) = current {
        texts.push(e.to_string());
        if typed.is_none() {
            typed = typed_reason(e);
        }
        current = e.source();
    }
    // Nested errors often repeat their source's text: keep each distinct part once.
    texts.dedup();
    let cause = texts.join(": ");
    let reason = typed.unwrap_or_else(|| classify_text(&cause));
    (reason, clip(&cause))
}

/// The class a typed error in the chain gives, when it gives one.
fn typed_reason(e: &(dyn std::error::Error + 'static)) -> Option<FailureReason> {
    if e.downcast_ref::<rustls::Error>().is_some() {
        return Some(FailureReason::Tls);
    }
    if let Some(r) = e.downcast_ref::<reqwest::Error>()
        && r.is_timeout()
    {
        return Some(FailureReason::Timeout);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind;
        // rustls errors travel inside an io::Error through tokio-rustls.
        if io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return Some(FailureReason::Tls);
        }
        return match io.kind() {
            ErrorKind::ConnectionRefused => Some(FailureReason::Refused),
            ErrorKind::TimedOut => Some(FailureReason::Timeout),
            _ => None,
        };
    }
    None
}

/// The class of an error known only by its text (the gRPC exporter's, or a chain whose types
/// said nothing). Lower-cased substring checks, most specific first.
pub(super) fn classify_text(text: &str) -> FailureReason {
    let t = text.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| t.contains(n));
    if any(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "no address associated",
        "nodename nor servname",
    ]) {
        FailureReason::Dns
    } else if any(&[
        "certificate",
        "unknownissuer",
        "tls handshake",
        "invalid peer certificate",
        "handshake",
    ]) {
        FailureReason::Tls
    } else if any(&["connection refused", "refused"]) {
        FailureReason::Refused
    } else if any(&[
        "timed out",
        "timeout",
        "deadline",
        "no complete answer within",
    ]) {
        FailureReason::Timeout
    } else if any(&[
        "status code",
        "unauthenticated",
        "permission denied",
        "permissiondenied",
        "resource exhausted",
        "resourceexhausted",
        "unimplemented",
        "invalid argument",
        "invalidargument",
    ]) {
        FailureReason::Status
    } else if any(&[
        "connection reset",
        "broken pipe",
        "unreachable",
        "tcp connect error",
        "error trying to connect",
        "connection closed",
        "transport error",
    ]) {
        FailureReason::Connection
    } else {
        FailureReason::Other
    }
}

/// The cause for an error answer: the status and the first bytes of the body as text
/// (control characters replaced: the body is the collector's, the log line is ours).
pub(crate) fn status_cause(status: u16, body: &[u8]) -> String {
    let preview = &body[..body.len().min(BODY_PREVIEW_BYTES)];
    let text: String = String::from_utf8_lossy(preview)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let more = if body.len() > BODY_PREVIEW_BYTES {
        "…"
    } else {
        ""
    };
    format!("HTTP {status}: {:?}{more}", text.trim())
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_CAUSE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_of_each_kind_get_their_reason() {
        for (text, reason) in [
            (
                "tcp connect error: Connection refused (os error 111)",
                FailureReason::Refused,
            ),
            (
                "dns error: failed to lookup address information: Name or service not known",
                FailureReason::Dns,
            ),
            (
                "invalid peer certificate: UnknownIssuer",
                FailureReason::Tls,
            ),
            ("no complete answer within 2s", FailureReason::Timeout),
            (
                "status: Unauthenticated, message: \"bad key\"",
                FailureReason::Status,
            ),
            ("connection reset by peer", FailureReason::Connection),
            ("something new", FailureReason::Other),
        ] {
            assert_eq!(classify_text(text), reason, "{text}");
        }
    }

    #[test]
    fn a_refused_io_error_in_the_chain_is_refused() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let (reason, cause) = classify_error(&io);
        assert_eq!(reason, FailureReason::Refused);
        assert!(!cause.is_empty());
    }

    #[test]
    fn an_error_answer_shows_its_status_and_the_start_of_its_body() {
        let cause = status_cause(401, b"invalid API key\n");
        assert_eq!(cause, "HTTP 401: \"invalid API key\"");
        let long = vec![b'x'; 1000];
        let cause = status_cause(500, &long);
        assert!(cause.ends_with('…') && cause.len() < 300, "{cause}");
    }
}
