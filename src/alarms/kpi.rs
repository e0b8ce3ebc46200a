//! Alarm-management KPIs (EEMUA 191 / ISA-18.2): annunciations per 10 min and floods per site,
//! standing alarms, chattering alarms and the top bad actors.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::book::Alarm;
use super::types::{AlarmKey, BookConfig};

/// The KPIs of one site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SiteKpis {
    /// Raises annunciated (not shelved, suppressed or out of service) within the flood window
    /// ending at `now` (EEMUA: about 1 per 10 min is acceptable).
    pub annunciated: usize,
    /// `annunciated` exceeds the flood threshold (EEMUA: more than 10 in 10 min).
    pub flood: bool,
    /// Alarms in an active state now.
    pub active: usize,
    /// Alarms waiting for an acknowledgement.
    pub unacked: usize,
    /// Alarms active for longer than the standing limit (24 h).
    pub standing: usize,
    /// Alarms chattering now.
    pub chattering: usize,
    /// Alarms shelved now.
    pub shelved: usize,
    /// Alarms out of service now.
    pub out_of_service: usize,
}

/// One of the alarms that raised most often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadActor {
    /// The alarm.
    pub key: AlarmKey,
    /// Its activations so far.
    pub activations: u64,
    /// How many times it started chattering.
    pub chatter_episodes: u64,
}

/// A KPI snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kpis {
    /// When.
    pub at: DateTime<Utc>,
    /// Per site id.
    pub sites: BTreeMap<String, SiteKpis>,
    /// The alarms with most activations, most first (ties by key), at most `bad_actors`.
    pub bad_actors: Vec<BadActor>,
    /// Chattering episodes ever counted, all alarms.
    pub chatter_episodes: u64,
}

fn within(t: DateTime<Utc>, now: DateTime<Utc>, window: Duration) -> bool {
    t <= now && (now - t).to_std().is_ok_and(|age| age < window)
}

pub(crate) fn compute<'a>(
    config: &BookConfig,
    alarms: impl Iterator<Item = &'a Alarm>,
    annunciations: &BTreeMap<String, VecDeque<DateTime<Utc>>>,
    now: DateTime<Utc>,
) -> Kpis {
    let mut sites: BTreeMap<String, SiteKpis> = BTreeMap::new();
    let mut actors = Vec::new();
    let mut chatter_episodes = 0;
    for a in alarms {
        let site = sites.entry(a.key.site.clone()).or_default();
        if a.state.is_active() {
            site.active += 1;
            let standing = a.activated_at.is_some_and(|t| {
                (now - t)
                    .to_std()
                    .is_ok_and(|age| age > config.standing_after)
            });
            if standing {
                site.standing += 1;
            }
        }
        site.unacked += usize::from(a.state.is_unacked());
        site.chattering += usize::from(a.chattering);
        site.shelved += usize::from(a.shelf.as_ref().is_some_and(|s| s.until > now));
        site.out_of_service += usize::from(a.out_of_service.is_some());
        chatter_episodes += a.chatter_episodes;
        if a.activation > 0 {
            actors.push(BadActor {
                key: a.key.clone(),
                activations: a.activation,
                chatter_episodes: a.chatter_episodes,
            });
        }
    }
    for (site, log) in annunciations {
        let count = log
            .iter()
            .filter(|t| within(**t, now, config.flood_window))
            .count();
        let s = sites.entry(site.clone()).or_default();
        s.annunciated = count;
        s.flood = count > config.flood_threshold;
    }
    actors.sort_by(|a, b| {
        b.activations
            .cmp(&a.activations)
            .then_with(|| a.key.cmp(&b.key))
    });
    actors.truncate(config.bad_actors);
    Kpis {
        at: now,
        sites,
        bad_actors: actors,
        chatter_episodes,
    }
}
