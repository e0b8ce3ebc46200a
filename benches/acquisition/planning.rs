//! Benchmark 1: requests per scan of every shipped Modbus profile, planner against the theoretical minimum (an independent dynamic programme).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::{Result, anyhow};
use dcguard::config::model::{
    ModbusProfile, PollClass, ProfileTransport, ReadLimits, RegisterKind, RegisterRange,
};
use dcguard::sources::modbus::plan::plan;

use crate::common::root;

/// The fewest requests that can read `spans` (table, first address, width) under the
/// limits: a dynamic programme over the points of each table sorted by address, where
/// one request may cover spans `j..i` when the window is within the table's limit, no
/// gap between covered addresses exceeds `max_gap_registers`, and no `never_read`
/// address lies in the window. Written separately from the planner (the same oracle as
/// `tests/modbus_codec.rs`).
pub fn oracle_min(
    spans: &[(RegisterKind, u32, u32)],
    limits: ReadLimits,
    never_read: &[RegisterRange],
) -> usize {
    let mut total = 0;
    let tables: BTreeSet<RegisterKind> = spans.iter().map(|p| p.0).collect();
    for table in tables {
        let limit = if table.is_bit_table() {
            u32::from(limits.max_bits_per_read.min(2000))
        } else {
            u32::from(limits.max_registers_per_read.min(125))
        };
        let mut windows: Vec<(u32, u32)> = spans
            .iter()
            .filter(|p| p.0 == table)
            .map(|p| (p.1, p.1 + p.2))
            .collect();
        windows.sort_unstable();
        windows.dedup();
        let forbidden: BTreeSet<u32> = never_read
            .iter()
            .filter(|r| r.register == table)
            .flat_map(|r| u32::from(r.start)..u32::from(r.start) + u32::from(r.count))
            .collect();
        let n = windows.len();
        let mut best = vec![usize::MAX; n + 1];
        best[0] = 0;
        for i in 1..=n {
            for j in 0..i {
                if best[j] == usize::MAX {
                    continue;
                }
                let first = windows[j].0;
                let mut reach = windows[j].1;
                let mut ok = true;
                for &(s, e) in &windows[j + 1..i] {
                    if s > reach && s - reach > u32::from(limits.max_gap_registers) {
                        ok = false;
                    }
                    reach = reach.max(e);
                }
                ok &= reach - first <= limit;
                ok &= forbidden.range(first..reach).next().is_none();
                if ok {
                    best[i] = best[i].min(best[j] + 1);
                }
            }
        }
        total += best[n];
    }
    total
}

/// One row of the table.
struct Row {
    profile: String,
    class: &'static str,
    points: usize,
    /// Distinct register spans (bit fields of one word count once): the naive
    /// one-request-per-point poller.
    naive: usize,
    planned: usize,
    minimum: usize,
    /// Registers (or bits) the plan reads, and how many of them carry points.
    read: u64,
    useful: u64,
}

fn row(id: &str, m: &ModbusProfile, class: Option<PollClass>, name: &'static str) -> Option<Row> {
    let include = |c: PollClass| class.is_none_or(|k| k == c);
    let chosen: Vec<_> = m.points.iter().filter(|p| include(p.class)).collect();
    if chosen.is_empty() {
        return None;
    }
    let spans: Vec<(RegisterKind, u32, u32)> = chosen
        .iter()
        .map(|p| (p.register, u32::from(p.address), p.data_type.width()))
        .collect();
    let distinct: BTreeSet<_> = spans.iter().copied().collect();
    let mut useful_addresses: BTreeSet<(RegisterKind, u32)> = BTreeSet::new();
    for (t, a, w) in &distinct {
        for x in *a..a + w {
            useful_addresses.insert((*t, x));
        }
    }
    let p = plan(m, include);
    Some(Row {
        profile: id.to_owned(),
        class: name,
        points: chosen.len(),
        naive: distinct.len(),
        planned: p.requests.len(),
        minimum: oracle_min(&spans, m.limits, &m.never_read),
        read: p.requests.iter().map(|r| u64::from(r.count)).sum(),
        useful: useful_addresses.len() as u64,
    })
}

/// Runs benchmark 1 and returns its Markdown section.
pub fn run() -> Result<String> {
    let config = dcguard::config::load(&root().join("config"))
        .map_err(|e| anyhow!("the shipped configuration does not load:\n{e}"))?;
    let mut rows = Vec::new();
    for (id, profile) in &config.profiles {
        let ProfileTransport::Modbus(m) = &profile.transport else {
            continue;
        };
        for (class, name) in [
            (Some(PollClass::Fast), "fast"),
            (Some(PollClass::Normal), "normal"),
            (Some(PollClass::Slow), "slow"),
            (None, "all (one scan)"),
        ] {
            rows.extend(row(id, m, class, name));
        }
    }
    let mut out = String::new();
    writeln!(
        out,
        "| profile | class | points | naive (1 per point span) | planner | minimum (oracle) | planner / minimum | registers read (useful) |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    let (mut planned, mut minimum, mut naive) = (0, 0, 0);
    for r in &rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} ({}) |",
            r.profile,
            r.class,
            r.points,
            r.naive,
            r.planned,
            r.minimum,
            r.planned as f64 / r.minimum.max(1) as f64,
            r.read,
            r.useful
        )?;
        if r.class != "all (one scan)" {
            planned += r.planned;
            minimum += r.minimum;
            naive += r.naive;
        }
    }
    writeln!(
        out,
        "\nPer-class scans of all profiles: planner {planned} requests, minimum {minimum}, naive {naive}."
    )?;
    let off: Vec<&Row> = rows.iter().filter(|r| r.planned != r.minimum).collect();
    if off.is_empty() {
        writeln!(
            out,
            "Every scan of every shipped profile is planned with the minimum number of requests."
        )?;
    } else {
        for r in off {
            writeln!(
                out,
                "NOT MINIMAL: {} {}: {} requests, minimum {}",
                r.profile, r.class, r.planned, r.minimum
            )?;
        }
    }
    Ok(out)
}
