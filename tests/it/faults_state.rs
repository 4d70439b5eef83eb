//! Hostile state and input (issue 12): the job state file with bad bytes (a multi-byte
//! character split by a torn write, random bytes, a NUL-filled tail after a crash, a file at
//! its bound) keeps its counts and still rotates; and bounded fuzzing of the two parsers that
//! read bytes gpulse does not control, the journal reader and the kernel log's Xid parser:
//! never a panic, bounded output, counts only from valid lines.

use std::path::Path;
use std::time::{Duration, SystemTime};

use gpulse::collect::kmsg::{self, KmsgXid};
use gpulse::evidence::journal;
use gpulse::model::{JobEnd, JobEvent, JobExit, JobLog, JobOutcome, JobStart, JobTotals};
use proptest::prelude::*;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// The two events of one run that exited with `code`.
fn run(n: u64, program: &str, code: i32) -> [JobEvent; 2] {
    let exit = JobExit::Code(code);
    [
        JobEvent::Started(JobStart {
            run: n,
            at: at(n * 100),
            program: program.to_owned(),
            pid: 1000 + n as u32,
        }),
        JobEvent::Finished(JobEnd {
            run: n,
            at: at(n * 100 + 30),
            program: program.to_owned(),
            pid: 1000 + n as u32,
            started_at: at(n * 100),
            outcome: JobOutcome::classify(exit, false, Some(0)),
            exit: Some(exit),
            duration: Some(Duration::from_secs(30)),
            oom_kills: Some(0),
            stop_signal: None,
            killed_after_grace: false,
        }),
    ]
}

/// The lines (each with its newline) a wrapper writes for runs `from..=to`, continuing `log`.
fn runs(log: &mut JobLog, from: u64, to: u64, program: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for n in from..=to {
        for e in run(n, program, (n % 2) as i32) {
            log.apply(e.clone(), 1000);
            let mut line = journal::encode_line(&e, &log.totals).unwrap().into_bytes();
            line.push(b'\n');
            out.push(line);
        }
    }
    out
}

fn totals_of(from: u64, to: u64) -> JobTotals {
    let mut log = JobLog::default();
    runs(&mut log, from, to, "p");
    log.totals
}

fn appended(dir: &Path, log: &mut JobLog, n: u64, max_bytes: u64) {
    for e in run(n, "vllm", 0) {
        log.apply(e.clone(), 1000);
        journal::append(
            dir,
            &journal::encode_line(&e, &log.totals).unwrap(),
            max_bytes,
        )
        .unwrap();
    }
}

#[test]
fn a_multibyte_character_split_by_a_torn_write_costs_only_its_line() {
    let mut log = JobLog::default();
    let mut lines = runs(&mut log, 1, 3, "café");
    // The torn write: the line stops between the two bytes of "é" (0xC3 0xA9).
    let torn = lines[2].clone();
    let cut = torn.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap() + 1;
    lines.insert(3, [&torn[..cut], b"\n"].concat());
    let bytes = lines.concat();
    assert!(std::str::from_utf8(&bytes).is_err());
    let restored = journal::restore(&bytes, 100);
    assert_eq!(restored.skipped, 1);
    assert_eq!(restored.log.totals, log.totals);
    assert_eq!(restored.log.totals.starts, 3);
    assert_eq!(restored.log.recent.len(), 6);
    assert_eq!(restored.unfinished, None);
}

#[test]
fn a_line_of_random_bytes_is_skipped() {
    let mut log = JobLog::default();
    let mut lines = runs(&mut log, 1, 2, "vllm");
    lines.insert(
        1,
        b"\xff\xfe\x00\x80\x81{\"schema\"\xc0\xaf\xed\xa0\x80\n".to_vec(),
    );
    lines.push(b"\x9c\x9d\x9e".to_vec()); // and a torn tail without its newline
    let restored = journal::restore(&lines.concat(), 100);
    assert_eq!(restored.skipped, 2);
    assert_eq!(restored.log.totals.starts, 2);
    assert_eq!(restored.log.totals, log.totals);
}

#[test]
fn a_nul_filled_tail_keeps_the_counts_and_the_next_line_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = JobLog::default();
    let mut bytes = runs(&mut log, 1, 4, "vllm").concat();
    // After a crash some filesystems show the size of writes whose data never landed: zeros.
    bytes.extend(std::iter::repeat_n(0u8, 3000));
    std::fs::write(journal::path(dir.path()), &bytes).unwrap();
    let restored = journal::restore(&journal::read(dir.path(), 1 << 20).unwrap(), 100);
    assert_eq!(
        restored.skipped, 1,
        "the zeroed tail is one unreadable line"
    );
    assert_eq!(restored.log.totals.starts, 4);

    let mut log = restored.log;
    appended(dir.path(), &mut log, 5, 1 << 20);
    let restored = journal::restore(&journal::read(dir.path(), 1 << 20).unwrap(), 100);
    assert_eq!(restored.skipped, 1);
    assert_eq!(restored.log.totals.starts, 5);
    assert_eq!(restored.log.recent.last().map(JobEvent::run), Some(5));
}

