//! Findings to security incidents: the per-site priority of each finding rule (pure) and
//! the task that hands new findings and their reviews to the alarm task (IO).
//!
//! A finding is an event, not a facility condition: it never enters the alarm list. It
//! becomes a member of a security incident (condition class `Access`, alarm id
//! `access_<rule>` / site / `finding:<id>`), so findings at one site within the grouping
//! window share one incident, with the priority its site gives the rule
//! (`[access.incidents]`, default from the finding's severity). The member stays open
//! until security reviews the finding; the review acknowledges and resolves it, and the
//! incident resolves with its last member.
//!
//! **Nothing lost, nothing twice.** The task reads the store from its own cursor
//! (`access_incident_cursor`: last finding and last review handed over), saved only after
//! the alarm task answered that the incident change is on disk. A crash in between hands
//! the same finding over again: its member is still open (joined, no new incident) or it
//! was reviewed meanwhile (skipped). Reviews recorded while the daemon was stopped
//! (`dcguard access review`) are picked up at the next start.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ingest::Ingest;
use super::reconcile::{Finding, Severity};
use crate::alarms::task::{AlarmHandle, CommandError, SecurityFinding};
use crate::config::model::{Config, Impact, Priority, PriorityPolicy};
use crate::rules::overrides::cell_for;
use crate::store::StoreError;
use crate::store::access::StoredFinding;

/// Alarm-id prefix of a finding's incident member.
pub const RULE_PREFIX: &str = "access_";
/// Findings or reviews read per store query.
const PAGE: usize = 200;
/// How often the store is read when no new finding was announced (reviews have no feed).
const POLL: Duration = Duration::from_secs(2);
/// Wait after a store error before the next try.
const RETRY: Duration = Duration::from_secs(5);

/// The priority of a finding's incident when its site does not configure the rule:
/// high -> P2, medium -> P3, low -> P4, informational (e.g. an unescorted third party at
/// a site where escort is optional) -> no incident.
pub fn default_priority(severity: Severity) -> Option<Priority> {
    match severity {
        Severity::High => Some(Priority::P2),
        Severity::Medium => Some(Priority::P3),
        Severity::Low => Some(Priority::P4),
        Severity::Info => None,
    }
}

/// The incident member of stored finding `id`, or `None` when its site gives the rule no
/// incident (or the site is unknown).
pub fn security_finding(
    id: i64,
    f: &Finding,
    config: &Config,
    matrix: &PriorityPolicy,
) -> Option<SecurityFinding> {
    let site = config.sites.iter().find(|s| s.id == f.site)?;
    let priority = match site.access.incidents.get(f.rule.as_str()) {
        Some(configured) => *configured,
        None => default_priority(f.severity),
    }?;
    let impact = match f.severity {
        Severity::High => Impact::High,
        Severity::Medium => Impact::Medium,
        Severity::Low | Severity::Info => Impact::Low,
    };
    let (impact, urgency) = cell_for(matrix, priority, impact)?;
    Some(SecurityFinding {
        rule: format!("{RULE_PREFIX}{}", f.rule),
        site: f.site.clone(),
        scope: format!("finding:{id}"),
        impact,
        urgency,
        room: f.room.clone(),
        summary: format!("Access finding {id} ({}): {}", f.rule, f.summary),
    })
}

