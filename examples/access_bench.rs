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
//! * `reconcile DIR N`: streams each site's stored events day by day out of the store
//!   ([`AccessStore::for_each_event`], device-time order) through one [`Reconciler`] per
//!   site, the three sites on their own threads with their own store connections, with a
//!   rolling ticket book (the generated tickets of the day before, the day and the day
//!   after). Store reads and reconciliation are timed per site; generating the tickets is
//!   the bench's own work (the product looks tickets up in its live book) and is timed
//!   apart. The process's wall time includes both.
//! * `read DIR`: the store reads alone (every site's events streamed and decoded).
//!
//! Run: `cargo run --release -p dcguard --example access_bench -- ingest /tmp/ab 5000000`
//! then `... -- reconcile /tmp/ab 5000000`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
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
        eprintln!("usage: access_bench ingest|reconcile|read DIR [EVENTS]");
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
        "read" => read(&config, &dir),
        other => {
            eprintln!("unknown phase {other:?}: expected ingest, reconcile or read");
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
    shift_tickets(&mut day.ticket_ops, d);
    day.start += shift;
    day.end += shift;
    day
}

/// The ticket operations of [`day`] `d` (its events are generated and dropped).
fn day_tickets(site: &Site, d: i64) -> Vec<TicketOp> {
    let mut ops = common_access::synthetic_day(site, 1000 + d as u64, PLANTED).ticket_ops;
    shift_tickets(&mut ops, d);
    ops
}

