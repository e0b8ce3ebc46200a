//! The ZKTeco PUSH ("ADMS", `/iclock`) wire format: request bodies of `/iclock/cdata` for
//! `table=ATTLOG`, `table=rtlog` and `table=OPERLOG` into [`AccessEvent`]s, and the replies.
//!
//! Two firmware dialects share the URL space (see `reference/access-anchors.md` (b.1)):
//!
//! * attendance firmware posts `ATTLOG`: positional, tab-separated, 2 to 12 fields
//!   (`PIN, Time, Status, Verify, Workcode, Reserved1, Reserved2, MaskFlag, Temperature,
//!   ConvTemperature, TimeOffset, ExtendData`); extra fields are tolerated. `Status` is chosen
//!   by the user on the terminal and is **not** a direction: the direction comes from the
//!   reader map ([`ParseContext::reader_direction`]).
//! * access firmware posts `rtlog`: tab-separated `key=value` pairs parsed by key (fields were
//!   added across firmware versions), with the real direction in `inoutstatus` (0 in, 1 out).
//! * both post `OPERLOG`: `OPLOG <type>\t<operator>\t<time>\t<who>\t<v1>\t<v2>\t<v3>` lines,
//!   mixed with `USER PIN=..`, `FP PIN=..` and similar non-event records, which are counted
//!   and skipped.
//!
//! Times are device-local without a zone; they are converted to UTC with the site's IANA
//! zone. A time given as a Unix epoch (some firmware) is taken as UTC seconds. An ATTLOG
//! `TimeOffset` is not trusted over the configured site zone (a misconfigured device must not
//! move its own events); it stays in the raw line as evidence.
//!
//! Parsing is total: every line either becomes an event, is counted as a skipped non-event
//! record, or becomes a [`LineError`] naming its 1-based line number and field. One bad line
//! never discards the others, so the caller can store the good events and reply `OK` (a non-OK
//! reply makes a device re-send the same batch forever).
//!
//! Event ids are the hex SHA-256 of (reader serial, credential, device time, kind, raw line)
//! ([`event_id`]): a re-sent batch yields identical ids, so ingestion is idempotent.

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use super::event::{AccessEvent, DeviceOp, Direction, EventKind, EventSource};

/// Longest credential (PIN / card number) accepted from a device.
const MAX_CREDENTIAL_LEN: usize = 64;

/// The `table` a device posts to `/iclock/cdata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// Attendance records (attendance firmware).
    AttLog,
    /// Real-time events (access firmware).
    RtLog,
    /// Operation log, user records and templates.
    OperLog,
    /// Device options (`FingerFunOn=1,...`): acknowledge, nothing to store.
    Options,
    /// Any other table (`ATTPHOTO`, `rtstate`, `tabledata`, ...), by its name as sent.
    Other(String),
}

impl Table {
    /// The table named by a `table=` query value (case-insensitive).
    pub fn from_name(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "attlog" => Self::AttLog,
            "rtlog" => Self::RtLog,
            "operlog" => Self::OperLog,
            "options" => Self::Options,
            _ => Self::Other(name.to_owned()),
        }
    }

    /// The event source a table's records carry, if the table holds events.
    pub fn source(&self) -> Option<EventSource> {
        match self {
            Self::AttLog => Some(EventSource::ZktecoAttlog),
            Self::RtLog => Some(EventSource::ZktecoRtlog),
            Self::OperLog => Some(EventSource::ZktecoOperlog),
            Self::Options | Self::Other(_) => None,
        }
    }
}

/// The query string of a `/iclock/cdata` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdataQuery {
    /// Device serial number (`SN`).
    pub serial: String,
    /// `table=`; `None` on the handshake (`options=all`).
    pub table: Option<Table>,
    /// `Stamp=` as sent (informational: Stamp-based resume is unreliable).
    pub stamp: Option<String>,
}

