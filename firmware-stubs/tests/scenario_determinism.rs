//! Scenarios are deterministic (same seed + timeline = same values, under paused tokio
//! time too); the shipped scenario files parse, name devices of the shipped config and do
//! what they say.

mod scenario_fixture;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware_stubs::scenario::{Scenario, Timeline, spawn_clock};
use firmware_stubs::spec::{self, SiteSpec};
use firmware_stubs::world::{SimValue, World};
use tokio_util::sync::CancellationToken;

const TIMELINE: &str = r#"
name = "mixed"
site = "fx"
seed = 42

[[events]]
at_secs = 60
action = "fail"
device = "pac-01"

[[events]]
at_secs = 90
action = "fail"
device = "pac-02"

[[events]]
at_secs = 120
action = "cut_utility"
feed = "A"

[[events]]
at_secs = 180
action = "cut_utility"
feed = "B"

[[events]]
at_secs = 300
action = "smoke"
device = "vesda-1"
to = 0.25
over_secs = 120

[[events]]
at_secs = 400
action = "ramp"
device = "ups-1"
point = "battery_temperature_c"
to = 35.0
over_secs = 300

[[events]]
at_secs = 900
action = "restore_utility"
feed = "A"

[[events]]
at_secs = 1200
action = "restore"
device = "pac-01"
"#;

/// Every point of every device, rendered, every 10 s for 30 simulated minutes.
fn trace(site: &SiteSpec, seed: u64) -> Vec<String> {
    let scenario = Scenario::parse(TIMELINE, "inline").unwrap();
    let mut world = World::new(site, seed);
    let mut timeline = Timeline::new(Some(&scenario));
    assert!(timeline.apply_due(&mut world).is_empty());
    let mut out = Vec::new();
    for second in 1..=1800 {
        let errors = timeline.advance(&mut world, Duration::from_secs(1));
        assert!(errors.is_empty(), "{errors:?}");
        if second % 10 == 0 {
            out.push(snapshot(site, &world));
        }
    }
    assert!(timeline.is_done());
    out
}

fn snapshot(site: &SiteSpec, world: &World) -> String {
    let mut line = format!("t={:?}", world.elapsed());
    for device in &site.devices {
        for point in &device.profile.points {
            let v = world.point_value(device, point).unwrap();
            line += &format!(" {}.{}={}", device.id, point.name, render(&v));
        }
    }
    line
}

fn render(v: &SimValue) -> String {
    match v {
        // Bit-exact: the trace compares the f64 bits, not a rounding of them.
        SimValue::Number(n) => format!("{:016x}", n.to_bits()),
        other => format!("{other:?}"),
    }
}

#[test]
fn same_seed_and_timeline_give_identical_traces() {
    let site = scenario_fixture::site(22);
    let a = trace(&site, 42);
    let b = trace(&site, 42);
    assert_eq!(a.len(), 180);
    assert_eq!(a, b);
    // The trace is not trivially constant: values move over time.
    assert_ne!(a[5], a[100]);

    let c = trace(&site, 43);
    let differing = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    assert!(
        differing > 170,
        "another seed gives another trace ({differing} of 180 differ)"
    );
}

/// Runs the clock task under paused tokio time and snapshots after `secs`.
async fn clock_snapshot(site: Arc<SiteSpec>, seed: u64, secs: u64) -> String {
    let scenario = Scenario::parse(TIMELINE, "inline").unwrap();
    let world = Arc::new(Mutex::new(World::new(&site, seed)));
    let cancel = CancellationToken::new();
    let clock = spawn_clock(
        world.clone(),
        Some(scenario),
        Duration::from_secs(1),
        cancel.clone(),
    );
    tokio::time::sleep(Duration::from_millis(secs * 1000 + 500)).await;
    cancel.cancel();
    clock.await.unwrap();
    let world = world.lock().unwrap();
    assert_eq!(world.elapsed(), Duration::from_secs(secs));
    snapshot(&site, &world)
}

#[tokio::test(start_paused = true)]
async fn the_clock_task_is_deterministic_under_paused_time() {
    let site = scenario_fixture::site(22);
    let a = clock_snapshot(site.clone(), 42, 600).await;
    let b = clock_snapshot(site.clone(), 42, 600).await;
    assert_eq!(a, b);
    // And it matches stepping the world by hand.
    let by_hand = trace(&site, 42);
    assert_eq!(a, by_hand[59]);
}

