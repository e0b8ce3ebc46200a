//! Access events from other reader systems: the JSON batch DTO of `POST /api/v1/access/events`
//! and the CSV format of `dcguard access import FILE.csv` (also the access-log export format).
//!
//! # JSON batch
//!
//! ```json
//! {"events": [
//!   {"reader": "DC-MT-IN-01", "credential": "10001", "kind": "granted",
//!    "direction": "entry", "time": "2026-11-21T08:00:00+07:00"},
//!   {"reader": "DC-MT-IN-01", "credential": "20417", "kind": "denied",
//!    "reason": "expired", "time": "2026-11-21T08:01:10+07:00"},
//!   {"reader": "DC-MT-IN-01", "kind": "operation", "op": "door_forced",
//!    "time": "2026-11-21T08:02:00Z"}
//! ]}
//! ```
//!
//! Unknown fields are errors; `time` is RFC 3339 with an explicit offset; `reason` only for
//! `denied`, `op` (a [`DeviceOp`] name) only and always for `operation`, `direction` only for
//! `granted`; `credential` is required for `granted`. At most [`MAX_BATCH`] events per request. Every problem is reported at once as
//! `events[3].time: found "..."; expected ...`, and a batch with any problem is refused whole
//! (the sender gets a 400 and fixes it; nothing is half-stored). The raw evidence of a JSON
//! event is its canonical re-serialisation, so a re-sent batch yields identical ids.
//!
//! # CSV
//!
//! A header row, then one event per row. Columns, in export order ([`CSV_COLUMNS`]):
//!
//! | column | import | meaning |
//! |---|---|---|
//! | `id` | optional | if given, must equal the id recomputed from the row (detects edited exports) |
//! | `source` | optional | `zkteco_attlog`, `zkteco_rtlog`, `zkteco_operlog`, `json_batch`, `csv_import` (default) |
//! | `reader` | required | reader serial |
//! | `credential` | optional | PIN / card / biometric id; empty for device operations |
//! | `kind` | required | `granted`, `denied`, `operation` |
//! | `reason` | optional | denied reason |
//! | `op` | optional | device operation, required for `operation` |
//! | `direction` | optional | `entry` or `exit`, granted events only |
//! | `device_time` | required | RFC 3339, or `YYYY-MM-DD HH:MM:SS` in the site zone given to the import |
//! | `received_at` | optional | RFC 3339; default: the import time |
//! | `raw` | optional | the original line; default: the row itself, re-encoded |
//!
//! Columns may come in any order; unknown or repeated columns are errors. An exported file
//! imports back to identical events (ids included), so re-importing is idempotent.

use std::io::{Read, Write};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::event::{AccessEvent, DeviceOp, Direction, EventKind, EventSource};
use super::zkteco::{event_id, is_valid_serial};

/// Most events in one JSON batch.
pub const MAX_BATCH: usize = 10_000;
/// Most problems listed in one error (the count is always exact).
const MAX_LISTED: usize = 100;
/// Longest credential accepted.
const MAX_CREDENTIAL_LEN: usize = 64;

/// The body of `POST /api/v1/access/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// The site of readers that are in no site's reader map: their events are recorded
    /// there (an `unknown_reader` finding each). Without it such a batch is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub events: Vec<JsonEvent>,
}

/// One event of a JSON batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonEvent {
    pub reader: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    pub kind: WireKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<DeviceOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// RFC 3339 with an explicit offset.
    pub time: String,
}

/// The `kind` of a JSON or CSV event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireKind {
    Granted,
    Denied,
    Operation,
}

/// One problem with one field: `events[3].time` or `line 7: device_time`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {field}: {problem}")]
pub struct FieldError {
    /// `events[3]` (JSON) or `line 7` (CSV, 1-based file line).
    pub place: String,
    pub field: String,
    pub problem: String,
}

