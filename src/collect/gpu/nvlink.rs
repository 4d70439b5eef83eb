//! When one GPU's per-link NVLink states and error counters must be read again: the GPU's
//! four counter totals (NVML field values, read each cycle in the call that reads the other
//! fields) and the agent's Xid count stand in for the 5 × links per-link calls while nothing
//! moved.
//!
//! A link that goes down shows first as an Xid (74, NVLink error) and usually as replay or
//! recovery errors, each of which reads every link in the next cycle; a state change that
//! shows neither is seen within [`NVLINK_RECHECK`].
//!
//! A pure decision ([`reread`]) over what the last per-link read saw, so every reason to read
//! again is unit-tested without NVML; `read.rs` makes the calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::NvLinkReadings;

/// How old the per-link states and counters may get while the totals stand still and no Xid
/// arrives. A driver whose totals did not cover every link (or lagged behind one), or a link
/// that drops without an error or an Xid, would otherwise stay hidden; reading every link this
/// often bounds the staleness (a reading is at most this old) at 5 × links calls per GPU every
/// 10 s.
pub(super) const NVLINK_RECHECK: Duration = Duration::from_secs(10);

/// A GPU's NVLink error-counter totals over all its links, in `NvLinkCounter::ALL` order
/// (replay, recovery, CRC flit, CRC data).
pub(super) type Totals = [u64; 4];

/// What the last per-link read of one GPU saw.
#[derive(Debug, Clone)]
pub(super) struct NvLinkCache {
    /// The GPU it belongs to; another UUID at the index reads every link again.
    uuid: String,
    read_at: Instant,
    /// The totals read in the same cycle, before the per-link calls; `None` when a total
    /// failed (then every cycle reads per link, as without the totals).
    totals: Option<Totals>,
    /// Whether every per-link answer was definite (a value, or a refusal that lasts): a
    /// transient failure is asked again next cycle.
    definite: bool,
    /// The readings, link states included; shared with the samples that report them.
    links: Arc<[NvLinkReadings]>,
}

impl NvLinkCache {
    pub(super) fn new(
        uuid: &str,
        read_at: Instant,
        totals: Option<Totals>,
        definite: bool,
        links: Arc<[NvLinkReadings]>,
    ) -> Self {
        Self {
            uuid: uuid.to_owned(),
            read_at,
            totals,
            definite,
            links,
        }
    }

    /// The cached readings, shared (no copy).
    pub(super) fn shared_links(&self) -> Arc<[NvLinkReadings]> {
        Arc::clone(&self.links)
    }
}

/// Why the per-link states and counters are read this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reread {
    /// Never read for this GPU (or another GPU is at its index now).
    First,
    /// A total did not answer: the totals cannot tell whether a link's counter moved.
    NoTotals,
    /// A total differs from the last read's, either way (a decrease: counters were reset).
    TotalsMoved,
    /// An Xid was recorded since the last cycle (any GPU, any source).
    Xid,
    /// A per-link call failed transiently last time.
    NotDefinite,
    /// The last read is [`NVLINK_RECHECK`] old.
    Recheck,
}

