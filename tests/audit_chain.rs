//! The tamper-evident audit chain: 1000 seeded tamper trials on a 10,000-record chain, crash
//! truncation and recovery, checkpoint signatures, re-hashed chains, segments.

use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use dcguard::access::audit::{
    AuditKey, AuditLog, AuditRecord, CheckpointPolicy, Head, NewRecord, Problem, RecordKind,
    VerifyError, chain_hash, encode_line, sealed_segments, verify, verify_anchored, verify_reader,
    verify_segments,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A scratch directory; on tmpfs when there is one, since every append fsyncs.
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("audit-chain")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

fn key() -> AuditKey {
    AuditKey::from_bytes(b"test-checkpoint-key-0123456789abcdef".to_vec()).unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 1, 0, 0).unwrap()
}

fn policy() -> CheckpointPolicy {
    CheckpointPolicy {
        every_records: 1000,
        every_secs: 0,
    }
}

/// Writes a chain of `lines` lines (records and checkpoints) and returns its lines.
fn build(path: &Path, lines: usize) -> Vec<Vec<u8>> {
    let mut log = AuditLog::open(path, key(), policy(), t0()).unwrap();
    let kinds = [
        RecordKind::AccessEvent,
        RecordKind::TicketChange,
        RecordKind::Finding,
        RecordKind::OperatorAction,
    ];
    let mut i: u64 = 0;
    while log.head().map_or(0, |h| h.seq + 1) < lines as u64 {
        let payload = serde_json::json!({
            "reader": "DC-MT-IN-01",
            "credential": format!("{}", 10_000 + i % 97),
            "n": i,
            "temperature_c": 36.6 + (i % 10) as f64 / 10.0,
            "note": "line\nbreak \"quoted\" \u{e9}",
        });
        let at = t0() + Duration::seconds(i as i64);
        log.append(kinds[(i % 4) as usize], "system", payload, at)
            .unwrap();
        i += 1;
    }
    let bytes = std::fs::read(path).unwrap();
    split_lines(&bytes)
}

fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn hash_of(line: &[u8]) -> [u8; 32] {
    let hex = std::str::from_utf8(&line[9..73]).unwrap();
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn body_of(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    &line[163..line.len() - 1]
}

fn head_of(lines: &[Vec<u8>]) -> Head {
    Head {
        seq: lines.len() as u64 - 1,
        hash: hash_of(lines.last().unwrap()),
    }
}

fn verify_lines(lines: &[Vec<u8>], anchor: Option<Head>) -> Result<(), VerifyError> {
    let bytes: Vec<u8> = lines.concat();
    verify_reader(bytes.as_slice(), &key(), anchor).map(|_| ())
}

/// A self-consistent forged record at position `pos`: right seq, links to the line before.
fn forged(lines: &[Vec<u8>], pos: usize, rng: &mut StdRng) -> Vec<u8> {
    let prev = if pos == 0 {
        [0u8; 32]
    } else {
        hash_of(&lines[pos - 1])
    };
    let record = AuditRecord {
        seq: pos as u64,
        at: t0() + Duration::seconds(pos as i64),
        kind: RecordKind::AccessEvent,
        actor: "intruder".to_owned(),
        payload: serde_json::json!({ "credential": rng.random_range(0..1_000_000u32) }),
    };
    let body = serde_json::to_vec(&record).unwrap();
    encode_line(&chain_hash(&prev, &body), &prev, &body)
}

#[test]
fn clean_chain_verifies_and_reports_checkpoints() {
    let dir = tempdir();
    let path = dir.path().join("audit.log");
    let lines = build(&path, 2500);
    let report = verify(&path, &key()).unwrap();
    assert_eq!(report.records, lines.len() as u64);
    assert_eq!(report.first_seq, 0);
    assert_eq!(report.checkpoints, 2);
    assert_eq!(report.head, Some(head_of(&lines)));
    // Checkpoint after records 0..=999 (seq 1000) and after 1001..=2000 (seq 2001).
    assert_eq!(report.last_checkpoint_seq, Some(2000));
    assert_eq!(report.unsigned_tail, 2500 - 2002);
}

#[test]
fn thousand_seeded_tamper_trials_name_the_first_bad_record() {
    let dir = tempdir();
    let path = dir.path().join("audit.log");
    let original = build(&path, 10_000);
    let n = original.len();
    assert_eq!(n, 10_000);
    // The genuine head, as posted elsewhere: without it, deleting the very last record (or
    // forging one just before it) leaves a shorter/other chain that is valid on its own.
    let anchor = head_of(&original);
    verify_lines(&original, Some(anchor)).unwrap();

    // Trials are independent (one seed each), so they run on all cores.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    std::thread::scope(|scope| {
        for worker in 0..threads {
            let original = &original;
            scope.spawn(move || {
                for trial in (worker..1000).step_by(threads) {
                    tamper_trial(original, anchor, trial);
                }
            });
        }
    });
}

