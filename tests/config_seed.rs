//! The shipped configuration carries every number of facility-spec.md; this test fails if one drifts.
//!
//! Each assertion names the facility-spec line it checks. The numbers are written here on
//! purpose, independently of `config/`, so a change to a shipped default has to be made in
//! two places and reviewed against the catalog.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use chrono::{NaiveTime, Weekday};
use dcguard::config::model::{
    BatteryKind, Clock, Config, CoolingKind, DeviceKind, DeviceTransport, EscortRule, Feed,
    GensetRating, Impact, Priority, RackClass, Redundancy, RoomKind, Site, Urgency,
};

fn shipped() -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    match dcguard::config::load(&dir) {
        Ok(config) => config,
        Err(errors) => panic!("the shipped configuration must load:\n{errors}"),
    }
}

fn site<'c>(config: &'c Config, id: &str) -> &'c Site {
    config
        .sites
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("site {id} is shipped"))
}

fn devices_of(site: &Site, kind: DeviceKind) -> usize {
    site.devices.iter().filter(|d| d.kind() == kind).count()
}

/// facility-spec "Sites" table, one row at a time, per site.
#[test]
fn site_facts_match_the_catalog() {
    let config = shipped();
    let ids: BTreeSet<&str> = config.sites.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["dc", "smart-dc", "drc"]));

    struct Expect {
        id: &'static str,
        building: &'static str,
        rack_positions: u32,
        battery: BatteryKind,
        genset_redundancy: Redundancy,
        gensets: usize,
        autonomy_h: f64,
        load_test_months: u32,
        cooling: CoolingKind,
        escort: EscortRule,
        destination_room_required: bool,
    }
    let expected = [
        Expect {
            id: "dc",
            building: "Gd. Syafrudin Prawiranegara I",
            rack_positions: 264,
            battery: BatteryKind::Vrla,
            genset_redundancy: Redundancy::NPlus1,
            gensets: 3,
            autonomy_h: 12.0,
            load_test_months: 1,
            cooling: CoolingKind::Pac,
            escort: EscortRule::Required,
            destination_room_required: false,
        },
        Expect {
            id: "smart-dc",
            building: "Gd. Bambang Subianto",
            rack_positions: 172,
            battery: BatteryKind::Lithium,
            genset_redundancy: Redundancy::TwoN,
            gensets: 4,
            autonomy_h: 96.0,
            load_test_months: 1,
            cooling: CoolingKind::InrowPac,
            escort: EscortRule::Required,
            destination_room_required: true,
        },
        Expect {
            id: "drc",
            building: "disaster recovery",
            rack_positions: 292,
            battery: BatteryKind::Vrla,
            genset_redundancy: Redundancy::NPlus1,
            gensets: 3,
            autonomy_h: 12.0,
            load_test_months: 2,
            cooling: CoolingKind::Pac,
            // The catalog says third parties MAY be accompanied at the DRC; the service
            // standard says they must. The shipped default follows the newer catalog.
            escort: EscortRule::Optional,
            destination_room_required: false,
        },
    ];

    for e in expected {
        let s = site(&config, e.id);
        assert!(s.building.contains(e.building), "{}: building", e.id);
        assert_eq!(s.time_zone, chrono_tz::Asia::Jakarta, "{}: time zone", e.id);
        assert_eq!(
            s.rack_positions, e.rack_positions,
            "{}: rack positions",
            e.id
        );
        assert_eq!(
            s.racks.len(),
            e.rack_positions as usize,
            "{}: every rack position is in the example inventory",
            e.id
        );
        assert_eq!(s.floor_load_max_kg_m2, 1200.0, "{}: max floor load", e.id);
        assert_eq!(s.utility_feeds, 2, "{}: two active-active PLN feeds", e.id);

        assert_eq!(
            s.ups.backup_time,
            Duration::from_secs(10 * 60),
            "{}: UPS backup time",
            e.id
        );
        assert_eq!(s.ups.battery, e.battery, "{}: UPS battery", e.id);

        assert_eq!(
            s.genset.rating,
            GensetRating::Prime,
            "{}: prime rated",
            e.id
        );
        assert_eq!(
            s.genset.redundancy, e.genset_redundancy,
            "{}: genset redundancy",
            e.id
        );
        assert_eq!(
            devices_of(s, DeviceKind::Genset),
            e.gensets,
            "{}: gensets",
            e.id
        );
        assert_eq!(
            s.genset.autonomy_min_h, e.autonomy_h,
            "{}: genset autonomy",
            e.id
        );
        assert_eq!(
            s.genset.load_test_interval_months, e.load_test_months,
            "{}: load test interval",
            e.id
        );

        assert_eq!(s.cooling.kind, e.cooling, "{}: cooling", e.id);

        assert_eq!(
            s.access.third_party_escort, e.escort,
            "{}: escort rule",
            e.id
        );
        assert_eq!(
            s.access.destination_room_required, e.destination_room_required,
            "{}: destination room required",
            e.id
        );
        assert!(
            s.access.technical_escort_required,
            "{}: every visit has a technical escort",
            e.id
        );
    }
}

