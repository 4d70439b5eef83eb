//! The evidence ledger: minute buckets of what the score needs, kept for
//! `score.minute_retention` and rolled up into hours kept for `score.hour_retention`, in
//! memory as compact records ([`codec`]) and on disk in `agent.state_dir` ([`disk`]).
//!
//! * `account`: turns snapshots into the current minute's counts (deltas of the store's
//!   running totals, counter resets handled).
//! * `codec`: one bucket as bytes.
//! * `disk`: the crash-safe store (redb) and the writer thread.
//!
//! The ledger itself ([`Ledger`]) is plain bookkeeping: pushing a closed minute returns the
//! [`Changes`] to persist, so memory and disk stay the same whatever the disk does.

pub mod account;
pub mod codec;
pub mod disk;
pub mod keeper;

use std::collections::{HashMap, VecDeque};

use crate::model::{Bucket, Evidence, HOUR_SECONDS, LedgerStatus, MINUTE_SECONDS};

use codec::Names;

/// Names (probes, GPU UUIDs) the table holds; past it, new names are not recorded.
pub const MAX_NAMES: usize = 4096;

/// The probe-name and GPU-UUID table records refer to.
#[derive(Debug, Default, Clone)]
pub struct NameTable {
    names: Vec<String>,
    ids: HashMap<String, u32>,
    /// Names added since the last [`NameTable::take_new`].
    new: Vec<(u32, String)>,
    /// Names refused because the table was full.
    pub refused: u64,
}

impl NameTable {
    /// Puts back a name read from disk under its id (ids are dense from 0; a gap is filled
    /// with an empty name so later ids stay where they were).
    pub fn restore(&mut self, id: u32, name: String) {
        let at = id as usize;
        if at >= MAX_NAMES {
            return;
        }
        while self.names.len() <= at {
            self.names.push(String::new());
        }
        self.ids.insert(name.clone(), id);
        self.names[at] = name;
    }

