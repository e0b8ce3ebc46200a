//! Overrides of the rule catalogue's defaults per site, room, rack or device
//! (`[[rule_overrides]]` of a site file): the validated data and its resolution, most
//! specific first (device > rack > room > site), field by field. Pure code, no IO.
//!
//! Each field resolves on its own: a device override that sets only `on_delay` and a room
//! override that sets `priority` both apply to that device's alarms. What an override can
//! change:
//!
//! * `enabled = false`: the rule reports `Clear` ("disabled by configuration") for the
//!   selected scopes, so an alarm raised before the change clears through its off-delay and
//!   no new alarm is raised;
//! * `priority`: the condition's impact x urgency becomes a cell of the priority matrix that
//!   gives this priority (the rule's own impact preferred);
//! * `limit`: the value a numeric rule compares against, in the rule's unit
//!   ([`threshold_unit`]);
//! * `on_delay`, `off_delay`, `deadband`: the alarm lifecycle parameters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::catalogue;
use super::condition::{AlarmParams, Condition, RuleId};
use crate::config::model::{Impact, Priority, PriorityPolicy, Urgency};

/// Which part of a site an override selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// One device (most specific).
    Device(String),
    /// One rack: its rack-level conditions and the devices in it.
    Rack(String),
    /// One room: its room-level conditions and everything in it.
    Room(String),
    /// The whole site (least specific).
    Site,
}

impl Selector {
    /// 0 for a device, 1 rack, 2 room, 3 site: lower wins.
    fn rank(&self) -> u8 {
        match self {
            Selector::Device(_) => 0,
            Selector::Rack(_) => 1,
            Selector::Room(_) => 2,
            Selector::Site => 3,
        }
    }

    fn matches(&self, at: &Where<'_>) -> bool {
        match self {
            Selector::Device(d) => at.device == Some(d.as_str()),
            Selector::Rack(r) => at.rack == Some(r.as_str()),
            Selector::Room(r) => at.room == Some(r.as_str()),
            Selector::Site => true,
        }
    }
}

/// One validated `[[rule_overrides]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOverride {
    /// The site (the site file it came from).
    pub site: String,
    /// The rule of the catalogue.
    pub rule: RuleId,
    /// What it selects.
    pub selector: Selector,
    /// `Some(false)` disables the rule there; `Some(true)` re-enables it under a broader
    /// disabling override.
    pub enabled: Option<bool>,
    /// Priority of the incidents.
    pub priority: Option<Priority>,
    /// Threshold in the rule's unit.
    pub limit: Option<f64>,
    /// On-delay.
    pub on_delay: Option<Duration>,
    /// Off-delay.
    pub off_delay: Option<Duration>,
    /// Deadband in the rule's unit.
    pub deadband: Option<f64>,
}

impl RuleOverride {
    /// An override of `rule` at `site` for `selector` that changes nothing yet.
    pub fn new(site: &str, rule: RuleId, selector: Selector) -> RuleOverride {
        RuleOverride {
            site: site.to_owned(),
            rule,
            selector,
            enabled: None,
            priority: None,
            limit: None,
            on_delay: None,
            off_delay: None,
            deadband: None,
        }
    }
}

/// Where a condition applies, for matching selectors.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Where<'a> {
    /// Its room.
    pub room: Option<&'a str>,
    /// Its rack.
    pub rack: Option<&'a str>,
    /// Its device.
    pub device: Option<&'a str>,
}

impl<'a> Where<'a> {
    /// The location of a condition.
    pub fn of(c: &'a Condition) -> Where<'a> {
        Where {
            room: c.room.as_deref(),
            rack: c.rack.as_deref(),
            device: c.device.as_deref(),
        }
    }
}

/// The overridden fields for one condition; `None` keeps the catalogue's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// Enabled or not.
    pub enabled: Option<bool>,
    /// Priority.
    pub priority: Option<Priority>,
    /// Threshold.
    pub limit: Option<f64>,
    /// On-delay.
    pub on_delay: Option<Duration>,
    /// Off-delay.
    pub off_delay: Option<Duration>,
    /// Deadband.
    pub deadband: Option<f64>,
}

impl Resolved {
    /// False only when an override disables the rule here.
    pub fn enabled(&self) -> bool {
        self.enabled != Some(false)
    }

    /// `base` with the overridden lifecycle parameters.
    pub fn params(&self, mut base: AlarmParams) -> AlarmParams {
        if let Some(d) = self.on_delay {
            base.on_delay = d;
        }
        if let Some(d) = self.off_delay {
            base.off_delay = d;
        }
        if let Some(d) = self.deadband {
            base.deadband = d;
        }
        base
    }
}