#[test]
fn a_file_at_its_bound_with_bad_bytes_rotates_into_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let max = 16 * 1024u64;
    let mut log = JobLog::default();
    let mut bytes = Vec::new();
    let mut n = 0;
    // Good runs, each pair of lines followed by a different kind of bad line.
    let bad: [&[u8]; 3] = [
        b"{\"schema\":\"gpulse.job-state/v1\",\"ev\xc3\n",
        b"\xff\x00\xfe\n",
        b"}{\n",
    ];
    while bytes.len() + 1000 < max as usize {
        n += 1;
        bytes.extend(runs(&mut log, n, n, "vllm").concat());
        bytes.extend_from_slice(bad[n as usize % 3]);
    }
    bytes.resize(max as usize - 10, 0); // and a zeroed tail up to the bound
    std::fs::write(journal::path(dir.path()), &bytes).unwrap();

    let restored = journal::restore(&journal::read(dir.path(), max).unwrap(), 1000);
    assert_eq!(restored.log.totals.starts, n);
    let mut log = restored.log;
    appended(dir.path(), &mut log, n + 1, max);

    let rotated = std::fs::read(journal::path(dir.path())).unwrap();
    // Half of the bound for the kept lines and run n + 1's start, then its end appended.
    assert!(
        rotated.len() as u64 <= max / 2 + 1024,
        "not rotated: {}",
        rotated.len()
    );
    assert!(
        std::str::from_utf8(&rotated).is_ok(),
        "the rotated file is text"
    );
    let restored = journal::restore(&rotated, 1000);
    assert_eq!(restored.skipped, 0, "only valid lines are copied");
    assert_eq!(restored.log.totals.starts, n + 1);
    assert_eq!(restored.log.totals, log.totals);
    assert!(!dir.path().join("jobs.jsonl.tmp").exists());
}

#[test]
fn a_file_past_its_bound_is_read_from_its_newest_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = JobLog::default();
    let bytes = runs(&mut log, 1, 200, "vllm").concat();
    std::fs::write(journal::path(dir.path()), &bytes).unwrap();
    let limit = 16 * 1024;
    let read = journal::read(dir.path(), limit).unwrap();
    assert!(read.len() as u64 <= limit);
    let restored = journal::restore(&read, 1000);
    assert_eq!(
        restored.skipped, 0,
        "the cut first line is dropped, not skipped"
    );
    assert_eq!(restored.log.totals, log.totals);
}

#[test]
fn impossible_totals_are_corruption_that_parses_and_are_skipped() {
    let mut log = JobLog::default();
    let good = runs(&mut log, 1, 2, "vllm").concat();
    // Run 3's end, the line whose totals would be restored.
    let last = String::from_utf8(runs(&mut log.clone(), 3, 3, "vllm").pop().unwrap()).unwrap();
    for (from, to) in [
        ("\"starts\":3", "\"starts\":18446744073709551615"),
        ("\"starts\":3", "\"starts\":0"),
        (
            "\"duration_sum_seconds\":90.0",
            "\"duration_sum_seconds\":-1.0",
        ),
    ] {
        assert!(last.contains(from), "{last}");
        let bytes = [good.clone(), last.replace(from, to).into_bytes()].concat();
        let restored = journal::restore(&bytes, 100);
        assert_eq!(restored.skipped, 1, "{to}");
        assert_eq!(restored.log.totals.starts, 2, "{to}");
    }
}

// ------------------------------------------------------------------------------ fuzzing

