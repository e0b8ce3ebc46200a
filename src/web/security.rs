//! The security review pages: findings with filters and a review form, occupancy now per
//! site and room, access log search with its CSV export, the audit chain's status, and a
//! visit's timeline (entries, exits, escort pairing, findings). Reads through
//! `api::access` and `api::visits`; the review and the export go through the same handlers
//! as the API's, so they are audited the same way.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::i18n::{L, Lang};
use super::session::WebSession;
use super::{
    PageLang, after_write, bad_request, check_csrf, error_page, layout, local, page_response,
    read_form,
};
use crate::access::report::VisitReport;
use crate::api::ApiState;
use crate::api::dto::{
    AccessEventDto, AccessEventQuery, AuditStatusDto, FindingDto, FindingQuery, OccupancyQuery,
    OccupantDto, ReviewRequest,
};
use crate::api::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::api::{access, visits};

/// Most findings and events shown on the page (the CSV export has the API's limit).
const PAGE_ROWS: u32 = 200;

/// The page's filters as a form sends them (empty fields are no filter).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityQuery {
    site: Option<String>,
    rule: Option<String>,
    person: Option<String>,
    ticket: Option<String>,
    from: Option<String>,
    until: Option<String>,
    reviewed: Option<String>,
    log_site: Option<String>,
    log_reader: Option<String>,
    log_credential: Option<String>,
    log_from: Option<String>,
    log_until: Option<String>,
    log: Option<String>,
    /// The page language (read by `PageLang`; accepted here so the filters stay strict).
    #[allow(dead_code)]
    lang: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// RFC 3339, or a date `YYYY-MM-DD` (UTC): its start, or for an `until` its end.
fn time(field: &str, v: &Option<String>, until: bool) -> Result<Option<DateTime<Utc>>, String> {
    let Some(text) = given(v) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    match NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
        Ok(d) => {
            // The last representable date has no next day: no end then.
            let d = if until {
                match d.checked_add_signed(TimeDelta::days(1)) {
                    Some(next) => next,
                    None => return Ok(None),
                }
            } else {
                d
            };
            Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()))
        }
        Err(_) => Err(format!(
            "{field}: found {:?}; expected a date YYYY-MM-DD or an RFC 3339 time",
            text.chars().take(40).collect::<String>()
        )),
    }
}

impl SecurityQuery {
    fn findings(&self) -> Result<FindingQuery, String> {
        let reviewed = match given(&self.reviewed).as_deref() {
            None | Some("any") => None,
            Some("yes") => Some(true),
            Some("no") => Some(false),
            Some(other) => {
                return Err(format!(
                    "reviewed: found {:?}; expected any, yes or no",
                    other.chars().take(20).collect::<String>()
                ));
            }
        };
        Ok(FindingQuery {
            site: given(&self.site),
            rule: given(&self.rule),
            person: given(&self.person),
            ticket: given(&self.ticket),
            room: None,
            from: time("from", &self.from, false)?,
            until: time("until", &self.until, true)?,
            reviewed,
            limit: Some(PAGE_ROWS),
        })
    }

    fn wants_log(&self) -> bool {
        self.log.is_some()
            || [
                &self.log_site,
                &self.log_reader,
                &self.log_credential,
                &self.log_from,
                &self.log_until,
            ]
            .iter()
            .any(|v| given(v).is_some())
    }

    fn events(&self, limit: Option<u32>) -> Result<AccessEventQuery, String> {
        Ok(AccessEventQuery {
            site: given(&self.log_site),
            reader: given(&self.log_reader),
            credential: given(&self.log_credential),
            room: None,
            person: None,
            ticket: None,
            from: time("log_from", &self.log_from, false)?,
            until: time("log_until", &self.log_until, true)?,
            limit,
        })
    }

