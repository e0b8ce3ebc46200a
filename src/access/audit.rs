//! The tamper-evident audit log: an append-only SHA-256 hash chain of access events, ticket
//! changes, findings and operator actions, with periodic HMAC-signed checkpoints.
//!
//! # On-disk format (one file per chain segment, one record per line)
//!
//! ```text
//! {"hash":"<64 hex>","prev_hash":"<64 hex>","record":{"seq":N,"at":"..","kind":"..","actor":"..","payload":{..}}}\n
//! ```
//!
//! * `hash = SHA-256(prev_hash (32 raw bytes) || record bytes)`, where the record bytes are
//!   exactly the bytes between `"record":` and the final `}` as written. Hashing the written
//!   bytes (not a re-serialisation) keeps verification independent of JSON number formatting.
//! * The first record of a chain has `seq` 0 and `prev_hash` all zeros; the first record of a
//!   later segment is a `segment_start` whose `prev_hash` is the old segment's last hash and
//!   whose `seq` continues the old numbering.
//! * Every `every_records` records or `every_secs` seconds (and when a log is opened on a tail
//!   that is not yet signed) a `checkpoint` record is appended; its payload is a
//!   [`Checkpoint`] `{ seq, hash, at, signature }` covering the record just before it, signed
//!   with HMAC-SHA256 under a key read from a credential file ([`AuditKey::from_file`]; the
//!   key never comes from config text and is never logged or printed).
//! * [`AuditLog::append`] writes the whole line with one `write_all` and `fdatasync`s it before
//!   returning: an event is on disk before the device gets its `OK`.
//! * There is no update or delete API. A line torn by a crash (no final newline) was never
//!   acknowledged; [`AuditLog::open`] cuts it and appends a `recovery` record carrying its
//!   length and SHA-256, so even the repair is evidence.
//!
//! # Verification
//!
//! [`verify`] re-computes the chain and names the FIRST bad record index (its `seq`, which is
//! the 0-based line index in a first segment): modified (hash or seq mismatch), deleted,
//! inserted (including a self-consistent forged record and a replayed copy), reordered,
//! malformed, a crash-truncated last line, a bad checkpoint signature, or a checkpoint that
//! does not match the chain (a keyless attacker re-hashed the chain after an edit: the error
//! names the first record not covered by the previous good checkpoint). Records after the last
//! checkpoint are only hash-chained: deleting or appending at the very end is detectable only
//! against an anchor kept elsewhere (a checkpoint posted to the ticket): [`verify_anchored`].
//!
//! # Retention (`prune_before`)
//!
//! Records are never deleted from a chain. Retention (default 12 months) works on whole
//! segments: [`AuditLog::prune_before`] closes the current segment with a checkpoint and starts
//! a new segment file whose first record anchors the old segment's last hash. An old segment
//! whose newest record is older than the retention cut-off may then be archived or removed as
//! a whole file by the operator; the new segment still proves where it continues from.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::AccessEvent;
use super::zkteco::hex;

/// The `prev_hash` of the first record of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

const PREFIX_HASH: &[u8] = b"{\"hash\":\"";
const PREFIX_PREV: &[u8] = b"\",\"prev_hash\":\"";
const PREFIX_RECORD: &[u8] = b"\",\"record\":";
/// Length of `{"hash":"<64>","prev_hash":"<64>","record":`.
const PREFIX_LEN: usize = PREFIX_HASH.len() + 64 + PREFIX_PREV.len() + 64 + PREFIX_RECORD.len();
/// How many recent hashes verification remembers to classify an insertion.
const LOOKBACK: usize = 4096;
/// Shortest accepted checkpoint key.
const MIN_KEY_LEN: usize = 16;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    AccessEvent,
    TicketChange,
    Finding,
    OperatorAction,
    /// A call of the REST API: every write and every denied request (`api::audit`).
    ApiRequest,
    /// Written by the log itself: a signed [`Checkpoint`].
    Checkpoint,
    /// Written by the log itself: the first record of a later segment ([`SegmentStart`]).
    SegmentStart,
    /// Written by the log itself: a torn last line was cut at open ([`Recovery`]).
    Recovery,
    /// A visit report handed to the ticketing system.
    VisitReport,
    /// Written by the log itself: retention removed a sealed segment ([`SegmentPruned`]).
    SegmentPruned,
}

impl RecordKind {
    fn is_internal(self) -> bool {
        matches!(
            self,
            Self::Checkpoint | Self::SegmentStart | Self::Recovery | Self::SegmentPruned
        )
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "access_event" => Self::AccessEvent,
            "ticket_change" => Self::TicketChange,
            "finding" => Self::Finding,
            "operator_action" => Self::OperatorAction,
            "api_request" => Self::ApiRequest,
            "checkpoint" => Self::Checkpoint,
            "segment_start" => Self::SegmentStart,
            "recovery" => Self::Recovery,
            "visit_report" => Self::VisitReport,
            "segment_pruned" => Self::SegmentPruned,
            _ => return None,
        })
    }
}

/// One record. Field order is the serialised order (verification relies on `seq`, `at` and
/// `kind` leading the record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub kind: RecordKind,
    /// Who caused it: a reader serial, `system`, an operator id, the ticketing system.
    pub actor: String,
    pub payload: serde_json::Value,
}

/// A signed statement "record `seq` has hash `hash`", the payload of a `checkpoint` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    /// Hex SHA-256 chain hash of record `seq`.
    pub hash: String,
    pub at: DateTime<Utc>,
    /// Hex HMAC-SHA256 of [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes.
    pub fn message(seq: u64, hash: &str, at: DateTime<Utc>) -> String {
        format!(
            "dcguard-audit-checkpoint-v1\n{seq}\n{hash}\n{}\n",
            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )
    }

    fn sign(key: &AuditKey, seq: u64, hash: &str, at: DateTime<Utc>) -> Self {
        Self {
            seq,
            hash: hash.to_owned(),
            at,
            signature: hex(&key.mac(Self::message(seq, hash, at).as_bytes())),
        }
    }

    /// True when the signature is valid under `key` (constant-time comparison).
    pub fn signature_valid(&self, key: &AuditKey) -> bool {
        let Some(sig) = decode_hex_vec(self.signature.as_bytes()) else {
            return false;
        };
        let mut mac = key.hmac();
        mac.update(Self::message(self.seq, &self.hash, self.at).as_bytes());
        mac.verify_slice(&sig).is_ok()
    }
}