/// Why a JSON batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("body is not an event batch: {0}")]
    Json(#[from] serde_json::Error),
    #[error("batch has {0} events; expected at most {MAX_BATCH}")]
    TooLarge(usize),
    #[error("{} invalid field(s); first: {}", .total, first_of(.errors))]
    Invalid {
        /// The first problems (at most 100).
        errors: Vec<FieldError>,
        total: usize,
    },
}

/// Why a CSV import was refused.
#[derive(Debug, thiserror::Error)]
pub enum CsvImportError {
    #[error("line {line}: {problem}")]
    Format { line: u64, problem: String },
    #[error("header: {0}")]
    Header(String),
    #[error("{} invalid field(s); first: {}", .total, first_of(.errors))]
    Invalid {
        /// The first problems (at most 100).
        errors: Vec<FieldError>,
        total: usize,
    },
}

fn first_of(errors: &[FieldError]) -> String {
    errors.first().map(ToString::to_string).unwrap_or_default()
}

/// Parses and validates a JSON batch. All-or-nothing.
pub fn parse_json_batch(
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Vec<AccessEvent>, BatchError> {
    parse_json_batch_with_site(body, received_at).map(|(_, events)| events)
}

/// [`parse_json_batch`], also returning the batch's `site` (for readers in no reader map).
pub fn parse_json_batch_with_site(
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<(Option<String>, Vec<AccessEvent>), BatchError> {
    let batch: EventBatch = serde_json::from_slice(body)?;
    if batch.events.len() > MAX_BATCH {
        return Err(BatchError::TooLarge(batch.events.len()));
    }
    let mut events = Vec::with_capacity(batch.events.len());
    let mut errors = Vec::new();
    let mut total = 0;
    for (index, event) in batch.events.iter().enumerate() {
        let place = || format!("events[{index}]");
        let time = match DateTime::parse_from_rfc3339(event.time.trim()) {
            Ok(t) => t.with_timezone(&Utc),
            Err(_) => {
                total += 1;
                push_limited(
                    &mut errors,
                    FieldError {
                        place: place(),
                        field: "time".to_owned(),
                        problem: format!(
                            "found {:?}; expected RFC 3339 with an offset, e.g. 2026-11-21T08:00:00+07:00",
                            shorten(&event.time)
                        ),
                    },
                );
                continue;
            }
        };
        // Canonical re-serialisation of the DTO; serialising plain data cannot fail.
        let raw = serde_json::to_string(event).unwrap_or_default();
        let fields = Fields {
            reader: &event.reader,
            credential: event.credential.as_deref(),
            kind: event.kind,
            reason: event.reason.as_deref(),
            op: event.op,
            direction: event.direction,
            device_time: time,
        };
        match build_event(&fields, EventSource::JsonBatch, received_at, raw) {
            Ok(e) => events.push(e),
            Err((field, problem)) => {
                total += 1;
                push_limited(
                    &mut errors,
                    FieldError {
                        place: place(),
                        field: field.to_owned(),
                        problem,
                    },
                );
            }
        }
    }
    if total > 0 {
        return Err(BatchError::Invalid { errors, total });
    }
    Ok((batch.site, events))
}

/// A cell made safe for spreadsheets (CSV formula injection, OWASP): a value starting with
/// `=`, `+`, `-`, `@`, a tab, a carriage return or `'` gets a leading `'`, so Excel,
/// LibreOffice and Google Sheets show it as text instead of evaluating it. [`read_csv`]
/// removes one leading `'`, so an export imports back unchanged.
pub fn safe_cell(value: &str) -> std::borrow::Cow<'_, str> {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\'') => format!("'{value}").into(),
        _ => value.into(),
    }
}

/// The CSV columns, in export order.
pub const CSV_COLUMNS: [&str; 11] = [
    "id",
    "source",
    "reader",
    "credential",
    "kind",
    "reason",
    "op",
    "direction",
    "device_time",
    "received_at",
    "raw",
];
const REQUIRED_COLUMNS: [&str; 3] = ["reader", "kind", "device_time"];

