//! The Grafana dashboards in `dashboards/`: every metric a panel or template variable names
//! is defined once as a const in `src/telemetry/metrics.rs`; the dashboards are complete
//! for the wall (variables, units, thresholds from the seed limits, provisioning); and
//! every query, template variables substituted, returns data from a real Prometheus that
//! scraped the daemon reading the three simulated sites.

mod common;
mod common_prom;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::time::Duration;

use chrono::Utc;
use common_prom::{Stack, shipped, wait_for};
use dcguard::rules::LoadTestCriteria;
use firmware_stubs::reader::{Firmware, ReaderStub, StubEvent};
use firmware_stubs::scenario::{Action, Feed};
use serde_json::Value;

/// Hang guard of the scenario's waits (the gensets take ~17 s to carry the load, the ATS
/// retransfers 30 s after the utility returns): not a timing assertion.
const SCENARIO_HANG: Duration = Duration::from_secs(180);
/// How long the scenario keeps the gensets carrying the load (the test's criteria
/// qualify a run after 1 s).
const LOAD_HOLD: Duration = Duration::from_secs(6);

const DATASOURCE_UID: &str = "dcguard-prometheus";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every metric name defined as `pub const NAME: &str = "dcguard_..."` in metrics.rs.
fn defined_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("src/telemetry/metrics.rs")).unwrap();
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("pub const ") {
        let Some(end) = text[at..].find(';') else {
            continue;
        };
        let item = &text[at..at + end];
        if !item.contains("&str") {
            continue;
        }
        let mut quoted = item.split('"');
        if let (Some(_), Some(name)) = (quoted.next(), quoted.next())
            && name.starts_with("dcguard_")
        {
            names.insert(name.to_owned());
        }
    }
    names
}

/// The dashboards, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        for nested in panel["panels"].as_array().into_iter().flatten() {
            out.push(nested);
        }
    }
    out
}

/// (panel title, PromQL) of every panel target.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            out.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                expr.to_owned(),
            ));
        }
    }
    out
}

/// (variable name, selector, label) of every `label_values(SELECTOR, LABEL)` variable.
fn variable_queries(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or_default();
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: not label_values(...): {query}", var["name"]));
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(SELECTOR, LABEL)");
        out.push((
            var["name"].as_str().unwrap_or_default().to_owned(),
            selector.trim().to_owned(),
            label.trim().to_owned(),
        ));
    }
    out
}

/// PromQL keywords followed by a parenthesised label list.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Other PromQL words that are not metric names: operators, and the aggregations (which
/// may be followed by `by (...)` instead of their parenthesis).
const KEYWORDS: [&str; 20] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
];

