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

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response, ResponseBodyTooLarge};

/// Largest answer read: an `ExportMetricsServiceResponse` is a few bytes, or a partial-success
/// message; anything larger is not a collector's answer.
pub(super) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// An HTTP client whose every request ends within `timeout`.
#[derive(Debug, Clone)]
pub(super) struct BoundedHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl BoundedHttpClient {
    /// Builds the client on the current tokio runtime; `Err` outside one or when reqwest
    /// cannot build (no TLS provider).
    pub(super) fn new(timeout: Duration) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| format!("the OTLP/HTTP client needs a tokio runtime: {e}"))?;
        // The same TLS stack as the rest of the process (ring), which reqwest does not bring.
        crate::collect::probe::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the OTLP/HTTP client: {e}"))?;
        Ok(Self {
            client,
            runtime,
            timeout,
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
        let task = self.runtime.spawn(async move {
            match tokio::time::timeout(timeout, exchange(client, request)).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no complete answer within {timeout:?}").into()),
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