/// Payload of the first record of a later segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentStart {
    /// File name of the previous segment.
    pub previous_segment: String,
    pub previous_last_seq: u64,
    /// Hex chain hash of the previous segment's last record (also this record's `prev_hash`).
    pub previous_last_hash: String,
    /// The retention cut-off that caused the rotation, if any.
    pub retention_cutoff: Option<DateTime<Utc>>,
}

/// Payload of a `recovery` record: a torn, never-acknowledged last line was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    pub torn_bytes: u64,
    pub torn_sha256: String,
}

/// Payload of a `segment_pruned` record: retention removed a whole sealed segment. Written
/// (and fsynced) before the file is removed, so a verifier finds the reason for every
/// segment missing at the start of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentPruned {
    /// File name of the removed segment.
    pub segment: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Hex chain hash of its last record (what the next segment's `segment_start` anchors).
    pub last_hash: String,
    /// Time of its newest record.
    pub newest_at: DateTime<Utc>,
    /// The retention cut-off it was older than.
    pub cutoff: DateTime<Utc>,
}

/// The checkpoint signing key. Its bytes are never printed.
#[derive(Clone)]
pub struct AuditKey(Vec<u8>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl AuditKey {
    /// Reads the key from a credential file (e.g. a systemd credential); one trailing newline
    /// is ignored. At least 16 bytes.
    pub fn from_file(path: &Path) -> Result<Self, AuditError> {
        let mut bytes = std::fs::read(path).map_err(|source| AuditError::Key {
            path: path.to_owned(),
            problem: source.to_string(),
        })?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Self::from_bytes(bytes).map_err(|problem| AuditError::Key {
            path: path.to_owned(),
            problem,
        })
    }

    /// A key from bytes (tests, key derivation); at least 16 bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(format!(
                "key has {} bytes; expected at least {MIN_KEY_LEN}",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    fn hmac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    fn mac(&self, message: &[u8]) -> Vec<u8> {
        let mut mac = self.hmac();
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }
}

/// When checkpoints are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After this many records since the last checkpoint (0: never by count).
    pub every_records: u64,
    /// When a record is appended this many seconds after the last checkpoint (0: never by time).
    pub every_secs: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_records: 1000,
            every_secs: 300,
        }
    }
}

/// The last record of a chain: what a checkpoint or an external anchor states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Head {
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }
}

/// Errors of the writer.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("audit key {path}: {problem}")]
    Key { path: PathBuf, problem: String },
    #[error("audit log {path}: last record is unreadable ({problem}); run `dcguard audit verify`")]
    Corrupt { path: PathBuf, problem: String },
    #[error("record kind {0:?} is written by the log itself")]
    ReservedKind(RecordKind),
    #[error("audit log {0}: an earlier write failed; reopen the log to recover")]
    Poisoned(PathBuf),
    #[error("audit log {0} already exists; a new segment needs a new file")]
    SegmentExists(PathBuf),
    #[error("cannot encode record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The appender. Synchronous: call it from a blocking thread (`spawn_blocking`) in async code.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    key: AuditKey,
    policy: CheckpointPolicy,
    next_seq: u64,
    last_hash: [u8; 32],
    since_checkpoint: u64,
    last_checkpoint_at: Option<DateTime<Utc>>,
    poisoned: bool,
}