    /// The query string of the CSV export of the current search.
    fn export_link(&self) -> String {
        let mut parts = vec!["log=1".to_owned()];
        for (k, v) in [
            ("log_site", &self.log_site),
            ("log_reader", &self.log_reader),
            ("log_credential", &self.log_credential),
            ("log_from", &self.log_from),
            ("log_until", &self.log_until),
        ] {
            if let Some(v) = given(v) {
                parts.push(format!("{k}={}", encode(&v)));
            }
        }
        format!("/security/events.csv?{}", parts.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn bad_query(l: Lang, e: axum::extract::rejection::QueryRejection) -> Response {
    bad_request(
        l,
        format!(
            "bad query string: {}",
            e.body_text().chars().take(300).collect::<String>()
        ),
    )
}

/// `GET /security`.
pub async fn page(
    State(state): State<ApiState>,
    Extension(session): Extension<WebSession>,
    lang: PageLang,
    query: Result<Query<SecurityQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let l = lang.lang;
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(l, e),
    };
    let findings: Result<Vec<FindingDto>, String> = match q.findings() {
        Ok(fq) => access::findings(State(state.clone()), ApiQuery(fq))
            .await
            .map(|j| j.0)
            .map_err(|e| e.message),
        Err(e) => Err(e),
    };
    let occupancy: Result<Vec<OccupantDto>, String> = visits::occupancy(
        State(state.clone()),
        ApiQuery(OccupancyQuery { site: None }),
    )
    .await
    .map(|j| j.0)
    .map_err(|e| e.message);
    let audit: Result<AuditStatusDto, String> = access::audit_status(State(state.clone()))
        .await
        .map(|j| j.0)
        .map_err(|e| e.message);
    let events: Option<Result<Vec<AccessEventDto>, String>> = if q.wants_log() {
        Some(match q.events(Some(PAGE_ROWS)) {
            Ok(eq) => access::events(State(state.clone()), ApiQuery(eq))
                .await
                .map(|j| j.0)
                .map_err(|e| e.message),
            Err(e) => Err(e),
        })
    } else {
        None
    };
    let zones: BTreeMap<String, chrono_tz::Tz> = state
        .config
        .sites
        .iter()
        .map(|s| (s.id.clone(), s.time_zone))
        .collect();
    let zone = |site: &str| zones.get(site).copied().unwrap_or(chrono_tz::Tz::UTC);
    // Events name a reader, not a site: the searched site's zone, else the zone all sites
    // share, else UTC.
    let event_zone = given(&q.log_site)
        .and_then(|s| zones.get(&s).copied())
        .or_else(|| {
            let mut all = zones.values();
            let first = all.next().copied()?;
            all.all(|z| *z == first).then_some(first)
        })
        .unwrap_or(chrono_tz::Tz::UTC);
    let site_ids: Vec<&str> = state.config.sites.iter().map(|s| s.id.as_str()).collect();
    let rules: Vec<&str> = crate::access::reconcile::Rule::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let body = html! {
        section.panel #findings {
            h2 { (l.t(L::Findings)) }
            form.filters #finding-filter method="get" action="/security" {
                label { (l.t(L::Site)) select name="site" {
                    option value="" { (l.t(L::Any)) }
                    @for s in &site_ids { option value=(s) selected[q.site.as_deref() == Some(*s)] { (s) } }
                } }
                label { (l.t(L::Rule)) select name="rule" {
                    option value="" { (l.t(L::Any)) }
                    @for r in &rules { option value=(r) selected[q.rule.as_deref() == Some(*r)] { (r) } }
                } }
                label { (l.t(L::Person)) input type="text" name="person" value=(v(&q.person)); }
                label { (l.t(L::Ticket)) input type="text" name="ticket" value=(v(&q.ticket)); }
                label { (l.t(L::From)) input type="date" name="from" value=(v(&q.from)); }
                label { (l.t(L::Until)) input type="date" name="until" value=(v(&q.until)); }
                label { (l.t(L::Reviewed)) select name="reviewed" {
                    @for (value, word) in [("any", L::Any), ("yes", L::Yes), ("no", L::No)] {
                        option value=(value) selected[q.reviewed.as_deref() == Some(value)] { (l.t(word)) }
                    }
                } }
                button #apply-filter type="submit" { (l.t(L::Filter)) }
            }
            @match &findings {
                Err(message) => p.message.error { (message) },
                Ok(list) if list.is_empty() => p.quiet #no-findings { (l.t(L::NoFindings)) },
                Ok(list) => table.findings {
                    thead { tr {
                        th { (l.t(L::Time)) } th { (l.t(L::Site)) } th { (l.t(L::Rule)) }
                        th { (l.t(L::Severity)) } th { (l.t(L::Person)) } th { (l.t(L::Ticket)) }
                        th { (l.t(L::Summary)) } th { (l.t(L::Review)) }
                    } }
                    tbody {
                        @for f in list {
                            tr.finding data-finding=(f.id) data-rule=(f.rule) {
                                td { (local(f.at, zone(&f.site))) }
                                td { (f.site) }
                                td { (f.rule) }
                                td { span class={ "sev " (f.severity) } { (f.severity) } }
                                td { (f.person.clone().unwrap_or_default()) }
                                td { @if let Some(t) = &f.ticket {
                                    a.visit href={ "/security/visits/" (encode(t)) } { (t) }
                                } }
                                td { (f.summary) }
                                td {
                                    @for r in &f.reviews {
                                        div.reviewed-by { strong { (r.reviewer) } ": " (r.note) }
                                    }
                                    (review_form(l, &session, f.id))
                                }
                            }
                        }
                    }
                },
            }
        }
        section.columns {
            section.panel #occupancy {
                h2 { (l.t(L::Occupancy)) }
                (occupancy_markup(l, &occupancy, &zone))
            }
            section.panel #audit {
                h2 { (l.t(L::AuditChain)) }
                @match &audit {
                    Err(message) => p.message { (l.t(L::NotAvailable)) ": " (message) },
                    Ok(a) => {
                        p {
                            @if a.intact { span.badge.ok #audit-state { (l.t(L::Intact)) } }
                            @else { span.badge.high #audit-state { (l.t(L::Broken)) } }
                            " " (a.records) " " (l.t(L::Records)) ", " (a.checkpoints) " " (l.t(L::Checkpoints))
                            @if let Some(s) = a.signed_through { ", " (l.t(L::SignedThrough)) " #" (s) }
                        }
                        @if let Some(p) = &a.problem { p.message.error { (p) } }
                        @if let Some(h) = &a.head_hash { p.quiet.mono { "head " (h.chars().take(16).collect::<String>()) "…" } }
                    }
                }
            }
        }
        section.panel #access-log {
            h2 { (l.t(L::AccessLog)) }
            form.filters #log-search method="get" action="/security" {
                input type="hidden" name="log" value="1";
                label { (l.t(L::Site)) select name="log_site" {
                    option value="" { (l.t(L::Any)) }
                    @for s in &site_ids { option value=(s) selected[q.log_site.as_deref() == Some(*s)] { (s) } }
                } }
                label { (l.t(L::Reader)) input type="text" name="log_reader" value=(v(&q.log_reader)); }
                label { (l.t(L::Credential)) input type="text" name="log_credential" value=(v(&q.log_credential)); }
                label { (l.t(L::From)) input type="date" name="log_from" value=(v(&q.log_from)); }
                label { (l.t(L::Until)) input type="date" name="log_until" value=(v(&q.log_until)); }
                button #log-apply type="submit" { (l.t(L::Search)) }
                " "
                a.button #export-csv href=(q.export_link()) { (l.t(L::ExportCsv)) }
            }
            @match &events {
                None => {}
                Some(Err(message)) => p.message.error { (message) },
                Some(Ok(list)) if list.is_empty() => p.quiet { (l.t(L::NoEvents)) },
                Some(Ok(list)) => table.events {
                    thead { tr {
                        th { (l.t(L::Time)) } th { (l.t(L::Reader)) } th { (l.t(L::Credential)) }
                        th { (l.t(L::Kind)) } th { (l.t(L::Direction)) }
                    } }
                    tbody {
                        @for e in list {
                            tr.event {
                                td { (e.device_time.with_timezone(&event_zone).format("%Y-%m-%d %H:%M:%S %Z")) }
                                td { (e.reader) }
                                td { (e.credential.clone().unwrap_or_default()) }
                                td { (e.kind) @if let Some(r) = &e.reason { " (" (r) ")" } }
                                td { (e.direction.clone().unwrap_or_default()) }
                            }
                        }
                    }
                },
            }
        }
    };
    page_response(
        lang,
        layout(l, Some(&session), l.t(L::Security), "/security", body),
    )
}

