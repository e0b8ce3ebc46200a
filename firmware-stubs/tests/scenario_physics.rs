//! Physics sanity of the simulated world: cooling loss, utility loss, UPS runtime, fuel, VESDA, leaks.

mod scenario_fixture;

use std::time::Duration;

use firmware_stubs::scenario::{Action, Feed, Scenario, ScenarioValue, Timeline};
use firmware_stubs::world::{DeviceFault, SimValue, World, vesda_level};
use scenario_fixture::{boolean, number, site, text, value};

const SEC: Duration = Duration::from_secs(1);

fn fail(device: &str) -> Action {
    Action::Fail {
        device: device.to_owned(),
    }
}

fn run(world: &mut World, secs: u64) {
    for _ in 0..secs {
        world.step(SEC);
    }
}

#[test]
fn a_hall_warms_past_27_after_two_pacs_fail_and_recovers_on_restore() {
    let site = site(22);
    let mut world = World::new(&site, 7);
    run(&mut world, 300);
    let t0 = world.room_temperature_c("dh1").unwrap();
    assert!((t0 - 22.0).abs() < 0.3, "hall holds the setpoint, got {t0}");
    assert_eq!(text(&world, &site, "pac-04", "operating_state"), "standby");
    let rh0 = world.room_humidity_pct("dh1").unwrap();

    world.apply(&fail("pac-01")).unwrap();
    world.apply(&fail("pac-02")).unwrap();
    assert_eq!(text(&world, &site, "pac-01", "operating_state"), "off");
    assert_eq!(text(&world, &site, "pac-01", "status"), "alarm");
    assert!(boolean(&world, &site, "pac-01", "fault"));
    // The standby unit takes over after its start delay.
    run(&mut world, 61);
    assert_eq!(text(&world, &site, "pac-04", "operating_state"), "on");
    assert!(number(&world, &site, "pac-04", "cooling_kw") > 0.0);

    // Warming rate over the next 5 minutes: a few tenths of a degree per minute.
    let before = world.room_temperature_c("dh1").unwrap();
    run(&mut world, 300);
    let after = world.room_temperature_c("dh1").unwrap();
    let rate = (after - before) / 5.0;
    assert!((0.1..=2.5).contains(&rate), "warming rate {rate} degC/min");

    let mut crossed = None;
    for s in 0..3600 {
        world.step(SEC);
        if world.room_temperature_c("dh1").unwrap() > 27.0 {
            crossed = Some(s);
            break;
        }
    }
    assert!(crossed.is_some(), "hall must pass 27 degC within the hour");
    assert_eq!(text(&world, &site, "pac-03", "status"), "warning");
    let env = number(&world, &site, "th-dh1-01", "temperature");
    assert!(env > 25.5, "env sensor follows the hall: {env}");
    run(&mut world, 300);
    assert!(
        world.room_humidity_pct("dh1").unwrap() > rh0 + 1.0,
        "humidity rises without enough cooling"
    );

    world
        .apply(&Action::Restore {
            device: "pac-01".into(),
        })
        .unwrap();
    world
        .apply(&Action::Restore {
            device: "pac-02".into(),
        })
        .unwrap();
    run(&mut world, 900);
    let t = world.room_temperature_c("dh1").unwrap();
    assert!(
        t < 23.0,
        "restored cooling pulls the hall back to the setpoint: {t}"
    );
    // One of the restored units went back to standby.
    let standby = ["pac-01", "pac-02", "pac-03", "pac-04"]
        .iter()
        .filter(|p| text(&world, &site, p, "operating_state") == "standby")
        .count();
    assert_eq!(standby, 1);
}

#[test]
fn total_cooling_loss_warms_at_about_two_degrees_per_minute() {
    let site = site(22);
    let mut world = World::new(&site, 3);
    run(&mut world, 60);
    for p in ["pac-01", "pac-02", "pac-03", "pac-04"] {
        world.apply(&fail(p)).unwrap();
    }
    let before = world.room_temperature_c("dh1").unwrap();
    run(&mut world, 120);
    let rate = (world.room_temperature_c("dh1").unwrap() - before) / 2.0;
    assert!(
        (1.0..=3.0).contains(&rate),
        "full loss rate {rate} degC/min"
    );
}