/// Every override, indexed by site and rule.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Site -> rule -> overrides, most specific first (looked up by `&str`, no allocation).
    by_site: HashMap<Arc<str>, HashMap<RuleId, Vec<RuleOverride>>>,
}

impl Overrides {
    /// Indexes `overrides`.
    pub fn new(overrides: impl IntoIterator<Item = RuleOverride>) -> Overrides {
        let mut by_site: HashMap<Arc<str>, HashMap<RuleId, Vec<RuleOverride>>> = HashMap::new();
        for o in overrides {
            by_site
                .entry(Arc::from(o.site.as_str()))
                .or_default()
                .entry(o.rule)
                .or_default()
                .push(o);
        }
        for list in by_site.values_mut().flat_map(|rules| rules.values_mut()) {
            list.sort_by_key(|o| o.selector.rank());
        }
        Overrides { by_site }
    }

    /// True when there is nothing to override.
    pub fn is_empty(&self) -> bool {
        self.by_site.is_empty()
    }

    /// The overridden fields for `rule` at `site` and `at`: each field from the most
    /// specific matching override that sets it.
    pub fn resolve(&self, site: &str, rule: RuleId, at: Where<'_>) -> Resolved {
        let mut r = Resolved::default();
        let Some(list) = self.by_site.get(site).and_then(|rules| rules.get(rule)) else {
            return r;
        };
        for o in list.iter().filter(|o| o.selector.matches(&at)) {
            r.enabled = r.enabled.or(o.enabled);
            r.priority = r.priority.or(o.priority);
            r.limit = r.limit.or(o.limit);
            r.on_delay = r.on_delay.or(o.on_delay);
            r.off_delay = r.off_delay.or(o.off_delay);
            r.deadband = r.deadband.or(o.deadband);
        }
        r
    }

    /// The overridden fields for a condition.
    pub fn for_condition(&self, c: &Condition) -> Resolved {
        self.resolve(&c.key.site, c.key.rule, Where::of(c))
    }
}

/// The unit of a rule's `limit`, for the rules that compare a value with one; `None` for
/// discrete rules and counts (no `limit` override).
pub fn threshold_unit(rule: &str) -> Option<&'static str> {
    use catalogue as c;
    let units: [(&c::RuleSpec, &str); 12] = [
        (&c::HALL_TEMPERATURE_HIGH, "degC"),
        (&c::HALL_TEMPERATURE_LOW, "degC"),
        (&c::HALL_TEMPERATURE_NEAR_HIGH, "degC"),
        (&c::HALL_TEMPERATURE_NEAR_LOW, "degC"),
        (&c::HALL_HUMIDITY_HIGH, "%RH"),
        (&c::HALL_HUMIDITY_LOW, "%RH"),
        (&c::HALL_TEMPERATURE_RATE, "degC"),
        (&c::RACK_FEED_OVERLOAD, "kW"),
        (&c::RACK_REDUNDANCY_LOST, "kW"),
        (&c::UPS_RUNTIME_LOW, "min"),
        (&c::FUEL_AUTONOMY_LOW, "h"),
        (&c::FUEL_AUTONOMY_CRITICAL, "h"),
    ];
    units.iter().find(|(s, _)| s.id == rule).map(|(_, u)| *u)
}

