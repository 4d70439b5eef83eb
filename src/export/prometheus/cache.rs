//! The `/metrics` body cache: one rendered body per format (Prometheus text, OpenMetrics),
//! plus its gzip, reused by every scraper until what the body shows changes.
//!
//! A body shows two inputs: the store's latest snapshot and the export counters
//! ([`crate::export::ExportStats`]); nothing in it is computed from the clock at scrape time.
//! The key is therefore the snapshot's identity (the store publishes every change as a new
//! `Arc`) and the export counters' generation (bumped on every recorded push). A scrape whose
//! key differs renders afresh, so no scrape ever sees values older than the latest snapshot.
//!
//! The snapshot is held as a `Weak`: its contents are freed when the store moves on, while
//! its allocation (and so its address) stays taken, so a later snapshot can never compare
//! equal by reuse of the address.

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::store::Snapshot;

/// gzip level: fast (1 of 9). A 64-GPU body shrinks to about a tenth at this level already;
/// higher levels cost several times the CPU for a few percent.
pub const GZIP_LEVEL: u32 = 1;

/// What a body was rendered from: the snapshot's identity and the export counters' generation.
#[derive(Debug, Clone)]
pub struct Key {
    snapshot: Weak<Snapshot>,
    exports: u64,
}

impl Key {
    pub fn new(snapshot: &Arc<Snapshot>, exports: u64) -> Self {
        Self {
            snapshot: Arc::downgrade(snapshot),
            exports,
        }
    }

    /// Whether a body rendered for `self` shows exactly `snapshot` and these export counters.
    pub fn matches(&self, snapshot: &Arc<Snapshot>, exports: u64) -> bool {
        std::ptr::eq(self.snapshot.as_ptr(), Arc::as_ptr(snapshot)) && self.exports == exports
    }
}

/// A body ready to send.
#[derive(Debug, Clone)]
pub struct Served {
    pub body: Bytes,
    /// `body` is gzip-compressed (send `Content-Encoding: gzip`).
    pub gzip: bool,
}

#[derive(Debug)]
struct Entry {
    key: Key,
    plain: Bytes,
    /// Compressed on the first request that accepts gzip, then kept with `plain`.
    gzip: Option<Bytes>,
}

/// One slot per format; each holds the latest body and its gzip. Bounded by construction.
#[derive(Debug, Default)]
pub struct RenderCache {
    /// Index 0: Prometheus text; 1: OpenMetrics.
    slots: [Mutex<Option<Entry>>; 2],
    renders: AtomicU64,
    compressions: AtomicU64,
}

impl RenderCache {
    /// The body for `snapshot` and export generation `exports` in the given format: the cached
    /// one when its key matches, else `render`'s (then cached). Concurrent scrapers of one
    /// format wait for one render rather than each doing it.
    pub fn get_or_render(
        &self,
        openmetrics: bool,
        snapshot: &Arc<Snapshot>,
        exports: u64,
        gzip: bool,
        render: impl FnOnce() -> Result<String, fmt::Error>,
    ) -> Result<Served, fmt::Error> {
        let mut slot = self.lock(openmetrics);
        let entry = match slot.take() {
            Some(entry) if entry.key.matches(snapshot, exports) => entry,
            _ => {
                let plain = Bytes::from(render()?);
                self.renders.fetch_add(1, Ordering::Relaxed);
                Entry {
                    key: Key::new(snapshot, exports),
                    plain,
                    gzip: None,
                }
            }
        };
        let entry = slot.insert(entry);
        if gzip && entry.gzip.is_none() {
            // A failed compression (it writes to memory, so it should not) serves plain.
            if let Ok(compressed) = compress(&entry.plain) {
                self.compressions.fetch_add(1, Ordering::Relaxed);
                entry.gzip = Some(Bytes::from(compressed));
            }
        }
        Ok(match (&entry.gzip, gzip) {
            (Some(body), true) => Served {
                body: body.clone(),
                gzip: true,
            },
            _ => Served {
                body: entry.plain.clone(),
                gzip: false,
            },
        })
    }