/// The metric names a PromQL expression selects: identifiers outside label matchers,
/// strings and ranges that are neither functions, keywords nor label lists.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| -> usize {
        let mut j = from;
        let mut quote: Option<char> = None;
        while j < chars.len() {
            let c = chars[j];
            match quote {
                Some(_) if c == '\\' => j += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == close => return j + 1,
                None => {}
            }
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '"' || c == '\'' || c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                if chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            i = j + 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number, exponent included (1e3).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':' | '$'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = skip_to(next + 1, ')');
                }
            } else if chars.get(next) == Some(&'(') || KEYWORDS.contains(&lower.as_str()) {
                // A function call or an operator word.
            } else if !word.starts_with('$') {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_metric_name_extractor_finds_names_and_skips_labels_and_functions() {
    let names = metric_names(
        "sum by (site, rack) (rate(dcguard_x_total{site=~\"$site\", kind=\"a b\"}[5m])) * 1e3 \
         / on(site) group_left(feed) max without (device) (up) and ignoring (x) dcguard_y > bool 0.5",
    );
    assert_eq!(
        names,
        ["dcguard_x_total", "dcguard_y", "up"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    // An unknown name is caught by the check below.
    let defined = defined_metrics();
    assert!(defined.contains("dcguard_reading_value"), "{defined:?}");
    assert!(!defined.contains("dcguard_x_total"));
}

#[test]
fn every_dashboard_names_only_metrics_the_code_defines() {
    let defined = defined_metrics();
    assert!(defined.len() > 20, "{defined:?}");
    let dashboards = dashboards();
    assert_eq!(dashboards.len(), 4, "four dashboards");
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for (file, dashboard) in &dashboards {
        let mut exprs: Vec<(String, String)> = panel_queries(dashboard);
        for (var, selector, _) in variable_queries(dashboard) {
            exprs.push((format!("variable {var}"), selector));
        }
        for (title, expr) in exprs {
            let names = metric_names(&expr);
            assert!(!names.is_empty(), "{file}: {title}: no metric in `{expr}`");
            for name in names {
                if !defined.contains(&name) {
                    unknown.push(format!("{file}: {title}: {name}"));
                }
                used.insert(name);
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "dashboards name metrics src/telemetry/metrics.rs does not define:\n{}",
        unknown.join("\n")
    );
    // The dashboards do use the readings, device health and the facility facts.
    for name in [
        "dcguard_reading_value",
        "dcguard_device_up",
        "dcguard_limit",
        "dcguard_rack_limit_watts",
        "dcguard_device_info",
        "dcguard_alarms",
        "dcguard_genset_load_tests",
        "dcguard_genset_load_test_last_end_timestamp_seconds",
        "dcguard_access_occupancy",
        "dcguard_access_findings_total",
    ] {
        assert!(used.contains(name), "{name} unused");
    }
}

/// The threshold step values of a panel (the base step has none).
fn thresholds(panel: &Value) -> Vec<f64> {
    panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["value"].as_f64())
        .collect()
}

#[test]
fn dashboards_have_variables_units_seed_thresholds_and_provisioning() {
    let config = shipped();
    // The seed limits are the same at every site, so one band serves every panel.
    let hall = config.sites[0].data_hall;
    let backup_min = config.sites[0].ups.backup_time.as_secs_f64() / 60.0;
    for site in &config.sites {
        assert_eq!(site.data_hall, hall, "{}: other hall limits", site.id);
        assert_eq!(site.ups.backup_time.as_secs_f64() / 60.0, backup_min);
    }
    let mut uids = BTreeSet::new();
    let (mut temperature, mut humidity, mut runtime) = (0, 0, 0);
    for (file, dashboard) in dashboards() {
        assert!(uids.insert(dashboard["uid"].as_str().unwrap().to_owned()));
        assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39, "{file}");
        assert!(
            dashboard["title"]
                .as_str()
                .unwrap()
                .starts_with("dcguard / ")
        );
        let vars: BTreeSet<&str> = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for var in ["datasource", "site", "room"] {
            assert!(vars.contains(var), "{file}: no ${var}");
        }
        let ds = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap();
        assert_eq!(ds["current"]["value"], DATASOURCE_UID, "{file}");
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or_default();
            if panel["targets"].as_array().is_none_or(|t| t.is_empty()) {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: {title}"
            );
            for target in panel["targets"].as_array().unwrap() {
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{file}: {title}"
                );
            }
            let unit = panel["fieldConfig"]["defaults"]["unit"].as_str();
            assert!(
                unit.is_some_and(|u| !u.is_empty()),
                "{file}: {title}: no unit"
            );
            let exprs: String = panel_queries_of(panel).join("\n");
            let steps = thresholds(panel);
            if exprs.contains("point=\"temperature\"") {
                assert_eq!(
                    steps,
                    [hall.temperature_min_c, hall.temperature_max_c],
                    "{file}: {title}"
                );
                assert_eq!(unit, Some("celsius"));
                temperature += 1;
            }
            if exprs.contains("point=\"humidity\"") {
                assert_eq!(
                    steps,
                    [hall.humidity_min_pct, hall.humidity_max_pct],
                    "{file}: {title}"
                );
                assert_eq!(unit, Some("humidity"));
                humidity += 1;
            }
            if exprs.contains("point=\"runtime_remaining\"") {
                assert_eq!(steps, [backup_min], "{file}: {title}");
                assert_eq!(unit, Some("m"));
                runtime += 1;
            }
        }
    }
    assert!(temperature >= 3 && humidity >= 3 && runtime >= 1);

    // Provisioning: the datasource the dashboards default to, and a file provider.
    let provisioning = root().join("dashboards/provisioning");
    let datasources = read(&provisioning.join("datasources/dcguard.yaml"));
    assert!(datasources.contains(&format!("uid: {DATASOURCE_UID}")));
    assert!(datasources.contains("type: prometheus"));
    let providers = read(&provisioning.join("dashboards/dcguard.yaml"));
    assert!(providers.contains("type: file") && providers.contains("path: "));
    // The example scrape configuration scrapes the daemon's loopback address.
    let prometheus = read(&root().join("deploy/prometheus/prometheus.yml"));
    assert!(prometheus.contains("127.0.0.1:8080") && prometheus.contains("/metrics"));
}

fn panel_queries_of(panel: &Value) -> Vec<String> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A query with the template variables of one site and room substituted.
fn substitute(expr: &str, site: &str, room: &str) -> String {
    let out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$site", site)
        .replace("$room", room)
        .replace("$pac", ".+");
    assert!(!out.contains('$'), "unsubstituted variable in `{out}`");
    out
}

/// Sites whose instant query `promql` (grouped by site) returns a value above 0.
async fn sites_above_zero(stack: &Stack, promql: &str) -> BTreeSet<String> {
    stack
        .prometheus
        .query(promql)
        .await
        .into_iter()
        .filter(|s| s.value > 0.0)
        .filter_map(|s| s.labels.get("site").cloned())
        .collect()
}

/// What the alarm, load-test and access panels show, produced the way it happens in a
/// data center: at every site both utility feeds are lost, the gensets start and carry the
/// load (utility-loss alarms are raised), the utility returns and the ATS retransfers (a
/// load test recorded from the data); and at two sites a credential nobody knows badges
/// into the mantrap (the reader stub pushes ZKTeco ATTLOG to the daemon's `/iclock`): an
/// occupant and an `unknown_credential` finding.
async fn play_the_scenario(stack: &Stack) {
    let sites: BTreeSet<String> = stack.config.sites.iter().map(|s| s.id.clone()).collect();
    for site in &stack.config.sites {
        let world = stack.world(&site.id);
        let mut world = world.lock().unwrap();
        for feed in [Feed::A, Feed::B] {
            world.apply(&Action::CutUtility { feed }).unwrap();
        }
    }
    let base = format!("http://{}", stack.daemon);
    for (site, serial) in [("dc", "DC-MT-OUT-01"), ("smart-dc", "SDC-MT-OUT-01")] {
        let tz = stack.config.site(site).unwrap().time_zone;
        let mut reader = ReaderStub::new(&base, serial, Firmware::Attendance).unwrap();
        let now = Utc::now().with_timezone(&tz).naive_local();
        reader
            .push(&[StubEvent::granted("990017", now)], 5)
            .await
            .unwrap();
    }
    // The gensets carry every site's load.
    let carrying = wait_for(SCENARIO_HANG, || async {
        sites_above_zero(
            stack,
            "count by (site) (dcguard_reading_value{point=\"generator_breaker_closed\"} == 1)",
        )
        .await
            == sites
    })
    .await;
    assert!(carrying, "the gensets never carried the load at every site");
    eprintln!("scenario: the gensets carry every site's load");
    // The daemon measures a run from its own samples: the first one showing the gensets
    // above the minimum load starts it. Hold the load for several times the 1 s minimum so
    // that even a loaded machine's stretched poll cycle sees a qualifying run.
    tokio::time::sleep(LOAD_HOLD).await;
    for site in &stack.config.sites {
        let world = stack.world(&site.id);
        let mut world = world.lock().unwrap();
        for feed in [Feed::A, Feed::B] {
            world.apply(&Action::RestoreUtility { feed }).unwrap();
        }
    }
    // The ATS retransfers, the run ends and is recorded as a qualifying load test (the
    // panel "time since the last qualifying load test" needs one at every site).
    let recorded = wait_for(SCENARIO_HANG, || async {
        sites_above_zero(
            stack,
            "sum by (site) (dcguard_genset_load_tests{result=\"qualifying\"})",
        )
        .await
            == sites
    })
    .await;
    assert!(
        recorded,
        "no qualifying load test recorded at every site: {:?}",
        stack.prometheus.query("dcguard_genset_load_tests").await
    );
    eprintln!("scenario: a load test recorded at every site");
    let access = wait_for(SCENARIO_HANG, || async {
        let want: BTreeSet<String> = ["dc", "smart-dc"].map(String::from).into();
        sites_above_zero(stack, "sum by (site) (dcguard_access_occupancy)").await == want
            && sites_above_zero(
                stack,
                "sum by (site) (dcguard_access_findings_total{rule=\"unknown_credential\"})",
            )
            .await
                == want
    })
    .await;
    assert!(
        access,
        "occupancy or findings missing: {:?} {:?}",
        stack.prometheus.query("dcguard_access_occupancy > 0").await,
        stack
            .prometheus
            .query("dcguard_access_findings_total > 0")
            .await
    );
    // Utility-loss alarms were raised at every site (P-something, active or returned).
    let alarms = sites_above_zero(stack, "sum by (site) (max_over_time(dcguard_alarms[5m]))").await;
    assert_eq!(alarms, sites, "alarms raised per site");
    // Enough scrapes after all this for the rates and increases of the panels.
    let after = Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!(stack.prometheus.wait_scrapes_after(after).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_data_from_the_simulated_sites() {
    let stack = Stack::start_with(|o| {
        // A load test qualifies after 1 s at 1 % (NFPA 110: 30 min at 30 %), so the
        // scenario's short utility loss records one.
        o.alarms.rules.load_test = LoadTestCriteria {
            min_duration: Duration::from_secs(1),
            min_load_pct: 1.0,
        };
        o.alarms.snapshot_every = Duration::from_secs(2);
    })
    .await;
    eprintln!("stack up");
    play_the_scenario(&stack).await;
    eprintln!("scenario played");
    let dashboards = dashboards();
    // Every metric a panel or variable names is one the daemon exports (`# TYPE` lines of
    // its `/metrics`), not only a const in the code.
    let scrape = stack.scrape().await;
    // With the alarm, load-test and access metrics holding values, the scrape is clean.
    common_prom::promtool_check(&scrape);
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut unexported = Vec::new();
    for (file, dashboard) in &dashboards {
        let mut exprs = panel_queries(dashboard);
        for (var, selector, _) in variable_queries(dashboard) {
            exprs.push((format!("variable {var}"), selector));
        }
        for (title, expr) in exprs {
            for name in metric_names(&expr) {
                if !exported.contains(name.as_str()) {
                    unexported.push(format!("{file}: {title}: {name}"));
                }
            }
        }
    }
    assert!(
        unexported.is_empty(),
        "dashboards query metrics the daemon does not export:\n{}",
        unexported.join("\n")
    );
    let mut empty = Vec::new();
    let mut ran = 0;
    // Each site with its first data hall that has racks (every dashboard's room has data
    // there), then "All" of both, the wall's default selection.
    let mut selections: Vec<(String, String)> = stack
        .config
        .sites
        .iter()
        .map(|site| {
            let room = site
                .rooms
                .iter()
                .find(|r| r.climate.is_some() && site.racks.iter().any(|k| k.room == r.id))
                .map(|r| r.id.clone())
                .unwrap_or_else(|| panic!("{}: no data hall with racks", site.id));
            (site.id.clone(), room)
        })
        .collect();
    selections.push((".*".to_owned(), ".*".to_owned()));
    for (site, room) in &selections {
        for (file, dashboard) in &dashboards {
            let mut queries = panel_queries(dashboard);
            for (var, selector, label) in variable_queries(dashboard) {
                queries.push((
                    format!("variable {var}"),
                    format!("count by ({label}) ({selector})"),
                ));
            }
            for (title, expr) in queries {
                let promql = substitute(&expr, site, room);
                ran += 1;
                if stack.prometheus.query(&promql).await.is_empty() {
                    empty.push(format!("{file}: {title} [{site} {room}]: {promql}"));
                }
                // A zero fallback (`or vector(0)`) must not hide a query that never has
                // data: without it, the query has data for the wall's "All" selection.
                if let Some(real) = promql.strip_suffix(" or vector(0)")
                    && site == ".*"
                    && stack.prometheus.query(real).await.is_empty()
                {
                    empty.push(format!("{file}: {title} [All, no fallback]: {real}"));
                }
            }
        }
    }
    assert!(ran > 100, "{ran} queries");
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
    stack.stop().await;
}
