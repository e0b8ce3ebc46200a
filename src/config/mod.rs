//! The configuration contract (`docs/configuration.md`): load a directory, validate all of
//! it, and hand out typed `model::Config` or every problem at once.
//!
//! Flow: read each file -> parse with spans (`locate`) -> report and remove literal
//! secrets -> deserialize into `raw` types collecting every error (`de`) -> semantic
//! checks and expansion into `model` types (`validate`).

mod de;
pub mod error;
pub mod locate;
pub mod model;
pub mod raw;
pub mod roles;
mod validate;

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use de::{DeError, Problem, deserialize_collecting};
use locate::Locator;
use validate::{Parsed, Source};

/// Key names that must never hold a secret's value.
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "token",
    "secret",
    "hmac_secret",
    "api_key",
    "routing_key",
];

/// Loads and validates the configuration directory `dir`.
///
/// File names in problems are `dir` joined with the file's relative path, so they read
/// the way the user typed the directory.
pub fn load(dir: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let dir_problem = |found: String| {
        ConfigErrors::new(
            dir,
            vec![ConfigError {
                file: dir.to_path_buf(),
                line: None,
                path: String::new(),
                found,
                expected: "a configuration directory holding dcguard.toml, sites/ and profiles/"
                    .into(),
            }],
        )
    };
    match fs::metadata(dir) {
        Err(e) => return Err(dir_problem(format!("no readable directory ({e})"))),
        Ok(m) if !m.is_dir() => return Err(dir_problem("a file, not a directory".into())),
        Ok(_) => {}
    }
    if let Err(e) = fs::read_dir(dir) {
        return Err(dir_problem(format!("no readable directory ({e})")));
    }

    let daemon_path = dir.join("dcguard.toml");
    let daemon = if daemon_path.is_file() {
        read_file(dir, "dcguard.toml", &mut errors)
    } else {
        errors.push(ConfigError {
            file: daemon_path,
            line: None,
            path: String::new(),
            found: "no file".into(),
            expected: "the daemon settings file dcguard.toml".into(),
        });
        None
    };
    let sites = read_folder(dir, "sites", true, &mut errors);
    let profiles = read_folder(dir, "profiles", true, &mut errors);

    let parsed = Parsed {
        daemon,
        sites,
        profiles,
    };
    match validate::validate(&parsed, &mut errors) {
        Some(cfg) if errors.is_empty() => Ok(cfg),
        _ => Err(ConfigErrors::new(dir, errors)),
    }
}

fn read_folder<T: serde::de::DeserializeOwned>(
    dir: &Path,
    sub: &str,
    required: bool,
    errors: &mut Vec<ConfigError>,
) -> Vec<(Source, Option<T>)> {
    let folder = dir.join(sub);
    let entries = match fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) => {
            if required {
                errors.push(ConfigError {
                    file: folder,
                    line: None,
                    path: String::new(),
                    found: format!("no readable directory ({e})"),
                    expected: format!("a directory {sub}/ of *.toml files"),
                });
            }
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    if names.is_empty() && required {
        errors.push(ConfigError {
            file: folder,
            line: None,
            path: String::new(),
            found: "no *.toml file".into(),
            expected: format!("at least one file in {sub}/"),
        });
    }
    names
        .iter()
        .filter_map(|n| read_file(dir, &format!("{sub}/{n}"), errors))
        .collect()
}

/// Reads, parses, strips secrets and deserializes one file. `None` when the file cannot
/// be read or parsed at all.
fn read_file<T: serde::de::DeserializeOwned>(
    dir: &Path,
    rel: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<(Source, Option<T>)> {
    let file = dir.join(rel);
    let problem = |line, found: String, expected: &str| ConfigError {
        file: file.clone(),
        line,
        path: String::new(),
        found,
        expected: expected.into(),
    };
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            errors.push(problem(
                None,
                format!("an unreadable file ({e})"),
                "a readable UTF-8 TOML file",
            ));
            return None;
        }
    };
    let locator = match Locator::parse(text.clone()) {
        Ok(l) => l,
        Err(e) => {
            let line = e.span().map(|s| {
                let upto = text.get(..s.start).unwrap_or("");
                upto.matches('\n').count() + 1
            });
            errors.push(problem(
                line,
                format!("invalid TOML ({})", e.message().trim()),
                "valid TOML",
            ));
            return None;
        }
    };
    let mut table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            errors.push(problem(
                None,
                format!("invalid TOML ({})", e.message().trim()),
                "valid TOML",
            ));
            return None;
        }
    };
    let mut src = Source {
        file: file.clone(),
        rel: rel.to_string(),
        locator: Some(locator),
        table: toml::Table::new(),
        dead: BTreeSet::new(),
    };
    let mut secrets = Vec::new();
    strip_secrets(&mut table, "", &mut secrets);
    for (path, key) in secrets {
        errors.push(src.err(
            path,
            "a secret written literally",
            format!("a reference: {key}_env = \"VAR\" or {key}_file = \"PATH\""),
        ));
    }
    let root = toml::Value::Table(table);
    let collected = deserialize_collecting::<T>(&root);
    for e in &collected.errors {
        errors.push(de_error(&src, e));
    }
    if let toml::Value::Table(t) = root {
        src.table = t;
    }
    src.dead = collected.dead;
    Some((src, collected.value))
}

