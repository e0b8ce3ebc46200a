//! Access wire formats: ZKTeco PUSH ATTLOG / rtlog / OPERLOG bodies, replies and query strings,
//! time-zone conversion, idempotent ids, line-numbered errors, and the JSON / CSV importers.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use dcguard::access::event::{AccessEvent, DeviceOp, Direction, EventKind, EventSource};
use dcguard::access::import::{
    BatchError, CSV_COLUMNS, CsvImportError, parse_json_batch, read_csv, write_csv,
};
use dcguard::access::zkteco::{
    CdataQuery, LineProblem, ParseContext, QueryError, Table, handshake_reply, parse_cdata,
    reply_ok_count,
};
use proptest::prelude::*;

fn ctx(direction: Option<Direction>) -> ParseContext {
    ParseContext {
        reader: Arc::from("DC-MT-IN-01"),
        time_zone: chrono_tz::Asia::Jakarta,
        reader_direction: direction,
        received_at: Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap(),
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn op(e: &AccessEvent) -> Option<DeviceOp> {
    match e.kind {
        EventKind::Operation { op } => Some(op),
        _ => None,
    }
}

#[test]
fn anchor_attlog_examples_parse() {
    let body = "11\t2025-08-27 10:57:49\t0\t25\t0\t0\t0\t0\t0\t0\n\
                78979877\t2026-07-11 10:15:00\t0\t1\t0\n\
                9999\t2026-08-12 08:53:23\t0\t1\n";
    let batch = parse_cdata(
        &Table::AttLog,
        body.as_bytes(),
        &ctx(Some(Direction::Entry)),
    );
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    assert_eq!(batch.events.len(), 3);
    assert_eq!(batch.processed(), 3);
    let e = &batch.events[0];
    assert_eq!(e.source, EventSource::ZktecoAttlog);
    assert_eq!(e.credential.as_deref(), Some("11"));
    assert_eq!(e.kind, EventKind::Granted);
    assert_eq!(e.direction, Some(Direction::Entry));
    assert_eq!(e.device_time, utc(2025, 8, 27, 3, 57, 49));
    assert_eq!(&*e.raw, "11\t2025-08-27 10:57:49\t0\t25\t0\t0\t0\t0\t0\t0");
    assert_eq!(&*e.reader, "DC-MT-IN-01");
    assert_eq!(e.id.len(), 64);
    assert_eq!(batch.events[1].credential.as_deref(), Some("78979877"));
    assert_eq!(batch.events[2].device_time, utc(2026, 8, 12, 1, 53, 23));
}

#[test]
fn attlog_with_2_to_12_fields_and_extras() {
    let all = [
        "1001",
        "2026-11-21 08:00:00",
        "0",
        "15",
        "0",
        "0",
        "0",
        "0",
        "36.5",
        "97.7",
        "+25200",
        "eyJsYXQiOjB9",
        "future-field",
    ];
    for n in 2..=13 {
        let line = all[..n].join("\t");
        let batch = parse_cdata(&Table::AttLog, line.as_bytes(), &ctx(None));
        assert!(batch.errors.is_empty(), "{n} fields: {:?}", batch.errors);
        assert_eq!(batch.events.len(), 1, "{n} fields");
        // The site zone wins over the device's own TimeOffset field.
        assert_eq!(batch.events[0].device_time, utc(2026, 11, 21, 1, 0, 0));
        assert_eq!(batch.events[0].direction, None);
    }
    let batch = parse_cdata(&Table::AttLog, b"1001\n", &ctx(None));
    assert_eq!(batch.errors.len(), 1);
    assert_eq!(batch.errors[0].line, 1);
    assert_eq!(batch.errors[0].field, "Time");
}

#[test]
fn wib_device_time_0800_is_0100_utc_and_epoch_is_utc() {
    let batch = parse_cdata(
        &Table::AttLog,
        b"7\t2026-11-21 08:00:00\n8\t1763686800\n9\t2026-11-21T08:00:00\n",
        &ctx(None),
    );
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    assert_eq!(batch.events[0].device_time, utc(2026, 11, 21, 1, 0, 0));
    assert_eq!(
        batch.events[1].device_time,
        DateTime::from_timestamp(1_763_686_800, 0).unwrap()
    );
    assert_eq!(batch.events[2].device_time, utc(2026, 11, 21, 1, 0, 0));
    // Another site zone, another instant.
    let mut other = ctx(None);
    other.time_zone = chrono_tz::Asia::Makassar;
    let batch = parse_cdata(&Table::AttLog, b"7\t2026-11-21 08:00:00\n", &other);
    assert_eq!(batch.events[0].device_time, utc(2026, 11, 21, 0, 0, 0));
}

#[test]
fn rtlog_anchor_example_and_in_out_state() {
    let body = "time=2017-01-10 11:49:32\tpin=1001\tcardno=0\teventaddr=1\tevent=0\tinoutstatus=0\tverifytype=15\tindex=42\r\n\
                time=2017-01-10 11:52:00\tpin=1001\tcardno=0\teventaddr=1\tevent=3\tinoutstatus=1\tverifytype=0000000000000010\tindex=43\r\n\
                time=2017-01-10 11:53:00\tpin=1002\tevent=0\tindex=44\tsitecode=0\tlinkid=0\tmaskflag=0\ttemperature=0\r\n\
                time=2017-01-10 11:54:00\tpin=0\tcardno=0\tevent=27\tinoutstatus=0\tindex=45\r\n\
                time=2017-01-10 11:55:00\tpin=0\tcardno=0\tevent=102\tinoutstatus=2\tindex=46\r\n\
                time=2017-01-10 11:56:00\tpin=0\tevent=206\tindex=47\r\n\
                index=48\tevent=101\tpin=1003\ttime=2017-01-10 11:57:00\r\n";
    // The reader map says exit; the device's own in/out state wins when it gives one.
    let batch = parse_cdata(&Table::RtLog, body.as_bytes(), &ctx(Some(Direction::Exit)));
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    let ev = &batch.events;
    assert_eq!(ev.len(), 7);
    assert!(ev.iter().all(|e| e.source == EventSource::ZktecoRtlog));
    assert_eq!(ev[0].kind, EventKind::Granted);
    assert_eq!(ev[0].direction, Some(Direction::Entry));
    assert_eq!(ev[0].credential.as_deref(), Some("1001"));
    assert_eq!(ev[0].device_time, utc(2017, 1, 10, 4, 49, 32));
    assert_eq!(ev[1].kind, EventKind::Granted);
    assert_eq!(ev[1].direction, Some(Direction::Exit));
    // No inoutstatus: the reader map.
    assert_eq!(ev[2].direction, Some(Direction::Exit));
    // Unregistered credential: denied, no user.
    assert_eq!(
        ev[3].kind,
        EventKind::Denied {
            reason: Some(Arc::from("rtlog event 27: unregistered personnel"))
        }
    );
    assert_eq!(ev[3].credential, None);
    assert_eq!(ev[3].direction, None);
    assert_eq!(op(&ev[4]), Some(DeviceOp::DoorForced));
    assert_eq!(op(&ev[5]), Some(DeviceOp::PowerOn));
    assert_eq!(op(&ev[6]), Some(DeviceOp::Duress));
    assert_eq!(ev[6].credential.as_deref(), Some("1003"));
}

#[test]
fn operlog_set_time_delete_records_door_forced_duress_and_user_lines() {
    let body = "OPLOG 21\t1\t2026-11-21 08:00:00\t0\t0\t0\t0\n\
                OPLOG 23\t1\t2026-11-21 08:01:00\t0\t0\t0\t0\n\
                OPLOG 105\t1\t2026-11-21 08:01:30\t0\t0\t0\t0\n\
                OPLOG 3\t0\t2026-11-21 08:02:00\t0\t54\t0\t0\n\
                OPLOG 3\t0\t2026-11-21 08:02:10\t0\t55\t0\t0\n\
                OPLOG 3\t0\t2026-11-21 08:02:20\t0\t65535\t0\t0\n\
                OPLOG 32\t0\t2026-11-21 08:03:00\t1001\t0\t0\t0\n\
                OPLOG 0\t0\t2026-11-21 08:04:00\t0\t0\t0\t0\n\
                OPLOG 1\t0\t2026-11-21 08:05:00\n\
                OPLOG 4\t14\t2026-11-21 08:06:00\t0\t0\t0\t0\n\
                OPLOG 2\t0\t2026-11-21 08:07:00\t2001\t0\t0\t0\n\
                USER PIN=1001\tName=Budi\tPri=0\tPasswd=\tCard=\tGrp=1\tTZ=0000000100000000\tVerify=0\tViceCard=\n\
                FP PIN=1001\tFID=6\tSize=1184\tValid=1\tTMP=ocoSZ...\n";
    let batch = parse_cdata(&Table::OperLog, body.as_bytes(), &ctx(None));
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    assert_eq!(batch.skipped, 2);
    assert_eq!(batch.processed(), 13);
    let ops: Vec<_> = batch.events.iter().map(op).collect();
    assert_eq!(
        ops,
        vec![
            Some(DeviceOp::SetTime),
            Some(DeviceOp::DeleteRecords),
            Some(DeviceOp::DeleteRecords),
            Some(DeviceOp::DoorForced),
            Some(DeviceOp::Tamper),
            Some(DeviceOp::AlarmCancelled),
            Some(DeviceOp::Duress),
            Some(DeviceOp::PowerOn),
            Some(DeviceOp::PowerOff),
            Some(DeviceOp::Other),
            None,
        ]
    );
    assert!(
        batch.events[..5]
            .iter()
            .all(|e| op(e).is_some_and(DeviceOp::is_tamper))
    );
    assert_eq!(batch.events[0].credential.as_deref(), Some("1"));
    assert_eq!(batch.events[0].device_time, utc(2026, 11, 21, 1, 0, 0));
    assert_eq!(batch.events[6].credential.as_deref(), Some("1001"));
    assert!(matches!(batch.events[10].kind, EventKind::Denied { .. }));
    assert_eq!(batch.events[10].credential.as_deref(), Some("2001"));
    assert!(
        batch
            .events
            .iter()
            .all(|e| e.source == EventSource::ZktecoOperlog)
    );
}

#[test]
fn resent_batch_yields_identical_ids_whatever_the_framing() {
    let lf = "1001\t2026-11-21 08:00:00\t0\t1\n1002\t2026-11-21 08:00:05\t0\t1\n";
    let crlf = lf.replace('\n', "\r\n");
    let form = format!(
        "table=ATTLOG&Stamp=9999&data={}",
        lf.replace('\t', "%09")
            .replace('\n', "%0A")
            .replace(' ', "+")
    );
    let first = parse_cdata(&Table::AttLog, lf.as_bytes(), &ctx(None));
    let mut later = ctx(None);
    later.received_at = utc(2026, 11, 21, 3, 0, 0);
    for body in [lf.to_owned(), crlf, form] {
        let again = parse_cdata(&Table::AttLog, body.as_bytes(), &later);
        assert!(again.errors.is_empty(), "{body:?}: {:?}", again.errors);
        let a: Vec<_> = first.events.iter().map(|e| e.id.clone()).collect();
        let b: Vec<_> = again.events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(a, b, "{body:?}");
    }
    // Different content, different id.
    assert_ne!(first.events[0].id, first.events[1].id);
    let other_reader = ParseContext {
        reader: Arc::from("DC-MT-OUT-01"),
        ..ctx(None)
    };
    let moved = parse_cdata(&Table::AttLog, lf.as_bytes(), &other_reader);
    assert_ne!(first.events[0].id, moved.events[0].id);
}

#[test]
fn malformed_lines_are_errors_with_line_numbers_and_good_lines_survive() {
    let body = "1001\t2026-11-21 08:00:00\n\
                1002\t2026-13-40 08:00:00\n\
                \n\
                \t2026-11-21 08:00:00\n\
                1004\t2026-11-21 08:00:00\tx\n\
                1005\t2026-11-21 08:00:07\n";
    let batch = parse_cdata(&Table::AttLog, body.as_bytes(), &ctx(None));
    assert_eq!(batch.events.len(), 2);
    let found: Vec<_> = batch.errors.iter().map(|e| (e.line, e.field)).collect();
    assert_eq!(found, vec![(2, "Time"), (4, "PIN"), (5, "Status")]);
    assert!(matches!(batch.errors[0].problem, LineProblem::BadTime(_)));
    assert_eq!(batch.errors[1].problem, LineProblem::Empty);
    assert!(batch.errors[0].to_string().starts_with("line 2: Time: "));

    let rt = "time=2026-11-21 08:00:00\tpin=1\n\
              pin=1\tevent=0\n\
              time=2026-11-21 08:00:00\tevent=zero\n\
              garbage\n";
    let batch = parse_cdata(&Table::RtLog, rt.as_bytes(), &ctx(None));
    let found: Vec<_> = batch.errors.iter().map(|e| (e.line, e.field)).collect();
    assert_eq!(
        found,
        vec![(1, "event"), (2, "time"), (3, "event"), (4, "field")]
    );

    let ol = "OPLOG x\t1\t2026-11-21 08:00:00\n\
              OPLOG 21\t1\n\
              OPLOG 3\t0\t2026-11-21 08:00:00\t0\tfoo\n\
              nonsense line\n";
    let batch = parse_cdata(&Table::OperLog, ol.as_bytes(), &ctx(None));
    let found: Vec<_> = batch.errors.iter().map(|e| (e.line, e.field)).collect();
    assert_eq!(
        found,
        vec![
            (1, "OpType"),
            (2, "OpTime"),
            (3, "Value1"),
            (4, "record type")
        ]
    );
}

#[test]
fn replies_and_query_strings() {
    let hs = handshake_reply(
        "K40TEST001",
        chrono_tz::Asia::Jakarta,
        utc(2026, 11, 21, 1, 0, 0),
    );
    assert!(hs.starts_with("GET OPTION FROM: K40TEST001\n"), "{hs}");
    assert!(hs.contains("\nTimeZone=7\n"), "{hs}");
    assert!(hs.contains("\nRealtime=1\n"), "{hs}");
    assert_eq!(reply_ok_count(3), "OK:3");

    let q = CdataQuery::parse("SN=K40TEST001&table=ATTLOG&Stamp=9999").unwrap();
    assert_eq!(q.serial, "K40TEST001");
    assert_eq!(q.table, Some(Table::AttLog));
    assert_eq!(q.stamp.as_deref(), Some("9999"));
    let q = CdataQuery::parse("sn=X1&table=rtlog").unwrap();
    assert_eq!(q.table, Some(Table::RtLog));
    let q = CdataQuery::parse("SN=X1&options=all&pushver=2.4.1&DeviceType=att").unwrap();
    assert_eq!(q.table, None);
    let q = CdataQuery::parse("SN=X1&table=ATTPHOTO").unwrap();
    assert_eq!(q.table, Some(Table::Other("ATTPHOTO".to_owned())));
    assert_eq!(
        CdataQuery::parse("table=ATTLOG"),
        Err(QueryError::MissingSerial)
    );
    assert!(matches!(
        CdataQuery::parse("SN=a%20b"),
        Err(QueryError::BadSerial(_))
    ));
    // Tables without events parse to nothing (the caller still replies OK).
    let batch = parse_cdata(&Table::Options, b"FingerFunOn=1,FaceFunOn=1", &ctx(None));
    assert_eq!(batch.processed(), 0);
    assert!(batch.errors.is_empty());
}

#[test]
fn json_batch_parses_validates_and_is_idempotent() {
    let body = br#"{"events": [
        {"reader": "DC-MT-IN-01", "credential": "10001", "kind": "granted",
         "direction": "entry", "time": "2026-11-21T08:00:00+07:00"},
        {"reader": "DC-MT-IN-01", "credential": "20417", "kind": "denied",
         "reason": "expired", "time": "2026-11-21T08:01:10+07:00"},
        {"reader": "DC-MT-IN-01", "kind": "operation", "op": "door_forced",
         "time": "2026-11-21T01:02:00Z"}
    ]}"#;
    let now = utc(2026, 11, 21, 2, 0, 0);
    let events = parse_json_batch(body, now).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].device_time, utc(2026, 11, 21, 1, 0, 0));
    assert_eq!(events[0].direction, Some(Direction::Entry));
    assert_eq!(events[0].source, EventSource::JsonBatch);
    assert_eq!(
        events[1].kind,
        EventKind::Denied {
            reason: Some(Arc::from("expired"))
        }
    );
    assert_eq!(op(&events[2]), Some(DeviceOp::DoorForced));
    let again = parse_json_batch(body, utc(2026, 11, 22, 0, 0, 0)).unwrap();
    let ids = |v: &[AccessEvent]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&events), ids(&again));

    let bad = br#"{"events": [
        {"reader": "DC-MT-IN-01", "credential": "1", "kind": "granted", "time": "2026-11-21 08:00:00"},
        {"reader": "bad reader!", "credential": "1", "kind": "granted", "time": "2026-11-21T08:00:00Z"},
        {"reader": "R1", "kind": "operation", "time": "2026-11-21T08:00:00Z"},
        {"reader": "R1", "kind": "granted", "time": "2026-11-21T08:00:00Z"},
        {"reader": "R1", "credential": "1", "kind": "denied", "direction": "exit", "time": "2026-11-21T08:00:00Z"}
    ]}"#;
    let Err(BatchError::Invalid { errors, total }) = parse_json_batch(bad, now) else {
        panic!("expected field errors");
    };
    assert_eq!(total, 5);
    let found: Vec<_> = errors
        .iter()
        .map(|e| format!("{}.{}", e.place, e.field))
        .collect();
    assert_eq!(
        found,
        vec![
            "events[0].time",
            "events[1].reader",
            "events[2].op",
            "events[3].credential",
            "events[4].direction"
        ]
    );
    assert!(matches!(
        parse_json_batch(br#"{"events": [{"reader": "R1", "bogus": 1}]}"#, now),
        Err(BatchError::Json(_))
    ));
    assert!(matches!(
        parse_json_batch(b"not json", now),
        Err(BatchError::Json(_))
    ));
}

