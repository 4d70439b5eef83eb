//! When one GPU's per-link NVLink error counters must be read again: the GPU's four counter
//! totals (NVML field values, read each cycle in the call that reads the other fields) stand
//! in for the 4 × links per-link calls while nothing moved.
//!
//! A pure decision ([`reread`]) over what the last per-link read saw, so every reason to read
//! again is unit-tested without NVML; `read.rs` makes the calls.

use std::time::{Duration, Instant};

use crate::model::NvLinkReadings;

/// How old the per-link counters may get while the totals stand still. A driver whose totals
/// did not cover every link (or lagged behind one) would otherwise hide that link's errors
/// for as long as the totals do not move; reading every link this often bounds the staleness
/// (a counter is at most this old) at 4 × links calls per GPU every 10 s.
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
    /// The readings, link states included.
    links: Vec<NvLinkReadings>,
}

impl NvLinkCache {
    pub(super) fn new(
        uuid: &str,
        read_at: Instant,
        totals: Option<Totals>,
        definite: bool,
        links: Vec<NvLinkReadings>,
    ) -> Self {
        Self {
            uuid: uuid.to_owned(),
            read_at,
            totals,
            definite,
            links,
        }
    }

    /// The cached readings.
    pub(super) fn links(&self) -> &[NvLinkReadings] {
        &self.links
    }
}

/// Why the per-link counters are read this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reread {
    /// Never read for this GPU (or another GPU is at its index now).
    First,
    /// A total did not answer: the totals cannot tell whether a link's counter moved.
    NoTotals,
    /// A total differs from the last read's, either way (a decrease: counters were reset).
    TotalsMoved,
    /// A link appeared, vanished, went up or went down.
    LinksChanged,
    /// A per-link call failed transiently last time.
    NotDefinite,
    /// The last read is [`NVLINK_RECHECK`] old.
    Recheck,
}

/// Whether GPU `uuid`'s per-link counters must be read now, given `cache` (the last read),
/// this cycle's `totals` and link `states` (`(link, active)`, read every cycle) at `now`;
/// `None`: the cached counters still hold.
pub(super) fn reread(
    cache: Option<&NvLinkCache>,
    uuid: &str,
    totals: Option<Totals>,
    states: &[(u32, bool)],
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
    let same_links = cache.links.len() == states.len()
        && cache
            .links
            .iter()
            .zip(states)
            .all(|(l, (link, active))| l.link == *link && l.active == *active);
    if !same_links {
        return Some(Reread::LinksChanged);
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
            vec![link(0, true), link(1, false)],
        )
    }

    const STATES: [(u32, bool); 2] = [(0, true), (1, false)];

    #[test]
    fn nothing_moved_reuses_the_cache_until_the_recheck() {
        let at = Instant::now();
        let c = cache(at);
        let totals = Some([1, 2, 3, 4]);
        assert_eq!(reread(Some(&c), UUID, totals, &STATES, at), None);
        let just_before = at + NVLINK_RECHECK - Duration::from_millis(1);
        assert_eq!(reread(Some(&c), UUID, totals, &STATES, just_before), None);
        assert_eq!(
            reread(Some(&c), UUID, totals, &STATES, at + NVLINK_RECHECK),
            Some(Reread::Recheck)
        );
        assert_eq!(c.links(), [link(0, true), link(1, false)]);
    }

    #[test]
    fn no_cache_or_another_gpu_reads_every_link() {
        let now = Instant::now();
        let totals = Some([1, 2, 3, 4]);
        assert_eq!(
            reread(None, UUID, totals, &STATES, now),
            Some(Reread::First)
        );
        assert_eq!(
            reread(Some(&cache(now)), "GPU-2", totals, &STATES, now),
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
                    reread(Some(&c), UUID, Some(totals), &STATES, now),
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
            reread(Some(&c), UUID, None, &STATES, now),
            Some(Reread::NoTotals)
        );
        // A cache read without totals is never trusted once they answer.
        let without = NvLinkCache::new(UUID, now, None, true, vec![link(0, true)]);
        assert_eq!(
            reread(Some(&without), UUID, Some([0; 4]), &[(0, true)], now),
            Some(Reread::TotalsMoved)
        );
    }

    #[test]
    fn a_link_changing_state_or_count_reads_every_link() {
        let now = Instant::now();
        let c = cache(now);
        let totals = Some([1, 2, 3, 4]);
        for states in [
            &[(0, true), (1, true)][..],
            &[(0, false), (1, false)],
            &[(0, true)],
            &[(0, true), (1, false), (2, true)],
            &[(0, true), (2, false)],
            &[],
        ] {
            assert_eq!(
                reread(Some(&c), UUID, totals, states, now),
                Some(Reread::LinksChanged),
                "{states:?}"
            );
        }
    }

    #[test]
    fn a_transient_per_link_failure_is_asked_again() {
        let now = Instant::now();
        let mut c = cache(now);
        c.definite = false;
        assert_eq!(
            reread(Some(&c), UUID, Some([1, 2, 3, 4]), &STATES, now),
            Some(Reread::NotDefinite)
        );
    }

    #[test]
    fn a_gpu_without_links_has_nothing_to_read_again() {
        let now = Instant::now();
        let c = NvLinkCache::new(UUID, now, Some([0; 4]), true, Vec::new());
        assert_eq!(reread(Some(&c), UUID, Some([0; 4]), &[], now), None);
    }
}