/// Removes every key named in `SECRET_KEYS`, remembering (path, key). Values are never
/// looked at.
fn strip_secrets(table: &mut toml::Table, path: &str, found: &mut Vec<(String, String)>) {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let here = de::join_key(path, &key);
        if SECRET_KEYS.contains(&key.as_str()) {
            table.remove(&key);
            found.push((here, key));
            continue;
        }
        if let Some(v) = table.get_mut(&key) {
            strip_value(v, &here, found);
        }
    }
}

fn strip_value(v: &mut toml::Value, path: &str, found: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => strip_secrets(t, path, found),
        toml::Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                strip_value(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn de_error(src: &Source, e: &DeError) -> ConfigError {
    let path = e.full_path();
    let (found, expected) = match &e.problem {
        Problem::UnknownKey { key, allowed } => (
            format!("unknown key {key:?}"),
            if allowed.is_empty() {
                "no keys here".to_string()
            } else {
                format!("one of: {}", allowed.join(", "))
            },
        ),
        Problem::Missing { key } => (
            "nothing".to_string(),
            format!("a value for required key {key:?}"),
        ),
        Problem::Invalid { found, expected } => (found.clone(), expected.clone()),
        Problem::UnknownVariant { found, allowed } => (
            format!("{found:?}"),
            format!("one of: {}", allowed.join(", ")),
        ),
        Problem::Other(m) => (m.clone(), "a valid value".to_string()),
    };
    src.err(path, found, expected)
}

/// Counts for one site (or the total).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteSummary {
    /// Site id, or `total`.
    pub site: String,
    /// Rooms.
    pub rooms: usize,
    /// Racks (expanded).
    pub racks: usize,
    /// Devices (rack meters expanded).
    pub devices: usize,
    /// Sum of the points of every device's profile.
    pub points: usize,
    /// Distinct Modbus `host:port`.
    pub modbus_endpoints: usize,
    /// Devices on MQTT.
    pub mqtt_devices: usize,
}

/// What `check-config` prints for a valid configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// One row per site.
    pub sites: Vec<SiteSummary>,
    /// Totals (endpoints distinct across sites).
    pub total: SiteSummary,
    /// Profiles loaded.
    pub profiles: usize,
    /// MQTT brokers.
    pub brokers: usize,
}

impl Config {
    /// How the poller treats `endpoint`: `[modbus]` with the overrides of the site that
    /// lists it in `[[modbus_endpoints]]` (validation allows one site per endpoint).
    pub fn endpoint_settings(&self, endpoint: SocketAddr) -> model::EndpointSettings {
        let base = self.modbus.endpoint;
        self.sites
            .iter()
            .find_map(|s| s.modbus_endpoints.get(&endpoint))
            .map_or(base, |o| o.apply(base))
    }

    /// Counts per site and in total.
    pub fn summary(&self) -> Summary {
        let mut all_endpoints = BTreeSet::new();
        let mut total = SiteSummary {
            site: "total".into(),
            ..SiteSummary::default()
        };
        let sites = self
            .sites
            .iter()
            .map(|s| {
                let mut endpoints = BTreeSet::new();
                let mut mqtt = 0;
                for d in &s.devices {
                    match &d.transport {
                        DeviceTransport::Modbus { endpoint, .. } => {
                            endpoints.insert(*endpoint);
                            all_endpoints.insert(*endpoint);
                        }
                        DeviceTransport::Mqtt { .. } => mqtt += 1,
                    }
                }
                let row = SiteSummary {
                    site: s.id.clone(),
                    rooms: s.rooms.len(),
                    racks: s.racks.len(),
                    devices: s.devices.len(),
                    points: s.devices.iter().map(|d| d.profile.point_count()).sum(),
                    modbus_endpoints: endpoints.len(),
                    mqtt_devices: mqtt,
                };
                total.rooms += row.rooms;
                total.racks += row.racks;
                total.devices += row.devices;
                total.points += row.points;
                total.mqtt_devices += row.mqtt_devices;
                row
            })
            .collect();
        total.modbus_endpoints = all_endpoints.len();
        Summary {
            sites,
            total,
            profiles: self.profiles.len(),
            brokers: self.brokers.len(),
        }
    }

    /// The site with this id.
    pub fn site(&self, id: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.id == id)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .sites
            .iter()
            .map(|s| s.site.len())
            .chain([5])
            .max()
            .unwrap_or(5);
        writeln!(
            f,
            "{:<w$}  {:>5}  {:>5}  {:>7}  {:>6}  {:>9}  {:>4}",
            "site", "rooms", "racks", "devices", "points", "endpoints", "mqtt"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, s: &SiteSummary| {
            writeln!(
                f,
                "{:<w$}  {:>5}  {:>5}  {:>7}  {:>6}  {:>9}  {:>4}",
                s.site, s.rooms, s.racks, s.devices, s.points, s.modbus_endpoints, s.mqtt_devices
            )
        };
        for s in &self.sites {
            row(f, s)?;
        }
        row(f, &self.total)?;
        write!(
            f,
            "{} profiles, {} MQTT brokers; endpoints = distinct Modbus host:port",
            self.profiles, self.brokers
        )
    }
}