/// One seeded trial: modify, delete, insert or reorder one record of a copy, then check that
/// verify names exactly the first line that differs from the original.
fn tamper_trial(original: &[Vec<u8>], anchor: Head, trial: usize) {
    let n = original.len();
    let mut rng = StdRng::seed_from_u64(0x6a75_6469_7400 + trial as u64);
    let replacements = b"0123456789abcdefXYZ\"{}:,. ";
    // The copy borrows the original lines; only a changed or new line is owned.
    let mut lines: Vec<&[u8]> = original.iter().map(Vec::as_slice).collect();
    let owned: Vec<u8>;
    let op = trial % 4;
    match op {
        0 => {
            // Modify: change one byte of one record (never into a newline).
            let i = rng.random_range(0..n);
            let mut line = original[i].clone();
            let at = rng.random_range(0..line.len() - 1);
            let old = line[at];
            while line[at] == old {
                line[at] = replacements[rng.random_range(0..replacements.len())];
            }
            owned = line;
            lines[i] = &owned;
        }
        1 => {
            // Delete one record.
            lines.remove(rng.random_range(0..n));
        }
        2 => {
            // Insert before record i: a forged self-consistent record, or a replayed copy.
            let i = rng.random_range(0..n);
            owned = if rng.random_bool(0.5) {
                forged(original, i, &mut rng)
            } else {
                original[rng.random_range(0..n)].clone()
            };
            lines.insert(i, &owned);
        }
        _ => {
            // Reorder: move one record elsewhere.
            let i = rng.random_range(0..n);
            let mut j = rng.random_range(0..n);
            while j == i {
                j = rng.random_range(0..n);
            }
            let line = lines.remove(i);
            lines.insert(j, line);
        }
    }
    let expected = original
        .iter()
        .zip(&lines)
        .position(|(a, b)| a.as_slice() != *b)
        .unwrap_or(n.min(lines.len())) as u64;
    let bytes = lines.concat();
    let err = verify_reader(bytes.as_slice(), &key(), Some(anchor))
        .map(|_| ())
        .expect_err(&format!("trial {trial} (op {op}) not detected"));
    assert_eq!(
        err.index(),
        Some(expected),
        "trial {trial} (op {op}): {err}"
    );
}

#[test]
fn unanchored_verify_names_the_first_bad_record_inside_the_chain() {
    let dir = tempdir();
    let path = dir.path().join("audit.log");
    let original = build(&path, 300);

    let mut deleted = original.clone();
    deleted.remove(120);
    let err = verify_lines(&deleted, None).unwrap_err();
    assert_eq!(err.index(), Some(120));
    assert_eq!(err.problem(), Some(&Problem::Deleted { resumes_at: 121 }));

    let mut swapped = original.clone();
    swapped.swap(40, 41);
    let err = verify_lines(&swapped, None).unwrap_err();
    assert_eq!(err.index(), Some(40));
    assert_eq!(err.problem(), Some(&Problem::Reordered));

    let mut rng = StdRng::seed_from_u64(7);
    let mut inserted = original.clone();
    let line = forged(&inserted, 77, &mut rng);
    inserted.insert(77, line);
    let err = verify_lines(&inserted, None).unwrap_err();
    assert_eq!(err.index(), Some(77));
    assert_eq!(err.problem(), Some(&Problem::Inserted));

    let mut modified = original.clone();
    let text = String::from_utf8(modified[200].clone()).unwrap();
    modified[200] = text.replacen("\"system\"", "\"operator\"", 1).into_bytes();
    let err = verify_lines(&modified, None).unwrap_err();
    assert_eq!(err.index(), Some(200));
    assert_eq!(err.problem(), Some(&Problem::HashMismatch));

    // Removing the tail is invisible without an anchor, and named with one.
    let truncated = &original[..250];
    verify_lines(truncated, None).unwrap();
    let err = verify_lines(truncated, Some(head_of(&original))).unwrap_err();
    assert_eq!(err.index(), Some(250));
    assert_eq!(
        err.problem(),
        Some(&Problem::MissingRecords { anchored: 299 })
    );
}