/// Why a round of the task stopped.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("access store: {0}")]
    Store(#[from] StoreError),
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Alarms(#[from] CommandError),
}

/// Starts the task: it runs until `token` is cancelled or the alarm task stops.
pub fn spawn(
    ingest: Ingest,
    alarms: AlarmHandle,
    config: Arc<Config>,
    token: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut feed = ingest.findings_feed();
        loop {
            let wait = match round(&ingest, &alarms, &config).await {
                Ok(()) => POLL,
                Err(RoundError::Alarms(CommandError::Stopped)) => return,
                Err(error) => {
                    tracing::warn!(%error, "Findings not handed to the incident pipeline yet; retrying.");
                    RETRY
                }
            };
            tokio::select! {
                () = token.cancelled() => return,
                _ = feed.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// Runs a blocking store call off the async workers.
async fn blocking<T: Send + 'static>(
    ingest: &Ingest,
    f: impl FnOnce(&Ingest) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RoundError> {
    let ingest = ingest.clone();
    Ok(tokio::task::spawn_blocking(move || f(&ingest)).await??)
}

/// Hands every finding and review after the cursor to the alarm task.
async fn round(ingest: &Ingest, alarms: &AlarmHandle, config: &Config) -> Result<(), RoundError> {
    let (mut findings_at, mut reviews_at) =
        match blocking(ingest, |i| i.store().incident_cursor()).await? {
            Some(cursor) => cursor,
            None => {
                // First run on this store: findings from before this version stay findings.
                blocking(ingest, |i| {
                    let s = i.store();
                    let cursor = (s.last_finding_id()?, s.last_review_id()?);
                    s.set_incident_cursor(cursor.0, cursor.1)?;
                    Ok(cursor)
                })
                .await?
            }
        };
    loop {
        let page: Vec<StoredFinding> =
            blocking(ingest, move |i| i.store().findings_after(findings_at, PAGE)).await?;
        let Some(last) = page.last().map(|f| f.id) else {
            break;
        };
        for stored in &page {
            // A finding reviewed before it got here needs no incident.
            if !stored.reviews.is_empty() {
                continue;
            }
            if let Some(member) =
                security_finding(stored.id, &stored.finding, config, &config.priority)
            {
                alarms.raise_finding(member).await?;
            }
        }
        findings_at = last;
        blocking(ingest, move |i| {
            i.store().set_incident_cursor(findings_at, reviews_at)
        })
        .await?;
    }
    loop {
        let page = blocking(ingest, move |i| i.store().reviews_after(reviews_at, PAGE)).await?;
        let Some(last) = page.last().map(|r| r.id) else {
            break;
        };
        for review in page {
            let finding_id = review.finding_id;
            let Some(stored) = blocking(ingest, move |i| i.store().finding(finding_id)).await?
            else {
                continue;
            };
            if let Some(member) =
                security_finding(stored.id, &stored.finding, config, &config.priority)
            {
                alarms
                    .finding_reviewed(&member, &review.reviewer, &review.note)
                    .await?;
            }
        }
        reviews_at = last;
        blocking(ingest, move |i| {
            i.store().set_incident_cursor(findings_at, reviews_at)
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::reconcile::Rule;
    use crate::config::model::Urgency;
    use chrono::Utc;

    fn shipped() -> Config {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        crate::config::load(&dir).unwrap_or_else(|e| panic!("{e}"))
    }

    fn finding(site: &str, rule: Rule, severity: Severity) -> Finding {
        Finding {
            rule,
            site: site.to_owned(),
            severity,
            person: Some("A. Vendor".to_owned()),
            credential: None,
            ticket: Some("T-1".to_owned()),
            room: Some("dh1".to_owned()),
            reader: None,
            evidence: Vec::new(),
            at: Utc::now(),
            summary: "third party entered without their PIC".to_owned(),
        }
    }

    #[test]
    fn configured_rules_take_their_priority_and_the_rest_their_severity_default() {
        let config = shipped();
        let m = &config.priority;
        let p = |f: &Finding| {
            security_finding(7, f, &config, m).map(|s| m.priority(s.urgency, s.impact))
        };
        // Shipped: the DC and the Smart DC give no_ticket and unescorted third parties P1.
        let dc = finding("dc", Rule::NoTicket, Severity::High);
        assert_eq!(p(&dc), Some(Priority::P1));
        let s = security_finding(7, &dc, &config, m).unwrap();
        assert_eq!((s.impact, s.urgency), (Impact::High, Urgency::High));
        assert_eq!(s.rule, "access_no_ticket");
        assert_eq!(s.scope, "finding:7");
        assert_eq!(s.room.as_deref(), Some("dh1"));
        assert!(
            s.summary.starts_with("Access finding 7 (no_ticket): "),
            "{}",
            s.summary
        );
        assert_eq!(
            p(&finding(
                "smart-dc",
                Rule::UnescortedThirdParty,
                Severity::High
            )),
            Some(Priority::P1)
        );
        // Not configured at the DRC: the severity default.
        assert_eq!(
            p(&finding("drc", Rule::NoTicket, Severity::High)),
            Some(Priority::P2)
        );
        assert_eq!(
            p(&finding("dc", Rule::Overstay, Severity::Medium)),
            Some(Priority::P3)
        );
        assert_eq!(
            p(&finding("dc", Rule::ClockSkew, Severity::Low)),
            Some(Priority::P4)
        );
        // Escort optional at the DRC: an informational finding opens no incident.
        assert_eq!(
            p(&finding("drc", Rule::UnescortedThirdParty, Severity::Info)),
            None
        );
        // An unknown site opens none either (never a panic).
        assert_eq!(
            p(&finding("atlantis", Rule::NoTicket, Severity::High)),
            None
        );
    }

    #[test]
    fn none_in_the_site_file_turns_a_rule_off() {
        let mut config = shipped();
        let dc = config.sites.iter_mut().find(|s| s.id == "dc").unwrap();
        dc.access.incidents.insert("no_ticket".to_owned(), None);
        dc.access
            .incidents
            .insert("clock_skew".to_owned(), Some(Priority::P1));
        let m = config.priority.clone();
        assert!(
            security_finding(
                1,
                &finding("dc", Rule::NoTicket, Severity::High),
                &config,
                &m
            )
            .is_none()
        );
        let skew = security_finding(
            1,
            &finding("dc", Rule::ClockSkew, Severity::Low),
            &config,
            &m,
        )
        .unwrap();
        assert_eq!(m.priority(skew.urgency, skew.impact), Priority::P1);
    }
}