/// A record to append ([`AuditLog::append_batch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    pub kind: RecordKind,
    pub actor: String,
    pub payload: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl AuditLog {
    /// Opens (creating if missing) a chain file for appending. A torn last line is cut and a
    /// `recovery` record appended; an unsigned tail gets a checkpoint at `now`.
    pub fn open(
        path: &Path,
        key: AuditKey,
        policy: CheckpointPolicy,
        now: DateTime<Utc>,
    ) -> Result<Self, AuditError> {
        let io_err = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let existed = path.exists();
        let empty = !existed || std::fs::metadata(path).map_err(io_err)?.len() == 0;
        if empty && let Some(sealed) = sealed_segments(path).map_err(io_err)?.pop() {
            // A rotation was cut between sealing the old segment and writing the first record
            // of the new one: continue the chain from the sealed segment.
            return Self::continue_after(path, &sealed, key, policy, now);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err)?;
        if !existed {
            sync_parent_dir(path).map_err(io_err)?;
        }
        let tail = read_tail(&mut file).map_err(io_err)?;
        let mut log = Self {
            path: path.to_owned(),
            file,
            key,
            policy,
            next_seq: 0,
            last_hash: GENESIS,
            since_checkpoint: 0,
            last_checkpoint_at: Some(now),
            poisoned: false,
        };
        let mut last_kind = None;
        if let Some(line) = &tail.last_line {
            let entry = parse_line(line).map_err(|problem| AuditError::Corrupt {
                path: path.to_owned(),
                problem,
            })?;
            let (hash, _) = entry.hashes().map_err(|problem| AuditError::Corrupt {
                path: path.to_owned(),
                problem,
            })?;
            log.next_seq = entry.header.seq.saturating_add(1);
            log.last_hash = hash;
            last_kind = Some(entry.header.kind);
            if entry.header.kind == RecordKind::Checkpoint {
                log.last_checkpoint_at = entry.header.at().or(Some(now));
            } else {
                log.since_checkpoint = 1;
            }
        }
        if tail.torn_bytes.is_empty() {
            if last_kind.is_some() && last_kind != Some(RecordKind::Checkpoint) {
                log.checkpoint(now)?;
            }
        } else {
            log.file.set_len(tail.complete_len).map_err(io_err)?;
            log.file.sync_all().map_err(io_err)?;
            let recovery = Recovery {
                torn_bytes: tail.torn_bytes.len() as u64,
                torn_sha256: hex(&Sha256::digest(&tail.torn_bytes)),
            };
            tracing::warn!(
                path = %path.display(),
                torn_bytes = recovery.torn_bytes,
                "audit log: cut a torn last line left by a crash"
            );
            log.write_record(
                RecordKind::Recovery,
                "system",
                serde_json::to_value(&recovery)?,
                now,
            )?;
            log.checkpoint(now)?;
        }
        Ok(log)
    }

    /// Appends one record and fsyncs it; may append a checkpoint after it per the policy.
    pub fn append(
        &mut self,
        kind: RecordKind,
        actor: &str,
        payload: serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<Appended, AuditError> {
        if kind.is_internal() {
            return Err(AuditError::ReservedKind(kind));
        }
        let appended = self.write_record(kind, actor, payload, at)?;
        self.checkpoint_if_due(at)?;
        Ok(appended)
    }

    /// Appends records with one write and one fsync (a device batch: all of it is on disk
    /// before the device gets its `OK`); then a checkpoint if the policy says so, so a
    /// count-based checkpoint may cover slightly more than `every_records`.
    pub fn append_batch(&mut self, records: Vec<NewRecord>) -> Result<Vec<Appended>, AuditError> {
        if let Some(r) = records.iter().find(|r| r.kind.is_internal()) {
            return Err(AuditError::ReservedKind(r.kind));
        }
        let Some(last_at) = records.last().map(|r| r.at) else {
            return Ok(Vec::new());
        };
        let appended = self.write_records(records)?;
        self.checkpoint_if_due(last_at)?;
        Ok(appended)
    }

    /// Appends access events (actor: the reader; at: the receive time) as one batch.
    pub fn append_access_events(
        &mut self,
        events: &[AccessEvent],
    ) -> Result<Vec<Appended>, AuditError> {
        let records = events
            .iter()
            .map(|e| {
                Ok(NewRecord {
                    kind: RecordKind::AccessEvent,
                    actor: e.reader.to_string(),
                    payload: serde_json::to_value(e)?,
                    at: e.received_at,
                })
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        self.append_batch(records)
    }

    fn checkpoint_if_due(&mut self, at: DateTime<Utc>) -> Result<(), AuditError> {
        let by_count =
            self.policy.every_records > 0 && self.since_checkpoint >= self.policy.every_records;
        let by_time = self.policy.every_secs > 0
            && self.last_checkpoint_at.is_none_or(|last| {
                (at - last).num_seconds()
                    >= i64::try_from(self.policy.every_secs).unwrap_or(i64::MAX)
            });
        if by_count || by_time {
            self.checkpoint(at)?;
        }
        Ok(())
    }

    /// Appends a signed checkpoint covering the last record, unless it already is one or the
    /// chain is empty. For a timer task; `append` calls it per the policy.
    pub fn checkpoint(&mut self, at: DateTime<Utc>) -> Result<Option<Appended>, AuditError> {
        if self.since_checkpoint == 0 || self.next_seq == 0 {
            return Ok(None);
        }
        let cp = Checkpoint::sign(&self.key, self.next_seq - 1, &hex(&self.last_hash), at);
        let appended = self.write_record(
            RecordKind::Checkpoint,
            "system",
            serde_json::to_value(&cp)?,
            at,
        )?;
        self.since_checkpoint = 0;
        self.last_checkpoint_at = Some(at);
        Ok(Some(appended))
    }

    /// The last record written, if any.
    pub fn head(&self) -> Option<Head> {
        (self.next_seq > 0).then(|| Head {
            seq: self.next_seq - 1,
            hash: self.last_hash,
        })
    }

    /// The file this log appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals the current segment and starts a new one in its place (retention works on
    /// whole segments; the daemon rotates monthly). The current file, closed with a
    /// checkpoint, is renamed to [`sealed_path`] and a new file at the same path starts with
    /// a `segment_start` record anchoring the sealed segment's last hash. A crash between the
    /// rename and the first record is repaired by [`AuditLog::open`]. Returns the sealed file,
    /// or `None` for an empty chain.
    pub fn rotate(&mut self, now: DateTime<Utc>) -> Result<Option<PathBuf>, AuditError> {
        if self.next_seq == 0 {
            return Ok(None);
        }
        self.checkpoint(now)?;
        let sealed = sealed_path(&self.path, self.next_seq - 1);
        if sealed.exists() {
            return Err(AuditError::SegmentExists(sealed));
        }
        let io_err = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        std::fs::rename(&self.path, &sealed).map_err(io_err)?;
        sync_parent_dir(&self.path).map_err(io_err)?;
        // From here on this value must not write to the renamed file.
        self.poisoned = true;
        let next = self.start_segment_at(&sealed, None, now)?;
        *self = next;
        Ok(Some(sealed))
    }

    /// Retention: removes the sealed segments (oldest first, never one after a kept one)
    /// whose newest record is older than `cutoff`. For each, a `segment_pruned` record is
    /// appended and fsynced BEFORE the file is removed, so the chain itself says what went
    /// and verification still links the first kept segment ([`verify_segments`]).
    pub fn prune_sealed(
        &mut self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<SegmentPruned>, AuditError> {
        let io_err = |path: &Path, source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let mut pruned = Vec::new();
        for segment in sealed_segments(&self.path).map_err(|e| io_err(&self.path, e))? {
            let summary = segment_summary(&segment)?;
            if summary.newest_at >= cutoff {
                break;
            }
            let record = SegmentPruned {
                segment: file_name(&segment),
                first_seq: summary.first_seq,
                last_seq: summary.head.seq,
                last_hash: summary.head.hash_hex(),
                newest_at: summary.newest_at,
                cutoff,
            };
            self.write_record(
                RecordKind::SegmentPruned,
                "retention",
                serde_json::to_value(&record)?,
                now,
            )?;
            self.checkpoint(now)?;
            std::fs::remove_file(&segment).map_err(|e| io_err(&segment, e))?;
            sync_parent_dir(&segment).map_err(|e| io_err(&segment, e))?;
            pruned.push(record);
        }
        Ok(pruned)
    }

    /// Time of the first record of the current segment (when it was started).
    pub fn segment_started_at(&self) -> Result<Option<DateTime<Utc>>, AuditError> {
        let file = File::open(&self.path).map_err(|source| AuditError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        reader
            .read_until(b'\n', &mut line)
            .map_err(|source| AuditError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(parse_line(&line).ok().and_then(|e| e.header.at()))
    }

    /// A new segment at `path` (empty or missing) continuing the sealed segment `sealed`.
    fn continue_after(
        path: &Path,
        sealed: &Path,
        key: AuditKey,
        policy: CheckpointPolicy,
        now: DateTime<Utc>,
    ) -> Result<Self, AuditError> {
        let summary = segment_summary(sealed)?;
        let mut old = Self {
            path: sealed.to_owned(),
            file: File::open(sealed).map_err(|source| AuditError::Io {
                path: sealed.to_owned(),
                source,
            })?,
            key,
            policy,
            next_seq: summary.head.seq + 1,
            last_hash: summary.head.hash,
            since_checkpoint: 0,
            last_checkpoint_at: Some(now),
            poisoned: true,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(AuditError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        tracing::warn!(
            path = %path.display(),
            sealed = %sealed.display(),
            "Audit log: a rotation was interrupted; continuing the chain from the sealed segment."
        );
        old.start_segment_at_path(path, sealed, None, now)
    }

    /// Starts a new segment file `new_path` (which must not exist) continuing this chain:
    /// closes this segment with a checkpoint, then writes a `segment_start` record anchoring
    /// its last hash. Nothing is deleted.
    pub fn start_segment(
        &mut self,
        new_path: &Path,
        retention_cutoff: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, AuditError> {
        self.checkpoint(now)?;
        let previous = self.path.clone();
        self.start_segment_at_path(new_path, &previous, retention_cutoff, now)
    }

    /// After a rename of this segment to `sealed`: the new segment at the old path.
    fn start_segment_at(
        &mut self,
        sealed: &Path,
        retention_cutoff: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, AuditError> {
        let path = self.path.clone();
        self.start_segment_at_path(&path, sealed, retention_cutoff, now)
    }

    fn start_segment_at_path(
        &mut self,
        new_path: &Path,
        previous: &Path,
        retention_cutoff: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(new_path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    AuditError::SegmentExists(new_path.to_owned())
                } else {
                    AuditError::Io {
                        path: new_path.to_owned(),
                        source,
                    }
                }
            })?;
        sync_parent_dir(new_path).map_err(|source| AuditError::Io {
            path: new_path.to_owned(),
            source,
        })?;
        let start = SegmentStart {
            previous_segment: file_name(previous),
            previous_last_seq: self.next_seq.saturating_sub(1),
            previous_last_hash: hex(&self.last_hash),
            retention_cutoff,
        };
        let mut next = Self {
            path: new_path.to_owned(),
            file,
            key: self.key.clone(),
            policy: self.policy,
            next_seq: self.next_seq,
            last_hash: self.last_hash,
            since_checkpoint: 0,
            last_checkpoint_at: Some(now),
            poisoned: false,
        };
        next.write_record(
            RecordKind::SegmentStart,
            "system",
            serde_json::to_value(&start)?,
            now,
        )?;
        next.checkpoint(now)?;
        Ok(next)
    }

    fn write_record(
        &mut self,
        kind: RecordKind,
        actor: &str,
        payload: serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<Appended, AuditError> {
        let record = NewRecord {
            kind,
            actor: actor.to_owned(),
            payload,
            at,
        };
        let appended = self.write_records(vec![record])?;
        // One record in, one out.
        appended
            .first()
            .copied()
            .ok_or_else(|| AuditError::Poisoned(self.path.clone()))
    }

    /// Chains, writes (one `write_all`) and fsyncs (one `fdatasync`) the records; the state
    /// advances only once they are on disk.
    fn write_records(&mut self, records: Vec<NewRecord>) -> Result<Vec<Appended>, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned(self.path.clone()));
        }
        let mut buf = Vec::new();
        let mut appended = Vec::with_capacity(records.len());
        let mut seq = self.next_seq;
        let mut prev = self.last_hash;
        for r in records {
            let record = AuditRecord {
                seq,
                at: r.at,
                kind: r.kind,
                actor: r.actor,
                payload: r.payload,
            };
            let body = serde_json::to_vec(&record)?;
            let hash = chain_hash(&prev, &body);
            buf.extend_from_slice(&encode_line(&hash, &prev, &body));
            appended.push(Appended { seq, hash });
            seq += 1;
            prev = hash;
        }
        let result = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = result {
            self.poisoned = true;
            return Err(AuditError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.since_checkpoint += seq - self.next_seq;
        self.next_seq = seq;
        self.last_hash = prev;
        Ok(appended)
    }
}

/// The name a segment gets when sealed: `access-audit.log` ending at record 1234 becomes
/// `access-audit.00000000000000001234.log` in the same directory (sorts by position).
pub fn sealed_path(active: &Path, last_seq: u64) -> PathBuf {
    let stem = active
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match active.extension() {
        Some(ext) => format!("{stem}.{last_seq:020}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{last_seq:020}"),
    };
    active.with_file_name(name)
}

/// The sealed segments of the chain whose active file is `active`, oldest first.
pub fn sealed_segments(active: &Path) -> io::Result<Vec<PathBuf>> {
    let stem = active
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = active
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let dir = match active.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let prefix = format!("{stem}.");
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(middle) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(&ext))
        else {
            continue;
        };
        if middle.len() == 20
            && middle.bytes().all(|b| b.is_ascii_digit())
            && let Ok(seq) = middle.parse::<u64>()
        {
            found.push((seq, dir.join(&name)));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// First seq, head and newest record time of a sealed segment.
struct SegmentSummary {
    first_seq: u64,
    head: Head,
    newest_at: DateTime<Utc>,
}

fn segment_summary(path: &Path) -> Result<SegmentSummary, AuditError> {
    let io_err = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let corrupt = |problem: String| AuditError::Corrupt {
        path: path.to_owned(),
        problem,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let tail = read_tail(&mut file).map_err(io_err)?;
    let last = tail
        .last_line
        .ok_or_else(|| corrupt("sealed segment is empty".to_owned()))?;
    if !tail.torn_bytes.is_empty() {
        return Err(corrupt("sealed segment ends with a torn line".to_owned()));
    }
    let entry = parse_line(&last).map_err(corrupt)?;
    let (hash, _) = entry.hashes().map_err(corrupt)?;
    let newest_at = entry
        .header
        .at()
        .ok_or_else(|| corrupt("last record has no valid time".to_owned()))?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let mut first = Vec::new();
    BufReader::new(file)
        .read_until(b'\n', &mut first)
        .map_err(io_err)?;
    let first_seq = parse_line(&first).map_err(corrupt)?.header.seq;
    Ok(SegmentSummary {
        first_seq,
        head: Head {
            seq: entry.header.seq,
            hash,
        },
        newest_at,
    })
}

/// Makes a newly created file's directory entry durable.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// `SHA-256(prev || body)`.
pub fn chain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(body);
    hasher.finalize().into()
}

/// One complete line, newline included.
pub fn encode_line(hash: &[u8; 32], prev: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(PREFIX_LEN + body.len() + 2);
    line.extend_from_slice(PREFIX_HASH);
    line.extend_from_slice(hex(hash).as_bytes());
    line.extend_from_slice(PREFIX_PREV);
    line.extend_from_slice(hex(prev).as_bytes());
    line.extend_from_slice(PREFIX_RECORD);
    line.extend_from_slice(body);
    line.extend_from_slice(b"}\n");
    line
}

struct Tail {
    last_line: Option<Vec<u8>>,
    complete_len: u64,
    torn_bytes: Vec<u8>,
}

/// Reads backwards from the end: the last complete line and any torn bytes after it.
fn read_tail(file: &mut File) -> io::Result<Tail> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut buf: Vec<u8> = Vec::new();
    let mut start = len;
    const CHUNK: u64 = 64 * 1024;
    // Grow `buf` backwards until it holds the last newline and the one before it (or the start).
    loop {
        let newlines = buf.iter().filter(|&&b| b == b'\n').count();
        let have_last_complete = match buf.iter().rposition(|&b| b == b'\n') {
            Some(_) => newlines >= 2 || start == 0,
            None => start == 0,
        };
        if have_last_complete {
            break;
        }
        let step = CHUNK.min(start);
        start -= step;
        file.seek(SeekFrom::Start(start))?;
        let mut chunk = vec![0; usize::try_from(step).unwrap_or(usize::MAX)];
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
        return Ok(Tail {
            last_line: None,
            complete_len: 0,
            torn_bytes: buf,
        });
    };
    let torn_bytes = buf[last_nl + 1..].to_vec();
    let line_start = buf[..last_nl]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    Ok(Tail {
        last_line: Some(buf[line_start..=last_nl].to_vec()),
        complete_len: start + last_nl as u64 + 1,
        torn_bytes,
    })
}

/// The leading fields of a record, read without a full JSON parse.
#[derive(Debug, Clone)]
struct Header<'a> {
    seq: u64,
    /// The `at` text, parsed only where needed ([`Header::at`]).
    at: &'a str,
    kind: RecordKind,
}

impl Header<'_> {
    fn at(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(self.at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

struct Entry<'a> {
    /// The stored `hash`, 64 bytes, not yet checked to be hex.
    hash_hex: &'a [u8],
    /// The stored `prev_hash`, 64 bytes, not yet checked to be hex.
    prev_hex: &'a [u8],
    body: &'a [u8],
    header: Header<'a>,
}

impl Entry<'_> {
    /// The stored hash and prev hash, decoded.
    fn hashes(&self) -> Result<([u8; 32], [u8; 32]), String> {
        let hash = decode_hex32(self.hash_hex).ok_or("hash is not 64 hex digits")?;
        let prev = decode_hex32(self.prev_hex).ok_or("prev_hash is not 64 hex digits")?;
        Ok((hash, prev))
    }
}

/// Splits and checks one line (with or without its newline); does not check the hash.
fn parse_line(line: &[u8]) -> Result<Entry<'_>, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.len() < PREFIX_LEN + 2 || !line.starts_with(PREFIX_HASH) || !line.ends_with(b"}") {
        return Err("not an audit record line".to_owned());
    }
    let mut pos = PREFIX_HASH.len();
    let hash_hex = &line[pos..pos + 64];
    pos += 64;
    if &line[pos..pos + PREFIX_PREV.len()] != PREFIX_PREV {
        return Err("prev_hash field missing".to_owned());
    }
    pos += PREFIX_PREV.len();
    let prev_hex = &line[pos..pos + 64];
    pos += 64;
    if &line[pos..pos + PREFIX_RECORD.len()] != PREFIX_RECORD {
        return Err("record field missing".to_owned());
    }
    let body = &line[PREFIX_LEN..line.len() - 1];
    let header = parse_header(body)?;
    Ok(Entry {
        hash_hex,
        prev_hex,
        body,
        header,
    })
}

/// Reads `{"seq":N,"at":"..","kind":"..",` from the start of a record.
fn parse_header(body: &[u8]) -> Result<Header<'_>, String> {
    let (seq, rest) = parse_seq(body).ok_or("record does not start with a seq")?;
    let rest = rest
        .strip_prefix(b",\"at\":\"")
        .ok_or("at missing after seq")?;
    let end = rest
        .iter()
        .position(|&b| b == b'"')
        .ok_or("at is not terminated")?;
    let at = std::str::from_utf8(&rest[..end]).map_err(|_| "at is not text")?;
    let rest = rest[end + 1..]
        .strip_prefix(b",\"kind\":\"")
        .ok_or("kind missing after at")?;
    let end = rest
        .iter()
        .position(|&b| b == b'"')
        .ok_or("kind is not terminated")?;
    let kind = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(RecordKind::from_name)
        .ok_or("unknown record kind")?;
    Ok(Header { seq, at, kind })
}

/// The `seq` at the start of a record body, and the bytes after it.
fn parse_seq(body: &[u8]) -> Option<(u64, &[u8])> {
    let rest = body.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((seq, &rest[digits..]))
}

/// The `seq` of a line, without checking the rest (used to look ahead).
fn line_seq(line: &[u8]) -> Option<u64> {
    parse_seq(line.get(PREFIX_LEN..)?).map(|(seq, _)| seq)
}

/// Lower-case hex of a hash, without allocating.
fn hex32(hash: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in hash.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

fn decode_hex32(s: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (nibble(s[2 * i])? << 4) | nibble(s[2 * i + 1])?;
    }
    Some(out)
}

fn decode_hex_vec(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 == 1 {
        return None;
    }
    s.chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records (lines), checkpoints included.
    pub records: u64,
    pub checkpoints: u64,
    /// `seq` of the first record (0, or the continuation of a previous segment).
    pub first_seq: u64,
    /// The chain's head, if not empty.
    pub head: Option<Head>,
    /// `seq` of the record covered by the last valid checkpoint.
    pub last_checkpoint_seq: Option<u64>,
    /// Records after the last checkpoint: chained but not yet signed.
    pub unsigned_tail: u64,
    /// For a later segment: the previous segment's head it anchors to.
    pub continues_from: Option<Head>,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("malformed line: {0}")]
    Malformed(String),
    #[error("last line is truncated ({bytes} bytes, no newline): a crash during a write")]
    TruncatedLastLine { bytes: usize },
    #[error("modified: stored hash does not match the record")]
    HashMismatch,
    #[error("modified: seq is {found}")]
    SequenceMismatch { found: u64 },
    #[error("deleted: the chain resumes at record {resumes_at}")]
    Deleted { resumes_at: u64 },
    #[error("reordered: this record appears later in the file")]
    Reordered,
    #[error("inserted: not part of the chain")]
    Inserted,
    #[error("checkpoint signature is invalid (wrong key or forged)")]
    BadCheckpointSignature,
    #[error("checkpoint at record {checkpoint} does not match the chain: rewritten since here")]
    CheckpointMismatch { checkpoint: u64 },
    #[error("missing: the anchored head is record {anchored}, the file ends before it")]
    MissingRecords { anchored: u64 },
    #[error("the anchored hash of record {anchored} does not match: rewritten since here")]
    AnchorMismatch { anchored: u64 },
    #[error(
        "segment does not continue the previous one (which ends at record {previous_head}): a segment is missing or was replaced"
    )]
    SegmentGap { previous_head: u64 },
    #[error(
        "the chain continues from record {previous_head}, but no segment_pruned record says its segment was removed by retention"
    )]
    SegmentMissing { previous_head: u64 },
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the audit log: {0}")]
    Io(#[from] io::Error),
    /// `index` is the `seq` the first bad record should have had; `line` is 1-based.
    #[error("record {index} (line {line}): {problem}")]
    Bad {
        index: u64,
        line: u64,
        problem: Problem,
    },
}

