//! The ServiceNow Table API adapter: one incident record per dcguard incident, found by
//! `correlation_id` before anything is created, updated with work notes, resolved with
//! state 6.
//!
//! ## The requests (base = `<instance_url>/api/now/table/<table>`, basic auth)
//!
//! 1. **Look up** (every transition):
//!    `GET <base>?sysparm_query=correlation_id=<cid>^correlation_display=dcguard^ORDERBYDESCsys_created_on`
//!    `&sysparm_limit=1&sysparm_fields=sys_id,number,state,work_notes&sysparm_display_value=all`.
//! 2. **No record**: `POST <base>` with `short_description` (`[P1] <summary>`, at most 160
//!    characters), `description`, `impact` and `urgency` (`1` high .. `3` low; the instance
//!    derives `priority` from them with its own lookup rules), `correlation_id`,
//!    `correlation_display` = `dcguard`, `assignment_group` and `caller_id` when configured,
//!    and `work_notes` = the transition's note headed by its marker. A transition that
//!    resolves an incident the instance has no record of (e.g. the opening was parked)
//!    creates the record already resolved, so the service desk still sees it.
//! 3. **Record found, marker in its work notes**: the transition was applied before
//!    (a retry after a timeout, or a restart between send and commit): nothing is sent.
//! 4. **Record found, marker absent**: `PATCH <base>/<sys_id>` with `work_notes`; an
//!    escalation also sets `impact`, `urgency` and `short_description`; the resolution sets
//!    `state` = 6 (Resolved), `close_code` and `close_notes` (not when the record is already
//!    resolved, closed or cancelled by the desk).
//!
//! ## Deduplication (ServiceNow has none built in)
//!
//! - `correlation_id` is a 100-character string field. The incident's dedup key is used
//!   as is when it fits and holds no `^` (the encoded-query separator); otherwise its
//!   first characters, `~` and the incident id (`inc-` + FNV-1a 64 of the full key), so
//!   it still identifies one incident and stays readable ([`correlation_id`]).
//! - Per transition, the work note starts with `[dcguard <idempotency key>]`. The lookup
//!   asks for display values, with which the Table API renders the `work_notes` journal
//!   as text; a marker found there means "already applied".
//! - **Residual races** (documented, not closable through the Table API alone): a
//!   request that timed out but is applied by the instance only after the retry's
//!   look-up is applied twice: a slow create yields a second record, a slow update a second
//!   note. The window is bounded by the request timeout. An instance whose ACLs hide the
//!   journal from the integration user defeats the marker check: a retried update then
//!   adds its note twice, never a second record. The dispatcher sends one transition
//!   per incident at a time, so the adapter never races itself.
//! - Answers are sorted by [`super::classify`]: 401/403 (credentials, ACL) and other 4xx
//!   park the transition; 408, 429 and 5xx retry. A 2xx look-up whose body is not the
//!   Table API's JSON is retried (a proxy or maintenance page), never taken as "no record".
//!
//! The password is read once from its reference and never logged (the `Debug` impl
//! leaves it out).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::webhook::{SecretError, read_secret};
use super::{Adapter, SendError, SendFuture, classify};
use crate::config::model::{Impact, Urgency};
use crate::incidents::incident::{IncidentSnapshot, IncidentTransition, TransitionKind};

/// The adapter's queue name in the outbox.
pub const NAME: &str = "servicenow";
/// `correlation_display`: which system owns the `correlation_id`.
pub const CORRELATION_DISPLAY: &str = "dcguard";
/// Length of the `correlation_id` field (String(100) in the base `task` table).
pub const CORRELATION_ID_MAX: usize = 100;
/// Length of `short_description` (String(160) in the base `task` table).
pub const SHORT_DESCRIPTION_MAX: usize = 160;
/// Incident state Resolved.
pub const STATE_RESOLVED: &str = "6";
/// Incident state Closed.
pub const STATE_CLOSED: &str = "7";
/// Incident state Canceled.
pub const STATE_CANCELED: &str = "8";
/// The close code set on resolution (a choice of the base instance since Tokyo; verify
/// the choice list of the target instance).
pub const DEFAULT_CLOSE_CODE: &str = "Solution provided";

