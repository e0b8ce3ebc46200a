//! The access service API (`access::service`) on a real store and audit chain in a temporary
//! data directory: visit tickets with history, the JSON batch endpoint's durable path,
//! finding reviews, the visit report, CSV export with spreadsheet-safe cells, retention.
//! Every check reopens the data directory where durability is the point.

mod common_access;

use std::path::Path;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use dcguard::access::ingest::{open_offline, verify_chain};
use dcguard::access::reconcile::Rule;
use dcguard::access::service::{
    AccessService, EventFilter, FindingFilter, ServiceError, VisitFilter, VisitInput,
};
use dcguard::access::ticket::{Person, TicketChange, TicketState, Visitor, VisitorKind};
use dcguard::config::model::Config;

/// 2026-11-23 (a Monday) at `h:m` WIB, in UTC.
fn wib(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0)
        .single()
        .expect("valid")
        - TimeDelta::hours(7)
}

fn open(config: &Config, dir: &Path) -> AccessService {
    match open_offline(config, dir) {
        Ok(s) => s,
        Err(e) => panic!("open {}: {e}", dir.display()),
    }
}

fn pic() -> Person {
    Person {
        name: "Budi PIC".into(),
        identity_number: "PIC-1".into(),
        organisation: "Pusintek".into(),
        credentials: vec!["70001".into()],
    }
}

fn vendor() -> Visitor {
    Visitor {
        name: "Vendor One".into(),
        identity_number: "V-1".into(),
        organisation: "PT Vendor".into(),
        kind: VisitorKind::ThirdParty,
        credentials: vec!["70002".into()],
        pic: Some("PIC-1".into()),
    }
}

fn input(id: &str, site: &str) -> VisitInput {
    VisitInput {
        id: id.into(),
        site: site.into(),
        rooms: Vec::new(),
        window_start: wib(9, 0),
        window_end: wib(11, 0),
        pic: pic(),
        visitors: vec![vendor()],
        activity_plan: "replace a PDU".into(),
        approver: "Kepala Bagian".into(),
    }
}

