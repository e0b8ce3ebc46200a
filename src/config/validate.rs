//! Raw files -> validated `model::Config`: every semantic check of `docs/configuration.md`,
//! collecting every problem instead of stopping at the first.
//!
//! Checks run on whatever deserialized. References to items that failed to deserialize
//! (a room with a typo in one key, a profile file with a bad point) are not reported
//! again as dangling: the first problem already explains them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, Weekday};
use chrono_tz::Tz;

use super::error::ConfigError;
use super::locate::{Locator, Segment, segments};
use super::model::*;
use super::raw::*;
use crate::rules::overrides::RuleOverride;

/// One parsed file: where it is, how to find lines in it, what was skipped.
#[derive(Debug)]
pub(crate) struct Source {
    /// Path as shown to the user (joined from the directory they gave).
    pub file: PathBuf,
    /// Path relative to the configuration directory, e.g. `sites/dc.toml`.
    pub rel: String,
    /// Spans, when the file parsed.
    pub locator: Option<Locator>,
    /// The TOML, secrets removed.
    pub table: toml::Table,
    /// Paths skipped during deserialization.
    pub dead: BTreeSet<String>,
}

impl Source {
    pub(crate) fn err(
        &self,
        path: impl Into<String>,
        found: impl Into<String>,
        expected: impl Into<String>,
    ) -> ConfigError {
        let path = path.into();
        ConfigError {
            file: self.file.clone(),
            line: self.locator.as_ref().and_then(|l| l.line_of(&path)),
            path,
            found: found.into(),
            expected: expected.into(),
        }
    }