#[test]
fn crash_truncated_last_line_is_reported_then_recovered_on_open() {
    let dir = tempdir();
    let path = dir.path().join("audit.log");
    let lines = build(&path, 50);
    // A crash mid-write: half of a 51st line, no newline.
    let mut log = AuditLog::open(&path, key(), policy(), t0()).unwrap();
    log.append(
        RecordKind::Finding,
        "reconcile",
        serde_json::json!({"rule": "no_ticket"}),
        t0(),
    )
    .unwrap();
    drop(log);
    let mut bytes = std::fs::read(&path).unwrap();
    let full = split_lines(&bytes);
    let last = full.last().unwrap().len();
    bytes.truncate(bytes.len() - last / 2);
    std::fs::write(&path, &bytes).unwrap();
    let torn_index = full.len() as u64 - 1;

    let err = verify(&path, &key()).unwrap_err();
    assert_eq!(err.index(), Some(torn_index));
    assert!(
        matches!(err.problem(), Some(Problem::TruncatedLastLine { .. })),
        "{err}"
    );

    // Reopening cuts the torn line, records the repair, and the chain verifies again.
    let mut log = AuditLog::open(&path, key(), policy(), t0()).unwrap();
    let appended = log
        .append(
            RecordKind::OperatorAction,
            "op-1",
            serde_json::json!({"action": "ack"}),
            t0(),
        )
        .unwrap();
    drop(log);
    let report = verify(&path, &key()).unwrap();
    assert_eq!(report.head.map(|h| h.seq), Some(appended.seq));
    let text = std::fs::read_to_string(&path).unwrap();
    let recovery = text.lines().nth(torn_index as usize).unwrap();
    assert!(recovery.contains("\"kind\":\"recovery\""), "{recovery}");
    assert!(lines.len() < report.records as usize);
}

#[test]
fn checkpoint_signatures_are_checked() {
    let dir = tempdir();
    let path = dir.path().join("audit.log");
    let lines = build(&path, 1500);
    let other = AuditKey::from_bytes(b"another-key-another-key-another".to_vec()).unwrap();
    let err = verify(&path, &other).unwrap_err();
    assert_eq!(err.index(), Some(1000));
    assert_eq!(err.problem(), Some(&Problem::BadCheckpointSignature));

    // A keyless attacker edits record 1200 and re-hashes everything after it: the chain is
    // consistent, but the end of the log is no longer what was signed. Here the tail after the
    // last checkpoint is unsigned, so only an anchor catches it...
    let rehashed = rewrite_and_rehash(&lines, 1200);
    verify_lines(&rehashed, None).unwrap();
    let err = verify_lines(&rehashed, Some(head_of(&lines))).unwrap_err();
    assert_eq!(err.index(), Some(1000));
    assert_eq!(
        err.problem(),
        Some(&Problem::AnchorMismatch { anchored: 1499 })
    );

    // ... and an edit before a checkpoint is caught by the checkpoint itself: every record
    // after the previous good checkpoint is suspect.
    let rehashed = rewrite_and_rehash(&lines, 500);
    let err = verify_lines(&rehashed, None).unwrap_err();
    assert_eq!(err.index(), Some(0));
    assert_eq!(
        err.problem(),
        Some(&Problem::CheckpointMismatch { checkpoint: 1000 })
    );
}