    /// Bodies rendered so far (a scrape served from the cache does not count).
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }

    /// Bodies compressed so far.
    pub fn compressions(&self) -> u64 {
        self.compressions.load(Ordering::Relaxed)
    }

    fn lock(&self, openmetrics: bool) -> MutexGuard<'_, Option<Entry>> {
        // A render that panicked left the slot empty or whole: either is safe to reuse.
        self.slots[usize::from(openmetrics)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// gzip of `body` at [`GZIP_LEVEL`].
pub fn compress(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        Compression::new(GZIP_LEVEL),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn gunzip(body: &[u8]) -> String {
        let mut plain = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut plain)
            .unwrap();
        plain
    }

    fn counting<'a>(
        calls: &'a std::cell::Cell<u32>,
        body: &'a str,
    ) -> impl FnOnce() -> Result<String, fmt::Error> + 'a {
        move || {
            calls.set(calls.get() + 1);
            Ok(body.to_owned())
        }
    }

    #[test]
    fn a_key_matches_only_the_same_snapshot_and_export_generation() {
        let a = Arc::new(Snapshot::default());
        let b = Arc::new(Snapshot::default());
        let key = Key::new(&a, 7);
        assert!(key.matches(&a, 7));
        assert!(
            key.matches(&Arc::clone(&a), 7),
            "a clone of the Arc is the same snapshot"
        );
        assert!(
            !key.matches(&b, 7),
            "an equal but newer snapshot is another snapshot"
        );
        assert!(!key.matches(&a, 8), "an export counter moved");
        // The old snapshot gone, its address cannot be handed to a new one while the key
        // holds it: a fresh snapshot never matches.
        drop(a);
        for _ in 0..64 {
            let fresh = Arc::new(Snapshot::default());
            assert!(!key.matches(&fresh, 7));
        }
    }

    #[test]
    fn one_render_per_key_and_format_and_one_compression_per_body() {
        let cache = RenderCache::default();
        let calls = std::cell::Cell::new(0);
        let snap = Arc::new(Snapshot::default());
        let first = cache
            .get_or_render(false, &snap, 0, false, counting(&calls, "a 1\n"))
            .unwrap();
        let again = cache
            .get_or_render(false, &snap, 0, false, counting(&calls, "stale\n"))
            .unwrap();
        assert_eq!((calls.get(), cache.renders()), (1, 1));
        assert_eq!(first.body, again.body);
        assert!(!again.gzip);

        // gzip: compressed once, decodes to the plain body.
        let zipped = cache
            .get_or_render(false, &snap, 0, true, counting(&calls, "x"))
            .unwrap();
        cache
            .get_or_render(false, &snap, 0, true, counting(&calls, "x"))
            .unwrap();
        assert!(zipped.gzip);
        assert_eq!((calls.get(), cache.compressions()), (1, 1));
        assert_eq!(gunzip(&zipped.body), "a 1\n");

        // The other format has its own slot.
        let om = cache
            .get_or_render(true, &snap, 0, false, counting(&calls, "om\n# EOF\n"))
            .unwrap();
        assert_eq!(&om.body[..], b"om\n# EOF\n");
        assert_eq!(calls.get(), 2);

        // A new snapshot, or moved export counters, render again; the gzip goes with the body.
        let next = Arc::new(Snapshot::default());
        let fresh = cache
            .get_or_render(false, &next, 0, true, counting(&calls, "a 2\n"))
            .unwrap();
        assert_eq!(calls.get(), 3);
        assert_eq!(gunzip(&fresh.body), "a 2\n");
        let moved = cache
            .get_or_render(false, &next, 1, false, counting(&calls, "a 3\n"))
            .unwrap();
        assert_eq!(&moved.body[..], b"a 3\n");
        assert_eq!((calls.get(), cache.renders()), (4, 4));
    }

    #[test]
    fn a_failed_render_is_not_cached() {
        let cache = RenderCache::default();
        let snap = Arc::new(Snapshot::default());
        assert!(
            cache
                .get_or_render(false, &snap, 0, false, || Err(fmt::Error))
                .is_err()
        );
        let ok = cache
            .get_or_render(false, &snap, 0, false, || Ok("a 1\n".to_owned()))
            .unwrap();
        assert_eq!(&ok.body[..], b"a 1\n");
    }
}