/// A valid journal of `n` runs, as lines.
fn journal_lines(n: u64) -> Vec<Vec<u8>> {
    runs(&mut JobLog::default(), 1, n, "python3")
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 0..12)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 0usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(line: &mut Vec<u8>, m: &Mutation) {
    if line.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, b) => {
            let i = i % line.len();
            line[i] ^= b | 1;
        }
        Mutation::Insert(i, bytes) => {
            let i = i % line.len();
            line.splice(i..i, bytes.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let i = i % line.len();
            let end = (i + n).min(line.len());
            line.drain(i..end);
        }
        Mutation::Truncate(i) => line.truncate(i % line.len()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_journal_reader_takes_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let restored = journal::restore(&bytes, 16);
        prop_assert!(restored.log.recent.len() <= 16);
        prop_assert!(restored.skipped <= bytes.split(|b| *b == b'\n').count());
        // Random bytes are never a state line: nothing is counted from them.
        prop_assert_eq!(restored.log.totals, JobTotals::default());
    }

    #[test]
    fn the_journal_reader_counts_only_valid_lines_of_a_mutated_journal(
        n in 2u64..12,
        mutations in proptest::collection::vec((any::<usize>(), mutation()), 1..8),
    ) {
        let mut lines = journal_lines(n);
        let total = lines.len();
        // Mutate any line but the last, whose totals must then be the ones restored. The
        // newline stays, so a mutated line cannot swallow the last one.
        for (which, m) in &mutations {
            let line = &mut lines[which % (total - 1)];
            line.pop();
            mutate(line, m);
            line.push(b'\n');
        }
        let bytes = lines.concat();
        let restored = journal::restore(&bytes, 1000);
        prop_assert_eq!(&restored.log.totals, &totals_of(1, n));
        prop_assert!(restored.log.recent.len() + restored.skipped <= bytes.split(|b| *b == b'\n').count());

        // And the file rotates from any of it into a file of valid lines only.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(journal::path(dir.path()), &bytes).unwrap();
        let max = bytes.len() as u64; // the next line passes the bound
        let mut log = restored.log;
        appended(dir.path(), &mut log, n + 1, max);
        let after = journal::read(dir.path(), 1 << 20).unwrap();
        prop_assert!(after.len() as u64 <= max);
        let again = journal::restore(&after, 1000);
        prop_assert_eq!(again.skipped, 0);
        prop_assert_eq!(again.log.totals.starts, n + 1);
    }
}

/// A real-looking kernel log Xid line.
fn xid_line() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("6,1234,5678901,-;".to_owned()),
            Just("[  812.345678] ".to_owned())
        ],
        0u32..0x10000,
        0u8..=255,
        0u8..32,
        1u64..200,
        0u32..100_000,
        "[a-zA-Z0-9 ,._-]{0,80}",
    )
        .prop_map(|(prefix, domain, bus, dev, xid, pid, rest)| {
            format!(
                "{prefix}NVRM: Xid (PCI:{domain:04x}:{bus:02x}:{dev:02x}): {xid}, pid={pid}, {rest}"
            )
        })
}

fn bounded(parsed: &Option<KmsgXid>) -> bool {
    parsed
        .as_ref()
        .is_none_or(|p| p.pci_bus_id.len() == 14 && p.detail.chars().count() <= 512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_xid_parser_takes_any_text(line in ".{0,300}") {
        let parsed = kmsg::parse_xid_line(&line);
        prop_assert!(bounded(&parsed));
    }

    #[test]
    fn the_xid_parser_takes_any_bytes(record in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(bounded(&kmsg::parse_xid_record(&record)));
    }

    #[test]
    fn the_xid_parser_reads_real_lines_and_survives_their_mutations(
        line in xid_line(),
        mutations in proptest::collection::vec(mutation(), 0..6),
    ) {
        let parsed = kmsg::parse_xid_line(&line);
        prop_assert!(parsed.is_some(), "{}", line);
        let mut bytes = line.into_bytes();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        prop_assert!(bounded(&kmsg::parse_xid_record(&bytes)));
    }

    #[test]
    fn the_xid_parser_bounds_very_long_lines(
        line in xid_line(),
        filler in prop_oneof![Just(b'x'), Just(b':'), Just(b'0'), Just(b')'), Just(0xffu8)],
        len in 4096usize..200_000,
    ) {
        // Long detail, a long run inside the bus id, a long code.
        let mut long_detail = line.clone().into_bytes();
        long_detail.resize(len, filler);
        let parsed = kmsg::parse_xid_record(&long_detail);
        prop_assert!(bounded(&parsed));
        let mut long_id = b"NVRM: Xid (PCI:".to_vec();
        long_id.resize(len, filler);
        long_id.extend_from_slice(b"): 79, pid=1");
        prop_assert!(bounded(&kmsg::parse_xid_record(&long_id)));
        prop_assert!(bounded(&kmsg::parse_xid_line(&String::from_utf8_lossy(&long_id))));
        let long_code = format!("NVRM: Xid (PCI:0000:3b:00): {}, pid=1", "9".repeat(len));
        prop_assert_eq!(kmsg::parse_xid_line(&long_code), None);
    }
}
