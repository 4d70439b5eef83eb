//! The OTLP metrics push loop and its two transports: every `interval` a batch of the latest
//! snapshot, encoded once ([`super::batch`]), is sent over gRPC (tonic, the bytes as they are
//! through [`EncodedCodec`], to the method opentelemetry-proto's client calls) or
//! HTTP/protobuf (gzipped when asked, once per push, not per retry; the bounded client of
//! `http.rs`), bounded end to end by `timeout` with the OTLP-recommended retries inside that
//! bound.
//!
//! Retries follow the OTLP specification and what opentelemetry-otlp's exporters did here
//! before: at most 3 more attempts, 100 ms doubling to 1.6 s plus up to 100 ms of jitter, for
//! the retryable answers only (gRPC `UNAVAILABLE`, `CANCELLED`, `DEADLINE_EXCEEDED`,
//! `ABORTED`, `OUT_OF_RANGE`, `DATA_LOSS`; HTTP 429, 502, 503, 504, or no answer at all). A
//! push still failing at the deadline is one failed push: counted, logged on a change of
//! state, its data dropped (no queue), and the next push goes out on schedule.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_http::Bytes;
use opentelemetry_http::HttpClient as _;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use tokio::sync::{mpsc, oneshot};
use tonic::codec::{BufferSettings, Codec, CompressionEncoding, EncodeBuf, Encoder};
use tonic::transport::Channel;

use super::batch::Batcher;
use super::failure::{Verdict, classify_error, classify_text, status_cause};
use super::http::BoundedHttpClient;
use super::{OtlpProtocol, OtlpSettings, OtlpStartError};
use crate::export::{ExportFailure, ExportStats, FailureReason};
use crate::store::Store;

/// Retries after the first attempt, and their backoff (the OTLP-recommended policy).
const MAX_RETRIES: u32 = 3;
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_millis(1600);
const MAX_JITTER_MS: u64 = 100;

/// Where the batches go.
pub(super) enum Transport {
    Grpc {
        client: tonic::client::Grpc<Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: BoundedHttpClient,
        endpoint: String,
        headers: Vec<(String, String)>,
        gzip: bool,
        verdict: Verdict,
    },
}

