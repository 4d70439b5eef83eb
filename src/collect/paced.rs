//! A dedicated OS thread that runs blocking cycles (NVML FFI, /proc and statfs reads) on its
//! own schedule and hands each finished cycle to the async runtime.
//!
//! Why not a runtime timer that asks the thread for each cycle (as this module's predecessor
//! did): an idle agent's cost is its wake-ups. A runtime tick wakes a worker up to three times per
//! cycle (tokio's timer wheel wakes at the start of the coarse slot holding the tick, then at
//! the tick; then the thread's answer arrives). Here the thread sleeps until its cycle is due
//! (one `recv_timeout`, which also ends the thread the moment the handle is dropped), runs it,
//! and leaves the result in a one-slot mailbox: the runtime wakes once per cycle, to store it.
//!
//! A hang costs one thread, never a second: at most one cycle is in flight. The runtime side
//! ([`super::PacedCollector::run`]) reports `deadline` when no cycle finished within
//! `interval + timeout` of the previous one, and every `interval` after that while the call
//! stays stuck, serving the last good sample. A late result is still delivered (unless a
//! newer one replaced it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

/// One cycle's result, with what the runner records about it.
#[derive(Debug)]
pub struct Finished<T> {
    pub result: T,
    /// How long the cycle ran on the thread.
    pub duration: Duration,
    pub finished_at: SystemTime,
}

/// The mailbox between the thread and the runtime: the newest unread cycle.
#[derive(Debug)]
struct Mailbox<T> {
    slot: Mutex<Option<Finished<T>>>,
    ready: Notify,
    /// When the cycle now running started; `None` between cycles.
    running_since: Mutex<Option<Instant>>,
    /// Set when the [`Paced`] handle is dropped; the thread ends at its next wake.
    stopped: AtomicBool,
}

/// The runtime's handle. Dropping it stops the thread (at once when it is waiting for its next
/// cycle, after the current cycle otherwise).
#[derive(Debug)]
pub struct Paced<T> {
    mailbox: Arc<Mailbox<T>>,
    /// The thread, unparked when the handle is dropped.
    thread: Thread,
}

