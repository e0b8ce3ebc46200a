//! Scenario timelines (`firmware-stubs/scenarios/*.toml`): at time t, do an action; and the clock task.
//!
//! A scenario file:
//!
//! ```toml
//! name = "dc-cooling-failure"
//! description = "two PACs of data hall 1 fail; the hall warms past 27 degC"
//! site = "dc"
//! seed = 7                  # optional; a seed given on the command line wins
//!
//! [[events]]
//! at_secs = 30
//! action = "fail"
//! device = "pac-dh1-01"
//! ```
//!
//! Actions and their fields (unknown fields are errors):
//!
//! | action | fields | effect |
//! |---|---|---|
//! | `fail` / `restore` | `device` | the device's physical failure (a PAC stops cooling, a genset trips, a UPS goes to bypass, a rack meter's feed breaker trips, an ATS sticks, a utility meter's feed is lost, a sensor dies) |
//! | `set` | `device`, `point`, `value` (number, bool, string) or `raw` (register value, e.g. `0xFFFC`) | forces a point until `unset` |
//! | `unset` | `device`, `point` | releases a forced point |
//! | `ramp` | `device`, `point`, `to`, `over_secs` | forces a point, moving linearly from its current value |
//! | `cut_utility` / `restore_utility` | `feed` (`A` or `B`) | a PLN feed is lost / returns |
//! | `silence` / `unsilence` | `device` | the device stops / resumes answering (Modbus) or publishing (MQTT) |
//! | `exception` / `clear_exception` | `device`, `code`, `times` (optional) | every request (or the next `times`) answered with this Modbus exception code |
//! | `delay` / `clear_delay` | `device`, `millis` | answers arrive late |
//! | `drop_connection` | `device` | the device's Modbus endpoint closes its open connections |
//! | `corrupt` / `clear_corrupt` | `device`, `frame` (`transaction_id`, `unit`, `function_code`, `protocol_id`, `byte_count`, `length`), `times` (optional) | responses are damaged on the wire in that way |
//! | `leak` | `device`, `on` | a leak sensor detects water (or dries) |
//! | `smoke` | `device`, `to` (%obs/m), `over_secs` (default 0) | smoke at a VESDA detector rises or falls |
//!
//! [`Timeline`] applies due events to a [`World`]; [`spawn_clock`] drives it from tokio
//! time only, so a test under `tokio::time::pause()` is deterministic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::spec::SiteSpec;
use crate::world::{SharedWorld, WireCorruption, World};

/// A utility (PLN) feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Feed {
    #[serde(rename = "A", alias = "a")]
    A,
    #[serde(rename = "B", alias = "b")]
    B,
}

impl Feed {
    /// 0 for A, 1 for B.
    pub fn index(self) -> usize {
        match self {
            Feed::A => 0,
            Feed::B => 1,
        }
    }
}

/// A value written in a scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ScenarioValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// One thing a scenario does to the world at its time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    Fail {
        device: String,
    },
    Restore {
        device: String,
    },
    Set {
        device: String,
        point: String,
        #[serde(default)]
        value: Option<ScenarioValue>,
        #[serde(default)]
        raw: Option<u64>,
    },
    Unset {
        device: String,
        point: String,
    },
    Ramp {
        device: String,
        point: String,
        to: f64,
        over_secs: f64,
    },
    CutUtility {
        feed: Feed,
    },
    RestoreUtility {
        feed: Feed,
    },
    Silence {
        device: String,
    },
    Unsilence {
        device: String,
    },
    Exception {
        device: String,
        code: u8,
        /// Only the next `times` requests; until `clear_exception` when absent.
        #[serde(default)]
        times: Option<u32>,
    },
    ClearException {
        device: String,
    },
    Delay {
        device: String,
        millis: u64,
    },
    ClearDelay {
        device: String,
    },
    DropConnection {
        device: String,
    },
    Corrupt {
        device: String,
        frame: WireCorruption,
        /// Only the next `times` responses; until `clear_corrupt` when absent.
        #[serde(default)]
        times: Option<u32>,
    },
    ClearCorrupt {
        device: String,
    },
    Leak {
        device: String,
        on: bool,
    },
    Smoke {
        device: String,
        to: f64,
        #[serde(default)]
        over_secs: f64,
    },
}

