//! Unit tests of the reporter: the chain in memory and in `state.redb`, across a reopen and a
//! key change, bounded by `max_reports`; on-demand reports bound to the head; paging.

use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::evidence::report::check_chain;
use crate::evidence::report::tests::snapshot;
use crate::model::Sample;

const END: u64 = 1_800_000_000;

fn store() -> Arc<Store> {
    let store = Store::new(NonZeroUsize::MIN, Vec::new());
    let snap = snapshot(END);
    if let Some(gpu) = &snap.gpu {
        store.publish(Sample::Gpu(gpu.as_ref().clone()));
    }
    if let Some(score) = &snap.score {
        store.set_score(score.as_ref().clone());
    }
    Arc::new(store)
}

fn config(dir: Option<&Path>, max_reports: usize) -> Config {
    let mut config = Config::default();
    config.agent.node_name = "node-1".to_owned();
    config.agent.state_dir = dir.map(|d| d.display().to_string()).unwrap_or_default();
    config.report.max_reports = max_reports;
    config
}

fn open(dir: Option<&Path>, max_reports: usize, store: Arc<Store>) -> Reporter {
    let db = dir.map(|d| StateDb::open(d).unwrap());
    let r = Reporter::open(&config(dir, max_reports), store, db, SystemTime::now());
    r.set_binary_sha256(Some("00".repeat(32)));
    r
}

fn verified(r: &Reporter) -> Vec<report::Verified> {
    let list = r.list(0, 200);
    list.reports
        .iter()
        .map(|e| report::verify(&r.get(e.seq).unwrap().unwrap(), None).unwrap())
        .collect()
}

#[test]
fn in_memory_the_chain_links_and_keeps_max_reports() {
    let store = store();
    let r = open(None, 3, Arc::clone(&store));
    assert!(store.snapshot().latest_report.is_none());
    for seq in 1..=5 {
        assert_eq!(r.append(SystemTime::now()).unwrap(), seq);
    }
    let list = r.list(0, 200);
    assert!(!list.persistent);
    let seqs: Vec<u64> = list.reports.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(list.head.as_ref().unwrap().seq, 5);
    let chain = check_chain(&verified(&r)).unwrap();
    assert_eq!((chain.first, chain.last), (3, 5));
    assert_eq!(
        chain.first_prev.as_deref(),
        Some(list.reports[0].prev_report_sha256.as_deref().unwrap())
    );
    assert_eq!(r.get(2).unwrap(), None);
    let latest = store.snapshot().latest_report.clone().unwrap();
    assert_eq!(latest.seq, 5);
    assert_eq!(latest.sha256, chain.head_sha256);
    assert_eq!(Some(latest.json.to_vec()), r.get(5).unwrap());
    // The listing's hash is the hash of the served bytes.
    let bytes = r.get(4).unwrap().unwrap();
    assert_eq!(list.reports[1].sha256, report::sha256_hex(&bytes));
}

#[test]
fn on_disk_the_chain_survives_a_reopen_and_a_new_key_starts_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = store();
    let first = open(Some(dir.path()), 10, Arc::clone(&store));
    for _ in 0..3 {
        first.append(SystemTime::now()).unwrap();
    }
    let head = first.list(0, 200).head.unwrap();
    let fingerprint = first.identity().public_key.unwrap().fingerprint;
    drop(first);
    let again = open(Some(dir.path()), 10, Arc::clone(&store));
    let identity = again.identity();
    assert_eq!(
        identity.public_key.as_ref().unwrap().fingerprint,
        fingerprint
    );
    assert!(identity.public_key.unwrap().persistent);
    assert_eq!(identity.chain.reports, 3);
    assert!(identity.chain.persistent);
    assert_eq!(again.list(0, 200).head.unwrap(), head);
    assert_eq!(again.append(SystemTime::now()).unwrap(), 4);
    let chain = check_chain(&verified(&again)).unwrap();
    assert_eq!((chain.first, chain.last, chain.first_prev), (1, 4, None));
    // An on-demand report is bound to the head and not chained.
    let nonce = "ab".repeat(20);
    let od = again.on_demand(ScoreWindow::H24, Some(&nonce)).unwrap();
    let od = report::verify(&od, None).unwrap();
    assert_eq!(od.fields.seq, 0);
    assert_eq!(od.fields.window, "24h");
    assert_eq!(od.fields.nonce.as_deref(), Some(nonce.as_str()));
    assert_eq!(
        od.fields.prev_report_sha256.as_deref(),
        Some(chain.head_sha256.as_str())
    );
    assert_eq!(again.list(0, 200).reports.len(), 4);
    drop(again);
    // Rotation: the key moved aside, a new one is made and its first report starts a chain.
    std::fs::rename(
        dir.path().join("report.key"),
        dir.path().join("report.key.old"),
    )
    .unwrap();
    let rotated = open(Some(dir.path()), 10, Arc::clone(&store));
    assert_ne!(
        rotated.identity().public_key.unwrap().fingerprint,
        fingerprint
    );
    assert_eq!(rotated.append(SystemTime::now()).unwrap(), 5);
    let all = verified(&rotated);
    let last = all.last().unwrap();
    assert_eq!(last.fields.prev_report_sha256, None);
    assert!(
        check_chain(&all)
            .unwrap_err()
            .contains("seq 5 starts a new chain")
    );
    assert!(check_chain(&all[4..]).is_ok());
    drop(rotated);
    // A lower max_reports drops the oldest rows at open.
    let small = open(Some(dir.path()), 2, Arc::clone(&store));
    let seqs: Vec<u64> = small.list(0, 200).reports.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [4, 5]);
    drop(small);
    let db = StateDb::open(dir.path()).unwrap();
    assert_eq!(read_one(&db, 3).unwrap(), None);
    assert!(read_one(&db, 4).unwrap().is_some());
}