impl Transport {
    /// The transport `settings` name. Must run inside a tokio runtime.
    pub(super) fn new(settings: &OtlpSettings) -> Result<Self, OtlpStartError> {
        match settings.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Channel::from_shared(settings.endpoint.clone())
                    .map_err(|e| OtlpStartError(format!("endpoint: {e}")))?
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout);
                if settings.endpoint.starts_with("https://") {
                    endpoint = endpoint
                        .tls_config(super::grpc_tls(&settings.ca_file)?)
                        .map_err(|e| OtlpStartError(format!("TLS: {e}")))?;
                }
                let mut client = tonic::client::Grpc::new(endpoint.connect_lazy());
                if settings.gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                Ok(Self::Grpc {
                    client,
                    metadata: super::grpc_metadata(settings)?,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                let verdict = Verdict::default();
                let client =
                    BoundedHttpClient::new(settings.timeout, &settings.ca_file, verdict.clone())
                        .map_err(OtlpStartError)?;
                Ok(Self::Http {
                    client,
                    endpoint: settings.endpoint.clone(),
                    headers: settings.headers.clone().into_iter().collect(),
                    gzip: settings.gzip,
                    verdict,
                })
            }
        }
    }

    /// The body of an encoded request as sent, made once per push and reused by its retries:
    /// gzipped when HTTP asks for it (tonic compresses gRPC messages itself).
    fn body(&self, request: Vec<u8>) -> Bytes {
        match self {
            Self::Http { gzip: true, .. } => gzip_bytes(&request),
            _ => Bytes::from(request),
        }
    }

    /// One attempt with `body` from [`Self::body`]; `Err((retryable, reason, cause))`.
    async fn send(&self, body: &Bytes) -> Result<(), (bool, FailureReason, String)> {
        match self {
            Self::Grpc { client, metadata } => {
                let mut client = client.clone();
                let mut call = tonic::Request::from_parts(
                    metadata.clone(),
                    tonic::Extensions::default(),
                    body.clone(),
                );
                call.extensions_mut()
                    .insert(tonic::GrpcMethod::new(GRPC_SERVICE, "Export"));
                let answer = match client.ready().await {
                    Ok(()) => {
                        let path = axum::http::uri::PathAndQuery::from_static(GRPC_EXPORT);
                        client.unary(call, path, EncodedCodec).await.map(|_| ())
                    }
                    // As opentelemetry-proto's generated client answers it.
                    Err(e) => Err(tonic::Status::unknown(format!(
                        "Service was not ready: {e}"
                    ))),
                };
                match answer {
                    Ok(_) => Ok(()),
                    Err(status) => {
                        use tonic::Code;
                        let retryable = matches!(
                            status.code(),
                            Code::Unavailable
                                | Code::Cancelled
                                | Code::DeadlineExceeded
                                | Code::Aborted
                                | Code::OutOfRange
                                | Code::DataLoss
                        );
                        let (reason, cause) = grpc_failure(&status);
                        Err((retryable, reason, cause))
                    }
                }
            }
            Self::Http {
                client,
                endpoint,
                headers,
                gzip,
                verdict,
            } => {
                let mut builder = axum::http::Request::builder()
                    .method("POST")
                    .uri(endpoint.as_str())
                    .header("content-type", "application/x-protobuf");
                for (k, v) in headers {
                    builder = builder.header(k.as_str(), v.as_str());
                }
                if *gzip {
                    builder = builder.header("content-encoding", "gzip");
                }
                let http_request = builder
                    .body(body.clone())
                    .map_err(|e| (false, FailureReason::Other, e.to_string()))?;
                let _ = verdict.take();
                match client.send_bytes(http_request).await {
                    Ok(answer) if answer.status().is_success() => Ok(()),
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        let retryable = matches!(status, 429 | 502 | 503 | 504);
                        let cause = verdict
                            .take()
                            .map_or_else(|| status_cause(status, answer.body()), |(_, c)| c);
                        Err((retryable, FailureReason::Status, cause))
                    }
                    Err(error) => {
                        let (reason, cause) = verdict
                            .take()
                            .unwrap_or_else(|| classify_error(error.as_ref()));
                        // No answer at all: worth another try.
                        Err((true, reason, cause))
                    }
                }
            }
        }
    }
}

/// A gRPC failure's class and cause: the transport's typed errors when it made the status
/// itself (refused, DNS, TLS), else the collector's code and message.
fn grpc_failure(status: &tonic::Status) -> (FailureReason, String) {
    use std::error::Error as _;
    if status.source().is_some() {
        return classify_error(status);
    }
    let cause = format!("gRPC status {:?}: {}", status.code(), status.message());
    let reason = match status.code() {
        tonic::Code::DeadlineExceeded => FailureReason::Timeout,
        tonic::Code::Unavailable | tonic::Code::Unknown => match classify_text(&cause) {
            FailureReason::Other => FailureReason::Status,
            known => known,
        },
        _ => FailureReason::Status,
    };
    (reason, cause)
}

/// The metrics service and its export method, as opentelemetry-proto's generated client
/// names them.
const GRPC_SERVICE: &str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// A tonic codec that sends an already encoded request as it is and decodes the answer with
/// opentelemetry-proto's type: the batch is encoded once per push, and a retry costs a
/// reference count, not a copy of the request.
struct EncodedCodec;

struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = EncodedEncoder;
    type Decoder = tonic_prost::ProstDecoder<ExportMetricsServiceResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(BufferSettings::default())
    }
}