#[test]
fn utility_loss_goes_to_battery_then_genset_then_back_to_mains() {
    let site = site(22);
    let mut world = World::new(&site, 11);
    run(&mut world, 10);
    assert_eq!(text(&world, &site, "ats-1", "position"), "utility_a");
    assert!(number(&world, &site, "util-a", "power_kw") > 50.0);

    world.apply(&Action::CutUtility { feed: Feed::A }).unwrap();
    assert_eq!(text(&world, &site, "ats-1", "position"), "utility_b");
    assert!(!boolean(&world, &site, "util-a", "available"));
    assert_eq!(text(&world, &site, "ups-1", "output_source"), "normal");
    run(&mut world, 30);
    assert!(
        !boolean(&world, &site, "gen-1", "engine_running"),
        "one feed left: no start"
    );

    world.apply(&Action::CutUtility { feed: Feed::B }).unwrap();
    assert_eq!(text(&world, &site, "ups-1", "output_source"), "battery");
    assert!(boolean(&world, &site, "ups-2", "on_battery"));
    assert_eq!(text(&world, &site, "ats-1", "position"), "open");
    let mut carried_at = None;
    for s in 1..=60 {
        world.step(SEC);
        let running = ["gen-1", "gen-2", "gen-3"].iter().filter(|g| {
            boolean(&world, &site, g, "engine_running")
                && boolean(&world, &site, g, "breaker_closed")
        });
        if running.count() > 0 && text(&world, &site, "ats-1", "position") == "genset" {
            carried_at = Some(s);
            break;
        }
    }
    let carried_at = carried_at.expect("gensets carry the load");
    assert!(
        carried_at <= 30,
        "gensets carried the load after {carried_at} s"
    );
    assert!(carried_at >= 10, "start delay respected: {carried_at} s");
    let on_battery = number(&world, &site, "ups-1", "seconds_on_battery");
    assert_eq!(on_battery, 0.0, "back on mains resets seconds on battery");
    assert_eq!(text(&world, &site, "ups-1", "output_source"), "normal");
    assert!(number(&world, &site, "ups-1", "battery_charge_pct") < 100.0);
    let gen_load: f64 = ["gen-1", "gen-2", "gen-3"]
        .iter()
        .map(|g| number(&world, &site, g, "load_kw"))
        .sum();
    assert!(
        gen_load > world.it_load_kw(),
        "gensets carry IT plus cooling: {gen_load}"
    );
    assert_eq!(number(&world, &site, "gen-1", "frequency_hz").round(), 50.0);
    run(&mut world, 120);
    assert!(number(&world, &site, "gen-1", "coolant_c") > 50.0);

    world
        .apply(&Action::RestoreUtility { feed: Feed::A })
        .unwrap();
    run(&mut world, 29);
    assert_eq!(
        text(&world, &site, "ats-1", "position"),
        "genset",
        "retransfer waits"
    );
    run(&mut world, 2);
    assert_eq!(text(&world, &site, "ats-1", "position"), "utility_a");
    assert!(
        boolean(&world, &site, "gen-1", "engine_running"),
        "cool-down run"
    );
    assert!(!boolean(&world, &site, "gen-1", "breaker_closed"));
    run(&mut world, 61);
    assert!(
        !boolean(&world, &site, "gen-1", "engine_running"),
        "stopped after cool-down"
    );
    assert!(number(&world, &site, "gen-1", "starts") >= 1.0);
}