/// Why a `/iclock` query string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query has no SN parameter")]
    MissingSerial,
    #[error("SN {0:?} is not a valid reader serial (non-empty, A-Z a-z 0-9 - _ . only)")]
    BadSerial(String),
}

impl CdataQuery {
    /// Parses `SN=..&table=..&Stamp=..` (parameter names case-insensitive, values
    /// percent-decoded; unknown parameters ignored).
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let mut serial = None;
        let mut table = None;
        let mut stamp = None;
        for (key, value) in form_pairs(query) {
            match key.to_ascii_lowercase().as_str() {
                "sn" => serial = Some(value),
                "table" => table = Some(Table::from_name(&value)),
                "stamp" => stamp = Some(value),
                _ => {}
            }
        }
        let serial = serial.ok_or(QueryError::MissingSerial)?;
        if !is_valid_serial(&serial) {
            return Err(QueryError::BadSerial(serial));
        }
        Ok(Self {
            serial,
            table,
            stamp,
        })
    }
}

/// True when `serial` is a usable reader id (the config rule for ids).
pub fn is_valid_serial(serial: &str) -> bool {
    !serial.is_empty()
        && serial.len() <= 64
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What the parser needs to know about the posting device.
#[derive(Debug, Clone)]
pub struct ParseContext {
    /// Reader serial (`SN`), already checked against the reader map by the caller.
    pub reader: Arc<str>,
    /// The site's time zone: device times are local to it.
    pub time_zone: Tz,
    /// Direction from the reader map; used for ATTLOG, and for rtlog when `inoutstatus`
    /// is absent or not 0/1.
    pub reader_direction: Option<Direction>,
    /// When the daemon received the request.
    pub received_at: DateTime<Utc>,
}

/// The result of parsing one request body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedBatch {
    /// Events, in body order.
    pub events: Vec<AccessEvent>,
    /// Lines that are valid non-event records (`USER`, `FP`, ... in OPERLOG), skipped.
    pub skipped: usize,
    /// Malformed lines, each with its line number and field.
    pub errors: Vec<LineError>,
}

impl ParsedBatch {
    /// Records processed (events + skipped records): the `n` of an `OK:n` reply.
    pub fn processed(&self) -> usize {
        self.events.len() + self.skipped
    }
}

/// One malformed line: 1-based line number within the (decoded) body, and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {problem}")]
pub struct LineError {
    pub line: usize,
    pub field: &'static str,
    pub problem: LineProblem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("missing (line has {found} fields, needs at least {needed})")]
    TooFewFields { found: usize, needed: usize },
    #[error("missing")]
    Missing,
    #[error("empty")]
    Empty,
    #[error("found {0:?}; expected YYYY-MM-DD HH:MM:SS or Unix epoch seconds")]
    BadTime(String),
    #[error("local time {0:?} does not exist in the site time zone")]
    NonexistentLocalTime(String),
    #[error("found {0:?}; expected an unsigned integer")]
    NotANumber(String),
    #[error("found {0:?}; expected at most {MAX_CREDENTIAL_LEN} printable characters")]
    BadCredential(String),
    #[error("found {0:?}; expected key=value")]
    NotKeyValue(String),
    #[error("found {0:?}; expected OPLOG or a record type such as USER")]
    UnknownRecord(String),
}

fn err(line: usize, field: &'static str, problem: LineProblem) -> LineError {
    LineError {
        line,
        field,
        problem,
    }
}

