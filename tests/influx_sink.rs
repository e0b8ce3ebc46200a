//! The InfluxDB sink against a real VictoriaMetrics (InfluxDB v2 write API): read back,
//! an outage under load, kill -9 during an outage, a corrupted spool segment, refused
//! lines; and a property test of the line-protocol encoder against a reference parser.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dcguard::alarms::task::{AlarmTask, AlarmTaskOptions, watch_timeseries};
use dcguard::model::{BadReason, PointId, Reading, Value};
use dcguard::sinks::influxdb::{self, InfluxOptions, InfluxSender, InfluxSink, SeriesIndex};
use dcguard::sinks::line_protocol::{self, SeriesKey};
use dcguard::sinks::spool::SpoolConfig;
use proptest::prelude::*;

mod common;

const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";
/// Environment variable that turns the kill -9 test into its own child process.
const CHILD_ENV: &str = "DCGUARD_INFLUX_SINK_CHILD";

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A VictoriaMetrics process on 127.0.0.1:`port`, killed on drop.
struct Vm {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
}

impl Vm {
    async fn start(data: &Path, port: u16) -> Vm {
        assert!(
            Path::new(VICTORIA_METRICS).exists(),
            "{VICTORIA_METRICS} is missing: run scripts/test.sh, which installs the test peers"
        );
        let mut vm = Vm {
            child: None,
            port,
            data: data.to_owned(),
        };
        vm.restart().await;
        vm
    }

