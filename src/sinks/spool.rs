//! The InfluxDB sink's disk spool: batches that could not be written wait here, in
//! segment files with a checksum per record, bounded by bytes and age, and are replayed
//! oldest first. Also the quarantine file of lines the server rejected.
//!
//! ## Design constraints
//!
//! * **The backlog lives on disk, not in memory.** Only the segment being replayed is
//!   held in memory (at most `segment_bytes`).
//! * **Bounded.** Past `max_bytes` or `max_age` the **oldest** segments are dropped
//!   whole; the lines they held are counted exactly ([`SpoolCounters`]), since every
//!   segment's line count is known (from the record headers at open, kept while
//!   appending, corrected when a segment is loaded for replay).
//! * **A corrupted record costs only itself.** Every record has a CRC-32; a record that
//!   fails it is skipped and counted, and reading resumes at the next record magic. Its
//!   lines are counted exactly: from the segment's known line count when the segment is
//!   loaded for replay (that count is kept while appending and read from the headers at
//!   open), else from the bad record's header when it is readable. Only a segment whose
//!   header chain was already broken at open and whose bad record lost its header leaves
//!   that record's lines uncounted (the record itself is counted).
//!   [`Spool::open`] only walks the record headers (fast: a restart with a large
//!   backlog does not wait for a full read); a segment whose header chain is broken
//!   (torn tail, damaged header) is verified whole at open and rewritten without its bad
//!   records. Payload checksums are verified when a segment is loaded for replay.
//! * **At least once.** A record leaves the spool only after the server accepted it
//!   ([`Spool::commit_front`]); a segment file is deleted when all its records are
//!   committed. After a crash the current segment is replayed again from its start:
//!   harmless, because every line carries its sampling timestamp and the server
//!   overwrites the same point.
//! * Every append is `fsync`ed (`sync_data`) before it counts as spooled.
//!
//! ## On-disk format
//!
//! A directory of segments `NNNNNNNNNNNNNNNNNNNN.seg` (20-digit sequence number, replay
//! order) holding records back to back, all integers little-endian:
//!
//! ```text
//! magic    u32  0x3153_4344 ("DCS1")
//! len      u32  payload length in bytes (at most 64 MiB)
//! lines    u32  number of lines in the payload
//! created  i64  Unix milliseconds when the batch was made (for the age budget)
//! crc      u32  CRC-32 (IEEE) of lines, created and payload
//! payload       line protocol, UTF-8, one line per reading, each ending in '\n'
//! ```
//!
//! A torn write at the end (a crash during an append) reads as a corrupt tail and is
//! counted like any other bad record. `quarantine.lp` beside the segments holds the
//! lines the server refused, each after a `#` comment line with the time, the HTTP
//! status and the server's message; it is capped at [`QUARANTINE_MAX_BYTES`].

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MAGIC: u32 = 0x3153_4344;
const HEADER: usize = 24;
const MAX_PAYLOAD: usize = 64 << 20;
/// Size cap of `quarantine.lp`; lines past it are counted but not kept.
pub const QUARANTINE_MAX_BYTES: u64 = 64 << 20;

/// A spool failure (disk full, permissions): the batch could not be kept.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_owned(),
        source,
    }
}

/// Limits of the spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The directory (created when missing).
    pub dir: PathBuf,
    /// Total bytes of all segments; past it the oldest segments are dropped.
    pub max_bytes: u64,
    /// Segments whose newest record is older than this are dropped.
    pub max_age: Duration,
    /// A new segment starts when the current one reaches this size.
    pub segment_bytes: u64,
}

/// One spooled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Unix milliseconds when the batch was made.
    pub created_ms: i64,
    /// Number of lines.
    pub lines: u32,
    /// Line protocol, each line ending in `\n`.
    pub body: String,
}

/// What the spool lost, since it was opened. Counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolCounters {
    /// Lines dropped because the byte budget was exceeded (oldest first).
    pub dropped_bytes_lines: u64,
    /// Lines dropped because they were older than the age budget.
    pub dropped_age_lines: u64,
    /// Records that failed their checksum or could not be parsed.
    pub corrupt_records: u64,
    /// Lines of corrupt records, where their header was still readable.
    pub corrupt_lines: u64,
    /// Lines appended.
    pub appended_lines: u64,
    /// Lines written to the quarantine file.
    pub quarantined_lines: u64,
}