/// Writes events as CSV with a header row ([`CSV_COLUMNS`]).
pub fn write_csv<'a, W: Write>(
    out: W,
    events: impl IntoIterator<Item = &'a AccessEvent>,
) -> Result<(), csv::Error> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(CSV_COLUMNS)?;
    for e in events {
        let (kind, reason, op) = match &e.kind {
            EventKind::Granted => ("granted", String::new(), String::new()),
            EventKind::Denied { reason } => (
                "denied",
                reason.as_deref().unwrap_or("").to_owned(),
                String::new(),
            ),
            EventKind::Operation { op } => ("operation", String::new(), enum_name(op)),
        };
        let cells = [
            &*e.id,
            &enum_name(&e.source),
            &e.reader,
            e.credential.as_deref().unwrap_or(""),
            kind,
            &reason,
            &op,
            &e.direction.as_ref().map(enum_name).unwrap_or_default(),
            &e.device_time
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            &e.received_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            &e.raw,
        ];
        writer.write_record(cells.iter().map(|c| safe_cell(c).into_owned()))?;
    }
    writer.flush()?;
    Ok(())
}

/// The columns of the findings export, in order.
pub const FINDING_CSV_COLUMNS: [&str; 16] = [
    "id",
    "site",
    "rule",
    "severity",
    "at",
    "raised_at",
    "person",
    "credential",
    "ticket",
    "room",
    "reader",
    "summary",
    "evidence",
    "reviewed_by",
    "reviewed_at",
    "review_note",
];

/// Writes findings as CSV with a header row ([`FINDING_CSV_COLUMNS`]); `evidence` holds the
/// event ids separated by spaces, the review columns the latest review. Every cell is made
/// safe for spreadsheets ([`safe_cell`]).
pub fn write_findings_csv<'a, W: Write>(
    out: W,
    findings: impl IntoIterator<Item = &'a crate::store::access::StoredFinding>,
) -> Result<(), csv::Error> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(FINDING_CSV_COLUMNS)?;
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    for s in findings {
        let f = &s.finding;
        let review = s.reviews.last();
        let evidence: Vec<&str> = f.evidence.iter().map(|e| &**e).collect();
        let cells = [
            s.id.to_string(),
            f.site.clone(),
            f.rule.as_str().to_owned(),
            enum_name(&f.severity),
            time(f.at),
            time(s.raised_at),
            f.person.clone().unwrap_or_default(),
            f.credential.as_deref().unwrap_or("").to_owned(),
            f.ticket.clone().unwrap_or_default(),
            f.room.clone().unwrap_or_default(),
            f.reader.as_deref().unwrap_or("").to_owned(),
            f.summary.clone(),
            evidence.join(" "),
            review.map(|r| r.reviewer.clone()).unwrap_or_default(),
            review.map(|r| time(r.at)).unwrap_or_default(),
            review.map(|r| r.note.clone()).unwrap_or_default(),
        ];
        writer.write_record(cells.iter().map(|c| safe_cell(c).into_owned()))?;
    }
    writer.flush()?;
    Ok(())
}

