//! Access benchmark (docs/benchmarks.md, "Physical access"): ingestion into the store and the
//! audit chain, then a batch re-run of reconciliation over everything stored, for millions of
//! generated reader events at the three shipped sites.
//!
//! Events come from the tests' synthetic-day generator (`tests/common_access`: clean traffic,
//! about 200 tickets and planted anomalies per site and day), shifted day after day until the
//! requested count is reached. Two phases, each its own process so each peak RSS is its own:
//!
//! * `ingest DIR N`: generates N events (about) and persists them through
//!   [`Ingest::persist`] in device-sized batches of 500: one SQLite transaction with
//!   `synchronous = FULL` and one chain append with fsync per batch, exactly the `/iclock`
//!   path before the device gets its `OK`. Only the persist calls are timed.
//! * `reconcile DIR`: streams each site's stored events day by day out of the store, in
//!   effective-time order, through one [`Reconciler`] per site with a rolling ticket book
//!   (the tickets of the day before, the day and the day after, regenerated), as the
//!   batch re-run of a period does. Store reads and reconciliation are timed together.
//!
//! Run: `cargo run --release -p dcguard --example access_bench -- ingest /tmp/ab 5000000`
//! then `... -- reconcile /tmp/ab 5000000`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use dcguard::access::event::AccessEvent;
use dcguard::access::reconcile::{ReconcileSettings, Reconciler};
use dcguard::access::ticket::TicketBook;
use dcguard::config::model::{Config, Site};
use dcguard::store::Store;
use dcguard::store::access::{AccessStore, EventQuery};

#[path = "../tests/common_access/mod.rs"]
#[allow(dead_code, clippy::all)]
mod common_access;

use common_access::{SyntheticDay, TicketOp};

/// Anomalies planted per site and day (every rule, round robin).
const PLANTED: usize = 10;
/// Events per persisted batch (a reader's upload).
const BATCH: usize = 500;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(phase), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: access_bench ingest|reconcile DIR [EVENTS]");
        std::process::exit(64);
    };
    let target: u64 = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let config = common_access::shipped();
    let dir = PathBuf::from(dir);
    match phase.as_str() {
        "ingest" => ingest(&config, &dir, target),
        "reconcile" => reconcile(&config, &dir, target),
        other => {
            eprintln!("unknown phase {other:?}: expected ingest or reconcile");
            std::process::exit(64);
        }
    }
}

/// Days per site needed for about `target` events (a synthetic day is ~1000 events a site).
fn days_for(config: &Config, target: u64) -> i64 {
    let per_day: u64 = config
        .sites
        .iter()
        .map(|s| common_access::synthetic_day(s, 0, PLANTED).events.len() as u64)
        .sum();
    i64::try_from(target.div_ceil(per_day.max(1))).unwrap_or(i64::MAX)
}

/// Synthetic day `d` of `site`: the generator's day moved `d` days on, ids made unique.
fn day(site: &Site, d: i64) -> SyntheticDay {
    let mut day = common_access::synthetic_day(site, 1000 + d as u64, PLANTED);
    let shift = TimeDelta::days(d);
    for e in &mut day.events {
        e.id = format!("{d}-{}", e.id).into();
        e.device_time += shift;
        e.received_at += shift;
    }
    for op in &mut day.ticket_ops {
        match op {
            TicketOp::Create(t, at) => {
                t.id = format!("D{d}-{}", t.id);
                t.window_start += shift;
                t.window_end += shift;
                *at += shift;
            }
            TicketOp::Cancel(id, at) | TicketOp::Close(id, at) => {
                *id = format!("D{d}-{id}");
                *at += shift;
            }
        }
    }
    day.start += shift;
    day.end += shift;
    day
}

