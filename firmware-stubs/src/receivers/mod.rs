//! Fake ticketing receivers for dcguard's incident delivery tests: each emulates one
//! receiver's API and deduplication semantics and can be told to fail.
//!
//! * `webhook`: the generic CloudEvents webhook (HMAC-SHA256 signature, `Idempotency-Key`).
//! * `servicenow`: the ServiceNow Table API subset (no deduplication of its own), with
//!   the fault injection shared with the PagerDuty fake.
//! * `pagerduty`: the PagerDuty Events API v2 (alerts by `dedup_key`).

pub mod pagerduty;
pub mod servicenow;
pub mod webhook;