fn shift_tickets(ops: &mut [TicketOp], d: i64) {
    let shift = TimeDelta::days(d);
    for op in ops {
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

/// What one site's re-run did.
struct SiteRun {
    site: String,
    events: u64,
    findings: u64,
    /// Store reads and reconciliation (the product's work): wall time ...
    rerun: Duration,
    /// ... and this thread's CPU time in it.
    rerun_cpu: Duration,
    /// Generating and rolling the synthetic ticket book (the bench's own work).
    tickets: Duration,
}

/// The batch re-run of every site, each on its own thread with its own store connection
/// (the sites share nothing; WAL readers do not block each other).
fn reconcile(config: &Config, dir: &Path, target: u64) {
    let path = dir.join(dcguard::app::STORE_FILE);
    let days = days_for(config, target);
    let settings = ReconcileSettings::from_config(&config.access);
    let t0 = Instant::now();
    let runs: Vec<SiteRun> = std::thread::scope(|scope| {
        let threads: Vec<_> = config
            .sites
            .iter()
            .map(|site| {
                let (path, settings) = (&path, settings.clone());
                scope.spawn(move || rerun_site(site, path, days, settings))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let events: u64 = runs.iter().map(|r| r.events).sum();
    let findings: u64 = runs.iter().map(|r| r.findings).sum();
    for r in &runs {
        println!(
            "  {}: {} events, {} findings; re-run {:.1} s wall, {:.1} s CPU; ticket generation {:.1} s wall",
            r.site,
            r.events,
            r.findings,
            r.rerun.as_secs_f64(),
            r.rerun_cpu.as_secs_f64(),
            r.tickets.as_secs_f64()
        );
    }
    let longest = runs.iter().map(|r| r.rerun).max().unwrap_or_default();
    let cpu: Duration = runs.iter().map(|r| r.rerun_cpu).sum();
    println!(
        "reconcile: {events} events, {findings} findings in {wall:.1} s wall ({:.0} events/s); \
         re-run (store reads + reconciliation, without the ticket generator): longest site \
         {:.1} s wall, {:.1} s CPU for the three; peak RSS {:.0} MiB",
        events as f64 / wall,
        longest.as_secs_f64(),
        cpu.as_secs_f64(),
        peak_rss_mib()
    );
}

/// One site's year: day by day, its stored events streamed out of the store in device-time
/// order through one [`Reconciler`], with a rolling ticket book holding the synthetic tickets
/// of the day before, the day and the day after (the product looks tickets up in its live
/// book; the bench keeps three days of generated tickets so its memory stays flat).
fn rerun_site(site: &Site, path: &Path, days: i64, settings: ReconcileSettings) -> SiteRun {
    let store = match Store::open(path) {
        Ok(s) => AccessStore::new(s),
        Err(e) => {
            eprintln!("cannot open the store {}: {e}", path.display());
            std::process::exit(1);
        }
    };
    let settle = settle(&settings);
    let mut r = Reconciler::new(site, settings);
    let mut run = SiteRun {
        site: site.id.clone(),
        events: 0,
        findings: 0,
        rerun: Duration::ZERO,
        rerun_cpu: Duration::ZERO,
        tickets: Duration::ZERO,
    };
    let g = Instant::now();
    let first = day(site, 0);
    let mut book = TicketBook::new();
    let mut in_book: VecDeque<Vec<String>> = VecDeque::new();
    in_book.push_back(apply_ops(&mut book, site, &first.ticket_ops));
    run.tickets += g.elapsed();
    for d in 0..days {
        // Tickets of day d + 1 in, of day d - 2 out: the book holds days d - 1, d, d + 1.
        let g = Instant::now();
        in_book.push_back(apply_ops(&mut book, site, &day_tickets(site, d + 1)));
        if in_book.len() > 3 {
            for id in in_book.pop_front().unwrap_or_default() {
                book.remove(&id);
            }
        }
        run.tickets += g.elapsed();

        let (t, cpu) = (Instant::now(), thread_cpu());
        let from = first.start + TimeDelta::days(d);
        let until = from + TimeDelta::days(1);
        let query = EventQuery {
            site: Some(site.id.clone()),
            from: Some(from),
            until: Some(until),
            ..EventQuery::default()
        };
        let streamed = store.for_each_event(&query, |e| {
            let at = r.effective_time(&e);
            run.events += 1;
            if r.push(e) {
                run.findings += r.tick(at + settle, &book).len() as u64;
            }
        });
        if let Err(e) = streamed {
            eprintln!("store read failed: {e}");
            std::process::exit(1);
        }
        run.findings += r.tick(until, &book).len() as u64;
        run.rerun += t.elapsed();
        run.rerun_cpu += thread_cpu().saturating_sub(cpu);
    }
    run
}

/// CPU time of the calling thread so far (`/proc/thread-self/schedstat`: time on a CPU).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// Applies a day's ticket operations to the book (as `common_access::book` does); returns
/// the ids of the tickets it created.
fn apply_ops(book: &mut TicketBook, site: &Site, ops: &[TicketOp]) -> Vec<String> {
    let mut created = Vec::new();
    for op in ops {
        let result = match op {
            TicketOp::Create(t, at) => {
                created.push(t.id.clone());
                book.create((**t).clone(), site, *at).map(|_| ())
            }
            TicketOp::Cancel(id, at) => book.cancel(id, *at).map(|_| ()),
            TicketOp::Close(id, at) => book.close(id, *at).map(|_| ()),
        };
        if let Err(e) = result {
            panic!("generated ticket operation refused: {e}");
        }
    }
    created
}

/// The store reads of the re-run alone: every site's events streamed (decoded, not
/// reconciled), one thread per site.
fn read(config: &Config, dir: &Path) {
    let path = dir.join(dcguard::app::STORE_FILE);
    let t0 = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let threads: Vec<_> = config
            .sites
            .iter()
            .map(|site| {
                let path = &path;
                scope.spawn(move || {
                    let store = AccessStore::new(Store::open(path).expect("store opens"));
                    let mut n = 0_u64;
                    store
                        .for_each_event(
                            &EventQuery {
                                site: Some(site.id.clone()),
                                ..EventQuery::default()
                            },
                            |_| n += 1,
                        )
                        .expect("store read");
                    n
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let n: u64 = counts.iter().sum();
    println!(
        "read: {n} events in {:.1} s, peak RSS {:.0} MiB",
        t0.elapsed().as_secs_f64(),
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