#[test]
fn csv_export_imports_back_to_identical_events() {
    let attlog = parse_cdata(
        &Table::AttLog,
        b"1001\t2026-11-21 08:00:00\t0\t1\n",
        &ctx(Some(Direction::Entry)),
    );
    let rtlog = parse_cdata(
        &Table::RtLog,
        b"time=2026-11-21 08:05:00\tpin=0\tcardno=0\tevent=27\tindex=9\n",
        &ctx(None),
    );
    let operlog = parse_cdata(
        &Table::OperLog,
        b"OPLOG 21\t1\t2026-11-21 08:06:00\t0\t0\t0\t0\n",
        &ctx(None),
    );
    let events: Vec<AccessEvent> = [attlog.events, rtlog.events, operlog.events].concat();
    assert_eq!(events.len(), 3);
    let mut csv = Vec::new();
    write_csv(&mut csv, &events).unwrap();
    let text = String::from_utf8(csv.clone()).unwrap();
    assert!(text.starts_with(&CSV_COLUMNS.join(",")), "{text}");
    let back = read_csv(csv.as_slice(), None, utc(2030, 1, 1, 0, 0, 0)).unwrap();
    assert_eq!(back, events);

    // An edited export is caught by its id column.
    let edited = text.replacen("1001,granted", "1002,granted", 1);
    assert_ne!(edited, text);
    let Err(CsvImportError::Invalid { errors, .. }) =
        read_csv(edited.as_bytes(), None, utc(2030, 1, 1, 0, 0, 0))
    else {
        panic!("expected an id mismatch");
    };
    assert_eq!(errors[0].field, "id");
    assert_eq!(errors[0].place, "line 2");
}

