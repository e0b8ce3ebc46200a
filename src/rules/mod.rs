//! Facility rules: the shipped rule catalogue and its evaluation from readings to conditions.
//!
//! Pure code over data and explicit time (invariant 2): no IO, no async.
//!
//! * [`condition`]: the contract with the alarm lifecycle ([`Condition`], [`Verdict`],
//!   [`AlarmParams`]).
//! * [`catalogue`]: every rule's id, class, default impact/urgency and alarm parameters.
//! * [`engine`]: [`RuleEngine`], latest value per point and the conditions at an instant.
//! * [`climate`]: dew point (Magnus).
//! * [`loadtest`]: genset load-test detection (NFPA 110 criteria).
//! * [`overrides`]: `[[rule_overrides]]`, the catalogue's defaults per site/room/rack/device.

pub mod catalogue;
pub mod climate;
pub mod condition;
pub mod engine;
pub mod loadtest;
pub mod overrides;

pub use condition::{AlarmParams, Condition, ConditionClass, ConditionKey, RuleId, Verdict};
pub use engine::{RuleEngine, RuleSettings};
pub use loadtest::{LoadTestCriteria, LoadTestRecord};
pub use overrides::{Overrides, RuleOverride, Selector};