/// Which budget dropped a segment.
#[derive(Debug, Clone, Copy)]
enum Budget {
    Bytes,
    Age,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Bytes of records not yet committed.
    bytes: u64,
    /// Lines of records not yet committed.
    lines: u64,
    newest_ms: i64,
    /// The records, once loaded for replay (front segment only).
    loaded: Option<VecDeque<Record>>,
}

/// The spool. Not thread-safe by itself; the sink keeps it behind a mutex and calls it
/// from blocking tasks.
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending (None: the next append starts a new one).
    active: Option<File>,
    next_seq: u64,
    counters: SpoolCounters,
}

impl Spool {
    /// Opens (or creates) the spool, verifying every segment: damaged ones are rewritten
    /// without their bad records, which are counted.
    pub fn open(config: SpoolConfig) -> Result<Spool, SpoolError> {
        fs::create_dir_all(&config.dir).map_err(err(&config.dir))?;
        let mut seqs = Vec::new();
        for entry in fs::read_dir(&config.dir).map_err(err(&config.dir))? {
            let entry = entry.map_err(err(&config.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".seg")
                && let Ok(seq) = stem.parse::<u64>()
            {
                seqs.push(seq);
            } else if name.ends_with(".seg.tmp") {
                // An interrupted rewrite: the original is still there.
                let _ = fs::remove_file(entry.path());
            }
        }
        seqs.sort_unstable();
        let mut spool = Spool {
            next_seq: seqs.last().map_or(0, |s| s + 1),
            config,
            segments: VecDeque::new(),
            active: None,
            counters: SpoolCounters::default(),
        };
        for seq in seqs {
            let path = spool.segment_path(seq);
            // Fast path: a chain of well-formed headers up to the end of the file. The
            // payload checksums are then verified when the segment is replayed.
            if let Some(scan) = scan_headers(&path).map_err(err(&path))? {
                if scan.lines == 0 {
                    fs::remove_file(&path).map_err(err(&path))?;
                    continue;
                }
                spool.segments.push_back(Segment {
                    seq,
                    path,
                    bytes: scan.bytes,
                    lines: scan.lines,
                    newest_ms: scan.newest_ms,
                    loaded: None,
                });
                continue;
            }
            let data = fs::read(&path).map_err(err(&path))?;
            let parsed = parse(&data);
            spool.counters.corrupt_records += parsed.corrupt_records;
            spool.counters.corrupt_lines += parsed.corrupt_lines;
            if parsed.records.is_empty() {
                fs::remove_file(&path).map_err(err(&path))?;
                continue;
            }
            let mut bytes = data.len() as u64;
            if parsed.corrupt_records > 0 {
                bytes = rewrite(&path, &parsed.records)?;
            }
            spool.segments.push_back(Segment {
                seq,
                path,
                bytes,
                lines: parsed.records.iter().map(|r| u64::from(r.lines)).sum(),
                newest_ms: parsed
                    .records
                    .iter()
                    .map(|r| r.created_ms)
                    .max()
                    .unwrap_or(0),
                loaded: None,
            });
        }
        Ok(spool)
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.config.dir.join(format!("{seq:020}.seg"))
    }

    /// Appends one batch (fsynced), then enforces the byte budget.
    pub fn append(&mut self, body: &str, lines: u32, created_ms: i64) -> Result<(), SpoolError> {
        let record = encode_record(body, lines, created_ms);
        let needs_new = match (self.active.as_ref(), self.segments.back()) {
            (Some(_), Some(last)) => last.bytes >= self.config.segment_bytes,
            _ => true,
        };
        if needs_new {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.segment_path(seq);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(err(&path))?;
            self.active = Some(file);
            self.segments.push_back(Segment {
                seq,
                path,
                bytes: 0,
                lines: 0,
                newest_ms: created_ms,
                loaded: None,
            });
        }
        let (Some(file), Some(segment)) = (self.active.as_mut(), self.segments.back_mut()) else {
            // Both were just set; unreachable, but a spool never panics.
            return Ok(());
        };
        if let Err(error) = file.write_all(&record).and_then(|()| file.sync_data()) {
            // Cut a partial record off (disk full) and start a new segment next time,
            // so the failure costs this batch only and is not read back as corruption.
            // Nothing of the active segment is committed yet, so its size is `bytes`.
            let _ = file.set_len(segment.bytes);
            self.active = None;
            return Err(err(&segment.path)(error));
        }
        segment.bytes += record.len() as u64;
        segment.lines += u64::from(lines);
        segment.newest_ms = segment.newest_ms.max(created_ms);
        self.counters.appended_lines += u64::from(lines);
        while self.bytes() > self.config.max_bytes && !self.segments.is_empty() {
            self.drop_front(Budget::Bytes)?;
        }
        Ok(())
    }

    /// Drops segments whose newest record is older than the age budget.
    pub fn expire(&mut self, now_ms: i64) -> Result<(), SpoolError> {
        let max_age = i64::try_from(self.config.max_age.as_millis()).unwrap_or(i64::MAX);
        while let Some(front) = self.segments.front() {
            if now_ms.saturating_sub(front.newest_ms) <= max_age {
                break;
            }
            self.drop_front(Budget::Age)?;
        }
        Ok(())
    }

    /// Removes the oldest segment and counts its uncommitted lines against `budget`
    /// (counted before the file is removed: once out of the queue they are lost to
    /// replay even if the removal fails).
    fn drop_front(&mut self, budget: Budget) -> Result<(), SpoolError> {
        let Some(segment) = self.segments.pop_front() else {
            return Ok(());
        };
        if self.segments.is_empty() {
            self.active = None;
        }
        match budget {
            Budget::Bytes => self.counters.dropped_bytes_lines += segment.lines,
            Budget::Age => self.counters.dropped_age_lines += segment.lines,
        }
        fs::remove_file(&segment.path).map_err(err(&segment.path))
    }

    /// The oldest record not yet committed (loads its segment when needed).
    pub fn front(&mut self) -> Result<Option<&Record>, SpoolError> {
        loop {
            let single = self.segments.len() == 1;
            let Some(segment) = self.segments.front_mut() else {
                return Ok(None);
            };
            if segment.loaded.is_none() {
                if single {
                    // Seal the segment being appended to: appends go to a new one.
                    self.active = None;
                }
                let data = fs::read(&segment.path).map_err(err(&segment.path))?;
                let parsed = parse(&data);
                let good: u64 = parsed.records.iter().map(|r| u64::from(r.lines)).sum();
                self.counters.corrupt_records += parsed.corrupt_records;
                // The segment's line count is exact here (kept while appending, or read
                // from an intact header chain at open), so what the good records lack is
                // what the bad ones held, even where a bad record's own header is gone.
                self.counters.corrupt_lines += if parsed.corrupt_records > 0 {
                    segment.lines.saturating_sub(good).max(parsed.corrupt_lines)
                } else {
                    0
                };
                segment.lines = good;
                segment.bytes = parsed
                    .records
                    .iter()
                    .map(|r| (HEADER + r.body.len()) as u64)
                    .sum();
                segment.loaded = Some(parsed.records.into());
            }
            if segment.loaded.as_ref().is_some_and(|l| !l.is_empty()) {
                break;
            }
            let path = segment.path.clone();
            self.segments.pop_front();
            fs::remove_file(&path).map_err(err(&path))?;
        }
        Ok(self
            .segments
            .front()
            .and_then(|s| s.loaded.as_ref())
            .and_then(|l| l.front()))
    }

    /// The server accepted the front record: forget it (and its segment when empty).
    pub fn commit_front(&mut self) -> Result<(), SpoolError> {
        let Some(segment) = self.segments.front_mut() else {
            return Ok(());
        };
        let Some(loaded) = segment.loaded.as_mut() else {
            return Ok(());
        };
        if let Some(record) = loaded.pop_front() {
            segment.lines = segment.lines.saturating_sub(u64::from(record.lines));
            segment.bytes = segment
                .bytes
                .saturating_sub((HEADER + record.body.len()) as u64);
        }
        if loaded.is_empty() {
            let path = segment.path.clone();
            self.segments.pop_front();
            fs::remove_file(&path).map_err(err(&path))?;
        }
        Ok(())
    }

    /// Part of the front record was accepted or quarantined: keep only `rest` (in
    /// memory; after a crash the whole record is replayed, which overwrites).
    pub fn replace_front(&mut self, rest: String, lines: u32) {
        if let Some(segment) = self.segments.front_mut()
            && let Some(record) = segment.loaded.as_mut().and_then(|l| l.front_mut())
        {
            segment.lines = segment
                .lines
                .saturating_sub(u64::from(record.lines.saturating_sub(lines)));
            segment.bytes = segment
                .bytes
                .saturating_sub(record.body.len().saturating_sub(rest.len()) as u64);
            record.body = rest;
            record.lines = lines;
        }
    }

    /// Appends refused lines to `quarantine.lp` with a comment naming why.
    pub fn quarantine(&mut self, lines: &str, count: u32, why: &str) -> Result<(), SpoolError> {
        self.counters.quarantined_lines += u64::from(count);
        let path = self.config.dir.join("quarantine.lp");
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size >= QUARANTINE_MAX_BYTES {
            return Ok(());
        }
        let why: String = why
            .chars()
            .take(300)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err(&path))?;
        let text = format!("# {} {why}\n{lines}", chrono::Utc::now().to_rfc3339());
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(err(&path))
    }