/// A JSON batch of granted passages `(reader, credential, direction, device time)`.
fn batch(passages: &[(&str, &str, &str, DateTime<Utc>)]) -> Vec<u8> {
    let events: Vec<serde_json::Value> = passages
        .iter()
        .map(|(reader, credential, direction, at)| {
            serde_json::json!({
                "reader": reader, "credential": credential, "kind": "granted",
                "direction": direction, "time": at.to_rfc3339(),
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "events": events })).expect("encodes")
}

#[test]
fn visit_tickets_are_validated_and_keep_their_history_across_a_restart() {
    let config = common_access::shipped();
    let dir = tempfile::tempdir().expect("tempdir");
    let created_at = wib(7, 0) - TimeDelta::days(1);
    {
        let s = open(&config, dir.path());
        // Smart DC without destination rooms, window backwards, third party without PIC.
        let mut bad = input("T-BAD", "smart-dc");
        bad.window_end = bad.window_start - TimeDelta::hours(1);
        bad.visitors[0].pic = None;
        let err = s.create_visit(bad, "ticketing", created_at).unwrap_err();
        assert_eq!(err.status(), 400);
        let text = err.to_string();
        for expected in ["room", "window", "PIC"] {
            assert!(
                text.to_lowercase().contains(&expected.to_lowercase()),
                "{expected} missing in {text}"
            );
        }
        assert!(matches!(
            s.create_visit(input("T1", "nowhere"), "ticketing", created_at),
            Err(ServiceError::UnknownSite { .. })
        ));

        let out = s
            .create_visit(input("T1", "dc"), "ticketing", created_at)
            .unwrap();
        assert!(out.changed);
        // A re-sent identical create changes nothing; other content under the id is 409.
        let again = s
            .create_visit(input("T1", "dc"), "ticketing", created_at)
            .unwrap();
        assert!(!again.changed);
        let mut other = input("T1", "dc");
        other.activity_plan = "something else".into();
        assert_eq!(
            s.create_visit(other.clone(), "ticketing", created_at)
                .unwrap_err()
                .status(),
            409
        );
        s.update_visit(other, "ticketing", created_at + TimeDelta::hours(1))
            .unwrap();
        s.cancel_visit("T1", "ticketing", created_at + TimeDelta::hours(2))
            .unwrap();
        let err = s
            .close_visit("T1", "ticketing", created_at + TimeDelta::hours(3))
            .unwrap_err();
        assert_eq!(err.status(), 409, "{err}");
        assert_eq!(s.visit("T9").unwrap_err().status(), 404);
    }
    // Reopened: the ticket and its three revisions came back from the store.
    let s = open(&config, dir.path());
    let t = s.visit("T1").unwrap();
    assert_eq!(t.state, TicketState::Cancelled);
    let changes: Vec<TicketChange> = t.history.iter().map(|r| r.change).collect();
    assert_eq!(
        changes,
        vec![
            TicketChange::Created,
            TicketChange::Updated,
            TicketChange::Cancelled
        ]
    );
    assert_eq!(t.history[0].snapshot.activity_plan, "replace a PDU");
    assert_eq!(t.history[1].snapshot.activity_plan, "something else");
    let listed = s
        .visits(&VisitFilter {
            person: Some("vendor one".into()),
            ..VisitFilter::default()
        })
        .unwrap();
    assert_eq!(listed.len(), 1);
    drop(s);
    // Every revision is in the audit chain, and it verifies.
    let summary = verify_chain(dir.path(), None).expect("chain verifies");
    assert!(!summary.is_empty());
}

#[test]
fn json_batches_are_stored_before_the_reply_and_resent_batches_add_nothing() {
    let config = common_access::shipped();
    let dir = tempfile::tempdir().expect("tempdir");
    let body = batch(&[
        ("DC-MT-OUT-01", "10001", "entry", wib(9, 0)),
        ("DC-MT-IN-01", "10001", "entry", wib(9, 1)),
    ]);
    {
        let s = open(&config, dir.path());
        let receipt = s.ingest_json_batch(&body, wib(9, 2)).unwrap();
        assert_eq!((receipt.received, receipt.new), (2, 2));
        // Dropped without any tick or shutdown: what was acknowledged is on disk.
    }
    let s = open(&config, dir.path());
    let receipt = s.ingest_json_batch(&body, wib(9, 5)).unwrap();
    assert_eq!((receipt.received, receipt.new), (2, 0));
    let events = s
        .events(&EventFilter {
            site: Some("dc".into()),
            ..EventFilter::default()
        })
        .unwrap();
    assert_eq!(events.len(), 2);
    // Invalid batches store nothing and name the problem.
    let err = s
        .ingest_json_batch(br#"{"events": [{"reader": "DC-MT-OUT-01"}]}"#, wib(9, 6))
        .unwrap_err();
    assert_eq!(err.status(), 400);
    let err = s
        .ingest_json_batch(
            &batch(&[("NOT-A-READER", "1", "entry", wib(9, 0))]),
            wib(9, 6),
        )
        .unwrap_err();
    assert!(matches!(err, ServiceError::UnknownReaders(_)), "{err}");
    assert_eq!(s.events(&EventFilter::default()).unwrap().len(), 2);
    drop(s);
    let summary = verify_chain(dir.path(), None).expect("chain verifies");
    assert!(!summary.is_empty());
}

#[test]
fn findings_are_stored_reviewed_with_a_note_and_exported_as_safe_csv() {
    let config = common_access::shipped();
    let dir = tempfile::tempdir().expect("tempdir");
    let id;
    {
        let s = open(&config, dir.path());
        // A credential nobody holds, and a denial whose reason is a spreadsheet formula.
        let mut body: serde_json::Value =
            serde_json::from_slice(&batch(&[("DC-MT-OUT-01", "99999", "entry", wib(9, 0))]))
                .unwrap();
        body["events"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "reader": "DC-MT-OUT-01", "credential": "10001", "kind": "denied",
                "reason": "=HYPERLINK(\"http://evil\")",
                "time": (wib(9, 0) + TimeDelta::seconds(1)).to_rfc3339(),
            }));
        s.ingest_json_batch(
            &serde_json::to_vec(&body).unwrap(),
            wib(9, 0) + TimeDelta::seconds(2),
        )
        .unwrap();
        // Settle (10 s) plus a tick: raised well within the 60 s of issue 6.
        let raised = s.tick(wib(9, 0) + TimeDelta::seconds(12)).unwrap();
        let f = raised
            .iter()
            .find(|f| f.finding.rule == Rule::UnknownCredential)
            .unwrap_or_else(|| panic!("unknown_credential raised: {raised:?}"));
        id = f.id;
        assert!(f.raised_at - f.finding.at <= TimeDelta::seconds(60));

        for (reviewer, note) in [("", "x"), ("sec-1", " ")] {
            assert_eq!(
                s.review_finding(id, reviewer, note, wib(10, 0))
                    .unwrap_err()
                    .status(),
                400
            );
        }
        assert_eq!(
            s.review_finding(999_999, "sec-1", "n", wib(10, 0))
                .unwrap_err()
                .status(),
            404
        );
        let (review, new) = s
            .review_finding(id, "sec-1", "lost card, reissued", wib(10, 0))
            .unwrap();
        assert!(new);
        assert_eq!(review.reviewer, "sec-1");
        let (_, new) = s
            .review_finding(id, "sec-1", "lost card, reissued", wib(10, 1))
            .unwrap();
        assert!(!new, "the same review again is not a second review");
    }
    let s = open(&config, dir.path());
    let f = s.finding(id).unwrap();
    assert_eq!(f.reviews.len(), 1);
    assert_eq!(f.reviews[0].note, "lost card, reissued");
    let unreviewed = s
        .findings(&FindingFilter {
            reviewed: Some(false),
            ..FindingFilter::default()
        })
        .unwrap();
    assert!(unreviewed.iter().all(|x| x.id != id));

    let mut csv = Vec::new();
    let rows = s
        .export_events_csv(
            &EventFilter {
                site: Some("dc".into()),
                ..EventFilter::default()
            },
            &mut csv,
        )
        .unwrap();
    assert_eq!(rows, 2);
    let text = String::from_utf8(csv).unwrap();
    assert!(text.contains("'=HYPERLINK"), "{text}");
    assert!(
        !text.contains(",=HYPERLINK") && !text.contains(",\"=HYPERLINK"),
        "{text}"
    );
    let mut csv = Vec::new();
    s.export_findings_csv(&FindingFilter::default(), &mut csv)
        .unwrap();
    let text = String::from_utf8(csv).unwrap();
    assert!(text.contains("unknown_credential"), "{text}");
    assert!(text.contains("lost card, reissued"), "{text}");
}

