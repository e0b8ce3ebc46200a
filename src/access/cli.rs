//! The `dcguard access` commands: import, query and CSV export of the access log and the
//! findings, visit reports and reviews, over the service API of `access::service`.
//!
//! Queries and reports open the store read-only and work while the daemon runs; import and
//! review append to the audit chain and are refused while the daemon holds it (use the API
//! then). Times on the command line are RFC 3339, or `YYYY-MM-DD` / `YYYY-MM-DD HH:MM` in
//! the calendar's time zone; tables show times in that zone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::event::{AccessEvent, EventKind};
use super::ingest::{Ingest, open_offline};
use super::reconcile::Rule;
use super::report::VisitReport;
use super::service::{EventFilter, FindingFilter, ServiceError};
use crate::cli::{AccessCommand, EXIT_FAILURE, EXIT_INVALID_CONFIG};
use crate::config::{self, Config};
use crate::store::Store;
use crate::store::access::StoredFinding;

/// Options every `dcguard access` command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Configuration directory (sites, readers, staff, calendar).
    #[arg(long, value_name = "DIR", default_value = "config")]
    pub config: PathBuf,
    /// State directory instead of `daemon.data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `dcguard access events` filters.
#[derive(Debug, Clone, clap::Args)]
pub struct EventArgs {
    /// Site id.
    #[arg(long)]
    pub site: Option<String>,
    /// Room id (the events of its readers).
    #[arg(long)]
    pub room: Option<String>,
    /// A credential, identity number, staff id or name.
    #[arg(long)]
    pub person: Option<String>,
    /// A ticket id (the events reconciliation attributed to it).
    #[arg(long)]
    pub ticket: Option<String>,
    /// A reader serial.
    #[arg(long)]
    pub reader: Option<String>,
    /// From this time (inclusive).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Until this time (exclusive).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write CSV (the import format; cells safe for spreadsheets) instead of a table.
    #[arg(long)]
    pub csv: bool,
}

/// `dcguard access findings` filters.
#[derive(Debug, Clone, clap::Args)]
pub struct FindingArgs {
    /// Site id.
    #[arg(long)]
    pub site: Option<String>,
    /// Room id.
    #[arg(long)]
    pub room: Option<String>,
    /// A credential, identity number, staff id or name.
    #[arg(long)]
    pub person: Option<String>,
    /// A ticket id.
    #[arg(long)]
    pub ticket: Option<String>,
    /// A rule (no_ticket, outside_window, wrong_room, unescorted_third_party, ...).
    #[arg(long)]
    pub rule: Option<String>,
    /// From this time (inclusive).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Until this time (exclusive).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only reviewed findings.
    #[arg(long, conflicts_with = "unreviewed")]
    pub reviewed: bool,
    /// Only findings not reviewed yet.
    #[arg(long)]
    pub unreviewed: bool,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write CSV (cells safe for spreadsheets) instead of a table.
    #[arg(long)]
    pub csv: bool,
}

/// A command-line problem: message and exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_INVALID_CONFIG,
            message: message.into(),
        }
    }
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        Self {
            code: if e.status() == 400 {
                EXIT_INVALID_CONFIG
            } else {
                EXIT_FAILURE
            },
            message: e.to_string(),
        }
    }
}

impl From<super::ingest::IngestError> for Failure {
    fn from(e: super::ingest::IngestError) -> Self {
        Self {
            code: EXIT_FAILURE,
            message: e.to_string(),
        }
    }
}

/// Runs one `dcguard access` command.
pub fn run(command: AccessCommand) -> ExitCode {
    let (name, result) = match command {
        AccessCommand::Import { file, site, common } => {
            ("import", import(&file, site.as_deref(), &common))
        }
        AccessCommand::Events { filter, common } => ("events", events(&filter, &common)),
        AccessCommand::Findings { filter, common } => ("findings", findings(&filter, &common)),
        AccessCommand::VisitReport {
            ticket,
            json,
            common,
        } => ("visit-report", visit_report(&ticket, json, &common)),
        AccessCommand::Review {
            finding,
            reviewer,
            note,
            common,
        } => ("review", review(finding, &reviewer, &note, &common)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("dcguard access {name}: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn load(common: &Common) -> Result<(Config, PathBuf), Failure> {
    let config = config::load(&common.config).map_err(|errors| Failure {
        code: EXIT_INVALID_CONFIG,
        message: errors.to_string(),
    })?;
    let data_dir = common
        .data_dir
        .clone()
        .unwrap_or_else(|| config.daemon.data_dir.clone());
    Ok((config, data_dir))
}

fn read_only(config: &Config, data_dir: &Path) -> Result<Ingest, Failure> {
    let path = data_dir.join(crate::app::STORE_FILE);
    if !path.exists() {
        return Err(Failure {
            code: EXIT_FAILURE,
            message: format!("no store at {} (wrong --data-dir?)", path.display()),
        });
    }
    let store = Store::open(&path).map_err(|e| Failure {
        code: EXIT_FAILURE,
        message: e.to_string(),
    })?;
    Ok(Ingest::open_read_only(config, store)?)
}

fn import(file: &Path, site: Option<&str>, common: &Common) -> Result<(), Failure> {
    let (config, data_dir) = load(common)?;
    let summary = open_offline(&config, &data_dir)?.import_csv(file, site)?;
    let _ = writeln!(
        std::io::stdout().lock(),
        "imported {}: {} events read, {} new, {} already stored",
        file.display(),
        summary.read,
        summary.new,
        summary.read - summary.new
    );
    Ok(())
}

/// Parses a command-line time: RFC 3339, `YYYY-MM-DD HH:MM[:SS]` or `YYYY-MM-DD` (midnight)
/// in `tz`.
pub fn parse_time(value: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let v = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    });
    naive
        .and_then(|n| tz.from_local_datetime(&n).earliest())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            format!(
                "found {v:?}; expected RFC 3339 (2026-11-23T08:00:00+07:00), or YYYY-MM-DD [HH:MM] in {}",
                tz.name()
            )
        })
}