/// Both feeds lost with every genset failed: the UPS bridges on battery alone.
fn drain(racks: usize, secs: u64) -> (f64, f64, f64) {
    let site = site(racks);
    let mut world = World::new(&site, 5);
    for g in ["gen-1", "gen-2", "gen-3"] {
        world.apply(&fail(g)).unwrap();
    }
    let runtime0 = number(&world, &site, "ups-1", "runtime_remaining_min");
    world.apply(&Action::CutUtility { feed: Feed::A }).unwrap();
    world.apply(&Action::CutUtility { feed: Feed::B }).unwrap();
    run(&mut world, secs);
    assert_eq!(text(&world, &site, "ups-1", "output_source"), "battery");
    assert_eq!(number(&world, &site, "gen-1", "fail_to_start"), 3.0);
    let charge = number(&world, &site, "ups-1", "battery_charge_pct");
    let runtime = number(&world, &site, "ups-1", "runtime_remaining_min");
    (runtime0, 100.0 - charge, runtime)
}

#[test]
fn ups_runtime_falls_faster_at_higher_load() {
    let (full_low, used_low, runtime_low) = drain(10, 120);
    let (full_high, used_high, runtime_high) = drain(30, 120);
    assert!(
        full_high < full_low,
        "estimated runtime shorter at higher load"
    );
    assert!(
        used_high > used_low * 2.0,
        "charge used {used_high} vs {used_low}"
    );
    assert!(runtime_high < runtime_low);
    assert!(runtime_low < full_low, "runtime falls while on battery");
}

#[test]
fn ups_depletes_and_the_racks_go_dark() {
    let site = site(30);
    let mut world = World::new(&site, 5);
    for g in ["gen-1", "gen-2", "gen-3"] {
        world.apply(&fail(g)).unwrap();
    }
    world.apply(&Action::CutUtility { feed: Feed::A }).unwrap();
    world.apply(&Action::CutUtility { feed: Feed::B }).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..(60 * 60) {
        world.step(SEC);
        let s = text(&world, &site, "ups-1", "battery_status");
        if statuses.last() != Some(&s) {
            statuses.push(s);
        }
    }
    assert_eq!(statuses, ["normal", "low", "depleted"]);
    assert_eq!(text(&world, &site, "ups-1", "output_source"), "none");
    assert_eq!(number(&world, &site, "R01-a", "power_kw"), 0.0);
}

/// Fuel burnt in 10 minutes by the gensets carrying a site of `racks` racks.
fn fuel_burn(racks: usize) -> (f64, f64) {
    let site = site(racks);
    let mut world = World::new(&site, 9);
    world.apply(&Action::CutUtility { feed: Feed::A }).unwrap();
    world.apply(&Action::CutUtility { feed: Feed::B }).unwrap();
    run(&mut world, 60);
    let level0 = number(&world, &site, "gen-1", "fuel_level_pct");
    let load = number(&world, &site, "gen-1", "load_pct") / 100.0;
    run(&mut world, 600);
    let used_l = (level0 - number(&world, &site, "gen-1", "fuel_level_pct")) / 100.0 * 2000.0;
    (load, used_l)
}

#[test]
fn fuel_burns_in_proportion_to_load() {
    let (load_low, used_low) = fuel_burn(10);
    let (load_high, used_high) = fuel_burn(40);
    assert!(load_high > 2.0 * load_low, "loads {load_low} {load_high}");
    assert!(used_high > used_low);
    // Willans line: rate = full x (0.1 + 0.9 x load); 54 L/h full, 10 minutes.
    for (load, used) in [(load_low, used_low), (load_high, used_high)] {
        let expected = 54.0 * (0.1 + 0.9 * load) / 6.0;
        assert!(
            (used - expected).abs() / expected < 0.03,
            "used {used} L, expected {expected} L"
        );
    }
}

