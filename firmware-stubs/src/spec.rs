//! The simulators' own reading of `config/`: sites and device profiles, leniently.
//!
//! This is deliberately not the daemon's config loader. The stubs must not share code
//! with the daemon on the path that turns values into register words, and they must not
//! depend on the `dcguard` crate (which embeds them for `dcguard demo`). So they parse
//! only the keys they need, ignore the rest, and leave validation to
//! `dcguard check-config`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One site of `config/sites/*.toml`, with rack ranges and rack meters expanded.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    pub id: String,
    pub facts: SiteFacts,
    pub rooms: Vec<RoomSpec>,
    pub racks: Vec<RackSpec>,
    pub devices: Vec<DeviceSpec>,
    pub readers: Vec<ReaderSpec>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct SiteFacts {
    #[serde(default)]
    pub ups: UpsFacts,
    #[serde(default)]
    pub genset: GensetFacts,
    #[serde(default)]
    pub cooling: CoolingFacts,
    /// Per-rack limit by class (`storage`, `server`, `network`), kW per feed.
    #[serde(default)]
    pub rack_limit_kw: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct UpsFacts {
    #[serde(default)]
    pub backup_time_min: f64,
    /// `vrla` or `lithium` (sets the simulated recharge time).
    #[serde(default)]
    pub battery: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct GensetFacts {
    #[serde(default)]
    pub redundancy: String,
    #[serde(default)]
    pub autonomy_min_h: f64,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct CoolingFacts {
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RoomSpec {
    pub id: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone)]
pub struct RackSpec {
    pub id: String,
    pub room: String,
    pub class: String,
    /// Explicit per-rack limit, when the site file gives one.
    pub limit_kw: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReaderSpec {
    pub serial: String,
    pub room: String,
    #[serde(default)]
    pub direction: String,
}

/// A device with its profile resolved.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub id: String,
    pub room: String,
    pub rack: Option<String>,
    /// `A` or `B` for rack meters and utility meters.
    pub feed: Option<String>,
    pub transport: Transport,
    pub rated_kw: Option<f64>,
    pub fuel_tank_l: Option<f64>,
    pub fuel_l_per_h_full: Option<f64>,
    pub profile: std::sync::Arc<ProfileSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Modbus { endpoint: SocketAddr, unit: u8 },
    Mqtt { broker: String, topic: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProfileSpec {
    pub profile: ProfileHeader,
    #[serde(default)]
    pub modbus: Option<ModbusProfileSpec>,
    #[serde(default)]
    pub mqtt: Option<MqttSpec>,
    #[serde(default)]
    pub points: Vec<PointSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProfileHeader {
    pub id: String,
    pub kind: String,
    pub transport: String,
}

/// The `[modbus]` table of a Modbus profile (only what the simulators act on).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ModbusProfileSpec {
    /// Ranges a real device of this family rejects (exception 0x02).
    #[serde(default)]
    pub never_read: Vec<NeverReadSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NeverReadSpec {
    /// `holding`, `input`, `coil` or `discrete`.
    pub register: String,
    pub start: u16,
    pub count: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MqttSpec {
    pub topic: String,
    #[serde(default)]
    pub sequence_json: Option<String>,
    #[serde(default)]
    pub interval_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PointSpec {
    pub name: String,
    #[serde(default)]
    pub role: Option<String>,
    /// `holding`, `input`, `coil` or `discrete` (Modbus profiles only).
    #[serde(default)]
    pub register: Option<String>,
    #[serde(default)]
    pub address: Option<u16>,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default, rename = "enum")]
    pub enum_names: BTreeMap<String, String>,
    #[serde(default)]
    pub sentinels: Vec<SentinelSpec>,
    #[serde(default)]
    pub bit: Option<u8>,
    #[serde(default)]
    pub bit_count: Option<u8>,
    #[serde(default)]
    pub length: Option<u16>,
    #[serde(default)]
    pub valid_min: Option<f64>,
    #[serde(default)]
    pub valid_max: Option<f64>,
    /// JSON path (MQTT profiles only).
    #[serde(default)]
    pub json: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SentinelSpec {
    pub raw: u64,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads every profile under `DIR/profiles` and every site under `DIR/sites`.
pub fn load_sites(config_dir: &Path) -> Result<Vec<SiteSpec>, SpecError> {
    let profiles = load_profiles(&config_dir.join("profiles"))?;
    let mut sites = Vec::new();
    for path in toml_files(&config_dir.join("sites"))? {
        sites.push(load_site(&path, &profiles)?);
    }
    Ok(sites)
}

fn load_profiles(dir: &Path) -> Result<BTreeMap<String, std::sync::Arc<ProfileSpec>>, SpecError> {
    let mut profiles = BTreeMap::new();
    for path in toml_files(dir)? {
        let profile: ProfileSpec = parse(&path)?;
        profiles.insert(profile.profile.id.clone(), std::sync::Arc::new(profile));
    }
    Ok(profiles)
}

#[derive(Deserialize)]
struct RawSite {
    site: RawSiteHeader,
    #[serde(default)]
    access: RawAccess,
    #[serde(default)]
    rooms: Vec<RoomSpec>,
    #[serde(default)]
    racks: Vec<RawRack>,
    #[serde(default)]
    rack_meters: Vec<RawRackMeters>,
    #[serde(default)]
    devices: Vec<RawDevice>,
}

#[derive(Deserialize)]
struct RawSiteHeader {
    id: String,
    #[serde(flatten)]
    facts: SiteFacts,
}

#[derive(Deserialize, Default)]
struct RawAccess {
    #[serde(default)]
    readers: Vec<ReaderSpec>,
}

#[derive(Deserialize)]
struct RawRack {
    id: String,
    room: String,
    #[serde(default)]
    class: String,
    #[serde(default)]
    limit_kw: Option<f64>,
}

#[derive(Deserialize)]
struct RawRackMeters {
    racks: String,
    profile: String,
    endpoint: String,
    unit_start: u8,
}

#[derive(Deserialize)]
struct RawDevice {
    id: String,
    profile: String,
    #[serde(default)]
    room: String,
    #[serde(default)]
    rack: Option<String>,
    #[serde(default)]
    feed: Option<String>,
    #[serde(default)]
    modbus: Option<RawModbus>,
    #[serde(default)]
    mqtt: Option<RawMqtt>,
    #[serde(default)]
    rated_kw: Option<f64>,
    #[serde(default)]
    fuel_tank_l: Option<f64>,
    #[serde(default)]
    fuel_l_per_h_full: Option<f64>,
}

#[derive(Deserialize)]
struct RawModbus {
    endpoint: String,
    unit: u8,
}

#[derive(Deserialize)]
struct RawMqtt {
    broker: String,
    topic: String,
}

fn load_site(
    path: &Path,
    profiles: &BTreeMap<String, std::sync::Arc<ProfileSpec>>,
) -> Result<SiteSpec, SpecError> {
    let raw: RawSite = parse(path)?;
    let invalid = |message: String| SpecError::Invalid {
        path: path.to_owned(),
        message,
    };
    let profile = |id: &str| {
        profiles
            .get(id)
            .cloned()
            .ok_or_else(|| invalid(format!("unknown profile {id:?}")))
    };
    let endpoint = |text: &str| {
        text.parse::<SocketAddr>()
            .map_err(|_| invalid(format!("bad endpoint {text:?}")))
    };

    let mut racks = Vec::new();
    for rack in &raw.racks {
        for id in expand_range(&rack.id).map_err(&invalid)? {
            racks.push(RackSpec {
                id,
                room: rack.room.clone(),
                class: rack.class.clone(),
                limit_kw: rack.limit_kw,
            });
        }
    }

    let mut devices = Vec::new();
    for meters in &raw.rack_meters {
        let profile = profile(&meters.profile)?;
        let endpoint = endpoint(&meters.endpoint)?;
        for (i, rack_id) in expand_range(&meters.racks)
            .map_err(&invalid)?
            .into_iter()
            .enumerate()
        {
            let room = racks
                .iter()
                .find(|r| r.id == rack_id)
                .map(|r| r.room.clone())
                .unwrap_or_default();
            for (j, feed) in ["A", "B"].into_iter().enumerate() {
                let unit = usize::from(meters.unit_start) + 2 * i + j;
                let unit = u8::try_from(unit)
                    .map_err(|_| invalid(format!("unit {unit} of rack {rack_id} above 255")))?;
                devices.push(DeviceSpec {
                    id: format!("{rack_id}-{}", feed.to_ascii_lowercase()),
                    room: room.clone(),
                    rack: Some(rack_id.clone()),
                    feed: Some(feed.to_owned()),
                    transport: Transport::Modbus { endpoint, unit },
                    rated_kw: None,
                    fuel_tank_l: None,
                    fuel_l_per_h_full: None,
                    profile: profile.clone(),
                });
            }
        }
    }
    for device in raw.devices {
        let transport = match (&device.modbus, &device.mqtt) {
            (Some(m), None) => Transport::Modbus {
                endpoint: endpoint(&m.endpoint)?,
                unit: m.unit,
            },
            (None, Some(m)) => Transport::Mqtt {
                broker: m.broker.clone(),
                topic: m.topic.clone(),
            },
            _ => {
                return Err(invalid(format!(
                    "device {} needs exactly one of modbus or mqtt",
                    device.id
                )));
            }
        };
        devices.push(DeviceSpec {
            profile: profile(&device.profile)?,
            id: device.id,
            room: device.room,
            rack: device.rack,
            feed: device.feed,
            transport,
            rated_kw: device.rated_kw,
            fuel_tank_l: device.fuel_tank_l,
            fuel_l_per_h_full: device.fuel_l_per_h_full,
        });
    }

    Ok(SiteSpec {
        id: raw.site.id,
        facts: raw.site.facts,
        rooms: raw.rooms,
        racks,
        devices,
        readers: raw.access.readers,
    })
}

/// Expands `A01..A22` into `A01`, `A02`, ... `A22`; a plain id is returned alone.
pub fn expand_range(text: &str) -> Result<Vec<String>, String> {
    let Some((first, last)) = text.split_once("..") else {
        return Ok(vec![text.to_owned()]);
    };
    let split = |s: &str| {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, number) = s.split_at(s.len() - digits);
        number
            .parse::<u32>()
            .map(|n| (prefix.to_owned(), n, digits))
            .map_err(|_| format!("range {text:?}: {s:?} does not end in a number"))
    };
    let (prefix_a, a, width_a) = split(first)?;
    let (prefix_b, b, width_b) = split(last)?;
    if prefix_a != prefix_b || width_a != width_b || b < a {
        return Err(format!("bad range {text:?}"));
    }
    Ok((a..=b)
        .map(|n| format!("{prefix_a}{n:0width_a$}"))
        .collect())
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, SpecError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SpecError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| SpecError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::expand_range;

    #[test]
    fn ranges_expand_with_their_width() {
        assert_eq!(expand_range("A01..A03").unwrap(), ["A01", "A02", "A03"]);
        assert_eq!(expand_range("R09..R11").unwrap(), ["R09", "R10", "R11"]);
        assert!(expand_range("R9..R11").is_err(), "widths must match");
        assert_eq!(expand_range("X7").unwrap(), ["X7"]);
        assert!(expand_range("A03..A01").is_err());
        assert!(expand_range("A01..B03").is_err());
    }
}