impl VerifyError {
    /// The first bad record index, if the file was readable.
    pub fn index(&self) -> Option<u64> {
        match self {
            Self::Io(_) => None,
            Self::Bad { index, .. } => Some(*index),
        }
    }

    /// The problem, if the file was readable.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Io(_) => None,
            Self::Bad { problem, .. } => Some(problem),
        }
    }
}

/// Verifies a chain file (see the module documentation).
pub fn verify(path: &Path, key: &AuditKey) -> Result<VerifyReport, VerifyError> {
    verify_anchored(path, key, None)
}

/// Verifies a chain file against an externally kept anchor (a head known to be genuine,
/// e.g. the last checkpoint posted to a ticket): also detects records removed from the end.
pub fn verify_anchored(
    path: &Path,
    key: &AuditKey,
    anchor: Option<Head>,
) -> Result<VerifyReport, VerifyError> {
    let file = File::open(path)?;
    verify_reader(BufReader::new(file), key, anchor)
}

/// What verifying a chain of segments found ([`verify_segments`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Segment files verified, oldest first (sealed ones, then the active one).
    pub segments: Vec<PathBuf>,
    /// Records in them.
    pub records: u64,
    pub checkpoints: u64,
    /// `seq` of the oldest record kept.
    pub first_seq: u64,
    /// Segments removed by retention, as recorded in the chain.
    pub pruned: Vec<SegmentPruned>,
    pub head: Option<Head>,
    /// `seq` of the record covered by the last valid checkpoint.
    pub last_checkpoint_seq: Option<u64>,
    /// Records after the last checkpoint.
    pub unsigned_tail: u64,
}