/// facility-spec: data hall 18-27 degC and 30-60 %RH at every site, in every data hall.
#[test]
fn data_hall_limits_are_18_27_degc_and_30_60_pct() {
    let config = shipped();
    for s in &config.sites {
        let d = s.data_hall;
        assert_eq!(
            (d.temperature_min_c, d.temperature_max_c),
            (18.0, 27.0),
            "{}: temperature",
            s.id
        );
        assert_eq!(
            (d.humidity_min_pct, d.humidity_max_pct),
            (30.0, 60.0),
            "{}: humidity",
            s.id
        );
        let halls: Vec<_> = s
            .rooms
            .iter()
            .filter(|r| r.kind == RoomKind::DataHall)
            .collect();
        assert!(!halls.is_empty(), "{}: has data halls", s.id);
        for hall in halls {
            assert_eq!(hall.climate, Some(d), "{} {}: hall limits", s.id, hall.id);
        }
    }
}

/// facility-spec: 5 kW per rack (Smart DC: storage 5, server 3, network 2), each feed rated
/// at the rack limit; every rack position has an A and a B meter.
#[test]
fn rack_limits_and_meters() {
    let config = shipped();
    for s in &config.sites {
        let (storage, server, network) = if s.id == "smart-dc" {
            (5.0, 3.0, 2.0)
        } else {
            (5.0, 5.0, 5.0)
        };
        assert_eq!(s.rack_limits.storage_kw, storage, "{}: storage", s.id);
        assert_eq!(s.rack_limits.server_kw, server, "{}: server", s.id);
        assert_eq!(s.rack_limits.network_kw, network, "{}: network", s.id);
        for rack in &s.racks {
            let want = match rack.class {
                RackClass::Storage => storage,
                RackClass::Server => server,
                RackClass::Network => network,
            };
            assert_eq!(rack.limit_kw, want, "{} rack {}", s.id, rack.id);
            for feed in [Feed::A, Feed::B] {
                let metered = s.devices.iter().any(|d| {
                    d.kind() == DeviceKind::RackMeter
                        && d.rack.as_deref() == Some(rack.id.as_str())
                        && d.facts.feed == Some(feed)
                });
                assert!(metered, "{} rack {} has a {feed:?} meter", s.id, rack.id);
            }
        }
        if s.id == "smart-dc" {
            let classes: BTreeSet<_> = s.racks.iter().map(|r| r.class as u8).collect();
            assert_eq!(classes.len(), 3, "the Smart DC has all three rack classes");
        }
    }
}

