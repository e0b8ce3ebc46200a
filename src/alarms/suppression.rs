//! Suppression by design and planned maintenance windows: which alarms they cover, and the rule
//! that Fire and Water alarms are never suppressed by either.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rules::condition::ConditionClass;

use super::names;
use super::types::{AlarmInfo, AlarmKey};

/// Which alarms of a site a window or a suppression covers. Each non-empty list must match
/// (AND); an empty list matches everything, so an all-empty scope covers the whole site
/// (still never its Fire or Water alarms).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// Condition classes covered.
    #[serde(with = "names::classes")]
    pub classes: Vec<ConditionClass>,
    /// Room ids covered.
    pub rooms: Vec<String>,
    /// Device ids covered.
    pub devices: Vec<String>,
}

impl Scope {
    /// The scope of a monthly genset load test: utility, UPS and genset alarms.
    pub fn genset_load_test() -> Scope {
        Scope {
            classes: vec![
                ConditionClass::Utility,
                ConditionClass::Ups,
                ConditionClass::Genset,
            ],
            rooms: Vec::new(),
            devices: Vec::new(),
        }
    }

    /// True when an alarm with this context is in scope (protected classes excluded).
    pub fn covers(&self, info: &AlarmInfo) -> bool {
        if never_suppressed(info.class) {
            return false;
        }
        let class_ok = self.classes.is_empty() || self.classes.contains(&info.class);
        let room_ok = self.rooms.is_empty()
            || info
                .room
                .as_ref()
                .is_some_and(|r| self.rooms.iter().any(|x| x == r));
        let device_ok = self.devices.is_empty()
            || info
                .device
                .as_ref()
                .is_some_and(|d| self.devices.iter().any(|x| x == d));
        class_ok && room_ok && device_ok
    }
}

/// Fire and Water alarms are never suppressed by design or by a maintenance window; only an
/// audited shelve or out-of-service by a named operator can silence them.
pub fn never_suppressed(class: ConditionClass) -> bool {
    matches!(class, ConditionClass::Fire | ConditionClass::Water)
}

/// A planned maintenance window (e.g. the monthly genset load test): the alarms in its scope
/// are still evaluated and recorded, flagged suppressed, and open no incident while it lasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    /// Stable id (e.g. the work order).
    pub id: String,
    /// The site it applies to.
    pub site: String,
    /// What it covers.
    pub scope: Scope,
    /// Start, inclusive.
    pub start: DateTime<Utc>,
    /// End, exclusive.
    pub end: DateTime<Utc>,
    /// Why, for the audit trail and the flag on transitions.
    pub reason: String,
}

impl MaintenanceWindow {
    /// True when the window is running at `now` (start inclusive, end exclusive).
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.start <= now && now < self.end
    }

    /// True when the window covers this alarm at `now`.
    pub fn covers(&self, key: &AlarmKey, info: &AlarmInfo, now: DateTime<Utc>) -> bool {
        self.is_open(now) && self.site == key.site && self.scope.covers(info)
    }
}

/// What a suppression by design applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SuppressTarget {
    /// One alarm.
    Key(AlarmKey),
    /// Every alarm of a site in a scope, including alarms first seen later.
    Matching {
        /// The site.
        site: String,
        /// The scope within it.
        scope: Scope,
    },
}

/// A suppression by design in force (e.g. "PAC-3 in standby"), until lifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesignSuppression {
    /// Its id, for lifting it.
    pub id: String,
    /// What it covers.
    pub target: SuppressTarget,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: DateTime<Utc>,
}

impl DesignSuppression {
    /// True when it covers this alarm (Fire and Water never).
    pub fn covers(&self, key: &AlarmKey, info: &AlarmInfo) -> bool {
        if never_suppressed(info.class) {
            return false;
        }
        match &self.target {
            SuppressTarget::Key(k) => k == key,
            SuppressTarget::Matching { site, scope } => *site == key.site && scope.covers(info),
        }
    }
}