#[test]
fn without_a_usable_key_nothing_is_signed_and_identity_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let store = store();
    drop(open(Some(dir.path()), 10, Arc::clone(&store)));
    let key = dir.path().join("report.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = open(Some(dir.path()), 10, store);
    assert!(!r.can_sign());
    let identity = r.identity();
    assert!(identity.public_key.is_none());
    assert!(identity.signing_error.unwrap().contains("0640"));
    assert!(
        r.on_demand(ScoreWindow::H1, None)
            .unwrap_err()
            .contains("cannot be signed")
    );
    assert!(r.append(SystemTime::now()).is_err());
}

#[test]
fn nothing_is_signed_before_a_score_or_the_binary_hash() {
    let empty = Arc::new(Store::new(NonZeroUsize::MIN, Vec::new()));
    let r = open(None, 10, empty);
    assert!(
        r.on_demand(ScoreWindow::H1, None)
            .unwrap_err()
            .contains("not ready")
    );
    let db = None;
    let unhashed = Reporter::open(&config(None, 10), store(), db, SystemTime::now());
    assert!(
        unhashed
            .on_demand(ScoreWindow::H1, None)
            .unwrap_err()
            .contains("starting")
    );
    assert_eq!(unhashed.identity().binary_sha256, None);
}

#[test]
fn the_listing_pages_by_seq() {
    let r = open(None, 10, store());
    for _ in 0..5 {
        r.append(SystemTime::now()).unwrap();
    }
    let page = r.list(0, 2);
    assert_eq!(
        page.reports.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(page.next_since, Some(2));
    let page = r.list(2, 2);
    assert_eq!(
        page.reports.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 4]
    );
    let page = r.list(4, 2);
    assert_eq!(page.reports.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
    assert_eq!(page.next_since, None);
    assert!(r.list(5, 2).reports.is_empty());
}

#[test]
fn boundaries_are_multiples_of_the_interval() {
    let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    let hour = Duration::from_secs(3600);
    assert_eq!(
        next_boundary(at(3_600_000 * 5 + 1_000), hour),
        (Duration::from_millis(3_599_000), 3600 * 6)
    );
    // Exactly on a boundary: the next one.
    assert_eq!(next_boundary(at(3_600_000), hour), (hour, 7200));
    let five = Duration::from_secs(5);
    assert_eq!(
        next_boundary(at(12_500), five),
        (Duration::from_millis(2_500), 15)
    );
}

#[test]
fn the_binary_hash_is_bounded() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"abc").unwrap();
    assert_eq!(
        file_sha256(file.path(), 3).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(
        file_sha256(file.path(), 2)
            .unwrap_err()
            .contains("larger than")
    );
    assert!(file_sha256(Path::new("/nonexistent/x"), 2).is_err());
}

#[test]
fn a_stored_row_that_does_not_parse_is_skipped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = store();
    let r = open(Some(dir.path()), 10, Arc::clone(&store));
    r.append(SystemTime::now()).unwrap();
    r.append(SystemTime::now()).unwrap();
    drop(r);
    {
        let db = StateDb::open(dir.path()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(REPORTS)
            .unwrap()
            .insert(1u64, b"garbage".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let r = open(Some(dir.path()), 10, store);
    let list = r.list(0, 200);
    assert_eq!(list.reports.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    assert_eq!(list.head.unwrap().seq, 2);
    assert_eq!(r.append(SystemTime::now()).unwrap(), 3);
    // The index read back equals the one made when signing.
    let fresh = r.list(0, 200).reports;
    drop(r);
    let again = open(Some(dir.path()), 10, self::store());
    assert_eq!(again.list(0, 200).reports, fresh);
}
