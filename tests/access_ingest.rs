//! Durable biometric ingestion end to end: the ZKTeco reader stub (a real HTTP client) against
//! the `/iclock` routes on a real loopback server and a real store file; idempotent re-sends,
//! out-of-order batches, refused serials, malformed lines; and the daemon binary killed with
//! SIGKILL during ingestion: no acknowledged event lost, none duplicated.

mod common_access;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use dcguard::access::audit::{self, AuditKey, AuditLog, CheckpointPolicy};
use dcguard::access::event::{AccessEvent, DeviceOp, Direction, EventKind};
use dcguard::access::ingest::{AUDIT_FILE, Ingest, verify_chain};
use dcguard::access::reconcile::{Finding, ReconcileSettings, Reconciler, Rule};
use dcguard::access::zkteco::{ParseContext, Table, parse_cdata};
use dcguard::config::model::Config;
use dcguard::http::{HttpServer, RenderMetrics};
use dcguard::store::Store;
use dcguard::store::access::{AccessStore, EventQuery, FindingQuery, StoredFinding};
use firmware_stubs::reader::{Firmware, ReaderStub, StubError, StubEvent};
use rand::Rng;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const KEY: &[u8] = b"test-audit-key-0123456789abcdef";

/// The ingestion routes on 127.0.0.1:0 over a store file and a chain in a temp dir.
struct Rig {
    dir: TempDir,
    base: String,
    ingest: Ingest,
    token: CancellationToken,
}