/// A query period: `--from` and `--until`, each optional.
type Period = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn times(from: Option<&String>, until: Option<&String>, tz: Tz) -> Result<Period, Failure> {
    let parse = |flag: &str, v: Option<&String>| {
        v.map(|v| parse_time(v, tz).map_err(|e| Failure::usage(format!("--{flag}: {e}"))))
            .transpose()
    };
    Ok((parse("from", from)?, parse("until", until)?))
}

fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string()
}

fn events(args: &EventArgs, common: &Common) -> Result<(), Failure> {
    let (config, data_dir) = load(common)?;
    let tz = config.calendar.time_zone;
    let (from, until) = times(args.from.as_ref(), args.until.as_ref(), tz)?;
    let service = read_only(&config, &data_dir)?;
    let filter = EventFilter {
        site: args.site.clone(),
        room: args.room.clone(),
        person: args.person.clone(),
        ticket: args.ticket.clone(),
        reader: args.reader.clone(),
        credential: None,
        from,
        until,
        limit: args.limit,
    };
    let mut out = std::io::stdout().lock();
    if args.csv {
        service.export_events_csv(&filter, &mut out)?;
        return Ok(());
    }
    let rows = service.events(&filter)?;
    let rooms: std::collections::HashMap<&str, &str> = config
        .sites
        .iter()
        .flat_map(|s| s.access.readers.iter())
        .map(|r| (r.serial.as_str(), r.room.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "{:<19}  {:<16}  {:<10}  {:<12}  {:<9}  {:<6}  detail",
        format!("time ({})", tz.name()),
        "reader",
        "room",
        "credential",
        "kind",
        "dir"
    );
    for e in &rows {
        let _ = writeln!(out, "{}", event_row(e, &rooms, tz));
    }
    let _ = writeln!(out, "{} event(s)", rows.len());
    Ok(())
}

fn event_row(e: &AccessEvent, rooms: &std::collections::HashMap<&str, &str>, tz: Tz) -> String {
    let (kind, detail) = match &e.kind {
        EventKind::Granted => ("granted", String::new()),
        EventKind::Denied { reason } => ("denied", reason.as_deref().unwrap_or("").to_owned()),
        EventKind::Operation { op } => ("operation", format!("{op:?}")),
    };
    let skew = (e.device_time - e.received_at).num_seconds();
    let skew = if skew.abs() > 60 {
        format!(" (device clock {skew:+} s)")
    } else {
        String::new()
    };
    format!(
        "{:<19}  {:<16}  {:<10}  {:<12}  {:<9}  {:<6}  {detail}{skew}",
        local(e.device_time, tz),
        e.reader,
        rooms.get(&*e.reader).copied().unwrap_or("?"),
        e.credential.as_deref().unwrap_or("-"),
        kind,
        e.direction.map_or("-", |d| match d {
            super::event::Direction::Entry => "entry",
            super::event::Direction::Exit => "exit",
        }),
    )
}

fn parse_rule(name: &str) -> Result<Rule, Failure> {
    Rule::ALL
        .into_iter()
        .find(|r| r.as_str() == name)
        .ok_or_else(|| {
            Failure::usage(format!(
                "--rule: found {name:?}; expected one of: {}",
                Rule::ALL.map(Rule::as_str).join(", ")
            ))
        })
}

fn findings(args: &FindingArgs, common: &Common) -> Result<(), Failure> {
    let (config, data_dir) = load(common)?;
    let tz = config.calendar.time_zone;
    let (from, until) = times(args.from.as_ref(), args.until.as_ref(), tz)?;
    let rule = args.rule.as_deref().map(parse_rule).transpose()?;
    let service = read_only(&config, &data_dir)?;
    let filter = FindingFilter {
        site: args.site.clone(),
        room: args.room.clone(),
        person: args.person.clone(),
        ticket: args.ticket.clone(),
        rule,
        from,
        until,
        reviewed: match (args.reviewed, args.unreviewed) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        limit: args.limit,
    };
    let mut out = std::io::stdout().lock();
    if args.csv {
        service.export_findings_csv(&filter, &mut out)?;
        return Ok(());
    }
    let rows = service.findings(&filter)?;
    let _ = writeln!(
        out,
        "{:>6}  {:<19}  {:<8}  {:<22}  {:<6}  {:<16}  {:<8}  summary",
        "id",
        format!("time ({})", tz.name()),
        "site",
        "rule",
        "sev",
        "ticket",
        "reviewed",
    );
    for f in &rows {
        let _ = writeln!(out, "{}", finding_row(f, tz));
    }
    let _ = writeln!(out, "{} finding(s)", rows.len());
    Ok(())
}

fn finding_row(s: &StoredFinding, tz: Tz) -> String {
    let f = &s.finding;
    format!(
        "{:>6}  {:<19}  {:<8}  {:<22}  {:<6}  {:<16}  {:<8}  {}",
        s.id,
        local(f.at, tz),
        f.site,
        f.rule.as_str(),
        format!("{:?}", f.severity).to_lowercase(),
        f.ticket.as_deref().unwrap_or("-"),
        s.reviews.last().map_or("no", |r| r.reviewer.as_str()),
        f.summary,
    )
}

fn visit_report(ticket: &str, json: bool, common: &Common) -> Result<(), Failure> {
    let (config, data_dir) = load(common)?;
    let service = read_only(&config, &data_dir)?;
    let report = service.visit_report(ticket, Utc::now())?;
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::usage(format!("cannot encode the report: {e}")))?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }
    let _ = out.write_all(render_report(&report, config.calendar.time_zone).as_bytes());
    Ok(())
}