/// `1` high, `2` medium, `3` low.
pub fn impact_level(i: Impact) -> u8 {
    match i {
        Impact::High => 1,
        Impact::Medium => 2,
        Impact::Low => 3,
    }
}

/// `1` high, `2` medium, `3` low.
pub fn urgency_level(u: Urgency) -> u8 {
    match u {
        Urgency::High => 1,
        Urgency::Medium => 2,
        Urgency::Low => 3,
    }
}

/// The key of an incident bounded to `max` characters: the dedup key when it fits and
/// holds none of `forbidden`, else its first characters (forbidden ones replaced by `_`),
/// `~` and the incident id. Shared with the PagerDuty adapter (`dedup_key` <= 255).
pub fn bounded_key(incident: &IncidentSnapshot, max: usize, forbidden: &[char]) -> String {
    let key = &incident.dedup_key;
    if key.chars().count() <= max && !key.contains(forbidden) {
        return key.clone();
    }
    let keep = max.saturating_sub(incident.id.chars().count() + 1);
    let head: String = key
        .chars()
        .take(keep)
        .map(|c| if forbidden.contains(&c) { '_' } else { c })
        .collect();
    format!("{head}~{}", incident.id)
}

/// The record's `correlation_id` (at most [`CORRELATION_ID_MAX`] characters, no `^`).
pub fn correlation_id(incident: &IncidentSnapshot) -> String {
    bounded_key(incident, CORRELATION_ID_MAX, &['^'])
}

/// The encoded query finding the record of a correlation id.
pub fn lookup_query(correlation_id: &str) -> String {
    format!(
        "correlation_id={correlation_id}^correlation_display={CORRELATION_DISPLAY}^ORDERBYDESCsys_created_on"
    )
}

/// `[dcguard <idempotency key>]`: heads the work note of a transition.
pub fn marker(t: &IncidentTransition) -> String {
    format!("[dcguard {}]", t.idempotency_key)
}

/// The work note of a transition: marker, note, then the incident's details.
pub fn work_note(t: &IncidentTransition) -> String {
    let mut s = format!("{} {}", marker(t), t.note);
    if !t.incident.details.is_empty() {
        s.push_str("\n\n");
        s.push_str(&t.incident.details);
    }
    s
}

/// `[P1] <summary>`, cut to [`SHORT_DESCRIPTION_MAX`] characters.
pub fn short_description(i: &IncidentSnapshot) -> String {
    let s = format!("[{}] {}", i.priority.as_str(), i.summary);
    if s.chars().count() <= SHORT_DESCRIPTION_MAX {
        return s;
    }
    let mut cut: String = s.chars().take(SHORT_DESCRIPTION_MAX - 3).collect();
    cut.push_str("...");
    cut
}

fn fmt_number(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(v) if unit.is_empty() => format!("{v}"),
        Some(v) => format!("{v} {unit}"),
        None => "-".to_owned(),
    }
}

/// The record's `description`: where, what, how bad, until when, which incident.
pub fn description(i: &IncidentSnapshot) -> String {
    let or_dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".to_owned());
    format!(
        "{summary}\n\nSite: {site}\nRoom: {room}\nRack: {rack}\nDevice: {device}\nPoint: {point}\n\
         Condition: {condition} ({class:?})\nValue: {value}\nLimit: {limit}\n\
         Priority: {priority} (impact {impact}, urgency {urgency})\nOpened: {opened}\nDue: {due}\n\
         dcguard incident: {id}\nDedup key: {key}\n\n{details}",
        summary = i.summary,
        site = i.site,
        room = or_dash(&i.room),
        rack = or_dash(&i.rack),
        device = or_dash(&i.device),
        point = or_dash(&i.point),
        condition = i.condition,
        class = i.class,
        value = fmt_number(i.value, &i.unit),
        limit = fmt_number(i.limit, &i.unit),
        priority = i.priority.as_str(),
        impact = impact_level(i.impact),
        urgency = urgency_level(i.urgency),
        opened = i
            .opened_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        due = i.due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        id = i.id,
        key = i.dedup_key,
        details = i.details,
    )
    .trim_end()
    .to_owned()
}

