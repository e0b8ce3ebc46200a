//! The shipped rule catalogue: each rule's id, condition class, default impact and urgency
//! (hence its default priority) and its default alarm parameters.
//!
//! The priority of a rule is the facility-spec matrix applied to its impact and urgency.
//! Every facility rule has impact **high** (the condition threatens the data hall or the
//! supply that keeps it running); the urgency gives the priority: high -> P1, medium -> P2,
//! low -> P3. The only P4 (the overdue genset load test) is medium impact x low urgency.
//!
//! # Alarm parameters (ISA-18.2 / OPC UA Part 9 terms)
//!
//! * **on-delay**: temperatures 60 s (a 10 s sensor must agree over several samples before
//!   a P1 is raised: anchors section 9); humidity 300 s (RH moves with every door opening
//!   and PAC humidifier cycle, and a humidity breach harms over hours, not seconds); rack
//!   feeds 30 s (three 10 s polls: start-up inrush is not an overload); fire and water 0
//!   (the detector already applies its own delays, and life safety does not wait); UPS on
//!   battery 0 (the 10 min backup clock is already running); device communication 30 s
//!   (the source has already waited `stale_after_intervals` before reporting stale).
//! * **off-delay**: long enough that a value hovering at the limit is one alarm, not many:
//!   60-600 s depending on how slowly the quantity moves (fuel level sloshes; utility
//!   feeds come back and drop again during a switching storm).
//! * **deadband**: 0.5 degC for temperatures and 2 %RH for humidity (anchors section 9),
//!   0.1 kW for rack feeds (meter noise at 230 V), 1 min of UPS runtime, 0.5 h of fuel
//!   autonomy; 0 for discrete inputs and counts, which carry no margin.
//! * **latching**: VESDA Fire 1/Fire 2 and water stay raised until acknowledged even when
//!   the input returns to normal: someone must go and look.
//! * **chattering**: 5 transitions in 10 min for every rule (the default; stricter
//!   than ISA's 3 per minute rule of thumb because facility values move slowly).

use std::time::Duration;

use super::condition::{AlarmParams, ConditionClass, RuleId};
use crate::config::model::{Impact, Urgency};

/// One rule of the catalogue with its shipped defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// Stable id, used in condition keys and incidents.
    pub id: RuleId,
    /// The class, for incident grouping.
    pub class: ConditionClass,
    /// Default impact.
    pub impact: Impact,
    /// Default urgency.
    pub urgency: Urgency,
    /// Default lifecycle parameters.
    pub params: AlarmParams,
    /// What the rule checks, for humans (docs, `check-config`, the web page).
    pub what: &'static str,
}

const CHATTER_TRANSITIONS: u32 = 5;
const CHATTER_WINDOW: Duration = Duration::from_secs(600);

/// Parameters: on-delay and off-delay in seconds, deadband in the rule's unit, latching.
const fn params(on_s: u64, off_s: u64, deadband: f64, latching: bool) -> AlarmParams {
    AlarmParams {
        on_delay: Duration::from_secs(on_s),
        off_delay: Duration::from_secs(off_s),
        deadband,
        latching,
        chatter_transitions: CHATTER_TRANSITIONS,
        chatter_window: CHATTER_WINDOW,
    }
}

macro_rules! rules {
    ($( $konst:ident = $id:literal, $class:ident, $impact:ident x $urgency:ident,
        params($on:expr, $off:expr, $db:expr, $latch:expr), $what:literal; )*) => {
        $(
            #[doc = concat!("`", $id, "`: ", $what)]
            pub static $konst: RuleSpec = RuleSpec {
                id: $id,
                class: ConditionClass::$class,
                impact: Impact::$impact,
                urgency: Urgency::$urgency,
                params: params($on, $off, $db, $latch),
                what: $what,
            };
        )*

        /// Every rule of the catalogue, in the order of the table.
        pub static CATALOGUE: &[&RuleSpec] = &[ $( &$konst, )* ];
    };
}