/// The report as text for people.
pub fn render_report(r: &VisitReport, tz: Tz) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Visit report of ticket {} at site {} ({:?})",
        r.ticket, r.site, r.state
    );
    let _ = writeln!(
        s,
        "window {} .. {} ({}); rooms: {}",
        local(r.window_start, tz),
        local(r.window_end, tz),
        tz.name(),
        if r.rooms.is_empty() {
            "-".to_owned()
        } else {
            r.rooms.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "activity: {}; approved by {}",
        r.activity_plan, r.approver
    );
    let _ = writeln!(s, "as of {}", local(r.produced_at, tz));
    for p in &r.people {
        let _ = writeln!(
            s,
            "\n{} ({:?}, {}){}",
            p.name,
            p.role,
            p.organisation,
            p.escorted_by
                .as_ref()
                .map(|e| format!(", escorted by {e}"))
                .unwrap_or_default()
        );
        if p.stays.is_empty() {
            let _ = writeln!(s, "  did not enter");
        }
        for stay in &p.stays {
            let _ = writeln!(
                s,
                "  in {}  out {}",
                local(stay.entered_at, tz),
                stay.left_at
                    .map_or_else(|| "(no exit recorded)".to_owned(), |t| local(t, tz))
            );
            for room in &stay.rooms {
                let _ = writeln!(
                    s,
                    "    {:<10} {} .. {}",
                    room.room,
                    local(room.entered_at, tz),
                    room.left_at
                        .map_or_else(|| "-".to_owned(), |t| local(t, tz))
                );
            }
        }
        if !p.stays.is_empty() {
            let _ = writeln!(s, "  time inside: {} min", p.time_inside_secs / 60);
        }
        for e in &p.escort {
            let _ = writeln!(
                s,
                "  escort at {} ({}) {}: {}",
                e.reader,
                e.room,
                local(e.at, tz),
                e.pic_offset_secs.map_or_else(
                    || "NO PIC within the escort gap".to_owned(),
                    |o| format!("PIC {o:+} s")
                )
            );
        }
    }
    let _ = writeln!(s, "\nfindings: {}", r.findings.len());
    for f in &r.findings {
        let _ = writeln!(
            s,
            "  #{} {} {} {}{}",
            f.id,
            local(f.at, tz),
            f.rule.as_str(),
            f.summary,
            f.reviewed_by
                .as_ref()
                .map(|b| format!(" [reviewed by {b}]"))
                .unwrap_or_default()
        );
    }
    let m = &r.summary;
    let _ = writeln!(
        s,
        "\nsummary: {} of {} people entered, {} unescorted third-party entries, {} open stays, {} findings ({} not reviewed)",
        m.people_entered,
        m.people_listed,
        m.unescorted_entries,
        m.open_stays,
        m.findings,
        m.findings_unreviewed
    );
    s
}

fn review(finding: i64, reviewer: &str, note: &str, common: &Common) -> Result<(), Failure> {
    let (config, data_dir) = load(common)?;
    let service = open_offline(&config, &data_dir)?;
    let (review, new) = service.review_finding(finding, reviewer, note, Utc::now())?;
    let _ = writeln!(
        std::io::stdout().lock(),
        "finding {finding}: {} review {} by {}",
        if new { "recorded" } else { "already recorded:" },
        review.id,
        review.reviewer
    );
    Ok(())
}