#[test]
fn the_visit_report_lists_stays_escort_pairing_and_findings() {
    let config = common_access::shipped();
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(&config, dir.path());
    s.create_visit(
        input("T1", "dc"),
        "ticketing",
        wib(7, 0) - TimeDelta::days(1),
    )
    .unwrap();
    // PIC and vendor in through the mantrap together, then into the corridor, both out;
    // no technical escort all day.
    // Each passage reaches the daemon two seconds after it happened (a live reader).
    let passages = [
        ("DC-MT-OUT-01", "70001", "entry", wib(9, 5)),
        (
            "DC-MT-OUT-01",
            "70002",
            "entry",
            wib(9, 5) + TimeDelta::seconds(5),
        ),
        ("DC-MT-IN-01", "70001", "entry", wib(9, 6)),
        (
            "DC-MT-IN-01",
            "70002",
            "entry",
            wib(9, 6) + TimeDelta::seconds(5),
        ),
        ("DC-MT-IN-02", "70001", "exit", wib(10, 0)),
        (
            "DC-MT-IN-02",
            "70002",
            "exit",
            wib(10, 0) + TimeDelta::seconds(5),
        ),
        ("DC-MT-OUT-02", "70001", "exit", wib(10, 1)),
        (
            "DC-MT-OUT-02",
            "70002",
            "exit",
            wib(10, 1) + TimeDelta::seconds(5),
        ),
    ];
    for p in passages {
        s.ingest_json_batch(&batch(&[p]), p.3 + TimeDelta::seconds(2))
            .unwrap();
        s.tick(p.3 + TimeDelta::seconds(2)).unwrap();
    }
    s.tick(wib(10, 5)).unwrap();
    let r = s.visit_report("T1", wib(12, 0)).unwrap();
    assert_eq!(r.ticket, "T1");
    assert_eq!(r.people.len(), 2);
    assert_eq!(r.summary.people_entered, 2);
    let vendor = r
        .people
        .iter()
        .find(|p| p.identity_number == "V-1")
        .expect("vendor listed");
    assert_eq!(vendor.stays.len(), 1);
    assert_eq!(
        vendor.stays[0].entered_at,
        wib(9, 5) + TimeDelta::seconds(5)
    );
    assert_eq!(
        vendor.stays[0].left_at,
        Some(wib(10, 1) + TimeDelta::seconds(5))
    );
    assert_eq!(vendor.time_inside_secs, 56 * 60);
    assert_eq!(vendor.escorted_by.as_deref(), Some("Budi PIC"));
    assert!(!vendor.escort.is_empty());
    assert!(
        vendor.escort.iter().all(|e| e.pic_offset_secs == Some(-5)),
        "{:?}",
        vendor.escort
    );
    assert_eq!(r.summary.unescorted_entries, 0);
    assert!(
        r.findings.iter().any(|f| f.rule == Rule::NoTechnicalEscort),
        "{:?}",
        r.findings
    );
    assert_eq!(s.visit_report("T9", wib(12, 0)).unwrap_err().status(), 404);
    // Produced and stored the working day after the visit (Tuesday), once.
    assert!(s.produce_due_reports(wib(12, 0)).unwrap().is_empty());
    let tuesday = wib(12, 0) + TimeDelta::days(1);
    assert_eq!(
        s.produce_due_reports(tuesday).unwrap(),
        vec!["T1".to_owned()]
    );
    assert!(s.produce_due_reports(tuesday).unwrap().is_empty());
    let stored = s.stored_report("T1").unwrap().expect("stored");
    assert_eq!(stored.report.ticket, "T1");
    // ITSM.3: the ticket closes with its report, by the daemon, as a revision.
    let t1 = s.visit("T1").unwrap();
    assert_eq!(t1.state, dcguard::access::ticket::TicketState::Closed);
    let last = t1.history.last().expect("history");
    assert_eq!(last.change, dcguard::access::ticket::TicketChange::Closed);
    assert_eq!(last.at, tuesday);
}

