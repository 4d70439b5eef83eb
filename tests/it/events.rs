//! The event log end to end (issue 15): events exported as OTLP log records through a
//! receiver stopped and restarted mid-stream (each received once, bar a batch whose
//! acknowledgement was lost), the outbox surviving `kill -9` of the binary, the bound dropping
//! the oldest and counting them, `/v1/events` paging and its 400s, and `kill -9` during
//! appends leaving a readable log.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use gpulse::app::GpuSource;
use gpulse::config::{Config, HumanDuration};
use gpulse::export::otlp::OtlpProtocol;
use gpulse::model::{XidEvent, XidSource};

use crate::agent::{Agent, free_port};
use crate::otlp::{LogsBatch, LogsMode, LogsReceiver, any_text, log_attrs};

const XIDS: [u64; 4] = [13, 31, 79, 48];

fn ms(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(n))
}

/// An agent with nothing but the event log moving: no GPU or host collector, no score,
/// Xids recorded after 50 ms, retries from 100 ms to 400 ms.
fn quiet_config() -> Config {
    let mut c = Config::default();
    c.agent.node_name = "node-e".to_owned();
    c.gpu.enabled = false;
    c.host.enabled = false;
    c.score.enabled = false;
    c.health.kmsg_path = String::new();
    c.health.xid_dedup_window = ms(50);
    c.health.max_events = 4096;
    c.events.interval = ms(50);
    c.events.retry_initial = ms(100);
    c.events.retry_max = ms(400);
    c
}

/// The `n`-th generated Xid: one source, so no two are merged.
fn xid(n: u64) -> XidEvent {
    XidEvent {
        at: SystemTime::now(),
        gpu_index: Some((n % 4) as u32),
        uuid: format!("GPU-{}", n % 4),
        pci_bus_id: String::new(),
        xid: XIDS[(n % 4) as usize],
        sources: vec![XidSource::NvmlEvent],
        detail: format!("n={n}"),
    }
}

fn records(request: &ExportLogsServiceRequest) -> impl Iterator<Item = &LogRecord> {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
}

fn seq_of(record: &LogRecord) -> u64 {
    log_attrs(&record.attributes)["gpulse.event.seq"]
        .parse()
        .unwrap()
}

/// Every receipt of each sequence number: `(batch index, acknowledged)`.
fn receipts(batches: &[LogsBatch]) -> BTreeMap<u64, Vec<(usize, bool)>> {
    let mut out: BTreeMap<u64, Vec<(usize, bool)>> = BTreeMap::new();
    for (i, b) in batches.iter().enumerate() {
        for r in records(&b.request) {
            out.entry(seq_of(r)).or_default().push((i, b.acked));
        }
    }
    out
}

/// The Xid events among the batches, by sequence number.
fn xid_seqs(batches: &[LogsBatch]) -> std::collections::BTreeSet<u64> {
    batches
        .iter()
        .flat_map(|b| records(&b.request))
        .filter(|r| log_attrs(&r.attributes)["gpulse.event.kind"] == "xid")
        .map(seq_of)
        .collect()
}

