//! The accept loop: our own hyper HTTP/1 server around the axum router, with every connection
//! bounded — at most `http.max_connections` open, the request head and the TLS handshake within
//! `http.request_timeout` (also the keep-alive idle limit), a peer that stops reading our
//! response disconnected after the same time — and a drain on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::tls::TlsConfig;
use crate::config::HttpConfig;

use super::Credentials;

/// Largest request head (request line and headers) accepted; larger ones get 431.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// Binds `addr`; separate from [`serve`] so callers learn bind errors (and the real port
/// when asked for port 0) before anything else starts.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// How [`serve`] accepts and serves connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections open at once (at least 1).
    pub max_connections: usize,
    /// Limit for reading a request head, for the TLS handshake, for an idle keep-alive
    /// connection and for a peer that stops reading.
    pub timeout: Duration,
    /// HTTPS with this (reloadable) configuration; `None` for plain HTTP.
    pub tls: Option<Arc<TlsConfig>>,
}

impl ServeOptions {
    pub fn new(http: &HttpConfig, credentials: &Credentials) -> Self {
        Self {
            max_connections: http.max_connections,
            timeout: http.request_timeout.0,
            tls: credentials.tls.clone(),
        }
    }
}

/// What every connection task shares.
struct Connections {
    app: Router,
    http1: http1::Builder,
    timeout: Duration,
    tls: Option<Arc<TlsConfig>>,
}

/// Serves until `shutdown` completes, then stops accepting, closes idle connections and
/// lets the requests in flight finish (the caller bounds how long it waits).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = u32::try_from(options.max_connections.max(1)).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(slots as usize));
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(options.timeout)
        .max_header_size(MAX_REQUEST_HEAD_BYTES);
    let connections = Arc::new(Connections {
        app,
        http1,
        timeout: options.timeout,
        tls: options.tls,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: when all are taken, stop accepting until a connection closes.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            stream,
            peer,
            permit,
            Arc::clone(&connections),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends: all permits back means all drained.
    let _ = permits.acquire_many(slots).await;
    Ok(())
}

/// Per-connection accept errors are the peer's business; others (out of file descriptors)
/// are logged and slowed down so the loop does not spin.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %error, "Cannot accept connections; retrying in 1s.");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection, from the TLS handshake (if any) to close; holds its slot throughout.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
    connections: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let stream = WriteDeadline::new(stream, connections.timeout);
    let Some(tls) = &connections.tls else {
        return serve_http(stream, peer, &connections, stop).await;
    };
    let acceptor = TlsAcceptor::from(tls.current());
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(connections.timeout, acceptor.accept(stream)) => handshake,
        () = stopped(&mut stop) => return,
    };
    match handshake {
        Ok(Ok(stream)) => serve_http(stream, peer, &connections, stop).await,
        Ok(Err(error)) => tracing::debug!(%peer, error = %error, "TLS handshake failed."),
        Err(_elapsed) => tracing::debug!(%peer, "TLS handshake timed out."),
    }
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    connections: &Connections,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(connections.app.clone());
    let conn = connections
        .http1
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(&mut stop) => {
            // Closes the connection now if idle, else after the response in flight.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        // Header timeouts, resets, malformed requests: the peer's problem, not ours.
        tracing::debug!(%peer, error = %error, "HTTP connection ended with an error.");
    }
}

/// Completes once the server stops (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// An I/O stream whose writes fail with `TimedOut` after making no progress for `limit`:
/// a peer that stops reading our response cannot hold its connection slot forever.
struct WriteDeadline<I> {
    io: I,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteDeadline<I> {
    fn new(io: I, limit: Duration) -> Self {
        Self {
            io,
            limit,
            stalled: None,
        }
    }

    /// Passes progress through; times a stall (`Pending`) and fails it past the limit.
    fn bound<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer stopped reading",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.bound(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.bound(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.bound(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.bound(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_cut_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limit = Duration::from_millis(400);
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut bounded = WriteDeadline::new(ours, limit);
        // A slow reader that keeps making progress is served, however long it takes in total.
        let reader = tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                theirs.read_exact(&mut [0; 64]).await.unwrap();
            }
            theirs
        });
        bounded.write_all(&[b'x'; 6 * 64]).await.unwrap();
        let _theirs = reader.await.unwrap();
        // No progress for the limit: the write fails.
        let started = std::time::Instant::now();
        let err = bounded.write_all(&[b'x'; 256]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit, "{:?}", started.elapsed());
    }
}
