//! The ISA-18.2 / IEC 62682 alarm lifecycle: states, delays, shelving, suppression, KPIs.
//!
//! Pure code over data and explicit time (invariant 2): no IO, no async.
//!
//! * [`AlarmBook`] (`book`) holds every alarm and is the only way to change one: `apply` a
//!   rule's [`Condition`](crate::rules::condition::Condition) with its
//!   [`AlarmParams`](crate::rules::condition::AlarmParams), `tick` the clock (about once a
//!   second: shelve expiry, delays, chattering, maintenance-window ends), and the operator
//!   actions `acknowledge`, `shelve`/`unshelve`, `out_of_service`/`return_to_service`,
//!   `suppress`/`unsuppress` (by design), `add_window`/`remove_window` (maintenance). The
//!   semantics (delays, deadband, `Unknown`, latching, chattering, incidents) are stated in
//!   the `book` module doc and pinned by `tests/alarm_model.rs`.
//! * Every change comes back as a [`Transition`] (`types`): state before and after, time,
//!   cause, actor and comment for the audit trail, flags (shelved, out of service,
//!   suppressed, chattering), the alarm's context ([`AlarmInfo`]) and at most one
//!   [`IncidentSignal`] (`Open` at most once per activation, `Update`, `Resolve`) with the
//!   incident's stable number (`incident_id`, `Transition::incident_key`). The wiring
//!   persists the transitions (outbox) and maps them onto the incident book; an `Update`
//!   whose cause is `Acknowledge` is the acknowledgement of the incident.
//! * The book is `serde` Serialize/Deserialize as a whole (shelves with expiry, latches,
//!   delays in progress, counters): snapshot it with the transitions, restore it at start,
//!   and re-applying the same active conditions raises no new incident.
//! * [`Kpis`] (`kpi`): annunciations per 10 min and floods per site, standing and chattering
//!   alarms, top bad actors.
//! * [`internal`]: the daemon's own alarms (pseudo-site `daemon`): incident delivery failing.
//! * `suppression`: maintenance windows and suppression by design, which never cover Fire or
//!   Water alarms.

pub mod book;
pub mod internal;
pub mod kpi;
mod names;
pub mod suppression;
pub mod task;
pub mod types;

pub use book::{Alarm, AlarmBook, OutOfService, Seen, Shelf};
pub use kpi::{BadActor, Kpis, SiteKpis};
pub use suppression::{DesignSuppression, MaintenanceWindow, Scope, SuppressTarget};
pub use types::{
    AlarmError, AlarmInfo, AlarmKey, AlarmState, BookConfig, Cause, IncidentSignal, Params,
    Transition,
};