fn gzip_bytes(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// The delay before retry `n` (0-based): doubling from [`FIRST_DELAY`] up to [`MAX_DELAY`],
/// plus a jitter so a fleet that lost its collector does not come back in step.
fn backoff(n: u32) -> Duration {
    let base = FIRST_DELAY.saturating_mul(1 << n.min(8)).min(MAX_DELAY);
    let jitter = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
        % (MAX_JITTER_MS + 1);
    base + Duration::from_millis(jitter)
}

/// Sends one encoded request with retries, all within `timeout`.
async fn deliver(
    transport: &Transport,
    request: Vec<u8>,
    timeout: Duration,
    endpoint: &str,
) -> Result<(), ExportFailure> {
    let body = transport.body(request);
    let attempts = async {
        let mut n = 0;
        loop {
            match transport.send(&body).await {
                Ok(()) => return Ok(()),
                Err((true, _, _)) if n < MAX_RETRIES => {
                    tokio::time::sleep(backoff(n)).await;
                    n += 1;
                }
                Err((_, reason, cause)) => return Err((reason, cause)),
            }
        }
    };
    let (reason, cause) = match tokio::time::timeout(timeout, attempts).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(failure)) => failure,
        Err(_) => (
            FailureReason::Timeout,
            format!("no complete answer within {timeout:?}"),
        ),
    };
    Err(ExportFailure {
        reason,
        endpoint: endpoint.to_owned(),
        cause,
    })
}

/// What the push task is asked to do besides its schedule.
enum Command {
    /// Push now and answer.
    Flush(oneshot::Sender<Result<(), ExportFailure>>),
    /// Push a last time, answer and stop.
    Stop(oneshot::Sender<Result<(), ExportFailure>>),
}

/// The running push task's handle.
pub(super) struct PushTask {
    commands: mpsc::Sender<Command>,
}

/// One push: the batch of the latest snapshot, delivered and counted.
async fn push_once(
    batcher: &mut Batcher,
    transport: &Transport,
    store: &Store,
    stats: &ExportStats,
    settings: &(Duration, String),
) -> Result<(), ExportFailure> {
    let snap = store.snapshot();
    let request = batcher.encode(&snap, &stats.totals(), SystemTime::now());
    drop(snap);
    let result = deliver(transport, request, settings.0, &settings.1).await;
    stats.record("otlp", result.clone());
    result
}

impl PushTask {
    /// Spawns the push loop on the current runtime; the first push goes out one `interval`
    /// after the start.
    pub(super) fn spawn(
        settings: &OtlpSettings,
        mut batcher: Batcher,
        transport: Transport,
        store: Arc<Store>,
        stats: Arc<ExportStats>,
    ) -> Result<Self, OtlpStartError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| OtlpStartError(format!("no tokio runtime: {e}")))?;
        let (commands, mut rx) = mpsc::channel::<Command>(4);
        let interval = settings.interval;
        let deadline = (settings.timeout, settings.endpoint.clone());
        runtime.spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let _ = push_once(&mut batcher, &transport, &store, &stats, &deadline).await;
                    }
                    command = rx.recv() => match command {
                        Some(Command::Flush(answer)) => {
                            let result = push_once(&mut batcher, &transport, &store, &stats, &deadline).await;
                            let _ = answer.send(result);
                        }
                        Some(Command::Stop(answer)) => {
                            let result = push_once(&mut batcher, &transport, &store, &stats, &deadline).await;
                            let _ = answer.send(result);
                            break;
                        }
                        None => break,
                    },
                }
            }
        });
        Ok(Self { commands })
    }

    /// Sends `command` and waits for its answer; blocking: call it from a blocking thread
    /// (`spawn_blocking` or a plain one), never from an async task. The answer comes within
    /// the push's deadline: every push is bounded by `timeout`.
    fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), ExportFailure>>) -> Command,
    ) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .blocking_send(command(tx))
            .map_err(|_| "the OTLP push has stopped".to_owned())?;
        match rx.blocking_recv() {
            Ok(result) => result.map_err(|f| format!("{}: {}", f.reason.as_str(), f.cause)),
            Err(_) => Err("the OTLP push stopped before answering".to_owned()),
        }
    }

    /// Pushes now; blocking. A failure is already counted.
    pub(super) fn flush(&self) -> Result<(), String> {
        self.ask(Command::Flush)
    }

    /// Pushes a last time and stops; blocking.
    pub(super) fn shutdown(self) -> Result<(), String> {
        self.ask(Command::Stop)
    }
}