/// Why a chain of segments failed verification: the segment and the first bad record.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", .segment.display())]
pub struct ChainError {
    pub segment: PathBuf,
    pub error: VerifyError,
}

impl ChainError {
    /// The first bad record index, if the file was readable.
    pub fn index(&self) -> Option<u64> {
        self.error.index()
    }
}

/// Verifies the whole chain whose active segment is `active`: every sealed segment, then
/// the active one. Each later segment must start where the one before it ends (its
/// `segment_start` anchors the previous head); the oldest kept segment may continue a
/// removed one only if a `segment_pruned` record in the chain names that segment's head
/// (retention). The first bad record is named with its segment.
pub fn verify_segments(active: &Path, key: &AuditKey) -> Result<ChainReport, ChainError> {
    let mut files = sealed_segments(active).map_err(|e| ChainError {
        segment: active.to_owned(),
        error: VerifyError::Io(e),
    })?;
    if active.exists() {
        files.push(active.to_owned());
    }
    let mut report = ChainReport {
        segments: files.clone(),
        records: 0,
        checkpoints: 0,
        first_seq: 0,
        pruned: Vec::new(),
        head: None,
        last_checkpoint_seq: None,
        unsigned_tail: 0,
    };
    let mut first_continues: Option<(PathBuf, Head)> = None;
    for (i, file) in files.iter().enumerate() {
        let fail = |error| ChainError {
            segment: file.clone(),
            error,
        };
        let opened = File::open(file).map_err(|e| fail(VerifyError::Io(e)))?;
        let mut pruned_here = Vec::new();
        let r = verify_reader_collecting(BufReader::new(opened), key, None, &mut pruned_here)
            .map_err(fail)?;
        match (i, r.continues_from, report.head) {
            (0, None, _) => report.first_seq = r.first_seq,
            (0, Some(from), _) => {
                report.first_seq = r.first_seq;
                first_continues = Some((file.clone(), from));
            }
            (_, Some(from), Some(head)) if from == head => {}
            (_, _, prev) => {
                let expected = prev.map_or(0, |h| h.seq + 1);
                return Err(fail(VerifyError::Bad {
                    index: expected,
                    line: 1,
                    problem: Problem::SegmentGap {
                        previous_head: prev.map_or(0, |h| h.seq),
                    },
                }));
            }
        }
        report.records += r.records;
        report.checkpoints += r.checkpoints;
        report.pruned.extend(pruned_here);
        if r.head.is_some() {
            report.head = r.head;
        }
        if r.last_checkpoint_seq.is_some() {
            report.last_checkpoint_seq = r.last_checkpoint_seq;
            report.unsigned_tail = r.unsigned_tail;
        } else {
            report.unsigned_tail += r.unsigned_tail;
        }
    }
    if let Some((file, from)) = first_continues {
        let justified = report
            .pruned
            .iter()
            .any(|p| p.last_seq == from.seq && p.last_hash == from.hash_hex());
        if !justified {
            return Err(ChainError {
                segment: file,
                error: VerifyError::Bad {
                    index: from.seq + 1,
                    line: 1,
                    problem: Problem::SegmentMissing {
                        previous_head: from.seq,
                    },
                },
            });
        }
    }
    Ok(report)
}

