//! Facility rules: the shipped rule catalogue and its evaluation from readings to conditions.
//!
//! Pure code over data and explicit time (invariant 2): no IO, no async.
