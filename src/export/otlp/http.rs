//! The OTLP/HTTP exporter's client: one request bounded end to end by `otlp.timeout`.
//!
//! Why not the SDK's default (`reqwest::blocking`): its timeout bounds each read, not the
//! answer, so a collector that trickles its response body (a byte a second) kept one push in
//! flight forever. The SDK's `PeriodicReader` waits for each export on its one thread, so that
//! push stopped OTLP export for good, with nothing counted or logged. And a blocking call
//! inside the export future cannot be cut short by a deadline around it.
//!
//! So every request runs as a task on the agent's tokio runtime, in an async reqwest client
//! whose timeout covers the whole exchange, the body included, inside a `tokio::time::timeout`
//! as well (belt and braces: reqwest's total timeout is a builder option that a later change
//! could drop). The answer is read chunk by chunk and abandoned past [`MAX_ANSWER_BYTES`].
//! The export future only awaits the task's `JoinHandle`, which any executor can poll.
//!
//! TLS is the probes' rustls config (ring, the compiled-in Mozilla roots plus `otlp.ca_file`),
//! so `https://` collectors with a private CA work in images without a CA bundle. Each failed
//! request leaves its class and cause (refused, DNS, TLS, timeout, an error status with the
//! start of its body) in the [`Verdict`] the counting exporter reads.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response, ResponseBodyTooLarge};

use super::failure::{Verdict, classify_error, status_cause};
use crate::export::FailureReason;

/// Largest answer read: an `ExportMetricsServiceResponse` is a few bytes, or a partial-success
/// message; anything larger is not a collector's answer.
pub(super) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// An HTTP client whose every request ends within `timeout`.
#[derive(Debug, Clone)]
pub(super) struct BoundedHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    verdict: Verdict,
}

impl BoundedHttpClient {
    /// Builds the client on the current tokio runtime, trusting the built-in roots and
    /// `ca_file` (empty: none); `Err` outside a runtime, for an unreadable CA file, or when
    /// reqwest cannot build.
    pub(super) fn new(timeout: Duration, ca_file: &str, verdict: Verdict) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| format!("the OTLP/HTTP client needs a tokio runtime: {e}"))?;
        // The same TLS stack as the rest of the process (ring), which reqwest does not bring.
        crate::collect::probe::tls::install_crypto_provider();
        let tls = crate::collect::probe::tls::client_config(ca_file, false)?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| format!("cannot build the OTLP/HTTP client: {e}"))?;
        Ok(Self {
            client,
            runtime,
            timeout,
            verdict,
        })
    }
}

/// One exchange: the request, the status and headers, the body up to [`MAX_ANSWER_BYTES`].
async fn exchange(
    client: reqwest::Client,
    request: Request<Bytes>,
) -> Result<Response<Bytes>, HttpError> {
    let request = reqwest::Request::try_from(request)?;
    let mut response = client.execute(request).await?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Box::new(ResponseBodyTooLarge::new()));
        }
        body.extend_from_slice(&chunk);
    }
    let mut answer = Response::builder().status(status).body(Bytes::from(body))?;
    *answer.headers_mut() = headers;
    Ok(answer)
}

// Written out instead of `#[async_trait]` (the trait's own macro), which is not a dependency
// of ours: the signature below is what that macro expands to.
impl HttpClient for BoundedHttpClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let timeout = self.timeout;
        let verdict = self.verdict.clone();
        let task = self.runtime.spawn(async move {
            match tokio::time::timeout(timeout, exchange(client, request)).await {
                Ok(Ok(answer)) => {
                    // The SDK turns an error status into a bare error: keep what the
                    // collector said (401 "invalid API key") for the log.
                    if !answer.status().is_success() {
                        let cause = status_cause(answer.status().as_u16(), answer.body());
                        verdict.set(FailureReason::Status, cause);
                    }
                    Ok(answer)
                }
                Ok(Err(error)) => {
                    let (reason, cause) = classify_error(error.as_ref());
                    verdict.set(reason, cause);
                    Err(error)
                }
                Err(_) => {
                    let cause = format!("no complete answer within {timeout:?}");
                    verdict.set(FailureReason::Timeout, cause.clone());
                    Err(cause.into())
                }
            }
        });
        Box::pin(async move {
            match task.await {
                Ok(answer) => answer,
                // The runtime is shutting down (or the task panicked): a failed push.
                Err(e) => Err(Box::new(e) as HttpError),
            }
        })
    }
}