async fn check_export_through_a_receiver_restart(protocol: OtlpProtocol) {
    let mut receiver = LogsReceiver::start(protocol, None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = quiet_config();
    config.agent.state_dir = dir.path().display().to_string();
    config.events.export_batch = 40;
    let store = Arc::new(gpulse::app::new_store(&config, false));
    let agent = crate::inproc::start_with_store(
        config,
        GpuSource::Nvml,
        Some(receiver.settings()),
        Some(Arc::clone(&store)),
    )
    .await;
    // ~250 Xids a second for 3 s.
    let generator = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(3) {
                store.record_xid(xid(n));
                n += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The next batch arrives but its acknowledgement is lost; then the receiver is down.
    receiver.sink.set_mode(LogsMode::LoseAck);
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.sink.mode() == LogsMode::LoseAck {
        assert!(Instant::now() < deadline, "no batch arrived to lose");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let down = agent.get_json("/v1/events?limit=1").await;
    assert!(
        down["log"]["outbox"]["pending"].as_u64().unwrap() > 0,
        "events wait while the receiver is down: {down}"
    );
    receiver.restart().await;
    let generated = generator.await.unwrap();

    // Everything recorded arrives: each Xid once, nothing left pending.
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let page = agent.get_json("/v1/events?limit=1").await;
        let log = &page["log"];
        let got = xid_seqs(&receiver.sink.batches()).len() as u64;
        if got == generated && log["outbox"]["pending"] == 0 {
            break log["last_seq"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {generated} Xids received; log: {log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let batches = receiver.sink.batches();
    let receipts = receipts(&batches);
    let unacked: Vec<usize> = (0..batches.len()).filter(|i| !batches[*i].acked).collect();
    assert_eq!(unacked.len(), 1, "one batch lost its acknowledgement");
    let mut repeated = 0;
    for seq in 1..=last {
        let got = receipts
            .get(&seq)
            .unwrap_or_else(|| panic!("seq {seq} never arrived"));
        let acked = got.iter().filter(|(_, acked)| *acked).count();
        assert_eq!(acked, 1, "seq {seq}: {got:?}");
        // A second receipt only where the first was the batch whose answer was lost.
        for (batch, was_acked) in &got[..got.len() - 1] {
            assert!(!was_acked && unacked.contains(batch), "seq {seq}: {got:?}");
        }
        repeated += usize::from(got.len() > 1);
    }
    assert!(repeated > 0, "the unacknowledged batch is sent again");

    // One record, mapped: its own time, when it was recorded, severity, name, body, resource.
    let (record, resource) = batches
        .iter()
        .filter(|b| b.acked)
        .flat_map(|b| &b.request.resource_logs)
        .flat_map(|r| {
            r.scope_logs
                .iter()
                .flat_map(|s| &s.log_records)
                .map(move |l| (l, &r.resource))
        })
        .find(|(l, _)| {
            log_attrs(&l.attributes)
                .get("gpulse.gpu.xid")
                .map(String::as_str)
                == Some("79")
        })
        .unwrap();
    let a = log_attrs(&record.attributes);
    assert_eq!(a["gpulse.event.kind"], "xid");
    assert_eq!(a["gpulse.xid.severity"], "unhealthy");
    assert_eq!(record.severity_number, 17, "ERROR");
    assert_eq!(record.severity_text, "ERROR");
    assert_eq!(record.event_name, "gpulse.xid");
    assert!(
        any_text(&record.body).starts_with("Xid 79 on GPU"),
        "{record:?}"
    );
    assert!(record.time_unix_nano > 0 && record.observed_time_unix_nano >= record.time_unix_nano);
    let resource = log_attrs(&resource.as_ref().unwrap().attributes);
    assert_eq!(resource["host.name"], "node-e");
    assert_eq!(resource["service.name"], "gpulse");
    let metrics = agent.get("/metrics").await;
    assert!(
        metrics.contains("gpulse_events_outbox_pending 0.0\n")
            && metrics.contains("gpulse_exports_total{exporter=\"otlp_logs\"}")
            && metrics.contains("gpulse_events_dropped_total 0.0\n"),
        "{metrics}"
    );
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("gpulse_export_failures_total{exporter=\"otlp_logs\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failures >= 1.0, "{metrics}");
    eprintln!(
        "{protocol:?}: {generated} Xids, {last} events, {} batches ({} unacknowledged), \
         {repeated} events received twice (the batch whose acknowledgement was lost), \
         {failures} failed exports",
        batches.len(),
        unacked.len()
    );
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_grpc_receiver_restarted_mid_stream_once_each() {
    check_export_through_a_receiver_restart(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_an_http_receiver_restarted_mid_stream_once_each() {
    check_export_through_a_receiver_restart(OtlpProtocol::HttpProtobuf).await;
}

/// The `events` figures of `/v1/events` from the binary.
fn log_of(agent: &Agent) -> serde_json::Value {
    let body = agent.get_ok("/v1/events?limit=1");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["log"].clone()
}

fn kmsg_xids(path: &std::path::Path, from: u64, count: u64) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    for n in from..from + count {
        writeln!(
            file,
            "3,{n},5678901,-;NVRM: Xid (PCI:0000:3b:00): 79, pid={n}, name=python, fell off the bus."
        )
        .unwrap();
    }
}

#[test]
fn events_queued_when_gpulse_is_killed_arrive_after_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = dir.path().join("kmsg.log");
    std::fs::write(&kmsg, "").unwrap();
    let port = free_port();
    let state = dir.path().join("state");
    let env = [
        ("GPULSE_AGENT_STATE_DIR", state.to_str().unwrap().to_owned()),
        ("GPULSE_HEALTH_KMSG_PATH", kmsg.to_str().unwrap().to_owned()),
        (
            "GPULSE_GPU_NVML_LIBRARY",
            "/nonexistent/libnvidia-ml.so.1".to_owned(),
        ),
        ("GPULSE_HEALTH_XID_DEDUP_WINDOW", "100ms".to_owned()),
        ("GPULSE_EVENTS_INTERVAL", "100ms".to_owned()),
        ("GPULSE_EVENTS_RETRY_INITIAL", "100ms".to_owned()),
        ("GPULSE_EVENTS_RETRY_MAX", "300ms".to_owned()),
        ("GPULSE_SCORE_ENABLED", "false".to_owned()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "3600000".to_owned()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000".to_owned()),
    ];
    // The receiver is down: 30 Xids are recorded and wait in the outbox.
    let agent = Agent::start(std::iter::empty::<&str>(), env.clone());
    kmsg_xids(&kmsg, 0, 30);
    let deadline = Instant::now() + Duration::from_secs(20);
    let queued = loop {
        let log = log_of(&agent);
        let xids = serde_json::from_str::<serde_json::Value>(
            &agent.get_ok("/v1/events?since=0&limit=1000"),
        )
        .unwrap()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "xid")
            .count();
        if xids == 30 && log["outbox"]["pending"] == log["events"] {
            break log["last_seq"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{xids} Xids: {log}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        agent
            .get_ok("/metrics")
            .contains("gpulse_events_persistent 1"),
        "{}",
        agent.stderr()
    );
    let pid = rustix::process::Pid::from_raw(agent.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    drop(agent);

    // The receiver comes up on that port, then gpulse again on the same state.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let receiver = runtime.block_on(LogsReceiver::start(OtlpProtocol::HttpProtobuf, Some(addr)));
    let agent = Agent::start(std::iter::empty::<&str>(), env);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let receipts = receipts(&receiver.sink.batches());
        if (1..=queued).all(|seq| receipts.contains_key(&seq)) {
            for seq in 1..=queued {
                assert_eq!(receipts[&seq].len(), 1, "seq {seq} arrived more than once");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {queued} queued events arrived\n{}",
            (1..=queued).filter(|s| receipts.contains_key(s)).count(),
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Numbering goes on after the queued events; new ones are sent too.
    kmsg_xids(&kmsg, 100, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let xids = loop {
        let xids = xid_seqs(&receiver.sink.batches());
        if xids.len() == 31 {
            break xids;
        }
        assert!(Instant::now() < deadline, "{xids:?}\n{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(*xids.last().unwrap() > queued, "{xids:?}");
    // The receiver has the batch a moment before the agent hears its answer and clears it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_of(&agent)["outbox"]["pending"] != 0 {
        assert!(Instant::now() < deadline, "{}", log_of(&agent));
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "kill -9 with {queued} events queued (30 Xids); after the restart all {queued} arrived once, \
         and the new Xid as seq {}",
        xids.last().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_bound_the_oldest_events_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quiet_config();
    config.agent.state_dir = dir.path().display().to_string();
    config.events.max_disk_bytes = 4096;
    // The collector is down: nothing is acknowledged, so every drop is a loss.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let receiver = LogsReceiver::start(OtlpProtocol::HttpProtobuf, None).await;
    let mut settings = receiver.settings();
    settings.logs_endpoint = format!("http://{dead}/v1/logs");
    let store = Arc::new(gpulse::app::new_store(&config, false));
    let agent = crate::inproc::start_with_store(
        config,
        GpuSource::Nvml,
        Some(settings),
        Some(Arc::clone(&store)),
    )
    .await;
    for n in 0..60 {
        store.record_xid(xid(n));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    agent
        .wait_for("/v1/events?limit=1", "60 Xids recorded", |b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            v["log"]["recorded_total"].as_u64().unwrap() >= 60
                && v["log"]["dropped_total"].as_u64().unwrap() > 0
        })
        .await;
    // The Xids also change GPU health, and those events are recorded a moment later (each one
    // dropping another old event): wait until the log holds still before comparing its
    // figures with /metrics, read after it.
    let mut v = agent.get_json("/v1/events?limit=1").await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let again = agent.get_json("/v1/events?limit=1").await;
        let settled = again["log"]["recorded_total"] == v["log"]["recorded_total"];
        v = again;
        if settled {
            break;
        }
    }
    let log = &v["log"];
    let (first, last, held) = (
        log["first_seq"].as_u64().unwrap(),
        log["last_seq"].as_u64().unwrap(),
        log["events"].as_u64().unwrap(),
    );
    assert!(log["bytes"].as_u64().unwrap() <= 4096, "{log}");
    assert_eq!(
        last - first + 1,
        held,
        "the newest are kept, contiguous: {log}"
    );
    assert_eq!(
        log["dropped_total"].as_u64().unwrap(),
        first - 1,
        "every event before the oldest kept was dropped unexported: {log}"
    );
    assert_eq!(log["outbox"]["pending"].as_u64().unwrap(), held);
    let metrics = agent.get("/metrics").await;
    assert!(
        metrics.contains(&format!("gpulse_events_dropped_total {}.0\n", first - 1)),
        "{metrics}"
    );
    // Paging from 0 says what was lost and starts at the oldest kept.
    let page = agent.get_json("/v1/events?since=0&limit=1000").await;
    assert_eq!(page["gap"], true);
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.first(), Some(&first));
    assert_eq!(seqs.len() as u64, held);
    eprintln!(
        "bound 4096 bytes: {held} events kept ({first}..={last}), {} dropped",
        first - 1
    );
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_page_forward_from_since_and_bad_queries_are_400() {
    // No state directory: the log is in memory.
    let config = quiet_config();
    let store = Arc::new(gpulse::app::new_store(&config, false));
    let agent =
        crate::inproc::start_with_store(config, GpuSource::Nvml, None, Some(Arc::clone(&store)))
            .await;
    for n in 0..25 {
        store.record_xid(xid(n));
    }
    let body = agent
        .wait_for("/v1/events?limit=1", "25 Xids", |b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            v["log"]["recorded_total"].as_u64().unwrap() >= 25
        })
        .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["schema"], "gpulse.events/v2");
    assert_eq!(v["log"]["persistent"], false);
    assert!(v["log"]["outbox"].is_null(), "no OTLP, no outbox: {v}");
    assert!(v["job"].is_null());
    let last = v["log"]["last_seq"].as_u64().unwrap();
    assert_eq!(v["next_since"], last, "the newest page");
    // Seven at a time from the start.
    let mut since = 0;
    let mut seen = Vec::new();
    loop {
        let page = agent
            .get_json(&format!("/v1/events?since={since}&limit=7"))
            .await;
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 7);
        for e in events {
            assert_eq!(e["schema"], "gpulse.event/v1");
            assert_eq!(e["node"], "node-e");
            seen.push(e["seq"].as_u64().unwrap());
        }
        since = page["next_since"].as_u64().unwrap();
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(seen, (1..=last).collect::<Vec<_>>());
    let xid = agent.get_json("/v1/events?since=0&limit=1000").await["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "xid")
        .unwrap()
        .clone();
    assert_eq!(
        xid["attributes"]["gpulse.xid.sources"],
        serde_json::json!(["nvml_event"])
    );
    assert!(xid["body"].as_str().unwrap().starts_with("Xid "), "{xid}");
    // Past the end: nothing, and the cursor stays.
    let end = agent.get_json(&format!("/v1/events?since={last}")).await;
    assert_eq!(end["events"], serde_json::json!([]));
    assert_eq!(end["next_since"], last);
    for bad in [
        "since=-1",
        "since=abc",
        "limit=0",
        "limit=1001",
        "limit=x",
        "kind=xid",
    ] {
        let r = crate::inproc::http_get(format!("{}/v1/events?{bad}", agent.base))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("since") || text.contains("limit"),
            "{bad}: {text}"
        );
    }
    agent.shut_down().await;
}

// ------------------------------------------------ kill -9 during appends (a child process)

const CHILD_DIR: &str = "GPULSE_TEST_EVENT_LOG_DIR";

/// Not a test of its own: the child [`kill_9_during_appends_leaves_a_readable_log`] runs (and
/// kills); it appends batches of events to the log in `CHILD_DIR` as fast as it can.
#[test]
#[ignore = "run by kill_9_during_appends_leaves_a_readable_log"]
fn event_log_writer_child() {
    use gpulse::evidence::event_log::{EventLog, Limits};
    use gpulse::evidence::events::{Body, Event};
    use gpulse::model::{EventKind, EventSeverity};
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let db = gpulse::evidence::state::StateDb::open(std::path::Path::new(&dir)).unwrap();
    let limits = Limits {
        max_bytes: 64 << 10,
        max_events: 1_000_000,
        max_event_bytes: 4096,
    };
    let log = EventLog::open(Some(db), limits, "child", true, None).unwrap();
    for i in 0u64.. {
        let batch: Vec<Event> = (0..20)
            .map(|j| Event {
                time: SystemTime::now(),
                kind: EventKind::Xid,
                severity: EventSeverity::Warn,
                attributes: Vec::new(),
                body: Body::Text(format!("batch {i} event {j}")),
            })
            .collect();
        log.append(&batch, None).unwrap();
        if i % 3 == 0 {
            log.ack(log.status().last_seq.saturating_sub(30), SystemTime::now());
        }
    }
}

#[test]
fn kill_9_during_appends_leaves_a_readable_log() {
    use gpulse::evidence::event_log::{EventLog, Limits};
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_bytes: 64 << 10,
        max_events: 1_000_000,
        max_event_bytes: 4096,
    };
    let mut last_seen = 0;
    for round in 0..15u64 {
        crate::agent::kill_test_child_after(
            "events::event_log_writer_child",
            CHILD_DIR,
            dir.path(),
            Duration::from_millis(200 + (round * 37) % 60),
        );
        let db = gpulse::evidence::state::StateDb::open(dir.path()).unwrap();
        let log = EventLog::open(Some(db), limits, "parent", true, None).unwrap();
        let s = log.status();
        assert!(s.last_seq >= last_seen, "round {round}: went back: {s:?}");
        assert!(s.bytes <= limits.max_bytes, "{s:?}");
        assert!(s.acked_seq <= s.last_seq, "{s:?}");
        let rows = log.after(0, usize::MAX, u64::MAX).unwrap();
        let seqs: Vec<u64> = rows.iter().map(|(s, _)| *s).collect();
        // Under load the child may be killed before its first append (a round with nothing
        // written): an empty log has first_seq = last_seq = 0 and no rows.
        let expected: Vec<u64> = if s.events == 0 {
            Vec::new()
        } else {
            (s.first_seq..=s.last_seq).collect()
        };
        assert_eq!(seqs, expected, "round {round}: {s:?}");
        for (_, bytes) in &rows {
            gpulse::export::json::EventV1::decode(bytes).unwrap();
        }
        last_seen = s.last_seq;
    }
    eprintln!("event log kill -9 loop: 15 kills, {last_seen} events numbered, none lost or torn");
    assert!(last_seen > 20, "only {last_seen} events in 15 rounds");
}