    async fn restart(&mut self) {
        let child = Command::new(VICTORIA_METRICS)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.data.display()))
            .arg("-retentionPeriod=1")
            .arg("-loggerLevel=ERROR")
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start victoria-metrics");
        self.child = Some(child);
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/health", self.url())).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("victoria-metrics did not answer /health within 10 s");
    }

    /// Graceful stop (SIGTERM flushes what VictoriaMetrics accepted), then waits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every sample of metric `name`: (labels as `k=v` joined, timestamp ms, value).
    async fn export(&self, name: &str) -> BTreeSet<(String, i64, String)> {
        self.export_match(&format!("{{__name__=\"{name}\"}}")).await
    }

    /// Every sample of the series `selector` matches, as [`Vm::export`].
    async fn export_match(&self, selector: &str) -> BTreeSet<(String, i64, String)> {
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{}/internal/force_flush", self.url()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let body = client
            .get(format!("{}/api/v1/export", self.url()))
            .query(&[("match[]", selector)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut out = BTreeSet::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let metric = v["metric"].as_object().unwrap();
            let mut labels: Vec<String> = metric
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect();
            labels.sort();
            let labels = labels.join(",");
            let values = v["values"].as_array().unwrap();
            let stamps = v["timestamps"].as_array().unwrap();
            for (value, ts) in values.iter().zip(stamps) {
                out.insert((labels.clone(), ts.as_i64().unwrap(), value.to_string()));
            }
        }
        out
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn options(url: &str, spool_dir: &Path) -> InfluxOptions {
    InfluxOptions {
        url: url.to_owned(),
        org: "dc-org".into(),
        bucket: "dc-bucket".into(),
        token: Some(influxdb::Token::new("test-token".into())),
        gzip: true,
        batch_max_points: 500,
        flush_interval: Duration::from_millis(100),
        queue_capacity: 100_000,
        pending_batches: 4,
        max_in_flight: 4,
        request_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        retry_after_max: Duration::from_secs(5),
        spool: SpoolConfig {
            dir: spool_dir.to_owned(),
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(3600),
            segment_bytes: 64 << 10,
        },
    }
}

const DEVICES: usize = 8;

fn index() -> SeriesIndex {
    let mut index = SeriesIndex::default();
    for d in 0..DEVICES {
        index.insert("dc", &format!("ups-{d}"), "ups", "ups-room", "");
    }
    index
}

/// Anchor of generated timestamps: 30 minutes ago, whole seconds.
fn base_ms() -> i64 {
    (Utc::now().timestamp() - 1800) * 1000
}

/// Reading `i` of the generated set: device `i % DEVICES`, a unique millisecond per
/// device, value `i`.
fn generated(base_ms: i64, i: usize) -> Reading {
    let device = format!("ups-{}", i % DEVICES);
    let at = DateTime::<Utc>::from_timestamp_millis(base_ms + (i / DEVICES) as i64).unwrap();
    Reading::good(
        PointId::new("dc", &device, "load_pct"),
        Value::Number(i as f64),
        at,
    )
}

/// The set VictoriaMetrics should hold for readings `ids`, in [`Vm::export`]'s form.
fn expected(base_ms: i64, ids: impl IntoIterator<Item = usize>) -> BTreeSet<(String, i64, String)> {
    ids.into_iter()
        .map(|i| {
            (
                format!("device=ups-{},room=ups-room,site=dc", i % DEVICES),
                base_ms + (i / DEVICES) as i64,
                (i as f64).to_string(),
            )
        })
        .collect()
}

/// Polls until `done` holds (at most `secs` seconds).
async fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..secs * 20 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

fn start(options: InfluxOptions) -> (InfluxSender, InfluxSink) {
    influxdb::start(options, index()).unwrap()
}

/// Set difference summary for assertion messages.
fn diff(got: &BTreeSet<(String, i64, String)>, want: &BTreeSet<(String, i64, String)>) -> String {
    let missing = want.difference(got).count();
    let extra = got.difference(want).count();
    format!(
        "{missing} missing, {extra} extra; first missing {:?}, first extra {:?}",
        want.difference(got).next(),
        got.difference(want).next()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_are_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let vm = Vm::start(&dir.path().join("vm"), free_port()).await;
    let mut index = SeriesIndex::default();
    index.insert("smart-dc", "pac 1,a=b", "pac", "hall ü", "R1");
    let (tx, sink) = influxdb::start(options(&vm.url(), &dir.path().join("spool")), index).unwrap();
    let at = DateTime::<Utc>::from_timestamp_millis(base_ms()).unwrap();
    let id = |p: &str| PointId::new("smart-dc", "pac 1,a=b", p);
    tx.offer(Reading::good(id("supply_temp"), Value::Number(18.25), at));
    tx.offer(Reading::good(id("running"), Value::Bool(true), at));
    tx.offer(Reading::good(
        id("mode"),
        Value::State {
            raw: 3,
            name: Some(Arc::from("cooling")),
        },
        at,
    ));
    tx.offer(Reading::bad(id("return_temp"), BadReason::Timeout, at));
    // Unknown device: counted, not written.
    tx.offer(Reading::good(
        PointId::new("dc", "ghost", "x"),
        Value::Number(1.0),
        at,
    ));
    let stats = sink.stats();
    wait_until(10, "4 lines written", || stats.sample().lines_written == 4).await;
    drop(tx);
    sink.join().await;
    let sample = stats.sample();
    assert_eq!(sample.unencodable, 1);
    assert_eq!(sample.spool_lines, 0);

    let labels = "device=pac 1,a=b,rack=R1,room=hall ü,site=smart-dc".to_owned();
    let ms = at.timestamp_millis();
    let one = |v: &str| BTreeSet::from([(labels.clone(), ms, v.to_owned())]);
    assert_eq!(vm.export("pac_supply_temp").await, one("18.25"));
    assert_eq!(vm.export("pac_running").await, one("1"));
    assert_eq!(vm.export("pac_mode").await, one("3"));
    assert_eq!(vm.export("pac_supply_temp_quality").await, one("0"));
    assert_eq!(vm.export("pac_return_temp_quality").await, one("1"));
    assert!(vm.export("pac_return_temp").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_load_loses_nothing_and_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Vm::start(&dir.path().join("vm"), free_port()).await;
    let (tx, sink) = start(options(&vm.url(), &dir.path().join("spool")));
    let stats = sink.stats();
    let base = base_ms();
    const N: usize = 40_000;
    // 8000 readings per second for 5 s; the server is down from 1 s to 3 s.
    let generator = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for chunk in 0..N / 80 {
            tick.tick().await;
            for i in chunk * 80..(chunk + 1) * 80 {
                tx.offer(generated(base, i));
            }
        }
        tx
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    vm.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spooled_during_outage = stats.sample().spool.appended_lines;
    vm.restart().await;
    let tx = generator.await.unwrap();
    wait_until(30, "every line written", || {
        let s = stats.sample();
        s.lines_written == N as u64 && s.spool_lines == 0
    })
    .await;
    drop(tx);
    sink.join().await;
    let sample = stats.sample();
    assert!(
        spooled_during_outage > 0,
        "the outage should have sent batches to the spool: {sample:?}"
    );
    assert!(sample.failures_transport > 0, "{sample:?}");
    assert_eq!(sample.dropped_queue_full, 0);
    assert_eq!(
        sample.spool.dropped_bytes_lines + sample.spool.dropped_age_lines,
        0
    );
    let got = vm.export("ups_load_pct").await;
    let want = expected(base, 0..N);
    assert!(got == want, "{}", diff(&got, &want));
}

/// Child mode of [`kill_9_during_an_outage_keeps_the_spool`]: writes the generated set
/// to a server that is down, reports when all of it is spooled, and waits to be killed.
async fn child_writes_into_an_outage(spool_dir: &str, url: &str, base: i64, n: usize) {
    let (tx, sink) = start(options(url, Path::new(spool_dir)));
    for i in 0..n {
        tx.offer(generated(base, i));
    }
    let stats = sink.stats();
    wait_until(30, "everything spooled", || {
        stats.sample().spool.appended_lines == n as u64
    })
    .await;
    println!("SPOOLED {}", stats.sample().spool_lines);
    // The writer keeps retrying the spool until the parent kills this process.
    tokio::time::sleep(Duration::from_secs(60)).await;
    panic!("the parent should have killed this child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_outage_keeps_the_spool() {
    const N: usize = 6_000;
    if let Ok(args) = std::env::var(CHILD_ENV) {
        let parts: Vec<&str> = args.splitn(3, ' ').collect();
        let base: i64 = parts[1].parse().unwrap();
        return child_writes_into_an_outage(parts[0], parts[2], base, N).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let base = base_ms();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_during_an_outage_keeps_the_spool",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{} {base} {url}", spool_dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest prints `test NAME ... ` before the child's own output.
            .find_map(|l| l.split_once("SPOOLED ").map(|(_, n)| n.trim().to_owned()))
    })
    .await
    .unwrap();
    assert_eq!(
        line,
        Some(N.to_string()),
        "the child reports everything spooled"
    );
    // kill -9 while the child's writer is retrying against the dead server.
    child.kill().unwrap();
    child.wait().unwrap();

    let vm = Vm::start(&dir.path().join("vm"), port).await;
    let (tx, sink) = start(options(&url, &spool_dir));
    let stats = sink.stats();
    assert_eq!(
        stats.sample().spool_lines,
        N as u64,
        "the spool survived the kill"
    );
    wait_until(30, "the spool replayed", || {
        let s = stats.sample();
        s.spool_lines == 0 && s.lines_written == N as u64
    })
    .await;
    drop(tx);
    sink.join().await;
    assert_eq!(stats.sample().spool.corrupt_records, 0);
    let got = vm.export("ups_load_pct").await;
    let want = expected(base, 0..N);
    assert!(got == want, "{}", diff(&got, &want));
}

/// Lines of the record at `index` of a segment file (format: spool module doc).
fn record_lines(segment: &[u8], index: usize) -> (usize, Vec<String>) {
    let mut at = 0;
    for _ in 0..index {
        let len = u32::from_le_bytes(segment[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 24 + len;
    }
    let len = u32::from_le_bytes(segment[at + 4..at + 8].try_into().unwrap()) as usize;
    let body = std::str::from_utf8(&segment[at + 24..at + 24 + len]).unwrap();
    (at, body.lines().map(str::to_owned).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_segment_loses_only_its_bad_record() {
    const N: usize = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let base = base_ms();
    // Spool everything against a dead server, then stop the sink.
    let (tx, sink) = start(options(&url, &spool_dir));
    for i in 0..N {
        tx.offer(generated(base, i));
    }
    let stats = sink.stats();
    wait_until(30, "everything spooled", || {
        stats.sample().spool.appended_lines == N as u64
    })
    .await;
    drop(tx);
    sink.join().await;

    // Flip one payload byte of the second record of the first segment.
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() > 1, "several segments expected");
    let mut data = std::fs::read(&segments[0]).unwrap();
    let (at, lost_lines) = record_lines(&data, 1);
    assert!(!lost_lines.is_empty());
    data[at + 24 + 10] ^= 0x01;
    std::fs::write(&segments[0], &data).unwrap();
    // The readings whose lines were in that record: value = reading index.
    let lost: BTreeSet<usize> = lost_lines
        .iter()
        .map(|l| {
            let value = l.split(' ').nth(1).unwrap();
            let v = value
                .split(',')
                .next()
                .unwrap()
                .trim_start_matches("load_pct=");
            v.parse::<usize>().unwrap()
        })
        .collect();

    let vm = Vm::start(&dir.path().join("vm"), port).await;
    let (tx, sink) = start(options(&url, &spool_dir));
    let stats = sink.stats();
    wait_until(30, "the spool replayed", || stats.sample().spool_lines == 0).await;
    drop(tx);
    sink.join().await;
    let sample = stats.sample();
    assert_eq!(sample.spool.corrupt_records, 1);
    assert_eq!(sample.spool.corrupt_lines, lost.len() as u64);
    assert_eq!(sample.lines_written, (N - lost.len()) as u64);
    let got = vm.export("ups_load_pct").await;
    let want = expected(base, (0..N).filter(|i| !lost.contains(i)));
    assert!(got == want, "{}", diff(&got, &want));
}

// ---- Line protocol against a reference parser ----

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

#[derive(Debug, PartialEq)]
struct Line {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, Field)>,
    ts: i64,
}

/// Reads an identifier up to an unescaped stop character; `\X` for a special X is X.
fn ident(s: &[char], at: &mut usize, stops: &[char], special: &[char]) -> String {
    let mut out = String::new();
    while *at < s.len() && !stops.contains(&s[*at]) {
        if s[*at] == '\\' && *at + 1 < s.len() && special.contains(&s[*at + 1]) {
            out.push(s[*at + 1]);
            *at += 2;
        } else {
            out.push(s[*at]);
            *at += 1;
        }
    }
    out
}

/// A reference parser of the InfluxDB v2 line protocol (one line, no trailing newline).
fn parse_line(line: &str) -> Line {
    let s: Vec<char> = line.chars().collect();
    let mut at = 0;
    let measurement = ident(&s, &mut at, &[',', ' '], &[',', ' ']);
    let mut tags = Vec::new();
    while s[at] == ',' {
        at += 1;
        let k = ident(&s, &mut at, &['='], &[',', '=', ' ']);
        at += 1;
        let v = ident(&s, &mut at, &[',', ' '], &[',', '=', ' ']);
        tags.push((k, v));
    }
    assert_eq!(s[at], ' ');
    let mut fields = Vec::new();
    loop {
        at += 1;
        let k = ident(&s, &mut at, &['='], &[',', '=', ' ']);
        at += 1;
        let value = if s[at] == '"' {
            at += 1;
            let mut v = String::new();
            while s[at] != '"' {
                if s[at] == '\\' && (s[at + 1] == '"' || s[at + 1] == '\\') {
                    at += 1;
                }
                v.push(s[at]);
                at += 1;
            }
            at += 1;
            Field::Str(v)
        } else {
            let raw: String = ident(&s, &mut at, &[',', ' '], &[]);
            if let Some(i) = raw.strip_suffix('i') {
                Field::Int(i.parse().unwrap())
            } else if raw == "true" || raw == "false" {
                Field::Bool(raw == "true")
            } else {
                Field::Float(raw.parse().unwrap())
            }
        };
        fields.push((k, value));
        if s[at] == ' ' {
            break;
        }
        assert_eq!(s[at], ',');
    }
    at += 1;
    let ts: String = s[at..].iter().collect();
    Line {
        measurement,
        tags,
        fields,
        ts: ts.parse().unwrap(),
    }
}

/// Identifiers: anything line protocol can carry, with the characters that need escaping.
fn id_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,=\"_.:é😀-]{1,12}"
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Number),
        any::<bool>().prop_map(Value::Bool),
        (any::<i64>(), proptest::option::of("[ -~é]{0,16}")).prop_map(|(raw, name)| {
            Value::State {
                raw,
                name: name.map(Arc::from),
            }
        }),
        "[ -~é]{0,24}".prop_map(|t| Value::Text(Arc::from(t))),
    ]
}

proptest! {
    #[test]
    fn encoded_lines_read_back_exactly(
        site in id_strategy(),
        room in id_strategy(),
        rack in proptest::option::of(id_strategy()),
        device in id_strategy(),
        point in id_strategy(),
        value in value_strategy(),
        good in any::<bool>(),
        ts in -9_000_000_000_000_000_000i64..9_000_000_000_000_000_000,
    ) {
        let rack_tag = rack.clone().unwrap_or_default();
        let key = SeriesKey::new(
            "ups",
            &[("site", &site, false), ("room", &room, false), ("rack", &rack_tag, true), ("device", &device, false)],
        ).unwrap();
        let at = DateTime::<Utc>::from_timestamp_nanos(ts);
        let id = PointId::new(&site, &device, &point);
        let reading = if good {
            Reading::good(id, value.clone(), at)
        } else {
            Reading::bad(id, BadReason::Timeout, at)
        };
        let mut out = String::new();
        line_protocol::encode(&key, &reading, &mut out).unwrap();
        prop_assert!(out.ends_with('\n'));
        prop_assert_eq!(out.matches('\n').count(), 1);
        let line = parse_line(out.trim_end_matches('\n'));
        let mut tags = vec![("site".to_owned(), site), ("room".to_owned(), room)];
        if let Some(rack) = rack {
            tags.push(("rack".to_owned(), rack));
        }
        tags.push(("device".to_owned(), device));
        let mut fields = Vec::new();
        if good {
            match &value {
                Value::Number(n) => fields.push((point.clone(), Field::Float(*n))),
                Value::Bool(b) => fields.push((point.clone(), Field::Bool(*b))),
                Value::State { raw, name } => {
                    fields.push((point.clone(), Field::Int(*raw)));
                    if let Some(name) = name {
                        fields.push((format!("{point}_name"), Field::Str(name.to_string())));
                    }
                }
                Value::Text(t) => fields.push((point.clone(), Field::Str(t.to_string()))),
            }
        }
        fields.push((format!("{point}_quality"), Field::Int(if good { 0 } else { 1 })));
        prop_assert_eq!(line, Line { measurement: "ups".into(), tags, fields, ts });
    }
}

// ---- Refusals and Retry-After, against a scripted server ----

/// What the scripted server saw: per request, the arrival time and the body's lines.
#[derive(Default)]
struct Script {
    /// Requests answered 503 with `Retry-After: 1` before any is accepted.
    unavailable_first: usize,
    requests: Vec<(std::time::Instant, Vec<String>)>,
    accepted: Vec<String>,
}

/// An InfluxDB stand-in: 503 + `Retry-After: 1` for the first `unavailable_first`
/// requests, 400 for a body holding `poison`, else 204.
async fn scripted_server(script: Arc<std::sync::Mutex<Script>>) -> String {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    async fn write(
        State(script): State<Arc<std::sync::Mutex<Script>>>,
        body: String,
    ) -> axum::response::Response {
        let mut s = script.lock().unwrap();
        let lines: Vec<String> = body.lines().map(str::to_owned).collect();
        s.requests.push((std::time::Instant::now(), lines.clone()));
        if s.requests.len() <= s.unavailable_first {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("Retry-After", "1")],
                "busy",
            )
                .into_response();
        }
        if body.contains("poison") {
            return (StatusCode::BAD_REQUEST, "unable to parse 'poison'").into_response();
        }
        s.accepted.extend(lines);
        StatusCode::NO_CONTENT.into_response()
    }
    let app = axum::Router::new()
        .route("/api/v2/write", axum::routing::post(write))
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_line_is_quarantined_and_the_rest_written() {
    const N: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(std::sync::Mutex::new(Script::default()));
    let url = scripted_server(script.clone()).await;
    let mut opts = options(&url, &dir.path().join("spool"));
    opts.gzip = false;
    opts.batch_max_points = N;
    opts.flush_interval = Duration::from_secs(5);
    let mut index = index();
    index.insert("dc", "poison-1", "ups", "ups-room", "");
    let (tx, sink) = influxdb::start(opts, index).unwrap();
    let base = base_ms();
    let poison = Reading::good(
        PointId::new("dc", "poison-1", "load_pct"),
        Value::Number(7.0),
        DateTime::<Utc>::from_timestamp_millis(base).unwrap(),
    );
    for i in 0..N - 1 {
        if i == 1234 {
            tx.offer(poison.clone());
        }
        tx.offer(generated(base, i));
    }
    let stats = sink.stats();
    wait_until(20, "the batch written", || {
        let s = stats.sample();
        s.lines_written == (N - 1) as u64 && s.spool.quarantined_lines == 1
    })
    .await;
    drop(tx);
    sink.join().await;
    let sample = stats.sample();
    assert_eq!(sample.spool_lines, 0);
    assert_eq!(sample.failures_status, 0);

    let script = script.lock().unwrap();
    // Exactly the good lines were accepted, once each.
    let accepted: BTreeSet<&String> = script.accepted.iter().collect();
    assert_eq!(script.accepted.len(), N - 1);
    assert_eq!(accepted.len(), N - 1);
    assert!(!script.accepted.iter().any(|l| l.contains("poison")));
    // Bisection: the poison line was sent alone once, and never again after that.
    let alone: Vec<usize> = script
        .requests
        .iter()
        .enumerate()
        .filter(|(_, (_, lines))| lines.len() == 1 && lines[0].contains("poison"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(alone.len(), 1);
    assert!(
        script.requests[alone[0] + 1..]
            .iter()
            .all(|(_, lines)| !lines.iter().any(|l| l.contains("poison")))
    );
    // ceil(log2(5000)) + 1 requests carry it on the way down.
    let carrying = script
        .requests
        .iter()
        .filter(|(_, lines)| lines.iter().any(|l| l.contains("poison")))
        .count();
    assert!(
        carrying <= 14,
        "{carrying} requests carried the poison line"
    );
    let quarantine = std::fs::read_to_string(dir.path().join("spool/quarantine.lp")).unwrap();
    assert_eq!(quarantine.matches("poison-1").count(), 1, "{quarantine}");
    assert!(quarantine.contains("HTTP 400"), "{quarantine}");
}

/// Requests in flight now and at most, and the lines accepted, at a server that answers
/// each write after a fixed delay.
#[derive(Default)]
struct Slow {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
    accepted: std::sync::Mutex<Vec<String>>,
}

async fn slow_server(slow: Arc<Slow>, delay: Duration) -> String {
    use std::sync::atomic::Ordering::SeqCst;
    let app =
        axum::Router::new()
            .route(
                "/api/v2/write",
                axum::routing::post(
                    move |axum::extract::State(slow): axum::extract::State<Arc<Slow>>,
                          body: String| async move {
                        let now = slow.now.fetch_add(1, SeqCst) + 1;
                        slow.max.fetch_max(now, SeqCst);
                        tokio::time::sleep(delay).await;
                        slow.accepted
                            .lock()
                            .unwrap()
                            .extend(body.lines().map(str::to_owned));
                        slow.now.fetch_sub(1, SeqCst);
                        axum::http::StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(slow);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_written_concurrently_up_to_the_limit() {
    // 40 batches of 100 lines at a server that takes 200 ms per write: one writer at a
    // time would need 8 s; the limit is 3 requests in flight, never more.
    const N: usize = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(Slow::default());
    let url = slow_server(slow.clone(), Duration::from_millis(200)).await;
    let mut opts = options(&url, &dir.path().join("spool"));
    opts.gzip = false;
    opts.batch_max_points = 100;
    opts.max_in_flight = 3;
    opts.pending_batches = 64;
    let (tx, sink) = start(opts);
    let base = base_ms();
    for i in 0..N {
        tx.offer(generated(base, i));
    }
    let stats = sink.stats();
    wait_until(30, "every line written", || {
        stats.sample().lines_written == N as u64
    })
    .await;
    drop(tx);
    sink.join().await;
    let sample = stats.sample();
    assert_eq!(sample.spool_lines, 0);
    assert_eq!(sample.failures_transport + sample.failures_status, 0);
    assert_eq!(
        slow.max.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "requests in flight at most"
    );
    let accepted = slow.accepted.lock().unwrap();
    assert_eq!(accepted.len(), N, "each line once");
    let distinct: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(distinct.len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(std::sync::Mutex::new(Script {
        unavailable_first: 2,
        ..Script::default()
    }));
    let url = scripted_server(script.clone()).await;
    let mut opts = options(&url, &dir.path().join("spool"));
    opts.gzip = false;
    let (tx, sink) = influxdb::start(opts, index()).unwrap();
    let base = base_ms();
    for i in 0..100 {
        tx.offer(generated(base, i));
    }
    let stats = sink.stats();
    wait_until(20, "the batch written", || {
        stats.sample().lines_written == 100
    })
    .await;
    drop(tx);
    sink.join().await;
    let script = script.lock().unwrap();
    assert_eq!(script.accepted.len(), 100);
    assert!(script.requests.len() >= 3);
    // The server asked for 1 s twice: no attempt came earlier.
    for pair in script.requests[..3].windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    }
    assert_eq!(stats.sample().failures_status, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcguard_run_writes_readings_to_influxdb() {
    use dcguard::app::{App, RunOptions};
    use dcguard::config::model::{Influxdb, SecretRef};
    use firmware_stubs::sim::{Sim, SimOptions};
    let dir = tempfile::tempdir().unwrap();
    let vm = Vm::start(&dir.path().join("vm"), free_port()).await;
    // The devices are the firmware stubs of the three sites on ephemeral ports, the broker
    // a Mosquitto of this test: never whatever listens on the shipped ports (15xxx, 1883).
    let broker = common::Broker::start(dir.path(), free_port()).await;
    let sim = Sim::start(SimOptions::new(common::shipped_dir()).ephemeral())
        .await
        .unwrap();
    let token = dir.path().join("influx-token");
    std::fs::write(&token, "file-token\n").unwrap();
    let mut config =
        dcguard::config::load(&common::shipped_dir()).expect("shipped config is valid");
    config.daemon.data_dir = dir.path().join("data");
    config.influxdb = Some(Influxdb {
        enabled: true,
        url: vm.url(),
        org: "kemenkeu".into(),
        bucket: "dcguard".into(),
        token: Some(SecretRef::File(token)),
        batch_max_points: 1000,
        flush_interval: Duration::from_millis(200),
        queue_capacity: 65536,
        spool_max_bytes: 64 << 20,
        spool_max_age: Duration::from_secs(3600),
        gzip: true,
        max_in_flight: 4,
    });
    let sites: BTreeSet<String> = config.sites.iter().map(|s| s.id.clone()).collect();
    let options = RunOptions {
        listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        endpoint_overrides: sim.endpoints().clone(),
        broker_overrides: std::collections::BTreeMap::from([(
            "sim".to_owned(),
            ("127.0.0.1".to_owned(), broker.addr.port()),
        )]),
        // Never the shipped /var/lib/dcguard: tests keep their state in a temp dir.
        data_dir: Some(dir.path().join("data")),
        ..RunOptions::default()
    };
    let app = App::start(Arc::new(config), options).await.unwrap();
    let daemon = app.http_addr();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.run_until(shutdown.clone()));
    // Waits for what is asserted, not for "some line was written": the first batches
    // hold whichever devices answered first, and the daemon must be running (polling)
    // while it is waited for. Every site's quality series stored and read back from
    // VictoriaMetrics (a hang guard, not a timing assertion).
    let stored = |series: &BTreeSet<(String, i64, String)>| -> BTreeSet<String> {
        series
            .iter()
            .filter_map(|(labels, _, _)| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("site="))
                    .map(str::to_owned)
            })
            .collect()
    };
    let guard = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut series = BTreeSet::new();
    while tokio::time::Instant::now() < guard {
        series = vm.export_match("{__name__=~\".+_quality\"}").await;
        if stored(&series) == sites {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored(&series), sites, "sites with stored quality series");
    // Every stored series carries the device tag, and the stubs' readings are good.
    assert!(
        series
            .iter()
            .all(|(labels, _, _)| labels.contains("device="))
    );
    assert!(series.iter().any(|(_, _, quality)| quality == "0"));
    // The daemon counts what it wrote, and dropped nothing for a full queue.
    let (status, _, scrape) = common::http_get(daemon, "/metrics").await;
    assert_eq!(status, 200);
    let written = scrape
        .lines()
        .find(|l| l.starts_with("dcguard_influx_lines_written_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(written.is_some_and(|n| n > 0.0), "{scrape}");
    assert!(
        scrape
            .contains("dcguard_readings_dropped_total{reason=\"queue_full\",sink=\"influxdb\"} 0")
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
    drop(sim);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_disk_budget_the_loss_is_counted_exactly() {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut opts = options(&url, &spool_dir);
    // About a third of the generated lines fit.
    opts.spool.max_bytes = 512 << 10;
    opts.spool.segment_bytes = 32 << 10;
    let base = base_ms();
    let (tx, sink) = influxdb::start(opts.clone(), index()).unwrap();
    for i in 0..N {
        tx.offer(generated(base, i));
    }
    let stats = sink.stats();
    wait_until(30, "everything spooled", || {
        stats.sample().spool.appended_lines == N as u64
    })
    .await;
    drop(tx);
    sink.join().await;
    let dropped = stats.sample().spool.dropped_bytes_lines;
    assert!(dropped > 0 && dropped < N as u64, "dropped {dropped}");
    assert_eq!(stats.sample().spool_lines, N as u64 - dropped);

    // The daemon's alarm "time-series data lost" from the same counters (the watcher that
    // `dcguard run` starts), in a real alarm task: active, latched, with the exact count.
    let config = dcguard::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .unwrap_or_else(|e| panic!("{e}"));
    let store = dcguard::store::Store::open(&dir.path().join("alarms.db")).unwrap();
    let alarms = AlarmTask::start(&config, store, AlarmTaskOptions::default(), None, None).unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let watcher = watch_timeseries(alarms.handle.clone(), stats.clone(), cancel.clone());
    let loss = || {
        alarms
            .handle
            .view()
            .alarms
            .iter()
            .find(|a| a.key.site == "daemon" && a.key.rule == "timeseries_data_lost")
            .map(|a| {
                (
                    a.state.is_active(),
                    a.params.latching,
                    a.info.value,
                    a.info.summary.clone(),
                )
            })
    };
    wait_until(30, "the data-loss alarm", || loss().is_some_and(|l| l.0)).await;
    let (_, latching, value, summary) = loss().unwrap();
    assert!(latching, "{summary}");
    assert_eq!(value, Some(dropped as f64), "{summary}");
    assert!(
        summary.contains(&format!("disk budget {dropped}")),
        "{summary}"
    );
    cancel.cancel();
    watcher.await.unwrap();
    drop(alarms);

    let vm = Vm::start(&dir.path().join("vm"), port).await;
    let (tx, sink) = influxdb::start(opts, index()).unwrap();
    let stats = sink.stats();
    wait_until(30, "the spool replayed", || stats.sample().spool_lines == 0).await;
    drop(tx);
    sink.join().await;
    let got = vm.export("ups_load_pct").await;
    let want = expected(base, 0..N);
    assert!(got.is_subset(&want), "{}", diff(&got, &want));
    assert_eq!(
        want.len() - got.len(),
        dropped as usize,
        "missing = counted drops"
    );
    // The newest lines survived (the budget drops the oldest).
    assert!(got.contains(&expected(base, [N - 1]).into_iter().next().unwrap()));
}