impl<T> Drop for Paced<T> {
    fn drop(&mut self) {
        self.mailbox.stopped.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl<T: Send + 'static> Paced<T> {
    /// Starts a thread that runs `cycle` on `state` every `interval`, the first one at once.
    pub fn spawn<S, F>(
        thread_name: &str,
        interval: Duration,
        mut state: S,
        mut cycle: F,
    ) -> std::io::Result<Self>
    where
        S: Send + 'static,
        F: FnMut(&mut S) -> T + Send + 'static,
    {
        Self::spawn_serving(thread_name, interval, move |mut pacer| {
            while pacer.wait() {
                pacer.run(|| cycle(&mut state));
            }
        })
    }

    /// Starts the thread running `serve`, which alternates [`Pacer::wait`] and [`Pacer::run`]
    /// itself: for a cycle whose state borrows from a value on the thread's own stack (NVML
    /// GPM samples borrow the loaded NVML), which `spawn`'s owned state cannot hold.
    pub fn spawn_serving<F>(
        thread_name: &str,
        interval: Duration,
        serve: F,
    ) -> std::io::Result<Self>
    where
        F: FnOnce(Pacer<T>) + Send + 'static,
    {
        let mailbox = Arc::new(Mailbox {
            slot: Mutex::new(None),
            ready: Notify::new(),
            running_since: Mutex::new(None),
            stopped: AtomicBool::new(false),
        });
        let pacer = Pacer {
            mailbox: Arc::clone(&mailbox),
            interval,
            due: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || serve(pacer))?
            .thread()
            .clone();
        Ok(Self { mailbox, thread })
    }

    /// Waits for the next finished cycle (at once when one is waiting unread).
    pub async fn next(&self) -> Finished<T> {
        loop {
            // A cycle finished between two calls left a permit: `notified` returns at once.
            self.mailbox.ready.notified().await;
            if let Some(finished) = self.take() {
                return finished;
            }
        }
    }

    /// How long the cycle now running has been running; `None` between cycles.
    pub fn running_for(&self) -> Option<Duration> {
        let since = *self
            .mailbox
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        since.map(|since| since.elapsed())
    }

    fn take(&self) -> Option<Finished<T>> {
        self.mailbox
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The thread's side: when the next cycle is due, and where its result goes.
#[derive(Debug)]
pub struct Pacer<T> {
    mailbox: Arc<Mailbox<T>>,
    interval: Duration,
    /// When the next cycle starts.
    due: Instant,
}

impl<T> Pacer<T> {
    fn set_running_since(&self, since: Option<Instant>) {
        *self
            .mailbox
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = since;
    }

    /// Sleeps until the next cycle is due; false once the [`Paced`] handle is dropped. A
    /// plain park (a futex wait), the cheapest sleep std has; the handle's drop unparks it.
    pub fn wait(&mut self) -> bool {
        loop {
            if self.mailbox.stopped.load(Ordering::Acquire) {
                return false;
            }
            let left = self.due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            // May return early (a spurious wake, or the unpark): the loop looks again.
            std::thread::park_timeout(left);
        }
    }

    /// Runs one cycle, leaves its result for the runtime (replacing an unread one) and
    /// schedules the next: `interval` after this one was due, or at once when the cycle
    /// overran it (a slow cycle delays the schedule, never bursts to catch up).
    pub fn run(&mut self, cycle: impl FnOnce() -> T) {
        let started = Instant::now();
        self.set_running_since(Some(started));
        let result = cycle();
        self.set_running_since(None);
        let finished = Finished {
            result,
            duration: started.elapsed(),
            finished_at: SystemTime::now(),
        };
        *self
            .mailbox
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(finished);
        self.mailbox.ready.notify_one();
        self.due += self.interval;
        let now = Instant::now();
        if self.due < now {
            self.due = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    const SOON: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn cycles_run_on_the_threads_schedule_in_order() {
        let started = Instant::now();
        let paced = Paced::spawn("t", Duration::from_millis(50), 0u32, |n| {
            *n += 1;
            *n
        })
        .unwrap();
        for expected in 1..=3 {
            let finished = tokio::time::timeout(SOON, paced.next()).await.unwrap();
            assert_eq!(finished.result, expected);
        }
        // The first cycle runs at once, the next two 50 ms apart.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    }

    #[tokio::test]
    async fn an_unread_result_is_replaced_by_the_newer_one() {
        let paced = Paced::spawn("t", Duration::from_millis(10), 0u32, |n| {
            *n += 1;
            *n
        })
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let finished = tokio::time::timeout(SOON, paced.next()).await.unwrap();
        assert!(
            finished.result > 5,
            "an old cycle was kept: {}",
            finished.result
        );
    }

    #[tokio::test]
    async fn a_stuck_cycle_delays_the_next_and_starts_no_thread() {
        let release = Arc::new(AtomicBool::new(false));
        let cycles = Arc::new(AtomicU32::new(0));
        let (r, c) = (Arc::clone(&release), Arc::clone(&cycles));
        let paced = Paced::spawn("t", Duration::from_millis(10), (), move |_| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            while n == 1 && !r.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
        .unwrap();
        assert_eq!(paced.next().await.result, 0);
        // The second cycle is stuck: nothing arrives, and no third cycle starts.
        let waited = tokio::time::timeout(Duration::from_millis(200), paced.next()).await;
        assert!(waited.is_err());
        // It has been running for about those 200 ms, not since the previous result.
        let running = paced.running_for().unwrap();
        assert!(running >= Duration::from_millis(150), "{running:?}");
        assert!(running < Duration::from_secs(2), "{running:?}");
        assert_eq!(cycles.load(Ordering::SeqCst), 2);
        release.store(true, Ordering::SeqCst);
        // The late cycle is delivered (or, unread, replaced by the one right after it, which
        // starts at once since the schedule overran), and the schedule goes on from then.
        let late = tokio::time::timeout(SOON, paced.next()).await.unwrap();
        assert!(late.result >= 1);
        if late.result == 1 {
            assert!(
                late.duration >= Duration::from_millis(150),
                "{:?}",
                late.duration
            );
        }
        let next = tokio::time::timeout(SOON, paced.next()).await.unwrap();
        assert!(next.result > late.result);
    }

    #[test]
    fn dropping_the_handle_ends_a_waiting_thread_at_once() {
        let (done, ended) = std::sync::mpsc::channel();
        let paced = Paced::<u32>::spawn_serving("t", Duration::from_secs(3600), move |mut p| {
            while p.wait() {
                p.run(|| 1);
            }
            let _ = done.send(());
        })
        .unwrap();
        // The first cycle runs at once; the thread then waits an hour for the next.
        std::thread::sleep(Duration::from_millis(50));
        drop(paced);
        assert!(ended.recv_timeout(SOON).is_ok(), "the thread kept waiting");
    }
}
