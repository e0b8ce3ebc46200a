//! A fake ServiceNow instance (the Table API subset dcguard uses) for the ServiceNow
//! adapter's tests, plus the fault injection shared with the PagerDuty fake.
//!
//! What it emulates, as a real instance does (and so what the adapter must cope with):
//!
//! - `GET /api/now/table/<table>` with `sysparm_query` (encoded query: `field=value`
//!   terms joined by `^`, `ORDERBY<field>` / `ORDERBYDESC<field>`), `sysparm_limit`,
//!   `sysparm_fields`, `sysparm_display_value` (`false`, `true`, `all`). With display
//!   values, the `work_notes` journal is rendered as text, newest entry first
//!   (`<time> - <user> (Work notes)\n<text>`); its plain value is empty.
//! - `POST /api/now/table/<table>` creates a record (201, `Location`, `{"result":{...}}`);
//!   `PATCH`/`PUT .../<sys_id>` updates one (200; 404 when there is no such record).
//!   `work_notes` written to a record add a journal entry; `priority` is derived from
//!   `impact` x `urgency` (the base instance's lookup), `sys_*`, `number` and `priority`
//!   are read-only; unknown fields are ignored silently.
//! - **No deduplication at all**: two creates with the same `correlation_id` make two
//!   records. String fields are cut to their length silently (`correlation_id` 100,
//!   `short_description` 160), as the database column does.
//! - State 6 (Resolved) requires `close_code` and `close_notes` (the base data policy):
//!   403 otherwise.
//! - Basic authentication: a wrong or missing user/password gets 401.
//!
//! Faults ([`Fault`]) apply per request (look-ups included): scripted for the next
//! requests, always, or at random with seeded rates.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

/// How the fake answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Behave normally.
    Normal,
    /// Answer with this status (e.g. 503, 500, 400, 401) without applying the request.
    Status(u16),
    /// 429 with `Retry-After: <secs>`, not applied.
    RateLimited {
        /// The `Retry-After` value, seconds.
        retry_after_secs: u64,
    },
    /// Wait this long (longer than the client's timeout), then 504; not applied.
    Timeout(Duration),
    /// Never answer (until the fake is dropped); not applied.
    BlackHole,
    /// Apply the request, then wait this long before answering (the client times out
    /// although the receiver applied it).
    SlowAfterApply(Duration),
}

/// The fault plan of a fake: scripted faults first, then the standing fault, then the
/// random ones.
#[derive(Debug, Default)]
pub struct Faults {
    script: VecDeque<Fault>,
    always: Option<Fault>,
    random: Vec<(f64, Fault)>,
    rng: Option<ChaCha8Rng>,
}

impl Faults {
    /// The fault for the next request.
    pub fn take_next(&mut self) -> Fault {
        if let Some(f) = self.script.pop_front() {
            return f;
        }
        if let Some(f) = &self.always {
            return f.clone();
        }
        if let Some(rng) = &mut self.rng {
            // One draw per request; the rates are shares of the unit interval in order.
            let draw: f64 = rng.random();
            let mut edge = 0.0;
            for (rate, f) in &self.random {
                edge += rate;
                if draw < edge {
                    return f.clone();
                }
            }
        }
        Fault::Normal
    }

    /// The next requests get these faults, in order (then the plan as before).
    pub fn script(&mut self, faults: impl IntoIterator<Item = Fault>) {
        self.script.extend(faults);
    }

    /// Every request gets this fault (`None`: back to normal).
    pub fn always(&mut self, fault: Option<Fault>) {
        self.always = fault;
    }

    /// Each request gets `fault` with probability `rate` (0..=1), from a seeded stream.
    pub fn random(&mut self, rate: f64, fault: Fault, seed: u64) {
        self.random_mix([(rate, fault)], seed);
    }