fn review_form(l: Lang, session: &WebSession, id: i64) -> Markup {
    html! {
        form.action.review method="post" action={ "/security/findings/" (id) "/review" } {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="text" name="note" required maxlength="4000"
                placeholder=(l.t(L::Note)) aria-label=(l.t(L::Note));
            button type="submit" { (l.t(L::Review)) }
        }
    }
}

fn occupancy_markup(
    l: Lang,
    occupancy: &Result<Vec<OccupantDto>, String>,
    zone: &dyn Fn(&str) -> chrono_tz::Tz,
) -> Markup {
    let list = match occupancy {
        Err(message) => return html! { p.message { (l.t(L::NotAvailable)) ": " (message) } },
        Ok(list) => list,
    };
    if list.is_empty() {
        return html! { p.quiet { (l.t(L::NobodyInside)) } };
    }
    let mut by_place: BTreeMap<(String, String), Vec<&OccupantDto>> = BTreeMap::new();
    for o in list {
        by_place
            .entry((
                o.site.clone(),
                o.room.clone().unwrap_or_else(|| "-".to_owned()),
            ))
            .or_default()
            .push(o);
    }
    html! {
        @for ((site, room), people) in &by_place {
            h3 { (site) " · " (room) " (" (people.len()) ")" }
            table.occupants {
                thead { tr {
                    th { (l.t(L::Person)) } th { (l.t(L::Role)) } th { (l.t(L::Ticket)) }
                    th { (l.t(L::Escort)) } th { (l.t(L::Entered)) }
                } }
                tbody {
                    @for o in people {
                        tr.occupant data-credential=(o.credential) {
                            td { (o.person) }
                            td { (o.role) }
                            td { @if let Some(t) = &o.ticket { a href={ "/security/visits/" (encode(t)) } { (t) } } }
                            td { (o.escorted_by.clone().unwrap_or_default()) }
                            td { (local(o.entered_at, zone(&o.site))) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /security/visits/{ticket}`: the visit's timeline from `api::visits::detail`.
pub async fn visit(
    State(state): State<ApiState>,
    Extension(session): Extension<WebSession>,
    lang: PageLang,
    Path(ticket): Path<String>,
) -> Response {
    let l = lang.lang;
    let detail = match visits::detail(State(state.clone()), ApiPath(ticket)).await {
        Ok(d) => d.0,
        Err(e) => return error_page(l, &e),
    };
    let report: VisitReport = match serde_json::from_value(detail.report.clone()) {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(%error, "A visit report did not read back as a report.");
            return error_page(l, &ApiError::internal());
        }
    };
    let tz = state
        .config
        .sites
        .iter()
        .find(|s| s.id == report.site)
        .map_or(chrono_tz::Tz::UTC, |s| s.time_zone);
    let t = |at: DateTime<Utc>| local(at, tz);
    let body = html! {
        section.panel #visit {
            h1 { (l.t(L::Visit)) " " span #ticket { (report.ticket) } }
            dl.facts {
                dt { (l.t(L::Site)) } dd { (report.site) }
                dt { (l.t(L::State)) } dd { (detail.visit.state) }
                dt { (l.t(L::Window)) } dd { (t(report.window_start)) " – " (t(report.window_end)) }
                dt { (l.t(L::Rooms)) } dd { (report.rooms.join(", ")) }
                dt { (l.t(L::Activity)) } dd { (report.activity_plan) }
                dt { (l.t(L::Approver)) } dd { (report.approver) }
            }
        }
        section.panel #timeline {
            h2 { (l.t(L::People)) }
            @for p in &report.people {
                article.person data-person=(p.identity_number) {
                    h3 { (p.name) " · " (p.organisation) " (" (format!("{:?}", p.role).to_lowercase()) ")"
                        @if let Some(e) = &p.escorted_by { " · " (l.t(L::Escort)) " " (e) }
                    }
                    table.stays {
                        thead { tr { th { (l.t(L::Entered)) } th { (l.t(L::Left)) } th { (l.t(L::Rooms)) } } }
                        tbody {
                            @for s in &p.stays {
                                tr.stay {
                                    td { (t(s.entered_at)) }
                                    td { @match s.left_at { Some(at) => (t(at)), None => span.bad { (l.t(L::StillInside)) } } }
                                    td {
                                        @for r in &s.rooms {
                                            div { (r.room) ": " (t(r.entered_at)) " – "
                                                @match r.left_at { Some(at) => (t(at)), None => (l.t(L::StillInside)) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if !p.escort.is_empty() {
                        h4 { (l.t(L::EscortPairing)) }
                        ul.escort {
                            @for e in &p.escort {
                                li {
                                    (e.room) " · " (e.reader) " · " (t(e.at)) " · "
                                    @match (e.pic_at, e.pic_offset_secs) {
                                        (Some(at), Some(off)) => { (l.t(L::PicAt)) " " (t(at)) " (" (off) " s)" }
                                        _ => { span.badge.high { (l.t(L::NoEscort)) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel #visit-findings {
            h2 { (l.t(L::Findings)) " (" (report.findings.len()) ")" }
            @if report.findings.is_empty() { p.quiet { (l.t(L::NoFindings)) } }
            @else {
                table.findings {
                    thead { tr { th { (l.t(L::Time)) } th { (l.t(L::Rule)) } th { (l.t(L::Person)) } th { (l.t(L::Summary)) } th { (l.t(L::Reviewed)) } } }
                    tbody {
                        @for f in &report.findings {
                            tr.finding data-finding=(f.id) {
                                td { (t(f.at)) }
                                td { (f.rule.as_str()) }
                                td { (f.person.clone().unwrap_or_default()) }
                                td { (f.summary) }
                                td { @if let Some(by) = &f.reviewed_by { (by) ": " (f.review_note.clone().unwrap_or_default()) } @else { "-" } }
                            }
                        }
                    }
                }
            }
            p { a href="/security" { (l.t(L::Back)) } }
        }
    };
    page_response(
        lang,
        layout(l, Some(&session), l.t(L::Visit), "/security", body),
    )
}

#[derive(Deserialize)]
struct ReviewForm {
    csrf: String,
    note: String,
}

/// `POST /security/findings/{id}/review`: `api::visits::review` with the session's
/// principal.
pub async fn review(
    State(state): State<ApiState>,
    Extension(session): Extension<WebSession>,
    lang: PageLang,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let l = lang.lang;
    let Ok(id) = id.parse::<i64>() else {
        return bad_request(l, "finding id: expected a number");
    };
    let form: ReviewForm = match read_form(l, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(l, &session, &form.csrf) {
        return r;
    }
    let response = visits::review(
        State(state),
        Extension(session.principal.clone()),
        ApiPath(id),
        ApiJson(ReviewRequest { note: form.note }),
    )
    .await;
    after_write(response, l, "/security").await
}

/// `GET /security/events.csv`: `api::access::events_csv` for the page's search (audited
/// with its row count, as from the API).
pub async fn export(
    State(state): State<ApiState>,
    lang: PageLang,
    query: Result<Query<SecurityQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let l = lang.lang;
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(l, e),
    };
    let eq = match q.events(None) {
        Ok(eq) => eq,
        Err(message) => return bad_request(l, message),
    };
    let response = access::events_csv(State(state), ApiQuery(eq)).await;
    if response.status().is_success() {
        let mut response = response;
        super::secure_headers(&mut response);
        response
    } else {
        after_write(response, l, "/security").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Empty form fields are no filter; dates are whole UTC days; bad input is named.
    #[test]
    fn form_filters_map_to_the_api_query() {
        let q = SecurityQuery {
            site: Some(String::new()),
            person: Some(" budi ".into()),
            from: Some("2026-12-01".into()),
            until: Some("2026-12-01".into()),
            reviewed: Some("no".into()),
            ..SecurityQuery::default()
        };
        let f = q.findings().unwrap();
        assert_eq!(f.site, None);
        assert_eq!(f.person.as_deref(), Some("budi"));
        assert_eq!(f.reviewed, Some(false));
        assert_eq!(
            f.until.unwrap() - f.from.unwrap(),
            TimeDelta::days(1),
            "until is the end of the day"
        );
        let bad = SecurityQuery {
            from: Some("yesterday".into()),
            ..SecurityQuery::default()
        };
        assert!(bad.findings().unwrap_err().starts_with("from:"));
        let bad = SecurityQuery {
            reviewed: Some("maybe".into()),
            ..SecurityQuery::default()
        };
        assert!(bad.findings().is_err());
        // The last date chrono knows has no next day: no end, and no panic.
        let far = SecurityQuery {
            until: Some(NaiveDate::MAX.format("%Y-%m-%d").to_string()),
            ..SecurityQuery::default()
        };
        assert_eq!(far.findings().map(|f| f.until), Ok(None));
        assert_eq!(encode("T 1/ä"), "T%201%2F%C3%A4");
    }
}