    fn take_new(&mut self) -> Vec<(u32, String)> {
        std::mem::take(&mut self.new)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl Names for NameTable {
    fn id(&mut self, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        if self.names.len() >= MAX_NAMES {
            self.refused += 1;
            return None;
        }
        let id = u32::try_from(self.names.len()).ok()?;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        self.new.push((id, name.to_owned()));
        Some(id)
    }

    fn name(&self, id: u32) -> Option<&str> {
        self.names
            .get(id as usize)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
}

/// What a push changed, for the disk to apply in one transaction.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub names: Vec<(u32, String)>,
    pub minutes: Vec<(u64, Vec<u8>)>,
    pub delete_minutes: Vec<u64>,
    pub hours: Vec<(u64, Vec<u8>)>,
    pub delete_hours: Vec<u64>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Encoded buckets ordered by start.
type Records = VecDeque<(u64, Box<[u8]>)>;

/// The ledger: minute and hour records in memory, newest last.
#[derive(Debug, Clone)]
pub struct Ledger {
    minutes: Records,
    hours: Records,
    names: NameTable,
    minute_retention: u64,
    hour_retention: u64,
    /// Records that did not decode (skipped).
    pub undecodable: u64,
}

/// Finds `start` in records sorted by start: `Ok(index)` or `Err(insertion point)`.
fn find(records: &Records, start: u64) -> Result<usize, usize> {
    records.binary_search_by_key(&start, |(s, _)| *s)
}

impl Ledger {
    /// An empty ledger keeping minutes for `minute_retention` and hours for
    /// `hour_retention` seconds.
    pub fn new(minute_retention: u64, hour_retention: u64) -> Self {
        Self {
            minutes: VecDeque::new(),
            hours: VecDeque::new(),
            names: NameTable::default(),
            minute_retention: minute_retention.max(MINUTE_SECONDS),
            hour_retention,
            undecodable: 0,
        }
    }

    /// A ledger holding what the disk gave back (records in any order; names by id).
    pub fn restored(
        minute_retention: u64,
        hour_retention: u64,
        names: Vec<(u32, String)>,
        mut minutes: Vec<(u64, Vec<u8>)>,
        mut hours: Vec<(u64, Vec<u8>)>,
    ) -> Self {
        let mut ledger = Self::new(minute_retention, hour_retention);
        for (id, name) in names {
            ledger.names.restore(id, name);
        }
        minutes.sort_by_key(|(s, _)| *s);
        hours.sort_by_key(|(s, _)| *s);
        ledger.minutes = minutes
            .into_iter()
            .map(|(s, b)| (s, b.into_boxed_slice()))
            .collect();
        ledger.hours = hours
            .into_iter()
            .map(|(s, b)| (s, b.into_boxed_slice()))
            .collect();
        ledger
    }

    fn decode(&self, start: u64, span: u64, bytes: &[u8]) -> Option<Bucket> {
        codec::decode(bytes, start, span, &self.names)
    }

    /// Adds a closed minute (merged into a record of the same minute, as after a restart
    /// within one minute), rolls minutes past retention into hours, drops hours past theirs.
    /// Returns what to write.
    pub fn push_minute(&mut self, bucket: &Bucket) -> Changes {
        let mut changes = Changes::default();
        let start = bucket.start - bucket.start % MINUTE_SECONDS;
        let mut merged = Bucket::new(start, MINUTE_SECONDS);
        let at = find(&self.minutes, start);
        if let Ok(i) = at {
            let (_, bytes) = &self.minutes[i];
            match self.decode(start, MINUTE_SECONDS, bytes) {
                Some(old) => merged.merge(&old),
                None => self.undecodable += 1,
            }
        }
        merged.merge(bucket);
        merged.observed_seconds = merged.observed_seconds.min(MINUTE_SECONDS);
        let bytes = codec::encode(&merged, &mut self.names);
        changes.minutes.push((start, bytes.clone()));
        match at {
            Ok(i) => self.minutes[i].1 = bytes.into_boxed_slice(),
            Err(i) => self.minutes.insert(i, (start, bytes.into_boxed_slice())),
        }
        self.roll_up(&mut changes);
        changes.names = self.names.take_new();
        changes
    }

    /// Moves minutes older than the retention (relative to the newest minute) into hours.
    fn roll_up(&mut self, changes: &mut Changes) {
        let Some(newest) = self.minutes.back().map(|(s, _)| *s) else {
            return;
        };
        let cutoff = newest.saturating_sub(self.minute_retention);
        while self.minutes.front().is_some_and(|(s, _)| *s <= cutoff) {
            let Some((start, bytes)) = self.minutes.pop_front() else {
                break;
            };
            changes.delete_minutes.push(start);
            let Some(minute) = self.decode(start, MINUTE_SECONDS, &bytes) else {
                self.undecodable += 1;
                continue;
            };
            let hour = start - start % HOUR_SECONDS;
            let at = find(&self.hours, hour);
            let mut rolled = Bucket::new(hour, HOUR_SECONDS);
            if let Ok(i) = at
                && let Some(old) = self.decode(hour, HOUR_SECONDS, &self.hours[i].1)
            {
                rolled.merge(&old);
            }
            rolled.merge(&minute);
            let encoded = codec::encode(&rolled, &mut self.names);
            changes.hours.retain(|(s, _)| *s != hour);
            changes.hours.push((hour, encoded.clone()));
            match at {
                Ok(i) => self.hours[i].1 = encoded.into_boxed_slice(),
                Err(i) => self.hours.insert(i, (hour, encoded.into_boxed_slice())),
            }
        }
        let hour_cutoff = newest.saturating_sub(self.hour_retention);
        while self
            .hours
            .front()
            .is_some_and(|(s, _)| s.saturating_add(HOUR_SECONDS) <= hour_cutoff)
        {
            if let Some((start, _)) = self.hours.pop_front() {
                changes.delete_hours.push(start);
                changes.hours.retain(|(s, _)| *s != start);
            }
        }
    }

    /// The evidence of each window `[end − len, end)` in one pass over the minutes (hours
    /// only for windows that reach past them). `extra` (the open minute) is added to every
    /// window it falls in.
    pub fn evidence(&mut self, end: u64, lens: &[u64], extra: Option<&Bucket>) -> Vec<Evidence> {
        let mut out: Vec<Evidence> = lens.iter().map(|l| Evidence::empty(end, *l)).collect();
        let oldest_minute = self.minutes.front().map(|(s, _)| *s).unwrap_or(end);
        let longest = lens.iter().copied().max().unwrap_or(0);
        let from = end.saturating_sub(longest);
        let mut undecodable = 0;
        if from < oldest_minute {
            for (start, bytes) in self.hours.iter().filter(|(s, _)| *s + HOUR_SECONDS > from) {
                if *start >= oldest_minute {
                    break;
                }
                match codec::decode(bytes, *start, HOUR_SECONDS, &self.names) {
                    Some(b) => out.iter_mut().for_each(|e| {
                        e.add(&b);
                    }),
                    None => undecodable += 1,
                }
            }
        }
        let first = match find(&self.minutes, from) {
            Ok(i) | Err(i) => i,
        };
        for (start, bytes) in self.minutes.iter().skip(first) {
            if *start >= end {
                break;
            }
            match codec::decode(bytes, *start, MINUTE_SECONDS, &self.names) {
                Some(b) => out.iter_mut().for_each(|e| {
                    e.add(&b);
                }),
                None => undecodable += 1,
            }
        }
        if let Some(extra) = extra {
            out.iter_mut().for_each(|e| {
                e.add(extra);
            });
        }
        self.undecodable += undecodable;
        out
    }

    /// Every minute bucket, oldest first (decoded; for tests and reports).
    pub fn minutes(&self) -> impl Iterator<Item = Bucket> + '_ {
        self.minutes
            .iter()
            .filter_map(|(s, b)| self.decode(*s, MINUTE_SECONDS, b))
    }

    /// Sizes and counts, for the self-metrics.
    pub fn status(&self, persistent: bool, write_failures: u64) -> LedgerStatus {
        let bytes = |r: &Records| r.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        LedgerStatus {
            persistent,
            minutes: self.minutes.len() as u64,
            hours: self.hours.len() as u64,
            bytes: bytes(&self.minutes) + bytes(&self.hours),
            oldest: self.hours.front().or(self.minutes.front()).map(|(s, _)| *s),
            write_failures,
            undecodable: self.undecodable,
        }
    }
}

#[cfg(test)]
mod tests;
