//! The guard's security properties: the rate limit on authentication failures (429 with
//! `Retry-After`, per source address and per token), the audit records of denials, a canary
//! token that never appears in logs, metrics, responses or the audit chain, `/metrics`
//! access in both modes, and the refusal of a route the matrix does not list.

mod common;
mod common_api;
mod common_web;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use common_api::{ApiRig, RigOptions, assert_error};
use dcguard::access::audit::NewRecord;
use dcguard::alarms::task::{AlarmTask, AlarmTaskOptions};
use dcguard::api::auth::{Role, TokenStore, fingerprint, new_token};
use dcguard::api::ratelimit::LimitSettings;
use dcguard::api::{self, ApiContext, ApiParts, Readiness, matrix};
use dcguard::app::LiveState;
use dcguard::config;
use dcguard::incidents::outbox::Outbox;
use dcguard::sources::health::HealthRegistry;
use dcguard::store::Store;
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// A client whose requests come from `ip` (a loopback address other than 127.0.0.1).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn get_as(
    client: &reqwest::Client,
    rig: &ApiRig,
    path: &str,
    token: &str,
) -> (u16, Option<u64>, Value) {
    let resp = client
        .get(rig.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (
        status,
        retry,
        common_api::parse(&resp.text().await.unwrap()),
    )
}

/// Three failures lock the source address (then even a valid token from it gets 429 with
/// `Retry-After`), lock the unknown token (also from a fresh address), and a valid token
/// that keeps calling forbidden routes is locked from any address; other addresses and
/// tokens are not affected. Every refusal is in the audit chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_lock_the_source_and_the_token_with_429_and_retry_after() {
    let rig = ApiRig::start(RigOptions {
        limits: LimitSettings {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            max_entries: 100,
            ..LimitSettings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let stolen = "dcg_0000000000000000000000000000000000000000000000000000000000000000";
    let viewer = rig.token(Role::Viewer).to_owned();
    let a = client_from([127, 0, 0, 2]);
    for _ in 0..3 {
        let (status, _, body) = get_as(&a, &rig, "/api/v1/sites", stolen).await;
        assert_error(status, &body, 401, "invalid_token");
    }
    let (status, retry, body) = get_as(&a, &rig, "/api/v1/sites", stolen).await;
    assert_error(status, &body, 429, "rate_limited");
    let retry = retry.expect("Retry-After");
    assert!((1..=300).contains(&retry), "{retry}");
    // The source is locked: a valid token from it is refused too.
    let (status, retry, body) = get_as(&a, &rig, "/api/v1/sites", &viewer).await;
    assert_error(status, &body, 429, "rate_limited");
    assert!(retry.is_some());
    // The unknown token is locked from any address.
    let b = client_from([127, 0, 0, 3]);
    let (status, _, body) = get_as(&b, &rig, "/api/v1/sites", stolen).await;
    assert_error(status, &body, 429, "rate_limited");
    // Another address with a valid token is served.
    let (status, _, _) = get_as(&b, &rig, "/api/v1/sites", &viewer).await;
    assert_eq!(status, 200);

    // A valid token calling a forbidden route from three addresses: the token is locked.
    for last in 4..7u8 {
        let c = client_from([127, 0, 0, last]);
        let resp = c
            .post(rig.url("/api/v1/alarms/acknowledge"))
            .bearer_auth(&viewer)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403);
    }
    let fresh = client_from([127, 0, 0, 8]);
    let (status, _, body) = get_as(&fresh, &rig, "/api/v1/sites", &viewer).await;
    assert_error(status, &body, 429, "rate_limited");
    let (status, _, _) = get_as(&fresh, &rig, "/api/v1/sites", rig.token(Role::Operator)).await;
    assert_eq!(status, 200);

    // Every refusal reached the audit chain with who, what, result and source.
    let mut records = Vec::new();
    for _ in 0..100 {
        records = rig.audit_records();
        if records.len() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = |result: &str| {
        records
            .iter()
            .filter(|r| r["payload"]["result"] == result)
            .count()
    };
    assert_eq!(count("invalid_token"), 3, "{records:#?}");
    assert_eq!(count("rate_limited"), 4, "{records:#?}");
    assert_eq!(count("forbidden"), 3, "{records:#?}");
    let invalid = records
        .iter()
        .find(|r| r["payload"]["result"] == "invalid_token")
        .unwrap();
    assert_eq!(invalid["actor"], "anonymous");
    assert_eq!(invalid["payload"]["source"], "127.0.0.2");
    assert_eq!(
        invalid["payload"]["token_fingerprint"],
        fingerprint(stolen).as_str()
    );
    assert_eq!(invalid["payload"]["action"], "GET /api/v1/sites");
    let forbidden = records
        .iter()
        .find(|r| r["payload"]["result"] == "forbidden")
        .unwrap();
    assert_eq!(forbidden["actor"], "test-viewer");
    assert_eq!(forbidden["payload"]["role"], "viewer");
    let data = rig.data.clone();
    let _dir = rig.stop().await;
    // The chain with the API's records still verifies.
    let summary = dcguard::access::ingest::verify_chain(&data, None).expect("chain verifies");
    assert!(summary.contains("intact"), "{summary}");
}

/// A writer for the global tracing subscriber that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A canary token, valid (admin) and mangled (invalid), sent to every kind of route, in
/// headers and in query strings: it appears in none of the captured logs (all levels), the
/// `/metrics` scrape, the answers or the audit chain, while the requests were indeed
/// logged, counted and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_token_never_appears_in_logs_metrics_responses_or_the_audit_chain() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace,rumqttc=info,hyper=info,reqwest=info,h2=info")
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();
    let canary = new_token("canary-holder", Role::Admin).unwrap();
    let rig = ApiRig::start(RigOptions {
        extra_tokens: canary.entry.clone(),
        limits: LimitSettings {
            max_failures: 5,
            ..LimitSettings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let token = canary.token.as_str();
    let mangled = format!("{token}x");
    let mut answers = String::new();
    let calls: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/v1/sites".into(), None),
        ("GET", format!("/api/v1/sites/{token}"), None),
        ("GET", format!("/api/v1/alarms?site={token}"), None),
        ("GET", format!("/api/v1/incidents?limit={token}"), None),
        ("GET", format!("/api/v1/incidents/{token}"), None),
        ("GET", format!("/api/v1/nothing/{token}"), None),
        (
            "POST",
            "/api/v1/alarms/acknowledge".into(),
            Some(json!({"site": token, "rule": token, "comment": "x"})),
        ),
        (
            "POST",
            "/api/v1/alarms/shelve".into(),
            Some(json!({token: 1})),
        ),
        (
            "POST",
            format!("/api/v1/maintenance-windows/{token}/end"),
            Some(json!({})),
        ),
        ("GET", "/metrics".into(), None),
    ];
    // The web sign-in with the canary (it signs in) and the mangled one (refused).
    for t in [token, mangled.as_str()] {
        let (status, headers, text) = common_web::sign_in(&rig, t).await;
        answers.push_str(&format!("{status} {headers:?} {text}\n"));
        if let Some(id) = common_web::set_cookie(&headers, "dcguard_session") {
            let cookie = format!("dcguard_session={id}");
            let (status, headers, text) = common_web::get(&rig, &cookie, "/control-room").await;
            assert_eq!(status, 200);
            answers.push_str(&format!("{status} {headers:?} {text}\n"));
        }
    }
    for (method, path, body) in &calls {
        for t in [token, mangled.as_str()] {
            let (status, headers, text) = rig.call(method, path, Some(t), body.as_ref()).await;
            answers.push_str(&format!("{status} {headers:?} {text}\n"));
        }
    }
    // The canary in other headers and schemes.
    let resp = rig
        .client
        .get(rig.url("/api/v1/sites"))
        .header("authorization", format!("Basic {token}"))
        .header("x-api-key", token)
        .send()
        .await
        .unwrap();
    answers.push_str(&format!(
        "{} {:?} {}\n",
        resp.status(),
        resp.headers().clone(),
        resp.text().await.unwrap()
    ));
    let (_, _, scrape) = rig.call("GET", "/metrics", None, None).await;
    assert!(scrape.contains("dcguard_api_requests_total"), "{scrape}");
    assert!(
        scrape.contains("dcguard_api_auth_failures_total{reason=\"invalid_token\"}"),
        "{scrape}"
    );
    // Wait for the denials' audit records.
    let mut records = Vec::new();
    for _ in 0..100 {
        records = rig.audit_records();
        if records
            .iter()
            .any(|r| r["payload"]["result"] == "invalid_token")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let data = rig.data.clone();
    let _dir = rig.stop().await;
    let chain = std::fs::read_to_string(data.join("access-audit.log")).unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();

    // The requests happened and were seen.
    assert!(answers.contains("\"code\":\"invalid_token\""), "{answers}");
    assert!(logs.contains("API request refused."), "no refusal logged");
    assert!(
        chain.contains("\"actor\":\"canary-holder\""),
        "no write audited"
    );
    assert!(
        answers.contains("canary-holder"),
        "the canary did not sign in"
    );
    assert!(logs.contains("Web sign-in."), "no web sign-in logged");
    assert!(chain.contains(&fingerprint(&mangled)));
    // The canary is nowhere. (A prefix of it is searched too: a truncated echo leaks.)
    let prefix = &token[..24];
    for (what, text) in [
        ("logs", &logs),
        ("metrics", &scrape),
        ("answers", &answers),
        ("audit chain", &chain),
    ] {
        assert!(
            !text.contains(prefix),
            "the canary token appears in the {what}"
        );
    }
    assert!(!records.is_empty());
}

/// With `metrics_access = "token"`, `/metrics` needs a token of a role the matrix allows,
/// also from loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_in_token_mode_need_a_token() {
    let rig = ApiRig::start(RigOptions {
        metrics_token: true,
        ..RigOptions::default()
    })
    .await;
    let (status, body) = rig.get("/metrics", None).await;
    assert_error(status, &body, 401, "unauthenticated");
    let (status, body) = rig.get("/metrics", Some(Role::Integrator)).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, headers, text) = rig
        .call("GET", "/metrics", Some(rig.token(Role::Viewer)), None)
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(text.contains("dcguard_device_up"));
    rig.stop().await;
}

/// An API state over the shipped configuration and an in-memory store, its audit records
/// collected in memory.
async fn bare_state() -> (api::ApiState, Arc<Mutex<Vec<NewRecord>>>) {
    bare_state_with(
        LimitSettings::default(),
        Arc::new(|| Ok("up 1\n".to_owned())),
    )
    .await
}

/// [`bare_state`] with limits and a `/metrics` renderer.
async fn bare_state_with(
    limits: LimitSettings,
    render_metrics: dcguard::http::RenderMetrics,
) -> (api::ApiState, Arc<Mutex<Vec<NewRecord>>>) {
    let config = Arc::new(config::load(&common::shipped_dir()).unwrap());
    let store = Store::in_memory().unwrap();
    let task = AlarmTask::start(
        &config,
        store.clone(),
        AlarmTaskOptions::default(),
        None,
        None,
    )
    .unwrap();
    let records: Arc<Mutex<Vec<NewRecord>>> = Arc::default();
    let sink = records.clone();
    let state = ApiContext::new(ApiParts {
        config,
        live: LiveState::new(),
        health: HealthRegistry::new(),
        alarms: task.handle,
        store: store.clone(),
        outbox: Outbox::new(store),
        tokens: TokenStore::empty(),
        append_audit: Arc::new(move |r| {
            sink.lock().unwrap().extend(r);
            Ok(())
        }),
        readiness: Arc::new(Readiness::default()),
        render_metrics,
        metrics: None,
        limits,
        data_dir: None,
        access: None,
    });
    (state, records)
}

fn request(path: &str, peer: [u8; 4]) -> Request<Body> {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    req
}

/// In loopback mode `/metrics` answers a loopback peer and refuses (403, audited) any
/// other address; the addresses are given to the router in-process, no traffic leaves
/// loopback.
#[tokio::test]
async fn metrics_in_loopback_mode_refuse_other_addresses() {
    let (state, records) = bare_state().await;
    let router = api::router(state, Router::new());
    let resp = router
        .clone()
        .oneshot(request("/metrics", [127, 0, 0, 1]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = router
        .oneshot(request("/metrics", [10, 20, 30, 40]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    let mut seen = false;
    for _ in 0..100 {
        seen =
            records.lock().unwrap().iter().any(|r| {
                r.payload["source"] == "10.20.30.40" && r.payload["result"] == "forbidden"
            });
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the refusal was not audited");
}

/// A route merged into the daemon's router without a matrix row is refused (fail closed)
/// and is visible to the route listing the matrix test checks.
#[tokio::test]
async fn a_route_missing_from_the_matrix_is_refused() {
    let (state, _) = bare_state().await;
    let extra = Router::new().route("/debug/dump", axum::routing::get(|| async { "secrets" }));
    let router = api::router(state, extra);
    assert!(api::served_paths(&router).contains(&"/debug/dump".to_owned()));
    let resp = router
        .oneshot(request("/debug/dump", [127, 0, 0, 1]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&body).contains("secrets"));
}

/// A concrete path for a matrix row: parameters replaced by a placeholder; the reader
/// routes get a serial.
fn concrete(rule: &matrix::RouteRule) -> String {
    let mut path = String::new();
    let mut inside = false;
    for c in rule.path.chars() {
        match c {
            '{' => inside = true,
            '}' => {
                inside = false;
                path.push('1');
            }
            _ if inside => {}
            _ => path.push(c),
        }
    }
    if path.starts_with("/iclock") {
        path.push_str("?SN=NOT-A-READER");
    }
    path
}

/// One HTTP/1.1 exchange over a raw connection: writes `head` (without its blank line) and
/// `body`, never more, then reads the answer until the server closes (guarded by
/// [`common_api::HANG`]). Returns (status, body text).
async fn raw_exchange(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{head}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let read = tokio::time::timeout(common_api::HANG, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    // One complete answer is enough (a server may keep reading the body).
                    if complete(&answer) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to {head}");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// True when `answer` holds a head and the whole body its `content-length` announces.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .is_some_and(|len| body.len() >= len)
}

/// Every route, whatever its method, guard or token, refuses a declared body over its limit
/// with 413 before reading it (the API's in the error shape, the readers' in plain text);
/// a body without a length is cut at the limit by the JSON routes; a body under the limit
/// is read (and judged on its content).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_size_limited_on_every_route() {
    let rig = ApiRig::start(RigOptions::default()).await;
    let admin = rig.token(Role::Admin).to_owned();
    let mut checked = 0;
    for rule in matrix::MATRIX {
        let path = concrete(rule);
        let limit = api::body_limit(rule.method, rule.path);
        for token in [None, Some(admin.as_str())] {
            let auth = token.map_or_else(String::new, |t| format!("\r\nauthorization: Bearer {t}"));
            let head = format!(
                "{} {path} HTTP/1.1\r\nhost: dcguard\r\ncontent-type: application/json\r\ncontent-length: {}{auth}",
                rule.method,
                limit + 1
            );
            let (status, body) = raw_exchange(rig.addr, &head, b"{\"a\":").await;
            let context = format!("{} {path}: {status} {body}", rule.method);
            assert_eq!(status, 413, "{context}");
            if !path.starts_with("/iclock") {
                assert_error(status, &common_api::parse(&body), 413, "payload_too_large");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, matrix::MATRIX.len() * 2);

    // Chunked (no length): the JSON extractor stops at the limit.
    let big = format!(
        "{{\"site\":\"dc\",\"rule\":\"x\",\"comment\":\"{}\"}}",
        "a".repeat(api::MAX_BODY_BYTES)
    );
    let mut chunked = Vec::new();
    for part in big.as_bytes().chunks(8192) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /api/v1/alarms/acknowledge HTTP/1.1\r\nhost: dcguard\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nauthorization: Bearer {}",
        rig.token(Role::Operator)
    );
    let (status, body) = raw_exchange(rig.addr, &head, &chunked).await;
    assert_error(status, &common_api::parse(&body), 413, "payload_too_large");

    // Just under the limit: read, and refused for what it says (no such rule).
    let comment = "a".repeat(api::MAX_BODY_BYTES - 100);
    let (status, body) = rig
        .post(
            "/api/v1/alarms/acknowledge",
            Some(Role::Operator),
            &json!({"site": "dc", "rule": "no_rule", "comment": comment}),
        )
        .await;
    assert_ne!(status, 413, "{body}");
    assert!(status < 500, "{body}");
    rig.stop().await;
}

/// Write routes that take no body.
const NO_BODY: &[&str] = &[
    "/api/v1/deliveries/{id}/retry",
    "/api/v1/maintenance-windows/{id}/end",
    "/api/v1/visits/{ticket}/cancel",
];

/// Every route that reads a body answers 503 `timeout` when the body stalls past the
/// request deadline (the readers' routes too), and the connection is freed; a GET whose
/// work stalls (here a `/metrics` render) is cut at the deadline the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_a_deadline() {
    let rig = ApiRig::start(RigOptions {
        limits: LimitSettings {
            request_timeout: Duration::from_secs(1),
            ..LimitSettings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let admin = rig.token(Role::Admin).to_owned();
    let mut checked = 0;
    for rule in matrix::MATRIX.iter().filter(|r| r.method != "GET") {
        let path = concrete(rule);
        // The web pages take forms.
        let content_type = if rule.is_page() {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        let head = format!(
            "{} {path} HTTP/1.1\r\nhost: dcguard\r\ncontent-type: {content_type}\r\ncontent-length: 1000\r\nauthorization: Bearer {admin}",
            rule.method
        );
        // 10 of the 1000 announced bytes, then nothing.
        let (status, body) = raw_exchange(rig.addr, &head, b"{\"site\":\"d").await;
        let context = format!("{} {path}: {status} {body}", rule.method);
        if matches!(rule.guard, matrix::Guard::Session(_)) {
            // A page post without a session (a token is no session) is refused before its
            // body is read.
            assert_eq!(status, 401, "{context}");
            continue;
        }
        if NO_BODY.contains(&rule.path) {
            // Answered without waiting for a body it does not read.
            assert!(status < 500, "{context}");
            continue;
        }
        assert_error(status, &common_api::parse(&body), 503, "timeout");
        assert!(body.contains("1000 ms"), "{context}");
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
    // The daemon still answers.
    let (status, _) = rig.get("/api/v1/sites", Some(Role::Viewer)).await;
    assert_eq!(status, 200);
    rig.stop().await;

    // A GET whose work outlasts the deadline.
    let (state, _) = bare_state_with(
        LimitSettings {
            request_timeout: Duration::from_millis(300),
            ..LimitSettings::default()
        },
        Arc::new(|| {
            // The renderer runs on a blocking thread: block it (a wait nobody ends).
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let _ = rx.recv_timeout(Duration::from_secs(3));
            drop(tx);
            Ok("up 1\n".to_owned())
        }),
    )
    .await;
    let router = api::router(state, Router::new());
    let resp = router
        .oneshot(request("/metrics", [127, 0, 0, 1]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "timeout");
}