impl Action {
    /// The device the action targets, if it targets one.
    pub fn device(&self) -> Option<&str> {
        match self {
            Action::CutUtility { .. } | Action::RestoreUtility { .. } => None,
            Action::Fail { device }
            | Action::Restore { device }
            | Action::Set { device, .. }
            | Action::Unset { device, .. }
            | Action::Ramp { device, .. }
            | Action::Silence { device }
            | Action::Unsilence { device }
            | Action::Exception { device, .. }
            | Action::ClearException { device }
            | Action::Delay { device, .. }
            | Action::ClearDelay { device }
            | Action::DropConnection { device }
            | Action::Corrupt { device, .. }
            | Action::ClearCorrupt { device }
            | Action::Leak { device, .. }
            | Action::Smoke { device, .. } => Some(device),
        }
    }

    /// Checks the fields an action needs beyond their types.
    fn check(&self) -> Result<(), String> {
        match self {
            Action::Set { value, raw, .. } => match (value, raw) {
                (Some(_), None) | (None, Some(_)) => Ok(()),
                _ => Err("set needs exactly one of `value` and `raw`".to_owned()),
            },
            Action::Ramp { over_secs, to, .. } if !over_secs.is_finite() || *over_secs < 0.0 => {
                Err(format!(
                    "over_secs: found {over_secs} (to {to}); expected >= 0"
                ))
            }
            Action::Smoke { over_secs, .. } if !over_secs.is_finite() || *over_secs < 0.0 => {
                Err(format!("over_secs: found {over_secs}; expected >= 0"))
            }
            Action::Smoke { to, .. } if !to.is_finite() || *to < 0.0 => Err(format!(
                "to: found {to}; expected a smoke level >= 0 %obs/m"
            )),
            Action::Exception { code: 0, .. } => {
                Err("code: found 0; expected a Modbus exception code 1..=255".to_owned())
            }
            _ => Ok(()),
        }
    }
}

/// An action with its time.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: Duration,
    pub action: Action,
}

/// A parsed scenario; events sorted by time (file order kept for equal times).
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub site: String,
    pub seed: Option<u64>,
    pub events: Vec<Event>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: events[{index}]: {message}")]
    Event {
        origin: String,
        index: usize,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    site: String,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    events: Vec<toml::Value>,
}

impl Scenario {
    /// Reads one scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Reads every `*.toml` of a directory, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
        let io = |source| ScenarioError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Scenario::load(p)).collect()
    }

    /// Parses scenario text; `origin` (a file name) prefixes every error.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let parse_error = |message: String| ScenarioError::Parse {
            origin: origin.to_owned(),
            message: message.trim_end().to_owned(),
        };
        let raw: RawScenario = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let mut events = Vec::with_capacity(raw.events.len());
        for (index, value) in raw.events.into_iter().enumerate() {
            let event_error = |message: String| ScenarioError::Event {
                origin: origin.to_owned(),
                index,
                message,
            };
            let toml::Value::Table(mut table) = value else {
                return Err(event_error("expected a table".to_owned()));
            };
            let at_secs = match table.remove("at_secs") {
                Some(toml::Value::Integer(n)) if n >= 0 => n as f64,
                Some(toml::Value::Float(f)) if f.is_finite() && f >= 0.0 => f,
                Some(other) => {
                    return Err(event_error(format!(
                        "at_secs: found {other}; expected seconds >= 0"
                    )));
                }
                None => return Err(event_error("missing field `at_secs`".to_owned())),
            };
            let action: Action = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| event_error(e.message().trim_end().to_owned()))?;
            action.check().map_err(event_error)?;
            events.push(Event {
                at: Duration::from_secs_f64(at_secs),
                action,
            });
        }
        events.sort_by_key(|e| e.at);
        Ok(Scenario {
            name: raw.name,
            description: raw.description,
            site: raw.site,
            seed: raw.seed,
            events,
        })
    }

    /// Every problem of this scenario against a site: wrong site id, unknown devices.
    pub fn check_against(&self, site: &SiteSpec) -> Vec<String> {
        let mut problems = Vec::new();
        if self.site != site.id {
            problems.push(format!(
                "scenario {}: site {:?} checked against site {:?}",
                self.name, self.site, site.id
            ));
        }
        for (index, event) in self.events.iter().enumerate() {
            if let Some(device) = event.action.device()
                && !site.devices.iter().any(|d| d.id == device)
            {
                problems.push(format!(
                    "scenario {}: events[{index}]: device {device:?} is not a device of site {}",
                    self.name, site.id
                ));
            }
        }
        problems
    }
}