/// Reads a CSV import. `time_zone` converts zone-less `device_time` values (the site's zone);
/// without it they are errors. All-or-nothing.
pub fn read_csv<R: Read>(
    input: R,
    time_zone: Option<Tz>,
    received_at: DateTime<Utc>,
) -> Result<Vec<AccessEvent>, CsvImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| CsvImportError::Header(e.to_string()))?
        .clone();
    let mut column = [None::<usize>; CSV_COLUMNS.len()];
    for (i, name) in headers.iter().enumerate() {
        // Spreadsheet exports often start with a UTF-8 byte-order mark.
        let name = name.trim_start_matches('\u{feff}').trim();
        let Some(slot) = CSV_COLUMNS.iter().position(|c| *c == name) else {
            return Err(CsvImportError::Header(format!(
                "unknown column {name:?}; expected some of: {}",
                CSV_COLUMNS.join(", ")
            )));
        };
        if column[slot].is_some() {
            return Err(CsvImportError::Header(format!("column {name:?} repeated")));
        }
        column[slot] = Some(i);
    }
    for required in REQUIRED_COLUMNS {
        let slot = CSV_COLUMNS.iter().position(|c| *c == required);
        if slot.and_then(|s| column[s]).is_none() {
            return Err(CsvImportError::Header(format!(
                "missing required column {required:?}"
            )));
        }
    }
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut total = 0;
    for record in reader.records() {
        let record = record.map_err(|e| CsvImportError::Format {
            line: e.position().map_or(0, csv::Position::line),
            problem: e.to_string(),
        })?;
        let line = record.position().map_or(0, csv::Position::line);
        let row = Row {
            record: &record,
            column: &column,
        };
        match csv_row(&row, time_zone, received_at) {
            Ok(e) => events.push(e),
            Err((field, problem)) => {
                total += 1;
                push_limited(
                    &mut errors,
                    FieldError {
                        place: format!("line {line}"),
                        field: field.to_owned(),
                        problem,
                    },
                );
            }
        }
    }
    if total > 0 {
        return Err(CsvImportError::Invalid { errors, total });
    }
    Ok(events)
}

type FieldProblem = (&'static str, String);

/// One CSV record and where each known column is.
struct Row<'a> {
    record: &'a csv::StringRecord,
    column: &'a [Option<usize>; CSV_COLUMNS.len()],
}

impl<'a> Row<'a> {
    /// The trimmed value of a column; empty when the column is absent.
    fn get(&self, name: &str) -> &'a str {
        CSV_COLUMNS
            .iter()
            .position(|c| *c == name)
            .and_then(|slot| self.column[slot])
            .and_then(|i| self.record.get(i))
            .map_or("", |v| {
                let v = v.trim();
                // Undo `safe_cell` of an export.
                v.strip_prefix('\'').unwrap_or(v)
            })
    }
}

fn csv_row(
    row: &Row<'_>,
    time_zone: Option<Tz>,
    import_time: DateTime<Utc>,
) -> Result<AccessEvent, FieldProblem> {
    let get = |name: &str| row.get(name);
    let record = row.record;
    let kind = match get("kind") {
        "granted" => WireKind::Granted,
        "denied" => WireKind::Denied,
        "operation" => WireKind::Operation,
        other => {
            return Err((
                "kind",
                format!(
                    "found {:?}; expected granted, denied or operation",
                    shorten(other)
                ),
            ));
        }
    };
    let op = non_empty(get("op"))
        .map(|v| parse_enum::<DeviceOp>(v, "op", "a device operation such as door_forced"))
        .transpose()?;
    let direction = non_empty(get("direction"))
        .map(|v| parse_enum::<Direction>(v, "direction", "entry or exit"))
        .transpose()?;
    let source = non_empty(get("source"))
        .map(|v| parse_enum::<EventSource>(v, "source", "an event source such as csv_import"))
        .transpose()?
        .unwrap_or(EventSource::CsvImport);
    let device_time = parse_time(get("device_time"), time_zone).map_err(|p| ("device_time", p))?;
    let received_at = match non_empty(get("received_at")) {
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                (
                    "received_at",
                    format!("found {:?}; expected RFC 3339", shorten(v)),
                )
            })?,
        None => import_time,
    };
    let raw = match non_empty(get("raw")) {
        Some(raw) => raw.to_owned(),
        None => reencode(record),
    };
    let fields = Fields {
        reader: get("reader"),
        credential: non_empty(get("credential")),
        kind,
        reason: non_empty(get("reason")),
        op,
        direction,
        device_time,
    };
    let event = build_event(&fields, source, received_at, raw)?;
    if let Some(id) = non_empty(get("id"))
        && id != &*event.id
    {
        return Err((
            "id",
            "does not match the row's content (edited after export?)".to_owned(),
        ));
    }
    Ok(event)
}