rules! {
    HALL_TEMPERATURE_HIGH = "hall_temperature_high", Temperature, High x High,
        params(60, 120, 0.5, false), "temperature above the room's maximum (per sensor and per room)";
    HALL_TEMPERATURE_LOW = "hall_temperature_low", Temperature, High x High,
        params(60, 120, 0.5, false), "temperature below the room's minimum (per sensor and per room)";
    HALL_TEMPERATURE_NEAR_HIGH = "hall_temperature_near_high", Temperature, High x Low,
        params(120, 300, 0.5, false), "early warning: temperature within 1 degC of the maximum";
    HALL_TEMPERATURE_NEAR_LOW = "hall_temperature_near_low", Temperature, High x Low,
        params(120, 300, 0.5, false), "early warning: temperature within 1 degC of the minimum";
    HALL_HUMIDITY_HIGH = "hall_humidity_high", Humidity, High x High,
        params(300, 300, 2.0, false), "relative humidity above the room's maximum (dew point shown)";
    HALL_HUMIDITY_LOW = "hall_humidity_low", Humidity, High x High,
        params(300, 300, 2.0, false), "relative humidity below the room's minimum (dew point shown)";
    HALL_TEMPERATURE_RATE = "hall_temperature_rate", Temperature, High x Medium,
        params(0, 300, 0.5, false), "temperature changed by more than 5 degC within 15 min";
    RACK_FEED_OVERLOAD = "rack_feed_overload", RackPower, High x High,
        params(30, 60, 0.1, false), "one rack feed above the rack limit";
    RACK_REDUNDANCY_LOST = "rack_redundancy_lost", RackPower, High x Medium,
        params(60, 300, 0.1, false), "feeds A+B above the rack limit: the rack no longer survives losing a feed";
    UTILITY_FEED_LOST = "utility_feed_lost", Utility, High x Medium,
        params(5, 60, 0.0, false), "a utility (PLN) feed is lost";
    UPS_ON_BATTERY = "ups_on_battery", Ups, High x High,
        params(0, 30, 0.0, false), "a UPS runs on battery";
    UPS_RUNTIME_LOW = "ups_runtime_low", Ups, High x High,
        params(0, 60, 1.0, false), "UPS runtime left below the site's backup time";
    GENSET_NOT_CARRYING_LOAD = "genset_not_carrying_load", Genset, High x High,
        params(0, 0, 0.0, false), "utility lost and the gensets do not carry the load within the takeover time";
    GENSET_SHUTDOWN = "genset_shutdown", Genset, High x High,
        params(0, 0, 0.0, false), "a genset shutdown or electrical trip alarm while the gensets are needed";
    GENSET_WARNING = "genset_warning", Genset, High x Low,
        params(10, 60, 0.0, false), "a genset warning alarm";
    UPS_FAULT = "ups_fault", Ups, High x Medium,
        params(10, 60, 0.0, false), "a UPS unit reports a fault";
    PAC_FAULT = "pac_fault", Cooling, High x Medium,
        params(30, 60, 0.0, false), "a precision air conditioner reports a fault";
    GENSET_REDUNDANCY_LOST = "genset_redundancy_lost", Genset, High x Medium,
        params(60, 120, 0.0, false), "available gensets below the site's redundancy";
    UPS_REDUNDANCY_LOST = "ups_redundancy_lost", Ups, High x Medium,
        params(60, 120, 0.0, false), "available UPS modules below the site's redundancy";
    COOLING_REDUNDANCY_LOST = "cooling_redundancy_lost", Cooling, High x Medium,
        params(60, 120, 0.0, false), "available PACs of a room below the site's redundancy";
    FUEL_AUTONOMY_LOW = "fuel_autonomy_low", Fuel, High x Medium,
        params(300, 600, 0.5, false), "fuel autonomy at the present load below the site design";
    FUEL_AUTONOMY_CRITICAL = "fuel_autonomy_critical", Fuel, High x High,
        params(60, 600, 0.5, false), "fuel autonomy at the present load below 4 h";
    VESDA_ALERT = "vesda_alert", Fire, High x Low,
        params(0, 60, 0.0, false), "VESDA smoke level Alert or higher";
    VESDA_ACTION = "vesda_action", Fire, High x Medium,
        params(0, 60, 0.0, false), "VESDA smoke level Action or higher";
    VESDA_FIRE1 = "vesda_fire1", Fire, High x High,
        params(0, 0, 0.0, true), "VESDA smoke level Fire 1 or higher";
    VESDA_FIRE2 = "vesda_fire2", Fire, High x High,
        params(0, 0, 0.0, true), "VESDA smoke level Fire 2";
    WATER_DETECTED = "water_detected", Water, High x High,
        params(0, 60, 0.0, true), "water detected (P1 in data halls, UPS and battery rooms; P2 elsewhere)";
    DEVICE_COMM_LOST = "device_comm_lost", Communication, High x Low,
        params(30, 60, 0.0, false), "communication with a device lost";
    MONITORING_BLIND = "monitoring_blind", Communication, High x High,
        params(30, 60, 0.0, false), "more than half of a site's devices lost";
    GENSET_LOAD_TEST_OVERDUE = "genset_load_test_overdue", LoadTest, Medium x Low,
        params(0, 0, 0.0, false), "no qualifying genset load test within the site's interval";
}

/// The rule with this id.
pub fn spec(id: &str) -> Option<&'static RuleSpec> {
    CATALOGUE.iter().copied().find(|r| r.id == id)
}

/// The shipped lifecycle parameters of a rule; `None` for an unknown id.
pub fn default_params(id: &str) -> Option<AlarmParams> {
    spec(id).map(|r| r.params.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ids_are_unique_snake_case() {
        let ids: BTreeSet<_> = CATALOGUE.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), CATALOGUE.len());
        for id in ids {
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{id}"
            );
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(spec("vesda_fire2"), Some(&VESDA_FIRE2));
        assert_eq!(spec("nope"), None);
        let p = default_params("hall_temperature_high").unwrap();
        assert_eq!(p.on_delay, Duration::from_secs(60));
        assert_eq!(p.deadband, 0.5);
        assert_eq!(p.chatter_transitions, 5);
        assert_eq!(p.chatter_window, Duration::from_secs(600));
        assert_eq!(default_params("hall_humidity_low").unwrap().deadband, 2.0);
        assert_eq!(
            default_params("water_detected").unwrap().on_delay,
            Duration::ZERO
        );
        assert!(default_params("vesda_fire1").unwrap().latching);
    }
}