#[test]
fn retention_removes_only_what_is_older_than_the_configured_periods() {
    let config = common_access::shipped();
    assert_eq!(config.access.access_log_retention_months, 12);
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(&config, dir.path());
    s.create_visit(
        input("T1", "dc"),
        "ticketing",
        wib(7, 0) - TimeDelta::days(1),
    )
    .unwrap();
    s.ingest_json_batch(
        &batch(&[("DC-MT-OUT-01", "10001", "entry", wib(9, 0))]),
        wib(9, 1),
    )
    .unwrap();
    // Eleven months on: nothing goes.
    let kept = s.apply_retention(wib(9, 0) + TimeDelta::days(335)).unwrap();
    assert_eq!((kept.events, kept.tickets), (0, 0));
    assert_eq!(s.events(&EventFilter::default()).unwrap().len(), 1);
    // Thirteen months on: the event and the ticket (12 months after its visit) go.
    let later = wib(9, 0) + TimeDelta::days(400);
    s.ingest_json_batch(
        &batch(&[("DC-MT-OUT-01", "10001", "entry", later)]),
        later + TimeDelta::seconds(1),
    )
    .unwrap();
    let gone = s.apply_retention(later + TimeDelta::minutes(1)).unwrap();
    assert_eq!((gone.events, gone.tickets), (1, 1));
    assert_eq!(s.events(&EventFilter::default()).unwrap().len(), 1);
    assert_eq!(s.visit("T1").unwrap_err().status(), 404);
    drop(s);
    verify_chain(dir.path(), None).expect("the chain still verifies after retention");
}

