//! The ISA-18.2 / IEC 62682 alarm lifecycle: states, delays, shelving, suppression, KPIs.
//!
//! Pure code over data and explicit time (invariant 2): no IO, no async.
