//! The closed vocabularies of profiles: device kinds, point roles and engineering units.
//!
//! A role says what a point means independently of the vendor's register name; rules and
//! the simulators work on roles. Each role belongs to exactly one device kind.

use std::fmt;

use serde::Deserialize;

/// The kind of a device, given by its profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Uninterruptible power supply module.
    Ups,
    /// Precision air conditioner (room or in-row).
    Pac,
    /// Genset controller.
    Genset,
    /// VESDA aspirating smoke detector.
    Vesda,
    /// One feed (A or B) of a rack's power meter.
    RackMeter,
    /// Utility (PLN) feed meter.
    UtilityMeter,
    /// Automatic transfer switch.
    Ats,
    /// Temperature/humidity sensor.
    EnvSensor,
    /// Water leak sensor.
    LeakSensor,
}

impl DeviceKind {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Ups => "ups",
            DeviceKind::Pac => "pac",
            DeviceKind::Genset => "genset",
            DeviceKind::Vesda => "vesda",
            DeviceKind::RackMeter => "rack_meter",
            DeviceKind::UtilityMeter => "utility_meter",
            DeviceKind::Ats => "ats",
            DeviceKind::EnvSensor => "env_sensor",
            DeviceKind::LeakSensor => "leak_sensor",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! roles {
    ($( $kind:ident { $( $var:ident = $name:literal ),* $(,)? } )*) => {
        /// What a point means. `GensetAlarm` carries the alarm's name from
        /// `genset.alarm.<name>` (a 4-bit DSE alarm nibble).
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Role {
            $($(
                #[doc = concat!("`", $name, "`")]
                $var,
            )*)*
            /// `genset.alarm.<name>`: 0 disabled, 1 not active, 2 warning, 3 shutdown,
            /// 4 electrical trip, 15 unimplemented.
            GensetAlarm(String),
        }

        impl Role {
            /// Every fixed role name with its kind, in the documented order.
            pub const FIXED: &'static [(&'static str, DeviceKind)] = &[
                $($( ($name, DeviceKind::$kind), )*)*
            ];

            /// Parses a role name; `None` when unknown.
            pub fn parse(name: &str) -> Option<Role> {
                match name {
                    $($( $name => Some(Role::$var), )*)*
                    other => {
                        let alarm = other.strip_prefix("genset.alarm.")?;
                        let ok = !alarm.is_empty()
                            && alarm
                                .chars()
                                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                        ok.then(|| Role::GensetAlarm(alarm.to_string()))
                    }
                }
            }

            /// The device kind this role belongs to.
            pub fn kind(&self) -> DeviceKind {
                match self {
                    $($( Role::$var => DeviceKind::$kind, )*)*
                    Role::GensetAlarm(_) => DeviceKind::Genset,
                }
            }

            /// The role's name as written in profiles.
            pub fn name(&self) -> String {
                match self {
                    $($( Role::$var => $name.to_string(), )*)*
                    Role::GensetAlarm(n) => format!("genset.alarm.{n}"),
                }
            }
        }
    };
}