/// Changes the actor of record `at` and recomputes every hash from there (no key needed).
fn rewrite_and_rehash(lines: &[Vec<u8>], at: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = lines[..at].to_vec();
    let mut prev = if at == 0 {
        [0; 32]
    } else {
        hash_of(&lines[at - 1])
    };
    for (i, line) in lines.iter().enumerate().skip(at) {
        let mut body = body_of(line).to_vec();
        if i == at {
            let text = String::from_utf8(body).unwrap();
            body = text.replacen("\"system\"", "\"intruder\"", 1).into_bytes();
        }
        let hash = chain_hash(&prev, &body);
        out.push(encode_line(&hash, &prev, &body));
        prev = hash;
    }
    out
}

#[test]
fn reserved_kinds_cannot_be_appended_and_reopen_continues_the_chain() {
    let dir = tempdir();
    let path = dir.path().join("audit.log");
    let mut log = AuditLog::open(&path, key(), policy(), t0()).unwrap();
    for kind in [
        RecordKind::Checkpoint,
        RecordKind::SegmentStart,
        RecordKind::Recovery,
    ] {
        assert!(
            log.append(kind, "x", serde_json::Value::Null, t0())
                .is_err()
        );
    }
    let a = log
        .append(RecordKind::AccessEvent, "R1", serde_json::json!({}), t0())
        .unwrap();
    assert_eq!(a.seq, 0);
    drop(log);
    // Reopening signs the unsigned tail, then continues the numbering.
    let mut log = AuditLog::open(&path, key(), policy(), t0()).unwrap();
    let b = log
        .append(RecordKind::AccessEvent, "R1", serde_json::json!({}), t0())
        .unwrap();
    assert_eq!(b.seq, 2);
    let report = verify(&path, &key()).unwrap();
    assert_eq!(report.checkpoints, 1);
    assert_eq!(report.last_checkpoint_seq, Some(0));
    assert_eq!(report.unsigned_tail, 1);
}

#[test]
fn checkpoints_by_time() {
    let dir = tempdir();
    let path = dir.path().join("audit.log");
    let policy = CheckpointPolicy {
        every_records: 0,
        every_secs: 60,
    };
    let mut log = AuditLog::open(&path, key(), policy, t0()).unwrap();
    for s in [0, 30, 59, 61, 90] {
        log.append(
            RecordKind::AccessEvent,
            "R1",
            serde_json::json!({ "s": s }),
            t0() + Duration::seconds(s),
        )
        .unwrap();
    }
    let report = verify(&path, &key()).unwrap();
    // One checkpoint, after the record at +61 s.
    assert_eq!(report.checkpoints, 1);
    assert_eq!(report.last_checkpoint_seq, Some(3));
}

#[test]
fn a_new_segment_file_is_anchored_to_the_old_one() {
    let dir = tempdir();
    let old_path = dir.path().join("audit-2026.log");
    let new_path = dir.path().join("audit-2027.log");
    build(&old_path, 20);
    let mut log = AuditLog::open(&old_path, key(), policy(), t0()).unwrap();
    let mut next = log
        .start_segment(&new_path, Some(t0() - Duration::days(365)), t0())
        .unwrap();
    next.append(
        RecordKind::Finding,
        "reconcile",
        serde_json::json!({}),
        t0(),
    )
    .unwrap();
    drop(next);
    let old = verify(&old_path, &key()).unwrap();
    let new = verify(&new_path, &key()).unwrap();
    assert_eq!(new.continues_from, old.head);
    assert_eq!(new.first_seq, old.head.unwrap().seq + 1);
    // The old file is untouched by the rotation and still verifies on its own.
    assert!(verify_anchored(&old_path, &key(), old.head).is_ok());
    // A new segment never overwrites an existing file.
    let mut log = AuditLog::open(&old_path, key(), policy(), t0()).unwrap();
    assert!(log.start_segment(&new_path, None, t0()).is_err());
}

/// Appends `n` records at `at`, one second apart.
fn fill(log: &mut AuditLog, n: u64, at: DateTime<Utc>) {
    for i in 0..n {
        log.append(
            RecordKind::AccessEvent,
            "DC-MT-IN-01",
            serde_json::json!({ "n": i }),
            at + Duration::seconds(i as i64),
        )
        .unwrap();
    }
}