    /// Lines waiting.
    pub fn lines(&self) -> u64 {
        self.segments.iter().map(|s| s.lines).sum()
    }

    /// Bytes waiting (records not yet committed).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.lines == 0)
    }

    /// What was lost and kept so far.
    pub fn counters(&self) -> SpoolCounters {
        self.counters
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Sequence numbers of the segments, oldest first (for tests and diagnostics).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    /// Segment sequence numbers, oldest first.
    pub fn segment_seqs(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.seq).collect()
    }
}

struct HeaderScan {
    bytes: u64,
    lines: u64,
    newest_ms: i64,
}

/// Walks a segment's record headers without reading payloads; `None` when a header is
/// malformed or the last record is cut short (then the whole segment is verified).
fn scan_headers(path: &Path) -> io::Result<Option<HeaderScan>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut scan = HeaderScan {
        bytes: 0,
        lines: 0,
        newest_ms: 0,
    };
    let mut header = [0u8; HEADER];
    while scan.bytes < size {
        if size - scan.bytes < HEADER as u64 {
            return Ok(None);
        }
        file.read_exact(&mut header)?;
        let Some(magic) = u32_at(&header, 0) else {
            return Ok(None);
        };
        let (Some(len), Some(lines)) = (u32_at(&header, 4), u32_at(&header, 8)) else {
            return Ok(None);
        };
        let end = scan.bytes + (HEADER as u64) + u64::from(len);
        // Every line ends in '\n': more lines than bytes is a damaged header.
        if magic != MAGIC || len as usize > MAX_PAYLOAD || end > size || lines > len {
            return Ok(None);
        }
        let mut created = [0u8; 8];
        created.copy_from_slice(&header[12..20]);
        scan.newest_ms = scan.newest_ms.max(i64::from_le_bytes(created));
        scan.lines += u64::from(lines);
        scan.bytes = end;
        file.seek(SeekFrom::Start(end))?;
    }
    Ok(Some(scan))
}