impl Rig {
    async fn start(config: &Config) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit.key"), KEY).unwrap();
        let store = Store::open(&dir.path().join("store.sqlite")).unwrap();
        let audit = AuditLog::open(
            &dir.path().join(AUDIT_FILE),
            AuditKey::from_bytes(KEY.to_vec()).unwrap(),
            CheckpointPolicy::default(),
            Utc::now(),
        )
        .unwrap();
        let ingest = Ingest::open(config, store, audit).unwrap();
        let token = CancellationToken::new();
        let render: RenderMetrics = Arc::new(|| Ok(String::new()));
        let server = HttpServer::start_with(
            "127.0.0.1:0".parse().unwrap(),
            render,
            dcguard::access::http::router(ingest.clone()),
            token.clone(),
        )
        .await
        .unwrap();
        let base = format!("http://{}", server.local_addr());
        Rig {
            dir,
            base,
            ingest,
            token,
        }
    }

    fn stub(&self, serial: &str, firmware: Firmware) -> ReaderStub {
        ReaderStub::new(&self.base, serial, firmware)
            .unwrap()
            .with_retry_delay(Duration::from_millis(10))
    }

    fn store(&self) -> &AccessStore {
        self.ingest.store()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn jakarta() -> Tz {
    chrono_tz::Asia::Jakarta
}

/// Site-local "now" minus `secs` seconds, whole seconds.
fn local_ago(secs: i64) -> NaiveDateTime {
    let now = Utc::now().with_timezone(&jakarta()).naive_local() - TimeDelta::seconds(secs);
    now.with_nanosecond(0).unwrap()
}

fn to_utc(local: NaiveDateTime) -> DateTime<Utc> {
    jakarta()
        .from_local_datetime(&local)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

fn batch(prefix: &str, n: usize, oldest_secs_ago: i64) -> Vec<StubEvent> {
    (0..n)
        .map(|i| {
            StubEvent::granted(
                &format!("{prefix}{i:02}"),
                local_ago(oldest_secs_ago - i as i64),
            )
        })
        .collect()
}

/// The stored findings of a site.
fn site_findings(store: &AccessStore, site: &str) -> Vec<Finding> {
    store
        .findings(&FindingQuery {
            site: Some(site.into()),
            ..FindingQuery::default()
        })
        .unwrap()
        .into_iter()
        .map(|s| s.finding)
        .collect()
}

/// Access-event records in a chain file, and how many distinct event ids they hold.
fn chain_events(path: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut ids = std::collections::HashSet::new();
    let mut records = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["record"]["kind"] == "access_event" {
            records += 1;
            ids.insert(v["record"]["payload"]["id"].as_str().unwrap().to_owned());
        }
    }
    (records, ids.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_once_and_resent_or_out_of_order_batches_create_no_duplicates() {
    let config = common_access::shipped();
    let rig = Rig::start(&config).await;
    let mut att = rig.stub("DC-MT-OUT-01", Firmware::Attendance);
    let mut acc = rig.stub("DC-MT-OUT-02", Firmware::Access);
    let options = att.handshake().await.unwrap();
    assert!(
        options.starts_with("GET OPTION FROM: DC-MT-OUT-01\n"),
        "{options}"
    );
    assert!(options.contains("TimeZone=7\n"), "{options}");
    acc.handshake().await.unwrap();
    att.heartbeat().await.unwrap();

    // Batch A, then an older batch B (out of order), then A re-sent byte for byte.
    let a = batch("91", 5, 120);
    let b = batch("92", 5, 240);
    let body_a = att.encode(&a);
    let (reply, attempts) = att.post_until_ok("ATTLOG", &body_a, 3).await.unwrap();
    assert_eq!((reply.as_str(), attempts), ("OK:5", 1));
    let (reply, _) = att.push(&b, 3).await.unwrap();
    assert_eq!(reply, "OK:5");
    let reply = att.post_once("ATTLOG", &body_a).await.unwrap();
    assert_eq!(reply, "OK:5", "a re-sent batch is acknowledged again");
    assert_eq!(rig.store().count_events().unwrap(), 10);
    let stats = rig.ingest.stats();
    assert_eq!((stats.events_new, stats.events_duplicate), (10, 5));
    assert_eq!(stats.batches, 3);

    // Stored in device-time order with the site zone applied, whatever the arrival order.
    let stored = rig
        .store()
        .events(&EventQuery {
            reader: Some("DC-MT-OUT-01".into()),
            ..EventQuery::default()
        })
        .unwrap();
    let expected: Vec<(String, DateTime<Utc>)> = b
        .iter()
        .chain(&a)
        .map(|e| (e.pin.clone(), to_utc(e.local_time)))
        .collect();
    let got: Vec<(String, DateTime<Utc>)> = stored
        .iter()
        .map(|e| (e.credential.as_deref().unwrap().to_owned(), e.device_time))
        .collect();
    assert_eq!(got, expected);
    assert!(
        stored
            .iter()
            .all(|e| e.direction == Some(Direction::Entry) && e.kind == EventKind::Granted)
    );

    // Access firmware: the real direction from inoutstatus; a denied event is kept as denied.
    let mut exit = StubEvent::granted("93001", local_ago(30));
    exit.in_out = Some(1);
    let mut denied = StubEvent::granted("93002", local_ago(29));
    denied.code = 27;
    let (reply, _) = acc.push(&[exit, denied.clone()], 3).await.unwrap();
    assert_eq!(reply, "OK:2");
    let on_acc = rig
        .store()
        .events(&EventQuery {
            reader: Some("DC-MT-OUT-02".into()),
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(on_acc.len(), 2);
    assert_eq!(on_acc[0].direction, Some(Direction::Exit));
    assert!(matches!(on_acc[1].kind, EventKind::Denied { .. }));

    // The chain holds each stored event exactly once and verifies.
    let (records, distinct) = chain_events(&rig.dir.path().join(AUDIT_FILE));
    assert_eq!((records, distinct), (12, 12));
    let key = AuditKey::from_bytes(KEY.to_vec()).unwrap();
    audit::verify(&rig.dir.path().join(AUDIT_FILE), &key).unwrap();
    let summary = verify_chain(rig.dir.path(), Some(&rig.dir.path().join("audit.key"))).unwrap();
    assert!(summary.contains("is intact"), "{summary}");

    // The live reconciler sees the events: nobody here is on the roster or a ticket.
    let findings: Vec<Finding> = rig
        .ingest
        .tick(Utc::now() + TimeDelta::minutes(10))
        .unwrap()
        .into_iter()
        .map(|s| s.finding)
        .collect();
    assert!(
        findings.iter().any(|f| f.rule == Rule::UnknownCredential),
        "{findings:#?}"
    );
    let key_set = |fs: &[Finding]| {
        let mut keys: Vec<String> = fs.iter().map(|f| f.key()).collect();
        keys.sort();
        keys
    };
    assert_eq!(
        key_set(&site_findings(rig.store(), "dc")),
        key_set(&findings)
    );
    assert_eq!(rig.ingest.recent_findings(), findings);
    assert_eq!(rig.ingest.stats().findings, findings.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_serial_is_refused_and_nothing_is_stored() {
    let config = common_access::shipped();
    let rig = Rig::start(&config).await;
    let mut stranger = rig.stub("NOT-A-READER-7", Firmware::Attendance);
    match stranger.handshake().await {
        Err(StubError::NotOk { status: 403, .. }) => {}
        other => panic!("handshake of an unknown serial: {other:?}"),
    }
    match stranger.push(&batch("94", 3, 60), 2).await {
        Err(StubError::GaveUp { attempts: 2, last }) => assert!(last.contains("403"), "{last}"),
        other => panic!("push of an unknown serial: {other:?}"),
    }
    let client = reqwest::Client::new();
    let no_sn = client
        .post(format!("{}/iclock/cdata?table=ATTLOG", rig.base))
        .body("1\t2026-11-21 10:00:00\n")
        .send()
        .await
        .unwrap();
    assert_eq!(no_sn.status().as_u16(), 400);
    let ping = client
        .get(format!("{}/iclock/ping?SN=NOT-A-READER-7", rig.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status().as_u16(), 403);
    assert_eq!(rig.store().count_events().unwrap(), 0);
    assert_eq!(rig.ingest.stats().unknown_serial, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_counted_the_good_ones_kept_and_commands_never_sent() {
    let config = common_access::shipped();
    let rig = Rig::start(&config).await;
    let stub = rig.stub("DC-MT-IN-01", Firmware::Attendance);
    let good1 = format!("95001\t{}\t0\t1", local_ago(50).format("%Y-%m-%d %H:%M:%S"));
    let good2 = format!("95002\t{}\t0\t1", local_ago(40).format("%Y-%m-%d %H:%M:%S"));
    let body = format!("{good1}\r\nnot-a-line\n95003\t2026-13-45 99:00:00\n{good2}\n");
    let reply = stub.post_once("ATTLOG", &body).await.unwrap();
    assert_eq!(reply, "OK:2");
    let stats = rig.ingest.stats();
    assert_eq!((stats.lines_malformed, stats.events_new), (2, 2));
    assert_eq!(rig.store().count_events().unwrap(), 2);

    // OPERLOG: user records are skipped, a set-time operation is stored.
    let oplog = format!(
        "USER PIN=1\tName=x\nOPLOG 21\t0\t{}\t0\t0\t0\t0\n",
        local_ago(10).format("%Y-%m-%d %H:%M:%S")
    );
    assert_eq!(stub.post_once("OPERLOG", &oplog).await.unwrap(), "OK:2");
    assert_eq!(rig.store().count_events().unwrap(), 3);
    // Options and unknown tables: acknowledged, nothing stored.
    assert_eq!(
        stub.post_once("options", "FingerFunOn=1").await.unwrap(),
        "OK"
    );
    assert_eq!(stub.post_once("ATTPHOTO", "x").await.unwrap(), "OK");

    // Command polls get a bare OK: the daemon never commands a reader.
    let client = reqwest::Client::new();
    for path in [
        "getrequest?SN=DC-MT-IN-01&INFO=x",
        "getrequest.aspx?SN=DC-MT-IN-01",
    ] {
        let r = client
            .get(format!("{}/iclock/{path}", rig.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/plain; charset=utf-8"
        );
        assert_eq!(r.text().await.unwrap(), "OK");
    }
    let r = client
        .post(format!("{}/iclock/devicecmd?SN=DC-MT-IN-01", rig.base))
        .body("ID=1&Return=0&CMD=INFO")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "OK");

    // An oversized body is refused before parsing; nothing is stored.
    let huge = good1.repeat(2 * dcguard::access::http::BODY_LIMIT / good1.len());
    match stub.post_once("ATTLOG", &huge).await {
        Err(StubError::NotOk { status: 413, .. }) => {}
        other => panic!("oversized body: {other:?}"),
    }
    assert_eq!(rig.store().count_events().unwrap(), 3);
}

/// Copies the shipped configuration with `listen` on `port`.
fn config_copy(dir: &Path, port: u16) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let to = dir.join("config");
    copy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config"), &to);
    let main = to.join("dcguard.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:8080\""));
    let text = text.replace(
        "listen = \"127.0.0.1:8080\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&main, text).unwrap();
    to
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    config: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    starts: usize,
}

impl Daemon {
    fn spawn(&mut self) -> tokio::process::Child {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dcguard"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--log-level", "warn,dcguard::access=info"])
            .env_remove("DCGUARD_AUDIT_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// Waits (bounded) until `/healthz` answers.
    async fn wait_healthy(&self, child: &mut tokio::process::Child) {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        for _ in 0..1200 {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the daemon exited ({status}) before serving:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the daemon never served /healthz:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingestion_loses_no_acknowledged_event_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut daemon = Daemon {
        config: config_copy(dir.path(), port),
        data: dir.path().join("data"),
        log: dir.path().join("daemon.log"),
        port,
        starts: 0,
    };
    let mut child = daemon.spawn();
    daemon.wait_healthy(&mut child).await;

    // Two readers push batches back to back until told to stop (and at least MIN_BATCHES
    // each); every batch is re-sent until acknowledged.
    let base = format!("http://127.0.0.1:{port}");
    let acked: Arc<Mutex<Vec<(String, StubEvent)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let resent = Arc::new(AtomicUsize::new(0));
    const MIN_BATCHES: usize = 20;
    let mut pushers = Vec::new();
    for (serial, firmware, prefix) in [
        ("DC-DH1-01", Firmware::Attendance, "7"),
        ("DC-DH1-02", Firmware::Access, "8"),
    ] {
        let mut stub = ReaderStub::new(&base, serial, firmware)
            .unwrap()
            .with_retry_delay(Duration::from_millis(20));
        let acked = acked.clone();
        let stop = stop.clone();
        let resent = resent.clone();
        pushers.push(tokio::spawn(async move {
            let mut n: usize = 0;
            while n < MIN_BATCHES || !stop.load(Ordering::Relaxed) {
                assert!(n < 100_000, "bounded");
                let events: Vec<StubEvent> = (0..10_i64)
                    .map(|i| StubEvent::granted(&format!("{prefix}{n:05}{i}"), local_ago(3600 - i)))
                    .collect();
                // Bounded: 6000 attempts at >= 20 ms outlast several restarts.
                let (_, attempts) = stub.push(&events, 6000).await.unwrap();
                if attempts > 1 {
                    resent.fetch_add(1, Ordering::Relaxed);
                }
                acked
                    .lock()
                    .unwrap()
                    .extend(events.into_iter().map(|e| (serial.to_owned(), e)));
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    // SIGKILL the daemon at random moments while the readers push, and restart it.
    let mut rng = rand::rng();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "SIGKILL ends the daemon: {status:?}");
        child = daemon.spawn();
        daemon.wait_healthy(&mut child).await;
    }
    stop.store(true, Ordering::Relaxed);
    for p in pushers {
        p.await.unwrap();
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(daemon.starts, 5);
    assert!(
        resent.load(Ordering::Relaxed) > 0,
        "the kills happened while batches were in flight"
    );

    // Every acknowledged event is stored, exactly once.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 2 * MIN_BATCHES * 10);
    let store = Store::open(&daemon.data.join(dcguard::app::STORE_FILE)).unwrap();
    let access = AccessStore::new(store);
    let stored = access.events(&EventQuery::default()).unwrap();
    let mut stored_keys: Vec<(String, String, DateTime<Utc>)> = stored
        .iter()
        .map(|e| {
            (
                e.reader.to_string(),
                e.credential.as_deref().unwrap_or("").to_owned(),
                e.device_time,
            )
        })
        .collect();
    stored_keys.sort();
    let mut acked_keys: Vec<(String, String, DateTime<Utc>)> = acked
        .iter()
        .map(|(serial, e)| (serial.clone(), e.pin.clone(), to_utc(e.local_time)))
        .collect();
    acked_keys.sort();
    assert_eq!(
        stored_keys.len(),
        acked_keys.len(),
        "lost or duplicated events"
    );
    assert_eq!(stored_keys, acked_keys);

    // The chain verifies (torn tails cut and recorded) and holds every stored event; a crash
    // between the chain append and its bookkeeping may record an event twice, never zero times.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcguard"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&daemon.data)
        .env_remove("DCGUARD_AUDIT_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("is intact"), "{summary}");
    let (records, distinct) = chain_events(&daemon.data.join(AUDIT_FILE));
    assert_eq!(distinct, stored.len());
    assert!(records >= distinct);
    assert!(access.unaudited().unwrap().is_empty());
}

#[test]
fn audit_verify_names_the_first_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("k");
    std::fs::write(&key_file, KEY).unwrap();
    let path = dir.path().join(AUDIT_FILE);
    let mut log = AuditLog::open(
        &path,
        AuditKey::from_bytes(KEY.to_vec()).unwrap(),
        CheckpointPolicy {
            every_records: 0,
            every_secs: 0,
        },
        Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap(),
    )
    .unwrap();
    for i in 0..5 {
        log.append(
            audit::RecordKind::OperatorAction,
            "test",
            serde_json::json!({ "n": i }),
            Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, i).unwrap(),
        )
        .unwrap();
    }
    drop(log);
    let run = |key: Option<&Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dcguard"));
        cmd.args(["audit", "verify", "--data-dir"]).arg(dir.path());
        if let Some(k) = key {
            cmd.arg("--key-file").arg(k);
        }
        cmd.env_remove("DCGUARD_AUDIT_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY");
        cmd.output().unwrap()
    };
    let ok = run(Some(&key_file));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("5 records"));

    // Modify record 3.
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 3 {
                l.replace("\"n\":3", "\"n\":4")
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&path, tampered.join("\n") + "\n").unwrap();
    let bad = run(Some(&key_file));
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("record 3 "), "{err}");
    // No key file anywhere: refused, not guessed.
    let nokey = run(None);
    assert_eq!(nokey.status.code(), Some(1));
}

/// One wire request of the synthetic day: a table and the body lines, each line standing for
/// one generated event.
struct WireBatch {
    reader: String,
    table: &'static str,
    received_at: DateTime<Utc>,
    direction: Option<Direction>,
    body: String,
    generated_ids: Vec<Arc<str>>,
    /// The oldest device time in the batch.
    oldest: DateTime<Utc>,
}

fn oplog_code(op: DeviceOp) -> (u32, u32) {
    match op {
        DeviceOp::PowerOn => (0, 0),
        DeviceOp::PowerOff => (1, 0),
        DeviceOp::SetTime => (21, 0),
        DeviceOp::DeleteRecords => (23, 0),
        DeviceOp::DoorForced => (3, 54),
        DeviceOp::Duress => (32, 0),
        DeviceOp::Tamper => (3, 55),
        DeviceOp::AlarmCancelled => (3, 65535),
        DeviceOp::Other => (4, 0),
    }
}

/// The synthetic day of `tests/common_access` pushed by the reader stub over HTTP (access
/// firmware `rtlog` for passages and denials, `OPERLOG` for device operations), with the
/// daemon's receive clock set to each event's receive time: the findings are the pure
/// batch run's (ids mapped to the wire ids), so recall is 1.0 with no false positive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_synthetic_day_of_the_dc_over_http_gives_the_findings_of_the_pure_run() {
    day_over_http("dc", 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_synthetic_day_of_the_smart_dc_over_http_gives_the_findings_of_the_pure_run() {
    day_over_http("smart-dc", 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_synthetic_day_of_the_drc_over_http_gives_the_findings_of_the_pure_run() {
    day_over_http("drc", 13).await;
}

async fn day_over_http(site_id: &str, seed: u64) {
    let config = common_access::shipped();
    let site = common_access::site(&config, site_id);
    let day = common_access::synthetic_day(&site, seed, 50);
    let tickets = common_access::book(&site, &day.ticket_ops);
    // A serial that is not in the reader map is refused over ZKTeco PUSH; other reader
    // systems send it in a JSON batch naming the site (`POST /api/v1/access/events`, here
    // its service call), which records it and raises `unknown_reader`.
    let unknown: Vec<_> = day
        .events
        .iter()
        .filter(|e| config_direction(&site, &e.reader).is_none())
        .cloned()
        .collect();
    assert!(!unknown.is_empty(), "the day plants an unknown reader");
    let settings = ReconcileSettings::from_config(&config.access);
    let rig = Rig::start(&config).await;
    // Tickets go in through the service, at their times (stored, chained, live).
    common_access::apply_to_service(&rig.ingest, &day.ticket_ops);
    let clock = Arc::new(Mutex::new(day.start));
    let shared = clock.clone();
    rig.ingest
        .set_clock(Arc::new(move || *shared.lock().unwrap()));

    for e in &unknown {
        let mut stranger = rig.stub(&e.reader, Firmware::Access);
        let local = e.device_time.with_timezone(&site.time_zone).naive_local();
        let body = stranger.encode(&[StubEvent::granted("1", local)]);
        match stranger.post_once("rtlog", &body).await {
            Err(StubError::NotOk { status: 403, .. }) => {}
            other => panic!("an unknown reader was not refused: {other:?}"),
        }
    }
    assert_eq!(rig.ingest.stats().unknown_serial, unknown.len() as u64);

    // Group consecutive events of one reader, table and receive time into one request;
    // unknown readers' events become one JSON batch each.
    let mut stubs: std::collections::HashMap<String, ReaderStub> = Default::default();
    let mut pushes: Vec<Push> = Vec::new();
    for e in &day.events {
        let Some(direction) = config_direction(&site, &e.reader) else {
            let event = serde_json::json!({
                "reader": &*e.reader,
                "credential": e.credential.as_deref(),
                "kind": "granted",
                "direction": e.direction,
                "time": e.device_time.to_rfc3339(),
            });
            assert_eq!(
                e.kind,
                EventKind::Granted,
                "the day plants unknown readers as passes"
            );
            let body = serde_json::json!({"site": site_id, "events": [event]}).to_string();
            pushes.push(Push::Json {
                body,
                received_at: e.received_at,
                generated_id: e.id.clone(),
            });
            continue;
        };
        let stub = stubs
            .entry(e.reader.to_string())
            .or_insert_with(|| rig.stub(&e.reader, Firmware::Access));
        let local = e.device_time.with_timezone(&site.time_zone).naive_local();
        let (table, line) = match &e.kind {
            EventKind::Operation { op } => {
                let (code, value) = oplog_code(*op);
                let time = local.format("%Y-%m-%d %H:%M:%S");
                (
                    "OPERLOG",
                    format!("OPLOG {code}\t0\t{time}\t0\t{value}\t0\t0\n"),
                )
            }
            kind => {
                let mut s = StubEvent::granted(e.credential.as_deref().unwrap_or("0"), local);
                if matches!(kind, EventKind::Denied { .. }) {
                    s.code = 23;
                } else {
                    s.in_out = e.direction.map(|d| u8::from(d == Direction::Exit));
                }
                ("rtlog", stub.encode(&[s]))
            }
        };
        match pushes.last_mut() {
            Some(Push::Wire(b))
                if b.reader == *e.reader && b.table == table && b.received_at == e.received_at =>
            {
                b.body.push_str(&line);
                b.generated_ids.push(e.id.clone());
                b.oldest = b.oldest.min(e.device_time);
            }
            _ => pushes.push(Push::Wire(WireBatch {
                reader: e.reader.to_string(),
                table,
                received_at: e.received_at,
                direction: Some(direction),
                body: line,
                generated_ids: vec![e.id.clone()],
                oldest: e.device_time,
            })),
        }
    }

    // The day's only events older than the skew limit at receipt are planted skewed clocks:
    // such a reader is connected all along, polling as real readers do every few seconds
    // (here every 50 s), so its old events are a wrong clock, not a backlog uploaded after a
    // gap in contact.
    let skew = TimeDelta::from_std(settings.max_clock_skew).unwrap();
    let mut polls = Vec::new();
    for push in &pushes {
        if let Push::Wire(b) = push {
            if b.received_at - b.oldest > skew {
                let mut at = b.oldest - skew - TimeDelta::seconds(60);
                while at < b.received_at {
                    polls.push(Push::Poll {
                        reader: b.reader.clone(),
                        at,
                    });
                    at += TimeDelta::seconds(50);
                }
            }
        }
    }
    assert!(!polls.is_empty(), "the day plants skewed clocks");
    pushes.extend(polls);
    pushes.sort_by_key(Push::at);

    // Push every request at its receive time with the reconciliation ticker running every
    // (simulated) second; map generated ids to the ids the daemon computes.
    let mut wire_id: std::collections::HashMap<Arc<str>, Arc<str>> = Default::default();
    let mut wire_events: std::collections::HashMap<Arc<str>, AccessEvent> = Default::default();
    let mut live: Vec<StoredFinding> = Vec::new();
    let mut next_tick = day.start;
    let mut tick_until = |t: DateTime<Utc>, live: &mut Vec<StoredFinding>| {
        while next_tick < t {
            live.extend(rig.ingest.tick(next_tick).unwrap());
            next_tick += TimeDelta::seconds(1);
        }
    };
    for push in &pushes {
        match push {
            Push::Wire(b) => {
                tick_until(b.received_at, &mut live);
                let stub = &stubs[&b.reader];
                *clock.lock().unwrap() = b.received_at;
                let (reply, _) = stub.post_until_ok(b.table, &b.body, 3).await.unwrap();
                assert_eq!(reply, format!("OK:{}", b.generated_ids.len()));
                let ctx = ParseContext {
                    reader: Arc::from(b.reader.as_str()),
                    time_zone: site.time_zone,
                    reader_direction: b.direction,
                    received_at: b.received_at,
                };
                let parsed = parse_cdata(&Table::from_name(b.table), b.body.as_bytes(), &ctx);
                assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
                assert_eq!(parsed.events.len(), b.generated_ids.len());
                for (g, w) in b.generated_ids.iter().zip(parsed.events) {
                    wire_id.insert(g.clone(), w.id.clone());
                    wire_events.insert(w.id.clone(), w);
                }
            }
            Push::Poll { reader, at } => {
                tick_until(*at, &mut live);
                *clock.lock().unwrap() = *at;
                stubs[reader].heartbeat().await.unwrap();
            }
            Push::Json {
                body,
                received_at,
                generated_id,
            } => {
                tick_until(*received_at, &mut live);
                *clock.lock().unwrap() = *received_at;
                let receipt = rig
                    .ingest
                    .ingest_json_batch(body.as_bytes(), *received_at)
                    .unwrap();
                assert_eq!((receipt.received, receipt.new), (1, 1));
                let parsed =
                    dcguard::access::import::parse_json_batch(body.as_bytes(), *received_at)
                        .unwrap();
                wire_id.insert(generated_id.clone(), parsed[0].id.clone());
                wire_events.insert(parsed[0].id.clone(), parsed[0].clone());
            }
        }
    }
    tick_until(day.end, &mut live);
    let stats = rig.ingest.stats();
    assert_eq!(stats.events_new, day.events.len() as u64);
    assert_eq!(stats.lines_malformed, 0);

    // The same findings as the pure batch run over the same events and tickets.
    let pure = Reconciler::run_batch(
        &site,
        settings.clone(),
        day.events.clone(),
        &tickets,
        day.end,
    );
    let project = |f: &Finding, map: bool| {
        let evidence: Vec<String> = f
            .evidence
            .iter()
            .map(|id| {
                if map {
                    wire_id.get(id).map_or("?", |w| &**w).to_owned()
                } else {
                    id.to_string()
                }
            })
            .collect();
        (f.rule, f.ticket.clone(), f.reader.clone(), evidence, f.at)
    };
    let mut expected: Vec<_> = pure.iter().map(|f| project(f, true)).collect();
    let mut got: Vec<_> = live.iter().map(|f| project(&f.finding, false)).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    // Recall 1.0 (50 of 50) and no false positive against the planted anomalies.
    let mut found = 0;
    for p in &day.planted {
        let key = &wire_id[&p.key_event];
        assert!(
            live.iter().any(|f| f.finding.rule == p.rule
                && f.finding.ticket == p.ticket
                && f.finding.evidence.contains(key)),
            "missed {p:?}"
        );
        found += 1;
    }
    assert_eq!(found, 50);
    for f in &live {
        assert!(
            day.planted.iter().any(|p| f.finding.rule == p.rule
                && f.finding.ticket == p.ticket
                && f.finding.evidence.contains(&wire_id[&p.key_event])),
            "false positive {f:#?}"
        );
    }
    // Each finding within 60 s of its event, on the daemon's clock (ticks every second).
    let max_skew = TimeDelta::from_std(settings.max_clock_skew).unwrap();
    let worst = live
        .iter()
        .map(|f| {
            let trigger = common_access::trigger_time(&f.finding, &wire_events, max_skew);
            (f.raised_at - trigger, f.finding.rule)
        })
        .max()
        .unwrap();
    eprintln!(
        "{site_id}: worst finding latency {} s ({})",
        worst.0.num_seconds(),
        worst.1
    );
    assert!(
        worst.0 <= TimeDelta::seconds(60),
        "{site_id}: a finding took {} s ({})",
        worst.0.num_seconds(),
        worst.1
    );
    // Everything is stored and chained; the chain verifies.
    let stored = rig.store().findings(&FindingQuery::default()).unwrap();
    assert_eq!(stored.len(), live.len());
    let summary = verify_chain(rig.dir.path(), Some(&rig.dir.path().join("audit.key"))).unwrap();
    assert!(summary.contains("is intact"), "{summary}");
}

enum Push {
    Wire(WireBatch),
    Json {
        body: String,
        received_at: DateTime<Utc>,
        generated_id: Arc<str>,
    },
    /// A reader's command poll and heartbeat (`getrequest`, `ping`).
    Poll {
        reader: String,
        at: DateTime<Utc>,
    },
}

impl Push {
    fn at(&self) -> DateTime<Utc> {
        match self {
            Push::Wire(b) => b.received_at,
            Push::Json { received_at, .. } => *received_at,
            Push::Poll { at, .. } => *at,
        }
    }
}

fn config_direction(site: &dcguard::config::model::Site, serial: &str) -> Option<Direction> {
    site.access
        .readers
        .iter()
        .find(|r| r.serial == serial)
        .map(|r| match r.direction {
            dcguard::config::model::Direction::Entry => Direction::Entry,
            dcguard::config::model::Direction::Exit => Direction::Exit,
        })
}

#[test]
fn access_import_stores_a_csv_once_and_refuses_unknown_readers_or_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let t = Utc.with_ymd_and_hms(2026, 11, 21, 1, 0, 0).unwrap();
    let make = |reader: &str, pin: &str, secs: i64| {
        let device_time = t + TimeDelta::seconds(secs);
        let raw = format!("{pin}\t{secs}");
        dcguard::access::event::AccessEvent {
            id: dcguard::access::zkteco::event_id(
                reader,
                Some(pin),
                device_time,
                &EventKind::Granted,
                &raw,
            ),
            source: dcguard::access::event::EventSource::CsvImport,
            reader: Arc::from(reader),
            credential: Some(Arc::from(pin)),
            kind: EventKind::Granted,
            direction: Some(Direction::Entry),
            device_time,
            received_at: device_time,
            raw: Arc::from(raw),
            backlog: false,
        }
    };
    let write = |name: &str, events: &[dcguard::access::event::AccessEvent]| {
        let path = dir.path().join(name);
        let mut out = Vec::new();
        dcguard::access::import::write_csv(&mut out, events).unwrap();
        std::fs::write(&path, out).unwrap();
        path
    };
    let good = write(
        "good.csv",
        &[
            make("DC-MT-IN-01", "96001", 0),
            make("DRC-MT-OUT-01", "96002", 5),
        ],
    );
    let stranger = write("stranger.csv", &[make("NOT-A-READER", "96003", 0)]);
    let import = |file: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dcguard"))
            .args(["access", "import"])
            .arg(file)
            .arg("--config")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
            .arg("--data-dir")
            .arg(&data)
            .env_remove("DCGUARD_AUDIT_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap()
    };
    let first = import(&good);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("2 events read, 2 new"));
    let again = import(&good);
    assert!(String::from_utf8_lossy(&again.stdout).contains("2 events read, 0 new"));
    let refused = import(&stranger);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("NOT-A-READER"));

    // While another process holds the appender lock (a running daemon), nothing is imported.
    let held = dcguard::access::ingest::lock_appender(&data, Duration::ZERO).unwrap();
    let busy = import(&good);
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("another dcguard"));
    drop(held);

    let store = AccessStore::new(Store::open(&data.join(dcguard::app::STORE_FILE)).unwrap());
    let stored = store.events(&EventQuery::default()).unwrap();
    assert_eq!(stored.len(), 2);
    let drc = store
        .events(&EventQuery {
            site: Some("drc".into()),
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(drc.len(), 1);
    assert_eq!(
        verify_chain(&data, None).map(|s| s.contains("intact")),
        Ok(true)
    );
    assert_eq!(chain_events(&data.join(AUDIT_FILE)), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ticker_reconciles_pushed_events_and_stops_with_its_token() {
    let config = common_access::shipped();
    let rig = Rig::start(&config).await;
    let mut stub = rig.stub("DC-MT-OUT-01", Firmware::Attendance);
    stub.push(&batch("97", 1, 5), 3).await.unwrap();
    // Past the settle time without waiting for it: the clock is moved on.
    let later = Utc::now() + TimeDelta::minutes(1);
    rig.ingest.set_clock(Arc::new(move || later));
    let token = CancellationToken::new();
    let ticker = rig
        .ingest
        .spawn_ticker(Duration::from_millis(20), token.clone());
    let mut found = Vec::new();
    for _ in 0..3000 {
        found = site_findings(rig.store(), "dc");
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        found
            .iter()
            .any(|f| f.rule == Rule::UnknownCredential && f.credential.as_deref() == Some("9700")),
        "{found:#?}"
    );
    token.cancel();
    ticker.await.unwrap();
}

/// The DC with its first member of staff on no shift (no ticket needed at any hour), the
/// mantrap's entry reader last heard from `offline_for` before `now` (it is offline since)
/// and its exit reader in contact at `now`, the daemon's receive clock (`clock`, ms) at
/// `now`.
struct Backlog {
    config: Config,
    staff: String,
    layout: common_access::Layout,
    rig: Rig,
    clock: Arc<std::sync::atomic::AtomicI64>,
    offline: ReaderStub,
    online: ReaderStub,
}

impl Backlog {
    async fn start(now: DateTime<Utc>, offline_for: TimeDelta) -> Backlog {
        let mut config = common_access::shipped();
        let dc = config.sites.iter_mut().find(|s| s.id == "dc").unwrap();
        dc.access.staff[0].shift = None;
        let staff = dc.access.staff[0].credentials[0].clone();
        let layout = common_access::Layout::of(dc);
        let rig = Rig::start(&config).await;
        let clock = Arc::new(std::sync::atomic::AtomicI64::new(
            (now - offline_for).timestamp_millis(),
        ));
        let c = clock.clone();
        rig.ingest.set_clock(Arc::new(move || {
            DateTime::from_timestamp_millis(c.load(Ordering::SeqCst)).unwrap()
        }));
        let offline = rig.stub(&layout.mantrap_in, Firmware::Attendance);
        let online = rig.stub(&layout.mantrap_out, Firmware::Attendance);
        offline.handshake().await.unwrap();
        clock.store(now.timestamp_millis(), Ordering::SeqCst);
        online.handshake().await.unwrap();
        Backlog {
            config,
            staff,
            layout,
            rig,
            clock,
            offline,
            online,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_late_backlog_is_reconciled_in_time_order() {
    // A member of staff (no shift, so no ticket needed at any hour) enters the DC's mantrap
    // 40 minutes ago at a reader that is offline, and leaves 2 minutes ago at one that is
    // online; an unknown card is tried at the offline reader 35 minutes ago. Reconciled in
    // time order, the stay is clean and the card is `unknown_credential`.
    // The offline reader was last heard from 50 minutes ago.
    let Backlog {
        config,
        staff,
        layout,
        rig,
        clock,
        mut offline,
        mut online,
    } = Backlog::start(Utc::now(), TimeDelta::minutes(50)).await;
    let entry = StubEvent::granted(&staff, local_ago(40 * 60));
    let stranger = StubEvent::granted("99999", local_ago(35 * 60));
    let exit = StubEvent::granted(&staff, local_ago(2 * 60));

    // Live: the exit arrives first and is judged alone: exit while not inside.
    online.push(&[exit], 3).await.unwrap();
    let first = rig.ingest.tick(Utc::now()).unwrap();
    let rules: Vec<Rule> = first.iter().map(|s| s.finding.rule).collect();
    assert_eq!(rules, vec![Rule::AntiPassback], "{first:#?}");
    let false_finding = first[0].id;

    // The offline reader comes back with its backlog.
    clock.store(Utc::now().timestamp_millis(), Ordering::SeqCst);
    let (reply, _) = offline.push(&[entry, stranger], 3).await.unwrap();
    assert_eq!(reply, "OK:2");
    // A backlog (the reader was silent for 50 minutes), not a skewed clock.
    let backlog: Vec<bool> = rig
        .store()
        .events(&EventQuery {
            reader: Some(layout.mantrap_in.clone()),
            ..EventQuery::default()
        })
        .unwrap()
        .iter()
        .map(|e| e.backlog)
        .collect();
    assert_eq!(backlog, vec![true, true]);
    let second = rig.ingest.tick(Utc::now()).unwrap();
    let rules: Vec<Rule> = second.iter().map(|s| s.finding.rule).collect();
    assert_eq!(rules, vec![Rule::UnknownCredential], "{second:#?}");

    // The pure run over the stored events in time order gives the expected findings.
    let site = common_access::site(&config, "dc");
    let stored = rig
        .store()
        .events(&EventQuery {
            site: Some("dc".into()),
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(stored.len(), 3);
    let expected = Reconciler::run_batch(
        &site,
        ReconcileSettings::from_config(&config.access),
        stored,
        &dcguard::access::ticket::TicketBook::new(),
        Utc::now(),
    );
    let expected_rules: Vec<Rule> = expected.iter().map(|f| f.rule).collect();
    assert_eq!(
        expected_rules,
        vec![Rule::UnknownCredential],
        "{expected:#?}"
    );

    let stats = rig.ingest.stats();
    assert_eq!(
        (
            stats.events_late,
            stats.late_reruns,
            stats.findings_withdrawn
        ),
        (2, 1, 1)
    );
    // The false finding is kept, withdrawn by a review that says why; the true one is open.
    let reviewed = rig
        .store()
        .findings(&FindingQuery {
            site: Some("dc".into()),
            reviewed: Some(true),
            ..FindingQuery::default()
        })
        .unwrap();
    assert_eq!(
        reviewed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![false_finding]
    );
    let reviews = rig.store().reviews_after(0, 10).unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].reviewer, dcguard::access::ingest::WITHDRAWN_BY);
    assert!(
        reviews[0].note.contains(&layout.mantrap_in),
        "{}",
        reviews[0].note
    );
    let open = rig
        .store()
        .findings(&FindingQuery {
            site: Some("dc".into()),
            reviewed: Some(false),
            ..FindingQuery::default()
        })
        .unwrap();
    let open_keys: Vec<String> = open.iter().map(|s| s.finding.key()).collect();
    let expected_keys: Vec<String> = expected.iter().map(Finding::key).collect();
    assert_eq!(open_keys, expected_keys);
    // Only the stranger is inside (never seen leaving); the staff member's stay was entry
    // then exit (judged at arrival, the late entry would have left them inside forever).
    let inside: usize = rig
        .ingest
        .occupancy_counts()
        .iter()
        .filter(|(site, _, _)| site == "dc")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(inside, 1);
    // The same backlog again changes nothing.
    assert!(rig.ingest.tick(Utc::now()).unwrap().is_empty());
    assert_eq!(rig.ingest.stats().late_reruns, 1);
    // The withdrawal is in the chain, which verifies.
    let summary = verify_chain(rig.dir.path(), Some(&rig.dir.path().join("audit.key"))).unwrap();
    assert!(summary.contains("is intact"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_older_than_the_dedupe_horizon_is_judged_once() {
    // A reader offline for 31 h uploads an entry of 30 h ago: older than the 24 h the
    // reconciler remembers event ids. The next late event re-runs the site from a snapshot
    // taken after that entry was judged; it must not judge the entry again ("entered
    // while already inside").
    let n = Utc::now();
    let Backlog {
        config,
        staff,
        rig,
        clock,
        mut offline,
        mut online,
        ..
    } = Backlog::start(n, TimeDelta::hours(31)).await;
    assert!(rig.ingest.tick(n).unwrap().is_empty());
    offline
        .push(&[StubEvent::granted(&staff, local_ago(30 * 3600))], 3)
        .await
        .unwrap();
    assert!(
        rig.ingest
            .tick(n + TimeDelta::seconds(1))
            .unwrap()
            .is_empty()
    );
    assert!(
        rig.ingest
            .tick(n + TimeDelta::seconds(45))
            .unwrap()
            .is_empty()
    );
    // The exit, 30 s ahead of the test's now, arrives after its time was reconciled.
    clock.store(
        (n + TimeDelta::seconds(45)).timestamp_millis(),
        Ordering::SeqCst,
    );
    online
        .push(&[StubEvent::granted(&staff, local_ago(-30))], 3)
        .await
        .unwrap();
    let found = rig.ingest.tick(n + TimeDelta::seconds(46)).unwrap();
    assert!(found.is_empty(), "{found:#?}");
    assert_eq!(rig.ingest.stats().late_reruns, 2);
    let site = common_access::site(&config, "dc");
    let stored = rig
        .store()
        .events(&EventQuery {
            site: Some("dc".into()),
            ..EventQuery::default()
        })
        .unwrap();
    assert!(stored.iter().any(|e| e.backlog));
    let pure = Reconciler::run_batch(
        &site,
        ReconcileSettings::from_config(&config.access),
        stored,
        &dcguard::access::ticket::TicketBook::new(),
        n + TimeDelta::seconds(46),
    );
    assert!(pure.is_empty(), "{pure:#?}");
    let inside: usize = rig
        .ingest
        .occupancy_counts()
        .iter()
        .filter(|(site, _, _)| site == "dc")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(inside, 0);
}