    /// Each request gets one of the faults with its probability (rates 0..=1, summing to
    /// at most 1), from a seeded stream.
    pub fn random_mix(&mut self, mix: impl IntoIterator<Item = (f64, Fault)>, seed: u64) {
        self.random = mix
            .into_iter()
            .map(|(rate, f)| {
                let rate = if rate.is_finite() {
                    rate.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                (rate, f)
            })
            .collect();
        self.rng = Some(ChaCha8Rng::seed_from_u64(seed));
    }

    /// Back to normal.
    pub fn clear(&mut self) {
        *self = Faults::default();
    }
}

/// Answers a request under `fault`; `apply` does the real work (and is not called when
/// the fault means "not applied").
pub async fn answer_with(
    fault: Fault,
    cancel: &CancellationToken,
    apply: impl FnOnce() -> Response,
) -> Response {
    match fault {
        Fault::Normal => apply(),
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, "Injected fault", &format!("HTTP {code}"))
        }
        Fault::RateLimited { retry_after_secs } => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded",
                "Injected fault",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Fault::Timeout(d) => {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = cancel.cancelled() => {}
            }
            error(StatusCode::GATEWAY_TIMEOUT, "Timed out", "Injected fault")
        }
        Fault::BlackHole => {
            cancel.cancelled().await;
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Shut down",
                "Injected fault",
            )
        }
        Fault::SlowAfterApply(d) => {
            let r = apply();
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = cancel.cancelled() => {}
            }
            r
        }
    }
}

/// A ServiceNow-style error reply.
pub fn error(status: StatusCode, message: &str, detail: &str) -> Response {
    let body = json!({"error": {"message": message, "detail": detail}, "status": "failure"});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_reply(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `name=value` pairs of a query string.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (url_decode(k), url_decode(v)),
            None => (url_decode(p), String::new()),
        })
        .collect()
}

/// Standard base64 decoding (padding optional); `None` when malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// One work note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    pub at: String,
    /// The user who wrote it.
    pub by: String,
    /// The note.
    pub text: String,
}

/// One record of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 32 hex digits.
    pub sys_id: String,
    /// `INC0010001`, ...
    pub number: String,
    /// Every field by name, as strings (`impact`, `urgency`, `priority`, `state`,
    /// `correlation_id`, `short_description`, `close_code`, ...).
    pub fields: BTreeMap<String, String>,
    /// The work notes, oldest first.
    pub work_notes: Vec<JournalEntry>,
}

impl Record {
    /// A field's value ("" when unset).
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// One request the fake answered (or is holding).
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// `GET`, `POST`, `PATCH`, ...
    pub method: String,
    /// The path.
    pub path: String,
    /// The fault it got.
    pub fault: Fault,
}

#[derive(Debug, Default)]
struct Inner {
    records: Vec<Record>,
    faults: Faults,
    log: Vec<Logged>,
}

#[derive(Debug)]
struct Shared {
    table: String,
    username: String,
    password: String,
    cancel: CancellationToken,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake instance, serving on a loopback port until dropped.
#[derive(Debug)]
pub struct FakeServiceNow {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Drop for FakeServiceNow {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// Length of `correlation_id`.
pub const CORRELATION_ID_LEN: usize = 100;
/// Length of `short_description`.
pub const SHORT_DESCRIPTION_LEN: usize = 160;

const READ_ONLY: [&str; 3] = ["number", "priority", "work_notes"];

impl FakeServiceNow {
    /// Starts an instance on 127.0.0.1 (a free port) with one table and one user.
    pub async fn start(table: &str, username: &str, password: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            table: table.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            cancel: cancel.clone(),
            inner: Mutex::new(Inner::default()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
        });
        Ok(FakeServiceNow { addr, shared })
    }

    /// `http://127.0.0.1:<port>` (the instance URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every record, in creation order.
    pub fn records(&self) -> Vec<Record> {
        self.shared.lock().records.clone()
    }

    /// The records with this `correlation_id`.
    pub fn records_with(&self, correlation_id: &str) -> Vec<Record> {
        self.shared
            .lock()
            .records
            .iter()
            .filter(|r| r.get("correlation_id") == correlation_id)
            .cloned()
            .collect()
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.lock().log.clone()
    }