#[test]
fn scenario_errors_name_the_file_the_event_and_the_field() {
    let err = |text: &str| {
        Scenario::parse(text, "scenarios/bad.toml")
            .unwrap_err()
            .to_string()
    };
    let head = "name = \"x\"\nsite = \"dc\"\n";

    let e = err(&format!(
        "{head}[[events]]\nat_secs = 1\naction = \"fail\"\ndevice = \"a\"\n\n[[events]]\nat_secs = 2\naction = \"fail\"\ndevise = \"a\"\n"
    ));
    assert!(e.starts_with("scenarios/bad.toml: events[1]: "), "{e}");
    assert!(e.contains("devise"), "{e}");

    let e = err(&format!(
        "{head}[[events]]\nat_secs = 1\naction = \"explode\"\n"
    ));
    assert!(e.starts_with("scenarios/bad.toml: events[0]: "), "{e}");
    assert!(e.contains("explode"), "{e}");

    let e = err(&format!(
        "{head}[[events]]\naction = \"fail\"\ndevice = \"a\"\n"
    ));
    assert_eq!(e, "scenarios/bad.toml: events[0]: missing field `at_secs`");

    let e = err(&format!(
        "{head}[[events]]\nat_secs = 1\naction = \"exception\"\ndevice = \"a\"\n"
    ));
    assert!(e.contains("events[0]") && e.contains("code"), "{e}");

    let e = err(&format!(
        "{head}[[events]]\nat_secs = 1\naction = \"set\"\ndevice = \"a\"\npoint = \"p\"\n"
    ));
    assert!(e.contains("events[0]") && e.contains("`value`"), "{e}");

    let e = err(&format!(
        "{head}[[events]]\nat_secs = -1\naction = \"fail\"\ndevice = \"a\"\n"
    ));
    assert!(e.contains("at_secs: found -1"), "{e}");

    let e = err("name = \"x\"\nsite = \"dc\"\nseeed = 3\n");
    assert!(
        e.starts_with("scenarios/bad.toml: ") && e.contains("seeed"),
        "{e}"
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shipped() -> (Vec<Scenario>, Vec<SiteSpec>) {
    let scenarios = Scenario::load_dir(&repo().join("firmware-stubs/scenarios")).unwrap();
    let sites = spec::load_sites(&repo().join("config")).unwrap();
    (scenarios, sites)
}

fn site_of<'a>(sites: &'a [SiteSpec], id: &str) -> &'a SiteSpec {
    sites
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no shipped site {id}"))
}

#[test]
fn shipped_scenarios_parse_and_name_shipped_devices() {
    let (scenarios, sites) = shipped();
    let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "dc-cooling-failure",
        "drc-utility-loss",
        "smart-dc-vesda",
        "leak",
        "device-faults",
    ] {
        assert!(
            names.contains(&expected),
            "missing scenario {expected}: {names:?}"
        );
    }
    for scenario in &scenarios {
        let site = site_of(&sites, &scenario.site);
        let problems = scenario.check_against(site);
        assert!(problems.is_empty(), "{problems:#?}");
        // Every event applies to the real site without error.
        let mut world = World::new(site, scenario.seed.unwrap_or(0));
        let mut timeline = Timeline::new(Some(scenario));
        let last = scenario.events.last().map_or(0, |e| e.at.as_secs());
        for _ in 0..=last {
            let errors = timeline.advance(&mut world, Duration::from_secs(1));
            assert!(errors.is_empty(), "{}: {errors:?}", scenario.name);
        }
        assert!(timeline.is_done());
    }
}

fn run_shipped(name: &str, secs: u64, mut each: impl FnMut(u64, &World, &SiteSpec)) {
    let (scenarios, sites) = shipped();
    let scenario = scenarios.iter().find(|s| s.name == name).unwrap();
    let site = site_of(&sites, &scenario.site);
    let mut world = World::new(site, scenario.seed.unwrap_or(0));
    let mut timeline = Timeline::new(Some(scenario));
    for second in 1..=secs {
        timeline.advance(&mut world, Duration::from_secs(1));
        each(second, &world, site);
    }
}

fn value(world: &World, site: &SiteSpec, device: &str, role: &str) -> SimValue {
    let d = site.devices.iter().find(|d| d.id == device).unwrap();
    let p = d
        .profile
        .points
        .iter()
        .find(|p| p.role.as_deref() == Some(role))
        .unwrap();
    world.point_value(d, p).unwrap()
}