/// facility-spec "Incident priority": the urgency x impact matrix and its targets; P1 on the
/// 24/7 clock, P2-P5 on working hours 08:00-17:00 WIB, Monday to Friday.
#[test]
fn priority_matrix_targets_and_working_hours() {
    let config = shipped();
    let p = &config.priority;
    use Impact as I;
    use Priority::*;
    use Urgency as U;
    let table = [
        (U::High, I::High, P1),
        (U::High, I::Medium, P2),
        (U::High, I::Low, P3),
        (U::Medium, I::High, P2),
        (U::Medium, I::Medium, P3),
        (U::Medium, I::Low, P4),
        (U::Low, I::High, P3),
        (U::Low, I::Medium, P4),
        (U::Low, I::Low, P5),
    ];
    for (urgency, impact, want) in table {
        assert_eq!(
            p.priority(urgency, impact),
            want,
            "{urgency:?} x {impact:?}"
        );
    }
    let targets = [
        (P1, 3, Clock::TwentyFourSeven),
        (P2, 8, Clock::WorkingHours),
        (P3, 16, Clock::WorkingHours),
        (P4, 24, Clock::WorkingHours),
        (P5, 80, Clock::WorkingHours),
    ];
    for (priority, hours, clock) in targets {
        let t = p.target(priority);
        assert_eq!((t.hours, t.clock), (hours, clock), "{priority:?}");
    }

    let c = &config.calendar;
    assert_eq!(c.time_zone, chrono_tz::Asia::Jakarta);
    assert_eq!(
        c.working_hours_start,
        NaiveTime::from_hms_opt(8, 0, 0).unwrap()
    );
    assert_eq!(
        c.working_hours_end,
        NaiveTime::from_hms_opt(17, 0, 0).unwrap()
    );
    let days: Vec<Weekday> = c.working_days.iter().map(|d| d.weekday()).collect();
    assert_eq!(
        days,
        [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri
        ]
    );
    let years: BTreeSet<i32> = c.holidays.iter().map(chrono::Datelike::year).collect();
    assert!(
        years.contains(&2026) && years.contains(&2027),
        "holidays 2026 and 2027"
    );
    let independence_day = chrono::NaiveDate::from_ymd_opt(2026, 8, 17).unwrap();
    assert!(
        c.holidays.contains(&independence_day),
        "17 August is a holiday"
    );
}

/// The example inventory is realistic: redundancy needs spares, both utility feeds and the
/// transfer switch are metered, and the shipped config dials nothing but loopback.
#[test]
fn inventory_is_complete_and_loopback_only() {
    let config = shipped();
    for s in &config.sites {
        assert!(
            devices_of(s, DeviceKind::Ups) >= 2,
            "{}: redundant UPS",
            s.id
        );
        assert!(
            devices_of(s, DeviceKind::Pac) >= 2,
            "{}: redundant PACs",
            s.id
        );
        assert!(devices_of(s, DeviceKind::Vesda) >= 1, "{}: VESDA", s.id);
        assert!(
            devices_of(s, DeviceKind::Ats) >= 1,
            "{}: transfer switch",
            s.id
        );
        assert!(
            devices_of(s, DeviceKind::EnvSensor) >= 2,
            "{}: T/RH sensors",
            s.id
        );
        assert!(
            devices_of(s, DeviceKind::LeakSensor) >= 1,
            "{}: leak sensors",
            s.id
        );
        let feeds: BTreeSet<_> = s
            .devices
            .iter()
            .filter(|d| d.kind() == DeviceKind::UtilityMeter)
            .filter_map(|d| d.facts.feed)
            .map(|f| f as u8)
            .collect();
        assert_eq!(feeds.len(), 2, "{}: both utility feeds metered", s.id);

        for genset in s.devices.iter().filter(|d| d.kind() == DeviceKind::Genset) {
            assert!(
                genset.facts.rated_kw.is_some(),
                "{} {}: rated_kw",
                s.id,
                genset.id
            );
            assert!(
                genset.facts.fuel_tank_l.is_some(),
                "{} {}: tank",
                s.id,
                genset.id
            );
        }

        let mut shared_endpoint = false;
        for d in &s.devices {
            if let DeviceTransport::Modbus { endpoint, unit, .. } = &d.transport {
                assert!(endpoint.ip().is_loopback(), "{} {}: {endpoint}", s.id, d.id);
                shared_endpoint |= s.devices.iter().any(|o| {
                    o.id != d.id
                        && matches!(&o.transport,
                            DeviceTransport::Modbus { endpoint: e, unit: u, .. }
                                if e == endpoint && u != unit)
                });
            }
        }
        assert!(
            shared_endpoint,
            "{}: meters sit behind gateways with many unit ids",
            s.id
        );
    }
    for broker in config.brokers.values() {
        let ip: IpAddr = broker
            .host
            .parse()
            .unwrap_or_else(|_| panic!("broker {} host is an address", broker.id));
        assert!(ip.is_loopback(), "broker {}: {}", broker.id, broker.host);
    }
    assert!(config.daemon.listen.ip().is_loopback());
}