fn ingest(config: &Config, dir: &Path, target: u64) {
    let _ = std::fs::remove_dir_all(dir);
    let service = match dcguard::access::ingest::open_offline(config, dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open {}: {e}", dir.display());
            std::process::exit(1);
        }
    };
    let days = days_for(config, target);
    let mut stored = 0_u64;
    let mut busy = Duration::ZERO;
    let wall = Instant::now();
    'outer: for d in 0..days {
        for site in &config.sites {
            let day = day(site, d);
            let mut events = day.events;
            // Arrival order within the day, as the stub would upload it.
            events.sort_by_key(|e| e.received_at);
            for chunk in events.chunks(BATCH) {
                let t = Instant::now();
                match service.persist(&site.id, chunk) {
                    Ok(new) => stored += new.len() as u64,
                    Err(e) => {
                        eprintln!("persist failed after {stored} events: {e}");
                        std::process::exit(1);
                    }
                }
                busy += t.elapsed();
            }
            if stored >= target {
                break 'outer;
            }
        }
    }
    drop(service);
    let secs = busy.as_secs_f64();
    println!(
        "ingest: {stored} events in {secs:.1} s persisting ({:.0} events/s; wall {:.1} s with generation)",
        stored as f64 / secs,
        wall.elapsed().as_secs_f64()
    );
    println!(
        "store {:.0} MiB, audit chain {:.0} MiB, peak RSS {:.0} MiB",
        size_of(&dir.join(dcguard::app::STORE_FILE)) / 1048576.0,
        chain_size(dir) / 1048576.0,
        peak_rss_mib()
    );
}

fn reconcile(config: &Config, dir: &Path, target: u64) {
    let store = match Store::open(&dir.join(dcguard::app::STORE_FILE)) {
        Ok(s) => AccessStore::new(s),
        Err(e) => {
            eprintln!("cannot open the store in {}: {e}", dir.display());
            std::process::exit(1);
        }
    };
    let days = days_for(config, target);
    let settings = ReconcileSettings::from_config(&config.access);
    let t0 = Instant::now();
    let mut read = Duration::ZERO;
    let (mut events, mut findings) = (0_u64, 0_u64);
    for site in &config.sites {
        let mut r = Reconciler::new(site, settings.clone());
        // Rolling ticket book: the ticket operations of days d-1, d, d+1.
        let mut window: Vec<Vec<TicketOp>> = vec![Vec::new(), day(site, 0).ticket_ops];
        for d in 0..days {
            window.push(day(site, d + 1).ticket_ops);
            if window.len() > 3 {
                window.remove(0);
            }
            let ops: Vec<TicketOp> = window.iter().flatten().cloned().collect();
            let book: TicketBook = common_access::book(site, &ops);
            let start = day(site, d).start;
            let (from, until) = (start, start + TimeDelta::days(1));
            let t = Instant::now();
            let batch: Vec<AccessEvent> = match store.events(&EventQuery {
                site: Some(site.id.clone()),
                from: Some(from),
                until: Some(until),
                ..EventQuery::default()
            }) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("store read failed: {e}");
                    std::process::exit(1);
                }
            };
            read += t.elapsed();
            for e in batch {
                let at = r.effective_time(&e);
                events += 1;
                if r.push(e) {
                    findings += r.tick(at + settle(&settings), &book).len() as u64;
                }
            }
            findings += r.tick(until, &book).len() as u64;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "reconcile: {events} events, {findings} findings in {secs:.1} s ({:.0} events/s; store reads {:.1} s of it), peak RSS {:.0} MiB",
        events as f64 / secs,
        read.as_secs_f64(),
        peak_rss_mib()
    );
}

fn settle(settings: &ReconcileSettings) -> TimeDelta {
    TimeDelta::from_std(settings.settle).unwrap_or(TimeDelta::zero())
}

fn size_of(path: &Path) -> f64 {
    std::fs::metadata(path)
        .map(|m| m.len() as f64)
        .unwrap_or(0.0)
}

fn chain_size(dir: &Path) -> f64 {
    fn walk(p: &Path) -> f64 {
        let Ok(entries) = std::fs::read_dir(p) else {
            return 0.0;
        };
        entries
            .flatten()
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    walk(&path)
                } else if path.to_string_lossy().contains("audit") {
                    size_of(&path)
                } else {
                    0.0
                }
            })
            .sum()
    }
    walk(dir)
}

/// Peak resident set size of this process (`VmHWM`), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}