/// `dcguard access ARGS --config config --data-dir DIR`: (exit code, stdout, stderr).
fn dcguard_access(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcguard"))
        .arg("access")
        .args(args)
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .arg("--data-dir")
        .arg(dir)
        .env_remove("DCGUARD_AUDIT_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("dcguard runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_access_commands_query_export_report_and_review() {
    let config = common_access::shipped();
    let dir = tempfile::tempdir().expect("tempdir");
    let finding_id;
    {
        let s = open(&config, dir.path());
        s.create_visit(
            input("T1", "dc"),
            "ticketing",
            wib(7, 0) - TimeDelta::days(1),
        )
        .unwrap();
        for p in [
            ("DC-MT-OUT-01", "70001", "entry", wib(9, 5)),
            (
                "DC-MT-OUT-01",
                "70002",
                "entry",
                wib(9, 5) + TimeDelta::seconds(5),
            ),
        ] {
            s.ingest_json_batch(&batch(&[p]), p.3 + TimeDelta::seconds(2))
                .unwrap();
        }
        let denied = serde_json::json!({"events": [{
            "reader": "DC-MT-OUT-01", "credential": "+99", "kind": "denied",
            "reason": "@SUM(A1)", "time": wib(9, 7).to_rfc3339(),
        }]});
        s.ingest_json_batch(
            &serde_json::to_vec(&denied).unwrap(),
            wib(9, 7) + TimeDelta::seconds(1),
        )
        .unwrap();
        let raised = s.tick(wib(9, 10)).unwrap();
        finding_id = raised
            .iter()
            .find(|f| f.finding.ticket.as_deref() == Some("T1"))
            .unwrap_or_else(|| panic!("a finding of T1: {raised:?}"))
            .id;
    }
    // Queries by site, person and ticket.
    let (code, out, err) = dcguard_access(dir.path(), &["events", "--site", "dc"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 event(s)"), "{out}");
    let (_, out, _) = dcguard_access(dir.path(), &["events", "--person", "Vendor One"]);
    assert!(out.contains("1 event(s)"), "{out}");
    let (code, out, err) = dcguard_access(
        dir.path(),
        &[
            "events",
            "--site",
            "dc",
            "--from",
            "2026-11-23 09:06",
            "--csv",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "header and the denial: {out}");
    assert!(
        lines[1].contains("'+99") && lines[1].contains("'@SUM(A1)"),
        "{out}"
    );
    // A bad time is a usage error naming the option.
    let (code, _, err) = dcguard_access(dir.path(), &["events", "--from", "yesterday"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("yesterday"), "{err}");

    let (code, out, err) =
        dcguard_access(dir.path(), &["findings", "--ticket", "T1", "--unreviewed"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains("0 finding(s)"), "{out}");
    let id = finding_id.to_string();
    let (code, _, err) = dcguard_access(
        dir.path(),
        &[
            "review",
            &id,
            "--reviewer",
            "sec-1",
            "--note",
            "=cmd|' /C calc'!A0",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = dcguard_access(
        dir.path(),
        &["findings", "--ticket", "T1", "--reviewed", "--csv"],
    );
    assert!(out.contains("sec-1") && out.contains("'=cmd"), "{out}");
    let (code, _, err) = dcguard_access(
        dir.path(),
        &["review", "999999", "--reviewer", "sec-1", "--note", "n"],
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("999999"), "{err}");

    let (code, out, err) = dcguard_access(dir.path(), &["visit-report", "T1", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["ticket"], "T1");
    assert_eq!(report["people"].as_array().map(Vec::len), Some(2));
    let (code, out, err) = dcguard_access(dir.path(), &["visit-report", "T1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Vendor One"), "{out}");
    let (code, _, err) = dcguard_access(dir.path(), &["visit-report", "T404"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("T404"), "{err}");
}