/// The events of a scenario still to apply.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    events: Vec<Event>,
    next: usize,
}

impl Timeline {
    pub fn new(scenario: Option<&Scenario>) -> Timeline {
        Timeline {
            events: scenario.map(|s| s.events.clone()).unwrap_or_default(),
            next: 0,
        }
    }

    /// True when every event has been applied.
    pub fn is_done(&self) -> bool {
        self.next >= self.events.len()
    }

    /// Applies every event due at or before the world's simulated time, in order.
    /// Returns the errors of events that could not be applied (they are skipped).
    pub fn apply_due(&mut self, world: &mut World) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(event) = self.events.get(self.next) {
            if event.at > world.elapsed() {
                break;
            }
            if let Err(e) = world.apply(&event.action) {
                errors.push(format!("at {:?}: {e}", event.at));
            }
            self.next += 1;
        }
        errors
    }

    /// Steps the world by `dt`, then applies the events that became due.
    pub fn advance(&mut self, world: &mut World, dt: Duration) -> Vec<String> {
        world.step(dt);
        self.apply_due(world)
    }
}

/// Spawns the clock: every `tick` of tokio time it steps the world by `tick` and applies
/// the scenario's due events. Ends when `cancel` fires. Uses tokio time only, so it is
/// deterministic under `tokio::time::pause()`.
pub fn spawn_clock(
    world: SharedWorld,
    scenario: Option<Scenario>,
    tick: Duration,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let tick = tick.max(Duration::from_millis(1));
        let mut timeline = Timeline::new(scenario.as_ref());
        report(&lock(&world, |w| timeline.apply_due(w)));
        let start = tokio::time::Instant::now();
        let mut interval = tokio::time::interval_at(start + tick, tick);
        // Burst: a late tick is caught up, so simulated time keeps pace with tokio time.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = interval.tick() => {
                    let errors = lock(&world, |w| timeline.advance(w, tick));
                    report(&errors);
                }
            }
        }
    })
}

fn lock<T>(world: &SharedWorld, f: impl FnOnce(&mut World) -> T) -> T {
    // A panic while holding the lock cannot leave the world half-stepped in a way that
    // matters to a simulator; keep serving rather than cascade the panic.
    let mut guard = world.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

fn report(errors: &[String]) {
    for e in errors {
        tracing::warn!(error = %e, "scenario event not applied");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_faults_parse_with_an_optional_count() {
        let text = r#"
name = "wire"
description = "damaged frames and a burst of busy answers"
site = "dc"

[[events]]
at_secs = 1
action = "corrupt"
device = "ups-1"
frame = "transaction_id"
times = 2

[[events]]
at_secs = 2
action = "exception"
device = "ups-1"
code = 6
times = 3

[[events]]
at_secs = 3
action = "clear_corrupt"
device = "ups-1"
"#;
        let scenario = Scenario::parse(text, "test").unwrap();
        let actions: Vec<&Action> = scenario.events.iter().map(|e| &e.action).collect();
        assert_eq!(
            actions,
            vec![
                &Action::Corrupt {
                    device: "ups-1".into(),
                    frame: WireCorruption::TransactionId,
                    times: Some(2),
                },
                &Action::Exception {
                    device: "ups-1".into(),
                    code: 6,
                    times: Some(3),
                },
                &Action::ClearCorrupt {
                    device: "ups-1".into(),
                },
            ]
        );
        assert!(Scenario::parse(&text.replace("transaction_id", "tid"), "test").is_err());
    }
}