/// Verifies a chain from any reader (an in-memory copy, a file).
pub fn verify_reader(
    reader: impl BufRead,
    key: &AuditKey,
    anchor: Option<Head>,
) -> Result<VerifyReport, VerifyError> {
    verify_reader_collecting(reader, key, anchor, &mut Vec::new())
}

/// [`verify_reader`], also collecting the `segment_pruned` records met.
fn verify_reader_collecting(
    mut reader: impl BufRead,
    key: &AuditKey,
    anchor: Option<Head>,
    pruned: &mut Vec<SegmentPruned>,
) -> Result<VerifyReport, VerifyError> {
    let mut lines = LineReader::new(&mut reader);
    let mut report = VerifyReport {
        records: 0,
        checkpoints: 0,
        first_seq: 0,
        head: None,
        last_checkpoint_seq: None,
        unsigned_tail: 0,
        continues_from: None,
    };
    let mut last = GENESIS;
    let mut last_hex = hex32(&GENESIS);
    let mut base_prev = GENESIS;
    let mut expected: u64 = 0;
    // Recent hashes, newest last; position `i` in the deque is seq `window_base + i`.
    let mut window: VecDeque<[u8; 32]> = VecDeque::with_capacity(LOOKBACK);
    let mut line_no: u64 = 0;
    let mut anchor_seen = false;
    let bad = |index: u64, line: u64, problem: Problem| VerifyError::Bad {
        index,
        line,
        problem,
    };
    while let Some(raw) = lines.next_line()? {
        line_no += 1;
        let complete = raw.ends_with(b"\n");
        let entry = match parse_line(&raw) {
            Ok(entry) if complete => entry,
            Ok(_) => {
                return Err(bad(
                    expected,
                    line_no,
                    Problem::TruncatedLastLine { bytes: raw.len() },
                ));
            }
            Err(reason) => {
                let problem = if complete {
                    Problem::Malformed(reason)
                } else {
                    Problem::TruncatedLastLine { bytes: raw.len() }
                };
                return Err(bad(expected, line_no, problem));
            }
        };
        if line_no == 1 && entry.header.kind == RecordKind::SegmentStart {
            let start = full_record(entry.body)
                .and_then(|r| serde_json::from_value::<SegmentStart>(r.payload).ok())
                .and_then(|s| {
                    Some((
                        s.previous_last_seq,
                        decode_hex32(s.previous_last_hash.as_bytes())?,
                    ))
                });
            let start = start.filter(|(prev_seq, _)| *prev_seq < u64::MAX / 2);
            let Some((prev_seq, prev_hash)) = start else {
                return Err(bad(
                    0,
                    1,
                    Problem::Malformed("bad segment_start".to_owned()),
                ));
            };
            expected = prev_seq.saturating_add(1);
            last = prev_hash;
            last_hex = hex32(&prev_hash);
            base_prev = prev_hash;
            report.first_seq = expected;
            report.continues_from = Some(Head {
                seq: prev_seq,
                hash: prev_hash,
            });
        }
        // Fast path: the stored prev is the previous hash, so only one hash is computed and
        // compared in hex.
        let (hash, hash_hex) = if entry.prev_hex == last_hex {
            let hash = chain_hash(&last, entry.body);
            let hash_hex = hex32(&hash);
            if entry.hash_hex != hash_hex {
                return Err(bad(expected, line_no, Problem::HashMismatch));
            }
            (hash, hash_hex)
        } else {
            let (hash, prev) = entry
                .hashes()
                .map_err(|reason| bad(expected, line_no, Problem::Malformed(reason)))?;
            if chain_hash(&prev, entry.body) != hash {
                return Err(bad(expected, line_no, Problem::HashMismatch));
            }
            let link = Link {
                hash,
                prev,
                seq: entry.header.seq,
            };
            let chain = Chain {
                window: &window,
                expected,
                last,
                first_seq: report.first_seq,
                base_prev,
            };
            let problem = classify_break(link, &chain, &mut lines, anchor)?;
            let (index, problem) = match problem {
                Break::At(problem) => (expected, problem),
                Break::InsertedFrom(seq) => (seq, Problem::Inserted),
            };
            let line = line_no - (expected - index);
            return Err(bad(index, line, problem));
        };
        if entry.header.seq != expected {
            return Err(bad(
                expected,
                line_no,
                Problem::SequenceMismatch {
                    found: entry.header.seq,
                },
            ));
        }
        if entry.header.kind == RecordKind::SegmentPruned {
            let record = full_record(entry.body)
                .and_then(|r| serde_json::from_value::<SegmentPruned>(r.payload).ok());
            let Some(record) = record else {
                return Err(bad(
                    expected,
                    line_no,
                    Problem::Malformed("bad segment_pruned payload".to_owned()),
                ));
            };
            pruned.push(record);
        }
        if entry.header.kind == RecordKind::Checkpoint {
            let cp = full_record(entry.body)
                .and_then(|r| serde_json::from_value::<Checkpoint>(r.payload).ok());
            let Some(cp) = cp else {
                return Err(bad(
                    expected,
                    line_no,
                    Problem::Malformed("bad checkpoint payload".to_owned()),
                ));
            };
            if !cp.signature_valid(key) {
                return Err(bad(expected, line_no, Problem::BadCheckpointSignature));
            }
            if expected == 0 || cp.seq != expected - 1 || cp.hash != hex(&last) {
                let from = report
                    .last_checkpoint_seq
                    .map_or(report.first_seq, |s| s + 1);
                let line = line_no - (expected - from);
                return Err(bad(
                    from,
                    line,
                    Problem::CheckpointMismatch {
                        checkpoint: expected,
                    },
                ));
            }
            report.checkpoints += 1;
            report.last_checkpoint_seq = Some(cp.seq);
            report.unsigned_tail = 0;
        } else {
            report.unsigned_tail += 1;
        }
        if let Some(a) = anchor
            && a.seq == expected
        {
            anchor_seen = true;
            if a.hash != hash {
                let from = report
                    .last_checkpoint_seq
                    .map_or(report.first_seq, |s| s + 1);
                return Err(bad(
                    from,
                    line_no - (expected - from),
                    Problem::AnchorMismatch { anchored: a.seq },
                ));
            }
        }
        if window.len() == LOOKBACK {
            window.pop_front();
        }
        window.push_back(hash);
        last = hash;
        last_hex = hash_hex;
        report.records += 1;
        report.head = Some(Head {
            seq: expected,
            hash,
        });
        expected += 1;
    }
    if let Some(a) = anchor
        && !anchor_seen
        && a.seq >= expected
    {
        return Err(bad(
            expected,
            line_no + 1,
            Problem::MissingRecords { anchored: a.seq },
        ));
    }
    Ok(report)
}