roles! {
    Ups {
        UpsOutputSource = "ups.output_source",
        UpsOnBattery = "ups.on_battery",
        UpsBatteryStatus = "ups.battery_status",
        UpsRuntimeRemainingMin = "ups.runtime_remaining_min",
        UpsSecondsOnBattery = "ups.seconds_on_battery",
        UpsBatteryChargePct = "ups.battery_charge_pct",
        UpsLoadPct = "ups.load_pct",
        UpsOutputKw = "ups.output_kw",
        UpsInputVoltageV = "ups.input_voltage_v",
        UpsOutputVoltageV = "ups.output_voltage_v",
        UpsBatteryVoltageV = "ups.battery_voltage_v",
        UpsBatteryTemperatureC = "ups.battery_temperature_c",
        UpsFault = "ups.fault",
        UpsAlarmCount = "ups.alarm_count",
        UpsEnergyKwh = "ups.energy_kwh",
        UpsModel = "ups.model",
        UpsHeartbeat = "ups.heartbeat",
    }
    Pac {
        PacOperatingState = "pac.operating_state",
        PacStatus = "pac.status",
        PacFault = "pac.fault",
        PacSupplyAirC = "pac.supply_air_c",
        PacReturnAirC = "pac.return_air_c",
        PacReturnHumidityPct = "pac.return_humidity_pct",
        PacReturnDewPointC = "pac.return_dew_point_c",
        PacFanSpeedPct = "pac.fan_speed_pct",
        PacCoolingKw = "pac.cooling_kw",
        PacCompressorRunning = "pac.compressor_running",
        PacRunHours = "pac.run_hours",
        PacModel = "pac.model",
    }
    Genset {
        GensetControlMode = "genset.control_mode",
        GensetEngineRunning = "genset.engine_running",
        GensetBreakerClosed = "genset.breaker_closed",
        GensetLoadKw = "genset.load_kw",
        GensetLoadPct = "genset.load_pct",
        GensetFuelLevelPct = "genset.fuel_level_pct",
        GensetOilPressureKpa = "genset.oil_pressure_kpa",
        GensetCoolantC = "genset.coolant_c",
        GensetBatteryV = "genset.battery_v",
        GensetEngineRpm = "genset.engine_rpm",
        GensetFrequencyHz = "genset.frequency_hz",
        GensetL1NVoltageV = "genset.l1_n_voltage_v",
        GensetL1CurrentA = "genset.l1_current_a",
        GensetRunHours = "genset.run_hours",
        GensetStarts = "genset.starts",
    }
    Vesda {
        VesdaSmokePctObsM = "vesda.smoke_pct_obs_m",
        VesdaAlarmLevel = "vesda.alarm_level",
        VesdaFault = "vesda.fault",
        VesdaAirflowPct = "vesda.airflow_pct",
        VesdaHeartbeat = "vesda.heartbeat",
    }
    RackMeter {
        RackFeedPowerKw = "rack_feed.power_kw",
        RackFeedCurrentA = "rack_feed.current_a",
        RackFeedVoltageV = "rack_feed.voltage_v",
        RackFeedEnergyKwh = "rack_feed.energy_kwh",
        RackFeedPowerFactor = "rack_feed.power_factor",
    }
    UtilityMeter {
        UtilityAvailable = "utility.available",
        UtilityVoltageV = "utility.voltage_v",
        UtilityFrequencyHz = "utility.frequency_hz",
        UtilityPowerKw = "utility.power_kw",
        UtilityEnergyKwh = "utility.energy_kwh",
    }
    Ats {
        AtsPosition = "ats.position",
        AtsUtilityAAvailable = "ats.utility_a_available",
        AtsUtilityBAvailable = "ats.utility_b_available",
        AtsGensetAvailable = "ats.genset_available",
        AtsInAuto = "ats.in_auto",
    }
    EnvSensor {
        EnvTemperatureC = "env.temperature_c",
        EnvHumidityPct = "env.humidity_pct",
        EnvSensorBatteryPct = "env.sensor_battery_pct",
    }
    LeakSensor {
        LeakDetected = "leak.detected",
        LeakSensorBatteryPct = "leak.sensor_battery_pct",
    }
}

impl Role {
    /// The role names of one kind (for error messages).
    pub fn names_of(kind: DeviceKind) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = Role::FIXED
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(n, _)| *n)
            .collect();
        if kind == DeviceKind::Genset {
            v.push("genset.alarm.<name>");
        }
        v
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

macro_rules! units {
    ($( $var:ident = $name:literal : $doc:literal ),* $(,)?) => {
        /// The engineering unit of a point's value (after scale and offset).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Unit {
            $( #[doc = $doc] $var, )*
        }

        impl Unit {
            /// Every unit's spelling, in the documented order.
            pub const ALL: &'static [&'static str] = &[ $( $name, )* ];

            /// Parses a unit spelling; `None` when not in the list.
            pub fn parse(s: &str) -> Option<Unit> {
                match s {
                    $( $name => Some(Unit::$var), )*
                    _ => None,
                }
            }

            /// The spelling used in profiles (`""` for no unit).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Unit::$var => $name, )*
                }
            }
        }
    };
}

units! {
    DegC = "degC": "degrees Celsius",
    PctRh = "%RH": "relative humidity in percent",
    Pct = "%": "percent",
    Kw = "kW": "kilowatt",
    Kwh = "kWh": "kilowatt-hour",
    W = "W": "watt",
    Wh = "Wh": "watt-hour",
    Kva = "kVA": "kilovolt-ampere",
    V = "V": "volt",
    A = "A": "ampere",
    Hz = "Hz": "hertz",
    Pf = "PF": "power factor (0..1)",
    S = "s": "seconds",
    Min = "min": "minutes",
    H = "h": "hours",
    L = "L": "litres",
    Kpa = "kPa": "kilopascal",
    Rpm = "rpm": "revolutions per minute",
    PctObsM = "%obs/m": "smoke obscuration in percent per metre",
    Count = "count": "a count of events or items",
    None = "": "no unit: states, enums, strings",
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_belong_to_their_kind() {
        assert_eq!(Role::parse("ups.on_battery"), Some(Role::UpsOnBattery));
        assert_eq!(
            Role::parse("ups.on_battery").unwrap().kind(),
            DeviceKind::Ups
        );
        assert_eq!(
            Role::parse("genset.alarm.low_oil_pressure"),
            Some(Role::GensetAlarm("low_oil_pressure".into()))
        );
        assert_eq!(Role::parse("genset.alarm."), None);
        assert_eq!(Role::parse("ups.nonsense"), None);
        for (name, kind) in Role::FIXED {
            let r = Role::parse(name).unwrap();
            assert_eq!(r.kind(), *kind);
            assert_eq!(r.name(), *name);
        }
    }

    #[test]
    fn units_round_trip() {
        for u in Unit::ALL {
            assert_eq!(Unit::parse(u).unwrap().as_str(), *u);
        }
        assert_eq!(Unit::parse("degF"), None);
    }
}