/// Thirteen monthly segments: rotation, then retention removing the oldest ones. The chain
/// still verifies after pruning (the first kept segment is justified by `segment_pruned`
/// records), tampering in a kept segment is still named by index, and a segment removed
/// by hand (not by retention) is detected, in the middle and at the start.
#[test]
fn rotation_and_retention_keep_the_chain_verifiable() {
    let dir = tempdir();
    let active = dir.path().join("access-audit.log");
    let month = |m: u32| {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + Duration::days(31 * i64::from(m))
    };
    let mut log = AuditLog::open(&active, key(), policy(), month(0)).unwrap();
    for m in 0..14 {
        fill(&mut log, 50, month(m));
        assert!(log.rotate(month(m) + Duration::days(30)).unwrap().is_some());
    }
    fill(&mut log, 5, month(14));
    let sealed = sealed_segments(&active).unwrap();
    assert_eq!(sealed.len(), 14);
    let before = verify_segments(&active, &key()).unwrap();
    assert_eq!(before.first_seq, 0);
    assert!(before.pruned.is_empty());

    // Keep 12 months back from month 14: the segments sealed before the cut-off go.
    let cutoff = month(14) - Duration::days(365);
    let pruned = log.prune_sealed(cutoff, month(14)).unwrap();
    assert!(!pruned.is_empty());
    assert!(pruned.iter().all(|p| p.newest_at < cutoff));
    let left = sealed_segments(&active).unwrap();
    assert_eq!(left.len(), 14 - pruned.len());
    drop(log);
    let after = verify_segments(&active, &key()).unwrap();
    assert_eq!(after.pruned, pruned);
    assert_eq!(after.first_seq, pruned.last().unwrap().last_seq + 1);
    assert_eq!(
        after.head.map(|h| h.seq),
        Some(before.head.unwrap().seq + 2 * pruned.len() as u64)
    );
    // A reopened log continues the same chain.
    let mut log = AuditLog::open(&active, key(), policy(), month(14)).unwrap();
    fill(&mut log, 3, month(14) + Duration::hours(1));
    drop(log);
    verify_segments(&active, &key()).unwrap();

    // Modify one record in a kept sealed segment: named with its index.
    let victim = &left[2];
    let original = std::fs::read(victim).unwrap();
    let mut lines = split_lines(&original);
    let target = 7;
    let index = {
        let text = String::from_utf8(lines[target].clone()).unwrap();
        let seq: u64 = text
            .split("\"seq\":")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let changed = text.replace("\"n\":", "\"n\":1");
        lines[target] = changed.into_bytes();
        seq
    };
    std::fs::write(victim, lines.concat()).unwrap();
    let err = verify_segments(&active, &key()).unwrap_err();
    assert_eq!(err.index(), Some(index));
    assert_eq!(err.segment, *victim);
    std::fs::write(victim, &original).unwrap();

    // A middle segment removed by hand: the next one does not continue its predecessor.
    let moved = dir.path().join("elsewhere.log");
    std::fs::rename(&left[3], &moved).unwrap();
    let err = verify_segments(&active, &key()).unwrap_err();
    assert!(
        matches!(err.error.problem(), Some(Problem::SegmentGap { .. })),
        "{err}"
    );
    assert_eq!(err.segment, left[4]);
    std::fs::rename(&moved, &left[3]).unwrap();

    // The oldest kept segment removed by hand: no segment_pruned record justifies it.
    std::fs::rename(&left[0], &moved).unwrap();
    let err = verify_segments(&active, &key()).unwrap_err();
    assert!(
        matches!(err.error.problem(), Some(Problem::SegmentMissing { .. })),
        "{err}"
    );
    std::fs::rename(&moved, &left[0]).unwrap();
    verify_segments(&active, &key()).unwrap();
}

/// A rotation cut after the rename (the active file missing or empty): the next open
/// continues the chain from the sealed segment instead of starting a new one.
#[test]
fn an_interrupted_rotation_is_continued_at_open() {
    let dir = tempdir();
    let active = dir.path().join("access-audit.log");
    let mut log = AuditLog::open(&active, key(), policy(), t0()).unwrap();
    fill(&mut log, 10, t0());
    let head = log.head().unwrap();
    drop(log);
    // Seal by hand as the rotation does, then "crash" before the new file has a record.
    let sealed = dcguard::access::audit::sealed_path(&active, head.seq);
    std::fs::rename(&active, &sealed).unwrap();
    std::fs::write(&active, b"").unwrap();
    let mut log = AuditLog::open(&active, key(), policy(), t0()).unwrap();
    fill(&mut log, 2, t0() + Duration::minutes(1));
    drop(log);
    let report = verify_segments(&active, &key()).unwrap();
    assert_eq!(report.segments.len(), 2);
    assert_eq!(report.first_seq, 0);
    let single = verify(&active, &key()).unwrap();
    assert_eq!(single.continues_from, Some(head));
}