/// Parses the body of `POST /iclock/cdata?table=<table>` into events.
///
/// Accepts raw bodies and form-encoded ones (`table=ATTLOG&Stamp=9999&data=<lines>`);
/// `\r\n` and blank lines are tolerated; invalid UTF-8 is replaced (names in `USER` records
/// may be in a legacy code page). Tables without events give an empty batch.
pub fn parse_cdata(table: &Table, body: &[u8], ctx: &ParseContext) -> ParsedBatch {
    let text = String::from_utf8_lossy(body);
    let text = decode_form_body(&text).unwrap_or_else(|| text.into_owned());
    let mut batch = ParsedBatch::default();
    for (index, line) in text.split('\n').enumerate() {
        let line_no = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let result = match table {
            Table::AttLog => parse_attlog_line(line_no, line, ctx).map(Some),
            Table::RtLog => parse_rtlog_line(line_no, line, ctx).map(Some),
            Table::OperLog => parse_operlog_line(line_no, line, ctx),
            Table::Options | Table::Other(_) => return ParsedBatch::default(),
        };
        match result {
            Ok(Some(event)) => batch.events.push(event),
            Ok(None) => batch.skipped += 1,
            Err(e) => batch.errors.push(e),
        }
    }
    batch
}

/// One ATTLOG line: `PIN\tTime[\tStatus\tVerify\t...]`.
pub fn parse_attlog_line(
    line_no: usize,
    line: &str,
    ctx: &ParseContext,
) -> Result<AccessEvent, LineError> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() < 2 {
        return Err(err(
            line_no,
            "Time",
            LineProblem::TooFewFields {
                found: fields.len(),
                needed: 2,
            },
        ));
    }
    let pin =
        credential(line_no, "PIN", fields[0])?.ok_or(err(line_no, "PIN", LineProblem::Empty))?;
    let device_time = parse_device_time(line_no, "Time", fields[1], ctx.time_zone)?;
    // Status (index 2) and Verify (index 3) are informational; they stay in `raw`.
    for (index, name) in [(2, "Status"), (3, "Verify")] {
        if let Some(value) = fields.get(index) {
            let value = value.trim();
            if !value.is_empty() && value.parse::<u32>().is_err() {
                return Err(err(
                    line_no,
                    name,
                    LineProblem::NotANumber(value.to_owned()),
                ));
            }
        }
    }
    Ok(build_event(
        ctx,
        EventSource::ZktecoAttlog,
        Some(pin),
        EventKind::Granted,
        ctx.reader_direction,
        device_time,
        line,
    ))
}

/// One rtlog line: `time=..\tpin=..\tcardno=..\teventaddr=..\tevent=..\tinoutstatus=..\t...`.
pub fn parse_rtlog_line(
    line_no: usize,
    line: &str,
    ctx: &ParseContext,
) -> Result<AccessEvent, LineError> {
    let mut time = None;
    let mut pin = None;
    let mut cardno = None;
    let mut event = None;
    let mut inout = None;
    for pair in line.split('\t') {
        if pair.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = pair.split_once('=') else {
            return Err(err(
                line_no,
                "field",
                LineProblem::NotKeyValue(pair.to_owned()),
            ));
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "time" => time = Some(value),
            "pin" => pin = Some(value),
            "cardno" => cardno = Some(value),
            "event" => event = Some(value),
            "inoutstatus" => inout = Some(value),
            _ => {}
        }
    }
    let time = time.ok_or(err(line_no, "time", LineProblem::Missing))?;
    let device_time = parse_device_time(line_no, "time", time, ctx.time_zone)?;
    let event = event.ok_or(err(line_no, "event", LineProblem::Missing))?;
    let code: u32 = event
        .trim()
        .parse()
        .map_err(|_| err(line_no, "event", LineProblem::NotANumber(event.to_owned())))?;
    let pin = match pin {
        Some(p) => credential(line_no, "pin", p)?,
        None => None,
    };
    let cardno = match cardno {
        Some(c) => credential(line_no, "cardno", c)?,
        None => None,
    };
    let user = pin.or(cardno);
    let direction = match inout.map(str::trim) {
        Some("0") => Some(Direction::Entry),
        Some("1") => Some(Direction::Exit),
        _ => ctx.reader_direction,
    };
    let kind = rtlog_kind(code, user.is_some());
    let direction = match kind {
        EventKind::Granted => direction,
        _ => None,
    };
    Ok(build_event(
        ctx,
        EventSource::ZktecoRtlog,
        user,
        kind,
        direction,
        device_time,
        line,
    ))
}