/// The validated content of one JSON or CSV event.
struct Fields<'a> {
    reader: &'a str,
    credential: Option<&'a str>,
    kind: WireKind,
    reason: Option<&'a str>,
    op: Option<DeviceOp>,
    direction: Option<Direction>,
    device_time: DateTime<Utc>,
}

fn build_event(
    f: &Fields<'_>,
    source: EventSource,
    received_at: DateTime<Utc>,
    raw: String,
) -> Result<AccessEvent, FieldProblem> {
    let reader = f.reader.trim();
    if !is_valid_serial(reader) {
        return Err((
            "reader",
            format!(
                "found {:?}; expected a reader serial (A-Z a-z 0-9 - _ ., at most 64)",
                shorten(reader)
            ),
        ));
    }
    let credential = match f.credential.map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) if c.chars().count() > MAX_CREDENTIAL_LEN || c.chars().any(char::is_control) => {
            return Err((
                "credential",
                format!(
                    "found {:?}; expected at most {MAX_CREDENTIAL_LEN} printable characters",
                    shorten(c)
                ),
            ));
        }
        other => other.map(Arc::from),
    };
    if f.reason.is_some() && f.kind != WireKind::Denied {
        return Err(("reason", "only for denied events".to_owned()));
    }
    if f.direction.is_some() && f.kind != WireKind::Granted {
        return Err(("direction", "only for granted events".to_owned()));
    }
    let kind = match (f.kind, f.op) {
        (WireKind::Granted, None) => EventKind::Granted,
        (WireKind::Denied, None) => EventKind::Denied {
            reason: f.reason.map(Arc::from),
        },
        (WireKind::Operation, Some(op)) => EventKind::Operation { op },
        (WireKind::Operation, None) => {
            return Err(("op", "missing; required for operation events".to_owned()));
        }
        (_, Some(_)) => return Err(("op", "only for operation events".to_owned())),
    };
    if credential.is_none() && f.kind == WireKind::Granted {
        return Err((
            "credential",
            "missing; required for granted events".to_owned(),
        ));
    }
    let id = event_id(reader, credential.as_deref(), f.device_time, &kind, &raw);
    Ok(AccessEvent {
        id,
        source,
        reader: Arc::from(reader),
        credential,
        kind,
        direction: f.direction,
        device_time: f.device_time,
        received_at,
        raw: Arc::from(raw),
        backlog: false,
    })
}

fn parse_time(value: &str, tz: Option<Tz>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S"));
    match (naive, tz) {
        (Ok(naive), Some(tz)) => tz
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| format!("local time {value:?} does not exist in {tz}")),
        (Ok(_), None) => Err(format!(
            "found {value:?} without an offset; expected RFC 3339, or give the site time zone"
        )),
        (Err(_), _) => Err(format!(
            "found {:?}; expected RFC 3339 or YYYY-MM-DD HH:MM:SS",
            shorten(value)
        )),
    }
}

fn parse_enum<T: for<'de> Deserialize<'de>>(
    value: &str,
    field: &'static str,
    expected: &str,
) -> Result<T, FieldProblem> {
    serde_json::from_value(serde_json::Value::String(value.to_owned())).map_err(|_| {
        (
            field,
            format!("found {:?}; expected {expected}", shorten(value)),
        )
    })
}

/// The snake_case name of a unit enum variant.
fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The row itself as one CSV line (the raw evidence of an imported row without `raw`).
fn reencode(record: &csv::StringRecord) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = writer.write_record(record);
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).trim_end().to_owned()
}

fn non_empty(v: &str) -> Option<&str> {
    let v = v.trim();
    (!v.is_empty()).then_some(v)
}

fn shorten(v: &str) -> String {
    v.chars().take(60).collect()
}

fn push_limited(errors: &mut Vec<FieldError>, e: FieldError) {
    if errors.len() < MAX_LISTED {
        errors.push(e);
    }
}