/// Where and how records are written (everything but the credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Instance base URL, e.g. `https://example.service-now.com`.
    pub instance_url: String,
    /// Table (`incident`).
    pub table: String,
    /// Integration user.
    pub username: String,
    /// `assignment_group` of created records.
    pub assignment_group: Option<String>,
    /// `caller_id` of created records.
    pub caller_id: Option<String>,
    /// `close_code` of resolved records.
    pub close_code: String,
}

/// The POST body creating the record of a transition's incident.
pub fn create_body(t: &IncidentTransition, settings: &Settings) -> Value {
    let i = &t.incident;
    let mut body = Map::new();
    body.insert("short_description".into(), json!(short_description(i)));
    body.insert("description".into(), json!(description(i)));
    body.insert("impact".into(), json!(impact_level(i.impact).to_string()));
    body.insert(
        "urgency".into(),
        json!(urgency_level(i.urgency).to_string()),
    );
    body.insert("correlation_id".into(), json!(correlation_id(i)));
    body.insert("correlation_display".into(), json!(CORRELATION_DISPLAY));
    if let Some(g) = &settings.assignment_group {
        body.insert("assignment_group".into(), json!(g));
    }
    if let Some(c) = &settings.caller_id {
        body.insert("caller_id".into(), json!(c));
    }
    body.insert("work_notes".into(), json!(work_note(t)));
    if t.kind == TransitionKind::Resolved {
        insert_resolution(&mut body, t, settings);
    }
    Value::Object(body)
}

fn insert_resolution(body: &mut Map<String, Value>, t: &IncidentTransition, settings: &Settings) {
    body.insert("state".into(), json!(STATE_RESOLVED));
    body.insert("close_code".into(), json!(settings.close_code));
    body.insert(
        "close_notes".into(),
        json!(format!("Resolved by dcguard: {}", t.note)),
    );
}

/// The PATCH body applying a transition to a found record in `state`.
pub fn update_body(t: &IncidentTransition, state: &str, settings: &Settings) -> Value {
    let i = &t.incident;
    let mut body = Map::new();
    body.insert("work_notes".into(), json!(work_note(t)));
    match &t.kind {
        TransitionKind::Escalated { .. } => {
            body.insert("short_description".into(), json!(short_description(i)));
            body.insert("impact".into(), json!(impact_level(i.impact).to_string()));
            body.insert(
                "urgency".into(),
                json!(urgency_level(i.urgency).to_string()),
            );
        }
        TransitionKind::Resolved
            if ![STATE_RESOLVED, STATE_CLOSED, STATE_CANCELED].contains(&state) =>
        {
            insert_resolution(&mut body, t, settings);
        }
        _ => {}
    }
    Value::Object(body)
}

/// The record found by the look-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `sys_id`.
    pub sys_id: String,
    /// `state` (value, e.g. `"1"`).
    pub state: String,
    /// The `work_notes` journal as the instance rendered it (display value).
    pub work_notes: String,
}

/// A field of a Table API record: a plain string, or `{"value", "display_value"}` with
/// `sysparm_display_value=all`.
fn field(record: &Value, name: &str, display: bool) -> String {
    match record.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => {
            let pick = if display { "display_value" } else { "value" };
            let other = if display { "value" } else { "display_value" };
            o.get(pick)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .or_else(|| o.get(other).and_then(Value::as_str))
                .unwrap_or_default()
                .to_owned()
        }
        _ => String::new(),
    }
}