#[test]
fn key_file_is_read_and_never_printed() {
    let dir = tempdir();
    let path = dir.path().join("audit.key");
    std::fs::write(&path, "s3cr3t-s3cr3t-s3cr3t-s3cr3t\n").unwrap();
    let key = AuditKey::from_file(&path).unwrap();
    assert!(!format!("{key:?}").contains("s3cr3t"));
    std::fs::write(&path, "short\n").unwrap();
    let err = AuditKey::from_file(&path).unwrap_err().to_string();
    assert!(
        !err.contains("short\n") && err.contains("at least 16"),
        "{err}"
    );
    assert!(AuditKey::from_file(&dir.path().join("missing")).is_err());
}

#[test]
fn batches_append_with_one_sync_and_access_events_round_trip() {
    use dcguard::access::event::AccessEvent;
    use dcguard::access::zkteco::{ParseContext, Table, parse_cdata};
    let dir = tempdir();
    let path = dir.path().join("audit.log");
    let mut log = AuditLog::open(&path, key(), policy(), t0()).unwrap();
    let ctx = ParseContext {
        reader: "DC-MT-IN-01".into(),
        time_zone: chrono_tz::Asia::Jakarta,
        reader_direction: None,
        received_at: t0(),
    };
    let batch = parse_cdata(
        &Table::AttLog,
        b"1001\t2026-11-21 08:00:00\n1002\t2026-11-21 08:00:04\n",
        &ctx,
    );
    let appended = log.append_access_events(&batch.events).unwrap();
    assert_eq!(
        appended.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![0, 1]
    );
    // A batch with a reserved kind is refused whole.
    let len = std::fs::metadata(&path).unwrap().len();
    let refused = log.append_batch(vec![
        NewRecord {
            kind: RecordKind::Finding,
            actor: "reconcile".to_owned(),
            payload: serde_json::json!({}),
            at: t0(),
        },
        NewRecord {
            kind: RecordKind::Checkpoint,
            actor: "x".to_owned(),
            payload: serde_json::json!({}),
            at: t0(),
        },
    ]);
    assert!(refused.is_err());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    assert!(log.append_batch(Vec::new()).unwrap().is_empty());
    drop(log);
    let report = verify(&path, &key()).unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(report.unsigned_tail, 2);
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap();
    let record: AuditRecord = serde_json::from_slice(body_of(first.as_bytes())).unwrap();
    assert_eq!(record.kind, RecordKind::AccessEvent);
    assert_eq!(record.actor, "DC-MT-IN-01");
    let event: AccessEvent = serde_json::from_value(record.payload).unwrap();
    assert_eq!(event, batch.events[0]);
}

/// A small valid chain, built once for the property tests.
fn small_chain() -> &'static [u8] {
    static CHAIN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CHAIN.get_or_init(|| {
        let dir = tempdir();
        let path = dir.path().join("audit.log");
        let policy = CheckpointPolicy {
            every_records: 7,
            every_secs: 0,
        };
        let mut log = AuditLog::open(&path, key(), policy, t0()).unwrap();
        for i in 0..40 {
            log.append(
                RecordKind::AccessEvent,
                "R1",
                serde_json::json!({ "i": i }),
                t0(),
            )
            .unwrap();
        }
        drop(log);
        std::fs::read(&path).unwrap()
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn verify_never_panics_on_damaged_files(
        edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..6),
        cut in proptest::prelude::any::<usize>(),
        junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
    ) {
        let mut bytes = small_chain().to_vec();
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = verify_reader(bytes.as_slice(), &key(), None);
        let _ = verify_reader(junk.as_slice(), &key(), None);
        bytes.extend_from_slice(&junk);
        let _ = verify_reader(bytes.as_slice(), &key(), Some(Head { seq: 39, hash: [1; 32] }));
    }
}