    /// The value at a key path of the (secret-free) file.
    fn value_at(&self, path: &str) -> Option<&toml::Value> {
        let mut segs = segments(path).into_iter();
        let Some(Segment::Key(first)) = segs.next() else {
            return None;
        };
        let mut v = self.table.get(first)?;
        for s in segs {
            v = match (s, v) {
                (Segment::Key(k), toml::Value::Table(t)) => t.get(k)?,
                (Segment::Index(i), toml::Value::Array(a)) => a.get(i)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// Original indices of the elements of `array_path` that survived deserialization, in
    /// order: the n-th parsed element came from `indices(..)[n]`.
    pub(crate) fn indices(&self, array_path: &str) -> Vec<usize> {
        match self.value_at(array_path) {
            Some(toml::Value::Array(a)) => (0..a.len())
                .filter(|i| !self.dead.contains(&format!("{array_path}[{i}]")))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// True when something at or under `path` was skipped: the item is incomplete, its
    /// problem is already reported, and semantic checks leave it alone.
    pub(crate) fn tainted(&self, path: &str) -> bool {
        let dot = format!("{path}.");
        let idx = format!("{path}[");
        self.dead
            .range(path.to_string()..)
            .take_while(|d| d.starts_with(path))
            .any(|d| d == path || d.starts_with(&dot) || d.starts_with(&idx))
    }

    /// The parsed elements of `array_path` with their original indices, leaving out
    /// tainted ones.
    pub(crate) fn live<'a, T>(&self, array_path: &str, items: &'a [T]) -> Vec<(usize, &'a T)> {
        self.indices(array_path)
            .into_iter()
            .zip(items)
            .filter(|(i, _)| !self.tainted(&format!("{array_path}[{i}]")))
            .collect()
    }

    /// The string `key` of each element of `array_path` that is dead or tainted.
    fn dead_ids(&self, array_path: &str, key: &str) -> Vec<String> {
        match self.value_at(array_path) {
            Some(toml::Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter(|(i, _)| self.tainted(&format!("{array_path}[{i}]")))
                .filter_map(|(_, v)| v.get(key).and_then(|v| v.as_str()).map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Everything that deserialized, per file.
pub(crate) struct Parsed {
    pub daemon: Option<(Source, Option<RawDaemonFile>)>,
    pub sites: Vec<(Source, Option<RawSiteFile>)>,
    pub profiles: Vec<(Source, Option<RawProfileFile>)>,
}

/// `"a"`, quoted like TOML.
fn q(s: &str) -> String {
    format!("{s:?}")
}

/// `(one of: a, b, c, ...)` with at most 8 names.
pub(crate) fn one_of<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let items: Vec<String> = items.into_iter().map(|s| s.as_ref().to_string()).collect();
    if items.is_empty() {
        return "(none is defined)".to_string();
    }
    let mut s = items
        .iter()
        .take(8)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 8 {
        s.push_str(", ...");
    }
    format!("(one of: {s})")
}

const ID_EXPECTED: &str = "an id of letters, digits, '-', '_' or '.' (not empty)";

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn check_id(src: &Source, path: &str, id: &str, errors: &mut Vec<ConfigError>) -> bool {
    if valid_id(id) {
        true
    } else {
        errors.push(src.err(path, q(id), ID_EXPECTED));
        false
    }
}

fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return None;
    }
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

fn parse_tz(src: &Source, path: &str, s: &str, errors: &mut Vec<ConfigError>) -> Option<Tz> {
    match s.parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            errors.push(src.err(
                path,
                q(s),
                "an IANA time zone name such as \"Asia/Jakarta\"",
            ));
            None
        }
    }
}

fn parse_addr(
    src: &Source,
    path: &str,
    s: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Some(a),
        _ => {
            errors.push(src.err(
                path,
                q(s),
                "an address IP:PORT with a port above 0, e.g. \"127.0.0.1:15001\"",
            ));
            None
        }
    }
}

fn positive(src: &Source, path: &str, v: f64, errors: &mut Vec<ConfigError>) {
    if v.is_nan() || v <= 0.0 {
        errors.push(src.err(path, v.to_string(), "a number above 0"));
    }
}

fn nonzero(src: &Source, path: &str, v: u64, errors: &mut Vec<ConfigError>) {
    if v == 0 {
        errors.push(src.err(path, "0", "an integer above 0"));
    }
}

fn secret_ref(
    src: &Source,
    path: &str,
    name: &str,
    env: &Option<String>,
    file: &Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<SecretRef> {
    match (env, file) {
        (Some(_), Some(_)) => {
            errors.push(src.err(
                format!("{path}{name}_file"),
                format!("both {name}_env and {name}_file"),
                format!("one of {name}_env and {name}_file"),
            ));
            None
        }
        (Some(e), None) => {
            if e.is_empty() {
                errors.push(src.err(
                    format!("{path}{name}_env"),
                    "\"\"",
                    "the name of an environment variable",
                ));
            }
            Some(SecretRef::Env(e.clone()))
        }
        (None, Some(f)) => {
            if f.is_empty() {
                errors.push(src.err(format!("{path}{name}_file"), "\"\"", "a file path"));
            }
            match credential_path(f, std::env::var_os(CREDENTIALS_DIRECTORY).as_deref()) {
                Ok(file) => Some(SecretRef::File(file)),
                Err(expected) => {
                    errors.push(src.err(format!("{path}{name}_file"), q(f), expected));
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// The variable systemd sets to the service's credentials directory (`LoadCredential=`).
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The path of a `*_file` secret: a value starting with `$CREDENTIALS_DIRECTORY/` (or
/// `${CREDENTIALS_DIRECTORY}/`) is a systemd credential, resolved in `credentials_dir`,
/// the variable's value. Unset (check-config from a shell), the path stays as written and
/// reading it at start fails naming it. No other variable is expanded: a path starting
/// with another `$` is an error rather than a file name nobody meant.
fn credential_path(
    file: &str,
    credentials_dir: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, &'static str> {
    let name = ["$CREDENTIALS_DIRECTORY/", "${CREDENTIALS_DIRECTORY}/"]
        .iter()
        .find_map(|prefix| file.strip_prefix(prefix));
    match name {
        Some(name) if name.is_empty() || name.contains('/') => {
            Err("$CREDENTIALS_DIRECTORY/ followed by a credential name (no further /)")
        }
        Some(name) => Ok(match credentials_dir.filter(|dir| !dir.is_empty()) {
            Some(dir) => Path::new(dir).join(name),
            None => PathBuf::from(file),
        }),
        None if file.starts_with('$') => Err(
            "a file path; the only variable expanded is $CREDENTIALS_DIRECTORY (systemd credentials)",
        ),
        None => Ok(PathBuf::from(file)),
    }
}

fn check_url(src: &Source, path: &str, url: &str, errors: &mut Vec<ConfigError>) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(|r| r.is_empty()) {
        errors.push(src.err(path, q(url), "an http:// or https:// URL"));
    }
}

// ---------------------------------------------------------------------------------------
// entry point

/// Validates everything; `Some` only when no problem was found (including `errors`
/// already collected by the loader).
pub(crate) fn validate(parsed: &Parsed, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let (profiles, broken_profiles) = validate_profiles(&parsed.profiles, errors);
    let daemon = parsed
        .daemon
        .as_ref()
        .and_then(|(src, raw)| raw.as_ref().map(|raw| (src, raw)))
        .map(|(src, raw)| validate_daemon(src, raw, errors));
    let broken_brokers: BTreeSet<String> = parsed
        .daemon
        .as_ref()
        .map(|(src, _)| src.dead_ids("mqtt_brokers", "id").into_iter().collect())
        .unwrap_or_default();
    let brokers = daemon
        .as_ref()
        .map(|d| d.brokers.clone())
        .unwrap_or_default();
    let refs = Refs {
        profiles: &profiles,
        broken_profiles: &broken_profiles,
        brokers: &brokers,
        broken_brokers: &broken_brokers,
        daemon_parsed: daemon.is_some(),
        priority: daemon.as_ref().and_then(|d| d.priority.as_ref()),
    };
    let mut sites = Vec::new();
    let mut endpoints: HashMap<(SocketAddr, u8), String> = HashMap::new();
    let mut site_ids: BTreeMap<String, String> = BTreeMap::new();
    let mut tuned_endpoints: HashMap<SocketAddr, String> = HashMap::new();
    // Reader serials across sites: a ZKTeco push is routed by serial alone.
    let mut reader_serials: HashMap<String, String> = HashMap::new();
    for (src, raw) in &parsed.sites {
        let Some(raw) = raw else { continue };
        if let Some(access) = &raw.access {
            for (i, r) in src.live("access.readers", &access.readers) {
                match reader_serials.get(&r.serial) {
                    Some(first) if first != &src.rel => errors.push(src.err(
                        format!("access.readers[{i}].serial"),
                        format!("{}, already a reader of {first}", q(&r.serial)),
                        "each reader serial in one site only (readers push by serial)",
                    )),
                    Some(_) => {}
                    None => {
                        reader_serials.insert(r.serial.clone(), src.rel.clone());
                    }
                }
            }
        }
        if let Some(site) = &raw.site {
            if let Some(first) = site_ids.get(&site.id) {
                errors.push(src.err(
                    "site.id",
                    q(&site.id),
                    format!("a site id not already used by {first}"),
                ));
            } else {
                site_ids.insert(site.id.clone(), src.rel.clone());
            }
        }
        if let Some(site) = validate_site(src, raw, &refs, &mut endpoints, errors) {
            // An endpoint's settings come from one site only (twice in one site is
            // reported by `validate_modbus_endpoints`).
            let mut this_site = BTreeSet::new();
            for (i, e) in src.live("modbus_endpoints", &raw.modbus_endpoints) {
                let Ok(addr) = e.endpoint.parse::<SocketAddr>() else {
                    continue;
                };
                if !site.modbus_endpoints.contains_key(&addr) || !this_site.insert(addr) {
                    continue;
                }
                if let Some(first) = tuned_endpoints.get(&addr) {
                    errors.push(src.err(
                        format!("modbus_endpoints[{i}].endpoint"),
                        format!("{addr}, already listed by {first}"),
                        "each endpoint in the [[modbus_endpoints]] of one site only",
                    ));
                } else {
                    tuned_endpoints.insert(addr, src.rel.clone());
                }
            }
            sites.push(site);
        }
    }
    if !errors.is_empty() {
        return None;
    }
    let d = daemon?;
    Some(Config {
        daemon: d.daemon?,
        calendar: d.calendar?,
        priority: d.priority?,
        brokers: d.brokers,
        influxdb: d.influxdb,
        webhook: d.webhook,
        servicenow: d.servicenow,
        pagerduty: d.pagerduty,
        dispatch: d.dispatch,
        auth: d.auth,
        access: d.access,
        modbus: d.modbus,
        alarms: d.alarms,
        profiles,
        sites,
    })
}

// ---------------------------------------------------------------------------------------
// dcguard.toml

struct DaemonPart {
    daemon: Option<Daemon>,
    calendar: Option<Calendar>,
    priority: Option<PriorityPolicy>,
    brokers: BTreeMap<String, Broker>,
    influxdb: Option<Influxdb>,
    webhook: Option<Webhook>,
    servicenow: Option<ServiceNow>,
    pagerduty: Option<PagerDuty>,
    dispatch: Dispatch,
    auth: Option<Auth>,
    access: AccessSettings,
    modbus: ModbusPolling,
    alarms: AlarmSettings,
}

/// Reports `value` at `path` unless it is within `range`; `expected` says what is.
fn within<T>(
    src: &Source,
    path: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    expected: &str,
    errors: &mut Vec<ConfigError>,
) -> bool
where
    T: PartialOrd + ToString,
{
    let ok = range.contains(&value);
    if !ok {
        errors.push(src.err(path, value.to_string(), expected));
    }
    ok
}

/// Ranges of the Modbus timing keys, shared by `[modbus]`, `[[modbus_endpoints]]` and
/// devices.
const REQUEST_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 10..=60_000;
const REQUEST_TIMEOUT_EXPECTED: &str = "10 to 60000 ms";
const MAX_CONNECTIONS: std::ops::RangeInclusive<u8> = 1..=16;
const MAX_CONNECTIONS_EXPECTED: &str = "1 to 16 connections (each carries one request at a time)";
const PAUSE_MS: std::ops::RangeInclusive<u64> = 0..=10_000;
const PAUSE_EXPECTED: &str = "0 to 10000 ms";

/// `[modbus]` of `dcguard.toml`.
fn validate_modbus(src: &Source, m: &RawModbus, errors: &mut Vec<ConfigError>) -> ModbusPolling {
    let p = "modbus";
    within(
        src,
        &format!("{p}.request_timeout_ms"),
        m.request_timeout_ms,
        REQUEST_TIMEOUT_MS,
        REQUEST_TIMEOUT_EXPECTED,
        errors,
    );
    within(
        src,
        &format!("{p}.connect_timeout_ms"),
        m.connect_timeout_ms,
        10..=60_000,
        "10 to 60000 ms",
        errors,
    );
    within(
        src,
        &format!("{p}.backoff_min_ms"),
        m.backoff_min_ms,
        10..=60_000,
        "10 to 60000 ms",
        errors,
    );
    let min_secs = m.backoff_min_ms.div_ceil(1000).max(1);
    within(
        src,
        &format!("{p}.backoff_max_secs"),
        m.backoff_max_secs,
        min_secs..=3600,
        &format!("{min_secs} to 3600 seconds (not below backoff_min_ms)"),
        errors,
    );
    within(
        src,
        &format!("{p}.busy_retries"),
        m.busy_retries,
        0..=10,
        "0 to 10 retries",
        errors,
    );
    within(
        src,
        &format!("{p}.busy_retry_delay_ms"),
        m.busy_retry_delay_ms,
        0..=10_000,
        "0 to 10000 ms",
        errors,
    );
    within(
        src,
        &format!("{p}.max_connections_per_endpoint"),
        m.max_connections_per_endpoint,
        MAX_CONNECTIONS,
        MAX_CONNECTIONS_EXPECTED,
        errors,
    );
    within(
        src,
        &format!("{p}.pause_between_requests_ms"),
        m.pause_between_requests_ms,
        PAUSE_MS,
        PAUSE_EXPECTED,
        errors,
    );
    ModbusPolling {
        request_timeout: Duration::from_millis(m.request_timeout_ms),
        connect_timeout: Duration::from_millis(m.connect_timeout_ms),
        backoff_min: Duration::from_millis(m.backoff_min_ms),
        backoff_max: Duration::from_secs(m.backoff_max_secs),
        busy_retries: m.busy_retries,
        busy_retry_delay: Duration::from_millis(m.busy_retry_delay_ms),
        endpoint: EndpointSettings {
            max_connections: m.max_connections_per_endpoint,
            pause_between_requests: Duration::from_millis(m.pause_between_requests_ms),
            close_after_scan: m.close_after_scan,
            request_timeout: None,
        },
    }
}

fn validate_daemon(src: &Source, raw: &RawDaemonFile, errors: &mut Vec<ConfigError>) -> DaemonPart {
    let required = |key: &str, present: bool, errors: &mut Vec<ConfigError>| {
        if !present && !src.tainted(key) {
            errors.push(src.err(
                key,
                "nothing",
                format!("a value for required key {}", q(key)),
            ));
        }
    };
    required("daemon", raw.daemon.is_some(), errors);
    required("calendar", raw.calendar.is_some(), errors);
    required("priority", raw.priority.is_some(), errors);
    let daemon = raw.daemon.as_ref().map(|d| {
        if d.data_dir.is_empty() {
            errors.push(src.err("daemon.data_dir", "\"\"", "a directory path"));
        }
        let listen = parse_addr(src, "daemon.listen", &d.listen, errors)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        nonzero(
            src,
            "daemon.stale_after_intervals",
            u64::from(d.stale_after_intervals),
            errors,
        );
        Daemon {
            data_dir: PathBuf::from(&d.data_dir),
            listen,
            shutdown_grace: Duration::from_secs(d.shutdown_grace_secs),
            stale_after_intervals: d.stale_after_intervals,
        }
    });

    let calendar = raw
        .calendar
        .as_ref()
        .map(|c| validate_calendar(src, c, errors));
    let priority = raw
        .priority
        .as_ref()
        .map(|p| validate_priority(src, p, errors));

    let mut brokers = BTreeMap::new();
    for (i, b) in src.live("mqtt_brokers", &raw.mqtt_brokers) {
        let p = format!("mqtt_brokers[{i}]");
        check_id(src, &format!("{p}.id"), &b.id, errors);
        if b.host.is_empty() {
            errors.push(src.err(format!("{p}.host"), "\"\"", "a host name or address"));
        }
        nonzero(src, &format!("{p}.port"), u64::from(b.port), errors);
        nonzero(
            src,
            &format!("{p}.keep_alive_secs"),
            b.keep_alive_secs,
            errors,
        );
        if b.client_id.is_empty() {
            errors.push(src.err(format!("{p}.client_id"), "\"\"", "an MQTT client id"));
        }
        let password = secret_ref(
            src,
            &format!("{p}."),
            "password",
            &b.password_env,
            &b.password_file,
            errors,
        );
        let broker = Broker {
            id: b.id.clone(),
            host: b.host.clone(),
            port: b.port,
            tls: b.tls,
            client_id: b.client_id.clone(),
            keep_alive: Duration::from_secs(b.keep_alive_secs),
            username: b.username.clone(),
            password,
        };
        if brokers.insert(b.id.clone(), broker).is_some() {
            errors.push(src.err(
                format!("{p}.id"),
                format!("duplicate broker id {}", q(&b.id)),
                "each broker id once",
            ));
        }
    }

    let influxdb = raw.influxdb.as_ref().map(|r| {
        check_url(src, "influxdb.url", &r.url, errors);
        for (key, value) in [
            ("batch_max_points", r.batch_max_points),
            ("flush_interval_ms", r.flush_interval_ms),
            ("queue_capacity", r.queue_capacity),
            ("spool_max_mib", r.spool_max_mib),
            ("spool_max_age_h", r.spool_max_age_h),
        ] {
            nonzero(src, &format!("influxdb.{key}"), value, errors);
        }
        if !(1..=64).contains(&r.max_in_flight) {
            errors.push(src.err(
                "influxdb.max_in_flight",
                r.max_in_flight.to_string(),
                "1 to 64 concurrent write requests",
            ));
        }
        Influxdb {
            batch_max_points: usize::try_from(r.batch_max_points).unwrap_or(usize::MAX),
            flush_interval: Duration::from_millis(r.flush_interval_ms),
            queue_capacity: usize::try_from(r.queue_capacity).unwrap_or(usize::MAX),
            spool_max_bytes: r.spool_max_mib.saturating_mul(1 << 20),
            spool_max_age: Duration::from_secs(r.spool_max_age_h.saturating_mul(3600)),
            gzip: r.gzip,
            max_in_flight: usize::try_from(r.max_in_flight).unwrap_or(usize::MAX),
            enabled: r.enabled,
            url: r.url.clone(),
            org: r.org.clone(),
            bucket: r.bucket.clone(),
            token: secret_ref(
                src,
                "influxdb.",
                "token",
                &r.token_env,
                &r.token_file,
                errors,
            ),
        }
    });
    let webhook = raw
        .ticketing
        .as_ref()
        .and_then(|t| t.webhook.as_ref())
        .map(|w| {
            check_url(src, "ticketing.webhook.url", &w.url, errors);
            let hmac_secret = secret_ref(
                src,
                "ticketing.webhook.",
                "hmac_secret",
                &w.hmac_secret_env,
                &w.hmac_secret_file,
                errors,
            );
            if w.enabled && hmac_secret.is_none() {
                errors.push(src.err(
                    "ticketing.webhook",
                    "an enabled webhook without a signing key",
                    "hmac_secret_env = \"VAR\" or hmac_secret_file = \"PATH\"",
                ));
            }
            Webhook {
                enabled: w.enabled,
                url: w.url.clone(),
                hmac_secret,
            }
        });
    let (servicenow, pagerduty, dispatch) = raw
        .ticketing
        .as_ref()
        .map(|t| validate_ticketing(src, t, errors))
        .unwrap_or_default();
    let auth = raw.auth.as_ref().and_then(|a| {
        let r = secret_ref(
            src,
            "auth.",
            "tokens",
            &a.tokens_env,
            &a.tokens_file,
            errors,
        );
        if r.is_none() {
            errors.push(src.err(
                "auth",
                "no tokens reference",
                "tokens_file = \"PATH\" or tokens_env = \"VAR\"",
            ));
        }
        let metrics_access = match a.metrics_access.as_deref() {
            None | Some("loopback") => MetricsAccess::Loopback,
            Some("token") => MetricsAccess::Token,
            Some(other) => {
                errors.push(src.err(
                    "auth.metrics_access",
                    format!("{other:?}"),
                    "\"loopback\" or \"token\"",
                ));
                MetricsAccess::Loopback
            }
        };
        r.map(|tokens| Auth {
            tokens,
            metrics_access,
        })
    });
    let access = validate_access_settings(src, &raw.access.clone().unwrap_or_default(), errors);
    let modbus = validate_modbus(src, &raw.modbus.clone().unwrap_or_default(), errors);
    let raw_alarms = raw.alarms.clone().unwrap_or_default();
    within(
        src,
        "alarms.shelve_max_h",
        raw_alarms.shelve_max_h,
        1..=168,
        "1..=168 hours",
        errors,
    );
    let alarms = AlarmSettings {
        shelve_max: Duration::from_secs(raw_alarms.shelve_max_h.clamp(1, 168) * 3600),
    };
    DaemonPart {
        alarms,
        daemon,
        calendar,
        priority,
        brokers,
        influxdb,
        webhook,
        servicenow,
        pagerduty,
        dispatch,
        auth,
        modbus,
        access,
    }
}

/// `[access]` of `dcguard.toml`.
fn validate_access_settings(
    src: &Source,
    a: &RawAccessSettings,
    errors: &mut Vec<ConfigError>,
) -> AccessSettings {
    if a.settle_secs > 30 {
        errors.push(src.err(
            "access.settle_secs",
            a.settle_secs.to_string(),
            "0..=30 (findings wait this long for out-of-order events; every second here delays each finding)",
        ));
    }
    nonzero(
        src,
        "access.max_clock_skew_secs",
        a.max_clock_skew_secs,
        errors,
    );
    if a.repeated_denied_count < 2 {
        errors.push(src.err(
            "access.repeated_denied_count",
            a.repeated_denied_count.to_string(),
            "at least 2 (one denial is not a repetition)",
        ));
    }
    nonzero(
        src,
        "access.repeated_denied_window_min",
        a.repeated_denied_window_min,
        errors,
    );
    for (key, value, min, anchor) in [
        (
            "access_log_retention_months",
            a.access_log_retention_months,
            MIN_ACCESS_LOG_RETENTION_MONTHS,
            "PCI DSS 10.5.1",
        ),
        (
            "visitor_log_retention_months",
            a.visitor_log_retention_months,
            MIN_VISITOR_LOG_RETENTION_MONTHS,
            "PCI DSS 9.3.4",
        ),
    ] {
        if !(min..=120).contains(&value) {
            errors.push(src.err(
                format!("access.{key}"),
                value.to_string(),
                format!("{min}..=120 months (at least {min}: {anchor})"),
            ));
        }
    }
    AccessSettings {
        settle: Duration::from_secs(a.settle_secs.min(30)),
        max_clock_skew: Duration::from_secs(a.max_clock_skew_secs),
        repeated_denied_count: usize::try_from(a.repeated_denied_count).unwrap_or(usize::MAX),
        repeated_denied_window: Duration::from_secs(
            a.repeated_denied_window_min.saturating_mul(60),
        ),
        shift_grace: Duration::from_secs(a.shift_grace_min.saturating_mul(60)),
        access_log_retention_months: a.access_log_retention_months,
        visitor_log_retention_months: a.visitor_log_retention_months,
    }
}

/// `[ticketing.servicenow]`, `[ticketing.pagerduty]` and `[ticketing.dispatch]`.
fn validate_ticketing(
    src: &Source,
    t: &RawTicketing,
    errors: &mut Vec<ConfigError>,
) -> (Option<ServiceNow>, Option<PagerDuty>, Dispatch) {
    let servicenow = t.servicenow.as_ref().map(|r| {
        let p = "ticketing.servicenow";
        check_url(src, &format!("{p}.instance_url"), &r.instance_url, errors);
        check_id(src, &format!("{p}.table"), &r.table, errors);
        if r.username.is_empty() {
            errors.push(src.err(format!("{p}.username"), "\"\"", "a user name"));
        }
        let password = secret_ref(
            src,
            &format!("{p}."),
            "password",
            &r.password_env,
            &r.password_file,
            errors,
        );
        if r.enabled && password.is_none() {
            errors.push(src.err(
                p,
                "an enabled ServiceNow adapter without a password",
                "password_env = \"VAR\" or password_file = \"PATH\"",
            ));
        }
        ServiceNow {
            enabled: r.enabled,
            instance_url: r.instance_url.clone(),
            table: r.table.clone(),
            username: r.username.clone(),
            password,
            assignment_group: r.assignment_group.clone(),
            caller_id: r.caller_id.clone(),
        }
    });
    let pagerduty = t.pagerduty.as_ref().map(|r| {
        let p = "ticketing.pagerduty";
        check_url(src, &format!("{p}.events_url"), &r.events_url, errors);
        let routing_key = secret_ref(
            src,
            &format!("{p}."),
            "routing_key",
            &r.routing_key_env,
            &r.routing_key_file,
            errors,
        );
        if r.enabled && routing_key.is_none() {
            errors.push(src.err(
                p,
                "an enabled PagerDuty adapter without a routing key",
                "routing_key_env = \"VAR\" or routing_key_file = \"PATH\"",
            ));
        }
        PagerDuty {
            enabled: r.enabled,
            events_url: r.events_url.clone(),
            routing_key,
        }
    });
    let d = t.dispatch.clone().unwrap_or_default();
    let p = "ticketing.dispatch";
    if !(1..=60).contains(&d.request_timeout_secs) {
        errors.push(src.err(
            format!("{p}.request_timeout_secs"),
            d.request_timeout_secs.to_string(),
            "1 to 60 seconds",
        ));
    }
    nonzero(
        src,
        &format!("{p}.retry_min_secs"),
        d.retry_min_secs,
        errors,
    );
    if d.retry_max_secs < d.retry_min_secs || d.retry_max_secs > 3600 {
        errors.push(src.err(
            format!("{p}.retry_max_secs"),
            d.retry_max_secs.to_string(),
            format!(
                "retry_min_secs ({}) to 3600 seconds (the receivers keep idempotency keys for 24 h)",
                d.retry_min_secs
            ),
        ));
    }
    if !(1..=64).contains(&d.max_in_flight) {
        errors.push(src.err(
            format!("{p}.max_in_flight"),
            d.max_in_flight.to_string(),
            "1 to 64 concurrent requests",
        ));
    }
    if !(1..=23).contains(&d.retry_horizon_h) {
        errors.push(src.err(
            format!("{p}.retry_horizon_h"),
            d.retry_horizon_h.to_string(),
            "1 to 23 hours (below the receivers' 24 h idempotency-key retention)",
        ));
    }
    within(
        src,
        &format!("{p}.delivery_failing_after_secs"),
        d.delivery_failing_after_secs,
        1..=3600,
        "1 to 3600 seconds",
        errors,
    );
    let dispatch = Dispatch {
        delivery_failing_after: Duration::from_secs(d.delivery_failing_after_secs.clamp(1, 3600)),
        request_timeout: Duration::from_secs(d.request_timeout_secs),
        retry_min: Duration::from_secs(d.retry_min_secs),
        retry_max: Duration::from_secs(d.retry_max_secs),
        max_in_flight: d.max_in_flight,
        retry_horizon: Duration::from_secs(d.retry_horizon_h.min(23) * 3600),
    };
    (servicenow, pagerduty, dispatch)
}

fn validate_calendar(src: &Source, c: &RawCalendar, errors: &mut Vec<ConfigError>) -> Calendar {
    let time_zone = parse_tz(src, "calendar.time_zone", &c.time_zone, errors).unwrap_or(Tz::UTC);
    let mut working_days = BTreeSet::new();
    for (i, d) in src.live("calendar.working_days", &c.working_days) {
        let day = match d.as_str() {
            "mon" => Some(Weekday::Mon),
            "tue" => Some(Weekday::Tue),
            "wed" => Some(Weekday::Wed),
            "thu" => Some(Weekday::Thu),
            "fri" => Some(Weekday::Fri),
            "sat" => Some(Weekday::Sat),
            "sun" => Some(Weekday::Sun),
            _ => None,
        };
        let path = format!("calendar.working_days[{i}]");
        match day {
            None => errors.push(src.err(path, q(d), "one of: mon, tue, wed, thu, fri, sat, sun")),
            Some(day) => {
                if !working_days.insert(WeekdayOrd::new(day)) {
                    errors.push(src.err(path, format!("{} again", q(d)), "each day once"));
                }
            }
        }
    }
    let mut time = |key: &str, s: &str| {
        let t = parse_hhmm(s);
        if t.is_none() {
            errors.push(src.err(
                format!("calendar.{key}"),
                q(s),
                "a time HH:MM such as \"08:00\"",
            ));
        }
        t
    };
    let start = time("working_hours_start", &c.working_hours_start);
    let end = time("working_hours_end", &c.working_hours_end);
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        errors.push(src.err(
            "calendar.working_hours_end",
            q(&c.working_hours_end),
            format!(
                "a time after working_hours_start ({})",
                c.working_hours_start
            ),
        ));
    }
    let mut holidays = BTreeSet::new();
    for (i, h) in src.live("calendar.holidays", &c.holidays) {
        let path = format!("calendar.holidays[{i}]");
        match parse_date(h) {
            None => errors.push(src.err(path, q(h), "a date YYYY-MM-DD such as \"2026-01-01\"")),
            Some(d) => {
                if !holidays.insert(d) {
                    errors.push(src.err(path, format!("{} again", q(h)), "each holiday once"));
                }
            }
        }
    }
    Calendar {
        time_zone,
        working_days,
        working_hours_start: start.unwrap_or(NaiveTime::MIN),
        working_hours_end: end.unwrap_or(NaiveTime::MIN),
        holidays,
    }
}

fn validate_priority(
    src: &Source,
    p: &RawPriority,
    errors: &mut Vec<ConfigError>,
) -> PriorityPolicy {
    let mut matrix = [[Priority::P5; 3]; 3];
    let rows = [
        ("high", &p.matrix.high),
        ("medium", &p.matrix.medium),
        ("low", &p.matrix.low),
    ];
    for (u, (uname, row)) in rows.iter().enumerate() {
        let Some(row) = row else {
            errors.push(src.err(
                format!("priority.matrix.{uname}"),
                "nothing",
                format!("a row {uname} = {{ high = \"P.\", medium = \"P.\", low = \"P.\" }} (urgency {uname})"),
            ));
            continue;
        };
        let cells = [("high", row.high), ("medium", row.medium), ("low", row.low)];
        for (i, (iname, cell)) in cells.iter().enumerate() {
            match cell {
                Some(pr) => matrix[u][i] = *pr,
                None => errors.push(src.err(
                    format!("priority.matrix.{uname}.{iname}"),
                    "nothing",
                    format!("a priority P1..P5 for urgency {uname} x impact {iname}"),
                )),
            }
        }
    }
    let mut targets = [Target {
        hours: 1,
        clock: Clock::TwentyFourSeven,
    }; 5];
    let given = [
        &p.targets.p1,
        &p.targets.p2,
        &p.targets.p3,
        &p.targets.p4,
        &p.targets.p5,
    ];
    for (n, t) in given.iter().enumerate() {
        let name = Priority::ALL[n].as_str();
        match t {
            None => errors.push(src.err(
                format!("priority.targets.{name}"),
                "nothing",
                format!(
                    "a target {name} = {{ target_hours = N, clock = \"24x7\" | \"working_hours\" }}"
                ),
            )),
            Some(t) => {
                nonzero(
                    src,
                    &format!("priority.targets.{name}.target_hours"),
                    u64::from(t.target_hours),
                    errors,
                );
                targets[n] = Target {
                    hours: t.target_hours,
                    clock: t.clock,
                };
            }
        }
    }
    PriorityPolicy { matrix, targets }
}

// ---------------------------------------------------------------------------------------
// profiles

fn validate_profiles(
    files: &[(Source, Option<RawProfileFile>)],
    errors: &mut Vec<ConfigError>,
) -> (BTreeMap<String, Arc<Profile>>, BTreeSet<String>) {
    let mut ok = BTreeMap::new();
    let mut broken = BTreeSet::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (src, raw) in files {
        let Some(raw) = raw else {
            // Remember its id so devices naming it are not reported as dangling.
            if let Some(id) = src
                .table
                .get("profile")
                .and_then(|p| p.get("id"))
                .and_then(|v| v.as_str())
            {
                broken.insert(id.to_string());
            }
            if let Some(stem) = Path::new(&src.rel).file_stem().and_then(|s| s.to_str()) {
                broken.insert(stem.to_string());
            }
            continue;
        };
        let id = raw.profile.id.clone();
        if let Some(first) = seen.get(&id) {
            errors.push(src.err(
                "profile.id",
                q(&id),
                format!("a profile id not already used by {first}"),
            ));
            continue;
        }
        seen.insert(id.clone(), src.rel.clone());
        let before = errors.len();
        let profile = validate_profile(src, raw, errors);
        if errors.len() == before {
            ok.insert(id, Arc::new(profile));
        } else {
            broken.insert(id);
        }
    }
    (ok, broken)
}

fn validate_profile(src: &Source, raw: &RawProfileFile, errors: &mut Vec<ConfigError>) -> Profile {
    let head = &raw.profile;
    check_id(src, "profile.id", &head.id, errors);
    let kind = head.kind;
    let transport = match head.transport {
        Transport::Modbus => {
            if raw.mqtt.is_some() {
                errors.push(src.err(
                    "mqtt",
                    "an [mqtt] table in a Modbus profile",
                    "[mqtt] only with transport = \"mqtt\"",
                ));
            }
            ProfileTransport::Modbus(validate_modbus_profile(src, raw, kind, errors))
        }
        Transport::Mqtt => {
            for (key, present) in [
                ("modbus", raw.modbus.is_some()),
                ("poll", raw.poll.is_some()),
            ] {
                if present {
                    errors.push(src.err(
                        key,
                        format!("a [{key}] table in an MQTT profile"),
                        format!("[{key}] only with transport = \"modbus\""),
                    ));
                }
            }
            ProfileTransport::Mqtt(validate_mqtt_profile(src, raw, kind, errors))
        }
    };
    Profile {
        id: head.id.clone(),
        kind,
        imitates: head.imitates.clone(),
        transport,
    }
}

/// Checks shared by both transports; returns role and unit.
fn point_common(
    src: &Source,
    p: &str,
    pt: &RawPoint,
    kind: DeviceKind,
    names: &mut BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) -> (Option<Role>, Option<Unit>) {
    if pt.name.is_empty() {
        errors.push(src.err(format!("{p}.name"), "\"\"", "a point name"));
    } else if !names.insert(pt.name.clone()) {
        errors.push(src.err(
            format!("{p}.name"),
            format!("duplicate point name {}", q(&pt.name)),
            "each point name once in the profile",
        ));
    }
    let role = match Role::parse(&pt.role) {
        None => {
            errors.push(src.err(
                format!("{p}.role"),
                q(&pt.role),
                format!("a role of kind {kind} {}", one_of(Role::names_of(kind))),
            ));
            None
        }
        Some(r) if r.kind() != kind => {
            errors.push(src.err(
                format!("{p}.role"),
                format!("{} (a role of kind {})", q(&pt.role), r.kind()),
                format!("a role of kind {kind} {}", one_of(Role::names_of(kind))),
            ));
            None
        }
        Some(r) => Some(r),
    };
    let unit = match Unit::parse(&pt.unit) {
        Some(u) => Some(u),
        None => {
            errors.push(src.err(
                format!("{p}.unit"),
                q(&pt.unit),
                format!(
                    "one of: {}",
                    Unit::ALL
                        .iter()
                        .map(|u| if u.is_empty() { "\"\"" } else { u })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            None
        }
    };
    if let (Some(lo), Some(hi)) = (pt.valid_min, pt.valid_max)
        && lo > hi
    {
        errors.push(src.err(
            format!("{p}.valid_max"),
            hi.to_string(),
            format!("a value at or above valid_min ({lo})"),
        ));
    }
    (role, unit)
}

fn forbid(
    src: &Source,
    p: &str,
    key: &str,
    present: bool,
    why: &str,
    errors: &mut Vec<ConfigError>,
) {
    if present {
        errors.push(src.err(format!("{p}.{key}"), format!("key {key}"), why.to_string()));
    }
}

fn validate_modbus_profile(
    src: &Source,
    raw: &RawProfileFile,
    kind: DeviceKind,
    errors: &mut Vec<ConfigError>,
) -> ModbusProfile {
    let settings = raw.modbus.clone().unwrap_or(RawModbusSettings {
        max_registers_per_read: 125,
        max_bits_per_read: 2000,
        max_gap_registers: 8,
        never_read: Vec::new(),
    });
    if !(1..=125).contains(&settings.max_registers_per_read) {
        errors.push(src.err(
            "modbus.max_registers_per_read",
            settings.max_registers_per_read.to_string(),
            "an integer in 1..=125 (the protocol limit)",
        ));
    }
    if !(1..=2000).contains(&settings.max_bits_per_read) {
        errors.push(src.err(
            "modbus.max_bits_per_read",
            settings.max_bits_per_read.to_string(),
            "an integer in 1..=2000 (the protocol limit)",
        ));
    }
    let mut never_read = Vec::new();
    let mut never_read_idx = Vec::new();
    for (i, r) in src.live("modbus.never_read", &settings.never_read) {
        let p = format!("modbus.never_read[{i}]");
        if r.count == 0 {
            errors.push(src.err(format!("{p}.count"), "0", "an integer above 0"));
        } else if u32::from(r.start) + u32::from(r.count) > 65536 {
            errors.push(src.err(
                format!("{p}.count"),
                format!(
                    "{} (start {} + count {} > 65536)",
                    r.count, r.start, r.count
                ),
                "a range within addresses 0..=65535",
            ));
        }
        never_read_idx.push(i);
        never_read.push(RegisterRange {
            register: r.register,
            start: r.start,
            count: r.count,
        });
    }
    let poll_raw = raw.poll.clone().unwrap_or(RawPoll {
        fast_secs: 2,
        normal_secs: 10,
        slow_secs: 60,
    });
    for (k, v) in [
        ("fast_secs", poll_raw.fast_secs),
        ("normal_secs", poll_raw.normal_secs),
        ("slow_secs", poll_raw.slow_secs),
    ] {
        nonzero(src, &format!("poll.{k}"), v, errors);
    }
    let poll = PollIntervals {
        fast: Duration::from_secs(poll_raw.fast_secs),
        normal: Duration::from_secs(poll_raw.normal_secs),
        slow: Duration::from_secs(poll_raw.slow_secs),
    };

    let mut names = BTreeSet::new();
    let mut points = Vec::new();
    // (register, first, last, bit mask or None for whole registers, path, name)
    let mut occupied: Vec<(RegisterKind, u32, u32, Option<u16>, String)> = Vec::new();
    for (i, pt) in src.live("points", &raw.points) {
        let p = format!("points[{i}]");
        let (role, unit) = point_common(src, &p, pt, kind, &mut names, errors);
        forbid(
            src,
            &p,
            "json",
            pt.json.is_some(),
            "no json key in a Modbus profile (it maps registers)",
            errors,
        );
        let Some(register) = pt.register else {
            errors.push(src.err(
                format!("{p}.register"),
                "nothing",
                "a value for required key \"register\" (holding, input, coil or discrete)",
            ));
            continue;
        };
        let Some(address) = pt.address else {
            errors.push(src.err(
                format!("{p}.address"),
                "nothing",
                "a value for required key \"address\" (0-based PDU address)",
            ));
            continue;
        };
        let data_type = match pt.data_type {
            RawDataType::U16 => Some(DataType::U16),
            RawDataType::I16 => Some(DataType::I16),
            RawDataType::U32 => Some(DataType::U32),
            RawDataType::I32 => Some(DataType::I32),
            RawDataType::U64 => Some(DataType::U64),
            RawDataType::I64 => Some(DataType::I64),
            RawDataType::F32 => Some(DataType::F32),
            RawDataType::F64 => Some(DataType::F64),
            RawDataType::Bool => Some(DataType::Bool),
            RawDataType::Bit => match pt.bit {
                None => {
                    errors.push(src.err(
                        format!("{p}.bit"),
                        "nothing",
                        "a value for key \"bit\" (0..=15) with type = \"bit\"",
                    ));
                    None
                }
                Some(bit) => {
                    let count = pt.bit_count.unwrap_or(1);
                    if bit > 15 {
                        errors.push(src.err(
                            format!("{p}.bit"),
                            bit.to_string(),
                            "a bit in 0..=15",
                        ));
                        None
                    } else if count == 0 || u32::from(bit) + u32::from(count) > 16 {
                        errors.push(src.err(
                            format!("{p}.bit_count"),
                            count.to_string(),
                            format!(
                                "a bit count in 1..={} (bit {bit} + bit_count <= 16)",
                                16 - bit
                            ),
                        ));
                        None
                    } else {
                        Some(DataType::Bit { bit, count })
                    }
                }
            },
            RawDataType::String => match pt.length {
                None => {
                    errors.push(src.err(
                        format!("{p}.length"),
                        "nothing",
                        "a value for key \"length\" (registers) with type = \"string\"",
                    ));
                    None
                }
                Some(0) => {
                    errors.push(src.err(
                        format!("{p}.length"),
                        "0",
                        "a length of at least 1 register",
                    ));
                    None
                }
                Some(length) => Some(DataType::String { length }),
            },
        };
        if pt.data_type != RawDataType::Bit {
            forbid(
                src,
                &p,
                "bit",
                pt.bit.is_some(),
                "bit only with type = \"bit\"",
                errors,
            );
            forbid(
                src,
                &p,
                "bit_count",
                pt.bit_count.is_some(),
                "bit_count only with type = \"bit\"",
                errors,
            );
        }
        if pt.data_type != RawDataType::String {
            forbid(
                src,
                &p,
                "length",
                pt.length.is_some(),
                "length only with type = \"string\"",
                errors,
            );
        }
        let Some(data_type) = data_type else { continue };

        // Type fits the register kind.
        let bit_table = register.is_bit_table();
        if bit_table != (data_type == DataType::Bool) {
            let expected = if bit_table {
                format!("type \"bool\" on register = \"{}\"", register.as_str())
            } else {
                format!(
                    "a register type (u16, i16, u32, i32, u64, i64, f32, f64, bit, string) on register = \"{}\"; bool only on coil or discrete",
                    register.as_str()
                )
            };
            errors.push(src.err(format!("{p}.type"), q(data_type.as_str()), expected));
            continue;
        }

        // Order fits the width.
        let order = pt.order.unwrap_or_default();
        if data_type == DataType::Bool {
            forbid(
                src,
                &p,
                "order",
                pt.order.is_some(),
                "no order on a coil or discrete input",
                errors,
            );
        } else {
            let one_word = matches!(
                data_type,
                DataType::U16 | DataType::I16 | DataType::Bit { .. } | DataType::String { .. }
            );
            if one_word && !order.keeps_word_order() {
                errors.push(src.err(
                    format!("{p}.order"),
                    format!("{} on type {}", q(order.as_str()), data_type.as_str()),
                    format!(
                        "ABCD or BADC ({} {})",
                        if matches!(data_type, DataType::String { .. }) {
                            "strings are ordered per register:"
                        } else {
                            "one register:"
                        },
                        "no word order to swap"
                    ),
                ));
            }
        }

        // Address range.
        let width = data_type.width();
        let last = u32::from(address) + width - 1;
        if last > 65535 {
            errors.push(src.err(
                format!("{p}.address"),
                format!(
                    "{address} with type {} ({width} registers, up to {last})",
                    data_type.as_str()
                ),
                "address + width within 0..=65535",
            ));
            continue;
        }
        let limit = if bit_table {
            u32::from(settings.max_bits_per_read)
        } else {
            u32::from(settings.max_registers_per_read)
        };
        if width > limit {
            errors.push(src.err(
                format!("{p}.length"),
                width.to_string(),
                format!("at most modbus.max_registers_per_read ({limit}) registers"),
            ));
        }

        // never_read.
        if let Some((j, r)) = never_read
            .iter()
            .enumerate()
            .find(|(_, r)| r.overlaps(register, u32::from(address), width))
        {
            let j = never_read_idx.get(j).copied().unwrap_or(j);
            errors.push(src.err(
                format!("{p}.address"),
                format!(
                    "{address}..={last} inside modbus.never_read[{j}] ({} {}..={})",
                    r.register.as_str(),
                    r.start,
                    u32::from(r.start) + u32::from(r.count) - 1
                ),
                "no point in a never_read range",
            ));
        }

        // Overlap.
        let mask = match data_type {
            DataType::Bit { bit, count } => Some((((1u32 << count) - 1) << bit) as u16),
            _ => None,
        };
        for (reg, a0, a1, m, other) in &occupied {
            if *reg != register || *a1 < u32::from(address) || last < *a0 {
                continue;
            }
            let clash = match (mask, m) {
                (Some(x), Some(y)) => x & y != 0,
                _ => true,
            };
            if clash {
                errors.push(src.err(
                    format!("{p}.address"),
                    format!(
                        "{} {address}..={last} overlapping point {other} ({}..={a1})",
                        register.as_str(),
                        a0
                    ),
                    "points that do not share registers (bit points only with disjoint bits)",
                ));
                break;
            }
        }
        occupied.push((register, u32::from(address), last, mask, q(&pt.name)));

        // Scale, enum, sentinels.
        let scale = pt.scale.unwrap_or(1.0);
        if scale == 0.0 || scale.is_nan() {
            errors.push(src.err(
                format!("{p}.scale"),
                scale.to_string(),
                "a scale other than 0",
            ));
        }
        let mut enum_names = BTreeMap::new();
        if let Some(map) = &pt.enum_names {
            if !(data_type.is_integer() || data_type == DataType::Bool) {
                errors.push(src.err(
                    format!("{p}.enum"),
                    format!("enum names on type {}", data_type.as_str()),
                    "enum names only on integer, bit and bool points",
                ));
            }
            for (k, v) in map {
                match k.parse::<i64>() {
                    Ok(n) => {
                        enum_names.insert(n, v.clone());
                    }
                    Err(_) => errors.push(src.err(
                        format!("{p}.enum.{k}"),
                        format!("key {}", q(k)),
                        "integer keys, e.g. { \"2\" = \"none\" }",
                    )),
                }
            }
        }
        let mut sentinels = Vec::new();
        let bits = if data_type == DataType::Bool {
            1
        } else {
            (16 * width).min(64)
        };
        let max_raw: u64 = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        for (k, s) in src.live(&format!("{p}.sentinels"), &pt.sentinels) {
            if s.raw > max_raw {
                errors.push(src.err(
                    format!("{p}.sentinels[{k}].raw"),
                    s.raw.to_string(),
                    format!(
                        "a raw value that fits type {} (at most {max_raw})",
                        data_type.as_str()
                    ),
                ));
            }
            sentinels.push(Sentinel {
                raw: s.raw,
                reason: s.reason.clone(),
            });
        }
        let (Some(role), Some(unit)) = (role, unit) else {
            continue;
        };
        points.push(ModbusPoint {
            name: pt.name.clone(),
            role,
            register,
            address,
            data_type,
            order,
            scale,
            offset: pt.offset.unwrap_or(0.0),
            unit,
            class: pt.class.unwrap_or_default(),
            enum_names,
            sentinels,
            valid_min: pt.valid_min,
            valid_max: pt.valid_max,
        });
    }
    ModbusProfile {
        limits: ReadLimits {
            max_registers_per_read: settings.max_registers_per_read,
            max_bits_per_read: settings.max_bits_per_read,
            max_gap_registers: settings.max_gap_registers,
        },
        never_read,
        poll,
        points,
    }
}

fn validate_mqtt_profile(
    src: &Source,
    raw: &RawProfileFile,
    kind: DeviceKind,
    errors: &mut Vec<ConfigError>,
) -> MqttProfile {
    let settings = match &raw.mqtt {
        Some(m) => m.clone(),
        None => {
            errors.push(src.err(
                "mqtt",
                "nothing",
                "an [mqtt] table (topic, interval_secs) in an MQTT profile",
            ));
            RawMqttSettings {
                topic: "#".into(),
                qos: 1,
                max_payload_bytes: 4096,
                sequence_json: None,
                interval_secs: 10,
            }
        }
    };
    if settings.topic.is_empty() {
        errors.push(src.err("mqtt.topic", "\"\"", "a topic pattern"));
    }
    if settings.qos > 2 {
        errors.push(src.err("mqtt.qos", settings.qos.to_string(), "0, 1 or 2"));
    }
    nonzero(src, "mqtt.interval_secs", settings.interval_secs, errors);
    nonzero(
        src,
        "mqtt.max_payload_bytes",
        settings.max_payload_bytes as u64,
        errors,
    );
    let mut names = BTreeSet::new();
    let mut points = Vec::new();
    for (i, pt) in src.live("points", &raw.points) {
        let p = format!("points[{i}]");
        let (role, unit) = point_common(src, &p, pt, kind, &mut names, errors);
        let why = "no register settings in an MQTT profile (it maps JSON fields)";
        forbid(src, &p, "register", pt.register.is_some(), why, errors);
        forbid(src, &p, "address", pt.address.is_some(), why, errors);
        forbid(src, &p, "order", pt.order.is_some(), why, errors);
        forbid(src, &p, "bit", pt.bit.is_some(), why, errors);
        forbid(src, &p, "bit_count", pt.bit_count.is_some(), why, errors);
        forbid(src, &p, "length", pt.length.is_some(), why, errors);
        forbid(src, &p, "class", pt.class.is_some(), why, errors);
        forbid(src, &p, "sentinels", !pt.sentinels.is_empty(), why, errors);
        let json = match &pt.json {
            Some(j) if !j.is_empty() => j.clone(),
            _ => {
                errors.push(src.err(
                    format!("{p}.json"),
                    "nothing",
                    "a value for required key \"json\" (dot path into the payload, \".\" for the payload itself)",
                ));
                continue;
            }
        };
        let value_type = match pt.data_type {
            RawDataType::F64 => MqttValueType::Number,
            RawDataType::Bool => MqttValueType::Bool,
            other => {
                let name = format!("{other:?}").to_lowercase();
                errors.push(src.err(
                    format!("{p}.type"),
                    q(&name),
                    "\"f64\" (a JSON number) or \"bool\" in an MQTT profile",
                ));
                continue;
            }
        };
        let (Some(role), Some(unit)) = (role, unit) else {
            continue;
        };
        points.push(MqttPoint {
            name: pt.name.clone(),
            role,
            json,
            value_type,
            unit,
            valid_min: pt.valid_min,
            valid_max: pt.valid_max,
        });
    }
    MqttProfile {
        topic: settings.topic,
        qos: settings.qos,
        max_payload_bytes: settings.max_payload_bytes,
        sequence_json: settings.sequence_json,
        interval: Duration::from_secs(settings.interval_secs),
        points,
    }
}

// ---------------------------------------------------------------------------------------
// sites

struct Refs<'a> {
    profiles: &'a BTreeMap<String, Arc<Profile>>,
    broken_profiles: &'a BTreeSet<String>,
    brokers: &'a BTreeMap<String, Broker>,
    broken_brokers: &'a BTreeSet<String>,
    daemon_parsed: bool,
    /// The priority matrix, when `dcguard.toml` gave a valid one.
    priority: Option<&'a PriorityPolicy>,
}

/// Expands `A01..A22` (or a single id) to its ids; `None` when malformed.
pub(crate) fn expand_range(s: &str) -> Option<Vec<String>> {
    let Some((a, b)) = s.split_once("..") else {
        return valid_id(s).then(|| vec![s.to_string()]);
    };
    let split = |x: &str| {
        let digits = x.len() - x.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, num) = x.split_at(x.len() - digits);
        (prefix.to_string(), num.to_string())
    };
    let (pa, na) = split(a);
    let (pb, nb) = split(b);
    if pa != pb || na.is_empty() || na.len() != nb.len() || !valid_id(a) || !valid_id(b) {
        return None;
    }
    let (x, y) = (na.parse::<u32>().ok()?, nb.parse::<u32>().ok()?);
    // At most 10 000 racks per range: a typo must not allocate millions of ids.
    if x > y || y - x >= 10_000 {
        return None;
    }
    let w = na.len();
    Some((x..=y).map(|n| format!("{pa}{n:0w$}")).collect())
}

const RANGE_EXPECTED: &str = "a rack id, or a range PREFIX+NN..PREFIX+NN with the same prefix and width, first <= last (e.g. \"A01..A22\")";

fn validate_site(
    src: &Source,
    raw: &RawSiteFile,
    refs: &Refs<'_>,
    endpoints: &mut HashMap<(SocketAddr, u8), String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Site> {
    // A missing or broken [site] is reported (or already was); the rest of the file is
    // still checked against neutral placeholder facts.
    if raw.site.is_none() && !src.tainted("site") {
        errors.push(src.err("site", "nothing", "a value for required key \"site\""));
    }
    let placeholder;
    let s = match &raw.site {
        Some(s) => s,
        None => {
            placeholder = placeholder_site(src);
            &placeholder
        }
    };
    let site_id = s.id.as_str();
    check_id(src, "site.id", site_id, errors);
    let time_zone = parse_tz(src, "site.time_zone", &s.time_zone, errors);
    nonzero(
        src,
        "site.rack_positions",
        u64::from(s.rack_positions),
        errors,
    );
    positive(
        src,
        "site.floor_load_max_kg_m2",
        s.floor_load_max_kg_m2,
        errors,
    );
    nonzero(
        src,
        "site.utility_feeds",
        u64::from(s.utility_feeds),
        errors,
    );
    nonzero(
        src,
        "site.ups.backup_time_min",
        s.ups.backup_time_min,
        errors,
    );
    positive(
        src,
        "site.genset.autonomy_min_h",
        s.genset.autonomy_min_h,
        errors,
    );
    nonzero(
        src,
        "site.genset.load_test_interval_months",
        u64::from(s.genset.load_test_interval_months),
        errors,
    );
    let data_hall = ClimateLimits {
        temperature_min_c: s.data_hall.temperature_min_c,
        temperature_max_c: s.data_hall.temperature_max_c,
        humidity_min_pct: s.data_hall.humidity_min_pct,
        humidity_max_pct: s.data_hall.humidity_max_pct,
    };
    check_climate(src, "site.data_hall", &data_hall, errors);
    positive(
        src,
        "site.rack_limit_kw.storage",
        s.rack_limit_kw.storage,
        errors,
    );
    positive(
        src,
        "site.rack_limit_kw.server",
        s.rack_limit_kw.server,
        errors,
    );
    positive(
        src,
        "site.rack_limit_kw.network",
        s.rack_limit_kw.network,
        errors,
    );
    let rack_limits = RackLimits {
        storage_kw: s.rack_limit_kw.storage,
        server_kw: s.rack_limit_kw.server,
        network_kw: s.rack_limit_kw.network,
    };

    // Rooms.
    let mut rooms: Vec<Room> = Vec::new();
    let mut room_ids: BTreeMap<String, RoomKind> = BTreeMap::new();
    for (i, r) in src.live("rooms", &raw.rooms) {
        let p = format!("rooms[{i}]");
        check_id(src, &format!("{p}.id"), &r.id, errors);
        if room_ids.insert(r.id.clone(), r.kind).is_some() {
            errors.push(src.err(
                format!("{p}.id"),
                format!("duplicate room id {}", q(&r.id)),
                "each room id once in the site",
            ));
            continue;
        }
        let any = r.temperature_min_c.is_some()
            || r.temperature_max_c.is_some()
            || r.humidity_min_pct.is_some()
            || r.humidity_max_pct.is_some();
        let climate = (r.kind == RoomKind::DataHall || any).then(|| ClimateLimits {
            temperature_min_c: r.temperature_min_c.unwrap_or(data_hall.temperature_min_c),
            temperature_max_c: r.temperature_max_c.unwrap_or(data_hall.temperature_max_c),
            humidity_min_pct: r.humidity_min_pct.unwrap_or(data_hall.humidity_min_pct),
            humidity_max_pct: r.humidity_max_pct.unwrap_or(data_hall.humidity_max_pct),
        });
        if let Some(c) = &climate {
            check_climate(src, &p, c, errors);
        }
        rooms.push(Room {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: r.kind,
            climate,
        });
    }
    let broken_rooms: BTreeSet<String> = src.dead_ids("rooms", "id").into_iter().collect();
    let room_ref = |path: String, room: &str, errors: &mut Vec<ConfigError>| -> bool {
        if room_ids.contains_key(room) {
            return true;
        }
        if !broken_rooms.contains(room) {
            errors.push(src.err(
                path,
                q(room),
                format!("a room id of site {site_id} {}", one_of(room_ids.keys())),
            ));
        }
        false
    };

    // Racks.
    let mut racks: Vec<Rack> = Vec::new();
    let mut rack_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut rack_lines: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in src.live("racks", &raw.racks) {
        let p = format!("racks[{i}]");
        let Some(ids) = expand_range(&r.id) else {
            errors.push(src.err(format!("{p}.id"), q(&r.id), RANGE_EXPECTED));
            continue;
        };
        room_ref(format!("{p}.room"), &r.room, errors);
        if let Some(l) = r.limit_kw {
            positive(src, &format!("{p}.limit_kw"), l, errors);
        }
        for id in ids {
            if rack_index.contains_key(&id) {
                let first = rack_lines.get(&id).copied().unwrap_or(0);
                errors.push(src.err(
                    format!("{p}.id"),
                    format!(
                        "duplicate rack id {} (first declared by racks[{first}])",
                        q(&id)
                    ),
                    "each rack declared once in the site",
                ));
                continue;
            }
            rack_index.insert(id.clone(), racks.len());
            rack_lines.insert(id.clone(), i);
            racks.push(Rack {
                id,
                room: r.room.clone(),
                class: r.class,
                limit_kw: r.limit_kw.unwrap_or(rack_limits.of(r.class)),
            });
        }
    }
    if racks.len() as u64 > u64::from(s.rack_positions) && s.rack_positions > 0 {
        errors.push(src.err(
            "racks",
            format!("{} racks", racks.len()),
            format!("at most site.rack_positions ({}) racks", s.rack_positions),
        ));
    }
    let broken_racks: BTreeSet<String> = src
        .dead_ids("racks", "id")
        .iter()
        .flat_map(|r| expand_range(r).unwrap_or_default())
        .collect();
    let rack_ref = |path: String, rack: &str, errors: &mut Vec<ConfigError>| -> Option<usize> {
        if let Some(i) = rack_index.get(rack) {
            return Some(*i);
        }
        if !broken_racks.contains(rack) {
            errors.push(src.err(
                path,
                q(rack),
                format!("a rack id of site {site_id} {}", one_of(rack_index.keys())),
            ));
        }
        None
    };

    let profile_ref = |path: String, id: &str, errors: &mut Vec<ConfigError>| {
        if let Some(p) = refs.profiles.get(id) {
            return Some(p.clone());
        }
        if !refs.broken_profiles.contains(id) {
            errors.push(src.err(
                path,
                q(id),
                format!("a profile id {}", one_of(refs.profiles.keys())),
            ));
        }
        None
    };

    let mut devices: Vec<Device> = Vec::new();
    let mut device_ids: BTreeMap<String, String> = BTreeMap::new();
    let mut claim_endpoint = |path: String,
                              what: &str,
                              endpoint: SocketAddr,
                              unit: u8,
                              errors: &mut Vec<ConfigError>| {
        let key = (endpoint, unit);
        if let Some(first) = endpoints.get(&key) {
            errors.push(src.err(
                path,
                format!("{endpoint} unit {unit}, already used by {first}"),
                "a unique (endpoint, unit) pair per device",
            ));
        } else {
            endpoints.insert(key, format!("{what} of site {site_id}"));
        }
    };

    // Rack meters.
    for (i, m) in src.live("rack_meters", &raw.rack_meters) {
        let p = format!("rack_meters[{i}]");
        let Some(rack_ids) = expand_range(&m.racks) else {
            errors.push(src.err(format!("{p}.racks"), q(&m.racks), RANGE_EXPECTED));
            continue;
        };
        let profile = profile_ref(format!("{p}.profile"), &m.profile, errors);
        let profile = profile.and_then(|pr| match &pr.transport {
            ProfileTransport::Modbus(mp) if pr.kind == DeviceKind::RackMeter => {
                Some((pr.clone(), mp.poll))
            }
            _ => {
                errors.push(src.err(
                    format!("{p}.profile"),
                    format!(
                        "{} (a {} profile of kind {})",
                        q(&m.profile),
                        match pr.transport_kind() {
                            Transport::Modbus => "Modbus",
                            Transport::Mqtt => "MQTT",
                        },
                        pr.kind
                    ),
                    "a Modbus profile of kind rack_meter",
                ));
                None
            }
        });
        let endpoint = parse_addr(src, &format!("{p}.endpoint"), &m.endpoint, errors);
        if let Some(secs) = m.poll_interval_secs {
            nonzero(src, &format!("{p}.poll_interval_secs"), secs, errors);
        }
        let last_unit = u32::from(m.unit_start) + 2 * rack_ids.len() as u32 - 1;
        if m.unit_start == 0 || last_unit > 247 {
            errors.push(src.err(
                format!("{p}.unit_start"),
                format!(
                    "{} for {} racks (units {}..={last_unit})",
                    m.unit_start,
                    rack_ids.len(),
                    m.unit_start
                ),
                "units within 1..=247",
            ));
            continue;
        }
        for (n, rack_id) in rack_ids.iter().enumerate() {
            let rack = rack_ref(format!("{p}.racks"), rack_id, errors);
            for (j, (suffix, feed)) in [("a", Feed::A), ("b", Feed::B)].into_iter().enumerate() {
                let id = format!("{rack_id}-{suffix}");
                let unit = (u32::from(m.unit_start) + 2 * n as u32 + j as u32) as u8;
                if let Some(first) = device_ids.insert(id.clone(), p.clone()) {
                    errors.push(src.err(
                        format!("{p}.racks"),
                        format!("duplicate device id {} (also from {first})", q(&id)),
                        "each device id once in the site",
                    ));
                    continue;
                }
                if let Some(ep) = endpoint {
                    claim_endpoint(
                        format!("{p}.unit_start"),
                        &format!("rack meter {id}"),
                        ep,
                        unit,
                        errors,
                    );
                }
                if let (Some(ri), Some((prof, poll)), Some(ep)) = (rack, &profile, endpoint) {
                    let mut poll = *poll;
                    if let Some(secs) = m.poll_interval_secs {
                        poll.normal = Duration::from_secs(secs);
                    }
                    devices.push(Device {
                        id,
                        name: format!("Rack {rack_id} feed {}", suffix.to_uppercase()),
                        room: racks[ri].room.clone(),
                        rack: Some(rack_id.clone()),
                        profile: prof.clone(),
                        transport: DeviceTransport::Modbus {
                            endpoint: ep,
                            unit,
                            poll,
                            request_timeout: None,
                        },
                        facts: DeviceFacts {
                            feed: Some(feed),
                            ..DeviceFacts::default()
                        },
                    });
                }
            }
        }
    }

    // Devices.
    for (i, d) in src.live("devices", &raw.devices) {
        let p = format!("devices[{i}]");
        let mut ok = check_id(src, &format!("{p}.id"), &d.id, errors);
        if let Some(first) = device_ids.insert(d.id.clone(), p.clone()) {
            errors.push(src.err(
                format!("{p}.id"),
                format!("duplicate device id {} (also {first})", q(&d.id)),
                "each device id once in the site",
            ));
            ok = false;
        }
        let profile = profile_ref(format!("{p}.profile"), &d.profile, errors);
        ok &= room_ref(format!("{p}.room"), &d.room, errors);
        if let Some(rack) = &d.rack
            && let Some(ri) = rack_ref(format!("{p}.rack"), rack, errors)
            && racks[ri].room != d.room
        {
            errors.push(src.err(
                format!("{p}.rack"),
                format!("{} in room {}", q(rack), q(&racks[ri].room)),
                format!("a rack in the device's room {}", q(&d.room)),
            ));
            ok = false;
        }
        // Facts by kind.
        if let Some(pr) = &profile {
            let kind = pr.kind;
            let rated_ok = matches!(kind, DeviceKind::Ups | DeviceKind::Genset | DeviceKind::Pac);
            let checks: [(&str, bool, bool, &str); 4] = [
                (
                    "rated_kw",
                    d.rated_kw.is_some(),
                    rated_ok,
                    "ups, genset or pac",
                ),
                (
                    "fuel_tank_l",
                    d.fuel_tank_l.is_some(),
                    kind == DeviceKind::Genset,
                    "genset",
                ),
                (
                    "fuel_l_per_h_full",
                    d.fuel_l_per_h_full.is_some(),
                    kind == DeviceKind::Genset,
                    "genset",
                ),
                (
                    "feed",
                    d.feed.is_some(),
                    matches!(kind, DeviceKind::UtilityMeter | DeviceKind::RackMeter),
                    "utility_meter or rack_meter",
                ),
            ];
            for (key, present, allowed, kinds) in checks {
                if present && !allowed {
                    errors.push(src.err(
                        format!("{p}.{key}"),
                        format!("{key} on a device of kind {kind}"),
                        format!("{key} only on devices of kind {kinds}"),
                    ));
                    ok = false;
                }
            }
        }
        for (key, v) in [
            ("rated_kw", d.rated_kw),
            ("fuel_tank_l", d.fuel_tank_l),
            ("fuel_l_per_h_full", d.fuel_l_per_h_full),
        ] {
            if let Some(v) = v {
                positive(src, &format!("{p}.{key}"), v, errors);
            }
        }
        if let Some(secs) = d.poll_interval_secs {
            nonzero(src, &format!("{p}.poll_interval_secs"), secs, errors);
        }

        let transport = match (&d.modbus, &d.mqtt) {
            (Some(_), Some(_)) | (None, None) => {
                errors.push(src.err(
                    p.clone(),
                    if d.modbus.is_some() {
                        "both modbus and mqtt"
                    } else {
                        "neither modbus nor mqtt"
                    },
                    "exactly one of modbus = { endpoint, unit } and mqtt = { broker, topic }",
                ));
                None
            }
            (Some(mb), None) => {
                let ep = parse_addr(src, &format!("{p}.modbus.endpoint"), &mb.endpoint, errors);
                if let Some(ms) = mb.request_timeout_ms {
                    within(
                        src,
                        &format!("{p}.modbus.request_timeout_ms"),
                        ms,
                        REQUEST_TIMEOUT_MS,
                        REQUEST_TIMEOUT_EXPECTED,
                        errors,
                    );
                }
                if let Some(ep) = ep {
                    claim_endpoint(
                        format!("{p}.modbus.unit"),
                        &format!("device {}", d.id),
                        ep,
                        mb.unit,
                        errors,
                    );
                }
                match (&profile, ep) {
                    (Some(pr), Some(endpoint)) => match &pr.transport {
                        ProfileTransport::Modbus(mp) => {
                            let mut poll = mp.poll;
                            if let Some(secs) = d.poll_interval_secs {
                                poll.normal = Duration::from_secs(secs);
                            }
                            Some(DeviceTransport::Modbus {
                                endpoint,
                                unit: mb.unit,
                                poll,
                                request_timeout: mb.request_timeout_ms.map(Duration::from_millis),
                            })
                        }
                        ProfileTransport::Mqtt(_) => {
                            errors.push(src.err(
                                format!("{p}.modbus"),
                                format!("a Modbus address for MQTT profile {}", q(&pr.id)),
                                "mqtt = { broker, topic }, the profile's transport",
                            ));
                            None
                        }
                    },
                    _ => None,
                }
            }
            (None, Some(mq)) => {
                if d.poll_interval_secs.is_some() {
                    errors.push(src.err(
                        format!("{p}.poll_interval_secs"),
                        "poll_interval_secs on an MQTT device",
                        "no poll interval (the profile's mqtt.interval_secs applies)",
                    ));
                }
                if !refs.brokers.contains_key(&mq.broker)
                    && !refs.broken_brokers.contains(&mq.broker)
                    && refs.daemon_parsed
                {
                    errors.push(src.err(
                        format!("{p}.mqtt.broker"),
                        q(&mq.broker),
                        format!(
                            "a broker id from dcguard.toml {}",
                            one_of(refs.brokers.keys())
                        ),
                    ));
                }
                if mq.topic.is_empty() || mq.topic.contains(['+', '#']) {
                    errors.push(src.err(
                        format!("{p}.mqtt.topic"),
                        q(&mq.topic),
                        "a concrete topic without wildcards",
                    ));
                }
                match &profile {
                    Some(pr) => match &pr.transport {
                        ProfileTransport::Mqtt(mp) => {
                            if !mp.topic_matches(&mq.topic) {
                                errors.push(src.err(
                                    format!("{p}.mqtt.topic"),
                                    q(&mq.topic),
                                    format!(
                                        "a topic matching the pattern {} of profile {}",
                                        q(&mp.topic),
                                        q(&pr.id)
                                    ),
                                ));
                            }
                            Some(DeviceTransport::Mqtt {
                                broker: mq.broker.clone(),
                                topic: mq.topic.clone(),
                            })
                        }
                        ProfileTransport::Modbus(_) => {
                            errors.push(src.err(
                                format!("{p}.mqtt"),
                                format!("an MQTT address for Modbus profile {}", q(&pr.id)),
                                "modbus = { endpoint, unit }, the profile's transport",
                            ));
                            None
                        }
                    },
                    None => None,
                }
            }
        };
        if let (true, Some(profile), Some(transport)) = (ok, profile, transport) {
            devices.push(Device {
                id: d.id.clone(),
                name: d.name.clone().unwrap_or_else(|| d.id.clone()),
                room: d.room.clone(),
                rack: d.rack.clone(),
                profile,
                transport,
                facts: DeviceFacts {
                    rated_kw: d.rated_kw,
                    fuel_tank_l: d.fuel_tank_l,
                    fuel_l_per_h_full: d.fuel_l_per_h_full,
                    feed: d.feed,
                },
            });
        }
    }

    let modbus_endpoints = validate_modbus_endpoints(src, raw, &devices, errors);
    let known = SiteParts {
        site: site_id,
        rooms: &room_ids,
        broken_rooms: &broken_rooms,
        racks: &racks,
        broken_racks: &broken_racks,
        devices: &devices,
        broken_devices: &src
            .dead_ids("devices", "id")
            .into_iter()
            .chain(src.dead_ids("rack_meters", "id"))
            .collect(),
    };
    let rule_overrides = validate_rule_overrides(src, raw, &known, refs.priority, errors);

    if raw.access.is_none() && !src.tainted("access") {
        errors.push(src.err("access", "nothing", "a value for required key \"access\""));
    }
    let placeholder_access;
    let raw_access = match &raw.access {
        Some(a) => a,
        None => {
            placeholder_access = placeholder_access_policy();
            &placeholder_access
        }
    };
    let access = validate_access(src, raw_access, site_id, &room_ids, &room_ref, errors);
    if raw.site.is_none() || raw.access.is_none() {
        return None;
    }

    Some(Site {
        id: s.id.clone(),
        name: s.name.clone(),
        building: s.building.clone(),
        time_zone: time_zone?,
        rack_positions: s.rack_positions,
        floor_load_max_kg_m2: s.floor_load_max_kg_m2,
        utility_feeds: s.utility_feeds,
        fire_suppression: s.fire_suppression.clone(),
        ups: UpsFacts {
            backup_time: Duration::from_secs(s.ups.backup_time_min * 60),
            battery: s.ups.battery,
            redundancy: s.ups.redundancy,
        },
        genset: GensetFacts {
            rating: s.genset.rating,
            redundancy: s.genset.redundancy,
            autonomy_min_h: s.genset.autonomy_min_h,
            load_test_interval_months: s.genset.load_test_interval_months,
        },
        cooling: CoolingFacts {
            kind: s.cooling.kind,
            redundancy: s.cooling.redundancy,
        },
        data_hall,
        rack_limits,
        access,
        rooms,
        racks,
        devices,
        modbus_endpoints,
        rule_overrides,
    })
}

/// What a site file defines, for the references of `[[rule_overrides]]`.
struct SiteParts<'a> {
    site: &'a str,
    rooms: &'a BTreeMap<String, RoomKind>,
    broken_rooms: &'a BTreeSet<String>,
    racks: &'a [Rack],
    broken_racks: &'a BTreeSet<String>,
    devices: &'a [Device],
    broken_devices: &'a BTreeSet<String>,
}

/// `[[rule_overrides]]`: a known rule, at most one of room/rack/device naming one of this
/// site's, values in range, each (rule, selector) once.
fn validate_rule_overrides(
    src: &Source,
    raw: &RawSiteFile,
    known: &SiteParts<'_>,
    priority: Option<&PriorityPolicy>,
    errors: &mut Vec<ConfigError>,
) -> Vec<RuleOverride> {
    use crate::rules::catalogue::{CATALOGUE, spec};
    use crate::rules::overrides::{Selector, cell_for, threshold_unit};
    let site = known.site;
    let mut out: Vec<RuleOverride> = Vec::new();
    let mut seen: BTreeMap<(&'static str, Selector), usize> = BTreeMap::new();
    for (i, o) in src.live("rule_overrides", &raw.rule_overrides) {
        let p = format!("rule_overrides[{i}]");
        let mut ok = true;
        let Some(rule) = spec(&o.rule) else {
            errors.push(src.err(
                format!("{p}.rule"),
                q(&o.rule),
                format!(
                    "a rule id of the catalogue {}",
                    one_of(CATALOGUE.iter().map(|r| r.id))
                ),
            ));
            continue;
        };
        let selector = match (&o.room, &o.rack, &o.device) {
            (None, None, None) => Selector::Site,
            (Some(room), None, None) => {
                if !known.rooms.contains_key(room) {
                    ok = false;
                    if !known.broken_rooms.contains(room) {
                        errors.push(src.err(
                            format!("{p}.room"),
                            q(room),
                            format!("a room id of site {site} {}", one_of(known.rooms.keys())),
                        ));
                    }
                }
                Selector::Room(room.clone())
            }
            (None, Some(rack), None) => {
                if !known.racks.iter().any(|r| &r.id == rack) {
                    ok = false;
                    if !known.broken_racks.contains(rack) {
                        errors.push(src.err(
                            format!("{p}.rack"),
                            q(rack),
                            format!(
                                "a rack id of site {site} {}",
                                one_of(known.racks.iter().map(|r| &r.id))
                            ),
                        ));
                    }
                }
                Selector::Rack(rack.clone())
            }
            (None, None, Some(device)) => {
                if !known.devices.iter().any(|d| &d.id == device) {
                    ok = false;
                    if !known.broken_devices.contains(device) {
                        errors.push(src.err(
                            format!("{p}.device"),
                            q(device),
                            format!(
                                "a device id of site {site} {}",
                                one_of(known.devices.iter().map(|d| &d.id))
                            ),
                        ));
                    }
                }
                Selector::Device(device.clone())
            }
            _ => {
                errors.push(src.err(
                    p.clone(),
                    "more than one of room, rack and device",
                    "at most one of room, rack or device (none: the whole site)",
                ));
                continue;
            }
        };
        if o.enabled.is_none()
            && o.priority.is_none()
            && o.limit.is_none()
            && o.on_delay_secs.is_none()
            && o.off_delay_secs.is_none()
            && o.deadband.is_none()
        {
            errors.push(src.err(
                p.clone(),
                "nothing to override",
                "at least one of enabled, priority, limit, on_delay_secs, off_delay_secs, deadband",
            ));
            ok = false;
        }
        if let Some(limit) = o.limit {
            match threshold_unit(rule.id) {
                None => {
                    errors.push(src.err(
                        format!("{p}.limit"),
                        limit.to_string(),
                        format!(
                            "no limit: rule {} has no numeric threshold (discrete input or unit count)",
                            rule.id
                        ),
                    ));
                    ok = false;
                }
                Some(unit) if !limit.is_finite() => {
                    errors.push(src.err(
                        format!("{p}.limit"),
                        limit.to_string(),
                        format!("a finite number in {unit}"),
                    ));
                    ok = false;
                }
                Some(_) => {}
            }
        }
        if let Some(d) = o.deadband
            && !(d.is_finite() && d >= 0.0)
        {
            errors.push(src.err(
                format!("{p}.deadband"),
                d.to_string(),
                "a finite number >= 0 in the rule's unit",
            ));
            ok = false;
        }
        for (key, v) in [
            ("on_delay_secs", o.on_delay_secs),
            ("off_delay_secs", o.off_delay_secs),
        ] {
            if let Some(v) = v
                && v > 7 * 24 * 3600
            {
                errors.push(src.err(
                    format!("{p}.{key}"),
                    v.to_string(),
                    "0..=604800 seconds (at most a week)",
                ));
                ok = false;
            }
        }
        if let (Some(want), Some(policy)) = (o.priority, priority)
            && cell_for(policy, want, rule.impact).is_none()
        {
            errors.push(src.err(
                format!("{p}.priority"),
                want.as_str(),
                "a priority that some cell of [priority.matrix] gives",
            ));
            ok = false;
        }
        if let Some(first) = seen.get(&(rule.id, selector.clone())) {
            errors.push(src.err(
                format!("{p}.rule"),
                format!("{} for the same scope as rule_overrides[{first}]", rule.id),
                "each rule once per site, room, rack or device",
            ));
            continue;
        }
        seen.insert((rule.id, selector.clone()), i);
        if ok {
            out.push(RuleOverride {
                site: site.to_owned(),
                rule: rule.id,
                selector,
                enabled: o.enabled,
                priority: o.priority,
                limit: o.limit,
                on_delay: o.on_delay_secs.map(Duration::from_secs),
                off_delay: o.off_delay_secs.map(Duration::from_secs),
                deadband: o.deadband,
            });
        }
    }
    out
}

/// `[[modbus_endpoints]]`: each names an endpoint of a Modbus device of this site, once.
fn validate_modbus_endpoints(
    src: &Source,
    raw: &RawSiteFile,
    devices: &[Device],
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<SocketAddr, EndpointOverrides> {
    let used: BTreeSet<SocketAddr> = devices
        .iter()
        .filter_map(|d| match &d.transport {
            DeviceTransport::Modbus { endpoint, .. } => Some(*endpoint),
            DeviceTransport::Mqtt { .. } => None,
        })
        .collect();
    let mut out = BTreeMap::new();
    for (i, e) in src.live("modbus_endpoints", &raw.modbus_endpoints) {
        let p = format!("modbus_endpoints[{i}]");
        let mut ok = true;
        if let Some(n) = e.max_connections {
            ok &= within(
                src,
                &format!("{p}.max_connections"),
                n,
                MAX_CONNECTIONS,
                MAX_CONNECTIONS_EXPECTED,
                errors,
            );
        }
        if let Some(ms) = e.pause_between_requests_ms {
            ok &= within(
                src,
                &format!("{p}.pause_between_requests_ms"),
                ms,
                PAUSE_MS,
                PAUSE_EXPECTED,
                errors,
            );
        }
        if let Some(ms) = e.request_timeout_ms {
            ok &= within(
                src,
                &format!("{p}.request_timeout_ms"),
                ms,
                REQUEST_TIMEOUT_MS,
                REQUEST_TIMEOUT_EXPECTED,
                errors,
            );
        }
        let Some(endpoint) = parse_addr(src, &format!("{p}.endpoint"), &e.endpoint, errors) else {
            continue;
        };
        if !used.contains(&endpoint) {
            errors.push(src.err(
                format!("{p}.endpoint"),
                q(&e.endpoint),
                format!(
                    "the endpoint of a Modbus device or rack meter of this site {}",
                    one_of(used.iter().map(ToString::to_string))
                ),
            ));
            continue;
        }
        let overrides = EndpointOverrides {
            max_connections: e.max_connections,
            pause_between_requests: e.pause_between_requests_ms.map(Duration::from_millis),
            close_after_scan: e.close_after_scan,
            request_timeout: e.request_timeout_ms.map(Duration::from_millis),
        };
        if out.insert(endpoint, overrides).is_some() {
            errors.push(src.err(
                format!("{p}.endpoint"),
                format!("{endpoint} listed twice"),
                "each endpoint once in [[modbus_endpoints]]",
            ));
        } else if !ok {
            out.remove(&endpoint);
        }
    }
    out
}

/// Facts that pass every check, standing in for a missing `[site]`.
fn placeholder_site(src: &Source) -> RawSite {
    let id = src
        .table
        .get("site")
        .and_then(|s| s.get("id"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| {
            Path::new(&src.rel)
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    RawSite {
        id,
        name: String::new(),
        building: String::new(),
        time_zone: "UTC".into(),
        rack_positions: u32::MAX,
        floor_load_max_kg_m2: 1.0,
        utility_feeds: 1,
        fire_suppression: String::new(),
        ups: RawUps {
            backup_time_min: 1,
            battery: BatteryKind::Vrla,
            redundancy: Redundancy::N,
        },
        genset: RawGenset {
            rating: GensetRating::Prime,
            redundancy: Redundancy::N,
            autonomy_min_h: 1.0,
            load_test_interval_months: 1,
        },
        cooling: RawCooling {
            kind: CoolingKind::Pac,
            redundancy: Redundancy::N,
        },
        data_hall: RawClimate {
            temperature_min_c: 0.0,
            temperature_max_c: 1.0,
            humidity_min_pct: 0.0,
            humidity_max_pct: 1.0,
        },
        rack_limit_kw: RawRackLimits {
            storage: 1.0,
            server: 1.0,
            network: 1.0,
        },
    }
}

/// An access policy that passes every check, standing in for a missing `[access]`.
fn placeholder_access_policy() -> RawAccess {
    RawAccess {
        third_party_escort: EscortRule::Required,
        destination_room_required: false,
        technical_escort_required: true,
        escort_max_gap_secs: 1,
        entry_grace_before_min: 0,
        overstay_grace_min: 0,
        readers: Vec::new(),
        staff: Vec::new(),
        incidents: BTreeMap::new(),
    }
}

fn check_climate(src: &Source, p: &str, c: &ClimateLimits, errors: &mut Vec<ConfigError>) {
    if c.temperature_min_c >= c.temperature_max_c {
        errors.push(src.err(
            format!("{p}.temperature_max_c"),
            c.temperature_max_c.to_string(),
            format!("a value above temperature_min_c ({})", c.temperature_min_c),
        ));
    }
    if c.humidity_min_pct >= c.humidity_max_pct {
        errors.push(src.err(
            format!("{p}.humidity_max_pct"),
            c.humidity_max_pct.to_string(),
            format!("a value above humidity_min_pct ({})", c.humidity_min_pct),
        ));
    }
}

fn validate_access(
    src: &Source,
    a: &RawAccess,
    site_id: &str,
    room_ids: &BTreeMap<String, RoomKind>,
    room_ref: &dyn Fn(String, &str, &mut Vec<ConfigError>) -> bool,
    errors: &mut Vec<ConfigError>,
) -> AccessPolicy {
    nonzero(
        src,
        "access.escort_max_gap_secs",
        a.escort_max_gap_secs,
        errors,
    );
    let mut readers = Vec::new();
    let mut serials = BTreeSet::new();
    for (i, r) in src.live("access.readers", &a.readers) {
        let p = format!("access.readers[{i}]");
        check_id(src, &format!("{p}.serial"), &r.serial, errors);
        if !serials.insert(r.serial.clone()) {
            errors.push(src.err(
                format!("{p}.serial"),
                format!("duplicate reader serial {}", q(&r.serial)),
                "each reader serial once in the site",
            ));
        }
        room_ref(format!("{p}.room"), &r.room, errors);
        readers.push(Reader {
            serial: r.serial.clone(),
            room: r.room.clone(),
            direction: r.direction,
        });
    }
    if a.destination_room_required {
        let uncovered: Vec<&String> = room_ids
            .iter()
            .filter(|(_, k)| **k == RoomKind::DataHall)
            .map(|(id, _)| id)
            .filter(|id| {
                !readers
                    .iter()
                    .any(|r| &&r.room == id && r.direction == Direction::Entry)
            })
            .collect();
        if !uncovered.is_empty() {
            errors.push(src.err(
                "access.destination_room_required",
                format!(
                    "true, but no entry reader for data hall{} {}",
                    if uncovered.len() == 1 { "" } else { "s" },
                    uncovered
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!(
                    "an [[access.readers]] entry with direction = \"entry\" for every data hall of site {site_id}"
                ),
            ));
        }
    }
    let mut staff = Vec::new();
    let mut staff_ids = BTreeSet::new();
    let mut credentials: BTreeMap<String, String> = BTreeMap::new();
    for (i, st) in src.live("access.staff", &a.staff) {
        let p = format!("access.staff[{i}]");
        check_id(src, &format!("{p}.id"), &st.id, errors);
        if !staff_ids.insert(st.id.clone()) {
            errors.push(src.err(
                format!("{p}.id"),
                format!("duplicate staff id {}", q(&st.id)),
                "each staff id once in the site",
            ));
        }
        if st.credentials.is_empty() {
            errors.push(src.err(
                format!("{p}.credentials"),
                "an empty list",
                "at least one credential id",
            ));
        }
        for (k, c) in src.live(&format!("{p}.credentials"), &st.credentials) {
            if let Some(other) = credentials.insert(c.clone(), st.id.clone())
                && other != st.id
            {
                errors.push(src.err(
                    format!("{p}.credentials[{k}]"),
                    format!("credential {} also held by staff {}", q(c), q(&other)),
                    "each credential held by one person",
                ));
            }
        }
        let mut time = |key: &str, v: &Option<String>| {
            v.as_ref().and_then(|s| {
                let t = parse_hhmm(s);
                if t.is_none() {
                    errors.push(src.err(
                        format!("{p}.{key}"),
                        q(s),
                        "a time HH:MM such as \"07:00\"",
                    ));
                }
                t
            })
        };
        let start = time("shift_start", &st.shift_start);
        let end = time("shift_end", &st.shift_end);
        if st.shift_start.is_some() != st.shift_end.is_some() {
            errors.push(src.err(
                p.clone(),
                "only one of shift_start and shift_end",
                "both or neither",
            ));
        }
        staff.push(Staff {
            id: st.id.clone(),
            name: st.name.clone(),
            role: st.role,
            credentials: st.credentials.clone(),
            shift: start.zip(end),
        });
    }
    AccessPolicy {
        third_party_escort: a.third_party_escort,
        destination_room_required: a.destination_room_required,
        technical_escort_required: a.technical_escort_required,
        escort_max_gap: Duration::from_secs(a.escort_max_gap_secs),
        entry_grace_before: Duration::from_secs(a.entry_grace_before_min * 60),
        overstay_grace: Duration::from_secs(a.overstay_grace_min * 60),
        readers,
        staff,
        incidents: finding_incidents(src, &a.incidents, errors),
    }
}

/// `[access.incidents]`: every key a finding rule, every value a priority or `none`.
fn finding_incidents(
    src: &Source,
    raw: &BTreeMap<String, String>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Option<Priority>> {
    use crate::access::reconcile::Rule;
    let rules: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
    let mut out = BTreeMap::new();
    for (rule, value) in raw {
        let path = format!("access.incidents.{rule}");
        if !rules.contains(&rule.as_str()) {
            errors.push(src.err(
                path,
                format!("unknown finding rule {}", q(rule)),
                format!("one of {}", rules.join(", ")),
            ));
            continue;
        }
        let priority = if value == "none" {
            None
        } else if let Some(p) = Priority::ALL.into_iter().find(|p| p.as_str() == value) {
            Some(p)
        } else {
            errors.push(src.err(
                path,
                q(value),
                "\"P1\" to \"P5\", or \"none\" (no incident)",
            ));
            continue;
        };
        out.insert(rule.clone(), priority);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_paths_resolve_in_the_credentials_directory() {
        let dir = Some(std::ffi::OsStr::new("/run/credentials/dcguard.service"));
        for written in [
            "$CREDENTIALS_DIRECTORY/mqtt-password",
            "${CREDENTIALS_DIRECTORY}/mqtt-password",
        ] {
            assert_eq!(
                credential_path(written, dir).unwrap(),
                PathBuf::from("/run/credentials/dcguard.service/mqtt-password")
            );
            // Outside systemd (check-config from a shell) the path stays as written.
            assert_eq!(
                credential_path(written, None).unwrap(),
                PathBuf::from(written)
            );
            assert_eq!(
                credential_path(written, Some(std::ffi::OsStr::new(""))).unwrap(),
                PathBuf::from(written)
            );
        }
        assert_eq!(
            credential_path("/etc/dcguard/secret", dir).unwrap(),
            PathBuf::from("/etc/dcguard/secret")
        );
        assert!(credential_path("$HOME/secret", dir).is_err());
        assert!(credential_path("$CREDENTIALS_DIRECTORY/", dir).is_err());
        assert!(credential_path("$CREDENTIALS_DIRECTORY/../etc/shadow", dir).is_err());
    }

    #[test]
    fn ranges_expand() {
        assert_eq!(expand_range("A01..A03").unwrap(), vec!["A01", "A02", "A03"]);
        assert_eq!(expand_range("R-9..R-10"), None);
        assert_eq!(expand_range("A01").unwrap(), vec!["A01"]);
        assert_eq!(expand_range("A05..A01"), None);
        assert_eq!(expand_range("A01..B03"), None);
        assert_eq!(expand_range("A..A"), None);
        assert_eq!(expand_range("A 1"), None);
        assert_eq!(expand_range("A0..A99999999"), None);
    }

    #[test]
    fn one_of_is_capped() {
        assert_eq!(one_of(["a", "b"]), "(one of: a, b)");
        assert_eq!(
            one_of((0..10).map(|i| i.to_string())),
            "(one of: 0, 1, 2, 3, 4, 5, 6, 7, ...)"
        );
        assert_eq!(one_of(Vec::<String>::new()), "(none is defined)");
    }

    #[test]
    fn times_and_dates_are_strict() {
        assert!(parse_hhmm("08:00").is_some());
        assert!(parse_hhmm("8:00").is_none());
        assert!(parse_hhmm("24:00").is_none());
        assert!(parse_date("2026-02-29").is_none());
        assert!(parse_date("2026-01-01").is_some());
    }
}