#[test]
fn vesda_level_follows_smoke() {
    let site = site(4);
    let mut world = World::new(&site, 1);
    assert_eq!(text(&world, &site, "vesda-1", "alarm_level"), "normal");
    world
        .apply(&Action::Smoke {
            device: "vesda-1".into(),
            to: 0.3,
            over_secs: 300.0,
        })
        .unwrap();
    let mut levels: Vec<String> = Vec::new();
    let mut last_smoke = 0.0;
    for _ in 0..300 {
        world.step(SEC);
        let smoke = number(&world, &site, "vesda-1", "smoke_pct_obs_m");
        let level = text(&world, &site, "vesda-1", "alarm_level");
        assert_eq!(level, vesda_level(smoke));
        assert!(
            smoke >= last_smoke - 0.005,
            "smoke rises: {smoke} after {last_smoke}"
        );
        last_smoke = smoke;
        if levels.last() != Some(&level) {
            levels.push(level);
        }
    }
    assert_eq!(levels, ["normal", "alert", "action", "fire1"]);
    world
        .apply(&Action::Smoke {
            device: "vesda-1".into(),
            to: 0.0,
            over_secs: 0.0,
        })
        .unwrap();
    world.step(SEC);
    assert_eq!(text(&world, &site, "vesda-1", "alarm_level"), "normal");
    let hb = number(&world, &site, "vesda-1", "heartbeat");
    world.step(SEC);
    assert_eq!(number(&world, &site, "vesda-1", "heartbeat"), hb + 1.0);
    world.apply(&fail("vesda-1")).unwrap();
    assert!(boolean(&world, &site, "vesda-1", "fault"));
    world.step(SEC);
    assert_eq!(
        number(&world, &site, "vesda-1", "heartbeat"),
        hb + 1.0,
        "frozen"
    );
}

#[test]
fn leaks_forced_values_wire_faults_and_errors() {
    let site = site(4);
    let mut world = World::new(&site, 1);
    assert!(!boolean(&world, &site, "leak-dh1-01", "leak"));
    world
        .apply(&Action::Leak {
            device: "leak-dh1-01".into(),
            on: true,
        })
        .unwrap();
    assert!(boolean(&world, &site, "leak-dh1-01", "leak"));

    world
        .apply(&Action::Set {
            device: "gen-1".into(),
            point: "oil_pressure_kpa".into(),
            value: None,
            raw: Some(0xFFFC),
        })
        .unwrap();
    assert_eq!(
        value(&world, &site, "gen-1", "oil_pressure_kpa"),
        SimValue::Raw(0xFFFC)
    );
    world
        .apply(&Action::Set {
            device: "ups-1".into(),
            point: "load_pct".into(),
            value: Some(ScenarioValue::Number(42.0)),
            raw: None,
        })
        .unwrap();
    assert_eq!(number(&world, &site, "ups-1", "load_pct"), 42.0);
    world
        .apply(&Action::Ramp {
            device: "ups-1".into(),
            point: "load_pct".into(),
            to: 52.0,
            over_secs: 10.0,
        })
        .unwrap();
    run(&mut world, 5);
    assert!((number(&world, &site, "ups-1", "load_pct") - 47.0).abs() < 1e-9);
    run(&mut world, 10);
    assert_eq!(number(&world, &site, "ups-1", "load_pct"), 52.0);
    world
        .apply(&Action::Unset {
            device: "ups-1".into(),
            point: "load_pct".into(),
        })
        .unwrap();
    assert!(number(&world, &site, "ups-1", "load_pct") < 40.0);

    world
        .apply(&Action::Exception {
            device: "ups-1".into(),
            code: 0x0B,
            times: None,
        })
        .unwrap();
    assert_eq!(world.fault("ups-1"), DeviceFault::Exception(0x0B));
    world
        .apply(&Action::ClearException {
            device: "ups-1".into(),
        })
        .unwrap();
    assert_eq!(world.fault("ups-1"), DeviceFault::None);
    world
        .apply(&Action::Delay {
            device: "ups-1".into(),
            millis: 1500,
        })
        .unwrap();
    assert_eq!(
        world.fault("ups-1"),
        DeviceFault::Delay(Duration::from_millis(1500))
    );
    world
        .apply(&Action::Silence {
            device: "ups-1".into(),
        })
        .unwrap();
    assert_eq!(world.fault("ups-1"), DeviceFault::Silent);
    world
        .apply(&Action::Unsilence {
            device: "ups-1".into(),
        })
        .unwrap();
    assert_eq!(world.fault("ups-1"), DeviceFault::None);

    let endpoint = "127.0.0.1:15001".parse().unwrap();
    assert_eq!(world.disconnect_epoch(endpoint), 0);
    world
        .apply(&Action::DropConnection {
            device: "ups-1".into(),
        })
        .unwrap();
    assert_eq!(world.disconnect_epoch(endpoint), 1);

    let err = world.apply(&fail("pac-99")).unwrap_err();
    assert!(err.contains("pac-99"), "{err}");
    let err = world
        .apply(&Action::Leak {
            device: "ups-1".into(),
            on: true,
        })
        .unwrap_err();
    assert!(err.contains("not a leak sensor"), "{err}");
    let err = world
        .apply(&Action::Set {
            device: "ups-1".into(),
            point: "nope".into(),
            value: Some(ScenarioValue::Bool(true)),
            raw: None,
        })
        .unwrap_err();
    assert!(err.contains("no point \"nope\""), "{err}");
    let err = world
        .apply(&Action::DropConnection {
            device: "th-dh1-01".into(),
        })
        .unwrap_err();
    assert!(err.contains("not a Modbus device"), "{err}");
}

