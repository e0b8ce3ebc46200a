//! Tidy checks run by `cargo test`: module docs, forbidden macros and attributes, loopback-only config.
//!
//! These are the repository rules that a reviewer would otherwise have to remember
//! (CONTRIBUTING.md explains each). Every failure names the file and the line.

use std::fs;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Folders, relative to the repository root, whose `.rs` files the checks cover.
/// Folders that do not exist yet (benches) are skipped.
const RUST_DIRS: &[&str] = &[
    "src",
    "tests",
    "benches",
    "firmware-stubs/src",
    "firmware-stubs/tests",
    "firmware-stubs/benches",
];

/// Text no Rust file may contain. Each needle is assembled with `concat!` so that this
/// file does not contain it and does not trip its own check.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        concat!("#[", "ignore"),
        "tests are never ignored; assert the current behaviour and say what is wrong",
    ),
    (
        concat!("dbg", "!("),
        "debug output is not committed; log with tracing or assert",
    ),
    (
        concat!("todo", "!("),
        "a panicking placeholder; return an error or say \"planned (issue N)\"",
    ),
    (
        concat!("unimplemented", "!("),
        "a panicking placeholder; return an error or say \"planned (issue N)\"",
    ),
];

/// Keys whose string values are addresses the daemon or the simulators dial or bind.
const ADDRESS_KEYS: &[&str] = &["endpoint", "host", "url", "listen"];

/// The only hosts shipped configuration may name: everything runs on loopback.
const LOOPBACK_HOSTS: &[&str] = &["127.0.0.1", "::1", "localhost"];

/// Every `.rs` file starts with a `//!` line saying what it owns.
#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut problems = Vec::new();
    for path in rust_files() {
        let text = read(&path);
        let first_line = text.lines().next().unwrap_or("");
        if !first_line.starts_with("//!") {
            problems.push(format!(
                "{}:1: the first line must be a `//!` doc saying what the file owns; found {first_line:?}",
                display(&path)
            ));
        }
    }
    assert_no_problems("files without a leading `//!` module doc", &problems);
}

/// No file contains an ignored test, debug output or a panicking placeholder.
#[test]
fn no_rust_file_contains_forbidden_text() {
    let mut problems = Vec::new();
    for path in rust_files() {
        let text = read(&path);
        for (line_idx, line) in text.lines().enumerate() {
            for (needle, why) in FORBIDDEN {
                if line.contains(needle) {
                    problems.push(format!(
                        "{}:{}: contains `{needle}`: {why}",
                        display(&path),
                        line_idx + 1
                    ));
                }
            }
        }
    }
    assert_no_problems("forbidden text in Rust files", &problems);
}

/// Shipped configuration dials and binds loopback only: tests and the demo never reach
/// another machine. Comments are not looked at; only parsed values count. Only `config/`
/// is walked: the deployment configurations under `deploy/` are exempt by location, and
/// `tests/deploy.rs` holds the example production one to placeholder addresses
/// (documentation ranges, `.invalid` hosts) that never route.
#[test]
fn shipped_config_uses_only_loopback_addresses() {
    let config_dir = repo_root().join("config");
    let toml_files = files_with_extension(&config_dir, "toml");
    assert!(
        toml_files
            .iter()
            .any(|path| path.ends_with("config/dcguard.toml")),
        "no config/dcguard.toml under {}; the loopback check would check nothing",
        config_dir.display()
    );
    let mut problems = Vec::new();
    for path in &toml_files {
        let text = read(path);
        match DeTable::parse(&text) {
            Ok(table) => problems.extend(check_document(path, &text, table.get_ref())),
            Err(error) => problems.push(format!(
                "{}:{}: not valid TOML: {}",
                display(path),
                error.span().map_or(1, |span| line_of(&text, span.start)),
                error.message()
            )),
        }
    }
    assert_no_problems("non-loopback addresses in config/", &problems);
}