fn encode_record(body: &str, lines: u32, created_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    // Batches are far below 4 GiB (batch_max_points lines); saturate defensively.
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&lines.to_le_bytes());
    out.extend_from_slice(&created_ms.to_le_bytes());
    out.extend_from_slice(&checksum(lines, created_ms, body.as_bytes()).to_le_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

fn checksum(lines: u32, created_ms: i64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&lines.to_le_bytes());
    h.update(&created_ms.to_le_bytes());
    h.update(payload);
    h.finalize()
}

struct Parsed {
    records: Vec<Record>,
    corrupt_records: u64,
    corrupt_lines: u64,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// Reads every good record; skips and counts bad ones, resuming at the next magic.
fn parse(data: &[u8]) -> Parsed {
    let mut out = Parsed {
        records: Vec::new(),
        corrupt_records: 0,
        corrupt_lines: 0,
    };
    let mut at = 0;
    // True while skipping garbage, so one damaged region counts once.
    let mut in_garbage = false;
    while at < data.len() {
        match read_record(data, at) {
            Some((record, next)) => {
                out.records.push(record);
                at = next;
                in_garbage = false;
            }
            None => {
                if !in_garbage {
                    out.corrupt_records += 1;
                    // The header may still tell how many lines were lost.
                    if u32_at(data, at) == Some(MAGIC)
                        && let (Some(len), Some(lines)) =
                            (u32_at(data, at + 4), u32_at(data, at + 8))
                        && lines <= len
                        && len as usize <= MAX_PAYLOAD
                    {
                        out.corrupt_lines += u64::from(lines);
                    }
                    in_garbage = true;
                }
                at = match data
                    .get(at + 1..)
                    .and_then(|rest| rest.windows(4).position(|w| w == MAGIC.to_le_bytes()))
                {
                    Some(p) => at + 1 + p,
                    None => data.len(),
                };
            }
        }
    }
    out
}

fn read_record(data: &[u8], at: usize) -> Option<(Record, usize)> {
    if u32_at(data, at)? != MAGIC {
        return None;
    }
    let len = u32_at(data, at + 4)? as usize;
    if len > MAX_PAYLOAD {
        return None;
    }
    let lines = u32_at(data, at + 8)?;
    let created_ms = i64::from_le_bytes(data.get(at + 12..at + 20)?.try_into().ok()?);
    let crc = u32_at(data, at + 20)?;
    let payload = data.get(at + HEADER..at + HEADER + len)?;
    if checksum(lines, created_ms, payload) != crc {
        return None;
    }
    let body = String::from_utf8(payload.to_vec()).ok()?;
    Some((
        Record {
            created_ms,
            lines,
            body,
        },
        at + HEADER + len,
    ))
}

/// Rewrites a segment with only `records` (write a temporary file, fsync, rename).
fn rewrite(path: &Path, records: &[Record]) -> Result<u64, SpoolError> {
    let tmp = path.with_extension("seg.tmp");
    let mut data = Vec::new();
    for r in records {
        data.extend_from_slice(&encode_record(&r.body, r.lines, r.created_ms));
    }
    let mut file = File::create(&tmp).map_err(err(&tmp))?;
    file.write_all(&data)
        .and_then(|()| file.sync_all())
        .map_err(err(&tmp))?;
    fs::rename(&tmp, path).map_err(err(path))?;
    Ok(data.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_owned(),
            max_bytes,
            max_age: Duration::from_secs(3600),
            segment_bytes,
        }
    }