#[test]
fn a_failed_rack_feed_moves_the_load_to_the_other_feed() {
    let site = site(4);
    let mut world = World::new(&site, 2);
    world.step(SEC);
    let a = number(&world, &site, "R01-a", "power_kw");
    let b = number(&world, &site, "R01-b", "power_kw");
    assert!(a > 0.5 && b > 0.5, "both feeds carry load: {a} {b}");
    assert!(a + b >= 1.5 && a + b <= 3.5, "30-70 % of 5 kW: {}", a + b);
    world.apply(&fail("R01-a")).unwrap();
    world.step(SEC);
    assert_eq!(number(&world, &site, "R01-a", "power_kw"), 0.0);
    let b2 = number(&world, &site, "R01-b", "power_kw");
    assert!((b2 - (a + b)).abs() < 0.2, "feed B carries the rack: {b2}");
    let amps = number(&world, &site, "R01-b", "current_a");
    assert!(
        (amps - b2 * 1000.0 / 230.0).abs() < 1.0,
        "I = P / (V pf): {amps}"
    );
}

#[test]
fn a_timeline_applies_events_in_time() {
    let site = site(4);
    let scenario = Scenario::parse(
        r#"
name = "t"
site = "fx"
[[events]]
at_secs = 5
action = "leak"
device = "leak-dh1-01"
on = true
[[events]]
at_secs = 2
action = "cut_utility"
feed = "A"
[[events]]
at_secs = 3
action = "fail"
device = "nope"
"#,
        "inline",
    )
    .unwrap();
    assert_eq!(
        scenario.events[0].at,
        Duration::from_secs(2),
        "sorted by time"
    );
    let mut world = World::new(&site, 1);
    let mut timeline = Timeline::new(Some(&scenario));
    assert!(timeline.apply_due(&mut world).is_empty());
    assert!(timeline.advance(&mut world, SEC).is_empty());
    assert!(timeline.advance(&mut world, SEC).is_empty());
    assert_eq!(text(&world, &site, "ats-1", "position"), "utility_b");
    let errors = timeline.advance(&mut world, SEC);
    assert_eq!(
        errors.len(),
        1,
        "unknown device reported, not panicked: {errors:?}"
    );
    timeline.advance(&mut world, SEC);
    assert!(!boolean(&world, &site, "leak-dh1-01", "leak"));
    timeline.advance(&mut world, SEC);
    assert!(boolean(&world, &site, "leak-dh1-01", "leak"));
    assert!(timeline.is_done());
}
