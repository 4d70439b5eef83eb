//! A dedicated OS thread that runs blocking cycles (NVML FFI, /proc and statfs reads) under a
//! deadline, so a hung call never blocks the async runtime, /metrics, or other collectors.
//!
//! At most one cycle is in flight per worker: while a cycle is stuck past its deadline the
//! worker is `busy`, later requests fail fast with [`WorkerError::Busy`], and no further
//! threads are spawned. When the stuck call returns, the worker takes requests again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use tokio::sync::oneshot;

/// Why a cycle did not return a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerError {
    /// The previous cycle is still running (stuck past its deadline).
    Busy,
    /// This cycle did not finish within its deadline; it keeps running in the background.
    DeadlineExceeded,
    /// The worker thread is gone (it panicked or was never started).
    Stopped,
}

/// Handle to a worker thread that owns state `S` and produces `T` per cycle.
#[derive(Debug)]
pub struct DeadlineWorker<T> {
    requests: SyncSender<oneshot::Sender<T>>,
    busy: Arc<AtomicBool>,
}

impl<T: Send + 'static> DeadlineWorker<T> {
    /// Starts the thread. `cycle` runs once per [`DeadlineWorker::run`] call, on the thread.
    pub fn spawn<S, F>(thread_name: &str, mut state: S, mut cycle: F) -> std::io::Result<Self>
    where
        S: Send + 'static,
        F: FnMut(&mut S) -> T + Send + 'static,
    {
        Self::spawn_serving(thread_name, move |inbox| {
            while let Some(request) = inbox.next() {
                request.answer(cycle(&mut state));
            }
        })
    }

    /// Starts the thread running `serve`, which answers each [`DeadlineWorker::run`] call
    /// through `inbox`, one at a time. For a cycle whose state borrows from a value on the
    /// thread's own stack (NVML GPM samples borrow the loaded NVML), which `spawn`'s owned
    /// state cannot hold.
    pub fn spawn_serving<F>(thread_name: &str, serve: F) -> std::io::Result<Self>
    where
        F: FnOnce(Inbox<T>) + Send + 'static,
    {
        // Capacity 1: `busy` guarantees at most one request is ever queued.
        let (requests, inbox) = mpsc::sync_channel::<oneshot::Sender<T>>(1);
        let busy = Arc::new(AtomicBool::new(false));
        let inbox = Inbox {
            inbox,
            busy: Arc::clone(&busy),
        };
        std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || serve(inbox))?;
        Ok(Self { requests, busy })
    }

    /// Runs one cycle and waits at most `deadline` for it.
    pub async fn run(&self, deadline: Duration) -> Result<T, WorkerError> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(WorkerError::Busy);
        }
        let (reply, answer) = oneshot::channel();
        match self.requests.try_send(reply) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(WorkerError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                self.busy.store(false, Ordering::Release);
                return Err(WorkerError::Stopped);
            }
        }
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(WorkerError::Stopped),
            Err(_) => Err(WorkerError::DeadlineExceeded),
        }
    }

    /// Whether a cycle is currently running on the thread.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }
}

/// The worker thread's side: the requests [`DeadlineWorker::run`] makes, one at a time.
#[derive(Debug)]
pub struct Inbox<T> {
    inbox: Receiver<oneshot::Sender<T>>,
    busy: Arc<AtomicBool>,
}

impl<T> Inbox<T> {
    /// Waits for the next request; `None` once the [`DeadlineWorker`] is dropped.
    pub fn next(&self) -> Option<Request<T>> {
        let reply = self.inbox.recv().ok()?;
        Some(Request {
            reply,
            busy: Arc::clone(&self.busy),
        })
    }
}

/// One [`DeadlineWorker::run`] call waiting for its cycle's result.
#[derive(Debug)]
pub struct Request<T> {
    reply: oneshot::Sender<T>,
    busy: Arc<AtomicBool>,
}

impl<T> Request<T> {
    /// Hands the result back and lets the worker take the next request.
    pub fn answer(self, result: T) {
        self.busy.store(false, Ordering::Release);
        // The requester may have given up at its deadline; that is fine.
        let _ = self.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test]
    async fn returns_results_in_order() {
        let w = DeadlineWorker::spawn("t", 0u32, |n| {
            *n += 1;
            *n
        })
        .unwrap();
        assert_eq!(w.run(Duration::from_secs(1)).await, Ok(1));
        assert_eq!(w.run(Duration::from_secs(1)).await, Ok(2));
    }

    #[tokio::test]
    async fn a_hung_cycle_times_out_then_blocks_nothing_and_spawns_nothing() {
        let release = Arc::new(AtomicBool::new(false));
        let cycles = Arc::new(AtomicU32::new(0));
        let (r, c) = (Arc::clone(&release), Arc::clone(&cycles));
        let w = DeadlineWorker::spawn("t", (), move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            7
        })
        .unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            w.run(Duration::from_millis(50)).await,
            Err(WorkerError::DeadlineExceeded)
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // While stuck, further requests fail at once and queue nothing.
        for _ in 0..5 {
            assert_eq!(w.run(Duration::from_secs(5)).await, Err(WorkerError::Busy));
        }
        assert_eq!(cycles.load(Ordering::SeqCst), 1);
        release.store(true, Ordering::SeqCst);
        while w.is_busy() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(w.run(Duration::from_secs(1)).await, Ok(7));
        assert_eq!(cycles.load(Ordering::SeqCst), 2);
    }
}