/// Reads a look-up reply: `{"result": [record?]}`.
pub fn parse_lookup(body: &[u8]) -> Result<Option<Found>, SendError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| SendError::retryable(format!("look-up reply is not JSON: {e}")))?;
    let Some(records) = v.get("result").and_then(Value::as_array) else {
        return Err(SendError::retryable("look-up reply has no result list"));
    };
    let Some(record) = records.first() else {
        return Ok(None);
    };
    let sys_id = field(record, "sys_id", false);
    if sys_id.is_empty() {
        return Err(SendError::retryable(
            "look-up reply has a record without sys_id",
        ));
    }
    Ok(Some(Found {
        sys_id,
        state: field(record, "state", false),
        work_notes: field(record, "work_notes", true),
    }))
}

/// The ServiceNow adapter.
pub struct ServiceNowAdapter {
    client: reqwest::Client,
    settings: Settings,
    password: String,
    base: String,
}

impl std::fmt::Debug for ServiceNowAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("ServiceNowAdapter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ServiceNowAdapter {
    /// An adapter writing to `settings.table` of `settings.instance_url` as
    /// `settings.username`, each request bounded by `timeout`.
    pub fn new(settings: Settings, password: impl Into<String>, timeout: Duration) -> Self {
        let base = format!(
            "{}/api/now/table/{}",
            settings.instance_url.trim_end_matches('/'),
            settings.table
        );
        ServiceNowAdapter {
            client: super::http_client(timeout),
            settings,
            password: password.into(),
            base,
        }
    }

    /// From `[ticketing.servicenow]`: reads the password now.
    pub fn from_config(
        sn: &crate::config::model::ServiceNow,
        timeout: Duration,
    ) -> Result<Self, SecretError> {
        let password = match &sn.password {
            Some(r) => read_secret(r)?,
            None => return Err(SecretError::Empty("ticketing.servicenow".to_owned())),
        };
        let settings = Settings {
            instance_url: sn.instance_url.clone(),
            table: sn.table.clone(),
            username: sn.username.clone(),
            assignment_group: sn.assignment_group.clone(),
            caller_id: sn.caller_id.clone(),
            close_code: DEFAULT_CLOSE_CODE.to_owned(),
        };
        Ok(ServiceNowAdapter::new(settings, password, timeout))
    }

    /// The Table API URL of the table.
    pub fn table_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, url)
            .basic_auth(&self.settings.username, Some(&self.password))
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// Sends, classifies, and returns the body of a 2xx answer.
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, SendError> {
        let reply = req
            .send()
            .await
            .map_err(|e| SendError::from_transport(&e))?;
        let outcome = classify(
            reply.status(),
            reply.headers().get(reqwest::header::RETRY_AFTER),
        );
        // Reading the body of an error reply only frees the connection.
        let body = reply.bytes().await;
        outcome?;
        body.map(|b| b.to_vec())
            .map_err(|e| SendError::from_transport(&e))
    }

    /// The record of a correlation id, if the instance has one.
    pub async fn lookup(&self, correlation_id: &str) -> Result<Option<Found>, SendError> {
        let query = lookup_query(correlation_id);
        let req = self.request(reqwest::Method::GET, &self.base).query(&[
            ("sysparm_query", query.as_str()),
            ("sysparm_limit", "1"),
            ("sysparm_fields", "sys_id,number,state,work_notes"),
            ("sysparm_display_value", "all"),
            ("sysparm_exclude_reference_link", "true"),
        ]);
        parse_lookup(&self.call(req).await?)
    }

    async fn deliver(&self, t: &IncidentTransition) -> Result<(), SendError> {
        let cid = correlation_id(&t.incident);
        match self.lookup(&cid).await? {
            None => {
                let req = self
                    .request(reqwest::Method::POST, &self.base)
                    .json(&create_body(t, &self.settings));
                self.call(req).await?;
                tracing::debug!(key = %t.idempotency_key, "ServiceNow record created");
            }
            Some(found) if found.work_notes.contains(&marker(t)) => {
                tracing::debug!(key = %t.idempotency_key, sys_id = %found.sys_id,
                    "ServiceNow record already has this transition");
            }
            Some(found) => {
                // A sys_id is 32 hex digits; anything else is not put into a URL.
                if !found.sys_id.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(SendError::Rejected {
                        status: None,
                        reason: "look-up returned a malformed sys_id".to_owned(),
                    });
                }
                let url = format!("{}/{}", self.base, found.sys_id);
                let req = self
                    .request(reqwest::Method::PATCH, &url)
                    .json(&update_body(t, &found.state, &self.settings));
                self.call(req).await?;
            }
        }
        Ok(())
    }
}