/// Maps a Security PUSH real-time event code to a kind. Bands: 0-19 and 200-253 normal,
/// 20-99 denied, 100-199 alarms. Codes that are a user's verified passage become `Granted`
/// only with a user; door, remote and linkage events become `Operation { Other }`.
pub fn rtlog_kind(code: u32, has_user: bool) -> EventKind {
    match code {
        // 0 normal verify open, 1 verify in passage mode, 2 first-personnel, 3 multi-personnel,
        // 4 emergency password, 5 open in passage mode, 14-19 fingerprint/card variants.
        0..=5 | 14..=19 if has_user => EventKind::Granted,
        7 => EventKind::Operation {
            op: DeviceOp::AlarmCancelled,
        },
        20..=99 => EventKind::Denied {
            reason: Some(Arc::from(match denied_reason(code) {
                Some(name) => format!("rtlog event {code}: {name}"),
                None => format!("rtlog event {code}"),
            })),
        },
        100 => EventKind::Operation {
            op: DeviceOp::Tamper,
        },
        101 | 103 => EventKind::Operation {
            op: DeviceOp::Duress,
        },
        102 => EventKind::Operation {
            op: DeviceOp::DoorForced,
        },
        206 => EventKind::Operation {
            op: DeviceOp::PowerOn,
        },
        _ => EventKind::Operation {
            op: DeviceOp::Other,
        },
    }
}

/// Names of the Security PUSH denied-event codes seen in public ADMS servers (the vendor's
/// appendix 2 is the authority; unknown codes keep only their number).
fn denied_reason(code: u32) -> Option<&'static str> {
    Some(match code {
        20 => "operate interval too short",
        21 => "door inactive time zone",
        22 => "illegal time zone",
        23 => "access denied",
        24 => "anti-passback",
        25 => "interlock",
        26 => "multi-personnel authentication wait",
        27 => "unregistered personnel",
        28 => "open door timeout",
        29 => "personnel expired",
        38 => "card reported lost",
        39 => "blacklisted",
        41 => "verify mode error",
        42 => "wiegand format error",
        44 => "background verify failed",
        45 => "background verify timed out",
        48 => "multi-personnel verify failed",
        _ => return None,
    })
}

/// One OPERLOG line: an `OPLOG` event, a skipped non-event record (`Ok(None)`), or an error.
pub fn parse_operlog_line(
    line_no: usize,
    line: &str,
    ctx: &ParseContext,
) -> Result<Option<AccessEvent>, LineError> {
    let head_len = line
        .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .unwrap_or(line.len());
    let head = &line[..head_len];
    if head != "OPLOG" {
        let separated = line[head_len..].starts_with([' ', '\t']);
        return if !head.is_empty() && separated {
            Ok(None)
        } else {
            let shown: String = line.chars().take(24).collect();
            Err(err(
                line_no,
                "record type",
                LineProblem::UnknownRecord(shown),
            ))
        };
    }
    let rest = line[head_len..].trim_start_matches([' ', '\t']);
    let fields: Vec<&str> = rest.split('\t').collect();
    if fields.len() < 3 {
        let field = if fields.len() < 2 {
            "Operator"
        } else {
            "OpTime"
        };
        return Err(err(
            line_no,
            field,
            LineProblem::TooFewFields {
                found: fields.len(),
                needed: 3,
            },
        ));
    }
    let op_type: u32 = fields[0].trim().parse().map_err(|_| {
        err(
            line_no,
            "OpType",
            LineProblem::NotANumber(fields[0].to_owned()),
        )
    })?;
    let operator = credential(line_no, "Operator", fields[1])?;
    let device_time = parse_device_time(line_no, "OpTime", fields[2], ctx.time_zone)?;
    let who = match fields.get(3) {
        Some(w) => credential(line_no, "OpWho", w)?,
        None => None,
    };
    let value1 = match fields.get(4).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Some(
            v.parse::<u32>()
                .map_err(|_| err(line_no, "Value1", LineProblem::NotANumber(v.to_owned())))?,
        ),
        _ => None,
    };
    let kind = operlog_kind(op_type, value1);
    Ok(Some(build_event(
        ctx,
        EventSource::ZktecoOperlog,
        operator.or(who),
        kind,
        None,
        device_time,
        line,
    )))
}

