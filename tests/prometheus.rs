//! A real Prometheus scraping `dcguard run`: the daemon in-process against the firmware
//! stubs of the three sites, Prometheus 2 on a free loopback port scraping `/metrics`
//! every two seconds; its query API must show every site's readings, device health and the
//! facility facts, and the scrape must pass `promtool check metrics`.

mod common;
mod common_prom;

use std::collections::{BTreeMap, BTreeSet};

use common_prom::{JOB, Stack, promtool_check};

const SITES: [&str; 3] = ["dc", "smart-dc", "drc"];

/// `count by (site)` of a query, as a map.
async fn count_by_site(stack: &Stack, selector: &str) -> BTreeMap<String, f64> {
    stack
        .prometheus
        .query(&format!("count by (site) ({selector})"))
        .await
        .into_iter()
        .map(|s| (s.labels.get("site").cloned().unwrap_or_default(), s.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_daemon_and_sees_all_three_sites() {
    let stack = Stack::start().await;
    let prom = &stack.prometheus;
    let config = stack.config.clone();

    // The daemon is the one target of the job, up, scraped without error.
    let targets = prom.targets().await;
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0]["health"], "up", "{targets:?}");
    assert_eq!(targets[0]["lastError"], "", "{targets:?}");
    assert_eq!(
        targets[0]["scrapeUrl"],
        format!("http://{}/metrics", stack.daemon)
    );
    let up = prom.query(&format!("up{{job=\"{JOB}\"}}")).await;
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].value, 1.0);

    // Readings of every site, one value series per numeric point of every device.
    let readings = count_by_site(&stack, "dcguard_reading_value").await;
    let sites: BTreeSet<&str> = readings.keys().map(String::as_str).collect();
    assert_eq!(sites, SITES.into_iter().collect(), "{readings:?}");
    for site in &config.sites {
        let devices = site.devices.len() as f64;
        assert!(
            readings[&site.id] >= devices,
            "{}: {} value series for {devices} devices",
            site.id,
            readings[&site.id]
        );
    }

    // Device health: every configured device has an up series, and all answer.
    let health = count_by_site(&stack, "dcguard_device_up").await;
    let answering = count_by_site(&stack, "dcguard_device_up == 1").await;
    for site in &config.sites {
        let devices = site.devices.len() as f64;
        assert_eq!(health.get(&site.id), Some(&devices), "{}", site.id);
        assert_eq!(answering.get(&site.id), Some(&devices), "{}", site.id);
    }
    let scans = count_by_site(&stack, "dcguard_device_scan_duration_seconds").await;
    assert_eq!(
        scans.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        SITES.into_iter().collect()
    );

    // A specific reading arrives with its labels: a data hall sensor in range.
    let temps = prom
        .query(
            "dcguard_reading_value{site=\"dc\",room=\"dh1\",device=\"th-a\",point=\"temperature\"}",
        )
        .await;
    assert_eq!(temps.len(), 1, "{temps:?}");
    let th_a = config
        .site("dc")
        .and_then(|s| s.devices.iter().find(|d| d.id == "th-a"))
        .unwrap();
    assert_eq!(
        temps[0].labels["rack"],
        th_a.rack.clone().unwrap_or_default()
    );
    assert!((10.0..40.0).contains(&temps[0].value), "{temps:?}");
    // Counters reach Prometheus and move: readings are flowing.
    let rate = prom
        .query("sum(rate(dcguard_readings_total{quality=\"good\"}[10s]))")
        .await;
    assert!(rate.first().is_some_and(|s| s.value > 0.0), "{rate:?}");

    // The facility facts: the seed limits of every data hall, every rack's limit.
    let limits = prom
        .query("dcguard_limit{kind=\"temperature_max_celsius\"}")
        .await;
    let halls: usize = config
        .sites
        .iter()
        .flat_map(|s| &s.rooms)
        .filter(|r| r.climate.is_some())
        .count();
    assert_eq!(limits.len(), halls);
    assert!(limits.iter().all(|s| s.value == 27.0), "{limits:?}");
    let racks: usize = config.sites.iter().map(|s| s.racks.len()).sum();
    let rack_limits = prom.query("count(dcguard_rack_limit_watts)").await;
    assert_eq!(rack_limits[0].value, racks as f64);

    // The same scrape passes promtool, facility facts included.
    let scrape = stack.scrape().await;
    assert!(scrape.contains("dcguard_rack_limit_watts{"));
    promtool_check(&scrape);

    stack.stop().await;
}