    fn body(i: u32) -> String {
        format!("m,site=s v={i} {i}\n")
    }

    #[test]
    fn records_replay_in_order_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(config(dir.path(), 1 << 20, 64)).unwrap();
        for i in 0..10 {
            spool.append(&body(i), 1, 1000).unwrap();
        }
        assert_eq!(spool.lines(), 10);
        assert!(spool.segment_count() > 1);
        let first = spool.front().unwrap().unwrap().body.clone();
        assert_eq!(first, body(0));
        spool.commit_front().unwrap();
        drop(spool);
        // Reopened: the committed record is gone only if its segment was; the rest is
        // there, in order.
        let mut spool = Spool::open(config(dir.path(), 1 << 20, 64)).unwrap();
        let mut seen = Vec::new();
        while let Some(r) = spool.front().unwrap() {
            seen.push(r.body.clone());
            spool.commit_front().unwrap();
        }
        let expected: Vec<String> = (0..10).map(body).collect();
        assert!(seen.len() >= 9);
        assert_eq!(seen[..], expected[10 - seen.len()..]);
        assert!(spool.is_empty());
        assert_eq!(spool.segment_count(), 0);
    }

    #[test]
    fn budget_drops_the_oldest_and_counts_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let record = (HEADER + body(0).len()) as u64;
        // Two records per segment, room for six records.
        let mut spool = Spool::open(config(dir.path(), record * 6, record * 2)).unwrap();
        for i in 0..10 {
            spool.append(&body(i), 1, 1000).unwrap();
        }
        assert_eq!(spool.counters().dropped_bytes_lines, 4);
        assert_eq!(spool.lines(), 6);
        assert_eq!(spool.front().unwrap().unwrap().body, body(4));
        spool.expire(1000 + 3_600_001).unwrap();
        assert_eq!(spool.counters().dropped_age_lines, 6);
        assert!(spool.is_empty());
    }

    #[test]
    fn a_flipped_byte_costs_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        for i in 0..100 {
            spool.append(&body(i), 1, 1000).unwrap();
        }
        let path = spool.segment_paths()[0].clone();
        drop(spool);
        let mut data = fs::read(&path).unwrap();
        let at: usize = (0..50).map(|i| HEADER + body(i).len()).sum();
        data[at + HEADER + 3] ^= 0x20;
        // And a torn tail.
        data.extend_from_slice(&MAGIC.to_le_bytes());
        data.extend_from_slice(&[7, 0]);
        fs::write(&path, &data).unwrap();
        let mut spool = Spool::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!(spool.counters().corrupt_records, 2);
        assert_eq!(spool.lines(), 99);
        let mut n = 0;
        while let Some(r) = spool.front().unwrap() {
            assert_ne!(r.body, body(50));
            n += 1;
            spool.commit_front().unwrap();
        }
        assert_eq!(n, 99);
        assert_eq!(spool.counters().corrupt_records, 2);
    }

    #[test]
    fn a_damaged_payload_is_found_when_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        for i in 0..10 {
            spool.append(&body(i), 1, 1000).unwrap();
        }
        let path = spool.segment_paths()[0].clone();
        drop(spool);
        let mut data = fs::read(&path).unwrap();
        let at: usize = (0..3).map(|i| HEADER + body(i).len()).sum();
        data[at + HEADER + 1] ^= 0x01;
        fs::write(&path, &data).unwrap();
        // Headers are intact: open is fast and trusts them; replay checks the payload.
        let mut spool = Spool::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!(spool.lines(), 10);
        assert_eq!(spool.counters().corrupt_records, 0);
        let mut seen = Vec::new();
        while let Some(r) = spool.front().unwrap() {
            seen.push(r.body.clone());
            spool.commit_front().unwrap();
        }
        let want: Vec<String> = (0..10).filter(|i| *i != 3).map(body).collect();
        assert_eq!(seen, want);
        assert_eq!(spool.counters().corrupt_records, 1);
        assert_eq!(spool.counters().corrupt_lines, 1);
    }

    #[test]
    fn a_record_without_its_header_is_still_counted_in_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        // Record i holds i + 1 lines.
        let record = |i: u32| (0..=i).map(|j| body(i * 100 + j)).collect::<String>();
        for i in 0..8 {
            spool.append(&record(i), i + 1, 1000).unwrap();
        }
        let path = spool.segment_paths()[0].clone();
        // Damage the magic and the line count of record 3 (4 lines) while the spool is
        // open: the header no longer says how many lines it held.
        let mut data = fs::read(&path).unwrap();
        let at: usize = (0..3).map(|i| HEADER + record(i).len()).sum();
        data[at] ^= 0xff;
        data[at + 8] ^= 0xff;
        fs::write(&path, &data).unwrap();
        let mut replayed = 0;
        while let Some(r) = spool.front().unwrap() {
            replayed += u64::from(r.lines);
            spool.commit_front().unwrap();
        }
        assert_eq!(replayed, 36 - 4);
        assert_eq!(spool.counters().corrupt_records, 1);
        assert_eq!(spool.counters().corrupt_lines, 4);
    }
}