#[test]
fn dc_cooling_failure_warms_hall_1_past_27_and_recovers() {
    let mut crossed = None;
    let mut end = 0.0;
    run_shipped("dc-cooling-failure", 3600, |s, world, site| {
        let t = world.room_temperature_c("dh1").unwrap();
        if crossed.is_none() && t > 27.0 {
            crossed = Some(s);
        }
        end = t;
        if s % 300 == 0 {
            let problems = implausible(site, world);
            assert!(problems.is_empty(), "{problems:#?}");
        }
    });
    let crossed = crossed.expect("dh1 passes 27 degC");
    eprintln!("dh1 crossed 27 degC at {crossed} s; {end:.2} degC at the end");
    assert!((300..=2400).contains(&crossed), "crossed at {crossed} s");
    assert!(end < 23.0, "recovered after the repair: {end}");
}

#[test]
fn drc_utility_loss_is_bridged_by_ups_then_gensets() {
    let mut seen_battery = false;
    let mut genset_at = None;
    let mut back_on_utility = false;
    run_shipped("drc-utility-loss", 1100, |s, world, site| {
        let source = value(world, site, "ups-1", "ups.output_source");
        if source == SimValue::Text("battery".into()) {
            seen_battery = true;
        }
        let pos = value(world, site, "ats-1", "ats.position");
        if genset_at.is_none() && pos == SimValue::Text("genset".into()) {
            genset_at = Some(s);
            assert_eq!(source, SimValue::Text("normal".into()));
        }
        if s > 1000 {
            back_on_utility |= pos == SimValue::Text("utility_a".into());
        }
        if s % 50 == 0 {
            let problems = implausible(site, world);
            assert!(problems.is_empty(), "{problems:#?}");
        }
    });
    assert!(seen_battery);
    let genset_at = genset_at.expect("gensets carry the load");
    assert!((100..=120).contains(&genset_at), "genset at {genset_at} s");
    assert!(back_on_utility);
}

#[test]
fn smart_dc_vesda_rises_through_the_levels() {
    let mut levels: Vec<SimValue> = Vec::new();
    run_shipped("smart-dc-vesda", 1000, |s, world, site| {
        if s % 100 == 0 {
            let problems = implausible(site, world);
            assert!(problems.is_empty(), "{problems:#?}");
        }
        let level = value(world, site, "vesda-server1-1", "vesda.alarm_level");
        if levels.last() != Some(&level) {
            levels.push(level);
        }
    });
    let text: Vec<String> = levels
        .iter()
        .map(|l| match l {
            SimValue::Text(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        text,
        [
            "normal", "alert", "action", "fire1", "action", "alert", "normal"
        ]
    );
}

/// Every value a daemon would read as bad data (outside its valid range, not an enum name).
fn implausible(site: &SiteSpec, world: &World) -> Vec<String> {
    let mut problems = Vec::new();
    for device in &site.devices {
        for point in &device.profile.points {
            let v = world.point_value(device, point).unwrap();
            let at = format!(
                "{}/{}.{} at {:?}",
                site.id,
                device.id,
                point.name,
                world.elapsed()
            );
            match &v {
                SimValue::Text(name)
                    if !point.enum_names.is_empty()
                        && !point.enum_names.values().any(|n| n == name) =>
                {
                    problems.push(format!("{at}: {name:?} not an enum name"));
                }
                SimValue::Number(n) => {
                    let lo = point.valid_min.unwrap_or(f64::MIN);
                    let hi = point.valid_max.unwrap_or(f64::MAX);
                    if !(lo..=hi).contains(n) {
                        problems.push(format!("{at}: {n} outside {lo}..={hi}"));
                    }
                    if !point.enum_names.is_empty()
                        && !point.enum_names.contains_key(&format!("{n}"))
                    {
                        problems.push(format!("{at}: {n} not an enum key"));
                    }
                }
                SimValue::Raw(_) => problems.push(format!("{at}: raw value")),
                _ => {}
            }
        }
    }
    problems
}

#[test]
fn every_shipped_point_has_a_plausible_value_in_normal_operation() {
    let (_, sites) = shipped();
    for site in &sites {
        let mut world = World::new(site, 1);
        for _ in 0..60 {
            world.step(Duration::from_secs(1));
        }
        let problems = implausible(site, &world);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