#[test]
fn csv_import_of_a_minimal_file_with_clear_errors() {
    let file = "device_time,reader,credential,kind,direction\n\
                2026-11-21 08:00:00,DC-MT-IN-01,10001,granted,entry\n\
                2026-11-21T08:00:00+07:00,DC-MT-IN-01,10002,granted,exit\n";
    let now = utc(2026, 11, 21, 2, 0, 0);
    let events = read_csv(file.as_bytes(), Some(chrono_tz::Asia::Jakarta), now).unwrap();
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e.device_time == utc(2026, 11, 21, 1, 0, 0))
    );
    assert!(events.iter().all(|e| e.source == EventSource::CsvImport));
    assert_eq!(
        &*events[0].raw,
        "2026-11-21 08:00:00,DC-MT-IN-01,10001,granted,entry"
    );
    let again = read_csv(file.as_bytes(), Some(chrono_tz::Asia::Jakarta), now).unwrap();
    assert_eq!(events, again);
    let with_bom = format!("\u{feff}{file}");
    let bom = read_csv(with_bom.as_bytes(), Some(chrono_tz::Asia::Jakarta), now).unwrap();
    assert_eq!(bom.len(), 2);

    // Zone-less times need the site zone.
    let Err(CsvImportError::Invalid { errors, total }) = read_csv(file.as_bytes(), None, now)
    else {
        panic!("expected an error");
    };
    assert_eq!(total, 1);
    assert_eq!(
        (errors[0].place.as_str(), errors[0].field.as_str()),
        ("line 2", "device_time")
    );

    let bad = "reader,kind,device_time,credential\n\
               R1,granted,2026-11-21T08:00:00Z,1\n\
               R1,entered,2026-11-21T08:00:00Z,1\n\
               R1,granted,yesterday,1\n";
    let Err(CsvImportError::Invalid { errors, total }) = read_csv(bad.as_bytes(), None, now) else {
        panic!("expected errors");
    };
    assert_eq!(total, 2);
    let found: Vec<_> = errors
        .iter()
        .map(|e| format!("{}: {}", e.place, e.field))
        .collect();
    assert_eq!(found, vec!["line 3: kind", "line 4: device_time"]);

    for (header, needle) in [
        ("reader,kind\n", "device_time"),
        ("reader,kind,device_time,colour\n", "colour"),
        ("reader,kind,device_time,kind\n", "repeated"),
    ] {
        let err = read_csv(header.as_bytes(), None, now)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
    let ragged = "reader,kind,device_time\nR1,granted\n";
    assert!(matches!(
        read_csv(ragged.as_bytes(), None, now),
        Err(CsvImportError::Format { line: 2, .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        for table in [Table::AttLog, Table::RtLog, Table::OperLog] {
            let batch = parse_cdata(&table, &body, &ctx(None));
            prop_assert!(batch.events.len() + batch.errors.len() + batch.skipped <= body.len() + 1);
        }
        let _ = parse_json_batch(&body, Utc::now());
        let _ = read_csv(body.as_slice(), Some(chrono_tz::Asia::Jakarta), Utc::now());
    }

    #[test]
    fn near_valid_lines_never_panic(
        line in "[0-9A-Za-z =:\\t%&+.-]{0,80}(\\t[0-9: -]{0,25}){0,12}",
        lines in 1usize..4,
    ) {
        let body = std::iter::repeat_n(line.as_str(), lines).collect::<Vec<_>>().join("\n");
        for table in [Table::AttLog, Table::RtLog, Table::OperLog] {
            let batch = parse_cdata(&table, body.as_bytes(), &ctx(Some(Direction::Entry)));
            for e in &batch.errors {
                prop_assert!(e.line >= 1 && e.line <= lines);
            }
        }
        let _ = CdataQuery::parse(&line);
    }

    #[test]
    fn any_local_time_converts_to_utc_minus_seven(secs in 0i64..4_000_000_000) {
        let t = DateTime::from_timestamp(secs, 0).unwrap();
        let local = t.with_timezone(&chrono_tz::Asia::Jakarta).format("%Y-%m-%d %H:%M:%S").to_string();
        let line = format!("42\t{local}");
        let batch = parse_cdata(&Table::AttLog, line.as_bytes(), &ctx(None));
        prop_assert_eq!(batch.events.len(), 1);
        prop_assert_eq!(batch.events[0].device_time, t);
    }
}
