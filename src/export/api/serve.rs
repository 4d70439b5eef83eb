//! The accept loop: our own hyper HTTP/1 server around the axum router, with every connection
//! bounded — at most `http.max_connections` open; a new connection's TLS handshake and first
//! request head within `http.header_timeout`, later heads (and keep-alive idleness) within
//! `http.request_timeout`; a peer that stops reading our response disconnected after the
//! request timeout — and a drain on shutdown.
//!
//! Liveness probes must get through a flood of silent connections (a pod whose `/healthz`
//! hangs is restarted). So when every slot is taken and another client connects, the oldest
//! connection that has not yet sent a complete request head (a silent client, a slowloris, an
//! unfinished TLS handshake) is closed to make room, instead of leaving the newcomer in the
//! kernel's queue. Connections that sent a request are never shed: they are real clients, and
//! their keep-alive idle time stays bounded by the request timeout. Only when no connection
//! can be shed does the newcomer wait for a slot.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot, watch};
use tokio::time::{Instant, Sleep};
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
    /// Limit for reading a request head after the first, for an idle keep-alive connection
    /// and for a peer that stops reading.
    pub timeout: Duration,
    /// Limit for a new connection's TLS handshake and first request head, from accept
    /// (capped at `timeout`).
    pub header_timeout: Duration,
    /// HTTPS with this (reloadable) configuration; `None` for plain HTTP.
    pub tls: Option<Arc<TlsConfig>>,
    /// Warnings about the TLS and token files from their first load, logged at start.
    pub startup_warnings: Vec<String>,
}

impl ServeOptions {
    pub fn new(http: &HttpConfig, credentials: &Credentials) -> Self {
        Self {
            max_connections: http.max_connections,
            timeout: http.request_timeout.0,
            header_timeout: http.header_timeout.0,
            tls: credentials.tls.clone(),
            startup_warnings: credentials.take_startup_warnings(),
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
    for warning in &options.startup_warnings {
        tracing::warn!("{warning}.");
    }
    let slots = u32::try_from(options.max_connections.max(1)).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(slots as usize));
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(options.timeout)
        .max_header_size(MAX_REQUEST_HEAD_BYTES);
    // The first head never gets longer than later ones: a shorter request timeout wins.
    let first_head = options.header_timeout.min(options.timeout);
    let unproven = Arc::new(Unproven::default());
    let connections = Arc::new(Connections {
        app,
        http1,
        timeout: options.timeout,
        tls: options.tls,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
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
        // A slot for the newcomer: a free one, else one freed by shedding the oldest
        // connection that has not sent a request (its task drops its slot at once), else wait
        // until a connection closes; meanwhile, later clients wait in the kernel's queue.
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                if unproven.shed_oldest() {
                    tracing::debug!("All connection slots taken; closed the oldest silent one.");
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_closed) => break,
                    },
                }
            }
        };
        let first = unproven.enter(Instant::now() + first_head);
        tokio::spawn(connection(
            stream,
            peer,
            permit,
            first,
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

/// The connections that have not yet sent a complete first request head, by age (ids
/// increase with accept order), each with the sender that tells it to close.
#[derive(Debug, Default)]
struct Unproven {
    waiting: Mutex<(u64, BTreeMap<u64, oneshot::Sender<()>>)>,
}

impl Unproven {
    /// Registers a new connection whose first head is due by `deadline`.
    fn enter(self: &Arc<Self>, deadline: Instant) -> FirstHead {
        let (tx, shed) = oneshot::channel();
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let id = waiting.0;
        waiting.0 += 1;
        waiting.1.insert(id, tx);
        FirstHead {
            id,
            unproven: Arc::clone(self),
            shed,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            settled: false,
        }
    }

    /// Forgets connection `id` (its head arrived, or it closed); dropping its sender tells a
    /// live connection it is safe from shedding.
    fn leave(&self, id: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.1.remove(&id);
    }

    /// Tells the oldest connection still waiting for its first head to close; whether one
    /// was told.
    fn shed_oldest(&self) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((_, tx)) = waiting.1.pop_first() {
            if tx.send(()).is_ok() {
                return true;
            }
        }
        false
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .len()
    }
}

/// A connection's wait for its first request head: shed or timed out until it arrives.
struct FirstHead {
    id: u64,
    unproven: Arc<Unproven>,
    shed: oneshot::Receiver<()>,
    deadline: Pin<Box<Sleep>>,
    /// The head arrived: neither the deadline nor shedding applies any more.
    settled: bool,
}

impl FirstHead {
    /// Completes, with the reason, when the connection must close before its first request
    /// head; never once the head has arrived.
    async fn doomed(&mut self) -> &'static str {
        if !self.settled {
            let shed = tokio::select! {
                biased;
                shed = &mut self.shed => shed,
                () = self.deadline.as_mut() => return "no request head within http.header_timeout",
            };
            match shed {
                Ok(()) => return "shed: every connection slot was taken",
                // The sender was dropped: the head arrived (see `MarkProven`).
                Err(_) => self.settled = true,
            }
        }
        std::future::pending().await
    }

    /// The service wrapper that settles this wait on the first request.
    fn mark<S>(&self, inner: S) -> MarkProven<S> {
        MarkProven {
            inner,
            unproven: Arc::clone(&self.unproven),
            id: self.id,
            done: AtomicBool::new(false),
        }
    }
}