impl Adapter for ServiceNowAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn send<'a>(&'a self, transition: &'a IncidentTransition) -> SendFuture<'a> {
        Box::pin(self.deliver(transition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Priority;
    use crate::incidents::incident::IncidentState;
    use crate::rules::condition::ConditionClass;
    use chrono::{DateTime, Utc};

    fn snapshot(key: &str) -> IncidentSnapshot {
        let at: DateTime<Utc> = "2026-11-21T12:00:00Z".parse().unwrap();
        IncidentSnapshot {
            id: "inc-0123456789abcdef".into(),
            dedup_key: key.into(),
            state: IncidentState::Open,
            priority: Priority::P1,
            impact: Impact::High,
            urgency: Urgency::High,
            opened_at: at,
            due_at: at,
            site: "dc".into(),
            room: Some("dh1".into()),
            rack: None,
            device: None,
            point: None,
            condition: "hall_temperature_high".into(),
            class: ConditionClass::Temperature,
            value: Some(27.8),
            limit: Some(27.0),
            unit: "degC".into(),
            summary: "hot".into(),
            details: String::new(),
        }
    }

    #[test]
    fn a_short_key_is_the_correlation_id_and_a_long_one_is_bounded_and_distinct() {
        let short = snapshot("dc/hall_temperature_high/room:dh1/2026-11-21T12:00:00.000Z");
        assert_eq!(correlation_id(&short), short.dedup_key);
        let long = snapshot(&format!("dc/rule/{}/1", "x".repeat(150)));
        let cid = correlation_id(&long);
        assert_eq!(cid.chars().count(), CORRELATION_ID_MAX);
        assert!(cid.starts_with("dc/rule/xxx"));
        assert!(cid.ends_with("~inc-0123456789abcdef"));
        let caret = snapshot("dc/a^b/-/1");
        assert_eq!(correlation_id(&caret), "dc/a_b/-/1~inc-0123456789abcdef");
    }

    #[test]
    fn look_up_replies_in_both_value_forms_are_read() {
        let all = br#"{"result":[{"sys_id":{"value":"abc123","display_value":"abc123"},
            "state":{"value":"6","display_value":"Resolved"},
            "work_notes":{"value":"","display_value":"2026-11-21 - dcguard (Work notes)\n[dcguard k:1] x"}}]}"#;
        let found = parse_lookup(all).unwrap().unwrap();
        assert_eq!(found.sys_id, "abc123");
        assert_eq!(found.state, "6");
        assert!(found.work_notes.contains("[dcguard k:1]"));
        let plain = br#"{"result":[{"sys_id":"s1","state":"1","work_notes":""}]}"#;
        assert_eq!(parse_lookup(plain).unwrap().unwrap().sys_id, "s1");
        assert_eq!(parse_lookup(br#"{"result":[]}"#).unwrap(), None);
        assert!(matches!(
            parse_lookup(b"<html>maintenance</html>"),
            Err(SendError::Retryable { .. })
        ));
        assert!(matches!(
            parse_lookup(br#"{"error":{}}"#),
            Err(SendError::Retryable { .. })
        ));
    }

    #[test]
    fn short_description_is_cut_to_the_field_length() {
        let mut s = snapshot("k");
        s.summary = "y".repeat(300);
        let d = short_description(&s);
        assert_eq!(d.chars().count(), SHORT_DESCRIPTION_MAX);
        assert!(d.starts_with("[P1] yyy") && d.ends_with("..."));
    }
}