/// The impact x urgency that gives `priority` under `policy`, keeping `impact` when a cell
/// of its column does; `None` when no cell of the matrix gives it.
pub fn cell_for(
    policy: &PriorityPolicy,
    priority: Priority,
    impact: Impact,
) -> Option<(Impact, Urgency)> {
    const IMPACTS: [Impact; 3] = [Impact::High, Impact::Medium, Impact::Low];
    const URGENCIES: [Urgency; 3] = [Urgency::High, Urgency::Medium, Urgency::Low];
    let column = URGENCIES
        .iter()
        .find(|&&u| policy.priority(u, impact) == priority)
        .map(|&u| (impact, u));
    column.or_else(|| {
        IMPACTS.iter().find_map(|&i| {
            URGENCIES
                .iter()
                .find(|&&u| policy.priority(u, i) == priority)
                .map(|&u| (i, u))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(selector: Selector) -> RuleOverride {
        RuleOverride::new("dc", "hall_temperature_high", selector)
    }

    #[test]
    fn most_specific_wins_per_field() {
        let site = RuleOverride {
            limit: Some(28.0),
            on_delay: Some(Duration::from_secs(10)),
            priority: Some(Priority::P3),
            ..o(Selector::Site)
        };
        let room = RuleOverride {
            limit: Some(26.0),
            ..o(Selector::Room("dh1".into()))
        };
        let rack = RuleOverride {
            on_delay: Some(Duration::from_secs(5)),
            ..o(Selector::Rack("A01".into()))
        };
        let device = RuleOverride {
            limit: Some(25.0),
            ..o(Selector::Device("th-1".into()))
        };
        // Given in the least helpful order on purpose.
        let all = Overrides::new([site, device, room, rack]);
        let at = Where {
            room: Some("dh1"),
            rack: Some("A01"),
            device: Some("th-1"),
        };
        let r = all.resolve("dc", "hall_temperature_high", at);
        assert_eq!(r.limit, Some(25.0));
        assert_eq!(r.on_delay, Some(Duration::from_secs(5)));
        assert_eq!(r.priority, Some(Priority::P3));
        assert!(r.enabled());

        let other_device = Where {
            device: Some("th-2"),
            ..at
        };
        let r = all.resolve("dc", "hall_temperature_high", other_device);
        assert_eq!(r.limit, Some(26.0), "room beats site");
        assert_eq!(r.on_delay, Some(Duration::from_secs(5)));

        let other_room = Where {
            room: Some("dh2"),
            rack: None,
            device: Some("th-9"),
        };
        let r = all.resolve("dc", "hall_temperature_high", other_room);
        assert_eq!(r.limit, Some(28.0), "site only");
        assert_eq!(r.on_delay, Some(Duration::from_secs(10)));
    }

    #[test]
    fn other_sites_and_rules_are_untouched() {
        let all = Overrides::new([RuleOverride {
            enabled: Some(false),
            ..o(Selector::Site)
        }]);
        assert!(
            !all.resolve("dc", "hall_temperature_high", Where::default())
                .enabled()
        );
        assert_eq!(
            all.resolve("drc", "hall_temperature_high", Where::default()),
            Resolved::default()
        );
        assert_eq!(
            all.resolve("dc", "hall_temperature_low", Where::default()),
            Resolved::default()
        );
        assert!(Overrides::default().is_empty());
    }

    #[test]
    fn a_device_can_re_enable_under_a_disabled_room() {
        let all = Overrides::new([
            RuleOverride {
                enabled: Some(false),
                ..o(Selector::Room("dh1".into()))
            },
            RuleOverride {
                enabled: Some(true),
                ..o(Selector::Device("th-1".into()))
            },
        ]);
        let room = Where {
            room: Some("dh1"),
            ..Where::default()
        };
        assert!(!all.resolve("dc", "hall_temperature_high", room).enabled());
        let dev = Where {
            device: Some("th-1"),
            ..room
        };
        assert!(all.resolve("dc", "hall_temperature_high", dev).enabled());
    }

    #[test]
    fn params_take_only_what_is_set() {
        let base = catalogue::default_params("hall_temperature_high").unwrap();
        let r = Resolved {
            off_delay: Some(Duration::from_secs(1)),
            deadband: Some(0.0),
            ..Resolved::default()
        };
        let p = r.params(base.clone());
        assert_eq!(p.on_delay, base.on_delay);
        assert_eq!(p.off_delay, Duration::from_secs(1));
        assert_eq!(p.deadband, 0.0);
        assert_eq!(p.latching, base.latching);
    }

    #[test]
    fn threshold_units_cover_numeric_rules_only() {
        assert_eq!(threshold_unit("hall_humidity_high"), Some("%RH"));
        assert_eq!(threshold_unit("ups_runtime_low"), Some("min"));
        assert_eq!(threshold_unit("vesda_fire1"), None);
        assert_eq!(threshold_unit("genset_redundancy_lost"), None);
        assert_eq!(threshold_unit("nope"), None);
    }

    #[test]
    fn cells_for_priorities_of_the_shipped_matrix() {
        use Impact as I;
        use Priority as P;
        use Urgency as U;
        let matrix = [
            [P::P1, P::P2, P::P3],
            [P::P2, P::P3, P::P4],
            [P::P3, P::P4, P::P5],
        ];
        let policy = PriorityPolicy {
            matrix,
            targets: [crate::config::model::Target {
                hours: 3,
                clock: crate::config::model::Clock::TwentyFourSeven,
            }; 5],
        };
        assert_eq!(cell_for(&policy, P::P1, I::High), Some((I::High, U::High)));
        assert_eq!(cell_for(&policy, P::P3, I::High), Some((I::High, U::Low)));
        // P4 is not in the high-impact column: the first cell that gives it.
        assert_eq!(cell_for(&policy, P::P4, I::High), Some((I::Medium, U::Low)));
        assert_eq!(cell_for(&policy, P::P5, I::Medium), Some((I::Low, U::Low)));
        let mut all_p1 = policy.clone();
        all_p1.matrix = [[P::P1; 3]; 3];
        assert_eq!(cell_for(&all_p1, P::P2, I::High), None);
    }
}