/// Whether GPU `uuid`'s per-link states and counters must be read now, given `cache` (the
/// last read), this cycle's `totals`, whether an Xid arrived since the last cycle, and `now`;
/// `None`: the cached readings still hold.
pub(super) fn reread(
    cache: Option<&NvLinkCache>,
    uuid: &str,
    totals: Option<Totals>,
    xid_news: bool,
    now: Instant,
) -> Option<Reread> {
    let Some(cache) = cache.filter(|c| c.uuid == uuid) else {
        return Some(Reread::First);
    };
    let Some(totals) = totals else {
        return Some(Reread::NoTotals);
    };
    if cache.totals != Some(totals) {
        return Some(Reread::TotalsMoved);
    }
    if xid_news {
        return Some(Reread::Xid);
    }
    if !cache.definite {
        return Some(Reread::NotDefinite);
    }
    if now.saturating_duration_since(cache.read_at) >= NVLINK_RECHECK {
        return Some(Reread::Recheck);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "GPU-1";

    fn link(link: u32, active: bool) -> NvLinkReadings {
        NvLinkReadings {
            link,
            active,
            errors: [Some(1), Some(2), Some(3), Some(4)],
        }
    }

    /// A cache read at `at` with totals `[1, 2, 3, 4]` and links 0 (up) and 1 (down).
    fn cache(at: Instant) -> NvLinkCache {
        NvLinkCache::new(
            UUID,
            at,
            Some([1, 2, 3, 4]),
            true,
            vec![link(0, true), link(1, false)].into(),
        )
    }

    #[test]
    fn nothing_moved_reuses_the_cache_until_the_recheck() {
        let at = Instant::now();
        let c = cache(at);
        let totals = Some([1, 2, 3, 4]);
        assert_eq!(reread(Some(&c), UUID, totals, false, at), None);
        let just_before = at + NVLINK_RECHECK - Duration::from_millis(1);
        assert_eq!(reread(Some(&c), UUID, totals, false, just_before), None);
        assert_eq!(
            reread(Some(&c), UUID, totals, false, at + NVLINK_RECHECK),
            Some(Reread::Recheck)
        );
        assert_eq!(*c.shared_links(), [link(0, true), link(1, false)]);
    }

    #[test]
    fn no_cache_or_another_gpu_reads_every_link() {
        let now = Instant::now();
        let totals = Some([1, 2, 3, 4]);
        assert_eq!(reread(None, UUID, totals, false, now), Some(Reread::First));
        assert_eq!(
            reread(Some(&cache(now)), "GPU-2", totals, false, now),
            Some(Reread::First)
        );
    }

    #[test]
    fn any_total_moving_either_way_reads_every_link() {
        let now = Instant::now();
        let c = cache(now);
        for i in 0..4 {
            for delta in [1i64, -1] {
                let mut totals = [1u64, 2, 3, 4];
                totals[i] = totals[i].checked_add_signed(delta).unwrap();
                assert_eq!(
                    reread(Some(&c), UUID, Some(totals), false, now),
                    Some(Reread::TotalsMoved),
                    "total {i} by {delta}"
                );
            }
        }
    }

    #[test]
    fn failed_totals_read_every_link_every_cycle() {
        let now = Instant::now();
        let c = cache(now);
        assert_eq!(
            reread(Some(&c), UUID, None, false, now),
            Some(Reread::NoTotals)
        );
        // A cache read without totals is never trusted once they answer.
        let without = NvLinkCache::new(UUID, now, None, true, vec![link(0, true)].into());
        assert_eq!(
            reread(Some(&without), UUID, Some([0; 4]), false, now),
            Some(Reread::TotalsMoved)
        );
    }

    #[test]
    fn an_xid_reads_every_link_whatever_else_holds() {
        let now = Instant::now();
        let c = cache(now);
        let totals = Some([1, 2, 3, 4]);
        assert_eq!(reread(Some(&c), UUID, totals, false, now), None);
        assert_eq!(reread(Some(&c), UUID, totals, true, now), Some(Reread::Xid));
        // Also where the last read found no link: one state call says whether that still holds.
        let none = NvLinkCache::new(UUID, now, Some([0; 4]), true, Arc::default());
        assert_eq!(
            reread(Some(&none), UUID, Some([0; 4]), true, now),
            Some(Reread::Xid)
        );
    }

    #[test]
    fn a_transient_per_link_failure_is_asked_again() {
        let now = Instant::now();
        let mut c = cache(now);
        c.definite = false;
        assert_eq!(
            reread(Some(&c), UUID, Some([1, 2, 3, 4]), false, now),
            Some(Reread::NotDefinite)
        );
    }

    #[test]
    fn a_gpu_without_links_has_nothing_to_read_again() {
        let now = Instant::now();
        let c = NvLinkCache::new(UUID, now, Some([0; 4]), true, Arc::default());
        assert_eq!(reread(Some(&c), UUID, Some([0; 4]), false, now), None);
    }
}