enum Break {
    /// The record at the current position is the first bad one.
    At(Problem),
    /// Records from this seq up to the current position were inserted.
    InsertedFrom(u64),
}

/// The hashes and seq of a line that does not link to the previous one.
#[derive(Clone, Copy)]
struct Link {
    hash: [u8; 32],
    prev: [u8; 32],
    seq: u64,
}

/// What verification knows of the chain so far.
struct Chain<'a> {
    /// Recent hashes, newest last; position `i` is seq `expected - window.len() + i`.
    window: &'a VecDeque<[u8; 32]>,
    /// The seq the current position should have.
    expected: u64,
    /// Hash of the previous record.
    last: [u8; 32],
    first_seq: u64,
    /// `prev_hash` of the first record.
    base_prev: [u8; 32],
}

/// The current line is self-consistent but does not link to the previous one: decide which
/// record is the first bad one.
fn classify_break(
    entry: Link,
    chain: &Chain<'_>,
    lines: &mut LineReader<'_>,
    anchor: Option<Head>,
) -> Result<Break, VerifyError> {
    let Chain {
        window,
        expected,
        last,
        first_seq,
        base_prev,
    } = *chain;
    // A replayed copy of a record already seen.
    if window.contains(&entry.hash) {
        return Ok(Break::At(Problem::Inserted));
    }
    // It links to an earlier record `k`: either it is genuine and the records after `k` were
    // inserted, or it is itself an inserted record.
    let genesis_link = window.len() as u64 == expected - first_seq && entry.prev == base_prev;
    let linked = window
        .iter()
        .rposition(|h| *h == entry.prev)
        .map(|i| expected - window.len() as u64 + i as u64 + 1)
        .or(genesis_link.then_some(first_seq));
    if let Some(first_inserted) = linked {
        let next = lines.peek_line()?;
        let next_prev = next
            .and_then(|l| parse_line(l).ok())
            .and_then(|e| e.hashes().ok())
            .map(|(_, prev)| prev);
        let genuine = match next_prev {
            Some(p) if p == entry.hash => true,
            Some(p) if p == last => false,
            _ => anchor.is_some_and(|a| a.seq == entry.seq && a.hash == entry.hash),
        };
        return Ok(if genuine {
            Break::InsertedFrom(first_inserted)
        } else {
            Break::At(Problem::Inserted)
        });
    }
    if entry.seq > expected {
        // Is the missing record further on (moved) or gone?
        while let Some(line) = lines.next_line()? {
            if line_seq(&line) == Some(expected) {
                return Ok(Break::At(Problem::Reordered));
            }
        }
        return Ok(Break::At(Problem::Deleted {
            resumes_at: entry.seq,
        }));
    }
    Ok(Break::At(Problem::Inserted))
}