impl Drop for FirstHead {
    fn drop(&mut self) {
        self.unproven.leave(self.id);
    }
}

/// A hyper service that takes its connection off the shedding list when hyper hands it the
/// first parsed request head.
struct MarkProven<S> {
    inner: S,
    unproven: Arc<Unproven>,
    id: u64,
    done: AtomicBool,
}

impl<S, R> hyper::service::Service<R> for MarkProven<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: R) -> Self::Future {
        if !self.done.swap(true, Ordering::Relaxed) {
            self.unproven.leave(self.id);
        }
        self.inner.call(request)
    }
}

/// One connection, from the TLS handshake (if any) to close; holds its slot throughout.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
    mut first: FirstHead,
    connections: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let stream = WriteDeadline::new(stream, connections.timeout);
    let Some(tls) = &connections.tls else {
        return serve_http(stream, peer, &connections, first, stop).await;
    };
    // The handshake is part of the first head's time: a client that connects and never says
    // hello is as silent as one that never sends a request.
    let acceptor = TlsAcceptor::from(tls.current());
    let handshake = tokio::select! {
        handshake = acceptor.accept(stream) => handshake,
        why = first.doomed() => {
            tracing::debug!(%peer, why, "TLS handshake not finished; closed.");
            return;
        }
        () = stopped(&mut stop) => return,
    };
    match handshake {
        Ok(stream) => serve_http(stream, peer, &connections, first, stop).await,
        Err(error) => tracing::debug!(%peer, error = %error, "TLS handshake failed."),
    }
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    connections: &Connections,
    mut first: FirstHead,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The peer's address travels with each request (`ConnectInfo`): `POST /v1/health/clear`
    // without a token is accepted from loopback only, and records who asked.
    let app = tower::ServiceExt::map_request(
        connections.app.clone(),
        move |mut request: hyper::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            request
        },
    );
    let service = first.mark(TowerToHyperService::new(app));
    let conn = connections
        .http1
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        why = first.doomed() => {
            // Dropping the connection closes the socket; it never sent a request.
            tracing::debug!(%peer, why, "Connection closed before its first request.");
            return;
        }
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
    async fn the_oldest_connection_without_a_request_is_shed_first() {
        let unproven = Arc::new(Unproven::default());
        let later = Instant::now() + Duration::from_secs(60);
        let mut oldest = unproven.enter(later);
        let mut proven = unproven.enter(later);
        let mut newest = unproven.enter(later);
        // `proven` got its first request: off the list, never shed, never timed out.
        use axum::body::Body;
        let service = proven.mark(hyper::service::service_fn(
            |_: hyper::Request<Body>| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Body::empty()))
            },
        ));
        let _ = hyper::service::Service::call(&service, hyper::Request::new(Body::empty())).await;
        assert_eq!(unproven.len(), 2);
        let quick = Duration::from_millis(50);
        assert!(tokio::time::timeout(quick, proven.doomed()).await.is_err());

        assert!(unproven.shed_oldest());
        assert_eq!(
            tokio::time::timeout(quick, oldest.doomed()).await.ok(),
            Some("shed: every connection slot was taken")
        );
        assert!(tokio::time::timeout(quick, newest.doomed()).await.is_err());
        drop(newest);
        // Nothing left to shed: the newcomer must wait for a slot.
        assert_eq!(unproven.len(), 0);
        assert!(!unproven.shed_oldest());
    }

    #[tokio::test]
    async fn a_connection_without_a_request_times_out() {
        let unproven = Arc::new(Unproven::default());
        let mut first = unproven.enter(Instant::now() + Duration::from_millis(50));
        let why = tokio::time::timeout(Duration::from_secs(5), first.doomed()).await;
        assert_eq!(why.ok(), Some("no request head within http.header_timeout"));
    }

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