    /// Changes the fault plan.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.lock().faults);
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = {
        let mut inner = shared.lock();
        let fault = inner.faults.take_next();
        inner.log.push(Logged {
            method: method.to_string(),
            path: uri.path().to_owned(),
            fault: fault.clone(),
        });
        fault
    };
    let cancel = shared.cancel.clone();
    answer_with(fault, &cancel, || {
        serve(&shared, &method, &uri, &headers, &body)
    })
    .await
}

fn authorised(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Some(decoded) = base64_decode(encoded.trim()).and_then(|b| String::from_utf8(b).ok())
    else {
        return false;
    };
    decoded.split_once(':') == Some((shared.username.as_str(), shared.password.as_str()))
}

fn serve(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if !authorised(shared, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "User Not Authenticated",
            "Required to provide Auth information",
        );
    }
    let prefix = format!("/api/now/table/{}", shared.table);
    let Some(rest) = uri.path().strip_prefix(&prefix) else {
        return error(StatusCode::BAD_REQUEST, "Invalid table", uri.path());
    };
    let sys_id = rest.strip_prefix('/').filter(|s| !s.is_empty());
    let user = shared.username.clone();
    let mut inner = shared.lock();
    match (method.as_str(), sys_id) {
        ("GET", None) => list(&inner.records, uri.query()),
        ("GET", Some(id)) => match inner.records.iter().find(|r| r.sys_id == id) {
            Some(r) => json_reply(
                StatusCode::OK,
                &json!({"result": render(r, None, Display::Value)}),
            ),
            None => not_found(),
        },
        ("POST", None) => {
            let Some(fields) = parse_body(body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Exception while reading request",
                    "not a JSON object",
                );
            };
            let n = inner.records.len() + 1;
            let mut record = Record {
                sys_id: format!("{:016x}{:016x}", 0x5eed_0000_0000_0000_u64 ^ n as u64, n),
                number: format!("INC{:07}", 10_000 + n),
                fields: BTreeMap::from([
                    ("state".to_owned(), "1".to_owned()),
                    ("impact".to_owned(), "3".to_owned()),
                    ("urgency".to_owned(), "3".to_owned()),
                ]),
                work_notes: vec![],
            };
            if let Err(m) = apply(&mut record, &fields, &user) {
                return error(StatusCode::FORBIDDEN, "Operation Failed", &m);
            }
            let location = format!("{prefix}/{}", record.sys_id);
            let reply = json!({"result": render(&record, None, Display::Value)});
            inner.records.push(record);
            let mut r = json_reply(StatusCode::CREATED, &reply);
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        ("PATCH" | "PUT", Some(id)) => {
            let Some(fields) = parse_body(body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Exception while reading request",
                    "not a JSON object",
                );
            };
            let Some(record) = inner.records.iter_mut().find(|r| r.sys_id == id) else {
                return not_found();
            };
            // All or nothing: a refused update leaves the record as it was.
            let mut updated = record.clone();
            if let Err(m) = apply(&mut updated, &fields, &user) {
                return error(StatusCode::FORBIDDEN, "Operation Failed", &m);
            }
            *record = updated;
            json_reply(
                StatusCode::OK,
                &json!({"result": render(record, None, Display::Value)}),
            )
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not supported",
            method.as_str(),
        ),
    }
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "No Record found",
        "Record doesn't exist or ACL restricts the record retrieval",
    )
}