fn full_record(body: &[u8]) -> Option<AuditRecord> {
    serde_json::from_slice(body).ok()
}

/// Lines with their newline, with one line of lookahead.
struct LineReader<'r> {
    reader: &'r mut dyn BufRead,
    peeked: Option<Option<Vec<u8>>>,
}

impl<'r> LineReader<'r> {
    fn new(reader: &'r mut dyn BufRead) -> Self {
        Self {
            reader,
            peeked: None,
        }
    }

    fn read_raw(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf)?;
        Ok((n > 0).then_some(buf))
    }

    fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self.peeked.take() {
            Some(line) => Ok(line),
            None => self.read_raw(),
        }
    }

    fn peek_line(&mut self) -> io::Result<Option<&[u8]>> {
        if self.peeked.is_none() {
            let line = self.read_raw()?;
            self.peeked = Some(line);
        }
        Ok(self.peeked.as_ref().and_then(|l| l.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_hash_is_sha256_of_prev_and_body() {
        let prev = [0xa5u8; 32];
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let mut expected = Sha256::new();
            expected.update(prev);
            expected.update(&data[..len]);
            let expected: [u8; 32] = expected.finalize().into();
            assert_eq!(chain_hash(&prev, &data[..len]), expected, "length {len}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let h: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(decode_hex32(&hex32(&h)), Some(h));
        assert_eq!(hex32(&h).to_vec(), hex(&h).into_bytes());
        assert_eq!(decode_hex32(b"zz"), None);
    }
}