/// Maps an OPLOG `OpType` (and `Value1`, the alarm reason of type 3) to a kind.
pub fn operlog_kind(op_type: u32, value1: Option<u32>) -> EventKind {
    let op = match op_type {
        0 => DeviceOp::PowerOn,
        1 => DeviceOp::PowerOff,
        2 => {
            return EventKind::Denied {
                reason: Some(Arc::from("oplog 2 verify failed")),
            };
        }
        3 => match value1 {
            Some(54) => DeviceOp::DoorForced,
            Some(55) => DeviceOp::Tamper,
            Some(65535) => DeviceOp::AlarmCancelled,
            _ => DeviceOp::Other,
        },
        13 | 23 | 105 => DeviceOp::DeleteRecords,
        21 => DeviceOp::SetTime,
        32 => DeviceOp::Duress,
        _ => DeviceOp::Other,
    };
    EventKind::Operation { op }
}

/// A credential field: trimmed; empty or `0` means "no user"; bounded and printable.
fn credential(
    line_no: usize,
    field: &'static str,
    value: &str,
) -> Result<Option<Arc<str>>, LineError> {
    let value = value.trim();
    if value.is_empty() || value.bytes().all(|b| b == b'0') {
        return Ok(None);
    }
    if value.chars().count() > MAX_CREDENTIAL_LEN || value.chars().any(char::is_control) {
        let shown: String = value.chars().take(MAX_CREDENTIAL_LEN).collect();
        return Err(err(line_no, field, LineProblem::BadCredential(shown)));
    }
    Ok(Some(Arc::from(value)))
}

/// A device time: `YYYY-MM-DD HH:MM:SS` (or with `T`) local to `tz`, or Unix epoch seconds.
/// In a DST fold the earlier instant is taken.
pub fn parse_device_time(
    line_no: usize,
    field: &'static str,
    value: &str,
    tz: Tz,
) -> Result<DateTime<Utc>, LineError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(err(line_no, field, LineProblem::Empty));
    }
    let bad = || {
        err(
            line_no,
            field,
            LineProblem::BadTime(value.chars().take(40).collect()),
        )
    };
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = value.parse().map_err(|_| bad())?;
        return DateTime::from_timestamp(secs, 0).ok_or_else(bad);
    }
    let naive = NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| bad())?;
    match tz.from_local_datetime(&naive).earliest() {
        Some(local) => Ok(local.with_timezone(&Utc)),
        None => Err(err(
            line_no,
            field,
            LineProblem::NonexistentLocalTime(value.to_owned()),
        )),
    }
}

fn build_event(
    ctx: &ParseContext,
    source: EventSource,
    credential: Option<Arc<str>>,
    kind: EventKind,
    direction: Option<Direction>,
    device_time: DateTime<Utc>,
    raw: &str,
) -> AccessEvent {
    let id = event_id(&ctx.reader, credential.as_deref(), device_time, &kind, raw);
    AccessEvent {
        id,
        source,
        reader: ctx.reader.clone(),
        credential,
        kind,
        direction,
        device_time,
        received_at: ctx.received_at,
        raw: Arc::from(raw),
        backlog: false,
    }
}

/// A stable tag for a kind, part of the event id.
pub fn kind_tag(kind: &EventKind) -> String {
    match kind {
        EventKind::Granted => "granted".to_owned(),
        EventKind::Denied { reason } => format!("denied:{}", reason.as_deref().unwrap_or("")),
        EventKind::Operation { op } => {
            // serde_json of a unit variant is its quoted snake_case name; never fails.
            let name = serde_json::to_string(op).unwrap_or_default();
            format!("operation:{}", name.trim_matches('"'))
        }
    }
}