fn parse_body(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Writes fields into a record as an instance would.
/// A refusal is the data policy's message (answered with 403).
fn apply(record: &mut Record, fields: &Map<String, Value>, user: &str) -> Result<(), String> {
    for (name, value) in fields {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        if name == "work_notes" {
            if !text.is_empty() {
                record.work_notes.push(JournalEntry {
                    at: now_text(),
                    by: user.to_owned(),
                    text,
                });
            }
            continue;
        }
        if name.starts_with("sys_") || READ_ONLY.contains(&name.as_str()) {
            continue;
        }
        let max = match name.as_str() {
            "correlation_id" => CORRELATION_ID_LEN,
            "short_description" => SHORT_DESCRIPTION_LEN,
            _ => usize::MAX,
        };
        record
            .fields
            .insert(name.clone(), text.chars().take(max).collect());
    }
    let level = |f: &str| match record.get(f) {
        "1" => 1,
        "2" => 2,
        _ => 3,
    };
    let priority = match level("impact") + level("urgency") {
        2 => "1",
        3 => "2",
        4 => "3",
        5 => "4",
        _ => "5",
    };
    record.fields.insert("priority".into(), priority.into());
    if record.get("state") == "6" {
        if record.get("close_code").is_empty() || record.get("close_notes").is_empty() {
            return Err(
                "Data Policy Exception: the following fields are mandatory: Resolution code, Resolution notes"
                    .to_owned(),
            );
        }
        if record.get("resolved_at").is_empty() {
            record.fields.insert("resolved_at".into(), now_text());
        }
    }
    record.fields.insert("sys_updated_on".into(), now_text());
    record
        .fields
        .entry("sys_created_on".into())
        .or_insert_with(now_text);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Display {
    Value,
    Text,
    All,
}

fn state_name(v: &str) -> &str {
    match v {
        "1" => "New",
        "2" => "In Progress",
        "3" => "On Hold",
        "6" => "Resolved",
        "7" => "Closed",
        "8" => "Canceled",
        other => other,
    }
}

fn journal_text(r: &Record) -> String {
    r.work_notes
        .iter()
        .rev()
        .map(|e| format!("{} - {} (Work notes)\n{}\n\n", e.at, e.by, e.text))
        .collect()
}

/// A record as the Table API returns it.
fn render(r: &Record, fields: Option<&[String]>, display: Display) -> Value {
    let mut all: BTreeMap<String, (String, String)> = r
        .fields
        .iter()
        .map(|(k, v)| {
            let shown = if k == "state" {
                state_name(v).to_owned()
            } else {
                v.clone()
            };
            (k.clone(), (v.clone(), shown))
        })
        .collect();
    all.insert("sys_id".into(), (r.sys_id.clone(), r.sys_id.clone()));
    all.insert("number".into(), (r.number.clone(), r.number.clone()));
    all.insert("work_notes".into(), (String::new(), journal_text(r)));
    let mut out = Map::new();
    for (k, (value, shown)) in all {
        if fields.is_some_and(|f| !f.contains(&k)) {
            continue;
        }
        let v = match display {
            Display::Value => json!(value),
            Display::Text => json!(shown),
            Display::All => json!({"display_value": shown, "value": value}),
        };
        out.insert(k, v);
    }
    Value::Object(out)
}

fn list(records: &[Record], query: Option<&str>) -> Response {
    let mut q = None;
    let mut limit = usize::MAX;
    let mut fields: Option<Vec<String>> = None;
    let mut display = Display::Value;
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "sysparm_query" => q = Some(v),
            "sysparm_limit" => limit = v.parse().unwrap_or(usize::MAX),
            "sysparm_fields" => fields = Some(v.split(',').map(|f| f.trim().to_owned()).collect()),
            "sysparm_display_value" => {
                display = match v.as_str() {
                    "true" => Display::Text,
                    "all" => Display::All,
                    _ => Display::Value,
                }
            }
            _ => {}
        }
    }
    let mut terms = vec![];
    let mut order: Option<(String, bool)> = None;
    for term in q
        .as_deref()
        .unwrap_or_default()
        .split('^')
        .filter(|t| !t.is_empty())
    {
        if let Some(f) = term.strip_prefix("ORDERBYDESC") {
            order = Some((f.to_owned(), true));
        } else if let Some(f) = term.strip_prefix("ORDERBY") {
            order = Some((f.to_owned(), false));
        } else if let Some((f, v)) = term.split_once('=') {
            terms.push((f.to_owned(), v.to_owned()));
        } else {
            return error(StatusCode::BAD_REQUEST, "Invalid query", term);
        }
    }
    let value_of = |r: &Record, f: &str| -> String {
        match f {
            "sys_id" => r.sys_id.clone(),
            "number" => r.number.clone(),
            _ => r.get(f).to_owned(),
        }
    };
    let mut hits: Vec<&Record> = records
        .iter()
        .filter(|r| terms.iter().all(|(f, v)| value_of(r, f) == *v))
        .collect();
    if let Some((f, desc)) = order {
        if desc {
            // Newest first among equal values (creation order reversed, then a stable sort).
            hits.reverse();
            hits.sort_by_key(|r| std::cmp::Reverse(value_of(r, &f)));
        } else {
            hits.sort_by_key(|r| value_of(r, &f));
        }
    }
    let result: Vec<Value> = hits
        .into_iter()
        .take(limit)
        .map(|r| render(r, fields.as_deref(), display))
        .collect();
    json_reply(StatusCode::OK, &json!({"result": result}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_and_base64_follow_the_standards() {
        assert_eq!(url_decode("a%5Eb+c%3D1"), "a^b c=1");
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz"), "%zz");
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("*"), None);
    }

    #[test]
    fn priority_is_derived_and_resolution_needs_close_fields() {
        let mut r = Record {
            sys_id: "x".into(),
            number: "INC0010001".into(),
            fields: BTreeMap::new(),
            work_notes: vec![],
        };
        let m = |v: Value| v.as_object().cloned().unwrap();
        apply(
            &mut r,
            &m(json!({"impact": "1", "urgency": "2", "priority": "5"})),
            "u",
        )
        .unwrap();
        assert_eq!(r.get("priority"), "2");
        assert!(apply(&mut r, &m(json!({"state": "6"})), "u").is_err());
        apply(
            &mut r,
            &m(json!({"state": "6", "close_code": "c", "close_notes": "n", "work_notes": "w"})),
            "u",
        )
        .unwrap();
        assert_eq!(r.work_notes.len(), 1);
        assert!(!r.get("resolved_at").is_empty());
    }
}
