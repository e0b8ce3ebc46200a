//! `dcguard check-config`, `run`, `demo` and `--help` through the real binary: exit codes,
//! the summary, and every problem on stderr; plus broken copies of the shipped `config/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dcguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dcguard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the dcguard binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_subcommands() {
    let out = dcguard(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["run", "demo", "check-config"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "--help lists {cmd}:\n{help}"
        );
    }
}

#[test]
fn a_valid_configuration_prints_the_summary_and_exits_0() {
    let out = dcguard(&["check-config", "tests/fixtures/config/minimal"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "config tests/fixtures/config/minimal is valid\n\
         site   rooms  racks  devices  points  endpoints  mqtt\n\
         dc         2      2        6       7          2     1\n\
         total      2      2        6       7          2     1\n\
         3 profiles, 1 MQTT brokers; endpoints = distinct Modbus host:port\n"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn an_invalid_configuration_prints_every_problem_and_exits_64() {
    let out = dcguard(&["check-config", "tests/fixtures/config/broken/"]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(text(&out.stdout), "");
    let d = "tests/fixtures/config/broken";
    let expected = [
        "invalid configuration in tests/fixtures/config/broken/ (7 problems):".to_string(),
        format!(
            "  - {d}/dcguard.toml:10: calendar.working_hours_end: found \"07:00\"; expected a time after working_hours_start (08:00)"
        ),
        format!(
            "  - {d}/dcguard.toml:35: influxdb.token: found a secret written literally; expected a reference: token_env = \"VAR\" or token_file = \"PATH\""
        ),
        format!(
            "  - {d}/profiles/rack-meter.toml:14: points[0].scale: found 0; expected a scale other than 0"
        ),
        format!(
            "  - {d}/profiles/ups.toml:22: points[1].colour: found unknown key \"colour\"; expected one of: name, role, register, address, json, type, order, scale, offset, unit, class, enum, sentinels, valid_min, valid_max, bit, bit_count, length"
        ),
        format!(
            "  - {d}/sites/dc.toml:11: site.ups.redundancy: found \"N+2\"; expected one of: N, N+1, 2N"
        ),
        format!(
            "  - {d}/sites/dc.toml:34: racks[0].room: found \"dh9\"; expected a room id of site dc (one of: dh1, ups1)"
        ),
        format!(
            "  - {d}/sites/dc.toml:53: devices[1].mqtt.broker: found \"main\"; expected a broker id from dcguard.toml (one of: sim)"
        ),
    ];
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected);
    assert!(!stderr.contains("do-not-print-me"), "a secret leaked");
}

#[test]
fn an_unreadable_directory_exits_64_with_a_clear_message() {
    let tmp = tempfile::TempDir::new().unwrap();
    let missing = tmp.path().join("nope");
    let out = dcguard(&["check-config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "  - {}: found no readable directory (",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "expected a configuration directory holding dcguard.toml, sites/ and profiles/"
        )
    );
}

#[test]
fn run_refuses_an_invalid_config_and_demo_refuses_bad_arguments_before_starting() {
    let out = dcguard(&["run", "--config", "tests/fixtures/config/broken"]);
    assert_eq!(out.status.code(), Some(64));
    // Bad demo arguments: exit 64 naming what was expected, nothing started.
    for (args, expected) in [
        (
            &["demo", "--listen", "localhost:eighty"][..],
            "--listen: found \"localhost:eighty\"; expected a loopback address and port",
        ),
        (
            &["demo", "--listen", "192.0.2.1:8080"][..],
            "--listen: found 192.0.2.1:8080; expected a loopback address",
        ),
        (&["demo", "--webhook", "not a url"][..], "--webhook: found"),
        (
            &[
                "demo",
                "--webhook",
                "http://127.0.0.1:9/hook",
                "--webhook-secret-env",
                "DCGUARD_TEST_NO_SUCH_SECRET_8",
            ][..],
            "environment variable DCGUARD_TEST_NO_SUCH_SECRET_8",
        ),
    ] {
        let out = dcguard(args);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stdout).is_empty(), "{args:?} started something");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Replaces the first `from` in `dir/rel` and returns the 1-based line it was on.
fn break_file(dir: &Path, rel: &str, from: &str, to: &str) -> usize {
    let path = dir.join(rel);
    let original = fs::read_to_string(&path).unwrap();
    let at = original
        .find(from)
        .unwrap_or_else(|| panic!("{rel} contains {from:?}"));
    fs::write(&path, original.replacen(from, to, 1)).unwrap();
    original[..at].matches('\n').count() + 1
}

/// Index of the `[[points]]` entry a byte offset of a profile falls in.
fn point_index(text: &str, needle: &str) -> usize {
    let at = text.find(needle).unwrap();
    text[..at].matches("[[points]]").count() - 1
}

#[test]
fn broken_copies_of_the_shipped_config_are_reported_precisely() {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    let out = dcguard(&["check-config", "config"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the shipped config must be valid:\n{}",
        text(&out.stderr)
    );

    let tmp = tempfile::TempDir::new().unwrap();
    let dir = tmp.path().join("config");
    copy_dir(&shipped, &dir);

    // 1. A time zone that does not exist.
    let tz_line = break_file(
        &dir,
        "dcguard.toml",
        "time_zone = \"Asia/Jakarta\"",
        "time_zone = \"WIB\"",
    );
    // 2. A unit that is not in the list.
    let ups = fs::read_to_string(dir.join("profiles/ups-galaxy.toml")).unwrap();
    let unit_point = point_index(&ups, "unit = \"min\"");
    let unit_line = break_file(
        &dir,
        "profiles/ups-galaxy.toml",
        "unit = \"min\"",
        "unit = \"minutes\"",
    );
    // 3. More racks than the DC has positions.
    break_file(
        &dir,
        "sites/dc.toml",
        "rack_positions = 264",
        "rack_positions = 263",
    );
    let dc = fs::read_to_string(dir.join("sites/dc.toml")).unwrap();
    let racks_line = dc[..dc.find("[[racks]]").unwrap()].matches('\n').count() + 1;

    let out = Command::new(env!("CARGO_BIN_EXE_dcguard"))
        .arg("check-config")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let d = dir.display();
    let expected = vec![
        format!("invalid configuration in {d} (3 problems):"),
        format!(
            "  - {d}/dcguard.toml:{tz_line}: calendar.time_zone: found \"WIB\"; expected an IANA time zone name such as \"Asia/Jakarta\""
        ),
        format!(
            "  - {d}/profiles/ups-galaxy.toml:{unit_line}: points[{unit_point}].unit: found \"minutes\"; expected one of: degC, %RH, %, kW, kWh, W, Wh, kVA, V, A, Hz, PF, s, min, h, L, kPa, rpm, %obs/m, count, \"\""
        ),
        format!(
            "  - {d}/sites/dc.toml:{racks_line}: racks: found 264 racks; expected at most site.rack_positions (263) racks"
        ),
    ];
    assert_eq!(
        text(&out.stderr).lines().collect::<Vec<_>>(),
        expected,
        "{}",
        text(&out.stderr)
    );
}