/// The loopback check itself: what it accepts and what it rejects.
#[test]
fn loopback_check_accepts_only_loopback_hosts() {
    for value in [
        "127.0.0.1",
        "::1",
        "localhost",
        "127.0.0.1:15001",
        "[::1]:1883",
        "localhost:8086",
        "http://127.0.0.1:8086",
        "https://[::1]:9800/incidents",
        "http://user@localhost/path?q=1",
        "LOCALHOST",
    ] {
        assert!(is_loopback_address(value), "{value} should be accepted");
    }
    for value in [
        "10.0.0.7",
        "10.0.0.7:502",
        "0.0.0.0:8080",
        "[2001:db8::1]:502",
        "2001:db8::1",
        "https://itsm.example.go.id/api",
        "http://127.0.0.1.example.com/",
        "localhost.example.com:1883",
        "",
    ] {
        assert!(!is_loopback_address(value), "{value} should be rejected");
    }

    let text = "[influxdb]\n# url = \"http://10.1.1.1\"\nurl = \"http://192.0.2.1:8086\"\n\
                [[devices]]\nmodbus = { endpoint = \"127.0.0.1:502\" }\n\
                [[devices]]\nmodbus = { endpoint = \"192.0.2.9:502\" }\n";
    let table = DeTable::parse(text).expect("the sample is valid TOML");
    let problems = check_document(Path::new("sample.toml"), text, table.get_ref());
    assert_eq!(
        problems,
        [
            "sample.toml:3: influxdb.url: found \"http://192.0.2.1:8086\"; expected a loopback address (127.0.0.1, ::1 or localhost)",
            "sample.toml:7: devices[1].modbus.endpoint: found \"192.0.2.9:502\"; expected a loopback address (127.0.0.1, ::1 or localhost)",
        ]
    );
}

/// The address problems of one parsed file, in line order.
fn check_document(path: &Path, text: &str, table: &DeTable<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    check_table(path, text, table, "", &mut problems);
    problems.sort();
    problems
        .into_iter()
        .map(|(_line, problem)| problem)
        .collect()
}

fn check_table(
    path: &Path,
    text: &str,
    table: &DeTable<'_>,
    key_path: &str,
    problems: &mut Vec<(usize, String)>,
) {
    for (key, value) in table.iter() {
        let key: &str = key.get_ref();
        let child_path = if key_path.is_empty() {
            key.to_owned()
        } else {
            format!("{key_path}.{key}")
        };
        check_value(path, text, key, value, &child_path, problems);
    }
}

fn check_value(
    path: &Path,
    text: &str,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    key_path: &str,
    problems: &mut Vec<(usize, String)>,
) {
    match value.get_ref() {
        DeValue::Table(table) => check_table(path, text, table, key_path, problems),
        DeValue::Array(array) => {
            for (idx, item) in array.into_iter().enumerate() {
                check_value(
                    path,
                    text,
                    key,
                    item,
                    &format!("{key_path}[{idx}]"),
                    problems,
                );
            }
        }
        DeValue::String(address) if is_address_key(key) && !is_loopback_address(address) => {
            let line = line_of(text, value.span().start);
            problems.push((
                line,
                format!(
                    "{}:{line}: {key_path}: found {address:?}; expected a loopback address (127.0.0.1, ::1 or localhost)",
                    display(path)
                ),
            ));
        }
        _ => {}
    }
}

/// `endpoint`, `host`, `url`, `listen`, and the same words as suffixes (`webhook_url`).
fn is_address_key(key: &str) -> bool {
    ADDRESS_KEYS
        .iter()
        .any(|word| key == *word || key.ends_with(&format!("_{word}")))
}

/// True for a bare host, `host:port`, `[v6]:port` or URL whose host is loopback.
fn is_loopback_address(value: &str) -> bool {
    let rest = value
        .split_once("://")
        .map_or(value, |(_scheme, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_userinfo, host_port)| host_port);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else if host_port.matches(':').count() > 1 {
        host_port
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    LOOPBACK_HOSTS
        .iter()
        .any(|loopback| host.eq_ignore_ascii_case(loopback))
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files() -> Vec<PathBuf> {
    let root = repo_root();
    let files: Vec<PathBuf> = RUST_DIRS
        .iter()
        .flat_map(|dir| files_with_extension(&root.join(dir), "rs"))
        .collect();
    assert!(
        files.iter().any(|path| path.ends_with("src/lib.rs")),
        "the walk found no src/lib.rs under {}; the tidy checks would check nothing",
        root.display()
    );
    files
}

/// Every file under `dir` (recursively) with the extension, sorted; none if `dir` is absent.
fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == extension) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", display(path)))
}

/// The path relative to the repository root, as a reader would type it.
fn display(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[track_caller]
fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what} ({} found):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