/// The stable event id: hex SHA-256 over length-prefixed (reader, credential, device time as
/// RFC 3339 UTC seconds, kind tag, raw line). Independent of the receive time and source.
pub fn event_id(
    reader: &str,
    credential: Option<&str>,
    device_time: DateTime<Utc>,
    kind: &EventKind,
    raw: &str,
) -> Arc<str> {
    let mut hasher = Sha256::new();
    let time = device_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let tag = kind_tag(kind);
    for part in [reader, credential.unwrap_or(""), &time, &tag, raw] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    Arc::from(hex(&hasher.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The plain-text `OK` reply (always `text/plain`: a JSON reply makes devices re-send).
pub const REPLY_OK: &str = "OK";

/// The `OK:<n>` reply to a data post.
pub fn reply_ok_count(n: usize) -> String {
    format!("OK:{n}")
}

/// The attendance-firmware handshake reply to `GET /iclock/cdata?SN=..&options=all`.
///
/// `TimeZone` is the site's UTC offset at `now`, in hours (minutes when not whole hours).
/// Stamps are `None`, so a device re-sends what it holds; ingestion is idempotent.
pub fn handshake_reply(serial: &str, tz: Tz, now: DateTime<Utc>) -> String {
    let offset_secs = tz
        .offset_from_utc_datetime(&now.naive_utc())
        .fix()
        .local_minus_utc();
    let time_zone = if offset_secs % 3600 == 0 {
        offset_secs / 3600
    } else {
        offset_secs / 60
    };
    format!(
        "GET OPTION FROM: {serial}\n\
         ATTLOGStamp=None\n\
         OPERLOGStamp=None\n\
         ATTPHOTOStamp=None\n\
         ErrorDelay=30\n\
         Delay=10\n\
         TransTimes=00:00;14:05\n\
         TransInterval=1\n\
         TransFlag=TransData AttLog\tOpLog\n\
         TimeZone={time_zone}\n\
         Realtime=1\n\
         Encrypt=None\n"
    )
}

/// `key=value&...` pairs, percent- and `+`-decoded; a key without `=` has an empty value.
fn form_pairs(s: &str) -> impl Iterator<Item = (String, String)> + '_ {
    s.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// If `body` is form-encoded (`table=..&data=..`, no raw tabs), the decoded `data` value.
fn decode_form_body(body: &str) -> Option<String> {
    if body.contains('\t') {
        return None;
    }
    let trimmed = body.trim_start();
    let looks_form = trimmed.starts_with("table=")
        || trimmed.starts_with("data=")
        || trimmed.starts_with("SN=")
        || body.contains("&data=");
    if !looks_form {
        return None;
    }
    form_pairs(trimmed.trim_end())
        .find(|(k, _)| k.eq_ignore_ascii_case("data"))
        .map(|(_, v)| v)
}

/// Percent-decoding with `+` as space; malformed escapes are kept literally.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hi = (bytes[i + 1] as char).to_digit(16);
                let lo = (bytes[i + 2] as char).to_digit(16);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        // h, l < 16, so the value fits in a byte.
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_edges() {
        assert_eq!(percent_decode("a%09b+c"), "a\tb c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn operlog_heads() {
        let ctx = ParseContext {
            reader: Arc::from("R1"),
            time_zone: chrono_tz::Asia::Jakarta,
            reader_direction: None,
            received_at: Utc::now(),
        };
        assert_eq!(parse_operlog_line(1, "USER PIN=1\tName=x", &ctx), Ok(None));
        assert_eq!(parse_operlog_line(1, "FP PIN=1\tFID=0", &ctx), Ok(None));
        assert!(parse_operlog_line(1, "garbage", &ctx).is_err());
        assert!(parse_operlog_line(1, "USER", &ctx).is_err());
    }
}
